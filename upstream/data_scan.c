/* upstream/data_scan.c: end-of-data, bare CR/LF and header scanning of DATA.
 *
 * Why this is careful: SMTP smuggling (SEC Consult, Dec 2023; Postfix
 * smtpd_forbid_bare_newline, CVE-2023-51764 and friends) works when two
 * hops disagree on where a message ends.  saslgate therefore accepts exactly
 * one end-of-data, <CRLF>.<CRLF> (RFC 5321 4.1.1.4), and never hands the
 * upstream a byte sequence that the upstream could read as an end-of-data
 * anywhere else: a bare LF or bare CR is either a reason to reject the whole
 * message or rewritten to CRLF, and in the latter case a lone "." line that
 * did not come from a clean <CRLF>.<CRLF> is written dot-stuffed ("..").
 *
 * The scanner holds back at most a few octets across calls (a CR whose LF
 * has not arrived, a dot at a line start, a header-name prefix), so the
 * result is the same however the input is split. */
#include "data_scan.h"

#include <ctype.h>
#include <string.h>

enum {
	S_BOL,    /* at a line start */
	S_TEXT,   /* inside a line */
	S_CR,     /* a CR inside/after a line, LF not seen yet */
	S_DOT,    /* a '.' at a line start */
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

/* A line ended (clean: with CRLF).  A stripped header line's CRLF goes too;
 * an empty line ends the header section (RFC 5322 2.1). */
static void eol(sg_scan *s, sg_buf *out, bool clean)
{
	if (!s->stripping)
		put(s, out, "\r\n", 2);
	if (s->in_header && s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->bol_clean = clean;
	s->state = S_BOL;
}

/* A "." line that is not the end of data (its line start or line end was
 * bare): written as ".." so the upstream reads the same single dot and no
 * end-of-data.  Only reachable in normalize mode (reject has stopped
 * writing by then). */
static void lone_dot(sg_scan *s, sg_buf *out, bool clean)
{
	s->stripping = false;
	put(s, out, "..", 2);
	s->line_len = 2;
	eol(s, out, clean);
}

/* 1 = the held name is X-Authenticated-User with its ':', 0 = might still
 * be, -1 = is not. */
static int hdr_match(const sg_scan *s)
{
	size_t n = sizeof XAUTH - 1;
	for (size_t i = 0; i < s->nhold; i++) {
		unsigned char c = (unsigned char)s->hold[i];
		if (i < n) {
			if (tolower(c) != XAUTH[i])
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
	return s->nhold >= SG_SCAN_HOLD ? 1 : 0;
}

/* One octet at a line start. */
static void at_bol(sg_scan *s, sg_buf *out, char c)
{
	/* RFC 5322 2.2.3: a folded continuation of a dropped field goes too */
	if (!(s->stripping && s->in_header && (c == ' ' || c == '\t')))
		s->stripping = false;
	if (c == '.') {
		s->state = S_DOT;
		return;
	}
	if (c == '\r') {
		s->state = S_CR;
		return;
	}
	if (c == '\n') {
		bare(s);
		eol(s, out, false);
		return;
	}
	s->line_len++;
	s->state = S_TEXT;
	if (s->stripping)
		return;
	if (s->in_header && s->strip_xauth && tolower((unsigned char)c) == 'x') {
		s->hold[0] = c;
		s->nhold = 1;
		s->state = S_HDR;
		return;
	}
	put(s, out, &c, 1);
}

size_t sg_scan_feed(sg_scan *s, const char *in, size_t len, sg_buf *out)
{
	size_t i = 0;

	while (i < len && s->state != S_END) {
		char c = in[i];
		switch (s->state) {
		case S_BOL:
			at_bol(s, out, c);
			i++;
			break;
		case S_TEXT: {
			/* the hot path: copy the run up to the next CR or LF at once */
			size_t j = i;
			while (j < len && in[j] != '\r' && in[j] != '\n')
				j++;
			if (j > i) {
				s->line_len += j - i;
				if (!s->stripping)
					put(s, out, in + i, j - i);
				i = j;
				break;
			}
			if (c == '\r') {
				s->state = S_CR;
			} else {
				bare(s);
				eol(s, out, false);
			}
			i++;
			break;
		}
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
			if (c == '\r') {
				s->state = S_DOT_CR;
				i++;
			} else if (c == '\n') {
				bare(s);
				lone_dot(s, out, false);
				i++;
			} else {
				/* ".." (stuffed) or ".text": an ordinary line */
				put(s, out, ".", 1);
				s->line_len = 1;
				s->state = S_TEXT;
			}
			break;
		case S_DOT_CR:
			if (c == '\n' && s->bol_clean) {
				s->state = S_END;
				s->done = true;
				i++;
				break;
			}
			if (c == '\n') {
				/* "\n.\r\n": the line start was bare */
				lone_dot(s, out, true);
				i++;
				break;
			}
			/* ".\r" + other: bare CR; c starts the next line */
			bare(s);
			lone_dot(s, out, false);
			break;
		case S_HDR: {
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
			if (m > 0)
				s->stripping = true;
			else
				put(s, out, s->hold, s->nhold);
			s->nhold = 0;
			s->state = S_TEXT;
			break;
		}
		}
	}
	return i;
}
