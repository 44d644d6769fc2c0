/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_smtp_parse.c: libFuzzer target for the SMTP command line
 * framer and verb split (proxy/smtp_parse.c).
 *
 * The input is fed twice, once whole and once one octet at a time into a
 * buffer bounded like the session's; both must yield the same sequence of
 * lines and verdicts (the framer is resumable: a split read must not change
 * what the client's commands mean).  Lines must lie inside the buffer, fit
 * the limit, and hold no NUL; sg_cmd_split must leave an upper-case verb. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/smtp_parse.h"

/* Outcomes remembered per run (bounded: max_len is a few KiB). */
#define MAX_EVENTS 4096

struct event {
	int status;
	size_t off; /* where the line starts in the input */
	size_t len;
};

struct run {
	struct event ev[MAX_EVENTS];
	size_t n;
};

static void record(struct run *r, int status, size_t off, size_t len)
{
	if (r->n == MAX_EVENTS)
		return;
	r->ev[r->n].status = status;
	r->ev[r->n].off = off;
	r->ev[r->n].len = len;
	r->n++;
}

static void check_line(const char *line, size_t len, size_t limit)
{
	if (len + 1 > limit || memchr(line, '\0', len) || memchr(line, '\n', len))
		abort();
	char *copy = malloc(len + 1);
	if (!copy)
		abort();
	memcpy(copy, line, len);
	copy[len] = '\0';
	char *verb, *arg;
	sg_cmd_split(copy, &verb, &arg);
	for (char *p = verb; *p; p++)
		if (*p == ' ' || islower((unsigned char)*p))
			abort();
	if (*arg == ' ' || (*arg && arg[strlen(arg) - 1] == ' '))
		abort();
	if (arg < copy || arg > copy + len)
		abort();
	free(copy);
}

/* Feed data in pieces of `piece` octets into a buffer of at most `cap`. */
static void run(const uint8_t *data, size_t size, size_t limit, size_t piece,
                size_t cap, struct run *r)
{
	char *buf = malloc(cap ? cap : 1);
	size_t len = 0, base = 0, pos = 0; /* base: input offset of buf[0] */
	sg_lines st = {0};
	if (!buf)
		abort();
	r->n = 0;
	while (pos < size || len > 0) {
		size_t room = cap - len;
		size_t take = size - pos < piece ? size - pos : piece;
		if (take > room)
			take = room;
		memcpy(buf + len, data + pos, take);
		len += take;
		pos += take;
		bool progress = take > 0;
		for (int guard = 0; guard < 100000; guard++) {
			const char *line;
			size_t ll, used;
			/* asked before sg_line_next changes the state */
			bool pend = sg_line_pending(&st, buf, len, limit);
			int s = sg_line_next(&st, buf, len, limit, &line, &ll, &used);
			if (used > len)
				abort();
			if (s != SG_LINE_NONE && !pend)
				abort(); /* pending must announce every verdict */
			if (s == SG_LINE_OK) {
				if (line != buf)
					abort();
				check_line(line, ll, limit);
			}
			if (s != SG_LINE_NONE)
				record(r, s, base, s == SG_LINE_OK ? ll : 0);
			memmove(buf, buf + used, len - used);
			len -= used;
			base += used;
			if (used)
				progress = true;
			if (s == SG_LINE_NONE)
				break;
		}
		if (!progress && pos >= size)
			break; /* an incomplete last line: wait forever, like a session */
		if (!progress && len == cap)
			abort(); /* buffer full and the framer does not move: stuck */
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* First octet picks the limit: the real two, or a tiny one so the
	 * over-limit paths are reached with small inputs. */
	size_t limit = data[0] == 0   ? SG_LINE_MAX
	               : data[0] == 1 ? SG_AUTH_LINE_MAX
	                              : (size_t)(data[0] % 64) + 1;
	data++;
	size--;
	static struct run whole, bytes;
	run(data, size, limit, size ? size : 1, size + limit, &whole);
	run(data, size, limit, 1, limit, &bytes);
	if (whole.n != bytes.n)
		abort();
	for (size_t i = 0; i < whole.n; i++)
		if (whole.ev[i].status != bytes.ev[i].status ||
		    whole.ev[i].off != bytes.ev[i].off ||
		    whole.ev[i].len != bytes.ev[i].len)
			abort();
	return 0;
}
