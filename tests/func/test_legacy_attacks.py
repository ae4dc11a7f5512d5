"""
Attacks on the legacy backends' parsers (SPEC section 3, section 8.4
"framing parity" and 8.5 "no cleartext credentials"), each against the
real server it breaks: Exim 4.96 and Courier-IMAP/POP3 from Debian 12
(legacy_util).

Those servers frame input differently from Postfix and Dovecot, so
ambiguous input that mailtlsd forwarded would be executed there:
- Exim answers "BDAT<HTAB>5 LAST" with "500 unrecognized command" and
  then reads the chunk's bytes as commands; it reads a BDAT size with
  %u, so "BDAT 4294967296" is a 0-byte chunk to Exim and 4 GiB to a
  64-bit counter;
- Courier has no LITERAL+ and no BINARY: "a NOOP {19+}" gets "a NO" and
  the literal's bytes are read as the next command (a LOGIN); it splits
  commands at HTAB, so "a LOGIN<HTAB>user pass" logs in; its POP3 takes
  "USER<HTAB>user".
So mailtlsd must answer these itself (SPEC replies) and forward nothing of
them.  Every test puts a recording relay between mailtlsd and the backend
(the exact bytes the backend got) and also reads the backend's own log:
Exim logs each unknown command, protocol error and authentication
failure; Courier (DEBUG_LOGIN=1) each command before login and every
request authdaemond gets.  The credentials in the attacks are real ones,
so that a forwarded attack would visibly succeed.
"""

import base64
import re
import socket
import time

import pytest

import mtlib
from mtlib import Conn
from mda_util import LogWatch, RecordingRelay
from smtp_util import commands, send_segment

SYNTAX_BDAT = b"501 5.5.4 Syntax error\r\n"
ENCRYPT = (b"538 5.7.11 Encryption required for requested authentication "
           b"mechanism\r\n")
NOT_RECOGNIZED = b"500 5.5.2 Error: command not recognized\r\n"
NOT_PERMITTED = b"550 5.7.0 Command not permitted\r\n"
GO_AHEAD = b"220 2.0.0 Ready to start TLS\r\n"
EHLO_C = b"EHLO client.example.test"
POP3_AUTH = (b"-ERR [AUTH] Plaintext authentication disallowed on "
             b"non-secure connection, use STLS first\r\n")
# What Exim and Courier write to their logs when they execute a command
# that mailtlsd should have kept from them.
EXIM_TROUBLE = ("unrecognized command", "SMTP syntax error",
                "SMTP protocol error", "synchronization error",
                "authenticator failed", "smuggled", "XCLIENT", "dropped")
COURIER_LOGIN = ("command=LOGIN", "command=AUTHENTICATE", "command=USER",
                 "command=PASS", "command=APOP", "command=AUTH",
                 "received auth request", "INFO: LOGIN")


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode())


def collect(c, timeout=3.0):
    """Whatever the peer sends until it closes or is quiet for timeout."""
    out = bytearray(c.buf)
    del c.buf[:]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c.sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            chunk = c.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            break
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        end = time.monotonic() + timeout
    return bytes(out)


def first_reply(c, timeout=5):
    """The next SMTP reply, or a note that none came (a backend reading a
    chunk the client never sends answers nothing)."""
    try:
        return c.smtp_reply(timeout=timeout)
    except (mtlib.MtError, EOFError, OSError) as e:
        return b"(no reply: %r)" % e


def some_replies(c, n, timeout=3.0):
    """Up to n SMTP replies, raw, then whatever else comes within a short
    quiet time; stops early when none comes or the connection ends."""
    out = b""
    for _ in range(n):
        try:
            out += c.smtp_reply(timeout=timeout)
        except (mtlib.MtError, EOFError, OSError):
            return out
    return out + collect(c, timeout=0.3)


def smtp_replies(raw):
    """Split a byte stream into complete SMTP replies (multi-line kept)."""
    out, cur = [], b""
    for line in raw.split(b"\r\n")[:-1]:
        cur += line + b"\r\n"
        if line[3:4] != b"-":
            out.append(cur)
            cur = b""
    if cur:
        out.append(cur)
    return out


def settled_log(relay, mark, end_rx):
    """The backend's log since mark, after its session through relay has
    ended (or a bounded wait for that has passed)."""
    try:
        relay.wait_closed(timeout=8)
        mark.wait(end_rx, timeout=4)
    except mtlib.MtError:
        pass
    time.sleep(0.2)     # e.g. Exim's delivery lines follow the session's
    return mark.text()


def log_problems(words, text, who):
    """One problem naming every word of words found in a log text."""
    found = [w for w in words if w in text]
    if not found:
        return []
    return ["%s logged %s:\n%s" % (who, ", ".join(map(repr, found)),
                                   text.rstrip())]


def check(problems, transcript):
    if problems:
        pytest.fail("\n".join(problems) + "\n--- client saw:\n" +
                    transcript.decode("utf-8", "replace"), pytrace=False)


# ---------------------------------------------------------------------------
# Exim

class EximFront:
    """mailtlsd's "mx" (port 25 style, require_starttls = false) and
    "submission" services in front of Exim, through a recording relay."""

    def __init__(self, mtd, exim):
        self.exim = exim
        self.user = exim.users["alice"]
        self.relay = RecordingRelay(exim.port, "exim-relay").start()
        self.m = mtd()
        self.m.add_tls()
        self.m.add_tls("mx", profile="opportunistic")
        self.mx = self.m.add_service("mx", "smtp", [self.relay.port],
                                     tls_mode="starttls", tls="mx",
                                     require_starttls=False)
        self.submission = self.m.add_service("submission", "smtp",
                                             [self.relay.port],
                                             tls_mode="starttls",
                                             tls="main")
        self.m.start()

    def stop(self):
        self.relay.stop()

    def exim_text_after(self, mark):
        """The Exim log since mark, once Exim ended the relay's session
        (bounded: a session mailtlsd keeps open is a finding of its own,
        reported by the assertions on what was received)."""
        return settled_log(self.relay, mark,
                           r"closed by QUIT|lost|dropped|no MAIL in SMTP")


@pytest.fixture
def eximf(mtd, exim):
    f = EximFront(mtd, exim)
    yield f
    f.stop()


def smtp_open(f, phase, certs):
    """A session on mx (cleartext) or submission (after STARTTLS, with
    EHLO again); returns (conn, the backend commands so far)."""
    port = f.mx if phase == "mx-cleartext" else f.submission
    c = Conn.plain(port)
    assert c.smtp_reply().startswith(b"220 ")
    c.send(EHLO_C + b"\r\n")
    words = c.smtp_reply()
    assert b"CHUNKING" in words, words
    sent = [EHLO_C]
    if phase == "submission-tls":
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply() == GO_AHEAD
        c.starttls(certs.client_context())
        c.send(EHLO_C + b"\r\n")
        assert c.smtp_reply().startswith(b"250")
        sent += [b"RSET", EHLO_C]
    return c, sent


# Non-canonical BDAT lines whose size can be read: the chunk is skipped.
BDAT_READABLE = {
    "htab": b"BDAT\t%d LAST",
    "vt": b"BDAT\x0b%d LAST",
    "ff": b"BDAT\x0c%d LAST",
    "leading-blank": b" BDAT %d LAST",
    "two-spaces": b"BDAT  %d LAST",
}
# Sizes at or beyond 2^31: never forwarded (Exim's %u takes 2^32 for 0).
BDAT_HUGE = {
    "size-2to32": b"BDAT 4294967296 LAST",
    "size-2to31": b"BDAT 2147483648",
}


def _smuggled_chunk(f, tok, phase):
    """Commands that Exim would execute if it read the chunk as commands:
    a transaction of its own (delivered to alice if it ran), and in
    cleartext an AUTH and an XCLIENT."""
    chunk = b""
    if phase == "mx-cleartext":
        chunk += b"XCLIENT ADDR=1.2.3.4\r\n"
        chunk += b"AUTH PLAIN " + b64(b"\0alice\0wrong-secret") + b"\r\n"
    chunk += (b"MAIL FROM:<smuggled-%s@example.org>\r\n" % tok.encode() +
              b"RCPT TO:<%s>\r\nDATA\r\n" % f.user.address.encode())
    return chunk


@pytest.mark.parametrize("phase", ["mx-cleartext", "submission-tls"])
@pytest.mark.parametrize("form", sorted(BDAT_READABLE))
def test_exim_bdat_noncanonical_chunk_never_executed(eximf, certs, phase,
                                                     form):
    """SPEC 3: any BDAT line but "BDAT <size>[ LAST]" gets "501 5.5.4
    Syntax error", is never forwarded, and its chunk (the size is
    readable) is skipped: the NOOP after it is the next command."""
    f = eximf
    tok = mtlib.token()
    chunk = _smuggled_chunk(f, tok, phase)
    line = BDAT_READABLE[form] % len(chunk)
    mark = LogWatch(f.exim.log)
    c, sent = smtp_open(f, phase, certs)
    with c:
        c.send(b"MAIL FROM:<a@example.org>\r\n")
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"RCPT TO:<%s>\r\n" % f.user.address.encode())
        assert c.smtp_reply() == b"250 Accepted\r\n"
        sent += [b"MAIL FROM:<a@example.org>",
                 b"RCPT TO:<%s>" % f.user.address.encode()]
        # The BDAT line alone first (as an attacker waits for Exim's
        # "500 unrecognized command" before sending what Exim is then to
        # run), then the chunk, then a command of the client's own.
        send_segment(c, line + b"\r\n")
        first = first_reply(c)
        c.send(chunk + b"NOOP\r\n")
        rest = some_replies(c, 1)
        try:
            c.send(b"QUIT\r\n")
            rest += some_replies(c, 1) + collect(c, timeout=1)
        except OSError:
            pass
    replies = [first] + smtp_replies(rest)
    text = f.exim_text_after(mark)
    raw = f.relay.received()
    problems = []
    if commands(raw) != sent + [b"NOOP", b"QUIT"]:
        problems.append("Exim received other commands than the client's: "
                        "%r" % commands(raw))
    for word in (b"BDAT", b"smuggled", b"XCLIENT", b"AUTH PLAIN"):
        if word in raw:
            problems.append("%r reached Exim" % word)
    problems += log_problems(EXIM_TROUBLE, text, "Exim")
    if tok in "".join(open(p, errors="replace").read()
                      for p in f.user.messages()):
        problems.append("a message holding the chunk's text was "
                        "delivered (BDAT forwarded, chunk taken as data)")
    want = [SYNTAX_BDAT, b"250 OK\r\n"]
    if replies[:2] != want or not replies[2:3] or \
            not replies[2].startswith(b"221 "):
        problems.append("client replies %r, want %r then 221" % (replies,
                                                                   want))
    check(problems, c.transcript + rest)


@pytest.mark.parametrize("phase", ["mx-cleartext", "submission-tls"])
@pytest.mark.parametrize("form", sorted(BDAT_HUGE))
def test_exim_bdat_huge_size_never_forwarded(eximf, certs, phase, form):
    """A size of 2^31 or more is not canonical: "501 5.5.4 Syntax error"
    and never forwarded.  Whether the chunk is then skipped (4 GiB) or its
    lines are read as commands, none of them reaches Exim: they are ones
    mailtlsd refuses in this state (XCLIENT, XFORWARD, cleartext AUTH)."""
    f = eximf
    line = BDAT_HUGE[form]
    chunk = (b"XCLIENT ADDR=1.2.3.4\r\nXFORWARD ADDR=1.2.3.4\r\n")
    if phase == "mx-cleartext":
        chunk += b"AUTH PLAIN " + b64(b"\0alice\0wrong-secret") + b"\r\n"
    mark = LogWatch(f.exim.log)
    c, sent = smtp_open(f, phase, certs)
    with c:
        # In a transaction: Exim would take "BDAT 4294967296 LAST" for an
        # empty last chunk, accept the message and run the rest.
        c.send(b"MAIL FROM:<a@example.org>\r\n")
        assert c.smtp_reply() == b"250 OK\r\n"
        c.send(b"RCPT TO:<%s>\r\n" % f.user.address.encode())
        assert c.smtp_reply() == b"250 Accepted\r\n"
        sent += [b"MAIL FROM:<a@example.org>",
                 b"RCPT TO:<%s>" % f.user.address.encode()]
        send_segment(c, line + b"\r\n")
        first = first_reply(c)
        c.send(chunk + b"NOOP\r\nQUIT\r\n")
        # Skipped as a chunk, nothing comes back: a short quiet time.
        rest = collect(c, timeout=1.5)
    text = f.exim_text_after(mark)
    raw = f.relay.received()
    problems = []
    got = commands(raw)
    if got not in (sent, sent + [b"NOOP", b"QUIT"]):
        problems.append("Exim received other commands than the client's: "
                        "%r" % got)
    for word in (b"BDAT", b"2147483648", b"4294967296", b"XCLIENT",
                 b"XFORWARD", b"AUTH"):
        if word in raw:
            problems.append("%r reached Exim" % word)
    if " <= " in text:
        problems.append("Exim accepted a message")
    problems += log_problems(EXIM_TROUBLE, text, "Exim")
    if first != SYNTAX_BDAT:
        problems.append("BDAT answered %r, want %r" % (first, SYNTAX_BDAT))
    for r in smtp_replies(rest):
        # Only mailtlsd's own refusals, or the NOOP/QUIT replies.
        if not (r in (NOT_PERMITTED, ENCRYPT, b"250 OK\r\n") or
                r.startswith(b"221 ")):
            problems.append("unexpected reply %r" % r)
    check(problems, c.transcript + rest)


def test_exim_cleartext_auth_lines_and_unknown_verbs_never_forwarded(eximf):
    """Port 25 without STARTTLS (SPEC 3): AUTH gets 538 and no prompt, so
    the client's next (base64) lines are not SASL responses but lines of
    no verb: "500 5.5.2 Error: command not recognized", never forwarded;
    so are unknown verbs; XCLIENT/XFORWARD get 550.  Exim would log each
    of them as an unrecognized command."""
    f = eximf
    user = f.user
    plain = b64(b"\0%s\0%s" % (user.name.encode(), user.password.encode()))
    dialogue = [
        (b"AUTH PLAIN", ENCRYPT),
        (plain, NOT_RECOGNIZED),
        (b"AUTH LOGIN", ENCRYPT),
        (b64(user.name), NOT_RECOGNIZED),
        (b64(user.password), NOT_RECOGNIZED),
        (b"FOO bar", NOT_RECOGNIZED),
        (b"XCLIENT ADDR=1.2.3.4", NOT_PERMITTED),
        (b"XFORWARD ADDR=1.2.3.4", NOT_PERMITTED),
        (b"NOOP", b"250 OK\r\n"),
    ]
    mark = LogWatch(f.exim.log)
    got = []
    with Conn.plain(f.mx) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(EHLO_C + b"\r\n")
        assert b"AUTH" not in c.smtp_reply()
        try:
            for cmd, _ in dialogue:
                c.send(cmd + b"\r\n")
                got.append(c.smtp_reply(timeout=10))
            c.send(b"QUIT\r\n")
            got.append(c.smtp_reply(timeout=10))
        except (EOFError, OSError, mtlib.MtError) as e:
            got.append(b"(connection lost: %r)" % e)
    text = f.exim_text_after(mark)
    raw = f.relay.received()
    problems = []
    if commands(raw) != [EHLO_C, b"NOOP", b"QUIT"]:
        problems.append("Exim received %r" % commands(raw))
    for secret in (plain, b64(user.password), b"FOO", b"XCLIENT",
                   b"XFORWARD", b"AUTH"):
        if secret in raw:
            problems.append("%r reached Exim" % secret)
    problems += log_problems(EXIM_TROUBLE, text, "Exim")
    for (cmd, want), reply in zip(dialogue + [(b"QUIT", b"221 ")], got):
        if not reply.startswith(want):
            problems.append("%r answered %r, want %r" % (cmd, reply, want))
    if len(got) != len(dialogue) + 1:
        problems.append("the session ended early: %r" % got[-1])
    check(problems, c.transcript)


# ---------------------------------------------------------------------------
# Courier IMAP

class CourierFront:
    """mailtlsd's imap and pop3 STARTTLS services in front of Courier,
    through recording relays."""

    def __init__(self, mtd, courier, **opts):
        self.courier = courier
        self.imap_relay = RecordingRelay(courier.imap_port,
                                         "courier-imap-relay").start()
        self.pop3_relay = RecordingRelay(courier.pop3_port,
                                         "courier-pop3-relay").start()
        self.m = mtd()
        self.imap = self.m.add_service("imap", "imap",
                                       [self.imap_relay.port],
                                       tls_mode="starttls", **opts)
        self.pop3 = self.m.add_service("pop3", "pop3",
                                       [self.pop3_relay.port],
                                       tls_mode="starttls", **opts)
        self.m.start()

    def stop(self):
        self.imap_relay.stop()
        self.pop3_relay.stop()

    def courier_text_after(self, watch, relay):
        return settled_log(relay, watch, r"INFO: LOGOUT|DEBUG: Disconnected|"
                                         r"INFO: DISCONNECTED")


@pytest.fixture
def courierf(mtd, courier):
    f = CourierFront(mtd, courier)
    yield f
    f.stop()


@pytest.fixture
def cuser(courier):
    """A Courier user of this test with one message: a LOGIN that got
    through would log in for real."""
    u = courier.add_user()
    u.deliver(mtlib.make_message(mtlib.token(), rcpt=u.address))
    return u


def imap_no_login_problems(f, text, raw, user):
    problems = []
    for word in (b"LOGIN", b"SELECT", user.password.encode(), b"\t"):
        if word in raw:
            problems.append("%r reached Courier: %r" % (word, raw))
    return problems + log_problems(COURIER_LOGIN + (user.name,), text,
                                   "Courier")


def tagged_lines(raw):
    return [l for l in raw.split(b"\r\n") if l and not l.startswith(b"* ")]


LITERALS = {
    # LITERAL+ (RFC 7888) and BINARY's literal8 (RFC 3516): Courier
    # advertises neither, so mailtlsd must not forward them.
    "literal-plus": b"{%d+}",
    "literal8-plus": b"~{%d+}",
    "literal8-sync": b"~{%d}",
}


@pytest.mark.parametrize("form", sorted(LITERALS))
def test_courier_literal_without_capability_hides_login(courierf, cuser,
                                                        form):
    """SPEC 3: "{n+}" only with LITERAL+, "~{n}" only with BINARY; else
    "tag BAD" and the literal is skipped.  Courier would answer "a NO" and
    run the literal's "b LOGIN" as a command of its own, in cleartext."""
    f = courierf
    payload = b"b LOGIN %s %s\r\n" % (cuser.name.encode(),
                                      cuser.password.encode())
    marker = LITERALS[form] % len(payload)
    watch = LogWatch(f.courier.log)
    with Conn.plain(f.imap) as c:
        assert c.line().startswith(b"* OK ")
        c.send(b"a NOOP " + marker + b"\r\n" + payload + b"\r\n")
        c.send(b"c SELECT INBOX\r\nd LOGOUT\r\n")
        out = collect(c, timeout=3)
    text = f.courier_text_after(watch, f.imap_relay)
    raw = f.imap_relay.received()
    problems = imap_no_login_problems(f, text, raw, cuser)
    tagged = tagged_lines(out)
    want = [b"a BAD", b"c BAD", b"d OK"]
    if form == "literal8-sync":
        # A synchronizing literal never got its "+": a client that sent
        # it anyway may see its bytes refused as a cleartext LOGIN.
        tagged = [l for l in tagged if not
                  l.startswith(b"b NO [PRIVACYREQUIRED]")]
    if [l[:len(w)] for l, w in zip(tagged, want)] != want or \
            len(tagged) != 3:
        problems.append("tagged replies %r, want %r" % (tagged, want))
    check(problems, out)


HTAB_COMMANDS = {
    "login-htab": b"a LOGIN\t%(user)s %(pw)s",
    "login-htab-args": b"a LOGIN %(user)s\t%(pw)s",
    "id-htab": b'a ID\t("name" "mua" "x-originating-ip" "192.0.2.7")',
}


@pytest.mark.parametrize("name", sorted(HTAB_COMMANDS))
def test_courier_htab_separated_command_refused(courierf, cuser, name):
    """SPEC 3: commands split at single SP only; a control character
    outside a literal or quoted string makes it "tag BAD", never
    forwarded.  Courier splits at HTAB: "a LOGIN<HTAB>user pass" logs in."""
    f = courierf
    cmd = HTAB_COMMANDS[name] % {b"user": cuser.name.encode(),
                                 b"pw": cuser.password.encode()}
    watch = LogWatch(f.courier.log)
    with Conn.plain(f.imap) as c:
        assert c.line().startswith(b"* OK ")
        c.send(cmd + b"\r\n")
        first = c.line(timeout=10)
        c.send(b"c SELECT INBOX\r\nd LOGOUT\r\n")
        out = first + collect(c, timeout=3)
    text = f.courier_text_after(watch, f.imap_relay)
    raw = f.imap_relay.received()
    problems = imap_no_login_problems(f, text, raw, cuser)
    if b"ID" in raw or "command=ID" in text:
        problems.append("the ID command reached Courier")
    tagged = tagged_lines(out)
    if name == "login-htab-args" and tagged and \
            tagged[0].startswith(b"a NO [PRIVACYREQUIRED]"):
        # LOGIN is recognised before the HTAB: refused as a cleartext
        # LOGIN instead, never forwarded either way.
        tagged[0] = b"a BAD"
    if [l[:5] for l in tagged] != [b"a BAD", b"c BAD", b"d OK "]:
        problems.append("tagged replies %r, want a BAD, c BAD, d OK"
                        % tagged)
    check(problems, out)


@pytest.mark.parametrize("phase", ["cleartext", "tls"])
def test_courier_compress_refused_and_counted(courierf, certs, phase):
    """SPEC 3: COMPRESS is refused on every service and counts as an
    error; after max_errors (default 10) refusals the session is closed.
    It never reaches Courier."""
    f = courierf
    with Conn.plain(f.imap) as c:
        assert c.line().startswith(b"* OK ")
        if phase == "tls":
            c.send(b"s STARTTLS\r\n")
            assert c.line() == b"s OK Begin TLS negotiation now\r\n"
            c.starttls(certs.client_context())
        replies = []
        for i in range(10):
            tag = b"z%d" % i
            c.send(tag + b" COMPRESS DEFLATE\r\n")
            try:
                replies.append(c.line(timeout=10))
            except (EOFError, mtlib.MtError, OSError) as e:
                replies.append(repr(e).encode())
                break
        rest = collect(c, timeout=5)
        closed = True
        try:
            c.send(b"y NOOP\r\n")
            closed = collect(c, timeout=3) == b""
        except OSError:
            pass
    problems = []
    for i, r in enumerate(replies):
        tag = b"z%d" % i
        if not (r.startswith(tag + b" BAD") or r.startswith(tag + b" NO")):
            problems.append("COMPRESS %d answered %r" % (i + 1, r))
    if len(replies) != 10:
        problems.append("closed after %d refusals" % len(replies))
    if rest and not rest.startswith(b"* BYE"):
        problems.append("after the 10th refusal: %r" % rest)
    if not closed:
        problems.append("the session is still open after 10 refusals")
    f.imap_relay.wait_closed()
    if b"COMPRESS" in f.imap_relay.received().upper():
        problems.append("COMPRESS reached Courier")
    if not problems:
        f.m.wait_log(r"session end .*reason=too many errors")
    check(problems, c.transcript)


# ---------------------------------------------------------------------------
# Courier POP3

POP3_CREDENTIALS = [
    b"USER %(user)s", b"PASS %(pw)s", b"user %(user)s",
    b"APOP %(user)s 0123456789abcdef0123456789abcdef",
    b"AUTH PLAIN", b"AUTH PLAIN %(ir)s", b"AUTH LOGIN", b"AUTH",
]
# Forms Courier reads as USER/PASS; mailtlsd refuses them one way or another.
POP3_CREDENTIALS_ODD = [b"USER\t%(user)s", b" USER %(user)s",
                        b"PASS\t%(pw)s"]
POP3_NOT_BEFORE_TLS = [b"STAT", b"LIST", b"RETR 1", b"UIDL", b"TOP 1 0",
                       b"NOOP", b"RSET", b"DELE 1", b"LAST", b"XTND XMIT"]


def test_courier_pop3_cleartext_only_capa_stls_quit(courierf, cuser):
    """SPEC 3: USER, PASS, APOP, AUTH in cleartext get "-ERR [AUTH] ..." and
    are never forwarded; before TLS only CAPA, STLS and QUIT are, anything
    else gets -ERR from mailtlsd.  Courier logs every command it gets
    before a login, so its log must show CAPA and QUIT only.  One
    connection per command, so that the error limit does not interfere."""
    f = courierf
    fill = {b"user": cuser.name.encode(), b"pw": cuser.password.encode(),
            b"ir": b64(b"\0%s\0%s" % (cuser.name.encode(),
                                      cuser.password.encode()))}
    watch = LogWatch(f.courier.log)
    problems = []
    transcript = b""
    cases = ([(cmd, POP3_AUTH) for cmd in POP3_CREDENTIALS] +
             [(cmd, b"-ERR") for cmd in POP3_CREDENTIALS_ODD +
              POP3_NOT_BEFORE_TLS])
    for cmd, want in cases:
        with Conn.plain(f.pop3) as c:
            try:
                assert c.line().startswith(b"+OK")
                c.send(cmd % fill + b"\r\n")
                r = c.line(timeout=10)
                if not r.startswith(want):
                    problems.append("%r answered %r" % (cmd, r))
                c.send(b"QUIT\r\n")
                c.line(timeout=10)
            except (EOFError, OSError, mtlib.MtError) as e:
                problems.append("%r: connection lost: %r" % (cmd, e))
            transcript += c.transcript
    with Conn.plain(f.pop3) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"CAPA\r\n")
        capa = c.pop3_multi()
        if b"\r\nSTLS\r\n" not in capa or b"\r\nUSER\r\n" in capa:
            problems.append("CAPA %r" % capa)
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    text = settled_log(f.pop3_relay, watch,
                       r"INFO: LOGOUT|DEBUG: Disconnected")
    raw = f.pop3_relay.received()
    want_raw = b"QUIT\r\n" * len(cases) + b"CAPA\r\nQUIT\r\n"
    if raw != want_raw:
        problems.append("Courier received %r" % raw)
    logged = set(re.findall(r"command=(\S+)", text))
    if not logged <= {"CAPA", "QUIT"}:
        problems.append("Courier logged commands %s" % sorted(logged))
    problems += log_problems(COURIER_LOGIN + (cuser.name,), text, "Courier")
    check(problems, transcript)
