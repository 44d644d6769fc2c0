#!/bin/sh
# packaging/build-deb.sh: build the Debian packages of saslgate ("make deb").
#
# Copies the source tree (without build directories and .git) to a clean
# temporary directory, makes the orig tarball, puts packaging/debian/ there
# as debian/ with the systemd unit, and runs dpkg-buildpackage -us -uc: the
# source package (as dpkg-buildpackage -S makes it), saslgate and
# saslgate-dbgsym, with the C unit tests run in the build (not with
# DEB_BUILD_OPTIONS=nocheck).  Then lintian --pedantic checks all of them
# (the .changes), failing on any error or warning.  Everything lands in
# packaging/out/; the path of the saslgate .deb is printed last.
#
# Run as root, the build and lintian run as user nobody: neither needs root
# (Rules-Requires-Root: no), and lintian should not unpack packages as root.
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
mkdir -p "$SRC" "$TMP/home"
# The source: in a git checkout the files git knows or would add (what
# .gitignore leaves out, such as build directories and the benchmark's
# compiled load generator, stays out); elsewhere the tree less its build
# directories.
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
	(cd "$ROOT" && tar --exclude='./build' --exclude='./build-*' \
		--exclude='./packaging/out' --exclude='./demo' \
		--exclude='__pycache__' --exclude='./tests/fuzz/crash-*' -cf - .) |
		tar -C "$SRC" -xf -
fi
# 3.0 (quilt) wants the upstream tarball next to the tree.
tar -C "$TMP" --owner=0 --group=0 --sort=name \
	-czf "$TMP/saslgate_$VERSION.orig.tar.gz" "saslgate-$VERSION"

cp -r "$ROOT/packaging/debian" "$SRC/debian"
cp "$ROOT/packaging/saslgate.service" "$SRC/debian/saslgate.service"

# as_builder CMD...: CMD as user nobody when we are root, with a clean
# environment of its own; as ourselves otherwise.
if [ "$(id -u)" -eq 0 ]; then
	chown -R nobody:nogroup "$TMP"
	as_builder() {
		setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
			env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$TMP/home" \
			TMPDIR="$TMP" LANG=C.UTF-8 \
			DEB_BUILD_OPTIONS="$DEB_BUILD_OPTIONS" "$@"
	}
else
	as_builder() { "$@"; }
fi

# The caller's options (nocheck, ...) then ours, one space between.
PARALLEL="parallel=$(nproc)"
DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }$PARALLEL"
export DEB_BUILD_OPTIONS

echo "build-deb: building saslgate $DEBVERSION in $SRC" \
	"(DEB_BUILD_OPTIONS=\"$DEB_BUILD_OPTIONS\")"
(cd "$SRC" && as_builder dpkg-buildpackage -us -uc) >"$TMP/build.log" 2>&1 || {
	tail -n 80 "$TMP/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed (log above)" >&2
	exit 1
}
grep -E "^ *(Start|[0-9]+/[0-9]+ Test|100% tests|[0-9]+% tests)" "$TMP/build.log" |
	grep -E "tests passed|tests failed" || true

ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
DEB="saslgate_${DEBVERSION}_${ARCH}.deb"
CHANGES="saslgate_${DEBVERSION}_${ARCH}.changes"
for f in "$DEB" "saslgate-dbgsym_${DEBVERSION}_${ARCH}.deb" \
	"saslgate_${DEBVERSION}.dsc" "$CHANGES"; do
	if [ ! -f "$TMP/$f" ]; then
		echo "build-deb: $f was not produced" >&2
		exit 1
	fi
done

# lintian on the .changes: the source package and both binary packages.
# Pedantic, informational and experimental tags are shown; errors and
# warnings fail.
echo "build-deb: lintian --pedantic --display-info --display-experimental $CHANGES"
if ! (cd "$TMP" && as_builder lintian --pedantic --display-info --display-experimental \
	--fail-on error,warning "$CHANGES"); then
	echo "build-deb: lintian found errors or warnings" >&2
	exit 1
fi

mkdir -p "$OUT"
rm -f "$OUT"/saslgate*
(cd "$TMP" && cp "$DEB" "saslgate-dbgsym_${DEBVERSION}_${ARCH}.deb" \
	"saslgate_${DEBVERSION}.dsc" "saslgate_${VERSION}.orig.tar.gz" \
	saslgate_"${DEBVERSION}".debian.tar.* "$CHANGES" \
	"saslgate_${DEBVERSION}_${ARCH}.buildinfo" "$OUT/")
echo "$OUT/$DEB"
