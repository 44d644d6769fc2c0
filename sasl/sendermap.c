/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/sendermap.c: [sasl] sender_login_map, which MAIL FROM addresses an
 * authenticated login may use (the reverse of Postfix'
 * smtpd_sender_login_maps, read from one plain file).
 *
 * FILE FORMAT (for saslgate.conf(5)):
 *
 *   # comment: from "#" at the start of a line or after white space
 *   LOGIN   ENTRY[, ENTRY ...]
 *
 *   LOGIN is a login as Cyrus SASL authorizes it (e.g. "alice" or
 *   "alice@example.org"), or "*" for a rule that applies to every login.
 *   Entries are separated by commas and/or white space; a login may have
 *   several lines, their entries add up.  An ENTRY is one of:
 *
 *     user@example.org   exactly this address
 *     @example.org       any address in this domain
 *     =login             the address equals the login; or, when the login
 *                        has no "@", the address is login@ANY-DOMAIN
 *
 *   Local parts compare exactly (RFC 5321 2.4: they may be case-sensitive),
 *   domains case-insensitively.  The null sender (MAIL FROM:<>) is always
 *   allowed (bounces, RFC 5321 4.5.5).  A login without a matching line
 *   (its own or "*") may not send at all: a map lists what is allowed.
 *   A source route (<@a,@b:user@dom>, RFC 5321 C) is ignored.  Lines are at
 *   most 4095 octets.  The file is read at start-up and on SIGHUP; an error
 *   in it is reported as MAPFILE:LINE and stops start-up / the reload.
 *
 *   Example:
 *     *                =login
 *     alice            alice@example.org, info@example.org
 *     printer          @scan.example.org
 *
 * The session asks sg_sender_allowed() at MAIL FROM (553 5.7.1 when false).
 * Without an authenticated login (require_auth = no) the map does not
 * apply.  Maps are kept per file name under a read-write lock: every worker
 * reads, a reload swaps in a freshly read map. */
#include "auth.h"
#include "sasl_int.h"
#include "../common/log.h"
#include "../common/mem.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define SG_SENDER_MAP_LINE_MAX 4096      /* octets per line, LF included */
#define SG_SENDER_MAP_RULES_MAX (1 << 20) /* entries per file */

enum entry_kind { E_ADDR, E_DOMAIN, E_SELF };

struct entry {
	char *login; /* "*" = every login */
	int kind;    /* enum entry_kind */
	char *value; /* address, or domain without "@"; NULL for E_SELF */
};

struct map {
	char *path;
	struct entry *e;
	size_t n;
	struct map *next;
};

static uv_once_t once = UV_ONCE_INIT;
static uv_rwlock_t lock;
static struct map *maps;

static void init_once(void)
{
	uv_rwlock_init(&lock);
}

static void map_free(struct map *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->e[i].login);
		free(m->e[i].value);
	}
	free(m->e);
	free(m->path);
	free(m);
}

/* Local part exact, domain case-insensitive. */
static bool addr_eq(const char *a, const char *b)
{
	const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');
	if (!at_a || !at_b)
		return !at_a && !at_b && strcmp(a, b) == 0;
	size_t la = (size_t)(at_a - a), lb = (size_t)(at_b - b);
	return la == lb && memcmp(a, b, la) == 0 &&
	       strcasecmp(at_a + 1, at_b + 1) == 0;
}

static bool entry_matches(const struct entry *e, const char *login,
                          const char *addr)
{
	const char *at = strrchr(addr, '@');

	switch (e->kind) {
	case E_ADDR:
		return addr_eq(e->value, addr);
	case E_DOMAIN:
		return at && strcasecmp(at + 1, e->value) == 0;
	case E_SELF:
		if (addr_eq(login, addr))
			return true;
		/* a bare login owns login@ any domain */
		return !strchr(login, '@') && at &&
		       strlen(login) == (size_t)(at - addr) &&
		       memcmp(login, addr, (size_t)(at - addr)) == 0;
	}
	return false;
}

static int add_entry(struct map *m, size_t *cap, const char *login,
                     const char *tok, const char *path, int lineno,
                     sg_errors *errs)
{
	sg_where w = {path, lineno};
	struct entry e = {0};

	if (strcmp(tok, "=login") == 0) {
		e.kind = E_SELF;
	} else if (tok[0] == '@' && tok[1] && !strchr(tok + 1, '@')) {
		e.kind = E_DOMAIN;
		e.value = sg_xstrdup(tok + 1);
	} else if (tok[0] != '@' && strchr(tok, '@') &&
	           strrchr(tok, '@')[1] != '\0') {
		e.kind = E_ADDR;
		e.value = sg_xstrdup(tok);
	} else {
		sg_errors_add(errs, &w,
		              "\"%s\" is neither user@domain, @domain nor =login",
		              tok);
		return -1;
	}
	if (m->n >= SG_SENDER_MAP_RULES_MAX) {
		sg_errors_add(errs, &w, "more than %d entries", SG_SENDER_MAP_RULES_MAX);
		free(e.value);
		return -1;
	}
	if (m->n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		m->e = sg_xreallocarray(m->e, *cap, sizeof *m->e);
	}
	e.login = sg_xstrdup(login);
	m->e[m->n++] = e;
	return 0;
}

/* One line: LOGIN ENTRY[, ENTRY...]; comments already cut. */
static int parse_line(struct map *m, size_t *cap, char *line, const char *path,
                      int lineno, sg_errors *errs)
{
	static const char seps[] = " \t\r\n,";
	sg_where w = {path, lineno};
	char *save = NULL;
	char *login = strtok_r(line, " \t\r\n", &save);
	int bad = 0, n = 0;

	if (!login)
		return 0; /* blank */
	if (strchr(login, ',')) {
		sg_errors_add(errs, &w, "a login comes first, then its addresses");
		return -1;
	}
	for (char *tok = strtok_r(NULL, seps, &save); tok;
	     tok = strtok_r(NULL, seps, &save), n++)
		if (add_entry(m, cap, login, tok, path, lineno, errs) < 0)
			bad = -1;
	if (n == 0) {
		sg_errors_add(errs, &w, "login %s has no addresses", login);
		return -1;
	}
	return bad;
}

static struct map *map_read(const char *path, sg_errors *errs)
{
	char line[SG_SENDER_MAP_LINE_MAX];
	sg_where top = {path, 0};
	struct map *m = sg_xcalloc(1, sizeof *m);
	size_t cap = 0;
	int lineno = 0, bad = 0;
	FILE *f = fopen(path, "re");

	m->path = sg_xstrdup(path);
	if (!f) {
		sg_errors_add(errs, &top, "cannot read sender_login_map: %s",
		              strerror(errno));
		map_free(m);
		return NULL;
	}
	while (fgets(line, sizeof line, f)) {
		lineno++;
		size_t len = strlen(line);
		if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
			sg_where w = {path, lineno};
			sg_errors_add(errs, &w, "line longer than %d octets",
			              SG_SENDER_MAP_LINE_MAX - 1);
			bad = 1;
			int c; /* skip the rest of it */
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
			continue;
		}
		for (char *p = line; *p; p++)
			if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
				*p = '\0';
				break;
			}
		if (parse_line(m, &cap, line, path, lineno, errs) < 0)
			bad = 1;
	}
	if (ferror(f)) {
		sg_errors_add(errs, &top, "read error: %s", strerror(errno));
		bad = 1;
	}
	fclose(f);
	if (bad) {
		map_free(m);
		return NULL;
	}
	return m;
}

/* Swap in m for its path (writers only). */
static void map_install(struct map *m)
{
	struct map *old = NULL;
	uv_rwlock_wrlock(&lock);
	for (struct map **pp = &maps; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->path, m->path) == 0) {
			old = *pp;
			m->next = old->next;
			*pp = m;
			break;
		}
	if (!old) {
		m->next = maps;
		maps = m;
	}
	uv_rwlock_wrunlock(&lock);
	map_free(old);
}

int sg_sender_map_load(const sg_config *cfg, sg_errors *errs, bool install)
{
	uv_once(&once, init_once);
	if (!cfg->sender_login_map || !*cfg->sender_login_map)
		return 0;
	struct map *m = map_read(cfg->sender_login_map, errs);
	if (!m)
		return -1;
	if (!install) {
		map_free(m);
		return 0;
	}
	log_info(NULL, "sasl: sender_login_map %s: %zu entries",
	         cfg->sender_login_map, m->n);
	map_install(m);
	return 0;
}

void sg_sender_map_done(void)
{
	uv_once(&once, init_once);
	uv_rwlock_wrlock(&lock);
	struct map *m = maps;
	maps = NULL;
	uv_rwlock_wrunlock(&lock);
	while (m) {
		struct map *next = m->next;
		map_free(m);
		m = next;
	}
}

/* "<@a,@b:user@dom>" -> "user@dom" in buf; "" for the null sender. */
static const char *bare_address(const char *from, char *buf, size_t bufsz)
{
	size_t len = strlen(from);
	if (len >= 2 && from[0] == '<' && from[len - 1] == '>') {
		from++;
		len -= 2;
	}
	if (len && from[0] == '@') { /* source route, RFC 5321 appendix C */
		const char *colon = memchr(from, ':', len);
		if (colon) {
			len -= (size_t)(colon + 1 - from);
			from = colon + 1;
		}
	}
	if (len >= bufsz)
		return NULL;
	memcpy(buf, from, len);
	buf[len] = '\0';
	return buf;
}

static bool lookup(const struct map *m, const char *login, const char *addr)
{
	for (size_t i = 0; i < m->n; i++) {
		const struct entry *e = &m->e[i];
		if (strcmp(e->login, "*") != 0 && !addr_eq(e->login, login))
			continue;
		if (entry_matches(e, login, addr))
			return true;
	}
	return false;
}

bool sg_sender_allowed(const sg_config *cfg, const char *login,
                       const char *mailfrom)
{
	char buf[SG_SENDER_MAP_LINE_MAX];
	const char *path = cfg->sender_login_map;

	if (!path || !*path || !login || !*login)
		return true;
	const char *addr = bare_address(mailfrom ? mailfrom : "", buf, sizeof buf);
	if (!addr)
		return false; /* longer than any line of the map: cannot match */
	if (!*addr)
		return true; /* null sender */
	uv_once(&once, init_once);
	for (int pass = 0; pass < 2; pass++) {
		uv_rwlock_rdlock(&lock);
		for (const struct map *m = maps; m; m = m->next)
			if (strcmp(m->path, path) == 0) {
				bool ok = lookup(m, login, addr);
				uv_rwlock_rdunlock(&lock);
				return ok;
			}
		uv_rwlock_rdunlock(&lock);
		/* Not loaded (no sg_sasl_init with this configuration, e.g. a
		 * tool or a test): read it once now.  Fail closed if unreadable. */
		sg_errors errs = {0};
		int r = pass == 0 ? sg_sender_map_load(cfg, &errs, true) : -1;
		if (errs.n)
			sg_errors_log(&errs);
		sg_errors_free(&errs);
		if (r < 0)
			break;
	}
	log_error(NULL, "sasl: sender_login_map %s unusable: refusing senders",
	          path);
	return false;
}
