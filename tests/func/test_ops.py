"""
Operations (issue 5): privileges, systemd integration, reload under load,
the -t hardening audit (SPEC section 7) and packaging.

- the privilege drop, as the kernel sees it (/proc: ids, groups, caps),
  and a start as the configured user already (systemd's User=);
- named socket activation through systemd-socket-activate, also across
  a reload;
- the sd_notify protocol on a NOTIFY_SOCKET of our own: READY, RELOADING
  with MONOTONIC_USEC, STATUS, STOPPING;
- SIGHUP swapping the certificate while clients keep sessions open and
  open new ones: nothing dropped, nothing refused, new sessions get the
  new certificate;
- SIGTERM: a session that ends by itself lets the daemon exit at once;
- -t: one test per audit finding, each with certificates made for it and
  its exact line; the samples of etc/ are clean but for certificates;
- the systemd units (verify, exposure), `make install DESTDIR`, the man
  pages (mandoc lint).
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

import mtlib
import ops_util
from mtlib import HOST, Conn, OTHER_NAME, SERVER_NAME

ZERO_CAPS = "0000000000000000"


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (privilege drop to nobody)")


def peer_cn(conn):
    for rdn in conn.sock.getpeercert()["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def imap_tls(port, certs, timeout=20.0):
    """A verified implicit-TLS IMAP connection, greeting read."""
    c = Conn.tls(port, certs.client_context(check_hostname=False),
                 timeout=timeout)
    try:
        greeting = c.line()
    except BaseException:
        c.close()
        raise
    if not greeting.startswith(b"* OK"):
        c.close()
        raise mtlib.MtError("bad greeting %r" % greeting)
    return c


def imap_cmd(c, tag, cmd):
    c.send(b"%s %s\r\n" % (tag, cmd))
    reply = c.tagged(tag)
    last = reply.rstrip(b"\r\n").split(b"\r\n")[-1]
    if not last.startswith(tag + b" OK"):
        raise mtlib.MtError("%s %s: %r" % (tag, cmd, reply))
    return reply


# ---------------------------------------------------------------------------
# Privileges

def test_privilege_drop_visible_in_proc(mtd, scripted, certs):
    """Started as root with user nobody: every thread has uid/gid 65534 in
    all four slots, the one group nogroup and no capability left."""
    need_root()
    backend = scripted("imap")
    m = mtd(workers=2)
    port = m.add_service("imaps", "imap", [backend.port])
    m.start()
    nobody, nogroup = 65534, 65534
    tasks = os.listdir("/proc/%d/task" % m.pid)
    assert len(tasks) >= 3, tasks      # main + 2 workers
    for tid in tasks:
        st = ops_util.proc_status(int(tid))
        where = "task %s: %r" % (tid, st)
        assert ops_util.proc_ids(st["Uid"]) == [nobody] * 4, where
        assert ops_util.proc_ids(st["Gid"]) == [nogroup] * 4, where
        assert ops_util.proc_ids(st["Groups"]) == [nogroup], where
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert st[cap] == ZERO_CAPS, where
    # ...and it still serves.
    c = imap_tls(port, certs)
    try:
        imap_cmd(c, b"a", b"NOOP")
    finally:
        c.close()
    m.wait_log(r"running as user nobody \(uid 65534, gid 65534\)")


def test_started_as_the_configured_user_runs(mtd, scripted, certs):
    """The systemd unit's way: started as `user` already (User=), without
    the privilege to switch, mailtlsd keeps what it was given and serves."""
    need_root()
    backend = scripted("imap")
    m = mtd()
    port = m.add_service("imaps", "imap", [backend.port])
    m.write_config()
    proc = mtlib.Process(m.name + "-asuser", [
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        m.binary, "-d", "-c", m.conf], m.log, env=mtlib.sanitizer_env())
    proc.start()

    def listening():
        if not proc.alive():
            raise mtlib.MtError("mailtlsd exited:\n" + mtlib.tail(m.log))
        return port in mtlib.listening_ports(proc.pid)
    try:
        mtlib.wait_until(listening, 20, "mailtlsd listening as nobody")
        st = ops_util.proc_status(proc.pid)
        assert ops_util.proc_ids(st["Uid"]) == [65534] * 4, st
        c = imap_tls(port, certs)
        try:
            imap_cmd(c, b"a", b"NOOP")
        finally:
            c.close()
    finally:
        rc = proc.stop()
    assert rc == 0, mtlib.tail(m.log)
    assert "cannot drop" not in m.log_text()
    assert not m.sanitizer_reports(), mtlib.tail(m.log, 120)


# ---------------------------------------------------------------------------
# Socket activation

def test_socket_activation_named_sockets(mtd, scripted, certs, workdir,
                                         binary):
    """Sockets named after services (LISTEN_FDNAMES) serve those services,
    also after a reload; an unclaimed name is logged."""
    need_root()
    imap_backend = scripted("imap")
    pop3_backend = scripted("pop3")
    m = mtd()
    p_imaps = m.add_service("imaps", "imap", [imap_backend.port])
    p_pop3s = m.add_service("pop3s", "pop3", [pop3_backend.port])
    # imaps: an empty list; pop3s: no listen option at all.
    m.services[0][2]["listen"] = []
    del m.services[1][2]["listen"]
    m.write_config()
    assert 'listen = {  }' in m.config_text()

    # Without the sockets the same file cannot start.
    rc, out, err = ops_util.run_binary(binary, "-d", "-c", m.conf)
    assert rc != 0
    assert "systemd passed no socket named 'imaps'" in out + err, out + err

    p_stray = mtlib.free_port()
    sa = ops_util.SocketActivated(m, [(p_imaps, "imaps"), (p_pop3s, "pop3s"),
                                      (p_stray, "stray")]).start()
    try:
        # The first connection makes the activator exec mailtlsd.
        c = imap_tls(p_imaps, certs)
        try:
            assert peer_cn(c) == SERVER_NAME
            imap_cmd(c, b"a", b"NOOP")
        finally:
            c.close()
        m.wait_log(r"systemd passed 3 listening sockets")
        m.wait_log(r"systemd socket 'stray' \(fd 5\) matches no service "
                   r"name; it is not used")
        st = ops_util.proc_status(sa.pid)
        assert ops_util.proc_ids(st["Uid"]) == [65534] * 4, st
        with Conn.tls(p_pop3s, certs.client_context(
                check_hostname=False)) as p:
            assert p.line().startswith(b"+OK scripted ready")
        assert mtlib.listening_ports(sa.pid) >= {p_imaps, p_pop3s, p_stray}

        # A reload takes the same sockets over again.
        os.kill(sa.pid, signal.SIGHUP)
        m.wait_log(r"configuration reloaded: 2 services")
        for _ in range(3):
            c = imap_tls(p_imaps, certs)
            c.close()
        with Conn.tls(p_pop3s, certs.client_context(
                check_hostname=False)) as p:
            assert p.line().startswith(b"+OK scripted ready")
        assert imap_backend.received and pop3_backend.received
    finally:
        rc = sa.stop()
    assert rc == 0, mtlib.tail(m.log)
    assert not m.sanitizer_reports(), mtlib.tail(m.log, 120)


# ---------------------------------------------------------------------------
# sd_notify

@pytest.mark.timeout(90)
def test_notify_socket_protocol(mtd, scripted, certs, workdir):
    """READY=1 when serving; RELOADING=1 with MONOTONIC_USEC, then READY=1,
    around SIGHUP; STATUS= with the session count; STOPPING=1 on SIGTERM."""
    need_root()
    backend = scripted("imap")
    ns = ops_util.NotifySocket(os.path.join(workdir, "notify.sock"))
    try:
        m = mtd()
        port = m.add_service("imaps", "imap", [backend.port])
        ops_util.start_with_env(m, {"NOTIFY_SOCKET": ns.path})
        ready = ns.wait_for(lambda f: f.get("READY") == "1", 15, "READY=1")
        first = ns.snapshot()[ready][1]
        assert first.get("STATUS") == "accepting connections", first
        assert not any("RELOADING" in f or "STOPPING" in f
                       for _, f in ns.snapshot()[:ready + 1])

        # The periodic STATUS counts the open session.
        c = imap_tls(port, certs)
        try:
            ns.wait_for(lambda f: f.get("STATUS") == "1 sessions", 15,
                        "STATUS=1 sessions", start=ready + 1)

            before = time.clock_gettime(time.CLOCK_MONOTONIC)
            os.kill(m.pid, signal.SIGHUP)
            rel = ns.wait_for(lambda f: f.get("RELOADING") == "1", 15,
                              "RELOADING=1", start=ready + 1)
            after = time.clock_gettime(time.CLOCK_MONOTONIC)
            fields = ns.snapshot()[rel][1]
            # sd_notify(3): the CLOCK_MONOTONIC time of the reload, in us.
            usec = int(fields["MONOTONIC_USEC"])
            assert before * 1e6 - 1e6 <= usec <= after * 1e6 + 1e6, \
                (before, usec, after)
            again = ns.wait_for(lambda f: f.get("READY") == "1", 15,
                                "READY=1 after the reload", start=rel + 1)
            assert ns.snapshot()[again][1].get("STATUS") == \
                "accepting connections"
            m.wait_log(r"configuration reloaded")
            imap_cmd(c, b"a", b"NOOP")      # the session went on
        finally:
            c.close()

        ns.wait_for(lambda f: f.get("STATUS") == "0 sessions", 15,
                    "STATUS=0 sessions", start=again + 1)
        m.expect_exit = True
        os.kill(m.pid, signal.SIGTERM)
        stop = ns.wait_for(lambda f: f.get("STOPPING") == "1", 15,
                           "STOPPING=1", start=again + 1)
        assert ns.snapshot()[stop][1].get("STATUS") == "stopping: 0 sessions"
        assert m.proc.proc.wait(15) == 0, mtlib.tail(m.log)
    finally:
        ns.close()


# ---------------------------------------------------------------------------
# Reload under load

class Load:
    """Clients holding sessions open and clients opening new ones."""

    def __init__(self, port, certs, holders=3, openers=2):
        self.port = port
        self.certs = certs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.opened = []            # (monotonic start, certificate CN)
        self.held = []              # open Conns, for the final check
        self.noops = [0] * holders
        self.threads = [threading.Thread(target=self._hold, args=(i,),
                                         daemon=True)
                        for i in range(holders)]
        self.threads += [threading.Thread(target=self._open, daemon=True)
                         for _ in range(openers)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _fail(self, who, e):
        with self.lock:
            self.errors.append("%s: %r" % (who, e))

    def _hold(self, i):
        try:
            c = imap_tls(self.port, self.certs)
            with self.lock:
                self.held.append(c)
            n = 0
            while not self.stop.is_set():
                n += 1
                imap_cmd(c, b"h%d" % n, b"NOOP")
                self.noops[i] = n
                time.sleep(0.05)
        except Exception as e:  # reported by the test
            self._fail("holder %d" % i, e)

    def _open(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                c = imap_tls(self.port, self.certs)
                try:
                    cn = peer_cn(c)
                    imap_cmd(c, b"z", b"LOGOUT")
                finally:
                    c.close()
            except Exception as e:
                self._fail("opener", e)
                return
            with self.lock:
                self.opened.append((t0, cn))

    def since(self, t):
        with self.lock:
            return [cn for t0, cn in self.opened if t0 >= t]

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return [t for t in self.threads if t.is_alive()]


@pytest.mark.timeout(150)
def test_reload_under_load_swaps_certificate(mtd, scripted, certs, workdir):
    need_root()
    backend = scripted("imap")
    cert = os.path.join(workdir, "live.pem")
    key = os.path.join(workdir, "live.key")

    def install(chain, keyfile):
        shutil.copy(chain, cert)
        mtlib.copy_key(keyfile, key)   # readable after the privilege drop
    install(certs.rsa_chain, certs.rsa_key)
    m = mtd()
    m.add_tls("main", pairs=[(cert, key)])
    # The load comes from one address, faster than a client should:
    # SPEC 10's rate limit is not what this test is about.
    port = m.add_service("imaps", "imap", [backend.port],
                         max_connection_rate_per_ip=0)
    m.start()

    load = Load(port, certs).start()
    try:
        mtlib.wait_until(lambda: len(load.since(0)) >= 5 or load.errors, 30,
                         "sessions before the reload")
        assert not load.errors, load.errors
        assert set(load.since(0)) == {SERVER_NAME}
        for n, (chain, keyfile, name) in enumerate((
                (certs.other_chain, certs.other_key, OTHER_NAME),
                (certs.rsa_chain, certs.rsa_key, SERVER_NAME))):
            install(chain, keyfile)
            hup = time.monotonic()
            os.kill(m.pid, signal.SIGHUP)
            mtlib.wait_until(lambda: name in load.since(hup) or load.errors,
                             20, "a new session with %s" % name)
            assert not load.errors, load.errors
            # Every worker has switched by now; from here on all new.
            cut = time.monotonic() + 1.0
            mtlib.wait_until(lambda: len(load.since(cut)) >= 10 or
                             load.errors, 30, "sessions after the switch")
            assert not load.errors, load.errors
            assert set(load.since(cut)) == {name}, load.since(cut)
        m.wait_log(r"(?s)configuration reloaded.*configuration reloaded")
    finally:
        stuck = load.finish()
    assert not stuck, "client threads did not end"
    assert not load.errors, load.errors
    # The sessions opened before both reloads are still served.
    assert len(load.held) == 3 and min(load.noops) >= 10, load.noops
    for i, c in enumerate(load.held):
        try:
            assert peer_cn(c) == SERVER_NAME
            imap_cmd(c, b"f%d" % i, b"NOOP")
        finally:
            c.close()
    assert "reload failed" not in m.log_text()
    assert len(load.since(0)) >= 25


def test_sigterm_lets_open_session_finish_then_exits(mtd, scripted, certs):
    """SIGTERM: listeners close, the open session goes on, and the daemon
    exits 0 as soon as it ends, long before shutdown_timeout."""
    need_root()
    backend = scripted("imap")
    m = mtd(shutdown_timeout=60)
    port = m.add_service("imaps", "imap", [backend.port])
    m.start()
    c = imap_tls(port, certs)
    try:
        m.expect_exit = True
        os.kill(m.pid, signal.SIGTERM)
        mtlib.wait_until(lambda: port not in mtlib.listening_ports(m.pid),
                         10, "listener closed after SIGTERM")
        imap_cmd(c, b"a", b"NOOP")
        assert m.alive()
        ended = time.monotonic()
        imap_cmd(c, b"b", b"LOGOUT")
        c.read_to_eof(timeout=10)
    finally:
        c.close()
    assert m.proc.proc.wait(20) == 0, mtlib.tail(m.log)
    assert time.monotonic() - ended < 10
    m.wait_log(r"mailtlsd stopped")


# ---------------------------------------------------------------------------
# The -t audit

def cval(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(cval(x) for x in v) + " }"
    return '"%s"' % v


@pytest.fixture(scope="module")
def pki(workroot, certs):
    return ops_util.AuditPKI(os.path.join(workroot, "audit-pki"), certs)


class AuditCase:
    """A configuration with one tls section "t" and one service "s"."""

    def __init__(self, certs, pair=None, tls=None, listen=587,
                 protocol="smtp", tls_mode="starttls", service=None,
                 user="nobody", group="nogroup"):
        self.pair = pair or (certs.rsa_chain, certs.rsa_key)
        self.tls = {"ca_file": certs.ca}      # the test CA: chain verifies
        self.tls.update(tls or {})
        self.service = {"protocol": protocol,
                        "listen": ["%s:%d" % (HOST, listen)],
                        "tls_mode": tls_mode, "tls": "t",
                        "backend": ["127.0.0.1:1"],
                        "hostname": SERVER_NAME}
        self.service.update(service or {})
        self.user = user
        self.group = group

    def text(self):
        out = ['log_target = "stderr"']
        if self.user:
            out.append('user = "%s"' % self.user)
        if self.group:
            out.append('group = "%s"' % self.group)
        out.append('tls "t" {')
        out.append("    certificate = %s" % cval([self.pair[0]]))
        out.append("    key = %s" % cval([self.pair[1]]))
        for k, v in self.tls.items():
            if v is not None:
                out.append("    %s = %s" % (k, cval(v)))
        out.append("}")
        out.append('service "s" {')
        for k, v in self.service.items():
            out.append("    %s = %s" % (k, cval(v)))
        out.append("}")
        return "\n".join(out) + "\n"


def audit(binary, workdir, case):
    """(exit status, finding lines, context for the expected lines)."""
    text = case.text()
    path = os.path.join(workdir, "audit.conf")
    with open(path, "w") as f:
        f.write(text)
    lines = text.splitlines()
    ctx = {"conf": path,
           "tls": lines.index('tls "t" {') + 1,
           "svc": lines.index('service "s" {') + 1}
    rc, out, err = ops_util.run_binary(binary, "-t", "-c", path)
    assert err == "", err
    outl = out.splitlines()
    assert outl and outl[-1] == ("configuration OK" if rc == 0 else
                                 "configuration NOT usable"), out
    return rc, outl[:-1], ctx


def test_audit_clean_configuration_has_no_finding(binary, certs, workdir):
    """The control: a good certificate, a verifying chain, intermediate on
    587: nothing to say."""
    rc, findings, _ = audit(binary, workdir, AuditCase(certs))
    assert rc == 0 and findings == []


def test_audit_identity_to_local_backends_is_fine(binary, certs, workdir):
    """send_proxy and xclient towards loopback (v4, v6) or a unix socket:
    no finding."""
    case = AuditCase(certs, listen=25, service={
        "xclient": True, "send_proxy": "v2",
        "backend": ["127.0.0.2:25", "[::1]:25", "unix:/run/x.sock"]})
    rc, findings, _ = audit(binary, workdir, case)
    assert rc == 0 and findings == [], findings


def test_audit_port_25_may_be_opportunistic(binary, certs, workdir):
    """What is wrong on 587 is right on 25: no finding for the MX role."""
    case = AuditCase(certs, tls={"profile": "opportunistic",
                                 "min_protocol": "TLSv1",
                                 "ciphers": "ALL:!aNULL"},
                     listen=25, service={"require_starttls": False})
    rc, findings, _ = audit(binary, workdir, case)
    assert rc == 0 and findings == []


def _tls_line(sev, msg):
    return "{conf}:{tls}: %s: %s" % (sev, msg)


def _svc_line(sev, msg):
    return "{conf}:{svc}: %s: %s" % (sev, msg)


# name: (case builder, expected exit status, expected lines, only these)
AUDIT_FINDINGS = {
    "self_signed": (
        lambda c, p: AuditCase(c, pair=p.selfsigned),
        0, [_tls_line("warning", 'tls "t": certificate {cert}: self-signed '
                      "(clients that verify will refuse it)")], True),
    "expired": (
        lambda c, p: AuditCase(c, pair=p.expired),
        1, [_tls_line("error", 'tls "t": certificate {cert}: expired on '
                      "2021-01-01 12:00:00 GMT")], True),
    "expiring": (
        lambda c, p: AuditCase(c, pair=p.expiring),
        0, [_tls_line("warning", 'tls "t": certificate {cert}: expires in '
                      "10 days ({not_after})")], True),
    "name_mismatch": (
        lambda c, p: AuditCase(c, pair=(c.other_chain, c.other_key)),
        0, [_tls_line("warning", 'tls "t": certificate {cert} does not '
                      'match hostname "mail.example.test" of service "s"')],
        True),
    "chain_untrusted_root": (
        lambda c, p: AuditCase(c, tls={"ca_file": None}),
        0, [_tls_line("warning", 'tls "t": certificate {cert}: chain does '
                      "not verify: self-signed certificate in certificate "
                      "chain (depth 1: /CN=mailtlsd test CA)")], True),
    "chain_missing_intermediate": (
        lambda c, p: AuditCase(c, pair=(c.rsa_cert, c.rsa_key),
                               tls={"ca_file": None}),
        0, [_tls_line("warning", 'tls "t": certificate {cert}: chain does '
                      "not verify: unable to get local issuer certificate "
                      "(depth 0: /CN=mail.example.test)")], True),
    "rsa_1024": (
        # Level 2 (intermediate) refuses the key: the audit says why.
        lambda c, p: AuditCase(c, pair=p.rsa1024),
        1, [_tls_line("warning", 'tls "t": key {key} is RSA 1024 bits, '
                      "weaker than RSA 2048")], False),
    "rsa_1024_opportunistic": (
        lambda c, p: AuditCase(c, pair=p.rsa1024,
                               tls={"profile": "opportunistic"}, listen=25),
        0, [_tls_line("warning", 'tls "t": key {key} is RSA 1024 bits, '
                      "weaker than RSA 2048")], True),
    "dh_1024": (
        lambda c, p: AuditCase(c, tls={"dh_params": p.dh1024,
                                       "profile": "opportunistic"},
                               listen=25),
        0, [_tls_line("warning", 'tls "t": dh_params {dh} has 1024 bits, '
                      "smaller than 2048")], True),
    "tls10_on_587": (
        lambda c, p: AuditCase(c, tls={"min_protocol": "TLSv1"}),
        0, [_svc_line("warning", 'service "s" (port 587): tls "t": '
                      "min_protocol TLSv1 allows versions below TLS 1.2 "
                      "(RFC 8996)")], True),
    "tls11_on_995": (
        lambda c, p: AuditCase(c, tls={"min_protocol": "TLSv1.1"},
                               protocol="pop3", tls_mode="implicit",
                               listen=995),
        0, [_svc_line("warning", 'service "s" (port 995): tls "t": '
                      "min_protocol TLSv1.1 allows versions below TLS 1.2 "
                      "(RFC 8996)")], True),
    "opportunistic_on_993": (
        lambda c, p: AuditCase(c, tls={"profile": "opportunistic"},
                               protocol="imap", tls_mode="implicit",
                               listen=993),
        0, [_svc_line("warning", 'service "s" (port 993): tls "t" uses the '
                      "opportunistic profile (TLS 1.0 and suites without "
                      "forward secrecy), meant for port 25 only; use "
                      '"intermediate" or "modern"')], True),
    "weak_ciphers_on_465": (
        lambda c, p: AuditCase(c, tls={"ciphers": "AES128-SHA:ECDHE-RSA-"
                                       "AES128-GCM-SHA256:AES256-SHA256"},
                               tls_mode="implicit", listen=465),
        0, [_svc_line("warning", 'service "s" (port 465): tls "t": ciphers '
                      "enables 2 suites without forward secrecy or AEAD: "
                      "AES128-SHA, AES256-SHA256")], True),
    "cleartext_on_143": (
        lambda c, p: AuditCase(c, protocol="imap", listen=143,
                               service={"require_starttls": False}),
        0, [_svc_line("warning", 'service "s" (port 143): require_starttls '
                      "= false lets mail clients stay in cleartext")], True),
    # SPEC 10: 0 turns the cleartext deadline off.
    "cleartext_timeout_zero": (
        lambda c, p: AuditCase(c, service={"cleartext_timeout": 0}),
        0, [_svc_line("warning", 'service "s": cleartext_timeout = 0: a '
                      "client that never sends STARTTLS keeps its "
                      "connection for as long as it keeps talking")], True),
    # Not where require_starttls is off (the warning above says it all).
    "cleartext_timeout_zero_no_require": (
        lambda c, p: AuditCase(c, protocol="imap", listen=143, service={
            "require_starttls": False, "cleartext_timeout": 0}),
        0, [_svc_line("warning", 'service "s" (port 143): require_starttls '
                      "= false lets mail clients stay in cleartext")], True),
    # smtp_greeting_delay = 0 is SPEC 10's default: nothing to say.
    "greeting_delay_zero": (
        lambda c, p: AuditCase(c, service={"smtp_greeting_delay": 0}),
        0, [], True),
    # SPEC 9: a backend trusting identities from us should be local.
    "xclient_remote_backend": (
        lambda c, p: AuditCase(c, listen=25, service={
            "xclient": True, "backend": ["192.0.2.7:25", "127.0.0.1:1"]}),
        0, [_svc_line("warning", 'service "s": xclient towards backend '
                      "192.0.2.7:25, which is not on loopback or a unix "
                      "socket: the backend must trust every connection "
                      "from this host's address with the client's "
                      "identity, and the identity crosses the network in "
                      "cleartext")], True),
    "send_proxy_remote_backend": (
        lambda c, p: AuditCase(c, protocol="imap", listen=143, service={
            "send_proxy": "v2", "backend": ["[2001:db8::1]:143"]}),
        0, [_svc_line("warning", 'service "s": send_proxy towards backend '
                      "[2001:db8::1]:143, which is not on loopback or a "
                      "unix socket: the backend must trust every "
                      "connection from this host's address with the "
                      "client's identity, and the identity crosses the "
                      "network in cleartext")], True),
    # SPEC 10 limits at 0 are off (issue 10 item 6).
    "rate_limit_off": (
        lambda c, p: AuditCase(c, service={"max_connection_rate_per_ip": 0}),
        0, [_svc_line("warning", 'service "s": max_connection_rate_per_ip '
                      "= 0 turns the connection rate limit off: one "
                      "address may open connections as fast as it likes")],
        True),
    "auth_limit_off": (
        lambda c, p: AuditCase(c, protocol="imap", tls_mode="implicit",
                               listen=993,
                               service={"max_auth_failures_per_ip": 0}),
        0, [_svc_line("warning", 'service "s": max_auth_failures_per_ip '
                      "= 0 turns the authentication failure limit off: one "
                      "address may guess passwords without end")], True),
    "user_root": (
        lambda c, p: AuditCase(c, user="root", group=None),
        0, ['warning: user = "root": the daemon would keep running as '
            "root"], True),
    "no_user_as_root": (
        lambda c, p: AuditCase(c, user=None, group=None),
        1, ["error: no 'user' set: mailtlsd refuses to run as root without "
            'one (user = "root" to do so deliberately)'], True),
    "unknown_user": (
        lambda c, p: AuditCase(c, user="mailtlsd-nosuch", group=None),
        1, ['error: user "mailtlsd-nosuch" does not exist'], True),
}


@pytest.mark.parametrize("name", sorted(AUDIT_FINDINGS))
def test_audit_finding(binary, certs, pki, workdir, name):
    need_root()     # runs as root: "no_user_as_root" and key permissions
    build, want_rc, want, only = AUDIT_FINDINGS[name]
    case = build(certs, pki)
    rc, findings, ctx = audit(binary, workdir, case)
    ctx.update(cert=case.pair[0], key=case.pair[1], dh=pki.dh1024)
    if name == "expiring":
        ctx["not_after"] = ops_util.cert_not_after(case.pair[0])
    expected = [w.format(**ctx) for w in want]
    report = "\n".join(findings)
    assert rc == want_rc, report
    for line in expected:
        assert line in findings, "missing:\n%s\ngot:\n%s" % (line, report)
    if only:
        assert sorted(findings) == sorted(expected), report


def test_audit_key_not_readable_after_drop(binary, certs, workdir):
    """A key only root can read loads at start and breaks every reload."""
    need_root()
    key = os.path.join(workdir, "root-only.key")
    shutil.copy(certs.rsa_key, key)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    case = AuditCase(certs, pair=(certs.rsa_chain, key))
    rc, findings, ctx = audit(binary, workdir, case)
    assert rc == 0
    assert findings == [
        '%s:%d: warning: tls "t": key %s is not readable by user "nobody" '
        '(group "nogroup"): reloading (SIGHUP) would fail'
        % (ctx["conf"], ctx["tls"], key)]
    # The same key readable by the group: nothing to say.
    mtlib.copy_key(certs.rsa_key, key)
    rc, findings, _ = audit(binary, workdir, case)
    assert rc == 0 and findings == []


SAMPLE_SERVICES = {
    "mailtlsd.conf": {"mx": [25], "submission": [587], "submissions": [465],
                      "imap": [143], "imaps": [993], "pop3": [110],
                      "pop3s": [995]},
    "mx.conf": {"mx": [25]},
    "msa.conf": {"submission": [587], "submissions": [465]},
    "mda.conf": {"imap": [143], "imaps": [993], "pop3": [110],
                 "pop3s": [995]},
    # Client mode (SPEC 12): plaintext listeners on loopback.
    "smarthost.conf": {"smarthost": [10025]},
    "fetchmail.conf": {"imap": [10143], "pop3": [10110]},
}

# The audit names every plaintext listener, by design.
PLAINTEXT_FINDING = re.compile(
    r'^\S+:\d+: warning: service "[^"]+": tls_mode = "none": '
    r'127\.0\.0\.1:\d+ accepts plaintext \(loopback only\)$')

CERT_FINDING = re.compile(
    r'^\S+:\d+: warning: tls "[^"]+": certificate \S+(: chain does not '
    r'verify: .*| does not match hostname "[^"]*" of service "[^"]+")$')


@pytest.mark.parametrize("sample", sorted(SAMPLE_SERVICES))
def test_sample_configuration_passes_audit(binary, certs, workdir, sample):
    """etc/ samples: usable, and the audit has nothing to say about them
    but the certificates (here the test PKI's, which no system trusts)."""
    need_root()
    with open(os.path.join(ops_util.SRCDIR, "etc", sample)) as f:
        text = f.read()
    services = {}
    for name, body in re.findall(r'^service "([^"]+)" \{(.*?)^\}', text,
                                 re.M | re.S):
        listen = re.search(r"(?m)^\s*listen\s*=\s*\{([^}]*)\}", body)
        services[name] = sorted({int(port) for port in re.findall(
            r':(\d+)"', listen.group(1))})
    assert services == SAMPLE_SERVICES[sample], services
    for kind in ("ecdsa", "rsa"):
        text = text.replace("/etc/ssl/mail/%s.pem" % kind,
                            getattr(certs, kind + "_chain"))
        text = text.replace("/etc/ssl/mail/%s.key" % kind,
                            getattr(certs, kind + "_key"))
    assert "/etc/ssl/mail/" not in re.sub(r"(?m)^\s*#.*$", "", text)
    # The test machine has no user mailtlsd; nobody can read the test keys.
    text, n = re.subn(r'(?m)^user = "mailtlsd"$', 'user = "nobody"', text)
    assert n == 1
    path = os.path.join(workdir, sample)
    with open(path, "w") as f:
        f.write(text)
    rc, out, err = ops_util.run_binary(binary, "-t", "-c", path)
    lines = out.splitlines()
    assert rc == 0 and err == "" and lines[-1] == "configuration OK", out + err
    others = [l for l in lines[:-1] if not CERT_FINDING.match(l) and
              not PLAINTEXT_FINDING.match(l)]
    assert others == [], out


# ---------------------------------------------------------------------------
# systemd units

SOCKETS = ["mx", "submission", "submissions", "imap", "imaps", "pop3",
           "pop3s"]


@pytest.fixture
def units(workdir, binary):
    """The units as `make install` writes them, with the built binary."""
    d = os.path.join(workdir, "units")
    os.makedirs(d)
    with open(os.path.join(d, "mailtlsd.service"), "w") as f:
        f.write(ops_util.unit_text(
            "mailtlsd.service.in", sbindir=os.path.dirname(binary),
            sysconfdir=os.path.join(workdir, "etc")))
    for s in SOCKETS:
        shutil.copy(os.path.join(ops_util.SRCDIR, "systemd",
                                 "mailtlsd-%s.socket" % s), d)
    # `systemd-analyze verify` runs `man` for Documentation=.
    for page, sect in (("mailtlsd.8", "8"), ("mailtlsd.conf.5", "5")):
        mdir = os.path.join(d, "man", "man" + sect)
        os.makedirs(mdir, exist_ok=True)
        shutil.copy(os.path.join(ops_util.SRCDIR, "doc", page), mdir)
    return d


def test_systemd_units_verify(units, binary):
    files = ["mailtlsd.service"] + ["mailtlsd-%s.socket" % s
                                    for s in SOCKETS]
    env = dict(os.environ, MANPATH=os.path.join(units, "man"))
    # Documentation=man:... is checked by running man(1), if there is one;
    # without it, by looking for the pages in doc/.
    man = ["--man=yes"] if shutil.which("man") else ["--man=no"]
    for f in files:
        with open(os.path.join(units, f)) as fp:
            pages = re.findall(r"man:([\w.-]+)\((\d)\)", fp.read())
        for page, sect in pages:
            assert os.path.isfile(os.path.join(
                ops_util.SRCDIR, "doc", "%s.%s" % (page, sect))), page
    p = subprocess.run(["systemd-analyze", "verify"] + man +
                       [os.path.join(units, f) for f in files],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=120, cwd=units)
    out = p.stdout.decode(errors="replace")
    # Unknown keys are only warnings: any output is a failure.
    assert p.returncode == 0 and out.strip() == "", out
    with open(os.path.join(units, "mailtlsd.service")) as f:
        service = f.read()
    for want in ("Type=notify", "NotifyAccess=main", "User=mailtlsd",
                 "ExecReload=/bin/kill -HUP $MAINPID",
                 "ExecStartPre=%s -t -c " % binary,
                 "ExecStart=%s -c " % binary):
        assert re.search(r"(?m)^" + re.escape(want), service), want
    for s in SOCKETS:
        with open(os.path.join(units, "mailtlsd-%s.socket" % s)) as f:
            sock = f.read()
        assert re.search(r"(?m)^FileDescriptorName=%s$" % s, sock), s
        assert re.search(r"(?m)^Service=mailtlsd\.service$", sock), s
        ports = re.findall(r"(?m)^ListenStream=(\d+)$", sock)
        assert [int(x) for x in ports] == \
            SAMPLE_SERVICES["mailtlsd.conf"][s], (s, ports)


def test_systemd_service_exposure(units):
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        "--no-pager",
                        os.path.join(units, "mailtlsd.service")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120, cwd=units)
    out = p.stdout.decode(errors="replace")
    m = re.search(r"Overall exposure level for mailtlsd\.service: "
                  r"(\d+\.\d)", out)
    assert p.returncode == 0 and m, out
    assert float(m.group(1)) <= 2.0, out


def test_sysusers_file_creates_the_user(workdir):
    root = os.path.join(workdir, "root")
    os.makedirs(os.path.join(root, "etc"))
    p = subprocess.run(["systemd-sysusers", "--root=" + root, "--dry-run",
                        os.path.join(ops_util.SRCDIR, "systemd",
                                     "mailtlsd.sysusers")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert re.search(r"Creating user '?mailtlsd'?", out), out


# ---------------------------------------------------------------------------
# Packaging: install, man pages

def make_vars(bdir):
    """The installation directories from the build's Makefile, expanded."""
    raw = {}
    with open(os.path.join(bdir, "Makefile")) as f:
        for line in f:
            m = re.match(r"^([A-Za-z_]+) = (.*)$", line.rstrip("\n"))
            if m:
                raw.setdefault(m.group(1), m.group(2))

    def expand(v, depth=0):
        assert depth < 20, v
        return re.sub(r"\$[({]([A-Za-z_]+)[)}]",
                      lambda mm: expand(raw.get(mm.group(1), ""), depth + 1),
                      v)
    return {k: expand(raw[k]) for k in (
        "sbindir", "sysconfdir", "mandir", "docdir", "systemdsystemunitdir",
        "sysusersdir")}


@pytest.mark.timeout(300)
def test_make_install_destdir(binary, workdir):
    bdir = ops_util.builddir(binary)
    if bdir is None:
        pytest.skip("no build directory with a Makefile (MAILTLSD_BUILDDIR)")
    dest = os.path.join(workdir, "dest")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    mtlib.run(["make", "-C", bdir, "install", "DESTDIR=" + dest],
              timeout=280, env=env)
    d = make_vars(bdir)
    at = lambda p: dest + p
    want = [d["sbindir"] + "/mailtlsd",
            d["systemdsystemunitdir"] + "/mailtlsd.service",
            d["sysusersdir"] + "/mailtlsd.conf",
            d["mandir"] + "/man8/mailtlsd.8",
            d["mandir"] + "/man5/mailtlsd.conf.5",
            d["sysconfdir"] + "/mailtlsd/mailtlsd.conf",
            d["docdir"] + "/deployment.md"]
    want += [d["systemdsystemunitdir"] + "/mailtlsd-%s.socket" % s
             for s in SOCKETS]
    want += [d["docdir"] + "/examples/" + s for s in SAMPLE_SERVICES]
    missing = [w for w in want if not os.path.isfile(at(w))]
    assert not missing, (missing, sorted(
        os.path.join(r, f)[len(dest):] for r, _, fs in os.walk(dest)
        for f in fs))
    assert os.access(at(d["sbindir"] + "/mailtlsd"), os.X_OK)
    with open(at(d["systemdsystemunitdir"] + "/mailtlsd.service")) as f:
        unit = f.read()
    assert not re.search(r"@[a-z_]+@", unit), unit
    assert re.search(r"(?m)^ExecStart=%s/mailtlsd -c %s/mailtlsd/"
                     r"mailtlsd\.conf$" % (re.escape(d["sbindir"]),
                                           re.escape(d["sysconfdir"])), unit)
    rc, out, err = ops_util.run_binary(at(d["sbindir"] + "/mailtlsd"), "-V")
    assert rc == 0 and out.startswith("mailtlsd "), out + err
    # And everything goes away again (the configuration too: untouched).
    mtlib.run(["make", "-C", bdir, "uninstall", "DESTDIR=" + dest],
              timeout=280, env=env)
    left = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs]
    assert left == [], left


def test_man_pages_lint_clean():
    pages = [os.path.join(ops_util.SRCDIR, "doc", p)
             for p in ("mailtlsd.8", "mailtlsd.conf.5")]
    p = subprocess.run(["mandoc", "-Tlint", "-W", "warning"] + pages,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and out == "", out
