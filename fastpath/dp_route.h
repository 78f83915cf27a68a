/*
 * Last stage, route: an IP packet to its next hop and into a tx queue
 * (wire or TAP); the reverse-path check of plaintext from the wire.
 *   reads:  the published FIB (rte_lpm, rte_lpm6, next hops, neighbours),
 *           the worker's one-entry caches of route, neighbour and
 *           reverse path (struct sp_ctx; reset every iteration)
 *   writes: the Ethernet header, TTL / hop limit (forwarded packets),
 *           the tx queues; a neighbour miss notes it to Go (dp_notes.c)
 *           and holds the packet (dp_hold.c)
 */
#ifndef SP_DP_ROUTE_H
#define SP_DP_ROUTE_H

#include "dp_priv.h"

static __rte_always_inline void route_out_body(struct sp_ctx *c, uint32_t in_port,
	struct rte_mbuf *m, int forwarded, uint64_t since);

/*
 * Send an IP packet (mbuf data starts at the IPv4 or IPv6 header) towards
 * its destination: local -> TAP of in_port, else route + neighbour -> wire.
 * forwarded: decrement TTL / hop limit (we act as a router for it).
 */
/* the per-packet paths get the body inlined; held packets call it here (sp_route_out_since) */
static inline void
route_out(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded)
{
	route_out_body(c, in_port, m, forwarded, c->now);
}

static __rte_always_inline void
route_out_body(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded, uint64_t since)
{
	uint8_t *l3 = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)l3;
	struct rte_ipv6_hdr *ip6 = (struct rte_ipv6_hdr *)l3;
	struct sp_fib *f = c->f;
	struct sp_nexthop *nh;
	struct rte_ether_hdr *eh;
	int v6 = is_v6(l3), rc;
	uint32_t idx;
	void *data;

	if (f == NULL) {
		drop(c, in_port, m, SP_CNT_DROP_NO_ROUTE);
		return;
	}
	if (v6) {
		rc = sp_fib_lookup6(f, ip6->dst_addr, &idx);
	} else if (c->rc_ok && c->rc_dst == ip->dst_addr) {
		/* a burst mostly goes to few destinations */
		idx = c->rc_idx;
		rc = 0;
	} else {
		rc = sp_fib_lookup4(f, rte_be_to_cpu_32(ip->dst_addr), &idx);
		if (rc == 0) {
			c->rc_dst = ip->dst_addr;
			c->rc_idx = idx;
			c->rc_ok = 1;
		}
	}
	if (rc != 0 || idx >= f->n_nh) {
		drop(c, in_port, m, SP_CNT_DROP_NO_ROUTE);
		return;
	}
	nh = &f->nh[idx];
	if (nh->kind == SP_NH_BLACKHOLE || nh->port >= c->dp->n_ports) {
		drop(c, in_port, m, SP_CNT_DROP_NO_ROUTE);
		return;
	}
	eh = (struct rte_ether_hdr *)rte_pktmbuf_prepend(m, ETH_HLEN);
	if (eh == NULL) {
		drop(c, in_port, m, SP_CNT_DROP_NOMEM);
		return;
	}
	eh->ether_type = rte_cpu_to_be_16(v6 ? RTE_ETHER_TYPE_IPV6 : RTE_ETHER_TYPE_IPV4);
	if (nh->kind == SP_NH_LOCAL ||
			(forwarded && (v6 ? ip6->hop_limits <= 1 : ip->time_to_live <= 1))) {
		/* addressed to the gateway itself: the kernel takes it; or
		 * out of hops: the kernel sends the ICMP time exceeded */
		rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->dst_addr);
		rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->src_addr);
		to_tap(c, in_port, m);
		return;
	}
	if (v6) {
		struct sp_neigh6_key k;

		if (forwarded)
			ip6->hop_limits--;
		memset(&k, 0, sizeof(k));
		memcpy(k.ip, zero16(nh->gw6) ? ip6->dst_addr : nh->gw6, 16);
		k.port = nh->port;
		rc = rte_hash_lookup_data(f->neigh6, &k, &data);
		if (rc < 0) {
			if (since == c->now)
				sp_note_miss(c->w, k.port, 6, k.ip);
			sp_hold(c, in_port, nh->port, m, since);
			return;
		}
	} else {
		struct sp_neigh_key k;

		if (forwarded)
			ttl_dec(ip);
		k.ip = nh->gw ? nh->gw : ip->dst_addr;
		k.port = nh->port;
		if (c->nc_ok && c->nc_key.ip == k.ip && c->nc_key.port == k.port) {
			data = (void *)c->nc_data;
			rc = 0;
		} else {
			rc = rte_hash_lookup_data(f->neigh, &k, &data);
			if (rc >= 0) {
				c->nc_key = k;
				c->nc_data = (uintptr_t)data;
				c->nc_ok = 1;
			}
		}
		if (rc < 0) {
			if (since == c->now)
				sp_note_miss(c->w, k.port, 4, &k.ip);
			sp_hold(c, in_port, nh->port, m, since);
			return;
		}
	}
	rte_ether_addr_copy(&f->macs[(uintptr_t)data], &eh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[nh->port].mac, &eh->src_addr);
	txq_put(c, &c->wire[nh->port], nh->port, m);
}

/*
 * Strict reverse path (RFC 3704 §2.2, the kernel's rp_filter=1), for
 * plaintext from the wire that an outbound IPsec policy would protect: it
 * must come in on the port through which the FIB routes its source. Else
 * it claims a source it cannot have there (say our protected LAN, arriving
 * on the WAN), and encrypting it would carry a forgery into the tunnel: it
 * is dropped (drop_spoof). A source routed to the kernel (local), to a
 * blackhole or nowhere fails too, as in the kernel. One FIB lookup per
 * source and iteration: a burst mostly comes from few sources.
 */
static int
rpf_ok(struct sp_ctx *c, uint32_t port, const uint8_t *l3, int v6)
{
	const struct sp_fib *f = c->f;
	uint32_t idx, src;
	int rc;

	if (!v6) {
		memcpy(&src, &((const struct rte_ipv4_hdr *)l3)->src_addr, 4);
		if (c->rp_ok && c->rp_src == src && c->rp_port == port)
			return c->rp_pass;
		rc = f == NULL ? -1 : sp_fib_lookup4(f, rte_be_to_cpu_32(src), &idx);
		c->rp_src = src;
		c->rp_ok = 1;
	} else {
		const uint8_t *src6 = ((const struct rte_ipv6_hdr *)l3)->src_addr;

		if (c->rp6_ok && c->rp_port == port && memcmp(c->rp_src6, src6, 16) == 0)
			return c->rp_pass;
		rc = f == NULL ? -1 : sp_fib_lookup6(f, src6, &idx);
		memcpy(c->rp_src6, src6, 16);
		c->rp6_ok = 1;
	}
	/* one verdict is cached, of the family looked up last */
	if (v6)
		c->rp_ok = 0;
	else
		c->rp6_ok = 0;
	c->rp_port = (uint8_t)port;
	c->rp_pass = rc == 0 && idx < f->n_nh && f->nh[idx].kind == SP_NH_UNICAST && f->nh[idx].port == port;
	return c->rp_pass;
}

#endif
