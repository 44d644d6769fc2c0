/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/auth_cmd.c: the AUTH command (RFC 4954), apart from the other
 * commands as Postfix keeps smtpd_sasl_proto.c apart from smtpd.c.
 *
 * AUTH starts a SASL exchange (sasl/auth.h: Cyrus SASL on the thread
 * pool), relays its challenges as 334 lines and reads the client's
 * responses; a failure waits failure_delay before its 535 (a timer, never a
 * sleep) and counts toward max_failures and the per-address limit.  A
 * success is not answered until an upstream has taken the identity: the
 * link is opened here (sg_cmd_open_link) and the 235 goes out from its
 * ready callback, or 454 4.7.0 and the session stays unauthenticated.  The
 * login is logged in its identity log form; no credential ever is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/metrics.h"
#include "../upstream/identity.h"
#include "commands_int.h"
#include "reply.h"
#include "session_int.h"

/* The login being tried, in its log form (sg_identity_log: whole, and no
 * login can forge a key), freed when the exchange ends. */
static void set_tried(sg_session *s, const char *login)
{
	free(s->auth.tried);
	s->auth.tried = sg_identity_log_dup(login);
}

/* The login a response names (len octets at p), for set_tried. */
static void set_tried_n(sg_session *s, const char *p, size_t len)
{
	char *tmp = sg_xstrndup(p, len);
	set_tried(s, tmp);
	free(tmp);
}

static void log_auth(sg_session *s, const char *result, const char *reason)
{
	log_info(s->id, "event=auth result=%s%s%s client=%s mech=%s%s%s%s", result,
	         s->auth.tried && s->auth.tried[0] ? " user=" : "", s->auth.tried ? s->auth.tried : "",
	         s->client_ip, s->auth.mech,
	         sg_auth_cached(s->auth.sasl) ? " cached=yes" : "",
	         reason ? " reason=" : "", reason ? reason : "");
	sg_metrics_auth(s->auth.mech,
	                *result == 'o'   ? SG_MA_OK
	                : *result == 'f' ? SG_MA_FAIL
	                                 : SG_MA_TEMPFAIL,
	                uv_hrtime() - s->auth.t0);
}


/* sg_b64_decode needs inlen*3/4+3 */
#define SG_AUTH_DEC_MAX (SG_AUTH_LINE_MAX / 4 * 3 + 4)
/* longest challenge we pass on ("334 " + base64 in a 12288-octet line) */
#define SG_AUTH_CHAL_MAX 8192
/* How long a SASL call may keep the client waiting.  Cyrus' saslauthd and
 * LDAP clients have no timeout of their own, so a backend that hangs would
 * hold the client for good: past this it gets 454 4.7.0 (no failure
 * counted) and the call's answer, whenever it comes, is dropped. */
#define SG_SASL_WAIT_MS 10000

static void on_auth_result(void *arg, int result, const char *chal,
                           unsigned len);

static void auth_done_fail(sg_session *s)
{
	s->auth.await = false;
	if (s->auth.sasl)
		sg_auth_reset(s->auth.sasl);
	sg_session_set_str(&s->auth.tried, NULL, 0); /* logged already */
	sg_session_state(s, SG_ST_READY);
}

/* failure_delay is over: the 535 (RFC 4954 6), and maybe the 421. */
static void on_auth_delay(uv_timer_t *t)
{
	sg_session *s = t->data;
	if (s->closing)
		return;
	s->auth.failures++;
	log_auth(s, "fail", NULL);
	auth_done_fail(s);
	sg_reply_send(s, SG_R_AUTH_FAILED);
	if (s->cfg->max_failures && s->auth.failures >= s->cfg->max_failures) {
		sg_reply_send(s, SG_R_TOO_MANY_FAIL);
		sg_session_close(s, "too many auth failures");
		return;
	}
	sg_session_resume(s);
}

static void on_auth_link_ready(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing || sg_cmd_hold_sync(s, r))
		return;
	if (r->code >= 200 && r->code < 300) {
		s->auth.ok = true; /* s->auth.user was set at SG_AUTH_OK */
		set_tried(s, s->auth.user); /* for log_auth */
		sg_session_state(s, SG_ST_READY);
		log_auth(s, "ok", NULL);
		sg_session_set_str(&s->auth.tried, NULL, 0);
		/* The SASL context is not needed any more (RFC 4954 4: no second
		 * AUTH; STARTTLS starts over): an idle authenticated session keeps
		 * only what it uses. */
		sg_auth_free(s->auth.sasl);
		s->auth.sasl = NULL;
		sg_reply_send(s, SG_R_AUTH_OK);
		sg_session_resume(s);
		return;
	}
	/* No upstream took the identity: never relay without it. */
	s->up.link = NULL;
	sg_session_set_str(&s->auth.user, NULL, 0);
	log_auth(s, "tempfail", "upstream");
	auth_done_fail(s);
	if (r->code >= 400 && r->code < 500 && r->len)
		sg_reply_raw(s, r->code, r->text, r->len);
	else
		sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
	sg_session_resume(s);
}

static void on_auth_result(void *arg, int result, const char *chal,
                           unsigned len)
{
	sg_session *s = arg;
	if (s->closing)
		return;
	uv_timer_stop(&s->delay); /* SG_SASL_WAIT_MS */
	const char *who = s->auth.sasl ? sg_auth_authcid(s->auth.sasl) : NULL;
	if (who && *who)
		set_tried(s, who);
	switch (result) {
	case SG_AUTH_CONTINUE: {
		char b64[SG_AUTH_CHAL_MAX / 3 * 4 + 8];
		unsigned n = 0;
		if (len > SG_AUTH_CHAL_MAX ||
		    sg_b64_encode(chal, len, b64, sizeof b64, &n) < 0) {
			log_auth(s, "tempfail", "challenge too long");
			auth_done_fail(s);
			sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
			break;
		}
		b64[n] = '\0';
		s->auth.await = true;
		sg_reply_line(s, 334, false, b64); /* "334 " for an empty one */
		break;
	}
	case SG_AUTH_OK: {
		/* 235 only once an upstream has taken the identity */
		const char *u = sg_auth_user(s->auth.sasl);
		if (!u)
			u = sg_auth_authcid(s->auth.sasl);
		if (!u)
			u = s->auth.tried ? s->auth.tried : "";
		/* the whole login or nothing (sg_session_set_str would cut) */
		if (strlen(u) > SG_USER_MAX) {
			log_auth(s, "tempfail", "login too long");
			auth_done_fail(s);
			sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
			break;
		}
		sg_session_set_str(&s->auth.user, u, SG_USER_MAX);
		sg_cmd_open_link(s, true, on_auth_link_ready);
		return;
	}
	case SG_AUTH_FAIL:
	case SG_AUTH_AUTHZ:
		/* Count the failure against the address now, not after the
		 * tarpit: guesses sent in parallel over many connections must
		 * see it (ip_failure_limit). */
		sg_ipfail_record(s->cfg, s->client_ip);
		/* tarpit before the 535: uv_timer, never a sleep */
		s->pending = SG_PEND_AUTH_DELAY;
		s->delay.data = s;
		uv_timer_start(&s->delay, on_auth_delay, s->cfg->failure_delay_ms, 0);
		return;
	case SG_AUTH_NOMECH:
		auth_done_fail(s);
		sg_reply_send(s, SG_R_BAD_MECH);
		break;
	case SG_AUTH_BADPROT:
		log_auth(s, "fail", "malformed response");
		auth_done_fail(s);
		sg_reply_send(s, SG_R_BAD_B64);
		break;
	default: /* SG_AUTH_TEMPFAIL: the backend cannot answer, no failure */
		log_auth(s, "tempfail", NULL);
		auth_done_fail(s);
		sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
		break;
	}
	sg_session_resume(s);
}

/* The backend has not answered within SG_SASL_WAIT_MS.  The SASL context
 * goes with its call (sg_auth_free while busy: freed when the call ends,
 * without calling back); a new AUTH gets a new one. */
static void on_sasl_wait(uv_timer_t *t)
{
	sg_session *s = t->data;
	if (s->closing || s->pending != SG_PEND_SASL)
		return;
	sg_auth_free(s->auth.sasl);
	s->auth.sasl = NULL;
	log_auth(s, "tempfail", "backend_timeout");
	auth_done_fail(s);
	sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
	sg_session_resume(s);
}

/* After sg_auth_start/step: the call's answer is awaited for at most
 * SG_SASL_WAIT_MS (the delay timer is free: failure_delay starts only with
 * the answer).  A call that could not even be queued gets 454 now (its
 * callback will never come).  The credential cache's answer (r = 1) is
 * taken as the call's would be: the same link open and 235, the same
 * failure count, failure_delay and 535. */
static void sasl_called(sg_session *s, int r)
{
	if (r > 0) {
		on_auth_result(s, sg_auth_answer(s->auth.sasl), NULL, 0);
		return;
	}
	if (r == 0) {
		s->delay.data = s;
		uv_timer_start(&s->delay, on_sasl_wait, SG_SASL_WAIT_MS, 0);
		return;
	}
	s->pending = SG_PEND_NONE;
	log_auth(s, "tempfail", "cannot start");
	auth_done_fail(s);
	sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
}

/* The login a client tries, for the log line of a failure (sasl/ only
 * knows it on success).  PLAIN (RFC 4616): authzid NUL authcid NUL passwd;
 * LOGIN: the first response is the user name.  The password is never
 * looked at beyond finding the separators. */
static void note_login(sg_session *s, const char *dec, unsigned n)
{
	unsigned step = s->auth.steps++;
	if (strcmp(s->auth.mech, "PLAIN") == 0) {
		const char *a = memchr(dec, '\0', n);
		if (!a)
			return;
		a++;
		const char *b = memchr(a, '\0', n - (unsigned)(a - dec));
		if (!b || b == a)
			return;
		set_tried_n(s, a, (size_t)(b - a));
	} else if (strcmp(s->auth.mech, "LOGIN") == 0 && step == 0 && n > 0) {
		/* up to a NUL, as Cyrus reads it */
		set_tried_n(s, dec, strnlen(dec, n));
	} else if (step == 0 && n > 0 &&
	           (strcmp(s->auth.mech, "CRAM-MD5") == 0 ||
	            strncmp(s->auth.mech, "SCRAM-", 6) == 0)) {
		/* CRAM-MD5: "user hexdigest" (RFC 2195); SCRAM: "gs2-header
		 * n=user,r=nonce" (RFC 5802 7): the login, never a secret */
		const char *u = dec, *end = dec + n;
		if (s->auth.mech[0] == 'S') {
			const char *c1 = memchr(dec, ',', n);
			const char *c2 = c1 ? memchr(c1 + 1, ',', (size_t)(end - c1 - 1)) : NULL;
			if (!c2 || end - c2 < 3 || c2[1] != 'n' || c2[2] != '=')
				return;
			u = c2 + 3;
		}
		const char *stop = u;
		while (stop < end && *stop != (s->auth.mech[0] == 'S' ? ',' : ' '))
			stop++;
		if (stop > u)
			set_tried_n(s, u, strnlen(u, (size_t)(stop - u)));
	}
}

/* Decode a client response; "=" is an empty one (RFC 4954 4). */
static int decode_response(const char *in, size_t len, char *out,
                           unsigned *outlen)
{
	*outlen = 0;
	if (len == 1 && in[0] == '=')
		return 0;
	return sg_b64_decode(in, len, out, SG_AUTH_DEC_MAX, outlen);
}

void sg_cmd_auth_response(sg_session *s, char *line, size_t len)
{
	s->auth.await = false;
	/* RFC 4954 4: "*" cancels the exchange */
	if (len == 1 && line[0] == '*') {
		log_auth(s, "cancelled", NULL);
		auth_done_fail(s);
		sg_reply_send(s, SG_R_AUTH_CANCEL);
		return;
	}
	char dec[SG_AUTH_DEC_MAX];
	unsigned n;
	if (decode_response(line, len, dec, &n) < 0) {
		auth_done_fail(s);
		sg_reply_send(s, SG_R_BAD_B64);
		return;
	}
	note_login(s, dec, n);
	/* The password often comes in this step (LOGIN): an address that went
	 * over its limit while this exchange was open gets no further guess. */
	if (sg_ipfail_over(s->cfg, s->client_ip)) {
		log_auth(s, "tempfail", "address over ip_failure_limit");
		auth_done_fail(s);
		sg_reply_send(s, SG_R_AUTH_IP_LIMIT);
		return;
	}
	s->pending = SG_PEND_SASL;
	int r = sg_auth_step(s->auth.sasl, s->loop, dec, n, on_auth_result, s);
	explicit_bzero(dec, sizeof dec);
	sasl_called(s, r);
}

void sg_cmd_auth(sg_session *s, char *arg)
{
	/* RFC 4954 4: once per session, not inside a transaction */
	if (s->auth.ok) {
		sg_reply_send(s, SG_R_ALREADY_AUTH);
		return;
	}
	if (s->state == SG_ST_MAIL || s->state == SG_ST_RCPT) {
		sg_reply_send(s, SG_R_AUTH_IN_TXN);
		return;
	}
	/* RFC 4954 6: 538 when the mechanism needs an encrypted session */
	if (!sg_cmd_auth_allowed(s)) {
		sg_reply_send(s, SG_R_ENCRYPT_NEEDED);
		return;
	}
	char *ir = strchr(arg, ' ');
	if (ir) {
		*ir++ = '\0';
		while (*ir == ' ')
			ir++;
	}
	if (!*arg) {
		sg_reply_send(s, SG_R_SYNTAX);
		return;
	}
	/* checked before the name reaches Cyrus (CVE-2019-19906 class) */
	if (strlen(arg) >= sizeof s->auth.mech || !sg_auth_mech_valid(arg)) {
		snprintf(s->auth.mech, sizeof s->auth.mech, "invalid");
		sg_reply_send(s, SG_R_BAD_MECH);
		return;
	}
	snprintf(s->auth.mech, sizeof s->auth.mech, "%s", arg);
	s->auth.t0 = uv_hrtime();
	sg_session_set_str(&s->auth.tried, NULL, 0);
	sg_auth *a = sg_session_auth(s);
	if (!a) {
		log_auth(s, "tempfail", "no SASL context");
		sg_reply_send(s, SG_R_AUTH_TEMPFAIL);
		return;
	}
	if (!sg_auth_mech_offered(a, s->auth.mech)) {
		sg_reply_send(s, SG_R_BAD_MECH);
		return;
	}
	if (sg_ipfail_over(s->cfg, s->client_ip)) {
		log_auth(s, "tempfail", "address over ip_failure_limit");
		sg_reply_send(s, SG_R_AUTH_IP_LIMIT);
		return;
	}
	char dec[SG_AUTH_DEC_MAX];
	unsigned n = 0;
	bool has_ir = ir && *ir;
	if (has_ir && decode_response(ir, strlen(ir), dec, &n) < 0) {
		sg_reply_send(s, SG_R_BAD_B64);
		return;
	}
	/* RFC 4954 4: "=" is an empty initial response.  Cyrus's PLAIN and
	 * LOGIN read an empty one as a malformed message, not as "nothing
	 * yet": start without one, so the server's (empty) challenge, 334,
	 * comes and the exchange goes on. */
	if (has_ir && n == 0)
		has_ir = false;
	s->auth.steps = 0;
	if (has_ir)
		note_login(s, dec, n);
	sg_session_state(s, SG_ST_AUTH_PENDING);
	s->pending = SG_PEND_SASL;
	int r = sg_auth_start(a, s->loop, s->auth.mech, dec, n, has_ir, on_auth_result,
	                      s);
	explicit_bzero(dec, sizeof dec);
	sasl_called(s, r);
}
