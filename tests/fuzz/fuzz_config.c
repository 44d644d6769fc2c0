/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/fuzz/fuzz_config.c: libFuzzer target for the configuration loader
 * (common/config.c on libinih): the input is written to a file in a private
 * temporary folder and loaded like `saslgate -t` would.
 *
 * It must come back as a config or as FILE:LINE errors, never crash, leak
 * (LeakSanitizer) or run away.  include lines may point anywhere; the
 * temporary folder has no conf.d. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/config.h"
#include "../../common/log.h"

#define FUZZ_PATH_MAX 256

static char conf_path[FUZZ_PATH_MAX];
static char dir[FUZZ_PATH_MAX];

static void cleanup(void)
{
	unlink(conf_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* Each input is written to a file: on tmpfs that costs microseconds,
	 * on a disk-backed /tmp it made the target 10x slower. */
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof dir, "%s/sg_fuzz_config.XXXXXX", base);
	if (!mkdtemp(dir))
		abort();
	snprintf(conf_path, sizeof conf_path, "%s/saslgate.conf", dir);
	atexit(cleanup);
	sg_log_level = -1; /* quiet: nothing the loader logs matters here */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(conf_path, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);

	sg_errors errs = {0};
	sg_config *c = sg_config_load(conf_path, &errs);
	if (!c && errs.n == 0)
		abort(); /* a refused file must say why */
	if (c && errs.n != 0)
		abort(); /* and an accepted one has no errors */
	for (size_t i = 0; i < errs.n; i++)
		if (!errs.msg[i] || !*errs.msg[i])
			abort();
	sg_errors_free(&errs);
	if (c)
		sg_config_unref(c);
	return 0;
}
