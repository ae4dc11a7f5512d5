"""
Log lines (SPEC section 5): the session end line, and the TLS line in
Postfix's exact form so that existing log tooling keeps working, including
the Anonymous/Untrusted/Trusted classification of client certificates.
"""

import re
import ssl

import pytest

import mtlib
from mtlib import Conn

TLS_LINE = (r"(Anonymous|Untrusted|Trusted|Verified) TLS connection "
            r"established from (\S*)\[127\.0\.0\.1\]: (TLSv1\.[0-3]) with "
            r"cipher (\S+) \((\d+)/(\d+) bits\)")


def _imap_fetch_all(port, certs, user, ctx=None):
    with Conn.tls(port, ctx or certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
        c.send(b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\n'
               b"c FETCH 1 BODY.PEEK[]\r\nd LOGOUT\r\n"
               % (user.name.encode(), user.password.encode()))
        return c.tagged(b"d", timeout=30)


def test_tls_and_session_end_lines(mtd, dovecot, mailbox, certs):
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address,
                             size=200000)
    mailbox.deliver(msg)
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    out = _imap_fetch_all(port, certs, mailbox)
    assert msg in out

    tls = m.wait_log(TLS_LINE)
    assert tls.group(1) == "Anonymous"
    assert tls.group(3) == "TLSv1.3"
    assert tls.group(4).startswith("TLS_")
    assert int(tls.group(5)) >= 128

    end = m.wait_log(r"session end (.*)")
    fields = dict(f.split("=", 1) for f in end.group(1).split()
                  if "=" in f)
    assert fields.get("service") == "imaps", end.group(0)
    assert fields.get("client", "").startswith("127.0.0.1"), end.group(0)
    assert fields.get("backend") == "127.0.0.1:%d" % dovecot.imap_port, \
        end.group(0)
    sizes = sorted(int(re.match(r"\d+", fields[k]).group(0))
                   for k in ("in", "out"))
    assert sizes[0] > 0 and sizes[1] >= len(msg), end.group(0)
    assert "dur" in fields and "reason" in fields, end.group(0)
    # Credentials never reach the log.
    assert mailbox.password not in m.log_text()


@pytest.mark.parametrize("client,expected", [
    (None, "Anonymous"),
    ("client", "Trusted|Verified"),
    ("selfsigned", "Untrusted"),
])
def test_client_certificate_classification(mtd, dovecot, mailbox, certs,
                                           client, expected):
    m = mtd()
    m.add_tls("mx", client_certificates="request", ca_file=certs.ca)
    port = m.add_service("imaps", "imap", [dovecot.imap_port], tls="mx")
    m.start()
    ctx = certs.client_context()
    if client:
        ctx.load_cert_chain(getattr(certs, client + "_cert"),
                            getattr(certs, client + "_key"))
    _imap_fetch_all(port, certs, mailbox, ctx)
    tls = m.wait_log(TLS_LINE)
    assert re.fullmatch(expected, tls.group(1)), tls.group(0)


def test_required_client_certificate(mtd, dovecot, mailbox, certs):
    m = mtd()
    m.add_tls("strict", client_certificates="require", ca_file=certs.ca)
    port = m.add_service("imaps", "imap", [dovecot.imap_port],
                         tls="strict")
    m.start()
    with pytest.raises((ssl.SSLError, OSError, EOFError)):
        # TLS 1.3 reports the refusal at the first read.
        with Conn.tls(port, certs.client_context(), timeout=10) as c:
            c.line(timeout=10)
    ctx = certs.client_context()
    ctx.load_cert_chain(certs.client_cert, certs.client_key)
    _imap_fetch_all(port, certs, mailbox, ctx)
    tls = m.wait_log(r"(Trusted|Verified) TLS connection established")
    assert tls
