/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

/**
 * @defgroup kernel_swanpath_msg kernel_swanpath_msg
 * @{ @ingroup kernel_swanpath
 *
 * Wire format between kernel-swanpath and swanpathd, see
 * docs/plugin-protocol.md (the only definition; keep both in sync).
 */

#ifndef KERNEL_SWANPATH_MSG_H_
#define KERNEL_SWANPATH_MSG_H_

#include <library.h>
#include <bio/bio_writer.h>
#include <networking/host.h>
#include <selectors/traffic_selector.h>

#define SWANPATH_VERSION 1
#define SWANPATH_HEADER_LEN 12
#define SWANPATH_MAX_PAYLOAD (64 * 1024)

typedef enum swanpath_msg_type_t swanpath_msg_type_t;
typedef enum swanpath_attr_t swanpath_attr_t;
typedef enum swanpath_status_t swanpath_status_t;

enum swanpath_msg_type_t {
	SWANPATH_HELLO = 1,
	SWANPATH_GET_SPI = 2,
	SWANPATH_ADD_SA = 3,
	SWANPATH_UPDATE_SA = 4,
	SWANPATH_QUERY_SA = 5,
	SWANPATH_DEL_SA = 6,
	SWANPATH_FLUSH_SAS = 7,
	SWANPATH_ADD_POLICY = 8,
	SWANPATH_QUERY_POLICY = 9,
	SWANPATH_DEL_POLICY = 10,
	SWANPATH_FLUSH_POLICIES = 11,
	SWANPATH_REPLAY_DONE = 12,
	SWANPATH_RESULT = 64,
	SWANPATH_EXPIRE = 128,
	SWANPATH_ACQUIRE = 129,
	SWANPATH_MAPPING = 130,
};

enum swanpath_attr_t {
	SWANPATH_ATTR_SRC = 1,
	SWANPATH_ATTR_DST = 2,
	SWANPATH_ATTR_SPI = 3,
	SWANPATH_ATTR_PROTO = 4,
	SWANPATH_ATTR_MODE = 5,
	SWANPATH_ATTR_REQID = 6,
	SWANPATH_ATTR_MARK = 7,
	SWANPATH_ATTR_MARK_MASK = 8,
	SWANPATH_ATTR_IF_ID = 9,
	SWANPATH_ATTR_INBOUND = 10,
	SWANPATH_ATTR_ENCAP = 11,
	SWANPATH_ATTR_SRC_PORT = 12,
	SWANPATH_ATTR_DST_PORT = 13,
	SWANPATH_ATTR_ENC_ALG = 14,
	SWANPATH_ATTR_ENC_KEY = 15,
	SWANPATH_ATTR_INT_ALG = 16,
	SWANPATH_ATTR_INT_KEY = 17,
	SWANPATH_ATTR_ICV_LEN = 18,
	SWANPATH_ATTR_REPLAY_WINDOW = 19,
	SWANPATH_ATTR_ESN = 20,
	SWANPATH_ATTR_SOFT_BYTES = 21,
	SWANPATH_ATTR_SOFT_PACKETS = 22,
	SWANPATH_ATTR_SOFT_TIME = 23,
	SWANPATH_ATTR_HARD_BYTES = 24,
	SWANPATH_ATTR_HARD_PACKETS = 25,
	SWANPATH_ATTR_HARD_TIME = 26,
	SWANPATH_ATTR_NEW_SRC = 27,
	SWANPATH_ATTR_NEW_DST = 28,
	SWANPATH_ATTR_NEW_SRC_PORT = 29,
	SWANPATH_ATTR_NEW_DST_PORT = 30,
	SWANPATH_ATTR_NEW_ENCAP = 31,
	SWANPATH_ATTR_SEL_SRC = 40,
	SWANPATH_ATTR_SEL_DST = 41,
	SWANPATH_ATTR_SEL_PROTO = 42,
	SWANPATH_ATTR_SEL_SPORT = 43,
	SWANPATH_ATTR_SEL_DPORT = 44,
	SWANPATH_ATTR_DIR = 45,
	SWANPATH_ATTR_ACTION = 46,
	SWANPATH_ATTR_PRIORITY = 47,
	SWANPATH_ATTR_TMPL_SRC = 48,
	SWANPATH_ATTR_TMPL_DST = 49,
	SWANPATH_ATTR_STATUS = 60,
	SWANPATH_ATTR_MESSAGE = 61,
	SWANPATH_ATTR_BYTES = 62,
	SWANPATH_ATTR_PACKETS = 63,
	SWANPATH_ATTR_USE_TIME = 64,
	SWANPATH_ATTR_HARD = 70,
	SWANPATH_ATTR_NAME = 80,
	SWANPATH_ATTR_PID = 81,
	SWANPATH_ATTR_REPLAYED = 82,
	SWANPATH_ATTR_REPLAY_FAILED = 83,
};

enum swanpath_status_t {
	SWANPATH_STATUS_OK = 0,
	SWANPATH_STATUS_FAILED = 1,
	SWANPATH_STATUS_NOT_FOUND = 2,
	SWANPATH_STATUS_EXISTS = 3,
	SWANPATH_STATUS_UNSUPPORTED = 4,
	SWANPATH_STATUS_INVALID = 5,
};

/**
 * Name of a message type, for logging.
 */
char *swanpath_msg_type_name(uint8_t type);

/**
 * Start a message; the header is filled in by swanpath_msg_finalize().
 *
 * The buffer is sized so that it never grows (and leaves no copies of key
 * material behind in freed memory) for any message the plugin sends.
 */
bio_writer_t *swanpath_msg_create(swanpath_msg_type_t type);

/**
 * Fill in sequence number and length; returns the frame (owned by writer).
 */
chunk_t swanpath_msg_finalize(bio_writer_t *writer, uint32_t seq);

/**
 * Wipe and destroy a message writer.
 */
void swanpath_msg_destroy(bio_writer_t *writer);

void swanpath_msg_add_u8(bio_writer_t *w, swanpath_attr_t attr, uint8_t v);
void swanpath_msg_add_u16(bio_writer_t *w, swanpath_attr_t attr, uint16_t v);
void swanpath_msg_add_u32(bio_writer_t *w, swanpath_attr_t attr, uint32_t v);
void swanpath_msg_add_u64(bio_writer_t *w, swanpath_attr_t attr, uint64_t v);
void swanpath_msg_add_chunk(bio_writer_t *w, swanpath_attr_t attr, chunk_t v);

/**
 * Add the address of a host (4 or 16 bytes), nothing if host is NULL/%any.
 */
void swanpath_msg_add_host(bio_writer_t *w, swanpath_attr_t attr, host_t *host);

/**
 * Add the subnet of a traffic selector (prefix) and, separately, its
 * protocol and port range (SEL_PROTO, SEL_SPORT/SEL_DPORT).
 */
void swanpath_msg_add_ts(bio_writer_t *w, swanpath_attr_t prefix_attr,
						 swanpath_attr_t ports_attr, traffic_selector_t *ts);

/**
 * Check that a payload is a well-formed attribute sequence.
 */
bool swanpath_msg_check(chunk_t payload);

/**
 * Get the value of the last attribute of a type (payload must be checked).
 */
bool swanpath_msg_get(chunk_t payload, swanpath_attr_t attr, chunk_t *value);

bool swanpath_msg_get_u8(chunk_t payload, swanpath_attr_t attr, uint8_t *v);
bool swanpath_msg_get_u16(chunk_t payload, swanpath_attr_t attr, uint16_t *v);
bool swanpath_msg_get_u32(chunk_t payload, swanpath_attr_t attr, uint32_t *v);
bool swanpath_msg_get_u64(chunk_t payload, swanpath_attr_t attr, uint64_t *v);

/**
 * Get an address attribute as a new host with the given port, or NULL.
 */
host_t *swanpath_msg_get_host(chunk_t payload, swanpath_attr_t attr,
							  uint16_t port);

#endif /** KERNEL_SWANPATH_MSG_H_ @}*/
