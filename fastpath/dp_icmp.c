/*
 * Cold path: the ICMP errors the fast path sends itself (a packet too big
 * once encrypted), rate limited per worker; and those it reads (a path MTU
 * for one of its outbound SAs, sp_pmtu_learn).
 */
#include "dp_priv.h"
#include "dp_parse.h"

/*
 * ICMP errors the fast path sends (sp_icmp_frag_needed, sp_icmp6_too_big) answer
 * packets anyone can send, each costing an mbuf and a copy, and may go to a
 * forged source: at most SP_ICMP_RATE a second per worker, in bursts of up
 * to SP_ICMP_BURST (a token bucket, as Linux limits its own: icmp_ratelimit
 * per destination and icmp_msgs_per_sec/icmp_msgs_burst overall). These
 * errors only report a path MTU, which a sender needs once per path and
 * change, so the limit costs nothing legitimate.
 */
static int
token(struct sp_ctx *c, uint64_t *credit_p, uint64_t *last)
{
	uint64_t credit = *credit_p + (c->now - *last);

	*last = c->now;
	credit = RTE_MIN(credit, c->icmp_cost * SP_ICMP_BURST);
	if (credit < c->icmp_cost) {
		*credit_p = credit;
		return 0;
	}
	*credit_p = credit - c->icmp_cost;
	return 1;
}

static int
icmp_token(struct sp_ctx *c)
{
	return token(c, &c->icmp_credit, &c->icmp_last);
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
 * The reply to m (the offending frame, data at Ethernet) of an ICMP error
 * whose IP packet is len bytes: a new frame from m's pool, its Ethernet
 * header filled (back to m's sender), data at the IP header to fill.
 * NULL when it may not be sent (icmp_err_ok) or there is no room: m is
 * then dropped and counted.
 */
static struct rte_mbuf *
icmp_reply(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, uint32_t len, uint16_t ether_type)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	struct rte_ether_hdr *reh;
	struct rte_mbuf *r;

	if (!icmp_err_ok(c, port, m))
		return NULL;
	r = rte_pktmbuf_alloc(m->pool);
	reh = r != NULL ? (struct rte_ether_hdr *)rte_pktmbuf_append(r, ETH_HLEN + len) : NULL;
	if (reh == NULL) {
		rte_pktmbuf_free(r);
		drop(c, port, m, SP_CNT_DROP_NOMEM);
		return NULL;
	}
	*RXT(r) = *RXT(m);	/* the reply's latency counts from the offender's */
	rte_ether_addr_copy(&eh->src_addr, &reh->dst_addr);
	rte_ether_addr_copy(&c->dp->ports[port].mac, &reh->src_addr);
	reh->ether_type = rte_cpu_to_be_16(ether_type);
	rte_pktmbuf_adj(r, ETH_HLEN);
	return r;
}

/* Reply r (data at its IP header) to m goes where m came from; m is freed. */
static void
icmp_send(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, struct rte_mbuf *r, int from_wire)
{
	rte_pktmbuf_prepend(r, ETH_HLEN);
	rte_pktmbuf_free(m);
	cnt(c, port, SP_CNT_ICMP_MTU);
	if (from_wire)
		txq_put(c, &c->wire[port], port, r);
	else
		to_tap(c, port, r);
}

/*
 * RFC 1191 / RFC 4301 §8: a packet with DF that would exceed the MTU once
 * encrypted is answered with ICMP "fragmentation needed", carrying the
 * largest inner size that fits, as the kernel's IPsec does; TCP then lowers
 * its segment size. The reply leaves where the packet came from. m (the
 * offending frame, data at Ethernet) is consumed. src: the gateway's
 * address the reply comes from (network order).
 */
void
sp_icmp_frag_needed(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, uint32_t src,
	uint16_t inner_mtu, int from_wire)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, ETH_HLEN), *rip;
	struct rte_icmp_hdr *icmp;
	uint32_t ihl = (ip->version_ihl & 0xf) * 4;
	uint32_t quote = RTE_MIN(ihl + 8u, (uint32_t)rte_be_to_cpu_16(ip->total_length));
	struct rte_mbuf *r;

	r = icmp_reply(c, port, m, sizeof(*rip) + sizeof(*icmp) + quote, RTE_ETHER_TYPE_IPV4);
	if (r == NULL)
		return;
	rip = rte_pktmbuf_mtod(r, struct rte_ipv4_hdr *);
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
	icmp_send(c, port, m, r, from_wire);
}

/*
 * RFC 4443 §3.2: IPv6 is never fragmented on the way, so a packet too big
 * once encrypted is answered with "Packet Too Big" and the largest inner
 * size that fits. As sp_icmp_frag_needed; src is an IPv6 address of ours.
 */
void
sp_icmp6_too_big(struct sp_ctx *c, uint32_t port, struct rte_mbuf *m, const uint8_t *src,
	uint32_t inner_mtu, int from_wire)
{
	struct rte_ipv6_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv6_hdr *, ETH_HLEN), *rip;
	/* as much of the packet as fits in the IPv6 minimum MTU */
	uint32_t quote = RTE_MIN(1280u - sizeof(*rip) - 8,
		(uint32_t)sizeof(*ip) + rte_be_to_cpu_16(ip->payload_len));
	uint8_t *icmp;
	uint32_t mtu_be = rte_cpu_to_be_32(inner_mtu);
	uint16_t ck;
	struct rte_mbuf *r;

	r = icmp_reply(c, port, m, sizeof(*rip) + 8 + quote, RTE_ETHER_TYPE_IPV6);
	if (r == NULL)
		return;
	rip = rte_pktmbuf_mtod(r, struct rte_ipv6_hdr *);
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
	icmp_send(c, port, m, r, from_wire);
}

/*
 * Path MTU discovery for the SAs (RFC 4301 §8.2.1, RFC 1191, RFC 8201).
 * Outbound ESP carries the DF bit of the IPv4 packet inside (see
 * outbound_done); a router on the way that cannot forward it answers the
 * gateway with ICMP "fragmentation needed" (IPv6: "packet too big"),
 * quoting the ESP packet. That ICMP reaches the kernel through the TAP
 * as before, which knows nothing of the fast path's SAs: here the SA it
 * quotes learns the path MTU, and protect (dp_esp_out.h) answers the next
 * packet with DF that would not fit with ICMP to its sender, carrying what
 * fits inside (the path MTU less the SA's overhead), so that the sender's
 * TCP lowers its segments instead of losing them.
 *
 * Never trusted bare: the ICMP must be to one of our addresses (the caller
 * checks), quote an ESP or ESP-in-UDP packet from the SA's source to its
 * peer (and NAT-T ports) with the SPI of one of our outbound SAs (a
 * router quotes at least 8 bytes after the IP header: the SPI of plain
 * ESP; of ESP-in-UDP only if it quotes more, as RFC 1812 §4.3.2.3 asks and
 * Linux does), and report an MTU below the length of the packet it quotes.
 * It only ever lowers an SA's MTU, never below 576 (IPv4) or 1280 (IPv6),
 * and for SP_PMTU_SECONDS (as Linux's mtu_expires), after which the SA
 * tries its full size again. Looking the SPI up walks the policy tables, so
 * at most SP_ICMP_RATE a second per worker get that far; the rest, and all
 * that fail a check, count pmtu_ignored.
 */
#define SP_PMTU_SECONDS 600

/* the outbound SAs of a policy table, one at a time (NULL at the end) */
static struct sp_sa *
out_sa_at(const struct sp_ipsec_tables *t, uint32_t i)
{
	if (i < t->n_out)
		return __atomic_load_n(&t->out_sa[i], __ATOMIC_ACQUIRE);
	i -= t->n_out;
	return i < t->n_out6 ? __atomic_load_n(&t->out6_sa[i], __ATOMIC_ACQUIRE) : NULL;
}

/* Sets mtu (with its expiry) on every outbound SA that matches spi and
 * the quoted addresses and ports, in table t and its interfaces'. */
static int
pmtu_set(struct sp_ctx *c, const struct sp_ipsec_tables *t, int nested, uint8_t family,
	const uint8_t *src, const uint8_t *dst, uint32_t spi, uint16_t dport, uint16_t mtu)
{
	uint32_t i, n = t->n_out + t->n_out6, alen = family == 6 ? 16 : 4;
	struct sp_sa *sa;
	int found = 0;

	for (i = 0; i < n; i++) {
		sa = out_sa_at(t, i);
		if (sa == NULL || sa->spi != spi || sa->family != family || sa->transport ||
				sa->peer_port != dport || memcmp(sa->src, src, alen) != 0 ||
				memcmp(sa->peer, dst, alen) != 0)
			continue;
		found = 1;
		__atomic_store_n(&sa->pmtu_until, c->now + rte_get_tsc_hz() * SP_PMTU_SECONDS, __ATOMIC_RELAXED);
		if (mtu < __atomic_load_n(&sa->mtu, __ATOMIC_RELAXED))
			__atomic_store_n(&sa->mtu, mtu, __ATOMIC_RELAXED);
	}
	for (i = 0; !nested && i < SP_MAX_PORTS; i++)
		if (t->ifc[i] != NULL)
			found |= pmtu_set(c, t->ifc[i], 1, family, src, dst, spi, dport, mtu);
	return found;
}

static inline uint32_t
be16_at(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t
be32_at(const uint8_t *p)
{
	return be16_at(p) << 16 | be16_at(p + 2);
}

void
sp_pmtu_learn(struct sp_ctx *c, uint32_t port, const uint8_t *l3, const struct sp_pkt *k, int to_us)
{
	const uint8_t *icmp = l3 + k->l3len, *q, *src, *dst;
	uint32_t left = k->len - k->l3len, mtu, qlen, qhl, proto, spi, dport = 0;

	/* other ICMP passes unseen */
	if (k->v6 ? k->icmp_type != 2 : k->icmp_type != 3 || left < 2 || icmp[1] != 4)
		return;
	if (!to_us || left < 8 || c->t == NULL)
		goto ignored;
	q = icmp + 8;
	left -= 8;
	if (!k->v6) {
		mtu = be16_at(icmp + 6);
		if (left < 20 || q[0] >> 4 != 4 || (qhl = (q[0] & 0xf) * 4u) < 20)
			goto ignored;
		qlen = be16_at(q + 2);
		proto = q[9];
		src = q + 12;
		dst = q + 16;
	} else {
		mtu = be32_at(icmp + 4);
		if (left < 40 || q[0] >> 4 != 6)
			goto ignored;
		qhl = 40;	/* ESP right behind the header, as the SAs send it */
		qlen = 40 + be16_at(q + 4);
		proto = q[6];
		src = q + 8;
		dst = q + 24;
	}
	if (proto == IPPROTO_UDP) {
		/* ESP in UDP from our NAT-T port: the SPI behind the UDP header */
		if (left < qhl + 12 || be16_at(q + qhl) != c->dp->natt_port)
			goto ignored;
		dport = be16_at(q + qhl + 2);
		spi = be32_at(q + qhl + 8);
	} else if (proto == IPPROTO_ESP && left >= qhl + 4) {
		spi = be32_at(q + qhl);
	} else {
		goto ignored;
	}
	/* the packet quoted did not fit: a report of no less is no news (or
	 * forged); 0 is an old router's (RFC 1191 §5), not guessed at here */
	if (spi == 0 || mtu == 0 || mtu >= qlen)
		goto ignored;
	mtu = RTE_MAX(mtu, k->v6 ? 1280u : 576u);
	if (!token(c, &c->pmtu_credit, &c->pmtu_last) ||
			!pmtu_set(c, c->t, 0, k->v6 ? 6 : 4, src, dst, spi, (uint16_t)dport, (uint16_t)mtu))
		goto ignored;
	c->pmtu_live = 1;
	cnt(c, port, SP_CNT_PMTU_LEARNED);
	return;
ignored:
	cnt(c, port, SP_CNT_PMTU_IGNORED);
}

/* Expired path MTUs back to none, in t and its interfaces' tables; 1 while
 * some are still learned. */
static int
pmtu_age(struct sp_ctx *c, const struct sp_ipsec_tables *t, int nested)
{
	uint32_t i, n = t->n_out + t->n_out6;
	struct sp_sa *sa;
	int live = 0;

	for (i = 0; i < n; i++) {
		sa = out_sa_at(t, i);
		if (sa == NULL || __atomic_load_n(&sa->mtu, __ATOMIC_RELAXED) == SP_MTU_NONE)
			continue;
		if (c->now < __atomic_load_n(&sa->pmtu_until, __ATOMIC_RELAXED)) {
			live = 1;
			continue;
		}
		__atomic_store_n(&sa->mtu, SP_MTU_NONE, __ATOMIC_RELAXED);
	}
	for (i = 0; !nested && i < SP_MAX_PORTS; i++)
		if (t->ifc[i] != NULL)
			live |= pmtu_age(c, t->ifc[i], 1);
	return live;
}

int
sp_pmtu_age(struct sp_ctx *c)
{
	return c->t != NULL && pmtu_age(c, c->t, 0);
}
