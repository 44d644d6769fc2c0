/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/commands.c: the client-side SMTP commands.
 *
 * ONE table maps each verb to its handler, the states it is allowed in (and
 * the reply when it is not) and policy flags, in the manner of Postfix
 * smtpd's command table.  Handlers are ladders of guard clauses: each guard
 * gives one reply (reply.c) and returns; the action comes last.
 *
 * Everything that concerns a message (MAIL, RCPT, DATA, BDAT's LAST chunk,
 * RSET once linked) is answered with the upstream's reply
 * (upstream/link.h): saslgate never gives a 2xx for something the MTA has
 * not accepted; a BDAT chunk before the LAST gets a 250 of ours, which
 * accepts no mail (RFC 3030 2).
 *
 * Pipelining (RFC 2920): each line is decided when it is read.  Relayed
 * lines go into the reply queue (reply_queue.c) and are answered strictly
 * in order as the upstream's replies come in (sg_cmd_settle).  While
 * replies are due, the only lines decided are RCPT and DATA that carry on
 * the transaction in flight; their guards see the state it will have if
 * the commands before them succeed (txn_state, txn_rcpts), and any other
 * line, or a guard that would answer it here, waits until the queue is
 * empty, when it sees exactly the state an unpipelined session would.  At
 * its turn a relayed command's guard is checked again on the state the
 * replies before it left (turn_guard): a RCPT behind a MAIL the upstream
 * refused gets the 503 it would have had unpipelined, and never a 2xx
 * the upstream gave out of step (the link is then dropped, fail closed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../upstream/identity.h"
#include "commands_int.h"
#include "reply.h"
#include "reply_queue.h"
#include "session_int.h"

enum verb {
	V_EHLO, V_HELO, V_STARTTLS, V_AUTH, V_MAIL, V_RCPT, V_DATA, V_RSET,
	V_NOOP, V_VRFY, V_QUIT, V_HELP, V_BDAT,
};

#define ST(x) (1u << (x))
#define ST_SESSION (ST(SG_ST_HELO) | ST(SG_ST_READY) | ST(SG_ST_MAIL) | ST(SG_ST_RCPT))
#define ST_TXN (ST(SG_ST_MAIL) | ST(SG_ST_RCPT))

/* RFC 2920 3.1: EHLO, DATA, QUIT, NOOP, VRFY (and STARTTLS, AUTH) can only
 * be last in a pipelined group: flush the group's replies right after. */
#define F_GROUP_END 0x1
/* Not followed by the client until it has our reply: log its verb only
 * (AUTH carries credentials). */
#define F_SECRET 0x2
/* May be decided while replies to relayed commands are due (see the head
 * of the file). */
#define F_AHEAD 0x4

typedef struct sg_cmd {
	const char *verb;
	enum verb id;
	void (*fn)(sg_session *s, char *arg);
	unsigned states;     /* ST() mask where the verb is allowed */
	enum sg_rep bad_seq; /* reply elsewhere */
	unsigned flags;
} sg_cmd;

static void cmd_ehlo(sg_session *s, char *arg);
static void cmd_helo(sg_session *s, char *arg);
static void cmd_starttls(sg_session *s, char *arg);
static void cmd_mail(sg_session *s, char *arg);
static void cmd_rcpt(sg_session *s, char *arg);
static void cmd_data(sg_session *s, char *arg);
static void cmd_rset(sg_session *s, char *arg);
static void cmd_noop(sg_session *s, char *arg);
static void cmd_vrfy(sg_session *s, char *arg);
static void cmd_quit(sg_session *s, char *arg);
static void cmd_help(sg_session *s, char *arg);
static void cmd_bdat(sg_session *s, char *arg);

static const sg_cmd cmd_table[] = {
	{"EHLO", V_EHLO, cmd_ehlo, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"HELO", V_HELO, cmd_helo, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"STARTTLS", V_STARTTLS, cmd_starttls, ST(SG_ST_HELO) | ST(SG_ST_READY),
	 SG_R_BAD_SEQ, F_GROUP_END},
	{"AUTH", V_AUTH, sg_cmd_auth, ST(SG_ST_READY) | ST_TXN, SG_R_NEED_HELO,
	 F_GROUP_END | F_SECRET},
	{"MAIL", V_MAIL, cmd_mail, ST(SG_ST_READY) | ST_TXN, SG_R_NEED_HELO, 0},
	{"RCPT", V_RCPT, cmd_rcpt, ST_TXN, SG_R_NEED_MAIL, F_AHEAD},
	{"DATA", V_DATA, cmd_data, ST_TXN, SG_R_NEED_MAIL, F_GROUP_END | F_AHEAD},
	{"RSET", V_RSET, cmd_rset, ST_SESSION, SG_R_BAD_SEQ, 0},
	{"NOOP", V_NOOP, cmd_noop, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"VRFY", V_VRFY, cmd_vrfy, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"QUIT", V_QUIT, cmd_quit, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"HELP", V_HELP, cmd_help, ST_SESSION, SG_R_BAD_SEQ, 0},
	/* every state that reads lines: a refused BDAT's octets are read too */
	{"BDAT", V_BDAT, cmd_bdat, ST_SESSION, SG_R_BAD_SEQ, 0},
};

/* ------------------------------------------------------------- helpers */

void sg_cmd_txn_reset(sg_session *s)
{
	sg_session_set_str(&s->txn.mail_from, NULL, 0);
	s->txn.rcpts = 0;
	s->txn.msg_size = 0;
	sg_session_bdat_reset(s);
	sg_policy_txn_reset(s);
	if (s->state == SG_ST_MAIL || s->state == SG_ST_RCPT ||
	    s->state == SG_ST_DATA)
		sg_session_state(s, SG_ST_READY);
}

bool sg_cmd_auth_allowed(const sg_session *s)
{
	return s->tls.encrypted || !s->lc->require_tls_for_auth;
}

/* RFC 5321 2.3.8 / 4.1.1: a command line is printable text; a control
 * octet (bare CR, TAB, NUL, ...) in a line relayed upstream could end or
 * change the command there.  Octets >= 0x80 stay (RFC 6531 addresses). */
static bool has_control(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c < 0x20 || c == 0x7f)
			return true;
	}
	return false;
}

/* "KEY" or "KEY=value" (case-insensitive key). */
static bool param_is(const char *tok, const char *key)
{
	size_t n = strlen(key);
	return strncasecmp(tok, key, n) == 0 && (tok[n] == '\0' || tok[n] == '=');
}

/* The path at *pp into out (smtp_parse.h: sg_path_parse).  Without
 * [server] strict_envelope, "MAIL FROM:user@example.org" is taken as
 * Postfix takes it (strict_rfc821_envelopes = no): printers, scanners and
 * old scripts send it so, and it goes upstream as "<user@example.org>".
 * Returns SG_R_COUNT when fine, else the reply: 501 for a missing or
 * unterminated path (or a bare one when strict), 553 5.1.3 for a bad
 * address. */
static enum sg_rep parse_path(const sg_session *s, char **pp, char *out,
                              bool allow_empty)
{
	unsigned flags = allow_empty ? SG_PATH_NULL_OK : 0;
	if (s->cfg->strict_envelope)
		flags |= SG_PATH_STRICT;
	switch (sg_path_parse(pp, out, SG_PATH_MAX, flags)) {
	case SG_PATH_OK:
		return SG_R_COUNT;
	case SG_PATH_BAD:
		return SG_R_BAD_ADDR;
	default:
		return SG_R_SYNTAX;
	}
}

/* ---------------------------------------------------------- opening */

/* Hold a reply that came back before sg_link_open returned. */
bool sg_cmd_hold_sync(sg_session *s, const sg_reply *r)
{
	if (!s->up.opening)
		return false;
	s->up.sync_code = r->code;
	s->up.sync_text = sg_xmalloc(r->len);
	s->up.sync_len = r->len;
	memcpy(s->up.sync_text, r->text, r->len);
	return true;
}

void sg_cmd_open_link(sg_session *s, bool with_login, sg_link_cb ready)
{
	/* the client's name is still being looked up: this call comes again
	 * once it is in (or not in time) */
	if (sg_session_name_wait(s, with_login, ready))
		return;
	sg_identity id;
	sg_session_fill_identity(s, &id, with_login);
	s->pending = SG_PEND_LINK_OPEN;
	s->up.opening = true;
	s->up.sync_code = 0;
	sg_link *l = sg_link_open(s->loop, s->cfg, &id, ready, s);
	s->up.opening = false;
	if (!s->up.sync_code) {
		s->up.link = l;
		return;
	}
	int code = s->up.sync_code;
	s->up.link = code >= 200 && code < 300 ? l : NULL;
	sg_reply r = {code, s->up.sync_text, s->up.sync_len};
	s->up.sync_code = 0;
	ready(s, &r);
	free(s->up.sync_text);
	s->up.sync_text = NULL;
}

/* ------------------------------------------------ relaying and settling */

static const sg_cmd *cmd_by_verb(enum verb v)
{
	for (size_t i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
		if (cmd_table[i].id == v)
			return &cmd_table[i];
	return NULL;
}

/* The transaction state the next line is decided on: the session's, or,
 * while replies are due, the one they leave if they are all 2xx. */
static enum sg_state txn_state(const sg_session *s)
{
	switch (sg_rq_last(s)) {
	case V_MAIL:
		return SG_ST_MAIL;
	case V_RCPT:
		return SG_ST_RCPT;
	default:
		return s->state;
	}
}

/* Recipients accepted, and in flight (assumed accepted). */
static unsigned txn_rcpts(const sg_session *s)
{
	return s->txn.rcpts + sg_rq_count(s, V_RCPT);
}

/* A guard's reply.  While replies are due it is not given: the line waits
 * (sg_cmd_line returns false) and is decided again once they are in. */
static void refuse(sg_session *s, enum sg_rep r)
{
	if (sg_rq_busy(s))
		s->up.held = true;
	else
		sg_reply_send(s, r);
}

/* RFC 5321 3.3: DATA needs a transaction with a recipient. */
static enum sg_rep data_guard(enum sg_state st, unsigned rcpts)
{
	return st == SG_ST_RCPT && rcpts > 0 ? SG_R_COUNT : SG_R_NEED_RCPT;
}

/* A relayed command's guard on the state at its turn. */
static enum sg_rep turn_guard(const sg_session *s, enum verb v)
{
	const sg_cmd *c = cmd_by_verb(v);
	if (c && !(c->states & ST(s->state)))
		return c->bad_seq;
	if (v == V_DATA)
		return data_guard(s->state, s->txn.rcpts);
	return SG_R_COUNT;
}

static void close_link(sg_session *s)
{
	if (s->up.link)
		sg_link_close(s->up.link);
	s->up.link = NULL;
	sg_rq_abandon(s); /* no reply of the link's will come */
}

static void relay(sg_session *s, enum verb v, const char *line, size_t len)
{
	sg_rq_push(s, v);
	if (v == V_MAIL)
		sg_link_mail(s->up.link, line, len, s->txn.mail_auth, sg_rq_on_reply, s);
	else
		sg_link_command(s->up.link, line, len, sg_rq_on_reply, s);
}

void sg_cmd_policy_pass(sg_session *s, int verb, const char *line, size_t len)
{
	relay(s, (enum verb)verb, line, len);
}

static void link_lost(sg_session *s)
{
	if (!s->up.link || sg_link_alive(s->up.link))
		return;
	log_info(s->id, "upstream %s lost", sg_link_peer(s->up.link));
	sg_cmd_txn_reset(s);
	close_link(s);
}

void sg_cmd_settle(sg_session *s, int verb, const sg_reply *r)
{
	enum verb v = (enum verb)verb;
	bool ok = r && r->code >= 200 && r->code < 300;
	enum sg_rep out = turn_guard(s, v);
	if (out != SG_R_COUNT) {
		/* decided on replies that did not come: the reply of the state
		 * they left instead.  The upstream should have refused it too;
		 * if it accepted, it holds a transaction the client was not
		 * told of, which goes with the link. */
		sg_reply_send(s, out);
		if (r && r->code >= 200 && r->code < 400) {
			log_warn(s->id, "event=upstream_mismatch reply=%d "
			         "reason=\"accepted a command refused to the client\" "
			         "action=\"transaction dropped\"", r->code);
			sg_cmd_txn_reset(s);
			close_link(s);
		}
		return;
	}
	if (!r) {
		sg_reply_send(s, SG_R_UPSTREAM_DOWN);
		return;
	}
	switch (v) {
	case V_MAIL:
		if (ok)
			sg_session_state(s, SG_ST_MAIL);
		else
			sg_session_set_str(&s->txn.mail_from, NULL, 0);
		break;
	case V_RCPT:
		if (ok) {
			s->txn.rcpts++;
			sg_session_state(s, SG_ST_RCPT);
		}
		break;
	case V_DATA:
		if (r->code == 354 && sg_link_alive(s->up.link)) {
			sg_reply_raw(s, r->code, r->text, r->len);
			sg_session_data_begin(s);
			return;
		}
		break;
	case V_RSET:
		if (ok) {
			sg_cmd_txn_reset(s);
		} else if (s->bdat.open) {
			/* link.h: a command gives the chunked message up at the
			 * link, whatever the upstream answers.  The transaction
			 * a refused RSET leaves has no message any more: its
			 * later chunks are dropped and answered 503 until the
			 * LAST (or an RSET taken) ends it, never fed to a link
			 * that would swallow them (and the LAST's reply with
			 * them: the client would wait for ever). */
			char text[512];
			size_t n = sg_reply_text(s, SG_R_BAD_SEQ, text, sizeof text);
			sg_session_bdat_fail(s, text, n);
		}
		break;
	default:
		break;
	}
	sg_reply_raw(s, r->code, r->text, r->len);
	link_lost(s);
}

/* MAIL on a session without a (live) link: open one, then send the held
 * line.  require_auth = no listeners get here unauthenticated (no login). */
static void on_mail_link_ready(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing || sg_cmd_hold_sync(s, r))
		return;
	if (r->code < 200 || r->code >= 300) {
		s->up.link = NULL;
		sg_session_set_str(&s->txn.mail_from, NULL, 0);
		free(s->up.pend_line);
		s->up.pend_line = NULL;
		log_info(s->id, "MAIL: no upstream took the session (%d)", r->code);
		if (r->code >= 400 && r->code < 500 && r->len)
			sg_reply_raw(s, r->code, r->text, r->len);
		else
			sg_reply_send(s, SG_R_UPSTREAM_DOWN);
		sg_session_resume(s);
		return;
	}
	char *line = s->up.pend_line;
	s->up.pend_line = NULL;
	if (!s->up.link || !line) { /* cannot happen: open_link set the link */
		free(line);
		sg_reply_send(s, SG_R_UPSTREAM_DOWN);
		sg_session_resume(s);
		return;
	}
	relay(s, V_MAIL, line, s->up.pend_len);
	free(line);
	sg_session_process(s); /* the RCPTs behind it can go now */
}

/* ---------------------------------------------------------------- EHLO */

static enum sg_rep check_helo(sg_session *s, const char *arg)
{
	if (!*arg || strlen(arg) > SG_HELO_MAX)
		return SG_R_HELO_SYNTAX;
	for (const char *p = arg; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			return SG_R_HELO_SYNTAX;
	return SG_R_COUNT;
}

/* RFC 5321 4.1.4: EHLO/HELO inside a transaction acts as RSET. */
static void drop_reply(void *arg, const sg_reply *r) { (void)arg, (void)r; }

static bool greet(sg_session *s, const char *arg, bool esmtp)
{
	if (s->state == SG_ST_MAIL || s->state == SG_ST_RCPT) {
		if (s->up.link)
			sg_link_command(s->up.link, "RSET\r\n", 6, drop_reply, s);
		sg_cmd_txn_reset(s);
	}
	sg_session_set_str(&s->helo, arg, SG_HELO_MAX);
	s->esmtp = esmtp;
	s->bdat.offered = false; /* until this EHLO's reply offers it */
	sg_session_state(s, SG_ST_READY);
	return true;
}

static void cmd_helo(sg_session *s, char *arg)
{
	enum sg_rep bad = check_helo(s, arg);
	if (bad != SG_R_COUNT) {
		sg_reply_send(s, bad);
		return;
	}
	if (greet(s, arg, false))
		sg_reply_send(s, SG_R_HELO);
}

#define SG_EHLO_LINES 12
#define SG_EHLO_LINE_MAX 512

static void cmd_ehlo(sg_session *s, char *arg)
{
	enum sg_rep bad = check_helo(s, arg);
	if (bad != SG_R_COUNT) {
		sg_reply_send(s, bad);
		return;
	}
	if (!greet(s, arg, true))
		return;

	sg_upstream_caps caps = sg_upstream_caps_get();
	char lines[SG_EHLO_LINES][SG_EHLO_LINE_MAX];
	int n = 0;
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "%s", s->cfg->hostname);
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "PIPELINING");
	/* RFC 1870: never more than the upstream takes */
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "SIZE %llu",
	         (unsigned long long)sg_size_limit(s->cfg->max_message_size,
	                                           caps.size));
	/* the contract promises 8BITMIME; MAIL refuses BODY=8BITMIME only when
	 * a probed upstream lacks it */
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "8BITMIME");
	/* offered only when the upstream can take them (EHLO honesty) */
	if (caps.smtputf8)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "SMTPUTF8");
	if (caps.dsn)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "DSN");
	/* RFC 3030: relayed as BDAT, or as DATA by a link whose upstream
	 * lacks it after all (a failover server) */
	/* a BDAT message has no DATA to check, nor a header to PREPEND to */
	bool chunking = caps.chunking && s->cfg->npolicy_servers == 0;
	if (chunking)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "CHUNKING");
	s->bdat.offered = chunking;
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "ENHANCEDSTATUSCODES");
	if (s->lc->tls == SG_TLS_STARTTLS && !s->tls.eng && s->tls.ctx)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "STARTTLS");
	if (sg_cmd_auth_allowed(s) && !s->auth.ok) {
		sg_auth *a = sg_session_auth(s);
		const char *mechs = a ? sg_auth_mechs(a) : "";
		if (mechs && *mechs)
			snprintf(lines[n++], SG_EHLO_LINE_MAX, "AUTH %s", mechs);
	}
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "HELP");
	for (int i = 0; i < n; i++)
		sg_reply_line(s, 250, i + 1 < n, lines[i]);
}

/* ------------------------------------------------------------ STARTTLS */

static void cmd_starttls(sg_session *s, char *arg)
{
	/* RFC 3207 4: no parameters */
	if (*arg) {
		sg_reply_send(s, SG_R_NO_ARGS);
		return;
	}
	if (s->tls.eng) {
		sg_reply_send(s, SG_R_TLS_ACTIVE);
		return;
	}
	if (s->lc->tls != SG_TLS_STARTTLS || !s->tls.ctx) {
		sg_reply_send(s, SG_R_TLS_UNAVAIL);
		return;
	}
	sg_reply_send(s, SG_R_STARTTLS);
	sg_session_starttls(s);
}

/* ---------------------------------------------------------- MAIL, RCPT */

#define SG_RELAY_LINE_MAX (SG_LINE_MAX + 16)

typedef enum sg_rep (*param_check)(sg_session *s, const char *tok,
                                   const sg_upstream_caps *caps);

/* Check each space-separated parameter (on a copy: the line is sent on). */
static enum sg_rep check_params(sg_session *s, const char *params,
                                param_check fn)
{
	char copy[SG_LINE_MAX];
	snprintf(copy, sizeof copy, "%s", params);
	sg_upstream_caps caps = sg_upstream_caps_get();
	char *save = NULL;
	for (char *tok = strtok_r(copy, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save)) {
		enum sg_rep bad = fn(s, tok, &caps);
		if (bad != SG_R_COUNT)
			return bad;
	}
	return SG_R_COUNT;
}

static enum sg_rep mail_param(sg_session *s, const char *tok,
                              const sg_upstream_caps *caps)
{
	if (param_is(tok, "SIZE")) { /* RFC 1870 */
		const char *v = tok[4] == '=' ? tok + 5 : "";
		char *end;
		if (*v < '0' || *v > '9')
			return SG_R_SYNTAX;
		unsigned long long sz = strtoull(v, &end, 10);
		if (*end)
			return SG_R_SYNTAX;
		/* the limit EHLO advertised */
		uint64_t max = sg_size_limit(s->cfg->max_message_size, caps->size);
		if (max && sz > max)
			return SG_R_TOO_BIG;
		return SG_R_COUNT;
	}
	if (param_is(tok, "BODY")) { /* RFC 6152 */
		if (strcasecmp(tok, "BODY=7BIT") == 0)
			return SG_R_COUNT;
		if (strcasecmp(tok, "BODY=8BITMIME") == 0 &&
		    (!caps->probed || caps->eightbitmime))
			return SG_R_COUNT;
		return SG_R_BAD_PARAM;
	}
	if (strcasecmp(tok, "SMTPUTF8") == 0) /* RFC 6531 */
		return caps->smtputf8 ? SG_R_COUNT : SG_R_BAD_PARAM;
	if (param_is(tok, "RET") || param_is(tok, "ENVID")) /* RFC 3461 */
		return caps->dsn ? SG_R_COUNT : SG_R_BAD_PARAM;
	if (param_is(tok, "AUTH")) /* RFC 4954 5: replaced by ours */
		return SG_R_COUNT;
	return SG_R_BAD_PARAM;
}

/* The MAIL parameters to relay: all but AUTH=, which is never the
 * client's to give (RFC 4954 5: the upstream would record it as the
 * submitter); sg_link_mail adds saslgate's own when the client sent one.
 * *had_auth tells whether it did. */
static void mail_params_relayed(const char *params, char *out, size_t cap,
                                  bool *had_auth)
{
	char copy[SG_LINE_MAX];
	snprintf(copy, sizeof copy, "%s", params);
	size_t o = 0;
	*had_auth = false;
	out[0] = '\0';
	char *save = NULL;
	for (char *tok = strtok_r(copy, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save)) {
		if (param_is(tok, "AUTH")) {
			*had_auth = true;
			continue;
		}
		int n = snprintf(out + o, cap - o, " %s", tok);
		if (n < 0 || (size_t)n >= cap - o)
			break; /* cannot happen: out is as long as the line */
		o += (size_t)n;
	}
}

static enum sg_rep rcpt_param(sg_session *s, const char *tok,
                              const sg_upstream_caps *caps)
{
	if (param_is(tok, "NOTIFY") || param_is(tok, "ORCPT")) /* RFC 3461 */
		return caps->dsn ? SG_R_COUNT : SG_R_BAD_PARAM;
	return SG_R_BAD_PARAM;
}

static void cmd_mail(sg_session *s, char *arg)
{
	/* MAIL before AUTH where it is required: 530 5.7.0 */
	if (s->lc->require_auth && !s->auth.ok) {
		sg_reply_send(s, SG_R_AUTH_REQUIRED);
		return;
	}
	/* RFC 5321 4.1.4: no MAIL inside a transaction */
	if (s->state != SG_ST_READY) {
		sg_reply_send(s, SG_R_NESTED_MAIL);
		return;
	}
	if (strncasecmp(arg, "FROM:", 5) != 0) {
		sg_reply_send(s, SG_R_SYNTAX);
		return;
	}
	char *p = arg + 5;
	while (*p == ' ') /* tolerated, as Postfix does */
		p++;
	char addr[SG_PATH_MAX + 1];
	enum sg_rep bad = parse_path(s, &p, addr, true);
	if (bad == SG_R_COUNT)
		bad = check_params(s, p, mail_param);
	if (bad != SG_R_COUNT) {
		sg_reply_send(s, bad);
		return;
	}
	if (s->auth.ok && !sg_sender_allowed(s->cfg, s->auth.user, addr)) {
		char from[SG_PATH_MAX + 1], user[SG_USER_LOG_MAX];
		sg_log_safe(from, sizeof from, addr);
		sg_identity_log(user, sizeof user, s->auth.user);
		log_info(s->id, "MAIL: from=<%s> not allowed for user=%s", from,
		         user);
		sg_reply_send(s, SG_R_NOT_OWNER);
		return;
	}
	char params[SG_LINE_MAX];
	bool had_auth;
	mail_params_relayed(p, params, sizeof params, &had_auth);
	char line[SG_RELAY_LINE_MAX];
	int n = snprintf(line, sizeof line, "MAIL FROM:<%s>%s\r\n", addr, params);
	if (n < 0 || (size_t)n >= sizeof line) {
		sg_reply_send(s, SG_R_SYNTAX);
		return;
	}
	/* longer than the upstream reads whole: it would cut a parameter */
	if ((size_t)n > SG_UPSTREAM_LINE_MAX) {
		sg_reply_send(s, SG_R_LINE_TOO_LONG);
		return;
	}
	s->txn.mail_auth = had_auth;
	/* held for the message's log line, until the transaction ends */
	sg_session_set_str(&s->txn.mail_from, addr, SG_PATH_MAX);
	if (s->up.link && sg_link_alive(s->up.link)) {
		relay(s, V_MAIL, line, (size_t)n);
		return;
	}
	/* First MAIL of an unauthenticated session (require_auth = no), or the
	 * upstream was lost since: (re)open with the same identity. */
	close_link(s);
	free(s->up.pend_line);
	s->up.pend_line = sg_xmalloc((size_t)n);
	memcpy(s->up.pend_line, line, (size_t)n);
	s->up.pend_len = (size_t)n;
	sg_cmd_open_link(s, s->auth.ok, on_mail_link_ready);
}

/* "TO:<path> params" (or a bare path, parse_path) checked and made into
 * the line relayed upstream (out, *n octets), the path into addr
 * (SG_PATH_MAX + 1 octets).  SG_R_COUNT when fine, else
 * the reply. */
static enum sg_rep rcpt_line(sg_session *s, char *arg, char *out, size_t cap,
                             int *n, char *addr)
{
	if (strncasecmp(arg, "TO:", 3) != 0)
		return SG_R_SYNTAX;
	char *p = arg + 3;
	while (*p == ' ')
		p++;
	enum sg_rep bad = parse_path(s, &p, addr, false);
	if (bad == SG_R_COUNT)
		bad = check_params(s, p, rcpt_param);
	if (bad != SG_R_COUNT)
		return bad;
	*n = snprintf(out, cap, "RCPT TO:<%s>%s\r\n", addr, p);
	if (*n < 0 || (size_t)*n >= cap)
		return SG_R_SYNTAX; /* cannot happen: the argument is shorter */
	/* longer than the upstream reads whole: it would cut a parameter */
	if ((size_t)*n > SG_UPSTREAM_LINE_MAX)
		return SG_R_LINE_TOO_LONG;
	return SG_R_COUNT;
}

static void cmd_rcpt(sg_session *s, char *arg)
{
	char line[SG_RELAY_LINE_MAX], addr[SG_PATH_MAX + 1];
	int n = 0;
	enum sg_rep bad = rcpt_line(s, arg, line, sizeof line, &n, addr);
	if (bad != SG_R_COUNT) {
		refuse(s, bad);
		return;
	}
	/* RFC 5321 4.5.3.1.8: 452 when the recipient buffer is full */
	if (s->cfg->max_recipients && txn_rcpts(s) >= s->cfg->max_recipients) {
		refuse(s, SG_R_TOO_MANY_RCPT);
		return;
	}
	if (!s->up.link) { /* lost with the transaction: link_lost() reset it */
		refuse(s, SG_R_NEED_MAIL);
		return;
	}
	if (sg_policy_holds(s, SG_POLICY_AT_RCPT, V_RCPT, addr, line, (size_t)n))
		return;
	relay(s, V_RCPT, line, (size_t)n);
}

static void cmd_data(sg_session *s, char *arg)
{
	if (*arg) {
		refuse(s, SG_R_NO_ARGS);
		return;
	}
	if (data_guard(txn_state(s), txn_rcpts(s)) != SG_R_COUNT || !s->up.link) {
		refuse(s, SG_R_NEED_RCPT);
		return;
	}
	if (sg_policy_holds(s, SG_POLICY_AT_DATA, V_DATA, NULL, "DATA\r\n", 6))
		return;
	relay(s, V_DATA, "DATA\r\n", 6);
}

static void cmd_rset(sg_session *s, char *arg)
{
	if (*arg) {
		sg_reply_send(s, SG_R_NO_ARGS);
		return;
	}
	if (s->up.link && sg_link_alive(s->up.link)) {
		relay(s, V_RSET, "RSET\r\n", 6);
		return;
	}
	sg_cmd_txn_reset(s);
	sg_reply_send(s, SG_R_OK);
}

/* ---------------------------------------------------------------- BDAT */

/* "chunk-size [LAST]" (RFC 3030 2).  1: fine; 0: the size is read but
 * what follows it is not " LAST"; -1: no size (not all digits, or past
 * 2^64 - 1). */
static int bdat_args(const char *arg, uint64_t *size, bool *last)
{
	const char *p = arg;
	uint64_t v = 0;
	*last = false;
	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*size = v;
	if (*p == '\0')
		return 1;
	if (*p != ' ')
		return -1; /* "10x": the size is not the digits alone */
	while (*p == ' ')
		p++;
	if (strcasecmp(p, "LAST") != 0)
		return 0;
	*last = true;
	return 1;
}

/* The message fails with one of our replies (sg_session_bdat_fail). */
static void bdat_fail_with(sg_session *s, enum sg_rep r)
{
	char text[512];
	size_t n = sg_reply_text(s, r, text, sizeof text);
	sg_session_bdat_fail(s, text, n);
}

static void bdat_refused_log(sg_session *s, uint64_t size, const char *why)
{
	log_info(s->id, "event=bdat_refused size=%llu reason=\"%s\"",
	         (unsigned long long)size, why);
}

/* RFC 3030: BDAT <size> [LAST].  Whatever its reply, the size octets after
 * the line are the chunk's: they are read as such, never as commands
 * (sg_session_bdat_chunk), and the reply comes once they are in.  A chunk
 * of a transaction that is refused fails the message (RFC 3030 4.2): the
 * later chunks are dropped, each answered with that failure, until RSET
 * or the LAST ends the transaction. */
static void cmd_bdat(sg_session *s, char *arg)
{
	uint64_t size = 0;
	bool last = false;
	int syn = bdat_args(arg, &size, &last);
	if (syn < 0) {
		/* the octets that follow cannot be told from commands */
		bdat_refused_log(s, 0, "chunk size unreadable");
		sg_reply_send(s, SG_R_BDAT_SIZE);
		sg_session_close(s, "BDAT syntax");
		return;
	}
	if (!s->bdat.offered) {
		bdat_refused_log(s, size, "CHUNKING not offered");
		sg_session_bdat_chunk(s, size, last, SG_R_NO_CHUNKING);
		return;
	}
	/* RFC 3030 3: as DATA, a transaction with a recipient */
	if (s->state != SG_ST_RCPT || s->txn.rcpts == 0) {
		bdat_refused_log(s, size, "no transaction with a recipient");
		sg_session_bdat_chunk(s, size, last, s->state == SG_ST_MAIL
		                                         ? SG_R_NEED_RCPT
		                                         : SG_R_NEED_MAIL);
		return;
	}
	if (syn == 0) {
		bdat_refused_log(s, size, "syntax");
		bdat_fail_with(s, SG_R_BDAT_SYNTAX);
		sg_session_bdat_chunk(s, size, false, SG_R_COUNT);
		return;
	}
	if (!s->bdat.txn && (!s->up.link || !sg_link_alive(s->up.link))) {
		bdat_refused_log(s, size, "upstream lost");
		bdat_fail_with(s, SG_R_UPSTREAM_DOWN);
	}
	if (!s->bdat.txn)
		sg_session_bdat_begin(s);
	sg_session_bdat_chunk(s, size, last, SG_R_COUNT);
}

/* ---------------------------------------------------------- the others */

static void cmd_noop(sg_session *s, char *arg) { sg_reply_send(s, SG_R_OK); }

/* RFC 5321 3.5.3: 252, we cannot verify (and will not enumerate users) */
static void cmd_vrfy(sg_session *s, char *arg) { sg_reply_send(s, SG_R_VRFY); }

static void cmd_help(sg_session *s, char *arg) { sg_reply_send(s, SG_R_HELP); }

static void cmd_quit(sg_session *s, char *arg)
{
	sg_reply_send(s, SG_R_BYE);
	sg_session_close(s, "quit");
}

/* ------------------------------------------------------------ dispatch */

/* While replies are due, may this command be decided now?  A RCPT or DATA
 * carrying on the MAIL/RCPT in flight, on a live link with room in the
 * queue.  DATA ends a group (RFC 2920 3.1): what follows it may be message
 * text, read only once its 354 (or refusal) is in. */
static bool may_decide_ahead(const sg_session *s, const sg_cmd *c)
{
	int last = sg_rq_last(s);
	/* [policy]: the checked command waits for the replies before it, and
	 * costs a round trip (its check is made on the state they leave) */
	int at = s->cfg->policy_at;
	if (s->cfg->npolicy_servers &&
	    ((c->id == V_RCPT && at == SG_POLICY_AT_RCPT) ||
	     (c->id == V_DATA && at == SG_POLICY_AT_DATA)))
		return false;
	return (c->flags & F_AHEAD) && (last == V_MAIL || last == V_RCPT) &&
	       !sg_rq_full(s) && s->up.link && sg_link_alive(s->up.link);
}

bool sg_cmd_line(sg_session *s, char *line, size_t len)
{
	bool ahead = sg_rq_busy(s);
	if (s->auth.await && !ahead) {
		sg_cmd_auth_response(s, line, len);
		return true;
	}
	/* a BDAT line is framed by its size even when refused: its parser
	 * refuses the control octets */
	if (has_control(line, len) && strncasecmp(line, "BDAT ", 5) != 0) {
		if (ahead)
			return false;
		sg_reply_send(s, SG_R_CONTROL);
		return true;
	}
	char *verb, *arg;
	sg_cmd_split(line, &verb, &arg);
	const sg_cmd *c = NULL;
	for (size_t i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
		if (strcmp(verb, cmd_table[i].verb) == 0) {
			c = &cmd_table[i];
			break;
		}
	if (ahead && (!c || !may_decide_ahead(s, c)))
		return false;
	if (!c) {
		char v[32];
		sg_log_safe(v, sizeof v, verb);
		log_debug(s->id, "unknown command %s", v);
		sg_reply_send(s, SG_R_UNKNOWN);
		return true;
	}
	if (!(c->states & ST(txn_state(s)))) {
		refuse(s, c->bad_seq);
	} else if (s->bdat.txn && (c->id == V_RCPT || c->id == V_DATA)) {
		/* RFC 3030 3: BDAT carries the rest of the transaction */
		refuse(s, SG_R_AFTER_BDAT);
	} else {
		c->fn(s, arg);
	}
	if (s->up.held) {
		s->up.held = false;
		return false;
	}
	log_debug(s->id, "command %s%s%s", c->verb,
	          (c->flags & F_SECRET) ? " (...)" : "", ahead ? " (pipelined)" : "");
	if ((c->flags & F_GROUP_END) && s->pending == SG_PEND_NONE && !s->closing)
		sg_session_flush(s);
	return true;
}
