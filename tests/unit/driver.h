/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/driver.h: the real session engine (proxy/session.c,
 * commands.c, reply.c, ...) driven in-process, on a libuv loop of the test,
 * against a scripted upstream link (scripted_link.c).
 *
 * The driver sets up a worker and one listener the way proxy/server.c does
 * (config loaded from a text written to a temp file, listener bound on
 * 127.0.0.1:0, sg_session_accept called from its connection callback) and
 * connects a plain non-blocking client socket to it.  The test writes bytes
 * as the client (drv_send), runs the loop until nothing more happens
 * (drv_run), reads what the client received (drv_client_text, drv_take)
 * and plays the upstream: every line the session hands to the link is
 * recorded, and the test answers the oldest unanswered one (link_reply),
 * loses the link (link_lose) or chooses what sg_link_open's ready callback
 * gets.
 *
 * Replies of the scripted link reach the session only from the loop: the
 * ones given between two drv_run calls are delivered together in one timer
 * callback of the next drv_run (as several replies read from the upstream in
 * one read would be), never from inside the session's own sg_link_* call.
 * After each callback the driver reads the client socket, so the number
 * of reads the client needed (drv_client_reads) tells how many separate
 * writes a group's replies took.
 *
 * One driver at a time; drv_stop closes everything and leaves the loop
 * empty (no leak under ASan/LSan). */
#ifndef SG_TEST_DRIVER_H
#define SG_TEST_DRIVER_H

#include <stdbool.h>
#include <stddef.h>

#include "../../common/buf.h"
#include "../../proxy/server.h"
#include "../../upstream/link.h"

/* ready's text on success, as the real link gives it */
#define DRV_READY_OK "250 2.0.0 Upstream ready\r\n"
/* what every command pending on a lost link gets (upstream/link_xfer.c) */
#define DRV_LOST "451 4.4.2 Upstream connection lost\r\n"

/* One line the session handed to a link, or the end of a message (line
 * NULL): its reply is due in this order. */
typedef struct drv_cmd {
	struct sg_link *link;
	char *line;     /* as handed over, CRLF included; NULL: end of DATA */
	size_t len;
	bool mail;      /* by sg_link_mail */
	bool auth_param; /* sg_link_mail's auth_param */
	bool answered;  /* a reply is given (or dropped with its link) */
	bool early;     /* handed over before the link's ready got a 2xx */
	sg_link_cb cb;
	void *arg;
} drv_cmd;

struct drv_event; /* scripted_link.c */

/* One sg_link_data_feed / sg_link_bdat_feed call's octets in drv.data. */
typedef struct drv_feed {
	size_t at, len;  /* where in drv.data */
	unsigned msg;    /* which message: drv.nmsg when it was fed */
	bool bdat;       /* a chunked message's (raw chunk octets) */
} drv_feed;

typedef struct drv {
	sg_worker w;      /* the loop is w.loop */
	sg_listener l;
	int port;         /* the listener's */
	int fd;           /* the client's socket; -1 once closed */
	char path[64];    /* the config file while loading */
	bool started;     /* the loop is initialised: drv_stop has work */

	/* the client side */
	sg_buf text;      /* received, not yet taken */
	sg_buf taken;     /* what the last drv_take returned */
	unsigned reads;   /* reads that brought text, since the last take */
	bool eof;         /* the session closed the connection */
	bool shut;        /* the client half-closed (drv_shutdown) */

	/* the scripted link */
	const char *ready_reply; /* what the next ready gets; NULL: held */
	bool pausing;            /* a feed that takes octets pauses: drain at
	                          * link_drain (link.h's backpressure) */
	struct sg_link *links;   /* every link opened, newest first */
	struct sg_link *cur;     /* the newest */
	unsigned nopen;          /* sg_link_open calls */
	unsigned nclose;         /* sg_link_close calls */
	unsigned misuse;         /* calls on a closed link, BDAT octets or
	                          * status without a message: a session bug */
	drv_cmd *cmd;            /* every command, in order */
	void (*on_command)(struct drv *d, size_t i); /* called as each is
	                          * recorded (NULL: none), from inside the
	                          * session's sg_link_* call */
	size_t ncmd, capcmd;
	sg_buf lines;            /* link_lines' text */
	sg_buf data;             /* message octets consumed by data_feed */
	unsigned ndata_end;      /* ends of message seen */
	unsigned nmsg;           /* messages begun (data_begin, bdat_begin) */
	unsigned nmsg_bdat;      /* of which by bdat_begin */
	drv_feed *feeds;         /* every feed call that took octets */
	size_t nfeeds, capfeeds;
	char qid[32];            /* sg_link_last_queue_id */
	struct drv_event *ev_head, *ev_tail; /* replies to deliver */
	uv_timer_t deliver;
	unsigned batch;          /* events the armed delivery will deliver */
} drv;

/* ---- the driver (driver.c) ---- */

/* For the fuzz target (tests/fuzz/fuzz_session.c), which runs thousands
 * of sessions: drv_run and drv_stop take a step with nothing ready as
 * quiet at once rather than after waiting DRV_QUIET_MS (on loopback a
 * send is readable by the peer when it returns, and the scripted link's
 * replies are due at once), and drv_stop resets the client's connection
 * (SO_LINGER 0) so no TIME_WAIT socket is left behind per run.  Off by
 * default: the unit tests keep the waits. */
extern bool drv_fuzzing;

/* Load a config of a plaintext listener (tls = none, require_auth = no,
 * identity = none) with the extra lines appended (e.g.
 * "[limits]\nmax_recipients = 2\n" or "[listener test]\nrequire_auth = yes\n";
 * NULL: none), start the loop, the listener and the client; run until the
 * greeting is in, and take it.  0 when greeted, -1 (reported) otherwise. */
int drv_start(drv *d, const char *extra);
/* Write bytes as the client (all of them; small writes). */
void drv_send(drv *d, const char *bytes);
/* The same for len octets, NULs included. */
void drv_send_n(drv *d, const char *bytes, size_t len);
/* Half-close the client: shutdown(SHUT_WR). */
void drv_shutdown(drv *d);
/* Run the loop (UV_RUN_NOWAIT) until nothing more happens: the replies
 * given since the last run delivered, the session done with them, the
 * client's socket read.  Bounded; -1 (reported) when it never settled. */
int drv_run(drv *d);
/* What the client received and has not taken (NUL-terminated). */
const char *drv_client_text(drv *d);
/* Reads that brought that text (each read after a loop callback). */
unsigned drv_client_reads(drv *d);
/* drv_client_text, then clear it and the read count; the string stays
 * valid until the next take. */
const char *drv_take(drv *d);
/* EHLO, run, take the reply; 0 when it ends in a 250 line. */
int drv_ehlo(drv *d);
/* Close the client, let the session close, close everything, run the
 * loop empty, free.  -1 (reported) when the loop is not empty after. */
int drv_stop(drv *d);

/* ---- the scripted link (scripted_link.c) ---- */

/* The oldest unanswered command (or end of message) of a live link gets
 * text ("250 2.1.0 Ok\r\n"), delivered at the next drv_run.  -1 when none
 * is unanswered. */
int link_reply(drv *d, const char *text);
/* The newest link loses its upstream at this point of the reply stream:
 * at the next drv_run, after the replies given before, it is no longer
 * alive and every command still unanswered then gets DRV_LOST, in order,
 * in one callback (as upstream/link_xfer.c fail_pending does).  Commands
 * handed to it later get DRV_LOST too (the real link would reconnect).
 * -1 when there is no open link. */
int link_lose(drv *d);
/* The upstream refuses a chunk of the newest link's chunked message: from
 * now on sg_link_bdat_status gives text (a 4xx/5xx line, CRLF included)
 * and the LAST's reply is text, as the real link's after a refused BDAT.
 * -1 when that link has no chunked message open. */
int link_refuse_chunk(drv *d, const char *text);
/* A link that paused the session (d->pausing) drains at the next drv_run,
 * as the real one does once its write queue is low.  -1 when none is
 * paused. */
int link_drain(drv *d);
/* A ready callback held (ready_reply NULL) gets text at the next drv_run.
 * -1 when none is held. */
int link_ready(drv *d, const char *text);
/* Command lines handed to links (ends of message not counted), the i-th
 * of them (NULL past the end), and all of them concatenated. */
size_t link_nlines(drv *d);
const char *link_line(drv *d, size_t i);
const char *link_lines(drv *d);
/* Commands and ends of message not answered yet. */
unsigned link_unanswered(drv *d);
/* The index in d->cmd of the command link_reply would answer now; -1
 * when none. */
long link_next(drv *d);
/* What sg_upstream_caps_get returns (all false until set). */
void link_set_caps(const sg_upstream_caps *caps);

/* driver.c <-> scripted_link.c */
void drv_link_init(drv *d);
void drv_link_free(drv *d);
bool drv_link_arm(drv *d); /* start delivering what is queued: true if any */

#endif
