/*
 * The per-packet loop of one worker lcore, run to completion per burst:
 *
 *   rx (wire port)  -> classify: ESP / ESP-in-UDP | plaintext
 *     ESP           -> SAD by SPI -> crypto (rte_ipsec + cryptodev) ->
 *                      inbound policy check -> route/neighbour -> tx | TAP
 *     plaintext     -> outbound policy -> encrypt -> route -> tx
 *                      | inbound policy says protected -> drop
 *                      | no policy -> TAP (the kernel handles it)
 *   rx (TAP)        -> outbound policy -> encrypt -> route -> tx
 *                      | no policy -> wire port of the same pair
 *
 * Every mbuf ends in exactly one tx queue or is freed and counted.
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

/* Per-iteration output buffers: one per wire port and one per TAP. */
struct sp_txq {
	uint16_t n;
	struct rte_mbuf *m[SP_BURST * 4];
};

struct sp_ctx {
	struct sp_dp *dp;
	struct sp_ipsec_tables *t;
	struct sp_fib *f;
	uint64_t now;
	struct sp_txq wire[SP_MAX_PORTS];
	struct sp_txq tap[SP_MAX_PORTS];
};

static inline void
cnt(struct sp_ctx *c, uint32_t port, enum sp_cnt k)
{
	c->dp->stats[port].cnt[k]++;
}

static inline void
drop(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, enum sp_cnt k)
{
	cnt(c, port, k);
	rte_pktmbuf_free(m);
}

static inline void
txq_put(struct sp_ctx *c, struct sp_txq *q, uint32_t port, struct rte_mbuf *m)
{
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

static void
flush(struct sp_ctx *c)
{
	struct sp_dp *dp = c->dp;
	uint16_t sent, i;
	uint32_t p;

	for (p = 0; p < dp->n_ports; p++) {
		struct sp_txq *q = &c->wire[p];
		if (q->n) {
			sent = rte_eth_tx_burst(dp->ports[p].phys, 0, q->m, q->n);
			dp->stats[p].cnt[SP_CNT_TX] += sent;
			for (i = sent; i < q->n; i++)
				drop(c, p, q->m[i], SP_CNT_DROP_TX);
			q->n = 0;
		}
		q = &c->tap[p];
		if (q->n) {
			sent = rte_eth_tx_burst(dp->ports[p].tap, 0, q->m, q->n);
			dp->stats[p].cnt[SP_CNT_TAP_TX] += sent;
			for (i = sent; i < q->n; i++)
				drop(c, p, q->m[i], SP_CNT_DROP_TX);
			q->n = 0;
		}
	}
}

static void
note_push(struct sp_dp *dp, uint32_t kind, uint32_t port, uint32_t a, uint32_t b)
{
	uint32_t h = dp->note_head;
	struct sp_note *n;

	if (h - __atomic_load_n(&dp->note_tail, __ATOMIC_ACQUIRE) >= SP_NOTE_RING)
		return;	/* Go is behind; the next packet notes it again */
	n = &dp->note[h % SP_NOTE_RING];
	n->kind = kind;
	n->port = port;
	n->a = a;
	n->b = b;
	__atomic_store_n(&dp->note_head, h + 1, __ATOMIC_RELEASE);
}

uint32_t
sp_note_pop(struct sp_dp *dp, struct sp_note *out, uint32_t max)
{
	uint32_t t = dp->note_tail, h = __atomic_load_n(&dp->note_head, __ATOMIC_ACQUIRE);
	uint32_t n = 0;

	while (t != h && n < max)
		out[n++] = dp->note[t++ % SP_NOTE_RING];
	__atomic_store_n(&dp->note_tail, t, __ATOMIC_RELEASE);
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

/*
 * Send an IPv4 packet (mbuf data starts at the IP header) towards its
 * destination: local -> TAP of in_port, else route + neighbour -> wire.
 * forwarded: decrement TTL (we act as a router for it).
 */
static void
route_out(struct sp_ctx *c, uint32_t in_port, struct rte_mbuf *m, int forwarded)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod(m, struct rte_ipv4_hdr *);
	struct sp_fib *f = c->f;
	struct sp_nexthop *nh;
	struct sp_neigh_key k;
	struct rte_ether_hdr *eh;
	uint32_t idx;
	void *data;
	int rc;

	if (f == NULL || rte_lpm_lookup(f->lpm, rte_be_to_cpu_32(ip->dst_addr), &idx) != 0 ||
			idx >= f->n_nh) {
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
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	if (nh->kind == SP_NH_LOCAL) {
		/* addressed to the gateway itself: the kernel takes it */
		rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->dst_addr);
		rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->src_addr);
		to_tap(c, in_port, m);
		return;
	}
	if (forwarded) {
		if (ip->time_to_live <= 1) {
			/* let the kernel send the ICMP time exceeded */
			rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->dst_addr);
			rte_ether_addr_copy(&c->dp->ports[in_port].mac, &eh->src_addr);
			to_tap(c, in_port, m);
			return;
		}
		ttl_dec(ip);
	}
	k.ip = nh->gw ? nh->gw : ip->dst_addr;
	k.port = nh->port;
	rc = rte_hash_lookup_data(f->neigh, &k, &data);
	if (rc < 0) {
		note_push(c->dp, SP_NOTE_MISS, k.port, k.ip, 0);
		drop(c, nh->port, m, SP_CNT_DROP_NO_NEIGH);
		return;
	}
	rte_ether_addr_copy(&f->macs[(uintptr_t)data], &eh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[nh->port].mac, &eh->src_addr);
	txq_put(c, &c->wire[nh->port], nh->port, m);
}

static inline int
port_in(uint16_t p, uint16_t lo, uint16_t hi)
{
	return p >= lo && p <= hi;
}

/* First policy whose selector matches; NULL if none. ports: host order. */
static struct sp_policy *
spd_lookup(struct sp_policy *tab, uint32_t n, uint32_t src, uint32_t dst,
	uint8_t proto, uint16_t sport, uint16_t dport)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		struct sp_policy *p = &tab[i];
		if ((src & p->src_mask) != p->src || (dst & p->dst_mask) != p->dst)
			continue;
		if (p->proto && p->proto != proto)
			continue;
		if (!port_in(sport, p->sport_lo, p->sport_hi) ||
				!port_in(dport, p->dport_lo, p->dport_hi))
			continue;
		return p;
	}
	return NULL;
}

/*
 * RFC 1191 / RFC 4301 §8: a packet with DF that would exceed the MTU once
 * encrypted is answered with ICMP "fragmentation needed", carrying the
 * largest inner size that fits, as the kernel's IPsec does; TCP then lowers
 * its segment size. The reply leaves where the packet came from. m (the
 * offending frame, data at Ethernet) is consumed.
 */
static void
icmp_frag_needed(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, struct sp_sa *sa,
	uint16_t inner_mtu, int from_wire)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *), *reh;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1), *rip;
	struct rte_icmp_hdr *icmp;
	uint32_t ihl = (ip->version_ihl & 0xf) * 4;
	uint32_t quote = RTE_MIN(ihl + 8u, (uint32_t)rte_be_to_cpu_16(ip->total_length));
	struct rte_mbuf *r;

	r = rte_pktmbuf_alloc(m->pool);
	if (r == NULL) {
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return;
	}
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
	rip->src_addr = sa->src;	/* an address of the gateway's own */
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

/* Extract the 5-tuple of an IPv4 packet at ip. Ports are 0 when absent. */
static inline void
five_tuple(const struct rte_ipv4_hdr *ip, uint32_t len, uint16_t *sport, uint16_t *dport)
{
	uint32_t ihl = (ip->version_ihl & 0xf) * 4;
	const uint16_t *l4 = (const uint16_t *)((const uint8_t *)ip + ihl);

	*sport = *dport = 0;
	if ((ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP ||
			ip->next_proto_id == IPPROTO_SCTP) && len >= ihl + 4 &&
			(ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK)) == 0) {
		*sport = rte_be_to_cpu_16(l4[0]);
		*dport = rte_be_to_cpu_16(l4[1]);
	}
}

/* Sanity of an IPv4 header at offset off of m; returns header length. */
static inline uint32_t
ipv4_ok(struct rte_mbuf *m, uint32_t off)
{
	const struct rte_ipv4_hdr *ip;
	uint32_t ihl;

	if (rte_pktmbuf_data_len(m) < off + sizeof(*ip))
		return 0;
	ip = rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, off);
	ihl = (ip->version_ihl & 0xf) * 4;
	if ((ip->version_ihl >> 4) != 4 || ihl < sizeof(*ip) ||
			rte_be_to_cpu_16(ip->total_length) < ihl ||
			rte_pktmbuf_data_len(m) < off + rte_be_to_cpu_16(ip->total_length))
		return 0;
	return ihl;
}

/* Drop bytes beyond the IP total length (Ethernet padding). */
static inline void
trim_to_ip(struct rte_mbuf *m, uint32_t off)
{
	const struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, off);
	uint32_t want = off + rte_be_to_cpu_16(ip->total_length);

	if (rte_pktmbuf_pkt_len(m) > want)
		rte_pktmbuf_trim(m, rte_pktmbuf_pkt_len(m) - want);
}

/*
 * Could this inbound packet (l2_len + l3_len at the ESP header) be ESP of
 * sa by its length? ESP header, IV, ICV and the 2-byte trailer at least,
 * the encrypted part a multiple of the cipher's alignment (RFC 4303 §2.4).
 */
static int
esp_len_ok(const struct sp_sa *sa, const struct rte_mbuf *m)
{
	uint32_t fixed = sa->overhead - sizeof(struct rte_ipv4_hdr) -
		(sa->encap ? sizeof(struct rte_udp_hdr) : 0);	/* ESP hdr + IV + ICV */
	uint32_t len = rte_pktmbuf_pkt_len(m) - m->l2_len - m->l3_len;

	return len >= fixed + 2 && (len - fixed) % sa->pad_align == 0;
}

/*
 * Run crypto for n mbufs of one SA: prepare, enqueue, dequeue, process.
 * On return mb[0..ok) are processed; the rest have been freed and counted.
 */
static uint16_t
sa_crypto(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	struct rte_crypto_op *cop[SP_BURST];
	struct rte_mbuf *done[SP_BURST];
	uint16_t k, enq, deq, i, ok, spins;

	if (rte_crypto_op_bulk_alloc(c->dp->cop_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC, cop, n) == 0) {
		for (i = 0; i < n; i++)
			drop(c, port, mb[i], SP_CNT_DROP_NOMEM);
		return 0;
	}
	k = rte_ipsec_pkt_crypto_prepare(&sa->ss, mb, cop, n);
	/* prepare refuses packets that fail the replay window or whose
	 * lengths cannot be ESP for this SA (truncated, misaligned) */
	for (i = k; i < n; i++) {
		if (!sa->inbound) {
			drop(c, port, mb[i], SP_CNT_DROP_NOMEM);
		} else if (!esp_len_ok(sa, mb[i])) {
			sa->st.drop_malformed++;
			drop(c, port, mb[i], SP_CNT_DROP_MALFORMED);
		} else {
			sa->st.drop_replay++;
			drop(c, port, mb[i], SP_CNT_DROP_REPLAY);
		}
	}
	if (k < n)
		rte_mempool_put_bulk(c->dp->cop_pool, (void **)&cop[k], n - k);
	if (k == 0)
		return 0;

	enq = rte_cryptodev_enqueue_burst(sa->cdev_id, 0, cop, k);
	for (i = enq; i < k; i++)
		drop(c, port, mb[i], SP_CNT_DROP_CRYPTO);
	if (enq < k)
		rte_mempool_put_bulk(c->dp->cop_pool, (void **)&cop[enq], k - enq);

	/* Software PMDs finish in enqueue; the bound keeps a broken device
	 * from hanging the loop. */
	deq = 0;
	for (spins = 0; deq < enq && spins < 1000; spins++)
		deq += rte_cryptodev_dequeue_burst(sa->cdev_id, 0, &cop[deq], enq - deq);

	ok = 0;
	for (i = 0; i < deq; i++) {
		struct rte_mbuf *m = cop[i]->sym->m_src;
		if (cop[i]->status != RTE_CRYPTO_OP_STATUS_SUCCESS) {
			if (sa->inbound)
				sa->st.drop_auth++;
			drop(c, port, m, sa->inbound ? SP_CNT_DROP_AUTH : SP_CNT_DROP_CRYPTO);
			continue;
		}
		done[ok++] = m;
	}
	rte_mempool_put_bulk(c->dp->cop_pool, (void **)cop, deq);
	/* ops still in the device after the bound: their mbufs are lost to
	 * us; count them (this does not happen with software PMDs) */
	for (i = deq; i < enq; i++)
		cnt(c, port, SP_CNT_DROP_CRYPTO);

	k = rte_ipsec_pkt_process(&sa->ss, done, ok);
	for (i = k; i < ok; i++) {
		/* after a good ICV: bad padding or a replay raced in the burst */
		sa->st.drop_malformed++;
		drop(c, port, done[i], SP_CNT_DROP_MALFORMED);
	}
	memcpy(mb, done, k * sizeof(mb[0]));
	return k;
}

/*
 * Hard lifetime: of n packets for sa, how many may still pass. The rest
 * are dropped: no packet goes through an SA past its hard limit (RFC 4301
 * §4.4.2.1), whatever the control plane's timing.
 */
static uint16_t
sa_limit(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t ok = n, i;

	if (unlikely(__atomic_load_n(&sa->dead, __ATOMIC_RELAXED)))
		ok = 0;
	else if (unlikely(sa->hard_bytes != 0 && sa->st.bytes >= sa->hard_bytes))
		ok = 0;
	else if (unlikely(sa->hard_packets != 0 && sa->st.packets + n > sa->hard_packets))
		ok = sa->st.packets >= sa->hard_packets ? 0 : sa->hard_packets - sa->st.packets;
	for (i = ok; i < n; i++)
		drop(c, port, mb[i], SP_CNT_DROP_EXPIRED);
	return ok;
}

static void
sa_count(struct sp_ctx *c, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t i;

	for (i = 0; i < n; i++)
		sa->st.bytes += rte_pktmbuf_pkt_len(mb[i]);
	sa->st.packets += n;
	if (n)
		sa->st.last_use = c->now;
}

/* Does a decrypted packet match an inbound policy of its SA's reqid? */
static int
inbound_policy_ok(struct sp_ctx *c, struct sp_sa *sa, struct rte_mbuf *m)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod(m, struct rte_ipv4_hdr *);
	uint16_t sport, dport;
	uint32_t i;

	five_tuple(ip, rte_pktmbuf_data_len(m), &sport, &dport);
	for (i = 0; i < c->t->n_in; i++) {
		struct sp_policy *p = &c->t->in[i];
		if (p->action != 0 || p->reqid != sa->reqid)
			continue;
		if ((ip->src_addr & p->src_mask) != p->src || (ip->dst_addr & p->dst_mask) != p->dst)
			continue;
		if (p->proto && p->proto != ip->next_proto_id)
			continue;
		if (port_in(sport, p->sport_lo, p->sport_hi) && port_in(dport, p->dport_lo, p->dport_hi))
			return 1;
	}
	return 0;
}

/* Inbound: n ESP packets (l2_len/l3_len point at the ESP header). */
static void
esp_inbound(struct sp_ctx *c, uint32_t port, struct rte_mbuf *mb[], uint16_t n)
{
	const union rte_ipsec_sad_key *kp[SP_BURST];
	union rte_ipsec_sad_key keys[SP_BURST];
	void *sas[SP_BURST];
	struct rte_mbuf *grp[SP_BURST];
	uint16_t i, j, g, k;

	if (n == 0)
		return;
	for (i = 0; i < n; i++) {
		const uint32_t *spi = rte_pktmbuf_mtod_offset(mb[i], const uint32_t *,
			mb[i]->l2_len + mb[i]->l3_len);
		memset(&keys[i], 0, sizeof(keys[i]));
		keys[i].v4.spi = *spi;
		kp[i] = &keys[i];
	}
	if (c->t == NULL) {
		for (i = 0; i < n; i++)
			drop(c, port, mb[i], SP_CNT_DROP_UNKNOWN_SPI);
		return;
	}
	rte_ipsec_sad_lookup(c->t->sad, kp, sas, n);

	for (i = 0; i < n; ) {
		struct sp_sa *sa = sas[i];
		if (sa == NULL || !sa->inbound) {
			drop(c, port, mb[i], SP_CNT_DROP_UNKNOWN_SPI);
			i++;
			continue;
		}
		/* a run of packets for the same SA */
		g = 0;
		for (j = i; j < n && sas[j] == sa; j++)
			grp[g++] = mb[j];
		i = j;

		g = sa_limit(c, port, sa, grp, g);
		k = sa_crypto(c, port, sa, grp, g);
		for (j = 0; j < k; j++) {
			struct rte_mbuf *m = grp[j];
			if (ipv4_ok(m, 0) == 0) {
				sa->st.drop_malformed++;
				drop(c, port, m, SP_CNT_DROP_MALFORMED);
				continue;
			}
			if (!inbound_policy_ok(c, sa, m)) {
				sa->st.drop_policy++;
				drop(c, port, m, SP_CNT_DROP_POLICY);
				continue;
			}
			/* RFC 3948 / XFRM_MSG_MAPPING: authenticated ESP-in-UDP
			 * from a new address or port (NAT remapped, peer moved) */
			if (sa->peer_port != 0 && unlikely(m->hash.fdir.hi != sa->peer ||
					m->hash.fdir.lo != sa->peer_port))
				note_push(c->dp, SP_NOTE_MAPPING, sa->spi, m->hash.fdir.hi, m->hash.fdir.lo);
			sa->st.bytes += rte_pktmbuf_pkt_len(m);
			sa->st.packets++;
			sa->st.last_use = c->now;
			cnt(c, port, SP_CNT_ESP_IN);
			route_out(c, port, m, 1);
		}
	}
}

/* Outbound: n packets (data at the inner IP header) for one SA. */
static void
esp_outbound(struct sp_ctx *c, uint32_t port, struct sp_sa *sa, struct rte_mbuf *mb[], uint16_t n)
{
	uint16_t i, k;

	for (i = 0; i < n; i++) {
		mb[i]->l2_len = 0;
		mb[i]->l3_len = 0;
	}
	n = sa_limit(c, port, sa, mb, n);
	/* count the plaintext, as the kernel counts SA bytes */
	sa_count(c, sa, mb, n);
	k = sa_crypto(c, port, sa, mb, n);
	for (i = 0; i < k; i++) {
		struct rte_ipv4_hdr *oh = rte_pktmbuf_mtod(mb[i], struct rte_ipv4_hdr *);
		/* rte_ipsec leaves the outer header checksum to us */
		oh->hdr_checksum = 0;
		oh->hdr_checksum = rte_ipv4_cksum(oh);
		cnt(c, port, SP_CNT_ESP_OUT);
		route_out(c, port, mb[i], 0);
	}
}

/*
 * Plaintext IPv4 (data at the Ethernet header): protect, drop, or pass.
 * Returns 1 when the packet was consumed, 0 when it takes the default path.
 * out[]/outsa collect packets to encrypt, in order.
 */
static int
plaintext(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, int from_wire,
	struct rte_mbuf **outm, struct sp_sa **outsa, uint16_t *nout)
{
	struct rte_ipv4_hdr *ip;
	struct sp_policy *p;
	uint16_t sport, dport;
	uint32_t ihl;

	if (c->t == NULL || (c->t->n_out == 0 && c->t->n_in == 0))
		return 0;
	ihl = ipv4_ok(m, ETH_HLEN);
	if (ihl == 0)
		return 0;
	ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, ETH_HLEN);
	five_tuple(ip, rte_pktmbuf_data_len(m) - ETH_HLEN, &sport, &dport);

	p = spd_lookup(c->t->out, c->t->n_out, ip->src_addr, ip->dst_addr,
		ip->next_proto_id, sport, dport);
	if (p != NULL) {
		if (p->action == 1)
			return 0;
		if (p->action == 2) {
			drop(c, port, m, SP_CNT_DROP_POLICY);
			return 1;
		}
		if (p->sa == NULL) {
			/* trap policy: ask the IKE daemon for an SA (acquire) */
			note_push(c->dp, SP_NOTE_ACQUIRE, p->reqid, ip->src_addr, ip->dst_addr);
			drop(c, port, m, SP_CNT_DROP_NO_SA);
			return 1;
		}
		/* encrypted size: overhead + payload and trailer (2) padded */
		uint32_t ilen = rte_be_to_cpu_16(ip->total_length);
		uint32_t mtu = c->dp->tun_mtu, al = p->sa->pad_align;
		if (p->sa->overhead + RTE_ALIGN_CEIL(ilen + 2, al) > mtu) {
			if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG))
				icmp_frag_needed(c, port, m, p->sa,
					RTE_ALIGN_FLOOR(mtu - p->sa->overhead, al) - 2, from_wire);
			else
				drop(c, port, m, SP_CNT_DROP_MTU);
			return 1;
		}
		trim_to_ip(m, ETH_HLEN);
		rte_pktmbuf_adj(m, ETH_HLEN);
		if (from_wire) {
			/* forwarded: the TTL drops here, as in the kernel */
			if (ip->time_to_live <= 1) {
				rte_pktmbuf_prepend(m, ETH_HLEN);
				to_tap(c, port, m);
				return 1;
			}
			ttl_dec(ip);
		}
		outm[*nout] = m;
		outsa[*nout] = p->sa;
		(*nout)++;
		return 1;
	}
	if (from_wire) {
		/* plaintext that policy says must arrive protected */
		p = spd_lookup(c->t->in, c->t->n_in, ip->src_addr, ip->dst_addr,
			ip->next_proto_id, sport, dport);
		if (p != NULL && p->action == 0) {
			drop(c, port, m, SP_CNT_DROP_POLICY);
			return 1;
		}
		if (p != NULL && p->action == 2) {
			drop(c, port, m, SP_CNT_DROP_POLICY);
			return 1;
		}
	}
	return 0;
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

/* A burst from the wire side of port p. */
static void
wire_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_mbuf *esp[SP_BURST], *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	uint16_t ne = 0, no = 0, i;

	c->dp->stats[p].cnt[SP_CNT_RX] += n;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];
		struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		struct rte_ipv4_hdr *ip;
		uint32_t ihl;

		if (rte_pktmbuf_data_len(m) < ETH_HLEN ||
				eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
			to_tap(c, p, m);
			continue;
		}
		ihl = ipv4_ok(m, ETH_HLEN);
		if (ihl == 0) {
			to_tap(c, p, m);
			continue;
		}
		ip = (struct rte_ipv4_hdr *)(eh + 1);
		if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK | RTE_IPV4_HDR_MF_FLAG)) {
			/* fragments: the kernel reassembles (no ESP in it, so
			 * fragmented ESP is lost; noted as a known limit) */
			to_tap(c, p, m);
			continue;
		}
		if (ip->next_proto_id == IPPROTO_ESP) {
			uint32_t plen = rte_be_to_cpu_16(ip->total_length) - ihl;
			if (plen < sizeof(struct rte_esp_hdr) + 8) {
				drop(c, p, m, SP_CNT_DROP_MALFORMED);
				continue;
			}
			trim_to_ip(m, ETH_HLEN);
			m->l2_len = ETH_HLEN;
			m->l3_len = ihl;
			/* where it came from, for the NAT mapping check after
			 * decryption (rte_ipsec leaves the hash field alone) */
			m->hash.fdir.hi = ip->src_addr;
			m->hash.fdir.lo = 0;
			esp[ne++] = m;
			continue;
		}
		if (ip->next_proto_id == IPPROTO_UDP) {
			const struct rte_udp_hdr *uh = (const struct rte_udp_hdr *)((uint8_t *)ip + ihl);
			uint32_t plen = rte_be_to_cpu_16(ip->total_length) - ihl;
			if (plen >= sizeof(*uh) && uh->dst_port == rte_cpu_to_be_16(c->dp->natt_port)) {
				const uint32_t *marker = (const uint32_t *)(uh + 1);
				uint32_t ulen = rte_be_to_cpu_16(uh->dgram_len);
				/* RFC 3948 §2.2: a zero SPI field is the non-ESP
				 * marker (IKE); a 1-byte 0xff is a keepalive. */
				if (plen >= sizeof(*uh) + 4 && *marker != 0) {
					if (ulen != plen || plen < sizeof(*uh) + sizeof(struct rte_esp_hdr) + 8) {
						drop(c, p, m, SP_CNT_DROP_MALFORMED);
						continue;
					}
					trim_to_ip(m, ETH_HLEN);
					m->l2_len = ETH_HLEN;
					m->l3_len = ihl + sizeof(*uh);
					m->hash.fdir.hi = ip->src_addr;
					m->hash.fdir.lo = rte_be_to_cpu_16(uh->src_port);
					esp[ne++] = m;
					continue;
				}
				to_tap(c, p, m);
				continue;
			}
		}
		if (!plaintext(c, p, m, 1, outm, outsa, &no))
			to_tap(c, p, m);
	}
	esp_inbound(c, p, esp, ne);
	encrypt_collected(c, p, outm, outsa, no);
}

/* A burst the kernel sent through the TAP of port p. */
static void
tap_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n)
{
	struct rte_mbuf *outm[SP_BURST];
	struct sp_sa *outsa[SP_BURST];
	uint16_t no = 0, i;

	c->dp->stats[p].cnt[SP_CNT_TAP_RX] += n;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];
		struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);

		if (rte_pktmbuf_data_len(m) >= ETH_HLEN &&
				eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) &&
				plaintext(c, p, m, 0, outm, outsa, &no))
			continue;
		txq_put(c, &c->wire[p], p, m);
	}
	encrypt_collected(c, p, outm, outsa, no);
}

int
sp_worker_run(struct sp_dp *dp)
{
	static struct sp_ctx ctx;	/* one worker; too big for the stack */
	struct sp_ctx *c = &ctx;
	struct rte_mbuf *mb[SP_BURST];
	unsigned int tid = rte_lcore_id();
	uint64_t idle = 0;
	uint32_t p;
	uint16_t n, got;

	memset(c, 0, sizeof(*c));
	c->dp = dp;
	rte_rcu_qsbr_thread_register(dp->qsv, tid);
	rte_rcu_qsbr_thread_online(dp->qsv, tid);
	__atomic_store_n(&dp->running, 1, __ATOMIC_RELEASE);

	while (!__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE)) {
		c->t = __atomic_load_n(&dp->ipsec, __ATOMIC_ACQUIRE);
		c->f = __atomic_load_n(&dp->fib, __ATOMIC_ACQUIRE);
		c->now = rte_get_tsc_cycles();
		got = 0;
		for (p = 0; p < dp->n_ports; p++) {
			n = rte_eth_rx_burst(dp->ports[p].phys, 0, mb, SP_BURST);
			if (n) {
				wire_burst(c, p, mb, n);
				got += n;
			}
			n = rte_eth_rx_burst(dp->ports[p].tap, 0, mb, SP_BURST);
			if (n) {
				tap_burst(c, p, mb, n);
				got += n;
			}
		}
		flush(c);
		/* tables read above are no longer referenced */
		rte_rcu_qsbr_quiescent(dp->qsv, tid);
		if (got == 0 && dp->idle_sleep_us) {
			/* on a shared box, give the core back when idle */
			if (++idle > 64)
				usleep(dp->idle_sleep_us);
		} else {
			idle = 0;
		}
	}
	rte_rcu_qsbr_thread_offline(dp->qsv, tid);
	rte_rcu_qsbr_thread_unregister(dp->qsv, tid);
	__atomic_store_n(&dp->running, 0, __ATOMIC_RELEASE);
	return 0;
}
