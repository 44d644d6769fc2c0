/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/identity.c: every outward form of the identity (identity.h).
 *
 * Postfix XCLIENT_README: NAME is the client host name (verified: the
 * session sends only a forward-confirmed one, proxy/client_name.h),
 * [UNAVAILABLE], or [TEMPUNAVAIL] when its lookup failed for now; ADDR is
 * the IPv4 address or "IPV6:" + the IPv6 address; PROTO is SMTP or ESMTP
 * only (Postfix 3.7 answers "501 5.5.4 Bad PROTO syntax" to ESMTPSA;
 * it derives ESMTPA/ESMTPSA itself from LOGIN and its TLS state); LOGIN is
 * the SASL login name, which Postfix's permit_sasl_authenticated honours.
 * Values are xtext so a client-chosen HELO or login cannot add attributes.
 * A command is at most 512 octets (XCLIENT_README, "Note 1"); attributes
 * that do not fit one command go in the next, and one that does not fit a
 * command of its own is an error: never cut, never left out. */
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "reply_parse.h"
#include "xtext.h"

typedef struct attr {
	unsigned bit;
	const char *name, *value;
} attr;

static void addr_value(const sg_identity *id, char *out, size_t cap)
{
	if (!id->client_ip || !*id->client_ip)
		snprintf(out, cap, "[UNAVAILABLE]");
	else
		snprintf(out, cap, "%s%s", strchr(id->client_ip, ':') ? "IPV6:" : "",
		         id->client_ip);
}

/* NAME=: the same three values for XCLIENT and XFORWARD (XFORWARD_README). */
static const char *name_value(const sg_identity *id)
{
	if (id->client_name && *id->client_name)
		return id->client_name;
	return id->client_name_temp ? "[TEMPUNAVAIL]" : "[UNAVAILABLE]";
}

/* Pack "NAME=xtext(value)" of the attributes in attrs that have a value
 * into commands "VERB ...\r\n" of at most SG_XCLIENT_LINE_MAX octets. */
static int pack(const char *verb, const attr *a, size_t na, unsigned attrs,
                char lines[][SG_XCLIENT_LINE_MAX + 1], int max,
                const char **why)
{
	static __thread char reason[128];
	const size_t vlen = strlen(verb);
	int n = 0;
	size_t used = 0; /* octets of lines[n - 1], without CRLF */
	for (size_t i = 0; i < na; i++) {
		if (!(attrs & a[i].bit) || !a[i].value || !*a[i].value)
			continue;
		/* the longest value a command of its own can hold */
		char enc[SG_XCLIENT_LINE_MAX];
		size_t nlen = strlen(a[i].name);
		size_t room = SG_XCLIENT_LINE_MAX - vlen - 1 - nlen - 1 - 2;
		long e = sg_xtext_encode(enc, room + 1, a[i].value);
		if (e < 0) {
			snprintf(reason, sizeof reason,
			         "%s %s= does not fit one %u-octet command (%zu octets)",
			         verb, a[i].name, SG_XCLIENT_LINE_MAX, strlen(a[i].value));
			*why = reason;
			return -1;
		}
		size_t need = 1 + nlen + 1 + (size_t)e;
		if (n > 0 && used + need + 2 > SG_XCLIENT_LINE_MAX) {
			memcpy(lines[n - 1] + used, "\r\n", 3);
			used = 0;
			n++;
		} else if (n == 0) {
			n = 1;
		}
		if (used == 0) {
			if (n > max) {
				*why = "too many attributes for the commands allowed";
				return -1;
			}
			memcpy(lines[n - 1], verb, vlen);
			used = vlen;
		}
		char *p = lines[n - 1] + used;
		*p++ = ' ';
		memcpy(p, a[i].name, nlen);
		p += nlen;
		*p++ = '=';
		memcpy(p, enc, (size_t)e);
		used += need;
	}
	if (n == 0) {
		*why = "no attribute to send";
		return -1;
	}
	memcpy(lines[n - 1] + used, "\r\n", 3);
	return n;
}

int sg_xclient_lines(const sg_identity *id, unsigned attrs,
                     char lines[][SG_XCLIENT_LINE_MAX + 1], int max,
                     const char **why)
{
	if (id->login && !(attrs & SG_XA_LOGIN)) {
		*why = "the upstream's XCLIENT does not offer LOGIN";
		return -1;
	}
	char port[16], dport[16], addr[80];
	snprintf(port, sizeof port, "%u", id->client_port);
	snprintf(dport, sizeof dport, "%u", id->dest_port);
	addr_value(id, addr, sizeof addr);
	const attr a[] = {
	    {SG_XA_NAME, "NAME", name_value(id)},
	    {SG_XA_ADDR, "ADDR", addr},
	    {SG_XA_PORT, "PORT", id->client_port ? port : "[UNAVAILABLE]"},
	    {SG_XA_PROTO, "PROTO", id->esmtp ? "ESMTP" : "SMTP"},
	    {SG_XA_HELO, "HELO",
	     id->helo && *id->helo ? id->helo : "[UNAVAILABLE]"},
	    {SG_XA_LOGIN, "LOGIN", id->login},
	    {SG_XA_DESTADDR, "DESTADDR", id->dest_ip},
	    {SG_XA_DESTPORT, "DESTPORT", id->dest_port ? dport : NULL},
	};
	return pack("XCLIENT", a, sizeof a / sizeof a[0], attrs, lines, max, why);
}

int sg_xforward_lines(const sg_identity *id, unsigned attrs,
                      char lines[][SG_XCLIENT_LINE_MAX + 1], int max,
                      const char **why)
{
	char port[16], addr[80];
	snprintf(port, sizeof port, "%u", id->client_port);
	addr_value(id, addr, sizeof addr);
	const attr a[] = {
	    {SG_XA_NAME, "NAME", name_value(id)},
	    {SG_XA_ADDR, "ADDR", addr},
	    {SG_XA_PORT, "PORT", id->client_port ? port : NULL},
	    {SG_XA_PROTO, "PROTO", id->esmtp ? "ESMTP" : "SMTP"},
	    {SG_XA_HELO, "HELO", id->helo && *id->helo ? id->helo : NULL},
	    /* XFORWARD_README: REMOTE = the client is not local */
	    {SG_XA_SOURCE, "SOURCE", "REMOTE"},
	};
	return pack("XFORWARD", a, sizeof a / sizeof a[0], attrs, lines, max,
	            why);
}

int sg_identity_ehlo(char *out, size_t cap, const sg_identity *id,
                     const char *fallback, const char **why)
{
	const char *h = id->helo;
	size_t n = h ? strlen(h) : 0;
	*why = NULL;
	if (n == 0)
		*why = "the client gave no HELO name";
	else if (n > SG_HELO_NAME_MAX)
		*why = "the client's HELO name is longer than 255 octets";
	for (size_t i = 0; i < n && !*why; i++)
		if ((unsigned char)h[i] < 0x21 || (unsigned char)h[i] > 0x7e)
			*why = "the client's HELO name is not one word of "
			       "printable ASCII";
	int w = snprintf(out, cap, "EHLO %s\r\n", *why ? fallback : h);
	if (w < 0 || (size_t)w >= cap) {
		*why = "the EHLO line does not fit";
		return -1;
	}
	return *why ? 1 : 0;
}

/* Length of the UTF-8 sequence at p (RFC 3629: shortest form, no
 * surrogates, at most U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
	          : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
	if (n == 0)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0; /* also stops at the NUL */
	if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) ||
	    (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
		return 0; /* overlong, surrogate, past U+10FFFF */
	return n;
}

int sg_identity_header_value(sg_buf *out, const char *login, bool comment,
                             const char **why)
{
	const unsigned char *p = (const unsigned char *)(login ? login : "");
	size_t len = strlen((const char *)p);
	if (len == 0) {
		*why = "empty login";
		return -1;
	}
	if (!comment && (p[0] == ' ' || p[len - 1] == ' ')) {
		*why = "login begins or ends with a space (a header would lose it)";
		return -1;
	}
	size_t extra = 0;
	for (size_t i = 0; i < len;) {
		if (p[i] < 0x20 || p[i] == 0x7f) {
			*why = "login holds a control octet (no header can carry it)";
			return -1;
		}
		size_t k = utf8_seq(p + i);
		if (k == 0) {
			*why = "login is not UTF-8 (no header can carry it)";
			return -1;
		}
		if (comment && (p[i] == '(' || p[i] == ')' || p[i] == '\\'))
			extra++;
		i += k;
	}
	if (sg_buf_reserve(out, len + extra) < 0) {
		*why = "past the buffer's bound";
		return -1;
	}
	char *o = out->data + out->len;
	for (size_t i = 0; i < len; i++) {
		if (comment && (p[i] == '(' || p[i] == ')' || p[i] == '\\'))
			*o++ = '\\';
		*o++ = (char)p[i];
	}
	out->len += len + extra;
	return 0;
}

/* Fixed text around the user in the header lines that name it
 * (received.c writes them): the longest a login may be. */
#define RCV_USER_LINE "\t(authenticated sender: )"
#define XAUTH_LINE "X-Authenticated-User: "

const char *sg_identity_unfit(const sg_identity *id, int mode)
{
	static __thread char reason[160];
	const char *why = NULL;
	if (!id->login)
		return NULL;
	if (!*id->login)
		return "empty login";
	if (mode == SG_ID_NONE)
		return NULL; /* the login goes nowhere but the log */
	sg_buf b;
	sg_buf_init(&b, 0);
	/* every other mode names the user in the Received header */
	if (sg_identity_header_value(&b, id->login, true, &why) < 0)
		goto out;
	if (b.len + sizeof RCV_USER_LINE - 1 > SG_HEADER_LINE_MAX) {
		snprintf(reason, sizeof reason,
		         "login too long for a Received header line (%zu octets)",
		         strlen(id->login));
		why = reason;
		goto out;
	}
	if (mode == SG_ID_HEADER || mode == SG_ID_AUTH) {
		b.len = 0;
		if (sg_identity_header_value(&b, id->login, false, &why) < 0)
			goto out;
		if (b.len + sizeof XAUTH_LINE - 1 > SG_HEADER_LINE_MAX) {
			snprintf(reason, sizeof reason,
			         "login too long for an X-Authenticated-User line "
			         "(%zu octets)",
			         strlen(id->login));
			why = reason;
			goto out;
		}
	}
	if (mode == SG_ID_XCLIENT) {
		/* LOGIN alone must fit a command; the upstream's attributes are
		 * known only after its EHLO (checked again then) */
		char lines[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
		sg_identity only = {.login = id->login};
		if (sg_xclient_lines(&only, SG_XA_LOGIN, lines, SG_XCLIENT_LINES,
		                     &why) < 0)
			goto out;
	}
out:
	sg_buf_free(&b);
	return why;
}

int sg_identity_mail_auth(sg_buf *out, const char *login)
{
	if (!login || !*login)
		return sg_buf_append(out, " AUTH=<>", 8);
	size_t cap = 3 * strlen(login) + 1;
	char *enc = sg_xmalloc(cap);
	long e = sg_xtext_encode(enc, cap, login);
	int rc = e < 0 ? -1 : 0;
	if (rc == 0)
		rc = sg_buf_append(out, " AUTH=", 6);
	if (rc == 0)
		rc = sg_buf_append(out, enc, (size_t)e);
	free(enc);
	return rc;
}

size_t sg_identity_log(char *out, size_t cap, const char *login)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!login)
		login = "-";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)login; *p; p++) {
		unsigned c = *p;
		bool plain = c > 0x20 && c < 0x7f && c != '+' && c != '=' &&
		             c != '"' && c != '\\';
		char t[3] = {plain ? (char)c : '+', hex[c >> 4], hex[c & 15]};
		for (size_t k = 0; k < (plain ? 1u : 3u); k++, o++)
			if (o + 1 < cap)
				out[o] = t[k];
	}
	if (cap)
		out[o < cap ? o : cap - 1] = '\0';
	return o;
}

char *sg_identity_log_dup(const char *login)
{
	size_t n = sg_identity_log(NULL, 0, login);
	char *s = sg_xmalloc(n + 1);
	sg_identity_log(s, n + 1, login);
	return s;
}
