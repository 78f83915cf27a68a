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
 *   rx (route-based interface, TUN) -> its own outbound policies ->
 *                      encrypt -> route -> tx | drop; ESP of its SAs
 *                      comes out of it (dp_ifc.h)
 *   fragments (wire, TAP, decrypted) are reassembled first and go on as
 *   whole packets; a frame larger than its port's MTU leaves in fragments
 *   (dp_frag.c)
 *
 * Every mbuf ends in exactly one tx queue or is freed and counted (after,
 * at most, a moment held for its next hop's neighbour entry).
 */
/*
 * The stages, one header each, in the order a packet meets them; they are
 * included here so that this stays one translation unit and the compiler
 * inlines across them (static inline, __rte_always_inline):
 *   dp_parse.h    IP parse
 *   dp_own.h      the gateway's own addresses, IKE, neighbour discovery
 *   dp_route.h    route, neighbour, reverse path
 *   dp_crypto.h   rte_ipsec + crypto of a run of one SA, lifetimes, counts
 *   dp_spd.h      policy classification and prefetch
 *   dp_esp_in.h   inbound ESP
 *   dp_esp_out.h  outbound ESP
 *   dp_plain.h    plaintext bursts through the SPD
 *   dp_ifc.h      route-based interfaces (XFRM interface ids, marks)
 * This file: rx bursts, lookaside completions, tx flush, the worker loop.
 * The cold paths are in their own files (dp_priv.h lists them): ICMP
 * errors (dp_icmp.c), neighbour hold (dp_hold.c), the closed gate
 * (dp_gate.c), notes to Go (dp_notes.c), fragments (dp_frag.c).
 */
#include "dp_priv.h"
#include "dp_parse.h"
#include "dp_own.h"
#include "dp_route.h"
#include "dp_crypto.h"
#include "dp_spd.h"
#include "dp_esp_in.h"
#include "dp_esp_out.h"
#include "dp_plain.h"
#include "dp_ifc.h"

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
	/* route-based interfaces: TUN devices, IP without Ethernet */
	for (; p < dp->n_ports + dp->n_ifc; p++) {
		struct sp_txq *q = &c->tap[p];
		if (q->n == 0)
			continue;
		for (i = 0; i < q->n; i++)
			rte_pktmbuf_adj(q->m[i], ETH_HLEN);
		sent = rte_eth_tx_burst(dp->ports[p].tap, c->wid, q->m, q->n);
		c->w->stats[p].cnt[SP_CNT_TAP_TX] += sent;
		for (i = sent; i < q->n; i++)
			drop(c, p, q->m[i], SP_CNT_DROP_TX);
		q->n = 0;
	}
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

void
sp_route_out_since(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded, uint64_t since)
{
	route_out_body(c, in_port, m, forwarded, since);
}

/* A burst from the wire (from_wire) or the TAP of port p: counted, and 1
 * unless the gate took it (closed, dp_gate.c). */
static inline int
burst_open(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n, int from_wire)
{
	if (unlikely(c->closed)) {
		sp_closed_burst(c, p, mb, n, from_wire);
		return 0;
	}
	c->w->stats[p].cnt[from_wire ? SP_CNT_RX : SP_CNT_TAP_RX] += n;
	return 1;
}

/* A burst from the wire side of port p. */
static void
wire_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_mbuf *esp[SP_BURST];
	struct sp_plain pl;
	struct sp_pkt *k;
	uint16_t ne = 0, np = 0, i;	/* np: pl.n, kept in a register */
	uint32_t own_dst = 0;		/* see dst_own_last */
	int rc, own_have = 0;

	if (!burst_open(c, p, mb, n, 1))
		return;
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
		if (unlikely(c->dp->ports[p].l2 && !to_us(c, p, m))) {
			/* another host's frame (a switch or bridge flooded
			 * it, or a port that hears its own): not ours to
			 * route; the kernel drops it as it would */
			to_tap(c, p, m);
			continue;
		}
		/* parsed in place: the next free slot of the plaintext
		 * batch (a copy of the fields just written one by one would
		 * wait for them to reach the cache) */
		k = &pl.k[np];
		rc = ip_parse(m, ETH_HLEN, k);
		if (unlikely(rc > 0)) {
			/* through a copy: with its address taken, m would live
			 * in memory for the whole loop */
			struct rte_mbuf *fm = m;

			if ((rc = sp_reassemble(c, p, SP_FRAG_WIRE, &fm, ETH_HLEN, k)) > 0)
				continue;	/* a fragment, kept for the rest or dropped */
			m = fm;
		}
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
		if (k->proto == IPPROTO_UDP && k->dport == c->dp->natt_port &&
				dst_own_last(c, l3, k, &own_dst, &own_have)) {
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
		/* ICMP about our own ESP teaches an SA its path MTU
		 * (dp_icmp.c); it goes on to the kernel as before */
		if (unlikely(k->proto == IPPROTO_ICMP || k->proto == IPPROTO_ICMPV6))
			sp_pmtu_learn(c, p, l3, k, dst_own(c, l3, k));
		if (spd_wanted(c, l3, k, 1)) {
			pl.m[np++] = m;
		} else {
			to_tap(c, p, m);
		}
	}
	pl.n = np;
	esp_inbound(c, p, esp, ne);
	plain_protect(c, p, &pl, 1);
}

/* A burst the kernel sent through the TAP of port p. */
static void
tap_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct sp_plain pl;
	uint16_t i;
	int rc;

	if (!burst_open(c, p, mb, n, 0))
		return;
	pl.n = 0;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		*RXT(m) = c->now;
		if (is_ip(m)) {
			rc = ip_parse(m, ETH_HLEN, &pl.k[pl.n]);
			if (unlikely(rc > 0) &&
					(rc = sp_reassemble(c, p, SP_FRAG_TAP, &m, ETH_HLEN, &pl.k[pl.n])) > 0)
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
	plain_protect(c, p, &pl, 0);
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
			port = m != NULL ? *IN_PORT(m) : 0;
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
			if (crypto_ok(c, port, sa, m, cop[i]->status != RTE_CRYPTO_OP_STATUS_SUCCESS))
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
	c->spi_hold_tsc = rte_get_tsc_hz() / 1000 * SP_SPI_HOLD_MS;
	c->tap_tsc = rte_get_tsc_hz() / 1000000 * SP_TAP_US;
	c->icmp_cost = rte_get_tsc_hz() / SP_ICMP_RATE;
	c->icmp_credit = c->icmp_cost * SP_ICMP_BURST;
	c->icmp_last = rte_get_tsc_cycles();
	c->pmtu_credit = c->icmp_credit;
	c->pmtu_last = c->icmp_last;
	c->frag = sp_frag_new(dp, wid);
	for (p = 0; p < dp->n_ports + dp->n_ifc; p++)
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
		/* held packets go before this iteration's, which may find
		 * what they wait for (a neighbour in a new FIB, an SA just
		 * added): a replay window takes ESP in the order of its
		 * sequence numbers, and held ESP behind a burst with higher
		 * numbers would fall below it (the peer's, ours) */
		if (c->nheld > 0)
			sp_held_retry(c);
		if (unlikely(c->nspi_held > 0))
			spi_held_retry(c);
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
		for (; p < dp->n_ports + dp->n_ifc; p++) {
			/* what the kernel routes into a route-based interface,
			 * polled as the TAPs are */
			if (got > 0 && c->now < c->tap_next[p])
				continue;
			n = rte_eth_rx_burst(dp->ports[p].tap, wid, mb, SP_BURST);
			c->tap_next[p] = n == 0 ? c->now + c->tap_tsc : 0;
			if (n) {
				ifc_burst(c, p, mb, n);
				got += n;
			}
		}
		if (c->inflight > 0)
			crypto_poll(c);
		if (unlikely(c->frag_live))
			c->frag_live = sp_frag_reap(c->frag, c->now);
		if (unlikely(c->pmtu_live) && c->now >= c->pmtu_next) {
			/* path MTUs this worker learned: expired ones go */
			c->pmtu_live = sp_pmtu_age(c);
			c->pmtu_next = c->now + rte_get_tsc_hz();
		}
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
	for (n = 0; n < c->nspi_held; n++)
		drop(c, c->spi_held[n].port, c->spi_held[n].m, SP_CNT_DROP_UNKNOWN_SPI);
	c->nspi_held = 0;
	for (n = 0; n < c->nheld; n++)
		drop(c, c->held[n].out_port, c->held[n].m, SP_CNT_DROP_NO_NEIGH);
	c->nheld = 0;
	sp_frag_free(c->frag);
	rte_rcu_qsbr_thread_offline(dp->qsv, wid);
	rte_rcu_qsbr_thread_unregister(dp->qsv, wid);
	__atomic_store_n(&c->w->running, 0, __ATOMIC_RELEASE);
	return 0;
}
