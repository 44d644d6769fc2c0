/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/check.h: the assertions of the C unit tests, after libuv's
 * test/task.h.
 *
 *   ASSERT(cond)                        cond is true
 *   ASSERT_EQ, _NE, _LT, _LE, _GT, _GE  two integers (any integer or enum
 *                                       types, compared as C compares them)
 *   ASSERT_PTR_EQ, ASSERT_PTR_NE        two pointers
 *   ASSERT_NULL(p), ASSERT_NOT_NULL(p)
 *   ASSERT_STR_EQ, ASSERT_STR_NE        two C strings; a NULL on either side
 *                                       fails (never a crash)
 *   ASSERT_MEM_EQ(a, b, n)              n octets (n may be 0)
 *   ASSERT_BUF_EQ(p, len, s)            len octets at p are the string s
 *
 * Each takes an optional printf note after its operands, printed when it
 * fails: ASSERT_EQ(got, want, "case %zu", i).  Unlike libuv's, a failure
 * does not abort: it prints one line on stderr,
 *
 *   FILE:LINE: FAIL ASSERT_EQ(c->workers, 3): 4 vs 3 -- note
 *
 * (strings and buffers: quoted with C escapes, from just before the first
 * octet that differs), counts, and the test goes on to report the rest.
 * Each evaluates its operands once and yields 1 (held) or 0 (failed), so a
 * check can guard the ones that would read past what failed:
 *
 *   if (ASSERT_EQ(e.n, 1))
 *       ASSERT_STR_EQ(e.msg[0], "x.conf:3: bad");
 *
 * main ends with `return CHECK_SUMMARY();`: one line "NAME: N checks,
 * M failed" and exit status 1 if any check failed (or none ran), else 0.
 * check_at() counts a check made by a helper on its caller's line. */
#ifndef SG_TEST_CHECK_H
#define SG_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CHECK_UNUSED_ __attribute__((unused))

/* A failure shows at most this many octets of a string or buffer, and
 * starts at most CHECK_SHOW_BEFORE octets before the first difference. */
#define CHECK_SHOW_MAX 200
#define CHECK_SHOW_BEFORE 40

static int check_total CHECK_UNUSED_;  /* checks made */
static int check_failed CHECK_UNUSED_; /* of them, failed */

/* Counts one check; on failure starts its report, "FILE:LINE: FAIL WHAT",
 * without the line end (the caller adds values and note). */
CHECK_UNUSED_ static int check_begin_(int ok, const char *file, int line,
                                      const char *what)
{
	check_total++;
	if (ok)
		return 1;
	check_failed++;
	fprintf(stderr, "%s:%d: FAIL %s", file, line, what);
	return 0;
}

__attribute__((format(printf, 1, 2))) CHECK_UNUSED_ static void
check_note_(const char *fmt, ...)
{
	va_list ap;
	fputs(" -- ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* Ends a failure's report: the note, if the check was given one. */
#define CHECK_END_(...)                                                        \
	do {                                                                       \
		__VA_OPT__(check_note_(__VA_ARGS__);)                                  \
		fputc('\n', stderr);                                                   \
	} while (0)

/* Octets from..n of s, quoted, with C escapes for quotes, backslashes and
 * everything outside printable ASCII; "..." where cut. */
CHECK_UNUSED_ static void check_show_(const void *s, size_t from, size_t n)
{
	const unsigned char *p = s;
	size_t i;
	if (!p) {
		fputs("NULL", stderr);
		return;
	}
	fputs(from ? "...\"" : "\"", stderr);
	for (i = from; i < n && i < from + CHECK_SHOW_MAX; i++) {
		if (p[i] == '\r')
			fputs("\\r", stderr);
		else if (p[i] == '\n')
			fputs("\\n", stderr);
		else if (p[i] == '\t')
			fputs("\\t", stderr);
		else if (p[i] == '"' || p[i] == '\\')
			fprintf(stderr, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			fprintf(stderr, "\\x%02x", p[i]);
		else
			fputc(p[i], stderr);
	}
	fputs(i < n ? "\"..." : "\"", stderr);
}

/* ": A vs B" for two strings or buffers (NULL: no octets); where both are
 * there and differ, from a little before the first difference, named. */
CHECK_UNUSED_ static void check_show_two_(const void *a, size_t alen,
                                          const void *b, size_t blen)
{
	const unsigned char *pa = a, *pb = b;
	size_t i = 0, from = 0;
	if (pa && pb) {
		while (i < alen && i < blen && pa[i] == pb[i])
			i++;
		if (i < alen || i < blen) {
			fprintf(stderr, ": differs at octet %zu", i);
			from = i > CHECK_SHOW_BEFORE ? i - CHECK_SHOW_BEFORE : 0;
		}
	}
	fputs(": ", stderr);
	check_show_(a, from, alen);
	fputs(" vs ", stderr);
	check_show_(b, from, blen);
}

CHECK_UNUSED_ static void check_show_int_(int is_signed, unsigned long long v)
{
	if (is_signed)
		fprintf(stderr, "%lld", (long long)v);
	else
		fprintf(stderr, "%llu", v);
}

/* Integers: both operands converted to the type C compares them in (that
 * of `1 ? a : b`, the usual arithmetic conversions), so the condition is
 * exactly `a op b`; printed signed or not as that type is.  Pointers and
 * floating types do not compile (ASSERT_PTR_EQ; ASSERT(x < y)). */
#define CHECK_INT_(a, op, b, what, ...)                                        \
	__extension__({                                                            \
		typedef __typeof__(1 ? (a) : (b)) check_t_;                            \
		_Static_assert((check_t_)1 / 2 == 0, "integer operands only");         \
		check_t_ check_a_ = (a), check_b_ = (b);                               \
		int check_ok_ = check_begin_(check_a_ op check_b_, __FILE__,           \
		                             __LINE__, what);                          \
		if (!check_ok_) {                                                      \
			int check_signed_ = (check_t_)-1 < (check_t_)1;                    \
			fputs(": ", stderr);                                               \
			check_show_int_(check_signed_, (unsigned long long)check_a_);      \
			fputs(" vs ", stderr);                                             \
			check_show_int_(check_signed_, (unsigned long long)check_b_);      \
			CHECK_END_(__VA_ARGS__);                                           \
		}                                                                      \
		check_ok_;                                                             \
	})

#define CHECK_PTR_(a, op, b, what, ...)                                        \
	__extension__({                                                            \
		const void *check_a_ = (a), *check_b_ = (b);                           \
		int check_ok_ = check_begin_(check_a_ op check_b_, __FILE__,           \
		                             __LINE__, what);                          \
		if (!check_ok_) {                                                      \
			fprintf(stderr, ": %p vs %p", check_a_, check_b_);                 \
			CHECK_END_(__VA_ARGS__);                                           \
		}                                                                      \
		check_ok_;                                                             \
	})

#define CHECK_STR_(a, eq, b, what, ...)                                        \
	__extension__({                                                            \
		const char *check_a_ = (a), *check_b_ = (b);                           \
		int check_ok_ = check_begin_(                                          \
		    check_a_ && check_b_ && (strcmp(check_a_, check_b_) == 0) == (eq), \
		    __FILE__, __LINE__, what);                                         \
		if (!check_ok_) {                                                      \
			check_show_two_(check_a_, check_a_ ? strlen(check_a_) : 0,         \
			                check_b_, check_b_ ? strlen(check_b_) : 0);        \
			CHECK_END_(__VA_ARGS__);                                           \
		}                                                                      \
		check_ok_;                                                             \
	})

#define ASSERT(cond, ...)                                                      \
	__extension__({                                                            \
		int check_ok_ = check_begin_((cond) ? 1 : 0, __FILE__, __LINE__,       \
		                             "ASSERT(" #cond ")");                     \
		if (!check_ok_)                                                        \
			CHECK_END_(__VA_ARGS__);                                           \
		check_ok_;                                                             \
	})

#define ASSERT_EQ(a, b, ...)                                                   \
	CHECK_INT_(a, ==, b, "ASSERT_EQ(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_NE(a, b, ...)                                                   \
	CHECK_INT_(a, !=, b, "ASSERT_NE(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_LT(a, b, ...)                                                   \
	CHECK_INT_(a, <, b, "ASSERT_LT(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_LE(a, b, ...)                                                   \
	CHECK_INT_(a, <=, b, "ASSERT_LE(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_GT(a, b, ...)                                                   \
	CHECK_INT_(a, >, b, "ASSERT_GT(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_GE(a, b, ...)                                                   \
	CHECK_INT_(a, >=, b, "ASSERT_GE(" #a ", " #b ")", __VA_ARGS__)

#define ASSERT_PTR_EQ(a, b, ...)                                               \
	CHECK_PTR_(a, ==, b, "ASSERT_PTR_EQ(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_PTR_NE(a, b, ...)                                               \
	CHECK_PTR_(a, !=, b, "ASSERT_PTR_NE(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_NULL(p, ...)                                                    \
	CHECK_PTR_(p, ==, NULL, "ASSERT_NULL(" #p ")", __VA_ARGS__)
#define ASSERT_NOT_NULL(p, ...)                                                \
	CHECK_PTR_(p, !=, NULL, "ASSERT_NOT_NULL(" #p ")", __VA_ARGS__)

#define ASSERT_STR_EQ(a, b, ...)                                               \
	CHECK_STR_(a, 1, b, "ASSERT_STR_EQ(" #a ", " #b ")", __VA_ARGS__)
#define ASSERT_STR_NE(a, b, ...)                                               \
	CHECK_STR_(a, 0, b, "ASSERT_STR_NE(" #a ", " #b ")", __VA_ARGS__)

#define ASSERT_MEM_EQ(a, b, n, ...)                                            \
	__extension__({                                                            \
		const void *check_a_ = (a), *check_b_ = (b);                           \
		size_t check_n_ = (n);                                                 \
		int check_ok_ = check_begin_(                                          \
		    check_n_ == 0 || memcmp(check_a_, check_b_, check_n_) == 0,        \
		    __FILE__, __LINE__, "ASSERT_MEM_EQ(" #a ", " #b ", " #n ")");      \
		if (!check_ok_) {                                                      \
			check_show_two_(check_a_, check_n_, check_b_, check_n_);           \
			CHECK_END_(__VA_ARGS__);                                           \
		}                                                                      \
		check_ok_;                                                             \
	})

#define ASSERT_BUF_EQ(p, len, s, ...)                                          \
	__extension__({                                                            \
		const void *check_a_ = (p);                                            \
		const char *check_b_ = (s);                                            \
		size_t check_n_ = (len), check_m_ = strlen(check_b_);                  \
		int check_ok_ = check_begin_(                                          \
		    check_n_ == check_m_ &&                                            \
		        (check_n_ == 0 || memcmp(check_a_, check_b_, check_n_) == 0),  \
		    __FILE__, __LINE__, "ASSERT_BUF_EQ(" #p ", " #len ", " #s ")");    \
		if (!check_ok_) {                                                      \
			if (check_n_ != check_m_)                                          \
				fprintf(stderr, ": %zu octets vs %zu", check_n_, check_m_);    \
			check_show_two_(check_a_, check_n_, check_b_, check_m_);           \
			CHECK_END_(__VA_ARGS__);                                           \
		}                                                                      \
		check_ok_;                                                             \
	})

/* A check made in a helper on behalf of its caller's FILE:LINE; the note
 * is the whole report.  Yields ok. */
__attribute__((format(printf, 4, 5))) CHECK_UNUSED_ static int
check_at(int ok, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	if (check_begin_(ok, file, line, ""))
		return 1;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 0;
}

/* "NAME: N checks, M failed" (NAME: the test file without its folder and
 * ".c"); the exit status for main. */
CHECK_UNUSED_ static int check_summary_(const char *file)
{
	const char *name = strrchr(file, '/');
	name = name ? name + 1 : file;
	int len = (int)strcspn(name, ".");
	fprintf(stderr, "%.*s: %d checks, %d failed\n", len, name, check_total,
	        check_failed);
	if (check_total == 0)
		fprintf(stderr, "%.*s: no check ran\n", len, name);
	return check_failed || check_total == 0 ? 1 : 0;
}
#define CHECK_SUMMARY() check_summary_(__FILE__)

#endif
