/*
 * Table construction and publication. Go builds a complete new table aside,
 * publishes it with one atomic store, waits until the worker has reported a
 * quiescent state (so nobody still reads the old one) and frees the old one.
 * The worker never takes a lock.
 */
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_jhash.h>
#include <rte_malloc.h>

#include "dp.h"

static uint32_t table_seq;

struct sp_ipsec_tables *
sp_ipsec_tables_new(uint32_t n_out, uint32_t n_in, uint32_t n_out6, uint32_t n_in6,
	uint32_t n_sa)
{
	struct rte_ipsec_sad_conf conf;
	struct sp_ipsec_tables *t;
	char name[RTE_IPSEC_SAD_NAMESIZE];

	t = rte_zmalloc("sp_ipsec_tables", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (t == NULL)
		return NULL;
	t->out = rte_zmalloc("sp_out", sizeof(struct sp_policy) * (n_out + 1), 0);
	t->in = rte_zmalloc("sp_in", sizeof(struct sp_policy) * (n_in + 1), 0);
	t->out6 = rte_zmalloc("sp_out6", sizeof(struct sp_policy6) * (n_out6 + 1), 0);
	t->in6 = rte_zmalloc("sp_in6", sizeof(struct sp_policy6) * (n_in6 + 1), 0);
	if (t->out == NULL || t->in == NULL || t->out6 == NULL || t->in6 == NULL)
		goto fail;
	t->n_out = n_out;
	t->n_in = n_in;
	t->n_out6 = n_out6;
	t->n_in6 = n_in6;

	memset(&conf, 0, sizeof(conf));
	conf.socket_id = SOCKET_ID_ANY;
	/* rte_hash wants room; never fewer than a few entries */
	conf.max_sa[RTE_IPSEC_SAD_SPI_ONLY] = n_sa < 8 ? 8 : n_sa;
	conf.max_sa[RTE_IPSEC_SAD_SPI_DIP] = 8;
	conf.max_sa[RTE_IPSEC_SAD_SPI_DIP_SIP] = 8;
	snprintf(name, sizeof(name), "spsad%u", __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED));
	t->sad = rte_ipsec_sad_create(name, &conf);
	if (t->sad == NULL)
		goto fail;
	return t;
fail:
	sp_ipsec_tables_free(t);
	return NULL;
}

int
sp_ipsec_tables_add_sa(struct sp_ipsec_tables *t, struct sp_sa *sa)
{
	union rte_ipsec_sad_key key;

	memset(&key, 0, sizeof(key));
	key.v4.spi = rte_cpu_to_be_32(sa->spi);
	return rte_ipsec_sad_add(t->sad, &key, RTE_IPSEC_SAD_SPI_ONLY, sa);
}

void
sp_ipsec_tables_free(struct sp_ipsec_tables *t)
{
	if (t == NULL)
		return;
	if (t->sad != NULL)
		rte_ipsec_sad_destroy(t->sad);
	rte_free(t->out);
	rte_free(t->in);
	rte_free(t->out6);
	rte_free(t->in6);
	rte_free(t);
}

struct sp_fib *
sp_fib_new(uint32_t n_routes, uint32_t n_neigh)
{
	struct rte_lpm_config lc;
	struct rte_lpm6_config lc6;
	struct rte_hash_parameters hp;
	struct sp_fib *f;
	char name[32];
	uint32_t seq;

	f = rte_zmalloc("sp_fib", sizeof(*f), RTE_CACHE_LINE_SIZE);
	if (f == NULL)
		return NULL;
	seq = __atomic_fetch_add(&table_seq, 1, __ATOMIC_RELAXED);

	f->nh = rte_zmalloc("sp_nh", sizeof(struct sp_nexthop) * (n_routes + 1), 0);
	f->macs = rte_zmalloc("sp_macs", sizeof(struct rte_ether_addr) * (n_neigh + 1), 0);
	if (f->nh == NULL || f->macs == NULL)
		goto fail;
	f->n_nh = n_routes;

	memset(&lc, 0, sizeof(lc));
	lc.max_rules = n_routes < 16 ? 16 : n_routes;
	lc.number_tbl8s = 256;
	snprintf(name, sizeof(name), "splpm%u", seq);
	f->lpm = rte_lpm_create(name, SOCKET_ID_ANY, &lc);
	if (f->lpm == NULL)
		goto fail;

	memset(&lc6, 0, sizeof(lc6));
	lc6.max_rules = n_routes < 16 ? 16 : n_routes;
	lc6.number_tbl8s = 1024;
	snprintf(name, sizeof(name), "splpm6_%u", seq);
	f->lpm6 = rte_lpm6_create(name, SOCKET_ID_ANY, &lc6);
	if (f->lpm6 == NULL)
		goto fail;

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
sp_fib_add_route(struct sp_fib *f, uint32_t dst, uint8_t depth, uint32_t nh_idx)
{
	return rte_lpm_add(f->lpm, rte_be_to_cpu_32(dst), depth, nh_idx);
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
sp_fib_add_route6(struct sp_fib *f, const uint8_t *dst, uint8_t depth, uint32_t nh_idx)
{
	return rte_lpm6_add(f->lpm6, dst, depth, nh_idx);
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

void
sp_fib_free(struct sp_fib *f)
{
	if (f == NULL)
		return;
	if (f->lpm != NULL)
		rte_lpm_free(f->lpm);
	if (f->lpm6 != NULL)
		rte_lpm6_free(f->lpm6);
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
	if (__atomic_load_n(&dp->running, __ATOMIC_ACQUIRE))
		rte_rcu_qsbr_synchronize(dp->qsv, RTE_QSBR_THRID_INVALID);
}
