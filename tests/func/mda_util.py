"""
mda_util - parties and fixtures of the IMAP/POP3 (MDA-side) functional
tests (test_mda_starttls.py).

Owns: a Dovecot configured so that what mailtlsd must prevent is visible in
its log (every authentication attempt logged; the proxy's network trusted,
so a forged ID x-originating-ip or POP3 XCLIENT would change the client
address Dovecot logs; COMPRESS offered), a recording TCP relay between
mailtlsd and a backend (the exact bytes that reached the backend), a
scripted IMAP/POP3 backend (on mtlib's) whose replies a test chooses (including held
replies, for deterministic pipelining), the test messages (one holding
lines that look like IMAP/POP3 commands, responses and literal markers,
one of several MB), and runners for fetchmail and openssl s_client.

Invariants (as in mtlib): every wait is bounded; every thread and process
started here is stopped here; every file lives under the caller's work
directory.
"""

import os
import re
import socket
import subprocess
import threading

import mtlib
from mtlib import HOST, MtError

# ---------------------------------------------------------------------------
# Dovecot

# Appended to mtlib's plaintext Dovecot configuration.
DOVECOT_EXTRA = """
# mda_util: make refused credentials and forged proxy facts observable.
# Every authentication attempt is logged with its user name.
auth_verbose = yes
# A backend that trusts its proxy (what the SPEC's ID and XCLIENT rules are
# for): clients on this network may set the address Dovecot logs and uses,
# through IMAP ID x-originating-ip or POP3 XCLIENT.
login_trusted_networks = 127.0.0.0/8
# COMPRESS=DEFLATE offered after login, so that hiding it is observable.
mail_plugins = $mail_plugins zlib
protocol imap {
  mail_plugins = $mail_plugins imap_zlib
}
# IDLE notifications without waiting for the default 30 s poll.
mailbox_idle_check_interval = 1 secs
"""


def mda_dovecot(workdir):
    """An unstarted Dovecot of our own (a separate instance and log)."""
    return mtlib.Dovecot(workdir, extra_conf=DOVECOT_EXTRA,
                         subdir="dovecot-mda")


class LogWatch(mtlib.LogMark):
    """What a log file gained since this object was made."""

    def wait(self, pattern, timeout=15.0):
        rx = re.compile(pattern)
        return wait_until_match(rx, self.text, timeout,
                                "/%s/ in %s" % (pattern, self.path))


def wait_until_match(rx, text_fn, timeout, what):
    return mtlib.wait_until(lambda: rx.search(text_fn()), timeout, what,
                            interval=0.1)


# ---------------------------------------------------------------------------
# A recording relay: client side <-> backend, every byte the backend got.

class RelayConn:
    def __init__(self):
        self.up = bytearray()       # towards the backend
        self.down = 0               # bytes towards the client (counted)
        self.closed = threading.Event()


class RecordingRelay:
    """A loopback TCP relay in front of backend_port.

    Keeps every byte sent to the backend (up) and counts the bytes coming
    back; one thread per direction, so back-pressure on one side never
    stalls the other.
    """

    def __init__(self, backend_port, name="relay"):
        self.backend_port = backend_port
        self.port = mtlib.free_port()
        self.name = "%s-%d" % (name, self.port)
        self.conns = []
        self._lock = threading.Lock()
        self._socks = []
        self._stop = threading.Event()
        self._lsock = None
        self._threads = []

    def start(self):
        self._lsock = mtlib.listen(self.port)
        t = threading.Thread(target=self._accept_loop, daemon=True,
                             name=self.name)
        t.start()
        self._threads.append(t)
        mtlib.register_log(self.name, self.describe)
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for s in socks:
            s.close()
        if self._lsock is not None:
            self._lsock.close()
        mtlib.unregister_log(self.name)

    def received(self):
        """All bytes that reached the backend, over every connection."""
        with self._lock:
            return b"".join(bytes(c.up) for c in self.conns)

    def wait_closed(self, timeout=15.0):
        mtlib.wait_until(lambda: all(c.closed.is_set() for c in self.conns),
                         timeout, "%s connections closed" % self.name)

    def describe(self):
        with self._lock:
            return "\n".join("-- connection %d: up %r, down %d bytes"
                             % (i, bytes(c.up[:3000]), c.down)
                             for i, c in enumerate(self.conns))

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                backend = socket.create_connection((HOST, self.backend_port),
                                                   10)
            except OSError:
                client.close()
                continue
            conn = RelayConn()
            with self._lock:
                self.conns.append(conn)
                self._socks += [client, backend]
            done = []
            for src, dst, up in ((client, backend, True),
                                 (backend, client, False)):
                t = threading.Thread(target=self._pump,
                                     args=(src, dst, conn, up, done),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src, dst, conn, up, done):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                if up:
                    with self._lock:
                        conn.up += data
                else:
                    conn.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            done.append(up)
            if len(done) == 2:
                conn.closed.set()


# ---------------------------------------------------------------------------
# A scripted IMAP/POP3 backend with replies chosen by the test.

class ScriptBackend(mtlib.ScriptedBackend):
    """mtlib's scripted line backend, answering each CRLF line with
    answer(line) -> bytes.

    answer may return None to close, or a threading.Event-guarded reply as
    (event, bytes): the reply is held until the test sets the event (used to
    keep a command pending while the client pipelines behind it).  Every
    received byte is recorded (all_received()), every line answered in
    lines.
    """

    def __init__(self, greeting, answer):
        super().__init__(None, greeting=greeting)
        self.answer = answer
        self.lines = []

    def wait_line(self, line, timeout=15.0):
        mtlib.wait_until(lambda: line in self.lines, timeout,
                         "backend to receive %r" % line)

    def _answer(self, line):
        with self._lock:
            self.lines.append(line)
        reply = self.answer(line)
        if isinstance(reply, tuple):
            event, reply = reply
            if not event.wait(30):
                reply = None
        if reply is None:
            return b"", False, True
        return reply, False, False


# ---------------------------------------------------------------------------
# Test messages.

def tricky_message(tok):
    """A message whose lines look like protocol elements.

    If mailtlsd ever parsed message text as commands or responses, these
    lines would be rewritten (capability lists), taken as completions (a
    tag), literal markers (a count of bytes to skip), a POP3 end of
    multi-line reply, or a STARTTLS/STLS go-ahead.
    """
    headers = [
        "From: Sender <sender@example.org>",
        "To: <alice@%s>" % mtlib.MAIL_DOMAIN,
        "Subject: protocol look-alikes %s" % tok,
        "Message-ID: <%s.tricky@example.org>" % tok,
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        "X-Mt-Token: %s" % tok,
    ]
    body = [
        "token %s" % tok,
        "a1 OK LOGIN completed",
        "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED",
        "* OK [CAPABILITY IMAP4rev1 STARTTLS SASL-IR] fake greeting",
        "a2 OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] fake",
        "* PREAUTH fake",
        "t1 OK Begin TLS negotiation now",
        "a STARTTLS",
        "b LOGIN alice secret",
        "c AUTHENTICATE PLAIN",
        "d ID (\"x-originating-ip\" \"192.0.2.66\")",
        "* 1 FETCH (BODY[] {5}",
        "{5}",
        "x APPEND INBOX {12+}",
        "+ Ready for literal data",
        "+ idling",
        "DONE",
        ")",
        "+OK",
        "+OK Begin TLS negotiation",
        "-ERR [AUTH] fake",
        ".",
        "..",
        "...",
        ". ",
        ".\tx",
        "STLS",
        "CAPA",
        "USER alice",
        "PASS secret",
        "XCLIENT ADDR=192.0.2.66",
        "* BYE fake",
        "last line",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) +
            "\r\n").encode()


def make_messages(size_big=4 << 20):
    """{name: bytes}: a plain one, the look-alikes, one of several MB."""
    tok = mtlib.token()
    return {
        "plain": mtlib.make_message(tok + "p"),
        "tricky": tricky_message(tok + "t"),
        "big": mtlib.make_message(tok + "b", size=size_big),
    }


def pop3_unstuff(body):
    """A RETR/TOP body (without its status line and final dot line) back
    to the message: RFC 1939 byte-stuffing removed."""
    assert body.endswith(b"\r\n") or body == b""
    lines = body.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


# ---------------------------------------------------------------------------
# Clients: fetchmail, openssl s_client.

class Fetchmail:
    """fetchmail run once, non-interactively, delivering to files.

    STARTTLS is required (sslproto tls1.2+ and sslcertck, trusting only the
    test CA); "invisible" keeps it from adding a Received header and
    "no rewrite" from touching addresses, so what it delivers is the
    message as served, with LF line ends (it hands an MDA Unix text).
    """

    def __init__(self, workdir, certs):
        self.dir = os.path.join(workdir, "fetchmail")
        self.out = os.path.join(self.dir, "out")
        os.makedirs(self.out, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.mda = os.path.join(self.dir, "mda.sh")
        with open(self.mda, "w") as f:
            f.write('#!/bin/sh\nexec cat > "$(mktemp %s/msg.XXXXXX)"\n'
                    % self.out)
        os.chmod(self.mda, 0o755)
        self.certs = certs

    def run(self, protocol, port, user, password, timeout=120):
        """Fetch everything (kept on the server); return (status, log)."""
        rc = os.path.join(self.dir, "fetchmailrc")
        with open(rc, "w") as f:
            f.write('set invisible\nset no syslog\n'
                    'poll localhost service %d protocol %s\n'
                    '  user "%s" there with password "%s" is "root" here\n'
                    '  sslproto "tls1.2+" sslcertck sslcertfile "%s"\n'
                    '  keep fetchall no rewrite\n  mda "%s"\n'
                    % (port, protocol, user, password, self.certs.ca,
                       self.mda))
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=self.dir, HOME=self.dir)
        p = subprocess.run(["fetchmail", "-f", rc, "-v", "--nodetach"],
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def delivered(self):
        out = []
        for n in sorted(os.listdir(self.out)):
            with open(os.path.join(self.out, n), "rb") as f:
                out.append(f.read())
        return out


def s_client_starttls(certs, port, proto, stdin, timeout=60):
    """openssl s_client -starttls proto with stdin piped after the
    handshake; runs until the server closes.  Returns (status, stdout,
    stderr)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port),
           "-starttls", proto, "-CAfile", certs.ca, "-verify_return_error",
           "-verify_hostname", mtlib.SERVER_NAME, "-quiet"]
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


__all__ = ["DOVECOT_EXTRA", "mda_dovecot", "LogWatch", "RecordingRelay",
           "ScriptBackend", "tricky_message", "make_messages",
           "pop3_unstuff", "Fetchmail", "s_client_starttls", "MtError"]
