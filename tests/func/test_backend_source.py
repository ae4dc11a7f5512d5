"""
backend_source (SPEC section 9): where backend connections come from.

(a) A fixed source: mailtlsd binds 127.0.0.5 before connecting to real
    Postfix, whose log and Received header then name 127.0.0.5 (neither
    mailtlsd's usual 127.0.0.1 nor the client's 127.0.0.2).
(b) "client": the backend connection comes from the client's own address
    (IP_TRANSPARENT).  Three network namespaces made here, joined by veth
    pairs:

        client 10.N.1.2 --- 10.N.1.1 gateway 10.N.2.1 --- 10.N.2.2 backend
                             (mailtlsd)

    Two placements of the backend, the two recipes of doc/deployment.md,
    "backend_source": on its own host (the backend namespace, whose
    default route points back at the gateway), and on mailtlsd's host
    (127.0.0.1 in the gateway namespace).  Either way the gateway's
    policy routing delivers the backend's replies to 10.N.1.2 locally, to
    mailtlsd's transparent socket.  Each test first checks that without
    that routing the backend connection times out, so the recipe is shown
    needed as well as sufficient.  mailtlsd starts as root and drops to
    nobody, so this also proves that CAP_NET_ADMIN survives the drop.  A
    client in its namespace speaks SMTP with STARTTLS end to end; the
    backend (a small SMTP server) records getpeername() and the message.
(c) -t and startup without the capability: an error, not a daemon whose
    every session fails.

Namespace and interface names carry a random tag per test; teardown
deletes exactly those namespaces (which takes their veth ends along).
"""

import os
import re
import smtplib
import subprocess
import sys

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME

CLIENT_IP = "127.0.0.2"
SOURCE_IP = "127.0.0.5"
BACKEND_PORT = 2525


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("network namespaces and privilege drops need root")


# ---------------------------------------------------------------------------
# (a) A fixed source address, seen by real Postfix.

def test_fixed_source_seen_by_postfix(mtd, postfix, alice, certs):
    m = mtd()
    port = m.add_service("submission", "smtp", [postfix.port],
                         tls_mode="starttls", backend_source=SOURCE_IP)
    m.start()
    mark = mtlib.LogMark(postfix.log)
    tok = mtlib.token()
    msg = mtlib.make_message(tok, rcpt=alice.address)
    with smtplib.SMTP(HOST, port, timeout=30,
                      source_address=(CLIENT_IP, 0)) as s:
        s.ehlo("client.example.test")
        s.starttls(context=certs.client_context())
        s.ehlo("client.example.test")
        assert s.sendmail("sender@example.org", [alice.address], msg) == {}
    delivered = alice.find(tok)
    head = delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    received = re.search(rb"^Received: from .*(\n[ \t].*)*", head, re.M)
    assert received, head
    assert b"[%s]" % SOURCE_IP.encode() in received.group(0), \
        received.group(0)
    mtlib.wait_until(lambda: re.search(
        r"connect from \S*\[%s\]" % re.escape(SOURCE_IP), mark.text()),
        10, "postfix connect line from %s" % SOURCE_IP)


class PeerRecorder(mtlib.ScriptedBackend):
    """mtlib's scripted SMTP backend, also noting each connection's peer."""

    def __init__(self):
        super().__init__("smtp")
        self.peers = []

    def _serve(self, conn, rec):
        with self._lock:
            self.peers.append(conn.getpeername()[0])
        super()._serve(conn, rec)


@pytest.fixture
def recorder():
    r = PeerRecorder().start()
    yield r
    r.stop()


def test_client_source_family_mismatch_fails_over(mtd, recorder, certs):
    """An IPv4 client cannot reach an IPv6 backend from its own address:
    logged as that backend's failed connect, then the next one is used.
    On loopback the client's 127.0.0.2 is a local address, so no routing
    is needed; the daemon still drops to nobody keeping CAP_NET_ADMIN."""
    _need_root()
    m = mtd()
    port = m.add_service("submission", "smtp",
                         ["[::1]:%d" % mtlib.free_port(), recorder.port],
                         tls_mode="starttls", backend_source="client")
    m.start()
    with smtplib.SMTP(HOST, port, timeout=30,
                      source_address=(CLIENT_IP, 0)) as s:
        s.ehlo("client.example.test")
        s.starttls(context=certs.client_context())
        assert s.noop()[0] == 250
    m.wait_log(r"backend \[::1\]:\d+: connect failed: source %s is not of "
               r"the backend's address family" % re.escape(CLIENT_IP))
    with recorder._lock:
        assert recorder.peers == [CLIENT_IP], recorder.peers


# ---------------------------------------------------------------------------
# (b) The client's own address through a gateway namespace.

BACKEND_SCRIPT = r'''
import socket, sys, time
addr, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(8)
srv.settimeout(0.5)
end = time.monotonic() + 120            # never outlive a test
def say(line):
    with open(log, "a") as f:
        f.write(line + "\n")
say("listening")
while time.monotonic() < end:
    try:
        c, peer = srv.accept()
    except socket.timeout:
        continue
    say("peer %s %d" % peer)
    c.settimeout(10)
    f = c.makefile("rb")
    c.sendall(b"220 backend.example.test ESMTP\r\n")
    data = False
    try:
        for line in f:
            if data:
                if line in (b".\r\n", b".\n"):
                    data = False
                    c.sendall(b"250 2.0.0 queued\r\n")
                else:
                    say("data " + line.decode("utf-8", "replace").rstrip())
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-backend.example.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                data = True
                c.sendall(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                break
            else:
                c.sendall(b"250 ok\r\n")
    except OSError:
        pass
    c.close()
'''

CLIENT_SCRIPT = r'''
import smtplib, ssl, sys
host, port, ca, tok = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
# Connected by address: the chain is verified, the name checked below.
ctx.check_hostname = False
with smtplib.SMTP(host, port, timeout=20) as s:
    s.ehlo("client.example.test")
    s.starttls(context=ctx)
    names = [v for k, v in s.sock.getpeercert().get("subjectAltName", ())]
    assert "%s" in names, names
    s.ehlo("client.example.test")
    s.sendmail("a@example.org", ["b@example.org"],
               "Subject: %%s\r\n\r\n%%s\r\n" %% (tok, tok))
print("sent")
''' % SERVER_NAME


def sh(*argv, check=True):
    return mtlib.run(list(argv), timeout=20, check=check)


class Topology:
    """client -- gateway -- backend, each a network namespace of its own."""

    def __init__(self):
        tag = os.urandom(3).hex()
        self.net = 100 + int(tag[:2], 16) % 100      # 10.N.x.x
        self.ns = {k: "mt%s-%s" % (tag, k) for k in ("cli", "gw", "be")}
        self.made = []
        # veth names: at most 15 bytes, unique per run by the tag.
        self.if_gc, self.if_c = "mt%sgc" % tag, "mt%sc" % tag
        self.if_gb, self.if_b = "mt%sgb" % tag, "mt%sb" % tag
        self.client_ip = "10.%d.1.2" % self.net
        self.gw_client_ip = "10.%d.1.1" % self.net
        self.gw_backend_ip = "10.%d.2.1" % self.net
        self.backend_ip = "10.%d.2.2" % self.net

    def ip(self, ns, *args):
        return sh("ip", "-n", self.ns[ns], *args)

    def build(self):
        for ns in ("cli", "gw", "be"):
            sh("ip", "netns", "add", self.ns[ns])
            self.made.append(self.ns[ns])
            self.ip(ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.if_gc, "netns", self.ns["gw"], "type",
           "veth", "peer", "name", self.if_c, "netns", self.ns["cli"])
        sh("ip", "link", "add", self.if_gb, "netns", self.ns["gw"], "type",
           "veth", "peer", "name", self.if_b, "netns", self.ns["be"])
        for ns, dev, addr in (("cli", self.if_c, self.client_ip),
                              ("gw", self.if_gc, self.gw_client_ip),
                              ("gw", self.if_gb, self.gw_backend_ip),
                              ("be", self.if_b, self.backend_ip)):
            self.ip(ns, "addr", "add", addr + "/24", "dev", dev)
            self.ip(ns, "link", "set", dev, "up")
        self.ip("cli", "route", "add", "default", "via", self.gw_client_ip)
        # The backend answers the client's address through the gateway.
        self.ip("be", "route", "add", "default", "via", self.gw_backend_ip)

    # doc/deployment.md, "backend_source": the backend's replies to a
    # client address are delivered locally, where the transparent socket
    # takes them, instead of being forwarded (or dropped).
    def policy_routing_remote(self, backend_port):
        self.ip("gw", "rule", "add", "pref", "100", "from", self.backend_ip,
                "iif", self.if_gb, "ipproto", "tcp", "sport",
                str(backend_port), "lookup", "100")
        self.ip("gw", "route", "add", "local", "0.0.0.0/0", "dev", "lo",
                "table", "100")

    def policy_routing_loopback(self, backend_port):
        self.ip("gw", "rule", "add", "pref", "100", "from", "127.0.0.1",
                "iif", "lo", "ipproto", "tcp", "sport", str(backend_port),
                "lookup", "100")
        self.ip("gw", "route", "add", "local", "0.0.0.0/0", "dev", "lo",
                "table", "100")

    def exec_argv(self, ns, *argv):
        return ["ip", "netns", "exec", self.ns[ns]] + list(argv)

    def destroy(self):
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)
        self.made = []


@pytest.fixture
def topo():
    _need_root()
    t = Topology()
    try:
        t.build()
        yield t
    finally:
        t.destroy()


class NsBackend:
    """The SMTP backend script run in namespace ns on addr; log: its
    "peer ADDR PORT" and "data LINE" lines."""

    def __init__(self, topo, workdir, ns, addr):
        script = os.path.join(workdir, "backend.py")
        self.log = os.path.join(workdir, "backend.log")
        with open(script, "w") as f:
            f.write(BACKEND_SCRIPT)
        self.proc = mtlib.Process("backend-" + topo.ns[ns], topo.exec_argv(
            ns, sys.executable, script, addr, str(BACKEND_PORT), self.log),
            os.path.join(workdir, "backend.out"))
        self.proc.start()
        mtlib.register_log("netns-backend", self.log)
        mtlib.wait_until(lambda: "listening" in self.text(), 10,
                         "backend listening in %s" % topo.ns[ns])

    def text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.proc.stop()
        mtlib.unregister_log("netns-backend")


@pytest.fixture
def ns_backend(topo, workdir):
    """ns_backend(ns, addr) -> a started NsBackend, stopped afterwards."""
    made = []

    def make(ns, addr):
        made.append(NsBackend(topo, workdir, ns, addr))
        return made[-1]
    yield make
    for b in made:
        b.stop()


def _in_ns_binary(workdir, topo, binary):
    """An executable that is mailtlsd in the gateway namespace (exec'd, so
    the PID mtlib watches is the daemon's)."""
    path = os.path.join(workdir, "mailtlsd-in-gw")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n'
                % (topo.ns["gw"], binary))
    os.chmod(path, 0o755)
    return path


def _send(topo, workdir, certs, port, tok):
    """The client in its namespace: (exit status, output)."""
    client = os.path.join(workdir, "client.py")
    with open(client, "w") as f:
        f.write(CLIENT_SCRIPT)
    r = subprocess.run(topo.exec_argv(
        "cli", sys.executable, client, topo.gw_client_ip, str(port),
        certs.ca, tok), capture_output=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def _client_source_session(topo, backend, backend_ip, routing, workdir,
                           certs, binary):
    """mailtlsd in the gateway with backend_source = "client": first
    without the routing (the connect must time out), then with it (the
    backend must see the client's address, end to end)."""
    m = mtlib.MailTLSD(workdir, certs,
                       binary=_in_ns_binary(workdir, topo, binary),
                       name="mailtlsd-gw")
    port = m.add_service("submission", "smtp",
                         ["%s:%d" % (backend_ip, BACKEND_PORT)],
                         tls_mode="starttls", backend_source="client",
                         backend_connect_timeout=2)
    # Listen on the gateway's client-side address, not loopback.
    m.services[0][2]["listen"] = ["%s:%d" % (topo.gw_client_ip, port)]
    try:
        m.start()
        # Without the policy routing the backend's SYN-ACK to the
        # client's address is not ours to take: the connect times out.
        rc, out = _send(topo, workdir, certs, port, mtlib.token())
        assert rc != 0, out
        m.wait_log(r"backend %s:%d: connect failed: timeout"
                   % (re.escape(backend_ip), BACKEND_PORT))
        routing()
        tok = mtlib.token()
        rc, out = _send(topo, workdir, certs, port, tok)
        assert rc == 0 and "sent" in out, \
            out + "\nmailtlsd log:\n" + mtlib.tail(m.log)
        text = mtlib.wait_until(
            lambda: (lambda t: t if ("data " + tok) in t else None)(
                backend.text()), 10, "the message at the backend")
        peers = re.findall(r"^peer (\S+) (\d+)$", text, re.M)
        assert peers, text
        assert all(p[0] == topo.client_ip for p in peers), peers
        assert m.alive()
        # Kept across the drop to nobody: said once at startup.
        assert "keeping CAP_NET_ADMIN" in m.log_text()
    finally:
        m.stop()


def test_client_source_backend_behind_gateway(topo, ns_backend, workdir,
                                              certs, binary):
    """The backend on its own host (namespace), routed back via mailtlsd."""
    backend = ns_backend("be", topo.backend_ip)
    _client_source_session(
        topo, backend, topo.backend_ip,
        lambda: topo.policy_routing_remote(BACKEND_PORT), workdir, certs,
        binary)


def test_client_source_backend_on_loopback(topo, ns_backend, workdir,
                                           certs, binary):
    """The backend on mailtlsd's own host, listening on 127.0.0.1."""
    backend = ns_backend("gw", "127.0.0.1")
    _client_source_session(
        topo, backend, "127.0.0.1",
        lambda: topo.policy_routing_loopback(BACKEND_PORT), workdir, certs,
        binary)


# ---------------------------------------------------------------------------
# (c) Without the capability: -t says so, the daemon does not start.

def _unprivileged(argv):
    """argv run as nobody with no capabilities at all."""
    return ["setpriv", "--reuid=nobody", "--regid=nogroup",
            "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"] + argv


def test_client_source_without_capability(mtd, certs, binary):
    _need_root()
    m = mtd(user="nobody", group="nogroup")
    m.add_service("submission", "smtp", [mtlib.free_port()],
                  tls_mode="starttls", backend_source="client")
    m.write_config()
    r = subprocess.run(_unprivileged([binary, "-t", "-c", m.conf]),
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 1, out
    assert re.search(r'service "submission": backend_source = "client" '
                     r"needs CAP_NET_ADMIN", out), out
    # As root the capability is there (and kept across the drop).
    r = subprocess.run([binary, "-t", "-c", m.conf], capture_output=True,
                       timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert "CAP_NET_ADMIN" not in out, out
    # Startup fails closed, before READY, with the reason.
    r = subprocess.run(_unprivileged([binary, "-d", "-c", m.conf]),
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode != 0, out
    assert "needs CAP_NET_ADMIN" in out, out
