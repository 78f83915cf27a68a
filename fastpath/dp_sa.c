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

/* The crypto transforms of an SA: one AEAD or GMAC xform, or cipher and
 * integrity chained in the order rte_ipsec wants (outbound cipher then
 * auth, inbound auth then cipher). */
struct sp_xforms {
	struct rte_crypto_sym_xform cipher, auth, aead;
	struct rte_crypto_sym_xform *first;
};

static const enum rte_crypto_auth_algorithm hmac_algo[] = {
	[SP_AUTH_HMAC_SHA1] = RTE_CRYPTO_AUTH_SHA1_HMAC,
	[SP_AUTH_HMAC_SHA256] = RTE_CRYPTO_AUTH_SHA256_HMAC,
	[SP_AUTH_HMAC_SHA384] = RTE_CRYPTO_AUTH_SHA384_HMAC,
	[SP_AUTH_HMAC_SHA512] = RTE_CRYPTO_AUTH_SHA512_HMAC,
};

static int
build_xforms(const struct sp_sa_params *p, struct sp_xforms *x, char *err, size_t errlen)
{
	memset(x, 0, sizeof(*x));
	switch (p->enc) {
	case SP_ENC_AES_GCM:
	case SP_ENC_CHACHA20_POLY1305:
		x->aead.type = RTE_CRYPTO_SYM_XFORM_AEAD;
		x->aead.aead.op = p->inbound ? RTE_CRYPTO_AEAD_OP_DECRYPT : RTE_CRYPTO_AEAD_OP_ENCRYPT;
		x->aead.aead.algo = p->enc == SP_ENC_AES_GCM ? RTE_CRYPTO_AEAD_AES_GCM :
			RTE_CRYPTO_AEAD_CHACHA20_POLY1305;
		x->aead.aead.key.data = p->key;
		x->aead.aead.key.length = p->key_len;
		x->aead.aead.iv.offset = SP_IV_OFFSET;
		x->aead.aead.iv.length = 12;	/* salt + 8-byte IV */
		x->aead.aead.digest_length = p->icv_len;
		/* SPI + 32-bit SQN, or SPI + 64-bit ESN */
		x->aead.aead.aad_length = p->esn ? 12 : 8;
		x->first = &x->aead;
		return 0;
	case SP_ENC_AES_GMAC:
		x->auth.type = RTE_CRYPTO_SYM_XFORM_AUTH;
		x->auth.auth.op = p->inbound ? RTE_CRYPTO_AUTH_OP_VERIFY : RTE_CRYPTO_AUTH_OP_GENERATE;
		x->auth.auth.algo = RTE_CRYPTO_AUTH_AES_GMAC;
		x->auth.auth.key.data = p->key;
		x->auth.auth.key.length = p->key_len;
		x->auth.auth.iv.offset = SP_IV_OFFSET;
		x->auth.auth.iv.length = 12;
		x->auth.auth.digest_length = p->icv_len;
		x->first = &x->auth;
		return 0;
	case SP_ENC_AES_CBC:
	case SP_ENC_AES_CTR:
	case SP_ENC_NULL:
		break;
	default:
		snprintf(err, errlen, "unknown cipher %u", p->enc);
		return -EINVAL;
	}
	if (p->auth == SP_AUTH_NONE || p->auth >= RTE_DIM(hmac_algo)) {
		snprintf(err, errlen, "a cipher without integrity is not allowed");
		return -EINVAL;
	}
	x->cipher.type = RTE_CRYPTO_SYM_XFORM_CIPHER;
	x->cipher.cipher.op = p->inbound ? RTE_CRYPTO_CIPHER_OP_DECRYPT : RTE_CRYPTO_CIPHER_OP_ENCRYPT;
	x->cipher.cipher.algo = p->enc == SP_ENC_AES_CBC ? RTE_CRYPTO_CIPHER_AES_CBC :
		p->enc == SP_ENC_AES_CTR ? RTE_CRYPTO_CIPHER_AES_CTR : RTE_CRYPTO_CIPHER_NULL;
	x->cipher.cipher.key.data = p->key;
	x->cipher.cipher.key.length = p->key_len;
	x->cipher.cipher.iv.offset = SP_IV_OFFSET;
	/* CBC: the IV; CTR: the RFC 3686 counter block (nonce|IV|counter) */
	x->cipher.cipher.iv.length = p->enc == SP_ENC_NULL ? 0 : 16;
	x->auth.type = RTE_CRYPTO_SYM_XFORM_AUTH;
	x->auth.auth.op = p->inbound ? RTE_CRYPTO_AUTH_OP_VERIFY : RTE_CRYPTO_AUTH_OP_GENERATE;
	x->auth.auth.algo = hmac_algo[p->auth];
	x->auth.auth.key.data = p->auth_key;
	x->auth.auth.key.length = p->auth_key_len;
	x->auth.auth.digest_length = p->icv_len;	/* truncated HMAC */
	if (p->inbound) {
		x->auth.next = &x->cipher;
		x->first = &x->auth;
	} else {
		x->cipher.next = &x->auth;
		x->first = &x->cipher;
	}
	return 0;
}

/* Does crypto device dev support every transform of the chain? */
static int
cdev_supports(uint8_t dev, const struct rte_crypto_sym_xform *xf)
{
	for (; xf != NULL; xf = xf->next) {
		struct rte_cryptodev_sym_capability_idx idx = { .type = xf->type };
		const struct rte_cryptodev_symmetric_capability *cap;

		switch (xf->type) {
		case RTE_CRYPTO_SYM_XFORM_AEAD:
			idx.algo.aead = xf->aead.algo;
			cap = rte_cryptodev_sym_capability_get(dev, &idx);
			if (cap == NULL || rte_cryptodev_sym_capability_check_aead(cap,
					xf->aead.key.length, xf->aead.digest_length,
					xf->aead.aad_length, xf->aead.iv.length) != 0)
				return 0;
			break;
		case RTE_CRYPTO_SYM_XFORM_AUTH:
			idx.algo.auth = xf->auth.algo;
			cap = rte_cryptodev_sym_capability_get(dev, &idx);
			if (cap == NULL || rte_cryptodev_sym_capability_check_auth(cap,
					xf->auth.key.length, xf->auth.digest_length,
					xf->auth.iv.length) != 0)
				return 0;
			break;
		case RTE_CRYPTO_SYM_XFORM_CIPHER:
			idx.algo.cipher = xf->cipher.algo;
			cap = rte_cryptodev_sym_capability_get(dev, &idx);
			if (cap == NULL || rte_cryptodev_sym_capability_check_cipher(cap,
					xf->cipher.key.length, xf->cipher.iv.length) != 0)
				return 0;
			break;
		default:
			return 0;
		}
	}
	return 1;
}

/*
 * Create an SA. With from != NULL the new SA takes over from's crypto
 * session (and device) instead of creating one: an SA that moves to other
 * addresses or ports (update_sa: MOBIKE, NAT remapping) keeps its keys
 * without them crossing into C again. from must be unpublished and freed
 * with sp_sa_free afterwards (its session is gone to the new SA).
 */
static struct sp_sa *
sa_create(const struct sp_sa_params *p, struct sp_sa *from, struct rte_mempool *sess_pool,
	char *err, size_t errlen)
{
	struct rte_ipsec_sa_prm prm;
	struct rte_ipv4_hdr oh;
	struct rte_ipv6_hdr oh6;
	struct rte_cryptodev_info info;
	struct sp_xforms x;
	struct sp_sa *s;
	int sz, rc, i, dev = -1;

	if (build_xforms(p, &x, err, errlen) != 0)
		return NULL;
	if (from != NULL)
		dev = from->cdev_id;
	for (i = 0; i < p->n_cdevs && dev < 0; i++)
		if (cdev_supports(p->cdevs[i], x.first))
			dev = p->cdevs[i];
	if (dev < 0) {
		snprintf(err, errlen, "no crypto device supports this suite");
		return NULL;
	}

	s = rte_zmalloc("sp_sa", sizeof(*s), RTE_CACHE_LINE_SIZE);
	if (s == NULL) {
		snprintf(err, errlen, "out of memory for SA");
		return NULL;
	}
	s->cdev_id = dev;
	s->inbound = !p->inbound ? 0 : p->ifc != 0 ? SP_SA_IN_IFC : SP_SA_IN;
	s->ifc = p->ifc;
	s->encap = p->encap;
	s->family = p->family;
	s->transport = p->transport;
	s->icv_len = p->icv_len;
	s->sqh_len = p->esn ? 4 : 0;	/* as rte_ipsec keeps it (sa.c) */
	s->spi = p->spi;
	s->reqid = p->reqid;
	s->hard_packets = p->hard_packets;
	s->hard_bytes = p->hard_bytes;
	s->limited = p->hard_packets != 0 || p->hard_bytes != 0;
	memcpy(s->src, p->src, 16);
	memcpy(s->peer, p->inbound ? p->src : p->dst, 16);
	if (p->inbound)
		memcpy(s->src, p->dst, 16);	/* our end */
	s->peer_port = p->inbound ? p->sport : p->dport;
	/* the ESP header, IV and ICV; a tunnel adds the outer header (and
	 * UDP); padding and trailer are added per packet (see the MTU check
	 * in protect, dp_esp_out.h) */
	s->esp_fixed = 8 + p->icv_len + (p->enc == SP_ENC_AES_CBC ? 16 : p->enc == SP_ENC_NULL ? 0 : 8);
	s->outer_len = (p->transport ? 0 : p->family == 6 ? sizeof(struct rte_ipv6_hdr) :
		sizeof(struct rte_ipv4_hdr)) + (p->encap ? sizeof(struct rte_udp_hdr) : 0);
	s->overhead = s->outer_len + s->esp_fixed;
	s->mtu = SP_MTU_NONE;
	s->pad_align = p->enc == SP_ENC_AES_CBC ? 16 : 4;

	memset(&prm, 0, sizeof(prm));
	prm.userdata = (uintptr_t)s;
	/* several workers: sequence numbers and replay windows MT-safe */
	prm.flags = p->multi_worker ? RTE_IPSEC_SAFLAG_SQN_ATOM : 0;
	prm.ipsec_xform.spi = p->spi;
	/* a moved SA keeps its salt (key material, not handed over again) */
	s->salt = from != NULL ? from->salt : p->salt;
	memcpy(&prm.ipsec_xform.salt, &s->salt, sizeof(s->salt));
	prm.ipsec_xform.options.esn = p->esn ? 1 : 0;
	prm.ipsec_xform.direction = p->inbound ? RTE_SECURITY_IPSEC_SA_DIR_INGRESS :
		RTE_SECURITY_IPSEC_SA_DIR_EGRESS;
	prm.ipsec_xform.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
	prm.ipsec_xform.replay_win_sz = p->replay_window;
	/* outbound: where the sequence numbers start (after a restart of
	 * swanpathd they continue above every number already used: with
	 * AES-GCM the sequence number is the IV) */
	prm.ipsec_xform.esn.value = p->seq_start;
	if (p->inbound) {
		/*
		 * Inbound, esn.value is the replay window's top (lib/ipsec
		 * 22.11 fill_sa_replay; the window bitmap starts empty) and
		 * esn_inb_check_sqn refuses a number s only when s + W < top
		 * (W the window size, at least 64 with ESN): a top of
		 * H + W + 1 refuses every number up to seq_start H, the highest
		 * one received before a restart, and lets H + 1 on pass.
		 */
		uint64_t w = p->esn ? RTE_MAX(p->replay_window, 64u) : p->replay_window;

		prm.ipsec_xform.esn.value = p->seq_start != 0 && w != 0 ? p->seq_start + w + 1 : 0;
		s->ctr.seq_max = p->seq_start;
		for (i = 0; i < SP_MAX_WORKERS; i++)
			s->st[i].c.seq_max = p->seq_start;
	}
	prm.crypto_xform = x.first;

	if (p->inbound || p->transport) {
		/*
		 * Inbound SAs are all transport mode to rte_ipsec (see dp.h):
		 * it checks, removes the ESP header and trailer and leaves the
		 * outer header, which the loop takes off for a tunnel SA after
		 * reading the next header. ESP-in-UDP is set up without
		 * udp_encap (DPDK 22.11 fails every inbound NAT-T decrypt
		 * otherwise): the UDP header is part of l3_len.
		 */
		prm.ipsec_xform.mode = RTE_SECURITY_IPSEC_SA_MODE_TRANSPORT;
		prm.trs.proto = p->family == 6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
		/*
		 * An inbound tunnel SA gets its packets without the outer
		 * headers (l2_len = l3_len = 0, nothing to move): rte_ipsec's
		 * header update then must not write into the inner packet.
		 * As an IPv6 SA it looks for an IPv6 header of l3_len (0)
		 * bytes, finds none and leaves the packet alone; as an IPv4
		 * SA it would set the inner header's protocol and length.
		 */
		if (p->inbound && !p->transport)
			prm.trs.proto = IPPROTO_IPV6;
	} else {
		/*
		 * Outbound tunnel: the library prepends this template (and a
		 * UDP header when encapsulating) and fills in the lengths.
		 */
		prm.ipsec_xform.mode = RTE_SECURITY_IPSEC_SA_MODE_TUNNEL;
		prm.ipsec_xform.options.udp_encap = p->encap ? 1 : 0;
		prm.ipsec_xform.udp.sport = p->sport;
		prm.ipsec_xform.udp.dport = p->dport;
		prm.tun.next_proto = IPPROTO_IPIP;
		if (p->family == 6) {
			memset(&oh6, 0, sizeof(oh6));
			oh6.vtc_flow = rte_cpu_to_be_32(6u << 28);
			oh6.hop_limits = 64;
			oh6.proto = p->encap ? IPPROTO_UDP : IPPROTO_ESP;
			memcpy(oh6.src_addr, p->src, 16);
			memcpy(oh6.dst_addr, p->dst, 16);
			prm.ipsec_xform.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV6;
			prm.tun.hdr = &oh6;
			prm.tun.hdr_len = sizeof(oh6);
		} else {
			memset(&oh, 0, sizeof(oh));
			oh.version_ihl = RTE_IPV4_VHL_DEF;
			oh.time_to_live = 64;
			oh.next_proto_id = p->encap ? IPPROTO_UDP : IPPROTO_ESP;
			memcpy(&oh.src_addr, p->src, 4);
			memcpy(&oh.dst_addr, p->dst, 4);
			/* rte_ipsec fills in total_length and packet_id only
			 * (no ECN or DSCP copying is asked for), so the loop
			 * finishes the checksum from this sum */
			s->hdr_sum = __rte_raw_cksum(&oh, sizeof(oh), 0);
			prm.ipsec_xform.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV4;
			prm.tun.hdr = &oh;
			prm.tun.hdr_len = sizeof(oh);
		}
		prm.tun.hdr_l3_off = 0;
	}
	if (p->transport && p->encap) {
		/* rte_ipsec 22.11 does not insert the UDP header in transport
		 * mode; the control plane refuses this combination first */
		snprintf(err, errlen, "transport mode with UDP encapsulation is not supported");
		goto fail;
	}

	sz = rte_ipsec_sa_size(&prm);
	if (sz < 0) {
		snprintf(err, errlen, "rte_ipsec_sa_size: %s", strerror(-sz));
		goto fail;
	}
	/* ss_async.sa owns it (ss.sa is the same, once set) */
	s->ss_async.sa = rte_zmalloc("sp_ipsec_sa", sz, RTE_CACHE_LINE_SIZE);
	if (s->ss_async.sa == NULL) {
		snprintf(err, errlen, "out of memory for rte_ipsec SA");
		goto fail;
	}
	rc = rte_ipsec_sa_init(s->ss_async.sa, &prm, sz);
	if (rc < 0) {
		snprintf(err, errlen, "rte_ipsec_sa_init: %s", strerror(-rc));
		goto fail;
	}

	if (from != NULL) {
		s->cses = from->cses;
		from->cses = NULL;
	} else {
		s->cses = rte_cryptodev_sym_session_create(dev, x.first, sess_pool);
	}
	if (s->cses == NULL) {
		snprintf(err, errlen, "crypto session on device %d: %s", dev, strerror(rte_errno));
		goto fail;
	}

	/*
	 * Synchronous crypto on the worker's own core where the PMD offers
	 * it (ipsec-mb: aesni_gcm, aesni_mb): no crypto ops, no queue pair
	 * round trip. Lookaside (enqueue/dequeue) otherwise, and for the
	 * IPv6 packets of an outbound tunnel SA (see ss_async).
	 */
	rte_cryptodev_info_get(dev, &info);
	s->ss_async.type = RTE_SECURITY_ACTION_TYPE_NONE;
	s->ss_async.crypto.ses = s->cses;
	s->ss_async.crypto.dev_id = dev;
	rc = rte_ipsec_session_prepare(&s->ss_async);
	if (rc != 0) {
		snprintf(err, errlen, "rte_ipsec_session_prepare: %s", strerror(-rc));
		goto fail;
	}
	s->ss = s->ss_async;
	/* (AES-GMAC through ipsec-mb's CPU crypto fails every ICV in 22.11:
	 * that suite stays lookaside) */
	if (p->sync_crypto && p->enc != SP_ENC_AES_GMAC &&
			(info.feature_flags & RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO)) {
		s->ss.type = RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO;
		if (rte_ipsec_session_prepare(&s->ss) == 0) {
			s->cpu = 1;
		} else {
			s->ss = s->ss_async;
		}
	}
	return s;

fail:
	if (from != NULL && s->cses != NULL) {
		/* give the session back: the old SA stays in service */
		from->cses = s->cses;
		s->cses = NULL;
		rte_ipsec_session_prepare(&from->ss);
	}
	sp_sa_free(s);
	return NULL;
}

struct sp_sa *
sp_sa_create(const struct sp_sa_params *p, struct rte_mempool *sess_pool,
	char *err, size_t errlen)
{
	return sa_create(p, NULL, sess_pool, err, errlen);
}

struct sp_sa *
sp_sa_move(const struct sp_sa_params *p, struct sp_sa *from, char *err, size_t errlen)
{
	return sa_create(p, from, NULL, err, errlen);
}

int
sp_sa_cdev(const struct sp_sa *sa)
{
	return sa->cdev_id;
}

void
sp_sa_free(struct sp_sa *s)
{
	if (s == NULL)
		return;
	if (s->cses != NULL)
		rte_cryptodev_sym_session_free(s->cdev_id, s->cses);
	if (s->ss_async.sa != NULL) {
		rte_ipsec_sa_fini(s->ss_async.sa);
		rte_free(s->ss_async.sa);
	}
	/* nothing secret is left in s itself, but be thorough */
	memset(s, 0, sizeof(*s));
	rte_free(s);
}
