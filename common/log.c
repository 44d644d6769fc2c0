/* SPDX-License-Identifier: BSD-2-Clause */
/* common/log.c: one writer for every log line.
 *
 * Lines go to stderr, whole lines per write(2) and at most PIPE_BUF octets
 * per write when it carries more than one, so lines of different threads
 * never interleave (a pipe writes that much atomically).  A thread that
 * holds its lines (sg_log_hold: a worker, from its loop) collects them in
 * a buffer of its own and writes them when its loop is about to wait
 * (sg_log_flush), so one loop iteration's lines cost one write instead of
 * one each; an error line goes out at once with those before it.  Other
 * threads (the main one, the thread pool's) write each line at once.
 *
 * Under systemd (JOURNAL_STREAM set) the journal adds time and priority
 * itself, so we prefix "<N>" (sd-daemon(3) levels) and no timestamp;
 * otherwise an ISO-8601 UTC timestamp starts the line.  journald reads a
 * stream line by line, each with its own "<N>", so several lines in one
 * write are still one record each. */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int sg_log_level = SG_LOG_INFO;

/* A holding thread's lines not yet written. */
#define HOLD_SIZE 16384
static __thread char *held;
static __thread size_t held_len;

/* All of p..p+n, or as much as the descriptor takes (a log line that
 * cannot be written is dropped, as before). */
static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Whole lines, at most PIPE_BUF octets a write unless one line is longer
 * (that one alone, as an unheld line would go). */
static void write_lines(const char *p, size_t n)
{
	while (n > 0) {
		size_t k = 0;
		for (;;) {
			const char *nl = memchr(p + k, '\n', n - k);
			size_t next = nl ? (size_t)(nl - p) + 1 : n;
			if (k > 0 && next > PIPE_BUF)
				break;
			k = next;
			if (k >= n || k >= PIPE_BUF)
				break;
		}
		write_all(p, k);
		p += k;
		n -= k;
	}
}

void sg_log_flush(void)
{
	if (held && held_len) {
		write_lines(held, held_len);
		held_len = 0;
	}
}

void sg_log_hold(int on)
{
	if (on) {
		if (!held)
			held = malloc(HOLD_SIZE); /* none: lines go out one by one */
		return;
	}
	sg_log_flush();
	free(held);
	held = NULL;
}

static const char *const level_name[] = {"error", "warn", "info", "debug"};
static const int level_prio[] = {3, 4, 6, 7}; /* LOG_ERR .. LOG_DEBUG */

int sg_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, level_name[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return SG_LOG_WARN;
	return -1;
}

void sg_vlog(int level, const char *sid, const char *fmt, va_list ap)
{
	static int journal = -1;
	/* room for a whole login in its log form (up to 3 KiB) beside the
	 * rest of a message line */
	char line[8192];
	size_t n = 0;

	if (level > sg_log_level)
		return;
	if (level < 0)
		level = 0;
	if (level > 3)
		level = 3;
	if (journal < 0)
		journal = getenv("JOURNAL_STREAM") != NULL;

	if (journal) {
		n = (size_t)snprintf(line, sizeof line, "<%d>", level_prio[level]);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ ",
		                      ts.tv_nsec / 1000000);
	}
	n += (size_t)snprintf(line + n, sizeof line - n, "%s: ", level_name[level]);
	if (sid && n < sizeof line)
		n += (size_t)snprintf(line + n, sizeof line - n, "sid=%s ", sid);
	if (n < sizeof line) {
		int k = vsnprintf(line + n, sizeof line - n, fmt, ap);
		if (k > 0)
			n += (size_t)k;
	}
	if (n >= sizeof line - 1)
		n = sizeof line - 2; /* truncated: still one line */
	/* A log line is one line: control characters from the network are
	 * escaped by callers where they matter; here we only keep CR/LF out so
	 * nobody can forge a second line. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	if (!held) {
		write_all(line, n);
		return;
	}
	if (held_len + n > HOLD_SIZE) /* n <= sizeof line < HOLD_SIZE */
		sg_log_flush();
	memcpy(held + held_len, line, n);
	held_len += n;
	if (level == SG_LOG_ERROR)
		sg_log_flush(); /* an error may be the last line before an abort */
}

void sg_log(int level, const char *sid, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sg_vlog(level, sid, fmt, ap);
	va_end(ap);
}

void sg_log_safe(char *dst, size_t max, const char *src)
{
	size_t i = 0;
	if (max == 0)
		return;
	for (; src && src[i] && i + 1 < max; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = (c <= 0x20 || c >= 0x7f || c == '=' || c == '"') ? '?'
		                                                           : (char)c;
	}
	dst[i] = '\0';
}
