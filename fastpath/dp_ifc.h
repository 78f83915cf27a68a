/*
 * Route-based SAs, as Linux's XFRM interfaces (xfrmi): each configured
 * interface is a TUN device (net_tun) that the kernel routes into; its
 * policies and SAs are those with its XFRM interface id (or its mark).
 *
 *   rx (interface)  -> parse -> the interface's own outbound policies
 *                      (struct sp_ipsec_tables' ifc[i]) -> protect
 *                      (dp_esp_out.h) -> encrypt -> route -> tx (wire)
 *                      | no policy, or a pass policy -> drop (drop_policy)
 *   ESP of an SA of the interface (dp_esp_in.h, after crypto) -> outer
 *                      headers off -> the interface's own inbound policies
 *                      -> tx (interface): the kernel routes it on
 *
 * The interface's policies are never looked up for what comes in on a
 * port (a 0.0.0.0/0 policy of a route-based tunnel must not capture the
 * LAN's traffic), nor the ports' policies for what the interface carries.
 * Frames in an interface's tx queue carry an Ethernet header like every
 * other (so that the common stages, ICMP errors included, apply); flush
 * takes it off before the TUN device gets them.
 *   reads:  the interface tables, the FIB (outer route)
 *   writes: the packets, the interface's counters (its port slot)
 */
#ifndef SP_DP_IFC_H
#define SP_DP_IFC_H

#include "dp_esp_in.h"
#include "dp_esp_out.h"

/* The tables of interface slot p (a port index past n_ports), or NULL. */
static inline struct sp_ipsec_tables *
ifc_tables(struct sp_ctx *c, uint32_t p)
{
	return c->t != NULL ? c->t->ifc[p - c->dp->n_ports] : NULL;
}

/* Puts an Ethernet header of the IP packet's type in front of m (data at
 * the IP header): 0, or -1 without headroom. */
static inline int
ifc_eth(struct rte_mbuf *m)
{
	uint8_t v = *rte_pktmbuf_mtod(m, const uint8_t *) >> 4;
	struct rte_ether_hdr *eh;

	eh = (struct rte_ether_hdr *)rte_pktmbuf_prepend(m, ETH_HLEN);
	if (eh == NULL)
		return -1;
	memset(eh, 0, 2 * RTE_ETHER_ADDR_LEN);
	eh->ether_type = rte_cpu_to_be_16(v == 6 ? RTE_ETHER_TYPE_IPV6 : RTE_ETHER_TYPE_IPV4);
	return 0;
}

/*
 * TCP MSS clamping, as `iptables -j TCPMSS --clamp-mss-to-pmtu` on the
 * interface (off unless configured: struct sp_port's mss4/mss6): the MSS
 * option of a SYN (or SYN-ACK) through the interface, either way, lowered
 * to mss; the TCP checksum updated incrementally (RFC 1624). m's data is
 * at the Ethernet header, k its parse (a whole packet: fragments were
 * reassembled).
 */
static __rte_noinline void
mss_clamp(struct rte_mbuf *m, const struct sp_pkt *k, uint16_t mss)
{
	uint8_t *th = rte_pktmbuf_mtod_offset(m, uint8_t *, ETH_HLEN + k->l3len);
	uint32_t hl, i, sum;
	uint16_t old, o, n;
	uint8_t olen;

	if (rte_pktmbuf_data_len(m) < ETH_HLEN + k->l3len + 20u || k->len < k->l3len + 20u ||
			!(th[13] & 0x02))
		return;
	hl = (uint32_t)(th[12] >> 4) * 4;
	if (hl < 20 || k->l3len + hl > k->len || rte_pktmbuf_data_len(m) < ETH_HLEN + k->l3len + hl)
		return;
	for (i = 20; i < hl && th[i] != 0; i += olen) {
		if (th[i] == 1) {	/* NOP */
			olen = 1;
			continue;
		}
		if (i + 1 >= hl || (olen = th[i + 1]) < 2 || i + olen > hl)
			return;
		if (th[i] != 2 || olen != 4)
			continue;
		old = (uint16_t)(th[i + 2] << 8 | th[i + 3]);
		if (old <= mss)
			return;
		th[i + 2] = (uint8_t)(mss >> 8);
		th[i + 3] = (uint8_t)mss;
		/* the value sits in one 16-bit word of the checksum, or (at an
		 * odd offset) across two: then it counts byte-swapped */
		o = (i & 1) ? rte_bswap16(old) : old;
		n = (i & 1) ? rte_bswap16(mss) : mss;
		sum = (uint16_t)~rte_be_to_cpu_16(*(uint16_t *)(th + 16)) + (uint16_t)~o + n;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		*(uint16_t *)(th + 16) = rte_cpu_to_be_16((uint16_t)~sum);
		return;
	}
}

/* Clamps the MSS of m (parse k) when interface slot p says so. */
static inline void
ifc_mss(struct sp_ctx *c, uint32_t p, struct rte_mbuf *m, const struct sp_pkt *k)
{
	uint16_t mss = k->v6 ? c->dp->ports[p].mss6 : c->dp->ports[p].mss4;

	if (unlikely(mss != 0) && k->proto == IPPROTO_TCP)
		mss_clamp(m, k, mss);
}

/* The decrypted packets of route-based SA sa (k of them, from the wire
 * port port): checked against its interface's inbound policies and handed
 * to the kernel through the interface. */
static __rte_noinline void
ifc_inbound(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *grp[], uint16_t k)
{
	/* once: Go moves an SA without a mark of its own between an
	 * interface and none (sp_sa_set_ifc) */
	uint8_t ifc = __atomic_load_n(&sa->ifc, __ATOMIC_RELAXED);
	uint32_t ip = c->dp->n_ports + ifc - 1;
	struct sp_ipsec_tables *saved = c->t;
	struct sp_inb ib;
	struct rte_mbuf *m;
	uint16_t i;
	int v;

	if (unlikely(ifc == 0 || ifc > c->dp->n_ifc)) {
		/* no such interface (just moved off one; Go never makes
		 * an SA for an interface that does not exist) */
		for (i = 0; i < k; i++)
			drop(c, port, grp[i], SP_CNT_DROP_POLICY);
		return;
	}
	ib.b[0].n = ib.b[1].n = 0;
	inbound_decap(c, port, sa, grp, k, &ib);
	c->t = ifc_tables(c, ip);
	for (v = 0; v < 2; v++) {
		struct sp_spd_batch *b = &ib.b[v];

		spd_classify(c, b, v, 0);
		for (i = 0; i < b->n; i++) {
			m = ib.m[v][i];
			if (inbound_policy(c, v, b->res[i], port, sa, m) != 0)
				continue;
			if (ifc_eth(m) != 0) {
				drop(c, ip, m, SP_CNT_DROP_NOMEM);
				continue;
			}
			if (unlikely((c->dp->ports[ip].mss4 | c->dp->ports[ip].mss6) != 0)) {
				struct sp_pkt pk;
				if (ip_parse(m, ETH_HLEN, &pk) == 0)
					ifc_mss(c, ip, m, &pk);
			}
			to_tap(c, ip, m);
		}
	}
	c->t = saved;
}

/* A burst the kernel routed into interface slot p (a port index past
 * n_ports): data at the IP header (TUN). */
static __rte_noinline void
ifc_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct sp_ipsec_tables *saved = c->t;
	struct sp_spd_batch b[2];
	uint16_t idx[2][SP_BURST];
	struct rte_mbuf *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	struct sp_plain pl;
	struct sp_match r;
	uint16_t i, j, no = 0;
	int rc, v;

	if (unlikely(c->closed)) {
		/* nothing from a tunnel interface is needed to negotiate */
		for (i = 0; i < n; i++)
			drop(c, p, mb[i], SP_CNT_DROP_CLOSED);
		return;
	}
	c->w->stats[p].cnt[SP_CNT_TAP_RX] += n;
	c->t = ifc_tables(c, p);
	pl.n = 0;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		*RXT(m) = c->now;
		if (rte_pktmbuf_data_len(m) < 1 || ifc_eth(m) != 0) {
			drop(c, p, m, SP_CNT_DROP_MALFORMED);
			continue;
		}
		rc = ip_parse(m, ETH_HLEN, &pl.k[pl.n]);
		if (unlikely(rc > 0) && (rc = sp_reassemble(c, p, SP_FRAG_TAP, &m, ETH_HLEN, &pl.k[pl.n])) > 0)
			continue;
		if (unlikely(rc < 0)) {
			drop(c, p, m, SP_CNT_DROP_MALFORMED);
			continue;
		}
		ifc_mss(c, p, m, &pl.k[pl.n]);
		pl.m[pl.n++] = m;
	}
	b[0].n = b[1].n = 0;
	for (i = 0; i < pl.n; i++) {
		v = pl.k[i].v6;
		idx[v][b[v].n] = i;
		spd_key(&b[v], rte_pktmbuf_mtod_offset(pl.m[i], uint8_t *, ETH_HLEN), &pl.k[i]);
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
				if (protect(c, p, pl.m[i], &pl.k[i], &r, 0, outm, outsa, &no))
					continue;
			}
			/* no policy of the interface, or a pass policy:
			 * what is routed into a tunnel never leaves in clear */
			drop(c, p, pl.m[i], SP_CNT_DROP_POLICY);
		}
	}
	c->t = saved;
	encrypt_collected(c, p, outm, outsa, no);
}

#endif
