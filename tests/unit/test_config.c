/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_config.c: the configuration loader (common/config.c).
 *
 * Writes small configuration trees into a temporary directory and checks
 * what sg_config_load makes of them: every key of the table parsed into its
 * field, the defaults, every kind of error with its "FILE:LINE: message",
 * include order and overrides (a later value wins; the first `server` of a
 * later file replaces the list, further ones append), durations and sizes
 * with every unit, the unknown [sasl] keys kept in order for Cyrus, and
 * proxy_trusted_networks (parsing, matching, and its FILE:LINE errors). */
#include "../../common/config.h"
#include "../../common/log.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_DIR_MAX 64 /* "/tmp/sg-test-config-XXXXXX" */
#define TEST_PATH_MAX 512
#define TEST_TEXT_MAX 8192

static char tmpdir[TEST_DIR_MAX];

/* tmpdir/rel, written with the given text (directories created). */
static const char *put(const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const char *put(const char *rel, const char *fmt, ...)
{
	static char paths[64][TEST_PATH_MAX];
	static int next;
	char *path = paths[next++ % 64];
	snprintf(path, TEST_PATH_MAX, "%s/%s", tmpdir, rel);
	for (char *p = path + strlen(tmpdir) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	char text[TEST_TEXT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	return path;
}

static void rm_rf(const char *dir)
{
	char cmd[TEST_PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* A fresh tree per test case. */
static void fresh(void)
{
	if (tmpdir[0])
		rm_rf(tmpdir);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/sg-test-config-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(2);
	}
}

/* What every valid file needs: one listener and one upstream server. */
#define MINIMAL                                                                \
	"[listener plain]\n"                                                       \
	"address = 127.0.0.1:2525\n"                                               \
	"tls = none\n"                                                             \
	"[upstream]\n"                                                             \
	"server = 127.0.0.1:25\n"
#define MINIMAL_LINES 5

static sg_config *load_ok(const char *path)
{
	sg_errors e = {0};
	sg_config *c = sg_config_load(path, &e);
	ASSERT_NOT_NULL(c, "%s: %s", path, e.n ? e.msg[0] : "-");
	ASSERT_EQ(e.n, 0, "%s: %s", path, e.n ? e.msg[0] : "-");
	sg_errors_free(&e);
	return c;
}

/* Loading fails and one of the errors is exactly "FILE:LINE: ..." and
 * contains `words`.  line 0: "FILE: ...".  A failure is reported at the
 * caller's srcline; yields whether the check held. */
static int expect_error(const char *path, const char *file, int line,
                        const char *words, int srcline)
{
	sg_errors e = {0};
	sg_config *c = sg_config_load(path, &e);
	char prefix[TEST_PATH_MAX + 32];
	if (line > 0)
		snprintf(prefix, sizeof prefix, "%s:%d: ", file, line);
	else
		snprintf(prefix, sizeof prefix, "%s: ", file);
	int found = 0;
	for (size_t i = 0; i < e.n; i++)
		if (strncmp(e.msg[i], prefix, strlen(prefix)) == 0 &&
		    strstr(e.msg[i], words))
			found = 1;
	int ok =
	    check_at(c == NULL && found, __FILE__, srcline,
	             "expected an error \"%s...%s\" (config %s), got %zu:", prefix,
	             words, c ? "loaded" : "refused", e.n);
	if (!ok)
		for (size_t i = 0; i < e.n; i++)
			fprintf(stderr, "    %s\n", e.msg[i]);
	if (c)
		sg_config_unref(c);
	sg_errors_free(&e);
	return ok;
}
#define EXPECT_ERROR(path, file, line, words)                                  \
	expect_error((path), (file), (line), (words), __LINE__)

/* ------------------------------------------------------------ parsers */

static void test_durations(void)
{
	static const struct {
		const char *s;
		uint64_t ms;
	} ok[] = {{"250ms", 250},       {"0ms", 0},          {"7", 7000},
	          {"0", 0},             {"7s", 7000},        {"2m", 120000},
	          {"3h", 10800000},     {" 30s", 30000},     {"1000000ms", 1000000},
	          {"5124095576030h", 5124095576030ULL * 3600000}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint64_t v = 1;
		int rc = sg_parse_duration_ms(ok[i].s, &v);
		ASSERT_EQ(rc, 0, "duration \"%s\"", ok[i].s);
		ASSERT_EQ(v, ok[i].ms, "duration \"%s\"", ok[i].s);
	}
	static const char *const bad[] = {
	    "",    "s",    "ms",     "-1s",   "1.5s", "5 s",  "5S",  "5M",
	    "5d",  "1sec", "5 ms",   "1h30m", "abc",  "+5s",  "5s ", "0x10",
	    "18446744073709551615h", "99999999999999999999", "5124095576031h"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint64_t v = 42;
		ASSERT_LT(sg_parse_duration_ms(bad[i], &v), 0, "duration \"%s\"",
		          bad[i]);
		ASSERT_EQ(v, 42, "duration \"%s\"", bad[i]);
	}
}

static void test_sizes(void)
{
	static const struct {
		const char *s;
		uint64_t n;
	} ok[] = {{"0", 0},
	          {"4096", 4096},
	          {"64k", 65536},
	          {"64K", 65536},
	          {"50M", 50ULL << 20},
	          {"50m", 50ULL << 20},
	          {"1G", 1ULL << 30},
	          {"3g", 3ULL << 30},
	          {"17179869183G", 17179869183ULL << 30}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint64_t v = 1;
		int rc = sg_parse_size(ok[i].s, &v);
		ASSERT_EQ(rc, 0, "size \"%s\"", ok[i].s);
		ASSERT_EQ(v, ok[i].n, "size \"%s\"", ok[i].s);
	}
	static const char *const bad[] = {"",    "k",     "1T",   "1kb", "1KB",
	                                  "-1",  "1.5M",  "1 M",  "M1",  "1MM",
	                                  "17179869184G", "18446744073709551616"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint64_t v = 42;
		ASSERT_LT(sg_parse_size(bad[i], &v), 0, "size \"%s\"", bad[i]);
		ASSERT_EQ(v, 42, "size \"%s\"", bad[i]);
	}
}

static void test_bools(void)
{
	static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True"};
	static const char *const no[] = {"no", "false", "off", "0", "NO", "Off"};
	static const char *const bad[] = {"", "y", "n", "2", "yes please", "enable"};
	for (size_t i = 0; i < 6; i++) {
		bool b = false;
		ASSERT_EQ(sg_parse_bool(yes[i], &b), 0, "bool \"%s\"", yes[i]);
		ASSERT(b, "bool \"%s\"", yes[i]);
		b = true;
		ASSERT_EQ(sg_parse_bool(no[i], &b), 0, "bool \"%s\"", no[i]);
		ASSERT(!b, "bool \"%s\"", no[i]);
		b = true;
		ASSERT_LT(sg_parse_bool(bad[i], &b), 0, "bool \"%s\" accepted", bad[i]);
		ASSERT(b, "bool \"%s\" accepted", bad[i]);
	}
}

static void test_addresses(void)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	const char *why = NULL;
	char buf[INET6_ADDRSTRLEN];

	if (ASSERT_EQ(sg_parse_sockaddr("0.0.0.0:587", &ss, &len, &why), 0)) {
		ASSERT_EQ(ss.ss_family, AF_INET);
		ASSERT_EQ(len, sizeof(struct sockaddr_in));
		ASSERT_EQ(ntohs(((struct sockaddr_in *)&ss)->sin_port), 587);
	}
	if (ASSERT_EQ(sg_parse_sockaddr("[::1]:465", &ss, &len, &why), 0)) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		ASSERT_EQ(ss.ss_family, AF_INET6);
		ASSERT_EQ(ntohs(s6->sin6_port), 465);
		if (ASSERT_NOT_NULL(
		        inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof buf)))
			ASSERT_STR_EQ(buf, "::1");
	}
	ASSERT_EQ(sg_parse_sockaddr("127.0.0.1:65535", &ss, &len, &why), 0);

	static const struct {
		const char *s, *why;
	} bad[] = {{"127.0.0.1:0", "out of range"},
	           {"127.0.0.1:65536", "out of range"},
	           {"127.0.0.1:99999999999999999999", "not a number"},
	           {"127.0.0.1:x", "not a number"},
	           {"127.0.0.1:25x", "not a number"},
	           {"127.0.0.1", "missing :port"},
	           {"127.0.0.1:", "missing port"},
	           {":587", "missing host"},
	           {"::1:25", "brackets"},
	           {"[::1]25", "junk"},
	           {"[::1:25", "]"},
	           {"localhost:25", "not an IP address"},
	           {"[]:25", "missing host"}};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = NULL;
		int rc = sg_parse_sockaddr(bad[i].s, &ss, &len, &why);
		ASSERT_LT(rc, 0, "\"%s\"", bad[i].s);
		if (ASSERT_NOT_NULL(why, "\"%s\"", bad[i].s))
			ASSERT(strstr(why, bad[i].why), "\"%s\": why \"%s\"", bad[i].s,
			       why);
	}

	char *host = NULL, *port = NULL;
	ASSERT_EQ(sg_parse_hostport("mx.example.org", "25", &host, &port, &why), 0,
	          "default port");
	ASSERT_STR_EQ(host, "mx.example.org", "default port");
	ASSERT_STR_EQ(port, "25", "default port");
	free(host);
	free(port);
	ASSERT_EQ(sg_parse_hostport("[2001:db8::5]", "25", &host, &port, &why), 0,
	          "v6 default port");
	ASSERT_STR_EQ(host, "2001:db8::5", "v6 default port");
	ASSERT_STR_EQ(port, "25", "v6 default port");
	free(host);
	free(port);
	ASSERT_EQ(sg_parse_hostport("[2001:db8::5]:2525", "25", &host, &port, &why),
	          0, "v6 with port");
	ASSERT_STR_EQ(host, "2001:db8::5", "v6 with port");
	ASSERT_STR_EQ(port, "2525", "v6 with port");
	free(host);
	free(port);
	ASSERT_EQ(sg_parse_hostport("mx:26", NULL, &host, &port, &why), 0,
	          "host:port");
	ASSERT_STR_EQ(host, "mx", "host:port");
	ASSERT_STR_EQ(port, "26", "host:port");
	free(host);
	free(port);
	ASSERT_LT(sg_parse_hostport("mx", NULL, &host, &port, &why), 0,
	          "no port and no default accepted");
}

/* The peer addr (with any port) against the list text. */
static bool trusted(const char *list, const char *addr)
{
	sg_net *nets = NULL;
	size_t n = 0;
	char bad[64];
	const char *why = NULL;
	if (sg_parse_netlist(list, &nets, &n, bad, sizeof bad, &why) < 0) {
		ASSERT(0, "list \"%s\" refused at \"%s\": %s", list, bad, why);
		return false;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(40000);
	} else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(40000);
	}
	bool r = sg_net_match(nets, n, (struct sockaddr *)&ss);
	free(nets);
	return r;
}

static void test_trusted_networks(void)
{
	static const struct {
		const char *list, *addr;
		bool in;
	} cases[] = {
	    {"10.0.0.0/8", "10.255.1.2", true},
	    {"10.0.0.0/8", "11.0.0.1", false},
	    {"192.0.2.1", "192.0.2.1", true},
	    {"192.0.2.1", "192.0.2.2", false},
	    {"192.0.2.1/32", "192.0.2.1", true},
	    {"192.0.2.128/25", "192.0.2.200", true},
	    {"192.0.2.128/25", "192.0.2.127", false},
	    {"172.16.0.0/12", "172.31.255.255", true},
	    {"172.16.0.0/12", "172.32.0.1", false},
	    {"0.0.0.0/0", "203.0.113.9", true},
	    {"0.0.0.0/0", "2001:db8::1", false}, /* families do not mix */
	    {"::/0", "192.0.2.1", false},
	    {"::1", "::1", true},
	    {"::1", "::2", false},
	    {"2001:db8::/32", "2001:db8:ffff::5", true},
	    {"2001:db8::/32", "2001:db9::5", false},
	    {"2001:db8::/33", "2001:db8:8000::1", false},
	    {"2001:db8::/33", "2001:db8:7fff::1", true},
	    /* a [::] listener sees IPv4 peers as IPv4-mapped addresses */
	    {"127.0.0.1", "::ffff:127.0.0.1", true},
	    {"10.0.0.0/8", "::ffff:10.9.8.7", true},
	    {"10.0.0.0/8", "::ffff:11.9.8.7", false},
	    /* and a mapped entry is the IPv4 one */
	    {"::ffff:10.0.0.0/104", "10.1.2.3", true},
	    {"::ffff:192.0.2.1", "192.0.2.1", true},
	    /* lists: blanks, tabs and commas between entries */
	    {"10.0.0.0/8 192.0.2.1 ::1 2001:db8::/32", "::1", true},
	    {"10.0.0.0/8,192.0.2.1", "192.0.2.1", true},
	    {" 10.0.0.0/8 ,\t192.0.2.1 , ", "192.0.2.1", true},
	    {"10.0.0.0/8, 192.0.2.1", "127.0.0.1", false},
	    {"", "127.0.0.1", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ASSERT_EQ(trusted(cases[i].list, cases[i].addr), cases[i].in,
		          "\"%s\" %s %s", cases[i].list,
		          cases[i].in ? "should hold" : "should not hold",
		          cases[i].addr);

	sg_net *nets = (sg_net *)1;
	size_t n = 99;
	char bad[64];
	const char *why = NULL;
	ASSERT_EQ(sg_parse_netlist(" , ", &nets, &n, bad, sizeof bad, &why), 0,
	          "an empty list");
	ASSERT_NULL(nets, "an empty list");
	ASSERT_EQ(n, 0, "an empty list");
	ASSERT_EQ(sg_parse_netlist("10.0.0.0/8,192.0.2.1", &nets, &n, bad,
	                           sizeof bad, &why),
	          0, "two entries");
	ASSERT_EQ(n, 2, "two entries");
	free(nets);

	static const struct {
		const char *list, *entry, *why;
	} bad_lists[] = {
	    {"10.0.0.0/8 haproxy.example.org", "haproxy.example.org", "not an IPv4"},
	    {"10.0.0.0/33", "10.0.0.0/33", "0-32"},
	    {"::/129", "::/129", "0-128"},
	    {"10.0.0.0/", "10.0.0.0/", "0-32"},
	    {"10.0.0.0/8x", "10.0.0.0/8x", "0-32"},
	    {"10.0.0.0/-1", "10.0.0.0/-1", "0-32"},
	    {"10.1.2.3/8", "10.1.2.3/8", "past the prefix"},
	    {"2001:db8::1/32", "2001:db8::1/32", "past the prefix"},
	    {"/8", "/8", "not an IPv4"},
	    {"10.0.0", "10.0.0", "not an IPv4"},
	    {"192.0.2.1;10.0.0.1", "192.0.2.1;10.0.0.1", "not an IPv4"},
	};
	for (size_t i = 0; i < sizeof bad_lists / sizeof bad_lists[0]; i++) {
		why = NULL;
		bad[0] = '\0';
		int rc = sg_parse_netlist(bad_lists[i].list, &nets, &n, bad, sizeof bad,
		                          &why);
		ASSERT_LT(rc, 0, "\"%s\"", bad_lists[i].list);
		ASSERT_STR_EQ(bad, bad_lists[i].entry, "\"%s\"", bad_lists[i].list);
		if (ASSERT_NOT_NULL(why, "\"%s\"", bad_lists[i].list))
			ASSERT(strstr(why, bad_lists[i].why), "\"%s\": why \"%s\"",
			       bad_lists[i].list, why);
	}

	/* In a file: a bad entry is FILE:LINE naming the entry. */
	fresh();
	const char *path = put("saslgate.conf",
	                       MINIMAL "[listener plain]\nproxy_protocol = v2\n"
	                               "proxy_trusted_networks = 10.0.0.0/8 lb1\n");
	EXPECT_ERROR(path, path, MINIMAL_LINES + 3,
	             "bad entry \"lb1\" in proxy_trusted_networks");

	/* proxy_protocol without the list: the proxy_protocol line. */
	fresh();
	path = put("saslgate.conf", MINIMAL "[listener plain]\n# behind HAProxy\n"
	                                    "proxy_protocol = any\n");
	EXPECT_ERROR(path, path, MINIMAL_LINES + 3,
	             "listener plain: proxy_protocol needs proxy_trusted_networks "
	             "(the addresses of your HAProxy)");
	fresh();
	path = put("saslgate.conf", MINIMAL "[listener plain]\nproxy_protocol = v1\n"
	                                    "proxy_trusted_networks = , \n");
	EXPECT_ERROR(path, path, MINIMAL_LINES + 2, "needs proxy_trusted_networks");

	/* the list in a drop-in, proxy_protocol in the main file: fine */
	fresh();
	put("conf.d/10-lb.conf", "[listener plain]\nproxy_trusted_networks = ::1\n");
	path = put("saslgate.conf", MINIMAL "[listener plain]\nproxy_protocol = v2\n"
	                                    "include = conf.d/*.conf\n");
	sg_config *c = load_ok(path);
	if (c) {
		if (ASSERT_EQ(c->listeners[0].ntrusted, 1, "list from the drop-in"))
			ASSERT_EQ(c->listeners[0].trusted[0].family, AF_INET6,
			          "list from the drop-in");
		sg_config_unref(c);
	}
	/* a later value replaces the list */
	fresh();
	path = put("saslgate.conf",
	           MINIMAL "[listener plain]\nproxy_protocol = v2\n"
	                   "proxy_trusted_networks = 10.0.0.0/8 10.1.0.0/16\n"
	                   "proxy_trusted_networks = 192.0.2.1\n");
	c = load_ok(path);
	if (c) {
		if (ASSERT_EQ(c->listeners[0].ntrusted, 1, "the later list wins"))
			ASSERT_EQ(c->listeners[0].trusted[0].prefix, 32,
			          "the later list wins");
		sg_config_unref(c);
	}
	/* on a listener without proxy_protocol the key is harmless */
	fresh();
	path = put("saslgate.conf",
	           MINIMAL "[listener plain]\nproxy_trusted_networks = 192.0.2.1\n");
	c = load_ok(path);
	if (c) {
		if (ASSERT_EQ(c->listeners[0].proxy_protocol, SG_PP_NO, "kept, unused"))
			ASSERT_EQ(c->listeners[0].ntrusted, 1, "kept, unused");
		sg_config_unref(c);
	}
	/* and its default is the empty list */
	fresh();
	path = put("saslgate.conf", MINIMAL);
	c = load_ok(path);
	if (c) {
		if (ASSERT_EQ(c->listeners[0].ntrusted, 0, "default: empty"))
			ASSERT_NULL(c->listeners[0].trusted, "default: empty");
		sg_config_unref(c);
	}
}

/* ---------------------------------------------------------- whole files */

static void test_every_key(void)
{
	fresh();
	const char *pwfile = put("upstream.secret", "s3cret\n");
	const char *map = put("senders", "alice alice@example.org\n");
	const char *path = put(
	    "saslgate.conf",
	    "# every key, none at its default\n"
	    "[server]\n"
	    "hostname = mail.example.org   # comment after a blank\n"
	    "user = nobody\n"
	    "workers = 3\n"
	    "max_connections = 77\n"
	    "shutdown_timeout = 1500ms\n"
	    "log_level = debug\n"
	    "strict_envelope = yes\n"
	    "[listener a]\n"
	    "address = 127.0.0.1:2525\n"
	    "tls = implicit\n"
	    "require_auth = no\n"
	    "require_tls_for_auth = off\n"
	    "proxy_protocol = v2\n"
	    "proxy_trusted_networks = 10.0.0.0/8, 192.0.2.1\n"
	    "[listener b]\n"
	    "address = [::1]:2526\n"
	    "tls = NONE\n"
	    "proxy_protocol = any\n"
	    "proxy_trusted_networks = ::1 2001:db8::/32\n"
	    "\n"
	    "[tls]\n"
	    "certificate = /nonexistent/cert.pem\n"
	    "key = /nonexistent/key.pem\n"
	    "ecdsa_certificate = /nonexistent/ec.pem\n"
	    "ecdsa_key = /nonexistent/ec.key\n"
	    "min_version = TLSv1.3\n"
	    "ciphers = HIGH:!aNULL\n"
	    "session_tickets = no\n"
	    "\n"
	    "[sasl]\n"
	    "service = smtps\n"
	    "realm = example.org\n"
	    "failure_delay = 2s\n"
	    "max_failures = 5\n"
	    "ip_failure_limit = 0\n"
	    "ip_failure_window = 1h\n"
	    "sender_login_map = %s\n"
	    "threads = 8\n"
	    "pwcheck_method = saslauthd\n"
	    "\n"
	    "[upstream]\n"
	    "server = mx1.example.org:2525\n"
	    "server = [2001:db8::1]:26\n"
	    "server = 10.0.0.5\n"
	    "identity = auth\n"
	    "helo = relay.example.org\n"
	    "auth_user = relay@example.org\n"
	    "auth_password_file = %s\n"
	    "tls = required\n"
	    "ca_file = /nonexistent/ca.pem\n"
	    "tls_name = mx.example.org\n"
	    "connect_timeout = 3s\n"
	    "timeout = 2m\n"
	    "\n"
	    "[limits]\n"
	    "max_message_size = 10M\n"
	    "max_recipients = 7\n"
	    "idle_timeout = 90\n"
	    "bare_newline = reject\n",
	    map, pwfile);
	sg_config *c = load_ok(path);
	if (!c)
		return;
	ASSERT_STR_EQ(c->path, path);
	ASSERT_STR_EQ(c->hostname, "mail.example.org");
	ASSERT_STR_EQ(c->user, "nobody", "user");
	ASSERT_EQ(c->workers, 3);
	ASSERT_EQ(c->max_connections, 77, "max_connections");
	ASSERT_EQ(c->shutdown_timeout_ms, 1500, "shutdown_timeout");
	ASSERT_EQ(c->log_level, SG_LOG_DEBUG, "log_level");
	ASSERT(c->strict_envelope, "strict_envelope");

	ASSERT_EQ(c->nlisteners, 2);
	if (c->nlisteners == 2) {
		sg_listener_cfg *a = &c->listeners[0], *b = &c->listeners[1];
		ASSERT_STR_EQ(a->name, "a", "listener a");
		ASSERT_STR_EQ(a->address, "127.0.0.1:2525", "listener a");
		ASSERT_EQ(a->addr.ss_family, AF_INET, "listener a");
		ASSERT_EQ(a->tls, SG_TLS_IMPLICIT, "listener a values");
		ASSERT(!a->require_auth, "listener a values");
		ASSERT(!a->require_tls_for_auth, "listener a values");
		ASSERT_EQ(a->proxy_protocol, SG_PP_V2, "listener a values");
		ASSERT_EQ(a->where.line, 11);
		ASSERT_STR_EQ(a->where.file, path);
		ASSERT_EQ(a->where_tls.line, 12);
		ASSERT_EQ(a->where_proxy.line, 15);
		if (ASSERT_EQ(a->ntrusted, 2, "listener a proxy_trusted_networks") &&
		    ASSERT_EQ(a->trusted[0].family, AF_INET,
		              "listener a proxy_trusted_networks")) {
			ASSERT_EQ(a->trusted[0].prefix, 8,
			          "listener a proxy_trusted_networks");
			ASSERT_EQ(a->trusted[1].prefix, 32,
			          "listener a proxy_trusted_networks");
		}
		if (ASSERT_EQ(b->ntrusted, 2, "listener b proxy_trusted_networks") &&
		    ASSERT_EQ(b->trusted[0].family, AF_INET6,
		              "listener b proxy_trusted_networks")) {
			ASSERT_EQ(b->trusted[0].prefix, 128,
			          "listener b proxy_trusted_networks");
			ASSERT_EQ(b->trusted[1].prefix, 32,
			          "listener b proxy_trusted_networks");
		}
		ASSERT_STR_EQ(b->name, "b", "listener b");
		ASSERT_EQ(b->addr.ss_family, AF_INET6, "listener b");
		ASSERT_EQ(b->tls, SG_TLS_NONE, "listener b");
		ASSERT_EQ(b->proxy_protocol, SG_PP_ANY, "listener b");
		/* defaults of the keys b does not set */
		ASSERT(b->require_auth, "listener b defaults");
		ASSERT(b->require_tls_for_auth, "listener b defaults");
	}

	ASSERT_STR_EQ(c->tls_certificate, "/nonexistent/cert.pem", "certificate");
	ASSERT_STR_EQ(c->tls_key, "/nonexistent/key.pem", "key");
	ASSERT_STR_EQ(c->tls_ecdsa_certificate, "/nonexistent/ec.pem",
	              "ecdsa cert");
	ASSERT_STR_EQ(c->tls_ecdsa_key, "/nonexistent/ec.key", "ecdsa key");
	ASSERT_EQ(c->tls_min_version, TLS1_3_VERSION, "min_version");
	ASSERT_STR_EQ(c->tls_ciphers, "HIGH:!aNULL", "ciphers");
	ASSERT(!c->tls_session_tickets, "session_tickets");

	ASSERT_STR_EQ(c->sasl_service, "smtps", "service");
	ASSERT_STR_EQ(c->sasl_realm, "example.org", "realm");
	ASSERT_EQ(c->failure_delay_ms, 2000, "failure_delay");
	ASSERT_EQ(c->max_failures, 5, "max_failures");
	ASSERT_EQ(c->ip_failure_limit, 0, "ip_failure_limit");
	ASSERT_EQ(c->ip_failure_window_ms, 3600000, "ip_failure_window");
	ASSERT_STR_EQ(c->sender_login_map, map, "sender_login_map");
	ASSERT_EQ(c->sasl_threads, 8, "threads");
	if (ASSERT_EQ(c->nsasl_opts, 1,
	              "sasl opts: only the key saslgate does not own")) {
		ASSERT_STR_EQ(c->sasl_opts[0].key, "pwcheck_method",
		              "sasl opts: only the key saslgate does not own");
		ASSERT_STR_EQ(c->sasl_opts[0].value, "saslauthd",
		              "sasl opts: only the key saslgate does not own");
	}

	ASSERT_EQ(c->nservers, 3);
	if (c->nservers == 3) {
		ASSERT_STR_EQ(c->servers[0].host, "mx1.example.org", "server 0");
		ASSERT_STR_EQ(c->servers[0].port, "2525", "server 0");
		ASSERT_STR_EQ(c->servers[1].host, "2001:db8::1",
		              "server 1 (brackets removed)");
		ASSERT_STR_EQ(c->servers[1].port, "26", "server 1 (brackets removed)");
		ASSERT_STR_EQ(c->servers[2].host, "10.0.0.5",
		              "server 2 (default port 25)");
		ASSERT_STR_EQ(c->servers[2].port, "25", "server 2 (default port 25)");
		ASSERT_EQ(c->servers[2].where.line, 46);
		/* the names logs and metrics give them */
		ASSERT_STR_EQ(c->servers[0].label, "mx1.example.org:2525");
		ASSERT_STR_EQ(c->servers[1].label, "[2001:db8::1]:26");
		ASSERT_STR_EQ(c->servers[2].label, "10.0.0.5:25");
	}
	ASSERT_EQ(c->identity, SG_ID_AUTH, "identity");
	ASSERT_STR_EQ(c->upstream_helo, "relay.example.org", "helo");
	ASSERT_STR_EQ(c->auth_user, "relay@example.org", "auth_user");
	ASSERT_STR_EQ(c->auth_password_file, pwfile, "auth_password_file");
	ASSERT_EQ(c->upstream_tls, SG_UTLS_REQUIRED, "upstream tls");
	ASSERT_STR_EQ(c->upstream_ca_file, "/nonexistent/ca.pem", "ca_file");
	ASSERT_STR_EQ(c->upstream_tls_name, "mx.example.org", "tls_name");
	ASSERT_EQ(c->connect_timeout_ms, 3000, "connect_timeout");
	ASSERT_EQ(c->upstream_timeout_ms, 120000, "timeout");

	ASSERT_EQ(c->max_message_size, 10ULL << 20, "max_message_size");
	ASSERT_EQ(c->max_recipients, 7, "max_recipients");
	ASSERT_EQ(c->idle_timeout_ms, 90000,
	          "idle_timeout (bare number = seconds)");
	ASSERT_EQ(c->bare_newline, SG_BARE_REJECT, "bare_newline");

	sg_where w = sg_config_where(c, "server", "workers");
	ASSERT_STR_EQ(w.file, path, "where workers");
	ASSERT_EQ(w.line, 5, "where workers");
	w = sg_config_where(c, "listener a", "proxy_protocol");
	ASSERT_EQ(w.line, 15, "where listener a proxy_protocol");
	w = sg_config_where(c, "limits", "bare_newline");
	ASSERT_EQ(w.line, 61, "where bare_newline");

	/* reference counting: the config lives while a reference is held */
	ASSERT_PTR_EQ(sg_config_ref(c), c, "ref");
	sg_config_unref(c);
	ASSERT_STR_EQ(c->hostname, "mail.example.org", "alive after one unref");
	sg_config_unref(c);
}

static void test_defaults(void)
{
	fresh();
	const char *path = put("saslgate.conf", MINIMAL);
	sg_config *c = load_ok(path);
	if (!c)
		return;
	char host[256] = "";
	gethostname(host, sizeof host);
	ASSERT_STR_EQ(c->hostname, host, "default hostname");
	ASSERT_STR_EQ(c->upstream_helo, c->hostname, "helo defaults to hostname");
	ASSERT_STR_EQ(c->user, "", "user");
	ASSERT_EQ(c->workers, 1, "workers");
	ASSERT_EQ(c->max_connections, 10000, "max_connections");
	ASSERT_EQ(c->shutdown_timeout_ms, 30000, "shutdown_timeout");
	ASSERT_EQ(c->log_level, SG_LOG_INFO, "log_level");
	ASSERT(!c->strict_envelope, "strict_envelope");
	if (ASSERT_EQ(c->nlisteners, 1, "listener defaults")) {
		ASSERT(c->listeners[0].require_auth, "listener defaults");
		ASSERT(c->listeners[0].require_tls_for_auth, "listener defaults");
		ASSERT_EQ(c->listeners[0].proxy_protocol, SG_PP_NO,
		          "listener defaults");
	}
	ASSERT_STR_EQ(c->tls_certificate, "", "tls files");
	ASSERT_STR_EQ(c->tls_key, "", "tls files");
	ASSERT_EQ(c->tls_min_version, TLS1_2_VERSION, "min_version");
	ASSERT(c->tls_session_tickets, "session_tickets");
	ASSERT_STR_EQ(c->sasl_service, "smtp", "sasl");
	ASSERT_STR_EQ(c->sasl_realm, "", "sasl");
	ASSERT_EQ(c->failure_delay_ms, 3000, "failures");
	ASSERT_EQ(c->max_failures, 3, "failures");
	ASSERT_EQ(c->ip_failure_limit, 10, "ip failures");
	ASSERT_EQ(c->ip_failure_window_ms, 600000, "ip failures");
	ASSERT_EQ(c->sasl_threads, 4, "sasl threads/opts");
	ASSERT_EQ(c->nsasl_opts, 0, "sasl threads/opts");
	ASSERT_EQ(c->identity, SG_ID_XCLIENT, "upstream modes");
	ASSERT_EQ(c->upstream_tls, SG_UTLS_NONE, "upstream modes");
	ASSERT_EQ(c->connect_timeout_ms, 10000, "upstream timeouts");
	ASSERT_EQ(c->upstream_timeout_ms, 300000, "upstream timeouts");
	ASSERT_EQ(c->max_message_size, 50ULL << 20, "limits");
	ASSERT_EQ(c->max_recipients, 100, "limits");
	ASSERT_EQ(c->idle_timeout_ms, 300000, "limits");
	ASSERT_EQ(c->bare_newline, SG_BARE_NORMALIZE, "limits");
	sg_where w = sg_config_where(c, "limits", "idle_timeout");
	ASSERT_EQ(w.line, 0, "an unset key has line 0");
	sg_config_unref(c);

	/* the listener's tls default is starttls (so it needs a certificate) */
	fresh();
	path = put("saslgate.conf", "[listener sub]\naddress = 127.0.0.1:587\n"
	                            "[upstream]\nserver = mx\n");
	EXPECT_ERROR(path, path, 2, "certificate");
}

static void test_syntax_details(void)
{
	fresh();
	const char *path = put("saslgate.conf",
	                       "; a comment\r\n"
	                       "   # an indented comment\r\n"
	                       "[server]\r\n"
	                       "   hostname = a#b.example   ; trailing comment\r\n"
	                       "\tworkers=auto\r\n"
	                       "log_level = WARNING\r\n"
	                       "[listener  spaced]\r\n"
	                       "address = [::]:2525\r\n"
	                       "tls = none\r\n"
	                       "[upstream]\r\n"
	                       "server = mx\r\n"
	                       "identity = XForward\r\n");
	sg_config *c = load_ok(path);
	if (!c)
		return;
	ASSERT_STR_EQ(c->hostname, "a#b.example");
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	ASSERT_EQ(c->workers, (n > 64 ? 64 : (n < 1 ? 1 : n)), "workers auto");
	ASSERT_EQ(c->log_level, SG_LOG_WARN, "log_level warning");
	if (ASSERT_EQ(c->nlisteners, 1))
		ASSERT_STR_EQ(c->listeners[0].name, "spaced");
	ASSERT_EQ(c->identity, SG_ID_XFORWARD, "enums are case-insensitive");
	sg_where w = sg_config_where(c, "server", "workers");
	ASSERT_EQ(w.line, 5, "line counting with CRLF");
	sg_config_unref(c);
}

static void test_errors(void)
{
	const char *path;
	static const struct {
		const char *text; /* appended to MINIMAL */
		int line;         /* of the error, counted in the appended text */
		const char *words;
	} cases[] = {
	    {"[server]\nno_such_key = 1\n", 2, "unknown key \"no_such_key\" in [server]"},
	    {"[listener plain]\nport = 1\n", 2, "unknown key \"port\""},
	    {"[bogus]\nkey = 1\n", 1, "unknown section [bogus]"},
	    {"[Server]\nworkers = 1\n", 1, "unknown section [Server]"},
	    {"[listenerx]\naddress = 127.0.0.1:1\n", 1, "unknown section"},
	    {"[listener]\naddress = 127.0.0.1:1\n", 1, "needs a name"},
	    {"[server]\nworkers = 0\n", 2, "workers"},
	    {"[server]\nworkers = 65\n", 2, "workers"},
	    {"[server]\nworkers = 2k\n", 2, "workers"},
	    {"[server]\nmax_connections = -1\n", 2, "whole number"},
	    {"[server]\nmax_connections = 4294967296\n", 2, "whole number"},
	    {"[server]\nshutdown_timeout = 30 s\n", 2, "duration"},
	    {"[server]\nlog_level = verbose\n", 2, "log_level"},
	    {"[listener plain]\ntls = ssl\n", 2, "starttls | implicit"},
	    {"[listener plain]\nrequire_auth = maybe\n", 2, "yes or no"},
	    {"[listener plain]\nproxy_protocol = v3\n", 2, "proxy_protocol"},
	    {"[listener p2]\naddress = 127.0.0.1:65536\n", 2, "out of range"},
	    {"[listener p2]\naddress = 127.0.0.1:2525\ntls = none\n", 2,
	     "uses the address of [listener plain]"},
	    {"[listener p2]\ntls = none\n", 2, "has no address"},
	    {"[tls]\nmin_version = SSLv3\n", 2, "min_version"},
	    {"[tls]\nsession_tickets = sometimes\n", 2, "session_tickets"},
	    {"[tls]\n\nkey = /k.pem\n", 3, "needs both certificate and key"},
	    {"[tls]\ncertificate = /c.pem\n", 2, "needs both certificate and key"},
	    {"[tls]\ncertificate = /c.pem\nkey = /k.pem\necdsa_certificate = /e\n", 4,
	     "ecdsa_key"},
	    {"[sasl]\nfailure_delay = 3 seconds\n", 2, "failure_delay"},
	    {"[sasl]\nmax_failures = 0\n", 2, "max_failures must be at least 1"},
	    {"[sasl]\nthreads = 0\n", 2, "threads must be 1 to 60"},
	    {"[sasl]\nthreads = 61\n", 2, "threads must be 1 to 60"},
	    {"[sasl]\nip_failure_window = 10 min\n", 2, "ip_failure_window"},
	    {"[sasl]\nsender_login_map = /nonexistent/map\n", 2, "/nonexistent/map"},
	    {"[upstream]\nserver = mx:0\n", 2, "out of range"},
	    {"[upstream]\nserver = ::1\n", 2, "brackets"},
	    {"[upstream]\nidentity = smtp-auth\n", 2, "xclient | xforward"},
	    {"[upstream]\nidentity = auth\n", 2, "auth_user and auth_password_file"},
	    {"[upstream]\nidentity = auth\nauth_user = u\n"
	     "auth_password_file = /nonexistent/pw\n",
	     4, "cannot read /nonexistent/pw"},
	    {"[upstream]\ntls = yes\n", 2, "none | starttls | required"},
	    {"[upstream]\nconnect_timeout = 0\n", 2, "connect_timeout must be above 0"},
	    {"[upstream]\ntimeout = forever\n", 2, "timeout"},
	    {"[limits]\nmax_message_size = 1000\n", 2, "below 1k"},
	    {"[limits]\nmax_message_size = 5T\n", 2, "a size such as"},
	    {"[limits]\nmax_recipients = 0\n", 2, "at least 1"},
	    {"[limits]\nidle_timeout = 999ms\n", 2, "below 1s"},
	    {"[limits]\nbare_newline = keep\n", 2, "reject | normalize"},
	    {"[server\nhostname = x\n", 1, "syntax error"},
	    {"[server]\njust some words\n", 2, "syntax error"},
	    {"include = nothere.conf\n", 1, "no such file"},
	    /* would read forever: refused before a read */
	    {"include = /dev/zero\n", 1, "/dev/zero: not a regular file"},
	    {"include = /\n", 1, "/: is a directory"},
	    {"include = */x.conf\n", 1, "in the file name only"},
	    {"include = /etc/../*/../*.conf\n", 1, "in the file name only"},
	    {"include = saslgate.conf\n", 1, "an include loop"},
	    {"include = *.conf\ninclude = *.conf\n", 1, "an include loop"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		fresh();
		path = put("saslgate.conf", MINIMAL "%s", cases[i].text);
		if (!expect_error(path, path, MINIMAL_LINES + cases[i].line,
		                  cases[i].words, __LINE__))
			fprintf(stderr, "  (case %zu: %s)\n", i, cases[i].text);
	}

	/* A key before any section (include is the only one allowed there). */
	fresh();
	path = put("saslgate.conf", "hostname = x\n" MINIMAL);
	EXPECT_ERROR(path, path, 1, "outside a [section]");

	/* Nothing to listen on / relay to: "FILE: message", no line. */
	fresh();
	path = put("saslgate.conf", "[upstream]\nserver = mx\n");
	EXPECT_ERROR(path, path, 0, "no [listener NAME] section");
	fresh();
	path = put("saslgate.conf", "[listener p]\naddress = 127.0.0.1:1\ntls = none\n");
	EXPECT_ERROR(path, path, 0, "[upstream] has no server");

	/* A file that does not exist. */
	fresh();
	char missing[TEST_PATH_MAX];
	snprintf(missing, sizeof missing, "%s/nope.conf", tmpdir);
	EXPECT_ERROR(missing, missing, 0, "cannot read configuration");

	/* An include naming a FIFO nobody writes to: an error, not a wait
	 * for a writer (the test would hang here). */
	fresh();
	char fifo[TEST_PATH_MAX];
	snprintf(fifo, sizeof fifo, "%s/pipe.conf", tmpdir);
	if (ASSERT_EQ(mkfifo(fifo, 0600), 0, "mkfifo")) {
		path = put("saslgate.conf", MINIMAL "include = pipe.conf\n");
		EXPECT_ERROR(path, path, MINIMAL_LINES + 1, "not a regular file");
		EXPECT_ERROR(fifo, fifo, 0, "cannot read configuration: not a "
		                            "regular file");
		unlink(fifo);
	}

	/* A value longer than libinih's 200-octet buffer is kept whole... */
	fresh();
	char longpath[1024];
	memset(longpath, 'p', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = '\0';
	path = put("saslgate.conf", MINIMAL "[server]\nhostname = %s\n", longpath);
	{
		sg_errors le = {0};
		sg_config *lc = sg_config_load(path, &le);
		if (ASSERT(lc, "a 1023-octet value is kept whole"))
			ASSERT_STR_EQ(lc->hostname, longpath,
			              "a 1023-octet value is kept whole");
		sg_errors_free(&le);
		if (lc)
			sg_config_unref(lc);
	}
	/* ...and a line longer than SG_MAX_CONF_LINE is refused, not cut. */
	fresh();
	char longname[5000];
	memset(longname, 'h', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	path = put("saslgate.conf", MINIMAL "[server]\nhostname = %s\n", longname);
	EXPECT_ERROR(path, path, MINIMAL_LINES + 2, "line too long");

	/* Every problem is reported, not only the first. */
	fresh();
	path = put("saslgate.conf",
	           MINIMAL "[server]\nbad1 = 1\n[limits]\nidle_timeout = x\n");
	sg_errors e = {0};
	sg_config *c = sg_config_load(path, &e);
	ASSERT_NULL(c, "two problems");
	ASSERT_EQ(e.n, 2, "two problems");
	sg_errors_free(&e);

	/* The error a listener with tls but no certificate gets points at its
	 * tls line. */
	fresh();
	path = put("saslgate.conf",
	           MINIMAL "[listener sub]\naddress = 127.0.0.1:587\n\ntls = starttls\n");
	EXPECT_ERROR(path, path, MINIMAL_LINES + 4, "tls = starttls but [tls] has no");

	/* errors print as lines */
	e.n = 0;
	e.msg = NULL;
	sg_where w = {"/x.conf", 7};
	sg_errors_add(&e, &w, "bad %s", "thing");
	sg_where w0 = {"/x.conf", 0};
	sg_errors_add(&e, &w0, "whole file");
	sg_errors_add(&e, NULL, "no place");
	if (ASSERT_EQ(e.n, 3, "error formats")) {
		ASSERT_STR_EQ(e.msg[0], "/x.conf:7: bad thing", "error formats");
		ASSERT_STR_EQ(e.msg[1], "/x.conf: whole file", "error formats");
		ASSERT_STR_EQ(e.msg[2], "no place", "error formats");
	}
	FILE *f = tmpfile();
	sg_errors_print(&e, f);
	rewind(f);
	char out[256] = "";
	size_t got = fread(out, 1, sizeof out - 1, f);
	out[got] = '\0';
	fclose(f);
	ASSERT_STR_EQ(out, "/x.conf:7: bad thing\n/x.conf: whole file\nno place\n",
	              "printed");
	sg_errors_free(&e);
	ASSERT_EQ(e.n, 0, "errors freed");
	ASSERT_NULL(e.msg, "errors freed");
}

static void test_includes(void)
{
	/* Drop-ins in lexical order, relative to the including file; the last
	 * value wins, also over the main file; "10" sorts before "9". */
	fresh();
	const char *main = put("etc/saslgate.conf",
	                       "[server]\n"
	                       "hostname = main.test\n"
	                       "max_connections = 1\n"
	                       "include = conf.d/*.conf\n" MINIMAL);
	const char *d10 = put("etc/conf.d/10-a.conf",
	                      "[server]\nhostname = ten.test\nmax_connections = 10\n");
	put("etc/conf.d/20-b.conf", "[server]\nhostname = twenty.test\n");
	const char *d9 = put("etc/conf.d/9-c.conf", "[server]\n\nhostname = nine.test\n");
	put("etc/conf.d/30-ignored.conf.dpkg-old", "[server]\nhostname = old.test\n");
	sg_config *c = load_ok(main);
	if (c) {
		ASSERT_STR_EQ(c->hostname, "nine.test");
		ASSERT_EQ(c->max_connections, 10);
		sg_where w = sg_config_where(c, "server", "hostname");
		ASSERT_STR_EQ(w.file, d9, "where hostname");
		ASSERT_EQ(w.line, 3, "where hostname");
		w = sg_config_where(c, "server", "max_connections");
		ASSERT_STR_EQ(w.file, d10, "where max_connections");
		ASSERT_EQ(w.line, 3, "where max_connections");
		ASSERT_STR_EQ(c->upstream_helo, "nine.test",
		              "helo follows the final hostname");
		sg_config_unref(c);
	}

	/* A key after the include line in the main file is later: it wins. */
	fresh();
	main = put("saslgate.conf", "include = d/*.conf\n[server]\nhostname = main.test\n" MINIMAL);
	put("d/1.conf", "[server]\nhostname = dropin.test\n");
	c = load_ok(main);
	if (c) {
		ASSERT_STR_EQ(c->hostname, "main.test");
		sg_config_unref(c);
	}

	/* Nested includes are relative to the file that names them; an
	 * absolute include works too. */
	fresh();
	char abs[TEST_PATH_MAX];
	snprintf(abs, sizeof abs, "%s/elsewhere/x.conf", tmpdir);
	main = put("saslgate.conf", MINIMAL "include = a/one.conf\ninclude = %s\n", abs);
	put("a/one.conf", "include = b/two.conf\n");
	put("a/b/two.conf", "[limits]\nmax_recipients = 22\n");
	put("elsewhere/x.conf", "[limits]\nidle_timeout = 42s\n");
	c = load_ok(main);
	if (c) {
		ASSERT_EQ(c->max_recipients, 22, "nested include");
		ASSERT_EQ(c->idle_timeout_ms, 42000, "absolute include");
		sg_config_unref(c);
	}

	/* A drop-in changes a listener by using its name. */
	fresh();
	main = put("saslgate.conf", MINIMAL "include = conf.d/*.conf\n");
	put("conf.d/50.conf", "[listener plain]\nproxy_protocol = v1\n"
	                      "proxy_trusted_networks = 127.0.0.1\n"
	                      "[listener more]\naddress = 127.0.0.1:2600\ntls = none\n");
	c = load_ok(main);
	if (c) {
		if (ASSERT_EQ(c->nlisteners, 2, "listener changed by name") &&
		    ASSERT_EQ(c->listeners[0].proxy_protocol, SG_PP_V1,
		              "listener changed by name")) {
			ASSERT_STR_EQ(c->listeners[0].address, "127.0.0.1:2525",
			              "listener changed by name");
			ASSERT_EQ(c->listeners[0].tls, SG_TLS_NONE,
			          "listener changed by name");
		}
		sg_config_unref(c);
	}

	/* Errors inside drop-ins name the drop-in and its line. */
	fresh();
	main = put("saslgate.conf", MINIMAL "include = conf.d/*.conf\n");
	put("conf.d/10.conf", "[server]\nworkers = 2\n");
	const char *bad = put("conf.d/20.conf", "# x\n\n[limits]\nidle_timeout = 1 day\n");
	EXPECT_ERROR(main, bad, 4, "idle_timeout");
	/* ... and a missing include inside a drop-in names that drop-in. */
	put("conf.d/20.conf", "[limits]\ninclude = missing.conf\n");
	EXPECT_ERROR(main, bad, 2, "missing.conf");
	/* ... and the final value is what validation sees, where it was set. */
	put("conf.d/10.conf", "[limits]\nmax_recipients = 3\n");
	put("conf.d/20.conf", "[limits]\n\nmax_recipients = 0\n");
	EXPECT_ERROR(main, bad, 3, "max_recipients must be at least 1");
	put("conf.d/10.conf", "[limits]\nmax_recipients = 0\n");
	put("conf.d/20.conf", "[limits]\nmax_recipients = 4\n");
	c = load_ok(main);
	if (c) {
		ASSERT_EQ(c->max_recipients, 4, "fixed by the later drop-in");
		sg_config_unref(c);
	}

	/* An empty conf.d/ is fine; an include loop is an error. */
	fresh();
	main = put("saslgate.conf", MINIMAL "include = conf.d/*.conf\n");
	put("conf.d/README", "not a .conf file\n");
	c = load_ok(main);
	if (c)
		sg_config_unref(c);
	const char *loop = put("conf.d/loop.conf", "include = loop.conf\n");
	EXPECT_ERROR(main, loop, 1, "an include loop");
}

static void test_server_list(void)
{
	/* The first `server` of a later file replaces the list; further
	 * `server` lines of that file append to it. */
	fresh();
	const char *main = put("saslgate.conf",
	                       "[listener plain]\naddress = 127.0.0.1:2525\ntls = none\n"
	                       "[upstream]\nserver = a.test\nserver = b.test:2525\n"
	                       "include = conf.d/*.conf\n");
	put("conf.d/10-noserver.conf", "[upstream]\nidentity = xforward\n");
	sg_config *c = load_ok(main);
	if (c) {
		if (ASSERT_EQ(c->nservers, 2,
		              "a drop-in without server keeps the list")) {
			ASSERT_STR_EQ(c->servers[0].host, "a.test");
			ASSERT_STR_EQ(c->servers[1].host, "b.test");
			ASSERT_STR_EQ(c->servers[1].port, "2525");
		}
		sg_config_unref(c);
	}
	const char *d20 = put("conf.d/20-servers.conf",
	                      "[upstream]\nserver = c.test\nserver = d.test\nserver = e.test\n");
	c = load_ok(main);
	if (c) {
		if (ASSERT_EQ(c->nservers, 3, "replaced, then appended")) {
			ASSERT_STR_EQ(c->servers[0].host, "c.test");
			ASSERT_STR_EQ(c->servers[1].host, "d.test");
			ASSERT_STR_EQ(c->servers[2].host, "e.test");
		}
		if (ASSERT_EQ(c->nservers, 3, "server where")) {
			ASSERT_STR_EQ(c->servers[1].where.file, d20, "server where");
			ASSERT_EQ(c->servers[1].where.line, 3, "server where");
		}
		sg_config_unref(c);
	}
	put("conf.d/30-one.conf", "[upstream]\nserver = f.test\n");
	c = load_ok(main);
	if (c) {
		if (ASSERT_EQ(c->nservers, 1, "the last file's list wins"))
			ASSERT_STR_EQ(c->servers[0].host, "f.test");
		sg_config_unref(c);
	}

	/* server lines after the include add to what the drop-ins built */
	fresh();
	main = put("saslgate.conf",
	           "[listener plain]\naddress = 127.0.0.1:2525\ntls = none\n"
	           "[upstream]\nserver = a.test\ninclude = conf.d/*.conf\n"
	           "server = c.test\n");
	put("conf.d/10.conf", "[upstream]\nserver = b.test\n");
	c = load_ok(main);
	if (c) {
		if (ASSERT_EQ(c->nservers, 2,
		              "drop-in replaced, the includer's later line appended")) {
			ASSERT_STR_EQ(c->servers[0].host, "b.test");
			ASSERT_STR_EQ(c->servers[1].host, "c.test");
		}
		sg_config_unref(c);
	}

	/* include of a glob in a directory that does not exist: no drop-ins */
	fresh();
	main = put("saslgate.conf",
	           "[listener plain]\naddress = 127.0.0.1:2525\ntls = none\n"
	           "[upstream]\nserver = a.test\ninclude = nodir/*.conf\n");
	c = load_ok(main);
	if (c)
		sg_config_unref(c);
}

static void test_sasl_opts(void)
{
	/* Unknown [sasl] keys go to Cyrus in order; a later one with the same
	 * name replaces the value in place. */
	fresh();
	const char *main = put("saslgate.conf",
	                       MINIMAL "[sasl]\n"
	                               "pwcheck_method = saslauthd\n"
	                               "service = smtp\n"
	                               "mech_list = PLAIN LOGIN\n"
	                               "saslauthd_path = /run/saslauthd/mux\n"
	                               "include = conf.d/*.conf\n"
	                               "log_level = 7\n");
	const char *d = put("conf.d/1.conf",
	                    "[sasl]\nmech_list = PLAIN\nauxprop_plugin = sasldb\n");
	sg_config *c = load_ok(main);
	if (!c)
		return;
	static const char *const want[][2] = {{"pwcheck_method", "saslauthd"},
	                                      {"mech_list", "PLAIN"},
	                                      {"saslauthd_path", "/run/saslauthd/mux"},
	                                      {"auxprop_plugin", "sasldb"},
	                                      {"log_level", "7"}};
	ASSERT_EQ(c->nsasl_opts, 5);
	for (size_t i = 0; i < 5 && i < c->nsasl_opts; i++) {
		ASSERT_STR_EQ(c->sasl_opts[i].key, want[i][0], "opt %zu", i);
		ASSERT_STR_EQ(c->sasl_opts[i].value, want[i][1], "opt %zu", i);
	}
	if (c->nsasl_opts >= 2) {
		ASSERT_STR_EQ(c->sasl_opts[1].where.file, d, "mech_list where");
		ASSERT_EQ(c->sasl_opts[1].where.line, 2, "mech_list where");
	}
	if (c->nsasl_opts >= 1)
		ASSERT_EQ(c->sasl_opts[0].where.line, MINIMAL_LINES + 2,
		          "first opt line");
	sg_config_unref(c);
}

int main(void)
{
	sg_log_level = SG_LOG_ERROR;
	test_durations();
	test_sizes();
	test_bools();
	test_addresses();
	test_trusted_networks();
	test_every_key();
	test_defaults();
	test_syntax_details();
	test_errors();
	test_includes();
	test_server_list();
	test_sasl_opts();
	if (tmpdir[0])
		rm_rf(tmpdir);
	return CHECK_SUMMARY();
}
