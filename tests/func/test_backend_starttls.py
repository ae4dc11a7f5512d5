"""
Client mode with STARTTLS towards the backend (SPEC section 12,
backend_tls = "starttls").

mailtlsd reads the server's greeting, sends EHLO / CAPABILITY / CAPA,
requires STARTTLS / STLS among the capabilities, sends STARTTLS / STLS
itself, verifies the server's certificate, and only then relays the
client's session, inside TLS.  The client hears nothing before: its
first line is mailtlsd's own greeting after a verified handshake (SMTP
"220 <hostname> ESMTP", IMAP "* OK <hostname> ready", POP3 "+OK
<hostname> ready"), or the protocol's temporary failure of SPEC section 3
when the server cannot be used, with one error line naming why.  There is
never a fallback to cleartext: after such a failure not one byte of the
client's reaches the server.

Real servers: a Postfix offering STARTTLS with its own certificate
(smtpd_tls_security_level = may) and a Dovecot with ssl = yes and
disable_plaintext_auth = yes.  Dovecot counts a connection whose two ends
have the same address as secure, so mailtlsd connects to it from
127.0.0.2 (backend_source): there a cleartext LOGIN is refused, as the
test checks first, and the logins through mailtlsd work only because they
went inside TLS.  Scripted servers (a socket per connection, on loopback)
check the failures and the server side's injection exactly, and record
every byte mailtlsd sent them.
"""

import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time

import pytest

import mtlib
from mtlib import HOST, OTHER_NAME, SERVER_NAME, Conn
from test_implicit_tls import assert_delivered

UNAVAILABLE = {
    "smtp": b"421 4.3.2 " + SERVER_NAME.encode() +
            b" Service temporarily unavailable\r\n",
    "imap": b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
    "pop3": b"-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
}
GREETING = {
    "smtp": b"220 " + SERVER_NAME.encode() + b" ESMTP\r\n",
    "imap": b"* OK " + SERVER_NAME.encode() + b" ready\r\n",
    "pop3": b"+OK " + SERVER_NAME.encode() + b" ready\r\n",
}
END_RX = (r"session end service=%s .* backend_tls=TLSv1\.[23]/\S+ "
          r"verified=%s")
SOURCE = "127.0.0.2"


# ---------------------------------------------------------------------------
# Real servers with STARTTLS of their own.

@pytest.fixture(scope="module")
def sdove(workroot, certs):
    if os.geteuid() != 0:
        pytest.skip("a Dovecot instance needs root")
    d = mtlib.Dovecot(workroot, subdir="dovecot-stls",
                      tls=(certs.rsa_chain, certs.rsa_key),
                      extra_conf="disable_plaintext_auth = yes\n")
    d.add_user("dave", "dave-secret")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dave(sdove):
    return sdove.users["dave"]


@pytest.fixture(scope="module")
def spost(workroot, certs, sdove, dave):
    p = mtlib.Postfix(workroot, sdove, dave, subdir="postfix-stls",
                      tls=(certs.rsa_chain, certs.rsa_key), xclient=True)
    p.start()
    yield p
    p.stop()


def client_mode(m, name, protocol, port, tls_mode="none", **opts):
    """A service towards port with backend_tls = "starttls"."""
    opts.setdefault("backend_tls", "starttls")
    return m.add_service(name, protocol, [port], tls_mode=tls_mode, **opts)


def read_log(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_in_log(path, pattern, timeout=10.0):
    rx = re.compile(pattern)
    return mtlib.wait_until(lambda: rx.search(read_log(path)), timeout,
                            "%s: /%s/" % (os.path.basename(path), pattern),
                            interval=0.1)


def test_dovecot_refuses_cleartext_login(sdove, dave):
    """The premise of the Dovecot tests: from 127.0.0.2 a cleartext login
    is refused (disable_plaintext_auth = yes)."""
    with Conn.plain(sdove.imap_port, source=SOURCE) as c:
        greeting = c.line()
        assert b"LOGINDISABLED" in greeting and b"STARTTLS" in greeting
        c.send(b"a LOGIN dave dave-secret\r\n")
        r = c.tagged(b"a")
        assert b"\r\na NO [PRIVACYREQUIRED]" in r, r
    with Conn.plain(sdove.pop3_port, source=SOURCE) as c:
        assert c.line().startswith(b"+OK")
        c.send(b"USER dave\r\n")
        assert c.line().startswith(b"-ERR")


def test_smtp_to_postfix_starttls(mtd, certs, spost, dave):
    """smtplib in plaintext -> mailtlsd -> Postfix's STARTTLS: delivered
    byte for byte, the EHLO the client sees is Postfix's post-TLS one
    (AUTH offered, STARTTLS not), Postfix logs the TLS connection and the
    end line has the server side's TLS facts."""
    m = mtd()
    port = client_mode(m, "relay", "smtp", spost.port,
                       backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    mark = mtlib.LogMark(spost.log)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    with Conn.plain(port) as c:
        assert c.line() == GREETING["smtp"]
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        code, caps = s.ehlo("client.example.test")
        assert code == 250
        assert s.has_extn("auth"), caps
        assert not s.has_extn("starttls"), caps
        s.login("dave", "dave-secret")
        s.sendmail("sender@example.org", [dave.address], msg)
    assert_delivered(dave.find(tok), msg)
    m.wait_log(END_RX % ("relay", re.escape(SERVER_NAME)))
    mtlib.wait_until(lambda: re.search(
        r"Anonymous TLS connection established from "
        r"localhost\[127\.0\.0\.1\]", mark.text()), 10,
        "postfix: TLS connection established")
    # Postfix saw our EHLO twice (before and after TLS) and STARTTLS.
    assert "improper command pipelining" not in mark.text()


def smtp_stuffed(msg):
    """msg (CRLF lines) as DATA content, dot-stuffed, with its end."""
    lines = msg.split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((b"." + line if line.startswith(b".") else line) +
                    b"\r\n" for line in lines[:-1]) + b".\r\n"


@pytest.mark.parametrize("xclient", [False, True])
def test_smtp_pipelined_session_then_half_close(mtd, certs, spost, dave,
                                                xclient):
    """A legacy script that writes its whole SMTP session at once and
    half-closes at once (printf ... | nc -N): its EOF comes while
    mailtlsd still talks to Postfix (EHLO, STARTTLS, the handshake, with
    xclient also EHLO and XCLIENT inside TLS).  Nothing is lost: the held
    bytes are relayed once the backend leg is ready, the half-close
    follows, and the message arrives byte for byte.  (The replies after
    the message are not checked: the half-close is a close_notify, which
    Postfix may leave unread when it closes after QUIT, and its kernel
    then resets the connection, its last reply with it.)"""
    m = mtd()
    port = client_mode(m, "relay", "smtp",
                       spost.xclient_port if xclient else spost.port,
                       xclient=xclient, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    script = (b"EHLO legacy.example.test\r\n"
              b"MAIL FROM:<sender@example.org>\r\n"
              b"RCPT TO:<" + dave.address.encode() + b">\r\n"
              b"DATA\r\n" + smtp_stuffed(msg) + b"QUIT\r\n")
    with Conn.plain(port) as c:
        c.send(script)
        c.sock.shutdown(socket.SHUT_WR)
        got = c.read_to_eof()
    assert got.startswith(b"220 "), got
    assert b"\r\n354 " in got and b"421 " not in got, got
    assert_delivered(dave.find(tok), msg)
    m.wait_log(END_RX % ("relay", re.escape(SERVER_NAME)))


def test_smtp_xclient_inside_starttls(mtd, certs, spost, dave):
    """xclient with backend_tls = "starttls": EHLO and STARTTLS in
    cleartext, then EHLO and XCLIENT inside TLS, whose reply greets the
    client; Postfix logs the client's own address (127.0.0.2).  With
    tls_mode = "starttls" on the client side the client's STARTTLS takes
    a fresh backend connection, which gets the whole dialogue again."""
    m = mtd()
    nport = client_mode(m, "relay", "smtp", spost.xclient_port,
                        xclient=True, backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME)
    sport = client_mode(m, "sub", "smtp", spost.xclient_port,
                        tls_mode="starttls", xclient=True,
                        backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME)
    m.start()
    for port, starttls in ((nport, False), (sport, True)):
        mark = mtlib.LogMark(spost.log)
        tok = mtlib.token()
        msg = mtlib.make_message(tok, rcpt=dave.address)
        with smtplib.SMTP(HOST, port, timeout=30,
                          source_address=(SOURCE, 0)) as s:
            if starttls:
                s.ehlo("client.example.test")
                s.starttls(context=certs.client_context())
            code, caps = s.ehlo("client.example.test")
            assert code == 250 and s.has_extn("auth"), caps
            assert not s.has_extn("starttls"), caps
            assert not s.has_extn("xclient"), caps
            s.login("dave", "dave-secret")
            s.sendmail("sender@example.org", [dave.address], msg)
        assert_delivered(dave.find(tok), msg)
        mtlib.wait_until(lambda: re.search(
            r"smtpd\[\d+\]: \w+: client=\S*\[127\.0\.0\.2\]",
            mark.text()), 10, "postfix client= line with 127.0.0.2")
        text = mark.text()
        # Every connection of ours was upgraded before XCLIENT.
        n = len(re.findall(r"connect from \S*\[127\.0\.0\.1\]", text))
        tls = len(re.findall(r"TLS connection established from "
                             r"\S*\[127\.0\.0\.1\]", text))
        assert n == (2 if starttls else 1) and tls == n, text
    m.wait_log(END_RX % ("relay", re.escape(SERVER_NAME)))
    # The fresh connection may resume the first one's TLS session.
    m.wait_log(END_RX % ("sub", r"\S+"))


def test_imap_to_dovecot_starttls(mtd, certs, sdove, dave):
    m = mtd()
    port = client_mode(m, "imap", "imap", sdove.imap_port,
                       backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME, backend_source=SOURCE)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    dave.deliver(msg)
    im = imaplib.IMAP4(HOST, port, timeout=30)
    try:
        assert im.welcome == GREETING["imap"].rstrip(b"\r\n")
        # Dovecot's post-TLS capabilities: no STARTTLS, no LOGINDISABLED.
        assert "STARTTLS" not in im.capabilities, im.capabilities
        assert "LOGINDISABLED" not in im.capabilities, im.capabilities
        assert "AUTH=PLAIN" in im.capabilities, im.capabilities
        im.login("dave", "dave-secret")
        im.select("INBOX", readonly=True)
        assert mtlib.imap_fetch_token(im, tok) == msg
        im.logout()
    finally:
        try:
            im.shutdown()
        except OSError:
            pass
    m.wait_log(END_RX % ("imap", re.escape(SERVER_NAME)))
    wait_in_log(sdove.log, r"imap-login: Info: Login: user=<dave>, .*"
                r"rip=127\.0\.0\.2, .*TLS")


def test_pop3_to_dovecot_stls(mtd, certs, sdove, dave):
    m = mtd()
    port = client_mode(m, "pop3", "pop3", sdove.pop3_port,
                       backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME, backend_source=SOURCE)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    dave.deliver(msg)
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        assert p.getwelcome() == GREETING["pop3"].rstrip(b"\r\n")
        caps = p.capa()
        assert "STLS" not in caps and "USER" in caps, caps
        p.user("dave")
        p.pass_("dave-secret")
        assert mtlib.pop3_find_token(p, tok) == msg
        p.quit()
    finally:
        p.close()
    m.wait_log(END_RX % ("pop3", re.escape(SERVER_NAME)))
    wait_in_log(sdove.log, r"pop3-login: Info: Login: user=<dave>, .*"
                r"rip=127\.0\.0\.2, .*TLS")


def test_imap_and_pop3_to_dovecot_implicit(mtd, certs, sdove, dave):
    """backend_tls = "implicit" against the same Dovecot's 993/995-style
    listeners, from 127.0.0.2 too."""
    m = mtd()
    iport = client_mode(m, "imaps", "imap", sdove.imaps_port,
                        backend_tls="implicit", backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME, backend_source=SOURCE)
    pport = client_mode(m, "pop3s", "pop3", sdove.pop3s_port,
                        backend_tls="implicit", backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME, backend_source=SOURCE)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    dave.deliver(msg)
    im = imaplib.IMAP4(HOST, iport, timeout=30)
    try:
        im.login("dave", "dave-secret")
        im.select("INBOX", readonly=True)
        assert mtlib.imap_fetch_token(im, tok) == msg
        im.logout()
    finally:
        try:
            im.shutdown()
        except OSError:
            pass
    p = poplib.POP3(HOST, pport, timeout=30)
    try:
        p.user("dave")
        p.pass_("dave-secret")
        count, _ = p.stat()
        assert count >= 1
        p.quit()
    finally:
        p.close()
    m.wait_log(END_RX % ("imaps", re.escape(SERVER_NAME)))
    m.wait_log(END_RX % ("pop3s", re.escape(SERVER_NAME)))


def test_client_starttls_and_implicit_over_backend_starttls(mtd, certs,
                                                            sdove, dave,
                                                            spost):
    """The client side with TLS of its own over a STARTTLS backend leg:
    tls_mode = "starttls" (the client's STARTTLS is mailtlsd's; before it
    STARTTLS is offered and AUTH hidden, after it AUTH is Postfix's and
    STARTTLS gone) and tls_mode = "implicit" (IMAP over TLS, the
    capabilities Dovecot's post-TLS ones without STARTTLS)."""
    m = mtd()
    sport = client_mode(m, "sub", "smtp", spost.port, tls_mode="starttls",
                        backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME)
    iport = client_mode(m, "imaps", "imap", sdove.imap_port,
                        tls_mode="implicit", backend_ca_file=certs.ca,
                        backend_tls_name=SERVER_NAME, backend_source=SOURCE)
    m.start()
    ctx = certs.client_context()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=dave.address)
    with smtplib.SMTP(HOST, sport, timeout=30) as s:
        code, caps = s.ehlo("client.example.test")
        assert code == 250 and s.has_extn("starttls"), caps
        assert not s.has_extn("auth"), caps
        s.starttls(context=ctx)
        code, caps = s.ehlo("client.example.test")
        assert code == 250 and not s.has_extn("starttls"), caps
        assert s.has_extn("auth"), caps
        s.login("dave", "dave-secret")
        s.sendmail("sender@example.org", [dave.address], msg)
    assert_delivered(dave.find(tok), msg)
    m.wait_log(r"TLS connection established from")
    m.wait_log(END_RX % ("sub", re.escape(SERVER_NAME)))

    im = imaplib.IMAP4_SSL(HOST, iport, ssl_context=ctx, timeout=30)
    try:
        assert "STARTTLS" not in im.capabilities, im.capabilities
        im.login("dave", "dave-secret")
        im.select("INBOX", readonly=True)
        typ, data = im.search(None, "HEADER", "X-Mt-Token", tok)
        assert typ == "OK" and data[0], data
        im.logout()
    finally:
        try:
            im.shutdown()
        except OSError:
            pass
    m.wait_log(END_RX % ("imaps", re.escape(SERVER_NAME)))


def test_backend_session_resumed(mtd, certs, sdove):
    """The client-side session cache after STARTTLS too: the server is
    mailtlsd's own STARTTLS service (its ticket keys are shared by all
    its workers) in front of Dovecot's plaintext port."""
    m = mtd()
    back = m.add_service("back", "imap", [sdove.imap_port],
                         tls_mode="starttls")
    port = client_mode(m, "front", "imap", back, backend_ca_file=certs.ca)
    m.start()
    for _ in range(3):
        with Conn.plain(port) as c:
            assert c.line() == GREETING["imap"]
            c.send(b"a NOOP\r\n")
            assert c.tagged(b"a").startswith(b"a OK")
            c.send(b"b LOGOUT\r\n")
            c.read_to_eof()
    m.wait_log(r"session end service=front .*backend_tls=TLSv1\.3/\S+ "
               r"verified=127\.0\.0\.1 resumed")


# ---------------------------------------------------------------------------
# Scripted servers: failures, injection, exactly what they received.

class StarttlsServer:
    """A scripted server on loopback for one protocol.  It greets, answers
    mailtlsd's capability command (with or without STARTTLS/STLS), answers
    STARTTLS (go-ahead or refusal, optionally with bytes injected behind
    the go-ahead in the same write), does the TLS handshake with the given
    certificate and then answers a few commands inside TLS.  Everything
    it receives is recorded, cleartext and TLS apart."""

    CAPA = {"smtp": b"EHLO", "imap": b"CAPABILITY", "pop3": b"CAPA"}

    def __init__(self, protocol, chain, key, offer=True, refuse=False,
                 inject=b"", greeting=None, connections=1, stall=False,
                 post_tls=b"", post_tls_delay=None):
        self.protocol = protocol
        # Said unasked inside TLS: in the segment of the handshake's last
        # flight (TLS 1.2, the Finished corked with it), or after
        # post_tls_delay seconds.
        self.post_tls = post_tls
        self.post_tls_delay = post_tls_delay
        self.stall = stall
        self.offer = offer
        self.refuse = refuse
        self.inject = inject
        self.greeting = greeting
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(chain, key)
        self.sock = mtlib.listen(mtlib.free_port())
        self.port = self.sock.getsockname()[1]
        self.clear = []             # per connection: bytes in cleartext
        self.tls = []               # per connection: bytes inside TLS
        self.handshakes = 0
        self.done = threading.Event()
        self.connections = connections
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    # -- cleartext helpers
    def _line(self, conn, buf):
        while b"\n" not in buf[0]:
            data = conn.recv(4096)
            if not data:
                raise EOFError
            buf[0] += data
            self.clear[-1] += data
        line, _, buf[0] = buf[0].partition(b"\n")
        return line + b"\n"

    # How long the server waits for each connection of mailtlsd's.
    ACCEPT_WAIT = 30.0

    def accept(self):
        """The next connection, or None once the socket is closed or
        ACCEPT_WAIT has passed.  mtlib.listen() makes accept() time out
        every 0.2 s, and socket.timeout is an OSError: only the other
        OSErrors (the socket closed by close()) end the wait early."""
        deadline = time.monotonic() + self.ACCEPT_WAIT
        while time.monotonic() < deadline:
            try:
                return self.sock.accept()[0]
            except socket.timeout:
                continue
            except OSError:
                return None
        return None

    def serve(self):
        try:
            for _ in range(self.connections):
                conn = self.accept()
                if conn is None:
                    return
                conn.settimeout(10)
                self.clear.append(b"")
                self.tls.append(b"")
                try:
                    self.session(conn)
                except (OSError, EOFError, ssl.SSLError):
                    pass
                finally:
                    conn.close()
        finally:
            self.done.set()

    def session(self, conn):
        p = self.protocol
        buf = [b""]
        greet = self.greeting or {
            "smtp": b"220-srv.example.test ESMTP\r\n220 hello\r\n",
            "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi\r\n",
            "pop3": b"+OK hi <1.2@srv>\r\n",
        }[p]
        conn.sendall(greet)
        if not greet.startswith((b"220 ", b"220-", b"* OK", b"+OK")):
            self._drain(conn, buf)
            return
        # The capability command.
        line = self._line(conn, buf)
        if p == "smtp":
            conn.sendall(b"250-srv.example.test\r\n250-PIPELINING\r\n" +
                         (b"250-STARTTLS\r\n" if self.offer else b"") +
                         b"250 8BITMIME\r\n")
        elif p == "imap":
            tag = line.split(b" ")[0]
            conn.sendall(b"* CAPABILITY IMAP4rev1 " +
                         (b"STARTTLS " if self.offer else b"") +
                         b"LOGINDISABLED\r\n" + tag + b" OK done\r\n")
        else:
            conn.sendall(b"+OK\r\nTOP\r\n" + (b"STLS\r\n" if self.offer
                                              else b"") +
                         b"UIDL\r\n.\r\n")
        if not self.offer:
            self._drain(conn, buf)
            return
        line = self._line(conn, buf)
        tag = line.split(b" ")[0]
        if self.refuse:
            conn.sendall({"smtp": b"454 4.7.0 TLS not available\r\n",
                          "imap": tag + b" NO not now\r\n",
                          "pop3": b"-ERR not now\r\n"}[p])
            self._drain(conn, buf)
            return
        conn.sendall({"smtp": b"220 2.0.0 go ahead\r\n",
                      "imap": tag + b" OK begin TLS\r\n",
                      "pop3": b"+OK begin TLS\r\n"}[p] + self.inject)
        if self.stall:
            # Never answers the ClientHello.
            self._drain(conn, buf)
            return
        cork = self.post_tls and self.post_tls_delay is None
        if cork:
            # TLS 1.2: the server's Finished is the handshake's last
            # message, and the line goes out in the same TCP segment.
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        t = self.ctx.wrap_socket(conn, server_side=True)
        self.handshakes += 1
        if self.post_tls:
            if not cork:
                time.sleep(self.post_tls_delay)
            t.sendall(self.post_tls)
            if cork:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        self.relay(t)

    def _drain(self, conn, buf):
        """Record whatever else comes in cleartext, until EOF."""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            self.clear[-1] += data

    def relay(self, t):
        p = self.protocol
        buf = b""
        while True:
            data = t.recv(4096)
            if not data:
                return
            self.tls[-1] += data
            buf += data
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                words = line.strip().split(b" ")
                if p == "smtp":
                    verb = words[0].upper()
                    if verb == b"EHLO":
                        t.sendall(b"250-srv.example.test\r\n"
                                  b"250 AUTH PLAIN\r\n")
                    elif verb == b"QUIT":
                        t.sendall(b"221 bye\r\n")
                        return
                    else:
                        t.sendall(b"250 ok\r\n")
                elif p == "imap":
                    tag, verb = words[0], words[1].upper()
                    if verb == b"CAPABILITY":
                        t.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" +
                                  tag + b" OK done\r\n")
                    elif verb == b"LOGOUT":
                        t.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                        return
                    else:
                        t.sendall(tag + b" OK done\r\n")
                else:
                    verb = words[0].upper()
                    if verb == b"CAPA":
                        t.sendall(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
                    elif verb == b"QUIT":
                        t.sendall(b"+OK bye\r\n")
                        return
                    else:
                        t.sendall(b"+OK\r\n")

    def wait(self, timeout=15):
        assert self.done.wait(timeout), "scripted server still busy"

    def close(self):
        self.sock.close()


OUR_CAPA = {
    "smtp": b"EHLO " + SERVER_NAME.encode() + b"\r\n",
    "imap": b"mt1 CAPABILITY\r\n",
    "pop3": b"CAPA\r\n",
}
OUR_STARTTLS = {
    "smtp": b"STARTTLS\r\n",
    "imap": b"mt2 STARTTLS\r\n",
    "pop3": b"STLS\r\n",
}
# What a client sends at once, pipelined, before it has heard anything.
CLIENT_BYTES = {
    "smtp": b"EHLO client\r\nAUTH PLAIN AGRhdmUAc2VjcmV0\r\n",
    "imap": b"a LOGIN dave secret\r\n",
    "pop3": b"USER dave\r\nPASS secret\r\n",
}


@pytest.fixture
def server(certs):
    made = []

    def make(protocol, name=SERVER_NAME, **kw):
        chain, key = ((certs.rsa_chain, certs.rsa_key) if name == SERVER_NAME
                      else (certs.other_chain, certs.other_key))
        s = StarttlsServer(protocol, chain, key, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def refused(m, protocol, port, why_rx):
    """The client, talking at once, gets the temporary failure as its
    first line and then EOF; one error line names why."""
    m.start()
    with Conn.plain(port) as c:
        c.send(CLIENT_BYTES[protocol])
        assert c.line() == UNAVAILABLE[protocol]
        assert c.read_to_eof() == b""
    m.wait_log(r"error: \S+ .*backend 127\.0\.0\.1:\d+:? .*" + why_rx)
    m.wait_log(r"session end .*reason=")
    end = m.log_text().split("session end")[-1]
    assert "backend_tls=" not in end, end


PROTOCOLS = ["smtp", "imap", "pop3"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_starttls_offered(mtd, certs, server, protocol):
    """(a) No STARTTLS / STLS among the capabilities: the temporary
    failure, an error line, and the server got our capability command
    and nothing else (then our close)."""
    srv = server(protocol, offer=False)
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    refused(m, protocol, port, r"server does not offer (STARTTLS|STLS)")
    srv.wait()
    assert srv.clear == [OUR_CAPA[protocol]]
    assert srv.handshakes == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_refused(mtd, certs, server, protocol):
    """(b) The server refuses STARTTLS: the same, and it got only our
    capability command and our STARTTLS."""
    srv = server(protocol, refuse=True)
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    refused(m, protocol, port, r"server refused (STARTTLS|STLS)")
    srv.wait()
    assert srv.clear == [OUR_CAPA[protocol] + OUR_STARTTLS[protocol]]


INJECTED = {
    "smtp": b"250 injected\r\n",
    "imap": b"* OK [ALERT] injected\r\n",
    "pop3": b"+OK injected\r\n",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_injection_after_go_ahead_discarded(mtd, certs, server, protocol):
    """(c) A line injected right behind the go-ahead, in the same write:
    discarded and logged, never relayed; the session then works inside
    TLS, where the client's own commands are the first the server gets."""
    srv = server(protocol, inject=INJECTED[protocol])
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    with Conn.plain(port) as c:
        assert c.line() == GREETING[protocol]
        if protocol == "smtp":
            c.send(b"EHLO client\r\n")
            r = c.smtp_reply()
            assert r == b"250-srv.example.test\r\n250 AUTH PLAIN\r\n", r
            c.send(b"QUIT\r\n")
            assert c.smtp_reply() == b"221 bye\r\n"
        elif protocol == "imap":
            c.send(b"a CAPABILITY\r\n")
            r = c.tagged(b"a")
            assert r == (b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
                         b"a OK done\r\n"), r
            c.send(b"b LOGOUT\r\n")
            assert c.tagged(b"b").endswith(b"b OK done\r\n")
        else:
            c.send(b"CAPA\r\n")
            r = c.pop3_multi()
            assert r == b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n", r
            c.send(b"QUIT\r\n")
            assert c.line() == b"+OK bye\r\n"
        rest = c.read_to_eof()
        assert b"injected" not in rest
    m.wait_log(r"warning: .*backend 127\.0\.0\.1:\d+: %d bytes after the "
               r"STARTTLS go-ahead discarded: .*injected"
               % len(INJECTED[protocol]))
    m.wait_log(END_RX % ("svc", re.escape(SERVER_NAME)))
    srv.wait()
    assert srv.clear == [OUR_CAPA[protocol] + OUR_STARTTLS[protocol]]
    first = {"smtp": b"EHLO client\r\n", "imap": b"a CAPABILITY\r\n",
             "pop3": b"CAPA\r\n"}[protocol]
    assert srv.tls[0].startswith(first), srv.tls


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", ["wrong_ca", "wrong_name"])
def test_verification_failure(mtd, certs, server, protocol, case):
    """(d) Wrong CA, wrong name: the temporary failure first, an error
    naming the verification error, and after STARTTLS not one byte in
    cleartext (nor inside TLS: the handshake never completes)."""
    if case == "wrong_ca":
        srv = server(protocol)
        opts = dict(backend_ca_file=certs.selfsigned_cert,
                    backend_tls_name=SERVER_NAME)
        why = (r"certificate verification failed: self-signed "
               r"certificate in certificate chain")
    else:
        srv = server(protocol, name=OTHER_NAME)
        opts = dict(backend_ca_file=certs.ca, backend_tls_name=SERVER_NAME)
        why = r"certificate verification failed: hostname mismatch"
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, **opts)
    refused(m, protocol, port, why)
    srv.wait()
    assert srv.clear == [OUR_CAPA[protocol] + OUR_STARTTLS[protocol]]
    assert srv.tls == [b""]


@pytest.mark.parametrize("protocol,greeting,why", [
    ("imap", b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n",
     "backend greeting is PREAUTH"),
    ("imap", b"* BYE go away\r\n", "backend greeting is BYE"),
    ("smtp", b"554 5.3.2 no service\r\n", "backend greeting is not 220"),
    ("pop3", b"-ERR busy\r\n", "backend refused the session"),
])
def test_greeting_refused(mtd, certs, server, protocol, greeting, why):
    """A greeting that cannot lead to STARTTLS: the temporary failure
    (never the server's words), and the server got nothing."""
    srv = server(protocol, greeting=greeting)
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    refused(m, protocol, port, re.escape(why))
    srv.wait()
    assert srv.clear == [b""]


def test_failover_to_second_backend(mtd, certs, server):
    """A backend without STARTTLS is given up like one that refuses the
    connection: the next one is tried, and the client, who heard nothing
    of the first, is served by the second."""
    bad = server("imap", offer=False)
    good = server("imap")
    m = mtd()
    port = m.add_service("svc", "imap", [bad.port, good.port],
                         tls_mode="none", backend_tls="starttls",
                         backend_ca_file=certs.ca,
                         backend_tls_name=SERVER_NAME)
    m.start()
    with Conn.plain(port) as c:
        c.send(b"a CAPABILITY\r\n")
        assert c.line() == GREETING["imap"]
        assert c.tagged(b"a").endswith(b"a OK done\r\n")
        c.send(b"b LOGOUT\r\n")
        c.read_to_eof()
    m.wait_log(r"error: .*backend 127\.0\.0\.1:%d not usable: server does "
               r"not offer STARTTLS" % bad.port)
    m.wait_log(END_RX % ("svc", re.escape(SERVER_NAME)))
    bad.wait()
    assert bad.clear == [OUR_CAPA["imap"]]
    good.wait()
    assert good.tls[0].startswith(b"a CAPABILITY\r\n")


def test_silent_server_times_out(mtd, certs):
    """A server that never greets: backend_connect_timeout, then the
    temporary failure."""
    sock = mtlib.listen(mtlib.free_port())
    try:
        m = mtd()
        port = client_mode(m, "svc", "smtp", sock.getsockname()[1],
                           backend_ca_file=certs.ca, backend_connect_timeout=2)
        m.start()
        with Conn.plain(port) as c:
            assert c.line(timeout=10) == UNAVAILABLE["smtp"]
        m.wait_log(r"error: .* not ready within backend_connect_timeout 2 s")
    finally:
        sock.close()


def test_handshake_timeout(mtd, certs, server):
    """A server that gives the go-ahead and then never answers the
    ClientHello: the dialogue and handshake share backend_connect_timeout;
    then the temporary failure and an error line."""
    srv = server("pop3", stall=True)
    m = mtd()
    port = client_mode(m, "svc", "pop3", srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME, backend_connect_timeout=2)
    m.start()
    with Conn.plain(port) as c:
        c.send(CLIENT_BYTES["pop3"])
        assert c.line(timeout=10) == UNAVAILABLE["pop3"]
        assert c.read_to_eof() == b""
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:\d+: TLS handshake after "
               r"STARTTLS: timeout")
    srv.wait()
    # Our commands, then only the TLS ClientHello (a handshake record).
    sent = srv.clear[0]
    prelude = OUR_CAPA["pop3"] + OUR_STARTTLS["pop3"]
    assert sent.startswith(prelude) and sent[len(prelude):][:1] == b"\x16"


SPOKE_FIRST = {"smtp": b"220 again\r\n", "imap": b"* OK again\r\n",
               "pop3": b"+OK again\r\n"}
SPOKE_RX = r"error: \S+ .*backend 127\.0\.0\.1:%d not usable: server " \
           r"spoke first inside TLS, \d+ bytes before any command: .*again"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_speaks_first_inside_tls(mtd, certs, server, protocol):
    """A server that sends a line with its TLS 1.2 Finished, in one
    segment: it can have nothing to say before a command, so the backend
    is not usable.  The client, which talked at once, gets the temporary
    failure as its first line (never our greeting, never the server's
    line), an error line names why, and the server gets nothing of the
    client's."""
    srv = server(protocol, post_tls=SPOKE_FIRST[protocol])
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    with Conn.plain(port) as c:
        c.send(CLIENT_BYTES[protocol])
        assert c.line() == UNAVAILABLE[protocol]
        assert c.read_to_eof() == b""
    m.wait_log(SPOKE_RX % srv.port)
    m.wait_log(r"session end .*reason=server spoke first inside TLS")
    assert "data before the TLS layer" not in m.log_text()
    srv.wait()
    assert srv.handshakes == 1 and srv.tls == [b""], srv.tls


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_speaks_first_after_our_greeting(mtd, certs, server,
                                                protocol):
    """The same line a little later, once the client has our greeting but
    has not sent anything: the other backends cannot be tried any more,
    so the temporary failure is the client's last line, and the server's
    line never reaches it."""
    srv = server(protocol, post_tls=SPOKE_FIRST[protocol],
                 post_tls_delay=0.5)
    m = mtd()
    port = client_mode(m, "svc", protocol, srv.port, backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    with Conn.plain(port) as c:
        assert c.line() == GREETING[protocol]
        assert c.line() == UNAVAILABLE[protocol]
        assert c.read_to_eof() == b""
    m.wait_log(SPOKE_RX % srv.port)
    srv.wait()
    assert srv.tls == [b""], srv.tls


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_speaks_first_failover(mtd, certs, server, protocol):
    """Two backends, the first speaks first inside TLS: the client, who
    heard nothing of it, is served by the second, its pipelined bytes
    intact."""
    bad = server(protocol, post_tls=SPOKE_FIRST[protocol])
    good = server(protocol)
    m = mtd()
    port = m.add_service("svc", protocol, [bad.port, good.port],
                         tls_mode="none", backend_tls="starttls",
                         backend_ca_file=certs.ca,
                         backend_tls_name=SERVER_NAME)
    m.start()
    first = {"smtp": b"EHLO client\r\n", "imap": b"a CAPABILITY\r\n",
             "pop3": b"CAPA\r\n"}[protocol]
    with Conn.plain(port) as c:
        c.send(first)
        assert c.line() == GREETING[protocol]
        if protocol == "smtp":
            assert c.smtp_reply().endswith(b"250 AUTH PLAIN\r\n")
            c.send(b"QUIT\r\n")
        elif protocol == "imap":
            assert c.tagged(b"a").endswith(b"a OK done\r\n")
            c.send(b"b LOGOUT\r\n")
        else:
            assert c.pop3_multi().endswith(b"SASL PLAIN\r\n.\r\n")
            c.send(b"QUIT\r\n")
        rest = c.read_to_eof()
        assert b"again" not in rest
    m.wait_log(SPOKE_RX % bad.port)
    m.wait_log(END_RX % ("svc", re.escape(SERVER_NAME)))
    bad.wait()
    assert bad.tls == [b""], bad.tls
    good.wait()
    assert good.tls[0].startswith(first), good.tls
