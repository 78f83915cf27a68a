/*
 * Fragments, with DPDK's librte_ip_frag. A fragment of a protected flow
 * must be encrypted like the rest of its datagram, and a policy with ports
 * needs the first fragment's ports for every fragment (RFC 4301 §7): so
 * the fast path reassembles, then classifies the whole packet.
 *
 *   fragment in (from the wire, the TAP, or out of a decrypted ESP packet)
 *     -> the worker's reassembly table of that kind (not thread safe: one
 *        per worker; separate kinds, so that a fragment from the wire
 *        never completes a datagram whose other fragments were decrypted)
 *     -> whole: copied into one mbuf of whole_pool, so that every later
 *        step (policy lookup, rte_ipsec and the crypto PMDs, checksums)
 *        sees a single segment; then classified like any packet (frag_in)
 *     -> dropped, counted in drop_frag and by reason (SP_FRAG_COUNTERS):
 *        malformed or behind other IPv6 extension headers (frag_bad) or
 *        beyond 65,535 bytes (frag_oversize), checked before the library
 *        sees them; overlapping (frag_overlap), more than
 *        RTE_LIBRTE_IP_FRAG_MAX_FRAG (8) pieces (frag_too_many), not whole
 *        within SP_FRAG_TIMEOUT_MS (frag_timeout), told apart by what the
 *        library put on its death row (verdict); given up early when the
 *        table is under pressure (frag_evicted, make_room), no room even
 *        so (frag_table_full)
 *   a frame larger than its port's MTU (a packet reassembled here, or
 *   ESP of an inner packet that allowed fragmentation)
 *     -> rte_ipv4_fragment_packet / rte_ipv6_fragment_packet: each
 *        fragment's header in an mbuf of hdr_pool, its data a reference
 *        into the packet (ind_pool) -> the tx queue (frag_out)
 *
 * Fragmenting after encryption (the outer packet), not before (the inner
 * one), is what Linux does for a tunnel whose inner IPv4 has DF clear: one
 * ESP packet and one sequence number per datagram, and the peer's kernel
 * reassembles before its ESP sees it.
 */
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_ip_frag.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_random.h>

#include "dp.h"
#include "dp_priv.h"
#include "dp_parse.h"

#define SP_FRAG_TIMEOUT_MS 2000	/* the kernel's ipfrag_time is 30 s: shorter, as
				 * a table here holds mbufs of the rx pool */
#define SP_FRAG_MAX_ENTRIES 128	/* datagrams in reassembly per table */
#define SP_FRAG_MAX_HELD (2 * SP_FRAG_MAX_ENTRIES)	/* mbufs a table holds before
				 * its oldest datagrams go: a flood of 7-piece
				 * datagrams would otherwise pin 128 * 7 mbufs of
				 * the rx pool per table */
#define SP_FRAG_BUCKETS 64
#define SP_FRAG_BUCKET_ENTRIES 4
#define SP_WHOLE_MBUFS 512	/* reassembled packets in flight, all workers */
#define SP_IND_MBUFS 4096	/* fragments made here in flight, all workers */
/* a reassembled packet: at most 8 rx mbufs of data, and room behind it
 * for what ESP adds (outer headers go into the headroom) */
#define SP_WHOLE_ROOM (RTE_LIBRTE_IP_FRAG_MAX_FRAG * 2048 + 512)

struct sp_frag {
	struct sp_dp *dp;
	struct sp_worker *w;
	struct rte_ip_frag_tbl *tbl[SP_FRAG_KINDS];	/* NULL: could not be made */
	uint32_t held[SP_FRAG_KINDS];	/* mbufs (segments) each table holds */
	struct rte_ip_frag_death_row dr;
	uint64_t last_in;	/* TSC of the last fragment taken in */
	uint64_t timeout;	/* SP_FRAG_TIMEOUT_MS in TSC */
	uint32_t id6;		/* identification of the IPv6 fragments made here */
};

static struct sp_frag frags[SP_MAX_WORKERS];

/* Pools shared by the workers; made once at start, with the rx pool. */
int
sp_frag_pools(struct sp_dp *dp, struct rte_mempool *hdr_pool, char *err, size_t errlen)
{
	dp->hdr_pool = hdr_pool;
	dp->whole_pool = rte_pktmbuf_pool_create("sp_whole", SP_WHOLE_MBUFS, 32, 0,
		RTE_PKTMBUF_HEADROOM + SP_WHOLE_ROOM, SOCKET_ID_ANY);
	if (dp->whole_pool == NULL) {
		snprintf(err, errlen, "mbuf pool for reassembled packets: %s", rte_strerror(rte_errno));
		return -1;
	}
	dp->ind_pool = rte_pktmbuf_pool_create("sp_ind", SP_IND_MBUFS, 64, 0, 0, SOCKET_ID_ANY);
	if (dp->ind_pool == NULL) {
		snprintf(err, errlen, "mbuf pool for fragments: %s", rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

/* Worker wid's state, made on its lcore when it starts. A table that
 * cannot be made leaves its kind of fragments dropped (frag_table_full). */
struct sp_frag *
sp_frag_new(struct sp_dp *dp, uint32_t wid)
{
	struct sp_frag *fr = &frags[wid];
	uint32_t k;

	memset(fr, 0, sizeof(*fr));
	fr->dp = dp;
	fr->w = &dp->w[wid];
	fr->timeout = rte_get_tsc_hz() / 1000 * SP_FRAG_TIMEOUT_MS;
	fr->id6 = (uint32_t)rte_rand();
	for (k = 0; k < SP_FRAG_KINDS; k++)
		fr->tbl[k] = rte_ip_frag_table_create(SP_FRAG_BUCKETS, SP_FRAG_BUCKET_ENTRIES,
			SP_FRAG_MAX_ENTRIES, fr->timeout, SOCKET_ID_ANY);
	return fr;
}

/* At the worker's end: the tables and the fragments they hold go. */
void
sp_frag_free(struct sp_frag *fr)
{
	uint32_t k;

	rte_ip_frag_free_death_row(&fr->dr, 0);
	for (k = 0; k < SP_FRAG_KINDS; k++) {
		if (fr->tbl[k] != NULL)
			rte_ip_frag_table_destroy(fr->tbl[k]);
		fr->tbl[k] = NULL;
		fr->held[k] = 0;
	}
}

static inline void
count(struct sp_frag *fr, uint32_t port, enum sp_cnt k, uint64_t n)
{
	fr->w->stats[port].cnt[k] += n;
}

/* n fragments dropped on port, for reason why (one of SP_FRAG_COUNTERS) */
static inline void
frag_drop(struct sp_frag *fr, uint32_t port, enum sp_cnt why, uint64_t n)
{
	fr->w->stats[port].cnt[why] += n;
	fr->w->stats[port].cnt[SP_CNT_DROP_FRAG] += n;
}

/* The fast path port an mbuf came in on (its wire side or its TAP). */
static uint32_t
port_of(const struct sp_dp *dp, uint16_t ethdev)
{
	uint32_t i;

	for (i = 0; i < dp->n_ports + dp->n_ifc; i++)
		if ((i < dp->n_ports && dp->ports[i].phys == ethdev) || dp->ports[i].tap == ethdev)
			return i;
	return 0;
}

/* What a fragment's IP header (m->l2_len bytes in, m->l3_len long) says:
 * its data's offset and length in the datagram, and whether more follow.
 * The library keeps an IPv4 header as it came and an IPv6 fragment
 * header right behind the IPv6 header. */
struct piece {
	int32_t ofs, len;
	int more;
};

static void
piece_of(const struct rte_mbuf *m, struct piece *p)
{
	const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, m->l2_len);
	uint16_t fo;

	if ((*l3 >> 4) == 4) {
		const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)l3;

		fo = rte_be_to_cpu_16(ip->fragment_offset);
		p->ofs = (fo & RTE_IPV4_HDR_OFFSET_MASK) * RTE_IPV4_HDR_OFFSET_UNITS;
		p->more = (fo & RTE_IPV4_HDR_MF_FLAG) != 0;
		p->len = (int32_t)rte_be_to_cpu_16(ip->total_length) - m->l3_len;
	} else {
		const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)l3;
		const struct rte_ipv6_fragment_ext *fh = (const struct rte_ipv6_fragment_ext *)(ip + 1);

		p->len = (int32_t)rte_be_to_cpu_16(ip->payload_len) - (int32_t)sizeof(*fh);
		if (p->len <= 0) {	/* not even the fragment header (RFC 8200 §4.5) */
			p->ofs = p->more = 0;
			return;
		}
		fo = rte_be_to_cpu_16(fh->frag_data);
		p->ofs = fo & ~7;	/* 13 bits of 8-octet units, then 2 reserved and M */
		p->more = fo & 1;
	}
}

/*
 * What the library would take without a word, or get wrong, checked
 * first (RFC 791, RFC 8200 §4.5): a fragment without data, a piece other
 * than the last whose length is not a multiple of 8 (it cannot be
 * followed without a hole), a datagram beyond 65,535 bytes (22.11 takes
 * it and writes a truncated length into the reassembled header). Gives
 * SP_CNT_MAX when the fragment may go in.
 */
static enum sp_cnt
check(const struct rte_mbuf *m, int v6, struct piece *pp)
{
	struct piece p;

	piece_of(m, &p);
	*pp = p;
	if (p.len <= 0 || (p.more && (p.len & 7)))
		return SP_CNT_FRAG_BAD;
	if (p.ofs + p.len + (v6 ? 0 : (int32_t)m->l3_len) > UINT16_MAX)
		return SP_CNT_FRAG_OVERSIZE;
	return SP_CNT_MAX;
}

/* Whether m is on the death row, itself or chained to another piece of
 * its datagram (a reassembly that found a hole). */
static int
on_row(const struct rte_ip_frag_death_row *dr, const struct rte_mbuf *m)
{
	const struct rte_mbuf *s;
	uint32_t i;

	for (i = 0; i < dr->cnt; i++)
		for (s = dr->row[i]; s != NULL; s = s->next)
			if (s == m)
				return 1;
	return 0;
}

/*
 * Why librte_ip_frag gave up what is on the death row after it was given
 * m. It only returns NULL, so this follows what 22.11 does
 * (lib/ip_frag/ip_frag_internal.c, ip_frag_find and ip_frag_process):
 *   - m is not on the row: what is there are datagrams past the timeout
 *     that made room for m's (frag_timeout);
 *   - m is alone on the row: no room for a new datagram (frag_table_full);
 *   - m is there with others: all of them are m's datagram, given up
 *     whole. More pieces than the table keeps (RTE_LIBRTE_IP_FRAG_MAX_FRAG:
 *     the first, the last and 6 between) when m is the seventh between
 *     and nothing was chained (frag_too_many); else the pieces overlap,
 *     repeat the first or the last, or leave a hole once their lengths add
 *     up (frag_overlap). A row mbuf of more than one segment is taken as
 *     chained (rx mbufs here have one).
 */
static enum sp_cnt
verdict(const struct rte_ip_frag_death_row *dr, const struct rte_mbuf *m)
{
	uint32_t i, between = 0;
	struct piece p;

	if (!on_row(dr, m))
		return SP_CNT_FRAG_TIMEOUT;
	if (dr->cnt == 1 && dr->row[0] == m)
		return SP_CNT_FRAG_TABLE_FULL;
	for (i = 0; i < dr->cnt; i++) {
		if (dr->row[i]->nb_segs > 1)
			return SP_CNT_FRAG_OVERLAP;
		piece_of(dr->row[i], &p);
		between += p.ofs != 0 && p.more;
	}
	return between > RTE_LIBRTE_IP_FRAG_MAX_FRAG - 2 ? SP_CNT_FRAG_TOO_MANY : SP_CNT_FRAG_OVERLAP;
}

/* The death row, given up for reason why, out of table kind: counted on
 * the port each fragment came in on, freed. */
static void
death_row(struct sp_frag *fr, enum sp_frag_kind kind, enum sp_cnt why)
{
	uint32_t i, n;

	for (i = 0; i < fr->dr.cnt; i++) {
		n = fr->dr.row[i]->nb_segs;
		fr->held[kind] -= RTE_MIN(n, fr->held[kind]);
		frag_drop(fr, port_of(fr->dp, fr->dr.row[i]->port), why, n);
	}
	rte_ip_frag_free_death_row(&fr->dr, 0);
}

/*
 * Room in table kind under pressure (full of datagrams not yet timed out,
 * or holding more than SP_FRAG_MAX_HELD mbufs: a flood of fragments that
 * never complete). The library evicts only what is past the timeout, so a
 * flood faster than SP_FRAG_MAX_ENTRIES datagrams per timeout would keep
 * every new datagram out; here the oldest go early (frag_evicted): those
 * begun more than half the timeout ago, else a quarter, and so on, at
 * last all but those begun in this burst. The table's LRU list is in
 * order of age, so each call looks at its head only until one evicts,
 * and what goes is about the older half. A datagram whose pieces come
 * close together (as a host sends them) completes while the flood fills
 * the other half. 1 when something went.
 */
static int
make_room(struct sp_frag *fr, enum sp_frag_kind kind, uint64_t now)
{
	uint64_t age;

	for (age = fr->timeout / 2; ; age /= 2) {
		/* entries begun before now - age: "past the timeout" at a
		 * time timeout - age ahead */
		rte_ip_frag_table_del_expired_entries(fr->tbl[kind], &fr->dr, now + fr->timeout - age);
		if (fr->dr.cnt != 0) {
			death_row(fr, kind, SP_CNT_FRAG_EVICTED);
			return 1;
		}
		if (age == 0)
			return 0;
	}
}

static struct rte_mbuf *
reassemble(struct sp_frag *fr, struct rte_ip_frag_tbl *t, struct rte_mbuf *m, uint8_t *l3, int v6,
	uint64_t now)
{
	if (v6) {
		struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)l3;
		return rte_ipv6_frag_reassemble_packet(t, &fr->dr, m, now, ip,
			(struct rte_ipv6_fragment_ext *)(ip + 1));
	}
	return rte_ipv4_frag_reassemble_packet(t, &fr->dr, m, now, (struct rte_ipv4_hdr *)l3);
}

/*
 * An IPv6 atomic fragment (offset 0, no more: a host told that the path
 * MTU is below 1280 sends them) is a whole packet to be processed on its
 * own (RFC 6946 §4); the library would wait for pieces that never come.
 * The fragment header goes, the rest moves up to close the gap.
 */
static struct rte_mbuf *
atomic(struct sp_frag *fr, uint32_t port, struct rte_mbuf *m, uint8_t *l3)
{
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)l3;
	struct rte_ipv6_fragment_ext *fh = (struct rte_ipv6_fragment_ext *)(ip + 1);
	uint32_t front = m->l2_len + sizeof(*ip);

	ip->proto = fh->next_header;
	ip->payload_len = rte_cpu_to_be_16(rte_be_to_cpu_16(ip->payload_len) - sizeof(*fh));
	memmove(rte_pktmbuf_mtod_offset(m, uint8_t *, sizeof(*fh)), rte_pktmbuf_mtod(m, uint8_t *), front);
	rte_pktmbuf_adj(m, sizeof(*fh));
	count(fr, port, SP_CNT_FRAG_IN, 1);
	return m;
}

/*
 * A fragment m (its IP header l2 bytes in, lengths checked by ip_parse)
 * that came in on port: the whole packet, in one mbuf (data where m's
 * was), once its last fragment is here; else NULL (kept for the others,
 * or dropped and counted by reason).
 */
struct rte_mbuf *
sp_frag_in(struct sp_frag *fr, uint32_t port, enum sp_frag_kind kind, struct rte_mbuf *m,
	uint32_t l2, uint64_t now)
{
	struct rte_ip_frag_tbl *t = fr->tbl[kind];
	uint8_t *l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, l2);
	struct rte_mbuf *whole, *one;
	int v6 = (*l3 >> 4) == 6;
	enum sp_cnt why;
	struct piece p;
	uint32_t n;

	fr->last_in = now;
	m->l2_len = l2;
	if (!v6) {
		m->l3_len = rte_ipv4_hdr_len((struct rte_ipv4_hdr *)l3);
		why = check(m, 0, &p);
	} else {
		m->l3_len = sizeof(struct rte_ipv6_hdr) + sizeof(struct rte_ipv6_fragment_ext);
		/* the library takes a fragment header only right behind the
		 * IPv6 header (where Linux puts it unless hop-by-hop options
		 * or a routing header come first) */
		why = ((struct rte_ipv6_hdr *)l3)->proto != IPPROTO_FRAGMENT ? SP_CNT_FRAG_BAD : check(m, 1, &p);
	}
	if (why == SP_CNT_MAX && v6 && p.ofs == 0 && !p.more)
		return atomic(fr, port, m, l3);
	if (why == SP_CNT_MAX && t == NULL)
		why = SP_CNT_FRAG_TABLE_FULL;
	if (why != SP_CNT_MAX) {
		frag_drop(fr, port, why, m->nb_segs);
		rte_pktmbuf_free(m);
		return NULL;
	}
	fr->held[kind] += m->nb_segs;
	whole = reassemble(fr, t, m, l3, v6, now);
	if (whole == NULL && fr->dr.cnt == 1 && fr->dr.row[0] == m) {
		/* no room for m's datagram: make some, and try once more
		 * (m back off the row) */
		fr->dr.cnt = 0;
		if (make_room(fr, kind, now))
			whole = reassemble(fr, t, m, l3, v6, now);
		else
			fr->dr.row[fr->dr.cnt++] = m;
	}
	if (fr->dr.cnt)
		death_row(fr, kind, verdict(&fr->dr, m));
	if (whole == NULL) {
		if (fr->held[kind] > SP_FRAG_MAX_HELD)
			make_room(fr, kind, now);
		return NULL;
	}
	n = whole->nb_segs;
	fr->held[kind] -= RTE_MIN(n, fr->held[kind]);
	if (!v6) {
		/* the library zeroes the checksum of the header it rewrites */
		struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(whole, struct rte_ipv4_hdr *, l2);
		ip->hdr_checksum = rte_ipv4_cksum(ip);
	}
	one = rte_pktmbuf_copy(whole, fr->dp->whole_pool, 0, UINT32_MAX);
	rte_pktmbuf_free(whole);
	if (one == NULL) {
		count(fr, port, SP_CNT_DROP_NOMEM, 1);
		return NULL;
	}
	if (one->nb_segs != 1) {
		/* longer than SP_WHOLE_ROOM (8 fragments of more than 2 KiB:
		 * an af_packet port with a jumbo MTU): too big */
		rte_pktmbuf_free(one);
		frag_drop(fr, port, SP_CNT_FRAG_OVERSIZE, n);
		return NULL;
	}
	count(fr, port, SP_CNT_FRAG_IN, 1);
	return one;
}

/*
 * Once per loop while fragments may be held: drop the datagrams not whole
 * within the timeout. Returns 0 once every table must be empty (nothing
 * came in for longer than the timeout, and what was held is gone).
 */
int
sp_frag_reap(struct sp_frag *fr, uint64_t now)
{
	uint32_t k, round;

	for (k = 0; k < SP_FRAG_KINDS; k++) {
		if (fr->tbl[k] == NULL)
			continue;
		/* the library stops when the death row is full: empty it and
		 * go on (a table holds at most SP_FRAG_MAX_ENTRIES) */
		for (round = 0; round < SP_FRAG_MAX_ENTRIES; round++) {
			rte_ip_frag_table_del_expired_entries(fr->tbl[k], &fr->dr, now);
			if (fr->dr.cnt == 0)
				break;
			death_row(fr, k, SP_CNT_FRAG_TIMEOUT);
		}
	}
	return now - fr->last_in <= 2 * fr->timeout;
}

/*
 * Packet m (data at Ethernet) is larger than the MTU of port, where it
 * goes: its fragments, in out (at most SP_FRAG_OUT_MAX), each with m's
 * Ethernet header and rx time; m is consumed. 0 when it cannot be
 * fragmented (IPv4 with DF set: drop_mtu) or on want of mbufs.
 */
uint16_t
sp_frag_out(struct sp_frag *fr, uint32_t port, struct rte_mbuf *m, uint16_t mtu, struct rte_mbuf **out)
{
	struct rte_ether_hdr eh = *rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	uint8_t *l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, sizeof(eh));
	uint64_t rxt = *RTE_MBUF_DYNFIELD(m, sp_mbuf_rxt_off, uint64_t *);
	int v6 = (*l3 >> 4) == 6;
	int32_t n, i;
	uint32_t id = 0;

	if (!v6 && (((struct rte_ipv4_hdr *)l3)->fragment_offset &
			rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG))) {
		count(fr, port, SP_CNT_DROP_MTU, 1);
		rte_pktmbuf_free(m);
		return 0;
	}
	rte_pktmbuf_adj(m, sizeof(eh));
	if (v6) {
		n = rte_ipv6_fragment_packet(m, out, SP_FRAG_OUT_MAX, mtu, fr->dp->hdr_pool,
			fr->dp->ind_pool);
		id = rte_cpu_to_be_32(fr->id6++);
	} else {
		n = rte_ipv4_fragment_packet(m, out, SP_FRAG_OUT_MAX, mtu, fr->dp->hdr_pool,
			fr->dp->ind_pool);
	}
	/* the fragments hold references to m's data */
	rte_pktmbuf_free(m);
	if (n <= 0) {
		count(fr, port, n == -ENOMEM ? SP_CNT_DROP_NOMEM : SP_CNT_DROP_MTU, 1);
		return 0;
	}
	for (i = 0; i < n; i++) {
		struct rte_mbuf *f = out[i];
		struct rte_ether_hdr *feh;

		if (v6) {
			/* the library leaves the identification 0 (RFC 8200
			 * §4.5 wants it unique per source and destination) */
			struct rte_ipv6_fragment_ext *fh = (struct rte_ipv6_fragment_ext *)
				(rte_pktmbuf_mtod(f, struct rte_ipv6_hdr *) + 1);
			fh->id = id;
		} else {
			struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod(f, struct rte_ipv4_hdr *);
			ip->hdr_checksum = rte_ipv4_cksum(ip);
		}
		feh = (struct rte_ether_hdr *)rte_pktmbuf_prepend(f, sizeof(eh));
		if (feh == NULL) {
			int32_t j;
			for (j = i; j < n; j++)
				rte_pktmbuf_free(out[j]);
			count(fr, port, SP_CNT_DROP_NOMEM, n - i);
			n = i;
			break;
		}
		*feh = eh;
		*RTE_MBUF_DYNFIELD(f, sp_mbuf_rxt_off, uint64_t *) = rxt;
	}
	count(fr, port, SP_CNT_FRAG_OUT, n);
	return (uint16_t)n;
}

/*
 * The worker's side (dp_worker.c and its stages, through dp_priv.h): out
 * of the hot translation unit, since only fragments and frames too big for
 * their port come here.
 */
/* Too big for the port (reassembled here, or ESP of a packet that may be
 * fragmented): in fragments. */
void
sp_txq_put_frags(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m)
{
	struct rte_mbuf *f[SP_FRAG_OUT_MAX];
	uint16_t n, i;

	n = sp_frag_out(c->frag, port, m, c->dp->ports[port].mtu, f);
	for (i = 0; i < n; i++)
		txq_put(c, q, port, f[i]);
}

/*
 * The fragment *mp (ip_parse said so; its IP header off bytes in) to the
 * reassembly table of its kind: 1 when it is kept for the rest of its
 * datagram or dropped (counted); 0 when *mp is now the whole packet and k
 * its parse; -1 when the whole packet is malformed.
 */
int
sp_reassemble(struct sp_ctx *c, uint32_t port, enum sp_frag_kind kind, struct rte_mbuf **mp,
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
