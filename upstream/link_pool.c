/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link_pool.c
 *
 * NAME
 *   link_pool - idle upstream connections kept for the next session
 * SUMMARY
 *   link_pool_put, link_pool_take, link_pool_reply, link_pool_drop (the
 *   link's side) and sg_link_pool_reconfig, sg_link_pool_shutdown,
 *   sg_upstream_same of link.h.
 * DESCRIPTION
 *   With [upstream] pool_size, a link whose owner lets go while it is
 *   READY with nothing queued, in flight, unread or unwritten is kept by
 *   its worker instead of being sent QUIT, so that the worker's next
 *   session needing a link skips the connect, the greeting and EHLO (and
 *   STARTTLS, and the service account's AUTH).  At most pool_size per
 *   worker; a worker's links live on its loop only, so the pool is the
 *   thread's own and takes no lock.
 *
 *   Clean state: the link sends RSET as it is kept, and is handed on only
 *   once that is answered 250.  RSET then rather than when the link is
 *   taken: the round trip falls between sessions, not in the next one's
 *   path, and the upstream holds no transaction, no XFORWARD attribute of
 *   the session before (Postfix resets them with the transaction), before
 *   anything of the next session's can reach it.  Any other reply, an
 *   error, the upstream closing, no answer within connect_timeout, or
 *   pool_idle_timeout unused drops the link (QUIT when it is idle).
 *
 *   What crosses to the upstream for a session on a kept link is what a
 *   new link would have sent after its handshake: the identity is the
 *   session's own (XFORWARD is made from it before each MAIL, the headers
 *   and MAIL AUTH= from it), the configuration the session's (the link
 *   is taken only when its [upstream] is the same: sg_upstream_same).
 *   identity = xclient is never kept: Postfix checks the address XCLIENT
 *   gave against smtpd_authorized_xclient_hosts, so after XCLIENT the
 *   connection is no longer one the upstream takes an identity on.
 *
 *   The classic race of kept connections, the upstream closing one just as
 *   it is taken, is the link's (link_xfer.c): a link taken from the pool
 *   whose first commands meet a closed connection (or a 421) sends them
 *   again on a new one, once, and the session sees no 4xx. */
#include "link_int.h"

#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/metrics.h"

/* The worker's kept links, most recently kept first (taken first: the
 * oldest are the likeliest to time out, and go unused). */
static __thread struct {
	sg_link *head;
	unsigned n;
} pool;

static const char R_READY[] = "250 2.0.0 Upstream ready\r\n";

static bool same_str(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

bool sg_upstream_same(const sg_config *a, const sg_config *b)
{
	if (a == b)
		return true;
	if (a->nservers != b->nservers || a->identity != b->identity ||
	    a->upstream_tls != b->upstream_tls)
		return false;
	for (size_t i = 0; i < a->nservers; i++)
		if (!same_str(a->servers[i].host, b->servers[i].host) ||
		    !same_str(a->servers[i].port, b->servers[i].port))
			return false;
	return same_str(a->upstream_helo, b->upstream_helo) &&
	       same_str(a->auth_user, b->auth_user) &&
	       same_str(a->auth_password_file, b->auth_password_file) &&
	       same_str(a->upstream_ca_file, b->upstream_ca_file) &&
	       same_str(a->upstream_tls_name, b->upstream_tls_name);
}

static void unlink_pooled(sg_link *l)
{
	if (l->pool_prev)
		l->pool_prev->pool_next = l->pool_next;
	else
		pool.head = l->pool_next;
	if (l->pool_next)
		l->pool_next->pool_prev = l->pool_prev;
	l->pool_next = l->pool_prev = NULL;
	l->pooled = l->pool_rset = false;
	pool.n--;
}

void link_pool_drop(sg_link *l, const char *why, bool quit)
{
	if (!l->pooled)
		return;
	unlink_pooled(l);
	log_debug(link_sid(l), "event=upstream_pool_drop upstream=%s "
	          "reason=\"%s\"", l->peer, why);
	link_end(l, quit);
}

/* Nothing of the session before may be left on the connection. */
static bool clean(const sg_link *l)
{
	return l->phase == P_READY && l->c && !l->quit_sent && !l->in_data &&
	       !l->head && !l->dhead && l->inflight == 0 && l->wq == 0 &&
	       !l->rr && !l->bdat && !l->end_held && !l->unfit &&
	       !l->xforward_refused && !l->probe;
}

bool link_pool_put(sg_link *l)
{
	const sg_config *c = l->cfg;
	if (!c->pool_size || c->identity == SG_ID_XCLIENT || !clean(l) ||
	    pool.n >= c->pool_size || (pool.head && pool.head->loop != l->loop))
		return false;
	l->pooled = l->pool_rset = true;
	l->reused = false;
	l->pool_prev = NULL;
	l->pool_next = pool.head;
	if (pool.head)
		pool.head->pool_prev = l;
	pool.head = l;
	pool.n++;
	if (link_cmd(l, "RSET\r\n") < 0) {
		link_pool_drop(l, "write failed", false);
		return true;
	}
	/* an answer due at once, as to a greeting */
	link_arm(l, c->connect_timeout_ms);
	return true;
}

void link_pool_reply(sg_link *l, int code, const char *t)
{
	if (l->pool_rset && code == 250) {
		l->pool_rset = false;
		link_arm(l, l->cfg->pool_idle_timeout_ms); /* on_timeout drops it */
		return;
	}
	link_pool_drop(l, t, code != 421);
}

/* The owner's ready, from the loop (link.h: never inside sg_link_open). */
static void pool_ready(uv_timer_t *t)
{
	sg_link *l = t->data;
	sg_link_cb cb = l->ready;
	l->ready = NULL;
	if (!l->owner_gone && cb) {
		sg_reply r = {250, R_READY, sizeof R_READY - 1};
		cb(l->ready_arg, &r);
	}
}

/* identity = auth: the kept login is the account's as the file says now
 * (a new link reads it at each open, so a changed password takes
 * effect). */
static bool same_secret(const sg_link *l)
{
	if (l->cfg->identity != SG_ID_AUTH)
		return true;
	char *pw = link_read_secret(l->cfg->auth_password_file);
	bool same = pw && l->password && !strcmp(pw, l->password);
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	return same;
}

/* XFORWARD: every attribute of this session's identity can be sent to
 * this upstream (as xforward_fits checks at a new link's open). */
static bool fits(const sg_link *l, const sg_identity *id)
{
	if (l->cfg->identity != SG_ID_XFORWARD)
		return true;
	char x[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
	const char *why = NULL;
	return sg_xforward_lines(id, l->ehlo.xforward_attrs, x, SG_XCLIENT_LINES,
	                         &why) >= 0;
}

sg_link *link_pool_take(uv_loop_t *loop, const sg_config *cfg,
                        const sg_identity *id, sg_link_cb ready, void *arg)
{
	if (!cfg->pool_size || cfg->identity == SG_ID_XCLIENT)
		return NULL;
	sg_link *l = pool.head;
	while (l) {
		sg_link *next = l->pool_next;
		if (l->loop != loop || l->pool_rset) {
			l = next;
			continue;
		}
		if (!sg_upstream_same(l->cfg, cfg)) {
			link_pool_drop(l, "configuration changed", true);
		} else if (!same_secret(l)) {
			link_pool_drop(l, "auth_password_file changed", true);
		} else if (fits(l, id)) {
			break;
		}
		l = next;
	}
	if (!l) {
		sg_metrics_pool(SG_MP_MISS);
		return NULL;
	}
	unlink_pooled(l);
	uv_timer_stop(&l->timer);
	/* the session's own: identity, configuration, what is made of them */
	link_set_identity(l, id);
	if (l->cfg != cfg) {
		sg_config_unref(l->cfg);
		l->cfg = sg_config_ref((sg_config *)cfg);
	}
	free(l->rcv); /* the Received header names the session before's */
	l->rcv = NULL;
	free(l->prepend);
	l->prepend = NULL;
	free(l->last_error);
	l->last_error = NULL;
	l->qid[0] = '\0';
	l->owner_gone = false;
	l->reused = true;
	l->ready = ready;
	l->ready_arg = arg;
	sg_metrics_pool(SG_MP_HIT);
	log_info(link_sid(l), "event=upstream_ready upstream=%s identity=%s "
	         "tls=%s pooled=yes", l->peer,
	         (const char *[]){"xclient", "xforward", "header", "auth",
	                          "none"}[cfg->identity % 5],
	         l->tls_on ? "yes" : "no");
	uv_timer_start(&l->defer, pool_ready, 0, 0);
	return l;
}

void sg_link_pool_reconfig(uv_loop_t *loop, const sg_config *cfg)
{
	unsigned kept = 0;
	for (sg_link *l = pool.head, *next; l; l = next) {
		next = l->pool_next;
		if (l->loop != loop)
			continue;
		if (!cfg->pool_size || cfg->identity == SG_ID_XCLIENT ||
		    !sg_upstream_same(l->cfg, cfg))
			link_pool_drop(l, "configuration changed", true);
		else if (++kept > cfg->pool_size)
			link_pool_drop(l, "pool_size lowered", true);
	}
}

void sg_link_pool_shutdown(uv_loop_t *loop)
{
	for (sg_link *l = pool.head, *next; l; l = next) {
		next = l->pool_next;
		if (l->loop == loop)
			link_pool_drop(l, "shutdown", true);
	}
}
