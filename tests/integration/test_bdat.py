# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of BDAT (RFC 3030 CHUNKING) through saslgate.

saslgate offers CHUNKING when the probed upstream does, reads each chunk's
octets as message content (never as commands, even for a refused BDAT),
dot-stuffs them for its DATA scanner (size limit, Received header,
X-Authenticated-User stripping, bare CR/LF and NUL policy) and relays the
result as BDAT to an upstream that offers CHUNKING, or as DATA to one that
does not.  Replies are lockstep: a chunk that is not the LAST gets our 250
once its octets are taken, the LAST the upstream's final reply.

Python's smtplib has no BDAT: the client is sgtest.Raw, so the wire bytes
are exactly the ones written here.  Postfix 3.7 offers CHUNKING by default
(smtpd_discard_ehlo_keywords is empty); the fallback test has it discard
CHUNKING for one client address only, which the probe (from saslgate's own
address, before XCLIENT) does not see.  Stored messages are compared from
their Subject: line on (Postfix's and saslgate's Received headers come
first); smtp-sink's dump ends lines in LF, so both sides are compared with
LF line ends."""

import random
import re
import socket

import pytest

from sgtest import HOST, T, Raw, default_config, make_sasldb, plain_b64

USER, PW = "alice", "Al1ce-bdat.pw9"
REALM = "sg.test"
# headers Postfix would otherwise add (Date, Message-ID), so the header
# section is stored as sent
HDRS = (b"From: alice@example.org\r\nTo: bob@example.net\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n")


def msg(tag, body):
    return (b"Subject: %s\r\nMessage-ID: <%s@example.org>\r\n" % (tag, tag) + HDRS
            + b"\r\n" + body)


def gate(start_saslgate, workdir, upstream_port, **sections):
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm=REALM)
    sg = start_saslgate(default_config(workdir, upstream_port=upstream_port, sasldb=db,
                                       **sections), secrets={USER: PW})
    sg.wait_log(r"event=upstream_probe upstream=127\.0\.0\.1:%d " % upstream_port,
                timeout=10)
    return sg


def session(sg, source=None):
    """A Raw client on the plain listener, greeted, EHLO'd and logged in;
    -> (client, EHLO keywords)."""
    if source:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(T(15))
        s.connect((HOST, sg.port("plain")))
        r = Raw.__new__(Raw)
        r.timeout, r.sock, r.buf = T(15), s, b""
    else:
        r = Raw(sg.port("plain"))
    r.expect(220)
    kw = [l[4:] for l in r.expect(250, "EHLO client.test").lines[1:]]
    r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
    return r, kw


def bdat(r, chunks, zero_last=False, last=True, envelope=False):
    """The chunks as BDAT commands, all in one write (PIPELINING), the last
    one with LAST (or a "BDAT 0 LAST" after them; or none), with MAIL and
    RCPT in front when envelope; -> the chunks' replies."""
    wire = b""
    if envelope:
        wire = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
    for i, c in enumerate(chunks):
        end = last and i == len(chunks) - 1 and not zero_last
        wire += b"BDAT %d%s\r\n" % (len(c), b" LAST" if end else b"") + c
    if zero_last:
        wire += b"BDAT 0 LAST\r\n"
    r.send(wire)
    if envelope:
        assert [r.reply().code for _ in range(2)] == [250, 250]
    return [r.reply(timeout=60) for _ in range(len(chunks) + zero_last)]


def envelope(r):
    r.expect(250, "MAIL FROM:<alice@example.org>")
    r.expect(250, "RCPT TO:<bob@example.net>")


def lf(b):
    return b.replace(b"\r\n", b"\n")


def stored(msgs, tag):
    """The message with Subject tag, from that line on, LF line ends
    (without the empty line smtp-sink's dump ends with)."""
    for m in msgs:
        i = m.find(b"Subject: %s\n" % tag)
        if i >= 0:
            assert m.endswith(b"\n\n"), m[-100:]
            return m[i:-1]
    raise AssertionError("no message %r among %d" % (tag, len(msgs)))


def send(r, wire):
    """wire exactly as given (Raw.cmd would add a CRLF); -> the reply."""
    r.send(wire)
    return r.reply()


def chunk_ok(rep, n):
    assert rep.code == 250 and rep.text == "250 2.0.0 %d octets received" % n, rep


# ---------------------------------------------------------------- relayed as BDAT

def test_chunks_relayed_as_bdat(workdir, start_saslgate, start_postfix):
    pf = start_postfix()
    sg = gate(start_saslgate, workdir, pf.port)
    body = b"".join(b"line %03d of the hundred-chunk message\r\n" % i for i in range(300))
    rnd = random.Random(3)
    big = b"".join(b"." * (i % 3) + bytes(rnd.choice(b"abcdefghij .,;") for _ in range(70))
                   + b"\r\n" for i in range(15000))
    cases = {
        # pipelined with MAIL and RCPT, as Exchange sends it
        b"one": [msg(b"one", b"a single chunk\r\n")],
        # an empty chunk that is not the LAST
        b"two": [msg(b"two", b"first half,"), b"", b" second half\r\n"],
        # 1 MiB in three chunks: the upstream's write queue fills, the
        # client is paused and resumed (backpressure)
        b"big": [msg(b"big", big[:300000]), big[300000:700001], big[700001:]],
        # 100 chunks cut at every 37th octet, then BDAT 0 LAST
        b"hundred": None,
        # a chunk ends in CR, the next begins with LF; a line that begins
        # with '.' across a boundary; <CRLF>.<CRLF> inside a chunk is
        # content; the message does not end in CRLF (it gets one)
        b"awkward": [msg(b"awkward", b"cr|lf split\r"), b"\n.dot line across\r\n",
                     b".", b".two dots\r\nend of data?\r\n.\r\nno: content\r\n.\r",
                     b"\nlast line without CRLF"],
    }
    whole = msg(b"hundred", body)
    step = -(-len(whole) // 100)
    cases[b"hundred"] = [whole[i:i + step] for i in range(0, len(whole), step)]
    assert len(cases[b"hundred"]) == 100
    r, kw = session(sg)
    assert "CHUNKING" in kw, kw
    # a message given up: RSET between chunks, nothing of it delivered
    envelope(r)
    half = msg(b"dropped", b"half a message\r\n")
    chunk_ok(bdat(r, [half], last=False)[0], len(half))
    r.expect(250, "RSET")
    for tag, chunks in cases.items():
        if tag != b"one":
            envelope(r)
        reps = bdat(r, chunks, zero_last=tag == b"hundred", envelope=tag == b"one")
        for rep, c in zip(reps[:-1], chunks):
            chunk_ok(rep, len(c))
        assert reps[-1].code == 250 and "queued as" in reps[-1].text, (tag, reps[-1])
    r.expect(221, "QUIT")
    msgs = pf.wait_delivered(len(cases))
    assert not any(b"Subject: dropped" in m for m in msgs)
    for tag, chunks in cases.items():
        want = b"".join(chunks)
        if not want.endswith(b"\r\n"):
            want += b"\r\n"
        assert stored(msgs, tag) == lf(want), tag
    # our Received header, with the user, above the message
    m = [m for m in msgs if b"Subject: one" in m][0]
    assert re.search(rb"Received: from client\.test \(\S+ \[127\.0\.0\.1\]\)\r?\n"
                     rb"\tby sg\.test \(saslgate\) with ESMTPA id \S+\r?\n"
                     rb"\t\(authenticated sender: alice\S*\)", m), m[:800]
    # Postfix took BDAT (its disconnect line counts the commands), no DATA;
    # the RSET went on the same connection
    log = pf.log_text()
    counts = re.findall(r"disconnect from .* mail=6 rcpt=6 (bdat=\d+) rset=1 quit=1 ", log)
    assert counts and "data=" not in log, log[-2000:]
    # one message line per message, as for DATA
    lines = re.findall(r"event=message user=alice\S* .*reply=\"250 2\.0\.0 Ok", sg.log_text())
    assert len(lines) == len(cases)


def test_limits_identity_and_failed_chunks(workdir, start_saslgate, start_postfix):
    """identity = header: the client's X-Authenticated-User goes (split
    across chunks), ours comes; a message past max_message_size gets
    552 5.3.4 at its LAST and nothing reaches Postfix; RSET after a failed
    chunk; a bare LF under bare_newline = reject fails the message."""
    pf = start_postfix(mynetworks="127.0.0.1/32",
                       relay_restrictions="permit_mynetworks, reject")
    sg = gate(start_saslgate, workdir, pf.port, identity="header",
              limits={"max_message_size": "20k", "bare_newline": "reject",
                      "idle_timeout": "60s"})
    r, kw = session(sg)
    assert "CHUNKING" in kw, kw
    # the forged field split inside its name and before its folded line
    envelope(r)
    reps = bdat(r, [msg(b"ident", b"")[:-2] + b"X-Authent", b"icated-User: bob-evil\r\n",
                    b"\tfolded-evil\r\n\r\nbody\r\n"])
    assert [x.code for x in reps] == [250, 250, 250], reps
    # too big: the chunks before the limit get 250, the one that passes it
    # and every later one (the LAST too) 552 5.3.4, and the whole upload is
    # read; the repeats are not counted as errors (the session lives on)
    envelope(r)
    big = [msg(b"big", b"")] + [b"x" * 78 + b"\r\n"] * 400
    reps = bdat(r, big)
    codes = [x.code for x in reps]
    k = codes.index(552)
    assert 200 < k < 300 and set(codes[k:]) == {552}, codes
    assert reps[-1].text.startswith("552 5.3.4"), reps[-1]
    # RSET after a failed chunk ends the transaction
    envelope(r)
    reps = bdat(r, [b"x" * 21000, b"more"], last=False)
    assert [x.text[:9] for x in reps] == ["552 5.3.4"] * 2, reps
    r.expect(250, "RSET")
    envelope(r)
    reps = bdat(r, [msg(b"bare", b"a bare\nLF"), b"\r\n"])
    assert [x.text[:9] for x in reps] == ["550 5.5.2"] * 2, reps
    envelope(r)
    reps = bdat(r, [msg(b"after", b"after the failures\r\n")])
    assert reps[0].code == 250 and "queued as" in reps[0].text, reps
    r.expect(221, "QUIT")
    msgs = pf.wait_delivered(2)
    assert len(msgs) == 2
    m = stored(msgs, b"ident")
    assert b"evil" not in m and m.endswith(b"\n\nbody\n"), m
    whole = [x for x in msgs if b"Subject: ident" in x][0]
    assert re.search(rb"(?m)^X-Authenticated-User: alice\S*\r?$", whole), whole[:800]
    assert stored(msgs, b"after").endswith(b"after the failures\n")
    log = sg.log_text()
    assert re.search(r"event=message user=alice\S* .*reply=\"552 5\.3\.4", log)
    assert re.search(r"event=upstream_abort .*reason=\"message too big\"", log)


# ---------------------------------------------------------------- relayed as DATA

def test_upstream_without_chunking_or_pipelining(workdir, start_saslgate, start_postfix):
    """The probe saw CHUNKING and PIPELINING; after XCLIENT ADDR=127.0.0.2
    the upstream's EHLO lacks CHUNKING (the chunks go as DATA), after
    ADDR=127.0.0.3 it lacks PIPELINING (one BDAT at a time)."""
    maps = workdir / "discard.cidr"
    maps.write_text("127.0.0.2/32 chunking\n127.0.0.3/32 pipelining\n")
    pf = start_postfix(extra={"smtpd_discard_ehlo_keyword_address_maps":
                              "cidr:%s" % maps})
    sg = gate(start_saslgate, workdir, pf.port)
    chunks = [msg(b"fallback", b"..two dots\r\n.\r\n"), b".one dot\r", b"\nend\r\n"]
    for source, tag in (("127.0.0.2", b"fallback"), ("127.0.0.3", b"lockstep")):
        r, kw = session(sg, source=source)
        assert "CHUNKING" in kw, kw
        # given up between chunks: DATA is aborted, BDAT gets RSET
        envelope(r)
        half = msg(b"dropped", b"x\r\n")
        chunk_ok(bdat(r, [half], last=False)[0], len(half))
        r.expect(250, "RSET")
        envelope(r)
        chunks[0] = msg(tag, b"..two dots\r\n.\r\n")
        reps = bdat(r, chunks, zero_last=True)
        assert [x.code for x in reps[:-1]] == [250, 250, 250], reps
        assert reps[-1].code == 250 and "queued as" in reps[-1].text, reps[-1]
        r.expect(221, "QUIT")
        assert stored(pf.wait_delivered(1 + (tag == b"lockstep")), tag) == \
            lf(b"".join(chunks))
    assert not any(b"Subject: dropped" in m for m in pf.delivered())
    assert len(re.findall(r"event=bdat_as_data upstream=127\.0\.0\.1:%d " % pf.port,
                          sg.log_text())) == 2
    log = pf.log_text()
    # DATA: the aborted message's connection, then the delivered one; BDAT
    # one at a time, the given-up message ended by RSET on the connection
    assert re.search(r"lost connection after DATA .* from unknown\[127\.0\.0\.2\]", log)
    assert re.search(r"disconnect from unknown\[127\.0\.0\.2\] .* mail=1 rcpt=1 data=1 "
                     r"rset=1 quit=1 ", log), log[-3000:]
    assert re.search(r"disconnect from unknown\[127\.0\.0\.3\] .* mail=2 rcpt=2 bdat=\d+ "
                     r"rset=1 quit=1 ", log), log[-3000:]


# ---------------------------------------------------------------- refused BDAT

# what a refused chunk holds must never run as commands
CMDS = b"RSET\r\nQUIT\r\n"


def test_bdat_when_chunking_not_offered(workdir, start_saslgate, start_postfix):
    pf = start_postfix(extra={"smtpd_discard_ehlo_keywords": "chunking, silent-discard"})
    sg = gate(start_saslgate, workdir, pf.port)
    r, kw = session(sg)
    assert "CHUNKING" not in kw, kw
    envelope(r)
    rep = send(r, b"BDAT %d LAST\r\n" % len(CMDS) + CMDS)
    assert rep.text == "503 5.5.1 BDAT without CHUNKING, use DATA", rep
    # neither the RSET nor the QUIT ran: the transaction is there
    r.expect(503, "MAIL FROM:<alice@example.org>")
    r.expect(354, "DATA")
    r.send(msg(b"data", b"by DATA\r\n") + b".\r\n")
    assert r.reply(timeout=30).code == 250
    r.expect(221, "QUIT")
    assert stored(pf.wait_delivered(1), b"data").endswith(b"by DATA\n")
    assert re.search(r"event=bdat_refused size=12 reason=\"CHUNKING not offered\"",
                     sg.log_text())


def test_refused_bdat_octets_are_no_commands(workdir, start_saslgate, start_fake_upstream):
    """Out of sequence, syntax, HELO: each refused BDAT still takes its
    octets; an unreadable size closes the session (421)."""
    up = start_fake_upstream(extensions=[
        "PIPELINING", "SIZE 10000000", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING",
        "XCLIENT NAME ADDR PORT PROTO HELO LOGIN"])
    sg = gate(start_saslgate, workdir, up.port)
    r, kw = session(sg)
    assert "CHUNKING" in kw, kw
    rep = send(r, b"BDAT %d\r\n" % len(CMDS) + CMDS)          # before MAIL
    assert rep.text == "503 5.5.1 Need MAIL command", rep
    r.expect(250, "MAIL FROM:<alice@example.org>")
    rep = send(r, b"BDAT %d LAST\r\n" % len(CMDS) + CMDS)     # before RCPT
    assert rep.text == "503 5.5.1 Need RCPT command", rep
    r.expect(250, "RCPT TO:<bob@example.net>")
    # a chunk of a transaction refused for its syntax fails the message:
    # the well-formed LAST after it gets that failure and ends it
    rep = send(r, b"BDAT %d FIRST\r\n" % len(CMDS) + CMDS)
    assert rep.text == "501 5.5.4 Syntax: BDAT chunk-size [LAST]", rep
    r.expect(503, "RCPT TO:<carol@example.net>")           # no RCPT after BDAT
    rep = send(r, b"BDAT %d LAST\r\n" % len(CMDS) + CMDS)
    assert rep.text == "501 5.5.4 Syntax: BDAT chunk-size [LAST]", rep
    r.expect(250, "MAIL FROM:<alice@example.org>")         # the transaction is over
    r.expect(250, "RSET")
    # HELO: no EHLO offered CHUNKING to this session
    r.expect(250, "HELO client.test")
    rep = send(r, b"BDAT %d\r\n" % len(CMDS) + CMDS)
    assert rep.text == "503 5.5.1 BDAT without CHUNKING, use DATA", rep
    r.expect(250, "NOOP")
    r.line("BDAT 12x")
    assert r.reply().text.startswith("421 4.5.4 sg.test BDAT chunk size unreadable")
    assert r.closed()
    # only our own commands reached the upstream: one MAIL per
    # transaction, the one RSET
    verbs = up.verbs()
    assert verbs.count("MAIL") == 2 and verbs.count("RSET") == 1, verbs
    assert "DATA" not in verbs
    log = sg.log_text()
    for why in ("no transaction with a recipient", "syntax", "CHUNKING not offered",
                "chunk size unreadable"):
        assert "reason=\"%s\"" % why in log, why
