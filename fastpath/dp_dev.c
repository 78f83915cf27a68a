/*
 * Device setup: ethdev ports (wire and TAP) and cryptodevs. Called from Go
 * once at start; errors come back as negative errno plus a message.
 */
#include <stdio.h>
#include <string.h>

#include <rte_cryptodev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>

#include <rte_mbuf_dyn.h>

#include "dp.h"

#define SP_RX_DESC 1024
#define SP_TX_DESC 1024

/*
 * One rx and one tx queue per worker. With several, the device spreads
 * what it receives over the rx queues by a hash of the addresses (RSS on a
 * NIC, the fanout hash of af_packet, the kernel's flow hash on a TAP).
 */
int
sp_port_setup(uint16_t port, struct rte_mempool *pool, uint16_t mtu, uint16_t nq,
	char *err, size_t errlen)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	uint16_t nrx = SP_RX_DESC, ntx = SP_TX_DESC, q;
	int rc;

	memset(&conf, 0, sizeof(conf));
	rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0) {
		snprintf(err, errlen, "port %u: dev_info: %s", port, strerror(-rc));
		return rc;
	}
	if (info.max_rx_queues < nq || info.max_tx_queues < nq) {
		snprintf(err, errlen, "port %u (%s): %u workers need %u queues, the device has %u",
			port, info.driver_name, nq, nq, RTE_MIN(info.max_rx_queues, info.max_tx_queues));
		return -ENOTSUP;
	}
	if (nq > 1 && info.flow_type_rss_offloads != 0) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) &
			info.flow_type_rss_offloads;
	}
	/* fragments made here are two segments: header and data (dp_frag.c) */
	conf.txmode.offloads |= info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	rc = rte_eth_dev_configure(port, nq, nq, &conf);
	if (rc != 0) {
		snprintf(err, errlen, "port %u (%s): configure: %s", port, info.driver_name, strerror(-rc));
		return rc;
	}
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
	if (rc != 0) {
		snprintf(err, errlen, "port %u: descriptors: %s", port, strerror(-rc));
		return rc;
	}
	for (q = 0; q < nq; q++) {
		rc = rte_eth_rx_queue_setup(port, q, nrx, rte_eth_dev_socket_id(port), NULL, pool);
		if (rc != 0) {
			snprintf(err, errlen, "port %u: rx queue %u: %s", port, q, strerror(-rc));
			return rc;
		}
		rc = rte_eth_tx_queue_setup(port, q, ntx, rte_eth_dev_socket_id(port), NULL);
		if (rc != 0) {
			snprintf(err, errlen, "port %u: tx queue %u: %s", port, q, strerror(-rc));
			return rc;
		}
	}
	if (mtu != 0) {
		rc = rte_eth_dev_set_mtu(port, mtu);
		if (rc != 0 && rc != -ENOTSUP) {
			snprintf(err, errlen, "port %u: mtu %u: %s", port, mtu, strerror(-rc));
			return rc;
		}
	}
	rc = rte_eth_dev_start(port);
	if (rc != 0) {
		snprintf(err, errlen, "port %u: start: %s", port, strerror(-rc));
		return rc;
	}
	return 0;
}

int
sp_port_mac(uint16_t port, uint8_t *mac)
{
	return rte_eth_macaddr_get(port, (struct rte_ether_addr *)mac);
}

int
sp_port_set_mac(uint16_t port, uint8_t *mac)
{
	return rte_eth_dev_default_mac_addr_set(port, (struct rte_ether_addr *)mac);
}

int
sp_port_by_name(const char *name, uint16_t *port)
{
	return rte_eth_dev_get_port_by_name(name, port);
}

void
sp_port_stop(uint16_t port)
{
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
}

/* Session pool big enough for every device's private session data. */
struct rte_mempool *
sp_session_pool(uint32_t n, char *err, size_t errlen)
{
	struct rte_mempool *mp;
	unsigned int sz = 0, s;
	uint8_t d;

	for (d = 0; d < rte_cryptodev_count(); d++) {
		s = rte_cryptodev_sym_get_private_session_size(d);
		if (s > sz)
			sz = s;
	}
	mp = rte_cryptodev_sym_session_pool_create("sp_sess", n, sz, 0, 0, SOCKET_ID_ANY);
	if (mp == NULL)
		snprintf(err, errlen, "crypto session pool: %s", rte_strerror(rte_errno));
	return mp;
}

int sp_mbuf_sa_off = -1;
int sp_mbuf_port_off = -1;
int sp_mbuf_rxt_off = -1;

struct rte_mempool *
sp_cop_pool(uint32_t n, char *err, size_t errlen)
{
	static const struct rte_mbuf_dynfield sa_field = {
		.name = "swanpath_dynfield_sa",
		.size = sizeof(struct sp_sa *),
		.align = __alignof__(struct sp_sa *),
	};
	static const struct rte_mbuf_dynfield port_field = {
		.name = "swanpath_dynfield_in_port",
		.size = sizeof(uint32_t),
		.align = __alignof__(uint32_t),
	};
	static const struct rte_mbuf_dynfield rxt_field = {
		.name = "swanpath_dynfield_rx_tsc",
		.size = sizeof(uint64_t),
		.align = __alignof__(uint64_t),
	};
	struct rte_mempool *mp;

	sp_mbuf_sa_off = rte_mbuf_dynfield_register(&sa_field);
	if (sp_mbuf_sa_off < 0) {
		snprintf(err, errlen, "mbuf field for the SA: %s", rte_strerror(rte_errno));
		return NULL;
	}
	sp_mbuf_port_off = rte_mbuf_dynfield_register(&port_field);
	if (sp_mbuf_port_off < 0) {
		snprintf(err, errlen, "mbuf field for the input port: %s", rte_strerror(rte_errno));
		return NULL;
	}
	sp_mbuf_rxt_off = rte_mbuf_dynfield_register(&rxt_field);
	if (sp_mbuf_rxt_off < 0) {
		snprintf(err, errlen, "mbuf field for the rx time: %s", rte_strerror(rte_errno));
		return NULL;
	}

	/* room for the AES-GCM IV behind each op (see SP_IV_OFFSET) */
	mp = rte_crypto_op_pool_create("sp_cop", RTE_CRYPTO_OP_TYPE_SYMMETRIC, n, 128,
		16, SOCKET_ID_ANY);
	if (mp == NULL)
		snprintf(err, errlen, "crypto op pool: %s", rte_strerror(rte_errno));
	return mp;
}

int
sp_cdev_setup(const char *name, struct rte_mempool *sess_pool, uint16_t nqp, int *id,
	char *err, size_t errlen)
{
	struct rte_cryptodev_config conf;
	struct rte_cryptodev_qp_conf qp;
	int dev, rc;
	uint16_t q;

	dev = rte_cryptodev_get_dev_id(name);
	if (dev < 0) {
		snprintf(err, errlen, "crypto device %s not found", name);
		return -ENODEV;
	}
	memset(&conf, 0, sizeof(conf));
	conf.socket_id = rte_cryptodev_socket_id(dev);
	conf.nb_queue_pairs = nqp;	/* one per worker */
	rc = rte_cryptodev_configure(dev, &conf);
	if (rc != 0) {
		snprintf(err, errlen, "crypto device %s: configure: %d", name, rc);
		return rc;
	}
	memset(&qp, 0, sizeof(qp));
	qp.nb_descriptors = 2048;
	qp.mp_session = sess_pool;
	for (q = 0; q < nqp; q++) {
		rc = rte_cryptodev_queue_pair_setup(dev, q, &qp, conf.socket_id);
		if (rc != 0) {
			snprintf(err, errlen, "crypto device %s: queue pair %u: %d", name, q, rc);
			return rc;
		}
	}
	rc = rte_cryptodev_start(dev);
	if (rc != 0) {
		snprintf(err, errlen, "crypto device %s: start: %d", name, rc);
		return rc;
	}
	*id = dev;
	return 0;
}

void
sp_cdev_stop_all(void)
{
	uint8_t d;

	for (d = 0; d < rte_cryptodev_count(); d++) {
		rte_cryptodev_stop(d);
		rte_cryptodev_close(d);
	}
}

struct sp_dp *
sp_dp_new(uint32_t max_threads)
{
	struct sp_dp *dp;
	size_t sz;

	dp = rte_zmalloc("sp_dp", sizeof(*dp), RTE_CACHE_LINE_SIZE);
	if (dp == NULL)
		return NULL;
	sz = rte_rcu_qsbr_get_memsize(max_threads);
	dp->qsv = rte_zmalloc("sp_qsbr", sz, RTE_CACHE_LINE_SIZE);
	if (dp->qsv == NULL || rte_rcu_qsbr_init(dp->qsv, max_threads) != 0) {
		rte_free(dp->qsv);
		rte_free(dp);
		return NULL;
	}
	return dp;
}

void
sp_dp_free(struct sp_dp *dp)
{
	if (dp == NULL)
		return;
	if (dp->sad != NULL)
		rte_ipsec_sad_destroy(dp->sad);
	rte_free(dp->qsv);
	rte_free(dp);
}
