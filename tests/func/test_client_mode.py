"""
Client mode (SPEC section 12): plaintext programs on loopback talk to a
tls_mode = "none" service, and mailtlsd carries their session over TLS to
a real server, verifying it by default.

The servers are real and have TLS of their own (certificates from the test
CA): a Postfix with an smtps (wrappermode) smtpd, a Dovecot with imaps and
pop3s listeners.  The clients are Python's smtplib, imaplib and poplib in
plaintext.  Messages are compared byte for byte (Postfix: body and every
header sent, as test_implicit_tls does).  A backend that fails
verification (wrong CA, wrong name, no CA given so the system store) must
give the client the protocol's temporary failure as its very first line
and the log an error naming the reason; the server never gets one byte of
the client's session (its log shows no login, and the scripted TLS server
records nothing after the handshake alert).
"""

import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

import mtlib
from mtlib import HOST, MAIL_DOMAIN, OTHER_NAME, SERVER_NAME, Conn
from test_implicit_tls import assert_delivered

UNAVAILABLE = {
    "smtp": b"421 4.3.2 " + SERVER_NAME.encode() +
            b" Service temporarily unavailable\r\n",
    "imap": b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
    "pop3": b"-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
}
END_RX = (r"session end service=%s .* backend_tls=TLSv1\.[23]/\S+ "
          r"verified=%s")


# ---------------------------------------------------------------------------
# Fixtures: servers with TLS on.

@pytest.fixture(scope="module")
def tdove(workroot, certs):
    if os.geteuid() != 0:
        pytest.skip("a Dovecot instance needs root")
    d = mtlib.Dovecot(workroot, subdir="dovecot-tls",
                      tls=(certs.rsa_chain, certs.rsa_key))
    d.add_user("carol", "carol-secret")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def carol(tdove):
    return tdove.users["carol"]


@pytest.fixture(scope="module")
def tpost(workroot, certs, tdove, carol):
    p = mtlib.Postfix(workroot, tdove, carol, subdir="postfix-tls",
                      tls=(certs.rsa_chain, certs.rsa_key))
    p.start()
    yield p
    p.stop()


def client_mode(m, name, protocol, port, **opts):
    """A tls_mode = "none" service towards port with backend_tls."""
    opts.setdefault("backend_tls", "implicit")
    return m.add_service(name, protocol, [port], tls_mode="none", **opts)


def first_line(port):
    with Conn.plain(port) as c:
        return c.line()


def wait_dovecot(tdove, pattern, timeout=10.0):
    rx = re.compile(pattern)

    def look():
        with open(tdove.log, errors="replace") as f:
            return rx.search(f.read())
    return mtlib.wait_until(look, timeout, "dovecot log /%s/" % pattern,
                            interval=0.1)


def dovecot_log(tdove):
    with open(tdove.log, errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------------------
# Happy paths against real servers.

def test_smtp_to_postfix_smtps(mtd, certs, tpost, carol):
    """smtplib in plaintext -> mailtlsd -> Postfix smtps: delivered, AUTH
    offered and usable (the cleartext rules are off: the client is local
    and the backend leg is encrypted), the end line has the TLS facts."""
    m = mtd()
    port = client_mode(m, "relay", "smtp", tpost.smtps_port,
                       backend_ca_file=certs.ca)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=carol.address)
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        code, caps = s.ehlo("client.example.test")
        assert code == 250
        assert s.has_extn("auth"), caps
        assert not s.has_extn("starttls"), caps
        s.login("carol", "carol-secret")
        s.sendmail("sender@example.org", [carol.address], msg)
    assert_delivered(carol.find(tok), msg)
    # The default name is the backend's host part: an address here.
    m.wait_log(END_RX % ("relay", re.escape(HOST)))
    with open(tpost.log, errors="replace") as f:
        assert re.search(r"Anonymous TLS connection established from "
                         r"localhost\[127\.0\.0\.1\]", f.read())


def test_imap_to_dovecot_imaps(mtd, certs, tdove, carol):
    m = mtd()
    port = client_mode(m, "imap", "imap", tdove.imaps_port,
                       backend_ca_file=certs.ca,
                       backend_tls_name=SERVER_NAME)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=carol.address)
    carol.deliver(msg)
    im = imaplib.IMAP4(HOST, port, timeout=30)
    try:
        assert "STARTTLS" not in im.capabilities
        assert "LOGINDISABLED" not in im.capabilities
        im.login("carol", "carol-secret")
        im.select("INBOX", readonly=True)
        assert mtlib.imap_fetch_token(im, tok) == msg
        im.logout()
    finally:
        try:
            im.shutdown()
        except OSError:
            pass
    m.wait_log(END_RX % ("imap", re.escape(SERVER_NAME)))
    wait_dovecot(tdove, r"imap-login: Info: Login: user=<carol>, .*TLS")


def test_pop3_to_dovecot_pop3s(mtd, certs, tdove, carol):
    m = mtd()
    port = client_mode(m, "pop3", "pop3", tdove.pop3s_port,
                       backend_ca_file=certs.ca)
    m.start()
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=carol.address)
    carol.deliver(msg)
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        p.user("carol")
        p.pass_("carol-secret")
        assert mtlib.pop3_find_token(p, tok) == msg
        p.quit()
    finally:
        p.close()
    m.wait_log(END_RX % ("pop3", re.escape(HOST)))
    wait_dovecot(tdove, r"pop3-login: Info: Login: user=<carol>, .*TLS")


def test_tls_on_both_legs(mtd, certs, tdove, carol):
    """An implicit TLS service re-encrypting towards the backend."""
    m = mtd()
    port = m.add_service("both", "imap", [tdove.imaps_port],
                         tls_mode="implicit", backend_tls="implicit",
                         backend_ca_file=certs.ca,
                         backend_tls_name=SERVER_NAME)
    m.start()
    ctx = certs.client_context()
    im = imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx, timeout=30)
    try:
        im.login("carol", "carol-secret")
        im.logout()
    finally:
        try:
            im.shutdown()
        except OSError:
            pass
    m.wait_log(r"TLS connection established from")
    m.wait_log(END_RX % ("both", re.escape(SERVER_NAME)))


def test_backend_session_resumed(mtd, certs, tdove):
    """The client-side session cache: later sessions to the same backend
    resume.  The TLS server here is mailtlsd's own implicit service (in
    front of Dovecot's plain port), whose ticket keys every worker shares:
    Dovecot's login processes (one per connection) each have their own,
    and Postfix's come from tlsmgr, which makes resumption there depend on
    its start-up."""
    m = mtd()
    back = m.add_service("back", "imap", [tdove.imap_port],
                         tls_mode="implicit")
    port = client_mode(m, "front", "imap", back, backend_ca_file=certs.ca)
    m.start()
    for _ in range(3):
        with Conn.plain(port) as c:
            assert c.line().startswith(b"* OK")
            c.send(b"a NOOP\r\n")
            assert c.tagged(b"a").startswith(b"a OK")
            c.send(b"b LOGOUT\r\n")
            c.read_to_eof()
    m.wait_log(r"session end service=front .*backend_tls=TLSv1\.3/\S+ "
               r"verified=127\.0\.0\.1 resumed")


# ---------------------------------------------------------------------------
# Verification failures: temporary failure first, error line, nothing sent.

def _refused(m, tdove, protocol, port, why_rx):
    m.start()
    with Conn.plain(port) as c:
        assert c.line() == UNAVAILABLE[protocol]
        c.send(b"a LOGIN carol carol-secret\r\n" if protocol == "imap"
               else b"USER carol\r\n")
        assert c.read_to_eof() == b""
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:\d+: " + why_rx)
    m.wait_log(r"session end .*reason=backend unavailable")
    assert "backend_tls=" not in m.log_text().split("session end")[-1]


def test_wrong_ca_fails(mtd, certs, tdove):
    m = mtd()
    before = dovecot_log(tdove).count("user=<carol>")
    # A self-signed certificate as the only trust anchor: not our CA.
    port = client_mode(m, "imap", "imap", tdove.imaps_port,
                       backend_ca_file=certs.selfsigned_cert)
    _refused(m, tdove, "imap", port,
             r"certificate verification failed: self-signed certificate "
             r"in certificate chain")
    assert dovecot_log(tdove).count("user=<carol>") == before


def test_system_store_by_default(mtd, certs, tdove):
    """No backend_ca_file: the system store, which does not know the test
    CA; verification is on without being asked for."""
    m = mtd()
    port = client_mode(m, "pop3", "pop3", tdove.pop3s_port)
    # Dovecot sends the root with the chain: OpenSSL's word for it.
    _refused(m, tdove, "pop3", port,
             r"certificate verification failed: self-signed certificate "
             r"in certificate chain")


def test_wrong_name_fails(mtd, certs, tdove):
    m = mtd()
    port = client_mode(m, "imap", "imap", tdove.imaps_port,
                       backend_ca_file=certs.ca, backend_tls_name=OTHER_NAME)
    _refused(m, tdove, "imap", port,
             r"certificate verification failed: hostname mismatch")


class TLSRecorder:
    """A TLS server with a certificate for other.example.test that
    records whatever it decrypts: after a refused handshake it must be
    nothing."""

    def __init__(self, certs):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.other_chain, certs.other_key)
        self.sock = mtlib.listen(mtlib.free_port())
        self.port = self.sock.getsockname()[1]
        self.got = bytearray()
        self.handshakes = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        # mtlib.listen() makes accept() time out every 0.2 s, and
        # socket.timeout is an OSError: only the others (close()) end
        # the wait, which is bounded (30 s for all connections).
        deadline = time.monotonic() + 30
        for _ in range(8):                  # bounded
            conn = None
            while conn is None and time.monotonic() < deadline:
                try:
                    conn, _ = self.sock.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
            if conn is None:
                return
            try:
                t = self.ctx.wrap_socket(conn, server_side=True)
                self.handshakes += 1
                t.settimeout(5)
                t.sendall(b"* OK ready\r\n")
                for _ in range(64):
                    data = t.recv(4096)
                    if not data:
                        break
                    self.got += data
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()


def test_nothing_reaches_an_unverified_server(mtd, certs):
    srv = TLSRecorder(certs)
    try:
        m = mtd()
        port = client_mode(m, "imap", "imap", srv.port,
                           backend_ca_file=certs.ca,
                           backend_tls_name=SERVER_NAME)
        _refused(m, None, "imap", port,
                 r"certificate verification failed: hostname mismatch")
        assert srv.handshakes == 0
        assert bytes(srv.got) == b""
    finally:
        srv.close()


def test_verify_false_works_and_check_warns(mtd, binary, certs, tdove):
    m = mtd()
    port = client_mode(m, "imap", "imap", tdove.imaps_port,
                       backend_tls_verify=False)
    m.start()
    with Conn.plain(port) as c:
        assert c.line().startswith(b"* OK")
        c.send(b"a LOGOUT\r\n")
        c.read_to_eof()
    m.wait_log(r"session end service=imap .*backend_tls=TLSv1\.[23]/\S+ "
               r'unverified="self-signed certificate in certificate chain"')
    p = subprocess.run([binary, "-t", "-c", m.conf], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert re.search(r'service "imap": backend_tls_verify = false', out), out
    assert re.search(r'service "imap": tls_mode = "none": 127\.0\.0\.1:%d '
                     r'accepts plaintext \(loopback only\)' % port, out), out


# ---------------------------------------------------------------------------
# Configuration.

def _check(m, binary):
    m.write_config()
    p = subprocess.run([binary, "-t", "-c", m.conf], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace")


def test_plaintext_listen_off_loopback_needs_allow(mtd, binary):
    m = mtd()
    client_mode(m, "imap", "imap", 993)
    m.services[-1][2]["listen"] = ["0.0.0.0:%d" % mtlib.free_port()]
    rc, out = _check(m, binary)
    assert rc != 0 and "is not a loopback address" in out, out
    m.services[-1][2]["allow_plaintext_listen"] = True
    rc, out = _check(m, binary)
    assert rc == 0, out
    assert "passwords cross the network in clear" in out, out


@pytest.mark.parametrize("opts,msg", [
    ({"backend_dane": True}, "'127.0.0.1:993' is an address; set "
     "backend_tls_name"),
    ({"backend_dane": True, "backend_tls_name": "192.0.2.1"},
     "backend_tls_name '192.0.2.1' is an address"),
    ({"backend_tls": "none", "backend_dane": True},
     "'backend_dane': has no effect without backend_tls"),
    ({"backend_tls": "none"}, '"none" needs backend_tls'),
])
def test_config_refusals(mtd, binary, opts, msg):
    m = mtd()
    client_mode(m, "imap", "imap", 993, **opts)
    rc, out = _check(m, binary)
    assert rc != 0 and msg in out, out
