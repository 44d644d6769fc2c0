/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/policy_proto.h: the Postfix policy delegation protocol
 * (SMTPD_POLICY_README), without I/O: a request's encoding, a reply's
 * parsing and what its action means to saslgate.  proxy/policy.c is the
 * client that carries them. */
#ifndef SG_PROXY_POLICY_PROTO_H
#define SG_PROXY_POLICY_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/buf.h"

/* One request attribute: name and value.  A NULL value is not sent. */
typedef struct sg_policy_attr {
	const char *name;
	const char *value;
} sg_policy_attr;

/* The request: "name=value\n" for each attribute, then "\n".  A value
 * with CR or LF would end the attribute (or the request) early: such a
 * request is never sent: -1, *bad names the attribute.  0: out holds it. */
int sg_policy_encode(const sg_policy_attr *attrs, size_t n, sg_buf *out,
                     const char **bad);

/* The longest reply read: a few attributes of a line each. */
#define SG_POLICY_REPLY_MAX 4096
/* The longest action text kept (a 4NN/5NN line, a PREPEND header). */
#define SG_POLICY_TEXT_MAX 512

/* A reply: "name=value\n" lines up to an empty line.  Postfix reads the
 * action= attribute and ignores the others; so does this.  1: a whole
 * reply, its action in action (NUL-terminated, CR and controls as
 * spaces, at most SG_POLICY_TEXT_MAX octets), *used octets of p were
 * read; 0: not all in yet; -1: no reply (a line that is not name=value,
 * no action=, longer than SG_POLICY_REPLY_MAX). */
int sg_policy_reply_parse(const char *p, size_t len, char *action,
                          size_t cap, size_t *used);

/* What an action means here. */
enum sg_policy_kind {
	SG_POL_CONTINUE = 0, /* OK, DUNNO, DEFER_IF_REJECT: carry on */
	SG_POL_REFUSE,       /* REJECT, DEFER, DEFER_IF_PERMIT, 4NN/5NN: reply */
	SG_POL_WARN,         /* WARN: logged, carry on */
	SG_POL_PREPEND,      /* PREPEND: a header for the message, carry on */
	SG_POL_IGNORED,      /* known to Postfix, no meaning in a proxy */
	SG_POL_UNKNOWN,      /* not an action at all: logged, carry on */
};

typedef struct sg_policy_verdict {
	enum sg_policy_kind kind;
	const char *name; /* the action's name as logged ("REJECT", "450") */
	int code;         /* SG_POL_REFUSE: the reply code */
	/* SG_POL_REFUSE: the whole reply line with CRLF ("450 4.7.1 text\r\n");
	 * SG_POL_PREPEND: the header line without CRLF; SG_POL_WARN: the
	 * text.  Empty otherwise. */
	char text[SG_POLICY_TEXT_MAX + 32];
} sg_policy_verdict;

/* The verdict of an action= value (case-insensitive name, as Postfix
 * reads access(5) actions). */
void sg_policy_verdict_of(const char *action, sg_policy_verdict *v);

#endif
