# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of [policy] (proxy/policy.c, proxy/policy_cmd.c): real
Debian policy servers (policyd-rate-limit, postfwd) each run privately in
the test's directory, a policy server that stalls and one that is down.

The clients use the "plain" listener (AUTH in the clear on loopback)."""

import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from sgtest import (T, _ini, default_config, free_port, make_sasldb, refused_port,
                    run_saslgate, smtp, wait_for)

USERS = {"alice": "Al1ce-pol.pw7", "bob": "B0b-pol.pw8", "mallory": "Mall0ry-pol.pw9"}

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/usr/bin/policyd-rate-limit") and os.path.exists("/usr/sbin/postfwd")),
    reason="needs policyd-rate-limit and postfwd (scripts/deps.sh)")


def gate(start_saslgate, workdir, upstream_port, policy, **sections):
    db = make_sasldb(workdir / "sasldb2", USERS, realm="sg.test")
    cfg = default_config(workdir, upstream_port=upstream_port, sasldb=db, policy=policy,
                         **sections)
    return start_saslgate(cfg, secrets=USERS)


def client(sg, user):
    c = smtp(sg.port("plain"), starttls=False)
    c.login(user, USERS[user])
    return c


def send(c, frm, rcpts, body=b"Subject: t\r\n\r\nhi\r\n"):
    """MAIL, each RCPT, DATA -> [(code, text)] of what the client saw."""
    seen = [c.mail(frm)]
    for r in rcpts:
        seen.append(c.rcpt(r))
    if all(code == 250 for code, _ in seen):
        try:
            seen.append(c.data(body))
        except smtplib.SMTPDataError as e:  # DATA itself refused
            seen.append((e.smtp_code, e.smtp_error))
    else:
        c.rset()
    return seen


class Daemon:
    def __init__(self, args, ready, what, cwd=None):
        self.log = open(str(cwd / (what + ".log")), "wb") if cwd else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd)
        wait_for(lambda: ready() or self.proc.poll() is not None, T(20), what)
        assert self.proc.poll() is None, "%s exited" % what

    def stop(self):
        # policyd-rate-limit waits for its kept connections on SIGTERM
        self.proc.kill()
        self.proc.wait(T(10))
        if self.log is not subprocess.DEVNULL:
            self.log.close()


@pytest.fixture
def stack():
    items = []
    yield items
    for d in reversed(items):
        d.stop()


def rate_limit_daemon(workdir, n, window):
    """policyd-rate-limit with its own YAML config, socket, pid and sqlite
    database in the test's directory: n messages per sasl_username per
    window seconds, then its fail_action (a defer_if_permit)."""
    d = workdir / "prl"
    d.mkdir()
    os.chmod(d, 0o777)
    sock = d / "policy.sock"
    conf = d / "policyd-rate-limit.yaml"
    conf.write_text("""\
debug: True
user: "policyd-rate-limit"
group: "policyd-rate-limit"
pidfile: "%(d)s/pid"
backend: 0
sqlite_config:
    database: "%(d)s/db.sqlite3"
SOCKET: "%(sock)s"
socket_permission: 0666
limits:
    - [%(n)d, %(w)d]
limits_by_id: {}
limit_by_sasl: True
limit_by_sender: False
limit_by_ip: False
limited_networks: []
success_action: "dunno"
fail_action: "defer_if_permit Rate limit reach, retry later"
db_error_action: "dunno"
report: False
delay_to_close: 300
""" % {"d": d, "sock": sock, "n": n, "w": window})
    return Daemon(["/usr/bin/policyd-rate-limit", "--file", str(conf)],
                  lambda: sock.exists(), "policyd-rate-limit", cwd=d), sock


def test_rate_limit_per_login(workdir, start_saslgate, start_postfix, stack):
    """policyd-rate-limit, 3 messages per login a minute: alice's 4th
    message gets the policy's 4xx at RCPT; bob is not affected; every
    decision is an event=policy line."""
    prl, sock = rate_limit_daemon(workdir, 3, 60)
    stack.append(prl)
    pf = start_postfix()
    mport = free_port()
    sg = gate(start_saslgate, workdir, pf.port,
              {"server": "unix:%s" % sock, "at": "rcpt", "timeout": "5s"},
              metrics={"address": "127.0.0.1:%d" % mport})
    c = client(sg, "alice")
    for i in range(3):
        seen = send(c, "alice@example.org", ["bob@example.net"])
        assert [code for code, _ in seen] == [250, 250, 250], seen
    code, text = c.rcpt("bob@example.net") if c.mail("alice@example.org")[0] == 250 else (0, b"")
    assert code == 450, (code, text)
    assert text == b"4.7.1 Rate limit reach, retry later"
    c.rset()
    c.quit()
    b = client(sg, "bob")
    assert [code for code, _ in send(b, "bob@example.org", ["carol@example.net"])] == [250, 250, 250]
    b.quit()
    pf.wait_delivered(4)
    log = sg.log_text()
    lines = [l for l in log.splitlines() if "event=policy " in l]
    assert len(lines) == 5, lines
    assert 'user=alice action="defer_if_permit Rate limit reach, retry later" result=refuse ' \
        'reply="450 4.7.1 Rate limit reach, retry later"' in lines[3]
    assert "user=bob" in lines[4] and 'action="dunno" result=continue' in lines[4]
    assert "server=unix:%s at=rcpt from=<alice@example.org> to=<bob@example.net>" % sock in lines[0]
    # the same decisions, counted
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=T(5)) as r:
        scrape = r.read().decode()
    assert 'saslgate_policy_results_total{result="continue"} 4' in scrape, scrape
    assert 'saslgate_policy_results_total{result="refuse"} 1' in scrape, scrape


POSTFWD_RULES = """\
id=R_USER; sasl_username==mallory; action=REJECT mallory may not send
id=R_COUNT; recipient_count>=3; action=DEFER_IF_PERMIT too many recipients at once
id=R_MARK; sasl_username==alice; action=PREPEND X-Policy-Checked: postfwd
"""


def test_postfwd_rules_at_data_after_a_down_server(workdir, start_saslgate,
                                                   start_fake_upstream, stack):
    """postfwd asked at DATA, behind a [policy] server that is down (tried
    in order): a rule on sasl_username (REJECT), one on recipient_count
    (DEFER_IF_PERMIT) and a PREPEND whose header reaches the message."""
    rules = workdir / "postfwd.cf"
    rules.write_text(POSTFWD_RULES)
    port = free_port()
    pfw = Postfwd(workdir, rules, port)
    stack.append(pfw)
    up = start_fake_upstream()
    down = refused_port()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": ["inet:127.0.0.1:%d" % down, "inet:127.0.0.1:%d" % port],
               "at": "data", "timeout": "5s"})
    a = client(sg, "alice")
    assert [code for code, _ in send(a, "alice@example.org", ["x@example.net"])] == [250, 250, 250]
    seen = send(a, "alice@example.org", ["x@example.net", "y@example.net", "z@example.net"])
    assert [code for code, _ in seen[:4]] == [250, 250, 250, 250]
    assert seen[4] == (450, b"4.7.1 too many recipients at once"), seen
    a.quit()
    m = client(sg, "mallory")
    seen = send(m, "mallory@example.org", ["x@example.net"])
    assert seen[2] == (554, b"5.7.1 mallory may not send"), seen
    m.quit()
    up.wait_for(lambda: len(up.messages) >= 1, what="alice's message")
    assert len(up.messages) == 1
    assert up.messages[0].data.startswith(b"X-Policy-Checked: postfwd\r\nReceived: ")
    log = sg.log_text()
    lines = [l for l in log.splitlines() if "event=policy " in l]
    assert len(lines) == 3, lines
    assert all("server=inet:127.0.0.1:%d at=data" % port in l for l in lines), lines


class Postfwd:
    """postfwd (postfwd2) as a daemon of its own on a private port; its
    log goes to syslog (with --stdout it would reach the policy client)."""

    def __init__(self, workdir, rules, port):
        self.pidfile = workdir / "postfwd.pid"
        subprocess.run(["/usr/sbin/postfwd", "--file", str(rules), "--interface",
                        "127.0.0.1", "--port", str(port), "--nodns", "--daemon",
                        "--pidfile", str(self.pidfile), "--user", "nobody",
                        "--group", "nogroup"], check=True, timeout=T(20),
                       stdin=subprocess.DEVNULL, capture_output=True)
        wait_for(lambda: _listening(port), T(20), "postfwd listening")

    def stop(self):
        try:
            os.kill(int(self.pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class StallServer:
    """Accepts, reads, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        for c in self.conns:
            c.close()
        self.sock.close()


def test_stalled_server_defers_and_the_loop_goes_on(workdir, start_saslgate,
                                                     start_fake_upstream, stack):
    """A policy server that never answers: after [policy] timeout the RCPT
    gets default_action's 451 4.3.5; meanwhile another session on the same
    worker is served at once (nothing blocks the loop)."""
    st = StallServer()
    stack.append(st)
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": "inet:127.0.0.1:%d" % st.port, "at": "rcpt", "timeout": "2s",
               "default_action": "defer"})
    a = client(sg, "alice")
    assert a.mail("alice@example.org")[0] == 250
    got = {}

    def stalled_rcpt():
        t0 = time.monotonic()
        got["reply"] = a.rcpt("bob@example.net")
        got["secs"] = time.monotonic() - t0

    th = threading.Thread(target=stalled_rcpt)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    b = client(sg, "bob")               # connect, EHLO, AUTH on the same worker
    assert b.mail("bob@example.org")[0] == 250
    assert b.noop()[0] == 250
    other = time.monotonic() - t0
    th.join(T(10))
    assert got["reply"] == (451, b"4.3.5 Server configuration problem"), got
    assert 1.8 <= got["secs"] <= T(4), got
    assert other < 1.0, other           # served while alice's check stalled
    a.quit()
    b.quit()
    log = sg.log_text()
    assert 'result=default_defer reply="451 4.3.5 Server configuration problem" ' \
        'reason="no answer within 2000ms"' in log, log


def test_down_server_dunno_relays(workdir, start_saslgate, start_fake_upstream):
    """default_action = dunno: with the only policy server down, the mail
    goes on unchecked, and the log says so."""
    up = start_fake_upstream()
    down = refused_port()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": "inet:127.0.0.1:%d" % down, "at": "rcpt",
               "default_action": "dunno"})
    c = client(sg, "alice")
    assert [code for code, _ in send(c, "alice@example.org", ["bob@example.net"])] == [250, 250, 250]
    c.quit()
    log = sg.log_text()
    assert "result=default_dunno" in log and "connection refused" in log, log


EOD_RULES = """\
id=R_BIG; protocol_state==END-OF-MESSAGE; size>=%d; action=REJECT message too big for the policy
id=R_LATE; protocol_state==END-OF-MESSAGE; sasl_username==bob; action=PREPEND X-Late: yes
"""


def big_body(n):
    line = b"x" * 76 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (n // len(line) + 1)


def test_end_of_data_postfwd_rejects_big(workdir, start_saslgate, start_fake_upstream, stack):
    """postfwd asked at the end of data (protocol_state END-OF-MESSAGE,
    size): a small message is delivered; a big one gets the policy's 5xx,
    and the upstream never got its end (the connection closed instead);
    the next message on the same session is delivered on a new upstream
    connection.  A PREPEND at that stage is ignored."""
    rules = workdir / "postfwd.cf"
    rules.write_text(EOD_RULES % 20000)
    port = free_port()
    stack.append(Postfwd(workdir, rules, port))
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": "inet:127.0.0.1:%d" % port, "at": "end_of_data", "timeout": "5s"})
    a = client(sg, "alice")
    assert [code for code, _ in send(a, "alice@example.org", ["x@example.net"])] == [250, 250, 250]
    seen = send(a, "alice@example.org", ["x@example.net", "y@example.net"], body=big_body(40000))
    assert seen[3] == (554, b"5.7.1 message too big for the policy"), seen
    assert [code for code, _ in send(a, "alice@example.org", ["z@example.net"])] == [250, 250, 250]
    a.quit()
    b = client(sg, "bob")
    assert [code for code, _ in send(b, "bob@example.org", ["x@example.net"])] == [250, 250, 250]
    b.quit()
    up.wait_for(lambda: len([m for m in up.messages if m.complete]) >= 3, what="3 messages")
    done = [m for m in up.messages if m.complete]
    assert [m.rcpts for m in done] == [["x@example.net"], ["z@example.net"], ["x@example.net"]]
    # the refused message was begun upstream and never ended: how much of
    # its body got there before the connection closed depends on timing
    # (the verdict can come while octets still wait in saslgate's queue)
    cut = [m for m in up.messages if not m.complete]
    assert len(cut) == 1 and cut[0].rcpts == ["x@example.net", "y@example.net"], cut
    assert cut[0].conn != done[1].conn                          # a new connection after
    assert not any(b"X-Late" in m.data for m in up.messages)
    log = sg.log_text()
    lines = [l for l in log.splitlines() if "event=policy " in l]
    assert len(lines) == 4, lines
    assert all("server=inet:127.0.0.1:%d at=end_of_data" % port in l for l in lines), lines
    assert 'result=refuse reply="554 5.7.1 message too big for the policy"' in lines[1], lines
    assert "user=alice" in lines[1] and "from=<alice@example.org> to=<>" in lines[1]
    assert 'action="PREPEND X-Late: yes" result=continue' in lines[3], lines
    assert 'reason="action ignored: the header is already sent"' in lines[3], lines
    assert 'event=upstream_abort upstream=127.0.0.1:%d reason="message refused at the end ' \
        'of data"' % up.port in log, log
    assert 'rcpts=2 size=%d upstream=127.0.0.1:%d reply="554 5.7.1 message too big for the ' \
        'policy"' % (len(big_body(40000)) + 3, up.port) in log, log


def test_end_of_data_postfix(workdir, start_saslgate, start_postfix, stack):
    """Postfix as the upstream: no CHUNKING offered with a policy server;
    the refused message never reaches the queue (Postfix sees the
    connection lost in DATA), the small one is delivered."""
    rules = workdir / "postfwd.cf"
    rules.write_text(EOD_RULES % 20000)
    port = free_port()
    stack.append(Postfwd(workdir, rules, port))
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, pf.port,
              {"server": "inet:127.0.0.1:%d" % port, "at": "end_of_data", "timeout": "5s"})
    a = client(sg, "alice")
    assert not a.has_extn("chunking")
    seen = send(a, "alice@example.org", ["bob@example.net"], body=big_body(40000))
    assert seen[2] == (554, b"5.7.1 message too big for the policy"), seen
    assert [code for code, _ in send(a, "alice@example.org", ["bob@example.net"])] == [250, 250, 250]
    a.quit()
    got = pf.wait_delivered(1)
    assert len(got) == 1
    wait_for(lambda: "lost connection after DATA" in pf.log_text(), T(10),
             "Postfix: lost connection after DATA")
    time.sleep(0.5)
    assert len(re.findall(r"status=sent", pf.log_text())) == 1


@pytest.mark.parametrize("default", ["defer", "dunno"])
def test_end_of_data_down_server(workdir, start_saslgate, start_fake_upstream, default):
    """The only policy server down at the end of data: defer gives the
    message 451 4.3.5 and the upstream never its end; dunno delivers it."""
    up = start_fake_upstream()
    down = refused_port()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": "inet:127.0.0.1:%d" % down, "at": "end_of_data",
               "default_action": default})
    c = client(sg, "alice")
    seen = send(c, "alice@example.org", ["bob@example.net"])
    c.quit()
    log = sg.log_text()
    if default == "defer":
        assert seen[2] == (451, b"4.3.5 Server configuration problem"), seen
        wait_for(lambda: up.messages, T(5), "the message's octets upstream")
        assert not any(m.complete for m in up.messages), up.messages
        assert "at=end_of_data" in log and "result=default_defer" in log, log
    else:
        assert seen[2][0] == 250, seen
        up.wait_for(lambda: any(m.complete for m in up.messages), what="the message")
        assert "at=end_of_data" in log and "result=default_dunno" in log, log


def test_end_of_data_stalled_server_times_out(workdir, start_saslgate, start_fake_upstream,
                                              stack):
    """A policy server that never answers at the end of data: after
    [policy] timeout the message gets 451 4.3.5; a client that closes
    while a check is in flight leaves nothing behind."""
    st = StallServer()
    stack.append(st)
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port,
              {"server": "inet:127.0.0.1:%d" % st.port, "at": "end_of_data",
               "timeout": "1s"})
    c = client(sg, "alice")
    t0 = time.monotonic()
    seen = send(c, "alice@example.org", ["bob@example.net"])
    assert seen[2] == (451, b"4.3.5 Server configuration problem"), seen
    assert 0.8 <= time.monotonic() - t0 <= T(4)
    c.quit()
    # closed mid-check: the session ends, the query is cancelled
    d = client(sg, "bob")
    assert d.mail("bob@example.org")[0] == 250 and d.rcpt("x@example.net")[0] == 250
    d.putcmd("DATA")
    assert d.getreply()[0] == 354
    d.send(b"Subject: s\r\n\r\nhi\r\n.\r\n")
    time.sleep(0.3)
    d.close()
    time.sleep(1.5)
    assert not any(m.complete for m in up.messages), up.messages
    assert sg.proc.poll() is None


def test_end_of_data_passes_check(workdir):
    """at = end_of_data is a stage like the others: -t takes it."""
    db = make_sasldb(workdir / "sasldb2", USERS, realm="sg.test")
    cfg = default_config(workdir, upstream_port=25, sasldb=db,
                         policy={"server": "unix:/run/x.sock", "at": "end_of_data"})
    cfg["listener plain"]["address"] = "127.0.0.1:%d" % free_port()
    path = workdir / "t.conf"
    path.write_text(_ini(cfg))
    r = run_saslgate("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr + r.stdout
