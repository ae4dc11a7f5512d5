#!/usr/bin/python3
"""
demo.py - run mailtlsd in front of throwaway Dovecot and Postfix backends.

Used by the README's quick start (after the build):

    /usr/bin/python3 tools/demo.py [--binary PATH] [--state-dir DIR]

On first run it makes a demo CA and certificates for mail.example.test in
the state directory (default /var/tmp/mailtlsd-demo) and reuses them later,
so a client can keep trusting the same CA.  Each run starts fresh Dovecot
(IMAP/POP3) and Postfix (SMTP, SASL through Dovecot) instances on loopback
ports, writes a mailtlsd configuration with TLS services on unprivileged
ports, prints client commands that work against them, and runs mailtlsd in
the foreground with -d until Ctrl-C or SIGTERM; then it stops the backends.

The backends are built with tests/func/mtlib.py, the same code the
functional tests use.  Needs root (Dovecot and Postfix instances).
"""

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "func"))
import mtlib  # noqa: E402

DEFAULT_STATE = "/var/tmp/mailtlsd-demo"
USER = "demo"

# (service, protocol, tls_mode, port, backend kind)
SERVICES = [
    ("submissions", "smtp", "implicit", 10465, "smtp"),
    ("imaps", "imap", "implicit", 10993, "imap"),
    ("pop3s", "pop3", "implicit", 10995, "pop3"),
    ("submission", "smtp", "starttls", 10587, "smtp"),
    ("imap", "imap", "starttls", 10143, "imap"),
    ("pop3", "pop3", "starttls", 10110, "pop3"),
]


def parse_args():
    p = argparse.ArgumentParser(
        description="Run mailtlsd with demo backends and print client "
                    "commands to try.")
    p.add_argument("--binary", help="mailtlsd binary (default: ./mailtlsd, "
                   "a build dir, or $MAILTLSD_BIN)")
    p.add_argument("--state-dir", default=DEFAULT_STATE,
                   help="certificates and runtime files (default %s)"
                   % DEFAULT_STATE)
    p.add_argument("--port-offset", type=int, default=0,
                   help="add this to every demo port (default 0)")
    p.add_argument("--implicit-only", action="store_true",
                   help="only the implicit TLS services (465/993/995 style)")
    p.add_argument("--check", action="store_true",
                   help="start the backends, run mailtlsd -t on the demo "
                   "configuration, stop, and exit with its status")
    return p.parse_args()


def demo_password(state):
    """A password made on first run and kept, like the certificates."""
    path = os.path.join(state, "demo-password")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(secrets.token_urlsafe(12) + "\n")
        os.chmod(path, 0o600)
    with open(path) as f:
        return f.read().strip()


def welcome_message(user):
    return ("From: mailtlsd demo <demo@example.test>\r\n"
            "To: <%s>\r\n"
            "Subject: Welcome to the mailtlsd demo\r\n"
            "Message-ID: <welcome@mailtlsd.demo>\r\n"
            "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
            "\r\n"
            "This message was fetched through mailtlsd: TLS on the client\r\n"
            "side, plaintext to the Dovecot backend on loopback.\r\n"
            % user.address).encode()


def check_ports_free(ports):
    busy = [p for p in ports if mtlib.port_accepts(p)]
    if busy:
        sys.exit("demo.py: port(s) %s already in use (another demo "
                 "running?); try --port-offset" % ", ".join(map(str, busy)))


def build_config(m, services, backends):
    m.add_tls("demo")
    for name, proto, mode, port, kind in services:
        m.add_service(name, proto, [backends[kind]], tls_mode=mode,
                      port=port)


def print_commands(certs, user, services):
    ca = certs.ca
    name = mtlib.SERVER_NAME
    port = {s[0]: s[3] for s in services}
    rs = lambda p: "--resolve %s:%d:127.0.0.1" % (name, p)
    cred = "%s:%s" % (user.name, user.password)
    lines = [
        "",
        "=" * 72,
        "mailtlsd demo is running.  Demo user: %s  password: %s"
        % (user.name, user.password),
        "CA certificate: %s   (server name %s)" % (ca, name),
        "",
        "# Look at the TLS handshake (type 'a LOGIN %s %s' then "
        "'b LOGOUT'):" % (user.name, user.password),
        "openssl s_client -connect 127.0.0.1:%d -servername %s -CAfile %s "
        "-crlf" % (port["imaps"], name, ca),
        "",
        "# Fetch the welcome message over IMAPS and POP3S:",
        "curl --cacert %s %s --user %s 'imaps://%s:%d/INBOX;UID=1'"
        % (ca, rs(port["imaps"]), cred, name, port["imaps"]),
        "curl --cacert %s %s --user %s 'pop3s://%s:%d/1'"
        % (ca, rs(port["pop3s"]), cred, name, port["pop3s"]),
        "",
        "# Send mail over SMTPS (submissions); it lands in the demo mailbox:",
        "swaks --server 127.0.0.1 --port %d --tlsc --tls-verify "
        "--tls-ca-path %s --tls-sni %s --auth PLAIN --auth-user %s "
        "--auth-password %s --from %s --to %s"
        % (port["submissions"], ca, name, user.name, user.password,
           user.address, user.address),
    ]
    if "submission" in port:
        lines += [
            "",
            "# The same with STARTTLS (mailtlsd does the upgrade itself):",
            "openssl s_client -connect 127.0.0.1:%d -starttls smtp "
            "-servername %s -CAfile %s -crlf" % (port["submission"], name,
                                                 ca),
            "swaks --server 127.0.0.1 --port %d --tls --tls-verify "
            "--tls-ca-path %s --tls-sni %s --auth PLAIN --auth-user %s "
            "--auth-password %s --from %s --to %s"
            % (port["submission"], ca, name, user.name, user.password,
               user.address, user.address),
            "curl --ssl-reqd --cacert %s %s --user %s "
            "'imap://%s:%d/INBOX;UID=1'"
            % (ca, rs(port["imap"]), cred, name, port["imap"]),
            "curl --ssl-reqd --cacert %s %s --user %s 'pop3://%s:%d/1'"
            % (ca, rs(port["pop3"]), cred, name, port["pop3"]),
            "",
            "# In cleartext, credentials are refused and hidden:",
            "curl -v %s --user %s 'imap://%s:%d/INBOX;UID=1'"
            % (rs(port["imap"]), cred, name, port["imap"]),
        ]
    lines += ["", "Ctrl-C stops mailtlsd and the demo backends.",
              "=" * 72, ""]
    print("\n".join(lines), flush=True)


class Stopper:
    """SIGINT, SIGTERM, or SIGHUP (its terminal closed): pass SIGTERM on to
    mailtlsd once, then wait; the demo backends are stopped on the way
    out in every case."""

    def __init__(self):
        self.proc = None
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def run_foreground(m, stopper, services):
    """mailtlsd -d with its log on our terminal; returns its exit status."""
    m.write_config()
    proc = subprocess.Popen([m.binary, "-d", "-c", m.conf],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    stopper.proc = proc
    want = {s[3] for s in services}
    try:
        mtlib.wait_until(lambda: proc.poll() is not None or
                         want <= mtlib.listening_ports(proc.pid), 20,
                         "mailtlsd listening on %s" % sorted(want))
    except mtlib.MtError as e:
        print("demo.py: %s" % e, file=sys.stderr)
        proc.terminate()
    if proc.poll() is None and not stopper.requested:
        print_commands(m.certs, m.demo_user, services)
    while proc.poll() is None:
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            continue
    # mailtlsd drains sessions for shutdown_timeout (5 s here) at most.
    return proc.returncode


def say(text):
    """Print, unless the terminal is gone (SIGHUP): cleanup must go on."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("demo.py: run as root (it starts private Dovecot and "
                 "Postfix instances)")
    binary = mtlib.find_binary(args.binary, TOP)
    if not binary:
        sys.exit("demo.py: no mailtlsd binary found; build it first or "
                 "pass --binary")
    state = os.path.abspath(args.state_dir)
    os.makedirs(state, exist_ok=True)
    os.chmod(state, 0o755)
    services = [s[:3] + (s[3] + args.port_offset,) + s[4:]
                for s in SERVICES
                if not (args.implicit_only and s[2] == "starttls")]
    check_ports_free([s[3] for s in services])

    certs = mtlib.Certs(os.path.join(state, "certs"))
    run_dir = os.path.join(state, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    os.chmod(run_dir, 0o755)

    stopper = Stopper()
    dovecot = mtlib.Dovecot(run_dir)
    postfix = None
    status = 1
    try:
        user = dovecot.add_user(USER, demo_password(state))
        user.deliver(welcome_message(user))
        dovecot.start()
        postfix = mtlib.Postfix(run_dir, dovecot, user)
        postfix.start()
        backends = {"smtp": postfix.port, "imap": dovecot.imap_port,
                    "pop3": dovecot.pop3_port}
        m = mtlib.MailTLSD(run_dir, certs, binary=binary, name="mailtlsd",
                           log_level="info", shutdown_timeout=5)
        m.demo_user = user
        build_config(m, services, backends)
        # The configuration is kept at a stable path for reading/editing.
        m.conf = os.path.join(state, "mailtlsd.conf")
        print("demo.py: backends up (Postfix 127.0.0.1:%d, Dovecot IMAP "
              "127.0.0.1:%d, POP3 127.0.0.1:%d); configuration %s"
              % (postfix.port, dovecot.imap_port, dovecot.pop3_port, m.conf),
              flush=True)
        if args.check:
            m.write_config()
            status = subprocess.call([binary, "-t", "-c", m.conf])
        elif not stopper.requested:
            status = run_foreground(m, stopper, services)
    finally:
        say("demo.py: stopping the demo backends")
        if postfix is not None:
            postfix.stop()
        dovecot.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
