/* SPDX-License-Identifier: BSD-2-Clause */
/* common/log.c: one writer for every log line.
 *
 * Lines go to stderr in one write(2) each so lines of different worker
 * threads never interleave.  Under systemd (JOURNAL_STREAM set) the journal
 * adds time and priority itself, so we prefix "<N>" (sd-daemon(3) levels) and
 * no timestamp; otherwise an ISO-8601 UTC timestamp starts the line. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int sg_log_level = SG_LOG_INFO;

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
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
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
