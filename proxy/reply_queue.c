/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/reply_queue.c: the commands relayed upstream whose replies are
 * still due, oldest first (RFC 2920 pipelining).
 *
 * One entry per client line that was relayed (MAIL, RCPT, DATA, RSET); the
 * link answers commands in the order they were sent, so every reply is the
 * oldest entry's.  An entry's reply reaches the client at its turn, through
 * sg_cmd_settle (commands.c), which also applies what the reply means to
 * the transaction.  A line that gets a reply of saslgate's own is never
 * queued behind relayed ones: while entries are due, the only lines decided
 * are relayed ones (commands.c, dispatch), so answering in queue order is
 * answering in line order.
 *
 * The queue is a small ring of verbs, allocated at the first relayed
 * command and given back when the session is quiet (sg_rq_trim). */
#include <stdlib.h>

#include "../common/mem.h"
#include "commands_int.h"
#include "reply_queue.h"

static int ring_at(const sg_session *s, unsigned i)
{
	return s->up.rq[(s->up.rq_head + i) % SG_RQ_MAX];
}

bool sg_rq_busy(const sg_session *s) { return s->up.rq_n > 0; }

bool sg_rq_full(const sg_session *s) { return s->up.rq_n >= SG_RQ_MAX; }

int sg_rq_last(const sg_session *s)
{
	return s->up.rq_n ? ring_at(s, s->up.rq_n - 1) : -1;
}

unsigned sg_rq_count(const sg_session *s, int verb)
{
	unsigned n = 0;
	for (unsigned i = 0; i < s->up.rq_n; i++)
		n += ring_at(s, i) == verb;
	return n;
}

void sg_rq_push(sg_session *s, int verb)
{
	if (!s->up.rq)
		s->up.rq = sg_xmalloc(SG_RQ_MAX);
	/* never full here: a line is decided ahead only while !sg_rq_full,
	 * and otherwise only with the queue empty (commands.c) */
	s->up.rq[(s->up.rq_head + s->up.rq_n) % SG_RQ_MAX] = (unsigned char)verb;
	s->up.rq_n++;
	s->pending = SG_PEND_UPSTREAM;
}

static int pop(sg_session *s)
{
	int verb = ring_at(s, 0);
	s->up.rq_head = (s->up.rq_head + 1) % SG_RQ_MAX;
	s->up.rq_n--;
	return verb;
}

void sg_rq_on_reply(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing || s->up.rq_n == 0)
		return; /* a reply per command: an empty queue has none due */
	sg_cmd_settle(s, pop(s), r);
	if (!s->closing && s->up.rq_n == 0 && s->pending == SG_PEND_UPSTREAM)
		sg_session_resume(s);
}

void sg_rq_abandon(sg_session *s)
{
	while (s->up.rq_n && !s->closing)
		sg_cmd_settle(s, pop(s), NULL);
}

void sg_rq_trim(sg_session *s)
{
	if (s->up.rq_n)
		return;
	free(s->up.rq);
	s->up.rq = NULL;
	s->up.rq_head = 0;
}

void sg_rq_free(sg_session *s)
{
	free(s->up.rq);
	s->up.rq = NULL;
	s->up.rq_head = s->up.rq_n = 0;
}
