/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/reply_parse.c: resumable SMTP reply reader and EHLO parser.
 *
 * Reply syntax (RFC 5321 4.2): every line is three digits, then '-' on all
 * but the last line or ' ' (or nothing) on the last, then text, then CRLF.
 * All lines of one reply carry the same code.  The reader copies the reply
 * into its own bounded buffer so the session can pass it to the client as
 * the upstream sent it (multi-line kept); a bare LF line end from a sloppy
 * MTA is stored as CRLF so the client never sees a bare LF from us. */
#include "reply_parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sg_reply_reader_init(sg_reply_reader *r)
{
	r->len = 0;
	r->line_start = 0;
	r->code = 0;
	r->complete = false;
	r->error = NULL;
	r->text[0] = '\0';
}

/* A complete line sits at text[line_start .. len) without its CRLF.
 * Returns 1 last line, 0 more lines follow, -1 malformed. */
static int line_done(sg_reply_reader *r)
{
	const char *l = r->text + r->line_start;
	size_t n = r->len - r->line_start;

	if (n < 3 || !isdigit((unsigned char)l[0]) ||
	    !isdigit((unsigned char)l[1]) || !isdigit((unsigned char)l[2])) {
		r->error = "reply line without a 3-digit code";
		return -1;
	}
	if (l[0] < '2' || l[0] > '5') {
		r->error = "reply code outside 2xx-5xx";
		return -1;
	}
	int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (r->code && code != r->code) {
		r->error = "multi-line reply changes its code";
		return -1;
	}
	r->code = code;
	/* a stray CR or NUL inside the line would reach the client as is */
	for (size_t i = 0; i < n; i++)
		if (r->text[r->line_start + i] == '\r' || !r->text[r->line_start + i])
			r->text[r->line_start + i] = ' ';
	if (n == 3 || l[3] == ' ')
		return 1;
	if (l[3] == '-')
		return 0;
	r->error = "reply code not followed by ' ' or '-'";
	return -1;
}

int sg_reply_read(sg_reply_reader *r, const char *in, size_t len, size_t *used)
{
	if (r->complete)
		sg_reply_reader_init(r);
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c != '\n') {
			/* room for this byte and a later CRLF + NUL */
			if (r->len - r->line_start >= SG_REPLY_LINE_MAX ||
			    r->len + 3 > SG_REPLY_MAX) {
				r->error = r->len + 3 > SG_REPLY_MAX
				               ? "reply longer than SG_REPLY_MAX"
				               : "reply line longer than SG_REPLY_LINE_MAX";
				*used = i;
				return -1;
			}
			r->text[r->len++] = c;
			continue;
		}
		if (r->len > r->line_start && r->text[r->len - 1] == '\r')
			r->len--; /* the CR of CRLF; re-added below */
		int last = line_done(r);
		if (last < 0) {
			*used = i + 1;
			return -1;
		}
		r->text[r->len++] = '\r';
		r->text[r->len++] = '\n';
		r->text[r->len] = '\0';
		r->line_start = r->len;
		if (last) {
			r->complete = true;
			*used = i + 1;
			return 1;
		}
	}
	*used = len;
	return 0;
}

static const struct {
	const char *name;
	unsigned bit;
} xattrs[] = {
    {"NAME", SG_XA_NAME},         {"ADDR", SG_XA_ADDR},
    {"PORT", SG_XA_PORT},         {"PROTO", SG_XA_PROTO},
    {"HELO", SG_XA_HELO},         {"LOGIN", SG_XA_LOGIN},
    {"DESTADDR", SG_XA_DESTADDR}, {"DESTPORT", SG_XA_DESTPORT},
    {"SOURCE", SG_XA_SOURCE},     {"IDENT", SG_XA_IDENT},
};

/* Words after the keyword: attribute names (XCLIENT, XFORWARD) or
 * mechanisms (AUTH). */
static unsigned parse_attrs(const char *p, const char *end)
{
	unsigned bits = 0;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *w = p;
		while (p < end && *p != ' ' && *p != '\t')
			p++;
		for (size_t k = 0; k < sizeof xattrs / sizeof xattrs[0]; k++) {
			size_t n = strlen(xattrs[k].name);
			if ((size_t)(p - w) == n && !strncasecmp(w, xattrs[k].name, n))
				bits |= xattrs[k].bit;
		}
	}
	return bits;
}

static bool has_word(const char *p, const char *end, const char *word)
{
	size_t n = strlen(word);
	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *w = p;
		while (p < end && *p != ' ' && *p != '\t')
			p++;
		if ((size_t)(p - w) == n && !strncasecmp(w, word, n))
			return true;
	}
	return false;
}

/* One extension line's text (after "250-"/"250 "), without CRLF. */
static void ehlo_line(sg_ehlo *e, const char *p, const char *end)
{
	const char *kw = p;
	while (p < end && *p != ' ' && *p != '\t' && *p != '=')
		p++;
	size_t n = (size_t)(p - kw);
	const char *args = p < end ? p + 1 : end;

#define KW(s) (n == sizeof(s) - 1 && !strncasecmp(kw, s, n))
	if (KW("PIPELINING"))
		e->pipelining = true;
	else if (KW("8BITMIME"))
		e->eightbitmime = true;
	else if (KW("SMTPUTF8"))
		e->smtputf8 = true;
	else if (KW("DSN"))
		e->dsn = true;
	else if (KW("STARTTLS"))
		e->starttls = true;
	else if (KW("CHUNKING"))
		e->chunking = true;
	else if (KW("ENHANCEDSTATUSCODES"))
		e->enhancedstatuscodes = true;
	else if (KW("SIZE")) {
		/* RFC 1870: "SIZE" alone or "SIZE <n>", 0 = no fixed limit */
		e->has_size = true;
		char tmp[24];
		size_t an = (size_t)(end - args);
		if (an > 0 && an < sizeof tmp) {
			memcpy(tmp, args, an);
			tmp[an] = '\0';
			char *ep;
			unsigned long long v = strtoull(tmp, &ep, 10);
			if (ep != tmp && (*ep == '\0' || *ep == ' '))
				e->size = v;
		}
	} else if (KW("AUTH")) {
		/* "AUTH PLAIN LOGIN" and the pre-RFC "AUTH=PLAIN LOGIN" */
		e->auth = true;
		e->auth_plain |= has_word(args, end, "PLAIN");
		e->auth_login |= has_word(args, end, "LOGIN");
	} else if (KW("XCLIENT")) {
		e->xclient = true;
		e->xclient_attrs |= parse_attrs(args, end);
	} else if (KW("XFORWARD")) {
		e->xforward = true;
		e->xforward_attrs |= parse_attrs(args, end);
	}
#undef KW
}

int sg_ehlo_parse(const char *text, size_t len, sg_ehlo *out)
{
	memset(out, 0, sizeof *out);
	if (len < 3 || strncmp(text, "250", 3) != 0)
		return -1;
	const char *p = text, *end = text + len;
	bool first = true;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *next = eol ? eol + 1 : end;
		const char *le = eol ? eol : end;
		if (le > p && le[-1] == '\r')
			le--;
		/* the first line is "250-domain greeting" */
		if (!first && le - p > 4)
			ehlo_line(out, p + 4, le);
		first = false;
		p = next;
	}
	return 0;
}

void sg_reply_queue_id(const char *text, size_t len, char *out, size_t cap)
{
	static const char *const marks[] = {"queued as ", "id="};
	out[0] = '\0';
	if (cap == 0)
		return;
	for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
		size_t ml = strlen(marks[m]);
		for (size_t i = 0; i + ml <= len; i++) {
			if (strncasecmp(text + i, marks[m], ml) != 0)
				continue;
			size_t j = i + ml, o = 0;
			while (j < len && o + 1 < cap &&
			       (isalnum((unsigned char)text[j]) || text[j] == '-' ||
			        text[j] == '_' || text[j] == '.'))
				out[o++] = text[j++];
			/* a trailing '.' is the sentence's, not the id's */
			while (o > 0 && out[o - 1] == '.')
				o--;
			out[o] = '\0';
			if (o)
				return;
		}
	}
}
