# SPDX-License-Identifier: BSD-2-Clause
"""Self-tests of the harness (sgtest.py) without saslgate: they prove that
the real parts (Postfix with XCLIENT, smtp-sink, saslauthd, saslpasswd2,
openssl, swaks) are installed and behave as the saslgate tests assume."""

import smtplib
import socket
import subprocess
import time

import pytest

import sgtest
from sgtest import Raw, make_ca, make_cert, make_leaf, make_sasldb


def _send(port, xclient=None, login=None, rcpt="bob@example.net", body=b"Subject: t\r\n\r\nhi\r\n"):
    c = smtplib.SMTP(sgtest.HOST, port, local_hostname="client.test", timeout=30)
    try:
        c.ehlo()
        if xclient:
            code, msg = c.docmd("XCLIENT " + xclient)
            assert code == 220, (code, msg)
            c.ehlo()
        if login:
            c.login(*login)
        return c.sendmail("alice@example.org", [rcpt], body)
    finally:
        c.close()


def test_postfix_xclient_login_relays_and_delivers(start_postfix):
    pf = start_postfix()
    assert _send(pf.port, xclient="LOGIN=alice ADDR=192.0.2.7 NAME=[UNAVAILABLE] PROTO=ESMTP",
                 body=b"Subject: harness\r\n\r\nxclient body\r\n") == {}
    msgs = pf.wait_delivered(1)
    assert len(msgs) == 1
    ids = pf.queue_ids()
    assert len(ids) == 1
    m = msgs[0]
    assert b"xclient body" in m
    # Postfix took the identity: the client address from XCLIENT, ESMTPA
    # (RFC 3848: authenticated) and its queue id in the Received header.
    assert (b"with ESMTPA id " + ids[0].encode()) in m
    assert b"192.0.2.7" in m
    assert "sasl_username=alice" in pf.log_text()


def test_postfix_refuses_relay_without_identity(start_postfix):
    pf = start_postfix()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        _send(pf.port)
    assert e.value.recipients["bob@example.net"][0] == 554
    time.sleep(0.5)
    assert pf.delivered() == []


def test_postfix_xclient_refused_for_unauthorized_host(start_postfix):
    pf = start_postfix(xclient_hosts="192.0.2.1")
    c = smtplib.SMTP(sgtest.HOST, pf.port, timeout=30)
    try:
        c.ehlo()
        assert "xclient" not in c.esmtp_features
        code, _ = c.docmd("XCLIENT LOGIN=alice")
        assert code == 550
    finally:
        c.close()


def test_postfix_auth_with_its_own_sasldb(start_postfix):
    pf = start_postfix(sasl_users={"relay": "R3lay-pw.77"})
    assert _send(pf.port, login=("relay", "R3lay-pw.77")) == {}
    pf.wait_delivered(1)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        _send(pf.port, login=("relay", "wrong-pw"))


def test_smtp_sink_dumps_messages(start_smtp_sink):
    sink = start_smtp_sink()
    _send(sink.port, body=b"Subject: s\r\n\r\nsink body\r\n")
    msgs = sink.wait_messages(1)
    assert len(msgs) == 1 and b"sink body" in msgs[0]
    assert b"X-Mail-Args: <alice@example.org>" in msgs[0]


def test_swaks_is_usable(start_smtp_sink):
    sink = start_smtp_sink()
    p = sgtest.swaks("--server", "%s:%d" % (sgtest.HOST, sink.port), "--to", "bob@example.net",
                     "--from", "alice@example.org", "--body", "swaks body")
    assert p.returncode == 0, p.stdout + p.stderr
    assert b"swaks body" in sink.wait_messages(1)[0]


def test_saslauthd_shadow_backend(start_saslauthd):
    sa = start_saslauthd({"sgtharness1": "Sh4dow-pw.1"})
    assert sa.check("sgtharness1", "Sh4dow-pw.1")
    assert not sa.check("sgtharness1", "wrong")
    assert not sa.check("sgtnosuchuser", "Sh4dow-pw.1")
    sa.stop()
    assert subprocess.run(["getent", "passwd", "sgtharness1"]).returncode == 2


def test_saslauthd_refuses_existing_user(start_saslauthd):
    with pytest.raises(RuntimeError):
        start_saslauthd({"root": "x"})


def test_make_sasldb(workdir):
    db = make_sasldb(workdir / "sasldb2", {"alice": "A-pw.1", "bob": "B-pw.2"}, realm="ex.test")
    out = subprocess.run(["sasldblistusers2", "-f", str(db)], capture_output=True, text=True,
                         timeout=10).stdout
    assert "alice@ex.test" in out and "bob@ex.test" in out


@pytest.mark.parametrize("kind,algo", [("rsa", "rsaEncryption"), ("ecdsa", "id-ecPublicKey")])
def test_make_cert(workdir, kind, algo):
    cert, key = make_cert(workdir, kind)
    txt = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"],
                         capture_output=True, text=True, timeout=10).stdout
    assert algo in txt and "CN = localhost" in txt


def test_make_leaf_chain_verifies(workdir):
    ca = make_ca(workdir)
    chain, key = make_leaf(workdir, ca, "mail.test")
    p = subprocess.run(["openssl", "verify", "-CAfile", str(ca[0]), str(chain)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stdout + p.stderr


def test_fake_upstream_records_a_message(start_fake_upstream):
    f = start_fake_upstream()
    r = Raw(f.port)
    r.expect(220)
    e = r.expect(250, "EHLO me")
    assert "XCLIENT" in e.text and "PIPELINING" in e.text and len(e.lines) > 3
    r.expect(220, "XCLIENT LOGIN=alice ADDR=127.0.0.1")
    r.expect(250, "MAIL FROM:<a@x.test>")
    r.expect(250, "RCPT TO:<b@y.test>")
    r.expect(354, "DATA")
    r.send(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n")
    assert "queued as FAKE1" in r.reply().text
    r.expect(221, "QUIT")
    r.close()
    assert f.delivered() == [b"Subject: x\r\n\r\n..dot\r\nbody\r\n"]
    assert f.verbs() == ["EHLO", "XCLIENT", "MAIL", "RCPT", "DATA", "QUIT"]
    assert f.messages[0].rcpts == ["b@y.test"] and f.messages[0].mail_from == "a@x.test"


def test_fake_upstream_faults(start_fake_upstream):
    f = start_fake_upstream(replies={"RCPT": ["451 4.3.0 later", "250 2.1.5 ok"],
                                     "DOT": "554 5.6.0 no"})
    r = Raw(f.port)
    r.expect(220)
    r.expect(250, "EHLO me")
    r.expect(250, "MAIL FROM:<a@x.test>")
    r.expect(451, "RCPT TO:<b@y.test>")
    r.expect(250, "RCPT TO:<c@y.test>")
    r.expect(354, "DATA")
    r.send(b"hi\r\n.\r\n")
    r.expect(554)
    r.close()
    assert f.messages[0].complete and f.messages[0].rcpts == ["c@y.test"]
    assert f.delivered() == []  # answered 5xx: not delivered


def test_fake_upstream_close_mid_data(start_fake_upstream):
    f = start_fake_upstream(close_in_data=10)
    r = Raw(f.port)
    r.expect(220)
    r.expect(250, "EHLO me")
    r.expect(250, "MAIL FROM:<a@x.test>")
    r.expect(250, "RCPT TO:<b@y.test>")
    r.expect(354, "DATA")
    r.send(b"0123456789abcdef\r\n")
    assert r.closed(5)
    f.wait_for(lambda: f.messages and len(f.messages[0].data) == 10)
    assert not f.messages[0].complete and f.delivered() == []


def test_fake_upstream_stall_close_and_refused(start_fake_upstream):
    f = start_fake_upstream(replies={"MAIL": sgtest.Stall(1.0, "250 2.1.0 late"),
                                     "RCPT": sgtest.CLOSE})
    r = Raw(f.port)
    r.expect(220)
    r.expect(250, "EHLO me")
    t0 = time.monotonic()
    r.expect(250, "MAIL FROM:<a@x.test>")
    assert time.monotonic() - t0 >= 0.9
    r.line("RCPT TO:<b@y.test>")
    assert r.closed(5)
    g = start_fake_upstream(greeting=None)
    r2 = Raw(g.port)
    assert r2.closed(5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sgtest.HOST, sgtest.refused_port()), timeout=5)


def test_fake_upstream_auth(start_fake_upstream):
    f = start_fake_upstream(auth={"relay": "Up-pw.9"})
    r = Raw(f.port)
    r.expect(220)
    assert "AUTH PLAIN LOGIN" in r.expect(250, "EHLO me").text
    r.expect(535, "AUTH PLAIN " + sgtest.plain_b64("relay", "bad"))
    r.expect(235, "AUTH PLAIN " + sgtest.plain_b64("relay", "Up-pw.9"))
    assert f.auth_users == ["relay"]


def test_secret_forms_cover_plain_and_login():
    forms = sgtest.secret_forms({"alice": "Al1ce-pw"})
    assert "Al1ce-pw" in forms
    assert sgtest.b64("Al1ce-pw") in forms                    # LOGIN
    assert sgtest.b64("\0alice\0Al1ce-pw") in forms           # PLAIN


FAKE_DAEMON = """#!/usr/bin/python3
import signal, sys, time
sys.stderr.write(%r)
sys.stderr.write("info: ready: fake\\n")
sys.stderr.flush()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(%d))
for _ in range(600):
    time.sleep(0.1)
"""


@pytest.mark.parametrize("text,status,problem", [
    ("info: event=auth result=ok user=alice\n", 0, None),
    ("debug: got Al1ce-pw.77\n", 0, "credential"),
    ("debug: got %s\n" % sgtest.plain_b64("alice", "Al1ce-pw.77"), 0, "credential"),
    ("debug: got %s\n" % sgtest.b64("Al1ce-pw.77"), 0, "credential"),
    ("==1==ERROR: AddressSanitizer: heap-use-after-free\n", 0, "sanitizer"),
    ("x.c:1:2: runtime error: signed integer overflow\n", 0, "sanitizer"),
    ("", 3, "status 3"),
])
def test_saslgate_teardown_checks_catch_problems(workdir, monkeypatch, text, status, problem):
    """The checks the harness runs on every saslgate at teardown do fail."""
    fake = workdir / "fake-saslgate"
    fake.write_text(FAKE_DAEMON % (text, status))
    fake.chmod(0o755)
    monkeypatch.setattr(sgtest, "SASLGATE_BIN", str(fake))
    sg = sgtest.Saslgate(workdir, {"server": {"workers": 1}},
                         secrets={"alice": "Al1ce-pw.77"})
    try:
        problems = sg.finish()
    finally:
        sg.kill()
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
