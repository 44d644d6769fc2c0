/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link_connect.c
 *
 * NAME
 *   link_connect - the upstream link's connection, from open to close
 * SUMMARY
 *   sg_link_open, sg_link_close, the accessors and sg_upstream_probe of
 *   link.h; resolve, connect, failover, timeouts, bytes in and out.
 * DESCRIPTION
 *   sg_link_open tries the [upstream] servers in order, each of a name's
 *   addresses in turn (names resolved on the thread pool, literals at
 *   once).  Any failure before READY (refusal, timeout, a refused greeting
 *   or identity: link_fail_server) moves to the next; when none is left
 *   the owner's ready gets 454 4.7.0 and the link is closed.  A link that
 *   was READY and lost its connection reconnects when the next command
 *   comes (link_reopen).
 *
 *   Writes go straight into the socket while nothing is queued; what the
 *   kernel does not take is queued with uv_write, and the queue size drives
 *   the session's back-pressure.  Reads are parsed into whole replies
 *   (through TLS once it is on) and handed to the phase they answer:
 *   link_handshake.c before READY, link_xfer.c after.
 *
 *   Memory: the link is freed only when every handle it owns (two timers,
 *   the TCP handle of the current connection, an in-flight getaddrinfo)
 *   has had its close callback (libuv rule), and the owner has let go. */
#include "link_int.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../common/metrics.h"

#define UP_READ_BUF 65536            /* one read from the socket */
#define UP_PLAIN_MAX (4 * SG_REPLY_MAX) /* decrypted bytes not yet parsed */
#define UP_PASSWORD_MAX 1024
#define UP_LOGTEXT_MAX 200           /* upstream reply quoted in a log line */
#define UP_LAST_ERROR_MAX (UP_PEER_MAX + UP_LOGTEXT_MAX + 110)

#define R_NO_UPSTREAM "454 4.7.0 Temporary authentication failure: relay unavailable\r\n"

static const char *const phase_name[] = {
    "resolve", "connect", "greeting", "ehlo", "starttls", "tls-handshake",
    "xclient", "auth", "auth-user", "auth-password", "ready", "dead",
    "closed"};

typedef struct wreq { /* what the socket did not take at once */
	uv_write_t req;
	sg_link *l;
	size_t n;
	char data[]; /* uv_write needs it until the callback */
} wreq;

static void start_server(sg_link *l);
static void connect_ai(sg_link *l);

/* ---- small helpers ------------------------------------------------------- */

static char *dupnull(const char *s) { return s ? sg_xstrdup(s) : NULL; }

/* A reply for a log line: first line, quotes and controls removed. */
static void logtext(char *out, size_t cap, const char *t, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < cap; i++) {
		char ch = t[i];
		if (ch == '\r' || ch == '\n')
			break;
		out[o++] = (ch == '"' || (unsigned char)ch < 32) ? '\'' : ch;
	}
	out[o] = '\0';
}

static void set_last_error(sg_link *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_last_error(sg_link *l, const char *fmt, ...)
{
	if (!l->last_error)
		l->last_error = sg_xmalloc(UP_LAST_ERROR_MAX);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->last_error, UP_LAST_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* ---- the end of a link --------------------------------------------------- */

static void id_free(sg_identity *id)
{
	free((char *)id->sid);
	free((char *)id->login);
	free((char *)id->client_ip);
	free((char *)id->client_name);
	free((char *)id->helo);
	free((char *)id->tls_version);
	free((char *)id->tls_cipher);
	free((char *)id->dest_ip);
}

static void maybe_free(sg_link *l)
{
	if (l->phase != P_CLOSED || !l->owner_gone || l->nhandles > 0)
		return;
	for (pending *p = l->head, *n; p; p = n) {
		n = p->next;
		free(p);
	}
	for (deferred *d = l->dhead, *n; d; d = n) {
		n = d->next;
		free(d);
	}
	if (l->ais)
		uv_freeaddrinfo(l->ais);
	if (l->tls)
		sg_tls_free(l->tls);
	if (l->tls_ctx)
		sg_tls_ctx_unref(l->tls_ctx);
	if (l->password) {
		explicit_bzero(l->password, strlen(l->password));
		free(l->password);
	}
	free(l->rr);
	free(l->xlines);
	free(l->last_error);
	free(l->rcv);
	free(l->prepend);
	free(l->bdat_err);
	id_free(&l->id);
	sg_config_unref(l->cfg);
	free(l);
}

static void handle_closed(uv_handle_t *h)
{
	sg_link *l = h->data;
	l->nhandles--;
	maybe_free(l);
}

static void conn_closed(uv_handle_t *h)
{
	conn *c = h->data;
	sg_link *l = c->l;
	free(c);
	l->nhandles--;
	maybe_free(l);
}

/* Timers close here; the link is freed once the owner has let go too
 * (sg_link_close, or implicitly after a failed open). */
void link_finish(sg_link *l)
{
	if (l->phase == P_CLOSED)
		return;
	l->phase = P_CLOSED;
	link_conn_close(l);
	uv_close((uv_handle_t *)&l->timer, handle_closed);
	uv_close((uv_handle_t *)&l->defer, handle_closed);
}

/* ---- the worker's buffers ------------------------------------------------ */

/* Buffers per worker thread, not per link: an idle authenticated session
 * must not hold them (idle sessions are kept small), and each is used up
 * before the loop runs on:
 *  - rbuf: one read from the socket; on_read consumes every byte (the
 *    reply reader and the TLS engine keep what they need);
 *  - plain: decrypted upstream bytes, parsed before the next TLS read;
 *  - sbuf: a DATA step's scanner output (plus the Received header and the
 *    final dot), written before the next step (raw_write copies the rest);
 *  - rr: the reply reader of a link not in the middle of a reply
 *    (parse_plain keeps a cut one per link).
 * Allocated by the first link_new of a thread, freed when it ends: as a
 * static __thread array it would be zeroed in every thread libuv's pool
 * starts (66 of them: +10 MB RSS). */
typedef struct wbufs {
	char rbuf[UP_READ_BUF];
	char plain[UP_PLAIN_MAX];
	char sbuf[UP_SCAN_OUT + UP_RCV_ROOM];
	sg_reply_reader rr;
} wbufs;

static __thread wbufs *wb;
static pthread_key_t wb_key;
static pthread_once_t wb_once = PTHREAD_ONCE_INIT;

static void wb_key_init(void)
{
	if (pthread_key_create(&wb_key, free) != 0) {
		/* start-up; no key means no threads either */
		log_error(NULL, "event=fatal reason=\"pthread_key_create failed\"");
		abort();
	}
}

static wbufs *wbufs_get(void)
{
	if (wb)
		return wb;
	pthread_once(&wb_once, wb_key_init);
	wb = sg_xmalloc(sizeof *wb);
	pthread_setspecific(wb_key, wb);
	return wb;
}

sg_buf link_scratch(void)
{
	/* max = cap: a fixed array, never realloc'd */
	return (sg_buf){.data = wb->sbuf, .len = 0, .cap = sizeof wb->sbuf,
	                .max = sizeof wb->sbuf};
}

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	sg_link *l = w->l;
	l->wq -= w->n;
	free(w);
	if (status < 0 && status != UV_ECANCELED)
		log_debug(link_sid(l),
		          "event=upstream_write_error upstream=%s error=%s", l->peer,
		          uv_strerror(status));
	if (l->quit_sent && l->wq == 0 && (l->probe || l->owner_gone))
		link_finish(l);
	if (l->paused && l->wq < UP_WQ_LOW) {
		l->paused = false;
		if (l->drain && !l->owner_gone)
			l->drain(l->done_arg);
	}
}

/* p..n to the socket.  While nothing is queued it goes straight to the
 * kernel (uv_try_write): usually all of it, and then there is no copy, no
 * request to allocate and no completion callback (whose POLLOUT stop costs
 * an epoll_ctl).  Whatever the kernel did not take is copied into one
 * queued uv_write, and so is everything while the queue is not empty, so
 * the order holds.  A hard error from the try is left to uv_write, which
 * reports it in on_write (the read side then sees the connection go).
 * Nothing completes synchronously that on_write would have to act on: the
 * pause/drain state only changes with wq > 0, and the two QUIT sites check
 * wq themselves. */
static int raw_write(sg_link *l, const char *p, size_t n)
{
	if (!l->c || n == 0)
		return l->c ? 0 : -1;
	if (l->wq == 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		int k = uv_try_write((uv_stream_t *)&l->c->tcp, &b, 1);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			if (n == 0)
				return 0;
		}
	}
	wreq *w = sg_xmalloc(sizeof *w + n);
	w->l = l;
	w->n = n;
	memcpy(w->data, p, n);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	int rc = uv_write(&w->req, (uv_stream_t *)&l->c->tcp, &b, 1, on_write);
	if (rc < 0) {
		free(w);
		return -1;
	}
	l->wq += n;
	return 0;
}

int link_flush_tls(sg_link *l)
{
	size_t n;
	const char *p;
	while ((p = sg_tls_out(l->tls, &n)) && n > 0) {
		if (raw_write(l, p, n) < 0)
			return -1;
		sg_tls_out_consume(l->tls, n);
	}
	return 0;
}

int link_send(sg_link *l, const char *p, size_t n)
{
	if (!l->tls_on)
		return raw_write(l, p, n);
	if (sg_tls_write(l->tls, p, n) < 0)
		return -1;
	return link_flush_tls(l);
}

int link_cmd(sg_link *l, const char *line)
{
	if (strncasecmp(line, "AUTH", 4) && l->phase != P_AUTH_USER &&
	    l->phase != P_AUTH_PASS)
		log_debug(link_sid(l), "event=upstream_send upstream=%s line=\"%.*s\"",
		          l->peer, (int)strcspn(line, "\r\n"), line);
	return link_send(l, line, strlen(line));
}

/* ---- timers -------------------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
	sg_link *l = t->data;
	if (l->pooled) { /* kept: its RSET unanswered, or unused too long */
		link_pool_drop(l, l->pool_rset ? "no reply to RSET" : "idle",
		               !l->pool_rset);
		return;
	}
	if (l->phase < P_READY) {
		link_fail_server(l, "no reply within %s timeout",
		                 l->phase <= P_GREETING ? "connect" : "upstream");
		return;
	}
	link_became_dead(l, "timeout waiting for a reply");
}

void link_arm(sg_link *l, uint64_t ms)
{
	uv_timer_start(&l->timer, on_timeout, ms ? ms : 1, 0);
	l->t_armed = uv_hrtime(); /* a reply is due from now */
}

/* ---- failover ------------------------------------------------------------ */

void link_conn_close(sg_link *l)
{
	conn *c = l->c;
	if (!c)
		return;
	l->c = NULL;
	if (l->tls) {
		sg_tls_free(l->tls);
		l->tls = NULL;
	}
	l->tls_on = false;
	uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* No server took the link: log, tell the owner (once), close.  For a
 * reopen of a link that was READY, the queued commands get the 4xx. */
static void fail_all(sg_link *l)
{
	log_error(link_sid(l),
	          "event=upstream_unavailable servers=%zu last_error=\"%s\"%s",
	          l->cfg->nservers, l->last_error ? l->last_error : "",
	          l->probe ? " action=probe" : "");
	sg_metrics_unavailable();
	if (l->was_ready) {
		l->phase = P_DEAD;
		link_became_dead(l, "reopen failed");
		return;
	}
	sg_link_cb cb = l->ready;
	void *arg = l->ready_arg;
	l->ready = NULL;
	link_finish(l);
	if (l->probe) {
		maybe_free(l);
		return;
	}
	/* link.h: on error the link is already closed; the owner does not
	 * call sg_link_close, so it is gone from our side too. */
	bool gone = l->owner_gone;
	l->owner_gone = true;
	if (!gone && cb) {
		const char *t = l->unfit ? R_UNFIT : R_NO_UPSTREAM;
		sg_reply r = {454, t, strlen(t)};
		cb(arg, &r);
	}
	maybe_free(l);
}

static void next_target(sg_link *l)
{
	if (l->ai && l->ai->ai_next) {
		l->ai = l->ai->ai_next;
		sg_metrics_failover();
		connect_ai(l);
		return;
	}
	if (l->ais) {
		uv_freeaddrinfo(l->ais);
		l->ais = l->ai = NULL;
	}
	l->srv++;
	if (l->srv >= l->cfg->nservers) {
		fail_all(l);
		return;
	}
	sg_metrics_failover();
	start_server(l);
}

void link_fail_server(sg_link *l, const char *fmt, ...)
{
	char why[UP_LOGTEXT_MAX + 100];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	set_last_error(l, "%s: %s", l->peer, why);
	log_warn(link_sid(l),
	         "event=upstream_fail upstream=%s action=%s reason=\"%s\"",
	         l->peer, phase_name[l->phase], why);
	sg_metrics_upstream_fail(l->peer);
	uv_timer_stop(&l->timer);
	link_conn_close(l);
	l->identity_done = false;
	next_target(l);
}

/* ---- connecting ---------------------------------------------------------- */

static void set_peer(sg_link *l) { l->peer = l->cfg->servers[l->srv].label; }

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
	(void)h;
	b->base = wb->rbuf;
	b->len = sizeof wb->rbuf;
}

static void on_connect(uv_connect_t *req, int status)
{
	conn *c = req->data;
	sg_link *l = c->l;
	if (c != l->c)
		return; /* an abandoned attempt */
	if (status < 0) {
		link_fail_server(l, "connect: %s", uv_strerror(status));
		return;
	}
	l->phase = P_GREETING;
	/* a new connection: no reply begun on it */
	free(l->rr);
	l->rr = NULL;
	int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc < 0)
		link_fail_server(l, "read: %s", uv_strerror(rc));
}

static void connect_ai(sg_link *l)
{
	conn *c = sg_xcalloc(1, sizeof *c);
	c->l = l;
	c->tcp.data = c;
	c->creq.data = c;
	uv_tcp_init(l->loop, &c->tcp);
	l->nhandles++;
	l->c = c;
	l->phase = P_CONNECT;
	/* Replies to a pipelined group must not wait for Nagle. */
	uv_tcp_nodelay(&c->tcp, 1);
	link_arm(l, l->cfg->connect_timeout_ms);
	int rc = uv_tcp_connect(&c->creq, &c->tcp, l->ai->ai_addr, on_connect);
	if (rc < 0)
		link_fail_server(l, "connect: %s", uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	sg_link *l = req->data;
	free(req);
	l->gai = NULL;
	l->nhandles--;
	if (l->phase == P_CLOSED) {
		if (res)
			uv_freeaddrinfo(res);
		maybe_free(l);
		return;
	}
	if (status < 0 || !res) {
		if (res)
			uv_freeaddrinfo(res);
		link_fail_server(l, "resolve: %s", uv_strerror(status));
		return;
	}
	l->ais = l->ai = res;
	connect_ai(l);
}

static void start_server(sg_link *l)
{
	const sg_upstream_server *s = &l->cfg->servers[l->srv];
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM};
	set_peer(l);
	if (l->ais) { /* a reopen: the previous connection's list */
		uv_freeaddrinfo(l->ais);
		l->ais = l->ai = NULL;
	}
	l->phase = P_RESOLVE;
	/* A literal address and port need no resolver: with AI_NUMERICHOST |
	 * AI_NUMERICSERV getaddrinfo only parses (no DNS, no /etc/hosts, it
	 * cannot block), so it runs here instead of costing every link a
	 * thread-pool round trip (a futex wake and two context switches). */
	struct addrinfo nhints = hints, *res = NULL;
	nhints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(s->host, s->port, &nhints, &res) == 0 && res) {
		l->ais = l->ai = res;
		connect_ai(l);
		return;
	}
	/* a name, on the thread pool: a slow DNS server must not stall the
	 * loop.  The request is allocated only for this (most links never
	 * resolve) and freed by its callback. */
	l->gai = sg_xmalloc(sizeof *l->gai);
	l->gai->data = l;
	int rc = uv_getaddrinfo(l->loop, l->gai, on_resolved, s->host, s->port,
	                        &hints);
	if (rc < 0) {
		free(l->gai);
		l->gai = NULL;
		link_fail_server(l, "resolve: %s", uv_strerror(rc));
		return;
	}
	l->nhandles++;
}

void link_reopen(sg_link *l)
{
	log_info(link_sid(l), "event=upstream_reopen");
	l->srv = 0;
	l->identity_done = false;
	l->xforward_refused = false;
	start_server(l);
}

/* ---- reading ------------------------------------------------------------- */

/* One whole reply: logged, then handled by the phase it answers. */
static void got_reply(sg_link *l, const sg_reply_reader *rr)
{
	char t[UP_LOGTEXT_MAX];
	logtext(t, sizeof t, rr->text, rr->len);
	log_debug(link_sid(l),
	          "event=upstream_reply upstream=%s action=%s reply=\"%s\"",
	          l->peer, phase_name[l->phase], t);
	sg_metrics_reply(l->peer, rr->code, uv_hrtime() - l->t_armed);
	if (l->phase != P_READY) {
		link_handshake_reply(l, rr, t);
		return;
	}
	if (l->probe || l->quit_sent)
		return; /* 221 to our QUIT */
	link_ready_reply(l, rr, t);
}

/* Parse every complete reply in p.  wb->rr is the reply reader (16 KiB) of
 * every link on this worker that is not in the middle of a reply: replies
 * nearly always arrive whole, so a link keeps its own reader (l->rr) only
 * while one is cut between two reads.  parse_plain never runs for two
 * links at once (only on_read calls it, from the loop). */
static void parse_plain(sg_link *l, const char *p, size_t n)
{
	/* stop when this connection is gone: after a failover l->c is the
	 * next server's, and these bytes are not its */
	const conn *c = l->c;
	sg_reply_reader *rr = l->rr;
	if (!rr) {
		rr = &wb->rr;
		sg_reply_reader_init(rr);
	}
	while (n > 0 && c && l->c == c) {
		size_t used = 0;
		int rc = sg_reply_read(rr, p, n, &used);
		p += used;
		n -= used;
		if (rc < 0) {
			if (l->phase < P_READY)
				link_fail_server(l, "bad reply: %s", rr->error);
			else
				link_became_dead(l, rr->error);
			return;
		}
		if (rc == 0)
			break;
		int before = l->phase;
		got_reply(l, rr);
		/* RFC 3207 / CVE-2011-0411: nothing may follow the STARTTLS 220
		 * in plaintext (a man in the middle's injected replies). */
		if (before == P_STARTTLS && l->phase == P_TLS && n > 0 && l->c == c) {
			link_fail_server(l, "data after the STARTTLS reply");
			return;
		}
	}
	if (!c || l->c != c)
		return; /* on_connect starts the next connection's reader */
	bool partial = rr->len > 0 && !rr->complete;
	if (partial && rr == &wb->rr) {
		/* a reply cut between reads: keep what we have of it */
		l->rr = sg_xmalloc(sizeof *l->rr);
		*l->rr = wb->rr;
	} else if (!partial && rr == l->rr) {
		free(l->rr);
		l->rr = NULL;
	}
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	conn *c = st->data;
	sg_link *l = c->l;
	if (c != l->c || nread == 0)
		return;
	if (nread < 0 && l->quit_sent) {
		link_finish(l); /* the 221 and close after our QUIT */
		return;
	}
	if (nread < 0) {
		const char *why = nread == UV_EOF ? "connection closed by upstream"
		                                  : uv_strerror((int)nread);
		if (l->phase < P_READY)
			link_fail_server(l, "%s", why);
		else if (l->probe && l->quit_sent)
			link_finish(l);
		else
			link_became_dead(l, why);
		return;
	}
	if (!l->tls) {
		parse_plain(l, b->base, (size_t)nread);
		return;
	}
	if (sg_tls_feed(l->tls, b->base, (size_t)nread) < 0) {
		link_became_dead(l, "out of memory");
		return;
	}
	if (l->phase == P_TLS) {
		link_tls_step(l);
		if (l->phase == P_TLS || !l->tls || l->c != c)
			return;
	}
	for (;;) {
		sg_buf plain = {.data = wb->plain, .cap = sizeof wb->plain,
		                .max = sizeof wb->plain}; /* fixed: never realloc'd */
		int rc = sg_tls_read(l->tls, &plain);
		if (plain.len)
			parse_plain(l, plain.data, plain.len);
		if (!l->tls || l->c != c)
			return;
		if (rc != 0) {
			if (l->phase < P_READY)
				link_fail_server(l, "TLS: %s", rc > 0 ? "closed" : "error");
			else
				link_became_dead(l, rc > 0 ? "TLS closed" : "TLS error");
			return;
		}
		if (plain.len < plain.max)
			return; /* drained */
	}
}

/* ---- open / close / accessors -------------------------------------------- */

void link_set_identity(sg_link *l, const sg_identity *id)
{
	sg_identity old = l->id;
	l->id = *id;
	l->id.sid = sg_xstrdup(id->sid ? id->sid : "-");
	l->id.login = dupnull(id->login);
	l->id.client_ip = dupnull(id->client_ip);
	l->id.client_name = dupnull(id->client_name);
	l->id.helo = dupnull(id->helo);
	l->id.tls_version = dupnull(id->tls_version);
	l->id.tls_cipher = dupnull(id->tls_cipher);
	l->id.dest_ip = dupnull(id->dest_ip);
	id_free(&old);
}

static sg_link *link_new(uv_loop_t *loop, const sg_config *cfg,
                         const sg_identity *id)
{
	/* every later use of wb is on this loop's thread, after this */
	wbufs_get();
	sg_link *l = sg_xcalloc(1, sizeof *l);
	l->loop = loop;
	l->cfg = sg_config_ref((sg_config *)cfg);
	l->peer = ""; /* the server's label from its first connect */
	link_set_identity(l, id);
	uv_timer_init(loop, &l->timer);
	uv_timer_init(loop, &l->defer);
	l->timer.data = l->defer.data = l;
	l->nhandles = 2;
	return l;
}

/* The service account's password (identity = auth), read at each open so
 * a changed file takes effect without a reload; kept until the link goes. */
char *link_read_secret(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	char buf[UP_PASSWORD_MAX];
	if (!fgets(buf, sizeof buf, f)) {
		fclose(f);
		explicit_bzero(buf, sizeof buf);
		return NULL;
	}
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	char *p = sg_xstrdup(buf);
	explicit_bzero(buf, sizeof buf);
	return p;
}

static int read_password(sg_link *l)
{
	l->password = link_read_secret(l->cfg->auth_password_file);
	return l->password ? 0 : -1;
}

/* Open failed before any connection: ready gets the 454 from the loop, so
 * the owner holds the pointer before its callback runs. */
static void open_failed(uv_timer_t *t) { fail_all(t->data); }

sg_link *sg_link_open(uv_loop_t *loop, const sg_config *cfg,
                      const sg_identity *id, sg_link_cb ready, void *arg)
{
	const char *why = sg_identity_unfit(id, cfg->identity);
	sg_link *l = why ? NULL : link_pool_take(loop, cfg, id, ready, arg);
	if (l)
		return l;
	l = link_new(loop, cfg, id);
	l->ready = ready;
	l->ready_arg = arg;
	if (why) {
		/* never an upstream session with a cut or missing identity */
		char *u = sg_identity_log_dup(id->login);
		log_error(link_sid(l),
		          "event=upstream_identity_unfit user=%s reason=\"%s\"",
		          u ? u : "-", why);
		free(u);
		l->unfit = true;
		set_last_error(l, "identity cannot be passed on: %s", why);
		uv_timer_start(&l->defer, open_failed, 0, 0);
		return l;
	}
	if (cfg->identity == SG_ID_AUTH && read_password(l) < 0) {
		/* the secret's path only; never its content */
		set_last_error(l, "cannot read auth_password_file %s",
		               cfg->auth_password_file);
		uv_timer_start(&l->defer, open_failed, 0, 0);
		return l;
	}
	if (cfg->nservers == 0) {
		set_last_error(l, "no [upstream] server");
		uv_timer_start(&l->defer, open_failed, 0, 0);
		return l;
	}
	start_server(l);
	return l;
}

void link_end(sg_link *l, bool quit)
{
	bool idle = l->phase == P_READY && !l->in_data && l->c;
	l->owner_gone = true;
	if (quit && idle && !l->quit_sent) {
		l->quit_sent = true;
		uv_timer_stop(&l->timer);
		if (link_cmd(l, "QUIT\r\n") == 0 && l->wq > 0)
			return; /* on_write finishes once QUIT is out */
	}
	link_finish(l);
	maybe_free(l);
}

void sg_link_close(sg_link *l)
{
	if (!l)
		return;
	l->owner_gone = true;
	if (link_pool_put(l))
		return;
	link_end(l, true);
}

const char *sg_link_last_queue_id(sg_link *l) { return l->qid; }
const char *sg_link_peer(sg_link *l) { return l->peer; }
bool sg_link_alive(sg_link *l)
{
	return l && (l->phase == P_READY || (l->phase < P_READY && l->was_ready));
}

/* ---- the capability probe ------------------------------------------------ */

/* A link without an owner: EHLO (after STARTTLS when configured), store
 * what the upstream offers (caps.h), QUIT.  link_handshake.c ends it. */
void sg_upstream_probe(uv_loop_t *loop, const sg_config *cfg)
{
	sg_identity id = {.sid = "probe"};
	if (cfg->nservers == 0)
		return;
	sg_link *l = link_new(loop, cfg, &id);
	if (!l)
		return;
	l->probe = true;
	l->owner_gone = true; /* nobody to call back */
	start_server(l);
}
