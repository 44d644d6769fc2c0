# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of what the DATA scanner (upstream/data_scan.c) hands a real
Postfix: client-supplied X-Authenticated-User fields and NUL octets.

With identity = header saslgate names the user in an X-Authenticated-User
header of its own and removes the client's.  The client's field is
recognised on the line Postfix stores, that is after Postfix removed the
stuffing dot (RFC 5321 4.5.2): the wire line ".X-Authenticated-User: bob"
is the field "X-Authenticated-User: bob".  Also any case of the name, WSP
before the ':' (RFC 5322 obs-optional) and folded continuation lines.

A NUL octet is refused with 550 5.6.0 under bare_newline = reject (nothing
reaches Postfix's queue) and removed under normalize.

The client speaks raw SMTP (sgtest.Raw) so that the wire bytes are exactly
the ones written here; messages are told apart by their Subject, as Postfix
may deliver them in any order.  Postfix relays for saslgate's address
(mynetworks), as an Exchange connector would for identity = header."""

import re

import pytest

from sgtest import Raw, default_config, make_sasldb, plain_b64

USER, PW = "alice", "Al1ce-ident.pw5"
REALM = "sg.test"


def start(start_saslgate, start_postfix, workdir, bare_newline):
    pf = start_postfix(mynetworks="127.0.0.1/32",
                       relay_restrictions="permit_mynetworks, reject")
    db = make_sasldb(workdir / "sasldb2", {USER: PW}, realm=REALM)
    cfg = default_config(workdir, upstream_port=pf.port, sasldb=db, identity="header",
                         limits={"bare_newline": bare_newline})
    return pf, start_saslgate(cfg, secrets={USER: PW})


def login(r):
    r.expect(220)
    r.expect(250, "EHLO client.test")
    r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)


def transaction(r, wire):
    """MAIL, RCPT, DATA, then wire (the DATA octets exactly as sent, ending
    with the client's <CRLF>.<CRLF>) -> the reply to the end of data."""
    r.expect(250, "MAIL FROM:<alice@example.org>")
    r.expect(250, "RCPT TO:<bob@example.net>")
    r.expect(354, "DATA")
    r.send(wire)
    return r.reply(timeout=60)


def by_subject(msgs):
    out = {}
    for m in msgs:
        s = re.search(rb"(?m)^Subject: (\S+)", m)
        assert s, m
        out[s.group(1).decode()] = m
    return out


def header_block(msg):
    """The header section with LF line ends (smtp-sink's dump uses LF)."""
    return msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


XAUTH_FIELD = re.compile(rb"(?im)^x-authenticated-user[ \t]*:[ \t]*(\S*)")

# wire header lines of the client's forgeries; "evil" marks every octet of
# theirs that must not reach the stored message
FORGED = {
    "dotted": b".X-Authenticated-User: bob-evil\r\n",
    "lower": b"x-authenticated-user: bob-evil\r\n",
    "wsp": b"X-Authenticated-User \t : bob-evil\r\n",
    "tab": b"X-AUTHENTICATED-USER\t:bob-evil\r\n",
    "folded": b"X-Authenticated-User: bob-evil\r\n\tfolded-evil\r\n more-evil\r\n",
    "dotfold": b".x-Authenticated-User : bob-evil\r\n. folded-evil\r\n",
    "all": (b".X-Authenticated-User: a-evil\r\n\tf-evil\r\n"
            b"x-authenticated-user : b-evil\r\n"
            b".X-AUTHENTICATED-USER\t:c-evil\r\n"),
}


@pytest.mark.parametrize("bare_newline", ["reject", "normalize"])
def test_client_identity_header_removed(workdir, start_saslgate, start_postfix,
                                        bare_newline):
    pf, sg = start(start_saslgate, start_postfix, workdir, bare_newline)
    with Raw(sg.port("plain")) as r:
        login(r)
        for name, forged in FORGED.items():
            wire = (b"From: alice@example.org\r\n" + forged +
                    b"Subject: " + name.encode() + b"\r\n"
                    b"..X-Authenticated-User: dot-kept\r\n"
                    b"\r\n"
                    b"X-Authenticated-User: body-kept\r\n"
                    b"..stuffed body line\r\n"
                    b".\r\n")
            rep = transaction(r, wire)
            assert rep.code == 250, (name, rep)
        r.expect(221, "QUIT")
    msgs = by_subject(pf.wait_delivered(len(FORGED)))
    assert sorted(msgs) == sorted(FORGED)
    for name, msg in msgs.items():
        h = header_block(msg)
        # exactly one field, saslgate's, naming the logged-in user
        assert XAUTH_FIELD.findall(h) in ([USER.encode()],
                                          [("%s@%s" % (USER, REALM)).encode()]), (name, h)
        assert b"evil" not in msg, (name, msg)
        # "..X-Authenticated-User:" is ".X-Authenticated-User:" to Postfix:
        # another field, kept; the body is not the header section
        assert re.search(rb"(?m)^\.X-Authenticated-User: dot-kept$", h), (name, h)
        body = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
        assert b"\nX-Authenticated-User: body-kept\n" in b"\n" + body, (name, body)
        assert b"\n.stuffed body line\n" in b"\n" + body, (name, body)


def test_client_identity_header_on_bare_newline_lines(workdir, start_saslgate,
                                                      start_postfix):
    """With normalize, lines ending in a bare LF or CR are lines too."""
    pf, sg = start(start_saslgate, start_postfix, workdir, "normalize")
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"From: alice@example.org\n"
                             b".X-Authenticated-User: bob-evil\n\tfold-evil\r"
                             b"x-authenticated-user : c-evil\r\n"
                             b"Subject: bare\n\nbody\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    msg = pf.wait_delivered(1)[0]
    h = header_block(msg)
    assert XAUTH_FIELD.findall(h) in ([USER.encode()],
                                      [("%s@%s" % (USER, REALM)).encode()]), h
    assert b"evil" not in msg and b"Subject: bare" in h


def test_nul_refused_with_reject(workdir, start_saslgate, start_postfix):
    pf, sg = start(start_saslgate, start_postfix, workdir, "reject")
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"From: alice@example.org\r\nSubject: nul\r\n\r\n"
                             b"before\r\nhalf\0line\r\n\0.\r\nafter-nul\r\n.\r\n")
        assert rep.code == 550 and rep.text.startswith("550 5.6.0"), rep
        # "<NUL>." was no end of data: the session is in step
        r.expect(250, "NOOP")
        rep = transaction(r, b"From: alice@example.org\r\nSubject: clean\r\n\r\n"
                             b"clean body\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    msgs = pf.wait_delivered(1)
    assert len(msgs) == 1 and b"clean body" in msgs[0], msgs
    assert b"half" not in msgs[0] and b"after-nul" not in msgs[0]
    assert len(pf.queue_ids()) == 1, pf.queue_ids()
    sg.wait_log(r"event=upstream_abort", 5)


def test_nul_removed_with_normalize(workdir, start_saslgate, start_postfix):
    pf, sg = start(start_saslgate, start_postfix, workdir, "normalize")
    with Raw(sg.port("plain")) as r:
        login(r)
        rep = transaction(r, b"From: alice@example.org\r\nSubject: nul\r\n\r\n"
                             b"half\0line\r\n\0.\r\n.\0\r\n\0.dot\r\n"
                             b"after-nul\r\n.\r\n")
        assert rep.code == 250, rep
        r.expect(221, "QUIT")
    msg = pf.wait_delivered(1)[0]
    assert b"\0" not in msg
    body = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    # "<NUL>." and ".<NUL>" became "." lines (not an end of data); the dot
    # of "<NUL>.dot" is content, kept
    assert body.startswith(b"halfline\n.\n.\n.dot\nafter-nul\n"), body
