/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/ldapprobe.c: does an LDAP directory answer at all?
 *
 * saslauthd -a ldap answers "NO" both for a wrong password and for a
 * directory it cannot reach (saslauthd/auth_ldap.c), and Cyrus turns either
 * into SASL_BADAUTH: on the wire of the saslauthd socket a dead directory
 * looks like a bad password.  So after a failed check saslgate asks the
 * directory itself, the way a client's first packet would: connect, send
 * an anonymous simple bind (RFC 4511 4.2), and take any LDAPMessage back
 * as "alive".  A directory that refuses the connection, or accepts it but
 * answers nothing within the timeout (a hung slapd, a DC that lost its
 * disk), is down, and AUTH gets 454 instead of a 535 that would count
 * against the user.  ldaps:// is probed up to the TCP connection only (no
 * TLS handshake here).  Blocking: call it on a pool thread or from -t. */
#include "sasl_int.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SG_LDAP_URI_MAX 512  /* one URI of the list */
#define SG_LDAP_HOST_MAX 256
#define SG_LDAPI_DEFAULT "/run/slapd/ldapi" /* Debian's slapd */

/* BindRequest, messageID 1, version 3, name "", simple "" (anonymous). */
static const unsigned char bind_anon[] = {0x30, 0x0c, 0x02, 0x01, 0x01,
                                          0x60, 0x07, 0x02, 0x01, 0x03,
                                          0x04, 0x00, 0x80, 0x00};
/* UnbindRequest, messageID 2: a polite goodbye. */
static const unsigned char unbind[] = {0x30, 0x05, 0x02, 0x01,
                                       0x02, 0x42, 0x00};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t l = deadline - now_ms();
	return l > 0 ? (int)l : 0;
}

/* %2F and friends of an ldapi:// path. */
static void unescape(const char *in, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < outsz; i++) {
		unsigned v;
		if (in[i] == '%' && i + 2 < n && sscanf(in + i + 1, "%2x", &v) == 1) {
			out[o++] = (char)v;
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
}

/* Wait until fd is ready for ev; 0, or -ETIMEDOUT / -errno. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = ev};
	for (;;) {
		int r = poll(&p, 1, left_ms(deadline));
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len,
                        int64_t deadline)
{
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN)
		return -errno;
	int r = wait_fd(fd, POLLOUT, deadline);
	if (r < 0)
		return r;
	int err = 0;
	socklen_t el = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		return -errno;
	return -err;
}

/* Bind anonymously and wait for the first octets of the answer. */
static int ask(int fd, int64_t deadline)
{
	if (send(fd, bind_anon, sizeof bind_anon, MSG_NOSIGNAL) !=
	    (ssize_t)sizeof bind_anon)
		return errno ? -errno : -EIO;
	int r = wait_fd(fd, POLLIN, deadline);
	if (r < 0)
		return r;
	unsigned char b[64];
	ssize_t n = recv(fd, b, sizeof b, 0);
	if (n < 0)
		return -errno;
	if (n == 0 || b[0] != 0x30)
		return -EPROTO; /* closed, or not an LDAPMessage */
	(void)send(fd, unbind, sizeof unbind, MSG_NOSIGNAL);
	return 0;
}

static int probe_fd(int fd, const struct sockaddr *sa, socklen_t len,
                    bool talk, int64_t deadline)
{
	int r = connect_wait(fd, sa, len, deadline);
	if (r == 0 && talk)
		r = ask(fd, deadline);
	close(fd);
	return r;
}

static int probe_unix(const char *path, int64_t deadline)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	return probe_fd(fd, (struct sockaddr *)&sun, sizeof sun, true, deadline);
}

static int probe_inet(const char *host, const char *port, bool talk,
                      int64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g != 0)
		return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	int r = -EHOSTUNREACH;
	for (ai = res; ai && left_ms(deadline) > 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
		                ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		                ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		r = probe_fd(fd, ai->ai_addr, ai->ai_addrlen, talk, deadline);
		if (r == 0)
			break;
	}
	freeaddrinfo(res);
	return r;
}

/* One URI: 0 when it answered, -errno otherwise, -EINVAL for one we do
 * not understand. */
static int probe_uri(const char *uri, int64_t deadline)
{
	char host[SG_LDAP_HOST_MAX];
	const char *p, *port;
	bool talk = true;

	if (strncasecmp(uri, "ldapi://", 8) == 0) {
		p = uri + 8;
		size_t n = strcspn(p, "/?");
		if (n == 0)
			return probe_unix(SG_LDAPI_DEFAULT, deadline);
		unescape(p, n, host, sizeof host);
		return probe_unix(host, deadline);
	}
	if (strncasecmp(uri, "ldap://", 7) == 0) {
		p = uri + 7;
		port = "389";
	} else if (strncasecmp(uri, "ldaps://", 8) == 0) {
		p = uri + 8;
		port = "636";
		talk = false;
	} else {
		return -EINVAL;
	}
	size_t n = strcspn(p, "/?");
	char hp[SG_LDAP_HOST_MAX];
	if (n >= sizeof hp)
		return -ENAMETOOLONG;
	memcpy(hp, p, n);
	hp[n] = '\0';
	char *h = hp, *colon;
	if (*h == '[') { /* [v6]:port */
		char *end = strchr(h, ']');
		if (!end)
			return -EINVAL;
		*end = '\0';
		h++;
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(h, ':');
	}
	if (colon) {
		*colon = '\0';
		if (colon[1])
			port = colon + 1;
	}
	snprintf(host, sizeof host, "%s", *h ? h : "localhost");
	return probe_inet(host, port, talk, deadline);
}

/* Next URI of a list (blanks or commas between them) into uri; false at
 * the end. */
static bool next_uri(const char **uris, char uri[SG_LDAP_URI_MAX])
{
	const char *p = *uris;
	p += strspn(p, " \t,");
	size_t n = strcspn(p, " \t,");
	if (!n)
		return false;
	snprintf(uri, SG_LDAP_URI_MAX, "%.*s", (int)n, p);
	*uris = p + n;
	return true;
}

static bool known_scheme(const char *uri)
{
	return strncasecmp(uri, "ldap://", 7) == 0 ||
	       strncasecmp(uri, "ldaps://", 8) == 0 ||
	       strncasecmp(uri, "ldapi://", 8) == 0;
}

int sg_ldap_uris_check(const char *uris, char *bad, size_t badsz)
{
	char uri[SG_LDAP_URI_MAX];
	int n = 0;
	while (uris && next_uri(&uris, uri)) {
		n++;
		if (!known_scheme(uri)) {
			snprintf(bad, badsz, "%s", uri);
			return -1;
		}
	}
	if (!n) {
		snprintf(bad, badsz, "\"\"");
		return -1;
	}
	return 0;
}

/* Each URI gets timeout_ms of its own: a list names replicas, and the
 * first may be the one that is down. */
int sg_ldap_probe(const char *uris, unsigned timeout_ms, char *why,
                  size_t whysz)
{
	char uri[SG_LDAP_URI_MAX];
	int last = -EINVAL;
	size_t o = 0;

	if (why && whysz)
		why[0] = '\0';
	while (uris && next_uri(&uris, uri)) {
		int r = probe_uri(uri, now_ms() + timeout_ms);
		if (r == 0)
			return 0;
		last = r;
		if (why && o < whysz)
			o += (size_t)snprintf(why + o, whysz - o, "%s%s: %s",
			                      o ? ", " : "", uri,
			                      r == -ETIMEDOUT ? "no answer"
			                      : r == -EINVAL  ? "not an ldap://, "
			                                        "ldaps:// or ldapi:// URI"
			                      : r == -EPROTO  ? "not an LDAP answer"
			                                      : strerrordesc_np(-r));
	}
	return last;
}
