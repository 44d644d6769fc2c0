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

/* auth_cmd.c: the AUTH command, and a client's line during an exchange. */
void sg_cmd_auth(sg_session *s, char *arg);
void sg_cmd_auth_response(sg_session *s, char *line, size_t len);

#endif
