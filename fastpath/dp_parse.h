/*
 * Stage 1, parse: what the loop needs to know of an IP packet.
 *   reads:  the frame (Ethernet type, IPv4 header or IPv6 header and
 *           extension chain, the first 4 bytes of TCP/UDP/SCTP, ICMP type)
 *   writes: struct sp_pkt (dp_priv.h); nothing in the mbuf
 * Fragments are only recognised here; dp_frag.c reassembles them.
 */
#ifndef SP_DP_PARSE_H
#define SP_DP_PARSE_H

#include "dp_priv.h"

/* At most this many IPv6 extension headers before the upper layer; more
 * is treated as malformed (a cheap defence against long chains). */
#define SP_MAX_EXT 8

/*
 * Parse the IP packet at offset off of m: 0 and *k filled, 1 for a
 * fragment (reassembled first: see sp_reassemble), -1 for a malformed packet
 * (header lengths beyond the data, a broken IPv6 extension chain).
 */
static int
ip_parse(const struct rte_mbuf *m, uint32_t off, struct sp_pkt *k)
{
	uint32_t avail = rte_pktmbuf_data_len(m) > off ? rte_pktmbuf_data_len(m) - off : 0;
	const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, off);
	const uint8_t *l4;
	uint32_t i;

	memset(k, 0, sizeof(*k));
	if (avail < 1)
		return -1;
	if (!is_v6(l3)) {
		const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)l3;
		uint32_t ihl;

		if (avail < sizeof(*ip) || (ip->version_ihl >> 4) != 4)
			return -1;
		ihl = (ip->version_ihl & 0xf) * 4;
		k->len = rte_be_to_cpu_16(ip->total_length);
		if (ihl < sizeof(*ip) || k->len < ihl || avail < k->len)
			return -1;
		if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK | RTE_IPV4_HDR_MF_FLAG))
			return 1;
		k->l3len = ihl;
		k->proto = ip->next_proto_id;
	} else {
		const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)l3;
		uint8_t nh;
		uint32_t o = sizeof(*ip);

		if (avail < sizeof(*ip))
			return -1;
		k->v6 = 1;
		/* payload length 0 is a jumbogram: not on these links */
		k->len = sizeof(*ip) + rte_be_to_cpu_16(ip->payload_len);
		if (k->len == sizeof(*ip) || avail < k->len)
			return -1;
		nh = ip->proto;
		for (i = 0; ; i++) {
			if (nh == IPPROTO_FRAGMENT)
				return 1;
			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS)
				break;
			if (i == SP_MAX_EXT || o + 8 > k->len)
				return -1;
			nh = l3[o];
			o += (l3[o + 1] + 1) * 8;
			if (o > k->len)
				return -1;
		}
		k->l3len = o;
		k->proto = nh;
	}
	l4 = l3 + k->l3len;
	switch (k->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (k->len >= k->l3len + 4u) {
			k->sport = (uint16_t)l4[0] << 8 | l4[1];
			k->dport = (uint16_t)l4[2] << 8 | l4[3];
		}
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (k->len > k->l3len)
			k->icmp_type = l4[0];
		break;
	}
	return 0;
}

static inline int
is_ip(const struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);

	return rte_pktmbuf_data_len(m) >= ETH_HLEN &&
		(eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
		 eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6));
}

#endif
