/* SPDX-License-Identifier: BSD-2-Clause */
/* common/tls.h: TLS over memory BIOs, for both sides of the proxy.
 *
 * The network I/O is libuv's; OpenSSL only ever sees memory BIOs.  A session
 * feeds the ciphertext it read with sg_tls_feed, pulls plaintext with
 * sg_tls_read, pushes plaintext with sg_tls_write and sends whatever
 * sg_tls_out returns.  The same engine serves the client side (server role,
 * proxy/) and the upstream STARTTLS (client role, upstream/).
 *
 * An sg_tls_ctx bundles the SSL_CTX built from [tls] (RSA and optional ECDSA
 * chain, min_version, ciphers, session tickets).  It is reference counted:
 * a reload builds a new one, live sessions keep theirs. */
#ifndef SG_TLS_H
#define SG_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"

typedef struct sg_tls_ctx sg_tls_ctx;
typedef struct sg_tls sg_tls;

/* Server context from [tls]; NULL with FILE:LINE errors (unreadable file,
 * key that does not match the certificate, bad cipher list).  Returns a
 * context with refcount 1. */
sg_tls_ctx *sg_tls_server_ctx(const sg_config *cfg, sg_errors *errs);
/* Client context for upstream STARTTLS: verify = true checks the chain
 * against ca_file (or the system default when empty) and the host name. */
sg_tls_ctx *sg_tls_client_ctx(bool verify, const char *ca_file,
                              sg_errors *errs);
sg_tls_ctx *sg_tls_ctx_ref(sg_tls_ctx *c);
void sg_tls_ctx_unref(sg_tls_ctx *c);

/* verify_name: for client role, the host name to check (NULL = none). */
sg_tls *sg_tls_new_server(sg_tls_ctx *c);
sg_tls *sg_tls_new_client(sg_tls_ctx *c, const char *sni,
                          const char *verify_name);
void sg_tls_free(sg_tls *t);

/* Ciphertext from the network.  -1 only when OpenSSL cannot buffer it. */
int sg_tls_feed(sg_tls *t, const char *in, size_t len);
/* Drive the handshake: 1 done, 0 needs more input (send sg_tls_out first),
 * -1 failed (sg_tls_error says why, for the log). */
int sg_tls_handshake(sg_tls *t);
/* Append decrypted bytes to out (bounded by out->max; stops before it).
 * Returns 0 ok (possibly nothing new), -1 fatal error, 1 peer closed. */
int sg_tls_read(sg_tls *t, sg_buf *out);
/* Encrypt plaintext; the ciphertext waits in sg_tls_out.  -1 on error. */
int sg_tls_write(sg_tls *t, const char *p, size_t len);
/* Pending ciphertext to send; consume after copying/queuing it. */
const char *sg_tls_out(sg_tls *t, size_t *len);
void sg_tls_out_consume(sg_tls *t, size_t len);
/* Queue a close_notify (its bytes appear in sg_tls_out). */
void sg_tls_shutdown(sg_tls *t);

const char *sg_tls_error(sg_tls *t);   /* last failure reason */
const char *sg_tls_version(sg_tls *t); /* "TLSv1.3" */
const char *sg_tls_cipher(sg_tls *t);  /* "TLS_AES_256_GCM_SHA384" */
unsigned sg_tls_bits(sg_tls *t);       /* symmetric key bits, for SASL SSF */
bool sg_tls_resumed(sg_tls *t);
/* The session is idle: free OpenSSL's record buffers and our BIO buffers. */
void sg_tls_trim(sg_tls *t);

#endif
