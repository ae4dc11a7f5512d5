"""
smtp_util - helpers of the SMTP STARTTLS tests (test_smtp_starttls.py).

Owns: a scripted SMTP backend with a configurable EHLO reply that can hold
its answer to one verb until the test releases it (so that a test can act
while mailtlsd waits for a reply), a parser of what a backend received into
command lines, a reader of the lines a log file gained since a mark and
of the command counts Postfix logs per session, and a sender of one TCP
segment that waits, through the kernel's socket queues, until mailtlsd has
read it (instead of sleeping).

Invariants: every wait is bounded; nothing here starts a process.
"""

import socket
import threading

import mtlib


class GatedSMTPBackend(mtlib.ScriptedBackend):
    """mtlib's scripted SMTP backend with a chosen EHLO reply and a gate.

    ehlo: the raw EHLO reply (bytes, CRLF lines).  hold: a verb (bytes,
    upper case) whose reply is held until release() once `seen` is set:
    mailtlsd then has a command pending at the backend.
    """

    def __init__(self, ehlo=None, greeting=None, hold=None):
        super().__init__("smtp", greeting=greeting)
        self.ehlo = ehlo
        self.hold = hold
        self.seen = threading.Event()
        self._release = threading.Event()

    def release(self):
        self._release.set()

    def _answer(self, line):
        verb = line.split(b" ")[0].upper()
        if self.hold is not None and verb == self.hold and \
                not self._release.is_set():
            self.seen.set()
            # Bounded: a test that never releases still ends.
            self._release.wait(30)
        if verb == b"EHLO" and self.ehlo is not None:
            return self.ehlo, False, False
        return super()._answer(line)


def commands(raw):
    """The command lines in raw bytes a backend received, DATA skipped.

    Content between a DATA line and the lone dot is left out, so that the
    list is what the backend would execute as commands.
    """
    out = []
    in_data = False
    for line in raw.split(b"\r\n")[:-1]:
        if in_data:
            if line == b".":
                in_data = False
            continue
        out.append(line)
        if line.upper() == b"DATA":
            in_data = True
    return out


def reply_lines(reply):
    """The lines of a multi-line reply, without their CRLF."""
    return [l for l in reply.split(b"\r\n") if l]


class LogMark(mtlib.LogMark):
    """What a log file gained since the mark was taken."""

    def wait(self, pattern, timeout=20.0):
        """Wait until a line since the mark contains pattern; return it."""
        def look():
            for line in self.text().splitlines():
                if pattern in line:
                    return line
            return None
        return mtlib.wait_until(look, timeout, "%r in %s" % (pattern,
                                                              self.path),
                                interval=0.1)


def _queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the socket 127.0.0.1:local_port connected to
    127.0.0.1:remote_port, or None when there is none.  For an established
    socket tx_queue is what the peer has not acknowledged yet, rx_queue
    what the application has not read yet."""
    want_local = "0100007F:%04X" % local_port
    want_remote = "0100007F:%04X" % remote_port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def send_segment(conn, data, timeout=10.0):
    """Send data as a segment of its own and wait until the server end of
    the connection has read it.

    Nagle's algorithm would hold a small segment back while earlier bytes
    are unacknowledged, so it is turned off.  Read means: the server's
    kernel acknowledged every byte (the client's tx_queue is empty) and the
    server process took them out of its receive queue.
    """
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.send(data)
    local = conn.sock.getsockname()[1]
    remote = conn.sock.getpeername()[1]

    def read():
        client = _queues(local, remote)
        server = _queues(remote, local)
        return client is not None and server is not None and \
            client[0] == 0 and server[1] == 0
    mtlib.wait_until(read, timeout, "the server to read %d bytes"
                     % len(data), interval=0.01)


def postfix_counts(line):
    """Postfix's per-session command counts from its "disconnect from"
    line ("ehlo=1 mail=1 ... commands=5"), without the total.  A count
    with failures ("auth=0/1") stays a string, so it never equals an int."""
    counts = {}
    for word in line.split():
        key, eq, value = word.partition("=")
        if eq and key.isalpha() and key != "commands":
            counts[key] = int(value) if value.isdigit() else value
    return counts
