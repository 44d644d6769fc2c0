/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/bdat.h: BDAT chunks (RFC 3030) to and from DATA's wire format,
 * pure code (fuzzable).
 *
 * A chunk carries the message's octets as they are: no dot-stuffing, no
 * end-of-data.  saslgate scans every message in DATA's wire format
 * (data_scan.h), so a chunked message is first stuffed as a DATA client
 * would (RFC 5321 4.5.2: a '.' that begins a line gets another '.'),
 * scanned, and, for an upstream that takes BDAT, un-stuffed again.
 *
 *  - sg_stuff: a line starts at the message start and after every CRLF,
 *    which is where the scanner takes a leading '.' for stuffing (after a
 *    bare CR or LF it takes it for content and stuffs it itself), so the
 *    stuffed octets never hold an end-of-data (<CRLF>.<CRLF>) and the
 *    scanner only sees the one saslgate appends at BDAT LAST.
 *  - sg_unstuff: the scanner's output has CRLF line ends only, and every
 *    line of it that begins with a '.' begins with a stuffing dot (the
 *    scanner writes a content dot at a line start stuffed), which is
 *    dropped, as the upstream would after DATA.
 *
 * Both keep their state across calls: the result is the same however the
 * octets are split.  For octets whose every CR is followed by an LF and
 * every LF preceded by a CR, with no NUL, unstuff(scan(stuff(x))) is x
 * (tests/unit/test_bdat.c, tests/fuzz/fuzz_bdat.c). */
#ifndef SG_UPSTREAM_BDAT_H
#define SG_UPSTREAM_BDAT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sg_stuffer {
	bool bol;  /* the next octet begins a line */
	bool cr;   /* the last octet was a CR */
	bool crlf; /* the message so far is empty or ends in CRLF */
} sg_stuffer;

typedef struct sg_unstuffer {
	bool bol;  /* the next octet begins a line */
} sg_unstuffer;

/* At most this many octets come out of sg_stuff for n in: a stuffing dot
 * needs a line start, so at most every other octet gets one. */
#define SG_STUFF_MAX(n) ((n) + (n) / 2 + 1)

void sg_stuff_init(sg_stuffer *st);
/* in[0..len) stuffed into out (room for SG_STUFF_MAX(len)); returns the
 * octets written. */
size_t sg_stuff(sg_stuffer *st, const char *in, size_t len, char *out);
/* What ends the stuffed message for the scanner: ".\r\n" when it is empty
 * or ends in CRLF, else "\r\n.\r\n" (a message that does not end in CRLF
 * gets one, as Postfix does). */
const char *sg_stuff_end(const sg_stuffer *st);

void sg_unstuff_init(sg_unstuffer *u);
/* Drop the stuffing dots of p[0..len) in place; returns the new length. */
size_t sg_unstuff(sg_unstuffer *u, char *p, size_t len);

#endif
