# SPDX-License-Identifier: BSD-2-Clause
"""saslgate at its limits, with real parts: a private Postfix (or its
smtp-sink) behind it, Debian's saslauthd, smtplib and raw sockets in front.

- `[server] max_connections` reached while clients keep submitting mail:
  every connection past it gets `421 4.7.0` at connect and is closed, the
  clients inside it lose nothing (every message 250 and stored by the
  upstream), and the daemon neither stalls nor spins.
- Out of file descriptors (RLIMIT_NOFILE lowered on the running daemon
  with prlimit(2)): the connections it cannot take get `421 4.7.0` and are
  closed, one log line says so (not one per refused connection), the
  process stays near idle, an AUTH or a reconnect upstream that needs a
  descriptor gets a 4xx (never a 2xx, never a hang), and once connections
  close it serves mail again.  README "Limits", saslgate.conf(5)
  `max_connections`.
- A SASL backend that stops answering (saslauthd under SIGSTOP): AUTH
  past what the pool may hold (`[sasl] threads`) gets `454 4.7.0` at once,
  not after `failure_delay`, counts no failure, and sessions that do not
  AUTH are answered at once throughout; after SIGCONT everything works.
  saslgate.conf(5) `[sasl] threads`.

Other limits are tested elsewhere: idle_timeout, floods and brute force in
test_abuse.py, upstream stalls in test_upstream_faults.py, a saslauthd
that is gone in test_auth.py.  Figures (time to 454, CPU while exhausted,
connection counts) are printed (pytest -s shows them).  The harness checks
every saslgate at teardown: exit 0 on SIGTERM, no sanitizer report, no
password in its log."""

import os
import re
import resource
import selectors
import signal
import smtplib
import statistics
import subprocess
import threading
import time
import urllib.request

import sgtest
from sgtest import HOST, T, Raw, default_config, make_sasldb, plain_b64

USER, PW = "lima", "Li7-limits.Pw#52"
# saslauthd -a shadow needs system users: names unique to this file
SA_FD_USER, SA_FD_PW = "sglimitfd1", "Fd3-limits.pw9x"
SA_Q_USER, SA_Q_PW = "sglimitq1", "Qu5-limits.pw2y"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (every thread), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15


def cpu_share(pid, seconds, during=None):
    """Share of one core the process used over `seconds` (while `during`
    runs in the meantime, if given)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    if during:
        during(seconds)
    else:
        time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def greeting(port, timeout=2):
    """Connect, read the first reply -> (Raw, Reply or None, seconds).
    None: the server closed the connection without a word."""
    t0 = time.monotonic()
    r = Raw(port, timeout=timeout)
    try:
        rep = r.reply()
    except ConnectionError:
        rep = None
    except AssertionError:  # no reply within timeout
        rep = "no reply within %.1fs" % timeout
    return r, rep, time.monotonic() - t0


def assert_refused(r, rep, what):
    """A connection past a limit: 421 4.7.0, then closed by the server."""
    assert rep is not None, "%s: closed without a reply (want 421 4.7.0)" % what
    assert not isinstance(rep, str), "%s: %s" % (what, rep)
    assert rep.text.startswith("421 4.7.0 "), "%s: got %r" % (what, rep.text)
    assert r.closed(timeout=2), "%s: the connection stayed open after the 421" % what


def message(marker):
    return ("Subject: %s\r\nX-Marker: %s\r\n\r\nat the limit %s\r\n"
            % (marker, marker, marker)).encode()


def login_session(port, user, pw):
    c = smtplib.SMTP(HOST, port, local_hostname="limits.example", timeout=T(20))
    c.ehlo()
    c.login(user, pw)
    return c


def send_message(port, user, pw, marker):
    c = login_session(port, user, pw)
    try:
        assert c.sendmail("%s@example.org" % user, ["bob@example.net"], message(marker)) == {}
        c.quit()
    finally:
        c.close()


def assert_stored(pf, markers):
    """Every marker in exactly one message Postfix relayed to its sink."""
    msgs = pf.wait_delivered(len(markers), timeout=30)
    for m in markers:
        n = sum(1 for x in msgs if re.search(rb"^X-Marker: %s\r?$" % m.encode(), x, re.M))
        assert n == 1, "message %s stored %d times by the upstream" % (m, n)


class Sender:
    """One session (AUTH PLAIN on the plain listener) that keeps sending
    messages until stopped; every one must get 250."""

    def __init__(self, port, tag, pause=0.05, limit=200):
        self.port, self.tag, self.pause, self.limit = port, tag, pause, limit
        self.sent, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            c = login_session(self.port, USER, PW)
        except Exception as e:
            self.errors.append("%s login: %r" % (self.tag, e))
            return
        try:
            for i in range(self.limit):
                if self._stop.is_set():
                    break
                marker = "%s-%d" % (self.tag, i)
                try:
                    refused = c.sendmail("%s@example.org" % USER, ["bob@example.net"],
                                         message(marker))
                except Exception as e:
                    self.errors.append("%s: %r" % (marker, e))
                    return
                if refused:
                    self.errors.append("%s refused: %r" % (marker, refused))
                    return
                self.sent.append(marker)
                self._stop.wait(self.pause)
            c.quit()
        finally:
            c.close()

    def stop(self):
        self._stop.set()
        self._thread.join(T(60))
        assert not self._thread.is_alive(), "sender %s did not finish" % self.tag


# ------------------------------------------------------------ max_connections

def test_max_connections_under_load(workdir, start_saslgate, start_postfix):
    """max_connections = 20 over two workers: 4 clients keep sending mail,
    16 more hold their sessions, then 4 waves of 40 connect at once.  Each
    of the 160 gets 421 4.7.0 and is closed; the 4 senders get 250 for every message
    and Postfix stores each once; a client after the flood is greeted at
    once, and the daemon idles at near 0% CPU afterwards."""
    limit, nsenders, nflood, nwaves = 20, 4, 40, 4
    pf = start_postfix()
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm="sg.test")
    cfg = default_config(workdir, upstream_port=pf.port, sasldb=db,
                         server={"max_connections": limit, "workers": 2})
    sg = start_saslgate(cfg, secrets={USER: PW})
    port = sg.port("plain")

    senders = [Sender(port, "load%d" % i) for i in range(nsenders)]
    holders, flood = [], []
    try:
        sgtest.wait_for(lambda: all(s.sent or s.errors for s in senders), T(20),
                        "every sender's first message")
        assert not any(s.errors for s in senders), [s.errors for s in senders]
        for _ in range(limit - nsenders):
            r, rep, _ = greeting(port, timeout=T(5))
            holders.append(r)
            assert rep is not None and rep.code == 220, "inside the limit: %r" % rep
        rejects_before = len(re.findall(r"reason=max_connections", sg.log_text()))
        assert rejects_before == 0

        # the flood, in waves while the senders keep sending: each wave's
        # connections all open at once, then each read
        at_start = [len(s.sent) for s in senders]
        c0, t0 = cpu_seconds(sg.pid), time.monotonic()
        lat = []
        for wave in range(nwaves):
            batch = []
            for _ in range(nflood):
                batch.append((time.monotonic(), Raw(port, timeout=T(5))))
                flood.append(batch[-1][1])
            for i, (ts, r) in enumerate(batch):
                try:
                    rep = r.reply()
                except ConnectionError:
                    rep = None
                lat.append(time.monotonic() - ts)
                assert_refused(r, rep, "wave %d: connection %d past max_connections"
                               % (wave, limit + i + 1))
                r.close()
            time.sleep(0.3)
        flood_cpu = cpu_seconds(sg.pid) - c0
        flood_secs = time.monotonic() - t0
        # the senders were busy all along
        sgtest.wait_for(lambda: all(len(s.sent) >= n + 3 or s.errors
                                    for s, n in zip(senders, at_start)),
                        T(20), "three more messages from every sender")

        # the holders are still served: the limit cost them nothing
        for r in holders[:3]:
            r.expect(250, "EHLO holder.example")
            r.expect(250, "NOOP")
    finally:
        for r in holders + flood:
            r.close()

    # room again: a new client is greeted at once (the holders' slots are
    # freed as saslgate reads their FIN: retry while a 421 says it has not)
    new_lat, new_rejects = None, 0
    deadline = time.monotonic() + T(5)
    while new_lat is None:
        r, rep, dt = greeting(port, timeout=T(2))
        try:
            assert rep is not None, "a client after the flood was closed without a word"
            if rep.code == 220:
                new_lat = dt
                r.expect(250, "EHLO after.example")
                r.expect(221, "QUIT")
            else:
                assert_refused(r, rep, "a client after the flood")
                new_rejects += 1
                assert time.monotonic() < deadline, "no room after the flood for %.0fs" % T(5)
                time.sleep(0.1)
        finally:
            r.close()
    assert new_lat < T(1), "the first client after the flood waited %.2fs for 220" % new_lat

    for s in senders:
        s.stop()
    errors = [e for s in senders for e in s.errors]
    assert not errors, "a client inside max_connections failed: %s" % errors[:5]
    markers = [m for s in senders for m in s.sent]
    assert_stored(pf, markers)

    idle = cpu_share(sg.pid, 1.5)
    assert idle < 0.2, "saslgate uses %.0f%% of a core idle after the flood" % (idle * 100)
    log = sg.log_text()
    nrej = len(re.findall(r"event=reject client=127\.0\.0\.1 reason=max_connections \(%d\)"
                          % limit, log))
    assert nrej == nflood * nwaves + new_rejects, (nrej, nflood * nwaves, new_rejects)
    print("\nmax_connections=%d, 2 workers: %d senders sent %d messages (all 250, all "
          "stored by Postfix); %d of %d connections past the limit got 421 4.7.0 (median "
          "%.1f ms, max %.1f ms from connect to the 421); flood: %.2f s CPU in %.2f s; first client "
          "after: 220 in %.1f ms; idle afterwards %.1f%% of a core"
          % (limit, nsenders, len(markers), len(lat), nflood * nwaves, statistics.median(lat) * 1000,
             max(lat) * 1000, flood_cpu, flood_secs, new_lat * 1000, idle * 100))


# ------------------------------------------------------------ descriptors

def test_out_of_file_descriptors(workdir, start_saslgate, start_postfix, start_saslauthd):
    """RLIMIT_NOFILE of the running daemon lowered to what it holds + 30,
    then clients connect until it has no descriptor left.  Those past it
    get 421 4.7.0 and are closed; the log says so once (per worker and 10
    s), not once per connection; while clients keep knocking the daemon
    uses little CPU; an AUTH (saslauthd needs a socket) and a command that
    must reconnect upstream get a 4xx at once; once the clients leave, the
    same process greets, authenticates and relays again."""
    headroom, knock_secs = 30, 3.0
    pf = start_postfix(extra={"smtpd_timeout": "2s"})  # drops idle upstream links
    sa = start_saslauthd(users={SA_FD_USER: SA_FD_PW})
    mport = sgtest.free_port()
    cfg = default_config(workdir, upstream_port=pf.port, saslauthd=sa, server={"workers": 2},
                         metrics={"address": "%s:%d" % (sgtest.HOST, mport)})
    sg = start_saslgate(cfg, secrets={SA_FD_USER: SA_FD_PW})
    port = sg.port("plain")
    auth = "AUTH PLAIN " + plain_b64(SA_FD_USER, SA_FD_PW)

    # warm-up: what the daemon opens once (pool threads, Cyrus' plugins)
    send_message(port, SA_FD_USER, SA_FD_PW, "fd-before")
    # A: logged in, its upstream connection then dropped by Postfix
    a = Raw(port, timeout=T(10))
    a.expect(220)
    a.expect(250, "EHLO a.example")
    a.expect(235, auth)
    sg.wait_log(r"event=upstream_lost", timeout=10)
    # B: greeted, not logged in
    b = Raw(port, timeout=T(10))
    b.expect(220)
    b.expect(250, "EHLO b.example")
    time.sleep(0.3)
    base = fd_count(sg.pid)
    limit = base + headroom
    resource.prlimit(sg.pid, resource.RLIMIT_NOFILE, (limit, limit))
    held, refused = [], []
    try:
        # fill every descriptor with idle clients
        for _ in range(headroom + 20):
            r, rep, dt = greeting(port, timeout=T(3))
            if isinstance(rep, sgtest.Reply) and rep.code == 220:
                held.append(r)
                continue
            refused.append(r)
            assert_refused(r, rep, "connection %d with no descriptor left" % (len(held) + 1))
            assert dt < T(2), "the 421 took %.2fs" % dt
            r.close()
            if len(refused) == 10:
                break
        assert len(refused) == 10, "%d clients held and none refused" % len(held)
        assert 10 <= len(held) <= headroom, "held %d connections" % len(held)
        exhausted_fds = fd_count(sg.pid)

        # a login needs a socket to saslauthd: 4xx, at once, never 235
        t0 = time.monotonic()
        rep_b = b.cmd(auth, timeout=T(10))
        auth_secs = time.monotonic() - t0
        assert rep_b.text.startswith("454 4.7.0 "), "AUTH with no descriptor left: %r" % rep_b.text
        assert auth_secs < T(5), auth_secs
        # A's next command reconnects upstream, which needs a socket: 4xx
        t0 = time.monotonic()
        rep_a = a.cmd("MAIL FROM:<%s@example.org>" % SA_FD_USER, timeout=T(10))
        mail_secs = time.monotonic() - t0
        assert 400 <= rep_a.code < 500, "MAIL with no descriptor left: %r" % rep_a.text
        assert mail_secs < T(5), mail_secs

        # clients keep knocking: each refused at once, the daemon near idle
        knocks = []

        def knock(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                r, rep, dt = greeting(port, timeout=T(3))
                knocks.append(dt)
                try:
                    assert_refused(r, rep, "knock %d while out of descriptors" % len(knocks))
                finally:
                    r.close()
                time.sleep(0.02)
        busy = cpu_share(sg.pid, knock_secs, during=knock)
        assert len(knocks) >= 20, len(knocks)
        assert busy < 0.2, "saslgate used %.0f%% of a core while out of descriptors" % (
            busy * 100)
        idle = cpu_share(sg.pid, 1.0)
        assert idle < 0.1, "saslgate used %.0f%% of a core out of descriptors, nobody " \
            "knocking" % (idle * 100)
    finally:
        for r in held:
            r.close()

    nrefused = len(refused) + len(knocks)
    log = sg.log_text()
    lines = re.findall(r".*event=fd_exhausted .*", log)
    assert lines, "no log line says saslgate ran out of descriptors"
    assert all("listener=plain" in l and "421" in l for l in lines), lines
    assert len(lines) <= 2 * 2, "not rate-limited: %d lines for %d refusals" % (
        len(lines), nrefused)
    assert re.search(r"password backend unavailable \(saslauthd socket .*: Too many open "
                     r"files\)", log), "the failed AUTH is not explained in the log"

    # recovery: the descriptors come back, the same process serves mail
    sgtest.wait_for(lambda: fd_count(sg.pid) <= base + 2, T(10),
                    "saslgate's descriptors back to %d" % base, interval=0.1)
    r, rep, dt = greeting(port, timeout=T(3))
    try:
        assert isinstance(rep, sgtest.Reply) and rep.code == 220, rep
    finally:
        r.close()
    send_message(port, SA_FD_USER, SA_FD_PW, "fd-after")
    b.expect(235, auth)  # the 454 counted no failure
    b.expect(221, "QUIT")
    a.close()
    assert_stored(pf, ["fd-before", "fd-after"])
    # each worker says it recovered at its own next accept: knock until
    # every worker that ran out has taken a connection again (the kernel
    # spreads connections over the workers' sockets)
    short = set(re.findall(r"event=fd_exhausted worker=(\d+)", sg.log_text()))
    for _ in range(60):
        back = set(re.findall(r"event=fd_recovered worker=(\d+)", sg.log_text()))
        if short <= back:
            break
        r, rep, dt = greeting(port, timeout=T(3))
        r.close()
    recovered = re.findall(r"event=fd_recovered .*refused=(\d+)", sg.log_text())
    assert short <= set(re.findall(r"event=fd_recovered worker=(\d+)", sg.log_text())), (
        short, recovered)
    assert sum(int(n) for n in recovered) == nrefused, (recovered, nrefused)
    # the metrics count the same refusals, under their own reason
    with urllib.request.urlopen("http://%s:%d/metrics" % (sgtest.HOST, mport),
                                timeout=T(10)) as resp:
        text = resp.read().decode()
    m = re.search(r'^saslgate_connections_rejected_total\{listener="plain",'
                  r'reason="descriptors"\} (\d+)$', text, re.M)
    assert m and int(m.group(1)) == nrefused, (m and m.group(0), nrefused)
    print("\nRLIMIT_NOFILE %d (daemon at rest: %d descriptors): %d clients held, %d "
          "descriptors open when exhausted; %d refused with 421 4.7.0 (max %.1f ms); "
          "%d log lines for them; CPU %.1f%% of a core over %.0f s while knocking, %.1f%% "
          "without; AUTH -> %s in %.1f ms, MAIL needing a reconnect -> %s in %.1f ms"
          % (limit, base, len(held), exhausted_fds, nrefused, max(knocks) * 1000,
             len(lines), busy * 100, knock_secs, idle * 100, rep_b.text[:9], auth_secs * 1000,
             rep_a.text[:9], mail_secs * 1000))


# ------------------------------------------------------------ SASL backend

def first_lines(sessions, timeout):
    """The first reply line each session gets within timeout, read from all
    at once: [(line or None, seconds from its `since`)] in order.
    sessions: [(Raw, since)]."""
    got = [(None, None)] * len(sessions)
    sel = selectors.DefaultSelector()
    for i, (r, since) in enumerate(sessions):
        sel.register(r.sock, selectors.EVENT_READ, i)
    end = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(max(0.0, end - time.monotonic())):
            i = key.data
            r, since = sessions[i]
            data = r.sock.recv(4096)
            r.buf += data
            if not data or b"\r\n" in r.buf:
                line, _, r.buf = r.buf.partition(b"\r\n")
                got[i] = (line.decode() if data else "<closed>", time.monotonic() - since)
                sel.unregister(r.sock)
    sel.close()
    return got


class Prober:
    """Another client, who never AUTHs: connect, EHLO, NOOP, QUIT every
    0.1 s; the time to the NOOP's 250 recorded."""

    def __init__(self, port):
        self.port, self.lat, self.errors = port, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with Raw(self.port, timeout=T(5)) as r:
                    r.expect(220)
                    r.expect(250, "EHLO probe.example")
                    r.expect(250, "NOOP")
                    self.lat.append(time.monotonic() - t0)
                    r.expect(221, "QUIT")
            except Exception as e:
                self.errors.append(repr(e))
            self._stop.wait(0.1)

    def stop(self):
        self._stop.set()
        self._thread.join(T(20))
        assert not self.errors, "a client that does not AUTH failed: %s" % self.errors[:3]
        assert self.lat, "the prober made no round"
        return self.lat


def saslauthd_gate(workdir, start_saslgate, start_smtp_sink, start_saslauthd, marker,
                   **sections):
    """saslgate (identity = header, the given config sections) in front of
    smtp-sink, its logins checked by a saslauthd of its own; one message
    (marked MARKER) already sent.  Returns the sink, saslgate, its port,
    the AUTH line and saslauthd's process group (to SIGSTOP it)."""
    sink = start_smtp_sink()
    sa = start_saslauthd(users={SA_Q_USER: SA_Q_PW})
    cfg = default_config(workdir, upstream_port=sink.port, saslauthd=sa, identity="header",
                         **sections)
    sg = start_saslgate(cfg, secrets={SA_Q_USER: SA_Q_PW})
    port = sg.port("plain")
    send_message(port, SA_Q_USER, SA_Q_PW, marker)
    return (sink, sg, port, "AUTH PLAIN " + plain_b64(SA_Q_USER, SA_Q_PW),
            os.getpgid(sa.proc.pid))


def test_sasl_backend_stopped(workdir, start_saslgate, start_smtp_sink, start_saslauthd):
    """saslauthd stopped (SIGSTOP) behind [sasl] threads = 1: of 30 logins
    at once, 16 (16 x threads) wait for it and 14 get 454 4.7.0 at once, far
    sooner than failure_delay; the 16 get 454 4.7.0 once they waited 10 s;
    one more login then gets 454 at once (nothing answered for 2 s).
    Meanwhile a client that does not AUTH is answered at once.  No 454
    costs a failure (max_failures = 1, ip_failure_limit = 2): after SIGCONT
    every one of the 31 sessions logs in with 235, and mail flows."""
    threads, nauth, in_flight_max, wait_max = 1, 30, 16, 10.0
    sink, sg, port, auth, pgid = saslauthd_gate(
        workdir, start_saslgate, start_smtp_sink, start_saslauthd, "q-before",
        server={"workers": 2},
        sasl={"threads": threads, "failure_delay": "10s", "max_failures": 1,
              "ip_failure_limit": 2})

    sessions = []
    prober = Prober(port)
    try:
        for _ in range(nauth + 1):
            r = Raw(port, timeout=T(15))
            sessions.append(r)
            r.expect(220)
            r.expect(250, "EHLO login.example")
        burst, late = sessions[:nauth], sessions[nauth]
        os.killpg(pgid, signal.SIGSTOP)
        # 1. a burst of logins past what the pool may hold
        sent = []
        for r in burst:
            r.line(auth)
            sent.append((r, time.monotonic()))
        got = first_lines(sent, T(2))
        answered = [(line, dt) for line, dt in got if line is not None]
        waiting = [(r, t) for (r, t), (line, _) in zip(sent, got) if line is None]
        assert all(line.startswith("454 4.7.0 ") for line, _ in answered), answered
        assert len(waiting) == in_flight_max * threads, \
            "%d logins wait for the stopped backend, %d got %s" % (
                len(waiting), len(answered), sorted(set(l for l, _ in answered)))
        burst_454 = [dt for _, dt in answered]
        assert max(burst_454) < T(2), burst_454

        # 2. those waiting get 454 once they waited 10 s, not before
        got = first_lines(waiting, wait_max + T(3))
        assert all(line is not None and line.startswith("454 4.7.0 ") for line, _ in got), got
        waited = [dt for _, dt in got]
        assert min(waited) > wait_max - 0.5, waited
        # 3. the backend has not answered for 10 s: the next login, 454 at once
        t0 = time.monotonic()
        rep = late.cmd(auth, timeout=T(5))
        stall_454 = time.monotonic() - t0
        assert rep.text.startswith("454 4.7.0 "), rep.text
        assert stall_454 < T(2), "454 after %.2fs" % stall_454
    finally:
        os.killpg(pgid, signal.SIGCONT)
        lat = prober.stop()
    assert max(lat) < T(0.5), "a client that does not AUTH waited %.2fs" % max(lat)

    # the calls that hung end (their answers dropped); until then a login
    # may still get 454.  None was counted as a failure: every session
    # logs in now
    t0 = time.monotonic()
    retries = 0
    while True:
        rep = sessions[0].cmd(auth, timeout=T(5))
        if rep.code == 235:
            break
        assert rep.text.startswith("454 4.7.0 "), rep.text
        assert time.monotonic() - t0 < T(5), "logins still refused %.1fs after SIGCONT" % (
            time.monotonic() - t0)
        retries += 1
        time.sleep(0.1)
    recovered = time.monotonic() - t0
    for r in sessions[1:]:
        r.expect(235, auth)
    send_message(port, SA_Q_USER, SA_Q_PW, "q-after")
    for r in sessions:
        r.expect(221, "QUIT")
        r.close()
    msgs = sink.wait_messages(2)
    for m in ("q-before", "q-after"):
        assert sum(1 for x in msgs if ("X-Marker: %s" % m).encode() in x) == 1, m

    log = sg.log_text()
    busy = re.findall(r"sasl: every SASL thread is busy \(%d calls in flight, \[sasl\] "
                      r"threads = %d\): AUTH answered as a temporary failure"
                      % (in_flight_max * threads, threads), log)
    assert len(busy) == len(answered), (len(busy), len(answered))
    assert len(re.findall(r"event=auth result=tempfail user=%s client=127\.0\.0\.1 mech=PLAIN "
                          r"reason=backend_timeout" % SA_Q_USER, log)) == len(waiting)
    assert len(re.findall(r"sasl: the password backend has not answered for a while", log)) == \
        1 + retries
    assert len(re.findall(r"event=auth result=tempfail ", log)) == nauth + 1 + retries
    assert len(re.findall(r"event=auth result=ok ", log)) == nauth + 1 + 2
    assert "event=auth result=fail" not in log
    print("\n[sasl] threads=%d, saslauthd stopped: %d logins at once -> %d get 454 4.7.0 "
          "at once (median %.1f ms, max %.1f ms), %d wait and get 454 4.7.0 after %.2f-%.2f s;"
          " then, nothing answered for 10 s: 454 in %.1f ms; a client without AUTH "
          "meanwhile: median %.1f ms, max %.1f ms to NOOP's 250 over %d rounds; logins "
          "235 again %.0f ms after SIGCONT (%d refused before), then all %d sessions 235"
          % (threads, nauth, len(answered), statistics.median(burst_454) * 1000,
             max(burst_454) * 1000, len(waiting), min(waited), max(waited), stall_454 * 1000,
             statistics.median(lat) * 1000, max(lat) * 1000, len(lat), recovered * 1000,
             retries, nauth + 1))


def test_sigterm_while_sasl_backend_hangs(workdir, start_saslgate, start_smtp_sink,
                                          start_saslauthd):
    """SIGTERM while three logins wait for a stopped saslauthd: the daemon
    does not wait for the hung calls.  Each waiting client gets 421 (or
    454, if its login's bound ran out first) and the process exits with
    status 0 one second after shutdown_timeout, saying why in the log."""
    sink, sg, port, auth, pgid = saslauthd_gate(
        workdir, start_saslgate, start_smtp_sink, start_saslauthd, "t-before",
        server={"shutdown_timeout": "2s"})
    sessions = []
    os.killpg(pgid, signal.SIGSTOP)
    try:
        for _ in range(3):
            r = Raw(port, timeout=T(15))
            r.expect(220)
            r.expect(250, "EHLO login.example")
            r.line(auth)
            sessions.append(r)
        sg.wait_log(r"event=connect", timeout=5)
        time.sleep(0.5)
        t0 = time.monotonic()
        sg.proc.send_signal(signal.SIGTERM)
        try:
            rc = sg.proc.wait(timeout=T(10))
        except subprocess.TimeoutExpired:
            raise AssertionError("saslgate still running %.0fs after SIGTERM with logins "
                                 "hung in saslauthd" % (time.monotonic() - t0))
        took = time.monotonic() - t0
        for r in sessions:
            rep = r.reply(timeout=T(5))
            assert rep.code in (421, 454), rep.text
        assert rc == 0, rc
        # shutdown_timeout, then one second for the SASL calls
        assert took < 3 + T(1), "exit %.1fs after SIGTERM" % took
        log = sg.log_text()
        assert re.search(r"shutdown: worker \d+: 3 SASL call\(s\) still waiting", log), log[-2000:]
        assert "stopped (3 SASL call(s) left in the backend)" in log, log[-2000:]
    finally:
        os.killpg(pgid, signal.SIGCONT)
        for r in sessions:
            r.close()
    print("\nSIGTERM with 3 logins hung in saslauthd: exit %d after %.2f s" % (rc, took))
