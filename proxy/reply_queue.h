/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/reply_queue.h: the relayed commands awaiting the upstream's reply
 * (reply_queue.c).  Internal to proxy/. */
#ifndef SG_PROXY_REPLY_QUEUE_H
#define SG_PROXY_REPLY_QUEUE_H

#include <stdbool.h>

#include "session_int.h"

/* Entries: verbs of commands.c (int, opaque here). */
bool sg_rq_busy(const sg_session *s);      /* replies are due */
bool sg_rq_full(const sg_session *s);      /* SG_RQ_MAX due */
int sg_rq_last(const sg_session *s);       /* newest entry's verb; -1: none */
unsigned sg_rq_count(const sg_session *s, int verb);
/* A command was handed to the link: its reply is due (pending becomes
 * SG_PEND_UPSTREAM).  The link's callback for it is sg_rq_on_reply. */
void sg_rq_push(sg_session *s, int verb);
/* sg_link_cb: the oldest entry's reply; once none is due the session
 * resumes reading. */
void sg_rq_on_reply(void *arg, const sg_reply *r);
/* The link is gone: no reply will come; each entry, in order, gets the
 * reply of its turn (sg_cmd_settle with no upstream reply). */
void sg_rq_abandon(sg_session *s);
/* Quiet session: give back the ring (kept while entries are due). */
void sg_rq_trim(sg_session *s);
/* Closing: forget everything, no reply. */
void sg_rq_free(sg_session *s);

#endif
