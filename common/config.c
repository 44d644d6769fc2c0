/* SPDX-License-Identifier: BSD-2-Clause */
/* common/config.c: the configuration loader.
 *
 * libinih does the lexing; a reader of ours feeds it one line at a time so we
 * know the line number of every key (Debian's libinih is built without
 * INI_HANDLER_LINENO), strips leading blanks (inih would otherwise treat an
 * indented line as a continuation) and inline "#"/";" comments (the shipped
 * files use "key = value   # why").  One table below says, for each key, its
 * section, type, default and one line of documentation; the loader, the
 * defaults and `saslgate --man-keys` all come from it. */

#include "config.h"

#include "log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <ini.h>
#include <limits.h>
#include <stdint.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SG_MAX_INCLUDE_DEPTH 8
#define SG_MAX_CONF_LINE 4096
/* A configuration file (main or included) is a regular file of at most
 * this size: an include naming /dev/zero, a FIFO or a huge file must give
 * an error, not a hang or an exhausted memory. */
#define SG_MAX_CONF_FILE (4u << 20)
/* Files one load may read in all: includes that fan out (each file
 * including several that include several) end here, not in minutes. */
#define SG_MAX_CONF_FILES 256

struct sg_where_entry {
	char *section; /* "server", "listener NAME", ... */
	char *key;
	sg_where where;
};

/* ---------------------------------------------------------------- errors */

void sg_errors_add(sg_errors *e, const sg_where *w, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char *line;
	if (w && w->file && w->line > 0)
		line = sg_xasprintf("%s:%d: %s", w->file, w->line, msg);
	else if (w && w->file)
		line = sg_xasprintf("%s: %s", w->file, msg);
	else
		line = sg_xstrdup(msg);
	e->msg = sg_xreallocarray(e->msg, e->n + 1, sizeof *e->msg);
	e->msg[e->n++] = line;
}

void sg_errors_print(const sg_errors *e, void *f)
{
	for (size_t i = 0; i < e->n; i++)
		fprintf((FILE *)f, "%s\n", e->msg[i]);
}

void sg_errors_log(const sg_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		log_error(NULL, "%s", e->msg[i]);
}

void sg_errors_free(sg_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msg[i]);
	free(e->msg);
	e->msg = NULL;
	e->n = 0;
}

/* ---------------------------------------------------------- value parsers */

static int parse_number(const char *s, uint64_t *num, const char **unit)
{
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	*num = v;
	*unit = end;
	return 0;
}

int sg_parse_duration_ms(const char *s, uint64_t *out)
{
	uint64_t n, mul;
	const char *u;
	if (parse_number(s, &n, &u) < 0)
		return -1;
	if (strcmp(u, "ms") == 0)
		mul = 1;
	else if (*u == '\0' || strcmp(u, "s") == 0)
		mul = 1000; /* a bare number is seconds, as in Postfix */
	else if (strcmp(u, "m") == 0)
		mul = 60000;
	else if (strcmp(u, "h") == 0)
		mul = 3600000;
	else
		return -1;
	if (n > UINT64_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

int sg_parse_size(const char *s, uint64_t *out)
{
	uint64_t n, mul;
	const char *u;
	if (parse_number(s, &n, &u) < 0)
		return -1;
	if (*u == '\0')
		mul = 1;
	else if (strcasecmp(u, "k") == 0)
		mul = 1024;
	else if (strcasecmp(u, "m") == 0)
		mul = 1024 * 1024;
	else if (strcasecmp(u, "g") == 0)
		mul = 1024ULL * 1024 * 1024;
	else
		return -1;
	if (n > UINT64_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

int sg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return *out = true, 0;
		if (strcasecmp(s, no[i]) == 0)
			return *out = false, 0;
	}
	return -1;
}

static int parse_port(const char *p, const char **why)
{
	if (!*p) {
		*why = "missing port";
		return -1;
	}
	char *end;
	errno = 0;
	long v = strtol(p, &end, 10);
	if (*end || errno || end == p) {
		*why = "port is not a number";
		return -1;
	}
	if (v < 1 || v > 65535) {
		*why = "port out of range (1-65535)";
		return -1;
	}
	return (int)v;
}

int sg_parse_hostport(const char *s, const char *def_port, char **host,
                      char **port, const char **why)
{
	const char *h = s, *hend, *p = NULL;
	if (*s == '[') {
		hend = strchr(s, ']');
		if (!hend) {
			*why = "missing ']' after IPv6 address";
			return -1;
		}
		h = s + 1;
		if (hend[1] == ':')
			p = hend + 2;
		else if (hend[1] != '\0') {
			*why = "junk after ']'";
			return -1;
		}
	} else {
		const char *c = strchr(s, ':');
		if (c && strchr(c + 1, ':')) {
			*why = "IPv6 addresses need brackets: [::1]:25";
			return -1;
		}
		hend = c ? c : s + strlen(s);
		if (c)
			p = c + 1;
	}
	if (hend == h) {
		*why = "missing host";
		return -1;
	}
	if (!p && !def_port) {
		*why = "missing :port";
		return -1;
	}
	if (parse_port(p ? p : def_port, why) < 0)
		return -1;
	*host = sg_xstrndup(h, (size_t)(hend - h));
	*port = sg_xstrdup(p ? p : def_port);
	return 0;
}

int sg_parse_sockaddr(const char *s, struct sockaddr_storage *ss,
                      socklen_t *len, const char **why)
{
	char *host, *port;
	if (sg_parse_hostport(s, NULL, &host, &port, why) < 0)
		return -1;
	int pn = atoi(port);
	int rc = 0;
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)pn);
		*len = sizeof *a4;
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)pn);
		*len = sizeof *a6;
	} else {
		*why = "not an IP address (listeners take 0.0.0.0:587 or [::]:587)";
		rc = -1;
	}
	free(host);
	free(port);
	return rc;
}

/* One entry of a network list: "192.0.2.1", "10.0.0.0/8", "2001:db8::/32".
 * Host bits past the prefix are refused rather than masked: "10.1.2.3/8"
 * most likely meant one host, and trusting the whole /8 instead would let
 * every machine there choose its client address. */
static int parse_net(const char *e, sg_net *net, const char **why)
{
	char host[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(e, '/');
	size_t hl = slash ? (size_t)(slash - e) : strlen(e);
	if (hl == 0 || hl >= sizeof host) {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	memcpy(host, e, hl);
	host[hl] = '\0';
	memset(net, 0, sizeof *net);
	unsigned max;
	if (inet_pton(AF_INET, host, net->addr) == 1) {
		net->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, net->addr) == 1) {
		net->family = AF_INET6;
		max = 128;
	} else {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	net->prefix = max;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 3 ||
		    (unsigned)atoi(p) > max) {
			*why = max == 32 ? "prefix length is not 0-32"
			                 : "prefix length is not 0-128";
			return -1;
		}
		net->prefix = (unsigned)atoi(p);
	}
	for (unsigned bit = net->prefix; bit < max; bit++)
		if (net->addr[bit / 8] & (0x80u >> (bit % 8))) {
			*why = "address has bits set past the prefix length";
			return -1;
		}
	/* ::ffff:a.b.c.d/96+n is the IPv4 prefix a.b.c.d/n */
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (net->family == AF_INET6 && net->prefix >= 96 &&
	    memcmp(net->addr, mapped, sizeof mapped) == 0) {
		memmove(net->addr, net->addr + 12, 4);
		memset(net->addr + 4, 0, 12);
		net->family = AF_INET;
		net->prefix -= 96;
	}
	return 0;
}

int sg_parse_netlist(const char *s, sg_net **nets, size_t *n, char *bad,
                     size_t badlen, const char **why)
{
	sg_net *list = NULL;
	size_t count = 0;
	const char *sep = " \t,";
	for (s += strspn(s, sep); *s; s += strspn(s, sep)) {
		size_t len = strcspn(s, sep);
		char entry[INET6_ADDRSTRLEN + 8];
		snprintf(bad, badlen, "%.*s", (int)len, s);
		sg_net net;
		if (len >= sizeof entry) {
			*why = "not an IPv4 or IPv6 address";
			free(list);
			return -1;
		}
		memcpy(entry, s, len);
		entry[len] = '\0';
		if (parse_net(entry, &net, why) < 0) {
			free(list);
			return -1;
		}
		list = sg_xreallocarray(list, count + 1, sizeof *list);
		list[count++] = net;
		s += len;
	}
	*nets = list;
	*n = count;
	return 0;
}

bool sg_net_match(const sg_net *nets, size_t n, const struct sockaddr *sa)
{
	uint8_t a[16];
	int family;
	if (sa->sa_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		/* a [::] listener sees IPv4 peers as ::ffff:a.b.c.d */
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			memcpy(a, a6->s6_addr + 12, 4);
			family = AF_INET;
		} else {
			memcpy(a, a6->s6_addr, 16);
			family = AF_INET6;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (nets[i].family != family)
			continue;
		unsigned full = nets[i].prefix / 8, rest = nets[i].prefix % 8;
		if (memcmp(a, nets[i].addr, full) != 0)
			continue;
		if (rest && ((a[full] ^ nets[i].addr[full]) & (0xffu << (8 - rest)) & 0xff))
			continue;
		return true;
	}
	return false;
}

/* -------------------------------------------------------------- key table */

enum ktype {
	K_STR,
	K_BOOL,
	K_UINT,
	K_DURATION,
	K_SIZE,
	K_ENUM,
	K_LOGLEVEL,
	K_WORKERS,
	K_TLSVER,
	K_SERVER, /* [upstream] server: repeatable */
	K_PSERVER, /* [policy] server: repeatable */
	K_ADDRESS, /* [listener] address */
	K_NETS     /* [listener] proxy_trusted_networks */
};

struct key {
	const char *section; /* "listener" for [listener NAME] */
	const char *name;
	enum ktype type;
	size_t off; /* into sg_config, or sg_listener_cfg for "listener" */
	const char *def; /* default as text; NULL = none */
	const char *const *names; /* K_ENUM values, index = enum value */
	const char *doc;
};

static const char *const tls_modes[] = {"none", "starttls", "implicit", NULL};
static const char *const pp_modes[] = {"no", "v1", "v2", "any", NULL};
static const char *const id_modes[] = {"xclient", "xforward", "header",
                                       "auth",    "none",     NULL};
static const char *const utls_modes[] = {"none", "starttls", "required", NULL};
static const char *const bare_modes[] = {"reject", "normalize", NULL};
static const char *const policy_ats[] = {"rcpt", "data", "end_of_data", NULL};
static const char *const policy_defaults[] = {"defer", "dunno", NULL};

#define C(f) offsetof(sg_config, f)
#define L(f) offsetof(sg_listener_cfg, f)

static const struct key keys[] = {
    {"server", "hostname", K_STR, C(hostname), "",
     NULL, "name in the greeting, EHLO and Received (default: the host name)"},
    {"server", "user", K_STR, C(user), "", NULL,
     "drop privileges to this user after binding (when started as root)"},
    {"server", "workers", K_WORKERS, C(workers), "1", NULL,
     "event-loop threads; \"auto\" = one per core"},
    {"server", "max_connections", K_UINT, C(max_connections), "10000", NULL,
     "client connections at once; past it 421 4.7.0 at connect"},
    {"server", "shutdown_timeout", K_DURATION, C(shutdown_timeout_ms), "30s",
     NULL, "on SIGTERM, how long sessions may finish before 421"},
    {"server", "log_level", K_LOGLEVEL, C(log_level), "info", NULL,
     "error | warn | info | debug"},
    {"server", "resolve_client", K_BOOL, C(resolve_client), "no", NULL,
     "look the client's address up (reverse DNS, forward-confirmed) for "
     "XCLIENT/XFORWARD NAME= and the Received header; no: NAME=[UNAVAILABLE]"},
    {"server", "strict_envelope", K_BOOL, C(strict_envelope), "no", NULL,
     "\"yes\": MAIL FROM / RCPT TO without <angle brackets> get 501; "
     "\"no\": taken and relayed as <addr>"},

    {"listener", "address", K_ADDRESS, 0, NULL, NULL,
     "address:port to listen on, e.g. 0.0.0.0:587 or [::]:587 (required)"},
    {"listener", "tls", K_ENUM, L(tls), "starttls", tls_modes,
     "starttls | implicit (port 465) | none"},
    {"listener", "require_auth", K_BOOL, L(require_auth), "yes", NULL,
     "MAIL before AUTH gets 530 5.7.0; \"no\" proxies unauthenticated "
     "sessions too (no identity; the upstream's relay rules apply)"},
    {"listener", "require_tls_for_auth", K_BOOL, L(require_tls_for_auth),
     "yes", NULL, "no AUTH offered or accepted before TLS"},
    {"listener", "proxy_protocol", K_ENUM, L(proxy_protocol), "no", pp_modes,
     "no | v1 | v2 | any: require a HAProxy PROXY header first"},
    {"listener", "proxy_trusted_networks", K_NETS, 0, "", NULL,
     "addresses and CIDR prefixes (blanks or commas between them) of the "
     "HAProxy hosts that may send the PROXY header; other peers are closed "
     "at once, unanswered; required when proxy_protocol is not no"},

    {"tls", "certificate", K_STR, C(tls_certificate), "", NULL,
     "certificate chain, PEM (leaf first)"},
    {"tls", "key", K_STR, C(tls_key), "", NULL, "private key, PEM"},
    {"tls", "ecdsa_certificate", K_STR, C(tls_ecdsa_certificate), "", NULL,
     "optional second chain (ECDSA), served to clients that offer it"},
    {"tls", "ecdsa_key", K_STR, C(tls_ecdsa_key), "", NULL,
     "private key of ecdsa_certificate"},
    {"tls", "min_version", K_TLSVER, C(tls_min_version), "TLSv1.2", NULL,
     "TLSv1 | TLSv1.1 | TLSv1.2 | TLSv1.3"},
    {"tls", "ciphers", K_STR, C(tls_ciphers), "", NULL,
     "OpenSSL cipher list for TLS 1.2 and below (empty: ECDHE with AES-GCM "
     "or ChaCha20-Poly1305 only, Mozilla \"intermediate\")"},
    {"tls", "session_tickets", K_BOOL, C(tls_session_tickets), "yes", NULL,
     "RFC 5077 session tickets for resumption"},

    {"sasl", "service", K_STR, C(sasl_service), "smtp", NULL,
     "Cyrus SASL service name"},
    {"sasl", "realm", K_STR, C(sasl_realm), "", NULL,
     "user realm (empty: Cyrus default)"},
    {"sasl", "failure_delay", K_DURATION, C(failure_delay_ms), "3s", NULL,
     "tarpit before each 535"},
    {"sasl", "max_failures", K_UINT, C(max_failures), "3", NULL,
     "failed AUTHs per session, then 421 4.7.0 and close"},
    {"sasl", "ip_failure_limit", K_UINT, C(ip_failure_limit), "10", NULL,
     "failed AUTHs per client address within ip_failure_window before "
     "AUTH answers 454 4.7.0 (0 = off)"},
    {"sasl", "ip_failure_window", K_DURATION, C(ip_failure_window_ms), "10m",
     NULL, "window of ip_failure_limit"},
    {"sasl", "sender_login_map", K_STR, C(sender_login_map), "", NULL,
     "file: login -> allowed senders (addresses, @domains); \"=login\" "
     "rule; a foreign MAIL FROM gets 553 5.7.1 (empty: off)"},
    {"sasl", "saslauthd_ldap_servers", K_STR, C(saslauthd_ldap_servers), "",
     NULL,
     "with saslauthd -a ldap: its ldap_servers; after a failed check "
     "saslgate asks them, and if none answers within 1s AUTH gets 454 "
     "4.7.0 (saslauthd says the same \"NO\" for a directory down and a "
     "wrong password)"},
    {"sasl", "threads", K_UINT, C(sasl_threads), "4", NULL,
     "SASL calls that may wait on a slow backend at once (1-60); the "
     "libuv pool is 16 x threads + 2; past threads calls in flight with "
     "no answer for 2s, AUTH gets 454 at once"},
    {"sasl", "cache_size", K_UINT, C(sasl_cache_size), "0", NULL,
     "credential cache: PLAIN/LOGIN results kept, in entries, least "
     "recently used dropped first (0 = off; at most 1000000)"},
    {"sasl", "cache_ttl", K_DURATION, C(sasl_cache_ttl_ms), "1h", NULL,
     "with cache_size: how long a success is answered from the cache "
     "(0 = successes not cached)"},
    {"sasl", "cache_negative_ttl", K_DURATION,
     C(sasl_cache_negative_ttl_ms), "5m", NULL,
     "with cache_size: how long a wrong password or unknown user is "
     "answered from the cache (0 = failures not cached)"},

    {"upstream", "server", K_SERVER, 0, NULL, NULL,
     "host:port of the MTA; repeatable, tried in order"},
    {"upstream", "identity", K_ENUM, C(identity), "xclient", id_modes,
     "xclient | xforward | header | auth | none"},
    {"upstream", "helo", K_STR, C(upstream_helo), "", NULL,
     "our EHLO name upstream (default: hostname)"},
    {"upstream", "auth_user", K_STR, C(auth_user), "", NULL,
     "identity = auth: the service account"},
    {"upstream", "auth_password_file", K_STR, C(auth_password_file), "",
     NULL, "identity = auth: file with its password (mode 0600, one line)"},
    {"upstream", "tls", K_ENUM, C(upstream_tls), "none", utls_modes,
     "none | starttls (opportunistic) | required (verified)"},
    {"upstream", "ca_file", K_STR, C(upstream_ca_file), "", NULL,
     "CA bundle for tls = required (empty: system default)"},
    {"upstream", "tls_name", K_STR, C(upstream_tls_name), "", NULL,
     "name to verify in the upstream certificate (empty: server host)"},
    {"upstream", "connect_timeout", K_DURATION, C(connect_timeout_ms), "10s",
     NULL, "per server, connect and greeting"},
    {"upstream", "timeout", K_DURATION, C(upstream_timeout_ms), "5m", NULL,
     "waiting for any upstream reply (RFC 5321 4.5.3.2 suggests minutes)"},
    {"upstream", "pool_size", K_UINT, C(pool_size), "0", NULL,
     "idle, greeted upstream connections kept per worker for the next "
     "session (0 = off; never with identity = xclient)"},
    {"upstream", "pool_idle_timeout", K_DURATION, C(pool_idle_timeout_ms),
     "30s", NULL, "a kept connection unused this long gets QUIT (below "
     "the MTA's own idle limit, Postfix smtpd_timeout 300s)"},

    {"limits", "max_message_size", K_SIZE, C(max_message_size), "50M", NULL,
     "advertised in SIZE (or the upstream's SIZE when smaller), enforced "
     "while streaming (552 5.3.4)"},
    {"limits", "max_recipients", K_UINT, C(max_recipients), "100", NULL,
     "RCPTs per message; past it 452 4.5.3"},
    {"limits", "idle_timeout", K_DURATION, C(idle_timeout_ms), "5m", NULL,
     "no command for this long: 421 4.4.2 and close"},
    {"limits", "bare_newline", K_ENUM, C(bare_newline), "normalize",
     bare_modes,
     "bare CR or LF in DATA: normalize (to CRLF) | reject (550 5.5.2)"},

    {"policy", "server", K_PSERVER, 0, NULL, NULL,
     "inet:HOST:PORT or unix:PATH of a Postfix policy server "
     "(SMTPD_POLICY_README); repeatable, tried in order (none: no checks)"},
    {"policy", "at", K_ENUM, C(policy_at), "rcpt", policy_ats,
     "rcpt (each RCPT, before it is relayed) | data (DATA, before it is "
     "relayed) | end_of_data (the message's end, before the upstream gets "
     "it); CHUNKING is not offered with a policy server"},
    {"policy", "timeout", K_DURATION, C(policy_timeout_ms), "2s", NULL,
     "a check's whole time, every server tried included"},
    {"policy", "default_action", K_ENUM, C(policy_default), "defer",
     policy_defaults,
     "no server answered in time: defer (451 4.3.5) | dunno (carry on "
     "unchecked)"},

    {"metrics", "address", K_STR, C(metrics_address), "", NULL,
     "address:port of the Prometheus endpoint (GET /metrics), e.g. "
     "127.0.0.1:9465; empty: off.  Read at start only (a reload that "
     "changes it asks for a restart)"},
    {"metrics", "public", K_BOOL, C(metrics_public), "no", NULL,
     "\"yes\" allows a metrics address that is not loopback (the counters "
     "show traffic and upstream names; no authentication)"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

void sg_config_print_keys(void *fp)
{
	FILE *f = fp;
	const char *sec = "";
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(sec, keys[i].section) != 0) {
			sec = keys[i].section;
			fprintf(f, ".SS [%s%s]\n", sec,
			        strcmp(sec, "listener") == 0 ? " NAME" : "");
		}
		fprintf(f, ".TP\n.B %s\n%s", keys[i].name, keys[i].doc);
		if (keys[i].def && *keys[i].def)
			fprintf(f, " (default: %s)", keys[i].def);
		fprintf(f, ".\n");
	}
}

/* ----------------------------------------------------------------- loader */

struct loader {
	sg_config *c;
	sg_errors *errs;
	sg_where where;     /* current file and line */
	int depth;
	FILE *fp;
	size_t nread; /* octets read from fp */
	unsigned nfiles; /* files opened so far */
	/* the files being read, outermost first: one that includes itself,
	 * directly or not, is a loop */
	struct {
		dev_t dev;
		ino_t ino;
	} open_stack[SG_MAX_INCLUDE_DEPTH + 1];
	char *linebuf;
	size_t linecap;
	/* the first `server` of [upstream] in a file replaces the list an
	 * earlier file built ("a later value overrides an earlier one"); later
	 * ones in the same file append to it */
	const char *servers_file;
	const char *policy_file; /* the same for [policy] server */
	/* libinih's line buffer is INI_MAX_LINE (200) octets in Debian's
	 * build; a longer "key = value" line is handed to it with the value
	 * replaced by "\001<n>", and the handler swaps the real value back */
	char **long_values;
	size_t nlong;
};

static bool known_section(const char *name)
{
	static const char *const plain[] = {"server", "tls", "sasl", "upstream",
	                                    "limits", "policy", "metrics"};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
		if (strcmp(name, plain[i]) == 0)
			return true;
	if (strncmp(name, "listener", 8) != 0 ||
	    (name[8] != ' ' && name[8] != '\t'))
		return false;
	const char *n = name + 8;
	while (*n == ' ' || *n == '\t')
		n++;
	return *n != '\0';
}

static const char *intern_file(sg_config *c, const char *path)
{
	for (size_t i = 0; i < c->nfiles; i++)
		if (strcmp(c->files[i], path) == 0)
			return c->files[i];
	c->files = sg_xreallocarray(c->files, c->nfiles + 1, sizeof *c->files);
	c->files[c->nfiles] = sg_xstrdup(path);
	return c->files[c->nfiles++];
}

static void record_where(sg_config *c, const char *section, const char *key,
                         sg_where w)
{
	for (size_t i = 0; i < c->nwheres; i++)
		if (strcmp(c->wheres[i].section, section) == 0 &&
		    strcmp(c->wheres[i].key, key) == 0) {
			c->wheres[i].where = w;
			return;
		}
	c->wheres = sg_xreallocarray(c->wheres, c->nwheres + 1, sizeof *c->wheres);
	c->wheres[c->nwheres].section = sg_xstrdup(section);
	c->wheres[c->nwheres].key = sg_xstrdup(key);
	c->wheres[c->nwheres].where = w;
	c->nwheres++;
}

sg_where sg_config_where(const sg_config *c, const char *section,
                         const char *key)
{
	for (size_t i = 0; i < c->nwheres; i++)
		if (strcmp(c->wheres[i].section, section) == 0 &&
		    strcmp(c->wheres[i].key, key) == 0)
			return c->wheres[i].where;
	sg_where none = {c->path, 0};
	return none;
}

/* "bad value ..." for k at the current file:line; returns -1. */
static int bad_value(struct loader *ld, const struct key *k, const char *v,
                     const char *why)
{
	if (k->names) {
		char list[256] = "";
		for (int i = 0; k->names[i]; i++) {
			strncat(list, i ? " | " : "", sizeof list - strlen(list) - 1);
			strncat(list, k->names[i], sizeof list - strlen(list) - 1);
		}
		sg_errors_add(ld->errs, &ld->where,
		              "bad value \"%s\" for %s (expected %s)", v, k->name,
		              list);
		return -1;
	}
	static const char *const expect[] = {
	    [K_BOOL] = "yes or no",
	    [K_UINT] = "a whole number",
	    [K_DURATION] = "a duration such as 500ms, 30s, 5m, 1h",
	    [K_SIZE] = "a size such as 4096, 64k, 50M, 1G",
	    [K_LOGLEVEL] = "error | warn | info | debug",
	    [K_WORKERS] = "a number from 1 to 64, or auto",
	    [K_TLSVER] = "TLSv1 | TLSv1.1 | TLSv1.2 | TLSv1.3",
	};
	sg_errors_add(ld->errs, &ld->where, "bad value \"%s\" for %s: %s", v,
	              k->name,
	              why ? why : (expect[k->type] ? expect[k->type] : "invalid"));
	return -1;
}

/* A whole number (digits only, size suffixes refused) up to max. */
static int parse_count(const char *v, uint64_t max, uint64_t *u)
{
	if (sg_parse_size(v, u) < 0 || strspn(v, "0123456789") != strlen(v) ||
	    *u > max)
		return -1;
	return 0;
}

/* "auto" (the online CPUs, at most 64) or 1..64. */
static int parse_workers(const char *v, int *out)
{
	uint64_t u;
	if (strcasecmp(v, "auto") == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		*out = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
		return 0;
	}
	if (parse_count(v, 64, &u) < 0 || u < 1)
		return -1;
	*out = (int)u;
	return 0;
}

static int parse_tlsver(const char *v, int *out)
{
	static const struct {
		const char *n;
		int v;
	} vers[] = {{"TLSv1", TLS1_VERSION},
	            {"TLSv1.0", TLS1_VERSION},
	            {"TLSv1.1", TLS1_1_VERSION},
	            {"TLSv1.2", TLS1_2_VERSION},
	            {"TLSv1.3", TLS1_3_VERSION}};
	for (size_t i = 0; i < sizeof vers / sizeof vers[0]; i++)
		if (strcasecmp(v, vers[i].n) == 0) {
			*out = vers[i].v;
			return 0;
		}
	return -1;
}

/* [upstream] server = host[:port], repeatable: a later file's list
 * replaces an earlier file's (a drop-in overrides the main file). */
static int add_server(struct loader *ld, const char *v, const char **why)
{
	sg_config *c = ld->c;
	char *host, *port;
	if (sg_parse_hostport(v, "25", &host, &port, why) < 0)
		return -1;
	if (ld->servers_file != ld->where.file) {
		for (size_t i = 0; i < c->nservers; i++) {
			free(c->servers[i].host);
			free(c->servers[i].port);
			free(c->servers[i].label);
		}
		c->nservers = 0;
		ld->servers_file = ld->where.file;
	}
	sg_upstream_server *s = c->servers =
	    sg_xreallocarray(c->servers, c->nservers + 1, sizeof *s);
	s[c->nservers].host = host;
	s[c->nservers].port = port;
	bool v6 = strchr(host, ':') != NULL;
	s[c->nservers].label = sg_xasprintf("%s%s%s:%s", v6 ? "[" : "", host,
	                                    v6 ? "]" : "", port);
	s[c->nservers].where = ld->where;
	c->nservers++;
	return 0;
}

static void policy_servers_free(sg_config *c)
{
	for (size_t i = 0; i < c->npolicy_servers; i++) {
		free(c->policy_servers[i].spec);
		free(c->policy_servers[i].host);
		free(c->policy_servers[i].port);
		free(c->policy_servers[i].path);
	}
	c->npolicy_servers = 0;
}

/* [policy] server = inet:host:port | unix:/path, repeatable: a later
 * file's list replaces an earlier file's, as [upstream] server. */
static int add_policy_server(struct loader *ld, const char *v,
                             const char **why)
{
	sg_config *c = ld->c;
	sg_policy_server ps = {0};
	if (strncmp(v, "unix:", 5) == 0) {
		if (v[5] != '/') {
			*why = "unix: needs an absolute path";
			return -1;
		}
		ps.path = sg_xstrdup(v + 5);
	} else if (strncmp(v, "inet:", 5) == 0) {
		if (!strrchr(v + 5, ':') || strrchr(v + 5, ']') > strrchr(v + 5, ':')) {
			*why = "inet: needs HOST:PORT";
			return -1;
		}
		if (sg_parse_hostport(v + 5, "0", &ps.host, &ps.port, why) < 0)
			return -1;
	} else {
		*why = "expected inet:HOST:PORT or unix:PATH";
		return -1;
	}
	if (ld->policy_file != ld->where.file) {
		policy_servers_free(c);
		ld->policy_file = ld->where.file;
	}
	ps.spec = sg_xstrdup(v);
	ps.where = ld->where;
	c->policy_servers = sg_xreallocarray(c->policy_servers,
	                                     c->npolicy_servers + 1,
	                                     sizeof *c->policy_servers);
	c->policy_servers[c->npolicy_servers++] = ps;
	return 0;
}

static int set_nets(struct loader *ld, const struct key *k,
                    sg_listener_cfg *l, const char *v)
{
	sg_net *nets;
	size_t n;
	char entry[64];
	const char *why = NULL;
	if (sg_parse_netlist(v, &nets, &n, entry, sizeof entry, &why) < 0) {
		sg_errors_add(ld->errs, &ld->where,
		              "bad entry \"%s\" in %s: %s (expected addresses "
		              "and prefixes such as 10.0.0.0/8 192.0.2.1 "
		              "2001:db8::/32)",
		              entry, k->name, why);
		return -1;
	}
	free(l->trusted);
	l->trusted = nets;
	l->ntrusted = n;
	return 0;
}

static int set_value(struct loader *ld, const struct key *k, void *base,
                     const char *v)
{
	char *p = (char *)base + k->off;
	const char *why = NULL;
	uint64_t u;
	bool b;
	int rc = 0;

	switch (k->type) {
	case K_STR:
		free(*(char **)p);
		*(char **)p = sg_xstrdup(v);
		break;
	case K_BOOL:
		if ((rc = sg_parse_bool(v, &b)) == 0)
			*(bool *)p = b;
		break;
	case K_UINT:
		if ((rc = parse_count(v, UINT_MAX, &u)) == 0)
			*(unsigned *)p = (unsigned)u;
		break;
	case K_DURATION:
		if ((rc = sg_parse_duration_ms(v, &u)) == 0)
			*(uint64_t *)p = u;
		break;
	case K_SIZE:
		if ((rc = sg_parse_size(v, &u)) == 0)
			*(uint64_t *)p = u;
		break;
	case K_ENUM:
		rc = -1;
		for (int i = 0; k->names[i] && rc < 0; i++)
			if (strcasecmp(v, k->names[i]) == 0) {
				*(int *)p = i;
				rc = 0;
			}
		break;
	case K_LOGLEVEL:
		rc = sg_log_level_parse(v);
		if (rc >= 0)
			*(int *)p = rc;
		break;
	case K_WORKERS:
		rc = parse_workers(v, (int *)p);
		break;
	case K_TLSVER:
		rc = parse_tlsver(v, (int *)p);
		break;
	case K_SERVER:
		rc = add_server(ld, v, &why);
		break;
	case K_PSERVER:
		rc = add_policy_server(ld, v, &why);
		break;
	case K_ADDRESS: {
		sg_listener_cfg *l = base;
		if ((rc = sg_parse_sockaddr(v, &l->addr, &l->addrlen, &why)) == 0) {
			free(l->address);
			l->address = sg_xstrdup(v);
		}
		break;
	}
	case K_NETS:
		return set_nets(ld, k, base, v);
	}
	return rc < 0 ? bad_value(ld, k, v, why) : 0;
}

static void set_default(struct loader *ld, const struct key *k, void *base)
{
	if (k->def)
		set_value(ld, k, base, k->def);
}

static sg_listener_cfg *listener_get(struct loader *ld, const char *name)
{
	sg_config *c = ld->c;
	for (size_t i = 0; i < c->nlisteners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return &c->listeners[i];
	sg_listener_cfg *p = c->listeners =
	    sg_xreallocarray(c->listeners, c->nlisteners + 1, sizeof *p);
	sg_listener_cfg *l = &p[c->nlisteners++];
	memset(l, 0, sizeof *l);
	l->name = sg_xstrdup(name);
	l->where = ld->where;
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, "listener") == 0)
			set_default(ld, &keys[i], l);
	return l;
}

static int load_file(struct loader *ld, const char *path, const char **why);

static void do_include(struct loader *ld, const char *pattern)
{
	char full[PATH_MAX];
	if (pattern[0] == '/') {
		snprintf(full, sizeof full, "%s", pattern);
	} else {
		const char *slash = strrchr(ld->where.file, '/');
		int dirlen = slash ? (int)(slash - ld->where.file) : 1;
		snprintf(full, sizeof full, "%.*s/%s", dirlen,
		         slash ? ld->where.file : ".", pattern);
	}
	/* Wildcards in a folder part (a pattern such as "/x/../x/../x/..")
	 * can make glob(3) run for minutes; drop-ins need them only in the
	 * file name. */
	const char *last = strrchr(pattern, '/');
	if (last && strcspn(pattern, "*?[") < (size_t)(last - pattern)) {
		sg_errors_add(ld->errs, &ld->where,
		              "include %s: wildcards are allowed in the file "
		              "name only",
		              pattern);
		return;
	}
	if (ld->depth >= SG_MAX_INCLUDE_DEPTH) {
		sg_errors_add(ld->errs, &ld->where,
		              "includes nested deeper than %d (a loop?)",
		              SG_MAX_INCLUDE_DEPTH);
		return;
	}
	glob_t g;
	int r = glob(full, GLOB_ERR, NULL, &g); /* sorted: lexical order */
	if (r == GLOB_ABORTED && errno == ENOENT)
		r = GLOB_NOMATCH; /* conf.d/ not there: same as an empty one */
	if (r == GLOB_NOMATCH) {
		/* an empty conf.d/ is fine; a named file that is missing is not */
		if (!strpbrk(pattern, "*?["))
			sg_errors_add(ld->errs, &ld->where,
			              "cannot read include %s: no such file", full);
		return;
	}
	if (r != 0) {
		sg_errors_add(ld->errs, &ld->where, "cannot read include %s: %s",
		              full, strerror(errno));
		return;
	}
	sg_where saved = ld->where;
	const char *saved_sf = ld->servers_file;
	const char *saved_pf = ld->policy_file;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *why;
		ld->depth++;
		if (load_file(ld, g.gl_pathv[i], &why) < 0)
			sg_errors_add(ld->errs, &saved, "cannot read include %s: %s",
			              g.gl_pathv[i], why);
		ld->depth--;
		ld->where = saved;
	}
	/* server lines after the include add to what the drop-ins built */
	if (ld->servers_file != saved_sf)
		ld->servers_file = ld->where.file;
	if (ld->policy_file != saved_pf)
		ld->policy_file = ld->where.file;
	globfree(&g);
}

static int handler(void *user, const char *section, const char *name,
                   const char *value)
{
	struct loader *ld = user;
	sg_config *c = ld->c;

	if (value[0] == '\001') {
		size_t k = strtoul(value + 1, NULL, 10);
		if (k < ld->nlong)
			value = ld->long_values[k];
	}
	if (strcmp(name, "include") == 0) {
		do_include(ld, value);
		return 1;
	}
	if (!*section) {
		sg_errors_add(ld->errs, &ld->where,
		              "\"%s\" outside a [section] (only include may stand "
		              "there)",
		              name);
		return 1;
	}

	const char *sec = section;
	sg_listener_cfg *l = NULL;
	if (!known_section(section))
		return 1; /* the reader reported the [section] line itself */
	if (strncmp(section, "listener", 8) == 0) {
		const char *n = section + 8;
		while (*n == ' ' || *n == '\t')
			n++;
		l = listener_get(ld, n);
		sec = "listener";
	}

	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, sec) || strcmp(keys[i].name, name))
			continue;
		if (set_value(ld, &keys[i], l ? (void *)l : (void *)c, value) == 0) {
			record_where(c, section, name, ld->where);
			if (l && strcmp(name, "tls") == 0)
				l->where_tls = ld->where;
			if (l && strcmp(name, "proxy_protocol") == 0)
				l->where_proxy = ld->where;
		}
		return 1;
	}
	if (strcmp(sec, "sasl") == 0) {
		/* Every [sasl] key we do not own goes to Cyrus' getopt callback,
		 * in order; a later one with the same name replaces the value. */
		for (size_t i = 0; i < c->nsasl_opts; i++)
			if (strcmp(c->sasl_opts[i].key, name) == 0) {
				free(c->sasl_opts[i].value);
				c->sasl_opts[i].value = sg_xstrdup(value);
				c->sasl_opts[i].where = ld->where;
				return 1;
			}
		sg_kv *p = c->sasl_opts =
		    sg_xreallocarray(c->sasl_opts, c->nsasl_opts + 1, sizeof *p);
		p[c->nsasl_opts].key = sg_xstrdup(name);
		p[c->nsasl_opts].value = sg_xstrdup(value);
		p[c->nsasl_opts].where = ld->where;
		c->nsasl_opts++;
		return 1;
	}
	sg_errors_add(ld->errs, &ld->where, "unknown key \"%s\" in [%s]", name,
	              section);
	return 1;
}

/* The reader inih calls for each line: we count lines, drop leading blanks
 * and inline comments, and refuse lines longer than inih's buffer. */
static char *reader(char *str, int num, void *user)
{
	struct loader *ld = user;
	errno = 0;
	ssize_t n = getline(&ld->linebuf, &ld->linecap, ld->fp);
	if (n > 0 && (ld->nread += (size_t)n) > SG_MAX_CONF_FILE) {
		/* a file that grows while read, or reports no size (/proc) */
		sg_errors_add(ld->errs, &ld->where, "file larger than 4 MiB");
		return NULL;
	}
	if (n < 0) {
		/* end of file, unless the stream says otherwise: a file cut
		 * short must not load as a shorter configuration */
		if (ferror(ld->fp) && errno == ENOMEM)
			sg_out_of_memory("getline", ld->linecap);
		if (ferror(ld->fp))
			sg_errors_add(ld->errs, &ld->where, "read error: %s",
			              strerror(errno));
		return NULL;
	}
	ld->where.line++;
	char *s = ld->linebuf;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '#' && *s != ';') {
		/* "key = value   # comment": a # or ; after a blank starts one */
		for (char *p = s; *p; p++)
			if ((*p == '#' || *p == ';') && p > s &&
			    (p[-1] == ' ' || p[-1] == '\t')) {
				*p = '\0';
				break;
			}
	}
	size_t len = strlen(s);
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' ||
	               s[len - 1] == ' ' || s[len - 1] == '\t'))
		s[--len] = '\0';
	if (*s == '[') {
		/* Sections are checked here: libinih only reports key lines, and
		 * an unknown section must be an error even when it is empty. */
		char *end = strchr(s, ']');
		if (end) {
			char name[256];
			snprintf(name, sizeof name, "%.*s", (int)(end - s - 1), s + 1);
			char *t = name + strlen(name);
			while (t > name && (t[-1] == ' ' || t[-1] == '\t'))
				*--t = '\0';
			char *h = name;
			while (*h == ' ' || *h == '\t')
				h++;
			if (strcmp(h, "listener") == 0)
				sg_errors_add(ld->errs, &ld->where,
				              "[listener] needs a name: [listener submission]");
			else if (!known_section(h))
				sg_errors_add(ld->errs, &ld->where, "unknown section [%s]", h);
		}
	}
	if (len > SG_MAX_CONF_LINE) {
		sg_errors_add(ld->errs, &ld->where, "line too long (max %d)",
		              SG_MAX_CONF_LINE);
		s[0] = '\0';
		len = 0;
	} else if ((int)len >= num - 1) {
		char *eq = strchr(s, '=');
		if (!eq || eq - s > num - 32) {
			sg_errors_add(ld->errs, &ld->where, "line too long (max %d)",
			              num - 2);
			s[0] = '\0';
			len = 0;
		} else {
			char *v = eq + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			char **p = ld->long_values = sg_xreallocarray(
			    ld->long_values, ld->nlong + 1, sizeof *p);
			p[ld->nlong] = sg_xstrdup(v);
			len = (size_t)snprintf(str, (size_t)num, "%.*s= \001%zu",
			                       (int)(eq - s), s, ld->nlong++);
			str[len] = '\n';
			str[len + 1] = '\0';
			return str;
		}
	}
	memcpy(str, s, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

/* Opens without blocking (a FIFO would wait for a writer) and stays
 * non-blocking (a /proc file that would wait, such as /proc/kmsg, gives a
 * read error), then checks that it is a regular file of a sane size.
 * NULL with *why set otherwise. */
static FILE *open_conf(const char *path, const char **why)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		*why = strerror(errno);
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		*why = strerror(errno);
	} else if (!S_ISREG(st.st_mode)) {
		*why = S_ISDIR(st.st_mode) ? "is a directory"
		                           : "not a regular file";
	} else if ((uintmax_t)st.st_size > SG_MAX_CONF_FILE) {
		*why = "larger than 4 MiB";
	} else {
		FILE *fp = fdopen(fd, "r");
		if (fp)
			return fp;
		*why = strerror(errno);
	}
	close(fd);
	return NULL;
}

static int load_file(struct loader *ld, const char *path, const char **why)
{
	if (++ld->nfiles > SG_MAX_CONF_FILES) {
		*why = "more than 256 files in one configuration";
		return -1;
	}
	FILE *fp = open_conf(path, why);
	if (!fp)
		return -1;
	struct stat st;
	if (fstat(fileno(fp), &st) < 0 || ld->depth > SG_MAX_INCLUDE_DEPTH) {
		*why = "cannot stat";
		fclose(fp);
		return -1;
	}
	for (int i = 0; i < ld->depth; i++)
		if (ld->open_stack[i].dev == st.st_dev &&
		    ld->open_stack[i].ino == st.st_ino) {
			*why = "an include loop (the file is being read already)";
			fclose(fp);
			return -1;
		}
	ld->open_stack[ld->depth].dev = st.st_dev;
	ld->open_stack[ld->depth].ino = st.st_ino;
	FILE *saved_fp = ld->fp;
	size_t saved_nread = ld->nread;
	ld->fp = fp;
	ld->nread = 0;
	ld->where.file = intern_file(ld->c, path);
	ld->where.line = 0;
	int r = ini_parse_stream(reader, ld, handler, ld);
	if (r > 0) {
		sg_where w = {ld->where.file, r};
		sg_errors_add(ld->errs, &w,
		              "syntax error (expected [section] or key = value)");
	}
	fclose(fp);
	ld->fp = saved_fp;
	ld->nread = saved_nread;
	return 0;
}

static void validate_policy(struct loader *ld)
{
	sg_config *c = ld->c;
	if (c->policy_timeout_ms == 0) {
		sg_where w = sg_config_where(c, "policy", "timeout");
		sg_errors_add(ld->errs, &w, "[policy] timeout must be above 0");
	}
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 */
static bool loopback(const struct sockaddr_storage *ss)
{
	static const uint8_t v6lo[16] = {[15] = 1};
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	const uint8_t *b = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
	return memcmp(b, v6lo, 16) == 0 ||
	       (memcmp(b, mapped, 12) == 0 && b[12] == 127);
}

/* [metrics] address parses, and is loopback unless public = yes: the
 * endpoint has no authentication. */
static void validate_metrics(struct loader *ld)
{
	sg_config *c = ld->c;
	if (!*c->metrics_address)
		return;
	sg_where w = sg_config_where(c, "metrics", "address");
	const char *why = NULL;
	if (sg_parse_sockaddr(c->metrics_address, &c->metrics_addr,
	                      &c->metrics_addrlen, &why) < 0) {
		sg_errors_add(ld->errs, &w, "[metrics] address %s: %s",
		              c->metrics_address, why ? why : "bad address");
		return;
	}
	if (!loopback(&c->metrics_addr) && !c->metrics_public)
		sg_errors_add(ld->errs, &w,
		              "[metrics] address %s is not loopback: set "
		              "[metrics] public = yes to serve it there",
		              c->metrics_address);
	for (size_t i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].address &&
		    c->listeners[i].addrlen == c->metrics_addrlen &&
		    memcmp(&c->listeners[i].addr, &c->metrics_addr,
		           c->metrics_addrlen) == 0)
			sg_errors_add(ld->errs, &w,
			              "[metrics] address is [listener %s]'s",
			              c->listeners[i].name);
}

static void validate(struct loader *ld)
{
	sg_config *c = ld->c;
	sg_where top = {c->path, 0};

	if (c->nlisteners == 0)
		sg_errors_add(ld->errs, &top,
		              "no [listener NAME] section: nothing to listen on");
	for (size_t i = 0; i < c->nlisteners; i++) {
		sg_listener_cfg *l = &c->listeners[i];
		if (!l->address)
			sg_errors_add(ld->errs, &l->where,
			              "[listener %s] has no address", l->name);
		if (l->tls != SG_TLS_NONE &&
		    (!*c->tls_certificate || !*c->tls_key)) {
			sg_where w = l->where_tls.file ? l->where_tls : l->where;
			sg_errors_add(ld->errs, &w,
			              "[listener %s] has tls = %s but [tls] has no "
			              "certificate and key",
			              l->name, tls_modes[l->tls]);
		}
		/* Whoever may send the PROXY header chooses the client address
		 * (and so escapes the per-address AUTH failure limit): only the
		 * balancers named here may. */
		if (l->proxy_protocol != SG_PP_NO && l->ntrusted == 0) {
			sg_where w = l->where_proxy.file ? l->where_proxy : l->where;
			sg_errors_add(ld->errs, &w,
			              "listener %s: proxy_protocol needs "
			              "proxy_trusted_networks (the addresses of your "
			              "HAProxy)",
			              l->name);
		}
		for (size_t j = 0; j < i; j++)
			if (l->address && c->listeners[j].address &&
			    l->addrlen == c->listeners[j].addrlen &&
			    memcmp(&l->addr, &c->listeners[j].addr, l->addrlen) == 0)
				sg_errors_add(ld->errs, &l->where,
				              "[listener %s] uses the address of [listener "
				              "%s]",
				              l->name, c->listeners[j].name);
	}
	if (!*c->tls_certificate != !*c->tls_key) {
		sg_where w = sg_config_where(c, "tls", *c->tls_key ? "key"
		                                                    : "certificate");
		sg_errors_add(ld->errs, &w,
		              "[tls] needs both certificate and key");
	}
	if (!*c->tls_ecdsa_certificate != !*c->tls_ecdsa_key) {
		sg_where w = sg_config_where(c, "tls", "ecdsa_certificate");
		sg_errors_add(ld->errs, &w,
		              "[tls] needs both ecdsa_certificate and ecdsa_key");
	}
	if (c->nservers == 0)
		sg_errors_add(ld->errs, &top,
		              "[upstream] has no server: nothing to relay to");
	if (c->identity == SG_ID_AUTH) {
		sg_where w = sg_config_where(c, "upstream", "identity");
		if (!*c->auth_user || !*c->auth_password_file)
			sg_errors_add(ld->errs, &w,
			              "identity = auth needs auth_user and "
			              "auth_password_file");
		else if (access(c->auth_password_file, R_OK) != 0) {
			sg_where wf = sg_config_where(c, "upstream", "auth_password_file");
			sg_errors_add(ld->errs, &wf, "cannot read %s: %s",
			              c->auth_password_file, strerror(errno));
		}
	}
	if (*c->sender_login_map && access(c->sender_login_map, R_OK) != 0) {
		sg_where w = sg_config_where(c, "sasl", "sender_login_map");
		sg_errors_add(ld->errs, &w, "cannot read %s: %s", c->sender_login_map,
		              strerror(errno));
	}
	if (c->max_failures == 0) {
		sg_where w = sg_config_where(c, "sasl", "max_failures");
		sg_errors_add(ld->errs, &w, "max_failures must be at least 1");
	}
	if (c->sasl_threads == 0 || c->sasl_threads > 60) {
		sg_where w = sg_config_where(c, "sasl", "threads");
		sg_errors_add(ld->errs, &w, "threads must be 1 to 60");
	}
	if (c->sasl_cache_size > 1000000) {
		sg_where w = sg_config_where(c, "sasl", "cache_size");
		sg_errors_add(ld->errs, &w, "cache_size must be 0 to 1000000");
	}
	if (c->max_message_size < 1024) {
		sg_where w = sg_config_where(c, "limits", "max_message_size");
		sg_errors_add(ld->errs, &w, "max_message_size below 1k");
	}
	if (c->max_recipients == 0) {
		sg_where w = sg_config_where(c, "limits", "max_recipients");
		sg_errors_add(ld->errs, &w, "max_recipients must be at least 1");
	}
	if (c->idle_timeout_ms < 1000) {
		sg_where w = sg_config_where(c, "limits", "idle_timeout");
		sg_errors_add(ld->errs, &w, "idle_timeout below 1s");
	}
	if (c->connect_timeout_ms == 0) {
		sg_where w = sg_config_where(c, "upstream", "connect_timeout");
		sg_errors_add(ld->errs, &w, "connect_timeout must be above 0");
	}
	if (c->pool_size > 1000) {
		sg_where w = sg_config_where(c, "upstream", "pool_size");
		sg_errors_add(ld->errs, &w, "pool_size must be 0 to 1000");
	}
	if (c->pool_size && c->pool_idle_timeout_ms < 1000) {
		sg_where w = sg_config_where(c, "upstream", "pool_idle_timeout");
		sg_errors_add(ld->errs, &w, "pool_idle_timeout below 1s");
	}
	validate_policy(ld);
	validate_metrics(ld);
}

sg_config *sg_config_load(const char *path, sg_errors *errs)
{
	struct loader ld;
	memset(&ld, 0, sizeof ld);
	sg_config *c = sg_xcalloc(1, sizeof *c);
	c->refcnt = 1;
	c->path = sg_xstrdup(path);
	ld.c = c;
	ld.errs = errs;
	size_t nerr0 = errs->n;

	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, "listener") != 0)
			set_default(&ld, &keys[i], c);
	if (!*c->hostname) {
		char h[256];
		if (gethostname(h, sizeof h) == 0) {
			h[sizeof h - 1] = '\0';
			free(c->hostname);
			c->hostname = sg_xstrdup(h);
		}
	}

	ld.where.file = intern_file(c, path);
	const char *why;
	if (load_file(&ld, path, &why) < 0) {
		sg_where w = {c->path, 0};
		sg_errors_add(errs, &w, "cannot read configuration: %s", why);
	} else {
		validate(&ld);
	}
	if (!*c->upstream_helo) {
		free(c->upstream_helo);
		c->upstream_helo = sg_xstrdup(c->hostname);
	}
	free(ld.linebuf);
	for (size_t i = 0; i < ld.nlong; i++)
		free(ld.long_values[i]);
	free(ld.long_values);
	if (errs->n > nerr0) {
		sg_config_unref(c);
		return NULL;
	}
	return c;
}

sg_config *sg_config_ref(sg_config *c)
{
	__atomic_add_fetch(&c->refcnt, 1, __ATOMIC_RELAXED);
	return c;
}

void sg_config_unref(sg_config *c)
{
	if (!c || __atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].type == K_STR && strcmp(keys[i].section, "listener"))
			free(*(char **)((char *)c + keys[i].off));
	for (size_t i = 0; i < c->nlisteners; i++) {
		free(c->listeners[i].name);
		free(c->listeners[i].address);
		free(c->listeners[i].trusted);
	}
	free(c->listeners);
	for (size_t i = 0; i < c->nservers; i++) {
		free(c->servers[i].host);
		free(c->servers[i].port);
		free(c->servers[i].label);
	}
	free(c->servers);
	policy_servers_free(c);
	free(c->policy_servers);
	for (size_t i = 0; i < c->nsasl_opts; i++) {
		free(c->sasl_opts[i].key);
		free(c->sasl_opts[i].value);
	}
	free(c->sasl_opts);
	for (size_t i = 0; i < c->nwheres; i++) {
		free(c->wheres[i].section);
		free(c->wheres[i].key);
	}
	free(c->wheres);
	for (size_t i = 0; i < c->nfiles; i++)
		free(c->files[i]);
	free(c->files);
	free(c->path);
	free(c);
}
