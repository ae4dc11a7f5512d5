"""
Limits and timeouts of SPEC section 6 that the other files do not cover:
the daemon-wide and per-service connection caps, and the handshake and
idle timeouts, each observed on the wire and in mailtlsd's log.
"""

import socket
import ssl
import time

import pytest

import mtlib
from mtlib import HOST, Conn


def _refused(port, ctx=None, timeout=10):
    """True when a new connection gets no service (closed, maybe a reply)."""
    try:
        if ctx is None:
            c = Conn.plain(port, timeout=timeout)
        else:
            c = Conn.tls(port, ctx, timeout=timeout)
    except (ssl.SSLError, OSError):
        return True, b""
    try:
        return True, c.read_to_eof(timeout=timeout)
    except (ssl.SSLError, OSError):
        return True, b""
    finally:
        c.close()


def test_daemon_max_connections(mtd, dovecot, certs):
    m = mtd(max_connections=2)
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    ctx = certs.client_context()
    conns = []
    try:
        for _ in range(2):
            c = Conn.tls(port, ctx)
            assert c.line().startswith(b"* OK")
            conns.append(c)
        refused, data = _refused(port, ctx)
        assert refused and b"* OK" not in data
        m.wait_log(r"refusing 127\.0\.0\.1: daemon connection limit")
        # The established sessions go on.
        conns[0].send(b"a NOOP\r\n")
        assert b"a OK" in conns[0].tagged(b"a")
    finally:
        for c in conns:
            c.close()


def test_service_max_connections_cleartext_gets_421(mtd, recorder):
    # A cleartext (STARTTLS) service can still say why: SMTP's 421.
    m = mtd()
    port = m.add_service("mx", "smtp", [recorder.port], tls_mode="starttls",
                         require_starttls=False, max_connections=1)
    m.start()
    with Conn.plain(port) as first:
        assert first.smtp_reply().startswith(b"220 ")
        refused, data = _refused(port)
        assert data == (b"421 4.3.2 %s Service temporarily unavailable\r\n"
                        % mtlib.SERVER_NAME.encode())
        m.wait_log(r"refusing 127\.0\.0\.1: service connection limit")
        first.send(b"QUIT\r\n")
        assert first.smtp_reply().startswith(b"221")


def test_handshake_timeout(mtd, dovecot):
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         handshake_timeout=1)
    m.start()
    s = socket.create_connection((HOST, port), timeout=10)
    try:
        started = time.monotonic()
        # Nothing sent: mailtlsd gives up after handshake_timeout.
        assert s.recv(100) == b""
        assert time.monotonic() - started < 8
    finally:
        s.close()
    m.wait_log(r"TLS handshake timeout")
    m.wait_log(r"session end .* reason=handshake timeout")


def test_idle_timeout(mtd, dovecot, mailbox, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         idle_timeout=1)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
        started = time.monotonic()
        # SPEC 10: the protocol's timeout reply, then the close.
        assert c.read_to_eof(timeout=10) == \
            b"* BYE Autologout; idle for too long\r\n"
        assert time.monotonic() - started < 8
    m.wait_log(r"session end .* reason=idle timeout")


def test_activity_keeps_an_idle_session_alive(mtd, dovecot, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         idle_timeout=2)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
        # Four seconds of traffic, never two seconds of silence.
        for i in range(8):
            c.send(b"n%d NOOP\r\n" % i)
            assert b"n%d OK" % i in c.tagged(b"n%d" % i)
            time.sleep(0.5)


def test_workers_share_the_load(mtd, dovecot, certs):
    # Several event loops accept on the same sockets: many concurrent
    # sessions are all served, whichever worker takes them.
    m = mtd(workers=2)
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    ctx = certs.client_context()
    conns = []
    try:
        for _ in range(24):
            c = Conn.tls(port, ctx)
            conns.append(c)
        for i, c in enumerate(conns):
            assert c.line().startswith(b"* OK")
            c.send(b"w%d NOOP\r\n" % i)
        for i, c in enumerate(conns):
            assert b"w%d OK" % i in c.tagged(b"w%d" % i)
    finally:
        for c in conns:
            c.close()
    assert "2 workers" in m.log_text()
