/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/fdwatch.c: the sockets Cyrus SASL's password check leaves open.
 *
 * Cyrus' saslauthd client (lib/checkpw.c, saslauthd_verify_password, in
 * 2.1.28 and still upstream) returns without closing its socket when
 * saslauthd closes the connection before the length of its answer: Cyrus
 * logs "size read failed", and the descriptor stays open for the life of
 * the process.  That happens whenever saslauthd is stopped, restarted or
 * loses a worker with a request in flight, so a long-running saslgate
 * slowly runs out of descriptors.  The socket is local to that function:
 * nothing in Cyrus ever uses it after the call that made it.
 *
 * So each Cyrus call on the pool runs between sg_fdwatch_begin and
 * sg_fdwatch_end (sasl/auth.c).  This file defines socket(2) for the
 * process: the executable's definition comes before libc's for the shared
 * libraries too (libsasl2 included), and it passes every call on to the
 * next definition.  While a watch is on, a Unix socket that libsasl2's own
 * code creates on the watching thread is noted; at the end, a noted socket
 * still open as itself (the same inode at the same number: Cyrus did not
 * close it, and the number was not closed and reused since) is closed.
 * Sockets of Cyrus' plugins, of libldap and of other threads are never
 * noted, and a thread outside a watch pays one thread-local test per
 * socket(2). */
#include "sasl_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SG_FDWATCH_MAX 4 /* sockets noted per call; Cyrus makes one */
#define SG_FDWATCH_LIB "libsasl2.so" /* whose sockets are noted */

typedef struct noted {
	int fd;
	dev_t dev;
	ino_t ino;
} noted;

static __thread bool t_on;
static __thread unsigned t_n;
static __thread noted t_fds[SG_FDWATCH_MAX];

typedef int (*socket_fn)(int, int, int);

static int next_socket(int domain, int type, int protocol)
{
	static socket_fn fn; /* resolved once; a race resolves it twice */
	socket_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
	if (!f) {
		f = (socket_fn)dlsym(RTLD_NEXT, "socket");
		if (f)
			__atomic_store_n(&fn, f, __ATOMIC_RELEASE);
	}
	if (f)
		return f(domain, type, protocol);
	return (int)syscall(SYS_socket, domain, type, protocol);
}

/* Was the code at addr loaded from libsasl2 itself (not a plugin)? */
static bool from_libsasl(const void *addr)
{
	Dl_info info;
	if (!dladdr(addr, &info) || !info.dli_fname)
		return false;
	const char *base = strrchr(info.dli_fname, '/');
	base = base ? base + 1 : info.dli_fname;
	return strncmp(base, SG_FDWATCH_LIB, strlen(SG_FDWATCH_LIB)) == 0;
}

static void note(int fd)
{
	struct stat st;
	int e = errno;
	if (fstat(fd, &st) == 0)
		t_fds[t_n++] = (noted){fd, st.st_dev, st.st_ino};
	errno = e;
}

/* noinline: the return address must be the caller's, not ours */
__attribute__((noinline)) int socket(int domain, int type, int protocol)
{
	int fd = next_socket(domain, type, protocol);
	if (fd >= 0 && t_on && domain == AF_UNIX && t_n < SG_FDWATCH_MAX &&
	    from_libsasl(__builtin_extract_return_addr(__builtin_return_address(0))))
		note(fd);
	return fd;
}

void sg_fdwatch_begin(void)
{
	t_n = 0;
	t_on = true;
}

unsigned sg_fdwatch_end(void)
{
	unsigned closed = 0;
	t_on = false;
	for (unsigned i = 0; i < t_n; i++) {
		struct stat st;
		if (fstat(t_fds[i].fd, &st) != 0 || st.st_dev != t_fds[i].dev ||
		    st.st_ino != t_fds[i].ino)
			continue; /* closed by Cyrus (the number may be another's) */
		close(t_fds[i].fd);
		closed++;
	}
	t_n = 0;
	return closed;
}
