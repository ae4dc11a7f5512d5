/*
 * proto_pop3.c - the POP3 grammar, verbs, capability rules and replies.
 *
 * Runs on the filter core (filter.c), which owns the reply FIFO, the
 * error budget, the STLS boundary, the SASL response line, the capability
 * matcher and the log prefix.  This file keeps only what is POP3's own.
 *
 * Client side: one command line at a time, framed with lineio.  A line is
 * forwarded only as our re-serialisation of what we parsed: the keyword
 * upper-cased, then each argument after a single SP, then CRLF (RFC 1939
 * section 3, RFC 2449 section 3: "keyword *(SP param) CRLF").  Runs of SP
 * between arguments are collapsed, because the backend sees only the
 * canonical line, so it cannot split it differently from us.  What could be
 * read two ways is refused, never forwarded (SPEC 8.4): any control
 * character (HTAB, CR, LF, NUL, 0x01-0x1F, 0x7F), a line ended by a bare
 * LF, a blank before the keyword.  PASS is the one exception to the
 * tokens: its argument is the rest of the line after the single SP,
 * byte-exact, as most servers read it (RFC 1939 section 7 lets a password
 * hold spaces), still without control characters; a PASS argument that
 * servers could read two ways (a blank at either end, a run of blanks,
 * nothing after the SP) is refused rather than rewritten.
 *
 * Before TLS only CAPA, STLS and QUIT are forwarded: USER, PASS, APOP and
 * AUTH get "-ERR [AUTH]" (SPEC 8.5), anything else "-ERR" from us, so no
 * line of a refused exchange ever reaches the backend.  XCLIENT is ours
 * alone and refused in every state.  Every refusal counts (filter_refuse).
 *
 * Backend side: the greeting, then exactly one reply per forwarded
 * command, matched through the core FIFO.  A multi-line reply follows only
 * a +OK to CAPA, RETR, TOP, and LIST, UIDL, LANG or AUTH without argument
 * (RFC 1939 section 3, RFC 2449, RFC 5034, RFC 6856); its body is relayed
 * byte-exact and scanned only for the CRLF.CRLF that ends it, so message
 * text is never taken for replies.  CAPA is rewritten line by line.  A
 * SASL exchange (AUTH with a mechanism, inside TLS) holds client input so
 * that each response line is framed where the backend frames it.
 * Anything else from the backend closes the session.
 *
 * backend_tls = starttls (SPEC 12): before the client is read, every backend
 * connection gets our own dialogue in cleartext: the greeting must be +OK,
 * our CAPA must list STLS, our STLS must get +OK (pop3_prelude_*); a line
 * that does not fit fails the backend, and nothing of it is relayed.
 * After the verified handshake the client gets our own "+OK" greeting
 * (APOP cannot work then: its timestamp would be the cleartext server's),
 * and its CAPA is answered by the server inside TLS.
 *
 * RFCs: 1939 (POP3), 2449 (CAPA), 2595 (STLS), 3206 (response codes),
 * 5034 (SASL), 6856 (LANG).
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter.h"
#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

/* RFC 1939 keywords have 3-4 characters; extensions (XCLIENT) are longer. */
#define POP3_VERB_MAX		16
/* Body chunks looked at per evbuffer_peek(). */
#define POP3_BODY_IOV		8

/* Replies written here (RFC 3206 codes where one applies). */
#define POP3_R_STLS_GO	"+OK Begin TLS negotiation\r\n"
#define POP3_R_TOOLONG	"-ERR Line too long\r\n"
#define POP3_R_BADCHAR	"-ERR Invalid characters in command line\r\n"
#define POP3_R_EMPTY	"-ERR Empty command line\r\n"
#define POP3_R_SYNTAX	"-ERR Syntax error\r\n"
#define POP3_R_BLANK	"-ERR Leading, trailing or double blank in " \
			"argument\r\n"
#define POP3_R_NOPERM	"-ERR Command not permitted\r\n"
#define POP3_R_CLEAR	"-ERR [AUTH] Plaintext authentication disallowed " \
			"on non-secure connection, use STLS first\r\n"
#define POP3_R_NOTYET	"-ERR Command not permitted before STLS\r\n"
#define POP3_R_TLSUP	"-ERR TLS already active\r\n"
#define POP3_R_NOTLS	"-ERR STLS not available\r\n"
#define POP3_R_ERRORS	"-ERR Too many errors\r\n"
#define POP3_R_UNAVAIL	"-ERR [SYS/TEMP] Service temporarily unavailable\r\n"
#define POP3_R_TIMEOUT	"-ERR Timeout\r\n"
/* SPEC 10. */
#define POP3_R_RATE	"-ERR [SYS/TEMP] Too many connections\r\n"
#define POP3_R_AUTHLIMIT "-ERR [SYS/TEMP] Too many authentication failures\r\n"

enum pop3_state {
	POP3_ST_GREETING = 0,	/* waiting for the backend's greeting */
	POP3_ST_AUTHORIZATION,
	POP3_ST_TRANSACTION,	/* after +OK to PASS, APOP or AUTH */
};

/* What the backend is sending now. */
enum pop3_reader {
	POP3_RD_STATUS = 0,	/* a status line (greeting or reply) */
	POP3_RD_BODY,		/* a multi-line body, relayed as is */
	POP3_RD_CAPA,		/* a CAPA body, rewritten line by line */
	POP3_RD_OWN_CAPA,	/* the CAPA body of our own CAPA (SPEC 12) */
};

/* Where the body scanner is relative to the line structure. */
enum pop3_body {
	POP3_BD_BOL = 0,	/* after CRLF */
	POP3_BD_BOL_BARE,	/* after a bare LF */
	POP3_BD_MID,		/* inside a line */
	POP3_BD_DOT,		/* "." at the start of a line */
	POP3_BD_DOTCR,		/* ".\r" at the start of a line */
};

/* Slots of forwarded commands in the core FIFO: how a +OK is framed. */
enum {
	PSLOT_SINGLE = FSLOT_PROTO,
	PSLOT_MULTI,		/* +OK starts a multi-line body */
	PSLOT_CAPA,		/* the same, rewritten */
	PSLOT_LOGIN,		/* +OK enters TRANSACTION (PASS, APOP) */
	PSLOT_SASL,		/* "+" continuations may come; +OK: logged in */
	PSLOT_OWN_CAPA,		/* SPEC 12 prelude: our CAPA */
	PSLOT_OWN_STLS,		/* ... and our STLS */
};

/* Lines of the CAPA reply we read ourselves (RFC 2449 lists a dozen). */
#define POP3_OWN_CAPA_LINES	256

/* Command table flags. */
#define PC_PRETLS	0x01	/* forwarded before TLS (SPEC section 3) */
#define PC_CREDENTIALS	0x02	/* refused in cleartext (SPEC 8.5) */
#define PC_AUTHORITY	0x04	/* proxy authority: refused everywhere */
#define PC_STLS		0x08	/* answered here */
#define PC_NOARGS	0x10	/* arguments: -ERR here */
#define PC_RESTARG	0x20	/* rest of the line is one argument (PASS) */
#define PC_QUIT		0x40	/* nothing is read after it */

struct pop3_cmd {
	const char	*verb;
	unsigned	 flags;
	unsigned	 slot_args;	/* slot kind with arguments */
	unsigned	 slot_noargs;	/* and without */
};

static const struct pop3_cmd pop3_cmds[] = {
	{ "CAPA",	PC_PRETLS | PC_NOARGS,	PSLOT_SINGLE,	PSLOT_CAPA },
	{ "STLS",	PC_PRETLS | PC_STLS,	PSLOT_SINGLE,	PSLOT_SINGLE },
	{ "QUIT",	PC_PRETLS | PC_QUIT,	PSLOT_SINGLE,	PSLOT_SINGLE },
	{ "USER",	PC_CREDENTIALS,		PSLOT_SINGLE,	PSLOT_SINGLE },
	{ "PASS",	PC_CREDENTIALS | PC_RESTARG,
						PSLOT_LOGIN,	PSLOT_SINGLE },
	{ "APOP",	PC_CREDENTIALS,		PSLOT_LOGIN,	PSLOT_SINGLE },
	/* "AUTH" alone lists mechanisms (old-style SASL discovery). */
	{ "AUTH",	PC_CREDENTIALS,		PSLOT_SASL,	PSLOT_MULTI },
	{ "XCLIENT",	PC_AUTHORITY,		PSLOT_SINGLE,	PSLOT_SINGLE },
	{ "LIST",	0,			PSLOT_SINGLE,	PSLOT_MULTI },
	{ "UIDL",	0,			PSLOT_SINGLE,	PSLOT_MULTI },
	{ "LANG",	0,			PSLOT_SINGLE,	PSLOT_MULTI },
	{ "RETR",	0,			PSLOT_MULTI,	PSLOT_MULTI },
	{ "TOP",	0,			PSLOT_MULTI,	PSLOT_MULTI },
};

/* Every other keyword: forwarded inside TLS, single-line reply. */
static const struct pop3_cmd pop3_cmd_other = {
	NULL, 0, PSLOT_SINGLE, PSLOT_SINGLE
};

/*
 * CAPA lines removed, by their first keyword (RFC 2449 section 6; SPEC
 * section 3).  The core matcher splits at any SP/HTAB run and ignores
 * case, so neither "sasl\tPLAIN" nor " User" escapes.
 */
static const struct filter_capa_rule pop3_capa_rules[] = {
	/* Ours to advertise, and only in cleartext on STLS services. */
	{ "STLS",	FCAPA_HIDE_ALWAYS },
	/* Not a client's command: never advertise it. */
	{ "XCLIENT",	FCAPA_HIDE_ALWAYS },
	/* Credentials are refused in cleartext: do not offer them. */
	{ "USER",	FCAPA_HIDE_CLEAR },
	{ "SASL",	FCAPA_HIDE_CLEAR },
};

struct pop3 {
	enum pop3_state		 state;
	enum pop3_reader	 reader;
	enum pop3_body		 body;
	char			 body_last;	/* last body byte scanned */
	bool			 stls;		/* STLS slot queued */
	bool			 skipping;	/* rest of an over-long line */
	bool			 stop;		/* QUIT sent or last word queued */
	bool			 auth_outstanding;	/* SASL AUTH in the FIFO */
	bool			 sasl_wait;	/* next client line: response */
	bool			 own_stls;	/* prelude: CAPA listed STLS */
	unsigned		 own_lines;	/* prelude: CAPA lines read */

	size_t			 line_max;	/* client lines */
	size_t			 bline_max;	/* backend lines */
	char			*line;		/* max of both + 2 (lent) */
	size_t			 linesz;
};

static void		*pop3_init(struct filter *, const struct filter_params *);
static void		 pop3_free(void *);
static void		 pop3_unavailable(struct evbuffer *, const char *);
static bool		 pop3_at_boundary(const struct filter *);
static void		 pop3_timeout_reply(struct evbuffer *, const char *);
static void		 pop3_rate_limited(struct evbuffer *, const char *);
static bool		 pop3_credential_slot(unsigned);
static void		 pop3_tls_reset(struct filter *, struct evbuffer *);
static void		 pop3_last_word(const struct filter *, char *, size_t);
static const char	*pop3_state_name(enum pop3_state);
static void		 pop3_enter_state(struct filter *, enum pop3_state);

static enum filter_verdict pop3_client_input(struct filter *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static void		 pop3_refuse(struct filter *, const char *);
static int		 pop3_client_line(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static const char	*pop3_check_line(const char *, size_t, unsigned);
static const struct pop3_cmd *pop3_cmd_find(char *, size_t);
static size_t		 pop3_canon_args(char *, size_t, unsigned);
static const char	*pop3_check_command(struct filter *,
			    const struct pop3_cmd *, const char *, size_t);
static bool		 pop3_restarg_canonical(const char *, size_t);
static const char	*pop3_check_stls(struct filter *, size_t);
static void		 pop3_do_command(struct filter *,
			    const struct pop3_cmd *, const char *, size_t,
			    const char *, size_t, struct evbuffer *);
static int		 pop3_sasl_response(struct filter *,
			    struct evbuffer *, struct evbuffer *);

static enum filter_verdict pop3_backend_input(struct filter *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_backend_line(struct filter *, struct evbuffer *,
			    size_t *);
static void		 pop3_relay_line(struct pop3 *, size_t,
			    struct evbuffer *);
static bool		 pop3_is_status(const char *, size_t, const char *);
static size_t		 pop3_greeting_strip(char *, size_t);
static int		 pop3_greeting(struct filter *, struct evbuffer *,
			    struct evbuffer *, struct evbuffer *);
static int		 pop3_reply(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static void		 pop3_reply_ok(struct filter *, unsigned);
static void		 pop3_reply_done(struct filter *);
static int		 pop3_body_scan(struct pop3 *, const char *, size_t,
			    size_t *);
static int		 pop3_body_relay(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_capa_line(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_prelude_fail(struct filter *, const char *);
static int		 pop3_prelude_reply(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_prelude_capa(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static void		 pop3_backend_tls_ready(struct filter *,
			    struct evbuffer *, struct evbuffer *);

const struct proto_ops proto_pop3_ops = {
	.name = "pop3",
	.alpn = "pop3",
	.init = pop3_init,
	.free = pop3_free,
	.client_input = pop3_client_input,
	.backend_input = pop3_backend_input,
	.tls_reset = pop3_tls_reset,
	.last_word = pop3_last_word,
	.unavailable = pop3_unavailable,
	.at_boundary = pop3_at_boundary,
	.timeout_reply = pop3_timeout_reply,
	.rate_limited = pop3_rate_limited,
	.backend_tls_ready = pop3_backend_tls_ready,
};

/* ------------------------------------------------------------------ */
/* Life cycle and state. */

static void *
pop3_init(struct filter *f, const struct filter_params *fp)
{
	struct pop3	*p;

	(void)f;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->line_max = fp->svc->max_line_length ? fp->svc->max_line_length :
	    DEFAULT_POP3_LINE_MAX;
	/* A short client limit must not break long backend greetings. */
	p->bline_max = p->line_max > DEFAULT_POP3_LINE_MAX ? p->line_max :
	    DEFAULT_POP3_LINE_MAX;
	p->linesz = p->bline_max + 2;
	/* Lent per hook (filter_lend_buffer()): POP3 keeps no line state. */
	filter_lend_buffer(f, &p->line, p->linesz);
	return p;
}

static void
pop3_free(void *arg)
{
	struct pop3	*p = arg;

	if (p == NULL)
		return;
	free(p);
}

static void
pop3_unavailable(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, POP3_R_UNAVAIL, strlen(POP3_R_UNAVAIL));
}

/* SPEC 10, max_connection_rate_per_ip. */
static void
pop3_rate_limited(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, POP3_R_RATE, strlen(POP3_R_RATE));
}

/* The slots of PASS, APOP and AUTH with a mechanism: a login attempt. */
static bool
pop3_credential_slot(unsigned kind)
{
	return kind == PSLOT_LOGIN || kind == PSLOT_SASL;
}

/*
 * Status lines reach the client whole; a multi-line body (RETR, LIST,
 * CAPA...) is relayed as it comes, and a -ERR inside it would be read
 * as a line of the message.  Clients send no transfers of their own.
 */
static bool
pop3_at_boundary(const struct filter *f)
{
	const struct pop3	*p = f->proto;

	return p->reader == POP3_RD_STATUS;
}

static void
pop3_timeout_reply(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, POP3_R_TIMEOUT, strlen(POP3_R_TIMEOUT));
}

/*
 * The go-ahead has been written (filter_starttls).  Only the STLS hold
 * remains of the cleartext phase: no login can have happened (credentials
 * are refused in cleartext), no multi-line reply or SASL exchange can be
 * running (the go-ahead waited for every earlier reply), so the backend
 * is still in AUTHORIZATION state and nothing needs telling (SPEC 8.3).
 * The error count is kept: the core counts across the boundary.
 */
static void
pop3_tls_reset(struct filter *f, struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;

	(void)to_backend;
	p->stls = false;
	/*
	 * SPEC 9: a fresh backend connection for the TLS phase; its
	 * greeting is read here, the core keeps it from the client.
	 */
	if (f->renew_backend)
		pop3_enter_state(f, POP3_ST_GREETING);
	flog(f, debug, "STLS go-ahead");
}

static void
pop3_last_word(const struct filter *f, char *buf, size_t len)
{
	(void)f;
	snprintf(buf, len, "%s", POP3_R_ERRORS);
}

static const char *
pop3_state_name(enum pop3_state st)
{
	switch (st) {
	case POP3_ST_GREETING:
		return "GREETING";
	case POP3_ST_AUTHORIZATION:
		return "AUTHORIZATION";
	case POP3_ST_TRANSACTION:
		return "TRANSACTION";
	}
	return "?";
}

static void
pop3_enter_state(struct filter *f, enum pop3_state st)
{
	struct pop3	*p = f->proto;

	if (p->state == st)
		return;
	flog(f, debug, "%s -> %s", pop3_state_name(p->state),
	    pop3_state_name(st));
	p->state = st;
}

/* ------------------------------------------------------------------ */
/* Client side. */

/*
 * Read client lines while nothing forces a hold: the greeting, a STLS
 * waiting for its turn, a running SASL exchange, QUIT or the last word, a
 * full FIFO.
 */
static enum filter_verdict
pop3_client_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	struct pop3	*p = f->proto;
	int		 r;

	for (;;) {
		filter_flush(f, to_client);
		if (f->closing)
			return FILTER_CLOSE;
		/* Commands wait for the greeting, like a conforming client. */
		if (p->state == POP3_ST_GREETING)
			return FILTER_CONTINUE;
		/* Nothing after STLS is read; the core closes if it came. */
		if (p->stls)
			return filter_starttls(f, in, to_client,
			    POP3_R_STLS_GO);
		if (p->skipping) {
			if (lineio_skip(in) == 0)
				return FILTER_CONTINUE;
			p->skipping = false;
			continue;
		}
		if (p->stop)
			return FILTER_CONTINUE;
		if (p->sasl_wait)
			r = pop3_sasl_response(f, in, to_backend);
		else if (p->auth_outstanding || filter_fifo_full(f))
			return FILTER_CONTINUE;	/* the backend decides next */
		else
			r = pop3_client_line(f, in, to_backend);
		if (r == 0)
			return FILTER_CONTINUE;
	}
}

/* A refusal of ours; at the error limit nothing more is read. */
static void
pop3_refuse(struct filter *f, const char *reply)
{
	struct pop3	*p = f->proto;

	if (filter_refuse(f, NULL, 0, reply))
		p->stop = true;
}

/*
 * Frame one command line and act on it: 1 if a line was taken (or an
 * over-long one refused), 0 if no complete line is there yet.
 */
static int
pop3_client_line(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct pop3		*p = f->proto;
	const struct pop3_cmd	*cmd;
	const char		*err;
	char			*sp, *args = NULL;
	size_t			 len, verblen, argslen = 0;
	unsigned		 flags;

	switch (lineio_get(in, p->line_max, p->line, p->linesz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		p->skipping = true;
		pop3_refuse(f, POP3_R_TOOLONG);
		return 1;
	case LINEIO_LINE:
		break;
	}
	if ((err = pop3_check_line(p->line, len, flags)) != NULL) {
		pop3_refuse(f, err);
		return 1;
	}
	sp = memchr(p->line, ' ', len);
	verblen = sp ? (size_t)(sp - p->line) : len;
	if ((cmd = pop3_cmd_find(p->line, verblen)) == NULL) {
		pop3_refuse(f, POP3_R_SYNTAX);
		return 1;
	}
	if (sp != NULL) {
		args = sp + 1;
		argslen = pop3_canon_args(args, len - verblen - 1, cmd->flags);
	}
	if ((err = pop3_check_command(f, cmd, args, argslen)) != NULL)
		pop3_refuse(f, err);
	else
		pop3_do_command(f, cmd, p->line, verblen, args, argslen,
		    to_backend);
	return 1;
}

/*
 * SPEC 8.4: what a backend might frame or split differently is never
 * passed on.  A bare LF ends a line for some servers only; CR and NUL
 * stop some parsers early; HTAB and the other controls are blanks to some
 * and argument bytes to others ("UIDL <HTAB>" would be UIDL with an
 * argument for us and the multi-line UIDL for a server that trims).
 */
static const char *
pop3_check_line(const char *line, size_t len, unsigned flags)
{
	if ((flags & LINEIO_BARE_LF) || filter_has_ctl(line, len))
		return POP3_R_BADCHAR;
	if (len == 0)
		return POP3_R_EMPTY;
	return NULL;
}

/*
 * Look the keyword up; NULL if it is not a keyword at all (RFC 1939:
 * printable characters; we take letters and digits only, which every
 * known command uses, so nothing odd reaches the backend).  A blank before
 * the keyword leaves it empty: refused, as a server that skips blanks and
 * one that does not would disagree.  The keyword is upper-cased in place:
 * that is the canonical form forwarded.
 */
static const struct pop3_cmd *
pop3_cmd_find(char *v, size_t len)
{
	size_t	 i;

	if (len == 0 || len > POP3_VERB_MAX)
		return NULL;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c >= 'a' && c <= 'z')
			v[i] = (char)(c - 'a' + 'A');
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return NULL;
	}
	for (i = 0; i < sizeof(pop3_cmds) / sizeof(pop3_cmds[0]); i++)
		if (filter_word_eq(v, len, pop3_cmds[i].verb))
			return &pop3_cmds[i];
	return &pop3_cmd_other;
}

/*
 * Canonical arguments, in place: the arguments are the SP-separated
 * tokens, re-joined with single SPs, so "LIST  1 " is "LIST 1" and
 * "UIDL " is UIDL without argument for us and for the backend alike (that
 * decides whether a multi-line reply follows).  PASS keeps the rest of
 * the line byte-exact as its single argument (RFC 1939 section 7: a
 * password may hold spaces).  Returns the new length.
 */
static size_t
pop3_canon_args(char *args, size_t len, unsigned flags)
{
	size_t	 i, o = 0;

	if (flags & PC_RESTARG)
		return len;
	for (i = 0; i < len; i++) {
		if (args[i] == ' ' && (o == 0 || args[o - 1] == ' '))
			continue;
		args[o++] = args[i];
	}
	if (o > 0 && args[o - 1] == ' ')
		o--;
	return o;
}

/*
 * Policy for a well-formed command; NULL lets it through.  args is NULL
 * when no SP followed the keyword.
 */
static const char *
pop3_check_command(struct filter *f, const struct pop3_cmd *cmd,
    const char *args, size_t argslen)
{
	if (cmd->flags & PC_AUTHORITY) {
		/* A client must never speak with mailtlsd's authority. */
		flog(f, warnx, "%s refused", cmd->verb);
		filter_refusal_kind(f, FILTER_REF_AUTHORITY);
		return POP3_R_NOPERM;
	}
	if (cmd->flags & PC_STLS)
		return pop3_check_stls(f, argslen);
	if (filter_cleartext(f)) {
		if (cmd->flags & PC_CREDENTIALS) {
			/* SPEC 8.5: the verb only, never what follows it. */
			flog(f, warnx, "%s in cleartext refused", cmd->verb);
			filter_refusal_kind(f, FILTER_REF_CREDENTIALS);
			return POP3_R_CLEAR;
		}
		/*
		 * SPEC section 3: the cleartext allow-list.  Nothing else
		 * reaches the backend before TLS, so neither do the lines
		 * of a refused AUTH, whatever they look like.
		 */
		if (!(cmd->flags & PC_PRETLS))
			return POP3_R_NOTYET;
	}
	if ((cmd->flags & PC_NOARGS) && argslen > 0)
		return POP3_R_SYNTAX;
	if ((cmd->flags & PC_RESTARG) && args != NULL &&
	    !pop3_restarg_canonical(args, argslen))
		return POP3_R_BLANK;
	/*
	 * SPEC 10: PASS, APOP and AUTH with a mechanism carry credentials
	 * (bare AUTH only lists mechanisms); an address over its failures
	 * sends no more.
	 */
	if (argslen > 0 && pop3_credential_slot(cmd->slot_args) &&
	    filter_auth_blocked(f))
		return POP3_R_AUTHLIMIT;
	return NULL;
}

/*
 * PASS (SPEC 8.4).  RFC 1939 section 7 gives PASS one argument and lets
 * a server "treat spaces in the argument as part of the password,
 * instead of as argument separators", so servers differ: Dovecot and
 * Courier take the rest of the line byte-exact, leading and trailing
 * blanks included; others split at blanks, skip leading ones, cut
 * trailing ones, or re-join the words with one SP.  The password is not
 * ours to rewrite, so it is forwarded only when every one of those
 * readings gives the same bytes: not empty ("PASS " is an empty password
 * to some, no argument to others), no blank at either end, and each
 * internal blank a single SP between two other bytes ("my pass phrase"
 * passes byte-exact).  Anything else is refused, never forwarded.
 */
static bool
pop3_restarg_canonical(const char *args, size_t len)
{
	size_t	 i;

	if (len == 0 || args[0] == ' ' || args[len - 1] == ' ')
		return false;
	for (i = 1; i < len; i++)
		if (args[i] == ' ' && args[i - 1] == ' ')
			return false;
	return true;
}

/*
 * STLS (RFC 2595 section 4): only in cleartext (so only in AUTHORIZATION
 * state: no login happens before TLS), only on a STLS service, and
 * without arguments.
 */
static const char *
pop3_check_stls(struct filter *f, size_t argslen)
{
	if (!filter_cleartext(f))
		return POP3_R_TLSUP;
	if (!f->starttls_svc)
		return POP3_R_NOTLS;
	if (argslen > 0)
		return POP3_R_SYNTAX;
	return NULL;
}

/*
 * Forward the canonical line and take its slot.  STLS takes the core's
 * FSLOT_STARTTLS instead: filter_starttls() gives the go-ahead once every
 * earlier reply has been relayed, and closes if anything follows the line
 * (SPEC 8.1, 8.2).
 */
static void
pop3_do_command(struct filter *f, const struct pop3_cmd *cmd,
    const char *verb, size_t verblen, const char *args, size_t argslen,
    struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;
	unsigned	 kind;

	if (cmd->flags & PC_STLS) {
		filter_slot_push(f, FSLOT_STARTTLS, NULL, NULL, 0);
		p->stls = true;
		return;
	}
	kind = argslen ? cmd->slot_args : cmd->slot_noargs;
	if (kind == PSLOT_SASL)
		p->auth_outstanding = true;
	if (cmd->flags & PC_QUIT)
		p->stop = true;
	filter_slot_push(f, kind, NULL, NULL, 0)->credential =
	    pop3_credential_slot(kind);
	filter_send_command(to_backend, NULL, 0, verb, verblen, args,
	    argslen);
}

/*
 * One SASL response line (RFC 5034 section 4), read and forwarded by the
 * core, never logged.  A line it refuses is replaced by "*", which
 * cancels the exchange, so that the backend still sees exactly one
 * response and its -ERR comes in the right place.
 */
static int
pop3_sasl_response(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;

	switch (filter_sasl_line(f, in, to_backend)) {
	case FILTER_SASL_MORE:
		return 0;
	case FILTER_SASL_BAD:
		evbuffer_add(to_backend, "*\r\n", 3);
		break;
	case FILTER_SASL_SENT:
	case FILTER_SASL_CANCEL:
		break;
	}
	p->sasl_wait = false;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Backend side. */

/*
 * Each step below returns 1 after a complete unit (a line, the end of a
 * body), 0 when it needs more bytes, -1 when it closed the session.
 */
static enum filter_verdict
pop3_backend_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;
	int		 r;

	for (;;) {
		filter_flush(f, to_client);
		if (f->closing)
			return FILTER_CLOSE;
		/* After the server's STLS go-ahead: the core's to cut. */
		if (evbuffer_get_length(in) == 0 || filter_backend_paused(f))
			return FILTER_CONTINUE;
		if (p->state == POP3_ST_GREETING)
			r = pop3_greeting(f, in, to_client, to_backend);
		else if (p->reader == POP3_RD_OWN_CAPA)
			r = pop3_prelude_capa(f, in, to_backend);
		else if (filter_backend_dialogue(f))
			r = pop3_prelude_reply(f, in, to_backend);
		else if (p->reader == POP3_RD_BODY)
			r = pop3_body_relay(f, in, to_client);
		else if (p->reader == POP3_RD_CAPA)
			r = pop3_capa_line(f, in, to_client);
		else
			r = pop3_reply(f, in, to_client);
		if (r < 0)
			return FILTER_CLOSE;
		if (r == 0)
			return FILTER_CONTINUE;
	}
}

/*
 * One backend line into p->line: 1 got one, 0 need more, -1 malformed.  A
 * backend that cannot end its lines with CRLF is not one we can frame.
 */
static int
pop3_backend_line(struct filter *f, struct evbuffer *in, size_t *len)
{
	struct pop3	*p = f->proto;
	unsigned	 flags;

	switch (lineio_get(in, p->bline_max, p->line, p->linesz, len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		filter_abort(f, "backend line too long");
		return -1;
	case LINEIO_LINE:
		break;
	}
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL)) {
		filter_abort(f, "malformed backend reply");
		return -1;
	}
	return 1;
}

static void
pop3_relay_line(struct pop3 *p, size_t len, struct evbuffer *to_client)
{
	evbuffer_add(to_client, p->line, len);
	evbuffer_add(to_client, "\r\n", 2);
}

/* "+OK" or "-ERR", alone or followed by a space (RFC 1939 section 3). */
static bool
pop3_is_status(const char *line, size_t len, const char *status)
{
	size_t	 n = strlen(status);

	return len >= n && memcmp(line, status, n) == 0 &&
	    (len == n || line[n] == ' ');
}

/*
 * Dovecot announces "+OK [XCLIENT] ..." to a proxy it trusts.  Clients
 * may never use XCLIENT through mailtlsd, so they are not told about it
 * either (as XCLIENT is dropped from CAPA).  Returns the new length.
 */
static size_t
pop3_greeting_strip(char *line, size_t len)
{
	static const char	 code[] = "[XCLIENT]";
	size_t			 n = sizeof(code) - 1, skip;

	if (len < 4 + n || strncasecmp(line + 4, code, n) != 0)
		return len;
	skip = n + (len > 4 + n && line[4 + n] == ' ');
	memmove(line + 4, line + 4 + skip, len - 4 - skip);
	return len - skip;
}

static int
pop3_greeting(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;
	size_t		 len;
	int		 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	/* SPEC 12: never relayed; CAPA next, in cleartext. */
	if (filter_backend_dialogue(f)) {
		if (!pop3_is_status(p->line, len, "+OK"))
			return pop3_prelude_fail(f, pop3_is_status(p->line,
			    len, "-ERR") ? "backend refused the session" :
			    "malformed backend greeting");
		pop3_enter_state(f, POP3_ST_AUTHORIZATION);
		filter_own_command(f, to_backend, PSLOT_OWN_CAPA, NULL,
		    "CAPA");
		return 1;
	}
	if (pop3_is_status(p->line, len, "+OK")) {
		len = pop3_greeting_strip(p->line, len);
		pop3_relay_line(p, len, to_client);
		pop3_enter_state(f, POP3_ST_AUTHORIZATION);
		filter_backend_ready(f, true, NULL);
		return 1;
	}
	if (pop3_is_status(p->line, len, "-ERR")) {
		/* The backend turns us away: the client hears why. */
		pop3_relay_line(p, len, to_client);
		filter_abort(f, "backend refused the session");
	} else
		filter_abort(f, "malformed backend greeting");
	return -1;
}

/*
 * A status line: the reply to the command at the head of the FIFO.  With
 * nothing owed (no command pending, or only our STLS), only a -ERR makes
 * sense (a backend announcing that it disconnects, e.g. on its idle
 * timeout); it is passed on and we close.
 */
static int
pop3_reply(struct filter *f, struct evbuffer *in, struct evbuffer *to_client)
{
	struct pop3		*p = f->proto;
	struct filter_slot	*s;
	size_t			 len;
	int			 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	s = filter_backend_owes(f) ? filter_slot_head(f) : NULL;
	if (pop3_is_status(p->line, len, "-ERR")) {
		pop3_relay_line(p, len, to_client);
		if (s == NULL) {
			filter_abort(f, "backend ended the session");
			return -1;
		}
		/* SPEC 10: -ERR to PASS, APOP or AUTH is a failed login. */
		filter_auth_verdict(f, s, true);
		pop3_reply_done(f);
		return 1;
	}
	if (s != NULL && pop3_is_status(p->line, len, "+OK")) {
		pop3_relay_line(p, len, to_client);
		pop3_reply_ok(f, s->kind);
		return 1;
	}
	/* RFC 5034: "+" SP [base64], only while AUTH runs, one per response. */
	if (s != NULL && s->kind == PSLOT_SASL && !p->sasl_wait &&
	    p->line[0] == '+' && (len == 1 || p->line[1] == ' ')) {
		pop3_relay_line(p, len, to_client);
		p->sasl_wait = true;
		return 1;
	}
	filter_abort(f, s == NULL ? "unsolicited backend reply" :
	    "malformed backend reply");
	return -1;
}

static void
pop3_reply_ok(struct filter *f, unsigned kind)
{
	struct pop3	*p = f->proto;

	switch (kind) {
	case PSLOT_LOGIN:
	case PSLOT_SASL:
		pop3_enter_state(f, POP3_ST_TRANSACTION);
		pop3_reply_done(f);
		break;
	case PSLOT_MULTI:
		p->reader = POP3_RD_BODY;
		/* The status line ended with CRLF: the body starts a line. */
		p->body = POP3_BD_BOL;
		p->body_last = '\n';
		break;
	case PSLOT_CAPA:
		p->reader = POP3_RD_CAPA;
		break;
	default:
		pop3_reply_done(f);
		break;
	}
}

/* The reply at the head is complete; an AUTH exchange ends with it. */
static void
pop3_reply_done(struct filter *f)
{
	struct pop3		*p = f->proto;
	struct filter_slot	*s = filter_slot_head(f);

	if (s != NULL && s->kind == PSLOT_SASL) {
		p->auth_outstanding = false;
		p->sasl_wait = false;
	}
	p->reader = POP3_RD_STATUS;
	filter_slot_pop(f);
}

/*
 * Advance the body scanner over one chunk.  Returns 1 when the terminating
 * line ends inside it (*used: bytes up to and including its LF), 0 when
 * the whole chunk was scanned, -1 when a line start is ambiguous: a "."
 * line ended by a bare LF, ".\r" without LF, or a "." right after a bare
 * LF (clients splitting on LF and on CRLF would disagree about the end).
 * Inside lines only LF is looked for, with memchr.
 */
static int
pop3_body_scan(struct pop3 *p, const char *s, size_t len, size_t *used)
{
	const char	*lf;
	size_t		 i = 0;

	while (i < len) {
		switch (p->body) {
		case POP3_BD_MID:
			if ((lf = memchr(s + i, '\n', len - i)) == NULL) {
				p->body_last = s[len - 1];
				i = len;
				break;
			}
			p->body = (lf > s + i ? lf[-1] : p->body_last) ==
			    '\r' ? POP3_BD_BOL : POP3_BD_BOL_BARE;
			p->body_last = '\n';
			i = (size_t)(lf - s) + 1;
			break;
		case POP3_BD_BOL:
		case POP3_BD_BOL_BARE:
			if (s[i] != '.') {
				p->body = POP3_BD_MID;
				break;
			}
			if (p->body == POP3_BD_BOL_BARE)
				goto ambiguous;
			p->body = POP3_BD_DOT;
			p->body_last = s[i++];
			break;
		case POP3_BD_DOT:
			if (s[i] == '\n')
				goto ambiguous;
			if (s[i] != '\r') {
				/* "..": a stuffed line; relayed as it is. */
				p->body = POP3_BD_MID;
				break;
			}
			p->body = POP3_BD_DOTCR;
			p->body_last = s[i++];
			break;
		case POP3_BD_DOTCR:
			if (s[i] != '\n')
				goto ambiguous;
			*used = i + 1;
			return 1;
		}
	}
	*used = len;
	return 0;
ambiguous:
	*used = i;
	return -1;
}

/*
 * Relay a multi-line body as far as it has arrived, moving chains rather
 * than copying; memory stays bounded by the session's watermarks.
 */
static int
pop3_body_relay(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	struct pop3		*p = f->proto;
	struct evbuffer_iovec	 v[POP3_BODY_IOV];
	size_t			 done, used;
	int			 i, n, r = 0;

	while (r == 0 && evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, POP3_BODY_IOV);
		if (n > POP3_BODY_IOV)
			n = POP3_BODY_IOV;
		done = 0;
		for (i = 0; i < n && r == 0; i++) {
			r = pop3_body_scan(p, v[i].iov_base, v[i].iov_len,
			    &used);
			done += used;
		}
		evbuffer_remove_buffer(in, to_client, done);
	}
	if (r == -1)
		filter_abort(f, "malformed multi-line reply");
	else if (r == 1)
		pop3_reply_done(f);
	return r;
}

/*
 * One line of a CAPA body, kept or dropped by its first keyword through
 * the core matcher (SPEC section 3: split at any SP/HTAB run, any case).
 * Whatever the backend says about STLS is dropped, and ours goes just
 * before the end, so it is there exactly once, and only where we can
 * honour it: in cleartext on a STLS service.
 */
static int
pop3_capa_line(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	static const size_t	 nrules = sizeof(pop3_capa_rules) /
				    sizeof(pop3_capa_rules[0]);
	struct pop3		*p = f->proto;
	const char		*tok;
	size_t			 len, toklen, pos = 0;
	int			 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	if (len == 1 && p->line[0] == '.') {
		if (f->starttls_svc && filter_cleartext(f))
			evbuffer_add(to_client, "STLS\r\n", 6);
		evbuffer_add(to_client, ".\r\n", 3);
		pop3_reply_done(f);
		return 1;
	}
	if (filter_capa_next(p->line, len, &pos, &tok, &toklen) &&
	    filter_capa_hidden(f, pop3_capa_rules, nrules, tok, toklen))
		return 1;
	pop3_relay_line(p, len, to_client);
	return 1;
}

/* ------------------------------------------------------------------ */
/* backend_tls = starttls: our dialogue before the handshake (SPEC 12). */

static int
pop3_prelude_fail(struct filter *f, const char *why)
{
	filter_backend_ready(f, false, why);
	return -1;
}

/* A status line answering our CAPA or STLS. */
static int
pop3_prelude_reply(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct pop3		*p = f->proto;
	struct filter_slot	*s = filter_slot_head(f);
	size_t			 len;
	int			 r;
	bool			 ok;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	if (s == NULL || (s->kind != PSLOT_OWN_CAPA &&
	    s->kind != PSLOT_OWN_STLS))
		return pop3_prelude_fail(f, "unsolicited backend reply");
	ok = pop3_is_status(p->line, len, "+OK");
	if (!ok && !pop3_is_status(p->line, len, "-ERR"))
		return pop3_prelude_fail(f, "malformed backend reply");
	if (s->kind == PSLOT_OWN_CAPA) {
		/* RFC 2595 4: STLS is announced in CAPA, or not at all. */
		if (!ok)
			return pop3_prelude_fail(f,
			    "server does not offer STLS");
		p->reader = POP3_RD_OWN_CAPA;
		p->own_stls = false;
		p->own_lines = 0;
		return 1;
	}
	filter_slot_pop(f);
	if (!ok)
		return pop3_prelude_fail(f, "server refused STLS");
	/* RFC 2595 4: the +OK is the server's last cleartext. */
	filter_backend_go_ahead(f);
	(void)to_backend;
	return 1;
}

/* A line of our CAPA's reply: STLS, or the end. */
static int
pop3_prelude_capa(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct pop3	*p = f->proto;
	const char	*tok;
	size_t		 len, toklen, pos = 0;
	int		 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	if (len == 1 && p->line[0] == '.') {
		filter_slot_pop(f);
		p->reader = POP3_RD_STATUS;
		if (!p->own_stls)
			return pop3_prelude_fail(f,
			    "server does not offer STLS");
		filter_own_command(f, to_backend, PSLOT_OWN_STLS, NULL,
		    "STLS");
		return 1;
	}
	if (++p->own_lines > POP3_OWN_CAPA_LINES)
		return pop3_prelude_fail(f, "CAPA reply too long");
	if (filter_capa_next(p->line, len, &pos, &tok, &toklen) &&
	    filter_word_eq(tok, toklen, "STLS"))
		p->own_stls = true;
	return 1;
}

/*
 * The backend leg is TLS and verified: the client's greeting is ours
 * (the server's came in cleartext, and does not come again).
 */
static void
pop3_backend_tls_ready(struct filter *f, struct evbuffer *to_client,
    struct evbuffer *to_backend)
{
	(void)to_backend;
	evbuffer_add_printf(to_client, "+OK %s ready\r\n", f->hostname);
	filter_backend_ready(f, true, NULL);
}
