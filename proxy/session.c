/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/session.c: one client connection, from accept to close.
 *
 * The session owns its socket, TLS engine, SASL context and upstream link
 * (docs/ARCHITECTURE.md).  Input is read into a bounded buffer (plaintext, or
 * ciphertext fed to the TLS engine and pulled back as plaintext), framed into
 * command lines by smtp_parse.c and dispatched through the command table in
 * commands.c.  Replies collect in s->io.out and are written once per pipelined
 * group (RFC 2920 3.1).  One command at a time: while an async result (SASL
 * on the thread pool, an upstream reply, the failure delay) is pending no
 * further command is taken from the buffer, which keeps replies in order
 * (RCPT/DATA lines behind a MAIL or RCPT may be sent upstream early, but
 * each is still decided and answered at its turn: commands.c).
 *
 * Memory: every libuv handle of the session is freed only in its close
 * callback; the struct goes when the last one has closed. */
#include "session.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/metrics.h"
#include "../upstream/identity.h"
#include "client_name.h"
#include "commands_int.h"
#include "proxyproto.h"
#include "reply.h"
#include "reply_queue.h"
#include "session_int.h"

static const char *const state_name[] = {
	[SG_ST_GREETING] = "GREETING", [SG_ST_TLS_HANDSHAKE] = "TLS_HANDSHAKE",
	[SG_ST_HELO] = "HELO",         [SG_ST_READY] = "READY",
	[SG_ST_AUTH_PENDING] = "AUTH_PENDING", [SG_ST_MAIL] = "MAIL",
	[SG_ST_RCPT] = "RCPT",         [SG_ST_DATA] = "DATA",
	[SG_ST_CLOSING] = "CLOSING",
};

/* ------------------------------------------------------------ session ids */

static uv_once_t sid_once = UV_ONCE_INIT;
static unsigned long long sid_base;
static unsigned sid_counter;

static void sid_init(void) { sid_base = (unsigned long long)time(NULL); }

/* 12 hex characters: 20 bits of the process start time and a 28-bit
 * counter shared by all workers, so ids are unique within a process and
 * rarely repeat across restarts. */
static void make_sid(char *out)
{
	uv_once(&sid_once, sid_init);
	unsigned n = __atomic_add_fetch(&sid_counter, 1, __ATOMIC_RELAXED);
	snprintf(out, SG_SID_LEN + 1, "%05llx%07x", sid_base & 0xfffffULL,
	         n & 0xfffffffu);
}

/* --------------------------------------------------------------- helpers */

void sg_session_state(sg_session *s, enum sg_state st)
{
	if (s->state == st)
		return;
	log_debug(s->id, "state %s -> %s", state_name[s->state], state_name[st]);
	s->state = st;
}

void sg_session_set_str(char **dst, const char *src, size_t max)
{
	free(*dst);
	*dst = src ? sg_xstrndup(src, max) : NULL;
}

static void addr_text(const struct sockaddr_storage *ss, char *ip, size_t iplen,
                      unsigned *port)
{
	ip[0] = '\0';
	*port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		uv_ip4_name(a, ip, iplen);
		*port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		uv_ip6_name(a, ip, iplen);
		*port = ntohs(a->sin6_port);
	}
	if (!ip[0])
		snprintf(ip, iplen, "unknown");
}

static bool in_transaction(const sg_session *s)
{
	return s->state == SG_ST_MAIL || s->state == SG_ST_RCPT ||
	       s->state == SG_ST_DATA || s->state == SG_ST_AUTH_PENDING ||
	       s->pending != SG_PEND_NONE;
}

/* ----------------------------------------------------------------- output */

typedef struct wreq {
	uv_write_t req;
	size_t len;
	char data[];
} wreq;

static void finish_close(sg_session *s);
static void update_reading(sg_session *s);

static void on_write(uv_write_t *req, int status)
{
	wreq *wr = (wreq *)req;
	sg_session *s = req->data;
	s->io.wq_bytes -= wr->len;
	free(wr);
	if (status < 0 && !s->closing)
		sg_session_close(s, "write error");
	if (s->closing) {
		if (s->io.wq_bytes == 0)
			finish_close(s);
		return;
	}
	update_reading(s);
}

static void write_raw(sg_session *s, const char *p, size_t len)
{
	if (len == 0 || uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	/* The log lines held so far describe what led to these octets: they
	 * reach the log before the client can see the reply (a reader of the
	 * log, fail2ban or a test, never sees a reply its line is missing
	 * for). */
	sg_log_flush();
	/* Nothing queued: write now.  The socket usually takes it all, and
	 * then there is no request to allocate and no completion callback,
	 * whose uv__io_stop(POLLOUT) costs an epoll_ctl per write (a
	 * session of many messages would pay ten a message).  Order is kept because we only
	 * try while the queue is empty. */
	if (s->io.wq_bytes == 0) {
		int n = uv_try_write((uv_stream_t *)&s->tcp,
		                     &(uv_buf_t){.base = (char *)p, .len = len}, 1);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			if (len == 0)
				return;
		} else if (n != UV_EAGAIN && n != UV_ENOSYS) {
			if (!s->closing)
				sg_session_close(s, "write error");
			return;
		}
	}
	wreq *wr = sg_xmalloc(sizeof *wr + len);
	wr->len = len;
	memcpy(wr->data, p, len);
	wr->req.data = s;
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
	int r = uv_write(&wr->req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
	if (r < 0) {
		free(wr);
		if (!s->closing)
			sg_session_close(s, "write error");
		return;
	}
	s->io.wq_bytes += len;
}

static void send_tls_out(sg_session *s)
{
	size_t len;
	const char *p;
	while (s->tls.eng && (p = sg_tls_out(s->tls.eng, &len)) && len > 0) {
		write_raw(s, p, len);
		sg_tls_out_consume(s->tls.eng, len);
	}
}

void sg_session_flush(sg_session *s)
{
	if (s->io.out.len == 0)
		return;
	if (s->tls.eng && !s->tls.encrypted) {
		/* mid-handshake: a plaintext reply would corrupt the stream */
		sg_buf_reset(&s->io.out);
		return;
	}
	if (s->tls.eng) {
		if (sg_tls_write(s->tls.eng, s->io.out.data, s->io.out.len) < 0)
			log_warn(s->id, "tls write failed: %s", sg_tls_error(s->tls.eng));
		send_tls_out(s);
	} else {
		write_raw(s, s->io.out.data, s->io.out.len);
	}
	/* kept for the next reply; freed when the session goes quiet */
	sg_buf_reset(&s->io.out);
}

/* ------------------------------------------------------------ lifecycle */

static void on_handle_closed(uv_handle_t *h)
{
	sg_session *s = h->data;
	if (--s->handles > 0)
		return;
	sg_worker *w = s->w;
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	sg_tls_free(s->tls.eng);
	sg_buf_free(&s->io.in);
	sg_buf_free(&s->io.out);
	free(s->up.pend_line);
	free(s->helo);
	free(s->name.name);
	free(s->auth.user);
	free(s->auth.tried);
	free(s->txn.mail_from);
	free(s->qids);
	free(s->bdat.fail);
	if (s->tls.ctx)
		sg_tls_ctx_unref(s->tls.ctx);
	sg_metrics_closed(s->lc->name);
	sg_config_unref(s->cfg);
	sg_server_conn_dec();
	free(s);
}

static void finish_close(sg_session *s)
{
	if (uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	sg_log_flush(); /* event=disconnect before the client sees the close */
	uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&s->idle, on_handle_closed);
	uv_close((uv_handle_t *)&s->delay, on_handle_closed);
}

static void on_linger(uv_timer_t *t)
{
	/* the client does not take our last reply: give up on it */
	finish_close(t->data);
}

static void log_disconnect(sg_session *s)
{
	double secs = (double)(uv_now(s->loop) - s->start_ms) / 1000.0;
	char tls[160] = "none";
	if (s->tls.eng && s->tls.encrypted)
		snprintf(tls, sizeof tls, "%s/%s", sg_tls_version(s->tls.eng),
		         sg_tls_cipher(s->tls.eng));
	char user[SG_USER_LOG_MAX];
	sg_identity_log(user, sizeof user, s->auth.ok ? s->auth.user : NULL);
	log_info(s->id,
	         "event=disconnect client=%s:%u tls=%s user=%s msgs=%u bytes=%llu "
	         "queue_ids=%s time=%.3f reason=%s",
	         s->client_ip, s->client_port, tls, user, s->msgs,
	         (unsigned long long)s->bytes, s->qids ? s->qids : "-", secs,
	         s->close_reason ? s->close_reason : "-");
	sg_metrics_session(s->lc->name, false);
}

/* Forget the SASL exchange and the upstream link; both drop their pending
 * callbacks (auth.h, link.h). */
static void drop_auth_and_link(sg_session *s)
{
	if (s->auth.sasl) {
		sg_auth_free(s->auth.sasl);
		s->auth.sasl = NULL;
	}
	sg_rq_free(s);
	if (s->up.link) {
		sg_link_close(s->up.link);
		s->up.link = NULL;
	}
}

void sg_session_close(sg_session *s, const char *reason)
{
	if (s->closing)
		return;
	s->closing = true;
	s->close_reason = reason;
	sg_session_state(s, SG_ST_CLOSING);
	uv_timer_stop(&s->idle);
	uv_timer_stop(&s->delay); /* also a pending trim */
	/* a running lookup cannot be stopped: it frees itself, unheard */
	sg_name_cancel(s->name.q);
	s->name.q = NULL;
	s->name.wait = NULL;
	drop_auth_and_link(s);
	sg_policy_session_end(s); /* a check in flight ends unheard */
	log_disconnect(s);
	if (!uv_is_closing((uv_handle_t *)&s->tcp))
		uv_read_stop((uv_stream_t *)&s->tcp);
	s->io.reading = false;
	sg_session_flush(s);
	if (s->tls.eng && s->tls.encrypted) {
		sg_tls_shutdown(s->tls.eng);
		send_tls_out(s);
	}
	if (s->io.wq_bytes == 0) {
		finish_close(s);
		return;
	}
	s->delay.data = s;
	uv_timer_start(&s->delay, on_linger, SG_CLOSE_LINGER_MS, 0);
}

/* ----------------------------------------------------------------- timers */

static void on_idle(uv_timer_t *t)
{
	sg_session *s = t->data;
	if (s->closing)
		return;
	/* Waiting on SASL or the upstream (which have their own timeouts), or
	 * on an upstream that does not take our data: not the client's fault. */
	if ((s->pending != SG_PEND_NONE && s->pending != SG_PEND_TLS) ||
	    s->data_paused) {
		sg_session_idle_rearm(s);
		return;
	}
	log_info(s->id, "idle timeout in state %s", state_name[s->state]);
	if (s->state != SG_ST_GREETING && s->state != SG_ST_TLS_HANDSHAKE)
		sg_reply_send(s, SG_R_IDLE);
	sg_session_close(s, "idle timeout");
}

/* Quiet between messages: nothing buffered either way, nothing awaited,
 * no transaction. */
static bool quiet(const sg_session *s)
{
	return !s->closing && s->pending == SG_PEND_NONE && s->io.in.len == 0 &&
	       s->io.out.len == 0 && !in_transaction(s);
}

/* Give back what a quiet session does not need: the input and reply
 * buffers and OpenSSL's record and BIO buffers: what an idle session costs. */
static void trim_now(sg_session *s)
{
	sg_buf_shrink(&s->io.in);
	sg_buf_shrink(&s->io.out);
	sg_rq_trim(s);
	if (s->tls.eng)
		sg_tls_trim(s->tls.eng);
}

static void on_trim(uv_timer_t *t)
{
	sg_session *s = t->data;
	/* busy again since: the next quiet moment re-arms the timer */
	if (quiet(s))
		trim_now(s);
}

void sg_session_idle_rearm(sg_session *s)
{
	if (s->closing || s->cfg->idle_timeout_ms == 0)
		return;
	uv_timer_start(&s->idle, on_idle, s->cfg->idle_timeout_ms, 0);
}

/* ------------------------------------------------------------------ input */

/* One read buffer per worker thread: on_read hands every byte to the TLS
 * engine or to s->io.in before it returns, so no session holds one and no
 * read pays a malloc/free. */
static __thread char read_chunk[SG_READ_CHUNK];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	(void)hint;
	buf->base = read_chunk;
	buf->len = sizeof read_chunk;
}

/* Read while there is room for a whole chunk, the client takes its replies
 * and the upstream takes the message (back-pressure both ways). */
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void update_reading(sg_session *s)
{
	if (uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	bool want = !s->closing && !s->io.eof &&
	            s->io.in.len + SG_READ_CHUNK <= s->io.in.max &&
	            s->io.wq_bytes < SG_OUTQ_MAX && !s->data_paused;
	if (want && !s->io.reading) {
		if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
			s->io.reading = true;
	} else if (!want && s->io.reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->io.reading = false;
	}
}

/* Pull decrypted bytes into s->io.in (bounded by its max). */
static void pull_tls(sg_session *s)
{
	if (!s->tls.eng || !s->tls.encrypted || s->io.in.len >= s->io.in.max)
		return;
	int r = sg_tls_read(s->tls.eng, &s->io.in);
	send_tls_out(s); /* e.g. a KeyUpdate answer */
	if (r == 1)
		s->io.eof = true; /* close_notify: answer what came before it */
	else if (r < 0) {
		log_warn(s->id, "event=tls result=fail client=%s reason=%s",
		         s->client_ip, sg_tls_error(s->tls.eng));
		sg_session_close(s, "tls error");
	}
}

static void feed_data(sg_session *s)
{
	/* the end of data is held for the policy: what follows it is the
	 * client's next command, read once the message is over */
	if (s->pending == SG_PEND_POLICY)
		return;
	if (!s->data_active || s->data_paused || s->io.in.len == 0)
		return;
	bool pause = false;
	size_t n = sg_link_data_feed(s->up.link, s->io.in.data, s->io.in.len, &pause);
	size_t had = s->io.in.len;
	s->txn.msg_size += n;
	sg_buf_consume(&s->io.in, n);
	if (n > 0)
		sg_session_idle_rearm(s);
	if (pause && s->data_active)
		s->data_paused = true;
	/* Bytes left over: the link saw <CRLF>.<CRLF> and the rest is the
	 * client's next command, read once the final reply is in. */
	if (s->data_active && n < had)
		s->pending = SG_PEND_DATA_END;
	if (s->pol.end_seen) { /* the size is known now */
		s->pol.end_seen = false;
		sg_policy_end_of_data(s);
	}
}

static bool feed_chunk(sg_session *s);

/* Decide the next line while replies to relayed commands are due
 * (RFC 2920): it is taken only if sg_cmd_line decides it now, else it
 * stays buffered until they are in.  false: stop reading lines. */
static bool take_line_ahead(sg_session *s, char *cmd)
{
	sg_lines st = s->io.lines;
	const char *line;
	size_t len, used;
	if (sg_line_next(&st, s->io.in.data, s->io.in.len, SG_LINE_MAX, &line,
	                 &len, &used) != SG_LINE_OK)
		return false; /* a reply of ours: at its turn */
	memcpy(cmd, line, len);
	cmd[len] = '\0';
	bool taken = sg_cmd_line(s, cmd, len);
	explicit_bzero(cmd, len);
	if (!taken || s->closing)
		return false;
	s->io.lines = st;
	sg_buf_consume(&s->io.in, used);
	sg_session_idle_rearm(s);
	return true;
}

static void process_lines(sg_session *s)
{
	/* Room for the longest line; the copy is wiped after use because an
	 * AUTH line holds credentials. */
	char cmd[SG_AUTH_LINE_MAX + 1];
	for (;;) {
		if (s->closing)
			return;
		pull_tls(s);
		if (s->closing)
			return;
		if (s->state == SG_ST_DATA) {
			feed_data(s);
			return;
		}
		if (s->bdat.chunk) {
			if (!feed_chunk(s))
				return;
			continue;
		}
		if (s->state == SG_ST_GREETING || s->state == SG_ST_TLS_HANDSHAKE)
			return;
		if (s->pending == SG_PEND_UPSTREAM && s->io.in.len) {
			if (!take_line_ahead(s, cmd))
				return;
			continue;
		}
		if (s->pending != SG_PEND_NONE)
			return;
		if (s->draining && !in_transaction(s)) {
			sg_reply_send(s, SG_R_SHUTDOWN);
			sg_session_close(s, "shutdown");
			return;
		}
		if (s->io.in.len == 0)
			return;
		size_t limit = s->auth.await ? SG_AUTH_LINE_MAX : SG_LINE_MAX;
		const char *line;
		size_t len, used;
		int st = sg_line_next(&s->io.lines, s->io.in.data, s->io.in.len, limit, &line,
		                      &len, &used);
		if (st == SG_LINE_NONE) {
			sg_buf_consume(&s->io.in, used);
			if (used == 0)
				return;
			continue;
		}
		if (st == SG_LINE_OK)
			memcpy(cmd, line, len);
		cmd[st == SG_LINE_OK ? len : 0] = '\0';
		sg_buf_consume(&s->io.in, used);
		sg_session_idle_rearm(s);
		if (st == SG_LINE_TOOLONG) {
			log_info(s->id, "command line over %zu octets", limit);
			sg_reply_send(s, SG_R_LINE_TOO_LONG);
		} else if (st == SG_LINE_NUL) {
			sg_reply_send(s, SG_R_NUL);
		}
		if (st != SG_LINE_OK) {
			if (s->auth.await) { /* the exchange cannot go on */
				s->auth.await = false;
				if (s->auth.sasl)
					sg_auth_reset(s->auth.sasl);
				sg_session_state(s, SG_ST_READY);
			}
			continue;
		}
		/* decided at once: nothing is due (sg_cmd_line returns true) */
		sg_cmd_line(s, cmd, len);
		explicit_bzero(cmd, len);
	}
}

void sg_session_process(sg_session *s)
{
	if (s->in_process) {
		s->again = true;
		return;
	}
	s->in_process = true;
	do {
		s->again = false;
		process_lines(s);
	} while (s->again && !s->closing);
	s->in_process = false;
	if (s->closing)
		return;
	/* RFC 2920 3.1: answer a pipelined group in one write, once no more of
	 * its commands are buffered and none awaits an async result.  Message
	 * octets (DATA, a BDAT chunk) are no commands. */
	bool streaming = s->state == SG_ST_DATA || s->bdat.chunk;
	bool more = !streaming &&
	            sg_line_pending(&s->io.lines, s->io.in.data, s->io.in.len,
	                            s->auth.await ? SG_AUTH_LINE_MAX : SG_LINE_MAX);
	if (streaming || (s->pending == SG_PEND_NONE && !more))
		sg_session_flush(s);
	/* Half-closed client: once its last complete command is answered (a
	 * message it did not finish is dropped with the link). */
	if (s->io.eof && s->pending == SG_PEND_NONE &&
	    (streaming ? s->io.in.len == 0 : !more)) {
		sg_session_close(s, "client closed");
		return;
	}
	/* Quiet between messages: trim SG_TRIM_DELAY_MS later if it stays so
	 * (not now: a client with another message sends it at once).  Before
	 * its first message (after AUTH, say) a session is trimmed at once:
	 * many never send one soon (idle authenticated sessions). */
	if (quiet(s)) {
		if (s->msgs > 0)
			uv_timer_start(&s->delay, on_trim, SG_TRIM_DELAY_MS, 0);
		else
			trim_now(s);
	}
	update_reading(s);
}

void sg_session_resume(sg_session *s)
{
	if (s->closing)
		return;
	s->pending = SG_PEND_NONE;
	sg_session_idle_rearm(s);
	sg_session_process(s);
}

/* ------------------------------------------------------------------- TLS */

static void do_handshake(sg_session *s)
{
	int r = sg_tls_handshake(s->tls.eng);
	/* Done: OpenSSL's last flight (TLS 1.3 NewSessionTickets) waits for
	 * the reply to the command that came with the client's Finished
	 * (usually EHLO), so both leave in one write. */
	if (r != 1)
		send_tls_out(s);
	if (r == 0)
		return;
	if (r < 0) {
		log_warn(s->id, "event=tls result=fail client=%s reason=%s",
		         s->client_ip, sg_tls_error(s->tls.eng));
		sg_metrics_tls(s->lc->name, false);
		sg_session_close(s, "tls error");
		return;
	}
	s->tls.encrypted = true;
	s->pending = SG_PEND_NONE;
	log_info(s->id, "event=tls result=ok client=%s version=%s cipher=%s bits=%u%s",
	         s->client_ip, sg_tls_version(s->tls.eng), sg_tls_cipher(s->tls.eng),
	         sg_tls_bits(s->tls.eng), sg_tls_resumed(s->tls.eng) ? " resumed" : "");
	sg_metrics_tls(s->lc->name, true);
	if (s->lc->tls == SG_TLS_IMPLICIT)
		sg_reply_send(s, SG_R_GREETING);
	sg_session_state(s, SG_ST_HELO);
	sg_session_idle_rearm(s);
	sg_session_process(s);
	/* no reply went out (no command yet): the tickets go alone */
	if (!s->closing)
		send_tls_out(s);
}

static int tls_begin(sg_session *s)
{
	if (!s->tls.ctx || !(s->tls.eng = sg_tls_new_server(s->tls.ctx))) {
		log_error(s->id, "event=tls result=fail client=%s reason=no TLS context",
		          s->client_ip);
		sg_metrics_tls(s->lc->name, false);
		sg_session_close(s, "tls error");
		return -1;
	}
	s->pending = SG_PEND_TLS;
	sg_session_state(s, SG_ST_TLS_HANDSHAKE);
	return 0;
}

void sg_session_starttls(sg_session *s)
{
	sg_session_flush(s); /* the 220, in plaintext */
	/* CVE-2011-0411: whatever the client pipelined after STARTTLS was sent
	 * in plaintext and must not be executed as if it came over TLS. */
	if (s->io.in.len > 0)
		log_info(s->id, "STARTTLS: discarded %zu plaintext octets sent "
		         "after the command", s->io.in.len);
	sg_buf_reset(&s->io.in);
	s->io.lines.discarding = false;
	/* RFC 3207 4.2: forget everything learnt from the client before. */
	sg_session_set_str(&s->helo, NULL, 0);
	s->esmtp = false;
	s->auth.await = false;
	s->auth.ok = false;
	sg_session_set_str(&s->auth.user, NULL, 0);
	sg_session_set_str(&s->auth.tried, NULL, 0);
	drop_auth_and_link(s);
	sg_cmd_txn_reset(s);
	tls_begin(s);
}

/* ------------------------------------------------ the client's host name */

/* The link open that waited for the name goes on (sg_cmd_open_link). */
static void name_wait_over(sg_session *s)
{
	sg_link_cb ready = s->name.wait;
	if (!ready)
		return;
	s->name.wait = NULL;
	uv_timer_stop(&s->delay);
	sg_cmd_open_link(s, s->name.with_login, ready);
}

static void on_name(void *arg, int result, const char *name)
{
	sg_session *s = arg;
	s->name.q = NULL; /* freed by client_name.c after this call */
	if (result == SG_NAME_OK)
		s->name.name = sg_xstrdup(name);
	s->name.temp = result == SG_NAME_TEMP;
	log_debug(s->id, "event=client_name client=%s name=%s", s->client_ip,
	          result == SG_NAME_OK     ? name
	          : result == SG_NAME_TEMP ? "[TEMPUNAVAIL]"
	                                   : "[UNAVAILABLE]");
	name_wait_over(s);
}

/* [server] resolve_client: look the client up as soon as its address is
 * known (after the PROXY header, if any), so the name is usually in when
 * a link opens; without it NAME= is [UNAVAILABLE]. */
static void name_start(sg_session *s)
{
	if (!s->cfg->resolve_client)
		return;
	s->name.q = sg_name_start(s->loop, s->client_ip,
	                          sg_name_slots(s->cfg->sasl_threads), on_name, s);
}

/* The name did not come in time: [TEMPUNAVAIL], as for a resolver that
 * answered "try again" (Postfix XCLIENT_README). */
static void name_give_up(sg_session *s)
{
	log_info(s->id, "event=client_name client=%s name=[TEMPUNAVAIL] "
	         "reason=\"no answer from the resolver within %ums\"",
	         s->client_ip, SG_NAME_WAIT_MS);
	sg_name_cancel(s->name.q);
	s->name.q = NULL;
	s->name.temp = true;
}

static void on_name_wait(uv_timer_t *t)
{
	sg_session *s = t->data;
	if (s->closing || !s->name.wait)
		return;
	name_give_up(s);
	name_wait_over(s);
}

bool sg_session_name_wait(sg_session *s, bool with_login, sg_link_cb ready)
{
	if (!s->name.q)
		return false;
	uint64_t age = sg_name_age(s->name.q);
	if (age >= SG_NAME_WAIT_MS) {
		name_give_up(s);
		return false;
	}
	s->pending = SG_PEND_LINK_OPEN;
	s->name.wait = ready;
	s->name.with_login = with_login;
	/* the delay timer is free: the session is not quiet (a trim it had
	 * armed is given up), not in a failure delay, not closing */
	s->delay.data = s;
	uv_timer_start(&s->delay, on_name_wait, SG_NAME_WAIT_MS - age, 0);
	return true;
}

/* -------------------------------------------------- SASL, identity, DATA */

sg_auth *sg_session_auth(sg_session *s)
{
	if (s->auth.sasl)
		return s->auth.sasl;
	sg_auth_peer peer = {
	    .local_ip = s->dest_ip,
	    .local_port = s->dest_port,
	    .remote_ip = s->client_ip,
	    .remote_port = s->client_port,
	    .sid = s->id,
	    .plaintext_ok = !s->lc->require_tls_for_auth,
	};
	s->auth.sasl = sg_auth_new(s->cfg, &peer);
	if (s->auth.sasl && s->tls.eng && s->tls.encrypted)
		sg_auth_set_tls(s->auth.sasl, sg_tls_bits(s->tls.eng));
	return s->auth.sasl;
}

void sg_session_fill_identity(sg_session *s, sg_identity *id, bool with_login)
{
	memset(id, 0, sizeof *id);
	id->sid = s->id;
	id->login = with_login ? s->auth.user : NULL;
	id->client_ip = s->client_ip;
	id->client_port = s->client_port;
	id->client_name = s->name.name;
	id->client_name_temp = s->name.temp;
	id->helo = s->helo;
	id->esmtp = s->esmtp;
	if (s->tls.eng && s->tls.encrypted) {
		id->tls_version = sg_tls_version(s->tls.eng);
		id->tls_cipher = sg_tls_cipher(s->tls.eng);
		id->tls_bits = sg_tls_bits(s->tls.eng);
	}
	id->dest_ip = s->dest_ip;
	id->dest_port = s->dest_port;
}

static void add_qid(sg_session *s, const char *qid)
{
	if (!qid || !qid[0])
		return;
	size_t n = s->qids ? strlen(s->qids) : 0, q = strlen(qid);
	if (n + q + 2 >= SG_QIDS_MAX)
		return; /* enough for a log line; the upstream log has the rest */
	/* grown per message: a session holds none before its first one */
	char *p = sg_xrealloc(s->qids, n + q + 2);
	snprintf(p + n, q + 2, "%s%s", n ? "," : "", qid);
	s->qids = p;
}

/* The message's final reply (DATA's end, BDAT LAST): logged, given (again:
 * a failure a chunk already got, not counted twice), the transaction
 * over. */
static void message_over(sg_session *s, const sg_reply *r, bool again)
{
	size_t first = 0;
	while (first < r->len && r->text[first] != '\r' && r->text[first] != '\n')
		first++;
	bool ok = r->code >= 200 && r->code < 300;
	if (ok) {
		s->msgs++;
		s->bytes += s->txn.msg_size;
		add_qid(s, sg_link_last_queue_id(s->up.link));
	}
	char from[SG_PATH_MAX + 1], user[SG_USER_LOG_MAX];
	sg_log_safe(from, sizeof from, s->txn.mail_from);
	sg_identity_log(user, sizeof user, s->auth.ok ? s->auth.user : NULL);
	/* the reply text is the upstream's; quotes in it would end ours */
	char rtext[SG_LOG_REPLY_MAX];
	size_t rl = first < sizeof rtext - 1 ? first : sizeof rtext - 1;
	for (size_t i = 0; i < rl; i++)
		rtext[i] = r->text[i] == '"' ? '\'' : r->text[i];
	rtext[rl] = '\0';
	log_info(s->id,
	         "event=message user=%s from=<%s> rcpts=%u size=%llu upstream=%s "
	         "reply=\"%s\"",
	         user, from, s->txn.rcpts,
	         (unsigned long long)s->txn.msg_size,
	         s->up.link ? sg_link_peer(s->up.link) : "-", rtext);
	sg_metrics_message(ok, s->txn.msg_size);
	if (again)
		sg_reply_again(s, r->text, r->len);
	else
		sg_reply_raw(s, r->code, r->text, r->len);
	sg_cmd_txn_reset(s);
	if (s->up.link && !sg_link_alive(s->up.link)) {
		sg_link_close(s->up.link);
		s->up.link = NULL;
	}
}

static void on_data_done(void *arg, const sg_reply *r)
{
	sg_session *s = arg;
	if (s->closing)
		return;
	s->data_active = false;
	s->data_paused = false;
	message_over(s, r, false);
	sg_session_resume(s);
}

static void on_data_drain(void *arg)
{
	sg_session *s = arg;
	if (s->closing)
		return;
	s->data_paused = false;
	sg_session_process(s);
}

/* The link holds the end of data (sg_link_data_hold_end): called from
 * inside sg_link_data_feed, so the check starts once feed_data has
 * counted the octets. */
static void on_data_end_seen(void *arg)
{
	sg_session *s = arg;
	s->pol.end_seen = true;
}

void sg_session_data_release(sg_session *s)
{
	s->pending = SG_PEND_DATA_END;
	sg_link_data_finish(s->up.link);
}

void sg_session_data_refuse(sg_session *s, int code, const char *text)
{
	sg_link_data_abort(s->up.link);
	s->data_active = false;
	s->data_paused = false;
	sg_reply r = {code, text, strlen(text)};
	message_over(s, &r, false);
}

void sg_session_data_begin(sg_session *s)
{
	sg_session_state(s, SG_ST_DATA);
	s->data_active = true;
	s->data_paused = false;
	s->txn.msg_size = 0;
	sg_session_flush(s); /* the 354 goes out now, whatever follows */
	sg_policy_data_begin(s); /* its PREPEND headers, before the link's */
	sg_link_data_begin(s->up.link, on_data_done, s, on_data_drain);
	if (s->cfg->npolicy_servers &&
	    s->cfg->policy_at == SG_POLICY_AT_END_OF_DATA)
		sg_link_data_hold_end(s->up.link, on_data_end_seen);
}

/* --------------------------------------------------------- BDAT chunks */

void sg_session_bdat_begin(sg_session *s)
{
	s->bdat.txn = true;
	s->bdat.open = true;
	s->data_paused = false;
	s->txn.msg_size = 0;
	sg_link_bdat_begin(s->up.link, on_data_done, s, on_data_drain);
}

void sg_session_bdat_chunk(sg_session *s, uint64_t size, bool last,
                           enum sg_rep refused)
{
	sg_sess_bdat *b = &s->bdat;
	b->chunk = true;
	b->size = b->left = size;
	/* a refused LAST ends nothing: a failed message waits for RSET or a
	 * LAST that is one */
	b->last = last && refused == SG_R_COUNT;
	b->refused = refused;
}

void sg_session_bdat_fail(sg_session *s, const char *text, size_t len)
{
	sg_sess_bdat *b = &s->bdat;
	b->txn = true;
	if (!b->fail)
		b->fail = sg_xstrndup(text, len); /* text may be the link's */
	if (b->open && s->up.link)
		sg_link_bdat_cancel(s->up.link);
	b->open = false;
	s->data_paused = false; /* nothing more goes to the link */
}

void sg_session_bdat_reset(sg_session *s)
{
	sg_sess_bdat *b = &s->bdat;
	if (b->open && s->up.link)
		sg_link_bdat_cancel(s->up.link);
	if (b->txn)
		s->data_paused = false;
	b->open = b->txn = false;
	free(b->fail);
	b->fail = NULL;
}

/* A chunk whose octets were dropped is over: its reply. */
static void chunk_dropped(sg_session *s)
{
	sg_sess_bdat *b = &s->bdat;
	if (b->refused != SG_R_COUNT) {
		sg_reply_send(s, b->refused);
		return;
	}
	if (!b->fail) { /* no transaction left to add it to */
		sg_reply_send(s, SG_R_NEED_MAIL);
		return;
	}
	sg_reply r = {atoi(b->fail), b->fail, strlen(b->fail)};
	if (b->last)
		message_over(s, &r, true);
	else
		sg_reply_again(s, r.text, r.len);
}

/* A chunk (not the LAST) is all in the message: 250, which accepts no
 * mail (RFC 3030 2), or the failure the message met meanwhile. */
static void chunk_taken(sg_session *s)
{
	char down[512];
	const char *err = down;
	if (s->up.link)
		err = sg_link_bdat_status(s->up.link);
	else
		down[sg_reply_text(s, SG_R_UPSTREAM_DOWN, down, sizeof down - 1)] =
		    '\0';
	if (err) {
		sg_session_bdat_fail(s, err, strlen(err));
		sg_reply_raw(s, atoi(s->bdat.fail), s->bdat.fail,
		             strlen(s->bdat.fail));
		return;
	}
	char text[64];
	snprintf(text, sizeof text, "2.0.0 %llu octets received",
	         (unsigned long long)s->bdat.size);
	sg_reply_line(s, 250, false, text);
}

/* The octets of the BDAT chunk being read (RFC 3030): into the message, or
 * dropped (a refused chunk, a failed message); never read as commands.
 * true: the chunk is over and answered, the next line may be read. */
static bool feed_chunk(sg_session *s)
{
	sg_sess_bdat *b = &s->bdat;
	size_t avail = s->io.in.len < b->left ? s->io.in.len : (size_t)b->left;
	if (b->refused != SG_R_COUNT || b->fail || !b->open) {
		sg_buf_consume(&s->io.in, avail);
		b->left -= avail;
		if (avail > 0)
			sg_session_idle_rearm(s);
		if (b->left > 0)
			return false;
		b->chunk = false;
		chunk_dropped(s);
		return true;
	}
	bool fin = b->last && avail == b->left;
	if (s->data_paused)
		return false;
	if (avail > 0 || fin) {
		bool pause = false;
		size_t n = sg_link_bdat_feed(s->up.link, s->io.in.data, avail, fin,
		                             &pause);
		sg_buf_consume(&s->io.in, n);
		s->txn.msg_size += n;
		b->left -= n;
		if (n > 0)
			sg_session_idle_rearm(s);
		if (pause)
			s->data_paused = true;
		if (fin && !pause) { /* the link ends it: done has the reply */
			b->chunk = false;
			b->open = false;
			s->pending = SG_PEND_DATA_END;
			return false;
		}
	}
	if (b->left > 0 || b->last)
		return false;
	b->chunk = false;
	chunk_taken(s);
	return true;
}

/* ----------------------------------------------------------------- accept */

static void start_conversation(sg_session *s)
{
	if (s->lc->tls == SG_TLS_IMPLICIT) {
		if (tls_begin(s) < 0)
			return;
		if (s->io.in.len > 0) { /* bytes after a PROXY header: ciphertext */
			if (sg_tls_feed(s->tls.eng, s->io.in.data, s->io.in.len) < 0) {
				sg_session_close(s, "out of memory");
				return;
			}
			sg_buf_reset(&s->io.in);
			do_handshake(s);
		}
		return;
	}
	sg_reply_send(s, SG_R_GREETING);
	sg_session_state(s, SG_ST_HELO);
	sg_session_process(s);
}

static void handle_proxy_header(sg_session *s)
{
	sg_pp_result res;
	const char *why = NULL;
	int n = sg_pp_parse((const unsigned char *)s->io.in.data, s->io.in.len,
	                    s->lc->proxy_protocol, &res, &why);
	if (n == 0 && s->io.in.len < SG_PP_MAX)
		return;
	if (n <= 0) {
		log_warn(s->id, "event=proxy result=fail peer=%s:%u reason=%s",
		         s->client_ip, s->client_port,
		         why ? why : "header too long");
		sg_session_close(s, "proxy protocol error");
		return;
	}
	char peer[SG_IP_MAX];
	snprintf(peer, sizeof peer, "%s", s->client_ip);
	unsigned peer_port = s->client_port;
	if (!res.local) {
		addr_text(&res.src, s->client_ip, sizeof s->client_ip,
		          &s->client_port);
		addr_text(&res.dst, s->dest_ip, sizeof s->dest_ip, &s->dest_port);
		name_start(s);
	}
	log_info(s->id, "event=proxy version=%d client=%s:%u via=%s:%u%s",
	         res.version, s->client_ip, s->client_port, peer, peer_port,
	         res.local ? " local" : "");
	sg_buf_consume(&s->io.in, (size_t)n);
	start_conversation(s);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	sg_session *s = st->data;
	if (nread <= 0 || s->closing) {
		if (nread == UV_EOF && !s->closing && !s->tls.eng &&
		    s->state != SG_ST_GREETING) {
			/* shutdown(SHUT_WR) after a pipelined batch ("... | nc"):
			 * answer the commands already here, then close */
			s->io.eof = true;
			update_reading(s);
			sg_session_process(s);
			return;
		}
		if (nread < 0 && !s->closing) {
			if (nread != UV_EOF && nread != UV_ECONNRESET)
				log_info(s->id, "read error: %s", uv_strerror((int)nread));
			sg_session_close(s, "client closed");
		}
		return;
	}
	if (s->tls.eng) {
		int r = sg_tls_feed(s->tls.eng, buf->base, (size_t)nread);
		if (r < 0) {
			sg_session_close(s, "out of memory");
			return;
		}
		if (s->state == SG_ST_TLS_HANDSHAKE)
			do_handshake(s);
		else
			sg_session_process(s);
		if (!s->closing)
			update_reading(s);
		return;
	}
	int r = sg_buf_append(&s->io.in, buf->base, (size_t)nread);
	if (r < 0) { /* cannot happen while update_reading keeps a chunk free */
		sg_session_close(s, "input overflow");
		return;
	}
	if (s->state == SG_ST_GREETING)
		handle_proxy_header(s);
	else
		sg_session_process(s);
	if (!s->closing)
		update_reading(s);
}

/* A session for a connection about to be taken on l; *count is the number
 * of connections open, this one included. */
static sg_session *session_new(sg_worker *w, sg_listener *l, unsigned *count)
{
	sg_session *s = sg_xcalloc(1, sizeof *s);
	s->w = w;
	s->loop = &w->loop;
	s->cfg = sg_config_ref(w->cfg);
	s->lc = &s->cfg->listeners[l->index];
	s->tls.ctx = w->tls ? sg_tls_ctx_ref(w->tls) : NULL;
	sg_buf_init(&s->io.in, SG_INBUF_MAX);
	sg_buf_init(&s->io.out, 0);
	make_sid(s->id);
	s->start_ms = uv_now(s->loop);
	s->state = SG_ST_GREETING;
	snprintf(s->client_ip, sizeof s->client_ip, "unknown");

	uv_tcp_init(s->loop, &s->tcp);
	uv_timer_init(s->loop, &s->idle);
	uv_timer_init(s->loop, &s->delay);
	s->tcp.data = s->idle.data = s->delay.data = s;
	s->handles = 3;
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;
	*count = sg_server_conn_inc(); /* dec in on_handle_closed */
	sg_metrics_accept(s->lc->name);
	return s;
}

/* The local address of a connection accepted on lc: its configured
 * address when that is one address and port (the socket cannot have
 * another), else asked of the socket (a wildcard address, port 0). */
static int local_addr(const sg_session *s, struct sockaddr_storage *ss)
{
	const sg_listener_cfg *lc = s->lc;
	if (lc->addr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&lc->addr;
		if (a->sin_addr.s_addr != htonl(INADDR_ANY) && a->sin_port != 0) {
			memcpy(ss, &lc->addr, sizeof *a);
			return 0;
		}
	} else if (lc->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&lc->addr;
		if (!IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) && a->sin6_port != 0) {
			memcpy(ss, &lc->addr, sizeof *a);
			return 0;
		}
	}
	int len = sizeof *ss;
	return uv_tcp_getsockname(&s->tcp, (struct sockaddr *)ss, &len);
}

/* r: the result of taking the socket into s->tcp; peer: the client's
 * address as accept(2) gave it, NULL to ask the socket. */
static void session_begin(sg_session *s, unsigned count, int r,
                          const struct sockaddr_storage *peer)
{
	sg_worker *w = s->w;
	if (r < 0) {
		log_warn(s->id, "accept: %s", uv_strerror(r));
		s->closing = true;
		finish_close(s);
		return;
	}
	uv_tcp_nodelay(&s->tcp, 1); /* replies are small and latency-bound */
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (peer)
		ss = *peer;
	else if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) != 0)
		ss.ss_family = AF_UNSPEC;
	if (ss.ss_family != AF_UNSPEC)
		addr_text(&ss, s->client_ip, sizeof s->client_ip, &s->client_port);
	if (sg_server_proxy_refused(s->lc, (struct sockaddr *)&ss, s->id,
	                            s->client_ip, s->client_port)) {
		s->closing = true; /* nothing sent, nothing more logged */
		finish_close(s);
		return;
	}
	if (local_addr(s, &ss) == 0)
		addr_text(&ss, s->dest_ip, sizeof s->dest_ip, &s->dest_port);

	log_info(s->id, "event=connect client=%s:%u listener=%s", s->client_ip,
	         s->client_port, s->lc->name);
	sg_metrics_session(s->lc->name, true);
	if (s->cfg->max_connections && count > s->cfg->max_connections) {
		log_warn(s->id, "event=reject client=%s reason=max_connections (%u)",
		         s->client_ip, s->cfg->max_connections);
		sg_metrics_rejected(s->lc->name, SG_MJ_MAXCONN);
		/* on an implicit-TLS port a plaintext reply would be noise; behind
		 * a PROXY-protocol balancer the 421 reaches the client all the same */
		if (s->lc->tls != SG_TLS_IMPLICIT)
			sg_reply_send(s, SG_R_TOO_MANY_CONN);
		sg_session_close(s, "too many connections");
		return;
	}
	if (w->stopping) {
		sg_session_close(s, "shutdown");
		return;
	}
	sg_session_idle_rearm(s);
	update_reading(s);
	if (s->lc->proxy_protocol == SG_PP_NO) {
		name_start(s);
		start_conversation(s);
	}
}

void sg_session_accept(sg_worker *w, sg_listener *l)
{
	unsigned count;
	sg_session *s = session_new(w, l, &count);
	session_begin(s, count,
	              uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&s->tcp),
	              NULL);
}

void sg_session_accept_fd(sg_worker *w, sg_listener *l, int fd,
                          const struct sockaddr_storage *peer)
{
	unsigned count;
	sg_session *s = session_new(w, l, &count);
	int r = uv_tcp_open(&s->tcp, fd);
	if (r < 0)
		close(fd); /* not the handle's: it took nothing */
	session_begin(s, count, r, peer);
}

/* ------------------------------------------------------------------ drain */

void sg_session_drain_all(sg_worker *w, bool final)
{
	sg_session *next;
	for (sg_session *s = w->sessions; s; s = next) {
		next = s->next;
		if (s->closing)
			continue;
		if (!final && in_transaction(s)) {
			s->draining = true; /* closes when the transaction is over */
			continue;
		}
		/* no reply before the greeting; in DATA the 421 also tells the
		 * client its message was not accepted */
		if (s->state != SG_ST_GREETING && s->state != SG_ST_TLS_HANDSHAKE)
			sg_reply_send(s, SG_R_SHUTDOWN);
		sg_session_close(s, "shutdown");
	}
}
