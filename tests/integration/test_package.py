"""The Debian package and the configuration it ships, as an admin meets them.

test_package_lifecycle builds the .deb with packaging/build-deb.sh (which
also runs lintian), installs it with dpkg -i, checks what postinst made (user
saslgate in groups sasl and ssl-cert, conffile, unit, man pages, examples),
runs the installed /usr/sbin/saslgate the way saslgate.service does (as user
saslgate with CAP_NET_BIND_SERVICE only, -t first) against a real saslauthd
and a real Postfix, sends mail through it with swaks on both listeners,
reinstalls (admin edits kept), removes (configuration kept) and purges the
package (user and /etc/saslgate gone).  The installed
default configuration is used as shipped; one drop-in in
/etc/saslgate/conf.d/ moves the listeners to 127.0.0.1 high ports and points
saslauthd_path and the upstream at the test's own instances, exactly as an
admin's site drop-in would.

test_package_lifecycle changes the machine it runs on (dpkg -i, a system
user and group, files under /etc and /usr, perhaps Debian's snakeoil
certificate; all purged or removed at its end), so it runs only when asked:
SG_PACKAGE_TEST=1 in the environment.  scripts/test.sh sets it (CI is a
throwaway machine); a developer's plain `ctest` or pytest skips it and says
why.  Everything else in this file reads the source tree and writes only
under its own temporary folder, and always runs.

It also needs root, dpkg-buildpackage and no saslgate package installed
already, and it is skipped in the sanitizer build (the package is built from the
source, not from that binary: building it twice proves nothing more).  When
systemd runs as PID 1 it is skipped too: postinst would start the unit on the
public ports 587 and 465.

The other tests are quick and use the binary under test: every key of the
configuration table is described in saslgate.conf(5); the shipped default
configuration with each example drop-in passes `saslgate -t` once the files
they name exist; and each drop-in of docs/deployments.md (postfix, exchange,
recipes 1-5), installed next to the shipped default, does what its header
promises (identity hand-over, listeners, mechanisms, tarpit, sender map).
"""

import os
import pathlib
import re
import shutil
import signal
import socket
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
    os.chmod(key, 0o600)  # -t refuses a key others can read
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
    if os.environ.get("SG_PACKAGE_TEST") != "1":
        return ("installs and purges the saslgate package on this machine: "
                "set SG_PACKAGE_TEST=1 to run it (scripts/test.sh does)")
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


def _saslauthd_up(path):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


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
        assert "/etc/fail2ban/filter.d/saslgate.conf" in conffiles, conffiles
        assert os.path.isdir("/etc/saslgate/conf.d")
        assert os.access("/usr/sbin/saslgate", os.X_OK)
        unit = pathlib.Path("/lib/systemd/system/saslgate.service").read_text()
        for line in ("Type=notify", "User=saslgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                     "ExecStartPre=/usr/sbin/saslgate -t -c /etc/saslgate/saslgate.conf",
                     "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict"):
            assert line in unit, line
        for f in ("/usr/share/man/man8/saslgate.8.gz", "/usr/share/man/man5/saslgate.conf.5.gz",
                  "/usr/share/doc/saslgate/deployments.md",
                  "/etc/fail2ban/filter.d/saslgate.conf",
                  "/usr/share/doc/saslgate/fail2ban/jail.d/saslgate.conf"):
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

        # --- the configuration exactly as installed, checked as the unit's
        # ExecStartPre does.  Everything must pass; the one thing outside the
        # package is Debian's saslauthd: when it is not running here, its
        # socket must be the only complaint.
        p = _run(["setpriv", "--reuid=saslgate", "--regid=saslgate", "--groups=sasl,ssl-cert",
                  "--", "/usr/sbin/saslgate", "-t", "-c", "/etc/saslgate/saslgate.conf"],
                 timeout=T(30))
        problems = [l for l in p.stderr.splitlines() if re.match(r"/etc/saslgate/\S+:\d+: ", l)]
        if _saslauthd_up("/run/saslauthd/mux"):
            assert p.returncode == 0 and not problems, p.stderr
        else:
            assert p.returncode == 1, p.stdout + p.stderr
            assert len(problems) == 1 and "/run/saslauthd/mux" in problems[0], p.stderr

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

        # --- reinstall over itself (postinst is idempotent, the admin's
        # edits and drop-ins stay), then remove (configuration and user
        # stay), then purge (both go)
        conf = pathlib.Path("/etc/saslgate/saslgate.conf")
        conf.write_text(conf.read_text() + "# edited by the admin\n")
        p = _dpkg("-i", deb)
        assert p.returncode == 0, "dpkg -i again:\n%s%s" % (p.stdout, p.stderr)
        assert conf.read_text().endswith("# edited by the admin\n")
        assert os.path.exists("/etc/saslgate/conf.d/50-test.conf")
        assert _run(["id", "-nG", "saslgate"]).stdout.split() == groups
        p = _dpkg("--remove", "saslgate")
        assert p.returncode == 0, "dpkg --remove:\n%s%s" % (p.stdout, p.stderr)
        assert not os.path.exists("/usr/sbin/saslgate")
        assert conf.exists(), "remove (not purge) deleted the configuration"
        assert _run(["getent", "passwd", "saslgate"]).returncode == 0

        p = _purge()
        assert p.returncode == 0, "dpkg --purge:\n%s%s" % (p.stdout, p.stderr)
        assert _run(["getent", "passwd", "saslgate"]).returncode != 0, "user saslgate left"
        assert _run(["getent", "group", "saslgate"]).returncode != 0, "group saslgate left"
        assert not os.path.exists("/etc/saslgate"), "/etc/saslgate left after purge"
        assert not os.path.exists("/usr/sbin/saslgate")
        assert not os.path.exists("/lib/systemd/system/saslgate.service")
        assert not os.path.exists("/etc/fail2ban/filter.d/saslgate.conf")
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


# ------------------------------------------------------------ deployment recipes
#
# docs/deployments.md: each example drop-in, copied next to the shipped
# saslgate.conf as an admin would, does what its header promises.  Only what
# a test machine forces is changed: listener addresses (127.0.0.1, free high
# ports), the upstream (a scripted FakeUpstream that records the identity
# hand-over), file paths (certificate, sasldb, sender map, saslauthd socket)
# and the [server] user.

def _install_recipe(workdir, example, upstream_port, saslauthd=None, sasldb=None,
                    sender_map=None):
    """Write workdir/conf.d/50-<example>; return (main text, {listener: port})."""
    cert, key = sgtest.make_cert(workdir)
    paths = {
        "/etc/ssl/certs/ssl-cert-snakeoil.pem": str(cert),
        "/etc/ssl/private/ssl-cert-snakeoil.key": str(key),
    }
    if saslauthd is not None:
        paths["/run/saslauthd/mux"] = saslauthd.socket_path
    if sasldb is not None:
        paths["/etc/saslgate/sasldb2"] = str(sasldb)
    if sender_map is not None:
        paths["/etc/saslgate/sender_login_map"] = str(sender_map)
    ports = {}

    def adapt(text):
        for a, b in paths.items():
            text = text.replace(a, b)
        out, section = [], ""
        for line in text.splitlines():
            m = re.match(r"^\[(.+)\]\s*$", line)
            if m:
                section = m.group(1)
            if re.match(r"^user\s*=", line) and section == "server":
                line = "# " + line
            elif re.match(r"^address\s*=", line) and section.startswith("listener "):
                name = section.split(None, 1)[1]
                ports.setdefault(name, free_port())
                line = "address = %s:%d" % (HOST, ports[name])
            elif re.match(r"^server\s*=", line) and section == "upstream":
                line = "server = %s:%d" % (HOST, upstream_port)
            out.append(line)
        return "\n".join(out) + "\n"

    main = adapt((SRC / "conf.d" / "saslgate.conf").read_text())
    (workdir / "conf.d").mkdir(exist_ok=True)
    if example:
        (workdir / "conf.d" / ("50-" + example)).write_text(
            adapt((SRC / "conf.d" / "examples" / example).read_text()))
    return main, ports


def _xclient_login(fake):
    lines = [l for l in fake.command_lines() if l.upper().startswith("XCLIENT")]
    logins = re.findall(r"\bLOGIN=(\S+)", " ".join(lines))
    return logins


def _send(c, user, n=1):
    c.sendmail("%s@example.org" % user.split("@")[0], ["rcpt%d@example.net" % n],
               b"Subject: recipe %d\r\nX-Authenticated-User: forged@evil.test\r\n\r\nhi\r\n" % n)


def test_recipe_postfix_xclient(workdir, start_saslgate, start_fake_upstream, start_saslauthd):
    """postfix.conf over the default (saslauthd): the login reaches the MTA
    as XCLIENT LOGIN=, on both shipped listeners."""
    user, pw = "sgrcpfx", "Pfx7-recipe.pw"
    sa = start_saslauthd(users={user: pw})
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "postfix.conf", fake.port, saslauthd=sa)
    start_saslgate(main, secrets={user: pw})
    c = sgtest.smtp(ports["submission"])
    c.login(user, pw)
    _send(c, user, 1)
    c.quit()
    c = sgtest.smtps(ports["submissions"])
    c.login(user, pw)
    _send(c, user, 2)
    c.quit()
    fake.wait_for(lambda: len(fake.delivered()) == 2, what="2 messages upstream")
    assert _xclient_login(fake) == [user, user], fake.command_lines()


def test_recipe_exchange_header(workdir, start_saslgate, start_fake_upstream, start_saslauthd):
    """exchange.conf: no XCLIENT, the user is in X-Authenticated-User: (a
    client-supplied one is gone) and the Received: header."""
    user, pw = "sgrcpex", "Exc8-recipe.pw"
    sa = start_saslauthd(users={user: pw})
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "exchange.conf", fake.port, saslauthd=sa)
    start_saslgate(main, secrets={user: pw})
    c = sgtest.smtp(ports["submission"])
    c.login(user, pw)
    _send(c, user)
    c.quit()
    msgs = fake.wait_for(lambda: fake.delivered(), what="a message upstream")
    assert "XCLIENT" not in fake.verbs() and "XFORWARD" not in fake.verbs()
    hdrs = msgs[0].split(b"\r\n\r\n", 1)[0]
    assert re.findall(rb"(?im)^X-Authenticated-User:\s*(\S+)", hdrs) == [user.encode()], hdrs
    assert user.encode() in re.search(rb"(?s)^Received:.*?\r\n(?=\S)", hdrs).group(0), hdrs


def test_recipe_iis_separate_users(workdir, start_saslgate, start_fake_upstream):
    """Recipe 1: users in saslgate's own sasldb (realm example.org, so the
    bare login works), identity header, 10 s tarpit before 535."""
    user, pw = "scanner1", "Scn1-recipe.pw"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm="example.org")
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "iis-separate-users.conf", fake.port, sasldb=db)
    start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.starttls()
        r.expect(250, "EHLO client.test")
        t = time.monotonic()
        r.expect(535, "AUTH PLAIN " + sgtest.plain_b64(user, "wrong-Pw.1"), timeout=30)
        took = time.monotonic() - t
        assert took >= 9.5, "535 after %.1fs, recipe says failure_delay = 10s" % took
    c = sgtest.smtp(ports["submission"])
    c.login(user, pw)
    _send(c, user)
    c.quit()
    msgs = fake.wait_for(lambda: fake.delivered(), what="a message upstream")
    assert re.search(rb"(?im)^X-Authenticated-User:\s*scanner1", msgs[0])


def test_recipe_submission_only_policy(workdir, start_saslgate, start_fake_upstream,
                                       start_saslauthd):
    """Recipe 2: port 25 takes mail without AUTH and never offers AUTH;
    587 offers AUTH only after STARTTLS and wants it before MAIL."""
    user, pw = "sgrcppol", "Pol2-recipe.pw"
    sa = start_saslauthd(users={user: pw})
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "submission-only-policy.conf", fake.port,
                                  saslauthd=sa)
    start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["smtp"]) as r:
        r.expect(220)
        ehlo = r.expect(250, "EHLO mx.sender.test").text
        assert "AUTH" not in ehlo and "STARTTLS" not in ehlo, ehlo
        r.expect(538, "AUTH PLAIN " + sgtest.plain_b64(user, pw))
        r.expect(250, "MAIL FROM:<someone@sender.test>")
        r.expect(250, "RCPT TO:<postmaster@example.org>")
        r.expect(354, "DATA")
        r.send(b"Subject: inbound\r\n\r\nhello\r\n.\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
    fake.wait_for(lambda: len(fake.delivered()) == 1, what="the inbound message upstream")
    assert user not in _xclient_login(fake)
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        ehlo = r.expect(250, "EHLO client.test").text
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo, ehlo
        r.starttls()
        ehlo = r.expect(250, "EHLO client.test").text
        assert re.search(r"AUTH .*PLAIN", ehlo), ehlo
        r.expect(530, "MAIL FROM:<%s@example.org>" % user)
        r.expect(235, "AUTH PLAIN " + sgtest.plain_b64(user, pw), timeout=30)
        r.expect(250, "MAIL FROM:<%s@example.org>" % user)
        r.expect(221, "QUIT")
    assert _xclient_login(fake)[-1:] == [user], fake.command_lines()


def test_recipe_exchange_smarthost_client(workdir, start_saslgate, start_fake_upstream):
    """Recipe 3: AUTH LOGIN with the user name as initial response (what
    Exchange's send connector sends), and the sender map."""
    user, pw = "exchange-out", "Exo3-recipe.pw"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw})
    smap = workdir / "sender_login_map"
    smap.write_text("exchange-out  @example.org\n")  # as the recipe's header says
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "exchange-smarthost-client.conf", fake.port,
                                  sasldb=db, sender_map=smap)
    start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        r.expect(250, "EHLO exchange.example.org")
        r.starttls()
        r.expect(250, "EHLO exchange.example.org")
        r.expect(334, "AUTH LOGIN " + sgtest.b64(user))
        r.expect(235, sgtest.b64(pw), timeout=30)
        r.expect(553, "MAIL FROM:<ceo@elsewhere.test>")
        r.expect(250, "MAIL FROM:<ceo@example.org>")
        r.expect(250, "RCPT TO:<partner@example.net>")
        r.expect(354, "DATA")
        r.send(b"Subject: outbound\r\n\r\nhello\r\n.\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
    fake.wait_for(lambda: len(fake.delivered()) == 1, what="the message upstream")
    assert _xclient_login(fake) == [user], fake.command_lines()


def test_recipe_windows_relay(workdir, start_saslgate, start_fake_upstream):
    """Recipe 4: a LAN device logs in with AUTH LOGIN without TLS on the
    internal listener; the MTA gets its login via XCLIENT."""
    user, pw = "printer-2nd-floor", "Prn4-recipe.pw"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw})
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "windows-relay.conf", fake.port, sasldb=db)
    start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["lan"]) as r:
        r.expect(220)
        ehlo = r.expect(250, "EHLO printer").text
        assert re.search(r"AUTH .*LOGIN", ehlo), ehlo
        r.expect(334, "AUTH LOGIN")
        r.expect(334, sgtest.b64(user))
        r.expect(235, sgtest.b64(pw), timeout=30)
        r.expect(250, "MAIL FROM:<scans@example.org>")
        r.expect(250, "RCPT TO:<office@example.org>")
        r.expect(354, "DATA")
        r.send(b"Subject: scan\r\n\r\n(pdf)\r\n.\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
    fake.wait_for(lambda: len(fake.delivered()) == 1, what="the scan upstream")
    assert _xclient_login(fake) == [user], fake.command_lines()


def test_recipe_mailfront_replacement(workdir, start_saslgate, start_fake_upstream):
    """Recipe 5: sasldb with CRAM-MD5 and SCRAM-SHA-256 offered on 587 (after
    STARTTLS) and 465; a CRAM-MD5 login on 465 relays with the header
    identity (qmail has no XCLIENT)."""
    user, pw = "alice", "Alc5-recipe.pw"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm="example.org")
    fake = start_fake_upstream()
    main, ports = _install_recipe(workdir, "mailfront-replacement.conf", fake.port, sasldb=db)
    start_saslgate(main, secrets={user: pw})
    c = sgtest.smtp(ports["submission"])
    mechs = c.esmtp_features.get("auth", "").upper().split()
    c.quit()
    for m in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"):
        assert m in mechs, mechs
    c = sgtest.smtps(ports["submissions"])
    assert "CRAM-MD5" in c.esmtp_features.get("auth", "").upper().split()
    c.user, c.password = user, pw
    code, text = c.auth("CRAM-MD5", c.auth_cram_md5)
    assert code == 235, (code, text)
    _send(c, user)
    c.quit()
    msgs = fake.wait_for(lambda: fake.delivered(), what="a message upstream")
    assert "XCLIENT" not in fake.verbs()
    assert re.search(rb"(?im)^X-Authenticated-User:\s*alice", msgs[0]), msgs[0][:2000]
