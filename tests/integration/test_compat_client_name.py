# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of what the upstream learns of the client's host: its
HELO name and its DNS name.

After XCLIENT, Postfix answers with a new greeting and saslgate says EHLO
again, with the client's own HELO name (as nginx's mail proxy does), so
Postfix's Received line and its HELO restrictions see the client, not
saslgate.  XCLIENT NAME= is [UNAVAILABLE] unless [server] resolve_client =
yes, which looks the client up (reverse, then forward-confirmed) on the
thread pool: the name, [UNAVAILABLE] (none, or not confirmed) or
[TEMPUNAVAIL] (the resolver failed for now, or did not answer in time).

Witnesses: a real Postfix with saslgate's address in
smtpd_authorized_xclient_hosts (its log's "client=NAME[ADDR]" line, the
Received line it writes into the stored message, its
reject_unknown_client_hostname), and the recording FakeUpstream (the
command lines in order).  On this kind of test machine 127.0.0.1 is
"localhost" both ways in /etc/hosts; 192.0.2.1 (TEST-NET-1) has no PTR
anywhere, and a machine without DNS may answer [TEMPUNAVAIL] for it
instead of [UNAVAILABLE]."""

import re
import socket
import time

import pytest

from sgtest import (Raw, default_config, header_fields, make_sasldb, plain_b64, swaks,
                    wait_for, T)

USER, PW = "carol", "Cl1ent-name.pw7"
HELO = "client.example"


def gate(start_saslgate, workdir, upstream_port, resolve, **sections):
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm="sg.test")
    server = dict(sections.pop("server", {}), resolve_client="yes" if resolve else "no")
    cfg = default_config(workdir, upstream_port=upstream_port, sasldb=db, server=server,
                         **sections)
    return start_saslgate(cfg, secrets=[PW])


def send(sg, helo=HELO, listener="plain"):
    """swaks: EHLO helo, AUTH PLAIN, one message -> CompletedProcess."""
    return swaks("--server", "127.0.0.1", "--port", sg.port(listener), "--ehlo", helo,
                 "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PW,
                 "--from", "carol@example.org", "--to", "dave@example.net",
                 "--header", "Subject: client name", "--body", "hello")


def localhost_name():
    """What 127.0.0.1 is called here, both ways (the test's premise)."""
    try:
        name = socket.gethostbyaddr("127.0.0.1")[0]
        return name if "127.0.0.1" in socket.gethostbyname_ex(name)[2] else None
    except OSError:
        return None


def received(msg, by):
    """The unfolded Received field whose by-clause names `by`."""
    for n, v, _ in header_fields(msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
        if n and n.lower() == b"received" and re.search(rb"\bby " + by, v):
            return v.decode().strip()
    raise AssertionError("no Received by %r in %r" % (by, msg))


def session_lines(up, verb="XCLIENT"):
    """The command lines of the one upstream connection that said verb (the
    others are the start-up probe's EHLO and QUIT)."""
    conns = {c for c, l in up.commands if l.startswith(verb + " ")}
    assert len(conns) == 1, up.commands
    return [l for c, l in up.commands if c in conns]


def postfix_clients(pf):
    """Every client=NAME[ADDR] Postfix logged for an accepted message."""
    return re.findall(r": client=([^,\s]+), sasl_method=", pf.log_text())


# ------------------------------------------------------------------ Postfix

def test_postfix_sees_the_clients_helo_and_unknown_name(workdir, start_saslgate,
                                                        start_postfix):
    """resolve_client = no (the default): Postfix's Received line names
    the client's HELO, not saslgate's, and the client as unknown."""
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, pf.port, resolve=False)
    p = send(sg)
    assert p.returncode == 0, p.stdout + p.stderr
    msg = pf.wait_delivered(1)[0]
    rcv = received(msg, rb"pfx\.test")
    assert rcv.startswith("from %s (unknown [127.0.0.1])" % HELO), rcv
    assert "sg.test" not in rcv.split(" by ")[0], rcv
    assert postfix_clients(pf) == ["unknown[127.0.0.1]"], pf.log_text()
    # saslgate's own trace line says the same
    ours = received(msg, rb"sg\.test \(saslgate\)")
    assert ours.startswith("from %s (unknown [127.0.0.1])" % HELO), ours
    assert "event=client_name" not in sg.log_text()

    # a client that says HELO: its name too; saslgate's EHLO after XCLIENT
    # makes it ESMTP for Postfix (XCLIENT said PROTO=SMTP)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "HELO old.example")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=T(30))
        r.expect(250, "MAIL FROM:<carol@example.org>")
        r.expect(250, "RCPT TO:<dave@example.net>")
        r.expect(354, "DATA")
        r.send(b"Subject: helo\r\n\r\nhi\r\n.\r\n")
        assert r.reply(timeout=T(30)).code == 250
        r.expect(221, "QUIT")
    msg = pf.wait_delivered(2)[1]
    rcv = received(msg, rb"pfx\.test")
    assert re.match(r"from old\.example \(unknown \[127\.0\.0\.1\]\)\s+by pfx\.test "
                    r"\(Postfix\) with ESMTPA ", rcv), rcv


def test_resolve_client_names_localhost_to_postfix(workdir, start_saslgate, start_postfix):
    name = localhost_name()
    if not name:
        pytest.fail("127.0.0.1 has no forward-confirmed name on this machine "
                    "(/etc/hosts should map it to localhost)")
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, pf.port, resolve=True,
              server={"log_level": "debug"})
    p = send(sg)
    assert p.returncode == 0, p.stdout + p.stderr
    msg = pf.wait_delivered(1)[0]
    rcv = received(msg, rb"pfx\.test")
    assert rcv.startswith("from %s (%s [127.0.0.1])" % (HELO, name)), rcv
    assert postfix_clients(pf) == ["%s[127.0.0.1]" % name], pf.log_text()
    ours = received(msg, rb"sg\.test \(saslgate\)")
    assert ours.startswith("from %s (%s [127.0.0.1])" % (HELO, name)), ours
    sg.wait_log(r"event=client_name client=127\.0\.0\.1 name=%s\b" % re.escape(name))


@pytest.mark.parametrize("resolve", [False, True], ids=["resolve-no", "resolve-yes"])
def test_reject_unknown_client_hostname_needs_resolve_client(workdir, start_saslgate,
                                                              start_postfix, resolve):
    """Postfix's reject_unknown_client_hostname sees an unknown client
    without resolve_client (450, the MTA's own "cannot find your
    hostname"), and the confirmed name with it."""
    if resolve and not localhost_name():
        pytest.fail("127.0.0.1 has no forward-confirmed name on this machine")
    pf = start_postfix(extra={"smtpd_client_restrictions": "reject_unknown_client_hostname"})
    sg = gate(start_saslgate, workdir, pf.port, resolve=resolve)
    p = send(sg)
    if resolve:
        assert p.returncode == 0, p.stdout + p.stderr
        pf.wait_delivered(1)
    else:
        assert p.returncode != 0
        assert re.search(r"^<\S*\s+450 4\.7\.25 .*cannot find your hostname", p.stdout,
                         re.M), p.stdout
        # Postfix's reject line names the client's HELO as its own
        assert re.search(r"reject: RCPT from unknown\[127\.0\.0\.1\]: 450 .* "
                         r"helo=<%s>$" % re.escape(HELO), pf.log_text(), re.M), pf.log_text()
        assert pf.delivered() == []


# ------------------------------------------------------- the wire, exactly

def test_hand_over_order_and_helo_attribute(workdir, start_saslgate, start_fake_upstream):
    """EHLO as saslgate, XCLIENT (HELO= still sent), EHLO as the client."""
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port, resolve=False)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO " + HELO)
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=T(30))
        r.expect(221, "QUIT")
    # saslgate's QUIT upstream follows its 221 to the client
    lines = wait_for(lambda: "QUIT" in session_lines(up) and session_lines(up), T(10),
                     "the upstream session's QUIT")
    assert lines[0] == "EHLO sg.test", lines
    assert lines[1].startswith("XCLIENT "), lines
    assert lines[2:] == ["EHLO " + HELO, "QUIT"], lines
    attrs = dict(up.attributes("XCLIENT"))
    assert attrs["HELO"] == HELO.encode() and attrs["NAME"] == b"[UNAVAILABLE]", attrs
    assert attrs["PROTO"] == b"ESMTP" and attrs["LOGIN"] == USER.encode(), attrs


def test_helo_client_gets_ehlo_upstream(workdir, start_saslgate, start_fake_upstream):
    """A client that said HELO (require_auth = no opens the link at MAIL):
    XCLIENT says PROTO=SMTP, and the EHLO after it still is EHLO (saslgate
    needs the upstream's extensions), with the client's name."""
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port, resolve=False,
              listener_plain={"require_auth": "no"})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "HELO " + HELO)
        r.expect(250, "MAIL FROM:<x@example.org>", timeout=T(30))
        r.expect(221, "QUIT")
    lines = session_lines(up)
    assert lines[:3] == ["EHLO sg.test", lines[1], "EHLO " + HELO], lines
    assert lines[1].startswith("XCLIENT "), lines
    attrs = dict(up.attributes("XCLIENT"))
    assert attrs["PROTO"] == b"SMTP" and attrs["HELO"] == HELO.encode(), attrs


@pytest.mark.parametrize("identity", ["xforward", "header", "none"])
def test_other_modes_keep_saslgates_ehlo(workdir, start_saslgate, start_fake_upstream,
                                         identity):
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port, resolve=False, upstream={"identity": identity})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO " + HELO)
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=T(30))
        r.expect(221, "QUIT")
    ehlos = [l for _, l in up.commands if l.startswith("EHLO ")]
    assert ehlos and set(ehlos) == {"EHLO sg.test"}, ehlos


def test_address_without_ptr_via_proxy_header(workdir, start_saslgate, start_fake_upstream):
    """A PROXY v1 header from 127.0.0.1 names the client 192.0.2.1, which has
    no PTR: NAME=[UNAVAILABLE] (or [TEMPUNAVAIL] where no resolver answers),
    and AUTH is answered within the lookup's bound, never later."""
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port, resolve=True,
              listener_plain={"proxy_protocol": "v1", "proxy_trusted_networks": "127.0.0.1"})
    with Raw(sg.port("plain")) as r:
        r.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 587\r\n")
        r.expect(220)
        r.expect(250, "EHLO " + HELO)
        t0 = time.monotonic()
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=T(30))
        took = time.monotonic() - t0
        r.expect(221, "QUIT")
    assert took < T(5) + 2, took
    attrs = dict(up.attributes("XCLIENT"))
    assert attrs["ADDR"] == b"192.0.2.1", attrs
    assert attrs["NAME"] in (b"[UNAVAILABLE]", b"[TEMPUNAVAIL]"), attrs
