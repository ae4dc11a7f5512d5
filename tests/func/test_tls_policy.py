"""
TLS policy on the wire (SPEC section 4): ALPN, protocol versions per
profile, no SSLv2/SSLv3 ever, ECDSA + RSA selection, SNI.

Probes use `openssl s_client` as an administrator would, plus hand-made
SSLv2/SSLv3 ClientHellos, which OpenSSL 3's client can no longer send.
"""

import os
import re
import socket
import struct

import pytest

from mtlib import HOST, OTHER_NAME, SERVER_NAME, s_client, cert_info

LEGACY = ["-cipher", "DEFAULT:@SECLEVEL=0"]


@pytest.fixture
def policy(mtd, dovecot, certs):
    """One daemon: intermediate (ECDSA+RSA, SNI), opportunistic, modern."""
    m = mtd()
    m.add_tls("main", sni={OTHER_NAME: [(certs.other_chain,
                                         certs.other_key)]})
    m.add_tls("opp", profile="opportunistic")
    m.add_tls("modern", profile="modern")
    ports = {
        "main": m.add_service("imaps", "imap", [dovecot.imap_port],
                              tls="main"),
        "opp": m.add_service("imaps-opp", "imap", [dovecot.imap_port],
                             tls="opp"),
        "modern": m.add_service("imaps-modern", "imap",
                                [dovecot.imap_port], tls="modern"),
        "smtp": m.add_service("smtps", "smtp", [dovecot.imap_port],
                              tls="main"),
    }
    m.start()
    return ports


def negotiated(out):
    """The protocol version of the session s_client got, or None.

    "New, X, Cipher is Y" names the suite's own version (TLSv1.0 for a CBC
    suite used in TLS 1.1); "Protocol : X" in the session block is the
    negotiated one, but for TLS 1.3 s_client prints that block only once a
    ticket arrives, and TLS 1.3 suites exist in TLS 1.3 only.
    """
    new = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    if not new or new.group(2) == "(NONE)":
        return None
    proto = re.search(r"^\s*Protocol\s*: (\S+)", out, re.M)
    return proto.group(1) if proto else new.group(1)


def handshake_ok(rc, out):
    return rc == 0 and negotiated(out) is not None


# ---------------------------------------------------------------------------
# ALPN (ALPACA defence)

def test_alpn_foreign_protocol_refused(policy, certs):
    rc, out = s_client(certs, policy["main"], ["-alpn", "http/1.1"])
    assert not handshake_ok(rc, out), out
    assert re.search(r"no application protocol|alert number 120", out), out


def test_alpn_other_mail_protocol_refused(policy, certs):
    rc, out = s_client(certs, policy["main"], ["-alpn", "smtp"])
    assert not handshake_ok(rc, out), out
    rc, out = s_client(certs, policy["smtp"], ["-alpn", "imap"])
    assert not handshake_ok(rc, out), out


def test_alpn_own_protocol_accepted(policy, certs):
    rc, out = s_client(certs, policy["main"], ["-alpn", "imap"])
    assert handshake_ok(rc, out), out
    assert "ALPN protocol: imap" in out
    rc, out = s_client(certs, policy["smtp"], ["-alpn", "http/1.1,smtp"])
    assert handshake_ok(rc, out), out
    assert "ALPN protocol: smtp" in out


def test_no_alpn_served(policy, certs):
    rc, out = s_client(certs, policy["main"])
    assert handshake_ok(rc, out), out
    assert "No ALPN negotiated" in out
    assert "Verify return code: 0 (ok)" in out


# ---------------------------------------------------------------------------
# Protocol versions per profile

@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_tls_refused_on_intermediate(policy, certs, flag):
    rc, out = s_client(certs, policy["main"], [flag] + LEGACY)
    assert not handshake_ok(rc, out), out


@pytest.mark.parametrize("flag,proto", [("-tls1", "TLSv1"),
                                        ("-tls1_1", "TLSv1.1"),
                                        ("-tls1_2", "TLSv1.2"),
                                        ("-tls1_3", "TLSv1.3")])
def test_all_tls_versions_on_opportunistic(policy, certs, flag, proto):
    rc, out = s_client(certs, policy["opp"], [flag] + LEGACY)
    assert handshake_ok(rc, out), out
    assert negotiated(out) == proto


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"),
                                        ("-tls1_3", "TLSv1.3")])
def test_intermediate_offers_tls12_and_tls13(policy, certs, flag, proto):
    rc, out = s_client(certs, policy["main"], [flag])
    assert handshake_ok(rc, out), out
    assert negotiated(out) == proto


def test_modern_is_tls13_only(policy, certs):
    rc, out = s_client(certs, policy["modern"], ["-tls1_2"])
    assert not handshake_ok(rc, out), out
    rc, out = s_client(certs, policy["modern"], ["-tls1_3"])
    assert handshake_ok(rc, out), out


def test_intermediate_refuses_weak_tls12_suites(policy, certs):
    # CBC without forward secrecy: Mozilla's intermediate leaves it out.
    rc, out = s_client(certs, policy["main"],
                       ["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA"])
    assert not handshake_ok(rc, out), out


def _exchange(port, hello, timeout=10):
    """Send raw bytes; return what the server answers before closing."""
    with socket.create_connection((HOST, port), timeout) as s:
        s.sendall(hello)
        got = b""
        s.settimeout(timeout)
        try:
            while len(got) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return got


def sslv3_client_hello():
    ciphers = [0x002f, 0x0035, 0x000a, 0x0005]      # RSA suites of SSLv3
    body = (b"\x03\x00" + os.urandom(32) + b"\x00" +
            struct.pack("!H", 2 * len(ciphers)) +
            b"".join(struct.pack("!H", c) for c in ciphers) + b"\x01\x00")
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + struct.pack("!H", len(hs)) + hs


def sslv2_client_hello():
    specs = b"\x01\x00\x80\x07\x00\xc0\x03\x00\x80"  # SSL2 RC4/3DES/RC2
    challenge = os.urandom(16)
    msg = (b"\x01\x00\x02" + struct.pack("!HHH", len(specs), 0,
                                          len(challenge)) +
           specs + challenge)
    return struct.pack("!H", 0x8000 | len(msg)) + msg


@pytest.mark.parametrize("service", ["main", "opp"])
@pytest.mark.parametrize("hello", [sslv3_client_hello, sslv2_client_hello],
                         ids=["sslv3", "sslv2"])
def test_ssl2_ssl3_impossible(policy, service, hello):
    """Not even the opportunistic profile answers with a ServerHello."""
    answer = _exchange(policy[service], hello())
    # Acceptable: silence and close, or a TLS alert record.  Never a
    # handshake record (ServerHello) or an SSLv2 SERVER-HELLO.
    assert answer == b"" or answer[0] == 0x15, answer[:64]


# ---------------------------------------------------------------------------
# Certificate selection: key type, SNI

@pytest.mark.parametrize("version,ecdsa,rsa", [
    ("-tls1_2", "ECDSA+SHA256", "RSA+SHA256"),
    ("-tls1_3", "ecdsa_secp256r1_sha256", "rsa_pss_rsae_sha256"),
])
def test_key_type_follows_client_sigalgs(policy, certs, version, ecdsa, rsa):
    rc, out = s_client(certs, policy["main"], [version, "-sigalgs", ecdsa])
    assert handshake_ok(rc, out), out
    alg, subject, _ = cert_info(out)
    assert alg == "id-ecPublicKey", out
    assert SERVER_NAME in subject
    rc, out = s_client(certs, policy["main"], [version, "-sigalgs", rsa])
    assert handshake_ok(rc, out), out
    alg, subject, _ = cert_info(out)
    assert alg == "rsaEncryption", out
    assert SERVER_NAME in subject
    assert "Verify return code: 0 (ok)" in out


@pytest.mark.parametrize("servername,expected", [
    (None, SERVER_NAME),
    (SERVER_NAME, SERVER_NAME),
    (OTHER_NAME, OTHER_NAME),
    ("unknown.example.test", SERVER_NAME),
])
def test_sni_selects_certificate(policy, certs, servername, expected):
    args = ["-servername", servername] if servername else ["-noservername"]
    rc, out = s_client(certs, policy["main"], args)
    assert handshake_ok(rc, out), out
    _, subject, san = cert_info(out)
    assert "CN = %s" % expected in subject, subject
    if servername in (SERVER_NAME, OTHER_NAME):
        assert "Verify return code: 0 (ok)" in out
        rc, out = s_client(certs, policy["main"],
                           args + ["-verify_hostname", servername,
                                   "-verify_return_error"])
        assert handshake_ok(rc, out), out
