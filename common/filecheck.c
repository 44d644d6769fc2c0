/* SPDX-License-Identifier: BSD-2-Clause */
/* common/filecheck.c: `saslgate -t` opens the daemon's files as the
 * daemon's user and checks the modes of its secrets; sg_call_as_user runs
 * the other checks that must be made as that user (filecheck.h). */
#include "filecheck.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SG_FC_ITEMS_MAX 8    /* files -t opens: certificates, keys, ... */
#define SG_FC_GROUPS_MAX 256 /* supplementary groups we carry over */
#define SG_FC_NAME_MAX 64    /* a user or group name in a message */

/* A user whose rights a file is checked with. */
struct fc_user {
	char name[SG_FC_NAME_MAX];
	char group[SG_FC_NAME_MAX]; /* primary group, for the fixes */
	uid_t uid;
	gid_t gid;
	gid_t groups[SG_FC_GROUPS_MAX];
	int ngroups;
};

struct fc_item {
	const char *path;
	sg_where where;
	bool secret;
	bool tls;
	bool dup; /* same path as an earlier item: opened once */
};

/* What the opener found, sent back from the child over a pipe. */
struct fc_result {
	int err;             /* 0, or the errno of open */
	char dir[PATH_MAX];  /* with EACCES: the first directory not searchable */
};

unsigned sg_secret_mode_problems(mode_t mode, uid_t owner, uid_t svc_uid,
                                 bool svc_in_group)
{
	unsigned p = 0;
	if (mode & S_IROTH)
		p |= SG_SECRET_OTHERS_READ;
	if (mode & S_IWOTH)
		p |= SG_SECRET_OTHERS_WRITE;
	if (mode & S_IWGRP)
		p |= SG_SECRET_GROUP_WRITE;
	if (mode & S_IRGRP) {
		if (owner == svc_uid)
			p |= SG_SECRET_GROUP_READ_OWNER;
		else if (!svc_in_group)
			p |= SG_SECRET_GROUP_READ_FOREIGN;
	}
	return p;
}

/* ------------------------------------------------------------- the users */

static void name_of_group(gid_t gid, char *out, size_t outlen)
{
	struct group *gr = getgrgid(gid);
	if (gr)
		snprintf(out, outlen, "%s", gr->gr_name);
	else
		snprintf(out, outlen, "%u", (unsigned)gid);
}

static void user_from_passwd(struct fc_user *u, const struct passwd *pw)
{
	snprintf(u->name, sizeof u->name, "%s", pw->pw_name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	name_of_group(pw->pw_gid, u->group, sizeof u->group);
	u->ngroups = SG_FC_GROUPS_MAX;
	if (getgrouplist(pw->pw_name, pw->pw_gid, u->groups, &u->ngroups) < 0)
		u->ngroups = SG_FC_GROUPS_MAX; /* more than we carry: the first ones */
}

/* The user running -t, with the groups this process has. */
static void user_current(struct fc_user *u)
{
	struct passwd *pw = getpwuid(geteuid());
	if (pw)
		snprintf(u->name, sizeof u->name, "%s", pw->pw_name);
	else
		snprintf(u->name, sizeof u->name, "%u", (unsigned)geteuid());
	u->uid = geteuid();
	u->gid = getegid();
	name_of_group(u->gid, u->group, sizeof u->group);
	int n = getgroups(SG_FC_GROUPS_MAX - 1, u->groups);
	u->ngroups = n < 0 ? 0 : n;
	u->groups[u->ngroups++] = u->gid;
}

static bool user_in_group(const struct fc_user *u, gid_t gid)
{
	if (u->gid == gid)
		return true;
	for (int i = 0; i < u->ngroups; i++)
		if (u->groups[i] == gid)
			return true;
	return false;
}

/* ------------------------------------------------------------ the opener */

/* Open path for reading as the daemon would; with EACCES, name the first
 * directory on the way that the caller cannot search (a 0640 key in a
 * 0700 directory is as unreadable as a 0600 one, and needs another fix). */
static void probe(const char *path, struct fc_result *r)
{
	memset(r, 0, sizeof *r);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r->err = errno;
	} else {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
			r->err = EISDIR;
		close(fd);
		return;
	}
	if (r->err != EACCES)
		return;
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	for (char *slash = strchr(dir + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (faccessat(AT_FDCWD, dir, X_OK, AT_EACCESS) < 0 && errno == EACCES) {
			snprintf(r->dir, sizeof r->dir, "%s", dir);
			return;
		}
		*slash = '/';
	}
}

/* fn(arg, res) in a child that became user u; its reslen octets of res
 * come back over a pipe.  Everything the child needs (u, arg) is read
 * before the fork, so the child calls only fn, the set*id calls, write
 * and _exit. */
static bool call_as(const struct fc_user *u, void (*fn)(void *arg, void *res),
                    void *arg, void *res, size_t reslen)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return false;
	fflush(NULL); /* nothing buffered twice */
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return false;
	}
	if (pid == 0) {
		close(p[0]);
		if (setgroups((size_t)u->ngroups, u->groups) < 0 || setgid(u->gid) < 0 ||
		    setuid(u->uid) < 0)
			_exit(1);
		fn(arg, res);
		const char *b = res;
		size_t left = reslen;
		while (left) {
			ssize_t w = write(p[1], b, left);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				_exit(1);
			b += w;
			left -= (size_t)w;
		}
		_exit(0);
	}
	close(p[1]);
	char *b = res;
	size_t got = 0;
	while (got < reslen) {
		ssize_t r = read(p[0], b + got, reslen - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return got == reslen;
}

bool sg_call_as_user(const char *user, void (*fn)(void *arg, void *res),
                     void *arg, void *res, size_t reslen)
{
	struct passwd *pw = user && *user ? getpwnam(user) : NULL;
	if (!pw)
		return false;
	struct fc_user u;
	user_from_passwd(&u, pw);
	return call_as(&u, fn, arg, res, reslen);
}

struct probe_set {
	const struct fc_item *items;
	size_t n;
};

/* Probe every item, for call_as or in this process: res is n fc_results. */
static void probe_all(void *arg, void *res)
{
	const struct probe_set *ps = arg;
	struct fc_result *r = res;
	for (size_t i = 0; i < ps->n; i++) {
		if (!ps->items[i].dup)
			probe(ps->items[i].path, &r[i]);
		else
			memset(&r[i], 0, sizeof r[i]);
	}
}

/* ------------------------------------------------------------- messages */

static void report_open(const struct fc_item *it, const struct fc_result *r,
                        const struct fc_user *u, sg_errors *errs)
{
	const char *p = it->path;
	if (r->err == EACCES && r->dir[0])
		sg_errors_add(errs, &it->where,
		              "%s: not readable by user %s: directory %s is not "
		              "searchable by it (%s); fix: chgrp %s %s && chmod g+x %s",
		              p, u->name, r->dir, strerror(r->err), u->group, r->dir,
		              r->dir);
	else if (r->err == EACCES || r->err == EPERM)
		sg_errors_add(errs, &it->where,
		              "%s: not readable by user %s (%s); fix: chown root:%s %s "
		              "&& chmod 0640 %s",
		              p, u->name, strerror(r->err), u->group, p, p);
	else if (r->err == ENOENT)
		sg_errors_add(errs, &it->where, "%s: no such file", p);
	else if (r->err == EISDIR)
		sg_errors_add(errs, &it->where, "%s: is a directory, not a file", p);
	else
		sg_errors_add(errs, &it->where, "%s: cannot open as user %s: %s", p,
		              u->name, strerror(r->err));
}

static void appendf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	if (used >= len - 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static const char *sep(const char *list)
{
	return list[0] ? ", " : "";
}

static void check_secret_mode(const struct fc_item *it,
                              const struct fc_user *svc, sg_errors *errs)
{
	struct stat st;
	if (stat(it->path, &st) < 0)
		return; /* not there or not reachable: the open check says so */
	unsigned p = sg_secret_mode_problems(st.st_mode, st.st_uid, svc->uid,
	                                     user_in_group(svc, st.st_gid));
	if (!p)
		return;
	char group[SG_FC_NAME_MAX], owner[SG_FC_NAME_MAX];
	name_of_group(st.st_gid, group, sizeof group);
	struct passwd *pw = getpwuid(st.st_uid);
	if (pw)
		snprintf(owner, sizeof owner, "%s", pw->pw_name);
	else
		snprintf(owner, sizeof owner, "%u", (unsigned)st.st_uid);

	char what[512] = "";
	if (p & SG_SECRET_OTHERS_READ)
		appendf(what, sizeof what, "%sreadable by others", sep(what));
	if (p & SG_SECRET_OTHERS_WRITE)
		appendf(what, sizeof what, "%swritable by others", sep(what));
	if (p & SG_SECRET_GROUP_WRITE)
		appendf(what, sizeof what, "%swritable by group %s", sep(what), group);
	if (p & SG_SECRET_GROUP_READ_OWNER)
		appendf(what, sizeof what, "%sreadable by group %s although user %s "
		        "owns it", sep(what), group, svc->name);
	if (p & SG_SECRET_GROUP_READ_FOREIGN)
		appendf(what, sizeof what, "%sreadable by group %s, which user %s is "
		        "not in", sep(what), group, svc->name);

	/* A service user that reads the secret through a foreign group (it is
	 * neither the owner nor root) needs the group to be its own; otherwise
	 * the group's read bit goes. */
	bool chgrp = (p & SG_SECRET_GROUP_READ_FOREIGN) && st.st_uid != svc->uid &&
	             svc->uid != 0;
	bool g_r = (p & SG_SECRET_GROUP_READ_OWNER) ||
	           ((p & SG_SECRET_GROUP_READ_FOREIGN) && !chgrp);
	bool g_w = p & SG_SECRET_GROUP_WRITE;
	char modes[32] = "";
	if (g_r || g_w)
		appendf(modes, sizeof modes, "g-%s%s", g_r ? "r" : "", g_w ? "w" : "");
	if (p & (SG_SECRET_OTHERS_READ | SG_SECRET_OTHERS_WRITE))
		appendf(modes, sizeof modes, "%so-rwx", modes[0] ? "," : "");
	char fix[2 * PATH_MAX + 128] = "";
	if (chgrp)
		appendf(fix, sizeof fix, "chgrp %s %s", svc->group, it->path);
	if (modes[0])
		appendf(fix, sizeof fix, "%schmod %s %s", chgrp ? " && " : "", modes,
		        it->path);
	sg_errors_add(errs, &it->where, "%s: secret %s (mode %04o, %s:%s); fix: %s",
	              it->path, what, (unsigned)(st.st_mode & 07777), owner, group,
	              fix);
}

/* ---------------------------------------------------------------- entry */

static void add_item(struct fc_item *items, size_t *n, const sg_config *cfg,
                     const char *path, const char *section, const char *key,
                     bool secret, bool tls)
{
	if (!path || !*path || *n >= SG_FC_ITEMS_MAX)
		return;
	struct fc_item *it = &items[(*n)++];
	it->path = path;
	it->where = sg_config_where(cfg, section, key);
	it->secret = secret;
	it->tls = tls;
	it->dup = false;
	for (size_t i = 0; i + 1 < *n; i++)
		if (strcmp(items[i].path, path) == 0)
			it->dup = true;
}

bool sg_filecheck_config(const sg_config *cfg, sg_errors *errs)
{
	struct fc_item items[SG_FC_ITEMS_MAX];
	size_t n = 0;
	add_item(items, &n, cfg, cfg->tls_certificate, "tls", "certificate", false,
	         true);
	add_item(items, &n, cfg, cfg->tls_key, "tls", "key", true, true);
	add_item(items, &n, cfg, cfg->tls_ecdsa_certificate, "tls",
	         "ecdsa_certificate", false, true);
	add_item(items, &n, cfg, cfg->tls_ecdsa_key, "tls", "ecdsa_key", true, true);
	if (cfg->identity == SG_ID_AUTH)
		add_item(items, &n, cfg, cfg->auth_password_file, "upstream",
		         "auth_password_file", true, false);
	if (cfg->upstream_tls == SG_UTLS_REQUIRED)
		add_item(items, &n, cfg, cfg->upstream_ca_file, "upstream", "ca_file",
		         false, false);
	add_item(items, &n, cfg, cfg->sender_login_map, "sasl", "sender_login_map",
	         false, false);

	/* The service user: [server] user when it exists, else whoever runs
	 * -t.  Files are opened with its rights only when we can become it. */
	struct fc_user svc, me;
	user_current(&me);
	svc = me;
	bool drop = false;
	if (cfg->user && *cfg->user) {
		struct passwd *pw = getpwnam(cfg->user);
		if (pw) {
			user_from_passwd(&svc, pw);
			drop = geteuid() == 0 && pw->pw_uid != 0;
		} else if (geteuid() == 0) {
			sg_where w = sg_config_where(cfg, "server", "user");
			sg_errors_add(errs, &w,
			              "user %s: no such user (the daemon could not drop "
			              "root to it)",
			              cfg->user);
		}
	}

	struct fc_result res[SG_FC_ITEMS_MAX];
	struct probe_set ps = {items, n};
	const struct fc_user *opener = drop ? &svc : &me;
	if (drop && !call_as(&svc, probe_all, &ps, res, n * sizeof *res)) {
		sg_where w = sg_config_where(cfg, "server", "user");
		sg_errors_add(errs, &w,
		              "cannot check the files as user %s (fork or setuid "
		              "failed): checked as %s instead",
		              svc.name, me.name);
		drop = false;
		opener = &me;
	}
	if (!drop)
		probe_all(&ps, res);

	bool tls_bad = false;
	for (size_t i = 0; i < n; i++) {
		if (items[i].dup)
			continue;
		if (res[i].err) {
			report_open(&items[i], &res[i], opener, errs);
			tls_bad |= items[i].tls && !drop; /* we could not open it */
		}
	}
	for (size_t i = 0; i < n; i++) {
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			seen |= items[j].secret && strcmp(items[j].path, items[i].path) == 0;
		if (items[i].secret && !seen)
			check_secret_mode(&items[i], &svc, errs);
	}
	return tls_bad;
}
