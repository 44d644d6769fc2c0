/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/auth.c: the glue between the session and Cyrus SASL (sasl/auth.h).
 *
 * The only file that drives Cyrus: sasl_server_init with our getopt and log
 * callbacks, one sasl_conn_t per session, sasl_server_start/step on libuv's
 * thread pool, and the normalisation of Cyrus' results into the few answers
 * SMTP has (after Postfix' xsasl_cyrus_server.c).
 *
 * Configuration.  Cyrus asks its options through the getopt callback.  Each
 * connection gets a callback answering from the configuration the session
 * started with (the sg_auth holds a reference), so a reload never changes a
 * running exchange; calls without a connection (plugin start-up) go to a
 * global callback answering from the newest configuration, with the answers
 * interned (Cyrus may keep the pointer for as long as it likes).  No
 * /etc/sasl2/<app>.conf is read: we pass no application name to
 * sasl_server_init, so Cyrus has no file to look for, and every option comes
 * from [sasl].  mech_list is answered per connection, which is also what lets
 * a reload change it (Cyrus 2.1.27+ builds each connection's list from it).
 *
 * Threads.  Each event loop runs at most SG_RUN_FACTOR x [sasl] threads
 * Cyrus calls on libuv's pool at once; more wait their turn here, in order.
 * The pool, shared with the rest of saslgate (upstream name lookups), has
 * that many threads per worker + SG_POOL_RESERVE, not one per call in
 * flight: each thread that ever ran Cyrus keeps its stack pages (~64 KiB
 * with sasldb), so a pool sized for a burst of logins would hold that
 * memory for good.
 * Cyrus' saslauthd client has no timeout, so a backend that hangs holds the
 * pool threads of its calls.  Hence: more than [sasl] threads Cyrus calls
 * in flight (running or waiting) only while the backend makes progress, and
 * never more than SG_POOL_FACTOR times that; past those limits AUTH answers
 * 454 at once and the log says why.  With [sasl] threads calls hung, as many
 * slots are left for the calls that do get answers.  SG_POOL_RESERVE threads
 * stay free.
 * A session has at most one Cyrus call in flight.  While it runs,
 * the pool thread owns the sasl_conn_t; the loop thread touches it again only
 * in the after-callback.  sg_auth_free during a call only marks the object;
 * the after-callback frees it (libuv runs that callback even then).  A call
 * still waiting in its loop's line is taken out and freed at once: a
 * session that gave up on it (closed, or tired of waiting) costs the
 * backend nothing.
 *
 * Credential cache ([sasl] cache_size, sasl/authcache.h).  The response that
 * completes a PLAIN or LOGIN login (PLAIN's message without an authzid,
 * LOGIN's password) is looked up before it would go to the pool: a hit
 * answers at once, on the loop thread, with what the backend said for the
 * same login and password (the identity Cyrus reported, or a failure), and
 * Cyrus is not called.  A miss goes to Cyrus as always, and its answer, a
 * success or a wrong password / unknown user (never a temporary failure,
 * never one the backend probe blamed on the backend), is stored.  PLAIN
 * and LOGIN hand Cyrus' canonicaliser and checkpass the same login and
 * password, so they share entries; a PLAIN with an authzid, and every other
 * mechanism, always goes to Cyrus. */
#include "auth.h"
#include "authcache.h"
#include "sasl_int.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "../common/metrics.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sasl/sasl.h>
#include <sasl/saslplug.h>

#define SG_AUTH_MECH_MAX 20    /* RFC 4954 / sg_auth_mech_valid */
#define SG_AUTH_MECHS_MAX 512  /* our "AUTH ..." list; Cyrus has ~12 names */
#define SG_AUTH_LIST_MAX 2048  /* every loaded mechanism / auxprop plugin */
#define SG_AUTH_IN_MAX 16384   /* one decoded client response (a response
                                  line of 12288 octets, RFC 4954 4, decodes
                                  to at most 9216; GSSAPI tokens fit) */
#define SG_AUTH_IPPORT_MAX 80  /* "ip;port" for Cyrus */
#define SG_AUTH_SID_MAX 40     /* session id copied for log lines */
#define SG_AUTH_NAME_MAX 256   /* user names in our log lines */
#define SG_AUTH_WHY_MAX 256    /* reason a backend is down, for the log */
/* Cyrus calls in flight at most: 16 x [sasl] threads.  Generous on purpose:
 * a burst of logins against a backend that answers (dozens of clients at
 * once) must queue, not get 454; the stall rule below is what protects the
 * pool from a backend that hangs. */
#define SG_POOL_FACTOR 16
#define SG_AUTH_THREADS_MAX 60
#define SG_RUN_FACTOR 2        /* Cyrus calls running per loop: 2 x threads */
#define SG_POOL_MAX 1024       /* libuv's own cap on its pool */
#define SG_POOL_RESERVE 2 /* pool threads Cyrus may never take: getaddrinfo
                             of the upstream link and libuv's fs calls */
#define SG_SASL_STALL_MS 2000 /* no Cyrus call ended for this long while
                                 [sasl] threads are busy: backend stalled */

struct sg_auth {
	sasl_conn_t *conn; /* created lazily */
	sg_config *cfg;    /* reference: the getopt callback answers from it */
	sasl_callback_t cbs[4];
	char sid[SG_AUTH_SID_MAX];
	char local[SG_AUTH_IPPORT_MAX];
	char remote[SG_AUTH_IPPORT_MAX];
	bool conn_failed;
	bool conn_done;    /* conn saw a success: Cyrus refuses a second one */
	bool errbuf_grown; /* grow_errbuf done for this conn */
	bool plaintext_ok; /* listener: require_tls_for_auth = no */
	bool tls;
	unsigned ssf;
	bool props_dirty; /* set_tls came while a call was in flight */
	bool mechs_ok;
	char mechs[SG_AUTH_MECHS_MAX];

	/* the exchange; at most one call in flight */
	uv_work_t work;
	bool busy;
	bool dead;       /* sg_auth_free while busy or in cb: freed after */
	bool in_cb;      /* the caller's callback is running */
	bool started;    /* a mechanism runs: sg_auth_step allowed */
	bool pending_ok; /* Cyrus said OK with data: sent as 334, await "" */
	int preset;      /* -1: ask Cyrus; else the answer, decided up front */
	bool is_start;
	bool counted; /* holds one of the g_threads slots */
	sg_auth *qnext;   /* waiting for a pool slot of its loop (t_head) */
	bool slot;        /* holds one of its loop's t_running slots */
	uv_loop_t *qloop;
	char mech[SG_AUTH_MECH_MAX + 1];
	char *in;
	unsigned inlen;
	bool has_initial;
	int rc;            /* Cyrus' result */
	bool backend_down; /* saslauthd / sasldb did not answer a probe */
	char why[SG_AUTH_WHY_MAX]; /* and why, for the log */
	const char *out;   /* Cyrus' challenge: valid until its next call */
	unsigned outlen;
	sg_auth_cb cb;
	void *arg;

	char *user, *authcid;           /* set when authenticated */
	char *pend_user, *pend_authcid; /* during pending_ok */

	/* credential cache */
	unsigned nresp;    /* client responses in this exchange (IR included) */
	char *login_name;  /* LOGIN: the first response, the login */
	size_t login_len;
	bool ck_set;       /* this call completes a login the cache takes */
	unsigned char ck[SG_ACACHE_KEY_LEN]; /* and its entry key */
	bool cached;       /* the last answer came from the cache */
	int answer;        /* that answer */
};

/* Cyrus stores every callback as int (*)(void); the detour through
 * void (*)(void) tells the compiler the cast is meant. */
#define SG_CB(f) ((sasl_callback_ft)(void (*)(void))(f))

struct interned {
	struct interned *next;
	char s[];
};

static uv_once_t g_once = UV_ONCE_INIT;
static uv_mutex_t g_lock;         /* g_cfg, g_interned */
static sg_config *g_cfg;          /* the newest configuration (reference) */
static struct interned *g_interned; /* answers of the global getopt */
static bool g_active;             /* sasl_server_init done */
static sg_acache *g_cache;        /* credential cache (NULL: none) */
static unsigned g_threads;        /* [sasl] threads at start (0: no limit) */
static unsigned g_inflight;       /* Cyrus calls queued or running; atomic */
static uint64_t g_progress_ms;    /* a Cyrus call ended / work began; atomic */
/* Per event-loop thread (one loop per thread): calls of this loop's
 * sessions on the pool now, and those waiting for a slot, oldest first. */
static __thread unsigned t_running;
static __thread sg_auth *t_head, *t_tail;

static unsigned run_limit(void)
{
	return SG_RUN_FACTOR * (g_threads ? g_threads : 4);
}

static void g_init(void)
{
	uv_mutex_init(&g_lock);
}

/* ---- callbacks Cyrus calls (on any thread) ---------------------------- */

static const char *intern(const char *v)
{
	for (struct interned *i = g_interned; i; i = i->next)
		if (strcmp(i->s, v) == 0)
			return i->s;
	size_t n = strlen(v) + 1;
	struct interned *i = sg_xmalloc(sizeof *i + n);
	memcpy(i->s, v, n);
	i->next = g_interned;
	g_interned = i;
	return i->s;
}

static int global_getopt(void *ctx, const char *plugin, const char *option,
                         const char **result, unsigned *len)
{
	const char *v = NULL;
	uv_mutex_lock(&g_lock);
	if (g_cfg && option) {
		v = sg_sasl_opt(g_cfg, option);
		if (v)
			v = intern(v);
	}
	uv_mutex_unlock(&g_lock);
	if (!v)
		return SASL_FAIL; /* Cyrus' own default */
	*result = v;
	if (len)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

static int conn_getopt(void *ctx, const char *plugin, const char *option,
                       const char **result, unsigned *len)
{
	const sg_auth *a = ctx;
	const char *v = option ? sg_sasl_opt(a->cfg, option) : NULL;
	if (!v)
		return SASL_FAIL;
	*result = v;
	if (len)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

/* Cyrus' messages into our log.  SASL_LOG_PASS carries passwords: dropped,
 * always (no password is ever logged: docs/ARCHITECTURE.md, "Logging"). */
static int on_log(void *ctx, int level, const char *msg)
{
	const sg_auth *a = ctx;
	const char *sid = a && a->sid[0] ? a->sid : NULL;

	if (!msg)
		return SASL_OK;
	switch (level) {
	case SASL_LOG_ERR:
		log_error(sid, "sasl: %s", msg);
		break;
	case SASL_LOG_WARN:
		log_warn(sid, "sasl: %s", msg);
		break;
	case SASL_LOG_FAIL:
	case SASL_LOG_NOTE:
		log_info(sid, "sasl: %s", msg);
		break;
	case SASL_LOG_DEBUG:
	case SASL_LOG_TRACE:
		log_debug(sid, "sasl: %s", msg);
		break;
	default: /* SASL_LOG_PASS, SASL_LOG_NONE */
		break;
	}
	return SASL_OK;
}

/* Who may act as whom: only as oneself, Cyrus' own default policy, but
 * answered as SASL_NOAUTHZ (Cyrus' says SASL_BADAUTH) so the log can tell
 * "PLAIN authzid not allowed" from a bad password.  Both become 535. */
static int proxy_policy(sasl_conn_t *conn, void *ctx, const char *requested,
                        unsigned rlen, const char *authid, unsigned alen,
                        const char *def_realm, unsigned urlen,
                        struct propctx *propctx)
{
	if (requested && authid && rlen == alen &&
	    memcmp(requested, authid, rlen) == 0)
		return SASL_OK;
	/* sasl_seterror has its own small printf: %s only, no precision */
	char who[SG_AUTH_NAME_MAX], as[SG_AUTH_NAME_MAX];
	snprintf(who, sizeof who, "%.*s", (int)alen, authid ? authid : "");
	snprintf(as, sizeof as, "%.*s", (int)rlen, requested ? requested : "");
	sasl_seterror(conn, 0, "%s may not act as %s", who, as);
	return SASL_NOAUTHZ;
}

static const sasl_callback_t global_cbs[] = {
    {SASL_CB_GETOPT, SG_CB(global_getopt), NULL},
    {SASL_CB_LOG, SG_CB(on_log), NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

/* ---- mechanisms -------------------------------------------------------- */

bool sg_auth_mech_valid(char *mech)
{
	size_t n = 0;
	if (!mech)
		return false;
	for (char *p = mech; *p; p++, n++) {
		*p = (char)toupper((unsigned char)*p);
		if (n >= SG_AUTH_MECH_MAX)
			return false;
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_'))
			return false;
	}
	return n >= 1;
}

/* Offer this mechanism (Cyrus listed it)?  Never ANONYMOUS, EXTERNAL or
 * GSSAPI unless mech_list names them; never one that needs a server-side
 * secret when saslauthd is the only password check. */
static bool mech_wanted(const sg_config *cfg, const char *m)
{
	if ((strcmp(m, "ANONYMOUS") == 0 || strcmp(m, "EXTERNAL") == 0 ||
	     strcmp(m, "GSSAPI") == 0 || strncmp(m, "GS2-", 4) == 0) &&
	    !sg_sasl_mech_listed(cfg, m))
		return false;
	if (sg_sasl_saslauthd_only(cfg) && sg_sasl_mech_needs_secret(m))
		return false;
	return true;
}

static void apply_props(sg_auth *a)
{
	sasl_security_properties_t sp;
	memset(&sp, 0, sizeof sp);
	/* No SASL security layer (max_ssf 0, as Postfix): TLS protects the
	 * session, and a layer would have to wrap every later byte. */
	sp.min_ssf = 0;
	sp.max_ssf = 0;
	sp.maxbufsize = 0;
	if (!sg_sasl_mech_listed(a->cfg, "ANONYMOUS"))
		sp.security_flags |= SASL_SEC_NOANONYMOUS;
	/* RFC 4954 section 4 and RFC 8314: no password in clear text.  After
	 * TLS (or where the admin allowed it) Cyrus may offer PLAIN/LOGIN. */
	if (!a->tls && !a->plaintext_ok)
		sp.security_flags |= SASL_SEC_NOPLAINTEXT;
	sasl_setprop(a->conn, SASL_SEC_PROPS, &sp);
	if (a->tls) {
		sasl_ssf_t ssf = a->ssf;
		sasl_setprop(a->conn, SASL_SSF_EXTERNAL, &ssf);
	}
	a->props_dirty = false;
}

static int ensure_conn(sg_auth *a)
{
	if (a->conn)
		return 0;
	if (a->conn_failed || !g_active)
		return -1;
	const char *realm = *a->cfg->sasl_realm ? a->cfg->sasl_realm : NULL;
	/* SASL_SUCCESS_DATA: Cyrus hands us a success that carries data
	 * (SCRAM's server-final, DIGEST-MD5's rspauth) as SASL_OK + data, and
	 * we send it as a 334 that must be answered with an empty line
	 * (RFC 4954 section 4); without it Cyrus accepts any last line. */
	int rc = sasl_server_new(a->cfg->sasl_service, a->cfg->hostname, realm,
	                         *a->local ? a->local : NULL,
	                         *a->remote ? a->remote : NULL, a->cbs,
	                         SASL_SUCCESS_DATA, &a->conn);
	if (rc == SASL_BADPARAM && (*a->local || *a->remote)) {
		/* an address Cyrus cannot parse: it is only a hint for plugins */
		a->conn = NULL;
		rc = sasl_server_new(a->cfg->sasl_service, a->cfg->hostname, realm,
		                     NULL, NULL, a->cbs, SASL_SUCCESS_DATA, &a->conn);
	}
	if (rc != SASL_OK) {
		log_error(a->sid[0] ? a->sid : NULL, "sasl: sasl_server_new: %s",
		          sasl_errstring(rc, NULL, NULL));
		a->conn = NULL;
		a->conn_failed = true;
		return -1;
	}
	a->errbuf_grown = false;
	apply_props(a);
	return 0;
}

const char *sg_auth_mechs(sg_auth *a)
{
	const char *list = NULL;
	unsigned plen = 0;
	int count = 0;

	if (!a)
		return "";
	if (a->mechs_ok || a->busy)
		return a->mechs; /* "" until first computed */
	if (ensure_conn(a) < 0)
		return "";
	if (sasl_listmech(a->conn, NULL, "", " ", "", &list, &plen, &count) !=
	        SASL_OK ||
	    !list)
		list = "";
	size_t o = 0;
	a->mechs[0] = '\0';
	while (*list) {
		char m[SG_AUTH_MECH_MAX + 2];
		size_t n = strcspn(list, " ");
		if (n && n <= SG_AUTH_MECH_MAX) {
			memcpy(m, list, n);
			m[n] = '\0';
			if (sg_auth_mech_valid(m) && mech_wanted(a->cfg, m) &&
			    o + n + 2 < sizeof a->mechs) {
				if (o)
					a->mechs[o++] = ' ';
				memcpy(a->mechs + o, m, n + 1);
				o += n;
			}
		}
		list += n;
		list += strspn(list, " ");
	}
	a->mechs_ok = true;
	return a->mechs;
}

bool sg_auth_mech_offered(sg_auth *a, const char *mech)
{
	const char *l = sg_auth_mechs(a);
	size_t n = strlen(mech);
	if (!n)
		return false;
	while (*l) {
		size_t k = strcspn(l, " ");
		if (k == n && memcmp(l, mech, n) == 0)
			return true;
		l += k;
		l += strspn(l, " ");
	}
	return false;
}

/* ---- per session ------------------------------------------------------- */

sg_auth *sg_auth_new(const sg_config *cfg, const sg_auth_peer *peer)
{
	sg_auth *a = sg_xcalloc(1, sizeof *a);
	a->cfg = sg_config_ref((sg_config *)cfg);
	a->preset = -1;
	if (peer) {
		if (peer->sid)
			snprintf(a->sid, sizeof a->sid, "%s", peer->sid);
		/* Cyrus' "a.b.c.d;port" (IPv6 without brackets) */
		if (peer->local_ip && *peer->local_ip)
			snprintf(a->local, sizeof a->local, "%s;%u", peer->local_ip,
			         peer->local_port);
		if (peer->remote_ip && *peer->remote_ip)
			snprintf(a->remote, sizeof a->remote, "%s;%u", peer->remote_ip,
			         peer->remote_port);
		a->plaintext_ok = peer->plaintext_ok;
	}
	a->cbs[0] = (sasl_callback_t){SASL_CB_GETOPT, SG_CB(conn_getopt),
	                              a};
	a->cbs[1] = (sasl_callback_t){SASL_CB_LOG, SG_CB(on_log), a};
	a->cbs[2] = (sasl_callback_t){SASL_CB_PROXY_POLICY, SG_CB(proxy_policy),
	                              a};
	a->cbs[3] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
	return a;
}

static void destroy(sg_auth *a)
{
	if (a->conn)
		sasl_dispose(&a->conn);
	free(a->in);
	free(a->user);
	free(a->authcid);
	free(a->pend_user);
	free(a->pend_authcid);
	free(a->login_name);
	explicit_bzero(a->ck, sizeof a->ck);
	sg_config_unref(a->cfg);
	free(a);
}

static bool unqueue(sg_auth *a);

void sg_auth_free(sg_auth *a)
{
	if (!a)
		return;
	if (a->busy && !a->slot && !a->in_cb && unqueue(a)) {
		/* still in its loop's line: it never reaches Cyrus */
		if (a->counted)
			__atomic_sub_fetch(&g_inflight, 1, __ATOMIC_RELEASE);
		destroy(a);
		return;
	}
	if (a->busy || a->in_cb) {
		a->dead = true; /* the completion frees it (call_back) */
		return;
	}
	destroy(a);
}

void sg_auth_set_tls(sg_auth *a, unsigned ssf)
{
	if (!a)
		return;
	a->tls = true;
	a->ssf = ssf;
	a->mechs_ok = false;
	if (!a->conn)
		return;
	if (a->busy)
		a->props_dirty = true;
	else
		apply_props(a);
}

static void clear_exchange(sg_auth *a)
{
	a->started = false;
	a->pending_ok = false;
	a->nresp = 0;
	free(a->login_name);
	a->login_name = NULL;
	a->login_len = 0;
	free(a->pend_user);
	free(a->pend_authcid);
	a->pend_user = a->pend_authcid = NULL;
}

void sg_auth_reset(sg_auth *a)
{
	if (!a)
		return;
	if (a->busy) {
		/* the session waits for the callback first; nothing to forget */
		log_debug(a->sid[0] ? a->sid : NULL,
		          "sasl: reset while a call is in flight ignored");
		return;
	}
	clear_exchange(a);
	a->cached = false;
}

const char *sg_auth_user(sg_auth *a)
{
	return a ? a->user : NULL;
}

const char *sg_auth_authcid(sg_auth *a)
{
	return a ? a->authcid : NULL;
}

/* ---- credential cache ------------------------------------------------- */

static uint64_t now_ms(void)
{
	return uv_hrtime() / 1000000;
}

/* Does this response (in, inlen: decoded) complete a login the cache
 * takes?  Then a->ck is its entry key.  PLAIN (RFC 4616): an empty
 * authzid, NUL, the login, NUL, the password; Cyrus refuses a NUL in the
 * password, and so does sg_acache_key.  LOGIN: the first response is the
 * login (kept, as Cyrus reads it: the whole response), the second the
 * password. */
static void cache_key(sg_auth *a, const char *in, unsigned inlen)
{
	a->ck_set = false;
	if (!sg_acache_on(g_cache))
		return;
	a->nresp++;
	if (strcmp(a->mech, "PLAIN") == 0) {
		const char *end = in + inlen, *z;
		if (a->nresp != 1 || inlen < 2 || in[0] != '\0' ||
		    !(z = memchr(in + 1, '\0', inlen - 1)))
			return;
		a->ck_set = sg_acache_key(g_cache, in + 1, (size_t)(z - in - 1),
		                          z + 1, (size_t)(end - z - 1), a->ck) == 0;
	} else if (strcmp(a->mech, "LOGIN") == 0) {
		if (a->nresp == 1) {
			free(a->login_name);
			a->login_name = NULL;
			if (inlen && inlen <= SG_ACACHE_CRED_MAX &&
			    !memchr(in, '\0', inlen)) {
				a->login_name = sg_xstrndup(in, inlen);
				a->login_len = inlen;
			}
		} else if (a->nresp == 2 && a->login_name) {
			a->ck_set = sg_acache_key(g_cache, a->login_name,
			                          a->login_len, in, inlen, a->ck) == 0;
		}
	}
}

/* Look the login a->ck names up.  A hit ends the exchange as Cyrus' answer
 * would: true, with a->answer (and the identity, on success). */
static bool cache_answer(sg_auth *a)
{
	char *user = NULL, *authcid = NULL;
	if (!a->ck_set)
		return false;
	enum sg_acache_hit h =
	    sg_acache_get(g_cache, a->cfg, a->ck, now_ms(), &user, &authcid);
	sg_metrics_auth_cache(h != SG_ACACHE_MISS);
	if (h == SG_ACACHE_MISS)
		return false;
	a->ck_set = false;
	explicit_bzero(a->ck, sizeof a->ck);
	a->cached = true;
	clear_exchange(a);
	/* Cyrus' connection did not see this answer and may be in the middle
	 * of LOGIN: a later AUTH (after a 535, or a 454 from the upstream)
	 * starts on a new one, as after a success it saw */
	a->conn_done = true;
	if (h == SG_ACACHE_OK) {
		free(a->user);
		free(a->authcid);
		a->user = user;
		a->authcid = authcid;
		a->answer = SG_AUTH_OK;
	} else {
		a->answer = SG_AUTH_FAIL;
	}
	return true;
}

/* Keep what Cyrus answered for the login a->ck names: a success with its
 * identity for cache_ttl, a wrong password or unknown user for
 * cache_negative_ttl.  Nothing else (a temporary failure, a failure the
 * backend probe put down to the backend, a success with data). */
static void cache_store(sg_auth *a, int res)
{
	if (!a->ck_set)
		return;
	a->ck_set = false;
	uint64_t now = now_ms();
	if (res == SG_AUTH_OK && a->user && strlen(a->user) <= SG_ACACHE_CRED_MAX &&
	    a->cfg->sasl_cache_ttl_ms)
		sg_acache_put(g_cache, a->cfg, a->ck, true, a->user, a->authcid,
		              now + a->cfg->sasl_cache_ttl_ms);
	else if (res == SG_AUTH_FAIL && !a->backend_down &&
	         (a->rc == SASL_BADAUTH || a->rc == SASL_NOUSER) &&
	         a->cfg->sasl_cache_negative_ttl_ms)
		sg_acache_put(g_cache, a->cfg, a->ck, false, NULL, NULL,
		              now + a->cfg->sasl_cache_negative_ttl_ms);
	explicit_bzero(a->ck, sizeof a->ck);
}

bool sg_auth_cached(sg_auth *a)
{
	return a && a->cached;
}

int sg_auth_answer(sg_auth *a)
{
	return a && a->cached ? a->answer : SG_AUTH_TEMPFAIL;
}

void sg_sasl_cache_flush(void)
{
	sg_acache_flush(g_cache);
}

/* Postfix' normalisation (xsasl_cyrus_server.c): an unknown user is a bad
 * password "for privacy" (no user enumeration); a backend that cannot answer
 * is temporary and costs the client no failure. */
static int normalise(int rc, bool backend_down)
{
	switch (rc) {
	case SASL_OK:
		return SG_AUTH_OK;
	case SASL_CONTINUE:
		return SG_AUTH_CONTINUE;
	case SASL_NOUSER:
	case SASL_BADAUTH:
		/* a dead saslauthd can look like a bad password: the worker
		 * probed its socket when Cyrus was unsure */
		return backend_down ? SG_AUTH_TEMPFAIL : SG_AUTH_FAIL;
	case SASL_NOAUTHZ:
		return SG_AUTH_AUTHZ;
	case SASL_FAIL: /* generic: saslauthd unreachable, db error */
	case SASL_NOMEM:
	case SASL_TRYAGAIN:
	case SASL_UNAVAIL:
		return SG_AUTH_TEMPFAIL;
	case SASL_NOMECH:
	case SASL_TOOWEAK:
	case SASL_ENCRYPT:
		return SG_AUTH_NOMECH;
	case SASL_BADPROT:
	case SASL_BADPARAM:
	case SASL_BADMAC:
		return SG_AUTH_BADPROT;
	default: /* EXPIRED, DISABLED, NOVERIFY, BADSERV, WEAKPASS ... */
		return SG_AUTH_FAIL;
	}
}

static void pump(void);

/* Cyrus SASL's sasl_seterror (lib/seterror.c, 2.1.28 and current) writes
 * its closing NUL one octet past the connection's error buffer when a
 * message ending in plain text is exactly as long as the buffer (150,
 * 300, 600, 1200 ... octets).  sasldb's "user: <login>@<realm> property:
 * ... not found in sasldb" holds the client's login, so a login of the
 * right length overwrote heap metadata (seen as an abort in sasl_dispose).
 * The buffer only grows, so one message longer than any the library can
 * form for a canonical login (at most 1024 octets, CANON_BUF_SIZE) makes
 * it SG_SASL_ERRBUF_MIN or more octets for the connection's life; an empty
 * message then clears the text. */
#define SG_SASL_ERRBUF_MIN 4096
static void grow_errbuf(sg_auth *a)
{
	char pad[SG_SASL_ERRBUF_MIN + 1];
	if (a->errbuf_grown || !a->conn)
		return;
	memset(pad, 'x', SG_SASL_ERRBUF_MIN);
	pad[SG_SASL_ERRBUF_MIN] = '\0';
	sasl_seterror(a->conn, SASL_NOLOG, "%s", pad);
	sasl_seterror(a->conn, SASL_NOLOG, "");
	a->errbuf_grown = true;
}

static void work(uv_work_t *w)
{
	sg_auth *a = w->data;
	const char *out = NULL;
	unsigned outlen = 0;
	int rc;

	a->out = NULL;
	a->outlen = 0;
	a->backend_down = false;
	if (a->preset >= 0)
		return;
	grow_errbuf(a);
	sg_fdwatch_begin();
	if (a->is_start)
		rc = sasl_server_start(a->conn, a->mech, a->has_initial ? a->in : NULL,
		                       a->has_initial ? a->inlen : 0, &out, &outlen);
	else
		rc = sasl_server_step(a->conn, a->in, a->inlen, &out, &outlen);
	/* Cyrus' saslauthd client keeps its socket when saslauthd hung up
	 * without an answer ("size read failed"): closed here (fdwatch.c) */
	unsigned left = sg_fdwatch_end();
	if (left)
		log_info(a->sid[0] ? a->sid : NULL,
		         "sasl: closed %u socket%s Cyrus SASL left open", left,
		         left == 1 ? "" : "s");
	a->rc = rc;
	a->out = out;
	a->outlen = out ? outlen : 0;
	if (a->counted) {
		__atomic_store_n(&g_progress_ms, uv_hrtime() / 1000000, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&g_inflight, 1, __ATOMIC_RELEASE);
		a->counted = false;
	}
	/* Cyrus reports an unreachable saslauthd as SASL_FAIL, but a plugin
	 * may turn it into SASL_BADAUTH, and a missing sasldb looks like an
	 * unknown user: when unsure, knock on the backend.  SASL_UNAVAIL
	 * (ldapdb: directory unreachable) is a 454 anyway; the knock says why
	 * in the log. */
	if (rc == SASL_BADAUTH || rc == SASL_FAIL || rc == SASL_NOUSER ||
	    rc == SASL_UNAVAIL)
		a->backend_down = sg_sasl_backend_down(a->cfg, a->why, sizeof a->why);
	/* ldapdb answers SASL_FAIL for a login the directory does not know
	 * (slapd will not act for it: "Proxied Authorization Denied"), and
	 * SASL_UNAVAIL when it cannot reach it.  With the directory answering,
	 * that failure is an unknown user: 535 like a wrong password, never a
	 * 454 that would tell who exists and count nothing. */
	if (rc == SASL_FAIL && !a->backend_down && sg_sasl_fail_is_nouser(a->cfg))
		a->rc = SASL_NOUSER;
}

static char *getprop_dup(sasl_conn_t *conn, int prop)
{
	const void *p = NULL;
	if (sasl_getprop(conn, prop, &p) != SASL_OK || !p)
		return NULL;
	return sg_xstrdup(p);
}

/* Give the caller its result.  The callback may free the context (the
 * session is done with it): sg_auth_free then only marks it dead, and it
 * is freed here, after the callback, like one freed while busy. */
static void call_back(sg_auth *a, int res, const char *out, unsigned outlen)
{
	a->in_cb = true;
	a->cb(a->arg, res, out, outlen);
	a->in_cb = false;
	if (a->dead)
		destroy(a);
}

static void after_work(uv_work_t *w, int status)
{
	sg_auth *a = w->data;
	const char *sid = a->sid[0] ? a->sid : NULL;
	const char *out = NULL;
	unsigned outlen = 0;
	int res;

	if (a->slot) {
		a->slot = false;
		t_running--;
		pump(); /* the next waiting call takes the slot */
	}
	a->busy = false;
	free(a->in);
	a->in = NULL;
	if (a->dead) {
		destroy(a);
		return;
	}
	if (a->props_dirty && a->conn)
		apply_props(a);
	if (status < 0)
		res = SG_AUTH_TEMPFAIL; /* cancelled: nobody does, but be total */
	else if (a->preset >= 0)
		res = a->preset;
	else
		res = normalise(a->rc, a->backend_down);
	bool from_cyrus = a->preset < 0 && status >= 0;
	if (from_cyrus && a->rc != SASL_OK && a->rc != SASL_CONTINUE)
		log_debug(sid, "sasl: %s: %s (%s)", a->is_start ? a->mech : "step",
		          sasl_errstring(a->rc, NULL, NULL), sasl_errdetail(a->conn));
	a->preset = -1;

	if (res == SG_AUTH_OK && from_cyrus) {
		a->pend_user = getprop_dup(a->conn, SASL_USERNAME);
		a->pend_authcid = getprop_dup(a->conn, SASL_AUTHUSER);
		if (!a->pend_user) {
			log_error(sid, "sasl: authenticated, but no user name");
			res = SG_AUTH_TEMPFAIL;
		} else if (a->outlen > 0) {
			/* success with data: 334 first, 235 after an empty line */
			a->pending_ok = true;
			res = SG_AUTH_CONTINUE;
		}
	}
	switch (res) {
	case SG_AUTH_OK:
		a->conn_done = true;
		free(a->user);
		free(a->authcid);
		a->user = a->pend_user;
		a->authcid = a->pend_authcid;
		a->pend_user = a->pend_authcid = NULL;
		clear_exchange(a);
		if (from_cyrus)
			cache_store(a, res);
		break;
	case SG_AUTH_CONTINUE:
		out = a->out ? a->out : "";
		outlen = a->outlen;
		break;
	default:
		if (a->backend_down)
			log_warn(sid,
			         "sasl: password backend unavailable (%s): AUTH answered "
			         "as a temporary failure",
			         a->why);
		clear_exchange(a);
		if (from_cyrus)
			cache_store(a, res);
		break;
	}
	a->ck_set = false;
	call_back(a, res, out, outlen);
}

unsigned sg_auth_inflight(void)
{
	return __atomic_load_n(&g_inflight, __ATOMIC_RELAXED);
}

/* A call that never reached the pool: give back what queue() took. */
static void unqueue_failed(sg_auth *a, int r)
{
	if (a->counted)
		__atomic_sub_fetch(&g_inflight, 1, __ATOMIC_RELEASE);
	a->counted = false;
	a->busy = false;
	free(a->in);
	a->in = NULL;
	a->preset = -1;
	log_error(a->sid[0] ? a->sid : NULL, "sasl: uv_queue_work: %s",
	          uv_strerror(r));
}

/* Take a call out of this loop's line (on its thread): true if it was
 * there, waiting for a slot. */
static bool unqueue(sg_auth *a)
{
	sg_auth *prev = NULL;
	for (sg_auth *q = t_head; q; prev = q, q = q->qnext) {
		if (q != a)
			continue;
		if (prev)
			prev->qnext = q->qnext;
		else
			t_head = q->qnext;
		if (t_tail == q)
			t_tail = prev;
		q->qnext = NULL;
		return true;
	}
	return false;
}

/* Start waiting calls while this loop has free slots (on its thread). */
static void pump(void)
{
	while (t_head && t_running < run_limit()) {
		sg_auth *a = t_head;
		t_head = a->qnext;
		if (!t_head)
			t_tail = NULL;
		a->qnext = NULL;
		int r = uv_queue_work(a->qloop, &a->work, work, after_work);
		if (r >= 0) {
			a->slot = true;
			t_running++;
			continue;
		}
		/* the loop is going away: the session gets 454, or, gone
		 * already, its auth object is freed */
		unqueue_failed(a, r);
		if (a->dead)
			destroy(a);
		else if (a->cb)
			call_back(a, SG_AUTH_TEMPFAIL, NULL, 0);
	}
}

static int queue(sg_auth *a, uv_loop_t *loop, sg_auth_cb cb, void *arg)
{
	if (a->preset < 0 && g_threads) {
		uint64_t now = uv_hrtime() / 1000000;
		unsigned n = __atomic_add_fetch(&g_inflight, 1, __ATOMIC_ACQUIRE);
		uint64_t last = __atomic_load_n(&g_progress_ms, __ATOMIC_RELAXED);
		const char *why = NULL;
		if (n == 1)
			__atomic_store_n(&g_progress_ms, now, __ATOMIC_RELAXED);
		else if (n > SG_POOL_FACTOR * g_threads)
			why = "every SASL thread is busy";
		else if (n > g_threads && now - last > SG_SASL_STALL_MS)
			why = "the password backend has not answered for a while";
		if (why) {
			__atomic_sub_fetch(&g_inflight, 1, __ATOMIC_RELEASE);
			log_warn(a->sid[0] ? a->sid : NULL,
			         "sasl: %s (%u calls in flight, [sasl] threads = %u): "
			         "AUTH answered as a temporary failure",
			         why, n - 1, g_threads);
			a->preset = SG_AUTH_TEMPFAIL;
		} else {
			a->counted = true;
		}
	}
	a->cb = cb;
	a->arg = arg;
	a->work.data = a;
	a->busy = true;
	a->qloop = loop;
	/* an answer decided up front (454) needs no Cyrus slot: never in line */
	bool cyrus = a->preset < 0;
	if (cyrus && (t_head || t_running >= run_limit())) {
		/* every slot of this loop is taken: wait in line; after_work of
		 * a running call starts the next */
		a->qnext = NULL;
		if (t_tail)
			t_tail->qnext = a;
		else
			t_head = a;
		t_tail = a;
		return 0;
	}
	int r = uv_queue_work(loop, &a->work, work, after_work);
	if (r < 0) {
		unqueue_failed(a, r);
		return -1;
	}
	if (cyrus) {
		a->slot = true;
		t_running++;
	}
	return 0;
}

static void copy_in(sg_auth *a, const char *in, unsigned inlen)
{
	/* never NULL, even when empty: "=" is not "none" */
	a->in = sg_xmalloc((size_t)inlen + 1);
	if (inlen)
		memcpy(a->in, in, inlen);
	a->in[inlen] = '\0';
	a->inlen = inlen;
}

int sg_auth_start(sg_auth *a, uv_loop_t *loop, const char *mech,
                  const char *in, unsigned inlen, bool has_initial,
                  sg_auth_cb cb, void *arg)
{
	if (!a || !loop || !cb || !mech || a->busy || a->dead)
		return -1;
	clear_exchange(a);
	if (a->conn_done) {
		/* A success the session could not use (no upstream took the
		 * identity: 454, still unauthenticated): the client may try
		 * again, on a fresh Cyrus connection (Cyrus refuses a step on a
		 * connection that succeeded: "step after doneflag"). */
		sasl_dispose(&a->conn);
		a->conn = NULL;
		a->conn_done = false;
		free(a->user);
		free(a->authcid);
		a->user = a->authcid = NULL;
	}
	a->preset = -1;
	snprintf(a->mech, sizeof a->mech, "%s", mech);
	if (strlen(mech) > SG_AUTH_MECH_MAX || !sg_auth_mech_valid(a->mech))
		a->preset = SG_AUTH_NOMECH; /* CVE-2019-19906 class: checked here */
	else if (ensure_conn(a) < 0)
		a->preset = SG_AUTH_TEMPFAIL;
	else if (!sg_auth_mech_offered(a, a->mech))
		a->preset = SG_AUTH_NOMECH; /* not before TLS, not under saslauthd */
	else if (has_initial && inlen > SG_AUTH_IN_MAX)
		a->preset = SG_AUTH_BADPROT;
	if (a->preset < 0)
		a->started = true;
	a->cached = false;
	a->ck_set = false;
	a->nresp = 0;
	if (a->preset < 0 && has_initial) {
		cache_key(a, in, inlen);
		if (cache_answer(a))
			return 1;
	}
	a->is_start = true;
	a->has_initial = has_initial;
	copy_in(a, in, has_initial && inlen <= SG_AUTH_IN_MAX ? inlen : 0);
	return queue(a, loop, cb, arg);
}

int sg_auth_step(sg_auth *a, uv_loop_t *loop, const char *in, unsigned inlen,
                 sg_auth_cb cb, void *arg)
{
	if (!a || !loop || !cb || a->busy || a->dead || !a->started)
		return -1;
	a->preset = -1;
	if (a->pending_ok)
		/* the response to a success-with-data challenge is empty */
		a->preset = inlen == 0 ? SG_AUTH_OK : SG_AUTH_BADPROT;
	else if (inlen > SG_AUTH_IN_MAX)
		a->preset = SG_AUTH_BADPROT;
	a->cached = false;
	a->ck_set = false;
	if (a->preset < 0) {
		cache_key(a, in, inlen);
		if (cache_answer(a))
			return 1;
	}
	a->is_start = false;
	copy_in(a, in, inlen <= SG_AUTH_IN_MAX ? inlen : 0);
	if (a->preset == SG_AUTH_OK) {
		/* hand the identity over in after_work's OK branch */
		a->pending_ok = false;
	}
	return queue(a, loop, cb, arg);
}

/* ---- start-up and reload ---------------------------------------------- */

static void auxprop_cb(sasl_auxprop_plug_t *m, sasl_info_callback_stage_t st,
                       void *rock)
{
	char *buf = rock;
	size_t n = strlen(buf);
	if (st != SASL_INFO_LIST_MECH || !m || !m->name)
		return;
	snprintf(buf + n, SG_AUTH_LIST_MAX - n, "%s%s", n ? " " : "", m->name);
}

static void loaded_lists(char *mechs, char *aux)
{
	const char **l = sasl_global_listmech();
	size_t n = 0;
	mechs[0] = aux[0] = '\0';
	for (; l && *l && n < SG_AUTH_LIST_MAX; l++)
		n += (size_t)snprintf(mechs + n, SG_AUTH_LIST_MAX - n, "%s%s",
		                      n ? " " : "", *l);
	auxprop_plugin_info(NULL, auxprop_cb, aux);
}

static void move_errors(sg_errors *to, sg_errors *from)
{
	for (size_t i = 0; i < from->n; i++)
		sg_errors_add(to, NULL, "%s", from->msg[i]);
	sg_errors_free(from);
}

static void set_global_cfg(const sg_config *cfg)
{
	sg_config *old;
	uv_mutex_lock(&g_lock);
	old = g_cfg;
	g_cfg = cfg ? sg_config_ref((sg_config *)cfg) : NULL;
	uv_mutex_unlock(&g_lock);
	if (old)
		sg_config_unref(old);
}

/* Checks, sender map, the effective settings.  initial: environment
 * problems (socket, sasldb) are reported in errs like the others (`-t`,
 * start-up prints them); on reload they are warnings, not a reason to keep
 * the old configuration. */
static int apply(const sg_config *cfg, sg_errors *errs, bool initial)
{
	char all[SG_AUTH_LIST_MAX], aux[SG_AUTH_LIST_MAX];
	sg_errors fatal = {0}, env = {0};

	loaded_lists(all, aux);
	sg_sasl_check(cfg, all, aux, &fatal, &env);
	sg_sender_map_load(cfg, &fatal, false); /* checked; installed below */

	/* What a client sees after TLS: the settings in one line. */
	sg_auth_peer peer = {.sid = NULL};
	uv_mutex_lock(&g_lock);
	sg_config *prev = g_cfg; /* plugins read the new options meanwhile */
	g_cfg = (sg_config *)cfg;
	uv_mutex_unlock(&g_lock);
	sg_auth *probe = sg_auth_new(cfg, &peer);
	sg_auth_set_tls(probe, 256);
	char mechs[SG_AUTH_MECHS_MAX];
	snprintf(mechs, sizeof mechs, "%s", sg_auth_mechs(probe));
	sg_auth_free(probe);
	uv_mutex_lock(&g_lock);
	g_cfg = prev;
	uv_mutex_unlock(&g_lock);

	if (!*mechs && !fatal.n) {
		sg_where w = sg_sasl_where(cfg, "mech_list");
		sg_errors_add(&fatal, &w,
		              "no SASL mechanism left to offer (mech_list \"%s\", "
		              "pwcheck_method %s)",
		              sg_sasl_opt(cfg, "mech_list"),
		              sg_sasl_opt(cfg, "pwcheck_method")
		                  ? sg_sasl_opt(cfg, "pwcheck_method")
		                  : "auxprop");
	}
	if (sg_sasl_saslauthd_only(cfg)) {
		/* The classic Postfix/Cyrus question: say it once, here. */
		const char *s = sg_sasl_opt(cfg, "mech_list");
		char dropped[SG_AUTH_MECHS_MAX] = "";
		while (s && *s) {
			size_t n = strcspn(s, " \t,");
			char m[SG_AUTH_MECH_MAX + 2];
			if (n && n <= SG_AUTH_MECH_MAX) {
				memcpy(m, s, n);
				m[n] = '\0';
				size_t k = strlen(dropped);
				if (sg_sasl_mech_needs_secret(m))
					snprintf(dropped + k, sizeof dropped - k, "%s%s",
					         k ? " " : "", m);
			}
			s += n;
			s += strspn(s, " \t,");
		}
		if (*dropped)
			log_warn(NULL,
			         "sasl: not offering %s: challenge-response mechanisms "
			         "cannot work with pwcheck_method = saslauthd (it only "
			         "checks plaintext passwords; the server has no secret)",
			         dropped);
	}

	int bad = fatal.n ? -1 : 0;
	move_errors(errs, &fatal);
	if (initial) {
		move_errors(errs, &env);
	} else {
		for (size_t i = 0; i < env.n; i++)
			log_warn(NULL, "%s", env.msg[i]);
		sg_errors_free(&env);
	}
	if (bad)
		return -1;
	if (sg_sender_map_load(cfg, errs, true) < 0)
		return -1; /* changed since the check a moment ago */
	set_global_cfg(cfg);
	/* a reload empties the cache; entries only for this configuration */
	if (g_cache)
		sg_acache_reset(g_cache, cfg->sasl_cache_size, cfg);
	const char *pw = sg_sasl_opt(cfg, "pwcheck_method");
	const char *ap = sg_sasl_opt(cfg, "auxprop_plugin");
	log_info(NULL,
	         "sasl: mechanisms=\"%s\" pwcheck_method=%s auxprop_plugin=%s "
	         "saslauthd_path=%s",
	         mechs, pw && *pw ? pw : "auxprop", ap && *ap ? ap : "-",
	         sg_sasl_uses(cfg, "saslauthd") ? sg_sasl_saslauthd_path(cfg) : "-");
	return 0;
}

int sg_sasl_init(const sg_config *cfg, sg_errors *errs)
{
	char n[16];

	uv_once(&g_once, g_init);
	/* Before the first uv_queue_work anywhere: libuv reads it once, so
	 * only the first call counts (a reload cannot resize the pool). */
	unsigned t = cfg->sasl_threads ? cfg->sasl_threads : 4;
	if (t > SG_AUTH_THREADS_MAX)
		t = SG_AUTH_THREADS_MAX;
	if (!g_threads) {
		g_threads = t;
		unsigned w = cfg->workers > 0 ? (unsigned)cfg->workers : 1;
		unsigned pool = SG_RUN_FACTOR * t * w + SG_POOL_RESERVE;
		snprintf(n, sizeof n, "%u", pool < SG_POOL_MAX ? pool : SG_POOL_MAX);
		setenv("UV_THREADPOOL_SIZE", n, 1);
	}

	if (g_active)
		sg_sasl_done();
	set_global_cfg(cfg);
	if (!g_cache && !(g_cache = sg_acache_new(0)))
		log_warn(NULL, "sasl: no randomness for the credential cache's key: "
		               "cache off");
	int rc = sasl_server_init(global_cbs, NULL);
	if (rc != SASL_OK) {
		sg_where w = {cfg->path, 0};
		sg_errors_add(errs, &w, "[sasl] Cyrus SASL start-up failed: %s",
		              sasl_errstring(rc, NULL, NULL));
		set_global_cfg(NULL);
		return -1;
	}
	g_active = true;
	return apply(cfg, errs, true);
}

int sg_sasl_reconfig(const sg_config *cfg, sg_errors *errs)
{
	uv_once(&g_once, g_init);
	if (!g_active)
		return sg_sasl_init(cfg, errs);
	if (cfg->sasl_threads != g_threads)
		log_warn(NULL, "sasl: threads = %u takes effect at the next start "
		               "(running with %u)",
		         cfg->sasl_threads, g_threads);
	return apply(cfg, errs, false);
}

void sg_sasl_done(void)
{
	uv_once(&g_once, g_init);
	if (g_active)
		sasl_server_done();
	g_active = false;
	set_global_cfg(NULL);
	sg_acache_free(g_cache);
	g_cache = NULL;
	uv_mutex_lock(&g_lock);
	while (g_interned) {
		struct interned *i = g_interned;
		g_interned = i->next;
		free(i);
	}
	uv_mutex_unlock(&g_lock);
	sg_sender_map_done();
}
