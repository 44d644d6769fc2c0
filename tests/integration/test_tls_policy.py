# SPDX-License-Identifier: BSD-2-Clause
"""The TLS policy a client meets (common/tls.c), seen from outside with
`openssl s_client` and testssl.sh, on a STARTTLS and an implicit listener:

- without [tls] ciphers, TLS 1.2 offers forward-secret AEAD suites only
  (Mozilla "intermediate" without DHE): every CBC and every non-ECDHE suite
  is refused, TLS 1.0 and 1.1 are refused, TLS 1.3 works;
- an explicit ciphers list replaces that default (and is how a site widens
  it for legacy clients), and a min_version below TLS 1.2 without one is a
  configuration error;
- with an ECDSA pair next to the RSA one, a client that offers only ECDSA
  gets the ECDSA certificate and an RSA-only client the RSA one;
- testssl.sh, run as an auditor would, finds no CBC suite, no suite without
  forward secrecy and no protocol below TLS 1.2."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

import sgtest
from sgtest import HOST, T, default_config, free_port, make_cert, run_saslgate

LISTENERS = ("submission", "submissions")  # STARTTLS, implicit TLS

# The default TLS 1.2 suites a server with only an RSA certificate accepts.
GOOD_RSA = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-CHACHA20-POLY1305")
# Offered alone, each is refused: no forward secrecy (RSA key exchange),
# CBC (LUCKY13, CVE-2013-0169), or DHE (no DH parameters of ours).
WEAK = ("AES128-SHA", "AES256-SHA", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "ECDHE-RSA-AES128-SHA256",
        "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-SHA")
# Every TLS 1.2 suite of this OpenSSL but the default ones, offered at once.
ALL_BUT_DEFAULT = "ALL:COMPLEMENTOFALL:!ECDHE+AESGCM:!ECDHE+CHACHA20:@SECLEVEL=0"
NO_SHARED_CIPHER = r"event=tls result=fail client=127\.0\.0\.1 reason=handshake failed: no shared cipher"
OLD_PROTOCOL = r"event=tls result=fail client=127\.0\.0\.1 reason=handshake failed: unsupported protocol"

PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@pytest.fixture
def certs(workdir):
    """{"rsa": (cert, key), "ecdsa": (cert, key)}"""
    return {kind: make_cert(workdir, kind) for kind in ("rsa", "ecdsa")}


def gate(start_saslgate, start_fake_upstream, workdir, certs, ecdsa=False, **tls):
    up = start_fake_upstream()
    cert, key = certs["rsa"]
    cfg = default_config(workdir, upstream_port=up.port, cert=cert, key=key)
    if ecdsa:
        cfg["tls"].update(ecdsa_certificate=str(certs["ecdsa"][0]),
                          ecdsa_key=str(certs["ecdsa"][1]))
    cfg["tls"].update(tls)
    return start_saslgate(cfg)


class Handshake:
    """One `openssl s_client` run: .cipher (None when the handshake
    failed), .protocol (from saslgate's event=tls line), .cert (the
    server's certificate, PEM), .out (what s_client printed)."""

    def __init__(self, port, starttls, *args):
        cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)]
        if starttls:
            cmd += ["-starttls", "smtp"]
        p = subprocess.run(cmd + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=T(30))
        self.out = p.stdout + p.stderr
        m = re.search(r"^New, \S+, Cipher is (\S+)", p.stdout, re.M)
        self.cipher = m.group(1) if m and m.group(1) != "(NONE)" else None
        self.protocol = None
        m = PEM.search(p.stdout)
        self.cert = m.group(0) if m else None


def handshake(sg, listener, *args):
    # Each connection ends with one event=disconnect line: waiting for the
    # last one's keeps its lines out of this one's part of the log.
    done = getattr(sg, "tls_policy_conns", 0)
    sgtest.wait_for(lambda: sg.log_text().count("event=disconnect ") >= done, T(10),
                    "the previous connection's event=disconnect")
    sg.tls_policy_conns = done + 1
    start = len(sg.log_text())
    h = Handshake(sg.port(listener), listener == "submission", *args)
    if h.cipher:
        m = sg.wait_log(r"event=tls result=ok client=\S+ version=(\S+) cipher=(\S+)", after=start)
        assert m.group(2) == h.cipher, (m.group(0), h.out)
        h.protocol = m.group(1)
    return h


def refused(sg, listener, reason, *args):
    """The handshake fails, and saslgate's log says why (not the client)."""
    start = len(sg.log_text())
    h = handshake(sg, listener, *args)
    assert h.cipher is None, "%s %s: accepted %s" % (listener, args, h.cipher)
    sg.wait_log(reason, after=start)
    return h


def pem_of(path):
    return PEM.search(path.read_text()).group(0)


# ---------------------------------------------------------------- defaults

def test_default_tls12_is_forward_secret_aead_only(workdir, certs, start_saslgate,
                                                   start_fake_upstream):
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs)
    for listener in LISTENERS:
        for suite in GOOD_RSA:
            h = handshake(sg, listener, "-tls1_2", "-cipher", suite)
            assert (h.protocol, h.cipher) == ("TLSv1.2", suite), (listener, h.out)
        for suite in WEAK:
            refused(sg, listener, NO_SHARED_CIPHER, "-tls1_2", "-cipher", suite)
        # every other suite at once: the server finds nothing it takes
        refused(sg, listener, NO_SHARED_CIPHER, "-tls1_2", "-cipher", ALL_BUT_DEFAULT)
        # TLS 1.3 keeps OpenSSL's suites (all forward secret and AEAD)
        h = handshake(sg, listener)
        assert h.protocol == "TLSv1.3" and h.cipher.startswith("TLS_"), h.out


def test_default_refuses_tls10_and_tls11(workdir, certs, start_saslgate, start_fake_upstream):
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs)
    for listener in LISTENERS:
        for version in ("-tls1", "-tls1_1"):
            # @SECLEVEL=0: OpenSSL 3 would not even try TLS 1.0/1.1 otherwise
            refused(sg, listener, OLD_PROTOCOL, version, "-cipher", "DEFAULT:@SECLEVEL=0")


# ---------------------------------------------------------------- explicit ciphers

def test_explicit_ciphers_replace_the_default(workdir, certs, start_saslgate,
                                              start_fake_upstream):
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs,
              ciphers="ECDHE-RSA-AES128-SHA")
    for listener in LISTENERS:
        h = handshake(sg, listener, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA")
        assert h.cipher == "ECDHE-RSA-AES128-SHA", (listener, h.out)
        refused(sg, listener, NO_SHARED_CIPHER, "-tls1_2", "-cipher",
                "ECDHE-RSA-AES128-GCM-SHA256")


def test_legacy_clients_need_min_version_and_ciphers(workdir, certs, start_saslgate,
                                                     start_fake_upstream):
    """The widening README and saslgate.conf(5) describe works; half of it
    (min_version alone) is refused by -t, as it would change nothing."""
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs, min_version="TLSv1",
              ciphers="DEFAULT:@SECLEVEL=0")
    for listener in LISTENERS:
        h = handshake(sg, listener, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
        assert h.protocol == "TLSv1", (listener, h.out)

    cfg = default_config(workdir, upstream_port=sgtest.refused_port(), cert=certs["rsa"][0],
                         key=certs["rsa"][1], tls={"min_version": "TLSv1"})
    for section in cfg:
        if section.startswith("listener "):
            cfg[section]["address"] = "%s:%d" % (HOST, free_port())
    os.chmod(certs["rsa"][1], 0o600)  # -t checks the key's mode
    conf = workdir / "legacy.conf"
    conf.write_text(sgtest._ini(cfg))
    p = run_saslgate("-t", "-c", conf)
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(r"^%s:\d+: min_version below TLSv1\.2 needs \[tls\] ciphers"
                     % re.escape(str(conf)), p.stderr, re.M), p.stderr


# ---------------------------------------------------------------- ECDSA + RSA

def test_ecdsa_and_rsa_pair(workdir, certs, start_saslgate, start_fake_upstream):
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs, ecdsa=True)
    want = {kind: pem_of(certs[kind][0]) for kind in certs}
    cases = [
        ("ecdsa", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("rsa", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("ecdsa", "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"),
        ("rsa", "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"),
    ]
    for listener in LISTENERS:
        for kind, *args in cases:
            h = handshake(sg, listener, *args)
            assert h.cipher, (listener, args, h.out)
            assert h.cert == want[kind], "%s %s: not the %s certificate" % (
                listener, args, kind)
        # a client that can check either gets the ECDSA one (smaller, faster)
        for args in (["-tls1_2"], []):
            h = handshake(sg, listener, *args)
            assert h.cert == want["ecdsa"], (listener, args, h.out)


# ---------------------------------------------------------------- testssl.sh

def find_testssl():
    # Debian's package testssl.sh installs it as testssl
    return shutil.which("testssl") or shutil.which("testssl.sh")


@pytest.mark.skipif(not find_testssl(), reason="testssl.sh not installed (scripts/deps.sh)")
def test_testssl_finds_no_weak_suite(workdir, certs, start_saslgate, start_fake_upstream):
    """testssl.sh against the STARTTLS listener with both pairs: protocols
    (-p), every suite per protocol (-E) and LUCKY13 (-L) only, which is
    what the claim needs and keeps the run near 15 s."""
    sg = gate(start_saslgate, start_fake_upstream, workdir, certs, ecdsa=True)
    out = workdir / "testssl.json"
    cmd = [find_testssl(), "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
           "--starttls", "smtp", "-p", "-E", "-L", "--jsonfile", str(out),
           "%s:%d" % (HOST, sg.port("submission"))]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=T(180), cwd=workdir)
    took = time.monotonic() - t0
    (workdir / "testssl.out").write_text(p.stdout + p.stderr)
    print("testssl: %.1f s" % took)
    assert out.exists(), p.stdout + p.stderr
    findings = {f["id"]: f for f in json.loads(out.read_text())}

    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[proto]["finding"] == "not offered", findings[proto]
    assert findings["TLS1_2"]["finding"] == "offered", findings["TLS1_2"]
    assert findings["TLS1_3"]["finding"].startswith("offered"), findings["TLS1_3"]
    assert findings["LUCKY13"]["finding"] == "not vulnerable", findings["LUCKY13"]

    # "TLS 1.2   xc02f   ECDHE-RSA-AES128-GCM-SHA256   ECDH 253   AESGCM   128   TLS_..."
    suites = {}
    for fid, f in findings.items():
        m = re.match(r"cipher-(tls1(?:_\d)?|ssl\d)_x", fid)
        if m:
            cols = f["finding"].split()
            suites.setdefault(m.group(1), []).append((cols[3], cols[4], cols[6]))
    assert set(suites) == {"tls1_2", "tls1_3"}, suites
    tls12 = {name for name, _, _ in suites["tls1_2"]}
    assert tls12 == set(GOOD_RSA) | {s.replace("-RSA-", "-ECDSA-") for s in GOOD_RSA}, tls12
    for proto, rows in suites.items():
        for name, kx, enc in rows:
            assert kx in ("ECDH", "DH"), "%s %s: no forward secrecy (%s)" % (proto, name, kx)
            assert enc in ("AESGCM", "ChaCha20"), "%s %s: not AEAD (%s)" % (proto, name, enc)
