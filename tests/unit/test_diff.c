/*
 * test_diff.c - the differential check of tests/fuzz/diff_check.h as a
 * bounded, deterministic CI test (issue 8, item 4): no clang, no
 * libFuzzer.
 *
 * For each protocol, DIFF_ITERATIONS (default 20000) client streams from
 * the attack grammar, seeded by a fixed xorshift state, go through the
 * real filter to the recording backend; then the attacks as
 * fixed streams.  Any violation fails the test; the shortest stream of
 * each kind is printed as a reproducer (header bytes, then the stream:
 * the same bytes make a fuzz_diff input).  DIFF_SEED picks another seed.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DC_ON_VIOLATION(r, cls, msg)	do {				\
	(void)(r);							\
	(void)(cls);							\
	(void)(msg);							\
} while (0)

#include "../fuzz/diff_check.h"

#define DIFF_ITERATIONS	20000

/* The shortest failing stream of each kind. */
struct td_repro {
	unsigned	 count;
	uint8_t		 hdr[DC_HDR];
	struct dc_tape	 s;
	char		 msg[256];
};

static void
td_print_input(const uint8_t *hdr, const unsigned char *s, size_t n)
{
	fprintf(stderr, "#     input: %02x %02x %02x \"", hdr[0], hdr[1],
	    hdr[2]);
	dc_print(stderr, s, n);
	fprintf(stderr, "\"\n");
}

static void
td_random(enum proto_id proto)
{
	struct td_repro	 rep[DC_NCLASS];
	struct dc_rand	 g;
	struct dc_tape	 t;
	struct dc_run	 r;
	const char	*e;
	uint8_t		 hdr[DC_HDR];
	unsigned	 i, n = DIFF_ITERATIONS, bad = 0, c;

	if ((e = getenv("DIFF_ITERATIONS")) != NULL && atoi(e) > 0)
		n = (unsigned)atoi(e);
	memset(rep, 0, sizeof(rep));
	memset(&g, 0, sizeof(g));
	g.x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)proto;
	if ((e = getenv("DIFF_SEED")) != NULL && strtoull(e, NULL, 0) != 0)
		g.x = strtoull(e, NULL, 0) ^ (uint64_t)proto;
	for (i = 0; i < n; i++) {
		hdr[0] = (uint8_t)(proto == PROTO_SMTP ? 0 : proto ==
		    PROTO_IMAP ? 1 : 2);
		if (dc_rnd(&g, 3) == 0)
			hdr[0] |= DC_M_IMPLICIT;
		if (dc_rnd(&g, 8) == 0)
			hdr[0] |= DC_M_REQTLS;
		/* Mostly a line at a time, so STARTTLS can happen. */
		c = dc_rnd(&g, 8);
		hdr[0] |= (uint8_t)((c < 4 ? 1 : c < 6 ? 2 : c < 7 ? 0 : 3)
		    << 5);
		if (dc_rnd(&g, 2))
			hdr[0] |= DC_M_STRICT;
		hdr[1] = (uint8_t)dc_rnd(&g, 256);
		hdr[2] = (uint8_t)(dc_rnd(&g, 256) & 0xf3);
		memset(&t, 0, sizeof(t));
		dc_gen(&g, proto, &t);
		dc_run_stream(&r, hdr, t.b, t.len);
		if (r.violated) {
			struct td_repro *p = &rep[r.vclass];

			bad++;
			if (p->count++ == 0 || t.len < p->s.len) {
				free(p->s.b);
				p->s = t;
				t.b = NULL;
				memcpy(p->hdr, hdr, DC_HDR);
				snprintf(p->msg, sizeof(p->msg), "%s", r.vmsg);
			}
		}
		dc_end(&r);
		free(t.b);
	}
	for (c = 0; c < DC_NCLASS; c++) {
		if (rep[c].count == 0)
			continue;
		fprintf(stderr, "# %s: %u of %u streams: %s\n", proto ==
		    PROTO_SMTP ? "smtp" : proto == PROTO_IMAP ? "imap" :
		    "pop3", rep[c].count, n, dc_class_names[c]);
		fprintf(stderr, "#     first: %s\n", rep[c].msg);
		td_print_input(rep[c].hdr, rep[c].s.b, rep[c].s.len);
		free(rep[c].s.b);
	}
	if (bad > 0)
		fail_msg("%u of %u streams broke the differential check", bad,
		    n);
}

static void
test_random_smtp(void **state)
{
	(void)state;
	td_random(PROTO_SMTP);
}

static void
test_random_imap(void **state)
{
	(void)state;
	td_random(PROTO_IMAP);
}

static void
test_random_pop3(void **state)
{
	(void)state;
	td_random(PROTO_POP3);
}

/* The attacks, as fixed streams (header bytes, stream). */
struct td_attack {
	const char	*name;
	uint8_t		 hdr[DC_HDR];
	const char	*stream;
	size_t		 len;		/* 0 = strlen */
};

#define CUT_LINE	(1 << 5)
#define SMTP_TLS	(0 | DC_M_IMPLICIT | CUT_LINE)
#define SMTP_CLEAR	(0 | CUT_LINE)
#define IMAP_TLS	(1 | DC_M_IMPLICIT | CUT_LINE)
#define IMAP_CLEAR	(1 | CUT_LINE)
#define POP3_TLS	(2 | DC_M_IMPLICIT | CUT_LINE)
#define POP3_CLEAR	(2 | CUT_LINE)
#define TXN		"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n" \
			"RCPT TO:<b@example.net>\r\n"
#define SMUGGLE		"XCLIENT ADDR=10.0.0.1\r\nAUTH PLAIN AGFAYg==\r\n"

static struct td_attack td_attacks[] = {
	/* RFC-legal sessions: they must pass (and keep the checker fair). */
	{ "legal smtp session", { SMTP_TLS, DC_S_CHUNKING | DC_S_AUTH |
	    DC_S_PIPELINING, DC_M_STRICT }, TXN "DATA\r\nSubject: x\r\n"
	    "\r\n..dot\r\n.\r\nMAIL FROM:<a@example.org>\r\n"
	    "RCPT TO:<b@example.net>\r\nBDAT 5\r\nab\r\nc"
	    "BDAT 0 LAST\r\nAUTH LOGIN\r\nYm9i\r\nc2VjcmV0\r\n"
	    "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\nQUIT\r\n", 0 },
	{ "legal smtp starttls", { SMTP_CLEAR, DC_S_CHUNKING, 0 },
	    "EHLO c.example\r\nSTARTTLS\r\nEHLO c.example\r\n"
	    "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n" TXN "BDAT 3 LAST\r\nabc"
	    "QUIT\r\n", 0 },
	{ "legal imap session", { IMAP_TLS, DC_I_LITPLUS | DC_I_ID |
	    DC_I_IDLE, 0 }, "a CAPABILITY\r\nb LOGIN {4}\r\nuser "
	    "{4+}\r\npass\r\nc ID (\"name\" \"x\" \"version\" NIL)\r\n"
	    "d APPEND INBOX (\\Seen) {14}\r\nSubject: x\r\n\r\n\r\n"
	    "e FETCH 1:* (FLAGS BODY[HEADER.FIELDS (FROM)])\r\n"
	    "f IDLE\r\nDONE\r\ng SEARCH SUBJECT \"a\\\"b\"\r\n"
	    "h AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\ni LOGOUT\r\n",
	    0 },
	{ "legal imap starttls", { IMAP_CLEAR, DC_I_ID, 0 },
	    "a CAPABILITY\r\nb ID NIL\r\nc STARTTLS\r\n"
	    "d LOGIN user pass\r\ne SELECT INBOX\r\n", 0 },
	{ "legal pop3 session", { POP3_TLS, DC_P_USER | DC_P_SASL, 0 },
	    "CAPA\r\nAUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\nSTAT\r\n"
	    "LIST\r\nRETR 1\r\nTOP 1 0\r\nQUIT\r\n", 0 },
	{ "legal pop3 stls", { POP3_CLEAR, DC_P_USER, 0 },
	    "CAPA\r\nSTLS\r\nUSER bob\r\nPASS secret\r\nRETR 1\r\n", 0 },

	/* The attacks of the issue and SPEC 3. */
	{ "smtp BDAT HTAB", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT\t44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT VT", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT\v44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT FF", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT\f44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT leading blank", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN " BDAT 44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT double SP", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT  44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT 2^32+44", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT 4294967340 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT 2^31", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT 2147483648 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT HTAB port 25", { SMTP_CLEAR, DC_S_CHUNKING, 0 },
	    TXN "BDAT\t44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT HTAB LAST", { SMTP_TLS, DC_S_CHUNKING, 0 },
	    TXN "BDAT 44\tLAST\r\n" SMUGGLE, 0 },
	{ "smtp BDAT cleartext without CHUNKING", { SMTP_CLEAR, 0, 0 },
	    TXN "BDAT 44 LAST\r\n" SMUGGLE, 0 },
	{ "smtp AUTH base64 after refusal", { SMTP_CLEAR, DC_S_AUTH, 0 },
	    "EHLO c.example\r\nAUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n", 0 },
	{ "smtp AUTH HTAB cleartext", { SMTP_CLEAR, DC_S_AUTH, 0 },
	    "EHLO c.example\r\nAUTH\tPLAIN AGJvYgBzZWNyZXQ=\r\n", 0 },
	{ "smtp X-EXPS cleartext", { SMTP_CLEAR, 0, 0 },
	    "EHLO c.example\r\nX-EXPS GSSAPI\r\n", 0 },
	{ "smtp XCLIENT in TLS", { SMTP_TLS, DC_S_XCLIENT, 0 },
	    "EHLO c.example\r\nXCLIENT ADDR=10.0.0.1\r\n", 0 },
	{ "smtp XFORWARD HTAB", { SMTP_TLS, 0, 0 },
	    "EHLO c.example\r\nXFORWARD\tADDR=10.0.0.1\r\n", 0 },
	{ "smtp ETRN cleartext not advertised", { SMTP_CLEAR, 0, 0 },
	    "EHLO c.example\r\nETRN example.org\r\n", 0 },
	{ "smtp DATA bare LF dot", { SMTP_TLS, 0, 0 },
	    TXN "DATA\r\nx\n.\nMAIL FROM:<e@x>\r\n.\r\n", 0 },
	{ "imap LITERAL+ without LITERAL+ (Courier)", { IMAP_CLEAR, 0, 0 },
	    "a NOOP {19+}\r\nb LOGIN user pass\r\n", 0 },
	{ "imap ~{n} without BINARY", { IMAP_CLEAR, 0, 0 },
	    "a NOOP ~{19+}\r\nb LOGIN user pass\r\n", 0 },
	{ "imap LITERAL- over 4096", { IMAP_TLS, DC_I_LITMINUS, 0 },
	    "a NOOP {5000+}\r\nb NOOP\r\n", 0 },
	{ "imap LOGIN HTAB", { IMAP_CLEAR, 0, 0 },
	    "a LOGIN\tuser pass\r\n", 0 },
	{ "imap ID HTAB x- key", { IMAP_CLEAR, DC_I_ID, 0 },
	    "a ID\t(\"x-originating-ip\" \"1.2.3.4\")\r\n", 0 },
	{ "imap ID x-client-transport", { IMAP_TLS, DC_I_ID, 0 },
	    "a ID (\"name\" \"c\" \"x-client-transport\" \"TLS\")\r\n", 0 },
	{ "imap ID x-multiplex", { IMAP_TLS, DC_I_ID, 0 },
	    "a ID (\"X-Multiplex\" \"0\")\r\n", 0 },
	{ "imap ID x- key as literal", { IMAP_TLS, DC_I_ID, 0 },
	    "a ID ({16}\r\nx-originating-ip \"1.2.3.4\")\r\n", 0 },
	{ "imap literal after refused LOGIN", { IMAP_CLEAR, 0, 0 },
	    "a LOGIN {4}\r\nuser {4}\r\npass\r\n", 0 },
	{ "imap base64 after refused AUTHENTICATE", { IMAP_CLEAR,
	    DC_I_AUTH, 0 }, "a AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n",
	    0 },
	{ "imap SELECT in cleartext", { IMAP_CLEAR, 0, 0 },
	    "a SELECT INBOX\r\n", 0 },
	{ "imap COMPRESS", { IMAP_TLS, DC_I_IDLE, 0 },
	    "a COMPRESS DEFLATE\r\n", 0 },
	{ "imap NUL in command", { IMAP_TLS, 0, 0 },
	    "a NOOP\0\r\nb NOOP\r\n", 17 },
	{ "pop3 USER HTAB", { POP3_CLEAR, DC_P_USER, 0 },
	    "USER\tbob\r\nPASS\tsecret\r\n", 0 },
	{ "pop3 base64 after refused AUTH", { POP3_CLEAR, DC_P_SASL, 0 },
	    "AUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n", 0 },
	{ "pop3 XCLIENT in TLS", { POP3_TLS, DC_P_XCLIENT, 0 },
	    "XCLIENT ADDR=10.0.0.1\r\n", 0 },
	{ "pop3 RETR in cleartext", { POP3_CLEAR, 0, 0 },
	    "RETR 1\r\n", 0 },
	{ "pop3 double SP", { POP3_TLS, 0, 0 },
	    "USER  bob\r\n", 0 },
};

static void
test_attack(void **state)
{
	const struct td_attack	*a = *state;
	struct dc_run		 r;
	size_t			 n = a->len ? a->len : strlen(a->stream);

	dc_run_stream(&r, a->hdr, (const uint8_t *)a->stream, n);
	if (getenv("DIFF_VERBOSE") != NULL) {
		fprintf(stderr, "# %s: backend read \"", a->name);
		dc_print(stderr, r.tob.b, r.pos);
		fprintf(stderr, "\"\n");
	}
	if (r.violated) {
		fprintf(stderr, "# %s:\n", a->name);
		dc_dump(&r, stderr);
		dc_end(&r);
		fail_msg("%s", a->name);
	}
	dc_end(&r);
}

#define NATTACKS	(sizeof(td_attacks) / sizeof(td_attacks[0]))

int
main(void)
{
	struct CMUnitTest	 tests[3 + NATTACKS];
	size_t			 i;

	log_init(LOG_TARGET_STDERR, LOG_LEVEL_ERROR, 0);
	memset(tests, 0, sizeof(tests));
	tests[0].name = "random smtp streams";
	tests[0].test_func = test_random_smtp;
	tests[1].name = "random imap streams";
	tests[1].test_func = test_random_imap;
	tests[2].name = "random pop3 streams";
	tests[2].test_func = test_random_pop3;
	for (i = 0; i < NATTACKS; i++) {
		tests[3 + i].name = td_attacks[i].name;
		tests[3 + i].test_func = test_attack;
		tests[3 + i].initial_state = &td_attacks[i];
	}
	return _cmocka_run_group_tests("diff", tests, 3 + NATTACKS, NULL,
	    NULL);
}
