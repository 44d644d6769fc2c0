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

/* Pump rounds before a handshake counts as stuck (each round moves all
 * pending bytes both ways; a TLS handshake needs 2-3). */
#define MAX_ROUNDS 20
#define PATH_MAX_T 512

static int failures;
static int checks;
#define DIR_MAX 64
static char dir[DIR_MAX];

#define CHECK(cond, ...)                                                       \
	do {                                                                       \
		checks++;                                                              \
		if (!(cond)) {                                                         \
			failures++;                                                        \
			fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);    \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
		}                                                                      \
	} while (0)

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
			CHECK(sg_tls_feed(b->t, p, n) == 0, "feed");
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
	CHECK(s.t && c.t, "engines");
	CHECK(handshake(&c, &s) == 1, "TLS 1.3 handshake: client %s, server %s",
	      sg_tls_error(c.t), sg_tls_error(s.t));
	CHECK(strcmp(sg_tls_version(s.t), "TLSv1.3") == 0, "version %s",
	      sg_tls_version(s.t));
	CHECK(strncmp(sg_tls_cipher(s.t), "TLS_", 4) == 0, "cipher %s",
	      sg_tls_cipher(s.t));
	CHECK(sg_tls_bits(s.t) >= 128, "bits %u", sg_tls_bits(s.t));
	CHECK(!sg_tls_resumed(s.t), "first connection is not resumed");
	CHECK(exchange(s.t, c.t, "220 mail.example.test ESMTP\r\n") == 0,
	      "server -> client");
	CHECK(exchange(c.t, s.t, "EHLO client.example\r\n") == 0,
	      "client -> server");

	/* close_notify: the server reads "peer closed" (1). */
	sg_tls_shutdown(c.t);
	transfer(&c, &s);
	sg_buf b;
	sg_buf_init(&b, 1024);
	CHECK(sg_tls_read(s.t, &b) == 1, "close_notify gives 1");
	sg_buf_free(&b);
	peer_free(&s);
	peer_free(&c);
}

/* sg_tls_read stops at out->max, leaving the rest for the next call. */
static void test_bounded_read(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, NULL, NULL)};
	CHECK(handshake(&c, &s) == 1, "handshake");
	enum { TOTAL = 40000, MAX = 1000 };
	static char msg[TOTAL];
	for (size_t i = 0; i < TOTAL; i++)
		msg[i] = (char)('a' + i % 26);
	CHECK(sg_tls_write(c.t, msg, TOTAL) == 0, "write 40000");
	transfer(&c, &s);
	sg_buf got, all;
	sg_buf_init(&got, MAX);
	sg_buf_init(&all, 0);
	int rounds = 0;
	while (all.len < TOTAL && rounds++ < 2 * TOTAL / MAX) {
		int r = sg_tls_read(s.t, &got);
		CHECK(r == 0, "read %d", r);
		CHECK(got.len <= MAX, "read past max: %zu", got.len);
		CHECK(got.len > 0, "no progress");
		if (got.len == 0 || r != 0)
			break;
		sg_buf_append(&all, got.data, got.len);
		sg_buf_reset(&got);
	}
	CHECK(all.len == TOTAL && memcmp(all.data, msg, TOTAL) == 0,
	      "got %zu of %d in order", all.len, TOTAL);
	sg_buf_free(&got);
	sg_buf_free(&all);
	peer_free(&s);
	peer_free(&c);
}

/* The read path as the session uses it (issue 9): one call takes every
 * record fed so far; a call with nothing new fed returns at once; a record
 * fed in two halves is read once complete; a stale entry another library
 * left on the thread's error queue turns no retry into a failure (the hot
 * paths no longer clear the queue); a forged record still fails, with a
 * reason, and leaves the queue empty. */
static void test_read_path(sg_tls_ctx *sc, sg_tls_ctx *cc)
{
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, NULL, NULL)};
	CHECK(handshake(&c, &s) == 1, "handshake");
	static const char *const cmds[] = {"MAIL FROM:<a@example.test>\r\n",
	                                   "RCPT TO:<b@example.test>\r\n",
	                                   "DATA\r\n"};
	char all[128] = "";
	for (size_t i = 0; i < 3; i++) { /* three records, as a client pipelines */
		CHECK(sg_tls_write(c.t, cmds[i], strlen(cmds[i])) == 0, "write");
		strcat(all, cmds[i]);
	}
	transfer(&c, &s);
	sg_buf got;
	sg_buf_init(&got, 4096);
	CHECK(sg_tls_read(s.t, &got) == 0, "read");
	CHECK(got.len == strlen(all) && memcmp(got.data, all, got.len) == 0,
	      "three records in one read: got %zu of %zu", got.len, strlen(all));
	CHECK(sg_tls_read(s.t, &got) == 0 && got.len == strlen(all),
	      "nothing new fed: nothing read");

	/* a stale error of someone else's on this thread's queue */
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	sg_buf_reset(&got);
	CHECK(sg_tls_read(s.t, &got) == 0 && got.len == 0,
	      "stale error: still no data and no failure");
	const char *msg = "250 2.0.0 Ok\r\n";
	CHECK(sg_tls_write(c.t, msg, strlen(msg)) == 0, "write");
	size_t n = 0;
	const char *p = sg_tls_out(c.t, &n);
	CHECK(p && n > 10, "ciphertext");
	if (p && n > 10) {
		CHECK(sg_tls_feed(s.t, p, n / 2) == 0, "feed half");
		CHECK(sg_tls_read(s.t, &got) == 0 && got.len == 0,
		      "half a record: retry, not an error (%s)", sg_tls_error(s.t));
		CHECK(sg_tls_feed(s.t, p + n / 2, n - n / 2) == 0, "feed rest");
		sg_tls_out_consume(c.t, n);
		CHECK(sg_tls_read(s.t, &got) == 0, "read: %s", sg_tls_error(s.t));
		CHECK(got.len == strlen(msg) && memcmp(got.data, msg, got.len) == 0,
		      "whole record read once complete (%zu octets)", got.len);
	}
	CHECK(exchange(s.t, c.t, "354 go ahead\r\n") == 0,
	      "write with a stale error queued");
	ERR_clear_error();

	/* a forged record: authentication fails, the session is told why */
	CHECK(sg_tls_write(c.t, msg, strlen(msg)) == 0, "write");
	p = sg_tls_out(c.t, &n);
	if (p && n > 0) {
		char bad[256];
		size_t k = n < sizeof bad ? n : sizeof bad;
		memcpy(bad, p, k);
		bad[k - 1] ^= 0x55; /* last octet of the AEAD tag */
		sg_tls_out_consume(c.t, n);
		CHECK(sg_tls_feed(s.t, bad, k) == 0, "feed forged");
		sg_buf_reset(&got);
		CHECK(sg_tls_read(s.t, &got) == -1 && got.len == 0,
		      "forged record refused");
		CHECK(strstr(sg_tls_error(s.t), "read failed") != NULL, "error: %s",
		      sg_tls_error(s.t));
		CHECK(ERR_peek_error() == 0, "error queue left empty");
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
	CHECK(handshake(&c, &s) == 1, "TLS 1.2: %s", sg_tls_error(s.t));
	CHECK(strcmp(sg_tls_version(s.t), "TLSv1.2") == 0, "version %s",
	      sg_tls_version(s.t));
	CHECK(strstr(sg_tls_cipher(s.t), "GCM") ||
	          strstr(sg_tls_cipher(s.t), "CHACHA"),
	      "AEAD cipher: %s", sg_tls_cipher(s.t));
	SSL_SESSION *sess = SSL_get1_session(c.ssl);
	peer_free(&s);
	peer_free(&c);

	/* Resumption from the server-side cache (no tickets on the client). */
	s.t = sg_tls_new_server(sc);
	c = raw_client(c12);
	SSL_set_session(c.ssl, sess);
	CHECK(handshake(&c, &s) == 1, "TLS 1.2 resumption handshake");
	CHECK(sg_tls_resumed(s.t), "TLS 1.2 session id resumed from the cache");
	SSL_SESSION_free(sess);
	peer_free(&s);
	peer_free(&c);

	/* min_version = TLSv1.3 refuses that client, with a reason. */
	sg_errors errs = {0};
	sg_tls_ctx *s13 = server_ctx("min_version = TLSv1.3\n", &errs);
	CHECK(s13, "ctx 1.3: %s", errs.n ? errs.msg[0] : "");
	if (s13) {
		s.t = sg_tls_new_server(s13);
		c = raw_client(c12);
		CHECK(handshake(&c, &s) == 0, "TLS 1.2 client vs TLSv1.3 minimum");
		CHECK(s.hs == -1 && strstr(sg_tls_error(s.t), "protocol"),
		      "error: %s", sg_tls_error(s.t));
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
		CHECK(handshake(&c, &s) == 1, "%s: %s", cases[i].sigalgs,
		      sg_tls_error(s.t));
		const char *got = peer_key_type(c.ssl);
		CHECK(strcmp(got, cases[i].want) == 0, "sigalgs %s: got %s cert",
		      cases[i].sigalgs, got);
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
		CHECK(handshake(&c, &s) == 1, "handshake %d", round);
		/* TLS 1.3 tickets arrive after the handshake: the client
		 * processes them when it reads. */
		CHECK(exchange(s.t, c.t, "220 ready\r\n") == 0, "data %d", round);
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
 * (the answer to EHLO), so both leave in one write (issue 9, S1). */
static void test_ticket_with_first_reply(sg_tls_ctx *sc)
{
	SSL_CTX *cx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(cx, SSL_SESS_CACHE_CLIENT |
	                                       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cx, count_ticket);
	tickets_seen = 0;
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = raw_client(cx);
	CHECK(handshake(&c, &s) == 1, "handshake");
	char buf[256];
	CHECK(SSL_read(c.ssl, buf, sizeof buf) <= 0 && tickets_seen == 0,
	      "no ticket flight of its own after the handshake (%d)", tickets_seen);
	CHECK(sg_tls_write(s.t, "250 ok\r\n", 8) == 0, "reply");
	size_t n = 0;
	const char *p = sg_tls_out(s.t, &n);
	BIO_write(c.rb, p, (int)n);
	sg_tls_out_consume(s.t, n);
	CHECK(sg_tls_out(s.t, &n) == NULL && n == 0, "one buffer to send");
	int r = SSL_read(c.ssl, buf, sizeof buf);
	CHECK(r == 8 && memcmp(buf, "250 ok\r\n", 8) == 0, "reply read (%d)", r);
	CHECK(tickets_seen == 1, "one ticket, with the reply (%d)", tickets_seen);
	peer_free(&s);
	peer_free(&c);
	SSL_CTX_free(cx);
}

static void test_resumption(sg_tls_ctx *sc)
{
	sg_errors errs = {0};
	sg_tls_ctx *cc = sg_tls_client_ctx(false, NULL, &errs);
	CHECK(second_resumes(sc, cc, "mail.example.test") == 1,
	      "second connection resumed with tickets on");
	/* A session is only offered to the name it was made for. */
	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, "other.example.test", NULL)};
	CHECK(handshake(&c, &s) == 1 && !sg_tls_resumed(s.t),
	      "no resumption for another name");
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	sg_tls_ctx *noticket = server_ctx("session_tickets = no\n", &errs);
	CHECK(noticket, "ctx tickets=no");
	cc = sg_tls_client_ctx(false, NULL, &errs);
	if (noticket)
		CHECK(second_resumes(noticket, cc, "mail.example.test") == 0,
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
	CHECK(sh("cat %s/rsa.crt %s/ec.crt > %s", dir, dir, both) == 0, "cat");
	sg_tls_ctx *cc = sg_tls_client_ctx(true, both, &errs);
	CHECK(cc, "verifying client ctx");

	struct peer s = {.t = sg_tls_new_server(sc)};
	struct peer c = {.t = sg_tls_new_client(cc, "mail.example.test",
	                                        "mail.example.test")};
	CHECK(handshake(&c, &s) == 1, "right name verifies: %s",
	      sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);

	s.t = sg_tls_new_server(sc);
	c.t = sg_tls_new_client(cc, "wrong.example.test", "wrong.example.test");
	CHECK(handshake(&c, &s) == 0 && c.hs == -1, "wrong name refused");
	CHECK(strstr(sg_tls_error(c.t), "certificate verify failed") &&
	          strstr(sg_tls_error(c.t), "hostname mismatch"),
	      "error: %s", sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	/* An untrusted (self-signed, not in the CA file) chain. */
	char other[PATH_MAX_T];
	path(other, "other.crt");
	CHECK(sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
	         "ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt "
	         "-days 1 -subj /CN=x 2>/dev/null",
	         dir) == 0,
	      "other cert");
	cc = sg_tls_client_ctx(true, other, &errs);
	s.t = sg_tls_new_server(sc);
	c.t = sg_tls_new_client(cc, "mail.example.test", "mail.example.test");
	CHECK(handshake(&c, &s) == 0 && c.hs == -1, "untrusted chain refused");
	CHECK(strstr(sg_tls_error(c.t), "certificate verify failed"), "error: %s",
	      sg_tls_error(c.t));
	peer_free(&s);
	peer_free(&c);
	sg_tls_ctx_unref(cc);

	/* A CA file that does not exist is a context error. */
	cc = sg_tls_client_ctx(true, "/nonexistent/ca.pem", &errs);
	CHECK(!cc && errs.n == 1 && strstr(errs.msg[0], "/nonexistent/ca.pem"),
	      "missing CA file: %s", errs.n ? errs.msg[0] : "no error");
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
		CHECK(cfg, "%s: config loads: %s", cases[i].what,
		      errs.n ? errs.msg[0] : "");
		if (!cfg) {
			sg_errors_free(&errs);
			continue;
		}
		sg_tls_ctx *c = sg_tls_server_ctx(cfg, &errs);
		snprintf(want, sizeof want, "%s:%d: ", conf, cases[i].line);
		CHECK(!c, "%s: context refused", cases[i].what);
		CHECK(errs.n == 1 && strncmp(errs.msg[0], want, strlen(want)) == 0 &&
		          strstr(errs.msg[0], cases[i].msg),
		      "%s: want \"%s...%s\", got \"%s\"", cases[i].what, want,
		      cases[i].msg, errs.n ? errs.msg[0] : "no error");
		sg_tls_ctx_unref(c);
		sg_config_unref(cfg);
		sg_errors_free(&errs);
	}
}

static void test_plaintext(sg_tls_ctx *sc)
{
	sg_tls *s = sg_tls_new_server(sc);
	const char *ehlo = "EHLO client.example\r\n";
	CHECK(sg_tls_feed(s, ehlo, strlen(ehlo)) == 0, "feed");
	CHECK(sg_tls_handshake(s) == -1, "plaintext fails the handshake");
	const char *e = sg_tls_error(s);
	CHECK(strstr(e, "handshake failed") && strstr(e, "wrong version number") &&
	          strstr(e, "plaintext on a TLS port"),
	      "error: %s", e);
	/* The error queue is left empty for the next session on the thread. */
	CHECK(ERR_peek_error() == 0, "OpenSSL error queue cleared");
	sg_tls_free(s);

	/* Garbage after a partial record: still a clean failure, no crash. */
	s = sg_tls_new_server(sc);
	CHECK(sg_tls_feed(s, "\x16\x03\x01\x00\x05hello", 10) == 0, "feed");
	CHECK(sg_tls_handshake(s) == -1, "bogus ClientHello refused: %s",
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
	CHECK(per > 0 && per < 19 * 1024, "idle session heap %ld bytes", per);
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
	CHECK(sc && cc && errs.n == 0, "contexts");
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
	printf("test_tls: %d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}
