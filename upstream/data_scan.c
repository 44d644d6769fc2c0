/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/data_scan.c: end-of-data, bare CR/LF, NUL and header scanning
 * of DATA.
 *
 * Why this is careful: SMTP smuggling (SEC Consult, Dec 2023; Postfix
 * smtpd_forbid_bare_newline, CVE-2023-51764 and friends) works when two
 * hops disagree on where a message ends.  saslgate therefore accepts exactly
 * one end-of-data, <CRLF>.<CRLF> (RFC 5321 4.1.1.4), and never hands the
 * upstream a byte sequence that the upstream could read as an end-of-data
 * anywhere else: a bare LF or bare CR is either a reason to reject the whole
 * message or rewritten to CRLF, and in the latter case the line after it
 * is taken as not stuffed: its leading '.' is content and written stuffed,
 * so a lone "." line that did not come from a clean <CRLF>.<CRLF> is
 * written as "..".
 * NUL octets likewise: an upstream that handles lines as C strings reads
 * "<NUL>." as a lone dot, so they are refused or removed, never forwarded.
 *
 * What the upstream stores is a line with its stuffing dot removed (RFC
 * 5321 4.5.2), so that is the line the X-Authenticated-User test looks at:
 * ".X-Authenticated-User:" is that field, "..X-Authenticated-User:" is not.
 *
 * The scanner holds back at most a few octets across calls (a CR whose LF
 * has not arrived, a dot at a line start, a header-name prefix), so the
 * result is the same however the input is split.
 *
 * Speed: every DATA octet passes here, so ordinary text does not go through
 * the state machine one octet at a time.  copy_text() finds the next CR, LF
 * or NUL 16 octets at a time and copies whole runs of clean lines with one
 * append; only line ends and line starts that matter (a dot, CR, LF, NUL, a
 * possible X-Authenticated-User name) take the octet-wise path.  ~1.4
 * instructions per octet instead of ~10.5 for the octet-wise model
 * (callgrind, tests/fuzz/scan_cost.c).
 * tests/fuzz/fuzz_scan_diff.c proves the output the same as that of the
 * octet-at-a-time model of these rules, tests/fuzz/scan_ref.c. */
#include "data_scan.h"

#include "../common/metrics.h"

#include <ctype.h>
#include <string.h>
#if defined(__SSE2__) && !defined(SG_SCAN_NO_SSE2)
#include <emmintrin.h>
#endif

enum {
	S_BOL,    /* at a line start (NULs only so far: lead_nul) */
	S_TEXT,   /* inside a line */
	S_CR,     /* a CR inside/after a line, LF not seen yet */
	S_DOT,    /* a '.' at a line start (then NULs only: lead_nul) */
	S_DOT_CR, /* ".\r" at a line start */
	S_HDR,    /* header name prefix held in hold[] */
	S_END,
};

static const char XAUTH[] = "x-authenticated-user"; /* matched caselessly */

void sg_scan_init(sg_scan *s, bool normalize, bool strip_xauth,
                  uint64_t max_size)
{
	memset(s, 0, sizeof *s);
	s->state = S_BOL;
	s->normalize = normalize;
	s->strip_xauth = strip_xauth;
	s->bol_clean = true; /* DATA's own CRLF precedes the first line */
	s->in_header = true;
	s->max_size = max_size;
}

/* Content for the upstream.  Counts even when nothing is written, so the
 * size of a rejected message is still known. */
static void put(sg_scan *s, sg_buf *out, const char *p, size_t n)
{
	s->size += n;
	if (s->max_size && s->size > s->max_size)
		s->too_big = true;
	if (s->bad || s->too_big)
		return;
	if (sg_buf_append(out, p, n) < 0)
		s->too_big = true; /* cannot happen with an unbounded out */
}

/* RFC 5321 2.3.8: only CRLF ends a line.  Anything else is rejected unless
 * the admin chose normalize. */
static void bare(sg_scan *s)
{
	if (!s->normalize)
		s->bad = true;
}

/* A NUL octet: never written.  It is no 7bit or 8bit data (RFC 2045 2.7,
 * 2.8; BINARYMIME is not offered), and an upstream that keeps lines as C
 * strings would cut the line there (and could read "<NUL>." as a lone
 * dot).  Reject refuses the message; normalize drops the octet and the
 * line's content is read as if it had not been sent, but a NUL still
 * belongs to no CRLF and no <CRLF>.<CRLF>. */
static void nul_octet(sg_scan *s)
{
	if (!s->normalize)
		s->bad = s->nul = true;
}

/* A line ended (clean: with CRLF).  A stripped header line's CRLF goes too;
 * an empty line ends the header section (RFC 5322 2.1). */
static void eol(sg_scan *s, sg_buf *out, bool clean)
{
	if (!s->stripping)
		put(s, out, "\r\n", 2);
	if (s->in_header && s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->lead_nul = false;
	s->bol_clean = clean;
	s->state = S_BOL;
}

/* A "." line that is not the end of data (its line start or line end was
 * bare, or a NUL followed the dot): written as ".." so the upstream reads
 * the same single dot and no end-of-data.  Only reachable in normalize
 * mode (reject has stopped writing by then). */
static void lone_dot(sg_scan *s, sg_buf *out, bool clean)
{
	s->stripping = false;
	put(s, out, "..", 2);
	s->line_len = 2;
	eol(s, out, clean);
}

/* 1 = the held name is X-Authenticated-User with its ':', 0 = might still
 * be, -1 = is not.  A stuffing dot in front is no part of the name: the
 * upstream removes it (RFC 5321 4.5.2) before it reads the field. */
static int hdr_match(const sg_scan *s)
{
	size_t n = sizeof XAUTH - 1, off = s->hold_dot;
	for (size_t i = off; i < s->nhold; i++) {
		unsigned char c = (unsigned char)s->hold[i];
		if (i - off < n) {
			if (tolower(c) != XAUTH[i - off])
				return -1;
			continue;
		}
		if (c == ':')
			return 1;
		if (c != ' ' && c != '\t') /* obs-optional: WSP before ':' */
			return -1;
	}
	/* The name and then only blanks, as many as we hold: an MTA that reads
	 * obs-optional takes it for the field if a ':' follows, and without
	 * the ':' the line is no valid field at all; it goes either way (fail
	 * closed), however many blanks follow. */
	return s->nhold >= SG_SCAN_HOLD ? 1 : 0;
}

/* c (no NUL, CR or LF) is the first octet of a line's content as the
 * upstream reads it: after the stuffing dot (dotted) and any removed NULs.
 * Decides whether the line continues a dropped field, may be an
 * X-Authenticated-User field (held, c consumed: returns true) or is
 * ordinary (the stuffing dot written; S_TEXT goes on from c). */
static bool first_octet(sg_scan *s, sg_buf *out, char c, bool dotted)
{
	s->line_len = dotted;
	s->state = S_TEXT;
	/* RFC 5322 2.2.3: a folded continuation of a dropped field goes too */
	if (s->stripping && s->in_header && (c == ' ' || c == '\t'))
		return false;
	s->stripping = false;
	if (s->in_header && s->strip_xauth && (c | 0x20) == 'x') {
		s->nhold = 0;
		if (dotted)
			s->hold[s->nhold++] = '.';
		s->hold[s->nhold++] = c;
		s->hold_dot = dotted;
		s->line_len++;
		s->state = S_HDR;
		return true;
	}
	if (dotted)
		put(s, out, ".", 1);
	return false;
}

/* One octet at a line start; returns whether it was consumed. */
static bool at_bol(sg_scan *s, sg_buf *out, char c)
{
	if (c == '\0') {
		nul_octet(s);
		s->lead_nul = true;
		return true;
	}
	if (c == '.' && !s->lead_nul && s->bol_clean) {
		/* a stuffing dot, or the end of data: decided by what follows */
		s->state = S_DOT;
		return true;
	}
	if (c == '\r' || c == '\n') {
		s->stripping = false;
		if (c == '\r') {
			s->state = S_CR;
		} else {
			bare(s);
			eol(s, out, false);
		}
		return true;
	}
	if (c == '.') {
		/* A dot of the content, written stuffed: after NULs (their
		 * removal brings it to the line start), or at the start of a
		 * line that began after a bare CR or LF.  Clients that send
		 * bare line ends (curl uploading an LF-only file) stuff only
		 * after CRLF, so such a line is sent as it is and its dot is
		 * text; it can be neither stuffing nor an end of data.  In the
		 * header section ".X-Authenticated-User:" goes all the same:
		 * no such field reaches the upstream in any spelling. */
		s->stripping = false;
		s->line_len = 2;
		if (s->in_header && s->strip_xauth) {
			memcpy(s->hold, "..", 2);
			s->nhold = 2;
			s->hold_dot = 2;
			s->state = S_HDR;
			return true;
		}
		put(s, out, "..", 2);
		s->state = S_TEXT;
		return true;
	}
	return first_octet(s, out, c, false);
}

/* Offset of the first CR, LF or NUL in p[0..n), or n.  The hot loop of the
 * whole DATA path, with SSE2 (x86-64 baseline): 32 octets per step, looking
 * only for any octet <= '\r' (the three exact compares cost more); the
 * 16-octet loop then finds it and sorts out the rare TAB or other control
 * octet.  Without SSE2: 8 octets per step with the word-at-a-time tests
 * (Mycroft's haszero, and its "has an octet below n" for the same first
 * sift). */
static size_t find_eol(const char *p, size_t n)
{
	size_t i = 0;
#if defined(__SSE2__) && !defined(SG_SCAN_NO_SSE2)
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	const __m128i zero = _mm_setzero_si128();
	for (; i + 32 <= n; i += 32) {
		__m128i a = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + i + 16));
		__m128i low = _mm_subs_epu8(_mm_min_epu8(a, b), cr);
		if (_mm_movemask_epi8(_mm_cmpeq_epi8(low, zero)))
			break;
	}
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		unsigned m = (unsigned)_mm_movemask_epi8(
		    _mm_cmpeq_epi8(_mm_subs_epu8(v, cr), zero));
		if (!m)
			continue;
		size_t j = i + (size_t)__builtin_ctz(m);
		if (p[j] == '\r' || p[j] == '\n' || p[j] == '\0')
			return j; /* the usual case: the line's CR */
		__m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf));
		m = (unsigned)_mm_movemask_epi8(
		    _mm_or_si128(hit, _mm_cmpeq_epi8(v, zero)));
		if (m)
			return i + (size_t)__builtin_ctz(m);
	}
#else
	const uint64_t ones = 0x0101010101010101ull, highs = ones << 7;
	for (; i + 8 <= n; i += 8) {
		uint64_t w, a, b;
		memcpy(&w, p + i, 8);
		if (!((w - ones * ('\r' + 1)) & ~w & highs))
			continue; /* no octet <= '\r' */
		a = w ^ (ones * '\r');
		b = w ^ (ones * '\n');
		if (((a - ones) & ~a & highs) | ((b - ones) & ~b & highs) |
		    ((w - ones) & ~w & highs))
			break; /* the exact octet is found below */
	}
#endif
	for (; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
			break;
	return i;
}

/* Whether a line that starts with c after a clean CRLF is ordinary text for
 * at_bol: not a dot (end of data / stuffing), not a line end or NUL, not a
 * possible X-Authenticated-User name to hold, and it ends any stripping. */
static bool plain_bol(const sg_scan *s, char c)
{
	if (c == '.' || c == '\r' || c == '\n' || c == '\0')
		return false;
	if (s->in_header && s->strip_xauth && (c | 0x20) == 'x')
		return false;
	return true;
}

/* S_TEXT, not stripping: the common case.  Copy the longest run from in[i]
 * that the state machine would pass through unchanged -- the rest of this
 * line and every following line that ends in a clean CRLF and starts with
 * an ordinary octet -- with one put.  Stops at the first octet that needs
 * the state machine (bare CR/LF, NUL, a CR whose LF is not here yet, a
 * line starting with '.', CR, LF, NUL or a held header name), leaving
 * state S_TEXT (or S_BOL after a CRLF that ends the input) exactly as the
 * octet-wise path would.  Returns the new i. */
static size_t copy_text(sg_scan *s, const char *in, size_t i, size_t len,
                        sg_buf *out)
{
	size_t start = i, counted = i;
	for (;;) {
		size_t k = i + find_eol(in + i, len - i);
		if (k == len || in[k] != '\r' || k + 1 == len || in[k + 1] != '\n') {
			s->line_len += k - counted;
			i = k;
			break;
		}
		/* "...\r\n": a clean line end (eol() with clean = true) */
		if (k + 2 == len) {
			i = len;
			s->line_len = 0;
			s->lead_nul = false;
			s->bol_clean = true;
			s->state = S_BOL;
			break;
		}
		if (!plain_bol(s, in[k + 2])) {
			s->line_len += k - counted;
			i = k;
			break;
		}
		/* at_bol(in[k + 2]): an ordinary line of one octet so far */
		s->lead_nul = false;
		s->bol_clean = true;
		s->line_len = 1;
		i = counted = k + 3;
	}
	put(s, out, in + start, i - start);
	return i;
}

/* S_TEXT while dropping a header field: skip to the line end (or a NUL). */
static size_t skip_text(sg_scan *s, const char *in, size_t i, size_t len)
{
	size_t k = i + find_eol(in + i, len - i);
	s->line_len += k - i;
	return k;
}

size_t sg_scan_feed(sg_scan *s, const char *in, size_t len, sg_buf *out)
{
	size_t i = 0;

	while (i < len && s->state != S_END) {
		char c = in[i];
		switch (s->state) {
		case S_BOL:
			if (at_bol(s, out, c))
				i++;
			break;
		case S_TEXT:
			if (c == '\r') {
				s->state = S_CR;
				i++;
				break;
			}
			if (c == '\n') {
				bare(s);
				eol(s, out, false);
				i++;
				break;
			}
			if (c == '\0') {
				nul_octet(s);
				i++;
				break;
			}
			i = s->stripping ? skip_text(s, in, i, len)
			                 : copy_text(s, in, i, len, out);
			break;
		case S_CR:
			if (c == '\n') {
				eol(s, out, true);
				i++;
				break;
			}
			/* bare CR: a line end of its own; c starts the next line */
			bare(s);
			eol(s, out, false);
			break;
		case S_DOT:
			if (c == '\0') {
				nul_octet(s);
				s->lead_nul = true;
				i++;
			} else if (c == '\r') {
				s->state = S_DOT_CR;
				i++;
			} else if (c == '\n') {
				bare(s);
				lone_dot(s, out, false);
				i++;
			} else if (first_octet(s, out, c, true)) {
				i++; /* ".X...": held with its dot */
			}
			/* else ".." (stuffed), ".text" or a continuation: S_TEXT */
			break;
		case S_DOT_CR:
			if (c == '\n' && s->bol_clean && !s->lead_nul) {
				s->state = S_END;
				s->done = true;
				i++;
				break;
			}
			if (c == '\n') {
				/* "\n.\r\n" (the line start was bare) or ".<NUL>\r\n" */
				lone_dot(s, out, true);
				i++;
				break;
			}
			/* ".\r" + other: bare CR; c starts the next line */
			bare(s);
			lone_dot(s, out, false);
			break;
		case S_HDR: {
			if (c == '\0') {
				nul_octet(s);
				i++;
				break;
			}
			if (c == '\r' || c == '\n') {
				put(s, out, s->hold, s->nhold);
				s->nhold = 0;
				s->state = S_TEXT;
				break;
			}
			s->hold[s->nhold++] = c;
			s->line_len++;
			i++;
			int m = hdr_match(s);
			if (m == 0)
				break;
			if (m > 0) {
				s->stripping = true;
				sg_metrics_stripped();
			} else
				put(s, out, s->hold, s->nhold);
			s->nhold = 0;
			s->state = S_TEXT;
			break;
		}
		}
	}
	return i;
}
