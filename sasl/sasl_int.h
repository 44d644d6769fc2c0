/* SPDX-License-Identifier: BSD-2-Clause */
/* sasl/sasl_int.h: what the files of sasl/ share among themselves.
 *
 * Not an interface for other folders (they use sasl/auth.h).  Nothing here
 * names a Cyrus type, so the helpers can be tested without <sasl/sasl.h>. */
#ifndef SG_SASL_INT_H
#define SG_SASL_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/config.h"

/* Cyrus' compiled-in default (PATH_SASLAUTHD_RUNDIR "/mux" on Debian). */
#define SG_SASLAUTHD_DEFAULT_PATH "/var/run/saslauthd/mux"

/* mech_list when the admin sets none: only what the password check can
 * serve.  saslauthd only ever sees plaintext passwords, so the
 * challenge-response mechanisms cannot work with it; auxprop (sasldb, sql,
 * ldapdb) keeps the secrets they need. */
#define SG_MECHS_DEFAULT_SASLAUTHD "PLAIN LOGIN"
#define SG_MECHS_DEFAULT_AUXPROP                                               \
	"PLAIN LOGIN CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 SCRAM-SHA-256"

/* The [sasl] key as the admin wrote it (NULL when unset). */
const sg_kv *sg_sasl_opt_kv(const sg_config *cfg, const char *key);
/* The value Cyrus' getopt callback answers: the admin's value, else our
 * default (mech_list), else NULL (Cyrus' own default). */
const char *sg_sasl_opt(const sg_config *cfg, const char *key);
/* Where a [sasl] key was set, else the main file without a line. */
sg_where sg_sasl_where(const sg_config *cfg, const char *key);

/* pwcheck_method names this method ("auxprop" when unset: Cyrus' default). */
bool sg_sasl_uses(const sg_config *cfg, const char *method);
/* saslauthd is the only password check: no server-side secrets. */
bool sg_sasl_saslauthd_only(const sg_config *cfg);
const char *sg_sasl_saslauthd_path(const sg_config *cfg);
/* Mechanisms that need a secret on the server (CRAM-MD5, DIGEST-MD5,
 * SCRAM-*, NTLM, OTP, SRP, PASSDSS). */
bool sg_sasl_mech_needs_secret(const char *mech);
/* Is this word (case-insensitive) in the admin's mech_list? */
bool sg_sasl_mech_listed(const sg_config *cfg, const char *mech);

/* Connect to the saslauthd socket and hang up: 0, or -errno. */
int sg_sasl_probe_socket(const char *path);
/* The sasldb file auxprop reads, when the [sasl] keys name one. */
const char *sg_sasl_sasldb_path(const sg_config *cfg);
/* Can the password backend answer at all?  (saslauthd socket connects,
 * sasldb readable.)  Called on a pool thread after a failure, so a dead
 * backend gives 454, not 535.  why: a reason for the log. */
bool sg_sasl_backend_down(const sg_config *cfg, char *why, size_t whysz);

/* ldapprobe.c: does any of these LDAP URIs (blanks or commas between them;
 * ldap://, ldaps://, ldapi://) answer an anonymous bind within timeout_ms
 * each?  0 when one does; else -errno of the last, and why: each URI with
 * its reason, for the log.  Blocking. */
#define SG_LDAP_PROBE_MS 1000
/* Is every URI of the list ldap://, ldaps:// or ldapi://?  0, or -1 with
 * the first that is not in bad. */
int sg_ldap_uris_check(const char *uris, char *bad, size_t badsz);
int sg_ldap_probe(const char *uris, unsigned timeout_ms, char *why,
                  size_t whysz);
/* The directory behind the password check, when the [sasl] keys name one:
 * saslauthd_ldap_servers with pwcheck_method saslauthd, ldapdb_uri with
 * auxprop_plugin ldapdb.  key: the [sasl] key it came from. */
const char *sg_sasl_directory(const sg_config *cfg, const char **key);
/* Cyrus' generic failure is a refused login when the directory answers:
 * ldapdb is the auxprop plugin (see sasl/auth.c, work()). */
bool sg_sasl_fail_is_nouser(const sg_config *cfg);

/* fdwatch.c: around each Cyrus call on a pool thread, so the sockets
 * libsasl2's password check leaves open (its saslauthd client after a
 * connection closed without an answer) are closed.  end returns how many
 * it closed. */
void sg_fdwatch_begin(void);
unsigned sg_fdwatch_end(void);

/* Start-up checks (check.c).  fatal: problems that make every AUTH fail
 * (unknown pwcheck_method, mech_list naming no plugin); env: things outside
 * the file (socket, sasldb permissions) that may be fixed later.  all_mechs
 * and all_auxprop: space-separated names of every mechanism and auxprop
 * plugin Cyrus loaded (all_auxprop NULL: unknown, not checked). */
void sg_sasl_check(const sg_config *cfg, const char *all_mechs,
                   const char *all_auxprop, sg_errors *fatal, sg_errors *env);

/* Sender map (sendermap.c): read cfg->sender_login_map and, with install,
 * put it in force (a reload checks everything first, then installs).
 * Problems go to errs as MAPFILE:LINE.  Returns 0 or -1. */
int sg_sender_map_load(const sg_config *cfg, sg_errors *errs, bool install);
void sg_sender_map_done(void);

/* ipfail.c */
void sg_ipfail_done(void);

#endif
