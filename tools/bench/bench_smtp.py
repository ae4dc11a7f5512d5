#!/usr/bin/python3
"""
bench_smtp.py - what mailtlsd's SMTP filter and TLS cost on a big message.

    sudo /usr/bin/python3 tools/bench/bench_smtp.py [--binary PATH]
        [--runs 5] [--size-mb 20] [--max-seconds 170] [--keep]

Starts a sink backend (a small SMTP server in a process of its own: it
reads DATA up to CRLF.CRLF, checksums it as it streams by, answers 250
with the byte count and the CRC-32, and keeps nothing), so that mailtlsd,
not the backend, is what limits.  Then mailtlsd (without -d, log level
notice) with three services in front of it: "smtps" (implicit TLS),
"submission" (STARTTLS, port 587 style) and "mx" (STARTTLS,
require_starttls = false, port 25 style).  smtplib sends a message of
--size-mb MB (10^6 bytes, base64 lines of 76 characters, like an
attachment) --runs times per case:

    direct            straight to the sink (the ceiling of client + sink)
    smtps             implicit TLS
    starttls          587 style, after STARTTLS
    plain             25 style, no TLS: the filter without TLS
    plain bare-LF     the same message with bare LF line ends: each one
    starttls bare-LF  is normalised to CRLF by mailtlsd (SPEC section 3)

Every message is checked: the sink's count and CRC-32 must be those of
the message (normalised, for the bare-LF cases).  Only DATA is timed (the
DATA command to the reply after the end of data); the message is
dot-quoted once beforehand.  Printed per case: median, min and max MB/s,
and the CPU milliseconds mailtlsd (utime + stime of all its threads, from
/proc/PID/stat) and this client spent per MB.

Needs root (the test PKI's keys are made readable by the daemon's group).
Exits 1 if a message does not arrive exactly.  Bounded: a deadline of
--max-seconds for the whole run; cases not reached are reported as such.
"""

import base64
import multiprocessing
import os
import re
import smtplib
import socket
import statistics
import sys
import threading
import time
import zlib

# benchlib puts tests/func on sys.path: it comes before mtlib.
import benchlib
from benchlib import TIMEOUT, Deadline, cpu_seconds, start_mailtlsd
import mtlib
from mtlib import HOST

TERM = b"\r\n.\r\n"


# ---------------------------------------------------------------------------
# The sink backend: blocking sockets in a process of its own, one thread
# per connection; DATA content is checksummed as it streams by (CRC-32 and
# length: cheap enough that the sink is never what limits).

class _SinkConn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def recv(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError
        return chunk

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > 65536:
                raise EOFError
            self.buf += self.recv()
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def content(self):
        """(length, crc32) of the bytes up to the lone dot line.  The CRLF
        of the DATA line counts as the CRLF before an immediate dot; it is
        held as `virt` bytes that are not content.  At most len(TERM) - 1
        bytes are held back between reads, as they may start the end."""
        held, virt = b"\r\n" + self.buf, 2
        self.buf = b""
        n, crc = 0, 0
        while True:
            i = held.find(TERM)
            if i >= 0:
                end = i + 2
                if end > virt:
                    crc = zlib.crc32(memoryview(held)[virt:end], crc)
                    n += end - virt
                self.buf = held[i + len(TERM):]
                return n, crc
            cut = len(held) - (len(TERM) - 1)
            if cut > virt:
                crc = zlib.crc32(memoryview(held)[virt:cut], crc)
                n += cut - virt
                held, virt = held[cut:], 0
            held += self.recv()

    def run(self):
        send = self.sock.sendall
        try:
            send(b"220 sink.example.test ESMTP sink\r\n")
            while True:
                verb = self.line()[:4].upper()
                if verb == b"EHLO":
                    send(b"250-sink.example.test\r\n250-PIPELINING\r\n"
                         b"250-8BITMIME\r\n250 SIZE 0\r\n")
                elif verb == b"DATA":
                    send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    n, crc = self.content()
                    send(b"250 2.0.0 Ok: %d bytes crc32=%08x\r\n"
                         % (n, crc))
                elif verb == b"QUIT":
                    send(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    send(b"250 2.0.0 Ok\r\n")
        except (EOFError, OSError):
            return
        finally:
            self.sock.close()


def _sink_main(lsock):
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=_SinkConn(conn).run, daemon=True).start()


class Sink:
    def __init__(self):
        self.port = None
        self.proc = None

    def start(self):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((HOST, 0))
        lsock.listen(16)
        self.port = lsock.getsockname()[1]
        self.proc = multiprocessing.Process(target=_sink_main,
                                            args=(lsock,), daemon=True)
        self.proc.start()
        lsock.close()           # the child holds the listening socket
        return self

    def stop(self):
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


# ---------------------------------------------------------------------------
# Messages and the client.

def make_body(size, bare_lf):
    """size bytes: headers, then base64 lines of 76 characters; the last
    line always ends in CRLF (smtplib would add one otherwise)."""
    eol = b"\n" if bare_lf else b"\r\n"
    head = (b"From: <bench@example.org>" + eol + b"To: <sink@example.net>" +
            eol + b"Subject: bench" + eol + eol)
    line_len = 76 + len(eol)
    nlines = max(1, (size - len(head)) // line_len)
    raw = base64.b64encode(os.urandom(nlines * 57))
    lines = [raw[i:i + 76] for i in range(0, len(raw), 76)]
    msg = head + eol.join(lines) + b"\r\n"
    return msg


def normalised(msg):
    return re.sub(rb"(?<!\r)\n", b"\r\n", msg)


def quoted(msg):
    """msg as it goes on the wire after DATA (RFC 5321 4.5.2), with the
    end of data; done once, outside the timed part."""
    return re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n"


def send_once(port, mode, ctx, wire):
    """One session through smtplib; DATA is sent with its low-level calls
    so that only the transfer is timed.  Returns (seconds, reply text)."""
    if mode == "smtps":
        s = smtplib.SMTP_SSL(HOST, port, context=ctx, timeout=TIMEOUT)
    else:
        s = smtplib.SMTP(HOST, port, timeout=TIMEOUT)
    try:
        if mode == "starttls":
            code, _ = s.starttls(context=ctx)
            if code != 220:
                raise mtlib.MtError("STARTTLS refused: %d" % code)
        s.ehlo("bench.example.org")
        for code, text in (s.mail("bench@example.org"),
                           s.rcpt("sink@example.net")):
            if code != 250:
                raise mtlib.MtError("%d %r" % (code, text))
        t0 = time.perf_counter()
        s.putcmd("data")
        code, text = s.getreply()
        if code != 354:
            raise mtlib.MtError("DATA: %d %r" % (code, text))
        s.send(wire)
        code, text = s.getreply()
        t1 = time.perf_counter()
        if code != 250:
            raise mtlib.MtError("end of DATA: %d %r" % (code, text))
        s.quit()
    finally:
        s.close()
    return t1 - t0, text


def run_case(label, port, mode, ctx, msg, expect, runs, daemon_pid,
             deadline):
    want = b"Ok: %d bytes crc32=%08x" % (len(expect), zlib.crc32(expect))
    wire = quoted(msg)
    times = []
    cpu0 = cpu_seconds(daemon_pid)
    client0 = time.process_time()
    for _ in range(runs):
        if time.monotonic() > deadline:
            raise Deadline("time budget used up during %s" % label)
        secs, text = send_once(port, mode, ctx, wire)
        if want not in text:
            raise mtlib.MtError("%s: the sink got something else: %r"
                                % (label, text))
        times.append(secs)
    mb = len(msg) * runs / 1e6
    cpu = cpu_seconds(daemon_pid) - cpu0
    client = time.process_time() - client0
    rates = sorted(len(msg) / t / 1e6 for t in times)
    return (label, statistics.median(rates), rates[0], rates[-1],
            cpu * 1000 / mb, client * 1000 / mb)


def main():
    ap = benchlib.arg_parser(__doc__, 20)
    args = ap.parse_args()
    deadline = time.monotonic() + args.max_seconds
    binary = benchlib.find_binary("bench_smtp", args.binary)
    if os.geteuid() != 0:
        sys.exit("bench_smtp: needs root (the daemon drops to nobody)")

    work = mtlib.make_workdir(prefix="mailtlsd-bench-")
    sink = daemon = None
    failed = False
    try:
        certs = mtlib.Certs(os.path.join(work, "certs"))
        ctx = certs.client_context()
        sink = Sink().start()
        daemon = mtlib.MailTLSD(work, certs, binary=binary,
                                log_level="notice")
        ports = {
            "smtps": daemon.add_service("smtps", "smtp", [sink.port]),
            "submission": daemon.add_service("submission", "smtp",
                                             [sink.port],
                                             tls_mode="starttls"),
            "mx": daemon.add_service("mx", "smtp", [sink.port],
                                     tls_mode="starttls",
                                     require_starttls=False),
        }
        start_mailtlsd(daemon)
        size = args.size_mb * 1000000
        crlf = make_body(size, bare_lf=False)
        bare = make_body(size, bare_lf=True)
        cases = [
            ("direct", sink.port, "plain", crlf, crlf),
            ("smtps", ports["smtps"], "smtps", crlf, crlf),
            ("starttls", ports["submission"], "starttls", crlf, crlf),
            ("plain", ports["mx"], "plain", crlf, crlf),
            ("plain bare-LF", ports["mx"], "plain", bare, normalised(bare)),
            ("starttls bare-LF", ports["submission"], "starttls", bare,
             normalised(bare)),
        ]
        print("mailtlsd %s; message %d bytes (%d bare LFs in the bare-LF "
              "cases), %d runs per case"
              % (binary, len(crlf), bare.count(b"\n") - 1, args.runs))
        print("%-18s %9s %9s %9s %16s %16s" % (
            "case", "MB/s med", "min", "max", "mailtlsd ms/MB",
            "client ms/MB"))
        for label, port, mode, msg, expect in cases:
            try:
                row = run_case(label, port, mode, ctx, msg, expect,
                               args.runs, daemon.pid, deadline)
            except Deadline as e:
                print("%-18s not run: %s" % (label, e))
                continue
            print("%-18s %9.1f %9.1f %9.1f %16.2f %16.2f" % row)
            sys.stdout.flush()
        if not daemon.alive():
            raise mtlib.MtError("mailtlsd exited:\n" + mtlib.tail(daemon.log))
    except mtlib.MtError as e:
        print("bench_smtp: %s" % e, file=sys.stderr)
        failed = True
    finally:
        if daemon is not None:
            daemon.stop()
        if sink is not None:
            sink.stop()
        benchlib.remove_workdir(work, args.keep)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
