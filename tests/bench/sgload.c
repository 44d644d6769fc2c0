/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/bench/sgload.c: saslgate's SMTP submission load generator.
 *
 * It drives an SMTP submission server (saslgate, or nginx/Postfix/... for
 * comparison) the way a population of mail clients would: connect, EHLO,
 * optionally STARTTLS (RFC 3207) or implicit TLS (RFC 8314), AUTH PLAIN or
 * LOGIN (RFC 4954), then MAIL/RCPT/DATA per message, QUIT.  It is the
 * project's own tool (tests/bench/run.sh uses it); its options and its
 * result line follow the shared anchor rig's smtpload so that figures from
 * the two are directly comparable.
 *
 * Design: one thread per concurrent client, blocking sockets with
 * SO_RCVTIMEO/SO_SNDTIMEO, one OpenSSL client context.  Threads keep the
 * client side simple and measurable; the load generator's own CPU is
 * reported (loadgen_cpu_s) so a reader can see how much of a 2-core box it
 * took.  Every reply code is checked: a message counts "ok" only when the
 * reply to the final "." is 2xx.  Every run is bounded: --total messages,
 * --duration seconds (then no new message starts), and a hard stop at
 * duration + 2*timeout + 5 s that prints what was measured and exits 3.
 *
 * Latency: first message of a connection = connect() .. final reply (TCP,
 * TLS handshake, AUTH included); later messages = MAIL FROM .. final reply.
 *
 * Idle mode (--idle C --hold S): open C sessions (through AUTH) using
 * --conns threads, print "idle_ready ..." and flush, hold them S seconds,
 * then NOOP each one (alive_after_hold counts 250s) and QUIT.  run.sh
 * samples the server's memory while they are held.
 *
 * Accounting (--id-tag T --events FILE, used by tests/soak/soak.py): each
 * message starts with its own "X-Sgload-Id: T.N" header (N counts from 1
 * in this process, so the header adds its length to --size), and every
 * outcome is one line of FILE: "WALLCLOCK KIND ID CODE LATENCY_MS" where
 * KIND is new (first message of a session), msg (a later one), setup (a
 * session that failed before its first message: ID is "-") or idle (the
 * NOOP after the hold); CODE is the reply code (-1: I/O error or timeout,
 * -2: a malformed reply).  A message the server accepted has a 2xx CODE.
 * --pause-ms MS: each thread sleeps MS after each message and after each
 * failed session, to keep a long run at a steady, modest rate.
 *
 * Build: make -C tests/bench   (cc -O2 -o sgload sgload.c -lssl -lcrypto -lpthread -lm)
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

/* Bounds.  Replies are read through a fixed buffer; one reply line may not
 * exceed it (RFC 5321 4.5.3.1.5 says 512 octets, we allow more). */
#define SGL_RBUF 8192
#define SGL_LINE_MAX 1024     /* a command we send, CRLF included */
#define SGL_LAST_MAX 512      /* last reply line kept for diagnostics */
#define SGL_CRED_MAX 512      /* user + password */
#define SGL_MAX_CONNS 20000   /* threads */
#define SGL_MAX_ERRLINES 5    /* diagnostics printed (50 with --verbose) */
#define SGL_THREAD_STACK (256 * 1024)

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };
enum auth_mech { MECH_PLAIN, MECH_LOGIN };

static struct {
	const char *host, *port, *source;
	enum tls_mode tls;
	const char *user, *pass;
	enum auth_mech mech;
	int conns;
	long msgs_per_conn, total, size;
	int rcpts, timeout, tls_version;
	double duration, hold;
	long idle;
	bool resume, verbose;
	const char *ehlo, *from, *rcpt_domain, *dump_msg;
	const char *id_tag, *events;
	long pause_ms;
} opt = {
	.host = "127.0.0.1", .port = "25", .tls = TLS_NONE, .mech = MECH_PLAIN,
	.conns = 1, .msgs_per_conn = 1, .total = 1, .size = 4096, .rcpts = 1,
	.timeout = 30, .duration = 60, .hold = 10,
	.ehlo = "sgload.saslgate.bench", .from = "bench@saslgate.bench",
	.rcpt_domain = "example.com",
};

/* Shared state; counters are atomics, everything else is written before
 * the threads start. */
static SSL_CTX *ssl_ctx;
static struct addrinfo *target, *source;
static char *message;       /* the message, then ".\r\n" */
static size_t message_len;  /* including the terminator */
static double t_start;
static double *latency_ms;  /* one slot per ok message, o.total slots */
static atomic_long n_lat, n_claimed, n_ok, n_fail, n_conn_fail, n_conns, n_resumed;
static atomic_int stop_flag, threads_done, errlines, tls_noted;
static char tls_desc[128] = "none";
static atomic_long n_id;           /* --id-tag: the last N handed out */
static FILE *events_file;          /* --events */
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct client {
	int fd;
	SSL *ssl;
	size_t off, len;              /* unread bytes are rbuf[off..len) */
	int code;                     /* code of the last reply, -1/-2 as reply() */
	char last[SGL_LAST_MAX];      /* last reply line / error, for diagnostics */
	char rbuf[SGL_RBUF];
} client;

static struct client **idle_clients; /* idle mode: the held sessions */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* A few diagnostics on stderr, not thousands (a dead server fails every
 * connection). */
static void diag(const char *fmt, ...)
{
	if (atomic_fetch_add(&errlines, 1) >= (opt.verbose ? 10 * SGL_MAX_ERRLINES : SGL_MAX_ERRLINES))
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("sgload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ------------------------------------------------------------ raw I/O */

static int fill(client *c)
{
	if (c->off > 0) {
		memmove(c->rbuf, c->rbuf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof c->rbuf) {
		snprintf(c->last, sizeof c->last, "<reply line longer than %d>", SGL_RBUF);
		return -1;
	}
	size_t room = sizeof c->rbuf - c->len;
	ssize_t n;
	if (c->ssl) {
		int k = SSL_read(c->ssl, c->rbuf + c->len, (int)room);
		n = k > 0 ? k : -1;
	} else {
		do
			n = recv(c->fd, c->rbuf + c->len, room, 0);
		while (n < 0 && errno == EINTR);
	}
	if (n <= 0) {
		snprintf(c->last, sizeof c->last, "<%s>",
			 n == 0 ? "connection closed" : errno == EAGAIN ? "timeout" : strerror(errno));
		return -1;
	}
	c->len += (size_t)n;
	return 0;
}

static int write_all(client *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k;
		if (c->ssl) {
			int chunk = n > (1u << 20) ? (1 << 20) : (int)n;
			int w = SSL_write(c->ssl, p, chunk);
			k = w > 0 ? w : -1;
		} else {
			k = send(c->fd, p, n, MSG_NOSIGNAL);
			if (k < 0 && errno == EINTR)
				continue;
		}
		if (k <= 0) {
			snprintf(c->last, sizeof c->last, "<write: %s>", errno == EAGAIN ? "timeout" : strerror(errno));
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One reply (all continuation lines); returns its code, -1 on I/O error,
 * -2 on a line that is not "NNN[ -]...".  c->last holds its last line. */
static int reply_code(client *c);

static int reply(client *c)
{
	c->code = reply_code(c);
	return c->code;
}

static int reply_code(client *c)
{
	for (;;) {
		char *nl;
		while (!(nl = memchr(c->rbuf + c->off, '\n', c->len - c->off)))
			if (fill(c) < 0)
				return -1;
		char *line = c->rbuf + c->off;
		size_t l = (size_t)(nl - line);
		c->off += l + 1;
		if (l > 0 && line[l - 1] == '\r')
			l--;
		size_t keep = l < sizeof c->last - 1 ? l : sizeof c->last - 1;
		memcpy(c->last, line, keep);
		c->last[keep] = '\0';
		if (l < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) || (l > 3 && line[3] != ' ' && line[3] != '-'))
			return -2;
		if (l > 3 && line[3] == '-')
			continue;
		return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	}
}

/* Send one command line and return the reply code. */
__attribute__((format(printf, 2, 3))) static int command(client *c, const char *fmt, ...)
{
	char line[SGL_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof line - 2)
		return -2;
	memcpy(line + n, "\r\n", 2);
	if (write_all(c, line, (size_t)n + 2) < 0)
		return -1;
	return reply(c);
}

/* ------------------------------------------------------------ session */

static void note_tls(SSL *ssl)
{
	if (atomic_exchange(&tls_noted, 1))
		return;
	const char *group = "?";
#ifdef SSL_get_negotiated_group
	int nid = SSL_get_negotiated_group(ssl);
	if (nid > 0 && OBJ_nid2sn(nid))
		group = OBJ_nid2sn(nid);
#endif
	snprintf(tls_desc, sizeof tls_desc, "%s:%s:%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl), group);
}

static int tls_handshake(client *c, SSL_SESSION **cache)
{
	c->ssl = SSL_new(ssl_ctx);
	if (!c->ssl) {
		snprintf(c->last, sizeof c->last, "<SSL_new failed>");
		return -1;
	}
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, "localhost");
	if (cache && *cache)
		SSL_set_session(c->ssl, *cache);
	if (SSL_connect(c->ssl) != 1) {
		char eb[256];
		ERR_error_string_n(ERR_get_error(), eb, sizeof eb);
		snprintf(c->last, sizeof c->last, "<TLS handshake: %s (%s)>", eb, strerror(errno));
		ERR_clear_error();
		return -1;
	}
	if (SSL_session_reused(c->ssl))
		atomic_fetch_add(&n_resumed, 1);
	note_tls(c->ssl);
	return 0;
}

static void b64(const void *in, size_t n, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int authenticate(client *c)
{
	char raw[SGL_CRED_MAX], enc[SGL_CRED_MAX * 4 / 3 + 4];
	size_t ul = strlen(opt.user), pl = strlen(opt.pass);
	if (ul + pl + 2 > sizeof raw) {
		snprintf(c->last, sizeof c->last, "<credentials too long>");
		return -1;
	}
	if (opt.mech == MECH_PLAIN) {
		/* RFC 4616: authzid NUL authcid NUL passwd, empty authzid */
		raw[0] = '\0';
		memcpy(raw + 1, opt.user, ul + 1);
		memcpy(raw + 2 + ul, opt.pass, pl);
		b64(raw, ul + pl + 2, enc);
		return command(c, "AUTH PLAIN %s", enc) == 235 ? 0 : -1;
	}
	if (command(c, "AUTH LOGIN") != 334)
		return -1;
	b64(opt.user, ul, enc);
	if (command(c, "%s", enc) != 334)
		return -1;
	b64(opt.pass, pl, enc);
	return command(c, "%s", enc) == 235 ? 0 : -1;
}

static int tcp_connect(client *c)
{
	c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		snprintf(c->last, sizeof c->last, "<socket: %s>", strerror(errno));
		return -1;
	}
	int one = 1;
	/* commands are small and we wait for each reply: no Nagle */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {.tv_sec = opt.timeout};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (source) {
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, source->ai_addr, source->ai_addrlen) < 0) {
			snprintf(c->last, sizeof c->last, "<bind --source: %s>", strerror(errno));
			return -1;
		}
	}
	if (connect(c->fd, target->ai_addr, target->ai_addrlen) < 0) {
		snprintf(c->last, sizeof c->last, "<connect: %s>", strerror(errno));
		return -1;
	}
	return 0;
}

/* connect, greeting, EHLO [, STARTTLS, EHLO] [, AUTH]; 0 or -1 (c->last
 * says why).  With a cache, the newest TLS session is kept for --resume
 * (TLS 1.3 tickets arrive after the handshake, so it is taken after AUTH). */
static int session_open(client *c, SSL_SESSION **cache)
{
	c->fd = -1;
	c->ssl = NULL;
	c->off = c->len = 0;
	c->last[0] = '\0';
	c->code = -1;
	if (tcp_connect(c) < 0)
		return -1;
	if (opt.tls == TLS_IMPLICIT && tls_handshake(c, cache) < 0)
		return -1;
	if (reply(c) != 220 || command(c, "EHLO %s", opt.ehlo) != 250)
		return -1;
	if (opt.tls == TLS_STARTTLS) {
		if (command(c, "STARTTLS") != 220)
			return -1;
		if (c->off != c->len) { /* RFC 3207 5: nothing may follow the 220 */
			snprintf(c->last, sizeof c->last, "<plaintext after the STARTTLS 220>");
			c->code = -2;
			return -1;
		}
		c->off = c->len = 0;
		if (tls_handshake(c, cache) < 0 || command(c, "EHLO %s", opt.ehlo) != 250)
			return -1;
	}
	if (opt.user && authenticate(c) < 0)
		return -1;
	if (cache && c->ssl) {
		SSL_SESSION *s = SSL_get1_session(c->ssl);
		if (s) {
			if (*cache)
				SSL_SESSION_free(*cache);
			*cache = s;
		}
	}
	return 0;
}

static void session_close(client *c, bool polite)
{
	if (c->fd >= 0 && polite && write_all(c, "QUIT\r\n", 6) == 0)
		(void)reply(c); /* 221 expected, not judged */
	if (c->ssl) {
		if (polite)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* One line of --events (see the top of the file). */
static void event(const char *kind, long id, int code, double ms)
{
	if (!events_file)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char idbuf[160] = "-";
	if (id > 0)
		snprintf(idbuf, sizeof idbuf, "%s.%ld", opt.id_tag, id);
	pthread_mutex_lock(&events_lock);
	fprintf(events_file, "%.3f %s %s %d %.2f\n", (double)ts.tv_sec + ts.tv_nsec / 1e9, kind, idbuf, code, ms);
	fflush(events_file);
	pthread_mutex_unlock(&events_lock);
}

static void pause_ms(void)
{
	if (opt.pause_ms > 0)
		usleep((useconds_t)(opt.pause_ms * 1000));
}

/* One transaction: 0 ok, 1 refused (session still usable), -1 broken.
 * *id is the message's --id-tag number (0 without --id-tag). */
static int transaction(client *c, long *id)
{
	*id = 0;
	int r = command(c, "MAIL FROM:<%s>", opt.from);
	if (r != 250)
		return r < 0 ? -1 : 1;
	for (int i = 0; i < opt.rcpts; i++) {
		r = command(c, "RCPT TO:<rcpt%d@%s>", i, opt.rcpt_domain);
		if (r != 250 && r != 251)
			return r < 0 ? -1 : 1;
	}
	r = command(c, "DATA");
	if (r != 354)
		return r < 0 ? -1 : 1;
	if (opt.id_tag) {
		char hdr[200];
		*id = atomic_fetch_add(&n_id, 1) + 1;
		int hl = snprintf(hdr, sizeof hdr, "X-Sgload-Id: %s.%ld\r\n", opt.id_tag, *id);
		if (write_all(c, hdr, (size_t)hl) < 0) {
			c->code = -1;
			return -1;
		}
	}
	if (write_all(c, message, message_len) < 0) {
		c->code = -1;
		return -1;
	}
	r = reply(c);
	if (r >= 200 && r < 300)
		return 0;
	return r < 0 ? -1 : 1;
}

/* ------------------------------------------------------------ workers */

static void record_latency(double ms)
{
	long i = atomic_fetch_add(&n_lat, 1);
	if (i < opt.total)
		latency_ms[i] = ms;
}

static void *load_thread(void *arg)
{
	(void)arg;
	SSL_SESSION *cache = NULL;
	client *c = malloc(sizeof *c);
	while (c && !atomic_load(&stop_flag)) {
		/* claim the next block of --msgs-per-conn messages */
		long first = atomic_fetch_add(&n_claimed, opt.msgs_per_conn);
		if (first >= opt.total)
			break;
		long block = opt.total - first < opt.msgs_per_conn ? opt.total - first : opt.msgs_per_conn;
		double t0 = now();
		if (session_open(c, opt.resume ? &cache : NULL) < 0) {
			atomic_fetch_add(&n_fail, block);
			atomic_fetch_add(&n_conn_fail, 1);
			diag("session setup failed: %s", c->last);
			event("setup", 0, c->code, (now() - t0) * 1000.0);
			session_close(c, false);
			usleep(2000); /* do not spin against a dead server */
			pause_ms();
			continue;
		}
		atomic_fetch_add(&n_conns, 1);
		int r = 0;
		for (long m = 0; m < block; m++) {
			double ts = m == 0 ? t0 : now();
			long id;
			r = transaction(c, &id);
			event(m == 0 ? "new" : "msg", id, c->code, (now() - ts) * 1000.0);
			if (r != 0) {
				atomic_fetch_add(&n_fail, block - m);
				diag("message failed: %s", c->last);
				pause_ms();
				break;
			}
			atomic_fetch_add(&n_ok, 1);
			record_latency((now() - ts) * 1000.0);
			pause_ms();
			if (atomic_load(&stop_flag))
				break; /* --duration reached: the rest of the block is not sent */
		}
		session_close(c, r >= 0);
	}
	free(c);
	if (cache)
		SSL_SESSION_free(cache);
	atomic_fetch_add(&threads_done, 1);
	return NULL;
}

static void *idle_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_flag)) {
		long i = atomic_fetch_add(&n_claimed, 1);
		if (i >= opt.idle)
			break;
		client *c = malloc(sizeof *c);
		if (!c)
			break;
		double t0 = now();
		if (session_open(c, NULL) < 0) {
			atomic_fetch_add(&n_conn_fail, 1);
			diag("idle session setup failed: %s", c->last);
			event("setup", 0, c->code, (now() - t0) * 1000.0);
			session_close(c, false);
			free(c);
			usleep(2000);
			continue;
		}
		atomic_fetch_add(&n_conns, 1);
		idle_clients[i] = c;
	}
	atomic_fetch_add(&threads_done, 1);
	return NULL;
}

/* ------------------------------------------------------------ results */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static double percentile(const double *v, long n, double p)
{
	if (n <= 0)
		return 0;
	long k = (long)ceil(p * (double)n) - 1;
	return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static void report_load(double secs, bool hard)
{
	long ok = atomic_load(&n_ok), fail = atomic_load(&n_fail), conns = atomic_load(&n_conns);
	long n = atomic_load(&n_lat);
	if (n > opt.total)
		n = opt.total;
	qsort(latency_ms, (size_t)n, sizeof *latency_ms, cmp_double);
	printf("msgs=%ld ok=%ld fail=%ld conn_fail=%ld conns=%ld secs=%.3f msgs_per_s=%.1f "
	       "conns_per_s=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f MBps=%.2f "
	       "loadgen_cpu_s=%.3f tls_resumed=%ld tls=%s%s\n",
	       ok + fail, ok, fail, atomic_load(&n_conn_fail), conns, secs, secs > 0 ? ok / secs : 0,
	       secs > 0 ? conns / secs : 0, percentile(latency_ms, n, .50), percentile(latency_ms, n, .90),
	       percentile(latency_ms, n, .99), n ? latency_ms[n - 1] : 0,
	       secs > 0 ? (double)ok * (double)opt.size / secs / 1e6 : 0, cpu_self(),
	       atomic_load(&n_resumed), tls_desc, hard ? " hard_stop=1" : "");
	fflush(stdout);
}

/* ------------------------------------------------------------ message */

/* The message: RFC 5322 headers, then 76-character lines of letters and
 * digits (no line starts with ".", so no dot-stuffing is needed and the
 * bytes on the wire are the message), CRLF line ends, --size bytes in all
 * (at least the headers), then the terminating ".\r\n". */
static int build_message(void)
{
	char hdr[512];
	int hl = snprintf(hdr, sizeof hdr,
			  "From: <%s>\r\nTo: <rcpt0@%s>\r\nSubject: sgload test message\r\n"
			  "Message-ID: <sgload.%ld.%ld@saslgate.bench>\r\nMIME-Version: 1.0\r\n"
			  "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
			  opt.from, opt.rcpt_domain, (long)getpid(), (long)time(NULL));
	size_t size = (size_t)opt.size < (size_t)hl + 2 ? (size_t)hl + 2 : (size_t)opt.size;
	message = malloc(size + 3);
	if (!message)
		return -1;
	memcpy(message, hdr, (size_t)hl);
	static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t p = (size_t)hl;
	for (unsigned line = 0; p < size; line++) {
		size_t room = size - p; /* what is left, CRLF included */
		size_t l = room >= 78 ? 76 : room - 2;
		if (room - l - 2 == 1) /* a 1-byte remainder could not hold a CRLF */
			l--;
		for (size_t i = 0; i < l; i++)
			message[p + i] = alnum[(i + line) % (sizeof alnum - 1)];
		p += l;
		message[p++] = '\r';
		message[p++] = '\n';
	}
	opt.size = (long)p;
	memcpy(message + p, ".\r\n", 3);
	message_len = p + 3;
	return 0;
}

static int dump_message(const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(message, 1, (size_t)opt.size, f) != (size_t)opt.size || fclose(f) != 0) {
		fprintf(stderr, "sgload: --dump-msg %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ main */

static void usage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: sgload --host ADDR --port N [options]\n"
		"  --tls none|starttls|implicit   TLS mode (default none)\n"
		"  --auth USER:PASS               authenticate (default: no AUTH)\n"
		"  --auth-mech PLAIN|LOGIN        (default PLAIN)\n"
		"  --conns C                      concurrent clients (threads)\n"
		"  --msgs-per-conn M              messages per session\n"
		"  --total N                      messages in all (bound)\n"
		"  --size BYTES                   whole message, headers included (default 4096)\n"
		"  --rcpts R                      recipients per message (default 1)\n"
		"  --timeout S                    per socket operation (default 30)\n"
		"  --duration S                   no new message after S seconds (default 60)\n"
		"  --resume                       reuse TLS sessions (tickets) per client\n"
		"  --tls-version 12|13            pin TLS 1.2, or require 1.3\n"
		"  --idle C --hold S              hold C authenticated sessions S seconds\n"
		"  --source ADDR                  bind this local address\n"
		"  --dump-msg FILE                write the message sent (without the final dot)\n"
		"  --id-tag TAG                   X-Sgload-Id: TAG.N header on message N\n"
		"  --events FILE                  one line per outcome (see the source)\n"
		"  --pause-ms MS                  each thread sleeps MS after each message\n"
		"  --verbose                      more diagnostics\n"
		"Result: one line of key=value on stdout; exit 0 only if nothing failed.\n");
	exit(code);
}

static struct addrinfo *resolve(const char *host, const char *port, bool passive)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST | (passive ? AI_PASSIVE : 0)};
	struct addrinfo *ai = NULL;
	int e = getaddrinfo(host, port, &hints, &ai);
	if (e) {
		fprintf(stderr, "sgload: %s: %s (numeric addresses only)\n", host, gai_strerror(e));
		exit(2);
	}
	return ai;
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{"host", 1, 0, 'h'},	      {"port", 1, 0, 'p'},	{"tls", 1, 0, 't'},
		{"auth", 1, 0, 'a'},	      {"auth-mech", 1, 0, 'A'}, {"conns", 1, 0, 'c'},
		{"msgs-per-conn", 1, 0, 'm'}, {"total", 1, 0, 'n'},	{"size", 1, 0, 's'},
		{"rcpts", 1, 0, 'r'},	      {"timeout", 1, 0, 'T'},	{"duration", 1, 0, 'd'},
		{"idle", 1, 0, 'i'},	      {"hold", 1, 0, 'H'},	{"resume", 0, 0, 'R'},
		{"tls-version", 1, 0, 'V'},   {"source", 1, 0, 'S'},	{"dump-msg", 1, 0, 'D'},
		{"verbose", 0, 0, 'v'},	      {"id-tag", 1, 0, 'I'},	{"events", 1, 0, 'E'},
		{"pause-ms", 1, 0, 'P'},	      {"help", 0, 0, '?'},	{0, 0, 0, 0}};
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'h': opt.host = optarg; break;
		case 'p': opt.port = optarg; break;
		case 't':
			if (!strcmp(optarg, "none")) opt.tls = TLS_NONE;
			else if (!strcmp(optarg, "starttls")) opt.tls = TLS_STARTTLS;
			else if (!strcmp(optarg, "implicit")) opt.tls = TLS_IMPLICIT;
			else usage(2);
			break;
		case 'a': {
			char *colon = strchr(optarg, ':');
			if (!colon)
				usage(2);
			*colon = '\0';
			opt.user = optarg;
			opt.pass = colon + 1;
			break;
		}
		case 'A':
			if (!strcasecmp(optarg, "PLAIN")) opt.mech = MECH_PLAIN;
			else if (!strcasecmp(optarg, "LOGIN")) opt.mech = MECH_LOGIN;
			else usage(2);
			break;
		case 'c': opt.conns = atoi(optarg); break;
		case 'm': opt.msgs_per_conn = atol(optarg); break;
		case 'n': opt.total = atol(optarg); break;
		case 's': opt.size = atol(optarg); break;
		case 'r': opt.rcpts = atoi(optarg); break;
		case 'T': opt.timeout = atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'i': opt.idle = atol(optarg); break;
		case 'H': opt.hold = atof(optarg); break;
		case 'R': opt.resume = true; break;
		case 'V': opt.tls_version = atoi(optarg); break;
		case 'S': opt.source = optarg; break;
		case 'D': opt.dump_msg = optarg; break;
		case 'v': opt.verbose = true; break;
		case 'I': opt.id_tag = optarg; break;
		case 'E': opt.events = optarg; break;
		case 'P': opt.pause_ms = atol(optarg); break;
		case '?': usage(optopt ? 2 : 0); break;
		default: usage(2);
		}
	}
	if (optind != argc || opt.conns < 1 || opt.conns > SGL_MAX_CONNS || opt.msgs_per_conn < 1 ||
	    opt.total < 1 || opt.size < 0 || opt.rcpts < 1 || opt.timeout < 1 || opt.duration <= 0 ||
	    opt.idle < 0 || opt.hold < 0 || opt.pause_ms < 0 || (opt.id_tag && strlen(opt.id_tag) > 100) || (opt.tls_version && opt.tls_version != 12 && opt.tls_version != 13))
		usage(2);
}

static int setup_tls(void)
{
	ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!ssl_ctx)
		return -1;
	/* bench certificates are self-signed: no verification */
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ssl_ctx, opt.resume ? SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE
							   : SSL_SESS_CACHE_OFF);
	if (opt.tls_version == 12) {
		SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
		SSL_CTX_set_max_proto_version(ssl_ctx, TLS1_2_VERSION);
	} else if (opt.tls_version == 13) {
		SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION);
	}
	return 0;
}

/* Hold the idle sessions, then check each with NOOP and QUIT. */
static int finish_idle(double setup_secs)
{
	long est = atomic_load(&n_conns);
	printf("idle_ready established=%ld fail=%ld setup_secs=%.3f\n", est, atomic_load(&n_conn_fail), setup_secs);
	fflush(stdout);
	double t_hold = now();
	while (now() - t_hold < opt.hold)
		usleep(50000);
	long alive = 0;
	double t_check = now();
	for (long i = 0; i < opt.idle; i++) {
		client *c = idle_clients[i];
		if (!c)
			continue;
		/* bounded: after 2*timeout of checking, the rest is only closed */
		if (now() - t_check < 2.0 * opt.timeout && command(c, "NOOP") == 250)
			alive++;
		event("idle", 0, c->code, 0);
		(void)write_all(c, "QUIT\r\n", 6);
		session_close(c, false);
		free(c);
	}
	printf("idle=%ld established=%ld alive_after_hold=%ld fail=%ld setup_secs=%.3f hold=%.1f "
	       "loadgen_cpu_s=%.3f tls=%s\n",
	       opt.idle, est, alive, atomic_load(&n_conn_fail), setup_secs, opt.hold, cpu_self(), tls_desc);
	fflush(stdout);
	return alive == opt.idle ? 0 : 1;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	target = resolve(opt.host, opt.port, false);
	if (opt.source)
		source = resolve(opt.source, "0", true);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max; /* --idle 10000 needs the descriptors */
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (opt.tls != TLS_NONE && setup_tls() < 0) {
		fprintf(stderr, "sgload: SSL_CTX_new failed\n");
		return 2;
	}
	if (build_message() < 0) {
		perror("sgload: message");
		return 2;
	}
	if (opt.dump_msg && dump_message(opt.dump_msg) < 0)
		return 2;
	if (opt.events && !(events_file = fopen(opt.events, "a"))) {
		fprintf(stderr, "sgload: --events %s: %s\n", opt.events, strerror(errno));
		return 2;
	}

	long nthreads = opt.conns;
	if (opt.idle > 0) {
		idle_clients = calloc((size_t)opt.idle, sizeof *idle_clients);
		nthreads = nthreads > opt.idle ? opt.idle : nthreads;
	} else {
		latency_ms = calloc((size_t)opt.total, sizeof *latency_ms);
		nthreads = nthreads > opt.total ? opt.total : nthreads;
	}
	if (opt.idle > 0 ? !idle_clients : !latency_ms) {
		perror("sgload: calloc");
		return 2;
	}

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, SGL_THREAD_STACK);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	t_start = now();
	int started = 0;
	for (long i = 0; i < nthreads; i++) {
		pthread_t th;
		if (pthread_create(&th, &attr, opt.idle > 0 ? idle_thread : load_thread, NULL) != 0) {
			fprintf(stderr, "sgload: pthread_create failed after %d threads\n", started);
			break;
		}
		started++;
	}
	double hard_stop = opt.duration + 2.0 * opt.timeout + 5.0;
	while (atomic_load(&threads_done) < started) {
		usleep(20000);
		double el = now() - t_start;
		if (el > opt.duration)
			atomic_store(&stop_flag, 1);
		if (el > hard_stop) { /* a thread is stuck: report what we have and leave */
			if (opt.idle > 0)
				printf("idle=%ld established=%ld fail=%ld setup_secs=%.3f hard_stop=1\n", opt.idle,
				       atomic_load(&n_conns), atomic_load(&n_conn_fail), el);
			else
				report_load(el, true);
			fflush(stdout);
			_exit(3);
		}
	}
	double secs = now() - t_start;
	if (opt.idle > 0)
		return finish_idle(secs);
	report_load(secs, false);
	return atomic_load(&n_fail) || atomic_load(&n_ok) == 0 ? 1 : 0;
}
