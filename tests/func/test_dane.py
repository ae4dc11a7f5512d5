"""
backend_dane = true (SPEC section 12, RFC 7672): the backend's TLSA
records, authenticated by a real validating resolver, replace the CA
store.

Everything runs in a network namespace made here, with its own
/etc/netns/NAME/resolv.conf ("nameserver 127.0.0.1", "options trust-ad"),
which `ip netns exec` puts in place of the host's for what it runs:

  - an authoritative unbound (auth-zone) on 127.0.0.2 serving dane.test,
    signed here with ldns-keygen/ldns-signzone (with one TLSA record
    tampered with after signing: bogus), and plain.test, unsigned;
  - a validating unbound on 127.0.0.1 with dane.test's DS as its trust
    anchor and both zones as stubs to the first one;
  - TLS backends (a small IMAP-ish server, one port per certificate,
    recording every line it gets after the handshake), one that never
    answers a handshake, a name server that never answers (void.test)
    and one that relays the authoritative answers 1.5 s late
    (slow.test);
  - the same backends again on 127.0.0.5 (same ports, certificates and
    TLSA records) behind an IMAP STARTTLS dialogue;
  - mailtlsd, tls_mode = "none" services with backend_tls = "implicit"
    (or "starttls") and backend_dane = true;
  - the plaintext clients.

The certificates are made here: a self-signed one no CA store trusts, for
a name nobody asks for (DANE-EE); a private CA's (DANE-TA); and a CA that
is the services' backend_ca_file ("store CA"), so that a TLSA mismatch
fails although the CA store alone would have accepted the certificate.

Cases: DANE-EE 3 1 1 and DANE-TA 2 0 1 matches (the message reaches the
backend), a TLSA mismatch and a bogus signature (SERVFAIL) fail closed
(the temporary failure first, an error line, nothing reaches the
backend), and an unsigned answer or a signed NXDOMAIN fall back to the CA
store (works with the right CA, fails with the wrong one).  The bogus
and timeout backends hold certificates of the store CA, so that a wrong
fallback to it would let the session through; not even a handshake may
reach them.  With backend_tls_verify = false a TLSA mismatch still
fails, and no authenticated records means no verification (logged).
The namespace, its resolv.conf and every process are removed at the
end.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import mtlib

UNAVAILABLE = b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n"

PORTS = {"ee": 4651, "ta": 4652, "mismatch": 4653, "plain": 4654,
         "bogus": 4655, "nx": 4656, "void": 4657}
# Each backend again, same port and certificate, TLS after IMAP STARTTLS.
STARTTLS_ADDR = "127.0.0.5"
# A backend that accepts TCP and never says a word (no TLS handshake).
MUTE_PORT = 4658

BACKEND_SCRIPT = r'''
import socket, ssl, sys, threading, time

log = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()


def say(text):
    with lock:
        log.write(text + "\n")


def clear_line(conn):
    """One cleartext line, read byte by byte: nothing beyond it."""
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 4096:     # bounded
        c = conn.recv(1)
        if not c:
            return None
        buf += c
    return buf


def starttls(conn, port):
    """IMAP in cleartext up to the go-ahead of STARTTLS."""
    conn.sendall(b"* OK cleartext greeting\r\n")
    for _ in range(8):                          # bounded
        line = clear_line(conn)
        if line is None:
            return False
        say("%d clear %r" % (port, line))
        parts = line.split()
        tag = parts[0] if parts else b"*"
        if len(parts) > 1 and parts[1].upper() == b"STARTTLS":
            conn.sendall(tag + b" OK begin TLS now\r\n")
            return True
        conn.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag +
                     b" OK done\r\n")
    return False


def handle(conn, ctx, port, clear=False):
    conn.settimeout(15)
    try:
        if clear and not starttls(conn, port):
            conn.close()
            return
        t = ctx.wrap_socket(conn, server_side=True)
    except (OSError, ssl.SSLError) as e:
        say("%d handshake failed: %s" % (port, e))
        conn.close()
        return
    say("%d handshake" % port)
    try:
        if not clear:                   # no second greeting after STARTTLS
            t.sendall(b"* OK [CAPABILITY IMAP4rev1] dane backend ready\r\n")
        f = t.makefile("rb")
        for _ in range(64):                     # bounded
            line = f.readline(4096)
            if not line:
                break
            say("%d got %r" % (port, line))
            parts = line.split()
            tag = parts[0] if parts else b"*"
            cmd = parts[1].upper() if len(parts) > 1 else b"?"
            if cmd == b"LOGOUT":
                t.sendall(b"* BYE bye\r\n" + tag + b" OK LOGOUT done\r\n")
                break
            t.sendall(tag + b" OK " + cmd + b" done\r\n")
    except (OSError, ssl.SSLError) as e:
        say("%d error: %s" % (port, e))
    finally:
        t.close()


def serve(port, chain, key, addr="127.0.0.1"):
    """TLS from the first byte on 127.0.0.1; STARTTLS on STARTTLS_ADDR."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    for _ in range(500):                        # bounded
        conn, _ = s.accept()
        threading.Thread(target=handle, args=(conn, ctx, port,
                                              addr != "127.0.0.1"),
                         daemon=True).start()


def black_hole():
    """A name server that never answers (TLSA lookup timeouts)."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.3", 53))
    for _ in range(10000):                      # bounded
        u.recvfrom(4096)


def slow_relay(query, peer, u):
    say("slow query")
    time.sleep(1.5)
    f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    f.settimeout(5)
    try:
        f.sendto(query, ("127.0.0.2", 53))
        u.sendto(f.recv(4096), peer)
    except OSError:
        pass
    finally:
        f.close()


def slow_server():
    """slow.test's server: the authoritative one's answers, 1.5 s late."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.4", 53))
    for _ in range(10000):                      # bounded
        query, peer = u.recvfrom(4096)
        threading.Thread(target=slow_relay, args=(query, peer, u),
                         daemon=True).start()


def mute():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[2])))
    s.listen(16)
    held = []
    for _ in range(500):                        # bounded
        held.append(s.accept()[0])


threading.Thread(target=black_hole, daemon=True).start()
threading.Thread(target=slow_server, daemon=True).start()
threading.Thread(target=mute, daemon=True).start()
for spec in sys.argv[3:]:
    port, chain, key = spec.split(",")
    threading.Thread(target=serve, args=(int(port), chain, key),
                     daemon=True).start()
    threading.Thread(target=serve, args=(int(port), chain, key,
                                         "127.0.0.5"),
                     daemon=True).start()
time.sleep(0.5)
say("listening")
time.sleep(3600)
'''

CLIENT_SCRIPT = r'''
import socket, sys
port, tok = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port), timeout=30)
f = s.makefile("rb")
out = [f.readline(4096)]
if out[0].startswith(b"* OK"):
    s.sendall(tok + b" NOOP\r\n")
    out.append(f.readline(4096))
    s.sendall(b"z LOGOUT\r\n")
for _ in range(8):                              # bounded
    line = f.readline(4096)
    if not line:
        break
    out.append(line)
for line in out:
    sys.stdout.write(repr(line) + "\n")
'''

HOLD_SCRIPT = r'''
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    line = s.makefile("rb").readline(4096)
    assert line.startswith(b"* OK"), line
    socks.append(s)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()                                # until the test is done
'''

AUTH_CONF = """server:
    interface: 127.0.0.2
    port: 53
    do-daemonize: no
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    pidfile: ""
    directory: "{dir}"
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "test." nodefault
auth-zone:
    name: "dane.test"
    zonefile: "{dir}/dane.test.zone.signed"
    for-downstream: yes
    for-upstream: no
auth-zone:
    name: "plain.test"
    zonefile: "{dir}/plain.test.zone"
    for-downstream: yes
    for-upstream: no
auth-zone:
    name: "slow.test"
    zonefile: "{dir}/slow.test.zone"
    for-downstream: yes
    for-upstream: no
"""

RESOLVER_CONF = """server:
    interface: 127.0.0.1
    port: 53
    do-daemonize: no
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    pidfile: ""
    directory: "{dir}"
    verbosity: 1
    val-log-level: 2
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    local-zone: "test." nodefault
    trust-anchor-file: "{anchor}"
    # void.test's server never answers: wait long before giving up on it.
    unknown-server-time-limit: 20000
stub-zone:
    name: "void.test"
    stub-addr: 127.0.0.3
stub-zone:
    name: "slow.test"
    stub-addr: 127.0.0.4
stub-zone:
    name: "dane.test"
    stub-addr: 127.0.0.2
stub-zone:
    name: "plain.test"
    stub-addr: 127.0.0.2
"""

SOA = "@ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 300\n" \
      "@ IN NS ns.{z}.\nns IN A 127.0.0.2\n"


def _tools():
    missing = [t for t in ("unbound", "ldns-keygen", "ldns-signzone",
                           "openssl", "ip") if shutil.which(t) is None
               and not os.path.exists("/usr/sbin/" + t)]
    if missing:
        pytest.fail("missing %s (tools/install-deps.sh installs them)"
                    % ", ".join(missing))


def _exe(name):
    return shutil.which(name) or "/usr/sbin/" + name


def sh(*argv, cwd=None):
    return mtlib.run(list(argv), timeout=60, cwd=cwd)


class Pki:
    """Certificates made with the openssl command, in d."""

    def __init__(self, d):
        self.d = d

    def p(self, name):
        return os.path.join(self.d, name)

    def key(self, name):
        sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
           "ec_paramgen_curve:P-256", "-out", self.p(name + ".key"))
        os.chmod(self.p(name + ".key"), 0o640)
        return self.p(name + ".key")

    def ca(self, name, cn):
        self.key(name)
        sh("openssl", "req", "-x509", "-new", "-key", self.p(name + ".key"),
           "-subj", "/CN=" + cn, "-days", "30", "-sha256",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign",
           "-out", self.p(name + ".pem"))
        return self.p(name + ".pem")

    def leaf(self, name, dns, ca=None, more=()):
        """A server certificate for dns (and the names in more), issued
        by ca (or self-signed); returns the chain file (leaf, then CA)."""
        self.key(name)
        ext = self.p(name + ".ext")
        san = ",".join("DNS:" + n for n in (dns,) + tuple(more))
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % san)
        if ca is None:
            sh("openssl", "req", "-x509", "-new", "-key",
               self.p(name + ".key"), "-subj", "/CN=" + dns, "-days", "30",
               "-sha256", "-addext", "subjectAltName=DNS:" + dns,
               "-addext", "basicConstraints=critical,CA:FALSE",
               "-out", self.p(name + ".pem"))
            shutil.copy(self.p(name + ".pem"), self.p(name + ".chain"))
        else:
            sh("openssl", "req", "-new", "-key", self.p(name + ".key"),
               "-subj", "/CN=" + dns, "-out", self.p(name + ".csr"))
            sh("openssl", "x509", "-req", "-in", self.p(name + ".csr"),
               "-CA", self.p(ca + ".pem"), "-CAkey", self.p(ca + ".key"),
               "-CAcreateserial", "-days", "30", "-sha256", "-extfile", ext,
               "-out", self.p(name + ".pem"))
            with open(self.p(name + ".chain"), "w") as out:
                for part in (name, ca):
                    with open(self.p(part + ".pem")) as f:
                        out.write(f.read())
        return self.p(name + ".chain")

    def spki_sha256(self, name):
        """TLSA 3 1 1 / 2 1 1 data of a certificate."""
        pub = sh("openssl", "x509", "-in", self.p(name + ".pem"), "-noout",
                 "-pubkey").stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                             input=pub, stdout=subprocess.PIPE, check=True,
                             timeout=30).stdout
        return hashlib.sha256(der).hexdigest()

    def cert_sha256(self, name):
        """TLSA x 0 1 data of a certificate."""
        der = sh("openssl", "x509", "-in", self.p(name + ".pem"),
                 "-outform", "DER").stdout
        return hashlib.sha256(der).hexdigest()


class DaneNet:
    """The namespace, its resolv.conf, the DNS servers and backends."""

    def __init__(self, workdir):
        self.tag = os.urandom(3).hex()
        self.ns = "mtdane%s" % self.tag
        self.dir = os.path.join(workdir, "dane")
        os.makedirs(self.dir, exist_ok=True)
        self.etc = "/etc/netns/%s" % self.ns
        self.procs = []
        self.made_ns = False
        self.made_etc = False
        self.backend_log = os.path.join(self.dir, "backends.log")

    def argv(self, *argv):
        return ["ip", "netns", "exec", self.ns] + list(argv)

    def setup(self):
        sh("ip", "netns", "add", self.ns)
        self.made_ns = True
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        os.makedirs(self.etc, exist_ok=True)
        self.made_etc = True
        with open(os.path.join(self.etc, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions trust-ad\n")

    def start(self, name, argv, ready=None):
        p = mtlib.Process("%s-%s" % (name, self.tag), self.argv(*argv),
                          os.path.join(self.dir, name + ".log"))
        p.start()
        self.procs.append(p)
        if ready is not None:
            mtlib.wait_until(lambda: ready in mtlib.tail(p.log_path), 15,
                             "%s: %r" % (name, ready))
        return p

    def query(self, qname):
        """What the validating resolver says, via drill if present."""
        if shutil.which("drill") is None:
            return ""
        r = subprocess.run(self.argv("drill", "-D", "TLSA", qname,
                                     "@127.0.0.1"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        return r.stdout.decode(errors="replace")

    def destroy(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []
        if self.made_ns:
            mtlib.run(["ip", "netns", "del", self.ns], timeout=20,
                      check=False)
            self.made_ns = False
        if self.made_etc:
            shutil.rmtree(self.etc, ignore_errors=True)
            self.made_etc = False


def _zones(d, pki):
    """dane.test, signed (one record tampered with afterwards), and
    plain.test, unsigned.  Returns the trust anchor file (the DS)."""
    ee = pki.spki_sha256("ee")
    wrong = hashlib.sha256(b"no such key").hexdigest()
    records = [
        "_%d._tcp.ee IN TLSA 3 1 1 %s" % (PORTS["ee"], ee),
        "_%d._tcp.ta IN TLSA 2 0 1 %s" % (PORTS["ta"],
                                          pki.cert_sha256("taca")),
        # Nothing usable: PKIX-EE(1) is not for this (RFC 7672 3.1.3), a
        # SHA-256 digest of 10 bytes is no digest.
        "_%d._tcp.unusable IN TLSA 1 1 1 %s" % (PORTS["nx"], ee),
        "_%d._tcp.unusable IN TLSA 3 1 1 %s" % (PORTS["nx"], ee[:20]),
        # The same anchor for another name, which the certificate lacks.
        "_%d._tcp.taname IN TLSA 2 0 1 %s" % (PORTS["ta"],
                                              pki.cert_sha256("taca")),
        # The store CA would accept this backend: DANE must not.
        "_%d._tcp.mismatch IN TLSA 3 1 1 %s" % (PORTS["mismatch"], ee),
        # Signed with a wrong digest, then "corrected" below: the
        # record would match (as would the store CA, which issued the
        # certificate), but its signature no longer does.
        "_%d._tcp.bogus IN TLSA 3 1 1 %s" % (PORTS["bogus"], wrong),
    ]
    with open(os.path.join(d, "dane.test.zone"), "w") as f:
        f.write("$ORIGIN dane.test.\n$TTL 300\n" + SOA.format(z="dane.test")
                + "\n".join(records) + "\n")
    with open(os.path.join(d, "plain.test.zone"), "w") as f:
        f.write("$ORIGIN plain.test.\n$TTL 300\n" +
                SOA.format(z="plain.test") +
                # Would be a mismatch, if it counted: no AD, it does not.
                "_%d._tcp.mx IN TLSA 3 1 1 %s\n" % (PORTS["plain"], wrong))
    with open(os.path.join(d, "slow.test.zone"), "w") as f:
        f.write("$ORIGIN slow.test.\n$TTL 300\n" + SOA.format(z="slow.test"))
    ksk = sh("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.test",
             cwd=d).stdout.decode().strip()
    zsk = sh("ldns-keygen", "-a", "ECDSAP256SHA256", "dane.test",
             cwd=d).stdout.decode().strip()
    sh("ldns-signzone", "dane.test.zone", ksk, zsk, cwd=d)
    signed = os.path.join(d, "dane.test.zone.signed")
    with open(signed) as f:
        text = f.read()
    assert text.count(wrong) == 1, text
    with open(signed, "w") as f:
        f.write(text.replace(wrong, pki.spki_sha256("bogus")))
    return os.path.join(d, ksk + ".ds")


@pytest.fixture(scope="module")
def dane(workroot, binary):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    _tools()
    workdir = mtlib.make_workdir(workroot, prefix="dane-")
    net = DaneNet(workdir)
    try:
        net.setup()
        pki = Pki(net.dir)
        pki.ca("storeca", "Store CA")      # the services' backend_ca_file
        pki.ca("taca", "Private DANE-TA CA")
        chains = {
            # Self-signed, a name nobody asks for: only DANE-EE helps.
            "ee": pki.leaf("ee", "wrong-name.example"),
            "ta": pki.leaf("ta", "ta.dane.test", ca="taca"),
            "mismatch": pki.leaf("mismatch", "mismatch.dane.test",
                                 ca="storeca"),
            "plain": pki.leaf("plain", "mx.plain.test", ca="storeca"),
            "nx": pki.leaf("nx", "nx.dane.test", ca="storeca",
                           more=("unusable.dane.test",)),
            # The store CA would accept these: only a wrong fallback to
            # it (instead of failing closed) would let a session through.
            "bogus": pki.leaf("bogus", "bogus.dane.test", ca="storeca"),
            "void": pki.leaf("void", "mx.void.test", ca="storeca"),
        }
        anchor = _zones(net.dir, pki)
        for name, text in (("auth", AUTH_CONF), ("resolver", RESOLVER_CONF)):
            with open(os.path.join(net.dir, name + ".conf"), "w") as f:
                f.write(text.format(dir=net.dir, anchor=anchor))
        net.start("unbound-auth", [_exe("unbound"), "-d", "-c",
                                   os.path.join(net.dir, "auth.conf")],
                  ready="start of service")
        net.start("unbound-resolver", [_exe("unbound"), "-d", "-c",
                                       os.path.join(net.dir,
                                                    "resolver.conf")],
                  ready="start of service")
        specs = []
        for name, port in PORTS.items():
            key = chains[name].replace(".chain", ".key")
            specs.append("%d,%s,%s" % (port, chains[name], key))
        script = os.path.join(net.dir, "backends.py")
        with open(script, "w") as f:
            f.write(BACKEND_SCRIPT)
        mtlib.register_log("dane-backends", net.backend_log)
        net.start("backends", [sys.executable, script, net.backend_log,
                               str(MUTE_PORT)] + specs)
        mtlib.wait_until(lambda: "listening" in _read(net.backend_log), 15,
                         "the TLS backends")
        net.pki = pki
        net.workdir = workdir
        net.binary = binary
        yield net
    finally:
        mtlib.unregister_log("dane-backends")
        net.destroy()


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _in_ns_binary(net):
    path = os.path.join(net.dir, "mailtlsd-in-ns")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n'
                % (net.ns, net.binary))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def mtd_ns(dane, workdir, certs):
    """mailtlsd in the namespace, with services made by the test."""
    made = []

    def make(**global_opts):
        m = mtlib.MailTLSD(workdir, certs, binary=_in_ns_binary(dane),
                           name="mailtlsd-dane", **global_opts)
        made.append(m)
        return m
    yield make
    for m in made:
        m.stop()


def dane_service(m, dane, name, backend, tls_name, ca="storeca",
                 backend_tls="implicit", **opts):
    """A service towards one backend: with backend_tls = "starttls" the
    same certificate, port and TLSA records, behind an IMAP STARTTLS
    dialogue on STARTTLS_ADDR."""
    addr = "127.0.0.1" if backend_tls == "implicit" else STARTTLS_ADDR
    return m.add_service(name, "imap", ["%s:%d" % (addr, PORTS[backend])],
                         tls_mode="none", backend_tls=backend_tls,
                         backend_dane=True, backend_tls_name=tls_name,
                         backend_ca_file=dane.pki.p(ca + ".pem"),
                         backend_connect_timeout=10, **opts)


def session(dane, port):
    """A plaintext client in the namespace: (its token, the lines it got)."""
    tok = mtlib.token()
    script = os.path.join(dane.dir, "client.py")
    with open(script, "w") as f:
        f.write(CLIENT_SCRIPT)
    r = subprocess.run(dane.argv(sys.executable, script, str(port), tok),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=90)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    lines = [eval(line, {}) for line in out.splitlines()]   # reprs of bytes
    return tok, lines


def assert_relayed(dane, backend, tok, lines):
    assert lines[0].startswith(b"* OK"), lines
    assert lines[1] == tok.encode() + b" OK NOOP done\r\n", lines
    want = "%d got %r" % (PORTS[backend], tok.encode() + b" NOOP\r\n")
    mtlib.wait_until(lambda: want in _read(dane.backend_log), 10,
                     "the command at the backend")


def assert_refused(dane, tok, lines):
    assert lines == [UNAVAILABLE], lines
    assert tok not in _read(dane.backend_log)


def assert_not_connected(dane, backend):
    """Not even a handshake (failed or not) reached the backend."""
    assert "%d handshake" % PORTS[backend] not in _read(dane.backend_log)


# ---------------------------------------------------------------------------

def test_dane_ee_match(dane, mtd_ns):
    """3 1 1 of a self-signed certificate for another name: accepted (no
    name check with DANE-EE, no CA needed)."""
    m = mtd_ns()
    port = dane_service(m, dane, "ee", "ee", "ee.dane.test")
    m.start()
    tok, lines = session(dane, port)
    assert_relayed(dane, "ee", tok, lines)
    m.wait_log(r"session end service=ee .*backend_tls=TLSv1\.[23]/\S+ "
               r"verified=\S+ dane=ee")


def test_dane_after_backend_starttls(dane, mtd_ns):
    """backend_tls = "starttls": the TLSA records decide the handshake
    after the cleartext dialogue as they do for implicit TLS.  DANE-EE
    lets the self-signed certificate through; a mismatch fails closed
    after STARTTLS, with nothing relayed."""
    m = mtd_ns()
    ok = dane_service(m, dane, "ee", "ee", "ee.dane.test",
                      backend_tls="starttls")
    bad = dane_service(m, dane, "mismatch", "mismatch",
                       "mismatch.dane.test", backend_tls="starttls")
    m.start()
    tok, lines = session(dane, ok)
    assert_relayed(dane, "ee", tok, lines)
    log = _read(dane.backend_log)
    assert "%d clear %r" % (PORTS["ee"], b"mt2 STARTTLS\r\n") in log, log
    m.wait_log(r"session end service=ee .*backend_tls=TLSv1\.[23]/\S+ "
               r"verified=\S+ dane=ee")
    tok, lines = session(dane, bad)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend %s:%d: certificate verification "
               r"failed: TLSA mismatch" % (re.escape(STARTTLS_ADDR),
                                           PORTS["mismatch"]))
    assert "%d clear %r" % (PORTS["mismatch"], b"mt2 STARTTLS\r\n") in \
        _read(dane.backend_log)


def test_dane_ta_match(dane, mtd_ns):
    """2 0 1 of a private CA that backend_ca_file does not hold."""
    m = mtd_ns()
    port = dane_service(m, dane, "ta", "ta", "ta.dane.test")
    m.start()
    tok, lines = session(dane, port)
    assert_relayed(dane, "ta", tok, lines)
    m.wait_log(r"session end service=ta .*backend_tls=TLSv1\.[23]/\S+ "
               r"verified=ta\.dane\.test dane=ta")


def test_dane_ta_checks_the_name(dane, mtd_ns):
    """DANE-TA: the trust anchor matches (the same 2 0 1 record under
    another name), but the certificate is not for that name: refused."""
    m = mtd_ns()
    port = dane_service(m, dane, "taname", "ta", "taname.dane.test")
    m.start()
    tok, lines = session(dane, port)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: certificate "
               r"verification failed: hostname mismatch" % PORTS["ta"])


def test_tlsa_mismatch_fails_closed(dane, mtd_ns):
    """The CA store would accept this backend; its TLSA record does not
    match: the temporary failure, an error line, nothing relayed."""
    m = mtd_ns()
    port = dane_service(m, dane, "mismatch", "mismatch",
                        "mismatch.dane.test")
    m.start()
    tok, lines = session(dane, port)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: certificate "
               r"verification failed: TLSA mismatch" % PORTS["mismatch"])
    m.wait_log(r"session end service=mismatch .*reason=backend unavailable")


def test_bogus_signature_fails_closed(dane, mtd_ns):
    """A record that would match, with a broken signature: the resolver
    says SERVFAIL, the backend is not even connected."""
    assert "SERVFAIL" in dane.query("_%d._tcp.bogus.dane.test"
                                    % PORTS["bogus"]) or \
        shutil.which("drill") is None
    m = mtd_ns()
    port = dane_service(m, dane, "bogus", "bogus", "bogus.dane.test")
    m.start()
    tok, lines = session(dane, port)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: TLSA lookup "
               r"_%d\._tcp\.bogus\.dane\.test failed: .*DANE fails closed"
               % (PORTS["bogus"], PORTS["bogus"]))
    assert_not_connected(dane, "bogus")


def test_lookup_timeout_fails_closed(dane, mtd_ns):
    """The resolver does not answer within backend_connect_timeout: the
    session's wait ends there, closed.  Meanwhile (one worker) another
    session's lookup and relay go through: neither the worker loop nor
    the other lookups wait for the hanging one."""
    m = mtd_ns(workers=1)
    port = dane_service(m, dane, "void", "void", "mx.void.test")
    m.services[-1][2]["backend_connect_timeout"] = 3
    other = dane_service(m, dane, "ee", "ee", "ee.dane.test")
    m.start()
    tok = mtlib.token()
    script = os.path.join(dane.dir, "client.py")
    with open(script, "w") as f:
        f.write(CLIENT_SCRIPT)
    waiting = subprocess.Popen(dane.argv(sys.executable, script, str(port),
                                         tok), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        m.wait_log(r"waiting for TLSA _%d\._tcp\.mx\.void\.test"
                   % PORTS["void"])
        tok2, lines = session(dane, other)
        assert_relayed(dane, "ee", tok2, lines)
        out = waiting.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(10)
    assert [eval(line, {}) for line in out.splitlines()] == [UNAVAILABLE], \
        out
    assert tok not in _read(dane.backend_log)
    assert_not_connected(dane, "void")
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: TLSA lookup timeout: "
               r"DANE fails closed" % PORTS["void"])
    m.wait_log(r"session end service=void .*reason=backend unavailable")


def _fds(pid):
    """(descriptors, eventfds) the process holds."""
    total = eventfds = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        total += 1
        eventfds += target == "anon_inode:[eventfd]"
    return total, eventfds


def test_dane_sessions_hold_two_descriptors(dane, mtd_ns):
    """A relaying DANE session holds its two sockets and nothing more: the
    eventfd of a TLSA wait exists only while the session waits (here only
    the first session waits; the others find the answer cached), as
    raise_nofile() counts."""
    n = 8
    m = mtd_ns(workers=1)
    port = dane_service(m, dane, "ee", "ee", "ee.dane.test")
    m.start()
    tok, lines = session(dane, port)            # the answer is cached now
    assert_relayed(dane, "ee", tok, lines)
    m.wait_log(r"session end service=ee ")
    before = _fds(m.pid)
    script = os.path.join(dane.dir, "hold.py")
    with open(script, "w") as f:
        f.write(HOLD_SCRIPT)
    hold = subprocess.Popen(dane.argv(sys.executable, script, str(port),
                                      str(n)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert hold.stdout.readline() == b"ready\n"
        during = _fds(m.pid)
    finally:
        hold.stdin.close()
        hold.wait(30)
    assert during[1] == before[1], (before, during)
    assert during[0] <= before[0] + 2 * n, (before, during)


def test_reload_turns_dane_on_in_a_chroot(dane, mtd_ns, workdir):
    """resolv.conf is read at startup, before the chroot: a reload that
    adds a backend_dane service inside the jail (which has no
    /etc/resolv.conf) gets working lookups."""
    jail = os.path.join(workdir, "jail")
    os.makedirs(jail)
    os.chmod(jail, 0o755)
    m = mtd_ns(chroot=jail)
    m.add_service("plain", "imap", ["127.0.0.1:%d" % PORTS["plain"]],
                  tls_mode="none", backend_tls="implicit",
                  backend_tls_name="mx.plain.test",
                  backend_ca_file=dane.pki.p("storeca.pem"))
    m.start()
    m.wait_log(r"chrooted to " + re.escape(jail))
    port = dane_service(m, dane, "ee", "ee", "ee.dane.test")
    m.write_config()
    for path in (m.conf, dane.pki.p("storeca.pem")):
        os.makedirs(os.path.dirname(jail + path), exist_ok=True)
        shutil.copy2(path, jail + path)
    assert not os.path.exists(jail + "/etc/resolv.conf")
    os.kill(m.pid, signal.SIGHUP)
    m.wait_log(r"configuration reloaded")
    mtlib.wait_until(lambda: port in mtlib.listening_ports(m.pid), 10,
                     "the new service's port")
    tok, lines = session(dane, port)
    assert_relayed(dane, "ee", tok, lines)
    m.wait_log(r"session end service=ee .*dane=ee")
    assert "backend_dane: " not in m.log_text()     # no resolver warning


def test_resolver_warning_at_startup(dane, mtd_ns):
    """Without "options trust-ad" the AD bit never arrives: the daemon
    says so when it starts, not only -t."""
    with open(os.path.join(dane.etc, "resolv.conf"), "w") as f:
        f.write("nameserver 127.0.0.1\n")
    try:
        m = mtd_ns()
        dane_service(m, dane, "ee", "ee", "ee.dane.test")
        m.start()
        m.wait_log(r'warning: backend_dane: /etc/resolv.conf has no '
                   r'"options trust-ad"')
    finally:
        with open(os.path.join(dane.etc, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions trust-ad\n")


def test_one_deadline_for_lookup_and_handshake(dane, mtd_ns):
    """The TLSA answer takes a second or more, then the backend never
    answers the handshake: the backend fails backend_connect_timeout (5 s)
    after the session began, not 5 s after the answer came in."""
    m = mtd_ns()
    port = m.add_service("slow", "imap", ["127.0.0.1:%d" % MUTE_PORT],
                         tls_mode="none", backend_tls="implicit",
                         backend_dane=True, backend_tls_name="mx.slow.test",
                         backend_ca_file=dane.pki.p("storeca.pem"),
                         backend_connect_timeout=5)
    m.start()
    t0 = time.monotonic()
    tok, lines = session(dane, port)
    took = time.monotonic() - t0
    assert lines == [UNAVAILABLE], lines
    m.wait_log(r"waiting for TLSA _%d\._tcp\.mx\.slow\.test" % MUTE_PORT)
    m.wait_log(r"TLSA _%d\._tcp\.mx\.slow\.test: none" % MUTE_PORT)
    m.wait_log(r"backend 127\.0\.0\.1:%d: connect failed: timeout"
               % MUTE_PORT)
    assert 4.5 < took < 5.75, took


def test_one_deadline_for_lookup_and_starttls_prelude(dane, mtd_ns):
    """backend_tls = "starttls": the TLSA answer takes a second or more,
    then the server never greets.  The lookup, the connect and the
    STARTTLS dialogue share one backend_connect_timeout (5 s from the
    start of the session), the dialogue does not get 5 s of its own."""
    m = mtd_ns()
    port = m.add_service("slowstls", "imap", ["127.0.0.1:%d" % MUTE_PORT],
                         tls_mode="none", backend_tls="starttls",
                         backend_dane=True,
                         backend_tls_name="mx2.slow.test",
                         backend_ca_file=dane.pki.p("storeca.pem"),
                         backend_connect_timeout=5)
    m.start()
    t0 = time.monotonic()
    tok, lines = session(dane, port)
    took = time.monotonic() - t0
    assert lines == [UNAVAILABLE], lines
    m.wait_log(r"waiting for TLSA _%d\._tcp\.mx2\.slow\.test" % MUTE_PORT)
    m.wait_log(r"TLSA _%d\._tcp\.mx2\.slow\.test: none" % MUTE_PORT)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: not ready within "
               r"backend_connect_timeout 5 s" % MUTE_PORT)
    assert 4.5 < took < 5.75, took


@pytest.mark.parametrize("backend,name,why,word", [
    ("plain", "mx.plain.test", "TLSA answer not authenticated", "insecure"),
    ("nx", "nx.dane.test", "no TLSA records", "none"),
    ("nx", "unusable.dane.test", "no usable TLSA records", "unusable"),
])
def test_no_dane_falls_back_to_the_ca(dane, mtd_ns, backend, name, why,
                                      word):
    """An unsigned answer (its record would not match), a signed
    NXDOMAIN and signed records of which none is usable:
    backend_tls_verify's rule, the CA store and the name."""
    m = mtd_ns()
    good = dane_service(m, dane, backend + "-ca", backend, name)
    bad = dane_service(m, dane, backend + "-wrongca", backend, name,
                       ca="taca")
    m.start()
    tok, lines = session(dane, good)
    assert_relayed(dane, backend, tok, lines)
    m.wait_log(r"backend 127\.0\.0\.1:%d: DANE does not apply \(%s[^)]*\): "
               r"verifying with the CA store" % (PORTS[backend], why))
    m.wait_log(r"session end service=%s-ca .*verified=%s dane=%s"
               % (backend, re.escape(name), word))
    tok, lines = session(dane, bad)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: certificate "
               r"verification failed: self-signed certificate in certificate chain"
               % PORTS[backend])


def test_verify_false_tlsa_mismatch_fails_closed(dane, mtd_ns):
    """backend_tls_verify = false turns off the CA store, not DANE:
    authenticated records that do not match still refuse the backend."""
    m = mtd_ns()
    port = dane_service(m, dane, "mismatch", "mismatch",
                        "mismatch.dane.test", backend_tls_verify=False)
    m.start()
    tok, lines = session(dane, port)
    assert_refused(dane, tok, lines)
    m.wait_log(r"error: \S+ backend 127\.0\.0\.1:%d: certificate "
               r"verification failed: TLSA mismatch" % PORTS["mismatch"])


@pytest.mark.parametrize("backend,name,why,word", [
    ("plain", "mx.plain.test", "TLSA answer not authenticated", "insecure"),
    ("nx", "nx.dane.test", "no TLSA records", "none"),
])
def test_verify_false_without_dane_is_unverified(dane, mtd_ns, backend,
                                                 name, why, word):
    """No authenticated records and backend_tls_verify = false: relayed
    although the CA (taca) cannot verify the chain, and logged so."""
    m = mtd_ns()
    port = dane_service(m, dane, backend, backend, name, ca="taca",
                        backend_tls_verify=False)
    m.start()
    tok, lines = session(dane, port)
    assert_relayed(dane, backend, tok, lines)
    m.wait_log(r"backend 127\.0\.0\.1:%d: DANE does not apply \(%s[^)]*\): "
               r"backend_tls_verify = false" % (PORTS[backend], why))
    m.wait_log(r"session end service=%s .*backend_tls=\S+ unverified=\"[^\"]+"
               r"\" dane=%s" % (backend, word))


def test_config_check_names_the_resolver(dane, mtd_ns):
    m = mtd_ns()
    dane_service(m, dane, "ee", "ee", "ee.dane.test")
    m.write_config()
    p = subprocess.run(dane.argv(dane.binary, "-t", "-c", m.conf),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert re.search(r'service "ee": backend_dane: TLSA records are trusted '
                     r'as far as the resolver', out), out
    # Without trust-ad the AD bit never arrives: -t says so.
    with open(os.path.join(dane.etc, "resolv.conf"), "w") as f:
        f.write("nameserver 127.0.0.1\n")
    try:
        p = subprocess.run(dane.argv(dane.binary, "-t", "-c", m.conf),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30, stdin=subprocess.DEVNULL)
    finally:
        with open(os.path.join(dane.etc, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions trust-ad\n")
    out = p.stdout.decode(errors="replace")
    assert 'has no "options trust-ad"' in out, out
