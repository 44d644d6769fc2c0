/* SPDX-License-Identifier: BSD-2-Clause */
/* common/mem.c: allocation that never returns NULL (mem.h). */
#include "mem.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void sg_out_of_memory(const char *fn, size_t n)
{
	/* sg_log formats into a buffer on its stack: no allocation here. */
	log_error(NULL, "event=fatal reason=\"out of memory\" call=%s size=%zu",
	          fn, n);
	abort();
}

void *sg_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		sg_out_of_memory("sg_xmalloc", n);
	return p;
}

void *sg_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		sg_out_of_memory("sg_xcalloc",
		                 size && n > SIZE_MAX / size ? SIZE_MAX : n * size);
	return p;
}

void *sg_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		sg_out_of_memory("sg_xrealloc", n);
	return q;
}

void *sg_xreallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		sg_out_of_memory("sg_xreallocarray", SIZE_MAX);
	return sg_xrealloc(p, n * size);
}

char *sg_xstrdup(const char *s)
{
	if (!s)
		s = "";
	size_t n = strlen(s) + 1;
	char *p = sg_xmalloc(n);
	memcpy(p, s, n);
	return p;
}

char *sg_xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = sg_xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *sg_xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) /* glibc: no memory, or a result past INT_MAX octets */
		sg_out_of_memory("sg_xasprintf", (size_t)INT_MAX + 1);
	char *p = sg_xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}
