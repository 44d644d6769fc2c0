/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/check.c: the [sasl] options as Cyrus sees them, and the start-up
 * checks behind `saslgate -t` for them.
 *
 * The checks catch the classic Cyrus/Postfix support questions before the
 * first user does: a pwcheck_method that does not exist ("pam" belongs to
 * saslauthd -a), a mech_list naming a mechanism no installed plugin serves,
 * a saslauthd socket that is missing or not reachable by our user (group
 * "sasl" on Debian), a sasldb that cannot be read, an ldapdb directory
 * that does not answer.  Each problem
 * names the FILE:LINE of the key it is about.  Permissions are checked as
 * [server] user when we run as root (sg_call_as_user, common/filecheck.h): the daemon
 * drops to that user after binding, so root's view would say yes to
 * everything. */
#include "sasl_int.h"
#include "../common/filecheck.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SG_WORD_MAX 64 /* one word of pwcheck_method / mech_list */
#define SG_AUTH_WHY_LEN 256 /* a directory's failure, for a message */

static const char *const pwcheck_methods[] = {"auxprop", "saslauthd",
                                              "authdaemond", NULL};

/* Mechanisms whose server side needs the user's secret (or a verifier made
 * from it), which saslauthd never hands out. */
static const char *const secret_mechs[] = {"CRAM-MD5", "DIGEST-MD5", "NTLM",
                                           "OTP",      "SRP",       "PASSDSS-3DES-1",
                                           NULL};

const sg_kv *sg_sasl_opt_kv(const sg_config *cfg, const char *key)
{
	for (size_t i = 0; i < cfg->nsasl_opts; i++)
		if (strcmp(cfg->sasl_opts[i].key, key) == 0)
			return &cfg->sasl_opts[i];
	return NULL;
}

sg_where sg_sasl_where(const sg_config *cfg, const char *key)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, key);
	if (kv)
		return kv->where;
	sg_where w = {cfg->path, 0};
	return w;
}

/* Next white-space separated word of *s into w (truncated to SG_WORD_MAX). */
static bool next_word(const char **s, char w[SG_WORD_MAX])
{
	const char *p = *s;
	while (*p == ' ' || *p == '\t' || *p == ',')
		p++;
	if (!*p)
		return false;
	size_t n = 0;
	while (*p && *p != ' ' && *p != '\t' && *p != ',') {
		if (n < SG_WORD_MAX - 1)
			w[n++] = *p;
		p++;
	}
	w[n] = '\0';
	*s = p;
	return true;
}

static bool in_list(const char *list, const char *word)
{
	char w[SG_WORD_MAX];
	while (next_word(&list, w))
		if (strcasecmp(w, word) == 0)
			return true;
	return false;
}

bool sg_sasl_uses(const sg_config *cfg, const char *method)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, "pwcheck_method");
	const char *s = kv ? kv->value : "auxprop"; /* Cyrus' default */
	char w[SG_WORD_MAX];
	while (next_word(&s, w))
		if (strcasecmp(w, method) == 0)
			return true;
	return false;
}

bool sg_sasl_saslauthd_only(const sg_config *cfg)
{
	return sg_sasl_uses(cfg, "saslauthd") && !sg_sasl_uses(cfg, "auxprop");
}

const char *sg_sasl_opt(const sg_config *cfg, const char *key)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, key);
	if (kv)
		return kv->value;
	/* Our default mech_list: never ANONYMOUS, EXTERNAL or GSSAPI unless
	 * the admin names them, and nothing the password check cannot serve. */
	if (strcmp(key, "mech_list") == 0)
		return sg_sasl_uses(cfg, "auxprop") ? SG_MECHS_DEFAULT_AUXPROP
		                                    : SG_MECHS_DEFAULT_SASLAUTHD;
	return NULL;
}

const char *sg_sasl_saslauthd_path(const sg_config *cfg)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, "saslauthd_path");
	return kv && *kv->value ? kv->value : SG_SASLAUTHD_DEFAULT_PATH;
}

bool sg_sasl_mech_needs_secret(const char *mech)
{
	if (strncasecmp(mech, "SCRAM-", 6) == 0)
		return true;
	for (int i = 0; secret_mechs[i]; i++)
		if (strcasecmp(mech, secret_mechs[i]) == 0)
			return true;
	return false;
}

bool sg_sasl_mech_listed(const sg_config *cfg, const char *mech)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, "mech_list");
	const char *s = kv ? kv->value : "";
	char w[SG_WORD_MAX];
	while (next_word(&s, w))
		if (strcasecmp(w, mech) == 0)
			return true;
	return false;
}

int sg_sasl_probe_socket(const char *path)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	int e = errno;
	close(fd);
	return r < 0 ? -e : 0;
}

static int probe_read(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

struct probe_call {
	int (*fn)(const char *path);
	const char *path;
};

static void call_probe(void *arg, void *res)
{
	const struct probe_call *c = arg;
	int r = c->fn(c->path);
	memcpy(res, &r, sizeof r);
}

/* fn(path) with the rights of [server] user when we are root; 0 or
 * -errno.  When that user cannot be taken (unknown: the file checks report
 * it), as ourselves. */
static int as_user(const sg_config *cfg, int (*fn)(const char *),
                   const char *path)
{
	if (geteuid() != 0 || !cfg->user || !*cfg->user)
		return fn(path);
	struct probe_call c = {fn, path};
	int r;
	if (!sg_call_as_user(cfg->user, call_probe, &c, &r, sizeof r))
		return fn(path);
	return r;
}

static const char *who(const sg_config *cfg)
{
	if (geteuid() == 0 && cfg->user && *cfg->user)
		return cfg->user;
	struct passwd *pw = getpwuid(geteuid());
	return pw ? pw->pw_name : "this user";
}

static void check_saslauthd(const sg_config *cfg, sg_errors *env)
{
	const char *path = sg_sasl_saslauthd_path(cfg);
	const sg_kv *kv = sg_sasl_opt_kv(cfg, "saslauthd_path");
	sg_where w = sg_sasl_where(cfg, kv ? "saslauthd_path" : "pwcheck_method");
	struct stat st;

	if (stat(path, &st) < 0 && errno == ENOENT) {
		sg_errors_add(env, &w,
		              "saslauthd socket %s does not exist: saslauthd is "
		              "not running (Debian: package sasl2-bin; set "
		              "START=yes in /etc/default/saslauthd, then "
		              "systemctl enable saslauthd && systemctl restart "
		              "saslauthd; the socket is /run/saslauthd/mux, "
		              "Postfix' chrooted copy "
		              "/var/spool/postfix/var/run/saslauthd/mux)",
		              path);
		return;
	}
	int r = as_user(cfg, sg_sasl_probe_socket, path);
	const char *u = who(cfg);
	if (r == -EACCES || r == -EPERM)
		sg_errors_add(env, &w,
		              "saslauthd socket %s: permission denied for user %s "
		              "(Debian: adduser %s sasl)",
		              path, u, u);
	else if (r == -ECONNREFUSED)
		sg_errors_add(env, &w,
		              "saslauthd socket %s: connection refused: saslauthd "
		              "is not running",
		              path);
	else if (r < 0)
		sg_errors_add(env, &w, "saslauthd socket %s: %s", path, strerror(-r));
}

const char *sg_sasl_sasldb_path(const sg_config *cfg)
{
	const sg_kv *path_kv = sg_sasl_opt_kv(cfg, "sasldb_path");
	const sg_kv *plug = sg_sasl_opt_kv(cfg, "auxprop_plugin");
	bool sasldb = false;
	char w[SG_WORD_MAX];

	if (!sg_sasl_uses(cfg, "auxprop"))
		return NULL;
	if (plug) {
		const char *s = plug->value;
		while (next_word(&s, w))
			if (strcasecmp(w, "sasldb") == 0)
				sasldb = true;
	}
	if (!path_kv && !sasldb)
		return NULL; /* nothing we could name a line for */
	if (plug && !sasldb)
		return NULL; /* sasldb_path set but another auxprop plugin in use */
	return path_kv && *path_kv->value ? path_kv->value : "/etc/sasldb2";
}

static bool uses_ldapdb(const sg_config *cfg)
{
	const sg_kv *plug = sg_sasl_opt_kv(cfg, "auxprop_plugin");
	return plug && sg_sasl_uses(cfg, "auxprop") && in_list(plug->value, "ldapdb");
}

const char *sg_sasl_directory(const sg_config *cfg, const char **key)
{
	if (sg_sasl_uses(cfg, "saslauthd") && cfg->saslauthd_ldap_servers &&
	    *cfg->saslauthd_ldap_servers) {
		*key = "saslauthd_ldap_servers";
		return cfg->saslauthd_ldap_servers;
	}
	const sg_kv *uri = sg_sasl_opt_kv(cfg, "ldapdb_uri");
	if (uses_ldapdb(cfg) && uri && *uri->value) {
		*key = "ldapdb_uri";
		return uri->value;
	}
	return NULL;
}

bool sg_sasl_fail_is_nouser(const sg_config *cfg)
{
	const char *key;
	return uses_ldapdb(cfg) && sg_sasl_directory(cfg, &key) &&
	       strcmp(key, "ldapdb_uri") == 0;
}

bool sg_sasl_backend_down(const sg_config *cfg, char *why, size_t whysz)
{
	const char *db = sg_sasl_sasldb_path(cfg);
	const char *dir, *key;
	char reason[SG_AUTH_WHY_LEN];
	int r;

	if (sg_sasl_uses(cfg, "saslauthd")) {
		const char *sock = sg_sasl_saslauthd_path(cfg);
		r = sg_sasl_probe_socket(sock);
		if (r < 0) {
			snprintf(why, whysz, "saslauthd socket %s: %s", sock,
			         strerrordesc_np(-r)); /* MT-safe, unlike strerror */
			return true;
		}
	}
	/* saslauthd -a ldap and ldapdb: the directory behind them */
	if ((dir = sg_sasl_directory(cfg, &key)) &&
	    sg_ldap_probe(dir, SG_LDAP_PROBE_MS, reason, sizeof reason) < 0) {
		snprintf(why, whysz, "directory (%s) %s", key, reason);
		return true;
	}
	if (db && (r = probe_read(db)) < 0) {
		snprintf(why, whysz, "sasldb %s: %s", db, strerrordesc_np(-r));
		return true;
	}
	return false;
}

/* An ldapi:// socket needs file rights: probed as [server] user. */
static int probe_dir(const char *uris)
{
	return sg_ldap_probe(uris, SG_LDAP_PROBE_MS, NULL, 0);
}

/* saslauthd_ldap_servers: its form only (reaching the directory is
 * saslauthd's job; saslgate asks it after a failed login).  ldapdb_uri:
 * saslgate itself talks to that directory, so it must answer now. */
static void check_directory(const sg_config *cfg, sg_errors *fatal,
                            sg_errors *env)
{
	const char *key;
	const char *dir = sg_sasl_directory(cfg, &key);
	char reason[SG_AUTH_WHY_LEN];

	if (!dir)
		return;
	if (strcmp(key, "ldapdb_uri") != 0) {
		sg_where w = sg_config_where(cfg, "sasl", key);
		if (sg_ldap_uris_check(dir, reason, sizeof reason) < 0)
			sg_errors_add(fatal, &w,
			              "%s: %s is not an ldap://, ldaps:// or ldapi:// "
			              "URI (copy the ldap_servers line of "
			              "saslauthd.conf)",
			              key, reason);
		return;
	}
	sg_where w = sg_sasl_where(cfg, key);
	if (as_user(cfg, probe_dir, dir) == 0)
		return;
	sg_ldap_probe(dir, SG_LDAP_PROBE_MS, reason, sizeof reason);
	sg_errors_add(env, &w,
	              "directory %s does not answer (%s): every AUTH gets 454 "
	              "4.7.0 until it does; start it (Debian: systemctl start "
	              "slapd), or correct %s to the URI%s of your LDAP servers "
	              "(ldap://host, ldaps://host:636, "
	              "ldapi://%%2Frun%%2Fslapd%%2Fldapi), and check that a "
	              "firewall lets this host reach them",
	              dir, reason, key, strchr(dir, ' ') ? "s" : "");
}

static void check_sasldb(const sg_config *cfg, sg_errors *env)
{
	const char *path = sg_sasl_sasldb_path(cfg);
	if (!path)
		return;
	sg_where wh = sg_sasl_where(cfg, sg_sasl_opt_kv(cfg, "sasldb_path")
	                                     ? "sasldb_path"
	                                     : "auxprop_plugin");
	int r = as_user(cfg, probe_read, path);
	const char *u = who(cfg);
	if (r == -ENOENT)
		sg_errors_add(env, &wh,
		              "sasldb %s does not exist (create it: saslpasswd2 -f "
		              "%s -c USER)",
		              path, path);
	else if (r == -EACCES || r == -EPERM) {
		/* the fix names the user's own group, not its name */
		const struct passwd *pw = getpwnam(u);
		const struct group *gr = pw ? getgrgid(pw->pw_gid) : NULL;
		sg_errors_add(env, &wh,
		              "sasldb %s is not readable by user %s (chown root:%s "
		              "and chmod 0640 it)",
		              path, u, gr ? gr->gr_name : u);
	}
	else if (r < 0)
		sg_errors_add(env, &wh, "sasldb %s: %s", path, strerror(-r));
}

void sg_sasl_check(const sg_config *cfg, const char *all_mechs,
                   const char *all_auxprop, sg_errors *fatal, sg_errors *env)
{
	const sg_kv *kv = sg_sasl_opt_kv(cfg, "pwcheck_method");
	char w[SG_WORD_MAX];

	if (kv) {
		const char *s = kv->value;
		int n = 0;
		while (next_word(&s, w)) {
			bool ok = false;
			n++;
			for (int i = 0; pwcheck_methods[i]; i++)
				ok |= strcasecmp(w, pwcheck_methods[i]) == 0;
			if (!ok)
				sg_errors_add(fatal, &kv->where,
				              "pwcheck_method %s is not a Cyrus SASL method "
				              "(auxprop | saslauthd | authdaemond; \"%s\" may "
				              "be a saslauthd -a backend: use pwcheck_method "
				              "= saslauthd)",
				              w, w);
		}
		if (!n)
			sg_errors_add(fatal, &kv->where, "pwcheck_method is empty");
	}

	kv = sg_sasl_opt_kv(cfg, "mech_list");
	if (kv) {
		const char *s = kv->value;
		int n = 0;
		while (next_word(&s, w)) {
			n++;
			if (!in_list(all_mechs, w))
				sg_errors_add(fatal, &kv->where,
				              "mech_list names %s but no installed Cyrus SASL "
				              "plugin offers it (installed: %s; Debian "
				              "packages libsasl2-modules, "
				              "libsasl2-modules-gssapi-mit, "
				              "libsasl2-modules-ldap, libsasl2-modules-sql)",
				              w, *all_mechs ? all_mechs : "none");
		}
		if (!n)
			sg_errors_add(fatal, &kv->where, "mech_list is empty");
	}

	kv = sg_sasl_opt_kv(cfg, "auxprop_plugin");
	if (kv && all_auxprop && sg_sasl_uses(cfg, "auxprop")) {
		const char *s = kv->value;
		while (next_word(&s, w))
			if (!in_list(all_auxprop, w))
				sg_errors_add(fatal, &kv->where,
				              "auxprop_plugin %s is not installed (installed: "
				              "%s; Debian: libsasl2-modules-db for sasldb, "
				              "-sql, -ldap for ldapdb)",
				              w, *all_auxprop ? all_auxprop : "none");
	}

	if (sg_sasl_uses(cfg, "saslauthd"))
		check_saslauthd(cfg, env);
	check_sasldb(cfg, env);
	check_directory(cfg, fatal, env);
}
