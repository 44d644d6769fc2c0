/* SPDX-License-Identifier: BSD-2-Clause */
/* common/metrics.h: counters, gauges and histograms for [metrics], and the
 * Prometheus text exposition format (version 0.0.4) they are served in.
 *
 * Each worker thread counts into a slot of its own (sg_metrics_bind), so
 * the hot path takes no lock and shares no cache line with another worker;
 * a thread that is no worker (the main loop's probe, unit tests) counts
 * into a shared slot.  Every increment is a relaxed atomic add, and a
 * scrape sums every slot with relaxed atomic loads: the sums are not one
 * instant's, but each counter only grows, which is all Prometheus asks.
 *
 * Label values that come from the configuration or the client (listener
 * name, SASL mechanism, upstream host:port, policy action) are interned
 * into at most SG_M_VALUES - 1 values per label; past that they are counted
 * under "other", so no input can make the exposition grow without bound.
 *
 * The hooks below are called where the event is logged, one call each, so
 * a counter and the log lines it counts agree (README "Monitoring"). */
#ifndef SG_METRICS_H
#define SG_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SG_M_SLOTS 65  /* 64 workers (the [server] workers maximum) + 1 */
#define SG_M_VALUES 32 /* per label; the last one is "other" */
#define SG_M_BUCKETS 15 /* histogram upper bounds, +Inf not counted */

enum sg_mlabel { SG_ML_LISTENER, SG_ML_MECH, SG_ML_UPSTREAM, SG_ML_ACTION,
	         SG_ML_N };
enum sg_mauth { SG_MA_OK, SG_MA_FAIL, SG_MA_TEMPFAIL, SG_MA_N };
enum sg_mrefusal { SG_MR_SIZE, SG_MR_BARE, SG_MR_NUL, SG_MR_UPSTREAM,
	           SG_MR_N };
enum sg_mreject { SG_MJ_MAXCONN, SG_MJ_PROXY, SG_MJ_FD, SG_MJ_N };
/* [upstream] pool_size: a link open served by a kept connection, one that
 * found none, a kept one found closed at its first command */
enum sg_mpool { SG_MP_HIT, SG_MP_MISS, SG_MP_STALE, SG_MP_N };

typedef struct sg_mhist {
	uint64_t bucket[SG_M_BUCKETS + 1]; /* not cumulative; last = +Inf */
	uint64_t sum_ns;
} sg_mhist;

/* One worker's counts (and, summed, a scrape's).  Gauges are kept as
 * ups minus downs in unsigned arithmetic: the sum over slots is right even
 * if one slot's part alone would be negative. */
typedef struct sg_metrics_slot {
	uint64_t conns[SG_M_VALUES];      /* accepted, per listener */
	uint64_t conns_open[SG_M_VALUES];
	uint64_t rejected[SG_M_VALUES][SG_MJ_N];
	uint64_t sessions[SG_M_VALUES];
	uint64_t sessions_open[SG_M_VALUES];
	uint64_t tls[SG_M_VALUES][2];     /* ok, fail */
	uint64_t auth[SG_M_VALUES][SG_MA_N]; /* per mechanism */
	sg_mhist auth_time[SG_MA_N];
	uint64_t msgs[2];                 /* accepted, refused */
	uint64_t msg_bytes;
	uint64_t replies[SG_M_VALUES][4]; /* per upstream: 2xx..5xx */
	sg_mhist reply_time;
	uint64_t up_fail[SG_M_VALUES];    /* per upstream server */
	uint64_t failovers;
	uint64_t unavailable;
	uint64_t pool[SG_MP_N];
	uint64_t auth_cache[2];           /* credential cache: miss, hit */
	uint64_t refusals[SG_MR_N];
	uint64_t stripped;
	uint64_t policy[SG_M_VALUES];     /* per action */
	char pad[64]; /* the next worker's slot starts on another cache line */
} sg_metrics_slot;

/* What a scrape shows: the summed slots, the interned label values (the
 * last of each, if counted, is "other") and values read at scrape time. */
typedef struct sg_metrics_snapshot {
	sg_metrics_slot sum;
	const char *names[SG_ML_N][SG_M_VALUES];
	unsigned nnames[SG_ML_N];
	uint64_t sasl_inflight; /* Cyrus calls queued or running */
	uint64_t conns_global;  /* against [server] max_connections */
} sg_metrics_snapshot;

/* Histogram bounds in seconds, for the renderer and tests. */
extern const double sg_metrics_bounds[SG_M_BUCKETS];

/* The calling thread counts into worker slot i (0 <= i < SG_M_SLOTS-1). */
void sg_metrics_bind(int i);

/* A label value known before its first event (a listener's name, an
 * upstream server's host:port): its series are shown from the start, at
 * 0, as Prometheus advises for a label value that is known. */
void sg_metrics_declare(enum sg_mlabel d, const char *value);

/* ---- hooks (each one line where the event is logged) ---- */
void sg_metrics_accept(const char *listener);      /* TCP accepted */
void sg_metrics_closed(const char *listener);      /* its socket closed */
void sg_metrics_rejected(const char *listener, enum sg_mreject why);
void sg_metrics_session(const char *listener, bool begin); /* connect/disconnect */
void sg_metrics_tls(const char *listener, bool ok);
void sg_metrics_auth(const char *mech, enum sg_mauth result, uint64_t ns);
void sg_metrics_message(bool accepted, uint64_t bytes);
void sg_metrics_reply(const char *upstream, int code, uint64_t ns);
void sg_metrics_upstream_fail(const char *upstream);
void sg_metrics_failover(void);
void sg_metrics_unavailable(void);
void sg_metrics_pool(enum sg_mpool result);
/* [sasl] cache_size: a PLAIN/LOGIN login looked up in the credential
 * cache, found (hit) or not */
void sg_metrics_auth_cache(bool hit);
void sg_metrics_refusal(enum sg_mrefusal why);
void sg_metrics_stripped(void);
/* A policy decision as its event=policy line logs it (proxy/policy_cmd.c):
 * "continue", "refuse", "default_defer" or "default_dunno"; counted in
 * saslgate_policy_results_total{result}. */
void sg_metrics_policy(const char *action);

/* Sum every slot into snap (label names included); the caller adds the
 * scrape-time values. */
void sg_metrics_collect(sg_metrics_snapshot *snap);

/* ---- pure: for the HTTP side and the unit tests ---- */

/* The exposition of snap, appended to out. */
void sg_metrics_render(const sg_metrics_snapshot *snap, sg_buf *out);
/* A label value escaped per the exposition format (\\, \", \n). */
void sg_metrics_escape(sg_buf *out, const char *v);
/* Index of the bucket a duration falls in (SG_M_BUCKETS: +Inf). */
unsigned sg_metrics_bucket(uint64_t ns);

#endif
