/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_tls_server.c: libFuzzer target for the server side of the
 * TLS engine (common/tls.c): arbitrary bytes as the first flight of a client
 * (ClientHello and whatever follows), fed in two pieces.
 *
 * The engine must fail cleanly (-1 with a reason) or wait for more (0);
 * random bytes can never complete a handshake.  It must not crash, leak, or
 * leave an error in OpenSSL's per-thread queue for the next session. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../common/config.h"
#include "../../common/tls.h"

#define FUZZ_PATH_MAX 256
#define FUZZ_READ_MAX 4096

static sg_tls_ctx *ctx;
static char dir[] = "/tmp/sg_fuzz_tls.XXXXXX";
static char cert_path[FUZZ_PATH_MAX], key_path[FUZZ_PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
	sg_tls_ctx_unref(ctx);
	unlink(cert_path);
	unlink(key_path);
	rmdir(dir);
}

/* A throwaway self-signed P-256 certificate (fast to make, no CLI). */
static void make_cert(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	if (!k || !x)
		abort();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"fuzz.example", -1, -1,
	                           0);
	X509_set_issuer_name(x, n);
	if (!X509_sign(x, k, EVP_sha256()))
		abort();
	FILE *fc = fopen(cert_path, "w"), *fk = fopen(key_path, "w");
	if (!fc || !fk || !PEM_write_X509(fc, x) ||
	    !PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL))
		abort();
	fclose(fc);
	fclose(fk);
	X509_free(x);
	EVP_PKEY_free(k);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (!mkdtemp(dir))
		abort();
	snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
	snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
	make_cert();

	/* A [tls] section as the loader would fill it (no file: lines in
	 * errors would read "FILE: message"; there must be none). */
	sg_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.path = (char *)"fuzz";
	cfg.tls_certificate = cert_path;
	cfg.tls_key = key_path;
	cfg.tls_ecdsa_certificate = (char *)"";
	cfg.tls_ecdsa_key = (char *)"";
	cfg.tls_min_version = 0x0301; /* TLS1_VERSION: reach every parser */
	/* OpenSSL 3 offers TLS 1.0/1.1 only at security level 0 */
	cfg.tls_ciphers = (char *)"DEFAULT:@SECLEVEL=0";
	cfg.tls_session_tickets = true;
	sg_errors errs = {0};
	ctx = sg_tls_server_ctx(&cfg, &errs);
	if (!ctx) {
		sg_errors_print(&errs, stderr);
		abort();
	}
	sg_errors_free(&errs);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sg_tls *t = sg_tls_new_server(ctx);
	if (!t)
		abort();
	/* Two pieces, split where the first byte says, so record and
	 * handshake-message reassembly across feeds is exercised too. */
	size_t cut = size ? data[0] % (size + 1) : 0;
	int r = 0;
	if (sg_tls_feed(t, (const char *)data, cut) != 0)
		abort();
	r = sg_tls_handshake(t);
	if (r == 0) {
		if (sg_tls_feed(t, (const char *)data + cut, size - cut) != 0)
			abort();
		r = sg_tls_handshake(t);
	}
	if (r == 1)
		abort(); /* no key, no handshake */
	if (r == -1 && strstr(sg_tls_error(t), "failed") == NULL)
		abort();
	size_t n;
	sg_tls_out(t, &n); /* alerts or a ServerHello: drain like a session */
	sg_tls_out_consume(t, n);
	sg_buf b;
	sg_buf_init(&b, FUZZ_READ_MAX);
	if (r == 0 && sg_tls_read(t, &b) == 1)
		abort();
	sg_buf_free(&b);
	sg_tls_trim(t);
	sg_tls_free(t);
	if (ERR_peek_error() != 0)
		abort(); /* a stale error would be blamed on another session */
	return 0;
}
