# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of SMTP AUTH through Cyrus SASL (sasl/): the real binary,
real Cyrus SASL with a real sasldb or a real saslauthd, real clients
(smtplib, swaks), and fail2ban-regex on the log the run wrote.

test_session.py covers the session's side of AUTH (504, 501, 503, 538, the
421 after max_failures) over the sasldb; here: what the Cyrus glue decides.
Mechanisms per backend and TLS state, CRAM-MD5, LOGIN both ways through
swaks, a saslauthd that answers and one that is gone (454, no failure
counted), the per-address limit, sender_login_map and its reload, and that
no secret reaches the log (the harness checks every saslgate at teardown:
password, its base64, the PLAIN blob)."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from sgtest import (Raw, SOURCE_DIR, T, b64, default_config, make_cert, make_sasldb,
                    plain_b64, smtp, swaks, wait_for)

USER, PW = "alice", "Al1ce-auth.pw7"
SECRETS = {USER: PW}
# saslauthd -a shadow needs system users: names unique to this file
SA_USER, SA_PW = "sgauthtest1", "Sa-auth.pw3x"
SA_USER2 = "sgauthtest2"


def ehlo_keywords(reply):
    return [l[4:] for l in reply.lines[1:]]


def auth_line(kw):
    return next((k for k in kw if k.startswith("AUTH ")), None)


@pytest.fixture
def sasldb_env(workdir, start_fake_upstream):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = start_fake_upstream()
    return cert, key, db, up


def sasldb_gate(start_saslgate, workdir, env, sasl=None, **sections):
    cert, key, db, up = env
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key, sasldb=db,
                         **sections)
    cfg["sasl"].update(sasl or {})
    cfg["sasl"] = {k: v for k, v in cfg["sasl"].items() if v is not None}
    return start_saslgate(cfg, secrets=SECRETS)


# ---------------------------------------------------------------- mechanisms

def test_default_mechanisms_by_tls_state(workdir, sasldb_env, start_saslgate):
    """No mech_list: our auxprop default.  Before TLS only what sends no
    password in clear (on a listener requiring TLS for AUTH: nothing at all);
    after TLS PLAIN and LOGIN too; never ANONYMOUS, NTLM, EXTERNAL."""
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env, sasl={"mech_list": None})
    assert re.search(r'sasl: mechanisms="PLAIN LOGIN CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 '
                     r'SCRAM-SHA-256" pwcheck_method=auxprop auxprop_plugin=sasldb '
                     r'saslauthd_path=-', sg.log_text())
    with Raw(sg.port("submission")) as r:
        r.expect(220)
        assert auth_line(ehlo_keywords(r.expect(250, "EHLO client.test"))) is None
        r.starttls()
        line = auth_line(ehlo_keywords(r.expect(250, "EHLO client.test")))
        assert line == "AUTH PLAIN LOGIN CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 SCRAM-SHA-256"
        # installed but not in the default list
        for m in ("ANONYMOUS", "NTLM", "EXTERNAL"):
            assert r.cmd("AUTH %s" % m).text.startswith("504 5.5.4"), m
    # require_tls_for_auth = no: plaintext mechanisms are the admin's choice
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        line = auth_line(ehlo_keywords(r.expect(250, "EHLO client.test")))
        assert line.startswith("AUTH PLAIN LOGIN CRAM-MD5")


def test_cram_md5_and_login_with_smtplib(workdir, sasldb_env, start_saslgate):
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env,
                     sasl={"mech_list": "PLAIN LOGIN CRAM-MD5"})
    c = smtp(sg.port("submission"))
    c.user, c.password = USER, PW
    code, msg = c.auth("CRAM-MD5", c.auth_cram_md5)
    assert code == 235 and msg.startswith(b"2.7.0")
    c.quit()
    c = smtp(sg.port("submission"))
    c.user, c.password = USER, "wrong-" + PW
    with pytest.raises(Exception) as e:
        c.auth("CRAM-MD5", c.auth_cram_md5)
    assert "535" in str(e.value)
    c.user, c.password = USER, PW
    code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    assert code == 235
    c.quit()
    log = sg.log_text()
    assert re.search(r"event=auth result=ok user=alice client=127\.0\.0\.1 mech=CRAM-MD5", log)
    assert re.search(r"event=auth result=fail .*client=127\.0\.0\.1 mech=CRAM-MD5", log)


def test_swaks_login_plain_and_cram(workdir, sasldb_env, start_saslgate):
    """A real MUA-like client: swaks over STARTTLS and implicit TLS."""
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env,
                     sasl={"mech_list": "PLAIN LOGIN CRAM-MD5"})
    for mech, tls in (("LOGIN", "--tls"), ("PLAIN", "--tlsc"), ("CRAM-MD5", "--tls")):
        port = sg.port("submissions" if tls == "--tlsc" else "submission")
        p = swaks("--server", "127.0.0.1", "--port", port, tls, "--auth", mech,
                  "--auth-user", USER, "--auth-password", PW, "--quit-after", "AUTH",
                  "--helo", "client.test")
        assert p.returncode == 0, p.stdout + p.stderr
        assert re.search(r"<~\s+235 2\.7\.0", p.stdout), p.stdout
    p = swaks("--server", "127.0.0.1", "--port", sg.port("submission"), "--tls",
              "--auth", "LOGIN", "--auth-user", USER, "--auth-password", "nope",
              "--quit-after", "AUTH", "--helo", "client.test")
    assert p.returncode != 0
    assert re.search(r"<~\*?\s+535 5\.7\.8", p.stdout), p.stdout


# ---------------------------------------------------------------- saslauthd

def test_saslauthd_ok_fail_and_down(workdir, start_saslgate, start_saslauthd,
                                    start_fake_upstream):
    cert, key = make_cert(workdir)
    sa = start_saslauthd(users={SA_USER: SA_PW})
    up = start_fake_upstream()
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key, saslauthd=sa,
                         sasl={"failure_delay": "1s", "max_failures": 3,
                               "mech_list": "PLAIN LOGIN CRAM-MD5"})
    sg = start_saslgate(cfg, secrets={SA_USER: SA_PW})
    log = sg.log_text()
    # CRAM-MD5 cannot work with saslauthd: said once, and not offered
    assert "not offering CRAM-MD5" in log
    assert 'sasl: mechanisms="PLAIN LOGIN" pwcheck_method=saslauthd' in log
    with Raw(sg.port("submission")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.starttls()
        assert auth_line(ehlo_keywords(r.expect(250, "EHLO client.test"))) == "AUTH PLAIN LOGIN"
        assert r.cmd("AUTH CRAM-MD5").text.startswith("504 5.5.4")
        # wrong password and unknown user: 535 after failure_delay, alike
        times = []
        for user, pw in ((SA_USER, "wrong-pw"), ("sgnosuchuser9", SA_PW)):
            t0 = time.monotonic()
            rep = r.cmd("AUTH PLAIN " + plain_b64(user, pw), timeout=15)
            times.append(time.monotonic() - t0)
            assert rep.text.startswith("535 5.7.8"), rep.text
        assert min(times) >= 0.9, times
        assert abs(times[0] - times[1]) < 0.5, times
        r.expect(235, "AUTH PLAIN " + plain_b64(SA_USER, SA_PW))

    # saslauthd goes away: 454 4.7.0, and it costs the client no failure
    # (max_failures = 3, yet four attempts and the session stays open)
    sa.stop()
    with Raw(sg.port("submission")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.starttls()
        r.expect(250, "EHLO client.test")
        for _ in range(4):
            rep = r.cmd("AUTH PLAIN " + plain_b64(SA_USER, SA_PW), timeout=15)
            assert rep.text.startswith("454 4.7.0"), rep.text
        rep = r.cmd("AUTH LOGIN", timeout=15)
        assert rep.code == 334
        r.expect(334, b64(SA_USER))
        assert r.cmd(b64(SA_PW), timeout=15).text.startswith("454 4.7.0")
        r.expect(250, "NOOP")
    log = sg.log_text()
    assert re.search(r"event=auth result=tempfail user=%s client=127\.0\.0\.1 mech=PLAIN"
                     % SA_USER, log)
    assert re.search(r"password backend unavailable \(saslauthd socket %s: "
                     % re.escape(sa.socket_path), log)
    assert not re.search(r"result=fail user=%s .*reason=too many" % SA_USER, log)


def open_fds(pid):
    """saslgate's descriptors: number -> what it points at."""
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[fd] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            pass
    return out


def settled_fds(pid, want=None, seconds=5):
    """The descriptor set once its size stops changing (or equals want)."""
    last = [None, time.monotonic()]

    def steady():
        n = len(open_fds(pid))
        if n == want:
            return True
        if n != last[0]:
            last[0], last[1] = n, time.monotonic()
        return time.monotonic() - last[1] >= 0.5
    try:
        wait_for(steady, T(seconds), "saslgate's descriptor count to settle")
    except Exception:
        pass
    return open_fds(pid)


def test_saslauthd_gone_mid_request_leaves_no_descriptor(workdir, start_saslgate,
                                                          start_saslauthd,
                                                          start_fake_upstream):
    """saslauthd dies while logins wait for its answer (stopped, then
    killed: the connections it had not answered are closed).  Each login
    gets 454 4.7.0, and once those sessions are closed saslgate holds the
    descriptors it held before: none stays with the dead saslauthd (Cyrus'
    client keeps its socket when the answer's length never comes)."""
    cert, key = make_cert(workdir)
    sa = start_saslauthd(users={SA_USER2: SA_PW})
    up = start_fake_upstream()
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key, saslauthd=sa,
                         sasl={"mech_list": "PLAIN LOGIN"})
    sg = start_saslgate(cfg, secrets={SA_USER2: SA_PW})
    # a login that works first: the pool thread, the upstream link
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(SA_USER2, SA_PW), timeout=15)
        r.expect(221, "QUIT")
    sg.wait_log(r"event=disconnect .*user=%s" % SA_USER2)
    before = settled_fds(sg.pid)

    n = 3
    os.killpg(sa.proc.pid, signal.SIGSTOP)
    clients = []
    try:
        for _ in range(n):
            r = Raw(sg.port("plain"))
            clients.append(r)
            r.expect(220)
            r.expect(250, "EHLO client.test")
        for i, r in enumerate(clients):
            if i % 2:  # LOGIN: the password goes to saslauthd at the step
                r.expect(334, "AUTH LOGIN")
                r.expect(334, b64(SA_USER2))
                r.line(b64(SA_PW))
            else:
                r.line("AUTH PLAIN " + plain_b64(SA_USER2, SA_PW))
        # each login's socket to saslauthd is connected, its request sent
        wait_for(lambda: len(open_fds(sg.pid)) >= len(before) + 2 * n, T(10),
                 "saslgate's connections to the stopped saslauthd")
        os.killpg(sa.proc.pid, signal.SIGKILL)
        sa.proc.wait(timeout=10)
        for r in clients:
            rep = r.reply(timeout=15)
            assert rep.text.startswith("454 4.7.0"), rep.text
            r.expect(221, "QUIT")
    finally:
        for r in clients:
            r.close()
    wait_for(lambda: sg.log_text().count("event=disconnect") >= 1 + n, T(10),
             "the disconnects")
    log = sg.log_text()
    # the case at hand: Cyrus got no answer's length from saslauthd
    assert log.count("sasl: size read failed") == n, log[-3000:]
    after = settled_fds(sg.pid, want=len(before))
    left = {fd: t for fd, t in after.items() if before.get(fd) != t}
    assert len(after) == len(before) and not left, (
        "descriptors before %d, after %d; new: %r" % (len(before), len(after), left))


# ---------------------------------------------------------------- limits

def test_per_address_failure_limit(workdir, sasldb_env, start_saslgate):
    """ip_failure_limit counts across sessions: once over it, AUTH from that
    address gets 454 4.7.0 without asking the backend, even with the right
    password; the counting starts again after the window."""
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env,
                     sasl={"ip_failure_limit": 2, "ip_failure_window": "3s",
                           "max_failures": 5})
    for _ in range(2):  # two sessions, one failure each
        with Raw(sg.port("plain")) as r:
            r.expect(220)
            r.expect(250, "EHLO client.test")
            assert r.cmd("AUTH PLAIN " + plain_b64(USER, "bad")).text.startswith("535 5.7.8")
    t_limited = time.monotonic()
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW)).text.startswith("454 4.7.0")
        r.expect(530, "MAIL FROM:<alice@example.org>")
    assert "address over ip_failure_limit" in sg.log_text()
    # after the window (3 s from the first failure) the address may try again
    time.sleep(max(0.0, 3.3 - (time.monotonic() - t_limited)))
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))


def test_authzid_other_than_login_is_refused(workdir, sasldb_env, start_saslgate):
    """PLAIN's authorization identity must be the login itself (Cyrus'
    default policy): acting as someone else is a 535, and counts."""
    cert, key, db, up = sasldb_env
    make_sasldb(db, {"bob": "B0b-auth.pw2"}, realm="sg.test")
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env, sasl={"max_failures": 2})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW, authzid="bob")).text.startswith(
            "535 5.7.8")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW, authzid=USER))
    assert "alice may not act as bob" in sg.log_text()


# ---------------------------------------------------------------- sender map

def test_sender_login_map_and_reload(workdir, sasldb_env, start_saslgate):
    cert, key, db, up = sasldb_env
    smap = workdir / "senders"
    smap.write_text("# test map\n*  =login\nalice  info@example.org, @alice.test\n")
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env,
                     sasl={"sender_login_map": str(smap)})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        for ok in ("alice@example.org", "info@example.org", "x@ALICE.test", ""):
            r.expect(250, "MAIL FROM:<%s>" % ok)
            r.expect(250, "RSET")
        rep = r.cmd("MAIL FROM:<bob@example.org>")
        assert rep.text.startswith("553 5.7.1"), rep.text
    # SIGHUP re-reads the map
    smap.write_text("alice  alice@example.org\n")
    assert "reload: done" in sg.reload().group(0)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        assert r.cmd("MAIL FROM:<info@example.org>").text.startswith("553 5.7.1")
        r.expect(250, "MAIL FROM:<alice@example.org>")
    # a broken map stops the reload and names MAPFILE:LINE
    smap.write_text("alice\n")
    assert "reload failed" in sg.reload().group(0)
    assert re.search(r"%s:1: login alice has no addresses" % re.escape(str(smap)),
                     sg.log_text())
    # a reload that fails for another reason does not half-apply the map
    smap.write_text("alice  alice@example.org, info@example.org\n")
    text = sg.conf_path.read_text()
    sg.conf_path.write_text(text.replace("mech_list = PLAIN LOGIN", "mech_list = PLAIN NOPE"))
    assert "reload failed" in sg.reload().group(0)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
        assert r.cmd("MAIL FROM:<info@example.org>").text.startswith("553 5.7.1")


def test_reload_changes_mech_list(workdir, sasldb_env, start_saslgate):
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env)
    text = sg.conf_path.read_text()
    sg.conf_path.write_text(text.replace("mech_list = PLAIN LOGIN", "mech_list = LOGIN"))
    assert "reload: done" in sg.reload().group(0)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        assert auth_line(ehlo_keywords(r.expect(250, "EHLO client.test"))) == "AUTH LOGIN"
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW)).text.startswith("504 5.5.4")
    # a mech_list naming no installed plugin: refused, old one kept
    sg.conf_path.write_text(text.replace("mech_list = PLAIN LOGIN", "mech_list = PLAIN NOPE"))
    assert "reload failed" in sg.reload().group(0)
    assert re.search(r"\.conf:\d+: mech_list names NOPE but no installed", sg.log_text())
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        assert auth_line(ehlo_keywords(r.expect(250, "EHLO client.test"))) == "AUTH LOGIN"


# ---------------------------------------------------------------- log, fail2ban

def test_log_has_no_secret_and_fail2ban_matches_it(workdir, sasldb_env, start_saslgate):
    """Debug logging (Cyrus' own messages included) with every mechanism
    used; the harness' teardown asserts that neither the password nor any
    base64 form of it is in the log.  Then fail2ban-regex with our filter on
    that very log bans exactly the failing client."""
    if not shutil.which("fail2ban-regex"):
        pytest.skip("fail2ban not installed")
    sg = sasldb_gate(start_saslgate, workdir, sasldb_env,
                     server={"log_level": "debug"},
                     sasl={"mech_list": "PLAIN LOGIN CRAM-MD5", "max_failures": 10})
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        for _ in range(3):
            assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW + "x")).code == 535
        assert r.cmd("AUTH LOGIN " + b64(USER)).code == 334
        assert r.cmd(b64(PW + "y")).code == 535
        # a login trying to forge a second client= for fail2ban
        assert r.cmd("AUTH PLAIN " + plain_b64("x client=10.9.9.9", "bad")).code == 535
        r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW))
    log = sg.log_text()
    assert len(re.findall(r"event=auth result=fail ", log)) == 5
    assert "debug:" in log

    fdir = workdir / "f2b" / "filter.d"
    fdir.mkdir(parents=True)
    shutil.copy("/etc/fail2ban/filter.d/common.conf", fdir)
    shutil.copy(SOURCE_DIR / "packaging" / "fail2ban" / "filter.d" / "saslgate.conf", fdir)
    logfile = workdir / "saslgate-copy.log"
    logfile.write_text(log)
    p = subprocess.run(["fail2ban-regex", "-o", "ip", str(logfile),
                        str(fdir / "saslgate.conf")],
                       capture_output=True, text=True, timeout=T(60))
    assert p.returncode == 0, p.stdout + p.stderr
    ips = p.stdout.split()
    assert ips == ["127.0.0.1"] * 5, p.stdout


def test_auth_again_after_upstream_refused_identity(workdir, start_saslgate,
                                                    start_fake_upstream):
    """The first XCLIENT is refused (454, still unauthenticated); the client
    authenticates again on the same session and this time gets its 235:
    Cyrus is given a fresh connection for the second exchange."""
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    up = start_fake_upstream(replies={"XCLIENT": ["550 5.7.0 Error: insufficient authorization",
                                                  "220 fake.test ESMTP"]})
    sg = start_saslgate(default_config(workdir, upstream_port=up.port, cert=cert, key=key,
                                       sasldb=db), secrets=SECRETS)
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        r.expect(250, "EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20).text.startswith("454 4.7.0")
        r.expect(530, "MAIL FROM:<alice@example.org>")
        assert r.cmd("AUTH PLAIN " + plain_b64(USER, PW), timeout=20).text.startswith("235 2.7.0")
        r.expect(250, "MAIL FROM:<alice@example.org>")
