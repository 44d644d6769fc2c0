/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_data_scan.c: libFuzzer target for the DATA scanner
 * (upstream/data_scan.c), the code that decides where a message ends.
 *
 * SMTP smuggling (SEC Consult, Dec 2023) needs two hops that disagree on
 * the end of a message.  So beyond "no crash" this checks what the upstream
 * would see, the scanner's output followed by our ".\r\n":
 *  - the output never holds a line that is a lone "." (no "\r\n.\r\n", no
 *    leading ".\r\n"): the upstream sees exactly one end-of-data;
 *  - unless the message was marked bad or too big, every CR in the output is
 *    followed by LF and every LF preceded by CR (a finished message ends in
 *    CRLF);
 *  - the scan stops right after the client's own <CRLF>.<CRLF>;
 *  - no NUL octet in the output, in either mode; with reject a NUL marks
 *    the message bad and nul;
 *  - with strip_xauth, no X-Authenticated-User field survives in the
 *    header section as the upstream reads it: each line without its
 *    stuffing dot (RFC 5321 4.5.2), the name in any case, any WSP before
 *    the ':';
 *  - the result is the same however the input is split (whole vs. one octet
 *    at a time); for a message over max_size only the verdict, since the
 *    partial output then depends on the split (it is never delivered). */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/buf.h"
#include "../../upstream/data_scan.h"

struct outcome {
	sg_scan s;
	sg_buf out;
	size_t consumed;
};

static void run(const uint8_t *data, size_t size, size_t piece, bool norm,
                bool strip, uint64_t max, struct outcome *o)
{
	sg_scan_init(&o->s, norm, strip, max);
	sg_buf_init(&o->out, 0);
	o->consumed = 0;
	while (o->consumed < size && !o->s.done) {
		size_t take = size - o->consumed;
		if (take > piece)
			take = piece;
		size_t used = sg_scan_feed(&o->s, (const char *)data + o->consumed,
		                           take, &o->out);
		if (used > take || (used < take && !o->s.done))
			abort(); /* only the end of data may leave input unread */
		o->consumed += used;
	}
}

static bool has_lone_dot_line(const char *p, size_t n)
{
	if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
		return true;
	for (size_t i = 0; i + 5 <= n; i++)
		if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
			return true;
	/* also ".\n" / "\n.\n" etc: bare forms some MTAs accept */
	for (size_t i = 0; i + 2 <= n; i++)
		if ((i == 0 || p[i - 1] == '\n' || p[i - 1] == '\r') && p[i] == '.' &&
		    (p[i + 1] == '\n' || p[i + 1] == '\r'))
			return true;
	return false;
}

static void check(const uint8_t *data, size_t size, const struct outcome *o)
{
	const char *p = o->out.data ? o->out.data : "";
	size_t n = o->out.len;
	if (has_lone_dot_line(p, n))
		abort();
	if (n && memchr(p, '\0', n))
		abort();
	if (o->s.nul && (o->s.normalize || !o->s.bad))
		abort();
	if (!o->s.normalize && !o->s.nul && memchr(data, '\0', o->consumed))
		abort();
	bool clean = !o->s.bad && !o->s.too_big;
	if (clean) {
		for (size_t i = 0; i < n; i++) {
			if (p[i] == '\r' && i + 1 < n && p[i + 1] != '\n')
				abort();
			if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
				abort();
		}
		if (o->s.done && n > 0 && (n < 2 || memcmp(p + n - 2, "\r\n", 2)))
			abort();
	}
	if (o->s.done) {
		/* stopped right after the client's ".\r\n" that follows a CRLF
		 * (or the DATA line's own CRLF) */
		size_t c = o->consumed;
		if (c < 3 || memcmp(data + c - 3, ".\r\n", 3) != 0)
			abort();
		if (c > 3 && (c < 5 || memcmp(data + c - 5, "\r\n", 2) != 0))
			abort();
	}
	if (o->s.strip_xauth && clean) {
		/* header section: up to the first empty line */
		static const char name[] = "x-authenticated-user";
		size_t nl = sizeof name - 1;
		for (size_t i = 0; i < n;) {
			if (i + 2 <= n && p[i] == '\r' && p[i + 1] == '\n')
				break; /* empty line: body follows */
			size_t j = i + (p[i] == '.'); /* the upstream un-stuffs */
			if (j + nl <= n && strncasecmp(p + j, name, nl) == 0) {
				j += nl;
				while (j < n && (p[j] == ' ' || p[j] == '\t'))
					j++;
				if (j < n && p[j] == ':')
					abort();
			}
			const char *lf = memchr(p + i, '\n', n - i);
			if (!lf)
				break;
			i = (size_t)(lf - p) + 1;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool norm = data[0] & 1, strip = data[0] & 2;
	uint64_t max = (data[0] & 4) ? (uint64_t)(data[0] >> 3) * 8 : 0;
	data++;
	size--;
	static struct outcome whole, bytes;
	run(data, size, size ? size : 1, norm, strip, max, &whole);
	run(data, size, 1, norm, strip, max, &bytes);
	check(data, size, &whole);
	if (whole.consumed != bytes.consumed || whole.s.done != bytes.s.done ||
	    whole.s.bad != bytes.s.bad || whole.s.nul != bytes.s.nul ||
	    whole.s.too_big != bytes.s.too_big || whole.s.size != bytes.s.size)
		abort();
	/* Once too big, how much of the last piece got written before the
	 * limit depends on the split (the message is refused with 552 and
	 * never delivered, so only the flags must agree). */
	if (!whole.s.too_big &&
	    (whole.out.len != bytes.out.len ||
	     (whole.out.len &&
	      memcmp(whole.out.data, bytes.out.data, whole.out.len) != 0)))
		abort();
	sg_buf_free(&whole.out);
	sg_buf_free(&bytes.out);
	return 0;
}
