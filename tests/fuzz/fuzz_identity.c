/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_identity.c: libFuzzer target for the identity serializer
 * (upstream/identity.c, upstream/received.c).
 *
 * Input: one octet of XCLIENT/XFORWARD attributes offered, one octet of
 * identity mode, then the login, a NUL, the HELO name.  Property, read back
 * the way the upstream reads each form: the identity it ends up with is the
 * login exactly, or the serializer refused it for a reason that holds.
 *   - XCLIENT/XFORWARD: each command <= 512 octets, CRLF only at its end,
 *     attributes xtext-decoded back to their values, each once, LOGIN there
 *     exactly when there is a login;
 *   - Received "(authenticated sender: ...)" (quoted-pairs undone) and
 *     X-Authenticated-User: the login, every header line <= 998 octets;
 *   - MAIL AUTH= and the log's user=: decode back to the login. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/config.h"
#include "../../upstream/identity.h"
#include "../../upstream/received.h"
#include "../../upstream/reply_parse.h"

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                                                             : -1;
}

/* xtext (or the log form) decoded; NULL when malformed. */
static char *unplus(const char *p, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '+') {
			out[o++] = p[i];
			continue;
		}
		if (i + 2 >= n) {
			free(out);
			return NULL;
		}
		int h = hexval(p[i + 1]), l = hexval(p[i + 2]);
		if (h < 0 || l < 0) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(h * 16 + l);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

/* An independent reading of "a header can carry this exactly". */
static bool header_ok(const unsigned char *s, bool field_body)
{
	size_t n = strlen((const char *)s);
	if (n == 0)
		return false;
	if (field_body && (s[0] == ' ' || s[n - 1] == ' '))
		return false;
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		int k = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
		      : (c & 0xf8) == 0xf0 ? 4 : 0;
		if (!k || i + (size_t)k > n)
			return false;
		uint32_t cp = c & (0x7f >> k);
		for (int j = 1; j < k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		uint32_t min = k == 2 ? 0x80 : k == 3 ? 0x800 : 0x10000;
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += (size_t)k;
	}
	return true;
}

static size_t xtext_len(const char *v)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		n += *p > 32 && *p < 127 && !strchr("+=\"<>\\", *p) ? 1 : 3;
	return n;
}

/* Check commands made by sg_xclient_lines / sg_xforward_lines. */
static void check_commands(const char *verb, int n,
                           char lines[][SG_XCLIENT_LINE_MAX + 1],
                           const char *login, const char *helo)
{
	unsigned seen = 0;
	bool login_seen = false;
	for (int i = 0; i < n; i++) {
		const char *l = lines[i];
		size_t len = strlen(l);
		if (len > SG_XCLIENT_LINE_MAX || len < 2 || l[len - 2] != '\r' ||
		    l[len - 1] != '\n' || strncmp(l, verb, strlen(verb)) != 0)
			abort();
		for (size_t k = 0; k + 2 < len; k++)
			if (l[k] == '\r' || l[k] == '\n' || strchr("\"<>\\", l[k]) ||
			    (unsigned char)l[k] < 0x20 || (unsigned char)l[k] > 0x7e)
				abort(); /* also nothing Postfix's tokenizer groups by */
		/* " NAME=value" tokens */
		const char *p = l + strlen(verb), *end = l + len - 2;
		if (p == end)
			abort(); /* a command with no attribute */
		while (p < end) {
			if (*p != ' ')
				abort();
			p++;
			const char *eq = memchr(p, '=', (size_t)(end - p));
			const char *sp = memchr(p, ' ', (size_t)(end - p));
			if (!eq || (sp && sp < eq))
				abort();
			const char *vend = sp ? sp : end;
			char *v = unplus(eq + 1, (size_t)(vend - eq - 1));
			if (!v)
				abort();
			size_t nl = (size_t)(eq - p);
			unsigned bit = 0;
			if (nl == 5 && !memcmp(p, "LOGIN", 5)) {
				bit = 1;
				if (!login || strcmp(v, login) != 0)
					abort(); /* the login exactly, or no LOGIN */
				login_seen = true;
			} else if (nl == 4 && !memcmp(p, "HELO", 4)) {
				bit = 2;
				if (helo && *helo && strcmp(v, helo) != 0)
					abort();
			}
			if (bit & seen)
				abort(); /* an attribute twice */
			seen |= bit;
			free(v);
			p = vend;
		}
	}
	if (login && !login_seen && !strcmp(verb, "XCLIENT"))
		abort(); /* XCLIENT for a logged-in user without LOGIN */
}

/* The comment value after "(authenticated sender: " up to its ")",
 * quoted-pairs undone. */
static char *comment_value(const char *h, const char *end)
{
	const char *key = "(authenticated sender: ";
	const char *p = strstr(h, key);
	if (!p || p > end)
		return NULL;
	p += strlen(key);
	char *out = malloc(strlen(p) + 1);
	size_t o = 0;
	for (; *p && *p != ')'; p++) {
		if (*p == '(')
			abort(); /* unescaped: would open a nested comment */
		if (*p == '\\')
			p++;
		if (!*p)
			abort();
		out[o++] = *p;
	}
	if (*p != ')')
		abort();
	out[o] = '\0';
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 4096)
		return 0;
	unsigned attrs = data[0] | (data[0] & 1 ? (unsigned)SG_XA_DESTPORT : 0);
	int mode = data[1] % 5;
	char *buf = malloc(size - 2 + 2);
	memcpy(buf, data + 2, size - 2);
	buf[size - 2] = buf[size - 1] = '\0';
	const char *login = buf;
	const char *helo = buf + strlen(buf) + 1 <= buf + size - 2
	                       ? buf + strlen(buf) + 1
	                       : "";
	if (!*login)
		login = NULL;

	sg_identity id = {.sid = "fz", .login = login, .client_ip = "192.0.2.1",
	                  .client_port = 4567, .helo = helo, .esmtp = true,
	                  .tls_version = "TLSv1.3", .tls_cipher = "X",
	                  .tls_bits = 256, .dest_ip = "::1", .dest_port = 587};
	char lines[SG_XCLIENT_LINES][SG_XCLIENT_LINE_MAX + 1];
	const char *why = NULL;

	/* XCLIENT */
	int n = sg_xclient_lines(&id, attrs, lines, SG_XCLIENT_LINES, &why);
	if (n > 0) {
		check_commands("XCLIENT", n, lines, login, helo);
	} else {
		/* refused: no LOGIN offered, or a value too long for a command
		 * of its own, or nothing to send */
		bool reason = (login && !(attrs & SG_XA_LOGIN)) ||
		              (login && xtext_len(login) > 512 - 16) ||
		              (*helo && (attrs & SG_XA_HELO) &&
		               xtext_len(helo) > 512 - 15) ||
		              !(attrs & (SG_XA_NAME | SG_XA_ADDR | SG_XA_PORT |
		                         SG_XA_PROTO | SG_XA_HELO |
		                         SG_XA_DESTADDR | SG_XA_DESTPORT |
		                         (login ? SG_XA_LOGIN : 0u)));
		if (!why || !reason)
			abort();
	}
	/* XFORWARD never names the login */
	n = sg_xforward_lines(&id, attrs, lines, SG_XCLIENT_LINES, &why);
	if (n > 0)
		check_commands("XFORWARD", n, lines, NULL, helo);

	/* header forms and the mode's verdict */
	const char *unfit = sg_identity_unfit(&id, mode);
	if (login && mode == SG_ID_XCLIENT && !unfit &&
	    xtext_len(login) > 512 - 16)
		abort();
	if (login && mode != SG_ID_NONE && !unfit) {
		/* the comment form, and for header/auth the field body form */
		if (!header_ok((const unsigned char *)login, false))
			abort();
		if ((mode == SG_ID_HEADER || mode == SG_ID_AUTH) &&
		    !header_ok((const unsigned char *)login, true))
			abort();
		bool xauth = mode == SG_ID_HEADER || mode == SG_ID_AUTH;
		sg_buf b;
		sg_buf_init(&b, 0);
		if (sg_received_build(&b, &id, "mx", true, xauth, 1795428000) < 0)
			abort(); /* fit, yet not written */
		sg_buf_append(&b, "", 1);
		size_t col = 0;
		for (const char *c = b.data; *c; c++) {
			col = *c == '\n' ? 0 : col + 1;
			if (col > SG_HEADER_LINE_MAX + 1)
				abort();
		}
		char *v = comment_value(b.data, b.data + b.len);
		if (!v || strcmp(v, login) != 0)
			abort();
		free(v);
		const char *x = strstr(b.data, "\r\nX-Authenticated-User: ");
		if (xauth) {
			if (!x)
				abort();
			x += 24;
			const char *e = strstr(x, "\r\n");
			if (!e || (size_t)(e - x) != strlen(login) ||
			    memcmp(x, login, (size_t)(e - x)) != 0)
				abort();
		} else if (x) {
			abort();
		}
		sg_buf_free(&b);
	}
	if (login && mode != SG_ID_NONE && unfit) {
		/* refused: some form that mode writes cannot carry it */
		bool xauth = mode == SG_ID_HEADER || mode == SG_ID_AUTH;
		size_t esc = strlen(login);
		for (const char *c = login; *c; c++)
			esc += *c == '(' || *c == ')' || *c == '\\';
		bool reason = !header_ok((const unsigned char *)login, false) ||
		              (xauth && !header_ok((const unsigned char *)login,
		                                   true)) ||
		              esc + 25 > SG_HEADER_LINE_MAX ||
		              (mode == SG_ID_XCLIENT && xtext_len(login) > 496);
		if (!reason)
			abort();
	}

	/* MAIL AUTH= and the log's user= */
	sg_buf m;
	sg_buf_init(&m, 0);
	if (sg_identity_mail_auth(&m, login) < 0)
		abort();
	if (login) {
		if (m.len < 6 || memcmp(m.data, " AUTH=", 6) != 0)
			abort();
		for (size_t i = 6; i < m.len; i++)
			if (m.data[i] <= ' ' || m.data[i] > '~' ||
			    strchr("=\"<>\\", m.data[i]))
				abort();
		char *d = unplus(m.data + 6, m.len - 6);
		if (!d || strcmp(d, login) != 0)
			abort();
		free(d);
		char *lg = sg_identity_log_dup(login);
		for (const char *c = lg; *c; c++)
			if (*c <= ' ' || *c > '~' || *c == '=' || *c == '"' || *c == '\\')
				abort();
		d = unplus(lg, strlen(lg));
		if (!d || strcmp(d, login) != 0)
			abort();
		free(d);
		free(lg);
	}
	sg_buf_free(&m);
	free(buf);
	return 0;
}
