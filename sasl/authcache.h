/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/authcache.h: the credential cache ([sasl] cache_size, cache_ttl,
 * cache_negative_ttl), as Dovecot's auth_cache.
 *
 * It remembers what the password backend answered for a (login, password)
 * pair given with PLAIN or LOGIN: a success with the identity Cyrus
 * reported, or a wrong password / unknown user.  Entries are found by an
 * HMAC-SHA-256 of the pair under a random key made when the cache is
 * created (OpenSSL RAND_bytes), so the cache holds no password nor any
 * unkeyed hash of one, and a different password is a different entry: a
 * wrong password can never find a right one's success.
 *
 * Bounded in entries; the least recently used goes first.  An entry is
 * valid until the expiry given when it was stored (a hit does not extend
 * it), so a password changed in the backend counts within cache_ttl.  One
 * mutex: every worker shares the cache, and a lookup holds the lock for a
 * hash-table probe only (the HMAC is computed before).  The clock is the
 * caller's (now_ms), so the unit tests choose the time.
 *
 * Nothing here names a Cyrus type. */
#ifndef SG_SASL_AUTHCACHE_H
#define SG_SASL_AUTHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SG_ACACHE_KEY_LEN 32   /* HMAC-SHA-256 */
#define SG_ACACHE_MAX 1000000  /* [sasl] cache_size at most */
/* Longest login and password the cache takes (Cyrus' CANON_BUF_SIZE and
 * its LOGIN plugin's limits): longer ones always go to the backend. */
#define SG_ACACHE_CRED_MAX 1024

typedef struct sg_acache sg_acache;

enum sg_acache_hit { SG_ACACHE_MISS = -1, SG_ACACHE_FAIL = 0,
	             SG_ACACHE_OK = 1 };

/* An empty cache of at most max entries (0: every lookup misses, nothing
 * is stored) with a fresh random key.  NULL if OpenSSL has no randomness
 * to give (the cache is then off). */
sg_acache *sg_acache_new(size_t max);
void sg_acache_free(sg_acache *c);

/* Drop every entry and take a new bound and owner tag (a reload: the new
 * configuration's [sasl]).  Only lookups and stores with the same tag are
 * served: a session still on the old configuration neither reads nor
 * fills the new cache. */
void sg_acache_reset(sg_acache *c, size_t max, const void *tag);
void sg_acache_flush(sg_acache *c);
size_t sg_acache_count(sg_acache *c);
bool sg_acache_on(const sg_acache *c);

/* The entry key of (login, password): HMAC-SHA-256 under the cache's key
 * of len(login) as 4 octets, the login and the password.  -1 when the
 * pair is not one the cache takes (empty, longer than SG_ACACHE_CRED_MAX,
 * or with a NUL: PLAIN and LOGIN could read those differently). */
int sg_acache_key(const sg_acache *c, const char *login, size_t llen,
                  const char *pass, size_t plen,
                  unsigned char key[SG_ACACHE_KEY_LEN]);

/* A live entry for key: SG_ACACHE_OK with *user and *authcid (allocated,
 * the caller frees them) or SG_ACACHE_FAIL; else SG_ACACHE_MISS (an
 * expired entry found is dropped). */
enum sg_acache_hit sg_acache_get(sg_acache *c, const void *tag,
                                 const unsigned char key[SG_ACACHE_KEY_LEN],
                                 uint64_t now_ms, char **user,
                                 char **authcid);
/* Store (or replace) the backend's answer, valid until expires_ms.  ok:
 * user (required) and authcid (may be NULL) are copied.  Nothing is
 * stored when the cache is off or tag is not its owner's. */
void sg_acache_put(sg_acache *c, const void *tag,
                   const unsigned char key[SG_ACACHE_KEY_LEN], bool ok,
                   const char *user, const char *authcid,
                   uint64_t expires_ms);

#endif
