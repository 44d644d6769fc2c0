/* proxy/commands.c: the client-side SMTP commands.
 *
 * ONE table maps each verb to its handler, the states it is allowed in (and
 * the reply when it is not) and policy flags, in the manner of Postfix
 * smtpd's command table.  Handlers are ladders of guard clauses: each guard
 * gives one reply (reply.c) and returns; the action comes last.
 *
 * Everything that concerns a message (MAIL, RCPT, DATA, RSET once linked) is
 * answered with the upstream's reply (upstream/link.h): saslgate never gives
 * a 2xx for something the MTA has not accepted.
 *
 * Pipelining upstream (RFC 2920): commands are still decided one at a time,
 * each once the reply to the one before it is in, so every guard (state,
 * max_recipients, sender checks, the error count) sees exactly what it saw
 * without pipelining.  Only the sending is early: while MAIL or RCPT awaits
 * its reply, the RCPT and DATA lines buffered behind it are handed to the
 * link at once (sg_cmd_ahead).  At its turn a line is decided as always; if
 * it is relayed, the copy sent ahead is taken instead of a new one; if it
 * is refused here, the upstream's reply to the copy is thrown away.  That
 * reply cannot be a 2xx/354 the client does not learn of: the copy is sent
 * only when the command would be relayed if those before it succeed, and
 * when one of those fails the upstream refuses it too (no transaction, no
 * recipient).  Should it happen anyway, the upstream transaction is dropped
 * (fail closed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/log.h"
#include "../upstream/identity.h"
#include "commands_int.h"
#include "reply.h"
#include "session_int.h"

enum verb {
	V_EHLO, V_HELO, V_STARTTLS, V_AUTH, V_MAIL, V_RCPT, V_DATA, V_RSET,
	V_NOOP, V_VRFY, V_QUIT, V_HELP,
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

static const sg_cmd cmd_table[] = {
	{"EHLO", V_EHLO, cmd_ehlo, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"HELO", V_HELO, cmd_helo, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"STARTTLS", V_STARTTLS, cmd_starttls, ST(SG_ST_HELO) | ST(SG_ST_READY),
	 SG_R_BAD_SEQ, F_GROUP_END},
	{"AUTH", V_AUTH, sg_cmd_auth, ST(SG_ST_READY) | ST_TXN, SG_R_NEED_HELO,
	 F_GROUP_END | F_SECRET},
	{"MAIL", V_MAIL, cmd_mail, ST(SG_ST_READY) | ST_TXN, SG_R_NEED_HELO, 0},
	{"RCPT", V_RCPT, cmd_rcpt, ST_TXN, SG_R_NEED_MAIL, 0},
	{"DATA", V_DATA, cmd_data, ST_TXN, SG_R_NEED_MAIL, F_GROUP_END},
	{"RSET", V_RSET, cmd_rset, ST_SESSION, SG_R_BAD_SEQ, 0},
	{"NOOP", V_NOOP, cmd_noop, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"VRFY", V_VRFY, cmd_vrfy, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"QUIT", V_QUIT, cmd_quit, ST_SESSION, SG_R_BAD_SEQ, F_GROUP_END},
	{"HELP", V_HELP, cmd_help, ST_SESSION, SG_R_BAD_SEQ, 0},
};

/* ------------------------------------------------------------- helpers */

void sg_cmd_txn_reset(sg_session *s)
{
	sg_session_set_str(&s->txn.mail_from, NULL, 0);
	s->txn.rcpts = 0;
	s->txn.msg_size = 0;
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

/* Parse "<path>" at *pp into out (angle brackets and an obsolete source
 * route removed).  Returns SG_R_COUNT when fine, else the reply: 501 for a
 * missing or unterminated path, 553 5.1.3 for a bad address. */
static enum sg_rep parse_path(char **pp, char *out, bool allow_empty)
{
	char *p = *pp;
	if (*p != '<')
		return SG_R_SYNTAX;
	p++;
	/* RFC 5321 4.1.2 / C: "@a,@b:user@c", the route is to be ignored */
	if (*p == '@') {
		char *colon = strchr(p, ':');
		if (!colon)
			return SG_R_BAD_ADDR;
		p = colon + 1;
	}
	char *start = p;
	bool quoted = false;
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f)
			return SG_R_BAD_ADDR;
		if (quoted && c == '\\' && p[1]) {
			p++;
			continue;
		}
		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted)
			continue;
		if (c == '>')
			break;
		if (c == ' ' || c == '<' || c == ',' || c == ';')
			return SG_R_BAD_ADDR;
	}
	if (*p != '>')
		return SG_R_SYNTAX;
	size_t n = (size_t)(p - start);
	if (n == 0 && !allow_empty)
		return SG_R_BAD_ADDR;
	if (n > SG_PATH_MAX)
		return SG_R_BAD_ADDR;
	char *at = memrchr(start, '@', n);
	if (at && (at == start || at == p - 1))
		return SG_R_BAD_ADDR; /* "@dom" or "user@" */
	memcpy(out, start, n);
	out[n] = '\0';
	p++;
	if (*p && *p != ' ')
		return SG_R_SYNTAX;
	*pp = p;
	return SG_R_COUNT;
}

/* -------------------------------------------------------- upstream relay */

static void on_upstream_reply(void *arg, const sg_reply *r);

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

/* ------------------------------------------- commands sent ahead of turn */

/* A line handed to the link before its turn. */
typedef struct sg_ahead {
	struct sg_ahead *next;
	unsigned seq;     /* its number among the lines given to sg_cmd_line */
	enum verb verb;
	enum { AH_WAIT,   /* its turn has not come */
	       AH_TAKEN,  /* relayed at its turn: the session awaits the reply */
	       AH_ORPHAN, /* refused here at its turn: the reply is dropped */
	} st;
	bool replied;     /* AH_WAIT only: the reply came before the turn */
	int code;
	size_t len;
	char text[];      /* that reply, when replied */
} sg_ahead;

static void ahead_unlink(sg_session *s, sg_ahead *a)
{
	sg_ahead **pp = &s->up.ahead_head, *prev = NULL;
	while (*pp && *pp != a) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = a->next;
	if (s->up.ahead_tail == a)
		s->up.ahead_tail = prev;
	s->up.ahead_n--;
	if (a->st == AH_WAIT)
		s->up.ahead_wait--;
	if (s->up.ahead_wait == 0)
		s->up.ahead_off = 0;
}

void sg_cmd_ahead_drop(sg_session *s)
{
	sg_ahead *a = s->up.ahead_head;
	while (a) {
		sg_ahead *n = a->next;
		free(a);
		a = n;
	}
	s->up.ahead_head = s->up.ahead_tail = NULL;
	s->up.ahead_n = s->up.ahead_wait = 0;
	s->up.ahead_off = 0;
}

static sg_ahead *first_waiting(const sg_session *s)
{
	sg_ahead *a = s->up.ahead_head;
	while (a && a->st != AH_WAIT)
		a = a->next;
	return a;
}

static void close_link(sg_session *s)
{
	sg_cmd_ahead_drop(s);
	if (s->up.link)
		sg_link_close(s->up.link);
	s->up.link = NULL;
}

/* The upstream's reply to a copy refused here.  A 2xx or 354 would be a
 * transaction the client was not told of: cannot happen (see the head of
 * the file), but if it does, drop the upstream transaction with the link,
 * and the command in flight gets a 4xx (an upstream lost mid-command). */
static void orphan_reply(sg_session *s, int code)
{
	if (code < 200 || code >= 400)
		return;
	log_warn(s->id, "event=upstream_mismatch reply=%d reason=\"accepted a "
	         "command refused to the client\" action=\"transaction dropped\"",
	         code);
	close_link(s);
	sg_cmd_txn_reset(s);
	if (s->pending == SG_PEND_UPSTREAM) {
		sg_reply_send(s, SG_R_UPSTREAM_DOWN);
		sg_session_resume(s);
	}
}

/* After a line's handler: a copy sent ahead of it that the handler did not
 * take is an orphan now. */
static void ahead_after_line(sg_session *s)
{
	sg_ahead *a = first_waiting(s);
	if (!a || a->seq != s->up.cmd_seq)
		return;
	if (!a->replied) {
		s->up.ahead_wait--;
		a->st = AH_ORPHAN;
		if (s->up.ahead_wait == 0)
			s->up.ahead_off = 0;
		return;
	}
	int code = a->code;
	ahead_unlink(s, a);
	free(a);
	orphan_reply(s, code);
}

static void on_ahead_reply(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing)
		return;
	sg_ahead *a = s->up.ahead_head;
	while (a && a->st == AH_WAIT && a->replied)
		a = a->next;
	if (!a)
		return; /* cannot happen: one reply per command, in order */
	if (a->st == AH_WAIT) {
		/* before its turn: kept until then */
		sg_ahead **pp = &s->up.ahead_head;
		while (*pp != a)
			pp = &(*pp)->next;
		bool tail = s->up.ahead_tail == a;
		sg_ahead *c = sg_xrealloc(a, sizeof *a + r->len);
		*pp = c;
		if (tail)
			s->up.ahead_tail = c;
		c->replied = true;
		c->code = r->code;
		c->len = r->len;
		memcpy(c->text, r->text, r->len);
		return;
	}
	enum verb v = a->verb;
	bool taken = a->st == AH_TAKEN;
	ahead_unlink(s, a);
	free(a);
	if (!taken) {
		orphan_reply(s, r->code);
		return;
	}
	s->up.verb = v;
	on_upstream_reply(s, r);
}

static void relay(sg_session *s, enum verb v, const char *line, size_t len)
{
	s->up.verb = v;
	s->pending = SG_PEND_UPSTREAM;
	sg_ahead *a = first_waiting(s);
	if (a && a->seq == s->up.cmd_seq && a->verb == v) {
		/* sent ahead: take that copy (and its reply, if in already) */
		if (!a->replied) {
			a->st = AH_TAKEN;
			s->up.ahead_wait--;
			if (s->up.ahead_wait == 0)
				s->up.ahead_off = 0;
			return;
		}
		ahead_unlink(s, a);
		sg_reply r = {a->code, a->text, a->len};
		on_upstream_reply(s, &r);
		free(a);
		return;
	}
	if (a) {
		/* cannot happen (copies are sent in line order, this line's
		 * would be first): the copies go out before this command, so
		 * none may stand for a later line */
		log_warn(s->id, "pipelining: line %u relayed, copy of line %u "
		         "pending; copies dropped", s->up.cmd_seq, a->seq);
		for (sg_ahead *o = a; o; o = o->next)
			if (o->st == AH_WAIT)
				o->st = AH_ORPHAN;
		s->up.ahead_wait = 0;
		s->up.ahead_off = 0;
	}
	if (v == V_MAIL)
		sg_link_mail(s->up.link, line, len, s->txn.mail_auth, on_upstream_reply, s);
	else
		sg_link_command(s->up.link, line, len, on_upstream_reply, s);
}

static void link_lost(sg_session *s)
{
	if (!s->up.link || sg_link_alive(s->up.link))
		return;
	log_info(s->id, "upstream %s lost", sg_link_peer(s->up.link));
	close_link(s);
	sg_cmd_txn_reset(s);
}

static void on_upstream_reply(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing)
		return;
	bool ok = r->code >= 200 && r->code < 300;
	switch (s->up.verb) {
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
			sg_session_resume(s);
			return;
		}
		break;
	case V_RSET:
		if (ok)
			sg_cmd_txn_reset(s);
		break;
	default:
		break;
	}
	sg_reply_raw(s, r->code, r->text, r->len);
	link_lost(s);
	sg_session_resume(s);
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
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "SIZE %llu",
	         (unsigned long long)s->cfg->max_message_size);
	/* the contract promises 8BITMIME; MAIL refuses BODY=8BITMIME only when
	 * a probed upstream lacks it */
	snprintf(lines[n++], SG_EHLO_LINE_MAX, "8BITMIME");
	/* offered only when the upstream can take them (EHLO honesty) */
	if (caps.smtputf8)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "SMTPUTF8");
	if (caps.dsn)
		snprintf(lines[n++], SG_EHLO_LINE_MAX, "DSN");
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
		if (s->cfg->max_message_size && sz > s->cfg->max_message_size)
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
 * *had_auth tells whether it did.  Returns the length written to out. */
static size_t mail_params_relayed(const char *params, char *out, size_t cap,
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
	return o;
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
	enum sg_rep bad = parse_path(&p, addr, true);
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

/* "TO:<path> params" checked and made into the line relayed upstream
 * (out, *n octets).  SG_R_COUNT when fine, else the reply.  No side
 * effects: sg_cmd_ahead uses it on lines before their turn. */
static enum sg_rep rcpt_line(sg_session *s, char *arg, char *out, size_t cap,
                             int *n)
{
	if (strncasecmp(arg, "TO:", 3) != 0)
		return SG_R_SYNTAX;
	char *p = arg + 3;
	while (*p == ' ')
		p++;
	char addr[SG_PATH_MAX + 1];
	enum sg_rep bad = parse_path(&p, addr, false);
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
	char line[SG_RELAY_LINE_MAX];
	int n = 0;
	enum sg_rep bad = rcpt_line(s, arg, line, sizeof line, &n);
	if (bad != SG_R_COUNT) {
		sg_reply_send(s, bad);
		return;
	}
	/* RFC 5321 4.5.3.1.8: 452 when the recipient buffer is full */
	if (s->cfg->max_recipients && s->txn.rcpts >= s->cfg->max_recipients) {
		sg_reply_send(s, SG_R_TOO_MANY_RCPT);
		return;
	}
	if (!s->up.link) { /* lost with the transaction: link_lost() reset it */
		sg_reply_send(s, SG_R_NEED_MAIL);
		return;
	}
	relay(s, V_RCPT, line, (size_t)n);
}

static void cmd_data(sg_session *s, char *arg)
{
	if (*arg) {
		sg_reply_send(s, SG_R_NO_ARGS);
		return;
	}
	/* RFC 5321 3.3: DATA needs at least one accepted recipient */
	if (s->state != SG_ST_RCPT || s->txn.rcpts == 0 || !s->up.link) {
		sg_reply_send(s, SG_R_NEED_RCPT);
		return;
	}
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

static void dispatch(sg_session *s, char *line, size_t len)
{
	if (s->auth.await) {
		sg_cmd_auth_response(s, line, len);
		return;
	}
	if (has_control(line, len)) {
		sg_reply_send(s, SG_R_CONTROL);
		return;
	}
	char *verb, *arg;
	sg_cmd_split(line, &verb, &arg);
	const sg_cmd *c = NULL;
	for (size_t i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
		if (strcmp(verb, cmd_table[i].verb) == 0) {
			c = &cmd_table[i];
			break;
		}
	if (!c) {
		char v[32];
		sg_log_safe(v, sizeof v, verb);
		log_debug(s->id, "unknown command %s", v);
		sg_reply_send(s, SG_R_UNKNOWN);
		return;
	}
	log_debug(s->id, "command %s%s", c->verb,
	          (c->flags & F_SECRET) ? " (...)" : "");
	if (!(c->states & ST(s->state))) {
		sg_reply_send(s, c->bad_seq);
		return;
	}
	c->fn(s, arg);
	if ((c->flags & F_GROUP_END) && s->pending == SG_PEND_NONE && !s->closing)
		sg_session_flush(s);
}

void sg_cmd_line(sg_session *s, char *line, size_t len)
{
	s->up.cmd_seq++;
	dispatch(s, line, len);
	if (s->up.ahead_head && !s->closing)
		ahead_after_line(s);
}

/* RCPT and DATA lines behind a MAIL or RCPT that awaits its reply go to
 * the link now, each only if it would be relayed at its turn should every
 * command before it succeed: its own checks pass (the same rcpt_line),
 * max_recipients leaves room even if all RCPTs in flight are accepted, a
 * DATA has at least one recipient accepted or in flight.  DATA ends the
 * group (RFC 2920 3.1): what follows it may be message text. */
void sg_cmd_ahead(sg_session *s)
{
	if (s->closing || s->pending != SG_PEND_UPSTREAM || s->auth.await ||
	    s->io.lines.discarding || !s->up.link || !sg_link_alive(s->up.link))
		return;
	if (s->up.verb != V_MAIL && s->up.verb != V_RCPT)
		return;
	unsigned rcpts = 0; /* in flight: taken, waiting, or sent directly */
	bool taken = false;
	for (sg_ahead *a = s->up.ahead_head; a; a = a->next) {
		if (a->verb == V_DATA && a->st != AH_ORPHAN)
			return; /* the group is complete */
		if (a->st == AH_TAKEN)
			taken = true;
		if (a->verb == V_RCPT && a->st != AH_ORPHAN)
			rcpts++;
	}
	if (!taken && s->up.verb == V_RCPT)
		rcpts++;
	unsigned max = s->cfg->max_recipients;
	sg_lines st = s->io.lines;
	while (s->up.ahead_n < SG_AHEAD_MAX && s->up.ahead_off < s->io.in.len) {
		const char *line;
		size_t len, used;
		if (sg_line_next(&st, s->io.in.data + s->up.ahead_off,
		                 s->io.in.len - s->up.ahead_off, SG_LINE_MAX, &line, &len,
		                 &used) != SG_LINE_OK)
			return;
		if (has_control(line, len))
			return; /* refused at its turn */
		char cmd[SG_LINE_MAX + 1];
		memcpy(cmd, line, len);
		cmd[len] = '\0';
		char *verb, *arg;
		sg_cmd_split(cmd, &verb, &arg);
		char out[SG_RELAY_LINE_MAX];
		int n = 0;
		enum verb v;
		if (strcmp(verb, "RCPT") == 0) {
			if (max && s->txn.rcpts + rcpts >= max)
				return;
			if (rcpt_line(s, arg, out, sizeof out, &n) != SG_R_COUNT)
				return;
			rcpts++;
			v = V_RCPT;
		} else if (strcmp(verb, "DATA") == 0) {
			if (*arg || (s->txn.rcpts == 0 && rcpts == 0))
				return;
			n = snprintf(out, sizeof out, "DATA\r\n");
			v = V_DATA;
		} else {
			return;
		}
		explicit_bzero(cmd, len);
		sg_ahead *a = sg_xcalloc(1, sizeof *a);
		a->seq = s->up.cmd_seq + s->up.ahead_wait + 1;
		a->verb = v;
		a->st = AH_WAIT;
		if (s->up.ahead_tail)
			s->up.ahead_tail->next = a;
		else
			s->up.ahead_head = a;
		s->up.ahead_tail = a;
		s->up.ahead_n++;
		s->up.ahead_wait++;
		s->up.ahead_off += used;
		log_debug(s->id, "pipelining: line %u (%s) sent ahead", a->seq,
		          v == V_RCPT ? "RCPT" : "DATA");
		sg_link_command(s->up.link, out, (size_t)n, on_ahead_reply, s);
		/* a reply delivered at once (link lost) changed the session: let
		 * sg_session_process go round again before sending more */
		if (s->again || s->closing || !s->up.link || v == V_DATA)
			return;
	}
}
