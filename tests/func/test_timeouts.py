"""
The timing limits of SPEC section 10 (issue 10 item 3), on the wire, in
front of real Postfix and Dovecot:

- the idle timeout's reply (SMTP 421 4.4.2, IMAP * BYE Autologout, POP3
  -ERR Timeout), exact, in cleartext before STARTTLS and inside TLS, then
  the close;
- no reply in the middle of a transfer: an SMTP client that stalls inside
  its DATA content, an IMAP client that stalls inside its APPEND literal
  (the close comes alone: a 421 there would stand inside the message);
- cleartext_timeout: a require_starttls client that keeps talking but
  never upgrades gets the same 421 and the close; one that upgrades is
  not bound by it;
- smtp_greeting_delay: a patient client gets the greeting after at least
  the delay and a working session (implicit TLS and STARTTLS); an early
  talker gets exactly "554 5.5.1 Protocol error" and EOF, and Postfix
  never sees a command from it;
- each event counted: mailtlsd_timeouts_total{reason} and
  mailtlsd_refusals_total{kind="smtp_greeting_delay"}, exact deltas.

Timings are only asserted as "at least the delay" and "within a bound"
(machines are noisy).
"""

import re
import socket
import threading
import time

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from smtp_util import LogMark, postfix_counts

R_SMTP = b"421 4.4.2 %s Error: timeout exceeded\r\n" % SERVER_NAME.encode()
R_IMAP = b"* BYE Autologout; idle for too long\r\n"
R_POP3 = b"-ERR Timeout\r\n"
R_EARLY = b"554 5.5.1 Protocol error\r\n"
EHLO = b"EHLO client.example.test\r\n"


def _backend(proto, postfix, dovecot):
    return {"smtp": postfix.port, "imap": dovecot.imap_port,
            "pop3": dovecot.pop3_port}[proto]


def _greeting(c, proto):
    if proto == "smtp":
        g = c.smtp_reply()
        assert g.startswith(b"220 "), g
    else:
        g = c.line()
        assert g.startswith(b"* OK" if proto == "imap" else b"+OK"), g
    return g


REPLIES = {"smtp": R_SMTP, "imap": R_IMAP, "pop3": R_POP3}


@pytest.mark.parametrize("proto", ["smtp", "imap", "pop3"])
def test_idle_reply_in_cleartext(mtd, postfix, dovecot, proto):
    """Before STARTTLS: the reply in cleartext, then EOF."""
    m = mtd()
    port = m.add_service("s", proto, [_backend(proto, postfix, dovecot)],
                         tls_mode="starttls", idle_timeout=2)
    m.start()
    with Conn.plain(port) as c:
        _greeting(c, proto)
        started = time.monotonic()
        assert c.read_to_eof(timeout=20) == REPLIES[proto]
        assert time.monotonic() - started >= 1.5
    m.wait_log(r"client=127\.0\.0\.1: idle timeout 2 s, closing$",
               flags=re.M)
    m.wait_log(r"session end .* reason=idle timeout")


@pytest.mark.parametrize("proto", ["smtp", "imap", "pop3"])
def test_idle_reply_inside_tls(mtd, postfix, dovecot, certs, proto):
    """Implicit TLS: the reply is read through the TLS socket."""
    m = mtd()
    port = m.add_service("s", proto, [_backend(proto, postfix, dovecot)],
                         idle_timeout=2)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        _greeting(c, proto)
        assert c.read_to_eof(timeout=20) == REPLIES[proto]
    m.wait_log(r"session end .* reason=idle timeout")


def test_idle_reply_after_starttls(mtd, dovecot, certs):
    """STARTTLS done: the reply inside TLS, not in cleartext."""
    m = mtd()
    port = m.add_service("s", "pop3", [dovecot.pop3_port],
                         tls_mode="starttls", idle_timeout=2)
    m.start()
    with Conn.plain(port) as c:
        _greeting(c, "pop3")
        c.send(b"STLS\r\n")
        assert c.line().startswith(b"+OK")
        c.starttls(certs.client_context())
        assert c.read_to_eof(timeout=20) == R_POP3


def test_no_421_inside_smtp_data(mtd, postfix, alice, certs):
    """A client that stalls in its DATA content is closed without a 421:
    written there, the reply would be read as part of the message."""
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], idle_timeout=2)
    m.start()
    mark = LogMark(postfix.log)
    with Conn.tls(port, certs.client_context()) as c:
        _greeting(c, "smtp")
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        c.send(b"MAIL FROM:<stall@example.test>\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"RCPT TO:<%s>\r\n" % alice.address.encode())
        assert c.smtp_reply().startswith(b"250")
        c.send(b"DATA\r\n")
        assert c.smtp_reply().startswith(b"354")
        c.send(b"Subject: stalled\r\n\r\nhalf a li")
        assert c.read_to_eof(timeout=20) == b""
    m.wait_log(r"idle timeout in the middle of a reply or a transfer: "
               r"closing without the timeout reply")
    m.wait_log(r"idle timeout 2 s, closing \(no reply: mid-transfer\)")
    m.wait_log(r"session end .* reason=idle timeout")
    # Postfix saw the message cut short, not completed.
    line = mark.wait("disconnect from")
    assert "data=0/1" in line or "data=" not in line, line
    assert "stalled" not in mark.text()


def test_no_bye_inside_imap_literal(mtd, dovecot, mailbox, certs):
    """The same for an APPEND literal half sent."""
    m = mtd()
    port = m.add_service("s", "imap", [dovecot.imap_port], idle_timeout=2)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        _greeting(c, "imap")
        c.send(b'a LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                           mailbox.password.encode()))
        assert b"a OK" in c.tagged(b"a")
        c.send(b"b APPEND INBOX {100}\r\n")
        assert c.line().startswith(b"+")
        c.send(b"Subject: stalled\r\n\r\n")
        assert c.read_to_eof(timeout=20) == b""
    m.wait_log(r"closing without the timeout reply")
    m.wait_log(r"session end .* reason=idle timeout")
    assert mailbox.messages() == []


def test_bye_between_imap_responses_while_idling(mtd, dovecot, mailbox,
                                                 certs):
    """IMAP IDLE is idle by design: the idle timer runs only while both
    sides are silent (Dovecot's keepalive comes every 2 minutes), and when
    it fires the BYE is a clean untagged response (RFC 2177)."""
    m = mtd()
    port = m.add_service("s", "imap", [dovecot.imap_port], idle_timeout=2)
    m.start()
    with Conn.tls(port, certs.client_context()) as c:
        _greeting(c, "imap")
        c.send(b'a LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                           mailbox.password.encode()))
        assert b"a OK" in c.tagged(b"a")
        c.send(b"b SELECT INBOX\r\n")
        assert b"b OK" in c.tagged(b"b")
        c.send(b"c IDLE\r\n")
        assert c.line().startswith(b"+ ")
        assert c.read_to_eof(timeout=20) == R_IMAP


def _noop_until_closed(c, limit=30.0):
    """NOOP every 0.4 s (the idle timer never fires) until the server
    closes; returns everything read after the last complete reply."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            c.send(b"NOOP\r\n")
            r = c.smtp_reply(timeout=5)
        except (OSError, EOFError, mtlib.MtError):
            return bytes(c.buf)
        if not r.startswith(b"250"):
            return r + c.read_to_eof(timeout=10)
        time.sleep(0.4)
    raise AssertionError("the session outlived cleartext_timeout")


def test_cleartext_timeout(mtd, postfix, certs):
    """require_starttls: talking does not buy time in cleartext; upgrading
    does."""
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], tls_mode="starttls",
                         idle_timeout=30, cleartext_timeout=2)
    m.start()
    with Conn.plain(port) as c:
        _greeting(c, "smtp")
        started = time.monotonic()
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        assert _noop_until_closed(c) == R_SMTP
        assert time.monotonic() - started >= 1.5
    m.wait_log(r"no STARTTLS within cleartext_timeout 2 s, closing")
    m.wait_log(r"session end .* reason=cleartext timeout")
    # An upgraded session goes on past the cleartext deadline.
    with Conn.plain(port) as c:
        _greeting(c, "smtp")
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply().startswith(b"220")
        c.starttls(certs.client_context())
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        for _ in range(10):
            c.send(b"NOOP\r\n")
            assert c.smtp_reply().startswith(b"250")
            time.sleep(0.4)
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


def test_cleartext_timeout_not_without_require(mtd, postfix):
    """require_starttls = false: cleartext is allowed, so no deadline."""
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], tls_mode="starttls",
                         require_starttls=False, idle_timeout=30,
                         cleartext_timeout=1)
    m.start()
    with Conn.plain(port) as c:
        _greeting(c, "smtp")
        for _ in range(8):
            c.send(b"NOOP\r\n")
            assert c.smtp_reply().startswith(b"250")
            time.sleep(0.4)
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


DELAY = 2


def test_greeting_delay_patient_client_starttls(mtd, postfix, alice, certs):
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], tls_mode="starttls",
                         smtp_greeting_delay=DELAY)
    m.start()
    started = time.monotonic()
    with Conn.plain(port, timeout=30) as c:
        g = _greeting(c, "smtp")
        assert time.monotonic() - started >= DELAY
        assert b"ESMTP" in g
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        c.send(b"STARTTLS\r\n")
        assert c.smtp_reply().startswith(b"220")
        c.starttls(certs.client_context())
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        c.send(b"MAIL FROM:<patient@example.test>\r\n")
        assert c.smtp_reply().startswith(b"250")
        c.send(b"RCPT TO:<%s>\r\n" % alice.address.encode())
        assert c.smtp_reply().startswith(b"250")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


def test_greeting_delay_patient_client_implicit(mtd, postfix, certs):
    """Implicit TLS: the delay counts from the end of the handshake."""
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port],
                         smtp_greeting_delay=DELAY)
    m.start()
    with Conn.tls(port, certs.client_context(), timeout=30) as c:
        handshaken = time.monotonic()
        _greeting(c, "smtp")
        assert time.monotonic() - handshaken >= DELAY - 0.1
        c.send(EHLO)
        assert c.smtp_reply().startswith(b"250")
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_early_talker(mtd, postfix, certs, mode):
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], tls_mode=mode,
                         require_starttls=False, smtp_greeting_delay=DELAY)
    m.start()
    mark = LogMark(postfix.log)
    if mode == "starttls":
        c = Conn.plain(port, timeout=30)
    else:
        c = Conn.tls(port, certs.client_context(), timeout=30)
    with c:
        c.send(b"EHLO early.example.test\r\nMAIL FROM:<early@example.test>"
               b"\r\n")
        assert c.read_to_eof(timeout=20) == R_EARLY
    m.wait_log(r"client=127\.0\.0\.1: early talker: \d+ bytes before the "
               r"greeting \(smtp_greeting_delay %d s\), closing" % DELAY)
    m.wait_log(r"session end .* reason=early talker")
    # The backend connection was made at once and closed: not one command.
    line = mark.wait("disconnect from")
    assert postfix_counts(line) == {}, line
    assert "commands=0" in line, line
    assert "early" not in mark.text()


def test_early_talker_after_part_of_the_delay(mtd, postfix):
    """Bytes sent at any time before the greeting make an early talker."""
    m = mtd()
    port = m.add_service("s", "smtp", [postfix.port], tls_mode="starttls",
                         require_starttls=False, smtp_greeting_delay=3)
    m.start()
    with Conn.plain(port, timeout=30) as c:
        time.sleep(1)
        c.send(b"Q")
        assert c.read_to_eof(timeout=20) == R_EARLY



class SlowGreeter:
    """An SMTP backend that greets only after `after` seconds (a loaded
    server, slow DNS before its banner) and records every line it gets."""

    def __init__(self, after):
        self.after = after
        self.lines = []
        self.sock = mtlib.listen(0)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            with c:
                if self.stop.wait(self.after):
                    return
                c.settimeout(0.2)
                try:
                    c.sendall(b"220 slow.example.test ESMTP\r\n")
                    buf = b""
                    end = time.monotonic() + 20
                    while not self.stop.is_set() and time.monotonic() < end:
                        try:
                            d = c.recv(4096)
                        except socket.timeout:
                            continue
                        if not d:
                            break
                        buf += d
                        while b"\r\n" in buf:
                            line, buf = buf.split(b"\r\n", 1)
                            self.lines.append(line)
                            c.sendall(b"250 ok\r\n")
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_early_talker_after_the_delay_before_a_slow_greeting(mtd):
    """The delay is over but the backend has not greeted yet: the client
    still has no greeting, so its bytes make it an early talker, and the
    backend never sees them (they were relayed once, found in review)."""
    be = SlowGreeter(after=3)
    try:
        m = mtd()
        port = m.add_service("s", "smtp", [be.port], tls_mode="starttls",
                             require_starttls=False, smtp_greeting_delay=1)
        m.start()
        with Conn.plain(port, timeout=30) as c:
            time.sleep(1.5)
            c.send(b"EHLO early.example.test\r\n")
            assert c.read_to_eof(timeout=20) == R_EARLY
        m.wait_log(r"early talker: \d+ bytes before the greeting")
        time.sleep(2.5)     # past the backend's greeting
        assert be.lines == [], be.lines
    finally:
        be.close()


def _scrape(sport):
    import test_metrics
    return test_metrics.scrape(sport)


@pytest.mark.timeout(120)
def test_metrics_deltas(mtd, postfix, dovecot, certs):
    import test_metrics
    val = test_metrics.val
    sport = mtlib.free_port()
    m = mtd(stats_listen=["%s:%d" % (HOST, sport)])
    port = m.add_service("sub", "smtp", [postfix.port], tls_mode="starttls",
                         idle_timeout=30, cleartext_timeout=2,
                         smtp_greeting_delay=1)
    iport = m.add_service("imaps", "imap", [dovecot.imap_port],
                          idle_timeout=2)
    m.start()
    mtlib.wait_port(sport, 10, "stats listener")
    before = _scrape(sport)
    # An early talker, a cleartext timeout (after a patient greeting), an
    # idle timeout inside TLS.
    with Conn.plain(port, timeout=30) as c:
        c.send(b"EHLO x\r\n")
        assert c.read_to_eof(timeout=20) == R_EARLY
    with Conn.plain(port, timeout=30) as c:
        _greeting(c, "smtp")
        assert _noop_until_closed(c) == R_SMTP
    with Conn.tls(iport, certs.client_context()) as c:
        _greeting(c, "imap")
        assert c.read_to_eof(timeout=20) == R_IMAP
    after = test_metrics.quiet(m, sport, 3)

    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    assert d("mailtlsd_refusals_total", service="sub",
             kind="smtp_greeting_delay") == 1
    assert d("mailtlsd_timeouts_total", service="sub",
             reason="cleartext_timeout") == 1
    assert d("mailtlsd_timeouts_total", service="sub",
             reason="idle_timeout") == 0
    assert d("mailtlsd_timeouts_total", service="imaps",
             reason="idle_timeout") == 1
    assert test_metrics.total(after, "mailtlsd_refusals_total",
                              service="sub") - test_metrics.total(
        before, "mailtlsd_refusals_total", service="sub") == 1
    # Series only where something can increment them.
    kinds = {dict(l).get("kind") for (n, l) in after
             if n == "mailtlsd_refusals_total" and
             dict(l)["service"] == "imaps"}
    assert "smtp_greeting_delay" not in kinds
    assert ("mailtlsd_timeouts_total", (("reason", "cleartext_timeout"),
                                        ("service", "imaps"))) not in after
