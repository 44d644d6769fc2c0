/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/proxyproto.h: HAProxy PROXY protocol v1 (text) and v2 (binary).
 *
 * A pure, incremental parser: the session calls it with everything received
 * so far until it returns non-zero.  Spec: haproxy doc/proxy-protocol.txt. */
#ifndef SG_PROXY_PROXYPROTO_H
#define SG_PROXY_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Longest header we accept: v1 is at most 107 octets; v2 is 16 + length,
 * and we refuse v2 headers (TLVs included) longer than this. */
#define SG_PP_MAX 1024

typedef struct sg_pp_result {
	int version;   /* 1 or 2 */
	bool local;    /* v2 LOCAL / v1 UNKNOWN: keep the socket's addresses */
	struct sockaddr_storage src; /* the real client */
	struct sockaddr_storage dst; /* the address it connected to */
} sg_pp_result;

/* mode: enum sg_proxy_proto (SG_PP_V1, SG_PP_V2, SG_PP_ANY).  Returns the
 * header's length (> 0) when complete and valid, 0 when more bytes are
 * needed, -1 when malformed, not the allowed version, or longer than
 * SG_PP_MAX.  *why (may be NULL) names the problem for the log. */
int sg_pp_parse(const unsigned char *buf, size_t len, int mode,
                sg_pp_result *out, const char **why);

#endif
