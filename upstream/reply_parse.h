/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/reply_parse.h: the upstream's SMTP replies, parsed without I/O.
 *
 * Pure code (no libuv, no sockets) so it can be unit-tested and fuzzed:
 * a resumable reply reader that collects one (possibly multi-line) reply
 * from bytes arriving in arbitrary pieces, and a parser for the EHLO reply's
 * extension keywords. */
#ifndef SG_UPSTREAM_REPLY_PARSE_H
#define SG_UPSTREAM_REPLY_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
 * Real MTAs exceed it (long AUTH or XCLIENT lists, verbose rejections), so
 * we accept lines up to SG_REPLY_LINE_MAX and treat anything longer as a
 * protocol error (the link is dropped, the client gets a 4xx). */
#define SG_REPLY_LINE_RFC 512
#define SG_REPLY_LINE_MAX 2048
/* Whole reply (all lines); an EHLO reply with 30 extensions is ~1 KiB. */
#define SG_REPLY_MAX 16384

typedef struct sg_reply_reader {
	char text[SG_REPLY_MAX + 1]; /* the reply so far, CRLF line ends, NUL */
	size_t len;
	size_t line_start; /* offset of the current (incomplete) line */
	int code;          /* of the first line; 0 until one is complete */
	bool complete;     /* text holds one whole reply */
	const char *error; /* set on -1: why (for the log) */
} sg_reply_reader;

void sg_reply_reader_init(sg_reply_reader *r);

/* Consume bytes from in until one reply is complete.  Returns 1 when a reply
 * is complete (r->code, r->text, r->len; *used bytes consumed, the rest is
 * the next reply), 0 when all of in was consumed and more is needed, -1 on a
 * malformed or oversized reply (r->error says why).  The next call after a 1
 * starts a new reply. */
int sg_reply_read(sg_reply_reader *r, const char *in, size_t len, size_t *used);

/* Extensions of an EHLO reply (RFC 5321 4.1.1.1, one keyword per line after
 * the first). */
enum {
	SG_XA_NAME = 1 << 0,
	SG_XA_ADDR = 1 << 1,
	SG_XA_PORT = 1 << 2,
	SG_XA_PROTO = 1 << 3,
	SG_XA_HELO = 1 << 4,
	SG_XA_LOGIN = 1 << 5,
	SG_XA_DESTADDR = 1 << 6,
	SG_XA_DESTPORT = 1 << 7,
	SG_XA_SOURCE = 1 << 8,
	SG_XA_IDENT = 1 << 9,
};

typedef struct sg_ehlo {
	bool pipelining, eightbitmime, smtputf8, dsn, starttls, chunking;
	bool enhancedstatuscodes;
	bool has_size;
	uint64_t size; /* 0 with has_size: no fixed limit */
	bool auth, auth_plain, auth_login;
	bool xclient, xforward;
	unsigned xclient_attrs, xforward_attrs; /* SG_XA_* */
} sg_ehlo;

/* Parse a complete EHLO reply (as collected by sg_reply_read).  Unknown
 * keywords are ignored.  Returns 0, or -1 when it is not a 250 reply. */
int sg_ehlo_parse(const char *text, size_t len, sg_ehlo *out);

/* "250 2.0.0 Ok: queued as 4Xyz12" -> "4Xyz12" (Postfix, Exim "id=",
 * Exchange "<...> Queued mail for delivery" has none).  Empty when absent.
 * out gets at most cap-1 characters. */
void sg_reply_queue_id(const char *text, size_t len, char *out, size_t cap);

#endif
