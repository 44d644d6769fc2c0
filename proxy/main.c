/* SPDX-License-Identifier: BSD-2-Clause */
/* proxy/main.c: the command line of saslgate (README.md, "Running").
 *
 *   saslgate [-c FILE] [-t] [-V] [-h]
 *
 * Runs in the foreground (systemd style) and logs to stderr. */
#include "../common/config.h"
#include "../common/log.h"
#include "server.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: saslgate [-c FILE] [-t] [-V] [-h]\n"
	        "  -c FILE  configuration file (default %s)\n"
	        "  -t       check the configuration (syntax, the files it names "
	        "opened as\n"
	        "           [server] user, secret modes, TLS key pair, SASL "
	        "start-up), print\n"
	        "           FILE:LINE: message per problem, exit 1 if any\n"
	        "  -V       print the version and exit\n"
	        "  -h       this help\n"
	        "SMTP submission proxy: TLS + SMTP AUTH (Cyrus SASL) in front of "
	        "an MTA.\n"
	        "Signals: SIGHUP reloads, SIGTERM/SIGINT stop gracefully. See "
	        "saslgate(8).\n",
	        SG_DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
	const char *path = SG_DEFAULT_CONFIG;
	bool check = false;
	static const struct option longopts[] = {
	    {"man-keys", no_argument, NULL, 'K'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check = true;
			break;
		case 'V':
			printf("saslgate %s\n", SG_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'K':
			sg_config_print_keys(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "saslgate: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (check)
		return sg_server_check(path);

	sg_errors errs = {0};
	sg_config *cfg = sg_config_load(path, &errs);
	if (!cfg) {
		sg_errors_log(&errs);
		sg_errors_free(&errs);
		log_error(NULL, "not started: fix the configuration (saslgate -t -c %s)",
		          path);
		return 1;
	}
	return sg_server_run(cfg);
}
