/*
 * The per-packet loop of one worker lcore, run to completion per burst:
 *
 *   rx (wire port)  -> classify (IPv4, IPv6 with extension headers):
 *                      ESP / ESP-in-UDP | plaintext | malformed -> drop
 *     ESP           -> SAD by SPI -> crypto (rte_ipsec + cryptodev) ->
 *                      tunnel: outer header off, IPv4 or IPv6 inside |
 *                      transport: the packet's own header stays ->
 *                      inbound policy check -> route/neighbour -> tx | TAP
 *     plaintext     -> outbound policy -> encrypt -> route -> tx
 *                      | inbound policy says protected -> drop
 *                      | no policy, IKE, neighbour discovery -> TAP
 *   rx (TAP)        -> outbound policy -> encrypt -> route -> tx
 *                      | no policy -> wire port of the same pair
 *                      | IP the parser refuses -> drop
 *   fragments (wire, TAP, decrypted) are reassembled first and go on as
 *   whole packets; a frame larger than its port's MTU leaves in fragments
 *   (dp_frag.c)
 *
 * Every mbuf ends in exactly one tx queue or is freed and counted (after,
 * at most, a moment held for its next hop's neighbour entry).
 */
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#include <rte_cryptodev.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_udp.h>
#include <rte_icmp.h>
#include <rte_esp.h>
#include <rte_mbuf.h>

#include "dp.h"

#define ETH_HLEN ((uint16_t)sizeof(struct rte_ether_hdr))
#define SP_HOLD 64		/* packets held per worker for a neighbour */
#define SP_HOLD_MS 500		/* how long, at most */
/* IP headers (IPv6 extension headers included; + UDP for ESP in UDP) in
 * front of ESP, inbound, and of an outbound transport packet: at most what
 * an mbuf's 9-bit l3_len and outer_l3_len hold; longer chains are dropped
 * as malformed */
#define SP_L3_MAX 511
#define SP_TAP_US 500		/* under load, an idle TAP is polled again after this long */
/* How far ahead of the packet at hand its policy's SA pointer (out_sa)
 * and the SA are loaded (see spd_prefetch); inbound, how many SAs ahead
 * of the one at hand its rte_ipsec state is (see esp_inbound). */
#define SP_POL_AHEAD 8
#define SP_SA_AHEAD 4

/* Per-iteration output buffers: one per wire port and one per TAP. */
struct sp_txq {
	uint16_t n;
	struct rte_mbuf *m[SP_BURST * 4];
};

struct sp_ctx {
	struct sp_dp *dp;
	struct sp_worker *w;	/* this worker's counters and notes */
	uint32_t wid;		/* its index: queue of every port and crypto device */
	struct sp_ipsec_tables *t;
	struct sp_fib *f;
	uint64_t now;
	struct sp_txq wire[SP_MAX_PORTS];
	struct sp_txq tap[SP_MAX_PORTS];
	/* lookaside crypto: ops this worker has in each device */
	uint32_t inflight;
	uint16_t dev_inflight[RTE_CRYPTO_MAX_DEVS];
	/* packets whose next hop has no neighbour entry yet, held (as the
	 * kernel holds them) until the mirror publishes one or SP_HOLD_MS */
	uint16_t nheld;
	struct sp_held {
		struct rte_mbuf *m;	/* data at the IP header */
		uint64_t since;
		uint32_t in_port, out_port;
	} held[SP_HOLD];
	struct sp_fib *held_fib;	/* the FIB they last missed in */
	/* the last IPv4 neighbour found in this iteration's FIB (a burst
	 * mostly goes to one next hop): key and index into f->macs */
	struct sp_neigh_key nc_key;
	uintptr_t nc_data;
	int nc_ok;
	/* and the last IPv4 destination's next hop (index into f->nh) */
	uint32_t rc_dst, rc_idx;
	int rc_ok;
	uint64_t held_try;		/* when, in TSC */
	uint64_t hold_tsc, retry_tsc, tap_tsc;
	uint64_t tap_next[SP_MAX_PORTS];	/* under load, when a TAP is polled again (TSC) */
	uint32_t ctr_off;		/* where in an SA this worker counts (see CTR) */
	uint32_t closed;		/* dp->closed, read once per iteration */
	/* the last source whose reverse path was checked in this iteration's
	 * FIB (see rpf_ok): IPv4 address or IPv6 bytes, port, verdict */
	uint32_t rp_src;
	uint8_t rp_src6[16];
	uint8_t rp_port, rp_pass, rp_ok, rp6_ok;
	/* ICMP errors this worker may still send: a token bucket kept in TSC
	 * cycles of credit, one error costing icmp_cost (see icmp_token) */
	uint64_t icmp_credit, icmp_cost, icmp_last;
	struct sp_frag *frag;		/* reassembly tables (dp_frag.c) */
	int frag_live;			/* they may hold fragments: reap them */
	uint32_t frame_max[SP_MAX_PORTS];	/* Ethernet + MTU: larger leaves in fragments */
};

#define SA_OF(m) RTE_MBUF_DYNFIELD((m), sp_mbuf_sa_off, struct sp_sa **)
#define RXT(m) RTE_MBUF_DYNFIELD((m), sp_mbuf_rxt_off, uint64_t *)

static inline void
cnt(struct sp_ctx *c, uint32_t port, enum sp_cnt k)
{
	c->w->stats[port].cnt[k]++;
}

/* this worker's drop counters of an SA */
#define ST(c, sa) ((sa)->st[(c)->wid])
/* this worker's packet and byte counts of an SA: in the SA's hot line if
 * it is the only worker, else in its st[wid] */
#define CTR(c, sa) ((struct sp_sa_ctr *)RTE_PTR_ADD((sa), (c)->ctr_off))

/* The lines of a cold SA that the loop reads for every packet (ss and the
 * fields up to SP_SA_HOT_END). */
static inline void
sa_lines_prefetch(const struct sp_sa *sa)
{
	rte_prefetch0(sa);
	rte_prefetch0(RTE_PTR_ADD(sa, RTE_CACHE_LINE_SIZE));
}

/*
 * What crypto and counting will touch of a cold SA beyond its first two
 * lines: its rte_ipsec state and, with more than one worker, this worker's
 * counts. rte_ipsec's prepare and process steps read and write the first
 * four lines of its SA for every packet (lib/ipsec/sa.h, 22.11: fields
 * and the start of the header template; the rest of it, the sequence
 * number and the packet count; the byte count), and inbound the start of
 * the replay window that follows it (inbound: 1, else 0; the caller knows,
 * so that only the SA's first line is waited for here).
 */
#define SP_ISA_LINES 4
static inline void
sa_state_prefetch(struct sp_ctx *c, struct sp_sa *sa, int inbound)
{
	const uint8_t *isa = (const uint8_t *)sa->ss.sa;
	uint32_t i;

	for (i = 0; i < SP_ISA_LINES + inbound; i++)
		rte_prefetch0(isa + i * RTE_CACHE_LINE_SIZE);
	if (c->ctr_off >= 2 * RTE_CACHE_LINE_SIZE)	/* not in the lines loaded already */
		rte_prefetch0(CTR(c, sa));
}

static inline void
drop(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, enum sp_cnt k)
{
	cnt(c, port, k);
	rte_pktmbuf_free(m);
}

static void txq_put_frags(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m);

static inline void
txq_put(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m)
{
	if (unlikely(rte_pktmbuf_pkt_len(m) > c->frame_max[port])) {
		txq_put_frags(c, q, port, m);
		return;
	}
	if (q->n == RTE_DIM(q->m)) {
		drop(c, port, m, SP_CNT_DROP_TX);
		return;
	}
	q->m[q->n++] = m;
}

/* Too big for the port (reassembled here, or ESP of a packet that may be
 * fragmented): in fragments. */
static void __rte_noinline
txq_put_frags(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m)
{
	struct rte_mbuf *f[SP_FRAG_OUT_MAX];
	uint16_t n, i;

	n = sp_frag_out(c->frag, port, m, c->dp->ports[port].mtu, f);
	for (i = 0; i < n; i++)
		txq_put(c, q, port, f[i]);
}

static inline void
to_tap(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m)
{
	txq_put(c, &c->tap[port], port, m);
}

static void
flush(struct sp_ctx *c)
{
	struct sp_dp *dp = c->dp;
	uint16_t sent, i, run;
	uint32_t p;
	uint64_t now = 0, t;

	for (p = 0; p < dp->n_ports; p++) {
		struct sp_txq *q = &c->wire[p];
		if (q->n) {
			/* latency, up to the handoff (the PMD owns the mbufs
			 * after it) */
			if (now == 0)
				now = rte_get_tsc_cycles();
			/* the frames of one rx burst share their stamp and
			 * come in runs: one bucket per run */
			for (i = 0; i < q->n; i += run) {
				t = *RXT(q->m[i]);
				for (run = 1; i + run < q->n && *RXT(q->m[i + run]) == t; run++)
					;
				c->w->lat[sp_lat_bucket((now - t) >> dp->lat_shift)] += run;
			}
			sent = rte_eth_tx_burst(dp->ports[p].phys, c->wid, q->m, q->n);
			c->w->stats[p].cnt[SP_CNT_TX] += sent;
			for (i = sent; i < q->n; i++)
				drop(c, p, q->m[i], SP_CNT_DROP_TX);
			q->n = 0;
		}
		q = &c->tap[p];
		if (q->n) {
			sent = rte_eth_tx_burst(dp->ports[p].tap, c->wid, q->m, q->n);
			c->w->stats[p].cnt[SP_CNT_TAP_TX] += sent;
			for (i = sent; i < q->n; i++)
				drop(c, p, q->m[i], SP_CNT_DROP_TX);
			q->n = 0;
		}
	}
}

static void
note_push(struct sp_worker *w, uint32_t kind, uint32_t port, uint8_t family,
	const void *a, const void *d, uint32_t b)
{
	uint32_t h = w->note_head;
	uint32_t alen = family == 6 ? 16 : 4;
	struct sp_note *n;

	if (h - __atomic_load_n(&w->note_tail, __ATOMIC_ACQUIRE) >= SP_NOTE_RING)
		return;	/* Go is behind; the next packet notes it again */
	n = &w->note[h % SP_NOTE_RING];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->port = port;
	n->family = family;
	n->b = b;
	if (a != NULL)
		memcpy(n->a, a, alen);
	if (d != NULL)
		memcpy(n->d, d, alen);
	__atomic_store_n(&w->note_head, h + 1, __ATOMIC_RELEASE);
}

/* Go takes the notes of worker wid (single consumer per ring). */
uint32_t
sp_note_pop(struct sp_dp *dp, uint32_t wid, struct sp_note *out, uint32_t max)
{
	struct sp_worker *w = &dp->w[wid];
	uint32_t t = w->note_tail, h = __atomic_load_n(&w->note_head, __ATOMIC_ACQUIRE);
	uint32_t n = 0;

	while (t != h && n < max)
		out[n++] = w->note[t++ % SP_NOTE_RING];
	__atomic_store_n(&w->note_tail, t, __ATOMIC_RELEASE);
	return n;
}

/* How many workers run. */
int
sp_running(struct sp_dp *dp)
{
	uint32_t i;
	int n = 0;

	for (i = 0; i < dp->n_workers; i++)
		n += __atomic_load_n(&dp->w[i].running, __ATOMIC_ACQUIRE) != 0;
	return n;
}

/* Decrement the TTL of a forwarded packet; RFC 1624 incremental checksum. */
static inline void
ttl_dec(struct rte_ipv4_hdr *ip)
{
	uint32_t sum = ip->hdr_checksum + rte_cpu_to_be_16(0x0100);

	ip->time_to_live--;
	ip->hdr_checksum = (uint16_t)(sum + (sum >> 16));
}

static inline int
is_v6(const void *l3)
{
	return (*(const uint8_t *)l3 >> 4) == 6;
}

static inline int
zero16(const uint8_t *a)
{
	uint64_t q[2];

	memcpy(q, a, 16);
	return (q[0] | q[1]) == 0;
}

/* What the loop needs to know of an IP packet. */
struct sp_pkt {
	uint8_t v6;
	uint8_t proto;		/* upper layer protocol */
	uint8_t icmp_type;	/* ICMP / ICMPv6 */
	uint16_t l3len;		/* IP header, with IPv6 extension headers */
	uint32_t len;		/* IP total length */
	uint16_t sport, dport;	/* host order; 0 when absent */
};

/* At most this many IPv6 extension headers before the upper layer; more
 * is treated as malformed (a cheap defence against long chains). */
#define SP_MAX_EXT 8

/*
 * Parse the IP packet at offset off of m: 0 and *k filled, 1 for a
 * fragment (reassembled first: see reassemble), -1 for a malformed packet
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

/*
 * The fragment *mp (ip_parse said so; its IP header off bytes in) to the
 * reassembly table of its kind: 1 when it is kept for the rest of its
 * datagram or dropped (counted); 0 when *mp is now the whole packet and k
 * its parse; -1 when the whole packet is malformed.
 */
static int __rte_noinline
reassemble(struct sp_ctx *c, uint32_t port, enum sp_frag_kind kind, struct rte_mbuf **mp,
	uint32_t off, struct sp_pkt *k)
{
	struct rte_mbuf *m = sp_frag_in(c->frag, port, kind, *mp, off, c->now);

	c->frag_live = 1;
	if (m == NULL)
		return 1;
	*RXT(m) = c->now;	/* whole now */
	*mp = m;
	return ip_parse(m, off, k) == 0 ? 0 : -1;
}

/* Drop bytes beyond the IP packet (Ethernet padding). */
static inline void
trim_to(struct rte_mbuf *m, uint32_t want)
{
	if (rte_pktmbuf_pkt_len(m) > want)
		rte_pktmbuf_trim(m, rte_pktmbuf_pkt_len(m) - want);
}

/*
 * Send an IP packet (mbuf data starts at the IPv4 or IPv6 header) towards
 * its destination: local -> TAP of in_port, else route + neighbour -> wire.
 * forwarded: decrement TTL / hop limit (we act as a router for it).
 */
/*
 * No neighbour entry for the next hop yet (the mirror asked the kernel to
 * resolve it): hold the packet (data at its IP header) for a moment, as the
 * kernel queues packets on an unresolved neighbour; drop it when the hold
 * is full.
 */
static void
hold(struct sp_ctx *c, uint32_t in_port, uint32_t out_port, struct rte_mbuf *m, uint64_t since)
{
	if (c->nheld == SP_HOLD) {
		drop(c, out_port, m, SP_CNT_DROP_NO_NEIGH);
		return;
	}
	rte_pktmbuf_adj(m, ETH_HLEN);
	c->held[c->nheld].m = m;
	c->held[c->nheld].since = since;
	c->held[c->nheld].in_port = in_port;
	c->held[c->nheld].out_port = out_port;
	c->nheld++;
	c->held_fib = c->f;
	c->held_try = c->now;
}

static void route_out_since(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m,
	int forwarded, uint64_t since);

/*
 * The held packets: when the FIB has changed since they missed (or a
 * millisecond has passed: a new FIB may sit where the old one was), route
 * them again (their TTL is already down); past SP_HOLD_MS they are dropped.
 */
static void
held_retry(struct sp_ctx *c)
{
	struct sp_held h[SP_HOLD];
	uint16_t n = c->nheld, i;

	if (c->f == c->held_fib && c->now - c->held_try < c->retry_tsc) {
		/* nothing new: only the expired ones go */
		for (i = 0; i < n; i++) {
			if (c->now - c->held[i].since > c->hold_tsc) {
				drop(c, c->held[i].out_port, c->held[i].m, SP_CNT_DROP_NO_NEIGH);
				c->held[i] = c->held[--n];
				i--;
			}
		}
		c->nheld = n;
		return;
	}
	memcpy(h, c->held, n * sizeof(h[0]));
	c->nheld = 0;
	for (i = 0; i < n; i++) {
		if (c->now - h[i].since > c->hold_tsc)
			drop(c, h[i].out_port, h[i].m, SP_CNT_DROP_NO_NEIGH);
		else
			route_out_since(c, h[i].in_port, h[i].m, 0, h[i].since);
	}
	c->held_fib = c->f;
	c->held_try = c->now;
}

static __rte_always_inline void route_out_body(struct sp_ctx *c, uint32_t in_port,
	struct rte_mbuf *m, int forwarded, uint64_t since);

/* the per-packet paths get the body inlined; held packets call it here */
static inline void
route_out(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded)
{
	route_out_body(c, in_port, m, forwarded, c->now);
}

static void
route_out_since(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded, uint64_t since)
{
	route_out_body(c, in_port, m, forwarded, since);
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
		rc = rte_lpm6_lookup(f->lpm6, ip6->dst_addr, &idx);
	} else if (c->rc_ok && c->rc_dst == ip->dst_addr) {
		/* a burst mostly goes to few destinations */
		idx = c->rc_idx;
		rc = 0;
	} else {
		rc = rte_lpm_lookup(f->lpm, rte_be_to_cpu_32(ip->dst_addr), &idx);
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
				note_push(c->w, SP_NOTE_MISS, k.port, 6, k.ip, NULL, 0);
			hold(c, in_port, nh->port, m, since);
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
				note_push(c->w, SP_NOTE_MISS, k.port, 4, &k.ip, NULL, 0);
			hold(c, in_port, nh->port, m, since);
			return;
		}
	}
	rte_ether_addr_copy(&f->macs[(uintptr_t)data], &eh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[nh->port].mac, &eh->src_addr);
	txq_put(c, &c->wire[nh->port], nh->port, m);
}

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

/* The fields the loop uses of a matched policy of either family. */
struct sp_match {
	uint8_t action;
	uint32_t reqid;
	struct sp_sa *sa;
};

/* Policies waiting for their SPD lookup: a burst's packets of one family,
 * classified together by rte_acl. */
struct sp_spd_batch {
	uint16_t n;
	const uint8_t *data[SP_BURST];
	uint32_t res[SP_BURST];
	union {
		struct sp_acl_key4 k4[SP_BURST];
		struct sp_acl_key6 k6[SP_BURST];
	};
};

/* Add the selector fields of the packet at l3 (parse k) to batch b. */
static inline void
spd_key(struct sp_spd_batch *b, const uint8_t *l3, const struct sp_pkt *k)
{
	uint16_t i = b->n++;

	if (!k->v6) {
		const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)l3;
		struct sp_acl_key4 *a = &b->k4[i];
		a->proto = k->proto;
		a->pad[0] = a->pad[1] = a->pad[2] = 0;
		a->src = ip->src_addr;
		a->dst = ip->dst_addr;
		a->sport = rte_cpu_to_be_16(k->sport);
		a->dport = rte_cpu_to_be_16(k->dport);
		b->data[i] = (const uint8_t *)a;
	} else {
		const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)l3;
		struct sp_acl_key6 *a = &b->k6[i];
		a->proto = k->proto;
		a->pad[0] = a->pad[1] = a->pad[2] = 0;
		memcpy(a->src, ip->src_addr, 16);
		memcpy(a->dst, ip->dst_addr, 16);
		a->sport = rte_cpu_to_be_16(k->sport);
		a->dport = rte_cpu_to_be_16(k->dport);
		b->data[i] = (const uint8_t *)a;
	}
}

static inline int
port_in(uint16_t be, uint16_t lo, uint16_t hi)
{
	uint16_t p = rte_be_to_cpu_16(be);

	return p >= lo && p <= hi;
}

/* A small table, in order: the first policy that matches each key. */
static void
linear4(const struct sp_policy *tab, uint32_t n, struct sp_spd_batch *b)
{
	uint32_t i, j;

	for (j = 0; j < b->n; j++) {
		const struct sp_acl_key4 *k = &b->k4[j];
		b->res[j] = 0;
		for (i = 0; i < n; i++) {
			const struct sp_policy *p = &tab[i];
			if ((k->src & p->src_mask) != p->src || (k->dst & p->dst_mask) != p->dst ||
					(p->proto && p->proto != k->proto) ||
					!port_in(k->sport, p->sport_lo, p->sport_hi) ||
					!port_in(k->dport, p->dport_lo, p->dport_hi))
				continue;
			b->res[j] = i + 1;
			break;
		}
	}
}

static void
linear6(const struct sp_policy6 *tab, uint32_t n, struct sp_spd_batch *b)
{
	uint64_t s[2], d[2];
	uint32_t i, j;

	for (j = 0; j < b->n; j++) {
		const struct sp_acl_key6 *k = &b->k6[j];
		memcpy(s, k->src, 16);
		memcpy(d, k->dst, 16);
		b->res[j] = 0;
		for (i = 0; i < n; i++) {
			const struct sp_policy6 *p = &tab[i];
			if ((s[0] & p->src_mask[0]) != p->src[0] || (s[1] & p->src_mask[1]) != p->src[1] ||
					(d[0] & p->dst_mask[0]) != p->dst[0] || (d[1] & p->dst_mask[1]) != p->dst[1] ||
					(p->proto && p->proto != k->proto) ||
					!port_in(k->sport, p->sport_lo, p->sport_hi) ||
					!port_in(k->dport, p->dport_lo, p->dport_hi))
				continue;
			b->res[j] = i + 1;
			break;
		}
	}
}

/* Classify batch b (family v6) against the outbound or inbound table:
 * res[i] is 0 for no match, else 1 + the policy's index. */
static void
spd_classify(struct sp_ctx *c, struct sp_spd_batch *b, int v6, int out)
{
	struct sp_ipsec_tables *t = c->t;
	struct rte_acl_ctx *ctx;

	if (b->n == 0)
		return;
	if (t == NULL) {
		memset(b->res, 0, sizeof(b->res[0]) * b->n);
		return;
	}
	ctx = v6 ? (out ? t->acl_out6 : t->acl_in6) : (out ? t->acl_out : t->acl_in);
	if (ctx != NULL)
		rte_acl_classify(ctx, b->data, b->res, b->n, 1);
	else if (v6)
		linear6(out ? t->out6 : t->in6, out ? t->n_out6 : t->n_in6, b);
	else
		linear4(out ? t->out : t->in, out ? t->n_out : t->n_in, b);
}

/* The SA slot of outbound classification result res (!= 0). */
static inline struct sp_sa **
out_slot(struct sp_ipsec_tables *t, int v6, uint32_t res)
{
	return (v6 ? t->out6_sa : t->out_sa) + res - 1;
}

/*
 * The policy of a classification result (res != 0). Outbound, an SA means
 * an ipsec policy (Go sets none for the others), and the policy entry
 * itself is read only when there is none: to drop, to pass, or to ask for
 * an SA with its reqid.
 */
static inline void
spd_get(struct sp_ctx *c, int v6, int out, uint32_t res, struct sp_match *r)
{
	struct sp_ipsec_tables *t = c->t;

	if (out) {
		r->sa = __atomic_load_n(out_slot(t, v6, res), __ATOMIC_ACQUIRE);
		if (likely(r->sa != NULL)) {
			r->action = 0;
			r->reqid = 0;	/* not needed: only an acquire asks */
			return;
		}
	} else
		r->sa = NULL;
	if (v6) {
		const struct sp_policy6 *p = (out ? t->out6 : t->in6) + res - 1;
		r->action = p->action;
		r->reqid = p->reqid;
	} else {
		const struct sp_policy *p = (out ? t->out : t->in) + res - 1;
		r->action = p->action;
		r->reqid = p->reqid;
	}
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
	if (k->proto == IPPROTO_UDP)
		return ike_own(c, l3, k, from_wire);
	return k->v6 && k->proto == IPPROTO_ICMPV6 && nd_ok(c, l3, k, from_wire);
}

static inline int is_ip(const struct rte_mbuf *m);

/*
 * Closed (see dp.h): does frame m, from the wire or the TAP, pass? ARP,
 * neighbour discovery and the gateway's own IKE: what it needs to
 * negotiate. Fragments and ESP-in-UDP do not.
 */
static int
gate_pass(const struct sp_ctx *c, const struct rte_mbuf *m, int from_wire)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	struct sp_pkt k;

	if (rte_pktmbuf_data_len(m) < ETH_HLEN)
		return 0;
	if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return 1;
	if (!is_ip(m) || ip_parse(m, ETH_HLEN, &k) != 0)
		return 0;
	return bypass(c, rte_pktmbuf_mtod_offset(m, const uint8_t *, ETH_HLEN), &k, from_wire);
}

/* A burst from the wire side (from_wire) or the TAP of port p while
 * closed: what gate_pass lets through goes to the other side unchanged,
 * the rest is dropped (drop_closed). */
static void
closed_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n, int from_wire)
{
	uint16_t i;

	c->w->stats[p].cnt[from_wire ? SP_CNT_RX : SP_CNT_TAP_RX] += n;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		*RXT(m) = c->now;
		if (!gate_pass(c, m, from_wire))
			drop(c, p, m, SP_CNT_DROP_CLOSED);
		else if (from_wire)
			to_tap(c, p, m);
		else
			txq_put(c, &c->wire[p], p, m);
	}
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
		rc = f == NULL ? -1 : rte_lpm_lookup(f->lpm, rte_be_to_cpu_32(src), &idx);
		c->rp_src = src;
		c->rp_ok = 1;
	} else {
		const uint8_t *src6 = ((const struct rte_ipv6_hdr *)l3)->src_addr;

		if (c->rp6_ok && c->rp_port == port && memcmp(c->rp_src6, src6, 16) == 0)
			return c->rp_pass;
		rc = f == NULL ? -1 : rte_lpm6_lookup(f->lpm6, src6, &idx);
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

/*
 * ICMP errors the fast path sends (icmp_frag_needed, icmp6_too_big) answer
 * packets anyone can send, each costing an mbuf and a copy, and may go to a
 * forged source: at most SP_ICMP_RATE a second per worker, in bursts of up
 * to SP_ICMP_BURST (a token bucket, as Linux limits its own: icmp_ratelimit
 * per destination and icmp_msgs_per_sec/icmp_msgs_burst overall). These
 * errors only report a path MTU, which a sender needs once per path and
 * change, so the limit costs nothing legitimate.
 */
#define SP_ICMP_RATE 100
#define SP_ICMP_BURST 10

static int
icmp_token(struct sp_ctx *c)
{
	uint64_t credit = c->icmp_credit + (c->now - c->icmp_last);

	c->icmp_last = c->now;
	credit = RTE_MIN(credit, c->icmp_cost * SP_ICMP_BURST);
	if (credit < c->icmp_cost) {
		c->icmp_credit = credit;
		return 0;
	}
	c->icmp_credit = credit - c->icmp_cost;
	return 1;
}

/* IPv4 (network order): not one host's address (RFC 1812 §4.3.2.7):
 * 0/8, loopback, multicast, class E and the limited broadcast. */
static inline int
not_host4(uint32_t be)
{
	uint8_t a = (uint8_t)(rte_be_to_cpu_32(be) >> 24);

	return a == 0 || a == 127 || a >= 224;
}

/*
 * May an ICMP error be sent about the packet in m (data at Ethernet)?
 * Never about one to a multicast or broadcast address, from an address
 * that is not one host's, or that is an ICMP error itself (RFC 1812
 * §4.3.2.7, RFC 4443 §2.4(e); also not for "packet too big" to multicast,
 * which §2.4(e.3) would allow: nothing here needs it, and one multicast
 * packet would draw an error from every gateway on its way); then within
 * the rate limit. If not, m is dropped and counted (drop_mtu, or
 * icmp_limited when only the rate forbids it).
 */
static int
icmp_err_ok(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m)
{
	const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, ETH_HLEN);
	struct sp_pkt k;
	int ok;

	if (ip_parse(m, ETH_HLEN, &k) != 0) {
		ok = 0;
	} else if (k.v6) {
		const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)l3;
		ok = ip->dst_addr[0] != 0xff && ip->src_addr[0] != 0xff && !zero16(ip->src_addr) &&
			!(k.proto == IPPROTO_ICMPV6 && k.icmp_type < 128);
	} else {
		const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)l3;
		uint8_t d = (uint8_t)(rte_be_to_cpu_32(ip->dst_addr) >> 24);
		ok = d < 224 && !not_host4(ip->src_addr) &&
			!(k.proto == IPPROTO_ICMP && (k.icmp_type == 3 || k.icmp_type == 4 ||
				k.icmp_type == 5 || k.icmp_type == 11 || k.icmp_type == 12));
	}
	if (!ok) {
		drop(c, port, m, SP_CNT_DROP_MTU);
		return 0;
	}
	if (!icmp_token(c)) {
		drop(c, port, m, SP_CNT_ICMP_LIMITED);
		return 0;
	}
	return 1;
}

/*
 * RFC 1191 / RFC 4301 §8: a packet with DF that would exceed the MTU once
 * encrypted is answered with ICMP "fragmentation needed", carrying the
 * largest inner size that fits, as the kernel's IPsec does; TCP then lowers
 * its segment size. The reply leaves where the packet came from. m (the
 * offending frame, data at Ethernet) is consumed. src: the gateway's
 * address the reply comes from (network order).
 */
static void
icmp_frag_needed(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, uint32_t src,
	uint16_t inner_mtu, int from_wire)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *), *reh;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1), *rip;
	struct rte_icmp_hdr *icmp;
	uint32_t ihl = (ip->version_ihl & 0xf) * 4;
	uint32_t quote = RTE_MIN(ihl + 8u, (uint32_t)rte_be_to_cpu_16(ip->total_length));
	struct rte_mbuf *r;

	if (!icmp_err_ok(c, port, m))
		return;
	r = rte_pktmbuf_alloc(m->pool);
	if (r == NULL) {
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return;
	}
	*RXT(r) = *RXT(m);	/* the reply's latency counts from the offender's */
	reh = (struct rte_ether_hdr *)rte_pktmbuf_append(r, ETH_HLEN + sizeof(*rip) + sizeof(*icmp) + quote);
	if (reh == NULL) {
		rte_pktmbuf_free(r);
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return;
	}
	rte_ether_addr_copy(&eh->src_addr, &reh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[port].mac, &reh->src_addr);
	reh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	rip = (struct rte_ipv4_hdr *)(reh + 1);
	memset(rip, 0, sizeof(*rip));
	rip->version_ihl = RTE_IPV4_VHL_DEF;
	rip->type_of_service = 0xc0;	/* internetwork control, as Linux */
	rip->total_length = rte_cpu_to_be_16(sizeof(*rip) + sizeof(*icmp) + quote);
	rip->time_to_live = 64;
	rip->next_proto_id = IPPROTO_ICMP;
	rip->src_addr = src;
	rip->dst_addr = ip->src_addr;
	rip->hdr_checksum = rte_ipv4_cksum(rip);
	icmp = (struct rte_icmp_hdr *)(rip + 1);
	icmp->icmp_type = 3;		/* destination unreachable */
	icmp->icmp_code = 4;		/* fragmentation needed and DF set */
	icmp->icmp_cksum = 0;
	icmp->icmp_ident = 0;
	icmp->icmp_seq_nb = rte_cpu_to_be_16(inner_mtu);
	memcpy(icmp + 1, ip, quote);
	icmp->icmp_cksum = ~rte_raw_cksum(icmp, sizeof(*icmp) + quote);
	if (icmp->icmp_cksum == 0)
		icmp->icmp_cksum = 0xffff;

	rte_pktmbuf_free(m);
	cnt(c, port, SP_CNT_ICMP_MTU);
	if (from_wire)
		txq_put(c, &c->wire[port], port, r);
	else
		to_tap(c, port, r);
}

/*
 * RFC 4443 §3.2: IPv6 is never fragmented on the way, so a packet too big
 * once encrypted is answered with "Packet Too Big" and the largest inner
 * size that fits. As icmp_frag_needed; src is an IPv6 address of ours.
 */
static void
icmp6_too_big(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, const uint8_t *src,
	uint32_t inner_mtu, int from_wire)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *), *reh;
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(eh + 1), *rip;
	/* as much of the packet as fits in the IPv6 minimum MTU */
	uint32_t quote = RTE_MIN(1280u - sizeof(*rip) - 8,
		(uint32_t)sizeof(*ip) + rte_be_to_cpu_16(ip->payload_len));
	uint8_t *icmp;
	uint32_t mtu_be = rte_cpu_to_be_32(inner_mtu);
	uint16_t ck;
	struct rte_mbuf *r;

	if (!icmp_err_ok(c, port, m))
		return;
	r = rte_pktmbuf_alloc(m->pool);
	if (r == NULL) {
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return;
	}
	*RXT(r) = *RXT(m);	/* the reply's latency counts from the offender's */
	reh = (struct rte_ether_hdr *)rte_pktmbuf_append(r, ETH_HLEN + sizeof(*rip) + 8 + quote);
	if (reh == NULL) {
		rte_pktmbuf_free(r);
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return;
	}
	rte_ether_addr_copy(&eh->src_addr, &reh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[port].mac, &reh->src_addr);
	reh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6);
	rip = (struct rte_ipv6_hdr *)(reh + 1);
	memset(rip, 0, sizeof(*rip));
	rip->vtc_flow = rte_cpu_to_be_32(6u << 28);
	rip->payload_len = rte_cpu_to_be_16(8 + quote);
	rip->proto = IPPROTO_ICMPV6;
	rip->hop_limits = 64;
	memcpy(rip->src_addr, src, 16);
	memcpy(rip->dst_addr, ip->src_addr, 16);
	icmp = (uint8_t *)(rip + 1);
	icmp[0] = 2;			/* packet too big */
	icmp[1] = 0;
	icmp[2] = icmp[3] = 0;
	memcpy(icmp + 4, &mtu_be, 4);
	memcpy(icmp + 8, ip, quote);
	ck = rte_ipv6_udptcp_cksum(rip, icmp);
	memcpy(icmp + 2, &ck, 2);

	rte_pktmbuf_free(m);
	cnt(c, port, SP_CNT_ICMP_MTU);
	if (from_wire)
		txq_put(c, &c->wire[port], port, r);
	else
		to_tap(c, port, r);
}

/*
 * Could this inbound packet (l2_len + l3_len at the ESP header) be ESP of
 * sa by its length? ESP header, IV, ICV and the 2-byte trailer at least,
 * the encrypted part a multiple of the cipher's alignment (RFC 4303 §2.4).
 */
static int
esp_len_ok(const struct sp_sa *sa, const struct rte_mbuf *m)
{
	uint32_t len = rte_pktmbuf_pkt_len(m) - m->l2_len - m->l3_len;

	return len >= sa->esp_fixed + 2u && (len - sa->esp_fixed) % sa->pad_align == 0;
}

/* The ESP trailer's next header byte of a prepared packet (the trailer
 * sits in front of the ESN high bits and the ICV). */
static inline uint8_t *
esp_next_header(const struct sp_sa *sa, struct rte_mbuf *m)
{
	struct rte_mbuf *ml = rte_pktmbuf_lastseg(m);
	uint32_t back = sa->icv_len + sa->sqh_len + 1;

	if (ml->data_len < back)
		return NULL;
	return rte_pktmbuf_mtod_offset(ml, uint8_t *, ml->data_len - back);
}

/* Packets prepare refused: count them by why. */
static void
prepare_refused(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[],
	uint16_t from, uint16_t n)
{
	uint16_t i;

	/* prepare refuses packets that fail the replay window or whose
	 * lengths cannot be ESP for this SA (truncated, misaligned) */
	for (i = from; i < n; i++) {
		if (!sa->inbound) {
			drop(c, port, mb[i], SP_CNT_DROP_NOMEM);
		} else if (!esp_len_ok(sa, mb[i])) {
			ST(c, sa).drop_malformed++;
			drop(c, port, mb[i], SP_CNT_DROP_MALFORMED);
		} else {
			ST(c, sa).drop_replay++;
			drop(c, port, mb[i], SP_CNT_DROP_REPLAY);
		}
	}
}

/*
 * Inbound, n packets of sa with a good ICV, their ESP header still in
 * place (l2_len + l3_len in): raise this worker's highest sequence number
 * seen (what Go checkpoints: after a restart the replay window starts
 * above it). rte_ipsec's own window state is private to lib/ipsec. One
 * store per run of packets of an SA, in the line the counts go to anyway.
 * With ESN only the low 32 bits are on the wire: a number counts as higher
 * when it is ahead of the last one by less than 2^31 (the replay window
 * has just let it through, so it is near the window's top).
 */
static inline void
seq_seen(struct sp_ctx *c, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	struct sp_sa_ctr *ct = CTR(c, sa);
	uint64_t t = ct->seq_max, hi = t;
	uint32_t low;
	int32_t d;
	uint16_t i;

	for (i = 0; i < n; i++) {
		low = rte_be_to_cpu_32(rte_pktmbuf_mtod_offset(mb[i], const struct rte_esp_hdr *,
			mb[i]->l2_len + mb[i]->l3_len)->seq);
		if (sa->sqh_len == 0) {
			hi = RTE_MAX(hi, (uint64_t)low);
		} else {
			d = (int32_t)(low - (uint32_t)t);
			if (d > 0)
				hi = RTE_MAX(hi, t + (uint64_t)d);
		}
	}
	ct->seq_max = hi;
}

/* After crypto: what rte_ipsec_pkt_process makes of the good ones. */
static uint16_t
finish(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, const struct rte_ipsec_session *ss,
	struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t k, i;

	if (sa->inbound && n > 0)
		seq_seen(c, sa, mb, n);
	k = rte_ipsec_pkt_process(ss, mb, n);
	for (i = k; i < n; i++) {
		/* after a good ICV: bad padding or a replay raced in the burst */
		ST(c, sa).drop_malformed++;
		drop(c, port, mb[i], SP_CNT_DROP_MALFORMED);
	}
	return k;
}

/* Inbound, after a good ICV: note the trailer's next header in hash.usr. */
static inline void
note_next_header(struct sp_sa *sa, struct rte_mbuf *m)
{
	uint8_t *np = esp_next_header(sa, m);

	m->hash.usr = np != NULL ? *np : 0;
}

/* Synchronous crypto (CPU_CRYPTO): prepare does the crypto in place. */
static uint16_t
sa_crypto_sync(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t k, i, ok;

	k = rte_ipsec_pkt_cpu_prepare(&sa->ss, mb, n);
	prepare_refused(c, port, sa, mb, k, n);
	ok = 0;
	for (i = 0; i < k; i++) {
		struct rte_mbuf *m = mb[i];
		if (m->ol_flags & RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED) {
			if (sa->inbound)
				ST(c, sa).drop_auth++;
			drop(c, port, m, sa->inbound ? SP_CNT_DROP_AUTH : SP_CNT_DROP_CRYPTO);
			continue;
		}
		if (sa->inbound)
			note_next_header(sa, m);
		mb[ok++] = m;
	}
	return finish(c, port, sa, &sa->ss, mb, ok);
}

/*
 * Lookaside crypto through the device's queue pair: prepare and enqueue.
 * The loop goes on; crypto_poll takes the finished ops out of the device
 * later in the same iteration or a later one and sends the packets on
 * (no waiting for one burst). Outbound, an IPv6 packet (hash.usr =
 * IPPROTO_IPV6) of a tunnel SA gets that next header in its trailer
 * before encryption. While a packet is in the device its mbuf names its SA
 * (SA_OF) and the port it came in on (hash.fdir.hi).
 */
static void
sa_crypto_async(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	const struct rte_ipsec_session *ss = &sa->ss_async;
	struct rte_crypto_op *cop[SP_BURST];
	uint16_t k, enq, i;
	uint8_t *np;

	if (rte_crypto_op_bulk_alloc(c->dp->cop_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC, cop, n) == 0) {
		for (i = 0; i < n; i++)
			drop(c, port, mb[i], SP_CNT_DROP_NOMEM);
		return;
	}
	k = rte_ipsec_pkt_crypto_prepare(ss, mb, cop, n);
	prepare_refused(c, port, sa, mb, k, n);
	if (k < n)
		rte_mempool_put_bulk(c->dp->cop_pool, (void **)&cop[k], n - k);
	if (k == 0)
		return;
	for (i = 0; i < k; i++) {
		*SA_OF(mb[i]) = sa;
		mb[i]->hash.fdir.hi = port;
		if (!sa->inbound && !sa->transport && mb[i]->hash.usr == IPPROTO_IPV6 &&
				(np = esp_next_header(sa, mb[i])) != NULL)
			*np = IPPROTO_IPV6;
	}

	enq = rte_cryptodev_enqueue_burst(sa->cdev_id, c->wid, cop, k);
	for (i = enq; i < k; i++)
		drop(c, port, mb[i], SP_CNT_DROP_CRYPTO);
	if (enq < k)
		rte_mempool_put_bulk(c->dp->cop_pool, (void **)&cop[enq], k - enq);
	c->dev_inflight[sa->cdev_id] += enq;
	c->inflight += enq;
}

/*
 * Run crypto for n mbufs of one SA. On return mb[0..ok) are processed by
 * CPU crypto; those given to a device (lookaside) come back through
 * crypto_poll; the rest have been freed and counted. Inbound, each
 * processed mbuf's hash.usr holds the next header of its ESP trailer.
 */
static uint16_t
sa_crypto(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	struct rte_mbuf *v6[SP_BURST];
	uint16_t i, k, n4, n6;

	if (!sa->cpu) {
		sa_crypto_async(c, port, sa, mb, n);
		return 0;
	}
	if (sa->inbound || sa->transport)
		return sa_crypto_sync(c, port, sa, mb, n);
	/* outbound tunnel: IPv6 inside goes the lookaside way */
	for (i = 0, n4 = 0, n6 = 0; i < n; i++) {
		if (mb[i]->hash.usr == IPPROTO_IPV6)
			v6[n6++] = mb[i];
		else
			mb[n4++] = mb[i];
	}
	k = n4 ? sa_crypto_sync(c, port, sa, mb, n4) : 0;
	if (n6)
		sa_crypto_async(c, port, sa, v6, n6);
	return k;
}

/*
 * Hard lifetime: of n packets for sa, how many may still pass. The rest
 * are dropped: no packet goes through an SA past its hard limit (RFC 4301
 * §4.4.2.1), whatever the control plane's timing. Outbound, bytes are the
 * plaintext's and no packet crosses the limit; inbound, as in XFRM, the
 * decrypted bytes count once they are known, so the packets of the burst
 * that reaches the limit are the last.
 */
static uint16_t
sa_limit(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	enum sp_cnt why = SP_CNT_DROP_EXPIRED;
	uint64_t prev, bytes = 0;
	uint16_t ok = n, i;
	uint8_t dead = __atomic_load_n(&sa->dead, __ATOMIC_RELAXED);

	if (unlikely(dead != 0)) {
		ok = 0;
		/* blocked, not expired: no safe sequence number (the control
		 * plane's checkpoints failed, or it came back after a restart
		 * without its record); charon rekeys it */
		if (!(dead & SP_SA_EXPIRED))
			why = SP_CNT_DROP_SEQ;
	} else if (unlikely(sa->limited)) {
		/* the workers share these counters: reserve what passes */
		if (sa->hard_bytes != 0 &&
				__atomic_load_n(&sa->lim_bytes, __ATOMIC_RELAXED) >= sa->hard_bytes) {
			ok = 0;
		} else if (sa->hard_packets != 0) {
			prev = __atomic_fetch_add(&sa->lim_packets, n, __ATOMIC_RELAXED);
			ok = prev >= sa->hard_packets ? 0 : RTE_MIN((uint64_t)n, sa->hard_packets - prev);
		}
		if (sa->hard_bytes != 0 && ok > 0 && !sa->inbound) {
			/* a packet passes only if it stays within the limit; what
			 * is reserved past it is never used (the SA is spent).
			 * Inbound, as XFRM, the limit counts the decrypted bytes
			 * (inbound_flush): checked here, counted there. */
			for (i = 0; i < ok; i++)
				bytes += rte_pktmbuf_pkt_len(mb[i]);
			prev = __atomic_fetch_add(&sa->lim_bytes, bytes, __ATOMIC_RELAXED);
			for (i = 0; i < ok; i++) {
				prev += rte_pktmbuf_pkt_len(mb[i]);
				if (prev > sa->hard_bytes)
					break;
			}
			ok = i;
		}
	}
	for (i = ok; i < n; i++)
		drop(c, port, mb[i], why);
	return ok;
}

static void
sa_count(struct sp_ctx *c, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	struct sp_sa_ctr *st = CTR(c, sa);
	uint16_t i;

	for (i = 0; i < n; i++)
		st->bytes += rte_pktmbuf_pkt_len(mb[i]);
	st->packets += n;
	if (n)
		st->last_use = c->now;
}

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
 * The first inbound policy each packet matches must protect it with its
 * SA's reqid (as XFRM's policy check); then they go on their way.
 */
static void
inbound_flush(struct sp_ctx *c, struct sp_inb *ib)
{
	struct sp_sa_ctr *ct;
	struct sp_match r;
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
			if (b->res[i] != 0)
				spd_get(c, v, 0, b->res[i], &r);
			if (b->res[i] == 0 || r.action != 0 || r.reqid != sa->reqid) {
				ST(c, sa).drop_policy++;
				drop(c, port, m, SP_CNT_DROP_POLICY);
				continue;
			}
			ct = CTR(c, sa);
			ct->bytes += rte_pktmbuf_pkt_len(m);
			ct->packets++;
			ct->last_use = c->now;
			if (unlikely(sa->limited) && sa->hard_bytes != 0)
				__atomic_fetch_add(&sa->lim_bytes, rte_pktmbuf_pkt_len(m), __ATOMIC_RELAXED);
			cnt(c, port, SP_CNT_ESP_IN);
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
		note_push(c->w, SP_NOTE_MAPPING, sa->spi, v6 ? 6 : 4, src, NULL, sport);
}

/*
 * Inbound, after crypto: k decrypted packets of sa that came in on port.
 */
static void
inbound_done(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *grp[], uint16_t k,
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
			if ((rc = reassemble(c, port, SP_FRAG_ESP, &m, 0, &pk)) > 0)
				continue;
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
		if (sa == NULL || !sa->inbound) {
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
				uint32_t sum = sa->hdr_sum + oh->total_length + oh->packet_id;
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
static int
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
		if (p.action == 1)
			return 0;
		if (p.action == 2) {
			drop(c, port, m, SP_CNT_DROP_POLICY);
			return 1;
		}
		sa = p.sa;
		if (sa == NULL) {
			/* trap policy: ask the IKE daemon for an SA (acquire) */
			if (k->v6)
				note_push(c->w, SP_NOTE_ACQUIRE, p.reqid, 6, ip6->src_addr, ip6->dst_addr, 0);
			else
				note_push(c->w, SP_NOTE_ACQUIRE, p.reqid, 4, &ip->src_addr, &ip->dst_addr, 0);
			drop(c, port, m, SP_CNT_DROP_NO_SA);
			return 1;
		}
		if (unlikely(sa->transport && k->l3len > SP_L3_MAX)) {
			drop(c, port, m, SP_CNT_DROP_MALFORMED);
			return 1;
		}
		/* encrypted size: overhead, the header left in front in
		 * transport mode, the rest and the trailer (2) padded */
		mtu = c->dp->tun_mtu;
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
					icmp6_too_big(c, port, m, src, fits, from_wire);
					return 1;
				}
			} else if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) {
				uint32_t src = 0;
				if (sa->family == 4)
					memcpy(&src, sa->src, 4);
				else if (c->f != NULL)
					src = c->f->src4;
				if (src != 0) {
					icmp_frag_needed(c, port, m, src, fits, from_wire);
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
		m->hash.usr = k->v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
		outm[*nout] = m;
		outsa[*nout] = sa;
		(*nout)++;
		return 1;
	}
}

/* Packet j matched a policy, and not the one the packet before matched
 * (whose lines are loaded already). */
static inline int
new_policy(const struct sp_spd_batch *b, uint16_t j)
{
	return j < b->n && b->res[j] != 0 && (j == 0 || b->res[j] != b->res[j - 1]);
}

/* The slot in out_sa of packet j's policy (the policy entry itself is not
 * read when it has an SA: see spd_get). */
static inline void
pol_prefetch(struct sp_ctx *c, const struct sp_spd_batch *b, int v6, uint16_t j)
{
	if (!new_policy(b, j))
		return;
	rte_prefetch0(out_slot(c->t, v6, b->res[j]));
}

/* The lines of an SA that protect() and the crypto after it read; for a
 * policy without SA (pass, drop, acquire), the policy entry instead. */
static inline void
sa_prefetch(struct sp_ctx *c, const struct sp_spd_batch *b, int v6, uint16_t j)
{
	const struct sp_sa *sa;
	uint32_t i;

	if (!new_policy(b, j))
		return;
	i = b->res[j] - 1;
	sa = __atomic_load_n(out_slot(c->t, v6, b->res[j]), __ATOMIC_RELAXED);
	if (sa != NULL)
		sa_lines_prefetch(sa);
	else if (v6)
		rte_prefetch0(c->t->out6 + i);
	else
		rte_prefetch0(c->t->out + i);
}

/*
 * With many policies and SAs, the ones a burst matched are cold: while
 * packet j is protected, the SA pointer of packet j + SP_POL_AHEAD's policy
 * and the SA of packet j + SP_SA_AHEAD (whose pointer has arrived by then)
 * are loaded; this starts the pipeline.
 */
static void
spd_prefetch(struct sp_ctx *c, const struct sp_spd_batch *b, int v6)
{
	uint16_t j;

	if (c->t == NULL)
		return;
	for (j = 0; j < SP_POL_AHEAD; j++)
		pol_prefetch(c, b, v6, j);
	for (j = 0; j < SP_SA_AHEAD; j++)
		sa_prefetch(c, b, v6, j);
}

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
				if (from_wire && r.action == 0 && unlikely(!rpf_ok(c, port,
						rte_pktmbuf_mtod_offset(pl->m[i], uint8_t *, ETH_HLEN), v))) {
					drop(c, port, pl->m[i], SP_CNT_DROP_SPOOF);
					continue;
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
				if (r.action == 0 || r.action == 2) {
					/* plaintext that policy says must arrive protected */
					drop(c, port, pl->m[i], SP_CNT_DROP_POLICY);
					continue;
				}
			}
			to_tap(c, port, pl->m[i]);
		}
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

static inline int
is_ip(const struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);

	return rte_pktmbuf_data_len(m) >= ETH_HLEN &&
		(eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
		 eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6));
}

/* A burst from the wire side of port p. */
static void
wire_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_mbuf *esp[SP_BURST], *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	struct sp_plain pl;
	struct sp_pkt *k;
	uint16_t ne = 0, no = 0, i;
	int rc;

	if (unlikely(c->closed)) {
		closed_burst(c, p, mb, n, 1);
		return;
	}
	pl.n = 0;
	c->w->stats[p].cnt[SP_CNT_RX] += n;
	/* the mbufs' second cache line (l2_len, l3_len), which the PMD
	 * did not touch, is written for every packet below */
	for (i = 0; i < n; i++)
		rte_prefetch0(RTE_PTR_ADD(mb[i], RTE_CACHE_LINE_SIZE));
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];
		uint8_t *l3;

		*RXT(m) = c->now;
		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(mb[i + 1], void *));
		if (!is_ip(m)) {
			to_tap(c, p, m);	/* ARP and the like */
			continue;
		}
		/* parsed in place: the next free slot of the plaintext
		 * batch (a copy of the fields just written one by one would
		 * wait for them to reach the cache) */
		k = &pl.k[pl.n];
		rc = ip_parse(m, ETH_HLEN, k);
		if (unlikely(rc > 0) && (rc = reassemble(c, p, SP_FRAG_WIRE, &m, ETH_HLEN, k)) > 0)
			continue;	/* a fragment, kept for the rest or dropped */
		if (rc < 0) {
			drop(c, p, m, SP_CNT_DROP_MALFORMED);
			continue;
		}
		l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, ETH_HLEN);
		if (k->proto == IPPROTO_ESP) {
			if (k->len - k->l3len < sizeof(struct rte_esp_hdr) + 8 || k->l3len > SP_L3_MAX) {
				drop(c, p, m, SP_CNT_DROP_MALFORMED);
				continue;
			}
			trim_to(m, ETH_HLEN + k->len);
			m->tx_offload = rte_mbuf_tx_offload(ETH_HLEN, k->l3len, 0, 0, 0, 0, 0);
			esp[ne++] = m;
			continue;
		}
		/* ESP-in-UDP and NAT-T IKE are ours only to our own
		 * addresses: other NAT-T is transit UDP, under policy */
		if (k->proto == IPPROTO_UDP && k->dport == c->dp->natt_port && dst_own(c, l3, k)) {
			const struct rte_udp_hdr *uh = (const struct rte_udp_hdr *)(l3 + k->l3len);
			uint32_t plen = k->len - k->l3len;
			if (plen >= sizeof(*uh)) {
				const uint32_t *marker = (const uint32_t *)(uh + 1);
				uint32_t ulen = rte_be_to_cpu_16(uh->dgram_len);
				/* RFC 3948 §2.2: a zero SPI field is the non-ESP
				 * marker (IKE); a 1-byte 0xff is a keepalive. */
				if (plen >= sizeof(*uh) + 4 && *marker != 0) {
					if (ulen != plen || plen < sizeof(*uh) + sizeof(struct rte_esp_hdr) + 8 ||
							k->l3len + sizeof(*uh) > SP_L3_MAX) {
						drop(c, p, m, SP_CNT_DROP_MALFORMED);
						continue;
					}
					trim_to(m, ETH_HLEN + k->len);
					m->tx_offload = rte_mbuf_tx_offload(ETH_HLEN,
						k->l3len + sizeof(*uh), 0, 0, 0, 0, 0);
					esp[ne++] = m;
					continue;
				}
				to_tap(c, p, m);
				continue;
			}
		}
		if (spd_wanted(c, l3, k, 1)) {
			pl.m[pl.n++] = m;
		} else {
			to_tap(c, p, m);
		}
	}
	esp_inbound(c, p, esp, ne);
	plaintext_burst(c, p, &pl, 1, outm, outsa, &no);
	encrypt_collected(c, p, outm, outsa, no);
}

/* A burst the kernel sent through the TAP of port p. */
static void
tap_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_mbuf *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	struct sp_plain pl;
	uint16_t no = 0, i;
	int rc;

	if (unlikely(c->closed)) {
		closed_burst(c, p, mb, n, 0);
		return;
	}
	pl.n = 0;
	c->w->stats[p].cnt[SP_CNT_TAP_RX] += n;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		*RXT(m) = c->now;
		if (is_ip(m)) {
			rc = ip_parse(m, ETH_HLEN, &pl.k[pl.n]);
			if (unlikely(rc > 0) &&
					(rc = reassemble(c, p, SP_FRAG_TAP, &m, ETH_HLEN, &pl.k[pl.n])) > 0)
				continue;
			if (unlikely(rc < 0)) {
				/* what cannot be classified cannot be let out */
				drop(c, p, m, SP_CNT_DROP_MALFORMED);
				continue;
			}
			if (spd_wanted(c, rte_pktmbuf_mtod_offset(m, uint8_t *, ETH_HLEN), &pl.k[pl.n], 0)) {
				pl.m[pl.n++] = m;
				continue;
			}
		}
		txq_put(c, &c->wire[p], p, m);
	}
	plaintext_burst(c, p, &pl, 0, outm, outsa, &no);
	encrypt_collected(c, p, outm, outsa, no);
}

/*
 * Lookaside crypto: take what the devices have finished, in runs of one
 * SA and one port, through rte_ipsec's process step and on their way.
 */
static void
crypto_poll(struct sp_ctx *c)
{
	struct rte_crypto_op *cop[SP_BURST];
	struct rte_mbuf *run[SP_BURST];
	struct sp_sa *sa, *rsa = NULL;
	uint32_t port, rport = 0;
	uint16_t d, n, i, g, k;
	struct sp_inb ib;

	ib.b[0].n = ib.b[1].n = 0;

	for (d = 0; d < RTE_CRYPTO_MAX_DEVS && c->inflight > 0; d++) {
		if (c->dev_inflight[d] == 0)
			continue;
		n = rte_cryptodev_dequeue_burst(d, c->wid, cop, SP_BURST);
		c->dev_inflight[d] -= n;
		c->inflight -= n;
		for (i = 0, g = 0; i <= n; i++) {
			struct rte_mbuf *m = i < n ? cop[i]->sym->m_src : NULL;

			sa = m != NULL ? *SA_OF(m) : NULL;
			port = m != NULL ? m->hash.fdir.hi : 0;
			if (g > 0 && (m == NULL || sa != rsa || port != rport)) {
				/* the run so far is complete */
				k = finish(c, rport, rsa, &rsa->ss_async, run, g);
				if (rsa->inbound)
					inbound_done(c, rport, rsa, run, k, &ib);
				else
					outbound_done(c, rport, rsa, run, k);
				g = 0;
			}
			if (m == NULL)
				break;
			rsa = sa;
			rport = port;
			if (cop[i]->status != RTE_CRYPTO_OP_STATUS_SUCCESS) {
				if (sa->inbound)
					ST(c, sa).drop_auth++;
				drop(c, port, m, sa->inbound ? SP_CNT_DROP_AUTH : SP_CNT_DROP_CRYPTO);
				continue;
			}
			if (sa->inbound)
				note_next_header(sa, m);
			run[g++] = m;
		}
		if (n > 0)
			rte_mempool_put_bulk(c->dp->cop_pool, (void **)cop, n);
		/* at most SP_BURST of them: deliver before the next device */
		inbound_flush(c, &ib);
	}
}

/* Completes every lookaside op in flight, sending what comes back
 * (bounded: a device that never completes keeps its mbufs and ops). */
static void
crypto_drain(struct sp_ctx *c)
{
	uint32_t n;

	for (n = 0; c->inflight > 0 && n < 10000; n++) {
		crypto_poll(c);
		flush(c);
	}
	flush(c);
}

int
sp_worker_run(struct sp_dp *dp, uint32_t wid)
{
	/* one context per worker; too big for the stack */
	static struct sp_ctx ctxs[SP_MAX_WORKERS];
	struct sp_ctx *c = &ctxs[wid];
	struct rte_mbuf *mb[SP_BURST];
	uint64_t idle = 0;
	uint32_t p;
	uint16_t n, got;

	memset(c, 0, sizeof(*c));
	c->dp = dp;
	c->wid = wid;
	c->w = &dp->w[wid];
	if (dp->n_workers == 1)
		c->ctr_off = offsetof(struct sp_sa, ctr);
	else
		c->ctr_off = offsetof(struct sp_sa, st) + wid * sizeof(struct sp_sa_stats) +
			offsetof(struct sp_sa_stats, c);
	c->hold_tsc = rte_get_tsc_hz() / 1000 * SP_HOLD_MS;
	c->retry_tsc = rte_get_tsc_hz() / 1000;
	c->tap_tsc = rte_get_tsc_hz() / 1000000 * SP_TAP_US;
	c->icmp_cost = rte_get_tsc_hz() / SP_ICMP_RATE;
	c->icmp_credit = c->icmp_cost * SP_ICMP_BURST;
	c->icmp_last = rte_get_tsc_cycles();
	c->frag = sp_frag_new(dp, wid);
	for (p = 0; p < dp->n_ports; p++)
		c->frame_max[p] = ETH_HLEN + dp->ports[p].mtu;
	rte_rcu_qsbr_thread_register(dp->qsv, wid);
	rte_rcu_qsbr_thread_online(dp->qsv, wid);
	c->w->tid = rte_sys_gettid();
	__atomic_store_n(&c->w->running, 1, __ATOMIC_RELEASE);

	while (!__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&c->w->progress, c->w->progress + 1, __ATOMIC_RELAXED);
		c->t = __atomic_load_n(&dp->ipsec, __ATOMIC_ACQUIRE);
		c->f = __atomic_load_n(&dp->fib, __ATOMIC_ACQUIRE);
		c->nc_ok = c->rc_ok = c->rp_ok = c->rp6_ok = 0;	/* the FIB may be another one now */
		c->closed = __atomic_load_n(&dp->closed, __ATOMIC_ACQUIRE);
		c->now = rte_get_tsc_cycles();
		got = 0;
		for (p = 0; p < dp->n_ports; p++) {
			n = rte_eth_rx_burst(dp->ports[p].phys, wid, mb, SP_BURST);
			if (n) {
				wire_burst(c, p, mb, n);
				got += n;
			}
		}
		for (p = 0; p < dp->n_ports; p++) {
			/* a TAP's rx is a readv() system call: while the
			 * wire keeps the worker busy, a TAP that had nothing
			 * is asked again only after SP_TAP_US (the kernel's
			 * queue holds what it sends meanwhile) */
			if (got > 0 && c->now < c->tap_next[p])
				continue;
			n = rte_eth_rx_burst(dp->ports[p].tap, wid, mb, SP_BURST);
			c->tap_next[p] = n == 0 ? c->now + c->tap_tsc : 0;
			if (n) {
				tap_burst(c, p, mb, n);
				got += n;
			}
		}
		if (c->inflight > 0)
			crypto_poll(c);
		if (c->nheld > 0)
			held_retry(c);
		if (unlikely(c->frag_live))
			c->frag_live = sp_frag_reap(c->frag, c->now);
		flush(c);
		/* tables read above are no longer referenced; nor are SAs,
		 * once no packet of theirs is in a crypto device (an SA is
		 * freed only after every worker said so): when a control
		 * thread waits for that, the ops in flight are finished now
		 * (under steady load there would always be some) */
		if (c->inflight > 0 && __atomic_load_n(&dp->sync_waiting, __ATOMIC_ACQUIRE) != 0)
			crypto_drain(c);
		if (c->inflight == 0)
			rte_rcu_qsbr_quiescent(dp->qsv, wid);
		if (got == 0 && c->inflight == 0 && dp->idle_sleep_us) {
			/* on a shared box, give the core back when idle */
			if (++idle > 64)
				usleep(dp->idle_sleep_us);
		} else {
			idle = 0;
		}
	}
	/* what the devices still hold: finish it */
	crypto_drain(c);
	for (n = 0; n < c->nheld; n++)
		drop(c, c->held[n].out_port, c->held[n].m, SP_CNT_DROP_NO_NEIGH);
	c->nheld = 0;
	sp_frag_free(c->frag);
	rte_rcu_qsbr_thread_offline(dp->qsv, wid);
	rte_rcu_qsbr_thread_unregister(dp->qsv, wid);
	__atomic_store_n(&c->w->running, 0, __ATOMIC_RELEASE);
	return 0;
}

