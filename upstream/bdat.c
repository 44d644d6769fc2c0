/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/bdat.c: dot-stuffing a chunked message for the DATA scanner and
 * removing it again for a BDAT upstream (bdat.h). */
#include "bdat.h"

#include <string.h>

void sg_stuff_init(sg_stuffer *st)
{
	st->bol = true;
	st->cr = false;
	st->crlf = true;
}

size_t sg_stuff(sg_stuffer *st, const char *in, size_t len, char *out)
{
	size_t i = 0, o = 0;
	bool cr = st->cr; /* the octet before in[i] was a CR */
	while (i < len) {
		if (st->bol && in[i] == '.')
			out[o++] = '.';
		st->bol = false;
		/* the rest of the line, its LF included */
		const char *lf = memchr(in + i, '\n', len - i);
		size_t k = lf ? (size_t)(lf - in) + 1 : len;
		memcpy(out + o, in + i, k - i);
		o += k - i;
		if (lf) /* a line start only after CRLF (see bdat.h) */
			st->bol = k - i >= 2 ? in[k - 2] == '\r' : cr;
		cr = in[k - 1] == '\r';
		i = k;
	}
	if (len > 0) {
		bool lf = in[len - 1] == '\n';
		bool before_cr = len >= 2 ? in[len - 2] == '\r' : st->cr;
		st->crlf = lf && before_cr;
		st->cr = cr;
	}
	return o;
}

const char *sg_stuff_end(const sg_stuffer *st)
{
	return st->crlf ? ".\r\n" : "\r\n.\r\n";
}

void sg_unstuff_init(sg_unstuffer *u) { u->bol = true; }

size_t sg_unstuff(sg_unstuffer *u, char *p, size_t len)
{
	size_t i = 0, o = 0;
	while (i < len) {
		if (u->bol) {
			u->bol = false;
			if (p[i] == '.') {
				i++;
				continue;
			}
		}
		const char *lf = memchr(p + i, '\n', len - i);
		size_t k = lf ? (size_t)(lf - p) + 1 : len;
		if (o != i)
			memmove(p + o, p + i, k - i);
		o += k - i;
		i = k;
		u->bol = lf != NULL;
	}
	return o;
}
