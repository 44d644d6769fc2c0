/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/authcache.c: the credential cache (sasl/authcache.h).
 *
 * A hash table of entries chained by their key, and a doubly linked list
 * in order of use (head: most recently used) from which a full cache drops
 * its tail.  The table has a power of two of buckets, at least the bound
 * (so chains stay about one long); the key is already uniformly random, so
 * its first octets pick the bucket. */
#include "authcache.h"
#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <uv.h>

#define SG_ACACHE_SECRET_LEN 32

struct entry {
	unsigned char key[SG_ACACHE_KEY_LEN];
	bool ok;
	uint64_t expires_ms;
	struct entry *hnext;       /* hash chain */
	struct entry *prev, *next; /* use order: head = most recent */
	char *user, *authcid;      /* ok: point into ids */
	char ids[];
};

struct sg_acache {
	uv_mutex_t lock;
	unsigned char secret[SG_ACACHE_SECRET_LEN];
	const void *tag;
	size_t max, n;
	size_t nbuckets; /* power of two; 0 while off */
	struct entry **buckets;
	struct entry *head, *tail;
};

static size_t bucket_count(size_t max)
{
	size_t b = 16;
	while (b < max)
		b <<= 1;
	return b;
}

static size_t bucket_of(const sg_acache *c, const unsigned char *key)
{
	uint64_t h;
	memcpy(&h, key, sizeof h);
	return (size_t)(h & (c->nbuckets - 1));
}

static void unlink_use(sg_acache *c, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void push_use(sg_acache *c, struct entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

static void drop(sg_acache *c, struct entry *e)
{
	struct entry **pp = &c->buckets[bucket_of(c, e->key)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	unlink_use(c, e);
	c->n--;
	free(e);
}

static struct entry *find(sg_acache *c, const unsigned char *key)
{
	for (struct entry *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
		if (CRYPTO_memcmp(e->key, key, SG_ACACHE_KEY_LEN) == 0)
			return e;
	return NULL;
}

static void clear(sg_acache *c)
{
	while (c->head) {
		struct entry *e = c->head;
		c->head = e->next;
		free(e);
	}
	c->tail = NULL;
	c->n = 0;
	if (c->buckets)
		memset(c->buckets, 0, c->nbuckets * sizeof *c->buckets);
}

sg_acache *sg_acache_new(size_t max)
{
	sg_acache *c = sg_xcalloc(1, sizeof *c);
	if (RAND_bytes(c->secret, sizeof c->secret) != 1) {
		free(c);
		return NULL;
	}
	uv_mutex_init(&c->lock);
	sg_acache_reset(c, max, NULL);
	return c;
}

void sg_acache_free(sg_acache *c)
{
	if (!c)
		return;
	clear(c);
	free(c->buckets);
	OPENSSL_cleanse(c->secret, sizeof c->secret);
	uv_mutex_destroy(&c->lock);
	free(c);
}

void sg_acache_reset(sg_acache *c, size_t max, const void *tag)
{
	if (max > SG_ACACHE_MAX)
		max = SG_ACACHE_MAX;
	uv_mutex_lock(&c->lock);
	clear(c);
	free(c->buckets);
	c->buckets = NULL;
	c->nbuckets = 0;
	__atomic_store_n(&c->max, max, __ATOMIC_RELAXED);
	c->tag = tag;
	if (max) {
		c->nbuckets = bucket_count(max);
		c->buckets = sg_xcalloc(c->nbuckets, sizeof *c->buckets);
	}
	uv_mutex_unlock(&c->lock);
}

void sg_acache_flush(sg_acache *c)
{
	if (!c)
		return;
	uv_mutex_lock(&c->lock);
	clear(c);
	uv_mutex_unlock(&c->lock);
}

size_t sg_acache_count(sg_acache *c)
{
	uv_mutex_lock(&c->lock);
	size_t n = c->n;
	uv_mutex_unlock(&c->lock);
	return n;
}

bool sg_acache_on(const sg_acache *c)
{
	/* read without the lock: max only changes in a reload, and a reader
	 * that sees the old value is caught by the tag check */
	return c && __atomic_load_n(&c->max, __ATOMIC_RELAXED) > 0;
}

int sg_acache_key(const sg_acache *c, const char *login, size_t llen,
                  const char *pass, size_t plen,
                  unsigned char key[SG_ACACHE_KEY_LEN])
{
	unsigned char msg[4 + 2 * SG_ACACHE_CRED_MAX];
	unsigned int outlen = 0;

	if (!c || !llen || !plen || llen > SG_ACACHE_CRED_MAX ||
	    plen > SG_ACACHE_CRED_MAX || memchr(login, '\0', llen) ||
	    memchr(pass, '\0', plen))
		return -1;
	/* the login's length first: ("ab", "c") and ("a", "bc") differ */
	msg[0] = (unsigned char)(llen >> 24);
	msg[1] = (unsigned char)(llen >> 16);
	msg[2] = (unsigned char)(llen >> 8);
	msg[3] = (unsigned char)llen;
	memcpy(msg + 4, login, llen);
	memcpy(msg + 4 + llen, pass, plen);
	unsigned char *r = HMAC(EVP_sha256(), c->secret, (int)sizeof c->secret,
	                        msg, 4 + llen + plen, key, &outlen);
	OPENSSL_cleanse(msg, 4 + llen + plen);
	return r && outlen == SG_ACACHE_KEY_LEN ? 0 : -1;
}

enum sg_acache_hit sg_acache_get(sg_acache *c, const void *tag,
                                 const unsigned char key[SG_ACACHE_KEY_LEN],
                                 uint64_t now_ms, char **user,
                                 char **authcid)
{
	enum sg_acache_hit r = SG_ACACHE_MISS;

	*user = *authcid = NULL;
	if (!c)
		return r;
	uv_mutex_lock(&c->lock);
	struct entry *e = c->max && c->tag == tag ? find(c, key) : NULL;
	if (e && e->expires_ms <= now_ms) {
		drop(c, e);
		e = NULL;
	}
	if (e) {
		unlink_use(c, e);
		push_use(c, e);
		r = e->ok ? SG_ACACHE_OK : SG_ACACHE_FAIL;
		if (e->ok) {
			*user = sg_xstrdup(e->user);
			*authcid = e->authcid ? sg_xstrdup(e->authcid) : NULL;
		}
	}
	uv_mutex_unlock(&c->lock);
	return r;
}

void sg_acache_put(sg_acache *c, const void *tag,
                   const unsigned char key[SG_ACACHE_KEY_LEN], bool ok,
                   const char *user, const char *authcid,
                   uint64_t expires_ms)
{
	if (!c || (ok && !user))
		return;
	size_t ul = ok ? strlen(user) + 1 : 0;
	size_t al = ok && authcid ? strlen(authcid) + 1 : 0;
	struct entry *n = sg_xcalloc(1, sizeof *n + ul + al);
	memcpy(n->key, key, SG_ACACHE_KEY_LEN);
	n->ok = ok;
	n->expires_ms = expires_ms;
	if (ul) {
		n->user = n->ids;
		memcpy(n->user, user, ul);
	}
	if (al) {
		n->authcid = n->ids + ul;
		memcpy(n->authcid, authcid, al);
	}

	uv_mutex_lock(&c->lock);
	if (!c->max || c->tag != tag) {
		uv_mutex_unlock(&c->lock);
		free(n);
		return;
	}
	struct entry *old = find(c, key);
	if (old)
		drop(c, old);
	while (c->n >= c->max && c->tail)
		drop(c, c->tail);
	size_t b = bucket_of(c, key);
	n->hnext = c->buckets[b];
	c->buckets[b] = n;
	push_use(c, n);
	c->n++;
	uv_mutex_unlock(&c->lock);
}
