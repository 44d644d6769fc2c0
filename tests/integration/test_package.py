"""The Debian package and the configuration it ships, as an admin meets them.

test_package_lifecycle builds the .deb with packaging/build-deb.sh (which
also runs lintian), installs it with dpkg -i, checks what postinst made (user
saslgate in groups sasl and ssl-cert, conffile, unit, man pages, examples),
runs the installed /usr/sbin/saslgate the way saslgate.service does (as user
saslgate with CAP_NET_BIND_SERVICE only, -t first) against a real saslauthd
and a real Postfix, sends mail through it with swaks on both listeners, and
purges the package again (user and /etc/saslgate gone).  The installed
default configuration is used as shipped; one drop-in in
/etc/saslgate/conf.d/ moves the listeners to 127.0.0.1 high ports and points
saslauthd_path and the upstream at the test's own instances, exactly as an
admin's site drop-in would.

It needs root, dpkg-buildpackage and no saslgate package installed already,
and it is skipped in the sanitizer build (the package is built from the
source, not from that binary: building it twice proves nothing more).  When
systemd runs as PID 1 it is skipped too: postinst would start the unit on the
public ports 587 and 465.

The other tests are quick and use the binary under test: every key of the
configuration table is described in saslgate.conf(5), and the shipped
default configuration with each example drop-in passes `saslgate -t` once
the files they name exist.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

import sgtest
from sgtest import HOST, T, free_port, swaks, wait_for

SRC = sgtest.SOURCE_DIR
DEB_TIMEOUT = 300         # build-deb.sh: full compile + lintian
PKG_USER = "sgpkguser"    # a throwaway system user for saslauthd (shadow)
PKG_PW = "Pk9-secret.pw"  # distinctive: must never show up in a log


def _run(cmd, timeout=60, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def _installed():
    p = _run(["dpkg-query", "-W", "-f=${Status}", "saslgate"])
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


def _dpkg(*args, timeout=180):
    """dpkg, retried (bounded) while another dpkg/apt holds its lock."""
    deadline = time.monotonic() + 90
    while True:
        p = _run(["dpkg", *args], timeout=timeout)
        if p.returncode == 0 or "lock" not in p.stderr or time.monotonic() > deadline:
            return p
        time.sleep(3)


def _purge():
    return _dpkg("--purge", "saslgate", timeout=120)


def _ini_set(text, section, key, value):
    """Replace `key = ...` inside [section] of INI text (must exist)."""
    pat = re.compile(r"(^\[%s\]\s*$.*?^%s\s*=\s*)[^\n#]*?(\s*(#.*)?$)"
                     % (re.escape(section), re.escape(key)), re.M | re.S)
    new, n = pat.subn(lambda m: m.group(1) + value + m.group(2), text, count=1)
    assert n == 1, "no %s in [%s]" % (key, section)
    return new


# ------------------------------------------------------------ man page

def test_man_page_documents_every_key():
    """saslgate.conf(5) has an entry for every key of the key table
    (`saslgate --man-keys`), under the key's own section."""
    p = sgtest.run_saslgate("--man-keys")
    assert p.returncode == 0, p.stderr
    keys, sec = [], None
    for line in p.stdout.splitlines():
        m = re.match(r"\.SS \[(\w+)", line)
        if m:
            sec = m.group(1)
        m = re.match(r"\.B (\S+)$", line)
        if m and sec:
            keys.append((sec, m.group(1)))
    assert len(keys) >= 30, "--man-keys printed only %d keys:\n%s" % (len(keys), p.stdout)
    man = (SRC / "packaging" / "man" / "saslgate.conf.5").read_text()
    sections = {}
    for part in re.split(r"^\.SH ", man, flags=re.M):
        m = re.match(r'"\[(\w+)', part)
        if m:
            sections[m.group(1)] = part
    missing = [s + "." + k for s, k in keys
               if not re.search(r"^\.B %s$" % re.escape(k), sections.get(s, ""), re.M)]
    assert not missing, "keys not described in saslgate.conf(5): %s" % missing
    # and the contract's Cyrus keys and the deployment pitfalls are there
    for word in ("pwcheck_method", "saslauthd_path", "mech_list", "sasldb_path",
                 "/run/saslauthd/mux", "/var/spool/postfix/var/run/saslauthd",
                 "START=yes", "MECHANISMS", "SENDER LOGIN MAP"):
        assert word.replace("-", "\\-") in man or word in man, word


# ------------------------------------------------------------ shipped configs

EXAMPLES = sorted(p.name for p in (SRC / "conf.d" / "examples").glob("*.conf"))


@pytest.mark.parametrize("example", [None] + EXAMPLES)
def test_shipped_config_passes_check(workdir, start_saslauthd, example):
    """conf.d/saslgate.conf alone, and with each example as its drop-in,
    passes `saslgate -t` once the files they name exist.  Only paths are
    changed (certificate, saslauthd socket, sasldb, sender map) and the
    [server] user, which may not exist before the package is installed."""
    sa = start_saslauthd()
    cert, key = sgtest.make_cert(workdir)
    db = sgtest.make_sasldb(workdir / "sasldb2", {"alice": "Al1ce-pkg.pw"})
    smap = workdir / "sender_login_map"
    smap.write_text("exchange-out  @example.org\n")
    subst = {
        "/etc/ssl/certs/ssl-cert-snakeoil.pem": str(cert),
        "/etc/ssl/private/ssl-cert-snakeoil.key": str(key),
        "/run/saslauthd/mux": sa.socket_path,
        "/etc/saslgate/sasldb2": str(db),
        "/etc/saslgate/sender_login_map": str(smap),
    }

    def install(src, dst):
        text = src.read_text()
        for a, b in subst.items():
            text = text.replace(a, b)
        text = re.sub(r"^user = saslgate$", "# user = saslgate", text, flags=re.M)
        dst.write_text(text)

    etc = workdir / "etc"
    (etc / "conf.d").mkdir(parents=True)
    install(SRC / "conf.d" / "saslgate.conf", etc / "saslgate.conf")
    if example:
        install(SRC / "conf.d" / "examples" / example, etc / "conf.d" / ("50-" + example))
    p = sgtest.run_saslgate("-t", "-c", etc / "saslgate.conf")
    assert p.returncode == 0, "saslgate -t failed for %s:\n%s%s" % (
        example or "saslgate.conf", p.stdout, p.stderr)
    assert "configuration OK" in p.stdout
    if example:
        # every example tells the admin which two lines to change
        marks = re.findall(r"# CHANGE \d", (SRC / "conf.d" / "examples" / example).read_text())
        assert len(marks) == 2, "%s: %d CHANGE marks" % (example, len(marks))


# ------------------------------------------------------------ the package

def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (dpkg -i)"
    if sgtest.SANITIZE:
        return "sanitizer build: the package is built from source once, in the release run"
    for tool in ("dpkg-buildpackage", "dh", "lintian", "swaks", "setpriv", "make-ssl-cert"):
        if not shutil.which(tool):
            return "%s not installed" % tool
    if os.path.isdir("/run/systemd/system"):
        return "systemd is running: postinst would start saslgate on ports 587/465"
    if _installed():
        return "a saslgate package is installed already: not touching it"
    return None


class _Daemon:
    """The installed binary started as the unit starts it."""

    def __init__(self, log_path):
        self.log_path = log_path
        log = open(log_path, "wb")
        # User=saslgate Group=saslgate SupplementaryGroups=sasl ssl-cert,
        # AmbientCapabilities=CapabilityBoundingSet=CAP_NET_BIND_SERVICE,
        # NoNewPrivileges=yes
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid=saslgate", "--regid=saslgate",
             "--groups=sasl,ssl-cert", "--inh-caps=-all,+net_bind_service",
             "--ambient-caps=-all,+net_bind_service",
             "--bounding-set=-all,+net_bind_service", "--no-new-privs", "--",
             "/usr/sbin/saslgate", "-c", "/etc/saslgate/saslgate.conf"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
        log.close()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError("saslgate did not stop within %ds of SIGTERM" % timeout)


def test_package_lifecycle(workdir, start_saslauthd, start_postfix):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()

    # --- build (build-deb.sh fails on lintian errors)
    p = _run(["sh", SRC / "packaging" / "build-deb.sh"], timeout=DEB_TIMEOUT)
    assert p.returncode == 0, "build-deb.sh failed:\n%s\n%s" % (p.stdout[-4000:], p.stderr[-4000:])
    deb = pathlib.Path(p.stdout.strip().splitlines()[-1])
    version = _run([sgtest.SASLGATE_BIN, "-V"]).stdout.split()[-1]
    assert deb.name == "saslgate_%s-1_amd64.deb" % version or \
        re.fullmatch(r"saslgate_%s-1_\w+\.deb" % re.escape(version), deb.name), deb
    assert deb.is_file()

    snakeoil = pathlib.Path("/etc/ssl/certs/ssl-cert-snakeoil.pem")
    made_snakeoil = False
    daemon = None
    try:
        # --- install
        p = _dpkg("-i", deb)
        assert p.returncode == 0, "dpkg -i:\n%s%s" % (p.stdout, p.stderr)
        if not snakeoil.exists():
            p = _run(["make-ssl-cert", "generate-default-snakeoil"], timeout=60)
            assert p.returncode == 0, p.stderr
            made_snakeoil = True

        # what postinst made, and what the package holds
        p = _run(["id", "-nG", "saslgate"])
        assert p.returncode == 0, "no user saslgate after install"
        groups = p.stdout.split()
        assert "sasl" in groups and "ssl-cert" in groups, groups
        pw = _run(["getent", "passwd", "saslgate"]).stdout.strip().split(":")
        assert int(pw[2]) < 1000 and pw[5] == "/nonexistent", pw  # system user, no home
        assert not os.path.exists("/nonexistent")
        conffiles = _run(["dpkg-query", "-W", "-f=${Conffiles}", "saslgate"]).stdout
        assert "/etc/saslgate/saslgate.conf" in conffiles, conffiles
        assert os.path.isdir("/etc/saslgate/conf.d")
        assert os.access("/usr/sbin/saslgate", os.X_OK)
        unit = pathlib.Path("/lib/systemd/system/saslgate.service").read_text()
        for line in ("Type=notify", "User=saslgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                     "ExecStartPre=/usr/sbin/saslgate -t -c /etc/saslgate/saslgate.conf",
                     "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict"):
            assert line in unit, line
        for f in ("/usr/share/man/man8/saslgate.8.gz", "/usr/share/man/man5/saslgate.conf.5.gz",
                  "/usr/share/doc/saslgate/deployments.md.gz"):
            assert os.path.exists(f), f
        for ex in EXAMPLES:
            assert os.path.exists("/usr/share/doc/saslgate/examples/" + ex), ex
        p = _run(["man", "-P", "cat", "saslgate.conf"], timeout=30)
        if shutil.which("man"):
            assert p.returncode == 0 and "sender_login_map" in p.stdout, p.stderr
        if shutil.which("systemd-analyze"):
            p = _run(["systemd-analyze", "verify", "/lib/systemd/system/saslgate.service"],
                     timeout=60)
            bad = [l for l in (p.stdout + p.stderr).splitlines()
                   if "saslgate.service" in l]
            assert not bad, "systemd-analyze verify:\n" + "\n".join(bad)

        # --- a site drop-in: test ports and the test's saslauthd and Postfix
        sa = start_saslauthd(users={PKG_USER: PKG_PW})
        pf = start_postfix()
        sub, subs = free_port(), free_port()
        pathlib.Path("/etc/saslgate/conf.d/50-test.conf").write_text(
            "[server]\nhostname = pkg.test\nworkers = 1\nshutdown_timeout = 5s\n"
            "[listener submission]\naddress = %s:%d\n"
            "[listener submissions]\naddress = %s:%d\n"
            "[sasl]\nsaslauthd_path = %s\nfailure_delay = 0s\n"
            "[upstream]\nserver = %s:%d\n"
            % (HOST, sub, HOST, subs, sa.socket_path, HOST, pf.port))

        # ExecStartPre: the check, as user saslgate
        p = _run(["setpriv", "--reuid=saslgate", "--regid=saslgate", "--groups=sasl,ssl-cert",
                  "--", "/usr/sbin/saslgate", "-t", "-c", "/etc/saslgate/saslgate.conf"],
                 timeout=T(30))
        assert p.returncode == 0, "saslgate -t as user saslgate:\n%s%s" % (p.stdout, p.stderr)

        # ExecStart
        daemon = _Daemon(workdir / "installed-saslgate.log")

        def ready():
            if daemon.proc.poll() is not None:
                raise AssertionError("installed saslgate exited (%s):\n%s"
                                     % (daemon.proc.returncode, daemon.log()))
            return re.search(r"\bready\b", daemon.log())
        wait_for(ready, T(20), "'ready' from the installed saslgate")
        status = pathlib.Path("/proc/%d/status" % daemon.proc.pid).read_text()
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
        assert uid == int(pw[2]), "not running as user saslgate:\n" + status

        # --- mail through it: STARTTLS on one listener, implicit TLS on the other
        for port, tlsopt, n in ((sub, "--tls", 1), (subs, "--tls-on-connect", 2)):
            r = swaks("--server", "%s:%d" % (HOST, port), tlsopt, "--auth", "PLAIN",
                      "--auth-user", PKG_USER, "--auth-password", PKG_PW,
                      "--from", "%s@example.org" % PKG_USER, "--to", "rcpt%d@example.net" % n,
                      "--header", "Subject: package test %d" % n, "--body", "hello %d" % n,
                      "--ehlo", "client.test", timeout=60)
            assert r.returncode == 0, "swaks via %d:\n%s%s\n--- saslgate log:\n%s" % (
                port, r.stdout[-3000:], r.stderr[-2000:], daemon.log())
            assert re.search(r"<~\s+250 .*queued as", r.stdout), r.stdout[-2000:]
        msgs = pf.wait_delivered(2, timeout=30)
        assert any(b"Subject: package test 1" in m for m in msgs)
        assert any(b"Subject: package test 2" in m for m in msgs)
        # Postfix got the identity from XCLIENT, as the default config says
        assert re.search(r"sasl_method=XCLIENT, sasl_username=%s" % PKG_USER, pf.log_text()), \
            pf.log_text()[-3000:]
        log = daemon.log()
        assert re.search(r"event=auth result=ok user=%s" % PKG_USER, log), log
        assert len(re.findall(r"event=message ", log)) == 2, log
        for f in sgtest.secret_forms({PKG_USER: PKG_PW}):
            assert f not in log, "credential in the log"

        rc = daemon.stop()
        assert rc == 0, "exit status %s on SIGTERM:\n%s" % (rc, daemon.log())
        daemon = None

        # --- purge
        p = _purge()
        assert p.returncode == 0, "dpkg --purge:\n%s%s" % (p.stdout, p.stderr)
        assert _run(["getent", "passwd", "saslgate"]).returncode != 0, "user saslgate left"
        assert _run(["getent", "group", "saslgate"]).returncode != 0, "group saslgate left"
        assert not os.path.exists("/etc/saslgate"), "/etc/saslgate left after purge"
        assert not os.path.exists("/usr/sbin/saslgate")
        assert not os.path.exists("/lib/systemd/system/saslgate.service")
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            try:
                daemon.stop(timeout=10)
            except AssertionError:
                pass
        if _installed() or os.path.exists("/etc/saslgate"):
            _purge()
        if made_snakeoil:  # leave the machine as we found it
            certs = pathlib.Path("/etc/ssl/certs")
            for link in certs.iterdir():
                if link.is_symlink() and os.readlink(link) == "ssl-cert-snakeoil.pem":
                    link.unlink()
            for f in (certs / "ssl-cert-snakeoil.pem",
                      pathlib.Path("/etc/ssl/private/ssl-cert-snakeoil.key")):
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
    # Not asserted (the machine may be loaded); build-deb.sh is bounded by
    # DEB_TIMEOUT and every other step by its own timeout.
    print("package lifecycle took %.0fs" % (time.monotonic() - t0))
