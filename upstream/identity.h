/* upstream/identity.h: the XCLIENT and XFORWARD commands, built without I/O.
 *
 * The one serializer of the identity hand-over (ARCHITECTURE.md): which
 * attributes are sent (only those the upstream advertised), their values
 * (xtext, RFC 1891), and the 512-octet command limit (RFC 5321 4.5.3.1.4,
 * Postfix XCLIENT_README note 1). */
#ifndef SG_UPSTREAM_IDENTITY_H
#define SG_UPSTREAM_IDENTITY_H

#include <stddef.h>

#include "link.h"

#define SG_XCLIENT_LINE_MAX 512 /* octets, CRLF included */
#define SG_XCLIENT_LINES 8      /* commands per hand-over, plenty for 8 attrs */

/* XCLIENT commands (each "XCLIENT a=b ...\r\n", NUL-terminated) for id,
 * sending only the SG_XA_* attributes in attrs.  Returns how many lines, or
 * -1 when there is nothing to send or they would not fit. */
int sg_xclient_lines(const sg_identity *id, unsigned attrs,
                     char lines[][SG_XCLIENT_LINE_MAX + 1], int max);

/* One "XFORWARD ...\r\n" command (XFORWARD_README), SOURCE=REMOTE. */
void sg_xforward_line(const sg_identity *id, unsigned attrs, char *out,
                      size_t cap);

#endif
