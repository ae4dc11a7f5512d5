"""
legacy_util - legacy backends of the functional suite: Exim 4.96 (SMTP)
and Courier-IMAP/POP3 with courier-authlib, from Debian 12's packages.

Owns: the check that their files are there, a private Exim daemon
delivering into Maildirs the tests read, a private Courier (authdaemond
with a userdb of its own, imaplogin/imapd and pop3login/pop3d spawned
once per connection like inetd would), and the facades that let one test
body run against Postfix or Exim, Dovecot or Courier.

Where the files come from: tools/install-deps.sh unpacks the .debs
(`apt-get download` + `dpkg-deb -x`, not installed as packages since they
conflict with Postfix and Dovecot) into $MAILTLSD_LEGACY_ROOT (default
/opt/mailtlsd-legacy), installs their libraries, and creates the system
user Debian-exim that Exim's binary insists on.

Courier has its configuration and socket paths compiled in (/etc/courier,
/run/courier/authdaemon/socket).  So that a test run never touches the
machine's own files there, the Courier processes run in a mount namespace
of their own (unshare(1)) in which private directories are bind-mounted
over those two paths; the supervisor of that namespace is this file run
as a script ("serve-courier").  Exim takes its whole configuration from a
private file (-C); since Exim drops root for a -C file it does not trust,
it delivers as Debian-exim.

Invariants (as in mtlib): every wait is bounded and polls; every process
is started here and stopped by its own PID; every file lives under the
caller's work directory.
"""

import json
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import time

import mtlib
from mtlib import HOST, MAIL_DOMAIN, MtError

LEGACY_ROOT = os.environ.get("MAILTLSD_LEGACY_ROOT", "/opt/mailtlsd-legacy")

EXIM_BIN = "usr/sbin/exim4"
AUTHDAEMOND = "usr/lib/courier/courier-authlib/authdaemond"
MAKEDAT = "usr/lib/courier/courier-authlib/makedatprog"
IMAPLOGIN = "usr/lib/courier/courier/imaplogin"
IMAPD = "usr/bin/imapd"
POP3LOGIN = "usr/lib/courier/courier/courierpop3login"
POP3D = "usr/lib/courier/courier/courierpop3d"
# Compiled into courier-authlib and courier-imap (Debian 12).
COURIER_ETC = "/etc/courier"
COURIER_RUN = "/run/courier"


def _root(rel, root=None):
    return os.path.join(root or LEGACY_ROOT, rel)


def missing(root=None):
    """Why the legacy backends cannot run here ([] when they can)."""
    out = []
    for rel in (EXIM_BIN, AUTHDAEMOND, MAKEDAT, IMAPLOGIN, IMAPD, POP3LOGIN,
                POP3D):
        if not os.access(_root(rel, root), os.X_OK):
            out.append("%s missing" % _root(rel, root))
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError:
        out.append("system user Debian-exim missing")
    for tool in ("unshare", "mount"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin")):
            out.append("%s(1) missing" % tool)
    if out:
        out.append("run tools/install-deps.sh as root")
    return out


def _lib_env(root=None):
    return {"LD_LIBRARY_PATH": _root("usr/lib", root),
            "LTDL_LIBRARY_PATH": _root("usr/lib/courier-authlib", root)}


# ---------------------------------------------------------------------------
# Exim 4.96

_EXIM_CONF = """\
# Written by legacy_util: a private Exim 4.96 behind mailtlsd.  No TLS (the
# proxy does it), no DNS, every local part in {dir}/passwd delivered into
# {dir}/home/LOCALPART/Maildir exactly as received (CRLF lines, no added
# headers), so that tests can compare bytes.
primary_hostname = exim.{domain}
qualify_domain = {domain}
exim_path = {exim}
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
# Everything Exim can say about a session: protocol and syntax errors
# (unknown commands with their text), AUTH results, connections.
log_selector = +all -subject -arguments
keep_environment =
host_lookup =
rfc1413_hosts =
local_interfaces = {host}
never_users = root
deliver_drop_privilege = true
tls_advertise_hosts =
auth_advertise_hosts = *
chunking_advertise_hosts = *
message_size_limit = 200M
smtp_accept_max = 200
smtp_accept_max_per_host = 200
smtp_accept_queue_per_connection = 0
received_header_text =
domainlist local_domains = {domain}
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
smtp_banner = $smtp_active_hostname ESMTP Exim $version_number legacy backend

begin acl
acl_rcpt:
  accept domains = +local_domains
         local_parts = lsearch;{dir}/passwd
  deny   message = relay not permitted

acl_data:
  accept

begin routers
maildir_user:
  driver = accept
  domains = +local_domains
  # dsearch: $local_part_data is the directory's own name, untainted.
  local_parts = dsearch;{dir}/home
  transport = maildir_delivery

begin transports
maildir_delivery:
  driver = appendfile
  directory = {dir}/home/$local_part_data/Maildir
  maildir_format = true
  user = Debian-exim
  group = Debian-exim
  mode = 0600
  use_crlf = true
  envelope_to_add = false
  return_path_add = false
  delivery_date_add = false

begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${{if eq{{$auth3}}{{${{lookup{{$auth2}}lsearch{{{dir}/passwd}}}}}}}}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = ${{if eq{{$auth2}}{{${{lookup{{$auth1}}lsearch{{{dir}/passwd}}}}}}}}
  server_set_id = $auth1
"""


class Exim:
    """exim4 -bdf (a foreground daemon) on a free loopback port."""

    kind = "exim"

    def __init__(self, workdir, port=None, subdir="exim", root=None):
        self.root = root or LEGACY_ROOT
        self.dir = os.path.join(workdir, subdir)
        self.port = port or mtlib.free_port()
        self.conf = os.path.join(self.dir, "exim.conf")
        self.logdir = os.path.join(self.dir, "log")
        self.log = os.path.join(self.logdir, "mainlog")
        self.passwd = os.path.join(self.dir, "passwd")
        self.homes = os.path.join(self.dir, "home")
        pw = pwd.getpwnam("Debian-exim")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        for d in (self.dir, self.homes):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        for d in ("spool", "log"):
            p = os.path.join(self.dir, d)
            os.makedirs(p, exist_ok=True)
            os.chown(p, self.uid, self.gid)
            os.chmod(p, 0o750)
        open(self.passwd, "a").close()
        os.chmod(self.passwd, 0o644)
        self.users = {}
        self.proc = None
        self.name = "exim-%d" % self.port

    def add_user(self, name=None, password=None):
        """A local part Exim accepts and delivers into a Maildir of its own,
        and may authenticate (AUTH PLAIN/LOGIN) with password."""
        name = name or "u" + os.urandom(5).hex()
        password = password or "pw-" + os.urandom(6).hex()
        user = mtlib.MailUser(name, password, os.path.join(self.homes, name),
                              self.uid, self.gid)
        user.create()
        with open(self.passwd, "a") as f:
            f.write("%s: %s\n" % (name, password))
        self.users[name] = user
        return user

    def start(self, timeout=30.0):
        with open(self.conf, "w") as f:
            f.write(_EXIM_CONF.format(dir=self.dir, domain=MAIL_DOMAIN,
                                      host=HOST,
                                      exim=_root(EXIM_BIN, self.root)))
        mtlib.run([_root(EXIM_BIN, self.root), "-C", self.conf, "-bV"],
                  timeout=30)
        self.proc = mtlib.Process(
            self.name, [_root(EXIM_BIN, self.root), "-C", self.conf, "-bdf",
                        "-oX", str(self.port),
                        "-oP", os.path.join(self.dir, "exim.pid")],
            os.path.join(self.dir, "exim.stderr"))
        mtlib.register_log(self.name + ".mainlog", self.log)
        self.proc.start()
        try:
            mtlib.wait_until(self._ready, timeout, "exim greeting",
                             interval=0.1)
        except MtError:
            self.stop()
            raise MtError("exim did not start:\n" + mtlib.tail(self.log) +
                          "\n" + mtlib.tail(self.proc.log_path) + "\n" +
                          mtlib.tail(os.path.join(self.logdir, "paniclog")))
        return self

    def _ready(self):
        if not self.proc.alive():
            raise MtError("exim exited during start")
        return mtlib.smtp_greets(self.port)

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=10)
        mtlib.unregister_log(self.name + ".mainlog")


# ---------------------------------------------------------------------------
# Courier-IMAP / Courier POP3 with courier-authlib's authdaemond

_AUTHDAEMONRC = """\
# Written by legacy_util (bind-mounted over /etc/courier in a private
# mount namespace).
authmodulelist="authuserdb"
authmodulelistorig="authuserdb"
daemons=2
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=1
DEFAULTOPTIONS=""
LOGGEROPTS=""
"""

# Debian's /etc/courier/imapd capabilities, with AUTH=PLAIN as a plaintext
# backend behind a TLS proxy offers it; STARTTLS is the proxy's business.
IMAP_ENV = {
    "IMAP_CAPABILITY": "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE "
                       "THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA "
                       "AUTH=PLAIN IDLE",
    "IMAP_KEYWORDS": "1",
    "IMAP_ACL": "1",
    "IMAP_PROXY": "0",
    "IMAP_IDLE_TIMEOUT": "60",
    "IMAP_MAILBOX_SANITY_CHECK": "1",
    "IMAP_DISABLETHREADSORT": "0",
    "IMAP_CHECK_ALL_FOLDERS": "0",
    "IMAP_OBSOLETE_CLIENT": "0",
    "IMAP_UMASK": "022",
    "IMAP_USELOCKS": "1",
    "IMAP_ENHANCEDIDLE": "0",
    "IMAP_STARTTLS": "NO",
    "IMAP_TLS_REQUIRED": "0",
}
POP3_ENV = {
    "POP3AUTH": "PLAIN LOGIN",
    "POP3_PROXY": "0",
    "POP3_STARTTLS": "NO",
    "POP3_TLS_REQUIRED": "0",
}


class CourierUser(mtlib.MailUser):
    """A Courier account: its Maildir files hold Unix (LF) text, which
    Courier serves with CRLF line ends, so a message delivered here is
    read back as the CRLF bytes the test wrote."""

    def deliver(self, content, seen=False):
        assert b"\r\n" in content and b"\n" not in content.replace(
            b"\r\n", b""), "CRLF text only"
        return super().deliver(content.replace(b"\r\n", b"\n"), seen)


# What the IMAP/POP3 backends say differently, for tests run against each:
# the log line that ends a session that never logged in, and LOGOUT's OK.
MDA_DIALECT = {
    "dovecot": {"no_login_end": r"no auth attempts",
                "logout_ok": b" OK Logout completed.\r\n"},
    "courier": {"no_login_end": r"INFO: LOGOUT, ip=|DEBUG: Disconnected, ip=",
                "logout_ok": b" OK LOGOUT completed\r\n"},
}


def mda_kind(backend):
    return getattr(backend, "kind", "dovecot")


class Courier:
    """authdaemond plus IMAP and POP3 listeners in a mount namespace."""

    kind = "courier"

    def __init__(self, workdir, imap_port=None, pop3_port=None,
                 subdir="courier", root=None):
        self.root = root or LEGACY_ROOT
        self.dir = os.path.join(workdir, subdir)
        self.etc = os.path.join(self.dir, "etc")
        self.run = os.path.join(self.dir, "run")
        self.homes = os.path.join(self.dir, "home")
        for d in (self.dir, self.etc, self.run, self.homes,
                  os.path.join(self.run, "authdaemon")):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        self.imap_port = imap_port or mtlib.free_port()
        self.pop3_port = pop3_port or mtlib.free_port()
        # authdaemond, and every imaplogin/pop3login (DEBUG_LOGIN=1: each
        # command before login, each LOGIN and its result).
        self.log = os.path.join(self.dir, "courier.log")
        pw = pwd.getpwnam("mail")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.users = {}
        self.proc = None
        self.name = "courier-%d" % self.imap_port

    @property
    def auth_socket(self):
        return os.path.join(self.run, "authdaemon", "socket")

    def add_user(self, name=None, password=None):
        """A userdb account with a Maildir owned by `mail`; usable at once
        (authuserdb opens the database for every request)."""
        name = name or "u" + os.urandom(5).hex()
        password = password or "pw-" + os.urandom(6).hex()
        user = CourierUser(name, password, os.path.join(self.homes, name),
                           self.uid, self.gid)
        user.create()
        self.users[name] = user
        self._write_userdb()
        return user

    def _write_userdb(self):
        """userdb.dat and userdbshadow.dat as makeuserdb(8) builds them."""
        plain, shadow = [], []
        for u in self.users.values():
            crypted = mtlib.run(["openssl", "passwd", "-6", "-stdin"],
                                input=u.password.encode()).stdout
            plain.append("%s\tuid=%d|gid=%d|home=%s|mail=%s|_=\n"
                         % (u.name, u.uid, u.gid, u.home, u.maildir))
            shadow.append("%s\tsystempw=%s\n"
                          % (u.name, crypted.decode().strip()))
        env = dict(os.environ, **_lib_env(self.root))
        for base, lines in (("userdb", plain), ("userdbshadow", shadow)):
            p = subprocess.run(
                [_root(MAKEDAT, self.root), "-",
                 os.path.join(self.etc, base + ".tmp"),
                 os.path.join(self.etc, base + ".dat")],
                input=("".join(lines) + "\n.\n").encode(), env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            if p.returncode != 0:
                raise MtError("makedatprog %s: %s" % (base, p.stdout))
        os.chmod(os.path.join(self.etc, "userdbshadow.dat"), 0o600)

    def start(self, timeout=30.0):
        with open(os.path.join(self.etc, "authdaemonrc"), "w") as f:
            f.write(_AUTHDAEMONRC)
        if not os.path.exists(os.path.join(self.etc, "userdb.dat")):
            self._write_userdb()
        # Mount points for the private directories (empty; install-deps.sh
        # makes them too, /run is a tmpfs).
        for d in (COURIER_ETC, COURIER_RUN):
            os.makedirs(d, exist_ok=True)
        cfg = os.path.join(self.dir, "supervisor.json")
        with open(cfg, "w") as f:
            json.dump({"root": self.root, "etc": self.etc, "run": self.run,
                       "log": self.log, "imap_port": self.imap_port,
                       "pop3_port": self.pop3_port}, f)
        self.proc = mtlib.Process(
            self.name, ["unshare", "--mount", "--propagation", "private",
                        sys.executable, os.path.abspath(__file__),
                        "serve-courier", cfg],
            os.path.join(self.dir, "supervisor.log"))
        mtlib.register_log(self.name + ".log", self.log)
        self.proc.start()
        try:
            mtlib.wait_until(lambda: os.path.exists(self.auth_socket),
                             timeout, "authdaemond socket")
            for port in (self.imap_port, self.pop3_port):
                mtlib.wait_port(port, timeout, "courier port %d" % port,
                                self.proc.alive)
        except MtError:
            self.stop()
            raise MtError("courier did not start:\n" +
                          mtlib.tail(self.proc.log_path) + "\n" +
                          mtlib.tail(self.log))
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=15)
        mtlib.unregister_log(self.name + ".log")


def _serve_courier(cfg_path):
    """The supervisor, inside its own mount namespace (run by unshare).

    Binds the private etc/run over Courier's compiled-in paths, runs
    authdaemond, and serves IMAP and POP3 by spawning the login program
    once per connection with the socket as stdin/stdout (as couriertcpd
    or inetd would, with couriertcpd's TCPREMOTEIP/TCPREMOTEPORT).  Every
    child is tracked by PID; SIGTERM (or the test runner's death) stops
    them all.
    """
    with open(cfg_path) as f:
        cfg = json.load(f)
    root = cfg["root"]
    # Die with the test runner that started us.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    for src, dst in ((cfg["etc"], COURIER_ETC), (cfg["run"], COURIER_RUN)):
        subprocess.run(["mount", "--bind", src, dst], check=True, timeout=30)
    log = open(cfg["log"], "ab", buffering=0)
    base_env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                "DEBUG_LOGIN": "1"}
    base_env.update(_lib_env(root))
    children = {}
    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    auth = subprocess.Popen([_root(AUTHDAEMOND, root)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, env=base_env)
    children[auth.pid] = auth

    listeners = {}
    for key, argv, extra in (
            ("imap_port", [_root(IMAPLOGIN, root), _root(IMAPD, root),
                           "Maildir"], IMAP_ENV),
            ("pop3_port", [_root(POP3LOGIN, root), _root(POP3D, root),
                           "Maildir"], POP3_ENV)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, cfg[key]))
        s.listen(64)
        env = dict(base_env, **extra)
        listeners[s.fileno()] = (s, argv, env, cfg[key])
    print("serving imap %d pop3 %d, authdaemond %d"
          % (cfg["imap_port"], cfg["pop3_port"], auth.pid), flush=True)

    while not stopping:
        try:
            ready, _, _ = select.select(list(listeners), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in ready:
            s, argv, env, port = listeners[fd]
            try:
                conn, peer = s.accept()
            except OSError:
                continue
            cenv = dict(env, TCPREMOTEIP=peer[0], TCPREMOTEPORT=str(peer[1]),
                        TCPLOCALIP=HOST, TCPLOCALPORT=str(port), PROTO="TCP")
            try:
                p = subprocess.Popen(argv, stdin=conn, stdout=conn,
                                     stderr=log, env=cenv)
                children[p.pid] = p
            finally:
                conn.close()
        for pid, p in list(children.items()):
            if p is not auth and p.poll() is not None:
                del children[pid]
        if auth.poll() is not None:
            print("authdaemond exited with %s" % auth.returncode, flush=True)
            break
    for s, _, _, _ in listeners.values():
        s.close()
    for p in children.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in children.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return 0


# ---------------------------------------------------------------------------
# Facades: one test body, several real backends

class MtaView:
    """An SMTP backend as the tests see it: Postfix or Exim.

    port, user (a MailUser the backend delivers to and authenticates),
    log (the backend's own log file), kind, and the few replies in which
    the two differ.
    """

    # Reply prefixes (whole replies where they end in CRLF); "chunk" takes
    # the chunk's size, "last_chunk" is a regex taking the message's.
    REPLIES = {
        "postfix": {"auth_ok": b"235 2.7.0 Authentication successful",
                    "auth_bad": b"535 5.7.8 Error: authentication failed",
                    "auth_cancelled": b"501 5.7.0",
                    "need_mail": b"503 5.5.1 Error: need MAIL command\r\n",
                    "mail_ok": b"250 2.1.0",
                    "rcpt_ok": b"250 2.1.5",
                    "queued": b"250 2.0.0 Ok: queued",
                    "chunk": b"250 2.0.0 Ok: %d bytes\r\n",
                    "last_chunk": rb"250 2\.0\.0 Ok: %d bytes queued as"},
        # Exim counts a BDAT LAST's total oddly (one more than it got), so
        # the total is not checked (the size sits in a regex comment); the
        # stored message is, byte for byte.
        "exim": {"auth_ok": b"235 Authentication succeeded",
                 "auth_bad": b"535 Incorrect authentication data",
                 "auth_cancelled": b"501 Authentication cancelled",
                 "need_mail": b"503 sender not yet given\r\n",
                 "mail_ok": b"250 OK\r\n",
                 "rcpt_ok": b"250 Accepted\r\n",
                 "queued": b"250 OK id=",
                 "chunk": b"250 %d byte chunk received\r\n",
                 "last_chunk": rb"250- 0 byte chunk, total \d+\r\n"
                               rb"250 OK id=(?#%d)"},
    }

    def __init__(self, kind, port, user, log):
        self.kind = kind
        self.port = port
        self.user = user
        self.log = log
        self.replies = self.REPLIES[kind]

    def authenticated_in_log(self, text, user):
        """Did the backend log a successful authentication of user?"""
        if self.kind == "postfix":
            return "sasl_username=%s" % user in text
        return "A=plain:%s" % user in text or "A=login:%s" % user in text

    def assert_arrived(self, delivered, sent):
        """The message as stored equals the message as sent: Exim stores
        it byte for byte; Postfix's virtual(8) stores LF lines and adds
        Return-Path and Received, so there the body and every header sent
        are compared."""
        if self.kind == "exim":
            assert delivered == sent
            return
        from test_implicit_tls import assert_delivered
        assert_delivered(delivered, sent)

    def __repr__(self):
        return "<%s on %d>" % (self.kind, self.port)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-courier":
        sys.exit(_serve_courier(sys.argv[2]))
    sys.exit("usage: legacy_util.py serve-courier CONFIG.json")
