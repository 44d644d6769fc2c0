/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_sasl_util.c: the parts of sasl/ that do not need Cyrus:
 * strict base64 (RFC 4648), the mechanism-name check (RFC 4954,
 * CVE-2019-19906 class), the per-address failure limiter and the
 * sender_login_map rules. */
#include "test_sasl_common.h"
#include "../../sasl/sasl_int.h"

#include <time.h>

static void test_b64(void)
{
	char out[64];
	unsigned n;

	/* RFC 4648 section 10 test vectors, both ways */
	static const char *const vec[][2] = {
	    {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
	    {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
	    {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
		ASSERT_EQ(
		    sg_b64_encode(vec[i][0], strlen(vec[i][0]), out, sizeof out, &n),
		    0);
		ASSERT_STR_EQ(out, vec[i][1]);
		ASSERT_EQ(
		    sg_b64_decode(vec[i][1], strlen(vec[i][1]), out, sizeof out, &n),
		    0);
		ASSERT_EQ(n, strlen(vec[i][0]));
		ASSERT_MEM_EQ(out, vec[i][0], n);
	}
	/* binary with NULs: PLAIN's "\0alice\0secret" */
	static const char plain[] = "\0alice\0secret";
	ASSERT_EQ(sg_b64_encode(plain, sizeof plain - 1, out, sizeof out, &n), 0);
	ASSERT_STR_EQ(out, "AGFsaWNlAHNlY3JldA==");
	ASSERT_EQ(sg_b64_decode(out, n, out, sizeof out, &n), 0);
	ASSERT_EQ(n, sizeof plain - 1);
	ASSERT_MEM_EQ(out, plain, n);

	/* strictness: each of these is a 501 5.5.2 for the client */
	static const char *const bad[] = {
	    "Zg",        /* no padding */
	    "Zg=",       /* short padding */
	    "Zm9v\r\n",  /* line break */
	    "Zm 9v",     /* blank inside */
	    " Zm9v",     /* leading blank (length 5) */
	    "Zm9v Zm9v", /* blank between groups */
	    "Zm=v",      /* '=' inside a group */
	    "Zg==Zm9v",  /* padding not at the end */
	    "Zh==",      /* non-zero pad bits: not canonical (RFC 4648 3.5) */
	    "Zm9=",      /* same with one '=' */
	    "Zm9v*A==",  /* '*' */
	    "Zm9v-_==",  /* base64url alphabet */
	    "====",      /* padding only */
	    "A===",      /* three '=' */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int r = sg_b64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n);
		if (r != -1)
			fprintf(stderr, "accepted bad base64 \"%s\"\n", bad[i]);
		ASSERT_EQ(r, -1);
	}
	/* a NUL byte inside the input */
	ASSERT_EQ(sg_b64_decode("Zm\0v", 4, out, sizeof out, &n), -1);
	/* output bounds */
	ASSERT_EQ(sg_b64_decode("Zm9vYmFy", 8, out, 5, &n), -1);
	ASSERT_EQ(sg_b64_decode("Zm9vYmFy", 8, out, 6, &n), 0);
	ASSERT_EQ(sg_b64_encode("foobar", 6, out, 8, &n), -1); /* no NUL room */
	ASSERT_EQ(sg_b64_encode("foobar", 6, out, 9, &n), 0);
}

/* Properties over many random inputs (fixed seed, bounded): any byte string
 * survives encode+decode, and whatever decode accepts is canonical, i.e.
 * encodes back to exactly the input (one spelling per credential). */
static void test_b64_properties(void)
{
	static const char alpha[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=== \r\n-_*";
	char raw[64], enc[128], dec[128], back[128];
	unsigned n, m, k;
	int bad_roundtrip = 0, not_canonical = 0, accepted = 0;

	srand(4954);
	for (int i = 0; i < 20000; i++) {
		size_t len = (size_t)(rand() % 48);
		for (size_t j = 0; j < len; j++)
			raw[j] = (char)(rand() & 0xff);
		if (sg_b64_encode(raw, len, enc, sizeof enc, &n) != 0 ||
		    sg_b64_decode(enc, n, dec, sizeof dec, &m) != 0 || m != len ||
		    memcmp(dec, raw, len) != 0)
			bad_roundtrip++;

		/* random text from the alphabet and its near misses */
		size_t tl = (size_t)(rand() % 13);
		for (size_t j = 0; j < tl; j++)
			enc[j] = alpha[rand() % (int)(sizeof alpha - 1)];
		if (sg_b64_decode(enc, tl, dec, sizeof dec, &m) == 0) {
			accepted += tl > 0;
			if (sg_b64_encode(dec, m, back, sizeof back, &k) != 0 || k != tl ||
			    memcmp(back, enc, tl) != 0)
				not_canonical++;
		}
	}
	ASSERT_EQ(bad_roundtrip, 0);
	ASSERT_EQ(not_canonical, 0);
	ASSERT_GT(accepted, 100); /* the generator reaches valid, non-empty input */
}

static void test_mech_valid(void)
{
	char m[64];
	static const char *const good[] = {"PLAIN", "login", "Cram-Md5",
	                                   "SCRAM-SHA-256", "X_Y", "A",
	                                   "ABCDEFGHIJKLMNOPQRST"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		snprintf(m, sizeof m, "%s", good[i]);
		ASSERT(sg_auth_mech_valid(m));
	}
	snprintf(m, sizeof m, "cram-md5");
	ASSERT(sg_auth_mech_valid(m));
	ASSERT_STR_EQ(m, "CRAM-MD5"); /* uppercased in place */

	static const char *const bad[] = {"", "ABCDEFGHIJKLMNOPQRSTU" /* 21 */,
	                                  "PLAIN LOGIN", "PL/AIN", "PLAIN\r",
	                                  "%n%n%n", "PLAIN=", "ÄPLAIN"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(m, sizeof m, "%s", bad[i]);
		ASSERT(!sg_auth_mech_valid(m));
	}
	ASSERT(!sg_auth_mech_valid(NULL));
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void test_ipfail(void)
{
	sg_errors errs = {0};
	sg_config *c = t_config("ip_failure_limit = 3\nip_failure_window = 300ms",
	                        &errs);
	ASSERT_NOT_NULL(c);
	if (!c) {
		sg_errors_print(&errs, stderr);
		return;
	}
	const char *ip = "192.0.2.7", *other = "2001:db8::7";
	ASSERT(!sg_ipfail_over(c, ip));
	sg_ipfail_record(c, ip);
	sg_ipfail_record(c, ip);
	ASSERT(!sg_ipfail_over(c, ip)); /* 2 of 3 */
	sg_ipfail_record(c, ip);
	ASSERT(sg_ipfail_over(c, ip));     /* 3 of 3 */
	ASSERT(!sg_ipfail_over(c, other)); /* per address */
	sg_ipfail_record(c, other);
	ASSERT(!sg_ipfail_over(c, other));
	/* IPv6 counts per /64; IPv4-mapped as IPv4 */
	sg_ipfail_record(c, "2001:db8::8");
	sg_ipfail_record(c, "2001:db8:0:0:ffff::1");
	ASSERT(sg_ipfail_over(c, "2001:db8::abcd"));   /* 3 in 2001:db8::/64 */
	ASSERT(!sg_ipfail_over(c, "2001:db8:0:1::7")); /* the next /64 */
	sg_ipfail_record(c, "::ffff:198.51.100.1");
	sg_ipfail_record(c, "198.51.100.1");
	sg_ipfail_record(c, "::ffff:198.51.100.1");
	ASSERT(sg_ipfail_over(c, "198.51.100.1"));
	ASSERT(!sg_ipfail_over(c, "198.51.100.2"));
	sleep_ms(350); /* the window passes */
	ASSERT(!sg_ipfail_over(c, ip));
	sg_ipfail_record(c, ip); /* counts from one again */
	ASSERT(!sg_ipfail_over(c, ip));

	/* bounded memory: 70000 addresses (more than the table holds) cost no
	 * failure and the newest are remembered */
	char buf[64];
	for (int i = 0; i < 70000; i++) {
		snprintf(buf, sizeof buf, "10.%d.%d.%d", i >> 16, (i >> 8) & 255,
		         i & 255);
		sg_ipfail_record(c, buf);
		sg_ipfail_record(c, buf);
		sg_ipfail_record(c, buf);
	}
	ASSERT(sg_ipfail_over(c, "10.1.17.111")); /* one of the last ones */
	ASSERT(!sg_ipfail_over(c, "10.0.0.0"));   /* the oldest: forgotten */
	sg_config_unref(c);

	/* 0 = off */
	c = t_config("ip_failure_limit = 0", &errs);
	ASSERT_NOT_NULL(c);
	if (c) {
		for (int i = 0; i < 20; i++)
			sg_ipfail_record(c, "192.0.2.8");
		ASSERT(!sg_ipfail_over(c, "192.0.2.8"));
		sg_config_unref(c);
	}
	sg_errors_free(&errs);
}

static void test_sender_map(void)
{
	char map[512], body[1024];
	sg_errors errs = {0};

	snprintf(map, sizeof map, "%s/senders", t_dir);
	t_write(map, "# who may send as whom\n"
	             "*            =login\n"
	             "alice        alice@example.org, info@Example.ORG  # shared\n"
	             "alice        sales@example.org\n"
	             "printer      @scan.example.org\n"
	             "bob@example.com   @example.net\n");
	snprintf(body, sizeof body, "sender_login_map = %s", map);
	sg_config *c = t_config(body, &errs);
	ASSERT_NOT_NULL(c);
	if (!c) {
		sg_errors_print(&errs, stderr);
		return;
	}
	ASSERT_EQ(sg_sender_map_load(c, &errs, true), 0);

	ASSERT(sg_sender_allowed(c, "alice", "<alice@example.org>"));
	ASSERT(sg_sender_allowed(c, "alice", "alice@example.org"));
	ASSERT(sg_sender_allowed(c, "alice", "<alice@EXAMPLE.org>"));  /* domain */
	ASSERT(!sg_sender_allowed(c, "alice", "<Alice@example.org>")); /* local */
	ASSERT(sg_sender_allowed(c, "alice", "<info@example.org>"));
	ASSERT(sg_sender_allowed(c, "alice", "<sales@example.org>")); /* 2nd line */
	ASSERT(!sg_sender_allowed(c, "alice", "<bob@example.org>"));
	ASSERT(sg_sender_allowed(c, "alice", "<alice@other.test>")); /* =login */
	ASSERT(sg_sender_allowed(c, "alice", "<>"));                 /* bounce */
	ASSERT(sg_sender_allowed(c, "alice", ""));
	ASSERT(sg_sender_allowed(c, "alice", "<@relay.test:alice@example.org>"));
	ASSERT(sg_sender_allowed(c, "printer", "<copier@scan.example.org>"));
	ASSERT(sg_sender_allowed(c, "printer", "<x@SCAN.example.org>"));
	ASSERT(!sg_sender_allowed(c, "printer", "<x@sub.scan.example.org>"));
	ASSERT(!sg_sender_allowed(c, "printer", "<alice@example.org>"));
	/* a login with an @: =login means exactly that address */
	ASSERT(sg_sender_allowed(c, "bob@example.com", "<bob@example.com>"));
	ASSERT(sg_sender_allowed(c, "bob@example.com", "<bob@EXAMPLE.COM>"));
	ASSERT(!sg_sender_allowed(c, "bob@example.com", "<bob@example.org>"));
	ASSERT(sg_sender_allowed(c, "bob@example.com", "<anyone@example.net>"));
	/* a login with no line of its own: only the "*" rule */
	ASSERT(sg_sender_allowed(c, "carol", "<carol@example.org>"));
	ASSERT(!sg_sender_allowed(c, "carol", "<alice@example.org>"));
	/* no login (require_auth = no): the map does not apply */
	ASSERT(sg_sender_allowed(c, NULL, "<alice@example.org>"));

	/* reload: the same file name read again */
	t_write(map, "alice alice@example.org\n");
	ASSERT_EQ(sg_sender_map_load(c, &errs, true), 0);
	ASSERT(!sg_sender_allowed(c, "alice", "<info@example.org>"));
	ASSERT(!sg_sender_allowed(c, "carol", "<carol@example.org>")); /* no '*' */
	ASSERT_EQ(errs.n, 0);
	sg_config_unref(c);

	/* errors name MAPFILE:LINE, and a broken map is not installed */
	t_write(map, "alice alice@example.org\n\nbob\ncarol carol\n");
	c = t_config(body, &errs);
	ASSERT_NOT_NULL(c);
	if (c) {
		ASSERT_EQ(sg_sender_map_load(c, &errs, true), -1);
		ASSERT_EQ(errs.n, 2);
		char want[600];
		snprintf(want, sizeof want, "%s:3: ", map);
		if (ASSERT_GE(errs.n, 1))
			ASSERT(!strncmp(errs.msg[0], want, strlen(want)), "%s",
			       errs.msg[0]);
		snprintf(want, sizeof want, "%s:4: ", map);
		if (ASSERT_GE(errs.n, 2))
			ASSERT(!strncmp(errs.msg[1], want, strlen(want)), "%s",
			       errs.msg[1]);
		/* the good map loaded before stays in force */
		ASSERT(sg_sender_allowed(c, "alice", "<alice@example.org>"));
		sg_config_unref(c);
	}
	sg_errors_free(&errs);

	/* no map: everything allowed */
	c = t_config("", &errs);
	ASSERT_NOT_NULL(c);
	if (c) {
		ASSERT(sg_sender_allowed(c, "alice", "<anyone@anywhere.test>"));
		sg_config_unref(c);
	}
	sg_errors_free(&errs);
}

int main(void)
{
	alarm(60);
	sg_log_level = SG_LOG_WARN;
	t_mkdir();
	test_b64();
	test_b64_properties();
	test_mech_valid();
	test_ipfail();
	test_sender_map();
	return CHECK_SUMMARY();
}
