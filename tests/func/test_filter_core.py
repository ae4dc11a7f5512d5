"""
Rules the filter core (src/filter.c) keeps for every protocol, seen on the
wire (issue 8, SPEC section 3 "All three" and section 8):

- backend bytes sent between the go-ahead and the end of the client's
  handshake are never delivered: the session closes (SPEC 8.2);
- an incomplete command line must be complete within the idle timeout
  from its first byte: trickling does not extend it;
- refusals count towards max_errors, and a client that floods refusals
  without reading them cannot grow the daemon.
"""

import socket
import threading
import time

import pytest

import mtlib
from mtlib import HOST, Conn


class LateBackend:
    """A plaintext backend that answers one command, then says something
    more a little later, unasked: exactly when mailtlsd's client is in the
    middle of its TLS handshake."""

    def __init__(self, greeting, answer, late, delay=0.5):
        self.greeting, self.answer, self.late = greeting, answer, late
        self.delay = delay
        self.port = mtlib.free_port()
        self.received = bytearray()
        self._sock = mtlib.listen(self.port)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        self._sock.settimeout(30)
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            conn.sendall(self.greeting)
            buf = b""
            while b"\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            self.received += buf
            conn.sendall(self.answer)
            time.sleep(self.delay)
            conn.sendall(self.late)
            # Keep the connection until mailtlsd ends it.
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.received += chunk
        except OSError:
            return
        finally:
            conn.close()

    def stop(self):
        self._sock.close()
        self._thread.join(5)


# greeting, command, its answer, where the relayed answer ends, the late
# bytes, the upgrade command and its go-ahead.
WINDOW = {
    "imap": (b"* OK [CAPABILITY IMAP4rev1] ready\r\n", b"a NOOP\r\n",
             b"a OK done\r\n", b"a OK done\r\n", b"* 1 EXISTS\r\n",
             b"b STARTTLS\r\n", b"b OK Begin TLS negotiation now\r\n"),
    "pop3": (b"+OK ready\r\n", b"CAPA\r\n",
             b"+OK\r\nTOP\r\n.\r\n", b"\r\n.\r\n", b"+OK late\r\n",
             b"STLS\r\n", b"+OK Begin TLS negotiation\r\n"),
}


@pytest.mark.parametrize("proto", sorted(WINDOW))
def test_backend_bytes_in_handshake_window_close(mtd, certs, proto):
    greeting, cmd, answer, end, late, stls, go = WINDOW[proto]
    b = LateBackend(greeting, answer, late, delay=0.5)
    try:
        m = mtd()
        port = m.add_service(proto, proto, [b.port], tls_mode="starttls")
        m.start()
        with Conn.plain(port) as c:
            assert c.line().startswith(greeting.split(b" ")[0])
            c.send(cmd)
            c.read_until(lambda buf: buf.find(end) + len(end)
                         if end in buf else 0)
            c.send(stls)
            assert c.line() == go
            # The backend speaks while our handshake has not begun.
            time.sleep(1.5)
            try:
                c.starttls(certs.client_context())
                rest = c.read_to_eof(timeout=10)
            except (OSError, EOFError):
                rest = b""
            assert late not in rest and rest == b"", rest
        m.wait_log(r"warning: .* client=127\.0\.0\.1: backend sent %d bytes "
                   r"during the TLS handshake, discarded, closing"
                   % len(late))
        m.wait_log(r"session end .*reason=backend data during TLS handshake")
    finally:
        b.stop()


@pytest.mark.parametrize("proto,partial", [
    ("smtp", b"NOO"), ("imap", b"a NOO"), ("pop3", b"NOO")])
def test_trickled_line_does_not_extend_idle(mtd, scripted, proto, partial):
    backend = scripted(proto)
    m = mtd()
    port = m.add_service(proto, proto, [backend.port], tls_mode="starttls",
                         require_starttls=False if proto == "smtp" else True,
                         idle_timeout=2)
    m.start()
    with Conn.plain(port) as c:
        c.line()
        started = time.monotonic()
        closed = False
        # A byte every half second for up to 12 s: an idle timer reset by
        # every byte would never fire.
        for byte in (partial + b"P" * 24)[:24]:
            try:
                c.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.5)
            if "reason=idle timeout" in m.log_text():
                closed = True
                break
        assert closed, "the trickled line kept the session alive"
        assert time.monotonic() - started < 11
    m.wait_log(r"session end .*reason=idle timeout")


def test_refusal_flood_unread_is_bounded(mtd, scripted):
    """Pre-login refusals that the client never reads: each counts, the
    session ends at max_errors, and the daemon does not grow (issue 8: one
    connection sending COMPRESS grew it by 185 MB)."""
    backend = scripted("imap")
    m = mtd()
    port = m.add_service("imap", "imap", [backend.port], tls_mode="starttls")
    m.start()
    base = m.rss_kib()
    line = b"x COMPRESS DEFLATE\r\n"
    s = socket.create_connection((HOST, port), timeout=10)
    sent = 0
    try:
        s.settimeout(0.5)
        # Up to 64 MiB, never reading: mailtlsd must stop us long before.
        block = line * 4096
        while sent < 64 * 1024 * 1024:
            try:
                s.sendall(block)
            except (socket.timeout, OSError):
                break
            sent += len(block)
        peak = m.rss_kib()
    finally:
        s.close()
    assert peak - base < 16 * 1024, "RSS grew by %d KiB" % (peak - base)
    m.wait_log(r"session end .*reason=too many errors")
    assert b"COMPRESS" not in backend.all_received()


def test_max_errors_configurable(mtd, scripted):
    backend = scripted("pop3")
    m = mtd()
    port = m.add_service("pop3", "pop3", [backend.port], tls_mode="starttls",
                         max_errors=3)
    m.start()
    with Conn.plain(port) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"USER a\r\nUSER b\r\nUSER c\r\nCAPA\r\n")
        got = c.read_to_eof(timeout=10)
    lines = got.split(b"\r\n")
    assert [l[:4] for l in lines[:3]] == [b"-ERR"] * 3, got
    assert lines[3] == b"-ERR Too many errors", got
    assert b"CAPA" not in backend.all_received()
    assert b"USER" not in backend.all_received()
