"""
benchlib - what the benchmarks in tools/bench share: access to the test
parties (tests/func/mtlib.py), the options every benchmark takes, its work
directory, the CPU time of a process, and mailtlsd started the way a
benchmark wants it.

Import it before mtlib: it puts tests/func on sys.path.
"""

import argparse
import os
import shutil
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "func"))
import mtlib  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Bound of every client socket operation, in seconds.
TIMEOUT = 120


def arg_parser(doc, size_mb):
    """The options every benchmark takes (the first paragraph of its doc
    string as the description); it may add its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--binary", help="mailtlsd (default: $MAILTLSD_BIN, "
                    "./mailtlsd, ...)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=size_mb)
    ap.add_argument("--max-seconds", type=int, default=170)
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory")
    return ap


def find_binary(prog, explicit):
    """The mailtlsd to measure (--binary, else where mtlib looks); exits
    when there is none."""
    binary = mtlib.find_binary(explicit, TOP)
    if binary is None:
        sys.exit("%s: mailtlsd binary not found (--binary)" % prog)
    return binary


def remove_workdir(work, keep):
    """At the end of a run: the work directory goes, unless --keep."""
    if keep:
        print("work directory kept: %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)


class Deadline(Exception):
    """The run's time budget (--max-seconds) is used up."""


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_mailtlsd(m, timeout=20.0):
    """mtlib runs the daemon with -d (debug logging); a benchmark should
    not, so it is started here at the log level of its configuration."""
    m.write_config()
    m.proc = mtlib.Process(m.name, [m.binary, "-c", m.conf], m.log,
                           env=mtlib.sanitizer_env())
    m.proc.start()
    want = {port for _, port, _ in m.services}
    mtlib.wait_until(m._listening(want), timeout, "mailtlsd listening")
