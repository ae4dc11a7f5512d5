"""
Fixtures of the functional suite: client <-> mailtlsd <-> real backends.

Session-scoped: the PKI, one Dovecot (IMAP/POP3, plus the SASL socket) and
one Postfix delivering into the Dovecot user "alice"; the legacy backends
of legacy_util (Exim 4.96 with its own "alice", Courier-IMAP/POP3), each
started on first use.  `mta` is Postfix or Exim, chosen by indirect
parametrization (default Postfix), so that one test body runs against
each (test_mda_starttls.py's `mda` does the same for Dovecot or
Courier).  Function-scoped:
mailtlsd instances, fresh mailboxes, the aiosmtpd recorder and scripted
backends, so that tests never depend on each other's state.

Everything lives under one work directory: $MAILTLSD_TEST_TMP when run.sh
made it, else a mkdtemp of our own, removed at the end unless
MAILTLSD_KEEP_TMP is set.  A failing test gets the tail of every live
party's log appended to its report.
"""

import os
import shutil
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import legacy_util  # noqa: E402
import mtlib  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("MAILTLSD_TEST_TIMEOUT", "180"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout(seconds): per-test watchdog (default %d)"
        % TEST_TIMEOUT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        rep.sections.append(("logs of the live parties", mtlib.dump_logs()))


class _Watchdog(Exception):
    pass


@pytest.fixture(autouse=True)
def watchdog(request):
    """Fail a test that runs longer than its budget instead of hanging."""
    marker = request.node.get_closest_marker("timeout")
    seconds = marker.args[0] if marker else TEST_TIMEOUT

    def fire(signum, frame):
        raise _Watchdog("test exceeded its %ds watchdog" % seconds)
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def workroot():
    given = os.environ.get("MAILTLSD_TEST_TMP")
    if given:
        os.makedirs(given, exist_ok=True)
        os.chmod(given, 0o755)
        yield given
        return
    root = mtlib.make_workdir(prefix="mailtlsd-func-")
    yield root
    if not os.environ.get("MAILTLSD_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(workroot, request):
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)
    return mtlib.make_workdir(workroot, prefix=name[:60] + "-")


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("MAILTLSD_BIN", mtlib.DEFAULT_BINARY)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("mailtlsd binary %s missing (set MAILTLSD_BIN)" % path,
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def certs(workroot):
    return mtlib.Certs(os.path.join(workroot, "certs"))


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("Dovecot and Postfix instances need root")


@pytest.fixture(scope="session")
def dovecot(workroot):
    _need_root()
    d = mtlib.Dovecot(workroot)
    d.add_user("alice", "alice-secret")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def alice(dovecot):
    """The user Postfix delivers to (shared: find mail by a unique token)."""
    return dovecot.users["alice"]


@pytest.fixture(scope="session")
def postfix(workroot, dovecot, alice):
    p = mtlib.Postfix(workroot, dovecot, alice)
    p.start()
    yield p
    p.stop()


def _need_legacy():
    _need_root()
    why = legacy_util.missing()
    if why:
        pytest.skip("legacy backends unavailable: " + "; ".join(why))


@pytest.fixture(scope="session")
def exim(workroot):
    """Exim 4.96 on a loopback port, delivering "alice" (and any user a
    test adds) into a Maildir byte for byte."""
    _need_legacy()
    e = legacy_util.Exim(workroot)
    e.add_user("alice", "alice-secret")
    e.start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def courier(workroot):
    """Courier-IMAP and Courier POP3 with authdaemond and a userdb."""
    _need_legacy()
    c = legacy_util.Courier(workroot)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def mta(request):
    """An SMTP backend facade (legacy_util.MtaView): Postfix by default,
    or what @pytest.mark.parametrize("mta", [...], indirect=True) names."""
    kind = getattr(request, "param", "postfix")
    if kind == "postfix":
        p = request.getfixturevalue("postfix")
        return legacy_util.MtaView("postfix", p.port,
                                   request.getfixturevalue("alice"), p.log)
    e = request.getfixturevalue("exim")
    return legacy_util.MtaView("exim", e.port, e.users["alice"], e.log)


@pytest.fixture
def mailbox(dovecot):
    """A fresh Dovecot user of this test only."""
    return dovecot.add_user()


@pytest.fixture
def recorder():
    r = mtlib.RecordingSMTP().start()
    yield r
    r.stop()


@pytest.fixture
def scripted():
    """scripted("imap") -> a started ScriptedBackend, stopped afterwards."""
    started = []

    def make(protocol, greeting=None):
        b = mtlib.ScriptedBackend(protocol, greeting=greeting).start()
        started.append(b)
        return b
    yield make
    for b in started:
        b.stop()


@pytest.fixture
def mtd(workdir, certs, binary):
    """mtd(**global_opts) -> an unstarted MailTLSD; stopped afterwards.

    Teardown fails the test when the daemon died on its own (a crash) or
    its log holds sanitizer findings.
    """
    made = []

    def make(**opts):
        m = mtlib.MailTLSD(workdir, certs, binary=binary,
                           name="mailtlsd%d" % len(made), **opts)
        made.append(m)
        return m
    yield make
    problems = []
    for m in made:
        if m.proc is None:
            continue
        died = not m.alive()
        rc = m.stop()
        if died and not m.expect_exit:
            problems.append("%s exited by itself with status %s:\n%s"
                            % (m.name, rc, mtlib.tail(m.log)))
        findings = m.sanitizer_reports()
        if findings:
            problems.append("%s sanitizer findings:\n%s\n%s"
                            % (m.name, "\n".join(findings[:20]),
                               mtlib.tail(m.log, 120)))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
