/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_bdat_session.c: BDAT (RFC 3030) as a client sees it,
 * through the real session code (driver.h) and a scripted upstream link.
 *
 * Pinned here: CHUNKING is offered only when the upstream offers it; a
 * BDAT's octets are message content or dropped, never commands, whatever
 * its reply and however they arrive; a BDAT behind relayed commands waits
 * for their replies (it is not decided ahead); the chunks' replies come in
 * order, a chunk that is not the LAST gets our 250 once taken, the LAST
 * the upstream's reply to the end of the message; a chunk of a transaction
 * refused for its syntax fails the message, whose later chunks get that
 * reply until the LAST ends it; an unreadable size closes the session. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "driver.h"

#define U_MAIL "250 2.1.0 Ok\r\n"
#define U_RCPT "250 2.1.5 Ok\r\n"
#define U_RSET "250 2.0.0 Ok\r\n"
#define U_QUEUED "250 2.0.0 Ok: 11 bytes queued as 4XyZ1\r\n"

#define GATE_NO_CHUNKING "503 5.5.1 BDAT without CHUNKING, use DATA\r\n"
#define GATE_NEED_MAIL "503 5.5.1 Need MAIL command\r\n"
#define GATE_AFTER_BDAT "503 5.5.1 Not allowed after BDAT, send RSET\r\n"
#define GATE_SYNTAX "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"
#define GATE_OK "250 2.0.0 Ok\r\n"

/* what a refused chunk carries: it must never run */
#define CMDS "RSET\r\nQUIT\r\n"

static int start(drv *d, bool chunking)
{
	sg_upstream_caps caps = {.probed = true, .pipelining = true,
	                         .chunking = chunking};
	if (!ASSERT_EQ(drv_start(d, NULL), 0))
		return -1;
	link_set_caps(&caps); /* drv_start clears them */
	drv_send(d, "EHLO client.test\r\n");
	drv_run(d);
	const char *ehlo = drv_take(d);
	ASSERT_EQ(strstr(ehlo, "250-CHUNKING\r\n") != NULL, chunking, "%s", ehlo);
	return 0;
}

/* MAIL and RCPT answered: a transaction with a recipient. */
static void envelope(drv *d)
{
	drv_send(d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
	drv_run(d);
	link_reply(d, U_MAIL);
	link_reply(d, U_RCPT);
	drv_run(d);
	ASSERT_STR_EQ(drv_take(d), U_MAIL U_RCPT);
}

static void stop(drv *d)
{
	ASSERT_EQ(d->misuse, 0u);
	ASSERT_EQ(drv_stop(d), 0);
}

/* MAIL, RCPT and two chunks in one write: the BDAT waits for the replies
 * due; then 250 for the first chunk, the upstream's reply for the LAST;
 * the octets that look like commands are content. */
static void test_pipelined(void)
{
	drv d;
	if (start(&d, true) < 0)
		return;
	drv_send(&d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
	             "BDAT 12\r\n" CMDS "bdat 6 last\r\nMAIL\r");
	drv_run(&d);
	ASSERT_EQ(link_nlines(&d), 2u); /* MAIL, RCPT: nothing else yet */
	ASSERT_EQ(d.data.len, 0u);
	link_reply(&d, U_MAIL);
	link_reply(&d, U_RCPT);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_MAIL U_RCPT "250 2.0.0 12 octets received\r\n");
	/* the LAST's octets are in part: the message is not over */
	ASSERT_EQ(d.ndata_end, 0u);
	drv_send(&d, "\n");
	drv_run(&d);
	ASSERT_EQ(d.ndata_end, 1u);
	ASSERT_BUF_EQ(d.data.data, d.data.len, CMDS "MAIL\r\n");
	ASSERT_STR_EQ(drv_take(&d), "");
	link_reply(&d, U_QUEUED);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_QUEUED);
	ASSERT_EQ(link_nlines(&d), 2u); /* no RSET, no QUIT, no MAIL relayed */
	/* the transaction is over: a new one may begin */
	envelope(&d);
	stop(&d);
}

/* A hundred chunks of one octet and BDAT 0 LAST in one write: a hundred
 * 250s in order, then the upstream's reply. */
static void test_hundred(void)
{
	drv d;
	if (start(&d, true) < 0)
		return;
	envelope(&d);
	char wire[100 * 12 + 32];
	size_t n = 0;
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(wire + n, sizeof wire - n, "BDAT 1\r\n%c",
		                      "ab\r\n."[i % 5]);
	snprintf(wire + n, sizeof wire - n, "BDAT 0 LAST\r\n");
	drv_send(&d, wire);
	drv_run(&d);
	ASSERT_EQ(d.ndata_end, 1u);
	ASSERT_EQ(d.data.len, 100u);
	link_reply(&d, U_QUEUED);
	drv_run(&d);
	char want[100 * 32 + 64];
	size_t w = 0;
	for (int i = 0; i < 100; i++)
		w += (size_t)snprintf(want + w, sizeof want - w,
		                      "250 2.0.0 1 octets received\r\n");
	snprintf(want + w, sizeof want - w, U_QUEUED);
	ASSERT_STR_EQ(drv_take(&d), want);
	stop(&d);
}

/* Refused BDATs: without CHUNKING, before MAIL, RCPT or DATA inside a
 * chunked transaction; their octets never run. */
static void test_refused(void)
{
	drv d;
	if (start(&d, false) < 0)
		return;
	drv_send(&d, "BDAT 12 LAST\r\n" CMDS "NOOP\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NO_CHUNKING GATE_OK);
	stop(&d);

	if (start(&d, true) < 0)
		return;
	drv_send(&d, "BDAT 12\r\n" CMDS "NOOP\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), GATE_NEED_MAIL GATE_OK);
	envelope(&d);
	drv_send(&d, "BDAT 3\r\nabcRCPT TO:<c@example.net>\r\nDATA\r\n");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), "250 2.0.0 3 octets received\r\n"
	                            GATE_AFTER_BDAT GATE_AFTER_BDAT);
	/* RSET ends it; the link's part goes with it (the link's RSET) */
	drv_send(&d, "RSET\r\n");
	drv_run(&d);
	link_reply(&d, U_RSET);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), U_RSET);
	ASSERT_EQ(d.ndata_end, 0u);
	envelope(&d);
	stop(&d);
}

/* A chunk refused for its syntax fails the message: the LAST after it gets
 * the same reply and ends the transaction; nothing is delivered. */
static void test_failed_message(void)
{
	drv d;
	if (start(&d, true) < 0)
		return;
	envelope(&d);
	drv_send(&d, "BDAT 3\r\nabcBDAT 12 FIRST\r\n" CMDS "BDAT 2 LAST\r\nxy");
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), "250 2.0.0 3 octets received\r\n"
	                            GATE_SYNTAX GATE_SYNTAX);
	ASSERT_EQ(d.ndata_end, 0u);
	ASSERT_BUF_EQ(d.data.data, d.data.len, "abc");
	/* over: a new transaction may begin */
	envelope(&d);
	stop(&d);
}

/* A size that is not a number: the octets after it cannot be told from
 * commands, so the session ends with 421. */
static void test_unreadable_size(void)
{
	drv d;
	if (start(&d, true) < 0)
		return;
	drv_send(&d, "BDAT 1O\r\n" CMDS);
	drv_run(&d);
	ASSERT_STR_EQ(drv_take(&d), "421 4.5.4 gate.test BDAT chunk size "
	                            "unreadable, closing connection\r\n");
	ASSERT(d.eof);
	stop(&d);
}

int main(void)
{
	test_pipelined();
	test_hundred();
	test_refused();
	test_failed_message();
	test_unreadable_size();
	return CHECK_SUMMARY();
}
