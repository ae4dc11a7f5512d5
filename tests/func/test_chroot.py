"""
chroot: after binding and loading keys the daemon confines itself to the
jail; established service goes on; a reload reads the configuration and
certificates at the same paths inside the jail, and -t says which of
them are missing there.
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

import mtlib
from mtlib import Conn


@pytest.fixture
def jailed_env(monkeypatch):
    """LeakSanitizer needs /proc and report files need their directory:
    neither exists in the jail, so sanitized builds report to stderr (the
    log the suite scans) and skip the leak check for this daemon only."""
    plain = mtlib.sanitizer_env

    def env():
        e = plain()
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            opts = [o for o in e.get(var, "").split(":")
                    if o and not o.startswith("log_path=")]
            if var == "ASAN_OPTIONS":
                opts.append("detect_leaks=0")
            e[var] = ":".join(opts)
        return e
    monkeypatch.setattr(mtlib, "sanitizer_env", env)


def _into_jail(jail, path):
    dst = jail + path
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(path, dst)
    st = os.stat(path)
    os.chown(dst, st.st_uid, st.st_gid)


def test_chroot_confines_and_reloads_inside(mtd, dovecot, mailbox, certs,
                                           workdir, binary, jailed_env):
    jail = os.path.join(workdir, "jail")
    os.makedirs(jail)
    os.chmod(jail, 0o755)
    m = mtd(chroot=jail)
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    assert os.readlink("/proc/%d/root" % m.pid) == jail
    m.wait_log(r"chrooted to " + re.escape(jail))

    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
        c.send(b'a LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                           mailbox.password.encode()))
        assert b"a OK" in c.tagged(b"a")

        # -t names what a reload would not find inside the jail.
        p = subprocess.run([binary, "-t", "-c", m.conf], timeout=30,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = p.stdout.decode()
        assert p.returncode == 0, out
        assert ("warning: chroot: %s is not in the jail" % m.conf) in out
        assert ("warning: chroot: %s is not in the jail" % certs.rsa_key) \
            in out

        # A reload without them fails and keeps the running configuration.
        os.kill(m.pid, signal.SIGHUP)
        m.wait_log(r"reload failed, keeping the running configuration")
        c.send(b"n NOOP\r\n")
        assert b"n OK" in c.tagged(b"n")

    # With copies at the same paths inside, the reload succeeds.
    for path in [m.conf] + [p for tls in m.tls_sections
                            for pair in tls[1] for p in pair]:
        _into_jail(jail, path)
    os.kill(m.pid, signal.SIGHUP)
    m.wait_log(r"configuration reloaded")
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")


def test_chroot_must_be_a_directory(mtd, dovecot, workdir, binary):
    m = mtd(chroot=os.path.join(workdir, "missing"))
    m.add_service("imaps", "imap", [dovecot.imap_port])
    m.write_config()
    p = subprocess.run([binary, "-t", "-c", m.conf], timeout=30,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 1
    assert "error: chroot %s is not a directory" % os.path.join(
        workdir, "missing") in p.stdout.decode()
