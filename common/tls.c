/* SPDX-License-Identifier: BSD-2-Clause */
/* common/tls.c: the TLS engine of common/tls.h, OpenSSL 3 over memory BIOs.
 *
 * OpenSSL never touches a socket: the session feeds ciphertext into a memory
 * BIO (rbio), OpenSSL writes ciphertext into another (wbio), and the session
 * ships that with libuv.  So nothing here can block the event loop.
 *
 * Memory: a busy TLS connection needs ~2 x 17 KiB of record buffers.  While
 * it is busy it keeps them: SSL_MODE_RELEASE_BUFFERS would free and cleanse
 * them after every record, the largest cost of relaying a big message.  When
 * the session is idle between messages it calls sg_tls_trim, which frees
 * OpenSSL's record buffers (SSL_free_buffers) and replaces the drained
 * memory BIOs by fresh empty ones, so an idle session holds little more
 * than the SSL object itself (~6.1 KB per session in test_tls; a BIO of our
 * own over freeable buffers would hold more, ~6.5 KB).  What OpenSSL keeps
 * from the handshake, its key share and handshake hash, has no public
 * release before SSL_free; SSL_free_buffers drops the record buffers only.
 *
 * Error queue: OpenSSL's is per thread and shared by every session on it,
 * and in OpenSSL 3 ERR_clear_error is not cheap (~800 instructions: it
 * wipes sixteen slots), too dear for every record.  So the hot paths (feed,
 * read, write, out) neither clear it nor consult it: "needs more input" is
 * recognised by SSL_want_read, which looks at the connection, not at the
 * queue, so a stale entry left by anything else on the thread cannot turn a
 * retry into a failure.  The queue is read only after a real failure
 * (set_error), which clears it; the rare entry points (contexts, new
 * engines, handshake, shutdown) clear it on entry.
 *
 * Our own allocations are fatal when they fail (common/mem.h); OpenSSL's
 * (SSL_new, BIO_new, a memory BIO growing) fail the call they belong to,
 * and the caller treats that like any other TLS failure. */
#include "tls.h"
#include "mem.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Longest failure reason kept per session (for one log line). */
#define SG_TLS_ERR_MAX 192
/* Scratch size for draining sent ciphertext out of the write BIO. */
#define SG_TLS_DRAIN_CHUNK 4096
/* A memory BIO keeps its peak allocation.  A drained one whose buffer grew
 * past this is replaced by a fresh one, so a burst (DATA) does not pin its
 * peak for the session's life; up to this much is kept while the session is
 * busy, as a fresh BIO per read would cost a zeroed grow and a cleansed free
 * per chunk.  sg_tls_trim drops it all when the session is idle. */
#define SG_TLS_BIO_KEEP (256 * 1024)
/* Largest single BIO_write (BIO_write takes an int). */
#define SG_TLS_FEED_CHUNK (1 << 20)
/* Server-side session cache entries (TLS 1.2 session ids). */
#define SG_TLS_SESS_CACHE 10240
/* TLS 1.2 suites when [tls] ciphers is empty: Mozilla's "intermediate"
 * profile (https://wiki.mozilla.org/Security/Server_Side_TLS) without its
 * DHE suites, which would need DH parameters of our own.  Every suite is
 * forward secret (ECDHE) and AEAD (GCM, ChaCha20-Poly1305): no CBC, so
 * nothing for LUCKY13 (CVE-2013-0169) or POODLE-style padding oracles.  In
 * Mozilla's order (ECDSA before RSA for each cipher); TLS 1.3 suites are
 * OpenSSL's own (all of them forward secret and AEAD). */
#define SG_TLS_DEFAULT_CIPHERS                                                 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* Client role: sessions remembered for resumption, one per upstream name. */
#define SG_TLS_CLIENT_SLOTS 8
#define SG_TLS_NAME_MAX 256

struct client_slot {
	char name[SG_TLS_NAME_MAX];
	SSL_SESSION *sess;
};

struct sg_tls_ctx {
	atomic_int refcnt;
	SSL_CTX *ssl;
	bool server;
	/* client role: last good session per host name, shared by workers */
	pthread_mutex_t lock;
	struct client_slot slots[SG_TLS_CLIENT_SLOTS];
	unsigned next_slot;
};

struct sg_tls {
	SSL *ssl;
	BIO *rb; /* ciphertext in (network -> OpenSSL) */
	BIO *wb; /* ciphertext out (OpenSSL -> network) */
	sg_tls_ctx *ctx;
	char *name; /* client role: key for the session cache */
	bool failed; /* a fatal error: the session must not be resumed */
	/* OpenSSL has taken and decrypted everything fed so far and the caller
	 * has all of it: sg_tls_read need not call into OpenSSL before the
	 * next sg_tls_feed (a call would only say "want read"). */
	bool rd_dry;
	/* Server role, TLS 1.3: the session ticket is sent with our first
	 * write after the handshake (SSL_new_session_ticket), not alone when
	 * the handshake ends: the reply to EHLO and the ticket then leave in
	 * one TCP write instead of two. */
	bool ticket_due;
	char err[SG_TLS_ERR_MAX];
};

/* Index of the owning sg_tls in SSL ex_data (client session callback). */
static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
	ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ------------------------------------------------------------- errors */

/* The first queued OpenSSL error as a short reason ("wrong version
 * number"), or NULL when the queue is empty. */
static const char *first_reason(unsigned long *code, char *tmp, size_t tmplen)
{
	unsigned long e = ERR_peek_error();
	*code = e;
	if (!e)
		return NULL;
	const char *r = ERR_reason_error_string(e);
	if (r)
		return r;
	ERR_error_string_n(e, tmp, tmplen);
	return tmp;
}

static const char *ssl_error_name(int e)
{
	switch (e) {
	case SSL_ERROR_SSL:
		return "protocol error";
	case SSL_ERROR_SYSCALL:
		return "unexpected end of stream";
	case SSL_ERROR_ZERO_RETURN:
		return "peer closed";
	case SSL_ERROR_WANT_READ:
		return "needs more input";
	case SSL_ERROR_WANT_WRITE:
		return "needs to write";
	default:
		return "error";
	}
}

/* Record why `what` failed: first queued error plus a hint an admin can act
 * on.  Clears the queue afterwards. */
static void set_error(sg_tls *t, const char *what, int ret)
{
	char tmp[SG_TLS_ERR_MAX];
	unsigned long code;
	int se = SSL_get_error(t->ssl, ret);
	const char *reason = first_reason(&code, tmp, sizeof tmp);
	const char *hint = "";
	const char *detail = "";

	if (code && ERR_GET_LIB(code) == ERR_LIB_SSL) {
		switch (ERR_GET_REASON(code)) {
		case SSL_R_WRONG_VERSION_NUMBER:
		case SSL_R_HTTP_REQUEST:
		case SSL_R_HTTPS_PROXY_REQUEST:
		case SSL_R_PACKET_LENGTH_TOO_LONG:
		case SSL_R_UNKNOWN_PROTOCOL:
			hint = " (plaintext on a TLS port?)";
			break;
		case SSL_R_CERTIFICATE_VERIFY_FAILED: {
			long v = SSL_get_verify_result(t->ssl);
			if (v != X509_V_OK) {
				hint = " (";
				detail = X509_verify_cert_error_string(v);
			}
			break;
		}
		case SSL_R_NO_SHARED_CIPHER:
		case SSL_R_UNSUPPORTED_PROTOCOL:
		case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
			hint = " (client and min_version/ciphers do not overlap)";
			break;
		default:
			break;
		}
	}
	/* A long reason is cut at SG_TLS_ERR_MAX: it is for one log line. */
	char line[2 * SG_TLS_ERR_MAX + 64];
	if (reason)
		snprintf(line, sizeof line, "%s failed: %s%s%s%s", what, reason, hint,
		         detail, *detail ? ")" : "");
	else
		snprintf(line, sizeof line, "%s failed: %s", what,
		         ssl_error_name(se));
	size_t n = strnlen(line, sizeof t->err - 1);
	memcpy(t->err, line, n);
	t->err[n] = '\0';
	t->failed = true;
	ERR_clear_error();
}

/* Append OpenSSL's first queued reason to a config error. */
static void cfg_error(sg_errors *errs, const sg_where *w, const char *what,
                      const char *path)
{
	char tmp[SG_TLS_ERR_MAX];
	unsigned long code;
	const char *reason = first_reason(&code, tmp, sizeof tmp);
	if (path)
		sg_errors_add(errs, w, "%s %s: %s", what, path,
		              reason ? reason : "failed");
	else
		sg_errors_add(errs, w, "%s: %s", what, reason ? reason : "failed");
	ERR_clear_error();
}

/* ------------------------------------------------------------- contexts */

static sg_tls_ctx *ctx_new(SSL_CTX *ssl, bool server)
{
	sg_tls_ctx *c = sg_xcalloc(1, sizeof *c);
	atomic_init(&c->refcnt, 1);
	c->ssl = ssl;
	c->server = server;
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

sg_tls_ctx *sg_tls_ctx_ref(sg_tls_ctx *c)
{
	if (c)
		atomic_fetch_add(&c->refcnt, 1);
	return c;
}

void sg_tls_ctx_unref(sg_tls_ctx *c)
{
	if (!c || atomic_fetch_sub(&c->refcnt, 1) != 1)
		return;
	for (size_t i = 0; i < SG_TLS_CLIENT_SLOTS; i++)
		SSL_SESSION_free(c->slots[i].sess);
	pthread_mutex_destroy(&c->lock);
	SSL_CTX_free(c->ssl);
	free(c);
}

/* Load one certificate chain + key pair into the context and check that
 * they belong together.  want_ec: the pair must be ECDSA (so it lands in the
 * ECDSA slot next to the RSA one instead of replacing it). */
static int load_pair(SSL_CTX *ssl, const sg_config *cfg, const char *ckey,
                     const char *kkey, const char *cert, const char *key,
                     bool want_ec, sg_errors *errs)
{
	sg_where wc = sg_config_where(cfg, "tls", ckey);
	sg_where wk = sg_config_where(cfg, "tls", kkey);

	if (want_ec) {
		/* Peek at the key type first: loading an RSA certificate here
		 * would silently replace the main RSA one. */
		FILE *f = fopen(cert, "r");
		X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
		if (f)
			fclose(f);
		EVP_PKEY *pk = x ? X509_get0_pubkey(x) : NULL;
		bool ec = pk && EVP_PKEY_is_a(pk, "EC");
		X509_free(x);
		ERR_clear_error();
		if (x && !ec) {
			sg_errors_add(errs, &wc,
			              "%s %s: not an ECDSA certificate", ckey, cert);
			return -1;
		}
	}
	if (SSL_CTX_use_certificate_chain_file(ssl, cert) != 1) {
		cfg_error(errs, &wc, "cannot load certificate chain", cert);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL already compares a key of the certificate's type. */
		if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			sg_errors_add(errs, &wk, "key %s does not match certificate %s",
			              key, cert);
			return -1;
		}
		cfg_error(errs, &wk, "cannot load private key", key);
		return -1;
	}
	if (SSL_CTX_check_private_key(ssl) != 1) {
		ERR_clear_error();
		sg_errors_add(errs, &wk, "key %s does not match certificate %s", key,
		              cert);
		return -1;
	}
	return 0;
}

/* The TLS 1.2 (and below) suites: [tls] ciphers when set, a site with
 * legacy clients widening the list, else SG_TLS_DEFAULT_CIPHERS. */
static void set_ciphers(SSL_CTX *ssl, const sg_config *cfg, sg_errors *errs)
{
	bool own = cfg->tls_ciphers && *cfg->tls_ciphers;
	const char *ciphers = own ? cfg->tls_ciphers : SG_TLS_DEFAULT_CIPHERS;
	if (SSL_CTX_set_cipher_list(ssl, ciphers) != 1) {
		sg_where w = sg_config_where(cfg, "tls", "ciphers");
		cfg_error(errs, &w, "bad cipher list", ciphers);
	}
	/* The default suites are TLS 1.2's: a lower min_version would change
	 * nothing, and its clients would fail with "no shared cipher".  OpenSSL
	 * 3 allows TLS 1.0 and 1.1 only at security level 0. */
	if (!own && cfg->tls_min_version < TLS1_2_VERSION) {
		sg_where w = sg_config_where(cfg, "tls", "min_version");
		sg_errors_add(errs, &w,
		              "min_version below TLSv1.2 needs [tls] ciphers (the "
		              "default suites are TLS 1.2 only), e.g. ciphers = "
		              "DEFAULT:@SECLEVEL=0");
	}
}

sg_tls_ctx *sg_tls_server_ctx(const sg_config *cfg, sg_errors *errs)
{
	ERR_clear_error();
	size_t nerr = errs->n;
	SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
	if (!ssl) {
		cfg_error(errs, NULL, "cannot create TLS context", NULL);
		return NULL;
	}

	/* RFC 7457 / CVE-2012-4929 (CRIME): no TLS compression.  Client
	 * renegotiation is a DoS vector (CVE-2011-1473) and not needed.  Our
	 * cipher order wins over the client's, except that a client whose
	 * first choice is ChaCha20 (no AES hardware: phones) gets it. */
	SSL_CTX_set_options(ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE |
	                             SSL_OP_PRIORITIZE_CHACHA);
	/* no SSL_MODE_RELEASE_BUFFERS: freeing and cleansing the record
	 * buffers after every record is the hot path of a big message; an
	 * idle session gives them back in sg_tls_trim (SSL_free_buffers) */

	sg_where wv = sg_config_where(cfg, "tls", "min_version");
	if (SSL_CTX_set_min_proto_version(ssl, cfg->tls_min_version) != 1)
		cfg_error(errs, &wv, "unsupported min_version", NULL);

	set_ciphers(ssl, cfg, errs);

	/* Resumption saves a full handshake per reconnecting client (MUAs
	 * reconnect often).  The cache serves TLS 1.2 session ids; tickets
	 * (RFC 5077, RFC 8446 4.6.1) are stateless and survive across workers.
	 * session_tickets = no turns both ticket kinds off. */
	static const unsigned char sid_ctx[] = "saslgate";
	SSL_CTX_set_session_id_context(ssl, sid_ctx, sizeof sid_ctx - 1);
	SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ssl, SG_TLS_SESS_CACHE);
	if (!cfg->tls_session_tickets) {
		SSL_CTX_set_options(ssl, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ssl, 0);
	} else {
		/* TLS 1.3: OpenSSL sends two tickets by default; a mail client
		 * resumes its next connection with one (and gets a fresh one
		 * then), and each costs an encryption and a record.  The
		 * engine sends it with its first write (sg_tls_new_server). */
		SSL_CTX_set_num_tickets(ssl, 1);
	}

	if (!cfg->tls_certificate || !*cfg->tls_certificate || !cfg->tls_key ||
	    !*cfg->tls_key) {
		sg_where w = sg_config_where(cfg, "tls", "certificate");
		sg_errors_add(errs, &w, "[tls] needs both certificate and key");
	} else {
		load_pair(ssl, cfg, "certificate", "key", cfg->tls_certificate,
		          cfg->tls_key, false, errs);
	}
	if (cfg->tls_ecdsa_certificate && *cfg->tls_ecdsa_certificate &&
	    cfg->tls_ecdsa_key && *cfg->tls_ecdsa_key) {
		/* Both pairs ECDSA: the second would silently replace the first
		 * (OpenSSL keeps one certificate per key type). */
		X509 *main = errs->n == nerr ? SSL_CTX_get0_certificate(ssl) : NULL;
		EVP_PKEY *pk = main ? X509_get0_pubkey(main) : NULL;
		if (pk && EVP_PKEY_is_a(pk, "EC")) {
			sg_where w = sg_config_where(cfg, "tls", "ecdsa_certificate");
			sg_errors_add(errs, &w,
			              "certificate %s is ECDSA already; ecdsa_certificate "
			              "is for an ECDSA pair next to an RSA one",
			              cfg->tls_certificate);
		} else {
			load_pair(ssl, cfg, "ecdsa_certificate", "ecdsa_key",
			          cfg->tls_ecdsa_certificate, cfg->tls_ecdsa_key, true,
			          errs);
		}
	}

	ERR_clear_error();
	if (errs->n != nerr) {
		SSL_CTX_free(ssl);
		return NULL;
	}
	return ctx_new(ssl, true);
}

/* Client role: remember the session of a verified connection, per name, so
 * the next connection to the same upstream resumes (RFC 5077, RFC 8446). */
static int client_new_session(SSL *ssl, SSL_SESSION *sess)
{
	sg_tls *t = SSL_get_ex_data(ssl, ex_index);
	if (!t || !t->name || !SSL_SESSION_is_resumable(sess))
		return 0;
	sg_tls_ctx *c = t->ctx;
	pthread_mutex_lock(&c->lock);
	struct client_slot *slot = NULL;
	for (size_t i = 0; i < SG_TLS_CLIENT_SLOTS && !slot; i++)
		if (c->slots[i].sess && strcmp(c->slots[i].name, t->name) == 0)
			slot = &c->slots[i];
	if (!slot) {
		slot = &c->slots[c->next_slot];
		c->next_slot = (c->next_slot + 1) % SG_TLS_CLIENT_SLOTS;
		snprintf(slot->name, sizeof slot->name, "%s", t->name);
	}
	SSL_SESSION_free(slot->sess);
	/* A copy: OpenSSL marks the connection's own session object
	 * unresumable if that connection ends badly, which must not spoil
	 * the one we keep for the next connection. */
	slot->sess = SSL_SESSION_dup(sess);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

sg_tls_ctx *sg_tls_client_ctx(bool verify, const char *ca_file,
                              sg_errors *errs)
{
	ERR_clear_error();
	pthread_once(&ex_once, ex_init);
	SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
	if (!ssl) {
		cfg_error(errs, NULL, "cannot create TLS client context", NULL);
		return NULL;
	}
	SSL_CTX_set_options(ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* no SSL_MODE_RELEASE_BUFFERS: freeing and cleansing the record
	 * buffers after every record is the hot path of a big message; an
	 * idle session gives them back in sg_tls_trim (SSL_free_buffers) */
	/* OpenSSL's default suites, not SG_TLS_DEFAULT_CIPHERS: the upstream
	 * is the site's own MTA on its own network, often older than the
	 * clients (an Exchange or IIS with CBC suites only); the floor we
	 * insist on there is TLS 1.2. */
	SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
	SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_CLIENT |
	                                        SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ssl, client_new_session);

	if (verify) {
		SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		int ok = ca_file && *ca_file
		             ? SSL_CTX_load_verify_locations(ssl, ca_file, NULL)
		             : SSL_CTX_set_default_verify_paths(ssl);
		if (ok != 1) {
			cfg_error(errs, NULL, "cannot load CA file",
			          ca_file && *ca_file ? ca_file : "(system default)");
			SSL_CTX_free(ssl);
			return NULL;
		}
	}
	ERR_clear_error();
	return ctx_new(ssl, false);
}

/* ------------------------------------------------------------- engines */

static BIO *mem_bio(void)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (b)
		BIO_set_mem_eof_return(b, -1); /* empty = "retry", not EOF */
	return b;
}

static sg_tls *engine_new(sg_tls_ctx *c)
{
	ERR_clear_error();
	sg_tls *t = sg_xcalloc(1, sizeof *t);
	t->ssl = SSL_new(c->ssl);
	t->rb = mem_bio();
	t->wb = mem_bio();
	if (!t->ssl || !t->rb || !t->wb) {
		SSL_free(t->ssl);
		BIO_free(t->rb);
		BIO_free(t->wb);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_bio(t->ssl, t->rb, t->wb); /* SSL owns them from here */
	t->ctx = sg_tls_ctx_ref(c);
	return t;
}

sg_tls *sg_tls_new_server(sg_tls_ctx *c)
{
	sg_tls *t = engine_new(c);
	if (!t)
		return NULL;
	SSL_set_accept_state(t->ssl);
	if (SSL_CTX_get_num_tickets(c->ssl) > 0) {
		SSL_set_num_tickets(t->ssl, 0); /* sent by sg_tls_write */
		t->ticket_due = true;
	}
	return t;
}

static bool is_ip_literal(const char *s)
{
	unsigned char tmp[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

sg_tls *sg_tls_new_client(sg_tls_ctx *c, const char *sni,
                          const char *verify_name)
{
	pthread_once(&ex_once, ex_init);
	sg_tls *t = engine_new(c);
	if (!t)
		return NULL;
	SSL_set_connect_state(t->ssl);
	SSL_set_ex_data(t->ssl, ex_index, t);

	/* RFC 6066 3: literal IP addresses are not permitted in SNI. */
	if (sni && *sni && !is_ip_literal(sni))
		SSL_set_tlsext_host_name(t->ssl, sni);

	if (verify_name && *verify_name) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
		X509_VERIFY_PARAM_set_hostflags(vp,
		                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		int ok = is_ip_literal(verify_name)
		             ? X509_VERIFY_PARAM_set1_ip_asc(vp, verify_name)
		             : SSL_set1_host(t->ssl, verify_name);
		if (ok != 1) {
			sg_tls_free(t);
			return NULL;
		}
	}

	/* Resume the last verified session to this name, if any.  The key
	 * includes the checked name so a session verified for one host is
	 * never offered to (and accepted by) another. */
	const char *key = verify_name && *verify_name ? verify_name : sni;
	if (key && *key && strlen(key) < SG_TLS_NAME_MAX) {
		t->name = sg_xstrdup(key);
		pthread_mutex_lock(&c->lock);
		for (size_t i = 0; i < SG_TLS_CLIENT_SLOTS; i++)
			if (c->slots[i].sess && strcmp(c->slots[i].name, key) == 0) {
				SSL_set_session(t->ssl, c->slots[i].sess);
				break;
			}
		pthread_mutex_unlock(&c->lock);
	}
	ERR_clear_error();
	return t;
}

void sg_tls_free(sg_tls *t)
{
	if (!t)
		return;
	/* OpenSSL drops a session from the server cache when the connection
	 * ends without close_notify (RFC 2246 7.2.1).  RFC 5246 7.2.1 lifted
	 * that rule, and mail clients often just close the socket after QUIT;
	 * so unless a fatal error occurred the session stays resumable. */
	if (!t->failed && SSL_is_init_finished(t->ssl))
		SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(t->ssl); /* frees both BIOs */
	sg_tls_ctx_unref(t->ctx);
	free(t->name);
	free(t);
	ERR_clear_error();
}

int sg_tls_feed(sg_tls *t, const char *in, size_t len)
{
	if (len > 0)
		t->rd_dry = false;
	while (len > 0) {
		int n = len > SG_TLS_FEED_CHUNK ? SG_TLS_FEED_CHUNK : (int)len;
		if (BIO_write(t->rb, in, n) != n) {
			/* OpenSSL could not grow the memory BIO */
			snprintf(t->err, sizeof t->err, "out of memory buffering input");
			ERR_clear_error();
			return -1;
		}
		in += n;
		len -= (size_t)n;
	}
	return 0;
}

int sg_tls_handshake(sg_tls *t)
{
	ERR_clear_error();
	if (SSL_is_init_finished(t->ssl))
		return 1;
	int r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return 0;
	}
	set_error(t, "handshake", r);
	return -1;
}

/* Swap a drained memory BIO for a fresh one when its buffer grew large
 * (or always, for sg_tls_trim): a BIO_s_mem keeps its peak allocation. */
static void maybe_drop_rbio(sg_tls *t, size_t keep)
{
	BUF_MEM *bm = NULL;
	if (BIO_ctrl_pending(t->rb) != 0)
		return;
	BIO_get_mem_ptr(t->rb, &bm);
	if (!bm || bm->max <= keep)
		return;
	BIO *nb = mem_bio();
	if (!nb)
		return;
	SSL_set0_rbio(t->ssl, nb); /* frees the old one */
	t->rb = nb;
}

static void maybe_drop_wbio(sg_tls *t, size_t keep)
{
	BUF_MEM *bm = NULL;
	if (BIO_ctrl_pending(t->wb) != 0)
		return;
	BIO_get_mem_ptr(t->wb, &bm);
	if (!bm || bm->max <= keep)
		return;
	BIO *nb = mem_bio();
	if (!nb)
		return;
	SSL_set0_wbio(t->ssl, nb);
	t->wb = nb;
}

/* Plaintext OpenSSL could hand out now without more input: bytes left of
 * a decrypted record plus the ciphertext not yet taken from the memory BIO
 * (plaintext is never longer than its ciphertext).  A record only partly
 * fed is not counted: nothing of it can be read yet. */
static size_t readable(sg_tls *t)
{
	return (size_t)SSL_pending(t->ssl) + BIO_ctrl_pending(t->rb);
}

int sg_tls_read(sg_tls *t, sg_buf *out)
{
	if (t->rd_dry)
		return 0;
	int ret = 0;
	for (;;) {
		/* Stop before out->max: what does not fit stays inside OpenSSL
		 * (already decrypted or still in rbio) for the next call. */
		if (out->max && out->len >= out->max)
			break;
		size_t avail = readable(t);
		if (avail == 0) {
			/* all taken: no call whose only answer is "want read" */
			t->rd_dry = true;
			break;
		}
		size_t room = out->max ? out->max - out->len : SIZE_MAX;
		size_t want = avail < room ? avail : room;
		if (out->cap - out->len < want)
			(void)sg_buf_reserve(out, want); /* within out->max: want <= room */
		size_t chunk = out->cap - out->len;
		if (chunk > room)
			chunk = room;
		size_t n = 0;
		int r = SSL_read_ex(t->ssl, out->data + out->len, chunk, &n);
		if (r == 1) {
			out->len += n;
			continue;
		}
		/* A retry, told by the connection's state rather than by
		 * SSL_get_error, which would read the shared error queue. */
		if (SSL_want_read(t->ssl)) {
			t->rd_dry = true;
			break;
		}
		if (SSL_want_write(t->ssl))
			break;
		if (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) {
			ret = 1; /* close_notify (RFC 8446 6.1) */
			break;
		}
		set_error(t, "read", r);
		return -1;
	}
	maybe_drop_rbio(t, SG_TLS_BIO_KEEP);
	return ret;
}

int sg_tls_write(sg_tls *t, const char *p, size_t len)
{
	if (len == 0)
		return 0;
	if (!SSL_is_init_finished(t->ssl)) {
		snprintf(t->err, sizeof t->err, "write failed: handshake not done");
		return -1;
	}
	/* TLS 1.3 only (0 for 1.2, whose ticket went in the handshake); the
	 * SSL_write below writes it ahead of the data. */
	if (t->ticket_due) {
		t->ticket_due = false;
		SSL_new_session_ticket(t->ssl);
	}
	/* A memory wbio never says "retry", so one call takes everything
	 * (in as many records as needed). */
	size_t n = 0;
	int r = SSL_write_ex(t->ssl, p, len, &n);
	if (r != 1 || n != len) {
		set_error(t, "write", r);
		return -1;
	}
	return 0;
}

const char *sg_tls_out(sg_tls *t, size_t *len)
{
	char *p = NULL;
	long n = BIO_get_mem_data(t->wb, &p);
	*len = n > 0 ? (size_t)n : 0;
	return *len ? p : NULL;
}

void sg_tls_out_consume(sg_tls *t, size_t len)
{
	/* BIO_s_mem has no "skip": read into a scratch buffer.  The caller
	 * has copied the bytes already, so this is the only extra copy. */
	char scratch[SG_TLS_DRAIN_CHUNK];
	while (len > 0) {
		int n = len > sizeof scratch ? (int)sizeof scratch : (int)len;
		int r = BIO_read(t->wb, scratch, n);
		if (r <= 0)
			break;
		len -= (size_t)r;
	}
	maybe_drop_wbio(t, SG_TLS_BIO_KEEP);
}

void sg_tls_shutdown(sg_tls *t)
{
	ERR_clear_error();
	/* A close_notify in the middle of a handshake is an error in
	 * OpenSSL; there is nothing to close politely then. */
	if (SSL_is_init_finished(t->ssl))
		SSL_shutdown(t->ssl);
	ERR_clear_error();
}

const char *sg_tls_error(sg_tls *t)
{
	return t->err[0] ? t->err : "no error";
}

const char *sg_tls_version(sg_tls *t) { return SSL_get_version(t->ssl); }

const char *sg_tls_cipher(sg_tls *t)
{
	const char *c = SSL_get_cipher_name(t->ssl);
	return c ? c : "NONE";
}

unsigned sg_tls_bits(sg_tls *t)
{
	int b = SSL_get_cipher_bits(t->ssl, NULL);
	return b > 0 ? (unsigned)b : 0;
}

bool sg_tls_resumed(sg_tls *t) { return SSL_session_reused(t->ssl) == 1; }

void sg_tls_trim(sg_tls *t)
{
	maybe_drop_rbio(t, 0);
	maybe_drop_wbio(t, 0);
	/* OpenSSL's own record buffers; a no-op while data is pending in them */
	if (SSL_is_init_finished(t->ssl))
		SSL_free_buffers(t->ssl);
}
