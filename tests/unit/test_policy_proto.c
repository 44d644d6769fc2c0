/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_policy_proto.c: the policy protocol without I/O
 * (proxy/policy_proto.c): request encoding, reply parsing, actions. */
#include <string.h>

#include "../../proxy/policy_proto.h"
#include "check.h"

static void test_encode(void)
{
	sg_policy_attr a[] = {
	    {"request", "smtpd_access_policy"},
	    {"sasl_username", "alice"},
	    {"queue_id", ""},
	    {"skipped", NULL},
	};
	sg_buf b;
	sg_buf_init(&b, 0);
	const char *bad = "x";
	ASSERT_EQ(sg_policy_encode(a, 4, &b, &bad), 0);
	ASSERT_NULL(bad);
	ASSERT_BUF_EQ(b.data, b.len,
	              "request=smtpd_access_policy\nsasl_username=alice\n"
	              "queue_id=\n\n");
	sg_buf_reset(&b);
	/* a value with a line end would add an attribute: never sent */
	sg_policy_attr evil[] = {
	    {"request", "smtpd_access_policy"},
	    {"sasl_username", "alice\nrecipient_count=0"},
	};
	ASSERT_EQ(sg_policy_encode(evil, 2, &b, &bad), -1);
	ASSERT_STR_EQ(bad, "sasl_username");
	ASSERT_EQ(b.len, 0);
	evil[1].value = "alice\r";
	ASSERT_EQ(sg_policy_encode(evil, 2, &b, &bad), -1);
	sg_buf_free(&b);
}

static void test_parse(void)
{
	char act[SG_POLICY_TEXT_MAX];
	size_t used = 99;
	const char *r = "action=DUNNO\n\nnext";
	ASSERT_EQ(sg_policy_reply_parse(r, strlen(r), act, sizeof act, &used), 1);
	ASSERT_STR_EQ(act, "DUNNO");
	ASSERT_EQ(used, 14);
	/* cut anywhere: not yet */
	for (size_t n = 0; n < 14; n++)
		ASSERT_EQ(sg_policy_reply_parse(r, n, act, sizeof act, &used), 0,
		          "cut at %zu", n);
	/* other attributes ignored, CR tolerated, controls made blanks */
	r = "foo=bar\r\naction=REJECT go\taway\r\n\r\n";
	ASSERT_EQ(sg_policy_reply_parse(r, strlen(r), act, sizeof act, &used), 1);
	ASSERT_STR_EQ(act, "REJECT go away");
	ASSERT_EQ(used, strlen(r));
	/* no action, a line without '=', an empty name: not a reply */
	r = "foo=bar\n\n";
	ASSERT_EQ(sg_policy_reply_parse(r, strlen(r), act, sizeof act, &used), -1);
	r = "garbage\n\n";
	ASSERT_EQ(sg_policy_reply_parse(r, strlen(r), act, sizeof act, &used), -1);
	r = "=x\n\n";
	ASSERT_EQ(sg_policy_reply_parse(r, strlen(r), act, sizeof act, &used), -1);
	/* endless: refused once past the bound */
	static char big[SG_POLICY_REPLY_MAX + 10];
	memset(big, 'a', sizeof big);
	ASSERT_EQ(sg_policy_reply_parse(big, sizeof big, act, sizeof act, &used), -1);
}

static void check_verdict(const char *action, enum sg_policy_kind kind,
                          int code, const char *text, int line)
{
	sg_policy_verdict v;
	sg_policy_verdict_of(action, &v);
	check_at(v.kind == kind, __FILE__, line, "kind of \"%s\"", action);
	check_at(v.code == code, __FILE__, line, "code of \"%s\"", action);
	check_at(strcmp(v.text, text) == 0, __FILE__, line, "text of \"%s\": %s", action, v.text);
}
#define VERDICT(a, k, c, t) check_verdict(a, k, c, t, __LINE__)

static void test_actions(void)
{
	VERDICT("OK", SG_POL_CONTINUE, 0, "");
	VERDICT("dunno", SG_POL_CONTINUE, 0, "");
	VERDICT("DEFER_IF_REJECT later", SG_POL_CONTINUE, 0, "");
	VERDICT("REJECT", SG_POL_REFUSE, 554, "554 5.7.1 Access denied\r\n");
	VERDICT("reject go away", SG_POL_REFUSE, 554, "554 5.7.1 go away\r\n");
	VERDICT("DEFER", SG_POL_REFUSE, 450, "450 4.7.1 Service unavailable\r\n");
	VERDICT("defer_if_permit Rate limit reach, retry later", SG_POL_REFUSE,
	        450, "450 4.7.1 Rate limit reach, retry later\r\n");
	VERDICT("451 4.7.2 slow down", SG_POL_REFUSE, 451,
	        "451 4.7.2 slow down\r\n");
	VERDICT("550 no", SG_POL_REFUSE, 550, "550 5.7.1 no\r\n");
	/* an enhanced code of the wrong class is text */
	VERDICT("450 5.7.1 x", SG_POL_REFUSE, 450, "450 4.7.1 5.7.1 x\r\n");
	VERDICT("WARN look here", SG_POL_WARN, 0, "look here");
	VERDICT("PREPEND X-Checked: yes", SG_POL_PREPEND, 0, "X-Checked: yes");
	VERDICT("PREPEND .X: dot", SG_POL_UNKNOWN, 0, "");
	VERDICT("PREPEND no colon", SG_POL_UNKNOWN, 0, "");
	VERDICT("HOLD", SG_POL_IGNORED, 0, "");
	VERDICT("redirect a@b", SG_POL_IGNORED, 0, "");
	VERDICT("DISCARD", SG_POL_IGNORED, 0, "");
	VERDICT("OKAY", SG_POL_UNKNOWN, 0, "");
	VERDICT("250 fine", SG_POL_UNKNOWN, 0, "");
	VERDICT("4500 x", SG_POL_UNKNOWN, 0, "");
	VERDICT("", SG_POL_UNKNOWN, 0, "");
}

int main(void)
{
	test_encode();
	test_parse();
	test_actions();
	return CHECK_SUMMARY();
}
