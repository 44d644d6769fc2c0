# SPDX-License-Identifier: BSD-2-Clause
"""The five deployment recipes of docs/deployments.md, each played
end to end with real parts.

Each test copies the shipped example drop-in (conf.d/examples/*.conf) into a
conf.d/ of its work directory the way the admin would, changes only what the
recipe marks "# CHANGE" plus the paths a test machine forces (listener
addresses on 127.0.0.1, certificate, sasldb, sender map), includes it from a
minimal main config, and runs it against a real private Postfix upstream
(start_postfix) whose sink shows what was delivered.
"""

import base64
import hashlib
import hmac
import os
import re
import smtplib
import time

import sgtest
from sgtest import HOST, free_port

SRC = sgtest.pathlib.Path(os.environ.get("SG_SOURCE_DIR",
                                         sgtest.pathlib.Path(__file__).resolve().parents[2]))
EXAMPLES = SRC / "conf.d" / "examples"


# ------------------------------------------------------------ shared helpers

def install_recipe(workdir, example, upstream_port, sasldb=None, sender_map=None,
                   hostname="relay.test", overrides=None):
    """Copy conf.d/examples/<example> to workdir/conf.d/50-<example>, adapted,
    and return (main config text, {listener name: port}).

    Changed: the "# CHANGE" lines ([server] hostname, [upstream] server,
    listener address), listener addresses (free ports on 127.0.0.1), the
    /etc paths, and `overrides` {(section, key): value} (each use says why)."""
    cert, key = sgtest.make_cert(workdir)
    paths = {"/etc/saslgate/sasldb2": str(sasldb) if sasldb else None,
             "/etc/saslgate/sender_login_map": str(sender_map) if sender_map else None}
    overrides = dict(overrides or {})
    ports = {}

    def adapt(text):
        out, section, seen = [], "", set()
        for line in text.splitlines():
            m = re.match(r"^\[(.+)\]\s*$", line)
            if m:
                section = m.group(1)
            for a, b in paths.items():
                if b:
                    line = line.replace(a, b)
            km = re.match(r"^(\w+)\s*=", line)
            k = km.group(1) if km else None
            if k == "address" and section.startswith("listener "):
                name = section.split(None, 1)[1]
                ports.setdefault(name, free_port())
                line = "address = %s:%d" % (HOST, ports[name])
            elif k == "server" and section == "upstream":
                line = "server = %s:%d" % (HOST, upstream_port)
            elif k == "hostname" and section == "server":
                line = "hostname = %s" % hostname
            elif (section, k) in overrides:
                line = "%s = %s" % (k, overrides[(section, k)])
                seen.add((section, k))
            out.append(line)
        return out, seen

    text = (EXAMPLES / example).read_text()
    assert len(re.findall(r"# CHANGE \d", text)) == 2, example
    lines, seen = adapt(text)
    # overrides of keys the example does not set: appended to their section
    for (sec, k), v in overrides.items():
        if (sec, k) not in seen:
            lines += ["", "[%s]" % sec, "%s = %s" % (k, v)]
    confd = workdir / "conf.d"
    confd.mkdir(exist_ok=True)
    (confd / ("50-" + example)).write_text("\n".join(lines) + "\n")
    # the minimal main config: what saslgate.conf provides that the drop-ins
    # rely on (TLS keys, the 587 listener, upstream TLS off)
    ports.setdefault("submission", free_port())
    main = """\
[server]
hostname = %s

[listener submission]
address = %s:%d
tls = starttls
require_auth = yes
require_tls_for_auth = yes

[tls]
certificate = %s
key = %s

[upstream]
tls = none
connect_timeout = 10s

include = %s/*.conf
""" % (hostname, HOST, ports["submission"], cert, key, confd)
    return main, ports


def body(subject, extra=b""):
    return (b"From: t@example.org\r\nTo: r@example.net\r\nSubject: " + subject.encode()
            + b"\r\n" + extra + b"\r\nhello\r\n")


def headers(msg):
    """The header block, LF line ends (smtp-sink's dump files use LF)."""
    return msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def sg_received(msg):
    """Every Received: header (the sink's, Postfix's, saslgate's)."""
    return re.findall(rb"(?ms)^Received:.*?\n(?=\S)", headers(msg) + b"\nX")


def timed(fn):
    t = time.monotonic()
    r = fn()
    return r, time.monotonic() - t


# ------------------------------------------------------------ recipe 1

def test_recipe1_iis_separate_users(workdir, start_saslgate, start_postfix):
    """IIS/Exchange with users in a separate sasldb, identity = header against
    an upstream that relays for saslgate's address only (Postfix mynetworks =
    127.0.0.1/32, permit_mynetworks, reject)."""
    user, pw = "scanner1", "Iis1-Sep7.recipe"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm="example.org")
    pf = start_postfix(mynetworks="127.0.0.1/32", relay_restrictions="permit_mynetworks, reject")
    # failure_delay 10s -> 2s so the test is quick (asserted 1.8-4 s)
    main, ports = install_recipe(workdir, "iis-separate-users.conf", pf.port, sasldb=db,
                                 overrides={("sasl", "failure_delay"): "2s"})
    sg = start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        r.expect(250, "EHLO scanner.test")
        r.starttls()
        r.expect(250, "EHLO scanner.test")
        r.expect(334, "AUTH LOGIN")
        r.expect(334, sgtest.b64(user))
        _, took = timed(lambda: r.expect(535, sgtest.b64("Wrong-Iis1.pw"), timeout=30))
        assert 1.8 <= took <= 4, "535 after %.2fs, failure_delay = 2s" % took
        # unauthenticated relay: refused before anything reaches the upstream
        rep = r.cmd("MAIL FROM:<x@example.org>")
        assert rep.code == 530, rep.text
        r.expect(334, "AUTH LOGIN")
        r.expect(334, sgtest.b64(user))
        r.expect(235, sgtest.b64(pw), timeout=30)
        r.expect(250, "MAIL FROM:<scanner1@example.org>")
        r.expect(250, "RCPT TO:<office@example.net>")
        r.expect(354, "DATA")
        r.send(body("scan", b"X-Authenticated-User: forged@evil.test\r\n") + b".\r\n")
        r.expect(250, timeout=30)
        r.expect(221, "QUIT")
    msg = pf.wait_delivered(1)[0]
    h = headers(msg)
    # the login "scanner1" in realm example.org
    assert re.findall(rb"(?im)^X-Authenticated-User:\s*(\S+)", h) in (
        [user.encode()], [user.encode() + b"@example.org"]), h
    assert any(user.encode() in rec and b"by relay.test (saslgate)" in rec for rec in sg_received(msg)), h
    assert "sasl_username" not in pf.log_text()  # header mode: no XCLIENT
    sg.wait_log(r"event=auth result=fail user=scanner1", 5)


def test_recipe1_unauthenticated_relay_refused_by_upstream(workdir, start_saslgate,
                                                          start_postfix):
    """The upstream's relay rule refuses an unauthenticated foreign RCPT (a
    require_auth = no listener passes the session through).  This Postfix
    does not trust saslgate's address: with identity = header an upstream
    that trusts saslgate's address relays for every session saslgate passes
    through, so in recipe 1 only require_auth = yes listeners may point at
    it; here the relay rule answers the 5xx itself."""
    pf = start_postfix()  # relay only with a SASL identity
    main, ports = install_recipe(workdir, "iis-separate-users.conf", pf.port)
    port = free_port()
    main += "\n[listener open]\naddress = %s:%d\ntls = none\nrequire_auth = no\n" % (HOST, port)
    start_saslgate(main)
    with sgtest.Raw(port) as r:
        r.expect(220)
        r.expect(250, "EHLO outsider.test")
        r.expect(250, "MAIL FROM:<x@outsider.test>")
        rep = r.cmd("RCPT TO:<victim@foreign.test>")
        assert 500 <= rep.code < 600 and "5.7.1" in rep.text, rep.text
        r.expect(221, "QUIT")
    # Postfix's log line may come a moment after its reply
    sgtest.wait_for(lambda: re.search(r"NOQUEUE: reject: RCPT .*foreign\.test",
                                      pf.log_text()), 10, "Postfix's reject line")
    assert pf.delivered() == []


# ------------------------------------------------------------ recipe 2

def test_recipe2_submission_only_policy(workdir, start_saslgate, start_postfix):
    user, pw = "polu", "Pol2-Sub5.recipe"
    host = "relay.test"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm=host)
    # example.test is a domain the MTA accepts inbound mail for; everything
    # else needs a SASL identity
    pf = start_postfix(relay_restrictions="permit_sasl_authenticated, reject_unauth_destination",
                       extra={"relay_domains": "example.test"})
    # the recipe relies on saslgate.conf's [sasl]; ours uses a sasldb
    main, ports = install_recipe(workdir, "submission-only-policy.conf", pf.port,
                                 hostname=host)
    main += ("\n[sasl]\npwcheck_method = auxprop\nauxprop_plugin = sasldb\n"
             "sasldb_path = %s\nmech_list = PLAIN LOGIN\n" % db)
    start_saslgate(main, secrets={user: pw})
    # port 25 style: no AUTH, relay refused by Postfix, inbound accepted
    with sgtest.Raw(ports["smtp"]) as r:
        r.expect(220)
        ehlo = r.expect(250, "EHLO mx.sender.test").text
        assert "AUTH" not in ehlo, ehlo
        rep = r.cmd("AUTH PLAIN " + sgtest.plain_b64(user, pw))
        assert rep.code in (503, 538), rep.text
        r.expect(250, "MAIL FROM:<spam@sender.test>")
        rep = r.cmd("RCPT TO:<victim@foreign.test>")
        assert 500 <= rep.code < 600 and "5.7.1" in rep.text, rep.text
        r.expect(250, "RCPT TO:<postmaster@example.test>")
        r.expect(354, "DATA")
        r.send(body("inbound") + b".\r\n")
        r.expect(250, timeout=30)
        r.expect(221, "QUIT")
    msgs = pf.wait_delivered(1)
    assert b"postmaster@example.test" in msgs[0] and b"foreign.test" not in msgs[0]
    assert re.search(r"reject: RCPT .*victim@foreign\.test", pf.log_text())
    # 587: STARTTLS before AUTH, then PLAIN and LOGIN, relay works
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        ehlo = r.expect(250, "EHLO client.test").text
        assert "AUTH" not in ehlo and "STARTTLS" in ehlo, ehlo
        rep = r.cmd("AUTH PLAIN " + sgtest.plain_b64(user, pw))
        assert rep.code == 538 and "5.7.11" in rep.text, rep.text
        r.starttls()
        ehlo = r.expect(250, "EHLO client.test").text
        assert re.search(r"AUTH .*PLAIN", ehlo) and re.search(r"AUTH .*LOGIN", ehlo), ehlo
        r.expect(235, "AUTH PLAIN " + sgtest.plain_b64(user, pw), timeout=30)
        r.expect(250, "MAIL FROM:<polu@example.org>")
        r.expect(250, "RCPT TO:<friend@foreign.test>")
        r.expect(354, "DATA")
        r.send(body("submitted plain") + b".\r\n")
        r.expect(250, timeout=30)
        r.expect(221, "QUIT")
    c = sgtest.smtp(ports["submission"])
    c.user, c.password = user, pw
    code, text = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    assert code == 235, (code, text)
    c.sendmail("polu@example.org", ["friend2@foreign.test"], body("submitted login"))
    c.quit()
    msgs = pf.wait_delivered(3)
    assert sum(b"foreign.test" in m for m in msgs) == 2
    assert len(re.findall(r"sasl_username=polu", pf.log_text())) == 2, pf.log_text()


# ------------------------------------------------------------ recipe 3

def test_recipe3_login_styles_and_sender_map(workdir, start_saslgate, start_postfix):
    user, pw = "exchange-out", "Exo3-Smh9.recipe"
    host = "relay.test"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm=host)
    smap = workdir / "sender_login_map"
    smap.write_text("exchange-out  @example.org\n")
    pf = start_postfix()
    main, ports = install_recipe(workdir, "exchange-smarthost-client.conf", pf.port,
                                 sasldb=db, sender_map=smap, hostname=host)
    sg = start_saslgate(main, secrets={user: pw})
    # swaks, AUTH LOGIN waiting for both prompts
    p = sgtest.swaks("--server", "%s:%d" % (HOST, ports["submission"]), "--tls",
                     "--auth", "LOGIN", "--auth-user", user, "--auth-password", pw,
                     "--from", "ceo@example.org", "--to", "partner@example.net",
                     "--header", "Subject: swaks login", timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"<~ +334 ", p.stdout) and "AUTH LOGIN\n" in p.stdout.replace("\r", ""), p.stdout
    # Exchange style: the user name as initial response
    with sgtest.Raw(ports["submission"]) as r:
        r.expect(220)
        r.expect(250, "EHLO exchange.example.org")
        r.starttls()
        r.expect(250, "EHLO exchange.example.org")
        rep = r.expect(334, "AUTH LOGIN " + sgtest.b64(user))
        assert base64.b64decode(rep.text.split()[-1]).lower().startswith(b"password"), rep.text
        r.expect(235, sgtest.b64(pw), timeout=30)
        rep = r.cmd("MAIL FROM:<ceo@elsewhere.test>")
        assert rep.code == 553 and "5.7.1" in rep.text, rep.text
        r.expect(250, "MAIL FROM:<ceo@example.org>")
        r.expect(250, "RCPT TO:<partner@example.net>")
        r.expect(354, "DATA")
        r.send(body("initial response") + b".\r\n")
        r.expect(250, timeout=30)
        r.expect(221, "QUIT")
    pf.wait_delivered(2)
    log = pf.log_text()
    assert "elsewhere.test" not in log, log  # the upstream never saw the foreign sender
    assert len(re.findall(r"sasl_username=exchange-out", log)) == 2, log
    assert "elsewhere.test" in sg.log_text() or "553" in sg.log_text()


def test_recipe3_postfix_as_smarthost_client(workdir, start_saslgate, start_postfix):
    """An MTA, not a person, submits: a second Postfix with relayhost =
    saslgate:587, SASL LOGIN after mandatory TLS, delivers to the upstream."""
    user, pw = "exchange-out", "Exo3-Mta4.recipe"
    host = "relay.test"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm=host)
    smap = workdir / "sender_login_map"
    smap.write_text("exchange-out  @example.org\n")
    up = start_postfix(hostname="upstream.test")
    main, ports = install_recipe(workdir, "exchange-smarthost-client.conf", up.port,
                                 sasldb=db, sender_map=smap, hostname=host)
    sg = start_saslgate(main, secrets={user: pw})
    pwmap = workdir / "smtp_sasl_passwd"
    pwmap.write_text("[%s]:%d %s:%s\n" % (HOST, ports["submission"], user, pw))
    os.chmod(pwmap, 0o600)
    client = start_postfix(hostname="exchange.test", mynetworks="127.0.0.0/8",
                           relay_restrictions="permit_mynetworks, reject", extra={
                               "relayhost": "[%s]:%d" % (HOST, ports["submission"]),
                               "default_transport": "smtp",
                               "relay_transport": "smtp",
                               "smtp_sasl_auth_enable": "yes",
                               "smtp_sasl_password_maps": "texthash:%s" % pwmap,
                               "smtp_sasl_security_options": "noanonymous",
                               "smtp_sasl_mechanism_filter": "login",
                               "smtp_tls_security_level": "encrypt",
                           })
    c = smtplib.SMTP(HOST, client.port, timeout=30)
    c.sendmail("ceo@example.org", ["partner@example.net"], body("via exchange"))
    c.quit()
    try:
        msgs = up.wait_delivered(1, timeout=40)
    except AssertionError:
        raise AssertionError("not delivered upstream\n-- client postfix:\n%s\n-- saslgate:\n%s"
                             % (client.log_text(), sg.log_text()))
    assert b"Subject: via exchange" in msgs[0]
    assert re.search(r"sasl_username=exchange-out", up.log_text()), up.log_text()
    clog = client.log_text()
    assert re.search(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d.*status=sent" % ports["submission"],
                     clog), clog
    assert re.search(r"event=auth result=ok user=exchange-out .*mech=LOGIN", sg.log_text()), \
        sg.log_text()
    assert client.delivered() == []  # it went through saslgate, not to its own sink


# ------------------------------------------------------------ recipe 4

def test_recipe4_windows_relay_queue_id(workdir, start_saslgate, start_postfix):
    user, pw = "printer-2nd-floor", "Prn4-Win2.recipe"
    host = "relay.test"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm=host)
    pf = start_postfix()
    main, ports = install_recipe(workdir, "windows-relay.conf", pf.port, sasldb=db,
                                 hostname=host)
    sg = start_saslgate(main, secrets={user: pw})
    with sgtest.Raw(ports["lan"]) as r:
        r.expect(220)
        r.expect(250, "EHLO printer")
        rep = r.cmd("MAIL FROM:<scans@example.org>")
        assert rep.code == 530, rep.text  # unauthenticated relay refused
        r.expect(334, "AUTH LOGIN")
        r.expect(334, sgtest.b64(user))
        r.expect(235, sgtest.b64(pw), timeout=30)
        r.expect(250, "MAIL FROM:<scans@example.org>")
        r.expect(250, "RCPT TO:<office@example.net>")
        r.expect(354, "DATA")
        r.send(body("scan") + b".\r\n")
        final = r.reply(timeout=30)
        assert final.code == 250, final.text
        r.expect(221, "QUIT")
    m = re.search(r"queued as ([0-9A-F]+)", final.text)
    assert m, final.text
    qid = m.group(1)
    pf.wait_delivered(1)
    assert pf.queue_ids() == [qid], (qid, pf.queue_ids())
    assert re.search(r"%s: client=.*sasl_username=printer-2nd-floor" % qid, pf.log_text())
    sg.wait_log(r"event=disconnect.*queue_ids=%s" % qid, 10)
    log = sg.log_text()
    assert re.search(r"event=message.*user=printer-2nd-floor.*reply=\"250 .*queued as %s\"" % qid,
                     log), log
    # unauthenticated: refused by a require_auth listener, nothing reached Postfix
    with sgtest.Raw(ports["lan"]) as r:
        r.expect(220)
        r.expect(250, "EHLO stranger")
        rep = r.cmd("MAIL FROM:<x@outsider.test>")
        assert rep.code == 530, rep.text
    assert len(pf.queue_ids()) == 1


# ------------------------------------------------------------ recipe 5

def scram_sha256(r, user, pw):
    """RFC 5802/7677 client exchange (no channel binding) on a Raw connection
    after EHLO; checks the server signature v= and returns the final reply."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=%s,r=%s" % (user, nonce)
    rep = r.cmd("AUTH SCRAM-SHA-256 " + sgtest.b64("n,," + bare))
    assert rep.code == 334, rep.text
    server_first = base64.b64decode(rep.text.split()[-1]).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    assert attrs["r"].startswith(nonce), server_first
    salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
    salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, iters)
    ckey = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(ckey).digest()
    without_proof = "c=%s,r=%s" % (base64.b64encode(b"n,,").decode(), attrs["r"])
    auth_msg = ",".join((bare, server_first, without_proof)).encode()
    sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(ckey, sig))
    rep = r.cmd(sgtest.b64(without_proof + ",p=" + base64.b64encode(proof).decode()),
                timeout=30)
    skey = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    want = base64.b64encode(hmac.new(skey, auth_msg, hashlib.sha256).digest()).decode()
    if rep.code == 334:  # server-final as a challenge, empty response ends it
        final = base64.b64decode(rep.text.split()[-1]).decode()
        assert final == "v=" + want, final
        return r.cmd("", timeout=30)
    if rep.code != 235:
        return rep  # e.g. 535 for a wrong password
    # server-final in the 235 text (RFC 4954 additional data)
    extra = rep.text.split()[-1]
    try:
        assert base64.b64decode(extra).decode() == "v=" + want, rep.text
    except (ValueError, UnicodeDecodeError):
        pass
    return rep


def test_recipe5_mailfront_cram_and_scram(workdir, start_saslgate, start_postfix):
    user, pw = "alice", "Alc5-Mfr8.recipe"
    db = sgtest.make_sasldb(workdir / "sasldb2", {user: pw}, realm="example.org")
    pf = start_postfix(mynetworks="127.0.0.1/32", relay_restrictions="permit_mynetworks, reject")
    main, ports = install_recipe(workdir, "mailfront-replacement.conf", pf.port, sasldb=db)
    sg = start_saslgate(main, secrets={user: pw})
    n = 0
    for lst, tls in (("submission", "starttls"), ("submissions", "implicit")):
        # CRAM-MD5 with smtplib
        c = sgtest.smtp(ports[lst]) if tls == "starttls" else sgtest.smtps(ports[lst])
        mechs = c.esmtp_features.get("auth", "").upper().split()
        assert "CRAM-MD5" in mechs and "SCRAM-SHA-256" in mechs, mechs
        c.user, c.password = user, pw
        code, text = c.auth("CRAM-MD5", c.auth_cram_md5)
        assert code == 235, (lst, code, text)
        n += 1
        c.sendmail("alice@example.org", ["bob@example.net"], body("cram %s" % lst))
        c.quit()
        # SCRAM-SHA-256 by hand
        with sgtest.Raw(ports[lst], tls=(tls == "implicit")) as r:
            r.expect(220)
            r.expect(250, "EHLO mua.test")
            if tls == "starttls":
                r.starttls()
                r.expect(250, "EHLO mua.test")
            rep = scram_sha256(r, user, pw)
            assert rep.code == 235, (lst, rep.text)
            r.expect(250, "MAIL FROM:<alice@example.org>")
            r.expect(250, "RCPT TO:<bob@example.net>")
            r.expect(354, "DATA")
            r.send(body("scram %s" % lst) + b".\r\n")
            r.expect(250, timeout=30)
            r.expect(221, "QUIT")
        n += 1
    msgs = pf.wait_delivered(n)
    for m in msgs:
        assert re.findall(rb"(?im)^X-Authenticated-User:\s*(\S+)", headers(m)) in (
            [b"alice"], [b"alice@example.org"]), m
    subjects = sorted(re.search(rb"(?m)^Subject: (.*?)\r?$", m).group(1) for m in msgs)
    assert subjects == [b"cram submission", b"cram submissions",
                        b"scram submission", b"scram submissions"], subjects
    # a wrong SCRAM password fails
    with sgtest.Raw(ports["submissions"], tls=True) as r:
        r.expect(220)
        r.expect(250, "EHLO mua.test")
        rep = scram_sha256(r, user, "Wrong-Mfr8.pw")
        assert rep.code == 535, rep.text
    # the login tried is named (from SCRAM's client-first message), as for
    # PLAIN and LOGIN: fail2ban and the admin see who was attacked
    sg.wait_log(r"event=auth result=fail user=%s client=127\.0\.0\.1 mech=SCRAM-SHA-256"
                % re.escape(user), 5)
