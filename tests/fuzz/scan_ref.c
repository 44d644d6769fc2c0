/* tests/fuzz/scan_ref.c: the DATA scanner as it was before the fast path
 * (upstream/data_scan.c at c73f207), kept verbatim with renamed symbols as
 * the reference the differential fuzz target (fuzz_data_scan_diff.c) and
 * tests/unit/test_upstream_scan.c compare the fast scanner against.
 *
 * Not built on its own: #include it.  Its behaviour must not change; it is
 * the definition of "byte-for-byte the same as before". */
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
	size_t line_len;   /* octets of the current line so far (no EOL) */
	uint64_t max_size; /* 0 = unlimited */
	uint64_t size;     /* content octets written (or that would be) */
	bool bad;          /* bare CR/LF seen (reject mode) */
	bool too_big;      /* size went past max_size */
	bool done;         /* <CRLF>.<CRLF> seen */
	char hold[REF_SCAN_HOLD];
	size_t nhold;
} ref_scan;

enum {
	RS_BOL,    /* at a line start */
	RS_TEXT,   /* inside a line */
	RS_CR,     /* a CR inside/after a line, LF not seen yet */
	RS_DOT,    /* a '.' at a line start */
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

/* A line ended (clean: with CRLF).  A stripped header line's CRLF goes too;
 * an empty line ends the header section (RFC 5322 2.1). */
static void ref_eol(ref_scan *s, sg_buf *out, bool clean)
{
	if (!s->stripping)
		ref_put(s, out, "\r\n", 2);
	if (s->in_header && s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->bol_clean = clean;
	s->state = RS_BOL;
}

/* A "." line that is not the end of data (its line start or line end was
 * ref_bare): written as ".." so the upstream reads the same single dot and no
 * end-of-data.  Only reachable in normalize mode (reject has stopped
 * writing by then). */
static void ref_lone_dot(ref_scan *s, sg_buf *out, bool clean)
{
	s->stripping = false;
	ref_put(s, out, "..", 2);
	s->line_len = 2;
	ref_eol(s, out, clean);
}

/* 1 = the held name is X-Authenticated-User with its ':', 0 = might still
 * be, -1 = is not. */
static int ref_hdr_match(const ref_scan *s)
{
	size_t n = sizeof ref_XAUTH - 1;
	for (size_t i = 0; i < s->nhold; i++) {
		unsigned char c = (unsigned char)s->hold[i];
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
	/* The name and then only blanks, as many as we hold: an MTA that reads
	 * obs-optional would take this for the header (fuzz_data_scan found
	 * it), and a field name not followed by ':' is no valid field anyway,
	 * so the line goes (fail closed). */
	return s->nhold >= REF_SCAN_HOLD ? 1 : 0;
}

/* One octet at a line start. */
static void ref_at_bol(ref_scan *s, sg_buf *out, char c)
{
	/* RFC 5322 2.2.3: a folded continuation of a dropped field goes too */
	if (!(s->stripping && s->in_header && (c == ' ' || c == '\t')))
		s->stripping = false;
	if (c == '.') {
		s->state = RS_DOT;
		return;
	}
	if (c == '\r') {
		s->state = RS_CR;
		return;
	}
	if (c == '\n') {
		ref_bare(s);
		ref_eol(s, out, false);
		return;
	}
	s->line_len++;
	s->state = RS_TEXT;
	if (s->stripping)
		return;
	if (s->in_header && s->strip_xauth && tolower((unsigned char)c) == 'x') {
		s->hold[0] = c;
		s->nhold = 1;
		s->state = RS_HDR;
		return;
	}
	ref_put(s, out, &c, 1);
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
			/* the hot path: copy the run up to the next CR or LF at once */
			size_t j = i;
			while (j < len && in[j] != '\r' && in[j] != '\n')
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
			} else {
				ref_bare(s);
				ref_eol(s, out, false);
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
			/* ref_bare CR: a line end of its own; c starts the next line */
			ref_bare(s);
			ref_eol(s, out, false);
			break;
		case RS_DOT:
			if (c == '\r') {
				s->state = RS_DOT_CR;
				i++;
			} else if (c == '\n') {
				ref_bare(s);
				ref_lone_dot(s, out, false);
				i++;
			} else {
				/* ".." (stuffed) or ".text": an ordinary line */
				ref_put(s, out, ".", 1);
				s->line_len = 1;
				s->state = RS_TEXT;
			}
			break;
		case RS_DOT_CR:
			if (c == '\n' && s->bol_clean) {
				s->state = RS_END;
				s->done = true;
				i++;
				break;
			}
			if (c == '\n') {
				/* "\n.\r\n": the line start was ref_bare */
				ref_lone_dot(s, out, true);
				i++;
				break;
			}
			/* ".\r" + other: ref_bare CR; c starts the next line */
			ref_bare(s);
			ref_lone_dot(s, out, false);
			break;
		case RS_HDR: {
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
