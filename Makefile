# SPDX-License-Identifier: BSD-2-Clause
# Convenience targets; the build itself is CMake (CONTRACT.md).
.PHONY: all test demo deb deb-stock clean
all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j
test:
	sh scripts/test.sh
demo:
	sh scripts/demo.sh
# Source package, saslgate and saslgate-dbgsym in packaging/out/ (unit
# tests in the build, lintian --pedantic).
deb:
	sh packaging/build-deb.sh
# The package's first install on a stock Debian 12 container, up to the
# first delivered message, and its autopkgtest (root, the Debian mirror).
deb-stock: deb
	sh packaging/tests/stock-install.sh
clean:
	rm -rf build build-* packaging/out demo
