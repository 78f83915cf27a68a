/*
 * Table construction and publication. Go builds a complete new table aside,
 * publishes it with one atomic store, waits until the worker has reported a
 * quiescent state (so nobody still reads the old one) and frees the old one.
 * The worker never takes a lock.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_jhash.h>
#include <rte_malloc.h>

#include "dp.h"

static uint32_t table_seq;

struct sp_ipsec_tables *
sp_ipsec_tables_new(uint32_t n_out, uint32_t n_in, uint32_t n_out6, uint32_t n_in6)
{
	struct sp_ipsec_tables *t;

	t = rte_zmalloc("sp_ipsec_tables", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (t == NULL)
		return NULL;
	/* cache aligned: see struct sp_policy */
	t->out = rte_zmalloc("sp_out", sizeof(struct sp_policy) * (n_out + 1), RTE_CACHE_LINE_SIZE);
	t->in = rte_zmalloc("sp_in", sizeof(struct sp_policy) * (n_in + 1), RTE_CACHE_LINE_SIZE);
	t->out6 = rte_zmalloc("sp_out6", sizeof(struct sp_policy6) * (n_out6 + 1), RTE_CACHE_LINE_SIZE);
	t->in6 = rte_zmalloc("sp_in6", sizeof(struct sp_policy6) * (n_in6 + 1), RTE_CACHE_LINE_SIZE);
	t->out_sa = rte_zmalloc("sp_out_sa", sizeof(struct sp_sa *) * (n_out + 1), RTE_CACHE_LINE_SIZE);
	t->out6_sa = rte_zmalloc("sp_out6_sa", sizeof(struct sp_sa *) * (n_out6 + 1), RTE_CACHE_LINE_SIZE);
	if (t->out == NULL || t->in == NULL || t->out6 == NULL || t->in6 == NULL ||
			t->out_sa == NULL || t->out6_sa == NULL) {
		sp_ipsec_tables_free(t);
		return NULL;
	}
	t->n_out = n_out;
	t->n_in = n_in;
	t->n_out6 = n_out6;
	t->n_in6 = n_in6;
	return t;
}

/* The SAD lives as long as the data plane: SAs come and go in place. */
int
sp_sad_create(struct sp_dp *dp, uint32_t max_sa)
{
	struct rte_ipsec_sad_conf conf;

	memset(&conf, 0, sizeof(conf));
	conf.socket_id = SOCKET_ID_ANY;
	conf.max_sa[RTE_IPSEC_SAD_SPI_ONLY] = max_sa < 8 ? 8 : max_sa;
	conf.max_sa[RTE_IPSEC_SAD_SPI_DIP] = 8;
	conf.max_sa[RTE_IPSEC_SAD_SPI_DIP_SIP] = 8;
	conf.flags = RTE_IPSEC_SAD_FLAG_RW_CONCURRENCY;
	dp->sad = rte_ipsec_sad_create("spsad", &conf);
	return dp->sad == NULL ? -rte_errno : 0;
}

static void
sad_key(const struct sp_sa *sa, union rte_ipsec_sad_key *key)
{
	memset(key, 0, sizeof(*key));
	key->v4.spi = rte_cpu_to_be_32(sa->spi);
}

/* Add (or replace: same SPI) an inbound SA. */
int
sp_sad_add(struct sp_dp *dp, struct sp_sa *sa)
{
	union rte_ipsec_sad_key key;
	int rc;

	sad_key(sa, &key);
	rc = rte_ipsec_sad_add(dp->sad, &key, RTE_IPSEC_SAD_SPI_ONLY, sa);
	if (rc == 0)
		__atomic_fetch_add(&dp->sad_gen, 1, __ATOMIC_RELEASE);
	return rc;
}

int
sp_sad_del(struct sp_dp *dp, struct sp_sa *sa)
{
	union rte_ipsec_sad_key key;

	sad_key(sa, &key);
	return rte_ipsec_sad_del(dp->sad, &key, RTE_IPSEC_SAD_SPI_ONLY);
}

/* Field layouts of struct sp_acl_key4 / sp_acl_key6 for rte_acl. */
enum { F4_PROTO, F4_SRC, F4_DST, F4_SPORT, F4_DPORT, F4_NUM };
enum { F6_PROTO, F6_SRC0, F6_DST0 = F6_SRC0 + 4, F6_SPORT = F6_DST0 + 4, F6_DPORT, F6_NUM };

RTE_ACL_RULE_DEF(sp_acl_rule4, F4_NUM);
RTE_ACL_RULE_DEF(sp_acl_rule6, F6_NUM);

static void
acl_def(struct rte_acl_config *cfg, uint8_t type, uint8_t size, uint8_t input, uint32_t offset)
{
	uint32_t n = cfg->num_fields++;

	cfg->defs[n].type = type;
	cfg->defs[n].size = size;
	cfg->defs[n].field_index = n;
	cfg->defs[n].input_index = input;
	cfg->defs[n].offset = offset;
}

static void
acl_defs(struct rte_acl_config *cfg, int v6)
{
	uint32_t i;

	memset(cfg, 0, sizeof(*cfg));
	cfg->num_categories = 1;
	acl_def(cfg, RTE_ACL_FIELD_TYPE_BITMASK, 1, 0, 0);
	if (!v6) {
		acl_def(cfg, RTE_ACL_FIELD_TYPE_MASK, 4, 1, offsetof(struct sp_acl_key4, src));
		acl_def(cfg, RTE_ACL_FIELD_TYPE_MASK, 4, 2, offsetof(struct sp_acl_key4, dst));
		acl_def(cfg, RTE_ACL_FIELD_TYPE_RANGE, 2, 3, offsetof(struct sp_acl_key4, sport));
		acl_def(cfg, RTE_ACL_FIELD_TYPE_RANGE, 2, 3, offsetof(struct sp_acl_key4, dport));
		return;
	}
	for (i = 0; i < 8; i++)
		acl_def(cfg, RTE_ACL_FIELD_TYPE_MASK, 4, 1 + i, (i < 4 ? offsetof(struct sp_acl_key6, src) :
			offsetof(struct sp_acl_key6, dst)) + 4 * (i % 4));
	acl_def(cfg, RTE_ACL_FIELD_TYPE_RANGE, 2, 9, offsetof(struct sp_acl_key6, sport));
	acl_def(cfg, RTE_ACL_FIELD_TYPE_RANGE, 2, 9, offsetof(struct sp_acl_key6, dport));
}

/* prefix length of a network-order mask word */
static uint32_t
mask_bits(uint32_t be)
{
	uint32_t m = rte_be_to_cpu_32(be);

	return m == 0 ? 0 : 32 - __builtin_ctz(m);
}

/* The rte_acl rule data of policy i of n: the first in table order wins. */
static void
acl_data(struct rte_acl_rule_data *d, uint32_t i, uint32_t n)
{
	d->category_mask = 1;
	d->priority = n - i;
	d->userdata = i + 1;
}

static struct rte_acl_ctx *
acl_build(const void *tab, uint32_t n, int v6, char *err, size_t errlen)
{
	struct rte_acl_param prm;
	struct rte_acl_config cfg;
	struct rte_acl_ctx *ctx;
	char name[RTE_ACL_NAMESIZE];
	uint32_t i, w;
	int rc;

	if (n <= SP_ACL_MIN)
		return NULL;
	if (n > RTE_ACL_MAX_PRIORITY) {
		snprintf(err, errlen, "too many policies (%u)", n);
		return NULL;
	}
	acl_defs(&cfg, v6);
	snprintf(name, sizeof(name), "spacl%u", __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED));
	memset(&prm, 0, sizeof(prm));
	prm.name = name;
	prm.socket_id = SOCKET_ID_ANY;
	prm.rule_size = RTE_ACL_RULE_SZ(cfg.num_fields);
	prm.max_rule_num = n;
	ctx = rte_acl_create(&prm);
	if (ctx == NULL) {
		snprintf(err, errlen, "rte_acl_create: %s", rte_strerror(rte_errno));
		return NULL;
	}
	for (i = 0; i < n; i++) {
		if (!v6) {
			const struct sp_policy *p = (const struct sp_policy *)tab + i;
			struct sp_acl_rule4 r;

			memset(&r, 0, sizeof(r));
			acl_data(&r.data, i, n);
			r.field[F4_PROTO].value.u8 = p->proto;
			r.field[F4_PROTO].mask_range.u8 = p->proto ? 0xff : 0;
			r.field[F4_SRC].value.u32 = rte_be_to_cpu_32(p->src);
			r.field[F4_SRC].mask_range.u32 = mask_bits(p->src_mask);
			r.field[F4_DST].value.u32 = rte_be_to_cpu_32(p->dst);
			r.field[F4_DST].mask_range.u32 = mask_bits(p->dst_mask);
			r.field[F4_SPORT].value.u16 = p->sport_lo;
			r.field[F4_SPORT].mask_range.u16 = p->sport_hi;
			r.field[F4_DPORT].value.u16 = p->dport_lo;
			r.field[F4_DPORT].mask_range.u16 = p->dport_hi;
			rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&r, 1);
		} else {
			const struct sp_policy6 *p = (const struct sp_policy6 *)tab + i;
			struct sp_acl_rule6 r;
			uint32_t a[8], m[8];

			memset(&r, 0, sizeof(r));
			acl_data(&r.data, i, n);
			memcpy(a, p->src, 16);
			memcpy(a + 4, p->dst, 16);
			memcpy(m, p->src_mask, 16);
			memcpy(m + 4, p->dst_mask, 16);
			r.field[F6_PROTO].value.u8 = p->proto;
			r.field[F6_PROTO].mask_range.u8 = p->proto ? 0xff : 0;
			for (w = 0; w < 8; w++) {
				r.field[F6_SRC0 + w].value.u32 = rte_be_to_cpu_32(a[w]);
				r.field[F6_SRC0 + w].mask_range.u32 = mask_bits(m[w]);
			}
			r.field[F6_SPORT].value.u16 = p->sport_lo;
			r.field[F6_SPORT].mask_range.u16 = p->sport_hi;
			r.field[F6_DPORT].value.u16 = p->dport_lo;
			r.field[F6_DPORT].mask_range.u16 = p->dport_hi;
			rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&r, 1);
		}
		if (rc != 0) {
			snprintf(err, errlen, "rte_acl_add_rules: %s", strerror(-rc));
			rte_acl_free(ctx);
			return NULL;
		}
	}
	rc = rte_acl_build(ctx, &cfg);
	if (rc != 0) {
		snprintf(err, errlen, "rte_acl_build: %s", strerror(-rc));
		rte_acl_free(ctx);
		return NULL;
	}
	return ctx;
}

/* Build the rte_acl contexts of t's policy tables (filled by Go). */
int
sp_ipsec_tables_build_acl(struct sp_ipsec_tables *t, char *err, size_t errlen)
{
	err[0] = 0;
	t->acl_out = acl_build(t->out, t->n_out, 0, err, errlen);
	if (t->acl_out == NULL && t->n_out > SP_ACL_MIN)
		return -1;
	t->acl_in = acl_build(t->in, t->n_in, 0, err, errlen);
	if (t->acl_in == NULL && t->n_in > SP_ACL_MIN)
		return -1;
	t->acl_out6 = acl_build(t->out6, t->n_out6, 1, err, errlen);
	if (t->acl_out6 == NULL && t->n_out6 > SP_ACL_MIN)
		return -1;
	t->acl_in6 = acl_build(t->in6, t->n_in6, 1, err, errlen);
	if (t->acl_in6 == NULL && t->n_in6 > SP_ACL_MIN)
		return -1;
	return 0;
}

void
sp_ipsec_tables_free(struct sp_ipsec_tables *t)
{
	uint32_t i;

	if (t == NULL)
		return;
	for (i = 0; i < RTE_DIM(t->ifc); i++)
		sp_ipsec_tables_free(t->ifc[i]);
	rte_acl_free(t->acl_out);
	rte_acl_free(t->acl_in);
	rte_acl_free(t->acl_out6);
	rte_acl_free(t->acl_in6);
	rte_free(t->out);
	rte_free(t->in);
	rte_free(t->out6);
	rte_free(t->in6);
	rte_free(t->out_sa);
	rte_free(t->out6_sa);
	rte_free(t);
}

/* A route table pair's IPv4 half (see struct sp_fib) for max_rules routes. */
struct rte_lpm *
sp_lpm_new(uint32_t max_rules)
{
	struct rte_lpm_config lc;
	char name[32];

	memset(&lc, 0, sizeof(lc));
	lc.max_rules = max_rules;
	lc.number_tbl8s = 256;
	snprintf(name, sizeof(name), "splpm%u", __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED));
	return rte_lpm_create(name, SOCKET_ID_ANY, &lc);
}

struct rte_lpm6 *
sp_lpm6_new(uint32_t max_rules)
{
	struct rte_lpm6_config lc6;
	char name[32];

	memset(&lc6, 0, sizeof(lc6));
	lc6.max_rules = max_rules;
	lc6.number_tbl8s = 1024;
	snprintf(name, sizeof(name), "splpm6_%u", __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED));
	return rte_lpm6_create(name, SOCKET_ID_ANY, &lc6);
}

/* dst in network order */
int
sp_lpm_add(struct rte_lpm *lpm, uint32_t dst, uint8_t depth, uint32_t nh_idx)
{
	return rte_lpm_add(lpm, rte_be_to_cpu_32(dst), depth, nh_idx);
}

int
sp_lpm_del(struct rte_lpm *lpm, uint32_t dst, uint8_t depth)
{
	return rte_lpm_delete(lpm, rte_be_to_cpu_32(dst), depth);
}

/* The next hop of dst (network order; 4 or 16 bytes) in f, as the loop
 * finds it: 0 and *nh, or -1 when no route has it. */
int
sp_fib_route(const struct sp_fib *f, int v6, const uint8_t *dst, struct sp_nexthop *nh)
{
	uint32_t idx, a;
	int rc;

	if (v6) {
		rc = sp_fib_lookup6(f, dst, &idx);
	} else {
		memcpy(&a, dst, 4);
		rc = sp_fib_lookup4(f, rte_be_to_cpu_32(a), &idx);
	}
	if (rc != 0 || idx >= f->n_nh)
		return -1;
	*nh = f->nh[idx];
	return 0;
}

/* A FIB on the route tables lpm and lpm6 (which it does not own), with
 * room for n_nh next hops (all blackholes until set) and n_neigh
 * neighbours. */
struct sp_fib *
sp_fib_new(uint32_t n_nh, uint32_t n_neigh, struct rte_lpm *lpm, struct rte_lpm6 *lpm6)
{
	struct rte_hash_parameters hp;
	struct sp_fib *f;
	char name[32];
	uint32_t seq, i;

	f = rte_zmalloc("sp_fib", sizeof(*f), RTE_CACHE_LINE_SIZE);
	if (f == NULL)
		return NULL;
	seq = __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED);

	f->nh = rte_zmalloc("sp_nh", sizeof(struct sp_nexthop) * (n_nh + 1), 0);
	f->macs = rte_zmalloc("sp_macs", sizeof(struct rte_ether_addr) * (n_neigh + 1), 0);
	if (f->nh == NULL || f->macs == NULL)
		goto fail;
	for (i = 0; i <= n_nh; i++)
		f->nh[i].kind = SP_NH_BLACKHOLE;
	f->n_nh = n_nh;
	f->lpm = lpm;
	f->lpm6 = lpm6;

	memset(&hp, 0, sizeof(hp));
	snprintf(name, sizeof(name), "spnb%u", seq);
	hp.name = name;
	hp.entries = n_neigh < 16 ? 16 : n_neigh * 2;
	hp.key_len = sizeof(struct sp_neigh_key);
	hp.hash_func = rte_jhash;
	hp.socket_id = SOCKET_ID_ANY;
	f->neigh = rte_hash_create(&hp);
	if (f->neigh == NULL)
		goto fail;
	snprintf(name, sizeof(name), "spnb6_%u", seq);
	hp.key_len = sizeof(struct sp_neigh6_key);
	f->neigh6 = rte_hash_create(&hp);
	if (f->neigh6 == NULL)
		goto fail;
	return f;
fail:
	sp_fib_free(f);
	return NULL;
}

int
sp_fib_add_neigh(struct sp_fib *f, uint32_t ip, uint32_t port, const uint8_t *mac,
	uint32_t idx)
{
	struct sp_neigh_key k = { .ip = ip, .port = port };

	memcpy(&f->macs[idx], mac, RTE_ETHER_ADDR_LEN);
	return rte_hash_add_key_data(f->neigh, &k, (void *)(uintptr_t)idx);
}

int
sp_fib_add_neigh6(struct sp_fib *f, const uint8_t *ip, uint32_t port, const uint8_t *mac,
	uint32_t idx)
{
	struct sp_neigh6_key k;

	memset(&k, 0, sizeof(k));
	memcpy(k.ip, ip, 16);
	k.port = port;
	memcpy(&f->macs[idx], mac, RTE_ETHER_ADDR_LEN);
	return rte_hash_add_key_data(f->neigh6, &k, (void *)(uintptr_t)idx);
}

/* The gateway's own addresses (see struct sp_fib), sorted by the caller. */
int
sp_fib_set_own(struct sp_fib *f, uint32_t n4, const uint32_t *own4, uint32_t n6,
	const uint8_t *own6)
{
	if (n4 > 0) {
		f->own4 = rte_malloc("sp_own4", sizeof(*f->own4) * n4, 0);
		if (f->own4 == NULL)
			return -ENOMEM;
		memcpy(f->own4, own4, sizeof(*f->own4) * n4);
		f->n_own4 = n4;
	}
	if (n6 > 0) {
		f->own6 = rte_malloc("sp_own6", 16 * n6, 0);
		if (f->own6 == NULL)
			return -ENOMEM;
		memcpy(f->own6, own6, 16 * n6);
		f->n_own6 = n6;
	}
	return 0;
}

void
sp_fib_free(struct sp_fib *f)
{
	if (f == NULL)
		return;
	rte_free(f->own4);
	rte_free(f->own6);
	if (f->neigh != NULL)
		rte_hash_free(f->neigh);
	if (f->neigh6 != NULL)
		rte_hash_free(f->neigh6);
	rte_free(f->nh);
	rte_free(f->macs);
	rte_free(f);
}

void
sp_publish_ipsec(struct sp_dp *dp, struct sp_ipsec_tables *t)
{
	__atomic_store_n(&dp->ipsec, t, __ATOMIC_RELEASE);
}

void
sp_publish_fib(struct sp_dp *dp, struct sp_fib *f)
{
	__atomic_store_n(&dp->fib, f, __ATOMIC_RELEASE);
}

/* Returns once every registered reader has gone through a quiescent state
 * after this call started: what was unpublished before is unreachable. */
void
sp_synchronize(struct sp_dp *dp)
{
	if (sp_running(dp)) {
		__atomic_fetch_add(&dp->sync_waiting, 1, __ATOMIC_SEQ_CST);
		rte_rcu_qsbr_synchronize(dp->qsv, RTE_QSBR_THRID_INVALID);
		__atomic_fetch_sub(&dp->sync_waiting, 1, __ATOMIC_RELEASE);
	}
}
