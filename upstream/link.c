/* upstream/link.c: the connection to the internal MTA (implements link.h).
 *
 * A linear chain of states, nginx-mail style, each naming what it does so a
 * log line says where an upstream failed:
 *   RESOLVE -> CONNECT -> GREETING -> EHLO [-> STARTTLS -> TLS -> EHLO]
 *   -> identity (XCLIENT -> EHLO | AUTH | nothing) -> READY
 * Any failure before READY moves to the next address / server (failover);
 * when none is left, ready gets 454 4.7.0 (fail closed: never a 2xx without
 * the identity, never a relay without it).
 *
 * In READY, commands are queued in order; each gets exactly one reply, the
 * upstream's, or a 451 of ours when the connection is lost.  DATA bytes go
 * through the scanner (data_scan.c) into a per-worker scratch buffer and
 * straight into the socket (uv_try_write); what the kernel does not take is
 * queued with uv_write, and the queue size drives back-pressure.  The
 * Received header goes with the first octets of a message and the final
 * dot with its last: one write per read from the client, usually.  A message we refuse mid-stream (bare CR/LF,
 * too big) is aborted by closing the upstream connection without the final
 * dot, so the upstream cannot deliver a part of it; the link reconnects
 * lazily for the next command.
 *
 * Memory: the link is freed only when every handle it owns (two timers, the
 * TCP handle of the current connection, an in-flight getaddrinfo) has had
 * its close callback (libuv rule). */
#include "link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/buf.h"
#include "../common/log.h"
#include "../common/tls.h"
#include "caps.h"
#include "data_scan.h"
#include "identity.h"
#include "received.h"
#include "reply_parse.h"

/* Bounds (STYLE.md: every buffer has a named bound). */
#define UP_READ_BUF 65536            /* one read from the socket */
#define UP_PLAIN_MAX (4 * SG_REPLY_MAX) /* decrypted bytes not yet parsed */
#define UP_WQ_HIGH (256 * 1024)      /* pause the client above this */
#define UP_WQ_LOW (64 * 1024)        /* and resume below this */
#define UP_CMD_MAX 512               /* RFC 5321 4.5.3.1.4 command line */
#define UP_PEER_MAX 300
#define UP_QID_MAX 64
#define UP_PASSWORD_MAX 1024
#define UP_LOGTEXT_MAX 200           /* upstream reply quoted in a log line */
#define UP_LAST_ERROR_MAX (UP_PEER_MAX + UP_LOGTEXT_MAX + 110)
#define UP_SCAN_IN (32 * 1024)       /* DATA octets scanned per step */
/* The scanner's output for UP_SCAN_IN octets: at most twice as long (bare
 * LF -> CRLF with normalize) plus a held header name and a held dot. */
#define UP_SCAN_OUT (2 * UP_SCAN_IN + SG_SCAN_HOLD + 16)
/* Room for the Received header (values of at most SG_TRACE_VALUE_MAX, the
 * date and ~200 octets of fixed text; a long login may need more, and such
 * a header is written on its own) and the final ".\r\n", written with the
 * message's first and last octets. */
#define UP_RCV_ROOM 4096

/* Replies of ours (code, text); all 4xx/5xx: never a 2xx we did not get. */
#define R_NO_UPSTREAM "454 4.7.0 Temporary authentication failure: relay unavailable\r\n"
#define R_UNFIT "454 4.7.0 Temporary authentication failure: identity cannot be passed on\r\n"
#define R_LOST "451 4.4.2 Upstream connection lost\r\n"
#define R_XFWD "451 4.7.0 Upstream refused the client identity\r\n"
#define R_BARE "550 5.5.2 Message rejected: bare CR or LF line ending\r\n"
/* NUL is no 7bit or 8bit data (RFC 2045 2.7, 2.8); 5.6.0: RFC 3463 */
#define R_NUL "550 5.6.0 Message contains NUL octets\r\n"
#define R_BIG "552 5.3.4 Message size exceeds fixed maximum message size\r\n"

enum phase {
	P_RESOLVE,
	P_CONNECT,
	P_GREETING,
	P_EHLO,
	P_STARTTLS,
	P_TLS,
	P_XCLIENT,
	P_AUTH,       /* AUTH PLAIN sent, or AUTH LOGIN waiting for 334 */
	P_AUTH_USER,  /* AUTH LOGIN: user sent */
	P_AUTH_PASS,  /* AUTH LOGIN: password sent */
	P_READY,
	P_DEAD,       /* no connection; reopened by the next command */
	P_CLOSED,     /* failed open, sg_link_close or probe done */
};

static const char *const phase_name[] = {
    "resolve", "connect", "greeting", "ehlo", "starttls", "tls-handshake",
    "xclient", "auth", "auth-user", "auth-password", "ready", "dead",
    "closed"};

enum kind { K_USER, K_XFORWARD, K_DATA_END, K_QUIT };

typedef struct pending {
	struct pending *next;
	int kind;
	bool sent;
	sg_link_cb cb;
	void *arg;
	size_t len;
	char line[]; /* the command, CRLF included */
} pending;

typedef struct deferred { /* a reply of ours, delivered from the loop */
	struct deferred *next;
	sg_link_cb cb;
	void *arg;
	int code;
	size_t len;
	char text[];
} deferred;

typedef struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	sg_link *l;
} conn;

typedef struct wreq { /* what the socket did not take at once */
	uv_write_t req;
	sg_link *l;
	size_t n;
	char data[]; /* uv_write needs it until the callback */
} wreq;

struct sg_link {
	uv_loop_t *loop;
	sg_config *cfg;
	sg_identity id; /* strings owned */
	sg_link_cb ready;
	void *ready_arg;
	bool probe;     /* sg_upstream_probe: EHLO, QUIT, store caps */
	bool was_ready; /* reached READY once: reopen instead of ready cb */
	bool owner_gone; /* sg_link_close called: no more callbacks */
	int phase;

	/* which server / address */
	size_t srv;
	uv_getaddrinfo_t gai;
	struct addrinfo *ais, *ai;
	char peer[UP_PEER_MAX];
	/* why the last server failed, for the one upstream_unavailable line;
	 * allocated at the first failure (an idle link that never failed
	 * carries none of it: S4 memory per idle session) */
	char *last_error;
	int nhandles; /* open handles + in-flight getaddrinfo */

	conn *c;
	uv_timer_t timer; /* connect / reply timeout */
	uv_timer_t defer; /* delivers deferred replies */
	sg_reply_reader *rr; /* only while a reply is cut between reads */
	sg_tls_ctx *tls_ctx;
	sg_tls *tls;
	bool tls_on;
	bool tls_declined; /* opportunistic STARTTLS refused: plaintext */
	size_t wq; /* bytes queued in uv_write */
	bool quit_sent;

	sg_ehlo ehlo;
	bool identity_done; /* XCLIENT taken / AUTH 235: next EHLO is final */
	/* the identity cannot be carried whole (identity.h): the open fails
	 * with R_UNFIT and nothing is relayed */
	bool unfit;
	char (*xlines)[SG_XCLIENT_LINE_MAX + 1]; /* during the hand-over only */
	int nx, xi;
	char *password;

	/* commands */
	pending *head, *tail;
	int inflight;
	bool barrier_inflight;
	bool xforward_refused;
	deferred *dhead, *dtail;

	/* DATA */
	bool in_data;
	bool aborted; /* upstream connection dropped on purpose (bad/too big) */
	bool lost;    /* upstream connection lost during DATA */
	bool paused;
	sg_scan scan;
	char *rcv;    /* Received header without its date: pre, then post */
	size_t rcv_pre, rcv_post;
	bool rcv_due;    /* Received not written yet: goes with the first octets */
	time_t rcv_time; /* its date: when the 354 came */
	sg_link_cb done;
	void *done_arg;
	void (*drain)(void *arg);
	char qid[UP_QID_MAX];
};

static void start_server(sg_link *l);
static void fail_server(sg_link *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_close(sg_link *l);
static void pump(sg_link *l);
static void became_dead(sg_link *l, const char *why);
static void connect_ai(sg_link *l);

/* ---- small helpers ---------------------------------------------------- */

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
	if (!l->last_error && !(l->last_error = malloc(UP_LAST_ERROR_MAX)))
		return; /* the log line then says last_error="" */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->last_error, UP_LAST_ERROR_MAX, fmt, ap);
	va_end(ap);
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
	free((char *)l->id.sid);
	free((char *)l->id.login);
	free((char *)l->id.client_ip);
	free((char *)l->id.client_name);
	free((char *)l->id.helo);
	free((char *)l->id.tls_version);
	free((char *)l->id.tls_cipher);
	free((char *)l->id.dest_ip);
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

/* Stop everything for good.  Timers close here; the link is freed once the
 * owner has let go too (sg_link_close, or implicitly after a failed open). */
static void link_finish(sg_link *l)
{
	if (l->phase == P_CLOSED)
		return;
	l->phase = P_CLOSED;
	conn_close(l);
	uv_close((uv_handle_t *)&l->timer, handle_closed);
	uv_close((uv_handle_t *)&l->defer, handle_closed);
}

static const char *sid(const sg_link *l) { return l->id.sid; }

/* ---- deferred replies of ours ----------------------------------------- */

static void defer_fire(uv_timer_t *t)
{
	sg_link *l = t->data;
	while (l->dhead && !l->owner_gone) {
		deferred *d = l->dhead;
		l->dhead = d->next;
		if (!l->dhead)
			l->dtail = NULL;
		sg_reply r = {d->code, d->text, d->len};
		if (d->cb)
			d->cb(d->arg, &r);
		free(d);
	}
}

/* Deliver text (a whole reply of ours) to cb from the loop, not from inside
 * the caller's sg_link_* call. */
static void defer_reply(sg_link *l, sg_link_cb cb, void *arg, const char *text)
{
	size_t n = strlen(text);
	deferred *d = malloc(sizeof *d + n + 1);
	if (!d)
		abort(); /* a few bytes; nothing sensible to do without them */
	d->next = NULL;
	d->cb = cb;
	d->arg = arg;
	d->code = atoi(text);
	d->len = n;
	memcpy(d->text, text, n + 1);
	if (l->dtail)
		l->dtail->next = d;
	else
		l->dhead = d;
	l->dtail = d;
	if (l->phase != P_CLOSED)
		uv_timer_start(&l->defer, defer_fire, 0, 0);
}

static void call(sg_link *l, sg_link_cb cb, void *arg, const char *text)
{
	if (l->owner_gone || !cb)
		return;
	sg_reply r = {atoi(text), text, strlen(text)};
	cb(arg, &r);
}

/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	sg_link *l = w->l;
	l->wq -= w->n;
	free(w);
	if (status < 0 && status != UV_ECANCELED)
		log_debug(sid(l), "event=upstream_write_error upstream=%s error=%s",
		          l->peer, uv_strerror(status));
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
 * an epoll_ctl; the S2/S3 profiles, issue 9).  Whatever the kernel did not
 * take is copied into one queued uv_write, and so is everything while the
 * queue is not empty, so the order holds.  A hard error from the try is
 * left to uv_write to report in on_write, as before (the read side then
 * sees the connection go).  Nothing completes synchronously that on_write
 * would have to act on: the pause/drain state only changes with wq > 0,
 * and the two QUIT sites check wq themselves. */
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
	wreq *w = malloc(sizeof *w + n);
	if (!w)
		return -1;
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

static int flush_tls(sg_link *l)
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

/* Plaintext to the upstream, through TLS once it is on. */
static int up_send(sg_link *l, const char *p, size_t n)
{
	if (!l->tls_on)
		return raw_write(l, p, n);
	if (sg_tls_write(l->tls, p, n) < 0)
		return -1;
	return flush_tls(l);
}

static int up_cmd(sg_link *l, const char *line)
{
	if (strncasecmp(line, "AUTH", 4) && l->phase != P_AUTH_USER &&
	    l->phase != P_AUTH_PASS)
		log_debug(sid(l), "event=upstream_send upstream=%s line=\"%.*s\"",
		          l->peer, (int)strcspn(line, "\r\n"), line);
	return up_send(l, line, strlen(line));
}

/* ---- timers ------------------------------------------------------------ */

static void on_timeout(uv_timer_t *t)
{
	sg_link *l = t->data;
	if (l->phase < P_READY) {
		fail_server(l, "no reply within %s timeout",
		            l->phase <= P_GREETING ? "connect" : "upstream");
		return;
	}
	became_dead(l, "timeout waiting for a reply");
}

static void arm(sg_link *l, uint64_t ms)
{
	uv_timer_start(&l->timer, on_timeout, ms ? ms : 1, 0);
}

/* ---- connection setup ---------------------------------------------------- */

static void conn_close(sg_link *l)
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

/* No server took the link: tell the owner (once), log, close. */
static void fail_all(sg_link *l)
{
	log_error(sid(l),
	          "event=upstream_unavailable servers=%zu last_error=\"%s\"%s",
	          l->cfg->nservers, l->last_error ? l->last_error : "",
	          l->probe ? " action=probe" : "");
	if (l->was_ready) {
		/* a lazy reopen: the queued commands get our 4xx */
		l->phase = P_DEAD;
		became_dead(l, "reopen failed");
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
	start_server(l);
}

/* This server (address) failed before READY: log why, try the next one
 * (refusal, timeout, 4xx/5xx greeting, identity refused). */
static void fail_server(sg_link *l, const char *fmt, ...)
{
	char why[UP_LOGTEXT_MAX + 100];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	set_last_error(l, "%s: %s", l->peer, why);
	log_warn(sid(l), "event=upstream_fail upstream=%s action=%s reason=\"%s\"",
	         l->peer, phase_name[l->phase], why);
	uv_timer_stop(&l->timer);
	conn_close(l);
	l->identity_done = false;
	next_target(l);
}

static void set_peer(sg_link *l)
{
	const sg_upstream_server *s = &l->cfg->servers[l->srv];
	bool v6 = strchr(s->host, ':') != NULL;
	snprintf(l->peer, sizeof l->peer, "%s%s%s:%s", v6 ? "[" : "", s->host,
	         v6 ? "]" : "", s->port);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

/* Buffers per worker thread, not per link: an idle authenticated session
 * must not hold them (issue 9: <= 19 KiB per idle TLS session), and each is
 * used up before the loop runs on:
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
	if (pthread_key_create(&wb_key, free) != 0)
		abort(); /* start-up; no key means no threads either */
}

static wbufs *wbufs_get(void)
{
	if (wb)
		return wb;
	pthread_once(&wb_once, wb_key_init);
	wb = malloc(sizeof *wb);
	if (wb)
		pthread_setspecific(wb_key, wb);
	return wb;
}

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
		fail_server(l, "connect: %s", uv_strerror(status));
		return;
	}
	l->phase = P_GREETING;
	/* a new connection: no reply begun on it */
	free(l->rr);
	l->rr = NULL;
	int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc < 0)
		fail_server(l, "read: %s", uv_strerror(rc));
}

static void connect_ai(sg_link *l)
{
	conn *c = calloc(1, sizeof *c);
	if (!c) {
		fail_server(l, "out of memory");
		return;
	}
	c->l = l;
	c->tcp.data = c;
	c->creq.data = c;
	uv_tcp_init(l->loop, &c->tcp);
	l->nhandles++;
	l->c = c;
	l->phase = P_CONNECT;
	/* Replies to a pipelined group must not wait for Nagle. */
	uv_tcp_nodelay(&c->tcp, 1);
	arm(l, l->cfg->connect_timeout_ms);
	int rc = uv_tcp_connect(&c->creq, &c->tcp, l->ai->ai_addr, on_connect);
	if (rc < 0)
		fail_server(l, "connect: %s", uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	sg_link *l = req->data;
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
		fail_server(l, "resolve: %s", uv_strerror(status));
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
	l->gai.data = l;
	/* a name, on the thread pool: a slow DNS server must not stall the loop */
	int rc = uv_getaddrinfo(l->loop, &l->gai, on_resolved, s->host, s->port,
	                        &hints);
	if (rc < 0) {
		fail_server(l, "resolve: %s", uv_strerror(rc));
		return;
	}
	l->nhandles++;
}

/* ---- identity hand-over -------------------------------------------------- */

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

static int read_password(sg_link *l)
{
	FILE *f = fopen(l->cfg->auth_password_file, "re");
	if (!f)
		return -1;
	char buf[UP_PASSWORD_MAX];
	if (!fgets(buf, sizeof buf, f)) {
		fclose(f);
		explicit_bzero(buf, sizeof buf);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	l->password = sg_xstrdup(buf);
	explicit_bzero(buf, sizeof buf);
	return 0;
}

/* base64 of p into "PREFIX<b64>\r\n"; never logged (up_cmd skips AUTH). */
static void send_b64(sg_link *l, const char *prefix, const char *p, size_t n)
{
	size_t cap = strlen(prefix) + 4 * ((n + 2) / 3) + 3;
	char *line = malloc(cap + 1);
	if (!line) {
		fail_server(l, "out of memory");
		return;
	}
	size_t o = strlen(prefix);
	memcpy(line, prefix, o);
	o += (size_t)EVP_EncodeBlock((unsigned char *)line + o,
	                             (const unsigned char *)p, (int)n);
	memcpy(line + o, "\r\n", 3);
	up_send(l, line, o + 2);
	explicit_bzero(line, cap);
	free(line);
	arm(l, l->cfg->upstream_timeout_ms);
}

static void start_auth(sg_link *l)
{
	const char *user = l->cfg->auth_user;
	if (!l->tls_on && !peer_is_loopback(l)) {
		fail_server(l, "identity = auth needs TLS to a non-loopback upstream "
		               "(set [upstream] tls = required)");
		return;
	}
	if (!l->ehlo.auth_plain && !l->ehlo.auth_login) {
		fail_server(l, "upstream offers neither AUTH PLAIN nor LOGIN");
		return;
	}
	l->phase = P_AUTH;
	if (l->ehlo.auth_plain) {
		/* RFC 4616: authzid NUL authcid NUL passwd */
		size_t ul = strlen(user), pl = strlen(l->password);
		char *msg = malloc(ul + pl + 2);
		if (!msg) {
			fail_server(l, "out of memory");
			return;
		}
		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[1 + ul] = '\0';
		memcpy(msg + 2 + ul, l->password, pl);
		send_b64(l, "AUTH PLAIN ", msg, ul + pl + 2);
		explicit_bzero(msg, ul + pl + 2);
		free(msg);
		return;
	}
	up_cmd(l, "AUTH LOGIN\r\n");
	arm(l, l->cfg->upstream_timeout_ms);
}

static void become_ready(sg_link *l)
{
	l->phase = P_READY;
	free(l->xlines);
	l->xlines = NULL;
	uv_timer_stop(&l->timer);
	log_info(sid(l), "event=upstream_ready upstream=%s identity=%s tls=%s",
	         l->peer,
	         (const char *[]){"xclient", "xforward", "header", "auth",
	                          "none"}[l->cfg->identity % 5],
	         l->tls_on ? "yes" : "no");
	if (l->was_ready) {
		pump(l);
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

/* After the last EHLO of a step: STARTTLS, identity, or done. */
static void after_ehlo(sg_link *l)
{
	const sg_config *cfg = l->cfg;
	if (!l->tls_on && !l->tls_declined && cfg->upstream_tls != SG_UTLS_NONE) {
		if (l->ehlo.starttls) {
			l->phase = P_STARTTLS;
			up_cmd(l, "STARTTLS\r\n");
			arm(l, cfg->upstream_timeout_ms);
			return;
		}
		if (cfg->upstream_tls == SG_UTLS_REQUIRED) {
			fail_server(l, "STARTTLS not offered (upstream tls = required)");
			return;
		}
	}
	if (l->probe) {
		sg_upstream_caps_set(&l->ehlo);
		log_info(NULL, "event=upstream_probe upstream=%s pipelining=%d "
		               "size=%llu 8bitmime=%d smtputf8=%d dsn=%d chunking=%d",
		         l->peer, l->ehlo.pipelining,
		         (unsigned long long)l->ehlo.size, l->ehlo.eightbitmime,
		         l->ehlo.smtputf8, l->ehlo.dsn, l->ehlo.chunking);
		uv_timer_stop(&l->timer);
		l->quit_sent = true;
		l->phase = P_READY;
		/* done once QUIT is out: now if the kernel took it at once,
		 * else in on_write */
		if (up_cmd(l, "QUIT\r\n") < 0 || l->wq == 0)
			link_finish(l);
		return;
	}
	if (l->identity_done) {
		become_ready(l);
		return;
	}
	char ours[INET6_ADDRSTRLEN + 16];
	switch (cfg->identity) {
	case SG_ID_XCLIENT:
		if (!l->ehlo.xclient) {
			our_address(l, ours, sizeof ours);
			fail_server(l, "XCLIENT not offered; add %s to "
			               "smtpd_authorized_xclient_hosts on %s",
			            ours, l->peer);
			return;
		}
		/* ~4 KiB needed only until the identity is taken (become_ready
		 * frees it): an idle link must stay small (issue 9, S4) */
		if (!l->xlines &&
		    !(l->xlines = malloc(SG_XCLIENT_LINES * sizeof *l->xlines))) {
			fail_server(l, "out of memory");
			return;
		}
		l->xi = 0;
		const char *why = NULL;
		l->nx = sg_xclient_lines(&l->id, l->ehlo.xclient_attrs, l->xlines,
		                         SG_XCLIENT_LINES, &why);
		if (l->nx <= 0) {
			/* never an XCLIENT without the whole identity: this server
			 * cannot take it, maybe the next one can */
			l->unfit = true;
			log_error(sid(l), "event=upstream_identity_unfit upstream=%s "
			          "command=XCLIENT reason=\"%s\"", l->peer, why);
			fail_server(l, "XCLIENT: %s", why);
			return;
		}
		l->phase = P_XCLIENT;
		up_cmd(l, l->xlines[0]);
		arm(l, cfg->upstream_timeout_ms);
		return;
	case SG_ID_XFORWARD: {
		if (!l->ehlo.xforward) {
			our_address(l, ours, sizeof ours);
			fail_server(l, "XFORWARD not offered; add %s to "
			               "smtpd_authorized_xforward_hosts on %s",
			            ours, l->peer);
			return;
		}
		/* made again before each MAIL; refused here already, at AUTH,
		 * if an attribute cannot be sent whole */
		char x[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
		const char *xwhy = NULL;
		if (sg_xforward_lines(&l->id, l->ehlo.xforward_attrs, x,
		                      SG_XCLIENT_LINES, &xwhy) < 0) {
			l->unfit = true;
			log_error(sid(l), "event=upstream_identity_unfit upstream=%s "
			          "command=XFORWARD reason=\"%s\"", l->peer, xwhy);
			fail_server(l, "XFORWARD: %s", xwhy);
			return;
		}
		l->identity_done = true;
		become_ready(l);
		return;
	}
	case SG_ID_AUTH:
		start_auth(l);
		return;
	default: /* header, none: nothing to hand over on the wire */
		l->identity_done = true;
		become_ready(l);
		return;
	}
}

static void send_ehlo(sg_link *l)
{
	char line[UP_CMD_MAX];
	snprintf(line, sizeof line, "EHLO %s\r\n", l->cfg->upstream_helo);
	l->phase = P_EHLO;
	up_cmd(l, line);
	arm(l, l->cfg->upstream_timeout_ms);
}

static void tls_step(sg_link *l)
{
	int rc = sg_tls_handshake(l->tls);
	if (flush_tls(l) < 0) {
		fail_server(l, "write failed during TLS handshake");
		return;
	}
	if (rc < 0) {
		fail_server(l, "TLS handshake: %s", sg_tls_error(l->tls));
		return;
	}
	if (rc == 0)
		return;
	l->tls_on = true;
	log_debug(sid(l), "event=upstream_tls upstream=%s version=%s cipher=%s",
	          l->peer, sg_tls_version(l->tls), sg_tls_cipher(l->tls));
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

static void start_tls(sg_link *l)
{
	const sg_config *cfg = l->cfg;
	bool verify = cfg->upstream_tls == SG_UTLS_REQUIRED;
	const char *host = cfg->servers[l->srv].host;
	const char *name = *cfg->upstream_tls_name ? cfg->upstream_tls_name : host;
	if (!l->tls_ctx) {
		l->tls_ctx = client_ctx(verify, cfg->upstream_ca_file);
		if (!l->tls_ctx) {
			fail_server(l, "cannot build the TLS client context");
			return;
		}
	}
	l->tls = sg_tls_new_client(l->tls_ctx, name, verify ? name : NULL);
	if (!l->tls) {
		fail_server(l, "cannot start TLS");
		return;
	}
	l->phase = P_TLS;
	arm(l, cfg->upstream_timeout_ms);
	tls_step(l);
}

/* ---- replies -------------------------------------------------------------- */

static void fail_pending(sg_link *l, const char *text)
{
	pending *p = l->head;
	l->head = l->tail = NULL;
	l->inflight = 0;
	l->barrier_inflight = false;
	while (p) {
		pending *n = p->next;
		if (p->kind == K_USER || p->kind == K_DATA_END)
			call(l, p->cb, p->arg, text);
		free(p);
		p = n;
	}
}

/* The connection went away after READY (or the owner's reopen failed). */
static void became_dead(sg_link *l, const char *why)
{
	if (l->phase != P_DEAD)
		log_warn(sid(l), "event=upstream_lost upstream=%s reason=\"%s\"",
		         l->peer, why);
	uv_timer_stop(&l->timer);
	conn_close(l);
	if (l->phase == P_CLOSED)
		return;
	l->phase = P_DEAD;
	l->identity_done = false;
	if (l->in_data)
		l->lost = true;
	fail_pending(l, R_LOST);
}

static bool is_barrier(const sg_link *l, const pending *p);

static void ready_reply(sg_link *l, sg_reply_reader *rr)
{
	pending *p = l->head;
	if (!p || !p->sent) {
		char t[UP_LOGTEXT_MAX];
		logtext(t, sizeof t, rr->text, rr->len);
		/* e.g. "421 4.4.2 timeout": the upstream is closing */
		if (l->in_data && !l->lost)
			log_warn(sid(l), "event=upstream_reply_during_data reply=\"%s\"",
			         t);
		became_dead(l, t);
		return;
	}
	l->head = p->next;
	if (!l->head)
		l->tail = NULL;
	l->inflight--;
	if (is_barrier(l, p))
		l->barrier_inflight = false;
	if (l->inflight > 0)
		arm(l, l->cfg->upstream_timeout_ms);
	else
		uv_timer_stop(&l->timer);
	sg_reply r = {rr->code, rr->text, rr->len};
	if (p->kind == K_XFORWARD && rr->code / 100 != 2) {
		char t[UP_LOGTEXT_MAX];
		logtext(t, sizeof t, rr->text, rr->len);
		log_error(sid(l), "event=upstream_identity_refused upstream=%s "
		                  "command=XFORWARD reply=\"%s\" fix=\"check "
		                  "smtpd_authorized_xforward_hosts on %s\"",
		          l->peer, t, l->peer);
		l->xforward_refused = true;
	}
	if (p->kind == K_DATA_END) {
		sg_reply_queue_id(rr->text, rr->len, l->qid, sizeof l->qid);
		l->in_data = false;
	}
	if (p->kind == K_USER || p->kind == K_DATA_END)
		if (!l->owner_gone && p->cb)
			p->cb(p->arg, &r);
	free(p);
	if (l->phase == P_READY)
		pump(l);
}

static void got_reply(sg_link *l, sg_reply_reader *rr)
{
	char t[UP_LOGTEXT_MAX];
	int code = rr->code;
	logtext(t, sizeof t, rr->text, rr->len);
	log_debug(sid(l), "event=upstream_reply upstream=%s action=%s reply=\"%s\"",
	          l->peer, phase_name[l->phase], t);
	switch (l->phase) {
	case P_GREETING:
		if (code != 220) {
			fail_server(l, "greeting: %s", t);
			return;
		}
		send_ehlo(l);
		return;
	case P_EHLO:
		if (code != 250 || sg_ehlo_parse(rr->text, rr->len, &l->ehlo) < 0) {
			fail_server(l, "EHLO: %s", t);
			return;
		}
		after_ehlo(l);
		return;
	case P_STARTTLS:
		if (code == 220) {
			start_tls(l);
			return;
		}
		if (l->cfg->upstream_tls == SG_UTLS_REQUIRED) {
			fail_server(l, "STARTTLS: %s", t);
			return;
		}
		/* opportunistic: go on in plaintext, STARTTLS is not retried */
		l->tls_declined = true;
		l->phase = P_EHLO;
		after_ehlo(l);
		return;
	case P_XCLIENT:
		/* Postfix >= 2.3 answers 220 (a new greeting); smtp-sink and older
		 * servers answer 250.  Any 2xx took the attributes; anything else
		 * did not, and we fail closed. */
		if (code < 200 || code > 299) {
			char ours[INET6_ADDRSTRLEN + 16];
			our_address(l, ours, sizeof ours);
			/* Postfix: 550 5.7.0 "insufficient authorization" when our
			 * address is not trusted; a 501 refuses a value (Postfix
			 * takes values of at most 255 octets): not fixed there */
			if (code == 550)
				log_error(sid(l),
				          "event=upstream_identity_refused upstream=%s "
				          "command=XCLIENT reply=\"%s\" fix=\"add %s to "
				          "smtpd_authorized_xclient_hosts on %s\"",
				          l->peer, t, ours, l->peer);
			else
				log_error(sid(l),
				          "event=upstream_identity_refused upstream=%s "
				          "command=XCLIENT reply=\"%s\" reason=\"the "
				          "upstream refused an attribute value (the "
				          "login or HELO name may be longer than it "
				          "takes)\"",
				          l->peer, t);
			fail_server(l, "XCLIENT refused: %s", t);
			return;
		}
		if (++l->xi < l->nx) {
			up_cmd(l, l->xlines[l->xi]);
			arm(l, l->cfg->upstream_timeout_ms);
			return;
		}
		/* XCLIENT_README: the server answers like a new greeting; the
		 * client must say EHLO again and read the extensions anew. */
		l->identity_done = true;
		send_ehlo(l);
		return;
	case P_AUTH:
		if (code == 235) {
			l->identity_done = true;
			send_ehlo(l); /* RFC 4954 4: extensions may change */
			return;
		}
		if (code == 334 && !l->ehlo.auth_plain) {
			const char *u = l->cfg->auth_user;
			l->phase = P_AUTH_USER;
			send_b64(l, "", u, strlen(u));
			return;
		}
		fail_server(l, "AUTH as %s: %s", l->cfg->auth_user, t);
		return;
	case P_AUTH_USER:
		if (code != 334) {
			fail_server(l, "AUTH LOGIN user %s: %s", l->cfg->auth_user, t);
			return;
		}
		l->phase = P_AUTH_PASS;
		send_b64(l, "", l->password, strlen(l->password));
		return;
	case P_AUTH_PASS:
		if (code != 235) {
			fail_server(l, "AUTH LOGIN as %s: %s", l->cfg->auth_user, t);
			return;
		}
		l->phase = P_AUTH;
		l->identity_done = true;
		send_ehlo(l);
		return;
	case P_READY:
		if (l->probe || l->quit_sent)
			return; /* 221 to our QUIT */
		ready_reply(l, rr);
		return;
	default:
		return;
	}
}

/* wb->rr, the reply reader (16 KiB) of every link on this worker that is
 * not in the middle of a reply: replies nearly always arrive whole, so a
 * link keeps its own reader (l->rr) only while one is cut between two
 * reads.  parse_plain never runs for two links at once (only on_read calls
 * it, from the loop). */
/* Parse every complete reply in p. */
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
				fail_server(l, "bad reply: %s", rr->error);
			else
				became_dead(l, rr->error);
			return;
		}
		if (rc == 0)
			break;
		int before = l->phase;
		got_reply(l, rr);
		/* RFC 3207 / CVE-2011-0411: nothing may follow the STARTTLS 220
		 * in plaintext (a man in the middle's injected replies). */
		if (before == P_STARTTLS && l->phase == P_TLS && n > 0 && l->c == c) {
			fail_server(l, "data after the STARTTLS reply");
			return;
		}
	}
	if (!c || l->c != c)
		return; /* on_connect starts the next connection's reader */
	bool partial = rr->len > 0 && !rr->complete;
	if (partial && rr == &wb->rr) {
		/* a reply cut between reads: keep what we have of it */
		l->rr = malloc(sizeof *l->rr);
		if (!l->rr) {
			became_dead(l, "out of memory");
			return;
		}
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
			fail_server(l, "%s", why);
		else if (l->probe && l->quit_sent)
			link_finish(l);
		else
			became_dead(l, why);
		return;
	}
	if (!l->tls) {
		parse_plain(l, b->base, (size_t)nread);
		return;
	}
	if (sg_tls_feed(l->tls, b->base, (size_t)nread) < 0) {
		became_dead(l, "out of memory");
		return;
	}
	if (l->phase == P_TLS) {
		tls_step(l);
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
				fail_server(l, "TLS: %s", rc > 0 ? "closed" : "error");
			else
				became_dead(l, rc > 0 ? "TLS closed" : "TLS error");
			return;
		}
		if (plain.len < plain.max)
			return; /* drained */
	}
}

/* ---- commands ------------------------------------------------------------ */

static bool is_barrier(const sg_link *l, const pending *p)
{
	/* RFC 2920 3.1: DATA ends a group; XFORWARD must be taken before MAIL
	 * (fail closed), so it is never pipelined with it. */
	return !l->ehlo.pipelining || p->kind != K_USER ||
	       !strncasecmp(p->line, "DATA", 4);
}

static void pump(sg_link *l)
{
	for (pending *p = l->head; p; p = p->next) {
		if (p->sent)
			continue;
		if (l->inflight > 0 && (l->barrier_inflight || !l->ehlo.pipelining))
			return;
		if (p->kind == K_USER && l->xforward_refused &&
		    !strncasecmp(p->line, "MAIL", 4)) {
			/* fail closed: no transaction without the identity */
			l->xforward_refused = false;
			pending *q = p;
			/* unlink q */
			pending **pp = &l->head;
			pending *prev = NULL;
			while (*pp != q) {
				prev = *pp;
				pp = &(*pp)->next;
			}
			*pp = q->next;
			if (l->tail == q)
				l->tail = prev;
			defer_reply(l, q->cb, q->arg, R_XFWD);
			free(q);
			pump(l);
			return;
		}
		p->sent = true;
		l->inflight++;
		if (is_barrier(l, p))
			l->barrier_inflight = true;
		if (up_cmd(l, p->line) < 0) {
			became_dead(l, "write failed");
			return;
		}
		arm(l, l->cfg->upstream_timeout_ms);
	}
}

static pending *enqueue(sg_link *l, int kind, const char *line, size_t len,
                        sg_link_cb cb, void *arg)
{
	pending *p = malloc(sizeof *p + len + 1);
	if (!p)
		return NULL;
	p->next = NULL;
	p->kind = kind;
	p->sent = false;
	p->cb = cb;
	p->arg = arg;
	p->len = len;
	memcpy(p->line, line, len);
	p->line[len] = '\0';
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
	return p;
}

static void reopen(sg_link *l);

void sg_link_command(sg_link *l, const char *line, size_t len, sg_link_cb cb,
                     void *arg)
{
	if (l->phase == P_CLOSED || len > UP_CMD_MAX * 8) {
		defer_reply(l, cb, arg, R_LOST);
		return;
	}
	if (l->cfg->identity == SG_ID_XFORWARD && len >= 4 &&
	    !strncasecmp(line, "MAIL", 4)) {
		char x[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
		const char *why = NULL;
		int nx = sg_xforward_lines(&l->id, l->ehlo.xforward_attrs, x,
		                           SG_XCLIENT_LINES, &why);
		if (nx < 0) { /* the upstream's attributes changed since AUTH */
			log_error(sid(l), "event=upstream_identity_unfit upstream=%s "
			          "command=XFORWARD reason=\"%s\"", l->peer, why);
			defer_reply(l, cb, arg, R_UNFIT);
			return;
		}
		for (int i = 0; i < nx; i++)
			enqueue(l, K_XFORWARD, x[i], strlen(x[i]), NULL, NULL);
	}
	if (!enqueue(l, K_USER, line, len, cb, arg)) {
		defer_reply(l, cb, arg, R_LOST);
		return;
	}
	if (l->phase == P_DEAD) {
		reopen(l);
		return;
	}
	if (l->phase == P_READY)
		pump(l);
}

void sg_link_mail(sg_link *l, const char *line, size_t len, bool auth_param,
                  sg_link_cb cb, void *arg)
{
	/* RFC 4954 5: AUTH= only to a server that offers AUTH (Postfix
	 * answers 503 5.7.4 otherwise); its value is ours, never the client's */
	if (!auth_param || !l->ehlo.auth || len < 2) {
		sg_link_command(l, line, len, cb, arg);
		return;
	}
	sg_buf b;
	sg_buf_init(&b, 0);
	int rc = sg_buf_append(&b, line, len - 2);
	if (rc == 0)
		/* identity = none passes no user, not even here */
		rc = sg_identity_mail_auth(&b, l->cfg->identity == SG_ID_NONE
		                                   ? NULL
		                                   : l->id.login);
	if (rc == 0)
		rc = sg_buf_append(&b, "\r\n", 2);
	if (rc < 0 || b.len > SG_UPSTREAM_LINE_MAX) {
		log_error(sid(l), "event=upstream_identity_unfit upstream=%s "
		          "command=MAIL reason=\"%s\"", l->peer,
		          rc < 0 ? "out of memory"
		                 : "AUTH= makes the MAIL command too long");
		defer_reply(l, cb, arg, R_UNFIT);
	} else {
		sg_link_command(l, b.data, b.len, cb, arg);
	}
	sg_buf_free(&b);
}

/* A link that was READY lost its connection (or we dropped it to abort a
 * message): the next command connects again, identity and all. */
static void reopen(sg_link *l)
{
	log_info(sid(l), "event=upstream_reopen");
	l->srv = 0;
	l->identity_done = false;
	l->xforward_refused = false;
	start_server(l);
}

/* ---- DATA ------------------------------------------------------------------ */

/* The worker's DATA output buffer (wb->sbuf). */
static sg_buf scratch(void)
{
	/* max = cap: a fixed array, never realloc'd */
	return (sg_buf){.data = wb->sbuf, .len = 0, .cap = sizeof wb->sbuf,
	                .max = sizeof wb->sbuf};
}

/* The Received header but its date depends only on the link (identity,
 * hostname, identity mode): made at its first message, then only stamped
 * (sg_received_build with five printf-style appends was ~19k instructions
 * a message, issue 9). */
static int received_parts(sg_link *l, bool hdr)
{
	const sg_config *cfg = l->cfg;
	sg_buf pre, post;
	sg_buf_init(&pre, 0);
	sg_buf_init(&post, 0);
	int rc = sg_received_parts(&pre, &post, &l->id, cfg->hostname,
	                           cfg->identity != SG_ID_NONE, hdr);
	if (rc == 0 && (l->rcv = malloc(pre.len + post.len)) == NULL)
		rc = -1;
	if (rc == 0) {
		memcpy(l->rcv, pre.data, pre.len);
		memcpy(l->rcv + pre.len, post.data, post.len);
		l->rcv_pre = pre.len;
		l->rcv_post = post.len;
	}
	sg_buf_free(&pre);
	sg_buf_free(&post);
	return rc;
}

void sg_link_data_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg))
{
	const sg_config *cfg = l->cfg;
	bool hdr = cfg->identity == SG_ID_HEADER || cfg->identity == SG_ID_AUTH;
	l->in_data = true;
	l->aborted = l->lost = l->paused = l->rcv_due = false;
	l->done = done;
	l->done_arg = arg;
	l->drain = drain;
	l->qid[0] = '\0';
	sg_scan_init(&l->scan, cfg->bare_newline == SG_BARE_NORMALIZE, hdr,
	             cfg->max_message_size);
	if (l->phase != P_READY) {
		l->lost = true;
		return;
	}
	if (!l->rcv && received_parts(l, hdr) < 0) {
		became_dead(l, "out of memory");
		return;
	}
	/* The header goes out with the first DATA octets (one write, not
	 * two: a many-message session's profile is mostly system calls).
	 * One too long for UP_RCV_ROOM (a long login) goes now. */
	l->rcv_time = time(NULL);
	l->rcv_due = true;
	if (l->rcv_pre + l->rcv_post + SG_RECEIVED_DATE_MAX <= UP_RCV_ROOM)
		return;
	l->rcv_due = false;
	sg_buf out = scratch();
	if (sg_received_stamp(&out, l->rcv, l->rcv_pre, l->rcv + l->rcv_pre,
	                      l->rcv_post, l->rcv_time) < 0 ||
	    up_send(l, out.data, out.len) < 0)
		became_dead(l, "write failed");
}

/* Abort the upstream transaction: close without the final dot, so the
 * upstream discards what it got (it must not deliver a part). */
static void abort_upstream(sg_link *l, const char *why)
{
	l->aborted = true;
	log_info(sid(l), "event=upstream_abort upstream=%s reason=\"%s\"", l->peer,
	         why);
	uv_timer_stop(&l->timer);
	conn_close(l);
	if (l->phase == P_READY)
		l->phase = P_DEAD;
	l->identity_done = false;
	fail_pending(l, R_LOST);
}

/* The message is over and refused, or its upstream gone: our reply. */
static void data_refused(sg_link *l)
{
	l->in_data = false;
	/* NUL octets and bare line ends both: the NUL is named */
	const char *t = R_LOST;
	if (l->scan.nul)
		t = R_NUL;
	else if (l->scan.bad)
		t = R_BARE;
	else if (l->scan.too_big)
		t = R_BIG;
	defer_reply(l, l->done, l->done_arg, t);
}

/* The final ".\r\n" is about to be written (the scanner wrote the last
 * line's CRLF; this is the <CRLF>.<CRLF>): its reply is the message's. */
static int data_end_pending(sg_link *l)
{
	if (!enqueue(l, K_DATA_END, ".\r\n", 3, l->done, l->done_arg))
		return -1;
	l->tail->sent = true;
	l->inflight++;
	l->barrier_inflight = true;
	arm(l, l->cfg->upstream_timeout_ms);
	return 0;
}

size_t sg_link_data_feed(sg_link *l, const char *buf, size_t len, bool *pause)
{
	*pause = false;
	if (!l->in_data || l->scan.done)
		return 0;
	/* Scanned in steps into the worker's scratch buffer and written from
	 * there (raw_write: straight into the socket, only the rest copied
	 * into a queued write).  The client's bytes are copied once more than
	 * read (twice with TLS, the second being the encryption) and no
	 * memory is allocated per chunk, nor kept by the link. */
	size_t used = 0;
	bool dot = false; /* the final dot's reply is pending (ours or upstream's) */
	while (used < len && !l->scan.done) {
		size_t take = len - used < UP_SCAN_IN ? len - used : UP_SCAN_IN;
		sg_buf out = scratch();
		if (l->rcv_due && !l->lost) /* the room is reserved for it */
			sg_received_stamp(&out, l->rcv, l->rcv_pre, l->rcv + l->rcv_pre,
			                  l->rcv_post, l->rcv_time);
		l->rcv_due = false;
		used += sg_scan_feed(&l->scan, buf + used, take, &out);
		if (!l->aborted && !l->lost && (l->scan.bad || l->scan.too_big))
			abort_upstream(l, l->scan.nul ? "NUL in DATA"
			                  : l->scan.bad ? "bare CR or LF in DATA"
			                              : "message too big");
		if (l->aborted || l->lost)
			continue;
		/* the end of data goes in the same write as the last octets */
		if (l->scan.done) {
			sg_buf_append(&out, ".\r\n", 3);
			if (data_end_pending(l) < 0) {
				became_dead(l, "out of memory");
				continue;
			}
			dot = true; /* a write failure now answers it (fail_pending) */
		}
		if (out.len && up_send(l, out.data, out.len) < 0)
			became_dead(l, "write failed");
	}
	if (l->scan.done) {
		if (!dot)
			data_refused(l);
		return used;
	}
	if (l->c && l->wq > UP_WQ_HIGH) {
		l->paused = true;
		*pause = true;
	}
	return used;
}

/* ---- open / close / accessors ----------------------------------------------- */

static sg_link *link_new(uv_loop_t *loop, const sg_config *cfg,
                         const sg_identity *id)
{
	/* every later use of wb is on this loop's thread, after this */
	if (!wbufs_get())
		return NULL;
	sg_link *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->loop = loop;
	l->cfg = sg_config_ref((sg_config *)cfg);
	l->id = *id;
	l->id.sid = sg_xstrdup(id->sid ? id->sid : "-");
	l->id.login = dupnull(id->login);
	l->id.client_ip = dupnull(id->client_ip);
	l->id.client_name = dupnull(id->client_name);
	l->id.helo = dupnull(id->helo);
	l->id.tls_version = dupnull(id->tls_version);
	l->id.tls_cipher = dupnull(id->tls_cipher);
	l->id.dest_ip = dupnull(id->dest_ip);
	uv_timer_init(loop, &l->timer);
	uv_timer_init(loop, &l->defer);
	l->timer.data = l->defer.data = l;
	l->nhandles = 2;
	return l;
}

/* Open failed before any connection: ready gets the 454 from the loop, so
 * the owner holds the pointer before its callback runs. */
static void open_failed(uv_timer_t *t) { fail_all(t->data); }

sg_link *sg_link_open(uv_loop_t *loop, const sg_config *cfg,
                      const sg_identity *id, sg_link_cb ready, void *arg)
{
	sg_link *l = link_new(loop, cfg, id);
	if (!l)
		return NULL;
	l->ready = ready;
	l->ready_arg = arg;
	const char *why = sg_identity_unfit(id, cfg->identity);
	if (why) {
		/* never an upstream session with a cut or missing identity */
		char *u = sg_identity_log_dup(id->login);
		log_error(sid(l), "event=upstream_identity_unfit user=%s reason=\"%s\"",
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

void sg_link_close(sg_link *l)
{
	if (!l)
		return;
	bool idle = l->phase == P_READY && !l->in_data && l->c;
	l->owner_gone = true;
	if (idle && !l->quit_sent) {
		l->quit_sent = true;
		uv_timer_stop(&l->timer);
		if (up_cmd(l, "QUIT\r\n") == 0 && l->wq > 0)
			return; /* on_write finishes once QUIT is out */
	}
	link_finish(l);
	maybe_free(l);
}

const char *sg_link_last_queue_id(sg_link *l) { return l->qid; }
const char *sg_link_peer(sg_link *l) { return l->peer; }
bool sg_link_alive(sg_link *l)
{
	return l && (l->phase == P_READY || (l->phase < P_READY && l->was_ready));
}

/* ---- the capability probe ------------------------------------------------------ */

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
