"""
send_proxy = "v1" | "v2" (SPEC section 9): on implicit-TLS services, and on
STARTTLS services, whose TLS phase goes over a fresh backend connection
with a header carrying the TLS facts (its greeting consumed by mailtlsd).

The client always connects from 127.0.0.2, so "the client's address" in
what a backend saw cannot be mailtlsd's own 127.0.0.1.  Checked against:
a raw recording backend (the exact header bytes come first, v1 line and
v2 fields and TLVs); real Dovecot with haproxy = yes and
disable_plaintext_auth = yes (v2's PP2_TYPE_SSL makes the session
secured, v1 carries no TLS facts so a login is refused); real Postfix with
smtpd_upstream_proxy_protocol = haproxy (Received header and log).
"""

import imaplib
import poplib
import re
import smtplib
import socket
import struct
import time

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn

CLIENT_IP = "127.0.0.2"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# ---------------------------------------------------------------------------
# A raw backend: greets, records every byte of each connection.

class RawRecorder(mtlib.ScriptedBackend):
    """mtlib's scripted backend, answering nothing: a PROXY header holds
    CRLFs that must not be taken for command lines."""

    def __init__(self, greeting=b"* OK raw ready\r\n"):
        super().__init__("imap", greeting=greeting)
        self.start()

    def _serve(self, conn, rec):
        conn.settimeout(0.2)
        deadline = time.monotonic() + 30
        try:
            conn.sendall(self.greeting)
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                with self._lock:
                    rec += chunk
        except OSError:
            pass
        finally:
            conn.close()

    def first(self, n, timeout=10.0):
        """The first connection's bytes, once there are at least n."""
        def have():
            with self._lock:
                if self.received and len(self.received[0]) >= n:
                    return bytes(self.received[0])
            return None
        return mtlib.wait_until(have, timeout, "%d bytes at the backend" % n)


@pytest.fixture
def raw():
    r = RawRecorder()
    yield r
    r.stop()


def parse_v2(data):
    """(fam, src, sport, dst, dport, {type: value}, total length)."""
    assert data[:12] == V2_SIG
    assert data[12] == 0x21, "version 2, command PROXY"
    fam = data[13]
    length = struct.unpack("!H", data[14:16])[0]
    body = data[16:16 + length]
    assert len(body) == length
    assert fam == 0x11, "TCP over IPv4"
    src = socket.inet_ntoa(body[0:4])
    dst = socket.inet_ntoa(body[4:8])
    sport, dport = struct.unpack("!HH", body[8:12])
    tlvs = parse_tlvs(body[12:])
    return fam, src, sport, dst, dport, tlvs, 16 + length


def parse_tlvs(b):
    out = {}
    while b:
        assert len(b) >= 3
        t, n = b[0], struct.unpack("!H", b[1:3])[0]
        assert len(b) >= 3 + n, "TLV 0x%02x overruns the header" % t
        assert t not in out, "TLV 0x%02x twice" % t
        out[t] = b[3:3 + n]
        b = b[3 + n:]
    return out


def tls_client(port, certs, ctx=None, sni=SERVER_NAME):
    return Conn.tls(port, ctx or certs.client_context(),
                    server_hostname=sni, timeout=15, source=CLIENT_IP)


# ---------------------------------------------------------------------------
# (3) The exact header bytes, first on the backend connection.

def test_v1_header_is_first(mtd, raw, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [raw.port], send_proxy="v1")
    m.start()
    with tls_client(port, certs) as c:
        assert c.line().startswith(b"* OK")
        sport = c.sock.getsockname()[1]
        c.send(b"a NOOP\r\n")
        want = ("PROXY TCP4 %s %s %d %d\r\n"
                % (CLIENT_IP, HOST, sport, port)).encode()
        got = raw.first(len(want) + len(b"a NOOP\r\n"))
    assert got == want + b"a NOOP\r\n"


@pytest.mark.parametrize("client_cert", [False, True])
def test_v2_header_fields_and_tlvs(mtd, raw, certs, client_cert):
    m = mtd()
    m.add_tls("mx", client_certificates="request", ca_file=certs.ca)
    port = m.add_service("imaps", "imap", [raw.port], send_proxy="v2",
                         tls="mx")
    m.start()
    ctx = certs.client_context()
    if client_cert:
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    with tls_client(port, certs, ctx) as c:
        assert c.line().startswith(b"* OK")
        sport = c.sock.getsockname()[1]
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        c.send(b"a NOOP\r\n")
        got = raw.first(16)
        length = 16 + struct.unpack("!H", got[14:16])[0]
        got = raw.first(length + len(b"a NOOP\r\n"))
    fam, src, sp, dst, dp, tlvs, total = parse_v2(got)
    assert (src, sp, dst, dp) == (CLIENT_IP, sport, HOST, port)
    assert got[total:] == b"a NOOP\r\n", "the header comes first, alone"
    assert tlvs[0x02] == SERVER_NAME.encode()           # AUTHORITY (SNI)
    sid = tlvs[0x05].decode()                            # UNIQUE_ID
    assert re.fullmatch(r"[0-9a-f]{16}", sid)
    m.wait_log(r"%s session start service=imaps client=%s"
               % (sid, re.escape(CLIENT_IP)))
    ssl_tlv = tlvs[0x20]
    client, verify = ssl_tlv[0], struct.unpack("!I", ssl_tlv[1:5])[0]
    subs = parse_tlvs(ssl_tlv[5:])
    assert subs[0x21].decode() == version                # SSL_VERSION
    assert subs[0x23].decode() == cipher                 # SSL_CIPHER
    assert subs[0x24]                                    # SSL_SIG_ALG
    assert re.fullmatch(rb"EC\d+|RSA\d+", subs[0x25])    # SSL_KEY_ALG
    if client_cert:
        assert client == 0x01 | 0x02                     # SSL, CERT_CONN
        assert verify == 0
        assert subs[0x22] == b"client.example.test"       # SSL_CN
    else:
        assert client == 0x01
        assert verify != 0
        assert 0x22 not in subs


def test_v2_without_sni_has_no_authority(mtd, raw, certs):
    m = mtd()
    port = m.add_service("imaps", "imap", [raw.port], send_proxy="v2")
    m.start()
    # An IP as server_hostname: verified, but no SNI sent.
    with tls_client(port, certs, sni=HOST) as c:
        assert c.line().startswith(b"* OK")
        got = raw.first(16)
        got = raw.first(16 + struct.unpack("!H", got[14:16])[0])
    tlvs = parse_v2(got)[5]
    assert 0x02 not in tlvs
    assert 0x20 in tlvs and 0x05 in tlvs


# ---------------------------------------------------------------------------
# (1) Real Dovecot: haproxy = yes, disable_plaintext_auth = yes.

@pytest.fixture(scope="module")
def pdovecot(workroot):
    if not mtlib.os.geteuid() == 0:
        pytest.skip("Dovecot needs root")
    d = mtlib.Dovecot(workroot, subdir="dovecot-haproxy", haproxy=True,
                      extra_conf="disable_plaintext_auth = yes\n")
    d.add_user("carol", "carol-secret")
    d.start()
    yield d
    d.stop()


class _SourceIMAP(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(CLIENT_IP, 0))
        return self.ssl_context.wrap_socket(sock,
                                            server_hostname=SERVER_NAME)


class _SourcePOP3(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(CLIENT_IP, 0))
        return self.context.wrap_socket(sock, server_hostname=SERVER_NAME)


def test_dovecot_v2_imaps_and_pop3s_login(mtd, pdovecot, certs):
    carol = pdovecot.users["carol"]
    m = mtd()
    iport = m.add_service("imaps", "imap", [pdovecot.imap_haproxy_port],
                          send_proxy="v2")
    pport = m.add_service("pop3s", "pop3", [pdovecot.pop3_haproxy_port],
                          send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(pdovecot.log)
    s = _SourceIMAP(HOST, iport, ssl_context=certs.client_context(),
                    timeout=30)
    try:
        typ, _ = s.login(carol.name, carol.password)
        assert typ == "OK"
        assert s.select("INBOX")[0] == "OK"
    finally:
        s.logout()
    p = _SourcePOP3(HOST, pport, context=certs.client_context(),
                    timeout=30)
    try:
        p.user(carol.name)
        assert p.pass_(carol.password).startswith(b"+OK")
        p.stat()
    finally:
        p.quit()
    for proto in ("imap", "pop3"):
        line = mtlib.wait_until(
            lambda: re.search(r"%s-login: (?:Info: )?Login: user=<%s>.*" % (
                proto, carol.name), mark.text()), 10,
            "dovecot %s login line" % proto).group(0)
        assert "rip=%s" % CLIENT_IP in line, line
        assert "lip=%s" % HOST in line, line
        # Secured by the PROXY header's PP2_TYPE_SSL, not by loopback.
        assert "TLS" in line or "secured" in line, line


def test_dovecot_v1_login_refused_not_secured(mtd, pdovecot, certs):
    carol = pdovecot.users["carol"]
    m = mtd()
    iport = m.add_service("imaps", "imap", [pdovecot.imap_haproxy_port],
                          send_proxy="v1")
    m.start()
    mark = mtlib.LogMark(pdovecot.log)
    with tls_client(iport, certs) as c:
        assert c.line().startswith(b"* OK")
        c.send("a LOGIN %s %s\r\n" % (carol.name, carol.password))
        reply = c.tagged(b"a")
        assert re.search(rb"^a NO ", reply, re.M), reply
        assert not re.search(rb"^a OK", reply, re.M)
        c.send(b"b LOGOUT\r\n")
        c.tagged(b"b")
    assert not re.search(r"imap-login: (?:Info: )?Login: user=<%s>" % carol.name,
                         mark.text())
    line = mtlib.wait_until(
        lambda: re.search(r"imap-login: .*rip=%s.*" % re.escape(CLIENT_IP),
                          mark.text()), 10, "dovecot disconnect line")
    assert line


# ---------------------------------------------------------------------------
# (2) Real Postfix: smtpd_upstream_proxy_protocol = haproxy.

@pytest.fixture(scope="module")
def ppostfix(workroot, dovecot, alice):
    p = mtlib.Postfix(workroot, dovecot, alice, haproxy=True,
                      subdir="postfix-haproxy")
    p.start()
    yield p
    p.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_postfix_sees_client_address(mtd, ppostfix, alice, certs, version):
    m = mtd()
    port = m.add_service("smtps", "smtp", [ppostfix.haproxy_port],
                         send_proxy=version)
    m.start()
    mark = mtlib.LogMark(ppostfix.log)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    with smtplib.SMTP_SSL(HOST, port, context=certs.client_context(),
                          timeout=30, source_address=(CLIENT_IP, 0)) as s:
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    delivered = alice.find(tok)
    head = delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    received = re.search(rb"^Received: from .*(\n[ \t].*)*", head, re.M)
    assert received, head
    assert b"[%s]" % CLIENT_IP.encode() in received.group(0), \
        received.group(0)
    mtlib.wait_until(lambda: re.search(
        r"connect from \S*\[%s\]" % re.escape(CLIENT_IP), mark.text()),
        10, "postfix connect line with the client's address")


# ---------------------------------------------------------------------------
# STARTTLS services: the TLS phase over a fresh backend connection.

def _v2_total(b):
    return 16 + struct.unpack("!H", b[14:16])[0] if len(b) >= 16 else 0


class GreetingRecorder(RawRecorder):
    """Records every connection; greets each, answers nothing."""

    def conn(self, i, n, timeout=10.0):
        def have():
            with self._lock:
                if len(self.received) > i and len(self.received[i]) >= n:
                    return bytes(self.received[i])
            return None
        return mtlib.wait_until(have, timeout, "connection %d: %d bytes"
                                % (i, n))


def test_starttls_fresh_connection_header_carries_tls(mtd, certs):
    """The cleartext phase has a header without TLS facts; after the
    handshake a second connection's header has PP2_TYPE_SSL, its greeting
    never reaches the client, and the first command inside TLS (sent at
    once, while mailtlsd reconnects) arrives there, after the header."""
    raw = GreetingRecorder(greeting=b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
    try:
        m = mtd()
        port = m.add_service("imap", "imap", [raw.port], tls_mode="starttls",
                             send_proxy="v2")
        m.start()
        c = Conn.plain(port, source=CLIENT_IP)
        try:
            assert c.line().startswith(b"* OK")
            c.send(b"a STARTTLS\r\n")
            assert c.tagged(b"a").startswith(b"a OK")
            c.starttls(certs.client_context(), server_hostname=SERVER_NAME)
            c.send(b"b NOOP\r\n")
            first = raw.conn(0, 16)
            second = raw.conn(1, 16)
            second = raw.conn(1, _v2_total(second) + len(b"b NOOP\r\n"))
            # Nothing for the client: the fresh greeting is consumed.
            c.sock.settimeout(0.5)
            with pytest.raises((socket.timeout, TimeoutError)):
                c.sock.recv(100)
        finally:
            c.close()
        first = raw.conn(0, _v2_total(first))
        h1 = parse_v2(first)
        h2 = parse_v2(second)
        assert h1[1] == h2[1] == CLIENT_IP
        assert 0x20 not in h1[5], "no TLS facts in cleartext"
        assert h1[6] == len(first), "cleartext phase: only the header"
        assert h2[5][0x20][0] & 0x01, "PP2_CLIENT_SSL on the fresh one"
        assert h2[5][0x05] == h1[5][0x05], "same session id"
        assert second[h2[6]:] == b"b NOOP\r\n"
    finally:
        raw.stop()


def _imap_starttls(port, certs):
    c = Conn.plain(port, source=CLIENT_IP)
    assert c.line().startswith(b"* OK")
    return c


def test_dovecot_v2_starttls_imap(mtd, pdovecot, certs):
    """Real Dovecot, haproxy = yes, disable_plaintext_auth = yes, behind a
    STARTTLS IMAP service: LOGIN in cleartext is refused (by mailtlsd,
    SPEC 8.5), LOGIN after STARTTLS works and Dovecot logs the client's
    address and a secured session."""
    carol = pdovecot.users["carol"]
    m = mtd()
    port = m.add_service("imap", "imap", [pdovecot.imap_haproxy_port],
                         tls_mode="starttls", send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(pdovecot.log)
    c = _imap_starttls(port, certs)
    try:
        c.send("a LOGIN %s %s\r\n" % (carol.name, carol.password))
        r = c.tagged(b"a")
        assert re.search(rb"^a NO \[PRIVACYREQUIRED\]", r, re.M), r
        c.send(b"b STARTTLS\r\n")
        assert c.tagged(b"b").startswith(b"b OK")
        c.starttls(certs.client_context(), server_hostname=SERVER_NAME)
        # Pipelined at once: held while mailtlsd reconnects, not lost.
        c.send("c LOGIN %s %s\r\nd SELECT INBOX\r\n"
               % (carol.name, carol.password))
        r = c.tagged(b"c")
        assert re.search(rb"^c OK", r, re.M), r
        assert not re.search(rb"^\* OK", r, re.M), "a second greeting"
        assert re.search(rb"^d OK", c.tagged(b"d"), re.M)
        c.send(b"e LOGOUT\r\n")
        c.tagged(b"e")
    finally:
        c.close()
    line = mtlib.wait_until(
        lambda: re.search(r"imap-login: (?:Info: )?Login: user=<%s>.*"
                          % carol.name, mark.text()), 10,
        "dovecot login line").group(0)
    assert "rip=%s" % CLIENT_IP in line, line
    assert "TLS" in line or "secured" in line, line


def _v2_header_no_tls(src, sport, dst, dport):
    body = (socket.inet_aton(src) + socket.inet_aton(dst) +
            struct.pack("!HH", sport, dport))
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


def test_dovecot_would_refuse_cleartext_login(pdovecot):
    """The control for the test above: what Dovecot itself says to a login
    on a connection whose header carries no TLS facts (the cleartext
    phase's): refused, so the login above passed because the fresh
    connection's header told Dovecot about TLS."""
    carol = pdovecot.users["carol"]
    c = Conn.plain(pdovecot.imap_haproxy_port)
    try:
        c.send(_v2_header_no_tls(CLIENT_IP, 40000, HOST, 143))
        greeting = c.line()
        assert greeting.startswith(b"* OK"), greeting
        c.send("a LOGIN %s %s\r\n" % (carol.name, carol.password))
        r = c.tagged(b"a")
        assert re.search(rb"^a NO ", r, re.M), r
        c.send(b"b LOGOUT\r\n")
        c.tagged(b"b")
    finally:
        c.close()


def test_dovecot_v2_starttls_pop3(mtd, pdovecot, certs):
    carol = pdovecot.users["carol"]
    m = mtd()
    port = m.add_service("pop3", "pop3", [pdovecot.pop3_haproxy_port],
                         tls_mode="starttls", send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(pdovecot.log)
    c = Conn.plain(port, source=CLIENT_IP)
    try:
        assert c.line().startswith(b"+OK")
        c.send("USER %s\r\n" % carol.name)
        assert c.line().startswith(b"-ERR")
        c.send(b"STLS\r\n")
        assert c.line().startswith(b"+OK")
        c.starttls(certs.client_context(), server_hostname=SERVER_NAME)
        c.send("USER %s\r\nPASS %s\r\nSTAT\r\n"
               % (carol.name, carol.password))
        assert c.line().startswith(b"+OK"), "USER"
        assert c.line().startswith(b"+OK"), "PASS"
        assert re.match(rb"\+OK \d+ \d+\r\n", c.line()), "STAT"
        c.send(b"QUIT\r\n")
        assert c.line().startswith(b"+OK")
    finally:
        c.close()
    line = mtlib.wait_until(
        lambda: re.search(r"pop3-login: (?:Info: )?Login: user=<%s>.*"
                          % carol.name, mark.text()), 10,
        "dovecot pop3 login line").group(0)
    assert "rip=%s" % CLIENT_IP in line, line
    assert "TLS" in line or "secured" in line, line


def smtp_session_starttls(c, certs, rcpt, tok):
    """Greeting, EHLO, STARTTLS, EHLO at once after the handshake, one
    message; asserts the client sees exactly one greeting."""
    assert c.smtp_reply().startswith(b"220 ")
    c.send(b"EHLO client.example.test\r\n")
    r = c.smtp_reply()
    assert r.startswith(b"250"), r
    c.send(b"STARTTLS\r\n")
    assert c.smtp_reply().startswith(b"220 2.0.0")
    c.starttls(certs.client_context(), server_hostname=SERVER_NAME)
    c.send(b"EHLO client.example.test\r\n")
    r = c.smtp_reply()
    assert r.startswith(b"250"), "a second greeting? %r" % r
    c.send(b"MAIL FROM:<sender@example.org>\r\n")
    assert c.smtp_reply().startswith(b"250")
    c.send(("RCPT TO:<%s>\r\n" % rcpt).encode())
    assert c.smtp_reply().startswith(b"250")
    c.send(b"DATA\r\n")
    assert c.smtp_reply().startswith(b"354")
    msg = mtlib.make_message(tok, rcpt=rcpt)
    c.send(re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n")
    assert c.smtp_reply().startswith(b"250")
    c.send(b"QUIT\r\n")
    assert c.smtp_reply().startswith(b"221")


def received_from(delivered):
    head = delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    received = re.search(rb"^Received: from .*(\n[ \t].*)*", head, re.M)
    assert received, head
    return received.group(0)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_postfix_starttls_sees_client_address(mtd, ppostfix, alice, certs,
                                              version):
    """Port-25 style STARTTLS service in front of Postfix with
    smtpd_upstream_proxy_protocol = haproxy: both backend connections
    carry the client's address; the message sent inside TLS shows it."""
    m = mtd()
    m.add_tls("mx", profile="opportunistic")
    port = m.add_service("mx", "smtp", [ppostfix.haproxy_port],
                         tls_mode="starttls", tls="mx",
                         require_starttls=False, send_proxy=version)
    m.start()
    mark = mtlib.LogMark(ppostfix.log)
    tok = mtlib.token()
    c = Conn.plain(port, source=CLIENT_IP)
    try:
        smtp_session_starttls(c, certs, alice.address, tok)
    finally:
        c.close()
    delivered = alice.find(tok)
    assert b"[%s]" % CLIENT_IP.encode() in received_from(delivered)
    mtlib.wait_until(lambda: len(re.findall(
        r"connect from \S*\[%s\]" % re.escape(CLIENT_IP), mark.text())) >= 2,
        10, "postfix: two connections, both with the client's address")
