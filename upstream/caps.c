/* upstream/caps.c: what the upstream offers, shared by all workers.
 *
 * The probe runs on one loop and writes; every worker's sessions read when
 * they build their EHLO reply.  A mutex is plenty: one short copy per EHLO. */
#include "caps.h"

#include <pthread.h>

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

sg_upstream_caps sg_upstream_caps_get(void)
{
	pthread_mutex_lock(&caps_lock);
	sg_upstream_caps c = caps;
	pthread_mutex_unlock(&caps_lock);
	return c;
}
