"""
xclient = true (SPEC section 9): mailtlsd tells an SMTP backend who the
client is with XCLIENT, on every backend connection, and the client sees
exactly one greeting.

The client always connects from 127.0.0.2, so the address a backend
records cannot be mailtlsd's own 127.0.0.1.  Checked against real Postfix
with smtpd_authorized_xclient_hosts (Received header and log), Postfix
without it (XCLIENT not advertised: 421, nothing relayed) and Exim 4.96,
which has no XCLIENT at all and must fail closed the same way.
"""

import re

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from mda_util import RecordingRelay
from test_send_proxy import received_from, smtp_session_starttls

CLIENT_IP = "127.0.0.2"
R_UNAVAILABLE = (b"421 4.3.2 %s Service temporarily unavailable\r\n"
                 % SERVER_NAME.encode())
OUR_EHLO = b"EHLO %s\r\n" % SERVER_NAME.encode()


@pytest.fixture(scope="module")
def xpostfix(workroot, dovecot, alice):
    p = mtlib.Postfix(workroot, dovecot, alice, xclient=True,
                      subdir="postfix-xclient")
    p.start()
    yield p
    p.stop()


def mx_service(m, backend_port, **opts):
    m.add_tls("mx", profile="opportunistic")
    return m.add_service("mx", "smtp", [backend_port], tls_mode="starttls",
                         tls="mx", require_starttls=False, xclient=True,
                         **opts)


def test_postfix_xclient_starttls(mtd, xpostfix, alice, certs):
    """One greeting (the reply to XCLIENT), XCLIENT again on the fresh
    connection of the TLS phase; Postfix records 127.0.0.2 for the
    message sent inside TLS."""
    m = mtd()
    port = mx_service(m, xpostfix.xclient_port)
    m.start()
    mark = mtlib.LogMark(xpostfix.log)
    tok = mtlib.token()
    c = Conn.plain(port, source=CLIENT_IP)
    try:
        smtp_session_starttls(c, certs, alice.address, tok)
    finally:
        c.close()
    delivered = alice.find(tok)
    assert b"[%s]" % CLIENT_IP.encode() in received_from(delivered)
    qid = mtlib.wait_until(lambda: re.search(
        r"smtpd\[\d+\]: (\w+): client=\S*\[%s\]" % re.escape(CLIENT_IP),
        mark.text()), 10, "postfix client= line with the client's address")
    assert qid
    # Both connections went through XCLIENT: the cleartext one and the
    # fresh one of the TLS phase (Postfix logs each mailtlsd connection).
    assert len(re.findall(r"connect from \S*\[127\.0\.0\.1\]",
                          mark.text())) >= 2, mark.text()


def test_postfix_xclient_implicit_one_greeting(mtd, xpostfix, certs):
    """On implicit TLS: the first reply the client reads is a single 220,
    and the EHLO reply follows at once (no second greeting in between)."""
    m = mtd()
    port = m.add_service("smtps", "smtp", [xpostfix.xclient_port],
                         xclient=True)
    m.start()
    c = Conn.tls(port, certs.client_context(), server_hostname=SERVER_NAME,
                 source=CLIENT_IP)
    try:
        greeting = c.smtp_reply()
        assert greeting.startswith(b"220 ") and greeting.count(b"\r\n") == 1
        c.send(b"EHLO client.example.test\r\n")
        r = c.smtp_reply()
        assert r.startswith(b"250-"), r
        assert b"XCLIENT" not in r and b"STARTTLS" not in r, r
        # The client's own XCLIENT stays refused (SPEC 8).
        c.send(b"XCLIENT ADDR=192.0.2.9\r\n")
        assert c.smtp_reply().startswith(b"550 5.7.0")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    finally:
        c.close()


def assert_fails_closed(m, backend_log_rx, relay, why):
    """The client, pipelining a whole transaction at once, gets only the
    421; the backend got only our EHLO; mailtlsd logs why."""
    c = Conn.plain(m.port("mx"), source=CLIENT_IP)
    try:
        c.send(b"EHLO client.example.test\r\nMAIL FROM:<a@example.org>\r\n")
        assert c.smtp_reply() == R_UNAVAILABLE
        with pytest.raises(EOFError):
            c.line(timeout=10)
    finally:
        c.close()
    relay.wait_closed()
    assert relay.received() == OUR_EHLO, relay.received()
    m.wait_log(r"error.*backend \S+ not usable: %s" % why)
    m.wait_log(r"session end service=mx client=%s .*reason=%s"
               % (re.escape(CLIENT_IP), why))


def test_postfix_not_authorized_fails_closed(mtd, postfix):
    """Postfix without smtpd_authorized_xclient_hosts does not advertise
    XCLIENT: 421 and an error line."""
    relay = RecordingRelay(postfix.port, "postfix-relay").start()
    try:
        m = mtd()
        mx_service(m, relay.port)
        m.start()
        assert_fails_closed(m, None, relay,
                            "backend does not advertise XCLIENT")
    finally:
        relay.stop()


def test_exim_fails_closed(mtd, exim):
    """Exim 4.96 has no XCLIENT: the same 421, nothing relayed."""
    relay = RecordingRelay(exim.port, "exim-relay").start()
    try:
        m = mtd()
        mx_service(m, relay.port)
        m.start()
        assert_fails_closed(m, None, relay,
                            "backend does not advertise XCLIENT")
    finally:
        relay.stop()
