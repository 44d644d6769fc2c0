/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_filecheck.c: the file checks of `saslgate -t`
 * (common/filecheck.c).
 *
 * The secret-mode rule as a table (others, group-writable, group-readable
 * by the service user's own group or by another, owner or not), then
 * sg_filecheck_config on real files as whoever runs the test (no [server]
 * user): a world-readable key and a missing file are FILE:LINE problems of
 * the key naming them, a 0600 key is none.  Checks as another user need
 * root and are in tests/integration/test_cli_config.py. */
#include "../../common/config.h"
#include "../../common/filecheck.h"
#include "../../common/log.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_PATH_MAX 512

enum { OWNER = 0, SVC = 100, OTHER = 200 };

static void test_mode_rule(void)
{
	static const struct {
		mode_t mode;
		uid_t owner;
		bool svc_in_group;
		unsigned want;
	} cases[] = {
	    /* the owner alone: fine, whoever owns it */
	    {0600, OWNER, false, 0},
	    {0400, SVC, false, 0},
	    {0600, SVC, true, 0},
	    /* Debian's ssl-cert: root owns it, the service user reads through
	     * a group it is in */
	    {0640, OWNER, true, 0},
	    {0440, OWNER, true, 0},
	    /* ... but not through a group it is not in */
	    {0640, OWNER, false, SG_SECRET_GROUP_READ_FOREIGN},
	    /* and the owner needs no group bit, even its own group's */
	    {0640, SVC, true, SG_SECRET_GROUP_READ_OWNER},
	    {0640, SVC, false, SG_SECRET_GROUP_READ_OWNER},
	    /* group-writable: never */
	    {0620, OWNER, true, SG_SECRET_GROUP_WRITE},
	    {0660, OWNER, true, SG_SECRET_GROUP_WRITE},
	    {0660, OTHER, false, SG_SECRET_GROUP_WRITE | SG_SECRET_GROUP_READ_FOREIGN},
	    /* others: never */
	    {0644, OWNER, true, SG_SECRET_OTHERS_READ},
	    {0604, SVC, false, SG_SECRET_OTHERS_READ},
	    {0602, OWNER, false, SG_SECRET_OTHERS_WRITE},
	    {0606, OWNER, false, SG_SECRET_OTHERS_READ | SG_SECRET_OTHERS_WRITE},
	    {0666, OWNER, false,
	     SG_SECRET_OTHERS_READ | SG_SECRET_OTHERS_WRITE | SG_SECRET_GROUP_WRITE |
	         SG_SECRET_GROUP_READ_FOREIGN},
	    {0644, SVC, false, SG_SECRET_OTHERS_READ | SG_SECRET_GROUP_READ_OWNER},
	    /* execute bits and the file type do not matter */
	    {0100700, OWNER, false, 0},
	    {0711, OWNER, false, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned got = sg_secret_mode_problems(cases[i].mode, cases[i].owner, SVC,
		                                       cases[i].svc_in_group);
		ASSERT_EQ(got, cases[i].want, "mode %04o owner %u in group %d",
		          (unsigned)cases[i].mode, (unsigned)cases[i].owner,
		          cases[i].svc_in_group);
	}
}

static char dir[] = "/tmp/sg-test-filecheck-XXXXXX";

static const char *put(const char *name, const char *text, mode_t mode)
{
	static char paths[8][TEST_PATH_MAX];
	static int next;
	char *p = paths[next++ % 8];
	snprintf(p, TEST_PATH_MAX, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	chmod(p, mode);
	return p;
}

/* Does errs hold "FILE:LINE: ..." containing words? */
static bool has(const sg_errors *e, const char *file, int line,
                const char *words)
{
	char prefix[TEST_PATH_MAX + 16];
	snprintf(prefix, sizeof prefix, "%s:%d: ", file, line);
	for (size_t i = 0; i < e->n; i++)
		if (strncmp(e->msg[i], prefix, strlen(prefix)) == 0 &&
		    strstr(e->msg[i], words))
			return true;
	return false;
}

static void test_config_files(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(2);
	}
	const char *key = put("key.pem", "not really a key\n", 0644);
	const char *cert = put("cert.pem", "not really a certificate\n", 0644);
	char conf_text[4 * TEST_PATH_MAX];
	snprintf(conf_text, sizeof conf_text,
	         "[listener plain]\n"
	         "address = 127.0.0.1:2525\n"
	         "tls = none\n"
	         "[tls]\n"
	         "certificate = %s\n"
	         "key = %s\n"
	         "[upstream]\n"
	         "server = 127.0.0.1:25\n"
	         "[sasl]\n"
	         "sender_login_map = %s/senders\n",
	         cert, key, dir);
	const char *map = put("senders", "alice alice@example.org\n", 0644);
	const char *conf = put("saslgate.conf", conf_text, 0644);

	sg_errors e = {0};
	sg_config *c = sg_config_load(conf, &e);
	ASSERT_NOT_NULL(c, "config loads: %s", e.n ? e.msg[0] : "-");
	if (!c)
		return;
	bool tls_bad = sg_filecheck_config(c, &e);
	ASSERT(!tls_bad, "the TLS files open");
	ASSERT(has(&e, conf, 6, "secret readable by others"), "world-readable key");
	ASSERT(has(&e, conf, 6, "chmod "), "its fix");
	ASSERT(has(&e, conf, 6, "o-rwx"), "its fix");
	ASSERT_EQ(e.n, 1, "one problem; first: %s", e.n ? e.msg[0] : "-");
	sg_errors_free(&e);

	chmod(key, 0600);
	tls_bad = sg_filecheck_config(c, &e);
	ASSERT(!tls_bad, "0600 key");
	ASSERT_EQ(e.n, 0, "0600 key; first: %s", e.n ? e.msg[0] : "-");
	sg_errors_free(&e);

	/* a file gone since the config was loaded: its key's line, and the
	 * TLS context need not be built to say so again */
	unlink(cert);
	tls_bad = sg_filecheck_config(c, &e);
	ASSERT(tls_bad, "missing certificate: TLS skipped");
	ASSERT(has(&e, conf, 5, "no such file"),
	       "missing certificate named at its line");
	sg_errors_free(&e);
	unlink(map);
	tls_bad = sg_filecheck_config(c, &e);
	ASSERT(has(&e, conf, 10, "senders: no such file"), "missing map");
	sg_errors_free(&e);
	sg_config_unref(c);

	unlink(key);
	unlink(conf);
	rmdir(dir);
}

int main(void)
{
	sg_log_level = SG_LOG_ERROR;
	test_mode_rule();
	test_config_files();
	return CHECK_SUMMARY();
}
