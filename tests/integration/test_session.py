# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of the client-side SMTP session (proxy/session.c,
commands.c, reply.c, smtp_parse.c): what a client sees, in transcripts.

Upstream is the harness' scripted FakeUpstream unless a test needs the real
Postfix.  The sasldb realm is the greeting host name (sg.test): Cyrus looks
users up as user@<server FQDN> when [sasl] realm is empty."""

import re
import socket
import struct
import subprocess
import time

import pytest

from sgtest import (HOST, SANITIZE, Raw, Stall, T, b64, default_config, make_cert,
                    make_sasldb, plain_b64, smtp, smtps, wait_for)

USER, PW = "alice", "Al1ce-sess.pw9"
SECRETS = {USER: PW}


@pytest.fixture
def env(workdir, start_fake_upstream):
    """(cert, key, sasldb, fake upstream)"""
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = start_fake_upstream()
    return cert, key, db, up


def gate(start_saslgate, workdir, env, **sections):
    cert, key, db, up = env
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key, sasldb=db,
                         **sections)
    return start_saslgate(cfg, secrets=SECRETS)


def ehlo_keywords(reply):
    return [l[4:] for l in reply.lines[1:]]


def auth_plain(r, user=USER, pw=PW):
    return r.cmd("AUTH PLAIN " + plain_b64(user, pw))


# ---------------------------------------------------------------- greeting, EHLO

def test_greeting_and_ehlo_before_and_after_starttls(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("submission")) as r:
        g = r.reply()
        assert g.code == 220 and g.text == "220 sg.test ESMTP"
        e = r.expect(250, "EHLO client.test")
        kw = ehlo_keywords(e)
        assert e.lines[0] == "250-sg.test"
        for k in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"):
            assert k in kw, e.text
        assert "SIZE 52428800" in kw  # default max_message_size 50M
        assert not any(k.startswith("AUTH") for k in kw), "AUTH offered before TLS"
        # AUTH before TLS where TLS is required: 538 (RFC 4954 6)
        r.expect(538, "AUTH PLAIN " + plain_b64(USER, PW))
        r.starttls()
        kw = ehlo_keywords(r.expect(250, "EHLO client.test"))
        assert "STARTTLS" not in kw
        assert "AUTH PLAIN LOGIN" in kw
        assert r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW)).text.startswith("235 2.7.0")
        r.expect(221, "QUIT")
    # the plain listener (require_tls_for_auth = no) offers AUTH in the clear
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        kw = ehlo_keywords(r.expect(250, "EHLO client.test"))
        assert "AUTH PLAIN LOGIN" in kw and "STARTTLS" not in kw
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(503, "AUTH PLAIN " + plain_b64(USER, PW))  # already authenticated


def test_simple_commands(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(503, "MAIL FROM:<a@example.org>")      # no EHLO yet
        assert r.expect(250, "HELO client.test").text == "250 sg.test"
        r.expect(250, "NOOP")
        r.expect(250, "RSET")
        assert r.expect(252, "VRFY alice").text.startswith("252 2.0.0")
        assert r.expect(214, "HELP").text.startswith("214")
        assert r.expect(502, "EXPN staff").text.startswith("502 5.5.1")
        r.expect(501, "EHLO")                           # no domain
        r.expect(530, "MAIL FROM:<a@example.org>")      # require_auth
        r.expect(503, "RCPT TO:<b@example.org>")
        r.expect(503, "DATA")
        assert r.expect(221, "QUIT").text.startswith("221 2.0.0")
        assert r.closed()


def test_openssl_s_client_starttls_and_implicit(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    for args in (["-starttls", "smtp", "-connect", "%s:%d" % (HOST, sg.port("submission"))],
                 ["-connect", "%s:%d" % (HOST, sg.port("submissions"))]):
        p = subprocess.run(["openssl", "s_client", "-quiet", "-crlf", *args],
                           input="EHLO client.test\nQUIT\n", capture_output=True,
                           text=True, timeout=T(30))
        assert "250-AUTH PLAIN LOGIN" in p.stdout, p.stdout + p.stderr
        assert "221 2.0.0" in p.stdout
        if "-starttls" not in args:
            assert "220 sg.test ESMTP" in p.stdout  # greeting after the handshake
    assert re.search(r"event=tls result=ok client=127\.0\.0\.1 version=TLSv1\.[23]",
                     sg.log_text())


def test_implicit_tls_send(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    up = env[3]
    c = smtps(sg.port("submissions"))
    assert "starttls" not in c.esmtp_features
    c.login(USER, PW)
    c.sendmail("alice@example.org", ["bob@example.net"], b"Subject: t\r\n\r\nhello\r\n")
    c.quit()
    assert len(up.delivered()) == 1
    log = sg.wait_log(r"event=disconnect .*reason=quit").group(0)
    assert "tls=TLSv1." in log and "user=alice" in log and "msgs=1" in log
    assert "queue_ids=FAKE" in log
    assert re.search(r'event=message user=alice from=<alice@example.org> rcpts=1 size=\d+ '
                     r'upstream=\S+ reply="250 2\.0\.0 Ok: queued as FAKE', sg.log_text())


# ---------------------------------------------------------------- STARTTLS

def test_starttls_discards_pipelined_plaintext(workdir, env, start_saslgate):
    """CVE-2011-0411: commands sent with STARTTLS in one packet are dropped."""
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("submission")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.send(b"STARTTLS\r\nRSET\r\nNOOP\r\n")
        assert r.reply().code == 220
        time.sleep(0.2)
        r.tls_wrap()
        # if the injected RSET/NOOP had run, their 250s would come first
        e = r.expect(250, "EHLO client.test")
        assert e.lines[0] == "250-sg.test", e.text
        r.expect(250, "NOOP")
    sg.wait_log(r"STARTTLS: discarded 12 plaintext octets")


def test_starttls_resets_session(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("submission")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.starttls()
        r.expect(503, "MAIL FROM:<alice@example.org>")   # EHLO forgotten
        r.expect(250, "EHLO client.test")
        assert r.cmd("STARTTLS").code == 503              # TLS already active
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("STARTTLS").text.startswith("454 4.7.0")


def test_tls_handshake_failure_closes_and_logs(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("submissions")) as r:
        r.send(b"EHLO not-tls\r\n" * 4)
        assert r.closed()
    sg.wait_log(r"event=tls result=fail client=127\.0\.0\.1 reason=")
    sg.wait_log(r"event=disconnect .*reason=tls error")


# ---------------------------------------------------------------- limits, errors

def test_line_length_limit(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        # exactly 4096 octets with CRLF: parsed (NOOP takes any argument)
        r.send(b"NOOP " + b"x" * (4096 - 7) + b"\r\n")
        r.expect(250)
        # 4097 octets: 500 5.5.2, and the session goes on with the next line
        r.send(b"NOOP " + b"x" * (4097 - 7) + b"\r\n")
        assert r.reply().text.startswith("500 5.5.2")
        # a 100 kB line in pieces: one 500, memory stays bounded
        for _ in range(10):
            r.send(b"y" * 10000)
        r.send(b"\r\nNOOP\r\n")
        assert r.reply().text.startswith("500 5.5.2")
        r.expect(250)
        # a control octet never reaches a command, let alone the upstream
        r.send(b"NO\x00OP\r\n")
        assert r.reply().text.startswith("501 5.5.2")
        r.send(b"NOOP a\rb\r\n")
        assert r.reply().text.startswith("501 5.5.2")
        r.expect(221, "QUIT")


def test_eleventh_error_is_421(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        for i in range(10):
            assert r.cmd("BOGUS%d" % i).text.startswith("502 5.5.1")
        assert r.cmd("BOGUS").text.startswith("421 4.7.0")
        assert r.closed()
    sg.wait_log(r"event=disconnect .*reason=too many errors")


def test_proxy_line_without_proxy_protocol_is_unknown(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        assert r.cmd("PROXY TCP4 192.0.2.7 192.0.2.1 40000 587").code == 502


def test_idle_timeout_and_slowloris(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env, limits={"idle_timeout": "1s"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        t0 = time.monotonic()
        assert r.reply(timeout=5).text.startswith("421 4.4.2")
        assert time.monotonic() - t0 < T(3)
        assert r.closed()
    # a byte every 0.2 s without a line end does not keep the session alive
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        t0 = time.monotonic()
        closed = False
        for _ in range(25):
            try:
                r.send(b"N")
            except OSError:
                closed = True
                break
            if r.closed(timeout=0.2):
                closed = True
                break
        assert closed, "slow sender kept the session open"
        assert time.monotonic() - t0 < T(4)
    sg.wait_log(r"reason=idle timeout")


def test_max_connections(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env, server={"max_connections": 2})
    a, b = Raw(sg.port("plain")), Raw(sg.port("plain"))
    try:
        a.expect(220)
        b.expect(220)
        with Raw(sg.port("plain")) as c:
            assert c.reply().text.startswith("421 4.7.0")
            assert c.closed()
        a.expect(221, "QUIT")
        assert a.closed()
        # a slot is free again once the first session is gone (the count
        # drops when its handles have closed, just after the log line)
        def slot_free():
            with Raw(sg.port("plain")) as d:
                return d.reply().code == 220
        wait_for(slot_free, T(5), "a free connection slot after QUIT")
    finally:
        a.close()
        b.close()


def test_max_recipients_and_pipelined_group_in_one_write(workdir, start_saslgate,
                                                         start_fake_upstream):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    # the upstream takes a second over the first RCPT: if the proxy wrote the
    # group's replies one by one, MAIL's 250 would arrive before that
    up = start_fake_upstream(replies={"RCPT": [Stall(1.0, "250 2.1.5 Ok"), "250 2.1.5 Ok"]})
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db, limits={"max_recipients": 2}),
                        secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        t0 = time.monotonic()
        r.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<b1@example.net>\r\n"
               b"RCPT TO:<b2@example.net>\r\nRCPT TO:<b3@example.net>\r\nDATA\r\n")
        # the first bytes arrive only when the whole group is answered
        r.sock.settimeout(T(10))
        first = r.sock.recv(65536)
        assert time.monotonic() - t0 >= 0.9
        r.buf = first
        replies = [r.reply() for _ in range(5)]
        assert [x.code for x in replies] == [250, 250, 250, 452, 354], replies
        assert replies[3].text.startswith("452 4.5.3")
        assert first.count(b"\r\n") == 5, first  # all five in the first read
        r.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert r.reply().text.startswith("250 2.0.0 Ok: queued as FAKE")
        r.expect(221, "QUIT")
    assert up.verbs().count("RCPT") == 2  # the third never went upstream


# ---------------------------------------------------------------- AUTH

def test_auth_replies_and_failures(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env,
              sasl={"failure_delay": "1s", "max_failures": 3})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(503, "AUTH PLAIN")                  # before EHLO
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH NOSUCH").text.startswith("504 5.5.4")
        assert r.cmd("AUTH PL@IN").text.startswith("504 5.5.4")
        assert r.cmd("AUTH PLAIN !!notbase64").text.startswith("501 5.5.2")
        assert r.cmd("AUTH PLAIN").text == "334 "       # empty challenge
        assert r.cmd("*").text.startswith("501 5.7.0")  # cancelled
        assert r.cmd("AUTH LOGIN").code == 334
        r.expect(334, b64(USER))
        t0 = time.monotonic()
        assert r.cmd(b64("wrong-pass"), timeout=10).text.startswith("535 5.7.8")
        assert time.monotonic() - t0 >= 0.9           # failure_delay
        t0 = time.monotonic()
        # unknown user: same reply, same delay (no user enumeration)
        assert r.cmd("AUTH PLAIN " + plain_b64("nosuchuser", "x"),
                     timeout=10).text.startswith("535 5.7.8")
        assert time.monotonic() - t0 >= 0.9
        # the third failure: its 535, then 421 and close
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, "bad"), timeout=10).text.startswith("535 5.7.8")
        assert r.reply().text.startswith("421 4.7.0")
        assert r.closed()
    log = sg.log_text()
    assert re.search(r"event=auth result=fail user=alice client=127\.0\.0\.1 mech=LOGIN", log)
    assert re.search(r"event=auth result=fail user=nosuchuser client=127\.0\.0\.1 mech=PLAIN", log)
    assert "reason=too many auth failures" in log


def test_auth_success_then_rules(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    up = env[3]
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(530, "MAIL FROM:<alice@example.org>")
        # initial response "=" is an empty one (RFC 4954 4): the exchange
        # goes on with the server's empty challenge; "*" cancels it
        assert r.cmd("AUTH PLAIN =").text.rstrip() == "334"
        assert r.cmd("*").text.startswith("501")
        assert r.cmd("AUTH LOGIN " + b64(USER)).code == 334
        assert r.cmd(b64(PW)).text.startswith("235 2.7.0")
        r.expect(503, "AUTH PLAIN " + plain_b64(USER, PW))   # already authenticated
        r.expect(250, "MAIL FROM:<alice@example.org> SIZE=100")
        r.expect(503, "MAIL FROM:<alice@example.org>")      # nested
        assert r.cmd("RCPT TO:<bob@example.net> FOO=BAR").text.startswith("555 5.5.4")
        assert r.cmd("RCPT TO:<bob@example.net").text.startswith("501 5.5.4")
        assert r.cmd("RCPT TO:<bob@@>").code == 553
        r.expect(503, "DATA")                               # no recipient yet
        r.expect(250, "RCPT TO:<bob@example.net>")
        r.expect(250, "RSET")
        assert r.cmd("MAIL FROM:<alice@example.org> SIZE=999999999999").text.startswith("552 5.3.4")
        assert r.cmd("MAIL FROM:<alice@example.org> BODY=BINARYMIME").text.startswith("555 5.5.4")
        r.expect(221, "QUIT")
    assert re.search(r"event=auth result=ok user=alice client=127\.0\.0\.1 mech=LOGIN",
                     sg.log_text())
    lines = up.command_lines()
    assert any(l.startswith("XCLIENT") and "LOGIN=alice" in l for l in lines), lines


def test_upstream_refusing_identity_gives_454(workdir, start_saslgate, start_fake_upstream):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = start_fake_upstream(replies={"XCLIENT": "550 5.7.0 Error: insufficient authorization"})
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db), secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20).text.startswith("454 4.7.0")
        r.expect(530, "MAIL FROM:<alice@example.org>")   # still unauthenticated
    assert re.search(r"event=auth result=tempfail user=alice client=127\.0\.0\.1 mech=PLAIN",
                     sg.log_text())


# ---------------------------------------------------------------- PROXY protocol

def proxy_v2(src, dst, sport, dport):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addr)) + addr


def test_proxy_protocol_v1_v2(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env,
              listener_plain={"proxy_protocol": "any",
                              "proxy_trusted_networks": "127.0.0.1"})
    up = env[3]
    with Raw(sg.port("plain")) as r:
        r.send(b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 587\r\n")
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(221, "QUIT")
    log = sg.log_text()
    assert re.search(r"event=auth result=ok user=alice client=192\.0\.2\.7 ", log)
    assert re.search(r"event=disconnect client=192\.0\.2\.7:40000 ", log)
    assert any("ADDR=192.0.2.7" in l for l in up.command_lines() if l.startswith("XCLIENT"))
    with Raw(sg.port("plain")) as r:
        r.send(proxy_v2("198.51.100.9", "192.0.2.1", 41000, 587))
        r.expect(220)
        r.expect(221, "QUIT")
    sg.wait_log(r"event=disconnect client=198\.51\.100\.9:41000 ")
    # no header (or a broken one): closed without a greeting, logged
    with Raw(sg.port("plain")) as r:
        r.send(b"EHLO client.test\r\n")
        assert r.closed()
        assert r.buf == b""
    sg.wait_log(r"event=proxy result=fail")


def test_proxy_header_only_from_trusted_networks(workdir, env, start_saslgate):
    """A listener trusting a prefix that holds 127.0.0.1 takes the header;
    one trusting only 192.0.2.1 closes a loopback connection before any
    greeting, without reading a PROXY header, and logs one line; a reload
    brings the new list to new connections."""
    sg = gate(start_saslgate, workdir, env,
              listener_plain={"proxy_protocol": "v1",
                              "proxy_trusted_networks": "192.0.2.1, 10.0.0.0/8 127.0.0.0/8 ::1"})
    with Raw(sg.port("plain")) as r:
        r.send(b"PROXY TCP4 198.51.100.4 192.0.2.1 40001 587\r\n")
        r.expect(220)
        r.expect(221, "QUIT")
    sg.wait_log(r"event=disconnect client=198\.51\.100\.4:40001 ")

    cfg = dict(sg.config)
    cfg["listener plain"] = dict(cfg["listener plain"], proxy_trusted_networks="192.0.2.1")
    sg.write_config(cfg)
    assert "reload: done" in sg.reload().group(0)
    start = len(sg.log_text())
    for header in (b"PROXY TCP4 198.51.100.5 192.0.2.1 40002 587\r\n", b""):
        with Raw(sg.port("plain")) as r:
            r.send(header)
            assert r.closed()
            assert r.buf == b"", r.buf  # no greeting, no reply at all
    m = sg.wait_log(r"event=proxy_refused client=127\.0\.0\.1:(\d+) listener=plain "
                    r'reason="peer not in proxy_trusted_networks"', after=start)
    wait_for(lambda: sg.log_text()[start:].count("event=proxy_refused") == 2, T(5),
             "two proxy_refused lines")
    tail = sg.log_text()[start:]
    assert "198.51.100.5" not in tail  # the header was never read
    # one line per refused connection: no connect or disconnect line
    assert not re.search(r"event=(connect|disconnect) client=127\.0\.0\.1:%s "
                         % m.group(1), tail), tail

    # and back: the list now holds the peer again
    cfg["listener plain"] = dict(cfg["listener plain"], proxy_trusted_networks="127.0.0.1")
    sg.write_config(cfg)
    assert "reload: done" in sg.reload().group(0)
    with Raw(sg.port("plain")) as r:
        r.send(b"PROXY TCP4 198.51.100.6 192.0.2.1 40003 587\r\n")
        r.expect(220)
        r.expect(221, "QUIT")
    sg.wait_log(r"event=disconnect client=198\.51\.100\.6:40003 ")


def test_proxy_listener_without_trusted_networks_does_not_load(workdir, env, start_saslgate):
    """A reload to a proxy_protocol listener without the list fails and
    keeps the running configuration."""
    sg = gate(start_saslgate, workdir, env)
    cfg = dict(sg.config)
    cfg["listener plain"] = dict(cfg["listener plain"], proxy_protocol="v2")
    sg.write_config(cfg)
    m = sg.reload()
    assert "reload failed" in m.group(0)
    assert re.search(r":\d+: listener plain: proxy_protocol needs proxy_trusted_networks "
                     r"\(the addresses of your HAProxy\)", sg.log_text())
    with Raw(sg.port("plain")) as r:  # no header needed: the old configuration
        r.expect(220)
        r.expect(221, "QUIT")


# ---------------------------------------------------------------- shutdown

def test_sigterm_lets_transactions_finish(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env, server={"shutdown_timeout": "10s"})
    up = env[3]
    idle, busy = Raw(sg.port("plain")), Raw(sg.port("plain"))
    try:
        idle.expect(220)
        idle.expect(250, "EHLO idle.test")
        busy.expect(220)
        busy.expect(250, "EHLO busy.test")
        busy.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        busy.expect(250, "MAIL FROM:<alice@example.org>")
        busy.expect(250, "RCPT TO:<bob@example.net>")
        sg.proc.send_signal(15)
        # the idle session is told at once
        assert idle.reply().text.startswith("421 4.3.2")
        assert idle.closed()
        # the one in a transaction may finish its message
        busy.expect(354, "DATA")
        busy.send(b"Subject: last\r\n\r\nbye\r\n.\r\n")
        assert busy.reply().text.startswith("250 2.0.0")
        assert busy.reply().text.startswith("421 4.3.2")
        assert busy.closed()
        assert sg.wait_exit(15) == 0
        assert len(up.delivered()) == 1
    finally:
        idle.close()
        busy.close()


# ---------------------------------------------------------------- real Postfix

def test_end_to_end_through_postfix(workdir, start_saslgate, start_postfix):
    pf = start_postfix()
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    sg = start_saslgate(default_config(workdir, upstream_port=pf.port, cert=cert, key=key,
                                       sasldb=db), secrets=SECRETS)
    c = smtp(sg.port("submission"))
    c.login(USER, PW)
    c.sendmail("alice@example.org", ["bob@example.net"], b"Subject: e2e\r\n\r\nthrough postfix\r\n")
    c.quit()
    msgs = pf.wait_delivered(1)
    assert b"through postfix" in msgs[0]
    qid = pf.queue_ids()[0]
    sg.wait_log(r"event=disconnect .*queue_ids=%s" % re.escape(qid))


def test_require_auth_no_relays_unauthenticated(workdir, env, start_saslgate):
    """An inbound-MX style listener: no AUTH, the link opens at the first
    MAIL without a login, and the upstream's replies come back in step."""
    sg = gate(start_saslgate, workdir, env, listener_plain={"require_auth": "no"})
    up = env[3]
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO mx.client.test")
        r.expect(250, "MAIL FROM:<>")
        r.expect(250, "RCPT TO:<postmaster>")
        r.expect(354, "DATA")
        r.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n")
        assert r.reply().text.startswith("250 2.0.0 Ok: queued as FAKE")
        r.expect(221, "QUIT")
    xc = [l for l in up.command_lines() if l.startswith("XCLIENT")]
    assert xc and not any("LOGIN=" in l and "LOGIN=[UNAVAILABLE]" not in l for l in xc), xc
    assert re.search(r"event=message user=- from=<> rcpts=1 ", sg.log_text())


def test_upstream_lost_in_data_gives_4xx(workdir, start_saslgate, start_fake_upstream):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = start_fake_upstream(close_in_data=10)
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db), secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(250, "MAIL FROM:<alice@example.org>")
        r.expect(250, "RCPT TO:<bob@example.net>")
        r.expect(354, "DATA")
        r.send(b"Subject: lost\r\n\r\n" + b"z" * 2000 + b"\r\n.\r\n")
        rep = r.reply(timeout=20)
        assert 400 <= rep.code < 500, rep
        # the session survives: a new transaction opens a new link
        rep = r.cmd("MAIL FROM:<alice@example.org>", timeout=20)
        assert rep.code == 250 or 400 <= rep.code < 500, rep
    assert up.delivered() == []


def test_shutdown_timeout_closes_stuck_transactions(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env, server={"shutdown_timeout": "1s"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(250, "MAIL FROM:<alice@example.org>")
        t0 = time.monotonic()
        sg.proc.send_signal(15)
        assert r.reply(timeout=10).text.startswith("421 4.3.2")
        assert time.monotonic() - t0 >= 0.8
        assert r.closed()
    assert sg.wait_exit(15) == 0
    assert "reason=shutdown" in sg.log_text()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_not_reading_replies_is_backpressured(workdir, env, start_saslgate):
    """A client that pipelines without reading: saslgate stops reading it
    (bounded memory) instead of queueing replies, and loses nothing."""
    import threading
    sg = gate(start_saslgate, workdir, env)
    n = 1000000  # 6 MB of commands, 14 MB of replies
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # small client buffers so that kernel buffering cannot hide the effect
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.settimeout(T(30))
    sock.connect((HOST, sg.port("plain")))
    try:
        sent = [0]
        done = threading.Event()

        def writer():
            chunk = b"NOOP\r\n" * 1000
            try:
                for _ in range(n // 1000):
                    sock.sendall(chunk)
                    sent[0] += 1000
                sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
            done.set()
        rss0 = rss_kib(sg.pid)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        # wait until the writer stalls (saslgate stopped reading) or is done
        last, still = -1, 0
        for _ in range(int(T(60) / 0.25)):
            time.sleep(0.25)
            if done.is_set():
                break
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
            if still >= 4:
                break
        grown = rss_kib(sg.pid) - rss0
        # without back-pressure the unread replies (~14 MB, minus what the
        # kernel buffers) would sit in saslgate's memory
        assert not done.is_set(), "saslgate read everything while its replies piled up"
        if not SANITIZE:  # ASan's quarantine keeps freed memory resident
            assert grown < 4096, "saslgate grew by %d KiB" % grown
        got = bytearray()
        deadline = time.monotonic() + T(60)
        while not got.endswith(b"221 2.0.0 Bye\r\n") and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        t.join(T(10))
        assert got.startswith(b"220 sg.test ESMTP\r\n")
        assert got.count(b"250 2.0.0 Ok\r\n") == n
        assert got.endswith(b"221 2.0.0 Bye\r\n")
    finally:
        sock.close()


def test_client_vanishing_mid_auth_and_mid_data(workdir, env, start_saslgate):
    """Closing with SASL work in flight, during the failure delay, or in the
    middle of a message must not crash or leak (the teardown checks the
    sanitizer report under SG_SANITIZE=ON)."""
    sg = gate(start_saslgate, workdir, env, sasl={"failure_delay": "2s"})
    up = env[3]
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.send("AUTH PLAIN %s\r\n" % plain_b64(USER, PW))
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.send("AUTH PLAIN %s\r\n" % plain_b64(USER, "wrong"))
        time.sleep(0.3)  # inside the failure delay
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(250, "MAIL FROM:<alice@example.org>")
        r.expect(250, "RCPT TO:<bob@example.net>")
        r.expect(354, "DATA")
        r.send(b"Subject: half\r\n\r\n" + b"x" * 50000)
        time.sleep(0.3)
    wait_for(lambda: sg.log_text().count("reason=client closed") >= 3, T(10),
             "three 'client closed' disconnect lines")
    assert up.delivered() == []
    with Raw(sg.port("plain")) as r:  # still serving
        r.expect(220)
        r.expect(221, "QUIT")


def test_reload_keeps_live_sessions(workdir, env, start_saslgate):
    sg = gate(start_saslgate, workdir, env)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        cfg = dict(sg.config)
        cfg["server"] = dict(cfg["server"], hostname="new.test")
        sg.write_config(cfg)
        assert "reload: done" in sg.reload().group(0)
        # the live session keeps its configuration and goes on
        r.expect(250, "NOOP")
        assert r.expect(250, "HELO again.test").text == "250 sg.test"
        r.expect(221, "QUIT")
    with Raw(sg.port("plain")) as r:
        assert r.reply().text == "220 new.test ESMTP"


def test_half_close_after_pipelined_batch(workdir, env, start_saslgate):
    """printf '...' | nc: the client sends its commands and shuts down its
    side; every command already sent is answered, async ones included."""
    sg = gate(start_saslgate, workdir, env)
    up = env[3]
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.send("EHLO client.test\r\nAUTH PLAIN %s\r\nMAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<bob@example.net>\r\nDATA\r\n" % plain_b64(USER, PW))
        codes = [r.reply().code for _ in range(5)]
        assert codes == [250, 235, 250, 250, 354]
        r.send(b"Subject: hc\r\n\r\nhalf close\r\n.\r\nQUIT\r\n")
        r.sock.shutdown(socket.SHUT_WR)
        assert r.reply().text.startswith("250 2.0.0 Ok: queued as FAKE")
        assert r.reply().text.startswith("221 2.0.0")
        assert r.closed()
    assert len(up.delivered()) == 1


def test_ip_failure_limit_and_sender_login_map(workdir, env, start_saslgate):
    smap = workdir / "sender_login_map"
    smap.write_text("alice  alice@example.org, @alice.example\n")
    sg = gate(start_saslgate, workdir, env,
              sasl={"ip_failure_limit": 2, "ip_failure_window": "10m",
                    "max_failures": 5, "sender_login_map": str(smap)})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(535, "AUTH PLAIN " + plain_b64(USER, "nope-1"))
        r.expect(535, "AUTH PLAIN " + plain_b64(USER, "nope-2"))
    # the address is over its limit: 454 at once, whatever the password
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW)).text.startswith("454 4.7.0")
    assert re.search(r"event=auth result=tempfail .*client=127\.0\.0\.1 mech=PLAIN",
                     sg.log_text())
    # a fresh daemon (the limiter is per process) for the sender map
    sg.stop()
    sg2 = gate(start_saslgate, workdir, env, sasl={"sender_login_map": str(smap)})
    with Raw(sg2.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        assert r.cmd("MAIL FROM:<bob@example.org>").text.startswith("553 5.7.1")
        r.expect(250, "MAIL FROM:<alice@example.org>")
        r.expect(250, "RSET")
        r.expect(250, "MAIL FROM:<anything@alice.example>")
        r.expect(221, "QUIT")


def test_ipv6_listener(workdir, env, start_saslgate):
    from sgtest import free_port
    port = free_port("::1")
    sg = gate(start_saslgate, workdir, env,
              listener_v6={"address": "[::1]:%d" % port, "tls": "none",
                           "require_auth": "yes", "require_tls_for_auth": "no"})
    with Raw(port, host="::1") as r:
        assert r.reply().text == "220 sg.test ESMTP"
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        r.expect(221, "QUIT")
    log = sg.log_text()
    assert re.search(r"event=auth result=ok user=alice client=::1 mech=PLAIN", log)
    assert re.search(r"event=disconnect client=::1:\d+ ", log)


# ---------------------------------------------------------------- pipelining upstream

class PipeUpstream:
    """A minimal upstream that tells whether a client's pipelined group
    reached it as a group: on MAIL it waits (up to `wait` seconds) for the
    group's DATA line to arrive before it answers anything.  Answers MAIL,
    RCPT (550 for addresses starting with "no"), DATA as smtp-sink would;
    records the command lines and whether each MAIL saw its group whole."""

    def __init__(self, wait):
        import threading
        self.wait = wait
        self.lock = threading.Lock()
        self.lines, self.group_whole, self.messages = [], [], []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(T(5))
        self.sock.close()

    def _accept(self):
        import threading
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(T(10))
        buf = bytearray()
        try:
            def fill(until):
                while time.monotonic() < until and not self.stop.is_set():
                    try:
                        chunk = c.recv(65536)
                    except socket.timeout:
                        return
                    if not chunk:
                        raise EOFError
                    buf.extend(chunk)
                    return

            def line():
                for _ in range(10000):
                    i = buf.find(b"\n")
                    if i >= 0:
                        l = bytes(buf[:i + 1])
                        del buf[:i + 1]
                        return l.rstrip(b"\r\n").decode()
                    fill(time.monotonic() + T(10))
                raise EOFError

            c.sendall(b"220 pipe.test ESMTP\r\n")
            while not self.stop.is_set():
                l = line()
                with self.lock:
                    self.lines.append(l)
                verb = l.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    c.sendall(b"250-pipe.test\r\n250-PIPELINING\r\n"
                              b"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n"
                              b"250 8BITMIME\r\n")
                elif verb == "XCLIENT":
                    c.sendall(b"220 pipe.test ESMTP\r\n")
                elif verb == "MAIL":
                    # the group's DATA line, before we answered MAIL?
                    c.settimeout(0.1)
                    deadline = time.monotonic() + self.wait
                    while b"DATA\r\n" not in buf and time.monotonic() < deadline:
                        fill(deadline)
                    c.settimeout(T(10))
                    with self.lock:
                        self.group_whole.append(b"DATA\r\n" in buf)
                    c.sendall(b"250 2.1.0 Ok\r\n")
                    rcpts = 0
                elif verb == "RCPT":
                    if l[9:11].lower() == "no":
                        c.sendall(b"550 5.1.1 No such user\r\n")
                    else:
                        rcpts += 1
                        c.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    if not rcpts:
                        c.sendall(b"554 5.5.1 Error: no valid recipients\r\n")
                        continue
                    c.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while b"\r\n.\r\n" not in buf:
                        fill(time.monotonic() + T(10))
                    end = buf.find(b"\r\n.\r\n")
                    with self.lock:
                        self.messages.append(bytes(buf[:end + 2]))
                    del buf[:end + 5]
                    c.sendall(b"250 2.0.0 Ok: queued as PIPE%d\r\n" % len(self.messages))
                elif verb == "RSET":
                    c.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    c.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except (OSError, EOFError):
            pass
        finally:
            c.close()


@pytest.fixture
def pipe_upstream():
    ups = []

    def start(wait):
        u = PipeUpstream(wait)
        ups.append(u)
        return u
    yield start
    for u in ups:
        u.close()


def test_pipelined_group_goes_upstream_as_a_group(workdir, start_saslgate, pipe_upstream):
    """RFC 2920: a client's MAIL/RCPT.../DATA group reaches an upstream that
    offers PIPELINING without saslgate waiting for each reply; the client's
    replies are still the upstream's, in order, in one write."""
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = pipe_upstream(wait=T(3))
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db), secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        for i in range(2):
            t0 = time.monotonic()
            r.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<b1@example.net>\r\n"
                   b"RCPT TO:<b2@example.net>\r\nDATA\r\n")
            r.sock.settimeout(T(10))
            first = r.sock.recv(65536)
            r.buf = first
            replies = [r.reply() for _ in range(4)]
            assert [x.code for x in replies] == [250, 250, 250, 354], replies
            assert replies[0].text.startswith("250 2.1.0 Ok")   # the upstream's texts
            assert replies[3].text.startswith("354 End data")
            assert first.count(b"\r\n") == 4, first             # one write
            # the upstream did not have to wait for the group
            assert time.monotonic() - t0 < 2.5
            r.send(b"Subject: m%d\r\n\r\nbody\r\n.\r\n" % i)
            assert r.reply().text.startswith("250 2.0.0 Ok: queued as PIPE%d" % (i + 1))
        r.expect(221, "QUIT")
    assert up.group_whole == [True, True], up.group_whole
    assert [m.endswith(b"body\r\n") for m in up.messages] == [True, True]


def test_pipelined_group_with_refusals_answers_as_before(workdir, start_saslgate,
                                                         pipe_upstream):
    """Commands sent upstream ahead of their turn are still decided at their
    turn: a refused RCPT gets the upstream's 550, a DATA after recipients that
    all failed gets saslgate's 503 (as without pipelining; the upstream's own
    refusal of the early DATA is not passed on), max_recipients and the
    sender check answer as before, and nothing is delivered."""
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = pipe_upstream(wait=0.3)
    smap = workdir / "sender_login_map"
    smap.write_text("alice  alice@example.org\n")
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db, limits={"max_recipients": 2},
                                       sasl={"sender_login_map": str(smap)}),
                        secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        # every recipient refused: DATA gets our 503, never a 354
        r.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<no1@example.net>\r\n"
               b"RCPT TO:<no2@example.net>\r\nDATA\r\n")
        replies = [r.reply() for _ in range(4)]
        assert [x.code for x in replies] == [250, 550, 550, 503], replies
        assert replies[1].text.startswith("550 5.1.1 No such user")
        assert replies[3].text.startswith("503 5.5.1 Need RCPT")
        r.expect(250, "RSET")
        # bad syntax in the middle, then max_recipients (2): the upstream
        # sees exactly the two recipients the client was told were accepted
        r.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<b1@example.net>\r\n"
               b"RCPT TO:<b2@example.net\r\nRCPT TO:<b3@example.net>\r\n"
               b"RCPT TO:<b4@example.net>\r\nDATA\r\n")
        replies = [r.reply() for _ in range(6)]
        assert [x.code for x in replies] == [250, 250, 501, 250, 452, 354], replies
        r.send(b"Subject: two\r\n\r\nbody\r\n.\r\n")
        assert r.reply().code == 250
        # a sender the user does not own: 553 from saslgate, the RCPT and
        # DATA behind it are refused in order (503), nothing is sent on
        r.send(b"MAIL FROM:<mallory@example.org>\r\nRCPT TO:<b1@example.net>\r\nDATA\r\n")
        replies = [r.reply() for _ in range(3)]
        assert [x.code for x in replies] == [553, 503, 503], replies
        assert replies[0].text.startswith("553 5.7.1")
        r.expect(221, "QUIT")
    rcpt_lines = [l for l in up.lines if l.upper().startswith("RCPT")]
    assert rcpt_lines == ["RCPT TO:<no1@example.net>", "RCPT TO:<no2@example.net>",
                          "RCPT TO:<b1@example.net>", "RCPT TO:<b3@example.net>"], up.lines
    assert len(up.messages) == 1
