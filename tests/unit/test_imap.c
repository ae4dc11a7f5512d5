/*
 * test_imap.c - the IMAP filter against SPEC sections 3 and 8.
 *
 * Most cases are rows of a table run by filter_harness.h: bytes from the
 * client or the backend, and exactly what must reach the other side.  A
 * few tests drive the filter directly where a table cannot: literals cut
 * at every possible point, large literals and long lines streamed, the
 * FIFO limit, and what reaches the log.
 */
#include "config.h"

#include <stdbool.h>

#include "filter_harness.h"
#include "log.h"
#include "mailtlsd.h"

#define CONT		FILTER_CONTINUE
#define CLOSE		FILTER_CLOSE
#define GO		FILTER_STARTTLS

/* Replies the filter writes itself: the exact wire text is the contract. */
#define R_CLEAR		" NO [PRIVACYREQUIRED] Plaintext authentication " \
			"disallowed on non-secure connection, use STARTTLS " \
			"first\r\n"
#define R_GO		" OK Begin TLS negotiation now\r\n"
#define R_TLSUP		" BAD TLS already active\r\n"
#define R_NOARGS	" BAD Command takes no arguments\r\n"
#define R_BADSPACE	" BAD Tokens must be separated by one space\r\n"
#define R_SYNTAX	" BAD Invalid command syntax\r\n"
#define R_CLEARCMD	" BAD Command not permitted before STARTTLS\r\n"
#define R_LITPLUS	" BAD Non-synchronizing literal not supported\r\n"
#define R_LIT8		" BAD Binary literal not supported\r\n"
#define R_BYE_LITERAL	"* BYE Literal type not supported\r\n"
#define R_NOTLS		" BAD STARTTLS not available\r\n"
#define R_BADCHAR	" BAD Invalid characters in command line\r\n"
#define R_TOOLONG	"* BAD Line too long\r\n"
#define R_EMPTY		"* BAD Empty command line\r\n"
#define R_BADTAG	"* BAD Invalid tag\r\n"
#define R_NOVERB	" BAD Missing command\r\n"
#define R_BADQUOTE	" BAD Invalid quoted string\r\n"
#define R_BADATOM	" BAD Invalid characters in atom\r\n"
#define R_PAREN		" BAD Unbalanced parentheses\r\n"
#define R_BADLIT	" BAD Invalid literal\r\n"
#define R_TOOBIG	" BAD [TOOBIG] Literal too large\r\n"
#define R_BADID		" BAD Invalid ID parameters\r\n"
#define R_AUTHLIT	" BAD Literal not allowed in AUTHENTICATE\r\n"
#define R_NODONE	"* BAD Expected DONE\r\n"
#define R_COMPRESS	" NO [CANNOT] COMPRESS is not available\r\n"
#define R_CONT		"+ Ready for literal data\r\n"
#define R_ERRORS	"* BYE Too many errors\r\n"
#define R_BYE_TOOBIG	"* BYE [TOOBIG] Literal too large\r\n"
#define R_BYE_TOOLONG	"* BYE Line too long\r\n"
#define R_BYE_SYNTAX	"* BYE Invalid command continuation\r\n"
#define R_BYE_PREAUTH	"* BYE [UNAVAILABLE] Pre-authenticated session " \
			"refused in cleartext\r\n"
#define R_BYE_BACKEND	"* BYE [UNAVAILABLE] Invalid response from server\r\n"
#define R_UNAVAIL	"* BYE [UNAVAILABLE] Service temporarily " \
			"unavailable\r\n"

/* A Dovecot-like greeting and what each phase must make of it. */
#define G_HEAD		"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS " \
			"ID ENABLE IDLE LITERAL+"
#define G_TAIL		"] Dovecot ready.\r\n"
#define G_B		G_HEAD " STARTTLS AUTH=PLAIN AUTH=LOGIN" G_TAIL
#define G_CLEAR		"* OK [CAPABILITY IMAP4rev1 LOGIN-REFERRALS ID " \
			"ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED" G_TAIL
#define G_TLS		G_HEAD " AUTH=PLAIN AUTH=LOGIN" G_TAIL

#define GREETING	"* OK IMAP ready\r\n"
#define GREET		{ 'B', GREETING, NULL, GREETING, CONT, 0 }
/* A backend that reads {n+} and ~{n} (RFC 7888, RFC 3516). */
#define GREETING_LP	"* OK [CAPABILITY IMAP4rev1 LITERAL+ BINARY] ready\r\n"
#define GREETLP		{ 'B', GREETING_LP, NULL, GREETING_LP, CONT, 0 }
#define GREETLP_C	{ 'B', GREETING_LP, NULL, "* OK [CAPABILITY " \
			    "IMAP4rev1 LITERAL+ BINARY STARTTLS LOGINDISABLED] " \
			    "ready\r\n", CONT, 0 }

#define X10	"xxxxxxxxxx"
#define X100	X10 X10 X10 X10 X10 X10 X10 X10 X10 X10
#define X600	X100 X100 X100 X100 X100 X100

/*
 * A FETCH body (57 bytes) whose lines look like a capability list, the
 * pending command's completion and a STARTTLS command.
 */
#define BODY57		"* CAPABILITY STARTTLS AUTH=PLAIN\r\n" \
			"a OK fake\r\nb STARTTLS\r\n"
#define FETCH_B		"* 1 FETCH (BODY[] {57}\r\n" BODY57 ")\r\n"

/*
 * SPEC 12, backend_tls = starttls: our CAPABILITY and STARTTLS in
 * cleartext (the greeting's capabilities ignored), the client held and
 * told nothing, our greeting after the handshake, the client's commands
 * inside TLS.
 */
#define BT_CAPA		"mt1 CAPABILITY\r\n"
#define BT_TLS		"mt2 STARTTLS\r\n"
#define BT_CAPA_R	"* CAPABILITY IMAP4rev1 LITERAL+ STARTTLS " \
			"LOGINDISABLED\r\nmt1 OK done\r\n"
#define BT_GO		"mt2 OK Begin TLS negotiation now\r\n"
#define BT_GREET	"* OK mx.example.test ready\r\n"
#define BT_UP(c) \
	{ 'C', c, NULL, NULL, CONT, 0 }, \
	{ 'B', "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", BT_CAPA, \
	    NULL, CONT, 0 }, \
	{ 'B', BT_CAPA_R, BT_TLS, NULL, CONT, 0 }
#define BT_FAIL(nm, ...) \
	{ .name = "backend starttls: " nm, .tls_active = true, \
	    .backend_tls = BACKEND_TLS_STARTTLS, .steps = { __VA_ARGS__, \
	    { 0 } } }

/* Untagged lines during our own command: 256 are allowed, not more. */
#define BT_U1		"* NO x\r\n"
#define BT_U4		BT_U1 BT_U1 BT_U1 BT_U1
#define BT_U16		BT_U4 BT_U4 BT_U4 BT_U4
#define BT_U256		BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 \
			BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 BT_U16 \
			BT_U16 BT_U16

static const struct fh_case imap_cases[] = {
	/* ---- SPEC 12: backend_tls = starttls ---- */
	{ .name = "backend starttls: dialogue, our greeting, client's "
	    "command inside TLS, literal types forgotten",
	    .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	    .steps = { BT_UP("a CAPABILITY\r\n"),
		{ 'B', BT_GO, "a CAPABILITY\r\n", BT_GREET,
		    FILTER_BACKEND_STARTTLS, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na OK x\r\n",
		    NULL, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na OK x\r\n",
		    CONT, 0 },
		/* LITERAL+ was only said in cleartext. */
		{ 'C', "b APPEND box {5+}\r\nhello\r\n", NULL,
		    "b" R_LITPLUS, CONT, 0 },
		{ 0 } } },
	{ .name = "backend starttls: client leg starttls, STARTTLS ours",
	    .starttls_service = true, .backend_tls = BACKEND_TLS_STARTTLS,
	    .steps = { BT_UP(""),
		{ 'B', BT_GO, NULL, BT_GREET, FILTER_BACKEND_STARTTLS, 0 },
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT,
		    0 },
		{ 'B', "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n"
		    "a OK x\r\n", NULL, "* CAPABILITY IMAP4rev1 STARTTLS "
		    "LOGINDISABLED\r\na OK x\r\n", CONT, 0 },
		{ 'C', "b LOGIN u p\r\n", NULL, "b" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "backend starttls: capabilities in the tagged OK and in "
	    "any case count",
	    .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	    .steps = {
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "mt1 OK [CAPABILITY IMAP4rev1 starttls] x\r\n", BT_TLS,
		    NULL, CONT, 0 },
		{ 'B', "mt2 ok go\r\n", NULL, BT_GREET,
		    FILTER_BACKEND_STARTTLS, 0 },
		{ 0 } } },
	BT_FAIL("greeting STARTTLS alone does not count -> BYE",
		{ 'B', "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n", BT_CAPA,
		    NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1\r\nmt1 OK done\r\n", NULL,
		    R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("PREAUTH greeting -> BYE, nothing sent",
		{ 'C', "a LOGIN u p\r\n", NULL, NULL, CONT, 0 },
		{ 'B', "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] in\r\n", NULL,
		    R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("BYE greeting -> BYE of ours",
		{ 'B', "* BYE busy\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("no STARTTLS -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n", NULL, NULL,
		    CONT, 0 },
		{ 'B', "mt1 OK done\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("STARTTLS refused -> BYE",
		BT_UP("a NOOP\r\n"),
		{ 'B', "mt2 NO later\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("CAPABILITY refused -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "mt1 BAD what\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("another tag -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "a OK done\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("a continuation -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "+ go on\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("a literal -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "* CAPABILITY {8}\r\n", NULL, R_UNAVAIL, FILTER_CLOSE,
		    0 }),
	BT_FAIL("untagged data -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', "* 3 EXISTS\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	{ .name = "backend starttls: 256 untagged lines to our command",
	    .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	    .steps = {
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', BT_U256, NULL, NULL, CONT, 0 },
		{ 'B', "mt1 OK [CAPABILITY IMAP4rev1 STARTTLS] x\r\n", BT_TLS,
		    NULL, CONT, 0 },
		/* The count starts again for our STARTTLS. */
		{ 'B', BT_U256, NULL, NULL, CONT, 0 },
		{ 'B', "mt2 OK go\r\n", NULL, BT_GREET,
		    FILTER_BACKEND_STARTTLS, 0 },
		{ 0 } } },
	BT_FAIL("257 untagged lines to our command -> BYE",
		{ 'B', "* OK hi\r\n", BT_CAPA, NULL, CONT, 0 },
		{ 'B', BT_U256 BT_U1, NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("257 untagged lines to our STARTTLS -> BYE",
		BT_UP("a NOOP\r\n"),
		{ 'B', BT_U256 BT_U1, NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("the server speaks first inside TLS -> BYE after ours",
		BT_UP(""),
		{ 'B', BT_GO, NULL, BT_GREET, FILTER_BACKEND_STARTTLS, 0 },
		{ 'B', "* OK again\r\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("bare LF -> BYE",
		{ 'B', "* OK hi\n", NULL, R_UNAVAIL, FILTER_CLOSE, 0 }),
	BT_FAIL("a response before our CAPABILITY was sent -> BYE",
		{ 'B', "* OK hi\r\n" BT_CAPA_R, NULL, R_UNAVAIL, FILTER_CLOSE,
		    0 }),
	BT_FAIL("bytes after the go-ahead cut, never relayed",
		BT_UP("a NOOP\r\n"),
		{ 'B', BT_GO "* OK [ALERT] injected\r\na OK fake\r\n",
		    "a NOOP\r\n", BT_GREET, FILTER_BACKEND_STARTTLS, 0 },
		{ 'B', "a OK done\r\n", NULL, "a OK done\r\n", CONT, 0 }),

	/* ---- SPEC section 3 (issue 8): one row per rule ---- */
	{ .name = "courier_nonsync_without_literal_plus",
	    .starttls_service = true, .steps = {
		/* Courier has no LITERAL+: the "literal" would be a LOGIN. */
		GREET,
		{ 'C', "a NOOP {27+}\r\nb LOGIN user pass\r\n", NULL,
		    "a" R_LITPLUS, CONT, 0 },
		{ 'C', "12345678\r\nc NOOP\r\n", "c NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "nonsync_with_literal_plus", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box {5+}\r\nhello\r\n",
		    "a APPEND box {5+}\r\nhello\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "nonsync_literal_minus_small", .tls_active = true, .steps = {
		{ 'B', "* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", CONT, 0 },
		{ 'C', "a APPEND box {4096+}\r\n", "a APPEND box {4096+}\r\n",
		    NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "nonsync_literal_minus_big", .tls_active = true, .steps = {
		{ 'B', "* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", CONT, 0 },
		{ 'C', "a APPEND box {4097+}\r\n", NULL, "a" R_LITPLUS, CONT,
		    0 },
		{ 0 } } },
	{ .name = "nonsync_tracking_reset_by_new_list", .tls_active = true,
	    .steps = {
		GREETLP,
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1\r\na OK\r\n", NULL,
		    "* CAPABILITY IMAP4rev1\r\na OK\r\n", CONT, 0 },
		{ 'C', "b APPEND box {1+}\r\nx\r\nc NOOP\r\n", "c NOOP\r\n",
		    "b" R_LITPLUS, CONT, 0 },
		{ 0 } } },
	{ .name = "nonsync_on_continuation_closes", .tls_active = true,
	    .steps = {
		/* The first line has left: no tagged BAD is possible. */
		GREET,
		{ 'C', "a APPEND box {1}\r\n", "a APPEND box {1}\r\n", NULL,
		    CONT, 0 },
		{ 'B', "+ go\r\n", NULL, "+ go\r\n", CONT, 0 },
		{ 'C', "x {3+}\r\n", "x", R_BYE_LITERAL, CLOSE, 0 },
		{ 0 } } },
	{ .name = "binary_without_capability", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a APPEND box ~{4}\r\nb NOOP\r\n", "b NOOP\r\n",
		    "a" R_LIT8, CONT, 0 },
		{ 0 } } },
	{ .name = "binary_with_capability", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box ~{4}\r\n", "a APPEND box ~{4}\r\n", NULL,
		    CONT, 0 },
		{ 'B', "+ go\r\n", NULL, "+ go\r\n", CONT, 0 },
		{ 'C', "\x01\r\n\xff\r\n", "\x01\r\n\xff\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "htab_after_verb_login", .tls_active = true, .steps = {
		/* Courier splits at HTAB too: never forwarded. */
		GREET,
		{ 'C', "a LOGIN\tuser pass\r\nb NOOP\r\n", "b NOOP\r\n",
		    "a" R_BADCHAR, CONT, 0 },
		{ 0 } } },
	{ .name = "htab_after_verb_login_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a LOGIN\tuser pass\r\n", NULL, "a" R_BADCHAR, CONT, 0 },
		{ 0 } } },
	{ .name = "htab_after_verb_id", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a ID\t(\"x-originating-ip\" \"1.2.3.4\")\r\n", NULL,
		    "a" R_BADCHAR, CONT, 0 },
		{ 0 } } },
	{ .name = "control_chars_refused", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a SELECT\x0b" "box\r\nb SELECT \x01x\r\n"
		    "c SELECT box\x7f\r\nd SELECT b\xe4x\r\ne NOOP\x0c\r\n"
		    "f SELECT box\t\r\n", NULL,
		    "a" R_BADCHAR "b" R_BADCHAR "c" R_BADCHAR "d" R_BADCHAR
		    "e" R_BADCHAR "f" R_BADCHAR, CONT, 0 },
		{ 0 } } },
	{ .name = "control_chars_in_quoted_kept", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a SELECT \"a\tb\xc3\xa4\"\r\n",
		    "a SELECT \"a\tb\xc3\xa4\"\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "double_space_between_args", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a FETCH 1  FLAGS\r\nb SELECT box \r\nc FETCH 1 ( FLAGS)"
		    "\r\n", NULL, "a" R_BADSPACE "b" R_BADSPACE "c" R_BADSPACE,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "cleartext_allow_list", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a SELECT INBOX\r\nb FETCH 1 BODY[]\r\nc ENABLE "
		    "UTF8=ACCEPT\r\nd UID FETCH 1 FLAGS\r\ne LOGOUT\r\n",
		    "e LOGOUT\r\n", "a" R_CLEARCMD "b" R_CLEARCMD "c" R_CLEARCMD
		    "d" R_CLEARCMD, CONT, 0 },
		{ 0 } } },
	{ .name = "cleartext_allowed_verbs", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a CAPABILITY\r\nb noop\r\nc ID NIL\r\nd Logout\r\n",
		    "a CAPABILITY\r\nb NOOP\r\nc ID NIL\r\nd LOGOUT\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "cleartext_noop_literal_framed", .starttls_service = true,
	    .steps = {
		/* Allowed verbs keep their literals, framed, never commands. */
		GREETLP_C,
		{ 'C', "a NOOP {12+}\r\nb STARTTLS\r\n\r\nc NOOP {5}\r\n",
		    "a NOOP {12+}\r\nb STARTTLS\r\n\r\nc NOOP {5}\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "cleartext_base64_after_refused_auth",
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n", NULL,
		    "a" R_CLEAR "AGJvYgBzZWNyZXQ=" R_NOVERB, CONT, 0 },
		{ 0 } } },
	{ .name = "cleartext_literal_after_refused_login",
	    .starttls_service = true, .steps = {
		/* No "+": the literal the client holds back is never sent. */
		GREET,
		{ 'C', "a LOGIN {4}\r\n", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "b LOGIN x y\r\npass\r\n", NULL, "b" R_CLEAR
		    "pass" R_NOVERB, CONT, 0 },
		{ 0 } } },
	{ .name = "compress_counts_toward_max_errors", .tls_active = true,
	    .max_errors = 3, .steps = {
		GREET,
		{ 'C', "a COMPRESS DEFLATE\r\nb COMPRESS DEFLATE\r\n"
		    "c COMPRESS DEFLATE\r\nd NOOP\r\n", NULL,
		    "a" R_COMPRESS "b" R_COMPRESS "c" R_COMPRESS R_ERRORS,
		    CLOSE, 0 },
		{ 0 } } },
	{ .name = "compress_refused_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a COMPRESS DEFLATE\r\n", NULL, "a" R_COMPRESS, CONT, 0 },
		{ 0 } } },
	{ .name = "id_every_x_key_removed", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a ID (\"x-foo\" \"1\" \"X-Client-Transport\" \"TLS\" "
		    "\"name\" \"mutt\" \"x-multiplex\" \"0\" \"X-\" NIL)\r\n",
		    "a ID (\"name\" \"mutt\")\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "capability_htab_separated_hidden", .starttls_service = true,
	    .steps = {
		{ 'B', "* OK [CAPABILITY IMAP4rev1\tAUTH=PLAIN\tAUTH=LOGIN "
		    "\t STARTTLS\tCOMPRESS=DEFLATE] hi\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n",
		    CONT, 0 },
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "*\tCAPABILITY\tIMAP4rev1\tAUTH=PLAIN\r\na OK\r\n", NULL,
		    "*\tCAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na OK\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "capability_strict_split_found", .starttls_service = true,
	    .steps = {
		/* A client splitting at SP only sees tag "x<HTAB>y" and a list. */
		GREET,
		{ 'B', "x\ty OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", NULL,
		    "x\ty OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi"
		    "\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "compress_hidden_after_tls", .tls_active = true, .steps = {
		{ 'B', "* OK [CAPABILITY IMAP4rev1 compress=deflate "
		    "AUTH=PLAIN] hi\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "canonical_reserialisation", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)])"
		    "\r\nb append box () {007+}\r\n1234567\r\n",
		    "a UID fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)])\r\n"
		    "b APPEND box () {7+}\r\n1234567\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "quoted_then_atom_refused", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a SELECT \"box\"x\r\nb LIST \"\" ( \"x\")\r\n", NULL,
		    "a" R_SYNTAX "b" R_BADSPACE, CONT, 0 },
		{ 0 } } },
	{ .name = "paren_close_without_open", .tls_active = true, .steps = {
		/* imap_lex: a ")" closing nothing (a strict parser stops). */
		GREET,
		{ 'C', "a LOGIN u p)\r\nb FETCH 1 (FLAGS))\r\nc NOOP\r\n",
		    "c NOOP\r\n", "a" R_PAREN "b" R_PAREN, CONT, 0 },
		{ 0 } } },
	{ .name = "paren_list_left_open", .tls_active = true, .steps = {
		/* imap_lex: no command may end with a list open. */
		GREET,
		{ 'C', "a FETCH 1 (FLAGS\r\nb STATUS box ((MESSAGES)\r\n"
		    "c NOOP\r\n", "c NOOP\r\n", "a" R_PAREN "b" R_PAREN, CONT,
		    0 },
		{ 0 } } },
	{ .name = "paren_open_across_literal", .tls_active = true, .steps = {
		/* Lists balance over the whole command, literals included. */
		GREETLP,
		{ 'C', "a SEARCH (SUBJECT {2+}\r\nab FROM x)\r\n",
		    "a SEARCH (SUBJECT {2+}\r\nab FROM x)\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "paren_left_open_at_continuation_closes", .tls_active = true,
	    .steps = {
		/* The first line has left: no tagged BAD is possible. */
		GREETLP,
		{ 'C', "a SEARCH (SUBJECT {2+}\r\nab\r\n",
		    "a SEARCH (SUBJECT {2+}\r\nab", R_BYE_SYNTAX, CLOSE, 0 },
		{ 0 } } },
	{ .name = "paren_close_then_atom", .tls_active = true, .steps = {
		/* imap_lex: after ")" only SP, ")" or a section's "]". */
		GREET,
		{ 'C', "a FETCH 1 (FLAGS)x\r\nb STORE 1 FLAGS (\\Seen)\\Draft"
		    "\r\nc NOOP\r\n", "c NOOP\r\n", "a" R_SYNTAX "b" R_SYNTAX,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "atom_backslash_only_as_flag", .tls_active = true,
	    .steps = {
		/* imap_lex_atom: "\" starts a flag, nothing else. */
		GREET,
		{ 'C', "a LOGIN u\\ p\r\nb SELECT a\\b\r\nc STORE 1 FLAGS \\"
		    "\r\nd STORE 1 FLAGS \\\\Seen\r\ne STORE 1 FLAGS \\Seen]"
		    "\r\nf NOOP\r\n", "f NOOP\r\n",
		    "a" R_BADATOM "b" R_BADATOM "c" R_BADATOM "d" R_BADATOM
		    "e" R_BADATOM, CONT, 0 },
		{ 0 } } },
	{ .name = "atom_wildcard_outside_list", .tls_active = true,
	    .steps = {
		/* imap_lex_atom: "%" only in list-mailbox (LIST, LSUB). */
		GREET,
		{ 'C', "a SELECT Sent%\r\nb SEARCH SUBJECT 100%\r\n"
		    "c NOOP\r\n", "c NOOP\r\n", "a" R_BADATOM "b" R_BADATOM,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "atom_star_outside_sequence_set", .tls_active = true,
	    .steps = {
		/* imap_seqset: "*" only as a seq-number (or in LIST). */
		GREET,
		{ 'C', "a SELECT box*\r\nb FETCH 1:** FLAGS\r\nc FETCH *:"
		    " FLAGS\r\nd FETCH 0:* FLAGS\r\ne FETCH 1:2:* FLAGS\r\n"
		    "f UID FETCH 4294967296:* FLAGS\r\ng NOOP\r\n", "g NOOP\r\n",
		    "a" R_BADATOM "b" R_BADATOM "c" R_BADATOM "d" R_BADATOM
		    "e" R_BADATOM "f" R_BADATOM, CONT, 0 },
		{ 0 } } },
	{ .name = "quoted_utf8_malformed", .tls_active = true, .steps = {
		/* imap_lex_quoted: 8-bit only as RFC 9051 UTF8-2/3/4. */
		GREET,
		{ 'C', "a SELECT \"b\xe4r\"\r\nb SELECT \"\xc0\xaf\"\r\n"
		    "c SELECT \"\xed\xa0\x80\"\r\nd SELECT \"\xf4\x90\x80\x80\""
		    "\r\ne SELECT \"\xe2\x82\"\r\nf NOOP\r\n", "f NOOP\r\n",
		    "a" R_BADQUOTE "b" R_BADQUOTE "c" R_BADQUOTE "d" R_BADQUOTE
		    "e" R_BADQUOTE, CONT, 0 },
		{ 0 } } },
	{ .name = "verb_letters_or_x_command", .tls_active = true, .steps = {
		/* imap_verb_valid: letters, or "X" atom (x-command). */
		GREET,
		{ 'C', "a NOOP1\r\nb SE-LECT box\r\nc X-FOO_1 y\r\n"
		    "d XLIST \"\" %\r\n", "c X-FOO_1 y\r\nd XLIST \"\" %\r\n",
		    "a" R_SYNTAX "b" R_SYNTAX, CONT, 0 },
		{ 0 } } },
	{ .name = "rfc9051_commands_forwarded", .tls_active = true,
	    .steps = {
		/* What real clients send keeps working, byte for byte. */
		GREETLP,
		{ 'C', "a UID FETCH 1:*,3 (UID FLAGS BODY.PEEK[HEADER.FIELDS "
		    "(FROM TO)]<0.100> BODY[1.MIME] RFC822.SIZE)\r\n"
		    "b FETCH 2,4:6 ALL\r\nc FETCH * FAST\r\n"
		    "d SEARCH CHARSET UTF-8 SUBJECT \"a \\\"b\\\" \xc3\xa4\" "
		    "OR (FROM x) (TO y) UID 1:* NOT DELETED\r\n"
		    "e APPEND INBOX (\\Seen $Forwarded) \"01-Jan-2024 10:00:00 "
		    "+0000\" {5+}\r\nhello\r\n"
		    "f LIST \"\" *\r\ng LIST \"\" %/a*%\r\nh LSUB \"\" \"*\"\r\n"
		    "i STATUS INBOX (MESSAGES UIDNEXT UNSEEN)\r\nj ID NIL\r\n"
		    "k ENABLE UTF8=ACCEPT CONDSTORE\r\nl UID STORE 1:* "
		    "+FLAGS.SILENT (\\Deleted \\Seen)\r\nm SELECT a]b\r\n"
		    "n SEARCH RETURN (SAVE) $\r\no STORE 1 FLAGS ()\r\n"
		    "p UID EXPUNGE 3:*\r\nq LIST (SUBSCRIBED) \"\" (a* b%) "
		    "RETURN (CHILDREN)\r\n",
		    "a UID FETCH 1:*,3 (UID FLAGS BODY.PEEK[HEADER.FIELDS "
		    "(FROM TO)]<0.100> BODY[1.MIME] RFC822.SIZE)\r\n"
		    "b FETCH 2,4:6 ALL\r\nc FETCH * FAST\r\n"
		    "d SEARCH CHARSET UTF-8 SUBJECT \"a \\\"b\\\" \xc3\xa4\" "
		    "OR (FROM x) (TO y) UID 1:* NOT DELETED\r\n"
		    "e APPEND INBOX (\\Seen $Forwarded) \"01-Jan-2024 10:00:00 "
		    "+0000\" {5+}\r\nhello\r\n"
		    "f LIST \"\" *\r\ng LIST \"\" %/a*%\r\nh LSUB \"\" \"*\"\r\n"
		    "i STATUS INBOX (MESSAGES UIDNEXT UNSEEN)\r\nj ID NIL\r\n"
		    "k ENABLE UTF8=ACCEPT CONDSTORE\r\nl UID STORE 1:* "
		    "+FLAGS.SILENT (\\Deleted \\Seen)\r\nm SELECT a]b\r\n"
		    "n SEARCH RETURN (SAVE) $\r\no STORE 1 FLAGS ()\r\n"
		    "p UID EXPUNGE 3:*\r\nq LIST (SUBSCRIBED) \"\" (a* b%) "
		    "RETURN (CHILDREN)\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_tag_in_go_ahead", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "Tag.1] STARTTLS\r\n", NULL, "Tag.1]" R_GO, GO, 0 },
		{ 0 } } },

	/* ---- SPEC 10: authentication failures ---- */
	{ .name = "auth_failures_no_counted_then_refused", .tls_active = true,
	    .max_auth_failures = 2, .auth_failures_want = 2,
	    .auth_refusals_want = 3, .steps = {
		GREET,
		{ 'C', "a LOGIN u p\r\n", "a LOGIN u p\r\n", NULL, CONT, 0 },
		{ 'B', "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
		    NULL, "a NO [AUTHENTICATIONFAILED] Authentication "
		    "failed.\r\n", CONT, 0 },
		{ 'C', "b AUTHENTICATE PLAIN\r\n", "b AUTHENTICATE PLAIN\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ \r\n", NULL, "+ \r\n", CONT, 0 },
		{ 'C', "Zm9v\r\n", "Zm9v\r\n", NULL, CONT, 0 },
		{ 'B', "b NO [AUTHENTICATIONFAILED] x\r\n", NULL,
		    "b NO [AUTHENTICATIONFAILED] x\r\n", CONT, 0 },
		{ 'C', "c LOGIN u p\r\n", NULL,
		    "c NO [UNAVAILABLE] Too many authentication failures\r\n",
		    CONT, 0 },
		{ 'C', "d authenticate PLAIN Zm9v\r\n", NULL,
		    "d NO [UNAVAILABLE] Too many authentication failures\r\n",
		    CONT, 0 },
		/* A synchronizing literal: no "+", so it is never sent. */
		{ 'C', "e LOGIN {1}\r\n", NULL,
		    "e NO [UNAVAILABLE] Too many authentication failures\r\n",
		    CONT, 0 },
		{ 'C', "f NOOP\r\n", "f NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "auth_failures_pipelined_logins_count_as_pending",
	    .tls_active = true, .max_auth_failures = 2,
	    .auth_failures_want = 1, .auth_refusals_want = 1, .steps = {
		GREET,
		/* Two in flight may both fail: the third is not sent. */
		{ 'C', "a LOGIN u p\r\nb LOGIN u q\r\nc LOGIN u r\r\n",
		    "a LOGIN u p\r\nb LOGIN u q\r\n", NULL, CONT, 0 },
		{ 'B', "a NO x\r\nb OK y\r\n", NULL, "a NO x\r\nb OK y\r\n"
		    "c NO [UNAVAILABLE] Too many authentication failures\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "auth_failures_only_no_to_credentials", .tls_active = true,
	    .max_auth_failures = 1, .auth_failures_want = 0,
	    .auth_refusals_want = 0, .steps = {
		GREET,
		{ 'C', "a SELECT x\r\n", "a SELECT x\r\n", NULL, CONT, 0 },
		{ 'B', "a NO no\r\n", NULL, "a NO no\r\n", CONT, 0 },
		{ 'C', "b LOGIN u p\r\n", "b LOGIN u p\r\n", NULL, CONT, 0 },
		{ 'B', "* NO untagged\r\nb BAD x\r\n", NULL,
		    "* NO untagged\r\nb BAD x\r\n", CONT, 0 },
		{ 'C', "c LOGIN u p\r\n", "c LOGIN u p\r\n", NULL, CONT, 0 },
		{ 'B', "c OK Logged in\r\n", NULL, "c OK Logged in\r\n",
		    CONT, 0 },
		{ 0 } } },

	/* ---- greeting and capability lists ---- */
	{ .name = "greeting_capa_cleartext", .starttls_service = true,
	    .steps = {
		{ 'B', G_B, NULL, G_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_capa_after_tls", .tls_active = true,
	    .starttls_service = true, .steps = {
		{ 'B', G_B, NULL, G_TLS, CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_capa_implicit", .tls_active = true, .steps = {
		{ 'B', G_B, NULL, G_TLS, CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_plain_relayed", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\n", "a NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "a OK done\r\n", NULL, "a OK done\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_split", .starttls_service = true, .steps = {
		{ 'B', "* OK [CAPABILITY IMAP4rev1 AUTH=", NULL, NULL, CONT,
		    0 },
		{ 'B', "PLAIN] hi\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_preauth_cleartext", .starttls_service = true,
	    .steps = {
		{ 'B', "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as bob\r\n",
		    NULL, R_BYE_PREAUTH, CLOSE, 0 },
		{ 0 } } },
	{ .name = "greeting_preauth_implicit", .tls_active = true, .steps = {
		{ 'B', "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] bob\r\n",
		    NULL, "* PREAUTH [CAPABILITY IMAP4rev1] bob\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_bye_relayed", .starttls_service = true, .steps = {
		{ 'B', "* BYE [UNAVAILABLE] Server shutting down\r\n", NULL,
		    "* BYE [UNAVAILABLE] Server shutting down\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "greeting_invalid", .starttls_service = true, .steps = {
		{ 'B', "220 smtp.example.test ESMTP\r\n", NULL, R_BYE_BACKEND,
		    CLOSE, 0 },
		{ 0 } } },
	{ .name = "hold_until_greeting", .starttls_service = true, .steps = {
		{ 'C', "a LOGIN bob secret\r\nb NOOP\r\n", NULL, NULL, CONT,
		    0 },
		{ 'B', GREETING, "b NOOP\r\n", GREETING "a" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "capability_untagged_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN "
		    "LOGINDISABLED SASL-IR COMPRESS=DEFLATE ID\r\n"
		    "a OK done\r\n",
		    NULL, "* CAPABILITY IMAP4rev1 ID STARTTLS LOGINDISABLED\r\n"
		    "a OK done\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "capability_untagged_tls", .tls_active = true,
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN "
		    "LOGINDISABLED SASL-IR COMPRESS=DEFLATE ID\r\n"
		    "a OK done\r\n",
		    NULL, "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID\r\n"
		    "a OK done\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "capability_case_and_duplicates", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a capability\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* capability IMAP4rev1  starttls StartTLS auth=plain "
		    "logindisabled\r\n", NULL, "* capability IMAP4rev1 "
		    "STARTTLS LOGINDISABLED\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "capability_untagged_ok_code", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'B', "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN]\r\n", NULL,
		    "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED]\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "capability_tagged_after_login", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a LOGIN bob secret\r\n", "a LOGIN bob secret\r\n", NULL,
		    CONT, 0 },
		{ 'B', "a OK [CAPABILITY IMAP4rev1 STARTTLS SORT "
		    "COMPRESS=DEFLATE] Logged in\r\n", NULL,
		    "a OK [CAPABILITY IMAP4rev1 SORT] Logged in\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "capability_not_in_other_text", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'B', "* 3 EXISTS\r\n* OK CAPABILITY AUTH=PLAIN is here\r\n",
		    NULL,
		    "* 3 EXISTS\r\n* OK CAPABILITY AUTH=PLAIN is here\r\n",
		    CONT, 0 },
		{ 0 } } },

	/* ---- STARTTLS ---- */
	{ .name = "starttls_go_then_tls_rules", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_GO, GO, 0 },
		{ 'C', "b CAPABILITY\r\n", "b CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\nb OK\r\n",
		    NULL, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nb OK\r\n", CONT,
		    0 },
		{ 'C', "c STARTTLS\r\n", NULL, "c" R_TLSUP, CONT, 0 },
		{ 'C', "d LOGIN bob secret\r\n", "d LOGIN bob secret\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_lowercase", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "x1 starttls\r\n", NULL, "x1" R_GO, GO, 0 },
		{ 0 } } },
	{ .name = "starttls_injection_closes", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\nb CAPABILITY\r\n", NULL, NULL, CLOSE, 0 },
		{ 0 } } },
	{ .name = "starttls_injection_partial", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\nb", NULL, NULL, CLOSE, 0 },
		{ 0 } } },
	{ .name = "starttls_waits_for_earlier", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS\r\n", "a NOOP\r\n", NULL, CONT,
		    0 },
		{ 'B', "* 1 EXISTS\r\n", NULL, "* 1 EXISTS\r\n", CONT, 0 },
		{ 'B', "a OK NOOP done\r\n", NULL, "a OK NOOP done\r\nb" R_GO,
		    GO, 0 },
		{ 0 } } },
	{ .name = "starttls_pipelined_while_waiting", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS\r\n", "a NOOP\r\n", NULL, CONT,
		    0 },
		{ 'C', "c LOGIN bob secret\r\n", NULL, NULL, CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\n", CLOSE, 0 },
		{ 0 } } },
	{ .name = "starttls_arguments", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a STARTTLS now\r\n", NULL, "a" R_NOARGS, CONT, 0 },
		{ 'C', "b STARTTLS \r\n", NULL, "b" R_BADSPACE, CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_implicit_refused", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_TLSUP, CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_not_offered", .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_NOTLS, CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_refusal_keeps_order", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS x\r\n", "a NOOP\r\n", NULL, CONT,
		    0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\nb" R_NOARGS, CONT, 0 },
		{ 0 } } },
	{ .name = "starttls_after_refused_sync_literal",
	    .starttls_service = true, .steps = {
		/* No "+" for a refused {n}: the next line is a command. */
		GREET,
		{ 'C', "a APPEND box {12}\r\n", NULL, "a" R_CLEARCMD, CONT, 0 },
		{ 'C', "b STARTTLS\r\n", NULL, "b" R_GO, GO, 0 },
		{ 0 } } },
	{ .name = "starttls_after_literal_waits", .tls_active = true,
	    .steps = {
		/* The literal's bytes are not a command (inside TLS). */
		GREET,
		{ 'C', "a APPEND box {12}\r\n", "a APPEND box {12}\r\n", NULL,
		    CONT, 0 },
		{ 'C', "b STARTTLS\r\n", NULL, NULL, CONT, 0 },
		{ 'B', "a NO [TRYCREATE] No mailbox\r\n", NULL,
		    "a NO [TRYCREATE] No mailbox\r\nb" R_TLSUP, CONT, 0 },
		{ 0 } } },
	{ .name = "error_count_survives_starttls", .starttls_service = true,
	    .max_errors = 2, .steps = {
		GREET,
		{ 'C', "a SELECT INBOX\r\n", NULL, "a" R_CLEARCMD, CONT, 0 },
		{ 'C', "b STARTTLS\r\n", NULL, "b" R_GO, GO, 0 },
		{ 'C', "c COMPRESS DEFLATE\r\n", NULL, "c" R_COMPRESS R_ERRORS,
		    CLOSE, 0 },
		{ 0 } } },

	/* ---- credentials in cleartext ---- */
	{ .name = "login_refused_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a LOGIN bob secret\r\n", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "b login \"bob\" \"secret\"\r\n", NULL, "b" R_CLEAR,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "login_sync_literal_refused", .starttls_service = true,
	    .steps = {
		/* No "+": the client drops the command on the tagged NO. */
		GREET,
		{ 'C', "a LOGIN {5}\r\n", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "b NOOP\r\n", "b NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "login_nonsync_literals_dropped", .starttls_service = true,
	    .steps = {
		GREETLP_C,
		{ 'C', "a LOGIN {5+}\r\nb OK  {6+}\r\nsecret\r\nc NOOP\r\n",
		    "c NOOP\r\n", "a" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "login_nonsync_literal_split", .starttls_service = true,
	    .steps = {
		GREETLP_C,
		{ 'C', "a LOGIN {12+}\r\nb STAR", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "TTLS\r\n {3+}\r\n", NULL, NULL, CONT, 0 },
		{ 'C', "pw", NULL, NULL, CONT, 0 },
		{ 'C', "x\r\nc NOOP\r\n", "c NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "login_nonsync_then_sync", .starttls_service = true,
	    .steps = {
		GREETLP_C,
		{ 'C', "a LOGIN {3+}\r\nbob {6}\r\n", NULL, "a" R_CLEAR, CONT,
		    0 },
		{ 'C', "b NOOP\r\n", "b NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "login_literal_too_big_cleartext", .starttls_service = true,
	    .steps = {
		GREETLP_C,
		{ 'C', "a LOGIN {70000+}\r\n", NULL, "a" R_CLEAR R_BYE_TOOBIG,
		    CLOSE, 0 },
		{ 0 } } },
	{ .name = "authenticate_refused_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN\r\n", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "b AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n", NULL,
		    "b" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "credentials_refusal_keeps_order", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb LOGIN x y\r\nc NOOP\r\n",
		    "a NOOP\r\nc NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\nb" R_CLEAR, CONT, 0 },
		{ 'B', "c OK\r\n", NULL, "c OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "local_reply_between_completions_in_one_read",
	    .tls_active = true, .steps = {
		/*
		 * Both completions arrive in one read: our reply to b must
		 * still leave between them (found by the functional suite:
		 * it used to follow c's completion).
		 */
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS\r\nc NOOP\r\n",
		    "a NOOP\r\nc NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\n* 3 EXISTS\r\nc OK\r\n", NULL,
		    "a OK\r\nb" R_TLSUP "* 3 EXISTS\r\nc OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "out_of_order_completion", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb NOOP\r\nc LOGIN x y\r\n",
		    "a NOOP\r\nb NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "b OK\r\n", NULL, "b OK\r\n", CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\nc" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "login_tls_forwarded", .tls_active = true,
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a LOGIN bob secret\r\n", "a LOGIN bob secret\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "login_tls_sync_literals", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a LOGIN {3}\r\nbob {6}\r\n", "a LOGIN {3}\r\n", NULL,
		    CONT, 0 },
		{ 'B', "+ OK\r\n", "bob {6}\r\n", "+ OK\r\n", CONT, 0 },
		{ 'B', "+ OK\r\n", NULL, "+ OK\r\n", CONT, 0 },
		{ 'C', "secret\r\n", "secret\r\n", NULL, CONT, 0 },
		{ 'B', "a OK Logged in\r\n", NULL, "a OK Logged in\r\n", CONT,
		    0 },
		{ 0 } } },

	/* ---- client literals ---- */
	{ .name = "literal_text_not_commands", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box {28+}\r\nb STARTTLS\r\nc LOGIN bob pw\r\n"
		    "\r\n", "a APPEND box {28+}\r\nb STARTTLS\r\n"
		    "c LOGIN bob pw\r\n\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_sync_waits_for_plus", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a APPEND box {10}\r\n0123", "a APPEND box {10}\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ Ready\r\n", "0123", "+ Ready\r\n", CONT, 0 },
		{ 'C', "456789", "456789", NULL, CONT, 0 },
		{ 'C', " {2}\r\n", " {2}\r\n", NULL, CONT, 0 },
		{ 'B', "+ Ready\r\n", NULL, "+ Ready\r\n", CONT, 0 },
		{ 'C', "ab\r\nb NOOP\r\n", "ab\r\nb NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\nb OK\r\n", NULL, "a OK\r\nb OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "literal_sync_rejected", .tls_active = true, .steps = {
		/* After the tagged NO, the bytes are commands again. */
		GREET,
		{ 'C', "a APPEND box {5}\r\nb NOOP\r\n", "a APPEND box {5}\r\n",
		    NULL, CONT, 0 },
		{ 'B', "a NO [OVERQUOTA] Quota\r\n", "b NOOP\r\n",
		    "a NO [OVERQUOTA] Quota\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "literal_wait_ignores_other_completion", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb APPEND box {6}\r\nc NOOP\r\n",
		    "a NOOP\r\nb APPEND box {6}\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\n", CONT, 0 },
		{ 'B', "+ go\r\n", "c NOOP\r\n", "+ go\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "auth_wait_ignores_other_completion", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb AUTHENTICATE PLAIN\r\nAGJvYgB4\r\n",
		    "a NOOP\r\nb AUTHENTICATE PLAIN\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\n", CONT, 0 },
		{ 'B', "+ \r\n", "AGJvYgB4\r\n", "+ \r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "literal_multiappend_nonsync", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box (\\Seen) {3+}\r\nabc {2+}\r\nde\r\n",
		    "a APPEND box (\\Seen) {3+}\r\nabc {2+}\r\nde\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "literal8_binary", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box ~{4+}\r\n\x01\r\n\xff\r\n", "a APPEND box "
		    "~{4+}\r\n\x01\r\n\xff\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_zero", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box {0+}\r\n\r\nb NOOP\r\n",
		    "a APPEND box {0+}\r\n\r\nb NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_too_big_sync_tls", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a APPEND box {5000000000}\r\nb NOOP\r\n", "b NOOP\r\n",
		    "a" R_TOOBIG, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_too_big_nonsync_cleartext",
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a APPEND box {70000+}\r\n", NULL,
		    "a" R_LITPLUS R_BYE_TOOBIG, CLOSE, 0 },
		{ 0 } } },
	{ .name = "literal_big_ok_in_tls", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a APPEND box {70000}\r\n", "a APPEND box {70000}\r\n",
		    NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "literals_per_command_cleartext", .starttls_service = true,
	    .steps = {
		/* 16 literals pass before TLS; the 17th ends the session. */
		GREETLP_C,
		{ 'C', "a LOGIN {1+}\r\n1 {1+}\r\n2 {1+}\r\n3 {1+}\r\n4 "
		    "{1+}\r\n5 {1+}\r\n6 {1+}\r\n7 {1+}\r\n8 {1+}\r\n9 "
		    "{1+}\r\na {1+}\r\nb {1+}\r\nc {1+}\r\nd {1+}\r\ne "
		    "{1+}\r\nf {1+}\r\ng\r\n", NULL, "a" R_CLEAR, CONT, 0 },
		{ 'C', "b LOGIN {1+}\r\n1 {1+}\r\n2 {1+}\r\n3 {1+}\r\n4 "
		    "{1+}\r\n5 {1+}\r\n6 {1+}\r\n7 {1+}\r\n8 {1+}\r\n9 "
		    "{1+}\r\na {1+}\r\nb {1+}\r\nc {1+}\r\nd {1+}\r\ne "
		    "{1+}\r\nf {1+}\r\ng {1+}\r\n", NULL,
		    "b" R_CLEAR R_BYE_TOOBIG, CLOSE, 0 },
		{ 0 } } },
	{ .name = "literal_number_overflow", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a APPEND box {99999999999999999999999}\r\n", NULL,
		    R_BYE_TOOBIG, CLOSE, 0 },
		{ 0 } } },
	{ .name = "literal_quote_smuggling", .starttls_service = true,
	    .steps = {
		/* `"x {20+}` has no literal for a strict parser: refused. */
		GREET,
		{ 'C', "a NOOP \"x {20+}\r\nb LOGIN bob secret\r\n\r\n", NULL,
		    "a" R_BADQUOTE, CONT, 0 },
		{ 'C', "c NOOP\r\n", "c NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_brace_inside_atom", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a SELECT foo{5}\r\nb SELECT a{1}b\r\n", NULL,
		    "a" R_BADLIT "b" R_BADLIT, CONT, 0 },
		{ 0 } } },
	{ .name = "literal_brace_quoted_ok", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a SELECT \"foo {5}\"\r\nb LIST \"\" \"a\\\"{1}\"\r\n",
		    "a SELECT \"foo {5}\"\r\nb LIST \"\" \"a\\\"{1}\"\r\n",
		    NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "quote_bad_escape", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a SELECT \"a\\b\"\r\nb SELECT x\"y\"\r\n", NULL,
		    "a" R_BADQUOTE "b" R_BADQUOTE, CONT, 0 },
		{ 0 } } },
	{ .name = "continuation_invalid_closes", .tls_active = true, .steps = {
		GREETLP,
		{ 'C', "a APPEND box {1+}\r\nx \"open\r\n",
		    "a APPEND box {1+}\r\nx", R_BYE_SYNTAX, CLOSE, 0 },
		{ 0 } } },
	{ .name = "continuation_too_long_closes", .tls_active = true,
	    .max_line = 512, .steps = {
		GREETLP,
		{ 'C', "a APPEND box {1+}\r\nx" X600 "\r\n",
		    "a APPEND box {1+}\r\nx", R_BYE_TOOLONG, CLOSE, 0 },
		{ 0 } } },

	/* ---- backend literals ---- */
	{ .name = "fetch_literal_byte_exact", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS\r\n",
		    "a NOOP\r\n", NULL, CONT, 0 },
		{ 'B', FETCH_B, NULL, FETCH_B, CONT, 0 },
		{ 'B', "a OK Fetch completed\r\n", NULL,
		    "a OK Fetch completed\r\nb" R_GO, GO, 0 },
		{ 0 } } },
	{ .name = "fetch_literal_split", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a FETCH 1 BODY[]\r\n", "a FETCH 1 BODY[]\r\n", NULL,
		    CONT, 0 },
		{ 'B', "* 1 FETCH (BODY[] {5", NULL, NULL, CONT, 0 },
		{ 'B', "7}\r\n* CAPABILITY STA", NULL,
		    "* 1 FETCH (BODY[] {57}\r\n* CAPABILITY STA", CONT, 0 },
		{ 'B', "RTTLS AUTH=PLAIN\r\na OK fake\r\n", NULL,
		    "RTTLS AUTH=PLAIN\r\na OK fake\r\n", CONT, 0 },
		{ 'C', "b NOOP\r\n", "b NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "b STARTTLS\r\n)\r\na OK\r\nb OK\r\n", NULL,
		    "b STARTTLS\r\n)\r\na OK\r\nb OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "fetch_two_literals_one_response", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a NOOP\r\n", "a NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "* 1 FETCH (BODY[1] {6}\r\na OK\r\n BODY[2] ~{3}\r\n"
		    "a\x02b)\r\na OK\r\n", NULL,
		    "* 1 FETCH (BODY[1] {6}\r\na OK\r\n"
		    " BODY[2] ~{3}\r\na\x02b)\r\na OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "backend_literal_rest_not_parsed", .starttls_service = true,
	    .steps = {
		/* After a literal, the line goes on: no tag, no capability. */
		GREET,
		{ 'C', "a NOOP\r\nb STARTTLS\r\n",
		    "a NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "* 1 FETCH (BODY[] {2}\r\nxxa OK fake\r\n", NULL,
		    "* 1 FETCH (BODY[] {2}\r\nxxa OK fake\r\n", CONT, 0 },
		{ 'B', "* 1 FETCH (BODY[] {0}\r\n* CAPABILITY AUTH=PLAIN)\r\n",
		    NULL,
		    "* 1 FETCH (BODY[] {0}\r\n* CAPABILITY AUTH=PLAIN)\r\n",
		    CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\nb" R_GO, GO, 0 },
		{ 0 } } },
	{ .name = "backend_mid_response_holds_reply", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'B', "* 1 FETCH (BODY[] {3}\r\nabc", NULL,
		    "* 1 FETCH (BODY[] {3}\r\nabc", CONT, 0 },
		{ 'C', "x LOGIN a b\r\n", NULL, NULL, CONT, 0 },
		{ 'B', ")\r\n", NULL, ")\r\nx" R_CLEAR, CONT, 0 },
		{ 0 } } },
	{ .name = "backend_bare_lf_relayed", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'B', "* 2 EXISTS\n* 1 RECENT\r\n", NULL,
		    "* 2 EXISTS\n* 1 RECENT\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "backend_unknown_tag_relayed", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'B', "zz OK what\r\n+ spurious\r\n", NULL,
		    "zz OK what\r\n+ spurious\r\n", CONT, 0 },
		{ 'C', "a NOOP\r\n", "a NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },

	/* ---- ID ---- */
	{ .name = "id_strip_proxy_keys", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a ID (\"name\" \"Thunderbird\" \"x-originating-ip\" "
		    "\"203.0.113.9\" \"X-Connected-Port\" \"143\" "
		    "\"X-PROXY-TTL\" \"5\" \"x-session-id\" \"s1\" "
		    "\"x-forward-user\" \"root\" "
		    "\"version\" \"115\")\r\n",
		    "a ID (\"name\" \"Thunderbird\" \"version\" \"115\")\r\n",
		    NULL, CONT, 0 },
		{ 'B', "* ID (\"name\" \"Dovecot\")\r\na OK ID done\r\n", NULL,
		    "* ID (\"name\" \"Dovecot\")\r\na OK ID done\r\n", CONT,
		    0 },
		{ 0 } } },
	{ .name = "id_strip_inside_tls", .tls_active = true, .steps = {
		GREET,
		{ 'C',
		    "a ID (\"x-originating-ip\" \"1.2.3.4\" \"name\" NIL)\r\n",
		    "a ID (\"name\" NIL)\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "id_all_stripped_nil", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a ID (\"x-originating-port\" \"1\")\r\nb id nil\r\n"
		    "c ID ()\r\n", "a ID NIL\r\nb ID NIL\r\nc ID NIL\r\n", NULL,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "id_escapes_canonical", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a ID (\"na\\\"me\" \"c:\\\\x\")\r\n",
		    "a ID (\"na\\\"me\" \"c:\\\\x\")\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "id_nonsync_literals", .starttls_service = true, .steps = {
		GREETLP_C,
		{ 'C', "a ID (\"x-session-id\" {3+}\r\nabc \"name\" {2+}\r\n"
		    "mu)\r\n", "a ID (\"name\" \"mu\")\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "id_literal_key", .starttls_service = true, .steps = {
		GREETLP_C,
		{ 'C', "a ID ({16+}\r\nx-originating-ip \"9.9.9.9\" {4+}\r\n"
		    "name \"x\")\r\n", "a ID (\"name\" \"x\")\r\n", NULL, CONT,
		    0 },
		{ 0 } } },
	{ .name = "id_sync_literal_local_plus", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a ID (\"name\" {3}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "abc)\r\n", "a ID (\"name\" \"abc\")\r\n", NULL, CONT,
		    0 },
		{ 0 } } },
	{ .name = "id_invalid", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a ID (\"name\")\r\nb ID\r\nc ID name x\r\n"
		    "d ID (\"a\" \"b\"\r\ne ID (\"a\" \"b\") x\r\n", NULL,
		    "a" R_BADID "b" R_BADID "c" R_BADID "d" R_PAREN "e" R_BADID,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "id_value_crlf_as_literal", .starttls_service = true,
	    .steps = {
		/* Not refused: re-serialised as a literal the backend takes. */
		GREETLP_C,
		{ 'C', "a ID (\"name\" {4+}\r\na\r\nb \"os\" {3+}\r\n\xe4\xf6x)\r\n",
		    "a ID (\"name\" {4+}\r\na\r\nb \"os\" {3+}\r\n\xe4\xf6x)\r\n",
		    NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "id_value_crlf_sync_literal", .starttls_service = true,
	    .steps = {
		/* No LITERAL+: a {n}, its "+" is ours, never the client's. */
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "a\r\nb \"os\" \"x\")\r\n", "a ID (\"name\" {4}\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ \r\n", "a\r\nb \"os\" \"x\")\r\n", NULL, CONT, 0 },
		{ 'B', "a OK ID done\r\n", NULL, "a OK ID done\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "id_two_sync_literals", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "a\r\nb \"os\" {3}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "x\ny)\r\n", "a ID (\"name\" {4}\r\n", NULL, CONT,
		    0 },
		{ 'B', "+ go\r\n", "a\r\nb \"os\" {3}\r\n", NULL, CONT, 0 },
		{ 'B', "+ go\r\n", "x\ny)\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "id_sync_literal_refused", .starttls_service = true,
	    .steps = {
		/* Sent after the NO, the bytes would be read as commands. */
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "a\r\nb \"os\" \"x\")\r\n", "a ID (\"name\" {4}\r\n",
		    NULL, CONT, 0 },
		{ 'B', "a NO no literals here\r\n", NULL,
		    "a NO no literals here\r\n", CONT, 0 },
		{ 'C', "b NOOP\r\n", "b NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "+ late\r\nb OK\r\n", NULL, "+ late\r\nb OK\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "id_sync_literal_untagged_first", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\na\r\nb)\r\n", "a ID (\"name\" "
		    "{4}\r\n", R_CONT, CONT, 0 },
		{ 'B', "* OK [ALERT] still here\r\n+ \r\n", "a\r\nb)\r\n",
		    "* OK [ALERT] still here\r\n", CONT, 0 },
		{ 'B', "a OK\r\n", NULL, "a OK\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "id_sync_literal_pipelined_noop", .starttls_service = true,
	    .steps = {
		/* Held behind the ID, the NOOP keeps its place. */
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "a\r\nb)\r\nb NOOP\r\n", "a ID (\"name\" {4}\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ \r\n", "a\r\nb)\r\nb NOOP\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\nb OK\r\n", NULL, "a OK\r\nb OK\r\n", CONT,
		    0 },
		{ 0 } } },
	{ .name = "id_sync_literal_then_client_literal", .tls_active = true,
	    .steps = {
		/* The client's own {n} gets the backend's "+", relayed. */
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\n", NULL, R_CONT, CONT, 0 },
		{ 'C', "a\r\nb)\r\nb APPEND box {3}\r\n",
		    "a ID (\"name\" {4}\r\n", NULL, CONT, 0 },
		{ 'B', "+ \r\n", "a\r\nb)\r\nb APPEND box {3}\r\n", NULL,
		    CONT, 0 },
		{ 'B', "+ ok\r\n", NULL, "+ ok\r\n", CONT, 0 },
		{ 'C', "xyz\r\n", "xyz\r\n", NULL, CONT, 0 },
		{ 'B', "a OK\r\nb OK\r\n", NULL, "a OK\r\nb OK\r\n", CONT,
		    0 },
		{ 0 } } },
	{ .name = "id_sync_literal_pending_at_close", .tls_active = true,
	    .steps = {
		/* The unsent rest is freed with the session (ASan, leaks). */
		GREET,
		{ 'C', "a ID (\"name\" {4}\r\na\r\nb)\r\nb NOOP\r\n",
		    "a ID (\"name\" {4}\r\n", R_CONT, CONT, 0 },
		{ 0 } } },
	{ .name = "id_too_big_dropped", .starttls_service = true,
	    .max_line = 512, .steps = {
		GREETLP_C,
		{ 'C', "a ID (\"name\" {600+}\r\n" X600 ")\r\nb NOOP\r\n",
		    "b NOOP\r\n", "a" R_BADID, CONT, 0 },
		{ 0 } } },

	/* ---- AUTHENTICATE inside TLS ---- */
	{ .name = "authenticate_tls_continuation", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n",
		    "a AUTHENTICATE PLAIN\r\n", NULL, CONT, 0 },
		{ 'B', "+ \r\n", "AGJvYgBzZWNyZXQ=\r\n", "+ \r\n", CONT, 0 },
		{ 'B', "a OK [CAPABILITY IMAP4rev1 STARTTLS] Logged in\r\n",
		    NULL, "a OK [CAPABILITY IMAP4rev1] Logged in\r\n", CONT,
		    0 },
		{ 'C', "b SELECT INBOX\r\n", "b SELECT INBOX\r\n", NULL, CONT,
		    0 },
		{ 0 } } },
	{ .name = "authenticate_sasl_line_not_command", .tls_active = true,
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE LOGIN\r\n", "a AUTHENTICATE LOGIN\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ VXNlcm5hbWU6\r\n", NULL, "+ VXNlcm5hbWU6\r\n", CONT,
		    0 },
		/* Not base64: never forwarded, the exchange is cancelled. */
		{ 'C', "b STARTTLS\r\n", "*\r\n", NULL, CONT, 0 },
		{ 'B', "a BAD Invalid base64\r\n", NULL,
		    "a BAD Invalid base64\r\n", CONT, 0 },
		{ 'C', "c STARTTLS\r\n", NULL, "c" R_TLSUP, CONT, 0 },
		{ 0 } } },
	{ .name = "authenticate_ir_completes", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\nb NOOP\r\n",
		    "a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n", NULL, CONT,
		    0 },
		{ 'B', "a NO [AUTHENTICATIONFAILED] Failed\r\n", "b NOOP\r\n",
		    "a NO [AUTHENTICATIONFAILED] Failed\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "authenticate_bad_sasl_line_cancels", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN\r\n", "a AUTHENTICATE PLAIN\r\n",
		    NULL, CONT, 0 },
		{ 'B', "+ \r\n", NULL, "+ \r\n", CONT, 0 },
		{ 'C', "AGJv\0YgB=\r\n", "*\r\n", NULL, CONT, 11 },
		{ 'B', "a BAD Canceled\r\n", NULL, "a BAD Canceled\r\n", CONT,
		    0 },
		{ 0 } } },
	{ .name = "authenticate_literal_refused", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a AUTHENTICATE PLAIN {5}\r\n", NULL, "a" R_AUTHLIT,
		    CONT, 0 },
		{ 0 } } },

	/* ---- IDLE ---- */
	{ .name = "idle_done", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a IDLE\r\n", "a IDLE\r\n", NULL, CONT, 0 },
		{ 'B', "+ idling\r\n", NULL, "+ idling\r\n", CONT, 0 },
		{ 'B', "* 2 EXISTS\r\n", NULL, "* 2 EXISTS\r\n", CONT, 0 },
		{ 'C', "DONE\r\n", "DONE\r\n", NULL, CONT, 0 },
		{ 'B', "a OK Idle completed\r\n", NULL,
		    "a OK Idle completed\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "idle_done_held_until_plus", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a IDLE\r\ndone\r\nb NOOP\r\n", "a IDLE\r\n", NULL, CONT,
		    0 },
		{ 'B', "+ idling\r\n", "DONE\r\nb NOOP\r\n", "+ idling\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "idle_not_done", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a IDLE\r\n", "a IDLE\r\n", NULL, CONT, 0 },
		{ 'B', "+ idling\r\n", NULL, "+ idling\r\n", CONT, 0 },
		{ 'C', "b LOGIN bob secret\r\n", "DONE\r\n", NULL, CONT, 0 },
		{ 'B', "a OK Idle completed\r\n", NULL,
		    "a OK Idle completed\r\n" R_NODONE, CONT, 0 },
		{ 0 } } },
	{ .name = "idle_refused_by_backend", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a IDLE\r\nb NOOP\r\n", "a IDLE\r\n", NULL, CONT, 0 },
		{ 'B', "a BAD Not now\r\n", "b NOOP\r\n", "a BAD Not now\r\n",
		    CONT, 0 },
		{ 0 } } },
	{ .name = "idle_arguments", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a IDLE now\r\n", NULL, "a" R_NOARGS, CONT, 0 },
		{ 0 } } },

	/* ---- ambiguous and over-long lines, errors ---- */
	{ .name = "line_too_long", .starttls_service = true, .max_line = 512,
	    .steps = {
		GREET,
		{ 'C', "a NOOP " X600 "\r\nb NOOP\r\n", "b NOOP\r\n", R_TOOLONG,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "line_too_long_split", .starttls_service = true,
	    .max_line = 512, .steps = {
		GREET,
		{ 'C', "a NOOP " X600, NULL, R_TOOLONG, CONT, 0 },
		{ 'C', X600, NULL, NULL, CONT, 0 },
		{ 'C', "\r\nb NOOP\r\n", "b NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "line_too_long_literal_dropped", .starttls_service = true,
	    .max_line = 512, .steps = {
		GREET,
		{ 'C',
		    "a APPEND " X600 " {12+}\r\nb STARTTLS\r\n\r\nc NOOP\r\n",
		    "c NOOP\r\n", R_TOOLONG, CONT, 0 },
		{ 0 } } },
	{ .name = "nul_in_line", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a NOOP\0x\r\nb NOOP\r\n", "b NOOP\r\n", "a" R_BADCHAR,
		    CONT, 18 },
		{ 0 } } },
	{ .name = "bare_lf", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a NOOP\nb NOOP\r\n", "b NOOP\r\n", "a" R_BADCHAR, CONT,
		    0 },
		{ 0 } } },
	{ .name = "bare_cr", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a NO\rOP\r\nb NOOP\r\n", "b NOOP\r\n", "a" R_BADCHAR,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "bare_lf_literal_dropped", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a LOGIN {12+}\nb STARTTLS\r\nc NOOP\r\n", NULL,
		    "a" R_BADCHAR, CONT, 0 },
		{ 'C', "d NOOP\r\n", "d NOOP\r\n", NULL, CONT, 0 },
		{ 0 } } },
	{ .name = "invalid_tags", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a*b NOOP\r\n+a NOOP\r\n\"a\" NOOP\r\n", NULL,
		    R_BADTAG R_BADTAG R_BADTAG, CONT, 0 },
		{ 0 } } },
	{ .name = "empty_and_missing_verb", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "\r\nabc\r\nabc \r\n", NULL,
		    R_EMPTY "abc" R_NOVERB "abc" R_NOVERB, CONT, 0 },
		{ 0 } } },
	/* Capability lists we could not rewrite are never passed on. */
	{ .name = "capability_ending_in_literal_closes",
	    .starttls_service = true, .steps = {
		GREET,
		{ 'C', "a CAPABILITY\r\n", "a CAPABILITY\r\n", NULL, CONT, 0 },
		{ 'B', "* CAPABILITY IMAP4rev1 AUTH=PLAIN {0}\r\n", NULL,
		    R_BYE_BACKEND, FILTER_CLOSE, 0 },
		{ 0 } } },
	{ .name = "capability_in_continuation_closes", .tls_active = true,
	    .steps = {
		GREET,
		{ 'C', "a APPEND x {3}\r\n", "a APPEND x {3}\r\n", NULL, CONT,
		    0 },
		{ 'B', "+ [CAPABILITY IMAP4rev1 AUTH=PLAIN] go\r\n", NULL,
		    R_BYE_BACKEND, FILTER_CLOSE, 0 },
		{ 0 } } },
	/* Fuzzing found these: a lenient backend reads the second word. */
	{ .name = "double_space_login_cleartext", .starttls_service = true,
	    .steps = {
		GREET,
		{ 'C', "a  LOGIN alice secret\r\nb NOOP\r\n", "b NOOP\r\n",
		    "a" R_BADSPACE, CONT, 0 },
		{ 0 } } },
	{ .name = "double_space_id_in_tls", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a  ID (\"x-originating-ip\" \"10.0.0.1\")\r\n", NULL,
		    "a" R_BADSPACE, CONT, 0 },
		{ 0 } } },
	{ .name = "double_space_idle_in_tls", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a  IDLE\r\nb NOOP\r\n", "b NOOP\r\n", "a" R_BADSPACE,
		    CONT, 0 },
		{ 0 } } },
	{ .name = "too_many_errors", .starttls_service = true, .steps = {
		GREET,
		{ 'C', "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n", NULL,
		    R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY R_EMPTY
		    R_EMPTY R_EMPTY, CONT, 0 },
		{ 'C', "a LOGIN bob secret\r\nb NOOP\r\n", NULL,
		    "a" R_CLEAR R_ERRORS, CLOSE, 0 },
		{ 0 } } },
	/* ---- SPEC 9: fresh backend for the TLS phase ---- */
	{ .name = "send_proxy starttls: fresh greeting swallowed, login held",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2, .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_GO, GO, 0 },
		{ 'C', "b LOGIN bob secret\r\n", NULL, NULL, CONT, 0 },
		{ 'B', "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] again\r\n",
		    "b LOGIN bob secret\r\n", NULL, CONT, 0 },
		{ 'B', "b OK done\r\n", NULL, "b OK done\r\n", CONT, 0 },
		{ 0 } } },
	{ .name = "send_proxy starttls: fresh PREAUTH greeting -> BYE",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V1, .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_GO, GO, 0 },
		{ 'B', "* PREAUTH hi\r\n", NULL, R_UNAVAIL, CLOSE, 0 },
		{ 0 } } },
	{ .name = "send_proxy starttls: fresh garbage greeting -> BYE",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2, .steps = {
		GREET,
		{ 'C', "a STARTTLS\r\n", NULL, "a" R_GO, GO, 0 },
		{ 'B', "220 smtp\r\n", NULL, R_UNAVAIL, CLOSE, 0 },
		{ 0 } } },
	{ .name = "compress_refused", .tls_active = true, .steps = {
		GREET,
		{ 'C', "a COMPRESS DEFLATE\r\nb NOOP\r\n", "b NOOP\r\n",
		    "a" R_COMPRESS, CONT, 0 },
		{ 0 } } },
};

static void
test_case(void **state)
{
	fh_run(PROTO_IMAP, &proto_imap_ops, *state);
}

/* ------------------------------------------------------------------ */
/* A filter driven directly (filter_harness.h), on a STARTTLS service. */
static void
drv_start(struct fh_drv *d, bool tls, size_t max_line)
{
	const struct fh_case	 c = { .tls_active = tls,
				    .starttls_service = true,
				    .max_line = max_line };

	fh_drv_open(d, PROTO_IMAP, &proto_imap_ops, &c, "00000000000000cd",
	    "192.0.2.9");
}

static void
drv_greet(struct fh_drv *d)
{
	fh_drv_feed(d, 'B', GREETING, strlen(GREETING), FILTER_CONTINUE);
	fh_drv_expect(d->to_c, GREETING, strlen(GREETING));
}

/* Inside TLS, from a backend with LITERAL+ and BINARY. */
static void
drv_greet_lp(struct fh_drv *d)
{
	fh_drv_feed(d, 'B', GREETING_LP, strlen(GREETING_LP), FILTER_CONTINUE);
	fh_drv_expect(d->to_c, GREETING_LP, strlen(GREETING_LP));
}

/*
 * A FETCH response with a literal that holds fake lines, cut at every
 * point into two pieces: the client always gets the exact bytes, and only
 * the real completion releases the pending STARTTLS.
 */
static void
test_fetch_every_split(void **state)
{
	static const char	 resp[] = FETCH_B "a OK done\r\n";
	static const char	 want[] = FETCH_B "a OK done\r\nb" R_GO;
	struct fh_drv		 d;
	size_t			 cut, len = sizeof(resp) - 1;

	(void)state;
	/* The last piece always holds the completion's LF. */
	for (cut = 0; cut < len; cut++) {
		drv_start(&d, false, 0);
		drv_greet(&d);
		fh_drv_feed(&d, 'C', "a NOOP\r\nb STARTTLS\r\n", 20,
		    FILTER_CONTINUE);
		fh_drv_expect(d.to_b, "a NOOP\r\n", 8);
		fh_drv_feed(&d, 'B', resp, cut, FILTER_CONTINUE);
		fh_drv_feed(&d, 'B', resp + cut, len - cut, FILTER_STARTTLS);
		fh_drv_expect(d.to_c, want, sizeof(want) - 1);
		fh_drv_close(&d);
	}
}

/* A client command with literals fed one byte at a time. */
static void
test_client_bytewise(void **state)
{
	static const char	 cmd[] = "a APPEND box {5+}\r\nb NOO {3+}\r\n"
	    "P\r\n\r\nc ID (\"x-proxy-ttl\" {1+}\r\n1 \"name\" \"n\")\r\n"
	    "d LOGIN x y\r\n";
	static const char	 fwd[] = "a APPEND box {5+}\r\nb NOO {3+}\r\n"
	    "P\r\n\r\nc ID (\"name\" \"n\")\r\nd LOGIN x y\r\n";
	struct fh_drv		 d;
	size_t			 i;

	(void)state;
	drv_start(&d, true, 0);
	drv_greet_lp(&d);
	for (i = 0; i < sizeof(cmd) - 1; i++)
		fh_drv_feed(&d, 'C', cmd + i, 1, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, fwd, sizeof(fwd) - 1);
	fh_drv_expect(d.to_c, "", 0);
	fh_drv_close(&d);
}

/*
 * Large literals both ways are streamed: every chunk fed is passed on at
 * once, nothing accumulates in the filter's input.
 */
static void
test_large_literals_streamed(void **state)
{
	static char	 chunk[16384];
	struct fh_drv	 d;
	char		 hdr[64];
	size_t		 total = 4 * 1024 * 1024, sent;
	int		 n;

	(void)state;
	memset(chunk, 'A', sizeof(chunk));
	memcpy(chunk + 100, "\r\na OK fake\r\n* CAPABILITY AUTH=X\r\n", 35);
	drv_start(&d, true, 0);
	drv_greet_lp(&d);
	n = snprintf(hdr, sizeof(hdr), "a APPEND box {%zu+}\r\n", total);
	fh_drv_feed(&d, 'C', hdr, (size_t)n, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, hdr, (size_t)n);
	for (sent = 0; sent < total; sent += sizeof(chunk)) {
		fh_drv_feed(&d, 'C', chunk, sizeof(chunk), FILTER_CONTINUE);
		assert_int_equal(evbuffer_get_length(d.cin), 0);
		fh_drv_expect(d.to_b, chunk, sizeof(chunk));
	}
	fh_drv_feed(&d, 'C', "\r\n", 2, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "\r\n", 2);

	n = snprintf(hdr, sizeof(hdr), "* 1 FETCH (BODY[] {%zu}\r\n", total);
	fh_drv_feed(&d, 'B', hdr, (size_t)n, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, hdr, (size_t)n);
	for (sent = 0; sent < total; sent += sizeof(chunk)) {
		fh_drv_feed(&d, 'B', chunk, sizeof(chunk), FILTER_CONTINUE);
		assert_int_equal(evbuffer_get_length(d.bin), 0);
		fh_drv_expect(d.to_c, chunk, sizeof(chunk));
	}
	fh_drv_feed(&d, 'B', ")\r\na OK\r\n", 9, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, ")\r\na OK\r\n", 9);
	fh_drv_close(&d);
}

/*
 * A backend line far over the line limit (SEARCH results) is streamed;
 * its completion still counts, and a literal marker at its end is seen.
 */
static void
test_backend_long_lines(void **state)
{
	struct fh_drv	 d;
	struct evbuffer	*line;
	size_t		 len, i;
	char		*s;

	(void)state;
	drv_start(&d, false, 512);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a NOOP\r\nb STARTTLS\r\n", 20,
	    FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "a NOOP\r\n", 8);
	line = evbuffer_new();
	evbuffer_add_printf(line, "* SEARCH");
	for (i = 1; i <= 20000; i++)
		evbuffer_add_printf(line, " %zu", i);
	evbuffer_add_printf(line, " {11}\r\na OK fake\r\n\r\n");
	s = fh_take(line, &len);
	for (i = 0; i < len; i += 1000)
		fh_drv_feed(&d, 'B', s + i, len - i < 1000 ? len - i : 1000,
		    FILTER_CONTINUE);
	fh_drv_expect(d.to_c, s, len);
	fh_drv_feed(&d, 'B', "a OK Search done\r\n", 18, FILTER_STARTTLS);
	fh_drv_expect(d.to_c, "a OK Search done\r\nb" R_GO,
	    18 + 1 + strlen(R_GO));
	free(s);
	evbuffer_free(line);
	fh_drv_close(&d);

	/* A capability list we could not rewrite is not passed on. */
	drv_start(&d, false, 512);
	drv_greet(&d);
	fh_drv_feed(&d, 'B', "* CAPABILITY IMAP4rev1 " X600 "\r\n", 625,
	    FILTER_CLOSE);
	fh_drv_expect(d.to_c, R_BYE_BACKEND, strlen(R_BYE_BACKEND));
	fh_drv_close(&d);
	drv_start(&d, false, 512);
	fh_drv_feed(&d, 'B', "* OK " X600 "\r\n", 607, FILTER_CLOSE);
	fh_drv_close(&d);
}

/* Beyond FILTER_PENDING_MAX open commands, client input is held. */
static void
test_fifo_limit(void **state)
{
	struct fh_drv	 d;
	char		 line[32];
	int		 i, n;

	(void)state;
	drv_start(&d, true, 0);
	drv_greet(&d);
	for (i = 0; i < FILTER_PENDING_MAX + 6; i++) {
		n = snprintf(line, sizeof(line), "t%d NOOP\r\n", i);
		evbuffer_add(d.cin, line, (size_t)n);
	}
	fh_drv_pump(&d);
	for (i = 0; i < FILTER_PENDING_MAX; i++) {
		n = snprintf(line, sizeof(line), "t%d NOOP\r\n", i);
		evbuffer_drain(d.to_b, (size_t)n);
	}
	assert_int_equal(evbuffer_get_length(d.to_b), 0);
	assert_true(evbuffer_get_length(d.cin) > 0);
	fh_drv_feed(&d, 'B', "t3 OK\r\n", 7, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "", 0);	/* t0 still open: slots stay */
	fh_drv_feed(&d, 'B', "t0 OK\r\n", 7, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "t64 NOOP\r\n", 10);
	fh_drv_feed(&d, 'B', "t1 OK\r\nt2 OK\r\n", 14, FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "t65 NOOP\r\nt66 NOOP\r\nt67 NOOP\r\n", 30);
	fh_drv_close(&d);
}

/*
 * SPEC 10: the BYE between responses (IDLE included), never inside a
 * response with a literal, nor while the client sends literal bytes.
 */
static void
test_timeout(void **state)
{
	static const char	 bye[] = "* BYE Autologout; idle for too long\r\n";
	static const char	 fetch[] = "* 1 FETCH (BODY[] {10}\r\n01234";
	static const char	 idle[] = "+ idling\r\n";
	struct fh_drv		 d;

	(void)state;
	drv_start(&d, true, 0);
	drv_greet(&d);
	assert_true(filter_timeout(d.f, d.to_c, "idle timeout"));
	fh_drv_expect(d.to_c, bye, strlen(bye));
	assert_true(d.f->closing);
	assert_string_equal(filter_reason(d.f), "idle timeout");
	fh_drv_close(&d);

	/* A FETCH literal relayed in part. */
	drv_start(&d, true, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a FETCH 1 BODY[]\r\n", 18, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', fetch, strlen(fetch), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, fetch, strlen(fetch));
	assert_false(filter_timeout(d.f, d.to_c, "idle timeout"));
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	fh_drv_close(&d);

	/* The client in the middle of its literal. */
	drv_start(&d, true, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a APPEND INBOX {10}\r\n", 21, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+ go\r\n", 6, FILTER_CONTINUE);
	fh_drv_expect(d.to_c, "+ go\r\n", 6);
	fh_drv_feed(&d, 'C', "01234", 5, FILTER_CONTINUE);
	assert_false(filter_timeout(d.f, d.to_c, "idle timeout"));
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	fh_drv_close(&d);

	/* IDLE: the BYE may come (RFC 2177). */
	drv_start(&d, true, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a IDLE\r\n", 8, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', idle, strlen(idle), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, idle, strlen(idle));
	assert_true(filter_timeout(d.f, d.to_c, "idle timeout"));
	fh_drv_expect(d.to_c, bye, strlen(bye));
	fh_drv_close(&d);
}

static void
test_ops(void **state)
{
	struct evbuffer	*b = evbuffer_new();

	(void)state;
	assert_string_equal(proto_imap_ops.name, "imap");
	assert_string_equal(proto_imap_ops.alpn, "imap");
	proto_imap_ops.unavailable(b, "mx.example.test");
	fh_drv_expect(b, R_UNAVAIL, strlen(R_UNAVAIL));
	evbuffer_free(b);
}

static void
test_reasons(void **state)
{
	struct fh_drv	 d;

	(void)state;
	drv_start(&d, false, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a STARTTLS\r\nx", 13, FILTER_CLOSE);
	assert_string_equal(filter_reason(d.f),
	    "pipelined data after STARTTLS");
	/* Once closed, it stays closed. */
	fh_drv_feed(&d, 'B', "* OK\r\n", 6, FILTER_CLOSE);
	fh_drv_close(&d);
	drv_start(&d, false, 0);
	fh_drv_feed(&d, 'B', "* PREAUTH hi\r\n", 14, FILTER_CLOSE);
	assert_string_equal(filter_reason(d.f),
	    "backend PREAUTH in cleartext");
	fh_drv_close(&d);
}

/* Warnings name the session and client; credentials never appear. */
static void
test_log(void **state)
{
	static const char	 clear[] = "a LOGIN bob s3cr3t\r\n"
	    "b AUTHENTICATE PLAIN AGJvYgBzM2NyM3Q=\r\nc LOGIN {3+}\r\nbob "
	    "{6+}\r\ns3cr3t\r\n";
	static const char	 id[] = "d ID (\"x-originating-ip\" "
	    "\"198.51.100.4\")\r\n";
	struct fh_drv		 d;
	struct fh_log		 logcap;
	char			 buf[16384];

	(void)state;
	fh_log_begin(&logcap);

	drv_start(&d, false, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', clear, strlen(clear), FILTER_CONTINUE);
	fh_drv_feed(&d, 'C', id, strlen(id), FILTER_CONTINUE);
	fh_drv_feed(&d, 'C', "e STARTTLS\r\nf NOOP\r\n", 20, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "d OK\r\n", 6, FILTER_CLOSE);
	fh_drv_close(&d);
	drv_start(&d, true, 0);
	drv_greet(&d);
	fh_drv_feed(&d, 'C', "a AUTHENTICATE PLAIN\r\n", 22, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "+ \r\n", 4, FILTER_CONTINUE);
	fh_drv_feed(&d, 'C', "AGJvYgBzM2NyM3Q=\r\n", 18, FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', "a OK\r\n", 6, FILTER_CONTINUE);
	fh_drv_close(&d);

	fh_log_end(&logcap, buf, sizeof(buf));
	assert_non_null(strstr(buf, "00000000000000cd"));
	assert_non_null(strstr(buf, "192.0.2.9"));
	assert_non_null(strstr(buf, "LOGIN refused in cleartext"));
	assert_non_null(strstr(buf, "AUTHENTICATE refused in cleartext"));
	assert_non_null(strstr(buf, "pipelined bytes after STARTTLS"));
	assert_non_null(strstr(buf, "x-originating-ip"));
	assert_null(strstr(buf, "bob"));
	assert_null(strstr(buf, "s3cr3t"));
	assert_null(strstr(buf, "AGJvYgBzM2NyM3Q"));
	assert_null(strstr(buf, "198.51.100.4"));
}

/* SPEC 12: the words of a greeting we refuse are logged escaped. */
static void
test_prelude_log(void **state)
{
	static const struct fh_case c = BT_FAIL("greeting logged escaped",
		{ 'B', "* \x1b[31mNO go away\r\n", NULL, R_UNAVAIL,
		    FILTER_CLOSE, 0 });
	static char	 buf[8192];
	struct fh_log	 logcap;
	size_t		 n;

	(void)state;
	fh_log_begin(&logcap);
	fh_run(PROTO_IMAP, &proto_imap_ops, &c);
	n = fh_log_end(&logcap, buf, sizeof(buf));
	assert_null(memchr(buf, 0x1b, n));
	assert_non_null(strstr(buf, "backend greeting: * \\x1b[31mNO"));
}

int
main(void)
{
	static const struct CMUnitTest direct[] = {
		cmocka_unit_test(test_fetch_every_split),
		cmocka_unit_test(test_client_bytewise),
		cmocka_unit_test(test_large_literals_streamed),
		cmocka_unit_test(test_backend_long_lines),
		cmocka_unit_test(test_fifo_limit),
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_log),
		cmocka_unit_test(test_prelude_log),
	};

	return fh_main("imap", imap_cases, sizeof(imap_cases) /
	    sizeof(imap_cases[0]), test_case, direct,
	    sizeof(direct) / sizeof(direct[0]));
}
