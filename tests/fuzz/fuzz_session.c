/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_session.c: libFuzzer target for the whole client-side
 * session engine (proxy/session.c, commands.c, reply_queue.c, ...), driven
 * in-process by the unit tests' driver (tests/unit/driver.h) against the
 * scripted upstream link (tests/unit/scripted_link.c).
 *
 * The input is a small program.  Byte 0 and byte 1 choose the
 * configuration and what the upstream offers:
 *   byte 0: bit 0 bare_newline = reject (else normalize), bit 1
 *     strict_envelope = yes, bit 2 max_recipients = 2, bit 3
 *     max_message_size = 1k, bits 4-5 what a link's ready gets (0, 1: a
 *     2xx, 2: a 4xx, 3: held until a step answers it), bit 6 the upstream
 *     offers PIPELINING, bit 7 CHUNKING;
 *   byte 1: bit 0 the upstream was probed, bit 1 8BITMIME, bit 2 SMTPUTF8,
 *     bit 3 DSN, bit 4 SIZE 100, bit 5 the client says EHLO first.
 * Then steps, each an opcode (op % 8) and its operands, each followed by a
 * drv_run and the checks:
 *   0, 1     the client sends the next L octets (L: the next byte), any
 *            octets, cut anywhere;
 *   2        the client sends snippet op >> 3 of a table (canned: SMTP
 *            commands and message pieces, a dictionary built in);
 *   3        the upstream answers the oldest unanswered command with reply
 *            op >> 3 of the table (reply_for);
 *   4        the same for every unanswered command (at most 16);
 *   5        by op bits 3-4: the newest link loses its upstream; the
 *            worker stops gracefully (sg_session_drain_all, as SIGTERM:
 *            sessions close once their transaction is over); the upstream
 *            refuses a chunk of the open chunked message; a lost link;
 *   6        a held ready gets a 2xx (op bit 3 clear) or a 4xx; op bits 4-5
 *            set what the next links' ready gets (0 keep, then as byte 0);
 *   7        by op bits 3-4: the client half-closes; only a run; the link
 *            drains (link_drain); the link's feeds start or stop pausing
 *            the session (backpressure).
 * At most MAX_STEPS steps and MAX_SENT octets sent per input.
 *
 * The checks (abort() on a break, so libFuzzer reports it):
 *  1. every 2xx or 3xx reply the client gets is the upstream's, given to a
 *     command the session relayed for the client, in the order given and
 *     at most once, or one of the replies the session makes itself where
 *     no upstream is involved (check_reply); every 2xx or 354 the
 *     upstream gives carries a token "[uN]" that tells them apart; and
 *     none of the session's own 2xx comes between a relayed command and
 *     its reply (the order of the commands, RFC 2920);
 *  2. every line handed to a link is CRLF-terminated printable text of at
 *     most SG_UPSTREAM_LINE_MAX octets;
 *  3. nothing is handed to a link before its ready got a 2xx (the identity
 *     goes over inside the open: MAIL before it would be mail without
 *     one), nor to a link after sg_link_close (the driver's misuse);
 *  4. the message octets given to the link are the client's: a DATA
 *     message is the octets after a DATA line, in one piece, a BDAT chunk
 *     octets the client sent, all in the order sent (check_data); where
 *     the DATA message ends is the scripted link's (the first
 *     <CRLF>.<CRLF>), so the upstream sees no more than the client ended;
 *  5. at the end every session is freed and the loop is empty (drv_stop;
 *     LeakSanitizer sees the rest);
 *  6. once the upstream has answered everything (settle), no session
 *     waits for it, nor leaves a whole command line unread while it
 *     waits for nothing: the client would wait for ever;
 *  7. the program is run twice, the second time with every send cut in
 *     two (the session running on the first part alone): the client's
 *     replies, the link's lines and message octets are the same (unless
 *     the link paused the session, which makes the cuts matter). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>

#include "../../common/buf.h"
#include "../../proxy/reply_queue.h"
#include "../../proxy/session.h"
#include "../unit/driver.h"

#define MAX_STEPS 64
#define MAX_SENT 8192
#define MAX_BATCH 16 /* replies one step of op 4 gives */

#define READY_OK "250 2.0.0 [ready] Upstream ready\r\n"
#define READY_DOWN "451 4.4.1 [ready] Upstream server not available\r\n"

static void dump(void);

/* Abort with a message and the run's transcript (libFuzzer shows stderr
 * with the crash). */
#define FAIL(...)                                                       \
	do {                                                            \
		fprintf(stderr, "fuzz_session: " __VA_ARGS__);          \
		fputc('\n', stderr);                                    \
		dump();                                                 \
		abort();                                                \
	} while (0)

/* What a command handed to the link is. */
enum kind { K_MAIL, K_RCPT, K_DATA, K_RSET, K_END, K_OTHER };

/* A reply the upstream gave; token "[uN]" is its index + 1. */
typedef struct given {
	char *text;
	size_t len;
	enum kind kind; /* of the command it answered */
	size_t cmd;     /* its index in d.cmd */
	bool hidden; /* its command was no client's: never reaches the client */
} given;

/* One run's state. */
typedef struct run {
	drv d;
	given *gv;
	size_t ngv, capgv;
	sg_buf sent;     /* every octet the client sent */
	sg_buf got;      /* every octet the client received */
	size_t parsed;   /* got up to here was checked */
	size_t last_tok; /* the token of the last upstream reply passed on */
	size_t lines_ok; /* link commands checked */
	/* replies of the session's own, by kind */
	unsigned own_ok, own_quit, own_helo, own_ehlo, own_vrfy, own_help,
	    own_chunk;
	unsigned data354; /* 354s to DATA the client got */
	bool split;       /* every send goes in two parts, a run between */
	/* where in the client's text each command's reply can start at the
	 * earliest (what the session had written when it relayed it), by
	 * index in d.cmd; and where the session's own 2xx replies are */
	size_t *cmd_at, capat;
	size_t *own_at, nown, capown;
	bool paused_ever; /* d.pausing was set: the run depends on the cuts */
	int step;         /* the step being run */
} run;

/* What op 2 sends. */
static const char *const canned[32] = {
    "EHLO client.test\r\n",
    "HELO client.test\r\n",
    "MAIL FROM:<a@example.org>\r\n",
    "MAIL FROM:<> BODY=8BITMIME SIZE=50\r\n",
    "MAIL FROM:a@example.org AUTH=<>\r\n",
    "RCPT TO:<b@example.net>\r\n",
    "RCPT TO:c@example.net\r\n",
    "RCPT TO:<d@example.net> NOTIFY=NEVER\r\n",
    "DATA\r\n",
    "BDAT 5\r\nhello",
    "BDAT 3 LAST\r\nend",
    "BDAT 0 LAST\r\n",
    "BDAT 7\r\n.\r\nab\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    "QUIT\r\n",
    "VRFY x\r\n",
    "HELP\r\n",
    "Subject: t\r\n\r\nbody\r\n",
    ".\r\n",
    "\r\n.\r\n",
    "..stuffed\r\n",
    "bare\nLF\r\n",
    "bare\rCR\r\n",
    "\0",
    NULL, /* long_mail */
    NULL, /* long_line */
    "X-Authenticated-User: x\r\n",
    "STARTTLS\r\n",
    "AUTH PLAIN AGFhAGI=\r\n",
    "MAIL FROM:<x@example.org> SMTPUTF8 RET=HDRS ENVID=x\r\n",
    "BDAT 100000\r\n",
};

static run the_run; /* one at a time, as the driver */

/* What the run did so far (octets as they are, NULs included). */
static void dump(void)
{
	run *r = &the_run;
	const char *l = link_lines(&r->d);
	fputs("--- client sent:\n", stderr);
	fwrite(r->sent.data ? r->sent.data : "", 1, r->sent.len, stderr);
	fputs("\n--- client got:\n", stderr);
	fwrite(r->got.data ? r->got.data : "", 1, r->got.len, stderr);
	fputs("--- link lines:\n", stderr);
	fwrite(l, 1, strlen(l), stderr);
	fputs("--- message octets:\n", stderr);
	fwrite(r->d.data.data ? r->d.data.data : "", 1, r->d.data.len, stderr);
	fputs("\n---\n", stderr);
}

/* A MAIL line longer than the upstream reads whole (link.h
 * SG_UPSTREAM_LINE_MAX; ENVID= needs DSN offered), and a line longer than
 * any command (SG_LINE_MAX). */
static char long_mail[SG_UPSTREAM_LINE_MAX + 64];
static char long_line[SG_LINE_MAX + 64];

static const char *ready_text(unsigned mode)
{
	return mode == 3 ? NULL : mode == 2 ? READY_DOWN : READY_OK;
}

/* ------------------------------------------------------- the upstream */

static enum kind kind_of(const drv_cmd *c)
{
	if (!c->line)
		return K_END;
	if (strncmp(c->line, "MAIL ", 5) == 0)
		return K_MAIL;
	if (strncmp(c->line, "RCPT ", 5) == 0)
		return K_RCPT;
	if (strcmp(c->line, "DATA\r\n") == 0)
		return K_DATA;
	if (strcmp(c->line, "RSET\r\n") == 0)
		return K_RSET;
	return K_OTHER;
}

/* The 2xx (or DATA's 354) a command of kind k gets, token t; multi: in
 * two lines. */
static int good_reply(char *out, size_t cap, enum kind k, size_t t,
                      bool multi)
{
	const char *code = k == K_DATA ? "354" : "250";
	const char *enh = k == K_MAIL   ? "2.1.0 "
	                  : k == K_RCPT ? "2.1.5 "
	                  : k == K_DATA ? ""
	                                : "2.0.0 ";
	const char *text = k == K_DATA  ? "End data with <CR><LF>.<CR><LF>"
	                   : k == K_END ? "Ok: queued as 4XqZ"
	                                : "Ok";
	if (multi)
		return snprintf(out, cap, "%s-%s[u%zu] first\r\n%s %s[u%zu] %s",
		                code, enh, t, code, enh, t, text);
	return snprintf(out, cap, "%s %s[u%zu] %s", code, enh, t, text);
}

/* Reply sel for a command of kind k, token t (for 2xx and 3xx). */
static void reply_for(char *out, size_t cap, unsigned sel, enum kind k,
                      size_t t)
{
	int n;
	switch (sel % 12) {
	case 0:
	case 1:
	case 2:
		n = good_reply(out, cap, k, t, false);
		break;
	case 3:
		n = snprintf(out, cap, "451 4.3.0 Temporary failure");
		break;
	case 4:
		n = snprintf(out, cap, "%s",
		             k == K_RCPT ? "550 5.1.1 <b@example.net>: Recipient "
		                           "address rejected"
		                         : "554 5.5.1 Error: no valid recipients");
		break;
	case 5:
		n = good_reply(out, cap, k, t, true);
		break;
	case 6:
		n = snprintf(out, cap, "550-5.7.1 one\r\n550 5.7.1 two");
		break;
	case 7: /* a 2xx whatever the command, without enhanced code */
		n = snprintf(out, cap, "250 [u%zu] Ok", t);
		break;
	case 8: /* 354 whatever the command */
		n = snprintf(out, cap, "354 [u%zu] go ahead", t);
		break;
	case 9:
		n = snprintf(out, cap, "421 4.4.2 Closing connection");
		break;
	case 10:
		n = snprintf(out, cap, "251 2.1.5 [u%zu] User not local; will "
		                       "forward", t);
		break;
	default:
		n = snprintf(out, cap, "552 5.3.4 Message too big");
		break;
	}
	snprintf(out + n, cap - (size_t)n, "\r\n");
}

/* The upstream answers the oldest unanswered command; false: none. */
static bool give(run *r, unsigned sel)
{
	long i = link_next(&r->d);
	if (i < 0)
		return false;
	const drv_cmd *c = &r->d.cmd[i];
	if (r->ngv == r->capgv) {
		r->capgv = r->capgv ? 2 * r->capgv : 16;
		r->gv = realloc(r->gv, r->capgv * sizeof *r->gv);
		if (!r->gv)
			abort();
	}
	char text[256];
	reply_for(text, sizeof text, sel, kind_of(c), r->ngv + 1);
	given *g = &r->gv[r->ngv++];
	g->text = strdup(text);
	g->len = strlen(text);
	g->kind = kind_of(c);
	g->cmd = (size_t)i;
	if (g->kind == K_END) /* the "queued as" the session logs */
		snprintf(r->d.qid, sizeof r->d.qid, "4Xq%zu", r->ngv);
	/* a line relayed for no client command: EHLO's RSET in a
	 * transaction, whose reply is dropped */
	g->hidden = c->line && c->cb != sg_rq_on_reply;
	if (link_reply(&r->d, text) < 0)
		FAIL("link_next and link_reply disagree");
	return true;
}

/* --------------------------------------------------------- the checks */

/* The verb (any case) followed by a space or a line end anywhere in what
 * the client sent: how often the session may make that verb's reply at
 * most.  Anywhere, not only at line starts: a command also starts right
 * after a BDAT chunk's octets. */
static unsigned count_verb(const run *r, const char *verb)
{
	size_t vl = strlen(verb);
	unsigned n = 0;
	const char *p = r->sent.data;
	size_t len = r->sent.len;
	for (size_t i = 0; i + vl <= len; i++) {
		if (strncasecmp(p + i, verb, vl) != 0)
			continue;
		if (i + vl == len || p[i + vl] == ' ' || p[i + vl] == '\r' ||
		    p[i + vl] == '\n')
			n++;
	}
	return n;
}

static bool is_line(const char *p, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(p, want, len) == 0;
}

/* A reply of the session's own that is a 2xx or 3xx (proxy/reply.c's
 * table, EHLO's lines, a BDAT chunk's 250): true, counted by kind. */
static bool own_reply(run *r, const char *p, size_t len)
{
	if (is_line(p, len, "250 2.0.0 Ok\r\n")) /* NOOP, RSET unlinked */
		return ++r->own_ok <= count_verb(r, "NOOP") + count_verb(r, "RSET");
	if (is_line(p, len, "221 2.0.0 Bye\r\n"))
		return ++r->own_quit <= count_verb(r, "QUIT");
	if (is_line(p, len, "250 gate.test\r\n"))
		return ++r->own_helo <= count_verb(r, "HELO");
	if (is_line(p, len, "252 2.0.0 Cannot VRFY user, but will accept "
	                    "message\r\n"))
		return ++r->own_vrfy <= count_verb(r, "VRFY");
	if (is_line(p, len, "214 2.0.0 See RFC 5321 and RFC 4954\r\n"))
		return ++r->own_help <= count_verb(r, "HELP");
	if (len > 15 && memcmp(p, "250-gate.test\r\n", 15) == 0 &&
	    len >= 10 && memcmp(p + len - 10, "250 HELP\r\n", 10) == 0)
		return ++r->own_ehlo <= count_verb(r, "EHLO");
	/* a BDAT chunk that is not the LAST: accepts no mail (RFC 3030 2) */
	unsigned long long sz;
	int end = 0;
	if (len < 64 && p[len - 1] == '\n') {
		char tmp[64];
		memcpy(tmp, p, len);
		tmp[len] = '\0';
		if (sscanf(tmp, "250 2.0.0 %llu octets received\r\n%n", &sz,
		           &end) == 1 && (size_t)end == len)
			return ++r->own_chunk <= count_verb(r, "BDAT");
	}
	return false;
}

/* One whole reply the client got (its lines, CRLF each), at offset at of
 * all it got. */
static void check_reply(run *r, const char *p, size_t len, size_t at)
{
	int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	if (code < 200 || code >= 400)
		return; /* a refusal: no mail was accepted by it */
	const char *tok = memmem(p, len, "[u", 2);
	if (!tok) {
		if (own_reply(r, p, len)) {
			if (r->nown == r->capown) {
				r->capown = r->capown ? 2 * r->capown : 16;
				r->own_at = realloc(r->own_at,
				                    r->capown * sizeof *r->own_at);
				if (!r->own_at)
					abort();
			}
			r->own_at[r->nown++] = at;
			return;
		}
		FAIL("a %d the upstream did not give reached the client: "
		     "\"%.*s\"", code, (int)len, p);
	}
	size_t t = strtoul(tok + 2, NULL, 10);
	if (t == 0 || t > r->ngv)
		FAIL("unknown token in \"%.*s\"", (int)len, p);
	const given *g = &r->gv[t - 1];
	if (g->hidden)
		FAIL("the reply to a line relayed for no client command reached "
		     "the client: \"%.*s\"", (int)len, p);
	if (t <= r->last_tok)
		FAIL("upstream reply %zu passed on after %zu: \"%.*s\"", t,
		     r->last_tok, (int)len, p);
	if (g->len != len || memcmp(g->text, p, len) != 0)
		FAIL("upstream reply %zu changed: \"%.*s\" became \"%.*s\"", t,
		     (int)g->len, g->text, (int)len, p);
	r->last_tok = t;
	/* RFC 2920 and docs/ARCHITECTURE.md: lines are answered in the
	 * order they came, and a reply of the session's own never waits
	 * behind an upstream one: none is written between a command's
	 * relay and its reply */
	size_t from = r->cmd_at[g->cmd];
	for (size_t k = 0; k < r->nown; k++)
		if (r->own_at[k] >= from && r->own_at[k] < at)
			FAIL("a reply of the session's own (at %zu) came between "
			     "the relay of \"%.*s\" (at %zu) and its reply (at %zu)",
			     r->own_at[k],
			     (int)strcspn(r->d.cmd[g->cmd].line ? r->d.cmd[g->cmd].line
			                                         : "end of data",
			                  "\r"),
			     r->d.cmd[g->cmd].line ? r->d.cmd[g->cmd].line
			                           : "end of data",
			     from, at);
	if (code == 354 && g->kind == K_DATA)
		r->data354++;
}

/* What the client received since the last check: whole replies. */
static void check_client(run *r)
{
	drv *d = &r->d;
	if (d->text.len) {
		sg_buf_append(&r->got, d->text.data, d->text.len);
		drv_take(d);
	}
	if (r->got.len == 0)
		return;
	const char *p = r->got.data;
	size_t len = r->got.len;
	size_t at = r->parsed; /* the reply's first line */
	size_t i = at;
	for (;;) {
		const char *lf = memchr(p + i, '\n', len - i);
		if (!lf)
			return;
		size_t end = (size_t)(lf - p) + 1, ll = end - i;
		const char *l = p + i;
		if (ll < 6 || l[ll - 2] != '\r' || l[0] < '1' || l[0] > '5' ||
		    l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' ||
		    (l[3] != ' ' && l[3] != '-') || memcmp(l, p + at, 3) != 0)
			FAIL("malformed reply line \"%.*s\"", (int)ll, l);
		for (size_t k = 0; k + 2 < ll; k++)
			if ((unsigned char)l[k] < 0x20)
				FAIL("control octet in reply line \"%.*s\"",
				     (int)ll, l);
		i = end;
		if (l[3] == ' ') {
			check_reply(r, p + at, end - at, at);
			at = end;
			r->parsed = end;
		}
	}
}

/* Checks 2 and 3 on the commands handed over since the last time. */
static void check_lines(run *r)
{
	drv *d = &r->d;
	if (d->misuse)
		FAIL("the link misused (%u): a call after sg_link_close, or "
		     "BDAT octets or status without a message", d->misuse);
	for (; r->lines_ok < d->ncmd; r->lines_ok++) {
		const drv_cmd *c = &d->cmd[r->lines_ok];
		if (c->early)
			FAIL("%s handed to a link before its ready got a 2xx",
			     c->line ? c->line : "end of data");
		if (!c->line)
			continue;
		if (c->len < 2 || c->line[c->len - 2] != '\r' ||
		    c->line[c->len - 1] != '\n')
			FAIL("link line without its CRLF: \"%.*s\"", (int)c->len,
			     c->line);
		if (c->len > SG_UPSTREAM_LINE_MAX)
			FAIL("link line of %zu octets", c->len);
		for (size_t k = 0; k + 2 < c->len; k++) {
			unsigned char o = (unsigned char)c->line[k];
			if (o < 0x20 || o == 0x7f)
				FAIL("control octet 0x%02x in link line \"%.*s\"",
				     o, (int)c->len, c->line);
		}
		if (c->mail != (strncmp(c->line, "MAIL FROM:<", 11) == 0))
			FAIL("MAIL not by sg_link_mail (or the other way): "
			     "\"%.*s\"", (int)c->len, c->line);
	}
}

/* Is sent[at] right after a DATA line ("DATA", trailing blanks, a line
 * end)?  Not checked to start at a line start: a command also starts
 * right after a BDAT chunk's octets. */
static bool after_data_line(const run *r, size_t at)
{
	const char *p = r->sent.data;
	if (at == 0 || p[at - 1] != '\n')
		return false;
	size_t q = at - 1;
	if (q > 0 && p[q - 1] == '\r')
		q--;
	while (q > 0 && p[q - 1] == ' ')
		q--;
	return q >= 4 && strncasecmp(p + q - 4, "DATA", 4) == 0;
}

/* The first place at or after from where octets m (len n) are in what the
 * client sent (after a DATA line when data); (size_t)-1: nowhere. */
static size_t find_sent(const run *r, size_t from, const char *m, size_t n,
                        bool data)
{
	const char *s = r->sent.data;
	size_t len = r->sent.len;
	if (len == 0)
		return (size_t)-1;
	while (from + n <= len) {
		const char *hit = memmem(s + from, len - from, m, n);
		if (!hit)
			return (size_t)-1;
		size_t at = (size_t)(hit - s);
		if (!data || after_data_line(r, at))
			return at;
		from = at + 1;
	}
	return (size_t)-1;
}

/* Check 4.  Every DATA message whole (its feeds are contiguous in
 * d->data), every BDAT feed apart; each must be found in what the client
 * sent after the one before.  Taking the first place found each time
 * never passes over the true one, so this never fails when the octets
 * are the client's, in its order. */
static void check_data(run *r)
{
	drv *d = &r->d;
	size_t cur = 0;
	for (size_t i = 0; i < d->nfeeds;) {
		const drv_feed *f = &d->feeds[i];
		size_t at = f->at, n = f->len, j = i + 1;
		if (!f->bdat)
			for (; j < d->nfeeds && d->feeds[j].msg == f->msg &&
			       !d->feeds[j].bdat; j++)
				n += d->feeds[j].len;
		size_t hit = find_sent(r, cur, d->data.data + at, n, !f->bdat);
		if (hit == (size_t)-1)
			FAIL("%s octets the client did not send there (message "
			     "%u, %zu octets at %zu of the link's)",
			     f->bdat ? "BDAT" : "DATA", f->msg, n, at);
		cur = hit + n;
		i = j;
	}
	/* a DATA message begins at the link exactly when the client gets
	 * the upstream's 354 to its DATA: the client then sends the message,
	 * which must never be read as commands */
	if (d->nmsg - d->nmsg_bdat != r->data354)
		FAIL("%u DATA messages begun at the link, %u 354s to DATA at "
		     "the client", d->nmsg - d->nmsg_bdat, r->data354);
}

static void step_run(run *r)
{
	if (drv_run(&r->d) < 0)
		FAIL("the loop did not settle");
	check_client(r);
	check_lines(r);
	check_data(r);
}

/* Octets of replies the client has or will have, as far as the two
 * sockets tell: read, waiting in the client's socket (FIONREAD), in the
 * session's (TIOCOUTQ: not yet sent, or sent and not yet acknowledged,
 * which may count an octet twice: never too few), handed to libuv, in
 * the session's reply buffer. */
static size_t replies_so_far(run *r)
{
	drv *d = &r->d;
	int n = 0;
	size_t at = r->got.len + d->text.len;
	if (d->fd >= 0 && ioctl(d->fd, FIONREAD, &n) == 0 && n > 0)
		at += (size_t)n;
	for (sg_session *s = d->w.sessions; s; s = s->next) {
		uv_os_fd_t fd;
		n = 0;
		if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0 &&
		    ioctl(fd, TIOCOUTQ, &n) == 0 && n > 0)
			at += (size_t)n;
		at += s->io.out.len + s->io.wq_bytes;
	}
	return at;
}

/* drv.on_command: where the reply to command i can start at the
 * earliest in all the client gets. */
static void on_command(drv *d, size_t i)
{
	run *r = &the_run;
	if (i >= r->capat) {
		r->capat = 2 * i + 16;
		r->cmd_at = realloc(r->cmd_at, r->capat * sizeof *r->cmd_at);
		if (!r->cmd_at)
			abort();
	}
	(void)d;
	r->cmd_at[i] = replies_so_far(r);
}

/* The client sends n octets (fewer past MAX_SENT; none once closed); in
 * a split run in two parts, the session running on the first alone. */
static void send_some(run *r, const char *p, size_t n)
{
	if (n > MAX_SENT - r->sent.len)
		n = MAX_SENT - r->sent.len;
	if (n == 0 || r->d.eof || r->d.shut || r->d.fd < 0)
		return;
	sg_buf_append(&r->sent, p, n);
	size_t cut = 0;
	if (r->split && n > 1)
		cut = 1 + ((unsigned char)p[0] * 31u + (unsigned)r->step) % (n - 1);
	if (cut) {
		drv_send_n(&r->d, p, cut);
		step_run(r);
		if (r->d.eof || r->d.fd < 0)
			return;
	}
	drv_send_n(&r->d, p + cut, n - cut);
}

/* Check 6: the upstream answers every command (a 2xx, or DATA's 354) and
 * a held ready, until nothing is owed; then no session may be waiting
 * for the upstream, nor hold a whole command line it does not read. */
static void settle(run *r)
{
	r->d.pausing = false;
	for (int k = 0; k < 4 * MAX_STEPS; k++) {
		bool any = give(r, 0) || link_ready(&r->d, READY_OK) == 0 ||
		           link_drain(&r->d) == 0;
		step_run(r);
		if (!any)
			break;
	}
	for (sg_session *s = r->d.w.sessions; s; s = s->next) {
		if (s->closing)
			continue;
		if (s->pending == SG_PEND_LINK_OPEN ||
		    s->pending == SG_PEND_UPSTREAM ||
		    s->pending == SG_PEND_DATA_END || s->data_paused)
			FAIL("the session waits (pending %d, paused %d, state "
			     "%d) with nothing owed by the upstream",
			     (int)s->pending, (int)s->data_paused, (int)s->state);
		if (s->pending == SG_PEND_NONE && s->state != SG_ST_DATA &&
		    !s->bdat.chunk &&
		    sg_line_pending(&s->io.lines, s->io.in.data, s->io.in.len,
		                    SG_LINE_MAX))
			FAIL("a whole command line left unread (state %d)",
			     (int)s->state);
	}
}

/* --------------------------------------------------------- the target */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	drv_fuzzing = true;
	static const char mail[] = "MAIL FROM:<a@example.org> ENVID=";
	memcpy(long_mail, mail, sizeof mail - 1);
	memset(long_mail + sizeof mail - 1, 'x',
	       sizeof long_mail - sizeof mail - 2);
	memcpy(long_mail + sizeof long_mail - 3, "\r\n", 3);
	memset(long_line, 'n', sizeof long_line - 3);
	memcpy(long_line, "NOOP ", 5);
	memcpy(long_line + sizeof long_line - 3, "\r\n", 3);
	return 0;
}

/* Run the program once (split: every send in two parts); the run's
 * outcome stays in the_run until free_run. */
static void exec_program(const uint8_t *data, size_t size, bool split)
{
	unsigned c0 = data[0], c1 = data[1];
	const uint8_t *p = data + 2, *end = data + size;

	char extra[256];
	snprintf(extra, sizeof extra,
	         "[server]\nstrict_envelope = %s\n"
	         "[limits]\nbare_newline = %s\nmax_recipients = %u\n"
	         "max_message_size = %u\n",
	         c0 & 0x02 ? "yes" : "no", c0 & 0x01 ? "reject" : "normalize",
	         c0 & 0x04 ? 2u : 100u, c0 & 0x08 ? 1024u : 1000000u);

	run *r = &the_run;
	memset(r, 0, sizeof *r);
	r->split = split;
	sg_buf_init(&r->sent, 0);
	sg_buf_init(&r->got, 0);
	if (drv_start(&r->d, extra) < 0)
		FAIL("drv_start failed");
	r->d.on_command = on_command;
	sg_upstream_caps caps = {
	    .probed = c1 & 0x01, .eightbitmime = c1 & 0x02,
	    .smtputf8 = c1 & 0x04, .dsn = c1 & 0x08,
	    .pipelining = c0 & 0x40, .chunking = c0 & 0x80,
	    .size = c1 & 0x10 ? 100 : 0,
	};
	link_set_caps(&caps);
	r->d.ready_reply = ready_text((c0 >> 4) & 3);
	if (c1 & 0x20) {
		static const char ehlo[] = "EHLO client.test\r\n";
		sg_buf_append(&r->sent, ehlo, sizeof ehlo - 1);
		drv_send(&r->d, ehlo);
		step_run(r);
	}

	for (r->step = 0; r->step < MAX_STEPS && p < end; r->step++) {
		unsigned op = *p++;
		switch (op % 8) {
		case 0:
		case 1: {
			size_t n = p < end ? *p++ : 0;
			if (n > (size_t)(end - p))
				n = (size_t)(end - p);
			send_some(r, (const char *)p, n);
			p += n;
			break;
		}
		case 2: {
			const char *c = canned[op >> 3];
			if (!c)
				c = op >> 3 == 25 ? long_mail : long_line;
			send_some(r, c, c[0] ? strlen(c) : 1); /* "\0": a NUL */
			break;
		}
		case 3:
			give(r, op >> 3);
			break;
		case 4:
			for (int k = 0; k < MAX_BATCH && give(r, (op >> 3) + k); k++)
				;
			break;
		case 5:
			if (((op >> 3) & 3) == 1)
				sg_session_drain_all(&r->d.w, false);
			else if (((op >> 3) & 3) == 2)
				link_refuse_chunk(&r->d, "554 5.6.0 Chunk refused\r\n");
			else
				link_lose(&r->d); /* none open: nothing happens */
			break;
		case 6:
			link_ready(&r->d, op & 0x08 ? READY_DOWN : READY_OK);
			if ((op >> 4) & 3)
				r->d.ready_reply = ready_text((op >> 4) & 3);
			break;
		default:
			switch ((op >> 3) & 3) {
			case 0:
				drv_shutdown(&r->d);
				break;
			case 1:
				break;
			case 2:
				link_drain(&r->d);
				break;
			default:
				r->d.pausing = !r->d.pausing;
				r->paused_ever = true;
				break;
			}
			break;
		}
		step_run(r);
	}

	settle(r);
	if (getenv("FUZZ_SESSION_TRACE")) /* what an input did */
		dump();
}

/* The end of a run: check 5, then free it. */
static void free_run(run *r)
{
	if (drv_stop(&r->d) != 0)
		FAIL("drv_stop: a session or handle left");
	if (r->d.misuse)
		FAIL("the link misused while closing (%u)", r->d.misuse);
	for (size_t i = 0; i < r->ngv; i++)
		free(r->gv[i].text);
	free(r->gv);
	free(r->cmd_at);
	free(r->own_at);
	sg_buf_free(&r->sent);
	sg_buf_free(&r->got);
}

/* What a run showed: the client's replies, the link's lines and message
 * octets. */
typedef struct outcome {
	sg_buf got, lines, msg;
} outcome;

static void keep(outcome *o, run *r)
{
	sg_buf_init(&o->got, 0);
	sg_buf_init(&o->lines, 0);
	sg_buf_init(&o->msg, 0);
	sg_buf_append(&o->got, r->got.data, r->got.len);
	const char *l = link_lines(&r->d);
	sg_buf_append(&o->lines, l, strlen(l));
	sg_buf_append(&o->msg, r->d.data.data, r->d.data.len);
}

static bool same(const sg_buf *a, const sg_buf *b)
{
	return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* Check 7: the session's outcome does not depend on how the client's
	 * octets are cut into reads (as long as the link never pauses it,
	 * which makes the cuts matter: each feed pauses).  Replies given at
	 * the same steps, so whatever the session decides on a whole line
	 * it decides the same when the line came in two reads. */
	exec_program(data, size, false);
	run *r = &the_run;
	bool compare = !r->paused_ever;
	outcome whole;
	if (compare)
		keep(&whole, r);
	free_run(r);
	if (!compare)
		return 0;
	exec_program(data, size, true);
	outcome cut;
	keep(&cut, r);
	if (!same(&whole.got, &cut.got) || !same(&whole.lines, &cut.lines) ||
	    !same(&whole.msg, &cut.msg)) {
		fprintf(stderr, "--- unsplit run: client got:\n%.*s--- link "
		        "lines:\n%.*s--- message octets:\n%.*s\n---\n",
		        (int)whole.got.len, whole.got.data ? whole.got.data : "",
		        (int)whole.lines.len, whole.lines.data ? whole.lines.data : "",
		        (int)whole.msg.len, whole.msg.data ? whole.msg.data : "");
		FAIL("the split run differs from the unsplit one (above; the "
		     "split one below)");
	}
	free_run(r);
	for (outcome *o = &whole; o; o = o == &whole ? &cut : NULL) {
		sg_buf_free(&o->got);
		sg_buf_free(&o->lines);
		sg_buf_free(&o->msg);
	}
	return 0;
}
