/*
 * Stage 4, crypto: a run of packets of one SA through rte_ipsec, either
 * on the worker's core (CPU crypto: prepare does it) or through the
 * crypto device's queue pair (lookaside: enqueued here, dequeued by
 * crypto_poll in dp_worker.c); hard lifetimes; the SA's counts.
 *   reads:  struct sp_sa's hot lines (SP_SA_HOT_END), its rte_ipsec
 *           state (SP_ISA_LINES + the replay window inbound)
 *   writes: the packets (in place), the SA's per-worker counts and drops
 *           (CTR, ST), lim_packets/lim_bytes (atomically), hash.usr (the
 *           trailer's next header, inbound); lookaside: the mbuf's SA
 *           (SA_OF) and input port
 */
#ifndef SP_DP_CRYPTO_H
#define SP_DP_CRYPTO_H

#include "dp_priv.h"

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

/*
 * After crypto, synchronous or lookaside: 1 when m (of sa) came out good,
 * inbound with its trailer's next header noted; else m is dropped and
 * counted (inbound: its ICV failed).
 */
static __rte_always_inline int
crypto_ok(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *m, int failed)
{
	if (failed) {
		if (sa->inbound)
			ST(c, sa).drop_auth++;
		drop(c, port, m, sa->inbound ? SP_CNT_DROP_AUTH : SP_CNT_DROP_CRYPTO);
		return 0;
	}
	if (sa->inbound)
		note_next_header(sa, m);
	return 1;
}

/* Synchronous crypto (CPU_CRYPTO): prepare does the crypto in place. */
static uint16_t
sa_crypto_sync(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t k, i, ok;

	k = rte_ipsec_pkt_cpu_prepare(&sa->ss, mb, n);
	prepare_refused(c, port, sa, mb, k, n);
	ok = 0;
	for (i = 0; i < k; i++)
		if (crypto_ok(c, port, sa, mb[i], (mb[i]->ol_flags & RTE_MBUF_F_RX_SEC_OFFLOAD_FAILED) != 0))
			mb[ok++] = mb[i];
	return finish(c, port, sa, &sa->ss, mb, ok);
}

/*
 * Lookaside crypto through the device's queue pair: prepare and enqueue.
 * The loop goes on; crypto_poll takes the finished ops out of the device
 * later in the same iteration or a later one and sends the packets on
 * (no waiting for one burst). Outbound, an IPv6 packet (hash.usr =
 * IPPROTO_IPV6) of a tunnel SA gets that next header in its trailer
 * before encryption. While a packet is in the device its mbuf names its SA
 * (SA_OF) and the port it came in on (IN_PORT).
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
		*IN_PORT(mb[i]) = port;
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

#endif
