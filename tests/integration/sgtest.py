# SPDX-License-Identifier: BSD-2-Clause
"""sgtest: the process-test harness of saslgate (real binary, real parts).

Everything listens on 127.0.0.1 on a free high port, every wait is bounded,
and everything a test starts is stopped at teardown even when it fails (the
fixtures in conftest.py do that; use them rather than the classes directly).

Environment (set by ctest): SASLGATE_BIN (the binary; default
$SG_SOURCE_DIR/build/saslgate), SG_SOURCE_DIR (the checkout), SG_SANITIZE
(ON: ASan/UBSan build, timeouts x3, ASAN_OPTIONS with leak detection).
SG_KEEP_TMP=1 keeps every test's work directory (failed tests keep it anyway).

Fixtures (conftest.py); each `start_*` is a factory returning a started object:

    def test_x(workdir, start_saslgate, start_postfix, start_saslauthd,
               start_fake_upstream, start_smtp_sink):
        pf = start_postfix()                      # Postfix + its smtp-sink
        cert, key = make_cert(workdir)
        # Cyrus looks users up as user@realm; realm = [server] hostname
        db = make_sasldb(workdir / "sasldb2", {"alice": "Al1ce-pw.1"}, realm="sg.test")
        sg = start_saslgate(default_config(workdir, upstream_port=pf.port,
                                           cert=cert, key=key, sasldb=db),
                            secrets={"alice": "Al1ce-pw.1"})
        c = smtp(sg.port("submission"))           # EHLO, STARTTLS, EHLO done
        c.login("alice", "Al1ce-pw.1")
        c.sendmail("alice@example.org", ["bob@example.net"], b"Subject: t\r\n\r\nhi\r\n")
        c.quit()
        msgs = pf.wait_delivered(1)               # [bytes] as the sink saw them

  workdir              pathlib.Path, a fresh 0755 directory per test.
  start_saslgate(config, secrets={user: pw} | [pw], wait_ready=True,
                 extra_args=[])  -> Saslgate
      config: dict {"server": {...}, "listener NAME": {...}, ...} or INI text.
      A listener whose "address" is missing or None gets 127.0.0.1:<free>.
      At teardown it is stopped with SIGTERM and the harness asserts: exit
      status 0 (or the status the test already collected through .stop()
      / .wait_exit()) and no signal death, no sanitizer report in its stderr,
      and no secret in its log: neither the password, nor its base64, nor
      base64("\\0user\\0pw") / base64("user\\0user\\0pw") as PLAIN sends it.
      Use distinctive passwords (e.g. "Xy7-secret.pw") so that the check
      means something.
    .port(name) .address(name) .log_text() .wait_log(regex, timeout)->match
    .reload(wait=True) (SIGHUP, waits for "reload: done|reload failed")
    .stop(timeout) -> exit status (SIGTERM)   .kill()   .pid   .conf_path
    .wait_exit(timeout) -> exit status (for a daemon expected to exit itself)
  start_postfix(xclient_hosts="127.0.0.1", xforward_hosts="",
                relay_restrictions="permit_sasl_authenticated, reject",
                sasl_users=None | {user: pw}, mynetworks="127.0.0.2/32",
                hostname="pfx.test", extra={main.cf key: value}) -> Postfix
      A private Postfix (own config, queue, data dir, maillog in workdir)
      listening on .port with smtpd_authorized_xclient_hosts etc.  Accepted
      mail is relayed to its own smtp-sink.  mynetworks deliberately does not
      cover 127.0.0.1: relaying needs the SASL identity (XCLIENT LOGIN= or
      AUTH against its own sasldb, sasl_users, mechanisms PLAIN LOGIN).
    .port .log_text() .delivered() -> [bytes]  .wait_delivered(n, timeout)
    .queue_ids() -> [str] (accepted messages, in order)  .stop()
      delivered() messages are the dump files of smtp-sink: smtp-sink puts
      X-Client-Addr:, X-Helo-Args:, X-Mail-Args:, X-Rcpt-Args: lines first,
      then Postfix's Received: header (naming its queue id and "ESMTPA"
      when an identity was given), then the message.
  start_saslauthd(users={user: pw}) -> Saslauthd
      Debian's real saslauthd, "-a shadow" (its "-a sasldb" only reads
      /etc/sasldb2), on its own socket directory.  Each user is created as a
      throwaway system user (useradd, chpasswd; tests run as root) and
      deleted at teardown; a name that already exists is refused.
    .socket_path (the "mux" socket, for [sasl] saslauthd_path)  .stop()
  start_smtp_sink(hostname="sink.test", args=[]) -> SmtpSink
      Postfix's smtp-sink (announces XCLIENT, XFORWARD, PIPELINING, 8BITMIME,
      DSN...; args e.g. ["-r", "RCPT"] for 4xx on RCPT, see smtp-sink(1)).
    .port .messages() -> [bytes] .wait_messages(n, timeout) .stop()
  start_fake_upstream(**kw) -> FakeUpstream   (scripted, fault injecting)
      greeting="220 fake.test ESMTP" (None: accept and close at once),
      greeting_delay=0, extensions=[...] (default: PIPELINING SIZE 8BITMIME
      ENHANCEDSTATUSCODES DSN SMTPUTF8 XCLIENT... XFORWARD...; no STARTTLS),
      replies={VERB: reply}: VERB is EHLO HELO XCLIENT XFORWARD AUTH MAIL RCPT
      DATA DOT (the end of data) RSET NOOP QUIT; reply is a string (one reply,
      "\\n" between lines of a multi-line one), a list (the n-th such command
      gets the n-th entry, the last repeats), CLOSE (drop the connection
      without a reply), Stall(seconds, reply) or a callable(line) -> reply.
      close_in_data=N: drop the connection after N body bytes of DATA.
      auth={user: pw}: accept AUTH PLAIN / LOGIN with those credentials.
    .port .commands -> [(conn_no, line)] .verbs() -> [VERB ...]
    .messages -> [Message(conn, mail_from, rcpts, data, complete, reply)]
    .delivered() -> [bytes] (only messages ended with <CRLF>.<CRLF> and
      answered 2xx) .connections (count) .auth_users
    .wait_for(predicate, timeout) .stop()
    .raw_lines(conn=None, verb=None) -> [bytes] command lines exactly as
      received (line end included; .commands has them decoded, without it)
    .attributes("XCLIENT"|"XFORWARD", conn=None, postfix=False) -> [(NAME,
      xtext-decoded bytes)]; postfix=True: split as Postfix's smtpd does
    refused_port() -> a port where nothing listens (connection refused).

Helpers (module functions):
  free_port()  T(seconds) (scaled under sanitizers)  wait_for(pred, timeout, what)
  make_cert(dir, kind="rsa"|"ecdsa", cn="localhost") -> (cert, key)
  make_ca(dir) -> (ca_cert, ca_key);  make_leaf(dir, ca, cn, kind) -> (chain, key)
  make_sasldb(path, {user: pw}, realm=None) -> path (a bytes user: any octets)
  xtext(v) / xtext_decode(v) (RFC 1891)  log_escape(login) (the log's user=)
  postfix_tokens(line) (words as Postfix's smtpd splits a command line)
  unstuff(data) (DATA dot-stuffing undone)  header_fields(msg) -> [(name,
      unfolded value, raw)]  comment_after(text, prefix) (quoted-pairs undone)
  default_config(workdir, upstream_port, cert=None, key=None, sasldb=None,
                 saslauthd=None, identity="xclient", **sections) -> dict
      listeners "submission" (starttls), "submissions" (implicit, when a
      cert is given) and "plain" (tls none, require_tls_for_auth = no);
      failure_delay = 0s so tests are fast (override in sections).
  run_saslgate(*args, timeout) -> CompletedProcess (text; for -t/-V/-h)
  smtp(port, starttls=True) -> smtplib.SMTP (EHLO done; certificate not
      verified);  smtps(port) -> smtplib.SMTP_SSL for implicit TLS
  swaks(*args, timeout) -> CompletedProcess (text)
  Raw(port, tls=False): a line client for transcripts:
      .send(bytes) .line(str) (adds CRLF) .reply(timeout) -> Reply(code,
      lines, text) .cmd(str) -> Reply (line + reply) .expect(code, str)
      .starttls() (STARTTLS, expects 220, handshake) .tls_wrap()
      .closed(timeout) -> True when the server closed the connection
      .tls_version() .close()
  b64(str|bytes) -> str; plain_b64(user, pw) -> str (AUTH PLAIN response)
"""

import base64
import os
import pathlib
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("SG_SOURCE_DIR") or HERE.parent.parent)
SASLGATE_BIN = os.environ.get("SASLGATE_BIN") or str(SOURCE_DIR / "build" / "saslgate")
SANITIZE = os.environ.get("SG_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
SCALE = 3.0 if SANITIZE else 1.0
HOST = "127.0.0.1"

# Sanitizer reports that make any saslgate run a failure.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:",
                     "LeakSanitizer", "ERROR: UndefinedBehaviorSanitizer")


def T(seconds):
    """A timeout, scaled when the binary runs under sanitizers."""
    return seconds * SCALE


def wait_for(pred, timeout, what="condition", interval=0.05):
    """Poll pred() until it returns something true; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


_issued_ports = set()


def free_port(host=HOST):
    """A port nobody listens on right now (bind port 0, close), and never
    one this process handed out before: the kernel may offer a port again
    as soon as it is closed, and two listeners of one config (or a daemon
    not started yet) would then get the same one."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _issued_ports:
            _issued_ports.add(port)
            return port
    raise RuntimeError("no fresh free port")


def refused_port():
    """A port where a connection is refused (nothing listens)."""
    return free_port()


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def plain_b64(user, pw, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, pw))


def _run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _check(cmd, timeout=30, **kw):
    p = _run(cmd, timeout=timeout, **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(map(str, cmd)), p.returncode,
                                                    p.stdout, p.stderr))
    return p


def _stop_process(proc, timeout=10, sig=signal.SIGTERM):
    """SIGTERM (then SIGKILL) a process we started in its own session."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=10)


# ---------------------------------------------------------------- certificates

def _keyargs(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    if kind == "ecdsa":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    raise ValueError("kind must be rsa or ecdsa")


def make_cert(dir, kind="rsa", cn="localhost", days=2):
    """Self-signed certificate + key (PEM) -> (cert_path, key_path)."""
    dir = pathlib.Path(dir)
    cert, key = dir / ("cert-%s-%s.pem" % (kind, cn)), dir / ("key-%s-%s.pem" % (kind, cn))
    _check(["openssl", "req", "-x509", "-nodes", *_keyargs(kind), "-keyout", str(key),
            "-out", str(cert), "-days", str(days), "-subj", "/CN=%s" % cn,
            "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn])
    os.chmod(key, 0o644)  # test keys only: readable after a privilege drop
    return cert, key


def make_ca(dir, cn="sgtest CA"):
    dir = pathlib.Path(dir)
    cert, key = dir / "ca.pem", dir / "ca-key.pem"
    _check(["openssl", "req", "-x509", "-nodes", *_keyargs("ecdsa"), "-keyout", str(key),
            "-out", str(cert), "-days", "2", "-subj", "/CN=%s" % cn,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return cert, key


def make_leaf(dir, ca, cn="localhost", kind="rsa"):
    """A leaf signed by ca=(ca_cert, ca_key) -> (chain_path, key_path); the
    chain file holds the leaf then the CA."""
    dir = pathlib.Path(dir)
    key, csr = dir / ("leaf-%s-%s.key" % (kind, cn)), dir / ("leaf-%s-%s.csr" % (kind, cn))
    crt, chain = dir / ("leaf-%s-%s.crt" % (kind, cn)), dir / ("chain-%s-%s.pem" % (kind, cn))
    ext = dir / ("leaf-%s-%s.ext" % (kind, cn))
    ext.write_text("subjectAltName=DNS:%s,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" % cn)
    _check(["openssl", "req", "-new", "-nodes", *_keyargs(kind), "-keyout", str(key),
            "-out", str(csr), "-subj", "/CN=%s" % cn])
    _check(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext)])
    chain.write_bytes(crt.read_bytes() + pathlib.Path(ca[0]).read_bytes())
    os.chmod(key, 0o644)
    return chain, key


# ---------------------------------------------------------------- SASL

def make_sasldb(path, users, realm=None):
    """A Cyrus sasldb with {user: password}; readable by everyone (tests).
    A user given as bytes is created octet for octet (any octet but NUL:
    invalid UTF-8 and control octets included)."""
    path = pathlib.Path(path)
    for user, pw in users.items():
        cmd = ["saslpasswd2", "-f", str(path), "-p", "-c"]
        if realm:
            cmd += ["-u", realm]
        cmd.append("--")  # a user may start with '-'
        if isinstance(user, bytes):
            p = subprocess.run([c.encode() for c in cmd] + [user], capture_output=True,
                               input=pw.encode() if isinstance(pw, str) else pw,
                               timeout=30)
            if p.returncode != 0:
                raise RuntimeError("saslpasswd2 %r failed (%d): %r" % (user, p.returncode,
                                                                       p.stderr))
            continue
        _check(cmd + [user], input=pw)  # -p: password on stdin, no newline
    os.chmod(path, 0o644)
    return path


def unix_socket_accepts(path):
    """True when something accepts connections on the Unix socket PATH."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def spawn_saslauthd(args, dir, log_path, timeout=10):
    """saslauthd ARGS in the foreground (-d) with its socket in DIR (-m),
    output to LOG_PATH, in a session of its own (so a test can stop the
    whole group); returns the process once its socket accepts."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(["saslauthd", *args, "-m", str(dir), "-d"], stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    sock = os.path.join(str(dir), "mux")

    def up():
        if proc.poll() is not None:
            raise RuntimeError("saslauthd exited: %s" % pathlib.Path(log_path).read_text())
        return unix_socket_accepts(sock)
    wait_for(up, T(timeout), "saslauthd socket")
    return proc


class Saslauthd:
    """Debian's saslauthd with the shadow backend and throwaway users."""

    def __init__(self, dir, users=None):
        self.dir = pathlib.Path(dir) / ("saslauthd-%d" % free_port())
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.socket_path = str(self.dir / "mux")
        self.log_path = self.dir / "saslauthd.log"
        self.created_users = []
        self.proc = None
        try:
            for user, pw in (users or {}).items():
                self.add_user(user, pw)
            self._start()
        except BaseException:
            self.stop()
            raise

    def add_user(self, user, pw):
        if _run(["getent", "passwd", user]).returncode == 0:
            raise RuntimeError("user %s already exists: pick another test name" % user)
        _check(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", user])
        self.created_users.append(user)
        _check(["chpasswd"], input="%s:%s\n" % (user, pw))

    def _start(self):
        # -a shadow: the system's users; -n 2: two worker processes.
        self.proc = spawn_saslauthd(["-a", "shadow", "-n", "2"], self.dir, self.log_path)

    def check(self, user, pw, service="smtp"):
        """testsaslauthd: True when the backend accepts user/pw."""
        p = _run(["testsaslauthd", "-u", user, "-p", pw, "-s", service,
                  "-f", self.socket_path], timeout=15)
        return p.returncode == 0 and 'OK' in p.stdout

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        _stop_process(self.proc)
        for u in self.created_users:
            _run(["userdel", u])
        self.created_users = []


# ---------------------------------------------------------------- smtp-sink

class SmtpSink:
    """Postfix's smtp-sink on a free port, dumping each message to a file."""

    def __init__(self, dir, hostname="sink.test", args=()):
        self.port = free_port()
        self.dir = pathlib.Path(dir) / ("sink-%d" % self.port)
        self.dir.mkdir()
        shutil.chown(self.dir, "postfix")
        self.log_path = self.dir.with_suffix(".log")
        log = open(self.log_path, "wb")
        # -u postfix: smtp-sink refuses to run as root.  "%Y%m%d%H%M%S." is
        # the dump template; smtp-sink appends a random hex suffix.
        self.proc = subprocess.Popen(["smtp-sink", "-u", "postfix", "-h", hostname,
                                      "-d", str(self.dir / "%Y%m%d%H%M%S."), *args,
                                      "%s:%d" % (HOST, self.port), "64"],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        try:
            wait_port(self.port, 10, self.proc)
        except BaseException:
            self.stop()
            raise

    def _files(self):
        return sorted((p for p in self.dir.iterdir() if p.is_file()),
                      key=lambda p: (p.stat().st_mtime_ns, p.name))

    def messages(self):
        """Every dumped message, oldest first (bytes)."""
        return [p.read_bytes() for p in self._files()]

    def wait_messages(self, n, timeout=10):
        """Wait until n messages are dumped and their files stop growing."""
        last = [None]

        def ready():
            files = self._files()
            if len(files) < n:
                return False
            sizes = [p.stat().st_size for p in files]
            stable = sizes == last[0]
            last[0] = sizes
            return stable
        wait_for(ready, T(timeout), "%d message(s) at smtp-sink" % n, interval=0.1)
        return self.messages()

    def stop(self):
        _stop_process(self.proc)


def wait_port(port, timeout, proc=None, host=HOST):
    """Wait until something accepts connections on port."""
    def up():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited (%s) before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, T(timeout), "port %d" % port)


# ---------------------------------------------------------------- Postfix

_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance relaying everything to its own smtp-sink."""

    def __init__(self, dir, xclient_hosts="127.0.0.1", xforward_hosts="",
                 relay_restrictions="permit_sasl_authenticated, reject",
                 sasl_users=None, mynetworks="127.0.0.2/32", hostname="pfx.test",
                 extra=None, sink_args=()):
        self.port = free_port()
        self.root = pathlib.Path(dir) / ("postfix-%d" % self.port)
        self.etc, self.spool, self.data = self.root / "etc", self.root / "spool", self.root / "data"
        for d in (self.root, self.etc, self.spool, self.data):
            d.mkdir()
        os.chmod(self.root, 0o755)
        shutil.chown(self.data, "postfix")
        self.maillog = self.root / "maillog"
        self.started = False
        self.sink = SmtpSink(self.root, args=sink_args)
        try:
            self._configure(xclient_hosts, xforward_hosts, relay_restrictions, sasl_users,
                            mynetworks, hostname, extra or {})
            self._start()
        except BaseException:
            self.stop()
            raise

    def _configure(self, xclient_hosts, xforward_hosts, relay_restrictions, sasl_users,
                   mynetworks, hostname, extra):
        sasldb = self.etc / "sasldb2"
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": hostname,
            "mydomain": "test",
            "mydestination": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": mynetworks,
            "smtpd_authorized_xclient_hosts": xclient_hosts,
            "smtpd_authorized_xforward_hosts": xforward_hosts,
            "smtpd_relay_restrictions": relay_restrictions,
            "smtpd_recipient_restrictions": "",
            "default_transport": "smtp:[%s]:%d" % (HOST, self.sink.port),
            "relay_transport": "smtp:[%s]:%d" % (HOST, self.sink.port),
            "local_transport": "error:no local delivery in tests",
            "alias_maps": "", "alias_database": "",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            # AUTH against its own sasldb: "identity = auth" tests, and it
            # makes permit_sasl_authenticated honour XCLIENT LOGIN=.
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(self.etc),
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_auth_only": "no",
            "smtpd_client_connection_rate_limit": "0",
            "anvil_rate_time_unit": "60s",
        }
        main.update(extra)
        self.etc.joinpath("main.cf").write_text(
            "".join("%s = %s\n" % kv for kv in main.items()))
        self.etc.joinpath("master.cf").write_text(_MASTER_CF.format(host=HOST, port=self.port))
        # Debian's libsasl2 looks for <cyrus_sasl_config_path>/sasl/smtpd.conf
        # (found with strace); upstream Cyrus reads <path>/smtpd.conf.
        conf = ("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\n"
                "mech_list: PLAIN LOGIN\n" % sasldb)
        self.etc.joinpath("sasl").mkdir()
        self.etc.joinpath("sasl", "smtpd.conf").write_text(conf)
        self.etc.joinpath("smtpd.conf").write_text(conf)
        make_sasldb(sasldb, sasl_users or {}, realm=hostname) if sasl_users else None
        if sasl_users:
            shutil.chown(sasldb, "postfix")

    def postfix(self, *args, timeout=60):
        return _run(["postfix", "-c", str(self.etc), *args], timeout=timeout)

    # The queue layout "postfix set-permissions" makes (postfix-files):
    # name -> (owner, group, mode).  Made here so that start-up can skip
    # postfix-script, whose checks take seconds on a loaded 2-core machine.
    QUEUE_DIRS = {
        "active": ("postfix", "root", 0o700), "bounce": ("postfix", "root", 0o700),
        "corrupt": ("postfix", "root", 0o700), "defer": ("postfix", "root", 0o700),
        "deferred": ("postfix", "root", 0o700), "flush": ("postfix", "root", 0o700),
        "hold": ("postfix", "root", 0o700), "incoming": ("postfix", "root", 0o700),
        "private": ("postfix", "root", 0o700), "saved": ("postfix", "root", 0o700),
        "trace": ("postfix", "root", 0o700), "maildrop": ("postfix", "postdrop", 0o1730),
        "public": ("postfix", "postdrop", 0o2710), "pid": ("root", "root", 0o755),
    }

    def _start(self):
        for name, (owner, group, mode) in self.QUEUE_DIRS.items():
            d = self.spool / name
            d.mkdir(exist_ok=True)
            shutil.chown(d, owner, group)
            os.chmod(d, mode)
        # master -w: detach, and exit 0 only once the master is up.
        p = _run(["/usr/lib/postfix/sbin/master", "-c", str(self.etc), "-w"], timeout=60)
        self.started = True
        if p.returncode != 0:
            c = self.postfix("check")
            raise RuntimeError("postfix master: %s%s\npostfix check: %s%s\n%s" % (
                p.stdout, p.stderr, c.stdout, c.stderr, self.log_text()))

        def greets():
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.settimeout(5)
                    return s.recv(512).startswith(b"220 ")
            except OSError:
                return False
        wait_for(greets, 30, "Postfix greeting on %d" % self.port, interval=0.2)

    def master_pid(self):
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_text(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queue_ids(self):
        """Queue ids of messages smtpd accepted, in order."""
        return re.findall(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=", self.log_text())

    def delivered(self):
        return self.sink.messages()

    def wait_delivered(self, n, timeout=20):
        """Wait until n messages reached the sink (log says status=sent)."""
        wait_for(lambda: len(re.findall(r"status=sent", self.log_text())) >= n,
                 T(timeout), "%d delivered message(s) in the Postfix log" % n, interval=0.1)
        return self.sink.wait_messages(n, timeout)

    def stop(self):
        if self.started:
            pid = self.master_pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)  # what "postfix stop" does
                except ProcessLookupError:
                    pass
                def gone():
                    try:
                        os.kill(pid, 0)
                        return False
                    except ProcessLookupError:
                        return True
                try:
                    wait_for(gone, 15, "Postfix master %d to exit" % pid, interval=0.1)
                except AssertionError:
                    self.postfix("abort")
            else:
                self.postfix("stop")
            self.started = False
        self.sink.stop()


# ---------------------------------------------------------------- wire formats

def xtext(value):
    """RFC 1891 section 4 xtext of bytes/str as saslgate writes it: '+', '='
    and octets outside 33..126 as "+HH", and '"', '<', '>', '\\' too (any
    octet may be; these would group words for Postfix's tokenizer)."""
    if isinstance(value, str):
        value = value.encode()
    return "".join(chr(b) if 33 <= b <= 126 and b not in b'+="<>\\' else "+%02X" % b
                   for b in value)


def xtext_decode(value):
    """The octets an xtext (bytes or str) stands for; a malformed "+HH"
    raises ValueError."""
    if isinstance(value, str):
        value = value.encode()
    out, i = bytearray(), 0
    while i < len(value):
        if value[i] == 0x2B:
            h = value[i + 1:i + 3]
            if len(h) != 2 or not re.fullmatch(rb"[0-9A-Fa-f]{2}", h):
                raise ValueError("bad xtext %r" % value)
            out.append(int(h, 16))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return bytes(out)


def postfix_tokens(line):
    """A command line (bytes, without its line end) split into words the
    way Postfix's smtpd reads XCLIENT/XFORWARD/MAIL arguments
    (smtpd_token): white space separates words, except inside "..." and
    <...> groups (kept in the word, nesting as Postfix nests them), and a
    backslash takes the next octet into the word whatever it is; a word
    "to:" or "from:" ends at its colon."""
    words, cur, i, n = [], bytearray(), 0, len(line)

    def group(i, opener, closer):
        want = [closer]
        cur.append(opener)
        while i < n:
            c = line[i]
            i += 1
            cur.append(c)
            if c == 0x5C:
                if i >= n:
                    break
                cur.append(line[i])
                i += 1
            elif c == want[-1]:
                if len(want) == 1:
                    return i
                want.pop()
            elif c == 0x22:
                want.append(0x22)
            elif c == 0x3C and want[-1] == 0x3E:
                want.append(0x3E)
        return i

    while i < n:
        c = line[i]
        i += 1
        if c in b" \t\n\v\f\r":
            if cur:
                words.append(bytes(cur))
                cur = bytearray()
        elif c == 0x3C:
            i = group(i, 0x3C, 0x3E)
        elif c == 0x22:
            i = group(i, 0x22, 0x22)
        elif c == 0x3A:
            cur.append(c)
            if bytes(cur).lower() in (b"to:", b"from:"):
                words.append(bytes(cur))
                cur = bytearray()
        else:
            if c == 0x5C:
                cur.append(c)
                if i >= n:
                    break
                c = line[i]
                i += 1
            cur.append(c)
    if cur:
        words.append(bytes(cur))
    return words


def unstuff(data):
    """A DATA body as the client meant it: RFC 5321 4.5.2, each line's
    leading '.' removed."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def header_fields(message):
    """The header section of an (un-stuffed) message as [(name, value,
    raw)]: name is the text before the colon without trailing white space,
    value the unfolded text after it (RFC 5322 2.2.3: CRLF before WSP
    removed), raw the field's lines as they were.  Lines before the first
    field that are not fields come out with name None."""
    head = message.split(b"\r\n\r\n", 1)[0]
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value, raw = fields[-1]
            fields[-1] = (name, value + line, raw + b"\r\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            fields.append((None, line, line))
            continue
        fields.append((name.rstrip(b" \t"), value, line))
    return fields


def comment_after(text, prefix):
    """The rest of an RFC 5322 comment that starts with prefix (bytes),
    quoted-pairs undone; None when prefix is not there or the comment
    does not end."""
    i = text.find(prefix)
    if i < 0:
        return None
    out, i = bytearray(), i + len(prefix)
    while i < len(text):
        ch = text[i]
        if ch == 0x5C:  # backslash: quoted-pair
            if i + 1 >= len(text):
                return None
            out.append(text[i + 1])
            i += 2
            continue
        if ch == 0x29:  # ')'
            return bytes(out)
        out.append(ch)
        i += 1
    return None


def log_escape(login):
    """The form of a login in saslgate's key=value log lines: octets
    outside 0x21..0x7e and '+', '=', '"', backslash as "+HH"."""
    if isinstance(login, str):
        login = login.encode()
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in b'+="\\' else "+%02X" % b
                   for b in login)


# ---------------------------------------------------------------- FakeUpstream

CLOSE = "<close>"


class Stall:
    """Wait `seconds` before answering with `reply` (CLOSE allowed)."""

    def __init__(self, seconds, reply=None):
        self.seconds, self.reply = seconds, reply


class Message:
    def __init__(self, conn, mail_from, rcpts):
        self.conn, self.mail_from, self.rcpts = conn, mail_from, list(rcpts)
        self.data = b""          # raw bytes as received, without "<CRLF>.<CRLF>"
        self.complete = False    # the final dot arrived
        self.reply = None        # what we answered to the final dot

    def __repr__(self):
        return "Message(conn=%d from=%r rcpts=%r size=%d complete=%s reply=%r)" % (
            self.conn, self.mail_from, self.rcpts, len(self.data), self.complete, self.reply)


DEFAULT_EXTENSIONS = ["PIPELINING", "SIZE 104857600", "8BITMIME", "ENHANCEDSTATUSCODES",
                      "DSN", "SMTPUTF8",
                      "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT",
                      "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]
_DEFAULT_REPLIES = {
    "HELO": "250 fake.test", "MAIL": "250 2.1.0 Ok", "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>", "DOT": "250 2.0.0 Ok: queued as FAKE{n}",
    "RSET": "250 2.0.0 Ok", "NOOP": "250 2.0.0 Ok", "QUIT": "221 2.0.0 Bye",
    "XFORWARD": "250 2.0.0 Ok", "VRFY": "252 2.0.0 maybe",
}
MAX_LINE = 65536
MAX_DATA = 256 * 1024 * 1024


class FakeUpstream:
    """A scripted SMTP server in Python for fault injection (see module doc)."""

    def __init__(self, greeting="220 fake.test ESMTP", greeting_delay=0, extensions=None,
                 replies=None, close_in_data=None, auth=None, io_timeout=60):
        self.greeting, self.greeting_delay = greeting, greeting_delay
        self.extensions = list(DEFAULT_EXTENSIONS if extensions is None else extensions)
        self.auth = auth
        if auth and not any(e.upper().startswith("AUTH") for e in self.extensions):
            self.extensions.append("AUTH PLAIN LOGIN")
        self.replies = dict(replies or {})
        self.close_in_data = close_in_data
        self.io_timeout = io_timeout
        self.lock = threading.Lock()
        self.commands, self.messages, self.auth_users = [], [], []
        self.raw_commands = []  # [(conn_no, bytes as received, line end included)]
        self.connections = 0
        self.counts = {}
        self.errors = []
        self._conns, self._threads = [], []
        self._stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    # --- what the tests read
    def verbs(self):
        with self.lock:
            return [line.split(" ", 1)[0].upper() for _, line in self.commands]

    def command_lines(self):
        with self.lock:
            return [line for _, line in self.commands]

    def raw_lines(self, conn=None, verb=None):
        """Command lines exactly as they arrived (bytes, line end included),
        of one connection and/or one verb (case-insensitive) if given."""
        with self.lock:
            out = list(self.raw_commands)
        if conn is not None:
            out = [(n, l) for n, l in out if n == conn]
        if verb is not None:
            v = verb.upper().encode()
            out = [(n, l) for n, l in out if l.split(b" ", 1)[0].rstrip(b"\r\n").upper() == v]
        return [l for _, l in out]

    def attributes(self, verb, conn=None, postfix=False):
        """XCLIENT / XFORWARD attributes sent (on one connection, if given),
        xtext-decoded: [(NAME, value bytes)] in the order sent, over all
        the lines.  postfix=True: the words as Postfix's smtpd splits the
        line (postfix_tokens), so the attributes Postfix would see; a value
        that is no valid xtext then comes out as b"<bad xtext>" + raw."""
        out = []
        for l in self.raw_lines(conn, verb):
            l = l.rstrip(b"\r\n")
            words = postfix_tokens(l) if postfix else l.split(b" ")
            for tok in words[1:]:
                if not tok:
                    continue
                name, _, value = tok.partition(b"=")
                try:
                    value = xtext_decode(value)
                except ValueError:
                    if not postfix:
                        raise
                    value = b"<bad xtext>" + value
                out.append((name.decode("ascii", "replace").upper(), value))
        return out

    def delivered(self):
        """Bodies of the messages answered 2xx at their final dot; each is
        here before that answer leaves, so once the client has its 250."""
        with self.lock:
            return [m.data for m in self.messages
                    if m.complete and m.reply and m.reply.startswith("2")]

    def wait_for(self, pred, timeout=10, what="fake upstream condition"):
        return wait_for(pred, T(timeout), what)

    # --- server
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self._conns.append(c)
            t = threading.Thread(target=self._serve_safe, args=(c, n), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve_safe(self, c, n):
        try:
            c.settimeout(self.io_timeout)
            self._serve(c, n)
        except (OSError, ConnectionError, _Closed):
            pass
        except Exception as e:  # a harness bug: make it visible
            with self.lock:
                self.errors.append(repr(e))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _pick(self, verb, line):
        with self.lock:
            k = self.counts.get(verb, 0)
            self.counts[verb] = k + 1
        r = self.replies.get(verb)
        if isinstance(r, list):
            r = r[min(k, len(r) - 1)] if r else None
        if callable(r) and not isinstance(r, Stall):
            r = r(line)
        return r

    def _send(self, c, reply, n=0, record=None):
        """Answer with reply (after its Stall, if it is one).  record(text),
        if given, runs before the first octet goes out: what the answer
        stands for is in the tests' view by the time the client can read
        it, never after."""
        if isinstance(reply, Stall):
            if self._stopping.wait(reply.seconds):
                raise _Closed()
            reply = reply.reply
        if reply is None:
            return
        if reply == CLOSE:
            raise _Closed()
        reply = reply.replace("{n}", str(n))
        if record is not None:
            record(reply)
        lines = reply.split("\n")
        out = []
        for i, l in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(l[:3] + sep + l[4:] if len(l) > 3 else l)
        c.sendall(("\r\n".join(out) + "\r\n").encode())

    def _serve(self, c, n):
        buf = bytearray()

        def readraw():
            while True:
                i = buf.find(b"\n")
                if i >= 0:
                    line = bytes(buf[:i + 1])
                    del buf[:i + 1]
                    return line
                if len(buf) > MAX_LINE:
                    raise _Closed()
                chunk = c.recv(65536)
                if not chunk:
                    raise _Closed()
                buf.extend(chunk)

        def readline():
            return readraw().rstrip(b"\r\n").decode("utf-8", "replace")

        if self.greeting_delay and self._stopping.wait(self.greeting_delay):
            return
        if self.greeting is None:
            return
        self._send(c, self.greeting)
        mail_from, rcpts = None, []
        while not self._stopping.is_set():
            raw = readraw()
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            with self.lock:
                self.commands.append((n, line))
                self.raw_commands.append((n, raw))
            verb = line.split(" ", 1)[0].upper()
            r = self._pick(verb, line)
            if verb == "EHLO":
                self._send(c, r if r is not None else
                           "\n".join(["250 fake.test"] + ["250 " + e for e in self.extensions]))
            elif verb == "XCLIENT":
                self._send(c, r if r is not None else self.greeting or "220 fake.test ESMTP")
            elif verb == "AUTH":
                self._send(c, r if r is not None else self._auth(c, line, readline))
            elif verb == "MAIL":
                r = _DEFAULT_REPLIES["MAIL"] if r is None else r
                if isinstance(r, str) and r.startswith("2"):
                    m = re.match(r"(?i)MAIL FROM:\s*<([^>]*)>", line)
                    mail_from, rcpts = (m.group(1) if m else line), []
                self._send(c, r)
            elif verb == "RCPT":
                r = _DEFAULT_REPLIES["RCPT"] if r is None else r
                if isinstance(r, str) and r.startswith("2"):
                    m = re.match(r"(?i)RCPT TO:\s*<([^>]*)>", line)
                    rcpts.append(m.group(1) if m else line)
                self._send(c, r)
            elif verb == "DATA":
                r = _DEFAULT_REPLIES["DATA"] if r is None else r
                msg = Message(n, mail_from, rcpts)

                def go_ahead(text, msg=msg):
                    if text.startswith("354"):
                        with self.lock:
                            self.messages.append(msg)

                self._send(c, r, record=go_ahead)
                if isinstance(r, Stall):
                    r = r.reply
                if not (isinstance(r, str) and r.startswith("354")):
                    continue
                self._read_data(c, buf, msg)
                d = self._pick("DOT", "")
                d = _DEFAULT_REPLIES["DOT"] if d is None else d
                with self.lock:
                    nmsg = len(self.messages)

                def answered(text, msg=msg):
                    with self.lock:
                        msg.reply = text

                # recorded before it is sent: a test that reads delivered()
                # right after the client's 250 finds the message there
                self._send(c, d, nmsg, record=answered)
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self._send(c, _DEFAULT_REPLIES["RSET"] if r is None else r)
            elif verb == "QUIT":
                self._send(c, _DEFAULT_REPLIES["QUIT"] if r is None else r)
                return
            else:
                self._send(c, r if r is not None else
                           _DEFAULT_REPLIES.get(verb, "502 5.5.2 Error: command not recognized"))

    def _read_data(self, c, buf, msg):
        """Read the body up to <CRLF>.<CRLF> (the first line may be ".")."""
        data = bytearray(buf)
        buf.clear()
        while True:
            end = rest = -1
            if data.startswith(b".\r\n"):
                end, rest = 0, 3
            else:
                i = data.find(b"\r\n.\r\n")
                if i >= 0:
                    end, rest = i + 2, i + 5  # the body keeps its last CRLF
            cut = self.close_in_data
            if cut is not None and len(data) >= cut and (end < 0 or end > cut):
                msg.data = bytes(data[:cut])
                raise _Closed()
            if end >= 0:
                msg.data = bytes(data[:end])
                msg.complete = True
                buf.extend(data[rest:])
                return
            if len(data) > MAX_DATA:
                raise _Closed()
            msg.data = bytes(data)
            chunk = c.recv(65536)
            if not chunk:
                raise _Closed()
            data.extend(chunk)

    def _auth(self, c, line, readline):
        parts = line.split()
        if not self.auth or len(parts) < 2:
            return "504 5.5.4 Unrecognized authentication type"
        mech = parts[1].upper()
        if mech == "PLAIN":
            resp = parts[2] if len(parts) > 2 else None
            if resp is None:
                self._send(c, "334 ")
                resp = readline()
            try:
                _, user, pw = base64.b64decode(resp).decode().split("\0")
            except Exception:
                return "501 5.5.2 bad base64"
        elif mech == "LOGIN":
            try:
                if len(parts) > 2:
                    user = base64.b64decode(parts[2]).decode()
                else:
                    self._send(c, "334 VXNlcm5hbWU6")
                    user = base64.b64decode(readline()).decode()
                self._send(c, "334 UGFzc3dvcmQ6")
                pw = base64.b64decode(readline()).decode()
            except Exception:
                return "501 5.5.2 bad base64"
        else:
            return "504 5.5.4 Unrecognized authentication type"
        if self.auth.get(user) == pw:
            with self.lock:
                self.auth_users.append(user)
            return "235 2.7.0 Authentication successful"
        return "535 5.7.8 Error: authentication failed"

    def stop(self):
        self._stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)
        for t in self._threads:
            t.join(5)


class _Closed(Exception):
    pass


# ---------------------------------------------------------------- saslgate

def _ini(config):
    if isinstance(config, str):
        return config
    out = []
    for section, kv in config.items():
        out.append("[%s]" % section)
        for k, v in kv.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):  # repeatable keys (server)
                out.extend("%s = %s" % (k, x) for x in v)
            else:
                if isinstance(v, bool):
                    v = "yes" if v else "no"
                out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out) + "\n"


def sanitizer_env():
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)  # timestamps, not <N> prefixes
    env.pop("NOTIFY_SOCKET", None)
    if SANITIZE:
        env["ASAN_OPTIONS"] = ("detect_leaks=1:abort_on_error=1:halt_on_error=1:"
                               "detect_stack_use_after_return=1:strict_string_checks=1:"
                               "check_initialization_order=1")
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        env["LSAN_OPTIONS"] = "exitcode=23"
    return env


def run_saslgate(*args, timeout=30, cwd=None):
    """Run the binary to completion (-t, -V, -h) -> CompletedProcess (text)."""
    return subprocess.run([SASLGATE_BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=T(timeout), env=sanitizer_env(), cwd=cwd,
                          stdin=subprocess.DEVNULL)


def secret_forms(secrets):
    """Every string whose presence in a log betrays a credential."""
    pairs = secrets.items() if isinstance(secrets, dict) else [(None, p) for p in secrets]
    forms = []
    for user, pw in pairs:
        forms += [pw, b64(pw)]
        if user is not None:
            forms += [plain_b64(user, pw), plain_b64(user, pw, user),
                      b64("%s\0%s" % (user, pw))]
    return [f for f in forms if f]


class Saslgate:
    """The binary under test, in the foreground, stderr to a log file."""

    def __init__(self, dir, config, secrets=(), wait_ready=True, extra_args=(), name="saslgate"):
        self.dir = pathlib.Path(dir)
        self.config = self._assign_ports(config)
        self.secrets = secrets
        self.conf_path = self.dir / ("%s.conf" % name)
        self.log_path = self.dir / ("%s.log" % name)
        self.conf_path.write_text(_ini(self.config))
        self.returncode = None
        self.collected = False
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([SASLGATE_BIN, "-c", str(self.conf_path), *extra_args],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=sanitizer_env(), start_new_session=True)
        log.close()
        self.pid = self.proc.pid
        if wait_ready:
            self.wait_ready()

    @staticmethod
    def _assign_ports(config):
        if isinstance(config, str):
            return config
        cfg = {s: dict(kv) for s, kv in config.items()}
        for s, kv in cfg.items():
            if s.startswith("listener ") and not kv.get("address"):
                kv["address"] = "%s:%d" % (HOST, free_port())
        return cfg

    def write_config(self, config):
        """Replace the config file (then .reload())."""
        self.config = self._assign_ports(config)
        self.conf_path.write_text(_ini(self.config))

    def wait_ready(self, timeout=15):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("saslgate exited with %s before ready:\n%s"
                                     % (self.proc.returncode, self.log_text()))
            return re.search(r"\bready\b", self.log_text())
        wait_for(ready, T(timeout), "saslgate 'ready' log line")

    def address(self, name):
        if isinstance(self.config, str):
            m = re.search(r"\[listener %s\][^\[]*?address\s*=\s*(\S+)" % re.escape(name),
                          self.config)
            return m.group(1)
        return self.config["listener " + name]["address"]

    def port(self, name):
        return int(self.address(name).rsplit(":", 1)[1])

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, timeout=10, after=0):
        """Wait for regex in the log (from character offset `after`)."""
        return wait_for(lambda: re.search(regex, self.log_text()[after:]), T(timeout),
                        "log line /%s/ of saslgate" % regex)

    def reload(self, wait=True, timeout=10):
        start = len(self.log_text())
        self.proc.send_signal(signal.SIGHUP)
        if wait:
            return self.wait_log(r"reload: done|reload failed", timeout, after=start)

    def wait_exit(self, timeout=10):
        try:
            self.returncode = self.proc.wait(timeout=T(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError("saslgate did not exit within %ss" % timeout)
        self.collected = True
        return self.returncode

    def stop(self, timeout=40):
        """SIGTERM, wait (bounded), return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=T(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("saslgate did not stop within %ss of SIGTERM" % timeout)
        self.collected = True
        return self.returncode

    def kill(self):
        _stop_process(self.proc, sig=signal.SIGKILL)

    def problems(self):
        """What the teardown check finds wrong (list of strings)."""
        out = []
        log = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in log:
                out.append("sanitizer report (%r) in the saslgate log" % m)
        for f in secret_forms(self.secrets):
            if f in log:
                out.append("a credential (or its base64) is in the saslgate log: %r" % f[:3])
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            out.append("saslgate died of signal %d" % -rc)
        elif rc not in (None, 0) and not self.collected:
            out.append("saslgate exited with status %d on SIGTERM" % rc)
        return out

    def finish(self):
        """Teardown: stop (unless the test collected the exit) and check."""
        if self.proc.poll() is None:
            try:
                self.stop()
                self.collected = False  # the status on SIGTERM must be 0
            except AssertionError as e:
                return [str(e)] + self.problems()
        elif not self.collected:
            self.returncode = self.proc.returncode
            # It exited on its own while the test did not expect it.
            if self.returncode != 0:
                return ["saslgate exited by itself with status %s\n%s" % (
                    self.returncode, self.log_text()[-3000:])] + self.problems()
        return self.problems()


def default_config(workdir, upstream_port, cert=None, key=None, sasldb=None, saslauthd=None,
                   identity="xclient", **sections):
    """A working config dict: listeners submission (starttls), submissions
    (implicit; only with a cert) and plain (no TLS, AUTH allowed in the
    clear), SASL from a sasldb (auxprop) or a Saslauthd, upstream on
    127.0.0.1:upstream_port.  Keyword args replace/extend sections:
    default_config(..., limits={"max_recipients": 2}); a section value of
    None removes the section."""
    cfg = {
        "server": {"hostname": "sg.test", "workers": 1, "shutdown_timeout": "5s",
                   "log_level": "info"},
    }
    if cert:
        cfg["listener submission"] = {"address": None, "tls": "starttls",
                                      "require_auth": "yes", "require_tls_for_auth": "yes"}
        cfg["listener submissions"] = {"address": None, "tls": "implicit",
                                       "require_auth": "yes", "require_tls_for_auth": "yes"}
        cfg["tls"] = {"certificate": str(cert), "key": str(key)}
    cfg["listener plain"] = {"address": None, "tls": "none", "require_auth": "yes",
                             "require_tls_for_auth": "no"}
    sasl = {"service": "smtp", "failure_delay": "0s", "max_failures": 3,
            "mech_list": "PLAIN LOGIN"}
    if saslauthd is not None:
        sasl.update(pwcheck_method="saslauthd", saslauthd_path=saslauthd.socket_path)
    elif sasldb is not None:
        sasl.update(pwcheck_method="auxprop", auxprop_plugin="sasldb", sasldb_path=str(sasldb))
    cfg["sasl"] = sasl
    cfg["upstream"] = {"server": "%s:%d" % (HOST, upstream_port), "identity": identity,
                       "connect_timeout": "5s"}
    cfg["limits"] = {"idle_timeout": "60s"}
    for s, kv in sections.items():
        s = s.replace("_", " ", 1) if s.startswith("listener_") else s
        if kv is None:
            cfg.pop(s, None)
        elif s in cfg:
            cfg[s].update(kv)
        else:
            cfg[s] = dict(kv)
    return cfg


# ---------------------------------------------------------------- clients

def unverified_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp(port, starttls=True, host=HOST, timeout=30, ehlo="client.test"):
    """smtplib.SMTP connected, EHLO said, STARTTLS done when asked."""
    c = smtplib.SMTP(host, port, local_hostname=ehlo, timeout=T(timeout))
    c.ehlo()
    if starttls:
        c.starttls(context=unverified_context())
        c.ehlo()
    return c


def smtps(port, host=HOST, timeout=30, ehlo="client.test"):
    c = smtplib.SMTP_SSL(host, port, local_hostname=ehlo, timeout=T(timeout),
                         context=unverified_context())
    c.ehlo()
    return c


def swaks(*args, timeout=60):
    """swaks with the given arguments -> CompletedProcess (text)."""
    return subprocess.run(["swaks", *map(str, args)], capture_output=True, text=True,
                          timeout=T(timeout), stdin=subprocess.DEVNULL)


class Reply:
    def __init__(self, code, lines):
        self.code, self.lines = code, lines
        self.text = "\n".join(lines)

    @property
    def last(self):
        return self.lines[-1] if self.lines else ""

    def __repr__(self):
        return "Reply(%r)" % self.text

    def __str__(self):
        return self.text


class Raw:
    """A raw line client for SMTP transcripts (bounded reads)."""

    def __init__(self, port, host=HOST, tls=False, timeout=15):
        self.timeout = T(timeout)
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if tls:
            self.tls_wrap()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, s):
        self.send((s.encode() if isinstance(s, str) else s) + b"\r\n")

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no complete reply within %.1fs; have %r" % (self.timeout, self.buf))
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("no complete reply within %.1fs; have %r" % (self.timeout, self.buf))
        if not chunk:
            raise ConnectionError("connection closed by server; have %r" % self.buf)
        self.buf += chunk

    def reply(self, timeout=None):
        """One complete (possibly multi-line) reply."""
        deadline = time.monotonic() + (T(timeout) if timeout else self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                if len(self.buf) > 65536:
                    raise AssertionError("reply line too long")
                self._fill(deadline)
            raw, self.buf = self.buf.split(b"\r\n", 1)
            l = raw.decode("utf-8", "replace")
            lines.append(l)
            if not re.match(r"^\d{3}[- ]?", l):
                raise AssertionError("malformed reply line %r" % l)
            if len(l) == 3 or l[3] == " ":
                return Reply(int(l[:3]), lines)

    def cmd(self, s, timeout=None):
        self.line(s)
        return self.reply(timeout)

    def expect(self, code, s=None, timeout=None):
        """Send s (if given), read a reply, assert its code."""
        r = self.cmd(s, timeout) if s is not None else self.reply(timeout)
        assert r.code == code, "expected %d to %r, got %r" % (code, s, r.text)
        return r

    def tls_wrap(self, server_hostname="localhost"):
        self.sock = unverified_context().wrap_socket(self.sock, server_hostname=server_hostname)
        self.buf = b""

    def starttls(self):
        r = self.cmd("STARTTLS")
        assert r.code == 220, "STARTTLS: %r" % r.text
        assert not self.buf, "data after the 220 to STARTTLS: %r" % self.buf
        self.tls_wrap()
        return r

    def tls_version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def closed(self, timeout=5):
        """True if the server closes the connection within timeout (reads
        and discards anything else it sends)."""
        deadline = time.monotonic() + T(timeout)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, ssl.SSLError, OSError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
