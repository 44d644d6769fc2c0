# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of the upstream side (upstream/): identity hand-over to a
real Postfix, fail-closed behaviour, SMTP smuggling payloads, byte-exact
streaming, the size limit, failover and upstream faults.

Clients use the "plain" listener (AUTH allowed without TLS) where the TLS
layer is not the point, and the STARTTLS one where the Received header's
ESMTPSA is.  The sasldb realm is the greeting host name (sg.test)."""

import random
import re

import pytest

from sgtest import (CLOSE, Raw, Stall, default_config, make_cert, make_sasldb,
                    plain_b64, refused_port, smtp, wait_for, T)

USER, PW = "alice", "Al1ce-relay.pw7"
SECRETS = {USER: PW}


@pytest.fixture
def keys(workdir):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    return cert, key, db


def gate(start_saslgate, workdir, keys, upstream_port, **sections):
    cert, key, db = keys
    cfg = default_config(workdir, upstream_port=upstream_port, cert=cert, key=key,
                         sasldb=db, **sections)
    return start_saslgate(cfg, secrets=SECRETS)


def login(r):
    r.expect(220)
    r.expect(250, "EHLO client.test")
    r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)


def delivered(up, n):
    """The fake upstream's delivered messages once there are n (it records
    the reply to the final dot just after sending it)."""
    up.wait_for(lambda: len(up.delivered()) >= n, 10, "%d delivered message(s)" % n)
    return up.delivered()


def transaction(r, body, rcpt="bob@example.net"):
    """MAIL, RCPT, DATA, body (must end with the client's end-of-data);
    -> the reply to the end of data."""
    r.expect(250, "MAIL FROM:<alice@example.org>")
    r.expect(250, "RCPT TO:<%s>" % rcpt)
    r.expect(354, "DATA")
    r.send(body)
    return r.reply(timeout=60)


# ---------------------------------------------------------------- real Postfix

def test_xclient_login_is_what_makes_postfix_relay(workdir, keys, start_saslgate,
                                                  start_postfix):
    pf = start_postfix()   # xclient_hosts 127.0.0.1, permit_sasl_authenticated, reject
    # Control: the same client address talking to Postfix directly may not relay.
    with Raw(pf.port) as d:
        d.expect(220)
        d.expect(250, "EHLO direct.test")
        d.expect(250, "MAIL FROM:<alice@example.org>")
        rep = d.cmd("RCPT TO:<bob@example.net>")
        assert rep.code >= 400 and "denied" in rep.text, rep
    sg = gate(start_saslgate, workdir, keys, pf.port)
    c = smtp(sg.port("submission"))
    c.login(USER, PW)
    c.sendmail("alice@example.org", ["bob@example.net"],
               b"Subject: via xclient\r\n\r\nrelayed because of LOGIN\r\n")
    c.quit()
    msgs = pf.wait_delivered(1)
    assert b"relayed because of LOGIN" in msgs[0]
    # Postfix took the identity: its log has the SASL user for this client
    log = pf.log_text()
    assert re.search(r"client=\S+\[127\.0\.0\.1\].*sasl_username=alice", log), log
    # Our Received header: ESMTPSA over TLS, the user, the TLS parameters;
    # Postfix's own says ESMTPA (it got LOGIN= through XCLIENT).
    m = msgs[0]
    ours = re.search(rb"Received: from client\.test \(\S+ \[127\.0\.0\.1\]\)\r?\n"
                     rb"\tby sg\.test \(saslgate\) with ESMTPSA id \S+\r?\n"
                     rb"\t\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)\r?\n"
                     rb"\t\(authenticated sender: alice\S*\)\r?\n\t; ", m)
    assert ours, m[:1500]
    assert re.search(rb"with ESMTPS?A id", m[:ours.start()]), m[:1500]
    qid = pf.queue_ids()[0]
    sg.wait_log(r"event=message user=alice\S* .*reply=\"250 2\.0\.0 Ok: queued as %s" % qid)


def test_postfix_without_our_address_gives_454(workdir, keys, start_saslgate,
                                               start_postfix):
    pf = start_postfix(xclient_hosts="127.0.0.2")
    sg = gate(start_saslgate, workdir, keys, pf.port)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        rep = r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=30)
        assert rep.text.startswith("454 4.7.0"), rep
        r.expect(530, "MAIL FROM:<alice@example.org>")    # not authenticated
    log = sg.log_text()
    assert re.search(r"add 127\.0\.0\.1 to smtpd_authorized_xclient_hosts on "
                     r"127\.0\.0\.1:%d" % pf.port, log), log
    assert pf.delivered() == []


def test_identity_auth_logs_in_with_the_service_account(workdir, keys, start_saslgate,
                                                        start_postfix):
    relay_pw = "Rel4y-acct.pw3"
    pf = start_postfix(xclient_hosts="", sasl_users={"relay": relay_pw})
    secret = workdir / "upstream.secret"
    secret.write_text(relay_pw + "\n")
    secret.chmod(0o600)
    cert, key, db = keys
    cfg = default_config(workdir, upstream_port=pf.port, cert=cert, key=key, sasldb=db,
                         identity="auth")
    cfg["upstream"].update(auth_user="relay", auth_password_file=str(secret))
    sg = start_saslgate(cfg, secrets={USER: PW, "relay": relay_pw})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"X-Authenticated-User: mallory\r\nSubject: svc\r\n\r\n"
                             b"body\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    msg = pf.wait_delivered(1)[0]
    assert re.search(r"sasl_method=PLAIN, sasl_username=relay", pf.log_text())
    assert b"X-Authenticated-User: alice" in msg
    assert b"mallory" not in msg


# ---------------------------------------------------------------- smuggling

SMUGGLE = [
    b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r.\r",
]


def smuggle_body(sep):
    return (b"Subject: outer\r\n\r\nhello" + sep +
            b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")


@pytest.mark.parametrize("sep", SMUGGLE, ids=[repr(s)[2:-1] for s in SMUGGLE])
def test_smuggling_rejected(workdir, keys, start_saslgate, start_fake_upstream, sep):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port, limits={"bare_newline": "reject"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, smuggle_body(sep))
        # the client's only real end-of-data is the last "\r\n.\r\n"
        assert rep.code == 550 and rep.text.startswith("550 5.5.2"), rep
        # the session is in step: nothing of the payload was a command
        r.expect(250, "NOOP")
        rep = transaction(r, b"Subject: next\r\n\r\nfine\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    got = delivered(up, 1)
    assert len(got) == 1 and b"fine" in got[0], got
    assert not any("evil@" in l for l in up.command_lines())
    # the upstream never got a final dot for the rejected message
    assert not any(b"smuggled" in m.data for m in up.messages if m.complete)


@pytest.mark.parametrize("sep", SMUGGLE, ids=[repr(s)[2:-1] for s in SMUGGLE])
def test_smuggling_normalized_is_one_message(workdir, keys, start_saslgate,
                                             start_fake_upstream, sep):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port, limits={"bare_newline": "normalize"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, smuggle_body(sep))
        assert rep.code == 250, rep
        r.expect(250, "NOOP")
    got = delivered(up, 1)
    assert len(got) == 1, got
    d = got[0]
    # one message holding the payload as text; no bare CR or LF upstream
    assert b"MAIL FROM:<evil@example.org>" in d and b"evil\r\n" in d
    assert re.search(rb"(?<!\r)\n", d) is None and re.search(rb"\r(?!\n)", d) is None
    assert [v for v in up.verbs() if v == "MAIL"] == ["MAIL"]


def test_smuggling_through_postfix(workdir, keys, start_saslgate, start_postfix):
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, keys, pf.port, limits={"bare_newline": "reject"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, smuggle_body(b"\n.\r\n"))
        assert rep.code == 550, rep
        rep = transaction(r, b"Subject: clean\r\n\r\nclean one\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    msgs = pf.wait_delivered(1)
    assert len(msgs) == 1 and b"clean one" in msgs[0]
    assert "evil@example.org" not in pf.log_text()


# ---------------------------------------------------------------- streaming

def body_of(size, seed):
    """size octets of CRLF lines (<= 998), with dot-leading lines and 8-bit
    octets, ending in CRLF."""
    rnd = random.Random(seed)
    out = bytearray(b"Subject: big\r\n\r\n")
    alphabet = bytes(range(0x21, 0x7f)) + bytes(range(0x80, 0x100))
    while len(out) < size - 2:
        n = rnd.randint(0, 200)
        line = bytes(rnd.choice(alphabet) for _ in range(min(n, 20))) + b"x" * max(0, n - 20)
        if rnd.random() < 0.05:
            line = b"." + line          # stuffed below
        out += line + b"\r\n"
    return bytes(out)


def stuff(b):
    return re.sub(rb"(^|\r\n)\.", rb"\1..", b)


@pytest.mark.parametrize("size", [1 << 20, 20 << 20], ids=["1MiB", "20MiB"])
def test_byte_exact(workdir, keys, start_saslgate, start_fake_upstream, size):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port)
    body = body_of(size, size)
    with Raw(sg.port("plain"), timeout=120) as r:
        login(r)
        rep = transaction(r, stuff(body) + b".\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    d = delivered(up, 1)
    assert len(d) == 1
    # our Received header, then exactly the client's (stuffed) bytes
    assert d[0].startswith(b"Received: from client.test ")
    assert d[0].endswith(stuff(body)), (len(d[0]), len(body))
    assert len(d[0]) - len(stuff(body)) < 1024


def test_byte_exact_through_postfix(workdir, keys, start_saslgate, start_postfix):
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, keys, pf.port)
    rnd = random.Random(7)
    lines = [b"." * (i % 3) + bytes(rnd.choice(b"abcdefghij .,;") for _ in range(76))
             for i in range(13000)]
    body = b"Subject: 1MiB\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    with Raw(sg.port("plain"), timeout=120) as r:
        login(r)
        rep = transaction(r, stuff(body) + b".\r\n")
        assert rep.code == 250, rep
    msg = pf.wait_delivered(1, timeout=60)[0]
    assert msg.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n").rstrip(b"\r\n").endswith(
        b"\r\n".join(lines[1:])), "body changed on the way"


def test_size_limit_552_then_next_message(workdir, keys, start_saslgate, start_fake_upstream):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port,
              limits={"max_message_size": "64k", "idle_timeout": "60s"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 1000 + b".\r\n")
        assert rep.code == 552 and rep.text.startswith("552 5.3.4"), rep
        rep = transaction(r, b"Subject: small\r\n\r\nsmall\r\n.\r\n")
        assert rep.code == 250, rep
    d = delivered(up, 1)
    assert len(d) == 1 and b"small" in d[0]
    # the big one never got its final dot upstream
    assert all(b"yyyy" not in m.data for m in up.messages if m.complete)


# ---------------------------------------------------------------- failover, faults

def test_failover_to_second_server(workdir, keys, start_saslgate, start_fake_upstream):
    busy = start_fake_upstream(greeting="421 4.3.2 busy, try later")
    up = start_fake_upstream()
    dead = refused_port()
    cfg_servers = ["127.0.0.1:%d" % dead, "127.0.0.1:%d" % busy.port, "127.0.0.1:%d" % up.port]
    sg = gate(start_saslgate, workdir, keys, up.port, upstream={"server": cfg_servers})
    with Raw(sg.port("plain")) as r:
        login(r)
        assert transaction(r, b"Subject: f\r\n\r\nfailover\r\n.\r\n").code == 250
    assert len(delivered(up, 1)) == 1
    log = sg.log_text()
    assert re.search(r"upstream=127\.0\.0\.1:%d .*connection refused" % dead, log), log
    assert re.search(r"upstream=127\.0\.0\.1:%d .*421 4\.3\.2 busy" % busy.port, log), log


def test_no_upstream_reachable_gives_454(workdir, keys, start_saslgate, start_fake_upstream):
    hung = start_fake_upstream(greeting_delay=30)   # accepts, never greets in time
    dead = refused_port()
    sg = gate(start_saslgate, workdir, keys, dead,
              upstream={"server": ["127.0.0.1:%d" % dead, "127.0.0.1:%d" % hung.port],
                        "connect_timeout": "1s"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        rep = r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
        assert rep.text.startswith("454 4.7.0"), rep
    assert re.search(r"event=upstream_unavailable", sg.log_text())


@pytest.mark.parametrize("fault", ["dot-4xx", "dot-close", "data-close", "dot-stall"])
def test_upstream_faults_give_4xx(workdir, keys, start_saslgate, start_fake_upstream, fault):
    kw = {
        "dot-4xx": dict(replies={"DOT": "451 4.3.0 Error: queue file write error"}),
        "dot-close": dict(replies={"DOT": CLOSE}),
        "data-close": dict(close_in_data=5000),
        "dot-stall": dict(replies={"DOT": Stall(20, "250 2.0.0 Ok: too late")}),
    }[fault]
    up = start_fake_upstream(**kw)
    sg = gate(start_saslgate, workdir, keys, up.port,
              upstream={"timeout": "2s"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"Subject: fault\r\n\r\n" + (b"z" * 78 + b"\r\n") * 200 + b".\r\n")
        assert 400 <= rep.code < 500, rep
        if fault == "dot-4xx":   # the upstream's own reply, passed on as sent
            assert rep.text == "451 4.3.0 Error: queue file write error", rep
    assert up.delivered() == [] or fault == "dot-stall"


def test_xforward_before_each_mail(workdir, keys, start_saslgate, start_fake_upstream):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port, upstream={"identity": "xforward"})
    with Raw(sg.port("plain")) as r:
        login(r)
        for i in range(2):
            assert transaction(r, b"Subject: %d\r\n\r\nx\r\n.\r\n" % i).code == 250
    lines = up.command_lines()
    assert not any(l.startswith("XCLIENT") for l in lines)
    # both messages on one upstream connection (the other one is the probe)
    assert up.connections == 2, up.connections
    mails = [i for i, l in enumerate(lines) if l.startswith("MAIL")]
    assert len(mails) == 2
    for i in mails:
        assert re.match(r"XFORWARD .*ADDR=127\.0\.0\.1 .*PROTO=ESMTP .*HELO=client\.test",
                        lines[i - 1]), lines


def test_header_identity_strips_client_header(workdir, keys, start_saslgate, start_fake_upstream):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port, upstream={"identity": "header"})
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"X-Authenticated-User: ceo@example.org\r\n\tfolded\r\n"
                             b"Subject: h\r\n\r\nX-Authenticated-User: in body\r\n.\r\n")
        assert rep.code == 250, rep
    d = delivered(up, 1)[0]
    assert d.count(b"X-Authenticated-User: ") == 2     # ours and the body line
    assert b"X-Authenticated-User: alice" in d and b"ceo@" not in d and b"folded" not in d
    assert not any(l.startswith(("XCLIENT", "XFORWARD")) for l in up.command_lines())


# ---------------------------------------------------------------- upstream STARTTLS

def tls_postfix(workdir, start_postfix):
    from sgtest import make_ca, make_leaf
    ca = make_ca(workdir)
    chain, key = make_leaf(workdir, ca, cn="mta.test")
    pf = start_postfix(extra={"smtpd_tls_security_level": "may",
                              "smtpd_tls_cert_file": str(chain),
                              "smtpd_tls_key_file": str(key),
                              "smtpd_tls_loglevel": "1"})
    return pf, ca[0]


def send_one(sg, text):
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"Subject: tls\r\n\r\n" + text + b"\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")


def test_upstream_starttls_required_verified(workdir, keys, start_saslgate, start_postfix):
    pf, ca = tls_postfix(workdir, start_postfix)
    sg = gate(start_saslgate, workdir, keys, pf.port,
              upstream={"tls": "required", "ca_file": str(ca), "tls_name": "mta.test"})
    send_one(sg, b"over verified tls")
    msg = pf.wait_delivered(1)[0]
    assert b"over verified tls" in msg
    assert re.search(r"TLS connection established from \S+\[127\.0\.0\.1\]", pf.log_text())
    assert re.search(r"event=upstream_ready .*tls=yes", sg.log_text())
    # Postfix's Received says it got TLS and an authenticated identity
    assert re.search(rb"with ESMTPSA id", msg), msg[:1500]


def test_upstream_starttls_wrong_name_fails_closed(workdir, keys, start_saslgate, start_postfix):
    pf, ca = tls_postfix(workdir, start_postfix)
    sg = gate(start_saslgate, workdir, keys, pf.port,
              upstream={"tls": "required", "ca_file": str(ca), "tls_name": "other.test"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        rep = r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
        assert rep.text.startswith("454 4.7.0"), rep
    assert re.search(r"event=upstream_fail .*TLS handshake", sg.log_text()), sg.log_text()
    assert pf.delivered() == []


def test_upstream_starttls_required_but_not_offered(workdir, keys, start_saslgate,
                                                    start_fake_upstream):
    up = start_fake_upstream()          # no STARTTLS in its EHLO
    sg = gate(start_saslgate, workdir, keys, up.port, upstream={"tls": "required"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        rep = r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
        assert rep.text.startswith("454 4.7.0"), rep
    assert "STARTTLS not offered" in sg.log_text()
    assert "MAIL" not in up.verbs() and "XCLIENT" not in up.verbs()


def test_upstream_starttls_opportunistic_plaintext(workdir, keys, start_saslgate,
                                                   start_fake_upstream):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, keys, up.port, upstream={"tls": "starttls"})
    send_one(sg, b"plain is fine when not offered")
    assert len(delivered(up, 1)) == 1


# ---------------------------------------------------------------- service account, EHLO honesty

def test_identity_auth_login_when_plain_not_offered(workdir, keys, start_saslgate,
                                                    start_fake_upstream):
    svc_pw = "Svc-L0gin.pw5"
    exts = [e for e in __import__("sgtest").DEFAULT_EXTENSIONS
            if not e.startswith(("XCLIENT", "XFORWARD"))] + ["AUTH LOGIN"]
    up = start_fake_upstream(extensions=exts, auth={"svc": svc_pw})
    secret = workdir / "svc.secret"
    secret.write_text(svc_pw)           # no newline: both forms are accepted
    secret.chmod(0o600)
    sg = gate(start_saslgate, workdir, keys, up.port,
              upstream={"identity": "auth", "auth_user": "svc",
                        "auth_password_file": str(secret)})
    sg.secrets = {USER: PW, "svc": svc_pw}   # teardown: never in the log
    with Raw(sg.port("plain")) as r:
        login(r)
        assert transaction(r, b"Subject: svc\r\n\r\nlogin\r\n.\r\n").code == 250
    assert up.auth_users == ["svc"]
    lines = up.command_lines()
    assert any(l.upper().startswith("AUTH LOGIN") for l in lines), lines
    d = delivered(up, 1)[0]
    assert b"X-Authenticated-User: alice" in d
    assert b"(authenticated sender: alice" in d


def test_wrong_service_password_fails_closed(workdir, keys, start_saslgate,
                                             start_fake_upstream):
    up = start_fake_upstream(auth={"svc": "the-right-one.9"},
                             extensions=["PIPELINING", "AUTH PLAIN LOGIN"])
    secret = workdir / "svc.secret"
    secret.write_text("Wr0ng-svc.pw\n")
    sg = gate(start_saslgate, workdir, keys, up.port,
              upstream={"identity": "auth", "auth_user": "svc",
                        "auth_password_file": str(secret)})
    sg.secrets = {USER: PW, "svc": "Wr0ng-svc.pw"}
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        rep = r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
        assert rep.text.startswith("454 4.7.0"), rep
    assert "MAIL" not in up.verbs()
    assert re.search(r"event=upstream_fail .*AUTH as svc", sg.log_text())


@pytest.mark.parametrize("offer", [True, False], ids=["offered", "not-offered"])
def test_ehlo_honesty_follows_the_probe(workdir, keys, start_saslgate, start_fake_upstream,
                                        offer):
    exts = ["PIPELINING", "SIZE 1000000", "8BITMIME", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN"]
    if offer:
        exts += ["SMTPUTF8", "DSN"]
    up = start_fake_upstream(extensions=exts)
    sg = gate(start_saslgate, workdir, keys, up.port)
    sg.wait_log(r"event=upstream_probe upstream=127\.0\.0\.1:%d " % up.port, timeout=10)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        kw = [l[4:] for l in r.expect(250, "EHLO client.test").lines[1:]]
        assert ("SMTPUTF8" in kw) == offer and ("DSN" in kw) == offer, kw
    # the probe said EHLO and QUIT, nothing else
    assert up.verbs()[:2] == ["EHLO", "QUIT"]
