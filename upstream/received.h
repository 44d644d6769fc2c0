/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/received.h: the trace header saslgate prepends to each message.
 *
 * Pure code (no I/O) so its format is unit-tested: RFC 5321 4.4 Received
 * with the RFC 3848 protocol name (ESMTPSA / ESMTPA / ESMTPS / ESMTP), the
 * TLS parameters and, unless identity = none, the authenticated user; for
 * identity header/auth also "X-Authenticated-User:". */
#ifndef SG_UPSTREAM_RECEIVED_H
#define SG_UPSTREAM_RECEIVED_H

#include <stdbool.h>
#include <time.h>

#include "../common/buf.h"
#include "link.h"

/* Longest value (HELO, client name, user, ...) copied into a header; with
 * the fixed text around them every line stays below RFC 5322's 998. */
#define SG_TRACE_VALUE_MAX 255

/* RFC 3848 "with" keyword for this client. */
const char *sg_received_proto(const sg_identity *id);

/* Append the Received header (and X-Authenticated-User when xauth_header)
 * to out.  with_user: name the user in "(authenticated sender: ...)",
 * whole (identity.h).  now: the time to stamp (RFC 5322 3.3 date-time,
 * local zone).  0, or -1 without memory or when a header cannot carry the
 * login exactly (sg_identity_unfit says so before a link is used). */
int sg_received_build(sg_buf *out, const sg_identity *id, const char *hostname,
                      bool with_user, bool xauth_header, time_t now);

/* The same header in two steps, for a link that sends many messages:
 * everything but the date depends only on the link, so sg_received_parts
 * appends the text before the date to pre and the text after it to post
 * once, and sg_received_stamp appends pre + date + post for each message
 * (memcpy, the date made once a second).  parts + stamp == build, byte for
 * byte.  0 / -1. */
#define SG_RECEIVED_DATE_MAX 64
int sg_received_parts(sg_buf *pre, sg_buf *post, const sg_identity *id,
                      const char *hostname, bool with_user, bool xauth_header);
int sg_received_stamp(sg_buf *out, const char *pre, size_t npre,
                      const char *post, size_t npost, time_t now);

#endif
