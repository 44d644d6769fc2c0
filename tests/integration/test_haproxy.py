# SPDX-License-Identifier: BSD-2-Clause
"""tests/integration/test_haproxy.py: scale-out behind a real HAProxy.

Two saslgate instances, listeners with `proxy_protocol = v2`, behind
HAProxy (the Debian package) in TCP mode with `send-proxy-v2` and an SMTP
health check (`option smtpchk`, sent with `check-send-proxy`: a PROXY v2
LOCAL header first, since the listeners require the header).  The client
connects from 127.0.0.2, a loopback address distinct from the 127.0.0.1
HAProxy itself uses towards saslgate, so the two can be told apart.  The
MTA is the harness's FakeUpstream, which announces XCLIENT and records
every command; each instance says a different EHLO name upstream
([upstream] helo) so the recorder knows which instance relayed what.

What a user of this deployment relies on, and what is asserted:
  * the client's address, not HAProxy's, reaches the MTA in XCLIENT ADDR=,
    through each of the two instances;
  * when one instance stops, HAProxy's health check marks it DOWN and mail
    keeps flowing through the other, still with the client's address;
  * the per-address AUTH failure limit counts the client's address (not
    HAProxy's), on each instance separately;
  * with `proxy_trusted_networks = 127.0.0.1`, a client that reaches an
    instance directly (from 127.0.0.2) cannot claim an address: it is
    closed unanswered, and logged.
"""
import os
import re
import shutil
import smtplib
import socket
import subprocess

import pytest

import sgtest

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CLIENT_ADDR = "127.0.0.2"   # the client; HAProxy connects to saslgate from 127.0.0.1
OTHER_CLIENT = "127.0.0.3"
USER, PASSWORD = "hauser", "Hq7-scaleout.pw"
REALM = "sg.test"
INSTANCES = ("sg1", "sg2")

pytestmark = pytest.mark.skipif(not os.path.exists(HAPROXY),
                                reason="haproxy (Debian package) not installed")


def haproxy_config(workdir, front_port, backends, stats_sock):
    """The deployment of the README, on loopback, with fast checks."""
    servers = "\n".join(
        "    server %s 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1"
        % (name, port) for name, port in backends)
    return """\
global
    pidfile {dir}/haproxy.pid
    stats socket {sock} mode 600 level admin
    maxconn 200

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s

frontend submission
    bind 127.0.0.1:{front}
    default_backend saslgate

backend saslgate
    balance roundrobin
    option smtpchk EHLO haproxy-check.test
{servers}
""".format(dir=workdir, sock=stats_sock, front=front_port, servers=servers)


def haproxy_cmd(sock_path, cmd):
    """One command on HAProxy's admin socket -> its answer (text)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while len(out) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


def server_status(sock_path):
    """{server name: status ("UP", "DOWN", "UP 1/2", ...)} of backend saslgate."""
    try:
        lines = haproxy_cmd(sock_path, "show stat").splitlines()
    except OSError:
        return {}
    if not lines or not lines[0].startswith("# "):
        return {}
    cols = lines[0][2:].split(",")
    status = {}
    for line in lines[1:]:
        row = dict(zip(cols, line.split(",")))
        if row.get("pxname") == "saslgate" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            status[row["svname"]] = row.get("status", "")
    return status


def wait_status(sock_path, want, timeout):
    """Bounded wait until every server in `want` has exactly that status."""
    last = {}

    def ok():
        last.clear()
        last.update(server_status(sock_path))
        return all(last.get(k) == v for k, v in want.items())
    try:
        sgtest.wait_for(ok, sgtest.T(timeout), "HAProxy status %s" % want, interval=0.1)
    except AssertionError:
        raise AssertionError("HAProxy never showed %s; last seen %s" % (want, last))
    return dict(last)


class Deployment:
    """FakeUpstream + two saslgate instances (the harness's fixtures stop
    and check them) + HAProxy (stopped by close())."""

    def __init__(self, workdir, start_saslgate, start_fake_upstream, sasl=None):
        self.hap, self.hap_log = None, None
        self.upstream = start_fake_upstream()
        cert, key = sgtest.make_cert(workdir)
        # an explicit realm: saslpasswd2's default (the machine's host name)
        # need not be the one saslgate's Cyrus context defaults to
        sasldb = sgtest.make_sasldb(workdir / "sasldb2", {USER: PASSWORD}, realm=REALM)
        self.instances = {}
        for name in INSTANCES:
            cfg = sgtest.default_config(
                workdir, self.upstream.port, cert=cert, key=key, sasldb=sasldb,
                # HAProxy connects from 127.0.0.1: only it may send the header
                listener_submission={"proxy_protocol": "v2",
                                     "proxy_trusted_networks": "127.0.0.1"},
                listener_submissions=None, listener_plain=None,
                sasl=dict({"realm": REALM}, **(sasl or {})),
                upstream={"helo": "%s.test" % name})
            self.instances[name] = start_saslgate(cfg, secrets={USER: PASSWORD}, name=name)
        self.front = sgtest.free_port()
        self.stats = str(workdir / "haproxy.sock")
        cfg_path = workdir / "haproxy.cfg"
        cfg_path.write_text(haproxy_config(
            workdir, self.front,
            [(n, i.port("submission")) for n, i in self.instances.items()], self.stats))
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg_path)], capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert check.returncode == 0, "haproxy -c: " + check.stdout + check.stderr
        self.hap_log = open(workdir / "haproxy.log", "wb")
        # -db: foreground, no daemon; its own session so close() can stop it
        self.hap = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg_path)], stdout=self.hap_log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        try:
            sgtest.wait_port(self.front, 10, self.hap)
        except BaseException:
            self.close()
            raise

    def send(self, tag):
        """One authenticated message through HAProxy from CLIENT_ADDR."""
        c = smtplib.SMTP("127.0.0.1", self.front, local_hostname="client.test",
                         timeout=sgtest.T(30), source_address=(CLIENT_ADDR, 0))
        try:
            c.ehlo()
            c.starttls(context=sgtest.unverified_context())
            c.ehlo()
            c.login(USER, PASSWORD)
            refused = c.sendmail("%s@example.org" % USER, ["rcpt@example.net"],
                                 ("Subject: %s\r\n\r\nmessage %s\r\n" % (tag, tag)).encode())
            assert refused == {}, refused
        finally:
            try:
                c.quit()
            except (smtplib.SMTPException, OSError):
                c.close()

    def auth_once(self, source, password):
        """One session through HAProxy from `source`: STARTTLS, one AUTH
        PLAIN, QUIT; returns the AUTH reply code."""
        c = smtplib.SMTP("127.0.0.1", self.front, local_hostname="client.test",
                         timeout=sgtest.T(30), source_address=(source, 0))
        try:
            c.ehlo()
            c.starttls(context=sgtest.unverified_context())
            c.ehlo()
            code, _ = c.docmd("AUTH", "PLAIN " + sgtest.plain_b64(USER, password))
            return code
        finally:
            try:
                c.quit()
            except (smtplib.SMTPException, OSError):
                c.close()

    def relayed(self, since_conn=0):
        """[(instance EHLO name, XCLIENT ADDR)] for each upstream connection
        (numbered from 1) after since_conn that carried a DATA."""
        by_conn = {}
        for conn, line in list(self.upstream.commands):
            words = line.split()
            if conn <= since_conn or not words:
                continue
            verb = words[0].upper()
            rec = by_conn.setdefault(conn, {"helo": None, "addr": None, "data": False})
            if verb in ("EHLO", "HELO") and rec["helo"] is None and len(words) > 1:
                rec["helo"] = words[1]
            elif verb == "XCLIENT":
                attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
                rec["addr"] = attrs.get("ADDR")
            elif verb == "DATA":
                rec["data"] = True
        return [(r["helo"], r["addr"]) for _, r in sorted(by_conn.items()) if r["data"]]

    def close(self):
        if self.hap is not None:
            sgtest._stop_process(self.hap)
        if self.hap_log is not None:
            self.hap_log.close()


@pytest.fixture
def deployment(request, workdir, start_saslgate, start_fake_upstream):
    dep = None
    try:
        dep = Deployment(workdir, start_saslgate, start_fake_upstream,
                         sasl=getattr(request, "param", None))
        yield dep
    finally:
        if dep is not None:
            dep.close()


def test_client_address_reaches_upstream_through_both_instances(deployment):
    dep = deployment
    wait_status(dep.stats, {"sg1": "UP", "sg2": "UP"}, 15)

    # round robin: four sessions, two through each instance
    for i in range(4):
        dep.send("rr-%d" % i)

    sgtest.wait_for(lambda: len(dep.upstream.delivered()) >= 4, sgtest.T(10), "4 messages upstream")
    seen = dep.relayed()
    assert len(seen) == 4, seen
    assert sorted(h for h, _ in seen) == ["sg1.test", "sg1.test", "sg2.test", "sg2.test"], seen
    # the client's address, not HAProxy's 127.0.0.1, through both instances
    assert all(addr == CLIENT_ADDR for _, addr in seen), seen
    # and each instance logged the client's address for its AUTH
    for name in INSTANCES:
        assert dep.instances[name].wait_log(r"event=auth result=ok .*client=%s\b"
                                            % CLIENT_ADDR.replace(".", r"\."), 5)


def test_stopped_instance_is_taken_out_and_mail_keeps_flowing(deployment):
    dep = deployment
    wait_status(dep.stats, {"sg1": "UP", "sg2": "UP"}, 15)

    assert dep.instances["sg2"].stop() == 0
    # fall 2 x inter 200ms: DOWN within a second or two; 15 s is the bound
    wait_status(dep.stats, {"sg1": "UP", "sg2": "DOWN"}, 15)

    before = dep.upstream.connections
    for i in range(4):
        dep.send("after-stop-%d" % i)
    seen = dep.relayed(since_conn=before)
    assert len(seen) == 4, seen
    assert all(h == "sg1.test" and a == CLIENT_ADDR for h, a in seen), seen


@pytest.mark.parametrize("deployment", [{"ip_failure_limit": 2, "ip_failure_window": "10m"}],
                         indirect=True)
def test_auth_failure_limit_counts_the_client_per_instance(deployment):
    """Behind HAProxy every connection comes from HAProxy's address; the
    per-address AUTH failure counter must count the PROXY header's client
    (else one password guesser would lock everybody out), and it is per
    instance (the README's deployment notes say so)."""
    dep = deployment
    wait_status(dep.stats, {"sg1": "UP", "sg2": "UP"}, 15)
    fail_re = r"event=auth result=fail .*client=127\.0\.0\.2\b"

    def failures():
        return {n: len(re.findall(fail_re, i.log_text())) for n, i in dep.instances.items()}

    # wrong passwords from 127.0.0.2 until both instances counted the limit
    # (round robin alternates; bounded at 8 sessions)
    for _ in range(8):
        if all(v >= 2 for v in failures().values()):
            break
        assert dep.auth_once(CLIENT_ADDR, "wrong-" + PASSWORD) == 535
    counts = failures()
    assert all(v >= 2 for v in counts.values()), counts

    # 127.0.0.2 is over the limit on both instances, even with the right password
    assert [dep.auth_once(CLIENT_ADDR, PASSWORD) for _ in range(2)] == [454, 454]
    # another client through the same HAProxy is not: the counter is the
    # client's address, not HAProxy's 127.0.0.1
    assert [dep.auth_once(OTHER_CLIENT, PASSWORD) for _ in range(2)] == [235, 235]
    for name, inst in dep.instances.items():
        assert re.search(r"event=auth result=ok .*client=127\.0\.0\.3\b", inst.log_text()), name


def test_client_going_around_haproxy_is_refused(deployment):
    """A PROXY header from 127.0.0.2 straight to an instance (not through
    HAProxy at 127.0.0.1) is not believed: closed before any greeting,
    logged, and the address it claims appears nowhere."""
    dep = deployment
    wait_status(dep.stats, {"sg1": "UP", "sg2": "UP"}, 15)
    inst = dep.instances["sg1"]
    with socket.create_connection(("127.0.0.1", inst.port("submission")),
                                  timeout=sgtest.T(10), source_address=(CLIENT_ADDR, 0)) as s:
        s.sendall(b"PROXY TCP4 203.0.113.66 127.0.0.1 40000 587\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        assert got == b"", got
    inst.wait_log(r"event=proxy_refused client=127\.0\.0\.2:\d+ listener=submission "
                  r'reason="peer not in proxy_trusted_networks"', 5)
    assert "203.0.113.66" not in inst.log_text()
    # HAProxy itself still gets through
    dep.send("after-refusal")
    assert dep.relayed()[-1][1] == CLIENT_ADDR
