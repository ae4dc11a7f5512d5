#!/usr/bin/python3
"""mkcorpus.py - write the seed corpora of the filter fuzzers.

Each seed is a small realistic dialogue in the input format of
fuzz_common.h: a mode byte, a parameter byte, then chunks (a header byte
with bit 0 = backend, bit 1 = deliver without pumping, bit 7 = two length
bytes; the length; the bytes).  The committed corpus/ directories are the
output of this script:

    /usr/bin/python3 tests/fuzz/mkcorpus.py tests/fuzz/corpus
"""

import os
import sys

# Mode byte (fuzz_common.h).
CLEAR = 0x00          # STARTTLS service, cleartext phase
TLS = 0x01            # STARTTLS service, TLS already active
IMPLICIT = 0x02       # implicit TLS
REQUIRE = 0x04        # require_starttls
REJECT = 0x08         # smtp_bare_newline = reject
LINE512 = 0x10        # max_line_length = 512
LINESMALL = 0x20      # max_line_length = 16 + parameter byte


def chunk(side, data, defer=False):
    h = (1 if side == 'B' else 0) | (2 if defer else 0)
    if len(data) > 255:
        return bytes([h | 0x80, len(data) & 0xff, len(data) >> 8]) + data
    return bytes([h, len(data)]) + data


def lit(text, plus=False):
    """An IMAP literal marker for text, then the text."""
    return "{%d%s}\r\n%s" % (len(text), "+" if plus else "", text)


def seed(mode, steps, param=0):
    out = bytes([mode, param])
    for st in steps:
        side, data = st[0], st[1]
        defer = len(st) > 2 and st[2]
        if isinstance(data, str):
            data = data.encode('latin-1')
        out += chunk(side, data, defer)
    return out


# ---------------------------------------------------------------- SMTP

S_GREET = ('B', "220 backend.test ESMTP Postfix\r\n")
S_EHLO = ('C', "EHLO client.example\r\n")
S_EHLO_R = ('B', "250-backend.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
            "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
            "250-XCLIENT NAME ADDR\r\n250-XFORWARD NAME\r\n250-CHUNKING\r\n"
            "250-8BITMIME\r\n250 SMTPUTF8\r\n")
S_OK = ('B', "250 2.0.0 Ok\r\n")
S_STARTTLS = [('C', "STARTTLS\r\n"), S_OK]
S_TXN = [('C', "MAIL FROM:<a@example.org>\r\n"), S_OK,
         ('C', "RCPT TO:<b@example.net>\r\n"), ('B', "250 2.1.5 Ok\r\n"),
         ('C', "DATA\r\n"), ('B', "354 End data with <CR><LF>.<CR><LF>\r\n")]
S_QUEUED = ('B', "250 2.0.0 Ok: queued as 4F3A21\r\n")
S_QUIT = [('C', "QUIT\r\n"), ('B', "221 2.0.0 Bye\r\n")]

SMTP = {
    'full_starttls': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R] + S_STARTTLS +
                          [S_EHLO, S_EHLO_R,
                           ('C', "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
                           ('B', "235 2.7.0 Authentication successful\r\n")] +
                          S_TXN + [('C', "Subject: hi\r\n\r\nbody\r\n.\r\n"),
                                   S_QUEUED] + S_QUIT),
    'starttls_injection': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R,
                                       ('C', "STARTTLS\r\nMAIL FROM:<x@y>\r\n"),
                                       S_OK]),
    'starttls_split_injection': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R,
                                             ('C', "STARTTLS\r\n", True),
                                             ('C', "RSET\r\n")]),
    'starttls_pipelined_behind': seed(CLEAR, [S_GREET,
                                              ('C', "EHLO a\r\nNOOP\r\nSTARTTLS\r\n"),
                                              S_EHLO_R, S_OK, S_OK,
                                              ('C', "MAIL FROM:<a@b>\r\n"),
                                              S_EHLO, S_EHLO_R]),
    'data_bare_lf': seed(IMPLICIT, [S_GREET, S_EHLO, S_EHLO_R] + S_TXN +
                         [('C', "a\nb\rc\r\n.\n.\r.\r\n\n.\r\nMAIL FROM:<x>\r\n"
                           "..stuffed\r\n.\r\n"), S_QUEUED]),
    'data_bare_reject': seed(IMPLICIT | REJECT, [S_GREET, S_EHLO, S_EHLO_R] +
                             S_TXN + [('C', "line\nmore\r\n.\n"), S_QUEUED]),
    'data_split_dot': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R] + S_TXN +
                           [('C', "x\r\n"), ('C', "."), ('C', "\r"),
                            ('C', "\n"), S_QUEUED]),
    'bdat': seed(IMPLICIT, [S_GREET, S_EHLO, S_EHLO_R,
                            ('C', "MAIL FROM:<a@b>\r\n"), S_OK,
                            ('C', "RCPT TO:<c@d>\r\n"), S_OK,
                            ('C', "BDAT 12\r\n\r\n.\r\nQUIT\r\nx"),
                            ('C', "BDAT 5 LAST\r\nab\ncd"),
                            ('B', "250 2.0.0 Ok\r\n250 2.0.0 Ok: queued\r\n")]
                 + S_QUIT),
    'bdat_refused_clear': seed(CLEAR | REQUIRE, [S_GREET, S_EHLO, S_EHLO_R,
                                                 ('C', "BDAT 6\r\nAUTH x"
                                                  "NOOP\r\n"), S_OK]),
    'auth_login_continuations': seed(TLS, [S_GREET, S_EHLO, S_EHLO_R,
                                           ('C', "AUTH LOGIN\r\n"),
                                           ('B', "334 VXNlcm5hbWU6\r\n"),
                                           ('C', "dXNlcg==\r\n"),
                                           ('B', "334 UGFzc3dvcmQ6\r\n"),
                                           ('C', "cGFzcw==\r\n"),
                                           ('B', "235 2.7.0 Ok\r\n"),
                                           ('C', "AUTH PLAIN\r\n"),
                                           ('B', "334 \r\n"),
                                           ('C', "*\r\n"),
                                           ('B', "501 5.7.0 cancelled\r\n")]),
    'auth_cleartext': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R,
                                   ('C', "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
                                    "auth login\r\n X-EXPS GSSAPI\r\n"
                                    "AUTH\tPLAIN x\r\n")]),
    'require_starttls': seed(CLEAR | REQUIRE, [S_GREET, S_EHLO, S_EHLO_R,
                                               ('C', "MAIL FROM:<a@b>\r\n"
                                                "NOOP\r\nVRFY root\r\n"),
                                               S_OK]),
    'authority': seed(IMPLICIT, [S_GREET,
                                 ('C', "XCLIENT ADDR=1.2.3.4\r\n"
                                  "XFORWARD NAME=x\r\n xclient a\r\n"),
                                 S_EHLO, S_EHLO_R]),
    'after_starttls_no_ehlo': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R] +
                                   S_STARTTLS +
                                   [('C', "MAIL FROM:<a@b>\r\nHELO x\r\n"),
                                    ('B', "250 backend.test\r\n"),
                                    ('C', "MAIL FROM:<a@b>\r\n"), S_OK]),
    'long_line': seed(CLEAR | LINE512, [S_GREET,
                                        ('C', "EHLO " + "a" * 600 + "\r\n"
                                         "BDAT 3 " + " " * 520 + "\r\nabc"),
                                        S_EHLO, S_EHLO_R]),
    'bad_command_lines': seed(CLEAR, [S_GREET,
                                      ('C', "EHLO a\nNOOP\rx\r\nNO\x00OP\r\n"
                                       "\r\n   \r\nDATA\n"), S_EHLO,
                                      S_EHLO_R]),
    'backend_multiline_odd': seed(CLEAR, [S_GREET, S_EHLO,
                                          ('B', "250-backend.test\n250-STARTTLS"
                                           "\r\n250 AUTH=LOGIN\r\n"),
                                          ('C', "HELP\r\n"),
                                          ('B', "214-AUTH is documented\r\n"
                                           "214 see RFC\r\n"),
                                          ('C', "DATA\r\n"), ('B', "503 no\r\n"),
                                          ('C', "NOOP\r\n"),
                                          ('B', "354 go\r\n")]),
    'pipelined_txn': seed(IMPLICIT, [S_GREET,
                                     ('C', "EHLO a\r\nMAIL FROM:<a@b>\r\n"
                                      "RCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\n"
                                      "DATA\r\nhello\r\n.\r\nQUIT\r\n"),
                                     ('B', "250 x\r\n250 ok\r\n250 ok\r\n"
                                      "550 no\r\n354 go\r\n"),
                                     S_QUEUED, ('B', "221 bye\r\n")]),
    'deferred_both': seed(CLEAR, [('C', "EHLO early\r\n", True), S_GREET,
                                  ('B', "250 x\r\n", True),
                                  ('C', "STARTTLS\r\n")]),
    'starttls_in_txn': seed(CLEAR, [S_GREET, S_EHLO, S_EHLO_R,
                                    ('C', "MAIL FROM:<a@b>\r\n"), S_OK,
                                    ('C', "STARTTLS\r\n"),
                                    ('C', "STARTTLS x\r\n")]),
    'small_limit': seed(CLEAR | LINESMALL, [('B', "220 mx ESMTP\r\n"),
                                            ('C', "EHLO abcdefghijklmnop\r\n"
                                             "NOOP\r\n"),
                                            ('B', "250 mx\r\n250 Ok\r\n")],
                        param=4),
}

# ---------------------------------------------------------------- POP3

P_GREET = ('B', "+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n")
P_CAPA = [('C', "CAPA\r\n"),
          ('B', "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
           "AUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
           "XCLIENT\r\n.\r\n")]
P_OK = ('B', "+OK\r\n")

POP3 = {
    'full_stls': seed(CLEAR, [P_GREET] + P_CAPA +
                      [('C', "STLS\r\n")] + P_CAPA +
                      [('C', "USER alice\r\n"), P_OK, ('C', "PASS secret\r\n"),
                       ('B', "+OK Logged in.\r\n"), ('C', "STAT\r\n"),
                       ('B', "+OK 2 320\r\n"), ('C', "LIST\r\n"),
                       ('B', "+OK 2 messages:\r\n1 120\r\n2 200\r\n.\r\n"),
                       ('C', "RETR 1\r\n"),
                       ('B', "+OK 120 octets\r\nSubject: x\r\n\r\n..dot\r\n"
                        "+OK not a reply\r\nSTLS\r\n.\r\n"),
                       ('C', "QUIT\r\n"), ('B', "+OK Logging out.\r\n")]),
    'stls_injection': seed(CLEAR, [P_GREET, ('C', "STLS\r\nUSER bob\r\n")]),
    'stls_behind_pipeline': seed(CLEAR, [P_GREET, ('C', "CAPA\r\nNOOP\r\nSTLS\r\n"),
                                         P_CAPA[1], P_OK]),
    'credentials_clear': seed(CLEAR, [P_GREET,
                                      ('C', "USER alice\r\nPASS secret\r\n"
                                       "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n"
                                       "AUTH PLAIN\r\nauth\r\nuser x\r\n"
                                       "XCLIENT ADDR=1.2.3.4\r\n")]),
    'retr_multiline': seed(TLS, [P_GREET, ('C', "USER a\r\n"), P_OK,
                                 ('C', "PASS b\r\n"), P_OK,
                                 ('C', "RETR 1\r\nTOP 1 0\r\nUIDL\r\nLIST 1\r\n"),
                                 ('B', "+OK\r\nline\r\n..\r\n.x\r\n"),
                                 ('B', "\r\n.\r\n+OK\r\nhdr\r\n.\r\n"),
                                 ('B', "+OK\r\n1 abc\r\n.\r\n+OK 1 120\r\n")]),
    'retr_bare_lf': seed(IMPLICIT, [P_GREET, ('C', "RETR 1\r\n"),
                                    ('B', "+OK\r\nbare\n.\r\n")]),
    'sasl_tls': seed(IMPLICIT, [P_GREET, ('C', "AUTH PLAIN\r\n"),
                                ('B', "+ \r\n"), ('C', "AHUAcA==\r\n"),
                                ('B', "+OK Logged in.\r\n"),
                                ('C', "AUTH\r\n"),
                                ('B', "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")]),
    'bad_lines': seed(CLEAR, [P_GREET, ('C', "NOOP\nSTAT\rx\r\n\r\nLI\x00ST\r\n"
                                        "list  \r\nCAPA x\r\n"),
                              P_OK, P_OK]),
    'long_line': seed(CLEAR | LINE512, [P_GREET, ('C', "NOOP " + "x" * 600 +
                                                  "\r\nNOOP\r\n"), P_OK]),
    'unsolicited': seed(CLEAR, [P_GREET, ('B', "-ERR idle timeout\r\n")]),
    'stls_twice_tls': seed(TLS, [P_GREET, ('C', "STLS\r\n"), P_CAPA[0],
                                 P_CAPA[1]]),
}

# ---------------------------------------------------------------- IMAP

I_GREET = ('B', "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
           "IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n")
I_CAPA_R = ('B', "* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR STARTTLS "
            "LOGINDISABLED AUTH=PLAIN COMPRESS=DEFLATE ID IDLE\r\n"
            "a1 OK Pre-login capabilities listed, post-login capabilities "
            "have more.\r\n")

IMAP = {
    'full_starttls': seed(CLEAR, [I_GREET, ('C', "a1 CAPABILITY\r\n"), I_CAPA_R,
                                  ('C', "a2 STARTTLS\r\n"),
                                  ('C', "a3 CAPABILITY\r\n"),
                                  ('B', I_CAPA_R[1].replace("a1", "a3")),
                                  ('C', "a4 LOGIN alice secret\r\n"),
                                  ('B', "a4 OK [CAPABILITY IMAP4rev1 IDLE] "
                                   "Logged in\r\n"),
                                  ('C', "a5 SELECT INBOX\r\n"),
                                  ('B', "* 2 EXISTS\r\na5 OK [READ-WRITE] "
                                   "Select completed.\r\n"),
                                  ('C', "a6 FETCH 1 BODY[]\r\n"),
                                  ('B', "* 1 FETCH (BODY[] " +
                                   lit("* CAPABILITY AUTH=PLAIN STARTTLS\r\n"
                                       "\r\n") + ")\r\n"
                                   "a6 OK Fetch completed.\r\n"),
                                  ('C', "a7 LOGOUT\r\n"),
                                  ('B', "* BYE Logging out\r\na7 OK Logout "
                                   "completed.\r\n")]),
    'starttls_injection': seed(CLEAR, [I_GREET,
                                       ('C', "a STARTTLS\r\nb LOGIN u p\r\n")]),
    'starttls_behind': seed(CLEAR, [I_GREET, ('C', "a NOOP\r\nb STARTTLS\r\n"),
                                    ('B', "a OK done\r\n")]),
    'login_clear': seed(CLEAR, [I_GREET,
                                ('C', "a LOGIN alice secret\r\n"
                                 "b AUTHENTICATE PLAIN\r\n"
                                 "c login {5}\r\n"
                                 "d LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"
                                 "e authenticate plain AHUAcA==\r\n")]),
    'literal_sync': seed(TLS, [I_GREET,
                               ('C', "a1 LOGIN {5}\r\n"),
                               ('B', "+ OK\r\n"),
                               ('C', "alice {6}\r\n"),
                               ('B', "+ OK\r\n"),
                               ('C', "secret\r\n"),
                               ('B', "a1 OK Logged in\r\n"),
                               ('C', "a2 APPEND INBOX {20}\r\n"),
                               ('B', "a2 NO [OVERQUOTA] no\r\n"),
                               ('C', "a3 NOOP\r\n"), ('B', "a3 OK\r\n")]),
    'literal_plus': seed(TLS, [I_GREET,
                               ('C', "a1 APPEND INBOX (\\Seen) " +
                                lit("a2 LOGOUT\r\n* OK fake\r\nx\r\n",
                                    True) + "\r\na3 NOOP\r\n"),
                               ('B', "a1 OK appended\r\na3 OK\r\n")]),
    'literal8_binary': seed(IMPLICIT, [I_GREET,
                                       ('C', "b1 APPEND INBOX ~{4+}\r\n\x00\r\n\x01\r\n"),
                                       ('B', "b1 OK\r\n")]),
    'id_command': seed(CLEAR, [I_GREET,
                               ('C', 'a ID ("name" "client" "x-originating-ip" '
                                '"1.2.3.4" "X-Session-ID" NIL "version" {3}\r\n'),
                               ('C', '1.0)\r\nb ID NIL\r\nc ID ("x-forward-x" '
                                '{2+}\r\nab "k" "v")\r\n'),
                               ('B', "* ID NIL\r\na OK\r\n* ID NIL\r\nb OK\r\n"
                                "* ID NIL\r\nc OK\r\n")]),
    'idle': seed(TLS, [I_GREET, ('C', "a IDLE\r\n"), ('B', "+ idling\r\n"),
                       ('B', "* 3 EXISTS\r\n"), ('C', "DONE\r\n"),
                       ('B', "a OK IDLE terminated\r\n"),
                       ('C', "b IDLE\r\n"), ('B', "+ idling\r\n"),
                       ('C', "c NOOP\r\n"), ('B', "b OK\r\n")]),
    'idle_clear_server_ends': seed(CLEAR, [I_GREET, ('C', "a IDLE\r\n"),
                                           ('B', "+ idling\r\n"),
                                           ('B', "a OK done\r\n"),
                                           ('C', "b NOOP\r\n"), ('B', "b OK\r\n")]),
    'authenticate_tls': seed(IMPLICIT, [I_GREET,
                                        ('C', "a AUTHENTICATE PLAIN\r\n"),
                                        ('B', "+ \r\n"),
                                        ('C', "AGFsaWNlAHNlY3JldA==\r\n"),
                                        ('B', "a OK [CAPABILITY IMAP4rev1] ok\r\n"),
                                        ('C', "b AUTHENTICATE LOGIN\r\n"),
                                        ('B', "+ VXNlcm5hbWU6\r\n"),
                                        ('C', "*\r\n"), ('B', "b BAD cancelled\r\n")]),
    'preauth_clear': seed(CLEAR, [('B', "* PREAUTH [CAPABILITY IMAP4rev1] "
                                   "logged in as alice\r\n"),
                                  ('C', "a SELECT INBOX\r\n")]),
    'preauth_implicit': seed(IMPLICIT, [('B', "* PREAUTH ready\r\n"),
                                        ('C', "a1 CAPABILITY\r\n"), I_CAPA_R]),
    'capability_forms': seed(CLEAR, [('B', "* OK ready\r\n"),
                                     ('C', "a1 CAPABILITY\r\n"),
                                     ('B', "* CAPABILITY IMAP4rev1 AUTH=PLAIN "
                                      "auth=login STARTTLS\r\n"
                                      "a1 OK [CAPABILITY IMAP4rev1 AUTH=X "
                                      "LOGINDISABLED] done\r\n"),
                                     ('C', "a2 NOOP\r\n"),
                                     ('B', "* OK [CAPABILITY AUTH=PLAIN]\r\n"
                                      "a2 OK [CAPABILITY] x\r\n")]),
    'bad_lines': seed(CLEAR, [I_GREET,
                              ('C', "a NOOP\nb NOOP\rx\r\n\r\n+ x\r\n"
                               "c\r\n" + "t" * 70 + " NOOP\r\n"
                               'd NOOP "x {5+}\r\n12345\r\n'
                               "e NOOP {5+} x\r\nf NOOP x{3+}\r\nabc\r\n"
                               "g COMPRESS DEFLATE\r\n")]),
    'long_lines': seed(CLEAR | LINE512, [I_GREET,
                                         ('C', "a NOOP " + "x" * 600 + " {3+}\r\n"
                                          "abc\r\nb NOOP\r\n"),
                                         ('B', "* SEARCH " + "1 " * 400 + "\r\n"
                                          "b OK\r\n")]),
    'fetch_literal_backend': seed(TLS, [I_GREET, ('C', "a FETCH 1 BODY[]\r\n"),
                                        ('B', "* 1 FETCH (BODY[] {8}\r\n"),
                                        ('B', "a OK x\r\n)\r\na OK done\r\n")]),
    'continuation_literal_client': seed(CLEAR, [I_GREET,
                                                ('C', "a SEARCH CHARSET UTF-8 "
                                                 "TEXT {3}\r\n"),
                                                ('B', "+ go\r\n"),
                                                ('C', "abc {2}\r\n"),
                                                ('B', "a BAD no\r\n"),
                                                ('C', "b NOOP\r\n"),
                                                ('B', "b OK\r\n")]),
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'corpus')
    for proto, seeds in (('smtp', SMTP), ('pop3', POP3), ('imap', IMAP)):
        d = os.path.join(root, proto)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
