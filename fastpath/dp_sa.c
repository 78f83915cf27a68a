/*
 * SA creation: a cryptodev session and an rte_ipsec SA/session from the
 * parameters Go hands over. Key bytes live in the caller's struct only for
 * the duration of the call; the crypto PMD keeps its own expanded copy,
 * which rte_cryptodev_sym_session_free wipes.
 */
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>

#include <rte_cryptodev.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_security.h>
#include <rte_udp.h>

#include "dp.h"

/* The IV sits right behind the crypto op; rte_ipsec writes it there. */
#define SP_IV_OFFSET (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))

struct sp_sa *
sp_sa_create(const struct sp_sa_params *p, struct rte_mempool *sess_pool,
	char *err, size_t errlen)
{
	struct rte_crypto_sym_xform xf;
	struct rte_ipsec_sa_prm prm;
	struct rte_ipv4_hdr oh;
	struct sp_sa *s;
	int sz, rc;

	if (p->key_len != 16 && p->key_len != 24 && p->key_len != 32) {
		snprintf(err, errlen, "AES-GCM key of %u bytes", p->key_len);
		return NULL;
	}
	if (p->icv_len != 8 && p->icv_len != 12 && p->icv_len != 16) {
		snprintf(err, errlen, "AES-GCM ICV of %u bytes", p->icv_len);
		return NULL;
	}

	s = rte_zmalloc("sp_sa", sizeof(*s), RTE_CACHE_LINE_SIZE);
	if (s == NULL) {
		snprintf(err, errlen, "out of memory for SA");
		return NULL;
	}
	s->cdev_id = p->cdev_id;
	s->inbound = p->inbound;
	s->encap = p->encap;
	s->spi = p->spi;
	s->reqid = p->reqid;
	s->src = p->src;
	s->dst = p->dst;
	/* RFC 4106: 8-byte IV; the ESP trailer and padding are added per packet */
	s->overhead = sizeof(struct rte_ipv4_hdr) + (p->encap ? sizeof(struct rte_udp_hdr) : 0) +
		8 + 8 + p->icv_len;

	memset(&xf, 0, sizeof(xf));
	xf.type = RTE_CRYPTO_SYM_XFORM_AEAD;
	xf.aead.op = p->inbound ? RTE_CRYPTO_AEAD_OP_DECRYPT : RTE_CRYPTO_AEAD_OP_ENCRYPT;
	xf.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
	xf.aead.key.data = p->key;
	xf.aead.key.length = p->key_len;
	xf.aead.iv.offset = SP_IV_OFFSET;
	xf.aead.iv.length = 12;
	xf.aead.digest_length = p->icv_len;
	/* RFC 4106 §5: SPI + 32-bit SQN, or SPI + 64-bit ESN */
	xf.aead.aad_length = p->esn ? 12 : 8;

	memset(&prm, 0, sizeof(prm));
	prm.userdata = (uintptr_t)s;
	prm.ipsec_xform.spi = p->spi;
	memcpy(&prm.ipsec_xform.salt, &p->salt, sizeof(p->salt));
	prm.ipsec_xform.options.esn = p->esn ? 1 : 0;
	prm.ipsec_xform.direction = p->inbound ? RTE_SECURITY_IPSEC_SA_DIR_INGRESS :
		RTE_SECURITY_IPSEC_SA_DIR_EGRESS;
	prm.ipsec_xform.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
	prm.ipsec_xform.mode = RTE_SECURITY_IPSEC_SA_MODE_TUNNEL;
	prm.ipsec_xform.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV4;
	memcpy(&prm.ipsec_xform.tunnel.ipv4.src_ip, &p->src, 4);
	memcpy(&prm.ipsec_xform.tunnel.ipv4.dst_ip, &p->dst, 4);
	prm.ipsec_xform.replay_win_sz = p->replay_window;
	/* outbound: where the sequence numbers start (after a restart of
	 * swanpathd they continue above every number already used: with
	 * AES-GCM the sequence number is the IV) */
	prm.ipsec_xform.esn.value = p->seq_start;
	prm.crypto_xform = &xf;
	prm.tun.next_proto = IPPROTO_IPIP;

	if (!p->inbound) {
		/*
		 * Outbound: the library prepends this template (and a UDP
		 * header when encapsulating) and fills in length and id.
		 * Inbound ESP-in-UDP is set up without udp_encap: DPDK 22.11
		 * fails every inbound NAT-T decrypt otherwise; the loop skips
		 * the UDP header through l3_len instead.
		 */
		prm.ipsec_xform.options.udp_encap = p->encap ? 1 : 0;
		prm.ipsec_xform.udp.sport = p->sport;
		prm.ipsec_xform.udp.dport = p->dport;
		memset(&oh, 0, sizeof(oh));
		oh.version_ihl = RTE_IPV4_VHL_DEF;
		oh.time_to_live = 64;
		oh.next_proto_id = p->encap ? IPPROTO_UDP : IPPROTO_ESP;
		oh.src_addr = p->src;
		oh.dst_addr = p->dst;
		prm.tun.hdr = &oh;
		prm.tun.hdr_len = sizeof(oh);
		prm.tun.hdr_l3_off = 0;
	}

	sz = rte_ipsec_sa_size(&prm);
	if (sz < 0) {
		snprintf(err, errlen, "rte_ipsec_sa_size: %s", strerror(-sz));
		goto fail;
	}
	s->sa = rte_zmalloc("sp_ipsec_sa", sz, RTE_CACHE_LINE_SIZE);
	if (s->sa == NULL) {
		snprintf(err, errlen, "out of memory for rte_ipsec SA");
		goto fail;
	}
	rc = rte_ipsec_sa_init(s->sa, &prm, sz);
	if (rc < 0) {
		snprintf(err, errlen, "rte_ipsec_sa_init: %s", strerror(-rc));
		goto fail;
	}

	s->cses = rte_cryptodev_sym_session_create(p->cdev_id, &xf, sess_pool);
	if (s->cses == NULL) {
		snprintf(err, errlen, "crypto session on device %u: %s", p->cdev_id,
			strerror(rte_errno));
		goto fail;
	}

	s->ss.sa = s->sa;
	s->ss.type = RTE_SECURITY_ACTION_TYPE_NONE;
	s->ss.crypto.ses = s->cses;
	s->ss.crypto.dev_id = p->cdev_id;
	rc = rte_ipsec_session_prepare(&s->ss);
	if (rc != 0) {
		snprintf(err, errlen, "rte_ipsec_session_prepare: %s", strerror(-rc));
		goto fail;
	}
	return s;

fail:
	sp_sa_free(s);
	return NULL;
}

void
sp_sa_free(struct sp_sa *s)
{
	if (s == NULL)
		return;
	if (s->cses != NULL)
		rte_cryptodev_sym_session_free(s->cdev_id, s->cses);
	if (s->sa != NULL) {
		rte_ipsec_sa_fini(s->sa);
		rte_free(s->sa);
	}
	/* nothing secret is left in s itself, but be thorough */
	memset(s, 0, sizeof(*s));
	rte_free(s);
}
