/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

#define _GNU_SOURCE /* struct ucred */

#include "kernel_swanpath_conn.h"
#include "kernel_swanpath_msg.h"

#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <daemon.h>
#include <threading/thread.h>
#include <threading/mutex.h>
#include <threading/condvar.h>

/**
 * How long a request waits for its RESULT before the connection is dropped
 */
#define REQUEST_TIMEOUT_MS 5000

/**
 * Why the last attempt to connect to swanpathd failed
 */
typedef enum {
	FAILURE_NONE = 0,
	FAILURE_UNREACHABLE,
	FAILURE_NOT_ROOT,
} connect_failure_t;

typedef struct private_kernel_swanpath_conn_t private_kernel_swanpath_conn_t;

/**
 * Private data of a kernel_swanpath_conn_t object.
 */
struct private_kernel_swanpath_conn_t {

	/**
	 * Public interface.
	 */
	kernel_swanpath_conn_t public;

	/**
	 * Socket path
	 */
	char *path;

	/**
	 * Replay callback and event callback, with their argument
	 */
	kernel_swanpath_replay_t replay;
	kernel_swanpath_event_t event;
	void *data;

	/**
	 * Guards everything below
	 */
	mutex_t *mutex;

	/**
	 * Signalled on a new connection, a RESULT, a disconnect and shutdown
	 */
	condvar_t *condvar;

	/**
	 * Connected socket, -1 if none. Only the reader thread closes it.
	 */
	int fd;

	/**
	 * TRUE once the socket was shut down, until the reader closed it
	 */
	bool broken;

	/**
	 * Connection generation, incremented on each connect
	 */
	u_int gen;

	/**
	 * Last sequence number used
	 */
	uint32_t seq;

	/**
	 * Sequence number of the outstanding request, 0 if none
	 */
	uint32_t wait_seq;

	/**
	 * Response payload for wait_seq once received
	 */
	chunk_t response;
	bool received;

	/**
	 * Shutting down
	 */
	bool shutdown;

	/**
	 * Replay in progress (requests must not try to reconnect)
	 */
	bool replaying;

	/**
	 * Reason of the last failure to connect that was logged (quiet retries
	 * log a new reason only)
	 */
	connect_failure_t failure_logged;

	/**
	 * Reader thread
	 */
	thread_t *reader;
};

/**
 * Shut the socket down so the reader closes it. Mutex held.
 */
static void disconnect(private_kernel_swanpath_conn_t *this)
{
	if (this->fd != -1 && !this->broken)
	{
		shutdown(this->fd, SHUT_RDWR);
		this->broken = TRUE;
		this->condvar->broadcast(this->condvar);
	}
}

/**
 * Read exactly len bytes, FALSE on EOF or error
 */
static bool read_all(int fd, u_char *buf, size_t len)
{
	ssize_t n;

	while (len)
	{
		n = read(fd, buf, len);
		if (n < 0 && errno == EINTR)
		{
			continue;
		}
		if (n <= 0)
		{
			return FALSE;
		}
		buf += n;
		len -= n;
	}
	return TRUE;
}

/**
 * Write a whole buffer, FALSE on error
 */
static bool write_all(int fd, chunk_t data)
{
	ssize_t n;

	while (data.len)
	{
		n = send(fd, data.ptr, data.len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
		{
			continue;
		}
		if (n <= 0)
		{
			return FALSE;
		}
		data = chunk_skip(data, n);
	}
	return TRUE;
}

/**
 * Read one frame. Returns FALSE on EOF/error/garbage (logged).
 */
static bool read_frame(private_kernel_swanpath_conn_t *this, int fd,
					   uint8_t *type, uint32_t *seq, chunk_t *payload)
{
	u_char hdr[SWANPATH_HEADER_LEN];
	uint32_t len;

	if (!read_all(fd, hdr, sizeof(hdr)))
	{
		return FALSE;
	}
	len = untoh32(hdr + 8);
	if (hdr[0] != SWANPATH_VERSION || len > SWANPATH_MAX_PAYLOAD)
	{
		DBG1(DBG_KNL, "kernel-swanpath: invalid frame from swanpathd "
			 "(version %u, length %u), reconnecting", hdr[0], len);
		return FALSE;
	}
	*type = hdr[1];
	*seq = untoh32(hdr + 4);
	*payload = chunk_alloc(len);
	if (!read_all(fd, payload->ptr, len))
	{
		chunk_free(payload);
		return FALSE;
	}
	if (!swanpath_msg_check(*payload))
	{
		DBG1(DBG_KNL, "kernel-swanpath: malformed %s from swanpathd, "
			 "reconnecting", swanpath_msg_type_name(*type));
		chunk_free(payload);
		return FALSE;
	}
	return TRUE;
}

/**
 * Reader thread: RESULTs to the waiting request, events to the callback
 */
static void *read_frames(private_kernel_swanpath_conn_t *this)
{
	chunk_t payload;
	uint32_t seq;
	uint8_t type;
	u_int gen;
	int fd;

	while (TRUE)
	{
		this->mutex->lock(this->mutex);
		while (this->fd == -1 && !this->shutdown)
		{
			this->condvar->wait(this->condvar, this->mutex);
		}
		if (this->shutdown)
		{
			this->mutex->unlock(this->mutex);
			break;
		}
		fd = this->fd;
		gen = this->gen;
		this->mutex->unlock(this->mutex);

		while (read_frame(this, fd, &type, &seq, &payload))
		{
			if (type == SWANPATH_RESULT)
			{
				this->mutex->lock(this->mutex);
				if (seq && seq == this->wait_seq && !this->received)
				{
					this->response = payload;
					this->received = TRUE;
					payload = chunk_empty;
					this->condvar->broadcast(this->condvar);
				}
				this->mutex->unlock(this->mutex);
				if (payload.len)
				{
					DBG1(DBG_KNL, "kernel-swanpath: unexpected RESULT for "
						 "seq %u ignored", seq);
				}
			}
			else if (this->event)
			{
				this->event(this->data, type, payload);
			}
			chunk_clear(&payload);
		}

		this->mutex->lock(this->mutex);
		if (this->gen == gen && this->fd == fd)
		{
			if (!this->shutdown)
			{
				DBG1(DBG_KNL, "kernel-swanpath: connection to swanpathd at %s "
					 "lost", this->path);
			}
			close(fd);
			this->fd = -1;
			this->broken = FALSE;
			this->condvar->broadcast(this->condvar);
		}
		this->mutex->unlock(this->mutex);
	}
	return NULL;
}

/**
 * Map a RESULT status to a status_t, log failures
 */
static status_t result_status(uint8_t type, chunk_t payload)
{
	uint32_t status = SWANPATH_STATUS_FAILED;
	chunk_t msg = chunk_empty;

	swanpath_msg_get_u32(payload, SWANPATH_ATTR_STATUS, &status);
	if (status == SWANPATH_STATUS_OK)
	{
		return SUCCESS;
	}
	swanpath_msg_get(payload, SWANPATH_ATTR_MESSAGE, &msg);
	DBG2(DBG_KNL, "kernel-swanpath: swanpathd refused %s (status %u): %.*s",
		 swanpath_msg_type_name(type), status, (int)msg.len, msg.ptr);
	switch (status)
	{
		case SWANPATH_STATUS_NOT_FOUND:
			return NOT_FOUND;
		case SWANPATH_STATUS_UNSUPPORTED:
			/* a proposal or policy the fast path cannot carry: say why
			 * where the operator reads charon's log */
			if (type == SWANPATH_ADD_SA || type == SWANPATH_ADD_POLICY)
			{
				DBG1(DBG_KNL, "kernel-swanpath: swanpathd cannot install "
					 "this %s: %.*s", type == SWANPATH_ADD_SA ? "SA" : "policy",
					 (int)msg.len, msg.ptr);
			}
			return NOT_SUPPORTED;
		case SWANPATH_STATUS_EXISTS:
			return ALREADY_DONE;
		default:
			DBG1(DBG_KNL, "kernel-swanpath: swanpathd: %s failed: %.*s",
				 swanpath_msg_type_name(type), (int)msg.len, msg.ptr);
			return FAILED;
	}
}

/**
 * Send a request on the current connection and wait for the RESULT
 */
static status_t do_request(private_kernel_swanpath_conn_t *this,
						   bio_writer_t *msg, chunk_t *result)
{
	chunk_t frame, response = chunk_empty;
	timeval_t deadline;
	uint8_t type;
	uint32_t seq;
	status_t status;
	u_int gen;
	int fd;

	this->mutex->lock(this->mutex);
	if (this->fd == -1 || this->broken)
	{
		this->mutex->unlock(this->mutex);
		return FAILED;
	}
	if (++this->seq == 0)
	{
		this->seq = 1;
	}
	seq = this->seq;
	fd = this->fd;
	gen = this->gen;
	this->wait_seq = seq;
	this->received = FALSE;
	this->mutex->unlock(this->mutex);

	frame = swanpath_msg_finalize(msg, seq);
	type = frame.ptr[1];
	if (!write_all(fd, frame))
	{
		DBG1(DBG_KNL, "kernel-swanpath: sending %s to swanpathd failed: %s",
			 swanpath_msg_type_name(type), strerror(errno));
		this->mutex->lock(this->mutex);
		this->wait_seq = 0;
		disconnect(this);
		this->mutex->unlock(this->mutex);
		return FAILED;
	}

	time_monotonic(&deadline);
	timeval_add_ms(&deadline, REQUEST_TIMEOUT_MS);
	this->mutex->lock(this->mutex);
	while (!this->received && this->gen == gen && this->fd == fd &&
		   !this->broken && !this->shutdown)
	{
		if (this->condvar->timed_wait_abs(this->condvar, this->mutex, deadline))
		{
			DBG1(DBG_KNL, "kernel-swanpath: no answer to %s from swanpathd "
				 "within %d ms, reconnecting", swanpath_msg_type_name(type),
				 REQUEST_TIMEOUT_MS);
			disconnect(this);
			break;
		}
	}
	if (this->received)
	{
		response = this->response;
		this->response = chunk_empty;
		this->received = FALSE;
	}
	this->wait_seq = 0;
	this->mutex->unlock(this->mutex);

	if (!response.ptr)
	{
		DBG1(DBG_KNL, "kernel-swanpath: %s: connection to swanpathd lost",
			 swanpath_msg_type_name(type));
		return FAILED;
	}
	status = result_status(type, response);
	if (result)
	{
		*result = response;
	}
	else
	{
		chunk_free(&response);
	}
	return status;
}

/**
 * Keys go to root only: check that the process listening on the connected
 * socket (SO_PEERCRED gives whoever called listen()) runs as root, before
 * anything is sent. Another user able to bind the socket path would
 * otherwise get every SA's keys.
 */
static bool peer_is_root(private_kernel_swanpath_conn_t *this, int fd,
						 bool quiet)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	bool log;

	log = !quiet || this->failure_logged != FAILURE_NOT_ROOT;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
	{
		if (log)
		{
			DBG1(DBG_KNL, "kernel-swanpath: not connecting to swanpathd at %s: "
				 "its credentials are unknown: %s", this->path, strerror(errno));
		}
	}
	else if (cred.uid != 0)
	{
		if (log)
		{
			DBG1(DBG_KNL, "kernel-swanpath: not connecting to swanpathd at %s: "
				 "its listener runs as uid %u (pid %d), not root", this->path,
				 cred.uid, cred.pid);
		}
	}
	else
	{
		return TRUE;
	}
	this->failure_logged = FAILURE_NOT_ROOT;
	return FALSE;
}

METHOD(kernel_swanpath_conn_t, ensure, bool,
	private_kernel_swanpath_conn_t *this, bool quiet)
{
	struct sockaddr_un addr = {
		.sun_family = AF_UNIX,
	};
	bio_writer_t *hello;
	status_t status;
	int fd;

	this->mutex->lock(this->mutex);
	/* wait until the reader closed a broken connection */
	while (this->broken && this->fd != -1 && !this->shutdown)
	{
		this->condvar->wait(this->condvar, this->mutex);
	}
	if (this->fd != -1 || this->shutdown || this->replaying)
	{
		fd = this->fd;
		this->mutex->unlock(this->mutex);
		return fd != -1;
	}
	this->mutex->unlock(this->mutex);

	strncpy(addr.sun_path, this->path, sizeof(addr.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0)
	{
		if (!quiet || this->failure_logged != FAILURE_UNREACHABLE)
		{
			DBG1(DBG_KNL, "kernel-swanpath: swanpathd not reachable at %s: %s",
				 this->path, strerror(errno));
			this->failure_logged = FAILURE_UNREACHABLE;
		}
		if (fd >= 0)
		{
			close(fd);
		}
		return FALSE;
	}
	if (!peer_is_root(this, fd, quiet))
	{
		close(fd);
		return FALSE;
	}

	this->mutex->lock(this->mutex);
	this->fd = fd;
	this->broken = FALSE;
	this->gen++;
	this->condvar->broadcast(this->condvar);
	this->mutex->unlock(this->mutex);

	hello = swanpath_msg_create(SWANPATH_HELLO);
	swanpath_msg_add_chunk(hello, SWANPATH_ATTR_NAME,
						   chunk_from_str("strongSwan " VERSION " kernel-swanpath"));
	swanpath_msg_add_u32(hello, SWANPATH_ATTR_PID, getpid());
	status = do_request(this, hello, NULL);
	swanpath_msg_destroy(hello);
	if (status != SUCCESS)
	{
		DBG1(DBG_KNL, "kernel-swanpath: HELLO to swanpathd at %s failed",
			 this->path);
		this->mutex->lock(this->mutex);
		disconnect(this);
		this->mutex->unlock(this->mutex);
		return FALSE;
	}
	DBG1(DBG_KNL, "kernel-swanpath: connected to swanpathd at %s", this->path);
	this->failure_logged = FAILURE_NONE;

	if (this->replay)
	{
		this->replaying = TRUE;
		if (!this->replay(this->data, &this->public))
		{
			this->replaying = FALSE;
			DBG1(DBG_KNL, "kernel-swanpath: replay to swanpathd failed, "
				 "reconnecting");
			this->mutex->lock(this->mutex);
			disconnect(this);
			this->mutex->unlock(this->mutex);
			return FALSE;
		}
		this->replaying = FALSE;
	}
	return TRUE;
}

METHOD(kernel_swanpath_conn_t, request, status_t,
	private_kernel_swanpath_conn_t *this, bio_writer_t *msg, chunk_t *result)
{
	if (!this->replaying && !ensure(this, FALSE))
	{
		return FAILED;
	}
	return do_request(this, msg, result);
}

METHOD(kernel_swanpath_conn_t, get_path, char*,
	private_kernel_swanpath_conn_t *this)
{
	return this->path;
}

METHOD(kernel_swanpath_conn_t, destroy, void,
	private_kernel_swanpath_conn_t *this)
{
	this->mutex->lock(this->mutex);
	this->shutdown = TRUE;
	if (this->fd != -1)
	{
		shutdown(this->fd, SHUT_RDWR);
	}
	this->condvar->broadcast(this->condvar);
	this->mutex->unlock(this->mutex);
	this->reader->join(this->reader);
	if (this->fd != -1)
	{
		close(this->fd);
	}
	chunk_clear(&this->response);
	this->condvar->destroy(this->condvar);
	this->mutex->destroy(this->mutex);
	free(this->path);
	free(this);
}

/*
 * Described in header
 */
kernel_swanpath_conn_t *kernel_swanpath_conn_create(char *path,
									kernel_swanpath_replay_t replay,
									kernel_swanpath_event_t event, void *data)
{
	private_kernel_swanpath_conn_t *this;

	if (strlen(path) >= sizeof(((struct sockaddr_un*)NULL)->sun_path))
	{
		DBG1(DBG_KNL, "kernel-swanpath: socket path %s too long", path);
		return NULL;
	}

	INIT(this,
		.public = {
			.ensure = _ensure,
			.request = _request,
			.get_path = _get_path,
			.destroy = _destroy,
		},
		.path = strdup(path),
		.replay = replay,
		.event = event,
		.data = data,
		.mutex = mutex_create(MUTEX_TYPE_DEFAULT),
		.condvar = condvar_create(CONDVAR_TYPE_DEFAULT),
		.fd = -1,
	);

	this->reader = thread_create((thread_main_t)read_frames, this);
	if (!this->reader)
	{
		this->condvar->destroy(this->condvar);
		this->mutex->destroy(this->mutex);
		free(this->path);
		free(this);
		return NULL;
	}
	return &this->public;
}
