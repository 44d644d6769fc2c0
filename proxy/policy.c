/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/policy.c: the policy client (policy.h): a pool of connections to
 * the [policy] servers per worker loop, one request in flight on each.
 *
 * Objects and their ends:
 *  - pconn: one connection (uv_tcp_t or uv_pipe_t).  RESOLVE (a name on
 *    the thread pool) -> CONNECT -> IDLE <-> BUSY; CLOSED once given up,
 *    freed in its handle's close callback (or, while resolving, by the
 *    resolver's completion, which cannot be stopped).
 *  - query: one request; it owns the deadline timer and is freed in that
 *    timer's close callback, after its owner was told (or cancelled).
 *  - pool: per loop (one per worker thread); freed by sg_policy_shutdown
 *    once its last connection and query are gone. */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/mem.h"

#define SID_MAX 16
#define WHY_MAX 200

typedef struct pool pool;
typedef struct pconn pconn;

enum cstate { C_RESOLVE, C_CONNECT, C_IDLE, C_BUSY, C_CLOSED };

struct pconn {
	pconn *next;
	pool *p;
	char *spec; /* the server's "inet:..."/"unix:..." as configured */
	union {
		uv_handle_t h;
		uv_stream_t st;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} u;
	bool has_handle;
	uv_connect_t creq;
	uv_getaddrinfo_t gai;
	enum cstate st;
	bool used; /* answered before: the server may have closed it since */
	sg_policy_query *q;
	sg_buf in; /* the reply being read, at most SG_POLICY_REPLY_MAX */
};

struct sg_policy_query {
	sg_policy_query *wnext; /* waiting for a connection */
	pool *p;
	uv_timer_t timer; /* the deadline; also delivers results from ask */
	sg_config *cfg;
	char sid[SID_MAX];
	char *req;
	size_t len;
	size_t srv;   /* the server being tried */
	bool retried; /* a reused connection failed: the same server again */
	pconn *c;
	sg_policy_cb cb;
	void *arg;
	bool in_ask; /* sg_policy_ask has not returned yet */
	bool done;
	bool answered;
	char action[SG_POLICY_TEXT_MAX];
	sg_policy_verdict v;
	char why[WHY_MAX];
};

struct pool {
	uv_loop_t *loop;
	pconn *conns;
	sg_policy_query *wait, **wait_tail;
	unsigned live; /* connections and queries not yet freed */
	bool stopping;
};

/* One pool per worker thread: a loop never runs on two threads. */
static __thread pool *tpool;

static void try_server(sg_policy_query *q);
static void conn_send(pconn *c);
static void serve_waiting(pool *p, const char *spec);

/* ------------------------------------------------------------- the pool */

static pool *pool_get(uv_loop_t *loop)
{
	if (tpool && tpool->loop == loop)
		return tpool;
	tpool = sg_xcalloc(1, sizeof *tpool);
	tpool->loop = loop;
	tpool->wait_tail = &tpool->wait;
	return tpool;
}

static void pool_maybe_free(pool *p)
{
	if (!p->stopping || p->live > 0)
		return;
	if (tpool == p)
		tpool = NULL;
	free(p);
}

/* ----------------------------------------------------------- the queries */

static void query_closed(uv_handle_t *h)
{
	sg_policy_query *q = h->data;
	pool *p = q->p;
	sg_config_unref(q->cfg);
	free(q->req);
	free(q);
	p->live--;
	pool_maybe_free(p);
}

static void wait_remove(sg_policy_query *q)
{
	pool *p = q->p;
	for (sg_policy_query **pp = &p->wait; *pp; pp = &(*pp)->wnext)
		if (*pp == q) {
			*pp = q->wnext;
			if (p->wait_tail == &q->wnext)
				p->wait_tail = pp;
			q->wnext = NULL;
			return;
		}
}

/* Tell the owner (unless cancelled) and end the query. */
static void deliver(sg_policy_query *q)
{
	size_t n = q->cfg->npolicy_servers;
	/* the server that answered, or the last one tried */
	const char *server = n == 0 ? "-"
	                     : q->srv < n ? q->cfg->policy_servers[q->srv].spec
	                                  : q->cfg->policy_servers[n - 1].spec;
	sg_policy_result r = {
	    .answered = q->answered,
	    .server = server,
	    .v = q->answered ? &q->v : NULL,
	    .action = q->action,
	    .why = q->why,
	};
	sg_policy_cb cb = q->cb;
	q->cb = NULL;
	if (cb)
		cb(q->arg, &r);
	uv_close((uv_handle_t *)&q->timer, query_closed);
}

static void on_later(uv_timer_t *t) { deliver(t->data); }

/* The query is over: answered, or not (why).  Detached from its
 * connection and the line; delivered now, or from the loop when still
 * inside sg_policy_ask. */
static void finish(sg_policy_query *q)
{
	if (q->done)
		return;
	q->done = true;
	uv_timer_stop(&q->timer);
	wait_remove(q);
	if (q->c) {
		q->c->q = NULL;
		q->c = NULL;
	}
	if (q->in_ask) {
		uv_timer_start(&q->timer, on_later, 0, 0);
		return;
	}
	deliver(q);
}


/* ------------------------------------------------------ the connections */

static void conn_freed(uv_handle_t *h)
{
	pconn *c = h->data;
	pool *p = c->p;
	sg_buf_free(&c->in);
	free(c->spec);
	free(c);
	p->live--;
	pool_maybe_free(p);
}

static void conn_unlink(pconn *c)
{
	for (pconn **pp = &c->p->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			return;
		}
}

/* Give the connection up; its query (if any) is the caller's. */
static void conn_close(pconn *c)
{
	if (c->st == C_CLOSED)
		return;
	bool resolving = c->st == C_RESOLVE;
	c->st = C_CLOSED;
	conn_unlink(c);
	if (c->q) {
		c->q->c = NULL;
		c->q = NULL;
	}
	if (c->has_handle)
		uv_close(&c->u.h, conn_freed);
	else if (!resolving) /* never opened */
		conn_freed(&c->u.h);
	/* resolving: on_resolved frees it */
}

/* The connection failed: close it and try the query elsewhere. */
static void conn_fail(pconn *c, const char *why)
{
	sg_policy_query *q = c->q;
	bool stale = c->used && c->in.len == 0;
	log_debug(q ? q->sid : NULL, "event=policy_conn server=%s error=\"%s\"",
	          c->spec, why);
	conn_close(c);
	if (!q || q->done)
		return;
	snprintf(q->why, sizeof q->why, "%s: %s", c->spec, why);
	if (stale && !q->retried) {
		q->retried = true; /* a kept connection the server closed */
	} else {
		q->srv++;
		q->retried = false;
	}
	try_server(q);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	pconn *c = h->data;
	(void)hint;
	if (sg_buf_reserve(&c->in, 512) < 0) {
		b->base = NULL;
		b->len = 0;
		return;
	}
	b->base = c->in.data + c->in.len;
	b->len = c->in.cap - c->in.len;
	if (b->len > c->in.max - c->in.len)
		b->len = c->in.max - c->in.len;
}

/* A whole reply: the query's answer; the connection is free again. */
static void got_reply(pconn *c, size_t used)
{
	sg_policy_query *q = c->q;
	sg_buf_consume(&c->in, used);
	c->used = true;
	c->q = NULL;
	c->st = C_IDLE;
	if (q) {
		q->c = NULL;
		q->answered = true;
		sg_policy_verdict_of(q->action, &q->v);
		finish(q);
	}
	if (c->in.len) { /* more than was asked for: out of step */
		conn_fail(c, "data after the reply");
		return;
	}
	serve_waiting(c->p, c->spec);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	pconn *c = st->data;
	(void)b;
	if (c->st == C_CLOSED || n == 0)
		return;
	if (n < 0) {
		conn_fail(c, n == UV_EOF ? "closed by the server" : uv_strerror((int)n));
		return;
	}
	c->in.len += (size_t)n;
	if (c->st != C_BUSY || !c->q) {
		conn_fail(c, "data without a request");
		return;
	}
	size_t used = 0;
	int rc = sg_policy_reply_parse(c->in.data, c->in.len, c->q->action,
	                               sizeof c->q->action, &used);
	if (rc < 0)
		conn_fail(c, "not a policy reply");
	else if (rc > 0)
		got_reply(c, used);
	else if (c->in.len >= c->in.max)
		conn_fail(c, "reply too long");
}

typedef struct wreq {
	uv_write_t req;
	pconn *c;
	char data[];
} wreq;

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	pconn *c = w->c;
	free(w);
	if (status < 0 && status != UV_ECANCELED && c->st == C_BUSY)
		conn_fail(c, uv_strerror(status));
}

static void conn_send(pconn *c)
{
	sg_policy_query *q = c->q;
	c->st = C_BUSY;
	sg_buf_reset(&c->in);
	wreq *w = sg_xmalloc(sizeof *w + q->len);
	w->c = c;
	memcpy(w->data, q->req, q->len);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)q->len);
	int rc = uv_write(&w->req, &c->u.st, &b, 1, on_write);
	if (rc < 0) {
		free(w);
		conn_fail(c, uv_strerror(rc));
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	pconn *c = req->data;
	if (c->st != C_CONNECT)
		return; /* closed meanwhile: the close callback frees it */
	if (status < 0) {
		conn_fail(c, uv_strerror(status));
		return;
	}
	int rc = uv_read_start(&c->u.st, on_alloc, on_read);
	if (rc < 0) {
		conn_fail(c, uv_strerror(rc));
		return;
	}
	c->st = C_IDLE;
	if (c->q)
		conn_send(c);
	else
		serve_waiting(c->p, c->spec);
}

static void connect_addr(pconn *c, const struct sockaddr *sa)
{
	uv_tcp_init(c->p->loop, &c->u.tcp);
	c->u.h.data = c;
	c->has_handle = true;
	c->st = C_CONNECT;
	uv_tcp_nodelay(&c->u.tcp, 1);
	int rc = uv_tcp_connect(&c->creq, &c->u.tcp, sa, on_connect);
	if (rc < 0)
		conn_fail(c, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	pconn *c = req->data;
	if (c->st == C_CLOSED) { /* given up meanwhile: ours to free */
		if (res)
			uv_freeaddrinfo(res);
		conn_freed(&c->u.h);
		return;
	}
	if (status < 0 || !res) {
		if (res)
			uv_freeaddrinfo(res);
		c->st = C_CONNECT; /* nothing to wait for any more */
		conn_fail(c, uv_strerror(status));
		return;
	}
	connect_addr(c, res->ai_addr);
	uv_freeaddrinfo(res);
}

/* A new connection to server i of cfg, for q. */
static void conn_open(sg_policy_query *q, const sg_policy_server *s)
{
	pool *p = q->p;
	pconn *c = sg_xcalloc(1, sizeof *c);
	c->p = p;
	c->spec = sg_xstrdup(s->spec);
	sg_buf_init(&c->in, SG_POLICY_REPLY_MAX);
	c->creq.data = c;
	c->gai.data = c;
	c->next = p->conns;
	p->conns = c;
	p->live++;
	c->q = q;
	q->c = c;
	if (s->path) {
		uv_pipe_init(p->loop, &c->u.pipe, 0);
		c->u.h.data = c;
		c->has_handle = true;
		c->st = C_CONNECT;
		uv_pipe_connect(&c->creq, &c->u.pipe, s->path, on_connect);
		return;
	}
	/* a literal needs no resolver (AI_NUMERICHOST: it cannot block) */
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo nh = hints, *res = NULL;
	nh.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(s->host, s->port, &nh, &res) == 0 && res) {
		connect_addr(c, res->ai_addr);
		freeaddrinfo(res);
		return;
	}
	c->st = C_RESOLVE;
	int rc = uv_getaddrinfo(p->loop, &c->gai, on_resolved, s->host, s->port,
	                        &hints);
	if (rc < 0) {
		c->st = C_CONNECT; /* no completion will come */
		conn_fail(c, uv_strerror(rc));
	}
}

/* A connection to spec became free: the first query in line for it. */
static void serve_waiting(pool *p, const char *spec)
{
	for (sg_policy_query *q = p->wait; q; q = q->wnext) {
		if (strcmp(q->cfg->policy_servers[q->srv].spec, spec) != 0)
			continue;
		for (pconn *c = p->conns; c; c = c->next)
			if (c->st == C_IDLE && !c->q && strcmp(c->spec, spec) == 0) {
				wait_remove(q);
				c->q = q;
				q->c = c;
				conn_send(c);
				return;
			}
		return;
	}
}

/* Server q->srv (or the next ones): an idle connection, a new one, or a
 * place in line; none left: no answer. */
static void try_server(sg_policy_query *q)
{
	pool *p = q->p;
	if (q->srv >= q->cfg->npolicy_servers) {
		finish(q); /* q->why: the last server's failure */
		return;
	}
	const sg_policy_server *s = &q->cfg->policy_servers[q->srv];
	unsigned open = 0;
	for (pconn *c = p->conns; c; c = c->next) {
		if (strcmp(c->spec, s->spec) != 0)
			continue;
		if (c->st == C_IDLE && !c->q && !q->retried) {
			c->q = q;
			q->c = c;
			conn_send(c);
			return;
		}
		open++;
	}
	if (open < SG_POLICY_CONNS || q->retried) {
		conn_open(q, s);
		return;
	}
	q->wnext = NULL;
	*p->wait_tail = q;
	p->wait_tail = &q->wnext;
}

static void on_deadline(uv_timer_t *t)
{
	sg_policy_query *q = t->data;
	pconn *c = q->c;
	if (c) {
		/* its reply, if it ever comes, would be taken for the next one's */
		q->c = NULL;
		c->q = NULL;
		conn_close(c);
	}
	snprintf(q->why, sizeof q->why, "no answer within %llums",
	         (unsigned long long)q->cfg->policy_timeout_ms);
	finish(q);
}

/* ------------------------------------------------------------ interface */

sg_policy_query *sg_policy_ask(uv_loop_t *loop, const sg_config *cfg,
                               const char *sid, const char *req, size_t len,
                               sg_policy_cb cb, void *arg)
{
	pool *p = pool_get(loop);
	sg_policy_query *q = sg_xcalloc(1, sizeof *q);
	q->p = p;
	q->cfg = sg_config_ref((sg_config *)cfg);
	snprintf(q->sid, sizeof q->sid, "%s", sid ? sid : "-");
	q->req = sg_xmalloc(len);
	memcpy(q->req, req, len);
	q->len = len;
	q->cb = cb;
	q->arg = arg;
	snprintf(q->why, sizeof q->why, "no [policy] server");
	uv_timer_init(loop, &q->timer);
	q->timer.data = q;
	p->live++;
	q->in_ask = true;
	uv_timer_start(&q->timer, on_deadline, cfg->policy_timeout_ms, 0);
	try_server(q);
	q->in_ask = false;
	return q;
}

void sg_policy_cancel(sg_policy_query *q)
{
	if (!q)
		return;
	q->cb = NULL;
	/* in line for a connection: nothing to keep in step, end it now */
	if (!q->done && !q->c) {
		wait_remove(q);
		q->done = true;
		uv_timer_stop(&q->timer);
		uv_close((uv_handle_t *)&q->timer, query_closed);
	}
}

void sg_policy_shutdown(uv_loop_t *loop)
{
	pool *p = tpool;
	if (!p || p->loop != loop)
		return;
	p->stopping = true;
	while (p->wait) {
		sg_policy_query *q = p->wait;
		sg_policy_cancel(q);
	}
	while (p->conns) {
		pconn *c = p->conns;
		sg_policy_query *q = c->q;
		conn_close(c);
		if (q && !q->done) {
			q->cb = NULL;
			finish(q);
		}
	}
	pool_maybe_free(p);
}
