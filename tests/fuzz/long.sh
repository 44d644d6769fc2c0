#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/fuzz/long.sh: long fuzzing runs, outside CI.  Each target runs until it
# has used CPU_SECONDS of processor time (default 3600), measured from
# /proc/PID/stat, so a run that shares the machine still gets its full hour
# of fuzzing.  LANES targets run side by side (default 2) at nice 19, so the
# machine stays usable; `kill -STOP` on the fuzzers pauses them without
# costing them any of their budget (libFuzzer's watchdog, which counts
# wall-clock time, then calls the input in hand a timeout: that input is run
# again alone, and when it runs in time the fuzzing goes on from its
# corpus with the rest of its budget).
#
#   tests/fuzz/long.sh                      every target, one CPU hour each
#   CPU_SECONDS=600 tests/fuzz/long.sh fuzz_config fuzz_policy
#
# Expects the binaries built by tests/fuzz/run.sh in build-fuzz/.  Each run
# starts from the committed corpus plus what earlier long runs found
# (build-fuzz/long/work/<target>/).  When every run is over, each target's
# finds are merged (libFuzzer -merge=1) into a copy of its committed corpus,
# build-fuzz/long/min/<target>/: the committed inputs stay as they are
# (hand-made seeds, crash-*, leak-* and timeout-* regression inputs) and
# only the fewest found inputs that add coverage join them; copy that over
# tests/fuzz/corpus/<target>/ to commit it.  A table of the runs is printed
# and kept in build-fuzz/long/table.md.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
B="$ROOT/build-fuzz"
L="$B/long"
CPU_SECONDS=${CPU_SECONDS:-3600}
LANES=${LANES:-2}
HZ=$(getconf CLK_TCK)

if [ $# -gt 0 ]; then
	targets="$*"
else
	targets=$(ls tests/fuzz/fuzz_*.c | sed 's#.*/##; s#\.c$##')
fi
for t in $targets; do
	[ -x "$B/$t" ] || { echo "long: $B/$t missing: run tests/fuzz/run.sh first"; exit 1; }
done

max_len() {
	case "$1" in
	fuzz_proxyproto) echo 2048 ;;
	fuzz_tls_server) echo 16384 ;;
	fuzz_config) echo 16384 ;;
	*) echo 8192 ;;
	esac
}

# cpu_of PID: user+system seconds used so far by PID
cpu_of() {
	awk -v hz="$HZ" '{ sub(/^.*\) /, ""); print int(($12 + $13) / hz) }' \
		"/proc/$1/stat" 2>/dev/null || echo -1
}

# stall_only ART: every timeout input in ART runs in time when run alone:
# the "timeout" was the machine (or a SIGSTOP) stalling the fuzzer, whose
# watchdog counts wall-clock time.  Such inputs are set aside as *.stall.
stall_only() {
	local f any=0
	for f in "$1"/timeout-* "$1"/slow-unit-*; do
		[ -f "$f" ] || continue
		any=1
		timeout -k 5 60 "$B/$t" -timeout=10 -runs=1 -rss_limit_mb=2048 "$f" \
			>/dev/null 2>&1 || return 1
	done
	[ "$any" = 1 ] || return 1
	for f in "$1"/timeout-* "$1"/slow-unit-*; do
		[ -f "$f" ] && mv "$f" "$f.stall"
	done
	return 0
}

# one_run TARGET: fuzz until CPU_SECONDS are used, then SIGINT (libFuzzer
# prints its final statistics on SIGINT).  A run ended by a timeout that
# does not reproduce goes on from its corpus with the rest of its budget.
one_run() {
	t=$1
	work="$L/work/$t"
	art="$L/artifacts/$t"
	mkdir -p "$work" "$art"
	log="$L/$t.log"
	: >"$log"
	start=$(date +%s)
	total=0 stalls=0 execs=0
	while :; do
		ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1" \
		UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
			nice -n 19 "$B/$t" -max_len="$(max_len "$t")" -timeout=10 \
			-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" \
			"$work" "tests/fuzz/corpus/$t" >>"$log" 2>&1 &
		pid=$!
		used=0
		while kill -0 "$pid" 2>/dev/null; do
			sleep 5
			now=$(cpu_of "$pid")
			[ "$now" -ge 0 ] && used=$now
			[ $((total + used)) -ge "$CPU_SECONDS" ] && kill -INT "$pid" 2>/dev/null
		done
		wait "$pid"
		rc=$?
		total=$((total + used))
		n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
		execs=$((execs + ${n:-0}))
		echo "long: $t: run ended, exit $rc, ${total}s CPU so far" >>"$log"
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 72 ] && [ "$rc" -ne 130 ] &&
			[ "$total" -lt "$CPU_SECONDS" ] && stall_only "$art"; then
			stalls=$((stalls + 1))
			continue
		fi
		break
	done
	wall=$(($(date +%s) - start))
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
	ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
	finds=$(ls "$art" | grep -c -E '^(crash|leak|timeout|oom)-[0-9a-f]+$')
	# interrupted by us is the normal end (libFuzzer exits 72 on SIGINT)
	case "$rc" in 0 | 72 | 130) verdict=ok ;; *) verdict="exit $rc" ;; esac
	[ "$stalls" -gt 0 ] && verdict="$verdict ($stalls stall(s) resumed)"
	echo "| $t | $total | $wall | $execs | ${cov:-?} | ${ft:-?} | $finds | $verdict |" \
		>>"$L/runs.md"
}

mkdir -p "$L"
[ -f "$L/runs.md" ] || echo "| target | CPU s | wall s | execs | cov | ft | findings | end |" >"$L/runs.md"

# a simple lane pool: start up to LANES runs, wait for any to end
set -- $targets
running=0
while [ $# -gt 0 ] || [ "$running" -gt 0 ]; do
	while [ $# -gt 0 ] && [ "$running" -lt "$LANES" ]; do
		echo "long: $1 starts ($(date -u +%H:%M:%S))"
		one_run "$1" &
		running=$((running + 1))
		shift
	done
	wait -n 2>/dev/null || wait
	running=$(jobs -p | wc -l)
done

# minimise: the committed corpus as it is (hand-made seeds, regression
# inputs), plus the fewest found inputs that add coverage to it
for t in $targets; do
	min="$L/min/$t"
	rm -rf "$min"
	mkdir -p "$L/min"
	cp -r "tests/fuzz/corpus/$t" "$min"
	before=$(ls "$min" | wc -l)
	"$B/$t" -merge=1 -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
		"$min" "$L/work/$t" >"$L/$t.merge.log" 2>&1
	echo "long: $t: $before committed inputs + $(($(ls "$min" | wc -l) - before)) found ($(cat "$min"/* 2>/dev/null | wc -c) octets in all)"
done
{
	echo "| target | CPU s | wall s | execs | cov | ft | findings | end |"
	grep -v '^| target' "$L/runs.md"
} >"$L/table.md"
cat "$L/table.md"
