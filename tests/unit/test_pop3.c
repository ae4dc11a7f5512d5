/*
 * test_pop3.c - the POP3 filter against SPEC sections 3 and 8.
 *
 * Most cases are rows of a table run by filter_harness.h: bytes from the
 * client or the backend, and exactly what must reach the other side.  A
 * few tests drive the filter directly where a table cannot: a body cut
 * at every possible point, a body spread over many evbuffer chains, long
 * backend lines, and what reaches the log.
 */
#include "config.h"

#include <stdbool.h>

#include "filter_harness.h"
#include "log.h"
#include "mailtlsd.h"

/* Replies the filter writes itself: the exact wire text is the contract. */
#define R_GO		"+OK Begin TLS negotiation\r\n"
#define R_TOOLONG	"-ERR Line too long\r\n"
#define R_BADCHAR	"-ERR Invalid characters in command line\r\n"
#define R_EMPTY		"-ERR Empty command line\r\n"
#define R_SYNTAX	"-ERR Syntax error\r\n"
#define R_BLANK		"-ERR Leading, trailing or double blank in " \
			"argument\r\n"
#define R_NOPERM	"-ERR Command not permitted\r\n"
#define R_CLEAR		"-ERR [AUTH] Plaintext authentication disallowed " \
			"on non-secure connection, use STLS first\r\n"
#define R_TLSUP		"-ERR TLS already active\r\n"
#define R_NOTLS		"-ERR STLS not available\r\n"
#define R_NOTYET	"-ERR Command not permitted before STLS\r\n"
#define R_ERRORS	"-ERR Too many errors\r\n"
#define R_UNAVAIL	"-ERR [SYS/TEMP] Service temporarily unavailable\r\n"

#define GREETING	"+OK POP3 ready <1896.697170952@backend.test>\r\n"
#define GREET		{ 'B', GREETING, NULL, GREETING, FILTER_CONTINUE, 0 }
#define STLS_OK		{ 'C', "STLS\r\n", NULL, R_GO, FILTER_STARTTLS, 0 }
#define LOGIN_TLS						\
	{ 'C', "USER bob\r\nPASS secret\r\n",				\
	    "USER bob\r\nPASS secret\r\n", NULL, FILTER_CONTINUE, 0 },	\
	{ 'B', "+OK\r\n+OK Logged in.\r\n", NULL,			\
	    "+OK\r\n+OK Logged in.\r\n", FILTER_CONTINUE, 0 }

/* A Dovecot-like CAPA reply and what each phase must make of it. */
#define CAPA_HEAD	"+OK Capability list follows\r\nCAPA\r\nTOP\r\n" \
			"UIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
#define CAPA_B		CAPA_HEAD "USER\r\nSASL PLAIN LOGIN\r\n.\r\n"
#define CAPA_CLEAR	CAPA_HEAD "STLS\r\n.\r\n"
#define CAPA_TLS	CAPA_B
/* A backend that offers STLS itself, twice, in different case. */
#define CAPA_B_STLS	"+OK\r\nCAPA\r\nSTLS\r\nUSER\r\nstls\r\n" \
			"SASL PLAIN\r\nTOP\r\n.\r\n"
#define CAPA_STLS_CLEAR	"+OK\r\nCAPA\r\nTOP\r\nSTLS\r\n.\r\n"
#define CAPA_STLS_TLS	"+OK\r\nCAPA\r\nUSER\r\nSASL PLAIN\r\nTOP\r\n.\r\n"

/* A message whose lines look like replies, commands and terminators. */
#define RETR_B		"+OK 120 octets\r\n+OK fake\r\n-ERR fake\r\n"	\
			"STLS\r\nUSER root\r\n..\r\n..STLS\r\n...\r\n"	\
			". \r\n.x\r\n\r\n \r\n.\r\n"

#define X10	"xxxxxxxxxx"
#define N8(s)	s s s s s s s s
#define N64(s)	N8(N8(s))

/*
 * SPEC 12, backend_tls = starttls: our CAPA and STLS in cleartext, the
 * client held and told nothing, our greeting after the handshake.
 */
#define BT_GREET	"+OK mx.example.test ready\r\n"
#define BT_UP(c)							\
	{ 'C', c, NULL, NULL, FILTER_CONTINUE, 0 },			\
	{ 'B', GREETING, "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },	\
	{ 'B', CAPA_B_STLS, "STLS\r\n", NULL, FILTER_CONTINUE, 0 }
#define BT_FAIL(nm, ...)						\
	{ .name = "backend starttls: " nm, .tls_active = true,		\
	  .backend_tls = BACKEND_TLS_STARTTLS, .steps = { __VA_ARGS__ } }

static const struct fh_case pop3_cases[] = {
/* SPEC 12: backend_tls = starttls. */
{ .name = "backend starttls: dialogue, our greeting, client's CAPA inside "
  "TLS gets the server's post-TLS list",
  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS, .steps = {
	BT_UP("CAPA\r\n"),
	{ 'B', "+OK Begin TLS\r\n", "CAPA\r\n", BT_GREET,
	    FILTER_BACKEND_STARTTLS, 0 },
	{ 'B', CAPA_B, NULL, CAPA_TLS, FILTER_CONTINUE, 0 },
	LOGIN_TLS } },
{ .name = "backend starttls: client leg STLS is ours",
  .starttls_service = true, .backend_tls = BACKEND_TLS_STARTTLS, .steps = {
	BT_UP(""),
	{ 'B', "+OK Begin TLS\r\n", NULL, BT_GREET,
	    FILTER_BACKEND_STARTTLS, 0 },
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_CLEAR, FILTER_CONTINUE, 0 },
	{ 'C', "USER bob\r\n", NULL, R_CLEAR, FILTER_CONTINUE, 0 } } },
BT_FAIL("the server speaks first inside TLS -> -ERR after our greeting",
	BT_UP(""),
	{ 'B', "+OK Begin TLS\r\n", NULL, BT_GREET,
	    FILTER_BACKEND_STARTTLS, 0 },
	{ 'B', "+OK again\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("no STLS in CAPA -> -ERR, STLS not sent",
	{ 'C', "USER bob\r\n", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', GREETING, "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("STLS only as a longer word does not count",
	{ 'B', GREETING, "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nSTLSX\r\nX STLS\r\n.\r\n", NULL, R_UNAVAIL,
	    FILTER_CLOSE, 0 }),
BT_FAIL("CAPA refused -> -ERR",
	{ 'B', GREETING, "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR no CAPA\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("STLS refused -> -ERR",
	BT_UP("QUIT\r\n"),
	{ 'B', "-ERR not now\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("-ERR greeting -> our -ERR, never the server's",
	{ 'B', "-ERR busy\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("malformed greeting",
	{ 'B', "* OK imap\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("malformed reply to STLS",
	BT_UP(""),
	{ 'B', "+ go\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("bare LF in CAPA",
	{ 'B', GREETING, "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nSTLS\n.\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("CAPA before it was asked for",
	{ 'B', GREETING CAPA_B_STLS, NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
BT_FAIL("bytes after the go-ahead cut, never relayed",
	BT_UP("NOOP\r\n"),
	{ 'B', "+OK Begin TLS\r\n+OK injected\r\n", "NOOP\r\n", BT_GREET,
	    FILTER_BACKEND_STARTTLS, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 }),
/* SPEC 10: authentication failures. */
{ .name = "-ERR to PASS, APOP, AUTH counted; then refused, not sent",
  .tls_active = true, .max_auth_failures = 3, .auth_failures_want = 3,
  .auth_refusals_want = 3, .steps = {
	GREET,
	{ 'C', "USER bob\r\n", "USER bob\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "PASS bad\r\n", "PASS bad\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR [AUTH] Authentication failed.\r\n", NULL,
	    "-ERR [AUTH] Authentication failed.\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n",
	    "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "-ERR [AUTH] no\r\n", NULL, "-ERR [AUTH] no\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, "+ \r\n", FILTER_CONTINUE, 0 },
	{ 'C', "Zm9v\r\n", "Zm9v\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR [AUTH] no\r\n", NULL, "-ERR [AUTH] no\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "PASS bad\r\n", NULL,
	    "-ERR [SYS/TEMP] Too many authentication failures\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "apop bob c4c9334bac560ecc979e58001b3e22fb\r\n", NULL,
	    "-ERR [SYS/TEMP] Too many authentication failures\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "AUTH PLAIN Zm9v\r\n", NULL,
	    "-ERR [SYS/TEMP] Too many authentication failures\r\n",
	    FILTER_CONTINUE, 0 },
	/* AUTH alone lists mechanisms, USER carries no secret. */
	{ 'C', "AUTH\r\n", "AUTH\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nPLAIN\r\n.\r\n", NULL, "+OK\r\nPLAIN\r\n.\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "USER eve\r\n", "USER eve\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR no\r\n", NULL, "-ERR no\r\n", FILTER_CONTINUE, 0 },
} },
{ .name = "pipelined PASS: one in flight counts as a possible failure",
  .tls_active = true, .max_auth_failures = 1, .auth_failures_want = 1,
  .auth_refusals_want = 1, .steps = {
	GREET,
	{ 'C', "USER bob\r\nPASS a\r\nUSER bob\r\nPASS b\r\n",
	    "USER bob\r\nPASS a\r\nUSER bob\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n-ERR x\r\n+OK\r\n", NULL, "+OK\r\n-ERR x\r\n+OK\r\n"
	    "-ERR [SYS/TEMP] Too many authentication failures\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ .name = "+OK to PASS and -ERR to others: no failure",
  .tls_active = true, .max_auth_failures = 1, .auth_failures_want = 0,
  .auth_refusals_want = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR no capa\r\n", NULL, "-ERR no capa\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "USER bob\r\n", "USER bob\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "PASS good\r\n", "PASS good\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK Logged in.\r\n", NULL, "+OK Logged in.\r\n",
	    FILTER_CONTINUE, 0 },
} },
/* Greeting. */
{ "greeting relayed", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "QUIT\r\n", "QUIT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "greeting -ERR relayed then close", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "-ERR [SYS/TEMP] Too busy\r\n", NULL,
	    "-ERR [SYS/TEMP] Too busy\r\n", FILTER_CLOSE, 0 },
} },
{ "malformed greeting closes", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "* OK IMAP4rev1 ready\r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "greeting [XCLIENT] hidden", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "+OK [XCLIENT] Dovecot ready.\r\n", NULL,
	    "+OK Dovecot ready.\r\n", FILTER_CONTINUE, 0 },
} },
{ "greeting [xclient] alone hidden", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "+OK [xclient]\r\n", NULL, "+OK \r\n", FILTER_CONTINUE, 0 },
} },
{ "greeting other codes kept", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "+OK [XCLIENTS] ready\r\n", NULL, "+OK [XCLIENTS] ready\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "greeting split across reads", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'B', "+OK PO", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "P3 ready\r", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "\n", NULL, "+OK POP3 ready\r\n", FILTER_CONTINUE, 0 },
} },
{ "client waits for the greeting", false, true, true, 0, .max_errors = 0, .steps = {
	{ 'C', "CAPA\r\nUSER bob\r\n", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', GREETING, "CAPA\r\n", GREETING, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_CLEAR R_CLEAR, FILTER_CONTINUE, 0 },
} },

/* CAPA rewriting. */
{ "capa cleartext: STLS added, USER and SASL removed", false, true, true,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_CLEAR, FILTER_CONTINUE, 0 },
} },
{ "capa cleartext: backend STLS kept once", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B_STLS, NULL, CAPA_STLS_CLEAR, FILTER_CONTINUE, 0 },
	{ 'C', "capa\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B_STLS, NULL, CAPA_STLS_CLEAR, FILTER_CONTINUE, 0 },
} },
{ "capa after STLS: STLS removed, USER and SASL kept", false, true, true,
    0, .max_errors = 0, .steps = {
	GREET,
	STLS_OK,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B_STLS, NULL, CAPA_STLS_TLS, FILTER_CONTINUE, 0 },
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_TLS, FILTER_CONTINUE, 0 },
} },
{ "capa implicit TLS: STLS removed, USER and SASL kept", true, false,
    false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B_STLS, NULL, CAPA_STLS_TLS, FILTER_CONTINUE, 0 },
} },
{ "capa never advertises XCLIENT", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nXCLIENT ADDR PORT\r\nTOP\r\n.\r\n", NULL,
	    "+OK\r\nTOP\r\n.\r\n", FILTER_CONTINUE, 0 },
} },
{ "capa keywords split at HTAB and any case (issue 8)", false, true, true,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nsasl\tPLAIN\r\nUser\r\n\tUSER\r\nSASL \t LOGIN\r\n"
	    "Stls\r\nXClient\tADDR\r\nTOP\r\n.\r\n", NULL,
	    "+OK\r\nTOP\r\nSTLS\r\n.\r\n", FILTER_CONTINUE, 0 },
} },
{ "capa keywords split at HTAB inside TLS", true, false, false, 0, .max_errors = 0,
    .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nsasl\tPLAIN\r\nUser\r\nstls\t\r\nXClient\tADDR\r\n"
	    "TOP\r\n.\r\n", NULL, "+OK\r\nsasl\tPLAIN\r\nUser\r\nTOP\r\n.\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "capa split at awkward points", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nTO", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
	{ 'B', "P\r\nUSER\r\n.", NULL, "TOP\r\n", FILTER_CONTINUE, 0 },
	{ 'B', "\r", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "\n", NULL, "STLS\r\n.\r\n", FILTER_CONTINUE, 0 },
} },
{ "capa with an argument refused", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA all\r\n", NULL, R_SYNTAX, FILTER_CONTINUE, 0 },
} },
{ "capa -ERR is a single line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nNOOP\r\n", "CAPA\r\nNOOP\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "-ERR Unknown command\r\n+OK\r\n", NULL,
	    "-ERR Unknown command\r\n+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "capa line with bare LF closes", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nTOP\n.\r\n", NULL, "+OK\r\n", FILTER_CLOSE, 0 },
} },

/* Canonical forwarding. */
{ "commands forwarded canonically", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "noop\r\nlist  1 \r\nTop 1   5\r\nuidl \r\n",
	    "NOOP\r\nLIST 1\r\nTOP 1 5\r\nUIDL\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n+OK 1 120\r\n+OK\r\nSubject: x\r\n.\r\n"
	    "+OK\r\n1 abc\r\n.\r\n", NULL,
	    "+OK\r\n+OK 1 120\r\n+OK\r\nSubject: x\r\n.\r\n"
	    "+OK\r\n1 abc\r\n.\r\n", FILTER_CONTINUE, 0 },
} },
{ "USER and PASS keep their argument verbatim", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "user bob smith\r\nPASS my secret phrase\r\n",
	    "USER bob smith\r\nPASS my secret phrase\r\n", NULL,
	    FILTER_CONTINUE, 0 },
} },

{ "USER arguments canonical: runs of SP collapse", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "user  x\r\nUser bob   smith \r\n",
	    "USER x\r\nUSER bob smith\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "PASS argument is the rest of the line, byte-exact", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "pass a b:c\"d \\e\r\n", "PASS a b:c\"d \\e\r\n", NULL,
	    FILTER_CONTINUE, 0 },
} },
/*
 * pop3_restarg_canonical(): servers strip, keep or re-join the blanks of
 * a password (RFC 1939 section 7), so a PASS they could read two ways is
 * refused, never forwarded (issue 8, SPEC 8.4).
 */
{ "PASS with a leading, trailing or double blank refused", true, false,
    false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "PASS  secret\r\nPASS secret \r\nPASS my  secret\r\n"
	    "PASS \r\nPASS   \r\n", NULL,
	    R_BLANK R_BLANK R_BLANK R_BLANK R_BLANK, FILTER_CONTINUE, 0 },
	{ 'C', "PASS secret\r\n", "PASS secret\r\n", NULL,
	    FILTER_CONTINUE, 0 },
} },
{ "HTAB or control in a command line refused (issue 8)", true, false,
    false, 0, .max_errors = 0, .steps = {
	GREET,
	/* A server trimming blanks would read "UIDL" (multi-line). */
	{ 'C', "UIDL \t\r\n", NULL, R_BADCHAR, FILTER_CONTINUE, 0 },
	{ 'C', "LIST\t1\r\nLIST 1\t\r\nUSER\tbob\r\n", NULL,
	    R_BADCHAR R_BADCHAR R_BADCHAR, FILTER_CONTINUE, 0 },
	{ 'C', "PASS a\tb\r\nPASS a\x7f\r\nUSER a\x0b\r\nRETR 1\x0c\r\n", NULL,
	    R_BADCHAR R_BADCHAR R_BADCHAR R_BADCHAR, FILTER_CONTINUE, 0 },
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "blank before the keyword refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', " LIST\r\n  USER bob\r\n", NULL, R_SYNTAX R_SYNTAX,
	    FILTER_CONTINUE, 0 },
} },

/* The cleartext allow-list: CAPA, STLS, QUIT (SPEC section 3). */
{ "cleartext: CAPA and QUIT forwarded", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "capa\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n.\r\n", NULL, "+OK\r\nSTLS\r\n.\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "quit\r\n", "QUIT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK bye\r\n", NULL, "+OK bye\r\n", FILTER_CONTINUE, 0 },
} },
{ "cleartext: every other command refused, never forwarded", false, true,
    true, 0, .max_errors = 20, .steps = {
	GREET,
	{ 'C', "STAT\r\nLIST\r\nLIST 1\r\nRETR 1\r\nTOP 1 0\r\n", NULL,
	    R_NOTYET R_NOTYET R_NOTYET R_NOTYET R_NOTYET, FILTER_CONTINUE, 0 },
	{ 'C', "NOOP\r\nUIDL\r\nDELE 1\r\nRSET\r\n", NULL,
	    R_NOTYET R_NOTYET R_NOTYET R_NOTYET, FILTER_CONTINUE, 0 },
	{ 'C', "LANG\r\nUTF8\r\nXYZZY\r\n", NULL,
	    R_NOTYET R_NOTYET R_NOTYET, FILTER_CONTINUE, 0 },
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "cleartext: lines of a refused AUTH never forwarded (issue 8)", false,
    true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\ndGVzdA\r\nAUTH LOGIN\r\nYm9i\r\nc2VjcmV0\r\n",
	    NULL, R_CLEAR R_NOTYET R_CLEAR R_NOTYET R_NOTYET,
	    FILTER_CONTINUE, 0 },
} },

/* STLS. */
{ "STLS go-ahead, then inside TLS refused", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	STLS_OK,
	{ 'C', "STLS\r\n", NULL, R_TLSUP, FILTER_CONTINUE, 0 },
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "STLS in lower case", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "stls\r\n", NULL, R_GO, FILTER_STARTTLS, 0 },
} },
{ "STLS with pipelined command closes", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STLS\r\nCAPA\r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "STLS with a partial pipelined line closes", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STLS\r\nC", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "STLS waits for an earlier pipelined reply", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nSTLS\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_CLEAR R_GO, FILTER_STARTTLS, 0 },
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B, NULL, CAPA_TLS, FILTER_CONTINUE, 0 },
} },
{ "STLS waits across a split multi-line reply", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nSTLS\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nTOP\r\n.\r", NULL, "+OK\r\nTOP\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'B', "\n", NULL, "STLS\r\n.\r\n" R_GO, FILTER_STARTTLS, 0 },
} },
{ "bytes sent while STLS waits close", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nSTLS\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	/* Held unread; at its turn the go-ahead is never given. */
	{ 'C', "USER bob\r\n", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n.\r\n", NULL, "+OK\r\nSTLS\r\n.\r\n",
	    FILTER_CLOSE, 0 },
} },
{ "STLS after a local refusal", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "USER bob\r\nSTLS\r\n", NULL, R_CLEAR R_GO,
	    FILTER_STARTTLS, 0 },
} },
{ "STLS with an argument refused", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STLS now\r\n", NULL, R_SYNTAX, FILTER_CONTINUE, 0 },
	STLS_OK,
} },
{ "STLS: a backend -ERR while it waits is passed on, then close", false,
    true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nSTLS\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR\r\n-ERR bye\r\n", NULL, "-ERR\r\n-ERR bye\r\n",
	    FILTER_CLOSE, 0 },
} },
{ "STLS inside TLS counts as an error", true, false, false, 0, .max_errors = 2,
    .steps = {
	GREET,
	{ 'C', "STLS\r\n", NULL, R_TLSUP, FILTER_CONTINUE, 0 },
	{ 'C', "STLS\r\n", NULL, R_TLSUP R_ERRORS, FILTER_CLOSE, 0 },
} },
{ "STLS on implicit TLS refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STLS\r\n", NULL, R_TLSUP, FILTER_CONTINUE, 0 },
	{ 'C', "STLS extra\r\n", NULL, R_TLSUP, FILTER_CONTINUE, 0 },
} },
{ "STLS in TRANSACTION state refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	LOGIN_TLS,
	{ 'C', "STLS\r\n", NULL, R_TLSUP, FILTER_CONTINUE, 0 },
} },
{ "no STLS where the service has no STARTTLS", false, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STLS\r\n", NULL, R_NOTLS, FILTER_CONTINUE, 0 },
	{ 'C', "CAPA\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', CAPA_B_STLS, NULL, "+OK\r\nCAPA\r\nTOP\r\n.\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "PASS x\r\n", NULL, R_CLEAR, FILTER_CONTINUE, 0 },
} },

/* Credentials in cleartext. */
{ "USER refused in cleartext", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "USER bob\r\n", NULL, R_CLEAR, FILTER_CONTINUE, 0 },
} },
{ "PASS refused in cleartext", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "PASS secret\r\n", NULL, R_CLEAR, FILTER_CONTINUE, 0 },
} },
{ "APOP refused in cleartext", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n", NULL,
	    R_CLEAR, FILTER_CONTINUE, 0 },
} },
{ "AUTH refused in cleartext", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\nAUTH\r\nauth login\r\n",
	    NULL, R_CLEAR R_CLEAR R_CLEAR, FILTER_CONTINUE, 0 },
	/* No continuation was sent: this is no SASL response. */
	{ 'C', "AGJvYgBzZWNyZXQ=\r\n", NULL, R_SYNTAX, FILTER_CONTINUE, 0 },
} },
{ "USER PASS APOP AUTH refused and counted", false, true, true, 0, .max_errors = 4,
    .steps = {
	GREET,
	{ 'C', "USER bob\r\nPASS x\r\nAPOP bob 0123\r\n", NULL,
	    R_CLEAR R_CLEAR R_CLEAR, FILTER_CONTINUE, 0 },
	{ 'C', "AUTH PLAIN\r\nCAPA\r\n", NULL, R_CLEAR R_ERRORS,
	    FILTER_CLOSE, 0 },
} },
{ "credentials pipelined between commands", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nUSER bob\r\nPASS secret\r\nQUIT\r\n",
	    "CAPA\r\nQUIT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR\r\n+OK\r\n", NULL, "-ERR\r\n" R_CLEAR R_CLEAR "+OK\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "credentials forwarded after STLS", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	STLS_OK,
	LOGIN_TLS,
	{ 'C', "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n",
	    "APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n", NULL,
	    FILTER_CONTINUE, 0 },
} },

/* XCLIENT: never from a client. */
{ "XCLIENT refused in cleartext", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "XCLIENT ADDR=10.0.0.1 PORT=1\r\n", NULL, R_NOPERM,
	    FILTER_CONTINUE, 0 },
} },
{ "XCLIENT refused after STLS", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	STLS_OK,
	{ 'C', "xclient addr=10.0.0.1\r\n", NULL, R_NOPERM,
	    FILTER_CONTINUE, 0 },
} },
{ "XCLIENT refused on implicit TLS", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "XCLIENT\r\n", NULL, R_NOPERM, FILTER_CONTINUE, 0 },
} },
{ "XCLIENT inside TLS counts as an error", true, false, false, 0, .max_errors = 1,
    .steps = {
	GREET,
	{ 'C', "XCLIENT ADDR=10.0.0.1\r\nNOOP\r\n", NULL, R_NOPERM R_ERRORS,
	    FILTER_CLOSE, 0 },
} },
{ "XCLIENT refused in TRANSACTION state", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	LOGIN_TLS,
	{ 'C', "XCLIENT ADDR=10.0.0.1\r\n", NULL, R_NOPERM,
	    FILTER_CONTINUE, 0 },
} },

/* Multi-line bodies. */
{ "RETR body relayed byte-exact", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', RETR_B, NULL, RETR_B, FILTER_CONTINUE, 0 },
	{ 'C', "STAT\r\n", "STAT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK 1 120\r\n", NULL, "+OK 1 120\r\n", FILTER_CONTINUE, 0 },
} },
{ "RETR body and next reply in one read", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nSTAT\r\n", "RETR 1\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', RETR_B "+OK 1 120\r\n", NULL, RETR_B "+OK 1 120\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "RETR split between CR and LF of the end", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nSTAT\r\n", "RETR 1\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nline\r\n.\r", NULL, "+OK\r\nline\r\n.\r",
	    FILTER_CONTINUE, 0 },
	{ 'B', "\n+OK 1 2\r\n", NULL, "\n+OK 1 2\r\n", FILTER_CONTINUE, 0 },
} },
{ "RETR split between dot and CRLF", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nSTAT\r\n", "RETR 1\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nline\r\n.", NULL, "+OK\r\nline\r\n.",
	    FILTER_CONTINUE, 0 },
	{ 'B', "\r\n+OK 1 2\r\n", NULL, "\r\n+OK 1 2\r\n", FILTER_CONTINUE, 0 },
} },
{ "RETR split before the final dot", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nSTAT\r\n", "RETR 1\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nline\r", NULL, "+OK\r\nline\r", FILTER_CONTINUE, 0 },
	{ 'B', "\n", NULL, "\n", FILTER_CONTINUE, 0 },
	{ 'B', ".\r\n+OK 1 2\r\n", NULL, ".\r\n+OK 1 2\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "RETR stuffed dot split, not an end", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nSTAT\r\n", "RETR 1\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n.", NULL, "+OK\r\n.", FILTER_CONTINUE, 0 },
	{ 'B', ".\r\n", NULL, ".\r\n", FILTER_CONTINUE, 0 },
	{ 'B', "+OK 1 2\r\n", NULL, "+OK 1 2\r\n", FILTER_CONTINUE, 0 },
	{ 'B', ".\r\n+OK 1 2\r\n", NULL, ".\r\n+OK 1 2\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "RETR status line split", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+O", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "K\r\nbody\r\n.\r\n", NULL, "+OK\r\nbody\r\n.\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "RETR empty body", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nNOOP\r\n", "RETR 1\r\nNOOP\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK 0 octets\r\n.\r\n+OK\r\n", NULL,
	    "+OK 0 octets\r\n.\r\n+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "-ERR to RETR is a single line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 9\r\nSTAT\r\n", "RETR 9\r\nSTAT\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "-ERR There's no message 9.\r\n+OK 1 2\r\n", NULL,
	    "-ERR There's no message 9.\r\n+OK 1 2\r\n", FILTER_CONTINUE, 0 },
} },
{ "body: dot after a bare LF closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nabc\n.\r\n", NULL, "+OK\r\nabc\n", FILTER_CLOSE, 0 },
} },
{ "body: dot line ended by bare LF closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nabc\r\n.\nSTAT\r\n", NULL, "+OK\r\nabc\r\n.",
	    FILTER_CLOSE, 0 },
} },
{ "body: dot CR without LF closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n.\r", NULL, "+OK\r\n.\r", FILTER_CONTINUE, 0 },
	{ 'B', "x\r\n.\r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "body: bare LF inside lines relayed", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\n", "RETR 1\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\na\nb\rc\r\n\n x\r\n.\r\n", NULL,
	    "+OK\r\na\nb\rc\r\n\n x\r\n.\r\n", FILTER_CONTINUE, 0 },
} },
{ "LIST without argument is multi-line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "LIST\r\n", "LIST\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n", NULL,
	    "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "LIST with argument is single-line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "LIST 2\r\nNOOP\r\n", "LIST 2\r\nNOOP\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK 2 200\r\n+OK\r\n", NULL, "+OK 2 200\r\n+OK\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "LIST with argument: a dot line is unsolicited", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "LIST 2\r\n", "LIST 2\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK 2 200\r\n.\r\n", NULL, "+OK 2 200\r\n", FILTER_CLOSE, 0 },
} },
{ "UIDL with and without argument", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "UIDL\r\nUIDL 1\r\n", "UIDL\r\nUIDL 1\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n.\r\n"
	    "+OK 1 whqtswO00WBw418f9t5JxYwZ\r\n", NULL,
	    "+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n.\r\n"
	    "+OK 1 whqtswO00WBw418f9t5JxYwZ\r\n", FILTER_CONTINUE, 0 },
} },
{ "TOP is multi-line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "TOP 1 0\r\nNOOP\r\n", "TOP 1 0\r\nNOOP\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nSubject: .\r\n\r\n.\r\n+OK\r\n", NULL,
	    "+OK\r\nSubject: .\r\n\r\n.\r\n+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "LANG without argument is multi-line", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "LANG\r\nLANG en\r\n", "LANG\r\nLANG en\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK Languages\r\nen English\r\n.\r\n+OK en\r\n", NULL,
	    "+OK Languages\r\nen English\r\n.\r\n+OK en\r\n",
	    FILTER_CONTINUE, 0 },
} },

/* SASL inside TLS. */
{ "AUTH with continuation inside TLS", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, "+ \r\n", FILTER_CONTINUE, 0 },
	{ 'C', "AGJvYgBzZWNyZXQ=\r\n", "AGJvYgBzZWNyZXQ=\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK Logged in.\r\n", NULL, "+OK Logged in.\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'C', "STAT\r\n", "STAT\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "AUTH after STLS, pipelined response held", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	STLS_OK,
	{ 'C', "AUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\nSTAT\r\n", "AUTH PLAIN\r\n",
	    NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", "AGJvYgBzZWNyZXQ=\r\n", "+ \r\n",
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK Logged in.\r\n", "STAT\r\n", "+OK Logged in.\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "AUTH LOGIN: the line after a continuation is a response", true, false,
    false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH LOGIN\r\nSTAT\r\n", "AUTH LOGIN\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+ VXNlcm5hbWU6\r\n", "STAT\r\n", "+ VXNlcm5hbWU6\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'B', "+\r\n", NULL, "+\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "*\r\n", "*\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR [AUTH] Authentication failed.\r\n", NULL,
	    "-ERR [AUTH] Authentication failed.\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "AUTH with initial response holds what follows", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\nSTAT\r\n",
	    "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK Logged in.\r\n", "STAT\r\n", "+OK Logged in.\r\n",
	    FILTER_CONTINUE, 0 },
} },
{ "AUTH response with bare LF becomes a cancel", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, "+ \r\n", FILTER_CONTINUE, 0 },
	{ 'C', "AGJv\nYgBz\r\n", "*\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR Authentication aborted\r\n", "YGBZ\r\n",
	    "-ERR Authentication aborted\r\n", FILTER_CONTINUE, 0 },
} },
{ "AUTH response with NUL becomes a cancel", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, "+ \r\n", FILTER_CONTINUE, 0 },
	{ 'C', "AG\0v\r\n", "*\r\n", NULL, FILTER_CONTINUE, 6 },
} },
{ "AUTH response not base64 becomes a cancel", true, false, false, 0, .max_errors = 0,
    .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, "+ \r\n", FILTER_CONTINUE, 0 },
	{ 'C', "QUIT now\r\n", "*\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "-ERR Authentication aborted\r\n", NULL,
	    "-ERR Authentication aborted\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "AUTH without argument lists mechanisms", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH\r\nNOOP\r\n", "AUTH\r\nNOOP\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+OK\r\n", NULL,
	    "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "continuation outside AUTH closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "STAT\r\n", "STAT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "two continuations without a response close", true, false, false,
    0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+ \r\n+ \r\n", NULL, "+ \r\n", FILTER_CLOSE, 0 },
} },

/* Ambiguous and over-long client lines. */
{ "over-long line refused and skipped", true, false, false, 32, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NOOP " X10 X10 X10 X10 "\r\nSTAT\r\n", "STAT\r\n", R_TOOLONG,
	    FILTER_CONTINUE, 0 },
} },
{ "over-long line arriving in pieces", true, false, false, 32, .max_errors = 0, .steps = {
	GREET,
	{ 'C', X10 X10 X10 X10, NULL, R_TOOLONG, FILTER_CONTINUE, 0 },
	{ 'C', "yyyy", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'C', "zz\r", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'C', "\nSTAT\r\n", "STAT\r\n", NULL, FILTER_CONTINUE, 0 },
} },
{ "line at the limit accepted", true, false, false, 32, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NOOP " X10 X10 "1234567\r\n", "NOOP " X10 X10 "1234567\r\n",
	    NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
	{ 'C', "NOOP " X10 X10 "12345678\r\n", NULL, R_TOOLONG,
	    FILTER_CONTINUE, 0 },
} },
{ "NUL in a command line refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NO\0OP\r\nSTAT\r\n", "STAT\r\n", R_BADCHAR,
	    FILTER_CONTINUE, 13 },
} },
{ "bare LF refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NOOP\nSTAT\r\n", "STAT\r\n", R_BADCHAR, FILTER_CONTINUE, 0 },
} },
{ "bare CR refused", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NO\rOP\r\nUSER\rbob\r\n", NULL, R_BADCHAR R_BADCHAR,
	    FILTER_CONTINUE, 0 },
} },
{ "empty line refused", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "\r\n", NULL, R_EMPTY, FILTER_CONTINUE, 0 },
} },
{ "malformed keywords refused", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "N@OP\r\n NOOP\r\nABCDEFGHIJKLMNOPQ\r\nNOOP\tx\r\n", NULL,
	    R_SYNTAX R_SYNTAX R_SYNTAX R_BADCHAR, FILTER_CONTINUE, 0 },
	{ 'C', "X1234567890\r\n", "X1234567890\r\n", NULL,
	    FILTER_CONTINUE, 0 },
} },

/* Reply order under pipelining. */
{ "pipelined: local refusal keeps its place", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nUSER bob\r\nSTAT\r\nQUIT\r\n",
	    "CAPA\r\nQUIT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nTOP\r\n.\r\n", NULL,
	    "+OK\r\nTOP\r\nSTLS\r\n.\r\n" R_CLEAR R_NOTYET,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK bye\r\n", NULL, "+OK bye\r\n", FILTER_CONTINUE, 0 },
} },
{ "pipelined: refusal waits for a body", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "RETR 1\r\nXCLIENT A=B\r\n\r\n", "RETR 1\r\n", NULL,
	    FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\nhello\r\n", NULL, "+OK\r\nhello\r\n",
	    FILTER_CONTINUE, 0 },
	{ 'B', ".\r\n", NULL, ".\r\n" R_NOPERM R_EMPTY, FILTER_CONTINUE, 0 },
} },
{ "at most FILTER_PENDING_MAX commands pending", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', N64("NOOP\r\n") "NOOP\r\nNOOP\r\nUSER\r\n",
	    N64("NOOP\r\n"), NULL, FILTER_CONTINUE, 0 },
	{ 'B', N64("+OK\r\n"), "NOOP\r\nNOOP\r\nUSER\r\n", N64("+OK\r\n"),
	    FILTER_CONTINUE, 0 },
} },
{ "QUIT: nothing read after it", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "QUIT\r\nNOOP\r\n", "QUIT\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK Logging out.\r\n", NULL, "+OK Logging out.\r\n",
	    FILTER_CONTINUE, 0 },
} },

/* Error limit. */
{ "error limit closes", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nNOOP\r\n", NULL,
	    R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY
	    R_EMPTY R_EMPTY R_ERRORS, FILTER_CLOSE, 0 },
} },
{ "error limit waits for the pending reply", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "CAPA\r\nUSER a\r\nPASS b\r\nXCLIENT\r\n\r\n\r\n\r\n\r\n"
	    "\r\nN@\r\n\r\n", "CAPA\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n.\r\n", NULL, "+OK\r\nSTLS\r\n.\r\n" R_CLEAR R_CLEAR
	    R_NOPERM R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_SYNTAX R_EMPTY
	    R_ERRORS, FILTER_CLOSE, 0 },
} },
{ "errors before the limit do not close", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nNOOP\r\n", "NOOP\r\n",
	    R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY
	    R_EMPTY, FILTER_CONTINUE, 0 },
} },
{ "max_errors of the service is the limit", true, false, false, 0, .max_errors = 3,
    .steps = {
	GREET,
	{ 'C', "\r\n\r\n", NULL, R_EMPTY R_EMPTY, FILTER_CONTINUE, 0 },
	{ 'C', "\r\nNOOP\r\n", NULL, R_EMPTY R_ERRORS, FILTER_CLOSE, 0 },
} },
{ "error count not reset at STLS", false, true, true, 0, .max_errors = 3, .steps = {
	GREET,
	{ 'C', "USER a\r\nSTAT\r\n", NULL, R_CLEAR R_NOTYET,
	    FILTER_CONTINUE, 0 },
	STLS_OK,
	{ 'C', "XCLIENT\r\nNOOP\r\n", NULL, R_NOPERM R_ERRORS,
	    FILTER_CLOSE, 0 },
} },
{ "refused SASL lines count in cleartext", false, true, true, 0, .max_errors = 3,
    .steps = {
	GREET,
	{ 'C', "AUTH PLAIN\r\nAGJvYgBz\r\nAGJv\r\nAGJv\r\n", NULL,
	    R_CLEAR R_NOTYET R_NOTYET R_ERRORS, FILTER_CLOSE, 0 },
} },

/* Backend misbehaviour. */
{ "unsolicited +OK closes", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'B', "+OK extra\r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
{ "unsolicited -ERR relayed, then close", false, true, true, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'B', "-ERR Disconnected for inactivity.\r\n", NULL,
	    "-ERR Disconnected for inactivity.\r\n", FILTER_CLOSE, 0 },
} },
{ "malformed status line closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OKAY\r\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
/* SPEC 9: fresh backend for the TLS phase. */
{ "send_proxy stls: fresh greeting swallowed, USER held", false, true, true,
    0, .send_proxy = SEND_PROXY_V2, .steps = {
	GREET,
	STLS_OK,
	{ 'C', "USER bob\r\n", NULL, NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK again\r\n", "USER bob\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\r\n", NULL, "+OK\r\n", FILTER_CONTINUE, 0 },
} },
{ "send_proxy stls: fresh -ERR greeting -> temporary failure", false, true,
    true, 0, .send_proxy = SEND_PROXY_V2, .steps = {
	GREET,
	STLS_OK,
	{ 'B', "-ERR busy\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 },
} },
{ "backend status with bare LF closes", true, false, false, 0, .max_errors = 0, .steps = {
	GREET,
	{ 'C', "NOOP\r\n", "NOOP\r\n", NULL, FILTER_CONTINUE, 0 },
	{ 'B', "+OK\n", NULL, NULL, FILTER_CLOSE, 0 },
} },
};

/* ------------------------------------------------------------------ */

static void
test_case(void **state)
{
	fh_run(PROTO_POP3, &proto_pop3_ops, *state);
}

/* A filter driven directly (filter_harness.h): STARTTLS unless in TLS. */
static void
drv_init(struct fh_drv *d, bool tls, size_t max_line)
{
	const struct fh_case	 c = { .tls_active = tls,
				    .starttls_service = !tls,
				    .max_line = max_line };

	fh_drv_open(d, PROTO_POP3, &proto_pop3_ops, &c, "00000000000000ab",
	    "192.0.2.7");
}

/* The same, past the greeting. */
static void
drv_start(struct fh_drv *d, bool tls, size_t max_line)
{
	static const char	 g[] = GREETING;

	drv_init(d, tls, max_line);
	fh_drv_feed(d, 'B', g, strlen(g), FILTER_CONTINUE);
	fh_drv_expect(d->to_c, g, strlen(g));
}

static const char	 split_body[] = RETR_B;

/* The body cut into two reads at every possible point. */
static void
test_body_every_split(void **state)
{
	static const char	 next[] = "+OK 1 120\r\n";
	struct fh_drv		 d;
	size_t			 k, n = strlen(split_body);

	(void)state;
	for (k = 0; k <= n; k++) {
		drv_start(&d, true, 0);
		fh_drv_feed(&d, 'C', "RETR 1\r\nSTAT\r\n", 14, FILTER_CONTINUE);
		fh_drv_expect(d.to_b, "RETR 1\r\nSTAT\r\n", 14);
		fh_drv_feed(&d, 'B', split_body, k, FILTER_CONTINUE);
		fh_drv_feed(&d, 'B', split_body + k, n - k, FILTER_CONTINUE);
		fh_drv_feed(&d, 'B', next, strlen(next), FILTER_CONTINUE);
		fh_drv_expect(d.to_c, RETR_B "+OK 1 120\r\n",
		    n + strlen(next));
		fh_drv_close(&d);
	}
}

/* One byte per read, and a body spread over more chains than one peek. */
static void
test_body_bytewise_and_chains(void **state)
{
	struct fh_drv	 d;
	size_t		 i, n = strlen(split_body);

	(void)state;
	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', "RETR 1\r\nSTAT\r\n", 14, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "RETR 1\r\nSTAT\r\n", 14);
	for (i = 0; i < n; i++)
		fh_drv_feed(&d, 'B', split_body + i, 1, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+OK 1 2\r\n", 9, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, RETR_B "+OK 1 2\r\n", n + 9);

	/* Every byte its own chain: many peeks of POP3_BODY_IOV vectors. */
	fh_drv_feed(&d, 'C', "RETR 1\r\n", 8, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "RETR 1\r\n", 8);
	for (i = 0; i < n; i++)
		evbuffer_add_reference(d.bin, split_body + i, 1, NULL, NULL);
	assert_int_equal(fh_drv_pump(&d), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, RETR_B, n);
	fh_drv_close(&d);
}

/* A large body goes through whole, in bounded steps. */
static void
test_body_large(void **state)
{
	struct fh_drv	 d;
	char		*body, *copy;
	size_t		 i, n = 1024 * 1024;

	(void)state;
	body = malloc(n);
	assert_non_null(body);
	for (i = 0; i < n; i++)
		body[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' :
		    (i % 78 == 0) ? '.' : 'a';
	memcpy(body, "+OK\r\n", 5);
	memcpy(body + n - 5, "\r\n.\r\n", 5);
	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', "RETR 1\r\nNOOP\r\n", 14, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "RETR 1\r\nNOOP\r\n", 14);
	for (i = 0; i < n; i += 4096)
		fh_drv_feed(&d, 'B', body + i, n - i < 4096 ? n - i : 4096,
		    FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+OK\r\n", 5, FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.to_c), n + 5);
	copy = malloc(n);
	assert_non_null(copy);
	evbuffer_remove(d.to_c, copy, n);
	assert_memory_equal(copy, body, n);
	fh_drv_expect(d.to_c, "+OK\r\n", 5);
	fh_drv_close(&d);
	free(copy);
	free(body);
}

/* Backend lines are bounded too: a line that never ends closes. */
static void
test_backend_line_too_long(void **state)
{
	struct fh_drv	 d;
	char		*line;
	size_t		 n = DEFAULT_POP3_LINE_MAX + 16;

	(void)state;
	line = malloc(n);
	assert_non_null(line);
	memset(line, 'a', n);
	memcpy(line, "+OK ", 4);
	drv_init(&d, true, 0);
	fh_drv_feed(&d, 'B', line, n, FILTER_CLOSE);
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_string_equal(filter_reason(d.f),
	    "backend line too long");
	fh_drv_close(&d);

	/* Exactly at the limit it is a greeting. */
	drv_init(&d, true, 512);
	memcpy(line + DEFAULT_POP3_LINE_MAX, "\r\n", 2);
	fh_drv_feed(&d, 'B', line, DEFAULT_POP3_LINE_MAX + 2, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, line, DEFAULT_POP3_LINE_MAX + 2);
	fh_drv_close(&d);
	free(line);
}

/*
 * A SASL response longer than the core's FILTER_SASL_LINE_MAX is consumed
 * whole and replaced by "*": the backend still sees one response, and the
 * tail of the line is never read as a command.
 */
static void
test_sasl_too_long(void **state)
{
	struct fh_drv	 d;
	char		*line;
	size_t		 n = FILTER_SASL_LINE_MAX + 100;

	(void)state;
	line = malloc(n);
	assert_non_null(line);
	memset(line, 'A', n);
	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', "AUTH PLAIN\r\n", 12, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "AUTH PLAIN\r\n", 12);
	fh_drv_feed(&d, 'B', "+ \r\n", 4, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, "+ \r\n", 4);
	fh_drv_feed(&d, 'C', line, n, FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.to_b), 0);
	fh_drv_feed(&d, 'C', "\r\nNOOP\r\n", 8, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "*\r\n", 3);
	fh_drv_feed(&d, 'B', "-ERR Authentication aborted\r\n", 29,
	    FILTER_CONTINUE);
	fh_drv_expect(d.to_c, "-ERR Authentication aborted\r\n", 29);
	fh_drv_expect(d.to_b, "NOOP\r\n", 6);
	fh_drv_close(&d);
	free(line);
}

static void
test_reasons(void **state)
{
	struct fh_drv	 d;

	(void)state;
	drv_start(&d, false, 0);
	fh_drv_feed(&d, 'C', "STLS\r\nCAPA\r\n", 12, FILTER_CLOSE);
	assert_string_equal(filter_reason(d.f),
	    "pipelined data after STARTTLS");
	/* Closed for good: no more input is looked at. */
	fh_drv_feed(&d, 'C', "NOOP\r\n", 6, FILTER_CLOSE);
	assert_int_equal(evbuffer_get_length(d.to_b), 0);
	fh_drv_close(&d);

	drv_start(&d, false, 0);
	fh_drv_feed(&d, 'B', "+OK\r\n", 5, FILTER_CLOSE);
	assert_string_equal(filter_reason(d.f),
	    "unsolicited backend reply");
	fh_drv_close(&d);
}

/* SPEC 10: -ERR Timeout between replies, never inside a body. */
static void
test_timeout(void **state)
{
	static const char	 to[] = "-ERR Timeout\r\n";
	static const char	 part[] = "+OK 120 octets\r\nReceived: x\r\n";
	struct fh_drv		 d;

	(void)state;
	drv_start(&d, true, 0);
	assert_true(filter_timeout(d.f, d.to_c, "idle timeout"));
	fh_drv_expect(d.to_c, to, strlen(to));
	assert_true(d.f->closing);
	assert_string_equal(filter_reason(d.f), "idle timeout");
	fh_drv_close(&d);

	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', "RETR 1\r\n", 8, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', part, strlen(part), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, part, strlen(part));
	assert_false(filter_timeout(d.f, d.to_c, "idle timeout"));
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_true(d.f->closing);
	fh_drv_close(&d);

	/* The body ended: a boundary again. */
	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', "RETR 1\r\n", 8, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', part, strlen(part), FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "\r\n.\r\n", 5, FILTER_CONTINUE);
	evbuffer_drain(d.to_c, evbuffer_get_length(d.to_c));
	assert_true(filter_timeout(d.f, d.to_c, "idle timeout"));
	fh_drv_expect(d.to_c, to, strlen(to));
	fh_drv_close(&d);
}

static void
test_ops(void **state)
{
	struct evbuffer	*b = evbuffer_new();

	(void)state;
	assert_string_equal(proto_pop3_ops.name, "pop3");
	assert_string_equal(proto_pop3_ops.alpn, "pop3");
	proto_pop3_ops.unavailable(b, "mx.example.test");
	fh_drv_expect(b, R_UNAVAIL, strlen(R_UNAVAIL));
	evbuffer_free(b);
}

/* What reaches the log: client address and verb, never credentials. */
static void
test_log(void **state)
{
	static const char	 clear[] = "USER bob\r\nPASS s3cr3t\r\n"
	    "AUTH PLAIN AGJvYgBzM2NyM3Q=\r\nXCLIENT ADDR=1.2.3.4\r\n";
	static const char	 sasl[] = "AUTH PLAIN\r\nAGJvYgBzM2NyM3Q=\r\n";
	struct fh_drv		 d;
	struct fh_log		 logcap;
	char			 buf[8192];

	(void)state;
	fh_log_begin(&logcap);

	drv_start(&d, false, 0);
	fh_drv_feed(&d, 'C', clear, strlen(clear), FILTER_CONTINUE);
	fh_drv_feed(&d, 'C', "STLS\r\nNOOP\r\n", 12, FILTER_CLOSE);
	fh_drv_close(&d);
	drv_start(&d, true, 0);
	fh_drv_feed(&d, 'C', sasl, strlen(sasl), FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+ \r\n", 4, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+OK Logged in.\r\n", 16, FILTER_CONTINUE);
	fh_drv_close(&d);

	fh_log_end(&logcap, buf, sizeof(buf));
	assert_non_null(strstr(buf, "00000000000000ab"));
	assert_non_null(strstr(buf, "192.0.2.7"));
	assert_non_null(strstr(buf, "USER in cleartext refused"));
	assert_non_null(strstr(buf, "PASS in cleartext refused"));
	assert_non_null(strstr(buf, "AUTH in cleartext refused"));
	assert_non_null(strstr(buf, "XCLIENT refused"));
	assert_non_null(strstr(buf, "pipelined bytes after STARTTLS"));
	assert_non_null(strstr(buf, "TRANSACTION"));
	assert_null(strstr(buf, "bob"));
	assert_null(strstr(buf, "s3cr3t"));
	assert_null(strstr(buf, "AGJvYgBzM2NyM3Q"));
	assert_null(strstr(buf, "1.2.3.4"));
}

int
main(void)
{
	static const struct CMUnitTest direct[] = {
		cmocka_unit_test(test_body_every_split),
		cmocka_unit_test(test_body_bytewise_and_chains),
		cmocka_unit_test(test_body_large),
		cmocka_unit_test(test_backend_line_too_long),
		cmocka_unit_test(test_sasl_too_long),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_log),
	};

	return fh_main("pop3", pop3_cases, sizeof(pop3_cases) /
	    sizeof(pop3_cases[0]), test_case, direct,
	    sizeof(direct) / sizeof(direct[0]));
}
