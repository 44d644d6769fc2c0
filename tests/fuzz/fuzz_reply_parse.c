/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_reply_parse.c: libFuzzer target for the upstream reply
 * reader, EHLO parser and queue-id extractor (upstream/reply_parse.c).
 *
 * The bytes are an MTA's replies.  Read whole and one octet at a time, they
 * must give the same replies (code and text) and fail at the same offset:
 * TCP may split a reply anywhere.  Each reply must be NUL-terminated within
 * SG_REPLY_MAX, with a code of three digits; the EHLO parser and the
 * queue-id extractor must stay inside their inputs and outputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../upstream/reply_parse.h"

#define MAX_REPLIES 256
#define QID_CAP 64

struct outcome {
	int code[MAX_REPLIES];
	size_t len[MAX_REPLIES];
	size_t end[MAX_REPLIES]; /* input offset just after the reply */
	size_t n;
	long err_at; /* input offset of the failure, -1 when none */
};

static void check_reply(const sg_reply_reader *r)
{
	if (r->len > SG_REPLY_MAX || r->text[r->len] != '\0')
		abort();
	if (r->code < 100 || r->code > 999)
		abort();
	sg_ehlo e;
	int rc = sg_ehlo_parse(r->text, r->len, &e);
	if (rc != 0 && rc != -1)
		abort();
	if (rc == 0 && r->code != 250)
		abort();
	char qid[QID_CAP];
	memset(qid, 'Z', sizeof qid);
	sg_reply_queue_id(r->text, r->len, qid, sizeof qid);
	if (!memchr(qid, '\0', sizeof qid))
		abort();
}

static void run(const uint8_t *data, size_t size, size_t piece,
                struct outcome *o, sg_reply_reader *r)
{
	size_t pos = 0;
	o->n = 0;
	o->err_at = -1;
	sg_reply_reader_init(r);
	while (pos < size) {
		size_t take = size - pos < piece ? size - pos : piece;
		size_t used = 0;
		int rc = sg_reply_read(r, (const char *)data + pos, take, &used);
		if (used > take)
			abort();
		if (rc == -1) {
			if (!r->error)
				abort();
			o->err_at = (long)(pos + used);
			return;
		}
		pos += used;
		if (rc == 1) {
			check_reply(r);
			if (o->n < MAX_REPLIES) {
				o->code[o->n] = r->code;
				o->len[o->n] = r->len;
				o->end[o->n] = pos;
				o->n++;
			}
		} else if (rc != 0 || used != take) {
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static sg_reply_reader r;
	static struct outcome whole, bytes;
	run(data, size, size ? size : 1, &whole, &r);
	run(data, size, 1, &bytes, &r);
	if (whole.n != bytes.n || whole.err_at != bytes.err_at)
		abort();
	for (size_t i = 0; i < whole.n; i++)
		if (whole.code[i] != bytes.code[i] || whole.len[i] != bytes.len[i] ||
		    whole.end[i] != bytes.end[i])
			abort();
	return 0;
}
