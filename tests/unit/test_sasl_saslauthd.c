/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_sasl_saslauthd.c: sg_auth_* with pwcheck_method =
 * saslauthd against a real saslauthd (-a shadow, a throwaway system user
 * made with useradd + chpasswd, its own socket directory), then:
 *   - saslauthd stopped (socket gone) and a dead socket (connect refused)
 *     give SG_AUTH_TEMPFAIL (454, no failure counted), not SG_AUTH_FAIL;
 *   - a backend that hangs (a socket of this test's own that never answers)
 *     ties up one pool thread only: another session's AUTH completes on the
 *     same loop meanwhile, proving the event loop is not blocked.
 * Needs root (useradd, saslauthd -a shadow); otherwise it says so and passes
 * only the parts that need no saslauthd. */
#include "test_sasl_common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

static uv_loop_t loop;
static char user[32];
static const char pass[] = "Tr0ub4dor &3";
static pid_t sad_pid = -1;
static char sad_sock[700]; /* its socket */
static bool user_made;

/* Stop saslauthd (its process group: master and workers).  SIGTERM, then
 * SIGKILL after 5 s: saslauthd's signal handler calls syslog(), and a
 * signal that lands while the master is inside syslog() deadlocks it on
 * glibc's syslog lock, so it may never exit on SIGTERM. */
static void stop_saslauthd(void)
{
	if (sad_pid <= 0)
		return;
	kill(-sad_pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(sad_pid, NULL, WNOHANG) == sad_pid) {
			sad_pid = -1;
			return;
		}
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "saslauthd ignored SIGTERM for 5 s: killed\n");
	kill(-sad_pid, SIGKILL);
	waitpid(sad_pid, NULL, 0);
	sad_pid = -1;
	unlink(sad_sock); /* what its own exit would have removed */
}

static void cleanup(void)
{
	char cmd[128];
	stop_saslauthd();
	if (user_made) {
		snprintf(cmd, sizeof cmd, "userdel '%s' 2>/dev/null", user);
		if (system(cmd) != 0)
			fprintf(stderr, "userdel %s failed\n", user);
		user_made = false;
	}
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool wait_for_socket(const char *path, bool present)
{
	for (int i = 0; i < 100; i++) { /* 10 s at most */
		if ((access(path, F_OK) == 0) == present)
			return true;
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return false;
}

static bool start_saslauthd(const char *dir)
{
	snprintf(sad_sock, sizeof sad_sock, "%s/mux", dir);
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		setpgid(0, 0);
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0 && !getenv("SG_DEBUG")) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("saslauthd", "saslauthd", "-a", "shadow", "-m", dir, "-n", "2",
		       "-d", (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	sad_pid = pid;
	return wait_for_socket(sad_sock, true);
}

static sg_auth *new_auth(sg_config *c, const char *sid)
{
	sg_auth_peer peer = {.local_ip = "127.0.0.1",
	                     .local_port = 587,
	                     .remote_ip = "192.0.2.2",
	                     .remote_port = 40001,
	                     .sid = sid};
	sg_auth *a = sg_auth_new(c, &peer);
	sg_auth_set_tls(a, 256);
	return a;
}

static int plain(sg_config *c, const char *u, const char *p, char *who,
                 size_t whosz)
{
	char buf[256];
	struct t_res r;
	int n = snprintf(buf, sizeof buf, "%c%s%c%s", 0, u, 0, p);
	sg_auth *a = new_auth(c, "S1");
	int res = t_start(&loop, a, "PLAIN", buf, n, &r);
	if (who)
		snprintf(who, whosz, "%s", sg_auth_user(a) ? sg_auth_user(a) : "");
	sg_auth_free(a);
	return res;
}

static sg_config *config_for(const char *sock)
{
	char body[1024];
	sg_errors errs = {0};
	snprintf(body, sizeof body,
	         "pwcheck_method = saslauthd\nsaslauthd_path = %s\n"
	         "mech_list = PLAIN LOGIN CRAM-MD5\n",
	         sock);
	sg_config *c = t_config(body, &errs);
	if (!c) {
		sg_errors_print(&errs, stderr);
		exit(2);
	}
	return c;
}

/* A "saslauthd" that takes connections into its backlog and never answers. */
static int hanging_server(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
	    listen(fd, 16) < 0) {
		perror("hanging server");
		exit(2);
	}
	return fd;
}

/* `saslgate -t` as root checks the socket with [server] user's rights: a
 * socket only root may use is reported, with the Debian hint. */
static void test_permission_as_user(void)
{
	char dir[600], sock[700], conf[700], text[2048];
	snprintf(dir, sizeof dir, "%s/private", t_dir);
	mkdir(dir, 0700);
	snprintf(sock, sizeof sock, "%s/mux", dir);
	int fd = hanging_server(sock);
	snprintf(conf, sizeof conf, "%s/perm.conf", t_dir);
	snprintf(text, sizeof text,
	         "[server]\nhostname = mx.test\nuser = nobody\n"
	         "[listener a]\naddress = 127.0.0.1:1\ntls = none\n"
	         "[upstream]\nserver = 127.0.0.1:2\n"
	         "[sasl]\npwcheck_method = saslauthd\nsaslauthd_path = %s\n",
	         sock);
	t_write(conf, text);
	sg_errors errs = {0};
	sg_config *c = sg_config_load(conf, &errs);
	ASSERT_NOT_NULL(c);
	if (!c)
		return;
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	if (ASSERT_EQ(errs.n, 1)) {
		ASSERT(strstr(errs.msg[0], "perm.conf:11: saslauthd socket"));
		ASSERT(strstr(errs.msg[0], "permission denied for user nobody"));
	}
	sg_errors_free(&errs);
	sg_sasl_done();
	chmod(t_dir, 0755); /* mkdtemp made it 0700: every component counts */
	chmod(dir, 0755);
	chmod(sock, 0777); /* like Debian's: the directory is the gate */
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	ASSERT_EQ(errs.n, 0);
	sg_errors_free(&errs);
	sg_sasl_done();
	sg_config_unref(c);
	close(fd);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_hanging_backend(sg_config *good)
{
	char path[600];
	snprintf(path, sizeof path, "%s/hang.sock", t_dir);
	int lfd = hanging_server(path);
	sg_config *slow = config_for(path);
	static const char cred[] = "\0someone\0whatever";
	char okcred[256];
	int n = snprintf(okcred, sizeof okcred, "%c%s%c%s", 0, user, 0, pass);
	struct t_res r1, r2;
	memset(&r1, 0, sizeof r1);
	memset(&r2, 0, sizeof r2);

	sg_auth *a1 = new_auth(slow, "HANG");
	sg_auth *a2 = new_auth(good, "FAST");
	ASSERT_EQ(sg_auth_start(a1, &loop, "PLAIN", cred, sizeof cred - 1, true,
	                        t_on_res, &r1),
	          0);
	double t0 = now_s();
	ASSERT_EQ(sg_auth_start(a2, &loop, "PLAIN", okcred, (unsigned)n, true,
	                        t_on_res, &r2),
	          0);
	/* the loop keeps turning: a2's answer arrives while a1 hangs */
	while (r2.calls == 0 && now_s() - t0 < 10)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r2.calls, 1);
	ASSERT_EQ(r2.result, SG_AUTH_OK);
	ASSERT_EQ(r1.calls, 0); /* still hanging */

	/* Three more hang: [sasl] threads (4) Cyrus calls are stuck.  A burst
	 * beyond that is still served while the backend makes progress ... */
	struct t_res rh[3], r5;
	sg_auth *ah[3];
	memset(rh, 0, sizeof rh);
	for (int i = 0; i < 3; i++) {
		ah[i] = new_auth(slow, "HANG");
		ASSERT_EQ(sg_auth_start(ah[i], &loop, "PLAIN", cred, sizeof cred - 1,
		                        true, t_on_res, &rh[i]),
		          0);
	}
	sg_auth *a5 = new_auth(good, "FIFTH");
	memset(&r5, 0, sizeof r5);
	t0 = now_s();
	ASSERT_EQ(sg_auth_start(a5, &loop, "PLAIN", okcred, (unsigned)n, true,
	                        t_on_res, &r5),
	          0);
	while (r5.calls == 0 && now_s() - t0 < 10)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r5.result, SG_AUTH_OK);
	/* ... but once nothing has ended for SG_SASL_STALL_MS (2 s), AUTH is
	 * answered at once, 454, instead of piling up behind the stuck ones
	 * (and the pool threads the rest of saslgate needs stay free). */
	struct timespec ts = {2, 300 * 1000000L};
	nanosleep(&ts, NULL);
	sg_auth_reset(a5);
	memset(&r5, 0, sizeof r5);
	t0 = now_s();
	ASSERT_EQ(sg_auth_start(a5, &loop, "PLAIN", okcred, (unsigned)n, true,
	                        t_on_res, &r5),
	          0);
	while (r5.calls == 0 && now_s() - t0 < 10)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r5.calls, 1);
	ASSERT_EQ(r5.result, SG_AUTH_TEMPFAIL);
	ASSERT(now_s() - t0 < 1);
	ASSERT_EQ(r1.calls + rh[0].calls + rh[1].calls + rh[2].calls, 0);

	close(lfd); /* the backend dies: the hung reads end */
	t0 = now_s();
	while ((r1.calls + rh[0].calls + rh[1].calls + rh[2].calls) < 4 &&
	       now_s() - t0 < 10)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r1.calls, 1);
	ASSERT_EQ(r1.result, SG_AUTH_TEMPFAIL);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(rh[i].calls, 1);
		ASSERT_EQ(rh[i].result, SG_AUTH_TEMPFAIL);
		sg_auth_free(ah[i]);
	}
	/* the slots are free again */
	sg_auth_free(a5);
	a5 = new_auth(good, "SIXTH");
	ASSERT_EQ(t_start(&loop, a5, "PLAIN", okcred, n, &r5), SG_AUTH_OK);
	sg_auth_free(a5);
	sg_auth_free(a1);
	sg_auth_free(a2);
	sg_config_unref(slow);
}

int main(void)
{
	alarm(120);
	sg_log_level = getenv("SG_DEBUG") ? SG_LOG_DEBUG : SG_LOG_ERROR;
	t_mkdir();
	uv_loop_init(&loop);
	if (geteuid() != 0) {
		fprintf(stderr, "test_sasl_saslauthd: not root: needs useradd and "
		                "saslauthd -a shadow; skipped\n");
		return 0;
	}
	atexit(cleanup);
	signal(SIGALRM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	snprintf(user, sizeof user, "sgt%ld", (long)getpid());
	char cmd[256];
	snprintf(cmd, sizeof cmd, "useradd -M -s /usr/sbin/nologin '%s'", user);
	if (system(cmd) != 0) {
		fprintf(stderr, "useradd failed\n");
		return 2;
	}
	user_made = true;
	snprintf(cmd, sizeof cmd, "chpasswd");
	FILE *p = popen(cmd, "w");
	fprintf(p, "%s:%s\n", user, pass);
	ASSERT_EQ(pclose(p), 0);

	char dir[600], sock[700];
	snprintf(dir, sizeof dir, "%s/mux-dir", t_dir);
	mkdir(dir, 0755);
	snprintf(sock, sizeof sock, "%s/mux", dir);
	if (!start_saslauthd(dir)) {
		fprintf(stderr, "saslauthd did not start\n");
		return 2;
	}

	sg_config *c = config_for(sock);
	sg_errors errs = {0};
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	ASSERT_EQ(errs.n, 0);
	sg_errors_free(&errs);

	/* saslauthd serves plaintext only: CRAM-MD5 dropped though listed */
	sg_auth *a = new_auth(c, "M");
	ASSERT_STR_EQ(sg_auth_mechs(a), "PLAIN LOGIN");
	sg_auth_free(a);

	char who[256];
	ASSERT_EQ(plain(c, user, pass, who, sizeof who), SG_AUTH_OK);
	ASSERT(!strncmp(who, user, strlen(user)), "who: %s", who);
	ASSERT_EQ(plain(c, user, "wrong", NULL, 0), SG_AUTH_FAIL);
	ASSERT_EQ(plain(c, "nosuchuser-sg", pass, NULL, 0), SG_AUTH_FAIL);

	/* LOGIN through saslauthd */
	struct t_res r;
	a = new_auth(c, "L");
	ASSERT_EQ(t_start(&loop, a, "LOGIN", NULL, -1, &r), SG_AUTH_CONTINUE);
	ASSERT_EQ(t_step(&loop, a, user, (unsigned)strlen(user), &r),
	          SG_AUTH_CONTINUE);
	ASSERT_EQ(t_step(&loop, a, pass, (unsigned)strlen(pass), &r), SG_AUTH_OK);
	sg_auth_free(a);

	test_hanging_backend(c);

	/* saslauthd stops: its socket goes away */
	stop_saslauthd();
	ASSERT(wait_for_socket(sock, false));
	ASSERT_EQ(plain(c, user, pass, NULL, 0), SG_AUTH_TEMPFAIL);
	ASSERT_EQ(plain(c, user, "wrong", NULL, 0), SG_AUTH_TEMPFAIL);

	/* a socket file nobody listens on (saslauthd crashed): refused */
	int fd = hanging_server(sock);
	close(fd);
	ASSERT_EQ(access(sock, F_OK), 0);
	ASSERT_EQ(plain(c, user, pass, NULL, 0), SG_AUTH_TEMPFAIL);
	/* and `saslgate -t` says so */
	ASSERT_EQ(sg_sasl_reconfig(c, &errs), 0); /* a warning, not fatal */
	sg_errors_free(&errs);
	sg_sasl_done();
	ASSERT_EQ(sg_sasl_init(c, &errs), 0);
	if (ASSERT_EQ(errs.n, 1))
		ASSERT(strstr(errs.msg[0], "connection refused"));
	sg_errors_free(&errs);

	sg_sasl_done();
	sg_config_unref(c);
	test_permission_as_user();
	ASSERT_EQ(uv_loop_close(&loop), 0);
	cleanup();
	return CHECK_SUMMARY();
}
