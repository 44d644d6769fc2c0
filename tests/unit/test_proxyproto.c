/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_proxyproto.c: PROXY protocol v1/v2 parser (proxy/proxyproto.c).
 *
 * Valid headers of every kind parse to the right addresses and length; every
 * proper prefix of a valid header asks for more (0); malformed input and the
 * wrong version are refused (-1) as early as possible, so an SMTP client
 * talking to a proxy_protocol listener is refused at its first byte. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "../../common/config.h"
#include "../../proxy/proxyproto.h"
#include "check.h"

static int parse(const void *b, size_t n, int mode, sg_pp_result *r,
                 const char **why)
{
	return sg_pp_parse((const unsigned char *)b, n, mode, r, why);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf,
                            size_t len, unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		*port = ntohs(s->sin_port);
		return inet_ntop(AF_INET, &s->sin_addr, buf, (socklen_t)len);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		*port = ntohs(s->sin6_port);
		return inet_ntop(AF_INET6, &s->sin6_addr, buf, (socklen_t)len);
	}
	*port = 0;
	return "none";
}

/* Every proper prefix of a valid header must return 0 (need more). */
static void check_prefixes(const void *h, size_t n, int mode, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		sg_pp_result r;
		const char *why = NULL;
		int rc = parse(h, i, mode, &r, &why);
		ASSERT_EQ(rc, 0, "%s: prefix of %zu/%zu octets (%s)", name, i, n,
		          why ? why : "-");
	}
}

static void expect_ok(const void *h, size_t n, int mode, const char *name,
                      int version, const char *src, unsigned sport,
                      const char *dst, unsigned dport)
{
	sg_pp_result r;
	const char *why = NULL;
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	unsigned p1, p2;

	check_prefixes(h, n, mode, name);
	int rc = parse(h, n, mode, &r, &why);
	ASSERT_EQ(rc, (int)n, "%s (%s)", name, why ? why : "-");
	if (rc <= 0)
		return;
	ASSERT_EQ(r.version, version, "%s", name);
	const char *s = addr_str(&r.src, a, sizeof a, &p1);
	const char *d = addr_str(&r.dst, b, sizeof b, &p2);
	if (!src) {
		ASSERT(r.local, "%s: expected local", name);
		return;
	}
	ASSERT(!r.local, "%s: unexpected local", name);
	ASSERT_STR_EQ(s, src, "%s", name);
	ASSERT_EQ(p1, sport, "%s", name);
	ASSERT_STR_EQ(d, dst, "%s", name);
	ASSERT_EQ(p2, dport, "%s", name);

	/* Trailing SMTP bytes after the header are not part of it. */
	unsigned char more[SG_PP_MAX + 32];
	memcpy(more, h, n);
	memcpy(more + n, "EHLO x\r\n", 8);
	rc = parse(more, n + 8, mode, &r, &why);
	ASSERT_EQ(rc, (int)n, "%s + EHLO", name);
}

static void expect_bad(const void *h, size_t n, int mode, const char *name)
{
	sg_pp_result r;
	const char *why = NULL;
	int rc = parse(h, n, mode, &r, &why);
	ASSERT_EQ(rc, -1, "%s", name);
	ASSERT(rc != -1 || (why && *why), "%s: no reason given", name);
}

#define V1(s) (s), sizeof(s) - 1

static void test_v1(void)
{
	expect_ok(V1("PROXY TCP4 192.0.2.1 198.51.100.2 56324 587\r\n"), SG_PP_V1,
	          "v1 tcp4", 1, "192.0.2.1", 56324, "198.51.100.2", 587);
	expect_ok(V1("PROXY TCP4 192.0.2.1 198.51.100.2 56324 587\r\n"),
	          SG_PP_ANY, "v1 tcp4 any", 1, "192.0.2.1", 56324, "198.51.100.2",
	          587);
	expect_ok(V1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), SG_PP_V1,
	          "v1 tcp4 extremes", 1, "0.0.0.0", 0, "255.255.255.255", 65535);
	expect_ok(V1("PROXY TCP6 2001:db8::1 2001:db8::2 40000 465\r\n"),
	          SG_PP_ANY, "v1 tcp6", 1, "2001:db8::1", 40000, "2001:db8::2",
	          465);
	expect_ok(V1("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"), SG_PP_V1,
	          "v1 tcp6 mapped", 1, "::ffff:192.0.2.1", 1, "::1", 2);
	expect_ok(V1("PROXY UNKNOWN\r\n"), SG_PP_V1, "v1 unknown", 1, NULL, 0,
	          NULL, 0);
	expect_ok(V1("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 "
	             "65535\r\n"),
	          SG_PP_ANY, "v1 unknown with junk", 1, NULL, 0, NULL, 0);

	/* The longest legal v1 header (spec 2.1 worst case) is 107 octets. */
	const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
	                      "65535\r\n";
	ASSERT_EQ(strlen(longest), 104);
	expect_ok(longest, strlen(longest), SG_PP_V1, "v1 longest tcp6", 1,
	          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

	/* Malformed: each of these must be refused. */
	expect_bad(V1("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "double space");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n"), SG_PP_V1,
	           "trailing space");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n"), SG_PP_V1,
	           "bare LF");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX"), SG_PP_V1,
	           "CR without LF");
	expect_bad(V1("PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "octet 256");
	expect_bad(V1("PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "three octets");
	expect_bad(V1("PROXY TCP4 192.0.02.1 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "leading zero octet");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n"), SG_PP_V1,
	           "port 65536");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n"), SG_PP_V1,
	           "port leading zero");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 -2\r\n"), SG_PP_V1,
	           "negative port");
	expect_bad(V1("PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "v6 address in TCP4");
	expect_bad(V1("PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n"), SG_PP_V1,
	           "v4 address in TCP6");
	expect_bad(V1("PROXY TCP6 2001:db8:::1 2001:db8::2 1 2\r\n"), SG_PP_V1,
	           "bad v6");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n"), SG_PP_V1,
	           "missing port");
	expect_bad(V1("PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n"), SG_PP_V1,
	           "UDP4");
	expect_bad(V1("proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n"), SG_PP_ANY,
	           "lower case");
	expect_bad(V1("PROXY UNKNOWNX\r\n"), SG_PP_V1, "UNKNOWNX");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n"), SG_PP_V2,
	           "v1 when v2 required");
	expect_bad(V1("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n"), SG_PP_NO,
	           "mode no");

	/* Too long: an UNKNOWN line without CRLF within 107 octets. */
	char big[200];
	memset(big, 'x', sizeof big);
	memcpy(big, "PROXY UNKNOWN ", 14);
	sg_pp_result r;
	ASSERT_EQ(parse(big, 106, SG_PP_V1, &r, NULL), 0, "106 octets, no CRLF");
	ASSERT_EQ(parse(big, 107, SG_PP_V1, &r, NULL), -1, "107 octets, no CRLF");
	ASSERT_EQ(parse(big, sizeof big, SG_PP_V1, &r, NULL), -1, "200 octets");
	/* 107 octets exactly, CRLF last: accepted. */
	big[105] = '\r';
	big[106] = '\n';
	ASSERT_EQ(parse(big, 107, SG_PP_V1, &r, NULL), 107, "107 octets with CRLF");

	/* Refused at once, not after more bytes: the first byte of an SMTP
	 * command, and a bad byte right after a valid prefix. */
	ASSERT_EQ(parse("E", 1, SG_PP_ANY, &r, NULL), -1, "'E' refused at once");
	ASSERT_EQ(parse("EHLO client.example\r\n", 21, SG_PP_V1, &r, NULL), -1,
	          "EHLO refused");
	ASSERT_EQ(parse("PROXY X", 7, SG_PP_V1, &r, NULL), -1, "PROXY X");
	ASSERT_EQ(parse("PROXY TCP4 1x", 13, SG_PP_V1, &r, NULL), -1, "1x");
	ASSERT_EQ(parse("PROXY TCP4 300", 14, SG_PP_V1, &r, NULL), -1, "300");
	ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 9999", 31, SG_PP_V1, &r, NULL),
	          0, "port in progress");
	ASSERT_EQ(
	    parse("PROXY TCP4 1.2.3.4 5.6.7.8 999999", 33, SG_PP_V1, &r, NULL), -1,
	    "6-digit port refused before CRLF");
	/* NULL out and why are allowed. */
	ASSERT_EQ(sg_pp_parse((const unsigned char *)"PROXY UNKNOWN\r\n", 15,
	                      SG_PP_V1, NULL, NULL),
	          15, "NULL out");
}

static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Build a v2 header: returns its length. */
static size_t v2(unsigned char *b, unsigned char vc, unsigned char fam,
                 const void *addrs, size_t alen, size_t tlv)
{
	memcpy(b, sig, 12);
	b[12] = vc;
	b[13] = fam;
	size_t plen = alen + tlv;
	b[14] = (unsigned char)(plen >> 8);
	b[15] = (unsigned char)plen;
	if (alen)
		memcpy(b + 16, addrs, alen);
	for (size_t i = 0; i < tlv; i++)
		b[16 + alen + i] = (unsigned char)(i == 0 ? 0x04 /* NOOP */ : 0);
	if (tlv >= 3) { /* PP2_TYPE_NOOP with a length covering the rest */
		b[16 + alen + 1] = (unsigned char)((tlv - 3) >> 8);
		b[16 + alen + 2] = (unsigned char)(tlv - 3);
	}
	return 16 + plen;
}

static void test_v2(void)
{
	unsigned char b[SG_PP_MAX + 64];
	unsigned char a4[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x02,
	                        0x4B}; /* 56324 -> 587 */
	unsigned char a6[36] = {0};
	a6[0] = 0x20, a6[1] = 0x01, a6[2] = 0x0d, a6[3] = 0xb8, a6[15] = 1;
	a6[16] = 0x20, a6[17] = 0x01, a6[18] = 0x0d, a6[19] = 0xb8, a6[31] = 2;
	a6[32] = 0x9C, a6[33] = 0x40, a6[34] = 0x01, a6[35] = 0xD1; /* 40000 465 */
	size_t n;

	n = v2(b, 0x21, 0x11, a4, sizeof a4, 0);
	expect_ok(b, n, SG_PP_V2, "v2 inet", 2, "192.0.2.1", 56324,
	          "198.51.100.2", 587);
	expect_ok(b, n, SG_PP_ANY, "v2 inet any", 2, "192.0.2.1", 56324,
	          "198.51.100.2", 587);
	expect_bad(b, n, SG_PP_V1, "v2 when v1 required");
	expect_bad(b, 1, SG_PP_V1, "v2 first byte when v1 required");

	n = v2(b, 0x21, 0x21, a6, sizeof a6, 0);
	expect_ok(b, n, SG_PP_V2, "v2 inet6", 2, "2001:db8::1", 40000,
	          "2001:db8::2", 465);

	/* TLVs (haproxy sends e.g. PP2_TYPE_SSL, AUTHORITY) are skipped. */
	n = v2(b, 0x21, 0x11, a4, sizeof a4, 40);
	expect_ok(b, n, SG_PP_V2, "v2 inet + TLV", 2, "192.0.2.1", 56324,
	          "198.51.100.2", 587);

	/* LOCAL (health checks): family ignored, keep socket addresses. */
	n = v2(b, 0x20, 0x00, NULL, 0, 0);
	expect_ok(b, n, SG_PP_V2, "v2 local", 2, NULL, 0, NULL, 0);
	n = v2(b, 0x20, 0x11, a4, sizeof a4, 0);
	expect_ok(b, n, SG_PP_V2, "v2 local with inet block", 2, NULL, 0, NULL,
	          0);
	/* PROXY with UNSPEC: unknown source, keep the socket's. */
	n = v2(b, 0x21, 0x00, NULL, 0, 0);
	expect_ok(b, n, SG_PP_V2, "v2 proxy unspec", 2, NULL, 0, NULL, 0);

	/* The longest accepted header is SG_PP_MAX octets in total. */
	n = v2(b, 0x21, 0x11, a4, sizeof a4, SG_PP_MAX - 16 - sizeof a4);
	ASSERT_EQ(n, SG_PP_MAX);
	expect_ok(b, n, SG_PP_V2, "v2 at SG_PP_MAX", 2, "192.0.2.1", 56324,
	          "198.51.100.2", 587);
	n = v2(b, 0x21, 0x11, a4, sizeof a4, SG_PP_MAX - 16 - sizeof a4 + 1);
	/* refused as soon as the length field is known, not at the end */
	expect_bad(b, 16, SG_PP_V2, "v2 over SG_PP_MAX (16 octets seen)");

	/* Malformed. */
	n = v2(b, 0x11, 0x11, a4, sizeof a4, 0);
	expect_bad(b, 13, SG_PP_V2, "v2 version 1");
	n = v2(b, 0x22, 0x11, a4, sizeof a4, 0);
	expect_bad(b, 13, SG_PP_V2, "v2 command 2");
	n = v2(b, 0x21, 0x12, a4, sizeof a4, 0);
	expect_bad(b, 14, SG_PP_V2, "v2 inet dgram");
	n = v2(b, 0x21, 0x31, a4, sizeof a4, 0);
	expect_bad(b, 14, SG_PP_V2, "v2 unix");
	n = v2(b, 0x21, 0x41, a4, sizeof a4, 0);
	expect_bad(b, 14, SG_PP_V2, "v2 family 4");
	n = v2(b, 0x21, 0x11, a4, 8, 0); /* block shorter than addresses */
	expect_bad(b, 16, SG_PP_V2, "v2 inet short block");
	n = v2(b, 0x21, 0x21, a6, 20, 0);
	expect_bad(b, 16, SG_PP_V2, "v2 inet6 short block");
	memcpy(b, sig, 12);
	b[6] = 'X';
	expect_bad(b, 7, SG_PP_V2, "v2 bad signature");
	/* A bare CRLF (what a confused client might send first) is a valid
	 * prefix of the v2 signature, but CRLF + 'E' is not. */
	sg_pp_result r;
	ASSERT_EQ(parse("\r\n", 2, SG_PP_V2, &r, NULL), 0, "CRLF is a prefix");
	ASSERT_EQ(parse("\r\nE", 3, SG_PP_ANY, &r, NULL), -1, "CRLF E refused");
	(void)n;
}

int main(void)
{
	test_v1();
	test_v2();
	return CHECK_SUMMARY();
}
