/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_metrics.c: the exposition renderer and the counting
 * slots (common/metrics.c), and the HTTP request reader of the metrics
 * endpoint (proxy/metrics_http.c), split at every position. */
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../common/metrics.h"
#include "../../proxy/metrics_http.h"
#include "check.h"

static bool has_line(const sg_buf *b, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = b->data; p && p < b->data + b->len;) {
		const char *e = memchr(p, '\n', (size_t)(b->data + b->len - p));
		if (!e)
			break;
		if ((size_t)(e - p) == n && memcmp(p, line, n) == 0)
			return true;
		p = e + 1;
	}
	return false;
}

static void test_escape(void)
{
	sg_buf b;
	sg_buf_init(&b, 0);
	sg_metrics_escape(&b, "a\\b\"c\nd");
	ASSERT_BUF_EQ(b.data, b.len, "a\\\\b\\\"c\\nd");
	sg_buf_free(&b);
}

static void test_buckets(void)
{
	ASSERT_EQ(sg_metrics_bucket(0), 0);
	ASSERT_EQ(sg_metrics_bucket(1000000), 0);     /* 1 ms: le 0.001 */
	ASSERT_EQ(sg_metrics_bucket(1000001), 1);
	ASSERT_EQ(sg_metrics_bucket(60000000000ull), SG_M_BUCKETS - 1);
	ASSERT_EQ(sg_metrics_bucket(60000000001ull), SG_M_BUCKETS);
}

/* A hand-made snapshot: every line the renderer writes for it. */
static void test_render(void)
{
	sg_metrics_snapshot *s = calloc(1, sizeof *s);
	s->names[SG_ML_LISTENER][0] = "sub\"mission";
	s->names[SG_ML_LISTENER][SG_M_VALUES - 1] = "other";
	s->nnames[SG_ML_LISTENER] = 1;
	s->names[SG_ML_MECH][0] = "PLAIN";
	s->names[SG_ML_MECH][SG_M_VALUES - 1] = "other";
	s->nnames[SG_ML_MECH] = 1;
	s->names[SG_ML_UPSTREAM][SG_M_VALUES - 1] = "other";
	s->names[SG_ML_ACTION][SG_M_VALUES - 1] = "other";
	s->sum.conns[0] = 7;
	s->sum.conns_open[0] = 2;
	s->sum.auth[0][SG_MA_FAIL] = 3;
	s->sum.auth_time[SG_MA_FAIL].bucket[0] = 1;
	s->sum.auth_time[SG_MA_FAIL].bucket[SG_M_BUCKETS] = 2;
	s->sum.auth_time[SG_MA_FAIL].sum_ns = 1500000000;
	s->sum.msgs[0] = 4;
	s->sum.msg_bytes = 1234;
	s->sum.policy[SG_M_VALUES - 1] = 5; /* "other" shows once used */
	s->sasl_inflight = 9;
	sg_buf b;
	sg_buf_init(&b, 0);
	sg_metrics_render(s, &b);
	ASSERT(has_line(&b, "# TYPE saslgate_connections_total counter"));
	ASSERT(has_line(&b, "# HELP saslgate_connections_total TCP connections "
	                    "accepted, per listener"));
	ASSERT(has_line(&b, "saslgate_connections_total{listener=\"sub\\\"mission\"} 7"));
	ASSERT(has_line(&b, "saslgate_connections_open{listener=\"sub\\\"mission\"} 2"));
	ASSERT(!strstr(b.data, "listener=\"other\""), "unused other shown");
	ASSERT(has_line(&b, "saslgate_auth_total{mechanism=\"PLAIN\",result=\"fail\"} 3"));
	ASSERT(has_line(&b, "saslgate_auth_total{mechanism=\"PLAIN\",result=\"ok\"} 0"));
	ASSERT(has_line(&b, "saslgate_auth_duration_seconds_bucket{result=\"fail\","
	                    "le=\"0.001\"} 1"));
	ASSERT(has_line(&b, "saslgate_auth_duration_seconds_bucket{result=\"fail\","
	                    "le=\"60\"} 1"));
	ASSERT(has_line(&b, "saslgate_auth_duration_seconds_bucket{result=\"fail\","
	                    "le=\"+Inf\"} 3"));
	ASSERT(has_line(&b, "saslgate_auth_duration_seconds_sum{result=\"fail\"} "
	                    "1.500000"));
	ASSERT(has_line(&b, "saslgate_auth_duration_seconds_count{result=\"fail\"} 3"));
	ASSERT(has_line(&b, "saslgate_upstream_reply_duration_seconds_count 0"));
	ASSERT(has_line(&b, "saslgate_messages_total{result=\"accepted\"} 4"));
	ASSERT(has_line(&b, "saslgate_message_bytes_total 1234"));
	ASSERT(has_line(&b, "saslgate_data_refusals_total{reason=\"bare_newline\"} 0"));
	ASSERT(has_line(&b, "saslgate_sasl_queue_depth 9"));
	ASSERT(has_line(&b, "saslgate_policy_results_total{result=\"other\"} 5"));
	ASSERT(has_line(&b, "# TYPE saslgate_upstream_reply_duration_seconds histogram"));
	ASSERT(b.len > 0 && b.data[b.len - 1] == '\n');
	sg_buf_free(&b);
	free(s);
}

/* The hooks count into the calling thread's slot; collect sums them, and
 * past SG_M_VALUES - 1 values a label is "other". */
static void test_hooks(void)
{
	sg_metrics_bind(3);
	sg_metrics_accept("a");
	sg_metrics_accept("a");
	sg_metrics_closed("a");
	sg_metrics_session("a", true);
	sg_metrics_auth("LOGIN", SG_MA_OK, 2000000);
	sg_metrics_reply("mx:25", 250, 1);
	sg_metrics_reply("mx:25", 451, 1);
	sg_metrics_refusal(SG_MR_SIZE);
	sg_metrics_bind(4);
	sg_metrics_accept("a");
	char name[16];
	for (int i = 0; i < SG_M_VALUES + 5; i++) {
		snprintf(name, sizeof name, "act%d", i);
		sg_metrics_policy(name);
	}
	sg_metrics_snapshot *s = malloc(sizeof *s);
	sg_metrics_collect(s);
	ASSERT_STR_EQ(s->names[SG_ML_LISTENER][0], "a");
	ASSERT_EQ(s->sum.conns[0], 3);
	ASSERT_EQ(s->sum.conns_open[0], 2);
	ASSERT_EQ(s->sum.sessions_open[0], 1);
	ASSERT_STR_EQ(s->names[SG_ML_MECH][0], "LOGIN");
	ASSERT_EQ(s->sum.auth[0][SG_MA_OK], 1);
	ASSERT_EQ(s->sum.auth_time[SG_MA_OK].bucket[1], 1); /* 2 ms: le 0.0025 */
	ASSERT_EQ(s->sum.replies[0][0], 1);
	ASSERT_EQ(s->sum.replies[0][2], 1);
	ASSERT_EQ(s->sum.reply_time.bucket[0], 2);
	ASSERT_EQ(s->sum.refusals[SG_MR_SIZE], 1);
	ASSERT_EQ(s->nnames[SG_ML_ACTION], SG_M_VALUES - 1);
	ASSERT_EQ(s->sum.policy[SG_M_VALUES - 1], 6);
	ASSERT_EQ(s->sum.policy[0], 1);
	free(s);
}

static int feed_all(const char *req, size_t split)
{
	sg_http_req *r = calloc(1, sizeof *r);
	size_t n = strlen(req);
	int st = sg_http_feed(r, req, split);
	if (!st)
		st = sg_http_feed(r, req + split, n - split);
	free(r);
	return st;
}

/* Each request, cut in two at every position, gets the same status. */
static void test_reader_splits(void)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	    {"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", 200},
	    {"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", 200},
	    {"GET /metrics HTTP/1.1\n\n", 200},
	    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404},
	    {"GET /metricsx HTTP/1.1\r\n\r\n", 404},
	    {"GET /other HTTP/1.1\r\n\r\n", 404},
	    {"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", 405},
	    {"HEAD /metrics HTTP/1.1\r\n\r\n", 405},
	    {"GET /metrics HTTP/2.0\r\n\r\n", 400},
	    {"GET  /metrics HTTP/1.1\r\n\r\n", 400},
	    {"GET /metrics\r\n\r\n", 400},
	    {"\x16\x03\x01\x02\x01\r\n\r\n", 400},
	    {"GET /met\x01rics HTTP/1.1\r\n\r\n", 400},
	    {"\r\n\r\n", 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t n = strlen(cases[i].req);
		for (size_t k = 0; k <= n; k++)
			ASSERT_EQ(feed_all(cases[i].req, k), cases[i].status,
			          "case %zu split %zu", i, k);
	}
	/* not whole yet: 0 */
	ASSERT_EQ(feed_all("GET /metrics HTTP/1.1\r\nHost: x\r\n", 5), 0);
	ASSERT_EQ(feed_all("GET /metr", 3), 0);
	/* a TLS ClientHello or an SMTP client: 400 at its first octets */
	ASSERT_EQ(feed_all("\x16\x03\x01", 1), 400);
	ASSERT_EQ(feed_all("EHLO", 4), 0);
	ASSERT_EQ(feed_all("EHLO x.test\r\n", 5), 400);
}

/* Past SG_HTTP_MAX without the end of the header section: 400; octets
 * after a decision change nothing. */
static void test_reader_bounds(void)
{
	sg_http_req *r = calloc(1, sizeof *r);
	int st = sg_http_feed(r, "GET /metrics HTTP/1.1\r\n", 23);
	ASSERT_EQ(st, 0);
	char hdr[] = "X-Pad: 0123456789012345678901234567890123456789\r\n";
	for (int i = 0; i < 200 && st == 0; i++)
		st = sg_http_feed(r, hdr, sizeof hdr - 1);
	ASSERT_EQ(st, 400);
	ASSERT_EQ(r->len, (size_t)SG_HTTP_MAX);
	ASSERT_EQ(sg_http_feed(r, "\r\n\r\n", 4), 400);
	free(r);
	char *line = malloc(SG_HTTP_MAX + 10);
	memset(line, 'a', SG_HTTP_MAX + 9);
	line[SG_HTTP_MAX + 9] = '\0';
	ASSERT_EQ(feed_all(line, 100), 400); /* a request line with no end */
	free(line);
	r = calloc(1, sizeof *r);
	ASSERT_EQ(sg_http_feed(r, "GET /x HTTP/1.1\r\n\r\n", 19), 404);
	ASSERT_EQ(sg_http_feed(r, "GET /metrics HTTP/1.1\r\n\r\n", 25), 404);
	free(r);
}

int main(void)
{
	test_escape();
	test_buckets();
	test_render();
	test_hooks();
	test_reader_splits();
	test_reader_bounds();
	return CHECK_SUMMARY();
}
