"""
Several instances behind a balancer (SPEC section 9, issue 9 item 5).

Real HAProxy (mode tcp, send-proxy-v2, health checks with
check-send-proxy) spreads clients round-robin over two mailtlsd instances
that have accept_proxy and share one ticket_key_file; both relay to the
one real Dovecot.  The client connects from 127.0.0.2, so the address
mailtlsd logs can only have come from HAProxy's header.

Checked: sessions land on both instances and each logs the client's own
address; a ticket issued by one instance resumes on the other; a rotated
key file (new key first, old kept) plus SIGHUP keeps old tickets working;
with one instance stopped, new sessions still succeed through the other.
"""

import base64
import os
import re
import signal
import socket
import ssl
import time

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME

CLIENT_IP = "127.0.0.2"


def key_line():
    return base64.b64encode(os.urandom(80)).decode() + "\n"


def write_keys(path, lines):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.chmod(tmp, 0o640)
    os.chown(tmp, 0, _nogroup_gid())
    os.rename(tmp, path)


def _nogroup_gid():
    import grp
    return grp.getgrnam("nogroup").gr_gid


class HAProxy:
    """haproxy -db with a private configuration, stopped by PID."""

    def __init__(self, workdir, servers):
        self.dir = os.path.join(workdir, "haproxy")
        os.makedirs(self.dir, exist_ok=True)
        self.port = mtlib.free_port()
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.log = os.path.join(self.dir, "haproxy.log")
        lines = [
            "global",
            "    maxconn 256",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    retries 2",
            "    option redispatch",
            "frontend mail",
            "    bind %s:%d" % (HOST, self.port),
            "    default_backend mailtlsd",
            "backend mailtlsd",
            "    balance roundrobin",
        ]
        for name, port in servers:
            lines.append("    server %s %s:%d send-proxy-v2 check "
                         "check-send-proxy inter 300ms fall 2 rise 1"
                         % (name, HOST, port))
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.proc = mtlib.Process("haproxy", ["/usr/sbin/haproxy", "-db",
                                              "-f", self.cfg], self.log)
        self.proc.start()
        mtlib.wait_port(self.port, what="haproxy", alive=self.proc.alive)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop()


def imap_session(port, ctx, session=None):
    """Greeting and LOGOUT over TLS from CLIENT_IP; (reused, session)."""
    raw = socket.create_connection((HOST, port), timeout=10,
                                   source_address=(CLIENT_IP, 0))
    with ctx.wrap_socket(raw, server_hostname=SERVER_NAME,
                         session=session) as s:
        buf = b""
        deadline = time.monotonic() + 10
        while b"\r\n" not in buf and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        assert buf.startswith(b"* OK"), buf
        s.sendall(b"a LOGOUT\r\n")
        while b"a OK" not in buf and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        assert b"a OK" in buf, buf
        return s.session_reused, s.session


def client_sessions(m):
    """How many sessions this instance logged as coming from CLIENT_IP."""
    return len(re.findall(r"session start service=imaps client=%s "
                          % re.escape(CLIENT_IP), m.log_text()))


@pytest.fixture
def farm(workdir, certs, dovecot):
    keys = os.path.join(workdir, "ticket.keys")
    first = [key_line(), key_line()]
    write_keys(keys, first)
    inst = []
    for name in ("mt-a", "mt-b"):
        m = mtlib.MailTLSD(workdir, certs, name=name, log_level="info")
        m.add_tls(session_tickets=True, ticket_key_file=keys)
        m.add_service("imaps", "imap", [dovecot.imap_port],
                      accept_proxy=True, proxy_trusted=["127.0.0.1/32"])
        m.start()
        inst.append(m)
    hp = HAProxy(workdir, [("a", inst[0].port("imaps")),
                           ("b", inst[1].port("imaps"))]).start()
    yield hp, inst, keys, first
    hp.stop()
    for m in inst:
        m.stop()


def tls12_context(certs):
    ctx = certs.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@pytest.mark.parametrize("version", ["tls13", "tls12"])
def test_spread_and_resume_across_instances(farm, certs, version):
    hp, (a, b), _, _ = farm
    ctx = certs.client_context() if version == "tls13" else \
        tls12_context(certs)
    reused, sess = imap_session(hp.port, ctx)
    assert not reused
    results = [imap_session(hp.port, ctx, sess)[0] for _ in range(8)]
    # Round robin: consecutive sessions alternate between the two
    # instances, so at least four of these resumed on the instance that
    # did not issue the ticket.
    assert all(results), results
    na, nb = client_sessions(a), client_sessions(b)
    assert na + nb == 9 and na >= 4 and nb >= 4, (na, nb)
    # HAProxy connects from 127.0.0.1: these nine sessions carry the
    # client's address only because the instances read its header.


def test_rotation_with_sighup_keeps_resumption(farm, certs):
    hp, (a, b), keys, first = farm
    ctx = certs.client_context()
    _, old = imap_session(hp.port, ctx)
    # New key first, the old ones kept, then every instance reloads.
    write_keys(keys, [key_line()] + first)
    for m in (a, b):
        mark = len(m.log_text())
        os.kill(m.pid, signal.SIGHUP)
        mtlib.wait_until(
            lambda: "configuration reloaded" in m.log_text()[mark:],
            10, "%s reload logged" % m.name)
    results = [imap_session(hp.port, ctx, old)[0] for _ in range(4)]
    assert all(results), results
    # And a ticket issued under the new key resumes on both as well.
    _, new = imap_session(hp.port, ctx)
    results = [imap_session(hp.port, ctx, new)[0] for _ in range(4)]
    assert all(results), results


def test_one_instance_stopped(farm, certs):
    hp, (a, b), _, _ = farm
    ctx = certs.client_context()
    a.stop()
    before = client_sessions(b)
    for _ in range(6):
        imap_session(hp.port, ctx)
    assert client_sessions(b) - before == 6


def test_health_checks_are_served(farm):
    """check-send-proxy sends a v2 LOCAL header: a session from the
    balancer itself, never a refusal."""
    hp, (a, b), _, _ = farm
    for m in (a, b):
        m.wait_log(r"session start service=imaps client=127\.0\.0\.1 ",
                   timeout=10)
        assert not re.search(r"PROXY.*(invalid|malformed|missing|untrusted)",
                             m.log_text(), re.I), m.log_text()
