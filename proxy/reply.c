/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/reply.c: the reply table and the single reply writer (reply.h). */
#include "reply.h"

#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "session_int.h"

/* The table: one line per reply saslgate makes up itself. */
const sg_rep_def sg_rep_table[SG_R_COUNT] = {
	[SG_R_GREETING] = {220, NULL, "ESMTP", true},
	[SG_R_BYE] = {221, "2.0.0", "Bye", false},
	[SG_R_OK] = {250, "2.0.0", "Ok", false},
	[SG_R_HELO] = {250, NULL, "", true},
	[SG_R_VRFY] = {252, "2.0.0",
	               "Cannot VRFY user, but will accept message", false},
	[SG_R_HELP] = {214, "2.0.0", "See RFC 5321 and RFC 4954", false},
	[SG_R_STARTTLS] = {220, "2.0.0", "Ready to start TLS", false},
	[SG_R_AUTH_OK] = {235, "2.7.0", "Authentication successful", false},
	[SG_R_TOO_MANY_CONN] = {421, "4.7.0", "Too many connections, try later",
	                        true},
	[SG_R_TOO_MANY_ERR] = {421, "4.7.0", "Too many errors", true},
	[SG_R_TOO_MANY_FAIL] = {421, "4.7.0", "Too many authentication failures",
	                        true},
	[SG_R_IDLE] = {421, "4.4.2", "Idle timeout, closing connection", true},
	[SG_R_SHUTDOWN] = {421, "4.3.2", "Service shutting down", true},
	/* the octets that follow cannot be told from commands (RFC 3030 2) */
	[SG_R_BDAT_SIZE] = {421, "4.5.4",
	                    "BDAT chunk size unreadable, closing connection",
	                    true},
	[SG_R_TLS_UNAVAIL] = {454, "4.7.0", "TLS not available", false},
	[SG_R_AUTH_TEMPFAIL] = {454, "4.7.0",
	                        "Temporary authentication failure", false},
	[SG_R_AUTH_IP_LIMIT] = {454, "4.7.0",
	                        "Too many authentication failures from your "
	                        "address, try later", false},
	[SG_R_TOO_MANY_RCPT] = {452, "4.5.3", "Too many recipients", false},
	[SG_R_UPSTREAM_DOWN] = {451, "4.4.1",
	                        "Upstream server not available, try again later",
	                        false},
	[SG_R_LINE_TOO_LONG] = {500, "5.5.2", "Line too long", false},
	[SG_R_NUL] = {501, "5.5.2", "NUL character in command", false},
	[SG_R_CONTROL] = {501, "5.5.2", "Control character in command", false},
	[SG_R_UNKNOWN] = {502, "5.5.1", "Command not recognized", false},
	[SG_R_BAD_SEQ] = {503, "5.5.1", "Bad sequence of commands", false},
	[SG_R_NEED_HELO] = {503, "5.5.1", "Send EHLO/HELO first", false},
	[SG_R_NESTED_MAIL] = {503, "5.5.1", "Nested MAIL command", false},
	[SG_R_NEED_MAIL] = {503, "5.5.1", "Need MAIL command", false},
	[SG_R_NEED_RCPT] = {503, "5.5.1", "Need RCPT command", false},
	[SG_R_ALREADY_AUTH] = {503, "5.5.1", "Already authenticated", false},
	[SG_R_AUTH_IN_TXN] = {503, "5.5.1",
	                      "AUTH not permitted during a mail transaction",
	                      false},
	[SG_R_TLS_ACTIVE] = {503, "5.5.1", "TLS already active", false},
	[SG_R_NO_CHUNKING] = {503, "5.5.1", "BDAT without CHUNKING, use DATA",
	                      false},
	[SG_R_AFTER_BDAT] = {503, "5.5.1", "Not allowed after BDAT, send RSET",
	                     false},
	[SG_R_SYNTAX] = {501, "5.5.4", "Syntax error in parameters", false},
	[SG_R_HELO_SYNTAX] = {501, "5.5.4", "Syntax: EHLO hostname", false},
	[SG_R_NO_ARGS] = {501, "5.5.4", "No parameters allowed", false},
	[SG_R_BDAT_SYNTAX] = {501, "5.5.4", "Syntax: BDAT chunk-size [LAST]",
	                      false},
	[SG_R_BAD_B64] = {501, "5.5.2", "Invalid base64 data", false},
	[SG_R_AUTH_CANCEL] = {501, "5.7.0", "Authentication cancelled", false},
	[SG_R_BAD_MECH] = {504, "5.5.4", "Unrecognized authentication type",
	                   false},
	[SG_R_AUTH_REQUIRED] = {530, "5.7.0", "Authentication required", false},
	[SG_R_AUTH_FAILED] = {535, "5.7.8",
	                      "Authentication credentials invalid", false},
	[SG_R_ENCRYPT_NEEDED] = {538, "5.7.11",
	                         "Encryption required for requested "
	                         "authentication mechanism", false},
	[SG_R_TOO_BIG] = {552, "5.3.4",
	                  "Message size exceeds fixed maximum message size",
	                  false},
	[SG_R_BAD_ADDR] = {553, "5.1.3", "Bad address syntax", false},
	[SG_R_NOT_OWNER] = {553, "5.7.1",
	                    "Sender address not owned by the authenticated user",
	                    false},
	[SG_R_BAD_PARAM] = {555, "5.5.4",
	                    "Parameter not recognized or not supported", false},
};

/* Does this reply count toward the error limit?  Every 4xx/5xx except the
 * 421 that closes anyway. */
static bool is_error(int code) { return code >= 400 && code != 421; }

/* Returns true when the reply may be written; on the limit it writes the
 * 421 itself and closes. */
static bool count_error(sg_session *s, int code)
{
	if (s->closing)
		return false;
	if (!is_error(code))
		return true;
	if (++s->errors <= SG_MAX_ERRORS)
		return true;
	const sg_rep_def *d = &sg_rep_table[SG_R_TOO_MANY_ERR];
	sg_buf_appendf(&s->io.out, "%d %s %s %s\r\n", d->code, d->enh,
	               s->cfg->hostname, d->text);
	sg_session_close(s, "too many errors");
	return false;
}

size_t sg_reply_text(sg_session *s, enum sg_rep r, char *buf, size_t cap)
{
	const sg_rep_def *d = &sg_rep_table[r];
	char line[512];
	int n = snprintf(line, sizeof line, "%d", d->code);
	if (d->enh)
		n += snprintf(line + n, sizeof line - (size_t)n, " %s", d->enh);
	if (d->host)
		n += snprintf(line + n, sizeof line - (size_t)n, " %s",
		              s->cfg->hostname);
	if (d->text[0])
		n += snprintf(line + n, sizeof line - (size_t)n, " %s", d->text);
	if (n < 0 || (size_t)n > sizeof line - 3)
		n = (int)sizeof line - 3;
	memcpy(line + n, "\r\n", 2);
	size_t len = (size_t)n + 2 < cap ? (size_t)n + 2 : cap;
	memcpy(buf, line, len);
	return len;
}

void sg_reply_send(sg_session *s, enum sg_rep r)
{
	if (!count_error(s, sg_rep_table[r].code))
		return;
	char line[512];
	size_t n = sg_reply_text(s, r, line, sizeof line);
	sg_buf_append(&s->io.out, line, n);
	log_debug(s->id, "reply: %.*s", (int)n - 2, line);
}

void sg_reply_line(sg_session *s, int code, bool more, const char *text)
{
	if (!more && !count_error(s, code))
		return;
	sg_buf_appendf(&s->io.out, "%d%c%s\r\n", code, more ? '-' : ' ', text);
}

void sg_reply_again(sg_session *s, const char *text, size_t len)
{
	if (s->closing)
		return;
	sg_buf_append(&s->io.out, text, len);
}

void sg_reply_raw(sg_session *s, int code, const char *text, size_t len)
{
	if (!count_error(s, code))
		return;
	sg_buf_append(&s->io.out, text, len);
	size_t first = 0;
	while (first < len && first < 200 && text[first] != '\r' &&
	       text[first] != '\n')
		first++;
	log_debug(s->id, "reply (upstream): %.*s", (int)first, text);
}
