/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/server.c: workers, listeners, signals, reload and shutdown.
 *
 * Threads: the main thread runs a small loop that owns the signals, the
 * upstream capability probe and configuration reloads.  Each of the
 * `workers` threads runs its own uv loop with its own copy of every listener
 * bound with SO_REUSEPORT, so the kernel spreads connections over the cores
 * and a session never leaves the loop that accepted it (docs/ARCHITECTURE.md).
 *
 * Reload (SIGHUP): the main thread builds a new sg_config and TLS context;
 * if either fails, the errors are logged with FILE:LINE and the running ones
 * stay (a broken file never stops a running daemon).  Otherwise each worker gets the new pair through its
 * uv_async; sessions already running keep the references they took at
 * accept, new sessions get the new ones.  Listener addresses cannot move on
 * a reload (we may have dropped root): a removed listener is closed, a new
 * one is reported as needing a restart.
 *
 * Shutdown (SIGTERM/SIGINT): workers close their listeners, ask sessions to
 * finish, and after shutdown_timeout send the rest 421 and close them. */
#include "server.h"

#include "../common/filecheck.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "../common/metrics.h"
#include "../sasl/auth.h"
#include "../upstream/link.h"
#include "metrics_http.h"
#include "policy.h"
#include "reply.h"
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define SG_LISTEN_BACKLOG 1024
#define SG_DRAIN_POLL_MS 100
/* How long past shutdown_timeout a SASL call may keep a worker. */
#define SG_SASL_ABANDON_MS 1000
#define SG_ACCEPT_BATCH 64  /* connections taken per wake-up of a listener */
#define SG_FD_RETRY_MS 250  /* a listener's pause when no descriptor is free */
#define SG_FD_LOG_MS 10000  /* one line per worker this often, out of them */

struct sg_server {
	uv_loop_t *loop; /* main thread */
	sg_config *cfg;
	sg_tls_ctx *tls;
	sg_worker *workers;
	int nworkers;
	uv_mutex_t lock;
	uv_signal_t sig_hup, sig_term, sig_int;
	bool stopping;
};

static unsigned conn_count;

unsigned sg_server_conn_inc(void)
{
	return __atomic_add_fetch(&conn_count, 1, __ATOMIC_RELAXED);
}

void sg_server_conn_dec(void)
{
	__atomic_sub_fetch(&conn_count, 1, __ATOMIC_RELAXED);
}

static const char *const tls_mode_name[] = {"none", "starttls", "implicit"};

/* ------------------------------------------------------------- listeners */

/* Every listener and upstream server gets its series at 0 from the start
 * (the upstream as the link names it: host:port, [v6]:port). */
static void declare_metrics(const sg_config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		sg_metrics_declare(SG_ML_LISTENER, cfg->listeners[i].name);
	for (size_t i = 0; i < cfg->nservers; i++)
		sg_metrics_declare(SG_ML_UPSTREAM, cfg->servers[i].label);
}

bool sg_server_proxy_refused(const sg_listener_cfg *lc,
                             const struct sockaddr *peer, const char *sid,
                             const char *ip, unsigned port)
{
	if (lc->proxy_protocol == SG_PP_NO ||
	    (peer && sg_net_match(lc->trusted, lc->ntrusted, peer)))
		return false;
	log_warn(sid,
	         "event=proxy_refused client=%s:%u listener=%s reason=\"peer not "
	         "in proxy_trusted_networks\"",
	         ip, port, lc->name);
	sg_metrics_rejected(lc->name, SG_MJ_PROXY);
	return true;
}

/* Out of descriptors.  accept(2) fails with EMFILE (RLIMIT_NOFILE) or
 * ENFILE (the system's table) while the connection waits in the backlog,
 * and the listening socket stays readable.  libuv's uv_listen then takes
 * such connections with a spare descriptor and closes them without a word
 * or a callback, and once another thread has taken the spare's slot it
 * retries accept(2) in a loop until a descriptor frees up; so saslgate
 * polls its listening sockets and accepts itself.  A worker that gets
 * EMFILE gives up its own spare descriptor for a moment, takes each
 * waiting connection with it, writes it the 421 of max_connections, closes
 * it, and takes the spare back: the client learns at once to come back
 * later.  Without a spare (another thread took the slot first), the
 * listener pauses for SG_FD_RETRY_MS rather than spin on accept(2).  The
 * log says it once when it begins, once per SG_FD_LOG_MS while it lasts
 * and once when it is over, with the count of refused connections. */

static int spare_open(void)
{
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void fd_short_log(sg_worker *w, const sg_listener_cfg *lc, int err)
{
	uint64_t now = uv_now(&w->loop);
	if (!w->fd_short) {
		w->fd_short = true;
		w->fd_short_since = now;
	} else if (now - w->fd_logged < SG_FD_LOG_MS) {
		return;
	}
	w->fd_logged = now;
	struct rlimit rl;
	unsigned long nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0
	                           ? (unsigned long)rl.rlim_cur
	                           : 0;
	log_error(NULL,
	          "event=fd_exhausted worker=%d listener=%s error=\"%s\" "
	          "connections=%u nofile=%lu refused=%lu: new connections get "
	          "421 until descriptors are free (raise LimitNOFILE, or lower "
	          "max_connections)",
	          w->id, lc->name, strerrordesc_np(err),
	          __atomic_load_n(&conn_count, __ATOMIC_RELAXED), nofile,
	          w->fd_refused);
}

static void fd_back(sg_worker *w, const sg_listener_cfg *lc)
{
	if (!w->fd_short)
		return;
	log_info(NULL, "event=fd_recovered worker=%d listener=%s refused=%lu "
	         "time=%.1f",
	         w->id, lc->name, w->fd_refused,
	         (double)(uv_now(&w->loop) - w->fd_short_since) / 1000.0);
	w->fd_short = false;
	w->fd_refused = 0;
}

/* As session.c refuses past max_connections: no plaintext on an
 * implicit-TLS port.  A few octets on a new socket: the send buffer is
 * empty, so this never blocks. */
static void refuse_fd(const sg_worker *w, const sg_listener_cfg *lc, int fd)
{
	if (lc->tls != SG_TLS_IMPLICIT) {
		const sg_rep_def *d = &sg_rep_table[SG_R_TOO_MANY_CONN];
		char line[512];
		int n = snprintf(line, sizeof line, "%d %s %s %s\r\n", d->code, d->enh,
		                 w->cfg->hostname, d->text);
		if (n > 0 && (size_t)n < sizeof line)
			(void)send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	close(fd);
}

static void listener_ready(uv_poll_t *p, int status, int events);

static void resume_listener(uv_timer_t *t)
{
	sg_listener *l = t->data;
	if (l->worker->spare_fd < 0)
		l->worker->spare_fd = spare_open();
	uv_poll_start(&l->poll, UV_READABLE, listener_ready);
}

static void pause_listener(sg_listener *l)
{
	uv_poll_stop(&l->poll);
	uv_timer_start(&l->retry, resume_listener, SG_FD_RETRY_MS, 0);
}

static void no_descriptor(sg_listener *l, int lfd, int err)
{
	sg_worker *w = l->worker;
	const sg_listener_cfg *lc = &w->cfg->listeners[l->index];
	bool stuck = true;
	if (w->spare_fd >= 0 && (err == EMFILE || err == ENFILE)) {
		close(w->spare_fd);
		w->spare_fd = -1;
		stuck = false;
		for (int i = 0; i < SG_ACCEPT_BATCH; i++) {
			int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd >= 0) {
				refuse_fd(w, lc, fd);
				sg_metrics_rejected(lc->name, SG_MJ_FD);
				w->fd_refused++;
				continue;
			}
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* EMFILE again: another thread took the slot */
			stuck = errno != EAGAIN && errno != EWOULDBLOCK;
			break;
		}
		w->spare_fd = spare_open();
	}
	fd_short_log(w, lc, err);
	if (stuck || w->spare_fd < 0)
		pause_listener(l);
}

/* The listening socket is readable: take up to SG_ACCEPT_BATCH
 * connections (a flood does not hold up the loop's other work). */
static void listener_ready(uv_poll_t *p, int status, int events)
{
	sg_listener *l = p->data;
	sg_worker *w = l->worker;
	const sg_listener_cfg *lc = &w->cfg->listeners[l->index];
	uv_os_fd_t lfd;
	(void)events;
	if (status < 0 || uv_fileno((uv_handle_t *)&l->tcp, &lfd) < 0) {
		log_warn(NULL, "listener %s on %s: %s", lc->name, lc->address,
		         uv_strerror(status < 0 ? status : UV_EBADF));
		pause_listener(l);
		return;
	}
	for (int i = 0; i < SG_ACCEPT_BATCH; i++) {
		/* the client's address comes with the connection: no
		 * getpeername(2) per session */
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int fd = accept4(lfd, (struct sockaddr *)&peer, &plen,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			fd_back(w, lc);
			sg_session_accept_fd(w, l, fd, plen > 0 ? &peer : NULL);
			continue;
		}
		int err = errno;
		switch (err) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
			return;
		case EINTR:
		case ECONNABORTED:
		/* accept(2), Linux: errors of the network, to be retried */
		case ENETDOWN:
		case EPROTO:
		case ENOPROTOOPT:
		case EHOSTDOWN:
		case ENONET:
		case EHOSTUNREACH:
		case EOPNOTSUPP:
		case ENETUNREACH:
			continue;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			no_descriptor(l, lfd, err);
			return;
		default:
			log_warn(NULL, "accept on %s: %s", lc->address,
			         strerrordesc_np(err));
			pause_listener(l);
			return;
		}
	}
}

static int bind_listener(sg_worker *w, sg_listener *l, const sg_listener_cfg *lc,
                         sg_errors *errs)
{
	int r;
	l->worker = w;
	l->tcp.data = l;
	uv_tcp_init_ex(&w->loop, &l->tcp, lc->addr.ss_family);
	uv_os_fd_t fd = -1;
	if (uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0) {
		int one = 1;
		/* one socket per worker on the same port: the kernel balances */
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	}
	unsigned flags = lc->addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
	r = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&lc->addr, flags);
	/* listen(2) and poll ourselves: see "Out of descriptors" above */
	if (r == 0 && listen(fd, SG_LISTEN_BACKLOG) < 0)
		r = uv_translate_sys_error(errno);
	if (r == 0)
		r = uv_poll_init_socket(&w->loop, &l->poll, fd);
	if (r < 0) {
		sg_errors_add(errs, &lc->where, "[listener %s] cannot listen on %s: %s",
		              lc->name, lc->address, uv_strerror(r));
		return -1;
	}
	l->poll.data = l;
	uv_timer_init(&w->loop, &l->retry);
	l->retry.data = l;
	uv_poll_start(&l->poll, UV_READABLE, listener_ready);
	l->bound = true;
	return 0;
}

static void listener_closed(uv_handle_t *h) { (void)h; }

/* The poll first: it stops watching the socket before the tcp handle's
 * close closes it. */
static void close_listener(sg_listener *l)
{
	if (!l->bound)
		return;
	l->bound = false;
	uv_close((uv_handle_t *)&l->poll, NULL);
	uv_close((uv_handle_t *)&l->retry, NULL);
	uv_close((uv_handle_t *)&l->tcp, listener_closed);
}

static void close_listeners(sg_worker *w)
{
	for (size_t i = 0; i < w->nlisteners; i++)
		close_listener(&w->listeners[i]);
}

/* --------------------------------------------------------------- workers */

static void drain_poll(uv_timer_t *t);

static void worker_begin_stop(sg_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	close_listeners(w);
	sg_mhttp_stop(w->metrics);
	w->metrics = NULL;
	uv_update_time(&w->loop);
	w->stop_started = uv_now(&w->loop);
	sg_session_drain_all(w, false);
	uv_timer_start(&w->stop_timer, drain_poll, SG_DRAIN_POLL_MS,
	               SG_DRAIN_POLL_MS);
}

static void drain_poll(uv_timer_t *t)
{
	sg_worker *w = t->data;
	uint64_t deadline = w->cfg->shutdown_timeout_ms;
	uint64_t elapsed = uv_now(&w->loop) - w->stop_started;
	if (w->nsessions > 0 && elapsed >= deadline)
		sg_session_drain_all(w, true);
	/* A SASL call still in the backend (saslauthd stopped, a directory
	 * that never answers) cannot be cancelled, and its pending work would
	 * keep the loop running.  Its session is gone; past the deadline plus
	 * a second, the worker stops without it (sg_server_run then exits
	 * without waiting for the pool threads). */
	unsigned stuck = sg_auth_inflight();
	if (w->nsessions == 0 && stuck > 0 &&
	    elapsed < deadline + SG_SASL_ABANDON_MS)
		return;
	if (w->nsessions == 0) {
		uv_timer_stop(t);
		if (stuck > 0) {
			log_warn(NULL, "shutdown: worker %d: %u SASL call(s) still "
			         "waiting for the backend, not waited for", w->id,
			         stuck);
			uv_stop(&w->loop);
		}
		sg_policy_shutdown(&w->loop); /* its kept connections */
		sg_link_pool_shutdown(&w->loop); /* and the upstream's */
		uv_close((uv_handle_t *)&w->stop_timer, NULL);
		uv_close((uv_handle_t *)&w->wake, NULL);
		uv_close((uv_handle_t *)&w->log_flush, NULL);
	}
}

/* Main thread -> worker: a new configuration, or stop. */
static void on_wake(uv_async_t *a)
{
	sg_worker *w = a->data;
	struct sg_server *srv = w->srv;
	uv_mutex_lock(&srv->lock);
	sg_config *nc = w->new_cfg;
	sg_tls_ctx *nt = w->new_tls;
	bool stop = w->want_stop;
	w->new_cfg = NULL;
	w->new_tls = NULL;
	uv_mutex_unlock(&srv->lock);

	if (nc) {
		/* Re-map each listener to the new config by address. */
		for (size_t i = 0; i < w->nlisteners; i++) {
			sg_listener *l = &w->listeners[i];
			if (!l->bound)
				continue;
			const sg_listener_cfg *old = &w->cfg->listeners[l->index];
			size_t j;
			for (j = 0; j < nc->nlisteners; j++)
				if (nc->listeners[j].addrlen == old->addrlen &&
				    memcmp(&nc->listeners[j].addr, &old->addr,
				           old->addrlen) == 0)
					break;
			if (j == nc->nlisteners) {
				if (w->id == 0)
					log_info(NULL, "reload: [listener %s] %s removed, closing it",
					         old->name, old->address);
				close_listener(l);
			} else {
				l->index = j;
			}
		}
		sg_config_unref(w->cfg);
		w->cfg = nc;
		/* kept upstream connections of another [upstream] go now */
		sg_link_pool_reconfig(&w->loop, nc);
		if (w->tls)
			sg_tls_ctx_unref(w->tls);
		w->tls = nt;
	}
	if (stop)
		worker_begin_stop(w);
}

/* Before the loop waits for I/O: whatever its callbacks logged since the
 * last wait, in one write.  A prepare handle runs once per iteration, after
 * timers and before the poll; the lines of the poll's callbacks, the close
 * callbacks and the next timers go out before the next wait. */
static void on_log_flush(uv_prepare_t *p)
{
	(void)p;
	sg_log_flush();
}

static void worker_main(void *arg)
{
	sg_worker *w = arg;
	sg_metrics_bind(w->id); /* its own counting slot */
	sg_log_hold(1);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	sg_log_hold(0); /* the last iteration's lines */
}

/* ------------------------------------------------------------- main loop */

static void hand_over(struct sg_server *srv, sg_config *cfg, sg_tls_ctx *tls,
                      bool stop)
{
	for (int i = 0; i < srv->nworkers; i++) {
		sg_worker *w = &srv->workers[i];
		uv_mutex_lock(&srv->lock);
		if (cfg) {
			if (w->new_cfg)
				sg_config_unref(w->new_cfg);
			if (w->new_tls)
				sg_tls_ctx_unref(w->new_tls);
			w->new_cfg = sg_config_ref(cfg);
			w->new_tls = tls ? sg_tls_ctx_ref(tls) : NULL;
		}
		if (stop)
			w->want_stop = true;
		uv_mutex_unlock(&srv->lock);
		uv_async_send(&w->wake);
	}
}

static bool needs_tls(const sg_config *c)
{
	if (*c->tls_certificate)
		return true;
	for (size_t i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].tls != SG_TLS_NONE)
			return true;
	return false;
}

static void reload(struct sg_server *srv)
{
	sg_errors errs = {0};
	sd_notify(0, "RELOADING=1");
	log_info(NULL, "reload: reading %s", srv->cfg->path);
	/* SIGHUP empties the credential cache even when the new file is
	 * refused: the admin's way to make a password change count now */
	sg_sasl_cache_flush();
	sg_config *nc = sg_config_load(srv->cfg->path, &errs);
	sg_tls_ctx *nt = NULL;
	if (nc && needs_tls(nc))
		nt = sg_tls_server_ctx(nc, &errs);
	if (nc && errs.n == 0)
		sg_sasl_reconfig(nc, &errs);
	if (!nc || errs.n) {
		sg_errors_log(&errs);
		log_error(NULL, "reload failed: keeping the running configuration");
		sg_errors_free(&errs);
		if (nc)
			sg_config_unref(nc);
		if (nt)
			sg_tls_ctx_unref(nt);
		sd_notify(0, "READY=1");
		return;
	}
	for (size_t j = 0; j < nc->nlisteners; j++) {
		bool found = false;
		for (size_t i = 0; i < srv->cfg->nlisteners; i++)
			if (srv->cfg->listeners[i].addrlen == nc->listeners[j].addrlen &&
			    memcmp(&srv->cfg->listeners[i].addr, &nc->listeners[j].addr,
			           nc->listeners[j].addrlen) == 0)
				found = true;
		if (!found)
			log_warn(NULL,
			         "reload: [listener %s] %s is new: restart saslgate to "
			         "listen there",
			         nc->listeners[j].name, nc->listeners[j].address);
	}
	if (strcmp(nc->metrics_address, srv->cfg->metrics_address) != 0)
		log_warn(NULL, "reload: [metrics] address changed to \"%s\": restart "
		         "saslgate to serve metrics there",
		         nc->metrics_address);
	sg_log_level = nc->log_level;
	declare_metrics(nc);
	hand_over(srv, nc, nt, false);
	sg_config_unref(srv->cfg);
	srv->cfg = nc;
	if (srv->tls)
		sg_tls_ctx_unref(srv->tls);
	srv->tls = nt;
	sg_upstream_probe(srv->loop, nc);
	log_info(NULL, "reload: done, new sessions use the new configuration");
	sd_notify(0, "READY=1");
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct sg_server *srv = h->data;
	if (signum == SIGHUP) {
		if (!srv->stopping)
			reload(srv);
		return;
	}
	if (srv->stopping)
		return;
	srv->stopping = true;
	log_info(NULL, "shutdown: %s received, finishing sessions (up to %llu ms)",
	         signum == SIGTERM ? "SIGTERM" : "SIGINT",
	         (unsigned long long)srv->cfg->shutdown_timeout_ms);
	sd_notify(0, "STOPPING=1");
	hand_over(srv, NULL, NULL, true);
	uv_close((uv_handle_t *)&srv->sig_hup, NULL);
	uv_close((uv_handle_t *)&srv->sig_term, NULL);
	uv_close((uv_handle_t *)&srv->sig_int, NULL);
}

static int drop_privileges(const char *user)
{
	if (!*user || geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_error(NULL, "[server] user %s: no such user", user);
		return -1;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		log_error(NULL, "cannot become user %s: %s", user, strerror(errno));
		return -1;
	}
	log_info(NULL, "running as user %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Worker i: its loop, wake-up and stop handles, and its own copy of every
 * listener, bound (SO_REUSEPORT). */
static int worker_init(struct sg_server *srv, int i, sg_errors *errs)
{
	const sg_config *cfg = srv->cfg;
	sg_worker *w = &srv->workers[i];
	w->id = i;
	w->srv = srv;
	uv_loop_init(&w->loop);
	w->cfg = sg_config_ref(srv->cfg);
	w->tls = srv->tls ? sg_tls_ctx_ref(srv->tls) : NULL;
	uv_async_init(&w->loop, &w->wake, on_wake);
	w->wake.data = w;
	uv_timer_init(&w->loop, &w->stop_timer);
	w->stop_timer.data = w;
	uv_prepare_init(&w->loop, &w->log_flush);
	uv_prepare_start(&w->log_flush, on_log_flush);
	uv_unref((uv_handle_t *)&w->log_flush); /* keeps no loop alive */
	w->spare_fd = spare_open();
	w->nlisteners = cfg->nlisteners;
	w->listeners = sg_xcalloc(cfg->nlisteners, sizeof *w->listeners);
	for (size_t j = 0; j < cfg->nlisteners; j++) {
		w->listeners[j].index = j;
		if (bind_listener(w, &w->listeners[j], &cfg->listeners[j], errs) < 0)
			return -1;
	}
	return sg_mhttp_start(&w->loop, cfg, &w->metrics, errs);
}

/* After its thread ended: the references it still holds. */
static void worker_free(sg_worker *w)
{
	if (w->new_cfg)
		sg_config_unref(w->new_cfg);
	if (w->new_tls)
		sg_tls_ctx_unref(w->new_tls);
	sg_config_unref(w->cfg);
	if (w->tls)
		sg_tls_ctx_unref(w->tls);
	free(w->listeners);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
}

/* "ready: saslgate X listening on name=addr/tls[+proxy] ... workers=N" */
static void log_ready(const sg_config *cfg, int nworkers)
{
	char lines[1024] = "";
	for (size_t j = 0; j < cfg->nlisteners; j++) {
		size_t n = strlen(lines);
		snprintf(lines + n, sizeof lines - n, " %s=%s/%s%s", cfg->listeners[j].name,
		         cfg->listeners[j].address, tls_mode_name[cfg->listeners[j].tls],
		         cfg->listeners[j].proxy_protocol ? "+proxy" : "");
	}
	log_info(NULL, "ready: saslgate %s listening on%s workers=%d", SG_VERSION,
	         lines, nworkers);
}

int sg_server_run(sg_config *cfg)
{
	struct sg_server srv;
	sg_errors errs = {0};
	memset(&srv, 0, sizeof srv);
	srv.cfg = cfg;
	srv.loop = uv_default_loop();
	uv_mutex_init(&srv.lock);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	sg_log_level = cfg->log_level;

	if (needs_tls(cfg)) {
		srv.tls = sg_tls_server_ctx(cfg, &errs);
		if (!srv.tls)
			goto fail;
	}
	if (sg_sasl_init(cfg, &errs) < 0)
		goto fail;
	if (errs.n) { /* reported, not fatal (e.g. saslauthd not up yet) */
		for (size_t i = 0; i < errs.n; i++)
			log_warn(NULL, "%s", errs.msg[i]);
		sg_errors_free(&errs);
	}

	declare_metrics(cfg);
	srv.nworkers = cfg->workers;
	srv.workers = sg_xcalloc((size_t)srv.nworkers, sizeof *srv.workers);
	for (int i = 0; i < srv.nworkers; i++)
		if (worker_init(&srv, i, &errs) < 0)
			goto fail;
	if (drop_privileges(cfg->user) < 0)
		goto fail;

	uv_signal_init(srv.loop, &srv.sig_hup);
	uv_signal_init(srv.loop, &srv.sig_term);
	uv_signal_init(srv.loop, &srv.sig_int);
	srv.sig_hup.data = srv.sig_term.data = srv.sig_int.data = &srv;
	uv_signal_start(&srv.sig_hup, on_signal, SIGHUP);
	uv_signal_start(&srv.sig_term, on_signal, SIGTERM);
	uv_signal_start(&srv.sig_int, on_signal, SIGINT);

	for (int i = 0; i < srv.nworkers; i++)
		uv_thread_create(&srv.workers[i].thread, worker_main, &srv.workers[i]);
	sg_upstream_probe(srv.loop, cfg);
	log_ready(cfg, srv.nworkers);
	sd_notify(0, "READY=1");

	uv_run(srv.loop, UV_RUN_DEFAULT);
	for (int i = 0; i < srv.nworkers; i++)
		uv_thread_join(&srv.workers[i].thread);
	/* A pool thread still inside Cyrus SASL (worker stop above) would
	 * hang the exit: libuv joins its pool threads when the process ends,
	 * and freeing what that thread uses is not safe.  Nothing is left to
	 * answer, so the process ends here. */
	unsigned stuck = sg_auth_inflight();
	if (stuck > 0) {
		log_info(NULL, "stopped (%u SASL call(s) left in the backend)", stuck);
		sg_log_flush();
		_exit(0);
	}
	for (int i = 0; i < srv.nworkers; i++)
		uv_loop_close(&srv.workers[i].loop);
	log_info(NULL, "stopped");
	for (int i = 0; i < srv.nworkers; i++)
		worker_free(&srv.workers[i]);
	free(srv.workers);
	if (srv.tls)
		sg_tls_ctx_unref(srv.tls);
	sg_sasl_done();
	uv_loop_close(srv.loop);
	if (srv.cfg != cfg)
		sg_config_unref(srv.cfg);
	else
		sg_config_unref(cfg);
	return 0;

fail:
	sg_errors_log(&errs);
	sg_errors_free(&errs);
	log_error(NULL, "not started");
	return 1;
}

/* `saslgate -t`: everything start-up checks, nothing bound, and every file
 * the daemon opens, opened as [server] user (filecheck.h). */
int sg_server_check(const char *path)
{
	sg_errors errs = {0};
	sg_config *cfg = sg_config_load(path, &errs);
	if (cfg) {
		bool tls_unreadable = sg_filecheck_config(cfg, &errs);
		if (needs_tls(cfg) && !tls_unreadable) {
			sg_tls_ctx *t = sg_tls_server_ctx(cfg, &errs);
			if (t)
				sg_tls_ctx_unref(t);
		}
		sg_sasl_init(cfg, &errs);
		sg_sasl_done();
	}
	sg_errors_print(&errs, stderr);
	int bad = errs.n > 0;
	sg_errors_free(&errs);
	if (cfg)
		sg_config_unref(cfg);
	if (!bad)
		printf("%s: configuration OK\n", path);
	return bad ? 1 : 0;
}
