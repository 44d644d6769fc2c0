/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_bdat.c: libFuzzer target for a chunked message's path
 * through the link (upstream/link_xfer.c): the BDAT stuffer and un-stuffer
 * (upstream/bdat.c) around the DATA scanner (upstream/data_scan.c).
 *
 * Checks, for every input cut into chunks in several ways:
 *  - the scanner never sees an end of data (<CRLF>.<CRLF>) inside the
 *    stuffed content, whatever its line ends and NULs, and sees the one
 *    sg_stuff_end adds;
 *  - what a DATA upstream gets (the scanner's output) and what a BDAT
 *    upstream gets (un-stuffed) do not depend on the cuts;
 *  - the stuffer writes at most SG_STUFF_MAX octets (the link's buffer);
 *  - round trip: for content whose every CR is followed by an LF and every
 *    LF preceded by a CR, with no NUL and the scanner in reject mode
 *    without X-Authenticated-User stripping, the BDAT upstream gets the
 *    content exactly, plus a CRLF when it did not end in one.
 *
 * Input: byte 0 = options (bit 0 normalize, bit 1 strip
 * X-Authenticated-User), the rest is the content; the cuts come from a
 * seed derived from the input (so a finding replays). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../upstream/bdat.h"
#include "../../upstream/data_scan.h"

struct outcome {
	sg_buf scanned, plain;
	bool early, done, bad;
};

static uint64_t next_rand(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* mode 0: whole; 1: one octet at a time; else cuts from the seed */
static void run(const char *in, size_t len, bool normalize, bool strip,
                int mode, uint64_t seed, struct outcome *o)
{
	sg_stuffer st;
	sg_unstuffer us;
	sg_scan sc;
	sg_stuff_init(&st);
	sg_unstuff_init(&us);
	sg_scan_init(&sc, normalize, strip, 0);
	memset(o, 0, sizeof *o);
	sg_buf_init(&o->scanned, 0);
	sg_buf_init(&o->plain, 0);
	char *tmp = malloc(SG_STUFF_MAX(len) + 1);
	size_t at = 0;
	for (;;) {
		size_t n = len - at;
		if (mode == 1 && n > 1)
			n = 1;
		else if (mode > 1 && n > 1)
			n = 1 + next_rand(&seed) % (n < 64 ? n : 64);
		bool fin = at + n == len;
		size_t k = sg_stuff(&st, in + at, n, tmp);
		if (k > SG_STUFF_MAX(n))
			abort();
		sg_buf out;
		sg_buf_init(&out, 0);
		if (sg_scan_feed(&sc, tmp, k, &out) != k || sc.done)
			o->early = true;
		if (fin) {
			const char *e = sg_stuff_end(&st);
			if (sg_scan_feed(&sc, e, strlen(e), &out) != strlen(e))
				abort();
		}
		sg_buf_append(&o->scanned, out.data, out.len);
		size_t u = sg_unstuff(&us, out.data, out.len);
		sg_buf_append(&o->plain, out.data, u);
		sg_buf_free(&out);
		at += n;
		if (fin)
			break;
	}
	free(tmp);
	o->done = sc.done;
	o->bad = sc.bad;
}

static bool same(const sg_buf *a, const sg_buf *b)
{
	return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

static bool clean(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\0')
			return false;
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool normalize = data[0] & 1, strip = data[0] & 2;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	uint64_t seed = 0;
	for (size_t i = 0; i < size; i++)
		seed = seed * 131 + data[i];
	struct outcome whole;
	run(in, len, normalize, strip, 0, seed, &whole);
	if (whole.early || !whole.done)
		abort();
	for (int mode = 1; mode < 5; mode++) {
		struct outcome o;
		run(in, len, normalize, strip, mode, seed + (uint64_t)mode, &o);
		if (o.early || !o.done || o.bad != whole.bad ||
		    !same(&o.scanned, &whole.scanned) || !same(&o.plain, &whole.plain))
			abort();
		sg_buf_free(&o.scanned);
		sg_buf_free(&o.plain);
	}
	if (!normalize && !strip && clean(in, len)) {
		bool crlf = len == 0 || (len >= 2 && !memcmp(in + len - 2, "\r\n", 2));
		size_t want = len + (crlf ? 0 : 2);
		if (whole.bad || whole.plain.len != want ||
		    (len && memcmp(whole.plain.data, in, len)) ||
		    (!crlf && memcmp(whole.plain.data + len, "\r\n", 2)))
			abort();
	}
	sg_buf_free(&whole.scanned);
	sg_buf_free(&whole.plain);
	return 0;
}
