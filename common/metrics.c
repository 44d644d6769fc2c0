/* SPDX-License-Identifier: BSD-2-Clause */
/* common/metrics.c: per-worker counting slots, label interning, and the
 * Prometheus text exposition (metrics.h).  Format: the Prometheus
 * "text-based format" version 0.0.4 (HELP and TYPE lines, label values
 * escaped, histograms as cumulative _bucket{le=...} lines, _sum, _count). */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "mem.h"

const double sg_metrics_bounds[SG_M_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5,   1,      2.5,   5,    10,    30,    60};

static sg_metrics_slot slots[SG_M_SLOTS];
/* a worker's slot; other threads count into the last one */
static __thread sg_metrics_slot *tl_slot;

void sg_metrics_bind(int i)
{
	if (i >= 0 && i < SG_M_SLOTS - 1)
		tl_slot = &slots[i];
}

static sg_metrics_slot *me(void)
{
	return tl_slot ? tl_slot : &slots[SG_M_SLOTS - 1];
}

static void inc(uint64_t *p, uint64_t n)
{
	__atomic_add_fetch(p, n, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* ---- label values ----------------------------------------------------- */

/* Values are added under the lock and published by a release store of n,
 * so a reader that loads n (acquire) sees the strings before it; a value
 * once added never moves or goes (a counter must not lose its series). */
static struct {
	const char *v[SG_M_VALUES];
	unsigned n;
} dims[SG_ML_N];
static pthread_mutex_t dims_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned find(int d, const char *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (strcmp(dims[d].v[i], s) == 0)
			return i;
	return SG_M_VALUES;
}

static unsigned intern(int d, const char *s)
{
	if (!s || !*s)
		s = "-";
	unsigned n = __atomic_load_n(&dims[d].n, __ATOMIC_ACQUIRE);
	unsigned i = find(d, s, n);
	if (i < SG_M_VALUES)
		return i;
	pthread_mutex_lock(&dims_lock);
	n = dims[d].n;
	i = find(d, s, n);
	if (i == SG_M_VALUES) {
		i = SG_M_VALUES - 1; /* full: "other" */
		if (n < SG_M_VALUES - 1) {
			dims[d].v[n] = sg_xstrdup(s);
			__atomic_store_n(&dims[d].n, n + 1, __ATOMIC_RELEASE);
			i = n;
		}
	}
	pthread_mutex_unlock(&dims_lock);
	return i;
}

void sg_metrics_declare(enum sg_mlabel d, const char *value)
{
	intern(d, value);
}

/* ---- hooks -------------------------------------------------------------- */

unsigned sg_metrics_bucket(uint64_t ns)
{
	double s = (double)ns / 1e9;
	unsigned i = 0;
	while (i < SG_M_BUCKETS && s > sg_metrics_bounds[i])
		i++;
	return i;
}

static void observe(sg_mhist *h, uint64_t ns)
{
	inc(&h->bucket[sg_metrics_bucket(ns)], 1);
	inc(&h->sum_ns, ns);
}

void sg_metrics_accept(const char *listener)
{
	unsigned i = intern(SG_ML_LISTENER, listener);
	inc(&me()->conns[i], 1);
	inc(&me()->conns_open[i], 1);
}

void sg_metrics_closed(const char *listener)
{
	inc(&me()->conns_open[intern(SG_ML_LISTENER, listener)], (uint64_t)-1);
}

void sg_metrics_rejected(const char *listener, enum sg_mreject why)
{
	inc(&me()->rejected[intern(SG_ML_LISTENER, listener)][why], 1);
}

void sg_metrics_session(const char *listener, bool begin)
{
	unsigned i = intern(SG_ML_LISTENER, listener);
	if (begin)
		inc(&me()->sessions[i], 1);
	inc(&me()->sessions_open[i], begin ? 1 : (uint64_t)-1);
}

void sg_metrics_tls(const char *listener, bool ok)
{
	inc(&me()->tls[intern(SG_ML_LISTENER, listener)][ok ? 0 : 1], 1);
}

void sg_metrics_auth(const char *mech, enum sg_mauth result, uint64_t ns)
{
	inc(&me()->auth[intern(SG_ML_MECH, mech)][result], 1);
	observe(&me()->auth_time[result], ns);
}

void sg_metrics_message(bool accepted, uint64_t bytes)
{
	inc(&me()->msgs[accepted ? 0 : 1], 1);
	if (accepted)
		inc(&me()->msg_bytes, bytes);
}

void sg_metrics_reply(const char *upstream, int code, uint64_t ns)
{
	int c = code / 100;
	if (c >= 2 && c <= 5)
		inc(&me()->replies[intern(SG_ML_UPSTREAM, upstream)][c - 2], 1);
	observe(&me()->reply_time, ns);
}

void sg_metrics_upstream_fail(const char *upstream)
{
	inc(&me()->up_fail[intern(SG_ML_UPSTREAM, upstream)], 1);
}

void sg_metrics_failover(void) { inc(&me()->failovers, 1); }
void sg_metrics_unavailable(void) { inc(&me()->unavailable, 1); }
void sg_metrics_pool(enum sg_mpool result) { inc(&me()->pool[result], 1); }
void sg_metrics_auth_cache(bool hit) { inc(&me()->auth_cache[hit], 1); }
void sg_metrics_refusal(enum sg_mrefusal why) { inc(&me()->refusals[why], 1); }
void sg_metrics_stripped(void) { inc(&me()->stripped, 1); }

void sg_metrics_policy(const char *action)
{
	inc(&me()->policy[intern(SG_ML_ACTION, action)], 1);
}

/* ---- collecting ----------------------------------------------------------- */

/* Every uint64_t of a slot, summed field by field: the slot is nothing but
 * uint64_t counters (and the pad, skipped). */
#define SLOT_WORDS (offsetof(sg_metrics_slot, pad) / sizeof(uint64_t))

void sg_metrics_collect(sg_metrics_snapshot *snap)
{
	memset(snap, 0, sizeof *snap);
	uint64_t *dst = (uint64_t *)&snap->sum;
	for (int s = 0; s < SG_M_SLOTS; s++) {
		const uint64_t *src = (const uint64_t *)&slots[s];
		for (size_t w = 0; w < SLOT_WORDS; w++)
			dst[w] += get(&src[w]);
	}
	for (int d = 0; d < SG_ML_N; d++) {
		unsigned n = __atomic_load_n(&dims[d].n, __ATOMIC_ACQUIRE);
		for (unsigned i = 0; i < n; i++)
			snap->names[d][i] = dims[d].v[i];
		snap->nnames[d] = n;
		snap->names[d][SG_M_VALUES - 1] = "other";
	}
}

/* ---- rendering ------------------------------------------------------------ */

void sg_metrics_escape(sg_buf *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			sg_buf_append(out, "\\\\", 2);
		else if (*v == '"')
			sg_buf_append(out, "\\\"", 2);
		else if (*v == '\n')
			sg_buf_append(out, "\\n", 2);
		else
			sg_buf_append(out, v, 1);
	}
}

static void family(sg_buf *out, const char *name, const char *type,
                   const char *help)
{
	sg_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"[,extra]} n */
static void sample(sg_buf *out, const char *name, const char *label,
                   const char *value, const char *extra, uint64_t n)
{
	sg_buf_appendf(out, "%s", name);
	if (label || extra) {
		sg_buf_append(out, "{", 1);
		if (label) {
			sg_buf_appendf(out, "%s=\"", label);
			sg_metrics_escape(out, value);
			sg_buf_append(out, "\"", 1);
		}
		if (extra)
			sg_buf_appendf(out, "%s%s", label ? "," : "", extra);
		sg_buf_append(out, "}", 1);
	}
	sg_buf_appendf(out, " %llu\n", (unsigned long long)n);
}

/* Is value i of label d shown?  Interned ones always; "other" once used. */
static bool shown(const sg_metrics_snapshot *s, int d, unsigned i, uint64_t v)
{
	if (i < s->nnames[d])
		return true;
	return i == SG_M_VALUES - 1 && v != 0;
}

/* A counter or gauge with one interned label, from v[SG_M_VALUES]. */
static void per_label(sg_buf *out, const sg_metrics_snapshot *s,
                      const char *name, const char *label, int d,
                      const uint64_t *v, size_t stride, const char *extra)
{
	for (unsigned i = 0; i < SG_M_VALUES; i++) {
		uint64_t n = v[i * stride];
		if (shown(s, d, i, n))
			sample(out, name, label, s->names[d][i], extra, n);
	}
}

static void histogram(sg_buf *out, const char *name, const char *labels,
                      const sg_mhist *h)
{
	uint64_t cum = 0;
	const char *sep = labels ? "," : "";
	labels = labels ? labels : "";
	for (unsigned i = 0; i <= SG_M_BUCKETS; i++) {
		cum += h->bucket[i];
		if (i < SG_M_BUCKETS)
			sg_buf_appendf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name,
			               labels, sep, sg_metrics_bounds[i],
			               (unsigned long long)cum);
		else
			sg_buf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name,
			               labels, sep, (unsigned long long)cum);
	}
	const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
	sg_buf_appendf(out, "%s_sum%s%s%s %.6f\n", name, open, labels, close,
	               (double)h->sum_ns / 1e9);
	sg_buf_appendf(out, "%s_count%s%s%s %llu\n", name, open, labels, close,
	               (unsigned long long)cum);
}

static const char *const auth_result[SG_MA_N] = {"ok", "fail", "tempfail"};
static const char *const refusal_reason[SG_MR_N] = {"size", "bare_newline",
                                                    "nul", "upstream"};
static const char *const pool_result[SG_MP_N] = {"hit", "miss", "stale"};
static const char *const reject_reason[SG_MJ_N] = {
    "max_connections", "proxy_untrusted", "descriptors"};

static void render_connections(const sg_metrics_snapshot *s, sg_buf *out)
{
	const sg_metrics_slot *m = &s->sum;
	family(out, "saslgate_connections_total", "counter",
	       "TCP connections accepted, per listener");
	per_label(out, s, "saslgate_connections_total", "listener",
	          SG_ML_LISTENER, m->conns, 1, NULL);
	family(out, "saslgate_connections_open", "gauge",
	       "TCP connections open now, per listener");
	per_label(out, s, "saslgate_connections_open", "listener", SG_ML_LISTENER,
	          m->conns_open, 1, NULL);
	family(out, "saslgate_connections_rejected_total", "counter",
	       "connections closed at once (max_connections; PROXY header from "
	       "a peer not in proxy_trusted_networks; no file descriptor left)");
	for (int r = 0; r < SG_MJ_N; r++) {
		char extra[64];
		snprintf(extra, sizeof extra, "reason=\"%s\"", reject_reason[r]);
		per_label(out, s, "saslgate_connections_rejected_total", "listener",
		          SG_ML_LISTENER, &m->rejected[0][r], SG_MJ_N, extra);
	}
	family(out, "saslgate_sessions_total", "counter",
	       "SMTP sessions begun (event=connect), per listener");
	per_label(out, s, "saslgate_sessions_total", "listener", SG_ML_LISTENER,
	          m->sessions, 1, NULL);
	family(out, "saslgate_sessions_active", "gauge",
	       "SMTP sessions begun and not yet ended (event=disconnect)");
	per_label(out, s, "saslgate_sessions_active", "listener", SG_ML_LISTENER,
	          m->sessions_open, 1, NULL);
	family(out, "saslgate_tls_handshakes_total", "counter",
	       "TLS handshakes with clients (STARTTLS or implicit), per result");
	per_label(out, s, "saslgate_tls_handshakes_total", "listener",
	          SG_ML_LISTENER, &m->tls[0][0], 2, "result=\"ok\"");
	per_label(out, s, "saslgate_tls_handshakes_total", "listener",
	          SG_ML_LISTENER, &m->tls[0][1], 2, "result=\"fail\"");
}

static void render_auth(const sg_metrics_snapshot *s, sg_buf *out)
{
	const sg_metrics_slot *m = &s->sum;
	family(out, "saslgate_auth_total", "counter",
	       "AUTH results (event=auth), per SASL mechanism");
	for (int r = 0; r < SG_MA_N; r++) {
		char extra[32];
		snprintf(extra, sizeof extra, "result=\"%s\"", auth_result[r]);
		per_label(out, s, "saslgate_auth_total", "mechanism", SG_ML_MECH,
		          &m->auth[0][r], SG_MA_N, extra);
	}
	family(out, "saslgate_auth_duration_seconds", "histogram",
	       "from the AUTH command to its result (fail includes "
	       "failure_delay; ok includes the upstream taking the identity)");
	for (int r = 0; r < SG_MA_N; r++) {
		char labels[32];
		snprintf(labels, sizeof labels, "result=\"%s\"", auth_result[r]);
		histogram(out, "saslgate_auth_duration_seconds", labels,
		          &m->auth_time[r]);
	}
	family(out, "saslgate_auth_cache_total", "counter",
	       "PLAIN/LOGIN logins looked up in the credential cache "
	       "([sasl] cache_size): answered from it (hit) or not (miss)");
	sample(out, "saslgate_auth_cache_total", "result", "hit", NULL,
	       m->auth_cache[1]);
	sample(out, "saslgate_auth_cache_total", "result", "miss", NULL,
	       m->auth_cache[0]);
	family(out, "saslgate_sasl_queue_depth", "gauge",
	       "Cyrus SASL calls queued or running on the thread pool");
	sample(out, "saslgate_sasl_queue_depth", NULL, NULL, NULL,
	       s->sasl_inflight);
}

static void render_messages(const sg_metrics_snapshot *s, sg_buf *out)
{
	const sg_metrics_slot *m = &s->sum;
	family(out, "saslgate_messages_total", "counter",
	       "messages ended (event=message): accepted = a 2xx final reply");
	sample(out, "saslgate_messages_total", "result", "accepted", NULL,
	       m->msgs[0]);
	sample(out, "saslgate_messages_total", "result", "refused", NULL,
	       m->msgs[1]);
	family(out, "saslgate_message_bytes_total", "counter",
	       "size of the accepted messages, octets as the client sent them");
	sample(out, "saslgate_message_bytes_total", NULL, NULL, NULL,
	       m->msg_bytes);
	family(out, "saslgate_data_refusals_total", "counter",
	       "messages refused by saslgate during DATA or BDAT, per reason");
	for (int r = 0; r < SG_MR_N; r++)
		sample(out, "saslgate_data_refusals_total", "reason",
		       refusal_reason[r], NULL, m->refusals[r]);
	family(out, "saslgate_identity_headers_stripped_total", "counter",
	       "identity header fields the client sent, removed");
	sample(out, "saslgate_identity_headers_stripped_total", NULL, NULL, NULL,
	       m->stripped);
}

static void render_upstream(const sg_metrics_snapshot *s, sg_buf *out)
{
	static const char *const cls[4] = {"class=\"2xx\"", "class=\"3xx\"",
	                                   "class=\"4xx\"", "class=\"5xx\""};
	const sg_metrics_slot *m = &s->sum;
	family(out, "saslgate_upstream_replies_total", "counter",
	       "replies from upstream servers, per server and class");
	for (int c = 0; c < 4; c++)
		per_label(out, s, "saslgate_upstream_replies_total", "upstream",
		          SG_ML_UPSTREAM, &m->replies[0][c], 4, cls[c]);
	family(out, "saslgate_upstream_reply_duration_seconds", "histogram",
	       "from a command sent upstream (or the reply before it, when "
	       "pipelined) to its reply");
	histogram(out, "saslgate_upstream_reply_duration_seconds", NULL,
	          &m->reply_time);
	family(out, "saslgate_upstream_connect_failures_total", "counter",
	       "upstream servers that failed before ready (event=upstream_fail)");
	per_label(out, s, "saslgate_upstream_connect_failures_total", "upstream",
	          SG_ML_UPSTREAM, m->up_fail, 1, NULL);
	family(out, "saslgate_upstream_failovers_total", "counter",
	       "moves to the next upstream server after one failed");
	sample(out, "saslgate_upstream_failovers_total", NULL, NULL, NULL,
	       m->failovers);
	family(out, "saslgate_upstream_unavailable_total", "counter",
	       "link opens that found no upstream server "
	       "(event=upstream_unavailable)");
	sample(out, "saslgate_upstream_unavailable_total", NULL, NULL, NULL,
	       m->unavailable);
	family(out, "saslgate_upstream_pool_total", "counter",
	       "link opens with [upstream] pool_size: a kept connection "
	       "(hit) or a new one (miss); kept ones found closed at their "
	       "first command and replaced (stale)");
	for (int r = 0; r < SG_MP_N; r++)
		sample(out, "saslgate_upstream_pool_total", "result",
		       pool_result[r], NULL, m->pool[r]);
}

void sg_metrics_render(const sg_metrics_snapshot *s, sg_buf *out)
{
	family(out, "saslgate_build_info", "gauge", "saslgate's version");
	sample(out, "saslgate_build_info", "version", SG_VERSION, NULL, 1);
	render_connections(s, out);
	render_auth(s, out);
	render_messages(s, out);
	render_upstream(s, out);
	family(out, "saslgate_policy_results_total", "counter",
	       "policy service decisions, per result");
	per_label(out, s, "saslgate_policy_results_total", "result",
	          SG_ML_ACTION, s->sum.policy, 1, NULL);
}
