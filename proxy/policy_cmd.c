/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/policy_cmd.c: the session's side of [policy] (policy.h).
 *
 * With at = rcpt each RCPT, with at = data the DATA, is held back
 * (SG_PEND_POLICY) while the policy server is asked, as Postfix asks at
 * smtpd_recipient_restrictions / smtpd_data_restrictions time; then it is
 * relayed (sg_cmd_policy_pass) or answered with the policy's reply.
 * With at = end_of_data (smtpd_end_of_data_restrictions) the message is
 * relayed but for its end, which the link holds (sg_link_data_hold_end)
 * while the server is asked with protocol_state=END-OF-MESSAGE and the
 * message's size; then the end goes (the upstream's reply is the
 * message's) or the message is given up upstream and the client gets the
 * policy's reply.  A message the scanner refused is not checked.
 * Every decision is one event=policy log line.
 *
 * The attributes are those of SMTPD_POLICY_README that saslgate knows;
 * the ones it cannot know are sent empty, as Postfix sends an unknown
 * value (queue_id: the upstream assigns it after DATA; size before the
 * end of data: the MAIL SIZE= is not kept; recipient at DATA and at the
 * end of data).
 *
 * Actions (policy_proto.c, README "Stopping a stolen password"):
 *   OK, DUNNO, DEFER_IF_REJECT     relay the command
 *   REJECT [text]                  554 5.7.1 text
 *   DEFER, DEFER_IF_PERMIT [text]  450 4.7.1 text (nothing saslgate
 *                                  checks later could permit or reject)
 *   4NN text, 5NN text             that reply; 421 and 521 also close
 *                                  the session, as in Postfix
 *   WARN text                      logged, relay
 *   PREPEND header                 the header goes before the message's
 *                                  Received header, relay; at the end
 *                                  of data (the header is sent) logged
 *                                  as ignored, relay
 *   HOLD DISCARD FILTER REDIRECT BCC INFO DELAY SHUTDOWN, and anything
 *                                  else: logged as ignored, relay
 * No answer in time from any server: [policy] default_action (defer:
 * 451 4.3.5; dunno: relay).  A request that cannot be written (a value
 * with CR or LF: the protocol has no escape) is never sent and gets
 * 451 4.3.5 whatever default_action says: the check was not made. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/metrics.h"
#include "../upstream/identity.h"
#include "commands_int.h"
#include "policy.h"
#include "reply.h"
#include "session_int.h"

#define R_POLICY_FAIL "451 4.3.5 Server configuration problem\r\n"

static const char *const at_name[] = {"rcpt", "data", "end_of_data"};

static const char *nz(const char *s) { return s ? s : ""; }

/* The request (SMTPD_POLICY_README "Policy delegation protocol"). */
static int encode(sg_session *s, const char *state, const char *rcpt,
                  sg_buf *out, const char **bad)
{
	char count[16], port[8], sport[8], bits[8], instance[40], size[24];
	/* the message's octets as the client sent them, known at its end
	 * (counted with the end of data: <CRLF>.<CRLF> less its CRLF) */
	uint64_t octets = s->txn.msg_size >= 3 ? s->txn.msg_size - 3 : 0;
	snprintf(size, sizeof size, "%llu",
	         strcmp(state, "END-OF-MESSAGE") == 0
	             ? (unsigned long long)octets : 0ULL);
	snprintf(count, sizeof count, "%u",
	         strcmp(state, "RCPT") == 0 ? 0 : s->txn.rcpts);
	snprintf(port, sizeof port, "%u", s->client_port);
	snprintf(sport, sizeof sport, "%u", s->dest_port);
	/* one value per transaction, as Postfix's instance attribute */
	snprintf(instance, sizeof instance, "%s.%u", s->id, s->msgs);
	bool tls = s->tls.eng && s->tls.encrypted;
	snprintf(bits, sizeof bits, "%d", tls ? (int)sg_tls_bits(s->tls.eng) : 0);
	const char *name = s->name.name ? s->name.name : "unknown";
	sg_policy_attr a[] = {
	    {"request", "smtpd_access_policy"},
	    {"protocol_state", state},
	    {"protocol_name", s->esmtp ? "ESMTP" : "SMTP"},
	    {"helo_name", nz(s->helo)},
	    {"queue_id", ""},
	    {"sender", nz(s->txn.mail_from)},
	    {"recipient", nz(rcpt)},
	    {"recipient_count", count},
	    {"client_address", s->client_ip},
	    {"client_name", name},
	    {"reverse_client_name", name},
	    {"client_port", port},
	    {"instance", instance},
	    {"sasl_method", s->auth.ok ? s->auth.mech : ""},
	    {"sasl_username", s->auth.ok ? nz(s->auth.user) : ""},
	    {"sasl_sender", ""},
	    {"size", size},
	    {"encryption_protocol", tls ? sg_tls_version(s->tls.eng) : ""},
	    {"encryption_cipher", tls ? sg_tls_cipher(s->tls.eng) : ""},
	    {"encryption_keysize", bits},
	    {"server_address", s->dest_ip},
	    {"server_port", sport},
	};
	return sg_policy_encode(a, sizeof a / sizeof a[0], out, bad);
}

/* The one event=policy line of a decision. */
static void log_decision(sg_session *s, const char *server, const char *action,
                         const char *result, const char *reply,
                         const char *why)
{
	char from[SG_PATH_MAX + 1], to[SG_PATH_MAX + 1], user[SG_USER_LOG_MAX];
	char act[SG_POLICY_TEXT_MAX], rep[SG_POLICY_TEXT_MAX];
	sg_log_safe(from, sizeof from, s->txn.mail_from);
	sg_log_safe(to, sizeof to, s->pol.rcpt);
	sg_identity_log(user, sizeof user, s->auth.ok ? s->auth.user : NULL);
	snprintf(act, sizeof act, "%s", action);
	size_t rl = strcspn(reply ? reply : "", "\r\n");
	snprintf(rep, sizeof rep, "%.*s", (int)rl, reply ? reply : "");
	for (char *p = act; *p; p++)
		if (*p == '"')
			*p = '\'';
	for (char *p = rep; *p; p++)
		if (*p == '"')
			*p = '\'';
	log_info(s->id,
	         "event=policy server=%s at=%s from=<%s> to=<%s> user=%s "
	         "action=\"%s\" result=%s reply=\"%s\"%s%s%s",
	         server, at_name[s->cfg->policy_at], from, to, user, act, result,
	         rep, why ? " reason=\"" : "", why ? why : "", why ? "\"" : "");
	sg_metrics_policy(result);
}

static void held_free(sg_session *s)
{
	free(s->pol.line);
	s->pol.line = NULL;
	free(s->pol.rcpt);
	s->pol.rcpt = NULL;
}

/* Carry on: the held line goes upstream (at the end of data: the end). */
static void pass(sg_session *s)
{
	if (s->pol.eod) {
		s->pol.eod = false;
		held_free(s);
		sg_session_data_release(s);
		return;
	}
	char *line = s->pol.line;
	size_t len = s->pol.len;
	s->pol.line = NULL;
	held_free(s);
	s->pending = SG_PEND_NONE;
	sg_cmd_policy_pass(s, s->pol.verb, line, len);
	free(line);
	sg_session_process(s);
}

/* The client gets text (a whole reply line) instead. */
static void refuse_with(sg_session *s, int code, const char *text)
{
	held_free(s);
	if (s->pol.eod) { /* the message's final reply; upstream: given up */
		s->pol.eod = false;
		sg_session_data_refuse(s, code, text);
	} else {
		sg_reply_raw(s, code, text, strlen(text));
	}
	if (code == 421 || code == 521) {
		sg_session_flush(s);
		sg_session_close(s, "policy");
		return;
	}
	sg_session_resume(s);
}

static void add_prepend(sg_session *s, const char *hdr)
{
	size_t old = s->pol.prepend ? strlen(s->pol.prepend) : 0;
	size_t n = strlen(hdr);
	s->pol.prepend = sg_xrealloc(s->pol.prepend, old + n + 3);
	memcpy(s->pol.prepend + old, hdr, n);
	memcpy(s->pol.prepend + old + n, "\r\n", 3);
}

static void on_answer(sg_session *s, const sg_policy_result *r)
{
	const sg_policy_verdict *v = r->v;
	switch (v->kind) {
	case SG_POL_REFUSE:
		log_decision(s, r->server, r->action, "refuse", v->text, NULL);
		refuse_with(s, v->code, v->text);
		return;
	case SG_POL_PREPEND:
		if (s->pol.eod) { /* the header went with the message's start */
			log_decision(s, r->server, r->action, "continue", "",
			             "action ignored: the header is already sent");
			break;
		}
		add_prepend(s, v->text);
		log_decision(s, r->server, r->action, "continue", "", NULL);
		break;
	case SG_POL_WARN:
		log_decision(s, r->server, r->action, "continue", "", "WARN");
		break;
	case SG_POL_IGNORED:
	case SG_POL_UNKNOWN:
		log_decision(s, r->server, r->action, "continue", "",
		             "action ignored: no meaning for a proxy");
		break;
	default:
		log_decision(s, r->server, r->action, "continue", "", NULL);
		break;
	}
	pass(s);
}

static void on_policy(void *arg, const sg_policy_result *r)
{
	sg_session *s = arg;
	s->pol.q = NULL;
	if (s->closing)
		return;
	if (r->answered) {
		on_answer(s, r);
		return;
	}
	if (s->cfg->policy_default == SG_POLICY_DEFAULT_DUNNO) {
		log_decision(s, r->server, "-", "default_dunno", "", r->why);
		pass(s);
		return;
	}
	log_decision(s, r->server, "-", "default_defer", R_POLICY_FAIL, r->why);
	refuse_with(s, 451, R_POLICY_FAIL);
}

/* Encode and send the request for state; false: it cannot be written
 * (a value with a line end), logged, nothing sent. */
static bool ask(sg_session *s, const char *state, const char *rcpt)
{
	sg_buf req;
	sg_buf_init(&req, 0);
	const char *bad = NULL;
	if (encode(s, state, rcpt, &req, &bad) < 0) {
		char why[96];
		snprintf(why, sizeof why, "%s has a line end: request not sent", bad);
		log_decision(s, "-", "-", "refuse", R_POLICY_FAIL, why);
		sg_buf_free(&req);
		return false;
	}
	s->pending = SG_PEND_POLICY;
	s->pol.q = sg_policy_ask(s->loop, s->cfg, s->id, req.data, req.len,
	                         on_policy, s);
	sg_buf_free(&req);
	return true;
}

bool sg_policy_holds(sg_session *s, int at, int verb, const char *rcpt,
                     const char *line, size_t len)
{
	if (s->cfg->npolicy_servers == 0 || s->cfg->policy_at != at)
		return false;
	sg_session_set_str(&s->pol.rcpt, rcpt, SG_PATH_MAX);
	if (!ask(s, at == SG_POLICY_AT_RCPT ? "RCPT" : "DATA", rcpt)) {
		held_free(s);
		sg_reply_raw(s, 451, R_POLICY_FAIL, strlen(R_POLICY_FAIL));
		return true;
	}
	s->pol.line = sg_xmalloc(len);
	memcpy(s->pol.line, line, len);
	s->pol.len = len;
	s->pol.verb = verb;
	return true;
}

void sg_policy_end_of_data(sg_session *s)
{
	s->pol.eod = true;
	if (!ask(s, "END-OF-MESSAGE", NULL))
		refuse_with(s, 451, R_POLICY_FAIL);
}

void sg_policy_txn_reset(sg_session *s)
{
	free(s->pol.prepend);
	s->pol.prepend = NULL;
}

void sg_policy_session_end(sg_session *s)
{
	sg_policy_cancel(s->pol.q);
	s->pol.q = NULL;
	s->pol.eod = s->pol.end_seen = false;
	held_free(s);
	sg_policy_txn_reset(s);
}

void sg_policy_data_begin(sg_session *s)
{
	if (!s->pol.prepend || !s->up.link)
		return;
	sg_link_data_header(s->up.link, s->pol.prepend, strlen(s->pol.prepend));
	sg_policy_txn_reset(s);
}
