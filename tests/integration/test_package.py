# SPDX-License-Identifier: BSD-2-Clause
"""The Debian package and the configuration it ships, as an admin meets them.

test_package_lifecycle builds the packages with packaging/build-deb.sh
(source, saslgate, saslgate-dbgsym; the C unit tests run in the build;
lintian --pedantic on all of them), then makes this machine look like a
stock Debian 12 for the package: Debian's snakeoil pair moved aside and
saslauthd as sasl2-bin installs it (no START=yes, not running).  It installs
the .deb with dpkg -i and checks what postinst made (user saslgate in groups
sasl and ssl-cert, the snakeoil pair, the ECDSA pair, the note to the admin)
and what the package holds (Depends, conffiles, unit, man pages,
README.Debian, examples, ufw profile, DEP-5 copyright).  It starts the
installed /usr/sbin/saslgate the way saslgate.service does (as user saslgate
with CAP_NET_BIND_SERVICE only, under the unit's system call filter when
python3-seccomp is there, -t first): the first check fails with one line
naming the fix; after README.Debian's first step (START=yes, the system's
saslauthd started) it passes, and mail from a system account (PAM through
saslauthd) goes through on both listeners to a Postfix that trusts
127.0.0.1 for XCLIENT.  Then it reinstalls (admin edits kept, the snakeoil
pair untouched), removes (configuration kept) and purges the package (user
and /etc/saslgate gone).  One drop-in in /etc/saslgate/conf.d/ moves the
listeners to free high ports and points the upstream at the test's own
Postfix, as an admin's site drop-in would; everything else is as shipped.

test_package_lifecycle changes the machine it runs on (dpkg -i, a system
user and group, files under /etc and /usr, the system saslauthd; all purged,
removed or restored at its end, the snakeoil pair and
/etc/default/saslauthd put back as they were), so it runs only when asked:
SG_PACKAGE_TEST=1 in the environment.  scripts/test.sh sets it (CI is a
throwaway machine); a developer's plain `ctest` or pytest skips it and says
why.  Everything else in this file reads the source tree and writes only
under its own temporary folder, and always runs.

It also needs root, dpkg-buildpackage and no saslgate package installed
already, and it is skipped in the sanitizer build (the package is built from the
source, not from that binary: building it twice proves nothing more).  When
systemd runs as PID 1 it is skipped too: postinst would start the unit on
the real ports 587 and 465.

test_stock_debian_install (SG_STOCK_TEST=1, about two minutes, the Debian
mirror) runs packaging/tests/stock-install.sh: a debootstrap Debian 12 booted
as a container with systemd, the package installed there with apt as an
admin would, its real unit failing once and then, after README.Debian's
steps, delivering the first message; autopkgtest's null runner runs
debian/tests/ in it.

The other tests are quick and use the binary under test: every key of the
configuration table is described in saslgate.conf(5); the shipped default
configuration with each example drop-in passes `saslgate -t` once the files
they name exist; and each drop-in of docs/deployments.md (postfix, exchange,
recipes 1-5), installed next to the shipped default, does what its header
promises (identity hand-over, listeners, mechanisms, tarpit, sender map).
"""

import json
import os
import pathlib
import re
import resource
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
    for tool in ("dpkg-buildpackage", "dh", "lintian", "swaks", "setpriv", "make-ssl-cert",
                 "saslauthd"):
        if not shutil.which(tool):
            return "%s not installed" % tool
    if not os.access(SASLAUTHD_INIT, os.X_OK):
        return "%s missing (package sasl2-bin)" % SASLAUTHD_INIT
    if os.path.isdir("/run/systemd/system"):
        return "systemd is running: postinst would start saslgate on ports 587/465"
    if _installed():
        return "a saslgate package is installed already: not touching it"
    return None


SASLAUTHD_INIT = "/etc/init.d/saslauthd"
SASLAUTHD_DEFAULT = pathlib.Path("/etc/default/saslauthd")
SASLAUTHD_MUX = "/run/saslauthd/mux"
SNAKEOIL = (pathlib.Path("/etc/ssl/certs/ssl-cert-snakeoil.pem"),
            pathlib.Path("/etc/ssl/private/ssl-cert-snakeoil.key"))


class _StockHost:
    """This machine made to look like a stock Debian 12 for the package, and
    put back afterwards: no snakeoil pair (moved aside), saslauthd as
    sasl2-bin installs it (no START=yes, not running).  Everything changed
    is restored on exit, also when the test fails: the snakeoil pair, the
    hash links in /etc/ssl/certs, /etc/default/saslauthd, and the system
    saslauthd running or not as it was."""

    def __init__(self, backup_dir):
        self.backup = pathlib.Path(backup_dir)
        self.saved = []        # (path, backup, stat) of the snakeoil files
        self.links = set()
        self.default_text = None
        self.was_running = False

    def __enter__(self):
        self.backup.mkdir(parents=True, exist_ok=True)
        self.links = self._snakeoil_links()
        for f in SNAKEOIL:
            if f.exists():
                b = self.backup / f.name
                shutil.copy2(f, b)
                self.saved.append((f, b, f.stat()))
                f.unlink()
        self.was_running = sgtest.unix_socket_accepts(SASLAUTHD_MUX)
        if self.was_running:
            _run([SASLAUTHD_INIT, "stop"], timeout=60)
        if SASLAUTHD_DEFAULT.exists():
            self.default_text = SASLAUTHD_DEFAULT.read_text()
            SASLAUTHD_DEFAULT.write_text(re.sub(r"(?m)^START=.*\n", "", self.default_text))
        return self

    def __exit__(self, *exc):
        if sgtest.unix_socket_accepts(SASLAUTHD_MUX) or os.path.exists(SASLAUTHD_MUX):
            _run([SASLAUTHD_INIT, "stop"], timeout=60)
        if self.default_text is not None:
            SASLAUTHD_DEFAULT.write_text(self.default_text)
        if self.was_running:
            _run([SASLAUTHD_INIT, "start"], timeout=60)
        for f in SNAKEOIL:
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        for link in self._snakeoil_links() - self.links:
            link.unlink()
        for f, b, st in self.saved:
            shutil.copy2(b, f)
            os.chown(f, st.st_uid, st.st_gid)
            os.chmod(f, st.st_mode & 0o7777)
        return False

    @staticmethod
    def _snakeoil_links():
        certs = pathlib.Path("/etc/ssl/certs")
        return {p for p in certs.iterdir()
                if p.is_symlink() and os.readlink(p) == "ssl-cert-snakeoil.pem"}


def _expand_syscalls(name, seen=None):
    """The system calls of a systemd syscall group (@name) or a single call,
    nested groups expanded (systemd-analyze syscall-filter)."""
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    p = _run(["systemd-analyze", "--no-pager", "syscall-filter", name], timeout=30)
    assert p.returncode == 0, p.stderr
    calls = set()
    for line in p.stdout.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            calls |= _expand_syscalls(word, seen)
    return calls


def _unit_syscalls(unit):
    """The calls the unit's SystemCallFilter= lines allow: the allow list
    less every ~ line, as systemd builds the filter."""
    allow, deny = set(), set()
    for m in re.finditer(r"(?m)^SystemCallFilter=(~?)(.*)$", unit):
        calls = set()
        for word in m.group(2).split():
            calls |= _expand_syscalls(word)
        (deny if m.group(1) else allow).update(calls)
    assert allow, "no SystemCallFilter allow list in the unit"
    return sorted(allow - deny)


# Run in the service's process after setpriv: the unit's system call filter
# (every other call fails with EPERM, as SystemCallErrorNumber=EPERM says),
# then saslgate.
_SECCOMP_EXEC = r"""
import errno, json, os, sys
import seccomp
f = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
for name in json.loads(sys.argv[1]):
    try:
        f.add_rule(seccomp.ALLOW, name)
    except Exception:
        pass  # not a call of this architecture
f.load()
os.execv(sys.argv[2], sys.argv[2:])
"""


def _have_seccomp():
    return _run(["/usr/bin/python3", "-c", "import seccomp"]).returncode == 0


def _as_unit(args, syscalls):
    """argv running /usr/sbin/saslgate ARGS as the unit does: User=saslgate,
    Group=saslgate, SupplementaryGroups=sasl ssl-cert, the capabilities,
    NoNewPrivileges=yes, LimitNOFILE= and (when python3-seccomp is there)
    SystemCallFilter=."""
    # LimitNOFILE=65536, or this machine's hard limit when that is lower
    # (raising it takes CAP_SYS_RESOURCE)
    nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    cmd = ["prlimit", "--nofile=%d:%d" % (nofile, nofile), "--",
           "setpriv", "--reuid=saslgate", "--regid=saslgate", "--groups=sasl,ssl-cert",
           "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
           "--bounding-set=-all,+net_bind_service", "--no-new-privs", "--"]
    if syscalls is not None:
        cmd += ["/usr/bin/python3", "-c", _SECCOMP_EXEC, json.dumps(syscalls)]
    return cmd + ["/usr/sbin/saslgate", *args]


class _Daemon:
    """The installed binary started as the unit starts it."""

    def __init__(self, log_path, syscalls):
        self.log_path = log_path
        log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            _as_unit(["-c", "/etc/saslgate/saslgate.conf"], syscalls),
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


def _listener_addresses(conf):
    """{listener name: address} of an INI text."""
    out, section = {}, ""
    for line in conf.splitlines():
        m = re.match(r"^\[(.+)\]\s*$", line)
        if m:
            section = m.group(1)
        m = re.match(r"^address\s*=\s*(\S+)", line)
        if m and section.startswith("listener "):
            out[section.split(None, 1)[1]] = m.group(1)
    return out


def test_package_lifecycle(workdir, start_postfix):
    """The .deb built, then installed on this machine made to look like a
    stock Debian 12 (no snakeoil pair, saslauthd not enabled): postinst
    makes the snakeoil pair and says what is left to do; the first start
    (the unit's ExecStartPre) fails with one line naming the fix; after
    README.Debian's step (START=yes, saslauthd started) it passes, and the
    daemon, started as the unit starts it (user, groups, capabilities,
    system call filter), relays mail for a system account to Postfix with
    XCLIENT.  Then reinstall, remove and purge."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()

    # --- build (build-deb.sh fails on lintian errors and warnings)
    p = _run(["sh", SRC / "packaging" / "build-deb.sh"], timeout=DEB_TIMEOUT)
    assert p.returncode == 0, "build-deb.sh failed:\n%s\n%s" % (p.stdout[-4000:], p.stderr[-4000:])
    assert re.search(r"100% tests passed, 0 tests failed", p.stdout), \
        "the unit tests did not run in the package build:\n" + p.stdout[-3000:]
    deb = pathlib.Path(p.stdout.strip().splitlines()[-1])
    version = _run([sgtest.SASLGATE_BIN, "-V"]).stdout.split()[-1]
    assert re.fullmatch(r"saslgate_%s-1_\w+\.deb" % re.escape(version), deb.name), deb
    assert deb.is_file()
    arch = deb.name.rsplit("_", 1)[1][:-4]
    out = deb.parent
    for f in ("saslgate-dbgsym_%s-1_%s.deb" % (version, arch), "saslgate_%s-1.dsc" % version,
              "saslgate_%s.orig.tar.gz" % version):
        assert (out / f).is_file(), "%s not built" % f
    t_build = time.monotonic() - t0

    daemon = None
    made_user = False
    with _StockHost(workdir / "stock-backup"):
        try:
            assert not SNAKEOIL[0].exists() and not sgtest.unix_socket_accepts(SASLAUTHD_MUX)

            # --- install
            p = _dpkg("-i", deb)
            assert p.returncode == 0, "dpkg -i:\n%s%s" % (p.stdout, p.stderr)
            note = p.stdout + p.stderr
            # postinst tells the admin what is left, and where to read on
            assert "127.0.0.1:587" in note and "START=yes" in note, note
            assert "README.Debian" in note, note

            # the snakeoil pair, made by postinst as ssl-cert makes it
            for f in SNAKEOIL:
                assert f.exists(), "postinst did not make %s" % f
            st = SNAKEOIL[1].stat()
            assert (st.st_mode & 0o777) == 0o640, oct(st.st_mode)
            assert _run(["stat", "-c", "%U:%G", SNAKEOIL[1]]).stdout.strip() == "root:ssl-cert"
            for f in ("/etc/saslgate/ssl-cert-snakeoil-ecdsa.pem",
                      "/etc/saslgate/ssl-cert-snakeoil-ecdsa.key"):
                assert os.path.exists(f), f

            # what postinst made, and what the package holds
            p = _run(["id", "-nG", "saslgate"])
            assert p.returncode == 0, "no user saslgate after install"
            groups = p.stdout.split()
            assert "sasl" in groups and "ssl-cert" in groups, groups
            pw = _run(["getent", "passwd", "saslgate"]).stdout.strip().split(":")
            assert int(pw[2]) < 1000 and pw[5] == "/nonexistent", pw  # system user, no home
            assert not os.path.exists("/nonexistent")
            fields = _run(["dpkg-query", "-W", "-f=${Depends}\n${Recommends}\n${Conffiles}",
                           "saslgate"]).stdout
            depends, recommends = fields.splitlines()[:2]
            for d in ("libsasl2-modules", "ssl-cert", "adduser"):
                assert re.search(r"(^|, )%s\b" % d, depends), depends
            assert "sasl2-bin" in recommends and "sasl2-bin" not in depends, fields
            for f in ("/etc/saslgate/saslgate.conf", "/etc/fail2ban/filter.d/saslgate.conf",
                      "/etc/ufw/applications.d/saslgate"):
                assert f in fields, "%s is not a conffile:\n%s" % (f, fields)
            assert os.path.isdir("/etc/saslgate/conf.d")
            assert os.access("/usr/sbin/saslgate", os.X_OK)
            for f in ("/usr/share/man/man8/saslgate.8.gz", "/usr/share/man/man5/saslgate.conf.5.gz",
                      "/usr/share/doc/saslgate/deployments.md",
                      "/usr/share/doc/saslgate/README.Debian.gz",
                      "/etc/fail2ban/filter.d/saslgate.conf",
                      "/usr/share/doc/saslgate/fail2ban/jail.d/saslgate.conf"):
                assert os.path.exists(f), f
            for ex in EXAMPLES:
                assert os.path.exists("/usr/share/doc/saslgate/examples/" + ex), ex
            copyright = pathlib.Path("/usr/share/doc/saslgate/copyright").read_text()
            assert "License: BSD-2-Clause" in copyright and copyright.startswith(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
            readme = _run(["zcat", "/usr/share/doc/saslgate/README.Debian.gz"]).stdout
            for what in ("START=yes", "systemctl enable saslauthd",
                         "smtpd_authorized_xclient_hosts = 127.0.0.1", "swaks",
                         "examples/exchange.conf", "10-listen.conf", "ufw allow saslgate"):
                assert what in readme, "README.Debian does not say %r" % what
            p = _run(["man", "-P", "cat", "saslgate.conf"], timeout=30)
            if shutil.which("man"):
                assert p.returncode == 0 and "sender_login_map" in p.stdout, p.stderr
            if shutil.which("ufw"):
                p = _run(["ufw", "app", "info", "saslgate"], timeout=30)
                assert p.returncode == 0 and "587,465/tcp" in p.stdout, p.stdout + p.stderr

            # the installed configuration: loopback only until the admin opens it
            conf_text = pathlib.Path("/etc/saslgate/saslgate.conf").read_text()
            assert _listener_addresses(conf_text) == {
                "submission": "127.0.0.1:587", "submissions": "127.0.0.1:465"}, conf_text

            # the unit: sandbox, logging with the mail facility, no restart loop
            unit_path = "/lib/systemd/system/saslgate.service"
            unit = pathlib.Path(unit_path).read_text()
            for line in ("Type=notify", "User=saslgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                         "ExecStartPre=/usr/sbin/saslgate -t -c /etc/saslgate/saslgate.conf",
                         "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                         "SyslogFacility=mail", "SyslogIdentifier=saslgate", "PrivateMounts=yes",
                         "ProtectProc=invisible", "ProcSubset=pid", "RemoveIPC=yes",
                         "SystemCallFilter=~@privileged @resources", "TimeoutStopSec=60",
                         # an ExecStartPre that fails is not restarted
                         "Restart=on-abnormal"):
                assert re.search(r"(?m)^%s$" % re.escape(line), unit), line
            if shutil.which("systemd-analyze"):
                p = _run(["systemd-analyze", "verify", unit_path], timeout=60)
                bad = [l for l in (p.stdout + p.stderr).splitlines() if "saslgate.service" in l]
                assert not bad, "systemd-analyze verify:\n" + "\n".join(bad)
                p = _run(["systemd-analyze", "security", "--offline=true", unit_path], timeout=60)
                m = re.search(r"Overall exposure level for saslgate.service: ([\d.]+)", p.stdout)
                assert m and float(m.group(1)) <= 1.6, p.stdout[-2000:] + p.stderr
            syscalls = _unit_syscalls(unit) if _have_seccomp() else None

            # --- the first start, as the unit starts it: ExecStartPre fails,
            # once, with one line that names the fix
            p = _run(_as_unit(["-t", "-c", "/etc/saslgate/saslgate.conf"], syscalls),
                     timeout=T(30))
            problems = [l for l in p.stderr.splitlines() if re.match(r"/etc/saslgate/\S+:\d+: ", l)]
            assert p.returncode == 1, p.stdout + p.stderr
            assert len(problems) == 1, p.stderr
            assert SASLAUTHD_MUX in problems[0] and "START=yes" in problems[0] and \
                "systemctl enable saslauthd" in problems[0], problems[0]

            # --- README.Debian, step 1: START=yes, and saslauthd started (the
            # init script is what systemctl runs for it on Debian 12)
            with SASLAUTHD_DEFAULT.open("a") as f:
                f.write("START=yes\n")
            p = _run([SASLAUTHD_INIT, "start"], timeout=60)
            assert p.returncode == 0, p.stdout + p.stderr
            wait_for(lambda: sgtest.unix_socket_accepts(SASLAUTHD_MUX), T(20), "the system saslauthd's socket")

            # a system account; saslauthd checks it through PAM as installed
            assert _run(["getent", "passwd", PKG_USER]).returncode != 0, PKG_USER
            sgtest._check(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                           PKG_USER])
            made_user = True
            sgtest._check(["chpasswd"], input="%s:%s\n" % (PKG_USER, PKG_PW))

            # step 2: a Postfix that trusts 127.0.0.1 for XCLIENT (the test's
            # own; this machine's port 25 is not ours), and a drop-in for what
            # differs from a real host: free ports, that Postfix
            pf = start_postfix(xclient_hosts="127.0.0.1")
            sub, subs = free_port(), free_port()
            pathlib.Path("/etc/saslgate/conf.d/50-test.conf").write_text(
                "[server]\nhostname = pkg.test\nworkers = 1\nshutdown_timeout = 5s\n"
                "[listener submission]\naddress = %s:%d\n"
                "[listener submissions]\naddress = %s:%d\n"
                "[sasl]\nfailure_delay = 0s\n"
                "[upstream]\nserver = %s:%d\n" % (HOST, sub, HOST, subs, HOST, pf.port))

            # step 3: ExecStartPre passes, ExecStart
            p = _run(_as_unit(["-t", "-c", "/etc/saslgate/saslgate.conf"], syscalls),
                     timeout=T(30))
            assert p.returncode == 0, "saslgate -t as the unit runs it:\n%s%s" % (
                p.stdout, p.stderr)
            daemon = _Daemon(workdir / "installed-saslgate.log", syscalls)

            def ready():
                if daemon.proc.poll() is not None:
                    raise AssertionError("installed saslgate exited (%s):\n%s"
                                         % (daemon.proc.returncode, daemon.log()))
                return re.search(r"\bready\b", daemon.log())
            wait_for(ready, T(20), "'ready' from the installed saslgate")
            status = pathlib.Path("/proc/%d/status" % daemon.proc.pid).read_text()
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
            assert uid == int(pw[2]), "not running as user saslgate:\n" + status
            if syscalls is not None:
                assert re.search(r"^Seccomp:\s+2", status, re.M), status

            # step 4: mail through it, STARTTLS on one listener, implicit TLS
            # on the other
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
            # step 5: Postfix got the identity from XCLIENT
            assert re.search(r"sasl_method=XCLIENT, sasl_username=%s" % PKG_USER,
                             pf.log_text()), pf.log_text()[-3000:]
            log = daemon.log()
            assert re.search(r"event=auth result=ok user=%s" % PKG_USER, log), log
            assert len(re.findall(r"event=message ", log)) == 2, log
            for f in sgtest.secret_forms({PKG_USER: PKG_PW}):
                assert f not in log, "credential in the log"

            rc = daemon.stop()
            assert rc == 0, "exit status %s on SIGTERM:\n%s" % (rc, daemon.log())
            daemon = None

            # --- reinstall over itself (postinst is idempotent, the admin's
            # edits and drop-ins stay, the snakeoil pair is not remade), then
            # remove (configuration and user stay), then purge (both go)
            conf = pathlib.Path("/etc/saslgate/saslgate.conf")
            conf.write_text(conf.read_text() + "# edited by the admin\n")
            key_before = SNAKEOIL[1].read_bytes()
            p = _dpkg("-i", deb)
            assert p.returncode == 0, "dpkg -i again:\n%s%s" % (p.stdout, p.stderr)
            assert conf.read_text().endswith("# edited by the admin\n")
            assert os.path.exists("/etc/saslgate/conf.d/50-test.conf")
            assert SNAKEOIL[1].read_bytes() == key_before, "the snakeoil key was replaced"
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
            assert not os.path.exists("/etc/ufw/applications.d/saslgate")
        finally:
            if daemon is not None and daemon.proc.poll() is None:
                try:
                    daemon.stop(timeout=10)
                except AssertionError:
                    pass
            if _installed() or os.path.exists("/etc/saslgate"):
                _purge()
            if made_user:
                _run(["userdel", PKG_USER])
    # Not asserted (the machine may be loaded); build-deb.sh is bounded by
    # DEB_TIMEOUT and every other step by its own timeout.
    print("package lifecycle took %.0fs (build %.0fs)" % (time.monotonic() - t0, t_build))


def test_stock_debian_install():
    """packaging/tests/stock-install.sh: the package's first install on a
    stock Debian 12 booted as a container (debootstrap, systemd-nspawn), up
    to the first delivered message, and autopkgtest's null runner there.
    It takes a minute or two and the Debian mirror, so it runs only with
    SG_STOCK_TEST=1; the transcript is left in $SG_STOCK_DIR (default
    /var/tmp/saslgate-stock/transcript.txt)."""
    if os.environ.get("SG_STOCK_TEST") != "1":
        pytest.skip("boots a Debian 12 container (debootstrap, the mirror, about two "
                    "minutes): set SG_STOCK_TEST=1 to run it")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("debootstrap", "systemd-nspawn", "dpkg-buildpackage", "lintian"):
        if not shutil.which(tool):
            pytest.skip("%s not installed" % tool)
    p = _run(["sh", SRC / "packaging" / "build-deb.sh"], timeout=DEB_TIMEOUT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    deb = p.stdout.strip().splitlines()[-1]
    p = _run(["sh", SRC / "packaging" / "tests" / "stock-install.sh", deb], timeout=900)
    assert p.returncode == 0, "stock-install.sh:\n%s\n%s" % (p.stdout[-6000:], p.stderr[-3000:])
    print(p.stderr.strip().splitlines()[-1])


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
