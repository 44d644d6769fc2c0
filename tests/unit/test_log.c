/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_log.c: what reaches stderr, and in how many writes.
 *
 * stderr is swapped for a SOCK_SEQPACKET socket while a case logs: each
 * write(2) arrives as one record, so the test sees the lines and how they
 * were grouped (common/log.h: a holding thread writes one batch per flush,
 * whole lines, at most PIPE_BUF octets a write, an error line at once).
 * The checks themselves print to a copy of the real stderr. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../common/log.h"
#include "check.h"

static int rx = -1;    /* our end of the socket that stands for stderr */
static int saved = -1; /* the real stderr */

static void capture_begin(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) {
		perror("socketpair");
		exit(1);
	}
	saved = dup(STDERR_FILENO);
	dup2(sv[1], STDERR_FILENO);
	close(sv[1]);
	rx = sv[0];
}

static void capture_end(void)
{
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(rx);
	rx = saved = -1;
}

/* The next write's octets (into rec, NUL-terminated) and its length, or
 * -1 when nothing more was written (rec keeps the last one). */
static char rec[65536];
static ssize_t next_write(void)
{
	ssize_t n = recv(rx, rec, sizeof rec - 1, MSG_DONTWAIT);
	if (n >= 0)
		rec[n] = '\0';
	return n;
}

/* A line's text after its timestamp: "2026-12-07T18:31:56.123Z info: ..."
 * (24 octets of time, a blank). */
static int stamped(const char *line)
{
	return strlen(line) > 25 && line[4] == '-' && line[10] == 'T' &&
	       line[19] == '.' && line[23] == 'Z' && line[24] == ' ';
}

static void test_unheld_one_write_each(void)
{
	capture_begin();
	log_info("abc", "event=x n=%d", 1);
	log_warn(NULL, "plain");
	ssize_t a = next_write();
	static char first[sizeof rec];
	memcpy(first, rec, sizeof rec);
	ssize_t b = next_write();
	ssize_t c = next_write();
	capture_end();
	ASSERT_EQ(a, 24 + (ssize_t)strlen(" info: sid=abc event=x n=1\n"));
	ASSERT(stamped(first), "%s", first);
	ASSERT_STR_EQ(first + 24, " info: sid=abc event=x n=1\n");
	ASSERT_GT(b, 0);
	ASSERT_STR_EQ(rec + 24, " warn: plain\n");
	ASSERT_EQ(c, -1, "a third write");
}

static void test_held_until_flush(void)
{
	capture_begin();
	sg_log_hold(1);
	log_info("s1", "event=connect");
	log_info("s1", "event=tls");
	log_warn("s2", "line\nwith\rbreaks");
	ssize_t before = next_write();
	sg_log_flush();
	ssize_t batch = next_write();
	ssize_t after = next_write();
	sg_log_flush(); /* nothing held: nothing written */
	ssize_t empty = next_write();
	sg_log_hold(0);
	capture_end();
	ASSERT_EQ(before, -1, "written before the flush");
	ASSERT_GT(batch, 0);
	/* three whole lines, each as an unheld line would be */
	char *l1 = rec, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	ASSERT(stamped(l1) && stamped(l2) && stamped(l3), "%s", rec);
	ASSERT_BUF_EQ(l1 + 24, (size_t)(l2 - l1 - 24), " info: sid=s1 event=connect\n");
	ASSERT_BUF_EQ(l2 + 24, (size_t)(l3 - l2 - 24), " info: sid=s1 event=tls\n");
	ASSERT_STR_EQ(l3 + 24, " warn: sid=s2 line with breaks\n");
	ASSERT_EQ(after, -1);
	ASSERT_EQ(empty, -1);
}

static void test_error_goes_at_once(void)
{
	capture_begin();
	sg_log_hold(1);
	log_info("s1", "before");
	log_error(NULL, "event=fatal reason=\"out of memory\"");
	ssize_t n = next_write();
	char *second = strchr(rec, '\n') + 1;
	ASSERT_GT(n, 0, "the error line waited for a flush");
	ASSERT_STR_EQ(second + 24, " error: event=fatal reason=\"out of memory\"\n");
	ASSERT(strstr(rec, " info: sid=s1 before\n") == rec + 24, "%s", rec);
	log_info("s1", "after");
	ASSERT_EQ(next_write(), -1);
	sg_log_hold(0); /* stops holding: what is held goes now */
	ASSERT_GT(next_write(), 0);
	ASSERT_STR_EQ(rec + 24, " info: sid=s1 after\n");
	log_info("s1", "unheld again");
	ASSERT_GT(next_write(), 0);
	ASSERT_STR_EQ(rec + 24, " info: sid=s1 unheld again\n");
	capture_end();
}

/* Many lines: whole lines per write, none longer than PIPE_BUF unless it is
 * one line alone, all of them in order. */
static void test_batches_split_at_lines(void)
{
	char big[6000];
	memset(big, 'b', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	capture_begin();
	sg_log_hold(1);
	int nlines = 0;
	for (int i = 0; i < 120; i++, nlines++) {
		if (i == 50)
			log_info(NULL, "%s", big); /* longer than PIPE_BUF */
		else
			log_info("s", "line=%03d pad=%070d", i, 0);
	}
	sg_log_flush();
	size_t total = 0;
	int writes = 0, lines = 0, next = 0, alone = 0;
	ssize_t n;
	while ((n = next_write()) > 0) {
		writes++;
		total += (size_t)n;
		ASSERT_EQ(rec[n - 1], '\n', "write %d ends mid-line", writes);
		int in_this = 0;
		for (char *p = rec; *p; p = strchr(p, '\n') + 1, in_this++) {
			lines++;
			char want[16];
			if (strncmp(p + 24, " info: bbbb", 11) == 0) {
				ASSERT_EQ(next, 50);
				alone = 1;
				next++;
				continue;
			}
			snprintf(want, sizeof want, "line=%03d", next);
			ASSERT(strncmp(p + 24 + 13, want, 8) == 0, "expected %s", want);
			next++;
		}
		if ((size_t)n > PIPE_BUF)
			ASSERT_EQ(in_this, 1, "a write over PIPE_BUF with more than one line");
	}
	sg_log_hold(0);
	capture_end();
	ASSERT_EQ(lines, nlines);
	ASSERT_EQ(next, 120);
	ASSERT(alone);
	/* batched: far fewer writes than lines */
	ASSERT_LE(writes, 8, "%d writes for %d lines", writes, nlines);
	ASSERT_GT(total, 119 * 100u);
}

/* More than the holding buffer between two flushes: earlier lines are
 * written to make room, none is lost or reordered. */
static void test_overflow_keeps_order(void)
{
	capture_begin();
	sg_log_hold(1);
	for (int i = 0; i < 400; i++)
		log_info("s", "n=%04d pad=%0100d", i, 0);
	int early = 0;
	while (next_write() > 0)
		early++;
	sg_log_flush();
	capture_end();
	ASSERT_GT(early, 0, "400 lines of 150 octets all held");

	/* once more, reading everything in order */
	capture_begin();
	sg_log_hold(1);
	for (int i = 0; i < 400; i++)
		log_info("s", "n=%04d pad=%0100d", i, 0);
	sg_log_hold(0);
	int next = 0;
	ssize_t n;
	while ((n = next_write()) > 0)
		for (char *p = rec; *p; p = strchr(p, '\n') + 1) {
			char want[16];
			snprintf(want, sizeof want, "n=%04d", next);
			ASSERT(strncmp(p + 24 + 13, want, 6) == 0, "expected %s", want);
			next++;
		}
	capture_end();
	ASSERT_EQ(next, 400);
}

/* Another thread's line goes out at once while this one holds its own. */
static void *other_thread(void *arg)
{
	(void)arg;
	log_info("t2", "from the pool");
	return NULL;
}

static void test_other_threads_unheld(void)
{
	capture_begin();
	sg_log_hold(1);
	log_info("t1", "held");
	pthread_t t;
	pthread_create(&t, NULL, other_thread, NULL);
	pthread_join(t, NULL);
	ASSERT_GT(next_write(), 0);
	ASSERT_STR_EQ(rec + 24, " info: sid=t2 from the pool\n");
	sg_log_hold(0);
	ASSERT_GT(next_write(), 0);
	ASSERT_STR_EQ(rec + 24, " info: sid=t1 held\n");
	capture_end();
}

/* Under systemd: "<N>" per line, no timestamp, several lines in one write
 * (journald makes each line a record with its own priority).  In a child,
 * before this process logs anything: the mode is decided once per process,
 * at its first line. */
static void test_journal_prefix_per_line(void)
{
	capture_begin();
	pid_t pid = fork();
	if (pid == 0) {
		setenv("JOURNAL_STREAM", "8:1234", 1);
		sg_log_hold(1);
		log_info("s1", "event=auth result=ok");
		log_warn("s1", "slow");
		sg_log_hold(0);
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	ssize_t n = next_write();
	ssize_t more = next_write();
	capture_end();
	ASSERT_GT(n, 0);
	ASSERT_STR_EQ(rec, "<6>info: sid=s1 event=auth result=ok\n<4>warn: sid=s1 slow\n");
	ASSERT_EQ(more, -1);
}

int main(void)
{
	/* the checks report on the real stderr while descriptor 2 is swapped */
	stderr = fdopen(dup(STDERR_FILENO), "w");
	setvbuf(stderr, NULL, _IONBF, 0);
	test_journal_prefix_per_line(); /* first: see there */
	test_unheld_one_write_each();
	test_held_until_flush();
	test_error_goes_at_once();
	test_batches_split_at_lines();
	test_overflow_keeps_order();
	test_other_threads_unheld();
	return CHECK_SUMMARY();
}
