# SPDX-License-Identifier: BSD-2-Clause
"""Real Debian submission clients through saslgate to a real Postfix.

One saslgate serves the module: a STARTTLS listener (the "587" of the
table) and an implicit-TLS listener (the "465"), both on free ports with
require_auth, a self-signed certificate the harness makes (CN and DNS SAN
"localhost", IP SAN 127.0.0.1), users in a sasldb, identity = xclient to a
real private Postfix (the "upstream").  That Postfix relays what it accepts
to a FakeUpstream, which keeps the DATA octets exactly as Postfix sent them
(smtp-sink's dump files turn CRLF into LF, so they cannot show byte-exact
delivery).

Each client sends, over each listener, a message with a unique Message-ID
whose body holds awkward but legal content: a line starting with ".", one
starting with "..", a line that is a lone ".", leading and trailing white
space, a line of ~900 octets, an empty line, a "From " line, 8-bit UTF-8
(only where the client declares BODY=8BITMIME) and a last line given to the
client without a line end (the client adds CRLF before the final dot).  The
test then asserts:

  - the client reports success;
  - Postfix accepted exactly one message with that Message-ID (cleanup's
    message-id= line) and the next hop got exactly one, whose body (after
    the first empty line, dot-stuffing undone) is byte for byte the one the
    client put on the wire; headers are not compared, saslgate and Postfix
    add some;
  - Postfix logged sasl_username=<login> for that queue id (the XCLIENT
    hand-over), and saslgate's event=message line names the user and that
    queue id; the session came in on the intended listener, with TLS.

What "the body the client put on the wire" is, per client:
  msmtp          LF-only input (as a sendmail replacement gets it); msmtp
                 sends CRLF lines, so the CRLF form of the input.
  curl           an LF-only file uploaded as it is (curl adds no CR);
                 saslgate's [limits] bare_newline = normalize (the default)
                 makes CRLF of the bare LFs, so the CRLF-normalised text.
  swaks          a CRLF file (--data @file), with and without --pipeline.
  smtplib        sendmail() of CRLF bytes with BODY=8BITMIME; send_message()
                 of an EmailMessage (set_content, cte 8bit) with BODY=8BITMIME:
                 the body as send_message writes it (seen first by a
                 FakeUpstream; it turns "From " at a line start into ">From ").
  Net::SMTP      CRLF bytes, mail(Bits => 8) for BODY=8BITMIME.
  s-nail         an MUA: it builds the MIME body itself (quoted-printable for
                 the long line).  The same input is first handed to s-nail
                 with mta = a capture program (its sendmail interface): the
                 body it writes there, in CRLF form, is what it then sends
                 over SMTP; its QP is also decoded and compared with the text.
  Postfix        a second private Postfix as a smart-host client (relayhost
                 = saslgate, smtp_sasl_auth_enable, TLS encrypt, the
                 certificate verified through a per-destination "secure"
                 policy); a message submitted to it over SMTP with
                 BODY=8BITMIME arrives with the body unchanged.

TLS: every client is given the certificate as its trust anchor and verifies
it; none has verification turned off.

At the end the module prints the client table (client, listener, delivered
byte-exact, identity) with capture disabled, so it is in the ctest log.
"""

import email.policy
import os
import pathlib
import quopri
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from email.message import EmailMessage

import pytest

import sgtest
from sgtest import HOST, T, wait_for

USER, PW = "mua.alice", "Cl1ent-Compat.pw7"
SECRETS = {USER: PW}
REALM = "sg.test"
FROM, TO = "alice@example.org", "bob@example.net"
LISTENERS = {"587": "submission", "465": "submissions"}

# (table name, key) in table order
CLIENTS = [
    ("msmtp", "msmtp"),
    ("curl", "curl"),
    ("swaks", "swaks"),
    ("swaks --pipeline", "swaks-pipeline"),
    ("python smtplib sendmail", "smtplib"),
    ("python smtplib send_message", "smtplib-msg"),
    ("perl Net::SMTP", "netsmtp"),
    ("s-nail", "snail"),
    ("postfix smart host", "postfix"),
]
NAMES = dict((k, n) for n, k in CLIENTS)
RESULTS = {}  # (key, listener) -> {"delivered": str, "identity": str, "secs": float, "note": str}


# ---------------------------------------------------------------- the body

# ~900 octets of printable ASCII: every character from "!" to "~" in turn
# (no "\n" pair and no "%NAME%" token: swaks would expand those in --data)
LONG7 = "".join(chr(0x21 + i % 94) for i in range(900))
# 900 octets of UTF-8: two-, three- and four-octet sequences
LONG8 = "8-bit long line: " + "Grüße aus Köln, ünïcödé ✓ 日本語 🙂 " * 17
LONG8 += "." * (900 - len(LONG8.encode()))


def body_text(eightbit):
    """The body as the user wrote it: lines joined with "\\n", the last one
    without a line end (str)."""
    lines = [
        ".leading dot",
        "..two leading dots",
        ".",
        "  two spaces first, tab and space last \t ",
        "From the start of a line (mbox would quote it)",
        LONG7,
        "",
        "= is not quoted-printable here: =3D =",
    ]
    if eightbit:
        lines += ["Grüße — 8-bit UTF-8: ünïcödé ✓ 日本語", LONG8]
    lines.append("last line, given without a line end")
    return "\n".join(lines)


def crlf(text):
    """The CRLF form of a "\\n" text, ending in CRLF (what SMTP carries)."""
    b = text.encode() if isinstance(text, str) else text
    b = b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return b if b.endswith(b"\r\n") else b + b"\r\n"


def headers(mid, subject, eightbit, sep="\r\n"):
    h = ["From: Alice <%s>" % FROM, "To: <%s>" % TO, "Subject: %s" % subject,
         "Message-ID: %s" % mid, "Date: Thu, 01 Jan 2026 10:00:00 +0000",
         "MIME-Version: 1.0",
         "Content-Type: text/plain; charset=%s" % ("utf-8" if eightbit else "us-ascii"),
         "Content-Transfer-Encoding: %s" % ("8bit" if eightbit else "7bit")]
    return (sep.join(h) + sep + sep).encode()


def message_id(key, listener):
    return "<%s.%s.%d.%d@client.test>" % (key.replace(" ", "-"), listener, os.getpid(),
                                          time.monotonic_ns())


# ---------------------------------------------------------------- environment

class Env:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sgtest-clients-"))
        os.chmod(self.dir, 0o755)
        self.fake = self.pf = self.sg = None
        self.failed = False

    def start(self):
        # the next hop after Postfix: keeps DATA exactly as Postfix sent it
        self.fake = sgtest.FakeUpstream()
        hop = "smtp:[%s]:%d" % (HOST, self.fake.port)
        self.pf = sgtest.Postfix(self.dir, hostname="upstream.test",
                                 extra={"default_transport": hop, "relay_transport": hop})
        self.cert, self.key = sgtest.make_cert(self.dir)  # CN/DNS localhost, IP 127.0.0.1
        db = sgtest.make_sasldb(self.dir / "sasldb2", SECRETS, realm=REALM)
        cfg = sgtest.default_config(self.dir, upstream_port=self.pf.port, cert=self.cert,
                                    key=self.key, sasldb=db, listener_plain=None)
        self.sg = sgtest.Saslgate(self.dir, cfg, secrets=SECRETS)
        self.sg.wait_log(r"event=upstream_probe upstream=127\.0\.0\.1:%d .*8bitmime=1"
                         % self.pf.port)
        self.ports = {lst: self.sg.port(name) for lst, name in LISTENERS.items()}

    def stop(self):
        problems = []
        if self.sg is not None:
            problems += self.sg.finish()
        if self.pf is not None:
            self.pf.stop()
        if self.fake is not None:
            self.fake.stop()
            problems += ["fake next hop: %s" % e for e in self.fake.errors]
        if problems or self.failed or os.environ.get("SG_KEEP_TMP") == "1":
            print("\nsgtest: work directory kept: %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems

    # ---- checks

    def verify(self, key, listener, mid, subject, expected, res):
        """Every check after a client said it sent the message; fills
        res["delivered"] / res["identity"] and returns the problems."""
        problems = []
        pat = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=%s"
                         % re.escape(mid))
        wait_for(lambda: pat.search(self.pf.log_text()), T(30),
                 "Postfix to accept %s" % mid, interval=0.1)
        qid = pat.search(self.pf.log_text()).group(1)
        wait_for(lambda: re.search(r"%s: removed" % qid, self.pf.log_text()), T(30),
                 "Postfix to pass on %s" % qid, interval=0.1)
        log = self.pf.log_text()
        qids = pat.findall(log)
        if qids != [qid]:
            problems.append("Postfix accepted %d messages with Message-ID %s: %s"
                            % (len(qids), mid, qids))
        if not re.search(r"%s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                         % (qid, re.escape(TO), self.fake.port), log):
            problems.append("Postfix did not log status=sent for %s" % qid)

        # the stored message: exactly one at the next hop, body byte-exact
        mpat = re.compile(rb"(?im)^Message-ID:[ \t]*" + re.escape(mid.encode()) + rb"\r$")
        got = [m for m in self.fake.delivered() if mpat.search(m.split(b"\r\n\r\n", 1)[0])]
        if len(got) != 1:
            problems.append("%d messages with Message-ID %s at the next hop" % (len(got), mid))
        else:
            msg = sgtest.unstuff(got[0])
            head, sep, body = msg.partition(b"\r\n\r\n")
            if not sep:
                problems.append("no end of the header section in the stored message")
            elif not re.search(rb"(?im)^Subject: " + re.escape(subject.encode()) + rb"\r$",
                               head + b"\r\n"):
                problems.append("Subject: %s not in the stored header: %r" % (subject, head))
            elif body != expected:
                problems.append("stored body differs from the one sent: %s"
                                % describe_diff(expected, body))
            else:
                res["delivered"] = "yes"

        # the identity: Postfix (XCLIENT LOGIN=) and saslgate's own line
        ident = []
        m = re.search(r"postfix/smtpd\[\d+\]: %s: client=[^\n]*" % qid, log)
        if not m or not re.search(r", sasl_method=XCLIENT, sasl_username=%s$"
                                  % re.escape(USER), m.group(0)):
            ident.append("Postfix has no sasl_username=%s for %s: %r"
                         % (USER, qid, m.group(0) if m else None))
        sl = self.sg.log_text()
        m = re.search(r"sid=(\S+) event=message user=(\S+) [^\n]*queued as %s\"" % qid, sl)
        if not m:
            ident.append("no saslgate event=message line for %s" % qid)
        else:
            sid = m.group(1)
            if m.group(2) != sgtest.log_escape(USER):
                ident.append("saslgate logged user=%s for %s" % (m.group(2), qid))
            if not re.search(r"sid=%s event=connect [^\n]*listener=%s\b"
                             % (re.escape(sid), LISTENERS[listener]), sl):
                ident.append("session %s did not come in on listener %s" % (sid,
                                                                            LISTENERS[listener]))
            if not re.search(r"sid=%s event=tls result=ok [^\n]*version=TLSv1\.[23]"
                             % re.escape(sid), sl):
                ident.append("session %s has no TLS" % sid)
            if not re.search(r"sid=%s event=auth result=ok user=%s " % (
                    re.escape(sid), re.escape(sgtest.log_escape(USER))), sl):
                ident.append("session %s has no event=auth result=ok user=%s" % (sid, USER))
        if ident:
            problems += ident
        else:
            res["identity"] = "yes"
        return problems


def describe_diff(want, got):
    """The differing lines (the first three), or how the lengths differ."""
    wl, gl = want.split(b"\r\n"), got.split(b"\r\n")
    diffs = ["line %d: sent %r, stored %r" % (i + 1, a[:100], b[:100])
             for i, (a, b) in enumerate(zip(wl, gl)) if a != b]
    if diffs:
        return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
    return "sent %d lines (%d octets), stored %d lines (%d octets); tail sent %r stored %r" % (
        len(wl), len(want), len(gl), len(got), want[-60:], got[-60:])


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
            pytest.fail("teardown checks failed:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _keep_on_failure(request, env):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        env.failed = True


def need(binary, package):
    if shutil.which(binary) is None:
        pytest.skip("%s is not installed (Debian package %s; scripts/deps.sh installs it)"
                    % (binary, package))


def run(cmd, what, input=None, timeout=60, env=None):
    p = subprocess.run([str(c) for c in cmd], input=input, capture_output=True,
                       timeout=T(timeout), env=env,
                       stdin=None if input is not None else subprocess.DEVNULL)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, "%s failed (exit %d):\n%s" % (what, p.returncode, out[-4000:])
    return out


# ---------------------------------------------------------------- the clients
# Each returns the body it put on the wire (bytes, CRLF lines, dot-stuffing
# not applied), after the client reported success.

def send_msmtp(env, listener, mid, subject, work):
    need("msmtp", "msmtp")
    text = body_text(False)
    msg = headers(mid, subject, False, sep="\n") + text.encode()
    rc = work / "msmtprc"
    rc.write_text("\n".join([
        "account sg",
        "host 127.0.0.1",
        "port %d" % env.ports[listener],
        "domain client.test",
        "timeout %d" % int(T(30)),
        "tls on",
        "tls_starttls %s" % ("on" if listener == "587" else "off"),
        # GnuTLS checks the IP SAN 127.0.0.1 against the host
        "tls_trust_file %s" % env.cert,
        "auth on",
        "user %s" % USER,
        "password %s" % PW,
        "from %s" % FROM,
        "account default : sg", ""]))
    os.chmod(rc, 0o600)  # msmtp refuses a password file others can read
    run(["msmtp", "-C", rc, "-f", FROM, "--", TO], "msmtp", input=msg)
    return crlf(text)


def send_curl(env, listener, mid, subject, work):
    need("curl", "curl")
    text = body_text(False)
    f = work / "lf-only.eml"
    # no line end after the last line: curl then ends the data with
    # CRLF . CRLF (after a bare LF it would add an empty line)
    f.write_bytes(headers(mid, subject, False, sep="\n") + text.encode())
    port = env.ports[listener]
    if listener == "587":
        url = ["--url", "smtp://127.0.0.1:%d/client.test" % port, "--ssl-reqd"]
    else:
        url = ["--url", "smtps://127.0.0.1:%d/client.test" % port]
    run(["curl", "-sS", "--max-time", int(T(30)), *url, "--cacert", env.cert,
         "--user", "%s:%s" % (USER, PW), "--mail-from", FROM, "--mail-rcpt", TO,
         "--upload-file", f], "curl")
    # Sent with bare LFs, which saslgate makes CRLF of.  curl dot-stuffs
    # only after CRLF (and at the very start), so ".leading dot" arrives
    # after a bare LF unstuffed: the stored text must still have it, as it
    # has the lone "." line (passed on stuffed by saslgate).
    return crlf(text)


def send_swaks(env, listener, mid, subject, work, pipeline=False):
    need("swaks", "swaks")
    text = body_text(False)
    f = work / "swaks.eml"
    f.write_bytes(headers(mid, subject, False) + crlf(text)[:-2])
    tls = ["--tls"] if listener == "587" else ["--tls-on-connect"]
    out = run(["swaks", "--server", "127.0.0.1:%d" % env.ports[listener], *tls,
               "--tls-verify", "--tls-ca-path", env.cert, "--helo", "client.test",
               "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PW,
               "--from", FROM, "--to", TO, "--data", "@%s" % f,
               "--timeout", int(T(30)), *(["--pipeline"] if pipeline else [])], "swaks")
    if pipeline:
        # MAIL, RCPT and DATA went out as one group, before their replies
        assert re.search(r" ~> MAIL FROM:[^\n]*\n ~> RCPT TO:[^\n]*\n ~> DATA\n", out), out
    return crlf(text)


def tls_context(env):
    return ssl.create_default_context(cafile=str(env.cert))  # verifies, IP SAN 127.0.0.1


def smtplib_connect(env, listener):
    port = env.ports[listener]
    if listener == "587":
        c = smtplib.SMTP(HOST, port, local_hostname="client.test", timeout=T(30))
        c.starttls(context=tls_context(env))
    else:
        c = smtplib.SMTP_SSL(HOST, port, local_hostname="client.test", timeout=T(30),
                             context=tls_context(env))
    c.login(USER, PW)
    return c


def send_smtplib(env, listener, mid, subject, work):
    text = body_text(True)
    msg = headers(mid, subject, True) + crlf(text)[:-2]
    c = smtplib_connect(env, listener)
    try:
        refused = c.sendmail(FROM, [TO], msg, mail_options=["BODY=8BITMIME"])
        assert refused == {}, refused
    finally:
        c.quit()
    return crlf(text)


def send_smtplib_msg(env, listener, mid, subject, work):
    text = body_text(True)
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"], m["To"], m["Subject"], m["Message-ID"] = "Alice <%s>" % FROM, TO, subject, mid
    m.set_content(text, cte="8bit")
    # what send_message puts on the wire, seen first by a FakeUpstream:
    # smtplib flattens with a BytesGenerator made without a policy, whose
    # mangle_from_ is then True, so "From " at the start of a line goes
    # out as ">From " (Python's doing, not a relay's)
    fake = sgtest.FakeUpstream()
    try:
        with smtplib.SMTP(HOST, fake.port, local_hostname="client.test", timeout=T(30)) as c:
            c.send_message(m, mail_options=["BODY=8BITMIME"])
        wire = sgtest.unstuff(fake.delivered()[0]).partition(b"\r\n\r\n")[2]
    finally:
        fake.stop()
    assert wire == crlf(text.replace("\nFrom ", "\n>From ")), wire[:600]
    c = smtplib_connect(env, listener)
    try:
        refused = c.send_message(m, mail_options=["BODY=8BITMIME"])
        assert refused == {}, refused
    finally:
        c.quit()
    return wire


NET_SMTP = r"""
use strict; use warnings;
use Net::SMTP;
my ($port, $mode, $ca, $user, $pw, $from, $to, $file, $timeout) = @ARGV;
open(my $fh, '<:raw', $file) or die "open $file: $!";
my $msg = do { local $/; <$fh> };
# IO::Socket::SSL verifies the chain against $ca and the name 127.0.0.1
my %tls = (SSL_ca_file => $ca, SSL_verify_mode => 1);
my $smtp = Net::SMTP->new('127.0.0.1', Port => $port, Hello => 'client.test',
                          Timeout => $timeout, ($mode eq 'smtps' ? (SSL => 1, %tls) : ()))
    or die "connect: $@ $IO::Socket::SSL::SSL_ERROR";
if ($mode eq 'starttls') {
    $smtp->starttls(%tls) or die "starttls: $IO::Socket::SSL::SSL_ERROR";
}
$smtp->auth($user, $pw) or die "auth: " . $smtp->code . " " . $smtp->message;
$smtp->mail($from, Bits => 8) or die "mail: " . $smtp->message;
$smtp->to($to) or die "rcpt: " . $smtp->message;
$smtp->data() or die "data: " . $smtp->message;
$smtp->datasend($msg) or die "datasend";
$smtp->dataend() or die "dataend: " . $smtp->code . " " . $smtp->message;
print "sent: ", $smtp->code, " ", $smtp->message;
$smtp->quit;
"""


def send_netsmtp(env, listener, mid, subject, work):
    need("perl", "perl")
    p = subprocess.run(["perl", "-MNet::SMTP", "-MIO::Socket::SSL", "-MAuthen::SASL", "-e1"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        pytest.skip("Net::SMTP with TLS and AUTH needs libio-socket-ssl-perl and "
                    "libauthen-sasl-perl (scripts/deps.sh installs them): %s" % p.stderr[:300])
    text = body_text(True)
    f = work / "netsmtp.eml"
    f.write_bytes(headers(mid, subject, True) + crlf(text)[:-2])
    script = work / "send.pl"
    script.write_text(NET_SMTP)
    out = run(["perl", script, env.ports[listener], "starttls" if listener == "587" else "smtps",
               env.cert, USER, PW, FROM, TO, f, int(T(30))], "Net::SMTP")
    assert re.search(r"sent: 250 ", out), out
    return crlf(text)


def send_snail(env, listener, mid, subject, work):
    need("s-nail", "s-nail")
    text = body_text(True)
    # a template (-t): s-nail adds MIME-Version and Content-* itself
    msg = ("From: Alice <%s>\nTo: <%s>\nSubject: %s\nMessage-ID: %s\n\n%s\n"
           % (FROM, TO, subject, mid, text)).encode()
    common = ["s-nail", "-:/", "-t", "-Sv15-compat", "-Sttycharset=utf-8", "-Snosave",
              "-Shostname=client.test", "-r", FROM]
    # 1. s-nail's sendmail interface: the message exactly as s-nail builds it
    cap = work / "captured.eml"
    prog = work / "capture.sh"
    prog.write_text("#!/bin/sh\ncat > '%s'\n" % cap)
    os.chmod(prog, 0o755)
    run(common + ["-Smta=%s" % prog], "s-nail (capture)", input=msg)
    built = cap.read_bytes()
    head, _, body = built.partition(b"\n\n")
    assert b"Message-ID: " + mid.encode() in head, built[:600]
    if re.search(rb"(?im)^Content-Transfer-Encoding: quoted-printable$", head):
        assert quopri.decodestring(body) == text.encode() + b"\n", body[:600]
    else:
        assert body == text.encode() + b"\n", body[:600]
    # 2. the same input over SMTP.  s-nail compares the certificate's DNS
    # names with the URL's host (not its IP SAN), so the URL names localhost
    # (127.0.0.1 in /etc/hosts); the CA is the certificate itself.
    port = env.ports[listener]
    if listener == "587":
        mta = ["-Smta=smtp://%s:%s@localhost:%d" % (USER, PW, port), "-Ssmtp-use-starttls"]
    else:
        mta = ["-Smta=smtps://%s:%s@localhost:%d" % (USER, PW, port)]
    run(common + mta + ["-Stls-ca-file=%s" % env.cert, "-Stls-ca-no-defaults",
                        "-Ssmtp-auth=plain", "-Ssocket-connect-timeout=%d" % int(T(30))],
        "s-nail (SMTP)", input=msg)
    return crlf(body)


def send_postfix(env, listener, mid, subject, work, start_postfix):
    """A second Postfix with relayhost = saslgate; a message submitted to it
    over SMTP (what an MTA on the LAN gets) goes on through saslgate."""
    port = env.ports[listener]
    nexthop = "[%s]:%d" % (HOST, port)
    pwmap = work / "smtp_sasl_passwd"
    pwmap.write_text("%s %s:%s\n" % (nexthop, USER, PW))
    os.chmod(pwmap, 0o600)
    # smtp_tls_security_level = encrypt, as a smart-host client is set up;
    # for saslgate's address a policy raises it to "secure": the chain is
    # checked against the certificate (smtp_tls_CAfile) and its name against
    # "localhost" (Postfix matches DNS names, and the next hop is an address)
    policy = work / "tls_policy"
    policy.write_text("%s secure match=localhost\n" % nexthop)
    extra = {
        "relayhost": nexthop,
        "default_transport": "smtp",
        "relay_transport": "smtp",
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": "texthash:%s" % pwmap,
        "smtp_sasl_security_options": "noanonymous",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_policy_maps": "texthash:%s" % policy,
        "smtp_tls_CAfile": str(env.cert),
        "smtp_tls_loglevel": "1",
    }
    if listener == "465":
        extra["smtp_tls_wrappermode"] = "yes"  # implicit TLS (Postfix >= 3.0)
    client = start_postfix(hostname="mta.client.test", mynetworks="127.0.0.0/8",
                           relay_restrictions="permit_mynetworks, reject", extra=extra)
    text = body_text(True)
    msg = headers(mid, subject, True) + crlf(text)[:-2]
    c = smtplib.SMTP(HOST, client.port, local_hostname="lan.client.test", timeout=T(30))
    try:
        refused = c.sendmail(FROM, [TO], msg, mail_options=["BODY=8BITMIME"])
        assert refused == {}, refused
    finally:
        c.quit()
    sent = r"to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent" % (re.escape(TO),
                                                                            port)
    try:
        wait_for(lambda: re.search(sent, client.log_text()), T(40),
                 "the client Postfix to relay through saslgate", interval=0.1)
    except AssertionError:
        raise AssertionError("not relayed through saslgate\n-- client Postfix:\n%s"
                             "\n-- saslgate:\n%s" % (client.log_text()[-4000:],
                                                     env.sg.log_text()[-3000:]))
    clog = client.log_text()
    assert re.search(r"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d"
                     % port, clog), clog
    assert client.delivered() == []  # it went through saslgate, not to its own sink
    return crlf(text)


SENDERS = {
    "msmtp": send_msmtp,
    "curl": send_curl,
    "swaks": send_swaks,
    "swaks-pipeline": lambda *a: send_swaks(*a, pipeline=True),
    "smtplib": send_smtplib,
    "smtplib-msg": send_smtplib_msg,
    "netsmtp": send_netsmtp,
    "snail": send_snail,
}


# ---------------------------------------------------------------- the tests

def play(env, key, listener, send):
    res = RESULTS.setdefault((key, listener), {})
    res.update(delivered="no", identity="no", secs=None, note="")
    mid = message_id(key, listener)
    subject = "%s via %s" % (NAMES[key], listener)
    t0 = time.monotonic()
    try:
        expected = send(mid, subject)
    except pytest.skip.Exception as e:
        res.update(delivered="skipped", identity="skipped", note=str(e)[:70])
        raise
    except BaseException as e:
        res["note"] = "client failed: %s" % str(e).strip().splitlines()[0][:60] \
            if str(e).strip() else "client failed"
        raise
    res["secs"] = time.monotonic() - t0
    problems = env.verify(key, listener, mid, subject, expected, res)
    if problems:
        res["note"] = problems[0].replace("stored body differs from the one sent", "body")[:100]
    assert not problems, "%s via %s:\n  %s" % (NAMES[key], listener, "\n  ".join(problems))


@pytest.mark.parametrize("listener", list(LISTENERS))
@pytest.mark.parametrize("key", list(SENDERS))
def test_client(env, key, listener):
    work = env.dir / ("%s-%s" % (key, listener))
    work.mkdir(exist_ok=True)
    play(env, key, listener, lambda mid, subject: SENDERS[key](env, listener, mid, subject,
                                                                  work))


@pytest.mark.parametrize("listener", list(LISTENERS))
def test_postfix_smart_host(env, listener, workdir, start_postfix):
    play(env, "postfix", listener,
         lambda mid, subject: send_postfix(env, listener, mid, subject, workdir,
                                           start_postfix))


def test_zz_client_table(env, capsys):
    """The client table, with capture off so that it is in the ctest log."""
    rows = [("client", "listener", "delivered byte-exact", "identity", "secs", "note")]
    for name, key in CLIENTS:
        for lst in LISTENERS:
            r = RESULTS.get((key, lst))
            if r is None:
                rows.append((name, lst, "not run", "not run", "", ""))
                continue
            secs = "%.2f" % r["secs"] if r.get("secs") is not None else ""
            rows.append((name, lst, r["delivered"], r["identity"], secs, r["note"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def fmt(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    lines = [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows[1:]]
    with capsys.disabled():
        print("\n\nclient table (587 = STARTTLS on 127.0.0.1:%d, 465 = implicit TLS on "
              "127.0.0.1:%d; saslgate %s%s):\n%s\n" % (
                  env.ports["587"], env.ports["465"], sgtest.SASLGATE_BIN,
                  " (sanitizers)" if sgtest.SANITIZE else "", "\n".join(lines)))
