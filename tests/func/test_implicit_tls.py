"""
Implicit TLS (SMTPS, IMAPS, POP3S) through mailtlsd to the real backends.

Each test asserts on what reached the far side: the Maildir Postfix (or
Exim 4.96, for the tests parametrized over `mta`) delivered into, the exact bytes the aiosmtpd recorder stored, or the exact
bytes Dovecot served from a message the test wrote itself.
"""

import imaplib
import os
import poplib
import smtplib
import subprocess

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME


def split_message(data):
    """(header lines, body) with line ends normalised to LF.

    Postfix's virtual(8) stores LF lines, and adds Return-Path, Received
    and friends; the comparison is on the body and the headers we set.
    """
    data = data.replace(b"\r\n", b"\n")
    head, _, body = data.partition(b"\n\n")
    return head.split(b"\n"), body


def assert_delivered(delivered, sent):
    got_headers, got_body = split_message(delivered)
    sent_headers, sent_body = split_message(sent)
    assert got_body == sent_body
    for h in sent_headers:
        assert h in got_headers, "header %r lost or changed" % h
    assert any(h.startswith(b"Received: ") for h in got_headers)


def curl(*args, timeout=60):
    cmd = ["curl", "--silent", "--show-error", "--max-time", "30"] + \
        list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    assert p.returncode == 0, "curl failed (%d): %s" % (
        p.returncode, p.stderr.decode(errors="replace"))
    return p.stdout


def curl_tls_args(certs, port):
    return ["--cacert", certs.ca, "--resolve",
            "%s:%d:%s" % (SERVER_NAME, port, HOST)]


# ---------------------------------------------------------------------------
# SMTPS

@pytest.mark.parametrize("mta", ["postfix", "exim"], indirect=True)
def test_smtps_smtplib_delivers_through_backend(mtd, mta, certs):
    alice = mta.user
    m = mtd()
    port = m.add_service("smtps", "smtp", [mta.port])
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    with smtplib.SMTP_SSL(HOST, port, context=certs.client_context(),
                          timeout=30) as s:
        code, _ = s.ehlo("client.example.test")
        assert code == 250
        assert "starttls" not in s.esmtp_features
        # Implicit TLS: AUTH is advertised as the backend says.
        assert "PLAIN" in s.esmtp_features.get("auth", "").upper()
        s.login(alice.name, alice.password)
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    mta.assert_arrived(alice.find(tok), msg)


def test_smtps_relays_message_byte_exact(mtd, recorder, certs):
    m = mtd()
    port = m.add_service("smtps", "smtp", [recorder.port])
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt="bob@example.net", size=3 << 20)
    with smtplib.SMTP_SSL(HOST, port, context=certs.client_context(),
                          timeout=60) as s:
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", ["bob@example.net",
                                                 "carol@example.net"],
                          msg) == {}
    got = recorder.wait_messages(1)[0]
    assert got.mail_from == "sender@example.org"
    assert got.rcpt_tos == ["bob@example.net", "carol@example.net"]
    assert got.data == msg
    # The stuffed lines reached the backend stuffed, as the client sent them.
    raw = recorder.all_received()
    assert b"\r\n..leading dot\r\n" in raw
    assert b"\r\n...two leading dots\r\n" in raw
    assert b"ehlo client.example.test\r\n" in raw.lower()


def test_smtps_curl_to_recorder(mtd, recorder, certs, workdir):
    m = mtd()
    port = m.add_service("smtps", "smtp", [recorder.port])
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt="bob@example.net")
    path = os.path.join(workdir, "mail.eml")
    with open(path, "wb") as f:
        f.write(msg)
    curl("smtps://%s:%d" % (SERVER_NAME, port), *curl_tls_args(certs, port),
         "--mail-from", "sender@example.org", "--mail-rcpt",
         "bob@example.net", "--upload-file", path)
    got = recorder.wait_messages(1)[0]
    assert got.rcpt_tos == ["bob@example.net"]
    assert got.data == msg


@pytest.mark.parametrize("mta", ["postfix", "exim"], indirect=True)
def test_smtps_curl_auth_through_backend(mtd, mta, certs, workdir):
    alice = mta.user
    m = mtd()
    port = m.add_service("smtps", "smtp", [mta.port])
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    path = os.path.join(workdir, "mail.eml")
    with open(path, "wb") as f:
        f.write(msg)
    curl("smtps://%s:%d" % (SERVER_NAME, port), *curl_tls_args(certs, port),
         "--user", "%s:%s" % (alice.name, alice.password),
         "--mail-from", "sender@example.org", "--mail-rcpt", alice.address,
         "--upload-file", path)
    mta.assert_arrived(alice.find(tok), msg)
    # The backend saw an authenticated submission, over the plaintext leg.
    assert mta.authenticated_in_log(open(mta.log).read(), alice.name)


# ---------------------------------------------------------------------------
# IMAPS

def test_imaps_curl_fetches_message_byte_exact(mtd, dovecot, mailbox, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    mailbox.deliver(msg)
    out = curl("imaps://%s:%d/INBOX;UID=1" % (SERVER_NAME, port),
               *curl_tls_args(certs, port),
               "--user", "%s:%s" % (mailbox.name, mailbox.password))
    assert out == msg


@pytest.mark.timeout(240)
def test_imaps_imaplib_fetches_large_message(mtd, dovecot, mailbox, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    small = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    big = mtlib.make_message(mtlib.token(), rcpt=mailbox.address,
                             size=6 << 20)
    mailbox.deliver(small)
    mailbox.deliver(big)
    im = imaplib.IMAP4_SSL(HOST, port, ssl_context=certs.client_context(),
                           timeout=60)
    try:
        assert "STARTTLS" not in im.capabilities
        im.login(mailbox.name, mailbox.password)
        typ, data = im.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = im.fetch("2", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert b"RFC822.SIZE %d " % len(big) in data[0][0]
        assert data[0][1] == big
        typ, data = im.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == small
        typ, data = im.uid("SEARCH", None, "ALL")
        assert data == [b"1 2"]
    finally:
        im.logout()


# ---------------------------------------------------------------------------
# POP3S

def test_pop3s_curl_retrieves_message_byte_exact(mtd, dovecot, mailbox,
                                                 certs):
    m = mtd()
    port = m.add_service("pop3s", "pop3", [dovecot.pop3_port])
    m.start()
    msg = mtlib.make_message(mtlib.token(), rcpt=mailbox.address)
    mailbox.deliver(msg)
    out = curl("pop3s://%s:%d/1" % (SERVER_NAME, port),
               *curl_tls_args(certs, port),
               "--user", "%s:%s" % (mailbox.name, mailbox.password))
    assert out == msg


def test_pop3s_poplib_retr_byte_exact(mtd, dovecot, mailbox, certs):
    m = mtd()
    port = m.add_service("pop3s", "pop3", [dovecot.pop3_port])
    m.start()
    msgs = [mtlib.make_message(mtlib.token(), rcpt=mailbox.address,
                               size=n) for n in (0, 1 << 20)]
    for msg in msgs:
        mailbox.deliver(msg)
    p = poplib.POP3_SSL(HOST, port, context=certs.client_context(),
                        timeout=30)
    try:
        capa = p.capa()
        assert "STLS" not in capa
        assert "USER" in capa
        p.user(mailbox.name)
        p.pass_(mailbox.password)
        _, listing, _ = p.list()
        assert listing == [b"1 %d" % len(msgs[0]), b"2 %d" % len(msgs[1])]
        for i, msg in enumerate(msgs, 1):
            _, lines, _ = p.retr(i)
            # poplib removed the stuffing dots; put the CRLFs back.
            assert b"\r\n".join(lines) + b"\r\n" == msg
    finally:
        p.quit()
