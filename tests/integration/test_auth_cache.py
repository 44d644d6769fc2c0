# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of the credential cache ([sasl] cache_size, cache_ttl,
cache_negative_ttl; sasl/authcache.c): the real binary in front of a real
saslauthd (shadow, throwaway system users) that the test starts, stops
with SIGSTOP to prove a login was answered without it, and counts the
checks of (its -d log has one line per check).

What a user of the cache observes: a repeated login is answered at once,
with the same 235 and identity, while saslauthd is frozen; a wrong password
is never answered from the right one's entry (it waits for the backend); a
cached failure still takes failure_delay and counts toward max_failures; a
password changed in the backend counts once cache_ttl has passed; SIGHUP
empties the cache; the metrics count hits and misses."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from sgtest import HOST, Raw, T, b64, default_config, free_port, plain_b64, wait_for

# saslauthd -a shadow needs system users: names unique to this file
USER, PW, PW2 = "sgcachetest1", "Ca-che.pw1x", "Ca-che.pw2y"
WRONG = "not-the-pw-9"
TTL = 4.0
DELAY = 1.0


def backend_checks(sa, what):
    """saslauthd's checks of USER so far: 'success' or 'failure'."""
    return len(re.findall(r"auth %s: \[user=%s\]" % (what, USER), sa.log_text()))


def auth_lines(sg):
    return re.findall(r"event=auth [^\n]*", sg.log_text())


class AuthLog:
    """The event=auth lines of saslgate's log, one by one as they come (a
    line may reach the log just after its reply reaches the client)."""

    def __init__(self, sg):
        self.sg, self.seen = sg, 0

    def next(self):
        lines = wait_for(lambda: auth_lines(self.sg)[self.seen:], T(5), "an event=auth line")
        self.seen += 1
        return lines[0]


def session(sg):
    r = Raw(sg.port("plain"))
    r.expect(220)
    r.expect(250, "EHLO client.test")
    return r


class Frozen:
    """saslauthd and its workers stopped (SIGSTOP to its process group)."""

    def __init__(self, sa):
        self.pgid = sa.proc.pid  # started in a session of its own

    def __enter__(self):
        os.killpg(self.pgid, signal.SIGSTOP)
        return self

    def thaw(self):
        os.killpg(self.pgid, signal.SIGCONT)

    def __exit__(self, *exc):
        self.thaw()


def no_answer(r, seconds=1.0):
    """Nothing comes back within seconds (not scaled: the backend is
    frozen, so nothing may come at all)."""
    r.sock.settimeout(seconds)
    try:
        data = r.sock.recv(4096)
    except socket.timeout:
        return True
    finally:
        r.sock.settimeout(r.timeout)
    raise AssertionError("answered without the backend: %r" % data)


def timed(r, line, timeout=10):
    t0 = time.monotonic()
    rep = r.cmd(line, timeout=timeout)
    return rep, time.monotonic() - t0


def scrape(port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, port), timeout=T(10)) as h:
        text = h.read().decode()
    return {res: int(n) for res, n in
            re.findall(r'^saslgate_auth_cache_total\{result="(hit|miss)"\} (\d+)$', text, re.M)}


def test_auth_cache(workdir, start_saslgate, start_saslauthd, start_fake_upstream):
    sa = start_saslauthd(users={USER: PW})
    up = start_fake_upstream()
    mport = free_port()
    cfg = default_config(workdir, upstream_port=up.port, saslauthd=sa,
                         metrics={"address": "%s:%d" % (HOST, mport)},
                         sasl={"failure_delay": "%gs" % DELAY, "max_failures": 2,
                               "mech_list": "PLAIN LOGIN", "cache_size": 100,
                               "cache_ttl": "%gs" % TTL, "cache_negative_ttl": "60s"})
    # two workers: the cache is shared, whichever worker takes the session
    cfg["server"]["workers"] = 2
    sg = start_saslgate(cfg, secrets={USER: PW})
    log = AuthLog(sg)

    # A: the first login asks saslauthd
    t_stored = time.monotonic()
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
    assert backend_checks(sa, "success") == 1
    assert log.next() == "event=auth result=ok user=%s client=127.0.0.1 mech=PLAIN" % USER

    # B: saslauthd frozen; PLAIN and LOGIN, with and without an initial
    # response, on new sessions: 235 at once (a backend call would wait for
    # 10 s, then 454), the same identity, relayed upstream as usual
    with Frozen(sa):
        ways = (("PLAIN", [("AUTH PLAIN " + plain_b64(USER, PW), 235)]),
                ("PLAIN", [("AUTH PLAIN", 334), (plain_b64(USER, PW), 235)]),
                ("LOGIN", [("AUTH LOGIN", 334), (b64(USER), 334), (b64(PW), 235)]),
                ("LOGIN", [("AUTH LOGIN " + b64(USER), 334), (b64(PW), 235)]))
        for mech, steps in ways:
            with session(sg) as r:
                for line, code in steps:
                    rep, took = timed(r, line)
                    assert rep.code == code, (mech, line, rep.text)
                assert took < T(1.5), (mech, took)
                r.expect(250, "MAIL FROM:<%s@example.org>" % USER)
        assert time.monotonic() - t_stored < TTL, "too slow to test within cache_ttl"
    for mech in ("PLAIN", "PLAIN", "LOGIN", "LOGIN"):
        assert log.next() == ("event=auth result=ok user=%s client=127.0.0.1 mech=%s "
                              "cached=yes" % (USER, mech))
    assert backend_checks(sa, "success") == 1
    # the upstream was told the same login for each of them
    logins = [v for k, v in up.attributes("XCLIENT") if k == "LOGIN"]
    assert logins == [USER.encode()] * 5, logins

    # C: the password changes in the backend.  Within cache_ttl the old one
    # is still answered from the cache; the new one asks the backend; once
    # cache_ttl has passed since the old one was stored, it gets 535.
    subprocess.run(["chpasswd"], input="%s:%s\n" % (USER, PW2), text=True, check=True)
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
    assert log.next().endswith("mech=PLAIN cached=yes")
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW2))
    assert not log.next().endswith("cached=yes")
    assert backend_checks(sa, "success") == 2
    time.sleep(max(0.0, TTL + 0.2 - (time.monotonic() - t_stored)))
    with session(sg) as r:
        r.expect(535, "AUTH PLAIN " + plain_b64(USER, PW))
    assert re.fullmatch(r"event=auth result=fail user=%s client=127\.0\.0\.1 mech=PLAIN"
                        % USER, log.next())
    assert backend_checks(sa, "failure") == 1

    # D: a wrong password is never answered from the right one's entry:
    # with PW2 cached and saslauthd frozen, it gets no answer (it waits for
    # the backend); thawed, the backend says 535; PW2 still logs in at once
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW2))
    log.next()
    with Frozen(sa) as fz, session(sg) as r:
        r.line("AUTH PLAIN " + plain_b64(USER, WRONG))
        no_answer(r)
        fz.thaw()
        assert r.reply().text.startswith("535 5.7.8")
    assert not log.next().endswith("cached=yes")
    fails = backend_checks(sa, "failure")
    with Frozen(sa), session(sg) as r:
        rep, took = timed(r, "AUTH PLAIN " + plain_b64(USER, PW2))
        assert rep.code == 235 and took < T(1.5), (rep.text, took)
    assert log.next().endswith("mech=PLAIN cached=yes")
    # ... and the wrong one is now a cached failure: answered without
    # saslauthd, but only after failure_delay, and counted (max_failures =
    # 2: 535, then 421)
    with Frozen(sa), session(sg) as r:
        for i in range(2):
            rep, took = timed(r, "AUTH PLAIN " + plain_b64(USER, WRONG))
            assert rep.text.startswith("535 5.7.8"), rep.text
            assert DELAY * 0.9 <= took < DELAY + T(1.5), took
        assert r.reply().text.startswith("421 4.7.0")
    for l in (log.next(), log.next()):
        assert l == ("event=auth result=fail user=%s client=127.0.0.1 mech=PLAIN cached=yes"
                     % USER), l
    assert backend_checks(sa, "failure") == fails

    # every hit is a cached=yes line, every miss one saslauthd check
    assert log.seen == len(auth_lines(sg))
    assert scrape(mport) == {
        "hit": len([l for l in auth_lines(sg) if "cached=yes" in l]),
        "miss": backend_checks(sa, "success") + backend_checks(sa, "failure")}

    # E: SIGHUP empties the cache: the next login asks saslauthd again
    for _ in range(2):  # stored again if it had expired, then a hit
        with session(sg) as r:
            r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW2))
        last = log.next()
    assert last.endswith("cached=yes")
    oks = backend_checks(sa, "success")
    sg.reload()
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW2))
    assert not log.next().endswith("cached=yes")
    assert backend_checks(sa, "success") == oks + 1
    with Frozen(sa), session(sg) as r:
        r.line("AUTH PLAIN " + plain_b64(USER, WRONG))
        no_answer(r)  # the failure cached before SIGHUP is gone too


def test_cache_off_by_default(workdir, start_saslgate, start_saslauthd, start_fake_upstream):
    """Without cache_size every login asks the backend: a frozen saslauthd
    leaves even a login that just succeeded unanswered."""
    sa = start_saslauthd(users={"sgcachetest2": PW})
    up = start_fake_upstream()
    cfg = default_config(workdir, upstream_port=up.port, saslauthd=sa,
                         sasl={"mech_list": "PLAIN LOGIN"})
    sg = start_saslgate(cfg, secrets={"sgcachetest2": PW})
    with session(sg) as r:
        r.expect(235, "AUTH PLAIN " + plain_b64("sgcachetest2", PW))
    with Frozen(sa), session(sg) as r:
        r.line("AUTH PLAIN " + plain_b64("sgcachetest2", PW))
        no_answer(r)
    assert "cached=yes" not in sg.log_text()
