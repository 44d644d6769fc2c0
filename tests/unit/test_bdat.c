/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_bdat.c: the BDAT stuffer and un-stuffer (upstream/bdat.c)
 * with the DATA scanner between them, as upstream/link_xfer.c uses them.
 *
 * A chunked message goes: chunks -> sg_stuff -> sg_scan_feed (then the end
 * of data of sg_stuff_end) -> sg_unstuff for a BDAT upstream.  Every input
 * is run whole, cut at every position (a chunk boundary, or a step of the
 * link) and one octet at a time: the result may not depend on the cuts.
 * For content with CRLF line ends only and no NUL, the BDAT upstream gets
 * the content exactly (a CRLF added when it does not end in one) and the
 * DATA upstream its DATA wire form; the scanner never sees an end of data
 * before the one the stuffer's end adds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../upstream/bdat.h"
#include "../../upstream/data_scan.h"
#include "check.h"

typedef struct result {
	sg_buf stuffed; /* the DATA wire form, end of data included */
	sg_buf scanned; /* the scanner's output (what a DATA upstream gets) */
	sg_buf plain;   /* un-stuffed (what a BDAT upstream gets) */
	bool early;     /* the scanner saw an end of data before the end */
	bool done, bad;
} result;

static void result_free(result *r)
{
	sg_buf_free(&r->stuffed);
	sg_buf_free(&r->scanned);
	sg_buf_free(&r->plain);
}

/* The chunks in[0..len) cut at cuts[0..ncut), through the three stages;
 * the scanner and the un-stuffer get each cut's output as one step. */
static void run(const char *in, size_t len, const size_t *cuts, size_t ncut,
                bool normalize, result *r)
{
	sg_stuffer st;
	sg_unstuffer us;
	sg_scan sc;
	sg_stuff_init(&st);
	sg_unstuff_init(&us);
	sg_scan_init(&sc, normalize, false, 0);
	memset(r, 0, sizeof *r);
	sg_buf_init(&r->stuffed, 0);
	sg_buf_init(&r->scanned, 0);
	sg_buf_init(&r->plain, 0);
	size_t prev = 0;
	for (size_t i = 0; i <= ncut; i++) {
		size_t end = i < ncut ? cuts[i] : len;
		char *tmp = malloc(SG_STUFF_MAX(end - prev) + 1);
		size_t n = sg_stuff(&st, in + prev, end - prev, tmp);
		ASSERT_LE(n, SG_STUFF_MAX(end - prev));
		sg_buf_append(&r->stuffed, tmp, n);
		sg_buf out;
		sg_buf_init(&out, 0);
		size_t used = sg_scan_feed(&sc, tmp, n, &out);
		if (i == ncut) {
			const char *e = sg_stuff_end(&st);
			sg_buf_append(&r->stuffed, e, strlen(e));
			if (!sc.done)
				used += sg_scan_feed(&sc, e, strlen(e), &out) - strlen(e);
		}
		r->early |= used != n;
		sg_buf_append(&r->scanned, out.data, out.len);
		size_t k = sg_unstuff(&us, out.data, out.len);
		sg_buf_append(&r->plain, out.data, k);
		sg_buf_free(&out);
		free(tmp);
		prev = end;
	}
	r->done = sc.done;
	r->bad = sc.bad;
}

static bool same(const sg_buf *a, const sg_buf *b)
{
	return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

/* Whole, at every cut, and octet by octet: all agree; -> the whole run. */
static void check(const char *in, size_t len, bool normalize, result *whole)
{
	run(in, len, NULL, 0, normalize, whole);
	ASSERT(!whole->early, "an end of data inside the content");
	ASSERT(whole->done, "no end of data at the end");
	for (size_t cut = 1; cut < len; cut++) {
		result r;
		run(in, len, &cut, 1, normalize, &r);
		ASSERT(same(&r.stuffed, &whole->stuffed), "stuffed, cut at %zu", cut);
		ASSERT(same(&r.scanned, &whole->scanned), "scanned, cut at %zu", cut);
		ASSERT(same(&r.plain, &whole->plain), "plain, cut at %zu", cut);
		ASSERT_EQ(r.bad, whole->bad, "cut at %zu", cut);
		result_free(&r);
	}
	if (len > 1) {
		size_t *cuts = malloc((len - 1) * sizeof *cuts);
		for (size_t i = 0; i < len - 1; i++)
			cuts[i] = i + 1;
		result r;
		run(in, len, cuts, len - 1, normalize, &r);
		ASSERT(same(&r.plain, &whole->plain), "plain, octet by octet");
		ASSERT(same(&r.scanned, &whole->scanned), "scanned, octet by octet");
		result_free(&r);
		free(cuts);
	}
}

#define S(lit) lit, sizeof lit - 1

/* Clean content: the BDAT upstream gets it exactly, the DATA upstream
 * its stuffed form (without the end of data, which the link adds). */
static void test_round_trip(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *wire; /* DATA wire form, end of data included */
		size_t wlen;
	} cases[] = {
	    {S(""), S(".\r\n")},
	    {S("a\r\n"), S("a\r\n.\r\n")},
	    {S("no CRLF at the end"), S("no CRLF at the end\r\n.\r\n")},
	    {S(".\r\n"), S("..\r\n.\r\n")},
	    {S("a\r\n.\r\nb\r\n"), S("a\r\n..\r\nb\r\n.\r\n")},
	    {S("..\r\n...x\r\n"), S("...\r\n....x\r\n.\r\n")},
	    {S("x\r\n."), S("x\r\n..\r\n.\r\n")},
	    {S("x\r\n.\r"), S("x\r\n..\r\r\n.\r\n")},
	    {S("Subject: s\r\n\r\n.body\r\n\r\n.\r\n"),
	     S("Subject: s\r\n\r\n..body\r\n\r\n..\r\n.\r\n")},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		result r;
		check(cases[i].in, cases[i].len, false, &r);
		ASSERT_BUF_EQ(r.stuffed.data, r.stuffed.len, cases[i].wire,
		              "case %zu", i);
		bool crlf = cases[i].len >= 2 &&
		            !memcmp(cases[i].in + cases[i].len - 2, "\r\n", 2);
		if (!cases[i].len || crlf) {
			ASSERT_EQ(r.plain.len, cases[i].len, "case %zu", i);
			ASSERT_MEM_EQ(r.plain.data, cases[i].in, cases[i].len,
			              "case %zu", i);
		}
		result_free(&r);
	}
	/* a content that ends in CR gets CRLF after it: the CR is bare */
	result r;
	check(S("x\r\n.\r"), false, &r);
	ASSERT(r.bad);
	result_free(&r);
	check(S("x\r\n.\r"), true, &r);
	ASSERT_BUF_EQ(r.plain.data, r.plain.len, "x\r\n.\r\n\r\n");
	result_free(&r);
}

/* What must not be an end of data: every line-end form before a dot, bare
 * ones included, with the scanner in either mode. */
static void test_no_smuggling(void)
{
	static const struct {
		const char *p;
		size_t len;
	} lines[] = {
	    {S("\r\n.\r\n")}, {S("\n.\n")}, {S("\n.\r\n")}, {S("\r.\r\n")},
	    {S("\r\n.\r")},   {S("\r\n.\n")}, {S("\r.\r")},  {S("\r\n\0.\r\n")},
	    {S(".\r\n")},     {S("\r\n..\r\n")},
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		char in[64] = "a";
		size_t n = 1;
		memcpy(in + n, lines[i].p, lines[i].len);
		n += lines[i].len;
		memcpy(in + n, "b\r\n", 3);
		n += 3;
		for (int normalize = 0; normalize <= 1; normalize++) {
			result r;
			check(in, n, normalize, &r);
			ASSERT(!r.early, "case %zu", i);
			if (normalize)
				ASSERT(!r.bad, "case %zu", i);
			result_free(&r);
		}
	}
}

/* The un-stuffer alone: the first dot of a line goes, nothing else. */
static void test_unstuff(void)
{
	char b[] = "..a\r\n.\r\nb.c\r\n...";
	sg_unstuffer u;
	sg_unstuff_init(&u);
	size_t n = sg_unstuff(&u, b, sizeof b - 1);
	ASSERT_BUF_EQ(b, n, ".a\r\n\r\nb.c\r\n..");
	/* a line start carried over a call: the dot is the next call's first */
	char c[] = "x\r\n";
	char d[] = ".y";
	sg_unstuff_init(&u);
	n = sg_unstuff(&u, c, 3);
	ASSERT_EQ(n, 3);
	n = sg_unstuff(&u, d, 2);
	ASSERT_BUF_EQ(d, n, "y");
}

int main(void)
{
	test_round_trip();
	test_no_smuggling();
	test_unstuff();
	return CHECK_SUMMARY();
}
