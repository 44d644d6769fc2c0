# SPDX-License-Identifier: BSD-2-Clause
"""Process tests of the [metrics] endpoint (proxy/metrics_http.c,
common/metrics.c): the counters of a run against its log lines, the
exposition checked by promtool (Debian's prometheus package), the HTTP
answers (404, 405, 400, Connection: close), off by default, the loopback
rule of -t, and scrapes while a small load runs."""

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from sgtest import (HOST, Raw, T, _ini, default_config, free_port, make_cert, make_sasldb,
                    plain_b64, refused_port, run_saslgate, smtp, wait_for)

USER, PW = "alice", "Al1ce-metr1cs.pw"
SECRETS = {USER: PW}
BODY = b"Subject: metrics\r\n\r\nhello\r\n"


@pytest.fixture
def keys(workdir):
    cert, key = make_cert(workdir)
    db = make_sasldb(workdir / "sasldb2", SECRETS, realm="sg.test")
    return cert, key, db


def gate(start_saslgate, workdir, keys, upstream_port, workers=1, **sections):
    cert, key, db = keys
    mport = free_port()
    cfg = default_config(workdir, upstream_port=upstream_port, cert=cert, key=key,
                         sasldb=db, metrics={"address": "%s:%d" % (HOST, mport)},
                         limits={"max_message_size": "4k"}, **sections)
    cfg["server"]["workers"] = workers
    sg = start_saslgate(cfg, secrets=SECRETS)
    return sg, mport


def http(port, raw):
    """Send raw octets, read to EOF -> (status, headers dict, body)."""
    with socket.create_connection((HOST, port), timeout=T(10)) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, body.decode()


def scrape(port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, port), timeout=T(10)) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return r.read().decode()


def samples(text):
    """{'name{labels}': value} of an exposition (labels as written)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def promtool_check(text):
    tool = shutil.which("promtool")
    if not tool:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/deps.sh)")
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=T(30))
    assert p.returncode == 0, "promtool check metrics:\n%s%s" % (p.stdout, p.stderr)


def good_session(port, tls=False):
    c = smtp(port, starttls=tls)
    c.login(USER, PW)
    c.sendmail("alice@example.org", ["bob@example.net"], BODY)
    c.quit()


def bad_auth(port):
    r = Raw(port)
    r.expect(220)
    r.expect(250, "EHLO client.test")
    r.expect(535, "AUTH PLAIN " + plain_b64(USER, "wrong-pw"), timeout=20)
    r.expect(221, "QUIT")
    r.close()


def too_big(port):
    r = Raw(port)
    r.expect(220)
    r.expect(250, "EHLO client.test")
    r.expect(235, "AUTH PLAIN " + plain_b64(USER, PW), timeout=20)
    r.expect(250, "MAIL FROM:<alice@example.org>")
    r.expect(250, "RCPT TO:<bob@example.net>")
    r.expect(354, "DATA")
    r.send(b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 80 + b".\r\n")  # > 4k
    assert r.reply(timeout=20).code == 552
    r.closed()
    r.close()


def log_counts(log):
    """What the log says about the run, in the metrics' terms."""
    ev = lambda pat: len(re.findall(pat, log, re.M))
    accepted = re.findall(r"event=message .*size=(\d+) .*reply=\"2", log)
    return {
        'saslgate_sessions_total{listener="plain"}': ev(r"event=connect .*listener=plain$"),
        'saslgate_sessions_total{listener="submission"}':
            ev(r"event=connect .*listener=submission$"),
        'saslgate_tls_handshakes_total{listener="submission",result="ok"}':
            ev(r"event=tls result=ok"),
        'saslgate_auth_total{mechanism="PLAIN",result="ok"}':
            ev(r"event=auth result=ok .*mech=PLAIN"),
        'saslgate_auth_total{mechanism="PLAIN",result="fail"}':
            ev(r"event=auth result=fail .*mech=PLAIN"),
        'saslgate_messages_total{result="accepted"}': len(accepted),
        'saslgate_messages_total{result="refused"}':
            ev(r"event=message ") - len(accepted),
        "saslgate_message_bytes_total": sum(int(x) for x in accepted),
    }


def test_counters_match_the_log(start_saslgate, start_postfix, workdir, keys):
    pf = start_postfix()
    dead = refused_port()  # the first server: every link fails over
    sg, mport = gate(start_saslgate, workdir, keys, pf.port,
                     upstream={"server": ["%s:%d" % (HOST, dead), "%s:%d" % (HOST, pf.port)]})
    plain, sub = sg.port("plain"), sg.port("submission")
    good_session(plain)
    good_session(plain)
    good_session(sub, tls=True)
    bad_auth(plain)
    too_big(plain)
    wait_for(lambda: sg.log_text().count("event=disconnect") == 5, T(10), "5 disconnects")
    text = scrape(mport)
    promtool_check(text)
    m = samples(text)
    log = sg.log_text()
    for k, v in log_counts(log).items():
        assert m.get(k) == v, "%s: scraped %s, the log says %s" % (k, m.get(k), v)
    assert m['saslgate_sessions_total{listener="plain"}'] == 4
    assert m['saslgate_messages_total{result="accepted"}'] == 3
    assert m['saslgate_data_refusals_total{reason="size"}'] == 1
    assert m['saslgate_sessions_active{listener="plain"}'] == 0
    assert m['saslgate_connections_open{listener="plain"}'] == 0
    assert m['saslgate_connections_total{listener="plain"}'] == 4
    up = "%s:%d" % (HOST, pf.port)
    assert m['saslgate_upstream_replies_total{upstream="%s",class="2xx"}' % up] > 0
    assert m['saslgate_upstream_reply_duration_seconds_count'] == sum(
        v for k, v in m.items() if k.startswith("saslgate_upstream_replies_total"))
    auths = sum(v for k, v in m.items() if k.startswith("saslgate_auth_total"))
    assert auths == sum(v for k, v in m.items()
                        if k.startswith("saslgate_auth_duration_seconds_count"))
    assert m["saslgate_sasl_queue_depth"] == 0
    fails = len(re.findall(r"event=upstream_fail upstream=%s:%d " % (HOST, dead), log))
    assert fails >= 4  # the probe's and each AUTH's link
    assert m['saslgate_upstream_connect_failures_total{upstream="%s:%d"}' % (HOST, dead)] == fails
    assert m["saslgate_upstream_failovers_total"] == fails
    assert m["saslgate_upstream_unavailable_total"] == 0
    assert m['saslgate_build_info{version="0.1.0"}'] == 1
    (workdir / "scrape.txt").write_text(text)


def test_http_answers(start_saslgate, start_postfix, workdir, keys):
    pf = start_postfix()
    sg, mport = gate(start_saslgate, workdir, keys, pf.port)
    st, h, body = http(mport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200 and h["connection"] == "close" and "# TYPE saslgate_auth_total counter" in body
    st, h, _ = http(mport, b"GET /metrics?x=1 HTTP/1.0\n\n")  # bare LF accepted
    assert st == 200
    st, h, _ = http(mport, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 404 and h["connection"] == "close"
    st, h, _ = http(mport, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert st == 405 and h["allow"] == "GET"
    st, _, _ = http(mport, b"\x16\x03\x01 garbage\r\n\r\n")
    assert st == 400
    st, _, _ = http(mport, b"GET /metrics HTTP/1.1\r\n" + b"X-Long: y\r\n" * 500)
    assert st == 400
    try:
        urllib.request.urlopen("http://%s:%d/" % (HOST, mport), timeout=T(10))
        raise AssertionError("/ answered 2xx")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    # a client that sends nothing is closed after the request timeout
    with socket.create_connection((HOST, mport), timeout=T(10)) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - t0 < T(8)
    # the SMTP side is unaffected
    good_session(sg.port("plain"))


def listening_ports(pid):
    """TCP ports pid listens on (/proc: its socket inodes in LISTEN)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    ports = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(f).read().splitlines()[1:]:
            p = line.split()
            if p[3] == "0A" and p[9] in inodes:
                ports.add(int(p[1].rsplit(":", 1)[1], 16))
    return ports


def test_off_by_default(start_saslgate, start_postfix, workdir, keys):
    pf = start_postfix()
    cert, key, db = keys
    cfg = default_config(workdir, upstream_port=pf.port, cert=cert, key=key, sasldb=db)
    sg = start_saslgate(cfg, secrets=SECRETS)
    smtp_ports = {sg.port(n) for n in ("plain", "submission", "submissions")}
    assert listening_ports(sg.pid) == smtp_ports


def test_non_loopback_needs_public(workdir, keys):
    cert, key, db = keys
    os.chmod(key, 0o600)  # -t checks the key's mode too
    cfg = default_config(workdir, upstream_port=25, cert=cert, key=key, sasldb=db)
    for s in cfg:
        if s.startswith("listener "):
            cfg[s]["address"] = "%s:%d" % (HOST, free_port())
    conf = workdir / "m.conf"
    text = _ini(cfg) + "[metrics]\naddress = 0.0.0.0:%d\n" % free_port()
    conf.write_text(text)
    line = text.splitlines().index("[metrics]") + 2
    p = run_saslgate("-t", "-c", conf)
    assert p.returncode == 1
    assert "%s:%d: [metrics] address 0.0.0.0:" % (conf, line) in p.stderr
    assert "public = yes" in p.stderr
    p = run_saslgate("-c", conf, timeout=30)  # start refuses it as well
    assert p.returncode == 1
    conf.write_text(text + "public = yes\n")
    p = run_saslgate("-t", "-c", conf)
    assert p.returncode == 0, p.stderr
    conf.write_text(_ini(cfg) + "[metrics]\naddress = [::1]:%d\n" % free_port())
    p = run_saslgate("-t", "-c", conf)
    assert p.returncode == 0, p.stderr


def test_scrapes_during_load(start_saslgate, start_postfix, workdir, keys):
    pf = start_postfix()
    sg, mport = gate(start_saslgate, workdir, keys, pf.port, workers=2)
    plain = sg.port("plain")
    errors = []
    N_THREADS, N_SESSIONS = 4, 8

    def client():
        try:
            for _ in range(N_SESSIONS):
                good_session(plain)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(N_THREADS)]
    for t in threads:
        t.start()
    last = {}
    scrapes = 0
    while any(t.is_alive() for t in threads):
        text = scrape(mport)
        scrapes += 1
        m = samples(text)
        for k, v in m.items():  # counters never go down
            if k.endswith("_total") or "_bucket{" in k or k.endswith("_count"):
                assert v >= last.get(k, 0), k
        last = m
        if scrapes == 3:
            promtool_check(text)
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert not errors, errors
    n = N_THREADS * N_SESSIONS
    wait_for(lambda: sg.log_text().count("event=disconnect") == n, T(10), "disconnects")
    text = scrape(mport)
    promtool_check(text)
    m = samples(text)
    for k, v in log_counts(sg.log_text()).items():
        assert m.get(k) == v, "%s: scraped %s, the log says %s" % (k, m.get(k), v)
    assert m['saslgate_messages_total{result="accepted"}'] == n
    assert scrapes >= 2
    (workdir / "scrape-load.txt").write_text(text)
