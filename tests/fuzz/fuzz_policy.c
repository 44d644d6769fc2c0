/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_policy.c: libFuzzer target for the policy protocol
 * (proxy/policy_proto.c).
 *
 * The bytes are a policy server's replies, read back to back as the
 * client reads a kept connection: each parse must stay inside its input,
 * consume at least one octet when it returns a reply, give an action that
 * is NUL-terminated, shorter than its buffer and without controls, and
 * the verdict of that action must be a well-formed reply line (code
 * 400-599, one CRLF at its end) when it refuses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/policy_proto.h"

static void check_verdict(const char *action)
{
	sg_policy_verdict v;
	sg_policy_verdict_of(action, &v);
	size_t n = strnlen(v.text, sizeof v.text);
	if (n == sizeof v.text)
		abort();
	if (v.kind != SG_POL_REFUSE)
		return;
	if (v.code < 400 || v.code > 599 || n < 6)
		abort();
	/* the reply ends in its only line end */
	if (strcspn(v.text, "\r\n") != n - 2 || strcmp(v.text + n - 2, "\r\n"))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	char action[SG_POLICY_TEXT_MAX];
	while (size > 0) {
		size_t used = 0;
		int rc = sg_policy_reply_parse(p, size, action, sizeof action, &used);
		if (rc <= 0)
			break;
		if (used == 0 || used > size)
			abort();
		size_t n = strnlen(action, sizeof action);
		if (n == sizeof action)
			abort();
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)action[i] < 0x20 || action[i] == 0x7f)
				abort();
		check_verdict(action);
		p += used;
		size -= used;
	}
	return 0;
}
