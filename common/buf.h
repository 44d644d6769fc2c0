/* common/buf.h: a growable byte buffer with a hard bound.
 *
 * Every buffer that holds client or upstream input has a named maximum
 * (STYLE.md: every bound has a reply or a close); sg_buf_append fails with -1
 * instead of growing past it. */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>

typedef struct sg_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max; /* 0 = unbounded (only for our own output) */
} sg_buf;

void sg_buf_init(sg_buf *b, size_t max);
void sg_buf_free(sg_buf *b);
int sg_buf_reserve(sg_buf *b, size_t extra);        /* -1 past max / OOM */
int sg_buf_append(sg_buf *b, const void *p, size_t n); /* -1 past max / OOM */
int sg_buf_appendf(sg_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sg_buf_consume(sg_buf *b, size_t n); /* drop n bytes from the front */
void sg_buf_reset(sg_buf *b);             /* len = 0, keep memory */
void sg_buf_shrink(sg_buf *b);            /* free memory if empty */

/* strdup that aborts on OOM (config and start-up paths only) */
char *sg_xstrdup(const char *s);
void *sg_xcalloc(size_t n, size_t sz);

#endif
