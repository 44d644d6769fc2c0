/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link.h: the connection to the internal MTA, as the session sees it.
 *
 * upstream/ is the only place that speaks SMTP to the MTA.  A link is opened
 * when the client has authenticated (before the 235 is sent) or, on a
 * require_auth = no listener, at the first MAIL.  sg_link_open tries the
 * [upstream] servers in order (names resolved on the thread pool), says EHLO,
 * optional STARTTLS, hands over the identity (XCLIENT / XFORWARD / service
 * account AUTH / nothing) and calls ready.  From then on the session passes
 * MAIL/RCPT/RSET lines through and streams DATA or BDAT chunks; every reply
 * it gives the client for those comes from the upstream (or is a 4xx/5xx of
 * ours), never a 2xx the upstream did not send.  Implemented by link_connect.c,
 * link_handshake.c and link_xfer.c (link_int.h). */
#ifndef SG_UPSTREAM_LINK_H
#define SG_UPSTREAM_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../common/config.h"

/* Who the client is, for XCLIENT/XFORWARD and the Received header. */
typedef struct sg_identity {
	const char *sid;        /* session id: logs and Received "id" */
	const char *login;      /* authorized SASL identity; NULL = none */
	const char *client_ip;  /* after PROXY protocol */
	unsigned client_port;
	const char *client_name; /* forward-confirmed reverse DNS, else NULL */
	bool client_name_temp;  /* no name because the lookup failed for now */
	const char *helo;       /* client's EHLO/HELO argument */
	bool esmtp;             /* EHLO (true) or HELO */
	const char *tls_version; /* NULL when plaintext */
	const char *tls_cipher;
	unsigned tls_bits;
	const char *dest_ip;    /* our listener's address and port */
	unsigned dest_port;
} sg_identity;

/* A reply to pass back.  text holds the whole reply as the client should see
 * it: one or more lines, each ending in CRLF ("250-...\r\n250 ok\r\n").
 * code 0 never reaches the session: a lost upstream becomes a 421/451 made
 * here. */
typedef struct sg_reply {
	int code;
	const char *text;
	size_t len;
} sg_reply;

typedef struct sg_link sg_link;
typedef void (*sg_link_cb)(void *arg, const sg_reply *r);

/* Open a link; identity is copied.  ready gets 2xx once an upstream took the
 * identity, else a 4xx text suitable for the client (454 4.7.0 at AUTH;
 * the log names the upstream, its reply and what to fix).  On error the link
 * is already closed: do not use it after a non-2xx ready.  Never NULL (out
 * of memory is fatal, common/mem.h). */
sg_link *sg_link_open(uv_loop_t *loop, const sg_config *cfg,
                      const sg_identity *id, sg_link_cb ready, void *arg);

/* One command line (MAIL, RCPT, RSET, NOOP), CRLF included.  Replies come
 * back in order, one cb each; commands may be pipelined (the link sends
 * them together when the upstream offers PIPELINING, else one at a time). */
void sg_link_command(sg_link *l, const char *line, size_t len, sg_link_cb cb,
                     void *arg);

/* The longest command line sent upstream, CRLF included: Postfix's
 * line_length_limit (2048) cuts longer ones, and a cut MAIL parameter
 * would be a changed one. */
#define SG_UPSTREAM_LINE_MAX 2048

/* MAIL: like sg_link_command, for a line without an AUTH= parameter.  With
 * auth_param (the client sent AUTH=, which is never passed on), saslgate's
 * own " AUTH=<xtext of the login>" (or "AUTH=<>" without one) is added
 * when the upstream offers AUTH (RFC 4954 5).  A line that would pass
 * SG_UPSTREAM_LINE_MAX gets 454 4.7.0, never a shortened parameter. */
void sg_link_mail(sg_link *l, const char *line, size_t len, bool auth_param,
                  sg_link_cb cb, void *arg);

/* DATA: the session sends "DATA\r\n" with sg_link_command; on 354 it answers
 * the client 354 and calls sg_link_data_begin, then feeds every byte the
 * client sends with sg_link_data_feed.  feed scans for end-of-data
 * (<CRLF>.<CRLF>), enforces max_message_size and bare_newline (bare CR/LF,
 * NUL octets), prepends the Received header (and X-Authenticated-User for
 * identity header/auth, stripping a client-supplied one), and writes
 * upstream.  It returns how many bytes it consumed (all of them until the
 * end of data; the rest after the final dot is the client's next command).
 * *pause is set when the upstream write queue is above its bound: the
 * session stops reading the client until drain is called.  done is called
 * once with the final reply (upstream's, or 550 5.5.2 / 550 5.6.0 /
 * 552 5.3.4 / 451 of ours) when the message is over. */
void sg_link_data_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg));
/* Hold the end of the message begun last ([policy] at = end_of_data):
 * when the scanner reaches the end of data, everything but the end
 * marker (the final ".\r\n") is written and end_seen(arg of begin) is
 * called, from inside sg_link_data_feed, instead of sending it; done is
 * not called until the owner decides:
 *   finish: the end marker goes now; done gets the upstream's final reply
 *     (or 451 4.4.2 if the upstream went away meanwhile).
 *   abort: the message is given up: the connection closes without the end
 *     marker, so the upstream discards it; done is not called; the link is
 *     no longer alive (a new one is opened for the next message).
 * A message the scanner refused (too big, bare CR/LF, NUL) is never held:
 * done gets its refusal as without the hold.  DATA only (a BDAT message is
 * never held). */
void sg_link_data_hold_end(sg_link *l, void (*end_seen)(void *arg));
void sg_link_data_finish(sg_link *l);
void sg_link_data_abort(sg_link *l);
/* Header lines (each "Name: value\r\n", no line starting with '.') for
 * the next sg_link_data_begin's message, written before its Received
 * header ([policy] PREPEND); copied; a second call replaces them. */
void sg_link_data_header(sg_link *l, const char *lines, size_t len);
size_t sg_link_data_feed(sg_link *l, const char *buf, size_t len, bool *pause);

/* BDAT (RFC 3030): a message in the client's chunks, with DATA's limits,
 * headers and policies: the octets are dot-stuffed (bdat.h) and go through
 * the same scanner.  Relayed as BDAT when this upstream offers CHUNKING,
 * else as DATA (sent by begin; no octet goes before its 354).
 *   begin: the session accepted the message's first chunk; done and drain
 *     as for DATA.
 *   feed: the chunks' octets, raw; last: buf ends the LAST chunk.  Returns
 *     how many it took.  *pause: stop feeding until drain, and nothing
 *     past the count was taken (with last: not the end either).  Without
 *     *pause, all of buf was taken, and with last the message is over:
 *     done is called once with the final reply (the upstream's to its
 *     final dot or BDAT LAST, or a refusal: 550 5.5.2 / 550 5.6.0 /
 *     552 5.3.4 / 451, or the upstream's refusal of a chunk or the DATA).
 *   status: after a chunk that was not the LAST, NULL while the message
 *     goes on, else the reply it failed with (text valid until cancel).
 *   cancel: the message is given up (RSET, a refused chunk, a failure):
 *     nothing of it is delivered, done is not called.  A command while a
 *     chunked message is open (RSET) cancels it first. */
void sg_link_bdat_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg));
size_t sg_link_bdat_feed(sg_link *l, const char *buf, size_t len, bool last,
                         bool *pause);
const char *sg_link_bdat_status(const sg_link *l);
void sg_link_bdat_cancel(sg_link *l);

/* Upstream queue id from the last final reply ("queued as ABC123"), or "". */
const char *sg_link_last_queue_id(sg_link *l);
/* host:port of the upstream this link talks to. */
const char *sg_link_peer(sg_link *l);
bool sg_link_alive(sg_link *l);

/* QUIT (when idle) and free.  Pending callbacks are not called.  With
 * [upstream] pool_size (not identity = xclient), an idle link with nothing
 * in flight is kept instead for the next sg_link_open on this worker: it
 * gets an RSET, and only once that is answered 250 is it handed on. */
void sg_link_close(sg_link *l);

/* The worker's kept links (pool_size): a reload drops those whose
 * [upstream] differs from cfg's; shutdown drops them all (QUIT). */
void sg_link_pool_reconfig(uv_loop_t *loop, const sg_config *cfg);
void sg_link_pool_shutdown(uv_loop_t *loop);
/* The kept link of a could serve a session of b: the same servers,
 * identity mode, EHLO name, TLS settings and service account. */
bool sg_upstream_same(const sg_config *a, const sg_config *b);

/* EHLO honesty: what the upstream offers, probed at start and on reload
 * (sg_upstream_probe) and cached; size is also taken from each link's own
 * EHLO, so a changed limit upstream shows without a reload.  Read by the
 * session when it builds its EHLO reply.  Before the first probe answers,
 * all false. */
typedef struct sg_upstream_caps {
	bool probed;
	bool eightbitmime, smtputf8, dsn, pipelining, chunking;
	uint64_t size; /* 0 = none advertised */
} sg_upstream_caps;

void sg_upstream_probe(uv_loop_t *loop, const sg_config *cfg);
sg_upstream_caps sg_upstream_caps_get(void);

/* The message size limit a session advertises (EHLO SIZE), checks at MAIL
 * SIZE= and enforces in DATA (552 5.3.4): max_message_size, or the
 * upstream's SIZE when that is smaller, so a message the upstream would
 * refuse at its end is refused before it is uploaded.  0 on either side
 * is no limit (RFC 1870 4: "SIZE 0"; upstream: none advertised). */
static inline uint64_t sg_size_limit(uint64_t ours, uint64_t upstream)
{
	return upstream && (!ours || upstream < ours) ? upstream : ours;
}

#endif
