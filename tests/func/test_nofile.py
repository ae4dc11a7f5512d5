"""
Issue 10 item 7: the open files limit.  With the shipped max_connections
(20000, two descriptors a session plus a reserve of 32), mailtlsd raises
its soft RLIMIT_NOFILE to what that needs, up to the hard limit, and warns
only when even the hard limit is too low.  Started under prlimit(1) from
util-linux, which execs the daemon in place (same PID), so that
/proc/PID/limits is the daemon's.  Raising a hard limit needs
CAP_SYS_RESOURCE; a container without it (hard limit 20000 here) runs the
same checks with a max_connections that fits under its hard limit.
"""

import os
import re
import resource
import shutil
import stat
import subprocess

import pytest

import mtlib

WANT = 20000 * 2 + 32       # DEFAULT_MAX_CONNECTIONS * 2 + FD_RESERVE


def _need():
    if os.geteuid() != 0:
        pytest.skip("raising a hard limit needs root")
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")


def _room():
    """(hard limit to start under, max_connections to set or None for the
    shipped default, descriptors that needs)."""
    hard = WANT + 10000
    if subprocess.run([shutil.which("prlimit"), "--nofile=1024:%d" % hard,
                       "--", "true"], stderr=subprocess.DEVNULL,
                      timeout=10).returncode == 0:
        return hard, None, WANT
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    mc = (hard - 32) // 2 - 500
    if mc < 100:
        pytest.skip("hard open files limit %d too low to test" % hard)
    return hard, mc, mc * 2 + 32


def _daemon(mtd, dovecot, workdir, soft, hard, max_connections=None):
    wrapper = os.path.join(workdir, "prlimit-%d-%d.sh" % (soft, hard))
    m = mtd() if max_connections is None else mtd(
        max_connections=max_connections)
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec %s --nofile=%d:%d -- %s \"$@\"\n"
                % (shutil.which("prlimit"), soft, hard, m.binary))
    os.chmod(wrapper, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP |
             stat.S_IROTH | stat.S_IXOTH)
    m.binary = wrapper
    m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    return m


def _limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = re.split(r"\s{2,}", line.strip())[1:3]
                return int(soft), int(hard)
    raise AssertionError("no open files line in /proc/%d/limits" % pid)


def test_soft_limit_raised_to_what_the_configuration_needs(mtd, dovecot,
                                                          workdir):
    _need()
    hard, mc, want = _room()
    m = _daemon(mtd, dovecot, workdir, 1024, hard, mc)
    m.wait_log(r"mailtlsd \S+ started")
    assert _limits(m.pid) == (want, hard)
    m.wait_log(r"open files limit raised from 1024 to %d" % want)
    assert "is below what max_connections" not in m.log_text()


def test_warning_when_the_hard_limit_is_too_low(mtd, dovecot, workdir):
    _need()
    m = _daemon(mtd, dovecot, workdir, 256, 4096)
    m.wait_log(r"open files limit 4096 \(hard limit 4096\) is below what "
               r"max_connections 20000 needs \(%d\); connections beyond "
               r"it wait" % WANT)
    assert _limits(m.pid) == (4096, 4096)


def test_enough_already_is_left_alone(mtd, dovecot, workdir):
    _need()
    hard, mc, want = _room()
    m = _daemon(mtd, dovecot, workdir, hard, hard, mc)
    m.wait_log(r"mailtlsd \S+ started")
    assert _limits(m.pid) == (hard, hard)
    assert "open files limit" not in m.log_text()
