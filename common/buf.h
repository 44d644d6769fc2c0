/* SPDX-License-Identifier: BSD-2-Clause */
/* common/buf.h: a growable byte buffer with a hard bound.
 *
 * Every buffer that holds client or upstream input has a named maximum, and
 * every maximum has a reply or a close: sg_buf_append fails with -1 instead
 * of growing past it.  That -1 is input policy and means nothing else: the
 * memory for growth within the bound comes from sg_xrealloc (mem.h), so a
 * buffer without a maximum never fails. */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>

#include "mem.h"

typedef struct sg_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max; /* 0 = unbounded (only for our own output) */
} sg_buf;

void sg_buf_init(sg_buf *b, size_t max);
void sg_buf_free(sg_buf *b);
/* -1 when len + extra would pass max (or SIZE_MAX); else 0. */
int sg_buf_reserve(sg_buf *b, size_t extra);
int sg_buf_append(sg_buf *b, const void *p, size_t n); /* -1 past max */
int sg_buf_appendf(sg_buf *b, const char *fmt, ...)    /* -1 past max */
    __attribute__((format(printf, 2, 3)));
void sg_buf_consume(sg_buf *b, size_t n); /* drop n bytes from the front */
void sg_buf_reset(sg_buf *b);             /* len = 0, keep memory */
void sg_buf_shrink(sg_buf *b);            /* free memory if empty */

#endif
