"""
STARTTLS services (SPEC section 3 and the invariants of section 8): the
cleartext phase relays the backend's dialogue with STARTTLS/STLS added and
credentials refused and hidden; the upgrade is done by mailtlsd; pipelined
bytes after the go-ahead are never executed; after TLS the session works
end to end with the real backends and real clients (smtplib, imaplib's
wire format, curl --ssl-reqd, swaks --tls).
"""

import base64
import os
import smtplib
import subprocess

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from test_implicit_capabilities import (ehlo_keywords, imap_caps,
                                        pop3_capa)
from test_implicit_tls import assert_delivered, curl, curl_tls_args


def starttls_service(mtd, protocol, backend, **opts):
    m = mtd()
    port = m.add_service(protocol, protocol, [backend], tls_mode="starttls",
                         **opts)
    m.start()
    return m, port


def auth_plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())


# ---------------------------------------------------------------------------
# SMTP

def test_smtp_submission_cleartext_phase(mtd, postfix, alice, certs):
    _, port = starttls_service(mtd, "smtp", postfix.port)
    with Conn.plain(port) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.example.test\r\n")
        words = ehlo_keywords(c.smtp_reply())
        assert words.count(b"STARTTLS") == 1
        assert b"AUTH" not in words
        c.send(b"AUTH PLAIN " + auth_plain(alice.name, alice.password) +
               b"\r\n")
        assert c.smtp_reply() == \
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        c.send(b"MAIL FROM:<sender@example.org>\r\n")
        assert c.smtp_reply() == \
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        c.send(b"NOOP\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS now\r\n")
        assert c.smtp_reply() == b"501 5.5.4 Syntax error\r\n"
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == b"220 2.0.0 Ready to start TLS\r\n"
        c.starttls(certs.client_context())
        # A new session: EHLO first.
        c.send(b"MAIL FROM:<sender@example.org>\r\n")
        assert c.smtp_reply() == b"503 5.5.1 Send EHLO first\r\n"
        c.send(b"EHLO client.example.test\r\n")
        words = ehlo_keywords(c.smtp_reply())
        assert b"STARTTLS" not in words and b"AUTH" in words
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == b"503 5.5.1 TLS already active\r\n"
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


def test_smtp_submission_smtplib_delivers(mtd, postfix, alice, certs):
    _, port = starttls_service(mtd, "smtp", postfix.port)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        s.ehlo("client.example.test")
        assert s.has_extn("starttls") and not s.has_extn("auth")
        s.starttls(context=certs.client_context())
        s.ehlo("client.example.test")
        assert not s.has_extn("starttls") and s.has_extn("auth")
        s.login(alice.name, alice.password)
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    assert_delivered(alice.find(tok), msg)


def test_smtp_credentials_never_reach_backend(mtd, recorder, certs):
    """The recorder sees every byte: no AUTH, no pre-TLS transaction."""
    _, port = starttls_service(mtd, "smtp", recorder.port)
    secret = auth_plain("user", "very-secret-password")
    with Conn.plain(port) as c:
        c.smtp_reply()
        c.send(b"EHLO client.example.test\r\n")
        c.smtp_reply()
        c.send(b"AUTH PLAIN " + secret + b"\r\n")
        assert c.smtp_reply().startswith(b"530 5.7.0")
        c.send(b"AUTH LOGIN\r\n")
        reply = c.smtp_reply()
        assert reply.startswith(b"530 5.7.0"), "prompted: %r" % reply
        c.send(b"MAIL FROM:<early@example.org>\r\n")
        assert c.smtp_reply().startswith(b"530")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply().startswith(b"220 ")
        c.starttls(certs.client_context())
        c.send(b"EHLO client.example.test\r\nMAIL FROM:<a@example.org>\r\n"
               b"RCPT TO:<b@example.net>\r\nDATA\r\n")
        for _ in range(3):
            assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"354")
        msg = mtlib.make_message(mtlib.token(), rcpt="b@example.net")
        stuffed = msg.replace(b"\r\n.", b"\r\n..")
        c.send(stuffed + b".\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"QUIT\r\n")
        c.smtp_reply()
    got = recorder.wait_messages(1)
    assert len(got) == 1 and got[0].data == msg
    assert got[0].mail_from == "a@example.org"
    raw = recorder.all_received()
    assert secret not in raw and b"AUTH" not in raw.upper()
    assert b"early@example.org" not in raw


def test_smtp_pipelined_after_starttls_never_executed(mtd, recorder, certs):
    m, port = starttls_service(mtd, "smtp", recorder.port)
    with Conn.plain(port) as c:
        c.smtp_reply()
        c.send(b"EHLO client.example.test\r\n")
        c.smtp_reply()
        c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        rest = c.read_to_eof(timeout=20)
    assert b"250" not in rest
    raw = recorder.all_received()
    assert b"injected" not in raw
    assert b"STARTTLS" not in raw.upper()


def test_smtp_starttls_during_transaction(mtd, recorder, certs):
    _, port = starttls_service(mtd, "smtp", recorder.port,
                               require_starttls=False)
    with Conn.plain(port) as c:
        c.smtp_reply()
        c.send(b"EHLO client.example.test\r\n")
        c.smtp_reply()
        c.send(b"MAIL FROM:<a@example.org>\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == \
            b"503 5.5.1 MAIL transaction in progress\r\n"
        c.send(b"RSET\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == b"220 2.0.0 Ready to start TLS\r\n"
        c.starttls(certs.client_context())
        c.send(b"EHLO client.example.test\r\n")
        assert c.smtp_reply().startswith(b"250")


def test_smtp_mx_plain_delivery_and_cleartext_auth(mtd, recorder):
    """Port 25 without STARTTLS: mail flows, credentials do not."""
    _, port = starttls_service(mtd, "smtp", recorder.port,
                               require_starttls=False)
    msg = mtlib.make_message(mtlib.token(), rcpt="b@example.net")
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        s.ehlo("mx.example.org")
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, text = s.docmd("AUTH", "PLAIN " +
                             auth_plain("u", "p").decode())
        assert (code, text) == (538, b"5.7.11 Encryption required for "
                                b"requested authentication mechanism")
        assert s.sendmail("a@example.org", ["b@example.net"], msg) == {}
    got = recorder.wait_messages(1)
    assert got[0].data == msg
    assert b"AUTH" not in recorder.all_received().upper()


# For the client, all of this is one message: it holds no CRLF.CRLF.  A
# backend that took a bare LF for a line end would find an end of DATA at
# "\n.\n" or "\r\n.\n" and run the commands after it (CVE-2023-51764).
SMUGGLE = (b"Subject: smuggling\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.org>"
           b"\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n.\n"
           b"after\r\n")


@pytest.mark.parametrize("mode", ["normalize", "reject"])
def test_smtp_bare_lf_cannot_smuggle(mtd, recorder, certs, mode):
    _, port = starttls_service(mtd, "smtp", recorder.port,
                               require_starttls=False,
                               smtp_bare_newline=mode)
    with Conn.plain(port) as c:
        c.smtp_reply()
        c.send(b"EHLO mx.example.org\r\nMAIL FROM:<a@example.org>\r\n"
               b"RCPT TO:<b@example.net>\r\nDATA\r\n")
        for _ in range(3):
            assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"354")
        c.send(SMUGGLE + b".\r\n")
        final = c.smtp_reply()
        if mode == "normalize":
            # Exactly one reply for the one message, then the session goes
            # on in step with the client.
            assert final.startswith(b"250"), final
            c.send(b"NOOP\r\nQUIT\r\n")
            assert c.smtp_reply().startswith(b"250")
            assert c.smtp_reply().startswith(b"221")
        else:
            # Refused (the connection may close after it, as Postfix's
            # smtpd_forbid_bare_newline does).
            assert final[:1] == b"5", final
    mtlib.wait_until(lambda: all(d.closed.is_set()
                                 for d in recorder.dialogues), 10,
                     "backend connections closed")
    senders = [msg.mail_from for msg in recorder.messages]
    assert "evil@example.org" not in senders
    if mode == "normalize":
        assert senders == ["a@example.org"]
        data = recorder.messages[0].data
        assert b"\n" not in data.replace(b"\r\n", b"")
        assert b"\r\nsmuggled\r\n.\r\nafter\r\n" in data
        assert data.endswith(b"after\r\n")
    else:
        assert senders == []


def test_smtp_curl_ssl_reqd_through_postfix(mtd, postfix, alice, certs,
                                            workdir):
    _, port = starttls_service(mtd, "smtp", postfix.port)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    path = os.path.join(workdir, "mail.eml")
    with open(path, "wb") as f:
        f.write(msg)
    curl("smtp://%s:%d" % (SERVER_NAME, port), "--ssl-reqd",
         *curl_tls_args(certs, port),
         "--user", "%s:%s" % (alice.name, alice.password),
         "--mail-from", "sender@example.org", "--mail-rcpt", alice.address,
         "--upload-file", path)
    assert_delivered(alice.find(tok), msg)


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks_through_postfix(mtd, postfix, alice, certs, mode):
    m = mtd()
    if mode == "--tls":
        port = m.add_service("submission", "smtp", [postfix.port],
                             tls_mode="starttls")
    else:
        port = m.add_service("submissions", "smtp", [postfix.port])
    m.start()
    tok = mtlib.token()
    p = subprocess.run(
        ["swaks", "--server", HOST, "--port", str(port), mode,
         "--tls-verify", "--tls-ca-path", certs.ca,
         "--tls-sni", SERVER_NAME,
         "--auth", "PLAIN", "--auth-user", alice.name,
         "--auth-password", alice.password,
         "--from", "sender@example.org", "--to", alice.address,
         "--header", "Subject: swaks %s" % tok, "--body", "body " + tok,
         "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    delivered = alice.find(tok)
    assert b"Subject: swaks " + tok.encode() in delivered


# ---------------------------------------------------------------------------
# IMAP

def _imap_caps_cleartext(c, tag):
    c.send(tag + b" CAPABILITY\r\n")
    lines = c.tagged(tag).split(b"\r\n")
    return imap_caps(lines[0])


def test_imap_starttls_with_dovecot(mtd, dovecot, mailbox, certs):
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    mailbox.deliver(msg)
    _, port = starttls_service(mtd, "imap", dovecot.imap_port)
    with Conn.plain(port) as c:
        greeting = c.line()
        assert greeting.startswith(b"* OK")
        if b"[CAPABILITY" in greeting:
            caps = imap_caps(greeting)
            assert caps.count(b"STARTTLS") == 1
            assert caps.count(b"LOGINDISABLED") == 1
            assert not [x for x in caps if x.startswith(b"AUTH=")]
        caps = _imap_caps_cleartext(c, b"a")
        assert caps.count(b"STARTTLS") == 1
        assert caps.count(b"LOGINDISABLED") == 1
        assert not [x for x in caps if x.startswith(b"AUTH=")]
        c.send(b'b LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                           mailbox.password.encode()))
        assert c.tagged(b"b").startswith(b"b NO [PRIVACYREQUIRED]")
        c.send(b"c AUTHENTICATE PLAIN\r\n")
        reply = c.line()
        assert reply.startswith(b"c NO [PRIVACYREQUIRED]"), reply
        c.send(b"d STARTTLS\r\n")
        assert c.tagged(b"d") == b"d OK Begin TLS negotiation now\r\n"
        c.starttls(certs.client_context())
        caps = _imap_caps_cleartext(c, b"e")
        assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
        assert b"AUTH=PLAIN" in caps
        c.send(b"f STARTTLS\r\n")
        assert c.tagged(b"f") == b"f BAD TLS already active\r\n"
        c.send(b'g LOGIN "%s" "%s"\r\nh SELECT INBOX\r\n'
               b"i FETCH 1 BODY.PEEK[]\r\nj LOGOUT\r\n"
               % (mailbox.name.encode(), mailbox.password.encode()))
        out = c.tagged(b"j")
        assert b"\r\ng OK" in out or out.startswith(b"g OK")
        assert b"{%d}\r\n" % len(msg) + msg + b")\r\n" in out


def test_imap_pipelined_after_starttls_closes(mtd, scripted, certs):
    b = scripted("imap")
    _, port = starttls_service(mtd, "imap", b.port)
    with Conn.plain(port) as c:
        c.line()
        c.send(b"a STARTTLS\r\nb LOGIN user secret\r\n")
        rest = c.read_to_eof(timeout=20)
    assert b"b OK" not in rest
    raw = b.all_received()
    assert b"secret" not in raw and b"STARTTLS" not in raw.upper()


def test_imap_preauth_backend_refused(mtd, scripted):
    b = scripted("imap", greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] "
                                  b"logged in as someone\r\n")
    _, port = starttls_service(mtd, "imap", b.port)
    with Conn.plain(port) as c:
        answer = c.read_to_eof(timeout=20)
    assert answer.startswith(b"* BYE"), answer
    assert b"PREAUTH" not in answer


@pytest.mark.parametrize("tls_mode", ["starttls", "implicit"])
def test_imap_id_proxy_fields_removed(mtd, scripted, certs, tls_mode):
    b = scripted("imap")
    m = mtd()
    port = m.add_service("imap", "imap", [b.port], tls_mode=tls_mode)
    m.start()
    if tls_mode == "implicit":
        c = Conn.tls(port, certs.client_context())
    else:
        c = Conn.plain(port)
    with c:
        c.line()
        c.send(b'a ID ("name" "mua" "x-originating-ip" "192.0.2.7" '
               b'"X-Connected-IP" "192.0.2.8" "x-session-id" "s1" '
               b'"version" "1.0")\r\n')
        assert b"a OK" in c.tagged(b"a")
        c.send(b"z LOGOUT\r\n")
        c.tagged(b"z")
    raw = b.all_received()
    assert b'"name" "mua"' in raw and b'"version" "1.0"' in raw
    assert b"192.0.2." not in raw and b"x-session" not in raw.lower()


# ---------------------------------------------------------------------------
# POP3

def test_pop3_stls_with_dovecot(mtd, dovecot, mailbox, certs):
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    mailbox.deliver(msg)
    _, port = starttls_service(mtd, "pop3", dovecot.pop3_port)
    with Conn.plain(port) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"CAPA\r\n")
        capa = pop3_capa(c.pop3_multi())
        assert capa.count(b"STLS") == 1
        assert b"USER" not in capa and b"SASL" not in capa
        for cmd in (b"USER " + mailbox.name.encode(),
                    b"PASS " + mailbox.password.encode(),
                    b"APOP user 0123456789abcdef0123456789abcdef",
                    b"AUTH PLAIN"):
            c.send(cmd + b"\r\n")
            reply = c.line()
            assert reply.startswith(b"-ERR [AUTH]"), (cmd, reply)
        c.send(b"STLS\r\n")
        assert c.line() == b"+OK Begin TLS negotiation\r\n"
        c.starttls(certs.client_context())
        c.send(b"CAPA\r\n")
        capa = pop3_capa(c.pop3_multi())
        assert b"STLS" not in capa and b"USER" in capa
        c.send(b"USER %s\r\nPASS %s\r\nRETR 1\r\n"
               % (mailbox.name.encode(), mailbox.password.encode()))
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK")
        assert c.line().startswith(b"+OK")
        body = c.pop3_multi()[:-3]
        unstuffed = b"\r\n".join(l[1:] if l.startswith(b".") else l
                                 for l in body.split(b"\r\n"))
        assert unstuffed == msg
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")


def test_pop3_xclient_refused(mtd, scripted, certs):
    b = scripted("pop3")
    _, port = starttls_service(mtd, "pop3", b.port)
    with Conn.plain(port) as c:
        c.line()
        c.send(b"XCLIENT ADDR=192.0.2.1\r\n")
        assert c.line().startswith(b"-ERR")
        c.send(b"QUIT\r\n")
        c.line()
    assert b"XCLIENT" not in b.all_received().upper()


@pytest.mark.parametrize("scheme,path", [("imap", "/INBOX;UID=1"),
                                         ("pop3", "/1")])
def test_curl_ssl_reqd_fetch(mtd, dovecot, mailbox, certs, scheme, path):
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    mailbox.deliver(msg)
    backend = dovecot.imap_port if scheme == "imap" else dovecot.pop3_port
    _, port = starttls_service(mtd, scheme, backend)
    out = curl("%s://%s:%d%s" % (scheme, SERVER_NAME, port, path),
               "--ssl-reqd", *curl_tls_args(certs, port),
               "--user", "%s:%s" % (mailbox.name, mailbox.password))
    assert out == msg
