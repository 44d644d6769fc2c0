/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/session.h: one client connection, from accept to close.
 *
 * The session owns its socket, its TLS engine, its SASL context and its
 * upstream link; sasl/ and upstream/ only see narrow interfaces. */
#ifndef SG_PROXY_SESSION_H
#define SG_PROXY_SESSION_H

#include "server.h"

/* Accept one connection on l (called from the listener's connection
 * callback of uv_listen).  Applies max_connections (421 4.7.0 at connect). */
void sg_session_accept(sg_worker *w, sg_listener *l);
/* The same for a socket already accepted on l (proxy/server.c accepts
 * itself), with the client's address accept(2) gave (NULL: asked of the
 * socket); the session owns fd from here, even when it fails. */
void sg_session_accept_fd(sg_worker *w, sg_listener *l, int fd,
                          const struct sockaddr_storage *peer);

/* Shutdown: stop reading new commands where idle, let transactions finish.
 * final = true: every remaining session gets "421 4.3.2 ..." and closes. */
void sg_session_drain_all(sg_worker *w, bool final);

/* Upstream caps changed, certificates reloaded etc: nothing to do for live
 * sessions; new sessions read w->cfg / w->tls at accept. */

#endif
