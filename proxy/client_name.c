/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/client_name.c: the client's forward-confirmed host name
 * (client_name.h).
 *
 * One lookup: reverse (uv_getnameinfo, NI_NAMEREQD: a name or an error,
 * never the address as text), then forward (uv_getaddrinfo of that name),
 * each a request on the thread pool.  The rules are Postfix smtpd's for its
 * own client (smtpd_peer.c): a resolver error is temporary only when it is
 * EAI_AGAIN, EAI_MEMORY or EAI_SYSTEM; a name that is not a valid host name
 * or that does not resolve back to the address is no name.
 *
 * Each loop (one per worker thread) has its own line and slot count, so no
 * lock is needed: every function here runs on the loop's thread. */
#include "client_name.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "../common/mem.h"

struct sg_name_lookup {
	sg_name_lookup *next; /* in this loop's line */
	uv_loop_t *loop;
	sg_name_cb cb; /* NULL once cancelled */
	void *arg;
	uint64_t started; /* loop time, ms */
	bool running;     /* holds one of the loop's slots */
	int step;         /* which request is in flight */
	struct sockaddr_storage addr;
	char *name; /* the reverse lookup's answer, for the forward one */
	union {
		uv_getnameinfo_t ni;
		uv_getaddrinfo_t ai;
	} req;
};

enum { STEP_NONE, STEP_REVERSE, STEP_FORWARD };

/* This loop's lookups waiting for a slot, oldest first; how many run, and
 * how many may (the newest sg_name_start's slots). */
static __thread sg_name_lookup *t_head, *t_tail;
static __thread unsigned t_running, t_slots;

static void pump(void);

/* ---- pure rules --------------------------------------------------------- */

int sg_name_error_result(int st)
{
	switch (st) {
	case UV_EAI_AGAIN:
	case UV_EAI_MEMORY:
		return SG_NAME_TEMP;
	case UV_EAI_ADDRFAMILY:
	case UV_EAI_BADFLAGS:
	case UV_EAI_BADHINTS:
	case UV_EAI_FAIL:
	case UV_EAI_FAMILY:
	case UV_EAI_NODATA:
	case UV_EAI_NONAME:
	case UV_EAI_OVERFLOW:
	case UV_EAI_PROTOCOL:
	case UV_EAI_SERVICE:
	case UV_EAI_SOCKTYPE:
		return SG_NAME_NONE;
	default: /* EAI_SYSTEM arrives as the errno; a cancel is not an answer */
		return SG_NAME_TEMP;
	}
}

bool sg_name_valid(const char *name)
{
	size_t label = 0, len = 0;
	bool numeric = true;
	for (const char *p = name; *p; p++, len++) {
		unsigned char c = (unsigned char)*p;
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9');
		if (alnum || c == '_') {
			if (++label > 63)
				return false;
			if (c < '0' || c > '9')
				numeric = false;
		} else if (c == '.') {
			if (label == 0 || p[1] == '\0')
				return false; /* empty label, or a final dot */
			label = 0;
		} else if (c == '-') {
			numeric = false;
			if (++label == 1 || p[1] == '\0' || p[1] == '.')
				return false;
		} else {
			return false;
		}
	}
	return len > 0 && len <= SG_NAME_MAX && !numeric;
}

/* The address in sa as 16 octets, IPv4 as IPv4-mapped IPv6.  false for
 * another family. */
static bool addr16(const struct sockaddr *sa, unsigned char out[16])
{
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return true;
	}
	if (sa->sa_family == AF_INET) {
		static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
		memcpy(out, mapped, 12);
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	return false;
}

bool sg_name_confirms(const struct addrinfo *ai, const struct sockaddr *sa)
{
	unsigned char want[16], got[16];
	if (!addr16(sa, want))
		return false;
	for (; ai; ai = ai->ai_next)
		if (ai->ai_addr && addr16(ai->ai_addr, got) && !memcmp(got, want, 16))
			return true;
	return false;
}

unsigned sg_name_slots(unsigned sasl_threads)
{
	unsigned t = sasl_threads ? sasl_threads : 4; /* sasl/auth.c's default */
	return (t + 1) / 2;
}

/* ---- the lookup --------------------------------------------------------- */

static void destroy(sg_name_lookup *q)
{
	free(q->name);
	free(q);
}

/* The answer, to the owner if there still is one; q is freed and its slot
 * free for the next lookup in line (the caller pumps). */
static void answer(sg_name_lookup *q, int result, const char *name)
{
	if (q->running) {
		q->running = false;
		t_running--;
	}
	sg_name_cb cb = q->cb;
	void *arg = q->arg;
	destroy(q);
	if (cb)
		cb(arg, result, result == SG_NAME_OK ? name : NULL);
}

/* A request's last completion: answer, then start the next in line. */
static void finish(sg_name_lookup *q, int result, const char *name)
{
	answer(q, result, name);
	pump();
}

static void on_forward(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	sg_name_lookup *q = req->data;
	int result = status < 0 ? sg_name_error_result(status)
	             : sg_name_confirms(res, (struct sockaddr *)&q->addr)
	                 ? SG_NAME_OK
	                 : SG_NAME_NONE;
	uv_freeaddrinfo(res);
	/* the name outlives q for the callback */
	char *name = q->name;
	q->name = NULL;
	finish(q, result, name);
	free(name);
}

static void on_reverse(uv_getnameinfo_t *req, int status, const char *host,
                       const char *service)
{
	sg_name_lookup *q = req->data;
	(void)service;
	if (status < 0 || !q->cb) {
		finish(q, status < 0 ? sg_name_error_result(status) : SG_NAME_NONE,
		       NULL);
		return;
	}
	if (!host || !sg_name_valid(host)) {
		finish(q, SG_NAME_NONE, NULL);
		return;
	}
	q->name = sg_xstrdup(host);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM};
	q->step = STEP_FORWARD;
	q->req.ai.data = q;
	if (uv_getaddrinfo(q->loop, &q->req.ai, on_forward, q->name, NULL,
	                   &hints) < 0)
		finish(q, SG_NAME_TEMP, NULL);
}

/* Start q's reverse lookup; false when libuv refused it. */
static bool run(sg_name_lookup *q)
{
	q->step = STEP_REVERSE;
	q->req.ni.data = q;
	if (uv_getnameinfo(q->loop, &q->req.ni, on_reverse,
	                   (const struct sockaddr *)&q->addr, NI_NAMEREQD) < 0)
		return false;
	q->running = true;
	t_running++;
	return true;
}

/* Start lookups from the line while a slot is free.  One that waited past
 * SG_NAME_WAIT_MS is of no use any more (its session would not wait for
 * it): [TEMPUNAVAIL] at once.  The head is read again after each answer,
 * whose callback may have cancelled others. */
static void pump(void)
{
	while (t_head && t_running < t_slots) {
		sg_name_lookup *q = t_head;
		t_head = q->next;
		if (!t_head)
			t_tail = NULL;
		q->next = NULL;
		if (uv_now(q->loop) - q->started >= SG_NAME_WAIT_MS || !run(q))
			answer(q, SG_NAME_TEMP, NULL);
	}
}

sg_name_lookup *sg_name_start(uv_loop_t *loop, const char *ip, unsigned slots,
                              sg_name_cb cb, void *arg)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (uv_ip4_addr(ip, 0, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&ss) != 0)
		return NULL;
	sg_name_lookup *q = sg_xcalloc(1, sizeof *q);
	q->loop = loop;
	q->cb = cb;
	q->arg = arg;
	q->started = uv_now(loop);
	q->addr = ss;
	t_slots = slots ? slots : 1;
	if (!t_head && t_running < t_slots && run(q))
		return q;
	/* in line; also when libuv refused it just now (the loop is going
	 * away): pump answers it from the next completion, or its owner's
	 * wait ends first */
	if (t_tail)
		t_tail->next = q;
	else
		t_head = q;
	t_tail = q;
	return q;
}

uint64_t sg_name_age(const sg_name_lookup *q)
{
	return uv_now(q->loop) - q->started;
}

void sg_name_cancel(sg_name_lookup *q)
{
	if (!q)
		return;
	q->cb = NULL;
	if (q->running) {
		/* a request not yet taken by a pool thread is cancelled: its
		 * callback then comes with UV_EAI_CANCELED and frees q */
		uv_cancel(q->step == STEP_FORWARD ? (uv_req_t *)&q->req.ai
		                                  : (uv_req_t *)&q->req.ni);
		return;
	}
	sg_name_lookup **pp = &t_head;
	sg_name_lookup *prev = NULL;
	while (*pp && *pp != q) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = q->next;
	if (t_tail == q)
		t_tail = prev;
	destroy(q);
}
