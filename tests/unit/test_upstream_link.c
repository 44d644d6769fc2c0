/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_upstream_link.c: the upstream link's state machine against
 * a scripted fake MTA on 127.0.0.1 (same libuv loop): XCLIENT hand-over and
 * its refusal (fail closed), failover, in-step replies, DATA streaming with
 * the Received header, bare LF / size aborts (no final dot reaches the MTA),
 * upstream loss mid-DATA, reply timeout, XFORWARD.  Every wait is bounded;
 * the test ends by proving the loop is empty. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../../common/buf.h"
#include "../../common/config.h"
#include "../../upstream/link.h"
#include "check.h"

static uv_loop_t *loop;

/* ---- the fake MTA ---- */

typedef struct fake {
	uv_tcp_t srv;
	int port;
	const char *greeting;
	const char *ehlo;
	const char *xclient_reply;
	const char *final_reply;
	const char *starttls_reply;
	bool close_in_data; /* drop the connection once DATA bytes arrive */
	bool silent_mail;   /* never answer MAIL */
	int split_ms;       /* send each reply in two halves, split_ms apart */
	sg_buf log;         /* every command line received */
	sg_buf data;        /* the last message, as received (stuffed) */
	int nconn, ndots, nquit, nclosed;
} fake;

typedef struct fconn {
	uv_tcp_t tcp;
	uv_timer_t later_t; /* split_ms: sends the second halves */
	int handles;
	sg_buf later;
	fake *f;
	sg_buf in;
	bool in_data;
	bool silent;
	char rbuf[65536];
} fconn;

static const char EHLO_X[] =
    "250-fake.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    "250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n"
    "250-XFORWARD NAME ADDR PORT PROTO HELO SOURCE\r\n250 8BITMIME\r\n";
static const char EHLO_PLAIN[] = "250-fake.example\r\n250 PIPELINING\r\n";

static void fc_closed(uv_handle_t *h)
{
	fconn *c = h->data;
	if (--c->handles > 0)
		return;
	c->f->nclosed++;
	sg_buf_free(&c->in);
	sg_buf_free(&c->later);
	free(c);
}

static void fc_close(fconn *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	uv_close((uv_handle_t *)&c->tcp, fc_closed);
	if (c->handles > 1)
		uv_close((uv_handle_t *)&c->later_t, fc_closed);
}

static void fw_done(uv_write_t *w, int st)
{
	free(w->data);
	free(w);
}

static void fc_write(fconn *c, const char *s, size_t n)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp) || n == 0)
		return;
	uv_write_t *w = malloc(sizeof *w);
	char *copy = malloc(n);
	memcpy(copy, s, n);
	w->data = copy;
	uv_buf_t b = uv_buf_init(copy, (unsigned)n);
	uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, fw_done);
}

static void fc_later(uv_timer_t *t)
{
	fconn *c = t->data;
	fc_write(c, c->later.data, c->later.len);
	sg_buf_reset(&c->later);
}

static void fc_send(fconn *c, const char *s)
{
	size_t n = strlen(s);
	if (!c->f->split_ms) {
		fc_write(c, s, n);
		return;
	}
	/* the first half now, the rest later: the link reads a cut reply */
	if (c->later.len == 0) {
		fc_write(c, s, n / 2);
		s += n / 2;
		n -= n / 2;
		uv_timer_start(&c->later_t, fc_later, (uint64_t)c->f->split_ms, 0);
	}
	sg_buf_append(&c->later, s, n);
}

static void fc_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	fconn *c = h->data;
	*b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void fc_line(fconn *c, const char *line, size_t n)
{
	fake *f = c->f;
	sg_buf_append(&f->log, line, n);
	if (!strncasecmp(line, "EHLO", 4))
		fc_send(c, f->ehlo);
	else if (!strncasecmp(line, "XCLIENT", 7))
		fc_send(c, f->xclient_reply);
	else if (!strncasecmp(line, "STARTTLS", 8))
		fc_send(c, f->starttls_reply);
	else if (!strncasecmp(line, "XFORWARD", 8))
		fc_send(c, "250 2.0.0 Ok\r\n");
	else if (!strncasecmp(line, "MAIL", 4)) {
		/* silent_mail: a hung MTA, nothing more from here on */
		c->silent = f->silent_mail;
		if (!c->silent)
			fc_send(c, "250 2.1.0 Ok\r\n");
	} else if (c->silent)
		return;
	else if (!strncasecmp(line, "RCPT", 4))
		fc_send(c, "250 2.1.5 Ok\r\n");
	else if (!strncasecmp(line, "RSET", 4) || !strncasecmp(line, "NOOP", 4))
		fc_send(c, "250 2.0.0 Ok\r\n");
	else if (!strncasecmp(line, "DATA", 4)) {
		fc_send(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		c->in_data = true;
		sg_buf_reset(&f->data);
	} else if (!strncasecmp(line, "QUIT", 4)) {
		f->nquit++;
		fc_send(c, "221 2.0.0 Bye\r\n");
		fc_close(c);
	} else
		fc_send(c, "502 5.5.2 Error: command not recognized\r\n");
}

static void fc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	fconn *c = st->data;
	if (n < 0) {
		fc_close(c);
		return;
	}
	sg_buf_append(&c->in, b->base, (size_t)n);
	while (c->in.len && !uv_is_closing((uv_handle_t *)&c->tcp)) {
		if (c->in_data) {
			if (c->f->close_in_data) {
				fc_close(c);
				return;
			}
			/* the data begins at a line start: "\r\n" + in, search there */
			size_t i;
			bool found = false;
			for (i = 0; i + 3 <= c->in.len; i++) {
				if ((i == 0 || (i >= 2 && c->in.data[i - 2] == '\r' &&
				                c->in.data[i - 1] == '\n')) &&
				    !memcmp(c->in.data + i, ".\r\n", 3)) {
					found = true;
					break;
				}
			}
			if (!found)
				return;
			sg_buf_append(&c->f->data, c->in.data, i);
			sg_buf_consume(&c->in, i + 3);
			c->in_data = false;
			c->f->ndots++;
			fc_send(c, c->f->final_reply);
			continue;
		}
		char *nl = memchr(c->in.data, '\n', c->in.len);
		if (!nl)
			return;
		size_t ln = (size_t)(nl - c->in.data) + 1;
		char line[4096];
		snprintf(line, sizeof line, "%.*s", (int)ln, c->in.data);
		sg_buf_consume(&c->in, ln);
		fc_line(c, line, ln);
	}
}

static void fake_accept(uv_stream_t *srv, int st)
{
	fake *f = srv->data;
	fconn *c = calloc(1, sizeof *c);
	c->f = f;
	sg_buf_init(&c->in, 0);
	sg_buf_init(&c->later, 0);
	uv_tcp_init(loop, &c->tcp);
	c->tcp.data = c;
	c->handles = 1;
	if (f->split_ms) {
		uv_timer_init(loop, &c->later_t);
		c->later_t.data = c;
		c->handles = 2;
	}
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		fc_close(c);
		return;
	}
	f->nconn++;
	fc_send(c, f->greeting);
	uv_read_start((uv_stream_t *)&c->tcp, fc_alloc, fc_read);
}

static void fake_start(fake *f)
{
	struct sockaddr_in a;
	memset(f, 0, sizeof *f);
	f->greeting = "220 fake.example ESMTP\r\n";
	f->ehlo = EHLO_X;
	f->xclient_reply = "220 fake.example ESMTP\r\n";
	f->final_reply = "250 2.0.0 Ok: queued as ABC123\r\n";
	sg_buf_init(&f->log, 0);
	sg_buf_init(&f->data, 0);
	uv_tcp_init(loop, &f->srv);
	f->srv.data = f;
	uv_ip4_addr("127.0.0.1", 0, &a);
	ASSERT_EQ(uv_tcp_bind(&f->srv, (struct sockaddr *)&a, 0), 0);
	ASSERT_EQ(uv_listen((uv_stream_t *)&f->srv, 16, fake_accept), 0);
	struct sockaddr_storage ss;
	int len = sizeof ss;
	uv_tcp_getsockname(&f->srv, (struct sockaddr *)&ss, &len);
	f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void srv_closed(uv_handle_t *h) { ((fake *)h->data)->port = -1; }

static void wait_for(const int *n, int want);

/* Close the listener and wait for its close callback: f lives on the
 * caller's stack. */
static void fake_stop(fake *f)
{
	uv_close((uv_handle_t *)&f->srv, srv_closed);
	uint64_t end = uv_now(loop) + 2000;
	while (f->port != -1 && uv_now(loop) < end) {
		uv_run(loop, UV_RUN_ONCE);
		uv_update_time(loop);
	}
	ASSERT_EQ(f->port, -1);
	sg_buf_free(&f->log);
	sg_buf_free(&f->data);
}

/* memmem: the log may hold binary (a TLS ClientHello sent as "lines") */
static bool log_has(fake *f, const char *s)
{
	return f->log.len && memmem(f->log.data, f->log.len, s, strlen(s));
}

static int log_count(fake *f, const char *s)
{
	int n = 0;
	const char *p = f->log.data, *end = p + f->log.len;
	while (p && p < end && (p = memmem(p, (size_t)(end - p), s, strlen(s)))) {
		n++;
		p++;
	}
	return n;
}

/* A port nobody listens on: bind, read the port, close. */
static int closed_port(void)
{
	fake f;
	fake_start(&f);
	int p = f.port;
	fake_stop(&f);
	return p;
}

/* ---- config and the client side ---- */

static char ports[2][16];
static char labels[2][32];
static sg_upstream_server servers[2];

static sg_config *mkcfg(int identity, int port0, int port1)
{
	sg_config *c = calloc(1, sizeof *c);
	c->refcnt = 1000; /* never freed by the links' unrefs */
	c->hostname = "gate.example";
	c->upstream_helo = "gate.example";
	c->identity = identity;
	c->connect_timeout_ms = 2000;
	c->upstream_timeout_ms = 2000;
	c->max_message_size = 1024 * 1024;
	c->bare_newline = SG_BARE_REJECT;
	c->upstream_tls = SG_UTLS_NONE;
	c->upstream_ca_file = "";
	c->upstream_tls_name = "";
	snprintf(ports[0], sizeof ports[0], "%d", port0);
	snprintf(ports[1], sizeof ports[1], "%d", port1);
	for (int i = 0; i < 2; i++) {
		snprintf(labels[i], sizeof labels[i], "127.0.0.1:%s", ports[i]);
		servers[i] = (sg_upstream_server){.host = "127.0.0.1", .port = ports[i],
		                                  .label = labels[i]};
	}
	c->servers = servers;
	c->nservers = port1 ? 2 : 1;
	return c;
}

static const sg_identity ID = {
    .sid = "t1", .login = "alice@example.org", .client_ip = "2001:db8::7",
    .client_port = 40000, .client_name = NULL, .helo = "client helo",
    .esmtp = true, .tls_version = "TLSv1.3",
    .tls_cipher = "TLS_AES_128_GCM_SHA256", .tls_bits = 128,
    .dest_ip = "127.0.0.1", .dest_port = 587,
};

typedef struct got {
	int n;
	int code[8];
	char text[8][512];
} got;

static void on_reply(void *arg, const sg_reply *r)
{
	got *g = arg;
	if (g->n < 8) {
		g->code[g->n] = r->code;
		snprintf(g->text[g->n], sizeof g->text[0], "%.*s", (int)r->len,
		         r->text);
	}
	g->n++;
}

static int drains;
static void on_drain(void *arg) { drains++; }

/* Run the loop until *n >= want or 5 s pass. */
static void wait_for(const int *n, int want)
{
	uint64_t end = uv_now(loop) + 5000;
	while (*n < want && uv_now(loop) < end) {
		uv_run(loop, UV_RUN_ONCE);
		uv_update_time(loop);
	}
}

static uv_timer_t tick; /* keeps UV_RUN_ONCE from blocking forever */
static void on_tick(uv_timer_t *t) {}

static void settle(int ms)
{
	uint64_t end = uv_now(loop) + (uint64_t)ms;
	while (uv_now(loop) < end) {
		uv_run(loop, UV_RUN_ONCE);
		uv_update_time(loop);
	}
}

/* ---- tests ---- */

static sg_link *open_ok(sg_config *cfg, got *g)
{
	memset(g, 0, sizeof *g);
	sg_link *l = sg_link_open(loop, cfg, &ID, on_reply, g);
	ASSERT_NOT_NULL(l);
	wait_for(&g->n, 1);
	if (ASSERT_EQ(g->n, 1))
		ASSERT_EQ(g->code[0] / 100, 2);
	return l;
}

static void send_message(sg_link *l, const char *body, got *g)
{
	memset(g, 0, sizeof *g);
	static const char *cmds[] = {"MAIL FROM:<a@example.org>\r\n",
	                             "RCPT TO:<b@example.org>\r\n",
	                             "DATA\r\n"};
	for (int i = 0; i < 3; i++)
		sg_link_command(l, cmds[i], strlen(cmds[i]), on_reply, g);
	wait_for(&g->n, 3);
	if (ASSERT_EQ(g->n, 3)) {
		ASSERT_EQ(g->code[0], 250);
		ASSERT_EQ(g->code[1], 250);
		ASSERT_EQ(g->code[2], 354);
	}
	if (g->code[2] != 354)
		return;
	sg_link_data_begin(l, on_reply, g, on_drain);
	bool pause;
	size_t len = strlen(body);
	size_t n = sg_link_data_feed(l, body, len, &pause);
	const char *q = strstr(body, "\r\n.\r\n");
	size_t want = q ? (size_t)(q - body) + 5 : len;
	ASSERT_EQ(n, want);
	wait_for(&g->n, 4);
}

static void test_xclient(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	got g;
	sg_link *l = open_ok(cfg, &g);
	ASSERT(sg_link_alive(l));
	/* a HELO name with a space cannot be an EHLO argument: after XCLIENT
	 * saslgate's own (logged), the client's in HELO= all the same */
	ASSERT(log_has(&f, "XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::7 "
	                   "PORT=40000 PROTO=ESMTP HELO=client+20helo "
	                   "LOGIN=alice@example.org\r\nEHLO gate.example\r\n"));
	/* EHLO, XCLIENT, EHLO again */
	ASSERT(!strncmp(f.log.data, "EHLO gate.example\r\nXCLIENT ", 27));

	send_message(l, "Subject: t\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n", &g);
	if (ASSERT_EQ(g.n, 4))
		ASSERT_EQ(g.code[3], 250);
	ASSERT_STR_EQ(g.text[3], "250 2.0.0 Ok: queued as ABC123\r\n");
	ASSERT_STR_EQ(sg_link_last_queue_id(l), "ABC123");
	sg_buf_append(&f.data, "", 1);
	ASSERT(!strncmp(f.data.data,
	                "Received: from client?helo (unknown "
	                "[IPv6:2001:db8::7])\r\n\tby gate.example "
	                "(saslgate) with ESMTPSA id t1\r\n",
	                93));
	ASSERT(strstr(f.data.data, "(authenticated sender: alice@example.org)"));
	ASSERT(strstr(f.data.data, "\r\nSubject: t\r\n\r\nhello\r\n..dot\r\n"));
	ASSERT(!strstr(f.data.data, "X-Authenticated-User"));

	/* a second message on the same connection; pipelined replies in order */
	send_message(l, "Subject: 2\r\n\r\nx\r\n.\r\n", &g);
	if (ASSERT_EQ(g.n, 4))
		ASSERT_EQ(g.code[3], 250);
	ASSERT_EQ(f.nconn, 1);
	ASSERT_EQ(f.ndots, 2);
	/* an empty message: the Received header alone, then the end */
	send_message(l, ".\r\n", &g);
	if (ASSERT_EQ(g.n, 4)) {
		ASSERT_EQ(g.code[3], 250);
		ASSERT_EQ(f.ndots, 3);
	}
	if (ASSERT_GT(f.data.len, 40)) {
		ASSERT(!strncmp(f.data.data, "Received: from ", 15));
		ASSERT_MEM_EQ(f.data.data + f.data.len - 2, "\r\n", 2);
		ASSERT(memmem(f.data.data, f.data.len, "\r\n\t; ", 5));
		ASSERT(!memmem(f.data.data, f.data.len, "\r\n\r\n", 4));
	}
	memset(&g, 0, sizeof g);
	sg_link_command(l, "RSET\r\n", 6, on_reply, &g);
	sg_link_command(l, "NOOP\r\n", 6, on_reply, &g);
	sg_link_command(l, "VRFY x\r\n", 8, on_reply, &g);
	wait_for(&g.n, 3);
	if (ASSERT_EQ(g.n, 3)) {
		ASSERT_EQ(g.code[0], 250);
		ASSERT_EQ(g.code[1], 250);
		ASSERT_EQ(g.code[2], 502);
	}

	sg_link_close(l);
	wait_for(&f.nclosed, 1);
	ASSERT_EQ(f.nquit, 1);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

static void test_refused(void)
{
	/* XCLIENT 550 (our address not in smtpd_authorized_xclient_hosts) */
	fake f;
	fake_start(&f);
	f.xclient_reply = "550 5.7.0 Error: insufficient authorization\r\n";
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	got g = {0};
	sg_link *l = sg_link_open(loop, cfg, &ID, on_reply, &g);
	ASSERT_NOT_NULL(l);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1)) {
		ASSERT_EQ(g.code[0], 454);
		ASSERT(!strncmp(g.text[0], "454 4.7.0", 9));
	}
	ASSERT(!log_has(&f, "MAIL"));

	/* XCLIENT not advertised at all */
	f.ehlo = EHLO_PLAIN;
	memset(&g, 0, sizeof g);
	sg_link_open(loop, cfg, &ID, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 454);

	/* identity none needs nothing */
	cfg->identity = SG_ID_NONE;
	sg_link *l2 = open_ok(cfg, &g);
	sg_link_close(l2);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

static void test_failover(void)
{
	int dead = closed_port();
	fake bad, f;
	fake_start(&bad);
	bad.greeting = "421 4.3.2 busy\r\n";
	fake_start(&f);
	got g;

	/* refused connection, then the good one */
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, dead, f.port);
	sg_link *l = open_ok(cfg, &g);
	ASSERT_EQ(f.nconn, 1);
	ASSERT_STR_EQ(sg_link_peer(l), labels[1]);
	sg_link_close(l);
	settle(50); /* links free their config ref from the loop */
	free(cfg);

	/* a 4xx greeting, then the good one */
	cfg = mkcfg(SG_ID_XCLIENT, bad.port, f.port);
	l = open_ok(cfg, &g);
	ASSERT_EQ(bad.nconn, 1);
	ASSERT_EQ(f.nconn, 2);
	sg_link_close(l);
	settle(50); /* links free their config ref from the loop */
	free(cfg);

	/* nothing answers: 454, never a hang, never a 2xx */
	cfg = mkcfg(SG_ID_XCLIENT, dead, bad.port);
	memset(&g, 0, sizeof g);
	sg_link_open(loop, cfg, &ID, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 454);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
	settle(50);
	fake_stop(&bad);
	fake_stop(&f);
}

static void test_aborts(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_HEADER, f.port, 0);
	cfg->max_message_size = 2048;
	got g;
	sg_link *l = open_ok(cfg, &g);

	/* header mode: our X-Authenticated-User, the client's dropped */
	send_message(l, "X-Authenticated-User: mallory\r\nSubject: h\r\n\r\nb\r\n"
	                ".\r\n", &g);
	ASSERT_EQ(g.code[3], 250);
	sg_buf_append(&f.data, "", 1);
	ASSERT(strstr(f.data.data, "X-Authenticated-User: alice@example.org\r\n"));
	ASSERT(!strstr(f.data.data, "mallory"));

	/* bare LF smuggling: 550, the MTA never sees a final dot */
	send_message(l, "Subject: s\r\n\r\nx\n.\nMAIL FROM:<e>\r\n\r\n.\r\n", &g);
	if (ASSERT_EQ(g.n, 4)) {
		ASSERT_EQ(g.code[3], 550);
		ASSERT(!strncmp(g.text[3], "550 5.5.2", 9));
	}
	ASSERT_EQ(f.ndots, 1);
	settle(50);
	ASSERT_EQ(f.nclosed, 1); /* the upstream transaction was dropped */
	ASSERT(!log_has(&f, "MAIL FROM:<e>"));

	/* the next message reopens the link (identity again) */
	send_message(l, "Subject: ok\r\n\r\nfine\r\n.\r\n", &g);
	if (ASSERT_EQ(g.n, 4))
		ASSERT_EQ(g.code[3], 250);
	ASSERT_EQ(f.nconn, 2);
	ASSERT_EQ(f.ndots, 2);

	/* too big: 552 after the client's end, no dot upstream */
	char *big = malloc(8192);
	memset(big, 'a', 8192);
	for (int i = 70; i < 8000; i += 72)
		memcpy(big + i, "\r\n", 2);
	strcpy(big + 8000, "\r\n.\r\n");
	send_message(l, big, &g);
	if (ASSERT_EQ(g.n, 4)) {
		ASSERT_EQ(g.code[3], 552);
		ASSERT(!strncmp(g.text[3], "552 5.3.4", 9));
	}
	ASSERT_EQ(f.ndots, 2);
	free(big);

	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

static int ends_seen;
static void on_end_seen(void *arg)
{
	(void)arg;
	ends_seen++;
}

/* MAIL, RCPT, DATA, then body with the end of data held. */
static void send_held(sg_link *l, const char *body, got *g)
{
	memset(g, 0, sizeof *g);
	static const char *cmds[] = {"MAIL FROM:<a@example.org>\r\n",
	                             "RCPT TO:<b@example.org>\r\n",
	                             "DATA\r\n"};
	for (int i = 0; i < 3; i++)
		sg_link_command(l, cmds[i], strlen(cmds[i]), on_reply, g);
	wait_for(&g->n, 3);
	if (!ASSERT_EQ(g->n, 3) || !ASSERT_EQ(g->code[2], 354))
		return;
	sg_link_data_begin(l, on_reply, g, on_drain);
	sg_link_data_hold_end(l, on_end_seen);
	bool pause;
	ASSERT_EQ(sg_link_data_feed(l, body, strlen(body), &pause), strlen(body));
}

/* [policy] at = end_of_data: the final dot waits for finish; abort closes
 * the connection without it; a message the scanner refused is not held. */
static void test_hold_end(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	cfg->max_message_size = 2048;
	got g;
	sg_link *l = open_ok(cfg, &g);

	ends_seen = 0;
	send_held(l, "Subject: h\r\n\r\nheld\r\n.\r\n", &g);
	ASSERT_EQ(ends_seen, 1);
	settle(100);
	ASSERT_EQ(g.n, 3); /* no final reply before the verdict */
	ASSERT_EQ(f.ndots, 0);
	sg_link_data_finish(l);
	wait_for(&g.n, 4);
	if (ASSERT_EQ(g.n, 4))
		ASSERT_EQ(g.code[3], 250);
	ASSERT_EQ(f.ndots, 1);
	ASSERT(sg_link_alive(l));

	send_held(l, "Subject: no\r\n\r\nrefused\r\n.\r\n", &g);
	ASSERT_EQ(ends_seen, 2);
	sg_link_data_abort(l);
	ASSERT(!sg_link_alive(l));
	settle(100);
	ASSERT_EQ(g.n, 3); /* done is not called */
	ASSERT_EQ(f.ndots, 1);
	ASSERT_EQ(f.nclosed, 1);

	/* too big: the scanner's 552, never held */
	char *big = malloc(8192);
	memset(big, 'a', 8192);
	for (int i = 70; i < 8000; i += 72)
		memcpy(big + i, "\r\n", 2);
	strcpy(big + 8000, "\r\n.\r\n");
	send_held(l, big, &g);
	wait_for(&g.n, 4);
	ASSERT_EQ(ends_seen, 2);
	if (ASSERT_EQ(g.n, 4))
		ASSERT_EQ(g.code[3], 552);
	ASSERT_EQ(f.ndots, 1);
	free(big);

	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

static void test_loss(void)
{
	fake f;
	fake_start(&f);
	f.close_in_data = true;
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	got g;
	sg_link *l = open_ok(cfg, &g);
	memset(&g, 0, sizeof g);
	sg_link_command(l, "MAIL FROM:<a@x>\r\n", 17, on_reply, &g);
	sg_link_command(l, "DATA\r\n", 6, on_reply, &g);
	wait_for(&g.n, 2);
	ASSERT_EQ(g.code[1], 354);
	sg_link_data_begin(l, on_reply, &g, on_drain);
	bool pause;
	sg_link_data_feed(l, "Subject: x\r\n\r\n", 14, &pause);
	settle(100); /* the fake drops the connection */
	sg_link_data_feed(l, "rest\r\n.\r\n", 9, &pause);
	wait_for(&g.n, 3);
	if (ASSERT_EQ(g.n, 3))
		ASSERT_EQ(g.code[2] / 100, 4);
	ASSERT(!sg_link_alive(l));
	sg_link_close(l);
	f.close_in_data = false;

	/* a reply that never comes: 451 after upstream_timeout */
	f.silent_mail = true;
	cfg->upstream_timeout_ms = 200;
	l = open_ok(cfg, &g);
	memset(&g, 0, sizeof g);
	sg_link_command(l, "MAIL FROM:<a@x>\r\n", 17, on_reply, &g);
	sg_link_command(l, "RCPT TO:<b@x>\r\n", 15, on_reply, &g);
	wait_for(&g.n, 2);
	if (ASSERT_EQ(g.n, 2)) {
		ASSERT_EQ(g.code[0], 451);
		ASSERT_EQ(g.code[1], 451);
	}
	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

/* After XCLIENT the EHLO carries the client's HELO name (the upstream's
 * Received line and HELO restrictions see the client); the first EHLO is
 * saslgate's.  A client that said HELO gets EHLO upstream too (PROTO=SMTP
 * tells the upstream which it used). */
static void test_xclient_client_ehlo(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	sg_identity id = ID;
	id.helo = "client.example";
	id.client_name = "mx.example.org";
	got g = {0};
	sg_link *l = sg_link_open(loop, cfg, &id, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 250);
	ASSERT(!strncmp(f.log.data, "EHLO gate.example\r\nXCLIENT ", 27));
	ASSERT(log_has(&f, "XCLIENT NAME=mx.example.org ADDR=IPV6:2001:db8::7 "
	                   "PORT=40000 PROTO=ESMTP HELO=client.example "
	                   "LOGIN=alice@example.org\r\nEHLO client.example\r\n"));
	ASSERT_EQ(log_count(&f, "EHLO "), 2);
	sg_link_close(l);
	settle(50);

	sg_buf_reset(&f.log);
	id.esmtp = false;
	id.client_name = NULL;
	id.client_name_temp = true;
	memset(&g, 0, sizeof g);
	l = sg_link_open(loop, cfg, &id, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 250);
	ASSERT(log_has(&f, "XCLIENT NAME=[TEMPUNAVAIL] ADDR=IPV6:2001:db8::7 "
	                   "PORT=40000 PROTO=SMTP HELO=client.example "
	                   "LOGIN=alice@example.org\r\nEHLO client.example\r\n"));
	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

static void test_xforward(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_XFORWARD, f.port, 0);
	got g;
	sg_link *l = open_ok(cfg, &g);
	send_message(l, "Subject: xf\r\n\r\n.\r\n", &g);
	ASSERT_EQ(g.code[3], 250);
	ASSERT(log_has(&f, "XFORWARD NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::7 "
	                   "PORT=40000 PROTO=ESMTP HELO=client+20helo "
	                   "SOURCE=REMOTE\r\nMAIL FROM:<a@example.org>\r\n"));
	ASSERT(!log_has(&f, "XCLIENT"));
	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

/* Long NAME and HELO (255 each) plus a long LOGIN do not fit in one
 * 512-octet command: several XCLIENT lines, each within the limit, all
 * attributes sent (XCLIENT_README note 1). */
static void test_xclient_split(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	char name[256], helo[256], login[200];
	memset(name, 'n', 255);
	name[255] = '\0';
	memcpy(name + 250, ".test", 5);
	memset(helo, 'h', 255);
	helo[255] = '\0';
	memset(login, 'u', 199);
	login[199] = '\0';
	login[5] = '=';
	sg_identity id = ID;
	id.client_name = name;
	id.helo = helo;
	id.login = login;
	id.client_ip = "192.0.2.9";
	got g = {0};
	sg_link *l = sg_link_open(loop, cfg, &id, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 250);
	sg_buf_append(&f.log, "", 1);
	int nx = 0;
	bool has[6] = {0};
	static const char *const attrs[] = {"NAME=", "ADDR=192.0.2.9", "PORT=40000",
	                                    "PROTO=ESMTP", "HELO=", "LOGIN=uuuuu+3D"};
	for (char *p = f.log.data; (p = strstr(p, "XCLIENT ")); p++) {
		char *e = strstr(p, "\r\n");
		if (ASSERT(e))
			ASSERT_LE(e - p + 2, 512);
		nx++;
		for (int i = 0; i < 6; i++) {
			char *a = strstr(p, attrs[i]);
			if (a && a < e)
				has[i] = true;
		}
	}
	ASSERT_GE(nx, 2);
	for (int i = 0; i < 6; i++)
		ASSERT(has[i]);
	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	free(cfg);
}

/* RFC 3207 5 / CVE-2011-0411: replies injected after the STARTTLS 220 in
 * plaintext make us drop that server; an opportunistic STARTTLS the
 * upstream refuses goes on in plaintext (and is not retried). */
static void test_starttls_guards(void)
{
	static const char ehlo_tls[] =
	    "250-fake.example\r\n250-STARTTLS\r\n250 XCLIENT NAME ADDR LOGIN\r\n";
	fake f;
	fake_start(&f);
	f.ehlo = ehlo_tls;
	f.starttls_reply = "220 2.0.0 Ready\r\n250 injected\r\n";
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	cfg->upstream_tls = SG_UTLS_REQUIRED;
	got g = {0};
	sg_link_open(loop, cfg, &ID, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 454);
	ASSERT(!log_has(&f, "XCLIENT"));
	wait_for(&f.nclosed, 1);
	settle(50);

	sg_buf_reset(&f.log);
	f.starttls_reply = "454 4.7.0 TLS not available due to local problem\r\n";
	cfg->upstream_tls = SG_UTLS_STARTTLS;
	sg_link *l = open_ok(cfg, &g);
	ASSERT(log_has(&f, "STARTTLS\r\nXCLIENT "));
	/* after XCLIENT's EHLO (STARTTLS offered again) no second STARTTLS */
	ASSERT_EQ(log_count(&f, "STARTTLS"), 1);
	sg_link_close(l);

	/* required and refused: fail closed */
	cfg->upstream_tls = SG_UTLS_REQUIRED;
	memset(&g, 0, sizeof g);
	sg_link_open(loop, cfg, &ID, on_reply, &g);
	wait_for(&g.n, 1);
	if (ASSERT_EQ(g.n, 1))
		ASSERT_EQ(g.code[0], 454);
	settle(50);
	fake_stop(&f);
	free(cfg);
}

static void test_backpressure(void)
{
	fake f;
	fake_start(&f);
	sg_config *cfg = mkcfg(SG_ID_NONE, f.port, 0);
	cfg->max_message_size = 64 * 1024 * 1024;
	got g;
	sg_link *l = open_ok(cfg, &g);
	memset(&g, 0, sizeof g);
	sg_link_command(l, "MAIL FROM:<a@x>\r\n", 17, on_reply, &g);
	sg_link_command(l, "DATA\r\n", 6, on_reply, &g);
	wait_for(&g.n, 2);
	sg_link_data_begin(l, on_reply, &g, on_drain);
	/* 1 MB pieces, the loop not running (the fake reads nothing): the
	 * link writes straight into the socket until the kernel's buffers are
	 * full, then queues; past UP_WQ_HIGH queued it asks for a pause, and
	 * drain comes once the queue is low again. */
	size_t len = 10000 * 100; /* 1 MB of 100-octet lines */
	char *m = malloc(len);
	for (size_t i = 0; i < len; i++)
		m[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : 'x';
	bool pause = false;
	drains = 0;
	int pieces = 0;
	while (!pause && pieces < 64) { /* the kernel holds a few MB at most */
		ASSERT_EQ(sg_link_data_feed(l, m, len, &pause), len);
		pieces++;
	}
	ASSERT(pause);
	wait_for(&drains, 1);
	ASSERT_EQ(drains, 1);
	sg_link_data_feed(l, ".\r\n", 3, &pause);
	wait_for(&g.n, 3);
	ASSERT_EQ(g.code[2], 250);
	/* byte-exact after our Received header: every piece, in order */
	size_t total = (size_t)pieces * len;
	ASSERT_GT(f.data.len, total);
	for (int i = 0; i < pieces && f.data.len > total; i++)
		ASSERT_MEM_EQ(f.data.data + f.data.len - total + (size_t)i * len, m,
		              len);
	free(m);
	sg_link_close(l);
	settle(50);
	fake_stop(&f);
	settle(50); /* links free their config ref from the loop */
	free(cfg);
}

/* Replies cut in two between reads (first half, then the rest 30 ms later),
 * on two links at once: each link keeps its own part of a cut reply (the
 * reader of a link not inside a reply is shared by the worker), and every
 * reply arrives whole and in order. */
static void test_cut_replies(void)
{
	fake f;
	fake_start(&f);
	f.split_ms = 30;
	sg_config *cfg = mkcfg(SG_ID_XCLIENT, f.port, 0);
	got ga, gb;
	memset(&ga, 0, sizeof ga);
	memset(&gb, 0, sizeof gb);
	sg_link *a = sg_link_open(loop, cfg, &ID, on_reply, &ga);
	sg_link *b = sg_link_open(loop, cfg, &ID, on_reply, &gb);
	wait_for(&ga.n, 1);
	wait_for(&gb.n, 1);
	if (ASSERT_EQ(ga.n, 1))
		ASSERT_EQ(ga.code[0], 250);
	if (ASSERT_EQ(gb.n, 1))
		ASSERT_EQ(gb.code[0], 250);
	/* the EHLO reply after XCLIENT was cut too: still parsed whole */
	ASSERT_EQ(log_count(&f, "XCLIENT "), 2);
	ASSERT_EQ(log_count(&f, "EHLO "), 4);
	memset(&ga, 0, sizeof ga);
	memset(&gb, 0, sizeof gb);
	static const char *cmds[] = {"MAIL FROM:<a@example.org>\r\n",
	                             "RCPT TO:<b@example.org>\r\n", "DATA\r\n"};
	for (int i = 0; i < 3; i++) {
		sg_link_command(a, cmds[i], strlen(cmds[i]), on_reply, &ga);
		sg_link_command(b, cmds[i], strlen(cmds[i]), on_reply, &gb);
	}
	wait_for(&ga.n, 3);
	wait_for(&gb.n, 3);
	if (ASSERT_EQ(ga.n, 3)) {
		ASSERT_STR_EQ(ga.text[0], "250 2.1.0 Ok\r\n");
		ASSERT_STR_EQ(ga.text[1], "250 2.1.5 Ok\r\n");
		ASSERT_EQ(ga.code[2], 354);
	}
	if (ASSERT_EQ(gb.n, 3)) {
		ASSERT_STR_EQ(gb.text[0], "250 2.1.0 Ok\r\n");
		ASSERT_STR_EQ(gb.text[1], "250 2.1.5 Ok\r\n");
		ASSERT_EQ(gb.code[2], 354);
	}
	bool pause;
	sg_link_data_begin(a, on_reply, &ga, on_drain);
	sg_link_data_begin(b, on_reply, &gb, on_drain);
	sg_link_data_feed(a, "x\r\n.\r\n", 6, &pause);
	sg_link_data_feed(b, "y\r\n.\r\n", 6, &pause);
	wait_for(&ga.n, 4);
	wait_for(&gb.n, 4);
	if (ASSERT_EQ(ga.n, 4))
		ASSERT_STR_EQ(ga.text[3], "250 2.0.0 Ok: queued as ABC123\r\n");
	if (ASSERT_EQ(gb.n, 4))
		ASSERT_STR_EQ(gb.text[3], "250 2.0.0 Ok: queued as ABC123\r\n");
	ASSERT_STR_EQ(sg_link_last_queue_id(a), "ABC123");
	sg_link_close(a);
	sg_link_close(b);
	wait_for(&f.nclosed, 2);
	ASSERT_EQ(f.nquit, 2);
	fake_stop(&f);
	settle(50);
	free(cfg);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as the daemon does: EPIPE, not a signal */
	loop = uv_default_loop();
	uv_timer_init(loop, &tick);
	uv_timer_start(&tick, on_tick, 10, 10);
	test_xclient();
	test_xclient_client_ehlo();
	test_refused();
	test_failover();
	test_aborts();
	test_hold_end();
	test_loss();
	test_xforward();
	test_xclient_split();
	test_starttls_guards();
	test_backpressure();
	test_cut_replies();
	uv_close((uv_handle_t *)&tick, NULL);
	settle(0);
	uv_run(loop, UV_RUN_DEFAULT);
	ASSERT_EQ(uv_loop_close(loop), 0);
	return CHECK_SUMMARY();
}
