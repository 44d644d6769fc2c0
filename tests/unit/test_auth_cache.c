/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_auth_cache.c: the credential cache.  First the table
 * itself (sasl/authcache.c) with the clock chosen here: keying (another
 * password, another process key, an ambiguous split never meet), expiry,
 * least-recently-used eviction, the owner tag, resizing.  Then the glue in
 * sasl/auth.c against real Cyrus SASL and a real sasldb: a hit answers at
 * once (no callback) with the identity Cyrus gave, PLAIN and LOGIN share
 * an entry, a wrong password is never a hit for the right one, failures
 * are kept only with cache_negative_ttl, a PLAIN with an authzid always
 * asks Cyrus, and a reload (or a flush) empties the cache and keeps
 * sessions on the old configuration out of it. */
#include "test_sasl_common.h"
#include "../../sasl/authcache.h"

#define REALM "example.org"
#define USER "alice"
#define PASS "correct horse 7"
#define LOGIN USER "@" REALM /* Cyrus adds the realm */

static uv_loop_t loop;
static char db[512];

/* ---- the table ----------------------------------------------------------- */

static void key_of(sg_acache *c, const char *u, const char *p,
                   unsigned char k[SG_ACACHE_KEY_LEN])
{
	ASSERT_EQ(sg_acache_key(c, u, strlen(u), p, strlen(p), k), 0, "%s", u);
}

static void test_keying(void)
{
	sg_acache *c = sg_acache_new(8), *other = sg_acache_new(8);
	unsigned char k1[SG_ACACHE_KEY_LEN], k2[SG_ACACHE_KEY_LEN];
	unsigned char k3[SG_ACACHE_KEY_LEN];

	key_of(c, "alice", "pw", k1);
	key_of(c, "alice", "pw", k2);
	ASSERT_MEM_EQ(k1, k2, sizeof k1);
	key_of(c, "alice", "pW", k2); /* same user, another password */
	ASSERT(memcmp(k1, k2, sizeof k1) != 0);
	key_of(c, "alicep", "w", k2); /* the same octets split elsewhere */
	ASSERT(memcmp(k1, k2, sizeof k1) != 0);
	key_of(other, "alice", "pw", k3); /* another process key */
	ASSERT(memcmp(k1, k3, sizeof k1) != 0);

	/* what PLAIN and LOGIN might read differently: never a key */
	ASSERT_EQ(sg_acache_key(c, "al\0ce", 5, "pw", 2, k2), -1);
	ASSERT_EQ(sg_acache_key(c, "alice", 5, "p\0w", 3, k2), -1);
	ASSERT_EQ(sg_acache_key(c, "", 0, "pw", 2, k2), -1);
	ASSERT_EQ(sg_acache_key(c, "alice", 5, "", 0, k2), -1);
	char big[SG_ACACHE_CRED_MAX + 1];
	memset(big, 'x', sizeof big);
	ASSERT_EQ(sg_acache_key(c, big, sizeof big, "pw", 2, k2), -1);
	ASSERT_EQ(sg_acache_key(c, "alice", 5, big, sizeof big, k2), -1);
	ASSERT_EQ(sg_acache_key(c, big, sizeof big - 1, big, sizeof big - 1, k2),
	          0);

	/* same user, another password: a miss, never the success */
	sg_acache_reset(c, 8, &loop);
	key_of(c, "alice", "pw", k1);
	key_of(c, "alice", "guess", k2);
	sg_acache_put(c, &loop, k1, true, "alice@x", "alice@x", 1000);
	char *u, *a;
	ASSERT_EQ(sg_acache_get(c, &loop, k2, 1, &u, &a), SG_ACACHE_MISS);
	ASSERT_NULL(u);
	ASSERT_EQ(sg_acache_get(c, &loop, k1, 1, &u, &a), SG_ACACHE_OK);
	ASSERT_STR_EQ(u, "alice@x");
	ASSERT_STR_EQ(a, "alice@x");
	free(u);
	free(a);
	sg_acache_free(c);
	sg_acache_free(other);
}

static void test_expiry(void)
{
	sg_acache *c = sg_acache_new(8);
	unsigned char ok[SG_ACACHE_KEY_LEN], bad[SG_ACACHE_KEY_LEN];
	char *u, *a;
	int tag;

	sg_acache_reset(c, 8, &tag);
	key_of(c, "bob", "right", ok);
	key_of(c, "bob", "wrong", bad);
	sg_acache_put(c, &tag, ok, true, "bob", NULL, 5000);
	sg_acache_put(c, &tag, bad, false, NULL, NULL, 2000);
	ASSERT_EQ(sg_acache_count(c), 2);

	ASSERT_EQ(sg_acache_get(c, &tag, bad, 1999, &u, &a), SG_ACACHE_FAIL);
	ASSERT_NULL(u);
	ASSERT_EQ(sg_acache_get(c, &tag, bad, 2000, &u, &a), SG_ACACHE_MISS);
	ASSERT_EQ(sg_acache_count(c), 1); /* the expired one is gone */
	ASSERT_EQ(sg_acache_get(c, &tag, ok, 4999, &u, &a), SG_ACACHE_OK);
	ASSERT_STR_EQ(u, "bob");
	ASSERT_NULL(a); /* none given */
	free(u);
	/* a hit does not extend the life of an entry */
	ASSERT_EQ(sg_acache_get(c, &tag, ok, 5000, &u, &a), SG_ACACHE_MISS);
	ASSERT_EQ(sg_acache_count(c), 0);

	/* storing again replaces: the newest answer counts */
	sg_acache_put(c, &tag, ok, true, "bob", NULL, 9000);
	sg_acache_put(c, &tag, ok, false, NULL, NULL, 9000);
	ASSERT_EQ(sg_acache_count(c), 1);
	ASSERT_EQ(sg_acache_get(c, &tag, ok, 1, &u, &a), SG_ACACHE_FAIL);
	sg_acache_free(c);
}

static void test_eviction(void)
{
	sg_acache *c = sg_acache_new(3);
	unsigned char k[5][SG_ACACHE_KEY_LEN];
	char *u, *a, pw[8];
	int tag;

	sg_acache_reset(c, 3, &tag);
	for (int i = 0; i < 5; i++) {
		snprintf(pw, sizeof pw, "pw%d", i);
		key_of(c, "carol", pw, k[i]);
	}
	for (int i = 0; i < 3; i++)
		sg_acache_put(c, &tag, k[i], true, "carol", "carol", 100);
	/* k0 used: k1 is now the least recently used */
	ASSERT_EQ(sg_acache_get(c, &tag, k[0], 1, &u, &a), SG_ACACHE_OK);
	free(u);
	free(a);
	sg_acache_put(c, &tag, k[3], false, NULL, NULL, 100);
	ASSERT_EQ(sg_acache_count(c), 3);
	ASSERT_EQ(sg_acache_get(c, &tag, k[1], 1, &u, &a), SG_ACACHE_MISS);
	ASSERT_EQ(sg_acache_get(c, &tag, k[2], 1, &u, &a), SG_ACACHE_OK);
	free(u);
	free(a);
	/* now k0 is the oldest in use */
	sg_acache_put(c, &tag, k[4], false, NULL, NULL, 100);
	ASSERT_EQ(sg_acache_get(c, &tag, k[0], 1, &u, &a), SG_ACACHE_MISS);
	ASSERT_EQ(sg_acache_get(c, &tag, k[3], 1, &u, &a), SG_ACACHE_FAIL);
	ASSERT_EQ(sg_acache_get(c, &tag, k[4], 1, &u, &a), SG_ACACHE_FAIL);
	ASSERT_EQ(sg_acache_count(c), 3);

	/* another owner neither reads nor fills it */
	int other;
	ASSERT_EQ(sg_acache_get(c, &other, k[4], 1, &u, &a), SG_ACACHE_MISS);
	sg_acache_put(c, &other, k[1], true, "carol", NULL, 100);
	ASSERT_EQ(sg_acache_get(c, &tag, k[1], 1, &u, &a), SG_ACACHE_MISS);

	/* a reset empties it with the new bound; 0 turns it off */
	sg_acache_reset(c, 1, &tag);
	ASSERT_EQ(sg_acache_count(c), 0);
	ASSERT(sg_acache_on(c));
	sg_acache_put(c, &tag, k[0], false, NULL, NULL, 100);
	sg_acache_put(c, &tag, k[1], false, NULL, NULL, 100);
	ASSERT_EQ(sg_acache_count(c), 1);
	ASSERT_EQ(sg_acache_get(c, &tag, k[1], 1, &u, &a), SG_ACACHE_FAIL);
	sg_acache_flush(c);
	ASSERT_EQ(sg_acache_get(c, &tag, k[1], 1, &u, &a), SG_ACACHE_MISS);
	sg_acache_reset(c, 0, &tag);
	ASSERT(!sg_acache_on(c));
	sg_acache_put(c, &tag, k[1], false, NULL, NULL, 100);
	ASSERT_EQ(sg_acache_count(c), 0);
	ASSERT_EQ(sg_acache_get(c, &tag, k[1], 1, &u, &a), SG_ACACHE_MISS);
	sg_acache_free(c);
}

/* ---- the glue, with Cyrus ------------------------------------------------- */

static sg_auth *new_auth(sg_config *c)
{
	sg_auth_peer peer = {.local_ip = "127.0.0.1", .local_port = 587,
	                     .remote_ip = "192.0.2.1", .remote_port = 40000,
	                     .sid = "T1"};
	sg_auth *a = sg_auth_new(c, &peer);
	sg_auth_set_tls(a, 256);
	return a;
}

static sg_config *config(const char *extra)
{
	char body[2048];
	sg_errors errs = {0};
	snprintf(body, sizeof body,
	         "realm = " REALM "\npwcheck_method = auxprop\n"
	         "auxprop_plugin = sasldb\nsasldb_path = %s\n"
	         "mech_list = PLAIN LOGIN CRAM-MD5\n%s",
	         db, extra);
	sg_config *c = t_config(body, &errs);
	if (!c) {
		sg_errors_print(&errs, stderr);
		exit(2);
	}
	return c;
}

/* One PLAIN login with an initial response on a new context: the answer,
 * and whether it came from the cache (at once, no callback). */
static int plain(sg_config *c, const char *msg, size_t len, bool *cached,
                 char *user, size_t usz)
{
	struct t_res r = {0};
	sg_auth *a = new_auth(c);
	int res;
	int rc = sg_auth_start(a, &loop, "PLAIN", msg, (unsigned)len, true,
	                       t_on_res, &r);
	if (rc == 1) {
		*cached = true;
		res = sg_auth_answer(a);
		ASSERT(sg_auth_cached(a));
		ASSERT_EQ(r.calls, 0); /* no callback for a hit */
	} else {
		*cached = false;
		res = rc == 0 ? t_wait(&loop, &r) : -2;
		ASSERT(!sg_auth_cached(a));
	}
	snprintf(user, usz, "%s", sg_auth_user(a) ? sg_auth_user(a) : "");
	sg_auth_free(a);
	return res;
}

/* One PLAIN login with cfg: its result and whether the cache answered
 * (the login Cyrus reports lands in the caller's user[]). */
#define LOGIN_IS(cfg, cred, want, want_cached)                              \
	do {                                                                \
		ASSERT_EQ(plain(cfg, cred, sizeof cred - 1, &cached, user,  \
		                sizeof user), want);                        \
		ASSERT_EQ(cached, want_cached);                             \
	} while (0)

#define PLAIN_OK "\0" USER "\0" PASS
#define PLAIN_BAD "\0" USER "\0wrong"

static void test_glue(void)
{
	char user[256];
	bool cached;
	sg_errors errs = {0};

	sg_config *c = config("cache_size = 16\ncache_ttl = 1h\n"
	                      "cache_negative_ttl = 1h\n");
	ASSERT_EQ(sg_sasl_reconfig(c, &errs), 0);

	/* a miss asks Cyrus; then the same login is a hit, same identity */
	LOGIN_IS(c, PLAIN_OK, SG_AUTH_OK, false);
	ASSERT_STR_EQ(user, LOGIN);
	LOGIN_IS(c, PLAIN_OK, SG_AUTH_OK, true);
	ASSERT_STR_EQ(user, LOGIN);

	/* LOGIN with the same login and password: the challenges come from
	 * Cyrus, the last response is answered from the cache */
	struct t_res r;
	sg_auth *a = new_auth(c);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", NULL, -1, &r), SG_AUTH_CONTINUE);
	ASSERT_EQ(t_step(&loop, a, USER, strlen(USER), &r), SG_AUTH_CONTINUE);
	int calls = r.calls;
	ASSERT_EQ(sg_auth_step(a, &loop, PASS, strlen(PASS), t_on_res, &r), 1);
	ASSERT_EQ(sg_auth_answer(a), SG_AUTH_OK);
	ASSERT_EQ(r.calls, calls);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	ASSERT_STR_EQ(sg_auth_authcid(a), LOGIN);
	/* a new AUTH on the same context (the upstream refused: 454) goes on
	 * as after a success Cyrus saw */
	ASSERT_EQ(t_start(&loop, a, "PLAIN", PLAIN_BAD, sizeof PLAIN_BAD - 1, &r),
	          SG_AUTH_FAIL);
	ASSERT_NULL(sg_auth_user(a));
	sg_auth_free(a);

	/* the wrong password (asked above, now a cached failure) is never
	 * the right one's success; kept with cache_negative_ttl */
	LOGIN_IS(c, PLAIN_BAD, SG_AUTH_FAIL, true);
	ASSERT_STR_EQ(user, "");
	/* a cached failure in the middle of LOGIN, then a new AUTH on the
	 * same context: Cyrus answers it as usual */
	a = new_auth(c);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", USER, strlen(USER), &r),
	          SG_AUTH_CONTINUE);
	ASSERT_EQ(sg_auth_step(a, &loop, "wrong", 5, t_on_res, &r), 1);
	ASSERT_EQ(sg_auth_answer(a), SG_AUTH_FAIL);
	sg_auth_reset(a);
	ASSERT(!sg_auth_cached(a));
	ASSERT_EQ(t_start(&loop, a, "CRAM-MD5", NULL, -1, &r), SG_AUTH_CONTINUE);
	ASSERT(r.len > 0); /* CRAM-MD5's challenge, from a fresh connection */
	sg_auth_free(a);

	/* an authzid (even the login's own) always goes to Cyrus */
	static const char authz[] = LOGIN "\0" USER "\0" PASS;
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(plain(c, authz, sizeof authz - 1, &cached, user,
		                sizeof user), SG_AUTH_OK);
		ASSERT(!cached);
	}
	/* so does a challenge-response mechanism: CRAM-MD5 starts on Cyrus */
	a = new_auth(c);
	ASSERT_EQ(t_start(&loop, a, "CRAM-MD5", NULL, -1, &r), SG_AUTH_CONTINUE);
	sg_auth_free(a);

	/* SIGHUP's flush */
	sg_sasl_cache_flush();
	LOGIN_IS(c, PLAIN_OK, SG_AUTH_OK, false);

	/* a reload with cache_negative_ttl = 0: emptied, failures never kept */
	sg_config *c2 = config("cache_size = 16\ncache_negative_ttl = 0\n");
	ASSERT_EQ(sg_sasl_reconfig(c2, &errs), 0);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(plain(c2, PLAIN_BAD, sizeof PLAIN_BAD - 1, &cached, user,
		                sizeof user), SG_AUTH_FAIL);
		ASSERT(!cached, "failure %d", i);
	}
	LOGIN_IS(c2, PLAIN_OK, SG_AUTH_OK, false); /* emptied by the reload */
	LOGIN_IS(c2, PLAIN_OK, SG_AUTH_OK, true);
	/* a session still on the old configuration stays out of it */
	LOGIN_IS(c, PLAIN_OK, SG_AUTH_OK, false);

	/* cache_size = 0 (the default): every login asks Cyrus */
	sg_config *c3 = config("");
	ASSERT_EQ(sg_sasl_reconfig(c3, &errs), 0);
	for (int i = 0; i < 2; i++) {
		LOGIN_IS(c3, PLAIN_OK, SG_AUTH_OK, false);
	}
	sg_errors_print(&errs, stderr);
	ASSERT_EQ(errs.n, 0);
	sg_errors_free(&errs);
	sg_config_unref(c);
	sg_config_unref(c2);
	sg_config_unref(c3);
}

int main(void)
{
	sg_errors errs = {0};

	alarm(120);
	sg_log_level = getenv("SG_DEBUG") ? SG_LOG_DEBUG : SG_LOG_WARN;
	test_keying();
	test_expiry();
	test_eviction();

	t_mkdir();
	snprintf(db, sizeof db, "%s/sasldb2", t_dir);
	t_saslpasswd(db, REALM, USER, PASS);
	sg_config *c = config("");
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	sg_errors_print(&errs, stderr);
	uv_loop_init(&loop);
	test_glue();
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);
	ASSERT_EQ(uv_loop_close(&loop), 0);
	return CHECK_SUMMARY();
}
