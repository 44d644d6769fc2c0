/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link_handshake.c
 *
 * NAME
 *   link_handshake - from the upstream's greeting to READY
 * SUMMARY
 *   The replies before READY (link_handshake_reply) and what each one
 *   starts: EHLO, STARTTLS and the TLS handshake, the identity hand-over,
 *   and READY (the owner's ready callback).
 * DESCRIPTION
 *   220 greeting, then EHLO.  With [upstream] tls, STARTTLS when offered
 *   (required: a link without it fails), then EHLO again over TLS (RFC
 *   3207 4.2).  Then the identity, as the identity setting says:
 *    - xclient: XCLIENT commands with the whole identity (identity.h),
 *      any 2xx takes them, then EHLO again (Postfix XCLIENT_README), this
 *      time with the client's own HELO name (sg_identity_ehlo);
 *    - xforward: checked here (offered, and every attribute fits), sent
 *      later before each MAIL (link_xfer.c);
 *    - auth: AUTH PLAIN or LOGIN as the service account, over TLS or to a
 *      loopback upstream only, then EHLO again (RFC 4954 4);
 *    - header, none: nothing on the wire.
 *   Every refusal fails this server (link_fail_server): the next one is
 *   tried, and no link reaches READY without the identity.  The probe
 *   stops after the last EHLO: it stores what the upstream offers and
 *   says QUIT. */
#include "link_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "caps.h"

/* ---- helpers ------------------------------------------------------------- */

static bool peer_is_loopback(const sg_link *l)
{
	const struct sockaddr *sa = l->ai ? l->ai->ai_addr : NULL;
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

/* Our side of the connection, for a log line that says what to trust. */
static void our_address(const sg_link *l, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof ss;
	snprintf(out, cap, "this host");
	if (!l->c || uv_tcp_getsockname(&l->c->tcp, (struct sockaddr *)&ss,
	                                &len) < 0)
		return;
	if (ss.ss_family == AF_INET)
		uv_ip4_name((struct sockaddr_in *)&ss, out, cap);
	else if (ss.ss_family == AF_INET6)
		uv_ip6_name((struct sockaddr_in6 *)&ss, out, cap);
}

static void send_ehlo(sg_link *l)
{
	char line[UP_CMD_MAX];
	snprintf(line, sizeof line, "EHLO %s\r\n", l->cfg->upstream_helo);
	l->phase = P_EHLO;
	link_cmd(l, line);
	link_arm(l, l->cfg->upstream_timeout_ms);
}

/* After XCLIENT: EHLO as the client, so the upstream's Received line and
 * HELO restrictions see its name; saslgate's own when the client's cannot
 * be sent (logged). */
static void send_client_ehlo(sg_link *l)
{
	char line[UP_CMD_MAX];
	const char *why = NULL;
	int rc = sg_identity_ehlo(line, sizeof line, &l->id,
	                          l->cfg->upstream_helo, &why);
	if (rc != 0)
		log_warn(link_sid(l), "event=upstream_helo_fallback upstream=%s "
		         "helo=%s reason=\"%s\"", l->peer, l->cfg->upstream_helo,
		         why);
	if (rc < 0) {
		send_ehlo(l);
		return;
	}
	l->phase = P_EHLO;
	link_cmd(l, line);
	link_arm(l, l->cfg->upstream_timeout_ms);
}

static void become_ready(sg_link *l)
{
	l->phase = P_READY;
	free(l->xlines);
	l->xlines = NULL;
	uv_timer_stop(&l->timer);
	log_info(link_sid(l),
	         "event=upstream_ready upstream=%s identity=%s tls=%s", l->peer,
	         (const char *[]){"xclient", "xforward", "header", "auth",
	                          "none"}[l->cfg->identity % 5],
	         l->tls_on ? "yes" : "no");
	if (l->was_ready) {
		link_pump(l);
		return;
	}
	l->was_ready = true;
	sg_link_cb cb = l->ready;
	l->ready = NULL;
	if (!l->owner_gone && cb) {
		static const char ok[] = "250 2.0.0 Upstream ready\r\n";
		sg_reply r = {250, ok, sizeof ok - 1};
		cb(l->ready_arg, &r);
	}
}

/* ---- the identity hand-over ---------------------------------------------- */

/* The upstream does not offer verb to us: fail this server, naming the
 * Postfix parameter that lists the hosts it trusts with it. */
static void not_offered(sg_link *l, const char *verb, const char *param)
{
	char ours[INET6_ADDRSTRLEN + 16];
	our_address(l, ours, sizeof ours);
	link_fail_server(l, "%s not offered; add %s to %s on %s", verb, ours,
	                 param, l->peer);
}

/* XCLIENT with the whole identity, in as many commands as it takes. */
static void start_xclient(sg_link *l)
{
	if (!l->ehlo.xclient) {
		not_offered(l, "XCLIENT", "smtpd_authorized_xclient_hosts");
		return;
	}
	/* ~4 KiB needed only until the identity is taken (become_ready
	 * frees it): an idle link must stay small */
	if (!l->xlines)
		l->xlines = sg_xmalloc(SG_XCLIENT_LINES * sizeof *l->xlines);
	l->xi = 0;
	const char *why = NULL;
	l->nx = sg_xclient_lines(&l->id, l->ehlo.xclient_attrs, l->xlines,
	                         SG_XCLIENT_LINES, &why);
	if (l->nx <= 0) {
		/* never an XCLIENT without the whole identity: this server
		 * cannot take it, maybe the next one can */
		l->unfit = true;
		log_error(link_sid(l), "event=upstream_identity_unfit upstream=%s "
		          "command=XCLIENT reason=\"%s\"", l->peer, why);
		link_fail_server(l, "XCLIENT: %s", why);
		return;
	}
	l->phase = P_XCLIENT;
	link_cmd(l, l->xlines[0]);
	link_arm(l, l->cfg->upstream_timeout_ms);
}

/* XFORWARD: offered, and every attribute can be sent whole.  The commands
 * are made again before each MAIL (link_xfer.c); refused here already, at
 * AUTH, if an attribute cannot be. */
static bool xforward_fits(sg_link *l)
{
	if (!l->ehlo.xforward) {
		not_offered(l, "XFORWARD", "smtpd_authorized_xforward_hosts");
		return false;
	}
	char x[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
	const char *why = NULL;
	if (sg_xforward_lines(&l->id, l->ehlo.xforward_attrs, x,
	                      SG_XCLIENT_LINES, &why) < 0) {
		l->unfit = true;
		log_error(link_sid(l), "event=upstream_identity_unfit upstream=%s "
		          "command=XFORWARD reason=\"%s\"", l->peer, why);
		link_fail_server(l, "XFORWARD: %s", why);
		return false;
	}
	return true;
}

/* base64 of p into "PREFIX<b64>\r\n"; never logged (link_send, not
 * link_cmd). */
static void send_b64(sg_link *l, const char *prefix, const char *p, size_t n)
{
	size_t cap = strlen(prefix) + 4 * ((n + 2) / 3) + 3;
	char *line = sg_xmalloc(cap + 1);
	size_t o = strlen(prefix);
	memcpy(line, prefix, o);
	o += (size_t)EVP_EncodeBlock((unsigned char *)line + o,
	                             (const unsigned char *)p, (int)n);
	memcpy(line + o, "\r\n", 3);
	link_send(l, line, o + 2);
	explicit_bzero(line, cap);
	free(line);
	link_arm(l, l->cfg->upstream_timeout_ms);
}

/* The service account's AUTH: PLAIN when offered, else LOGIN. */
static void start_auth(sg_link *l)
{
	const char *user = l->cfg->auth_user;
	if (!l->tls_on && !peer_is_loopback(l)) {
		link_fail_server(l, "identity = auth needs TLS to a non-loopback "
		                    "upstream (set [upstream] tls = required)");
		return;
	}
	if (!l->ehlo.auth_plain && !l->ehlo.auth_login) {
		link_fail_server(l, "upstream offers neither AUTH PLAIN nor LOGIN");
		return;
	}
	l->phase = P_AUTH;
	if (l->ehlo.auth_plain) {
		/* RFC 4616: authzid NUL authcid NUL passwd */
		size_t ul = strlen(user), pl = strlen(l->password);
		char *msg = sg_xmalloc(ul + pl + 2);
		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[1 + ul] = '\0';
		memcpy(msg + 2 + ul, l->password, pl);
		send_b64(l, "AUTH PLAIN ", msg, ul + pl + 2);
		explicit_bzero(msg, ul + pl + 2);
		free(msg);
		return;
	}
	link_cmd(l, "AUTH LOGIN\r\n");
	link_arm(l, l->cfg->upstream_timeout_ms);
}

/* ---- after EHLO ---------------------------------------------------------- */

/* The probe's last EHLO: store what the upstream offers, QUIT. */
static void probe_done(sg_link *l)
{
	sg_upstream_caps_set(&l->ehlo);
	log_info(NULL, "event=upstream_probe upstream=%s pipelining=%d "
	               "size=%llu 8bitmime=%d smtputf8=%d dsn=%d chunking=%d",
	         l->peer, l->ehlo.pipelining, (unsigned long long)l->ehlo.size,
	         l->ehlo.eightbitmime, l->ehlo.smtputf8, l->ehlo.dsn,
	         l->ehlo.chunking);
	uv_timer_stop(&l->timer);
	l->quit_sent = true;
	l->phase = P_READY;
	/* done once QUIT is out: at once if the kernel took it, else in
	 * on_write */
	if (link_cmd(l, "QUIT\r\n") < 0 || l->wq == 0)
		link_finish(l);
}

/* After each EHLO: STARTTLS, the identity, or READY. */
static void after_ehlo(sg_link *l)
{
	const sg_config *cfg = l->cfg;
	if (!l->tls_on && !l->tls_declined && cfg->upstream_tls != SG_UTLS_NONE) {
		if (l->ehlo.starttls) {
			l->phase = P_STARTTLS;
			link_cmd(l, "STARTTLS\r\n");
			link_arm(l, cfg->upstream_timeout_ms);
			return;
		}
		if (cfg->upstream_tls == SG_UTLS_REQUIRED) {
			link_fail_server(l,
			                 "STARTTLS not offered (upstream tls = required)");
			return;
		}
	}
	if (l->probe) {
		probe_done(l);
		return;
	}
	if (l->identity_done) {
		become_ready(l);
		return;
	}
	switch (cfg->identity) {
	case SG_ID_XCLIENT:
		start_xclient(l);
		return;
	case SG_ID_XFORWARD:
		if (!xforward_fits(l))
			return;
		break;
	case SG_ID_AUTH:
		start_auth(l);
		return;
	default: /* header, none: nothing to hand over on the wire */
		break;
	}
	l->identity_done = true;
	become_ready(l);
}

/* ---- TLS ----------------------------------------------------------------- */

void link_tls_step(sg_link *l)
{
	int rc = sg_tls_handshake(l->tls);
	if (link_flush_tls(l) < 0) {
		link_fail_server(l, "write failed during TLS handshake");
		return;
	}
	if (rc < 0) {
		link_fail_server(l, "TLS handshake: %s", sg_tls_error(l->tls));
		return;
	}
	if (rc == 0)
		return;
	l->tls_on = true;
	log_debug(link_sid(l),
	          "event=upstream_tls upstream=%s version=%s cipher=%s", l->peer,
	          sg_tls_version(l->tls), sg_tls_cipher(l->tls));
	send_ehlo(l); /* RFC 3207 4.2: forget everything, EHLO again */
}

/* One client SSL_CTX per (verify, ca_file), shared by every link and
 * worker: loading the CA file per connection would be slow, and the
 * context's session cache lets reconnects resume (tls.c). */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	sg_tls_ctx *ctx;
	bool verify;
	char *ca_file;
} ctx_cache;

static sg_tls_ctx *client_ctx(bool verify, const char *ca_file)
{
	sg_tls_ctx *c = NULL;
	pthread_mutex_lock(&ctx_lock);
	if (ctx_cache.ctx && ctx_cache.verify == verify &&
	    !strcmp(ctx_cache.ca_file, ca_file))
		c = sg_tls_ctx_ref(ctx_cache.ctx);
	pthread_mutex_unlock(&ctx_lock);
	if (c)
		return c;
	sg_errors errs = {0};
	c = sg_tls_client_ctx(verify, ca_file, &errs);
	sg_errors_log(&errs);
	sg_errors_free(&errs);
	if (!c)
		return NULL;
	pthread_mutex_lock(&ctx_lock);
	if (ctx_cache.ctx)
		sg_tls_ctx_unref(ctx_cache.ctx);
	free(ctx_cache.ca_file);
	ctx_cache.ctx = sg_tls_ctx_ref(c);
	ctx_cache.verify = verify;
	ctx_cache.ca_file = sg_xstrdup(ca_file);
	pthread_mutex_unlock(&ctx_lock);
	return c;
}

/* STARTTLS took.  The certificate and its name are verified with
 * tls = required only; tls = starttls is opportunistic. */
static void start_tls(sg_link *l)
{
	const sg_config *cfg = l->cfg;
	bool verify = cfg->upstream_tls == SG_UTLS_REQUIRED;
	const char *host = cfg->servers[l->srv].host;
	const char *name = *cfg->upstream_tls_name ? cfg->upstream_tls_name : host;
	if (!l->tls_ctx) {
		l->tls_ctx = client_ctx(verify, cfg->upstream_ca_file);
		if (!l->tls_ctx) {
			link_fail_server(l, "cannot build the TLS client context");
			return;
		}
	}
	l->tls = sg_tls_new_client(l->tls_ctx, name, verify ? name : NULL);
	if (!l->tls) {
		link_fail_server(l, "cannot start TLS");
		return;
	}
	l->phase = P_TLS;
	link_arm(l, cfg->upstream_timeout_ms);
	link_tls_step(l);
}

/* ---- replies before READY ------------------------------------------------ */

static void starttls_reply(sg_link *l, int code, const char *t)
{
	if (code == 220) {
		start_tls(l);
		return;
	}
	if (l->cfg->upstream_tls == SG_UTLS_REQUIRED) {
		link_fail_server(l, "STARTTLS: %s", t);
		return;
	}
	/* opportunistic: go on in plaintext, STARTTLS is not retried */
	l->tls_declined = true;
	l->phase = P_EHLO;
	after_ehlo(l);
}

/* Postfix answers 550 5.7.0 "insufficient authorization" when our address
 * is not trusted; a 501 refuses a value (Postfix takes values of at most
 * 255 octets), which is not fixed there.  Either way, fail closed. */
static void xclient_refused(sg_link *l, int code, const char *t)
{
	char ours[INET6_ADDRSTRLEN + 16];
	our_address(l, ours, sizeof ours);
	if (code == 550)
		log_error(link_sid(l),
		          "event=upstream_identity_refused upstream=%s "
		          "command=XCLIENT reply=\"%s\" fix=\"add %s to "
		          "smtpd_authorized_xclient_hosts on %s\"",
		          l->peer, t, ours, l->peer);
	else
		log_error(link_sid(l),
		          "event=upstream_identity_refused upstream=%s "
		          "command=XCLIENT reply=\"%s\" reason=\"the "
		          "upstream refused an attribute value (the "
		          "login or HELO name may be longer than it "
		          "takes)\"",
		          l->peer, t);
	link_fail_server(l, "XCLIENT refused: %s", t);
}

static void xclient_reply(sg_link *l, int code, const char *t)
{
	/* Postfix >= 2.3 answers 220 (a new greeting); smtp-sink and older
	 * servers answer 250.  Any 2xx took the attributes. */
	if (code < 200 || code > 299) {
		xclient_refused(l, code, t);
		return;
	}
	if (++l->xi < l->nx) {
		link_cmd(l, l->xlines[l->xi]);
		link_arm(l, l->cfg->upstream_timeout_ms);
		return;
	}
	/* XCLIENT_README: the server answers like a new greeting; the
	 * client must say EHLO again and read the extensions anew. */
	l->identity_done = true;
	send_client_ehlo(l);
}

/* AUTH PLAIN: 235.  AUTH LOGIN: 334, user, 334, password, 235. */
static void auth_reply(sg_link *l, int code, const char *t)
{
	const char *user = l->cfg->auth_user;
	switch (l->phase) {
	case P_AUTH:
		if (code == 334 && !l->ehlo.auth_plain) {
			l->phase = P_AUTH_USER;
			send_b64(l, "", user, strlen(user));
			return;
		}
		if (code != 235) {
			link_fail_server(l, "AUTH as %s: %s", user, t);
			return;
		}
		break;
	case P_AUTH_USER:
		if (code != 334) {
			link_fail_server(l, "AUTH LOGIN user %s: %s", user, t);
			return;
		}
		l->phase = P_AUTH_PASS;
		send_b64(l, "", l->password, strlen(l->password));
		return;
	default: /* P_AUTH_PASS */
		if (code != 235) {
			link_fail_server(l, "AUTH LOGIN as %s: %s", user, t);
			return;
		}
		break;
	}
	l->identity_done = true;
	send_ehlo(l); /* RFC 4954 4: extensions may change */
}

void link_handshake_reply(sg_link *l, const sg_reply_reader *rr,
                          const char *t)
{
	int code = rr->code;
	switch (l->phase) {
	case P_GREETING:
		if (code != 220) {
			link_fail_server(l, "greeting: %s", t);
			return;
		}
		send_ehlo(l);
		return;
	case P_EHLO:
		if (code != 250 || sg_ehlo_parse(rr->text, rr->len, &l->ehlo) < 0) {
			link_fail_server(l, "EHLO: %s", t);
			return;
		}
		if (!l->probe) /* the upstream's limit now (caps.h) */
			sg_upstream_caps_size(&l->ehlo, l->peer);
		after_ehlo(l);
		return;
	case P_STARTTLS:
		starttls_reply(l, code, t);
		return;
	case P_XCLIENT:
		xclient_reply(l, code, t);
		return;
	case P_AUTH:
	case P_AUTH_USER:
	case P_AUTH_PASS:
		auth_reply(l, code, t);
		return;
	default:
		return;
	}
}
