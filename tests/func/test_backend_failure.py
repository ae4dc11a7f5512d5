"""
Backends down (SPEC section 3, "Backend unreachable"): the client gets the
protocol's temporary failure and the connection closes; with several
backends mailtlsd fails over in order.
"""

import pytest

import mtlib
from mtlib import Conn

TEMPFAIL = {
    "smtp": b"421 4.3.2 mail.example.test Service temporarily unavailable"
            b"\r\n",
    "imap": b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
    "pop3": b"-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
}


def dead_port():
    """A loopback port nothing listens on (refused at once)."""
    port = mtlib.free_port()
    assert not mtlib.port_accepts(port)
    return port


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
@pytest.mark.parametrize("nbackends", [1, 2])
def test_all_backends_down_gives_tempfail(mtd, certs, protocol, nbackends):
    m = mtd()
    port = m.add_service(protocol + "s", protocol,
                         [dead_port() for _ in range(nbackends)],
                         backend_connect_timeout=5)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        answer = c.read_to_eof(timeout=30)
    assert answer == TEMPFAIL[protocol]
    # The daemon is still there for the next client.
    with Conn.tls(port, certs.client_context()) as c:
        assert c.read_to_eof(timeout=30) == TEMPFAIL[protocol]


def _imap_login(c, user):
    assert c.line().startswith(b"* OK ")
    c.send(b'a LOGIN "%s" "%s"\r\n' % (user.name.encode(),
                                       user.password.encode()))
    assert c.tagged(b"a").split(b"\r\n")[-2].startswith(b"a OK")
    c.send(b"b SELECT INBOX\r\nc LOGOUT\r\n")
    assert b"b OK" in c.tagged(b"b")
    assert b"c OK" in c.tagged(b"c")


def _pop3_login(c, user):
    assert c.line().startswith(b"+OK")
    c.send(b"USER %s\r\nPASS %s\r\nQUIT\r\n" % (user.name.encode(),
                                                user.password.encode()))
    assert c.line().startswith(b"+OK")
    assert c.line().startswith(b"+OK")
    assert c.line().startswith(b"+OK")


def _smtp_hello(c, _user):
    greeting = c.smtp_reply()
    assert greeting.startswith(b"220 backend.example.test ESMTP")
    c.send(b"EHLO client.example.test\r\n")
    assert c.smtp_reply().startswith(b"250-backend.example.test")
    c.send(b"QUIT\r\n")
    assert c.smtp_reply().startswith(b"221 ")


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_failover_to_second_backend(mtd, certs, dovecot, postfix, mailbox,
                                    protocol):
    live = {"smtp": postfix.port, "imap": dovecot.imap_port,
            "pop3": dovecot.pop3_port}[protocol]
    dialogue = {"smtp": _smtp_hello, "imap": _imap_login,
                "pop3": _pop3_login}[protocol]
    m = mtd()
    port = m.add_service(protocol + "s", protocol, [dead_port(), live],
                         backend_connect_timeout=5)
    m.start()
    for _ in range(3):
        with Conn.tls(port, certs.client_context()) as c:
            dialogue(c, mailbox)
