/*
 * What the worker's translation unit (dp_worker.c and the stage headers it
 * includes) shares with the cold paths in their own files: the worker's
 * context (struct sp_ctx), a packet's parse (struct sp_pkt), the tx queues,
 * counting and dropping, and the cold functions' declarations. Private to
 * the C side: Go sees dp.h only.
 */
#ifndef SP_DP_PRIV_H
#define SP_DP_PRIV_H

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
/* ESP for an SPI with no SA yet, held per worker: a rekey's responder
 * sends on its new SA as soon as it answers, before the IKE daemon here
 * has installed it (see spi_hold) */
#define SP_SPI_HOLD 64
#define SP_SPI_HOLD_MS 250
/* IP headers (IPv6 extension headers included; + UDP for ESP in UDP) in
 * front of ESP, inbound, and of an outbound transport packet: at most what
 * an mbuf's 9-bit l3_len and outer_l3_len hold; longer chains are dropped
 * as malformed */
#define SP_L3_MAX 511
/* ICMP errors each worker may send (see dp_icmp.c): a second, in a burst */
#define SP_ICMP_RATE 100
#define SP_ICMP_BURST 10
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
	/* ESP whose SPI had no SA (see spi_hold), oldest first, and the
	 * dp->sad_gen they last missed in */
	uint16_t nspi_held;
	struct sp_spi_held {
		struct rte_mbuf *m;	/* as esp_inbound takes it */
		uint64_t since;
		uint32_t port;
	} spi_held[SP_SPI_HOLD];
	uint32_t spi_gen;
	uint64_t spi_try, spi_hold_tsc;
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
	/* ICMP "too big" about our SAs this worker may still look up (as
	 * icmp_credit, see sp_pmtu_learn); whether an SA's path MTU it
	 * learned may still have to expire, and when it looks next */
	uint64_t pmtu_credit, pmtu_last, pmtu_next;
	int pmtu_live;
	struct sp_frag *frag;		/* reassembly tables (dp_frag.c) */
	int frag_live;			/* they may hold fragments: reap them */
	uint32_t frame_max[SP_MAX_PORTS];	/* Ethernet + MTU: larger leaves in fragments */
};

/* The mbuf dynamic fields (registered in dp_dev.c): while a packet is in a
 * crypto device (lookaside), its SA and the port it came in on; the TSC of
 * the rx burst it came with (latency). */
#define SA_OF(m) RTE_MBUF_DYNFIELD((m), sp_mbuf_sa_off, struct sp_sa **)
#define IN_PORT(m) RTE_MBUF_DYNFIELD((m), sp_mbuf_port_off, uint32_t *)
#define RXT(m) RTE_MBUF_DYNFIELD((m), sp_mbuf_rxt_off, uint64_t *)

/* The cold paths, out of the worker's translation unit: each is taken by
 * few packets (or none in steady state). */

struct sp_pkt;

/* dp_frag.c, the loop's side of fragments: a frame too big for its port
 * leaves in fragments; a fragment goes to its reassembly table */
void sp_txq_put_frags(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m);
int sp_reassemble(struct sp_ctx *c, uint32_t port, enum sp_frag_kind kind, struct rte_mbuf **mp,
	uint32_t off, struct sp_pkt *k);

/* dp_hold.c: packets held for their next hop's neighbour entry */
void sp_hold(struct sp_ctx *c, uint32_t in_port, uint32_t out_port, struct rte_mbuf *m, uint64_t since);
void sp_held_retry(struct sp_ctx *c);
/* dp_worker.c: route_out (dp_route.h) for a held packet */
void sp_route_out_since(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded,
	uint64_t since);

/* dp_gate.c: a burst while the fast path is closed (see dp.h) */
void sp_closed_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n, int from_wire);

/* dp_icmp.c: ICMP errors for packets too big once encrypted */
void sp_icmp_frag_needed(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, uint32_t src,
	uint16_t inner_mtu, int from_wire);
void sp_icmp6_too_big(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, const uint8_t *src,
	uint32_t inner_mtu, int from_wire);

/* dp_icmp.c: path MTUs learned from ICMP about our ESP (to_us: the ICMP
 * is addressed to one of the gateway's own addresses); expiry */
void sp_pmtu_learn(struct sp_ctx *c, uint32_t port, const uint8_t *l3, const struct sp_pkt *k, int to_us);
int sp_pmtu_age(struct sp_ctx *c);

/* dp_notes.c: notes to Go, declared in dp.h (sp_note_miss ...) */

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

static inline void
drop(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, enum sp_cnt k)
{
	cnt(c, port, k);
	rte_pktmbuf_free(m);
}

static inline void
txq_put(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m)
{
	if (unlikely(rte_pktmbuf_pkt_len(m) > c->frame_max[port])) {
		sp_txq_put_frags(c, q, port, m);
		return;
	}
	if (q->n == RTE_DIM(q->m)) {
		drop(c, port, m, SP_CNT_DROP_TX);
		return;
	}
	q->m[q->n++] = m;
}

static inline void
to_tap(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m)
{
	txq_put(c, &c->tap[port], port, m);
}

/* Whether frame m from the wire of port p is addressed to the port: its
 * MAC, or a group address (broadcast, multicast). The kernel forwards
 * nothing else (PACKET_OTHERHOST), nor may the fast path: on a bridge or
 * a switch that floods, another router's traffic would go out twice. */
static inline int
to_us(const struct sp_ctx *c, uint32_t p, const struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);

	return rte_is_multicast_ether_addr(&eh->dst_addr) ||
		rte_is_same_ether_addr(&eh->dst_addr, &c->dp->ports[p].mac);
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

/* Drop bytes beyond the IP packet (Ethernet padding). */
static inline void
trim_to(struct rte_mbuf *m, uint32_t want)
{
	if (rte_pktmbuf_pkt_len(m) > want)
		rte_pktmbuf_trim(m, rte_pktmbuf_pkt_len(m) - want);
}

#endif
