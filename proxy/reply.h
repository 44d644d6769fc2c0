/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/reply.h: every reply saslgate itself gives a client, and the one
 * writer for all replies (ours and the upstream's).
 *
 * The writer appends to the session's output buffer; sg_session_process
 * flushes it once per pipelined group (RFC 2920 section 3.1: the replies to
 * a group go out together when no further command is buffered).  It also
 * counts error replies: the (SG_MAX_ERRORS + 1)th is replaced by 421 4.7.0
 * and the session closes, like Postfix's smtpd_hard_error_limit. */
#ifndef SG_PROXY_REPLY_H
#define SG_PROXY_REPLY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sg_session sg_session; /* proxy/session_int.h */

enum sg_rep {
	SG_R_GREETING,       /* 220 <host> ESMTP */
	SG_R_BYE,            /* 221 2.0.0 */
	SG_R_OK,             /* 250 2.0.0 */
	SG_R_HELO,           /* 250 <host> */
	SG_R_VRFY,           /* 252 2.0.0 */
	SG_R_HELP,           /* 214 2.0.0 */
	SG_R_STARTTLS,       /* 220 2.0.0 */
	SG_R_AUTH_OK,        /* 235 2.7.0 */
	SG_R_TOO_MANY_CONN,  /* 421 4.7.0 at connect */
	SG_R_TOO_MANY_ERR,   /* 421 4.7.0 */
	SG_R_TOO_MANY_FAIL,  /* 421 4.7.0 after max_failures */
	SG_R_IDLE,           /* 421 4.4.2 */
	SG_R_SHUTDOWN,       /* 421 4.3.2 */
	SG_R_BDAT_SIZE,      /* 421 4.5.4 */
	SG_R_TLS_UNAVAIL,    /* 454 4.7.0 */
	SG_R_AUTH_TEMPFAIL,  /* 454 4.7.0 */
	SG_R_AUTH_IP_LIMIT,  /* 454 4.7.0 */
	SG_R_TOO_MANY_RCPT,  /* 452 4.5.3 */
	SG_R_UPSTREAM_DOWN,  /* 451 4.4.1 */
	SG_R_LINE_TOO_LONG,  /* 500 5.5.2 */
	SG_R_NUL,            /* 501 5.5.2 */
	SG_R_CONTROL,        /* 501 5.5.2 */
	SG_R_UNKNOWN,        /* 502 5.5.1 */
	SG_R_BAD_SEQ,        /* 503 5.5.1 */
	SG_R_NEED_HELO,      /* 503 5.5.1 */
	SG_R_NESTED_MAIL,    /* 503 5.5.1 */
	SG_R_NEED_MAIL,      /* 503 5.5.1 */
	SG_R_NEED_RCPT,      /* 503 5.5.1 */
	SG_R_ALREADY_AUTH,   /* 503 5.5.1 */
	SG_R_AUTH_IN_TXN,    /* 503 5.5.1 */
	SG_R_TLS_ACTIVE,     /* 503 5.5.1 */
	SG_R_NO_CHUNKING,    /* 503 5.5.1 */
	SG_R_AFTER_BDAT,     /* 503 5.5.1 */
	SG_R_SYNTAX,         /* 501 5.5.4 */
	SG_R_HELO_SYNTAX,    /* 501 5.5.4 */
	SG_R_NO_ARGS,        /* 501 5.5.4 */
	SG_R_BDAT_SYNTAX,    /* 501 5.5.4 */
	SG_R_BAD_B64,        /* 501 5.5.2 */
	SG_R_AUTH_CANCEL,    /* 501 5.7.0 */
	SG_R_BAD_MECH,       /* 504 5.5.4 */
	SG_R_AUTH_REQUIRED,  /* 530 5.7.0 */
	SG_R_AUTH_FAILED,    /* 535 5.7.8 */
	SG_R_ENCRYPT_NEEDED, /* 538 5.7.11 */
	SG_R_TOO_BIG,        /* 552 5.3.4 */
	SG_R_BAD_ADDR,       /* 553 5.1.3 */
	SG_R_NOT_OWNER,      /* 553 5.7.1 */
	SG_R_BAD_PARAM,      /* 555 5.5.4 */
	SG_R_COUNT
};

typedef struct sg_rep_def {
	int code;
	const char *enh;  /* RFC 3463 enhanced status code, NULL for none */
	const char *text;
	bool host;        /* prefix the text with our host name (RFC 5321 4.2) */
} sg_rep_def;

extern const sg_rep_def sg_rep_table[SG_R_COUNT];

/* One of ours. */
void sg_reply_send(sg_session *s, enum sg_rep r);
/* A single line built here ("334 ...", "250-PIPELINING"): code and text as
 * given, no enhanced code added.  more: a continuation line ("250-"). */
void sg_reply_line(sg_session *s, int code, bool more, const char *text);
/* A complete reply from the upstream (lines with CRLF), passed through. */
void sg_reply_raw(sg_session *s, int code, const char *text, size_t len);
/* One of ours as its text (CRLF included) in buf; returns its length. */
size_t sg_reply_text(sg_session *s, enum sg_rep r, char *buf, size_t cap);
/* A failure given once already, again for a BDAT chunk discarded after it
 * (RFC 3030 4.2): not counted again toward the error limit, so a client
 * that pipelined its chunks is not closed for the one failure. */
void sg_reply_again(sg_session *s, const char *text, size_t len);

#endif
