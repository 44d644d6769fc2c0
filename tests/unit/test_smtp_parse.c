/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_smtp_parse.c: the command line framer (proxy/smtp_parse.c):
 * split reads, the 4096-octet limit on both sides, resync after an overlong
 * line, NUL octets, bare LF, pipelined batches, verb/argument split; the
 * MAIL/RCPT path parser, with and without angle brackets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/smtp_parse.h"
#include "check.h"

#define SG_TEST_PATH_MAX 256 /* SG_PATH_MAX, proxy/session_int.h */

/* A session-like driver: bounded buffer, feed in pieces, collect results. */
#define BUFMAX 16384
typedef struct drv {
	sg_lines st;
	char buf[BUFMAX];
	size_t len;
	int nlines, ntoolong, nnul;
	char last[SG_LINE_MAX + 1];
	char all[8][64]; /* first lines seen, for order checks */
} drv;

static void drain(drv *d, size_t limit)
{
	for (int guard = 0; guard < 10000; guard++) {
		const char *line;
		size_t ll, used;
		int r = sg_line_next(&d->st, d->buf, d->len, limit, &line, &ll, &used);
		ASSERT_LE(used, d->len);
		if (r == SG_LINE_TOOLONG)
			d->ntoolong++;
		else if (r == SG_LINE_NUL)
			d->nnul++;
		else if (r == SG_LINE_OK) {
			ASSERT_LT(ll, limit);
			memcpy(d->last, line, ll < SG_LINE_MAX ? ll : SG_LINE_MAX);
			d->last[ll < SG_LINE_MAX ? ll : SG_LINE_MAX] = '\0';
			if (d->nlines < 8)
				snprintf(d->all[d->nlines], 64, "%.*s", (int)(ll > 63 ? 63 : ll),
				         line);
			d->nlines++;
		}
		/* the line points into buf: drop it only after use */
		memmove(d->buf, d->buf + used, d->len - used);
		d->len -= used;
		if (r == SG_LINE_NONE && used == 0)
			return;
	}
	ASSERT(!"drain did not terminate");
}

static void feed(drv *d, const char *p, size_t n, size_t chunk, size_t limit)
{
	while (n > 0) {
		size_t k = n < chunk ? n : chunk;
		/* the session never lets the buffer overflow: the framer must
		 * always have consumed enough */
		ASSERT_LE(d->len + k, BUFMAX);
		if (d->len + k > BUFMAX)
			return;
		memcpy(d->buf + d->len, p, k);
		d->len += k;
		p += k;
		n -= k;
		drain(d, limit);
	}
}

static void feed_str(drv *d, const char *s, size_t chunk)
{
	feed(d, s, strlen(s), chunk, SG_LINE_MAX);
}

static char *line_of(size_t total, const char *ending)
{
	/* "X...X" + ending, total octets including ending */
	size_t e = strlen(ending);
	char *p = malloc(total + 1);
	memset(p, 'X', total - e);
	memcpy(p + total - e, ending, e);
	p[total] = '\0';
	return p;
}

static void test_split_reads(void)
{
	const char *msg = "EHLO client.example\r\nMAIL FROM:<a@b>\r\n";
	for (size_t chunk = 1; chunk <= strlen(msg); chunk++) {
		drv d = {0};
		feed_str(&d, msg, chunk);
		ASSERT_EQ(d.nlines, 2);
		ASSERT_STR_EQ(d.all[0], "EHLO client.example");
		ASSERT_STR_EQ(d.all[1], "MAIL FROM:<a@b>");
		ASSERT_EQ(d.len, 0);
	}
	/* CR and LF in different reads */
	drv d = {0};
	feed_str(&d, "NOOP\r", 100);
	ASSERT_EQ(d.nlines, 0);
	feed_str(&d, "\n", 100);
	ASSERT_EQ(d.nlines, 1);
	ASSERT_STR_EQ(d.last, "NOOP");
}

static void test_limit(void)
{
	/* exactly 4096 octets, CRLF included: accepted */
	for (size_t chunk = 1; chunk <= 8192; chunk *= 8) {
		drv d = {0};
		char *l = line_of(SG_LINE_MAX, "\r\n");
		feed_str(&d, l, chunk);
		ASSERT_EQ(d.nlines, 1);
		ASSERT_EQ(d.ntoolong, 0);
		ASSERT_EQ(strlen(d.last), SG_LINE_MAX - 2);
		free(l);
	}
	/* 4097 octets: one TOOLONG, nothing else, no line leaks through */
	for (size_t chunk = 1; chunk <= 8192; chunk *= 8) {
		drv d = {0};
		char *l = line_of(SG_LINE_MAX + 1, "\r\n");
		feed_str(&d, l, chunk);
		ASSERT_EQ(d.ntoolong, 1);
		ASSERT_EQ(d.nlines, 0);
		ASSERT_EQ(d.len, 0);
		free(l);
	}
	/* bare LF counts the same: 4096 with LF only is fine, 4097 is not */
	{
		drv d = {0};
		char *l = line_of(SG_LINE_MAX, "\n");
		feed_str(&d, l, 4096);
		ASSERT_EQ(d.nlines, 1);
		ASSERT_EQ(d.ntoolong, 0);
		free(l);
		l = line_of(SG_LINE_MAX + 1, "\n");
		feed_str(&d, l, 4096);
		ASSERT_EQ(d.nlines, 1);
		ASSERT_EQ(d.ntoolong, 1);
		free(l);
	}
}

static void test_resync(void)
{
	/* an endless line arriving in pieces never needs more than the limit
	 * and reports once; the next line after its LF is parsed normally */
	drv d = {0};
	char chunk[1000];
	memset(chunk, 'A', sizeof chunk);
	for (int i = 0; i < 100; i++) { /* 100 kB without a line end */
		feed(&d, chunk, sizeof chunk, sizeof chunk, SG_LINE_MAX);
		ASSERT_LT(d.len, SG_LINE_MAX);
	}
	ASSERT_EQ(d.ntoolong, 1);
	ASSERT_EQ(d.nlines, 0);
	feed_str(&d, "AAAA\r\nQUIT\r\n", 3);
	ASSERT_EQ(d.ntoolong, 1);
	ASSERT_EQ(d.nlines, 1);
	ASSERT_STR_EQ(d.last, "QUIT");

	/* overlong line and the next command in the same read */
	drv e = {0};
	char *l = line_of(5000, "\r\nNOOP\r\n");
	feed_str(&e, l, 16384);
	ASSERT_EQ(e.ntoolong, 1);
	ASSERT_EQ(e.nlines, 1);
	ASSERT_STR_EQ(e.last, "NOOP");
	free(l);
}

static void test_auth_limit(void)
{
	/* a 12288-octet SASL response passes under SG_AUTH_LINE_MAX */
	drv d = {0};
	char *l = line_of(SG_AUTH_LINE_MAX, "\r\n");
	feed(&d, l, strlen(l), 1000, SG_AUTH_LINE_MAX);
	ASSERT_EQ(d.ntoolong, 0);
	ASSERT_EQ(d.nlines, 1);
	free(l);
	drv e = {0};
	l = line_of(SG_AUTH_LINE_MAX + 1, "\r\n");
	feed(&e, l, strlen(l), 1000, SG_AUTH_LINE_MAX);
	ASSERT_EQ(e.ntoolong, 1);
	ASSERT_EQ(e.nlines, 0);
	free(l);
}

static void test_nul(void)
{
	drv d = {0};
	const char msg[] = "NO\0OP\r\nNOOP\r\n";
	feed(&d, msg, sizeof msg - 1, 2, SG_LINE_MAX);
	ASSERT_EQ(d.nnul, 1);
	ASSERT_EQ(d.nlines, 1);
	ASSERT_STR_EQ(d.last, "NOOP");
}

static void test_pipelined(void)
{
	drv d = {0};
	const char *batch = "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
	                    "RCPT TO:<c@example.org>\nDATA\r\nRSET";
	feed_str(&d, batch, 16384);
	ASSERT_EQ(d.nlines, 4);
	ASSERT_STR_EQ(d.all[2], "RCPT TO:<c@example.org>"); /* bare LF */
	ASSERT_STR_EQ(d.all[3], "DATA");
	ASSERT_EQ(d.len, 4); /* "RSET" waits for its line end */
	ASSERT(!sg_line_pending(&d.st, d.buf, d.len, SG_LINE_MAX));
	feed_str(&d, "\r\n", 1);
	ASSERT_EQ(d.nlines, 5);

	sg_lines st = {0};
	ASSERT(sg_line_pending(&st, "A\r\nB", 4, SG_LINE_MAX));
	ASSERT(!sg_line_pending(&st, "AB", 2, SG_LINE_MAX));
	/* a bare CR is not a line end */
	drv e = {0};
	feed_str(&e, "NOOP\rQUIT\r\n", 100);
	ASSERT_EQ(e.nlines, 1);
	ASSERT_STR_EQ(e.last, "NOOP\rQUIT");
}

static void test_split(void)
{
	char a[] = "mail FROM:<x@y> SIZE=10  ";
	char *verb, *arg;
	sg_cmd_split(a, &verb, &arg);
	ASSERT_STR_EQ(verb, "MAIL");
	ASSERT_STR_EQ(arg, "FROM:<x@y> SIZE=10");
	char b[] = "quit";
	sg_cmd_split(b, &verb, &arg);
	ASSERT_STR_EQ(verb, "QUIT");
	ASSERT_STR_EQ(arg, "");
	char c[] = "AUTH   PLAIN AGFsaWNlAHNlY3JldA==";
	sg_cmd_split(c, &verb, &arg);
	ASSERT_STR_EQ(verb, "AUTH");
	ASSERT_STR_EQ(arg, "PLAIN AGFsaWNlAHNlY3JldA==");
	char e[] = "";
	sg_cmd_split(e, &verb, &arg);
	ASSERT_STR_EQ(verb, "");
	ASSERT_STR_EQ(arg, "");
}

/* One path: its status, and on SG_PATH_OK the address and what follows. */
static void path_case(const char *in, unsigned flags, int want,
                      const char *addr, const char *rest)
{
	char buf[600], out[SG_TEST_PATH_MAX + 1] = "";
	snprintf(buf, sizeof buf, "%s", in);
	char *p = buf;
	int got = sg_path_parse(&p, out, SG_TEST_PATH_MAX, flags);
	if (!ASSERT_EQ(got, want, "%s", in))
		return;
	if (want != SG_PATH_OK) {
		ASSERT_PTR_EQ(p, buf, "%s", in); /* *pp untouched on a refusal */
		return;
	}
	ASSERT_STR_EQ(out, addr, "%s", in);
	ASSERT_STR_EQ(p, rest, "%s", in);
}

static void test_path(void)
{
	const unsigned N = SG_PATH_NULL_OK, S = SG_PATH_STRICT;
	/* RFC 5321 4.1.2 paths */
	path_case("<a@b.example>", 0, SG_PATH_OK, "a@b.example", "");
	path_case("<a@b.example> SIZE=10", 0, SG_PATH_OK, "a@b.example",
	          " SIZE=10");
	path_case("<>", N, SG_PATH_OK, "", "");
	path_case("<> BODY=7BIT", N | S, SG_PATH_OK, "", " BODY=7BIT");
	path_case("<>", 0, SG_PATH_BAD, NULL, NULL); /* RCPT TO:<> */
	path_case("<@r1,@r2:a@b.example>", 0, SG_PATH_OK, "a@b.example", "");
	path_case("<\"a b>\"@b.example>", 0, SG_PATH_OK, "\"a b>\"@b.example",
	          "");
	path_case("<a>", 0, SG_PATH_OK, "a", ""); /* Postfix takes it too */
	path_case("<a@b.example", 0, SG_PATH_SYNTAX, NULL, NULL);
	path_case("<a@b.example>SIZE=1", 0, SG_PATH_SYNTAX, NULL, NULL);
	path_case("<a b@c.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<a<b@c.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<a,b@c.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<a\tb@c.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<@b.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<a@>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("<\"a@b.example>", 0, SG_PATH_SYNTAX, NULL, NULL);

	/* without angle brackets: Postfix's strict_rfc821_envelopes = no */
	path_case("a@b.example", 0, SG_PATH_OK, "a@b.example", "");
	path_case("a@b.example SIZE=10 BODY=8BITMIME", N, SG_PATH_OK,
	          "a@b.example", " SIZE=10 BODY=8BITMIME");
	path_case("\"a b\"@c.example NOTIFY=NEVER", 0, SG_PATH_OK,
	          "\"a b\"@c.example", " NOTIFY=NEVER");
	path_case("@r1:a@b.example", 0, SG_PATH_OK, "a@b.example", "");
	path_case("", N, SG_PATH_SYNTAX, NULL, NULL); /* "MAIL FROM:" */
	path_case("@b.example", N, SG_PATH_BAD, NULL, NULL);
	path_case("a@", N, SG_PATH_BAD, NULL, NULL);
	path_case("a@b.example>", 0, SG_PATH_BAD, NULL, NULL);
	path_case("a<b@c.example", 0, SG_PATH_BAD, NULL, NULL);
	path_case("a;b@c.example", 0, SG_PATH_BAD, NULL, NULL);
	path_case("a@b\x7f.example", 0, SG_PATH_BAD, NULL, NULL);
	path_case("\"a b@c.example", 0, SG_PATH_SYNTAX, NULL, NULL);
	path_case("@r1:", N, SG_PATH_BAD, NULL, NULL); /* never a null sender */
	/* strict: the brackets are required */
	path_case("a@b.example", S, SG_PATH_SYNTAX, NULL, NULL);
	path_case("a@b.example SIZE=1", N | S, SG_PATH_SYNTAX, NULL, NULL);
	path_case("<a@b.example>", S, SG_PATH_OK, "a@b.example", "");

	/* the length bound, both forms */
	char big[SG_TEST_PATH_MAX + 16];
	memset(big, 'x', sizeof big);
	big[SG_TEST_PATH_MAX - 2] = '@';
	big[SG_TEST_PATH_MAX] = '\0'; /* exactly max octets */
	path_case(big, 0, SG_PATH_OK, big, "");
	big[SG_TEST_PATH_MAX] = 'y';
	big[SG_TEST_PATH_MAX + 1] = '\0';
	path_case(big, 0, SG_PATH_BAD, NULL, NULL);
	char br[sizeof big + 2];
	snprintf(br, sizeof br, "<%s>", big);
	path_case(br, 0, SG_PATH_BAD, NULL, NULL);
}

int main(void)
{
	test_split_reads();
	test_limit();
	test_resync();
	test_auth_limit();
	test_nul();
	test_pipelined();
	test_split();
	test_path();
	return CHECK_SUMMARY();
}
