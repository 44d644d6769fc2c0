#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# tests/fuzz/run.sh: build the libFuzzer targets (tests/fuzz/fuzz_*.c) with
# clang in build-fuzz/, replay every seed corpus (tests/fuzz/corpus/<target>/,
# which also holds the regression inputs of past crashes), then fuzz each
# target for FUZZ_SECONDS (default 30).  Exits non-zero if a corpus input
# fails or the fuzzer finds a crash, leak or timeout; each new crash input is
# minimised into the corpus as crash-<sha1> so it is replayed from then on.
#
#   FUZZ_SECONDS=300 tests/fuzz/run.sh            all targets, 5 min each
#   FUZZ_SECONDS=0 tests/fuzz/run.sh              replay only
#   tests/fuzz/run.sh fuzz_config                 one target
#
# New interesting inputs found while fuzzing go to build-fuzz/work/<target>/,
# not into the repository.  The committed corpora are hand-made seeds,
# regression inputs, and what the hour-long runs of tests/fuzz/long.sh found
# that adds coverage (named by their SHA-1).
#
# Every fuzzer run is bounded by timeout(1) as well as by libFuzzer's own
# limits, so a target that hangs, or a minimisation that never converges,
# ends the script with a failure instead of stalling it.  A timeout input is
# saved as it is (minimising one reruns it many times, each run taking the
# whole timeout).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
B="$ROOT/build-fuzz"
CC_FUZZ=${CC_FUZZ:-clang-14}
JOBS=$(nproc 2>/dev/null || echo 2)

# per-target input size bound (octets), near what the real code accepts
max_len() {
	case "$1" in
	fuzz_proxyproto) echo 2048 ;;   # SG_PP_MAX is 1024
	fuzz_tls_server) echo 16384 ;;  # one TLS record plus header
	fuzz_config) echo 16384 ;;
	*) echo 8192 ;;
	esac
}

mkdir -p "$B"
echo "fuzz: configuring $B with $CC_FUZZ"
if ! cmake -S . -B "$B" -DSG_FUZZ=ON -DSG_TESTS=OFF \
	-DCMAKE_C_COMPILER="$CC_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	>"$B/cmake.log" 2>&1; then
	tail -n 30 "$B/cmake.log"
	echo "fuzz: cmake failed"
	exit 1
fi

if [ $# -gt 0 ]; then
	targets="$*"
else
	targets=$(ls tests/fuzz/fuzz_*.c | sed 's#.*/##; s#\.c$##')
fi

if ! cmake --build "$B" -j"$JOBS" --target $targets >"$B/build.log" 2>&1; then
	tail -n 40 "$B/build.log"
	echo "fuzz: build failed"
	exit 1
fi

status=0
summary=""
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

for t in $targets; do
	bin="$B/$t"
	corpus="tests/fuzz/corpus/$t"
	work="$B/work/$t"
	art="$B/artifacts/$t"
	mkdir -p "$corpus" "$work" "$art"
	ml=$(max_len "$t")

	# 1. replay: every seed and regression input, once
	nseeds=$(ls "$corpus" | wc -l)
	echo "fuzz: $t: replaying $nseeds inputs, then fuzzing ${FUZZ_SECONDS}s"
	if [ "$nseeds" -gt 0 ]; then
		if ! timeout -k 10 600 "$bin" -rss_limit_mb=2048 -timeout=10 "$corpus"/* \
			>"$B/$t.replay.log" 2>&1; then
			tail -n 40 "$B/$t.replay.log"
			echo "fuzz: $t: corpus replay FAILED"
			summary="$summary
$t: replay of $nseeds inputs FAILED"
			status=1
			continue
		fi
	fi
	[ "$FUZZ_SECONDS" -gt 0 ] || {
		summary="$summary
$t: replayed $nseeds inputs, ok"
		continue
	}

	# 2. fuzz for FUZZ_SECONDS
	start=$(date +%s)
	timeout -k 10 $((FUZZ_SECONDS + 120)) \
		"$bin" -max_total_time="$FUZZ_SECONDS" -max_len="$ml" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$art/" "$work" "$corpus" >"$B/$t.fuzz.log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/$t.fuzz.log" | tail -n 1)
	cov=$(grep -Eo 'cov: [0-9]+' "$B/$t.fuzz.log" | tail -n 1)
	if [ "$rc" -eq 0 ]; then
		summary="$summary
$t: replayed $nseeds, fuzzed ${secs}s, ${execs:-?} runs, ${cov:-cov: ?}, no crash"
		continue
	fi

	# 3. a finding: show it, minimise it into the corpus as a regression
	status=1
	echo "fuzz: $t: exit status $rc after ${secs}s"
	grep -E 'ERROR|SUMMARY|==[0-9]+==|^    #[0-9]+ ' "$B/$t.fuzz.log" | head -n 40
	for crash in "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-*; do
		[ -f "$crash" ] || continue
		kind=$(basename "$crash" | cut -d- -f1)
		sum=$(sha1sum "$crash" | cut -c1-16)
		dest="$corpus/$kind-$sum"
		case "$kind" in
		crash | leak)
			timeout -k 5 120 "$bin" -minimize_crash=1 \
				-max_total_time=60 -runs=100000 -timeout=10 \
				-exact_artifact_path="$dest" "$crash" \
				>"$B/$t.minimize.log" 2>&1 ;;
		esac
		[ -f "$dest" ] || cp "$crash" "$dest"
		echo "fuzz: $t: $kind input saved as $dest"
		mv "$crash" "$crash.done"
	done
	summary="$summary
$t: fuzzed ${secs}s: FOUND A PROBLEM (log: $B/$t.fuzz.log)"
done

echo "fuzz summary:$summary"
exit $status
