"""
tools/demo.py, the Quick start's launcher: however it is stopped (Ctrl-C,
SIGTERM from a supervisor, SIGHUP when its terminal closes), it stops
mailtlsd and the Dovecot and Postfix instances it started, and leaves no
process behind.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import mtlib

TOOLS = os.path.join(os.environ.get("MAILTLSD_SRCDIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tools")


def _descendants(root):
    """PIDs of every process below root, with their start times (so a
    reused PID is not taken for one of ours)."""
    parent, start = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(fields[1])
        start[int(d)] = fields[19]
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in found:
                found[c] = start[c]
                todo.append(c)
    return found


def _alive(procs):
    """Those of procs ({pid: start time}) still running."""
    left = []
    for pid, st in procs.items():
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == st and fields[0] != "Z":
            left.append(pid)
    return left


def _free_offset():
    """A port offset at which all six demo ports are free."""
    for _ in range(50):
        # Below the ephemeral range (32768+), where free_port() and every
        # outgoing connection of the suite take theirs.
        off = 5000 + (os.getpid() * 7 + int(time.time() * 1000)) % 16000
        if not any(mtlib.port_accepts(p + off) for p in
                   (10465, 10993, 10995, 10587, 10143, 10110)):
            return off
        time.sleep(0.01)
    pytest.skip("no free port offset for the demo")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM,
                                 signal.SIGINT])
def test_demo_cleans_up_on_signal(workdir, binary, sig):
    # Short: Dovecot's unix sockets live below it (108-byte sun_path).
    state = tempfile.mkdtemp(prefix="mtdemo", dir="/tmp")
    os.chmod(state, 0o755)
    off = _free_offset()
    log = open(os.path.join(workdir, "demo.out"), "wb")
    children = {}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(TOOLS, "demo.py"), "--binary", binary,
         "--state-dir", state, "--port-offset", str(off)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        mtlib.wait_until(
            lambda: proc.poll() is not None or b"demo is running" in
            open(log.name, "rb").read(), 120, "the demo running")
        assert proc.poll() is None, open(log.name, "rb").read()[-2000:]
        children = _descendants(proc.pid)
        assert len(children) >= 3, "demo backends not found"
        proc.send_signal(sig)
        proc.wait(90)
        mtlib.wait_until(lambda: not _alive(children), 30,
                         "the demo's processes gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in _alive(children):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        log.close()
        shutil.rmtree(state, ignore_errors=True)
    out = open(log.name, "rb").read()
    assert b"stopping the demo backends" in out, out[-2000:]
