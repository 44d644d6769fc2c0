/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/b64.c: strict base64 for SMTP AUTH (RFC 4954 section 4, RFC 4648).
 *
 * Why our own and not sasl_decode64: RFC 4954 says a server that gets a
 * response it cannot decode rejects the AUTH with 501, and every lenient
 * decoder is a way to smuggle bytes (embedded whitespace, missing padding,
 * non-zero pad bits that make two spellings of one credential).  So: the
 * alphabet of RFC 4648 section 4 only, length a multiple of 4, "=" only as
 * the last one or two characters, unused bits of the last group zero
 * (RFC 4648 section 3.5, "canonical encoding").  An empty input decodes to
 * nothing (RFC 4954's "=" is handled by the session before it gets here). */
#include "auth.h"

#include <stdint.h>
#include <string.h>

static const char enc_tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* -1: not in the alphabet (also '=' which is handled by position) */
static int dec_char(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int sg_b64_decode(const char *in, size_t inlen, char *out, size_t outmax,
                  unsigned *outlen)
{
	size_t o = 0;

	*outlen = 0;
	if (inlen % 4 != 0)
		return -1; /* padding is required (RFC 4648 3.2) */
	if (inlen / 4 * 3 > outmax || inlen / 4 * 3 > UINT32_MAX)
		return -1;
	for (size_t i = 0; i < inlen; i += 4) {
		const unsigned char *q = (const unsigned char *)in + i;
		bool last = i + 4 == inlen;
		int v[4];
		int pad = 0;

		if (last && q[3] == '=') {
			pad = 1;
			if (q[2] == '=')
				pad = 2;
		}
		for (int k = 0; k < 4 - pad; k++) {
			v[k] = dec_char(q[k]);
			if (v[k] < 0)
				return -1; /* whitespace, '=' inside, any stray byte */
		}
		uint32_t n = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
		if (pad < 2)
			n |= (uint32_t)v[2] << 6;
		if (pad < 1)
			n |= (uint32_t)v[3];
		/* canonical: the bits the padding hides must be zero (3.5) */
		if ((pad == 1 && (n & 0xff)) || (pad == 2 && (n & 0xffff)))
			return -1;
		out[o++] = (char)(n >> 16);
		if (pad < 2)
			out[o++] = (char)(n >> 8 & 0xff);
		if (pad < 1)
			out[o++] = (char)(n & 0xff);
	}
	*outlen = (unsigned)o;
	return 0;
}

int sg_b64_encode(const char *in, size_t inlen, char *out, size_t outmax,
                  unsigned *outlen)
{
	size_t need = (inlen + 2) / 3 * 4;
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;

	*outlen = 0;
	if (need + 1 > outmax || need > UINT32_MAX)
		return -1; /* room for the NUL too */
	for (size_t i = 0; i < inlen; i += 3) {
		size_t left = inlen - i;
		uint32_t n = (uint32_t)p[i] << 16;
		if (left > 1)
			n |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			n |= p[i + 2];
		out[o++] = enc_tab[n >> 18 & 63];
		out[o++] = enc_tab[n >> 12 & 63];
		out[o++] = left > 1 ? enc_tab[n >> 6 & 63] : '=';
		out[o++] = left > 2 ? enc_tab[n & 63] : '=';
	}
	out[o] = '\0';
	*outlen = (unsigned)o;
	return 0;
}
