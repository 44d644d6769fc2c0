#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# scripts/deps.sh: install the Debian 12 packages saslgate needs to build,
# test and demo.  Idempotent: installs only what is missing.  Needs root
# (uses sudo when not root).
set -eu

PKGS="build-essential cmake pkg-config git ca-certificates
libuv1-dev libssl-dev libsasl2-dev libinih-dev libsystemd-dev libldap-dev
openssl ssl-cert sasl2-bin libsasl2-modules libsasl2-modules-db
postfix swaks python3 python3-pytest haproxy fail2ban testssl.sh
msmtp curl s-nail libio-socket-ssl-perl libauthen-sasl-perl
clang-14 libfuzzer-14-dev libclang-rt-14-dev
debhelper devscripts lintian fakeroot dpkg-dev systemd valgrind
python3-seccomp ufw autopkgtest debootstrap systemd-container
prometheus postfwd policyd-rate-limit
slapd ldap-utils libsasl2-modules-ldap"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
# Postfix asks what kind of mail server this is; the tests run their own
# private instances, so the system one stays unconfigured.
echo "postfix postfix/main_mailer_type select No configuration" |
	$SUDO debconf-set-selections
# The directory tests start their own slapd with a private configuration;
# the system one stays unconfigured (no database, no admin password asked).
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done"
