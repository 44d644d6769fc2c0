/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_b64.c: libFuzzer target for the strict base64 codec of
 * the AUTH exchange (sasl/b64.c, RFC 4648) and the xtext encoder of the
 * XCLIENT/XFORWARD values (upstream/xtext.c, RFC 1891 4).
 *
 * Buffers are heap blocks of exactly the documented size, so AddressSanitizer
 * sees any write past them.  Properties: whatever decodes re-encodes to
 * something that decodes to the same bytes; any bytes encode and decode
 * back; xtext output is printable, "+HH"-escaped, and decodes back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../sasl/auth.h"
#include "../../upstream/xtext.h"

static char *xmalloc(size_t n)
{
	char *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

static void b64_roundtrip(const char *in, size_t n)
{
	/* decode: outmax must be >= inlen*3/4+3 (auth.h) */
	size_t dmax = n * 3 / 4 + 3;
	char *dec = xmalloc(dmax);
	unsigned dlen = 0;
	if (sg_b64_decode(in, n, dec, dmax, &dlen) == 0) {
		if (dlen > dmax || n % 4 != 0)
			abort(); /* padding is required: length is a multiple of 4 */
		size_t emax = ((size_t)dlen + 2) / 3 * 4 + 1;
		char *enc = xmalloc(emax);
		unsigned elen = 0;
		/* the decoder only takes canonical input (RFC 4648 3.5), so
		 * encoding gives back exactly the same text */
		if (sg_b64_encode(dec, dlen, enc, emax, &elen) != 0 || elen != n ||
		    memcmp(enc, in, n) != 0)
			abort();
		char *dec2 = xmalloc(dmax);
		unsigned d2 = 0;
		if (sg_b64_decode(enc, elen, dec2, dmax, &d2) != 0 || d2 != dlen ||
		    memcmp(dec, dec2, dlen) != 0)
			abort();
		free(dec2);
		free(enc);
	}
	free(dec);

	/* encode arbitrary bytes, decode back */
	size_t emax = (n + 2) / 3 * 4 + 1;
	char *enc = xmalloc(emax);
	unsigned elen = 0;
	if (sg_b64_encode(in, n, enc, emax, &elen) != 0 || elen % 4 != 0 ||
	    elen >= emax || enc[elen] != '\0')
		abort();
	/* one octet short (no room for the NUL) must be refused */
	char *small = xmalloc(emax - 1);
	unsigned sl = 0;
	if (sg_b64_encode(in, n, small, emax - 1, &sl) != -1)
		abort();
	free(small);
	size_t dmax2 = (size_t)elen * 3 / 4 + 3;
	char *back = xmalloc(dmax2);
	unsigned bl = 0;
	if (sg_b64_decode(enc, elen, back, dmax2, &bl) != 0 || bl != n ||
	    memcmp(back, in, n) != 0)
		abort();
	free(back);
	free(enc);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void xtext_roundtrip(const char *in, size_t n)
{
	char *s = xmalloc(n + 1); /* C string: up to the first NUL */
	memcpy(s, in, n);
	s[n] = '\0';
	size_t sl = strlen(s);
	size_t cap = sl * 3 + 1;
	char *out = xmalloc(cap);
	long r = sg_xtext_encode(out, cap, s);
	if (r < 0 || (size_t)r >= cap || out[r] != '\0')
		abort();
	char *dec = xmalloc(sl + 1);
	size_t dl = 0;
	for (long i = 0; i < r; i++) {
		unsigned char c = (unsigned char)out[i];
		/* nothing Postfix's command tokenizer would group by */
		if (c < 33 || c > 126 || c == '=' || c == '"' || c == '<' ||
		    c == '>' || c == '\\')
			abort();
		if (c == '+') {
			if (i + 2 >= r || hexval(out[i + 1]) < 0 ||
			    hexval(out[i + 2]) < 0)
				abort();
			dec[dl++] = (char)(hexval(out[i + 1]) * 16 + hexval(out[i + 2]));
			i += 2;
		} else {
			dec[dl++] = (char)c;
		}
		if (dl > sl)
			abort();
	}
	if (dl != sl || memcmp(dec, s, sl) != 0)
		abort();
	/* too small a buffer: -1, never an overflow */
	if (r > 0) {
		char *small = xmalloc((size_t)r);
		if (sg_xtext_encode(small, (size_t)r, s) != -1)
			abort();
		free(small);
	}
	free(dec);
	free(out);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	b64_roundtrip((const char *)data, size);
	xtext_roundtrip((const char *)data, size);
	return 0;
}
