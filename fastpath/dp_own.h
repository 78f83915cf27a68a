/*
 * Stage 2, the gateway's own traffic: is a destination one of its
 * addresses (ESP-in-UDP is decapsulated only there), and is a packet its
 * own IKE or neighbour discovery (which pass beside every policy, and
 * through the closed gate).
 *   reads:  the published FIB's own4/own6 (struct sp_fib), the parse
 *   writes: nothing
 */
#ifndef SP_DP_OWN_H
#define SP_DP_OWN_H

#include "dp_priv.h"

/*
 * Is addr (network order; IPv4 in the first 4 bytes) one of the gateway's
 * own addresses? The exact set (struct sp_fib own4/own6), not the LPM: a
 * local route may cover a whole prefix. A gateway has few addresses: a
 * binary search of a line or two.
 */
static int
is_own(const struct sp_ctx *c, int v6, const void *addr)
{
	const struct sp_fib *f = c->f;
	uint32_t lo = 0, hi, mid, a4;

	if (f == NULL)
		return 0;
	if (!v6) {
		memcpy(&a4, addr, 4);
		a4 = rte_be_to_cpu_32(a4);
		hi = f->n_own4;
		while (lo < hi) {
			mid = (lo + hi) / 2;
			if (f->own4[mid] < a4)
				lo = mid + 1;
			else
				hi = mid;
		}
		return lo < f->n_own4 && f->own4[lo] == a4;
	}
	hi = f->n_own6;
	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (memcmp(f->own6[mid], addr, 16) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < f->n_own6 && memcmp(f->own6[lo], addr, 16) == 0;
}

/* Is the destination of the packet at l3 one of the gateway's own? */
static inline int
dst_own(const struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k)
{
	return is_own(c, k->v6, k->v6 ? ((const struct rte_ipv6_hdr *)l3)->dst_addr :
		(const uint8_t *)&((const struct rte_ipv4_hdr *)l3)->dst_addr);
}

/* dst_own, remembering the last IPv4 destination found own in *last and
 * *have: the caller's, for one burst (whose FIB does not change); the
 * ESP-in-UDP of a burst mostly comes to one address. */
static inline int
dst_own_last(const struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k, uint32_t *last,
	int *have)
{
	uint32_t d;

	if (k->v6)
		return dst_own(c, l3, k);
	memcpy(&d, &((const struct rte_ipv4_hdr *)l3)->dst_addr, 4);
	if (*have && d == *last)
		return 1;
	if (!dst_own(c, l3, k))
		return 0;
	*last = d;
	*have = 1;
	return 1;
}

/*
 * The gateway's own IKE: UDP whose local port (the destination from the
 * wire, the source from the TAP) is 500 or the NAT-T port and whose local
 * address is one of the gateway's own. This is what charon's bypass
 * policies in the kernel let through (strongSwan kernel_netlink_ipsec.c,
 * bypass_socket: add_socket_bypass puts a policy on charon's own sockets,
 * bound to their local address and port; with port_bypass, manage_bypass
 * matches the local port only, dport inbound and sport outbound). The
 * remote port is not checked: behind a NAT it is whatever the NAT chose
 * (RFC 7296 §2.23), so "both ports IKE ports" would cut off every peer
 * behind one. On the NAT-T port only IKE counts, behind its non-ESP marker
 * (RFC 3948 §2.2), and NAT keepalives (§2.3); ESP-in-UDP is not IKE.
 */
static int
ike_own(const struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k, int from_wire)
{
	uint16_t port = from_wire ? k->dport : k->sport;

	if (k->proto != IPPROTO_UDP || (port != 500 && port != c->dp->natt_port))
		return 0;
	if (port != 500) {
		const uint8_t *pl = l3 + k->l3len + sizeof(struct rte_udp_hdr);
		uint32_t plen = k->len - k->l3len;	/* UDP header and payload */

		if (plen == sizeof(struct rte_udp_hdr) + 1) {
			if (pl[0] != 0xff)
				return 0;
		} else if (plen < sizeof(struct rte_udp_hdr) + 4 || (pl[0] | pl[1] | pl[2] | pl[3]) != 0) {
			return 0;
		}
	}
	if (k->v6)
		return is_own(c, 1, from_wire ? ((const struct rte_ipv6_hdr *)l3)->dst_addr :
			((const struct rte_ipv6_hdr *)l3)->src_addr);
	return is_own(c, 0, from_wire ? (const uint8_t *)&((const struct rte_ipv4_hdr *)l3)->dst_addr :
		(const uint8_t *)&((const struct rte_ipv4_hdr *)l3)->src_addr);
}

static inline int
ll6(const uint8_t *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/*
 * IPv6 neighbour discovery (RFC 4861: router solicitation and
 * advertisement, neighbour solicitation and advertisement, redirect), as a
 * node would accept it: hop limit 255, which no forwarded packet has, and
 * code 0 (§6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1); router advertisements and
 * redirects from a link-local source (§6.1.2, §8.1). The gateway's end of
 * it (the destination from the wire, the source from the TAP) is
 * link-local or one of its own addresses; from the wire also multicast
 * (solicited-node, all-nodes, all-routers), from the TAP also unspecified
 * (duplicate address detection, §7.2.2 of RFC 4862). Not "link-local
 * source only": Linux solicits from the address of the packet that needs
 * the neighbour (ndisc_solicit), a global one, and is answered there;
 * while closed, that is how IKE over IPv6 finds its next hop.
 */
static int
nd_ok(const struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k, int from_wire)
{
	const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)l3;
	const uint8_t *ours = from_wire ? ip->dst_addr : ip->src_addr;

	if (!k->v6 || k->proto != IPPROTO_ICMPV6 || k->icmp_type < 133 || k->icmp_type > 137)
		return 0;
	if (ip->hop_limits != 255 || k->len < k->l3len + 4u || l3[k->l3len + 1] != 0)
		return 0;
	if ((k->icmp_type == 134 || k->icmp_type == 137) && !ll6(ip->src_addr))
		return 0;
	if (ll6(ours) || is_own(c, 1, ours))
		return 1;
	return from_wire ? ours[0] == 0xff : zero16(ours);
}

/*
 * Traffic no policy may touch: the gateway's own IKE and neighbour
 * discovery, each no wider than the kernel lets it be (ike_own, nd_ok).
 */
static inline int
bypass(const struct sp_ctx *c, const uint8_t *l3, const struct sp_pkt *k, int from_wire)
{
	if (k->proto == IPPROTO_UDP) {
		uint16_t port = from_wire ? k->dport : k->sport;

		/* most UDP is no IKE: decided here, without a call */
		if (likely(port != 500 && port != c->dp->natt_port))
			return 0;
		return ike_own(c, l3, k, from_wire);
	}
	return k->v6 && k->proto == IPPROTO_ICMPV6 && nd_ok(c, l3, k, from_wire);
}

#endif
