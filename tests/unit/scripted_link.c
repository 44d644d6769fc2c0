/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/scripted_link.c: upstream/link.h played by the test.
 *
 * Every function of link.h the proxy uses, for the driver's tests
 * (driver.h): linked into the test executable, these definitions win, so
 * upstream/link_connect.c, link_handshake.c and link_xfer.c are not linked
 * at all (a member of libsg_upstream.a that defined one of them again would
 * be a duplicate symbol, not a silent substitute).
 *
 * No connection and no SMTP: sg_link_command and sg_link_mail record the
 * line, sg_link_data_feed records the message octets and finds the end of
 * data (<CRLF>.<CRLF>, the start of the data counting as a line start).  A
 * reply comes only when the test gives one (link_reply), for the oldest
 * command still unanswered, and reaches the session from a timer callback
 * of the loop, as the real link's replies do (from its read callback, or
 * its defer timer for replies of its own): never from inside the session's
 * sg_link_* call.  What the contract of link.h promises is kept: one reply
 * per command, in order; after sg_link_close no callback; a ready that is
 * not 2xx leaves the link closed; a lost link answers every pending
 * command 451 4.4.2 and is no longer alive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

struct sg_link {
	struct sg_link *next; /* d->links */
	drv *d;
	bool ready_held;  /* ready waits for link_ready */
	bool ready_ok;    /* ready got a 2xx */
	bool alive;       /* ready got a 2xx and the link is not lost */
	bool lost;
	bool closed;      /* sg_link_close, or a ready that was not 2xx */
	bool in_data;     /* between data_begin and the end of data */
	bool bdat;        /* in_data is a chunked message (sg_link_bdat_*) */
	int eod;          /* end-of-data matcher: see data_feed */
	void (*end_seen)(void *arg); /* sg_link_data_hold_end */
	bool end_held;    /* the end of data waits for finish or abort */
	bool paused;      /* a feed set *pause: drain is due */
	char bdat_err[128]; /* link_refuse_chunk's text; "" while sound */
	void (*drain)(void *arg);
	sg_link_cb ready;
	void *ready_arg;
	sg_link_cb done;
	void *done_arg;
};

/* Something to deliver from the loop. */
typedef struct drv_event {
	struct drv_event *next;
	enum { EV_REPLY, EV_READY, EV_LOSE, EV_DRAIN } kind;
	struct sg_link *link;
	size_t cmd; /* EV_REPLY: index into d->cmd */
	char text[];
} drv_event;

static sg_upstream_caps caps_now;

/* ---------------------------------------------------------- the queue */

static void queue(drv *d, int kind, struct sg_link *l, size_t cmd,
                  const char *text)
{
	size_t n = text ? strlen(text) : 0;
	drv_event *e = sg_xcalloc(1, sizeof *e + n + 1);
	e->kind = kind;
	e->link = l;
	e->cmd = cmd;
	if (n)
		memcpy(e->text, text, n);
	if (d->ev_tail)
		d->ev_tail->next = e;
	else
		d->ev_head = e;
	d->ev_tail = e;
}

static size_t record(drv *d, struct sg_link *l, const char *line, size_t len,
                     sg_link_cb cb, void *arg)
{
	if (d->ncmd == d->capcmd) {
		d->capcmd = d->capcmd ? 2 * d->capcmd : 32;
		d->cmd = sg_xreallocarray(d->cmd, d->capcmd, sizeof *d->cmd);
	}
	drv_cmd *c = &d->cmd[d->ncmd];
	memset(c, 0, sizeof *c);
	c->link = l;
	if (line) {
		c->line = sg_xstrndup(line, len);
		c->len = len;
	}
	c->cb = cb;
	c->arg = arg;
	c->early = !l->ready_ok;
	/* a lost link answers at once (from the loop), as the real one does
	 * for what it cannot send */
	if (l->lost) {
		c->answered = true;
		queue(d, EV_REPLY, l, d->ncmd, DRV_LOST);
	}
	d->ncmd++;
	if (d->on_command)
		d->on_command(d, d->ncmd - 1);
	return d->ncmd - 1;
}

static void reply_to(sg_link_cb cb, void *arg, const char *text)
{
	sg_reply r = {atoi(text), text, strlen(text)};
	cb(arg, &r);
}

/* The lost link's fail_pending: every command still unanswered, in order,
 * in this one callback, as long as the owner keeps the link. */
static void lose(drv *d, struct sg_link *l)
{
	l->alive = false;
	l->lost = true;
	for (size_t i = 0; i < d->ncmd && !l->closed; i++) {
		drv_cmd *c = &d->cmd[i];
		if (c->link != l || c->answered)
			continue;
		c->answered = true;
		/* the callback may record more (d->cmd moves) */
		sg_link_cb cb = c->cb;
		void *arg = c->arg;
		reply_to(cb, arg, DRV_LOST);
	}
	/* the lost connection's writes are cancelled: the queue drains */
	if (l->paused && !l->closed) {
		l->paused = false;
		l->drain(l->done_arg);
	}
}

static void deliver(drv *d, drv_event *e)
{
	struct sg_link *l = e->link;
	if (l->closed)
		return; /* link.h: pending callbacks are not called */
	switch (e->kind) {
	case EV_READY: {
		int code = atoi(e->text);
		if (code >= 200 && code < 300)
			l->alive = l->ready_ok = true;
		else
			l->closed = true; /* link.h: closed on a non-2xx ready */
		reply_to(l->ready, l->ready_arg, e->text);
		break;
	}
	case EV_REPLY: {
		drv_cmd *c = &d->cmd[e->cmd];
		reply_to(c->cb, c->arg, e->text);
		break;
	}
	case EV_LOSE:
		lose(d, l);
		break;
	case EV_DRAIN:
		if (l->paused) {
			l->paused = false;
			l->drain(l->done_arg);
		}
		break;
	}
}

static void on_deliver(uv_timer_t *t)
{
	drv *d = t->data;
	unsigned n = d->batch;
	d->batch = 0;
	/* only what was queued before: what the session's callbacks queue
	 * now goes in the next round */
	while (n-- > 0 && d->ev_head) {
		drv_event *e = d->ev_head;
		d->ev_head = e->next;
		if (!d->ev_head)
			d->ev_tail = NULL;
		deliver(d, e);
		free(e);
	}
}

bool drv_link_arm(drv *d)
{
	if (!d->ev_head || d->batch)
		return d->ev_head != NULL;
	for (drv_event *e = d->ev_head; e; e = e->next)
		d->batch++;
	uv_timer_start(&d->deliver, on_deliver, 0, 0);
	return true;
}

void drv_link_init(drv *d)
{
	d->ready_reply = DRV_READY_OK;
	sg_buf_init(&d->lines, 0);
	sg_buf_init(&d->data, 0);
	memset(&caps_now, 0, sizeof caps_now);
}

void drv_link_free(drv *d)
{
	while (d->ev_head) {
		drv_event *e = d->ev_head;
		d->ev_head = e->next;
		free(e);
	}
	d->ev_tail = NULL;
	while (d->links) {
		struct sg_link *l = d->links;
		d->links = l->next;
		free(l);
	}
	d->cur = NULL;
	for (size_t i = 0; i < d->ncmd; i++)
		free(d->cmd[i].line);
	free(d->cmd);
	d->cmd = NULL;
	d->ncmd = d->capcmd = 0;
	free(d->feeds);
	d->feeds = NULL;
	d->nfeeds = d->capfeeds = 0;
	sg_buf_free(&d->lines);
	sg_buf_free(&d->data);
}

/* ------------------------------------------------------- the test's side */

int link_reply(drv *d, const char *text)
{
	for (size_t i = 0; i < d->ncmd; i++) {
		drv_cmd *c = &d->cmd[i];
		if (c->answered || c->link->closed)
			continue;
		c->answered = true;
		queue(d, EV_REPLY, c->link, i, text);
		return 0;
	}
	fprintf(stderr, "link_reply: no command awaits a reply (%.*s)\n",
	        (int)strcspn(text, "\r\n"), text);
	return -1;
}

int link_lose(drv *d)
{
	if (!d->cur || d->cur->closed) {
		if (!drv_fuzzing) /* the fuzz target tries at random */
			fprintf(stderr, "link_lose: no open link\n");
		return -1;
	}
	queue(d, EV_LOSE, d->cur, 0, NULL);
	return 0;
}

int link_refuse_chunk(drv *d, const char *text)
{
	struct sg_link *l = d->cur;
	if (!l || l->closed || !l->in_data || !l->bdat)
		return -1;
	snprintf(l->bdat_err, sizeof l->bdat_err, "%s", text);
	return 0;
}

int link_drain(drv *d)
{
	for (struct sg_link *l = d->links; l; l = l->next)
		if (l->paused && !l->closed) {
			queue(d, EV_DRAIN, l, 0, NULL);
			return 0;
		}
	return -1;
}

int link_ready(drv *d, const char *text)
{
	for (struct sg_link *l = d->links; l; l = l->next)
		if (l->ready_held) {
			l->ready_held = false;
			queue(d, EV_READY, l, 0, text);
			return 0;
		}
	if (!drv_fuzzing) /* the fuzz target tries at random */
		fprintf(stderr, "link_ready: no ready callback is held\n");
	return -1;
}

size_t link_nlines(drv *d)
{
	size_t n = 0;
	for (size_t i = 0; i < d->ncmd; i++)
		n += d->cmd[i].line != NULL;
	return n;
}

const char *link_line(drv *d, size_t i)
{
	for (size_t k = 0; k < d->ncmd; k++)
		if (d->cmd[k].line && i-- == 0)
			return d->cmd[k].line;
	return NULL;
}

const char *link_lines(drv *d)
{
	sg_buf_reset(&d->lines);
	for (size_t i = 0; i < d->ncmd; i++)
		if (d->cmd[i].line)
			sg_buf_append(&d->lines, d->cmd[i].line, d->cmd[i].len);
	sg_buf_append(&d->lines, "", 1);
	return d->lines.data;
}

long link_next(drv *d)
{
	for (size_t i = 0; i < d->ncmd; i++)
		if (!d->cmd[i].answered && !d->cmd[i].link->closed)
			return (long)i;
	return -1;
}

unsigned link_unanswered(drv *d)
{
	unsigned n = 0;
	for (size_t i = 0; i < d->ncmd; i++)
		n += !d->cmd[i].answered && !d->cmd[i].link->closed;
	return n;
}

void link_set_caps(const sg_upstream_caps *caps)
{
	if (caps)
		caps_now = *caps;
	else
		memset(&caps_now, 0, sizeof caps_now);
}

/* ---------------------------------------------------------- link.h */

/* A call on a link after sg_link_close (or a refused ready): the real
 * link may be freed by then (link.h), so every such call is a session
 * bug, counted in misuse.  true: the caller returns. */
static bool closed_use(const struct sg_link *l, const char *what)
{
	if (!l->closed)
		return false;
	l->d->misuse++;
	fprintf(stderr, "scripted link: %s on a closed link\n", what);
	return true;
}

/* The octets of one feed call, recorded in d->data. */
static void record_feed(drv *d, const char *buf, size_t len, bool bdat)
{
	if (len == 0)
		return;
	if (d->nfeeds == d->capfeeds) {
		d->capfeeds = d->capfeeds ? 2 * d->capfeeds : 16;
		d->feeds = sg_xreallocarray(d->feeds, d->capfeeds, sizeof *d->feeds);
	}
	d->feeds[d->nfeeds++] = (drv_feed){d->data.len, len, d->nmsg, bdat};
	sg_buf_append(&d->data, buf, len);
}

sg_link *sg_link_open(uv_loop_t *loop, const sg_config *cfg,
                      const sg_identity *id, sg_link_cb ready, void *arg)
{
	drv *d = loop->data;
	struct sg_link *l = sg_xcalloc(1, sizeof *l);
	l->d = d;
	d->nopen++;
	l->ready = ready;
	l->ready_arg = arg;
	l->next = d->links;
	d->links = l;
	d->cur = l;
	if (d->ready_reply)
		queue(d, EV_READY, l, 0, d->ready_reply);
	else
		l->ready_held = true;
	return l;
}

void sg_link_command(sg_link *l, const char *line, size_t len, sg_link_cb cb,
                     void *arg)
{
	if (closed_use(l, "command"))
		return;
	/* link.h: a command gives it up */
	if (l->in_data && l->bdat)
		l->in_data = l->bdat = false;
	record(l->d, l, line, len, cb, arg);
}

void sg_link_mail(sg_link *l, const char *line, size_t len, bool auth_param,
                  sg_link_cb cb, void *arg)
{
	if (closed_use(l, "MAIL"))
		return;
	size_t i = record(l->d, l, line, len, cb, arg);
	l->d->cmd[i].mail = true;
	l->d->cmd[i].auth_param = auth_param;
}

void sg_link_data_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg))
{
	if (closed_use(l, "DATA"))
		return;
	l->d->nmsg++;
	l->in_data = true;
	l->eod = 2; /* the data starts at a line start */
	l->done = done;
	l->done_arg = arg;
	l->drain = drain;
	l->paused = false;
	l->bdat_err[0] = '\0';
	l->end_seen = NULL;
	l->end_held = false;
	l->d->qid[0] = '\0';
}

void sg_link_data_hold_end(sg_link *l, void (*end_seen)(void *arg))
{
	if (closed_use(l, "data_hold_end"))
		return;
	if (l->in_data && !l->bdat)
		l->end_seen = end_seen;
}

/* The held end: recorded now, its reply (the message's) from the test. */
void sg_link_data_finish(sg_link *l)
{
	if (closed_use(l, "data_finish"))
		return;
	if (!l->end_held)
		return;
	l->end_held = false;
	l->d->ndata_end++;
	record(l->d, l, NULL, 0, l->done, l->done_arg);
}

/* The held message given up: the connection goes, as the real link's. */
void sg_link_data_abort(sg_link *l)
{
	if (closed_use(l, "data_abort"))
		return;
	if (!l->end_held)
		return;
	l->end_held = false;
	l->alive = false;
	l->lost = true;
}

/* [policy] PREPEND headers: no driver test checks the message text. */
void sg_link_data_header(sg_link *l, const char *lines, size_t len)
{
	(void)lines, (void)len;
	closed_use(l, "data_header");
}

/* The matcher's states: 0 in a line, 1 after CR, 2 at a line start (after
 * CRLF), 3 after "<CRLF>.", 4 after "<CRLF>.<CR>"; "<CRLF>.<CRLF>" ends. */
size_t sg_link_data_feed(sg_link *l, const char *buf, size_t len, bool *pause)
{
	*pause = false;
	if (closed_use(l, "data_feed") || !l->in_data)
		return 0;
	size_t i = 0;
	bool end = false;
	while (i < len && !end) {
		char c = buf[i++];
		switch (l->eod) {
		case 2:
			l->eod = c == '.' ? 3 : c == '\r' ? 1 : 0;
			break;
		case 3:
			l->eod = c == '\r' ? 4 : 0;
			break;
		case 4:
			if (c == '\n')
				end = true;
			else
				l->eod = c == '\r' ? 1 : 0;
			break;
		case 1:
			l->eod = c == '\n' ? 2 : c == '\r' ? 1 : 0;
			break;
		default:
			l->eod = c == '\r' ? 1 : 0;
			break;
		}
	}
	record_feed(l->d, buf, i, false);
	if (l->d->pausing && i > 0 && !end) {
		l->paused = true;
		*pause = true;
	}
	if (end && l->end_seen) {
		l->in_data = false;
		l->end_held = true;
		l->end_seen(l->done_arg);
	} else if (end) {
		l->in_data = false;
		l->d->ndata_end++;
		/* its reply is the message's (lost: ours, from the loop) */
		record(l->d, l, NULL, 0, l->done, l->done_arg);
	}
	return i;
}

/* BDAT: the chunks' octets are recorded as they come (raw, d->data); the
 * LAST records the end, whose reply is the message's, as for DATA. */
void sg_link_bdat_begin(sg_link *l, sg_link_cb done, void *arg,
                        void (*drain)(void *arg))
{
	sg_link_data_begin(l, done, arg, drain);
	l->bdat = l->in_data;
	l->d->nmsg_bdat += l->bdat;
}

size_t sg_link_bdat_feed(sg_link *l, const char *buf, size_t len, bool last,
                         bool *pause)
{
	*pause = false;
	if (closed_use(l, "bdat_feed"))
		return len;
	if (!l->in_data || !l->bdat) {
		l->d->misuse++;
		fprintf(stderr, "scripted link: BDAT octets without a message\n");
		return len;
	}
	if (l->d->pausing && len > 0) {
		/* link.h: nothing past the count is taken, with last not the
		 * end either: it comes with a call after the drain.  Half of
		 * it (at least one octet), as a full write queue would. */
		size_t took = (len + 1) / 2;
		record_feed(l->d, buf, took, true);
		l->paused = true;
		*pause = true;
		return took;
	}
	record_feed(l->d, buf, len, true);
	if (last) {
		l->in_data = l->bdat = false;
		l->d->ndata_end++;
		size_t i = record(l->d, l, NULL, 0, l->done, l->done_arg);
		/* a refused chunk failed the message: the refusal is the
		 * LAST's reply, at once (from the loop) */
		if (l->bdat_err[0] && !l->d->cmd[i].answered) {
			l->d->cmd[i].answered = true;
			queue(l->d, EV_REPLY, l, i, l->bdat_err);
		}
	}
	return len;
}

const char *sg_link_bdat_status(const sg_link *l)
{
	if (closed_use(l, "bdat_status"))
		return DRV_LOST;
	if (!l->in_data || !l->bdat) {
		l->d->misuse++;
		fprintf(stderr, "scripted link: BDAT status without a message\n");
		return DRV_LOST;
	}
	if (l->lost)
		return DRV_LOST;
	return l->bdat_err[0] ? l->bdat_err : NULL;
}

void sg_link_bdat_cancel(sg_link *l)
{
	if (closed_use(l, "bdat_cancel"))
		return;
	if (l->in_data && l->bdat)
		l->in_data = l->bdat = false;
}

const char *sg_link_last_queue_id(sg_link *l)
{
	closed_use(l, "last_queue_id");
	return l->d->qid;
}

const char *sg_link_peer(sg_link *l)
{
	closed_use(l, "peer");
	return "scripted:25";
}

bool sg_link_alive(sg_link *l)
{
	return l && !closed_use(l, "alive") && l->alive;
}

void sg_link_close(sg_link *l)
{
	if (!l)
		return;
	drv *d = l->d;
	if (l->closed) {
		d->misuse++;
		fprintf(stderr, "scripted link: closed twice (or after a "
		        "refused ready)\n");
		return;
	}
	d->nclose++;
	l->closed = true;
	l->alive = false;
	l->ready_held = false;
	/* link.h: pending callbacks are not called */
	for (size_t i = 0; i < d->ncmd; i++)
		if (d->cmd[i].link == l)
			d->cmd[i].answered = true;
}

void sg_upstream_probe(uv_loop_t *loop, const sg_config *cfg)
{
	(void)loop;
	(void)cfg;
}

sg_upstream_caps sg_upstream_caps_get(void) { return caps_now; }

/* No connection is kept: there is none. */
void sg_link_pool_reconfig(uv_loop_t *loop, const sg_config *cfg)
{
	(void)loop;
	(void)cfg;
}

void sg_link_pool_shutdown(uv_loop_t *loop) { (void)loop; }
