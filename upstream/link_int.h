/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/link_int.h: the upstream link's state and the functions its
 * three files share.  Internal to upstream/: the session sees only link.h.
 *
 *   link_connect.c    open, resolve, connect, failover, timeouts, the
 *                     connection's bytes in and out, close, the probe
 *   link_handshake.c  greeting, EHLO, STARTTLS, the identity hand-over
 *                     (XCLIENT, XFORWARD check, service-account AUTH), READY
 *   link_xfer.c       the command queue and pipelining, MAIL AUTH=, DATA,
 *                     BDAT
 *
 * A link is a linear chain of phases, nginx-mail style, each named so a log
 * line says where an upstream failed:
 *   RESOLVE -> CONNECT -> GREETING -> EHLO [-> STARTTLS -> TLS -> EHLO]
 *   -> identity (XCLIENT -> EHLO | AUTH -> EHLO | nothing) -> READY
 * Any failure before READY moves to the next address / server (failover);
 * when none is left, ready gets 454 4.7.0 (fail closed: never a 2xx without
 * the identity, never a relay without it).
 *
 * Shared functions are named link_*; the public ones (link.h) sg_link_*. */
#ifndef SG_UPSTREAM_LINK_INT_H
#define SG_UPSTREAM_LINK_INT_H

#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/config.h"
#include "../common/tls.h"
#include "bdat.h"
#include "data_scan.h"
#include "identity.h"
#include "link.h"
#include "reply_parse.h"

/* Bounds: every buffer has a named bound. */
#define UP_WQ_HIGH (256 * 1024)      /* pause the client above this */
#define UP_WQ_LOW (64 * 1024)        /* and resume below this */
#define UP_CMD_MAX 512               /* RFC 5321 4.5.3.1.4 command line */
#define UP_PEER_MAX 300
#define UP_QID_MAX 64
#define UP_SCAN_IN (64 * 1024)       /* DATA octets scanned per step: one
                                        client read, one upstream write */
/* The scanner's output for UP_SCAN_IN octets: at most twice as long (bare
 * LF -> CRLF with normalize) plus a held header name and a held dot. */
#define UP_SCAN_OUT (2 * UP_SCAN_IN + SG_SCAN_HOLD + 16)
/* Room for the Received header (values of at most SG_TRACE_VALUE_MAX, the
 * date and ~200 octets of fixed text; a long login may need more, and such
 * a header is written on its own) and the final ".\r\n", written with the
 * message's first and last octets. */
#define UP_RCV_ROOM 4096

/* Ours, when the identity cannot be carried whole (identity.h): at open
 * and at a MAIL whose XFORWARD or AUTH= would not carry it. */
#define R_UNFIT "454 4.7.0 Temporary authentication failure: identity cannot be passed on\r\n"

enum phase {
	P_RESOLVE,
	P_CONNECT,
	P_GREETING,
	P_EHLO,
	P_STARTTLS,
	P_TLS,
	P_XCLIENT,
	P_AUTH,       /* AUTH PLAIN sent, or AUTH LOGIN waiting for 334 */
	P_AUTH_USER,  /* AUTH LOGIN: user sent */
	P_AUTH_PASS,  /* AUTH LOGIN: password sent */
	P_READY,
	P_DEAD,       /* no connection; reopened by the next command */
	P_CLOSED,     /* failed open, sg_link_close or probe done */
};

/* A queued command (link_xfer.c).  K_USER: the session's, answered through
 * cb; K_XFORWARD: ours, before a MAIL; K_DATA_END: the final dot or BDAT
 * LAST, whose reply is the message's; K_BDAT: a chunk of ours (RFC 3030),
 * whose refusal fails the message; K_BDAT_DATA: the DATA that relays a
 * chunked message to an upstream without CHUNKING, whose 354 lets its
 * octets go; K_RSET: ours, ending a chunked message given up. */
enum kind { K_USER, K_XFORWARD, K_DATA_END, K_BDAT, K_BDAT_DATA, K_RSET };

typedef struct pending {
	struct pending *next;
	int kind;
	bool sent;
	sg_link_cb cb;
	void *arg;
	size_t len;
	char line[]; /* the command, CRLF included */
} pending;

typedef struct deferred { /* a reply of ours, delivered from the loop */
	struct deferred *next;
	sg_link_cb cb;
	void *arg;
	int code;
	size_t len;
	char text[];
} deferred;

typedef struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	sg_link *l;
} conn;

struct sg_link {
	uv_loop_t *loop;
	sg_config *cfg;
	sg_identity id; /* strings owned */
	sg_link_cb ready;
	void *ready_arg;
	bool probe;     /* sg_upstream_probe: EHLO, QUIT, store caps */
	bool was_ready; /* reached READY once: reopen instead of ready cb */
	bool owner_gone; /* sg_link_close called: no more callbacks */
	int phase;

	/* [upstream] pool_size (link_pool.c): owned by the worker's pool,
	 * its RSET due (pool_rset) or answered and the link waiting to be
	 * handed on; reused: taken from the pool and no reply in yet, so a
	 * connection found closed is replaced once, unseen by the owner */
	bool pooled, pool_rset, reused;
	struct sg_link *pool_next, *pool_prev;

	/* which server / address */
	size_t srv;
	uv_getaddrinfo_t *gai; /* while a name is looked up */
	struct addrinfo *ais, *ai;
	const char *peer; /* the server's label in l->cfg */
	/* why the last server failed, for the one upstream_unavailable line;
	 * allocated at the first failure (an idle link that never failed
	 * carries none of it: idle sessions are kept small) */
	char *last_error;
	int nhandles; /* open handles + in-flight getaddrinfo */

	conn *c;
	uv_timer_t timer; /* connect / reply timeout */
	uint64_t t_armed;  /* uv_hrtime() when it was last armed (metrics) */
	uv_timer_t defer; /* delivers deferred replies */
	sg_reply_reader *rr; /* only while a reply is cut between reads */
	sg_tls_ctx *tls_ctx;
	sg_tls *tls;
	bool tls_on;
	bool tls_declined; /* opportunistic STARTTLS refused: plaintext */
	size_t wq; /* bytes queued in uv_write */
	bool quit_sent;

	sg_ehlo ehlo;
	bool identity_done; /* XCLIENT taken / AUTH 235: next EHLO is final */
	/* the identity cannot be carried whole (identity.h): the open fails
	 * with R_UNFIT and nothing is relayed */
	bool unfit;
	char (*xlines)[SG_XCLIENT_LINE_MAX + 1]; /* during the hand-over only */
	int nx, xi;
	char *password;

	/* commands */
	pending *head, *tail;
	int inflight;
	bool barrier_inflight;
	bool xforward_refused;
	deferred *dhead, *dtail;

	/* DATA */
	bool in_data;
	bool aborted; /* upstream connection dropped on purpose (bad/too big) */
	bool lost;    /* upstream connection lost during DATA */
	bool paused;
	sg_scan scan;
	char *rcv;    /* Received header without its date: pre, then post */
	char *prepend; /* header lines for the next message (link.h) */
	size_t prepend_len;
	size_t rcv_pre, rcv_post;
	bool rcv_due;    /* Received not written yet: goes with the first octets */
	time_t rcv_time; /* its date: when the 354 came */
	sg_link_cb done;
	void *done_arg;
	void (*drain)(void *arg);
	/* sg_link_data_hold_end: the end of data waits for the owner */
	void (*end_seen)(void *arg);
	bool end_held; /* all but the end written; finish or abort is due */
	char qid[UP_QID_MAX];

	/* BDAT: the message is the client's chunks (sg_link_bdat_*) */
	bool bdat;
	bool bdat_up;   /* relayed as BDAT: this upstream offers CHUNKING */
	bool bdat_wait; /* DATA sent for it, its 354 not in yet */
	bool bdat_held; /* the session was told to pause until a reply */
	char *bdat_err; /* the upstream's refusal of a chunk or of the DATA */
	sg_stuffer stuff;
	sg_unstuffer unstuff;
};

static inline const char *link_sid(const sg_link *l) { return l->id.sid; }

/* ---- link_connect.c ------------------------------------------------------ */

/* Plaintext to the upstream, through TLS once it is on: straight into the
 * socket while nothing is queued, the rest copied into a queued write.
 * 0, or -1 when the connection is gone or the write failed. */
int link_send(sg_link *l, const char *p, size_t n);
/* A command line (CRLF included), logged unless it is part of AUTH. */
int link_cmd(sg_link *l, const char *line);
/* What the TLS engine has for the socket (handshake records included). */
int link_flush_tls(sg_link *l);
/* (Re)start the reply timeout: ms from now (0 counts as 1). */
void link_arm(sg_link *l, uint64_t ms);
/* Close the current connection (its TLS too); the link stays. */
void link_conn_close(sg_link *l);
/* This server (address) failed before READY: log why, try the next one;
 * when none is left the open fails (454 4.7.0 to ready). */
void link_fail_server(sg_link *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A link that was READY lost its connection (or dropped it to abort a
 * message): connect again from the first server, identity and all. */
void link_reopen(sg_link *l);
/* Stop everything for good (P_CLOSED); freed once the owner let go. */
void link_finish(sg_link *l);
/* The owner lets go: QUIT when idle and quit is set, then close and free
 * (at once, or once QUIT is out). */
void link_end(sg_link *l, bool quit);
/* Replace the link's identity with a copy of id (strings owned). */
void link_set_identity(sg_link *l, const sg_identity *id);
/* The first line of a file (identity = auth's password), or NULL; the
 * caller wipes and frees it. */
char *link_read_secret(const char *path);
/* The worker's DATA output buffer: UP_SCAN_OUT + UP_RCV_ROOM octets, fixed
 * (never realloc'd), to be written before the loop runs on. */
sg_buf link_scratch(void);

/* ---- link_handshake.c ---------------------------------------------------- */

/* A reply before READY (greeting, EHLO, STARTTLS, XCLIENT, AUTH); t is its
 * first line for a log line. */
void link_handshake_reply(sg_link *l, const sg_reply_reader *rr,
                          const char *t);
/* Drive the TLS handshake with what has arrived; EHLO again once done. */
void link_tls_step(sg_link *l);

/* ---- link_pool.c --------------------------------------------------------- */

/* The owner lets go of l: true when the worker's pool took it (RSET sent;
 * kept once it is answered 250), false when it cannot be handed on. */
bool link_pool_put(sg_link *l);
/* A kept link for this session, made its own (identity, configuration,
 * ready called from the loop), or NULL: open a new one. */
sg_link *link_pool_take(uv_loop_t *loop, const sg_config *cfg,
                        const sg_identity *id, sg_link_cb ready, void *arg);
/* A reply while kept: the RSET's 250 makes it available; anything else
 * drops it. */
void link_pool_reply(sg_link *l, int code, const char *t);
/* Out of the pool and closed (QUIT first when quit is set). */
void link_pool_drop(sg_link *l, const char *why, bool quit);

/* ---- link_xfer.c --------------------------------------------------------- */

/* A reply in READY: the oldest command's; t as above. */
void link_ready_reply(sg_link *l, const sg_reply_reader *rr, const char *t);
/* Send what the queue allows (RFC 2920 groups). */
void link_pump(sg_link *l);
/* The connection went away after READY (or a reopen failed): logged once,
 * closed; unless the link is closed for good it waits in P_DEAD for the
 * next command, a message in progress is lost, and every queued command of
 * the session's gets 451 4.4.2. */
void link_became_dead(sg_link *l, const char *why);

#endif
