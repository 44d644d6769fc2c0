/* SPDX-License-Identifier: BSD-2-Clause */
/* common/buf.c: bounded growable buffers. */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_buf_init(sg_buf *b, size_t max)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->max = max;
}

void sg_buf_free(sg_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int sg_buf_reserve(sg_buf *b, size_t extra)
{
	size_t need = b->len + extra;
	if (need < b->len || (b->max && need > b->max))
		return -1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap <= SIZE_MAX / 2 ? cap * 2 : need;
	if (b->max && cap > b->max)
		cap = b->max;
	b->data = sg_xrealloc(b->data, cap);
	b->cap = cap;
	return 0;
}

int sg_buf_append(sg_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (sg_buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int sg_buf_appendf(sg_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || sg_buf_reserve(b, (size_t)n + 1) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void sg_buf_consume(sg_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void sg_buf_reset(sg_buf *b) { b->len = 0; }

void sg_buf_shrink(sg_buf *b)
{
	if (b->len == 0)
		sg_buf_free(b);
}
