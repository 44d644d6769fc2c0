/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link_xfer.c
 *
 * NAME
 *   link_xfer - the upstream link in READY: commands, replies, DATA, BDAT
 * SUMMARY
 *   sg_link_command, sg_link_mail, sg_link_data_begin, sg_link_data_feed
 *   and sg_link_bdat_* of link.h; the replies in READY (link_ready_reply).
 * DESCRIPTION
 *   Commands are queued in order and each gets exactly one reply: the
 *   upstream's, or a 4xx/5xx of ours (never a 2xx the upstream did not
 *   send).  They go out in groups when the upstream offers PIPELINING (RFC
 *   2920; DATA and our XFORWARD end a group), else one at a time.  With
 *   identity = xforward, the XFORWARD commands go before each MAIL, and a
 *   refused one fails that MAIL.  A MAIL whose client sent AUTH= carries
 *   saslgate's own (RFC 4954 5), never the client's value.
 *
 *   DATA bytes go through the scanner (data_scan.h) into the worker's
 *   scratch buffer and from there to the socket.  The Received header goes
 *   with the first octets of a message and the final dot with its last:
 *   one write per read from the client, usually.  A message refused
 *   mid-stream (bare CR/LF, NUL, too big) is aborted by closing the
 *   upstream connection without the final dot, so the upstream cannot
 *   deliver a part of it; the link reconnects for the next command.
 *   With sg_link_data_hold_end ([policy] at = end_of_data) the final dot
 *   waits for the owner's verdict: sg_link_data_finish writes it,
 *   sg_link_data_abort closes the connection the same way instead.
 *
 *   BDAT (RFC 3030): the client's chunks are dot-stuffed (bdat.h) and go
 *   through the same scanner, so a chunked message gets DATA's limits,
 *   Received header, X-Authenticated-User stripping and bare CR/LF and NUL
 *   policy.  To an upstream that offers CHUNKING each step's output goes
 *   un-stuffed as a BDAT of its own (pipelined when PIPELINING is offered,
 *   else one at a time), and the end as BDAT LAST, whose reply is the
 *   message's; any chunk the upstream refuses fails the message.  To one
 *   that does not (a failover server the probe did not see), DATA is sent
 *   and the output goes as it is after the 354.  A chunked message that
 *   fails or is given up is aborted like a refused DATA: the connection
 *   closes, so the upstream holds no part of it. */
#include "link_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../common/metrics.h"
#include "bdat.h"
#include "received.h"

/* Replies of ours (code, text); all 4xx/5xx: never a 2xx we did not get. */
#define R_LOST "451 4.4.2 Upstream connection lost\r\n"
#define R_XFWD "451 4.7.0 Upstream refused the client identity\r\n"
#define R_BARE "550 5.5.2 Message rejected: bare CR or LF line ending\r\n"
/* NUL is no 7bit or 8bit data (RFC 2045 2.7, 2.8); 5.6.0: RFC 3463 */
#define R_NUL "550 5.6.0 Message contains NUL octets\r\n"
#define R_BIG "552 5.3.4 Message size exceeds fixed maximum message size\r\n"

static void bdat_wake(sg_link *l);
static void bdat_data_reply(sg_link *l, const sg_reply_reader *rr,
                            const char *t);
static void bdat_refused(sg_link *l, const sg_reply_reader *rr, const char *t);
static void bdat_over(sg_link *l);
static void bdat_give_up(sg_link *l, bool rset_follows);
static void abort_upstream(sg_link *l, const char *why, const char *text);

/* ---- replies of ours ----------------------------------------------------- */

static void defer_fire(uv_timer_t *t)
{
	sg_link *l = t->data;
	while (l->dhead && !l->owner_gone) {
		deferred *d = l->dhead;
		l->dhead = d->next;
		if (!l->dhead)
			l->dtail = NULL;
		sg_reply r = {d->code, d->text, d->len};
		if (d->cb)
			d->cb(d->arg, &r);
		free(d);
	}
}

/* Deliver text (a whole reply of ours) to cb from the loop, not from inside
 * the caller's sg_link_* call. */
static void defer_reply(sg_link *l, sg_link_cb cb, void *arg, const char *text)
{
	size_t n = strlen(text);
	deferred *d = sg_xmalloc(sizeof *d + n + 1);
	d->next = NULL;
	d->cb = cb;
	d->arg = arg;
	d->code = atoi(text);
	d->len = n;
	memcpy(d->text, text, n + 1);
	if (l->dtail)
		l->dtail->next = d;
	else
		l->dhead = d;
	l->dtail = d;
	if (l->phase != P_CLOSED)
		uv_timer_start(&l->defer, defer_fire, 0, 0);
}

static void call(sg_link *l, sg_link_cb cb, void *arg, const char *text)
{
	if (l->owner_gone || !cb)
		return;
	sg_reply r = {atoi(text), text, strlen(text)};
	cb(arg, &r);
}

/* Every queued command of the session's gets text now. */
static void fail_pending(sg_link *l, const char *text)
{
	pending *p = l->head;
	l->head = l->tail = NULL;
	l->inflight = 0;
	l->barrier_inflight = false;
	while (p) {
		pending *n = p->next;
		if (p->kind == K_USER || p->kind == K_DATA_END)
			call(l, p->cb, p->arg, text);
		free(p);
		p = n;
	}
}

/* A kept link's connection was found closed at its first commands: they
 * go again on a new one (link_reopen, identity and all), as if the kept
 * one had never been handed on.  Nothing was answered on it, so no
 * transaction of the session's can have been open upstream. */
static void pool_retry(sg_link *l, const char *why)
{
	log_info(link_sid(l), "event=upstream_pool_stale upstream=%s "
	         "reason=\"%s\"", l->peer, why);
	sg_metrics_pool(SG_MP_STALE);
	l->reused = false;
	uv_timer_stop(&l->timer);
	link_conn_close(l);
	for (pending *p = l->head; p; p = p->next)
		p->sent = false;
	l->inflight = 0;
	l->barrier_inflight = false;
	l->phase = P_DEAD;
	link_reopen(l);
}

void link_became_dead(sg_link *l, const char *why)
{
	if (l->pooled) {
		link_pool_drop(l, why, false);
		return;
	}
	if (l->reused && l->phase == P_READY && !l->in_data && l->head) {
		pool_retry(l, why);
		return;
	}
	if (l->phase != P_DEAD)
		log_warn(link_sid(l), "event=upstream_lost upstream=%s reason=\"%s\"",
		         l->peer, why);
	uv_timer_stop(&l->timer);
	link_conn_close(l);
	if (l->phase == P_CLOSED)
		return;
	l->phase = P_DEAD;
	l->identity_done = false;
	if (l->in_data)
		l->lost = true;
	fail_pending(l, R_LOST);
	bdat_wake(l);
}

/* ---- the command queue --------------------------------------------------- */

static bool is_barrier(const sg_link *l, const pending *p)
{
	/* RFC 2920 3.1: DATA ends a group; XFORWARD must be taken before MAIL
	 * (fail closed), so it is never pipelined with it.  RFC 3030 4.2:
	 * BDAT chunks may be pipelined (the LAST is K_DATA_END). */
	if (p->kind == K_BDAT)
		return !l->ehlo.pipelining;
	return !l->ehlo.pipelining || p->kind != K_USER ||
	       !strncasecmp(p->line, "DATA", 4);
}

/* Take p out of the queue and answer it with text of ours. */
static void drop_pending(sg_link *l, pending *p, const char *text)
{
	pending **pp = &l->head;
	pending *prev = NULL;
	while (*pp != p) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	*pp = p->next;
	if (l->tail == p)
		l->tail = prev;
	defer_reply(l, p->cb, p->arg, text);
	free(p);
}

void link_pump(sg_link *l)
{
	for (pending *p = l->head; p; p = p->next) {
		if (p->sent)
			continue;
		if (l->inflight > 0 && (l->barrier_inflight || !l->ehlo.pipelining))
			return;
		if (p->kind == K_USER && l->xforward_refused &&
		    !strncasecmp(p->line, "MAIL", 4)) {
			/* fail closed: no transaction without the identity */
			l->xforward_refused = false;
			drop_pending(l, p, R_XFWD);
			link_pump(l);
			return;
		}
		p->sent = true;
		l->inflight++;
		if (is_barrier(l, p))
			l->barrier_inflight = true;
		if (link_cmd(l, p->line) < 0) {
			link_became_dead(l, "write failed");
			return;
		}
		link_arm(l, l->cfg->upstream_timeout_ms);
	}
}

static pending *enqueue(sg_link *l, int kind, const char *line, size_t len,
                        sg_link_cb cb, void *arg)
{
	pending *p = sg_xmalloc(sizeof *p + len + 1);
	p->next = NULL;
	p->kind = kind;
	p->sent = false;
	p->cb = cb;
	p->arg = arg;
	p->len = len;
	memcpy(p->line, line, len);
	p->line[len] = '\0';
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
	return p;
}

void sg_link_command(sg_link *l, const char *line, size_t len, sg_link_cb cb,
                     void *arg)
{
	/* RSET between chunks (RFC 3030 4.2) gives the chunked message up */
	bdat_give_up(l, len >= 4 && !strncasecmp(line, "RSET", 4));
	if (l->phase == P_CLOSED || len > UP_CMD_MAX * 8) {
		defer_reply(l, cb, arg, R_LOST);
		return;
	}
	if (l->cfg->identity == SG_ID_XFORWARD && len >= 4 &&
	    !strncasecmp(line, "MAIL", 4)) {
		char x[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
		const char *why = NULL;
		int nx = sg_xforward_lines(&l->id, l->ehlo.xforward_attrs, x,
		                           SG_XCLIENT_LINES, &why);
		if (nx < 0) { /* the upstream's attributes changed since AUTH */
			log_error(link_sid(l),
			          "event=upstream_identity_unfit upstream=%s "
			          "command=XFORWARD reason=\"%s\"", l->peer, why);
			defer_reply(l, cb, arg, R_UNFIT);
			return;
		}
		for (int i = 0; i < nx; i++)
			enqueue(l, K_XFORWARD, x[i], strlen(x[i]), NULL, NULL);
	}
	enqueue(l, K_USER, line, len, cb, arg);
	if (l->phase == P_DEAD) {
		link_reopen(l);
		return;
	}
	if (l->phase == P_READY)
		link_pump(l);
}

void sg_link_mail(sg_link *l, const char *line, size_t len, bool auth_param,
                  sg_link_cb cb, void *arg)
{
	/* RFC 4954 5: AUTH= only to a server that offers AUTH (Postfix
	 * answers 503 5.7.4 otherwise); its value is ours, never the client's */
	if (!auth_param || !l->ehlo.auth || len < 2) {
		sg_link_command(l, line, len, cb, arg);
		return;
	}
	sg_buf b;
	sg_buf_init(&b, 0);
	int rc = sg_buf_append(&b, line, len - 2);
	if (rc == 0)
		/* identity = none passes no user, not even here */
		rc = sg_identity_mail_auth(&b, l->cfg->identity == SG_ID_NONE
		                                   ? NULL
		                                   : l->id.login);
	if (rc == 0)
		rc = sg_buf_append(&b, "\r\n", 2);
	if (rc < 0 || b.len > SG_UPSTREAM_LINE_MAX) {
		log_error(link_sid(l), "event=upstream_identity_unfit upstream=%s "
		          "command=MAIL reason=\"%s\"", l->peer,
		          rc < 0 ? "the login is not xtext-encodable"
		                 : "AUTH= makes the MAIL command too long");
		defer_reply(l, cb, arg, R_UNFIT);
	} else {
		sg_link_command(l, b.data, b.len, cb, arg);
	}
	sg_buf_free(&b);
}

/* ---- replies in READY ---------------------------------------------------- */

void link_ready_reply(sg_link *l, const sg_reply_reader *rr, const char *t)
{
	if (l->pooled) {
		link_pool_reply(l, rr->code, t);
		return;
	}
	/* a kept link whose first reply is the upstream closing (Postfix's
	 * "421 4.4.2 ... timeout exceeded" crossing our first command) */
	if (l->reused && rr->code == 421) {
		link_became_dead(l, t);
		return;
	}
	l->reused = false;
	pending *p = l->head;
	if (!p || !p->sent) {
		/* e.g. "421 4.4.2 timeout": the upstream is closing */
		if (l->in_data && !l->lost)
			log_warn(link_sid(l),
			         "event=upstream_reply_during_data reply=\"%s\"", t);
		link_became_dead(l, t);
		return;
	}
	l->head = p->next;
	if (!l->head)
		l->tail = NULL;
	l->inflight--;
	if (is_barrier(l, p))
		l->barrier_inflight = false;
	if (l->inflight > 0)
		link_arm(l, l->cfg->upstream_timeout_ms);
	else
		uv_timer_stop(&l->timer);
	sg_reply r = {rr->code, rr->text, rr->len};
	if (p->kind == K_XFORWARD && rr->code / 100 != 2) {
		log_error(link_sid(l), "event=upstream_identity_refused upstream=%s "
		                       "command=XFORWARD reply=\"%s\" fix=\"check "
		                       "smtpd_authorized_xforward_hosts on %s\"",
		          l->peer, t, l->peer);
		l->xforward_refused = true;
	}
	if (p->kind == K_BDAT_DATA)
		bdat_data_reply(l, rr, t);
	else if (p->kind == K_BDAT && rr->code / 100 != 2)
		bdat_refused(l, rr, t);
	else if (p->kind == K_RSET && rr->code / 100 != 2)
		/* what the upstream holds is not known: start afresh */
		abort_upstream(l, "upstream refused RSET", R_LOST);
	if (p->kind == K_DATA_END) {
		sg_reply_queue_id(rr->text, rr->len, l->qid, sizeof l->qid);
		l->in_data = false;
		bdat_over(l);
	}
	if (p->kind == K_USER || p->kind == K_DATA_END)
		if (!l->owner_gone && p->cb)
			p->cb(p->arg, &r);
	free(p);
	if (l->phase == P_READY)
		link_pump(l);
	bdat_wake(l);
}

/* ---- DATA ---------------------------------------------------------------- */

/* The Received header but its date depends only on the link (identity,
 * hostname, identity mode): made at its first message, then only stamped
 * (building it whole, five printf-style appends, costs ~19k instructions
 * a message). */
static int received_parts(sg_link *l, bool hdr)
{
	const sg_config *cfg = l->cfg;
	sg_buf pre, post;
	sg_buf_init(&pre, 0);
	sg_buf_init(&post, 0);
	int rc = sg_received_parts(&pre, &post, &l->id, cfg->hostname,
	                           cfg->identity != SG_ID_NONE, hdr);
	if (rc == 0) {
		l->rcv = sg_xmalloc(pre.len + post.len);
		memcpy(l->rcv, pre.data, pre.len);
		memcpy(l->rcv + pre.len, post.data, post.len);
		l->rcv_pre = pre.len;
		l->rcv_post = post.len;
	}
	sg_buf_free(&pre);
	sg_buf_free(&post);
	return rc;
}

/* A message starts (DATA's 354, or the client's first chunk): the scanner,
 * the Received header due with its first octets.  false: no upstream to
 * write to (lost is set). */
static bool message_begin(sg_link *l, sg_link_cb done, void *arg,
                          void (*drain)(void *arg))
{
	const sg_config *cfg = l->cfg;
	bool hdr = cfg->identity == SG_ID_HEADER || cfg->identity == SG_ID_AUTH;
	l->in_data = true;
	l->aborted = l->lost = l->paused = l->rcv_due = false;
	l->done = done;
	l->done_arg = arg;
	l->drain = drain;
	l->end_seen = NULL;
	l->end_held = false;
	l->qid[0] = '\0';
	/* the limit this link's EHLO named: a message past it gets our 552
	 * at once, not the upstream's after the whole upload */
	sg_scan_init(&l->scan, cfg->bare_newline == SG_BARE_NORMALIZE, hdr,
	             sg_size_limit(cfg->max_message_size,
	                           l->ehlo.has_size ? l->ehlo.size : 0));
	if (l->phase != P_READY) {
		l->lost = true;
		return false;
	}
	if (!l->rcv && received_parts(l, hdr) < 0) {
		/* cannot happen: sg_identity_unfit refused such a login */
		link_became_dead(l, "identity unfit for the Received header");
		return false;
	}
	l->rcv_time = time(NULL);
	l->rcv_due = true;
	return true;
}

/* Does the Received header fit the room kept for it in a step's output? */
static bool received_fits(const sg_link *l)
{
	return l->rcv_pre + l->rcv_post + SG_RECEIVED_DATE_MAX <= UP_RCV_ROOM;
}

void sg_link_data_header(sg_link *l, const char *lines, size_t len)
{
	free(l->prepend);
	l->prepend = sg_xmalloc(len);
	memcpy(l->prepend, lines, len);
	l->prepend_len = len;
}

void sg_link_data_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg))
{
	/* this message's, whatever becomes of it */
	char *pre = l->prepend;
	size_t pre_len = l->prepend_len;
	l->prepend = NULL;
	/* The header goes out with the first DATA octets (one write, not
	 * two: a many-message session's profile is mostly system calls).
	 * One too long for UP_RCV_ROOM (a long login) goes now, and so does
	 * one behind PREPEND headers, which go first. */
	bool begun = message_begin(l, done, arg, drain);
	if (begun && pre && link_send(l, pre, pre_len) < 0)
		link_became_dead(l, "write failed");
	free(pre);
	if (!begun || (!pre && received_fits(l)) || l->phase != P_READY)
		return;
	l->rcv_due = false;
	sg_buf out = link_scratch();
	if (sg_received_stamp(&out, l->rcv, l->rcv_pre, l->rcv + l->rcv_pre,
	                      l->rcv_post, l->rcv_time) < 0 ||
	    link_send(l, out.data, out.len) < 0)
		link_became_dead(l, "write failed");
}

/* Abort the upstream transaction: close without the final dot, so the
 * upstream discards what it got (it must not deliver a part).  Commands
 * still pending get text. */
static void abort_upstream(sg_link *l, const char *why, const char *text)
{
	l->aborted = true;
	log_info(link_sid(l), "event=upstream_abort upstream=%s reason=\"%s\"",
	         l->peer, why);
	uv_timer_stop(&l->timer);
	link_conn_close(l);
	if (l->phase == P_READY)
		l->phase = P_DEAD;
	l->identity_done = false;
	fail_pending(l, text);
}

/* Why the message failed: the upstream's refusal of a chunk, a refusal of
 * the scanner's, or the upstream gone. */
static const char *refusal(const sg_link *l)
{
	if (l->bdat_err)
		return l->bdat_err;
	/* NUL octets and bare line ends both: the NUL is named */
	if (l->scan.nul)
		return R_NUL;
	if (l->scan.bad)
		return R_BARE;
	if (l->scan.too_big)
		return R_BIG;
	return R_LOST;
}

/* refusal()'s reason, for saslgate_data_refusals_total */
static enum sg_mrefusal refusal_reason(const sg_link *l)
{
	if (l->bdat_err)
		return SG_MR_UPSTREAM;
	return l->scan.nul ? SG_MR_NUL : l->scan.bad ? SG_MR_BARE
	       : l->scan.too_big ? SG_MR_SIZE : SG_MR_UPSTREAM;
}

/* The message is over and refused, or its upstream gone: our reply. */
static void data_refused(sg_link *l)
{
	l->in_data = false;
	sg_metrics_refusal(refusal_reason(l));
	defer_reply(l, l->done, l->done_arg, refusal(l));
	bdat_over(l);
}

/* The final ".\r\n" is about to be written (the scanner wrote the last
 * line's CRLF; this is the <CRLF>.<CRLF>): its reply is the message's. */
static void data_end_pending(sg_link *l)
{
	enqueue(l, K_DATA_END, ".\r\n", 3, l->done, l->done_arg);
	l->tail->sent = true;
	l->inflight++;
	l->barrier_inflight = true;
	link_arm(l, l->cfg->upstream_timeout_ms);
}

size_t sg_link_data_feed(sg_link *l, const char *buf, size_t len, bool *pause)
{
	*pause = false;
	if (!l->in_data || l->scan.done)
		return 0;
	/* Scanned in steps into the worker's scratch buffer and written from
	 * there (straight into the socket, only the rest copied into a queued
	 * write).  The client's bytes are copied once more than read (twice
	 * with TLS, the second being the encryption) and no memory is
	 * allocated per chunk, nor kept by the link. */
	size_t used = 0;
	/* the final dot's reply is pending (ours or the upstream's) */
	bool dot = false;
	while (used < len && !l->scan.done) {
		size_t take = len - used < UP_SCAN_IN ? len - used : UP_SCAN_IN;
		sg_buf out = link_scratch();
		if (l->rcv_due && !l->lost) /* the room is reserved for it */
			sg_received_stamp(&out, l->rcv, l->rcv_pre, l->rcv + l->rcv_pre,
			                  l->rcv_post, l->rcv_time);
		l->rcv_due = false;
		used += sg_scan_feed(&l->scan, buf + used, take, &out);
		if (!l->aborted && !l->lost && (l->scan.bad || l->scan.too_big))
			abort_upstream(l, l->scan.nul ? "NUL in DATA"
			                  : l->scan.bad ? "bare CR or LF in DATA"
			                              : "message too big", R_LOST);
		if (l->aborted || l->lost)
			continue;
		/* held: everything but the end marker goes; the owner decides */
		if (l->scan.done && l->end_seen)
			l->end_held = true;
		/* the end of data goes in the same write as the last octets */
		else if (l->scan.done) {
			sg_buf_append(&out, ".\r\n", 3);
			data_end_pending(l);
			/* from here a write failure answers it (fail_pending) */
			dot = true;
		}
		if (out.len && link_send(l, out.data, out.len) < 0)
			link_became_dead(l, "write failed");
	}
	if (l->scan.done) {
		if (l->end_held && l->end_seen && !l->owner_gone)
			l->end_seen(l->done_arg);
		else if (!dot)
			data_refused(l);
		return used;
	}
	if (l->c && l->wq > UP_WQ_HIGH) {
		l->paused = true;
		*pause = true;
	}
	return used;
}

void sg_link_data_hold_end(sg_link *l, void (*end_seen)(void *arg))
{
	if (l->in_data && !l->bdat)
		l->end_seen = end_seen;
}

/* The held end of data goes: its reply is the message's.  An upstream
 * lost while the owner decided gets the message our 451. */
void sg_link_data_finish(sg_link *l)
{
	if (!l->end_held)
		return;
	l->end_held = false;
	if (l->lost || l->aborted || l->phase != P_READY) {
		data_refused(l);
		return;
	}
	data_end_pending(l);
	if (link_send(l, ".\r\n", 3) < 0) /* fail_pending answers it */
		link_became_dead(l, "write failed");
}

/* The held message is refused: never its end marker; the connection
 * closes so the upstream discards what it got. */
void sg_link_data_abort(sg_link *l)
{
	if (!l->end_held)
		return;
	l->end_held = false;
	if (!l->aborted && !l->lost)
		abort_upstream(l, "message refused at the end of data", R_LOST);
	l->in_data = false;
}

/* ---- BDAT (RFC 3030) ----------------------------------------------------- */

/* Client octets stuffed per step: SG_STUFF_MAX of them is within
 * UP_SCAN_IN, and the scanner's output for that, with the BDAT line in
 * front and the end of data after, within the scratch buffer. */
#define UP_BDAT_IN (UP_SCAN_IN / 2)
/* Room kept before a step's output for "BDAT <n> LAST\r\n". */
#define UP_BDAT_HDR 32

static __thread char stuffed[SG_STUFF_MAX(UP_BDAT_IN)];

/* The message can no longer be delivered: its octets are dropped. */
static bool bdat_failed(const sg_link *l)
{
	return l->lost || l->aborted || l->bdat_err;
}

/* No octet may go now: DATA's 354 is not in, or the BDAT sent last
 * awaits its reply (no PIPELINING). */
static bool bdat_blocked(const sg_link *l)
{
	if (!l->in_data || !l->bdat || bdat_failed(l))
		return false;
	return l->bdat_wait ||
	       (l->bdat_up && !l->ehlo.pipelining && l->inflight > 0);
}

/* The session was told to pause for a reply: resume it once that is in
 * (or the message failed).  Only from the loop (a reply, a loss, a
 * timeout), never from inside sg_link_bdat_feed. */
static void bdat_wake(sg_link *l)
{
	if (!l->bdat_held || bdat_blocked(l))
		return;
	l->bdat_held = false;
	if (l->drain && !l->owner_gone)
		l->drain(l->done_arg);
}

/* The chunked message is over (delivered, refused or given up). */
static void bdat_over(sg_link *l)
{
	l->bdat = l->bdat_up = l->bdat_wait = false;
	free(l->bdat_err);
	l->bdat_err = NULL;
}

/* The upstream refused the message (a chunk, or the DATA for it): that is
 * the message's reply, and the upstream's transaction is aborted. */
static void bdat_fail(sg_link *l, const sg_reply_reader *rr, const char *t)
{
	log_info(link_sid(l), "event=upstream_bdat_refused upstream=%s "
	         "reply=\"%s\"", l->peer, t);
	l->bdat_err = sg_xstrndup(rr->text, rr->len);
	if (!l->aborted && !l->lost)
		abort_upstream(l, "upstream refused the chunked message",
		               l->bdat_err);
}

static void bdat_refused(sg_link *l, const sg_reply_reader *rr, const char *t)
{
	if (l->in_data && l->bdat && !bdat_failed(l))
		bdat_fail(l, rr, t);
}

static void bdat_data_reply(sg_link *l, const sg_reply_reader *rr,
                            const char *t)
{
	if (!l->in_data || !l->bdat || bdat_failed(l))
		return;
	l->bdat_wait = false;
	if (rr->code != 354) {
		bdat_fail(l, rr, t);
		return;
	}
	l->rcv_time = time(NULL); /* the Received date: when the 354 came */
}

/* A command of ours that was just written (sent, in flight). */
static void bdat_sent(sg_link *l, int kind, const char *line, size_t len,
                      sg_link_cb cb, void *arg)
{
	pending *p = enqueue(l, kind, line, len, cb, arg);
	p->sent = true;
	l->inflight++;
	if (is_barrier(l, p))
		l->barrier_inflight = true;
	link_arm(l, l->cfg->upstream_timeout_ms);
}

/* A step's output buffer: the scratch, with room for the BDAT line. */
static sg_buf bdat_out(const sg_link *l)
{
	sg_buf out = link_scratch();
	if (l->bdat_up)
		out.len = UP_BDAT_HDR;
	return out;
}

/* Write a step's output; fin: it ends the message (the scanner has seen
 * the end of data), whose reply goes to done.  Queued only once written,
 * so a failed write leaves nothing pending: data_refused answers. */
static void bdat_write(sg_link *l, sg_buf *out, bool fin)
{
	if (!l->bdat_up) {
		if (fin)
			sg_buf_append(out, ".\r\n", 3);
		if (out->len && link_send(l, out->data, out->len) < 0) {
			link_became_dead(l, "write failed");
			if (fin)
				data_refused(l);
			return;
		}
		if (fin)
			bdat_sent(l, K_DATA_END, ".\r\n", 3, l->done, l->done_arg);
		return;
	}
	size_t n = sg_unstuff(&l->unstuff, out->data + UP_BDAT_HDR,
	                      out->len - UP_BDAT_HDR);
	if (n == 0 && !fin)
		return;
	char line[UP_BDAT_HDR];
	int h = snprintf(line, sizeof line, "BDAT %zu%s\r\n", n,
	                 fin ? " LAST" : "");
	char *start = out->data + UP_BDAT_HDR - h;
	memcpy(start, line, (size_t)h);
	log_debug(link_sid(l), "event=upstream_send upstream=%s line=\"%.*s\"",
	          l->peer, h - 2, line);
	if (link_send(l, start, (size_t)h + n) < 0) {
		link_became_dead(l, "write failed");
		if (fin)
			data_refused(l);
		return;
	}
	if (fin)
		bdat_sent(l, K_DATA_END, line, (size_t)h, l->done, l->done_arg);
	else
		bdat_sent(l, K_BDAT, line, (size_t)h, NULL, NULL);
}

/* One step: stuffed octets p[0..n) through the scanner and out; fin adds
 * the end of data. */
static void bdat_step(sg_link *l, const char *p, size_t n, bool fin)
{
	if (l->lost || l->bdat_err) {
		if (fin)
			data_refused(l);
		return;
	}
	sg_buf out = bdat_out(l);
	if (l->rcv_due && !l->aborted) {
		l->rcv_due = false;
		sg_received_stamp(&out, l->rcv, l->rcv_pre, l->rcv + l->rcv_pre,
		                  l->rcv_post, l->rcv_time);
		if (!received_fits(l)) { /* a long login: a write of its own */
			bdat_write(l, &out, false);
			if (l->lost) {
				if (fin)
					data_refused(l);
				return;
			}
			out = bdat_out(l);
		}
	}
	/* a scanner that refused writes nothing more; it goes on counting
	 * and naming (a NUL after a bare LF is named) as for DATA */
	sg_scan_feed(&l->scan, p, n, &out);
	if (fin) {
		const char *end = sg_stuff_end(&l->stuff);
		sg_scan_feed(&l->scan, end, strlen(end), &out);
	}
	if (!l->aborted && (l->scan.bad || l->scan.too_big ||
	                    (fin && !l->scan.done)))
		abort_upstream(l, l->scan.nul ? "NUL in BDAT"
		                  : l->scan.bad ? "bare CR or LF in BDAT"
		                  : l->scan.too_big ? "message too big"
		                              : "no end of data", R_LOST);
	if (l->aborted) {
		if (fin)
			data_refused(l);
		return;
	}
	bdat_write(l, &out, fin);
}

void sg_link_bdat_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg))
{
	bdat_over(l);
	l->bdat = true;
	l->bdat_held = false;
	sg_stuff_init(&l->stuff);
	sg_unstuff_init(&l->unstuff);
	if (!message_begin(l, done, arg, drain))
		return;
	l->bdat_up = l->ehlo.chunking;
	if (l->bdat_up)
		return;
	log_info(link_sid(l), "event=bdat_as_data upstream=%s "
	         "reason=\"the upstream does not offer CHUNKING\"", l->peer);
	enqueue(l, K_BDAT_DATA, "DATA\r\n", 6, NULL, NULL);
	l->bdat_wait = true;
	link_pump(l);
}

size_t sg_link_bdat_feed(sg_link *l, const char *buf, size_t len, bool last,
                         bool *pause)
{
	*pause = false;
	l->bdat_held = false;
	if (!l->in_data || !l->bdat)
		return len; /* cannot happen: fed only while the message is open */
	size_t used = 0;
	for (;;) {
		if (bdat_blocked(l)) {
			l->bdat_held = true;
			*pause = true;
			return used;
		}
		size_t take = len - used < UP_BDAT_IN ? len - used : UP_BDAT_IN;
		bool fin = last && used + take == len;
		size_t n = sg_stuff(&l->stuff, buf + used, take, stuffed);
		used += take;
		bdat_step(l, stuffed, n, fin);
		if (fin)
			return used; /* over: done is called */
		if (used == len)
			break;
	}
	if (l->in_data && l->c && l->wq > UP_WQ_HIGH) {
		l->paused = true;
		*pause = true;
	}
	return used;
}

const char *sg_link_bdat_status(const sg_link *l)
{
	if (!l->in_data || !l->bdat)
		return R_LOST; /* cannot happen: asked only while it is open */
	return bdat_failed(l) ? refusal(l) : NULL;
}

/* The chunked message is given up before its end: nothing of it may be
 * delivered.  A BDAT upstream, at a command boundary, gets an RSET (RFC
 * 3030 4.2; ours, unless the session's comes next); an upstream in DATA
 * is aborted (one whose message failed was aborted then). */
static void bdat_give_up(sg_link *l, bool rset_follows)
{
	if (!l->in_data || !l->bdat)
		return;
	if (!l->aborted && !l->lost && !l->bdat_up)
		abort_upstream(l, "chunked message given up", R_LOST);
	else if (!l->aborted && !l->lost && !rset_follows) {
		enqueue(l, K_RSET, "RSET\r\n", 6, NULL, NULL);
		if (l->phase == P_READY)
			link_pump(l);
	}
	l->in_data = false;
	l->bdat_held = false;
	bdat_over(l);
}

void sg_link_bdat_cancel(sg_link *l) { bdat_give_up(l, false); }
