# SPDX-License-Identifier: BSD-2-Clause
"""pytest fixtures of the saslgate process tests (see sgtest.py's docstring).

Every `start_*` fixture is a factory; whatever it started is stopped at
teardown in reverse order, even when the test failed, and each saslgate
process is checked afterwards (no crash, no sanitizer report, no credential
in its log): a problem there fails the test at teardown."""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sgtest  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def workdir(request):
    """A fresh 0755 directory per test (Postfix, smtp-sink and a saslgate
    that dropped privileges must be able to reach into it).  Kept when the
    test failed or SG_KEEP_TMP=1."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="sgtest-%s-" % request.node.name[:40]))
    os.chmod(d, 0o755)
    yield d
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed or getattr(request.node, "_sg_keep", False)
    if failed or os.environ.get("SG_KEEP_TMP") == "1":
        sys.stderr.write("\nsgtest: work directory kept: %s\n" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


class _Stack:
    def __init__(self):
        self.items = []

    def push(self, obj, stop):
        self.items.append((obj, stop))
        return obj

    def close(self):
        problems = []
        for obj, stop in reversed(self.items):
            try:
                r = stop()
                if r:
                    problems.extend(r)
            except Exception as e:  # keep stopping the others
                problems.append("stopping %s: %r" % (type(obj).__name__, e))
        self.items = []
        return problems


@pytest.fixture
def _sgstack(request):
    st = _Stack()
    yield st
    problems = st.close()
    if problems:
        request.node._sg_keep = True  # keep the logs for a look
        pytest.fail("teardown checks failed:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def start_saslgate(workdir, _sgstack):
    counter = [0]

    def start(config, secrets=(), wait_ready=True, extra_args=(), name=None):
        counter[0] += 1
        nm = name or ("saslgate" if counter[0] == 1 else "saslgate%d" % counter[0])
        try:
            sg = sgtest.Saslgate(workdir, config, secrets=secrets, wait_ready=False,
                                 extra_args=extra_args, name=nm)
        except Exception:
            raise
        _sgstack.push(sg, sg.finish)
        if wait_ready:
            sg.wait_ready()
        return sg
    return start


@pytest.fixture
def start_postfix(workdir, _sgstack):
    def start(**kw):
        pf = sgtest.Postfix(workdir, **kw)
        return _sgstack.push(pf, pf.stop)
    return start


@pytest.fixture
def start_saslauthd(workdir, _sgstack):
    def start(users=None):
        sa = sgtest.Saslauthd(workdir, users)
        return _sgstack.push(sa, sa.stop)
    return start


@pytest.fixture
def start_smtp_sink(workdir, _sgstack):
    def start(**kw):
        s = sgtest.SmtpSink(workdir, **kw)
        return _sgstack.push(s, s.stop)
    return start


@pytest.fixture
def start_fake_upstream(_sgstack):
    def start(**kw):
        f = sgtest.FakeUpstream(**kw)

        def stop():
            f.stop()
            return ["fake upstream error: %s" % e for e in f.errors]
        return _sgstack.push(f, stop)
    return start
