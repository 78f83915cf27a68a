/*
 * Inbound ESP, as VPP's esp_decrypt: a burst's ESP packets ->
 *   SAD (one lookup per run of equal SPIs) -> outer headers off (tunnel)
 *   -> hard lifetime -> crypto (dp_crypto.h) -> trailer's next header and
 *   NAT-T mapping checked -> fragments inside reassembled -> inbound
 *   policy (one classification per family for the whole burst; the first
 *   policy that matches must name the SA's reqid) -> route.
 *   reads:  the SAD (rte_ipsec_sad), the SAs, the inbound policies
 *   writes: the packets, the SAs' counts; a NAT-T mapping change is noted
 *           to Go
 */
#ifndef SP_DP_ESP_IN_H
#define SP_DP_ESP_IN_H

#include "dp_spd.h"
#include "dp_route.h"

/*
 * Decrypted packets of a burst (of any SAs and ports), data at their IP
 * header, waiting for their inbound policy check: one classification per
 * family for all of them, however many SAs the burst spans.
 */
struct sp_inb {
	struct sp_spd_batch b[2];
	struct rte_mbuf *m[2][SP_BURST];
	struct sp_sa *sa[2][SP_BURST];
	uint8_t port[2][SP_BURST];
};

/*
 * The inbound policy check of decrypted packet m of SA sa, from the wire
 * port port, whose family v classified to res: the first inbound policy
 * it matches must protect it with the SA's reqid (as XFRM's policy
 * check). Counts the packet on the SA and the port and returns 0, or
 * drops it and returns -1. Shared by the policy-based (inbound_flush) and
 * the route-based (ifc_inbound) paths; once per packet, so inlined.
 */
static __rte_always_inline int
inbound_policy(struct sp_ctx *c, int v, uint32_t res, uint32_t port, struct sp_sa *sa, struct rte_mbuf *m)
{
	struct sp_sa_ctr *ct;
	struct sp_match r;

	if (res != 0)
		spd_get(c, v, 0, res, &r);
	if (res == 0 || r.action != SP_ACT_IPSEC || r.reqid != sa->reqid) {
		ST(c, sa).drop_policy++;
		drop(c, port, m, SP_CNT_DROP_POLICY);
		return -1;
	}
	ct = CTR(c, sa);
	ct->bytes += rte_pktmbuf_pkt_len(m);
	ct->packets++;
	ct->last_use = c->now;
	if (unlikely(sa->limited) && sa->hard_bytes != 0)
		__atomic_fetch_add(&sa->lim_bytes, rte_pktmbuf_pkt_len(m), __ATOMIC_RELAXED);
	cnt(c, port, SP_CNT_ESP_IN);
	return 0;
}

/*
 * The first inbound policy each packet matches must protect it with its
 * SA's reqid (inbound_policy); then they go on their way.
 */
static void
inbound_flush(struct sp_ctx *c, struct sp_inb *ib)
{
	struct sp_sa *sa;
	struct rte_mbuf *m;
	uint32_t port;
	uint16_t i;
	int v;

	for (v = 0; v < 2; v++) {
		struct sp_spd_batch *b = &ib->b[v];

		spd_classify(c, b, v, 0);
		for (i = 0; i < b->n; i++) {
			sa = ib->sa[v][i];
			m = ib->m[v][i];
			port = ib->port[v][i];
			if (inbound_policy(c, v, b->res[i], port, sa, m) != 0)
				continue;
			route_out(c, port, m, !sa->transport);
		}
		b->n = 0;
	}
}

/*
 * RFC 3948 / XFRM_MSG_MAPPING: authenticated ESP-in-UDP from a new address
 * or port (NAT remapped, peer moved). oh: the outer IP header, l3len its
 * length with the UDP header.
 */
static void
check_mapping(struct sp_ctx *c, struct sp_sa *sa, const uint8_t *oh, uint32_t l3len)
{
	const struct rte_udp_hdr *uh = (const struct rte_udp_hdr *)(oh + l3len - sizeof(*uh));
	uint16_t sport = rte_be_to_cpu_16(uh->src_port);
	const uint8_t *src;
	uint64_t a[2], b[2];
	uint32_t a4, b4;
	int v6 = is_v6(oh), same;

	/* fixed-size compares, inlined (memcmp of a variable length was a
	 * libc call for every packet) */
	if (v6) {
		src = ((const struct rte_ipv6_hdr *)oh)->src_addr;
		memcpy(a, src, 16);
		memcpy(b, sa->peer, 16);
		same = ((a[0] ^ b[0]) | (a[1] ^ b[1])) == 0;
	} else {
		src = (const uint8_t *)&((const struct rte_ipv4_hdr *)oh)->src_addr;
		memcpy(&a4, src, 4);
		memcpy(&b4, sa->peer, 4);
		same = a4 == b4;
	}
	if (unlikely(sport != sa->peer_port || !same))
		sp_note_mapping(c->w, sa->spi, v6 ? 6 : 4, src, sport);
}

/*
 * Inbound, after crypto: k decrypted packets of sa that came in on port,
 * their outer headers off, into ib for the policy check.
 */
static __rte_always_inline void
inbound_decap(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *grp[], uint16_t k,
	struct sp_inb *ib)
{
	struct sp_pkt pk;
	uint16_t j, q;
	int rc;

	for (j = 0; j < k; j++) {
		struct rte_mbuf *m = grp[j];
		/* rte_ipsec (transport mode, see dp.h) took out the ESP
		 * header and trailer; the outer header is in place */
		uint8_t *oh = rte_pktmbuf_mtod_offset(m, uint8_t *, m->l2_len);
		uint8_t np = (uint8_t)m->hash.usr;
		uint8_t *l3;

		if (!sa->transport) {
			/* the outer headers went before crypto (esp_inbound);
			 * they are still there, in front of the ESP header */
			l3 = rte_pktmbuf_mtod(m, uint8_t *);
			if (np != IPPROTO_IPIP && np != IPPROTO_IPV6)
				goto malformed;
			if (sa->peer_port != 0)
				check_mapping(c, sa, l3 - (sa->esp_fixed - sa->icv_len) - m->outer_l3_len,
					m->outer_l3_len);
			if (is_v6(l3) != (np == IPPROTO_IPV6))
				goto malformed;
		} else {
			if (sa->peer_port != 0)
				check_mapping(c, sa, oh, m->l3_len);
			rte_pktmbuf_adj(m, m->l2_len);
			l3 = rte_pktmbuf_mtod(m, uint8_t *);
			if (!is_v6(l3)) {
				struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)l3;
				ip->hdr_checksum = 0;
				ip->hdr_checksum = rte_ipv4_cksum(ip);
			}
		}
		rc = ip_parse(m, 0, &pk);
		if (unlikely(rc > 0)) {
			/* a fragment inside (the peer encrypts each, as Linux
			 * does): the policy check is the whole packet's */
			struct rte_mbuf *fm = m;	/* m stays in a register */

			if ((rc = sp_reassemble(c, port, SP_FRAG_ESP, &fm, 0, &pk)) > 0)
				continue;
			m = fm;
			l3 = rte_pktmbuf_mtod(m, uint8_t *);
		}
		if (rc < 0)
			goto malformed;
		trim_to(m, pk.len);
		q = ib->b[pk.v6].n;
		ib->m[pk.v6][q] = m;
		ib->sa[pk.v6][q] = sa;
		ib->port[pk.v6][q] = (uint8_t)port;
		spd_key(&ib->b[pk.v6], l3, &pk);
		continue;
malformed:
		ST(c, sa).drop_malformed++;
		drop(c, port, m, SP_CNT_DROP_MALFORMED);
	}
}

/* dp_ifc.h: the decrypted packets of a route-based SA */
static void ifc_inbound(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *grp[],
	uint16_t k);

/*
 * Inbound, after crypto: k decrypted packets of sa that came in on port.
 * A route-based SA's go out of its interface instead (dp_ifc.h): one
 * test per run of an SA, in a line the crypto step has loaded.
 */
static inline void
inbound_done(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *grp[], uint16_t k,
	struct sp_inb *ib)
{
	if (unlikely(sa->inbound == SP_SA_IN_IFC)) {
		ifc_inbound(c, port, sa, grp, k);
		return;
	}
	inbound_decap(c, port, sa, grp, k, ib);
}

/*
 * ESP whose SPI has no SA: a rekey's responder (libreswan, for one) sends
 * on its new SA as soon as it has answered, while the IKE daemon here is
 * still installing that SA. Held for SP_SPI_HOLD_MS at most and looked up
 * again when an SA is added (spi_held_retry); when the hold is full its
 * oldest goes, so that a stream of bogus SPIs holds nothing for long.
 */
static __rte_noinline void
spi_hold(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m)
{
	if (c->nspi_held == SP_SPI_HOLD) {
		drop(c, c->spi_held[0].port, c->spi_held[0].m, SP_CNT_DROP_UNKNOWN_SPI);
		memmove(&c->spi_held[0], &c->spi_held[1], (SP_SPI_HOLD - 1) * sizeof(c->spi_held[0]));
		c->nspi_held--;
	}
	c->spi_held[c->nspi_held].m = m;
	c->spi_held[c->nspi_held].since = c->now;
	c->spi_held[c->nspi_held].port = port;
	c->nspi_held++;
	cnt(c, port, SP_CNT_SPI_HELD);
}

static void esp_inbound(struct sp_ctx *c, uint32_t port, struct rte_mbuf *mb[], uint16_t n);

/*
 * The held ESP: once an SA was added since they missed (or a millisecond
 * has passed), those whose SPI has one now go in, in the order they came;
 * past SP_SPI_HOLD_MS the others are dropped as unknown. While the gateway
 * is closed nothing held goes in.
 */
static __rte_noinline void
spi_held_retry(struct sp_ctx *c)
{
	struct sp_spi_held h[SP_SPI_HOLD];
	uint32_t gen = __atomic_load_n(&c->dp->sad_gen, __ATOMIC_ACQUIRE);
	uint16_t n = c->nspi_held, i;
	int look = gen != c->spi_gen || c->now - c->spi_try >= c->retry_tsc;

	if (look) {
		c->spi_gen = gen;
		c->spi_try = c->now;
	}
	memcpy(h, c->spi_held, n * sizeof(h[0]));
	c->nspi_held = 0;
	for (i = 0; i < n; i++) {
		if (unlikely(c->closed)) {
			drop(c, h[i].port, h[i].m, SP_CNT_DROP_CLOSED);
			continue;
		}
		if (look) {
			union rte_ipsec_sad_key key;
			const union rte_ipsec_sad_key *kp = &key;
			void *sa = NULL;

			memset(&key, 0, sizeof(key));
			key.v4.spi = *rte_pktmbuf_mtod_offset(h[i].m, const uint32_t *,
				h[i].m->l2_len + h[i].m->l3_len);
			rte_ipsec_sad_lookup(c->dp->sad, &kp, &sa, 1);
			if (sa != NULL) {
				esp_inbound(c, h[i].port, &h[i].m, 1);
				continue;
			}
		}
		if (c->now - h[i].since > c->spi_hold_tsc)
			drop(c, h[i].port, h[i].m, SP_CNT_DROP_UNKNOWN_SPI);
		else
			c->spi_held[c->nspi_held++] = h[i];
	}
}

/* Inbound: n ESP packets (l2_len/l3_len point at the ESP header). */
static void
esp_inbound(struct sp_ctx *c, uint32_t port, struct rte_mbuf *mb[], uint16_t n)
{
	const union rte_ipsec_sad_key *kp[SP_BURST];
	union rte_ipsec_sad_key keys[SP_BURST];
	void *sas[SP_BURST], *found[SP_BURST];
	struct rte_mbuf *grp[SP_BURST];
	uint16_t run[SP_BURST];
	uint16_t i, j, g, k, u = 0;
	uint32_t spi, last = 0;
	struct sp_inb ib;

	if (n == 0)
		return;
	ib.b[0].n = ib.b[1].n = 0;
	/* one SAD lookup per run of packets with the same SPI */
	for (i = 0; i < n; i++) {
		spi = *rte_pktmbuf_mtod_offset(mb[i], const uint32_t *, mb[i]->l2_len + mb[i]->l3_len);
		if (u == 0 || spi != last) {
			memset(&keys[u], 0, sizeof(keys[u]));
			keys[u].v4.spi = spi;
			kp[u] = &keys[u];
			u++;
			last = spi;
		}
		run[i] = u - 1;
	}
	rte_ipsec_sad_lookup(c->dp->sad, kp, found, u);
	/* with many SAs each is cold: start loading them, and the rte_ipsec
	 * state of the first few; the others' follows SP_SA_AHEAD SAs ahead
	 * of the one at hand (all at once would queue more loads than the
	 * core has line fill buffers) */
	for (i = 0; i < u; i++)
		if (found[i] != NULL)
			sa_lines_prefetch(found[i]);
	for (i = 0; i < u && i < SP_SA_AHEAD; i++)
		if (found[i] != NULL)
			sa_state_prefetch(c, found[i], 1);
	for (i = 0; i < n; i++)
		sas[i] = found[run[i]];

	for (i = 0; i < n; ) {
		struct sp_sa *sa = sas[i];
		if (i == 0 || run[i] != run[i - 1]) {
			uint16_t ahead = run[i] + SP_SA_AHEAD;
			if (ahead < u && found[ahead] != NULL)
				sa_state_prefetch(c, found[ahead], 1);
		}
		if (unlikely(sa == NULL)) {
			spi_hold(c, port, mb[i]);
			i++;
			continue;
		}
		if (unlikely(!sa->inbound)) {
			drop(c, port, mb[i], SP_CNT_DROP_UNKNOWN_SPI);
			i++;
			continue;
		}
		/* a run of packets for the same SA */
		g = 0;
		for (j = i; j < n && sas[j] == sa; j++) {
			struct rte_mbuf *m = mb[j];
			if (!sa->transport) {
				/*
				 * Tunnel: the outer headers go now, so that
				 * rte_ipsec (transport mode, see dp.h) has no
				 * header to move down over the ESP header. Their
				 * length stays in outer_l3_len for the NAT-T
				 * mapping check after authentication.
				 */
				rte_pktmbuf_adj(m, m->l2_len + m->l3_len);
				m->tx_offload = rte_mbuf_tx_offload(0, 0, 0, 0, m->l3_len, 0, 0);
			}
			grp[g++] = m;
		}
		i = j;

		g = sa_limit(c, port, sa, grp, g);
		k = sa_crypto(c, port, sa, grp, g);
		inbound_done(c, port, sa, grp, k, &ib);
	}
	inbound_flush(c, &ib);
}

#endif
