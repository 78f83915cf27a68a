/*
 * Outbound ESP, as VPP's esp_encrypt: a packet that matched an outbound
 * policy -> pass | drop | acquire (no SA yet) | too big once encrypted
 * (ICMP error, dp_icmp.c) | TTL -> collected per SA -> hard lifetime ->
 * counts -> crypto (dp_crypto.h) -> outer checksums -> route.
 *   reads:  the matched policy / SA, the tunnel MTU and the SA's path MTU
 *   writes: the packets (TTL, l3_len, hash.usr = inner protocol and DF), the SAs'
 *           counts; an acquire is noted to Go
 */
#ifndef SP_DP_ESP_OUT_H
#define SP_DP_ESP_OUT_H

#include "dp_crypto.h"
#include "dp_route.h"

/* Outbound, after crypto: k ESP packets of sa, the plaintext came in on port. */
static void
outbound_done(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t k)
{
	uint16_t i;

	for (i = 0; i < k; i++) {
		uint8_t *l3 = rte_pktmbuf_mtod(mb[i], uint8_t *);
		if (!is_v6(l3)) {
			struct rte_ipv4_hdr *oh = (struct rte_ipv4_hdr *)l3;
			/* rte_ipsec leaves the IPv4 header checksum to us; a
			 * tunnel header is the SA's template but for length
			 * and id (read back as the 16-bit words they were
			 * written as: no reload of the whole fresh header) */
			if (!sa->transport) {
				/* DF copied from an IPv4 packet inside (RFC 4301
				 * §8.1, as Linux does): the path answers a DF
				 * packet too big with ICMP, which teaches the SA
				 * its path MTU (sp_pmtu_learn); one without DF is
				 * fragmented on the way */
				uint16_t df = (uint16_t)(mb[i]->hash.usr >> 16);
				uint32_t sum = sa->hdr_sum + oh->total_length + oh->packet_id + df;
				oh->fragment_offset = df;
				oh->hdr_checksum = (uint16_t)~__rte_raw_cksum_reduce(sum);
			} else {
				oh->hdr_checksum = 0;
				oh->hdr_checksum = rte_ipv4_cksum(oh);
			}
		} else if (sa->encap) {
			/* RFC 8200 §8.1: UDP over IPv6 carries a checksum */
			struct rte_ipv6_hdr *oh = (struct rte_ipv6_hdr *)l3;
			struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(oh + 1);
			uh->dgram_cksum = 0;
			uh->dgram_cksum = rte_ipv6_udptcp_cksum(oh, uh);
		}
		cnt(c, port, SP_CNT_ESP_OUT);
		route_out(c, port, mb[i], 0);
	}
}

/* Outbound: n packets (data at the inner IP header) for one SA. */
static void
esp_outbound(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	n = sa_limit(c, port, sa, mb, n);
	/* count the plaintext, as the kernel counts SA bytes */
	sa_count(c, sa, mb, n);
	outbound_done(c, port, sa, mb, sa_crypto(c, port, sa, mb, n));
}

/*
 * Plaintext IP (data at the Ethernet header, k its parse) that matched the
 * outbound policy p: protect, drop, or pass. Returns 1 when the packet was
 * consumed, 0 when it takes the default path. outm/outsa collect packets
 * to encrypt, in order.
 */
static __rte_always_inline int
protect(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, const struct sp_pkt *k,
	const struct sp_match *pm, int from_wire, struct rte_mbuf **outm, struct sp_sa **outsa,
	uint16_t *nout)
{
	uint8_t *l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, ETH_HLEN);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)l3;
	struct rte_ipv6_hdr *ip6 = (struct rte_ipv6_hdr *)l3;
	const struct sp_match p = *pm;
	struct sp_sa *sa;
	uint32_t mtu, al, size, room;

	{
		if (p.action == SP_ACT_PASS)
			return 0;
		if (p.action == SP_ACT_DROP) {
			drop(c, port, m, SP_CNT_DROP_POLICY);
			return 1;
		}
		sa = p.sa;
		if (sa == NULL) {
			/* trap policy: ask the IKE daemon for an SA (acquire) */
			if (k->v6)
				sp_note_acquire(c->w, p.reqid, 6, ip6->src_addr, ip6->dst_addr);
			else
				sp_note_acquire(c->w, p.reqid, 4, &ip->src_addr, &ip->dst_addr);
			drop(c, port, m, SP_CNT_DROP_NO_SA);
			return 1;
		}
		if (unlikely(sa->transport && k->l3len > SP_L3_MAX)) {
			drop(c, port, m, SP_CNT_DROP_MALFORMED);
			return 1;
		}
		/* encrypted size: overhead, the header left in front in
		 * transport mode, the rest and the trailer (2) padded */
		mtu = RTE_MIN(c->dp->tun_mtu, sa->mtu);	/* a path MTU learned: lower */
		al = sa->pad_align;
		room = sa->transport ? k->l3len : 0;
		size = sa->overhead + room + RTE_ALIGN_CEIL(k->len - room + 2, al);
		/* too big once encrypted: IPv4 with DF clear, and IPv6 that
		 * was in fragments when it came (reassembled here), are
		 * encrypted and the ESP packet leaves in fragments */
		if (size > mtu && !(k->v6 ? m->pool == c->dp->whole_pool :
				!(ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)))) {
			uint32_t fits = room + RTE_ALIGN_FLOOR(mtu - sa->overhead - room, al) - 2;
			if (k->v6) {
				const uint8_t *src = sa->family == 6 ? sa->src :
					c->f != NULL ? c->f->src6 : NULL;
				if (src != NULL && !zero16(src)) {
					sp_icmp6_too_big(c, port, m, src, fits, from_wire);
					return 1;
				}
			} else if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) {
				uint32_t src = 0;
				if (sa->family == 4)
					memcpy(&src, sa->src, 4);
				else if (c->f != NULL)
					src = c->f->src4;
				if (src != 0) {
					sp_icmp_frag_needed(c, port, m, src, fits, from_wire);
					return 1;
				}
			}
			drop(c, port, m, SP_CNT_DROP_MTU);
			return 1;
		}
		trim_to(m, ETH_HLEN + k->len);
		rte_pktmbuf_adj(m, ETH_HLEN);
		if (from_wire) {
			/* forwarded: the TTL drops here, as in the kernel */
			if (k->v6 ? ip6->hop_limits <= 1 : ip->time_to_live <= 1) {
				rte_pktmbuf_prepend(m, ETH_HLEN);
				to_tap(c, port, m);
				return 1;
			}
			if (k->v6)
				ip6->hop_limits--;
			else
				ttl_dec(ip);
		}
		/* l2_len 0, l3_len as below: one store of the whole word (the
		 * bit fields one by one cost a stalled reload each) */
		m->tx_offload = rte_mbuf_tx_offload(0, sa->transport ? k->l3len : 0, 0, 0, 0, 0, 0);
		/* the inner protocol; IPv4's DF above it, for the outer
		 * header (outbound_done) */
		m->hash.usr = k->v6 ? IPPROTO_IPV6 : IPPROTO_IPIP |
			(uint32_t)(ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) << 16;
		outm[*nout] = m;
		outsa[*nout] = sa;
		(*nout)++;
		return 1;
	}
}

static void
encrypt_collected(struct sp_ctx *c, uint32_t port, struct rte_mbuf **m, struct sp_sa **sa, uint16_t n)
{
	uint16_t i, j;

	for (i = 0; i < n; i = j) {
		for (j = i; j < n && sa[j] == sa[i]; j++)
			;
		esp_outbound(c, port, sa[i], &m[i], j - i);
	}
}

#endif
