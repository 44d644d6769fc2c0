/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/scan_ref.c: the DATA scanner's rules, one octet at a time:
 * the reference model that the differential fuzz target (fuzz_scan_diff.c)
 * and tests/unit/test_upstream_scan.c compare the fast scanner
 * (upstream/data_scan.c, with its SSE2 search and whole-run copies) against.
 * The rules: end-of-data only at <CRLF>.<CRLF>; bare CR/LF refused
 * (reject) or made CRLF (normalize); X-Authenticated-User fields removed as
 * the upstream reads the line (after the stuffing dot, NULs removed); NUL
 * octets refused (reject) or removed (normalize).
 *
 * Not built on its own: #include it.  It changes only when the rules do;
 * it is the definition of what the fast scanner must write. */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../common/buf.h"

#define REF_SCAN_HOLD 64

typedef struct ref_scan {
	int state;
	bool normalize;    /* bare_newline = normalize */
	bool strip_xauth;  /* identity header/auth */
	bool bol_clean;    /* the current line began after a CRLF */
	bool in_header;    /* still inside the header section */
	bool stripping;    /* dropping the current header field */
	bool lead_nul;     /* NULs before the line's first content octet */
	size_t line_len;   /* octets of the current line so far (no EOL) */
	uint64_t max_size; /* 0 = unlimited */
	uint64_t size;     /* content octets written (or that would be) */
	bool bad;          /* bare CR/LF or NUL seen (reject mode) */
	bool nul;          /* a NUL among them */
	bool too_big;      /* size went past max_size */
	bool done;         /* <CRLF>.<CRLF> seen */
	char hold[REF_SCAN_HOLD];
	size_t nhold;
	unsigned hold_dot; /* dots before the held name (stuffing; content, stuffed) */
} ref_scan;

enum {
	RS_BOL,    /* at a line start (NULs only so far: lead_nul) */
	RS_TEXT,   /* inside a line */
	RS_CR,     /* a CR inside/after a line, LF not seen yet */
	RS_DOT,    /* a '.' at a line start (then NULs only: lead_nul) */
	RS_DOT_CR, /* ".\r" at a line start */
	RS_HDR,    /* header name prefix held in hold[] */
	RS_END,
};

static const char ref_XAUTH[] = "x-authenticated-user"; /* matched caselessly */

static void ref_scan_init(ref_scan *s, bool normalize, bool strip_xauth,
                  uint64_t max_size)
{
	memset(s, 0, sizeof *s);
	s->state = RS_BOL;
	s->normalize = normalize;
	s->strip_xauth = strip_xauth;
	s->bol_clean = true; /* DATA's own CRLF precedes the first line */
	s->in_header = true;
	s->max_size = max_size;
}

/* Content for the upstream.  Counts even when nothing is written, so the
 * size of a rejected message is still known. */
static void ref_put(ref_scan *s, sg_buf *out, const char *p, size_t n)
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
static void ref_bare(ref_scan *s)
{
	if (!s->normalize)
		s->bad = true;
}

/* A NUL: never written; reject refuses the message for it. */
static void ref_nul(ref_scan *s)
{
	if (!s->normalize)
		s->bad = s->nul = true;
}

/* A line ended (clean: with CRLF).  A stripped header line's CRLF goes too;
 * an empty line ends the header section (RFC 5322 2.1). */
static void ref_eol(ref_scan *s, sg_buf *out, bool clean)
{
	if (!s->stripping)
		ref_put(s, out, "\r\n", 2);
	if (s->in_header && s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->lead_nul = false;
	s->bol_clean = clean;
	s->state = RS_BOL;
}

/* A "." line that is not the end of data (its line start or line end was
 * bare, or a NUL followed the dot): written as ".." so the upstream reads
 * the same single dot and no end-of-data.  Only reachable in normalize
 * mode (reject has stopped writing by then). */
static void ref_lone_dot(ref_scan *s, sg_buf *out, bool clean)
{
	s->stripping = false;
	ref_put(s, out, "..", 2);
	s->line_len = 2;
	ref_eol(s, out, clean);
}

/* 1 = the held name (after the stuffing dot, if held) is
 * X-Authenticated-User with its ':', 0 = might still be, -1 = is not.  The
 * name and only blanks filling the hold count as the field (fail closed). */
static int ref_hdr_match(const ref_scan *s)
{
	const char *h = s->hold + s->hold_dot;
	size_t nh = s->nhold - s->hold_dot;
	size_t n = sizeof ref_XAUTH - 1;
	for (size_t i = 0; i < nh; i++) {
		unsigned char c = (unsigned char)h[i];
		if (i < n) {
			if (tolower(c) != ref_XAUTH[i])
				return -1;
			continue;
		}
		if (c == ':')
			return 1;
		if (c != ' ' && c != '\t') /* obs-optional: WSP before ':' */
			return -1;
	}
	return s->nhold >= REF_SCAN_HOLD ? 1 : 0;
}

/* The first content octet c of a line as the upstream reads it (no NUL, CR
 * or LF; after the stuffing dot if dotted): continuation of a dropped field,
 * start of a held name, or ordinary text.  Consumes c. */
static void ref_first(ref_scan *s, sg_buf *out, char c, bool dotted)
{
	s->line_len = (dotted ? 1 : 0) + 1;
	s->state = RS_TEXT;
	/* RFC 5322 2.2.3: a folded continuation of a dropped field goes too */
	if (s->stripping && s->in_header && (c == ' ' || c == '\t'))
		return;
	s->stripping = false;
	if (s->in_header && s->strip_xauth && tolower((unsigned char)c) == 'x') {
		s->nhold = 0;
		if (dotted)
			s->hold[s->nhold++] = '.';
		s->hold[s->nhold++] = c;
		s->hold_dot = dotted;
		s->state = RS_HDR;
		return;
	}
	if (dotted)
		ref_put(s, out, ".", 1);
	ref_put(s, out, &c, 1);
}

/* One octet at a line start. */
static void ref_at_bol(ref_scan *s, sg_buf *out, char c)
{
	if (c == '\0') {
		ref_nul(s);
		s->lead_nul = true;
		return;
	}
	if (c == '.' && (s->lead_nul || !s->bol_clean)) {
		/* NULs, then a dot, or a dot after a bare line end: content,
		 * written stuffed; held in the header section, where
		 * ".X-Authenticated-User:" is dropped too */
		s->stripping = false;
		s->line_len = 2;
		if (s->in_header && s->strip_xauth) {
			s->hold[0] = s->hold[1] = '.';
			s->nhold = 2;
			s->hold_dot = 2;
			s->state = RS_HDR;
			return;
		}
		ref_put(s, out, "..", 2);
		s->state = RS_TEXT;
		return;
	}
	if (c == '.') {
		s->state = RS_DOT;
		return;
	}
	if (c == '\r') {
		s->stripping = false;
		s->state = RS_CR;
		return;
	}
	if (c == '\n') {
		s->stripping = false;
		ref_bare(s);
		ref_eol(s, out, false);
		return;
	}
	ref_first(s, out, c, false);
}

static size_t ref_scan_feed(ref_scan *s, const char *in, size_t len, sg_buf *out)
{
	size_t i = 0;

	while (i < len && s->state != RS_END) {
		char c = in[i];
		switch (s->state) {
		case RS_BOL:
			ref_at_bol(s, out, c);
			i++;
			break;
		case RS_TEXT: {
			/* copy the run up to the next CR, LF or NUL at once */
			size_t j = i;
			while (j < len && in[j] != '\r' && in[j] != '\n' && in[j] != '\0')
				j++;
			if (j > i) {
				s->line_len += j - i;
				if (!s->stripping)
					ref_put(s, out, in + i, j - i);
				i = j;
				break;
			}
			if (c == '\r') {
				s->state = RS_CR;
			} else if (c == '\n') {
				ref_bare(s);
				ref_eol(s, out, false);
			} else {
				ref_nul(s);
			}
			i++;
			break;
		}
		case RS_CR:
			if (c == '\n') {
				ref_eol(s, out, true);
				i++;
				break;
			}
			/* bare CR: a line end of its own; c starts the next line */
			ref_bare(s);
			ref_eol(s, out, false);
			break;
		case RS_DOT:
			if (c == '\0') {
				ref_nul(s);
				s->lead_nul = true;
			} else if (c == '\r') {
				s->state = RS_DOT_CR;
			} else if (c == '\n') {
				ref_bare(s);
				ref_lone_dot(s, out, false);
			} else {
				/* "..", ".text", ".X-...", ". folded": the content
				 * after the stuffing dot decides */
				ref_first(s, out, c, true);
			}
			i++;
			break;
		case RS_DOT_CR:
			if (c == '\n' && s->bol_clean && !s->lead_nul) {
				s->state = RS_END;
				s->done = true;
				i++;
				break;
			}
			if (c == '\n') {
				/* "\n.\r\n" (the line start was bare) or ".<NUL>\r\n" */
				ref_lone_dot(s, out, true);
				i++;
				break;
			}
			/* ".\r" + other: bare CR; c starts the next line */
			ref_bare(s);
			ref_lone_dot(s, out, false);
			break;
		case RS_HDR: {
			if (c == '\0') {
				ref_nul(s);
				i++;
				break;
			}
			if (c == '\r' || c == '\n') {
				ref_put(s, out, s->hold, s->nhold);
				s->nhold = 0;
				s->state = RS_TEXT;
				break;
			}
			s->hold[s->nhold++] = c;
			s->line_len++;
			i++;
			int m = ref_hdr_match(s);
			if (m == 0)
				break;
			if (m > 0)
				s->stripping = true;
			else
				ref_put(s, out, s->hold, s->nhold);
			s->nhold = 0;
			s->state = RS_TEXT;
			break;
		}
		}
	}
	return i;
}
