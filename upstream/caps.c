/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/caps.c: what the upstream offers, shared by all workers.
 *
 * The probe runs on one loop and writes; every worker's sessions read when
 * they build their EHLO reply.  A mutex is plenty: one short copy per EHLO. */
#include "caps.h"

#include <pthread.h>

#include "../common/log.h"

static pthread_mutex_t caps_lock = PTHREAD_MUTEX_INITIALIZER;
static sg_upstream_caps caps; /* all false until the first probe answers */

void sg_upstream_caps_set(const sg_ehlo *e)
{
	sg_upstream_caps c = {
	    .probed = true,
	    .eightbitmime = e->eightbitmime,
	    .smtputf8 = e->smtputf8,
	    .dsn = e->dsn,
	    .pipelining = e->pipelining,
	    .chunking = e->chunking,
	    .size = e->has_size ? e->size : 0,
	};
	pthread_mutex_lock(&caps_lock);
	caps = c;
	pthread_mutex_unlock(&caps_lock);
}

/* Only SIZE is taken from a link: the MTA's message limit is the same for
 * every client, while the other keywords may depend on the client the link
 * speaks for (after XCLIENT, Postfix's smtpd_discard_ehlo_keyword_address_maps
 * look at the client's address).  An EHLO without SIZE (discarded for this
 * client, or none) says nothing of the limit. */
void sg_upstream_caps_size(const sg_ehlo *e, const char *peer)
{
	if (!e->has_size)
		return;
	pthread_mutex_lock(&caps_lock);
	uint64_t was = caps.size;
	caps.size = e->size;
	pthread_mutex_unlock(&caps_lock);
	if (was != e->size)
		log_info(NULL, "event=upstream_size upstream=%s size=%llu was=%llu",
		         peer, (unsigned long long)e->size,
		         (unsigned long long)was);
}

sg_upstream_caps sg_upstream_caps_get(void)
{
	pthread_mutex_lock(&caps_lock);
	sg_upstream_caps c = caps;
	pthread_mutex_unlock(&caps_lock);
	return c;
}
