"""
Session tickets shared by several instances (SPEC section 9, last bullet).

Real mailtlsd processes, each with its own configuration and port, and
Python's ssl client resuming with the session of an earlier connection:

- two instances sharing one ticket_key_file: a ticket from one resumes
  on the other (TLS 1.2 and 1.3, raw and base64 files);
- rotation: new key first, old key kept, SIGHUP: the old ticket still
  resumes (and a session open across the reload keeps working), and new
  tickets are under the new key (they resume on an instance that has
  only the new key);
- the control that proves the test can fail: an instance with only the
  new key gives the old ticket a full handshake.
"""

import base64
import grp
import os
import signal
import socket
import ssl

import pytest

import mtlib
from mtlib import HOST, Conn

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2,
            "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (privilege drop to nobody)")


def new_key():
    return os.urandom(80)


def write_keys(path, keys, raw=False):
    """Newest first; readable by the daemon's group only (SIGHUP re-reads
    it after the privilege drop), replaced atomically as an operator's
    rotation script would."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        if raw:
            assert len(keys) == 1
            f.write(keys[0])
        else:
            f.write(b"# session ticket keys, newest first\n")
            for k in keys:
                f.write(base64.b64encode(k) + b"\n")
    os.chown(tmp, 0, grp.getgrnam("nogroup").gr_gid)
    os.chmod(tmp, 0o640)
    os.rename(tmp, path)


def instance(mtd, backend, keyfile):
    m = mtd()
    m.add_tls("main", ticket_key_file=keyfile)
    port = m.add_service("smtps", "smtp", [backend.port])
    m.start()
    return m, port


def connect(port, version, session=None):
    """One implicit-TLS SMTP connection; returns (conn, reused).  The
    greeting is read, so a TLS 1.3 client has its tickets by then.
    Python resumes a session only in the SSLContext that made it: one
    client context per version, as one client program would have."""
    ctx = connect.contexts[version]
    raw = socket.create_connection((HOST, port), 15)
    try:
        s = ctx.wrap_socket(raw, server_hostname=HOST, session=session)
    except BaseException:
        raw.close()
        raise
    c = Conn(s)
    assert c.smtp_reply().startswith(b"220 "), c.transcript
    return c, s.session_reused


def session_from(port, version, session=None):
    """A finished connection's session (its newest ticket) and reused."""
    c, reused = connect(port, version, session)
    try:
        c.send(b"QUIT\r\n")
        c.smtp_reply()
        sess = c.sock.session
    finally:
        c.close()
    assert sess is not None and sess.has_ticket
    return sess, reused


def reload(m):
    n = m.log_text().count("configuration reloaded")
    os.kill(m.pid, signal.SIGHUP)
    mtlib.wait_until(
        lambda: m.log_text().count("configuration reloaded") > n or
        "reload failed" in m.log_text(), 20, "%s reloaded" % m.name)
    assert "reload failed" not in m.log_text(), mtlib.tail(m.log)


@pytest.fixture
def tk(workdir, certs, scripted):
    need_root()
    connect.contexts = {}
    for name, v in VERSIONS.items():
        ctx = certs.client_context()
        ctx.minimum_version = ctx.maximum_version = v
        connect.contexts[name] = ctx
    return scripted("smtp"), (lambda name: os.path.join(workdir, name))


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("raw", [False, True], ids=["base64", "raw"])
def test_shared_key_file_resumes_across_instances(mtd, tk, version, raw):
    backend, path = tk
    shared, other = path("shared.keys"), path("other.keys")
    write_keys(shared, [new_key()] if raw else [new_key(), new_key()],
               raw=raw)
    write_keys(other, [new_key()])
    _, port_a = instance(mtd, backend, shared)
    _, port_b = instance(mtd, backend, shared)
    _, port_c = instance(mtd, backend, other)

    sess, reused = session_from(port_a, version)
    assert not reused
    c, reused = connect(port_b, version, sess)
    c.close()
    assert reused, "a ticket from instance A must resume on B"
    # Control: an instance with another key cannot open the ticket.
    c, reused = connect(port_c, version, sess)
    c.close()
    assert not reused


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_rotation_with_sighup_loses_no_resumption(mtd, tk, version):
    backend, path = tk
    shared, only_new = path("shared.keys"), path("new.keys")
    k_old, k_new = new_key(), new_key()
    write_keys(shared, [k_old])
    a, port_a = instance(mtd, backend, shared)
    b, port_b = instance(mtd, backend, shared)
    old_ticket, _ = session_from(port_a, version)
    # A session open across the reload is not dropped.
    held, _ = connect(port_b, version)

    # The rotation of the deployment guide: new key first, old kept.
    write_keys(shared, [k_new, k_old])
    write_keys(only_new, [k_new])
    reload(a)
    reload(b)
    held.send(b"NOOP\r\n")
    reply = held.smtp_reply()
    held.close()
    assert reply.startswith(b"250"), reply

    # The old ticket still resumes on both instances after the reload...
    renewed, reused = session_from(port_a, version, old_ticket)
    assert reused, "the old ticket must resume after the rotation"
    c, reused = connect(port_b, version, old_ticket)
    c.close()
    assert reused

    # ...but not where only the new key is (the test can fail), ...
    _, port_c = instance(mtd, backend, only_new)
    c, reused = connect(port_c, version, old_ticket)
    c.close()
    assert not reused, "an instance without the old key must not resume it"

    # ...while new tickets, and the renewed one, are under the new key.
    fresh, reused = session_from(port_b, version)
    assert not reused
    c, reused = connect(port_c, version, fresh)
    c.close()
    assert reused, "a ticket issued after the reload is under the new key"
    c, reused = connect(port_c, version, renewed)
    c.close()
    assert reused, "a resumed old ticket is renewed under the new key"


def test_malformed_key_file_refused_naming_line(mtd, tk):
    backend, path = tk
    bad = path("bad.keys")
    with open(bad, "wb") as f:
        f.write(base64.b64encode(new_key()) + b"\n"
                + base64.b64encode(os.urandom(79)) + b"\n")
    m = mtd()
    m.add_tls("main", ticket_key_file=bad)
    m.add_service("smtps", "smtp", [backend.port])
    m.write_config()
    p = mtlib.run([m.binary, "-t", "-c", m.conf], check=False)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode != 0, out
    assert "ticket_key_file %s: line 2: not a base64 key" % bad in out, out


@pytest.mark.parametrize("keys", ["file", "automatic"])
def test_tls13_resumption_issues_a_fresh_ticket(mtd, tk, keys):
    """OpenSSL sends no ticket after a TLS 1.3 resumption unless our key
    callback asks for one; without it a client reuses one ticket until it
    loses it (the peer benchmark's resumption rate fell from 84% to
    54%).  With OpenSSL's own keys a fresh ticket always came."""
    backend, path = tk
    keyfile = path("fresh.keys")
    write_keys(keyfile, [new_key()])
    m = mtd()
    if keys == "file":
        m.add_tls("main", ticket_key_file=keyfile)
    else:
        m.add_tls("main", session_tickets=True)
    port = m.add_service("smtps", "smtp", [backend.port])
    m.start()
    first, reused = session_from(port, "TLSv1.3")
    assert not reused
    second, reused = session_from(port, "TLSv1.3", first)
    assert reused
    assert second.id != first.id, "no new ticket after the resumption"
    third, reused = session_from(port, "TLSv1.3", second)
    assert reused
