/* upstream/received.c: the Received (and X-Authenticated-User) header.
 *
 * Shape, as Postfix writes it so log and header readers know it:
 *   Received: from HELO (NAME [IP])
 *   \tby HOSTNAME (saslgate) with ESMTPSA id SID
 *   \t(using TLSv1.3 with cipher NAME (256/256 bits))
 *   \t(authenticated sender: USER)
 *   \t; Mon, 23 Nov 2026 10:00:00 +0000
 * Client-controlled values (HELO, user) are cut to SG_TRACE_VALUE_MAX and
 * anything that could break the header (controls, non-ASCII, parentheses
 * that would unbalance a comment) becomes '?', so no line reaches 998
 * octets (RFC 5322 2.1.1) and no client can forge a header line. */
#include "received.h"

#include <stdio.h>
#include <string.h>

/* Copy v into out for use inside a header, bounded and defanged. */
static void clean(char *out, const char *v, bool comment)
{
	size_t o = 0;
	if (!v)
		v = "";
	for (; *v && o < SG_TRACE_VALUE_MAX; v++) {
		unsigned char c = (unsigned char)*v;
		bool ok = c > 32 && c < 127;
		if (comment && (c == '(' || c == ')' || c == '\\'))
			ok = false;
		out[o++] = ok ? (char)c : '?';
	}
	out[o] = '\0';
}

const char *sg_received_proto(const sg_identity *id)
{
	bool tls = id->tls_version && *id->tls_version;
	bool auth = id->login && *id->login;
	if (!id->esmtp && !auth)
		return tls ? "SMTPS" : "SMTP";
	if (auth)
		return tls ? "ESMTPSA" : "ESMTPA";
	return tls ? "ESMTPS" : "ESMTP";
}

/* RFC 5322 3.3 date-time in the C locale, whatever setlocale says. */
static void rfc5322_date(char *out, size_t cap, time_t now)
{
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed",
	                                 "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr",
	                                 "May", "Jun", "Jul", "Aug",
	                                 "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	localtime_r(&now, &tm);
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	snprintf(out, cap, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
	         wd[tm.tm_wday % 7], tm.tm_mday, mo[tm.tm_mon % 12],
	         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
	         off / 60, off % 60);
}

int sg_received_build(sg_buf *out, const sg_identity *id, const char *hostname,
                      bool with_user, bool xauth_header, time_t now)
{
	char helo[SG_TRACE_VALUE_MAX + 1], name[SG_TRACE_VALUE_MAX + 1];
	char ip[SG_TRACE_VALUE_MAX + 1], host[SG_TRACE_VALUE_MAX + 1];
	char sid[SG_TRACE_VALUE_MAX + 1], user[SG_TRACE_VALUE_MAX + 1];
	char date[64];
	int rc = 0;

	clean(helo, id->helo && *id->helo ? id->helo : "unknown", true);
	clean(name, id->client_name && *id->client_name ? id->client_name
	                                                 : "unknown", true);
	clean(ip, id->client_ip, true);
	clean(host, hostname, true);
	clean(sid, id->sid, true);
	clean(user, id->login, true);
	rfc5322_date(date, sizeof date, now);

	/* RFC 5321 4.1.3: an IPv6 address literal carries the "IPv6:" tag */
	rc |= sg_buf_appendf(out, "Received: from %s (%s [%s%s])\r\n", helo, name,
	                     strchr(ip, ':') ? "IPv6:" : "", ip);
	rc |= sg_buf_appendf(out, "\tby %s (saslgate) with %s id %s\r\n", host,
	                     sg_received_proto(id), sid);
	if (id->tls_version && *id->tls_version) {
		char ver[SG_TRACE_VALUE_MAX + 1], ciph[SG_TRACE_VALUE_MAX + 1];
		clean(ver, id->tls_version, true);
		clean(ciph, id->tls_cipher, true);
		rc |= sg_buf_appendf(out,
		                     "\t(using %s with cipher %s (%u/%u bits))\r\n",
		                     ver, ciph, id->tls_bits, id->tls_bits);
	}
	if (with_user && *user)
		rc |= sg_buf_appendf(out, "\t(authenticated sender: %s)\r\n", user);
	rc |= sg_buf_appendf(out, "\t; %s\r\n", date);
	if (xauth_header && *user)
		rc |= sg_buf_appendf(out, "X-Authenticated-User: %s\r\n", user);
	return rc ? -1 : 0;
}
