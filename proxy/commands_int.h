/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/commands_int.h: what the client-side command files (commands.c,
 * auth_cmd.c) share.  Internal to proxy/. */
#ifndef SG_PROXY_COMMANDS_INT_H
#define SG_PROXY_COMMANDS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "session_int.h"

/* May AUTH be used now (encrypted, or require_tls_for_auth = no)? */
bool sg_cmd_auth_allowed(const sg_session *s);
/* Open the upstream link for s (identity with or without the login);
 * ready gets the link's first reply, possibly before this returns. */
void sg_cmd_open_link(sg_session *s, bool with_login, sg_link_cb ready);
/* In a ready callback: true when the reply came before sg_link_open
 * returned (held, handled by sg_cmd_open_link). */
bool sg_cmd_hold_sync(sg_session *s, const sg_reply *r);

/* commands.c: a line a [policy] check held back passed: relay it. */
void sg_cmd_policy_pass(sg_session *s, int verb, const char *line, size_t len);

/* policy_cmd.c: [policy].  holds: when at is [policy] at, ask the
 * policy server about line (a RCPT for rcpt, else DATA) and return true:
 * the session waits (SG_PEND_POLICY), then the line is relayed or
 * answered.  false: no check here. */
bool sg_policy_holds(sg_session *s, int at, int verb, const char *rcpt,
                     const char *line, size_t len);
void sg_policy_txn_reset(sg_session *s);   /* PREPEND headers dropped */
void sg_policy_session_end(sg_session *s); /* closing: the check forgotten */
/* DATA's 354: the PREPEND headers go to the link for this message. */
void sg_policy_data_begin(sg_session *s);
/* The link holds the end of data (at = end_of_data): ask the policy
 * server (SG_PEND_POLICY), then sg_session_data_release or _refuse. */
void sg_policy_end_of_data(sg_session *s);

/* auth_cmd.c: the AUTH command, and a client's line during an exchange. */
void sg_cmd_auth(sg_session *s, char *arg);
void sg_cmd_auth_response(sg_session *s, char *line, size_t len);

#endif
