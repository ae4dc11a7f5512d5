/*
 * test_smtp.c - the SMTP filter against SPEC sections 3 (SMTP) and 8.
 *
 * Table-driven through filter_harness.h: each case scripts client ('C')
 * and backend ('B') bytes and the exact bytes the filter must write to
 * each side, step by step.  A property test then throws random DATA
 * content with bare CR/LF and dots at the filter in random chunk sizes and
 * checks that the backend can find no end of DATA but ours.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "filter_harness.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

/*
 * Steps name only the fields they need (verdict and datalen default to
 * FILTER_CONTINUE and strlen); clang's -Wextra would flag every one.
 */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define S8(s)	s s s s s s s s
#define S64(s)	S8(S8(s))

#define GREET		"220 backend.test ESMTP\r\n"
#define EHLO_C		"EHLO client.test\r\n"
/* What a Postfix with every troublesome keyword would say. */
#define EHLO_B		"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250-SIZE 10240000\r\n" \
			"250-STARTTLS\r\n" \
			"250-AUTH PLAIN LOGIN\r\n" \
			"250-AUTH=PLAIN LOGIN\r\n" \
			"250-XCLIENT NAME ADDR PROTO HELO\r\n" \
			"250-XFORWARD NAME ADDR\r\n" \
			"250-CHUNKING\r\n" \
			"250 8BITMIME\r\n"
/* Cleartext phase of a STARTTLS service: ours once, no AUTH, no X*. */
#define EHLO_CLEAR	"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250-SIZE 10240000\r\n" \
			"250-CHUNKING\r\n" \
			"250-8BITMIME\r\n" \
			"250 STARTTLS\r\n"
/* Inside TLS: no STARTTLS, AUTH as the backend says, no X*. */
#define EHLO_TLS	"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250-SIZE 10240000\r\n" \
			"250-AUTH PLAIN LOGIN\r\n" \
			"250-AUTH=PLAIN LOGIN\r\n" \
			"250-CHUNKING\r\n" \
			"250 8BITMIME\r\n"

#define R_SYNTAX	"500 5.5.2 Syntax error\r\n"
#define R_TOO_LONG	"500 5.5.2 Line too long\r\n"
#define R_ARGS		"501 5.5.4 Syntax error\r\n"
#define R_TLS_ACTIVE	"503 5.5.1 TLS already active\r\n"
#define R_IN_TXN	"503 5.5.1 MAIL transaction in progress\r\n"
#define R_EHLO_FIRST	"503 5.5.1 Send EHLO first\r\n"
#define R_GO_AHEAD	"220 2.0.0 Ready to start TLS\r\n"
#define R_ENCRYPT	"538 5.7.11 Encryption required for requested " \
			"authentication mechanism\r\n"
#define R_TLS_FIRST	"530 5.7.0 Must issue a STARTTLS command first\r\n"
#define R_NOT_PERMITTED	"550 5.7.0 Command not permitted\r\n"
#define R_BARE		"550 5.6.0 Bare LF/CR in message refused\r\n"
#define R_TOO_MANY	"421 4.7.0 mx.example.test Too many errors\r\n"
#define R_NO_CHUNKING	"502 5.5.1 Command not implemented\r\n"
#define R_UNKNOWN	"500 5.5.2 Error: command not recognized\r\n"

#define OK		"250 2.0.0 Ok\r\n"
#define MAIL		"MAIL FROM:<a@example.org>\r\n"
#define RCPT		"RCPT TO:<b@example.net>\r\n"
#define GO		"354 End data with <CR><LF>.<CR><LF>\r\n"
#define QUEUED		"250 2.0.0 Ok: queued as 1234\r\n"

/* A backend without CHUNKING (aiosmtpd, Sendmail, Postfix < 3.4). */
#define EHLO_B_PLAIN	"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250 8BITMIME\r\n"

/* Common openings. */
#define ST_GREET	{ 'B', GREET, NULL, GREET }
#define ST_EHLO_CLEAR	{ 'C', EHLO_C, EHLO_C, NULL }, \
			{ 'B', EHLO_B, NULL, EHLO_CLEAR }
#define ST_EHLO_TLS	{ 'C', EHLO_C, EHLO_C, NULL }, \
			{ 'B', EHLO_B, NULL, EHLO_TLS }
/* The upgrade: the go-ahead, and nothing to the backend yet. */
#define ST_STARTTLS	{ 'C', "STARTTLS\r\n", NULL, R_GO_AHEAD, \
			  FILTER_STARTTLS }
/*
 * The first EHLO inside TLS after STARTTLS: our RSET goes first (sent with
 * the client's first bytes, so that its reply cannot fall into the
 * handshake window), and its reply is swallowed.
 */
#define RSET		"RSET\r\n"
#define ST_EHLO_UP	{ 'C', EHLO_C, RSET EHLO_C, NULL }, \
			{ 'B', OK EHLO_B, NULL, EHLO_TLS }
/* An open transaction up to the 354. */
#define ST_TXN_DATA	{ 'C', MAIL, MAIL, NULL }, { 'B', OK, NULL, OK }, \
			{ 'C', RCPT, RCPT, NULL }, { 'B', OK, NULL, OK }, \
			{ 'C', "DATA\r\n", "DATA\r\n", NULL }, \
			{ 'B', GO, NULL, GO }


/*
 * Issue 8: BDAT lines a lenient backend (Exim 4.96) frames differently
 * from a strict parser.  Each row runs twice: in cleartext on a port-25
 * service that never upgraded (a backend advertising CHUNKING) and inside
 * TLS.  The chunk is a command a backend must never see from a client;
 * the refused line's chunk is skipped by count and never forwarded, and
 * the line after it is a command again.
 */
#define CHUNK22		"XCLIENT ADDR=1.2.3.4\r\n"
#define BDAT_CLEAR(nm, line, tob, toc, v) \
	{ .name = "BDAT cleartext port 25: " nm, .starttls_service = true, \
	  .steps = { ST_GREET, ST_EHLO_CLEAR, \
		{ 'C', line, tob, toc, v } } }
#define BDAT_TLS(nm, line, tob, toc, v) \
	{ .name = "BDAT inside TLS: " nm, .tls_active = true, \
	  .steps = { ST_GREET, ST_EHLO_TLS, \
		{ 'C', line, tob, toc, v } } }
#define BDAT_BOTH(nm, line, tob, toc, v) \
	BDAT_CLEAR(nm, line, tob, toc, v), BDAT_TLS(nm, line, tob, toc, v)
/* A refused BDAT line: 501, its 22-byte chunk skipped, NOOP forwarded. */
#define BDAT_REFUSED(nm, line) \
	BDAT_BOTH(nm, line "\r\n" CHUNK22 "NOOP\r\n", "NOOP\r\n", R_ARGS, \
	    FILTER_CONTINUE)

/*
 * SPEC 9: the TLS phase over a fresh backend connection (send_proxy or
 * xclient on a STARTTLS service), and XCLIENT.  The harness's backend
 * buffer stands for whichever connection is current: after the go-ahead
 * its next bytes are the fresh connection's.
 */
#define R_UNAVAILABLE	"421 4.3.2 mx.example.test Service temporarily " \
			"unavailable\r\n"
#define OUR_EHLO	"EHLO mx.example.test\r\n"
#define EHLO_XC		"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT " \
			"LOGIN DESTADDR DESTPORT\r\n" \
			"250 8BITMIME\r\n"
#define XCLIENT_ALL	"XCLIENT ADDR=192.0.2.1 PORT=40000 " \
			"NAME=[UNAVAILABLE] DESTADDR=198.51.100.25 " \
			"DESTPORT=25\r\n"
#define XCLIENT_OLD	"XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]\r\n"
#define GREET2		"220 backend.test ESMTP again\r\n"
/* The XCLIENT dialogue on a new connection, the client held meanwhile. */
#define ST_XCLIENT_UP(c, tob, toc) \
	{ 'C', c, NULL, NULL }, \
	{ 'B', GREET, OUR_EHLO, NULL }, \
	{ 'B', EHLO_XC, XCLIENT_ALL, NULL }, \
	{ 'B', GREET2, tob, toc }

/*
 * SPEC 12, backend_tls = starttls: our EHLO and STARTTLS in cleartext, the
 * client held and told nothing, then our greeting after the handshake and
 * the client's held bytes, which go inside TLS.
 */
#define B_EHLO_STLS	"250-backend.test\r\n" \
			"250-PIPELINING\r\n" \
			"250-STARTTLS\r\n" \
			"250 8BITMIME\r\n"
#define OUR_STARTTLS	"STARTTLS\r\n"
#define B_GO		"220 2.0.0 Ready to start TLS\r\n"
#define LOCAL_GREET	"220 mx.example.test ESMTP\r\n"
/* Up to the go-ahead; c is what the client sent meanwhile. */
#define ST_BTLS(c) \
	{ 'C', c, NULL, NULL }, \
	{ 'B', GREET, OUR_EHLO, NULL }, \
	{ 'B', B_EHLO_STLS, OUR_STARTTLS, NULL }

static struct fh_case smtp_cases[] = {
	/* ---- SPEC 12: backend_tls = starttls ---- */
	{ .name = "backend starttls: dialogue, our greeting, client's EHLO "
	  "inside TLS, post-TLS EHLO reply as for TLS",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(EHLO_C),
		{ 'B', B_GO, EHLO_C, LOCAL_GREET, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_B, NULL, EHLO_TLS },
		{ 'C', MAIL, MAIL, NULL } } },
	{ .name = "backend starttls: multi-line greeting, keyword in any "
	  "case and split by HTAB",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', "220-backend.test\r\n220 ESMTP\r\n", OUR_EHLO, NULL },
		{ 'B', "250-b\r\n250 starttls\tX\r\n", OUR_STARTTLS, NULL },
		{ 'B', "220 go\r\n", NULL, LOCAL_GREET,
		  FILTER_BACKEND_STARTTLS } } },
	{ .name = "backend starttls: client leg starttls sees ours once",
	  .starttls_service = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(""),
		{ 'B', B_GO, NULL, LOCAL_GREET, FILTER_BACKEND_STARTTLS },
		ST_EHLO_CLEAR, ST_STARTTLS, ST_EHLO_UP } },
	{ .name = "backend starttls: no STARTTLS in EHLO -> 421, nothing "
	  "more sent",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'C', EHLO_C MAIL, NULL, NULL },
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', EHLO_B_PLAIN, NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "backend starttls: STARTTLS refused -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(EHLO_C),
		{ 'B', "454 4.7.0 TLS not available\r\n", NULL,
		  R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "backend starttls: greeting 554 -> 421, the server's "
	  "words never shown",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', "554 5.3.2 go away\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: our EHLO refused -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "502 5.5.1 no\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: bytes after the go-ahead cut, never "
	  "read as replies",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(EHLO_C),
		{ 'B', B_GO "250 injected\r\n554 more\r\n", EHLO_C,
		  LOCAL_GREET, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_B_PLAIN, NULL, EHLO_B_PLAIN } } },
	{ .name = "backend starttls: a reply before our EHLO was sent "
	  "-> 421, EHLO not sent",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET B_EHLO_STLS, NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: a go-ahead before our STARTTLS was sent "
	  "-> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', B_EHLO_STLS B_GO, NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: 334 to our EHLO -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "334 VXNlcm5hbWU6\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: malformed reply -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "250-b\r\n25 STARTTLS\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: the server speaks first inside TLS, "
	  "after our greeting -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(""),
		{ 'B', B_GO, NULL, LOCAL_GREET, FILTER_BACKEND_STARTTLS },
		{ 'B', "220 again\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls + xclient: the server speaks after the "
	  "XCLIENT reply -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .xclient = true,
	  .steps = { ST_BTLS(""),
		{ 'B', B_GO, OUR_EHLO, NULL, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_XC, XCLIENT_ALL, NULL },
		{ 'B', GREET2 "250 more\r\n", NULL, GREET2 R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: the server answers once the client's "
	  "first command went",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(""),
		{ 'B', B_GO, NULL, LOCAL_GREET, FILTER_BACKEND_STARTTLS },
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL },
		{ 'B', "250 ok\r\n", NULL, "250 ok\r\n" } } },
	{ .name = "backend starttls: bare LF in the dialogue -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "250-b\r\n250 STARTTLS\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: bare LF greeting -> 421, EHLO not sent",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = {
		{ 'B', "220 backend.test ESMTP\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "backend starttls: bare LF go-ahead -> 421",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .steps = { ST_BTLS(EHLO_C),
		{ 'B', "220 go\n", NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "backend starttls + xclient: XCLIENT inside TLS, its reply "
	  "the greeting",
	  .tls_active = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .xclient = true,
	  .steps = { ST_BTLS(EHLO_C),
		{ 'B', B_GO, OUR_EHLO, NULL, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_XC, XCLIENT_ALL, NULL },
		{ 'B', GREET2, EHLO_C, GREET2 } } },
	{ .name = "backend starttls + xclient + client STARTTLS: the fresh "
	  "connection's dialogue all swallowed",
	  .starttls_service = true, .backend_tls = BACKEND_TLS_STARTTLS,
	  .xclient = true,
	  .steps = { ST_BTLS(""),
		{ 'B', B_GO, OUR_EHLO, NULL, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_XC, XCLIENT_ALL, NULL },
		{ 'B', GREET2, NULL, GREET2 },
		ST_EHLO_CLEAR, ST_STARTTLS, ST_BTLS(EHLO_C),
		{ 'B', B_GO, OUR_EHLO, NULL, FILTER_BACKEND_STARTTLS },
		{ 'B', EHLO_XC, XCLIENT_ALL, NULL },
		{ 'B', GREET2, EHLO_C, NULL },
		{ 'B', EHLO_B, NULL, EHLO_TLS } } },

	/* ---- SPEC 9: fresh backend for the TLS phase ---- */
	{ .name = "send_proxy STARTTLS: fresh greeting swallowed, no RSET, "
	  "client bytes held then forwarded",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', EHLO_C, NULL, NULL },
		{ 'B', GREET2, EHLO_C, NULL },
		{ 'B', EHLO_B, NULL, EHLO_TLS },
		{ 'C', "MAIL FROM:<a@b>\r\n", "MAIL FROM:<a@b>\r\n", NULL } } },
	{ .name = "send_proxy STARTTLS: still EHLO first inside TLS",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V1,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'B', GREET2, NULL, NULL },
		{ 'C', MAIL, NULL, R_EHLO_FIRST } } },
	{ .name = "send_proxy STARTTLS: multi-line fresh greeting swallowed",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'B', "220-backend.test\r\n", NULL, NULL },
		{ 'B', "220 ESMTP\r\n", NULL, NULL },
		{ 'C', EHLO_C, EHLO_C, NULL } } },
	{ .name = "send_proxy STARTTLS: fresh greeting 554 -> 421, closed",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', EHLO_C, NULL, NULL },
		{ 'B', "554 5.7.1 go away\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "send_proxy STARTTLS: malformed fresh greeting -> 421",
	  .starttls_service = true, .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'B', "* OK IMAP\r\n", NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "send_proxy on implicit TLS: first greeting relayed",
	  .tls_active = true, .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_GREET, ST_EHLO_TLS } },

	/* ---- SPEC 9: XCLIENT ---- */
	{ .name = "xclient: EHLO, XCLIENT with the advertised attributes, "
	  "one greeting, client held",
	  .starttls_service = true, .xclient = true,
	  .steps = { ST_XCLIENT_UP(EHLO_C, EHLO_C, GREET2),
		{ 'B', EHLO_B, NULL, EHLO_CLEAR } } },
	{ .name = "xclient: only attributes the backend lists",
	  .tls_active = true, .xclient = true,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "250-b\r\n250 xclient\tname  addr\r\n", XCLIENT_OLD,
		  NULL },
		{ 'B', GREET2, NULL, GREET2 } } },
	{ .name = "xclient: listed twice, the first line's attributes",
	  .tls_active = true, .xclient = true,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "250-b\r\n250-XCLIENT NAME ADDR\r\n250 XCLIENT ADDR "
		  "PORT DESTADDR DESTPORT\r\n", XCLIENT_OLD, NULL },
		{ 'B', GREET2, NULL, GREET2 } } },
	{ .name = "xclient: not advertised -> 421",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', EHLO_B_PLAIN, NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "xclient: without ADDR -> 421",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "250-b\r\n250 XCLIENT NAME HELO\r\n", NULL,
		  R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "xclient: refused -> 421, nothing relayed",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'C', EHLO_C MAIL, NULL, NULL },
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', EHLO_XC, XCLIENT_ALL, NULL },
		{ 'B', "550 5.7.0 Error: insufficient authorization\r\n",
		  NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "xclient: our EHLO refused -> 421",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', "502 5.5.1 no EHLO\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "xclient: greeting 554 -> 421",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'B', "554 5.3.2 busy\r\n", NULL, R_UNAVAILABLE,
		  FILTER_CLOSE } } },
	{ .name = "xclient: unsolicited output before the greeting -> 421",
	  .starttls_service = true, .xclient = true,
	  .steps = {
		{ 'B', GREET GREET, NULL, R_UNAVAILABLE, FILTER_CLOSE } } },
	{ .name = "xclient: the client's own XCLIENT still refused",
	  .starttls_service = true, .xclient = true,
	  .steps = { ST_XCLIENT_UP("XCLIENT ADDR=6.6.6.6\r\n", NULL,
		    GREET2 R_NOT_PERMITTED) } },
	{ .name = "xclient + STARTTLS: again on the fresh connection, "
	  "all swallowed",
	  .starttls_service = true, .xclient = true,
	  .steps = { ST_XCLIENT_UP(EHLO_C, EHLO_C, GREET2),
		{ 'B', EHLO_B, NULL, EHLO_CLEAR }, ST_STARTTLS,
		ST_XCLIENT_UP(EHLO_C, EHLO_C, NULL),
		{ 'B', EHLO_B, NULL, EHLO_TLS } } },
	{ .name = "xclient + send_proxy + STARTTLS: fresh XCLIENT refused "
	  "-> 421 inside TLS",
	  .starttls_service = true, .xclient = true,
	  .send_proxy = SEND_PROXY_V2,
	  .steps = { ST_XCLIENT_UP(EHLO_C, EHLO_C, GREET2),
		{ 'B', EHLO_B, NULL, EHLO_CLEAR }, ST_STARTTLS,
		{ 'B', GREET, OUR_EHLO, NULL },
		{ 'B', EHLO_B_PLAIN, NULL, R_UNAVAILABLE, FILTER_CLOSE } } },

	/* ---- SPEC 10: authentication failures ---- */
	{ .name = "535 counted (AUTH and SASL response); then 454, not sent",
	  .tls_active = true, .max_auth_failures = 2,
	  .auth_failures_want = 2, .auth_refusals_want = 2,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN Zm9v\r\n", "AUTH PLAIN Zm9v\r\n", NULL },
		{ 'B', "535 5.7.8 Error: authentication failed\r\n", NULL,
		  "535 5.7.8 Error: authentication failed\r\n" },
		{ 'C', "AUTH LOGIN\r\n", "AUTH LOGIN\r\n", NULL },
		{ 'B', "334 VXNlcm5hbWU6\r\n", NULL, "334 VXNlcm5hbWU6\r\n" },
		{ 'C', "dQ==\r\n", "dQ==\r\n", NULL },
		{ 'B', "334 UGFzc3dvcmQ6\r\n", NULL, "334 UGFzc3dvcmQ6\r\n" },
		{ 'C', "cA==\r\n", "cA==\r\n", NULL },
		{ 'B', "535 5.7.8 Error: authentication failed\r\n", NULL,
		  "535 5.7.8 Error: authentication failed\r\n" },
		{ 'C', "AUTH PLAIN Zm9v\r\n", NULL,
		  "454 4.7.0 Too many authentication failures\r\n" },
		{ 'C', "auth login\r\nNOOP\r\n", "NOOP\r\n",
		  "454 4.7.0 Too many authentication failures\r\n" },
		{ 'B', "250 ok\r\n", NULL, "250 ok\r\n" } } },
	{ .name = "235, 501, 454 and 535 to other commands: no failure",
	  .tls_active = true, .max_auth_failures = 1,
	  .auth_failures_want = 0, .auth_refusals_want = 0,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', "*\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", NULL,
		  "501 5.7.0 cancelled\r\n" },
		{ 'C', "AUTH PLAIN Zm9v\r\n", "AUTH PLAIN Zm9v\r\n", NULL },
		{ 'B', "454 4.7.0 Temporary authentication failure\r\n", NULL,
		  "454 4.7.0 Temporary authentication failure\r\n" },
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL },
		{ 'B', "535 odd\r\n", NULL, "535 odd\r\n" },
		{ 'C', "AUTH PLAIN Zm9v\r\n", "AUTH PLAIN Zm9v\r\n", NULL },
		{ 'B', "235 2.7.0 Authentication successful\r\n", NULL,
		  "235 2.7.0 Authentication successful\r\n" } } },
	{ .name = "cleartext AUTH: refused as credentials, not as failures",
	  .starttls_service = true, .max_auth_failures = 1,
	  .auth_failures_want = 0, .auth_refusals_want = 0,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN Zm9v\r\n", NULL, R_ENCRYPT } } },

	/* ---- greeting and reply assembly ---- */
	{ .name = "greeting relayed", .starttls_service = true,
	  .steps = { ST_GREET } },
	{ .name = "multi-line greeting relayed", .starttls_service = true,
	  .steps = {
		{ 'B', "220-backend.test ESMTP\r\n220 hello\r\n", NULL,
		  "220-backend.test ESMTP\r\n220 hello\r\n" } } },
	{ .name = "greeting split across reads", .starttls_service = true,
	  .steps = {
		{ 'B', "220 backend", NULL, NULL },
		{ 'B', ".test ESMTP\r\n", NULL, GREET } } },
	{ .name = "greeting 554 relayed", .starttls_service = true,
	  .steps = {
		{ 'B', "554 5.7.1 go away\r\n", NULL, "554 5.7.1 go away\r\n" } } },
	{ .name = "bare LF reply lines written with CRLF",
	  .starttls_service = true,
	  .steps = {
		{ 'B', "220-a\n220 b\n", NULL, "220-a\r\n220 b\r\n" } } },
	{ .name = "malformed backend reply closes", .starttls_service = true,
	  .steps = { { 'B', "hello\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "backend reply code 199 closes", .starttls_service = true,
	  .steps = { { 'B', "199 odd\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "reply code changing inside a reply closes",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL },
		{ 'B', "250-a\r\n251 b\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "reply with too many lines closes", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "HELP\r\n", "HELP\r\n", NULL },
		{ 'B', S64(S8("214-x\r\n")) "214 y\r\n", NULL, NULL,
		  FILTER_CLOSE } } },
	{ .name = "NUL in backend reply closes", .starttls_service = true,
	  .steps = { { 'B', "220 a\0b\r\n", NULL, NULL, FILTER_CLOSE, 9 } } },
	{ .name = "unsolicited backend output closes",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'B', "250 surprise\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "334 to a non-AUTH command closes", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL },
		{ 'B', "334 VXNlcm5hbWU6\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "354 to a non-DATA command closes", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', RCPT, RCPT, NULL },
		{ 'B', GO, NULL, NULL, FILTER_CLOSE } } },

	/* ---- EHLO rewriting ---- */
	{ .name = "EHLO cleartext: STARTTLS once, no AUTH/XCLIENT/XFORWARD",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR } },
	{ .name = "EHLO implicit TLS: no STARTTLS, AUTH kept",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS } },
	{ .name = "EHLO after STARTTLS: TLS rules", .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS, ST_EHLO_UP } },
	{ .name = "EHLO: removed last line, previous gets '250 '",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-SIZE 1\r\n250 XFORWARD NAME\r\n", NULL,
		  "250-b\r\n250 SIZE 1\r\n" } } },
	{ .name = "EHLO: only the name left", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-STARTTLS\r\n250 XCLIENT NAME\r\n", NULL,
		  "250 b\r\n" } } },
	{ .name = "EHLO: one-line reply gets our STARTTLS",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250 b\r\n", NULL, "250-b\r\n250 STARTTLS\r\n" } } },
	{ .name = "EHLO: backend STARTTLS twice, any case, advertised once",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-starttls\r\n250-STARTTLS\r\n250 auth=login\r\n",
		  NULL, "250-b\r\n250 STARTTLS\r\n" } } },
	{ .name = "EHLO: AUTH last line in cleartext", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-DSN\r\n250 AUTH GSSAPI\r\n", NULL,
		  "250-b\r\n250-DSN\r\n250 STARTTLS\r\n" } } },
	{ .name = "EHLO: first line is a name, not a keyword",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-XCLIENT\r\n250 DSN\r\n", NULL,
		  "250-XCLIENT\r\n250 DSN\r\n" } } },
	{ .name = "EHLO: reply split across reads", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-AUTH PL", NULL, NULL },
		{ 'B', "AIN\r\n250 DSN\r\n", NULL,
		  "250-b\r\n250-DSN\r\n250 STARTTLS\r\n" } } },
	{ .name = "EHLO refused: relayed as is", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "EHLO\r\n", "EHLO\r\n", NULL },
		{ 'B', "501 5.5.4 Syntax: EHLO hostname\r\n", NULL,
		  "501 5.5.4 Syntax: EHLO hostname\r\n" } } },
	{ .name = "HELO reply untouched", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "HELO client.test\r\n", "HELO client.test\r\n", NULL },
		{ 'B', "250 backend.test\r\n", NULL, "250 backend.test\r\n" } } },
	{ .name = "EHLO pipelined before the greeting",
	  .starttls_service = true,
	  .steps = {
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', GREET EHLO_B, NULL, GREET EHLO_CLEAR } } },

	/* ---- STARTTLS ---- */
	{ .name = "STARTTLS go-ahead, then Send EHLO first",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', MAIL, RSET, NULL },
		{ 'B', OK, NULL, R_EHLO_FIRST },
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL },
		{ 'B', OK, NULL, OK },
		{ 'C', "RSET\r\n", "RSET\r\n", NULL },
		{ 'B', OK, NULL, OK },
		ST_EHLO_TLS,
		{ 'C', MAIL, MAIL, NULL },
		{ 'B', OK, NULL, OK } } },
	{ .name = "after STARTTLS: AUTH, RCPT, VRFY, DATA need EHLO first",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', "AUTH PLAIN dGVzdA==\r\n", RSET, NULL },
		{ 'B', OK, NULL, R_EHLO_FIRST },
		{ 'C', RCPT "VRFY x\r\nDATA\r\n", NULL,
		  R_EHLO_FIRST R_EHLO_FIRST R_EHLO_FIRST },
		{ 'C', "QUIT\r\n", "QUIT\r\n", NULL },
		{ 'B', "221 2.0.0 Bye\r\n", NULL, "221 2.0.0 Bye\r\n" } } },
	{ .name = "after STARTTLS: HELO also starts the new session",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', "HELO c\r\n", RSET "HELO c\r\n", NULL },
		{ 'B', OK "250 b\r\n", NULL, "250 b\r\n" },
		{ 'C', MAIL, MAIL, NULL } } },
	{ .name = "after STARTTLS: failed EHLO keeps Send EHLO first",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', "EHLO\r\n", RSET "EHLO\r\n", NULL },
		{ 'B', OK "501 5.5.4 Syntax\r\n", NULL, "501 5.5.4 Syntax\r\n" },
		{ 'C', MAIL, NULL, R_EHLO_FIRST } } },
	{ .name = "after STARTTLS: AUTH forwarded after EHLO",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS, ST_EHLO_UP,
		{ 'C', "AUTH PLAIN dGVzdA==\r\n", "AUTH PLAIN dGVzdA==\r\n",
		  NULL },
		{ 'B', "235 2.7.0 Authentication successful\r\n", NULL,
		  "235 2.7.0 Authentication successful\r\n" } } },
	{ .name = "STARTTLS without EHLO", .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS } },
	{ .name = "STARTTLS lower case", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "starttls\r\n", NULL, R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "STARTTLS with trailing blank only",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "STARTTLS \r\n", NULL, R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "STARTTLS with arguments: 501", .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "STARTTLS now\r\n", NULL, R_ARGS },
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL } } },
	{ .name = "STARTTLS inside TLS: 503", .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS, ST_EHLO_UP,
		{ 'C', "STARTTLS\r\n", NULL, R_TLS_ACTIVE } } },
	{ .name = "STARTTLS right after the upgrade: 503",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', "STARTTLS\r\n", RSET, NULL },
		{ 'B', OK, NULL, R_TLS_ACTIVE } } },
	{ .name = "STARTTLS on implicit TLS: 503", .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "STARTTLS\r\n", NULL, R_TLS_ACTIVE } } },
	{ .name = "MAIL before STARTTLS, RCPT after: 503 in transaction",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL, MAIL, NULL },
		{ 'B', OK, NULL, OK },
		{ 'C', "STARTTLS\r\n", NULL, R_IN_TXN },
		{ 'C', RCPT, RCPT, NULL },
		{ 'B', OK, NULL, OK } } },
	{ .name = "pipelined MAIL then STARTTLS: decided on MAIL's reply",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL "STARTTLS\r\n", MAIL, NULL },
		{ 'B', OK, NULL, OK R_IN_TXN } } },
	{ .name = "refused MAIL: STARTTLS allowed",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL "STARTTLS\r\n", MAIL, NULL },
		{ 'B', "553 5.1.8 no\r\n", NULL,
		  "553 5.1.8 no\r\n" R_GO_AHEAD, FILTER_STARTTLS } } },
	{ .name = "RSET ends the transaction: STARTTLS allowed",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL, MAIL, NULL },
		{ 'B', OK, NULL, OK },
		{ 'C', "RSET\r\nSTARTTLS\r\n", "RSET\r\n", NULL },
		{ 'B', OK, NULL, OK R_GO_AHEAD, FILTER_STARTTLS } } },
	{ .name = "end of DATA ends the transaction: STARTTLS allowed",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_TXN_DATA,
		{ 'C', "hi\r\n.\r\nSTARTTLS\r\n", "hi\r\n.\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "injection: STARTTLS\\r\\nRSET in one read closes",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "STARTTLS\r\nRSET\r\n", NULL, NULL, FILTER_CLOSE } } },
	{ .name = "injection: STARTTLS, AUTH, MAIL in one read closes",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "STARTTLS\r\nAUTH PLAIN dGVzdA==\r\nMAIL FROM:<a@b>\r\n",
		  NULL, NULL, FILTER_CLOSE } } },
	{ .name = "injection: STARTTLS with bare LF is a syntax error",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "STARTTLS\nRSET\r\n", "RSET\r\n", R_SYNTAX },
		{ 'B', OK, NULL, OK } } },
	{ .name = "pipelined EHLO, STARTTLS: go-ahead after EHLO reply",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C "STARTTLS\r\n", EHLO_C, NULL },
		{ 'B', EHLO_B, NULL, EHLO_CLEAR R_GO_AHEAD,
		  FILTER_STARTTLS },
		ST_EHLO_UP } },
	{ .name = "bytes arriving while STARTTLS waits: close",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\nSTARTTLS\r\n", "NOOP\r\n", NULL },
		{ 'C', "MAIL FROM:<evil@x>\r\n", NULL, NULL },
		{ 'B', OK, NULL, OK, FILTER_CLOSE } } },
	{ .name = "STARTTLS before the greeting waits for it",
	  .starttls_service = true,
	  .steps = {
		{ 'C', "STARTTLS\r\n", NULL, NULL },
		{ 'B', GREET, NULL, GREET R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "local refusal before STARTTLS keeps order",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\nXCLIENT ADDR=1.2.3.4\r\nSTARTTLS\r\n",
		  "NOOP\r\n", NULL },
		{ 'B', OK, NULL, OK R_NOT_PERMITTED R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "backend output after the go-ahead closes",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'B', OK, NULL, NULL, FILTER_CLOSE } } },
	{ .name = "backend output beyond our RSET's reply closes",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', "NOOP\r\n", RSET "NOOP\r\n", NULL },
		{ 'B', OK OK "250 2.0.0 leftover\r\n", NULL, OK,
		  FILTER_CLOSE } } },
	{ .name = "failed RSET after STARTTLS closes",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', EHLO_C, RSET EHLO_C, NULL },
		{ 'B', "421 4.3.0 shutting down\r\n", NULL, NULL,
		  FILTER_CLOSE } } },
	{ .name = "multi-line reply to our RSET swallowed",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', "NOOP\r\n", RSET "NOOP\r\n", NULL },
		{ 'B', "250-2.0.0 Ok\r\n", NULL, NULL },
		{ 'B', "250 2.0.0 really\r\n", NULL, NULL },
		{ 'B', OK, NULL, OK } } },

	/* ---- AUTH ---- */
	{ .name = "AUTH in cleartext: 538, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "AUTH PLAIN dGVzdA==\r\n", NULL, R_ENCRYPT },
		{ 'C', "NOOP\r\n", "NOOP\r\n", NULL } } },
	{ .name = "AUTH in cleartext on require_starttls: 530",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "AUTH LOGIN\r\n", NULL, R_TLS_FIRST } } },
	{ .name = "AUTH with a tab after the verb: 500, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "auth\tPLAIN dGVzdA==\r\n", NULL, R_SYNTAX } } },
	{ .name = "AUTH after leading blanks: 500, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "  AUTH PLAIN dGVzdA==\r\n", NULL, R_SYNTAX } } },
	{ .name = "X-EXPS in cleartext: 538", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "X-EXPS GSSAPI\r\n", NULL, R_ENCRYPT } } },
	{ .name = "AUTH in TLS with 334 continuations",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "AUTH LOGIN\r\n", "AUTH LOGIN\r\n", NULL },
		/* Held: this line may be a SASL response or a command. */
		{ 'C', "dXNlcg==\r\n", NULL, NULL },
		{ 'B', "334 VXNlcm5hbWU6\r\n", "dXNlcg==\r\n",
		  "334 VXNlcm5hbWU6\r\n" },
		{ 'B', "334 UGFzc3dvcmQ6\r\n", NULL, "334 UGFzc3dvcmQ6\r\n" },
		{ 'C', "cGFzcw==\r\n", "cGFzcw==\r\n", NULL },
		{ 'B', "235 2.7.0 Ok\r\n", NULL, "235 2.7.0 Ok\r\n" },
		{ 'C', MAIL, MAIL, NULL } } },
	{ .name = "SASL response is not parsed as a command",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "AUTH LOGIN\r\n", "AUTH LOGIN\r\n", NULL },
		{ 'B', "334 VXNlcm5hbWU6\r\n", NULL, "334 VXNlcm5hbWU6\r\n" },
		/* Not base64: the exchange is cancelled instead. */
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", NULL,
		  "501 5.7.0 cancelled\r\n" },
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", NULL, R_NOT_PERMITTED } } },
	{ .name = "SASL cancel by the client", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', "*\r\nNOOP\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", "NOOP\r\n",
		  "501 5.7.0 cancelled\r\n" } } },
	{ .name = "SASL response with bare LF becomes a cancel",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', "dGVzdA==\nNOOP\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", "NOOP\r\n",
		  "501 5.7.0 cancelled\r\n" } } },
	{ .name = "over-long SASL response becomes a cancel",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', S64(S8(S8("QUFBQUFB"))), NULL, NULL },
		{ 'C', "QUFB\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", NULL,
		  "501 5.7.0 cancelled\r\n" } } },
	{ .name = "SASL response longer than a command line is fine",
	  .tls_active = true, .max_line = 69,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', S64("QUFB") "\r\n", S64("QUFB") "\r\n", NULL } } },

	/* ---- require_starttls ---- */
	{ .name = "require_starttls: MAIL, RCPT, DATA, VRFY refused",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL RCPT "DATA\r\nVRFY x\r\n", NULL,
		  R_TLS_FIRST R_TLS_FIRST R_TLS_FIRST R_TLS_FIRST } } },
	{ .name = "require_starttls: EHLO HELO NOOP RSET QUIT pass",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET,
		{ 'C', "HELO c\r\nNOOP\r\nRSET\r\n" EHLO_C "QUIT\r\n",
		  "HELO c\r\nNOOP\r\nRSET\r\n" EHLO_C "QUIT\r\n", NULL },
		{ 'B', "250 b\r\n" OK OK EHLO_B "221 Bye\r\n", NULL,
		  "250 b\r\n" OK OK EHLO_CLEAR "221 Bye\r\n" } } },
	{ .name = "require_starttls: all passes after STARTTLS",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS, ST_EHLO_UP,
		{ 'C', MAIL, MAIL, NULL }, { 'B', OK, NULL, OK } } },
	{ .name = "require_starttls: refused BDAT chunk is discarded",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET,
		{ 'C', "BDAT 10 LAST\r\nNOOP\r\nNOOPNOOP\r\n", "NOOP\r\n",
		  R_TLS_FIRST } } },
	{ .name = "no require_starttls: MAIL passes in cleartext",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL "VRFY x\r\n", MAIL "VRFY x\r\n", NULL } } },

	/* ---- proxy authority ---- */
	{ .name = "XCLIENT refused in cleartext", .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "XCLIENT ADDR=1.2.3.4 NAME=x\r\n", NULL,
		  R_NOT_PERMITTED } } },
	{ .name = "XFORWARD refused in TLS", .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "xforward ADDR=1.2.3.4\r\n", NULL, R_NOT_PERMITTED } } },
	{ .name = "XCLIENT refused before EHLO after STARTTLS",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", RSET, NULL },
		{ 'B', OK, NULL, R_NOT_PERMITTED } } },
	{ .name = "XCLIENT refused under require_starttls",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET,
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", NULL, R_NOT_PERMITTED } } },
	{ .name = "XCLIENT with a tab or a leading blank: 550, never forwarded",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET,
		{ 'C', "XCLIENT\tADDR=1.2.3.4\r\n \txforward NAME=x\r\n",
		  NULL, R_NOT_PERMITTED R_NOT_PERMITTED } } },

	/* ---- pipelining ---- */
	{ .name = "pipelined MAIL RCPT XCLIENT RCPT DATA: order kept",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', MAIL RCPT "XCLIENT NAME=x\r\n" RCPT "DATA\r\n",
		  MAIL RCPT RCPT "DATA\r\n", NULL },
		{ 'B', OK OK, NULL, OK OK R_NOT_PERMITTED },
		{ 'B', "550 5.1.1 unknown\r\n" GO, NULL,
		  "550 5.1.1 unknown\r\n" GO },
		{ 'C', "x\r\n.\r\n", "x\r\n.\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "pipelined group with a NUL line in the middle",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL "RC\0PT TO:<x>\r\n" RCPT, MAIL RCPT, NULL,
		  FILTER_CONTINUE, sizeof(MAIL "RC\0PT TO:<x>\r\n" RCPT) - 1 },
		{ 'B', OK, NULL, OK R_SYNTAX },
		{ 'B', OK, NULL, OK } } },
	{ .name = "local refusal waits for the greeting",
	  .starttls_service = true,
	  .steps = {
		{ 'C', "XCLIENT NAME=x\r\n", NULL, NULL },
		{ 'B', GREET, NULL, GREET R_NOT_PERMITTED } } },
	{ .name = "at most FILTER_PENDING_MAX commands in flight",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', S64("NOOP\r\n") S8("NOOP\r\n"), S64("NOOP\r\n"), NULL },
		{ 'B', S64(OK), S8("NOOP\r\n"), S64(OK) },
		{ 'B', S8(OK), NULL, S8(OK) } } },

	/* ---- DATA ---- */
	{ .name = "DATA content relayed byte-exact", .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_TXN_DATA,
		{ 'C', "Subject: t\r\n\r\nAUTH PLAIN dGVzdA==\r\nSTARTTLS\r\n"
		  "XCLIENT ADDR=1.2.3.4\r\n..stuffed\r\n.x\r\n\xc3\xa9\t \r\n"
		  ".\r\n",
		  "Subject: t\r\n\r\nAUTH PLAIN dGVzdA==\r\nSTARTTLS\r\n"
		  "XCLIENT ADDR=1.2.3.4\r\n..stuffed\r\n.x\r\n\xc3\xa9\t \r\n"
		  ".\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "DATA held until 354, then content, then commands",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "DATA\r\nhello\r\n.\r\nQUIT\r\n", "DATA\r\n", NULL },
		{ 'B', GO, "hello\r\n.\r\nQUIT\r\n", GO },
		{ 'B', QUEUED "221 Bye\r\n", NULL, QUEUED "221 Bye\r\n" } } },
	{ .name = "DATA refused (554): following bytes are commands",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "DATA\r\nRSET\r\nAUTH PLAIN x\r\n", "DATA\r\n", NULL },
		{ 'B', "554 5.5.1 no valid recipients\r\n", "RSET\r\n",
		  "554 5.5.1 no valid recipients\r\n" },
		{ 'B', OK, NULL, OK R_ENCRYPT } } },
	{ .name = "empty message", .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', ".\r\n", ".\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "end of DATA split across reads", .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n.", "a\r\n", NULL },
		{ 'C', "\r", NULL, NULL },
		{ 'C', "\n", ".\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "dot at a read boundary that is not the end",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n.", "a\r\n", NULL },
		{ 'C', "b\r\n\r", ".b\r\n", NULL },
		{ 'C', "\n.\r\n", "\r\n.\r\n", NULL } } },
	{ .name = "\\n.\\n inside DATA normalised and stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
		  "a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "\\r\\n.\\n inside DATA normalised and stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n.\nRCPT TO:<x@y>\r\n.\r\n",
		  "a\r\n..\r\nRCPT TO:<x@y>\r\n.\r\n", NULL } } },
	{ .name = "\\n.\\r\\n inside DATA normalised and stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\n.\r\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", NULL } } },
	{ .name = "\\r.\\r inside DATA normalised and stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r.\rb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", NULL } } },
	{ .name = "\\r\\n.\\r inside DATA normalised and stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n.\rb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", NULL } } },
	{ .name = "bare LF and CR lines normalised", .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\nb\rc\r\r\n\n.x\r\n.\r\n",
		  "a\r\nb\r\nc\r\n\r\n\r\n.x\r\n.\r\n", NULL } } },
	{ .name = "\".\\r\\n\" after a bare LF is content, stuffed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\n.\r\nQUIT\r\n", "a\r\n..\r\nQUIT\r\n", NULL },
		{ 'C', ".\r\n", ".\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "bare CR at a read boundary", .tls_active = true,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r", "a", NULL },
		{ 'C', "b\r\n.\r\n", "\r\nb\r\n.\r\n", NULL } } },
	{ .name = "reject mode: bare LF refuses the message and closes",
	  .tls_active = true, .bare_newline = BARE_NEWLINE_REJECT,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\nb\r\n", "a", NULL },
		{ 'C', ".\r\nMAIL FROM:<x@y>\r\n", NULL, R_BARE,
		  FILTER_CLOSE } } },
	{ .name = "reject mode: \\n.\\n ends the refused message",
	  .tls_active = true, .bare_newline = BARE_NEWLINE_REJECT,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\nb\n.\n", "a\r\nb", R_BARE, FILTER_CLOSE } } },
	{ .name = "reject mode: \\r\\n.\\n refused", .tls_active = true,
	  .bare_newline = BARE_NEWLINE_REJECT,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n.\n", "a\r\n", R_BARE, FILTER_CLOSE } } },
	{ .name = "reject mode: clean message passes", .tls_active = true,
	  .bare_newline = BARE_NEWLINE_REJECT,
	  .steps = { ST_GREET, ST_TXN_DATA,
		{ 'C', "a\r\n..b\r\n.\r\n", "a\r\n..b\r\n.\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },

	/* ---- BDAT ---- */
	{ .name = "BDAT chunk with CRLF.CRLF relayed unparsed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 13 LAST\r\nab\r\n.\r\nRSET\r\n",
		  "BDAT 13 LAST\r\nab\r\n.\r\nRSET\r\n", NULL },
		{ 'B', QUEUED, NULL, QUEUED } } },
	{ .name = "BDAT chunks pipelined", .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 3\r\nabcBDAT 2 last\r\nde",
		  "BDAT 3\r\nabcBDAT 2 LAST\r\nde", NULL },
		{ 'B', "250 2.0.0 3 octets\r\n" QUEUED, NULL,
		  "250 2.0.0 3 octets\r\n" QUEUED } } },
	{ .name = "BDAT chunk across reads, bare LF untouched",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 6 LAST\r\nAU", "BDAT 6 LAST\r\nAU", NULL },
		{ 'C', "TH\n\rNOOP\r\n", "TH\n\rNOOP\r\n", NULL } } },
	{ .name = "BDAT 0 LAST", .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 0 LAST\r\nNOOP\r\n", "BDAT 0 LAST\r\nNOOP\r\n",
		  NULL } } },
	{ .name = "BDAT without size: 501 and close", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "BDAT\r\nabc", NULL, R_ARGS, FILTER_CLOSE } } },
	{ .name = "BDAT bad size: 501 and close", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "BDAT 1x0\r\n", NULL, R_ARGS, FILTER_CLOSE } } },
	{ .name = "BDAT bad end marker: 501, chunk skipped", .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 10 FIRST\r\nRSET\r\nRSETNOOP\r\n", "NOOP\r\n",
		  R_ARGS } } },
	{ .name = "BDAT size beyond 64 bits: 501 and close",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "BDAT 18446744073709551616\r\n", NULL, R_ARGS,
		  FILTER_CLOSE } } },
	{ .name = "BDAT 501 waits for earlier replies", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\nBDAT x\r\n", "NOOP\r\n", NULL },
		{ 'B', OK, NULL, OK R_ARGS, FILTER_CLOSE } } },
	{ .name = "BDAT LAST ends the transaction: STARTTLS allowed",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', MAIL, MAIL, NULL }, { 'B', OK, NULL, OK },
		{ 'C', "BDAT 1 LAST\r\nxSTARTTLS\r\n", "BDAT 1 LAST\r\nx",
		  NULL },
		{ 'B', QUEUED, NULL, QUEUED R_GO_AHEAD,
		  FILTER_STARTTLS } } },
	{ .name = "BDAT refused before EHLO after STARTTLS: chunk skipped",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_STARTTLS,
		{ 'C', "BDAT 5\r\nMAIL NOOP\r\n", RSET "NOOP\r\n", NULL },
		{ 'B', OK, NULL, R_EHLO_FIRST } } },
	/*
	 * A backend that did not advertise CHUNKING would read the chunk as
	 * command lines (XCLIENT, cleartext AUTH, a transaction) and answer
	 * each: the chunk is skipped by count here and never forwarded.
	 */
	{ .name = "BDAT without CHUNKING in cleartext: 500, chunk skipped",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', EHLO_B_PLAIN, NULL, "250-backend.test\r\n"
		  "250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n" },
		{ 'C', "BDAT 45 LAST\r\nXCLIENT ADDR=192.0.2.1\r\n"
		  "AUTH PLAIN AHUAcA==\r\nNOOP\r\n", "NOOP\r\n",
		  R_UNKNOWN },
		{ 'B', OK, NULL, OK } } },
	{ .name = "BDAT before any EHLO: 502, chunk skipped",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "BDAT 6\r\nRSET\r\nNOOP\r\n", "NOOP\r\n",
		  R_NO_CHUNKING } } },
	{ .name = "BDAT after HELO: 502 (no extensions)",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "HELO c\r\n", "HELO c\r\n", NULL },
		{ 'B', "250 backend.test\r\n", NULL, "250 backend.test\r\n" },
		{ 'C', "BDAT 1 LAST\r\nx", NULL, R_NO_CHUNKING } } },
	{ .name = "BDAT after a new EHLO without CHUNKING: 502",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', EHLO_B_PLAIN, NULL, EHLO_B_PLAIN },
		{ 'C', "BDAT 1 LAST\r\nx", NULL, R_NO_CHUNKING } } },
	{ .name = "BDAT with chunking advertised in lower case",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-backend.test\r\n250 chunking\r\n", NULL,
		  "250-backend.test\r\n250 chunking\r\n" },
		{ 'C', "BDAT 1 LAST\r\nx", "BDAT 1 LAST\r\nx", NULL } } },
	{ .name = "BDAT after STARTTLS needs the new EHLO's CHUNKING",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR, ST_STARTTLS,
		{ 'C', EHLO_C, RSET EHLO_C, NULL },
		{ 'B', OK EHLO_B_PLAIN, NULL, EHLO_B_PLAIN },
		{ 'C', "BDAT 4 LAST\r\nQUITNOOP\r\n", "NOOP\r\n",
		  R_NO_CHUNKING } } },

	/* ---- line framing ---- */
	{ .name = "over-long line: 500, rest of it skipped",
	  .tls_active = true, .max_line = 69,
	  .steps = { ST_GREET,
		{ 'C', "NOOP " S64("A") "A\r\nNOOP\r\n", "NOOP\r\n",
		  R_TOO_LONG } } },
	{ .name = "over-long line over several reads", .tls_active = true,
	  .max_line = 69,
	  .steps = { ST_GREET,
		{ 'C', "AUTH PLAIN " S64("B"), NULL, R_TOO_LONG },
		{ 'C', S64("B"), NULL, NULL },
		{ 'C', "B\r\nNOOP\r\n", "NOOP\r\n", NULL } } },
	{ .name = "line of exactly the limit passes", .tls_active = true,
	  .max_line = 69,
	  .steps = { ST_GREET,
		{ 'C', "NOOP " S64("A") "\r\n", "NOOP " S64("A") "\r\n",
		  NULL } } },
	{ .name = "default limit is 4096", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP " S64(S64("A")) "\r\n", NULL, R_TOO_LONG } } },
	{ .name = "NUL in a command: 500", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\0\r\nRSET\r\n", "RSET\r\n", R_SYNTAX,
		  FILTER_CONTINUE, sizeof("NOOP\0\r\nRSET\r\n") - 1 } } },
	{ .name = "bare CR in a command: 500", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "MAIL FROM:<a>\rRCPT TO:<b>\r\n", NULL, R_SYNTAX } } },
	{ .name = "bare LF command: 500", .tls_active = true,
	  .steps = { ST_GREET, { 'C', "NOOP\n", NULL, R_SYNTAX } } },
	{ .name = "empty and blank lines: 500", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "\r\n \t\r\n", NULL, R_SYNTAX R_SYNTAX } } },
	{ .name = "unknown verbs are forwarded", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "VRFY x\r\nHELP\r\n", "VRFY x\r\nHELP\r\n", NULL },
		{ 'B', "252 2.0.0 x\r\n502 5.5.2 no\r\n", NULL,
		  "252 2.0.0 x\r\n502 5.5.2 no\r\n" } } },
	{ .name = "8-bit command text forwarded", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n",
		  "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n", NULL } } },
	{ .name = "error limit: 421 and close", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', S8("\r\n") "\r\n\r\nNOOP\r\n", NULL,
		  S8(R_SYNTAX) R_SYNTAX R_SYNTAX R_TOO_MANY, FILTER_CLOSE } } },
	{ .name = "error limit: 421 keeps its place", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP\r\n" S8("XCLIENT\r\n") "\r\n\r\n", "NOOP\r\n",
		  NULL },
		{ 'B', OK, NULL,
		  OK S8(R_NOT_PERMITTED) R_SYNTAX R_SYNTAX R_TOO_MANY,
		  FILTER_CLOSE } } },

	/* ---- BDAT: only the canonical form (SPEC 3, issue 8) ---- */
	BDAT_REFUSED("HTAB separator", "BDAT\t22"),
	BDAT_REFUSED("VT separator", "BDAT\v22"),
	BDAT_REFUSED("FF separator", "BDAT\f22"),
	BDAT_REFUSED("HTAB before LAST", "BDAT 22\tLAST"),
	BDAT_REFUSED("leading blank", " BDAT 22"),
	BDAT_REFUSED("leading HTAB", "\tBDAT 22 LAST"),
	BDAT_REFUSED("double space", "BDAT  22"),
	BDAT_REFUSED("double space before LAST", "BDAT 22  LAST"),
	BDAT_REFUSED("trailing junk", "BDAT 22 LAST junk"),
	BDAT_REFUSED("trailing space", "BDAT 22 "),
	BDAT_REFUSED("size and a word", "BDAT 22 FIRST"),
	/* The refused line's own chunk is long: what follows is skipped. */
	BDAT_BOTH("size 2^31 refused, chunk skipped",
	    "BDAT 2147483648 LAST\r\n" CHUNK22 "NOOP\r\n", NULL, R_ARGS,
	    FILTER_CONTINUE),
	BDAT_BOTH("size 2^32 refused, chunk skipped",
	    "BDAT 4294967296\r\n" CHUNK22 "NOOP\r\n", NULL, R_ARGS,
	    FILTER_CONTINUE),
	BDAT_BOTH("size 2^64-1 refused, chunk skipped",
	    "BDAT 18446744073709551615\r\n" CHUNK22, NULL, R_ARGS,
	    FILTER_CONTINUE),
	/* No size we could count: nothing after it can be framed. */
	BDAT_BOTH("size 2^64: 501 and close",
	    "BDAT 18446744073709551616\r\n" CHUNK22, NULL, R_ARGS,
	    FILTER_CLOSE),
	BDAT_BOTH("size with junk: 501 and close",
	    "BDAT 22x\r\n" CHUNK22, NULL, R_ARGS, FILTER_CLOSE),
	BDAT_BOTH("bare LF line with a size: 501, chunk skipped",
	    "BDAT 22\n" CHUNK22 "NOOP\r\n", "NOOP\r\n", R_ARGS,
	    FILTER_CONTINUE),
	BDAT_BOTH("largest size forwarded: 2^31-1",
	    "BDAT 2147483647\r\n" CHUNK22, "BDAT 2147483647\r\n" CHUNK22,
	    NULL, FILTER_CONTINUE),
	/* RFC 3030: keywords in any case; we send our canonical spelling. */
	BDAT_BOTH("lower case re-serialised",
	    "bdat 22 last\r\n" CHUNK22, "BDAT 22 LAST\r\n" CHUNK22, NULL,
	    FILTER_CONTINUE),
	BDAT_BOTH("leading zeros dropped",
	    "BDAT 0022 LAST\r\n" CHUNK22, "BDAT 22 LAST\r\n" CHUNK22, NULL,
	    FILTER_CONTINUE),
	BDAT_BOTH("canonical line forwarded",
	    "BDAT 22\r\n" CHUNK22 "NOOP\r\n", "BDAT 22\r\n" CHUNK22 "NOOP\r\n",
	    NULL, FILTER_CONTINUE),

	/* ---- cleartext allow-list (SPEC 3) ---- */
	{ .name = "cleartext: unknown verb 500, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "FOO bar\r\nNOOP\r\n", "NOOP\r\n", R_UNKNOWN } } },
	{ .name = "cleartext: XEXCH50 500, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "XEXCH50 10 2\r\n", NULL, R_UNKNOWN } } },
	{ .name = "cleartext: XCLIENT 550, never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", NULL, R_NOT_PERMITTED } } },
	{ .name = "cleartext: base64 lines after a refused AUTH never forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "AUTH LOGIN\r\n", NULL, R_ENCRYPT },
		{ 'C', "dXNlcg==\r\ncGFzcw==\r\nNOOP\r\n", "NOOP\r\n",
		  R_UNKNOWN R_UNKNOWN } } },
	{ .name = "cleartext: ETRN without ETRN advertised: 500",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "ETRN example.org\r\n", NULL, R_UNKNOWN } } },
	{ .name = "cleartext: ETRN before any EHLO: 500",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "ETRN example.org\r\n", NULL, R_UNKNOWN } } },
	{ .name = "cleartext: ETRN forwarded when advertised",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250 etrn\r\n", NULL,
		  "250-b\r\n250-etrn\r\n250 STARTTLS\r\n" },
		{ 'C', "etrn example.org\r\n", "ETRN example.org\r\n", NULL } } },
	{ .name = "cleartext: ETRN not allowed after HELO",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250 ETRN\r\n", NULL,
		  "250-b\r\n250-ETRN\r\n250 STARTTLS\r\n" },
		{ 'C', "HELO c\r\n", "HELO c\r\n", NULL },
		{ 'B', "250 b\r\n", NULL, "250 b\r\n" },
		{ 'C', "ETRN example.org\r\n", NULL, R_UNKNOWN } } },
	{ .name = "cleartext: RFC 5321 verbs forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "VRFY x\r\nEXPN y\r\nHELP\r\nNOOP\r\nRSET\r\n",
		  "VRFY x\r\nEXPN y\r\nHELP\r\nNOOP\r\nRSET\r\n", NULL } } },
	{ .name = "require_starttls: unknown verb 530",
	  .starttls_service = true, .require_starttls = true,
	  .steps = { ST_GREET,
		{ 'C', "FOO\r\n", NULL, R_TLS_FIRST } } },
	{ .name = "inside TLS: unknown verb forwarded canonically",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "foo  bar\r\nEtrn x\r\n", "FOO bar\r\nETRN x\r\n",
		  NULL } } },

	/* ---- EHLO keywords split at any blank (SPEC 3, "All three") ---- */
	{ .name = "EHLO cleartext: HTAB-separated and odd-case keywords hidden",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-AUTH\tPLAIN\r\n250-auth=login\r\n"
		  "250-\tAUTH LOGIN\r\n250-x-exps\tGSSAPI\r\n"
		  "250-XCLIENT\tNAME\r\n250-xforward\tADDR\r\n"
		  "250-StartTLS\t\r\n250-XEXCH50\r\n250 DSN\r\n", NULL,
		  "250-b\r\n250-DSN\r\n250 STARTTLS\r\n" } } },
	{ .name = "EHLO inside TLS: HTAB AUTH kept, X* and STARTTLS hidden",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', EHLO_C, EHLO_C, NULL },
		{ 'B', "250-b\r\n250-AUTH\tPLAIN\r\n250-XCLIENT\tNAME\r\n"
		  "250-STARTTLS\t\r\n250 CHUNKING\t\r\n", NULL,
		  "250-b\r\n250-AUTH\tPLAIN\r\n250 CHUNKING\t\r\n" },
		{ 'C', "BDAT 1 LAST\r\nx", "BDAT 1 LAST\r\nx", NULL } } },

	/* ---- canonical command lines (SPEC 8.4, issue 8) ---- */
	{ .name = "canonical: verb upper-cased, SP run collapsed",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "mail   from:<a@example.org>\r\n",
		  "MAIL from:<a@example.org>\r\n", NULL } } },
	{ .name = "canonical: trailing spaces cut", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "NOOP   \r\nrcpt TO:<b@example.net>  \r\n",
		  "NOOP\r\nRCPT TO:<b@example.net>\r\n", NULL } } },
	{ .name = "canonical: HTAB in arguments refused", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "MAIL FROM:<a@example.org>\tSIZE=5\r\n", NULL,
		  R_SYNTAX } } },
	{ .name = "canonical: HTAB after the verb refused",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "RCPT\tTO:<b@example.net>\r\n", NULL, R_SYNTAX } } },
	{ .name = "canonical: VT, FF, ESC and DEL refused", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "MAIL\vFROM:<a>\r\nHELO\fx\r\nNOOP \x1b\r\nNOOP \x7f\r\n",
		  NULL, R_SYNTAX R_SYNTAX R_SYNTAX R_SYNTAX } } },
	{ .name = "canonical: leading blank refused", .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', " MAIL FROM:<a>\r\n", NULL, R_SYNTAX } } },
	/* smtp_canon_args(): RFC 5321 separates arguments by one SP. */
	{ .name = "canonical: SP runs between arguments collapsed",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "MAIL FROM:<a@example.org>  SIZE=10   BODY=8BITMIME\r\n"
		  "RCPT TO:<b@example.net>  NOTIFY=SUCCESS,FAILURE  "
		  "ORCPT=rfc822;b@example.net\r\n"
		  "AUTH PLAIN  AGJvYgBzZWNyZXQ=\r\n",
		  "MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME\r\n"
		  "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE "
		  "ORCPT=rfc822;b@example.net\r\n"
		  "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", NULL } } },
	/* A Quoted-string's SPs are data (RFC 5321 4.1.2 qtextSMTP). */
	{ .name = "canonical: Quoted-strings and address literals byte-exact",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "EHLO [IPv6:2001:db8::1]\r\n"
		  "MAIL FROM:<\"a  b\"@example.org>  SIZE=10\r\n"
		  "RCPT TO:<\"x\\\"  y\"@example.net> ORCPT=rfc822;a\"b\r\n"
		  "VRFY \"John  Smith\"\r\nEXPN  \"staff  list\"\r\n"
		  "HELP \" a \"\r\n",
		  "EHLO [IPv6:2001:db8::1]\r\n"
		  "MAIL FROM:<\"a  b\"@example.org> SIZE=10\r\n"
		  "RCPT TO:<\"x\\\"  y\"@example.net> ORCPT=rfc822;a\"b\r\n"
		  "VRFY \"John  Smith\"\r\nEXPN \"staff  list\"\r\n"
		  "HELP \" a \"\r\n", NULL } } },
	/* An address is not ours to rewrite: refused, never forwarded. */
	{ .name = "canonical: SP run inside a path refused",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "MAIL FROM:<a  b@example.org>\r\n"
		  "RCPT TO:<  b@example.net>\r\nNOOP\r\n", "NOOP\r\n",
		  R_ARGS R_ARGS } } },
	/* One string to some servers, several words to others. */
	{ .name = "canonical: unclosed Quoted-string refused",
	  .tls_active = true,
	  .steps = { ST_GREET,
		{ 'C', "VRFY \"John  Smith\r\n"
		  "MAIL FROM:<\"a  b@example.org> SIZE=1\r\n"
		  "VRFY \"a\\\"\r\nNOOP\r\n", "NOOP\r\n",
		  R_ARGS R_ARGS R_ARGS } } },
	{ .name = "STARTTLS with HTAB: 500, no go-ahead",
	  .starttls_service = true,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "STARTTLS\t\r\n", NULL, R_SYNTAX } } },

	/* ---- the error budget (filter_refuse, .max_errors) ---- */
	{ .name = "max_errors 3: every refusal counts, 421 and close",
	  .starttls_service = true, .max_errors = 3,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "FOO\r\nAUTH PLAIN\r\n", NULL, R_UNKNOWN R_ENCRYPT },
		{ 'C', "BDAT\t1\r\nxNOOP\r\n", NULL, R_ARGS R_TOO_MANY,
		  FILTER_CLOSE } } },
	{ .name = "max_errors: the count is not reset at STARTTLS",
	  .starttls_service = true, .max_errors = 2,
	  .steps = { ST_GREET, ST_EHLO_CLEAR,
		{ 'C', "FOO\r\n", NULL, R_UNKNOWN },
		ST_STARTTLS,
		{ 'C', "XCLIENT ADDR=1.2.3.4\r\n", RSET, NULL },
		{ 'B', OK, NULL, R_NOT_PERMITTED R_TOO_MANY, FILTER_CLOSE } } },
	{ .name = "max_errors 1: the first refusal is the last",
	  .tls_active = true, .max_errors = 1,
	  .steps = { ST_GREET,
		{ 'C', "\r\nNOOP\r\n", NULL, R_SYNTAX R_TOO_MANY,
		  FILTER_CLOSE } } },
	{ .name = "SASL: a bad response cancels, in step with the backend",
	  .tls_active = true,
	  .steps = { ST_GREET, ST_EHLO_TLS,
		{ 'C', "AUTH PLAIN\r\n", "AUTH PLAIN\r\n", NULL },
		{ 'B', "334 \r\n", NULL, "334 \r\n" },
		{ 'C', "dGVzdA==\tx\r\nNOOP\r\n", "*\r\n", NULL },
		{ 'B', "501 5.7.0 cancelled\r\n", "NOOP\r\n",
		  "501 5.7.0 cancelled\r\n" },
		{ 'B', OK, NULL, OK } } },

	/* ---- QUIT ---- */
	{ .name = "QUIT relayed, nothing after it forwarded",
	  .starttls_service = true,
	  .steps = { ST_GREET,
		{ 'C', "QUIT\r\nNOOP\r\n", "QUIT\r\n", NULL },
		{ 'B', "221 2.0.0 Bye\r\n", NULL, "221 2.0.0 Bye\r\n" } } },
};

static void
test_case(void **state)
{
	fh_run(PROTO_SMTP, &proto_smtp_ops, *state);
}

/* ---- Properties of DATA framing (SPEC section 3, 8.4). ---- */

/* Pump until settled; DATA content never ends the session. */
static void
data_pump(struct fh_drv *r)
{
	assert_int_equal(fh_drv_pump(r), FILTER_CONTINUE);
}

/* A filter in a transaction, right after the backend's 354. */
static void
data_rig_open(struct fh_drv *r)
{
	static const struct fh_case c = { .name = "rig", .tls_active = true };

	fh_drv_open(r, PROTO_SMTP, &proto_smtp_ops, &c, "rig", "192.0.2.1");
	evbuffer_add_printf(r->bin, "%s", GREET);
	evbuffer_add_printf(r->cin, "DATA\r\n");
	data_pump(r);
	evbuffer_add_printf(r->bin, "%s", GO);
	data_pump(r);
	evbuffer_drain(r->to_b, evbuffer_get_length(r->to_b));
	evbuffer_drain(r->to_c, evbuffer_get_length(r->to_c));
}

/* Feed msg in chunks of random size; return what reached the backend. */
static char *
data_relay(const char *msg, size_t len, unsigned *seed, size_t *outlen)
{
	struct fh_drv	 r;
	size_t		 off = 0, n;
	char		*out;

	data_rig_open(&r);
	while (off < len) {
		n = 1 + (size_t)rand_r(seed) % 7;
		if (n > len - off)
			n = len - off;
		evbuffer_add(r.cin, msg + off, n);
		data_pump(&r);
		off += n;
	}
	/* The terminator was consumed, and nothing after it. */
	assert_int_equal(evbuffer_get_length(r.cin), 0);
	assert_int_equal(evbuffer_get_length(r.to_c), 0);
	evbuffer_add_printf(r.bin, "%s", QUEUED);
	data_pump(&r);
	assert_int_equal(evbuffer_get_length(r.to_c), strlen(QUEUED));
	out = fh_take(r.to_b, outlen);
	fh_drv_close(&r);
	return out;
}

static void
data_dump(const char *in, size_t inlen, const char *out, size_t outlen)
{
	char	 a[LOG_ESCAPE_SIZE(200)], b[LOG_ESCAPE_SIZE(200)];

	print_error("content [%s]\n    sent [%s]\n",
	    log_escape(a, sizeof(a), in, inlen, 200),
	    log_escape(b, sizeof(b), out, outlen, 200));
}

/*
 * Whatever the content, what the backend receives (after the DATA line's
 * CRLF) has CRLF as its only line ending and exactly one CRLF.CRLF, at the
 * very end: the backend finds the end of DATA where mailtlsd did.
 */
static void
test_data_smuggling_property(void **state)
{
	static const char alphabet[] = { 'a', '.', '.', '\r', '\n', '\n' };
	unsigned	 seed = 12345, round, tried = 0;
	char		 msg[80], *out, *wire;
	size_t		 len, outlen, i;

	(void)state;
	for (round = 0; round < 3000; round++) {
		len = (size_t)rand_r(&seed) % 60;
		for (i = 0; i < len; i++)
			msg[i] = alphabet[rand_r(&seed) % sizeof(alphabet)];
		/* Content without a real end of DATA, then the end. */
		wire = malloc(len + 8);
		assert_non_null(wire);
		memcpy(wire, "\r\n", 2);
		memcpy(wire + 2, msg, len);
		memcpy(wire + 2 + len, "\r\n.\r\n", 5);
		if (memmem(wire, len + 7, "\r\n.\r\n", 5) != wire + len + 2) {
			free(wire);
			continue;
		}
		memcpy(msg + len, "\r\n.\r\n", 5);
		tried++;
		out = data_relay(msg, len + 5, &seed, &outlen);
		free(wire);
		wire = malloc(outlen + 2);
		assert_non_null(wire);
		memcpy(wire, "\r\n", 2);
		memcpy(wire + 2, out, outlen);
		assert_true(outlen >= 3);
		if (memmem(wire, outlen + 2, "\r\n.\r\n", 5) !=
		    wire + outlen + 2 - 5)
			data_dump(msg, len + 5, out, outlen);
		assert_ptr_equal(memmem(wire, outlen + 2, "\r\n.\r\n", 5),
		    wire + outlen + 2 - 5);
		for (i = 0; i < outlen + 2; i++) {
			if (wire[i] == '\r')
				assert_true(i + 1 < outlen + 2 &&
				    wire[i + 1] == '\n');
			if (wire[i] == '\n')
				assert_true(i > 0 && wire[i - 1] == '\r');
		}
		free(wire);
		free(out);
	}
	/* Most random contents qualify; make sure the test did test. */
	assert_true(tried > 1000);
}

/* Chunking never changes the result (state carried across reads). */
static void
test_data_chunking_invariant(void **state)
{
	static const char msg[] = "x\r.\n.\r\r\n..\n\r\n.a\r\n\n.\r\r\n.\r\n";
	unsigned	 seed = 99, round;
	char		*first, *out;
	size_t		 firstlen, outlen;

	(void)state;
	first = data_relay(msg, sizeof(msg) - 1, &seed, &firstlen);
	for (round = 0; round < 200; round++) {
		out = data_relay(msg, sizeof(msg) - 1, &seed, &outlen);
		assert_int_equal(outlen, firstlen);
		assert_memory_equal(out, first, outlen);
		free(out);
	}
	free(first);
}

/* Large content goes through in one call, whatever the evbuffer layout. */
static void
test_data_large(void **state)
{
	struct fh_drv	 r;
	char		 chunk[1000];
	size_t		 i;

	(void)state;
	data_rig_open(&r);
	memset(chunk, 'x', sizeof(chunk));
	chunk[sizeof(chunk) - 2] = '\r';
	chunk[sizeof(chunk) - 1] = '\n';
	for (i = 0; i < 300; i++)
		evbuffer_add(r.cin, chunk, sizeof(chunk));
	evbuffer_add(r.cin, ".\r\nNOOP\r\n", 9);
	data_pump(&r);
	assert_int_equal(evbuffer_get_length(r.to_b),
	    300 * sizeof(chunk) + 3 + 6);
	assert_int_equal(evbuffer_get_length(r.cin), 0);
	fh_drv_close(&r);
}

/*
 * SPEC 5 and 8.5: refused credentials and discarded pipelined bytes log a
 * warning with the client address; credentials and SASL lines are never
 * logged; peer text is escaped.  Everything is logged at debug level here,
 * into a file standing in for stderr.
 */
static void
test_logs(void **state)
{
	static const struct fh_case cases[] = {
		{ .name = "log: AUTH in cleartext", .starttls_service = true,
		  .steps = { ST_GREET,
			{ 'C', "AUTH PLAIN c2VjcmV0MQ==\r\n", NULL, R_ENCRYPT } } },
		{ .name = "log: injection after STARTTLS",
		  .starttls_service = true,
		  .steps = { ST_GREET,
			{ 'C', "STARTTLS\r\nAUTH PLAIN c2VjcmV0Mg==\r\n", NULL,
			  NULL, FILTER_CLOSE } } },
		{ .name = "log: SASL in TLS", .tls_active = true,
		  .steps = { ST_GREET,
			{ 'C', "AUTH LOGIN c2VjcmV0Mw==\r\n",
			  "AUTH LOGIN c2VjcmV0Mw==\r\n", NULL },
			{ 'B', "334 UGFzc3dvcmQ6\r\n", NULL,
			  "334 UGFzc3dvcmQ6\r\n" },
			{ 'C', "c2VjcmV0NA==\r\n", "c2VjcmV0NA==\r\n", NULL },
			{ 'B', "235 2.7.0 Ok\r\n", NULL, "235 2.7.0 Ok\r\n" } } },
		{ .name = "log: unsolicited output escaped", .tls_active = true,
		  .steps = { ST_GREET,
			{ 'B', "250 \x1b[31mred\r\n", NULL, NULL,
			  FILTER_CLOSE } } },
	};
	static char	 text[65536];
	struct fh_log	 logcap;
	size_t		 i, n;

	(void)state;
	fh_log_begin(&logcap);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		fh_run(PROTO_SMTP, &proto_smtp_ops, &cases[i]);
	n = fh_log_end(&logcap, text, sizeof(text));
	assert_null(memmem(text, n, "c2VjcmV0", 8));
	assert_null(memchr(text, 0x1b, n));
	assert_non_null(strstr(text, "\\x1b[31mred"));
	assert_non_null(strstr(text,
	    "client=192.0.2.1: AUTH refused in cleartext"));
	assert_non_null(strstr(text,
	    " pipelined bytes after STARTTLS, closing"));
}

/*
 * SPEC 9: a backend lost while the client waits for it (EOF, error or
 * silence before XCLIENT is through, as session.c reports it): the client
 * gets the temporary failure once, client bytes are never forwarded, and
 * a lost backend after it became ready changes nothing here.
 */
static void
test_backend_lost(void **state)
{
	static const struct fh_case c = { .name = "lost",
	    .starttls_service = true, .xclient = true };
	struct fh_drv	 d;

	(void)state;
	fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c, "0000000000000000",
	    "2001:db8::25");
	fh_drv_feed(&d, 'C', EHLO_C, strlen(EHLO_C), FILTER_CONTINUE);
	fh_drv_feed(&d, 'B', GREET, strlen(GREET), FILTER_CONTINUE);
	fh_drv_expect(d.to_b, OUR_EHLO, strlen(OUR_EHLO));
	assert_true(filter_awaiting(d.f));
	/* IPv6 gets Postfix's prefix. */
	fh_drv_feed(&d, 'B', EHLO_XC, strlen(EHLO_XC), FILTER_CONTINUE);
	fh_drv_expect(d.to_b, "XCLIENT ADDR=IPV6:2001:db8::25 PORT=40000 "
	    "NAME=[UNAVAILABLE] DESTADDR=198.51.100.25 DESTPORT=25\r\n",
	    strlen("XCLIENT ADDR=IPV6:2001:db8::25 PORT=40000 "
	    "NAME=[UNAVAILABLE] DESTADDR=198.51.100.25 DESTPORT=25\r\n"));
	filter_backend_lost(d.f, d.to_c);
	fh_drv_expect(d.to_c, R_UNAVAILABLE, strlen(R_UNAVAILABLE));
	assert_true(d.f->closing);
	assert_false(filter_awaiting(d.f));
	filter_backend_lost(d.f, d.to_c);
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_int_equal(evbuffer_get_length(d.to_b), 0);
	fh_drv_close(&d);
}

/*
 * SPEC 12 in the core: bytes behind the server's go-ahead are cut, logged
 * with the backend's name and counted as an injection; the handshake then
 * brings our greeting.  With the session's failover the filter writes no
 * temporary failure itself and says the backend failed.
 */
static void
test_backend_starttls_core(void **state)
{
	static const struct fh_case c = { .name = "btls", .tls_active = true,
	    .backend_tls = BACKEND_TLS_STARTTLS };
	static const char inj[] = "250 injected\r\n";
	struct fh_drv	 d;
	struct fh_log	 l;
	char		 buf[8192];

	(void)state;
	fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c, "0000000000000000",
	    "192.0.2.1");
	filter_set_backend(d.f, "192.0.2.25:587");
	fh_log_begin(&l);
	evbuffer_add(d.bin, GREET, strlen(GREET));
	assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c, d.to_b),
	    FILTER_CONTINUE);
	fh_drv_expect(d.to_b, OUR_EHLO, strlen(OUR_EHLO));
	evbuffer_add(d.bin, B_EHLO_STLS, strlen(B_EHLO_STLS));
	assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c, d.to_b),
	    FILTER_CONTINUE);
	fh_drv_expect(d.to_b, OUR_STARTTLS, strlen(OUR_STARTTLS));
	evbuffer_add(d.bin, B_GO, strlen(B_GO));
	evbuffer_add(d.bin, inj, strlen(inj));
	assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c, d.to_b),
	    FILTER_BACKEND_STARTTLS);
	assert_int_equal(evbuffer_get_length(d.bin), 0);
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_int_equal(d.refusals[FILTER_REF_INJECTION], 1);
	assert_true(filter_awaiting(d.f));
	assert_int_equal(filter_backend_tls_established(d.f, d.bin, d.to_c,
	    d.to_b), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, LOCAL_GREET, strlen(LOCAL_GREET));
	assert_false(filter_awaiting(d.f));
	fh_log_end(&l, buf, sizeof(buf));
	assert_non_null(strstr(buf, "backend 192.0.2.25:587: 14 bytes after "
	    "the STARTTLS go-ahead discarded: 250 injected"));
	fh_drv_close(&d);

	fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c, "0000000000000000",
	    "192.0.2.1");
	d.f->failover = true;
	filter_set_backend(d.f, "192.0.2.25:587");
	fh_log_begin(&l);
	evbuffer_add(d.cin, EHLO_C, strlen(EHLO_C));
	evbuffer_add(d.bin, GREET, strlen(GREET));
	assert_int_equal(fh_drv_pump(&d), FILTER_CONTINUE);
	fh_drv_expect(d.to_b, OUR_EHLO, strlen(OUR_EHLO));
	evbuffer_add(d.bin, EHLO_B_PLAIN, strlen(EHLO_B_PLAIN));
	assert_int_equal(fh_drv_pump(&d), FILTER_CLOSE);
	assert_true(filter_backend_failed(d.f));
	assert_string_equal(filter_reason(d.f),
	    "server does not offer STARTTLS");
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_int_equal(evbuffer_get_length(d.to_b), 0);
	/* The client's EHLO is still there for the next backend. */
	assert_int_equal(evbuffer_get_length(d.cin), strlen(EHLO_C));
	fh_log_end(&l, buf, sizeof(buf));
	assert_non_null(strstr(buf, "backend 192.0.2.25:587 not usable: "
	    "server does not offer STARTTLS"));
	fh_drv_close(&d);
}

/*
 * SPEC 12: the server speaks first inside TLS.  Bytes already there when
 * the handshake completes (a TLS 1.2 Finished and "220 again" in one
 * segment): the backend is not usable, the client never gets our
 * greeting; with the session's failover the filter writes nothing and
 * says the backend failed, the client's bytes kept for the next one.
 */
static void
test_backend_spoke_first(void **state)
{
	static const struct fh_case c = { .name = "btls", .tls_active = true,
	    .backend_tls = BACKEND_TLS_STARTTLS };
	static const char again[] = "220 \x1b again\r\n";
	struct fh_drv	 d;
	struct fh_log	 l;
	char		 buf[8192];
	int		 failover;

	(void)state;
	for (failover = 0; failover < 2; failover++) {
		fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c,
		    "0000000000000000", "192.0.2.1");
		d.f->failover = failover;
		filter_set_backend(d.f, "192.0.2.25:587");
		fh_log_begin(&l);
		evbuffer_add(d.cin, EHLO_C, strlen(EHLO_C));
		evbuffer_add(d.bin, GREET, strlen(GREET));
		assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c,
		    d.to_b), FILTER_CONTINUE);
		evbuffer_add(d.bin, B_EHLO_STLS, strlen(B_EHLO_STLS));
		assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c,
		    d.to_b), FILTER_CONTINUE);
		evbuffer_add(d.bin, B_GO, strlen(B_GO));
		assert_int_equal(filter_pump(d.f, d.cin, d.bin, d.to_c,
		    d.to_b), FILTER_BACKEND_STARTTLS);
		fh_drv_expect(d.to_b, OUR_EHLO OUR_STARTTLS,
		    strlen(OUR_EHLO OUR_STARTTLS));
		/* Decrypted with the Finished, before the CONNECTED event. */
		evbuffer_add(d.bin, again, strlen(again));
		assert_int_equal(filter_backend_tls_established(d.f, d.bin,
		    d.to_c, d.to_b), FILTER_CLOSE);
		assert_int_equal(evbuffer_get_length(d.bin), 0);
		assert_int_equal(evbuffer_get_length(d.to_b), 0);
		assert_string_equal(filter_reason(d.f),
		    "server spoke first inside TLS");
		if (failover) {
			assert_true(filter_backend_failed(d.f));
			assert_int_equal(evbuffer_get_length(d.to_c), 0);
			assert_int_equal(evbuffer_get_length(d.cin),
			    strlen(EHLO_C));
		} else
			fh_drv_expect(d.to_c, R_UNAVAILABLE,
			    strlen(R_UNAVAILABLE));
		fh_log_end(&l, buf, sizeof(buf));
		assert_non_null(strstr(buf, "error: 0000000000000000 smtp "
		    "client=192.0.2.1: backend 192.0.2.25:587 not usable: "
		    "server spoke first inside TLS, 13 bytes before any "
		    "command: 220 \\x1b again"));
		fh_drv_close(&d);
	}
}

static void
test_ops(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 len;
	char		*s;

	(void)state;
	assert_string_equal(proto_smtp_ops.name, "smtp");
	assert_string_equal(proto_smtp_ops.alpn, "smtp");
	proto_smtp_ops.unavailable(b, "mx.example.test");
	s = fh_take(b, &len);
	assert_string_equal(s,
	    "421 4.3.2 mx.example.test Service temporarily unavailable\r\n");
	free(s);
	evbuffer_free(b);
}

/*
 * SPEC 10: the timeout reply only at a boundary.  Backend replies reach
 * the client whole, so a multi-line reply half read is no obstacle (none
 * of it was written); DATA content in flight is.
 */
static void
test_timeout(void **state)
{
	static const struct fh_case c = { .name = "timeout",
	    .tls_active = true };
	static const char	 r421[] = "421 4.4.2 mx.example.test Error: "
	    "timeout exceeded\r\n";
	static const char	 half[] = "250-backend.test\r\n"
	    "250-PIPELINING\r\n";
	struct fh_drv		 d;

	(void)state;
	fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c, NULL, NULL);
	fh_drv_feed(&d, 'B', GREET, strlen(GREET), FILTER_CONTINUE);
	fh_drv_expect(d.to_c, GREET, strlen(GREET));
	fh_drv_feed(&d, 'C', EHLO_C, strlen(EHLO_C), FILTER_CONTINUE);
	fh_drv_expect(d.to_b, EHLO_C, strlen(EHLO_C));
	/* Half of a multi-line reply: kept, so the 421 is clean. */
	fh_drv_feed(&d, 'B', half, strlen(half), FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_true(filter_timeout(d.f, d.to_c, "idle timeout"));
	fh_drv_expect(d.to_c, r421, strlen(r421));
	assert_true(d.f->closing);
	assert_string_equal(filter_reason(d.f), "idle timeout");
	fh_drv_close(&d);

	/* Inside DATA content: the close comes without a 421. */
	data_rig_open(&d);
	evbuffer_add_printf(d.cin, "Subject: x\r\n\r\nhalf a li");
	data_pump(&d);
	assert_false(filter_timeout(d.f, d.to_c, "idle timeout"));
	assert_int_equal(evbuffer_get_length(d.to_c), 0);
	assert_true(d.f->closing);
	fh_drv_close(&d);

	/* After the message, at the next command: the 421 again. */
	data_rig_open(&d);
	evbuffer_add_printf(d.cin, "x\r\n.\r\n");
	data_pump(&d);
	evbuffer_add_printf(d.bin, "%s", QUEUED);
	data_pump(&d);
	evbuffer_drain(d.to_c, evbuffer_get_length(d.to_c));
	assert_true(filter_timeout(d.f, d.to_c, "cleartext timeout"));
	fh_drv_expect(d.to_c, r421, strlen(r421));
	assert_string_equal(filter_reason(d.f), "cleartext timeout");
	fh_drv_close(&d);
}

/* The reasons the session end line will show. */
static void
test_reasons(void **state)
{
	static const struct {
		const char	*cin;
		const char	*bin;
		const char	*reason;
	} t[] = {
		{ "STARTTLS\r\nNOOP\r\n", GREET,
		  "pipelined data after STARTTLS" },
		{ S8("\r\n") "\r\n\r\n", GREET, "too many errors" },
		{ "", "hello\r\n", "backend protocol error" },
		{ "", GREET "250 x\r\n", "unsolicited backend output" },
		{ "BDAT x\r\n", GREET, "malformed BDAT" },
	};
	static const struct fh_case c = { .name = "reasons",
	    .starttls_service = true };
	struct fh_drv		 d;
	enum filter_verdict	 v;
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		fh_drv_open(&d, PROTO_SMTP, &proto_smtp_ops, &c, NULL, NULL);
		evbuffer_add(d.bin, t[i].bin, strlen(t[i].bin));
		evbuffer_add(d.cin, t[i].cin, strlen(t[i].cin));
		v = fh_drv_pump(&d);
		assert_int_equal(v, FILTER_CLOSE);
		assert_string_equal(filter_reason(d.f), t[i].reason);
		fh_drv_close(&d);
	}
}

int
main(void)
{
	static const struct CMUnitTest extra[] = {
		cmocka_unit_test(test_data_smuggling_property),
		cmocka_unit_test(test_data_chunking_invariant),
		cmocka_unit_test(test_data_large),
		cmocka_unit_test(test_logs),
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_backend_lost),
		cmocka_unit_test(test_backend_starttls_core),
		cmocka_unit_test(test_backend_spoke_first),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_timeout),
	};

	/* Quiet by default; test_logs() looks at everything. */
	log_init(LOG_TARGET_STDERR, LOG_LEVEL_WARNING, 0);
	return fh_main("smtp", smtp_cases, sizeof(smtp_cases) /
	    sizeof(smtp_cases[0]), test_case, extra,
	    sizeof(extra) / sizeof(extra[0]));
}
