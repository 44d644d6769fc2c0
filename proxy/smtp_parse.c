/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/smtp_parse.c: resumable SMTP command line framer (see smtp_parse.h
 * for the limits and the bare-LF rule) and the MAIL/RCPT path parser. */
#include "smtp_parse.h"

#include <ctype.h>
#include <string.h>

int sg_line_next(sg_lines *st, const char *buf, size_t len, size_t limit,
                 const char **line, size_t *linelen, size_t *consumed)
{
	*consumed = 0;
	*line = NULL;
	*linelen = 0;
	if (len == 0)
		return SG_LINE_NONE;

	/* Dropping the rest of an overlong line: up to and including its LF. */
	if (st->discarding) {
		const char *lf = memchr(buf, '\n', len);
		if (!lf) {
			*consumed = len;
			return SG_LINE_NONE;
		}
		st->discarding = false;
		*consumed = (size_t)(lf - buf) + 1;
		return SG_LINE_NONE;
	}

	/* Only the first `limit` octets can hold the LF of a valid line. */
	size_t scan = len < limit ? len : limit;
	const char *lf = memchr(buf, '\n', scan);
	if (!lf) {
		if (len < limit)
			return SG_LINE_NONE; /* incomplete, still within bounds */
		/* limit octets and no LF: too long whatever follows.  Drop it up
		 * to its LF if that is here already (the next command follows),
		 * else drop all and the rest of the line as it arrives. */
		lf = memchr(buf + scan, '\n', len - scan);
		if (lf) {
			*consumed = (size_t)(lf - buf) + 1;
		} else {
			st->discarding = true;
			*consumed = len;
		}
		return SG_LINE_TOOLONG;
	}

	size_t total = (size_t)(lf - buf) + 1; /* LF included */
	*consumed = total;
	size_t n = total - 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (memchr(buf, '\0', n))
		return SG_LINE_NUL;
	*line = buf;
	*linelen = n;
	return SG_LINE_OK;
}

bool sg_line_pending(const sg_lines *st, const char *buf, size_t len,
                     size_t limit)
{
	if (len == 0)
		return false;
	if (st->discarding)
		return memchr(buf, '\n', len) != NULL;
	if (len >= limit)
		return true;
	return memchr(buf, '\n', len) != NULL;
}

void sg_cmd_split(char *line, char **verb, char **arg)
{
	char *p = line;
	*verb = p;
	for (; *p && *p != ' '; p++)
		*p = (char)toupper((unsigned char)*p);
	if (*p)
		*p++ = '\0';
	while (*p == ' ')
		p++;
	*arg = p;
	size_t n = strlen(p);
	while (n > 0 && p[n - 1] == ' ')
		p[--n] = '\0';
}

int sg_path_parse(char **pp, char *out, size_t max, unsigned flags)
{
	char *p = *pp;
	bool bracketed = *p == '<';
	if (!bracketed && (*p == '\0' || (flags & SG_PATH_STRICT)))
		return SG_PATH_SYNTAX;
	if (bracketed)
		p++;
	/* RFC 5321 4.1.2 / C: "@a,@b:user@c", the route is to be ignored */
	if (*p == '@') {
		char *colon = p + strcspn(p, ":> ");
		if (*colon != ':')
			return SG_PATH_BAD; /* "@dom" */
		p = colon + 1;
	}
	char *start = p;
	bool quoted = false;
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f)
			return SG_PATH_BAD;
		if (quoted && c == '\\' && p[1]) {
			p++;
			continue;
		}
		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted)
			continue;
		if (bracketed ? c == '>' : c == ' ')
			break;
		if (c == ' ' || c == '<' || c == '>' || c == ',' || c == ';')
			return SG_PATH_BAD;
	}
	if (quoted || (bracketed && *p != '>'))
		return SG_PATH_SYNTAX; /* unterminated */
	size_t n = (size_t)(p - start);
	if (n == 0 && (!bracketed || !(flags & SG_PATH_NULL_OK)))
		return SG_PATH_BAD;
	if (n > max)
		return SG_PATH_BAD;
	char *at = memrchr(start, '@', n);
	if (at && (at == start || at == p - 1))
		return SG_PATH_BAD; /* "@dom" or "user@" */
	memcpy(out, start, n);
	out[n] = '\0';
	if (bracketed)
		p++;
	if (*p && *p != ' ')
		return SG_PATH_SYNTAX;
	*pp = p;
	return SG_PATH_OK;
}
