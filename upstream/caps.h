/* upstream/caps.h: the cached upstream capabilities (EHLO honesty).
 * Internal to upstream/: the probe (sg_upstream_probe) stores, any worker
 * reads (sg_upstream_caps_get in link.h). */
#ifndef SG_UPSTREAM_CAPS_H
#define SG_UPSTREAM_CAPS_H

#include "link.h"
#include "reply_parse.h"

void sg_upstream_caps_set(const sg_ehlo *e);

#endif
