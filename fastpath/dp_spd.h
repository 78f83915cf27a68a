/*
 * Stage 3, SPD: a burst's packets of one family classified together
 * (rte_acl, or in order for a small table), the match read back, and the
 * cold policies' SA slots and SAs prefetched ahead of the packet at hand
 * (SP_POL_AHEAD, SP_SA_AHEAD in dp_priv.h).
 *   reads:  the published policy tables (struct sp_ipsec_tables), out_sa
 *   writes: struct sp_spd_batch (keys and results), nothing in the packet
 */
#ifndef SP_DP_SPD_H
#define SP_DP_SPD_H

#include "dp_crypto.h"

/* The fields the loop uses of a matched policy of either family. */
struct sp_match {
	uint8_t action;		/* enum sp_action */
	uint32_t reqid;
	struct sp_sa *sa;
};

/* Policies waiting for their SPD lookup: a burst's packets of one family,
 * classified together by rte_acl. */
struct sp_spd_batch {
	uint16_t n;
	const uint8_t *data[SP_BURST];
	uint32_t res[SP_BURST];
	/* fresh[j]: new_policy(j), set by spd_prefetch; 0 past n */
	uint8_t fresh[SP_BURST + SP_POL_AHEAD];
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

/* A policy's protocol (0 = any) and port ranges against a key of either
 * family. */
#define SEL_L4_OK(p, k) (((p)->proto == 0 || (p)->proto == (k)->proto) && \
	port_in((k)->sport, (p)->sport_lo, (p)->sport_hi) && \
	port_in((k)->dport, (p)->dport_lo, (p)->dport_hi))

static inline int
pol_match4(const struct sp_policy *p, const struct sp_acl_key4 *k)
{
	return (k->src & p->src_mask) == p->src && (k->dst & p->dst_mask) == p->dst &&
		SEL_L4_OK(p, k);
}

/* s, d: the key's addresses as 64-bit words */
static inline int
pol_match6(const struct sp_policy6 *p, const struct sp_acl_key6 *k, const uint64_t *s,
	const uint64_t *d)
{
	return (s[0] & p->src_mask[0]) == p->src[0] && (s[1] & p->src_mask[1]) == p->src[1] &&
		(d[0] & p->dst_mask[0]) == p->dst[0] && (d[1] & p->dst_mask[1]) == p->dst[1] &&
		SEL_L4_OK(p, k);
}

/* A small table, in order: the first policy that matches each key. */
static void
linear4(const struct sp_policy *tab, uint32_t n, struct sp_spd_batch *b)
{
	uint32_t i, j;

	for (j = 0; j < b->n; j++) {
		for (i = 0; i < n && !pol_match4(&tab[i], &b->k4[j]); i++)
			;
		b->res[j] = i < n ? i + 1 : 0;
	}
}

static void
linear6(const struct sp_policy6 *tab, uint32_t n, struct sp_spd_batch *b)
{
	uint64_t s[2], d[2];
	uint32_t i, j;

	for (j = 0; j < b->n; j++) {
		memcpy(s, b->k6[j].src, 16);
		memcpy(d, b->k6[j].dst, 16);
		for (i = 0; i < n && !pol_match6(&tab[i], &b->k6[j], s, d); i++)
			;
		b->res[j] = i < n ? i + 1 : 0;
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
			r->action = SP_ACT_IPSEC;
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

/* Packet j matched a policy, and not the one the packet before matched
 * (whose lines are loaded already). */
static inline int
new_policy(const struct sp_spd_batch *b, uint16_t j)
{
	return b->fresh[j];
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
spd_prefetch(struct sp_ctx *c, struct sp_spd_batch *b, int v6)
{
	uint16_t j;

	/* new_policy of every packet, once: each is asked three times */
	for (j = 0; j < b->n; j++)
		b->fresh[j] = b->res[j] != 0 && (j == 0 || b->res[j] != b->res[j - 1]);
	memset(&b->fresh[b->n], 0, SP_POL_AHEAD);
	if (c->t == NULL)
		return;
	for (j = 0; j < SP_POL_AHEAD; j++)
		pol_prefetch(c, b, v6, j);
	for (j = 0; j < SP_SA_AHEAD; j++)
		sa_prefetch(c, b, v6, j);
}

#endif
