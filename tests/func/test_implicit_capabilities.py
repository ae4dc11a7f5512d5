"""
Capability rewriting and STARTTLS refusal on implicit TLS services
(SPEC section 3, "Implicit TLS services").

Two kinds of backend: a scripted one that advertises STARTTLS/STLS, AUTH
and XCLIENT the way a TLS-enabled server would (so removal is observable,
and so is what it received), and the real Dovecot/Postfix, which would
answer STARTTLS with their own errors if mailtlsd forwarded it.
"""

import pytest

from mtlib import Conn

SMTP_REFUSAL = b"503 5.5.1 TLS already active\r\n"
POP3_REFUSAL = b"-ERR TLS already active\r\n"


def imap_refusal(tag):
    return tag + b" BAD TLS already active\r\n"


def ehlo_keywords(reply):
    """Upper-case first words of an EHLO reply's extension lines."""
    lines = [l for l in reply.split(b"\r\n") if l][1:]
    return [l[4:].split(b" ")[0].split(b"=")[0].upper() for l in lines]


def imap_caps(line):
    """Capability atoms of a '* CAPABILITY' line or a [CAPABILITY] code."""
    line = line.rstrip(b"\r\n")
    if b"[CAPABILITY " in line:
        line = line.split(b"[CAPABILITY ", 1)[1].split(b"]", 1)[0]
    else:
        line = line.split(b"CAPABILITY", 1)[1]
    return [c.upper() for c in line.split()]


def pop3_capa(reply):
    lines = reply.split(b"\r\n")[1:]
    return [l.split(b" ")[0].upper() for l in lines if l and l != b"."]


def implicit(mtd, protocol, backend_port):
    m = mtd()
    port = m.add_service(protocol + "s", protocol, [backend_port])
    m.start()
    return m, port


# ---------------------------------------------------------------------------
# SMTP

def test_smtps_scripted_backend_rewrites_ehlo(mtd, scripted, certs):
    b = scripted("smtp")
    _, port = implicit(mtd, "smtp", b.port)
    with Conn.tls(port, certs.client_context()) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.example.test\r\n")
        words = ehlo_keywords(c.smtp_reply())
        assert b"STARTTLS" not in words
        assert b"XCLIENT" not in words          # proxy authority, any mode
        assert b"AUTH" in words                 # as the backend says
        assert b"PIPELINING" in words and b"8BITMIME" in words
        for verb in (b"STARTTLS", b"starttls"):
            c.send(verb + b"\r\n")
            assert c.smtp_reply() == SMTP_REFUSAL
        c.send(b"NOOP\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    assert b"STARTTLS" not in b.all_received().upper()


def test_smtps_postfix_starttls_refused_by_mailtlsd(mtd, postfix, certs):
    _, port = implicit(mtd, "smtp", postfix.port)
    with Conn.tls(port, certs.client_context()) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.example.test\r\n")
        assert b"STARTTLS" not in ehlo_keywords(c.smtp_reply())
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == SMTP_REFUSAL
        # The session goes on normally afterwards.
        c.send(b"MAIL FROM:<sender@example.org>\r\n")
        assert c.smtp_reply().startswith(b"250 ")
        c.send(b"RSET\r\nQUIT\r\n")
        assert c.smtp_reply().startswith(b"250 ")
        assert c.smtp_reply().startswith(b"221 ")


# ---------------------------------------------------------------------------
# IMAP

def test_imaps_scripted_backend_rewrites_capabilities(mtd, scripted, certs):
    b = scripted("imap")
    _, port = implicit(mtd, "imap", b.port)
    with Conn.tls(port, certs.client_context()) as c:
        greeting = c.line()
        assert greeting.startswith(b"* OK ")
        caps = imap_caps(greeting)
        assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
        assert b"AUTH=PLAIN" in caps and b"IMAP4REV1" in caps
        c.send(b"a1 CAPABILITY\r\n")
        lines = c.tagged(b"a1").split(b"\r\n")
        caps = imap_caps(lines[0])
        assert b"STARTTLS" not in caps and b"AUTH=LOGIN" in caps
        assert lines[1].startswith(b"a1 OK")
        c.send(b"a2 STARTTLS\r\n")
        assert c.tagged(b"a2") == imap_refusal(b"a2")
        c.send(b"a3 starttls\r\n")
        assert c.tagged(b"a3") == imap_refusal(b"a3")
        c.send(b"a4 LOGIN user pass\r\n")
        ok = c.tagged(b"a4")
        assert ok.startswith(b"a4 OK") and b"STARTTLS" not in imap_caps(ok)
        c.send(b"a5 LOGOUT\r\n")
        assert c.tagged(b"a5").endswith(b"a5 OK Logout completed\r\n")
    assert b"STARTTLS" not in b.all_received().upper()


def test_imaps_dovecot_starttls_refused_by_mailtlsd(mtd, dovecot, mailbox,
                                                    certs):
    _, port = implicit(mtd, "imap", dovecot.imap_port)
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK ")
        c.send(b"t1 STARTTLS\r\n")
        assert c.tagged(b"t1") == imap_refusal(b"t1")
        c.send(b't2 LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                            mailbox.password.encode()))
        assert c.tagged(b"t2").split(b"\r\n")[-2].startswith(b"t2 OK")
        c.send(b"t3 STARTTLS\r\n")
        assert c.tagged(b"t3") == imap_refusal(b"t3")
        c.send(b"t4 LOGOUT\r\n")
        assert b"t4 OK" in c.tagged(b"t4")


# ---------------------------------------------------------------------------
# POP3

def test_pop3s_scripted_backend_rewrites_capa(mtd, scripted, certs):
    b = scripted("pop3")
    _, port = implicit(mtd, "pop3", b.port)
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"CAPA\r\n")
        capa = pop3_capa(c.pop3_multi())
        assert b"STLS" not in capa
        assert b"USER" in capa and b"SASL" in capa and b"TOP" in capa
        for verb in (b"STLS", b"stls"):
            c.send(verb + b"\r\n")
            assert c.line() == POP3_REFUSAL
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    assert b"STLS" not in b.all_received().upper()


def test_pop3s_dovecot_stls_refused_by_mailtlsd(mtd, dovecot, mailbox,
                                                certs):
    _, port = implicit(mtd, "pop3", dovecot.pop3_port)
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"STLS\r\n")
        assert c.line() == POP3_REFUSAL
        c.send(b"USER %s\r\n" % mailbox.name.encode())
        assert c.line().startswith(b"+OK")
        c.send(b"PASS %s\r\n" % mailbox.password.encode())
        assert c.line().startswith(b"+OK")
        c.send(b"STAT\r\n")
        assert c.line() == b"+OK 0 0\r\n"
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")


@pytest.mark.parametrize("verb", [b"XCLIENT ADDR=192.0.2.1",
                                  b"XFORWARD ADDR=192.0.2.1"])
def test_smtps_proxy_authority_commands_refused(mtd, scripted, certs, verb):
    b = scripted("smtp")
    _, port = implicit(mtd, "smtp", b.port)
    with Conn.tls(port, certs.client_context()) as c:
        c.smtp_reply()
        c.send(b"EHLO client.example.test\r\n")
        c.smtp_reply()
        c.send(verb + b"\r\n")
        assert c.smtp_reply() == b"550 5.7.0 Command not permitted\r\n"
        c.send(b"QUIT\r\n")
        c.smtp_reply()
    assert verb.split()[0] not in b.all_received().upper()
