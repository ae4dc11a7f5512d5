"""
mtlib - the parties of mailtlsd's functional tests, and of tools/demo.py.

Owns: loopback port allocation, a throwaway PKI made with the openssl CLI,
private Dovecot and Postfix instances (plaintext backends, as mailtlsd
expects them), an aiosmtpd backend that records the exact bytes it gets, a
scripted line backend that advertises STARTTLS/STLS/AUTH so that rewriting
can be observed, and a runner for the mailtlsd binary itself.

Invariants: every wait is bounded and polls for a condition (never a bare
sleep as a substitute for readiness); every process is started here and
stopped here by its own PID; every file lives under the work directory the
caller passes in.  Each live party registers its log so that a failing test
can print the tail of all of them (dump_logs).
"""

import asyncio
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

HOST = "127.0.0.1"
DEFAULT_BINARY = "/tmp/mt-build/mailtlsd"
MAIL_DOMAIN = "example.test"
SERVER_NAME = "mail.example.test"
OTHER_NAME = "other.example.test"


class MtError(Exception):
    """A party failed to start, stop or answer in time."""


# ---------------------------------------------------------------------------
# Waiting, ports, logs.

def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise MtError("timed out after %.1fs waiting for %s"
                          % (timeout, what))
        time.sleep(interval)


_handed_out = set()
_port_lock = threading.Lock()


def free_port():
    """A loopback TCP port that nothing listens on, never handed out twice."""
    with _port_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise MtError("no free loopback port found")


def listen(port, backlog=64):
    """A loopback listening socket whose accept() times out every 0.2 s,
    so that an accept loop notices when it is told to stop."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    s.listen(backlog)
    s.settimeout(0.2)
    return s


def port_accepts(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def smtp_greets(port):
    """True once an SMTP server on port answers with its 220 greeting."""
    try:
        with socket.create_connection((HOST, port), 2) as s:
            s.settimeout(5)
            greeting = s.recv(512)
            s.sendall(b"QUIT\r\n")
            return greeting.startswith(b"220 ")
    except OSError:
        return False


def wait_port(port, timeout=15.0, what=None, alive=None):
    """Wait until port accepts; alive() returning False aborts early."""
    def ready():
        if alive is not None and not alive():
            raise MtError("%s exited while waiting for port %d"
                          % (what or "process", port))
        return port_accepts(port)
    wait_until(ready, timeout, what or "port %d" % port)


_live_logs = {}
_logs_lock = threading.Lock()


def register_log(name, path):
    """path: a log file, or a callable returning text (e.g. a dialogue)."""
    with _logs_lock:
        _live_logs[name] = path


def unregister_log(name):
    with _logs_lock:
        _live_logs.pop(name, None)


def tail(path, lines=60, limit=20000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class LogMark:
    """What a log file gained since this object was made (a file that does
    not exist yet gains everything)."""

    def __init__(self, path):
        self.path = path
        try:
            self.offset = os.path.getsize(path)
        except OSError:
            self.offset = 0

    def text(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def dump_logs(lines=60):
    """The tail of every live party's log, for a failure report."""
    with _logs_lock:
        items = sorted(_live_logs.items())
    out = []
    for name, path in items:
        if callable(path):
            out.append("----- %s -----" % name)
            try:
                out.append(path())
            except Exception as e:  # a report must not hide the failure
                out.append("(cannot describe: %r)" % e)
            continue
        out.append("----- %s (%s) -----" % (name, path))
        out.append(tail(path, lines))
    return "\n".join(out)


def run(cmd, timeout=60, check=True, **kw):
    """Run a short command with a deadline; raise with its output on error."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise MtError("%s exited %d:\n%s" % (" ".join(cmd), p.returncode,
                                             p.stdout.decode(errors="replace")))
    return p


def make_workdir(parent=None, prefix="mt-"):
    """A temp dir that the backends' unprivileged users can traverse."""
    import tempfile
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(d, 0o755)
    return d


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Process:
    """A child started by us, its output in a log file, stopped by PID."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc = None
        self._env = env
        self._cwd = cwd

    def start(self):
        logf = open(self.log_path, "ab")
        try:
            # A session of its own: a Ctrl-C meant for the test runner or the
            # demo does not reach the backends before we stop them in order.
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, env=self._env, cwd=self._cwd,
                start_new_session=True)
        finally:
            logf.close()
        register_log(self.name, self.log_path)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal, wait up to timeout, then SIGKILL; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        unregister_log(self.name)
        return self.proc.returncode


# ---------------------------------------------------------------------------
# Certificates: a test CA, RSA and ECDSA server certificates for
# mail.example.test, one for other.example.test (SNI), client certificates.

_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature{ku}
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


def copy_key(src, dst):
    """Copy a private key keeping it readable by the daemon's group only."""
    shutil.copy(src, dst)
    os.chown(dst, 0, grp.getgrnam("nogroup").gr_gid)
    os.chmod(dst, 0o640)


class Certs:
    """Made on first use in directory, reused when already there (demo)."""

    NAMES = ("rsa", "ecdsa", "other", "client")

    def __init__(self, directory, days=365):
        self.dir = directory
        self.days = days
        os.makedirs(directory, exist_ok=True)
        p = lambda n: os.path.join(directory, n)
        self.ca = p("ca.pem")
        self.ca_key = p("ca.key")
        for n in self.NAMES + ("selfsigned",):
            setattr(self, n + "_cert", p(n + ".pem"))
            setattr(self, n + "_key", p(n + ".key"))
            setattr(self, n + "_chain", p(n + "-chain.pem"))
        if not self._complete():
            self._generate()

    def _complete(self):
        files = [self.ca, self.ca_key, self.selfsigned_cert]
        for n in self.NAMES:
            files += [getattr(self, n + "_chain"), getattr(self, n + "_key")]
        return all(os.path.exists(f) for f in files)

    def _openssl(self, *args):
        run(["openssl"] + list(args), timeout=60, cwd=self.dir)

    def _key(self, path, kind):
        if kind == "rsa":
            self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                          "rsa_keygen_bits:2048", "-out", path)
        else:
            self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-out", path)
        # Readable by the group the daemon drops to, so that a reload
        # after the privilege drop can read it (Debian's ssl-cert habit).
        os.chown(path, 0, grp.getgrnam("nogroup").gr_gid)
        os.chmod(path, 0o640)

    def _leaf(self, name, kind, cn, san, eku):
        key, cert = getattr(self, name + "_key"), getattr(self, name + "_cert")
        self._key(key, kind)
        ext = os.path.join(self.dir, name + ".ext")
        ku = ", keyEncipherment" if kind == "rsa" else ""
        with open(ext, "w") as f:
            f.write(_LEAF_EXT.format(ku=ku, eku=eku, san=san))
        csr = os.path.join(self.dir, name + ".csr")
        self._openssl("req", "-new", "-key", key, "-subj", "/CN=" + cn,
                      "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca,
                      "-CAkey", self.ca_key, "-set_serial",
                      str(int.from_bytes(os.urandom(8), "big")),
                      "-days", str(self.days), "-sha256",
                      "-extfile", ext, "-out", cert)
        # mailtlsd wants the leaf, then its chain, in one file.
        with open(getattr(self, name + "_chain"), "wb") as out:
            for part in (cert, self.ca):
                with open(part, "rb") as f:
                    out.write(f.read())
        os.unlink(csr)

    def _generate(self):
        self._key(self.ca_key, "rsa")
        self._openssl("req", "-x509", "-new", "-key", self.ca_key,
                      "-subj", "/CN=mailtlsd test CA", "-days",
                      str(self.days + 1), "-sha256",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      "-out", self.ca)
        server_san = "DNS:%s, DNS:localhost, IP:127.0.0.1" % SERVER_NAME
        self._leaf("rsa", "rsa", SERVER_NAME, server_san, "serverAuth")
        self._leaf("ecdsa", "ec", SERVER_NAME, server_san, "serverAuth")
        self._leaf("other", "ec", OTHER_NAME, "DNS:" + OTHER_NAME,
                   "serverAuth")
        self._leaf("client", "ec", "client.example.test",
                   "DNS:client.example.test", "clientAuth")
        # A client certificate no CA vouches for ("Untrusted" in the log).
        self._key(self.selfsigned_key, "ec")
        self._openssl("req", "-x509", "-new", "-key", self.selfsigned_key,
                      "-subj", "/CN=stranger.example.test", "-days",
                      str(self.days), "-out", self.selfsigned_cert)

    def client_context(self, cert=None, key=None, **kw):
        """A verifying client context trusting the test CA."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


# ---------------------------------------------------------------------------
# Dovecot: a private plaintext IMAP/POP3 backend.

_DOVECOT_CONF = """\
# Written by mtlib: a private, plaintext-only instance for tests.
instance_name = {instance}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
debug_log_path = {dir}/dovecot.log
listen = 127.0.0.1
ssl = no
protocols = imap pop3
first_valid_uid = 1
first_valid_gid = 1
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
login_greeting = Dovecot test backend ready.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users/%n
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"""

# Listeners behind a PROXY-sending front end (mailtlsd's send_proxy): the
# client's address and TLS state come from the header.  Sections with the
# same name merge with those above.
_DOVECOT_HAPROXY = """\
haproxy_trusted_networks = 127.0.0.0/8
service imap-login {{
  inet_listener imap_haproxy {{
    address = 127.0.0.1
    port = {imap_port}
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3_haproxy {{
    address = 127.0.0.1
    port = {pop3_port}
    haproxy = yes
  }}
}}
"""

# A Dovecot with TLS of its own (Dovecot.tls): what mailtlsd's client mode
# talks to.  Plaintext authentication stays allowed on the plain ports, so
# that a test can tell a session that really went through TLS (the log's
# "TLS" marks) from one that did not.
_DOVECOT_TLS = """\
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
service imap-login {{
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
    ssl = yes
  }}
}}
"""


class MailUser:
    """A Dovecot user with a Maildir owned by the `mail` user."""

    def __init__(self, name, password, home, uid, gid):
        self.name = name
        self.password = password
        self.home = home
        self.maildir = os.path.join(home, "Maildir")
        self.uid = uid
        self.gid = gid
        self.address = "%s@%s" % (name, MAIL_DOMAIN)
        self._seq = 0

    def create(self):
        for sub in ("", "cur", "new", "tmp"):
            os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
        for root, dirs, _ in os.walk(self.home):
            os.chown(root, self.uid, self.gid)
            os.chmod(root, 0o700)

    def deliver(self, content, seen=False):
        """Store content (bytes, CRLF lines) as the newest message.

        The file is hard-linkable (the slow-reader test links one big file
        several times) and named with S= so Dovecot needs no size scan.
        """
        self._seq += 1
        base = "%d.M%dP%dQ%d.mtlib,S=%d" % (time.time(), self._seq,
                                            os.getpid(), self._seq,
                                            len(content))
        tmp = os.path.join(self.maildir, "tmp", base)
        with open(tmp, "wb") as f:
            f.write(content)
        os.chown(tmp, self.uid, self.gid)
        if seen:
            dst = os.path.join(self.maildir, "cur", base + ":2,S")
        else:
            dst = os.path.join(self.maildir, "new", base)
        os.rename(tmp, dst)
        return dst

    def link_copy(self, path):
        """Another message with the same file (a hard link)."""
        self._seq += 1
        size = os.path.getsize(path)
        base = "%d.M%dP%dQ%d.mtlib,S=%d" % (time.time(), self._seq,
                                            os.getpid(), self._seq, size)
        dst = os.path.join(self.maildir, "new", base)
        os.link(path, dst)
        return dst

    def messages(self):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for n in sorted(os.listdir(d)):
                out.append(os.path.join(d, n))
        return out

    def find(self, token, timeout=30.0):
        """Wait for a delivered message containing token; return its bytes."""
        if isinstance(token, str):
            token = token.encode()

        def look():
            for path in self.messages():
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except FileNotFoundError:  # moved new/ -> cur/ meanwhile
                    continue
                if token in data:
                    return data
            return None
        return wait_until(look, timeout, "message %r in %s"
                          % (token, self.maildir), interval=0.1)


class Dovecot:
    def __init__(self, workdir, imap_port=None, pop3_port=None,
                 extra_conf="", subdir="dovecot", haproxy=False, tls=None):
        """extra_conf: dovecot.conf lines appended (later settings win).
        haproxy: also an IMAP and a POP3 listener that expect a PROXY
        header (haproxy = yes) from loopback (imap_haproxy_port,
        pop3_haproxy_port).
        tls: (certificate chain, key): ssl = yes, so STARTTLS/STLS on the
        plain ports, and implicit TLS on imaps_port and pop3s_port (the
        server side of mailtlsd's client mode, SPEC 12)."""
        self.tls = tls
        self.imaps_port = free_port() if tls else None
        self.pop3s_port = free_port() if tls else None
        if tls:
            extra_conf = _DOVECOT_TLS.format(
                cert=tls[0], key=tls[1], imaps_port=self.imaps_port,
                pop3s_port=self.pop3s_port) + extra_conf
        self.extra_conf = extra_conf
        self.haproxy = haproxy
        self.imap_haproxy_port = free_port() if haproxy else None
        self.pop3_haproxy_port = free_port() if haproxy else None
        self.dir = os.path.join(workdir, subdir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.imap_port = imap_port or free_port()
        self.pop3_port = pop3_port or free_port()
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log = os.path.join(self.dir, "dovecot.log")
        self.users_dir = os.path.join(self.dir, "users")
        os.makedirs(self.users_dir, exist_ok=True)
        self.homes = os.path.join(self.dir, "home")
        os.makedirs(self.homes, exist_ok=True)
        os.chmod(self.homes, 0o755)
        self.instance = "mt%d-%s" % (os.getpid(), os.urandom(4).hex())
        pw = pwd.getpwnam("mail")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.users = {}
        self.proc = None
        self.name = "dovecot-" + self.instance

    @property
    def auth_socket(self):
        return os.path.join(self.dir, "run", "auth-client")

    def add_user(self, name=None, password=None):
        """A fresh user (and mailbox); Dovecot re-reads the passwd-file."""
        name = name or "u" + os.urandom(5).hex()
        if not re.match(r"^[a-z][a-z0-9]*$", name):
            raise ValueError("user name %r: lower-case letters and digits"
                             % name)
        password = password or "pw-" + os.urandom(6).hex()
        home = os.path.join(self.homes, name)
        user = MailUser(name, password, home, self.uid, self.gid)
        user.create()
        line = "%s:{PLAIN}%s:%d:%d::%s::\n" % (name, password, self.uid,
                                                self.gid, home)
        # One passwd-file per user (the path has %n in it): Dovecot opens a
        # new user's file on first use, so users can be added while it runs
        # without relying on its change detection of a shared file.
        with open(os.path.join(self.users_dir, name), "w") as f:
            f.write(line)
        self.users[name] = user
        return user

    def start(self, timeout=20.0):
        with open(self.conf, "w") as f:
            f.write(_DOVECOT_CONF.format(instance=self.instance, dir=self.dir,
                                         imap_port=self.imap_port,
                                         pop3_port=self.pop3_port))
            if self.haproxy:
                f.write(_DOVECOT_HAPROXY.format(
                    imap_port=self.imap_haproxy_port,
                    pop3_port=self.pop3_haproxy_port))
            f.write(self.extra_conf)
        # Dovecot runs as root here; its processes read the file as root.
        self.proc = Process(self.name, ["dovecot", "-F", "-c", self.conf],
                            os.path.join(self.dir, "dovecot.stderr"))
        register_log(self.name + ".log", self.log)
        self.proc.start()
        try:
            for port in (self.imap_port, self.pop3_port,
                         self.imap_haproxy_port, self.pop3_haproxy_port,
                         self.imaps_port, self.pop3s_port):
                if port is None:
                    continue
                wait_port(port, timeout, "dovecot port %d" % port,
                          self.proc.alive)
            wait_until(lambda: os.path.exists(self.auth_socket), timeout,
                       "dovecot auth-client socket")
        except MtError:
            self.stop()
            raise MtError("dovecot did not start:\n" + tail(self.log) +
                          "\n" + tail(self.proc.log_path))
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=15)
        unregister_log(self.name + ".log")


# ---------------------------------------------------------------------------
# Postfix: a private plaintext SMTP backend delivering into a Dovecot user's
# Maildir, with SASL through Dovecot's auth-client socket.

_POSTFIX_MAIN = """\
# Written by mtlib: a private instance for tests; TLS off on purpose, since
# mailtlsd does TLS in front of it.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = backend.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relay_domains =
relayhost =
default_transport = error:no delivery outside the test domain
smtpd_banner = $myhostname ESMTP test backend
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_path}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail_base}
virtual_mailbox_maps = static:{user}/Maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
virtual_mailbox_limit = 0
message_size_limit = 209715200
maillog_file = {dir}/postfix.log
maillog_file_prefixes = {dir}
biff = no
"""

_POSTFIX_MASTER = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{host}:{port} inet n    -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    def __init__(self, workdir, dovecot, user, port=None, haproxy=False,
                 subdir="postfix", xclient=False, tls=None):
        """haproxy: a second smtpd on haproxy_port that expects a PROXY
        header (smtpd_upstream_proxy_protocol = haproxy).
        xclient: a further smtpd on xclient_port that lets loopback clients
        use XCLIENT (smtpd_authorized_xclient_hosts = 127.0.0.0/8); the
        main port does not (Postfix's default: nobody)."""
        self.haproxy_port = free_port() if haproxy else None
        self.xclient_port = free_port() if xclient else None
        # tls: (certificate chain, key): STARTTLS offered on port, and an
        # implicit TLS smtpd (smtps, wrappermode) on smtps_port.
        self.tls = tls
        self.smtps_port = free_port() if tls else None
        self.dir = os.path.join(workdir, subdir)
        self.confdir = os.path.join(self.dir, "conf")
        os.makedirs(self.confdir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = port or free_port()
        self.dovecot = dovecot
        self.user = user
        self.log = os.path.join(self.dir, "postfix.log")
        self.proc = None
        self.name = "postfix-%d" % self.port

    def _postfix(self, *args, timeout=60, check=True):
        return run(["postfix", "-c", self.confdir] + list(args),
                   timeout=timeout, check=check)

    def _write_config(self):
        main = _POSTFIX_MAIN.format(
            dir=self.dir, domain=MAIL_DOMAIN,
            sasl_path=self.dovecot.auth_socket,
            mail_base=os.path.dirname(self.user.home),
            user=os.path.basename(self.user.home),
            uid=self.user.uid, gid=self.user.gid)
        if self.tls:
            main = main.replace("smtpd_tls_security_level = none\n",
                                "smtpd_tls_security_level = may\n")
            main += ("smtpd_tls_chain_files = %s, %s\n"
                     "smtpd_tls_loglevel = 1\n" % (self.tls[1], self.tls[0]))
        with open(os.path.join(self.confdir, "main.cf"), "w") as f:
            f.write(main)
        with open(os.path.join(self.confdir, "master.cf"), "w") as f:
            f.write(_POSTFIX_MASTER.format(host=HOST, port=self.port))
            if self.haproxy_port:
                f.write("%s:%d inet n - n - - smtpd\n"
                        "  -o smtpd_upstream_proxy_protocol=haproxy\n"
                        % (HOST, self.haproxy_port))
            if self.xclient_port:
                f.write("%s:%d inet n - n - - smtpd\n"
                        "  -o smtpd_authorized_xclient_hosts=127.0.0.0/8\n"
                        % (HOST, self.xclient_port))
            if self.smtps_port:
                # tlsmgr: the PRNG seed and session cache smtpd needs.
                f.write("tlsmgr unix - - n 1000? 1 tlsmgr\n")
                f.write("%s:%d inet n - n - - smtpd\n"
                        "  -o smtpd_tls_wrappermode=yes\n"
                        "  -o smtpd_tls_security_level=encrypt\n"
                        % (HOST, self.smtps_port))
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        pf = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.dir, "data"), pf.pw_uid, pf.pw_gid)
        os.chmod(os.path.join(self.dir, "queue"), 0o755)

    def _master_pid(self):
        try:
            with open(os.path.join(self.dir, "queue", "pid",
                                   "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _smtp_ready(self):
        if not self.proc.alive():
            raise MtError("postfix exited during start")
        return smtp_greets(self.port)

    def start(self, timeout=60.0):
        self._write_config()
        self._postfix("check", timeout=120)
        register_log(self.name + ".log", self.log)
        self.proc = Process(self.name, ["postfix", "-c", self.confdir,
                                        "start-fg"],
                            os.path.join(self.dir, "postfix.stderr"))
        self.proc.start()
        try:
            wait_until(self._smtp_ready, timeout, "postfix smtpd greeting",
                       interval=0.1)
            if self.haproxy_port:
                wait_port(self.haproxy_port, timeout, "postfix haproxy smtpd",
                          self.proc.alive)
            if self.xclient_port:
                wait_port(self.xclient_port, timeout, "postfix xclient smtpd",
                          self.proc.alive)
            if self.smtps_port:
                wait_port(self.smtps_port, timeout, "postfix smtps smtpd",
                          self.proc.alive)
        except MtError:
            self.stop()
            raise MtError("postfix did not start:\n" + tail(self.log) +
                          "\n" + tail(self.proc.log_path))
        return self

    def stop(self):
        if self.proc is None:
            return
        master = self._master_pid()
        if self.proc.alive():
            self._postfix("stop", timeout=60, check=False)
            try:
                self.proc.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        # The master daemon is the shell's child: make sure it is gone too.
        if master and _pid_alive(master):
            try:
                wait_until(lambda: not _pid_alive(master), 10,
                           "postfix master %d to exit" % master)
            except MtError:
                os.kill(master, signal.SIGKILL)
        self.proc.stop(timeout=5)
        unregister_log(self.name + ".log")


# ---------------------------------------------------------------------------
# aiosmtpd: an SMTP backend recording exact message bytes and the raw
# dialogue of every connection.

class Dialogue:
    """The bytes of one backend connection, in both directions."""

    def __init__(self, peer):
        self.peer = peer
        self.received = bytearray()     # what mailtlsd sent us
        self.sent = bytearray()         # what we answered
        self.closed = threading.Event()


class Recorded:
    def __init__(self, mail_from, rcpt_tos, data):
        self.mail_from = mail_from
        self.rcpt_tos = list(rcpt_tos)
        self.data = data                # bytes, dot-unstuffed, CRLF kept


class RecordingSMTP:
    """aiosmtpd in a thread of its own, on a free loopback port."""

    def __init__(self, port=None, hostname="recorder.example.test",
                 auth=False):
        self.port = port or free_port()
        self.hostname = hostname
        self.messages = []
        self.dialogues = []
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._server = None

    def _factory(self):
        from aiosmtpd.smtp import SMTP
        recorder = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with recorder._lock:
                    recorder.messages.append(Recorded(
                        envelope.mail_from, envelope.rcpt_tos,
                        bytes(envelope.original_content)))
                return "250 2.0.0 Ok: recorded"

        class RecordingProtocol(SMTP):
            def connection_made(self, transport):
                self.mt_dialogue = Dialogue(transport.get_extra_info(
                    "peername"))
                with recorder._lock:
                    recorder.dialogues.append(self.mt_dialogue)
                super().connection_made(transport)

            def data_received(self, data):
                self.mt_dialogue.received += data
                super().data_received(data)

            async def push(self, status):
                raw = status.encode() if isinstance(status, str) else status
                self.mt_dialogue.sent += raw + b"\r\n"
                await super().push(status)

            def connection_lost(self, exc):
                self.mt_dialogue.closed.set()
                super().connection_lost(exc)

        return RecordingProtocol(Handler(), hostname=self.hostname,
                                 loop=self._loop, enable_SMTPUTF8=True,
                                 data_size_limit=0)

    def start(self, timeout=10.0):
        ready = threading.Event()
        errors = []

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(
                    self._loop.create_server(self._factory, HOST, self.port))
            except Exception as e:  # reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True,
                                        name="aiosmtpd-%d" % self.port)
        self._thread.start()
        if not ready.wait(timeout) or errors:
            raise MtError("aiosmtpd did not start: %r" % errors)
        register_log("aiosmtpd-%d dialogues" % self.port, self.describe)
        return self

    def stop(self):
        if self._loop is not None and self._thread.is_alive():
            def halt():
                for task in asyncio.all_tasks(self._loop):
                    task.cancel()
                self._loop.stop()
            self._loop.call_soon_threadsafe(halt)
            self._thread.join(10)
        unregister_log("aiosmtpd-%d dialogues" % self.port)

    def wait_messages(self, n, timeout=20.0):
        wait_until(lambda: len(self.messages) >= n, timeout,
                   "%d message(s) at the recording backend" % n)
        return self.messages

    def all_received(self):
        with self._lock:
            return b"".join(bytes(d.received) for d in self.dialogues)

    def describe(self):
        """The dialogues as text, for failure reports."""
        out = []
        with self._lock:
            for i, d in enumerate(self.dialogues):
                out.append("-- connection %d from %s --" % (i, d.peer))
                out.append("C: %r" % bytes(d.received[:4000]))
                out.append("S: %r" % bytes(d.sent[:4000]))
        return "\n".join(out)


# ---------------------------------------------------------------------------
# A scripted line backend: it advertises STARTTLS/STLS and AUTH like a real
# server with TLS enabled would, so the tests can see mailtlsd rewrite
# capability lists, and it records every byte it receives.

class ScriptedBackend:
    GREETING = {
        "smtp": b"220 scripted.example.test ESMTP scripted\r\n",
        "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN ID] "
                b"scripted ready\r\n",
        "pop3": b"+OK scripted ready\r\n",
    }

    def __init__(self, protocol, port=None, greeting=None):
        self.protocol = protocol
        self.port = port or free_port()
        self.greeting = greeting or self.GREETING[protocol]
        self.received = []          # one bytearray per connection
        self._lock = threading.Lock()
        self._sock = None
        self._thread = None
        self._stop = threading.Event()

    def start(self):
        self._sock = listen(self.port)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._sock:
            self._sock.close()

    def all_received(self):
        with self._lock:
            return b"".join(bytes(r) for r in self.received)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = bytearray()
            with self._lock:
                self.received.append(rec)
            threading.Thread(target=self._serve, args=(conn, rec),
                             daemon=True).start()

    def _serve(self, conn, rec):
        conn.settimeout(0.2)
        buf = b""
        data_mode = False
        deadline = time.monotonic() + 120
        try:
            conn.sendall(self.greeting)
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                rec += chunk
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    if data_mode:
                        if line == b".":
                            data_mode = False
                            conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                        continue
                    reply, data_mode, close = self._answer(line)
                    conn.sendall(reply)
                    if close:
                        return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, line):
        """(reply bytes, enter DATA mode, close after reply)"""
        p = self.protocol
        words = line.split(b" ")
        if p == "smtp":
            verb = words[0].upper()
            if verb in (b"EHLO",):
                return (b"250-scripted.example.test\r\n250-PIPELINING\r\n"
                        b"250-SIZE 10240000\r\n250-STARTTLS\r\n"
                        b"250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
                        b"250-XCLIENT NAME ADDR\r\n250-8BITMIME\r\n"
                        b"250 SMTPUTF8\r\n", False, False)
            if verb == b"HELO":
                return b"250 scripted.example.test\r\n", False, False
            if verb == b"DATA":
                return b"354 End data with <CR><LF>.<CR><LF>\r\n", True, False
            if verb == b"QUIT":
                return b"221 2.0.0 Bye\r\n", False, True
            if verb == b"STARTTLS":
                return b"220 2.0.0 backend would start TLS\r\n", False, False
            if verb == b"AUTH":
                return b"235 2.7.0 Authentication successful\r\n", False, False
            return b"250 2.0.0 Ok\r\n", False, False
        if p == "imap":
            tag = words[0]
            verb = words[1].upper() if len(words) > 1 else b""
            if verb == b"CAPABILITY":
                return (b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN "
                        b"AUTH=LOGIN ID IDLE\r\n" + tag +
                        b" OK Capability completed\r\n", False, False)
            if verb == b"LOGOUT":
                return (b"* BYE scripted logging out\r\n" + tag +
                        b" OK Logout completed\r\n", False, True)
            if verb == b"LOGIN":
                return (tag + b" OK [CAPABILITY IMAP4rev1 STARTTLS IDLE] "
                        b"Logged in\r\n", False, False)
            return tag + b" OK " + verb + b" completed\r\n", False, False
        verb = words[0].upper()
        if verb == b"CAPA":
            return (b"+OK Capability list follows\r\nTOP\r\nUSER\r\n"
                    b"STLS\r\nSASL PLAIN LOGIN\r\nPIPELINING\r\nUIDL\r\n.\r\n",
                    False, False)
        if verb == b"QUIT":
            return b"+OK bye\r\n", False, True
        if verb == b"STLS":
            return b"+OK backend would start TLS\r\n", False, False
        return b"+OK\r\n", False, False


# ---------------------------------------------------------------------------
# mailtlsd itself.

def _conf_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(_conf_value(x) for x in v) + " }"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % s


def _endpoint(b):
    return "%s:%d" % (HOST, b) if isinstance(b, int) else b


def listening_ports(pid):
    """TCP ports in LISTEN state on sockets the process pid holds."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def sanitizer_env():
    """The environment for the daemon, for builds with AddressSanitizer.

    ASan keeps freed memory in a quarantine of 256 MB by default, which a
    relay streaming hundreds of MB through small buffers fills: RSS would
    grow by the quarantine, not by buffering.  A small quarantine keeps the
    memory tests meaningful; a caller's own setting wins.
    """
    env = dict(os.environ)
    opts = env.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        opts = (opts + ":" if opts else "") + "quarantine_size_mb=8"
    env["ASAN_OPTIONS"] = opts
    return env


class MailTLSD:
    """Writes a configuration, runs the binary with -d, stops it by PID."""

    def __init__(self, workdir, certs, binary=None, name="mailtlsd",
                 log_level="debug", **global_opts):
        self.binary = binary or os.environ.get("MAILTLSD_BIN",
                                               DEFAULT_BINARY)
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.certs = certs
        self.name = "%s-%s" % (name, os.urandom(3).hex())
        self.conf = os.path.join(self.dir, "mailtlsd.conf")
        self.log = os.path.join(self.dir, "mailtlsd.log")
        # Like a real deployment: bind as root, then serve as nobody
        # (the test keys are group-readable by nogroup, see Certs).
        self.global_opts = {"log_target": "stderr", "log_level": log_level,
                            "shutdown_timeout": 3, "user": "nobody",
                            "group": "nogroup"}
        self.global_opts.update(global_opts)
        self.tls_sections = []
        self.services = []
        self.proc = None
        self.returncode = None
        self.expect_exit = False

    # -- configuration ------------------------------------------------------
    def add_tls(self, name="main", pairs=None, sni=None, **opts):
        """pairs: [(cert, key)]; default ECDSA + RSA for mail.example.test.
        sni: {name: [(cert, key)]}."""
        c = self.certs
        if pairs is None:
            pairs = [(c.ecdsa_chain, c.ecdsa_key), (c.rsa_chain, c.rsa_key)]
        opts.setdefault("profile", "intermediate")
        self.tls_sections.append((name, pairs, sni or {}, opts))
        return name

    def add_service(self, name, protocol, backends, tls_mode="implicit",
                    port=None, tls=None, hostname=SERVER_NAME, **opts):
        port = port or free_port()
        # tls_mode "none" (client mode, SPEC 12) has no tls section.
        if not self.tls_sections and tls_mode != "none":
            self.add_tls()
        opts = dict(opts)
        opts["protocol"] = protocol
        opts["listen"] = ["%s:%d" % (HOST, port)]
        opts["tls_mode"] = tls_mode
        if tls_mode != "none":
            opts["tls"] = tls or self.tls_sections[0][0]
        opts["backend"] = [_endpoint(b) for b in backends]
        if hostname:
            opts["hostname"] = hostname
        self.services.append((name, port, opts))
        return port

    def port(self, service):
        for name, port, _ in self.services:
            if name == service:
                return port
        raise KeyError(service)

    def config_text(self):
        out = ["# Written by mtlib for a functional test."]
        for k, v in self.global_opts.items():
            out.append("%s = %s" % (k, _conf_value(v)))
        for name, pairs, sni, opts in self.tls_sections:
            out.append("")
            out.append("tls %s {" % _conf_value(name))
            out.append("    certificate = %s" % _conf_value([p[0] for p in pairs]))
            out.append("    key = %s" % _conf_value([p[1] for p in pairs]))
            for k, v in opts.items():
                out.append("    %s = %s" % (k, _conf_value(v)))
            for sname, spairs in sni.items():
                out.append("    sni %s {" % _conf_value(sname))
                out.append("        certificate = %s"
                           % _conf_value([p[0] for p in spairs]))
                out.append("        key = %s"
                           % _conf_value([p[1] for p in spairs]))
                out.append("    }")
            out.append("}")
        for name, _, opts in self.services:
            out.append("")
            out.append("service %s {" % _conf_value(name))
            for k, v in opts.items():
                out.append("    %s = %s" % (k, _conf_value(v)))
            out.append("}")
        return "\n".join(out) + "\n"

    def write_config(self, text=None):
        with open(self.conf, "w") as f:
            f.write(text if text is not None else self.config_text())
        return self.conf

    # -- process ------------------------------------------------------------
    def start(self, timeout=20.0, write=True):
        if not os.access(self.binary, os.X_OK):
            raise MtError("mailtlsd binary %s not found or not executable "
                          "(set MAILTLSD_BIN)" % self.binary)
        if write:
            self.write_config()
        self.proc = Process(self.name, [self.binary, "-d", "-c", self.conf],
                            self.log, env=sanitizer_env())
        self.proc.start()
        want = {port for _, port, _ in self.services}
        try:
            wait_until(self._listening(want), timeout,
                       "mailtlsd listening on %s" % sorted(want))
        except MtError as e:
            self.stop()
            raise MtError("%s\nconfig:\n%s\nlog:\n%s"
                          % (e, self.config_text(), tail(self.log)))
        return self

    def _listening(self, want):
        def check():
            if not self.proc.alive():
                raise MtError("mailtlsd exited with %s during start"
                              % self.proc.proc.returncode)
            return want <= listening_ports(self.pid)
        return check

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self, timeout=15.0):
        """SIGTERM, SIGKILL after timeout; return the exit status."""
        if self.proc is None:
            return None
        if self.alive():
            self.expect_exit = True     # asked to stop: not a crash
        self.returncode = self.proc.stop(signal.SIGTERM, timeout)
        return self.returncode

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10.0, flags=0):
        """Wait for a log line matching the regex; return the match."""
        rx = re.compile(pattern, flags)
        return wait_until(lambda: rx.search(self.log_text()), timeout,
                          "mailtlsd log line /%s/" % pattern, interval=0.1)

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise MtError("no VmRSS for %d" % self.pid)

    def nfds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def sanitizer_reports(self):
        """AddressSanitizer/UBSan findings in the log, if built with them."""
        text = self.log_text()
        hits = [l for l in text.splitlines()
                if "AddressSanitizer" in l or "LeakSanitizer" in l
                or "runtime error:" in l]
        return hits


def find_binary(explicit=None, srcdir=None):
    """--binary, $MAILTLSD_BIN, ./mailtlsd, a build dir, the default."""
    cands = [explicit, os.environ.get("MAILTLSD_BIN")]
    roots = [os.getcwd()]
    if srcdir:
        roots.append(srcdir)
    for r in roots:
        cands += [os.path.join(r, "mailtlsd"),
                  os.path.join(r, "_build", "mailtlsd"),
                  os.path.join(r, "build", "mailtlsd"),
                  os.path.join(r, "src", "mailtlsd")]
    cands.append(DEFAULT_BINARY)
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None



# ---------------------------------------------------------------------------
# Clients: bounded reads over plain or TLS sockets, openssl s_client.

class Conn:
    """A blocking client connection; every read has a deadline and a cap."""

    def __init__(self, sock, timeout=15.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.transcript = bytearray()
        sock.settimeout(timeout)

    @classmethod
    def plain(cls, port, timeout=15.0, source=None):
        """source: the loopback address to connect from (e.g. 127.0.0.2)."""
        return cls(socket.create_connection(
            (HOST, port), timeout,
            source_address=(source, 0) if source else None), timeout)

    @classmethod
    def tls(cls, port, ctx, server_hostname=HOST, timeout=15.0, source=None):
        """server_hostname: HOST (an IP: verified, no SNI sent) or a name.
        source: the loopback address to connect from (e.g. 127.0.0.2)."""
        raw = socket.create_connection(
            (HOST, port), timeout,
            source_address=(source, 0) if source else None)
        try:
            s = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        return cls(s, timeout)

    def starttls(self, ctx, server_hostname=HOST):
        if self.buf:
            raise MtError("cleartext bytes after the go-ahead: %r"
                          % bytes(self.buf))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.sock.settimeout(self.timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise MtError("read timed out; got %r" % bytes(self.buf[-300:]))
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise MtError("read timed out; got %r" % bytes(self.buf[-300:]))
        if not chunk:
            raise EOFError("connection closed; pending %r"
                           % bytes(self.buf[-300:]))
        if len(self.transcript) < 65536:
            self.transcript += chunk[:4096]
        self.buf += chunk

    def read_until(self, pred, limit=1 << 20, timeout=None):
        """Read until pred(buf) returns an end offset; return buf[:end]."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            end = pred(self.buf)
            if end:
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise MtError("no end within %d bytes" % limit)
            self._fill(deadline)

    def line(self, timeout=None):
        def p(b):
            i = b.find(b"\r\n")
            return i + 2 if i >= 0 else 0
        return self.read_until(p, timeout=timeout)

    def smtp_reply(self, timeout=None):
        """One complete (multi-line) SMTP reply, raw."""
        def p(b):
            pos = 0
            while True:
                i = b.find(b"\r\n", pos)
                if i < 0:
                    return 0
                if len(b) - pos >= 4 and b[pos + 3:pos + 4] == b" ":
                    return i + 2
                if i - pos < 4:
                    return i + 2        # malformed: hand it to the test
                pos = i + 2
        return self.read_until(p, timeout=timeout)

    def tagged(self, tag, timeout=None, limit=1 << 20):
        """Everything up to and including the line starting with tag."""
        if isinstance(tag, str):
            tag = tag.encode()

        def p(b):
            start = 0 if b.startswith(tag + b" ") else b.find(
                b"\r\n" + tag + b" ")
            if start < 0:
                return 0
            if start > 0:
                start += 2
            i = b.find(b"\r\n", start)
            return i + 2 if i >= 0 else 0
        return self.read_until(p, timeout=timeout, limit=limit)

    def pop3_multi(self, timeout=None, limit=1 << 20):
        """A POP3 multi-line response through the terminating dot line."""
        def p(b):
            if b.startswith(b"-ERR"):
                i = b.find(b"\r\n")
                return i + 2 if i >= 0 else 0
            i = b.find(b"\r\n.\r\n")
            return i + 5 if i >= 0 else 0
        return self.read_until(p, timeout=timeout, limit=limit)

    def read_to_eof(self, timeout=None, limit=1 << 20):
        """Everything until the peer closes; raise if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                self._fill(deadline)
            except (EOFError, ConnectionResetError, ssl.SSLError):
                out = bytes(self.buf)
                del self.buf[:]
                return out
            if len(self.buf) > limit:
                raise MtError("peer keeps sending past %d bytes" % limit)

    def read_exact(self, n, sink, timeout=None):
        """Stream exactly n bytes into sink(bytes) without keeping them."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while n > 0:
            if not self.buf:
                self._fill(deadline)
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def s_client(certs, port, args=(), stdin=b"", timeout=30):
    """Run openssl s_client once; return (exit status, stdout+stderr)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port),
           "-CAfile", certs.ca] + list(args)
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def cert_info(pem_text):
    """(key algorithm, subject, SAN) of the first PEM certificate in text."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                  pem_text, re.S)
    if not m:
        return None
    p = subprocess.run(["openssl", "x509", "-noout", "-text"],
                       input=m.group(0).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    text = p.stdout.decode()
    alg = re.search(r"Public Key Algorithm: (\S+)", text)
    subj = re.search(r"Subject: (.*)", text)
    san = re.search(r"Subject Alternative Name:.*\n\s*(.*)", text)
    return (alg.group(1) if alg else None, subj.group(1) if subj else None,
            san.group(1) if san else None)


# ---------------------------------------------------------------------------
# Test messages.

def imap_fetch_token(im, tok):
    """The newest message of the selected mailbox whose X-Mt-Token header
    is tok, as the server holds it (BODY.PEEK[], byte for byte)."""
    typ, data = im.search(None, "HEADER", "X-Mt-Token", tok)
    assert typ == "OK" and data[0], data
    typ, data = im.fetch(data[0].split()[-1], "(BODY.PEEK[])")
    assert typ == "OK", data
    return data[0][1]


def pop3_find_token(p, tok):
    """The newest message of the drop that holds tok, its CRLFs put back
    (poplib strips them and un-stuffs dots), or None."""
    count, _ = p.stat()
    for i in range(count, 0, -1):                   # bounded by the drop
        _, lines, _ = p.retr(i)
        body = b"\r\n".join(lines) + b"\r\n"
        if tok.encode() in body:
            return body
    return None



def token():
    return "mt" + os.urandom(8).hex()


def make_message(tok, sender="sender@example.org",
                 rcpt="alice@" + MAIL_DOMAIN, size=0):
    """A message with CRLF lines, the token in headers and body.

    The body holds what relays get wrong: lines starting with dots (SMTP
    and POP3 stuffing), a lone-dot-looking line, 8-bit text, a 990-byte
    line, whitespace at line ends.  size pads it with base64 lines.
    """
    import base64
    headers = [
        "From: Sender <%s>" % sender,
        "To: <%s>" % rcpt,
        "Subject: mailtlsd test %s" % tok,
        "Message-ID: <%s@example.org>" % tok,
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        "X-Mt-Token: %s" % tok,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = [
        "token %s" % tok,
        ".leading dot",
        "..two leading dots",
        ". dot space",
        "Gr\u00fc\u00dfe, \u00e9t\u00e9 \u2014 8-bit text",
        "trailing spaces   ",
        "x" * 990,
        "",
        "QUIT",
        "last line",
    ]
    text = ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) +
            "\r\n").encode("utf-8")
    if size > len(text):
        raw = os.urandom((size - len(text)) * 3 // 4 + 64)
        b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        text += b64[:size - len(text)]
        text = text[:text.rfind(b"\r\n") + 2]
    return text
