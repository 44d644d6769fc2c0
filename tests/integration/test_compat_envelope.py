# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of the defaults that let saslgate stand in front of any MTA
for clients that bend RFC 5321: envelope addresses without angle brackets
([server] strict_envelope = no), bare LF line ends in DATA ([limits]
bare_newline = normalize) and EHLO SIZE taken from the upstream.

One real Postfix and two saslgates (the defaults, and strict_envelope =
yes) serve the whole module.  Postfix is as strict as it gets, so that what
it accepts proves what saslgate sent: strict_rfc821_envelopes = yes (a
bracket-less MAIL or RCPT would be a 501 there), smtpd_forbid_bare_newline
= reject (a bare LF would be a 550 there), and message_size_limit =
10240000 (its default, named) under saslgate's max_message_size of 50M."""

import os
import pathlib
import re
import smtplib
import shutil
import subprocess
import tempfile

import pytest

import sgtest
from sgtest import Raw, T, default_config, make_sasldb, plain_b64, wait_for

USER, PW = "alice", "Al1ce-compat.pw4"
SECRETS = {USER: PW}
PF_LIMIT = 10240000


class Env:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sgtest-compat-"))
        os.chmod(self.dir, 0o755)
        self.pf = self.gate = self.strict = None
        self.failed = False

    def start(self):
        self.pf = sgtest.Postfix(self.dir, extra={
            "strict_rfc821_envelopes": "yes",
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "message_size_limit": str(PF_LIMIT),
        })
        db = make_sasldb(self.dir / "sasldb2", SECRETS, realm="sg.test")
        # bare_newline, strict_envelope and max_message_size at their
        # defaults: those are what is tested
        cfg = default_config(self.dir, upstream_port=self.pf.port, sasldb=db)
        self.gate = sgtest.Saslgate(self.dir, cfg, secrets=SECRETS)
        cfg = default_config(self.dir, upstream_port=self.pf.port, sasldb=db,
                             server={"strict_envelope": "yes"})
        self.strict = sgtest.Saslgate(self.dir, cfg, secrets=SECRETS, name="strict")
        for sg in (self.gate, self.strict):
            sg.wait_log(r"event=upstream_probe upstream=127\.0\.0\.1:%d .*size=%d"
                        % (self.pf.port, PF_LIMIT))

    def stop(self):
        problems = []
        for sg in (self.strict, self.gate):
            if sg is not None:
                problems += sg.finish()
        if self.pf is not None:
            self.pf.stop()
        if problems or self.failed or os.environ.get("SG_KEEP_TMP") == "1":
            print("\nsgtest: work directory kept: %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems

    def message(self, qid):
        """The message Postfix queued as qid, as its sink got it, once
        Postfix is done with it (its envelope is then in the log)."""
        wait_for(lambda: re.search(r"%s: removed" % qid, self.pf.log_text()), T(20),
                 "Postfix to deliver %s" % qid, interval=0.1)
        pat = re.compile(rb"\bid %s\b" % qid.encode())
        return wait_for(lambda: next((m for m in self.pf.delivered() if pat.search(m)), None),
                        T(10), "%s at the sink" % qid, interval=0.1)


@pytest.fixture(scope="module")
def env():
    e = Env()
    try:
        e.start()
        yield e
    except BaseException:
        e.failed = True
        raise
    finally:
        problems = e.stop()
        if problems:
            pytest.fail("teardown checks failed:\n  " + "\n  ".join(problems),
                        pytrace=False)


@pytest.fixture(autouse=True)
def _keep_on_failure(request, env):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        env.failed = True


def login(r):
    r.expect(220)
    r.expect(250, "EHLO client.test")
    r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)


def postfix_envelope(pf, qid):
    """(from, [to...]) of a delivered message as Postfix's log has them."""
    log = pf.log_text()
    frm = re.search(r"%s: from=<([^>]*)>" % qid, log)
    tos = re.findall(r"%s: to=<([^>]*)>" % qid, log)
    return frm.group(1) if frm else None, sorted(tos)


def last_qid(rep):
    m = re.search(r"queued as ([0-9A-F]+)", rep.text)
    assert m, rep
    return m.group(1)


# ---------------------------------------------------------------- envelope

def test_bracketless_mail_and_rcpt_relayed_with_brackets(env):
    """What a scanner sends: no angle brackets, blanks after the colon, a
    parameter after the address.  The strict Postfix takes the relayed
    commands, so they went out as "<addr>"."""
    with Raw(env.gate.port("plain")) as r:
        login(r)
        r.expect(250, "MAIL FROM:alice@example.org SIZE=100")
        r.expect(250, "RCPT TO:bob@example.net")
        r.expect(250, "RCPT TO:   carol@example.net")
        r.expect(250, 'RCPT TO:"dan smith"@example.net NOTIFY=NEVER')
        r.expect(354, "DATA")
        r.send(b"Subject: scan\r\n\r\nscanned page\r\n.\r\n")
        rep = r.expect(250)
        r.expect(221, "QUIT")
    qid = last_qid(rep)
    assert b"scanned page" in env.message(qid)
    assert postfix_envelope(env.pf, qid) == (
        "alice@example.org", ['"dan smith"@example.net', "bob@example.net",
                              "carol@example.net"]), env.pf.log_text()[-2000:]
    assert "Illegal address syntax" not in env.pf.log_text()
    env.gate.wait_log(r"event=message user=alice\S* from=<alice@example\.org> rcpts=3 ")


def test_bracketless_pipelined(env):
    """A pipelined group with bracket-less paths: the RCPTs are decided
    while MAIL's reply is due, and every reply comes in order."""
    with Raw(env.gate.port("plain")) as r:
        login(r)
        r.send(b"MAIL FROM:alice@example.org\r\nRCPT TO:bob@example.net\r\n"
               b"RCPT TO:bob@\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
        codes = [r.reply().code for _ in range(5)]
        assert codes == [250, 250, 553, 250, 354], codes
        r.send(b"Subject: piped\r\n\r\npiped\r\n.\r\n")
        qid = last_qid(r.expect(250))
        r.expect(221, "QUIT")
    assert b"piped" in env.message(qid)
    assert postfix_envelope(env.pf, qid) == (
        "alice@example.org", ["bob@example.net", "carol@example.net"])


@pytest.mark.parametrize("line,reply", [
    ("MAIL FROM:", "501 5.5.4"),
    ("MAIL FROM:   ", "501 5.5.4"),
    ("MAIL FROM:@example.org", "553 5.1.3"),
    ("MAIL FROM:alice@", "553 5.1.3"),
    ("MAIL FROM:a<b@example.org", "553 5.1.3"),
    ("MAIL FROM:alice@example.org>", "553 5.1.3"),
    ("MAIL FROM:a,b@example.org", "553 5.1.3"),
    ('MAIL FROM:"alice@example.org', "501 5.5.4"),
    ("MAIL FROM:" + "a" * 250 + "@example.org", "553 5.1.3"),
    ("RCPT TO:", "501 5.5.4"),
    ("RCPT TO:@example.net", "553 5.1.3"),
    ("RCPT TO:bob@", "553 5.1.3"),
])
def test_bracketless_refused_like_bracketed(env, line, reply):
    with Raw(env.gate.port("plain")) as r:
        login(r)
        if line.startswith("RCPT"):
            r.expect(250, "MAIL FROM:<alice@example.org>")
        rep = r.cmd(line)
        assert rep.text.startswith(reply), rep
        # the session goes on: the null sender is "<>", never a bare empty
        r.expect(250, "RSET")
        r.expect(250, "MAIL FROM:<>")
        r.expect(221, "QUIT")


def test_strict_envelope_yes_gives_501(env):
    with Raw(env.strict.port("plain")) as r:
        login(r)
        assert r.cmd("MAIL FROM:alice@example.org").text.startswith("501 5.5.4")
        r.expect(250, "MAIL FROM: <alice@example.org>")
        assert r.cmd("RCPT TO:bob@example.net").text.startswith("501 5.5.4")
        # pipelined: the refused RCPT waits for its turn, replies in order
        r.expect(250, "RSET")
        r.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:bob@example.net\r\n"
               b"RCPT TO:<bob@example.net>\r\n")
        codes = [r.reply().code for _ in range(3)]
        assert codes == [250, 501, 250], codes
        r.expect(250, "RSET")
        r.expect(221, "QUIT")


# ---------------------------------------------------------------- bare LF

def test_curl_upload_of_an_lf_only_file(env):
    """curl sends a file as it is (LF line ends) and adds the end of data
    itself; Postfix, which refuses bare LF here, gets CRLF lines."""
    start = len(env.gate.log_text())
    f = env.dir / "lf-only.eml"
    f.write_bytes(b"From: alice@example.org\nTo: bob@example.net\nSubject: curl lf\n"
                  b"\nfirst line\nsecond line\nlast line\n")
    p = subprocess.run(
        ["curl", "-sS", "--max-time", str(int(T(30))),
         "--url", "smtp://127.0.0.1:%d/client.test" % env.gate.port("plain"),
         "--user", "%s:%s" % (USER, PW), "--mail-from", "alice@example.org",
         "--mail-rcpt", "bob@example.net", "--upload-file", str(f)],
        capture_output=True, text=True, timeout=T(60), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (p.returncode, p.stderr)
    qid = env.gate.wait_log(r"event=message user=alice\S* .* queued as ([0-9A-F]+)",
                            after=start).group(1)
    msg = env.message(qid)
    assert b"Subject: curl lf" in msg
    assert re.search(rb"first line\r?\nsecond line\r?\nlast line", msg), msg
    assert "bare <LF>" not in env.pf.log_text()


SMUGGLE = [b"\n.\n", b"\r.\n", b"\n.\r\n"]


def test_lf_only_and_smuggling_are_one_message_each(env):
    """Raw LF-only text, then the classic smuggling payloads: each is one
    message upstream, holding the would-be second message as text."""
    qids = []
    with Raw(env.gate.port("plain")) as r:
        login(r)
        bodies = [b"Subject: raw lf\n\nline one\nline two\n\r\n.\r\n"]
        bodies += [b"Subject: outer %d\r\n\r\nhello" % i + sep +
                   b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
                   b"DATA\r\nSubject: smuggled\r\n\r\nevil %d\r\n.\r\n" % i
                   for i, sep in enumerate(SMUGGLE)]
        for body in bodies:
            r.expect(250, "MAIL FROM:<alice@example.org>")
            r.expect(250, "RCPT TO:<bob@example.net>")
            r.expect(354, "DATA")
            r.send(body)
            qids.append(last_qid(r.expect(250)))
        # in step: nothing of a payload was read as a command
        r.expect(250, "NOOP")
        r.expect(221, "QUIT")
    msgs = [env.message(qid) for qid in qids]
    log = env.pf.log_text()
    assert "evil@example.org" not in log and "victim@" not in log
    assert "bare <LF>" not in log
    assert len(set(qids)) == len(bodies)
    for qid in qids:
        assert postfix_envelope(env.pf, qid) == ("alice@example.org", ["bob@example.net"])
    assert b"raw lf" in msgs[0] and re.search(rb"line one\r?\nline two", msgs[0]), msgs[0]
    for i, m in enumerate(msgs[1:]):
        assert b"Subject: outer %d" % i in m, m
        assert b"MAIL FROM:<evil@example.org>" in m and b"evil %d" % i in m, m
        # no bare CR reached the stored message either
        assert re.search(rb"\r(?!\n)", m) is None, m


# ---------------------------------------------------------------- SIZE

def test_ehlo_size_is_the_upstreams(env):
    with Raw(env.gate.port("plain")) as r:
        r.expect(220)
        kw = [l[4:] for l in r.expect(250, "EHLO client.test").lines[1:]]
        assert "SIZE %d" % PF_LIMIT in kw, kw
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
        rep = r.cmd("MAIL FROM:<alice@example.org> SIZE=12000000")
        # ours, not Postfix's "Message size exceeds fixed limit"
        assert rep.text == ("552 5.3.4 Message size exceeds fixed maximum "
                            "message size"), rep
        r.expect(250, "MAIL FROM:alice@example.org SIZE=%d" % PF_LIMIT)
        r.expect(250, "RSET")
        r.expect(221, "QUIT")


def test_message_over_the_upstreams_size_is_refused_by_us(env):
    """12 MiB against Postfix's 10240000: our 552 once the limit is passed,
    the upstream connection closed without an end of data."""
    before = env.pf.log_text()
    start = len(env.gate.log_text())
    with Raw(env.gate.port("plain"), timeout=60) as r:
        login(r)
        r.expect(250, "MAIL FROM:<alice@example.org>")
        r.expect(250, "RCPT TO:<bob@example.net>")
        r.expect(354, "DATA")
        line = b"z" * 1022 + b"\r\n"
        r.send(b"Subject: too big\r\n\r\n" + line * (12 << 10) + b".\r\n")
        rep = r.reply(timeout=60)
        assert rep.text == ("552 5.3.4 Message size exceeds fixed maximum "
                            "message size"), rep
        # the session and the link go on
        r.expect(250, "MAIL FROM:<alice@example.org>")
        r.expect(250, "RCPT TO:<bob@example.net>")
        r.expect(354, "DATA")
        r.send(b"Subject: small after big\r\n\r\nsmall\r\n.\r\n")
        qid = last_qid(r.expect(250))
        r.expect(221, "QUIT")
    env.gate.wait_log(r"event=upstream_abort upstream=\S+ reason=\"message too big\"",
                      after=start)
    assert b"small after big" in env.message(qid)
    assert not any(b"too big" in m for m in env.pf.delivered())
    new = env.pf.log_text()[len(before):]
    # Postfix saw the connection go in the middle of DATA: nothing queued
    # but the small one
    assert re.search(r"lost connection after DATA", new), new
    assert len(re.findall(r"qmgr\[\d+\]: [0-9A-F]+: from=", new)) == 1, new


def test_upstream_size_change_is_followed(env):
    """Postfix's limit changes (and Postfix reloads): the next upstream
    connection's EHLO updates what saslgate advertises; a reload re-probes."""
    def pf_size():
        # a new smtpd process reads main.cf as it is now
        with smtplib.SMTP("127.0.0.1", env.pf.port, timeout=T(5)) as c:
            c.ehlo("probe.test")
            return int(c.esmtp_features.get("size", "0") or 0)

    main = env.pf.etc / "main.cf"
    orig = main.read_text()
    try:
        main.write_text(orig.replace("message_size_limit = %d" % PF_LIMIT,
                                     "message_size_limit = 5000000"))
        assert env.pf.postfix("reload").returncode == 0
        # Postfix's own "reload" log line can be lost while its log daemon
        # restarts: what counts is the limit its smtpd now advertises
        wait_for(lambda: pf_size() == 5000000, T(15), "Postfix to advertise SIZE 5000000")
        start = len(env.gate.log_text())

        def relinked():
            # a new link (AUTH opens one) reads Postfix's EHLO anew
            with Raw(env.gate.port("plain")) as r:
                login(r)
                r.expect(221, "QUIT")
            return re.search(r"event=upstream_size upstream=\S+ size=5000000 was=%d"
                             % PF_LIMIT, env.gate.log_text()[start:])
        wait_for(relinked, T(15), "a link to see the new SIZE", interval=0.5)
        with Raw(env.gate.port("plain")) as r:
            r.expect(220)
            kw = [l[4:] for l in r.expect(250, "EHLO client.test").lines[1:]]
            assert "SIZE 5000000" in kw, kw
    finally:
        main.write_text(orig)
        env.pf.postfix("reload")
        wait_for(lambda: pf_size() == PF_LIMIT, T(15), "Postfix to advertise its SIZE again")
    # a reload of saslgate probes again
    start = len(env.gate.log_text())
    env.gate.reload()
    env.gate.wait_log(r"event=upstream_probe upstream=\S+ .*size=%d" % PF_LIMIT, after=start)
    with Raw(env.gate.port("plain")) as r:
        r.expect(220)
        kw = [l[4:] for l in r.expect(250, "EHLO client.test").lines[1:]]
        assert "SIZE %d" % PF_LIMIT in kw, kw
