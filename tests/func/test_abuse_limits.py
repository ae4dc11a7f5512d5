"""
The per-address abuse limits of SPEC section 10, with real clients and
real backends, checked where things arrived:

- max_connection_rate_per_ip: the connection over the limit gets the
  protocol's exact temporary failure (in cleartext on STARTTLS services,
  inside TLS on implicit ones) and is closed without reaching the
  backend; another address is unaffected; behind accept_proxy the
  header's address counts.
- max_auth_failures_per_ip within auth_failure_window: failures are what
  a real Dovecot (IMAP LOGIN, POP3 PASS) and a real Postfix with Dovecot
  SASL (SMTP AUTH PLAIN) answer; past the limit the next credential
  command gets mailtlsd's exact reply, and the backend's own log shows
  it never arrived; another address still logs in; the window ends.
- the address table stays bounded under a flood of distinct addresses
  claimed through PROXY v2 headers: its gauge never exceeds the maximum
  and the daemon's RSS (measured with no session in flight) does not
  grow once the table is full.

Clients connect from other loopback addresses (127.0.0.2, 127.0.0.3) to
be told apart.  Metrics deltas are exact.  Nothing asserts a timing:
every wait has a deadline only so that a failure cannot hang the suite.
"""

import base64
import os
import re
import socket
import struct
import threading
import time

import pytest

import mtlib
from mtlib import HOST, SERVER_NAME, Conn
from test_metrics import prom_parser, scrape, total, val

pytestmark = pytest.mark.skipif(
    prom_parser is None, reason="python3-prometheus-client is not installed")

ADDR_A = "127.0.0.2"
ADDR_B = "127.0.0.3"
ADDRTABLE_MAX = 32768           # src/mailtlsd.h
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"

RATE_SMTP = b"421 4.7.0 %s Too many connections, slow down\r\n" % \
    SERVER_NAME.encode()
RATE_IMAP = b"* BYE [UNAVAILABLE] Too many connections\r\n"
RATE_POP3 = b"-ERR [SYS/TEMP] Too many connections\r\n"
AUTH_SMTP = b"454 4.7.0 Too many authentication failures\r\n"
AUTH_IMAP = b"NO [UNAVAILABLE] Too many authentication failures\r\n"
AUTH_POP3 = b"-ERR [SYS/TEMP] Too many authentication failures\r\n"


# ---------------------------------------------------------------------------
# Backends of our own: Dovecot without its failure delay (the limit under
# test is ours, and the test should not wait seconds per failure), and a
# Postfix doing SASL through it.

@pytest.fixture(scope="module")
def ldovecot(workroot):
    if os.geteuid() != 0:
        pytest.skip("Dovecot needs root")
    d = mtlib.Dovecot(workroot, subdir="dovecot-limits",
                      extra_conf="auth_failure_delay = 0\n"
                      "login_trusted_networks = 127.0.0.0/8\n")
    d.add_user("carol", "carol-secret")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def lpostfix(workroot, ldovecot):
    p = mtlib.Postfix(workroot, ldovecot, ldovecot.users["carol"],
                      subdir="postfix-limits")
    p.start()
    yield p
    p.stop()


def limits_daemon(mtd, **gopts):
    sport = mtlib.free_port()
    m = mtd(stats_listen=["%s:%d" % (HOST, sport)], **gopts)
    return m, sport


def started(m, sport):
    m.start()
    mtlib.wait_port(sport, 10, "stats listener")
    return scrape(sport)


def refusals(s, service, kind):
    return val(s, "mailtlsd_refusals_total", service=service, kind=kind)


# ---------------------------------------------------------------------------
# max_connection_rate_per_ip

def smtp_greeted(port, source):
    with Conn.plain(port, source=source) as c:
        reply = c.smtp_reply()
        assert reply.startswith(b"220 "), reply
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")


def test_rate_limit_starttls_smtp(mtd, lpostfix):
    m, sport = limits_daemon(mtd)
    port = m.add_service("submission", "smtp", [lpostfix.port],
                         tls_mode="starttls", max_connection_rate_per_ip=3)
    before = started(m, sport)
    for _ in range(3):
        smtp_greeted(port, ADDR_A)
    with Conn.plain(port, source=ADDR_A) as c:
        assert c.read_to_eof(timeout=10) == RATE_SMTP
    m.wait_log(r"service submission: refusing %s: connection rate limit "
               r"\(max_connection_rate_per_ip 3 per minute\)"
               % re.escape(ADDR_A))
    m.wait_log(r"session end service=submission client=%s backend=- .*"
               r"reason=connection rate limit" % re.escape(ADDR_A))
    # Another address has its own bucket.
    smtp_greeted(port, ADDR_B)
    after = scrape(sport)
    assert refusals(after, "submission", "max_connection_rate_per_ip") - \
        refusals(before, "submission", "max_connection_rate_per_ip") == 1


@pytest.mark.parametrize("protocol,reply", [("imap", RATE_IMAP),
                                            ("pop3", RATE_POP3)])
def test_rate_limit_implicit_reply_inside_tls(mtd, ldovecot, certs,
                                              protocol, reply):
    backend = ldovecot.imap_port if protocol == "imap" else ldovecot.pop3_port
    greet = b"* OK" if protocol == "imap" else b"+OK"
    m, sport = limits_daemon(mtd)
    name = protocol + "s"
    port = m.add_service(name, protocol, [backend],
                         max_connection_rate_per_ip=2)
    before = started(m, sport)
    for _ in range(2):
        with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
            assert c.line().startswith(greet)
    # The client expects TLS: the handshake completes, the reply is the
    # first and last thing inside.
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.read_to_eof(timeout=10) == reply
    m.wait_log(r"session end service=%s client=%s backend=- .*"
               r"reason=connection rate limit" % (name, re.escape(ADDR_A)))
    with Conn.tls(port, certs.client_context(), source=ADDR_B) as c:
        assert c.line().startswith(greet)
    after = scrape(sport)
    assert refusals(after, name, "max_connection_rate_per_ip") - \
        refusals(before, name, "max_connection_rate_per_ip") == 1


def test_rate_limit_starttls_pop3(mtd, ldovecot):
    m, sport = limits_daemon(mtd)
    port = m.add_service("pop3", "pop3", [ldovecot.pop3_port],
                         tls_mode="starttls", max_connection_rate_per_ip=1)
    started(m, sport)
    with Conn.plain(port, source=ADDR_A) as c:
        assert c.line().startswith(b"+OK")
    with Conn.plain(port, source=ADDR_A) as c:
        assert c.read_to_eof(timeout=10) == RATE_POP3


def v2_header(src, dst="192.0.2.1", sport=40000, dport=25):
    block = (socket.inet_aton(src) + socket.inet_aton(dst) +
             struct.pack("!HH", sport, dport))
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(block)) + block


def test_rate_limit_counts_the_proxy_header_address(mtd, lpostfix):
    m, sport = limits_daemon(mtd)
    port = m.add_service("mx", "smtp", [lpostfix.port], tls_mode="starttls",
                         require_starttls=False, accept_proxy=True,
                         proxy_trusted=["127.0.0.1/32"],
                         max_connection_rate_per_ip=1)
    started(m, sport)

    def via_balancer(src):
        s = socket.create_connection((HOST, port), 10)
        s.sendall(v2_header(src))
        return Conn(s, 15)

    with via_balancer("203.0.113.5") as c:
        assert c.smtp_reply().startswith(b"220 ")
    with via_balancer("203.0.113.5") as c:
        assert c.read_to_eof(timeout=10) == RATE_SMTP
    m.wait_log(r"refusing 203\.0\.113\.5: connection rate limit")
    # The balancer's own address counts for nothing.
    with via_balancer("203.0.113.6") as c:
        assert c.smtp_reply().startswith(b"220 ")


# ---------------------------------------------------------------------------
# max_auth_failures_per_ip

def dovecot_disconnects(mark, service, n):
    """The n Dovecot login disconnect lines after mark, when all are in."""
    pat = r"%s-login: (?:Info: )?Disconnected.*" % service
    return mtlib.wait_until(
        lambda: (lambda f: f if len(f) >= n else None)(
            re.findall(pat, mark.text())), 15, "%d %s-login lines"
        % (n, service))


def imap_login(c, tag, user, password):
    c.send("%s LOGIN %s %s\r\n" % (tag, user, password))
    return c.tagged(tag.encode())


def test_auth_failures_imaps_dovecot(mtd, ldovecot, certs):
    carol = ldovecot.users["carol"]
    m, sport = limits_daemon(mtd)
    port = m.add_service("imaps", "imap", [ldovecot.imap_port],
                         max_auth_failures_per_ip=2, auth_failure_window=600)
    before = started(m, sport)
    mark = mtlib.LogMark(ldovecot.log)
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.line().startswith(b"* OK")
        assert re.search(rb"^a NO ", imap_login(c, "a", carol.name, "wrong"),
                         re.M)
        c.send(b"b AUTHENTICATE PLAIN\r\n")
        assert c.line().startswith(b"+")
        c.send(base64.b64encode(b"\0carol\0wrong2") + b"\r\n")
        assert re.search(rb"^b NO ", c.tagged(b"b"), re.M)
        # Over the limit: answered here, even with the right password.
        assert imap_login(c, "c", carol.name, carol.password) == \
            b"c " + AUTH_IMAP
        c.send(b"d AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"d " + AUTH_IMAP
        c.send(b"e LOGOUT\r\n")
        c.tagged(b"e")
    # Dovecot saw two attempts on that connection, not four.
    lines = dovecot_disconnects(mark, "imap", 1)
    assert len(lines) == 1 and "auth failed, 2 attempts" in lines[0], lines
    m.wait_log(r"service imaps: client %s: 2 authentication failures "
               r"within 600 s \(max_auth_failures_per_ip\)"
               % re.escape(ADDR_A))
    m.wait_log(r"imap client=%s: credential command refused: too many "
               r"authentication failures" % re.escape(ADDR_A))
    # A new connection from the same address: still refused.
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.line().startswith(b"* OK")
        assert imap_login(c, "a", carol.name, carol.password) == \
            b"a " + AUTH_IMAP
    # Another address logs in.
    with Conn.tls(port, certs.client_context(), source=ADDR_B) as c:
        assert c.line().startswith(b"* OK")
        assert re.search(rb"^a OK", imap_login(c, "a", carol.name,
                                               carol.password), re.M)
        c.send(b"b LOGOUT\r\n")
        c.tagged(b"b")
    after = scrape(sport)
    assert refusals(after, "imaps", "max_auth_failures_per_ip") - \
        refusals(before, "imaps", "max_auth_failures_per_ip") == 3


def pop3_pass(c, user, password):
    c.send("USER %s\r\n" % user)
    assert c.line().startswith(b"+OK")
    c.send("PASS %s\r\n" % password)
    return c.line()


def test_auth_failures_pop3s_dovecot_and_window(mtd, ldovecot, certs):
    """The window (2 s) opens with the first failure: after it, the
    address may log in again."""
    carol = ldovecot.users["carol"]
    m, sport = limits_daemon(mtd)
    port = m.add_service("pop3s", "pop3", [ldovecot.pop3_port],
                         max_auth_failures_per_ip=2, auth_failure_window=2)
    before = started(m, sport)
    mark = mtlib.LogMark(ldovecot.log)
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.line().startswith(b"+OK")
        assert pop3_pass(c, carol.name, "wrong").startswith(b"-ERR")
        first = time.monotonic()
        assert pop3_pass(c, carol.name, "wrong").startswith(b"-ERR")
        refused = pop3_pass(c, carol.name, carol.password)
        if time.monotonic() - first < 2:
            assert refused == AUTH_POP3
        else:
            pytest.skip("too slow to stay inside a 2 s window")
        c.send(b"QUIT\r\n")
        c.line()
    lines = dovecot_disconnects(mark, "pop3", 1)
    assert len(lines) == 1 and "auth failed, 2 attempts" in lines[0], lines
    # Wait out the window (bounded), then the right password works.
    time.sleep(max(0.0, first + 2.2 - time.monotonic()))
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.line().startswith(b"+OK")
        assert pop3_pass(c, carol.name, carol.password).startswith(b"+OK")
        c.send(b"QUIT\r\n")
        c.line()
    after = scrape(sport)
    assert refusals(after, "pop3s", "max_auth_failures_per_ip") - \
        refusals(before, "pop3s", "max_auth_failures_per_ip") == 1


def smtp_auth_plain(c, user, password):
    c.send(b"AUTH PLAIN " + base64.b64encode(
        b"\0" + user.encode() + b"\0" + password.encode()) + b"\r\n")
    return c.smtp_reply()


def test_auth_failures_submissions_postfix_sasl(mtd, lpostfix, ldovecot,
                                                certs):
    carol = ldovecot.users["carol"]
    m, sport = limits_daemon(mtd)
    port = m.add_service("submissions", "smtp", [lpostfix.port],
                         max_auth_failures_per_ip=2)
    before = started(m, sport)
    mark = mtlib.LogMark(lpostfix.log)
    with Conn.tls(port, certs.client_context(), source=ADDR_A) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.test\r\n")
        assert b"AUTH" in c.smtp_reply()
        for pw in ("wrong", "wrong2"):
            assert smtp_auth_plain(c, carol.name, pw).startswith(b"535 ")
        assert smtp_auth_plain(c, carol.name, carol.password) == AUTH_SMTP
        c.send(b"AUTH LOGIN\r\n")
        assert c.smtp_reply() == AUTH_SMTP
        c.send(b"QUIT\r\n")
        assert c.smtp_reply().startswith(b"221")
    # Postfix logs each failed AUTH; the connection's summary counts them.
    summary = mtlib.wait_until(
        lambda: re.search(r"disconnect from \S+ .*\bauth=0/2\b.*",
                          mark.text()), 15, "postfix disconnect line")
    assert len(re.findall(r"SASL PLAIN authentication failed",
                          mark.text())) == 2, summary.group(0)
    assert "SASL LOGIN" not in mark.text()
    with Conn.tls(port, certs.client_context(), source=ADDR_B) as c:
        assert c.smtp_reply().startswith(b"220 ")
        c.send(b"EHLO client.test\r\n")
        c.smtp_reply()
        assert smtp_auth_plain(c, carol.name,
                               carol.password).startswith(b"235 ")
        c.send(b"QUIT\r\n")
        c.smtp_reply()
    after = scrape(sport)
    assert refusals(after, "submissions", "max_auth_failures_per_ip") - \
        refusals(before, "submissions", "max_auth_failures_per_ip") == 2


# ---------------------------------------------------------------------------
# The address table under a flood of distinct addresses.

FLOOD_DEADLINE = 300.0          # seconds; a bound, not an expectation
FLOOD_THREADS = 4


def flood_part(port, first, count, deadline, errors):
    linger = struct.pack("ii", 1, 0)
    try:
        for i in range(first, first + count):
            if time.monotonic() > deadline:
                raise mtlib.MtError("flood not done by its deadline")
            src = "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.settimeout(10)
                s.connect((HOST, port))
                # Not TLS behind the header: the handshake fails at once
                # and the daemon closes.  Waiting for that keeps at most
                # one session per thread in flight, so the heap does not
                # grow with however far behind the daemon falls.
                s.sendall(v2_header(src, dport=993) + b"\0" * 8)
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            finally:
                s.close()       # RST: no TIME_WAIT piles up
    except Exception as e:      # reported by flood()
        errors.append(e)


def flood(port, first, count, deadline):
    """count connections, each a PROXY v2 header from a fresh source
    address (10.x.y.z from index first on), then a reset; from a few
    threads, so that the table fills faster than its entries expire."""
    errors = []
    per = count // FLOOD_THREADS
    threads = [threading.Thread(target=flood_part, args=(
        port, first + k * per, per if k < FLOOD_THREADS - 1 else
        count - k * per, deadline, errors)) for k in range(FLOOD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 15))
    assert not any(t.is_alive() for t in threads), "flood threads hang"
    assert not errors, errors


def table_entries(sport, service):
    return val(scrape(sport), "mailtlsd_address_table_entries",
               service=service)


def drained(sport):
    """Wait until every session of the flood has ended, so that RSS is
    measured without sessions in flight (their number depends on how far
    behind the daemon is); return the table's entry count then."""
    seen = [None]

    def idle():
        # Nothing open, and nothing accepted since the last look (the
        # listen queue is empty too).
        s = scrape(sport)
        accepted = total(s, "mailtlsd_connections_total")
        quiet = seen[0] == accepted
        seen[0] = accepted
        if quiet and total(s, "mailtlsd_connections_active") == 0:
            return s
        return None
    s = mtlib.wait_until(idle, 60, "flood sessions to end", interval=0.3)
    return val(s, "mailtlsd_address_table_entries", service="imaps")


def test_address_table_bounded_under_flood(mtd):
    """A table already full takes 80k more addresses: its entry count
    never exceeds the maximum and RSS, measured with no session in
    flight, does not grow with them (an unbounded table would need about
    6 MB more for them: 76 bytes an entry with its hash slot)."""
    m, sport = limits_daemon(mtd, log_level="notice")
    # Implicit TLS: each session fails its handshake, so no backend is
    # ever contacted (nothing listens there).
    port = m.add_service("imaps", "imap", [mtlib.free_port()],
                         accept_proxy=True, proxy_trusted=["127.0.0.1/32"],
                         max_connection_rate_per_ip=120)
    started(m, sport)
    deadline = time.monotonic() + FLOOD_DEADLINE
    warm = ADDRTABLE_MAX + 4096
    flood(port, 0, warm, deadline)
    # Full: more addresses came than it holds, within an entry's minute.
    assert drained(sport) == ADDRTABLE_MAX
    rss = [m.rss_kib()]
    # The rest of the warm-up lets the heap reach what a flood of
    # sessions needs (its peak depends on how many are in flight).
    first = warm
    for count in (30000, 30000, 40000, 40000):
        flood(port, first, count, deadline)
        first += count
        n = table_entries(sport, "imaps")
        assert n <= ADDRTABLE_MAX, n
        assert drained(sport) <= ADDRTABLE_MAX
        rss.append(m.rss_kib())
    print("flood: RSS KiB after each step:", rss)
    # The last 80k addresses: nothing more than noise.
    assert rss[-1] - rss[-3] < 3072, rss
    assert m.alive()
