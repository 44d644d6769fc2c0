/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/client_name.h: the client's host name, for XCLIENT/XFORWARD NAME=
 * and the Received header ([server] resolve_client).
 *
 * A reverse lookup of the client's address (getnameinfo, NI_NAMEREQD), then
 * a forward lookup of the name it gives (getaddrinfo): the name counts only
 * when one of its addresses is the client's, as Postfix's smtpd verifies a
 * client name.  The result is what Postfix XCLIENT_README's NAME takes: the
 * name, [UNAVAILABLE] (no name, or one that does not lead back) or
 * [TEMPUNAVAIL] (the resolver failed for now).
 *
 * Both lookups are libuv requests on the thread pool, never on the loop.
 * libuv runs them as "slow I/O", on at most half the pool's threads; a loop
 * runs at most sg_name_slots() of its lookups at once and queues the rest,
 * so a resolver that hangs holds a few threads, not the pool (Cyrus SASL and
 * the upstream's own name lookups keep theirs; docs/ARCHITECTURE.md,
 * "Threads").  A lookup still in line SG_NAME_WAIT_MS after it was started
 * is dropped as [TEMPUNAVAIL]; the session bounds its own wait the same way.
 *
 * A lookup is allocated when started and freed by its last completion: once
 * running, a libuv lookup request cannot be stopped, so sg_name_cancel only
 * says nobody wants the result (no callback after it). */
#ifndef SG_PROXY_CLIENT_NAME_H
#define SG_PROXY_CLIENT_NAME_H

#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* How long a client name is waited for, from the lookup's start: a link
 * that opens later gets [TEMPUNAVAIL] at once. */
#define SG_NAME_WAIT_MS 5000
/* RFC 1035 2.3.4: a host name is at most 255 octets. */
#define SG_NAME_MAX 255

enum sg_name_result {
	SG_NAME_OK = 0, /* a forward-confirmed name */
	SG_NAME_NONE,   /* [UNAVAILABLE] */
	SG_NAME_TEMP,   /* [TEMPUNAVAIL] */
};

typedef struct sg_name_lookup sg_name_lookup;
/* name: the confirmed name with SG_NAME_OK, else NULL; valid during the
 * call only.  Always from the loop, never inside sg_name_start. */
typedef void (*sg_name_cb)(void *arg, int result, const char *name);

/* Look up the client at ip (the textual IPv4 or IPv6 address the session
 * logs).  slots: lookups of this loop that may run at once (sg_name_slots).
 * NULL when ip is not an address (nothing to look up: [UNAVAILABLE]). */
sg_name_lookup *sg_name_start(uv_loop_t *loop, const char *ip, unsigned slots,
                              sg_name_cb cb, void *arg);
/* Milliseconds since the lookup was started (loop time). */
uint64_t sg_name_age(const sg_name_lookup *q);
/* The owner lets go: no callback after this.  A lookup in line is freed at
 * once; a running one when its request completes. */
void sg_name_cancel(sg_name_lookup *q);

/* Per loop, for [sasl] threads = t: ceil(t / 2).  The pool has 2 x t x
 * workers + 2 threads (sasl/auth.c) and libuv gives slow I/O at most
 * t x workers + 1 of them, so one is always left for the upstream's
 * getaddrinfo. */
unsigned sg_name_slots(unsigned sasl_threads);

/* ---- pure rules, unit-tested --------------------------------------------- */

/* A resolver error (libuv's UV_EAI_*) as a result: temporary (EAI_AGAIN,
 * out of memory, a system error) or not (no such name, no address). */
int sg_name_error_result(int uv_status);
/* name is a host name Postfix takes as NAME= (its valid_hostname): labels
 * of letters, digits, '-' and '_', 1..63 octets each, not beginning or
 * ending with '-', at most SG_NAME_MAX octets in all, not only digits
 * (an address-like name proves nothing). */
bool sg_name_valid(const char *name);
/* One of the addresses in ai is sa's (an IPv4-mapped IPv6 address counts
 * as its IPv4 address). */
bool sg_name_confirms(const struct addrinfo *ai, const struct sockaddr *sa);

#endif
