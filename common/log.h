/* SPDX-License-Identifier: BSD-2-Clause */
/* common/log.h: leveled logging to stderr (journald picks it up).
 *
 * Every line a session writes carries its session id, so an admin can grep one
 * connection's story: log_info(s->id, "event=auth result=ok user=%s", ...).
 * Pass NULL as the id for daemon-wide lines.  Never pass a credential (or its
 * base64) to these functions: the AUTH path logs mechanism and user only. */
#ifndef SG_LOG_H
#define SG_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum sg_log_level { SG_LOG_ERROR = 0, SG_LOG_WARN, SG_LOG_INFO, SG_LOG_DEBUG };

extern int sg_log_level; /* lines above this level are dropped */

void sg_log(int level, const char *sid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sg_vlog(int level, const char *sid, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
int sg_log_level_parse(const char *s); /* -1 when not a level name */

/* Hold this thread's lines until sg_log_flush() (on != 0), or write what
 * is held and stop holding (on == 0).  A thread running an event loop
 * holds and flushes before the loop waits, and before anything it sends
 * to a client, so the lines of one iteration go out in few write(2)s and
 * never after the reply they describe; error lines are written at once
 * with whatever is held before them.  Threads that never call this write each line at
 * once. */
void sg_log_hold(int on);
void sg_log_flush(void);

/* Copy a client-supplied name (a verb, an address) into dst (max octets,
 * NUL included; longer text is cut) for a log line: every octet that is
 * blank, a control, non-ASCII, '=' or '"' becomes '?', so a value such as
 * "x client=1.2.3.4" cannot forge a key that fail2ban would match.  A
 * login has its own, reversible form (upstream/identity.h). */
void sg_log_safe(char *dst, size_t max, const char *src);

#define log_error(sid, ...) sg_log(SG_LOG_ERROR, (sid), __VA_ARGS__)
#define log_warn(sid, ...) sg_log(SG_LOG_WARN, (sid), __VA_ARGS__)
#define log_info(sid, ...) sg_log(SG_LOG_INFO, (sid), __VA_ARGS__)
#define log_debug(sid, ...)                                                    \
	do {                                                                       \
		if (sg_log_level >= SG_LOG_DEBUG)                                      \
			sg_log(SG_LOG_DEBUG, (sid), __VA_ARGS__);                          \
	} while (0)

#endif
