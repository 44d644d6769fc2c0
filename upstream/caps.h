/* SPDX-License-Identifier: BSD-2-Clause */
/* upstream/caps.h: the cached upstream capabilities (EHLO honesty).
 * Internal to upstream/: the probe (sg_upstream_probe) stores, any worker
 * reads (sg_upstream_caps_get in link.h). */
#ifndef SG_UPSTREAM_CAPS_H
#define SG_UPSTREAM_CAPS_H

#include "link.h"
#include "reply_parse.h"

void sg_upstream_caps_set(const sg_ehlo *e);
/* A link's own EHLO (not the probe's): its SIZE, when it names one, is the
 * upstream's limit now.  peer names it in the log line of a change. */
void sg_upstream_caps_size(const sg_ehlo *e, const char *peer);

#endif
