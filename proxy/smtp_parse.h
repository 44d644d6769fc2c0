/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/smtp_parse.h: SMTP command line framing, verb/argument split and
 * the MAIL/RCPT path.
 *
 * A resumable framer over the session's bounded input buffer: the session
 * appends whatever it read and asks for the next complete line until there
 * is none.  Pure code (no I/O, no allocation), unit-tested in
 * tests/unit/test_smtp_parse.c.
 *
 * Limits: a command line may be SG_LINE_MAX octets, CRLF included (RFC 5321
 * 4.5.3.1.4 only guarantees 512; we accept more because some clients send
 * long MAIL parameter lists).  While a SASL exchange awaits a client response
 * the limit is SG_AUTH_LINE_MAX (RFC 4954 4: 12288 octets).  A longer line
 * gets one SG_LINE_TOOLONG, then everything up to its line end is dropped:
 * the framer never needs to buffer more than the limit.
 *
 * Bare LF: a command line may end in a bare LF (the CR before it, if any, is
 * removed).  Postfix does the same for commands; it is harmless here because
 * every command is parsed whole and replied to on its own.  A bare CR is
 * never a line end (it stays in the line and is refused with the other
 * control octets).  The DATA phase does not use this framer:
 * upstream/data_scan.c rejects or normalises bare CR and LF there
 * ([limits] bare_newline; SMTP smuggling). */
#ifndef SG_PROXY_SMTP_PARSE_H
#define SG_PROXY_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define SG_LINE_MAX 4096       /* command line, CRLF included: 500 5.5.2 */
#define SG_AUTH_LINE_MAX 12288 /* SASL response line, RFC 4954 section 4 */

typedef struct sg_lines {
	bool discarding; /* inside an overlong line: drop up to its LF */
} sg_lines;

enum sg_line_status {
	SG_LINE_NONE = 0, /* no complete line yet: read more */
	SG_LINE_OK,       /* *line / *linelen: the line without CRLF */
	SG_LINE_TOOLONG,  /* over limit: reply 500 5.5.2 (reported once) */
	SG_LINE_NUL,      /* the line holds a NUL octet: reply 501 5.5.2 */
};

/* Find the next line in buf[0..len).  *consumed is how many octets the
 * caller must drop from the front of its buffer (also for NONE: octets of an
 * overlong line being discarded).  limit is SG_LINE_MAX or SG_AUTH_LINE_MAX.
 * The line is not NUL-terminated; it points into buf. */
int sg_line_next(sg_lines *st, const char *buf, size_t len, size_t limit,
                 const char **line, size_t *linelen, size_t *consumed);

/* Is there a complete line (or something to report) in buf?  Used to decide
 * whether a pipelined group has ended (RFC 2920: flush when no more input). */
bool sg_line_pending(const sg_lines *st, const char *buf, size_t len,
                     size_t limit);

/* Split "VERB arg..." in place: verb is uppercased and NUL-terminated, *arg
 * points at the first non-space after it ("" when none).  line must be
 * NUL-terminated.  Trailing spaces of the argument are removed. */
void sg_cmd_split(char *line, char **verb, char **arg);

/* The path of MAIL FROM: / RCPT TO: (RFC 5321 4.1.2), what sg_path_parse
 * says of it. */
enum sg_path_status {
	SG_PATH_OK = 0,
	SG_PATH_SYNTAX, /* missing, unterminated, not followed by a blank:
	                   501 */
	SG_PATH_BAD,    /* a control octet, '<' '>' ',' ';' or an unquoted
	                   blank inside, too long, "@dom", "user@", an empty
	                   path where none is allowed: 553 5.1.3 */
};
#define SG_PATH_NULL_OK 0x1 /* "<>" is a path (the null reverse-path) */
#define SG_PATH_STRICT 0x2  /* angle brackets required */

/* Parse the path at *pp (the blanks after the colon already skipped) into
 * out (at most max octets and a NUL): "<addr>" with an obsolete source
 * route ("<@a,@b:addr>") dropped, or, unless SG_PATH_STRICT, a bare
 * "addr" as Postfix takes it with strict_rfc821_envelopes = no: up to the
 * first blank outside a quoted string, the same checks.  A bare address
 * is never empty, so never the null sender.  On SG_PATH_OK *pp points
 * after the path, at "" or at the blank before the parameters. */
int sg_path_parse(char **pp, char *out, size_t max, unsigned flags);

#endif
