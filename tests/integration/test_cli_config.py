# SPDX-License-Identifier: BSD-2-Clause
"""The command line and the configuration file, as README ("Running",
"Configuration") and saslgate(8)/saslgate.conf(5) describe them, seen from outside: exit codes,
`FILE:LINE: message` lines naming the right file and line (also inside an
included drop-in), include order, nothing bound by -t, a broken reload
keeping the running configuration, and -t opening the daemon's files as
[server] user with the modes of the secrets checked."""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import uuid

import pytest

import sgtest
from sgtest import HOST, free_port, make_cert, make_sasldb, run_saslgate


# ----------------------------------------------------------------- helpers

def base_conf(workdir, port=None, extra=""):
    """A valid configuration (no TLS, SASL from a sasldb) as INI text; the
    line numbers of the tests below count from it, so keep it stable."""
    db = workdir / "sasldb2"
    if not db.exists():
        make_sasldb(db, {"cliuser": "Cl1-user.pw"})
    port = port or free_port()
    return (
        "[server]\n"                                   # 1
        "hostname = base.test\n"                       # 2
        "workers = 1\n"                                # 3
        "shutdown_timeout = 5s\n"                      # 4
        "\n"                                           # 5
        "[listener plain]\n"                           # 6
        "address = %s:%d\n"                            # 7
        "tls = none\n"                                 # 8
        "require_tls_for_auth = no\n"                  # 9
        "\n"                                           # 10
        "[sasl]\n"                                     # 11
        "pwcheck_method = auxprop\n"                   # 12
        "auxprop_plugin = sasldb\n"                    # 13
        "sasldb_path = %s\n"                           # 14
        "mech_list = PLAIN LOGIN\n"                    # 15
        "\n"                                           # 16
        "[upstream]\n"                                 # 17
        "server = 127.0.0.1:%d\n"                      # 18
        "connect_timeout = 2s\n"                       # 19
        % (HOST, port, db, sgtest.refused_port())
    ) + extra


BASE_LINES = 19


def write(path, text):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check(conf):
    p = run_saslgate("-t", "-c", conf)
    return p.returncode, p.stdout, p.stderr


def assert_error_at(stderr, path, line, words):
    """stderr has a `FILE:LINE: message` line for path:line mentioning words."""
    pat = r"^%s:%d: .*%s" % (re.escape(str(path)), line, words)
    assert re.search(pat, stderr, re.M | re.I), \
        "no %s:%d: ...%s... line in:\n%s" % (path, line, words, stderr)


def project_version():
    cm = (sgtest.SOURCE_DIR / "CMakeLists.txt").read_text()
    return re.search(r"project\(saslgate\s+VERSION\s+([0-9.]+)", cm).group(1)


def can_connect(port):
    try:
        socket.create_connection((HOST, port), timeout=2).close()
        return True
    except OSError:
        return False


# ----------------------------------------------------------------- the CLI

def test_version():
    p = run_saslgate("-V")
    assert p.returncode == 0
    assert re.fullmatch(r"saslgate \d+\.\d+\.\d+\n", p.stdout), p.stdout
    assert p.stdout.split()[1] == project_version()


def test_help():
    p = run_saslgate("-h")
    assert p.returncode == 0
    for opt in ("-c", "-t", "-V", "-h"):
        assert opt in p.stdout, p.stdout


def test_unknown_option_fails():
    p = run_saslgate("-Z")
    assert p.returncode != 0
    assert "usage" in (p.stdout + p.stderr).lower()


def test_check_valid_config(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(workdir))
    rc, out, err = check(conf)
    assert rc == 0, err
    assert not re.search(r"^%s:\d+:" % re.escape(str(conf)), err, re.M), err


def test_check_binds_nothing(workdir):
    """-t on a config whose listener port is taken by someone else still
    passes: -t does not bind (CONTRACT: "Nothing is bound")."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        conf = write(workdir / "saslgate.conf", base_conf(workdir, port=port))
        rc, out, err = check(conf)
        assert rc == 0, err
    # and after -t the port is free again for anyone
    with socket.socket() as s2:
        s2.bind((HOST, port))


def secret_cert(workdir, kind="rsa"):
    """make_cert with the key 0600, as -t wants a real one."""
    cert, key = make_cert(workdir, kind)
    os.chmod(key, 0o600)
    return cert, key


def test_check_valid_tls_config(workdir):
    cert, key = secret_cert(workdir, "rsa")
    ecert, ekey = secret_cert(workdir, "ecdsa")
    extra = ("[listener submission]\naddress = %s:%d\ntls = starttls\n"
             "[listener submissions]\naddress = %s:%d\ntls = implicit\n"
             "[tls]\ncertificate = %s\nkey = %s\necdsa_certificate = %s\necdsa_key = %s\n"
             "min_version = TLSv1.2\n"
             % (HOST, free_port(), HOST, free_port(), cert, key, ecert, ekey))
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra=extra))
    rc, out, err = check(conf)
    assert rc == 0, err


def test_check_nonexistent_config(workdir):
    conf = workdir / "nope.conf"
    rc, out, err = check(conf)
    assert rc == 1
    assert re.search(r"^%s: .*(no such file|cannot read)" % re.escape(str(conf)), err,
                     re.M | re.I), err


# Each case: text appended to (or replacing a line of) the valid base
# config, the line the error must name, and a word of the message.
ERRORS = {
    "unknown_key": ("[server]\nno_such_key = 1\n", BASE_LINES + 2, "unknown key"),
    "unknown_key_in_listener": ("[listener plain]\nport = 25\n", BASE_LINES + 2, "unknown key"),
    "unknown_section": ("[bogus]\nkey = 1\n", BASE_LINES + 1, r"unknown section"),
    "bad_duration": ("[limits]\nidle_timeout = 5 minutes\n", BASE_LINES + 2, "idle_timeout"),
    "bad_duration_unit": ("[upstream]\nconnect_timeout = 10d\n", BASE_LINES + 2,
                          "connect_timeout"),
    "bad_size": ("[limits]\n\nmax_message_size = 10T\n", BASE_LINES + 3, "max_message_size"),
    "bad_bool": ("[listener plain]\nrequire_auth = perhaps\n", BASE_LINES + 2, "require_auth"),
    "bad_enum": ("[upstream]\nidentity = carrier-pigeon\n", BASE_LINES + 2, "identity"),
    "bad_log_level": ("[server]\nlog_level = loud\n", BASE_LINES + 2, "log_level"),
    "bad_workers": ("[server]\nworkers = 0\n", BASE_LINES + 2, "workers"),
    "port_out_of_range": ("[listener other]\naddress = 127.0.0.1:70000\n", BASE_LINES + 2,
                          "out of range"),
    "port_zero": ("[upstream]\nserver = 127.0.0.1:0\n", BASE_LINES + 2, "out of range"),
    "listener_not_an_ip": ("[listener other]\naddress = localhost:2525\n", BASE_LINES + 2,
                           "address"),
    "missing_include": ("include = not-there.conf\n", BASE_LINES + 1, "not-there.conf"),
    "starttls_without_certificate": ("[listener sub]\naddress = 127.0.0.1:%d\n# why\n"
                                     "tls = starttls\n" % free_port(), BASE_LINES + 4,
                                     "certificate"),
    "syntax_error": ("[server\nhostname = x\n", BASE_LINES + 1, "syntax"),
    "max_failures_zero": ("[sasl]\nmax_failures = 0\n", BASE_LINES + 2, "max_failures"),
    "whole_number_with_unit": ("[limits]\nmax_recipients = 10k\n", BASE_LINES + 2,
                               "max_recipients"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_check_reports_file_and_line(workdir, case):
    extra, line, words = ERRORS[case]
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra=extra))
    rc, out, err = check(conf)
    assert rc == 1, "exit %d, stderr:\n%s" % (rc, err)
    assert_error_at(err, conf, line, words)


def test_check_reports_every_problem(workdir):
    extra = "[server]\nbogus_one = 1\n[limits]\nidle_timeout = soon\n"
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra=extra))
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, BASE_LINES + 2, "unknown key")
    assert_error_at(err, conf, BASE_LINES + 4, "idle_timeout")


def test_check_tls_problems_name_the_line(workdir):
    cert, key = secret_cert(workdir, "rsa")
    ecert, ekey = secret_cert(workdir, "ecdsa")
    tmpl = ("[listener sub]\naddress = 127.0.0.1:%d\ntls = starttls\n"
            "[tls]\ncertificate = %%s\nkey = %%s\n" % free_port())
    # key of another pair: the key line
    conf = write(workdir / "a.conf", base_conf(workdir, extra=tmpl % (cert, ekey)))
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, BASE_LINES + 6, "match")
    # a certificate file that does not exist: the certificate line
    conf = write(workdir / "b.conf", base_conf(workdir, extra=tmpl % (workdir / "none.pem", key)))
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, BASE_LINES + 5, "none.pem")


def test_check_sasl_backend_problems(workdir):
    """-t starts SASL: a sasldb or saslauthd socket that does not exist is
    reported at the line naming it."""
    text = base_conf(workdir).replace("sasldb_path = %s" % (workdir / "sasldb2"),
                                      "sasldb_path = %s" % (workdir / "missing-sasldb"))
    conf = write(workdir / "a.conf", text)
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, 14, "missing-sasldb")
    text = base_conf(workdir).replace(
        "pwcheck_method = auxprop\n", "pwcheck_method = saslauthd\n").replace(
        "sasldb_path = %s" % (workdir / "sasldb2"), "saslauthd_path = %s" % (workdir / "no-mux"))
    conf = write(workdir / "b.conf", text)
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, 14, "no-mux")


def test_check_saslauthd_config_with_real_saslauthd(workdir, start_saslauthd):
    sa = start_saslauthd()
    text = base_conf(workdir).replace(
        "pwcheck_method = auxprop\n", "pwcheck_method = saslauthd\n").replace(
        "sasldb_path = %s" % (workdir / "sasldb2"), "saslauthd_path = %s" % sa.socket_path)
    conf = write(workdir / "a.conf", text)
    rc, out, err = check(conf)
    assert rc == 0, err


# ----------------------------------------------------------------- includes

def test_error_inside_drop_in_names_the_drop_in(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra="include = conf.d/*.conf\n"))
    write(workdir / "conf.d" / "10-ok.conf", "[server]\nhostname = ok.test\n")
    bad = write(workdir / "conf.d" / "20-bad.conf",
                "# a drop-in\n[limits]\nmax_recipients = lots\n")
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, bad, 3, "max_recipients")
    assert not re.search(r"10-ok\.conf:\d+:", err), err


def test_empty_include_glob_is_fine(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra="include = conf.d/*.conf\n"))
    (workdir / "conf.d").mkdir()
    rc, out, err = check(conf)
    assert rc == 0, err


def test_include_loop_is_an_error(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra="include = loop.conf\n"))
    write(workdir / "loop.conf", "include = loop.conf\n")
    rc, out, err = check(conf)
    assert rc == 1
    assert re.search(r"loop\.conf:1: .*(nested|loop)", err), err


def test_later_drop_in_overrides_earlier_value(workdir):
    """Validation sees the final value: max_recipients = 0 in an early
    drop-in is fixed by a later one; the other way round it is an error at
    the later drop-in's line."""
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra="include = conf.d/*.conf\n"))
    a = write(workdir / "conf.d" / "10-a.conf", "[limits]\nmax_recipients = 0\n")
    b = write(workdir / "conf.d" / "20-b.conf", "[limits]\n\nmax_recipients = 5\n")
    rc, out, err = check(conf)
    assert rc == 0, err
    a.write_text("[limits]\nmax_recipients = 5\n")
    b.write_text("[limits]\n\nmax_recipients = 0\n")
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, b, 3, "max_recipients")


def test_include_order_is_lexical_and_later_wins(workdir, start_saslgate):
    """"10.conf" sorts before "9.conf": the listener ends up on 9.conf's
    port, which is the one bound; the others are not."""
    p_main, p10, p9 = free_port(), free_port(), free_port()
    text = base_conf(workdir, port=p_main, extra="include = conf.d/*.conf\n")
    write(workdir / "conf.d" / "10.conf", "[listener plain]\naddress = %s:%d\n" % (HOST, p10))
    write(workdir / "conf.d" / "9.conf", "[listener plain]\naddress = %s:%d\n" % (HOST, p9))
    # the harness writes the file itself: pass the text, include is relative
    # to the file's folder, which is workdir
    sg = start_saslgate(text)
    ready = sg.wait_log(r"ready.*")
    assert "%s:%d" % (HOST, p9) in ready.group(0)
    assert can_connect(p9)
    assert not can_connect(p10) and not can_connect(p_main)


def test_include_before_a_key_is_overridden_by_it(workdir, start_saslgate):
    """A key after the include line in the main file is later than the
    drop-in: it wins."""
    p_drop, p_main, p_old = free_port(), free_port(), free_port()
    text = base_conf(workdir, port=p_old).replace(
        "address = %s:%d\n" % (HOST, p_old),
        "include = conf.d/*.conf\naddress = %s:%d\n" % (HOST, p_main))
    write(workdir / "conf.d" / "10.conf", "[listener plain]\naddress = %s:%d\n" % (HOST, p_drop))
    sg = start_saslgate(text)
    assert can_connect(p_main)
    assert not can_connect(p_drop)
    assert "%s:%d" % (HOST, p_main) in sg.wait_log(r"ready.*").group(0)


def test_drop_in_changes_a_listener_by_name(workdir, start_saslgate):
    p_new, p_extra = free_port(), free_port()
    text = base_conf(workdir, extra="include = conf.d/*.conf\n")
    write(workdir / "conf.d" / "50-site.conf",
          "[listener plain]\naddress = %s:%d\n[listener extra]\naddress = %s:%d\ntls = none\n"
          % (HOST, p_new, HOST, p_extra))
    sg = start_saslgate(text)
    ready = sg.wait_log(r"ready.*").group(0)
    assert "plain=%s:%d" % (HOST, p_new) in ready, ready
    assert "extra=%s:%d" % (HOST, p_extra) in ready, ready
    assert can_connect(p_new) and can_connect(p_extra)


# ----------------------------------------------------------------- the daemon

def test_daemon_refuses_to_start_on_a_bad_config(workdir):
    conf = write(workdir / "saslgate.conf",
                 base_conf(workdir, extra="[limits]\nidle_timeout = never\n"))
    p = run_saslgate("-c", conf, timeout=30)
    assert p.returncode == 1
    assert "%s:%d:" % (conf, BASE_LINES + 2) in p.stderr, p.stderr
    assert "ready" not in p.stderr


def test_daemon_ready_and_sigterm_exit_0(workdir, start_saslgate):
    port = free_port()
    sg = start_saslgate(base_conf(workdir, port=port))
    assert can_connect(port)
    assert sg.stop() == 0
    assert not can_connect(port)


def test_broken_reload_keeps_running_config(workdir, start_saslgate):
    port, port2 = free_port(), free_port()
    sg = start_saslgate(base_conf(workdir, port=port))
    # a broken file: errors with file:line, still serving on the old port
    sg.conf_path.write_text(base_conf(workdir, port=port2, extra="[server]\nnonsense = 1\n"))
    sg.reload()
    sg.wait_log(r"%s:%d: .*unknown key" % (re.escape(str(sg.conf_path)), BASE_LINES + 2))
    assert sg.proc.poll() is None
    assert can_connect(port) and not can_connect(port2)
    # the same file fixed: the reload goes through, the listener stays
    start = len(sg.log_text())
    sg.conf_path.write_text(base_conf(workdir, port=port, extra="[server]\nhostname = new.test\n"))
    m = sg.reload()
    assert "reload: done" in m.group(0), sg.log_text()[start:]
    assert sg.proc.poll() is None and can_connect(port)


def test_greeting_uses_hostname_from_the_last_drop_in(workdir, start_saslgate):
    """The later drop-in's hostname is the one in the 220 greeting."""
    port = free_port()
    text = base_conf(workdir, port=port, extra="include = conf.d/*.conf\n")
    write(workdir / "conf.d" / "10-a.conf", "[server]\nhostname = early.test\n")
    write(workdir / "conf.d" / "20-b.conf", "[server]\nhostname = late.test\n")
    start_saslgate(text)
    with sgtest.Raw(port) as r:
        g = r.reply()
        assert g.code == 220 and g.text.split()[1] == "late.test", g.text
        e = r.expect(250, "EHLO client.test")
        assert e.lines[0].startswith("250-late.test"), e.text


def test_unknown_empty_section_is_an_error(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra="[bogus]\n"))
    rc, out, err = check(conf)
    assert rc == 1
    assert_error_at(err, conf, BASE_LINES + 1, "unknown section")


# ------------------------------------------- files as [server] user, secrets

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: -t checks as another user only as root")

TLS_EXTRA = "[tls]\ncertificate = %s\nkey = %s\n"   # key: BASE_LINES + 3
AUTH_EXTRA = ("[upstream]\nidentity = auth\nauth_user = relay\n"
              "auth_password_file = %s\n")          # file: BASE_LINES + 4


def owned(path, mode, user="root", group="root"):
    shutil.chown(path, user, group)
    os.chmod(path, mode)
    return path


def secret_file(workdir, name, mode, user="root", group="root"):
    return owned(write(workdir / name, "s3cret-pw\n"), mode, user, group)


def problems(err, conf):
    return re.findall(r"^%s:\d+: .*$" % re.escape(str(conf)), err, re.M)


@pytest.fixture
def service_user():
    """A throwaway system user (primary group nogroup) in a throwaway group,
    as the Debian package's saslgate is in ssl-cert: (user, group)."""
    tag = uuid.uuid4().hex[:8]
    user, group = "sgfc-u%s" % tag, "sgfc-g%s" % tag
    subprocess.run(["groupadd", "-r", group], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-r", "-M", "-N", "-g", "nogroup", "-G", group,
                        "-d", "/nonexistent", "-s", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)
        try:
            yield user, group
        finally:
            subprocess.run(["userdel", user], capture_output=True)
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


@needs_root
def test_check_key_readable_by_others(workdir):
    cert, key = secret_cert(workdir)
    os.chmod(key, 0o644)
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra=TLS_EXTRA % (cert, key)))
    rc, out, err = check(conf)
    assert rc == 1, err
    k = re.escape(str(key))
    assert_error_at(err, conf, BASE_LINES + 3,
                    r"%s: secret readable by others.*fix: chmod \S*o-rwx %s$" % (k, k))
    assert "configuration OK" not in out
    # 0600: fine
    os.chmod(key, 0o600)
    rc, out, err = check(conf)
    assert rc == 0, err


@needs_root
def test_check_auth_password_file_0644(workdir):
    pw = secret_file(workdir, "relay.pw", 0o644)
    conf = write(workdir / "saslgate.conf", base_conf(workdir, extra=AUTH_EXTRA % pw))
    rc, out, err = check(conf)
    assert rc == 1, err
    assert_error_at(err, conf, BASE_LINES + 4, r"%s: secret readable by others\b.*fix: .*o-rwx"
                    % re.escape(str(pw)))


@needs_root
def test_check_secret_0640_root_root_for_nobody(workdir):
    """Not openable as nobody, and readable by a group that is not nobody's:
    both said, each with its fix."""
    pw = secret_file(workdir, "relay.pw", 0o640)
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = nobody\n" + AUTH_EXTRA % pw))
    rc, out, err = check(conf)
    assert rc == 1, err
    p = re.escape(str(pw))
    line = BASE_LINES + 6
    assert_error_at(err, conf, line, r"%s: not readable by user nobody \(Permission denied\); "
                    r"fix: chown root:nogroup %s && chmod 0640 %s$" % (p, p, p))
    assert_error_at(err, conf, line, r"%s: secret readable by group root, which user nobody "
                    r"is not in .*fix: chgrp nogroup %s$" % (p, p))


@needs_root
def test_check_secret_0640_in_a_group_of_the_user_passes(workdir):
    """0640 root:nogroup, [server] user = nobody (whose group it is): the
    key and the password file pass, opened as nobody."""
    cert, key = secret_cert(workdir)
    owned(key, 0o640, "root", "nogroup")
    pw = secret_file(workdir, "relay.pw", 0o640, "root", "nogroup")
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = nobody\n" + TLS_EXTRA % (cert, key)
        + AUTH_EXTRA % pw))
    rc, out, err = check(conf)
    assert rc == 0, err
    assert not problems(err, conf), err


@needs_root
def test_check_secret_group_bits_the_user_does_not_need(workdir):
    """Group-writable is never right; group-readable while the service user
    owns the file gives the group nothing the user needs."""
    pw = secret_file(workdir, "relay.pw", 0o660, "root", "nogroup")
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = nobody\n" + AUTH_EXTRA % pw))
    rc, out, err = check(conf)
    assert rc == 1, err
    assert_error_at(err, conf, BASE_LINES + 6, r"secret writable by group nogroup .*"
                    r"fix: chmod g-w %s$" % re.escape(str(pw)))
    owned(pw, 0o640, "nobody", "nogroup")
    rc, out, err = check(conf)
    assert rc == 1, err
    assert_error_at(err, conf, BASE_LINES + 6, r"readable by group nogroup although user "
                    r"nobody owns it .*fix: chmod g-r %s$" % re.escape(str(pw)))
    owned(pw, 0o600, "nobody", "nogroup")
    rc, out, err = check(conf)
    assert rc == 0, err


@needs_root
def test_check_sender_login_map_unreadable_by_the_user(workdir):
    smap = owned(write(workdir / "sender_login_map", "alice alice@example.org\n"), 0o600)
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = nobody\n[sasl]\nsender_login_map = %s\n" % smap))
    rc, out, err = check(conf)
    assert rc == 1, err
    m = re.escape(str(smap))
    assert_error_at(err, conf, BASE_LINES + 4, r"%s: not readable by user nobody "
                    r"\(Permission denied\); fix: chown root:nogroup %s && chmod 0640 %s$"
                    % (m, m, m))
    # the same file is fine for root, which -t would have said before
    rc, out, err = check(write(workdir / "root.conf", base_conf(
        workdir, extra="[sasl]\nsender_login_map = %s\n" % smap)))
    assert rc == 0, err
    # and after the fix
    owned(smap, 0o640, "root", "nogroup")
    rc, out, err = check(conf)
    assert rc == 0, err


@needs_root
def test_check_file_in_a_directory_the_user_cannot_search(workdir):
    private = workdir / "private"
    private.mkdir()
    owned(private, 0o700)
    cert, key = secret_cert(private)
    owned(key, 0o640, "root", "nogroup")
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = nobody\n" + TLS_EXTRA % (cert, key)))
    rc, out, err = check(conf)
    assert rc == 1, err
    d = re.escape(str(private))
    assert_error_at(err, conf, BASE_LINES + 4, r"%s: not readable by user nobody: "
                    r"directory %s is not searchable by it .*fix: chgrp nogroup %s && "
                    r"chmod g\+x %s$" % (re.escape(str(cert)), d, d, d))
    assert_error_at(err, conf, BASE_LINES + 5, r"%s: not readable by user nobody: "
                    r"directory %s" % (re.escape(str(key)), d))
    owned(private, 0o710, "root", "nogroup")
    rc, out, err = check(conf)
    assert rc == 0, err


@needs_root
def test_check_debian_snakeoil_pattern_passes(workdir, service_user):
    """Debian: /etc/ssl/private 0710 root:ssl-cert, the snakeoil key 0640
    root:ssl-cert, the service user in group ssl-cert (a supplementary
    group).  -t passes as root for that user, and as the user itself (the
    unit's ExecStartPre)."""
    user, group = service_user
    private = workdir / "ssl" / "private"
    private.mkdir(parents=True)
    owned(private, 0o710, "root", group)
    cert, key = secret_cert(private)
    owned(key, 0o640, "root", group)
    os.chmod(cert, 0o644)
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = %s\n" % user + TLS_EXTRA % (cert, key)))
    rc, out, err = check(conf)
    assert rc == 0, err
    assert not problems(err, conf), err
    if shutil.which("setpriv"):
        p = subprocess.run(["setpriv", "--reuid", user, "--regid", "nogroup", "--init-groups",
                            sgtest.SASLGATE_BIN, "-t", "-c", str(conf)],
                           capture_output=True, text=True, timeout=sgtest.T(30),
                           env=sgtest.sanitizer_env(), stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
    # the same key for a user outside the group: both problems
    owned(key, 0o640, "root", "root")
    owned(private, 0o710, "root", "root")
    rc, out, err = check(conf)
    assert rc == 1, err
    assert_error_at(err, conf, BASE_LINES + 5, "not readable by user %s" % user)
    assert_error_at(err, conf, BASE_LINES + 5, "readable by group root, which user %s is not in"
                    % user)


@needs_root
def test_check_unknown_service_user(workdir):
    conf = write(workdir / "saslgate.conf", base_conf(
        workdir, extra="[server]\nuser = no-such-user-sgtest\n"))
    rc, out, err = check(conf)
    assert rc == 1, err
    assert_error_at(err, conf, BASE_LINES + 2, "no-such-user-sgtest: no such user")

