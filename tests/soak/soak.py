#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""soak.py: saslgate under mixed load with faults, for an hour (or a minute).

It starts a real stack (the process-test harness, tests/integration/sgtest.py):
two private Postfix instances as upstreams (primary and secondary, XCLIENT
authorised, each relaying to its own smtp-sink that dumps every message to a
file), Debian's saslauthd with a throwaway user, and saslgate with a STARTTLS
and an implicit-TLS listener and both upstreams.  Then it drives load with
tests/bench/sgload (new TLS sessions with AUTH and one small message; long
sessions with many messages; 10 MiB messages; authenticated sessions held
idle) while, every --fault-every seconds, one thing changes in turn:

  sighup     a fresh certificate and key are written and saslgate gets SIGHUP
  restart    the primary Postfix is stopped and started again
  saslauthd  saslauthd is stopped and started again
  primary    the primary Postfix is stopped for --primary-down seconds
             (saslgate fails over to the secondary)
  burst      a burst of wrong passwords from one address (127.0.0.N, a new
             one each time): 535s until [sasl] ip_failure_limit (10), then 454

Every message carries its own X-Sgload-Id header; sgload writes one line per
outcome.  The smtp-sink dumps are read (and deleted) as they arrive, so the
ids the upstreams stored can be matched against the ids the clients got a
2xx for.  See tests/soak/README.md for what is checked; the verdict is the
exit status (0: every promise kept, 1: one broken, 2: the rig failed).
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("SG_SOURCE_DIR") or HERE.parent.parent)

FAULT_KINDS = ("sighup", "restart", "saslauthd", "primary", "burst")
# Faults during which a client may see a 4xx (an upstream or the
# authentication backend is down); sighup and burst are not among them.
DOWN_KINDS = ("restart", "saslauthd", "primary")


def log(msg):
    sys.stderr.write("soak %s %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Rig(Exception):
    """The test rig itself failed (not a verdict on saslgate)."""


# ---------------------------------------------------------------- options

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3600, help="seconds of load (default 3600)")
    ap.add_argument("--window", type=float, default=None,
                    help="report window in seconds (default 600; 60 with --short)")
    ap.add_argument("--short", action="store_true",
                    help="the CI version: 60 s, a fault every 10 s, less load")
    ap.add_argument("--fault-every", type=float, default=None,
                    help="seconds between faults (default 30; 10 with --short)")
    ap.add_argument("--primary-down", type=float, default=None,
                    help="seconds the primary stays down (default 60; 10 with --short)")
    ap.add_argument("--sample-every", type=float, default=None,
                    help="RSS/fd sampling period (default 60; 5 with --short)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="samples before this are not used for the slopes "
                         "(default 600; 15 with --short)")
    ap.add_argument("--rss-slope-max", type=float, default=512.0,
                    help="KiB per minute (default 512, i.e. 30 MiB an hour)")
    ap.add_argument("--fd-slope-max", type=float, default=0.2,
                    help="non-connection fds per minute (default 0.2)")
    ap.add_argument("--grace", type=float, default=5.0,
                    help="seconds after a fault in which a 4xx is still allowed")
    ap.add_argument("--load", type=float, default=1.0,
                    help="load factor (fewer pauses when higher; default 1)")
    ap.add_argument("--single-upstream", action="store_true",
                    help="give saslgate the primary only (a check of the checker: "
                         "the primary's downtime must then fail the verdict)")
    ap.add_argument("--saslgate", help="the binary (default $SASLGATE_BIN or build/saslgate)")
    ap.add_argument("--workdir", help="work directory (default: a fresh one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", help="also write the summary as JSON to this file")
    a = ap.parse_args(argv)
    if a.short:
        a.duration = 60 if "--duration" not in " ".join(argv) else a.duration
    dflt = {"window": (60, 600), "fault_every": (10, 30), "primary_down": (10, 60),
            "sample_every": (5, 60), "warmup": (15, 600)}
    for k, (short, long_) in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, short if a.short else long_)
    a.warmup = min(a.warmup, a.duration / 4)
    return a


# ---------------------------------------------------------------- helpers

def tcp_rows():
    """The rows of /proc/net/tcp and tcp6, split into fields."""
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tab) as f:
                next(f)
                for line in f:
                    yield line.split()
        except OSError:
            pass


def proc_sample(pid):
    """(rss KiB, fds, fds that are not established TCP connections)."""
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    established = {w[9] for w in tcp_rows() if w[3] == "01"}
    fds = other = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        fds += 1
        m = re.match(r"socket:\[(\d+)\]", target)
        if not (m and m.group(1) in established):
            other += 1
    return rss, fds, other


def fd_table(pid):
    """{fd: what it is}: the link target, for sockets the TCP state and
    addresses or the Unix socket path (to name leaked descriptors)."""
    socks = {}
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "0A": "LISTEN", "02": "SYN_SENT", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "09": "LAST_ACK", "0B": "CLOSING"}

    def addr(h):
        ip, port = h.split(":")
        if len(ip) == 8:
            ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
        return "%s:%d" % (ip, int(port, 16))
    for w in tcp_rows():
        socks[w[9]] = "tcp %s %s->%s" % (states.get(w[3], w[3]), addr(w[1]), addr(w[2]))
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                w = line.split()
                socks[w[6]] = "unix st=%s %s" % (w[5], w[7] if len(w) > 7 else "")
    except OSError:
        pass
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", t)
        out[int(fd)] = socks.get(m.group(1), t) if m else t
    return out


def slope_per_min(points):
    """Least-squares slope of [(t seconds, v)] in v per minute (None: < 3)."""
    if len(points) < 3:
        return None
    ts = [p[0] for p in points]
    vs = [p[1] for p in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return None
    return 60.0 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den


def p99(values):
    if not values:
        return None
    v = sorted(values)
    k = max(0, -(-99 * len(v) // 100) - 1)  # nearest rank
    return v[min(k, len(v) - 1)]


# ---------------------------------------------------------------- the rig

class Soak:
    def __init__(self, a, sgtest):
        self.a, self.sg_mod = a, sgtest
        self.scale = sgtest.SCALE
        self.grace = a.grace * self.scale
        self.stop_load = threading.Event()
        self.lock = threading.Lock()
        self.faults = []            # dict(kind, start, end, down=[(s, e)], ok, note)
        self.samples = []           # (t, rss KiB, fds, other fds)
        self.stored = {}            # xid -> [(queue id, upstream)]
        self.unparsed = []          # sink files without an X-Sgload-Id
        self.burst_codes = []       # reply codes to the wrong passwords
        self.idle_runs = []         # (start, end, events file)
        self.rig_errors = []
        self.incomplete = set()  # queue files a killed cleanup(8) left
        self.seq = 0
        self.started = []           # things to stop, in order

    # -------------------------------------------------------- setup

    def setup(self):
        sgtest, w = self.sg_mod, self.work
        self.sgload = w / "sgload"
        # built here with the benchmark's Makefile, not in the source tree
        shutil.copyfile(SOURCE_DIR / "tests/bench/sgload.c", w / "sgload.c")
        p = subprocess.run(["make", "-s", "-C", str(w), "-f", str(SOURCE_DIR / "tests/bench/Makefile"),
                            "sgload"], capture_output=True, text=True, timeout=120)
        if p.returncode != 0 or not self.sgload.exists():
            raise Rig("building sgload: %s%s" % (p.stdout, p.stderr))
        self.events_dir = w / "events"
        self.events_dir.mkdir()
        self.user = "sgsoak%d" % (os.getpid() % 100000)
        self.pw = "Sk7-soak.pw%d" % os.getpid()
        self.wrong_pw = "Wr0ng-soak.pw"
        extra = {"message_size_limit": str(64 << 20), "queue_run_delay": "5s",
                 "minimal_backoff_time": "5s", "maximal_backoff_time": "10s",
                 "smtpd_timeout": "600s"}
        self.primary = sgtest.Postfix(w, hostname="primary.test", extra=extra)
        self.started.append(self.primary.stop)
        self.secondary = sgtest.Postfix(w, hostname="secondary.test", extra=extra)
        self.started.append(self.secondary.stop)
        self.saslauthd = sgtest.Saslauthd(w, {self.user: self.pw})
        self.started.append(self.saslauthd.stop)
        self.tls_dir = w / "tls"
        self.tls_dir.mkdir()
        self.cert, self.key = self.tls_dir / "cert.pem", self.tls_dir / "key.pem"
        self.rotate_cert(0)
        cfg = sgtest.default_config(
            w, self.primary.port, cert=self.cert, key=self.key, saslauthd=self.saslauthd,
            upstream={"server": ["%s:%d" % (sgtest.HOST, self.primary.port)] + (
                [] if self.a.single_upstream else ["%s:%d" % (sgtest.HOST, self.secondary.port)]),
                      "connect_timeout": "5s"},
            sasl={"failure_delay": "1s"},
            server={"max_connections": 2000, "shutdown_timeout": "10s"},
            limits={"idle_timeout": "15m", "max_message_size": "20M"})
        cfg.pop("listener plain", None)
        self.sg = sgtest.Saslgate(w, cfg, secrets={self.user: self.pw})
        self.started.append(self.sg.kill)
        self.sub_port, self.subs_port = self.sg.port("submission"), self.sg.port("submissions")
        # One session through to the upstream before the baseline, so that
        # whatever is opened once on first use is in it.
        self.send_one("warm-up")
        time.sleep(1)
        self.baseline = proc_sample(self.sg.pid)
        self.baseline_fds = fd_table(self.sg.pid)
        log("stack up: saslgate pid %d (ports %d/%d), primary %d, secondary %d; baseline "
            "rss %d KiB, %d fds" % (self.sg.pid, self.sub_port, self.subs_port, self.primary.port,
                                   self.secondary.port, self.baseline[0], self.baseline[1]))

    def send_one(self, marker):
        c = self.sg_mod.smtp(self.sub_port)
        try:
            c.login(self.user, self.pw)
            c.sendmail("soak@example.org", ["rcpt@example.com"],
                       "Subject: %s\r\nX-Sgload-Id: %s\r\n\r\nhello\r\n" % (marker, marker))
        finally:
            c.quit()

    def rotate_cert(self, n):
        """A new self-signed pair, written over the configured files."""
        d = self.tls_dir / ("gen-%d" % n)
        d.mkdir()
        cert, key = self.sg_mod.make_cert(d, kind="ecdsa" if n % 2 else "rsa", cn="localhost")
        shutil.copyfile(key, self.key)
        shutil.copyfile(cert, self.cert)
        return ssl.PEM_cert_to_DER_cert(cert.read_text())

    # -------------------------------------------------------- load

    def loaders(self):
        """(name, sgload arguments, pause between runs) for each class."""
        slow = self.scale / max(self.a.load, 0.01)
        seg = 20 if self.a.short else 60
        common = ["--host", self.sg_mod.HOST, "--auth", "%s:%s" % (self.user, self.pw),
                  "--timeout", str(int(60 * self.scale)), "--total", "100000"]
        sub, subs = ["--port", str(self.sub_port), "--tls", "starttls"], \
                    ["--port", str(self.subs_port), "--tls", "implicit"]
        pause = lambda ms: ["--pause-ms", str(int(ms * slow))]  # noqa: E731
        big_every = (20 if self.a.short else 60) * slow
        return [
            ("new-starttls", common + sub + ["--conns", "2", "--msgs-per-conn", "1", "--size", "3000",
                                             "--duration", str(seg)] + pause(400), 0),
            ("new-implicit", common + subs + ["--conns", "1", "--msgs-per-conn", "1", "--size", "3000",
                                              "--duration", str(seg)] + pause(400), 0),
            ("long", common + sub + ["--conns", "1", "--msgs-per-conn", "100", "--size", "6000",
                                     "--duration", str(seg)] + pause(150), 0),
            ("big", common + subs + ["--conns", "1", "--msgs-per-conn", "1", "--total", "1",
                                     "--size", str(10 << 20), "--duration", str(seg)], big_every),
        ]

    def run_loader(self, name, args, gap):
        k = 0
        while not self.stop_load.is_set():
            k += 1
            tag = "%s-%d" % (name, k)
            ev = self.events_dir / ("%s.log" % tag)
            left = self.deadline - time.time()
            if left < 2:
                break
            argv = [str(self.sgload)] + args + ["--id-tag", tag, "--events", str(ev)]
            # the last run stops with the load
            i = argv.index("--duration")
            argv[i + 1] = str(min(float(argv[i + 1]), left))
            out = self.work / ("%s.out" % tag)
            with open(out, "wb") as f:
                p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
                try:
                    p.wait(timeout=left + 300 * self.scale)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    self.rig_errors.append("sgload %s did not finish" % tag)
            if gap:
                self.stop_load.wait(gap)

    def run_idle(self):
        n = 6 if self.sg_mod.SANITIZE else (10 if self.a.short else 20)
        hold = 20 if self.a.short else 120
        k = 0
        while not self.stop_load.is_set() and self.deadline - time.time() > hold + 5:
            k += 1
            ev = self.events_dir / ("idle-%d.log" % k)
            t0 = time.time()
            subprocess.run([str(self.sgload), "--host", self.sg_mod.HOST, "--port", str(self.sub_port),
                            "--tls", "starttls", "--auth", "%s:%s" % (self.user, self.pw),
                            "--idle", str(n), "--hold", str(hold), "--conns", "4",
                            "--timeout", str(int(30 * self.scale)), "--duration", "30",
                            "--events", str(ev)],
                           stdout=open(self.work / ("idle-%d.out" % k), "wb"),
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=hold + 400 * self.scale)
            self.idle_runs.append((t0, time.time(), ev))

    # -------------------------------------------------------- faults

    def fault(self, kind, fn):
        f = {"kind": kind, "start": time.time(), "end": None, "down": [], "ok": True, "note": ""}
        with self.lock:
            self.faults.append(f)
        try:
            fn(f)
        except Exception as e:  # the rig failed, keep going and report it
            f["ok"] = False
            f["note"] = "%s: %r" % (kind, e)
            log("fault %s failed: %r" % (kind, e))
        f["end"] = time.time()
        log("fault %s %s (%.1f s)%s" % (kind, "done" if f["ok"] else "FAILED", f["end"] - f["start"],
                                         " " + f["note"] if f["note"] else ""))

    def do_sighup(self, f):
        self.seq += 1
        der = self.rotate_cert(self.seq)
        m = self.sg.reload(timeout=30)
        if "failed" in m.group(0):
            f["ok"], f["note"] = False, "reload failed"
            return
        # new sessions present the new certificate, on both listeners
        got = []
        r = self.sg_mod.Raw(self.subs_port, tls=True)
        got.append(r.sock.getpeercert(binary_form=True))
        r.close()
        r = self.sg_mod.Raw(self.sub_port)
        r.expect(220)
        r.expect(250, "EHLO soak.test")
        r.starttls()
        got.append(r.sock.getpeercert(binary_form=True))
        r.close()
        if any(g != der for g in got):
            f["ok"], f["note"] = False, "a new session got the old certificate after SIGHUP"

    def pf_stop(self, pf):
        pid = pf.master_pid()
        if not pid:
            raise RuntimeError("no Postfix master pid")
        os.kill(pid, signal.SIGTERM)
        self.sg_mod.wait_for(lambda: not os.path.exists("/proc/%d" % pid), 30,
                             "Postfix master to exit", interval=0.1)

    def do_restart(self, f):
        s = time.time()
        self.pf_stop(self.primary)
        self.primary._start()
        f["down"].append((s, time.time()))

    def do_saslauthd(self, f):
        s = time.time()
        sa = self.saslauthd
        self.sg_mod._stop_process(sa.proc)
        sa._start()
        f["down"].append((s, time.time()))

    def do_primary(self, f):
        s = time.time()
        self.pf_stop(self.primary)
        stopped = time.time()
        # Down for a while: new sessions must fail over without a 4xx, so
        # only the moment of stopping (sessions on the primary lose it) and
        # the moment of starting are 4xx windows.
        f["down"].append((s, stopped))
        self.stop_load.wait(self.a.primary_down)
        s2 = time.time()
        self.primary._start()
        f["down"].append((s2, time.time()))
        f["down_span"] = (stopped, s2)

    def do_burst(self, f):
        codes = []
        self.nburst = getattr(self, "nburst", 0) + 1
        src = "127.0.0.%d" % (10 + self.nburst % 240)

        def one():
            c = None
            try:
                c = smtplib.SMTP(self.sg_mod.HOST, self.sub_port, local_hostname="burst.test",
                                 timeout=30 * self.scale, source_address=(src, 0))
                c.ehlo()
                c.starttls(context=self.sg_mod.unverified_context())
                c.ehlo()
                for _ in range(3):
                    try:
                        c.login(self.user, self.wrong_pw)
                        codes.append(235)
                    except smtplib.SMTPAuthenticationError as e:
                        codes.append(e.smtp_code)
                    except smtplib.SMTPServerDisconnected:
                        codes.append(-1)
                        break
                    except smtplib.SMTPException as e:
                        codes.append(getattr(e, "smtp_code", -2))
            except (OSError, smtplib.SMTPException) as e:
                codes.append("connect: %r" % e)
            finally:
                try:
                    if c:
                        c.close()
                except OSError:
                    pass
        # 5 sessions of 3 failures (then 421) from one address: more than
        # the 10 failures ip_failure_limit allows
        ts = [threading.Thread(target=one) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.burst_codes.extend(codes)
        f["note"] = "from %s: %s" % (src, " ".join(map(str, codes)))
        bad = [c for c in codes if c not in (535, 454, 421, -1)]
        if bad or 535 not in codes or 454 not in codes:
            f["ok"] = False
            f["note"] += " (expected 535s, then 454 past the address's failure limit)"

    def run_faults(self):
        actions = {"sighup": self.do_sighup, "restart": self.do_restart,
                   "saslauthd": self.do_saslauthd, "primary": self.do_primary,
                   "burst": self.do_burst}
        i = 0
        nxt = self.t0 + self.a.fault_every * 0.8
        primary_thread = None
        while True:
            wait = nxt - time.time()
            if self.stop_load.wait(max(0, wait)) or nxt > self.deadline - 3:
                break
            kind = FAULT_KINDS[i % len(FAULT_KINDS)]
            i += 1
            nxt += self.a.fault_every
            if kind == "primary":
                # runs beside the next faults; "restart" waits for it
                primary_thread = threading.Thread(target=self.fault, args=(kind, actions[kind]))
                primary_thread.start()
                continue
            if kind == "restart" and primary_thread:
                primary_thread.join()
            self.fault(kind, actions[kind])
        if primary_thread:
            primary_thread.join()

    # -------------------------------------------------------- sampling

    def run_sampler(self):
        while True:
            try:
                rss, fds, other = proc_sample(self.sg.pid)
                self.samples.append((time.time(), rss, fds, other))
            except OSError:
                self.rig_errors.append("saslgate process gone at %s" % time.strftime("%H:%M:%S"))
                return
            self.scan_sinks()
            if self.stop_load.wait(self.a.sample_every):
                return

    def scan_sinks(self, final=False):
        for pf, name in ((self.primary, "primary"), (self.secondary, "secondary")):
            d = pf.sink.dir
            for p in list(d.iterdir()):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if not final and time.time() - st.st_mtime < 5:
                    continue  # may still be written
                with open(p, "rb") as fh:
                    head = fh.read(65536)
                m = re.search(rb"^X-Sgload-Id: (\S+)", head, re.M)
                q = re.search(rb"by \S+ \(Postfix\) with \S+ id ([0-9A-Za-z]+)", head)
                qid = q.group(1).decode() if q else "?"
                if m:
                    self.stored.setdefault(m.group(1).decode(), []).append((qid, name))
                else:
                    self.unparsed.append(str(p))
                    continue
                p.unlink()

    # -------------------------------------------------------- drain

    def queue_files(self, pf):
        """Queue files of messages Postfix took.  A file cleanup(8) was
        still writing when the restart fault killed it stays in incoming/
        without its owner-execute bit (Postfix sets 0700 on a complete
        file); nobody got a 2xx for it, it is not mail, and Postfix never
        moves it, so it is counted apart (self.incomplete)."""
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for root, _, files in os.walk(pf.spool / q):
                for f in files:
                    try:
                        mode = os.stat(os.path.join(root, f)).st_mode
                    except OSError:
                        continue
                    if q == "incoming" and not mode & 0o100:
                        self.incomplete.add(os.path.join(root, f))
                        continue
                    n += 1
        return n

    def drain(self):
        for pf in (self.primary, self.secondary):
            pf.postfix("flush")
        deadline = time.time() + 180 * self.scale
        while time.time() < deadline:
            if self.queue_files(self.primary) + self.queue_files(self.secondary) == 0:
                break
            time.sleep(1)
        else:
            self.rig_errors.append("Postfix queues not empty %d s after the load" % (180 * self.scale))

    # -------------------------------------------------------- run

    def run(self):
        a = self.a
        self.work = pathlib.Path(a.workdir) if a.workdir else pathlib.Path(
            tempfile.mkdtemp(prefix="sgsoak-"))
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        log("work directory %s" % self.work)
        try:
            self.setup()
            self.t0 = time.time()
            self.deadline = self.t0 + a.duration
            threads = [threading.Thread(target=self.run_loader, args=l, name=l[0])
                       for l in self.loaders()]
            threads.append(threading.Thread(target=self.run_idle, name="idle"))
            sampler = threading.Thread(target=self.run_sampler, name="sampler")
            faults = threading.Thread(target=self.run_faults, name="faults")
            for t in threads + [sampler, faults]:
                t.start()
            while time.time() < self.deadline:
                time.sleep(1)
                if self.sg.proc.poll() is not None:
                    self.rig_errors.append("saslgate exited during the run: %s" % self.sg.proc.returncode)
                    break
            self.stop_load.set()
            log("load stopping")
            faults.join()
            for t in threads:
                t.join()
            sampler.join()
            self.t_end = time.time()
            # the last sessions close (bounded): then the fds are compared
            quiet_by = time.time() + 10 * self.scale
            self.quiet = None
            while self.sg.proc.poll() is None:
                self.quiet = proc_sample(self.sg.pid)
                if self.quiet[1] <= self.baseline[1] or time.time() > quiet_by:
                    break
                time.sleep(0.2)
            self.extra_fds = {}
            if self.quiet and self.sg.proc.poll() is None:
                now = fd_table(self.sg.pid)
                self.extra_fds = {fd: v for fd, v in now.items() if self.baseline_fds.get(fd) != v}
            with open(self.work / "samples.tsv", "w") as f:
                f.write("time\trss_kib\tfds\tfds_not_established\n")
                for smp in self.samples:
                    f.write("%.0f\t%d\t%d\t%d\n" % smp)
            log("draining the Postfix queues")
            self.drain()
            self.scan_sinks()
            rc = self.sg.stop(timeout=60)
            self.sg_exit = rc
            self.sg_problems = self.sg.problems()
            for stop in reversed(self.started[:-1]):
                stop()
            self.started = []
            self.scan_sinks(final=True)
            return self.verdict()
        finally:
            for stop in reversed(self.started):
                try:
                    stop()
                except Exception as e:
                    log("stopping: %r" % e)
            if not a.keep and not getattr(self, "failed", True):
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                log("work directory kept: %s" % self.work)

    # -------------------------------------------------------- verdict

    def read_events(self):
        ev = []
        for p in sorted(self.events_dir.iterdir()):
            cls = re.sub(r"-\d+\.log$", "", p.name)
            for line in p.read_text().splitlines():
                w = line.split()
                if len(w) != 5:
                    continue
                ev.append({"t": float(w[0]), "kind": w[1], "id": w[2], "code": int(w[3]),
                           "ms": float(w[4]), "cls": cls})
        return ev

    def in_fault(self, t):
        for f in self.faults:
            for s, e in f["down"]:
                if s - 1 <= t <= e + self.grace:
                    return True
        return False

    def verdict(self):
        a, problems = self.a, []
        ev = self.read_events()
        ok_ids = {}
        for e in ev:
            if e["id"] != "-" and 200 <= e["code"] < 300:
                ok_ids[e["id"]] = e["t"]
        told = {e["id"]: e for e in ev if e["id"] != "-"}
        stored = {k: v for k, v in self.stored.items() if not k.startswith("warm-up")}
        lost = sorted(i for i in ok_ids if i not in stored)
        dup = sorted(i for i, v in stored.items() if len({q for q, _ in v}) > 1)
        redelivered = sorted(i for i, v in stored.items() if len(v) > 1 and i not in dup)
        extra = sorted(i for i in stored if i not in ok_ids)
        extra_bad = [i for i in extra if i not in told or not self.in_fault(told[i]["t"])]
        bad_codes = []
        tempfails = []
        for e in ev:
            c = e["code"]
            if 200 <= c < 300 or (e["kind"] == "idle" and c == 250):
                continue
            if e["kind"] == "idle":
                continue  # judged below
            if 400 <= c < 500:
                tempfails.append(e)
                if not self.in_fault(e["t"]):
                    bad_codes.append(e)
            else:
                bad_codes.append(e)  # 5xx, or a connection lost without a reply
        idle_bad = []
        for s, end, p in self.idle_runs:
            overlapped = any(f["kind"] in DOWN_KINDS and f["start"] <= end and (f["end"] or end) >= s
                             for f in self.faults)
            for e in (x for x in ev if x["kind"] == "idle" and x["cls"] == p.name[:-4].rsplit("-", 1)[0]
                      and s <= x["t"] <= end + 1):
                if e["code"] != 250 and not overlapped:
                    idle_bad.append(e)
        idle_ok = sum(1 for e in ev if e["kind"] == "idle" and e["code"] == 250)
        idle_all = sum(1 for e in ev if e["kind"] == "idle")

        if lost:
            problems.append("%d message(s) got a 2xx but no upstream stored them, e.g. %s"
                            % (len(lost), lost[:5]))
        if dup:
            problems.append("%d message(s) stored twice under different queue ids, e.g. %s"
                            % (len(dup), dup[:5]))
        if extra_bad:
            problems.append("%d message(s) stored without a 2xx to the client and outside a fault, "
                            "e.g. %s" % (len(extra_bad), extra_bad[:5]))
        if bad_codes:
            ex = ["%s %s %s code %d" % (time.strftime("%H:%M:%S", time.localtime(e["t"])), e["cls"],
                                        e["kind"], e["code"]) for e in bad_codes[:8]]
            problems.append("%d outcome(s) that are neither 2xx nor a 4xx inside a fault window: %s"
                            % (len(bad_codes), "; ".join(ex)))
        if idle_bad:
            problems.append("%d idle session(s) dead after the hold with no upstream fault during it"
                            % len(idle_bad))
        for f in self.faults:
            if not f["ok"]:
                problems.append("fault %s at %s: %s" % (f["kind"], time.strftime(
                    "%H:%M:%S", time.localtime(f["start"])), f["note"]))
        kinds = {f["kind"] for f in self.faults}
        missing = [k for k in FAULT_KINDS if k not in kinds]
        if missing:
            problems.append("faults that never happened (run too short?): %s" % missing)
        if 235 in self.burst_codes:
            problems.append("a wrong password got 235")
        if self.unparsed:
            problems.append("%d upstream message(s) without an X-Sgload-Id" % len(self.unparsed))
        for cls in ("new-starttls", "new-implicit", "long", "big"):
            if not any(e["cls"] == cls and 200 <= e["code"] < 300 for e in ev):
                problems.append("no %s message was accepted at all" % cls)
        if self.sg_exit != 0:
            problems.append("saslgate exited with %s on SIGTERM" % self.sg_exit)
        problems += self.sg_problems
        # fds: back to the baseline once quiet; slopes after warm-up
        if self.quiet is None:
            problems.append("saslgate was gone at the end of the load")
        elif self.quiet[1] > self.baseline[1] + 2:
            problems.append("open fds %d when quiet after the load, %d before it; new: %s"
                            % (self.quiet[1], self.baseline[1], "; ".join(
                                "%d %s" % kv for kv in sorted(self.extra_fds.items()))))
        warm = [s for s in self.samples if s[0] >= self.t0 + a.warmup]
        span = (warm[-1][0] - warm[0][0]) if len(warm) > 1 else 0
        rss_slope = slope_per_min([(s[0], s[1]) for s in warm])
        fd_slope = slope_per_min([(s[0], s[3]) for s in warm])
        judged = span >= 600 and not self.sg_mod.SANITIZE
        if judged and rss_slope is not None and rss_slope > a.rss_slope_max:
            problems.append("RSS grows %.0f KiB/min after warm-up (limit %.0f)" % (rss_slope, a.rss_slope_max))
        if judged and fd_slope is not None and fd_slope > a.fd_slope_max:
            problems.append("non-connection fds grow %.2f/min after warm-up (limit %.2f)"
                            % (fd_slope, a.fd_slope_max))
        problems += self.rig_errors

        # ---- the table
        W = a.window
        nwin = max(1, int(-(-(self.t_end - self.t0) // W)))
        rows = []
        for w in range(nwin):
            lo, hi = self.t0 + w * W, self.t0 + (w + 1) * W
            if w == nwin - 1:
                hi = max(hi, self.t_end + 3600)  # late outcomes of the last window
            inw = [e for e in ev if lo <= e["t"] < hi]
            oks = [e for e in inw if e["id"] != "-" and 200 <= e["code"] < 300]
            st = sum(1 for e in oks if e["id"] in stored)
            lat = p99([e["ms"] for e in inw if e["kind"] == "new" and e["cls"].startswith("new-")
                       and 200 <= e["code"] < 300])
            t4 = [e for e in inw if 400 <= e["code"] < 500 and e["kind"] != "idle"]
            t4_out = sum(1 for e in t4 if not self.in_fault(e["t"]))
            other = sum(1 for e in inw if e in bad_codes and not 400 <= e["code"] < 500)
            sm = [s for s in self.samples if lo <= s[0] < hi]
            fl = [f["kind"] for f in self.faults if lo <= f["start"] < hi]
            rows.append({
                "window": "%g-%g" % (round(w * W / 60, 1), round(min((w + 1) * W, self.t_end - self.t0) / 60, 1))
                if W >= 60 else "%ds-%ds" % (w * W, (w + 1) * W),
                "ok": len(oks), "stored": st, "lost": len(oks) - st,
                "tempfail": "%d/%d" % (len(t4) - t4_out, t4_out), "other": other,
                "p99": "%.0f" % lat if lat is not None else "-",
                "rss": "%.1f" % (max(s[1] for s in sm) / 1024) if sm else "-",
                "fds": "%d-%d" % (min(s[2] for s in sm), max(s[2] for s in sm)) if sm else "-",
                "faults": " ".join("%s%s" % (k[:3], fl.count(k)) for k in FAULT_KINDS if k in fl) or "-",
            })
        W_label = "%g min" % (W / 60) if W >= 60 else "%g s" % W
        out = ["| window (min) | 2xx to clients | stored upstream | lost | 4xx in/out of faults "
               "| other errors | p99 new session ms | saslgate RSS MiB max | fds min-max | faults |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append("| %(window)s | %(ok)d | %(stored)d | %(lost)d | %(tempfail)s | %(other)d "
                       "| %(p99)s | %(rss)s | %(fds)s | %(faults)s |" % r)
        tot_ok = len(ok_ids)
        out.append("| **all** | %d | %d | %d | %d/%d | %d | %s | | | %d faults |" % (
            tot_ok, sum(1 for i in ok_ids if i in stored), len(lost),
            len(tempfails) - sum(1 for e in tempfails if not self.in_fault(e["t"])),
            sum(1 for e in tempfails if not self.in_fault(e["t"])),
            sum(1 for e in bad_codes if not 400 <= e["code"] < 500),
            ("%.0f" % p99([e["ms"] for e in ev if e["kind"] == "new" and e["cls"].startswith("new-")
                           and 200 <= e["code"] < 300]) if tot_ok else "-"), len(self.faults)))
        fk = {k: sum(1 for f in self.faults if f["kind"] == k) for k in FAULT_KINDS}
        summary = {
            "duration_s": round(self.t_end - self.t0, 1), "window_s": W, "ok": tot_ok,
            "stored": len(stored), "lost": len(lost), "duplicated": len(dup),
            "postfix_redelivered": len(redelivered), "stored_without_2xx": len(extra),
            "stored_without_2xx_outside_faults": len(extra_bad),
            "tempfail_in_faults": len(tempfails) - sum(1 for e in tempfails if not self.in_fault(e["t"])),
            "bad_outcomes": len(bad_codes), "faults": fk,
            "burst_replies": {str(c): self.burst_codes.count(c) for c in set(self.burst_codes)},
            "idle_alive": idle_ok, "idle_checked": idle_all,
            "rss_kib_baseline": self.baseline[0], "fds_baseline": self.baseline[1],
            "fds_quiet_after": self.quiet[1] if self.quiet else None,
            "rss_slope_kib_per_min": rss_slope, "other_fd_slope_per_min": fd_slope,
            "slopes_judged": judged, "sanitize": self.sg_mod.SANITIZE,
            "messages_per_class": {c: sum(1 for e in ev if e["cls"] == c and e["id"] != "-"
                                          and 200 <= e["code"] < 300)
                                   for c in ("new-starttls", "new-implicit", "long", "big")},
            "problems": problems, "verdict": "PASS" if not problems else "FAIL",
        }
        lines = ["## saslgate soak: %.0f s, window %s, a fault every %g s%s" % (
            self.t_end - self.t0, W_label, a.fault_every, " (ASan build)" if self.sg_mod.SANITIZE else ""),
            ""] + out + [
            "",
            "- faults: " + ", ".join("%s %d" % kv for kv in fk.items()),
            "- messages accepted per class: " + ", ".join(
                "%s %d" % kv for kv in summary["messages_per_class"].items()),
            "- duplicates (two queue ids): %d; Postfix redeliveries (one queue id): %d; stored "
            "without a 2xx: %d (outside faults: %d)" % (len(dup), len(redelivered), len(extra),
                                                       len(extra_bad)),
            "- wrong-password burst replies: %s" % summary["burst_replies"],
            "- incomplete queue files left by a cleanup(8) the restart killed (no 2xx "
            "given, not mail): %d" % len(self.incomplete),
            "- idle sessions alive after the hold: %d of %d" % (idle_ok, idle_all),
            "- saslgate RSS: baseline %.1f MiB, slope after warm-up %s KiB/min (limit %g%s)" % (
                self.baseline[0] / 1024, "%.1f" % rss_slope if rss_slope is not None else "-",
                a.rss_slope_max, "" if judged else ", not judged: run too short or ASan"),
            "- saslgate fds: baseline %d, quiet after the load %s; non-connection fd slope %s/min "
            "(limit %g)" % (self.baseline[1], self.quiet[1] if self.quiet else "-",
                            "%.3f" % fd_slope if fd_slope is not None else "-", a.fd_slope_max),
            "- saslgate fds new since the baseline, when quiet: %s" % ("; ".join(
                "%d %s" % kv for kv in sorted(self.extra_fds.items())) or "none"),
            "- saslgate exit status on SIGTERM: %s" % self.sg_exit,
            "",
            "**verdict: %s**" % summary["verdict"],
        ] + ["- %s" % p for p in problems]
        text = "\n".join(lines) + "\n"
        sys.stdout.write(text)
        (self.work / "report.md").write_text(text)
        (self.work / "summary.json").write_text(json.dumps(summary, indent=1))
        if a.json:
            pathlib.Path(a.json).write_text(json.dumps(summary, indent=1))
        self.failed = bool(problems)
        return 0 if not problems else 1


def main(argv):
    a = parse_args(argv)
    if a.saslgate:
        os.environ["SASLGATE_BIN"] = str(pathlib.Path(a.saslgate).resolve())
    os.environ.setdefault("SG_SOURCE_DIR", str(SOURCE_DIR))
    sys.path.insert(0, str(SOURCE_DIR / "tests" / "integration"))
    import sgtest
    if not os.path.exists(sgtest.SASLGATE_BIN):
        sys.stderr.write("soak: no saslgate binary at %s (--saslgate)\n" % sgtest.SASLGATE_BIN)
        return 2
    s = Soak(a, sgtest)
    try:
        return s.run()
    except Rig as e:
        log("rig failed: %s" % e)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
