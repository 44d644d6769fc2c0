/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/policy_proto.c: the Postfix policy delegation protocol
 * (SMTPD_POLICY_README "Protocol description"), without I/O.
 *
 * A request is "name=value" lines, each ending in LF, and an empty line;
 * the reply is the same, with "action=..." (access(5) actions) among its
 * attributes.  Values never hold a line end: a request that would is
 * refused whole, never cut or mended. */
#include "policy_proto.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sg_policy_encode(const sg_policy_attr *attrs, size_t n, sg_buf *out,
                     const char **bad)
{
	*bad = NULL;
	for (size_t i = 0; i < n; i++)
		if (attrs[i].value && strpbrk(attrs[i].value, "\r\n")) {
			*bad = attrs[i].name;
			return -1;
		}
	for (size_t i = 0; i < n; i++)
		if (attrs[i].value)
			sg_buf_appendf(out, "%s=%s\n", attrs[i].name, attrs[i].value);
	sg_buf_append(out, "\n", 1);
	return 0;
}

/* Copy a value, controls (a CR before the LF, a TAB) as spaces, at most
 * cap - 1 octets. */
static void copy_text(char *dst, size_t cap, const char *p, size_t n)
{
	if (n > cap - 1)
		n = cap - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	dst[n] = '\0';
	while (n > 0 && dst[n - 1] == ' ') /* "action=dunno\r" */
		dst[--n] = '\0';
}

int sg_policy_reply_parse(const char *p, size_t len, char *action,
                          size_t cap, size_t *used)
{
	bool have = false;
	size_t pos = 0;
	*used = 0;
	action[0] = '\0';
	while (pos < len && pos < SG_POLICY_REPLY_MAX) {
		const char *lf = memchr(p + pos, '\n', len - pos);
		if (!lf)
			break;
		size_t n = (size_t)(lf - (p + pos));
		if (n > 0 && p[pos + n - 1] == '\r')
			n--; /* tolerated, as Postfix's attr_scan_plain does not */
		if (n == 0) { /* the end of the reply */
			if (!have)
				return -1;
			*used = (size_t)(lf - p) + 1;
			return 1;
		}
		const char *eq = memchr(p + pos, '=', n);
		if (!eq || eq == p + pos)
			return -1;
		size_t nl = (size_t)(eq - (p + pos));
		if (nl == 6 && strncasecmp(p + pos, "action", 6) == 0) {
			copy_text(action, cap, eq + 1, n - nl - 1);
			have = true;
		}
		pos = (size_t)(lf - p) + 1;
	}
	return len >= SG_POLICY_REPLY_MAX ? -1 : 0;
}

/* ------------------------------------------------------------- actions */

/* Postfix's access(5) actions that mean nothing to a proxy in front of
 * the MTA: the queue, the delivery and the recipients are the upstream's
 * business.  Each is logged and taken as DUNNO (README, "Stopping a
 * stolen password"). */
static const char *const ignored[] = {
    "HOLD", "DISCARD", "FILTER", "REDIRECT", "BCC", "INFO", "DELAY",
    "SHUTDOWN", NULL,
};

/* "NAME rest": does a start with the word name (any case)? *rest is the
 * text after it and its blanks. */
static bool word_is(const char *a, const char *name, const char **rest)
{
	size_t n = strlen(name);
	if (strncasecmp(a, name, n) != 0 || (a[n] && a[n] != ' ' && a[n] != '\t'))
		return false;
	a += n;
	while (*a == ' ' || *a == '\t')
		a++;
	*rest = a;
	return true;
}

/* "X.Y.Z " at t, X the class of code (RFC 3463). */
static bool has_enhanced(const char *t, int code)
{
	if (t[0] != '0' + code / 100 || t[1] != '.')
		return false;
	const char *p = t + 2;
	for (int part = 0; part < 2; part++) {
		size_t d = strspn(p, "0123456789");
		if (d == 0 || d > 3)
			return false;
		p += d;
		if (part == 0 && *p++ != '.')
			return false;
	}
	return *p == ' ' || *p == '\0';
}

static void refuse(sg_policy_verdict *v, const char *name, int code,
                   const char *text, const char *dflt)
{
	v->kind = SG_POL_REFUSE;
	v->name = name;
	v->code = code;
	if (!*text)
		text = dflt;
	if (has_enhanced(text, code))
		snprintf(v->text, sizeof v->text, "%d %s\r\n", code, text);
	else
		snprintf(v->text, sizeof v->text, "%d %d.7.1 %s\r\n", code,
		         code / 100, text);
}

/* "4NN text" / "5NN text": the code must stand alone. */
static int numeric_code(const char *a, const char **rest)
{
	if ((a[0] != '4' && a[0] != '5') || a[1] < '0' || a[1] > '9' ||
	    a[2] < '0' || a[2] > '9' || (a[3] && a[3] != ' '))
		return 0;
	*rest = a + 3;
	while (**rest == ' ')
		(*rest)++;
	return (a[0] - '0') * 100 + (a[1] - '0') * 10 + (a[2] - '0');
}

/* "Name: value" (RFC 5322 2.2); the text has no controls (copy_text
 * made them spaces). */
static bool header_ok(const char *h)
{
	size_t n = strcspn(h, ":");
	if (n == 0 || h[n] != ':')
		return false;
	/* letters, digits and '-': no dot to stuff at a line's start */
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-')
			return false;
	return strlen(h) <= 998;
}

void sg_policy_verdict_of(const char *a, sg_policy_verdict *v)
{
	const char *rest = "";
	int code;
	memset(v, 0, sizeof *v);
	v->kind = SG_POL_CONTINUE;
	if (word_is(a, "OK", &rest)) {
		v->name = "OK";
	} else if (word_is(a, "DUNNO", &rest)) {
		v->name = "DUNNO";
	} else if (word_is(a, "DEFER_IF_REJECT", &rest)) {
		/* nothing after the check rejects in saslgate: never a deferral */
		v->name = "DEFER_IF_REJECT";
	} else if (word_is(a, "REJECT", &rest)) {
		refuse(v, "REJECT", 554, rest, "Access denied");
	} else if (word_is(a, "DEFER_IF_PERMIT", &rest)) {
		/* the check is the last saslgate makes: a permit would follow */
		refuse(v, "DEFER_IF_PERMIT", 450, rest, "Service unavailable");
	} else if (word_is(a, "DEFER", &rest)) {
		refuse(v, "DEFER", 450, rest, "Service unavailable");
	} else if ((code = numeric_code(a, &rest)) != 0) {
		refuse(v, code < 500 ? "4NN" : "5NN", code, rest,
		       code < 500 ? "Service unavailable" : "Access denied");
	} else if (word_is(a, "WARN", &rest)) {
		v->kind = SG_POL_WARN;
		v->name = "WARN";
		snprintf(v->text, sizeof v->text, "%s", rest);
	} else if (word_is(a, "PREPEND", &rest) && header_ok(rest)) {
		v->kind = SG_POL_PREPEND;
		v->name = "PREPEND";
		snprintf(v->text, sizeof v->text, "%s", rest);
	} else {
		v->kind = SG_POL_UNKNOWN;
		v->name = "unknown";
		for (size_t i = 0; ignored[i]; i++)
			if (word_is(a, ignored[i], &rest)) {
				v->kind = SG_POL_IGNORED;
				v->name = ignored[i];
			}
	}
}
