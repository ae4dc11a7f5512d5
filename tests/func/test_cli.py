"""
The command line and process behaviour (SPEC sections 1 and 2): -t, -V,
-h, configuration errors reported as FILE:LINE before anything is bound,
SIGTERM with a graceful drain, SIGHUP reload keeping sessions.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import mtlib
from mtlib import HOST, Conn


def run_binary(binary, *args, timeout=20):
    p = subprocess.run([binary] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), \
        p.stderr.decode(errors="replace")


class Occupied:
    """Hold a listening socket on a port, so a bind by mailtlsd would fail
    loudly: proves that an error is reported before anything is bound."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.bind((HOST, port))
        self.sock.listen(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def good_config(mtd, backend_port):
    m = mtd()
    port = m.add_service("imaps", "imap", [backend_port])
    m.add_service("smtps", "smtp", [backend_port])
    m.write_config()
    return m, port


def test_version(binary):
    rc, out, err = run_binary(binary, "-V")
    assert rc == 0, err
    text = out + err
    assert re.search(r"mailtlsd\s+\S*\d", text), text
    assert re.search(r"libevent\D*2\.1", text, re.I), text
    assert re.search(r"OpenSSL\D*3\.", text), text
    assert re.search(r"confuse\D*3\.", text, re.I), text


def test_help(binary):
    rc, out, err = run_binary(binary, "-h")
    assert rc == 0, err
    text = out + err
    assert "usage" in text.lower()
    for flag in ("-c", "-t", "-d", "-V", "-h"):
        assert flag in text


def test_unknown_flag_is_an_error(binary):
    rc, out, err = run_binary(binary, "-Z")
    assert rc != 0
    assert "usage" in (out + err).lower()


def test_check_good_config_binds_nothing(mtd, binary):
    m, port = good_config(mtd, mtlib.free_port())
    with Occupied(port):
        rc, out, err = run_binary(binary, "-t", "-c", m.conf)
    assert rc == 0, out + err
    assert "in use" not in (out + err).lower()


def test_check_missing_file(binary, workdir):
    path = os.path.join(workdir, "nonexistent.conf")
    rc, out, err = run_binary(binary, "-t", "-c", path)
    assert rc != 0
    assert path in out + err


BAD_CONFIGS = {
    # name: (text after the good prelude, option named, lines accepted)
    "unknown_global": ('bogus_option = 1\n', "bogus_option", [0]),
    "unknown_in_service": (
        'service "x" {{\n    protocol = "imap"\n'
        '    listen = {{ "127.0.0.1:{port}" }}\n'
        '    tls_mode = "implicit"\n    backend = {{ "127.0.0.1:1" }}\n'
        '    wibble = "yes"\n}}\n', "wibble", [5, 0]),
    "bad_profile": (
        'tls "weak" {{\n    certificate = {{ "{cert}" }}\n'
        '    key = {{ "{key}" }}\n    profile = "ancient"\n}}\n',
        "profile", [3, 0]),
    "bad_protocol": (
        'service "x" {{\n    protocol = "gopher"\n'
        '    listen = {{ "127.0.0.1:{port}" }}\n'
        '    tls_mode = "implicit"\n    backend = {{ "127.0.0.1:1" }}\n}}\n',
        "protocol", [1, 0]),
    "bad_listen": (
        'service "x" {{\n    protocol = "imap"\n'
        '    listen = {{ "127.0.0.1:99999" }}\n'
        '    tls_mode = "implicit"\n    backend = {{ "127.0.0.1:1" }}\n}}\n',
        "listen", [2, 0]),
    "undefined_tls": (
        'service "x" {{\n    protocol = "imap"\n'
        '    listen = {{ "127.0.0.1:{port}" }}\n'
        '    tls_mode = "implicit"\n    tls = "nosuch"\n'
        '    backend = {{ "127.0.0.1:1" }}\n}}\n', "tls", [4, 0]),
    "missing_certificate_file": (
        'tls "gone" {{\n    certificate = {{ "/nonexistent/cert.pem" }}\n'
        '    key = {{ "{key}" }}\n}}\n', "certificate", [1, 0]),
}

PRELUDE = 'log_target = "stderr"\n'


def _bad_config_text(case, certs, port):
    body, option, offsets = BAD_CONFIGS[case]
    # A valid service first: if mailtlsd bound it before noticing the
    # error, the Occupied port would make it fail with a bind error.
    good = ('tls "main" {{\n    certificate = {{ "{cert}" }}\n'
            '    key = {{ "{key}" }}\n}}\n'
            'service "good" {{\n    protocol = "imap"\n'
            '    listen = {{ "127.0.0.1:{port}" }}\n'
            '    tls_mode = "implicit"\n    tls = "main"\n'
            '    backend = {{ "127.0.0.1:1" }}\n}}\n')
    head = PRELUDE + good
    first = head.format(cert=certs.rsa_chain, key=certs.rsa_key, port=port)
    start = first.count("\n") + 1       # line of the bad part's first line
    text = first + body.format(cert=certs.rsa_chain, key=certs.rsa_key,
                               port=mtlib.free_port())
    return text, option, [start + o for o in offsets]


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("check_only", [False, True], ids=["run", "t"])
def test_bad_config_reports_file_line(binary, certs, workdir, case,
                                      check_only):
    port = mtlib.free_port()
    text, option, lines = _bad_config_text(case, certs, port)
    path = os.path.join(workdir, "bad-%s.conf" % case)
    with open(path, "w") as f:
        f.write(text)
    args = ["-t", "-c", path] if check_only else ["-d", "-c", path]
    with Occupied(port):
        rc, out, err = run_binary(binary, *args)
    text_out = out + err
    assert rc == 1 if check_only else rc != 0, text_out
    where = re.findall(re.escape(path) + r":(\d+)", text_out)
    assert where, "no %s:LINE in output:\n%s" % (path, text_out)
    assert any(int(n) in lines for n in where), \
        "expected line %s, got %s:\n%s" % (lines, where, text_out)
    assert option in text_out
    assert "in use" not in text_out.lower()


def test_check_key_not_matching_certificate(binary, certs, workdir):
    path = os.path.join(workdir, "mismatch.conf")
    with open(path, "w") as f:
        f.write(PRELUDE + 'tls "main" {\n    certificate = { "%s" }\n'
                '    key = { "%s" }\n}\n' % (certs.rsa_chain,
                                             certs.ecdsa_key) +
                'service "s" {\n    protocol = "smtp"\n'
                '    listen = { "127.0.0.1:%d" }\n    tls_mode = "implicit"\n'
                '    backend = { "127.0.0.1:1" }\n}\n' % mtlib.free_port())
    rc, out, err = run_binary(binary, "-t", "-c", path)
    assert rc == 1, out + err
    assert path in out + err
    rc, out, err = run_binary(binary, "-d", "-c", path)
    assert rc != 0, out + err


def test_sigterm_drains_sessions_then_exits_zero(mtd, dovecot, mailbox,
                                                 certs):
    m = mtd(shutdown_timeout=3)
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    c = Conn.tls(port, certs.client_context())
    try:
        assert c.line().startswith(b"* OK")
        m.expect_exit = True
        os.kill(m.pid, signal.SIGTERM)
        # It stops accepting at once...
        mtlib.wait_until(lambda: port not in mtlib.listening_ports(m.pid),
                         5, "listener closed after SIGTERM")
        # ...while the established session goes on.
        c.send(b'a LOGIN "%s" "%s"\r\n' % (mailbox.name.encode(),
                                           mailbox.password.encode()))
        assert b"a OK" in c.tagged(b"a")
        started = time.monotonic()
        # After shutdown_timeout the rest is closed and it exits 0.
        m.proc.proc.wait(15)
        assert time.monotonic() - started < 10
        assert m.proc.proc.returncode == 0, mtlib.tail(m.log)
    finally:
        c.close()


def test_sigterm_idle_exits_zero_quickly(mtd, dovecot):
    m = mtd(shutdown_timeout=30)
    m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    t = time.monotonic()
    assert m.stop(timeout=10) == 0
    assert time.monotonic() - t < 5


def test_sighup_reloads_certificates_and_keeps_sessions(mtd, dovecot,
                                                        mailbox, certs,
                                                        workdir):
    # Certificates at paths of our own, replaced before the reload.
    cert = os.path.join(workdir, "live.pem")
    key = os.path.join(workdir, "live.key")
    shutil.copy(certs.rsa_chain, cert)
    mtlib.copy_key(certs.rsa_key, key)
    m = mtd()
    m.add_tls("main", pairs=[(cert, key)])
    port = m.add_service("imaps", "imap", [dovecot.imap_port])
    m.start()
    old = Conn.tls(port, certs.client_context())
    try:
        assert old.line().startswith(b"* OK")
        shutil.copy(certs.other_chain, cert)
        # Re-read after the privilege drop: readable by the daemon's group.
        mtlib.copy_key(certs.other_key, key)
        os.kill(m.pid, signal.SIGHUP)

        def serves_new_cert():
            rc, out = mtlib.s_client(certs, port)
            info = mtlib.cert_info(out)
            return info and "CN = %s" % mtlib.OTHER_NAME in info[1]
        mtlib.wait_until(serves_new_cert, 15, "new certificate after SIGHUP",
                         interval=0.3)
        old.send(b"n NOOP\r\n")
        assert b"n OK" in old.tagged(b"n")
        # A broken configuration on reload keeps the running one.
        with open(m.conf, "a") as f:
            f.write("\nthis is not valid\n")
        os.kill(m.pid, signal.SIGHUP)
        m.wait_log(re.escape(m.conf) + r":\d+")
        assert m.alive()
        with Conn.tls(port, certs.client_context(
                check_hostname=False)) as c:
            assert c.line().startswith(b"* OK")
    finally:
        old.close()
