"""
SMTP services with tls_mode = "starttls" (SPEC section 3 SMTP, section 8).

Real peers: Postfix 3.7 as the backend (with SASL through Dovecot, so AUTH
after TLS really authenticates, and delivery into a Maildir), the aiosmtpd
recorder (the exact bytes a backend got), and a scripted backend that
advertises what a TLS-enabled server would (STARTTLS, AUTH, XCLIENT,
XFORWARD) and can hold a reply while the test acts.  Clients: raw sockets
(exact bytes), smtplib, swaks, curl and openssl s_client.

Two styles of service, as in the SPEC's example: "submission" (port 587:
require_starttls = true) and "mx" (port 25: require_starttls = false, the
opportunistic TLS profile).  The tests assert on what reached the backend
(its exact bytes, its Maildir, its own log), not only on what the client
saw.
"""

import base64
import email
import email.policy
import os
import re
import smtplib
import subprocess
from email.message import EmailMessage

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from smtp_util import (GatedSMTPBackend, LogMark, commands, postfix_counts,
                       reply_lines, send_segment)
from test_implicit_capabilities import ehlo_keywords
from test_implicit_tls import assert_delivered, curl, curl_tls_args

GO_AHEAD = b"220 2.0.0 Ready to start TLS\r\n"
EHLO_FIRST = b"503 5.5.1 Send EHLO first\r\n"
TLS_ACTIVE = b"503 5.5.1 TLS already active\r\n"
IN_TXN = b"503 5.5.1 MAIL transaction in progress\r\n"
BAD_ARGS = b"501 5.5.4 Syntax error\r\n"
TLS_FIRST = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
ENCRYPT = (b"538 5.7.11 Encryption required for requested authentication "
           b"mechanism\r\n")
NOT_PERMITTED = b"550 5.7.0 Command not permitted\r\n"
SYNTAX = b"500 5.5.2 Syntax error\r\n"
TOO_LONG = b"500 5.5.2 Line too long\r\n"
TOO_MANY = b"421 4.7.0 %s Too many errors\r\n" % SERVER_NAME.encode()
SCRIPTED_OK = b"250 2.0.0 Ok\r\n"
EHLO_C = b"EHLO client.example.test"
LINE_MAX = 4096                 # SPEC section 6, without CRLF


def auth_plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())


def service(mtd, backend, kind="submission", **opts):
    """(MailTLSD, port) of a started STARTTLS service in front of backend.

    kind: "submission" (require_starttls, intermediate profile) or "mx"
    (require_starttls = false, opportunistic profile, as on port 25).
    """
    m = mtd()
    if kind == "mx":
        m.add_tls("mx", profile="opportunistic")
        opts.setdefault("require_starttls", False)
        opts.setdefault("tls", "mx")
    port = m.add_service(kind, "smtp", [backend], tls_mode="starttls",
                         **opts)
    m.start()
    return m, port


def greet(port):
    c = Conn.plain(port)
    greeting = c.smtp_reply()
    assert greeting.startswith(b"220 ") or greeting.startswith(b"220-"), \
        greeting
    return c


def ehlo(c, name=EHLO_C):
    c.send(name + b"\r\n")
    reply = c.smtp_reply()
    assert reply.startswith(b"250"), reply
    return reply


def upgrade(c, certs):
    c.send(b"STARTTLS\r\n")
    assert c.smtp_reply() == GO_AHEAD
    c.starttls(certs.client_context())


def backend_commands(backend):
    """Command lines per backend connection (recorder or scripted)."""
    if isinstance(backend, mtlib.RecordingSMTP):
        mtlib.wait_until(lambda: all(d.closed.is_set()
                                     for d in backend.dialogues), 15,
                         "backend connections closed")
        return [commands(bytes(d.received)) for d in backend.dialogues]
    return [commands(bytes(r)) for r in backend.received]


def backend_raw(backend):
    return backend.all_received()


# ---------------------------------------------------------------------------
# Relay and EHLO rewriting

# A backend with TLS and proxy support enabled advertises all of these; the
# last line is one mailtlsd drops, so it must make a new "250 " line.
EHLO_SCRIPTED = (b"250-scripted.example.test greets client\r\n"
                 b"250-PIPELINING\r\n"
                 b"250-StartTLS\r\n"
                 b"250-AUTH PLAIN LOGIN\r\n"
                 b"250-auth=login\r\n"
                 b"250-XFORWARD NAME ADDR PROTO HELO\r\n"
                 b"250-SIZE 10240000\r\n"
                 b"250-CHUNKING\r\n"
                 b"250 XCLIENT NAME ADDR PROTO HELO\r\n")
EHLO_SCRIPTED_CLEAR = (b"250-scripted.example.test greets client\r\n"
                       b"250-PIPELINING\r\n"
                       b"250-SIZE 10240000\r\n"
                       b"250-CHUNKING\r\n"
                       b"250 STARTTLS\r\n")
EHLO_SCRIPTED_TLS = (b"250-scripted.example.test greets client\r\n"
                     b"250-PIPELINING\r\n"
                     b"250-AUTH PLAIN LOGIN\r\n"
                     b"250-auth=login\r\n"
                     b"250-SIZE 10240000\r\n"
                     b"250 CHUNKING\r\n")
GREETING_SCRIPTED = (b"220-scripted.example.test ESMTP\r\n"
                     b"220 second greeting line\r\n")


@pytest.mark.parametrize("kind", ["submission", "mx"])
def test_ehlo_rewritten_and_replies_relayed(mtd, certs, kind):
    b = GatedSMTPBackend(ehlo=EHLO_SCRIPTED,
                         greeting=GREETING_SCRIPTED).start()
    try:
        _, port = service(mtd, b.port, kind)
        with Conn.plain(port) as c:
            assert c.smtp_reply() == GREETING_SCRIPTED
            c.send(EHLO_C + b"\r\n")
            assert c.smtp_reply() == EHLO_SCRIPTED_CLEAR
            c.send(b"NOOP\r\n")
            assert c.smtp_reply() == SCRIPTED_OK
            c.send(b"HELO client.example.test\r\n")
            assert c.smtp_reply() == b"250 scripted.example.test\r\n"
            # A second EHLO in cleartext: STARTTLS still exactly once.
            c.send(EHLO_C + b"\r\n")
            assert c.smtp_reply() == EHLO_SCRIPTED_CLEAR
            upgrade(c, certs)
            for _ in range(2):
                c.send(EHLO_C + b"\r\n")
                assert c.smtp_reply() == EHLO_SCRIPTED_TLS
            c.send(b"QUIT\r\n")
            assert c.smtp_reply() == b"221 2.0.0 Bye\r\n"
        assert backend_commands(b) == [[
            EHLO_C, b"NOOP", b"HELO client.example.test", EHLO_C,
            b"RSET", EHLO_C, EHLO_C, b"QUIT"]]
    finally:
        b.stop()


def test_postfix_ehlo_rewritten_exactly(mtd, postfix, certs):
    """Against the real Postfix: cleartext = its keywords without AUTH,
    then ours; inside TLS = byte for byte what Postfix says."""
    with Conn.plain(postfix.port) as d:
        greeting = d.smtp_reply()
        direct = ehlo(d)
        d.send(b"QUIT\r\n")
        d.smtp_reply()
    lines = reply_lines(direct)
    assert any(l[4:].upper().startswith(b"AUTH") for l in lines)
    kept = [l[4:] for l in lines if not l[4:].upper().startswith(b"AUTH")]
    kept.append(b"STARTTLS")
    clear = b"".join((b"250 " if i == len(kept) - 1 else b"250-") + k +
                     b"\r\n" for i, k in enumerate(kept))
    assert b"CHUNKING" in kept and b"PIPELINING" in kept

    _, port = service(mtd, postfix.port)
    with Conn.plain(port) as c:
        assert c.smtp_reply() == greeting
        assert ehlo(c) == clear
        upgrade(c, certs)
        assert ehlo(c) == direct
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


# ---------------------------------------------------------------------------
# STARTTLS, and the new session after it

def test_smtp_submission_cleartext_phase(mtd, postfix, alice, certs):
    _, port = service(mtd, postfix.port)
    with Conn.plain(port) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.example.test\r\n")
        words = ehlo_keywords(c.smtp_reply())
        assert words.count(b"STARTTLS") == 1
        assert b"AUTH" not in words
        c.send(b"AUTH PLAIN " + auth_plain(alice.name, alice.password) +
               b"\r\n")
        assert c.smtp_reply() == TLS_FIRST
        c.send(b"MAIL FROM:<sender@example.org>\r\n")
        assert c.smtp_reply() == TLS_FIRST
        c.send(b"NOOP\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS now\r\n")
        assert c.smtp_reply() == BAD_ARGS
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == GO_AHEAD
        c.starttls(certs.client_context())
        # A new session: EHLO first.
        c.send(b"MAIL FROM:<sender@example.org>\r\n")
        assert c.smtp_reply() == EHLO_FIRST
        c.send(b"EHLO client.example.test\r\n")
        words = ehlo_keywords(c.smtp_reply())
        assert b"STARTTLS" not in words and b"AUTH" in words
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == TLS_ACTIVE
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


def test_after_starttls_nothing_of_cleartext_survives(mtd, recorder, certs):
    """Until EHLO/HELO only NOOP, RSET, QUIT pass; the backend got RSET at
    the boundary and nothing the client did not send after it."""
    m, port = service(mtd, recorder.port)
    with greet(port) as c:
        ehlo(c)
        c.send(b"NOOP\r\nRSET\r\n")
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == b"250 OK\r\n"
        upgrade(c, certs)
        for cmd in (b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>",
                    b"DATA", b"AUTH PLAIN " + auth_plain("u", "p"),
                    b"VRFY postmaster", b"ETRN example.org"):
            c.send(cmd + b"\r\n")
            assert c.smtp_reply() == EHLO_FIRST, cmd
        # A refused BDAT's chunk is skipped by its count, not executed.
        c.send(b"BDAT 6\r\nQUIT\r\n")
        assert c.smtp_reply() == EHLO_FIRST
        c.send(b"NOOP\r\nRSET\r\n")
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == TLS_ACTIVE
        # HELO opens the new session as well as EHLO does.
        c.send(b"HELO client.example.test\r\n")
        assert c.smtp_reply().startswith(b"250 ")
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               b"DATA\r\n")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"354")
        c.send(b"Subject: new session\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"221")
    assert backend_commands(recorder) == [[
        EHLO_C, b"NOOP", b"RSET",
        b"RSET",                        # mailtlsd's, at the TLS boundary
        b"NOOP", b"RSET", b"HELO client.example.test",
        b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA",
        b"QUIT"]]
    assert [(r.mail_from, r.rcpt_tos) for r in recorder.messages] == \
        [("a@example.org", ["b@example.net"])]


def test_smtp_starttls_during_transaction(mtd, recorder, certs):
    _, port = service(mtd, recorder.port, "mx")
    with Conn.plain(port) as c:
        c.smtp_reply()
        c.send(b"EHLO client.example.test\r\n")
        c.smtp_reply()
        c.send(b"MAIL FROM:<a@example.org>\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == IN_TXN
        c.send(b"RSET\r\n")
        assert c.smtp_reply().startswith(b"250")
        # Pipelined: STARTTLS is decided once MAIL has been answered.
        c.send(b"MAIL FROM:<b@example.org>\r\nSTARTTLS\r\nRSET\r\n")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply() == IN_TXN
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == GO_AHEAD
        c.starttls(certs.client_context())
        c.send(b"EHLO client.example.test\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    cmds = backend_commands(recorder)[0]
    assert b"STARTTLS" not in [x.upper() for x in cmds]


@pytest.mark.parametrize("kind", ["submission", "mx"])
def test_mail_before_starttls_rcpt_after(mtd, postfix, alice, certs, kind):
    """A MAIL given in cleartext is not there after TLS: Postfix itself
    says it needs MAIL first."""
    _, port = service(mtd, postfix.port, kind)
    with greet(port) as c:
        ehlo(c)
        c.send(b"MAIL FROM:<early@example.org>\r\n")
        if kind == "submission":
            assert c.smtp_reply() == TLS_FIRST
        else:
            assert c.smtp_reply().startswith(b"250 2.1.0")
            c.send(b"STARTTLS\r\n")
            assert c.smtp_reply() == IN_TXN
            c.send(b"RSET\r\n")
            assert c.smtp_reply().startswith(b"250")
        upgrade(c, certs)
        rcpt = b"RCPT TO:<%s>\r\n" % alice.address.encode()
        c.send(rcpt)
        assert c.smtp_reply() == EHLO_FIRST
        ehlo(c)
        c.send(rcpt)
        assert c.smtp_reply() == b"503 5.5.1 Error: need MAIL command\r\n"
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


# ---------------------------------------------------------------------------
# Refusals: answered by mailtlsd, never forwarded

SUBMISSION_REFUSALS = [
    (b"AUTH PLAIN " + auth_plain("user", "cleartext-secret"), TLS_FIRST),
    (b"AUTH LOGIN", TLS_FIRST),
    (b"auth login dXNlcg==", TLS_FIRST),
    (b"MAIL FROM:<a@example.org>", TLS_FIRST),
    (b"RCPT TO:<b@example.net>", TLS_FIRST),
    (b"DATA", TLS_FIRST),
    (b"VRFY postmaster", TLS_FIRST),
    (b"EXPN staff", TLS_FIRST),
    (b"HELP", TLS_FIRST),
    (b"ETRN example.org", TLS_FIRST),
    (b"X-UNKNOWN verb", TLS_FIRST),
    (b"STARTTLS now", BAD_ARGS),
    (b"XCLIENT ADDR=192.0.2.1", NOT_PERMITTED),
    (b"xclient NAME=spoofed.example", NOT_PERMITTED),
    (b"\tXCLIENT ADDR=192.0.2.1", NOT_PERMITTED),
    (b"XFORWARD ADDR=192.0.2.1", NOT_PERMITTED),
]
MX_REFUSALS = [
    (b"AUTH PLAIN " + auth_plain("user", "cleartext-secret"), ENCRYPT),
    (b"AUTH LOGIN", ENCRYPT),
    (b"AUTH CRAM-MD5", ENCRYPT),
    (b"STARTTLS now", BAD_ARGS),
    (b"XCLIENT ADDR=192.0.2.1", NOT_PERMITTED),
    (b"XFORWARD NAME=spoofed.example", NOT_PERMITTED),
]
TLS_REFUSALS = [
    (b"STARTTLS", TLS_ACTIVE),
    (b"STARTTLS now", BAD_ARGS),
    (b"XCLIENT ADDR=192.0.2.1 NAME=spoofed.example", NOT_PERMITTED),
    (b"XFORWARD ADDR=192.0.2.1", NOT_PERMITTED),
    (b" xforward NAME=spoofed.example", NOT_PERMITTED),
]


@pytest.mark.parametrize("phase", ["submission", "mx", "tls"])
def test_refusals_never_forwarded(mtd, certs, phase):
    """Each refused command, on a connection of its own (so that the error
    limit does not interfere), against a backend that would execute it."""
    b = GatedSMTPBackend().start()
    try:
        _, port = service(mtd, b.port, "mx" if phase == "mx" else
                          "submission")
        table = {"submission": SUBMISSION_REFUSALS, "mx": MX_REFUSALS,
                 "tls": TLS_REFUSALS}[phase]
        for cmd, reply in table:
            with greet(port) as c:
                if phase == "tls":
                    ehlo(c)
                    upgrade(c, certs)
                ehlo(c)
                # Pipelined with a NOOP: the refusal keeps its place.
                c.send(cmd + b"\r\nNOOP\r\n")
                assert c.smtp_reply() == reply, cmd
                assert c.smtp_reply() == SCRIPTED_OK, cmd
                c.send(b"QUIT\r\n")
                assert c.smtp_reply().startswith(b"221")
        allowed = [EHLO_C, b"NOOP", b"RSET", b"QUIT"]
        got = backend_commands(b)
        assert len(got) == len(table)
        for cmds in got:
            assert [x for x in cmds if x not in allowed] == [], cmds
        raw = backend_raw(b).upper()
        for word in (b"AUTH", b"XCLIENT", b"XFORWARD", b"STARTTLS",
                     b"CLEARTEXT-SECRET", b"MAIL", b"VRFY"):
            assert word not in raw
    finally:
        b.stop()


def test_bdat_refused_before_tls_chunk_discarded(mtd, recorder):
    """require_starttls: BDAT gets 530 and its chunk, though it holds
    commands, is skipped by its count."""
    _, port = service(mtd, recorder.port)
    chunk = b"QUIT\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n"
    with greet(port) as c:
        ehlo(c)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        assert c.smtp_reply() == TLS_FIRST
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    assert backend_commands(recorder) == [[EHLO_C, b"NOOP", b"QUIT"]]


def test_smtp_credentials_never_reach_backend(mtd, recorder, certs):
    """The recorder sees every byte: no AUTH, no pre-TLS transaction."""
    _, port = service(mtd, recorder.port)
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


# ---------------------------------------------------------------------------
# STARTTLS command injection (CVE-2011-0411 class, nginx CVE-2014-3556)

EVIL_AUTH = auth_plain("victim", "injected-password")
INJECTIONS = {
    "rset": b"STARTTLS\r\nRSET\r\n",
    "auth-mail": (b"STARTTLS\r\nAUTH PLAIN " + EVIL_AUTH +
                  b"\r\nMAIL FROM:<evil@example.org>\r\n"),
    "ehlo-mail": b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@example.org>\r\n",
    "empty-line": b"STARTTLS\r\n\r\n",
    "one-byte": b"STARTTLS\r\nN",
    "bare-lf-after": b"STARTTLS\r\nNOOP evil-injected\n",
    "behind-ehlo": EHLO_C + b"\r\nSTARTTLS\r\nNOOP evil-injected\r\n",
}


@pytest.mark.parametrize("name", sorted(INJECTIONS))
@pytest.mark.parametrize("kind", ["submission", "mx"])
def test_injection_same_segment_refused(mtd, recorder, name, kind):
    """Bytes after STARTTLS in the same read: no go-ahead, nothing of them
    executed, forwarded or answered; a warning; the connection closes."""
    m, port = service(mtd, recorder.port, kind)
    payload = INJECTIONS[name]
    after = payload.split(b"STARTTLS\r\n", 1)[1]
    with greet(port) as c:
        ehlo(c)
        c.send(payload)
        if payload.startswith(b"EHLO"):
            assert c.smtp_reply().startswith(b"250")
        rest = c.read_to_eof(timeout=20)
    assert rest == b"", rest
    m.wait_log(r"client=127\.0\.0\.1: %d pipelined bytes after STARTTLS, "
               r"closing" % len(after))
    m.wait_log(r"session end .*reason=pipelined data after STARTTLS")
    expect = [EHLO_C] * (2 if payload.startswith(b"EHLO") else 1)
    # Not even mailtlsd's own RSET: there was no upgrade.
    assert backend_commands(recorder) == [expect]
    raw = recorder.all_received()
    assert b"evil" not in raw and EVIL_AUTH not in raw
    assert recorder.messages == []


# What a split injection sends in a segment after the STARTTLS line.
LATER = {
    "rset": b"RSET\r\n",
    "auth-mail": (b"AUTH PLAIN " + EVIL_AUTH +
                  b"\r\nMAIL FROM:<evil@example.org>\r\n"),
    "mail": b"MAIL FROM:<evil@example.org>\r\n",
}


@pytest.mark.parametrize("name", sorted(LATER))
def test_injection_later_segment_while_starttls_waits(mtd, certs, name):
    """STARTTLS waits for an earlier reply; the injected bytes come in a
    segment of their own meanwhile: no go-ahead is ever sent."""
    b = GatedSMTPBackend(hold=b"NOOP").start()
    try:
        m, port = service(mtd, b.port, "mx")
        with greet(port) as c:
            ehlo(c)
            c.send(b"NOOP\r\nSTARTTLS\r\n")
            assert b.seen.wait(10), "NOOP never reached the backend"
            send_segment(c, LATER[name])
            b.release()
            assert c.smtp_reply() == SCRIPTED_OK
            rest = c.read_to_eof(timeout=20)
        assert rest == b"", rest
        m.wait_log(r"client=127\.0\.0\.1: %d pipelined bytes after "
                   r"STARTTLS, closing" % len(LATER[name]))
        assert backend_commands(b) == [[EHLO_C, b"NOOP"]]
        assert EVIL_AUTH not in b.all_received()
    finally:
        b.stop()


@pytest.mark.parametrize("name", sorted(LATER))
def test_injection_later_segment_after_go_ahead(mtd, recorder, certs, name):
    """Cleartext where the ClientHello should be: the handshake fails, the
    bytes are never executed, forwarded or answered."""
    m, port = service(mtd, recorder.port, "mx")
    with greet(port) as c:
        ehlo(c)
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == GO_AHEAD
        c.send(LATER[name])
        rest = c.read_to_eof(timeout=20)
    # Nothing, or a TLS alert record: never an SMTP reply.
    assert rest == b"" or rest[:1] == b"\x15", rest
    # SPEC section 5: a warning with the client address.
    m.wait_log(r"warning: .*client=127\.0\.0\.1: no TLS after the STARTTLS "
               r"go-ahead")
    m.wait_log(r"session end .*reason=handshake failed")
    # Nothing after the EHLO: mailtlsd's own RSET goes out only once the
    # client's handshake has completed (SPEC 8.2: never inside the window).
    assert backend_commands(recorder) == [[EHLO_C]]
    raw = recorder.all_received()
    assert b"evil" not in raw and EVIL_AUTH not in raw


def test_starttls_with_bare_lf_is_not_starttls(mtd, recorder, certs):
    """"STARTTLS\\n" is an ambiguous line: refused, so no upgrade and no
    injection; the RSET after it is an ordinary cleartext command."""
    _, port = service(mtd, recorder.port, "mx")
    with greet(port) as c:
        ehlo(c)
        c.send(b"STARTTLS\nRSET\r\n")
        assert c.smtp_reply() == SYNTAX
        assert c.smtp_reply() == b"250 OK\r\n"
        # Still cleartext, in step; a proper STARTTLS works.
        upgrade(c, certs)
        ehlo(c)
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    assert backend_commands(recorder) == [[EHLO_C, b"RSET", b"RSET", EHLO_C,
                                           b"QUIT"]]


def test_go_ahead_waits_for_earlier_replies(mtd, certs):
    """Pipelined EHLO, NOOP, STARTTLS with a slow backend: the NOOP reply
    is delivered in cleartext before the go-ahead, nothing after it."""
    b = GatedSMTPBackend(hold=b"NOOP").start()
    try:
        _, port = service(mtd, b.port)
        with greet(port) as c:
            c.send(EHLO_C + b"\r\nNOOP\r\nSTARTTLS\r\n")
            assert b.seen.wait(10)
            first = c.smtp_reply()
            assert b"250 STARTTLS\r\n" in first
            b.release()
            assert c.smtp_reply() == SCRIPTED_OK
            assert c.smtp_reply() == GO_AHEAD
            c.starttls(certs.client_context())
            c.send(EHLO_C + b"\r\n")
            assert b"STARTTLS" not in c.smtp_reply()
            c.send(b"QUIT\r\n")
            assert c.smtp_reply().startswith(b"221")
        assert backend_commands(b) == [[EHLO_C, b"NOOP", b"RSET", EHLO_C,
                                        b"QUIT"]]
    finally:
        b.stop()


# ---------------------------------------------------------------------------
# PIPELINING (RFC 2920): replies in command order, ours included

def test_pipelined_group_with_local_replies(mtd, recorder, certs):
    m, port = service(mtd, recorder.port, "mx")
    msg = mtlib.make_message(mtlib.token(), rcpt="b@example.net")
    with greet(port) as c:
        # Cleartext, port 25 style: refusals interleaved with relayed ones.
        c.send(EHLO_C + b"\r\nMAIL FROM:<a@example.org>\r\n"
               b"AUTH PLAIN " + auth_plain("u", "p") + b"\r\n"
               b"RCPT TO:<b@example.net>\r\n"
               b"XFORWARD ADDR=192.0.2.1\r\n"
               b"RCPT TO:<c@example.net>\r\n"
               b"STARTTLS now\r\n"
               b"DATA\r\n")
        assert b"250 STARTTLS\r\n" in c.smtp_reply()
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == ENCRYPT
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == NOT_PERMITTED
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == BAD_ARGS
        assert c.smtp_reply().startswith(b"354 ")
        c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\nRSET\r\n")
        assert c.smtp_reply().startswith(b"250 ")
        assert c.smtp_reply() == b"250 OK\r\n"
        upgrade(c, certs)
        # Inside TLS: the content follows DATA at once; mailtlsd holds it
        # until the 354 and frames it as content.
        c.send(EHLO_C + b"\r\nMAIL FROM:<d@example.org>\r\n"
               b"RCPT TO:<e@example.net>\r\n"
               b"STARTTLS\r\n"
               b"XCLIENT ADDR=192.0.2.1\r\n"
               b"RCPT TO:<f@example.net>\r\n"
               b"DATA\r\n" + msg.replace(b"\r\n.", b"\r\n..") +
               b".\r\nNOOP\r\nQUIT\r\n")
        assert b"STARTTLS" not in c.smtp_reply()
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == TLS_ACTIVE
        assert c.smtp_reply() == NOT_PERMITTED
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply().startswith(b"354 ")
        assert c.smtp_reply().startswith(b"250 ")
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply().startswith(b"221 ")
    got = recorder.wait_messages(2)
    assert [(r.mail_from, r.rcpt_tos, r.data) for r in got] == [
        ("a@example.org", ["b@example.net", "c@example.net"], msg),
        ("d@example.org", ["e@example.net", "f@example.net"], msg)]
    assert backend_commands(recorder) == [[
        EHLO_C, b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>",
        b"RCPT TO:<c@example.net>", b"DATA", b"RSET", b"RSET", EHLO_C,
        b"MAIL FROM:<d@example.org>", b"RCPT TO:<e@example.net>",
        b"RCPT TO:<f@example.net>", b"DATA", b"NOOP", b"QUIT"]]


def test_pipelined_transaction_with_refusal_through_postfix(mtd, postfix,
                                                            alice, certs):
    """A pipelined group with a locally refused command in the middle,
    against the real Postfix (which checks pipelining itself)."""
    _, port = service(mtd, postfix.port)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    mark = LogMark(postfix.log)
    with greet(port) as c:
        ehlo(c)
        upgrade(c, certs)
        ehlo(c)
        c.send(b"AUTH PLAIN " + auth_plain(alice.name, alice.password) +
               b"\r\n")
        assert c.smtp_reply().startswith(b"235 ")
        c.send(b"MAIL FROM:<sender@example.org>\r\n"
               b"RCPT TO:<%s>\r\n" % alice.address.encode() +
               b"XCLIENT ADDR=192.0.2.1\r\n"
               b"RCPT TO:<%s>\r\n" % alice.address.encode() +
               b"DATA\r\n")
        assert c.smtp_reply().startswith(b"250 2.1.0")
        assert c.smtp_reply().startswith(b"250 2.1.5")
        assert c.smtp_reply() == NOT_PERMITTED
        assert c.smtp_reply().startswith(b"250 2.1.5")
        assert c.smtp_reply().startswith(b"354 ")
        c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n")
        assert c.smtp_reply().startswith(b"250 2.0.0 Ok: queued")
        assert c.smtp_reply().startswith(b"221 ")
    assert_delivered(alice.find(tok), msg)
    counts = postfix_counts(mark.wait("disconnect from"))
    assert counts == {"ehlo": 2, "auth": 1, "mail": 1, "rcpt": 2, "data": 1,
                      "rset": 1, "quit": 1}, counts
    assert "improper command pipelining" not in mark.text()
    assert "XCLIENT" not in mark.text().upper()


# ---------------------------------------------------------------------------
# Message content: DATA byte-exact, BDAT by count, no smuggling

LOOKALIKES = (b"Subject: lines that look like commands\r\n\r\n"
              b"AUTH PLAIN " + auth_plain("u", "p") + b"\r\n"
              b"STARTTLS\r\n"
              b"XCLIENT ADDR=192.0.2.1\r\n"
              b"MAIL FROM:<evil@example.org>\r\n"
              b"RSET\r\n"
              b"QUIT\r\n"
              b".\r\n"
              b"..\r\n"
              b". \r\n"
              b"...dots\r\n"
              b" .\r\n"
              b".QUIT\r\n"
              b"\x00nul and 8-bit \xc3\xa9\xff\r\n"
              b"last\r\n")


@pytest.mark.parametrize("phase", ["mx-cleartext", "submission-tls"])
def test_data_relayed_byte_exact_never_parsed(mtd, recorder, certs, phase):
    _, port = service(mtd, recorder.port, phase.split("-")[0])
    stuffed = LOOKALIKES.replace(b"\r\n.", b"\r\n..")
    with greet(port) as c:
        ehlo(c)
        if phase.endswith("tls"):
            upgrade(c, certs)
            ehlo(c)
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               b"DATA\r\n")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"354")
        c.send(stuffed + b".\r\nNOOP\r\n")
        # Exactly one reply for the message, then the NOOP's: in step.
        assert c.smtp_reply().startswith(b"250 ")
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    got = recorder.wait_messages(1)
    assert len(got) == 1 and got[0].data == LOOKALIKES
    assert b"DATA\r\n" + stuffed + b".\r\nNOOP\r\n" in recorder.all_received()
    cmds = backend_commands(recorder)[0]
    assert cmds[-4:] == [b"RCPT TO:<b@example.net>", b"DATA", b"NOOP",
                         b"QUIT"]


# For the client, all of this is one message: it holds no CRLF.CRLF.  A
# backend that took a bare LF for a line end would find an end of DATA at
# "\n.\n" or "\r\n.\n" and run the commands after it (CVE-2023-51764).
SMUGGLE = (b"Subject: smuggling\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.org>"
           b"\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n.\n"
           b"after\r\n")


@pytest.mark.parametrize("mode", ["normalize", "reject"])
def test_smtp_bare_lf_cannot_smuggle(mtd, recorder, certs, mode):
    _, port = service(mtd, recorder.port, "mx", smtp_bare_newline=mode)
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
            # Refused, and the connection closes (the backend holds part of
            # the message and must lose it).
            assert final == b"550 5.6.0 Bare LF/CR in message refused\r\n"
            assert c.read_to_eof(timeout=20) == b""
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


def test_smuggling_into_real_postfix_prevented(mtd, postfix, alice):
    """Postfix 3.7 (smtpd_forbid_bare_newline = no) takes "\\n.\\n" for an
    end of DATA when spoken to directly; through mailtlsd it gets one
    message and sees one transaction."""
    _, port = service(mtd, postfix.port, "mx")
    tok, tok2 = mtlib.token(), mtlib.token()
    rcpt = alice.address.encode()
    content = (b"Subject: smuggling " + tok.encode() + b"\r\n\r\nbefore\n.\n"
               b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<" + rcpt +
               b">\r\nDATA\r\nX-Smuggled: " + tok2.encode() +
               b"\r\n\r\nsmuggled\r\n.\nMAIL FROM:<evil2@example.org>\r\n"
               b"after\r\n")
    mark = LogMark(postfix.log)
    with greet(port) as c:
        ehlo(c, b"EHLO mx.example.org")
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<" + rcpt +
               b">\r\nDATA\r\n")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"250")
        assert c.smtp_reply().startswith(b"354")
        c.send(content + b".\r\nNOOP\r\nQUIT\r\n")
        assert c.smtp_reply().startswith(b"250 2.0.0 Ok: queued")
        assert c.smtp_reply().startswith(b"250 2.0.0 Ok")
        assert c.smtp_reply().startswith(b"221")
    delivered = alice.find(tok)
    # The would-be second message is content of the first.
    assert tok2.encode() in delivered
    body = delivered.split(b"\n\n", 1)[1]
    assert body == (b"before\n.\nMAIL FROM:<evil@example.org>\nRCPT TO:<" +
                    rcpt + b">\nDATA\nX-Smuggled: " + tok2.encode() +
                    b"\n\nsmuggled\n.\nMAIL FROM:<evil2@example.org>\n"
                    b"after\n")
    counts = postfix_counts(mark.wait("disconnect from"))
    assert counts == {"ehlo": 1, "mail": 1, "rcpt": 1, "data": 1, "noop": 1,
                      "quit": 1}, counts
    assert "evil" not in mark.text()


def test_bdat_through_postfix_byte_exact(mtd, postfix, alice, certs):
    """CHUNKING as Postfix advertises it: chunks counted, never parsed (a
    chunk holding CRLF.CRLF and commands), BDAT 0 LAST, pipelined."""
    _, port = service(mtd, postfix.port)
    tok = mtlib.token()
    msg = (mtlib.make_message(tok, rcpt=alice.address) +
           b"line\r\n.\r\nQUIT\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n"
           b"..two dots kept as sent\r\n.\r\nend of message\r\n")
    cut = [len(msg) // 3, len(msg) // 3 + 7, len(msg)]
    chunks = [msg[:cut[0]], msg[cut[0]:cut[1]], msg[cut[1]:]]
    assert b"\r\n.\r\n" in chunks[2]
    mark = LogMark(postfix.log)
    with greet(port) as c:
        ehlo(c)
        upgrade(c, certs)
        assert b"CHUNKING" in ehlo_keywords(ehlo(c))
        c.send(b"AUTH PLAIN " + auth_plain(alice.name, alice.password) +
               b"\r\n")
        assert c.smtp_reply().startswith(b"235 ")
        wire = b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<%s>\r\n" \
            % alice.address.encode()
        for ch in chunks:
            wire += b"BDAT %d\r\n" % len(ch) + ch
        wire += b"BDAT 0 LAST\r\nNOOP\r\n"
        c.send(wire)
        assert c.smtp_reply().startswith(b"250 2.1.0")
        assert c.smtp_reply().startswith(b"250 2.1.5")
        for ch in chunks:
            assert c.smtp_reply() == b"250 2.0.0 Ok: %d bytes\r\n" % len(ch)
        assert c.smtp_reply().startswith(b"250 2.0.0 Ok: %d bytes queued as"
                                         % len(msg))
        assert c.smtp_reply().startswith(b"250 2.0.0 Ok")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    assert_delivered(alice.find(tok), msg)
    counts = postfix_counts(mark.wait("disconnect from"))
    assert counts == {"ehlo": 2, "auth": 1, "mail": 1, "rcpt": 1, "bdat": 4,
                      "noop": 1, "rset": 1, "quit": 1}, counts
    assert "evil" not in mark.text()


@pytest.mark.parametrize("phase", ["mx-cleartext", "mx-tls"])
def test_bdat_without_chunking_never_forwarded(mtd, recorder, certs, phase):
    """aiosmtpd has no CHUNKING: it would read a BDAT chunk as commands
    (XCLIENT, cleartext AUTH, a transaction) and answer each.  mailtlsd
    answers BDAT itself and skips the chunk by its count."""
    _, port = service(mtd, recorder.port, "mx")
    chunk = (b"XCLIENT ADDR=192.0.2.1\r\nAUTH PLAIN " +
             auth_plain("u", "chunk-secret") +
             b"\r\nMAIL FROM:<spoof@example.org>\r\n")
    with greet(port) as c:
        if phase.endswith("tls"):
            ehlo(c)
            upgrade(c, certs)
        assert b"CHUNKING" not in ehlo_keywords(ehlo(c))
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == b"250 OK\r\n"
        assert c.smtp_reply() == b"502 5.5.1 Command not implemented\r\n"
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    cmds = backend_commands(recorder)[0]
    assert cmds[-4:] == [b"MAIL FROM:<a@example.org>",
                         b"RCPT TO:<b@example.net>", b"NOOP", b"QUIT"]
    raw = recorder.all_received()
    for word in (b"BDAT", b"XCLIENT", b"AUTH", b"spoof"):
        assert word not in raw


# ---------------------------------------------------------------------------
# Real clients through Postfix

def test_smtp_submission_smtplib_delivers(mtd, postfix, alice, certs):
    _, port = service(mtd, postfix.port)
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


@pytest.mark.timeout(300)
def test_smtplib_send_message_20mb_attachment(mtd, postfix, alice, certs):
    _, port = service(mtd, postfix.port)
    tok = mtlib.token()
    blob = os.urandom(20 * 1024 * 1024)
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = alice.address
    msg["Subject"] = "big %s" % tok
    msg.set_content("token %s\n.\nA lone dot above, then 20 MB.\n" % tok)
    msg.add_attachment(blob, maintype="application",
                       subtype="octet-stream", filename="blob.bin")
    with smtplib.SMTP(HOST, port, timeout=120) as s:
        s.starttls(context=certs.client_context())
        s.login(alice.name, alice.password)
        assert s.send_message(msg) == {}
    delivered = alice.find("big " + tok, timeout=120)
    got = email.message_from_bytes(delivered, policy=email.policy.default)
    assert got["Subject"] == "big %s" % tok
    parts = list(got.iter_attachments())
    assert len(parts) == 1 and parts[0].get_filename() == "blob.bin"
    assert parts[0].get_content() == blob
    assert got.get_body(("plain",)).get_content() == \
        "token %s\n.\nA lone dot above, then 20 MB.\n" % tok


def test_smtp_curl_ssl_reqd_through_postfix(mtd, postfix, alice, certs,
                                            workdir):
    _, port = service(mtd, postfix.port)
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


def swaks(port, *args, timeout=90):
    p = subprocess.run(["swaks", "--server", HOST, "--port", str(port),
                        "--timeout", "30"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


@pytest.mark.parametrize("mode", ["starttls", "starttls-pipeline",
                                  "implicit"])
def test_swaks_through_postfix(mtd, postfix, alice, certs, mode):
    """Port 587 (STARTTLS + AUTH) and 465 style: delivered into the
    Maildir by the real Postfix; AUTH only ever inside TLS."""
    m = mtd()
    if mode == "implicit":
        port = m.add_service("submissions", "smtp", [postfix.port])
        extra = ["--tlsc"]
    else:
        port = m.add_service("submission", "smtp", [postfix.port],
                             tls_mode="starttls")
        extra = ["--tls"]
        if mode.endswith("pipeline"):
            extra.append("--pipeline")
    m.start()
    tok = mtlib.token()
    rc, out = swaks(port, *extra,
                    "--tls-verify", "--tls-ca-path", certs.ca,
                    "--tls-sni", SERVER_NAME,
                    "--auth", "PLAIN", "--auth-user", alice.name,
                    "--auth-password", alice.password,
                    "--from", "sender@example.org", "--to", alice.address,
                    "--header", "Subject: swaks %s" % tok,
                    "--body", "body " + tok)
    assert rc == 0, out
    delivered = alice.find(tok)
    assert b"Subject: swaks " + tok.encode() in delivered
    # " ~> " marks what swaks sent inside TLS, " -> " in cleartext.
    assert " ~> AUTH PLAIN" in out and " -> AUTH" not in out, out
    if mode != "implicit":
        assert " -> STARTTLS" in out and "<-  220 2.0.0 Ready to start TLS" \
            in out, out


def test_auth_login_continuations_after_tls(mtd, postfix, alice, certs):
    """SASL with 334 continuations inside TLS, through to Dovecot: a
    cancelled exchange, then a successful one; SASL lines are relayed as
    responses, never taken for commands."""
    _, port = service(mtd, postfix.port)
    mark = LogMark(postfix.log)
    b64 = lambda s: base64.b64encode(s.encode())   # noqa: E731
    with greet(port) as c:
        ehlo(c)
        upgrade(c, certs)
        ehlo(c)
        c.send(b"AUTH LOGIN\r\n")
        assert c.smtp_reply() == b"334 VXNlcm5hbWU6\r\n"
        c.send(b"*\r\n")
        assert c.smtp_reply().startswith(b"501 5.7.0")
        c.send(b"AUTH LOGIN\r\n")
        assert c.smtp_reply() == b"334 VXNlcm5hbWU6\r\n"
        c.send(b64(alice.name) + b"\r\n")
        assert c.smtp_reply() == b"334 UGFzc3dvcmQ6\r\n"
        c.send(b64(alice.password) + b"\r\n")
        assert c.smtp_reply().startswith(b"235 2.7.0")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    counts = postfix_counts(mark.wait("disconnect from"))
    # Two AUTH commands, one of them successful; and mailtlsd's RSET.
    assert counts == {"ehlo": 2, "auth": "1/2", "rset": 1, "quit": 1}, counts


def test_openssl_s_client_starttls_auth(mtd, postfix, alice, certs):
    """openssl s_client -starttls smtp finds our STARTTLS, verifies the
    certificate; AUTH inside TLS reaches Dovecot through Postfix."""
    _, port = service(mtd, postfix.port)
    good = auth_plain(alice.name, alice.password)
    bad = auth_plain(alice.name, "wrong-password")
    rc, out = mtlib.s_client(
        certs, port,
        ["-starttls", "smtp", "-name", "client.example.test", "-crlf",
         "-ign_eof", "-servername", SERVER_NAME, "-verify_return_error"],
        stdin=b"EHLO client.example.test\nAUTH PLAIN " + bad +
        b"\nAUTH PLAIN " + good + b"\nQUIT\n")
    assert rc == 0, out
    assert "Didn't find STARTTLS" not in out, out
    assert "Verify return code: 0 (ok)" in out, out
    assert re.search(r"250-AUTH PLAIN", out), out
    assert "535 5.7.8 Error: authentication failed" in out, out
    assert "235 2.7.0 Authentication successful" in out, out
    assert "221 2.0.0 Bye" in out, out


# ---------------------------------------------------------------------------
# Plain sessions on a port-25 style service (require_starttls = false)

def test_smtp_mx_plain_delivery_and_cleartext_auth(mtd, recorder):
    """Port 25 without STARTTLS: mail flows, credentials do not."""
    _, port = service(mtd, recorder.port, "mx")
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


def test_mx_plaintext_delivery_into_postfix(mtd, postfix, alice):
    """An MTA without TLS still delivers through a port-25 style service:
    swaks in plaintext, into the Maildir."""
    _, port = service(mtd, postfix.port, "mx")
    tok = mtlib.token()
    mark = LogMark(postfix.log)
    rc, out = swaks(port, "--ehlo", "mx.example.org",
                    "--from", "sender@example.org", "--to", alice.address,
                    "--header", "Subject: plain mx %s" % tok,
                    "--body", "body " + tok + "\n.\n..\nQUIT\n")
    assert rc == 0, out
    assert "<-  250-STARTTLS" in out or "<-  250 STARTTLS" in out, out
    assert " -> STARTTLS" not in out and " ~> " not in out, out
    delivered = alice.find("plain mx " + tok)
    assert b"\n.\n..\nQUIT\n" in delivered
    counts = postfix_counts(mark.wait("disconnect from"))
    assert counts == {"ehlo": 1, "mail": 1, "rcpt": 1, "data": 1,
                      "quit": 1}, counts


# ---------------------------------------------------------------------------
# Bounded parsing of the client stream

def test_line_length_limit(mtd, certs):
    """4096 bytes plus CRLF pass; one more is "500 5.5.2 Line too long",
    never forwarded, and the session stays in step."""
    b = GatedSMTPBackend().start()
    try:
        _, port = service(mtd, b.port, "mx")
        ok_line = b"NOOP " + b"f" * (LINE_MAX - 5)
        long_line = b"NOOP " + b"r" * (LINE_MAX - 4)
        assert len(ok_line) == LINE_MAX and len(long_line) == LINE_MAX + 1
        with greet(port) as c:
            ehlo(c)
            c.send(ok_line + b"\r\n" + long_line + b"\r\nNOOP\r\n")
            assert c.smtp_reply() == SCRIPTED_OK
            assert c.smtp_reply() == TOO_LONG
            assert c.smtp_reply() == SCRIPTED_OK
            # Much longer, in TLS, split over several sends.
            upgrade(c, certs)
            ehlo(c)
            c.send(b"MAIL FROM:<" + b"x" * 70000)
            c.send(b"y" * 70000 + b">\r\nNOOP\r\n")
            assert c.smtp_reply() == TOO_LONG
            assert c.smtp_reply() == SCRIPTED_OK
            c.send(b"QUIT\r\n")
            assert c.smtp_reply().startswith(b"221")
        assert backend_commands(b) == [[EHLO_C, ok_line, b"NOOP", b"RSET",
                                        EHLO_C, b"NOOP", b"QUIT"]]
    finally:
        b.stop()


def test_malformed_command_lines_refused(mtd):
    """NUL, bare LF, bare CR, empty lines: refused, never forwarded (the
    backend could frame them differently); 8-bit text is forwarded."""
    b = GatedSMTPBackend().start()
    try:
        _, port = service(mtd, b.port, "mx")
        with greet(port) as c:
            ehlo(c)
            c.send(b"NOOP a\x00b\r\n"          # NUL
                   b"RSET\n"                  # bare LF ending
                   b"NOOP x\rMAIL FROM:<evil@example.org>\r\n"  # bare CR
                   b"\r\n"                    # empty
                   b" \t \r\n"                # blanks only
                   b"NOOP \xc3\xa9t\xc3\xa9 \xff\r\n"  # 8-bit: forwarded
                   b"NOOP\r\n")
            for want in (SYNTAX, SYNTAX, SYNTAX, SYNTAX, SYNTAX, SCRIPTED_OK,
                         SCRIPTED_OK):
                assert c.smtp_reply() == want
            c.send(b"QUIT\r\n")
            assert c.smtp_reply().startswith(b"221")
        assert b.all_received() == (EHLO_C + b"\r\nNOOP \xc3\xa9t\xc3\xa9 "
                                    b"\xff\r\nNOOP\r\nQUIT\r\n")
    finally:
        b.stop()


def test_unfinished_line_bounded_by_idle_timeout(mtd):
    """A client that never ends its line is closed by the idle timeout; a
    flood without a line end costs one refusal and no forwarding."""
    b = GatedSMTPBackend().start()
    try:
        m, port = service(mtd, b.port, "mx", idle_timeout=2)
        with greet(port) as c:
            ehlo(c)
            c.send(b"MAIL FROM:<a@example.org")
            rest = c.read_to_eof(timeout=20)
        assert rest == b"" or rest.startswith(b"421 "), rest
        m.wait_log(r"session end .*reason=idle timeout")
        with greet(port) as c:
            ehlo(c)
            for _ in range(16):
                c.send(b"z" * 65536)
            assert c.smtp_reply() == TOO_LONG
            # The line end closes the skipped line; in step again.
            c.send(b"\r\nNOOP\r\n")
            assert c.smtp_reply() == SCRIPTED_OK
            c.send(b"z" * 1000)
            rest = c.read_to_eof(timeout=20)
        assert rest == b"" or rest.startswith(b"421 "), rest
        assert backend_commands(b) == [[EHLO_C], [EHLO_C, b"NOOP"]]
        assert b"z" not in b.all_received() and b"MAIL" not in \
            b.all_received()
    finally:
        b.stop()


@pytest.mark.parametrize("phase", ["cleartext", "tls"])
def test_repeated_errors_close(mtd, certs, phase):
    b = GatedSMTPBackend().start()
    try:
        m, port = service(mtd, b.port)
        with greet(port) as c:
            ehlo(c)
            if phase == "tls":
                upgrade(c, certs)
                ehlo(c)
            c.send(b"NOOP\r\n" + b"XCLIENT ADDR=192.0.2.1\r\n" * 4 +
                   b"\r\nNOOP\x00\r\nAUTH\nSTARTTLS x\r\n" +
                   b"X" * 5000 + b"\r\n" + b"XFORWARD ADDR=192.0.2.1\r\n" +
                   b"NOOP\r\n")
            out = c.read_to_eof(timeout=20)
        assert out == (SCRIPTED_OK + NOT_PERMITTED * 4 + SYNTAX * 3 +
                       BAD_ARGS + TOO_LONG + NOT_PERMITTED + TOO_MANY), out
        m.wait_log(r"client=127\.0\.0\.1: 10 refused commands, closing")
        m.wait_log(r"session end .*reason=too many errors")
        cmds = backend_commands(b)[0]
        assert cmds[-1] == b"NOOP" and cmds.count(b"NOOP") == 1
    finally:
        b.stop()
