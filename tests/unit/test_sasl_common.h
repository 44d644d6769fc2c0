/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_sasl_common.h: helpers shared by the test_sasl_*.c unit
 * tests: check.h's assertions, a scratch directory, a configuration written
 * from text, and a real uv loop driving sg_auth_start/step to the callback.
 * Every wait is bounded (alarm), so a hung Cyrus call fails the test. */
#ifndef TEST_SASL_COMMON_H
#define TEST_SASL_COMMON_H

#include "../../common/config.h"
#include "../../common/log.h"
#include "../../sasl/auth.h"
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define T_UNUSED __attribute__((unused))

static char t_dir[256];

T_UNUSED static void t_rmdir(void)
{
	char cmd[512];
	if (!t_dir[0] || getenv("SG_KEEP_TMP"))
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", t_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", t_dir);
}

static const char *t_mkdir(void)
{
	snprintf(t_dir, sizeof t_dir, "/tmp/sg-sasl-XXXXXX");
	if (!mkdtemp(t_dir)) {
		perror("mkdtemp");
		exit(2);
	}
	atexit(t_rmdir);
	return t_dir;
}

T_UNUSED static void t_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* A configuration with the given [sasl] body; every other section minimal. */
static sg_config *t_config(const char *sasl_body, sg_errors *errs)
{
	char path[512], text[8192];
	static int n;
	snprintf(path, sizeof path, "%s/saslgate-%d.conf", t_dir, n++);
	snprintf(text, sizeof text,
	         "[server]\nhostname = mx.test\n"
	         "[listener a]\naddress = 127.0.0.1:1\ntls = none\n"
	         "[upstream]\nserver = 127.0.0.1:2\n"
	         "[sasl]\n%s\n",
	         sasl_body);
	t_write(path, text);
	return sg_config_load(path, errs);
}

/* saslpasswd2 -f DB -p -c -u REALM USER, the password on stdin. */
T_UNUSED static void t_saslpasswd(const char *db, const char *realm,
                                  const char *user,
                         const char *pass)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "saslpasswd2 -f '%s' -p -c -u '%s' '%s'", db,
	         realm, user);
	FILE *p = popen(cmd, "w");
	if (!p) {
		perror("saslpasswd2");
		exit(2);
	}
	fputs(pass, p);
	if (pclose(p) != 0) {
		fprintf(stderr, "saslpasswd2 failed\n");
		exit(2);
	}
}

/* One answer of sg_auth_start/step. */
struct t_res {
	int calls;
	int result;
	char chal[8192];
	unsigned len;
};

T_UNUSED static void t_on_res(void *arg, int result, const char *chal, unsigned len)
{
	struct t_res *r = arg;
	r->calls++;
	r->result = result;
	r->len = 0;
	if (chal && len < sizeof r->chal) {
		memcpy(r->chal, chal, len);
		r->len = len;
	}
	r->chal[r->len] = '\0';
}

/* Run the loop until the callback came (uv_run ends when nothing is left;
 * the alarm set by main bounds a hang). */
T_UNUSED static int t_wait(uv_loop_t *loop, struct t_res *r)
{
	int before = r->calls;
	uv_run(loop, UV_RUN_DEFAULT);
	return r->calls == before + 1 ? r->result : -1;
}

T_UNUSED static int t_start(uv_loop_t *loop, sg_auth *a, const char *mech,
                   const char *in, int inlen, struct t_res *r)
{
	memset(r, 0, sizeof *r);
	if (sg_auth_start(a, loop, mech, in, inlen < 0 ? 0 : (unsigned)inlen,
	                  inlen >= 0, t_on_res, r) != 0)
		return -2;
	return t_wait(loop, r);
}

T_UNUSED static int t_step(uv_loop_t *loop, sg_auth *a, const char *in, unsigned len,
                  struct t_res *r)
{
	int calls = r->calls;
	if (sg_auth_step(a, loop, in, len, t_on_res, r) != 0)
		return -2;
	uv_run(loop, UV_RUN_DEFAULT);
	return r->calls == calls + 1 ? r->result : -1;
}

#endif
