#!/bin/sh
# packaging/tests/stock-install.sh: the saslgate package's first install on
# a stock Debian 12, as an admin meets it, up to the first delivered message.
#
# A Debian 12 root made by debootstrap (minbase with systemd) boots as a
# container (systemd-nspawn --boot, its own network namespace: only its
# loopback, so the real ports 25, 587 and 465 are its own).  In it, as
# README.Debian says: Postfix (the MTA already there), then the saslgate
# package, whose first start must fail once, without restarts, naming the
# fix; then saslauthd enabled, Postfix told to trust 127.0.0.1 for XCLIENT,
# saslgate restarted and a message sent with swaks and delivered.  Last,
# autopkgtest runs debian/tests/ there with its null runner.
#
# Every command and what it printed go to $SG_STOCK_DIR/transcript.txt.
# Exit status 0 when every step did what README.Debian says.
#
#   sh packaging/tests/stock-install.sh [packaging/out/saslgate_X_amd64.deb]
#
# Needs root, debootstrap, systemd-container and the Debian mirror (apt's
# first source) while the packages are fetched; the container itself is
# offline.  The debootstrap root is kept in $SG_STOCK_DIR/base (default
# /var/tmp/saslgate-stock) and reused; each run works on a fresh copy.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${SG_STOCK_DIR:-/var/tmp/saslgate-stock}
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
HOSTNAME_FQDN=mail.example.test
LOGIN=alice
PW="Al1ce-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
# swaks shows AUTH PLAIN's base64: the transcript masks it with the password
PW64=$(printf '\0%s\0%s' "$LOGIN" "$PW" | base64 -w0)

DEB=${1:-$(ls "$ROOT"/packaging/out/saslgate_*_amd64.deb 2>/dev/null | head -n 1)}
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
	echo "stock-install: no .deb: run make deb first, or name one" >&2
	exit 2
fi
for tool in debootstrap systemd-nspawn nsenter; do
	command -v "$tool" >/dev/null || {
		echo "stock-install: $tool missing (apt-get install debootstrap" \
			"systemd-container util-linux)" >&2
		exit 2
	}
done
[ "$(id -u)" -eq 0 ] || { echo "stock-install: needs root" >&2; exit 2; }

mkdir -p "$DIR"
T0=$(date +%s)
TRANSCRIPT=$DIR/transcript.txt
: >"$TRANSCRIPT"
NSPAWN_PID=""
RUN=$DIR/root

cleanup() {
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		kill "$NSPAWN_PID" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.2
		done
	fi
	if [ "${SG_STOCK_KEEP:-0}" != 1 ]; then
		rm -rf "$RUN"
	fi
}
trap cleanup EXIT INT TERM

note() { echo "stock-install: $*" >&2; }
fail() {
	note "FAILED: $*"
	note "transcript: $TRANSCRIPT"
	exit 1
}

# --- the base system, made once
if [ ! -x "$DIR/base/usr/bin/systemctl" ]; then
	note "debootstrap bookworm into $DIR/base ($MIRROR)"
	rm -rf "$DIR/base.tmp"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
		bookworm "$DIR/base.tmp" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
		fail "debootstrap (log: $DIR/debootstrap.log)"
	mv "$DIR/base.tmp" "$DIR/base"
fi
rm -rf "$RUN"
cp -a "$DIR/base" "$RUN"
echo "$HOSTNAME_FQDN" >"$RUN/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s %s\n' "$HOSTNAME_FQDN" \
	"${HOSTNAME_FQDN%%.*}" >"$RUN/etc/hosts"
echo "deb $MIRROR bookworm main" >"$RUN/etc/apt/sources.list"
cp "$DEB" "$RUN/root/"
DEBNAME=$(basename "$DEB")
# debian/tests alone: autopkgtest takes it as a built tree (nothing to
# build, the package is the .deb above).
mkdir -p "$RUN/root/src/debian"
cp -r "$ROOT/packaging/debian/tests" "$RUN/root/src/debian/tests"

# --- fetch what the admin's apt would fetch: the container is offline,
# its apt takes them from its cache
note "fetching packages into the container's apt cache"
systemd-nspawn -q --register=no --keep-unit -D "$RUN" --pipe \
	/bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --download-only postfix swaks autopkgtest \
		/root/$DEBNAME" >"$DIR/fetch.log" 2>&1 ||
	fail "fetching packages (log: $DIR/fetch.log)"

# --- boot it
note "booting the container"
systemd-nspawn -q --register=no --keep-unit --private-network \
	--hostname="$HOSTNAME_FQDN" -D "$RUN" --boot --console=passive \
	>"$DIR/boot.log" 2>&1 &
NSPAWN_PID=$!
INIT=""
for _ in $(seq 100); do
	INIT=$(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null | tr -d ' ' | head -n 1)
	[ -n "$INIT" ] && nsenter -t "$INIT" -a systemctl is-system-running \
		2>/dev/null | grep -qE '^(running|degraded)$' && break
	sleep 0.2
done
[ -n "$INIT" ] || fail "the container did not boot (log: $DIR/boot.log)"

# inside CMD: CMD in the container, its output returned
inside() {
	nsenter -t "$INIT" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
		SYSTEMD_PAGER= /bin/sh -c "$1"
}
# step CMD: CMD in the container as the admin types it, into the transcript
step() {
	printf '\n# %s\n' "$1" | sed "s/$PW/********/g" >>"$TRANSCRIPT"
	rc=0
	inside "$1" >"$DIR/step.out" 2>&1 || rc=$?
	sed -e "s/$PW/********/g" -e "s|$PW64|********|g" "$DIR/step.out" >>"$TRANSCRIPT"
	[ "$rc" -eq 0 ] || echo "(exit status $rc)" >>"$TRANSCRIPT"
	return "$rc"
}
out() { cat "$DIR/step.out"; }

{
	echo "First install of $DEBNAME on a stock Debian 12 (debootstrap"
	echo "minbase + systemd, booted with systemd-nspawn), $(date -u '+%Y-%m-%d %H:%M UTC')"
} >>"$TRANSCRIPT"

# --- the host before: Postfix is the MTA already running, no snakeoil
inside "echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections;
    echo 'postfix postfix/mailname string $HOSTNAME_FQDN' | debconf-set-selections"
step "apt-get install -y postfix" >/dev/null ||
	fail "installing postfix"
step "systemctl is-active postfix" || fail "postfix is not running"
# Postfix brought ssl-cert and its snakeoil pair.  Images made once for many
# hosts drop that pair (it would be the same everywhere): so here, to see
# the package make it.
step "rm -v /etc/ssl/certs/ssl-cert-snakeoil.pem /etc/ssl/private/ssl-cert-snakeoil.key" ||
	fail "removing the snakeoil pair"

# --- the package
step "apt-get install -y /root/$DEBNAME" ||
	fail "apt-get install of the package"
out | grep -q "saslgate: .*START=yes" || fail "postinst did not say how to enable saslauthd"
step "ls -l /etc/ssl/certs/ssl-cert-snakeoil.pem /etc/ssl/private/ssl-cert-snakeoil.key /etc/saslgate/" ||
	fail "postinst did not make the snakeoil pair"

# --- the first start: failed once, no restart loop, the fix in the journal
sleep 5
step "systemctl status saslgate" || true
out | grep -q "Active: failed" || fail "saslgate is not 'failed' after the first start"
step "systemctl show -p NRestarts -p Result saslgate"
out | grep -qx "NRestarts=0" || fail "saslgate was restarted"
step "journalctl -u saslgate -o cat" || true
n=$(out | grep -c "saslauthd socket /run/saslauthd/mux does not exist" || true)
[ "$n" -eq 1 ] || fail "$n journal lines about the saslauthd socket, not 1"
out | grep "saslauthd socket" | grep -q "START=yes" ||
	fail "the journal line does not name START=yes"

# --- README.Debian, step 1: saslauthd
step "echo START=yes >> /etc/default/saslauthd && systemctl enable saslauthd && systemctl restart saslauthd && ls -l /run/saslauthd/mux" ||
	fail "enabling saslauthd as README.Debian says"

# --- step 2: Postfix trusts 127.0.0.1 for XCLIENT
step "postconf -e 'smtpd_authorized_xclient_hosts = 127.0.0.1' 'smtpd_sasl_auth_enable = yes' && systemctl reload postfix" ||
	fail "configuring Postfix"

# --- step 3: saslgate
step "adduser --quiet --disabled-password --gecos '' $LOGIN && echo '$LOGIN:$PW' | chpasswd" ||
	fail "adding the account"
step "saslgate -t" || fail "saslgate -t"
step "systemctl restart saslgate && journalctl -u saslgate -o cat -n 2" ||
	fail "restarting saslgate"
out | grep -q "listening on submission=127.0.0.1:587/starttls submissions=127.0.0.1:465/implicit" ||
	fail "saslgate does not listen on loopback as shipped"

# --- step 4: the first message
step "apt-get install -y swaks >/dev/null" || fail "installing swaks"
step "swaks --server 127.0.0.1:587 --tls --auth PLAIN --auth-user $LOGIN --auth-password '$PW' --from $LOGIN@$HOSTNAME_FQDN --to $LOGIN@localhost --header 'Subject: first message through saslgate'" ||
	fail "swaks"
out | grep -q "<~  250 .*queued as" || fail "no 250 queued from swaks"

# --- step 5: delivered, and the logs
for _ in $(seq 40); do
	inside "grep -q 'Subject: first message through saslgate' /var/mail/$LOGIN" 2>/dev/null && break
	sleep 0.5
done
step "grep -E '^(Return-Path|Received|Subject):' /var/mail/$LOGIN" ||
	fail "the message was not delivered to /var/mail/$LOGIN"
step "journalctl -o short -t saslgate -t postfix/smtpd -t postfix/local SYSLOG_FACILITY=2 | tail -n 12"
out | grep -q "sasl_method=XCLIENT, sasl_username=$LOGIN" ||
	fail "Postfix did not log the login from XCLIENT"
out | grep -q "event=auth result=ok user=$LOGIN" || fail "no event=auth line"

# --- the package's ufw profile and the unit's exposure
step "systemd-analyze security saslgate | tail -n 1" || true

# --- autopkgtest, null runner, in this throwaway system
step "apt-get install -y autopkgtest >/dev/null && autopkgtest --ignore-restrictions=breaks-testbed /root/$DEBNAME /root/src -- null >/root/autopkgtest.log 2>&1; grep -E '^(submission|OK:|FAIL)' /root/autopkgtest.log" || true
cp "$RUN/root/autopkgtest.log" "$DIR/autopkgtest.log" 2>/dev/null || true
out | grep -qE "^submission +PASS" ||
	fail "autopkgtest did not pass (log: $DIR/autopkgtest.log)"

echo >>"$TRANSCRIPT"
echo "(done in $(( $(date +%s) - T0 )) s)" >>"$TRANSCRIPT"
cat "$TRANSCRIPT"
note "every step as README.Debian says ($(( $(date +%s) - T0 )) s); transcript: $TRANSCRIPT"
