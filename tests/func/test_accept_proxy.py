"""
accept_proxy = true with proxy_trusted (SPEC section 9): every connection
begins with a PROXY v1 or v2 header from a trusted load balancer, and the
address it names is the client's everywhere.

The "balancer" is either this test (a raw socket from 127.0.0.1 that
writes the header, then speaks TLS or SMTP/IMAP itself) or a real HAProxy
(`mode tcp`, `send-proxy` / `send-proxy-v2`, health checks with
`check-send-proxy`) that the real client reaches from 127.0.0.2.  What
arrived is checked where it arrived: mailtlsd's own log lines, and, through
mailtlsd's send_proxy = v2, the log of a real Dovecot (haproxy = yes,
disable_plaintext_auth = yes) and the Received header of a real Postfix
(smtpd_upstream_proxy_protocol = haproxy); never the balancer's address.
Refusals (untrusted peer, malformed or missing header) must close the
connection without a single byte, so they are tried on STARTTLS services,
where a leaked greeting would be visible.
"""

import imaplib
import os
import re
import smtplib
import socket
import ssl
import struct
import time

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from test_send_proxy import RawRecorder, parse_v2

CLIENT = "203.0.113.7"          # what the header claims
CLIENT_PORT = 54321
DEST = "192.0.2.1"              # the address the client dialled
BALANCED_FROM = "127.0.0.2"     # a real client behind HAProxy
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# ---------------------------------------------------------------------------
# Headers, and a balancer made of a raw socket.

def v1(src=CLIENT, sport=CLIENT_PORT, dst=DEST, dport=993):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=CLIENT, sport=CLIENT_PORT, dst=DEST, dport=993, tlvs=b"",
       local=False):
    if local:
        return V2_SIG + b"\x20\x00" + struct.pack("!H", len(tlvs)) + tlvs
    block = (socket.inet_aton(src) + socket.inet_aton(dst) +
             struct.pack("!HH", sport, dport))
    return (V2_SIG + b"\x21\x11" + struct.pack("!H", len(block) + len(tlvs))
            + block + tlvs)


def balancer(port, header, source=HOST):
    """A connection from the (trusted) balancer, header already sent."""
    s = socket.create_connection((HOST, port), 10,
                                 source_address=(source, 0))
    if header:
        s.sendall(header)
    return s


def tls_over(sock, certs):
    c = Conn(certs.client_context().wrap_socket(
        sock, server_hostname=SERVER_NAME), 15)
    return c


def closed_silently(sock, timeout=10.0):
    """The peer closes without sending one byte; return how long it took."""
    start = time.monotonic()
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("connection still open after %.0fs (got %r)"
                    % (timeout, got))
    finally:
        sock.close()
    assert got == b"", "a refused connection got a reply: %r" % got
    return time.monotonic() - start


def service(m, name, protocol, backends, tls_mode="implicit", **opts):
    opts.setdefault("accept_proxy", True)
    opts.setdefault("proxy_trusted", ["127.0.0.1/32"])
    return m.add_service(name, protocol, backends, tls_mode=tls_mode, **opts)


# ---------------------------------------------------------------------------
# Real backends that read mailtlsd's own PROXY header.

@pytest.fixture(scope="module")
def hdovecot(workroot):
    if os.geteuid() != 0:
        pytest.skip("Dovecot needs root")
    d = mtlib.Dovecot(workroot, subdir="dovecot-accept", haproxy=True,
                      extra_conf="disable_plaintext_auth = yes\n")
    d.add_user("dave", "dave-secret")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def hpostfix(workroot, dovecot, alice):
    p = mtlib.Postfix(workroot, dovecot, alice, haproxy=True,
                      subdir="postfix-accept")
    p.start()
    yield p
    p.stop()


def dovecot_login_line(d, mark, user):
    return mtlib.wait_until(
        lambda: re.search(r"imap-login: (?:Info: )?Login: user=<%s>.*" % user,
                          mark.text()), 10, "dovecot login line").group(0)


def imap_login(c, user):
    assert c.line().startswith(b"* OK")
    c.send("a LOGIN %s %s\r\n" % (user.name, user.password))
    reply = c.tagged(b"a")
    assert re.search(rb"^a OK", reply, re.M), reply
    c.send(b"b LOGOUT\r\n")
    c.tagged(b"b")


# ---------------------------------------------------------------------------
# Implicit TLS: header, then TLS; Dovecot sees the header's client.

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_implicit_header_client_reaches_dovecot(mtd, hdovecot, certs,
                                                version):
    dave = hdovecot.users["dave"]
    m = mtd()
    port = service(m, "imaps", "imap", [hdovecot.imap_haproxy_port],
                   send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(hdovecot.log)
    hdr = v1() if version == "v1" else v2()
    with tls_over(balancer(port, hdr), certs) as c:
        imap_login(c, dave)
    line = dovecot_login_line(hdovecot, mark, dave.name)
    assert "rip=%s" % CLIENT in line, line
    assert "lip=%s" % DEST in line, line     # the header's destination
    assert "TLS" in line or "secured" in line, line
    m.wait_log(r"session start service=imaps client=%s port=%d"
               % (re.escape(CLIENT), CLIENT_PORT))
    m.wait_log(r"TLS connection established from \S*\[%s\]"
               % re.escape(CLIENT))
    m.wait_log(r"session end service=imaps client=%s " % re.escape(CLIENT))
    assert not re.search(r"session (start|end) service=imaps client=127\.",
                         m.log_text())


def test_implicit_v6_header(mtd, certs):
    raw = RawRecorder()
    try:
        m = mtd()
        port = service(m, "imaps", "imap", [raw.port], send_proxy="v1")
        m.start()
        hdr = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 993\r\n"
        with tls_over(balancer(port, hdr), certs) as c:
            assert c.line().startswith(b"* OK")
            c.send(b"a NOOP\r\n")
            want = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 993\r\n"
            got = raw.first(len(want) + len(b"a NOOP\r\n"))
        assert got == want + b"a NOOP\r\n"
        m.wait_log(r"session start service=imaps client=2001:db8::7 "
                   r"port=40000")
    finally:
        raw.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_trickled_byte_by_byte(mtd, hdovecot, certs, version):
    """Each byte its own segment: the reader consumes what it has while
    the header is incomplete, and the session is the same."""
    dave = hdovecot.users["dave"]
    m = mtd()
    port = service(m, "imaps", "imap", [hdovecot.imap_haproxy_port],
                   send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(hdovecot.log)
    sock = balancer(port, None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in (v1() if version == "v1" else v2()):
        sock.sendall(bytes([b]))
        time.sleep(0.01)
    with tls_over(sock, certs) as c:
        imap_login(c, dave)
    line = dovecot_login_line(hdovecot, mark, dave.name)
    assert "rip=%s" % CLIENT in line, line


def test_bytes_behind_the_header_reach_tls(mtd, certs):
    """The header and the ClientHello in one segment: mailtlsd consumes
    exactly the header, and the TLS layer gets the rest."""
    raw = RawRecorder()
    try:
        m = mtd()
        port = service(m, "imaps", "imap", [raw.port], send_proxy="v2")
        m.start()
        ctx = certs.client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=SERVER_NAME)
        sock = balancer(port, None)
        sock.settimeout(10)
        first = True
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = out.read()
            if first:
                data = v2() + data      # one send: header + ClientHello
                first = False
            if data:
                sock.sendall(data)
            if done:
                break
            chunk = sock.recv(65536)
            assert chunk, "closed during the handshake"
            inc.write(chunk)
        else:
            pytest.fail("handshake did not finish")
        obj.write(b"a NOOP\r\n")
        sock.sendall(out.read())
        got = raw.first(16)
        got = raw.first(16 + struct.unpack("!H", got[14:16])[0] + 8)
        fam, src, sport, dst, dport, tlvs, total = parse_v2(got)
        assert (src, sport, dst, dport) == (CLIENT, CLIENT_PORT, DEST, 993)
        assert got[total:] == b"a NOOP\r\n"
        sock.close()
    finally:
        raw.stop()


class _ProxySMTP(smtplib.SMTP):
    """smtplib over a connection that begins with a PROXY header."""
    header = b""

    def _get_socket(self, host, port, timeout):
        return balancer(port, self.header)


class _ProxySMTP_SSL(smtplib.SMTP_SSL):
    header = b""

    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(balancer(port, self.header),
                                        server_hostname=SERVER_NAME)


def test_implicit_header_client_reaches_postfix(mtd, hpostfix, alice, certs):
    m = mtd()
    port = service(m, "smtps", "smtp", [hpostfix.haproxy_port],
                   send_proxy="v2")
    m.start()
    mark = mtlib.LogMark(hpostfix.log)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    s = _ProxySMTP_SSL(context=certs.client_context(), timeout=30)
    s.header = v1(dport=465)
    s.connect(HOST, port)
    try:
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    finally:
        s.quit()
    head = alice.find(tok).replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    received = re.search(rb"^Received: from .*(\n[ \t].*)*", head, re.M)
    assert received and b"[%s]" % CLIENT.encode() in received.group(0), head
    mtlib.wait_until(lambda: re.search(
        r"connect from \S*\[%s\]" % re.escape(CLIENT), mark.text()),
        10, "postfix connect line with the header's address")


# ---------------------------------------------------------------------------
# STARTTLS: the header comes before the backend's greeting.

def test_starttls_header_then_greeting_and_upgrade(mtd, postfix, alice,
                                                   certs):
    m = mtd()
    port = service(m, "submission", "smtp", [postfix.port],
                   tls_mode="starttls")
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    s = _ProxySMTP(timeout=30)
    s.header = v2(dport=587)
    s._host = HOST      # what starttls() verifies (set by __init__ only)
    s.connect(HOST, port)
    try:
        s.ehlo("client.example.test")
        s.starttls(context=certs.client_context())
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    finally:
        s.quit()
    alice.find(tok)
    m.wait_log(r"proxy=127\.0\.0\.1: PROXY v2 header, client=%s port=%d"
               % (re.escape(CLIENT), CLIENT_PORT))
    m.wait_log(r"session start service=submission client=%s port=%d "
               r"tls=starttls" % (re.escape(CLIENT), CLIENT_PORT))
    m.wait_log(r"TLS connection established from \S*\[%s\]"
               % re.escape(CLIENT))


# ---------------------------------------------------------------------------
# Refusals: nothing is ever sent back.

def test_untrusted_source_closed_without_a_byte(mtd, postfix):
    m = mtd()
    port = service(m, "submission", "smtp", [postfix.port],
                   tls_mode="starttls")
    m.start()
    closed_silently(balancer(port, v1(dport=587), source="127.0.0.2"))
    m.wait_log(r"service submission: refusing 127\.0\.0\.2: not in "
               r"proxy_trusted")
    assert "session start" not in m.log_text()


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 010.0.0.1 192.0.2.1 1 587\r\n",       # leading zero
    b"PROXY TCP4 203.0.113.7  192.0.2.1 1 587\r\n",    # double space
    b"PROXY TCP4 203.0.113.7 192.0.2.1 1 587\n",       # bare LF
    b"EHLO client.example.test\r\n",                   # no header at all
    V2_SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12,        # v2 over UDP
    V2_SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12,        # v2 command 2
    b"PROXY UNKNOWN " + b"x" * 200,                    # no CRLF in 107
], ids=["leading-zero", "double-space", "bare-lf", "smtp", "v2-udp",
        "v2-command", "too-long"])
def test_malformed_header_closed_without_a_byte(mtd, postfix, header):
    m = mtd()
    port = service(m, "submission", "smtp", [postfix.port],
                   tls_mode="starttls")
    m.start()
    closed_silently(balancer(port, header))
    m.wait_log(r"proxy=127\.0\.0\.1: malformed PROXY header \(.+\), "
               r"closing")
    m.wait_log(r"session end service=submission client=127\.0\.0\.1 "
               r"backend=- .*reason=bad PROXY header")


@pytest.mark.parametrize("partial", [b"", b"PROXY TCP4 203.0.113.7 ",
                                     V2_SIG[:7]], ids=["none", "v1-cut",
                                                       "v2-cut"])
def test_missing_header_times_out_without_a_byte(mtd, postfix, partial):
    m = mtd()
    port = service(m, "submission", "smtp", [postfix.port],
                   tls_mode="starttls", handshake_timeout=2)
    m.start()
    took = closed_silently(balancer(port, partial), timeout=15)
    assert 1.5 <= took < 10, took
    m.wait_log(r"proxy=127\.0\.0\.1: no PROXY header within 2 s, closing")
    m.wait_log(r"reason=PROXY header timeout")


def test_eof_before_header_logged(mtd, postfix):
    m = mtd()
    port = service(m, "submission", "smtp", [postfix.port],
                   tls_mode="starttls")
    m.start()
    s = balancer(port, b"PROXY TCP4 ")
    s.shutdown(socket.SHUT_WR)
    closed_silently(s)
    m.wait_log(r"connection closed before a complete PROXY header")


# ---------------------------------------------------------------------------
# v2 LOCAL: a balancer's health check is a session from the balancer.

def test_v2_local_served_as_the_balancer(mtd, certs):
    raw = RawRecorder()
    try:
        m = mtd()
        port = service(m, "imaps", "imap", [raw.port], send_proxy="v1")
        m.start()
        s = balancer(port, v2(local=True, tlvs=b"\x04\x00\x02ab"))
        with tls_over(s, certs) as c:
            assert c.line().startswith(b"* OK")
            lport = c.sock.getsockname()[1]
            c.send(b"a NOOP\r\n")
            want = ("PROXY TCP4 %s %s %d %d\r\n" % (HOST, HOST, lport, port)
                    ).encode()
            got = raw.first(len(want) + 8)
        assert got == want + b"a NOOP\r\n"
        m.wait_log(r"PROXY v2 header, client=127\.0\.0\.1 port=%d \(LOCAL"
                   % lport)
        m.wait_log(r"session start service=imaps client=127\.0\.0\.1 "
                   r"port=%d" % lport)
    finally:
        raw.stop()


# ---------------------------------------------------------------------------
# max_connections_per_ip counts the header's address.

def test_per_ip_limit_counts_the_header_address(mtd, scripted):
    import test_metrics
    backend = scripted("smtp")
    sport = mtlib.free_port()
    m = mtd(stats_listen=["%s:%d" % (mtlib.HOST, sport)])
    port = service(m, "mx", "smtp", [backend.port], tls_mode="starttls",
                   require_starttls=False, max_connections_per_ip=2)
    m.start()
    mtlib.wait_port(sport, 10, "stats listener")
    held = []
    try:
        for _ in range(2):
            c = Conn(balancer(port, v1(dport=25)), 15)
            assert c.smtp_reply().startswith(b"220 scripted")
            held.append(c)
        # Same header address: over the limit, the usual 421.
        c = Conn(balancer(port, v1(dport=25)), 15)
        assert c.smtp_reply().startswith(b"421")
        c.close()
        m.wait_log(r"service mx: refusing %s: per-address connection limit"
                   % re.escape(CLIENT))
        # Counted like the listener's refusals, by the limit's name.
        assert test_metrics.val(
            test_metrics.scrape(sport), "mailtlsd_refusals_total",
            service="mx", kind="max_connections_per_ip") == 1
        # Another client behind the same balancer is not affected.
        c = Conn(balancer(port, v2(src="203.0.113.8", dport=25)), 15)
        assert c.smtp_reply().startswith(b"220 scripted")
        held.append(c)
        # A slot given back is the header address's.
        held.pop(0).close()
        ended = r"session end service=mx client=%s .*reason=client closed" \
            % re.escape(CLIENT)
        m.wait_log(ended)
        c = Conn(balancer(port, v1(dport=25)), 15)
        assert c.smtp_reply().startswith(b"220 scripted")
        held.append(c)
    finally:
        for c in held:
            c.close()


# ---------------------------------------------------------------------------
# Real HAProxy in front (mode tcp), clients from 127.0.0.2.

_HAPROXY_CFG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {host}:{fport}
    default_backend be
backend be
    server mailtlsd {host}:{mport} {send} check check-send-proxy inter 300ms
"""


class HAProxy:
    def __init__(self, workdir, mport, send):
        self.dir = mtlib.make_workdir(workdir, prefix="haproxy-")
        self.port = mtlib.free_port()
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(_HAPROXY_CFG.format(host=HOST, fport=self.port,
                                        mport=mport, send=send))
        self.proc = mtlib.Process("haproxy-%d" % self.port,
                                  ["haproxy", "-f", self.cfg, "-db"],
                                  os.path.join(self.dir, "haproxy.log"))

    def start(self):
        self.proc.start()
        mtlib.wait_port(self.port, 15, "haproxy", self.proc.alive)
        return self

    def stop(self):
        self.proc.stop(timeout=10)


@pytest.fixture
def haproxy(workdir):
    started = []

    def make(mport, send):
        h = HAProxy(workdir, mport, send).start()
        started.append(h)
        return h
    yield make
    for h in started:
        h.stop()


class _SourceIMAP(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(BALANCED_FROM, 0))
        return self.ssl_context.wrap_socket(sock,
                                            server_hostname=SERVER_NAME)


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_implicit_to_dovecot(mtd, hdovecot, certs, haproxy, send):
    dave = hdovecot.users["dave"]
    m = mtd()
    mport = service(m, "imaps", "imap", [hdovecot.imap_haproxy_port],
                    send_proxy="v2")
    m.start()
    h = haproxy(mport, send)
    if send == "send-proxy-v2":
        # Health checks: v2 LOCAL, served as sessions from HAProxy itself.
        m.wait_log(r"PROXY v2 header, client=127\.0\.0\.1 port=\d+ "
                   r"\(LOCAL", timeout=15)
    mark = mtlib.LogMark(hdovecot.log)
    s = _SourceIMAP(HOST, h.port, ssl_context=certs.client_context(),
                    timeout=30)
    try:
        assert s.login(dave.name, dave.password)[0] == "OK"
        assert s.select("INBOX")[0] == "OK"
    finally:
        s.logout()
    line = dovecot_login_line(hdovecot, mark, dave.name)
    assert "rip=%s" % BALANCED_FROM in line, line
    assert "TLS" in line or "secured" in line, line
    m.wait_log(r"PROXY v%s header, client=%s"
               % ("2" if send.endswith("v2") else "1",
                  re.escape(BALANCED_FROM)))
    m.wait_log(r"session start service=imaps client=%s"
               % re.escape(BALANCED_FROM))


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_starttls_to_postfix(mtd, postfix, alice, certs, haproxy,
                                     send):
    m = mtd()
    mport = service(m, "submission", "smtp", [postfix.port],
                    tls_mode="starttls")
    m.start()
    h = haproxy(mport, send)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    with smtplib.SMTP(HOST, h.port, timeout=30,
                      source_address=(BALANCED_FROM, 0)) as s:
        s.ehlo("client.example.test")
        s.starttls(context=certs.client_context())
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    alice.find(tok)
    m.wait_log(r"session start service=submission client=%s port=\d+ "
               r"tls=starttls" % re.escape(BALANCED_FROM))
    m.wait_log(r"TLS connection established from \S*\[%s\]"
               % re.escape(BALANCED_FROM))


# ---------------------------------------------------------------------------
# -t: proxy_trusted wider than a private network is worth a warning.

def test_check_warns_on_wide_proxy_trusted(mtd, binary):
    import subprocess
    m = mtd()
    service(m, "wide", "imap", [mtlib.free_port()],
            proxy_trusted=["0.0.0.0/0", "::/0", "10.0.0.0/7",
                           "198.51.100.0/24", "::ffff:0.0.0.0/96"])
    service(m, "narrow", "imap", [mtlib.free_port()],
            proxy_trusted=["10.1.0.0/16", "172.16.0.0/12", "192.168.1.10",
                           "127.0.0.1/32", "fd00:1::/64", "198.51.100.10",
                           "2001:db8::10", "100.64.0.0/10"])
    m.write_config()
    p = subprocess.run([binary, "-t", "-c", m.conf], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out          # a warning, not an error
    wide = re.findall(r'service "(\w+)": proxy_trusted (\S+) is wider than '
                      r'a private network', out)
    assert sorted(wide) == sorted([
        ("wide", "0.0.0.0/0"), ("wide", "::/0"), ("wide", "10.0.0.0/7"),
        ("wide", "198.51.100.0/24"), ("wide", "::ffff:0.0.0.0/96")]), out
