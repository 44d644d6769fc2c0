/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/scan_cost.c: instructions per DATA octet of the scanner, for
 * callgrind (repeatable, unlike wall-clock time on a shared box).
 *
 * Scans 10 MiB of a typical message (a header section, then 76-character
 * body lines, a dot-stuffed line now and then) in 64 KiB pieces, as
 * link_connect.c / link_xfer.c gets them, with the fast scanner (upstream/data_scan.c) or the
 * reference model (scan_ref.c, one octet at a time):
 *
 *   cc -O2 -D_GNU_SOURCE -o /tmp/scan_cost tests/fuzz/scan_cost.c \
 *       upstream/data_scan.c common/buf.c
 *   valgrind --tool=callgrind --toggle-collect=scan_all /tmp/scan_cost new
 *   valgrind --tool=callgrind --toggle-collect=scan_all /tmp/scan_cost ref
 *
 * Instructions per octet = the "Collected" Ir / 10485760.  Not built by
 * CMake (it is a measuring tool, not a test). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../upstream/data_scan.h"
#include "scan_ref.c"

#define COST_TOTAL (10u * 1024 * 1024)
#define COST_PIECE 65536

static char *make_message(size_t *len)
{
	static const char hdr[] = "From: a@example.org\r\nTo: b@example.org\r\n"
	                          "Subject: cost\r\nX-Mailer: scan_cost\r\n\r\n";
	char *m = malloc(COST_TOTAL + 128);
	if (!m)
		exit(1);
	size_t n = sizeof hdr - 1;
	memcpy(m, hdr, n);
	unsigned line = 0;
	while (n + 78 <= COST_TOTAL) {
		for (int i = 0; i < 76; i++)
			m[n + (size_t)i] = (char)('A' + (line + (unsigned)i) % 58);
		if (line % 40 == 0)
			m[n] = m[n + 1] = '.'; /* a stuffed line */
		m[n + 76] = '\r';
		m[n + 77] = '\n';
		n += 78;
		line++;
	}
	memcpy(m + n, ".\r\n", 3);
	*len = n + 3;
	return m;
}

/* __attribute__((noinline)): callgrind --toggle-collect needs the symbol */
__attribute__((noinline)) static size_t scan_all(const char *m, size_t len,
                                                 bool ref, sg_buf *out)
{
	sg_scan s;
	ref_scan r;
	size_t total = 0, off = 0;
	sg_scan_init(&s, false, true, 0);
	ref_scan_init(&r, false, true, 0);
	while (off < len) {
		size_t take = len - off < COST_PIECE ? len - off : COST_PIECE;
		sg_buf_reset(out);
		size_t used = ref ? ref_scan_feed(&r, m + off, take, out)
		                  : sg_scan_feed(&s, m + off, take, out);
		total += out->len;
		off += used;
		if (used < take)
			break;
	}
	return total;
}

int main(int argc, char **argv)
{
	bool ref = argc > 1 && !strcmp(argv[1], "ref");
	size_t len;
	char *m = make_message(&len);
	sg_buf out;
	sg_buf_init(&out, 0);
	sg_buf_reserve(&out, COST_PIECE + 64);
	size_t total = scan_all(m, len, ref, &out);
	printf("%s: %zu octets in, %zu out\n", ref ? "ref" : "new", len, total);
	sg_buf_free(&out);
	free(m);
	return 0;
}
