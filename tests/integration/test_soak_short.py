# SPDX-License-Identifier: BSD-2-Clause
"""The soak test, short: tests/soak/soak.py --short (tests/soak/README.md).

About a minute of mixed load (new TLS sessions with AUTH, long sessions,
10 MiB messages, idle sessions) against saslgate with two real Postfix
upstreams and a real saslauthd, with a fault every 10 s: SIGHUP with a
rotated certificate, the primary Postfix restarted, saslauthd restarted,
the primary stopped (failover to the secondary), a wrong-password burst.
The script's verdict is the assertion: every message a client got a 2xx
for is stored upstream exactly once, no 4xx outside a fault, no other
error, new sessions see the rotated certificate, the burst gets 535 then
454, and saslgate's open fds are back to their baseline afterwards.
Under the ASan build the load is a third (the script's pauses scale).
"""

import json
import subprocess
import sys

import sgtest


def test_soak_short(workdir):
    summary = workdir / "summary.json"
    cmd = [sys.executable, str(sgtest.SOURCE_DIR / "tests" / "soak" / "soak.py"), "--short",
           "--duration", "60",
           "--workdir", str(workdir / "soak"), "--keep", "--json", str(summary)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    out = p.stdout + "\n" + p.stderr[-4000:]
    assert p.returncode == 0, "soak verdict (exit %d):\n%s" % (p.returncode, out)
    s = json.loads(summary.read_text())
    assert s["verdict"] == "PASS", out
    # the run did what it says: load flowed, every fault kind happened
    assert s["lost"] == 0 and s["duplicated"] == 0, out
    assert all(n >= 1 for n in s["faults"].values()), s["faults"]
    assert all(n >= 1 for n in s["messages_per_class"].values()), s["messages_per_class"]
    assert s["ok"] >= (50 if sgtest.SANITIZE else 200), out
    assert s["burst_replies"].get("535", 0) >= 1 and s["burst_replies"].get("454", 0) >= 1, out
    assert s["fds_quiet_after"] <= s["fds_baseline"] + 2, out
