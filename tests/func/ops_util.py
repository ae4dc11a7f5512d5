"""
ops_util - helpers of the operations tests (test_ops.py): certificates
made to trigger each finding of the -t audit, a NOTIFY_SOCKET receiver,
mailtlsd started under systemd-socket-activate or with extra environment,
/proc status of a process, and the build/source paths the packaging tests
read.

Same habits as mtlib: every wait bounded, every process started here and
stopped by its PID, every file under the directory the caller passes.
"""

import datetime
import grp
import os
import re
import socket
import subprocess
import threading
import time

import mtlib
from mtlib import HOST

SRCDIR = os.environ.get(
    "MAILTLSD_SRCDIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def builddir(binary):
    """The build directory: $MAILTLSD_BUILDDIR (make check) or the
    directory of the binary, if it holds a Makefile; else None."""
    d = os.environ.get("MAILTLSD_BUILDDIR") or os.path.dirname(
        os.path.abspath(binary))
    return d if os.path.isfile(os.path.join(d, "Makefile")) else None


def run_binary(binary, *args, timeout=30, env=None):
    """(exit status, stdout, stderr) of one mailtlsd run."""
    p = subprocess.run([binary] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=timeout, env=env or mtlib.sanitizer_env())
    return (p.returncode, p.stdout.decode(errors="replace"),
            p.stderr.decode(errors="replace"))


# ---------------------------------------------------------------------------
# Certificates for the audit: signed by the suite's test CA with chosen
# dates (openssl ca, since `openssl x509 -req` cannot back-date), a
# self-signed one, a 1024-bit RSA one, 1024-bit DH parameters.

_CA_CNF = """\
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
"""

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


def asn1_time(dt):
    return dt.strftime("%Y%m%d%H%M%SZ")


def cert_not_after(path):
    """notAfter as mailtlsd prints it: 2026-01-01 00:00:00 GMT."""
    out = mtlib.run(["openssl", "x509", "-noout", "-enddate", "-in", path],
                    timeout=30).stdout.decode()
    when = datetime.datetime.strptime(out.strip().split("=", 1)[1],
                                      "%b %d %H:%M:%S %Y GMT")
    return when.strftime("%Y-%m-%d %H:%M:%S GMT")


class AuditPKI:
    """Certificates and keys for mail.example.test, each with one flaw."""

    def __init__(self, directory, certs):
        self.dir = directory
        self.certs = certs
        os.makedirs(directory, exist_ok=True)
        self._cadir = os.path.join(directory, "ca")
        os.makedirs(os.path.join(self._cadir, "issued"), exist_ok=True)
        with open(os.path.join(self._cadir, "index.txt"), "w"):
            pass
        with open(os.path.join(self._cadir, "serial"), "w") as f:
            f.write(os.urandom(8).hex() + "\n")
        self._cnf = os.path.join(self._cadir, "ca.cnf")
        with open(self._cnf, "w") as f:
            f.write(_CA_CNF.format(dir=self._cadir))
        now = datetime.datetime.now(datetime.timezone.utc).replace(
            microsecond=0)
        san = "DNS:%s" % mtlib.SERVER_NAME
        self.expired = self._signed("expired", san, datetime.datetime(
            2020, 1, 1), datetime.datetime(2021, 1, 1, 12, 0, 0))
        # 10 days and a half: "expires in 10 days" however long the run.
        self.expiring = self._signed(
            "expiring", san, now - datetime.timedelta(days=1),
            now + datetime.timedelta(days=10, hours=12))
        self.rsa1024 = self._signed(
            "rsa1024", san, now - datetime.timedelta(days=1),
            now + datetime.timedelta(days=365), bits=1024)
        self.selfsigned = self._selfsigned("selfsigned", san)
        self.dh1024 = os.path.join(directory, "dh1024.pem")
        mtlib.run(["openssl", "dhparam", "-out", self.dh1024, "1024"],
                  timeout=120)

    def _key(self, path, bits=2048):
        mtlib.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                   "rsa_keygen_bits:%d" % bits, "-out", path], timeout=60)
        os.chown(path, 0, grp.getgrnam("nogroup").gr_gid)
        os.chmod(path, 0o640)

    def _signed(self, name, san, start, end, bits=2048):
        """(chain file, key file); the chain file holds leaf then CA."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        leaf = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        self._key(key, bits)
        with open(ext, "w") as f:
            f.write(_SERVER_EXT.format(san=san))
        mtlib.run(["openssl", "req", "-new", "-key", key, "-subj",
                   "/CN=" + mtlib.SERVER_NAME, "-out", csr], timeout=60)
        mtlib.run(["openssl", "ca", "-batch", "-notext", "-config", self._cnf,
                   "-cert", self.certs.ca, "-keyfile", self.certs.ca_key,
                   "-in", csr, "-out", leaf, "-extfile", ext,
                   "-startdate", asn1_time(start), "-enddate", asn1_time(end)],
                  timeout=60)
        chain = os.path.join(self.dir, name + "-chain.pem")
        with open(chain, "wb") as out:
            for part in (leaf, self.certs.ca):
                with open(part, "rb") as f:
                    out.write(f.read())
        return chain, key

    def _selfsigned(self, name, san):
        key = os.path.join(self.dir, name + ".key")
        cert = os.path.join(self.dir, name + ".pem")
        self._key(key)
        mtlib.run(["openssl", "req", "-x509", "-new", "-key", key, "-subj",
                   "/CN=" + mtlib.SERVER_NAME, "-days", "365",
                   "-addext", "subjectAltName=" + san, "-out", cert],
                  timeout=60)
        return cert, key


# ---------------------------------------------------------------------------
# sd_notify: the receiving end of $NOTIFY_SOCKET.

class NotifySocket:
    """A unix datagram socket collecting notifications in a thread.

    Writable by everyone: the daemon sends from the user it dropped to.
    """

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        self.messages = []          # (time.monotonic(), {key: value})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        mtlib.register_log("notify %s" % path, self.describe)

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = {}
            for line in data.decode(errors="replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self):
        with self._lock:
            return list(self.messages)

    def wait_for(self, pred, timeout, what, start=0):
        """Wait for a message (index >= start) with pred(fields) true;
        return its index."""
        def look():
            msgs = self.snapshot()
            for i in range(start, len(msgs)):
                if pred(msgs[i][1]):
                    return i + 1        # 0 would read as "not yet"
            return None
        return mtlib.wait_until(look, timeout, "notification: " + what,
                                interval=0.05) - 1

    def describe(self):
        return "\n".join("%.3f %r" % m for m in self.snapshot())

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        mtlib.unregister_log("notify %s" % self.path)
        try:
            os.unlink(self.path)
        except OSError:
            pass


def start_with_env(m, env, timeout=20.0):
    """MailTLSD.start() with extra environment variables for the daemon."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        # sanitizer_env() copies os.environ when the process starts.
        return m.start(timeout=timeout)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------
# systemd-socket-activate: it listens, and on the first connection execs
# the command in its own process with LISTEN_FDS/LISTEN_FDNAMES set.

class SocketActivated:
    def __init__(self, m, listeners):
        """m: a MailTLSD with its config written; listeners: [(port, name)]."""
        self.m = m
        self.listeners = listeners
        argv = ["systemd-socket-activate"]
        for port, _ in listeners:
            argv += ["-l", "%s:%d" % (HOST, port)]
        argv.append("--fdname=" + ":".join(n for _, n in listeners))
        argv += [m.binary, "-d", "-c", m.conf]
        self.proc = mtlib.Process(m.name + "-activated", argv, m.log,
                                  env=mtlib.sanitizer_env())

    def start(self, timeout=15.0):
        self.proc.start()
        # Ready once the activator said it listens on every socket.
        mtlib.wait_until(
            lambda: self._check_alive() and
            self.m.log_text().count("Listening on ") >= len(self.listeners),
            timeout, "systemd-socket-activate listening")
        return self

    def _check_alive(self):
        if not self.proc.alive():
            raise mtlib.MtError("systemd-socket-activate exited:\n"
                                + mtlib.tail(self.m.log))
        return True

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        return self.proc.stop(timeout=15)


# ---------------------------------------------------------------------------
# /proc

def proc_status(pid):
    """/proc/PID/status as {field: value text}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def proc_ids(text):
    """"65534\t65534\t65534\t65534" -> [65534, 65534, 65534, 65534]"""
    return [int(x) for x in text.split()]


def unit_text(name, **subst):
    """A file of systemd/ with @var@ substituted (as Makefile.am does)."""
    with open(os.path.join(SRCDIR, "systemd", name)) as f:
        text = f.read()
    for k, v in subst.items():
        text = text.replace("@%s@" % k, v)
    left = re.findall(r"@[a-z_]+@", text)
    if left:
        raise mtlib.MtError("%s: unsubstituted %s" % (name, left))
    return text
