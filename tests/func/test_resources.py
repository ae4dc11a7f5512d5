"""
Bounded resources (SPEC sections 6 and 8.7): a slow reader does not make
mailtlsd buffer a whole mailbox, abandoned handshakes leave no descriptors
behind, and the per-address connection cap holds.
"""

import hashlib
import socket
import ssl
import time

import pytest

import mtlib
from mtlib import HOST, Conn

MIB = 1024 * 1024
BIG = 50 * MIB
COPIES = 4                      # 200 MB would be streamed in all
RSS_GROWTH_LIMIT_KIB = 64 * 1024
STALL_SECONDS = 4.0


def _imap_login(c, user):
    assert c.line().startswith(b"* OK ")
    c.send(b'l LOGIN "%s" "%s"\r\ns SELECT INBOX\r\n'
           % (user.name.encode(), user.password.encode()))
    assert b"l OK" in c.tagged(b"l")
    assert b"s OK" in c.tagged(b"s")


def _big_mailbox(user):
    msg = mtlib.make_message(mtlib.token(), rcpt=user.address, size=BIG)
    path = user.deliver(msg)
    for _ in range(COPIES - 1):
        user.link_copy(path)
    return hashlib.sha256(msg).hexdigest(), len(msg)


def _watch_rss(m, seconds):
    """Peak VmRSS (KiB) while the client reads nothing for seconds."""
    peak = m.rss_kib()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, m.rss_kib())
        time.sleep(0.1)
    return peak


@pytest.mark.timeout(300)
def test_slow_imap_reader_keeps_memory_bounded(mtd, dovecot, mailbox, certs):
    digest, size = _big_mailbox(mailbox)
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    with Conn.tls(port, certs.client_context(), timeout=60) as c:
        _imap_login(c, mailbox)
        base = m.rss_kib()
        c.send(b"f FETCH 1:%d BODY.PEEK[]\r\n" % COPIES)
        peak = _watch_rss(m, STALL_SECONDS)
        assert peak - base < RSS_GROWTH_LIMIT_KIB, \
            "RSS grew by %d KiB while the client read nothing" % (peak - base)
        # Now read it all: every copy arrives intact, and memory stayed flat.
        for i in range(1, COPIES + 1):
            head = c.line(timeout=60)
            assert head.startswith(b"* %d FETCH " % i), head
            assert head.endswith(b"{%d}\r\n" % size), head
            h = hashlib.sha256()
            c.read_exact(size, h.update, timeout=120)
            assert h.hexdigest() == digest
            assert c.line() == b")\r\n"
            peak = max(peak, m.rss_kib())
        assert c.line().startswith(b"f OK")
        assert peak - base < RSS_GROWTH_LIMIT_KIB


@pytest.mark.timeout(300)
def test_slow_pop3_reader_keeps_memory_bounded(mtd, dovecot, mailbox, certs):
    digest, size = _big_mailbox(mailbox)
    m = mtd()
    port = m.add_service("pop3s", "pop3", [dovecot.pop3_port])
    m.start()
    with Conn.tls(port, certs.client_context(), timeout=60) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"USER %s\r\nPASS %s\r\n" % (mailbox.name.encode(),
                                             mailbox.password.encode()))
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK")
        base = m.rss_kib()
        # Pipelined: Dovecot streams all of it as fast as it can.
        c.send(b"".join(b"RETR %d\r\n" % i for i in range(1, COPIES + 1)))
        peak = _watch_rss(m, STALL_SECONDS)
        assert peak - base < RSS_GROWTH_LIMIT_KIB, \
            "RSS grew by %d KiB while the client read nothing" % (peak - base)
        for i in range(COPIES):
            assert c.line(timeout=60).startswith(b"+OK")
            body = _read_pop3_body(c, size + MIB)
            assert hashlib.sha256(body).hexdigest() == digest
            peak = max(peak, m.rss_kib())
        assert peak - base < RSS_GROWTH_LIMIT_KIB


def _read_pop3_body(c, limit):
    """One RETR body through CRLF.CRLF, un-stuffed."""
    scanned = 0

    def end(buf):
        nonlocal scanned
        i = buf.find(b"\r\n.\r\n", max(0, scanned - 4))
        scanned = len(buf)
        return i + 5 if i >= 0 else 0
    raw = c.read_until(end, limit=limit, timeout=120)[:-3]
    return b"\r\n".join(l[1:] if l.startswith(b".") else l
                         for l in raw.split(b"\r\n"))


def _client_hello():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=mtlib.SERVER_NAME)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


@pytest.mark.timeout(180)
def test_abandoned_handshakes_leave_no_descriptors(mtd, dovecot, mailbox,
                                                   certs):
    m = mtd()
    # Hundreds of connections from one address: SPEC 10's rate limit
    # is not what this test is about.
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         max_connections_per_ip=1000,
                         max_connection_rate_per_ip=0)
    m.start()
    hello = _client_hello()
    # One full session first, so lazily opened descriptors already exist.
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
    base = mtlib.wait_until(lambda: _stable_fds(m), 20, "stable fd count")
    for i in range(200):
        s = socket.create_connection((HOST, port), 10)
        s.sendall(hello[:len(hello) // 2])
        if i % 2:
            # Half of them vanish with a RST instead of a FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    mtlib.wait_until(lambda: m.nfds() <= base, 30,
                     "descriptors back to %d (now %d)" % (base, m.nfds()))
    # And the daemon still serves.
    with Conn.tls(port, certs.client_context()) as c:
        _imap_login(c, mailbox)


def _stable_fds(m):
    a = m.nfds()
    time.sleep(0.2)
    b = m.nfds()
    return b if a == b else None


def test_max_connections_per_ip(mtd, dovecot, certs):
    limit = 3
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         max_connections_per_ip=limit)
    m.start()
    ctx = certs.client_context()
    conns = []
    try:
        for _ in range(limit):
            c = Conn.tls(port, ctx)
            assert c.line().startswith(b"* OK")
            conns.append(c)
        # One more from the same address: closed without a session.
        with pytest.raises((ssl.SSLError, OSError, EOFError)):
            c = Conn.tls(port, ctx, timeout=10)
            try:
                c.line(timeout=10)
            finally:
                c.close()
        # The first ones are unaffected.
        for i, c in enumerate(conns):
            c.send(b"n%d NOOP\r\n" % i)
            assert b"n%d OK" % i in c.tagged(b"n%d" % i)
        # Once one leaves, a newcomer is served again.
        conns.pop().close()

        def newcomer():
            try:
                c = Conn.tls(port, ctx, timeout=5)
            except (ssl.SSLError, OSError):
                return None
            try:
                if c.line(timeout=5).startswith(b"* OK"):
                    conns.append(c)
                    return True
            except (ssl.SSLError, OSError, EOFError, mtlib.MtError):
                pass
            c.close()
            return None
        mtlib.wait_until(newcomer, 20, "a connection after one closed",
                         interval=0.2)
    finally:
        for c in conns:
            c.close()
