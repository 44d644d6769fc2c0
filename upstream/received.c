/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/received.c: the Received (and X-Authenticated-User) header.
 *
 * Shape, as Postfix writes it so log and header readers know it:
 *   Received: from HELO (NAME [IP])
 *   \tby HOSTNAME (saslgate) with ESMTPSA id SID
 *   \t(using TLSv1.3 with cipher NAME (256/256 bits))
 *   \t(authenticated sender: USER)
 *   \t; Mon, 23 Nov 2026 10:00:00 +0000
 * The user is written whole by the identity serializer (identity.h), which
 * refuses a login a header cannot carry exactly; the link checks that
 * before the session is relayed (sg_identity_unfit).  Other
 * client-controlled values (HELO, client name) are trace information, not
 * identity: they are cut to SG_TRACE_VALUE_MAX and anything that could
 * break the header (controls, non-ASCII, parentheses that would unbalance a
 * comment) becomes '?', so no line reaches 998 octets (RFC 5322 2.1.1) and
 * no client can forge a header line. */
#include "received.h"

#include <stdio.h>
#include <string.h>

#include "identity.h"

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

/* RFC 5322 3.3 date-time in the C locale, whatever setlocale says.
 * localtime_r and the formatting cost more than the rest of the header,
 * and every message of a second gets the same string: one per thread per
 * second (keyed on the time; the zone is fixed for the process). */
static size_t rfc5322_date(char *out, size_t cap, time_t now)
{
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed",
	                                 "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr",
	                                 "May", "Jun", "Jul", "Aug",
	                                 "Sep", "Oct", "Nov", "Dec"};
	static __thread time_t last = (time_t)-1;
	static __thread char text[SG_RECEIVED_DATE_MAX];
	static __thread size_t tlen;
	if (now != last) {
		struct tm tm;
		localtime_r(&now, &tm);
		long off = tm.tm_gmtoff / 60;
		char sign = off < 0 ? '-' : '+';
		if (off < 0)
			off = -off;
		int n = snprintf(text, sizeof text,
		                 "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
		                 wd[tm.tm_wday % 7], tm.tm_mday, mo[tm.tm_mon % 12],
		                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
		                 sign, off / 60, off % 60);
		tlen = n < 0 ? 0 : (size_t)n < sizeof text ? (size_t)n
		                                           : sizeof text - 1;
		last = now;
	}
	size_t n = tlen < cap ? tlen : cap - 1;
	memcpy(out, text, n);
	out[n] = '\0';
	return n;
}

/* Append the NUL-terminated strings of a NULL-terminated list. */
static int cat(sg_buf *out, const char *const *parts)
{
	size_t n = 0;
	for (const char *const *p = parts; *p; p++)
		n += strlen(*p);
	if (sg_buf_reserve(out, n) < 0)
		return -1;
	for (const char *const *p = parts; *p; p++) {
		size_t k = strlen(*p);
		memcpy(out->data + out->len, *p, k);
		out->len += k;
	}
	return 0;
}

int sg_received_parts(sg_buf *pre, sg_buf *post, const sg_identity *id,
                      const char *hostname, bool with_user, bool xauth_header)
{
	char helo[SG_TRACE_VALUE_MAX + 1], name[SG_TRACE_VALUE_MAX + 1];
	char ip[SG_TRACE_VALUE_MAX + 1], host[SG_TRACE_VALUE_MAX + 1];
	char sid[SG_TRACE_VALUE_MAX + 1];
	char ver[SG_TRACE_VALUE_MAX + 1], ciph[SG_TRACE_VALUE_MAX + 1];
	char bits[32];
	int rc = 0;

	clean(helo, id->helo && *id->helo ? id->helo : "unknown", true);
	clean(name, id->client_name && *id->client_name ? id->client_name
	                                                 : "unknown", true);
	clean(ip, id->client_ip, true);
	clean(host, hostname, true);
	clean(sid, id->sid, true);
	bool user = id->login && *id->login;
	const char *why;

	/* RFC 5321 4.1.3: an IPv6 address literal carries the "IPv6:" tag */
	rc |= cat(pre, (const char *const[]){
	                   "Received: from ", helo, " (", name, " [",
	                   strchr(ip, ':') ? "IPv6:" : "", ip, "])\r\n\tby ", host,
	                   " (saslgate) with ", sg_received_proto(id), " id ", sid,
	                   "\r\n", NULL});
	if (id->tls_version && *id->tls_version) {
		clean(ver, id->tls_version, true);
		clean(ciph, id->tls_cipher, true);
		snprintf(bits, sizeof bits, "%u/%u", id->tls_bits, id->tls_bits);
		rc |= cat(pre, (const char *const[]){"\t(using ", ver,
		                                     " with cipher ", ciph, " (",
		                                     bits, " bits))\r\n", NULL});
	}
	if (with_user && user) {
		rc |= cat(pre, (const char *const[]){"\t(authenticated sender: ",
		                                     NULL});
		rc |= sg_identity_header_value(pre, id->login, true, &why);
		rc |= cat(pre, (const char *const[]){")\r\n", NULL});
	}
	rc |= cat(pre, (const char *const[]){"\t; ", NULL});
	rc |= cat(post, (const char *const[]){"\r\n", NULL});
	if (xauth_header && user) {
		rc |= cat(post, (const char *const[]){"X-Authenticated-User: ", NULL});
		rc |= sg_identity_header_value(post, id->login, false, &why);
		rc |= cat(post, (const char *const[]){"\r\n", NULL});
	}
	return rc ? -1 : 0;
}

int sg_received_stamp(sg_buf *out, const char *pre, size_t npre,
                      const char *post, size_t npost, time_t now)
{
	char date[SG_RECEIVED_DATE_MAX];
	size_t nd = rfc5322_date(date, sizeof date, now);
	if (sg_buf_reserve(out, npre + nd + npost) < 0)
		return -1;
	memcpy(out->data + out->len, pre, npre);
	memcpy(out->data + out->len + npre, date, nd);
	memcpy(out->data + out->len + npre + nd, post, npost);
	out->len += npre + nd + npost;
	return 0;
}

int sg_received_build(sg_buf *out, const sg_identity *id, const char *hostname,
                      bool with_user, bool xauth_header, time_t now)
{
	sg_buf pre, post;
	sg_buf_init(&pre, 0);
	sg_buf_init(&post, 0);
	int rc = sg_received_parts(&pre, &post, id, hostname, with_user,
	                           xauth_header);
	if (rc == 0)
		rc = sg_received_stamp(out, pre.data, pre.len, post.data, post.len,
		                       now);
	sg_buf_free(&pre);
	sg_buf_free(&post);
	return rc;
}
