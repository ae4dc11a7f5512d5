/*
 * diff_check.h - differential check of the protocol filters (issue 8,
 * item 4), shared by the libFuzzer target fuzz_diff.c and the bounded CI
 * test tests/unit/test_diff.c.
 *
 * A client byte stream goes through the real filter (filter_new,
 * filter_pump, filter_tls_established: exactly what session.c runs) to a
 * *recording backend*: a model of a lenient legacy server (Exim 4.96,
 * Courier) that frames what it receives on its own, answers plausibly,
 * and re-parses every command line with a strict reference parser
 * written here from the RFC grammars (RFC 5321 + 3030 + 4954, RFC 9051 +
 * 7888 + 3516, RFC 1939 + 2449 + 5034), never with the filter's code.
 * What it checks (SPEC sections 3 and 8):
 *
 *  (a) every line the backend reads as a command is canonical: verb,
 *      single SP, arguments (IMAP: tag SP verb SP arguments), CRLF; no
 *      control character outside an IMAP quoted string or literal, no
 *      bare CR or LF, no HTAB, no leading, trailing or double blank; BDAT
 *      exactly "BDAT <digits>[ LAST]" with a size below 2^31; an IMAP
 *      literal {n+} only if the backend advertised LITERAL+ (LITERAL-:
 *      n <= 4096), ~{n} only with BINARY; SASL responses are base64,
 *      "=" or "*";
 *  (b) before TLS no credential reaches the backend (SMTP AUTH, X-EXPS;
 *      IMAP LOGIN, AUTHENTICATE; POP3 USER, PASS, APOP, AUTH; any SASL
 *      response) and only the verbs of the SPEC 3 allow-lists reach it
 *      at all; XCLIENT, XFORWARD, STARTTLS/STLS and COMPRESS never; an
 *      IMAP ID never carries an "x-" key; after an SMTP STARTTLS nothing
 *      but EHLO, HELO, NOOP, RSET, QUIT before a new EHLO/HELO;
 *  (c) the backend frames the stream the lenient way (DATA content to
 *      CRLF.CRLF after its 354, BDAT n bytes after a canonical BDAT n,
 *      an IMAP {n} after its "+", {n+} only when it advertised
 *      LITERAL+), and nothing the filter sends may arrive before the
 *      reply that decides its framing (DATA, a synchronising literal, a
 *      SASL challenge, IDLE); DATA content holds no bare CR or LF.
 *
 * Input (a fuzz input, or what the CI test generates):
 *
 *   byte 0  bits 0-1 protocol (0, 3 SMTP; 1 IMAP; 2 POP3), bit 2 implicit
 *           TLS (else a STARTTLS service starting in cleartext), bit 3
 *           require_starttls, bit 4 the rest is a choice sequence for the
 *           grammar generator (else the client stream itself), bits 5-6
 *           how the stream is cut (0 at once, 1 per line, 2 in pieces of
 *           byte 2 bits 4-7 + 1, 3 one byte at a time), bit 7 the backend
 *           refuses DATA outside a transaction
 *   byte 1  the backend's advertised set (DC_S_*, DC_I_*, DC_P_*)
 *   byte 2  bit 0 IMAP greeting without [CAPABILITY], bit 1 the backend
 *           refuses synchronising literals above 64 bytes, bits 4-7
 *           piece size
 *
 * A violation goes to dc_violation() (the including file defines
 * DC_ON_VIOLATION(run, class, msg) first: the fuzzer aborts, the CI test
 * records it); the first one of a run ends it.
 */
#ifndef DIFF_CHECK_H
#define DIFF_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conf.h"
#include "filter.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

#define DC_HDR		3
#define DC_ROUNDS	4096		/* pumps per chunk, at most */
#define DC_LIT_SMALL	64		/* byte 2 bit 1: the backend's limit */
#define DC_LIT_MAX	(1024 * 1024)
#define DC_BDAT_MAX	2147483647ULL	/* SPEC 3: size below 2^31 */

/* byte 0 */
#define DC_M_PROTO	0x03
#define DC_M_IMPLICIT	0x04
#define DC_M_REQTLS	0x08
#define DC_M_GRAMMAR	0x10
#define DC_M_CUT	0x60
#define DC_M_STRICT	0x80
/* byte 1, SMTP: EHLO keywords */
#define DC_S_PIPELINING	0x01
#define DC_S_CHUNKING	0x02
#define DC_S_AUTH	0x04
#define DC_S_ETRN	0x08
#define DC_S_8BIT	0x10
#define DC_S_STARTTLS	0x20
#define DC_S_XCLIENT	0x40
#define DC_S_SMTPUTF8	0x80
/* byte 1, IMAP: capabilities */
#define DC_I_LITPLUS	0x01
#define DC_I_LITMINUS	0x02
#define DC_I_BINARY	0x04
#define DC_I_AUTH	0x08
#define DC_I_SASLIR	0x10
#define DC_I_STARTTLS	0x20
#define DC_I_ID		0x40
#define DC_I_IDLE	0x80
/* byte 1, POP3: CAPA */
#define DC_P_USER	0x01
#define DC_P_SASL	0x02
#define DC_P_STLS	0x04
#define DC_P_PIPELINING	0x08
#define DC_P_TOP	0x10
#define DC_P_UIDL	0x20
#define DC_P_RESP	0x40
#define DC_P_XCLIENT	0x80
/* byte 2 */
#define DC_F_NOGREETCAPA	0x01
#define DC_F_SMALLLIT		0x02

enum dc_class {
	DC_CTL = 0,	/* control character in a command line */
	DC_BARE,	/* bare CR or LF towards the backend */
	DC_BLANK,	/* leading, trailing or double blank */
	DC_SYNTAX,	/* does not re-parse */
	DC_BDAT,	/* BDAT not canonical */
	DC_CRED,	/* a credential before TLS */
	DC_CLEAR,	/* a verb off the cleartext allow-list */
	DC_NEVER,	/* XCLIENT, XFORWARD, STARTTLS, COMPRESS */
	DC_IDX,		/* an ID "x-" key */
	DC_LITERAL,	/* {n+} or ~{n} not advertised */
	DC_EARLY,	/* bytes before the reply deciding their framing */
	DC_DATA,	/* bare CR or LF inside DATA */
	DC_SASL,	/* a SASL response that is not base64 */
	DC_NOEHLO,	/* SMTP: a command after STARTTLS before EHLO */
	DC_NCLASS
};

static const char *const dc_class_names[DC_NCLASS] = {
	"control character in a command line",
	"bare CR or LF in a command line",
	"leading, trailing or double blank",
	"command line does not re-parse",
	"BDAT not canonical",
	"credentials before TLS",
	"verb not on the cleartext allow-list",
	"XCLIENT/XFORWARD/STARTTLS/COMPRESS reached the backend",
	"IMAP ID with an x- key",
	"literal form the backend did not advertise",
	"bytes sent before the reply that decides their framing",
	"bare CR or LF inside DATA",
	"SASL response not base64",
	"SMTP command after STARTTLS before EHLO",
};

/* The backend's framing state. */
enum dc_state {
	DS_CMD = 0,	/* command lines */
	DS_DATA,	/* SMTP DATA content */
	DS_CHUNK,	/* BDAT chunk */
	DS_LIT,		/* IMAP literal */
	DS_SASL,	/* SASL responses */
	DS_IDLE,	/* IMAP IDLE: waiting for DONE */
	DS_DONE,	/* the backend has closed */
};

struct dc_tape {
	unsigned char	*b;
	size_t		 len;
	size_t		 cap;
};

struct dc_run {
	enum proto_id		 proto;
	const struct proto_ops	*ops;
	struct conf_service	 svc;
	struct filter_params	 fp;
	struct filter		*f;
	struct evbuffer		*cin, *bin, *to_b, *to_c;
	struct evbuffer		*held;		/* replies held over a handshake */
	const uint8_t		*input;		/* the whole input */
	size_t			 inlen;

	unsigned		 caps;		/* byte 1 */
	unsigned		 flags;		/* byte 2 */
	bool			 strict;	/* DATA needs MAIL and RCPT */

	bool			 cleartext;	/* as the backend reads it */
	bool			 upgraded;
	bool			 ehlo;		/* SMTP: EHLO/HELO since TLS */
	bool			 mail, rcpt;	/* SMTP transaction */
	bool			 holding;	/* replies go to held */

	enum dc_state		 st;
	uint64_t		 left;		/* chunk or literal bytes */
	unsigned		 sasl_steps;
	char			 tag[80];	/* IMAP tag of the command */

	/* IMAP: the command being read, across literals. */
	bool			 in_cmd;	/* a literal interrupted it */
	char			 verb[32];
	int			 depth;
	unsigned		 ntok;		/* tokens of the arguments */
	unsigned		 idtok;		/* ID: strings at depth 1 */
	bool			 litkey;	/* the literal is an ID key */
	unsigned char		 keyhead[2];
	size_t			 keyseen;

	struct dc_tape		 tob;		/* every byte sent to the backend */
	size_t			 pos;		/* of tob: read by the backend */
	size_t			 line0;		/* start of the current line */

	bool			 violated;
	enum dc_class		 vclass;
	char			 vmsg[256];
};

/* ------------------------------------------------------------------ */
/* Small helpers */

static inline int
dc_upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

static inline bool
dc_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool
dc_digit(int c)
{
	return c >= '0' && c <= '9';
}

static inline bool
dc_ctl(int c)
{
	return c < 0x20 || c == 0x7f;
}

/* Case-insensitive: is [s, s+n) exactly w? */
static inline bool
dc_eq(const unsigned char *s, size_t n, const char *w)
{
	size_t	 i;

	if (strlen(w) != n)
		return false;
	for (i = 0; i < n; i++)
		if (dc_upper(s[i]) != dc_upper((unsigned char)w[i]))
			return false;
	return true;
}

/* Is the upper-case word w one of the NULL-terminated list? */
static inline bool
dc_in(const char *w, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(w, *list) == 0)
			return true;
	return false;
}

static void
dc_tape_add(struct dc_tape *t, const void *p, size_t n)
{
	size_t	 cap = t->cap ? t->cap : 256;
	void	*q;

	if (t->len + n > t->cap) {
		while (cap < t->len + n)
			cap *= 2;
		if ((q = realloc(t->b, cap)) == NULL)
			abort();
		t->b = q;
		t->cap = cap;
	}
	memcpy(t->b + t->len, p, n);
	t->len += n;
}

static void __attribute__((format(printf, 3, 4)))
dc_violation(struct dc_run *r, enum dc_class cls, const char *fmt, ...)
{
	va_list	 ap;

	if (r->violated)
		return;
	r->violated = true;
	r->vclass = cls;
	va_start(ap, fmt);
	vsnprintf(r->vmsg, sizeof(r->vmsg), fmt, ap);
	va_end(ap);
	DC_ON_VIOLATION(r, cls, r->vmsg);
}

/* Print bytes with CR, LF and controls escaped. */
static void
dc_print(FILE *fp, const unsigned char *p, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r')
			fputs("\\r", fp);
		else if (p[i] == '\n')
			fputs("\\n", fp);
		else if (p[i] == '\\' || p[i] == '"')
			fprintf(fp, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			fprintf(fp, "\\x%02x\"\"", p[i]);
		else
			fputc(p[i], fp);
	}
}

/* The backend's current line, for messages. */
static const char *
dc_show(const unsigned char *p, size_t n)
{
	static char	 buf[120];
	size_t		 i, o = 0;

	for (i = 0; i < n && o + 5 < sizeof(buf); i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f)
			buf[o++] = (char)p[i];
		else
			o += (size_t)snprintf(buf + o, sizeof(buf) - o,
			    "\\x%02x", p[i]);
	}
	buf[o] = '\0';
	return buf;
}

static void __attribute__((format(printf, 2, 3)))
dc_reply(struct dc_run *r, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(r->holding ? r->held : r->bin, fmt, ap);
	va_end(ap);
}

/*
 * The backend is about to send the reply that decides how the following
 * bytes are framed (354, 334, "+"): nothing may have been sent after the
 * line that asked for it.
 */
static void
dc_decide(struct dc_run *r, const char *what)
{
	if (r->pos < r->tob.len)
		dc_violation(r, DC_EARLY, "%zu bytes after %s were sent "
		    "before the backend answered it", r->tob.len - r->pos,
		    what);
}

/* A SASL response line (RFC 4954 4, RFC 9051 6.2.2, RFC 5034 4). */
static bool
dc_sasl_ok(const unsigned char *p, size_t n)
{
	size_t	 i = 0;

	if (n == 1 && (p[0] == '*' || p[0] == '='))
		return true;
	if (n % 4 != 0)
		return false;
	while (i < n && (dc_alpha(p[i]) || dc_digit(p[i]) || p[i] == '+' ||
	    p[i] == '/'))
		i++;
	if (i + 2 < n)
		return false;
	while (i < n && p[i] == '=')
		i++;
	return i == n;
}

/*
 * RFC 5321 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE, with
 * qtextSMTP = %d32-33 / %d35-91 / %d93-126 and quoted-pairSMTP = "\\"
 * %d32-126: the one place where SP is data, so a run of SPs inside one is
 * canonical (MAIL FROM:<"a  b"@x>, VRFY "John  Smith").  A Quoted-string
 * starts a Local-part (after "<", or after the ":" ending a source route
 * or, sloppily, "FROM:") or a String argument (after SP); a DQUOTE
 * anywhere else is an ordinary byte (xtext, RFC 3461 ORCPT=).  If p[i]
 * opens one that is closed, returns the index of its closing DQUOTE;
 * else i.
 */
static size_t
dc_smtp_quoted(const unsigned char *p, size_t n, size_t i)
{
	size_t	 j;

	if (p[i] != '"' || i == 0 || (p[i - 1] != ' ' && p[i - 1] != '<' &&
	    p[i - 1] != ':'))
		return i;
	for (j = i + 1; j < n; j++) {
		if (p[j] == '\\')
			j++;
		else if (p[j] == '"')
			return j;
	}
	return i;
}

/*
 * Generic "verb[ SP arg]*" (SMTP and POP3): the verb is letters, digits
 * or "-", arguments are blank-separated runs of printable bytes (8-bit
 * allowed, SMTPUTF8).  Re-serialising verb and arguments with single SP
 * must give the line back.  With smtp, SMTP Quoted-strings are single
 * arguments kept as they are (dc_smtp_quoted()).  Puts the upper-case
 * verb in verb.
 */
static bool
dc_simple_line(struct dc_run *r, const unsigned char *p, size_t n,
    bool smtp, char *verb, size_t vsize, size_t *argoff)
{
	size_t	 i = 0, v = 0, q;

	verb[0] = '\0';
	if (n == 0) {
		dc_violation(r, DC_SYNTAX, "empty command line");
		return false;
	}
	if (p[0] == ' ' || p[0] == '\t') {
		dc_violation(r, DC_BLANK, "leading blank: \"%s\"",
		    dc_show(p, n));
		return false;
	}
	/*
	 * RFC 5321 says Ldh-str and RFC 1939 letters; a backend takes the
	 * first word whatever it holds, so any printable word will do.
	 */
	while (i < n && p[i] > ' ' && p[i] != 0x7f) {
		if (v + 1 < vsize)
			verb[v++] = (char)dc_upper(p[i]);
		i++;
	}
	verb[v] = '\0';
	for (v = i; v < n; v++) {
		if (smtp && (q = dc_smtp_quoted(p, n, v)) != v) {
			for (; v < q; v++)
				if (dc_ctl(p[v]))
					break;
			if (v == q)
				continue;
		}
		if (dc_ctl(p[v])) {
			dc_violation(r, DC_CTL, "control character 0x%02x: "
			    "\"%s\"", p[v], dc_show(p, n));
			return false;
		}
		if (p[v] == ' ' && (v + 1 == n || p[v + 1] == ' ')) {
			dc_violation(r, DC_BLANK, "double or trailing blank: "
			    "\"%s\"", dc_show(p, n));
			return false;
		}
	}
	if (i == 0 || (i < n && p[i] != ' ')) {
		dc_violation(r, DC_SYNTAX, "no verb: \"%s\"", dc_show(p, n));
		return false;
	}
	*argoff = i < n ? i + 1 : n;
	return true;
}

/* ------------------------------------------------------------------ */
/* SMTP */

static const char *const dc_smtp_clear[] = {
	"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT",
	"VRFY", "EXPN", "HELP", NULL
};
static const char *const dc_smtp_reqtls[] = {
	"HELO", "EHLO", "NOOP", "RSET", "QUIT", NULL
};

static void
dc_smtp_ehlo(struct dc_run *r)
{
	dc_reply(r, "250-backend.test Hello\r\n");
	if (r->caps & DC_S_PIPELINING)
		dc_reply(r, "250-PIPELINING\r\n");
	if (r->caps & DC_S_CHUNKING)
		dc_reply(r, "250-CHUNKING\r\n");
	if (r->caps & DC_S_AUTH)
		dc_reply(r, "250-AUTH PLAIN LOGIN\r\n");
	if (r->caps & DC_S_ETRN)
		dc_reply(r, "250-ETRN\r\n");
	if (r->caps & DC_S_8BIT)
		dc_reply(r, "250-8BITMIME\r\n250-SIZE 10240000\r\n");
	if (r->caps & DC_S_STARTTLS)
		dc_reply(r, "250-STARTTLS\r\n");
	if (r->caps & DC_S_XCLIENT)
		dc_reply(r, "250-XCLIENT ADDR NAME\r\n");
	if (r->caps & DC_S_SMTPUTF8)
		dc_reply(r, "250-SMTPUTF8\r\n");
	dc_reply(r, "250 ENHANCEDSTATUSCODES\r\n");
}

/* "BDAT <digits>[ LAST]" with a size below 2^31, or -1. */
static int64_t
dc_bdat_size(const unsigned char *a, size_t n, bool *last)
{
	uint64_t	 v = 0;
	size_t		 i = 0;

	*last = false;
	if (n == 0 || !dc_digit(a[0]))
		return -1;
	for (; i < n && dc_digit(a[i]); i++) {
		v = v * 10 + (uint64_t)(a[i] - '0');
		if (v > DC_BDAT_MAX)
			return -1;
	}
	if (i == n)
		return (int64_t)v;
	if (dc_eq(a + i, n - i, " LAST")) {
		*last = true;
		return (int64_t)v;
	}
	return -1;
}

static void
dc_smtp_policy(struct dc_run *r, const char *verb)
{
	if (strcmp(verb, "XCLIENT") == 0 || strcmp(verb, "XFORWARD") == 0 ||
	    strcmp(verb, "STARTTLS") == 0)
		dc_violation(r, DC_NEVER, "%s reached the backend", verb);
	else if (r->cleartext && (strcmp(verb, "AUTH") == 0 ||
	    strcmp(verb, "X-EXPS") == 0))
		dc_violation(r, DC_CRED, "%s reached the backend before TLS",
		    verb);
	else if (r->cleartext && r->svc.require_starttls &&
	    !dc_in(verb, dc_smtp_reqtls))
		dc_violation(r, DC_CLEAR, "%s before STARTTLS on a "
		    "require_starttls service", verb);
	else if (r->cleartext && !dc_in(verb, dc_smtp_clear) &&
	    !(strcmp(verb, "BDAT") == 0 && (r->caps & DC_S_CHUNKING)) &&
	    !(strcmp(verb, "ETRN") == 0 && (r->caps & DC_S_ETRN)))
		dc_violation(r, DC_CLEAR, "%s reached the backend in "
		    "cleartext", verb);
	else if (r->upgraded && !r->ehlo && !dc_in(verb, dc_smtp_reqtls))
		dc_violation(r, DC_NOEHLO, "%s after STARTTLS before EHLO",
		    verb);
}

static void
dc_smtp_command(struct dc_run *r, const unsigned char *p, size_t n)
{
	char		 verb[32];
	size_t		 a;
	int64_t		 sz;
	bool		 last, ok;

	ok = dc_simple_line(r, p, n, true, verb, sizeof(verb), &a);
	if (strcmp(verb, "BDAT") == 0) {
		sz = ok ? dc_bdat_size(p + a, n - a, &last) : -1;
		if (sz < 0) {
			dc_violation(r, DC_BDAT, "BDAT line not canonical: "
			    "\"%s\"", dc_show(p, n));
			/* Exim: 500, and the "chunk" runs as commands. */
			dc_reply(r, "500 5.5.2 Syntax error\r\n");
			return;
		}
		dc_smtp_policy(r, "BDAT");
		if (sz == 0)
			dc_reply(r, "250 2.0.0 chunk\r\n");
		else {
			r->st = DS_CHUNK;
			r->left = (uint64_t)sz;
		}
		return;
	}
	if (!ok) {
		dc_reply(r, "500 5.5.2 Error\r\n");
		return;
	}
	dc_smtp_policy(r, verb);
	if (strcmp(verb, "EHLO") == 0) {
		r->ehlo = true;
		r->mail = r->rcpt = false;
		dc_smtp_ehlo(r);
	} else if (strcmp(verb, "HELO") == 0) {
		r->ehlo = true;
		r->mail = r->rcpt = false;
		dc_reply(r, "250 backend.test\r\n");
	} else if (strcmp(verb, "MAIL") == 0) {
		r->mail = true;
		dc_reply(r, "250 2.1.0 Ok\r\n");
	} else if (strcmp(verb, "RCPT") == 0) {
		if (r->mail)
			r->rcpt = true;
		dc_reply(r, r->mail ? "250 2.1.5 Ok\r\n" :
		    "503 5.5.1 Need MAIL\r\n");
	} else if (strcmp(verb, "DATA") == 0) {
		dc_decide(r, "DATA");
		if (r->strict && !(r->mail && r->rcpt))
			dc_reply(r, "503 5.5.1 Need RCPT\r\n");
		else {
			dc_reply(r, "354 End data with <CR><LF>.<CR><LF>\r\n");
			r->st = DS_DATA;
		}
	} else if (strcmp(verb, "RSET") == 0) {
		r->mail = r->rcpt = false;
		dc_reply(r, "250 2.0.0 Ok\r\n");
	} else if (strcmp(verb, "QUIT") == 0) {
		dc_reply(r, "221 2.0.0 Bye\r\n");
		r->st = DS_DONE;
	} else if (strcmp(verb, "AUTH") == 0) {
		if (memchr(p + a, ' ', n - a) != NULL)
			dc_reply(r, "235 2.7.0 Authentication successful\r\n");
		else {
			dc_decide(r, "AUTH");
			r->sasl_steps = dc_eq(p + a, n - a, "LOGIN") ? 2 : 1;
			dc_reply(r, "334 \r\n");
			r->st = DS_SASL;
		}
	} else if (dc_in(verb, dc_smtp_clear) ||
	    strcmp(verb, "ETRN") == 0)
		dc_reply(r, "250 2.0.0 Ok\r\n");
	else
		dc_reply(r, "500 5.5.2 Error: command not recognized\r\n");
}

/* ------------------------------------------------------------------ */
/* IMAP */

static const char *const dc_imap_clear[] = {
	"CAPABILITY", "NOOP", "LOGOUT", "ID", NULL
};

static void
dc_imap_caps(struct dc_run *r)
{
	dc_reply(r, "IMAP4rev1");
	if (r->caps & DC_I_LITPLUS)
		dc_reply(r, " LITERAL+");
	if (r->caps & DC_I_LITMINUS)
		dc_reply(r, " LITERAL-");
	if (r->caps & DC_I_BINARY)
		dc_reply(r, " BINARY");
	if (r->caps & DC_I_AUTH)
		dc_reply(r, " AUTH=PLAIN AUTH=LOGIN");
	if (r->caps & DC_I_SASLIR)
		dc_reply(r, " SASL-IR");
	if (r->caps & DC_I_STARTTLS)
		dc_reply(r, " STARTTLS");
	if (r->caps & DC_I_ID)
		dc_reply(r, " ID");
	if (r->caps & DC_I_IDLE)
		dc_reply(r, " IDLE COMPRESS=DEFLATE");
}

/* An IMAP atom character (RFC 9051 ATOM-CHAR, with "]" and 8-bit). */
static inline bool
dc_atom_char(int c)
{
	return !dc_ctl(c) && c != ' ' && c != '(' && c != ')' && c != '{' &&
	    c != '"';
}

/* RFC 9051 ATOM-CHAR proper: no list-wildcards, "\\" or "]" either. */
static inline bool
dc_imap_atom_char(int c)
{
	return dc_atom_char(c) && c < 0x80 && c != '%' && c != '*' &&
	    c != '\\' && c != ']';
}

static void
dc_imap_idkey(struct dc_run *r, const unsigned char *s, size_t n)
{
	if (n >= 2 && dc_eq(s, 2, "x-"))
		dc_violation(r, DC_IDX, "ID key \"%s\" reached the backend",
		    dc_show(s, n));
}

/* A string token at depth 1 of an ID command: every other one is a key. */
static bool
dc_imap_idtoken(struct dc_run *r)
{
	bool	 key;

	if (strcmp(r->verb, "ID") != 0 || r->depth != 1)
		return false;
	key = r->idtok % 2 == 0;
	r->idtok++;
	return key;
}

/*
 * The arguments of an IMAP command from p[i] on (one line fragment), by
 * the RFC 9051 rules that decide framing: tokens separated by single SP,
 * lists without inner blanks, quoted strings with "\" escaping only
 * DQUOTE and "\", no control character outside them, a literal marker
 * only at the end.  Returns the literal's size (or -1: none) and its kind.
 */
static int64_t
dc_imap_args(struct dc_run *r, const unsigned char *p, size_t n, size_t i,
    char prev, bool *plus, bool *binary)
{
	unsigned char	 unq[64];
	uint64_t	 v;
	size_t		 j, u;

	for (; i < n; i++) {
		unsigned char c = p[i];

		if (c == ' ') {
			if (prev == ' ' || prev == '(' || i + 1 == n) {
				dc_violation(r, DC_BLANK, "blank out of place "
				    "at %zu: \"%s\"", i, dc_show(p, n));
				return -1;
			}
			prev = ' ';
		} else if (c == '(') {
			if (prev != ' ' && prev != '(' && prev != 'a')
				goto syntax;
			r->depth++;
			prev = '(';
		} else if (c == ')') {
			if (prev == ' ' || r->depth == 0)
				goto syntax;
			r->depth--;
			prev = ')';
		} else if (c == '"') {
			if (prev != ' ' && prev != '(')
				goto syntax;
			for (j = i + 1, u = 0; j < n && p[j] != '"'; j++) {
				if (p[j] == '\\') {
					if (j + 1 >= n || (p[j + 1] != '"' &&
					    p[j + 1] != '\\'))
						goto syntax;
					j++;
				} else if (p[j] == '\0') {
					dc_violation(r, DC_CTL, "NUL in a "
					    "quoted string: \"%s\"",
					    dc_show(p, n));
					return -1;
				}
				if (u < sizeof(unq))
					unq[u++] = p[j];
			}
			if (j >= n)
				goto syntax;
			if (dc_imap_idtoken(r))
				dc_imap_idkey(r, unq, u);
			r->ntok++;
			i = j;
			prev = 'q';
		} else if (c == '{' || (c == '~' && i + 1 < n &&
		    p[i + 1] == '{')) {
			if (prev != ' ' && prev != '(')
				goto syntax;
			*binary = c == '~';
			j = i + (c == '~' ? 2 : 1);
			for (v = 0; j < n && dc_digit(p[j]); j++) {
				v = v * 10 + (uint64_t)(p[j] - '0');
				if (v > UINT32_MAX)
					goto syntax;
			}
			if (j == i + 1 + (c == '~'))
				goto syntax;
			*plus = j < n && p[j] == '+';
			j += *plus;
			if (j + 1 != n || p[j] != '}')
				goto syntax;
			r->litkey = dc_imap_idtoken(r);
			r->ntok++;
			return (int64_t)v;
		} else if (dc_ctl(c)) {
			dc_violation(r, DC_CTL, "control character 0x%02x: "
			    "\"%s\"", c, dc_show(p, n));
			return -1;
		} else {
			/* An atom: after a blank, "(", or inside one. */
			if (prev == 'q' || prev == 'L')
				goto syntax;
			for (j = i; j < n && dc_atom_char(p[j]); j++)
				;
			if (prev != 'a' && dc_imap_idtoken(r) &&
			    !dc_eq(p + i, j - i, "NIL"))
				dc_imap_idkey(r, p + i, j - i);
			if (prev != 'a')
				r->ntok++;
			i = j - 1;
			prev = 'a';
		}
	}
	return -1;
 syntax:
	dc_violation(r, DC_SYNTAX, "does not parse at %zu: \"%s\"", i,
	    dc_show(p, n));
	return -1;
}

static void
dc_imap_policy(struct dc_run *r)
{
	const char	*v = r->verb;

	if (strcmp(v, "STARTTLS") == 0 || strcmp(v, "COMPRESS") == 0)
		dc_violation(r, DC_NEVER, "%s reached the backend", v);
	else if (r->cleartext && (strcmp(v, "LOGIN") == 0 ||
	    strcmp(v, "AUTHENTICATE") == 0))
		dc_violation(r, DC_CRED, "%s reached the backend before TLS",
		    v);
	else if (r->cleartext && !dc_in(v, dc_imap_clear))
		dc_violation(r, DC_CLEAR, "%s reached the backend in "
		    "cleartext", v);
}

/* A whole command has been read: act on it. */
static void
dc_imap_complete(struct dc_run *r)
{
	const char	*v = r->verb;

	r->in_cmd = false;
	dc_imap_policy(r);
	if (strcmp(v, "CAPABILITY") == 0) {
		dc_reply(r, "* CAPABILITY ");
		dc_imap_caps(r);
		dc_reply(r, "\r\n%s OK done\r\n", r->tag);
	} else if (strcmp(v, "LOGOUT") == 0) {
		dc_reply(r, "* BYE bye\r\n%s OK done\r\n", r->tag);
		r->st = DS_DONE;
	} else if (strcmp(v, "AUTHENTICATE") == 0 && r->ntok < 2) {
		dc_decide(r, "AUTHENTICATE");
		dc_reply(r, "+ \r\n");
		r->sasl_steps = 1;
		r->st = DS_SASL;
	} else if (strcmp(v, "IDLE") == 0) {
		dc_decide(r, "IDLE");
		dc_reply(r, "+ idling\r\n");
		r->st = DS_IDLE;
	} else
		dc_reply(r, "%s OK done\r\n", r->tag);
}

/* One line fragment of an IMAP command (no CRLF). */
static void
dc_imap_line(struct dc_run *r, const unsigned char *p, size_t n)
{
	size_t	 i = 0, t;
	int64_t	 lit;
	bool	 plus = false, binary = false, allowed;
	char	 prev = 'L';

	if (!r->in_cmd) {
		r->depth = 0;
		r->ntok = r->idtok = 0;
		r->verb[0] = '\0';
		/* tag: ASTRING-CHAR but "+" (so no "*" or "%" either) */
		for (; i < n && dc_atom_char(p[i]) && p[i] != '+' &&
		    p[i] != '*' && p[i] != '%'; i++)
			;
		t = i < sizeof(r->tag) - 1 ? i : sizeof(r->tag) - 1;
		memcpy(r->tag, p, t);
		r->tag[t] = '\0';
		if (t == 0)
			snprintf(r->tag, sizeof(r->tag), "*");
		if (i == 0 || i >= n || p[i] != ' ') {
			dc_violation(r, i < n && dc_ctl(p[i]) ? DC_CTL :
			    p[0] == ' ' ? DC_BLANK : DC_SYNTAX,
			    "no tag: \"%s\"", dc_show(p, n));
			dc_reply(r, "%s BAD tag\r\n", r->tag);
			return;
		}
		/*
		 * RFC 9051: command names are letters, except x-command =
		 * "X" atom, whose atom may hold any ATOM-CHAR (X-FOO1).
		 */
		for (t = 0, i++; i < n && (dc_alpha(p[i]) || (t > 0 &&
		    dc_upper(r->verb[0]) == 'X' && dc_imap_atom_char(p[i])));
		    i++)
			if (t + 1 < sizeof(r->verb))
				r->verb[t++] = (char)dc_upper(p[i]);
		r->verb[t] = '\0';
		if (t == 0 || (i < n && p[i] != ' ')) {
			dc_violation(r, i < n && dc_ctl(p[i]) ? DC_CTL :
			    i < n && p[i] == ' ' ? DC_BLANK : DC_SYNTAX,
			    "no verb: \"%s\"", dc_show(p, n));
			dc_reply(r, "%s BAD verb\r\n", r->tag);
			return;
		}
		if (i < n)
			i++;
		prev = ' ';
		if (i == n && n > 0 && p[n - 1] == ' ') {
			dc_violation(r, DC_BLANK, "trailing blank: \"%s\"",
			    dc_show(p, n));
			return;
		}
	}
	r->in_cmd = true;
	lit = i < n ? dc_imap_args(r, p, n, i, prev, &plus, &binary) : -1;
	if (lit < 0) {
		dc_imap_complete(r);
		return;
	}
	if (binary && !(r->caps & DC_I_BINARY))
		dc_violation(r, DC_LITERAL, "~{%lld} without BINARY",
		    (long long)lit);
	if (plus) {
		allowed = (r->caps & DC_I_LITPLUS) ||
		    ((r->caps & DC_I_LITMINUS) && lit <= 4096);
		if (!allowed) {
			/* Courier: no literal; the bytes are commands. */
			dc_violation(r, DC_LITERAL, "{%lld+} without "
			    "LITERAL+: \"%s\"", (long long)lit, dc_show(p, n));
			r->in_cmd = false;
			dc_reply(r, "%s BAD literal\r\n", r->tag);
			return;
		}
	} else {
		dc_decide(r, "a synchronising literal");
		if (lit > ((r->flags & DC_F_SMALLLIT) ? DC_LIT_SMALL :
		    DC_LIT_MAX)) {
			r->in_cmd = false;
			dc_reply(r, "%s BAD literal too big\r\n", r->tag);
			return;
		}
		dc_reply(r, "+ Ready for literal data\r\n");
	}
	r->left = (uint64_t)lit;
	r->keyseen = 0;
	r->st = DS_LIT;
}

/* ------------------------------------------------------------------ */
/* POP3 */

static const char *const dc_pop3_clear[] = { "CAPA", "QUIT", NULL };
static const char *const dc_pop3_cred[] = {
	"USER", "PASS", "APOP", "AUTH", NULL
};

static void
dc_pop3_command(struct dc_run *r, const unsigned char *p, size_t n)
{
	char	 verb[32];
	size_t	 a;
	bool	 args;

	if (!dc_simple_line(r, p, n, false, verb, sizeof(verb), &a)) {
		dc_reply(r, "-ERR bad command\r\n");
		return;
	}
	args = a < n;
	if (strcmp(verb, "XCLIENT") == 0 || strcmp(verb, "STLS") == 0)
		dc_violation(r, DC_NEVER, "%s reached the backend", verb);
	else if (r->cleartext && dc_in(verb, dc_pop3_cred))
		dc_violation(r, DC_CRED, "%s reached the backend before TLS",
		    verb);
	else if (r->cleartext && !dc_in(verb, dc_pop3_clear))
		dc_violation(r, DC_CLEAR, "%s reached the backend in "
		    "cleartext", verb);
	if (strcmp(verb, "CAPA") == 0) {
		dc_reply(r, "+OK Capability list follows\r\n");
		if (r->caps & DC_P_USER)
			dc_reply(r, "USER\r\n");
		if (r->caps & DC_P_SASL)
			dc_reply(r, "SASL PLAIN LOGIN\r\n");
		if (r->caps & DC_P_STLS)
			dc_reply(r, "STLS\r\n");
		if (r->caps & DC_P_PIPELINING)
			dc_reply(r, "PIPELINING\r\n");
		if (r->caps & DC_P_TOP)
			dc_reply(r, "TOP\r\n");
		if (r->caps & DC_P_UIDL)
			dc_reply(r, "UIDL\r\n");
		if (r->caps & DC_P_RESP)
			dc_reply(r, "RESP-CODES\r\nAUTH-RESP-CODE\r\n");
		if (r->caps & DC_P_XCLIENT)
			dc_reply(r, "XCLIENT\r\n");
		dc_reply(r, ".\r\n");
	} else if (strcmp(verb, "QUIT") == 0) {
		dc_reply(r, "+OK bye\r\n");
		r->st = DS_DONE;
	} else if (strcmp(verb, "AUTH") == 0 && args &&
	    memchr(p + a, ' ', n - a) == NULL) {
		dc_decide(r, "AUTH");
		dc_reply(r, "+ \r\n");
		r->sasl_steps = 1;
		r->st = DS_SASL;
	} else if (strcmp(verb, "AUTH") == 0 && !args)
		dc_reply(r, "-ERR mechanism needed\r\n");
	else if (strcmp(verb, "RETR") == 0 || strcmp(verb, "TOP") == 0 ||
	    ((strcmp(verb, "LIST") == 0 || strcmp(verb, "UIDL") == 0) &&
	    !args))
		dc_reply(r, "+OK follows\r\n1 120\r\n..dot\r\n.\r\n");
	else if (dc_in(verb, dc_pop3_cred) || strcmp(verb, "STAT") == 0 ||
	    strcmp(verb, "LIST") == 0 || strcmp(verb, "UIDL") == 0 ||
	    strcmp(verb, "DELE") == 0 || strcmp(verb, "NOOP") == 0 ||
	    strcmp(verb, "RSET") == 0)
		dc_reply(r, "+OK\r\n");
	else
		dc_reply(r, "-ERR unknown command\r\n");
}

/* ------------------------------------------------------------------ */
/* The recording backend: frames what it reads, the lenient way. */

static void
dc_sasl(struct dc_run *r, const unsigned char *p, size_t n)
{
	bool	 cancel = n == 1 && p[0] == '*';

	if (r->cleartext)
		dc_violation(r, DC_CRED, "a SASL response reached the "
		    "backend before TLS");
	else if (!dc_sasl_ok(p, n))
		dc_violation(r, DC_SASL, "SASL response \"%s\"",
		    dc_show(p, n));
	r->st = DS_CMD;
	if (!cancel && --r->sasl_steps > 0) {
		dc_decide(r, "a SASL challenge");
		r->st = DS_SASL;
		dc_reply(r, r->proto == PROTO_SMTP ? "334 \r\n" : "+ \r\n");
		return;
	}
	if (r->proto == PROTO_SMTP)
		dc_reply(r, cancel ? "501 5.7.0 Cancelled\r\n" :
		    "235 2.7.0 Authentication successful\r\n");
	else if (r->proto == PROTO_IMAP)
		dc_reply(r, cancel ? "%s BAD cancelled\r\n" : "%s OK done\r\n",
		    r->tag);
	else
		dc_reply(r, cancel ? "-ERR cancelled\r\n" : "+OK\r\n");
}

/* One complete line (p[n] was LF) in the state the backend is in. */
static void
dc_line(struct dc_run *r, const unsigned char *p, size_t n)
{
	bool	 crlf = n > 0 && p[n - 1] == '\r';
	size_t	 len = crlf ? n - 1 : n;

	if (r->st == DS_DATA) {
		if (!crlf || memchr(p, '\r', len) != NULL)
			dc_violation(r, DC_DATA, "bare %s inside DATA",
			    crlf ? "CR" : "LF");
		if (crlf && len == 1 && p[0] == '.') {
			r->st = DS_CMD;
			r->mail = r->rcpt = false;
			dc_reply(r, "250 2.0.0 Ok: queued\r\n");
		}
		return;
	}
	if (!crlf || memchr(p, '\r', len) != NULL) {
		dc_violation(r, DC_BARE, "bare %s in \"%s\"",
		    crlf ? "CR" : "LF", dc_show(p, len));
		/* A lenient backend takes the LF as the end of the line. */
	}
	if (r->st == DS_SASL) {
		dc_sasl(r, p, len);
		return;
	}
	if (r->st == DS_IDLE) {
		if (!dc_eq(p, len, "DONE"))
			dc_violation(r, DC_SYNTAX, "\"%s\" during IDLE",
			    dc_show(p, len));
		r->st = DS_CMD;
		dc_reply(r, "%s OK idle done\r\n", r->tag);
		return;
	}
	switch (r->proto) {
	case PROTO_SMTP:
		dc_smtp_command(r, p, len);
		break;
	case PROTO_IMAP:
		dc_imap_line(r, p, len);
		break;
	default:
		dc_pop3_command(r, p, len);
		break;
	}
}

/* Read every byte the filter has sent so far. */
static void
dc_backend(struct dc_run *r)
{
	const unsigned char	*p, *lf;
	size_t			 n, k;

	if ((n = evbuffer_get_length(r->to_b)) > 0) {
		dc_tape_add(&r->tob, evbuffer_pullup(r->to_b, -1), n);
		evbuffer_drain(r->to_b, n);
	}
	evbuffer_drain(r->to_c, evbuffer_get_length(r->to_c));
	while (r->pos < r->tob.len && r->st != DS_DONE && !r->violated) {
		p = r->tob.b + r->pos;
		n = r->tob.len - r->pos;
		if (r->st == DS_CHUNK || r->st == DS_LIT) {
			k = r->left < n ? (size_t)r->left : n;
			if (r->st == DS_LIT && r->litkey)
				for (; r->keyseen < 2 && r->keyseen < k;
				    r->keyseen++)
					r->keyhead[r->keyseen] =
					    p[r->keyseen];
			r->pos += k;
			r->left -= k;
			if (r->left > 0)
				break;
			if (r->st == DS_CHUNK) {
				r->st = DS_CMD;
				dc_reply(r, "250 2.0.0 chunk\r\n");
			} else {
				if (r->litkey)
					dc_imap_idkey(r, r->keyhead,
					    r->keyseen);
				r->litkey = false;
				r->st = DS_CMD;
			}
			continue;
		}
		if ((lf = memchr(p, '\n', n)) == NULL)
			break;
		r->pos += (size_t)(lf - p) + 1;
		dc_line(r, p, (size_t)(lf - p));
	}
}

/* ------------------------------------------------------------------ */
/* The driver */

/* Pump until the session settles; false once it is over. */
static bool
dc_pump(struct dc_run *r)
{
	enum filter_verdict	 v;
	int			 round;

	for (round = 0; round < DC_ROUNDS && !r->violated; round++) {
		v = filter_pump(r->f, r->cin, r->bin, r->to_c, r->to_b);
		if (v == FILTER_STARTTLS) {
			/*
			 * What the filter sent up to the go-ahead was sent
			 * in cleartext; the backend's answers to it arrive
			 * after the handshake (a quick client).
			 */
			r->holding = true;
			dc_backend(r);
			r->holding = false;
			r->cleartext = false;
			r->upgraded = true;
			r->ehlo = r->mail = r->rcpt = false;
			if (filter_tls_established(r->f, r->bin, r->to_b) ==
			    FILTER_CLOSE)
				return false;
			evbuffer_add_buffer(r->bin, r->held);
			continue;
		}
		dc_backend(r);
		if (v == FILTER_CLOSE || r->st == DS_DONE)
			return false;
		if (evbuffer_get_length(r->bin) == 0)
			return true;
	}
	return !r->violated;
}

static inline enum proto_id
dc_proto(uint8_t hdr0)
{
	return (hdr0 & DC_M_PROTO) == 1 ? PROTO_IMAP :
	    (hdr0 & DC_M_PROTO) == 2 ? PROTO_POP3 : PROTO_SMTP;
}

static void
dc_setup(struct dc_run *r, const uint8_t *hdr)
{
	static char	 name[] = "diff", host[] = "mx.example.test";

	memset(r, 0, sizeof(*r));
	r->proto = dc_proto(hdr[0]);
	r->ops = proto_ops_get(r->proto);
	r->caps = hdr[1];
	r->flags = hdr[2];
	r->strict = (hdr[0] & DC_M_STRICT) != 0;
	r->svc.name = name;
	r->svc.protocol = r->proto;
	r->svc.tls_mode = (hdr[0] & DC_M_IMPLICIT) ? TLS_MODE_IMPLICIT :
	    TLS_MODE_STARTTLS;
	r->svc.require_starttls = (hdr[0] & DC_M_REQTLS) != 0 &&
	    r->svc.tls_mode == TLS_MODE_STARTTLS;
	r->svc.hostname = host;
	r->svc.max_line_length = proto_default_line_max(r->proto);
	r->svc.idle_timeout = proto_default_idle_timeout(r->proto);
	/* A long stream of refusals must not end the session early. */
	r->svc.max_errors = 1000;
	r->svc.max_connections_per_ip = DEFAULT_MAX_CONNECTIONS_PER_IP;
	r->fp.svc = &r->svc;
	r->fp.tls_active = r->svc.tls_mode == TLS_MODE_IMPLICIT;
	r->fp.session_id = "diff000000000000";
	r->fp.client_addr = "192.0.2.1";
	r->cleartext = !r->fp.tls_active;
}

static void
dc_greet(struct dc_run *r)
{
	switch (r->proto) {
	case PROTO_SMTP:
		dc_reply(r, "220 backend.test ESMTP\r\n");
		break;
	case PROTO_IMAP:
		if (r->flags & DC_F_NOGREETCAPA)
			dc_reply(r, "* OK backend ready\r\n");
		else {
			dc_reply(r, "* OK [CAPABILITY ");
			dc_imap_caps(r);
			dc_reply(r, "] backend ready\r\n");
		}
		break;
	default:
		dc_reply(r, "+OK POP3 ready <1.2@backend.test>\r\n");
		break;
	}
}

/* Cut the stream as byte 0 says and feed it piece by piece. */
static void
dc_feed(struct dc_run *r, const uint8_t *s, size_t n, unsigned cut,
    size_t piece)
{
	const uint8_t	*lf;
	size_t		 k;

	while (n > 0) {
		if (cut == 0)
			k = n;
		else if (cut == 1)
			k = (lf = memchr(s, '\n', n)) == NULL ? n :
			    (size_t)(lf - s) + 1;
		else
			k = cut == 3 ? 1 : piece < n ? piece : n;
		evbuffer_add(r->cin, s, k);
		s += k;
		n -= k;
		if (!dc_pump(r))
			return;
	}
}

/*
 * Run one client stream; returns the run for the caller to look at
 * (violated, vclass, vmsg) until dc_end().
 */
static void
dc_run_stream(struct dc_run *r, const uint8_t *hdr, const uint8_t *s,
    size_t n)
{
	dc_setup(r, hdr);
	r->cin = evbuffer_new();
	r->bin = evbuffer_new();
	r->to_b = evbuffer_new();
	r->to_c = evbuffer_new();
	r->held = evbuffer_new();
	if (!r->cin || !r->bin || !r->to_b || !r->to_c || !r->held)
		abort();
	if ((r->f = filter_new(r->ops, &r->fp)) == NULL)
		abort();
	dc_greet(r);
	if (dc_pump(r))
		dc_feed(r, s, n, (hdr[0] & DC_M_CUT) >> 5,
		    (size_t)(hdr[2] >> 4) + 1);
}

static void
dc_end(struct dc_run *r)
{
	if (r->f != NULL)
		filter_free(r->f);
	evbuffer_free(r->cin);
	evbuffer_free(r->bin);
	evbuffer_free(r->to_b);
	evbuffer_free(r->to_c);
	evbuffer_free(r->held);
	free(r->tob.b);
	r->f = NULL;
	r->tob.b = NULL;
}

/* What the backend read, for a report. */
static void
dc_dump(const struct dc_run *r, FILE *fp)
{
	fprintf(fp, "  %s, %s%s, caps 0x%02x, flags 0x%02x: %s: %s\n",
	    r->ops->name, r->fp.tls_active ? "implicit TLS" : "STARTTLS",
	    r->svc.require_starttls ? " require_starttls" : "", r->caps,
	    r->flags, dc_class_names[r->vclass], r->vmsg);
	fprintf(fp, "  backend read: \"");
	dc_print(fp, r->tob.b, r->pos < r->tob.len ? r->pos : r->tob.len);
	fprintf(fp, "\"\n");
}

/* ------------------------------------------------------------------ */
/*
 * The stream generator: a grammar of the attacks.  Its choices
 * come from a byte string (the fuzzer's grammar mode) or from xorshift64
 * (the CI test), so one generator serves both.
 */

struct dc_rand {
	const uint8_t	*p;		/* choices, or NULL: xorshift */
	size_t		 n, i;
	uint64_t	 x;
};

static unsigned
dc_rnd(struct dc_rand *g, unsigned k)
{
	uint64_t	 v;

	if (k <= 1)
		return 0;
	if (g->p != NULL) {
		v = g->i < g->n ? g->p[g->i++] : 0;
		if (k > 256 && g->i < g->n)
			v = v << 8 | g->p[g->i++];
		return (unsigned)(v % k);
	}
	g->x ^= g->x << 13;
	g->x ^= g->x >> 7;
	g->x ^= g->x << 17;
	return (unsigned)((g->x >> 11) % k);
}

static inline const char *
dc_pick(struct dc_rand *g, const char *const *list, size_t n)
{
	return list[dc_rnd(g, (unsigned)n)];
}

#define DC_PICK(g, a)	dc_pick((g), (a), sizeof(a) / sizeof((a)[0]))

static inline void
dc_put(struct dc_tape *t, const char *s)
{
	dc_tape_add(t, s, strlen(s));
}

/* A verb, now and then in mixed case. */
static void
dc_gverb(struct dc_rand *g, struct dc_tape *t, const char *v)
{
	bool	 mix = dc_rnd(g, 4) == 0;
	char	 c;

	for (; *v != '\0'; v++) {
		c = *v;
		if (mix && dc_alpha(c) && dc_rnd(g, 2))
			c = (char)(c ^ 0x20);
		dc_tape_add(t, &c, 1);
	}
}

static void	dc_gsep(struct dc_rand *, struct dc_tape *);

/* "VERB rest": the verb as dc_gverb() spells it, a separator, the rest. */
static void
dc_gsimple(struct dc_rand *g, struct dc_tape *t, const char *s)
{
	char	 verb[16];
	size_t	 i;

	for (i = 0; s[i] != '\0' && s[i] != ' '; i++)
		;
	snprintf(verb, sizeof(verb), "%.*s", (int)i, s);
	dc_gverb(g, t, verb);
	if (s[i] == ' ') {
		dc_gsep(g, t);
		dc_put(t, s + i + 1);
	}
}

/* Mostly one SP; the separators otherwise. */
static void
dc_gsep(struct dc_rand *g, struct dc_tape *t)
{
	static const char *const seps[] = {
		"\t", "\v", "\f", "  ", " \t", "\t ", "\r", "\0"
	};
	unsigned	 k = dc_rnd(g, 24);

	if (k < 8)
		dc_tape_add(t, seps[k], seps[k][0] == '\0' ? 1 :
		    strlen(seps[k]));
	else
		dc_put(t, " ");
}

static void
dc_glead(struct dc_rand *g, struct dc_tape *t)
{
	unsigned	 k = dc_rnd(g, 24);

	if (k == 0)
		dc_put(t, " ");
	else if (k == 1)
		dc_put(t, "\t");
}

static void
dc_geol(struct dc_rand *g, struct dc_tape *t)
{
	switch (dc_rnd(g, 24)) {
	case 0:
		dc_put(t, "\n");
		break;
	case 1:
		dc_put(t, "\r");
		break;
	case 2:
		dc_put(t, "\r\r\n");
		break;
	case 3:
		dc_tape_add(t, "\0\r\n", 3);
		break;
	case 4:
		dc_put(t, " \r\n");
		break;
	case 5:
		dc_put(t, "\t\r\n");
		break;
	default:
		dc_put(t, "\r\n");
		break;
	}
}

static const char *const dc_b64[] = {
	"AGJvYgBzZWNyZXQ=", "Ym9i", "c2VjcmV0", "*", "=", "AGFAYg==",
	"dXNlcg==", "a b", "YWxpY2U=\tx"
};

/* Base64 lines, as after a (refused) AUTH/AUTHENTICATE/LOGIN. */
static void
dc_gb64(struct dc_rand *g, struct dc_tape *t)
{
	unsigned	 k = 1 + dc_rnd(g, 2);

	while (k-- > 0) {
		dc_put(t, DC_PICK(g, dc_b64));
		dc_geol(g, t);
	}
}

/* Bytes that would be commands if the backend lost the count. */
static void
dc_gsmuggle(struct dc_rand *g, struct dc_tape *t, uint64_t n,
    enum proto_id proto)
{
	static const char *const sm[] = {
		"XCLIENT ADDR=10.0.0.1 LOGIN=admin\r\nAUTH PLAIN AGFAYg==\r\n"
		    "DATA\r\n",
		"b LOGIN user pass\r\nc ID (\"x-originating-ip\" \"1.1.1.1\")"
		    "\r\n",
		"USER bob\r\nPASS secret\r\nXCLIENT ADDR=10.0.0.1\r\n",
	};
	const char	*s = sm[proto == PROTO_SMTP ? 0 : proto == PROTO_IMAP ?
	    1 : 2];
	size_t		 len = strlen(s), i;

	(void)g;
	for (i = 0; i < n && i < 200; i++)
		dc_tape_add(t, s + i % len, 1);
}

static void
dc_gsmtp(struct dc_rand *g, struct dc_tape *t)
{
	static const char *const simple[] = {
		"EHLO client.example", "HELO client.example",
		"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>",
		"RSET", "NOOP", "VRFY postmaster", "EXPN staff", "HELP",
		"ETRN example.org", "X-EXPS GSSAPI", "STARTTLS",
		"XCLIENT ADDR=203.0.113.9 LOGIN=admin",
		"XFORWARD ADDR=203.0.113.9", "TURN", "HELO",
		/* RFC-legal SPs inside Quoted-strings; runs between args. */
		"MAIL FROM:<\"a  b\"@example.org> SIZE=10",
		"RCPT TO:<b@example.net>  NOTIFY=SUCCESS  ORCPT=rfc822;b@x",
		"RCPT TO:<\"x\\\"  y\"@example.net>",
		"VRFY \"John  Smith\"", "EXPN \"staff  list",
		"EHLO [IPv6:2001:db8::1]", "MAIL FROM:<a  b@example.org>"
	};
	static const char *const sizes[] = {
		"0", "1", "5", "27", "64", "2147483647", "2147483648",
		"4294967295", "4294967296", "4294967301",
		"18446744073709551621", "0000000005", "+5", "-1", "5x", ""
	};
	static const char *const lasts[] = {
		"", "", " LAST", " last", "\tLAST", "  LAST", " LAST ",
		" LASTX"
	};
	static const char *const body[] = {
		"Subject: hi", "", "..dot", ".", "line\nbare lf",
		"bare\rcr", "\n.\n", "x\r\n.\nMAIL FROM:<evil@x>"
	};
	const char	*sz;
	unsigned	 k, i;

	dc_glead(g, t);
	switch (k = dc_rnd(g, 24)) {
	case 0:
	case 1:
	case 2:
		dc_gverb(g, t, "BDAT");
		dc_gsep(g, t);
		dc_put(t, sz = DC_PICK(g, sizes));
		dc_put(t, DC_PICK(g, lasts));
		dc_geol(g, t);
		dc_gsmuggle(g, t, strtoull(sz, NULL, 10), PROTO_SMTP);
		break;
	case 3:
	case 4:
		dc_gverb(g, t, "DATA");
		dc_geol(g, t);
		for (i = dc_rnd(g, 4); i > 0; i--) {
			dc_put(t, DC_PICK(g, body));
			dc_geol(g, t);
		}
		if (dc_rnd(g, 4) != 0)
			dc_put(t, ".\r\n");
		break;
	case 5:
	case 6:
		dc_gverb(g, t, "AUTH");
		dc_gsep(g, t);
		dc_put(t, dc_rnd(g, 2) ? "PLAIN" : "LOGIN");
		if (dc_rnd(g, 3) == 0) {
			dc_gsep(g, t);
			dc_put(t, "AGJvYgBzZWNyZXQ=");
			dc_geol(g, t);
		} else {
			dc_geol(g, t);
			dc_gb64(g, t);
		}
		break;
	case 7:
		dc_gb64(g, t);
		break;
	case 8:
		dc_gverb(g, t, "QUIT");
		dc_geol(g, t);
		break;
	default:
		sz = DC_PICK(g, simple);
		i = 0;
		while (sz[i] != '\0' && sz[i] != ' ')
			i++;
		{
			char	 verb[16];

			snprintf(verb, sizeof(verb), "%.*s", (int)i, sz);
			dc_gverb(g, t, verb);
		}
		if (sz[i] == ' ') {
			dc_gsep(g, t);
			dc_put(t, sz + i + 1);
		}
		dc_geol(g, t);
		break;
	}
}

/* An IMAP literal marker and its bytes (sometimes the wrong count). */
static void
dc_glit(struct dc_rand *g, struct dc_tape *t, const char *content)
{
	static const char *const pre[] = {
		"{", "{", "{", "~{", "~{", "{", "{ ", "{"
	};
	static const char *const post[] = {
		"}", "}", "+}", "}", "+}", "-}", "}", "}x"
	};
	char		 m[40];
	size_t		 n = strlen(content);
	unsigned	 k = dc_rnd(g, 8);

	if (dc_rnd(g, 8) == 0)
		n += dc_rnd(g, 3) == 0 ? 4294967296ULL : 1;
	snprintf(m, sizeof(m), "%s%zu%s", pre[k], n, post[k]);
	dc_put(t, m);
	dc_geol(g, t);
	dc_put(t, content);
}

static void
dc_gimap_id(struct dc_rand *g, struct dc_tape *t)
{
	static const char *const keys[] = {
		"name", "version", "x-originating-ip", "X-Client-Transport",
		"x-multiplex", "X-SESSION-ID", "x-", "vendor"
	};
	unsigned	 i, k = dc_rnd(g, 4);
	const char	*key;

	if (k == 0) {
		dc_put(t, "NIL");
		return;
	}
	dc_put(t, "(");
	for (i = 0; i < k; i++) {
		if (i > 0)
			dc_gsep(g, t);
		key = DC_PICK(g, keys);
		if (dc_rnd(g, 4) == 0)
			dc_glit(g, t, key);
		else {
			dc_put(t, "\"");
			dc_put(t, key);
			dc_put(t, "\"");
		}
		dc_gsep(g, t);
		if (dc_rnd(g, 5) == 0)
			dc_glit(g, t, "10.0.0.1\r\nb LOGIN u p");
		else
			dc_put(t, dc_rnd(g, 2) ? "\"1.2.3.4\"" : "NIL");
	}
	dc_put(t, ")");
}

static void
dc_gimap(struct dc_rand *g, struct dc_tape *t)
{
	static const char *const tags[] = {
		"a", "A001", "b", "t1", "a", "*", "+", "a]"
	};
	static const char *const simple[] = {
		"CAPABILITY", "NOOP", "SELECT INBOX", "ENABLE UTF8=ACCEPT",
		"FETCH 1:* (FLAGS BODY[HEADER.FIELDS (FROM)])",
		"UID FETCH 1 BODY[]", "LIST \"\" \"*\"", "STARTTLS",
		"COMPRESS DEFLATE", "STATUS INBOX (MESSAGES)",
		"EXAMINE \"Sent Items\"", "SEARCH SUBJECT \"a\\\"b\""
	};

	if (dc_rnd(g, 12) == 0) {
		dc_gb64(g, t);
		return;
	}
	dc_glead(g, t);
	dc_put(t, DC_PICK(g, tags));
	dc_gsep(g, t);
	switch (dc_rnd(g, 20)) {
	case 0:
	case 1:
		dc_gverb(g, t, "ID");
		dc_gsep(g, t);
		dc_gimap_id(g, t);
		break;
	case 2:
	case 3:
		dc_gverb(g, t, "LOGIN");
		dc_gsep(g, t);
		if (dc_rnd(g, 2))
			dc_glit(g, t, "user");
		else
			dc_put(t, "user");
		dc_gsep(g, t);
		if (dc_rnd(g, 2))
			dc_glit(g, t, "pass");
		else
			dc_put(t, "\"pass\"");
		break;
	case 4:
		dc_gverb(g, t, "AUTHENTICATE");
		dc_gsep(g, t);
		dc_put(t, "PLAIN");
		if (dc_rnd(g, 3) == 0) {
			dc_gsep(g, t);
			dc_put(t, "AGJvYgBzZWNyZXQ=");
		} else {
			dc_geol(g, t);
			dc_gb64(g, t);
			return;
		}
		break;
	case 5:
	case 6:
	case 7:
		dc_gverb(g, t, dc_rnd(g, 2) ? "NOOP" : "APPEND");
		dc_gsep(g, t);
		if (dc_rnd(g, 2))
			dc_put(t, "INBOX (\\Seen) ");
		dc_glit(g, t, dc_rnd(g, 2) ? "b LOGIN user pass\r\n" :
		    "Subject: x\r\n\r\nbody\r\n");
		break;
	case 8:
		dc_gverb(g, t, "IDLE");
		dc_geol(g, t);
		dc_gverb(g, t, "DONE");
		break;
	case 9:
		dc_gverb(g, t, "LOGOUT");
		break;
	default:
		dc_gsimple(g, t, DC_PICK(g, simple));
		break;
	}
	dc_geol(g, t);
}

static void
dc_gpop3(struct dc_rand *g, struct dc_tape *t)
{
	static const char *const simple[] = {
		"CAPA", "STLS", "USER bob", "PASS secret",
		"APOP bob c4c9334bac560ecc979e58001b3e22fb", "AUTH",
		"XCLIENT ADDR=10.0.0.1", "RETR 1", "TOP 1 0", "LIST", "LIST 1",
		"UIDL", "STAT", "NOOP", "DELE 1", "RSET"
	};

	dc_glead(g, t);
	switch (dc_rnd(g, 20)) {
	case 0:
	case 1:
		dc_gverb(g, t, "AUTH");
		dc_gsep(g, t);
		dc_put(t, "PLAIN");
		if (dc_rnd(g, 3) == 0) {
			dc_gsep(g, t);
			dc_put(t, "AGJvYgBzZWNyZXQ=");
			break;
		}
		dc_geol(g, t);
		dc_gb64(g, t);
		return;
	case 2:
		dc_gb64(g, t);
		return;
	case 3:
		dc_gverb(g, t, "QUIT");
		break;
	default:
		dc_gsimple(g, t, DC_PICK(g, simple));
		break;
	}
	dc_geol(g, t);
}

/* A client stream of a few commands. */
static void
dc_gen(struct dc_rand *g, enum proto_id proto, struct dc_tape *t)
{
	unsigned	 k = 1 + dc_rnd(g, 10), starttls;

	/* Often a STARTTLS/STLS on its own, so the TLS phase is reached. */
	starttls = dc_rnd(g, 2) ? dc_rnd(g, k) : k;
	for (unsigned i = 0; i < k; i++) {
		if (i == starttls)
			dc_put(t, proto == PROTO_SMTP ? "STARTTLS\r\n" :
			    proto == PROTO_IMAP ? "s STARTTLS\r\n" :
			    "STLS\r\n");
		if (proto == PROTO_SMTP)
			dc_gsmtp(g, t);
		else if (proto == PROTO_IMAP)
			dc_gimap(g, t);
		else
			dc_gpop3(g, t);
	}
}

#endif /* DIFF_CHECK_H */
