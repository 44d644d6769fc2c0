"""The command line and the configuration file, as CONTRACT.md "Build and
run" and "Configuration file" describe them, seen from outside: exit codes,
`FILE:LINE: message` lines naming the right file and line (also inside an
included drop-in), include order, nothing bound by -t, a broken reload
keeping the running configuration."""

import pathlib
import re
import signal
import socket

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


def test_check_valid_tls_config(workdir):
    cert, key = make_cert(workdir, "rsa")
    ecert, ekey = make_cert(workdir, "ecdsa")
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
    cert, key = make_cert(workdir, "rsa")
    ecert, ekey = make_cert(workdir, "ecdsa")
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
