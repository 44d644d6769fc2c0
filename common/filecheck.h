/* SPDX-License-Identifier: BSD-2-Clause */
/* common/filecheck.h: the file checks of `saslgate -t`.
 *
 * The daemon binds as root and then becomes [server] user, and it reads
 * several files after that (on SIGHUP, at the first upstream TLS, at every
 * AUTH of identity = auth), so root being able to open a file proves
 * nothing.  When -t runs as root and [server] user is set, a child process
 * takes that user's uid, gid and groups and opens every file the daemon
 * opens; otherwise the files are opened as whoever runs -t.  Each problem
 * is "FILE:LINE: PATH: what; fix: command", LINE being the line of the key
 * that names the file.
 *
 * Secrets ([tls] key and ecdsa_key, [upstream] auth_password_file) must
 * not be readable or writable by others, nor writable by their group.  Read
 * access through the group is allowed only when the service user is in that
 * group and does not own the file: that is the one reason for a group bit
 * (Debian's ssl-cert pattern: a key 0640 root:ssl-cert, the service user in
 * group ssl-cert); an owner needs no group bit, and any other group is
 * someone else reading the secret.  The service user is [server] user when
 * it exists, else the user running -t.
 *
 * The [sasl] backends (the sasldb file, the saslauthd socket) are checked
 * with the same user's rights by sasl/check.c, which knows the Cyrus
 * defaults, through sg_call_as_user. */
#ifndef SG_FILECHECK_H
#define SG_FILECHECK_H

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

/* What is wrong with the mode of a secret, as bits. */
enum {
	SG_SECRET_OTHERS_READ = 1 << 0,
	SG_SECRET_OTHERS_WRITE = 1 << 1,
	SG_SECRET_GROUP_WRITE = 1 << 2,
	SG_SECRET_GROUP_READ_OWNER = 1 << 3,   /* the service user owns it */
	SG_SECRET_GROUP_READ_FOREIGN = 1 << 4, /* not a group of the service user */
};

/* The rule above for a file of this mode and owner, read by the service
 * user svc_uid; svc_in_group: the file's group is one of that user's.  0
 * when the mode is fine. */
unsigned sg_secret_mode_problems(mode_t mode, uid_t owner, uid_t svc_uid,
                                 bool svc_in_group);

/* Check every file cfg names that the daemon opens (openable, as above)
 * and the modes of the secrets; problems are added to errs.  Returns true
 * when this process itself could not open a [tls] certificate or key, so
 * the caller can skip building the TLS context, which would only say it
 * again. */
bool sg_filecheck_config(const sg_config *cfg, sg_errors *errs);

/* Call fn(arg, res) in a child process that has become the user named user
 * (its uid, primary gid and supplementary groups) and copy the reslen
 * octets fn leaves at res back into this process's res.  For checks whose
 * answer depends on who asks (open, connect); only root can become another
 * user.  fn runs in the child after fork(2), where a process with threads
 * may rely on system calls and plain string functions only (open, socket,
 * connect, close, memset, snprintf without %m and floats).  false when it
 * could not be done (no such user, pipe, fork or setuid failed, the child
 * died): res is then unspecified, and the caller checks as itself or says
 * why it could not. */
bool sg_call_as_user(const char *user, void (*fn)(void *arg, void *res),
                     void *arg, void *res, size_t reslen);

#endif
