/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_upstream_scan.c: the DATA scanner (upstream/data_scan.c).
 *
 * Every input is checked whole, split at every byte position, and fed one
 * octet at a time: the output, the octets consumed and the verdict must not
 * depend on how the client's bytes arrive.  test_reference also compares the
 * fast scanner with the octet-at-a-time one it replaced (tests/fuzz/
 * scan_ref.c; fuzz_scan_diff.c does the same with libFuzzer's inputs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../upstream/data_scan.h"
#include "../fuzz/scan_ref.c" /* the scanner before the fast path */
#include "check.h"

typedef struct result {
	sg_buf out;
	size_t consumed;
	bool done, bad, nul, too_big;
	uint64_t size;
} result;

typedef struct opts {
	bool normalize, strip;
	uint64_t max;
} opts;

/* Feed in at the given cut points (cuts[0..ncut)), stopping once done. */
static void run(const opts *o, const char *in, size_t len, const size_t *cuts,
                size_t ncut, result *r)
{
	sg_scan s;
	sg_scan_init(&s, o->normalize, o->strip, o->max);
	sg_buf_init(&r->out, 0);
	r->consumed = 0;
	size_t prev = 0;
	for (size_t i = 0; i <= ncut && !s.done; i++) {
		size_t end = i < ncut ? cuts[i] : len;
		size_t n = sg_scan_feed(&s, in + prev, end - prev, &r->out);
		r->consumed += n;
		if (!s.done)
			ASSERT_EQ(n, end - prev);
		prev = end;
	}
	r->done = s.done;
	r->bad = s.bad;
	r->nul = s.nul;
	r->too_big = s.too_big;
	r->size = s.size;
}

/* Run whole, at every single cut and byte-by-byte; all must agree. */
static void scan(const opts *o, const char *in, size_t len, result *whole)
{
	run(o, in, len, NULL, 0, whole);
	for (size_t cut = 1; cut < len; cut++) {
		result r;
		run(o, in, len, &cut, 1, &r);
		if (ASSERT_EQ(r.out.len, whole->out.len, "cut at %zu", cut))
			ASSERT_MEM_EQ(r.out.data, whole->out.data, r.out.len, "cut at %zu",
			              cut);
		ASSERT_EQ(r.consumed, whole->consumed);
		ASSERT_EQ(r.done, whole->done);
		ASSERT_EQ(r.bad, whole->bad);
		ASSERT_EQ(r.nul, whole->nul);
		ASSERT_EQ(r.too_big, whole->too_big);
		ASSERT_EQ(r.size, whole->size);
		sg_buf_free(&r.out);
	}
	size_t *cuts = malloc(len * sizeof *cuts + 1);
	for (size_t i = 0; i + 1 < len; i++)
		cuts[i] = i + 1;
	result r;
	run(o, in, len, cuts, len ? len - 1 : 0, &r);
	if (ASSERT_EQ(r.out.len, whole->out.len, "octet by octet"))
		ASSERT_MEM_EQ(r.out.data, whole->out.data, r.out.len, "octet by octet");
	ASSERT_EQ(r.consumed, whole->consumed);
	ASSERT_EQ(r.done, whole->done);
	ASSERT_EQ(r.bad, whole->bad);
	ASSERT_EQ(r.nul, whole->nul);
	sg_buf_free(&r.out);
	free(cuts);
}

/* Nothing the upstream gets can end the data early, carry a bare line end
 * or a NUL. */
static bool upstream_safe(const result *r)
{
	const char *p = r->out.data ? r->out.data : "";
	size_t n = r->out.len;
	if (n && memchr(p, '\0', n))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return false;
	}
	/* a lone "." line anywhere (the data begins at a line start) */
	if (n >= 3 && !memcmp(p, ".\r\n", 3))
		return false;
	for (size_t i = 0; i + 5 <= n; i++)
		if (!memcmp(p + i, "\r\n.\r\n", 5))
			return false;
	return true;
}

#define S(lit) lit, sizeof(lit) - 1

static void test_plain(void)
{
	opts o = {false, false, 0};
	result r;
	const char in[] = "Subject: hi\r\n\r\nbody\r\n..stuffed\r\n.x\r\n"
	                  ".\r\nMAIL FROM:<next>\r\n";
	scan(&o, S(in), &r);
	ASSERT(r.done);
	ASSERT(!r.bad);
	ASSERT(!r.too_big);
	ASSERT_EQ(r.consumed, sizeof in - 1 - strlen("MAIL FROM:<next>\r\n"));
	/* dot-stuffing passes through intact; the final ".\r\n" is not copied */
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "Subject: hi\r\n\r\nbody\r\n..stuffed\r\n.x\r\n");
	ASSERT_EQ(r.size, r.out.len);
	sg_buf_free(&r.out);

	/* empty message: the DATA line's CRLF is the first half of <CRLF>.<CRLF> */
	scan(&o, S(".\r\nQUIT\r\n"), &r);
	ASSERT(r.done);
	ASSERT_EQ(r.consumed, 3);
	ASSERT_EQ(r.out.len, 0);
	sg_buf_free(&r.out);

	/* "..\r\n" (a stuffed lone dot) is content, not the end */
	scan(&o, S("a\r\n..\r\nb\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "a\r\n..\r\nb\r\n");
	sg_buf_free(&r.out);

	/* no end yet: everything consumed, nothing held that matters */
	scan(&o, S("a\r\nb\r\n"), &r);
	ASSERT(!r.done);
	ASSERT_EQ(r.consumed, 6);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "a\r\nb\r\n");
	sg_buf_free(&r.out);
}

/* SMTP smuggling payloads (SEC Consult, Dec 2023). */
static const char *const smuggle[] = {
    "Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil>\r\nRCPT TO:<v>\r\nDATA\r\nevil\r\n",
    "Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\r.\r\nMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\r\n.\rMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\r.\rMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\n.\rMAIL FROM:<evil>\r\n",
    "Subject: a\r\n\r\nx\r\r\n.\r\r\nMAIL FROM:<evil>\r\n",
    "Subject: a\n\n.\r\nMAIL FROM:<evil>\r\n",
};

static void test_smuggling(void)
{
	for (size_t i = 0; i < sizeof smuggle / sizeof smuggle[0]; i++) {
		/* the client's real end comes after the payload */
		char in[512];
		int n = snprintf(in, sizeof in, "%s\r\n.\r\nQUIT\r\n", smuggle[i]);
		size_t want = (size_t)n - strlen("QUIT\r\n");

		opts rej = {false, false, 0};
		result r;
		scan(&rej, in, (size_t)n, &r);
		/* reject: marked bad, and the end is only the real <CRLF>.<CRLF> */
		ASSERT(r.done);
		ASSERT(r.bad);
		ASSERT_EQ(r.consumed, want);
		ASSERT(upstream_safe(&r));
		sg_buf_free(&r.out);

		opts norm = {true, false, 0};
		scan(&norm, in, (size_t)n, &r);
		ASSERT(r.done);
		ASSERT(!r.bad);
		ASSERT_EQ(r.consumed, want);
		ASSERT(upstream_safe(&r), "case %zu", i);
		sg_buf_free(&r.out);
	}
}

static void test_normalize(void)
{
	opts o = {true, false, 0};
	result r;
	scan(&o, S("a\nb\rc\r\n\n.\n.\r\nx\r\n.\r\n"), &r);
	/* bare line ends become CRLF; a "." line after a bare line end (or
	 * ending in one) is stuffed */
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "a\r\nb\r\nc\r\n\r\n..\r\n..\r\nx\r\n");
	sg_buf_free(&r.out);
	/* reject mode stops writing at the first bare LF */
	opts rj = {false, false, 0};
	scan(&rj, S("a\r\nb\nc\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT(r.bad);
	if (ASSERT_LE(r.out.len, 4))
		ASSERT_MEM_EQ(r.out.data, "a\r\n", 3);
	sg_buf_free(&r.out);
}

static void test_strip(void)
{
	opts o = {false, true, 0};
	result r;
	const char in[] =
	    "X-Authenticated-User: evil@example.org\r\n"
	    "\tcontinued\r\n"
	    " more\r\n"
	    "Subject: s\r\n"
	    "x-authenticated-user :also@evil\r\n"
	    "X-Authenticated-Userx: kept\r\n"
	    "X-Other: kept\r\n"
	    "X-Auth: kept\r\n"
	    "\r\n"
	    "X-Authenticated-User: body text stays\r\n"
	    ".\r\n";
	scan(&o, S(in), &r);
	ASSERT(r.done);
	ASSERT(!r.bad);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "Subject: s\r\n"
	              "X-Authenticated-Userx: kept\r\n"
	              "X-Other: kept\r\n"
	              "X-Auth: kept\r\n"
	              "\r\n"
	              "X-Authenticated-User: body text stays\r\n");
	sg_buf_free(&r.out);

	/* without strip (identity xclient) the field is passed on */
	opts keep = {false, false, 0};
	scan(&keep, S("X-Authenticated-User: a\r\n\r\n.\r\n"), &r);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "X-Authenticated-User: a\r\n\r\n");
	sg_buf_free(&r.out);

	/* a header name ending at the line end is flushed, not lost */
	scan(&o, S("X-Auth\r\nX\r\n\r\n.\r\n"), &r);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "X-Auth\r\nX\r\n\r\n");
	sg_buf_free(&r.out);
}

/* The field is recognised on the line the upstream stores: after its
 * stuffing dot (RFC 5321 4.5.2), in any case, with WSP before the ':'. */
static void test_strip_unstuffed(void)
{
	static const char *const forged[] = {
	    ".X-Authenticated-User: bob\r\n",
	    "x-authenticated-user : bob\r\n",
	    "X-AUTHENTICATED-USER\t:bob\r\n",
	    ".x-Authenticated-USER \t :bob\r\n",
	    "X-Authenticated-User:\r\n",
	    "X-Authenticated-User: bob\r\n\tfolded\r\n more\r\n",
	    ".X-Authenticated-User: bob\r\n\tfolded\r\n",
	    /* a folded line may carry a stuffing dot too: ". x" is " x" */
	    "X-Authenticated-User: bob\r\n. folded\r\n.\tmore\r\n",
	};
	for (int mode = 0; mode < 2; mode++) {
		opts o = {mode == 1, true, 0};
		for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
			char in[256];
			snprintf(in, sizeof in,
			         "From: a@example.org\r\n%sSubject: s\r\n\r\n"
			         ".X-Authenticated-User: body\r\n.\r\n",
			         forged[i]);
			result r;
			scan(&o, in, strlen(in), &r);
			ASSERT(r.done);
			ASSERT(!r.bad);
			ASSERT_BUF_EQ(r.out.data, r.out.len,
			              "From: a@example.org\r\nSubject: s\r\n\r\n"
			              ".X-Authenticated-User: body\r\n",
			              "case %zu mode %d", i, mode);
			ASSERT_EQ(r.size, r.out.len);
			sg_buf_free(&r.out);
		}
	}

	/* dot-stuffing of every other line is untouched, and the upstream
	 * reads "..X-Authenticated-User:" as ".X-Authenticated-User:", which
	 * is another field */
	opts o = {false, true, 0};
	result r;
	const char kept[] = "..X-Authenticated-User: kept\r\n"
	                    ".X-Authenticated-Userx: kept\r\n"
	                    "..\r\n"
	                    ".Subject: s\r\n"
	                    "\r\n.\r\n";
	scan(&o, S(kept), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "..X-Authenticated-User: kept\r\n"
	              ".X-Authenticated-Userx: kept\r\n"
	              "..\r\n"
	              ".Subject: s\r\n"
	              "\r\n");
	sg_buf_free(&r.out);

	/* a stuffed header line after a dropped field is no continuation */
	scan(&o, S("X-Authenticated-User: a\r\n.x: y\r\n\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, ".x: y\r\n\r\n");
	sg_buf_free(&r.out);

	/* the field name is not recognised without a dot or past the header */
	scan(&o, S("Subject: s\r\n\r\n.X-Authenticated-User: b\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "Subject: s\r\n\r\n.X-Authenticated-User: b\r\n");
	sg_buf_free(&r.out);
}

/* Two cuts anywhere in a stuffed, folded field: the same output. */
static void test_strip_split(void)
{
	const char in[] = "A: b\r\n.x-AUTHENTICATED-user \t: bob\r\n\tf\r\n"
	                  "C: d\r\n\r\n.\r\n";
	const char want[] = "A: b\r\nC: d\r\n\r\n";
	size_t len = sizeof in - 1;
	for (int mode = 0; mode < 2; mode++) {
		opts o = {mode == 1, true, 0};
		for (size_t a = 1; a < len; a++)
			for (size_t b = a; b < len; b++) {
				size_t cuts[2] = {a, b};
				result r;
				run(&o, in, len, cuts, 2, &r);
				ASSERT(r.done);
				ASSERT(!r.bad);
				ASSERT_EQ(r.consumed, len);
				ASSERT_BUF_EQ(r.out.data, r.out.len, want);
				sg_buf_free(&r.out);
			}
	}
}

/* In normalize mode a line ending in a bare LF or CR is a line too.  A
 * line that begins after a bare line end is not dot-stuffed (clients that
 * send bare line ends stuff only after CRLF), so its leading '.' is
 * content (written stuffed); ".X-Authenticated-User:" there is dropped
 * all the same, as is any spelling of the field, while ".Other:" stays. */
static void test_strip_normalized_lines(void)
{
	opts o = {true, true, 0};
	result r;
	scan(&o,
	     S("Subject: a\nX-Authenticated-User: b\n\tfold\rX-AUTHENTICATED-USER"
	       " : c\r.X-Authenticated-User: d\n\tfold\r.Other: e\rTo: d\n\n"
	       "body\r\n.\r\n"),
	     &r);
	ASSERT(r.done);
	ASSERT(!r.bad);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "Subject: a\r\n..Other: e\r\nTo: d\r\n\r\nbody\r\n");
	sg_buf_free(&r.out);
}

/* A line after a bare line end keeps its leading dots (curl sends an
 * LF-only file as it is and stuffs only after CRLF); a clean line's
 * first dot is stuffing. */
static void test_dot_after_bare_line_end(void)
{
	opts o = {true, false, 0};
	result r;
	scan(&o,
	     S("a\n.lead\n..two\n.\n.\r\nx\r.cr\r\n.clean\r\n..\r\n.\r\n"),
	     &r);
	ASSERT(r.done);
	ASSERT(!r.bad);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "a\r\n..lead\r\n...two\r\n..\r\n..\r\nx\r\n..cr\r\n"
	              ".clean\r\n..\r\n");
	sg_buf_free(&r.out);
}

/* No hold bound lets the field through: not after a long header line or a
 * long header section, not with more WSP before the ':' than is held. */
static void test_strip_long(void)
{
	opts o = {false, true, 0};
	size_t cap = 20000;
	char *in = malloc(cap), *want = malloc(cap);
	size_t n = 0, w = 0;

	/* a 5,000-octet header line, then the field (plain and stuffed) */
	n = (size_t)snprintf(in, cap, "X-Long: ");
	memset(in + n, 'x', 5000);
	n += 5000;
	n += (size_t)snprintf(in + n, cap - n,
	                      "\r\nX-Authenticated-User: bob\r\n"
	                      ".X-Authenticated-User: bob\r\n\r\n.\r\n");
	memcpy(want, in, 8 + 5000 + 2);
	w = 8 + 5000 + 2;
	memcpy(want + w, "\r\n", 3);
	result r;
	scan(&o, in, n, &r); /* split at every octet, the name's too */
	ASSERT(r.done);
	if (ASSERT_EQ(r.out.len, w + 2))
		ASSERT_MEM_EQ(r.out.data, want, w + 2);
	sg_buf_free(&r.out);

	/* after 300 header lines */
	n = 0;
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(in + n, cap - n, "X-H%03d: v\r\n", i);
	w = n;
	memcpy(want, in, w);
	n += (size_t)snprintf(in + n, cap - n,
	                      "x-authenticated-user : bob\r\n\r\n.\r\n");
	memcpy(want + w, "\r\n", 2);
	w += 2;
	scan(&o, in, n, &r);
	ASSERT(r.done);
	if (ASSERT_EQ(r.out.len, w))
		ASSERT_MEM_EQ(r.out.data, want, w);
	sg_buf_free(&r.out);

	/* the name, more WSP than SG_SCAN_HOLD, then the ':' */
	for (int dotted = 0; dotted < 2; dotted++) {
		n = (size_t)snprintf(in, cap, "%sX-Authenticated-User",
		                     dotted ? "." : "");
		for (int i = 0; i < 3 * SG_SCAN_HOLD; i++)
			in[n++] = i % 3 ? ' ' : '\t';
		n += (size_t)snprintf(in + n, cap - n,
		                      ": bob\r\nSubject: s\r\n\r\n.\r\n");
		scan(&o, in, n, &r);
		ASSERT(r.done);
		ASSERT_BUF_EQ(r.out.data, r.out.len, "Subject: s\r\n\r\n");
		sg_buf_free(&r.out);
	}
	/* ... and without a ':' the line is no field at all: it goes too
	 * (fail closed), with its continuation */
	n = (size_t)snprintf(in, cap, "X-Authenticated-User");
	memset(in + n, ' ', 2 * SG_SCAN_HOLD);
	n += 2 * SG_SCAN_HOLD;
	n += (size_t)snprintf(in + n, cap - n, "bob\r\n x\r\nA: b\r\n\r\n.\r\n");
	scan(&o, in, n, &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "A: b\r\n\r\n");
	sg_buf_free(&r.out);
	/* a shorter run of blanks without the ':' is kept as it was */
	scan(&o, S("X-Authenticated-User   bob\r\n\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "X-Authenticated-User   bob\r\n\r\n");
	sg_buf_free(&r.out);
	free(in);
	free(want);
}

/* NUL octets: reject refuses the message (its own flag: 550 5.6.0),
 * normalize removes them; neither reaches the upstream. */
static void test_nul(void)
{
	opts rej = {false, false, 0}, rejx = {false, true, 0};
	result r;
	const char a[] = "Subject: a\r\n\r\nbo\0dy\r\n.\r\nQUIT\r\n";
	scan(&rej, S(a), &r);
	ASSERT(r.done);
	ASSERT(r.bad);
	ASSERT(r.nul);
	ASSERT_EQ(r.consumed, sizeof a - 1 - strlen("QUIT\r\n"));
	ASSERT(upstream_safe(&r));
	sg_buf_free(&r.out);
	/* in a dropped header field as well */
	scan(&rejx, S("X-Authenticated-User: a\0b\r\n\r\nc\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT(r.bad);
	ASSERT(r.nul);
	ASSERT(upstream_safe(&r));
	sg_buf_free(&r.out);
	/* "<NUL>.", ".<NUL>" are no end of data: the scan goes on */
	const char b[] = "Subject: a\r\n\r\n\0.\r\n.\0\r\nx\r\n.\r\nQUIT\r\n";
	scan(&rej, S(b), &r);
	ASSERT(r.done);
	ASSERT(r.bad);
	ASSERT(r.nul);
	ASSERT_EQ(r.consumed, sizeof b - 1 - strlen("QUIT\r\n"));
	sg_buf_free(&r.out);
	/* a bare LF alone is not a NUL */
	scan(&rej, S("a\nb\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT(r.bad);
	ASSERT(!r.nul);
	sg_buf_free(&r.out);

	opts norm = {true, false, 0}, normx = {true, true, 0};
	scan(&norm, S(a), &r);
	ASSERT(r.done);
	ASSERT(!r.bad);
	ASSERT(!r.nul);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "Subject: a\r\n\r\nbody\r\n");
	ASSERT_EQ(r.size, r.out.len);
	sg_buf_free(&r.out);
	/* a line that is a lone dot once the NULs are gone is written stuffed,
	 * and one whose content begins with a dot keeps that dot */
	scan(&norm, S(b), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "Subject: a\r\n\r\n..\r\n..\r\nx\r\n");
	ASSERT(upstream_safe(&r));
	sg_buf_free(&r.out);
	scan(&norm, S("a\r\n\0\0.\0\r\n\0.b\r\n.\0.c\r\n\0\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "a\r\n..\r\n..b\r\n..c\r\n\r\n");
	ASSERT_EQ(r.size, r.out.len);
	sg_buf_free(&r.out);
	/* NULs inside CRLF or <CRLF>.<CRLF> make neither */
	scan(&norm, S("a\r\0\n.\r\n\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "a\r\n\r\n..\r\n\r\n");
	sg_buf_free(&r.out);

	/* the field is recognised with the NULs removed ... */
	scan(&normx,
	     S("\0X-Authen\0ticated-User: a\r\n.\0X-Authenticated-User: b\r\n"
	       "\0\tfolded\r\nSubject: s\r\n\r\n.\r\n"),
	     &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "Subject: s\r\n\r\n");
	sg_buf_free(&r.out);
	/* ... and "<NUL>.X-Authenticated-User:", which the upstream would
	 * store as ".X-Authenticated-User:", goes too (no spelling of the
	 * field passes) */
	scan(&normx, S("\0.X-Authenticated-User: a\r\n\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len, "\r\n");
	sg_buf_free(&r.out);
	/* a line of NULs is an empty line: the header section ends there */
	scan(&normx, S("A: b\r\n\0\r\nX-Authenticated-User: c\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT_BUF_EQ(r.out.data, r.out.len,
	              "A: b\r\n\r\nX-Authenticated-User: c\r\n");
	sg_buf_free(&r.out);
}

static void test_size(void)
{
	opts o = {false, false, 20};
	result r;
	/* exactly 20 content octets: fine */
	scan(&o, S("0123456789abcdef\r\n\r\n.\r\n"), &r);
	ASSERT(r.done);
	ASSERT(!r.too_big);
	ASSERT_EQ(r.size, 20);
	sg_buf_free(&r.out);
	/* 21: too big; the scan still runs to the real end */
	scan(&o, S("0123456789abcdefg\r\n\r\nmore\r\n.\r\nQUIT\r\n"), &r);
	ASSERT(r.done);
	ASSERT(r.too_big);
	ASSERT_EQ(r.consumed, strlen("0123456789abcdefg\r\n\r\nmore\r\n.\r\n"));
	ASSERT_LE(r.out.len, 20);
	sg_buf_free(&r.out);
}

/* A pseudo-random soup of CR, LF, '.', 'X' and letters: never unsafe. */
static void test_soup(void)
{
	static const char alphabet[] = "\r\n.\r\n.Xa \0";
	unsigned seed = 12345;
	for (int round = 0; round < 2000; round++) {
		char in[64];
		size_t n = 1 + (seed % 40);
		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
		}
		for (int mode = 0; mode < 2; mode++) {
			opts o = {mode == 1, round % 2 == 0, 0};
			result r;
			run(&o, in, n, NULL, 0, &r);
			ASSERT(upstream_safe(&r));
			if (r.done) {
				/* only ever at a real <CRLF>.<CRLF> (or at the start) */
				if (ASSERT_GE(r.consumed, 3))
					ASSERT_MEM_EQ(in + r.consumed - 3, ".\r\n", 3);
				ASSERT(r.consumed == 3 ||
				       (r.consumed >= 5 &&
				        !memcmp(in + r.consumed - 5, "\r\n", 2)));
			}
			sg_buf_free(&r.out);
		}
	}
}

/* The fast path (memchr-style runs) must write exactly what the old
 * octet-wise scanner wrote, with the same verdicts, for messages of long
 * lines (several 16-octet blocks per line) salted with every special case,
 * in random pieces. */
static void test_reference(void)
{
	static const struct {
		const char *p;
		size_t n;
	} salt[] = {
#define SALT(lit) {lit, sizeof(lit) - 1}
	    SALT("\r\n"), SALT("\r\n"), SALT("\r\n"), SALT("\r\n."), SALT("\r\n.."),
	    SALT("\n"), SALT("\r"), SALT("\r\n\r\n"),
	    SALT("\r\nX-Authenticated-User: e\r\n"), SALT("\r\nx-auth"),
	    SALT("\r\n\tfold"), SALT("\r\n.\r\n"), SALT("\n.\n"), SALT("\r\nX"),
	    SALT("\r\r\n"), SALT("\r\n.X-Authenticated-User: e"), SALT("\r\n. fold"),
	    SALT("\r\n\0.\r\n"), SALT("\r\n.\0\r\n"), SALT("\0"),
	    SALT("\r\n\0X-auth"), SALT("\r\n\0."), SALT("\r\0\n"),
	    SALT("\r\nX-Authenticated-User\t \0:")
#undef SALT
	};
	unsigned seed = 777;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 16))
	for (int round = 0; round < 3000; round++) {
		char in[4096];
		size_t n = 0;
		while (n + 200 < sizeof in && RND() % 24) {
			size_t run = RND() % 90;
			for (size_t i = 0; i < run; i++)
				in[n++] = (char)('a' + RND() % 26);
			size_t k = RND() % (sizeof salt / sizeof salt[0]);
			memcpy(in + n, salt[k].p, salt[k].n);
			n += salt[k].n;
		}
		bool norm = RND() & 1, strip = RND() & 1;
		uint64_t max = (RND() % 4 == 0) ? RND() % 2000 : 0;
		sg_scan s;
		ref_scan r;
		sg_buf a, b;
		sg_scan_init(&s, norm, strip, max);
		ref_scan_init(&r, norm, strip, max);
		sg_buf_init(&a, 0);
		sg_buf_init(&b, 0);
		size_t off = 0, ua = 0, ub = 0;
		while (off < n && !s.done) {
			size_t take = 1 + RND() % (round % 3 ? 300 : 5);
			if (take > n - off)
				take = n - off;
			ua = sg_scan_feed(&s, in + off, take, &a);
			ub = ref_scan_feed(&r, in + off, take, &b);
			ASSERT_EQ(ua, ub);
			ASSERT_EQ(s.done, r.done);
			if (ua != ub)
				break;
			off += ua;
		}
		ASSERT_EQ(s.bad, r.bad);
		ASSERT_EQ(s.nul, r.nul);
		ASSERT_EQ(s.too_big, r.too_big);
		ASSERT_EQ(s.size, r.size);
		/* past max_size neither output is sent (the link aborts) */
		if (!s.too_big && ASSERT_EQ(a.len, b.len))
			ASSERT_MEM_EQ(a.data, b.data, a.len);
		sg_buf_free(&a);
		sg_buf_free(&b);
	}
#undef RND
}

int main(void)
{
	test_plain();
	test_smuggling();
	test_normalize();
	test_strip();
	test_strip_unstuffed();
	test_strip_split();
	test_strip_normalized_lines();
	test_dot_after_bare_line_end();
	test_strip_long();
	test_nul();
	test_size();
	test_soup();
	test_reference();
	return CHECK_SUMMARY();
}
