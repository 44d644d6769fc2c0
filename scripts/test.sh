#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# scripts/test.sh: README's test command.  Installs what is missing, builds
# saslgate twice (warnings as errors; ASan+UBSan+LeakSanitizer), runs every
# test in both builds (C unit tests, process tests with real Postfix,
# saslauthd, swaks, openssl), replays the fuzz corpora, and ends with one
# summary line "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)

sh scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
JOBS=$(nproc 2>/dev/null || echo 2)
# The package test installs, runs and purges the .deb on this machine
# (tests/integration/test_package.py); this script runs it, a bare ctest
# does not.
export SG_PACKAGE_TEST=1

# run_ctest DIR LABEL [ctest args]: adds ctest's counts to the totals.
# The sanitizer pass leaves out the package test (it builds its own
# release .deb) and the harness self-tests (they do not run saslgate).
run_ctest() {
	dir=$1
	label=$2
	shift 2
	log="$dir/ctest.log"
	echo "=== $label: ctest"
	# two at a time: the process tests mostly wait on timers and peers,
	# and the whole run must stay within CI's time limit
	(cd "$dir" && ctest -j"$JOBS" --output-on-failure --timeout 900 "$@") 2>&1 |
		tee "$log"
	line=$(grep -E "tests passed, [0-9]+ tests? failed out of" "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "$label: ctest produced no summary"
		failed=$((failed + 1))
		return
	fi
	total=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
	bad=$(echo "$line" | sed -E 's/.*, ([0-9]+) tests? failed.*/\1/')
	passed=$((passed + total - bad))
	failed=$((failed + bad))
}

build() {
	dir=$1
	shift
	echo "=== build $dir $*"
	if ! cmake -S . -B "$dir" -DSG_WERROR=ON "$@" >"$dir.cmake.log" 2>&1 ||
		! cmake --build "$dir" -j"$JOBS" >"$dir.build.log" 2>&1; then
		cat "$dir.cmake.log" "$dir.build.log" 2>/dev/null | tail -n 60
		echo "build $dir FAILED"
		failed=$((failed + 1))
		return 1
	fi
	return 0
}

if build build -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
	run_ctest build "release build"
fi
if build build-asan -DSG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug; then
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
		run_ctest build-asan "sanitizer build (ASan+UBSan+LSan)" \
		-E "integration/test_(package|harness)$"
fi

if [ -x tests/fuzz/run.sh ]; then
	# 20 s per target keeps the whole run inside CI's time limit; the long
	# runs are tests/fuzz/README.md's
	FUZZ_SECONDS=${FUZZ_SECONDS:-20}
	export FUZZ_SECONDS
	echo "=== fuzz: corpus replay and ${FUZZ_SECONDS}s per target"
	if tests/fuzz/run.sh; then
		passed=$((passed + 1))
	else
		echo "fuzz: FAILED"
		failed=$((failed + 1))
	fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
