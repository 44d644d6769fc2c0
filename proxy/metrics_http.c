/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/metrics_http.c: the [metrics] listener and its one-request HTTP/1.x
 * connections (metrics_http.h).
 *
 * The request line (RFC 9112 3) is checked as soon as it is whole: one that
 * is not "METHOD SP TARGET SP HTTP/1.x" gets 400 at once.  Otherwise the
 * header section is read to its empty line (and ignored), then the reply
 * goes out.  After the reply the connection is shut down for writing and
 * what the client still sends is read and dropped until it closes (or a
 * second passes): closing with unread octets would reset the connection
 * and could lose the reply on its way. */
#include "metrics_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/mem.h"
#include "../common/metrics.h"
#include "../sasl/auth.h"

#define SG_HTTP_LINGER_MS 1000
#define SG_HTTP_BACKLOG 64

/* ---- the request reader --------------------------------------------------- */

static bool tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The request line (without its line end): 0 = fine so far and *get /
 * *metrics say what it asks; 400 when it is no HTTP/1.x request line. */
static int request_line(const char *p, size_t n, bool *get, bool *metrics)
{
	size_t m = 0;
	while (m < n && tchar(p[m]))
		m++;
	if (m == 0 || m == n || p[m] != ' ')
		return 400;
	*get = m == 3 && memcmp(p, "GET", 3) == 0;
	size_t t = m + 1, te = t;
	while (te < n && p[te] != ' ' && (unsigned char)p[te] > ' ' &&
	       p[te] != 0x7f)
		te++;
	if (te == t || te == n || p[te] != ' ')
		return 400;
	const char *v = p + te + 1;
	if (n - (te + 1) != 8 || memcmp(v, "HTTP/1.", 7) != 0 || v[7] < '0' ||
	    v[7] > '9')
		return 400;
	size_t tl = te - t;
	*metrics = tl >= 8 && memcmp(p + t, "/metrics", 8) == 0 &&
	           (tl == 8 || p[t + 8] == '?');
	return 0;
}

/* The end of the line starting at off (its LF), or len when none yet. */
static size_t line_end(const sg_http_req *r, size_t off)
{
	const char *lf = memchr(r->buf + off, '\n', r->len - off);
	return lf ? (size_t)(lf - r->buf) : r->len;
}

/* A line's length without its CR. */
static size_t bare_len(const sg_http_req *r, size_t off, size_t lf)
{
	return lf > off && r->buf[lf - 1] == '\r' ? lf - off - 1 : lf - off;
}

/* Octets that cannot begin a request line (a TLS ClientHello, a stray
 * SMTP client): 400 before the line is whole. */
static bool bad_method(const sg_http_req *r)
{
	for (size_t i = 0; i < r->len && r->buf[i] != ' '; i++)
		if (!tchar(r->buf[i]))
			return true;
	return false;
}

static int decide(sg_http_req *r)
{
	size_t lf = line_end(r, 0);
	if (bad_method(r))
		return 400;
	if (lf == r->len)
		return r->len == SG_HTTP_MAX ? 400 : 0;
	bool get = false, metrics = false;
	if (request_line(r->buf, bare_len(r, 0, lf), &get, &metrics))
		return 400;
	/* the header section ends with an empty line */
	for (size_t off = lf + 1; off < r->len;) {
		size_t e = line_end(r, off);
		if (e == r->len)
			break;
		if (bare_len(r, off, e) == 0)
			return !get ? 405 : metrics ? 200 : 404;
		off = e + 1;
	}
	return r->len == SG_HTTP_MAX ? 400 : 0;
}

int sg_http_feed(sg_http_req *r, const char *p, size_t n)
{
	if (r->status)
		return r->status;
	size_t room = SG_HTTP_MAX - r->len;
	memcpy(r->buf + r->len, p, n < room ? n : room);
	r->len += n < room ? n : room;
	r->status = decide(r);
	return r->status;
}

/* ---- connections ---------------------------------------------------------- */

struct sg_mhttp {
	uv_tcp_t tcp;
	struct hconn *conns; /* open request connections */
	int handles;         /* ours and the connections' not yet closed */
	bool stopping;
};

typedef struct hconn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	struct sg_mhttp *m;
	struct hconn *next, *prev;
	int handles;
	bool answered;
	sg_buf out;
	sg_http_req req;
} hconn;

static void mhttp_unref(struct sg_mhttp *m)
{
	if (--m->handles == 0)
		free(m);
}

static void hconn_closed(uv_handle_t *h)
{
	hconn *c = h->data;
	if (--c->handles > 0)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->m->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	struct sg_mhttp *m = c->m;
	sg_buf_free(&c->out);
	free(c);
	mhttp_unref(m);
}

static void hconn_close(hconn *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	uv_close((uv_handle_t *)&c->tcp, hconn_closed);
	uv_close((uv_handle_t *)&c->timer, hconn_closed);
}

static void on_timeout(uv_timer_t *t) { hconn_close(t->data); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	static __thread char drop[4096];
	hconn *c = h->data;
	size_t room = SG_HTTP_MAX - c->req.len;
	if (c->answered || room == 0)
		*b = uv_buf_init(drop, sizeof drop);
	else
		*b = uv_buf_init(c->req.buf + c->req.len, (unsigned)room);
}

static void on_shutdown(uv_shutdown_t *req, int status) { (void)req; (void)status; }

static void on_written(uv_write_t *req, int status)
{
	hconn *c = req->data;
	if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
		hconn_close(c);
		return;
	}
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
		hconn_close(c);
	else
		uv_timer_start(&c->timer, on_timeout, SG_HTTP_LINGER_MS, 0);
}

static void body_metrics(sg_buf *body)
{
	sg_metrics_snapshot *snap = sg_xmalloc(sizeof *snap);
	sg_metrics_collect(snap);
	snap->sasl_inflight = sg_auth_inflight();
	sg_metrics_render(snap, body);
	free(snap);
}

static void respond(hconn *c, int status)
{
	static const struct {
		int code;
		const char *reason, *extra, *body;
	} r[] = {
	    {200, "OK", "", NULL},
	    {400, "Bad Request", "", "bad request\n"},
	    {404, "Not Found", "", "not found: try /metrics\n"},
	    {405, "Method Not Allowed", "Allow: GET\r\n", "method not allowed\n"},
	};
	size_t i = 0;
	while (i < sizeof r / sizeof r[0] - 1 && r[i].code != status)
		i++;
	sg_buf body;
	sg_buf_init(&body, 0);
	if (status == 200)
		body_metrics(&body);
	else
		sg_buf_append(&body, r[i].body, strlen(r[i].body));
	sg_buf_appendf(&c->out,
	               "HTTP/1.1 %d %s\r\nContent-Type: text/plain; %scharset=utf-8"
	               "\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
	               r[i].code, r[i].reason, status == 200 ? "version=0.0.4; " : "",
	               body.len, r[i].extra);
	sg_buf_append(&c->out, body.data, body.len);
	sg_buf_free(&body);
	c->answered = true;
	uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
		hconn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	hconn *c = st->data;
	if (n < 0) {
		hconn_close(c); /* EOF or error, answered or not */
		return;
	}
	if (c->answered || n == 0)
		return;
	/* the octets are in c->req.buf already (on_alloc): count them in */
	c->req.len += (size_t)n;
	c->req.status = decide(&c->req);
	if (c->req.status)
		respond(c, c->req.status);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct sg_mhttp *m = server->data;
	if (status < 0 || m->stopping)
		return;
	hconn *c = sg_xcalloc(1, sizeof *c);
	c->m = m;
	sg_buf_init(&c->out, 0);
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	m->handles++;
	c->next = m->conns;
	if (m->conns)
		m->conns->prev = c;
	m->conns = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		hconn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, SG_HTTP_TIMEOUT_MS, 0);
}

/* ---- the listener --------------------------------------------------------- */

static void listener_closed(uv_handle_t *h) { mhttp_unref(h->data); }

int sg_mhttp_start(uv_loop_t *loop, const sg_config *cfg,
                   struct sg_mhttp **out, sg_errors *errs)
{
	*out = NULL;
	if (!*cfg->metrics_address)
		return 0;
	struct sg_mhttp *m = sg_xcalloc(1, sizeof *m);
	m->handles = 1;
	m->tcp.data = m;
	uv_tcp_init_ex(loop, &m->tcp, cfg->metrics_addr.ss_family);
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&m->tcp, &fd) == 0) {
		int one = 1;
		/* every worker binds it, as the SMTP listeners (server.c) */
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	}
	unsigned flags = cfg->metrics_addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
	int r = uv_tcp_bind(&m->tcp, (const struct sockaddr *)&cfg->metrics_addr,
	                    flags);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&m->tcp, SG_HTTP_BACKLOG, on_connection);
	if (r < 0) {
		sg_where w = sg_config_where(cfg, "metrics", "address");
		sg_errors_add(errs, &w, "[metrics] cannot listen on %s: %s",
		              cfg->metrics_address, uv_strerror(r));
		m->stopping = true;
		uv_close((uv_handle_t *)&m->tcp, listener_closed);
		return -1;
	}
	*out = m;
	return 0;
}

void sg_mhttp_stop(struct sg_mhttp *m)
{
	if (!m || m->stopping)
		return;
	m->stopping = true;
	for (hconn *c = m->conns; c; c = c->next)
		hconn_close(c);
	uv_close((uv_handle_t *)&m->tcp, listener_closed);
}
