/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_proxyproto.c: libFuzzer target for the PROXY protocol
 * parser (proxy/proxyproto.c), in every mode.
 *
 * Beyond "no crash, no over-read" it checks the parser's contract, since the
 * session relies on it: a header is never longer than the input nor than
 * SG_PP_MAX; parsing only the header gives the same length; a proper prefix
 * of a complete header asks for more (0); and once a prefix is refused (-1),
 * more bytes never make it acceptable (so refusing early is safe). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/config.h"
#include "../../proxy/proxyproto.h"

static const int modes[] = {SG_PP_NO, SG_PP_V1, SG_PP_V2, SG_PP_ANY};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		int mode = modes[m];
		sg_pp_result r;
		const char *why = NULL;
		int n = sg_pp_parse(data, size, mode, &r, &why);

		if (n < -1 || (n > 0 && (size_t)n > size) || n > SG_PP_MAX)
			abort();
		if (n == -1 && (!why || !*why))
			abort(); /* every refusal names its reason for the log */
		if (mode == SG_PP_NO && n != -1)
			abort();
		if (n == 0 && size >= SG_PP_MAX)
			abort(); /* would let a client make us buffer without bound */
		if (n > 0) {
			if (r.version != (data[0] == 'P' ? 1 : 2))
				abort();
			if (r.version == 1 && n > 107)
				abort();
			if (!r.local && r.src.ss_family != r.dst.ss_family)
				abort();
			sg_pp_result r2;
			if (sg_pp_parse(data, (size_t)n, mode, &r2, NULL) != n ||
			    memcmp(&r, &r2, sizeof r) != 0)
				abort();
			/* proper prefixes: a few, not all (keeps runs fast) */
			size_t cuts[] = {0, 1, (size_t)n / 2, (size_t)n - 1};
			for (size_t i = 0; i < 4; i++)
				if (cuts[i] < (size_t)n &&
				    sg_pp_parse(data, cuts[i], mode, &r2, NULL) != 0)
					abort();
		}
		/* A refused prefix stays refused with more input. */
		if (size > 1 && sg_pp_parse(data, size / 2, mode, NULL, NULL) == -1 &&
		    n != -1)
			abort();
	}
	return 0;
}
