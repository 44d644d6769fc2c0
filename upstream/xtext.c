/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/xtext.c: xtext (RFC 1891 section 4) for XCLIENT/XFORWARD values.
 *
 * xtext = *( xchar / hexchar ); xchar is any octet 33..126 except '+' and
 * '='; everything else travels as "+HH".  Postfix decodes attribute values
 * with xtext_unquote(), so a client-controlled HELO or login containing
 * spaces or '=' cannot inject a second attribute.  '"', '<', '>' and '\'
 * are sent as "+HH" too (any octet may be): Postfix's smtpd splits a
 * command line with its own tokenizer, where "..." and <...> hold words
 * together across spaces and '\' escapes the next octet, so one of them in
 * a value would swallow the attributes after it. */
#include "xtext.h"

long sg_xtext_encode(char *out, size_t cap, const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (cap == 0)
		return -1;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		int plain = *p >= 33 && *p <= 126 && *p != '+' && *p != '=' &&
		            *p != '"' && *p != '<' && *p != '>' && *p != '\\';
		size_t need = plain ? 1 : 3;
		if (o + need >= cap)
			return -1;
		if (plain) {
			out[o++] = (char)*p;
			continue;
		}
		out[o++] = '+';
		out[o++] = hex[*p >> 4];
		out[o++] = hex[*p & 15];
	}
	out[o] = '\0';
	return (long)o;
}
