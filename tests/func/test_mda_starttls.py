"""
IMAP (143-style) and POP3 (110-style) STARTTLS services in front of a real
Dovecot (SPEC section 3, IMAP and POP3, and the invariants of section 8).

Between mailtlsd and Dovecot sits a recording relay, so every test can
assert what did (and did not) reach the backend; Dovecot logs every
authentication attempt and trusts the proxy's network, so a credential or a
forged ID/XCLIENT client address that got through would show in its log.
Where it matters a test first shows, directly against Dovecot, that the
same input *would* be visible there (the control), so the assertion can
fail.  Each mailbox holds three messages: a plain one, one whose lines look
like IMAP/POP3 commands, responses and literal markers, and one of 4 MB;
real clients (imaplib, poplib, curl, openssl s_client, fetchmail) must read
them byte-exact after STARTTLS.

The tests that hold for any IMAP/POP3 server also run against Courier
(legacy_util: Courier-IMAP 5.0 and Courier POP3 from Debian 12, with
authdaemond and a userdb), through the same relays: `mda` is parametrized
indirectly with "dovecot" or "courier" (MDA_BACKENDS).

A scripted backend is used only where Dovecot cannot produce the case: a
PREAUTH greeting, capability lists carrying STARTTLS/AUTH=/COMPRESS in
every position, and a reply held back on purpose so that pipelined bytes
arrive deterministically while a STARTTLS waits for its turn.
"""

import base64
import imaplib
import os
import poplib
import re
import threading
import time

import pytest

import mtlib
from legacy_util import MDA_DIALECT, mda_kind
from mtlib import HOST, SERVER_NAME, Conn
from mda_util import (Fetchmail, LogWatch, RecordingRelay, ScriptBackend,
                      make_messages, mda_dovecot, pop3_unstuff,
                      s_client_starttls, tricky_message)
from test_implicit_capabilities import imap_caps
from test_implicit_tls import curl, curl_tls_args

GO_IMAP = b" OK Begin TLS negotiation now\r\n"
GO_POP3 = b"+OK Begin TLS negotiation\r\n"
PRIVACY = (b" NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
           b"non-secure connection, use STARTTLS first\r\n")
POP3_AUTH = (b"-ERR [AUTH] Plaintext authentication disallowed on "
             b"non-secure connection, use STLS first\r\n")
LIT_RX = re.compile(rb"\{(\d+)\+?\}$")
# ID keys only a trusted proxy may send (SPEC section 3).
PROXY_ID = (b'"x-originating-ip" "192.0.2.7" "x-originating-port" "4711" '
            b'"X-Connected-IP" "192.0.2.8" "x-session-id" "forgedsession" '
            b'"x-forward-extra" "192.0.2.9" "x-proxy-ttl" "3"')
PROXY_KEYS = (b"x-originating", b"x-connected", b"x-session", b"x-forward",
              b"x-proxy")


# ---------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def mdove(workroot):
    if os.geteuid() != 0:
        pytest.skip("a Dovecot instance needs root")
    d = mda_dovecot(workroot)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def messages():
    return make_messages()


# For @pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True).
MDA_BACKENDS = ["dovecot", "courier"]


@pytest.fixture
def box(mda, messages):
    """A fresh user of this test holding the three test messages."""
    u = mda.backend.add_user()
    for name in ("plain", "tricky", "big"):
        u.deliver(messages[name])
    return u


class Mda:
    """mailtlsd with imap (STARTTLS), imaps and pop3 (STLS) services, each
    reaching the backend (Dovecot or Courier) through a recording relay.
    `dovecot` is the backend under its historical name."""

    def __init__(self, mtd, dovecot):
        self.backend = self.dovecot = dovecot
        self.kind = mda_kind(dovecot)
        self.dialect = MDA_DIALECT[self.kind]
        self.imap_relay = RecordingRelay(dovecot.imap_port,
                                         "imap-relay").start()
        self.pop3_relay = RecordingRelay(dovecot.pop3_port,
                                         "pop3-relay").start()
        self.m = mtd()
        self.imap = self.m.add_service("imap", "imap",
                                       [self.imap_relay.port],
                                       tls_mode="starttls")
        self.imaps = self.m.add_service("imaps", "imap",
                                        [self.imap_relay.port])
        self.pop3 = self.m.add_service("pop3", "pop3",
                                       [self.pop3_relay.port],
                                       tls_mode="starttls")
        self.m.start()

    def stop(self):
        self.imap_relay.stop()
        self.pop3_relay.stop()


@pytest.fixture
def mda(mtd, request):
    """Dovecot (default) or Courier, by indirect parametrization."""
    kind = getattr(request, "param", "dovecot")
    backend = request.getfixturevalue("mdove" if kind == "dovecot"
                                      else "courier")
    s = Mda(mtd, backend)
    yield s
    s.stop()


def starttls_service(mtd, protocol, backend_port):
    m = mtd()
    port = m.add_service(protocol, protocol, [backend_port],
                         tls_mode="starttls")
    m.start()
    return m, port


# ---------------------------------------------------------------------------
# IMAP helpers

def imap_response(c, tag, timeout=None):
    """Everything up to and including the tagged line for tag, following
    literals so that message text is never taken for that line."""
    want = tag + b" "

    def p(b):
        pos = 0
        while True:
            eol = b.find(b"\r\n", pos)
            if eol < 0:
                return 0
            line = bytes(b[pos:eol])
            if line.startswith(want):
                return eol + 2
            pos = eol + 2
            m = LIT_RX.search(line)
            if m:
                pos += int(m.group(1))
                if pos > len(b):
                    return 0
    return c.read_until(p, limit=64 << 20, timeout=timeout)


def imap_literals(raw):
    """The literal payloads of a response stream, in order."""
    out, pos = [], 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return out
        m = LIT_RX.search(raw[pos:eol])
        pos = eol + 2
        if m:
            n = int(m.group(1))
            out.append(raw[pos:pos + n])
            pos += n


def imap_lines(raw):
    """The lines of a response stream outside literals."""
    out, pos = [], 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return out
        line = raw[pos:eol]
        out.append(line)
        pos = eol + 2
        m = LIT_RX.search(line)
        if m:
            pos += int(m.group(1))


def imap_login(c, box, tag=b"L1"):
    c.send(b'%s LOGIN "%s" "%s"\r\n' % (tag, box.name.encode(),
                                        box.password.encode()))
    out = imap_response(c, tag)
    assert out.split(b"\r\n")[-2].startswith(tag + b" OK"), out
    return out


def imap_starttls(c, certs, tag=b"S1"):
    c.send(tag + b" STARTTLS\r\n")
    assert c.line() == tag + GO_IMAP
    c.starttls(certs.client_context())


def caps_in(out):
    """The capability list of a response, untagged or in a status code."""
    for line in out.split(b"\r\n"):
        if b"CAPABILITY " in line.upper():
            return imap_caps(line)
    raise AssertionError("no capability list in %r" % out)


def imap_cleartext_caps(direct):
    """What mailtlsd must make of a backend's cleartext list."""
    kept = [x for x in direct if not x.startswith(b"AUTH=")
            and x != b"SASL-IR"]
    return kept + [b"STARTTLS", b"LOGINDISABLED"]


def sorted_messages(messages):
    return sorted(messages.values())


# ---------------------------------------------------------------------------
# IMAP: capability lists, STARTTLS, COMPRESS

def test_imap_capabilities_starttls_and_compress_with_dovecot(mda, box,
                                                              certs):
    # Control: what Dovecot itself offers, in cleartext and after login.
    with Conn.plain(mda.dovecot.imap_port) as d:
        direct_greeting = imap_caps(d.line())
        d.send(b"a CAPABILITY\r\n")
        direct = imap_caps(imap_response(d, b"a").split(b"\r\n")[0])
        post_login = caps_in(imap_login(d, box))
        d.send(b"z LOGOUT\r\n")
        imap_response(d, b"z")
    assert b"AUTH=PLAIN" in direct and b"SASL-IR" in direct
    assert b"COMPRESS=DEFLATE" in post_login

    with Conn.plain(mda.imap) as c:
        assert imap_caps(c.line()) == imap_cleartext_caps(direct_greeting)
        c.send(b"C1 CAPABILITY\r\n")
        lines = imap_response(c, b"C1").split(b"\r\n")
        assert imap_caps(lines[0]) == imap_cleartext_caps(direct)
        assert lines[1].startswith(b"C1 OK")
        imap_starttls(c, certs)
        c.send(b"C2 CAPABILITY\r\n")
        caps = imap_caps(imap_response(c, b"C2").split(b"\r\n")[0])
        assert caps == [x for x in direct if x != b"STARTTLS"]
        assert b"AUTH=PLAIN" in caps and b"SASL-IR" in caps
        c.send(b"C3 STARTTLS\r\n")
        assert c.line() == b"C3 BAD TLS already active\r\n"
        caps = caps_in(imap_login(c, box))
        assert caps == [x for x in post_login if
                        not x.startswith(b"COMPRESS=")]
        c.send(b"C4 CAPABILITY\r\n")
        caps = imap_caps(imap_response(c, b"C4").split(b"\r\n")[0])
        assert b"COMPRESS=DEFLATE" not in caps and b"IDLE" in caps
        # Refused here: a compressed stream could no longer be filtered.
        c.send(b"C5 COMPRESS DEFLATE\r\n")
        assert c.line() == \
            b"C5 NO [CANNOT] COMPRESS is not available\r\n"
        c.send(b"C6 NOOP\r\n")
        assert imap_response(c, b"C6").split(b"\r\n")[-2].startswith(
            b"C6 OK")
        c.send(b"C7 LOGOUT\r\n")
        assert b"C7 OK" in imap_response(c, b"C7")
    raw = mda.imap_relay.received().upper()
    assert b"STARTTLS" not in raw and b"COMPRESS" not in raw


def _capa_script(line):
    words = line.split(b" ")
    tag, verb = words[0], (words[1].upper() if len(words) > 1 else b"")
    if verb == b"CAPABILITY":
        return (b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN "
                b"AUTH=SCRAM-SHA-256 SASL-IR LOGINDISABLED COMPRESS=DEFLATE "
                b"IDLE STARTTLS\r\n" + tag +
                b" OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR "
                b"IDLE] done\r\n")
    if verb == b"NOOP":
        return (b"* OK [CAPABILITY IMAP4rev1 starttls auth=plain IDLE] "
                b"untagged\r\n* OK STARTTLS AUTH=PLAIN is prose here\r\n" +
                tag + b" OK NOOP done\r\n")
    if verb == b"LOGOUT":
        return b"* BYE bye\r\n" + tag + b" OK done\r\n"
    return tag + b" OK " + verb + b" done\r\n"


def test_imap_capability_lists_rewritten_in_every_position(mtd, certs):
    b = ScriptBackend(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED "
                      b"AUTH=PLAIN SASL-IR COMPRESS=DEFLATE ID] hi\r\n",
                      _capa_script).start()
    try:
        _, port = starttls_service(mtd, "imap", b.port)
        with Conn.plain(port) as c:
            assert c.line() == (b"* OK [CAPABILITY IMAP4rev1 ID STARTTLS "
                                b"LOGINDISABLED] hi\r\n")
            c.send(b"a CAPABILITY\r\n")
            assert imap_response(c, b"a") == (
                b"* CAPABILITY IMAP4rev1 IDLE STARTTLS LOGINDISABLED\r\n"
                b"a OK [CAPABILITY IMAP4rev1 IDLE STARTTLS LOGINDISABLED] "
                b"done\r\n")
            c.send(b"b NOOP\r\n")
            assert imap_response(c, b"b") == (
                b"* OK [CAPABILITY IMAP4rev1 IDLE STARTTLS LOGINDISABLED] "
                b"untagged\r\n* OK STARTTLS AUTH=PLAIN is prose here\r\n"
                b"b OK NOOP done\r\n")
            imap_starttls(c, certs, b"c")
            c.send(b"d CAPABILITY\r\n")
            assert imap_response(c, b"d") == (
                b"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=SCRAM-SHA-256 "
                b"SASL-IR IDLE\r\n"
                b"d OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR IDLE] "
                b"done\r\n")
            c.send(b"e NOOP\r\n")
            assert imap_response(c, b"e") == (
                b"* OK [CAPABILITY IMAP4rev1 auth=plain IDLE] untagged\r\n"
                b"* OK STARTTLS AUTH=PLAIN is prose here\r\n"
                b"e OK NOOP done\r\n")
            c.send(b"f LOGOUT\r\n")
            imap_response(c, b"f")
    finally:
        b.stop()
    assert b"STARTTLS" not in b.all_received().upper()


# ---------------------------------------------------------------------------
# IMAP: credentials never leave in cleartext

def _sasl_plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())


def assert_no_auth_attempt(watch, user, what, kind="dovecot"):
    """The backend closed the session(s) with no authentication attempt
    and never logged the user name."""
    watch.wait(MDA_DIALECT[kind]["no_login_end"])
    time.sleep(0.2)     # a late auth line would follow the disconnect
    # Every attempt names the user (Dovecot: auth_verbose, its "Login:"
    # and "auth failed" lines; Courier: DEBUG_LOGIN's "username=" and
    # "LOGIN, user=" lines); other tests' lines name other users.
    text = watch.text()
    assert user not in text, "%s reached %s:\n%s" % (what, kind, text)
    # Courier also logs every command it got before a login, and every
    # request authdaemond got.
    for word in ("command=LOGIN", "command=AUTHENTICATE", "command=USER",
                 "command=PASS", "command=APOP", "command=AUTH",
                 "received auth request"):
        assert word not in text, "%s reached %s:\n%s" % (what, kind, text)


def assert_control_visible(watch, user):
    """The check above can fail: an attempt does reach Dovecot's log."""
    watch.wait(re.escape(user))


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
def test_imap_cleartext_credentials_never_reach_backend(mda, box):
    user, pw = box.name.encode(), box.password.encode()
    ir = _sasl_plain(box.name, box.password)
    lit_user = b"{%d+}\r\n%s" % (len(user), user)
    lit_pw = b"{%d+}\r\n%s" % (len(pw), pw)
    watch = LogWatch(mda.dovecot.log)
    with Conn.plain(mda.imap) as c:
        c.line()
        # Atoms, quoted strings, LITERAL+, lower case, every SASL form.
        for tag, cmd in ((b"a1", b"LOGIN %s %s" % (user, pw)),
                         (b"a2", b'login "%s" "%s"' % (user, pw)),
                         (b"a3", b"LOGIN " + lit_user + b" " + lit_pw),
                         (b"a4", b"AUTHENTICATE PLAIN"),
                         (b"a5", b"AUTHENTICATE PLAIN " + ir),
                         (b"a6", b"Authenticate LOGIN")):
            c.send(tag + b" " + cmd + b"\r\n")
            if tag == b"a3" and mda.kind == "courier":
                # Courier has no LITERAL+: the {n+} literal is refused
                # (and skipped) before the verb is looked at (SPEC 3).
                assert c.line().startswith(tag + b" BAD "), cmd
                continue
            # No "+": credentials are never prompted for (SPEC 8.5).
            assert c.line() == tag + PRIVACY, cmd
        # A synchronizing literal is never asked for: the client gets the
        # refusal instead of "+" and drops the command (RFC 9051 7.5).
        c.send(b"a7 LOGIN {%d}\r\n" % len(user))
        assert c.line() == b"a7" + PRIVACY
        c.send(b"a8 NOOP\r\n")
        assert c.line().startswith(b"a8 OK")
        c.send(b"a9 LOGOUT\r\n")
        assert imap_response(c, b"a9").endswith(b"a9" +
                                                mda.dialect["logout_ok"])
    mda.imap_relay.wait_closed()
    raw = mda.imap_relay.received()
    assert raw == b"a8 NOOP\r\na9 LOGOUT\r\n", raw
    assert_no_auth_attempt(watch, box.name, "LOGIN/AUTHENTICATE", mda.kind)
    log = mda.m.log_text()
    assert "LOGIN refused in cleartext" in log
    assert "AUTHENTICATE refused in cleartext" in log
    assert box.password not in log and ir.decode() not in log

    # Control: the same LOGIN sent straight to Dovecot is in its log.
    watch = LogWatch(mda.dovecot.log)
    with Conn.plain(mda.dovecot.imap_port) as d:
        d.line()
        d.send(b"a1 LOGIN %s wrong-password\r\n" % user)
        assert imap_response(d, b"a1").startswith(b"a1 NO")
    assert_control_visible(watch, box.name)


# ---------------------------------------------------------------------------
# IMAP: PREAUTH, ID

@pytest.mark.parametrize("tls_mode", ["starttls", "implicit"])
def test_imap_preauth_greeting(mtd, scripted, certs, tls_mode):
    b = scripted("imap", greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] "
                                  b"logged in as someone\r\n")
    m = mtd()
    port = m.add_service("imap", "imap", [b.port], tls_mode=tls_mode)
    m.start()
    if tls_mode == "implicit":
        # Inside TLS a pre-authenticated session skips nothing: relayed.
        with Conn.tls(port, certs.client_context()) as c:
            assert c.line().startswith(b"* PREAUTH [CAPABILITY IMAP4rev1]")
            c.send(b"a LOGOUT\r\n")
            assert b"a OK" in imap_response(c, b"a")
        return
    with Conn.plain(port) as c:
        c.send(b"a NOOP\r\n")
        answer = c.read_to_eof(timeout=20)
    assert answer == (b"* BYE [UNAVAILABLE] Pre-authenticated session "
                      b"refused in cleartext\r\n"), answer
    assert b.all_received() == b""
    m.wait_log(r"warning: .*PREAUTH in cleartext, closing")


def _id_and_login(c, box, certs, phase):
    c.line()
    if phase == "after-starttls":
        imap_starttls(c, certs)
    c.send(b'i1 ID ("name" "mua" ' + PROXY_ID + b' "version" "1.0")\r\n')
    out = imap_response(c, b"i1")
    assert out.split(b"\r\n")[-2].startswith(b"i1 OK"), out
    if phase == "cleartext":
        imap_starttls(c, certs)
    imap_login(c, box)
    c.send(b"i2 LOGOUT\r\n")
    imap_response(c, b"i2")


def _login_line(watch, user, protocol="imap"):
    return watch.wait(r"%s-login: Info: Login: user=<%s>[^\n]*"
                      % (protocol, re.escape(user))).group(0)


@pytest.mark.parametrize("phase", ["cleartext", "after-starttls",
                                   "implicit"])
def test_imap_id_proxy_parameters_removed(mda, box, certs, phase):
    # Control: Dovecot trusts its proxy's network, so a client that could
    # send these keys through mailtlsd would choose the address it logs.
    watch = LogWatch(mda.dovecot.log)
    with Conn.plain(mda.dovecot.imap_port) as d:
        _id_and_login_direct(d, box)
    assert "rip=192.0.2.7" in _login_line(watch, box.name)

    watch = LogWatch(mda.dovecot.log)
    if phase == "implicit":
        c = Conn.tls(mda.imaps, certs.client_context())
    else:
        c = Conn.plain(mda.imap)
    with c:
        _id_and_login(c, box, certs, phase)
    line = _login_line(watch, box.name)
    assert "rip=127.0.0.1" in line and "forgedsession" not in line, line
    mda.imap_relay.wait_closed()
    raw = mda.imap_relay.received()
    assert b'i1 ID ("name" "mua" "version" "1.0")\r\n' in raw, raw
    for key in PROXY_KEYS:
        assert key not in raw.lower()
    assert b"192.0.2." not in raw
    mda.m.wait_log(r'ID parameter "x-originating-ip" removed')


def _id_and_login_direct(d, box):
    d.line()
    d.send(b'i1 ID ("name" "mua" ' + PROXY_ID + b")\r\n")
    imap_response(d, b"i1")
    imap_login(d, box)
    d.send(b"i2 LOGOUT\r\n")
    imap_response(d, b"i2")


# ---------------------------------------------------------------------------
# IMAP: literals both ways

STARTTLS_TEXT = b"t2 STARTTLS\r\nt3 LOGIN user secret\r\nt4 CAPABILITY\r\n"


def test_imap_cleartext_literals_are_not_commands(mda, certs):
    n = len(STARTTLS_TEXT)
    with Conn.plain(mda.imap) as c:
        c.line()
        # LITERAL+: the bytes follow at once; Dovecot answers once.
        c.send(b"l1 NOOP {%d+}\r\n" % n + STARTTLS_TEXT + b"\r\n")
        assert c.line() == b"l1 OK NOOP completed.\r\n"
        # Synchronizing: the backend's "+" is relayed, then the bytes.
        c.send(b"l2 NOOP {%d}\r\n" % n)
        assert c.line() == b"+ OK\r\n"
        c.send(STARTTLS_TEXT + b"\r\n")
        assert c.line() == b"l2 OK NOOP completed.\r\n"
        # Two literals, the second after a continuation line.
        c.send(b"l3 NOOP {%d+}\r\n%s {%d+}\r\n%s\r\n"
               % (n, STARTTLS_TEXT, n, STARTTLS_TEXT))
        assert c.line() == b"l3 OK NOOP completed.\r\n"
        imap_starttls(c, certs, b"l4")
        c.send(b"l5 NOOP\r\n")
        assert c.line() == b"l5 OK NOOP completed.\r\n"
    raw = mda.imap_relay.received()
    assert raw.startswith(b"l1 NOOP {%d+}\r\n" % n + STARTTLS_TEXT +
                          b"\r\nl2 NOOP {%d}\r\n" % n + STARTTLS_TEXT +
                          b"\r\n")
    assert raw.endswith(b"l5 NOOP\r\n")
    assert raw.count(b"STARTTLS") == 4     # the literal copies only


def test_imap_literals_inside_tls_append_fetch_and_order(mda, box, certs,
                                                         messages):
    # A look-alike message with a synchronizing literal, a 4 MB one with
    # LITERAL+ (client-to-backend literals are streamed, not buffered).
    appended = [tricky_message(mtlib.token()),
                mtlib.make_message(mtlib.token(), size=4 << 20)]
    with Conn.plain(mda.imap) as c:
        c.line()
        imap_starttls(c, certs)
        imap_login(c, box)
        c.send(b"P1 SELECT INBOX\r\n")
        assert b"* 3 EXISTS" in imap_response(c, b"P1")
        # APPEND with a synchronizing literal: wait for "+".
        c.send(b"P2 APPEND INBOX {%d}\r\n" % len(appended[0]))
        assert c.line().startswith(b"+ ")
        c.send(appended[0] + b"\r\n")
        assert b"P2 OK" in imap_response(c, b"P2")
        # And with LITERAL+, in one go.
        c.send(b"P3 APPEND INBOX {%d+}\r\n" % len(appended[1]) +
               appended[1] + b"\r\n")
        assert b"P3 OK" in imap_response(c, b"P3")
        # Pipelined: the refusal mailtlsd writes itself waits for the
        # 8 MB of FETCH data before it, and nothing in that text is taken
        # for a status line, a literal marker or a capability list.
        c.send(b"P4 FETCH 1:* BODY.PEEK[]\r\nP5 STARTTLS\r\nP6 NOOP\r\n"
               b"P7 LOGOUT\r\n")
        out = imap_response(c, b"P7", timeout=60)
    bodies = imap_literals(out)
    assert sorted(bodies) == sorted(list(messages.values()) + appended)
    tagged = [l for l in imap_lines(out) if l[:1] == b"P"]
    assert len(tagged) == 4, tagged
    assert tagged[0].startswith(b"P4 OK Fetch completed"), tagged
    assert tagged[1] == b"P5 BAD TLS already active", tagged
    assert tagged[2].startswith(b"P6 OK") and tagged[3].startswith(b"P7 OK")
    raw = mda.imap_relay.received()
    for msg in appended:
        assert msg in raw
    assert b"\r\nP5 " not in raw      # answered here, never forwarded


def test_imap_literal8_both_ways(mda, box, certs):
    """RFC 3516: ~{n} literals (binary, NUL allowed) are counted the same
    way in both directions."""
    msg = (b"Subject: binary\r\n\r\nbefore\x00after\r\nB2 OK fake\r\n"
           b"* CAPABILITY IMAP4rev1 STARTTLS\r\n~{3}\r\nend\r\n")
    with Conn.plain(mda.imap) as c:
        c.line()
        imap_starttls(c, certs)
        imap_login(c, box)
        c.send(b"B1 APPEND INBOX ~{%d+}\r\n" % len(msg) + msg + b"\r\n")
        assert b"B1 OK" in imap_response(c, b"B1")
        c.send(b"B2 SELECT INBOX\r\n")
        assert b"* 4 EXISTS" in imap_response(c, b"B2")
        c.send(b"B3 FETCH 4 (BINARY.PEEK[] BODY.PEEK[])\r\n")
        out = imap_response(c, b"B3")
        c.send(b"B4 LOGOUT\r\n")
        imap_response(c, b"B4")
    assert b"(BINARY[] ~{%d}\r\n" % len(msg) + msg + b" BODY[] {" in out
    binary, text = imap_literals(out)
    assert binary == msg and text == msg.replace(b"\x00", b"\x80")
    assert b"~{%d+}\r\n" % len(msg) + msg in mda.imap_relay.received()


# ---------------------------------------------------------------------------
# IMAP: IDLE and AUTHENTICATE through the proxy

def test_imap_idle_done_through_proxy(mda, box, certs, messages):
    with Conn.plain(mda.imap) as c:
        c.line()
        imap_starttls(c, certs)
        imap_login(c, box)
        c.send(b"I1 SELECT INBOX\r\n")
        assert b"* 3 EXISTS" in imap_response(c, b"I1")
        c.send(b"I2 IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        new = tricky_message(mtlib.token())
        box.deliver(new)
        # Dovecot tells the idling client; mailtlsd relays it at once.
        exists = b"* 4 EXISTS\r\n"
        c.read_until(lambda b: b.find(exists) + len(exists)
                     if exists in b else 0, timeout=20)
        c.send(b"DONE\r\n")
        assert imap_response(c, b"I2").split(b"\r\n")[-2].startswith(
            b"I2 OK Idle completed")
        c.send(b"I3 FETCH 4 BODY.PEEK[]\r\n")
        assert imap_literals(imap_response(c, b"I3")) == [new]
        # Anything but DONE ends the IDLE and is answered, not forwarded.
        c.send(b"I4 IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        c.send(b"I5 LOGIN someone secret\r\n")
        assert imap_response(c, b"I4").split(b"\r\n")[-2].startswith(
            b"I4 OK Idle completed")
        assert c.line() == b"* BAD Expected DONE\r\n"
        c.send(b"I6 LOGOUT\r\n")
        imap_response(c, b"I6")
    raw = mda.imap_relay.received()
    assert raw.count(b"DONE\r\n") == 2 and b"I5" not in raw


def test_imap_authenticate_continuations_inside_tls(mda, box, certs):
    user, pw = box.name.encode(), box.password.encode()
    b64 = base64.b64encode
    with Conn.plain(mda.imap) as c:
        c.line()
        imap_starttls(c, certs)
        # Cancelled by the client.
        c.send(b"A1 AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(b"*\r\n")
        assert c.line().startswith(b"A1 BAD")
        # A SASL response that looks like a command is a SASL response,
        # and not base64: never forwarded; mailtlsd cancels the exchange
        # ("*") and the backend's answer to that ends it.
        c.send(b"A2 AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(b"A3 STARTTLS\r\n")
        assert c.line().startswith(b"A2 BAD")
        # Two round trips (LOGIN mechanism).
        c.send(b"A4 AUTHENTICATE LOGIN\r\n")
        assert c.line() == b"+ " + b64(b"Username:") + b"\r\n"
        c.send(b64(user) + b"\r\n")
        assert c.line() == b"+ " + b64(b"Password:") + b"\r\n"
        c.send(b64(pw) + b"\r\n")
        assert imap_response(c, b"A4").startswith(b"A4 OK [CAPABILITY ")
        c.send(b"A5 LOGOUT\r\n")
        imap_response(c, b"A5")
    with Conn.plain(mda.imap) as c:
        c.line()
        imap_starttls(c, certs)
        c.send(b"B1 AUTHENTICATE PLAIN " + _sasl_plain(box.name,
                                                       box.password) +
               b"\r\n")       # SASL-IR
        assert imap_response(c, b"B1").startswith(b"B1 OK")
        c.send(b"B2 LOGOUT\r\n")
        imap_response(c, b"B2")
    raw = mda.imap_relay.received()
    assert b"STARTTLS" not in raw
    assert b"*\r\n" in raw            # the cancel sent in its place


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_go_ahead_after_pipelined_commands(mda, box, certs, protocol):
    """Pipelined commands before STARTTLS/STLS are answered first; the
    go-ahead is the last cleartext line, and the session works in TLS."""
    if protocol == "imap":
        with Conn.plain(mda.imap) as c:
            c.line()
            c.send(b"a CAPABILITY\r\nb NOOP\r\nc LOGIN x y\r\n"
                   b"d STARTTLS\r\n")
            out = imap_response(c, b"d")
            tagged = [l[:2] for l in imap_lines(out) if not
                      l.startswith(b"* ")]
            assert tagged == [b"a ", b"b ", b"c ", b"d "], out
            assert out.endswith(b"c" + PRIVACY + b"d" + GO_IMAP)
            c.starttls(certs.client_context())
            imap_login(c, box)
        return
    with Conn.plain(mda.pop3) as c:
        c.line()
        c.send(b"CAPA\r\nUSER x\r\nSTLS\r\n")
        assert b"STLS\r\n" in c.pop3_multi()
        assert c.line() == POP3_AUTH
        assert c.line() == GO_POP3
        c.starttls(certs.client_context())
        _pop3_login(c, box)


# ---------------------------------------------------------------------------
# Injection: pipelined bytes after STARTTLS/STLS

def _held_backend(protocol, slow_verb, release):
    """A scripted backend that holds its reply to slow_verb until release
    is set, so a STARTTLS/STLS behind it must wait."""
    def answer(line):
        words = line.split(b" ")
        if protocol == "imap":
            tag = words[0]
            verb = words[1].upper() if len(words) > 1 else b""
            reply = tag + b" OK " + verb + b" done\r\n"
        else:
            verb = words[0].upper()
            reply = b"+OK " + verb + b" done\r\n"
            if verb == b"CAPA":
                reply += b".\r\n"
        if verb == slow_verb:
            return release, reply
        return reply
    greeting = (b"* OK [CAPABILITY IMAP4rev1] held\r\n" if protocol == "imap"
                else b"+OK held\r\n")
    return ScriptBackend(greeting, answer).start()


# The slow command is one the cleartext allow-lists of SPEC section 3 let
# through (IMAP NOOP, POP3 CAPA, whose reply mailtlsd rewrites).
INJECT = {
    "imap": (b"a STARTTLS\r\n", b"b CAPABILITY\r\n", b"a" + GO_IMAP,
             b"x NOOP\r\n", b"NOOP", b"x OK NOOP done\r\n"),
    "pop3": (b"STLS\r\n", b"CAPA\r\n", GO_POP3, b"CAPA\r\n", b"CAPA",
             b"+OK CAPA done\r\nSTLS\r\n.\r\n"),
}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_injection_while_starttls_waits_for_its_turn(mtd, protocol):
    """Split: the injected command comes in its own segment, after the
    STARTTLS/STLS line but before the go-ahead (held behind a pending
    command)."""
    first, second, _, slow, slow_verb, slow_reply = INJECT[protocol]
    release = threading.Event()
    b = _held_backend(protocol, slow_verb, release)
    try:
        m, port = starttls_service(mtd, protocol, b.port)
        with Conn.plain(port) as c:
            c.line()
            c.send(slow + first)
            b.wait_line(slow.rstrip(b"\r\n"))
            c.send(second)
            time.sleep(0.5)     # let mailtlsd read it, then answer
            release.set()
            rest = c.read_to_eof(timeout=20)
        # No go-ahead, no answer to the injected command.  (IMAP relays
        # the pending command's reply first; POP3 closes at once.)
        assert rest in (slow_reply, b""), rest
        assert b.lines == [slow.rstrip(b"\r\n")]
    finally:
        release.set()
        b.stop()
    m.wait_log(r"warning: .*client=127\.0\.0\.1: \d+ pipelined bytes after "
               r"(STARTTLS|STLS)")


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("how", ["one-segment", "split-after-go-ahead"])
def test_injection_after_starttls_never_answered(mda, protocol, how):
    first, second, go = INJECT[protocol][:3]
    port = mda.imap if protocol == "imap" else mda.pop3
    relay = mda.imap_relay if protocol == "imap" else mda.pop3_relay
    with Conn.plain(port) as c:
        c.line()
        if how == "one-segment":
            c.send(first + second)
            rest = c.read_to_eof(timeout=20)
            assert rest == b"", rest
        else:
            c.send(first)
            assert c.line() == go
            # Cleartext where the ClientHello should be: never read as a
            # command; the handshake fails and the connection closes.
            c.send(second)
            rest = c.read_to_eof(timeout=20)
            assert second.split(b" ")[0] not in rest and b"OK" not in rest
    relay.wait_closed()
    raw = relay.received().upper()
    assert b"STARTTLS" not in raw and b"STLS" not in raw
    assert b"CAPA" not in raw
    if how == "one-segment":
        mda.m.wait_log(r"warning: .*client=127\.0\.0\.1: \d+ pipelined bytes "
                       r"after (STARTTLS|STLS)")
    else:
        # SPEC section 5: a warning with the client address.
        mda.m.wait_log(r"warning: .*client=127\.0\.0\.1: no TLS after the "
                       r"STARTTLS go-ahead")


# ---------------------------------------------------------------------------
# POP3: CAPA, credentials, XCLIENT

def pop3_replies(out, kinds):
    """Split a POP3 reply stream: kinds holds "s" (single-line) or "m"
    (multi-line) per reply; returns [(status, stuffed body or None)]."""
    res, pos = [], 0
    for k in kinds:
        eol = out.index(b"\r\n", pos)
        status, pos = out[pos:eol], eol + 2
        body = None
        if k == "m" and status.startswith(b"+OK"):
            end = out.index(b"\r\n.\r\n", pos - 2)
            body, pos = out[pos:end + 2], end + 5
        res.append((status, body))
    assert pos == len(out), out[pos:pos + 300]
    return res


def _pop3_login(c, box):
    c.send(b"USER %s\r\nPASS %s\r\n" % (box.name.encode(),
                                        box.password.encode()))
    assert c.line().startswith(b"+OK")
    assert c.line().startswith(b"+OK")


def _pop3_stls(c, certs):
    c.send(b"STLS\r\n")
    assert c.line() == GO_POP3
    c.starttls(certs.client_context())


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
def test_pop3_capa_and_stls_with_backend(mda, certs):
    with Conn.plain(mda.dovecot.pop3_port) as d:     # control
        d.line()
        d.send(b"CAPA\r\n")
        direct = d.pop3_multi().split(b"\r\n")
    assert b"USER" in direct and b"SASL PLAIN LOGIN" in direct
    with Conn.plain(mda.pop3) as c:
        c.line()
        c.send(b"CAPA\r\n")
        clear = c.pop3_multi().split(b"\r\n")
        assert clear == [l for l in direct if l not in
                         (b"USER", b"SASL PLAIN LOGIN", b".", b"")] + \
            [b"STLS", b".", b""]
        _pop3_stls(c, certs)
        c.send(b"CAPA\r\n")
        assert c.pop3_multi().split(b"\r\n") == direct
        c.send(b"STLS\r\n")
        assert c.line() == b"-ERR TLS already active\r\n"
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    assert b"STLS" not in mda.pop3_relay.received().upper()


def _pop3_capa_script(line):
    verb = line.split(b" ")[0].upper()
    if verb == b"CAPA":
        return (b"+OK Capability list follows\r\nTOP\r\nSTLS\r\nUSER\r\n"
                b"SASL PLAIN LOGIN\r\nXCLIENT ADDR PORT\r\nUIDL\r\n"
                b"stls\r\n.\r\n")
    if verb == b"QUIT":
        return b"+OK bye\r\n"
    return b"+OK\r\n"


def test_pop3_capa_rewritten_scripted(mtd, certs):
    b = ScriptBackend(b"+OK scripted\r\n", _pop3_capa_script).start()
    try:
        _, port = starttls_service(mtd, "pop3", b.port)
        with Conn.plain(port) as c:
            c.line()
            c.send(b"CAPA\r\n")
            assert c.pop3_multi() == (b"+OK Capability list follows\r\n"
                                      b"TOP\r\nUIDL\r\nSTLS\r\n.\r\n")
            _pop3_stls(c, certs)
            c.send(b"CAPA\r\n")
            assert c.pop3_multi() == (b"+OK Capability list follows\r\n"
                                      b"TOP\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
                                      b"UIDL\r\n.\r\n")
            c.send(b"QUIT\r\n")
            c.line()
    finally:
        b.stop()
    assert b"STLS" not in b.all_received().upper()


def test_pop3_cleartext_credentials_never_reach_dovecot(mda, box):
    user, pw = box.name.encode(), box.password.encode()
    ir = _sasl_plain(box.name, box.password)
    watch = LogWatch(mda.dovecot.log)
    with Conn.plain(mda.pop3) as c:
        c.line()
        for cmd in (b"USER " + user, b"PASS " + pw, b"user " + user,
                    b"APOP %s 0123456789abcdef0123456789abcdef" % user,
                    b"AUTH PLAIN", b"AUTH PLAIN " + ir, b"AUTH LOGIN",
                    b"AUTH"):
            c.send(cmd + b"\r\n")
            # Never a "+" continuation: no credentials are prompted for.
            assert c.line() == POP3_AUTH, cmd
        # The session still works; STAT is outside the cleartext
        # allow-list (SPEC section 3), so mailtlsd refuses it itself.
        c.send(b"STAT\r\n")
        assert c.line().startswith(b"-ERR")
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    mda.pop3_relay.wait_closed()
    assert mda.pop3_relay.received() == b"QUIT\r\n"
    assert_no_auth_attempt(watch, box.name, "USER/PASS/APOP/AUTH")
    log = mda.m.log_text()
    for verb in ("USER", "PASS", "APOP", "AUTH"):
        assert "%s in cleartext refused" % verb in log
    assert box.password not in log and ir.decode() not in log

    watch = LogWatch(mda.dovecot.log)          # control
    with Conn.plain(mda.dovecot.pop3_port) as d:
        d.line()
        d.send(b"USER %s\r\nPASS wrong-password\r\n" % user)
        d.line()
        assert d.line().startswith(b"-ERR")
    assert_control_visible(watch, box.name)


@pytest.mark.parametrize("phase", ["cleartext", "tls"])
def test_pop3_xclient_refused(mda, box, certs, phase):
    xclient = b"XCLIENT ADDR=192.0.2.9 PORT=4711\r\n"
    watch = LogWatch(mda.dovecot.log)          # control: Dovecot obeys it
    with Conn.plain(mda.dovecot.pop3_port) as d:
        d.line()
        d.send(xclient)
        assert d.line().startswith(b"+OK")
        _pop3_login(d, box)
        d.send(b"QUIT\r\n")
        d.line()
    assert "rip=192.0.2.9" in _login_line(watch, box.name, "pop3")

    watch = LogWatch(mda.dovecot.log)
    with Conn.plain(mda.pop3) as c:
        c.line()
        if phase == "tls":
            _pop3_stls(c, certs)
        c.send(xclient)
        assert c.line() == b"-ERR Command not permitted\r\n"
        if phase == "cleartext":
            _pop3_stls(c, certs)
        _pop3_login(c, box)
        c.send(b"XCLIENT ADDR=192.0.2.10\r\n")
        assert c.line() == b"-ERR Command not permitted\r\n"
        c.send(b"QUIT\r\n")
        c.line()
    line = _login_line(watch, box.name, "pop3")
    assert "rip=127.0.0.1" in line, line
    assert not [l for l in watch.text().splitlines()
                if box.name in l and "192.0.2." in l]
    assert b"XCLIENT" not in mda.pop3_relay.received().upper()
    mda.m.wait_log(r"warning: .*XCLIENT refused")


def test_pop3_auth_continuations_inside_tls(mda, box, certs):
    user, pw = box.name.encode(), box.password.encode()
    b64 = base64.b64encode
    with Conn.plain(mda.pop3) as c:
        c.line()
        _pop3_stls(c, certs)
        c.send(b"AUTH\r\n")          # the mechanism list, multi-line
        assert c.pop3_multi() == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        c.send(b"AUTH PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(b"*\r\n")               # cancelled
        assert c.line().startswith(b"-ERR")
        c.send(b"AUTH PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(b"STLS\r\n")            # a SASL response, not a command
        assert c.line().startswith(b"-ERR")
        c.send(b"AUTH LOGIN\r\n")
        assert c.line() == b"+ " + b64(b"Username:") + b"\r\n"
        c.send(b64(user) + b"\r\n")
        assert c.line() == b"+ " + b64(b"Password:") + b"\r\n"
        c.send(b64(pw) + b"\r\n")
        assert c.line().startswith(b"+OK")
        c.send(b"STAT\r\n")
        assert c.line().startswith(b"+OK 3 ")
        c.send(b"QUIT\r\n")
        c.line()
    with Conn.plain(mda.pop3) as c:
        c.line()
        _pop3_stls(c, certs)
        c.send(b"AUTH PLAIN " + _sasl_plain(box.name, box.password) +
               b"\r\n")
        assert c.line().startswith(b"+OK")
        c.send(b"QUIT\r\n")
        c.line()
    raw = mda.pop3_relay.received()
    assert raw.count(b"STLS\r\n") == 1     # the SASL line only
    assert b"\r\n*\r\n" in raw


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
# ---------------------------------------------------------------------------
# POP3: multi-line replies are followed, never parsed

def test_pop3_multiline_replies_followed(mda, box, certs, messages):
    with Conn.plain(mda.pop3) as c:
        c.line()
        _pop3_stls(c, certs)
        _pop3_login(c, box)
        c.send(b"LIST\r\n")
        listing = c.pop3_multi().split(b"\r\n")[1:-2]
        sizes = {int(l.split()[0]): int(l.split()[1]) for l in listing}
        assert sorted(sizes.values()) == sorted(len(m) for m in
                                                messages.values())
        t = [n for n, s in sizes.items() if s == len(messages["tricky"])][0]
        # All pipelined; the STLS refusal and the single-line LIST keep
        # their places behind bodies full of "+OK", "." and "STLS" lines.
        c.send(b"UIDL\r\nTOP %d 0\r\nRETR %d\r\nSTLS\r\nLIST %d\r\n"
               b"TOP %d 4\r\nCAPA\r\nNOOP\r\n" % (t, t, t, t))
        uidl = c.pop3_multi().split(b"\r\n")
        assert uidl[0].startswith(b"+OK") and len(uidl) == 3 + 3
        head = c.pop3_multi()
        retr = c.pop3_multi(limit=16 << 20)
        assert c.line() == b"-ERR TLS already active\r\n"
        assert c.line() == b"+OK %d %d\r\n" % (t, sizes[t])
        top4 = c.pop3_multi()
        capa = c.pop3_multi()
        assert c.line().startswith(b"+OK")
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    msg = messages["tricky"]
    hdr_end = msg.index(b"\r\n\r\n") + 4
    for reply, want in ((head, msg[:hdr_end]), (retr, msg),
                        (top4, msg[:hdr_end] + b"\r\n".join(
                            msg[hdr_end:].split(b"\r\n")[:4]) + b"\r\n")):
        status, _, body = reply.partition(b"\r\n")
        assert status.startswith(b"+OK")
        assert body.endswith(b".\r\n")
        assert pop3_unstuff(body[:-3]) == want
    assert b"STLS" not in capa
    raw = mda.pop3_relay.received()
    assert b"STLS" not in raw.upper()


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
# ---------------------------------------------------------------------------
# Real clients read the messages byte-exact through the STARTTLS services

def test_imaplib_reads_messages_byte_exact(mda, box, certs, messages):
    M = imaplib.IMAP4(HOST, mda.imap, timeout=60)
    try:
        assert "STARTTLS" in M.capabilities
        assert "LOGINDISABLED" in M.capabilities
        assert not [c for c in M.capabilities if c.startswith("AUTH=")]
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            M.login(box.name, box.password)
        M.starttls(ssl_context=certs.client_context())
        assert "STARTTLS" not in M.capabilities
        assert "AUTH=PLAIN" in M.capabilities
        M.login(box.name, box.password)
        typ, data = M.select("INBOX")
        assert typ == "OK" and data == [b"3"]
        typ, data = M.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        bodies = [d[1] for d in data if isinstance(d, tuple)]
        assert sorted(bodies) == sorted_messages(messages)
    finally:
        M.logout()
    assert b"LOGIN" in mda.imap_relay.received()


def test_imaplib_authenticate_plain(mda, box, certs):
    M = imaplib.IMAP4(HOST, mda.imap, timeout=30)
    try:
        M.starttls(ssl_context=certs.client_context())
        typ, _ = M.authenticate(
            "PLAIN", lambda _: b"\0%s\0%s" % (box.name.encode(),
                                              box.password.encode()))
        assert typ == "OK"
        assert M.select("INBOX")[1] == [b"3"]
    finally:
        M.logout()


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
def test_poplib_reads_messages_byte_exact(mda, box, certs, messages):
    P = poplib.POP3(HOST, mda.pop3, timeout=60)
    try:
        caps = P.capa()
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            P.user(box.name)
        P.stls(context=certs.client_context())
        caps = P.capa()
        assert "STLS" not in caps and "USER" in caps
        P.user(box.name)
        P.pass_(box.password)
        count, size = P.stat()
        assert count == 3 and size == sum(len(m) for m in messages.values())
        got, tops = [], []
        for i in range(1, count + 1):
            _, lines, octets = P.retr(i)
            got.append(b"\r\n".join(lines) + b"\r\n")
            _, lines, _ = P.top(i, 0)
            tops.append(b"\r\n".join(lines) + b"\r\n")
        assert sorted(got) == sorted_messages(messages)
        assert sorted(tops) == sorted(m[:m.index(b"\r\n\r\n") + 4]
                                      for m in messages.values())
        assert len(P.uidl()[1]) == 3
        P.quit()
    finally:
        P.close()
    assert b"PASS" in mda.pop3_relay.received()


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_curl_ssl_reqd_reads_messages(mda, box, certs, messages, scheme):
    port = mda.imap if scheme == "imap" else mda.pop3
    got = []
    for n in (1, 2, 3):
        path = "/INBOX;UID=%d" % n if scheme == "imap" else "/%d" % n
        got.append(curl("%s://%s:%d%s" % (scheme, SERVER_NAME, port, path),
                        "--ssl-reqd", *curl_tls_args(certs, port),
                        "--user", "%s:%s" % (box.name, box.password)))
    assert sorted(got) == sorted_messages(messages)


# Dovecot only: s_client sends its whole input at once, and Courier's
# imaplogin/pop3login drop whatever was pipelined behind a successful
# LOGIN/PASS when they exec imapd/pop3d (seen at the relay: the commands
# reach Courier and are never answered).
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_openssl_s_client_starttls(mda, box, certs, messages, proto):
    user, pw = box.name.encode(), box.password.encode()
    if proto == "imap":
        stdin = (b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\n'
                 b"c FETCH 1:* BODY.PEEK[]\r\nd LOGOUT\r\n" % (user, pw))
        port = mda.imap
    else:
        stdin = (b"USER %s\r\nPASS %s\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\n"
                 b"QUIT\r\n" % (user, pw))
        port = mda.pop3
    rc, out, err = s_client_starttls(certs, port, proto, stdin)
    assert rc == 0, err
    if proto == "imap":
        assert sorted(imap_literals(out)) == sorted_messages(messages)
        assert b"d OK Logout completed" in out
    else:
        replies = pop3_replies(out, "ssmmms")
        assert [r[0][:3] for r in replies] == [b"+OK"] * 6, out[:300]
        assert sorted(pop3_unstuff(r[1]) for r in replies[2:5]) == \
            sorted_messages(messages)


@pytest.mark.parametrize("mda", MDA_BACKENDS, indirect=True)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("proto", ["IMAP", "POP3"])
def test_fetchmail_starttls_reads_messages(mda, box, certs, messages,
                                           workdir, proto):
    fm = Fetchmail(workdir, certs)
    port = mda.imap if proto == "IMAP" else mda.pop3
    status, log = fm.run(proto, port, box.name, box.password)
    assert status == 0, log
    assert "upgrade to TLS succeeded" in log, log
    verb = b"STARTTLS" if proto == "IMAP" else b"STLS"
    assert verb not in (mda.imap_relay if proto == "IMAP" else
                        mda.pop3_relay).received().upper()
    # fetchmail hands its MDA Unix text (LF line ends); otherwise the
    # messages are delivered exactly as Dovecot served them.
    want = sorted(m.replace(b"\r\n", b"\n") for m in messages.values())
    assert sorted(fm.delivered()) == want
