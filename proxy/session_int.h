/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/session_int.h: the session struct and the functions session.c,
 * commands.c and reply.c share.  Nothing outside proxy/ includes this. */
#ifndef SG_PROXY_SESSION_INT_H
#define SG_PROXY_SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/config.h"
#include "../common/tls.h"
#include "../sasl/auth.h"
#include "../upstream/link.h"
#include "client_name.h"
#include "reply.h"
#include "server.h"
#include "smtp_parse.h"

#define SG_SID_LEN 12          /* hex characters of a session id */
/* One socket read, into a per-worker buffer (session.c).  64 KiB is the
 * loopback MTU and four full TLS records: a big message costs about a
 * quarter of the read(2) and write(2) calls of 16 KiB reads, and only a
 * session that is sending holds an input buffer this large (an idle one
 * frees it). */
#define SG_READ_CHUNK 65536
/* Client input buffer: a whole SASL response line plus one read, so reading
 * goes on until the framer can decide (line, or too long). */
#define SG_INBUF_MAX (SG_AUTH_LINE_MAX + SG_READ_CHUNK)
#define SG_OUTQ_MAX (64 * 1024) /* unsent replies: stop reading the client */
#define SG_MAX_ERRORS 10       /* the 11th error reply becomes 421 4.7.0 */
#define SG_CLOSE_LINGER_MS 2000 /* wait this long for our last reply to go */
/* Quiet this long between messages before a session gives back its input
 * buffer and TLS record buffers: a client sending its next message at once
 * would only allocate them again (free, cleanse and re-allocate cost ~30k
 * instructions a message); an idle one is trimmed soon. */
#define SG_TRIM_DELAY_MS 50
#define SG_HELO_MAX 255        /* RFC 1035 domain name length */
#define SG_PATH_MAX 256        /* RFC 5321 4.5.3.1.3 reverse/forward path */
/* The longest login kept: Cyrus SASL's canonical name buffer
 * (CANON_BUF_SIZE) holds no more, and a longer one gets 454, never a
 * shortened identity. */
#define SG_USER_MAX 1024
#define SG_USER_LOG_MAX (3 * SG_USER_MAX + 1) /* its log form (identity.h) */
#define SG_QIDS_MAX 256        /* queue ids listed in the disconnect line */
#define SG_IP_MAX 46           /* textual IPv4/IPv6 address (INET6_ADDRSTRLEN) */
#define SG_LOG_REPLY_MAX 512   /* upstream reply quoted in a log line */
/* Relayed commands awaiting the upstream's reply at most (reply_queue.c,
 * RFC 2920); a pipelined line past this many waits until they are in. */
#define SG_RQ_MAX 128

/* Protocol states (docs/ARCHITECTURE.md); sg_session_state() logs each change. */
enum sg_state {
	SG_ST_GREETING = 0, /* before the greeting: PROXY header awaited */
	SG_ST_TLS_HANDSHAKE,
	SG_ST_HELO,         /* greeted, no EHLO/HELO yet */
	SG_ST_READY,        /* EHLO/HELO seen, no transaction */
	SG_ST_AUTH_PENDING, /* SASL exchange under way */
	SG_ST_MAIL,         /* MAIL accepted, no RCPT yet */
	SG_ST_RCPT,         /* at least one RCPT accepted */
	SG_ST_DATA,         /* message bytes streaming upstream */
	SG_ST_CLOSING,
};

/* What the session waits for; no command is read while not SG_PEND_NONE. */
enum sg_pending {
	SG_PEND_NONE = 0,
	SG_PEND_SASL,       /* sg_auth_start/step on the thread pool */
	SG_PEND_AUTH_DELAY, /* failure_delay before a 535 */
	SG_PEND_LINK_OPEN,  /* sg_link_open: ready callback */
	SG_PEND_UPSTREAM,   /* the reply to a relayed command */
	SG_PEND_DATA_END,   /* end-of-data seen, final reply awaited */
	SG_PEND_TLS,        /* STARTTLS handshake */
	SG_PEND_POLICY,     /* a [policy] server's verdict (policy_cmd.c) */
};

/* The client side's I/O. */
typedef struct sg_sess_io {
	sg_lines lines;
	sg_buf in;  /* plaintext from the client, bounded by SG_INBUF_MAX */
	sg_buf out; /* replies of the current pipelined group */
	size_t wq_bytes; /* written to libuv, not yet sent */
	bool reading;
	bool eof;        /* the client half-closed: finish what it sent, close */
} sg_sess_io;

/* TLS on the client side. */
typedef struct sg_sess_tls {
	sg_tls_ctx *ctx; /* own reference, may be NULL */
	sg_tls *eng;     /* the engine, from STARTTLS or an implicit listener */
	bool encrypted;  /* handshake done */
} sg_sess_tls;

/* AUTH (auth_cmd.c). */
typedef struct sg_sess_auth {
	sg_auth *sasl;     /* lazily created; freed once authenticated */
	bool ok;           /* authenticated: user is the identity */
	bool await;        /* a 334 was sent: next line is a SASL response */
	unsigned failures;
	char *user;  /* authenticated identity (SASL_USERNAME), whole */
	char *tried; /* login of this AUTH exchange, log form: exchange only */
	char mech[24];
	unsigned steps; /* client responses in this exchange */
	uint64_t t0;    /* uv_hrtime() at the AUTH command (metrics) */
} sg_sess_auth;

/* The mail transaction (MAIL to the end of DATA). */
typedef struct sg_sess_txn {
	char *mail_from; /* at most SG_PATH_MAX */
	bool mail_auth;  /* the client's MAIL had AUTH= (replaced by ours) */
	unsigned rcpts;
	uint64_t msg_size;
} sg_sess_txn;

/* The upstream link and the commands in flight on it (commands.c). */
typedef struct sg_sess_up {
	sg_link *link;
	/* Relayed commands whose replies are due, oldest first
	 * (reply_queue.c): a ring of SG_RQ_MAX verbs, NULL until first used. */
	unsigned char *rq;
	unsigned rq_head, rq_n;
	/* set by a command guard that must not answer yet (commands.c) */
	bool held;
	char *pend_line; /* MAIL line held while the link opens */
	size_t pend_len;
	/* sg_link_open may call ready before it returns (no server reachable
	 * at once): the reply is held here and handled after the call. */
	bool opening;
	int sync_code;
	char *sync_text;
	size_t sync_len;
} sg_sess_up;

/* BDAT (RFC 3030): a chunked message, and the chunk being read. */
typedef struct sg_sess_bdat {
	bool offered;   /* CHUNKING was in the EHLO reply this session got */
	/* The transaction is a chunked message: it stays in SG_ST_RCPT, and
	 * only BDAT, RSET and the commands outside transactions are taken
	 * until its LAST chunk is answered. */
	bool txn;
	bool open;      /* the link carries it (sg_link_bdat_begin) */
	char *fail;     /* the reply it failed with, for every later chunk */
	/* the chunk whose octets are being read: never commands */
	bool chunk;
	bool last;
	uint64_t size, left;
	enum sg_rep refused; /* SG_R_COUNT, or its reply (octets dropped) */
} sg_sess_bdat;

/* [policy] (policy_cmd.c): the check in flight, the line it holds back,
 * and the headers its PREPEND actions add to the message. */
typedef struct sg_sess_policy {
	struct sg_policy_query *q;
	char *line; /* the RCPT or DATA line to relay once passed */
	size_t len;
	int verb;
	char *rcpt; /* its recipient, for the log */
	char *prepend; /* "Name: value\r\n"..., for this transaction */
	bool end_seen; /* the link holds the end of data: ask now */
	bool eod;      /* the check in flight is at the end of data */
} sg_sess_policy;

/* The client's host name ([server] resolve_client; client_name.h). */
typedef struct sg_sess_name {
	sg_name_lookup *q; /* while the lookup runs */
	char *name;  /* forward-confirmed, allocated to its length; NULL: none */
	bool temp;   /* the lookup failed for now: [TEMPUNAVAIL] */
	/* a link open waiting for the lookup's answer: its ready callback and
	 * with_login (sg_session_name_wait) */
	sg_link_cb wait;
	bool with_login;
} sg_sess_name;

typedef struct sg_session {
	struct sg_session *next, *prev; /* worker's list (server.h) */
	sg_worker *w;
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t idle;  /* idle_timeout, re-armed per command */
	/* One timer for four waits that never overlap (a timer handle is 152
	 * octets a session): failure_delay before a 535, a link open waiting
	 * for the client's name and the close linger are never quiet(), and
	 * SG_TRIM_DELAY_MS runs only while the session is quiet (on_trim
	 * checks it again). */
	uv_timer_t delay;
	int handles;      /* open handles; freed when the last one closes */
	char id[SG_SID_LEN + 1];

	sg_config *cfg;              /* own reference */
	const sg_listener_cfg *lc;   /* &cfg->listeners[index] */

	enum sg_state state;
	enum sg_pending pending;
	bool in_process; /* re-entrancy guard of sg_session_process */
	bool again;      /* something changed while in_process */
	bool closing;
	bool draining;   /* shutdown: close when the transaction is over */
	bool data_active, data_paused;
	const char *close_reason;
	unsigned errors;
	uint64_t start_ms;

	char client_ip[SG_IP_MAX];
	unsigned client_port;
	char dest_ip[SG_IP_MAX];
	unsigned dest_port;
	/* Strings are allocated to their length when set and freed when no
	 * longer needed, so an idle authenticated session holds only its HELO
	 * name and login; NULL = none. */
	char *helo;      /* at most SG_HELO_MAX */
	bool esmtp;

	sg_sess_io io;
	sg_sess_tls tls;
	sg_sess_auth auth;
	sg_sess_txn txn;
	sg_sess_up up;
	sg_sess_name name;
	sg_sess_bdat bdat;
	sg_sess_policy pol;

	unsigned msgs;
	uint64_t bytes;
	char *qids; /* from the first message, shorter than SG_QIDS_MAX */
} sg_session;

/* session.c */
/* *dst = a copy of at most max octets of src (NULL: none); the old value
 * is freed. */
void sg_session_set_str(char **dst, const char *src, size_t max);
void sg_session_state(sg_session *s, enum sg_state st);
void sg_session_close(sg_session *s, const char *reason);
void sg_session_flush(sg_session *s);
void sg_session_process(sg_session *s);
/* An async result arrived: accept commands again and go on. */
void sg_session_resume(sg_session *s);
void sg_session_idle_rearm(sg_session *s);
/* STARTTLS accepted (220 queued): send it, drop buffered plaintext, start
 * the handshake. */
void sg_session_starttls(sg_session *s);
/* The SASL context, created on first use (NULL on failure). */
sg_auth *sg_session_auth(sg_session *s);
/* 354 relayed: stream the following bytes upstream. */
void sg_session_data_begin(sg_session *s);
/* [policy] at = end_of_data, after the verdict on a held end of data:
 * release sends the end (the upstream's final reply ends the message as
 * usual); refuse gives the message up upstream (never its end) and the
 * client gets text (a whole reply line) as the message's final reply. */
void sg_session_data_release(sg_session *s);
void sg_session_data_refuse(sg_session *s, int code, const char *text);
/* BDAT: the message's first chunk was accepted: the link carries it from
 * here (sg_link_bdat_begin). */
void sg_session_bdat_begin(sg_session *s);
/* BDAT: the size octets after the line are the chunk's, never commands.
 * refused: SG_R_COUNT to take them into the message, else the chunk's
 * reply, given once they are dropped. */
void sg_session_bdat_chunk(sg_session *s, uint64_t size, bool last,
                           enum sg_rep refused);
/* BDAT: the chunked message failed with text (a reply): the link's part
 * is given up, and every later chunk up to the LAST gets text. */
void sg_session_bdat_fail(sg_session *s, const char *text, size_t len);
/* BDAT: the transaction is over (RSET, the LAST answered, EHLO). */
void sg_session_bdat_reset(sg_session *s);
void sg_session_fill_identity(sg_session *s, sg_identity *id, bool with_login);
/* Called first by sg_cmd_open_link: true when the client's name is still
 * being looked up, and the open waits for it (at most SG_NAME_WAIT_MS from
 * the lookup's start), then goes on with sg_cmd_open_link(s, with_login,
 * ready). */
bool sg_session_name_wait(sg_session *s, bool with_login, sg_link_cb ready);

/* commands.c */
/* Decide one client line.  false: not now, leave it buffered; that
 * happens only while relayed commands await their replies (the line's
 * reply could depend on theirs) and it is read again once they are in. */
bool sg_cmd_line(sg_session *s, char *line, size_t len);
/* Drop transaction state (after RSET, end of DATA, EHLO). */
void sg_cmd_txn_reset(sg_session *s);
/* A relayed command's reply at its turn (reply_queue.c): apply it to the
 * transaction and answer the client.  r NULL: the link is gone. */
void sg_cmd_settle(sg_session *s, int verb, const sg_reply *r);

#endif
