/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_ldap_probe.c: sasl/ldapprobe.c, the "does the directory
 * answer" check behind a saslauthd or ldapdb failure, against small local
 * servers: one that answers a BindResponse, one that refuses, one that
 * accepts and says nothing (a stopped slapd), one that answers something
 * that is not LDAP, over TCP, over TLS (ldaps://, a self-signed
 * certificate) and over an ldapi:// socket; and the URI list check of
 * saslauthd_ldap_servers. */
#include "check.h"
#include "../../sasl/sasl_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* BindResponse, messageID 1, success */
static const unsigned char bind_ok[] = {0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07,
                                        0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00};
/* BindResponse, messageID 1, inappropriateAuthentication (48): a directory
 * that refuses anonymous binds, as Active Directory may */
static const unsigned char bind_refused[] = {0x30, 0x0c, 0x02, 0x01, 0x01,
                                             0x61, 0x07, 0x0a, 0x01, 0x30,
                                             0x04, 0x00, 0x04, 0x00};

struct server {
	int fd;
	SSL_CTX *tls; /* ldaps://: the TLS handshake first */
	const void *reply; /* NULL: accept, read, never answer */
	size_t replylen;
	pthread_t th;
};

/* Answer the request's messageID (a one-octet INTEGER, as a new libldap
 * handle sends), so the reply is the answer whatever the client's count. */
static void answer(struct server *s, SSL *ssl, int c, const unsigned char *req,
                   ssize_t n)
{
	unsigned char rep[64];
	size_t len = s->replylen < sizeof rep ? s->replylen : sizeof rep;
	memcpy(rep, s->reply, len);
	if (n >= 5 && req[0] == 0x30 && req[2] == 0x02 && req[3] == 0x01 &&
	    rep[0] == 0x30 && rep[2] == 0x02 && rep[3] == 0x01)
		rep[4] = req[4];
	if (ssl ? SSL_write(ssl, rep, (int)len) <= 0 : write(c, rep, len) < 0)
		perror("write");
}

static void *serve(void *arg)
{
	struct server *s = arg;
	int c = accept(s->fd, NULL, NULL);
	if (c < 0)
		return NULL;
	SSL *ssl = NULL;
	if (s->tls) {
		ssl = SSL_new(s->tls);
		SSL_set_fd(ssl, c);
		if (SSL_accept(ssl) != 1) {
			ERR_print_errors_fp(stderr);
			SSL_free(ssl);
			close(c);
			return NULL;
		}
	}
	unsigned char b[256];
	ssize_t n = ssl ? SSL_read(ssl, b, sizeof b) : read(c, b, sizeof b);
	if (n > 0 && s->reply)
		answer(s, ssl, c, b, n);
	if (!s->reply)
		usleep(500000); /* hold the connection, silent */
	else
		usleep(50000); /* let the client read before the close */
	SSL_free(ssl);
	close(c);
	return NULL;
}

/* A server context with a fresh self-signed P-256 certificate for
 * localhost; the probe does not check it. */
static SSL_CTX *tls_server(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *crt = X509_new();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!key || !crt || !ctx) {
		ERR_print_errors_fp(stderr);
		exit(2);
	}
	X509_set_version(crt, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(crt), 1);
	X509_gmtime_adj(X509_getm_notBefore(crt), -60);
	X509_gmtime_adj(X509_getm_notAfter(crt), 3600);
	X509_set_pubkey(crt, key);
	X509_NAME *name = X509_get_subject_name(crt);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(crt, name);
	if (!X509_sign(crt, key, EVP_sha256()) ||
	    SSL_CTX_use_certificate(ctx, crt) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, key) != 1) {
		ERR_print_errors_fp(stderr);
		exit(2);
	}
	X509_free(crt);
	EVP_PKEY_free(key);
	return ctx;
}

static int tcp_listener(unsigned short *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof a;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    listen(fd, 4) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
		perror("tcp listener");
		exit(2);
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static void start(struct server *s, int fd, const void *reply, size_t len)
{
	s->fd = fd;
	s->tls = NULL;
	s->reply = reply;
	s->replylen = len;
	pthread_create(&s->th, NULL, serve, s);
}

static void start_tls(struct server *s, SSL_CTX *tls, int fd,
                      const void *reply, size_t len)
{
	s->fd = fd;
	s->tls = tls;
	s->reply = reply;
	s->replylen = len;
	pthread_create(&s->th, NULL, serve, s);
}

static void finish(struct server *s)
{
	pthread_join(s->th, NULL);
	close(s->fd);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* a port nobody listens on: bound, then closed */
static unsigned short refused_port(void)
{
	unsigned short p;
	close(tcp_listener(&p));
	return p;
}

static void test_answers(void)
{
	struct server s;
	unsigned short port;
	char uri[128], why[256];

	start(&s, tcp_listener(&port), bind_ok, sizeof bind_ok);
	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u", port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), 0);
	finish(&s);

	/* an LDAP error is an answer: the directory is there */
	start(&s, tcp_listener(&port), bind_refused, sizeof bind_refused);
	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u", port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), 0, "%s", why);
	finish(&s);

	/* the first server refuses, the second answers: up */
	start(&s, tcp_listener(&port), bind_ok, sizeof bind_ok);
	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u ldap://127.0.0.1:%u",
	         refused_port(), port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), 0);
	finish(&s);
}

static void test_down(void)
{
	struct server s;
	unsigned short port, dead = refused_port();
	char uri[128], why[256], want[256];

	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u", dead);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), -ECONNREFUSED);
	snprintf(want, sizeof want, "%s: Connection refused", uri);
	ASSERT_STR_EQ(why, want);

	/* accepted (the kernel's backlog) but never answered: a stopped slapd */
	start(&s, tcp_listener(&port), NULL, 0);
	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u, ldap://127.0.0.1:%u",
	         port, dead);
	double t0 = now();
	ASSERT_EQ(sg_ldap_probe(uri, 300, why, sizeof why), -ECONNREFUSED);
	double dt = now() - t0;
	ASSERT(dt >= 0.25 && dt < 1.0, "waited %.3f s", dt);
	snprintf(want, sizeof want,
	         "ldap://127.0.0.1:%u: no answer, ldap://127.0.0.1:%u: "
	         "Connection refused",
	         port, dead);
	ASSERT_STR_EQ(why, want);
	finish(&s);

	/* something that is not an LDAPMessage */
	start(&s, tcp_listener(&port), "220 smtp\r\n", 10);
	snprintf(uri, sizeof uri, "ldap://127.0.0.1:%u", port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), -EPROTO);
	snprintf(want, sizeof want, "%s: not an LDAP answer", uri);
	ASSERT_STR_EQ(why, want);
	finish(&s);

	ASSERT_EQ(sg_ldap_probe("http://127.0.0.1/", 100, why, sizeof why),
	          -EINVAL);
	ASSERT_STR_EQ(why, "http://127.0.0.1/: not an ldap://, ldaps:// or "
	                   "ldapi:// URI");
}

static void test_ldaps(void)
{
	SSL_CTX *tls = tls_server();
	struct server s;
	unsigned short port;
	char uri[128], why[256], want[256];

	/* the handshake (a certificate no CA signed), then the bind */
	start_tls(&s, tls, tcp_listener(&port), bind_ok, sizeof bind_ok);
	snprintf(uri, sizeof uri, "ldaps://127.0.0.1:%u/", port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), 0, "%s", why);
	finish(&s);

	/* a TCP peer that never answers the ClientHello: a hung server
	 * behind TLS is down, within the timeout */
	start(&s, tcp_listener(&port), NULL, 0);
	snprintf(uri, sizeof uri, "ldaps://127.0.0.1:%u", port);
	double t0 = now();
	ASSERT_EQ(sg_ldap_probe(uri, 300, why, sizeof why), -ETIMEDOUT);
	double dt = now() - t0;
	ASSERT(dt >= 0.25 && dt < 1.0, "waited %.3f s", dt);
	snprintf(want, sizeof want, "%s: no answer", uri);
	ASSERT_STR_EQ(why, want);
	finish(&s);

	/* TLS done, then silence on the bind */
	start_tls(&s, tls, tcp_listener(&port), NULL, 0);
	snprintf(uri, sizeof uri, "ldaps://127.0.0.1:%u", port);
	snprintf(want, sizeof want, "%s: no answer", uri);
	t0 = now();
	ASSERT_EQ(sg_ldap_probe(uri, 300, why, sizeof why), -ETIMEDOUT);
	dt = now() - t0;
	ASSERT(dt >= 0.25 && dt < 1.0, "waited %.3f s", dt);
	ASSERT_STR_EQ(why, want);
	finish(&s);

	/* plain LDAP where TLS is expected */
	start(&s, tcp_listener(&port), bind_ok, sizeof bind_ok);
	snprintf(uri, sizeof uri, "ldaps://127.0.0.1:%u", port);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), -EPROTO);
	snprintf(want, sizeof want, "%s: TLS handshake failed (", uri);
	ASSERT(strncmp(why, want, strlen(want)) == 0, "%s", why);
	finish(&s);

	SSL_CTX_free(tls);
}

static void test_ldapi(void)
{
	char dir[] = "/tmp/sg-ldapi-XXXXXX", path[64], uri[256], why[256];
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(path, sizeof path, "%s/ldapi", dir);
	/* the socket path as slapd's -h takes it: every / as %2F */
	size_t o = snprintf(uri, sizeof uri, "ldapi://");
	for (const char *p = path; *p; p++)
		o += snprintf(uri + o, sizeof uri - o, *p == '/' ? "%%2F" : "%c", *p);

	ASSERT_EQ(sg_ldap_probe(uri, 500, why, sizeof why), -ENOENT);

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
	    listen(fd, 4) < 0) {
		perror("unix listener");
		exit(2);
	}
	struct server s;
	start(&s, fd, bind_ok, sizeof bind_ok);
	ASSERT_EQ(sg_ldap_probe(uri, 1000, why, sizeof why), 0, "%s", why);
	finish(&s);
	unlink(path);
	rmdir(dir);
}

static void test_uris_check(void)
{
	char bad[128];
	ASSERT_EQ(sg_ldap_uris_check("ldap://dc1.example.org", bad, sizeof bad), 0);
	ASSERT_EQ(sg_ldap_uris_check("ldaps://dc1:636, LDAP://[::1]:389 "
	                             "ldapi://%2Frun%2Fslapd%2Fldapi",
	                             bad, sizeof bad),
	          0);
	ASSERT_EQ(sg_ldap_uris_check("ldap://dc1 dc2.example.org", bad, sizeof bad),
	          -1);
	ASSERT_STR_EQ(bad, "dc2.example.org");
	/* the form libldap parses, not only the scheme */
	ASSERT_EQ(sg_ldap_uris_check("ldap://dc1:389,ldap://dc2:x389", bad,
	                             sizeof bad),
	          -1);
	ASSERT_STR_EQ(bad, "ldap://dc2:x389");
	ASSERT_EQ(sg_ldap_uris_check("cldap://dc1", bad, sizeof bad), -1);
	ASSERT_STR_EQ(bad, "cldap://dc1");
	ASSERT_EQ(sg_ldap_uris_check("  ", bad, sizeof bad), -1);
	ASSERT_STR_EQ(bad, "\"\"");
}

int main(void)
{
	alarm(60);
	test_answers();
	test_down();
	test_ldaps();
	test_ldapi();
	test_uris_check();
	return CHECK_SUMMARY();
}
