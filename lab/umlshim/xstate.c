/*
 * xstate.c: an LD_PRELOAD shim for Debian's linux.uml (6.1) on hosts whose
 * XSAVE area is larger than UML's fixed 832-byte buffer (AVX-512, AMX).
 *
 * UML saves a guest task's FPU state with PTRACE_GETREGSET(NT_X86_XSTATE)
 * into its buffer (the kernel truncates) and restores it with
 * PTRACE_SETREGSET, which newer host kernels refuse with EFAULT unless the
 * buffer is the whole XSAVE area: init then dies with "ptrace set fp regs
 * failed, errno = 14". The shim keeps a full-size shadow of each buffer UML
 * passes (keyed by its address, one per guest task): GET fills the shadow
 * and hands UML its first bytes; SET writes UML's bytes over the shadow and
 * gives the kernel the whole area, so every component is restored, also
 * those beyond UML's buffer (ZMM, AMX).
 *
 * Built by the lab (lab/uml.go) with cc -shared -fPIC; written for swanpath.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_XSTATE 0x202
#define SLOTS 8192
#define MAXAREA (64 * 1024)

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

struct slot {
	void *key;
	size_t len;
	unsigned char *buf;
};

static struct slot slots[SLOTS];

static ptrace_fn real(void)
{
	static ptrace_fn fn;
	if (!fn)
		fn = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	return fn;
}

static struct slot *slot_of(void *key)
{
	size_t h = ((uintptr_t)key >> 4) % SLOTS;
	for (size_t i = 0; i < SLOTS; i++) {
		struct slot *s = &slots[(h + i) % SLOTS];
		if (s->key == key)
			return s;
		if (s->key == NULL) {
			s->buf = malloc(MAXAREA);
			if (!s->buf)
				return NULL;
			s->key = key;
			s->len = 0;
			return s;
		}
	}
	return NULL;
}

static long xstate(int req, pid_t pid, struct iovec *uiov)
{
	struct slot *s = slot_of(uiov->iov_base);
	struct iovec full;
	long r;

	if (!s) {
		errno = ENOMEM;
		return -1;
	}
	if (req == PTRACE_GETREGSET) {
		full.iov_base = s->buf;
		full.iov_len = MAXAREA;
		r = real()(PTRACE_GETREGSET, pid, (void *)NT_XSTATE, &full);
		if (r < 0)
			return r;
		s->len = full.iov_len;
		if (uiov->iov_len > s->len)
			uiov->iov_len = s->len;
		memcpy(uiov->iov_base, s->buf, uiov->iov_len);
		return r;
	}
	/* SETREGSET: the whole area, UML's bytes first */
	if (s->len == 0) {
		/* never read through this buffer: start from pid's state */
		full.iov_base = s->buf;
		full.iov_len = MAXAREA;
		r = real()(PTRACE_GETREGSET, pid, (void *)NT_XSTATE, &full);
		if (r < 0)
			return r;
		s->len = full.iov_len;
	}
	memcpy(s->buf, uiov->iov_base, uiov->iov_len < s->len ? uiov->iov_len : s->len);
	full.iov_base = s->buf;
	full.iov_len = s->len;
	return real()(PTRACE_SETREGSET, pid, (void *)NT_XSTATE, &full);
}

long ptrace(enum __ptrace_request req, ...)
{
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, req);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) && (uintptr_t)addr == NT_XSTATE && data)
		return xstate(req, pid, data);
	return real()(req, pid, addr, data);
}
