/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_session_reply.c: the client reply table (proxy/reply.c).
 *
 * Every entry is a well-formed reply: a 2xx-5xx code, an RFC 3463 enhanced
 * code whose class matches (2.x.x with 2yz ...), a non-empty text unless it
 * is the host-only 250; and the replies the contract (README, saslgate(8)) names carry exactly the
 * codes it names. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "../../proxy/reply.h"
#include "check.h"

/* "c.s.d": class 2/4/5, subject and detail 1-3 digits (RFC 3463 2) */
static int enh_ok(const char *e, int code)
{
	if (!e)
		return 1;
	if (e[0] - '0' != code / 100 || e[1] != '.')
		return 0;
	const char *p = e + 2;
	for (int part = 0; part < 2; part++) {
		int n = 0;
		while (isdigit((unsigned char)*p)) {
			p++;
			n++;
		}
		if (n < 1 || n > 3)
			return 0;
		if (part == 0 && *p++ != '.')
			return 0;
	}
	return *p == '\0';
}

struct want {
	enum sg_rep r;
	int code;
	const char *enh;
};

/* the reply codes the contract fixes (README, saslgate(8)) */
static const struct want contract[] = {
	{SG_R_AUTH_OK, 235, "2.7.0"},        {SG_R_AUTH_FAILED, 535, "5.7.8"},
	{SG_R_BAD_MECH, 504, "5.5.4"},       {SG_R_BAD_B64, 501, "5.5.2"},
	{SG_R_ALREADY_AUTH, 503, "5.5.1"},   {SG_R_AUTH_IN_TXN, 503, "5.5.1"},
	{SG_R_ENCRYPT_NEEDED, 538, "5.7.11"}, {SG_R_TOO_MANY_FAIL, 421, "4.7.0"},
	{SG_R_AUTH_TEMPFAIL, 454, "4.7.0"},  {SG_R_AUTH_REQUIRED, 530, "5.7.0"},
	{SG_R_TOO_BIG, 552, "5.3.4"},        {SG_R_LINE_TOO_LONG, 500, "5.5.2"},
	{SG_R_UNKNOWN, 502, "5.5.1"},        {SG_R_TOO_MANY_ERR, 421, "4.7.0"},
	{SG_R_IDLE, 421, "4.4.2"},           {SG_R_TOO_MANY_CONN, 421, "4.7.0"},
	{SG_R_BYE, 221, "2.0.0"},            {SG_R_OK, 250, "2.0.0"},
	{SG_R_VRFY, 252, "2.0.0"},           {SG_R_SHUTDOWN, 421, "4.3.2"},
	{SG_R_AUTH_CANCEL, 501, "5.7.0"},    {SG_R_TLS_UNAVAIL, 454, "4.7.0"},
	{SG_R_STARTTLS, 220, "2.0.0"},       {SG_R_TOO_MANY_RCPT, 452, "4.5.3"},
	{SG_R_BAD_ADDR, 553, "5.1.3"},       {SG_R_NOT_OWNER, 553, "5.7.1"},
	{SG_R_BAD_PARAM, 555, "5.5.4"},      {SG_R_SYNTAX, 501, "5.5.4"},
	{SG_R_NUL, 501, "5.5.2"},
	{SG_R_CONTROL, 501, "5.5.2"},
};

int main(void)
{
	for (int i = 0; i < SG_R_COUNT; i++) {
		const sg_rep_def *d = &sg_rep_table[i];
		ASSERT_GE(d->code, 200, "entry %d", i);
		ASSERT_LE(d->code, 599, "entry %d", i); /* also: no gap */
		ASSERT(enh_ok(d->enh, d->code), "entry %d", i);
		if (ASSERT_NOT_NULL(d->text, "entry %d", i)) {
			ASSERT(d->text[0] || d->host, "entry %d", i);
			/* a reply line must not be able to break the framing */
			ASSERT(!strpbrk(d->text, "\r\n"), "entry %d", i);
		}
		/* RFC 5321 4.2.1 / 3.8: 421 names the host */
		ASSERT(d->code != 421 || d->host, "entry %d", i);
	}
	for (size_t i = 0; i < sizeof contract / sizeof contract[0]; i++) {
		const sg_rep_def *d = &sg_rep_table[contract[i].r];
		ASSERT_EQ(d->code, contract[i].code, "entry %d", (int)contract[i].r);
		ASSERT_STR_EQ(d->enh, contract[i].enh, "entry %d", (int)contract[i].r);
	}
	/* the greeting: "220 <host> ESMTP" */
	const sg_rep_def *g = &sg_rep_table[SG_R_GREETING];
	ASSERT_EQ(g->code, 220);
	ASSERT(g->host);
	ASSERT_NULL(g->enh);
	ASSERT_STR_EQ(g->text, "ESMTP");
	return CHECK_SUMMARY();
}
