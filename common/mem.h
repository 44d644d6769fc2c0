/* SPDX-License-Identifier: BSD-2-Clause */
/* common/mem.h: memory allocation for saslgate: out of memory is fatal.
 *
 * As in Postfix (mymalloc(3)): a daemon that cannot get a few hundred
 * octets cannot do anything useful either, and a recovery branch per
 * allocation is code that never runs in a test and so is wrong when it
 * finally does.  Each function here either returns the memory or writes
 * one `event=fatal reason="out of memory"` log line and aborts; the
 * service manager restarts the daemon.  Callers never test the result.
 *
 * Not covered: a bound (an sg_buf with a maximum, a limit on lines or
 * entries) is input policy, answered with a reply or a close, never an
 * abort; and what libraries allocate for themselves (OpenSSL, Cyrus SASL,
 * libuv) comes back as a failure of that call, handled where the call is
 * (docs/ARCHITECTURE.md, "Memory"). */
#ifndef SG_MEM_H
#define SG_MEM_H

#include <stddef.h>

/* A request of 0 octets gets a valid, distinct pointer (as if 1). */
void *sg_xmalloc(size_t n);
void *sg_xcalloc(size_t n, size_t size);
void *sg_xrealloc(void *p, size_t n);
/* realloc for n elements of size octets; a product past SIZE_MAX is fatal
 * too (no caller can have meant it). */
void *sg_xreallocarray(void *p, size_t n, size_t size);
/* NULL is copied as "". */
char *sg_xstrdup(const char *s);
/* At most n octets of s, NUL-terminated. */
char *sg_xstrndup(const char *s, size_t n);
char *sg_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log the fatal line for a request of n octets and abort. */
void sg_out_of_memory(const char *fn, size_t n) __attribute__((noreturn));

#endif
