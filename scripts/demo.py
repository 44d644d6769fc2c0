#!/usr/bin/python3
# SPDX-License-Identifier: BSD-2-Clause
"""scripts/demo.py: saslgate in front of a real local upstream, ready for swaks.

Starts, all on 127.0.0.1 and all under ./demo/:
  - a private Postfix on a free port that trusts saslgate for XCLIENT and
    relays only for SASL-authenticated senders; it hands every message it
    accepts to Postfix's smtp-sink, which stores it as a file in demo/mail/;
  - saslgate on 127.0.0.1:1587 (STARTTLS) and 127.0.0.1:1465 (implicit TLS)
    with a fresh self-signed certificate and the sasldb user demo / demo.
Ctrl-C stops everything.  Uses the test harness's classes (the same code the
process tests use to run Postfix and saslgate)."""
import os
import pathlib
import shutil
import signal
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("SG_SOURCE_DIR", str(ROOT))
os.environ.setdefault("SASLGATE_BIN", str(ROOT / "build" / "saslgate"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import sgtest  # noqa: E402

DEMO = ROOT / "demo"
PORT, PORTS = 1587, 1465


def main():
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    os.chmod(DEMO, 0o755)
    started = []
    try:
        pf = sgtest.Postfix(DEMO, hostname="upstream.demo.test")
        started.append(pf)
        (DEMO / "mail").symlink_to(pf.sink.dir)
        cert, key = sgtest.make_cert(DEMO, cn="localhost", days=30)
        # Cyrus looks sasldb users up as user@realm; the realm defaults to
        # [server] hostname (like Postfix's myhostname), so create the user
        # in that realm: saslpasswd2 -u saslgate.demo.test -c demo
        db = sgtest.make_sasldb(DEMO / "sasldb2", {"demo": "demo"},
                                realm="saslgate.demo.test")
        cfg = sgtest.default_config(
            DEMO, pf.port, cert=cert, key=key, sasldb=db,
            server={"hostname": "saslgate.demo.test", "log_level": "info"},
            sasl={"failure_delay": "1s"},
            listener_submission={"address": "127.0.0.1:%d" % PORT},
            listener_submissions={"address": "127.0.0.1:%d" % PORTS},
            listener_plain=None)
        sg = sgtest.Saslgate(DEMO, cfg)
        started.append(sg)
        print("""
saslgate is ready: 127.0.0.1:%d (STARTTLS) and 127.0.0.1:%d (implicit TLS),
user demo / demo, in front of a private Postfix on 127.0.0.1:%d (XCLIENT).

Send a message through it (in another terminal):

  swaks --server 127.0.0.1:%d --tls --auth PLAIN --auth-user demo --auth-password demo \\
        --from demo@example.org --to someone@example.net

Then look at what the upstream got:   ls demo/mail/ ; cat demo/mail/*
  (saslgate's Received header, and Postfix's naming the user it was told)
Logs: demo/saslgate.log (saslgate), %s (Postfix)
Ctrl-C stops everything.
""" % (PORT, PORTS, pf.port, PORT, pf.maillog.relative_to(ROOT)), flush=True)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while sg.proc.poll() is None:
            time.sleep(0.5)
        print("saslgate exited (%s); see demo/saslgate.log" % sg.proc.returncode)
    except KeyboardInterrupt:
        pass
    finally:
        for obj in reversed(started):
            try:
                obj.stop()
            except Exception as e:  # keep stopping the rest
                print("stopping %s: %s" % (type(obj).__name__, e))


if __name__ == "__main__":
    main()
