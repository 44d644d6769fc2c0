/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/metrics_http.h: the [metrics] endpoint, GET /metrics over HTTP/1.x.
 *
 * Served on the worker loops, no thread of its own: each worker binds the
 * metrics address with SO_REUSEPORT as it binds its SMTP listeners
 * (server.c).  One request per connection: the reply always says
 * "Connection: close" and the connection is closed once it is written.
 * A request must be whole within SG_HTTP_MAX octets and
 * SG_HTTP_TIMEOUT_MS; past either the connection gets 400 or is closed. */
#ifndef SG_PROXY_METRICS_HTTP_H
#define SG_PROXY_METRICS_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "../common/config.h"

#define SG_HTTP_MAX 4096
#define SG_HTTP_TIMEOUT_MS 5000

/* The request reader: feed it what arrives, in pieces of any size. */
typedef struct sg_http_req {
	char buf[SG_HTTP_MAX];
	size_t len;
	int status; /* 0 until decided */
} sg_http_req;

/* Append n octets; returns 0 while more is needed, else the status the
 * request gets: 200 (GET /metrics), 404 (GET of another path), 405 (a
 * method other than GET), 400 (not HTTP/1.x, or longer than SG_HTTP_MAX).
 * Once decided, further octets are ignored and the status is returned. */
int sg_http_feed(sg_http_req *r, const char *p, size_t n);

struct sg_mhttp;

/* Bind cfg's metrics address on loop (nothing when it is empty): *out is
 * NULL then.  -1 with errs filled when it cannot listen. */
int sg_mhttp_start(uv_loop_t *loop, const sg_config *cfg,
                   struct sg_mhttp **out, sg_errors *errs);
/* Close the listener and every request connection; frees itself once
 * their handles are closed.  NULL is a no-op. */
void sg_mhttp_stop(struct sg_mhttp *m);

#endif
