/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/ldapprobe.c: does an LDAP directory answer at all?
 *
 * saslauthd -a ldap answers "NO" both for a wrong password and for a
 * directory it cannot reach (saslauthd/auth_ldap.c), and Cyrus turns either
 * into SASL_BADAUTH: on the wire of the saslauthd socket a dead directory
 * looks like a bad password.  So after a failed check saslgate asks the
 * directory itself, through OpenLDAP's libldap as saslauthd and ldapdb do:
 * connect (for ldaps:// with the TLS handshake), send an anonymous simple
 * bind (RFC 4511 4.2), and take any BindResponse as "alive", an error such
 * as inappropriateAuthentication or confidentialityRequired included: the
 * server is there and speaks LDAP.  A directory that refuses the
 * connection, or accepts it but answers nothing within the timeout (a hung
 * slapd, a DC that lost its disk, a TLS peer that never finishes the
 * handshake), is down, and AUTH gets 454 instead of a 535 that would count
 * against the user.  Blocking: call it on a pool thread or from -t.
 *
 * libldap reads ldap.conf, ~/.ldaprc and LDAP* variables once per process.
 * The probe sets on its own handle every option its verdict depends on
 * (protocol version, both timeouts, referrals, the certificate check), so
 * those files cannot turn an answer into silence.  What it leaves to them
 * (TLS protocol and cipher limits, a source address) is what every libldap
 * client on the host gets, ldapdb and saslauthd included.  LDAPNOINIT would
 * skip the files, but it is process-wide and must be set before the first
 * libldap call of any thread: it would also take ldap.conf's TLS_CACERT
 * from Cyrus' ldapdb plugin, which runs in this process and uses it for
 * ldapdb_starttls. */
#include "sasl_int.h"

#include <errno.h>
#include <ldap.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define SG_LDAP_URI_MAX 512  /* one URI of the list */

/* Below libldap's TLS layer on an ldaps:// connection: wait for the
 * server's octets until the probe's deadline, then fail the read.  With a
 * network timeout set, libldap before 2.6.9 (Debian 12 has 2.5) retries a
 * TLS handshake that would block at once and forever, so a peer that
 * accepts and never answers would hold the probe until it hangs up
 * (tls2.c, ldap_int_tls_start); the deadline is kept underneath it. */
#define SG_LDAP_DEADLINE_LEVEL (LBER_SBIOD_LEVEL_PROVIDER + 1)

struct probe {
	int64_t deadline;  /* CLOCK_MONOTONIC, ms */
	bool connected;    /* the TCP or ldapi connection was made */
	bool timed_out;    /* the deadline layer gave up waiting */
	ldap_conncb cb;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_of(int64_t ms)
{
	if (ms < 1)
		ms = 1; /* {0, 0} would only poll */
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static int deadline_setup(Sockbuf_IO_Desc *d, void *arg)
{
	d->sbiod_pvt = arg;
	return 0;
}

static int deadline_ctrl(Sockbuf_IO_Desc *d, int opt, void *arg)
{
	return LBER_SBIOD_CTRL_NEXT(d, opt, arg);
}

static ber_slen_t deadline_read(Sockbuf_IO_Desc *d, void *buf, ber_len_t len)
{
	struct probe *p = d->sbiod_pvt;
	ber_socket_t fd = -1;
	ber_sockbuf_ctrl(d->sbiod_sb, LBER_SB_OPT_GET_FD, &fd);
	int64_t left = p->deadline - now_ms();
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	int r = poll(&pf, 1, left > 0 ? (int)left : 0);
	if (r == 0) {
		p->timed_out = true;
		errno = ETIMEDOUT;
		return -1;
	}
	if (r < 0)
		return -1; /* EINTR: the layers above try again */
	return LBER_SBIOD_READ_NEXT(d, buf, len);
}

static ber_slen_t deadline_write(Sockbuf_IO_Desc *d, void *buf, ber_len_t len)
{
	return LBER_SBIOD_WRITE_NEXT(d, buf, len);
}

static Sockbuf_IO deadline_io = {
	.sbi_setup = deadline_setup,
	.sbi_ctrl = deadline_ctrl,
	.sbi_read = deadline_read,
	.sbi_write = deadline_write,
};

/* Called by libldap once the socket is connected, before any TLS. */
static int on_connect(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv,
                      struct sockaddr *addr, struct ldap_conncb *cb)
{
	struct probe *p = cb->lc_arg;
	p->connected = true;
	if (srv && srv->lud_scheme && strcasecmp(srv->lud_scheme, "ldaps") == 0)
		return ber_sockbuf_add_io(sb, &deadline_io, SG_LDAP_DEADLINE_LEVEL,
		                          p) < 0
		           ? LDAP_NO_MEMORY
		           : 0;
	return 0;
}

static void on_close(LDAP *ld, Sockbuf *sb, struct ldap_conncb *cb)
{
}

enum scheme { SCHEME_BAD, SCHEME_LDAP, SCHEME_LDAPS, SCHEME_LDAPI };

/* libldap parses the URI as saslauthd and ldapdb will; only the schemes
 * of a connection (not cldap://). */
static enum scheme uri_scheme(const char *uri)
{
	LDAPURLDesc *lud = NULL;
	enum scheme sc = SCHEME_BAD;
	if (ldap_url_parse(uri, &lud) != LDAP_URL_SUCCESS)
		return SCHEME_BAD;
	if (!lud->lud_scheme)
		sc = SCHEME_BAD;
	else if (strcasecmp(lud->lud_scheme, "ldap") == 0)
		sc = SCHEME_LDAP;
	else if (strcasecmp(lud->lud_scheme, "ldaps") == 0)
		sc = SCHEME_LDAPS;
	else if (strcasecmp(lud->lud_scheme, "ldapi") == 0)
		sc = SCHEME_LDAPI;
	ldap_free_urldesc(lud);
	return sc;
}

static int set_options(LDAP *ld, struct probe *p, enum scheme sc,
                       unsigned timeout_ms)
{
	int v3 = LDAP_VERSION3, allow = LDAP_OPT_X_TLS_ALLOW, client = 0;
	struct timeval tv = tv_of(timeout_ms);

	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_CONNECT_CB, &p->cb) != LDAP_OPT_SUCCESS)
		return -1;
	if (sc != SCHEME_LDAPS)
		return 0;
	/* Only liveness is asked and no credential is sent, so the server's
	 * certificate is not checked: a directory whose CA this host lacks
	 * still counts as up (saslauthd and ldapdb check it themselves).
	 * On this handle only; NEWCTX makes its TLS context from it. */
	if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &allow) !=
	        LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &client) != LDAP_OPT_SUCCESS)
		return -2;
	return 0;
}

static void diag(LDAP *ld, int rc, char *out, size_t outsz)
{
	char *msg = NULL;
	ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg);
	snprintf(out, outsz, "%s", msg && *msg ? msg : ldap_err2string(rc));
	ldap_memfree(msg);
}

/* ldap_connect failed: why, as -errno and words. */
static int connect_failed(LDAP *ld, const struct probe *p, enum scheme sc,
                          int rc, int err, char *reason, size_t reasonsz)
{
	char d[128];

	if (p->timed_out || rc == LDAP_TIMEOUT || err == ETIMEDOUT) {
		snprintf(reason, reasonsz, "no answer");
		return -ETIMEDOUT;
	}
	if (p->connected) { /* only TLS comes after the connection */
		diag(ld, rc, d, sizeof d);
		snprintf(reason, reasonsz, "TLS handshake failed (%s)", d);
		return -EPROTO;
	}
	if (sc == SCHEME_LDAPI && err > 0) { /* ENOENT, EACCES, ECONNREFUSED */
		snprintf(reason, reasonsz, "%s", strerrordesc_np(err));
		return -err;
	}
	/* Over TCP libldap does not pass the socket's error on: it closes a
	 * socket whose connect failed with shutdown(2), which leaves
	 * ENOTCONN.  Failing before the timeout, the connection was turned
	 * away (a reset, or the ICMP unreachable of a firewall's reject). */
	if (err == ENOTCONN) {
		snprintf(reason, reasonsz, "%s", strerrordesc_np(ECONNREFUSED));
		return -ECONNREFUSED;
	}
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		snprintf(reason, reasonsz, "%s", strerrordesc_np(err));
		return -err;
	}
	/* no socket was made: the name gave no address */
	snprintf(reason, reasonsz, "host not found");
	return -EHOSTUNREACH;
}

/* One URI: 0 when it answered, else -errno with reason set. */
static int probe_uri(const char *uri, unsigned timeout_ms, char *reason,
                     size_t reasonsz)
{
	struct probe p = {.deadline = now_ms() + timeout_ms};
	struct berval none = {0, NULL};
	LDAP *ld = NULL;
	enum scheme sc = uri_scheme(uri);
	int r;

	p.cb = (ldap_conncb){.lc_add = on_connect, .lc_del = on_close,
	                     .lc_arg = &p};
	if (sc == SCHEME_BAD || ldap_initialize(&ld, uri) != LDAP_SUCCESS) {
		snprintf(reason, reasonsz,
		         "not an ldap://, ldaps:// or ldapi:// URI");
		return -EINVAL;
	}
	if ((r = set_options(ld, &p, sc, timeout_ms)) < 0) {
		snprintf(reason, reasonsz, r == -2 ? "no TLS context (see the TLS_ "
		                                     "lines of ldap.conf)"
		                                   : "libldap refused its options");
		ldap_unbind_ext_s(ld, NULL, NULL);
		return -ENOTSUP;
	}

	errno = 0;
	int rc = ldap_connect(ld);
	int err = errno;
	if (rc != LDAP_SUCCESS) {
		r = connect_failed(ld, &p, sc, rc, err, reason, reasonsz);
		ldap_unbind_ext_s(ld, NULL, NULL);
		return r;
	}

	struct timeval tv = tv_of(p.deadline - now_ms());
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	rc = ldap_sasl_bind_s(ld, "", LDAP_SASL_SIMPLE, &none, NULL, NULL, NULL);
	if (rc >= 0) {
		r = 0; /* a result code from the server, whichever */
	} else if (rc == LDAP_TIMEOUT || p.timed_out) {
		r = -ETIMEDOUT;
		snprintf(reason, reasonsz, "no answer");
	} else { /* closed, or octets that are no LDAPMessage */
		r = -EPROTO;
		snprintf(reason, reasonsz, "not an LDAP answer");
	}
	ldap_unbind_ext_s(ld, NULL, NULL);
	return r;
}

/* Next URI of a list (blanks or commas between them, as saslauthd's
 * ldap_servers and libldap take it) into uri; false at the end. */
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

int sg_ldap_uris_check(const char *uris, char *bad, size_t badsz)
{
	char uri[SG_LDAP_URI_MAX];
	int n = 0;
	while (uris && next_uri(&uris, uri)) {
		n++;
		if (uri_scheme(uri) == SCHEME_BAD) {
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

/* libldap writes with send(2) without MSG_NOSIGNAL; a directory that
 * hangs up must not kill `saslgate -t`, where SIGPIPE is not ignored.  The
 * signal is the writing thread's own, so blocking it here and taking it
 * off the thread afterwards touches nobody else. */
static void sigpipe_block(sigset_t *old, bool *was_pending)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, old);
	sigpending(&pending);
	*was_pending = sigismember(&pending, SIGPIPE);
}

static void sigpipe_restore(const sigset_t *old, bool was_pending)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	if (!was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&pipe, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Each URI gets timeout_ms of its own: a list names replicas, and the
 * first may be the one that is down. */
int sg_ldap_probe(const char *uris, unsigned timeout_ms, char *why,
                  size_t whysz)
{
	char uri[SG_LDAP_URI_MAX], reason[160];
	int last = -EINVAL;
	size_t o = 0;
	sigset_t old;
	bool was_pending;

	if (why && whysz)
		why[0] = '\0';
	sigpipe_block(&old, &was_pending);
	while (uris && next_uri(&uris, uri)) {
		int r = probe_uri(uri, timeout_ms, reason, sizeof reason);
		if (r == 0) {
			last = 0;
			break;
		}
		last = r;
		if (why && o < whysz)
			o += (size_t)snprintf(why + o, whysz - o, "%s%s: %s",
			                      o ? ", " : "", uri, reason);
	}
	sigpipe_restore(&old, was_pending);
	return last;
}
