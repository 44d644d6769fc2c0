/* SPDX-License-Identifier: BSD-2-Clause */
/* common/config.h: the configuration of saslgate, as loaded from the INI file.
 *
 * One table of keys (config.c: section, name, type, default, doc) drives the
 * loader, `-t`, the defaults and the man page.  A loaded sg_config is
 * read-only and shared by every worker; a reload builds a new one and swaps a
 * reference-counted pointer (sg_config_ref/unref), so live sessions keep the
 * configuration they started with. */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SG_VERSION "0.1.0"
#define SG_DEFAULT_CONFIG "/etc/saslgate/saslgate.conf"

enum sg_tls_mode { SG_TLS_NONE = 0, SG_TLS_STARTTLS, SG_TLS_IMPLICIT };
enum sg_proxy_proto { SG_PP_NO = 0, SG_PP_V1, SG_PP_V2, SG_PP_ANY };
enum sg_identity_mode {
	SG_ID_XCLIENT = 0,
	SG_ID_XFORWARD,
	SG_ID_HEADER,
	SG_ID_AUTH,
	SG_ID_NONE
};
enum sg_up_tls { SG_UTLS_NONE = 0, SG_UTLS_STARTTLS, SG_UTLS_REQUIRED };
enum sg_bare_newline { SG_BARE_REJECT = 0, SG_BARE_NORMALIZE };
/* [policy] at: where the policy server is asked (Postfix protocol_state) */
enum sg_policy_at { SG_POLICY_AT_RCPT = 0, SG_POLICY_AT_DATA,
	            SG_POLICY_AT_END_OF_DATA };
/* [policy] default_action: no server answered in time */
enum sg_policy_default { SG_POLICY_DEFAULT_DEFER = 0, SG_POLICY_DEFAULT_DUNNO };

/* Where a value came from, for "FILE:LINE: message" errors after loading. */
typedef struct sg_where {
	const char *file; /* interned in sg_config->files; NULL = default */
	int line;
} sg_where;

/* One entry of [listener] proxy_trusted_networks: an address and how many
 * of its leading bits must match.  IPv4-mapped IPv6 entries are stored as
 * IPv4, so one comparison covers both ways a balancer's address arrives. */
typedef struct sg_net {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order; the first 4 octets for AF_INET */
	unsigned prefix;  /* 0-32 or 0-128 */
} sg_net;

typedef struct sg_listener_cfg {
	char *name;
	char *address; /* as written: "0.0.0.0:587", "[::]:465" */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int tls;            /* enum sg_tls_mode */
	bool require_auth;
	bool require_tls_for_auth;
	int proxy_protocol; /* enum sg_proxy_proto */
	sg_net *trusted;    /* proxy_trusted_networks: who may send the header */
	size_t ntrusted;
	sg_where where;     /* its first key line (libinih reports no section lines) */
	sg_where where_tls; /* its tls = line */
	sg_where where_proxy; /* its proxy_protocol = line */
} sg_listener_cfg;

typedef struct sg_upstream_server {
	char *host; /* name or address, brackets removed for IPv6 */
	char *port; /* numeric string */
	char *label; /* "host:port", "[v6]:port": its name in logs and metrics */
	sg_where where;
} sg_upstream_server;

/* [policy] server: "inet:HOST:PORT" or "unix:PATH" (Postfix's forms). */
typedef struct sg_policy_server {
	char *spec; /* as written, for the log */
	char *host; /* inet: name or address, brackets removed; unix: NULL */
	char *port;
	char *path; /* unix: the socket; inet: NULL */
	sg_where where;
} sg_policy_server;

typedef struct sg_kv {
	char *key;
	char *value;
	sg_where where;
} sg_kv;

typedef struct sg_config {
	int refcnt; /* atomic; see sg_config_ref */
	char *path;  /* the main file */

	/* [server] */
	char *hostname;
	char *user;
	int workers; /* resolved: "auto" = number of cores */
	unsigned max_connections;
	uint64_t shutdown_timeout_ms;
	int log_level;
	bool resolve_client; /* reverse lookup of each client (proxy/client_name.h) */
	bool strict_envelope; /* MAIL/RCPT paths need their angle brackets */

	/* [listener NAME] */
	sg_listener_cfg *listeners;
	size_t nlisteners;

	/* [tls] */
	char *tls_certificate;
	char *tls_key;
	char *tls_ecdsa_certificate; /* optional second pair (ECDSA) */
	char *tls_ecdsa_key;
	int tls_min_version; /* OpenSSL TLS1_2_VERSION etc. */
	char *tls_ciphers;   /* TLS <= 1.2 cipher list, "" = OpenSSL default */
	bool tls_session_tickets;

	/* [sasl] */
	char *sasl_service;
	char *sasl_realm;
	uint64_t failure_delay_ms;
	unsigned max_failures;
	unsigned ip_failure_limit;     /* 0 = off */
	uint64_t ip_failure_window_ms;
	char *sender_login_map;        /* "" = off */
	char *saslauthd_ldap_servers;  /* saslauthd -a ldap's directory, probed
	                                  after a failure; "" = none */
	unsigned sasl_threads;         /* Cyrus calls that may wait on a
	                                  slow backend; sizes the pool */
	unsigned sasl_cache_size;      /* credential cache entries; 0 = off */
	uint64_t sasl_cache_ttl_ms;    /* a success is answered from it this long */
	uint64_t sasl_cache_negative_ttl_ms; /* a failure; 0 = never cached */
	sg_kv *sasl_opts;              /* every other [sasl] key, in order */
	size_t nsasl_opts;

	/* [upstream] */
	sg_upstream_server *servers;
	size_t nservers;
	int identity; /* enum sg_identity_mode */
	char *upstream_helo;
	char *auth_user;
	char *auth_password_file;
	int upstream_tls; /* enum sg_up_tls */
	char *upstream_ca_file;
	char *upstream_tls_name; /* name to verify, "" = the server's host */
	uint64_t connect_timeout_ms;
	uint64_t upstream_timeout_ms; /* per reply */
	unsigned pool_size;           /* idle links kept per worker; 0 = off */
	uint64_t pool_idle_timeout_ms; /* a kept link unused this long: QUIT */

	/* [limits] */
	uint64_t max_message_size;
	unsigned max_recipients;
	uint64_t idle_timeout_ms;
	int bare_newline; /* enum sg_bare_newline */

	/* [policy]: none without a server (proxy/policy.h) */
	sg_policy_server *policy_servers;
	size_t npolicy_servers;
	int policy_at;      /* enum sg_policy_at */
	uint64_t policy_timeout_ms;
	int policy_default; /* enum sg_policy_default */

	/* [metrics]: the Prometheus endpoint (proxy/metrics_http.h) */
	char *metrics_address; /* "" = off */
	struct sockaddr_storage metrics_addr;
	socklen_t metrics_addrlen;
	bool metrics_public; /* a non-loopback address is allowed */

	/* bookkeeping: every key's origin, interned file names */
	struct sg_where_entry *wheres;
	size_t nwheres;
	char **files;
	size_t nfiles;
} sg_config;

/* Collected problems, each "FILE:LINE: message" (or "FILE: message"). */
typedef struct sg_errors {
	char **msg;
	size_t n;
} sg_errors;

void sg_errors_add(sg_errors *e, const sg_where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sg_errors_print(const sg_errors *e, void *stdio_file);
void sg_errors_log(const sg_errors *e); /* one log_error line each */
void sg_errors_free(sg_errors *e);

/* Load and validate a file (and its includes).  Returns NULL and fills errs
 * when anything is wrong; never exits.  The result has refcnt 1. */
sg_config *sg_config_load(const char *path, sg_errors *errs);
sg_config *sg_config_ref(sg_config *c);
void sg_config_unref(sg_config *c);

/* Where [section] key was set; unset keys: the main file, line 0. */
sg_where sg_config_where(const sg_config *c, const char *section,
                         const char *key);

/* Value parsers, exposed for tests and other modules. 0 ok, -1 bad. */
int sg_parse_duration_ms(const char *s, uint64_t *out);
int sg_parse_size(const char *s, uint64_t *out);
int sg_parse_bool(const char *s, bool *out);
/* "host:port", "[v6]:port", "v4:port" -> sockaddr; -1 with *why set */
int sg_parse_sockaddr(const char *s, struct sockaddr_storage *ss,
                      socklen_t *len, const char **why);
/* "host:port" / "[v6]:port" / "host" (port defaults to def_port) */
int sg_parse_hostport(const char *s, const char *def_port, char **host,
                      char **port, const char **why);

/* "10.0.0.0/8 192.0.2.1, ::1 2001:db8::/32" (blanks and/or commas between
 * entries) -> *nets (malloc'd, *n entries; an empty list is NULL, 0).  -1
 * on a bad entry, with the entry in bad and the reason in *why. */
int sg_parse_netlist(const char *s, sg_net **nets, size_t *n, char *bad,
                     size_t badlen, const char **why);
/* Is the address sa (AF_INET or AF_INET6, IPv4-mapped IPv6 counted as
 * IPv4) inside one of the n entries? */
bool sg_net_match(const sg_net *nets, size_t n, const struct sockaddr *sa);

/* Print the key table as man-page source (saslgate --man-keys); used to
 * keep saslgate.conf(5) in step with the code. */
void sg_config_print_keys(void *stdio_file);

#endif
