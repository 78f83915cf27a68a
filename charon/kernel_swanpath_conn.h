/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

/**
 * @defgroup kernel_swanpath_conn kernel_swanpath_conn
 * @{ @ingroup kernel_swanpath
 */

#ifndef KERNEL_SWANPATH_CONN_H_
#define KERNEL_SWANPATH_CONN_H_

#include <library.h>
#include <bio/bio_writer.h>

typedef struct kernel_swanpath_conn_t kernel_swanpath_conn_t;

/**
 * Called after (re)connecting, before any other request is sent: replays
 * everything installed. Returns FALSE to drop the connection again.
 */
typedef bool (*kernel_swanpath_replay_t)(void *data,
										 kernel_swanpath_conn_t *conn);

/**
 * Called from the reader thread for each event frame (payload checked).
 */
typedef void (*kernel_swanpath_event_t)(void *data, uint8_t type,
										chunk_t payload);

/**
 * Connection to swanpathd's plugin socket.
 *
 * One request is outstanding at a time: callers serialise request() and
 * ensure() (kernel_swanpath_ipsec does so with its own mutex). A reader
 * thread receives RESULTs and events.
 */
struct kernel_swanpath_conn_t {

	/**
	 * Connect if not connected (HELLO, then the replay callback).
	 *
	 * @param quiet		log a failure only once until it succeeds again
	 * @return			TRUE if connected
	 */
	bool (*ensure)(kernel_swanpath_conn_t *this, bool quiet);

	/**
	 * Send a request and wait for its RESULT, connecting first if needed.
	 *
	 * @param msg		request from swanpath_msg_create() (not destroyed)
	 * @param result	if not NULL, the RESULT payload (free with chunk_free)
	 * @return			SUCCESS, NOT_FOUND, NOT_SUPPORTED, ALREADY_DONE
	 *					(EXISTS), or FAILED (logged)
	 */
	status_t (*request)(kernel_swanpath_conn_t *this, bio_writer_t *msg,
						chunk_t *result);

	/**
	 * Socket path.
	 */
	char *(*get_path)(kernel_swanpath_conn_t *this);

	/**
	 * Close the connection and stop the reader thread.
	 */
	void (*destroy)(kernel_swanpath_conn_t *this);
};

/**
 * Create a connection object; it connects on the first ensure()/request().
 */
kernel_swanpath_conn_t *kernel_swanpath_conn_create(char *path,
									kernel_swanpath_replay_t replay,
									kernel_swanpath_event_t event, void *data);

#endif /** KERNEL_SWANPATH_CONN_H_ @}*/
