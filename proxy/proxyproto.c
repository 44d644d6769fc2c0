/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/proxyproto.c: HAProxy PROXY protocol v1 and v2 parser (proxyproto.h).
 *
 * Spec: haproxy doc/proxy-protocol.txt.  The parser is strict and
 * incremental: it returns 0 only while the bytes so far are a prefix of some
 * valid header, and -1 at the first byte that rules that out.  So a client
 * that talks SMTP ("EHLO ...") to a proxy_protocol listener is refused at its
 * first byte instead of after the idle timeout, and a header can never make
 * us buffer more than SG_PP_MAX octets. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "../common/config.h"

/* proxy-protocol.txt 2.1: "a receiver must ... read at most 107 bytes". */
#define PP1_MAX 107
/* Longest address text we accept per family (RFC 4291 2.2 full form with
 * an embedded IPv4 address is 45 characters). */
#define PP1_V4_MAX 15
#define PP1_V6_MAX 45
#define PP1_PORT_MAX 5

#define PP2_HDR 16
#define PP2_INET_LEN 12  /* 2 x 4 address + 2 x 2 port */
#define PP2_INET6_LEN 36 /* 2 x 16 address + 2 x 2 port */

static const unsigned char pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char pp1_sig[] = "PROXY ";

static int fail(const char **why, const char *msg)
{
	if (why)
		*why = msg;
	return -1;
}

/* ------------------------------------------------------------------ v1 */

/* Could s[0..n) be the start of a dotted-quad IPv4 address (no leading
 * zeros, octets <= 255)?  complete: must it be a whole one? */
static bool v4_prefix_ok(const char *s, size_t n, bool complete)
{
	int dots = 0, digits = 0, val = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (digits == 0 || ++dots > 3)
				return false;
			digits = val = 0;
		} else if (c >= '0' && c <= '9') {
			if (digits == 1 && val == 0) /* leading zero */
				return false;
			val = val * 10 + (c - '0');
			if (++digits > 3 || val > 255)
				return false;
		} else {
			return false;
		}
	}
	return !complete || (dots == 3 && digits > 0);
}

static bool v6_prefix_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		      (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
			return false;
	}
	return true;
}

/* Decimal port 0..65535, no leading zeros. */
static bool port_prefix_ok(const char *s, size_t n, bool complete,
                           unsigned *out)
{
	unsigned v = 0;
	if (n > PP1_PORT_MAX || (complete && n == 0))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || (i == 1 && s[0] == '0'))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = v;
	return true;
}

static void set_addr(struct sockaddr_storage *ss, int fam, const void *a,
                     unsigned port)
{
	memset(ss, 0, sizeof *ss);
	if (fam == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		s4->sin_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		s6->sin6_port = htons((uint16_t)port);
	}
}

/* The four fields after "PROXY TCP4 " / "PROXY TCP6 ". */
enum { F_SRC, F_DST, F_SPORT, F_DPORT, F_NFIELDS };

/* The protocol word after "PROXY " (p, avail octets): 0 TCP4, 1 TCP6,
 * 2 UNKNOWN, -1 none, -2 a prefix of one (more input needed). */
static int v1_proto(const char *p, size_t avail)
{
	static const char *const protos[] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
	bool partial = false;
	for (int i = 0; i < 3; i++) {
		size_t pl = strlen(protos[i]);
		size_t m = avail < pl ? avail : pl;
		if (memcmp(p, protos[i], m) != 0)
			continue;
		if (m == pl)
			return i;
		partial = true;
	}
	return partial ? -2 : -1;
}

/* 2.1: after UNKNOWN the receiver ignores everything up to CRLF and keeps
 * the connection's own addresses.  UNKNOWN must end there: a space or the
 * CR follows it.  i is the offset just past "UNKNOWN". */
static int v1_unknown(const char *s, size_t n, size_t len, size_t i,
                      sg_pp_result *out, const char **why)
{
	if (n > i && s[i] != ' ' && s[i] != '\r')
		return fail(why, "PROXY v1: unknown protocol");
	for (; i < n; i++) {
		if (s[i] == '\n')
			return fail(why, "PROXY v1: bare LF");
		if (s[i] != '\r')
			continue;
		if (i + 1 >= n)
			break;
		if (s[i + 1] != '\n')
			return fail(why, "PROXY v1: CR without LF");
		if (out) {
			memset(out, 0, sizeof *out);
			out->version = 1;
			out->local = true;
		}
		return (int)(i + 2);
	}
	return len >= PP1_MAX ? fail(why, "PROXY v1: header over 107 octets") : 0;
}

/* One address field (fl octets at f, done: its terminator was seen) into
 * addr; 1 fine, 0 bad. */
static int v1_addr(int fam, const char *f, size_t fl, bool done,
                   unsigned char *addr)
{
	size_t amax = fam == AF_INET ? PP1_V4_MAX : PP1_V6_MAX;
	if (fl > amax || (done && fl == 0))
		return 0;
	if (!(fam == AF_INET ? v4_prefix_ok(f, fl, done) : v6_prefix_ok(f, fl)))
		return 0;
	if (!done)
		return 1;
	char tmp[PP1_V6_MAX + 1];
	memcpy(tmp, f, fl);
	tmp[fl] = '\0';
	return inet_pton(fam, tmp, addr) == 1;
}

static int parse_v1(const unsigned char *buf, size_t len, sg_pp_result *out,
                    const char **why)
{
	const char *s = (const char *)buf;
	size_t n = len < PP1_MAX ? len : PP1_MAX;
	const char *too_long = "PROXY v1: header over 107 octets";

	/* "PROXY " */
	size_t sl = sizeof pp1_sig - 1;
	if (memcmp(s, pp1_sig, n < sl ? n : sl) != 0)
		return fail(why, "not a PROXY protocol v1 header");
	if (n < sl)
		return 0;
	int proto = v1_proto(s + sl, n - sl);
	if (proto == -2)
		return 0;
	if (proto < 0)
		return fail(why, "PROXY v1: unknown protocol");
	if (proto == 2)
		return v1_unknown(s, n, len, sl + 7, out, why);

	int fam = proto == 0 ? AF_INET : AF_INET6;
	size_t i = sl + 5;
	unsigned ports[2] = {0, 0};
	unsigned char addr[2][16];
	for (int f = 0; f < F_NFIELDS; f++) {
		size_t start = i;
		char term = f == F_DPORT ? '\r' : ' ';
		while (i < n && s[i] != term)
			i++;
		bool done = i < n;
		size_t fl = i - start;
		if (f <= F_DST && !v1_addr(fam, s + start, fl, done, addr[f]))
			return fail(why, f == F_SRC ? "PROXY v1: bad source address"
			                            : "PROXY v1: bad destination address");
		if (f > F_DST &&
		    !port_prefix_ok(s + start, fl, done, &ports[f - F_SPORT]))
			return fail(why, "PROXY v1: bad port");
		if (!done)
			return len >= PP1_MAX ? fail(why, too_long) : 0;
		i++; /* the single space, or the CR */
	}
	if (i >= n)
		return len >= PP1_MAX ? fail(why, too_long) : 0;
	if (s[i] != '\n')
		return fail(why, "PROXY v1: CR without LF");
	if (out) {
		memset(out, 0, sizeof *out);
		out->version = 1;
		set_addr(&out->src, fam, addr[0], ports[0]);
		set_addr(&out->dst, fam, addr[1], ports[1]);
	}
	return (int)(i + 1);
}

/* ------------------------------------------------------------------ v2 */

static int parse_v2(const unsigned char *b, size_t len, sg_pp_result *out,
                    const char **why)
{
	size_t sl = sizeof pp2_sig;
	if (memcmp(b, pp2_sig, len < sl ? len : sl) != 0)
		return fail(why, "not a PROXY protocol v2 header");
	if (len < sl + 1)
		return 0;

	/* 2.2: high nibble version (2), low nibble command: 0 LOCAL, 1 PROXY */
	unsigned ver = b[12] >> 4, cmd = b[12] & 0x0F;
	if (ver != 2)
		return fail(why, "PROXY v2: bad version");
	if (cmd > 1)
		return fail(why, "PROXY v2: bad command");
	bool local = cmd == 0;
	if (len < sl + 2)
		return 0;

	/* family (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport
	 * (0 UNSPEC, 1 STREAM, 2 DGRAM).  LOCAL ignores them (2.2: "the
	 * receiver must ... discard the protocol block including the family").
	 * For PROXY we take TCP over IPv4/IPv6, and UNSPEC as "unknown source":
	 * keep the socket's own addresses. */
	unsigned fam = b[13] >> 4, tr = b[13] & 0x0F;
	size_t need = 0;
	if (!local) {
		if (b[13] == 0x00)
			local = true;
		else if (fam == 1 && tr == 1)
			need = PP2_INET_LEN;
		else if (fam == 2 && tr == 1)
			need = PP2_INET6_LEN;
		else
			return fail(why, "PROXY v2: unsupported address family or "
			                 "transport (only TCP over IPv4/IPv6)");
	}
	if (len < PP2_HDR)
		return 0;

	size_t plen = ((size_t)b[14] << 8) | b[15];
	if (PP2_HDR + plen > SG_PP_MAX)
		return fail(why, "PROXY v2: header longer than SG_PP_MAX");
	if (plen < need)
		return fail(why, "PROXY v2: address block too short");
	if (len < PP2_HDR + plen)
		return 0;

	if (out) {
		memset(out, 0, sizeof *out);
		out->version = 2;
		out->local = local;
		const unsigned char *a = b + PP2_HDR;
		if (need == PP2_INET_LEN) {
			set_addr(&out->src, AF_INET, a, (unsigned)(a[8] << 8 | a[9]));
			set_addr(&out->dst, AF_INET, a + 4,
			         (unsigned)(a[10] << 8 | a[11]));
		} else if (need == PP2_INET6_LEN) {
			set_addr(&out->src, AF_INET6, a, (unsigned)(a[32] << 8 | a[33]));
			set_addr(&out->dst, AF_INET6, a + 16,
			         (unsigned)(a[34] << 8 | a[35]));
		}
	}
	/* TLVs (2.2.x) follow the addresses; nothing we need, so skipped. */
	return (int)(PP2_HDR + plen);
}

int sg_pp_parse(const unsigned char *buf, size_t len, int mode,
                sg_pp_result *out, const char **why)
{
	if (why)
		*why = NULL;
	if (mode != SG_PP_V1 && mode != SG_PP_V2 && mode != SG_PP_ANY)
		return fail(why, "PROXY protocol not enabled on this listener");
	if (len == 0)
		return 0;
	/* The first byte tells the versions apart: 'P' vs CR. */
	if (buf[0] == pp1_sig[0]) {
		if (mode == SG_PP_V2)
			return fail(why, "PROXY v1 header where v2 is required");
		return parse_v1(buf, len, out, why);
	}
	if (buf[0] == pp2_sig[0]) {
		if (mode == SG_PP_V1)
			return fail(why, "PROXY v2 header where v1 is required");
		return parse_v2(buf, len, out, why);
	}
	return fail(why, "no PROXY protocol header");
}
