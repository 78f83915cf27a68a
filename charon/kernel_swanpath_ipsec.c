/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

#include "kernel_swanpath_ipsec.h"
#include "kernel_swanpath_conn.h"
#include "kernel_swanpath_msg.h"

#include <time.h>

#include <daemon.h>
#include <collections/linked_list.h>
#include <threading/thread.h>
#include <threading/mutex.h>
#include <threading/condvar.h>

/**
 * Default socket of swanpathd
 */
#define DEFAULT_SOCKET "/run/swanpath/charon.sock"

/**
 * Reconnect interval while swanpathd is unreachable
 */
#define RECONNECT_MS 1000

typedef struct private_kernel_swanpath_ipsec_t private_kernel_swanpath_ipsec_t;

/**
 * Private data of a kernel_swanpath_ipsec_t object.
 */
struct private_kernel_swanpath_ipsec_t {

	/**
	 * Public interface.
	 */
	kernel_swanpath_ipsec_t public;

	/**
	 * Connection to swanpathd
	 */
	kernel_swanpath_conn_t *conn;

	/**
	 * Serialises requests and guards sas and policies (recursive: the
	 * replay runs from within a request that (re)connects)
	 */
	mutex_t *mutex;

	/**
	 * Installed SAs, sa_entry_t (keys included, to replay them)
	 */
	linked_list_t *sas;

	/**
	 * Installed policies, policy_entry_t, one per add_policy() call
	 */
	linked_list_t *policies;

	/**
	 * Reconnect thread, its wakeup and shutdown flag
	 */
	thread_t *reconnector;
	mutex_t *tick_mutex;
	condvar_t *tick;
	bool shutdown;
};

/**
 * An installed SA
 */
typedef struct {
	host_t *src;
	host_t *dst;
	uint32_t spi;
	uint8_t proto;
	mark_t mark;
	uint32_t if_id;
	uint32_t reqid;
	ipsec_mode_t mode;
	bool inbound;
	bool encap;
	bool esn;
	uint16_t enc_alg;
	chunk_t enc_key;
	uint16_t int_alg;
	chunk_t int_key;
	uint32_t replay_window;
	lifetime_cfg_t lifetime;
} sa_entry_t;

/**
 * An installed policy (one reference of it)
 */
typedef struct {
	traffic_selector_t *src_ts;
	traffic_selector_t *dst_ts;
	policy_dir_t dir;
	mark_t mark;
	uint32_t if_id;
	policy_type_t type;
	uint32_t priority;
	uint32_t reqid;
	ipsec_mode_t mode;
	host_t *src;
	host_t *dst;
	uint32_t spi;
} policy_entry_t;

static void sa_entry_destroy(sa_entry_t *sa)
{
	DESTROY_IF(sa->src);
	DESTROY_IF(sa->dst);
	chunk_clear(&sa->enc_key);
	chunk_clear(&sa->int_key);
	free(sa);
}

static void policy_entry_destroy(policy_entry_t *p)
{
	DESTROY_IF(p->src_ts);
	DESTROY_IF(p->dst_ts);
	DESTROY_IF(p->src);
	DESTROY_IF(p->dst);
	free(p);
}

/**
 * Does an SA match an SA id
 */
static bool sa_matches(sa_entry_t *sa, kernel_ipsec_sa_id_t *id)
{
	return sa->spi == id->spi && sa->proto == id->proto &&
		   sa->mark.value == id->mark.value && sa->if_id == id->if_id &&
		   sa->dst->ip_equals(sa->dst, id->dst);
}

/**
 * Does a policy entry have a policy id
 */
static bool policy_matches(policy_entry_t *p, kernel_ipsec_policy_id_t *id)
{
	return p->dir == id->dir && p->mark.value == id->mark.value &&
		   p->mark.mask == id->mark.mask && p->if_id == id->if_id &&
		   p->src_ts->equals(p->src_ts, id->src_ts) &&
		   p->dst_ts->equals(p->dst_ts, id->dst_ts);
}

/**
 * Wire mode of a strongSwan mode, -1 if unsupported
 */
static int wire_mode(ipsec_mode_t mode)
{
	switch (mode)
	{
		case MODE_TRANSPORT:
			return 0;
		case MODE_TUNNEL:
			return 1;
		default:
			return -1;
	}
}

/**
 * ICV length implied by an AEAD algorithm, 0 to let swanpathd derive it
 */
static uint8_t icv_len(uint16_t enc_alg)
{
	switch (enc_alg)
	{
		case ENCR_AES_GCM_ICV8:
		case ENCR_AES_CCM_ICV8:
			return 8;
		case ENCR_AES_GCM_ICV12:
		case ENCR_AES_CCM_ICV12:
			return 12;
		case ENCR_AES_GCM_ICV16:
		case ENCR_AES_CCM_ICV16:
		case ENCR_NULL_AUTH_AES_GMAC:
		case ENCR_CHACHA20_POLY1305:
			return 16;
		default:
			return 0;
	}
}

/**
 * Add the attributes identifying an SA
 */
static void add_sa_id(bio_writer_t *msg, host_t *src, host_t *dst,
					  uint32_t spi, uint8_t proto, mark_t mark, uint32_t if_id)
{
	swanpath_msg_add_host(msg, SWANPATH_ATTR_SRC, src);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_DST, dst);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_SPI, ntohl(spi));
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_PROTO, proto);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_MARK, mark.value);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_MARK_MASK, mark.mask);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_IF_ID, if_id);
}

/**
 * Build ADD_SA for an SA entry
 */
static bio_writer_t *build_add_sa(sa_entry_t *sa)
{
	bio_writer_t *msg;

	msg = swanpath_msg_create(SWANPATH_ADD_SA);
	add_sa_id(msg, sa->src, sa->dst, sa->spi, sa->proto, sa->mark, sa->if_id);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_MODE, wire_mode(sa->mode));
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_REQID, sa->reqid);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_INBOUND, sa->inbound);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_ENCAP, sa->encap);
	if (sa->encap)
	{	/* the real NAT-T ports, which need not be 4500 */
		swanpath_msg_add_u16(msg, SWANPATH_ATTR_SRC_PORT,
							 sa->src->get_port(sa->src));
		swanpath_msg_add_u16(msg, SWANPATH_ATTR_DST_PORT,
							 sa->dst->get_port(sa->dst));
	}
	swanpath_msg_add_u16(msg, SWANPATH_ATTR_ENC_ALG, sa->enc_alg);
	swanpath_msg_add_chunk(msg, SWANPATH_ATTR_ENC_KEY, sa->enc_key);
	/* AEAD SAs come with AUTH_UNDEFINED (1024, strongSwan-private):
	 * on the wire that is transform ID 0, "none" */
	swanpath_msg_add_u16(msg, SWANPATH_ATTR_INT_ALG,
						 sa->int_alg == AUTH_UNDEFINED ? 0 : sa->int_alg);
	if (sa->int_key.len)
	{
		swanpath_msg_add_chunk(msg, SWANPATH_ATTR_INT_KEY, sa->int_key);
	}
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_ICV_LEN, icv_len(sa->enc_alg));
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_REPLAY_WINDOW, sa->replay_window);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_ESN, sa->esn);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_SOFT_BYTES, sa->lifetime.bytes.rekey);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_SOFT_PACKETS,
						 sa->lifetime.packets.rekey);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_SOFT_TIME, sa->lifetime.time.rekey);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_HARD_BYTES, sa->lifetime.bytes.life);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_HARD_PACKETS,
						 sa->lifetime.packets.life);
	swanpath_msg_add_u64(msg, SWANPATH_ATTR_HARD_TIME, sa->lifetime.time.life);
	return msg;
}

/**
 * Build a policy message for a policy entry
 */
static bio_writer_t *build_policy(swanpath_msg_type_t type, policy_entry_t *p)
{
	bio_writer_t *msg;
	uint8_t action;

	msg = swanpath_msg_create(type);
	swanpath_msg_add_ts(msg, SWANPATH_ATTR_SEL_SRC, SWANPATH_ATTR_SEL_SPORT,
						p->src_ts);
	swanpath_msg_add_ts(msg, SWANPATH_ATTR_SEL_DST, SWANPATH_ATTR_SEL_DPORT,
						p->dst_ts);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_SEL_PROTO,
						p->src_ts->get_protocol(p->src_ts));
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_DIR, p->dir);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_MARK, p->mark.value);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_MARK_MASK, p->mark.mask);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_IF_ID, p->if_id);
	switch (p->type)
	{
		case POLICY_PASS:
			action = 1;
			break;
		case POLICY_DROP:
			action = 2;
			break;
		default:
			action = 0;
			break;
	}
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_ACTION, action);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_PRIORITY, p->priority);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_REQID, p->reqid);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_MODE,
						wire_mode(p->mode) < 0 ? 0 : wire_mode(p->mode));
	swanpath_msg_add_host(msg, SWANPATH_ATTR_TMPL_SRC, p->src);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_TMPL_DST, p->dst);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_SPI, ntohl(p->spi));
	return msg;
}

/**
 * Priority of a policy: lower wins, as in XFRM. The class comes first,
 * then more specific selectors (longer prefixes, a protocol, ports).
 */
static uint32_t policy_priority(kernel_ipsec_policy_id_t *id,
								kernel_ipsec_manage_policy_t *data)
{
	traffic_selector_t *ts[] = { id->src_ts, id->dst_ts };
	uint32_t priority, specific = 0;
	host_t *net;
	uint8_t bits;
	int i;

	if (data->manual_prio)
	{
		return data->manual_prio;
	}
	switch (data->prio)
	{
		case POLICY_PRIORITY_PASS:
			priority = 100000;
			break;
		case POLICY_PRIORITY_ROUTED:
			priority = 300000;
			break;
		case POLICY_PRIORITY_FALLBACK:
			priority = 400000;
			break;
		case POLICY_PRIORITY_DEFAULT:
		default:
			priority = 200000;
			break;
	}
	for (i = 0; i < countof(ts); i++)
	{
		ts[i]->to_subnet(ts[i], &net, &bits);
		net->destroy(net);
		specific += bits * 256;
		if (ts[i]->get_from_port(ts[i]) != 0 ||
			ts[i]->get_to_port(ts[i]) != 0xffff)
		{
			specific += 64;
		}
	}
	if (id->src_ts->get_protocol(id->src_ts))
	{
		specific += 128;
	}
	return priority - specific;
}

/**
 * Replay all SAs, then all policies, on a fresh connection, and say when
 * done: swanpathd forwards nothing but IKE until then (it fails closed).
 * An SA or policy that swanpathd refuses does not stop the replay: the
 * policies must come back even if one of their SAs does not (a policy
 * without its SA drops, as on the kernel). Only a lost connection does.
 * Called by the connection with this->mutex held (via a request/reconnect).
 */
static bool replay(private_kernel_swanpath_ipsec_t *this,
				   kernel_swanpath_conn_t *conn)
{
	enumerator_t *enumerator;
	sa_entry_t *sa;
	policy_entry_t *p;
	bio_writer_t *msg;
	status_t status;
	int sas = 0, policies = 0, failed = 0;

	this->mutex->lock(this->mutex);
	enumerator = this->sas->create_enumerator(this->sas);
	while (enumerator->enumerate(enumerator, &sa))
	{
		msg = build_add_sa(sa);
		status = conn->request(conn, msg, NULL);
		swanpath_msg_destroy(msg);
		if (status != SUCCESS && status != ALREADY_DONE)
		{
			DBG1(DBG_KNL, "kernel-swanpath: replaying SA with SPI %.8x "
				 "failed", ntohl(sa->spi));
			failed++;
		}
		sas++;
	}
	enumerator->destroy(enumerator);
	enumerator = this->policies->create_enumerator(this->policies);
	while (enumerator->enumerate(enumerator, &p))
	{
		msg = build_policy(SWANPATH_ADD_POLICY, p);
		status = conn->request(conn, msg, NULL);
		swanpath_msg_destroy(msg);
		if (status != SUCCESS && status != ALREADY_DONE)
		{
			failed++;
		}
		policies++;
	}
	enumerator->destroy(enumerator);
	this->mutex->unlock(this->mutex);

	msg = swanpath_msg_create(SWANPATH_REPLAY_DONE);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_REPLAYED, sas + policies);
	swanpath_msg_add_u32(msg, SWANPATH_ATTR_REPLAY_FAILED, failed);
	status = conn->request(conn, msg, NULL);
	swanpath_msg_destroy(msg);
	/* a swanpathd older than REPLAY_DONE answers NOT_SUPPORTED */
	if (status != SUCCESS && status != NOT_SUPPORTED)
	{
		return FALSE;
	}
	if (sas || policies)
	{
		DBG1(DBG_KNL, "kernel-swanpath: replayed %d SA%s and %d polic%s to "
			 "swanpathd, %d refused", sas, sas == 1 ? "" : "s", policies,
			 policies == 1 ? "y" : "ies", failed);
	}
	return TRUE;
}

/**
 * Raise an event from swanpathd in charon (reader thread)
 */
static void event(private_kernel_swanpath_ipsec_t *this, uint8_t type,
				  chunk_t payload)
{
	kernel_acquire_data_t acquire = {};
	host_t *dst, *src, *remote;
	uint32_t spi = 0, reqid = 0;
	uint16_t port = 0;
	uint8_t proto = IPPROTO_ESP, hard = 0;

	swanpath_msg_get_u32(payload, SWANPATH_ATTR_SPI, &spi);
	swanpath_msg_get_u8(payload, SWANPATH_ATTR_PROTO, &proto);
	dst = swanpath_msg_get_host(payload, SWANPATH_ATTR_DST, 0);
	switch (type)
	{
		case SWANPATH_EXPIRE:
			swanpath_msg_get_u8(payload, SWANPATH_ATTR_HARD, &hard);
			if (!dst || !spi)
			{
				DBG1(DBG_KNL, "kernel-swanpath: EXPIRE without SA id ignored");
				break;
			}
			DBG1(DBG_KNL, "kernel-swanpath: %s expire for SA with SPI %.8x",
				 hard ? "hard" : "soft", spi);
			charon->kernel->expire(charon->kernel, proto, htonl(spi), dst,
								   hard != 0);
			break;
		case SWANPATH_ACQUIRE:
			swanpath_msg_get_u32(payload, SWANPATH_ATTR_REQID, &reqid);
			src = swanpath_msg_get_host(payload, SWANPATH_ATTR_SRC, 0);
			if (src)
			{
				acquire.src = traffic_selector_create_from_subnet(src,
								src->get_family(src) == AF_INET ? 32 : 128,
								0, 0, 65535);
			}
			if (dst)
			{
				acquire.dst = traffic_selector_create_from_subnet(
								dst->clone(dst),
								dst->get_family(dst) == AF_INET ? 32 : 128,
								0, 0, 65535);
			}
			DBG1(DBG_KNL, "kernel-swanpath: acquire for reqid {%u}", reqid);
			charon->kernel->acquire(charon->kernel, reqid, &acquire);
			DESTROY_IF(acquire.src);
			DESTROY_IF(acquire.dst);
			break;
		case SWANPATH_MAPPING:
			swanpath_msg_get_u16(payload, SWANPATH_ATTR_NEW_SRC_PORT, &port);
			remote = swanpath_msg_get_host(payload, SWANPATH_ATTR_NEW_SRC, port);
			if (!dst || !spi || !remote)
			{
				DBG1(DBG_KNL, "kernel-swanpath: incomplete MAPPING ignored");
				DESTROY_IF(remote);
				break;
			}
			DBG1(DBG_KNL, "kernel-swanpath: NAT mappings of ESP SA with SPI "
				 "%.8x changed to %#H", spi, remote);
			charon->kernel->mapping(charon->kernel, proto, htonl(spi), dst,
									remote);
			remote->destroy(remote);
			break;
		default:
			DBG2(DBG_KNL, "kernel-swanpath: ignoring message type %u from "
				 "swanpathd", type);
			break;
	}
	DESTROY_IF(dst);
}

/**
 * Reconnect thread: retries every second while disconnected
 */
static void *reconnect(private_kernel_swanpath_ipsec_t *this)
{
	while (TRUE)
	{
		this->tick_mutex->lock(this->tick_mutex);
		if (this->shutdown)
		{
			this->tick_mutex->unlock(this->tick_mutex);
			break;
		}
		this->tick_mutex->unlock(this->tick_mutex);

		this->mutex->lock(this->mutex);
		this->conn->ensure(this->conn, TRUE);
		this->mutex->unlock(this->mutex);

		this->tick_mutex->lock(this->tick_mutex);
		if (!this->shutdown)
		{
			this->tick->timed_wait(this->tick, this->tick_mutex, RECONNECT_MS);
		}
		this->tick_mutex->unlock(this->tick_mutex);
	}
	return NULL;
}

/**
 * Send a request with no result, serialised
 */
static status_t request(private_kernel_swanpath_ipsec_t *this,
						bio_writer_t *msg, chunk_t *result)
{
	status_t status;

	this->mutex->lock(this->mutex);
	status = this->conn->request(this->conn, msg, result);
	this->mutex->unlock(this->mutex);
	swanpath_msg_destroy(msg);
	return status;
}

METHOD(kernel_ipsec_t, get_features, kernel_feature_t,
	private_kernel_swanpath_ipsec_t *this)
{
	/* we do plain ESP and ESP-in-UDP ourselves, no TFC padding parsing yet;
	 * policies carry the outbound SA's SPI */
	return KERNEL_POLICY_SPI;
}

METHOD(kernel_ipsec_t, get_spi, status_t,
	private_kernel_swanpath_ipsec_t *this, host_t *src, host_t *dst,
	uint8_t protocol, uint32_t *spi)
{
	bio_writer_t *msg;
	chunk_t result = chunk_empty;
	uint32_t value = 0;
	status_t status;

	msg = swanpath_msg_create(SWANPATH_GET_SPI);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_SRC, src);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_DST, dst);
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_PROTO, protocol);
	status = request(this, msg, &result);
	if (status == SUCCESS &&
		(!swanpath_msg_get_u32(result, SWANPATH_ATTR_SPI, &value) || !value))
	{
		DBG1(DBG_KNL, "kernel-swanpath: swanpathd returned no SPI");
		status = FAILED;
	}
	chunk_free(&result);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to get SPI");
		return FAILED;
	}
	*spi = htonl(value);
	DBG2(DBG_KNL, "kernel-swanpath: got SPI %.8x", value);
	return SUCCESS;
}

METHOD(kernel_ipsec_t, get_cpi, status_t,
	private_kernel_swanpath_ipsec_t *this, host_t *src, host_t *dst,
	uint16_t *cpi)
{
	return NOT_SUPPORTED;
}

METHOD(kernel_ipsec_t, add_sa, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_add_sa_t *data)
{
	sa_entry_t *sa;
	status_t status;

	if (data->ipcomp != IPCOMP_NONE)
	{
		DBG1(DBG_KNL, "kernel-swanpath: IPComp is not supported");
		return NOT_SUPPORTED;
	}
	if (wire_mode(data->mode) < 0)
	{
		DBG1(DBG_KNL, "kernel-swanpath: IPsec mode %N is not supported",
			 ipsec_mode_names, data->mode);
		return NOT_SUPPORTED;
	}
	/* what the fast path cannot honour is refused, never ignored: marks
	 * and XFRM interface ids go to swanpathd, which refuses them; these
	 * the protocol does not carry */
	if (data->tfc)
	{
		DBG1(DBG_KNL, "kernel-swanpath: TFC padding is not supported");
		return NOT_SUPPORTED;
	}
	if (data->mark.value | data->mark.mask)
	{
		DBG1(DBG_KNL, "kernel-swanpath: SAs that set a mark (set_mark_in/"
			 "set_mark_out) are not supported");
		return NOT_SUPPORTED;
	}
	if (data->hw_offload == HW_OFFLOAD_YES)
	{
		DBG1(DBG_KNL, "kernel-swanpath: hardware offload is not supported");
		return NOT_SUPPORTED;
	}
	if (data->label)
	{
		DBG1(DBG_KNL, "kernel-swanpath: security labels are not supported");
		return NOT_SUPPORTED;
	}
	INIT(sa,
		.src = id->src->clone(id->src),
		.dst = id->dst->clone(id->dst),
		.spi = id->spi,
		.proto = id->proto,
		.mark = id->mark,
		.if_id = id->if_id,
		.reqid = data->reqid,
		.mode = data->mode,
		.inbound = data->inbound,
		.encap = data->encap,
		.esn = data->esn,
		.enc_alg = data->enc_alg,
		.enc_key = chunk_clone(data->enc_key),
		.int_alg = data->int_alg,
		.int_key = chunk_clone(data->int_key),
		.replay_window = data->replay_window,
		.lifetime = *data->lifetime,
	);

	DBG2(DBG_KNL, "kernel-swanpath: adding SAD entry with SPI %.8x and reqid "
		 "{%u} %#H === %#H%s", ntohl(id->spi), data->reqid, id->src, id->dst,
		 data->encap ? " (UDP encapsulated)" : "");

	this->mutex->lock(this->mutex);
	status = request(this, build_add_sa(sa), NULL);
	if (status == SUCCESS)
	{
		this->sas->insert_last(this->sas, sa);
	}
	this->mutex->unlock(this->mutex);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to add SAD entry with SPI %.8x "
			 "(reqid {%u})", ntohl(id->spi), data->reqid);
		sa_entry_destroy(sa);
		return status == ALREADY_DONE ? FAILED : status;
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, update_sa, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_update_sa_t *data)
{
	enumerator_t *enumerator;
	sa_entry_t *sa, *found = NULL;
	bio_writer_t *msg;
	status_t status;

	this->mutex->lock(this->mutex);
	enumerator = this->sas->create_enumerator(this->sas);
	while (enumerator->enumerate(enumerator, &sa))
	{
		if (sa_matches(sa, id))
		{
			found = sa;
			break;
		}
	}
	enumerator->destroy(enumerator);

	msg = swanpath_msg_create(SWANPATH_UPDATE_SA);
	add_sa_id(msg, id->src, id->dst, id->spi, id->proto, id->mark, id->if_id);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_NEW_SRC, data->new_src);
	swanpath_msg_add_host(msg, SWANPATH_ATTR_NEW_DST, data->new_dst);
	swanpath_msg_add_u16(msg, SWANPATH_ATTR_NEW_SRC_PORT,
						 data->new_src->get_port(data->new_src));
	swanpath_msg_add_u16(msg, SWANPATH_ATTR_NEW_DST_PORT,
						 data->new_dst->get_port(data->new_dst));
	swanpath_msg_add_u8(msg, SWANPATH_ATTR_NEW_ENCAP, data->new_encap);
	status = request(this, msg, NULL);
	if (status == SUCCESS && found)
	{
		found->src->destroy(found->src);
		found->dst->destroy(found->dst);
		found->src = data->new_src->clone(data->new_src);
		found->dst = data->new_dst->clone(data->new_dst);
		found->encap = data->new_encap;
		if (data->new_reqid)
		{
			found->reqid = data->new_reqid;
		}
	}
	this->mutex->unlock(this->mutex);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to update SAD entry with SPI "
			 "%.8x", ntohl(id->spi));
		return status == NOT_SUPPORTED ? NOT_SUPPORTED : FAILED;
	}
	DBG2(DBG_KNL, "kernel-swanpath: updated SAD entry with SPI %.8x to "
		 "%#H === %#H", ntohl(id->spi), data->new_src, data->new_dst);
	return SUCCESS;
}

/**
 * swanpathd reports the last use as wall clock seconds (0 = never); charon
 * wants monotonic time.
 */
static time_t monotonic_use(uint64_t used)
{
	time_t now = time(NULL);

	if (!used || used > now)
	{
		return 0;
	}
	return time_monotonic(NULL) - (now - used);
}

METHOD(kernel_ipsec_t, query_sa, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_query_sa_t *data, uint64_t *bytes, uint64_t *packets,
	time_t *use_time)
{
	bio_writer_t *msg;
	chunk_t result = chunk_empty;
	uint64_t b = 0, p = 0, used = 0;
	status_t status;

	msg = swanpath_msg_create(SWANPATH_QUERY_SA);
	add_sa_id(msg, id->src, id->dst, id->spi, id->proto, id->mark, id->if_id);
	status = request(this, msg, &result);
	if (status != SUCCESS)
	{
		chunk_free(&result);
		DBG2(DBG_KNL, "kernel-swanpath: unable to query SAD entry with SPI "
			 "%.8x", ntohl(id->spi));
		return status == NOT_FOUND ? NOT_FOUND : FAILED;
	}
	swanpath_msg_get_u64(result, SWANPATH_ATTR_BYTES, &b);
	swanpath_msg_get_u64(result, SWANPATH_ATTR_PACKETS, &p);
	swanpath_msg_get_u64(result, SWANPATH_ATTR_USE_TIME, &used);
	chunk_free(&result);
	if (bytes)
	{
		*bytes = b;
	}
	if (packets)
	{
		*packets = p;
	}
	if (use_time)
	{
		*use_time = monotonic_use(used);
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, del_sa, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_del_sa_t *data)
{
	enumerator_t *enumerator;
	sa_entry_t *sa;
	bio_writer_t *msg;
	status_t status;

	msg = swanpath_msg_create(SWANPATH_DEL_SA);
	add_sa_id(msg, id->src, id->dst, id->spi, id->proto, id->mark, id->if_id);

	this->mutex->lock(this->mutex);
	/* forget (and wipe) our copy in any case: swanpathd either deleted it or
	 * does not have it, and a replay must not resurrect it */
	enumerator = this->sas->create_enumerator(this->sas);
	while (enumerator->enumerate(enumerator, &sa))
	{
		if (sa_matches(sa, id))
		{
			this->sas->remove_at(this->sas, enumerator);
			sa_entry_destroy(sa);
			break;
		}
	}
	enumerator->destroy(enumerator);
	status = request(this, msg, NULL);
	this->mutex->unlock(this->mutex);

	if (status == NOT_FOUND)
	{
		/* swanpathd deletes an SA at its hard lifetime itself, as the
		 * kernel does; kernel-netlink's del_sa returns NOT_FOUND without
		 * logging then */
		DBG2(DBG_KNL, "kernel-swanpath: SAD entry with SPI %.8x not found",
			 ntohl(id->spi));
		return NOT_FOUND;
	}
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to delete SAD entry with SPI "
			 "%.8x", ntohl(id->spi));
		return FAILED;
	}
	DBG2(DBG_KNL, "kernel-swanpath: deleted SAD entry with SPI %.8x",
		 ntohl(id->spi));
	return SUCCESS;
}

METHOD(kernel_ipsec_t, flush_sas, status_t,
	private_kernel_swanpath_ipsec_t *this)
{
	status_t status;

	this->mutex->lock(this->mutex);
	this->sas->destroy_function(this->sas, (void*)sa_entry_destroy);
	this->sas = linked_list_create();
	status = request(this, swanpath_msg_create(SWANPATH_FLUSH_SAS), NULL);
	this->mutex->unlock(this->mutex);
	return status == SUCCESS ? SUCCESS : FAILED;
}

METHOD(kernel_ipsec_t, add_policy, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_manage_policy_t *data)
{
	policy_entry_t *p;
	status_t status;

	if (id->interface)
	{
		DBG1(DBG_KNL, "kernel-swanpath: policies bound to an interface (%s) "
			 "are not supported", id->interface);
		return NOT_SUPPORTED;
	}
	if (id->label)
	{
		DBG1(DBG_KNL, "kernel-swanpath: policies with a security label are "
			 "not supported");
		return NOT_SUPPORTED;
	}
	INIT(p,
		.src_ts = id->src_ts->clone(id->src_ts),
		.dst_ts = id->dst_ts->clone(id->dst_ts),
		.dir = id->dir,
		.mark = id->mark,
		.if_id = id->if_id,
		.type = data->type,
		.priority = policy_priority(id, data),
		.reqid = data->sa ? data->sa->reqid : 0,
		.mode = data->sa ? data->sa->mode : MODE_TRANSPORT,
		.src = data->src ? data->src->clone(data->src) : NULL,
		.dst = data->dst ? data->dst->clone(data->dst) : NULL,
		.spi = data->sa && data->sa->esp.use ? data->sa->esp.spi : 0,
	);

	DBG2(DBG_KNL, "kernel-swanpath: adding policy %R === %R %N (reqid {%u})",
		 id->src_ts, id->dst_ts, policy_dir_names, id->dir, p->reqid);

	this->mutex->lock(this->mutex);
	status = request(this, build_policy(SWANPATH_ADD_POLICY, p), NULL);
	if (status == SUCCESS)
	{
		this->policies->insert_last(this->policies, p);
	}
	this->mutex->unlock(this->mutex);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to add policy %R === %R %N",
			 id->src_ts, id->dst_ts, policy_dir_names, id->dir);
		policy_entry_destroy(p);
		return FAILED;
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, query_policy, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_query_policy_t *data, time_t *use_time)
{
	policy_entry_t p = {
		.src_ts = id->src_ts,
		.dst_ts = id->dst_ts,
		.dir = id->dir,
		.mark = id->mark,
		.if_id = id->if_id,
	};
	chunk_t result = chunk_empty;
	uint64_t used = 0;
	status_t status;

	status = request(this, build_policy(SWANPATH_QUERY_POLICY, &p), &result);
	if (status != SUCCESS)
	{
		chunk_free(&result);
		return status == NOT_FOUND ? NOT_FOUND : FAILED;
	}
	swanpath_msg_get_u64(result, SWANPATH_ATTR_USE_TIME, &used);
	chunk_free(&result);
	*use_time = monotonic_use(used);
	return SUCCESS;
}

METHOD(kernel_ipsec_t, del_policy, status_t,
	private_kernel_swanpath_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_manage_policy_t *data)
{
	enumerator_t *enumerator;
	policy_entry_t *p, *found = NULL;
	uint32_t reqid = data->sa ? data->sa->reqid : 0;
	status_t status;

	DBG2(DBG_KNL, "kernel-swanpath: deleting policy %R === %R %N", id->src_ts,
		 id->dst_ts, policy_dir_names, id->dir);

	this->mutex->lock(this->mutex);
	/* drop one reference: prefer the entry of the same reqid and type */
	enumerator = this->policies->create_enumerator(this->policies);
	while (enumerator->enumerate(enumerator, &p))
	{
		if (policy_matches(p, id))
		{
			if (!found || (p->reqid == reqid && p->type == data->type))
			{
				found = p;
			}
		}
	}
	enumerator->destroy(enumerator);
	if (!found)
	{
		this->mutex->unlock(this->mutex);
		DBG1(DBG_KNL, "kernel-swanpath: policy %R === %R %N not found",
			 id->src_ts, id->dst_ts, policy_dir_names, id->dir);
		return NOT_FOUND;
	}
	this->policies->remove(this->policies, found, NULL);
	status = request(this, build_policy(SWANPATH_DEL_POLICY, found), NULL);
	policy_entry_destroy(found);
	this->mutex->unlock(this->mutex);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: unable to delete policy %R === %R %N",
			 id->src_ts, id->dst_ts, policy_dir_names, id->dir);
		return status == NOT_FOUND ? NOT_FOUND : FAILED;
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, flush_policies, status_t,
	private_kernel_swanpath_ipsec_t *this)
{
	status_t status;

	this->mutex->lock(this->mutex);
	this->policies->destroy_function(this->policies,
									 (void*)policy_entry_destroy);
	this->policies = linked_list_create();
	status = request(this, swanpath_msg_create(SWANPATH_FLUSH_POLICIES), NULL);
	this->mutex->unlock(this->mutex);
	return status == SUCCESS ? SUCCESS : FAILED;
}

METHOD(kernel_ipsec_t, bypass_socket, bool,
	private_kernel_swanpath_ipsec_t *this, int fd, int family)
{
	/* IKE sockets live in the kernel, which never sees our policies */
	return TRUE;
}

METHOD(kernel_ipsec_t, enable_udp_decap, bool,
	private_kernel_swanpath_ipsec_t *this, int fd, int family, uint16_t port)
{
	/* swanpathd decapsulates ESP-in-UDP in the fast path */
	return TRUE;
}

METHOD(kernel_ipsec_t, destroy, void,
	private_kernel_swanpath_ipsec_t *this)
{
	if (this->reconnector)
	{
		this->tick_mutex->lock(this->tick_mutex);
		this->shutdown = TRUE;
		this->tick->signal(this->tick);
		this->tick_mutex->unlock(this->tick_mutex);
		this->reconnector->join(this->reconnector);
	}
	DESTROY_IF(this->conn);
	this->sas->destroy_function(this->sas, (void*)sa_entry_destroy);
	this->policies->destroy_function(this->policies,
									 (void*)policy_entry_destroy);
	this->tick->destroy(this->tick);
	this->tick_mutex->destroy(this->tick_mutex);
	this->mutex->destroy(this->mutex);
	free(this);
}

/*
 * Described in header.
 */
kernel_swanpath_ipsec_t *kernel_swanpath_ipsec_create()
{
	private_kernel_swanpath_ipsec_t *this;
	char *path;

	INIT(this,
		.public = {
			.interface = {
				.get_features = _get_features,
				.get_spi = _get_spi,
				.get_cpi = _get_cpi,
				.add_sa  = _add_sa,
				.update_sa = _update_sa,
				.query_sa = _query_sa,
				.del_sa = _del_sa,
				.flush_sas = _flush_sas,
				.add_policy = _add_policy,
				.query_policy = _query_policy,
				.del_policy = _del_policy,
				.flush_policies = _flush_policies,
				.bypass_socket = _bypass_socket,
				.enable_udp_decap = _enable_udp_decap,
				.destroy = _destroy,
			},
		},
		.mutex = mutex_create(MUTEX_TYPE_RECURSIVE),
		.sas = linked_list_create(),
		.policies = linked_list_create(),
		.tick_mutex = mutex_create(MUTEX_TYPE_DEFAULT),
		.tick = condvar_create(CONDVAR_TYPE_DEFAULT),
	);

	path = lib->settings->get_str(lib->settings,
						"%s.plugins.kernel-swanpath.socket", DEFAULT_SOCKET,
						lib->ns);
	this->conn = kernel_swanpath_conn_create(path, (void*)replay, (void*)event,
											 this);
	if (!this->conn)
	{
		destroy(this);
		return NULL;
	}
	DBG1(DBG_KNL, "kernel-swanpath: handing IPsec SAs and policies to "
		 "swanpathd at %s", path);
	this->reconnector = thread_create((thread_main_t)reconnect, this);
	if (!this->reconnector)
	{
		destroy(this);
		return NULL;
	}
	return &this->public;
}
