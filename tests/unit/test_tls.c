/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_tls.c: the TLS engine (common/tls.c) over memory BIOs.
 *
 * Throwaway RSA and ECDSA certificates are made with the openssl CLI in a
 * temporary folder; server and client engines (or a plain OpenSSL client,
 * where a test needs a client our engine does not offer: TLS 1.2 only,
 * ECDSA-only signature algorithms) exchange bytes in memory.  Checked: the
 * handshake and data both ways on TLS 1.3 and 1.2, min_version, the ECDSA
 * certificate for ECDSA-only clients, resumption (tickets and the server
 * cache), host name verification, FILE:LINE errors for bad key pairs and
 * cipher lists, a clear error for plaintext on a TLS port, reads that stop
 * at the buffer's bound, close_notify, the read path (every record in one
 * call, retries untouched by stale error-queue entries, forged records), and
 * idle memory per session. */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../../common/config.h"
#include "../../common/tls.h"
#include "check.h"

/* Pump rounds before a handshake counts as stuck (each round moves all
 * pending bytes both ways; a TLS handshake needs 2-3). */
#define MAX_ROUNDS 20
#define PATH_MAX_T 512

#define DIR_MAX 64
static char dir[DIR_MAX];

static void path(char *out, const char *name)
{
	snprintf(out, PATH_MAX_T, "%s/%s", dir, name);
}

/* Copy tmpl to out with every "@D" replaced by the temp folder. */
static void subst(char *out, size_t len, const char *tmpl)
{
	size_t o = 0;
	for (const char *p = tmpl; *p && o + DIR_MAX + 1 < len; p++) {
		if (p[0] == '@' && p[1] == 'D') {
			o += (size_t)snprintf(out + o, len - o, "%s", dir);
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	return system(cmd);
}

static int make_certs(void)
{
	/* Self-signed, so each is its own CA for the verify tests. */
	return sh("cd %s && "
	          "openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key "
	          "-out rsa.crt -days 2 -subj /CN=mail.example.test "
	          "-addext subjectAltName=DNS:mail.example.test 2>/dev/null && "
	          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	          "-nodes -keyout ec.key -out ec.crt -days 2 "
	          "-subj /CN=mail.example.test "
	          "-addext subjectAltName=DNS:mail.example.test 2>/dev/null",
	          dir);
}

/* Write a config whose [tls] section is `tls` (lines 9 on) and load it. */
static sg_config *load_conf(const char *name, const char *tls,
                            sg_errors *errs)
{
	char p[PATH_MAX_T];
	path(p, name);
	FILE *f = fopen(p, "w");
	if (!f)
		return NULL;
	fprintf(f, "[listener test]\n"             /* 1 */
	           "address = 127.0.0.1:40587\n"   /* 2 */
	           "tls = starttls\n"              /* 3 */
	           "[upstream]\n"                  /* 4 */
	           "server = 127.0.0.1:40025\n"    /* 5 */
	           "[sasl]\n"                      /* 6 */
	           "mech_list = PLAIN\n"           /* 7 */
	           "[tls]\n"                       /* 8 */
	           "%s",                           /* 9.. */
	        tls);
	fclose(f);
	return sg_config_load(p, errs);
}

static sg_tls_ctx *server_ctx(const char *extra, sg_errors *errs)
{
	char tls[4096];
	snprintf(tls, sizeof tls,
	         "certificate = %s/rsa.crt\nkey = %s/rsa.key\n"
	         "ecdsa_certificate = %s/ec.crt\necdsa_key = %s/ec.key\n%s",
	         dir, dir, dir, dir, extra);
	sg_config *cfg = load_conf("server.conf", tls, errs);
	if (!cfg)
		return NULL;
	sg_tls_ctx *c = sg_tls_server_ctx(cfg, errs);
	sg_config_unref(cfg);
	return c;
}

/* --------------------------------------------------------------- peers */

/* One end of a connection: our engine, or a plain OpenSSL client. */
struct peer {
	sg_tls *t;
	SSL *ssl;
	BIO *rb, *wb;
	int hs; /* last handshake result */
};

static struct peer raw_client(SSL_CTX *ctx)
{
	struct peer p = {0};
	p.ssl = SSL_new(ctx);
	p.rb = BIO_new(BIO_s_mem());
	p.wb = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(p.rb, -1);
	SSL_set_bio(p.ssl, p.rb, p.wb);
	SSL_set_connect_state(p.ssl);
	return p;
}

static void peer_free(struct peer *p)
{
	sg_tls_free(p->t);
	/* like a client that closed properly: keep its session resumable */
	if (p->ssl && SSL_is_init_finished(p->ssl))
		SSL_set_shutdown(p->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(p->ssl);
	memset(p, 0, sizeof *p);
}

/* Move every pending ciphertext byte from a to b. */
static void transfer(struct peer *a, struct peer *b)
{
	char buf[16384];
	for (int guard = 0; guard < 1000; guard++) {
		size_t n = 0;
		const char *p = NULL;
		if (a->t) {
			p = sg_tls_out(a->t, &n);
		} else {
			long l = BIO_read(a->wb, buf, sizeof buf);
			n = l > 0 ? (size_t)l : 0;
			p = buf;
		}
		if (n == 0)
			return;
		if (b->t)
			ASSERT_EQ(sg_tls_feed(b->t, p, n), 0, "feed");
		else
			BIO_write(b->rb, p, (int)n);
		if (a->t)
			sg_tls_out_consume(a->t, n);
	}
}

static int step(struct peer *p)
{
	if (p->t)
		return sg_tls_handshake(p->t);
	int r = SSL_do_handshake(p->ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(p->ssl, r);
	return e == SSL_ERROR_WANT_READ ? 0 : -1;
}

/* Run both handshakes to completion; 1 when both finished. */
static int handshake(struct peer *c, struct peer *s)
{
	c->hs = s->hs = 0;
	for (int i = 0; i < MAX_ROUNDS; i++) {
		if (c->hs == 0)
			c->hs = step(c);
		transfer(c, s);
		if (s->hs == 0)
			s->hs = step(s);
		transfer(s, c);
		if (c->hs < 0 || s->hs < 0)
			return 0;
		if (c->hs == 1 && s->hs == 1)
			return 1;
	}
	return 0;
}

/* Send text from a (engine) to b (engine) and read it back there. */
static int exchange(sg_tls *a, sg_tls *b, const char *msg)
{
	struct peer pa = {.t = a}, pb = {.t = b};
	if (sg_tls_write(a, msg, strlen(msg)) != 0)
		return -1;
	transfer(&pa, &pb);
	sg_buf got;
	sg_buf_init(&got, 65536);
	int r = sg_tls_read(b, &got);
	int ok = r == 0 && got.len == strlen(msg) &&
	         memcmp(got.data, msg, got.len) == 0;
	sg_buf_free(&got);
	return ok ? 0 : -1;
}

/* -------------------------------------------------------------- tests */

static void test_handshake_tls13(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, "mail.example.test", NULL)};
	ASSERT_NOT_NULL(s.t, "engines");
	ASSERT_NOT_NULL(c.t, "engines");
	ASSERT_EQ(handshake(&c, &s), 1, "TLS 1.3 handshake: client %s, server %s",
	          sg_tls_error(c.t), sg_tls_error(s.t));
	ASSERT_STR_EQ(sg_tls_version(s.t), "TLSv1.3");
	ASSERT(!strncmp(sg_tls_cipher(s.t), "TLS_", 4), "cipher %s",
	       sg_tls_cipher(s.t));
	ASSERT_GE(sg_tls_bits(s.t), 128);
	ASSERT(!sg_tls_resumed(s.t), "first connection is not resumed");
	ASSERT_EQ(exchange(s.t, c.t, "220 mail.example.test ESMTP\r\n"), 0,
	          "server -> client");
	ASSERT_EQ(exchange(c.t, s.t, "EHLO client.example\r\n"), 0,
	          "client -> server");

	/* close_notify: the server reads "peer closed" (1). */
	sg_tls_shutdown(c.t);
	transfer(&c, &s);
	sg_buf b;
	sg_buf_init(&b, 1024);
	ASSERT_EQ(sg_tls_read(s.t, &b), 1, "close_notify gives 1");
	sg_buf_free(&b);
	peer_free(&s);
	peer_free(&c);
}

/* sg_tls_read stops at out->max, leaving the rest for the next call. */
static void test_bounded_read(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, NULL, NULL)};
	ASSERT_EQ(handshake(&c, &s), 1, "handshake");
	enum { TOTAL = 40000, MAX = 1000 };
	static char msg[TOTAL];
	for (size_t i = 0; i < TOTAL; i++)
		msg[i] = (char)('a' + i % 26);
	ASSERT_EQ(sg_tls_write(c.t, msg, TOTAL), 0, "write 40000");
	transfer(&c, &s);
	sg_buf got, all;
	sg_buf_init(&got, MAX);
	sg_buf_init(&all, 0);
	int rounds = 0;
	while (all.len < TOTAL && rounds++ < 2 * TOTAL / MAX) {
		int r = sg_tls_read(s.t, &got);
		ASSERT_EQ(r, 0);
		ASSERT_LE(got.len, MAX, "read past max");
		ASSERT_GT(got.len, 0, "no progress");
		if (got.len == 0 || r != 0)
			break;
		sg_buf_append(&all, got.data, got.len);
		sg_buf_reset(&got);
	}
	if (ASSERT_EQ(all.len, TOTAL))
		ASSERT_MEM_EQ(all.data, msg, TOTAL, "in order");
	sg_buf_free(&got);
	sg_buf_free(&all);
	peer_free(&s);
	peer_free(&c);
}

/* The read path as the session uses it: one call takes every
 * record fed so far; a call with nothing new fed returns at once; a record
 * fed in two halves is read once complete; a stale entry another library
 * left on the thread's error queue turns no retry into a failure (the hot
 * paths do not clear the queue); a forged record still fails, with a
 * reason, and leaves the queue empty. */
static void test_read_path(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, NULL, NULL)};
	ASSERT_EQ(handshake(&c, &s), 1, "handshake");
	static const char *const cmds[] = {"MAIL FROM:<a@example.test>\r\n",
	                                   "RCPT TO:<b@example.test>\r\n",
	                                   "DATA\r\n"};
	char all[128] = "";
	for (size_t i = 0; i < 3; i++) { /* three records, as a client pipelines */
		ASSERT_EQ(sg_tls_write(c.t, cmds[i], strlen(cmds[i])), 0, "write");
		strcat(all, cmds[i]);
	}
	transfer(&c, &s);
	sg_buf got;
	sg_buf_init(&got, 4096);
	ASSERT_EQ(sg_tls_read(s.t, &got), 0, "read");
	if (ASSERT_EQ(got.len, strlen(all), "three records in one read"))
		ASSERT_MEM_EQ(got.data, all, got.len);
	ASSERT_EQ(sg_tls_read(s.t, &got), 0, "nothing new fed: nothing read");
	ASSERT_EQ(got.len, strlen(all), "nothing new fed: nothing read");

	/* a stale error of someone else's on this thread's queue */
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	sg_buf_reset(&got);
	ASSERT_EQ(sg_tls_read(s.t, &got), 0,
	          "stale error: still no data and no failure");
	ASSERT_EQ(got.len, 0, "stale error: still no data and no failure");
	const char *msg = "250 2.0.0 Ok\r\n";
	ASSERT_EQ(sg_tls_write(c.t, msg, strlen(msg)), 0, "write");
	size_t n = 0;
	const char *p = sg_tls_out(c.t, &n);
	ASSERT_NOT_NULL(p, "ciphertext");
	ASSERT_GT(n, 10, "ciphertext");
	if (p && n > 10) {
		ASSERT_EQ(sg_tls_feed(s.t, p, n / 2), 0, "feed half");
		ASSERT_EQ(sg_tls_read(s.t, &got), 0,
		          "half a record: retry, not an error (%s)", sg_tls_error(s.t));
		ASSERT_EQ(got.len, 0, "half a record: retry, not an error (%s)",
		          sg_tls_error(s.t));
		ASSERT_EQ(sg_tls_feed(s.t, p + n / 2, n - n / 2), 0, "feed rest");
		sg_tls_out_consume(c.t, n);
		ASSERT_EQ(sg_tls_read(s.t, &got), 0, "read: %s", sg_tls_error(s.t));
		if (ASSERT_EQ(got.len, strlen(msg), "whole record read once complete"))
			ASSERT_MEM_EQ(got.data, msg, got.len);
	}
	ASSERT_EQ(exchange(s.t, c.t, "354 go ahead\r\n"), 0,
	          "write with a stale error queued");
	ERR_clear_error();

	/* a forged record: authentication fails, the session is told why */
	ASSERT_EQ(sg_tls_write(c.t, msg, strlen(msg)), 0, "write");
	p = sg_tls_out(c.t, &n);
	if (p && n > 0) {
		char bad[256];
		size_t k = n < sizeof bad ? n : sizeof bad;
		memcpy(bad, p, k);
		bad[k - 1] ^= 0x55; /* last octet of the AEAD tag */
		sg_tls_out_consume(c.t, n);
		ASSERT_EQ(sg_tls_feed(s.t, bad, k), 0, "feed forged");
		sg_buf_reset(&got);
		ASSERT_EQ(sg_tls_read(s.t, &got), -1, "forged record refused");
		ASSERT_EQ(got.len, 0, "forged record refused");
		ASSERT_NOT_NULL(strstr(sg_tls_error(s.t), "read failed"), "error: %s",
		                sg_tls_error(s.t));
		ASSERT_EQ(ERR_peek_error(), 0, "error queue left empty");
	}
	sg_buf_free(&got);
	peer_free(&s);
	peer_free(&c);
}

static void test_tls12_and_min_version(sg_tls_ctx *sc)
{
	SSL_CTX *c12 = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_max_proto_version(c12, TLS1_2_VERSION);
	SSL_CTX_set_options(c12, SSL_OP_NO_TICKET);

	/* TLS 1.2 works against min_version = TLSv1.2 (the default). */
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = raw_client(c12);
	ASSERT_EQ(handshake(&c, &s), 1, "TLS 1.2: %s", sg_tls_error(s.t));
	ASSERT_STR_EQ(sg_tls_version(s.t), "TLSv1.2");
	ASSERT(strstr(sg_tls_cipher(s.t), "GCM") ||
	           strstr(sg_tls_cipher(s.t), "CHACHA"),
	       "AEAD cipher: %s", sg_tls_cipher(s.t));
	SSL_SESSION *sess = SSL_get1_session(c.ssl);
	peer_free(&s);
	peer_free(&c);

	/* Resumption from the server-side cache (no tickets on the client). */
	s.t = sg_tls_new_server(sc);
	c = raw_client(c12);
	SSL_set_session(c.ssl, sess);
	ASSERT_EQ(handshake(&c, &s), 1, "TLS 1.2 resumption handshake");
	ASSERT(sg_tls_resumed(s.t), "TLS 1.2 session id resumed from the cache");
	SSL_SESSION_free(sess);
	peer_free(&s);
	peer_free(&c);

	/* min_version = TLSv1.3 refuses that client, with a reason. */
	sg_errors errs = {0};
	sg_tls_ctx *s13 = server_ctx("min_version = TLSv1.3\n", &errs);
	ASSERT_NOT_NULL(s13, "ctx 1.3: %s", errs.n ? errs.msg[0] : "");
	if (s13) {
		s.t = sg_tls_new_server(s13);
		c = raw_client(c12);
		ASSERT_EQ(handshake(&c, &s), 0, "TLS 1.2 client vs TLSv1.3 minimum");
		ASSERT_EQ(s.hs, -1, "error: %s", sg_tls_error(s.t));
		ASSERT(strstr(sg_tls_error(s.t), "protocol"), "error: %s",
		       sg_tls_error(s.t));
		peer_free(&s);
		peer_free(&c);
		sg_tls_ctx_unref(s13);
	}
	sg_errors_free(&errs);
	SSL_CTX_free(c12);
}

static const char *peer_key_type(SSL *ssl)
{
	X509 *x = SSL_get1_peer_certificate(ssl);
	EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
	const char *t = !k ? "none" : EVP_PKEY_is_a(k, "EC") ? "EC"
	                        : EVP_PKEY_is_a(k, "RSA") ? "RSA"
	                                                  : "other";
	X509_free(x);
	return t;
}

static void test_ecdsa_selection(sg_tls_ctx *sc)
{
	static const struct {
		const char *sigalgs;
		int maxv;
		const char *want;
	} cases[] = {
	    {"ECDSA+SHA256:ECDSA+SHA384", TLS1_3_VERSION, "EC"},
	    {"RSA-PSS+SHA256:RSA+SHA256", TLS1_3_VERSION, "RSA"},
	    {"ECDSA+SHA256", TLS1_2_VERSION, "EC"},
	    {"RSA+SHA256", TLS1_2_VERSION, "RSA"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		SSL_CTX *cx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_max_proto_version(cx, cases[i].maxv);
		SSL_CTX_set1_sigalgs_list(cx, cases[i].sigalgs);
		struct peer s = {.t = sg_tls_new_server(sc)};
		struct peer c = raw_client(cx);
		ASSERT_EQ(handshake(&c, &s), 1, "%s: %s", cases[i].sigalgs,
		          sg_tls_error(s.t));
		const char *got = peer_key_type(c.ssl);
		ASSERT_STR_EQ(got, cases[i].want, "sigalgs %s", cases[i].sigalgs);
		peer_free(&s);
		peer_free(&c);
		SSL_CTX_free(cx);
	}
}

/* Two connections from our client engine: the second resumes (TLS 1.3
 * ticket), unless session_tickets = no. */
static int second_resumes(sg_tls_ctx *sc, sg_tls_ctx *cc, const char *name)
{
	int resumed = -1;
	for (int round = 0; round < 2; round++) {
		struct peer s = {.t = sg_tls_new_server(sc)};
		struct peer c = {.t = sg_tls_new_client(cc, name, NULL)};
		ASSERT_EQ(handshake(&c, &s), 1, "handshake %d", round);
		/* TLS 1.3 tickets arrive after the handshake: the client
		 * processes them when it reads. */
		ASSERT_EQ(exchange(s.t, c.t, "220 ready\r\n"), 0, "data %d", round);
		if (round == 1)
			resumed = sg_tls_resumed(s.t) && sg_tls_resumed(c.t);
		peer_free(&s);
		peer_free(&c);
	}
	return resumed;
}

static int tickets_seen;

static int count_ticket(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	(void)sess;
	tickets_seen++;
	return 0;
}

/* TLS 1.3: the server sends one ticket, and only with its first reply
 * (the answer to EHLO), so both leave in one write. */
static void test_ticket_with_first_reply(sg_tls_ctx *sc)
{
	SSL_CTX *cx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(cx, SSL_SESS_CACHE_CLIENT |
	                                       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cx, count_ticket);
	tickets_seen = 0;
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = raw_client(cx);
	ASSERT_EQ(handshake(&c, &s), 1, "handshake");
	char buf[256];
	ASSERT_LE(SSL_read(c.ssl, buf, sizeof buf), 0,
	          "no ticket flight of its own after the handshake");
	ASSERT_EQ(tickets_seen, 0,
	          "no ticket flight of its own after the handshake");
	ASSERT_EQ(sg_tls_write(s.t, "250 ok\r\n", 8), 0, "reply");
	size_t n = 0;
	const char *p = sg_tls_out(s.t, &n);
	BIO_write(c.rb, p, (int)n);
	sg_tls_out_consume(s.t, n);
	ASSERT_NULL(sg_tls_out(s.t, &n), "one buffer to send");
	ASSERT_EQ(n, 0, "one buffer to send");
	int r = SSL_read(c.ssl, buf, sizeof buf);
	if (ASSERT_EQ(r, 8, "reply read"))
		ASSERT_MEM_EQ(buf, "250 ok\r\n", 8);
	ASSERT_EQ(tickets_seen, 1, "one ticket, with the reply");
	peer_free(&s);
	peer_free(&c);
	SSL_CTX_free(cx);
}

static void test_resumption(sg_tls_ctx *sc)
{
	sg_errors errs = {0};
	sg_tls_ctx *cc = sg_tls_client_ctx(false, NULL, &errs);
	ASSERT_EQ(second_resumes(sc, cc, "mail.example.test"), 1,
	          "second connection resumed with tickets on");
	/* A session is only offered to the name it was made for. */
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, "other.example.test", NULL)};
	ASSERT_EQ(handshake(&c, &s), 1, "no resumption for another name");
	ASSERT(!sg_tls_resumed(s.t), "no resumption for another name");
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	sg_tls_ctx *noticket = server_ctx("session_tickets = no\n", &errs);
	ASSERT_NOT_NULL(noticket, "ctx tickets=no");
	cc = sg_tls_client_ctx(false, NULL, &errs);
	if (noticket)
		ASSERT_EQ(second_resumes(noticket, cc, "mail.example.test"), 0,
		          "no TLS 1.3 resumption with session_tickets = no");
	sg_tls_ctx_unref(cc);
	sg_tls_ctx_unref(noticket);
	sg_errors_free(&errs);
}

static void test_verify(sg_tls_ctx *sc)
{
	sg_errors errs = {0};
	/* Trust both of the server's self-signed certificates (the client may
	 * get either, depending on its signature algorithms). */
	char both[PATH_MAX_T];
	path(both, "both.crt");
	ASSERT_EQ(sh("cat %s/rsa.crt %s/ec.crt > %s", dir, dir, both), 0, "cat");
	sg_tls_ctx *cc = sg_tls_client_ctx(true, both, &errs);
	ASSERT_NOT_NULL(cc, "verifying client ctx");

	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, "mail.example.test",
	                                        "mail.example.test")};
	ASSERT_EQ(handshake(&c, &s), 1, "right name verifies: %s",
	          sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);

	s.t = sg_tls_new_server(sc);
	c.t = sg_tls_new_client(cc, "wrong.example.test", "wrong.example.test");
	ASSERT_EQ(handshake(&c, &s), 0, "wrong name refused");
	ASSERT_EQ(c.hs, -1, "wrong name refused");
	ASSERT(strstr(sg_tls_error(c.t), "certificate verify failed"), "error: %s",
	       sg_tls_error(c.t));
	ASSERT(strstr(sg_tls_error(c.t), "hostname mismatch"), "error: %s",
	       sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	/* An untrusted (self-signed, not in the CA file) chain. */
	char other[PATH_MAX_T];
	path(other, "other.crt");
	ASSERT_EQ(
	    sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
	       "ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt "
	       "-days 1 -subj /CN=x 2>/dev/null",
	       dir),
	    0, "other cert");
	cc = sg_tls_client_ctx(true, other, &errs);
	s.t = sg_tls_new_server(sc);
	c.t = sg_tls_new_client(cc, "mail.example.test", "mail.example.test");
	ASSERT_EQ(handshake(&c, &s), 0, "untrusted chain refused");
	ASSERT_EQ(c.hs, -1, "untrusted chain refused");
	ASSERT(strstr(sg_tls_error(c.t), "certificate verify failed"), "error: %s",
	       sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	/* A CA file that does not exist is a context error. */
	cc = sg_tls_client_ctx(true, "/nonexistent/ca.pem", &errs);
	ASSERT_NULL(cc, "missing CA file");
	if (ASSERT_EQ(errs.n, 1, "missing CA file"))
		ASSERT(strstr(errs.msg[0], "/nonexistent/ca.pem"), "error: %s",
		       errs.msg[0]);
	sg_tls_ctx_unref(cc);
	sg_errors_free(&errs);
}

/* Config problems come back as FILE:LINE: message (the line of the key). */
static void test_config_errors(void)
{
	char conf[PATH_MAX_T], tls[4096], want[PATH_MAX_T + 32];
	path(conf, "bad.conf");
	struct {
		const char *what;
		const char *tmpl; /* @D = the temp folder */
		int line;
		const char *msg;
	} cases[] = {
	    {"key of another pair",
	     "certificate = @D/rsa.crt\nkey = @D/ec.key\n", 10,
	     "does not match certificate"},
	    {"missing certificate",
	     "certificate = @D/none.crt\nkey = @D/rsa.key\n", 9,
	     "cannot load certificate chain"},
	    {"missing key", "certificate = @D/rsa.crt\nkey = @D/none.key\n",
	     10, "cannot load private key"},
	    {"bad cipher list",
	     "certificate = @D/rsa.crt\nkey = @D/rsa.key\n"
	     "ciphers = NOSUCHCIPHER\n",
	     11, "bad cipher list"},
	    {"RSA certificate as ecdsa_certificate",
	     "certificate = @D/rsa.crt\nkey = @D/rsa.key\n"
	     "ecdsa_certificate = @D/rsa.crt\necdsa_key = @D/rsa.key\n",
	     11, "not an ECDSA certificate"},
	    {"two ECDSA pairs",
	     "certificate = @D/ec.crt\nkey = @D/ec.key\n"
	     "ecdsa_certificate = @D/ec.crt\necdsa_key = @D/ec.key\n",
	     11, "is ECDSA already"},
	    {"ECDSA key mismatch",
	     "certificate = @D/rsa.crt\nkey = @D/rsa.key\n"
	     "ecdsa_certificate = @D/ec.crt\necdsa_key = @D/other.key\n",
	     12, "does not match certificate"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		subst(tls, sizeof tls, cases[i].tmpl);
		sg_errors errs = {0};
		sg_config *cfg = load_conf("bad.conf", tls, &errs);
		ASSERT_NOT_NULL(cfg, "%s: config loads: %s", cases[i].what,
		                errs.n ? errs.msg[0] : "");
		if (!cfg) {
			sg_errors_free(&errs);
			continue;
		}
		sg_tls_ctx *c = sg_tls_server_ctx(cfg, &errs);
		snprintf(want, sizeof want, "%s:%d: ", conf, cases[i].line);
		ASSERT_NULL(c, "%s: context refused", cases[i].what);
		if (ASSERT_EQ(errs.n, 1, "%s: first error: %s", cases[i].what,
		              errs.n ? errs.msg[0] : "none")) {
			ASSERT(!strncmp(errs.msg[0], want, strlen(want)),
			       "%s: want \"%s...\", got \"%s\"", cases[i].what, want,
			       errs.msg[0]);
			ASSERT(strstr(errs.msg[0], cases[i].msg), "%s: got \"%s\"",
			       cases[i].what, errs.msg[0]);
		}
		sg_tls_ctx_unref(c);
		sg_config_unref(cfg);
		sg_errors_free(&errs);
	}
}

static void test_plaintext(sg_tls_ctx *sc)
{
	sg_tls *s = sg_tls_new_server(sc);
	const char *ehlo = "EHLO client.example\r\n";
	ASSERT_EQ(sg_tls_feed(s, ehlo, strlen(ehlo)), 0, "feed");
	ASSERT_EQ(sg_tls_handshake(s), -1, "plaintext fails the handshake");
	const char *e = sg_tls_error(s);
	ASSERT(strstr(e, "handshake failed"), "error: %s", e);
	ASSERT(strstr(e, "wrong version number"), "error: %s", e);
	ASSERT(strstr(e, "plaintext on a TLS port"), "error: %s", e);
	/* The error queue is left empty for the next session on the thread. */
	ASSERT_EQ(ERR_peek_error(), 0, "OpenSSL error queue cleared");
	sg_tls_free(s);

	/* Garbage after a partial record: still a clean failure, no crash. */
	s = sg_tls_new_server(sc);
	ASSERT_EQ(sg_tls_feed(s, "\x16\x03\x01\x00\x05hello", 10), 0, "feed");
	ASSERT_EQ(sg_tls_handshake(s), -1, "bogus ClientHello refused: %s",
	          sg_tls_error(s));
	sg_tls_free(s);
}

/* Idle sessions should cost little heap: SSL_MODE_RELEASE_BUFFERS and
 * trimmed memory BIOs leave mostly the SSL object. */
static void test_idle_memory(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
#if defined(__SANITIZE_ADDRESS__)
	(void)sc;
	(void)cc;
	printf("idle memory: skipped under AddressSanitizer\n");
#else
	enum { N = 50 };
	static struct peer s[N], c[N];
	for (int i = 0; i < N; i++)
		c[i].t = sg_tls_new_client(cc, NULL, NULL);
	struct mallinfo2 before = mallinfo2();
	for (int i = 0; i < N; i++) {
		s[i].t = sg_tls_new_server(sc);
		handshake(&c[i], &s[i]);
		exchange(c[i].t, s[i].t, "EHLO x\r\n");
		exchange(s[i].t, c[i].t, "250 ok\r\n");
		sg_tls_trim(s[i].t);
	}
	/* free the clients so only server state is measured */
	for (int i = 0; i < N; i++)
		peer_free(&c[i]);
	struct mallinfo2 after = mallinfo2();
	long per = ((long)after.uordblks - (long)before.uordblks) / N;
	printf("idle memory: %ld bytes of heap per idle server session\n", per);
	ASSERT_GT(per, 0, "idle session heap");
	ASSERT_LT(per, 19 * 1024, "idle session heap");
	for (int i = 0; i < N; i++)
		peer_free(&s[i]);
#endif
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/sg_test_tls.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (make_certs() != 0) {
		fprintf(stderr, "openssl CLI failed to make certificates\n");
		sh("rm -rf %s", dir);
		return 1;
	}
	sg_errors errs = {0};
	sg_tls_ctx *sc = server_ctx("", &errs);
	sg_tls_ctx *cc = sg_tls_client_ctx(false, NULL, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "setup: %s\n", errs.msg[i]);
	ASSERT_NOT_NULL(sc, "contexts");
	ASSERT_NOT_NULL(cc, "contexts");
	ASSERT_EQ(errs.n, 0, "contexts");
	if (sc && cc) {
		test_handshake_tls13(sc, cc);
		test_bounded_read(sc, cc);
		test_read_path(sc, cc);
		test_tls12_and_min_version(sc);
		test_ecdsa_selection(sc);
		test_resumption(sc);
		test_ticket_with_first_reply(sc);
		test_verify(sc);
		test_config_errors();
		test_plaintext(sc);
		test_idle_memory(sc, cc);
	}
	sg_tls_ctx_unref(sc);
	sg_tls_ctx_unref(cc);
	sg_errors_free(&errs);
	sh("rm -rf %s", dir);
	return CHECK_SUMMARY();
}
