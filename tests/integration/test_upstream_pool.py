# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of [upstream] pool_size: an idle upstream connection kept
by a worker and handed to its next session.

What a user observes: consecutive sessions of different users and clients
ride one upstream connection (the MTA logs one connect), every message
names its own user and client; what reaches the upstream for a session on
a kept connection is what a new connection would have carried for it, line
for line; a kept connection the upstream closed meanwhile costs the client
no 4xx; identity = xclient never keeps one; a reload that changes
[upstream] and the shutdown close kept connections with QUIT.

Clients connect from distinct loopback addresses (127.0.0.2, .3, ...) with
distinct HELO names, so a previous session's XFORWARD ADDR/HELO or user
would show."""

import os
import re
import smtplib
import time
import urllib.request

import pytest

from sgtest import (CLOSE, HOST, T, default_config, free_port, header_fields, make_sasldb,
                    wait_for)

USERS = {"alice": "Al1ce-pool.pw3", "bob": "B0b-pool.pw7"}
# (login, client address, HELO) per session, in order
SESSIONS = [("alice", "127.0.0.2", "a.client.test"),
            ("bob", "127.0.0.3", "b.client.test"),
            ("alice", "127.0.0.4", "c.client.test")]
RELAY_USER, RELAY_PW = "relay", "R3lay-acct.pw9"


def gate(start_saslgate, workdir, port, identity, pool, name=None, **sections):
    db = make_sasldb(workdir / "sasldb2", USERS, realm="sg.test")
    up = {"pool_size": pool, "pool_idle_timeout": "30s"}
    secrets = dict(USERS)
    if identity == "auth":
        secret = workdir / "upstream.secret"
        secret.write_text(RELAY_PW + "\n")
        os.chmod(secret, 0o600)
        up.update(auth_user=RELAY_USER, auth_password_file=str(secret))
        secrets[RELAY_USER] = RELAY_PW
    cfg = default_config(workdir, upstream_port=port, sasldb=db, identity=identity,
                         upstream=up, **sections)
    return start_saslgate(cfg, secrets=secrets, name=name)


def send(sg, login, addr, helo, subject):
    """One session from addr saying helo: AUTH as login, one message,
    QUIT.  -> the client's source port."""
    c = smtplib.SMTP(HOST, sg.port("plain"), local_hostname=helo,
                     source_address=(addr, 0), timeout=T(30))
    port = c.sock.getsockname()[1]
    c.login(login, USERS[login])
    c.sendmail("%s@example.org" % login, ["rcpt@example.net"],
               ("Subject: %s\r\n\r\nbody of %s\r\n" % (subject, subject)).encode())
    c.quit()
    return port


def received_ours(msg):
    vals = [v for n, v, _ in header_fields(msg)
            if n and n.lower() == b"received" and b"(saslgate)" in v]
    assert len(vals) == 1, msg
    return vals[0]


def scrape_pool(mport):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, mport), timeout=T(10)) as r:
        text = r.read().decode()
    return {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r'^saslgate_upstream_pool_total\{result="(\w+)"\} (\S+)$', text, re.M)}


# ----------------------------------------------------------- a real Postfix

def postfix_connects(pf):
    return len(re.findall(r"postfix/smtpd\[\d+\]: connect from", pf.log_text()))


def probe_done(pf):
    """saslgate's start-up probe (EHLO, QUIT) has come and gone."""
    wait_for(lambda: re.search(r"postfix/smtpd\[\d+\]: disconnect from", pf.log_text()),
             T(20), "the probe's disconnect in the Postfix log")
    return postfix_connects(pf)


@pytest.mark.parametrize("identity", ["xforward", "header"])
def test_postfix_one_connection_right_identity(workdir, start_saslgate, start_postfix, identity):
    """Three sessions (two users, three client addresses and HELO names)
    over one Postfix connection; each stored message names its own user
    and client.  Then Postfix restarts: the next session still gets 250."""
    pf = start_postfix(xforward_hosts="127.0.0.1", mynetworks="127.0.0.1/32",
                       relay_restrictions="permit_mynetworks, reject")
    mport = free_port()
    sg = gate(start_saslgate, workdir, pf.port, identity, 4,
              metrics={"address": "%s:%d" % (HOST, mport)})
    before = probe_done(pf)
    for i, (login, addr, helo) in enumerate(SESSIONS):
        send(sg, login, addr, helo, "pool-%d" % i)
        # the kept link is handed on once its RSET is answered
        pf.wait_delivered(i + 1)
    msgs = pf.wait_delivered(len(SESSIONS))
    assert postfix_connects(pf) - before == 1, pf.log_text()
    assert len(re.findall(r"event=upstream_ready [^\n]*pooled=yes", sg.log_text())) == 2
    # smtp-sink's dump files have LF line ends
    msgs = [m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in msgs]
    by_subject = {re.search(rb"Subject: (\S+)", m).group(1).decode(): m for m in msgs}
    for i, (login, addr, helo) in enumerate(SESSIONS):
        m = by_subject["pool-%d" % i]
        rcv = [v for n, v, _ in header_fields(m) if n and n.lower() == b"received"]
        ours = received_ours(m)
        assert b"authenticated sender: %s)" % login.encode() in ours, ours
        assert b"[%s]" % addr.encode() in ours and helo.encode() in ours, ours
        if identity == "xforward":
            # Postfix logs the XFORWARD client of each message it queued
            pfx = [v for v in rcv if b"by pfx.test (Postfix)" in v]
            qid = re.search(rb"\bid ([0-9A-F]+)", pfx[0]).group(1).decode()
            assert re.search(r"postfix/smtpd\[\d+\]: %s: client=\S+, "
                             r"orig_client=unknown\[%s\]$" % (qid, re.escape(addr)),
                             pf.log_text(), re.M), (qid, addr, pf.log_text())
        else:
            xau = [v.strip() for n, v, _ in header_fields(m)
                   if n and n.lower() == b"x-authenticated-user"]
            assert xau == [login.encode()], m
    assert scrape_pool(mport) == {"hit": 2, "miss": 1, "stale": 0}

    # Postfix restarts between sessions: the kept link is gone with it
    pid = pf.master_pid()
    os.kill(pid, 15)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid), T(15), "Postfix master to exit")
    pf._start()
    send(sg, "bob", "127.0.0.5", "d.client.test", "after-restart")
    pf.wait_delivered(len(SESSIONS) + 1)


# ------------------------------------------------ same wire as a new link

def normalize(lines, ports):
    """Command lines with each session's client port named by its
    session (a PORT= of another session's would show)."""
    out = []
    for l in lines:
        for i, p in enumerate(ports):
            l = l.replace(b"PORT=%d" % p, b"PORT=<session %d>" % i)
        out.append(l)
    return out


def one_run(start_saslgate, start_fake_upstream, workdir, identity, pool):
    up = start_fake_upstream(auth={RELAY_USER: RELAY_PW} if identity == "auth" else None)
    sub = workdir / ("pool%d" % pool)
    sub.mkdir()
    sg = gate(start_saslgate, sub, up.port, identity, pool, name="sg-pool%d" % pool)
    up.wait_for(lambda: "QUIT" in up.verbs(), what="the probe's QUIT")
    ports = []
    for i, (login, addr, helo) in enumerate(SESSIONS):
        ports.append(send(sg, login, addr, helo, "wire-%d" % i))
        if pool:
            up.wait_for(lambda: up.verbs().count("RSET") >= i + 1, what="RSET %d" % i)
    sg.stop()
    # everything after the probe but the handshake and the ends
    lines = [l for l in up.raw_lines()[2:] if l.split(b" ", 1)[0].rstrip(b"\r\n").upper()
             not in (b"EHLO", b"RSET", b"QUIT", b"AUTH")
             and not (identity == "auth" and b" " not in l.strip())]
    msgs = []
    for m in up.messages:
        fields = header_fields(m.data)
        rcv = received_ours(m.data)
        # the date and the session id are the session's own
        rcv = re.sub(rb"\bid \S+", b"id -", rcv.rsplit(b";", 1)[0])
        rest = m.data.split(b"\r\n\r\n", 1)
        body = b"".join(raw for n, _, raw in fields
                        if not (n and n.lower() == b"received")) + b"\r\n" + rest[1]
        msgs.append((rcv, body))
    return up, normalize(lines, ports), msgs


@pytest.mark.parametrize("identity", ["xforward", "header", "auth", "none"])
def test_kept_link_carries_what_a_new_one_would(workdir, start_saslgate, start_fake_upstream,
                                                identity):
    """The same three sessions with pool_size = 0 and 4: the upstream gets
    the same XFORWARD, MAIL, RCPT, DATA lines and the same messages
    (Received but its date and id, X-Authenticated-User) for each; with
    the pool over one connection (one AUTH for identity = auth)."""
    up0, lines0, msgs0 = one_run(start_saslgate, start_fake_upstream, workdir, identity, 0)
    up1, lines1, msgs1 = one_run(start_saslgate, start_fake_upstream, workdir, identity, 4)
    assert lines1 == lines0
    assert msgs1 == msgs0
    assert len(msgs0) == len(SESSIONS)
    assert up0.connections == 1 + len(SESSIONS)
    assert up1.connections == 2
    if identity == "xforward":
        addrs = [v for n, v in up1.attributes("XFORWARD") if n == "ADDR"]
        helos = [v for n, v in up1.attributes("XFORWARD") if n == "HELO"]
        assert addrs == [a.encode() for _, a, _ in SESSIONS]
        assert helos == [h.encode() for _, _, h in SESSIONS]
    if identity == "auth":
        assert up1.auth_users == [RELAY_USER]
        assert up0.auth_users == [RELAY_USER] * len(SESSIONS)
    # shutdown: the kept connection got QUIT
    assert up1.raw_lines(conn=2)[-1] == b"QUIT\r\n"


# ------------------------------------------------------------ the races

def test_stale_kept_link_is_replaced_once(workdir, start_saslgate, start_fake_upstream):
    """The upstream drops the kept connection as its next MAIL arrives
    (the race a kept connection always has): the client still gets 250 for
    everything, the message goes on a new connection.  A second failure
    in a row is the client's 451, not another retry."""
    up = start_fake_upstream(replies={"MAIL": ["250 2.1.0 Ok", CLOSE, "250 2.1.0 Ok",
                                               CLOSE, CLOSE]})
    mport = free_port()
    sg = gate(start_saslgate, workdir, up.port, "header", 4,
              metrics={"address": "%s:%d" % (HOST, mport)})
    up.wait_for(lambda: "QUIT" in up.verbs(), what="the probe's QUIT")
    send(sg, "alice", "127.0.0.2", "a.client.test", "s1")
    up.wait_for(lambda: "RSET" in up.verbs(), what="RSET")
    send(sg, "bob", "127.0.0.3", "b.client.test", "s2")
    assert len(up.delivered()) == 2
    assert up.connections == 3
    sg.wait_log(r"event=upstream_pool_stale ")
    assert scrape_pool(mport) == {"hit": 1, "miss": 1, "stale": 1}
    # kept again after s2; this time the new connection fails too
    up.wait_for(lambda: up.verbs().count("RSET") >= 2, what="second RSET")
    c = smtplib.SMTP(HOST, sg.port("plain"), local_hostname="c.client.test", timeout=T(30))
    c.login("alice", USERS["alice"])
    code, _ = c.mail("alice@example.org")
    assert code == 451
    c.quit()
    assert up.connections == 4


def test_xclient_never_keeps_and_reload_drops(workdir, start_saslgate, start_fake_upstream):
    """identity = xclient with pool_size set: a new connection per session.
    Switched to xforward by a reload, sessions share one; a reload that
    changes [upstream] again closes it with QUIT, and the next session
    connects anew."""
    up = start_fake_upstream()
    sg = gate(start_saslgate, workdir, up.port, "xclient", 4)
    up.wait_for(lambda: "QUIT" in up.verbs(), what="the probe's QUIT")
    send(sg, "alice", "127.0.0.2", "a.client.test", "x1")
    send(sg, "bob", "127.0.0.3", "b.client.test", "x2")
    assert up.connections == 3
    assert "pooled=yes" not in sg.log_text()
    assert up.verbs().count("RSET") == 0

    text = sg.conf_path.read_text().replace("identity = xclient", "identity = xforward")
    sg.conf_path.write_text(text)
    quits = up.verbs().count("QUIT")
    sg.reload()
    # the reload's probe connects after "reload: done": count it once over
    up.wait_for(lambda: up.verbs().count("QUIT") > quits, what="the reload probe's QUIT")
    n = up.connections
    send(sg, "alice", "127.0.0.2", "a.client.test", "x3")
    up.wait_for(lambda: up.verbs().count("RSET") >= 1, what="RSET")
    send(sg, "bob", "127.0.0.3", "b.client.test", "x4")
    up.wait_for(lambda: up.verbs().count("RSET") >= 2, what="RSET")
    assert up.connections == n + 1
    kept = up.connections
    sg.conf_path.write_text(text.replace("[upstream]\n", "[upstream]\nhelo = other.sg.test\n"))
    quits = up.verbs().count("QUIT")
    sg.reload()
    up.wait_for(lambda: up.raw_lines(conn=kept)[-1:] == [b"QUIT\r\n"],
                what="QUIT on the kept connection")
    up.wait_for(lambda: up.verbs().count("QUIT") >= quits + 2, what="the reload probe's QUIT")
    send(sg, "alice", "127.0.0.2", "a.client.test", "x5")
    assert up.connections == kept + 2  # the probe, and the session's own
    assert len(up.delivered()) == 5
