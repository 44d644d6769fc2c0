/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_pipeline.c: what a client sees of pipelining (RFC 2920)
 * and of the command guards, through the real session code (driver.h) and
 * a scripted upstream link.
 *
 * Pinned here: the RCPT and DATA lines behind a MAIL or RCPT reach the
 * upstream before its reply; every command gets the reply it would get
 * without pipelining (the sequence, max_recipients and syntax guards see
 * the state the replies before it left); the replies go back in the order
 * of the commands, together, once the group is answered; a 2xx or 354 for
 * a command refused to the client closes the link (fail closed); a lost
 * upstream never leaves the client waiting; a half-closed client gets
 * every reply before the close; chunks after an RSET the upstream refused
 * are answered, never fed to the link.  When exactly a refused group's replies
 * go out, and how early a RCPT held back by max_recipients is relayed,
 * are left open. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "driver.h"

/* The upstream's replies used throughout. */
#define U_MAIL "250 2.1.0 Ok\r\n"
#define U_RCPT "250 2.1.5 Ok\r\n"
#define U_DATA "354 End data with <CR><LF>.<CR><LF>\r\n"
#define U_RSET "250 2.0.0 Ok\r\n"
#define U_QUEUED "250 2.0.0 Ok: queued as 4XyZ1\r\n"
#define U_NO_SENDER "550 5.7.1 <x@example.org>: Sender address rejected\r\n"
#define U_NO_RCPT "550 5.1.1 <b@example.net>: Recipient address rejected\r\n"
#define U_NEED_MAIL "503 5.5.1 Error: need MAIL command\r\n"
#define U_NEED_RCPT "554 5.5.1 Error: no valid recipients\r\n"

/* saslgate's own replies (proxy/reply.c) */
#define GATE_NEED_MAIL "503 5.5.1 Need MAIL command\r\n"
#define GATE_NEED_RCPT "503 5.5.1 Need RCPT command\r\n"
#define GATE_NEED_HELO "503 5.5.1 Send EHLO/HELO first\r\n"
#define GATE_NESTED "503 5.5.1 Nested MAIL command\r\n"
#define GATE_AUTH_REQ "530 5.7.0 Authentication required\r\n"
#define GATE_TOO_MANY "452 4.5.3 Too many recipients\r\n"
#define GATE_SYNTAX "501 5.5.4 Syntax error in parameters\r\n"
#define GATE_BAD_ADDR "553 5.1.3 Bad address syntax\r\n"
#define GATE_CONTROL "501 5.5.2 Control character in command\r\n"
#define GATE_BAD_PARAM "555 5.5.4 Parameter not recognized or not supported\r\n"
#define GATE_DOWN "451 4.4.1 Upstream server not available, try again later\r\n"
#define GATE_UNKNOWN "502 5.5.1 Command not recognized\r\n"
#define GATE_HELP "214 2.0.0 See RFC 5321 and RFC 4954\r\n"
#define GATE_BYE "221 2.0.0 Bye\r\n"
#define GATE_TOO_MANY_ERR "421 4.7.0 gate.test Too many errors\r\n"
#define GATE_BAD_SEQ "503 5.5.1 Bad sequence of commands\r\n"

/* A session with EHLO done (extra: config lines, driver.h). */
static int start(drv *d, const char *extra)
{
	if (!ASSERT_EQ(drv_start(d, extra), 0))
		return -1;
	return ASSERT_EQ(drv_ehlo(d), 0) ? 0 : -1;
}

/* A session whose link is open and idle: one MAIL (which opens it) and an
 * RSET, answered.  Returns the number of lines the link has had. */
static size_t start_linked(drv *d, const char *extra)
{
	if (start(d, extra) < 0)
		return 0;
	drv_send(d, "MAIL FROM:<warm@example.org>\r\n");
	drv_run(d);
	link_reply(d, U_MAIL);
	drv_run(d);
	drv_send(d, "RSET\r\n");
	drv_run(d);
	link_reply(d, U_RSET);
	drv_run(d);
	ASSERT_STR_EQ(drv_take(d), U_MAIL U_RSET);
	ASSERT_EQ(d->nopen, 1u);
	ASSERT_EQ(link_nlines(d), 2u);
	return link_nlines(d);
}

/* The upstream answers the oldest unanswered commands with these replies,
 * one loop step each: before each, the session has relayed what it would. */
static void answer_at(const char *file, int line, drv *d, ...)
{
	va_list ap;
	va_start(ap, d);
	for (const char *r; (r = va_arg(ap, const char *));) {
		drv_run(d);
		check_at(link_reply(d, r) == 0, file, line,
		         "no command awaits the reply %.*s", (int)strcspn(r, "\r\n"),
		         r);
		drv_run(d);
	}
	va_end(ap);
}
#define ANSWER(d, ...) answer_at(__FILE__, __LINE__, d, __VA_ARGS__, NULL)

/* The end of every test: no call on a closed link, everything closed and
 * freed. */
static void stop(drv *d)
{
	ASSERT_EQ(d->misuse, 0u);
	ASSERT_EQ(drv_stop(d), 0);
}

/* ---- sending ahead, answering at the turn ---- */

/* MAIL, RCPT, RCPT, DATA in one write, the message behind it: all four
 * lines reach the upstream before its first reply, in canonical form; the
 * client hears nothing until the last of them is answered, then the four
 * replies in order, in one write; what follows DATA is message text, never
 * a command. */
static void test_group_sent_ahead(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "mail from:<Alice@Example.org> AUTH=<> BODY=7BIT\r\n"
	             "rcpt to: <bob@example.net>\r\n"
	             "Rcpt To:<carol@example.net>\r\n"
	             "data\r\n"
	             "Subject: pipelined\r\n"
	             "\r\n"
	             "RCPT TO:<eve@example.com>\r\n"
	             ".\r\n");
	drv_run(&d);
	if (ASSERT_EQ(link_nlines(&d), b + 4)) {
		ASSERT_STR_EQ(link_line(&d, b), "MAIL FROM:<Alice@Example.org> "
		                                "BODY=7BIT\r\n");
		ASSERT_STR_EQ(link_line(&d, b + 1), "RCPT TO:<bob@example.net>\r\n");
		ASSERT_STR_EQ(link_line(&d, b + 2),
		              "RCPT TO:<carol@example.net>\r\n");
		ASSERT_STR_EQ(link_line(&d, b + 3), "DATA\r\n");
	}
	/* the client's AUTH= is not passed on; the link is told it was there */
	ASSERT(d.cmd[b].mail && d.cmd[b].auth_param);
	ASSERT_EQ(link_unanswered(&d), 4u);
	ASSERT_STR_EQ(drv_client_text(&d), "");

	/* one reply per loop step: still nothing for the client */
	const char *up[] = {U_MAIL, U_RCPT, U_RCPT};
	for (int i = 0; i < 3; i++) {
		link_reply(&d, up[i]);
		drv_run(&d);
		ASSERT_STR_EQ(drv_client_text(&d), "", "after reply %d", i);
	}
	link_reply(&d, U_DATA);
	drv_run(&d);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_RCPT U_DATA);
	/* the bytes after DATA went to the message, none as a command */
	ASSERT_EQ(link_nlines(&d), b + 4);
	ASSERT_BUF_EQ(d.data.data, d.data.len,
	              "Subject: pipelined\r\n\r\nRCPT TO:<eve@example.com>\r\n"
	              ".\r\n");
	ASSERT_EQ(d.ndata_end, 1u);
	link_reply(&d, U_QUEUED);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_QUEUED);
	ASSERT_EQ(d.nclose, 0u);
	stop(&d);
}

/* The same group answered by the upstream at once (one read upstream, one
 * callback here): the same replies, in order, in one write. */
static void test_group_answered_at_once(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "RCPT TO:<c@example.net>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 4);
	link_reply(&d, U_MAIL);
	link_reply(&d, U_RCPT);
	link_reply(&d, U_NO_RCPT);
	link_reply(&d, U_DATA);
	drv_run(&d);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_NO_RCPT U_DATA);
	drv_send(&d, "hello\r\n.\r\n");
	drv_run(&d);
	link_reply(&d, U_QUEUED);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_QUEUED);
	ASSERT_BUF_EQ(d.data.data, d.data.len, "hello\r\n.\r\n");
	stop(&d);
}

/* The first MAIL of a session opens the link; the group behind it waits
 * for the link, then goes as any other: all its lines before MAIL's
 * reply, the replies in order once all are in. */
static void test_group_behind_link_open(void)
{
	drv d;
	if (start(&d, NULL) < 0)
		goto out;
	d.ready_reply = NULL; /* ready is held: the link is still opening */
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(d.nopen, 1u);
	ASSERT_EQ(link_nlines(&d), 0u);
	ASSERT_STR_EQ(drv_client_text(&d), "");
	link_ready(&d, DRV_READY_OK);
	drv_run(&d);
	ASSERT_STR_EQ(link_lines(&d), "MAIL FROM:<a@example.org>\r\n"
	                              "RCPT TO:<b@example.net>\r\nDATA\r\n");
	ASSERT_STR_EQ(drv_client_text(&d), "");
	const char *up[] = {U_MAIL, U_RCPT, U_DATA};
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(link_reply(&d, up[i]), 0, "reply %d", i);
		drv_run(&d);
	}
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_DATA);
out:
	stop(&d);
}

/* The end of a message and the next transaction in one write: the next
 * MAIL waits for the message's final reply, and that reply goes out with
 * the next group's, in order. */
static void test_next_transaction_after_dot(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	ANSWER(&d, U_MAIL, U_RCPT, U_DATA);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_DATA);
	drv_send(&d, "one\r\n.\r\nMAIL FROM:<c@example.org>\r\n"
	             "RCPT TO:<d@example.net>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_EQ(d.ndata_end, 1u);
	ASSERT_BUF_EQ(d.data.data, d.data.len, "one\r\n.\r\n");
	ASSERT_EQ(link_nlines(&d), b + 3); /* nothing of the next one yet */
	ANSWER(&d, U_QUEUED);
	if (ASSERT_GE(link_nlines(&d), b + 4))
		ASSERT_STR_EQ(link_line(&d, b + 3), "MAIL FROM:<c@example.org>\r\n");
	ANSWER(&d, U_MAIL, U_RCPT);
	ASSERT_STR_EQ(drv_client_text(&d), "");
	ANSWER(&d, U_DATA);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_QUEUED U_MAIL U_RCPT U_DATA);
	ASSERT_STR_EQ(link_lines(&d) + strlen("MAIL FROM:<warm@example.org>\r\n"
	                                      "RSET\r\n"),
	              "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	              "DATA\r\nMAIL FROM:<c@example.org>\r\n"
	              "RCPT TO:<d@example.net>\r\nDATA\r\n");
	stop(&d);
}

/* EHLO inside a transaction resets it (RFC 5321 4.1.4): the link gets an
 * RSET whose reply nobody sees, and the next MAIL's reply is the MAIL's,
 * not the RSET's. */
static void test_ehlo_in_transaction(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
	ANSWER(&d, U_MAIL, U_RCPT);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT);
	ASSERT_EQ(drv_ehlo(&d), 0);
	if (ASSERT_EQ(link_nlines(&d), b + 3))
		ASSERT_STR_EQ(link_line(&d, b + 2), "RSET\r\n");
	drv_send(&d, "RCPT TO:<b@example.net>\r\nMAIL FROM:<x@example.org>\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 4);
	ANSWER(&d, U_RSET, U_NO_SENDER);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_MAIL U_NO_SENDER);
	ASSERT_EQ(d.nclose, 0u);
	stop(&d);
}

/* The link cannot be opened: the MAIL gets the link's 4xx, the rest of
 * the group saslgate's 503s; nothing is relayed; the next MAIL tries a
 * new link. */
static void test_link_open_refused(void)
{
	drv d;
	if (start(&d, NULL) < 0)
		goto out;
	d.ready_reply = "454 4.7.0 Upstream refused the client identity\r\n";
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d),
	              "454 4.7.0 Upstream refused the client identity\r\n"
	              GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nopen, 1u);
	ASSERT_EQ(link_nlines(&d), 0u);
	ASSERT_EQ(d.nclose, 0u); /* a refused open is closed by the link */
	d.ready_reply = DRV_READY_OK;
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	ASSERT_EQ(d.nopen, 2u);
	ASSERT_EQ(link_nlines(&d), 1u);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
out:
	stop(&d);
}

/* ---- refusals, and replies to lines relayed before their turn ---- */

/* MAIL refused upstream: the RCPT and DATA behind it (relayed ahead) get
 * saslgate's 503s, in order after the 550, whatever the upstream answers
 * them; the link stays. */
static void test_mail_refused(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<x@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_NO_SENDER, U_NEED_MAIL, U_NEED_RCPT);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_NO_SENDER GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nclose, 0u);
	/* the next transaction goes on the same link */
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	ANSWER(&d, U_MAIL);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
	ASSERT_EQ(link_nlines(&d), b + 4);
	ASSERT_EQ(d.nopen, 1u);
	stop(&d);
}

/* An upstream that accepts the RCPT after refusing the MAIL: the client
 * never sees that 2xx (nor a 354 for the DATA); the link is closed with
 * its transaction, and the next MAIL opens a new one. */
static void test_orphan_accepted(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<x@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_NO_SENDER, U_RCPT);
	ASSERT_STR_EQ(drv_take(&d), U_NO_SENDER GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nclose, 1u);
	/* the DATA's reply cannot come: the link is closed */
	ASSERT_EQ(link_unanswered(&d), 0u);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	ANSWER(&d, U_MAIL);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
	ASSERT_EQ(d.nopen, 2u);
	ASSERT_EQ(link_nlines(&d), b + 4);
	stop(&d);
}

/* The same, the upstream's three replies in one read: 550, then 250 and
 * 354 for the RCPT and DATA.  No 2xx and no 354 reach the client. */
static void test_orphan_accepted_at_once(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<x@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	link_reply(&d, U_NO_SENDER);
	link_reply(&d, U_RCPT);
	link_reply(&d, U_DATA);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_NO_SENDER GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(d.ndata_end, 0u);
	stop(&d);
}

/* The client sends its next MAIL without waiting for the replies to a
 * group whose MAIL the upstream refuses and whose RCPT it then accepts.
 * Whatever that MAIL's fate, it is never answered with the stray 2xx:
 * the link that gave it is closed, and the MAIL gets a reply from a link
 * opened after (or, if it was already relayed on the old one, 451
 * 4.4.1: an upstream lost mid-command).  Never a hang. */
static void test_orphan_accepted_while_waiting(void)
{
	drv d;
	start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<x@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	link_reply(&d, U_NO_SENDER);
	drv_run(&d);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	link_reply(&d, U_RCPT); /* the stray 2xx */
	drv_run(&d);
	ASSERT_EQ(d.nclose, 1u);
	if (d.nopen == 2) /* the MAIL went to a new link */
		ANSWER(&d, U_MAIL);
	ASSERT_EQ(link_unanswered(&d), 0u);
	ASSERT_STR_EQ(drv_take(&d), d.nopen == 2 ? U_NO_SENDER GATE_NEED_MAIL
	                                           GATE_NEED_MAIL U_MAIL
	                                         : U_NO_SENDER GATE_NEED_MAIL
	                                           GATE_NEED_MAIL GATE_DOWN);
	stop(&d);
}

/* Every RCPT refused: the DATA behind them gets saslgate's 503 at its
 * turn.  Refused upstream too, the link stays; should the upstream answer
 * it 354, the link is closed instead of a 354 reaching the client. */
static void test_data_after_refused_rcpts(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_MAIL, U_NO_RCPT, U_NEED_RCPT);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_NO_RCPT GATE_NEED_RCPT);
	ASSERT_EQ(d.nclose, 0u);
	drv_send(&d, "RSET\r\n");
	ANSWER(&d, U_RSET);
	ASSERT_STR_EQ(drv_take(&d), U_RSET);

	b = link_nlines(&d);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_MAIL, U_NO_RCPT, U_DATA);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_NO_RCPT GATE_NEED_RCPT);
	ASSERT_EQ(d.nclose, 1u);
	/* the transaction is gone with the link */
	drv_send(&d, "RCPT TO:<b@example.net>\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_MAIL);
	ASSERT_EQ(link_nlines(&d), b + 3);
	stop(&d);
}

/* ---- the guards, on the state each command's turn sees ---- */

/* max_recipients = 2, three RCPTs behind MAIL.  The third is not relayed
 * while the first two could still both be accepted; with the first
 * refused it is relayed after all; with both accepted it gets 452 4.5.3
 * and never reaches the upstream. */
static void test_max_recipients(void)
{
	drv d;
	size_t b = start_linked(&d, "[limits]\nmax_recipients = 2\n");
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<r1@example.net>\r\n"
	             "RCPT TO:<r2@example.net>\r\nRCPT TO:<r3@example.net>\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_MAIL);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_NO_RCPT, U_RCPT, U_RCPT);
	if (ASSERT_EQ(link_nlines(&d), b + 4))
		ASSERT_STR_EQ(link_line(&d, b + 3), "RCPT TO:<r3@example.net>\r\n");
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_NO_RCPT U_RCPT U_RCPT);
	drv_send(&d, "RSET\r\n");
	ANSWER(&d, U_RSET);
	ASSERT_STR_EQ(drv_take(&d), U_RSET);
	b = link_nlines(&d);

	/* all accepted: the third is over the limit; DATA goes on */
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<r1@example.net>\r\n"
	             "RCPT TO:<r2@example.net>\r\nRCPT TO:<r3@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 3);
	ANSWER(&d, U_MAIL, U_RCPT, U_RCPT);
	ASSERT_STR_EQ(drv_client_text(&d), "");
	ANSWER(&d, U_DATA);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_RCPT GATE_TOO_MANY U_DATA);
	if (ASSERT_EQ(link_nlines(&d), b + 4))
		ASSERT_STR_EQ(link_line(&d, b + 3), "DATA\r\n");
	stop(&d);
}

/* RCPTs with bad syntax get saslgate's reply at their turn and never
 * reach the upstream, behind MAIL as behind an accepted RCPT; the good
 * ones after them are relayed. */
static void test_bad_rcpt(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n"
	             "RCPT TO:<b@example.net\r\n"
	             "RCPT TO:<@example.net>\r\n"
	             "RCPT TO:<b@example.net>\x01\r\n"
	             "RCPT TO:<b@example.net> FOO=1\r\n"
	             "RCPT TO:<c@example.net>\r\n"
	             "RCPT TO:<d@example.net> NOTIFY=NEVER\r\n"
	             "RCPT TO:<e@example.net>\r\n"
	             "DATA\r\n");
	ANSWER(&d, U_MAIL, U_RCPT, U_RCPT, U_DATA);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL GATE_SYNTAX GATE_BAD_ADDR GATE_CONTROL
	                            GATE_BAD_PARAM U_RCPT GATE_BAD_PARAM U_RCPT
	                            U_DATA);
	ASSERT_STR_EQ(link_lines(&d) + strlen("MAIL FROM:<warm@example.org>\r\n"
	                                      "RSET\r\n"),
	              "MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\n"
	              "RCPT TO:<e@example.net>\r\nDATA\r\n");
	ASSERT_EQ(link_nlines(&d), b + 4);
	stop(&d);
}

/* Commands out of sequence get 503 and nothing is relayed; on a
 * require_auth listener MAIL gets 530 and no link is opened. */
static void test_sequence_guards(void)
{
	drv d;
	if (!ASSERT_EQ(drv_start(&d, NULL), 0))
		goto out;
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_HELO);
	if (!ASSERT_EQ(drv_ehlo(&d), 0))
		goto out;
	drv_send(&d, "RCPT TO:<b@example.net>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nopen, 0u);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	drv_send(&d, "DATA\r\nMAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL GATE_NEED_RCPT GATE_NESTED);
	ASSERT_EQ(link_nlines(&d), 1u);
	/* pipelined, DATA with no recipient accepted or in flight is not sent
	 * ahead either */
	drv_send(&d, "RSET\r\n");
	drv_run(&d);
	link_reply(&d, U_RSET);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_RSET);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), 3u);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL GATE_NEED_RCPT);
	ASSERT_STR_EQ(link_lines(&d), "MAIL FROM:<a@example.org>\r\nRSET\r\n"
	                              "MAIL FROM:<a@example.org>\r\n");
out:
	stop(&d);

	if (!ASSERT_EQ(start(&d, "[listener test]\nrequire_auth = yes\n"), 0))
		goto out2;
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_AUTH_REQ GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nopen, 0u);
	ASSERT_EQ(link_nlines(&d), 0u);
out2:
	stop(&d);
}

/* Replies of saslgate's own between relayed commands wait for their turn:
 * HELP and an unknown verb behind MAIL are answered after MAIL's reply
 * and before the next RCPT's, all in one write. */
static void test_local_replies_in_order(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nHELP\r\n"
	             "RCPT TO:<b@example.net>\r\nXYZZY\r\n"
	             "RCPT TO:<c@example.net>\r\n");
	drv_run(&d);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	link_reply(&d, U_RCPT);
	drv_run(&d);
	ASSERT_STR_EQ(drv_client_text(&d), "");
	link_reply(&d, U_RCPT);
	drv_run(&d);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL GATE_HELP U_RCPT GATE_UNKNOWN U_RCPT);
	ASSERT_EQ(link_nlines(&d), b + 3);
	stop(&d);
}

/* RSET behind an accepted RCPT, in one write: relayed after the RCPT's
 * reply, and the transaction is gone. */
static void test_rset_in_group(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "RSET\r\n");
	drv_run(&d);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	/* RSET waits for the RCPT's reply: it is no line sent ahead */
	ASSERT_EQ(link_nlines(&d), b + 2);
	link_reply(&d, U_RCPT);
	drv_run(&d);
	if (ASSERT_EQ(link_nlines(&d), b + 3))
		ASSERT_STR_EQ(link_line(&d, b + 2), "RSET\r\n");
	ASSERT_STR_EQ(drv_client_text(&d), "");
	link_reply(&d, U_RSET);
	drv_run(&d);
	ASSERT_EQ(drv_client_reads(&d), 1u);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_RSET);
	drv_send(&d, "DATA\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_MAIL);
	ASSERT_EQ(link_nlines(&d), b + 3);
	stop(&d);
}

/* The eleventh error of a session closes it with 421 4.7.0, also when the
 * errors are the upstream's and the rest of a pipelined group's. */
static void test_error_limit_in_group(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	char group[2048] = "MAIL FROM:<a@example.org>\r\n";
	for (int i = 0; i < 12; i++)
		strcat(group, "RCPT TO:<b@example.net>\r\n");
	drv_send(&d, group);
	drv_run(&d);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	for (int i = 0; i < 12 && link_unanswered(&d); i++) {
		link_reply(&d, U_NO_RCPT);
		drv_run(&d);
	}
	char want[2048] = U_MAIL;
	for (int i = 0; i < 10; i++)
		strcat(want, U_NO_RCPT);
	strcat(want, GATE_TOO_MANY_ERR);
	ASSERT_STR_EQ(drv_take(&d), want);
	ASSERT(d.eof);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(link_unanswered(&d), 0u);
	ASSERT_STR_EQ(link_line(&d, b), "MAIL FROM:<a@example.org>\r\n");
	stop(&d);
}

/* ---- a lost upstream, a client that goes ---- */

/* The upstream goes in the middle of a pipelined group: the command in
 * flight gets 451 4.4.2, the rest saslgate's 503s (the transaction went
 * with the link), at once; the next MAIL opens a new link. */
static void test_lost_mid_group(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "RCPT TO:<c@example.net>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), b + 4);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	link_lose(&d);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL DRV_LOST GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(link_unanswered(&d), 0u);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	drv_run(&d);
	ASSERT_EQ(d.nopen, 2u);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
	stop(&d);

	/* lost before MAIL's reply */
	b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_run(&d);
	link_lose(&d);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), DRV_LOST GATE_NEED_MAIL GATE_NEED_MAIL);
	ASSERT_EQ(d.nclose, 1u);
	stop(&d);
}

/* The upstream goes while the message streams: the message's reply is
 * 451 4.4.2, never a 250; the link is closed and the next MAIL opens a
 * new one. */
static void test_lost_in_data(void)
{
	drv d;
	start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	ANSWER(&d, U_MAIL, U_RCPT, U_DATA);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_DATA);
	drv_send(&d, "Subject: lost\r\n\r\n");
	drv_run(&d);
	link_lose(&d);
	drv_run(&d);
	ASSERT_STR_EQ(drv_client_text(&d), "");
	drv_send(&d, "text\r\n.\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), DRV_LOST);
	ASSERT_EQ(d.nclose, 1u);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	ANSWER(&d, U_MAIL);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
	ASSERT_EQ(d.nopen, 2u);
	stop(&d);
}

/* Half-close right after a pipelined batch: every reply is delivered, in
 * order, then the session closes (and closes its link). */
static void test_half_close(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "RSET\r\n");
	drv_shutdown(&d);
	drv_run(&d);
	const char *up[] = {U_MAIL, U_RCPT, U_RSET};
	for (int i = 0; i < 3; i++) {
		ASSERT(!d.eof, "before reply %d", i);
		ASSERT_EQ(link_reply(&d, up[i]), 0, "reply %d", i);
		drv_run(&d);
	}
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_RSET);
	ASSERT(d.eof);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(link_nlines(&d), b + 3);
	stop(&d);

	/* with DATA last: the 354 comes, then the close; the message the
	 * client never sent is dropped with the link */
	start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "DATA\r\n");
	drv_shutdown(&d);
	drv_run(&d);
	link_reply(&d, U_MAIL);
	link_reply(&d, U_RCPT);
	link_reply(&d, U_DATA);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT U_DATA);
	ASSERT(d.eof);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(d.ndata_end, 0u);
	stop(&d);
}

/* An upstream that refuses RSET inside a chunked message (RFC 3030): the
 * RSET gave the message up at the link whatever its reply (link.h), so
 * the chunks after it are answered 503 and never fed to the link; the
 * LAST among them ends the transaction and the session goes on.  (Fed to
 * a link without a message, a LAST would be swallowed with its reply,
 * and the client would wait for ever.) */
static void test_rset_refused_in_bdat(void)
{
	drv d;
	sg_upstream_caps caps = {.probed = true, .pipelining = true,
	                         .chunking = true};
	if (!ASSERT_EQ(drv_start(&d, NULL), 0))
		return;
	link_set_caps(&caps); /* drv_start clears them */
	ASSERT_EQ(drv_ehlo(&d), 0);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
	ANSWER(&d, U_MAIL, U_RCPT);
	drv_send(&d, "BDAT 5\r\nhello");
	drv_run(&d);
	drv_send(&d, "RSET\r\n");
	ANSWER(&d, "451 4.3.0 Try again later\r\n");
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT "250 2.0.0 5 octets received\r\n"
	              "451 4.3.0 Try again later\r\n");
	drv_send(&d, "BDAT 3\r\nabcBDAT 3 LAST\r\nend");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_BAD_SEQ GATE_BAD_SEQ);
	ASSERT_EQ(d.data.len, 5u, "only the chunk before the RSET");
	ASSERT_EQ(d.ndata_end, 0u);
	ASSERT_EQ(link_unanswered(&d), 0u);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\n");
	ANSWER(&d, U_MAIL);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL);
	stop(&d);
}

/* QUIT at the end of a group: the replies before it, then 221 and the
 * close; QUIT is not relayed. */
static void test_quit_in_group(void)
{
	drv d;
	size_t b = start_linked(&d, NULL);
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "QUIT\r\n");
	drv_run(&d);
	link_reply(&d, U_MAIL);
	drv_run(&d);
	ASSERT(!d.eof);
	link_reply(&d, U_RCPT);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT GATE_BYE);
	ASSERT(d.eof);
	ASSERT_EQ(d.nclose, 1u);
	ASSERT_EQ(link_nlines(&d), b + 2);
	stop(&d);
}

int main(void)
{
	test_group_sent_ahead();
	test_group_answered_at_once();
	test_group_behind_link_open();
	test_link_open_refused();
	test_next_transaction_after_dot();
	test_ehlo_in_transaction();
	test_mail_refused();
	test_orphan_accepted();
	test_orphan_accepted_at_once();
	test_orphan_accepted_while_waiting();
	test_data_after_refused_rcpts();
	test_max_recipients();
	test_bad_rcpt();
	test_sequence_guards();
	test_local_replies_in_order();
	test_rset_in_group();
	test_error_limit_in_group();
	test_lost_mid_group();
	test_lost_in_data();
	test_half_close();
	test_quit_in_group();
	test_rset_refused_in_bdat();
	return CHECK_SUMMARY();
}
