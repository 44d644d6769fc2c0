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

static int failures;
#define CHECK(c)                                                               \
	do {                                                                       \
		if (!(c)) {                                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
			        #c);                                                       \
			failures++;                                                        \
		}                                                                      \
	} while (0)

typedef struct result {
	sg_buf out;
	size_t consumed;
	bool done, bad, too_big;
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
			CHECK(n == end - prev);
		prev = end;
	}
	r->done = s.done;
	r->bad = s.bad;
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
		CHECK(r.out.len == whole->out.len &&
		      (!r.out.len || !memcmp(r.out.data, whole->out.data, r.out.len)));
		CHECK(r.consumed == whole->consumed && r.done == whole->done &&
		      r.bad == whole->bad && r.too_big == whole->too_big);
		sg_buf_free(&r.out);
	}
	size_t *cuts = malloc(len * sizeof *cuts + 1);
	for (size_t i = 0; i + 1 < len; i++)
		cuts[i] = i + 1;
	result r;
	run(o, in, len, cuts, len ? len - 1 : 0, &r);
	CHECK(r.out.len == whole->out.len &&
	      (!r.out.len || !memcmp(r.out.data, whole->out.data, r.out.len)));
	CHECK(r.consumed == whole->consumed && r.done == whole->done &&
	      r.bad == whole->bad);
	sg_buf_free(&r.out);
	free(cuts);
}

static bool out_is(const result *r, const char *want)
{
	bool ok = r->out.len == strlen(want) &&
	          (!r->out.len || !memcmp(r->out.data, want, r->out.len));
	if (!ok) {
		fprintf(stderr, "  got [");
		for (size_t i = 0; i < r->out.len; i++)
			fprintf(stderr, r->out.data[i] == '\r'   ? "\\r"
			                : r->out.data[i] == '\n' ? "\\n"
			                                          : "%c",
			        r->out.data[i]);
		fprintf(stderr, "]\n");
	}
	return ok;
}

/* Nothing the upstream gets can end the data early or carry a bare line end. */
static bool upstream_safe(const result *r)
{
	const char *p = r->out.data ? r->out.data : "";
	size_t n = r->out.len;
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
	CHECK(r.done && !r.bad && !r.too_big);
	CHECK(r.consumed == sizeof in - 1 - strlen("MAIL FROM:<next>\r\n"));
	/* dot-stuffing passes through intact; the final ".\r\n" is not copied */
	CHECK(out_is(&r, "Subject: hi\r\n\r\nbody\r\n..stuffed\r\n.x\r\n"));
	CHECK(r.size == r.out.len);
	sg_buf_free(&r.out);

	/* empty message: the DATA line's CRLF is the first half of <CRLF>.<CRLF> */
	scan(&o, S(".\r\nQUIT\r\n"), &r);
	CHECK(r.done && r.consumed == 3 && r.out.len == 0);
	sg_buf_free(&r.out);

	/* "..\r\n" (a stuffed lone dot) is content, not the end */
	scan(&o, S("a\r\n..\r\nb\r\n.\r\n"), &r);
	CHECK(r.done && out_is(&r, "a\r\n..\r\nb\r\n"));
	sg_buf_free(&r.out);

	/* no end yet: everything consumed, nothing held that matters */
	scan(&o, S("a\r\nb\r\n"), &r);
	CHECK(!r.done && r.consumed == 6 && out_is(&r, "a\r\nb\r\n"));
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
		CHECK(r.done && r.bad);
		CHECK(r.consumed == want);
		CHECK(upstream_safe(&r));
		sg_buf_free(&r.out);

		opts norm = {true, false, 0};
		scan(&norm, in, (size_t)n, &r);
		CHECK(r.done && !r.bad && r.consumed == want);
		CHECK(upstream_safe(&r));
		if (!upstream_safe(&r))
			fprintf(stderr, "  case %zu\n", i);
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
	CHECK(r.done && out_is(&r, "a\r\nb\r\nc\r\n\r\n..\r\n..\r\nx\r\n"));
	sg_buf_free(&r.out);
	/* reject mode stops writing at the first bare LF */
	opts rj = {false, false, 0};
	scan(&rj, S("a\r\nb\nc\r\n.\r\n"), &r);
	CHECK(r.done && r.bad && r.out.len <= 4 && !memcmp(r.out.data, "a\r\n", 3));
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
	CHECK(r.done && !r.bad);
	CHECK(out_is(&r, "Subject: s\r\n"
	                 "X-Authenticated-Userx: kept\r\n"
	                 "X-Other: kept\r\n"
	                 "X-Auth: kept\r\n"
	                 "\r\n"
	                 "X-Authenticated-User: body text stays\r\n"));
	sg_buf_free(&r.out);

	/* without strip (identity xclient) the field is passed on */
	opts keep = {false, false, 0};
	scan(&keep, S("X-Authenticated-User: a\r\n\r\n.\r\n"), &r);
	CHECK(out_is(&r, "X-Authenticated-User: a\r\n\r\n"));
	sg_buf_free(&r.out);

	/* a header name ending at the line end is flushed, not lost */
	scan(&o, S("X-Auth\r\nX\r\n\r\n.\r\n"), &r);
	CHECK(out_is(&r, "X-Auth\r\nX\r\n\r\n"));
	sg_buf_free(&r.out);
}

static void test_size(void)
{
	opts o = {false, false, 20};
	result r;
	/* exactly 20 content octets: fine */
	scan(&o, S("0123456789abcdef\r\n\r\n.\r\n"), &r);
	CHECK(r.done && !r.too_big && r.size == 20);
	sg_buf_free(&r.out);
	/* 21: too big; the scan still runs to the real end */
	scan(&o, S("0123456789abcdefg\r\n\r\nmore\r\n.\r\nQUIT\r\n"), &r);
	CHECK(r.done && r.too_big);
	CHECK(r.consumed == strlen("0123456789abcdefg\r\n\r\nmore\r\n.\r\n"));
	CHECK(r.out.len <= 20);
	sg_buf_free(&r.out);
}

/* A pseudo-random soup of CR, LF, '.', 'X' and letters: never unsafe. */
static void test_soup(void)
{
	static const char alphabet[] = "\r\n.\r\n.Xa ";
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
			CHECK(upstream_safe(&r));
			if (r.done) {
				/* only ever at a real <CRLF>.<CRLF> (or at the start) */
				CHECK(r.consumed >= 3 &&
				      !memcmp(in + r.consumed - 3, ".\r\n", 3));
				CHECK(r.consumed == 3 ||
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
	static const char *const salt[] = {
	    "\r\n", "\r\n", "\r\n", "\r\n.", "\r\n..", "\n", "\r", "\r\n\r\n",
	    "\r\nX-Authenticated-User: e\r\n", "\r\nx-auth", "\r\n\tfold",
	    "\r\n.\r\n", "\n.\n", "\r\nX", "\r\r\n"};
	unsigned seed = 777;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 16))
	for (int round = 0; round < 3000; round++) {
		char in[4096];
		size_t n = 0;
		while (n + 200 < sizeof in && RND() % 24) {
			size_t run = RND() % 90;
			for (size_t i = 0; i < run; i++)
				in[n++] = (char)('a' + RND() % 26);
			const char *t = salt[RND() % (sizeof salt / sizeof salt[0])];
			size_t tl = strlen(t);
			memcpy(in + n, t, tl);
			n += tl;
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
			CHECK(ua == ub && s.done == r.done);
			if (ua != ub)
				break;
			off += ua;
		}
		CHECK(s.bad == r.bad && s.too_big == r.too_big && s.size == r.size);
		/* past max_size neither output is sent (the link aborts) */
		if (!s.too_big)
			CHECK(a.len == b.len && (!a.len || !memcmp(a.data, b.data, a.len)));
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
	test_size();
	test_soup();
	test_reference();
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
