/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_client_name.c: the client's host name (proxy/client_name.c).
 *
 * The pure rules (which resolver errors are temporary, which names Postfix
 * takes, forward confirmation, the slots per loop), the lookup against
 * this machine's resolver (127.0.0.1, usually localhost in /etc/hosts),
 * and, with the two libuv lookups replaced by fakes this file completes by
 * hand, the lookup's course: reverse then forward, the line behind the slots, a
 * lookup that waited too long, and cancelling one in line or running (no
 * callback after it; ASan sees that nothing leaks). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../../proxy/client_name.h"
#include "check.h"

/* ---- fakes of uv_getnameinfo, uv_getaddrinfo, uv_cancel ------------------ */

/* Off: the calls go to libuv.  On: they are recorded, to be completed by
 * complete_reverse / complete_forward. */
static bool fake;
static uv_getnameinfo_t *fake_ni[8];
static uv_getnameinfo_cb fake_ni_cb[8];
static int n_ni;
static uv_getaddrinfo_t *fake_ai[8];
static uv_getaddrinfo_cb fake_ai_cb[8];
static char fake_ai_node[8][256];
static int n_ai;

int uv_getnameinfo(uv_loop_t *loop, uv_getnameinfo_t *req,
                   uv_getnameinfo_cb cb, const struct sockaddr *addr, int flags)
{
	if (!fake) {
		int (*real)(uv_loop_t *, uv_getnameinfo_t *, uv_getnameinfo_cb,
		            const struct sockaddr *, int) =
		    (int (*)(uv_loop_t *, uv_getnameinfo_t *, uv_getnameinfo_cb,
		             const struct sockaddr *, int))dlsym(RTLD_NEXT,
		                                                 "uv_getnameinfo");
		return real(loop, req, cb, addr, flags);
	}
	ASSERT_EQ(flags, NI_NAMEREQD);
	fake_ni[n_ni] = req;
	fake_ni_cb[n_ni++] = cb;
	return 0;
}

int uv_getaddrinfo(uv_loop_t *loop, uv_getaddrinfo_t *req,
                   uv_getaddrinfo_cb cb, const char *node, const char *service,
                   const struct addrinfo *hints)
{
	if (!fake) {
		int (*real)(uv_loop_t *, uv_getaddrinfo_t *, uv_getaddrinfo_cb,
		            const char *, const char *, const struct addrinfo *) =
		    (int (*)(uv_loop_t *, uv_getaddrinfo_t *, uv_getaddrinfo_cb,
		             const char *, const char *,
		             const struct addrinfo *))dlsym(RTLD_NEXT,
		                                            "uv_getaddrinfo");
		return real(loop, req, cb, node, service, hints);
	}
	fake_ai[n_ai] = req;
	fake_ai_cb[n_ai] = cb;
	snprintf(fake_ai_node[n_ai++], sizeof fake_ai_node[0], "%s", node);
	return 0;
}

/* The fakes' requests are always "running": a cancel never takes. */
static int cancels;
int uv_cancel(uv_req_t *req)
{
	if (!fake) {
		int (*real)(uv_req_t *) =
		    (int (*)(uv_req_t *))dlsym(RTLD_NEXT, "uv_cancel");
		return real(req);
	}
	cancels++;
	return UV_EBUSY;
}

/* Complete the i-th reverse request: status, or the name. */
static void complete_reverse(int i, int status, const char *host)
{
	fake_ni_cb[i](fake_ni[i], status, status ? NULL : host, NULL);
}

/* Complete the i-th forward request with status, or one address (IPv4 or
 * IPv6, as text). */
static void complete_forward(int i, int status, const char *ip)
{
	struct addrinfo *ai = NULL;
	if (status == 0) {
		struct addrinfo hints = {.ai_flags = AI_NUMERICHOST,
		                         .ai_socktype = SOCK_STREAM};
		ASSERT_EQ(getaddrinfo(ip, NULL, &hints, &ai), 0);
	}
	/* the real callback frees the list with uv_freeaddrinfo (freeaddrinfo) */
	fake_ai_cb[i](fake_ai[i], status, ai);
}

/* ---- the owner's side ---------------------------------------------------- */

typedef struct answer {
	int n;
	int result;
	char name[256];
} answer;

static void on_answer(void *arg, int result, const char *name)
{
	answer *a = arg;
	a->n++;
	a->result = result;
	snprintf(a->name, sizeof a->name, "%s", name ? name : "(null)");
}

/* ---- pure rules ---------------------------------------------------------- */

static void test_error_result(void)
{
	/* Postfix smtpd_peer.c TEMP_AI_ERROR: EAI_AGAIN, EAI_MEMORY, EAI_SYSTEM */
	ASSERT_EQ(sg_name_error_result(UV_EAI_AGAIN), SG_NAME_TEMP);
	ASSERT_EQ(sg_name_error_result(UV_EAI_MEMORY), SG_NAME_TEMP);
	ASSERT_EQ(sg_name_error_result(UV_ECONNREFUSED), SG_NAME_TEMP);
	ASSERT_EQ(sg_name_error_result(UV_ETIMEDOUT), SG_NAME_TEMP);
	ASSERT_EQ(sg_name_error_result(UV_EAI_NONAME), SG_NAME_NONE);
	ASSERT_EQ(sg_name_error_result(UV_EAI_NODATA), SG_NAME_NONE);
	ASSERT_EQ(sg_name_error_result(UV_EAI_FAIL), SG_NAME_NONE);
	ASSERT_EQ(sg_name_error_result(UV_EAI_FAMILY), SG_NAME_NONE);
}

static void test_valid(void)
{
	char l63[80], l64[80], n255[300], n257[300];
	memset(l63, 'a', 63);
	strcpy(l63 + 63, ".example");
	memset(l64, 'a', 64);
	strcpy(l64 + 64, ".example");
	/* four labels of 63: 255 octets; 86 labels "ab": 257 */
	memset(n255, 'b', 255);
	n255[63] = n255[127] = n255[191] = '.';
	n255[255] = '\0';
	for (int i = 0; i < 86; i++)
		memcpy(n257 + 3 * i, "ab.", 3);
	n257[257] = '\0';

	static const char *const good[] = {
	    "localhost", "mail.example.org", "a_b.example", "1-2.3", "0x1",
	    "a.b-c.d9", "MX1.Example.COM",
	};
	static const char *const bad[] = {
	    "", "1.2.3.4", "123", "-a.example", "a-.example", "a.-b", "a..b",
	    "a.b.", ".a", "a b", "ex\xc3\xa4mple.org", "a/b", "[127.0.0.1]",
	    "a:b",
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		ASSERT(sg_name_valid(good[i]), "%s", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ASSERT(!sg_name_valid(bad[i]), "%s", bad[i]);
	ASSERT(sg_name_valid(l63));
	ASSERT(!sg_name_valid(l64));
	ASSERT(sg_name_valid(n255));
	ASSERT(!sg_name_valid(n257));
}

static struct addrinfo *numeric(const char *ip)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST,
	                         .ai_socktype = SOCK_STREAM}, *ai = NULL;
	ASSERT_EQ(getaddrinfo(ip, NULL, &hints, &ai), 0, "%s", ip);
	return ai;
}

static void test_confirms(void)
{
	struct addrinfo *v4 = numeric("192.0.2.1"), *other = numeric("192.0.2.2");
	struct addrinfo *v6 = numeric("2001:db8::1");
	struct addrinfo *mapped = numeric("::ffff:192.0.2.1");
	struct sockaddr_in sa4;
	struct sockaddr_in6 sa6, sam;
	uv_ip4_addr("192.0.2.1", 0, &sa4);
	uv_ip6_addr("2001:db8::1", 0, &sa6);
	uv_ip6_addr("::ffff:192.0.2.1", 0, &sam);

	ASSERT(sg_name_confirms(v4, (struct sockaddr *)&sa4));
	ASSERT(!sg_name_confirms(other, (struct sockaddr *)&sa4));
	ASSERT(!sg_name_confirms(NULL, (struct sockaddr *)&sa4));
	ASSERT(sg_name_confirms(v6, (struct sockaddr *)&sa6));
	ASSERT(!sg_name_confirms(v4, (struct sockaddr *)&sa6));
	/* a client on an IPv6 socket of a dual-stack listener */
	ASSERT(sg_name_confirms(v4, (struct sockaddr *)&sam));
	ASSERT(sg_name_confirms(mapped, (struct sockaddr *)&sa4));
	/* any of the name's addresses will do: other, then v4 */
	other->ai_next = v4;
	ASSERT(sg_name_confirms(other, (struct sockaddr *)&sa4));
	other->ai_next = NULL;
	freeaddrinfo(v4);
	freeaddrinfo(other);
	freeaddrinfo(v6);
	freeaddrinfo(mapped);
}

static void test_slots(void)
{
	ASSERT_EQ(sg_name_slots(1), 1u);
	ASSERT_EQ(sg_name_slots(3), 2u);
	ASSERT_EQ(sg_name_slots(4), 2u);
	ASSERT_EQ(sg_name_slots(0), 2u); /* [sasl] threads' default, 4 */
	ASSERT_EQ(sg_name_slots(60), 30u);
	/* never more than t per loop: with W workers the pool (2tW + 2
	 * threads) keeps at least one slow-I/O thread (tW + 1) free */
	for (unsigned t = 1; t <= 60; t++)
		ASSERT_LE(sg_name_slots(t), t);
}

/* ---- this machine's resolver --------------------------------------------- */

static void on_tick(uv_timer_t *t) { (void)t; }

static void run_until(uv_loop_t *loop, const int *n, int want)
{
	uv_timer_t t;
	uv_timer_init(loop, &t);
	for (int i = 0; i < 100 && *n < want; i++) { /* 10 s at most */
		uv_timer_start(&t, on_tick, 100, 0);
		uv_run(loop, UV_RUN_ONCE);
	}
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

static void test_live(uv_loop_t *loop)
{
	fake = false;
	ASSERT_NULL(sg_name_start(loop, "unknown", 2, on_answer, NULL));
	ASSERT_NULL(sg_name_start(loop, "", 2, on_answer, NULL));

	/* what this machine says, blocking (usually localhost, /etc/hosts) */
	struct sockaddr_in lo;
	uv_ip4_addr("127.0.0.1", 0, &lo);
	char want[NI_MAXHOST] = "";
	struct addrinfo *ai = NULL, hints = {.ai_socktype = SOCK_STREAM};
	bool confirmed =
	    getnameinfo((struct sockaddr *)&lo, sizeof lo, want, sizeof want, NULL,
	                0, NI_NAMEREQD) == 0 &&
	    sg_name_valid(want) && getaddrinfo(want, NULL, &hints, &ai) == 0 &&
	    sg_name_confirms(ai, (struct sockaddr *)&lo);
	if (ai)
		freeaddrinfo(ai);

	answer a = {0};
	sg_name_lookup *q = sg_name_start(loop, "127.0.0.1", 2, on_answer, &a);
	ASSERT_NOT_NULL(q);
	run_until(loop, &a.n, 1);
	if (ASSERT_EQ(a.n, 1) && confirmed) {
		ASSERT_EQ(a.result, SG_NAME_OK);
		ASSERT_STR_EQ(a.name, want);
	} else if (a.n == 1) {
		ASSERT_EQ(a.result, SG_NAME_NONE, "127.0.0.1 is %s here", want);
	}
	/* (an address without a name takes the DNS, which may not answer
	 * here in any bounded time: tests/integration/test_compat_client_name.py
	 * checks one through the session's bounded wait) */
	/* cancelled while the pool runs it: no callback, freed by libuv's
	 * completion (ASan: no leak) */
	answer c = {0};
	q = sg_name_start(loop, "127.0.0.1", 2, on_answer, &c);
	sg_name_cancel(q);
	uv_run(loop, UV_RUN_DEFAULT);
	ASSERT_EQ(c.n, 0);
}

/* ---- the course of a lookup, with the fakes ------------------------------ */

static void reset_fakes(void)
{
	fake = true;
	n_ni = n_ai = cancels = 0;
}

static void test_course(uv_loop_t *loop)
{
	reset_fakes();
	/* confirmed: reverse, forward of that name, the client's address */
	answer a = {0};
	ASSERT_NOT_NULL(sg_name_start(loop, "192.0.2.1", 1, on_answer, &a));
	ASSERT_EQ(n_ni, 1);
	complete_reverse(0, 0, "mx.example.org");
	if (ASSERT_EQ(n_ai, 1))
		ASSERT_STR_EQ(fake_ai_node[0], "mx.example.org");
	ASSERT_EQ(a.n, 0);
	complete_forward(0, 0, "192.0.2.1");
	ASSERT_EQ(a.n, 1);
	ASSERT_EQ(a.result, SG_NAME_OK);
	ASSERT_STR_EQ(a.name, "mx.example.org");

	/* the name leads elsewhere: none */
	reset_fakes();
	memset(&a, 0, sizeof a);
	sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
	complete_reverse(0, 0, "mx.example.org");
	complete_forward(0, 0, "198.51.100.1");
	ASSERT_EQ(a.result, SG_NAME_NONE);
	ASSERT_STR_EQ(a.name, "(null)");

	/* an IPv6 client, confirmed */
	reset_fakes();
	memset(&a, 0, sizeof a);
	sg_name_start(loop, "2001:db8::25", 1, on_answer, &a);
	complete_reverse(0, 0, "v6.example.org");
	complete_forward(0, 0, "2001:db8::25");
	ASSERT_EQ(a.result, SG_NAME_OK);

	/* errors: reverse "try again", reverse none, forward "try again",
	 * forward none, a name Postfix would refuse (no forward lookup) */
	struct {
		int rev;
		const char *name;
		int fwd;
		int want;
		int forwards;
	} cases[] = {
	    {UV_EAI_AGAIN, NULL, 0, SG_NAME_TEMP, 0},
	    {UV_EAI_NONAME, NULL, 0, SG_NAME_NONE, 0},
	    {0, "mx.example.org", UV_EAI_AGAIN, SG_NAME_TEMP, 1},
	    {0, "mx.example.org", UV_EAI_NONAME, SG_NAME_NONE, 1},
	    {0, "192.0.2.1", 0, SG_NAME_NONE, 0},
	    {0, "bad name.example", 0, SG_NAME_NONE, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		reset_fakes();
		memset(&a, 0, sizeof a);
		sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
		complete_reverse(0, cases[i].rev, cases[i].name);
		ASSERT_EQ(n_ai, cases[i].forwards, "case %zu", i);
		if (n_ai)
			complete_forward(0, cases[i].fwd, NULL);
		if (ASSERT_EQ(a.n, 1, "case %zu", i))
			ASSERT_EQ(a.result, cases[i].want, "case %zu", i);
	}
}

static void test_slots_and_line(uv_loop_t *loop)
{
	reset_fakes();
	answer a = {0}, b = {0}, c = {0};
	/* one slot: A runs, B and C wait in line */
	sg_name_lookup *qa = sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
	sg_name_lookup *qb = sg_name_start(loop, "192.0.2.2", 1, on_answer, &b);
	sg_name_lookup *qc = sg_name_start(loop, "192.0.2.3", 1, on_answer, &c);
	ASSERT(qa && qb && qc);
	ASSERT_EQ(n_ni, 1);
	/* B is cancelled in line: freed at once, never started */
	sg_name_cancel(qb);
	ASSERT_EQ(cancels, 0);
	complete_reverse(0, UV_EAI_NONAME, NULL);
	ASSERT_EQ(a.n, 1);
	/* A's slot went to C */
	ASSERT_EQ(n_ni, 2);
	complete_reverse(1, UV_EAI_NONAME, NULL);
	ASSERT_EQ(b.n, 0);
	ASSERT_EQ(c.n, 1);

	/* cancelled while running: the owner hears nothing, the forward
	 * lookup is not started, q is freed by the completion */
	reset_fakes();
	memset(&a, 0, sizeof a);
	qa = sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
	sg_name_cancel(qa);
	ASSERT_EQ(cancels, 1);
	complete_reverse(0, 0, "mx.example.org");
	ASSERT_EQ(n_ai, 0);
	ASSERT_EQ(a.n, 0);

	/* cancelled during the forward lookup */
	reset_fakes();
	memset(&a, 0, sizeof a);
	qa = sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
	complete_reverse(0, 0, "mx.example.org");
	sg_name_cancel(qa);
	complete_forward(0, 0, "192.0.2.1");
	ASSERT_EQ(a.n, 0);

	/* one that waited in line past SG_NAME_WAIT_MS is answered
	 * [TEMPUNAVAIL] when its turn comes, without a lookup */
	reset_fakes();
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	uv_update_time(loop);
	qa = sg_name_start(loop, "192.0.2.1", 1, on_answer, &a);
	qb = sg_name_start(loop, "192.0.2.2", 1, on_answer, &b);
	ASSERT_EQ(sg_name_age(qb), 0u);
	loop->time += SG_NAME_WAIT_MS; /* the loop's clock, as uv_run moves it */
	ASSERT_EQ(sg_name_age(qb), (uint64_t)SG_NAME_WAIT_MS);
	complete_reverse(0, UV_EAI_NONAME, NULL);
	ASSERT_EQ(n_ni, 1);
	if (ASSERT_EQ(b.n, 1))
		ASSERT_EQ(b.result, SG_NAME_TEMP);
	uv_update_time(loop);
	fake = false;
}

int main(void)
{
	uv_loop_t *loop = uv_default_loop();
	test_error_result();
	test_valid();
	test_confirms();
	test_slots();
	test_course(loop);
	test_slots_and_line(loop);
	test_live(loop);
	uv_loop_close(loop);
	return CHECK_SUMMARY();
}
