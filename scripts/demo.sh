#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# scripts/demo.sh: README's demo command.  Installs what is missing, builds
# saslgate, and runs it on 127.0.0.1:1587 in front of a private Postfix that
# stores every accepted message under demo/mail/ (scripts/demo.py).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Postfix and smtp-sink need root to start (they drop to user postfix).
exec $SUDO /usr/bin/python3 scripts/demo.py
