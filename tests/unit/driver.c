/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/driver.c: the session engine in-process (driver.h).
 *
 * A worker and one listener set up as proxy/server.c does it, minus the
 * threads, signals and SO_REUSEPORT: the test's thread runs the worker's
 * loop itself, in steps (UV_RUN_NOWAIT), and between two steps reads the
 * client socket and lets the scripted link deliver what the test gave it. */
#include "driver.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../common/log.h"
#include "../../proxy/session.h"

/* The base configuration: a plaintext listener that needs no SASL (no
 * AUTH is offered without TLS while require_tls_for_auth = yes), an
 * upstream that is never dialled (the link is scripted).  The listener's
 * address is never bound: the driver binds 127.0.0.1:0 itself. */
static const char base_config[] =
    "[server]\n"
    "hostname = gate.test\n"
    "workers = 1\n"
    "log_level = error\n"
    "[listener test]\n"
    "address = 127.0.0.1:1\n"
    "tls = none\n"
    "require_auth = no\n"
    "require_tls_for_auth = yes\n"
    "[upstream]\n"
    "server = 127.0.0.1:1\n"
    "identity = none\n"
    "[limits]\n"
    "idle_timeout = 1m\n";

#define DRV_GREETING "220 gate.test ESMTP\r\n"
#define DRV_ROUNDS_MAX 2000 /* loop steps one drv_run may take */
#define DRV_QUIET_MS 1      /* a step with no I/O ready after this is quiet */
#define DRV_QUIET_ROUNDS 2  /* quiet steps in a row: settled */
#define DRV_CLOSE_ROUNDS 500 /* loop steps drv_stop gives the closing */
#define DRV_DRAIN_ROUND 10  /* then sessions still open get the shutdown */

bool drv_fuzzing = false;

static void on_connection(uv_stream_t *server, int status)
{
	sg_listener *l = server->data;
	if (status < 0) {
		fprintf(stderr, "driver: accept: %s\n", uv_strerror(status));
		return;
	}
	sg_session_accept(l->worker, l);
}

static sg_config *load_config(drv *d, const char *extra)
{
	snprintf(d->path, sizeof d->path, "/tmp/sg-test-driver-XXXXXX");
	int fd = mkstemp(d->path);
	if (fd < 0) {
		perror("driver: mkstemp");
		return NULL;
	}
	FILE *f = fdopen(fd, "w");
	if (!f) {
		perror("driver: fdopen");
		close(fd);
		unlink(d->path);
		return NULL;
	}
	fputs(base_config, f);
	if (extra)
		fputs(extra, f);
	fclose(f);
	sg_errors errs = {0};
	sg_config *cfg = sg_config_load(d->path, &errs);
	unlink(d->path);
	if (!cfg) {
		fprintf(stderr, "driver: the test's configuration is refused:\n");
		sg_errors_print(&errs, stderr);
	}
	sg_errors_free(&errs);
	return cfg;
}

/* Read everything the client's socket holds; true when text came. */
static bool client_read(drv *d)
{
	if (d->fd < 0 || d->eof)
		return false;
	bool text = false, end = false;
	for (;;) {
		char buf[65536];
		ssize_t n = recv(d->fd, buf, sizeof buf, 0);
		if (n > 0) {
			sg_buf_append(&d->text, buf, (size_t)n);
			text = true;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || errno == ECONNRESET) {
			end = true;
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			fprintf(stderr, "driver: recv: %s\n", strerror(errno));
			end = true;
		}
		break;
	}
	if (text)
		d->reads++;
	if (end)
		d->eof = true;
	return text || end;
}

/* Wait up to ms for I/O on the loop or the client: true when some is ready. */
static bool wait_io(drv *d, int ms)
{
	struct pollfd p[2] = {{.fd = uv_backend_fd(&d->w.loop), .events = POLLIN}};
	nfds_t n = 1;
	if (d->fd >= 0 && !d->eof) {
		p[1] = (struct pollfd){.fd = d->fd, .events = POLLIN};
		n = 2;
	}
	return poll(p, n, drv_fuzzing ? 0 : ms) > 0;
}

int drv_run(drv *d)
{
	if (!d->started)
		return -1; /* drv_start failed and said why */
	int quiet = 0;
	for (int round = 0; round < DRV_ROUNDS_MAX; round++) {
		bool busy = drv_link_arm(d);
		uv_run(&d->w.loop, UV_RUN_NOWAIT);
		/* after every step: a write per step is a read here */
		if (client_read(d))
			busy = true;
		if (busy || wait_io(d, DRV_QUIET_MS)) {
			quiet = 0;
			continue;
		}
		if (++quiet >= DRV_QUIET_ROUNDS)
			return 0;
	}
	fprintf(stderr, "driver: the loop did not settle in %d steps\n",
	        DRV_ROUNDS_MAX);
	return -1;
}

int drv_start(drv *d, const char *extra)
{
	memset(d, 0, sizeof *d);
	d->fd = -1;
	/* as the daemon does: a write to a closed peer is EPIPE, not a signal */
	signal(SIGPIPE, SIG_IGN);
	sg_buf_init(&d->text, 0);
	sg_buf_init(&d->taken, 0);
	drv_link_init(d);
	sg_config *cfg = load_config(d, extra);
	if (!cfg)
		return -1;
	sg_log_level = cfg->log_level;
	const char *lv = getenv("SG_TEST_LOG"); /* e.g. SG_TEST_LOG=debug */
	if (lv && sg_log_level_parse(lv) >= 0)
		sg_log_level = sg_log_level_parse(lv);

	uv_loop_init(&d->w.loop);
	d->w.loop.data = d; /* the scripted link finds the driver here */
	d->w.cfg = cfg;
	d->w.listeners = &d->l;
	d->w.nlisteners = 1;
	uv_timer_init(&d->w.loop, &d->deliver);
	d->deliver.data = d;

	d->l.worker = &d->w;
	d->l.index = 0;
	d->l.tcp.data = &d->l;
	uv_tcp_init(&d->w.loop, &d->l.tcp);
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	int r = uv_tcp_bind(&d->l.tcp, (const struct sockaddr *)&sa, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&d->l.tcp, 16, on_connection);
	int len = sizeof sa;
	if (r == 0)
		r = uv_tcp_getsockname(&d->l.tcp, (struct sockaddr *)&sa, &len);
	d->started = true;
	if (r < 0) {
		fprintf(stderr, "driver: listen: %s\n", uv_strerror(r));
		return -1;
	}
	d->l.bound = true;
	d->port = ntohs(sa.sin_port);

	d->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (d->fd < 0 || (connect(d->fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
	                  errno != EINPROGRESS)) {
		fprintf(stderr, "driver: connect: %s\n", strerror(errno));
		return -1;
	}
	/* every write goes out at once: with Nagle a small one waits for the
	 * session's delayed ACK (some 40 ms), longer than drv_run waits */
	int one = 1;
	setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (drv_run(d) < 0)
		return -1;
	if (strcmp(drv_client_text(d), DRV_GREETING) != 0) {
		fprintf(stderr, "driver: no greeting, got \"%s\"\n",
		        drv_client_text(d));
		return -1;
	}
	drv_take(d);
	return 0;
}

void drv_send(drv *d, const char *bytes)
{
	drv_send_n(d, bytes, strlen(bytes));
}

void drv_send_n(drv *d, const char *bytes, size_t len)
{
	size_t off = 0;
	for (int tries = 0; off < len && d->fd >= 0 && tries < 1000; tries++) {
		ssize_t n = send(d->fd, bytes + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR) {
			fprintf(stderr, "driver: send: %s\n", strerror(errno));
			return;
		}
		/* the session does not read: let it */
		uv_run(&d->w.loop, UV_RUN_NOWAIT);
		client_read(d);
	}
	if (off < len)
		fprintf(stderr, "driver: sent %zu of %zu octets\n", off, len);
}

void drv_shutdown(drv *d)
{
	if (d->fd >= 0 && shutdown(d->fd, SHUT_WR) == 0)
		d->shut = true;
}

const char *drv_client_text(drv *d)
{
	/* NUL-terminated without counting the NUL */
	sg_buf_append(&d->text, "", 1);
	d->text.len--;
	return d->text.data;
}

unsigned drv_client_reads(drv *d) { return d->reads; }

const char *drv_take(drv *d)
{
	sg_buf_reset(&d->taken);
	sg_buf_append(&d->taken, d->text.data, d->text.len);
	sg_buf_append(&d->taken, "", 1);
	sg_buf_reset(&d->text);
	d->reads = 0;
	return d->taken.data;
}

int drv_ehlo(drv *d)
{
	drv_send(d, "EHLO client.test\r\n");
	drv_run(d);
	const char *t = drv_take(d);
	const char *last = t;
	for (const char *p = t; *p; p++)
		if (p[0] == '\n' && p[1])
			last = p + 1;
	if (strncmp(last, "250 ", 4) != 0) {
		fprintf(stderr, "driver: EHLO got \"%s\"\n", t);
		return -1;
	}
	return 0;
}

static void walk_report(uv_handle_t *h, void *arg)
{
	(void)arg;
	fprintf(stderr, "driver: handle left open: %s%s\n",
	        uv_handle_type_name(uv_handle_get_type(h)),
	        uv_is_closing(h) ? " (closing)" : "");
}

int drv_stop(drv *d)
{
	int rc = 0;
	if (!d->started) {
		drv_link_free(d);
		sg_buf_free(&d->text);
		sg_buf_free(&d->taken);
		return 0;
	}
	/* the client goes: the session sees EOF and closes (at once, or when
	 * the reply it waits for is in: then the shutdown path closes it) */
	if (d->fd >= 0) {
		struct linger reset = {.l_onoff = 1, .l_linger = 0};
		if (drv_fuzzing)
			setsockopt(d->fd, SOL_SOCKET, SO_LINGER, &reset,
			           sizeof reset);
		close(d->fd);
		d->fd = -1;
	}
	for (int i = 0; i < DRV_CLOSE_ROUNDS && d->w.nsessions > 0; i++) {
		drv_link_arm(d);
		uv_run(&d->w.loop, UV_RUN_NOWAIT);
		wait_io(d, DRV_QUIET_MS);
		/* one that waits for a reply the test never gave */
		if (i == DRV_DRAIN_ROUND)
			sg_session_drain_all(&d->w, true);
	}
	if (d->w.nsessions > 0) {
		fprintf(stderr, "driver: %u session(s) would not close\n",
		        d->w.nsessions);
		rc = -1;
	}
	uv_close((uv_handle_t *)&d->l.tcp, NULL);
	uv_close((uv_handle_t *)&d->deliver, NULL);
	for (int i = 0; i < DRV_CLOSE_ROUNDS && uv_loop_alive(&d->w.loop); i++) {
		uv_run(&d->w.loop, UV_RUN_NOWAIT);
		if (uv_loop_alive(&d->w.loop))
			wait_io(d, DRV_QUIET_MS);
	}
	if (uv_loop_close(&d->w.loop) != 0) {
		uv_walk(&d->w.loop, walk_report, NULL);
		fprintf(stderr, "driver: the loop is not empty\n");
		rc = -1;
	}
	sg_config_unref(d->w.cfg);
	d->w.cfg = NULL;
	drv_link_free(d);
	sg_buf_free(&d->text);
	sg_buf_free(&d->taken);
	d->started = false;
	return rc;
}
