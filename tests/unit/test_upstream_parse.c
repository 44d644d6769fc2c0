/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_upstream_parse.c: xtext, the upstream reply reader, the
 * EHLO extension parser, queue ids and the Received header format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../upstream/identity.h"
#include "../../upstream/received.h"
#include "../../upstream/reply_parse.h"
#include "../../upstream/xtext.h"
#include "check.h"

static void test_xtext(void)
{
	char out[64];
	ASSERT_EQ(sg_xtext_encode(out, sizeof out, "user@example.org"), 16);
	ASSERT_STR_EQ(out, "user@example.org");
	/* '+', '=', space, controls and 8-bit octets become +HH */
	ASSERT_GT(sg_xtext_encode(out, sizeof out, "a+b=c d\x01\xc3\xa9"), 0);
	ASSERT_STR_EQ(out, "a+2Bb+3Dc+20d+01+C3+A9");
	/* a value with " LOGIN=admin" cannot add an attribute */
	ASSERT_GT(sg_xtext_encode(out, sizeof out, "x LOGIN=admin"), 0);
	ASSERT(!strchr(out, ' '));
	ASSERT(!strchr(out, '='));
	/* nor group words for Postfix's tokenizer ("...", <...>, '\') */
	ASSERT_GT(sg_xtext_encode(out, sizeof out, "q\"<a>\\"), 0);
	ASSERT_STR_EQ(out, "q+22+3Ca+3E+5C");
	ASSERT_EQ(sg_xtext_encode(out, sizeof out, ""), 0);
	ASSERT_EQ(out[0], '\0');
	/* too small: -1, never an overflow */
	ASSERT_EQ(sg_xtext_encode(out, 4, "abcd"), -1);
	ASSERT_EQ(sg_xtext_encode(out, 5, "abcd"), 4);
	ASSERT_EQ(sg_xtext_encode(out, 5, "ab+"), -1);
}

/* Feed s in pieces of size step; return the number of complete replies and
 * copy the last one's text. */
static int read_all(const char *s, size_t len, size_t step, int *code,
                    char *last, size_t cap, int *err)
{
	sg_reply_reader r;
	sg_reply_reader_init(&r);
	int n = 0;
	*err = 0;
	size_t off = 0;
	while (off < len) {
		size_t chunk = len - off < step ? len - off : step;
		size_t pos = 0;
		while (pos < chunk) {
			size_t used = 0;
			int rc = sg_reply_read(&r, s + off + pos, chunk - pos, &used);
			pos += used;
			if (rc < 0) {
				*err = 1;
				return n;
			}
			if (rc == 1) {
				n++;
				*code = r.code;
				snprintf(last, cap, "%.*s", (int)r.len, r.text);
			}
		}
		off += chunk;
	}
	return n;
}

static void test_reader(void)
{
	const char *ehlo = "250-mx.example.org Hello\r\n250-PIPELINING\r\n"
	                   "250-SIZE 10240000\r\n250 8BITMIME\r\n220 next\r\n";
	char last[4096];
	int code = 0, err = 0;
	for (size_t step = 1; step <= strlen(ehlo); step++) {
		int n = read_all(ehlo, strlen(ehlo), step, &code, last, sizeof last,
		                 &err);
		ASSERT_EQ(n, 2);
		ASSERT(!err);
		ASSERT_EQ(code, 220);
	}
	/* the multi-line reply is kept whole */
	sg_reply_reader r;
	size_t used;
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, ehlo, strlen(ehlo), &used), 1);
	ASSERT_EQ(r.code, 250);
	ASSERT_EQ(used, strlen(ehlo) - strlen("220 next\r\n"));
	if (ASSERT_EQ(r.len, used))
		ASSERT_MEM_EQ(r.text, ehlo, used);
	/* the next call starts a new reply */
	size_t u2;
	ASSERT_EQ(sg_reply_read(&r, ehlo + used, strlen(ehlo) - used, &u2), 1);
	ASSERT_EQ(r.code, 220);
	ASSERT_STR_EQ(r.text, "220 next\r\n");

	/* bare LF line ends are stored as CRLF */
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, "250-a\n250 b\n", 12, &used), 1);
	ASSERT_STR_EQ(r.text, "250-a\r\n250 b\r\n");
	/* "354" with no text is a complete last line */
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, "354\r\n", 5, &used), 1);
	ASSERT_EQ(r.code, 354);
	/* incomplete: 0 and everything consumed */
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, "250-a\r\n250 b", 12, &used), 0);
	ASSERT_EQ(used, 12);

	/* garbage */
	static const char *const bad[] = {
	    "hello\r\n", "25\r\n", "2500 x\r\n", "250x\r\n",
	    "250-a\r\n251 b\r\n", "199 x\r\n", "600 x\r\n", "\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		sg_reply_reader_init(&r);
		int rc = sg_reply_read(&r, bad[i], strlen(bad[i]), &used);
		ASSERT_EQ(rc, -1);
		ASSERT(r.error);
	}

	/* line bound: SG_REPLY_LINE_MAX octets of text are too many */
	char *big = malloc(SG_REPLY_LINE_MAX + 16);
	memset(big, 'a', SG_REPLY_LINE_MAX + 8);
	memcpy(big, "250 ", 4);
	memcpy(big + SG_REPLY_LINE_MAX + 8, "\r\n", 2);
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, big, SG_REPLY_LINE_MAX + 10, &used), -1);
	/* a line just under the bound is fine (longer than RFC's 512) */
	memcpy(big + SG_REPLY_LINE_MAX - 1, "\r\n", 2);
	sg_reply_reader_init(&r);
	ASSERT_EQ(sg_reply_read(&r, big, SG_REPLY_LINE_MAX + 1, &used), 1);
	ASSERT_GT(SG_REPLY_LINE_MAX, SG_REPLY_LINE_RFC);
	free(big);

	/* total bound: many short continuation lines */
	sg_reply_reader_init(&r);
	int rc = 0;
	for (int i = 0; i < 10000 && rc == 0; i++)
		rc = sg_reply_read(&r, "250-xxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 32, &used);
	ASSERT_EQ(rc, -1);
	ASSERT_LE(r.len, SG_REPLY_MAX);
}

static void test_ehlo(void)
{
	const char *t =
	    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-xclient NAME ADDR PORT PROTO HELO IDENT LOGIN DESTADDR DESTPORT\r\n"
	    "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n"
	    "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
	sg_ehlo e;
	ASSERT_EQ(sg_ehlo_parse(t, strlen(t), &e), 0);
	ASSERT(e.pipelining);
	ASSERT(e.starttls);
	ASSERT(e.eightbitmime);
	ASSERT(e.dsn);
	ASSERT(e.smtputf8);
	ASSERT(e.chunking);
	ASSERT(e.enhancedstatuscodes);
	ASSERT(e.has_size);
	ASSERT_EQ(e.size, 10240000);
	ASSERT(e.auth);
	ASSERT(e.auth_plain);
	ASSERT(e.auth_login);
	ASSERT(e.xclient);
	ASSERT(e.xforward);
	ASSERT_EQ(e.xclient_attrs,
	          (SG_XA_NAME | SG_XA_ADDR | SG_XA_PORT | SG_XA_PROTO | SG_XA_HELO |
	           SG_XA_IDENT | SG_XA_LOGIN | SG_XA_DESTADDR | SG_XA_DESTPORT));
	ASSERT_EQ(e.xforward_attrs,
	          (SG_XA_NAME | SG_XA_ADDR | SG_XA_PROTO | SG_XA_HELO |
	           SG_XA_SOURCE | SG_XA_PORT | SG_XA_IDENT));

	/* the first line is the domain, never an extension */
	const char *t2 = "250-PIPELINING\r\n250 SIZE\r\n";
	ASSERT_EQ(sg_ehlo_parse(t2, strlen(t2), &e), 0);
	ASSERT(!e.pipelining);
	ASSERT(e.has_size);
	ASSERT_EQ(e.size, 0);
	/* a single-line reply: no extensions */
	ASSERT_EQ(sg_ehlo_parse("250 mx\r\n", 8, &e), 0);
	ASSERT(!e.pipelining);
	/* only AUTH LOGIN; XCLIENT without LOGIN */
	const char *t3 = "250-mx\r\n250-AUTH LOGIN CRAM-MD5\r\n"
	                 "250 XCLIENT NAME ADDR\r\n";
	ASSERT_EQ(sg_ehlo_parse(t3, strlen(t3), &e), 0);
	ASSERT(!e.auth_plain);
	ASSERT(e.auth_login);
	ASSERT_EQ(e.xclient_attrs, (SG_XA_NAME | SG_XA_ADDR));
	/* "SIZE junk" is not a number */
	const char *t4 = "250-mx\r\n250 SIZE 12abc\r\n";
	ASSERT_EQ(sg_ehlo_parse(t4, strlen(t4), &e), 0);
	ASSERT_EQ(e.size, 0);
	/* not a 250 */
	ASSERT_EQ(sg_ehlo_parse("502 no\r\n", 8, &e), -1);
}

static void test_queue_id(void)
{
	char q[64];
	const char *p = "250 2.0.0 Ok: queued as 4Xyz12AbC\r\n";
	sg_reply_queue_id(p, strlen(p), q, sizeof q);
	ASSERT_STR_EQ(q, "4Xyz12AbC");
	const char *x = "250 OK id=1qABCd-000123-Ef\r\n";
	sg_reply_queue_id(x, strlen(x), q, sizeof q);
	ASSERT_STR_EQ(q, "1qABCd-000123-Ef");
	const char *n = "250 2.6.0 Queued mail for delivery\r\n";
	sg_reply_queue_id(n, strlen(n), q, sizeof q);
	ASSERT_EQ(q[0], '\0');
	char small[4];
	sg_reply_queue_id(p, strlen(p), small, sizeof small);
	ASSERT_STR_EQ(small, "4Xy");
}

static void test_received(void)
{
	sg_identity id = {
	    .sid = "a1b2c3", .login = "alice@example.org",
	    .client_ip = "192.0.2.7", .client_port = 50123,
	    .client_name = NULL, .helo = "laptop", .esmtp = true,
	    .tls_version = "TLSv1.3", .tls_cipher = "TLS_AES_256_GCM_SHA384",
	    .tls_bits = 256,
	};
	sg_buf b;
	sg_buf_init(&b, 0);
	/* 2026-11-23 10:00:00 UTC */
	setenv("TZ", "UTC", 1);
	ASSERT_EQ(
	    sg_received_build(&b, &id, "mail.example.org", true, false, 1795428000),
	    0);
	sg_buf_append(&b, "", 1);
	const char *want =
	    "Received: from laptop (unknown [192.0.2.7])\r\n"
	    "\tby mail.example.org (saslgate) with ESMTPSA id a1b2c3\r\n"
	    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
	    "\t(authenticated sender: alice@example.org)\r\n"
	    "\t; Mon, 23 Nov 2026 10:00:00 +0000\r\n";
	ASSERT_STR_EQ(b.data, want);

	/* identity none: no user; header mode adds X-Authenticated-User */
	sg_buf_reset(&b);
	sg_received_build(&b, &id, "mx", false, false, 1795428000);
	sg_buf_append(&b, "", 1);
	ASSERT(!strstr(b.data, "alice"));
	ASSERT(!strstr(b.data, "authenticated"));
	sg_buf_reset(&b);
	sg_received_build(&b, &id, "mx", true, true, 1795428000);
	sg_buf_append(&b, "", 1);
	ASSERT(strstr(b.data, "\r\nX-Authenticated-User: alice@example.org\r\n"));

	/* protocol names (RFC 3848) */
	ASSERT_STR_EQ(sg_received_proto(&id), "ESMTPSA");
	sg_identity p = id;
	p.tls_version = NULL;
	ASSERT_STR_EQ(sg_received_proto(&p), "ESMTPA");
	p.login = NULL;
	ASSERT_STR_EQ(sg_received_proto(&p), "ESMTP");
	p.tls_version = "TLSv1.2";
	ASSERT_STR_EQ(sg_received_proto(&p), "ESMTPS");

	/* IPv6, a hostile HELO: no header injection, lines < 998 */
	sg_identity h = id;
	char helo[2000];
	memset(helo, 'h', sizeof helo - 1);
	helo[sizeof helo - 1] = '\0';
	memcpy(helo, "x)\r\nBcc: victim\r\n(", 18);
	h.helo = helo;
	h.client_ip = "2001:db8::1";
	h.client_name = "host.example.net";
	sg_buf_reset(&b);
	sg_received_build(&b, &h, "mx", true, false, 1795428000);
	sg_buf_append(&b, "", 1);
	ASSERT(strstr(b.data, "(host.example.net [IPv6:2001:db8::1])"));
	ASSERT(!strstr(b.data, "\r\nBcc"));
	size_t line = 0;
	for (const char *c = b.data; *c; c++) {
		line = *c == '\n' ? 0 : line + 1;
		ASSERT_LT(line, 998);
		if (*c == '\n' && ASSERT(c > b.data))
			ASSERT_EQ(c[-1], '\r');
	}
	sg_buf_free(&b);
}

static void test_identity_commands(void)
{
	char lines[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
	const char *why = NULL;
	sg_identity id = {.sid = "s", .login = "bob name", .client_ip = "::1",
	                  .client_port = 1234, .helo = "h=x", .esmtp = false};
	/* only what was advertised, in order, xtext values */
	int n = sg_xclient_lines(&id, SG_XA_ADDR | SG_XA_LOGIN | SG_XA_PROTO |
	                                  SG_XA_NAME | SG_XA_HELO,
	                         lines, SG_XCLIENT_LINES, &why);
	ASSERT_EQ(n, 1);
	ASSERT_STR_EQ(lines[0], "XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:::1 "
	                        "PROTO=SMTP HELO=h+3Dx LOGIN=bob+20name\r\n");
	/* a login and no LOGIN attribute offered: -1, never XCLIENT without it */
	why = NULL;
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_ADDR | SG_XA_HELO, lines,
	                           SG_XCLIENT_LINES, &why),
	          -1);
	if (ASSERT_NOT_NULL(why))
		ASSERT(strstr(why, "LOGIN"));
	/* nothing advertised that we could send: -1 (fail closed upstream) */
	id.login = NULL;
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_IDENT, lines, SG_XCLIENT_LINES, &why),
	          -1);
	/* no login: no LOGIN attribute (require_auth = no listeners) */
	id.esmtp = true;
	n = sg_xclient_lines(&id, SG_XA_LOGIN | SG_XA_PORT, lines,
	                     SG_XCLIENT_LINES, &why);
	ASSERT_EQ(n, 1);
	ASSERT_STR_EQ(lines[0], "XCLIENT PORT=1234\r\n");
	/* more than one command's worth: split, nothing cut */
	char name[256];
	memset(name, 'n', 255);
	name[255] = '\0';
	id.client_name = name;
	id.helo = name;
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_NAME | SG_XA_HELO, lines, 1, &why),
	          -1);
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_NAME | SG_XA_HELO, lines, 2, &why),
	          2);
	ASSERT_LE(strlen(lines[0]), SG_XCLIENT_LINE_MAX);
	ASSERT(strstr(lines[0], name));
	ASSERT(strstr(lines[1], name));

	/* the longest login that fits: "XCLIENT LOGIN=" + 496 + CRLF = 512 */
	char login[1100];
	memset(login, 'a', sizeof login);
	login[496] = '\0';
	id.login = login;
	id.client_name = NULL;
	id.helo = "laptop";
	n = sg_xclient_lines(&id, SG_XA_NAME | SG_XA_ADDR | SG_XA_HELO |
	                              SG_XA_LOGIN,
	                     lines, SG_XCLIENT_LINES, &why);
	ASSERT_EQ(n, 2);
	ASSERT_EQ(strlen(lines[1]), SG_XCLIENT_LINE_MAX);
	ASSERT(!strncmp(lines[1], "XCLIENT LOGIN=aaa", 17));
	/* one octet more: refused whole, never cut to a prefix */
	login[496] = 'a';
	login[497] = '\0';
	why = NULL;
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_LOGIN, lines, SG_XCLIENT_LINES, &why),
	          -1);
	if (ASSERT_NOT_NULL(why))
		ASSERT(strstr(why, "LOGIN"));
	/* 120 two-octet characters: 240 octets, 720 in xtext */
	for (int i = 0; i < 120; i++)
		memcpy(login + 2 * i, "\xc3\xa9", 2);
	login[240] = '\0';
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_LOGIN, lines, SG_XCLIENT_LINES, &why),
	          -1);
	ASSERT_NOT_NULL(sg_identity_unfit(&id, SG_ID_XCLIENT));
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_HEADER)); /* UTF-8 header */

	sg_identity f = {.client_ip = "192.0.2.1", .client_port = 25,
	                 .helo = "mx", .esmtp = true};
	unsigned fa = SG_XA_NAME | SG_XA_ADDR | SG_XA_PORT | SG_XA_PROTO |
	              SG_XA_HELO | SG_XA_SOURCE;
	ASSERT_EQ(sg_xforward_lines(&f, fa, lines, SG_XCLIENT_LINES, &why), 1);
	ASSERT_STR_EQ(lines[0], "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.1 "
	                        "PORT=25 PROTO=ESMTP HELO=mx SOURCE=REMOTE\r\n");
	/* a long HELO and name: two commands, each <= 512, all attributes */
	f.helo = name;
	f.client_name = name;
	ASSERT_EQ(sg_xforward_lines(&f, fa, lines, SG_XCLIENT_LINES, &why), 2);
	ASSERT_LE(strlen(lines[0]), SG_XCLIENT_LINE_MAX);
	ASSERT_LE(strlen(lines[1]), SG_XCLIENT_LINE_MAX);
	ASSERT(strstr(lines[0], "SOURCE=") || strstr(lines[1], "SOURCE=REMOTE"));
	/* a HELO whose xtext passes one command: refused, not left out */
	char plus[256];
	memset(plus, '+', 255);
	plus[255] = '\0';
	f.helo = plus;
	ASSERT_EQ(sg_xforward_lines(&f, fa, lines, SG_XCLIENT_LINES, &why), -1);
}

/* NAME=: the confirmed name, [TEMPUNAVAIL] when the lookup failed for
 * now, else [UNAVAILABLE]; the same for XFORWARD (proxy/client_name.h). */
static void test_identity_name(void)
{
	char lines[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
	const char *why = NULL;
	sg_identity id = {.client_ip = "192.0.2.1", .esmtp = true};
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_NAME, lines, 1, &why), 1);
	ASSERT_STR_EQ(lines[0], "XCLIENT NAME=[UNAVAILABLE]\r\n");
	id.client_name_temp = true;
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_NAME, lines, 1, &why), 1);
	ASSERT_STR_EQ(lines[0], "XCLIENT NAME=[TEMPUNAVAIL]\r\n");
	ASSERT_EQ(sg_xforward_lines(&id, SG_XA_NAME, lines, 1, &why), 1);
	ASSERT_STR_EQ(lines[0], "XFORWARD NAME=[TEMPUNAVAIL]\r\n");
	id.client_name = "mx.example.org";
	ASSERT_EQ(sg_xclient_lines(&id, SG_XA_NAME, lines, 1, &why), 1);
	ASSERT_STR_EQ(lines[0], "XCLIENT NAME=mx.example.org\r\n");
	ASSERT_EQ(sg_xforward_lines(&id, SG_XA_NAME, lines, 1, &why), 1);
	ASSERT_STR_EQ(lines[0], "XFORWARD NAME=mx.example.org\r\n");
}

/* The EHLO after XCLIENT: the client's HELO name as it gave it, else the
 * fallback, with a reason. */
static void test_identity_ehlo(void)
{
	char line[512];
	const char *why = NULL;
	sg_identity id = {.helo = "client.example", .esmtp = false};
	ASSERT_EQ(sg_identity_ehlo(line, sizeof line, &id, "gate.example", &why),
	          0);
	ASSERT_STR_EQ(line, "EHLO client.example\r\n");
	ASSERT_NULL(why);
	/* an address literal, quotes, a backslash: one word, sent as it is */
	id.helo = "[192.0.2.7]";
	ASSERT_EQ(sg_identity_ehlo(line, sizeof line, &id, "gate.example", &why),
	          0);
	ASSERT_STR_EQ(line, "EHLO [192.0.2.7]\r\n");
	id.helo = "quo\"te\\";
	ASSERT_EQ(sg_identity_ehlo(line, sizeof line, &id, "gate.example", &why),
	          0);
	ASSERT_STR_EQ(line, "EHLO quo\"te\\\r\n");
	char longest[300];
	memset(longest, 'h', 255);
	longest[255] = '\0';
	id.helo = longest;
	ASSERT_EQ(sg_identity_ehlo(line, sizeof line, &id, "gate.example", &why),
	          0);
	ASSERT_EQ(strlen(line), 5u + 255u + 2u);

	/* 256 octets, and names the session would not have taken */
	longest[255] = 'h';
	longest[256] = '\0';
	const char *const unusable[] = {NULL, "", "two words", "tab\there",
	                                "ctl\x01", "\xc3\xa9t\xc3\xa9", longest};
	for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
		id.helo = unusable[i];
		why = NULL;
		ASSERT_EQ(sg_identity_ehlo(line, sizeof line, &id, "gate.example",
		                           &why),
		          1, "case %zu", i);
		ASSERT_STR_EQ(line, "EHLO gate.example\r\n", "case %zu", i);
		ASSERT_NOT_NULL(why, "case %zu", i);
	}
	/* no room for the line: -1, never a cut command */
	id.helo = "client.example";
	ASSERT_EQ(sg_identity_ehlo(line, 10, &id, "gate.example", &why), -1);
}

/* Header forms of the login: exact, or refused. */
static void test_identity_header(void)
{
	sg_buf b;
	sg_buf_init(&b, 0);
	const char *why = NULL;
	ASSERT_EQ(sg_identity_header_value(&b, "a(b)c\\d \xc3\xa9", true, &why), 0);
	ASSERT_BUF_EQ(b.data, b.len, "a\\(b\\)c\\\\d \xc3\xa9");
	sg_buf_reset(&b);
	ASSERT_EQ(sg_identity_header_value(&b, "a(b) c", false, &why), 0);
	ASSERT_BUF_EQ(b.data, b.len, "a(b) c");
	const char *bad[] = {"", "a\rb", "a\nb", "a\tb", "a\x7f", "\xff",
	                     "\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		sg_buf_reset(&b);
		why = NULL;
		ASSERT_EQ(sg_identity_header_value(&b, bad[i], true, &why), -1);
		ASSERT_NOT_NULL(why);
	}
	/* a field body loses leading and trailing white space */
	ASSERT_EQ(sg_identity_header_value(&b, " bob", false, &why), -1);
	ASSERT_EQ(sg_identity_header_value(&b, "bob ", false, &why), -1);
	sg_buf_free(&b);

	/* length: the Received line naming the user ("\t(authenticated
	 * sender: " + login + ")") stays within 998 octets */
	char login[1100];
	memset(login, 'u', sizeof login);
	login[998 - 25] = '\0';
	sg_identity id = {.login = login};
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_HEADER));
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_XFORWARD));
	login[998 - 25] = 'u';
	login[998 - 25 + 1] = '\0';
	ASSERT_NOT_NULL(sg_identity_unfit(&id, SG_ID_HEADER));
	ASSERT_NOT_NULL(sg_identity_unfit(&id, SG_ID_AUTH));
	ASSERT_NOT_NULL(sg_identity_unfit(&id, SG_ID_XFORWARD));
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_NONE));
	id.login = "ctl\x01";
	ASSERT_NOT_NULL(sg_identity_unfit(&id, SG_ID_XFORWARD));
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_NONE));
	id.login = NULL;
	ASSERT_NULL(sg_identity_unfit(&id, SG_ID_HEADER));

	/* the Received header and X-Authenticated-User carry it whole */
	sg_identity r = {.sid = "s", .login = "b(o)b \xc3\xa9", .client_ip = "::1",
	                 .helo = "h", .esmtp = true};
	sg_buf_init(&b, 0);
	ASSERT_EQ(sg_received_build(&b, &r, "mx", true, true, 1795428000), 0);
	sg_buf_append(&b, "", 1);
	ASSERT(strstr(b.data, "\t(authenticated sender: b\\(o\\)b \xc3\xa9)\r\n"));
	ASSERT(strstr(b.data, "\r\nX-Authenticated-User: b(o)b \xc3\xa9\r\n"));
	sg_buf_free(&b);
}

/* MAIL AUTH= and the log's user=. */
static void test_identity_other_forms(void)
{
	sg_buf b;
	sg_buf_init(&b, 0);
	ASSERT_EQ(sg_identity_mail_auth(&b, "a b+c=d@x"), 0);
	ASSERT_BUF_EQ(b.data, b.len, " AUTH=a+20b+2Bc+3Dd@x");
	sg_buf_reset(&b);
	ASSERT_EQ(sg_identity_mail_auth(&b, NULL), 0);
	ASSERT_BUF_EQ(b.data, b.len, " AUTH=<>");
	sg_buf_free(&b);

	char out[64];
	ASSERT_EQ(sg_identity_log(out, sizeof out, "alice@example.org"), 17);
	ASSERT_STR_EQ(out, "alice@example.org");
	ASSERT_EQ(sg_identity_log(out, sizeof out, "x client=1.2.3.4\"\\+"), 29);
	ASSERT_STR_EQ(out, "x+20client+3D1.2.3.4+22+5C+2B");
	ASSERT_EQ(sg_identity_log(out, sizeof out, NULL), 1);
	ASSERT_STR_EQ(out, "-");
	/* too small: cut but NUL-terminated, the needed length returned */
	ASSERT_EQ(sg_identity_log(out, 4, "\xc3\xa9"), 6);
	ASSERT_STR_EQ(out, "+C3");
	char *d = sg_identity_log_dup("\x01\xff");
	if (ASSERT_NOT_NULL(d))
		ASSERT_STR_EQ(d, "+01+FF");
	free(d);
}

/* A straightforward sg_received_build (five sg_buf_appendf, the user copied
 * by its rule): the fast one built from parts must write the same octets
 * for every identity. */
static void old_clean(char *out, const char *v, bool comment)
{
	size_t o = 0;
	if (!v)
		v = "";
	for (; *v && o < SG_TRACE_VALUE_MAX; v++) {
		unsigned char c = (unsigned char)*v;
		bool ok = c > 32 && c < 127;
		if (comment && (c == '(' || c == ')' || c == '\\'))
			ok = false;
		out[o++] = ok ? (char)c : '?';
	}
	out[o] = '\0';
}

static void old_date(char *out, size_t cap, time_t now)
{
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed",
	                                 "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr",
	                                 "May", "Jun", "Jul", "Aug",
	                                 "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	localtime_r(&now, &tm);
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	snprintf(out, cap, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
	         wd[tm.tm_wday % 7], tm.tm_mday, mo[tm.tm_mon % 12],
	         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
	         off / 60, off % 60);
}

static int old_received_build(sg_buf *out, const sg_identity *id,
                              const char *hostname, bool with_user,
                              bool xauth_header, time_t now)
{
	char helo[SG_TRACE_VALUE_MAX + 1], name[SG_TRACE_VALUE_MAX + 1];
	char ip[SG_TRACE_VALUE_MAX + 1], host[SG_TRACE_VALUE_MAX + 1];
	char sid[SG_TRACE_VALUE_MAX + 1], user[1024], xuser[1024];
	char date[64];
	int rc = 0;

	old_clean(helo, id->helo && *id->helo ? id->helo : "unknown", true);
	old_clean(name, id->client_name && *id->client_name ? id->client_name
	                                                     : "unknown", true);
	old_clean(ip, id->client_ip, true);
	old_clean(host, hostname, true);
	old_clean(sid, id->sid, true);
	size_t u = 0, x = 0;
	for (const char *c = id->login ? id->login : ""; *c; c++) {
		if (*c == '(' || *c == ')' || *c == '\\')
			user[u++] = '\\';
		user[u++] = *c;
		xuser[x++] = *c;
	}
	user[u] = xuser[x] = '\0';
	old_date(date, sizeof date, now);
	rc |= sg_buf_appendf(out, "Received: from %s (%s [%s%s])\r\n", helo, name,
	                     strchr(ip, ':') ? "IPv6:" : "", ip);
	rc |= sg_buf_appendf(out, "\tby %s (saslgate) with %s id %s\r\n", host,
	                     sg_received_proto(id), sid);
	if (id->tls_version && *id->tls_version) {
		char ver[SG_TRACE_VALUE_MAX + 1], ciph[SG_TRACE_VALUE_MAX + 1];
		old_clean(ver, id->tls_version, true);
		old_clean(ciph, id->tls_cipher, true);
		rc |= sg_buf_appendf(out,
		                     "\t(using %s with cipher %s (%u/%u bits))\r\n",
		                     ver, ciph, id->tls_bits, id->tls_bits);
	}
	if (with_user && *user)
		rc |= sg_buf_appendf(out, "\t(authenticated sender: %s)\r\n", user);
	rc |= sg_buf_appendf(out, "\t; %s\r\n", date);
	if (xauth_header && *user)
		rc |= sg_buf_appendf(out, "X-Authenticated-User: %s\r\n", xuser);
	return rc ? -1 : 0;
}

static void test_received_same_as_before(void)
{
	char longv[400];
	memset(longv, 'v', sizeof longv - 1);
	longv[sizeof longv - 1] = '\0';
	const char *helos[] = {NULL, "", "laptop", "a(b)c\\d \x01\xff", longv};
	const char *logins[] = {NULL, "", "alice@example.org", "b(o)b", longv};
	const char *ips[] = {"192.0.2.7", "2001:db8::1", NULL};
	const char *names[] = {NULL, "", "host.example.net"};
	const char *tlsv[] = {NULL, "", "TLSv1.3"};
	const char *zones[] = {"UTC", "Europe/Berlin", "America/St_Johns"};
	time_t times[] = {1795428000, 1795428001, 1795428001, 1751328000};
	int cases = 0;
	for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
		setenv("TZ", zones[z], 1);
		tzset();
		for (size_t h = 0; h < 5; h++)
			for (size_t u = 0; u < 5; u++)
				for (size_t i = 0; i < 3; i++)
					for (size_t n = 0; n < 3; n++)
						for (size_t t = 0; t < 3; t++)
							for (int flags = 0; flags < 4; flags++) {
								sg_identity id = {
								    .sid = (h + u) % 2 ? "s1" : "x(y)",
								    .login = logins[u],
								    .client_ip = ips[i],
								    .client_name = names[n],
								    .helo = helos[h],
								    .esmtp = (u + t) % 2,
								    .tls_version = tlsv[t],
								    .tls_cipher = t ? "TLS_AES_128_GCM_SHA256"
								                    : NULL,
								    .tls_bits = 128};
								/* a date cached for one zone must not
								 * be reused: one zone per process, but
								 * here each zone gets new times */
								time_t now = times[(h + n + t) % 4] +
								             (time_t)z * 100000;
								sg_buf a, b;
								sg_buf_init(&a, 0);
								sg_buf_init(&b, 0);
								ASSERT_EQ(sg_received_build(
								              &a, &id, "mx.example", flags & 1,
								              flags & 2, now),
								          0);
								ASSERT_EQ(old_received_build(
								              &b, &id, "mx.example", flags & 1,
								              flags & 2, now),
								          0);
								if (ASSERT_EQ(a.len, b.len))
									ASSERT_MEM_EQ(a.data, b.data, a.len);
								sg_buf_free(&a);
								sg_buf_free(&b);
								cases++;
							}
	}
	ASSERT_EQ(cases, 3 * 5 * 5 * 3 * 3 * 3 * 4);
	setenv("TZ", "UTC", 1);
	tzset();
}

int main(void)
{
	test_identity_commands();
	test_identity_name();
	test_identity_ehlo();
	test_identity_header();
	test_identity_other_forms();
	test_xtext();
	test_reader();
	test_ehlo();
	test_queue_id();
	test_received();
	test_received_same_as_before();
	return CHECK_SUMMARY();
}
