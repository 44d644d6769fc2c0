# SPDX-License-Identifier: BSD-2-Clause
"""Seeded randomized property test of identity integrity, through every
identity mode (xclient, xforward, header, auth, none) against recording
upstreams.

Property, for each case (a random login, HELO name, AUTH exchange, MAIL
AUTH= parameter and message): either the client got 454 4.7.0 (at AUTH or
MAIL) and the upstream saw no MAIL, or the identity the upstream ends up
with is the authenticated login, exactly:
  - xclient: the XCLIENT LOGIN= attribute, xtext-decoded (exactly one),
    the lines split into attributes as Postfix's smtpd splits them
    ('"..."' and '<...>' groups, backslash escapes: sgtest.postfix_tokens);
  - header, auth: exactly one X-Authenticated-User field, the login, and
    none of the client's (in any case, with white space before the colon,
    folded, or behind a stuffing dot on the wire);
  - every mode but none: saslgate's Received field says "(authenticated
    sender: L)", L the login after the quoted-pairs are undone; none: no
    such comment;
  - the client's MAIL AUTH= value never reaches the upstream; where the
    upstream offers AUTH (all but xforward) an authenticated session's MAIL
    carries AUTH=<xtext of the login> in the place of the client's, one
    parameter as Postfix's smtpd splits the line (none: only the first
    part);
  - every XCLIENT / XFORWARD line is at most 512 octets and HELO arrives
    whole; no command line carries a control octet; the client's other
    header fields and the body arrive unchanged (after dot un-stuffing);
  - the log's event=auth and event=message lines name the whole login,
    escaped ("+HH" for octets outside 0x21..0x7e and + = " backslash).
Where the rules say which outcome it must be (a short, printable UTF-8
login must be relayed; a login whose XCLIENT line would pass 512 octets,
with a control octet or invalid UTF-8, or too long for a 998-octet header
line with no white space to fold at, must get 454 in every mode but none)
the other outcome fails too; saslgate's header lines are at most 998
octets.

What Cyrus SASL reports (SASL_USERNAME), found with Debian's libsasl2
2.1.28 and a sasldb made by saslpasswd2 -u <[server] hostname>, [sasl]
realm unset: the login as the client typed it, octet for octet (UTF-8,
invalid UTF-8, control octets, '@' anywhere, several '@'), except that
leading and trailing C-locale white space is trimmed (" alice " logs in
as "alice").  A login with '@' is stored and looked up as user@realm split
at the '@', which only decides which sasldb entry it is; "b" and
"b@sg.test" are the same entry but Cyrus reports each as typed.  With
[sasl] realm set, Cyrus appends "@realm" to a login without '@' (not used
here).  Over 1023 octets Cyrus refuses the name (SASL_BUFOVER); logins here
are 1-1000 octets.  So the expected identity is the created login, and a
case typing it with extra surrounding spaces still expects it.  (Cyrus'
trimming says "All-whitespace username." when the number of leading
spaces equals the length of what remains, " S  " for instance: such typed
forms are not generated.)

SG_PROPERTY_SEED (default: random, printed), SG_PROPERTY_N (cases,
default 4000: 800 logins through 5 modes), SG_PROPERTY_BUDGET (seconds for the cases, default 75: the
run stops early and says so), SG_PROPERTY_CASE (run only that case of the
seed).  The figures (seed, cases run per mode, relayed/refused, seconds)
are written to the terminal and recorded as junit properties."""

import base64
import collections
import os
import random
import re
import sys
import time

from sgtest import (DEFAULT_EXTENSIONS, Raw, comment_after, default_config, header_fields,
                    log_escape, make_sasldb, postfix_tokens, unstuff, xtext, xtext_decode, T)

PW = "Pr0p-ident.pw4"
RELAY_PW = "Rel4y-prop.pw6"
MODES = ["xclient", "xforward", "header", "auth", "none"]

SEED = int(os.environ.get("SG_PROPERTY_SEED") or random.SystemRandom().randrange(1, 2 ** 32))
N = int(os.environ.get("SG_PROPERTY_N") or 4000)
BUDGET = float(os.environ.get("SG_PROPERTY_BUDGET") or 75)
ONLY = os.environ.get("SG_PROPERTY_CASE")

# ------------------------------------------------------------ generators

ASCII_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
SPECIAL = " +=@()\\\"<>,;:[]!#$%&'*/?^`{|}~"
MULTI = ["\u00e9", "\u00df", "\u00fc", "\u03a9", "\u0436", "\u00a0", "\u20ac", "\u4e2d",
         "\u6587", "\u2028", "\ufeff", "\U0001f600", "\U0001d11e", "\U00010348"]
CONTROLS = [b"\x01", b"\x1f", b"\x7f", b"\t", b"\x1b"]
INVALID = [b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf5\x80\x80\x80"]
C_SPACE = b" \t\n\v\f\r"


def gen_login(rng):
    """1-1000 octets, mostly valid UTF-8; rarely a control octet or
    invalid UTF-8 (to reach the 454 paths)."""
    kind = rng.random()
    if kind < 0.45:
        n = rng.randint(1, 40)
    elif kind < 0.8:
        n = rng.randint(41, 320)
    else:
        n = rng.randint(321, 1000)
    out = bytearray()
    odd = rng.random()
    while len(out) < n:
        x = rng.random()
        if x < 0.55:
            out += rng.choice(ASCII_WORD).encode()
        elif x < 0.8:
            out += rng.choice(SPECIAL).encode()
        elif x < 0.99 or odd > 0.15:
            out += rng.choice(MULTI).encode()
        elif odd < 0.08:
            out += rng.choice(CONTROLS)
        else:
            out += rng.choice(INVALID)
    login = bytes(out[:n]) if rng.random() < 0.1 else bytes(out)  # may cut a character
    login = login[:1000].strip(C_SPACE).replace(b"\0", b"")
    return login or b"x"


def gen_helo(rng):
    """A HELO name of printable ASCII whose xtext fits an XFORWARD line."""
    if rng.random() < 0.5:
        return "client-%d.test" % rng.randint(1, 99999)
    chars = ASCII_WORD + "+=\"<>()\\[]:!#$%&'*/?^`{|}~"
    while True:
        h = "".join(rng.choice(chars) for _ in range(rng.randint(1, 200)))
        if len(xtext(h)) <= 480:
            return h


XAU = "X-Authenticated-User"


def random_case(s, rng):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


def gen_message(rng, i):
    """-> (wire bytes up to and without the final ".\\r\\n", client header
    fields as [(logical raw field, is identity header)], body bytes).  Each
    logical line is dot-stuffed on the wire when it starts with '.'; an
    identity header may carry an extra leading dot on the wire."""
    fields = []
    pool = [
        lambda: b"Subject: case %d " % i + rng.choice(MULTI).encode() + b" (" + rng.choice(
            [b"x", b"y\\z", b"+="]) + b")",
        lambda: b"From: <a%d@example.org>" % rng.randint(0, 99),
        lambda: b"To: b@example.net",
        lambda: b"Message-ID: <%d.%d@prop.test>" % (SEED, i),
        lambda: b"X-Fold-%d: first\r\n\tsecond part\r\n  third" % rng.randint(0, 9),
        lambda: b"X-Authenticated-User-Extra: keep-%d" % i,
        lambda: b"X-Authenticated-Users: keep",
        lambda: b"Comments: X-Authenticated-User: not a field",
    ]
    for _ in range(rng.randint(0, 6)):
        fields.append((rng.choice(pool)(), False))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        name = random_case(XAU, rng) if rng.random() < 0.6 else XAU
        ws = rng.choice(["", "", " ", "\t", "  \t"])
        value = rng.choice([" mallory-%d@evil" % i, "mallory-%d" % i, " mallory\t%d" % i])
        f = (name + ws + ":").encode()
        if rng.random() < 0.3:
            f += b"\r\n " + value.strip().encode()        # folded
        else:
            f += value.encode()
        if rng.random() < 0.2:
            f += b"\r\n\tmallory-cont"
        fields.append((f, True))
    rng.shuffle(fields)
    body_lines = [rng.choice([b"hello", b".", b"..", b".leading dot", b"X-Authenticated-User: body",
                              b"", b"\xc3\xa9t\xc3\xa9", b"...", b"end"])
                  for _ in range(rng.randint(0, 8))]
    body = b"".join(l + b"\r\n" for l in body_lines)
    wire = bytearray()
    for f, ident in fields:
        lines = f.split(b"\r\n")
        first = lines[0]
        if ident and rng.random() < 0.35:
            first = b"." + first                           # a stuffing dot
        wire += first + b"\r\n"
        for l in lines[1:]:
            wire += (b"." + l if l.startswith(b".") else l) + b"\r\n"
    wire += b"\r\n"
    for l in body_lines:
        wire += (b"." + l if l.startswith(b".") else l) + b"\r\n"
    return bytes(wire), fields, body


class Case:
    """Case i: login number i // 5 (each login goes through all five
    modes), mode i % 5, the rest drawn for the case itself."""

    def __init__(self, i):
        self.i = i
        self.mode = MODES[i % len(MODES)]
        self.login = gen_login(random.Random("%d:login:%d" % (SEED, i // len(MODES))))
        rng = random.Random("%d:%d" % (SEED, i))
        self.typed = self.login
        if rng.random() < 0.1 and len(self.login) > 2:
            self.typed = b" " * rng.randint(1, 2) + self.login + b" " * rng.randint(0, 2)
        self.helo = gen_helo(rng)
        self.mech = rng.choice(["PLAIN", "PLAIN", "PLAIN-334", "PLAIN-=", "LOGIN"])
        self.auth_param = rng.choice([None, "AUTH=<>", "AUTH=mallory-%d@evil" % i,
                                      "auth=" + xtext("mallory-%d" % i),
                                      "AUTH=" + xtext(b"root@" + self.login[:20])])
        self.wire, self.fields, self.body = gen_message(rng, i)

    def describe(self):
        return ("case %d (SG_PROPERTY_SEED=%d SG_PROPERTY_CASE=%d): mode=%s login=%r typed=%r "
                "helo=%r mech=%s param=%r" % (self.i, SEED, self.i, self.mode, self.login,
                                               self.typed, self.helo, self.mech, self.auth_param))


# ------------------------------------------------------------ what the rules force

def valid_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def received_len(login):
    """Octets of the Received line naming the user, CRLF included, when
    it is not folded."""
    esc = sum(2 if c in b"()\\" else 1 for c in login)
    return len("\t(authenticated sender: ") + esc + len(")\r\n")


def forced(case):
    """'relay' / 'refuse' where the rules force the outcome, else None."""
    login, mode = case.login, case.mode
    if mode == "none":
        return "relay"
    hard_ctl = re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", login)
    tab = b"\t" in login
    bad = hard_ctl or not valid_utf8(login)
    xau_len = len("X-Authenticated-User: ") + len(login) + 2
    if mode == "xclient":
        bad = bad or len("XCLIENT LOGIN=" + xtext(login) + "\r\n") > 512
    # RFC 5322 2.1.1: 998 octets before the CRLF
    long = received_len(login) > 1000 or (mode in ("header", "auth") and xau_len > 1000)
    if long and not re.search(rb"[ \t]", login):
        bad = True  # no white space to fold at
    if bad:
        return "refuse"
    if tab or long:
        return None
    return "relay"


# ------------------------------------------------------------ checks

def control_free(line):
    return line.endswith(b"\r\n") and not re.search(rb"[\x00-\x1f\x7f]", line[:-2])


def is_xau(name):
    return name is not None and name.rstrip(b" \t").lower() == XAU.lower().encode()


def check_upstream(case, up, conns, auth_advertised):
    """Problems (strings) with what the upstream saw of a relayed case."""
    p = []
    login = case.login
    lines = [l for c in conns for l in up.raw_lines(c)]
    for l in lines:
        if not control_free(l):
            p.append("control octet in an upstream command line: %r" % l[:200])
    for verb in ("XCLIENT", "XFORWARD"):
        for c in conns:
            for l in up.raw_lines(c, verb):
                if len(l) > 512:
                    p.append("%s line of %d octets" % (verb, len(l)))
    # the attributes as Postfix's smtpd would split the lines
    attrs = [(k, v) for c in conns for k, v in up.attributes("XCLIENT", c, postfix=True)]
    xf = [(k, v) for c in conns for k, v in up.attributes("XFORWARD", c, postfix=True)]
    if case.mode == "xclient":
        logins = [v for k, v in attrs if k == "LOGIN"]
        if logins != [login]:
            p.append("XCLIENT LOGIN %r" % logins)
        helos = [v for k, v in attrs if k == "HELO"]
        if helos != [case.helo.encode()]:
            p.append("XCLIENT HELO %r, client said %r" % (helos, case.helo))
    elif attrs:
        p.append("XCLIENT in mode %s" % case.mode)
    if case.mode == "xforward":
        names = [k for k, _ in xf]
        for want in ("NAME", "ADDR", "PROTO", "HELO"):
            if names.count(want) != 1:
                p.append("XFORWARD %s sent %d times" % (want, names.count(want)))
        helos = [v for k, v in xf if k == "HELO"]
        if helos and helos != [case.helo.encode()]:
            p.append("XFORWARD HELO %r, client said %r" % (helos, case.helo))
    mails = [l for c in conns for l in up.raw_lines(c, "MAIL")]
    if len(mails) != 1:
        p.append("%d MAIL lines upstream" % len(mails))
    for m in mails:
        # the parameters as Postfix's smtpd splits them: MAIL, FROM:, <path>
        params = postfix_tokens(m.rstrip(b"\r\n"))[3:]
        auth = [t[5:] for t in params if t[:5].upper() == b"AUTH="]
        if b"SIZE=100" not in params:
            p.append("SIZE=100 is not a MAIL parameter of its own: %r" % m[:300])
        if b"mallory" in m or b"root@" in m:
            p.append("the client's AUTH= reached the upstream: %r" % m[:300])
        if case.mode == "none":
            pass
        elif auth_advertised:
            try:
                dec = [xtext_decode(a) for a in auth]
            except ValueError:
                dec = auth
            # in the place of the client's; without one, none is needed
            if dec != [login] and (case.auth_param or dec != []):
                p.append("MAIL AUTH= %r" % auth)
        elif auth:
            p.append("MAIL AUTH= %r to an upstream without AUTH" % auth)
    msgs = [m for m in list(up.messages) if m.conn in conns and m.complete]
    if len(msgs) != 1:
        return p + ["%d messages upstream" % len(msgs)]
    data = unstuff(msgs[0].data)
    fields = header_fields(data)
    ours = [k for k, (n, v, _) in enumerate(fields)
            if n and n.lower() == b"received" and b"(saslgate)" in v]
    if len(ours) != 1:
        return p + ["%d saslgate Received fields" % len(ours)]
    rec = fields[ours[0]][1]
    added = [fields[ours[0]][2]] + ([raw for n, _, raw in fields if is_xau(n)]
                                    if case.mode in ("header", "auth") else [])
    for raw in added:
        for l in raw.split(b"\r\n"):
            if len(l) > 998:
                p.append("a header line of %d octets (RFC 5322 2.1.1: 998)" % len(l))
    named = comment_after(rec, b"(authenticated sender: ")
    if case.mode == "none":
        if named is not None:
            p.append("Received names a user in mode none: %r" % named)
    elif named != login:
        p.append("Received names %r" % named)
    rest = [f for k, f in enumerate(fields) if k != ours[0]]
    xau = [v for n, v, _ in rest if is_xau(n)]
    client_fields = [f for f, _ in case.fields]
    client_xau = [f for f, ident in case.fields if ident]
    if case.mode in ("header", "auth"):
        if [v.strip(b" \t") for v in xau] != [login]:
            p.append("X-Authenticated-User fields %r" % xau[:4])
        kept = [raw for n, _, raw in rest if not is_xau(n)]
        want = [f for f, ident in case.fields if not ident]
    else:
        theirs = [raw for n, _, raw in rest if is_xau(n)]
        if theirs and theirs != client_xau:
            p.append("X-Authenticated-User fields %r, the client sent %r" % (theirs, client_xau))
        kept = [raw for n, _, raw in rest if not is_xau(n)]
        want = [f for f, ident in case.fields if not ident]
    if kept != want:
        p.append("header fields changed: %r, sent %r" % (kept, want))
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    if body != case.body:
        p.append("body changed: %r, sent %r" % (body[:300], case.body[:300]))
    del client_fields
    return p


# ------------------------------------------------------------ the client side

def b64(b):
    return base64.b64encode(b).decode()


def authenticate(r, case):
    """-> the final reply of the AUTH exchange."""
    resp = b64(b"\0" + case.typed + b"\0" + PW.encode())
    if case.mech == "PLAIN":
        return r.cmd("AUTH PLAIN " + resp, timeout=30)
    if case.mech in ("PLAIN-334", "PLAIN-="):
        rep = r.cmd("AUTH PLAIN" + (" =" if case.mech == "PLAIN-=" else ""))
        if rep.code != 334:
            return rep
        return r.cmd(resp, timeout=30)
    rep = r.cmd("AUTH LOGIN")
    if rep.code != 334:
        return rep
    rep = r.cmd(b64(case.typed))
    if rep.code != 334:
        return rep
    return r.cmd(b64(PW.encode()), timeout=30)


def run_case(sg, up, case, auth_advertised):
    """-> ("relay" | "refuse", [problems])."""
    start = up.connections
    p = []
    outcome = "relay"
    with Raw(sg.port("plain")) as r:
        r.expect(220)
        rep = r.cmd("EHLO " + case.helo)
        if rep.code == 501:
            # a HELO name saslgate will not pass on: refused at once is
            # fine; the session goes on under a plain one
            case.helo = "fallback.test"
            rep = r.cmd("EHLO " + case.helo)
        if rep.code != 250:
            p.append("EHLO %r: %s" % (case.helo, rep.text))
            return "error", p
        rep = authenticate(r, case)
        if rep.code == 454:
            if not rep.text.startswith("454 4.7.0"):
                p.append("AUTH: %s" % rep.text)
            outcome = "refuse"
            rep = r.cmd("MAIL FROM:<alice@example.org>")
            if rep.code != 530:
                p.append("MAIL after a refused AUTH: %s" % rep.text)
        elif rep.code != 235:
            return "error", ["AUTH: %s" % rep.text]
        else:
            mail = "MAIL FROM:<alice@example.org>" + (" " + case.auth_param
                                                       if case.auth_param else "") + " SIZE=100"
            rep = r.cmd(mail, timeout=30)
            if rep.code == 454 and rep.text.startswith("454 4.7.0"):
                outcome = "refuse"
            elif rep.code != 250:
                p.append("%s: %s" % (mail, rep.text))
                return "error", p
            else:
                r.expect(250, "RCPT TO:<bob@example.net>")
                r.expect(354, "DATA")
                r.send(case.wire + b".\r\n")
                rep = r.reply(timeout=30)
                if rep.code != 250:
                    return "error", p + ["end of data: %s" % rep.text]
        r.cmd("QUIT")
    conns = set(range(start + 1, up.connections + 1))
    if outcome == "refuse":
        if any(up.raw_lines(c, "MAIL") for c in conns):
            p.append("refused with 454, but the upstream saw a MAIL")
        return outcome, p
    up.wait_for(lambda: any(m.conn in conns and m.reply for m in list(up.messages)), 10,
                "the message of %s" % case.describe())
    return outcome, p + check_upstream(case, up, conns, auth_advertised)


# ------------------------------------------------------------ the test

def test_identity_property(workdir, start_saslgate, start_fake_upstream, record_property,
                           capsys):
    # shown with the failure whatever happens next (a crash included)
    print("identity property: SG_PROPERTY_SEED=%d" % SEED, file=sys.stderr)
    indices = [int(ONLY)] if ONLY else list(range(N))
    cases = [Case(i) for i in indices]
    users = {c.login: PW for c in cases}
    db = make_sasldb(workdir / "sasldb2", users, realm="sg.test")
    secret = workdir / "upstream.secret"
    secret.write_text(RELAY_PW + "\n")
    secret.chmod(0o600)
    gates = {}
    for mode in MODES:
        if mode == "auth":
            up = start_fake_upstream(auth={"relay": RELAY_PW})
        elif mode == "xforward":
            up = start_fake_upstream()
        else:
            up = start_fake_upstream(extensions=DEFAULT_EXTENSIONS + ["AUTH PLAIN LOGIN"])
        cfg = default_config(workdir, upstream_port=up.port, sasldb=db, identity=mode,
                             limits={"idle_timeout": "60s", "max_message_size": "10M"})
        if mode == "auth":
            cfg["upstream"].update(auth_user="relay", auth_password_file=str(secret))
        # the log check covers the shared password (text logins get their
        # PLAIN forms checked too)
        secrets = {c.login.decode(): PW for c in cases if valid_utf8(c.login)}
        secrets["relay"] = RELAY_PW
        sg = start_saslgate(cfg, secrets=secrets, name="saslgate-%s" % mode)
        gates[mode] = (sg, up, mode != "xforward")
    t0 = time.monotonic()
    ran, stats, failures = [], {m: [0, 0] for m in MODES}, []
    kinds = collections.Counter()
    for case in cases:
        if time.monotonic() - t0 > T(BUDGET):
            break
        sg, up, advertised = gates[case.mode]
        outcome, problems = run_case(sg, up, case, advertised)
        must = forced(case)
        if outcome in ("relay", "refuse") and must and outcome != must:
            problems.append("got %s where the rules force %s" % (outcome, must))
        if outcome == "relay":
            esc = re.escape(log_escape(case.login))
            for ev in ("auth result=ok", "message"):
                if not re.search(r"event=%s user=%s " % (ev, esc), sg.log_text()):
                    problems.append("no event=%s log line naming the login whole: user=%s" % (
                        ev, log_escape(case.login)[:200]))
        ran.append(case)
        stats[case.mode][0 if outcome == "relay" else 1] += 1
        for x in problems:
            kinds[re.split(r" \[| b'| b\"|: |\(", x, 1)[0][:60]] += 1
        if problems:
            failures.append("%s\n    %s" % (case.describe()[:1500], "\n    ".join(
                x[:1500] for x in problems)))
    took = time.monotonic() - t0
    figures = ("identity property: seed=%d cases=%d/%d in %.1fs (%s)%s" % (
        SEED, len(ran), len(cases), took,
        ", ".join("%s %d relayed %d refused" % (m, *stats[m]) for m in MODES),
        "; stopped at the %ss budget" % BUDGET if len(ran) < len(cases) else ""))
    record_property("seed", SEED)
    record_property("cases", len(ran))
    record_property("seconds", round(took, 1))
    with capsys.disabled():
        print("\n" + figures)
    assert len(ran) >= min(len(cases), 50), figures
    assert not failures, "%s\n%d failing case(s); problems by kind: %s\n%s" % (
        figures, len(failures), dict(kinds.most_common()), "\n".join(failures[:8]))
