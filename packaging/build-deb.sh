#!/bin/sh
# packaging/build-deb.sh: build the Debian package of saslgate ("make deb").
#
# Copies the source tree (without build directories and .git) to a clean
# temporary directory, makes the orig tarball, puts packaging/debian/ there
# as debian/ with the systemd unit, runs dpkg-buildpackage -us -uc -b, copies
# saslgate_X.Y.Z-1_<arch>.deb to packaging/out/ and runs lintian on it,
# failing on any lintian error.  Prints the path of the .deb last.
#
#   sh packaging/build-deb.sh          # -> packaging/out/saslgate_0.1.0-1_amd64.deb
#   KEEP=1 sh packaging/build-deb.sh   # keep the temporary build tree
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/packaging/out"

# One version: CMakeLists.txt's project(VERSION) must match the changelog.
VERSION=$(sed -n 's/^project(saslgate VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
DEBVERSION=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
if [ -z "$VERSION" ] || [ "${DEBVERSION%-*}" != "$VERSION" ]; then
	echo "build-deb: CMakeLists.txt says version '$VERSION' but" \
		"packaging/debian/changelog says '$DEBVERSION'" >&2
	exit 1
fi

for tool in dpkg-buildpackage dh lintian cmake; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "build-deb: $tool missing (apt-get install debhelper" \
			"dpkg-dev lintian cmake, or sh scripts/deps.sh)" >&2
		exit 1
	fi
done

TMP=$(mktemp -d /tmp/saslgate-deb.XXXXXX)
cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		echo "build-deb: build tree kept in $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT INT TERM

SRC="$TMP/saslgate-$VERSION"
mkdir -p "$SRC"
(cd "$ROOT" && tar --exclude='./.git' --exclude='./build' \
	--exclude='./build-*' --exclude='./packaging/out' --exclude='./demo' \
	--exclude='__pycache__' --exclude='./tests/fuzz/crash-*' -cf - .) |
	tar -C "$SRC" -xf -
# 3.0 (quilt) wants the upstream tarball next to the tree.
tar -C "$TMP" -czf "$TMP/saslgate_$VERSION.orig.tar.gz" "saslgate-$VERSION"

cp -r "$ROOT/packaging/debian" "$SRC/debian"
cp "$ROOT/packaging/saslgate.service" "$SRC/debian/saslgate.service"

echo "build-deb: building saslgate $DEBVERSION in $SRC"
(cd "$SRC" &&
	DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-} noddebs parallel=$(nproc)" \
		dpkg-buildpackage -us -uc -b) >"$TMP/build.log" 2>&1 || {
	tail -n 80 "$TMP/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed (log above)" >&2
	exit 1
}

ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
DEB="saslgate_${DEBVERSION}_${ARCH}.deb"
if [ ! -f "$TMP/$DEB" ]; then
	echo "build-deb: $DEB was not produced" >&2
	exit 1
fi
mkdir -p "$OUT"
cp "$TMP/$DEB" "$OUT/"

# lintian: warnings are shown, errors fail the build.
echo "build-deb: lintian $DEB"
if ! lintian --fail-on error "$OUT/$DEB"; then
	echo "build-deb: lintian found errors" >&2
	exit 1
fi
echo "$OUT/$DEB"
