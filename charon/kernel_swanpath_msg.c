/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

#include "kernel_swanpath_msg.h"

/**
 * Large enough for any request: ADD_SA with two 64-byte keys is ~300 bytes.
 */
#define MSG_BUFSIZE 2048

/*
 * Described in header
 */
char *swanpath_msg_type_name(uint8_t type)
{
	switch (type)
	{
		case SWANPATH_HELLO:
			return "HELLO";
		case SWANPATH_GET_SPI:
			return "GET_SPI";
		case SWANPATH_ADD_SA:
			return "ADD_SA";
		case SWANPATH_UPDATE_SA:
			return "UPDATE_SA";
		case SWANPATH_QUERY_SA:
			return "QUERY_SA";
		case SWANPATH_DEL_SA:
			return "DEL_SA";
		case SWANPATH_FLUSH_SAS:
			return "FLUSH_SAS";
		case SWANPATH_ADD_POLICY:
			return "ADD_POLICY";
		case SWANPATH_QUERY_POLICY:
			return "QUERY_POLICY";
		case SWANPATH_DEL_POLICY:
			return "DEL_POLICY";
		case SWANPATH_FLUSH_POLICIES:
			return "FLUSH_POLICIES";
		case SWANPATH_REPLAY_DONE:
			return "REPLAY_DONE";
		case SWANPATH_RESULT:
			return "RESULT";
		case SWANPATH_EXPIRE:
			return "EXPIRE";
		case SWANPATH_ACQUIRE:
			return "ACQUIRE";
		case SWANPATH_MAPPING:
			return "MAPPING";
		default:
			return "UNKNOWN";
	}
}

/*
 * Described in header
 */
bio_writer_t *swanpath_msg_create(swanpath_msg_type_t type)
{
	bio_writer_t *w;

	w = bio_writer_create(MSG_BUFSIZE);
	w->write_uint8(w, SWANPATH_VERSION);
	w->write_uint8(w, type);
	w->write_uint16(w, 0);
	w->write_uint32(w, 0);
	w->write_uint32(w, 0);
	return w;
}

/*
 * Described in header
 */
chunk_t swanpath_msg_finalize(bio_writer_t *w, uint32_t seq)
{
	chunk_t buf;

	buf = w->get_buf(w);
	htoun32(buf.ptr + 4, seq);
	htoun32(buf.ptr + 8, buf.len - SWANPATH_HEADER_LEN);
	return buf;
}

/*
 * Described in header
 */
void swanpath_msg_destroy(bio_writer_t *w)
{
	chunk_t buf;

	if (w)
	{
		buf = w->get_buf(w);
		memwipe(buf.ptr, buf.len);
		w->destroy(w);
	}
}

/**
 * Write an attribute header
 */
static void attr_header(bio_writer_t *w, swanpath_attr_t attr, uint16_t len)
{
	w->write_uint16(w, attr);
	w->write_uint16(w, len);
}

void swanpath_msg_add_u8(bio_writer_t *w, swanpath_attr_t attr, uint8_t v)
{
	attr_header(w, attr, 1);
	w->write_uint8(w, v);
}

void swanpath_msg_add_u16(bio_writer_t *w, swanpath_attr_t attr, uint16_t v)
{
	attr_header(w, attr, 2);
	w->write_uint16(w, v);
}

void swanpath_msg_add_u32(bio_writer_t *w, swanpath_attr_t attr, uint32_t v)
{
	attr_header(w, attr, 4);
	w->write_uint32(w, v);
}

void swanpath_msg_add_u64(bio_writer_t *w, swanpath_attr_t attr, uint64_t v)
{
	attr_header(w, attr, 8);
	w->write_uint64(w, v);
}

void swanpath_msg_add_chunk(bio_writer_t *w, swanpath_attr_t attr, chunk_t v)
{
	if (v.len > 0xffff)
	{
		v.len = 0xffff;
	}
	attr_header(w, attr, v.len);
	w->write_data(w, v);
}

/*
 * Described in header
 */
void swanpath_msg_add_host(bio_writer_t *w, swanpath_attr_t attr, host_t *host)
{
	if (host)
	{	/* %any is sent too: all zeros still tell the family */
		swanpath_msg_add_chunk(w, attr, host->get_address(host));
	}
}

/*
 * Described in header
 */
void swanpath_msg_add_ts(bio_writer_t *w, swanpath_attr_t prefix_attr,
						 swanpath_attr_t ports_attr, traffic_selector_t *ts)
{
	host_t *net;
	uint8_t bits;
	chunk_t addr;

	/* a range that is no subnet is widened to the enclosing subnet */
	ts->to_subnet(ts, &net, &bits);
	addr = net->get_address(net);
	attr_header(w, prefix_attr, 1 + addr.len);
	w->write_uint8(w, bits);
	w->write_data(w, addr);
	net->destroy(net);

	attr_header(w, ports_attr, 4);
	w->write_uint16(w, ts->get_from_port(ts));
	w->write_uint16(w, ts->get_to_port(ts));
}

/*
 * Described in header
 */
bool swanpath_msg_check(chunk_t payload)
{
	uint16_t len;

	while (payload.len)
	{
		if (payload.len < 4)
		{
			return FALSE;
		}
		len = untoh16(payload.ptr + 2);
		if (len > payload.len - 4)
		{
			return FALSE;
		}
		payload = chunk_skip(payload, 4 + len);
	}
	return TRUE;
}

/*
 * Described in header
 */
bool swanpath_msg_get(chunk_t payload, swanpath_attr_t attr, chunk_t *value)
{
	uint16_t type, len;
	bool found = FALSE;

	while (payload.len >= 4)
	{
		type = untoh16(payload.ptr);
		len = untoh16(payload.ptr + 2);
		if (len > payload.len - 4)
		{
			break;
		}
		if (type == attr)
		{
			*value = chunk_create(payload.ptr + 4, len);
			found = TRUE;
		}
		payload = chunk_skip(payload, 4 + len);
	}
	return found;
}

bool swanpath_msg_get_u8(chunk_t payload, swanpath_attr_t attr, uint8_t *v)
{
	chunk_t c;

	if (!swanpath_msg_get(payload, attr, &c) || c.len != 1)
	{
		return FALSE;
	}
	*v = c.ptr[0];
	return TRUE;
}

bool swanpath_msg_get_u16(chunk_t payload, swanpath_attr_t attr, uint16_t *v)
{
	chunk_t c;

	if (!swanpath_msg_get(payload, attr, &c) || c.len != 2)
	{
		return FALSE;
	}
	*v = untoh16(c.ptr);
	return TRUE;
}

bool swanpath_msg_get_u32(chunk_t payload, swanpath_attr_t attr, uint32_t *v)
{
	chunk_t c;

	if (!swanpath_msg_get(payload, attr, &c) || c.len != 4)
	{
		return FALSE;
	}
	*v = untoh32(c.ptr);
	return TRUE;
}

bool swanpath_msg_get_u64(chunk_t payload, swanpath_attr_t attr, uint64_t *v)
{
	chunk_t c;

	if (!swanpath_msg_get(payload, attr, &c) || c.len != 8)
	{
		return FALSE;
	}
	*v = untoh64(c.ptr);
	return TRUE;
}

/*
 * Described in header
 */
host_t *swanpath_msg_get_host(chunk_t payload, swanpath_attr_t attr,
							  uint16_t port)
{
	chunk_t c;

	if (!swanpath_msg_get(payload, attr, &c))
	{
		return NULL;
	}
	switch (c.len)
	{
		case 4:
			return host_create_from_chunk(AF_INET, c, port);
		case 16:
			return host_create_from_chunk(AF_INET6, c, port);
		default:
			return NULL;
	}
}
