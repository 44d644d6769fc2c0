/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/xtext.h: xtext encoding (RFC 1891 section 4 / RFC 3461) for the
 * XCLIENT and XFORWARD attribute values.  The single serializer of those
 * values (docs/ARCHITECTURE.md, "Identity": XCLIENT/xtext has one serializer). */
#ifndef SG_UPSTREAM_XTEXT_H
#define SG_UPSTREAM_XTEXT_H

#include <stddef.h>

/* Encode in into out (cap bytes, NUL-terminated).  '+', '=' and every octet
 * outside 33..126 become "+HH" (upper-case hex).  Returns the encoded length
 * (without the NUL), or -1 when it would not fit in cap.  '"', '<', '>'
 * and '\' are encoded as well (xtext.c says why). */
long sg_xtext_encode(char *out, size_t cap, const char *in);

#endif
