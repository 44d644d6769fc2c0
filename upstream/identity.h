/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/identity.h: every outward form of the client's identity.
 *
 * The one place that writes the authenticated login (and the client's
 * address, HELO name, ...) in a form another program reads:
 *   - XCLIENT attributes (Postfix XCLIENT_README), LOGIN among them, and
 *     the EHLO after them, which carries the client's HELO name;
 *   - XFORWARD attributes (Postfix XFORWARD_README);
 *   - the user in the Received header's "(authenticated sender: ...)"
 *     comment and in "X-Authenticated-User:";
 *   - the MAIL AUTH= parameter (RFC 4954 section 5);
 *   - the log's user= value.
 * Each form carries the value whole or not at all: a value a form cannot
 * represent exactly is an error, which the link turns into 454 4.7.0 at
 * AUTH (docs/ARCHITECTURE.md, "Identity").  Nothing here shortens a value
 * or replaces an octet of it.  Pure code, no I/O (unit-tested and fuzzed). */
#ifndef SG_UPSTREAM_IDENTITY_H
#define SG_UPSTREAM_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/buf.h"
#include "link.h"

#define SG_XCLIENT_LINE_MAX 512 /* octets per command, CRLF included */
#define SG_XCLIENT_LINES 10     /* one per attribute at worst */
/* RFC 5322 2.1.1: a header line is at most 998 octets without its CRLF */
#define SG_HEADER_LINE_MAX 998
/* RFC 1035 2.3.4: the longest HELO name sent on (the session takes no
 * longer one) */
#define SG_HELO_NAME_MAX 255

/* XCLIENT (or, with xforward, XFORWARD) commands for id, sending the
 * SG_XA_* attributes in attrs that have a value, packed into as few
 * commands of at most SG_XCLIENT_LINE_MAX octets as they fit (each
 * "VERB a=b ...\r\n", NUL-terminated).  With a login, XCLIENT needs
 * SG_XA_LOGIN in attrs (the upstream offers it).  Returns how many lines,
 * or -1 with *why set when an attribute cannot be sent whole (or LOGIN is
 * not offered, or more than max lines would be needed). */
int sg_xclient_lines(const sg_identity *id, unsigned attrs,
                     char lines[][SG_XCLIENT_LINE_MAX + 1], int max,
                     const char **why);
int sg_xforward_lines(const sg_identity *id, unsigned attrs,
                      char lines[][SG_XCLIENT_LINE_MAX + 1], int max,
                      const char **why);

/* The EHLO saslgate sends after XCLIENT (Postfix answers XCLIENT as a new
 * greeting and expects a new EHLO): "EHLO <the client's HELO name>\r\n",
 * so the upstream's Received line and HELO restrictions see the client's
 * name, not saslgate's (nginx's mail proxy does the same).  EHLO even when
 * the client said HELO: the link needs the upstream's extensions.  The
 * client's name is sent as it gave it, which the session checked (one word
 * of printable ASCII, at most SG_HELO_NAME_MAX octets); a name that is
 * missing or not so gives "EHLO <fallback>" ([upstream] helo) with *why
 * set.  0: the client's name, 1: the fallback, -1: cap too small. */
int sg_identity_ehlo(char *out, size_t cap, const sg_identity *id,
                     const char *fallback, const char **why);

/* Append login as a header value to out: inside a comment (the Received
 * header's "(authenticated sender: ...)": '(', ')' and '\' as quoted-pairs,
 * RFC 5322 3.2.2) or as an unstructured field body (X-Authenticated-User,
 * RFC 5322 3.2.5).  -1 (with *why) when a header cannot carry it exactly:
 * a control octet, invalid UTF-8 (RFC 6532 3.2), leading or trailing
 * white space of a field body (unfolding readers drop it), empty. */
int sg_identity_header_value(sg_buf *out, const char *login, bool comment,
                             const char **why);

/* NULL when every form that identity mode `mode` (SG_ID_*) writes can carry
 * id->login whole; else why not.  Checked before an upstream is used, so a
 * login that cannot be passed on gets 454 at AUTH and nothing is relayed.
 * (The XCLIENT and XFORWARD forms also depend on the upstream's
 * attributes: checked again when the commands are made.) */
const char *sg_identity_unfit(const sg_identity *id, int mode);

/* " AUTH=<xtext of login>", or " AUTH=<>" without a login (RFC 4954 5),
 * appended to out.  0 / -1 (no memory). */
int sg_identity_mail_auth(sg_buf *out, const char *login);

/* login as the log's user= value: octets 0x21..0x7e but '+', '=', '"' and
 * '\' as they are, every other octet as "+HH" (upper-case hex, as xtext),
 * so a log reader gets the exact login back and no login can add a key or
 * end the line.  Writes at most cap - 1 octets and a NUL; returns the
 * length the whole form needs (without NUL), like snprintf.  NULL: "-". */
size_t sg_identity_log(char *out, size_t cap, const char *login);
/* The same, allocated (NULL without memory). */
char *sg_identity_log_dup(const char *login);

#endif
