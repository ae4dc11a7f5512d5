#!/usr/bin/python3
"""
bench_imap.py - what mailtlsd's IMAP/POP3 filter costs on a big message.

    sudo /usr/bin/python3 tools/bench/bench_imap.py [--binary PATH]
        [--runs 5] [--size-mb 50] [--perf] [--keep]

Starts a private Dovecot (tests/func/mtlib.py) holding one message of
--size-mb MB, and mailtlsd (without -d, log level notice) with four
services in front of it: imaps, imap (STARTTLS), pop3s, pop3 (STLS).  Then
fetches the message --runs times per case:

    imap direct     imaplib FETCH BODY.PEEK[] straight from Dovecot
    imap imaps      the same through the implicit-TLS service
    imap 143        the same through the STARTTLS service, after STARTTLS
    pop3 direct     RETR straight from Dovecot (a raw socket reader:
    pop3 pop3s      poplib's line-by-line reading would measure Python)
    pop3 110        RETR through the STLS service, after STLS

Every fetch is checked byte-exact (SHA-256 of the literal, or of the
unstuffed RETR body).  Only the transfer is timed (FETCH/RETR sent until
its last byte read); login and handshakes are not.  Printed per case: the
median, min and max throughput in MB/s (10^6 bytes), and the CPU seconds
mailtlsd (utime + stime of all its threads, from /proc/PID/stat) and this
client spent per 100 MB.  The session never switches to a plain byte
relay after authentication (SPEC section 3: the ID and XCLIENT rules hold
inside TLS too), so the filter's parsing is in every byte measured here.

With --perf, mailtlsd is also sampled with perf record during each
proxied case, and the samples are split into: the protocol filters
(imap_*, pop3_*, lineio_* symbols), the rest of mailtlsd (session, relay),
libevent, OpenSSL, libc (mostly memcpy) and the kernel (socket I/O).  The
filter share is the most a switch to a plain byte relay could save.

Needs root (Dovecot; perf).  Exits 1 if a fetch is not byte-exact.
Bounded: a deadline of --max-seconds (default 170) for the whole run.
"""

import hashlib
import imaplib
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

# benchlib puts tests/func on sys.path: it comes before mtlib.
import benchlib
from benchlib import TIMEOUT, Deadline, cpu_seconds, start_mailtlsd
import mtlib
from mtlib import HOST


# ---------------------------------------------------------------------------
# Clients: each returns (seconds of the transfer, client CPU seconds of the
# transfer, sha256 of the message).

def imap_fetch(port, mode, ctx, user):
    if mode == "imaps":
        m = imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx, timeout=TIMEOUT)
    else:
        m = imaplib.IMAP4(HOST, port, timeout=TIMEOUT)
        if mode == "starttls":
            m.starttls(ssl_context=ctx)
    try:
        m.login(user.name, user.password)
        m.select("INBOX", readonly=True)
        t0, c0 = time.perf_counter(), time.process_time()
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        t1, c1 = time.perf_counter(), time.process_time()
        if typ != "OK":
            raise mtlib.MtError("FETCH failed: %r" % (data,))
        body = data[0][1]
    finally:
        m.logout()
    return t1 - t0, c1 - c0, hashlib.sha256(body).hexdigest()


def _pop3_line(sock, buf):
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise mtlib.MtError("POP3 server closed")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    del buf[:len(line) + 2]
    if not line.startswith(b"+OK"):
        raise mtlib.MtError("POP3: %r" % line)
    return line


def pop3_fetch(port, mode, ctx, user):
    sock = socket.create_connection((HOST, port), TIMEOUT)
    buf = bytearray()
    try:
        if mode == "pop3s":
            sock = ctx.wrap_socket(sock, server_hostname=HOST)
        _pop3_line(sock, buf)
        if mode == "starttls":
            sock.sendall(b"STLS\r\n")
            _pop3_line(sock, buf)
            sock = ctx.wrap_socket(sock, server_hostname=HOST)
        sock.sendall(b"USER %s\r\nPASS %s\r\n" % (user.name.encode(),
                                                  user.password.encode()))
        _pop3_line(sock, buf)
        _pop3_line(sock, buf)
        t0, c0 = time.perf_counter(), time.process_time()
        sock.sendall(b"RETR 1\r\n")
        _pop3_line(sock, buf)
        while not buf.endswith(b"\r\n.\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise mtlib.MtError("POP3 server closed during RETR")
            buf += chunk
        t1, c1 = time.perf_counter(), time.process_time()
        sock.sendall(b"QUIT\r\n")
    finally:
        sock.close()
    body = bytes(buf[:-3])
    lines = body.split(b"\r\n")
    body = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)
    return t1 - t0, c1 - c0, hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------------------

def run_case(label, fetch, port, mode, ctx, user, runs, size, digest,
             daemon_pid, deadline, perf_dir=None):
    times, client = [], 0.0
    prof = None
    if perf_dir is not None and mode != "plain":
        prof = Profile(daemon_pid, os.path.join(perf_dir, mode + ".data"))
    cpu0 = cpu_seconds(daemon_pid)
    try:
        for _ in range(runs):
            if time.monotonic() > deadline:
                raise Deadline("time budget used up during %s" % label)
            secs, ccpu, got = fetch(port, mode, ctx, user)
            if got != digest:
                raise mtlib.MtError("%s: message not byte-exact" % label)
            times.append(secs)
            client += ccpu
    finally:
        cpu = cpu_seconds(daemon_pid) - cpu0
        shares = prof.stop() if prof is not None else None
    per100 = 100e6 / (size * runs)
    rates = sorted(size / t / 1e6 for t in times)
    return (label, statistics.median(rates), rates[0], rates[-1],
            cpu * per100, client * per100, shares)


# ---------------------------------------------------------------------------
# Optional: where mailtlsd's CPU goes (perf record on the daemon).

# Symbols of the protocol filters and the line reader they use.
FILTER_PREFIXES = ("imap_", "pop3_", "lineio_")


class Profile:
    """perf record -p PID for one case; stop() returns the shares of the
    samples: {category: percent}."""

    def __init__(self, pid, path):
        self.path = path
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-F", "999", "-p", str(pid), "-o", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)         # perf attaches asynchronously

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None
        p = subprocess.run(["perf", "report", "-i", self.path, "--stdio",
                            "--no-children", "--sort", "dso,sym",
                            "--percent-limit", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           timeout=120)
        shares = {}
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            f = line.split()
            if len(f) < 4 or not f[0].endswith("%") or line.startswith("#"):
                continue
            pct, dso, sym = float(f[0][:-1]), f[1], f[3]
            if sym.startswith(FILTER_PREFIXES):
                cat = "filter"
            elif dso == "mailtlsd":
                cat = "mtd-other"
            elif "libcrypto" in dso or "libssl" in dso:
                cat = "OpenSSL"
            elif "libevent" in dso:
                cat = "libevent"
            elif dso.startswith("libc"):
                cat = "libc"
            elif "kernel" in dso:
                cat = "kernel"
            else:
                cat = "other"
            shares[cat] = shares.get(cat, 0.0) + pct
        return shares


# ---------------------------------------------------------------------------

def main():
    ap = benchlib.arg_parser(__doc__, 50)
    ap.add_argument("--perf", action="store_true",
                    help="also sample mailtlsd with perf record and show "
                    "which share of its CPU the filters take")
    args = ap.parse_args()
    start = time.monotonic()
    deadline = start + args.max_seconds
    binary = benchlib.find_binary("bench_imap", args.binary)
    if os.geteuid() != 0:
        sys.exit("bench_imap: needs root (a private Dovecot instance)")

    work = mtlib.make_workdir(prefix="mailtlsd-bench-")
    dovecot = daemon = None
    try:
        certs = mtlib.Certs(os.path.join(work, "certs"))
        dovecot = mtlib.Dovecot(work)
        user = dovecot.add_user("bench")
        msg = mtlib.make_message(mtlib.token(), size=args.size_mb * 1000000)
        digest = hashlib.sha256(msg).hexdigest()
        user.deliver(msg, seen=True)
        dovecot.start()
        daemon = mtlib.MailTLSD(work, certs, binary=binary,
                                log_level="notice")
        ports = {
            "imaps": daemon.add_service("imaps", "imap",
                                        [dovecot.imap_port]),
            "imap": daemon.add_service("imap", "imap", [dovecot.imap_port],
                                       tls_mode="starttls"),
            "pop3s": daemon.add_service("pop3s", "pop3",
                                        [dovecot.pop3_port]),
            "pop3": daemon.add_service("pop3", "pop3", [dovecot.pop3_port],
                                       tls_mode="starttls"),
        }
        start_mailtlsd(daemon)
        ctx = certs.client_context()
        cases = [
            ("imap direct", imap_fetch, dovecot.imap_port, "plain"),
            ("imap imaps", imap_fetch, ports["imaps"], "imaps"),
            ("imap 143 STARTTLS", imap_fetch, ports["imap"], "starttls"),
            ("pop3 direct", pop3_fetch, dovecot.pop3_port, "plain"),
            ("pop3 pop3s", pop3_fetch, ports["pop3s"], "pop3s"),
            ("pop3 110 STLS", pop3_fetch, ports["pop3"], "starttls"),
        ]
        # One untimed fetch per path warms Dovecot's cache and indexes.
        for label, fetch, port, mode in cases:
            fetch(port, mode, ctx, user)
        perf_dir = work if args.perf else None
        rows = [run_case(label, fetch, port, mode, ctx, user, args.runs,
                         len(msg), digest, daemon.pid, deadline, perf_dir)
                for label, fetch, port, mode in cases]
    except (Deadline, mtlib.MtError, OSError, imaplib.IMAP4.error,
            ssl.SSLError, subprocess.SubprocessError) as e:
        print("bench_imap: %s" % e, file=sys.stderr)
        if daemon is not None:
            print(mtlib.tail(daemon.log, 20), file=sys.stderr)
        return 1
    finally:
        if daemon is not None and daemon.proc is not None:
            daemon.stop()
        if dovecot is not None:
            dovecot.stop()
        benchlib.remove_workdir(work, args.keep)

    print("mailtlsd %s" % binary)
    print("message %.1f MB, %d timed fetches per case, %d CPUs, %.0f s"
          % (len(msg) / 1e6, args.runs, os.cpu_count(),
             time.monotonic() - start))
    print("%-20s %9s %9s %9s %16s %16s" % ("case", "MB/s med", "min", "max",
                                           "mailtlsd CPU s", "client CPU s"))
    print("%-20s %9s %9s %9s %16s %16s" % ("", "", "", "", "per 100 MB",
                                           "per 100 MB"))
    for label, med, lo, hi, cpu, client, _ in rows:
        print("%-20s %9.1f %9.1f %9.1f %16.3f %16.3f"
              % (label, med, lo, hi, cpu, client))
    cats = ("filter", "mtd-other", "libevent", "OpenSSL", "libc",
            "kernel", "other")
    if any(r[6] for r in rows):
        print("\nmailtlsd CPU samples by part (perf, %):")
        print("%-20s" % "case" + "".join("%10s" % c for c in cats))
        for r in rows:
            if r[6]:
                print("%-20s" % r[0] + "".join("%10.1f" % r[6].get(c, 0.0)
                                               for c in cats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
