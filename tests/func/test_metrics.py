"""
The stats listener (SPEC section 11, issue 10 items 4-6): /metrics in the
Prometheus text format 0.0.4 and /health, on stats_listen, answered only
to stats_allow.

- a scripted workload in front of real Dovecot (implicit TLS sessions,
  failed handshakes, cleartext credentials refused on a STARTTLS service,
  a STARTTLS upgrade, a command pipelined behind STARTTLS, a backend that
  is down) and the exact deltas it
  leaves, the output parsed strictly by Debian's python3-prometheus-client;
- bytes and durations checked against the daemon's own session end lines;
- the certificate-expiry gauge against the certificates' notAfter;
- counters that survive SIGHUP, and the reload counter itself;
- /health: 200 while serving, 503 once stopping (a session still open);
- stats_allow: a source outside it gets no answer at all;
- malformed, oversized, keep-alive and body-carrying requests: 400 (or
  404/405) and the connection closes;
- -t: a stats listener on a non-loopback address without stats_allow;
- etc/: the alert rules (promtool when Debian's prometheus is installed,
  else a YAML parse) and the Grafana dashboard name only metrics that
  exist.
"""

import datetime
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

import mtlib
from mtlib import HOST, Conn

prom_parser = pytest.importorskip(
    "prometheus_client.parser",
    reason="python3-prometheus-client is not installed")

SRCDIR = os.environ.get("MAILTLSD_SRCDIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))

FAMILIES = {
    "mailtlsd_build_info", "mailtlsd_connections_total",
    "mailtlsd_connections_active", "mailtlsd_tls_handshakes_total",
    "mailtlsd_tls_handshake_failures_total", "mailtlsd_starttls_total",
    "mailtlsd_refusals_total", "mailtlsd_backend_connect_failures_total",
    "mailtlsd_bytes_total", "mailtlsd_session_duration_seconds",
    "mailtlsd_certificate_expiry_timestamp_seconds",
    "mailtlsd_config_reloads_total", "mailtlsd_timeouts_total",
    "mailtlsd_config_reloads_total", "mailtlsd_address_table_entries",
}


# ---------------------------------------------------------------------------
# HTTP by hand: every byte on the wire is the test's.

def http(port, raw, source=None, timeout=10.0):
    """Send raw bytes, read until the server closes: (status, headers, body).
    status is None when the server closed without a byte."""
    s = socket.create_connection((HOST, port), timeout,
                                 source_address=(source, 0) if source
                                 else None)
    try:
        s.settimeout(timeout)
        s.sendall(raw)
        data = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(data) < (8 << 20):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("stats connection not closed: %r"
                                 % bytes(data[:300]))
    finally:
        s.close()
    if not data:
        return None, {}, b""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get(port, path, method="GET", source=None):
    return http(port, ("%s %s HTTP/1.1\r\nHost: %s\r\n\r\n"
                       % (method, path, HOST)).encode(), source=source)


def scrape(port):
    """Samples of /metrics, parsed strictly: {(name, labels): value}."""
    status, headers, body = get(port, "/metrics")
    assert status == 200, (status, body[:300])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    text = body.decode("utf-8")
    out = {}
    names = set()
    for fam in prom_parser.text_string_to_metric_families(text):
        names.add(fam.name)
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, "duplicate series %r" % (key,)
            out[key] = s.value
    # Every family of SPEC 11 is declared, and nothing beyond ours.
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert declared == FAMILIES, declared ^ FAMILIES
    return out


def val(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """Sum over the series of name whose labels include labels."""
    n = 0.0
    for (sname, lab), v in samples.items():
        d = dict(lab)
        if sname == name and all(d.get(k) == x for k, x in labels.items()):
            n += v
    return n


def quiet(m, port, want_closed, timeout=20.0):
    """Wait until no session is open and want_closed have ended."""
    def done():
        s = scrape(port)
        active = total(s, "mailtlsd_connections_active")
        closed = val(s, "mailtlsd_session_duration_seconds_count")
        return s if active == 0 and closed >= want_closed else None
    return mtlib.wait_until(done, timeout, "sessions to end")


def session_ends(m, service):
    """in/out bytes and count of the session end lines of a service."""
    rx = re.compile(r"session end service=%s client=\S+ backend=\S+ "
                    r"in=(\d+) out=(\d+) " % re.escape(service))
    ins = outs = n = 0
    for mo in rx.finditer(m.log_text()):
        ins += int(mo.group(1))
        outs += int(mo.group(2))
        n += 1
    return ins, outs, n


def dead_port():
    port = mtlib.free_port()
    assert not mtlib.port_accepts(port)
    return port


def not_after(path):
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in",
                          path], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    when = out.strip().split("=", 1)[1]
    dt = datetime.datetime.strptime(when, "%b %d %H:%M:%S %Y %Z")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def subject_cn(path):
    out = subprocess.run(["openssl", "x509", "-noout", "-subject",
                          "-nameopt", "multiline", "-in", path],
                         capture_output=True, text=True, check=True,
                         timeout=10).stdout
    mo = re.search(r"commonName\s*=\s*(\S+)", out)
    return mo.group(1)


# ---------------------------------------------------------------------------
# Workload pieces.

def imaps_session(port, certs):
    with Conn.tls(port, certs.client_context()) as c:
        assert c.line().startswith(b"* OK")
        c.send(b"a LOGOUT\r\n")
        c.read_to_eof(timeout=10)


def failed_handshake_protocol(port):
    """Cleartext to an implicit-TLS port: not a TLS record."""
    with Conn.plain(port) as c:
        c.send(b"a LOGIN alice secret\r\n")
        c.read_to_eof(timeout=15)


def failed_handshake_closed(port):
    """A TCP connection closed before any TLS byte."""
    s = socket.create_connection((HOST, port), 5)
    s.close()


def imap_cleartext_refusals(port, k):
    with Conn.plain(port) as c:
        assert c.line().startswith(b"* OK")
        for i in range(k):
            c.send(b"r%d LOGIN alice secret\r\n" % i)
            reply = c.tagged(b"r%d" % i).split(b"\r\n")[-2]
            assert reply.split(b" ")[1] in (b"NO", b"BAD"), reply
        c.send(b"z LOGOUT\r\n")
        c.read_to_eof(timeout=10)


def imap_starttls_session(port, certs):
    with Conn.plain(port) as c:
        assert c.line().startswith(b"* OK")
        c.send(b"s STARTTLS\r\n")
        assert c.tagged(b"s").split(b"\r\n")[-2].startswith(b"s OK")
        c.starttls(certs.client_context())
        c.send(b"a LOGOUT\r\n")
        c.read_to_eof(timeout=10)


def imap_starttls_injection(port):
    """A command pipelined behind STARTTLS (SPEC 8.1): refused, closed."""
    with Conn.plain(port) as c:
        assert c.line().startswith(b"* OK")
        c.send(b"s STARTTLS\r\nx LOGIN alice secret\r\n")
        c.read_to_eof(timeout=10)


def daemon(mtd, dovecot, **stats):
    """mailtlsd with imaps, imap (STARTTLS) and a service whose backend
    is down; stats on a free loopback port."""
    sport = mtlib.free_port()
    opts = {"stats_listen": ["%s:%d" % (HOST, sport)]}
    opts.update(stats)
    m = mtd(**opts)
    m.add_service("imaps", "imap", [dovecot.imap_port])
    m.add_service("imap", "imap", [dovecot.imap_port], tls_mode="starttls")
    down = dead_port()
    m.add_service("downs", "imap", [down], backend_connect_timeout=5)
    m.start()
    mtlib.wait_port(sport, 10, "stats listener")
    return m, sport, down


# ---------------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_workload_exact_deltas(mtd, certs, dovecot):
    m, sport, down = daemon(mtd, dovecot)
    before = scrape(sport)
    assert val(before, "mailtlsd_build_info",
               version=re.search(r"mailtlsd (\S+) started",
                                 m.log_text()).group(1)) == 1

    N, K = 3, 2
    for _ in range(N):
        imaps_session(m.port("imaps"), certs)
    failed_handshake_protocol(m.port("imaps"))
    failed_handshake_closed(m.port("imaps"))
    imap_cleartext_refusals(m.port("imap"), K)
    imap_starttls_session(m.port("imap"), certs)
    imap_starttls_injection(m.port("imap"))
    with Conn.tls(m.port("downs"), certs.client_context()) as c:
        assert b"UNAVAILABLE" in c.read_to_eof(timeout=20)
    sessions = N + 2 + 1 + 1 + 1 + 1
    after = quiet(m, sport, sessions)

    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    def dt(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert d("mailtlsd_connections_total", service="imaps",
             result="accepted") == N + 2
    assert d("mailtlsd_connections_total", service="imap",
             result="accepted") == 3
    assert d("mailtlsd_connections_total", service="downs",
             result="accepted") == 1
    assert dt("mailtlsd_connections_total", result="rejected") == 0
    assert dt("mailtlsd_tls_handshakes_total", service="imaps") == N
    assert dt("mailtlsd_tls_handshakes_total", service="imap") == 1
    assert dt("mailtlsd_tls_handshakes_total", service="downs") == 1
    # Fresh sessions, so TLS 1.3 without resumption (python's default).
    assert dt("mailtlsd_tls_handshakes_total", service="imaps",
              version="TLSv1.3", resumed="false") == N
    assert d("mailtlsd_tls_handshake_failures_total", service="imaps",
             reason="protocol") == 1
    assert d("mailtlsd_tls_handshake_failures_total", service="imaps",
             reason="closed") == 1
    assert dt("mailtlsd_tls_handshake_failures_total") == 2
    assert d("mailtlsd_starttls_total", service="imap") == 1
    assert ("mailtlsd_starttls_total", (("service", "imaps"),)) not in after
    assert d("mailtlsd_refusals_total", service="imap",
             kind="credentials") == K
    assert d("mailtlsd_refusals_total", service="imap",
             kind="injection") == 1
    assert dt("mailtlsd_refusals_total") == K + 1
    assert d("mailtlsd_backend_connect_failures_total", service="downs",
             backend="%s:%d" % (HOST, down)) == 1
    assert dt("mailtlsd_backend_connect_failures_total") == 1
    assert d("mailtlsd_session_duration_seconds_count") == sessions
    # Only series that something can increment on that service.
    def labels(name, service, key):
        return {dict(l)[key] for (n, l) in after
                if n == name and dict(l)["service"] == service}
    assert labels("mailtlsd_refusals_total", "imap", "kind") == {
        "protocol", "credentials", "injection", "max_connections",
        "max_connections_per_ip", "max_connection_rate_per_ip",
        "max_auth_failures_per_ip"}
    assert labels("mailtlsd_connections_active", "imaps", "phase") == {
        "connecting", "handshake", "tls", "closing"}
    assert labels("mailtlsd_connections_active", "imap", "phase") == {
        "connecting", "handshake", "cleartext", "tls", "closing"}
    assert d("mailtlsd_session_duration_seconds_bucket",
             le="+Inf") == sessions
    assert d("mailtlsd_session_duration_seconds_sum") >= 0
    # Bytes: exactly what the session end lines say.
    for svc in ("imaps", "imap", "downs"):
        ins, outs, n = session_ends(m, svc)
        assert val(after, "mailtlsd_bytes_total", service=svc,
                   direction="in") == ins
        assert val(after, "mailtlsd_bytes_total", service=svc,
                   direction="out") == outs
        assert outs > 0


def test_certificate_expiry_gauge(mtd, certs, dovecot):
    m, sport, _ = daemon(mtd, dovecot)
    s = scrape(sport)
    got = {dict(lab)["type"]: (dict(lab), v) for (name, lab), v in s.items()
           if name == "mailtlsd_certificate_expiry_timestamp_seconds"}
    assert set(got) == {"ecdsa", "rsa"}
    for kind, chain in (("ecdsa", certs.ecdsa_chain),
                        ("rsa", certs.rsa_chain)):
        labels, v = got[kind]
        assert labels["tls"] == "main"
        assert labels["name"] == subject_cn(chain)
        assert v == not_after(chain)


@pytest.mark.timeout(120)
def test_counters_survive_sighup(mtd, certs, dovecot):
    m, sport, _ = daemon(mtd, dovecot)
    imaps_session(m.port("imaps"), certs)
    before = quiet(m, sport, 1)
    assert val(before, "mailtlsd_connections_total", service="imaps",
               result="accepted") == 1

    mark = m.log_text().count("configuration reloaded")
    os.kill(m.pid, signal.SIGHUP)
    mtlib.wait_until(lambda: m.log_text().count("configuration reloaded")
                     > mark, 15, "reload")
    s = scrape(sport)
    assert val(s, "mailtlsd_connections_total", service="imaps",
               result="accepted") == 1
    assert total(s, "mailtlsd_tls_handshakes_total", service="imaps") == 1
    assert val(s, "mailtlsd_config_reloads_total", result="success") == 1
    assert val(s, "mailtlsd_config_reloads_total", result="failure") == 0

    # A session on the new runtime adds to the same counter.
    imaps_session(m.port("imaps"), certs)
    s = quiet(m, sport, 2)
    assert val(s, "mailtlsd_connections_total", service="imaps",
               result="accepted") == 2

    # A configuration that does not load: counted, nothing lost.
    good = open(m.conf).read()
    with open(m.conf, "w") as f:
        f.write(good + "\nno_such_option = 1\n")
    mark = m.log_text().count("reload failed")
    os.kill(m.pid, signal.SIGHUP)
    mtlib.wait_until(lambda: m.log_text().count("reload failed") > mark,
                     15, "failed reload")
    s = scrape(sport)
    assert val(s, "mailtlsd_config_reloads_total", result="failure") == 1
    assert val(s, "mailtlsd_config_reloads_total", result="success") == 1
    assert val(s, "mailtlsd_connections_total", service="imaps",
               result="accepted") == 2


@pytest.mark.timeout(60)
def test_health_ok_then_503_while_stopping(mtd, certs, dovecot):
    m, sport, _ = daemon(mtd, dovecot, shutdown_timeout=5)
    status, headers, body = get(sport, "/health")
    assert (status, body) == (200, b"ok\n")
    status, headers, body = get(sport, "/health", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == "3"
    # A session keeps the daemon draining; /health says so meanwhile.
    c = Conn.tls(m.port("imaps"), certs.client_context())
    try:
        assert c.line().startswith(b"* OK")
        os.kill(m.pid, signal.SIGTERM)
        m.expect_exit = True
        mtlib.wait_until(lambda: not mtlib.port_accepts(m.port("imaps")),
                         5, "service listener closed")
        status, _, body = get(sport, "/health")
        assert (status, body) == (503, b"stopping\n")
    finally:
        c.close()
    assert m.stop() == 0


def test_stats_allow_other_sources_get_nothing(mtd, dovecot):
    m, sport, _ = daemon(mtd, dovecot, stats_allow=["127.0.0.1/32"])
    assert get(sport, "/health")[0] == 200
    status, _, body = get(sport, "/health", source="127.0.0.2")
    assert status is None and body == b""
    m.wait_log(r"stats: 127\.0\.0\.2 is not in stats_allow")


def test_stats_allow_default_is_loopback(mtd, dovecot):
    m, sport, _ = daemon(mtd, dovecot)
    assert get(sport, "/health", source="127.0.0.2")[0] == 200


@pytest.mark.timeout(60)
def test_reload_takes_stats_allow_at_once(mtd, dovecot):
    m, sport, _ = daemon(mtd, dovecot)
    assert get(sport, "/health", source="127.0.0.2")[0] == 200
    m.global_opts["stats_allow"] = ["127.0.0.1/32"]
    m.global_opts["stats_listen"] = ["%s:%d" % (HOST, sport),
                                     "%s:%d" % (HOST, mtlib.free_port())]
    m.write_config()
    os.kill(m.pid, signal.SIGHUP)
    m.wait_log(r"configuration reloaded")
    m.wait_log(r"reload: 'stats_listen' changes only on restart")
    status, _, body = get(sport, "/health", source="127.0.0.2")
    assert status is None and body == b""
    assert get(sport, "/health")[0] == 200


@pytest.mark.timeout(60)
def test_connection_limit_counts_as_rejected(mtd, certs, dovecot):
    sport = mtlib.free_port()
    m = mtd(stats_listen=["%s:%d" % (HOST, sport)])
    m.add_service("imaps", "imap", [dovecot.imap_port],
                  max_connections_per_ip=1)
    m.start()
    mtlib.wait_port(sport, 10, "stats listener")
    with Conn.tls(m.port("imaps"), certs.client_context()) as held:
        assert held.line().startswith(b"* OK")
        s = scrape(sport)
        assert val(s, "mailtlsd_connections_active", service="imaps",
                   phase="tls") == 1
        # The second one is closed before any TLS byte.
        with Conn.plain(m.port("imaps")) as c:
            assert c.read_to_eof(timeout=10) == b""
        m.wait_log(r"refusing 127\.0\.0\.1: per-address connection limit")
        s = scrape(sport)
    assert val(s, "mailtlsd_connections_total", service="imaps",
               result="rejected") == 1
    assert val(s, "mailtlsd_connections_total", service="imaps",
               result="accepted") == 1
    assert val(s, "mailtlsd_refusals_total", service="imaps",
               kind="max_connections_per_ip") == 1
    assert val(s, "mailtlsd_refusals_total", service="imaps",
               kind="max_connections") == 0
    # Nothing that cannot happen on an implicit-TLS IMAP service shows.
    kinds = {dict(l)["kind"] for (n, l) in s
             if n == "mailtlsd_refusals_total"}
    assert kinds == {"protocol", "max_connections",
                     "max_connections_per_ip", "max_connection_rate_per_ip",
                     "max_auth_failures_per_ip"}, kinds


BAD = [
    ("garbage", b"HELLO\r\n\r\n", 400),
    ("no version", b"GET /metrics\r\n\r\n", 400),
    ("http2", b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("no host", b"GET /metrics HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
     400),
    ("bare lf", b"GET /metrics HTTP/1.1\nHost: x\n\n", 400),
    ("obs-fold", b"GET /metrics HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", 400),
    ("space before colon", b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
     400),
    ("nul", b"GET /metrics HTTP/1.1\r\nHost: x\0\r\n\r\n", 400),
    ("body", b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5"
             b"\r\n\r\nhello", 400),
    ("chunked", b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                b"chunked\r\n\r\n0\r\n\r\n", 400),
    ("oversized", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: "
                  + b"a" * 5000 + b"\r\n\r\n", 400),
    ("endless", b"GET /metrics HTTP/1.1\r\nX: " + b"b" * 20000, 400),
    ("post", b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("unknown path", b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("query", b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
]


@pytest.mark.timeout(120)
def test_bad_requests_get_400_and_close(mtd, dovecot):
    m, sport, _ = daemon(mtd, dovecot)
    for name, raw, want in BAD:
        status, headers, body = http(sport, raw)
        assert status == want, (name, status, body)
        assert headers.get("connection") == "close", name
        if want == 405:
            assert headers["allow"] == "GET, HEAD"
    # HTTP/1.0 is fine; keep-alive is not offered: one answer, then EOF.
    status, _, body = http(sport, b"GET /health HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, b"ok\n")
    status, _, body = http(sport, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: keep-alive\r\n\r\n"
                           b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and body == b"ok\n"
    # Still serving after all that.
    scrape(sport)


def check(m):
    m.write_config()
    p = subprocess.run([m.binary, "-t", "-c", m.conf], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def conf_line(m, option):
    for i, l in enumerate(open(m.conf).read().splitlines(), 1):
        if l.startswith(option + " "):
            return i
    raise AssertionError(option)


def test_check_warns_public_stats_without_allow(mtd, dovecot):
    m = mtd(stats_listen=["0.0.0.0:%d" % mtlib.free_port()])
    m.add_service("imaps", "imap", [dovecot.imap_port])
    rc, out = check(m)
    assert re.search(r"%s:%d: warning: stats_listen 0\.0\.0\.0:\d+ is not a "
                     r"loopback address and stats_allow is not set"
                     % (re.escape(m.conf), conf_line(m, "stats_listen")),
                     out), out
    m.global_opts["stats_allow"] = ["192.0.2.0/24"]
    rc, out = check(m)
    assert "warning: stats_" not in out, out
    m.global_opts["stats_allow"] = ["0.0.0.0/0"]
    rc, out = check(m)
    assert "stats_allow admits every address" in out, out
    m.global_opts["stats_listen"] = ["127.0.0.1:%d" % mtlib.free_port()]
    del m.global_opts["stats_allow"]
    rc, out = check(m)
    assert "warning: stats_" not in out, out


@pytest.mark.parametrize("opt,value,msg", [
    ("stats_listen", ["localhost:9425"], "option 'stats_listen'"),
    ("stats_listen", ["127.0.0.1"], "option 'stats_listen'"),
    ("stats_allow", ["10.0.0.0/33"], "option 'stats_allow'"),
])
def test_check_rejects_bad_stats_options(mtd, dovecot, opt, value, msg):
    m = mtd(**{opt: value})
    m.add_service("imaps", "imap", [dovecot.imap_port])
    rc, out = check(m)
    assert rc == 1, out
    assert re.search(r"%s:%d: .*%s" % (re.escape(m.conf), conf_line(m, opt),
                                       re.escape(msg)), out), out


def test_check_rejects_stats_on_a_service_address(mtd, dovecot):
    port = mtlib.free_port()
    m = mtd(stats_listen=["%s:%d" % (HOST, port)])
    m.add_service("imaps", "imap", [dovecot.imap_port], port=port)
    rc, out = check(m)
    assert rc == 1 and "already used by service 'imaps'" in out, out


# ---------------------------------------------------------------------------
# etc/: the alert rules and the dashboard.

def metric_names(text):
    names = set(re.findall(r"\bmailtlsd_[a-z_]+", text))
    base = set()
    for n in names:
        for suffix in ("_bucket", "_count", "_sum"):
            if n.endswith(suffix) and n[:-len(suffix)] in FAMILIES:
                n = n[:-len(suffix)]
        base.add(n)
    return base


def test_alert_rules_are_valid_and_name_real_metrics():
    path = os.path.join(SRCDIR, "etc", "mailtlsd-alerts.yml")
    text = open(path).read()
    assert metric_names(text) <= FAMILIES, metric_names(text) - FAMILIES
    promtool = None
    for d in os.environ.get("PATH", "").split(":") + ["/usr/bin"]:
        if os.access(os.path.join(d, "promtool"), os.X_OK):
            promtool = os.path.join(d, "promtool")
            break
    if promtool:
        p = subprocess.run([promtool, "check", "rules", path],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    else:
        yaml = pytest.importorskip("yaml")
        doc = yaml.safe_load(text)
        assert doc["groups"] and all(r.get("expr") for g in doc["groups"]
                                     for r in g["rules"])


def test_grafana_dashboard_names_real_metrics():
    path = os.path.join(SRCDIR, "etc", "mailtlsd-grafana.json")
    doc = json.load(open(path))
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert exprs
    names = metric_names("\n".join(exprs))
    assert names <= FAMILIES, names - FAMILIES
    for want in ("mailtlsd_connections_total", "mailtlsd_tls_handshakes_total",
                 "mailtlsd_refusals_total",
                 "mailtlsd_certificate_expiry_timestamp_seconds"):
        assert want in names


@pytest.mark.timeout(90)
def test_trickling_client_is_closed_at_the_connection_deadline(mtd, dovecot):
    """A byte every 2 s restarts a per-read timeout for ever; the stats
    connection as a whole has STATS_TIMEOUT (10 s), so a few such
    clients cannot hold every slot and starve /health (found in review)."""
    m, sport, _ = daemon(mtd, dovecot)
    s = socket.create_connection((HOST, sport), 10)
    try:
        s.settimeout(2)
        closed = False
        deadline = time.monotonic() + 30
        for ch in itertools.cycle(b"GET /health HTTP/1.1\r\n"):
            if time.monotonic() > deadline:
                break
            try:
                s.sendall(bytes([ch]))
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
        assert closed, "a trickling client kept its stats connection"
    finally:
        s.close()
    m.wait_log(r"stats: 127\.0\.0\.1: no complete request within 10 s")
    assert get(sport, "/health")[0] == 200
