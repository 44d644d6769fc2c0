/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/data_scan.h: the DATA byte scanner, pure code (fuzzable).
 *
 * Walks the client's DATA bytes once, in pieces of any size, and writes what
 * the upstream must see to an output buffer:
 *  - end-of-data only at <CRLF>.<CRLF> (the data starts at a line start);
 *  - bare LF / bare CR line ends are never forwarded as line ends: with
 *    reject the message is marked bad (nothing more is written) but the scan
 *    goes on to the real <CRLF>.<CRLF>; with normalize they become CRLF, and
 *    a line that begins after a bare one is taken as not dot-stuffed (a
 *    client that sends bare line ends, curl uploading an LF-only file,
 *    stuffs only after CRLF): its leading '.' is content and is written
 *    stuffed, so a lone "." line that is not the real end is written as
 *    ".." and the upstream cannot see an end-of-data the client did not
 *    send (SMTP smuggling, Dec 2023: "\n.\n", "\n.\r\n", "\r.\r\n",
 *    "\r\n.\r");
 *  - dot-stuffed lines pass through intact (the upstream un-stuffs);
 *  - NUL octets are never forwarded: with reject the message is marked bad
 *    and nul (its own reply) and the scan goes on as for a bare LF; with
 *    normalize they are removed, and a line that then begins with a dot of
 *    its content is written stuffed, so the removal can neither make an
 *    end-of-data nor lose that dot;
 *  - optionally drops "X-Authenticated-User:" header fields (and their folded
 *    continuation lines) from the header section, recognised as the
 *    upstream reads the line: after its stuffing dot, NULs removed, the name
 *    in any case, any WSP before the ':';
 *  - counts the size and stops writing past max_size. */
#ifndef SG_UPSTREAM_DATA_SCAN_H
#define SG_UPSTREAM_DATA_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

/* Longest line start held back while deciding whether a header line is
 * "X-Authenticated-User" (a stuffing dot, 20 characters, WSP, ':').  A
 * held name followed by WSP up to this bound is taken for the field: with
 * a ':' it is one, without it is no valid header line at all. */
#define SG_SCAN_HOLD 64

typedef struct sg_scan {
	int state;
	bool normalize;    /* bare_newline = normalize */
	bool strip_xauth;  /* identity header/auth */
	bool bol_clean;    /* the current line began after a CRLF */
	bool in_header;    /* still inside the header section */
	bool stripping;    /* dropping the current header field */
	bool lead_nul;     /* NULs removed before the line's first content
	                      octet (before or after its stuffing dot) */
	size_t line_len;   /* octets of the current line so far (no EOL) */
	uint64_t max_size; /* 0 = unlimited */
	uint64_t size;     /* content octets written (or that would be) */
	bool bad;          /* bare CR/LF or NUL seen (reject mode) */
	bool nul;          /* a NUL among them: 550 5.6.0, not 5.5.2 */
	bool too_big;      /* size went past max_size */
	bool done;         /* <CRLF>.<CRLF> seen */
	char hold[SG_SCAN_HOLD];
	size_t nhold;
	unsigned char hold_dot; /* dots before the held name: 1, the line's
	                           stuffing dot; 2, a content dot stuffed */
} sg_scan;

void sg_scan_init(sg_scan *s, bool normalize, bool strip_xauth,
                  uint64_t max_size);
/* Scan in; append the bytes for the upstream to out (nothing once bad or
 * too_big).  Returns the octets consumed: all of in, or up to and including
 * the final ".\r\n" once done (the rest is the client's next command).
 * The terminating ".\r\n" itself is not written to out.  -1 is never
 * returned; an out buffer past its bound sets too_big. */
size_t sg_scan_feed(sg_scan *s, const char *in, size_t len, sg_buf *out);

#endif
