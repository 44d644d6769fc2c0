/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_tls_client.c: libFuzzer target for the client side of the
 * TLS engine (common/tls.c), as used for STARTTLS to the upstream MTA:
 * arbitrary bytes as the server's answer to our ClientHello, fed in two
 * pieces.
 *
 * The engine must fail cleanly (-1 with a reason) or wait (0), never
 * complete (it cannot: the input does not know our ephemeral key), crash,
 * leak, or leave an error in the thread's OpenSSL queue. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "../../common/config.h"
#include "../../common/tls.h"

#define FUZZ_READ_MAX 4096

static sg_tls_ctx *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void) { sg_tls_ctx_unref(ctx); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	sg_errors errs = {0};
	/* verify off: a real chain is not the point, the parsers are */
	ctx = sg_tls_client_ctx(false, NULL, &errs);
	if (!ctx)
		abort();
	sg_errors_free(&errs);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sg_tls *t = sg_tls_new_client(ctx, "mx.example.org", NULL);
	if (!t || sg_tls_handshake(t) != 0)
		abort(); /* the ClientHello is out, waiting for the server */
	size_t n;
	sg_tls_out(t, &n);
	sg_tls_out_consume(t, n);

	size_t cut = size ? data[0] % (size + 1) : 0;
	if (sg_tls_feed(t, (const char *)data, cut) != 0)
		abort();
	int r = sg_tls_handshake(t);
	if (r == 0) {
		if (sg_tls_feed(t, (const char *)data + cut, size - cut) != 0)
			abort();
		r = sg_tls_handshake(t);
	}
	if (r == 1)
		abort();
	if (r == -1 && strstr(sg_tls_error(t), "failed") == NULL)
		abort();
	sg_tls_out(t, &n);
	sg_tls_out_consume(t, n);
	sg_buf b;
	sg_buf_init(&b, FUZZ_READ_MAX);
	if (r == 0 && sg_tls_read(t, &b) == 1)
		abort();
	sg_buf_free(&b);
	sg_tls_free(t);
	if (ERR_peek_error() != 0)
		abort();
	return 0;
}
