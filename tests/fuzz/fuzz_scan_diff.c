/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_scan_diff.c: differential libFuzzer target for the DATA
 * scanner: upstream/data_scan.c (with its SSE2 fast path) against
 * tests/fuzz/scan_ref.c (the same rules, one octet at a time).
 *
 * The fast path must be invisible: for every input, options and way of
 * cutting the input into pieces, both must consume the same octets and end
 * with the same size and verdicts (done, bad, nul, too_big), and write the
 * same output.  The one exception is the output of a message over
 * max_size: the reference itself writes a split-dependent prefix there, and
 * the link (upstream/link_xfer.c) drops the connection without sending it (the message gets 552), so
 * only the verdicts must agree.
 *
 * Input: byte 0 = options as in fuzz_data_scan.c (bit 0 normalize, bit 1
 * strip X-Authenticated-User, bit 2 max_size = (byte >> 3) * 8), the rest is
 * the DATA.  Each input is fed whole, one octet at a time, and in three
 * pseudo-random splits derived from the input itself (so a finding
 * replays).  It also checks the bound the link's scratch buffer relies on:
 * one feed writes at most 2 * its input + SG_SCAN_HOLD + 16 octets. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../upstream/data_scan.h"
#include "scan_ref.c"

struct outcome {
	sg_buf out;
	size_t consumed;
	bool done, bad, nul, too_big;
	uint64_t size;
};

/* splitmix64 step: split lengths from a seed */
static uint64_t next_rand(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Next piece length: piece > 0 fixed, else random in 1..(1 << (r % 12)). */
static size_t piece_len(size_t piece, uint64_t *rng)
{
	if (piece)
		return piece;
	uint64_t r = next_rand(rng);
	return 1 + (size_t)((r >> 8) % ((uint64_t)1 << (r % 12)));
}

static void run_new(const uint8_t *d, size_t n, size_t piece, uint64_t seed,
                    bool norm, bool strip, uint64_t max, struct outcome *o)
{
	sg_scan s;
	sg_scan_init(&s, norm, strip, max);
	sg_buf_init(&o->out, 0);
	o->consumed = 0;
	while (o->consumed < n && !s.done) {
		size_t take = piece_len(piece, &seed);
		if (take > n - o->consumed)
			take = n - o->consumed;
		size_t before = o->out.len;
		size_t used =
		    sg_scan_feed(&s, (const char *)d + o->consumed, take, &o->out);
		if (used > take || (used < take && !s.done))
			abort();
		/* the link sizes its scratch buffer on this bound (UP_SCAN_OUT, link_int.h) */
		if (o->out.len - before > 2 * take + SG_SCAN_HOLD + 16)
			abort();
		o->consumed += used;
	}
	o->done = s.done;
	o->bad = s.bad;
	o->nul = s.nul;
	o->too_big = s.too_big;
	o->size = s.size;
}

static void run_ref(const uint8_t *d, size_t n, size_t piece, uint64_t seed,
                    bool norm, bool strip, uint64_t max, struct outcome *o)
{
	ref_scan s;
	ref_scan_init(&s, norm, strip, max);
	sg_buf_init(&o->out, 0);
	o->consumed = 0;
	while (o->consumed < n && !s.done) {
		size_t take = piece_len(piece, &seed);
		if (take > n - o->consumed)
			take = n - o->consumed;
		size_t used =
		    ref_scan_feed(&s, (const char *)d + o->consumed, take, &o->out);
		if (used > take || (used < take && !s.done))
			abort();
		o->consumed += used;
	}
	o->done = s.done;
	o->bad = s.bad;
	o->nul = s.nul;
	o->too_big = s.too_big;
	o->size = s.size;
}

static void same(const struct outcome *a, const struct outcome *b)
{
	if (a->consumed != b->consumed || a->done != b->done ||
	    a->bad != b->bad || a->nul != b->nul || a->too_big != b->too_big ||
	    a->size != b->size)
		abort();
	if (a->too_big)
		return;
	if (a->out.len != b->out.len ||
	    (a->out.len && memcmp(a->out.data, b->out.data, a->out.len) != 0))
		abort();
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
	uint64_t seed = 1469598103934665603ull; /* FNV-1a of the input */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ull;
	static const size_t pieces[] = {SIZE_MAX, 1, 0, 0, 0};
	for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
		size_t piece = pieces[k];
		uint64_t sd = seed + k;
		struct outcome a, b;
		run_new(data, size, piece, sd, norm, strip, max, &a);
		run_ref(data, size, piece, sd, norm, strip, max, &b);
		same(&a, &b);
		sg_buf_free(&a.out);
		sg_buf_free(&b.out);
	}
	return 0;
}
