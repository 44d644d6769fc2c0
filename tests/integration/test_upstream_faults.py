# SPDX-License-Identifier: BSD-2-Clause
"""Upstream faults: whatever the MTA behind saslgate does (refuses
the connection, stalls longer than [upstream] connect_timeout / timeout,
closes the connection, answers 4xx at the end of data, drops the connection
in the middle of DATA), the client gets a 4xx for the command in flight,
never a 2xx, and the upstream never records a half message as delivered.
After a one-shot fault a new session delivers normally (the daemon lives).

The upstream is sgtest.FakeUpstream (scripted); the daemon's upstream
timeouts are short (connect_timeout 1s, timeout 2s) and not scaled; the
test's waits are (T()).  Passwords are passed as secrets: the harness checks
at teardown that none is in the log.  See test_abuse.py for client abuse."""

import select
import threading
import time

import pytest

import sgtest
from sgtest import CLOSE, HOST, Raw, Stall, T, default_config, make_cert, make_sasldb, plain_b64, smtp

USER, PW = "ulla", "Ul8-faults.Pw#63"
UP_TIMEOUT = 2.0   # [upstream] timeout (per reply), seconds
STALL = 30         # a stall far longer than any timeout of ours


def start(workdir, start_saslgate, servers, **up):
    cert, key = make_cert(workdir, kind="ecdsa")
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm="sg.test")
    upstream = {"server": ["%s:%d" % (HOST, p) for p in servers],
                "connect_timeout": "1s", "timeout": "%ds" % UP_TIMEOUT}
    upstream.update(up)
    cfg = default_config(workdir, upstream_port=servers[0], cert=cert, key=key, sasldb=db,
                         upstream=upstream, limits={"idle_timeout": "30s"})
    return start_saslgate(cfg, secrets={USER: PW})


def tls_session(sg):
    r = Raw(sg.port("submission"), timeout=20)
    r.expect(220)
    r.expect(250, "EHLO faults.example")
    r.starttls()
    r.expect(250, "EHLO faults.example")
    return r


def timed(fn, *a):
    t0 = time.monotonic()
    v = fn(*a)
    return v, time.monotonic() - t0


def assert_4xx(rep, elapsed, what):
    assert rep is not None, "%s: connection closed without a reply (want 4xx)" % what
    assert 400 <= rep.code < 500, "%s: got %r, want a 4xx" % (what, rep.text)
    # An answer, not a hang: within the daemon's own timeout and a margin.
    assert elapsed < UP_TIMEOUT + T(5), "%s: the 4xx took %.1fs" % (what, elapsed)


def send_ok(sg, marker):
    """A complete, well-behaved session (the daemon lives and recovered)."""
    c = smtp(sg.port("submission"), timeout=20)
    try:
        c.login(USER, PW)
        body = ("Subject: %s\r\nX-Marker: %s\r\n\r\nok\r\n" % (marker, marker)).encode()
        assert c.sendmail("ulla@example.org", ["bob@example.net"], body) == {}
        c.quit()
    finally:
        c.close()


def assert_no_half_delivered(up, allowed=()):
    for m in up.delivered():
        assert any(("X-Marker: %s" % a).encode() in m for a in allowed), \
            "upstream reports delivered a message that was not completed: %r" % m[:300]


# ------------------------------------------------------ before the identity

IDENTITY_FAULTS = {
    "greeting-stall": dict(greeting_delay=STALL),
    "greeting-close": dict(greeting=None),
    "greeting-421": dict(greeting="421 4.3.2 fake.test busy"),
    "ehlo-stall": dict(replies={"EHLO": Stall(STALL, CLOSE)}),
    "ehlo-close": dict(replies={"EHLO": CLOSE}),
    "xclient-stall": dict(replies={"XCLIENT": Stall(STALL, CLOSE)}),
    "xclient-close": dict(replies={"XCLIENT": CLOSE}),
    "xclient-550": dict(replies={"XCLIENT": "550 5.7.0 Error: insufficient authorization"}),
}


@pytest.mark.parametrize("fault", ["refused"] + list(IDENTITY_FAULTS))
def test_upstream_fault_at_auth(workdir, start_saslgate, start_fake_upstream, fault):
    """No upstream takes the identity: AUTH gets 454 4.7.0 in bounded time,
    the session stays unauthenticated (MAIL: 530), nothing is relayed."""
    if fault == "refused":
        up, port = None, sgtest.refused_port()
    else:
        up = start_fake_upstream(**IDENTITY_FAULTS[fault])
        port = up.port
    sg = start(workdir, start_saslgate, [port])
    r = tls_session(sg)
    try:
        rep, dt = timed(r.cmd, "AUTH PLAIN " + plain_b64(USER, PW))
        assert_4xx(rep, dt, "AUTH with upstream fault %s" % fault)
        assert rep.code == 454 and "4.7.0" in rep.text, rep
        r.expect(530, "MAIL FROM:<ulla@example.org>")
        r.expect(221, "QUIT")
    finally:
        r.close()
    assert sg.wait_log(r"event=auth result=tempfail")
    if up is not None:
        assert "MAIL" not in up.verbs() and up.delivered() == []
    # the daemon lives: a new session is greeted and served
    r = Raw(sg.port("plain"))
    try:
        r.expect(220)
        r.expect(250, "EHLO faults.example")
        r.expect(221, "QUIT")
    finally:
        r.close()


def test_upstream_refused_then_next_server(workdir, start_saslgate, start_fake_upstream):
    """Servers are tried in order: a refused first one, then a working one."""
    up = start_fake_upstream()
    sg = start(workdir, start_saslgate, [sgtest.refused_port(), up.port])
    send_ok(sg, "failover")
    up.wait_for(lambda: len(up.delivered()) == 1, 10, "the message upstream")
    assert b"X-Marker: failover" in up.delivered()[0]



def test_upstream_by_name_and_unresolvable_name(workdir, start_saslgate, start_fake_upstream):
    """A server given by name goes through the resolver (literal addresses
    are parsed in place); a name that does not resolve is skipped like a
    refused server and the next one takes the mail."""
    up = start_fake_upstream()
    cert, key = make_cert(workdir, kind="ecdsa")
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm="sg.test")
    upstream = {"server": ["no-such-host.invalid:%d" % up.port, "localhost:%d" % up.port],
                "connect_timeout": "1s", "timeout": "%ds" % UP_TIMEOUT}
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key, sasldb=db,
                         upstream=upstream, limits={"idle_timeout": "30s"})
    sg = start_saslgate(cfg, secrets={USER: PW})
    send_ok(sg, "by-name")
    up.wait_for(lambda: len(up.delivered()) == 1, 10, "the message upstream")
    assert b"X-Marker: by-name" in up.delivered()[0]
    log = sg.log_text()
    assert "no-such-host.invalid" in log and "resolve" in log, log[-2000:]

# ------------------------------------------------------ in the transaction

TXN_FAULTS = {
    "mail-stall": ("MAIL", dict(replies={"MAIL": [Stall(STALL, CLOSE), "250 2.1.0 Ok"]})),
    "mail-close": ("MAIL", dict(replies={"MAIL": [CLOSE, "250 2.1.0 Ok"]})),
    "mail-421": ("MAIL", dict(replies={"MAIL": ["421 4.3.0 fake.test shutting down",
                                                "250 2.1.0 Ok"]})),
    "rcpt-stall": ("RCPT", dict(replies={"RCPT": [Stall(STALL, CLOSE), "250 2.1.5 Ok"]})),
    "rcpt-close": ("RCPT", dict(replies={"RCPT": [CLOSE, "250 2.1.5 Ok"]})),
    "data-stall": ("DATA", dict(replies={"DATA": [Stall(STALL, CLOSE), "354 go ahead"]})),
    "data-close": ("DATA", dict(replies={"DATA": [CLOSE, "354 go ahead"]})),
    "dot-451": ("DOT", dict(replies={"DOT": ["451 4.3.0 Error: queue file write error",
                                             "250 2.0.0 Ok: queued as FAKE{n}"]})),
    "dot-stall": ("DOT", dict(replies={"DOT": [Stall(STALL, CLOSE),
                                               "250 2.0.0 Ok: queued as FAKE{n}"]})),
    "dot-close": ("DOT", dict(replies={"DOT": [CLOSE, "250 2.0.0 Ok: queued as FAKE{n}"]})),
    "close-mid-data": ("BODY", dict(close_in_data=3000)),
}


@pytest.mark.parametrize("fault", list(TXN_FAULTS))
def test_upstream_fault_in_transaction(workdir, start_saslgate, start_fake_upstream, fault):
    """After AUTH, the upstream stalls, closes or answers 4xx at MAIL, RCPT,
    DATA, the end of data, or drops the connection mid-body: the client gets
    a 4xx for the command in flight (never a 2xx), the upstream delivered
    nothing, and (one-shot faults) the next session delivers normally."""
    at, kw = TXN_FAULTS[fault]
    up = start_fake_upstream(**kw)
    sg = start(workdir, start_saslgate, [up.port])
    r = tls_session(sg)
    try:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        rep, dt = _drive(r, at)
        assert_4xx(rep, dt, fault)
    finally:
        r.close()
    time.sleep(0.3)
    assert_no_half_delivered(up)
    if fault == "close-mid-data":
        # the body did reach the upstream, cut: never delivered
        assert up.messages and not up.messages[0].complete, up.messages
        return
    send_ok(sg, "after-" + fault)
    up.wait_for(lambda: len(up.delivered()) >= 1, 10, "the next message upstream")
    assert_no_half_delivered(up, allowed=["after-" + fault])


def _drive(r, at):
    """Run a transaction up to the faulty step -> (its reply or None, seconds)."""
    for verb, line, ok in (("MAIL", "MAIL FROM:<ulla@example.org>", 250),
                           ("RCPT", "RCPT TO:<bob@example.net>", 250),
                           ("DATA", "DATA", 354)):
        rep, dt = timed(r.cmd, line)
        if at == verb:
            return rep, dt
        assert rep.code == ok, "%s before the fault: %r" % (verb, rep)
    # The body and the final dot in chunks, from this thread (an SSL socket
    # must not be written and read by two threads at once), stopping early
    # when the server has something to say (it may answer, and close,
    # before it has read everything).
    body = b"Subject: half\r\nX-Marker: half-message\r\n\r\n" + b"0123456789abcdef\r\n" * 2048
    data = body + b".\r\n"
    t0 = time.monotonic()
    for off in range(0, len(data), 4096):
        if select.select([r.sock], [], [], 0)[0]:
            break
        try:
            r.send(data[off:off + 4096])
        except OSError:
            break
    try:
        rep = r.reply(timeout=UP_TIMEOUT + 10)
    except ConnectionError:
        rep = None
    return rep, time.monotonic() - t0


# ------------------------------------------------------ hostile upstream

GARBAGE = {
    # a reply that is no SMTP reply at all
    "mail-garbage": ("MAIL", ["hello there, I am not SMTP", "250 2.1.0 Ok"]),
    # a reply line far over any sane length (RFC 5321: 512)
    "rcpt-long-line": ("RCPT", ["250 2.1.5 " + "x" * 200000, "250 2.1.5 Ok"]),
    # an endless multi-line reply (10,000 lines)
    "data-many-lines": ("DATA", ["\n".join(["354 go"] * 10000), "354 go ahead"]),
}


@pytest.mark.parametrize("fault", list(GARBAGE))
def test_upstream_garbage_reply(workdir, start_saslgate, start_fake_upstream, fault):
    """An upstream answering garbage, an overlong line or an endless reply:
    the client gets a 4xx for the command in flight (never a 2xx nor the
    garbage), nothing is delivered, and the next session works."""
    verb, reply = GARBAGE[fault]
    up = start_fake_upstream(replies={verb: reply})
    sg = start(workdir, start_saslgate, [up.port])
    r = tls_session(sg)
    try:
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        try:
            rep, dt = _drive(r, verb)
        except ConnectionError:
            rep, dt = None, 0
        assert_4xx(rep, dt, fault)
        assert "not SMTP" not in rep.text and len(rep.text) < 4096, rep.text[:200]
    finally:
        r.close()
    time.sleep(0.3)
    assert_no_half_delivered(up)
    send_ok(sg, "after-" + fault)
    up.wait_for(lambda: len(up.delivered()) >= 1, 10, "the next message upstream")


def test_upstream_stall_does_not_block_other_sessions(workdir, start_saslgate,
                                                      start_fake_upstream):
    """An upstream that never greets while 10 clients authenticate at once:
    each gets 454 4.7.0 within the timeouts, and meanwhile saslgate keeps
    answering other clients at once (nothing blocks its event loop)."""
    up = start_fake_upstream(greeting_delay=STALL)
    sg = start(workdir, start_saslgate, [up.port])
    results, errors = [], []

    def client():
        try:
            r = tls_session(sg)
            try:
                results.append(timed(r.cmd, "AUTH PLAIN " + plain_b64(USER, PW)))
            finally:
                r.close()
        except Exception as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=client, daemon=True) for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # while the ten wait for the upstream: a new session is served at once
    lat = []
    for _ in range(5):
        r = Raw(sg.port("plain"))
        try:
            t0 = time.monotonic()
            r.expect(220)
            r.expect(250, "EHLO other.example")
            r.expect(250, "NOOP")
            lat.append(time.monotonic() - t0)
            r.expect(221, "QUIT")
        finally:
            r.close()
        time.sleep(0.1)
    for t in threads:
        t.join(T(30))
    assert not errors, errors
    assert len(results) == 10
    for rep, dt in results:
        assert_4xx(rep, dt, "AUTH while the upstream never greets")
        assert rep.code == 454, rep
    assert max(lat) < T(0.5), "other sessions waited %.2fs" % max(lat)
