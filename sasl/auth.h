/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/auth.h: SMTP AUTH (RFC 4954) on Cyrus SASL, as the session sees it.
 *
 * sasl/ is the only place that includes <sasl/sasl.h>.  The session never sees
 * a Cyrus type: it gets mechanisms as text, results as enum sg_auth_result and
 * challenges as raw bytes it base64-encodes with sg_b64_encode.
 *
 * Cyrus calls can block for seconds (saslauthd socket, LDAP), so
 * sg_auth_start/sg_auth_step run sasl_server_start/step on libuv's thread
 * pool (uv_queue_work) and call cb on the loop thread when done. */
#ifndef SG_SASL_AUTH_H
#define SG_SASL_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "../common/config.h"

/* One-time set-up (sasl_server_init, getopt callback answering from [sasl],
 * log callback into our log).  Problems go to errs as FILE:LINE where the
 * key is known.  Also checks pwcheck_method, mech_list against the loaded
 * plugins, the saslauthd socket and the sasldb (reached with the rights of
 * [server] user), loads sender_login_map, and logs the effective settings
 * in one line.  cfg must outlive every session (a reload calls sg_sasl_reconfig).
 * Returns 0 or -1. */
int sg_sasl_init(const sg_config *cfg, sg_errors *errs);
/* After SIGHUP: new [sasl] options for sessions created from now on (Cyrus'
 * getopt callback reads the current config).  Returns 0 or -1 with errs. */
int sg_sasl_reconfig(const sg_config *cfg, sg_errors *errs);
void sg_sasl_done(void);

typedef struct sg_auth sg_auth; /* one per session, created lazily at AUTH
                                   or EHLO, freed with the session */

typedef struct sg_auth_peer {
	const char *local_ip;
	unsigned local_port;
	const char *remote_ip; /* after PROXY protocol: the real client */
	unsigned remote_port;
	const char *sid; /* session id for log lines */
	/* The listener has require_tls_for_auth = no: PLAIN and LOGIN may be
	 * offered before TLS (SASL_SEC_NOPLAINTEXT is not set).  false: Cyrus
	 * hides every plaintext mechanism until sg_auth_set_tls(). */
	bool plaintext_ok;
} sg_auth_peer;

sg_auth *sg_auth_new(const sg_config *cfg, const sg_auth_peer *peer);
void sg_auth_free(sg_auth *a); /* safe while work is in flight: the result
                                  is dropped, memory freed when it returns */

/* After the TLS handshake: the cipher's bits as external SSF, so Cyrus
 * allows plaintext mechanisms. */
void sg_auth_set_tls(sg_auth *a, unsigned ssf);

/* Space-separated mechanisms for EHLO's "AUTH ..." line in the current state;
 * "" when none may be offered.  Challenge-response mechanisms are dropped
 * under pwcheck_method = saslauthd. */
const char *sg_auth_mechs(sg_auth *a);

/* Cyrus calls queued or running on the pool, every loop (for metrics). */
unsigned sg_auth_inflight(void);

/* RFC 4954 mechanism name syntax: 1-20 of A-Z 0-9 - _ (checked before the
 * name reaches Cyrus: CVE-2019-19906 class).  Uppercases in place. */
bool sg_auth_mech_valid(char *mech);
/* Is mech (valid, uppercase) among sg_auth_mechs()? */
bool sg_auth_mech_offered(sg_auth *a, const char *mech);

enum sg_auth_result {
	SG_AUTH_OK = 0,   /* authenticated: sg_auth_user() is set */
	SG_AUTH_CONTINUE, /* send "334 " + base64(challenge), await a line */
	SG_AUTH_FAIL,     /* bad credentials or unknown user: 535 5.7.8 */
	SG_AUTH_TEMPFAIL, /* backend cannot answer: 454 4.7.0, no failure counted */
	SG_AUTH_NOMECH,   /* mechanism unknown / not allowed: 504 5.5.4 */
	SG_AUTH_BADPROT,  /* malformed client response: 501 5.5.2 */
	SG_AUTH_AUTHZ,    /* authzid not permitted for this login: 535 5.7.8 */
};

/* challenge: raw bytes, valid until the next call on a. */
typedef void (*sg_auth_cb)(void *arg, int result, const char *challenge,
                           unsigned len);

/* in/inlen: the decoded initial response; has_initial = false when the
 * client sent none (distinct from "=", an empty one).
 * Both return 0 when the call is under way (cb comes later, from the loop),
 * -1 when it could not start (cb never comes), and 1 when the credential
 * cache ([sasl] cache_size) answered at once: cb is not called, and
 * sg_auth_answer() is SG_AUTH_OK (sg_auth_user() set) or SG_AUTH_FAIL. */
int sg_auth_start(sg_auth *a, uv_loop_t *loop, const char *mech,
                  const char *in, unsigned inlen, bool has_initial,
                  sg_auth_cb cb, void *arg);
int sg_auth_step(sg_auth *a, uv_loop_t *loop, const char *in, unsigned inlen,
                 sg_auth_cb cb, void *arg);
/* Forget a half-done exchange (after "*" or a 5xx) so AUTH can start again. */
void sg_auth_reset(sg_auth *a);

/* The answer of a call that returned 1; sg_auth_cached(): the last
 * answer (until the next start/step) came from the credential cache. */
int sg_auth_answer(sg_auth *a);
bool sg_auth_cached(sg_auth *a);
/* Empty the credential cache (SIGHUP; a reload also resizes it). */
void sg_sasl_cache_flush(void);

const char *sg_auth_user(sg_auth *a);   /* authorized identity, NULL if none */
const char *sg_auth_authcid(sg_auth *a); /* login used, for logs */

/* Strict base64 (RFC 4648, padding required).  Return 0, or -1 on bad input
 * or when out is too small.  outmax for decode must be >= inlen*3/4+3. */
int sg_b64_decode(const char *in, size_t inlen, char *out, size_t outmax,
                  unsigned *outlen);
int sg_b64_encode(const char *in, size_t inlen, char *out, size_t outmax,
                  unsigned *outlen);

/* Per-client-address failure limit across sessions and workers (mutex; AUTH
 * is rare).  over: the address has ip_failure_limit failures within
 * ip_failure_window. */
bool sg_ipfail_over(const sg_config *cfg, const char *ip);
void sg_ipfail_record(const sg_config *cfg, const char *ip);

/* [sasl] sender_login_map: may login use this MAIL FROM address?  true when
 * no map is configured.  Loaded at init/reconfig. */
bool sg_sender_allowed(const sg_config *cfg, const char *login,
                       const char *mailfrom);

#endif
