/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/ipfail.c: per-client-address AUTH failure limit ([sasl]
 * ip_failure_limit within ip_failure_window).
 *
 * Why: max_failures only bounds one session; a password-guessing bot simply
 * reconnects.  This table counts failures per address across sessions and
 * worker threads, so the session can answer 454 4.7.0 to AUTH from an
 * address over the limit (without asking the backend: it spares saslauthd
 * and LDAP too).  It complements fail2ban, which acts on the event=auth log
 * lines, and works where nobody set fail2ban up.
 *
 * IPv6 clients are counted per /64: one end site gets a /64 at least, and
 * counting single IPv6 addresses would let a bot rotate through 2^64 of
 * them.  IPv4-mapped addresses (::ffff:a.b.c.d) count as the IPv4 address.
 *
 * The window is fixed, starting at an address's first counted failure: after
 * ip_failure_window without a new start the count begins again.  Memory is
 * bounded: at most SG_IPFAIL_MAX addresses; when full, the least recently
 * failed address is forgotten (LRU list), and expired entries are dropped as
 * they are met.  One mutex: AUTH failures are rare events, never a hot path. */
#include "auth.h"
#include "sasl_int.h"
#include "../common/mem.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define SG_IPFAIL_MAX 65536     /* addresses remembered at most */
#define SG_IPFAIL_BUCKETS 16384 /* hash buckets (power of two) */
#define SG_IPFAIL_IP_MAX 64     /* INET6_ADDRSTRLEN (46) with room */

struct ipent {
	char ip[SG_IPFAIL_IP_MAX];
	unsigned count;
	uint64_t first_ms; /* window start */
	struct ipent *hnext; /* hash chain */
	struct ipent *prev, *next; /* LRU: head = least recently failed */
};

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t lock;
static struct ipent *buckets[SG_IPFAIL_BUCKETS];
static struct ipent *lru_head, *lru_tail;
static size_t nent;

static void init_once(void)
{
	uv_mutex_init(&lock);
}

/* The table key of a client address: IPv4 as is, IPv6 as its /64. */
static const char *ip_key(const char *ip, char key[SG_IPFAIL_IP_MAX])
{
	struct in6_addr a6;
	struct in_addr a4;

	if (inet_pton(AF_INET6, ip, &a6) != 1) {
		snprintf(key, SG_IPFAIL_IP_MAX, "%s", ip);
		return key;
	}
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		memcpy(&a4, &a6.s6_addr[12], 4);
		inet_ntop(AF_INET, &a4, key, SG_IPFAIL_IP_MAX);
		return key;
	}
	memset(&a6.s6_addr[8], 0, 8);
	inet_ntop(AF_INET6, &a6, key, SG_IPFAIL_IP_MAX - 4);
	strcat(key, "/64");
	return key;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (SG_IPFAIL_BUCKETS - 1);
}

static void lru_unlink(struct ipent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_tail(struct ipent *e)
{
	e->prev = lru_tail;
	e->next = NULL;
	if (lru_tail)
		lru_tail->next = e;
	else
		lru_head = e;
	lru_tail = e;
}

static void remove_entry(struct ipent *e)
{
	struct ipent **pp = &buckets[hash(e->ip)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	lru_unlink(e);
	free(e);
	nent--;
}

static struct ipent *find(const char *ip)
{
	for (struct ipent *e = buckets[hash(ip)]; e; e = e->hnext)
		if (strcmp(e->ip, ip) == 0)
			return e;
	return NULL;
}

static bool expired(const struct ipent *e, uint64_t now, uint64_t window)
{
	return now - e->first_ms >= window;
}

bool sg_ipfail_over(const sg_config *cfg, const char *client)
{
	char key[SG_IPFAIL_IP_MAX];
	bool over = false;

	if (!cfg->ip_failure_limit || !client || !*client ||
	    strlen(client) >= SG_IPFAIL_IP_MAX)
		return false;
	const char *ip = ip_key(client, key);
	uv_once(&once, init_once);
	uv_mutex_lock(&lock);
	struct ipent *e = find(ip);
	if (e) {
		if (expired(e, now_ms(), cfg->ip_failure_window_ms))
			remove_entry(e);
		else
			over = e->count >= cfg->ip_failure_limit;
	}
	uv_mutex_unlock(&lock);
	return over;
}

void sg_ipfail_record(const sg_config *cfg, const char *client)
{
	char key[SG_IPFAIL_IP_MAX];

	if (!cfg->ip_failure_limit || !client || !*client ||
	    strlen(client) >= SG_IPFAIL_IP_MAX)
		return;
	const char *ip = ip_key(client, key);
	uv_once(&once, init_once);
	uint64_t now = now_ms();
	uv_mutex_lock(&lock);
	struct ipent *e = find(ip);
	if (e && expired(e, now, cfg->ip_failure_window_ms)) {
		e->count = 0;
		e->first_ms = now;
	}
	if (!e) {
		/* Full: forget expired entries from the old end first, then the
		 * least recently failed address (bounded memory beats a perfect
		 * memory of a botnet's every address). */
		while (lru_head && (nent >= SG_IPFAIL_MAX ||
		                    expired(lru_head, now, cfg->ip_failure_window_ms)))
			remove_entry(lru_head);
		e = sg_xcalloc(1, sizeof *e);
		snprintf(e->ip, sizeof e->ip, "%s", ip);
		e->first_ms = now;
		unsigned h = hash(ip);
		e->hnext = buckets[h];
		buckets[h] = e;
		nent++;
	} else {
		lru_unlink(e);
	}
	e->count++;
	lru_push_tail(e);
	uv_mutex_unlock(&lock);
}

void sg_ipfail_done(void)
{
	uv_once(&once, init_once);
	uv_mutex_lock(&lock);
	while (lru_head)
		remove_entry(lru_head);
	uv_mutex_unlock(&lock);
}
