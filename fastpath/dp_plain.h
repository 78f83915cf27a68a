/*
 * Plaintext: a burst's packets (all from the wire or all from the TAP)
 * that need the SPD -> outbound classification -> reverse path (from the
 * wire, IPsec policies) -> protect (dp_esp_out.h), pass or drop; from the
 * wire, what no outbound policy takes -> inbound classification: a
 * policy that wants it protected drops it, else the kernel gets it.
 *   reads:  the policy tables (dp_spd.h), the FIB (reverse path)
 *   writes: the tx queues; packets to encrypt into the caller's arrays
 */
#ifndef SP_DP_PLAIN_H
#define SP_DP_PLAIN_H

#include "dp_own.h"
#include "dp_spd.h"
#include "dp_esp_out.h"

/* Plaintext packets of a burst, all from the wire or all from the TAP,
 * waiting for their SPD lookup. */
struct sp_plain {
	uint16_t n;
	struct rte_mbuf *m[SP_BURST];
	struct sp_pkt k[SP_BURST];
};

/* Does the packet at l3 need an SPD lookup at all? */
static inline int
spd_wanted(struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k, int from_wire)
{
	struct sp_ipsec_tables *t = c->t;

	if (t == NULL || (k->v6 ? t->n_out6 + t->n_in6 : t->n_out + t->n_in) == 0)
		return 0;
	return !bypass(c, l3, k, from_wire);
}

/*
 * The SPD for a burst's plaintext: one rte_acl classification per family
 * and direction. Outbound matches are protected (or dropped, or passed);
 * from the wire, what no outbound policy takes but an inbound one says
 * must arrive protected is dropped; the rest goes the default way (to the
 * kernel from the wire, to the wire from the kernel).
 */
static void
plaintext_burst(struct sp_ctx *c, uint32_t port, struct sp_plain *pl, int from_wire,
	struct rte_mbuf **outm, struct sp_sa **outsa, uint16_t *nout)
{
	struct sp_spd_batch b[2], miss[2];
	uint16_t idx[2][SP_BURST], midx[2][SP_BURST];
	struct sp_match r;
	uint16_t i, j;
	int v;
	/* the last IPv4 source of this burst whose reverse path passed (the
	 * port and the FIB are the burst's): rpf_ok is asked again only when
	 * the source changes */
	uint32_t rp_src = 0, src = 0;
	int rp_have = 0;

	b[0].n = b[1].n = miss[0].n = miss[1].n = 0;
	for (i = 0; i < pl->n; i++) {
		v = pl->k[i].v6;
		idx[v][b[v].n] = i;
		spd_key(&b[v], rte_pktmbuf_mtod_offset(pl->m[i], uint8_t *, ETH_HLEN), &pl->k[i]);
	}
	for (v = 0; v < 2; v++) {
		spd_classify(c, &b[v], v, 1);
		spd_prefetch(c, &b[v], v);
		for (j = 0; j < b[v].n; j++) {
			i = idx[v][j];
			pol_prefetch(c, &b[v], v, j + SP_POL_AHEAD);
			sa_prefetch(c, &b[v], v, j + SP_SA_AHEAD);
			if (b[v].res[j] != 0) {
				spd_get(c, v, 1, b[v].res[j], &r);
				if (from_wire && r.action == SP_ACT_IPSEC) {
					const uint8_t *l3 = rte_pktmbuf_mtod_offset(pl->m[i], uint8_t *, ETH_HLEN);

					if (!v)
						memcpy(&src, &((const struct rte_ipv4_hdr *)l3)->src_addr, 4);
					if (v || !rp_have || src != rp_src) {
						if (unlikely(!rpf_ok(c, port, l3, v))) {
							drop(c, port, pl->m[i], SP_CNT_DROP_SPOOF);
							continue;
						}
						rp_have = !v;
						rp_src = src;
					}
				}
				if (r.sa != NULL && new_policy(&b[v], j))
					sa_state_prefetch(c, r.sa, 0);
				if (protect(c, port, pl->m[i], &pl->k[i], &r, from_wire, outm, outsa, nout))
					continue;
			} else if (from_wire) {
				midx[v][miss[v].n] = i;
				spd_key(&miss[v], rte_pktmbuf_mtod_offset(pl->m[i], uint8_t *, ETH_HLEN), &pl->k[i]);
				continue;
			}
			if (from_wire)
				to_tap(c, port, pl->m[i]);
			else
				txq_put(c, &c->wire[port], port, pl->m[i]);
		}
		spd_classify(c, &miss[v], v, 0);
		for (j = 0; j < miss[v].n; j++) {
			i = midx[v][j];
			if (miss[v].res[j] != 0) {
				spd_get(c, v, 0, miss[v].res[j], &r);
				if (r.action == SP_ACT_IPSEC || r.action == SP_ACT_DROP) {
					/* plaintext that policy says must arrive protected */
					drop(c, port, pl->m[i], SP_CNT_DROP_POLICY);
					continue;
				}
			}
			to_tap(c, port, pl->m[i]);
		}
	}
}


/* A burst's plaintext through the SPD, then what it protects, per SA. */
static inline void
plain_protect(struct sp_ctx *c, uint32_t port, struct sp_plain *pl, int from_wire)
{
	struct rte_mbuf *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	uint16_t no = 0;

	plaintext_burst(c, port, pl, from_wire, outm, outsa, &no);
	encrypt_collected(c, port, outm, outsa, no);
}

#endif
