#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/anchors.sh: saslgate inside the shared anchor rig, in one run
# with the anchors it was measured against (nginx's mail proxy, Postfix
# submission + before-queue proxy filter), so one table compares them all.
#
# The rig (run-anchors.sh in the directory RIG=<dir> names; not part of
# this repository) starts smtp-sink on
# 127.0.0.1:2525, makes the RSA (or CERT=ecdsa) certificate and the sasldb
# user bench/benchpw (realm saslgate.bench) under /tmp/saslgate-bench, runs
# S1-S4 with its own load generator (smtpload) and prints medians.  This
# script builds saslgate (Release), writes its configuration for that layout
# (workers = 1, sasldb through auxprop, identity = header, port 4587) and
# hands it to the rig as the extra target the rig's README describes.
#
#   sudo tests/bench/anchors.sh                        # REPS=3, S1-S4
#   sudo REPS=1 TARGETS="nginx postfix saslgate" tests/bench/anchors.sh
#
# Every rig knob passes through (REPS, SCENARIOS, TARGETS, CERT, S1_TOTAL,
# IDLE_N, ...); TARGETS defaults to "direct nginx postfix saslgate".  It
# prints figures and asserts nothing (not part of ctest).
set -eu
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/../.." && pwd)
RIG=${RIG:-$ROOT/../shared/bench}
[ -x "$RIG/run-anchors.sh" ] || RIG=/work/shared/bench
[ -x "$RIG/run-anchors.sh" ] || { echo "anchors.sh: no run-anchors.sh (RIG=<dir>)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "anchors.sh: run as root (the rig needs cgroups)" >&2; exit 1; }
BUILD=${BUILD:-$ROOT/build-bench}
PORT=${SASLGATE_PORT:-4587}
SGW=${SGW:-/tmp/saslgate-bench-sg}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$BUILD" -j2 --target saslgate >/dev/null
fi
[ -x "$RIG/smtpload" ] || make -C "$RIG" >/dev/null

mkdir -p "$SGW"
# The rig writes its certificate and sasldb before it starts any target;
# saslgate reads them when the rig starts it.
cat >"$SGW/saslgate.conf" <<EOF
# saslgate in the shared anchor rig, written by tests/bench/anchors.sh
[server]
hostname = bench.saslgate.test
workers = 1
max_connections = 30000
shutdown_timeout = 2s
log_level = info
[listener bench]
address = 127.0.0.1:$PORT
tls = starttls
[tls]
certificate = /tmp/saslgate-bench/tls/server.crt
key = /tmp/saslgate-bench/tls/server.key
[sasl]
realm = saslgate.bench
failure_delay = 100ms
pwcheck_method = auxprop
auxprop_plugin = sasldb
sasldb_path = /tmp/saslgate-bench/sasl/sasldb2
mech_list = PLAIN LOGIN
[upstream]
server = 127.0.0.1:2525
# smtp-sink's XCLIENT offers no LOGIN: xclient would (rightly) refuse to
# relay without the identity
identity = header
[limits]
max_message_size = 128M
idle_timeout = 10m
EOF

export SASLGATE_CMD="$BUILD/saslgate -c $SGW/saslgate.conf"
export SASLGATE_PORT=$PORT
export TARGETS=${TARGETS:-"direct nginx postfix saslgate"}
exec "$RIG/run-anchors.sh"
