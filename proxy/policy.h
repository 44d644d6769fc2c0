/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/policy.h: the client of Postfix policy servers ([policy] server;
 * SMTPD_POLICY_README), one pool of connections per worker loop.
 *
 * sg_policy_ask sends one request (policy_proto.h) to the first [policy]
 * server that takes it, on a connection of the worker's pool (at most
 * SG_POLICY_CONNS a server, kept open and reused: the protocol allows
 * many requests a connection).  A connection carries one request at a
 * time, so a reply is always its own request's; a request that would have
 * to wait for a free connection waits in line.  A server that cannot be
 * reached, closes the connection or answers garbage is passed over for
 * the next one (a connection reused after a quiet time may have been
 * closed by the server: the same server is tried once more on a new one).
 * [policy] timeout bounds the whole check; then the connection is closed
 * (a late reply would be another request's) and the result says "no
 * answer".  Nothing blocks the loop: names are resolved on the thread
 * pool, everything else is libuv I/O.
 *
 * Lifetime (docs/ARCHITECTURE.md): the query belongs to this module.  The
 * owner that no longer wants the answer calls sg_policy_cancel; the query
 * then ends without calling anyone (a reply still due is read, so the
 * connection stays in step, and then the connection is reused). */
#ifndef SG_PROXY_POLICY_H
#define SG_PROXY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "../common/config.h"
#include "policy_proto.h"

#define SG_POLICY_CONNS 4 /* connections a server, a worker */

typedef struct sg_policy_query sg_policy_query;

typedef struct sg_policy_result {
	bool answered;              /* false: no server answered in time */
	const char *server;         /* the spec that answered, or the last tried */
	const sg_policy_verdict *v; /* answered: the action's verdict */
	const char *action;         /* answered: the action= value, sanitised */
	const char *why;            /* !answered: the reason, for the log */
} sg_policy_result;

typedef void (*sg_policy_cb)(void *arg, const sg_policy_result *r);

/* Send req (len octets, a whole encoded request) to cfg's [policy]
 * servers; cb gets the result once, always from a later loop callback,
 * never from inside this call.  sid tags the log lines. */
sg_policy_query *sg_policy_ask(uv_loop_t *loop, const sg_config *cfg,
                               const char *sid, const char *req, size_t len,
                               sg_policy_cb cb, void *arg);
/* The owner is gone: cb is never called; the query ends by itself. */
void sg_policy_cancel(sg_policy_query *q);
/* The worker stops (after its last session): close the pool's
 * connections, end its queries; the loop can then end. */
void sg_policy_shutdown(uv_loop_t *loop);

#endif
