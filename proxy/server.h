/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/server.h: workers (one libuv loop per thread) and their listeners.
 *
 * Every worker binds its own copy of each listener with SO_REUSEPORT, so the
 * kernel spreads connections over the cores; a session lives and dies on one
 * loop (no locks on the hot path).  The main thread owns signals: SIGHUP
 * builds a new config + TLS context and hands them to every worker through
 * its uv_async; SIGTERM asks every worker to stop accepting and drain. */
#ifndef SG_PROXY_SERVER_H
#define SG_PROXY_SERVER_H

#include <stdbool.h>
#include <uv.h>

#include "../common/config.h"
#include "../common/tls.h"

struct sg_session;

typedef struct sg_listener {
	uv_tcp_t tcp;     /* the bound socket (closing it closes the socket) */
	uv_poll_t poll;   /* its readiness: server.c accepts (not uv_listen) */
	uv_timer_t retry; /* paused while no descriptor is free */
	struct sg_worker *worker;
	size_t index; /* into cfg->listeners of the config that bound it */
	bool bound;
} sg_listener;

typedef struct sg_worker {
	uv_loop_t loop;
	uv_thread_t thread;
	int id;
	struct sg_server *srv;
	sg_config *cfg;  /* current config (a reference); sessions take their own */
	sg_tls_ctx *tls; /* current server TLS context, NULL when no [tls] */
	sg_listener *listeners;
	size_t nlisteners;
	struct sg_mhttp *metrics; /* its [metrics] listener, NULL when off */
	uv_async_t wake;       /* main thread -> worker: reload or stop */
	uv_timer_t stop_timer; /* polls sessions during shutdown */
	uv_prepare_t log_flush; /* writes the iteration's log lines (log.h) */
	uint64_t stop_started;  /* loop time the shutdown began */
	struct sg_session *sessions; /* intrusive doubly linked list */
	unsigned nsessions;
	bool stopping;
	/* out of descriptors (server.c): a spare one to refuse connections
	 * with, and what the rate-limited log lines report */
	int spare_fd;
	bool fd_short;           /* accept failed for want of one, not yet back */
	uint64_t fd_short_since; /* loop time it began */
	uint64_t fd_logged;      /* loop time of the last line about it */
	unsigned long fd_refused; /* connections refused meanwhile */
	/* pending hand-over from the main thread (under srv->lock) */
	sg_config *new_cfg;
	sg_tls_ctx *new_tls;
	bool want_stop;
} sg_worker;

/* Global connection count against max_connections, all workers. */
unsigned sg_server_conn_inc(void); /* returns the new count */
void sg_server_conn_dec(void);

/* A listener with proxy_protocol takes the PROXY header only from the
 * peers in its proxy_trusted_networks: anyone else could choose the client
 * address.  true (and logged) when the TCP peer (NULL: unknown) is not one
 * of them; the connection is then closed before anything is sent. */
bool sg_server_proxy_refused(const sg_listener_cfg *lc,
                             const struct sockaddr *peer, const char *sid,
                             const char *ip, unsigned port);

/* Run the daemon until SIGTERM/SIGINT; takes the reference on cfg.
 * Returns the exit code. */
int sg_server_run(sg_config *cfg);
/* saslgate -t: load and check everything, bind nothing; exit code. */
int sg_server_check(const char *path);

#endif
