/* upstream/identity.c: XCLIENT / XFORWARD serializers (see identity.h).
 *
 * Postfix XCLIENT_README: NAME is the client host name or [UNAVAILABLE];
 * ADDR is the IPv4 address or "IPV6:" + the IPv6 address; PROTO is SMTP or
 * ESMTP only (Postfix 3.7 answers "501 5.5.4 Bad PROTO syntax" to ESMTPSA;
 * it derives ESMTPA/ESMTPSA itself from LOGIN and its TLS state); LOGIN is
 * the SASL login name, which Postfix's permit_sasl_authenticated honours.
 * Values are xtext so a client-chosen HELO or login cannot add attributes. */
#include "identity.h"

#include <stdio.h>
#include <string.h>

#include "reply_parse.h"
#include "xtext.h"

static void addr_value(const sg_identity *id, char *out, size_t cap)
{
	if (!id->client_ip || !*id->client_ip)
		snprintf(out, cap, "[UNAVAILABLE]");
	else
		snprintf(out, cap, "%s%s", strchr(id->client_ip, ':') ? "IPV6:" : "",
		         id->client_ip);
}

int sg_xclient_lines(const sg_identity *id, unsigned attrs,
                     char lines[][SG_XCLIENT_LINE_MAX + 1], int max)
{
	char port[16], dport[16], addr[80];
	snprintf(port, sizeof port, "%u", id->client_port);
	snprintf(dport, sizeof dport, "%u", id->dest_port);
	addr_value(id, addr, sizeof addr);
	const struct {
		unsigned bit;
		const char *name, *value;
	} a[] = {
	    {SG_XA_NAME, "NAME",
	     id->client_name && *id->client_name ? id->client_name
	                                         : "[UNAVAILABLE]"},
	    {SG_XA_ADDR, "ADDR", addr},
	    {SG_XA_PORT, "PORT", id->client_port ? port : "[UNAVAILABLE]"},
	    {SG_XA_PROTO, "PROTO", id->esmtp ? "ESMTP" : "SMTP"},
	    {SG_XA_HELO, "HELO",
	     id->helo && *id->helo ? id->helo : "[UNAVAILABLE]"},
	    {SG_XA_LOGIN, "LOGIN", id->login},
	    {SG_XA_DESTADDR, "DESTADDR", id->dest_ip},
	    {SG_XA_DESTPORT, "DESTPORT", id->dest_port ? dport : NULL},
	};
	/* the longest attribute that can share a line with "XCLIENT" + CRLF */
	enum { VALUE_MAX = SG_XCLIENT_LINE_MAX - sizeof "XCLIENT DESTADDR=\r\n" };
	int n = 0;
	char *line = NULL;
	for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
		char enc[VALUE_MAX + 1];
		if (!(attrs & a[i].bit) || !a[i].value || !*a[i].value)
			continue;
		if (sg_xtext_encode(enc, sizeof enc, a[i].value) < 0)
			continue; /* longer than any valid value: leave it out */
		size_t need = 1 + strlen(a[i].name) + 1 + strlen(enc);
		if (line && strlen(line) + need + 2 > SG_XCLIENT_LINE_MAX) {
			strcat(line, "\r\n");
			line = NULL;
		}
		if (!line) {
			if (n >= max)
				return -1;
			line = lines[n++];
			strcpy(line, "XCLIENT");
		}
		size_t o = strlen(line);
		snprintf(line + o, SG_XCLIENT_LINE_MAX + 1 - o, " %s=%s", a[i].name,
		         enc);
	}
	if (line)
		strcat(line, "\r\n");
	return n > 0 ? n : -1;
}

void sg_xforward_line(const sg_identity *id, unsigned attrs, char *out,
                      size_t cap)
{
	char port[16], addr[80];
	snprintf(port, sizeof port, "%u", id->client_port);
	addr_value(id, addr, sizeof addr);
	const struct {
		unsigned bit;
		const char *name, *value;
	} a[] = {
	    {SG_XA_NAME, "NAME",
	     id->client_name && *id->client_name ? id->client_name
	                                         : "[UNAVAILABLE]"},
	    {SG_XA_ADDR, "ADDR", addr},
	    {SG_XA_PORT, "PORT", id->client_port ? port : NULL},
	    {SG_XA_PROTO, "PROTO", id->esmtp ? "ESMTP" : "SMTP"},
	    {SG_XA_HELO, "HELO", id->helo && *id->helo ? id->helo : NULL},
	    /* XFORWARD_README: REMOTE = the client is not local */
	    {SG_XA_SOURCE, "SOURCE", "REMOTE"},
	};
	size_t o = (size_t)snprintf(out, cap, "XFORWARD");
	for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
		char enc[SG_XCLIENT_LINE_MAX];
		if (!(attrs & a[i].bit) || !a[i].value ||
		    sg_xtext_encode(enc, sizeof enc, a[i].value) < 0)
			continue;
		if (o + strlen(a[i].name) + strlen(enc) + 4 >= cap)
			break; /* the rest would pass the line limit */
		o += (size_t)snprintf(out + o, cap - o, " %s=%s", a[i].name, enc);
	}
	snprintf(out + o, cap - o, "\r\n");
}
