/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_sasl_auth.c: sg_auth_* against real Cyrus SASL with a real
 * sasldb (made by saslpasswd2), driven through a real uv loop and libuv's
 * thread pool: PLAIN with and without initial response, wrong password,
 * unknown user, LOGIN both ways, CRAM-MD5 (HMAC computed here), the
 * authorization identity, mechanisms before and after TLS, free while a call
 * is in flight or from its callback, and the start-up checks of sg_sasl_init. */
#include "test_sasl_common.h"

#include <sasl/sasl.h> /* the client side only, to speak SCRAM/DIGEST */

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define REALM "example.org"
#define USER "alice"
#define PASS "correct horse 7"
#define LOGIN USER "@" REALM /* Cyrus adds the realm */

static uv_loop_t loop;
static char db[512];

static sg_auth *new_auth(sg_config *c, bool tls)
{
	sg_auth_peer peer = {.local_ip = "127.0.0.1",
	                     .local_port = 587,
	                     .remote_ip = "192.0.2.1",
	                     .remote_port = 40000,
	                     .sid = "T1"};
	sg_auth *a = sg_auth_new(c, &peer);
	if (tls)
		sg_auth_set_tls(a, 256);
	return a;
}

static sg_config *init_with(const char *extra, sg_errors *errs)
{
	char body[2048];
	snprintf(body, sizeof body,
	         "realm = " REALM "\npwcheck_method = auxprop\n"
	         "auxprop_plugin = sasldb\nsasldb_path = %s\n%s",
	         db, extra);
	sg_config *c = t_config(body, errs);
	if (!c) {
		sg_errors_print(errs, stderr);
		exit(2);
	}
	return c;
}

static void test_plain(sg_config *c)
{
	struct t_res r;
	static const char ok[] = "\0" USER "\0" PASS;
	static const char bad[] = "\0" USER "\0wrong";
	static const char nouser[] = "\0mallory\0" PASS;

	/* with initial response */
	sg_auth *a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", ok, sizeof ok - 1, &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	ASSERT_STR_EQ(sg_auth_authcid(a), LOGIN);
	sg_auth_free(a);

	/* without: an empty 334, then the response */
	a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", NULL, -1, &r), SG_AUTH_CONTINUE);
	ASSERT_EQ(r.len, 0);
	ASSERT_NULL(sg_auth_user(a));
	ASSERT_EQ(t_step(&loop, a, ok, sizeof ok - 1, &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	sg_auth_free(a);

	/* wrong password, unknown user: the same answer (no enumeration);
	 * then the same object can try again (after sg_auth_reset) */
	a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", bad, sizeof bad - 1, &r),
	          SG_AUTH_FAIL);
	ASSERT_NULL(sg_auth_user(a));
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", nouser, sizeof nouser - 1, &r),
	          SG_AUTH_FAIL);
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", ok, sizeof ok - 1, &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	/* a success the session could not use (the upstream refused the
	 * identity: 454): the client may try again on the same session */
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", bad, sizeof bad - 1, &r),
	          SG_AUTH_FAIL);
	ASSERT_NULL(sg_auth_user(a));
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", USER, strlen(USER), &r),
	          SG_AUTH_CONTINUE);
	ASSERT_EQ(t_step(&loop, a, PASS, strlen(PASS), &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	sg_auth_free(a);

	/* "=" (an empty initial response) is not "none": PLAIN cannot parse it */
	a = new_auth(c, true);
	int res = t_start(&loop, a, "PLAIN", "", 0, &r);
	ASSERT(res == SG_AUTH_BADPROT || res == SG_AUTH_FAIL);
	ASSERT_NULL(sg_auth_user(a));
	/* garbage without NULs */
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", "garbage", 7, &r), SG_AUTH_BADPROT);
	/* step without a start */
	sg_auth_reset(a);
	ASSERT_EQ(sg_auth_step(a, &loop, "x", 1, t_on_res, &r), -1);
	sg_auth_free(a);
}

static void test_authz(sg_config *c)
{
	struct t_res r;
	static const char other[] = "bob\0" USER "\0" PASS;
	static const char same[] = USER "\0" USER "\0" PASS;
	sg_auth *a = new_auth(c, true);
	/* alice may not act as bob (who exists): Cyrus' default proxy policy
	 * allows only the login itself */
	ASSERT_EQ(t_start(&loop, a, "PLAIN", other, sizeof other - 1, &r),
	          SG_AUTH_AUTHZ);
	ASSERT_NULL(sg_auth_user(a));
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "PLAIN", same, sizeof same - 1, &r),
	          SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	sg_auth_free(a);
}

static void test_login(sg_config *c)
{
	struct t_res r;
	/* classic: 334 Username:, 334 Password: */
	sg_auth *a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", NULL, -1, &r), SG_AUTH_CONTINUE);
	ASSERT_STR_EQ(r.chal, "Username:");
	ASSERT_EQ(t_step(&loop, a, USER, strlen(USER), &r), SG_AUTH_CONTINUE);
	ASSERT_STR_EQ(r.chal, "Password:");
	ASSERT_EQ(t_step(&loop, a, PASS, strlen(PASS), &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	sg_auth_free(a);

	/* with the user name as initial response (RFC 4954 style clients) */
	a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", USER, strlen(USER), &r),
	          SG_AUTH_CONTINUE);
	ASSERT_STR_EQ(r.chal, "Password:");
	ASSERT_EQ(t_step(&loop, a, "nope", 4, &r), SG_AUTH_FAIL);
	ASSERT_NULL(sg_auth_user(a));
	/* after a failure the exchange is over: step refused, start again ok */
	ASSERT_EQ(sg_auth_step(a, &loop, "x", 1, t_on_res, &r), -1);
	ASSERT_EQ(t_start(&loop, a, "LOGIN", USER, strlen(USER), &r),
	          SG_AUTH_CONTINUE);
	ASSERT_EQ(t_step(&loop, a, PASS, strlen(PASS), &r), SG_AUTH_OK);
	sg_auth_free(a);
}

static void hmac_md5_hex(const char *key, const char *msg, unsigned len,
                         char hex[33])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	HMAC(EVP_md5(), key, (int)strlen(key), (const unsigned char *)msg, len,
	     mac, &maclen);
	for (unsigned i = 0; i < maclen && i < 16; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	hex[32] = '\0';
}

static void test_cram(sg_config *c)
{
	struct t_res r;
	char resp[256], hex[33];

	sg_auth *a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "CRAM-MD5", NULL, -1, &r), SG_AUTH_CONTINUE);
	if (ASSERT_GT(r.len, 0))
		ASSERT_EQ(r.chal[0], '<'); /* RFC 2195 msg-id style */
	hmac_md5_hex(PASS, r.chal, r.len, hex);
	snprintf(resp, sizeof resp, "%s %s", USER, hex);
	ASSERT_EQ(t_step(&loop, a, resp, (unsigned)strlen(resp), &r), SG_AUTH_OK);
	ASSERT_STR_EQ(sg_auth_user(a), LOGIN);
	sg_auth_free(a);

	a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "CRAM-MD5", NULL, -1, &r), SG_AUTH_CONTINUE);
	hmac_md5_hex("wrong", r.chal, r.len, hex);
	snprintf(resp, sizeof resp, "%s %s", USER, hex);
	ASSERT_EQ(t_step(&loop, a, resp, (unsigned)strlen(resp), &r), SG_AUTH_FAIL);
	sg_auth_reset(a);
	ASSERT_EQ(t_start(&loop, a, "CRAM-MD5", NULL, -1, &r), SG_AUTH_CONTINUE);
	hmac_md5_hex(PASS, r.chal, r.len, hex);
	snprintf(resp, sizeof resp, "mallory %s", hex);
	ASSERT_EQ(t_step(&loop, a, resp, (unsigned)strlen(resp), &r), SG_AUTH_FAIL);
	sg_auth_free(a);
}

/* Cyrus' client library plays the mail client for the multi-step
 * mechanisms, so the test exercises every round trip, including a success
 * that carries data (RFC 4954 section 4: sent as a 334, answered empty). */
static const char *cl_pass = PASS;

static int cl_simple(void *ctx, int id, const char **result, unsigned *len)
{
	*result = id == SASL_CB_AUTHNAME ? USER : "";
	if (len)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

static int cl_secret(sasl_conn_t *conn, void *ctx, int id,
                     sasl_secret_t **psecret)
{
	static union {
		sasl_secret_t s;
		char buf[sizeof(sasl_secret_t) + 128];
	} u;
	size_t n = strlen(cl_pass);
	u.s.len = n;
	memcpy(u.s.data, cl_pass, n + 1);
	*psecret = &u.s;
	return SASL_OK;
}

#define CL_CB(f) ((int (*)(void))(void (*)(void))(f))

static int client_auth(sg_config *c, const char *mech, const char *pass,
                       int *rounds)
{
	static const sasl_callback_t cbs[] = {
	    {SASL_CB_AUTHNAME, CL_CB(cl_simple), NULL},
	    {SASL_CB_USER, CL_CB(cl_simple), NULL},
	    {SASL_CB_PASS, CL_CB(cl_secret), NULL},
	    {SASL_CB_LIST_END, NULL, NULL}};
	sasl_conn_t *cc = NULL;
	const char *out = NULL, *chosen = NULL;
	unsigned outlen = 0;
	struct t_res r;
	int res;

	cl_pass = pass;
	*rounds = 0;
	if (sasl_client_new("smtp", "mx.test", NULL, NULL, cbs, 0, &cc) != SASL_OK)
		return -10;
	int rc = sasl_client_start(cc, mech, NULL, &out, &outlen, &chosen);
	if (rc != SASL_OK && rc != SASL_CONTINUE) {
		sasl_dispose(&cc);
		return -11;
	}
	sg_auth *a = new_auth(c, true);
	res = t_start(&loop, a, mech, out ? out : "", out ? (int)outlen : -1, &r);
	while (res == SG_AUTH_CONTINUE && ++*rounds < 8) {
		rc = sasl_client_step(cc, r.chal, r.len, NULL, &out, &outlen);
		if (rc != SASL_OK && rc != SASL_CONTINUE)
			break;
		res = t_step(&loop, a, out ? out : "", out ? outlen : 0, &r);
	}
	if (res == SG_AUTH_OK && (!sg_auth_user(a) ||
	                          strcmp(sg_auth_user(a), LOGIN) != 0))
		res = -12;
	sg_auth_free(a);
	sasl_dispose(&cc);
	return res;
}

static void test_multistep(sg_config *c)
{
	static const char *const mechs[] = {"SCRAM-SHA-256", "SCRAM-SHA-1",
	                                    "DIGEST-MD5"};
	int rounds;
	ASSERT_EQ(sasl_client_init(NULL), SASL_OK);
	for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++) {
		int res = client_auth(c, mechs[i], PASS, &rounds);
		if (res != SG_AUTH_OK)
			fprintf(stderr, "%s: result %d after %d rounds\n", mechs[i], res,
			        rounds);
		ASSERT_EQ(res, SG_AUTH_OK);
		ASSERT_GE(rounds, 2); /* challenge, then the success data */
		res = client_auth(c, mechs[i], "wrong", &rounds);
		ASSERT_EQ(res, SG_AUTH_FAIL);
	}
	/* an answer other than empty to the success data is a protocol error */
	struct t_res r;
	sasl_conn_t *cc = NULL;
	static const sasl_callback_t cbs[] = {
	    {SASL_CB_AUTHNAME, CL_CB(cl_simple), NULL},
	    {SASL_CB_USER, CL_CB(cl_simple), NULL},
	    {SASL_CB_PASS, CL_CB(cl_secret), NULL},
	    {SASL_CB_LIST_END, NULL, NULL}};
	const char *out = NULL, *chosen = NULL;
	unsigned outlen = 0;
	cl_pass = PASS;
	ASSERT_EQ(sasl_client_new("smtp", "mx.test", NULL, NULL, cbs, 0, &cc),
	          SASL_OK);
	sasl_client_start(cc, "SCRAM-SHA-256", NULL, &out, &outlen, &chosen);
	sg_auth *a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "SCRAM-SHA-256", out, (int)outlen, &r),
	          SG_AUTH_CONTINUE);
	sasl_client_step(cc, r.chal, r.len, NULL, &out, &outlen);
	ASSERT_EQ(t_step(&loop, a, out, outlen, &r), SG_AUTH_CONTINUE);
	ASSERT_NULL(sg_auth_user(a)); /* not before the final empty line */
	ASSERT_EQ(t_step(&loop, a, "x", 1, &r), SG_AUTH_BADPROT);
	ASSERT_NULL(sg_auth_user(a));
	sg_auth_free(a);
	sasl_dispose(&cc);
}

static bool has_word(const char *list, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = list; (p = strstr(p, w)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

static void test_mechs(sg_config *c)
{
	struct t_res r;
	static const char ok[] = "\0" USER "\0" PASS;

	/* before TLS: no plaintext mechanism is offered, nor accepted */
	sg_auth *a = new_auth(c, false);
	const char *m = sg_auth_mechs(a);
	fprintf(stderr, "mechanisms before TLS: \"%s\"\n", m);
	ASSERT(!has_word(m, "PLAIN"));
	ASSERT(!has_word(m, "LOGIN"));
	ASSERT(has_word(m, "CRAM-MD5"));
	ASSERT(!has_word(m, "ANONYMOUS"));
	ASSERT(!has_word(m, "EXTERNAL"));
	ASSERT(!sg_auth_mech_offered(a, "PLAIN"));
	ASSERT_EQ(t_start(&loop, a, "PLAIN", ok, sizeof ok - 1, &r),
	          SG_AUTH_NOMECH);
	ASSERT_NULL(sg_auth_user(a));

	/* after TLS: PLAIN and LOGIN appear */
	sg_auth_set_tls(a, 256);
	m = sg_auth_mechs(a);
	fprintf(stderr, "mechanisms after TLS: \"%s\"\n", m);
	ASSERT(has_word(m, "PLAIN"));
	ASSERT(has_word(m, "LOGIN"));
	ASSERT(has_word(m, "CRAM-MD5"));
	ASSERT(!has_word(m, "ANONYMOUS"));
	ASSERT(!has_word(m, "NTLM")); /* installed, but not in the default list */
	ASSERT(sg_auth_mech_offered(a, "PLAIN"));
	ASSERT(!sg_auth_mech_offered(a, "PLAI"));
	ASSERT_EQ(t_start(&loop, a, "PLAIN", ok, sizeof ok - 1, &r), SG_AUTH_OK);
	sg_auth_free(a);

	/* unknown and malformed mechanism names never reach Cyrus */
	a = new_auth(c, true);
	ASSERT_EQ(t_start(&loop, a, "NOSUCH", NULL, -1, &r), SG_AUTH_NOMECH);
	ASSERT_EQ(t_start(&loop, a, "PLAIN%n%n", NULL, -1, &r), SG_AUTH_NOMECH);
	ASSERT_EQ(t_start(&loop, a, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", NULL, -1, &r),
	          SG_AUTH_NOMECH);
	ASSERT_EQ(t_start(&loop, a, "ANONYMOUS", "x", 1, &r), SG_AUTH_NOMECH);
	/* lower case is fine: RFC 4954 names are case-insensitive */
	ASSERT_EQ(t_start(&loop, a, "plain", ok, sizeof ok - 1, &r), SG_AUTH_OK);
	sg_auth_free(a);
}

static void test_plaintext_listener(sg_config *c)
{
	/* require_tls_for_auth = no: PLAIN before TLS (the admin's choice) */
	sg_auth_peer peer = {.sid = "T2", .plaintext_ok = true};
	sg_auth *a = sg_auth_new(c, &peer);
	ASSERT(has_word(sg_auth_mechs(a), "PLAIN"));
	ASSERT(has_word(sg_auth_mechs(a), "LOGIN"));
	sg_auth_free(a);
}

/* sg_auth_free while the call runs: no callback, no leak (ASan build). */
static void test_free_in_flight(sg_config *c)
{
	struct t_res r;
	static const char ok[] = "\0" USER "\0" PASS;
	memset(&r, 0, sizeof r);
	sg_auth *a = new_auth(c, true);
	ASSERT_EQ(
	    sg_auth_start(a, &loop, "PLAIN", ok, sizeof ok - 1, true, t_on_res, &r),
	    0);
	/* a second call while one is in flight is refused */
	ASSERT_EQ(sg_auth_step(a, &loop, "x", 1, t_on_res, &r), -1);
	ASSERT_EQ(
	    sg_auth_start(a, &loop, "PLAIN", ok, sizeof ok - 1, true, t_on_res, &r),
	    -1);
	sg_auth_free(a);
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT_EQ(r.calls, 0);
}

/* The caller frees the context from inside its callback (what a session
 * does once authenticated): freed after the callback returns, never while
 * the completion still runs (ASan would report the use). */
struct free_in_cb {
	sg_auth *a;
	int calls, res;
};

static void on_res_free(void *arg, int res, const char *out, unsigned outlen)
{
	struct free_in_cb *f = arg;
	f->calls++;
	f->res = res;
	sg_auth_free(f->a);
	f->a = NULL;
}

static void test_free_in_callback(sg_config *c)
{
	static const char ok[] = "\0" USER "\0" PASS;
	static const char bad[] = "\0" USER "\0wrong";
	const char *resp[] = {ok, bad};
	size_t len[] = {sizeof ok - 1, sizeof bad - 1};
	for (int i = 0; i < 2; i++) {
		struct free_in_cb f = {0};
		f.a = new_auth(c, true);
		ASSERT_EQ(sg_auth_start(f.a, &loop, "PLAIN", resp[i], len[i], true,
		                        on_res_free, &f),
		          0);
		uv_run(&loop, UV_RUN_DEFAULT);
		ASSERT_EQ(f.calls, 1, "case %d", i);
		ASSERT_EQ(f.res, i == 0 ? SG_AUTH_OK : SG_AUTH_FAIL, "case %d", i);
		ASSERT_NULL(f.a);
	}
}

/* A burst of sessions authenticating at once, more than [sasl] threads:
 * queued on the pool and all served (the backend makes progress). */
static void test_burst(sg_config *c)
{
	enum { N = 40 }; /* 32 clients at once, as in the benchmark, and more */
	static const char ok[] = "\0" USER "\0" PASS;
	struct t_res r[N];
	sg_auth *a[N];
	memset(r, 0, sizeof r);
	for (int i = 0; i < N; i++) {
		a[i] = new_auth(c, true);
		ASSERT_EQ(sg_auth_start(a[i], &loop, "PLAIN", ok, sizeof ok - 1, true,
		                        t_on_res, &r[i]),
		          0);
	}
	/* two sessions end while their calls still wait in line (more than
	 * 2 x [sasl] threads were started): no callback, nothing leaks */
	sg_auth_free(a[N - 1]);
	sg_auth_free(a[N - 2]);
	uv_run(&loop, UV_RUN_DEFAULT);
	int good = 0;
	for (int i = 0; i < N - 2; i++) {
		good += r[i].calls == 1 && r[i].result == SG_AUTH_OK;
		sg_auth_free(a[i]);
	}
	ASSERT_EQ(good, N - 2);
	ASSERT_EQ(r[N - 1].calls + r[N - 2].calls, 0);
}

static void test_reconfig(sg_config *c)
{
	/* a reload with another mech_list: new sessions see it, a session made
	 * before keeps the configuration it started with */
	sg_errors errs = {0};
	sg_auth *old = new_auth(c, true);
	ASSERT(has_word(sg_auth_mechs(old), "CRAM-MD5"));
	sg_config *c2 = init_with("mech_list = PLAIN", &errs);
	ASSERT_EQ(sg_sasl_reconfig(c2, &errs), 0);
	ASSERT_EQ(errs.n, 0);
	sg_auth *a = new_auth(c2, true);
	ASSERT_STR_EQ(sg_auth_mechs(a), "PLAIN");
	sg_auth *old2 = new_auth(c, true);
	ASSERT(has_word(sg_auth_mechs(old2), "CRAM-MD5"));
	ASSERT(has_word(sg_auth_mechs(old), "CRAM-MD5"));
	sg_auth_free(a);
	sg_auth_free(old);
	sg_auth_free(old2);

	/* a broken one is refused with FILE:LINE and changes nothing */
	sg_config *c3 = init_with("mech_list = PLAIN NOSUCHMECH", &errs);
	ASSERT_EQ(sg_sasl_reconfig(c3, &errs), -1);
	if (ASSERT_EQ(errs.n, 1)) {
		ASSERT(strstr(errs.msg[0], "NOSUCHMECH"));
		ASSERT(strstr(errs.msg[0], ".conf:"));
	}
	sg_errors_free(&errs);
	ASSERT_EQ(sg_sasl_reconfig(c, &errs), 0);
	sg_config_unref(c2);
	sg_config_unref(c3);
	sg_errors_free(&errs);
}

static bool errs_have(const sg_errors *e, const char *needle)
{
	for (size_t i = 0; i < e->n; i++)
		if (strstr(e->msg[i], needle))
			return true;
	return false;
}

/* What `saslgate -t` reports, each with FILE:LINE. */
static void test_checks(void)
{
	sg_errors errs = {0};
	sg_config *c = t_config("pwcheck_method = pam\n", &errs);
	ASSERT_NOT_NULL(c);
	ASSERT_EQ(sg_sasl_init(c, &errs), -1);
	ASSERT(errs_have(&errs, "pwcheck_method pam is not"));
	ASSERT(errs_have(&errs, ".conf:9: ")); /* [sasl] is line 8 */
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	c = t_config("pwcheck_method = saslauthd\n"
	             "saslauthd_path = /nonexistent/mux\n"
	             "mech_list = PLAIN LOGIN CRAM-MD5 FOOBAR\n",
	             &errs);
	ASSERT_NOT_NULL(c);
	ASSERT_EQ(sg_sasl_init(c, &errs), -1);
	ASSERT(errs_have(&errs, ".conf:11: mech_list names FOOBAR"));
	ASSERT(errs_have(&errs, ".conf:10: saslauthd socket /nonexistent/mux does "
	                        "not exist"));
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	/* a socket path that exists but nobody listens on */
	char sock[600];
	snprintf(sock, sizeof sock, "%s/dead.sock", t_dir);
	t_write(sock, ""); /* a plain file: connect fails */
	char body[1024];
	snprintf(body, sizeof body,
	         "pwcheck_method = saslauthd\nsaslauthd_path = %s\n", sock);
	c = t_config(body, &errs);
	ASSERT_NOT_NULL(c);
	ASSERT_EQ(sg_sasl_init(c, &errs), 0); /* not fatal: env problem */
	ASSERT(errs_have(&errs, ".conf:10: saslauthd socket"));
	/* saslauthd only: CRAM-MD5 is not offered even if listed */
	sg_auth *a = new_auth(c, true);
	ASSERT_STR_EQ(sg_auth_mechs(a), "PLAIN LOGIN");
	sg_auth_free(a);
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	c = t_config("pwcheck_method = auxprop\nauxprop_plugin = sasldb\n"
	             "sasldb_path = /nonexistent/sasldb2\n",
	             &errs);
	ASSERT_NOT_NULL(c);
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	ASSERT(errs_have(&errs, ".conf:11: sasldb /nonexistent/sasldb2 does not "
	                        "exist"));
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	c = t_config("pwcheck_method = auxprop\nauxprop_plugin = ldapdbx\n", &errs);
	ASSERT_NOT_NULL(c);
	ASSERT_EQ(sg_sasl_init(c, &errs), -1);
	ASSERT(
	    errs_have(&errs, ".conf:10: auxprop_plugin ldapdbx is not installed"));
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	/* sasldb gone at AUTH time: the backend cannot answer (454), it is not
	 * a bad password (535) */
	snprintf(body, sizeof body,
	         "realm = " REALM "\npwcheck_method = auxprop\n"
	         "auxprop_plugin = sasldb\nsasldb_path = %s/gone\n", t_dir);
	c = t_config(body, &errs);
	sg_sasl_init(c, &errs);
	sg_errors_free(&errs);
	a = new_auth(c, true);
	struct t_res r;
	static const char ok[] = "\0" USER "\0" PASS;
	int res = t_start(&loop, a, "PLAIN", ok, sizeof ok - 1, &r);
	ASSERT_EQ(res, SG_AUTH_TEMPFAIL);
	sg_auth_free(a);
	sg_sasl_done();
	sg_config_unref(c);
}

int main(void)
{
	sg_errors errs = {0};

	alarm(120);
	sg_log_level = getenv("SG_DEBUG") ? SG_LOG_DEBUG : SG_LOG_WARN;
	t_mkdir();
	snprintf(db, sizeof db, "%s/sasldb2", t_dir);
	t_saslpasswd(db, REALM, USER, PASS);
	t_saslpasswd(db, REALM, "bob", "bobs password");

	sg_config *c = init_with("", &errs);
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	sg_errors_print(&errs, stderr);
	ASSERT_EQ(errs.n, 0);
	/* 2 x [sasl] threads (4) running Cyrus calls per worker (1), 2 more
	 * for the rest of saslgate */
	ASSERT_STR_EQ(getenv("UV_THREADPOOL_SIZE"), "10");
	uv_loop_init(&loop);

	test_plain(c);
	test_authz(c);
	test_login(c);
	test_cram(c);
	test_multistep(c);
	test_mechs(c);
	test_plaintext_listener(c);
	test_free_in_flight(c);
	test_free_in_callback(c);
	test_burst(c);
	test_reconfig(c);
	sg_sasl_done();
	sg_config_unref(c);
	sg_errors_free(&errs);

	test_checks();

	ASSERT_EQ(uv_loop_close(&loop), 0); /* nothing left behind */
	return CHECK_SUMMARY();
}
