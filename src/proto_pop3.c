/*
 * proto_pop3.c - the POP3 filter (SPEC sections 3 and 8).
 *
 * Owns the POP3 dialogue while mailtlsd has to understand it: the
 * cleartext phase of STLS services, and every implicit-TLS session too,
 * because the proxy-authority and framing rules hold everywhere.
 *
 * Client side: one command line at a time, framed with lineio and
 * forwarded in a canonical form (upper-case keyword, single spaces).  Lines
 * a backend could read differently from us (bare LF, bare CR, NUL) are
 * answered here and never forwarded (SPEC 8.4).  Credentials never pass in
 * cleartext (SPEC 8.5); XCLIENT never passes at all.
 *
 * Backend side: the greeting, then exactly one reply per forwarded
 * command, matched through the FIFO of pending slots.  A multi-line reply
 * follows only a +OK to CAPA, RETR, TOP, and LIST, UIDL, LANG or AUTH
 * without argument (RFC 1939 section 3, RFC 2449, RFC 5034, RFC 6856);
 * its body is relayed byte-exact and scanned only for the CRLF.CRLF that
 * ends it, so message text is never taken for replies.  CAPA is rewritten
 * line by line.  Anything else from the backend closes the session.
 *
 * Invariants: our own replies leave in command order (FIFO of at most
 * FILTER_PENDING_MAX slots); "+OK Begin TLS negotiation" is written only
 * when every earlier reply has been relayed and nothing follows the STLS
 * line (SPEC 8.1, 8.2); while a SASL exchange runs, client input is held
 * so that each response line is framed exactly as the backend frames it.
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

#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "filter.h"
#include "proto.h"
#include "util.h"

/* Refused command lines before the session is dropped (nginx, Postfix). */
#define POP3_MAX_ERRORS		10
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
#define POP3_R_NOPERM	"-ERR Command not permitted\r\n"
#define POP3_R_CLEAR	"-ERR [AUTH] Plaintext authentication disallowed " \
			"on non-secure connection, use STLS first\r\n"
#define POP3_R_TLSUP	"-ERR TLS already active\r\n"
#define POP3_R_NOTLS	"-ERR STLS not available\r\n"
#define POP3_R_STATE	"-ERR STLS not permitted after authentication\r\n"
#define POP3_R_ERRORS	"-ERR Too many errors\r\n"
#define POP3_R_UNAVAIL	"-ERR [SYS/TEMP] Service temporarily unavailable\r\n"

enum pop3_state {
	POP3_ST_GREETING = 0,	/* waiting for the backend's greeting */
	POP3_ST_AUTHORIZATION,
	POP3_ST_TRANSACTION,	/* after +OK to PASS, APOP or AUTH */
	POP3_ST_CLOSED,		/* FILTER_CLOSE returned */
};

/* What the backend is sending now. */
enum pop3_reader {
	POP3_RD_STATUS = 0,	/* a status line (greeting or reply) */
	POP3_RD_BODY,		/* a multi-line body, relayed as is */
	POP3_RD_CAPA,		/* a CAPA body, rewritten line by line */
};

/* Where the body scanner is relative to the line structure. */
enum pop3_body {
	POP3_BD_BOL = 0,	/* after CRLF */
	POP3_BD_BOL_BARE,	/* after a bare LF */
	POP3_BD_MID,		/* inside a line */
	POP3_BD_DOT,		/* "." at the start of a line */
	POP3_BD_DOTCR,		/* ".\r" at the start of a line */
};

/* How a +OK reply to a command is framed. */
enum pop3_framing {
	POP3_FR_SINGLE = 0,
	POP3_FR_MULTI,
	POP3_FR_CAPA,
};

/* Command table flags. */
#define PC_CREDENTIALS	0x01	/* refused in cleartext (SPEC 8.5) */
#define PC_AUTHORITY	0x02	/* proxy authority: refused everywhere */
#define PC_STLS		0x04	/* answered here */
#define PC_NOARGS	0x08	/* arguments: -ERR here */
#define PC_RAWARGS	0x10	/* rest of the line is one argument (PASS) */
#define PC_LOGIN	0x20	/* +OK with an argument ends AUTHORIZATION */
#define PC_SASL		0x40	/* with an argument: a SASL exchange */
#define PC_QUIT		0x80	/* nothing is read after it */

struct pop3_cmd {
	const char		*verb;
	unsigned		 flags;
	enum pop3_framing	 ok_args;	/* +OK with arguments */
	enum pop3_framing	 ok_noargs;	/* +OK without */
};

static const struct pop3_cmd pop3_cmds[] = {
	{ "CAPA",	PC_NOARGS,	POP3_FR_SINGLE,	POP3_FR_CAPA },
	{ "STLS",	PC_STLS,	POP3_FR_SINGLE,	POP3_FR_SINGLE },
	{ "USER",	PC_CREDENTIALS | PC_RAWARGS,
					POP3_FR_SINGLE,	POP3_FR_SINGLE },
	{ "PASS",	PC_CREDENTIALS | PC_RAWARGS | PC_LOGIN,
					POP3_FR_SINGLE,	POP3_FR_SINGLE },
	{ "APOP",	PC_CREDENTIALS | PC_LOGIN,
					POP3_FR_SINGLE,	POP3_FR_SINGLE },
	/* "AUTH" alone lists mechanisms (old-style SASL discovery). */
	{ "AUTH",	PC_CREDENTIALS | PC_LOGIN | PC_SASL,
					POP3_FR_SINGLE,	POP3_FR_MULTI },
	{ "XCLIENT",	PC_AUTHORITY,	POP3_FR_SINGLE,	POP3_FR_SINGLE },
	{ "LIST",	0,		POP3_FR_SINGLE,	POP3_FR_MULTI },
	{ "UIDL",	0,		POP3_FR_SINGLE,	POP3_FR_MULTI },
	{ "LANG",	0,		POP3_FR_SINGLE,	POP3_FR_MULTI },
	{ "RETR",	0,		POP3_FR_MULTI,	POP3_FR_MULTI },
	{ "TOP",	0,		POP3_FR_MULTI,	POP3_FR_MULTI },
	{ "QUIT",	PC_QUIT,	POP3_FR_SINGLE,	POP3_FR_SINGLE },
};

/* Every other keyword: forwarded, single-line reply. */
static const struct pop3_cmd pop3_cmd_other = {
	NULL, 0, POP3_FR_SINGLE, POP3_FR_SINGLE
};

/* CAPA lines removed (RFC 2449 names; SPEC section 3). */
#define PK_ALWAYS	0x01
#define PK_CLEARTEXT	0x02

static const struct pop3_capa_rule {
	const char	*name;
	unsigned	 when;
} pop3_capa_rules[] = {
	/* Ours to advertise, and only in cleartext on STLS services. */
	{ "STLS",	PK_ALWAYS },
	/* Not a client's command: never advertise it. */
	{ "XCLIENT",	PK_ALWAYS },
	/* Credentials are refused in cleartext: do not offer them. */
	{ "USER",	PK_CLEARTEXT },
	{ "SASL",	PK_CLEARTEXT },
};

/* Slot flags. */
#define PS_LOGIN	0x01	/* +OK enters TRANSACTION */
#define PS_SASL		0x02	/* "+" continuations may answer */
#define PS_CLOSE	0x04	/* local reply after which we close */

struct pop3_slot {
	const char		*local;		/* our reply; NULL: backend's */
	enum pop3_framing	 framing;	/* of a +OK from the backend */
	unsigned		 flags;
};

struct pop3 {
	enum pop3_state		 state;
	enum pop3_reader	 reader;
	enum pop3_body		 body;
	char			 body_last;	/* last body byte scanned */
	bool			 starttls_service;
	bool			 tls_active;
	bool			 stls_wait;	/* STLS read, earlier replies due */
	bool			 skipping;	/* rest of an over-long line */
	bool			 closing;	/* PS_CLOSE slot queued */
	bool			 quit_sent;
	bool			 auth_outstanding;	/* SASL AUTH in the FIFO */
	bool			 sasl_wait;	/* next client line: response */
	unsigned		 errors;
	const char		*reason;

	struct pop3_slot	 fifo[FILTER_PENDING_MAX];
	size_t			 head;
	size_t			 count;

	size_t			 line_max;	/* client lines */
	size_t			 bline_max;	/* backend lines */
	char			*line;		/* max of both + 2 */
	size_t			 linesz;
	char			 sid[32];
	char			 addr[UTIL_ADDRPORTSTRLEN];
};

static struct pop3	*pop3_filter_new(const struct filter_params *);
static void		 pop3_filter_free(struct pop3 *);
static enum filter_verdict pop3_client_input(struct pop3 *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static enum filter_verdict pop3_backend_input(struct pop3 *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static const char	*pop3_reason(const struct pop3 *);
static void		 pop3_unavailable(struct evbuffer *, const char *);

static const char	*pop3_state_name(enum pop3_state);
static void		 pop3_enter_state(struct pop3 *, enum pop3_state);
static void		 pop3_close(struct pop3 *, const char *);

static struct pop3_slot	*pop3_fifo_head(struct pop3 *);
static void		 pop3_fifo_push(struct pop3 *, const char *,
			    enum pop3_framing, unsigned);
static void		 pop3_fifo_pop(struct pop3 *);
static void		 pop3_flush(struct pop3 *, struct evbuffer *);

static void		 pop3_refuse(struct pop3 *, const char *);
static int		 pop3_client_line(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);
static const char	*pop3_check_line(size_t, unsigned);
static const struct pop3_cmd *pop3_cmd_find(char *, size_t);
static size_t		 pop3_canon_args(char *, size_t, unsigned);
static const char	*pop3_check_command(struct pop3 *,
			    const struct pop3_cmd *, size_t);
static const char	*pop3_check_stls(struct pop3 *, size_t);
static void		 pop3_do_forward(struct pop3 *,
			    const struct pop3_cmd *, const char *, size_t,
			    const char *, size_t, struct evbuffer *);
static enum filter_verdict pop3_do_stls(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_sasl_response(struct pop3 *,
			    struct evbuffer *, struct evbuffer *);

static int		 pop3_backend_line(struct pop3 *, struct evbuffer *,
			    size_t *);
static bool		 pop3_is_status(const char *, size_t, const char *);
static size_t		 pop3_greeting_strip(char *, size_t);
static int		 pop3_greeting(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);
static int		 pop3_reply(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);
static void		 pop3_reply_ok(struct pop3 *, struct pop3_slot *);
static int		 pop3_body_scan(struct pop3 *, const char *, size_t,
			    size_t *);
static int		 pop3_body_relay(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);
static bool		 pop3_capa_drop(const struct pop3 *, const char *,
			    size_t);
static int		 pop3_capa_line(struct pop3 *, struct evbuffer *,
			    struct evbuffer *);

/* proto_pop3_ops: at the end of the file. */

/* ------------------------------------------------------------------ */
/* Life cycle and state. */

static struct pop3 *
pop3_filter_new(const struct filter_params *fp)
{
	struct pop3	*f;
	size_t		 max;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->line_max = fp->svc->max_line_length ? fp->svc->max_line_length :
	    DEFAULT_POP3_LINE_MAX;
	/* A short client limit must not break long backend greetings. */
	f->bline_max = f->line_max > DEFAULT_POP3_LINE_MAX ? f->line_max :
	    DEFAULT_POP3_LINE_MAX;
	max = f->bline_max;
	f->linesz = max + 2;
	if ((f->line = malloc(f->linesz)) == NULL) {
		free(f);
		return NULL;
	}
	f->starttls_service = fp->svc->tls_mode == TLS_MODE_STARTTLS;
	f->tls_active = fp->tls_active;
	f->reason = "closed";
	util_strlcpy(f->sid, fp->session_id ? fp->session_id : "-",
	    sizeof(f->sid));
	util_strlcpy(f->addr, fp->client_addr ? fp->client_addr : "-",
	    sizeof(f->addr));
	return f;
}

static void
pop3_filter_free(struct pop3 *f)
{
	if (f == NULL)
		return;
	free(f->line);
	free(f);
}

static const char *
pop3_reason(const struct pop3 *f)
{
	return f->reason;
}

static void
pop3_unavailable(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, POP3_R_UNAVAIL, strlen(POP3_R_UNAVAIL));
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
	case POP3_ST_CLOSED:
		return "CLOSED";
	}
	return "?";
}

static void
pop3_enter_state(struct pop3 *f, enum pop3_state st)
{
	if (f->state == st)
		return;
	log_debug("%s: pop3 %s -> %s", f->sid, pop3_state_name(f->state),
	    pop3_state_name(st));
	f->state = st;
}

/* The session ends once to_client is flushed (FILTER_CLOSE from now on). */
static void
pop3_close(struct pop3 *f, const char *reason)
{
	if (f->state != POP3_ST_CLOSED) {
		f->reason = reason;
		pop3_enter_state(f, POP3_ST_CLOSED);
	}
}

/* ------------------------------------------------------------------ */
/* The FIFO of pending replies. */

static struct pop3_slot *
pop3_fifo_head(struct pop3 *f)
{
	return f->count ? &f->fifo[f->head] : NULL;
}

/*
 * Callers read a command line only while a slot is free, and every line
 * takes exactly one slot, so the FIFO cannot overflow.
 */
static void
pop3_fifo_push(struct pop3 *f, const char *local, enum pop3_framing fr,
    unsigned flags)
{
	struct pop3_slot	*s;

	if (f->count == FILTER_PENDING_MAX)
		fatalx("%s: pop3 reply FIFO overflow", f->sid);
	s = &f->fifo[(f->head + f->count) % FILTER_PENDING_MAX];
	s->local = local;
	s->framing = fr;
	s->flags = flags;
	f->count++;
}

static void
pop3_fifo_pop(struct pop3 *f)
{
	if (f->fifo[f->head].flags & PS_SASL) {
		f->auth_outstanding = false;
		f->sasl_wait = false;
	}
	f->head = (f->head + 1) % FILTER_PENDING_MAX;
	f->count--;
}

/*
 * Write our own replies that have reached the head of the FIFO: every
 * earlier command has been answered, so they keep their place.
 */
static void
pop3_flush(struct pop3 *f, struct evbuffer *to_client)
{
	struct pop3_slot	*s;

	while ((s = pop3_fifo_head(f)) != NULL && s->local != NULL) {
		evbuffer_add(to_client, s->local, strlen(s->local));
		if (s->flags & PS_CLOSE)
			pop3_close(f, "too many errors");
		pop3_fifo_pop(f);
	}
}

/* ------------------------------------------------------------------ */
/* Client side. */

/*
 * Answer a command line here.  Callers checked that a slot is free.  The
 * error limit replaces the reply that reaches it, so every command still
 * gets exactly one reply, and the session ends after it.
 */
static void
pop3_refuse(struct pop3 *f, const char *reply)
{
	if (++f->errors >= POP3_MAX_ERRORS) {
		log_warnx("%s: client %s: too many errors", f->sid, f->addr);
		f->closing = true;
		pop3_fifo_push(f, POP3_R_ERRORS, POP3_FR_SINGLE, PS_CLOSE);
		return;
	}
	pop3_fifo_push(f, reply, POP3_FR_SINGLE, 0);
}

/*
 * Read client lines while nothing forces a hold: the greeting, a STLS
 * waiting for earlier replies, a running SASL exchange, QUIT, a full FIFO.
 */
static enum filter_verdict
pop3_client_input(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	int	 r;

	for (;;) {
		pop3_flush(f, to_client);
		if (f->state == POP3_ST_CLOSED)
			return FILTER_CLOSE;
		/* Commands wait for the greeting, like a conforming client. */
		if (f->state == POP3_ST_GREETING)
			return FILTER_CONTINUE;
		if (f->stls_wait)
			return pop3_do_stls(f, in, to_client);
		if (f->skipping) {
			if (lineio_skip(in) == 0)
				return FILTER_CONTINUE;
			f->skipping = false;
			continue;
		}
		if (f->closing || f->quit_sent)
			return FILTER_CONTINUE;
		if (f->sasl_wait)
			r = pop3_sasl_response(f, in, to_backend);
		else if (f->auth_outstanding ||
		    f->count == FILTER_PENDING_MAX)
			return FILTER_CONTINUE;	/* the backend decides next */
		else
			r = pop3_client_line(f, in, to_backend);
		if (r == 0)
			return FILTER_CONTINUE;
	}
}

/*
 * Frame one command line and act on it: 1 if a line was taken (or an
 * over-long one refused), 0 if no complete line is there yet.
 */
static int
pop3_client_line(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	const struct pop3_cmd	*cmd;
	const char		*err;
	char			*sp, *args = NULL;
	size_t			 len, verblen, argslen = 0;
	unsigned		 flags;

	switch (lineio_get(in, f->line_max, f->line, f->linesz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		f->skipping = true;
		pop3_refuse(f, POP3_R_TOOLONG);
		return 1;
	case LINEIO_LINE:
		break;
	}
	if ((err = pop3_check_line(len, flags)) != NULL) {
		pop3_refuse(f, err);
		return 1;
	}
	sp = memchr(f->line, ' ', len);
	verblen = sp ? (size_t)(sp - f->line) : len;
	if ((cmd = pop3_cmd_find(f->line, verblen)) == NULL) {
		pop3_refuse(f, POP3_R_SYNTAX);
		return 1;
	}
	if (sp != NULL) {
		args = sp + 1;
		argslen = pop3_canon_args(args, len - verblen - 1, cmd->flags);
	}
	if ((err = pop3_check_command(f, cmd, argslen)) != NULL)
		pop3_refuse(f, err);
	else if (cmd->flags & PC_STLS)
		f->stls_wait = true;	/* pop3_do_stls() decides */
	else
		pop3_do_forward(f, cmd, f->line, verblen, args, argslen,
		    to_backend);
	return 1;
}

/* SPEC 8.4: what a backend might frame differently is never passed on. */
static const char *
pop3_check_line(size_t len, unsigned flags)
{
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return POP3_R_BADCHAR;
	if (len == 0)
		return POP3_R_EMPTY;
	return NULL;
}

/*
 * Look the keyword up; NULL if it is not a keyword at all (RFC 1939:
 * printable characters; we take letters and digits only, which every
 * known command uses, so nothing odd reaches the backend).  The keyword
 * is upper-cased in place: that is the canonical form forwarded.
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
		if (util_word_eq(v, len, pop3_cmds[i].verb))
			return &pop3_cmds[i];
	return &pop3_cmd_other;
}

/*
 * Canonical arguments, in place: runs of spaces become one, none lead or
 * trail, so "LIST " is LIST without argument for us and for the backend
 * alike (that decides whether a multi-line reply follows).  PASS and USER
 * keep the rest of the line as their single argument (RFC 1939 PASS
 * notes), spaces included.  Returns the new length.
 */
static size_t
pop3_canon_args(char *args, size_t len, unsigned flags)
{
	size_t	 i, o = 0;

	if (flags & PC_RAWARGS)
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

/* Policy for a well-formed command; NULL lets it through. */
static const char *
pop3_check_command(struct pop3 *f, const struct pop3_cmd *cmd,
    size_t argslen)
{
	if (cmd->flags & PC_AUTHORITY) {
		/* A client must never speak with mailtlsd's authority. */
		log_warnx("%s: client %s: %s refused", f->sid, f->addr,
		    cmd->verb);
		return POP3_R_NOPERM;
	}
	if (cmd->flags & PC_STLS)
		return pop3_check_stls(f, argslen);
	if ((cmd->flags & PC_CREDENTIALS) && !f->tls_active) {
		/* SPEC 8.5: the verb only, never what follows it. */
		log_warnx("%s: client %s: %s in cleartext refused", f->sid,
		    f->addr, cmd->verb);
		return POP3_R_CLEAR;
	}
	if ((cmd->flags & PC_NOARGS) && argslen > 0)
		return POP3_R_SYNTAX;
	return NULL;
}

/*
 * STLS (RFC 2595 section 4): only in AUTHORIZATION state, only once, only
 * on a STLS service, and without arguments.
 */
static const char *
pop3_check_stls(struct pop3 *f, size_t argslen)
{
	if (f->tls_active)
		return POP3_R_TLSUP;
	if (!f->starttls_service)
		return POP3_R_NOTLS;
	if (f->state != POP3_ST_AUTHORIZATION)
		return POP3_R_STATE;
	if (argslen > 0)
		return POP3_R_SYNTAX;
	return NULL;
}

static void
pop3_do_forward(struct pop3 *f, const struct pop3_cmd *cmd,
    const char *verb, size_t verblen, const char *args, size_t argslen,
    struct evbuffer *to_backend)
{
	enum pop3_framing	 fr;
	unsigned		 sf = 0;

	fr = argslen ? cmd->ok_args : cmd->ok_noargs;
	if ((cmd->flags & PC_LOGIN) && argslen)
		sf |= PS_LOGIN;
	if ((cmd->flags & PC_SASL) && argslen) {
		sf |= PS_SASL;
		f->auth_outstanding = true;
	}
	if (cmd->flags & PC_QUIT)
		f->quit_sent = true;
	pop3_fifo_push(f, NULL, fr, sf);
	evbuffer_add(to_backend, verb, verblen);
	if (argslen) {
		evbuffer_add(to_backend, " ", 1);
		evbuffer_add(to_backend, args, argslen);
	}
	evbuffer_add(to_backend, "\r\n", 2);
}

/*
 * The STLS switch (SPEC 3, 8.1, 8.2).  Bytes after the STLS line were
 * sent in cleartext before the client could know TLS would start: they
 * are an injection attempt (CVE-2011-0411 class) or a broken client, and
 * executing them inside TLS would trust cleartext.  So they close the
 * session, whenever they show up before the go-ahead.  The go-ahead itself
 * waits until every earlier reply has been relayed, so that it is the last
 * cleartext byte the client receives.
 */
static enum filter_verdict
pop3_do_stls(struct pop3 *f, struct evbuffer *in, struct evbuffer *to_client)
{
	if (evbuffer_get_length(in) > 0) {
		log_warnx("%s: client %s: pipelined data after STLS, closing",
		    f->sid, f->addr);
		pop3_close(f, "pipelined data after STLS");
		return FILTER_CLOSE;
	}
	if (f->count > 0)
		return FILTER_CONTINUE;
	f->stls_wait = false;
	f->tls_active = true;
	/* SPEC 8.3: nothing of the cleartext dialogue survives. */
	f->errors = 0;
	evbuffer_add(to_client, POP3_R_STLS_GO, strlen(POP3_R_STLS_GO));
	log_debug("%s: pop3 STLS go-ahead", f->sid);
	return FILTER_STARTTLS;
}

/*
 * One SASL response line (RFC 5034 section 4): forwarded unparsed and
 * never logged.  A line we cannot frame unambiguously is replaced by "*",
 * which cancels the exchange, so that the backend still sees exactly one
 * response and answers -ERR in the right place.
 */
static int
pop3_sasl_response(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	size_t		 len;
	unsigned	 flags;

	switch (lineio_get(in, f->line_max, f->line, f->linesz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		f->skipping = true;
		evbuffer_add(to_backend, "*\r\n", 3);
		break;
	case LINEIO_LINE:
		if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
			evbuffer_add(to_backend, "*\r\n", 3);
		else {
			evbuffer_add(to_backend, f->line, len);
			evbuffer_add(to_backend, "\r\n", 2);
		}
		break;
	}
	f->sasl_wait = false;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Backend side. */

/*
 * One backend line into f->line: 1 got one, 0 need more, -1 malformed.  A
 * backend that cannot end its lines with CRLF is not one we can frame.
 */
static int
pop3_backend_line(struct pop3 *f, struct evbuffer *in, size_t *len)
{
	unsigned	 flags;

	switch (lineio_get(in, f->bline_max, f->line, f->linesz, len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		pop3_close(f, "backend line too long");
		return -1;
	case LINEIO_LINE:
		break;
	}
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL)) {
		pop3_close(f, "malformed backend reply");
		return -1;
	}
	return 1;
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
 * Each step below returns 1 after a complete unit (a line, the end of a
 * body), 0 when it needs more bytes, -1 when it closed the session.
 */
static enum filter_verdict
pop3_backend_input(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	int	 r;

	(void)to_backend;
	for (;;) {
		pop3_flush(f, to_client);
		if (f->state == POP3_ST_CLOSED)
			return FILTER_CLOSE;
		if (evbuffer_get_length(in) == 0)
			return FILTER_CONTINUE;
		if (f->state == POP3_ST_GREETING)
			r = pop3_greeting(f, in, to_client);
		else if (f->reader == POP3_RD_BODY)
			r = pop3_body_relay(f, in, to_client);
		else if (f->reader == POP3_RD_CAPA)
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
pop3_greeting(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	size_t	 len;
	int	 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	if (pop3_is_status(f->line, len, "+OK")) {
		len = pop3_greeting_strip(f->line, len);
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
		pop3_enter_state(f, POP3_ST_AUTHORIZATION);
		return 1;
	}
	if (pop3_is_status(f->line, len, "-ERR")) {
		/* The backend turns us away: the client hears why. */
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
		pop3_close(f, "backend refused the session");
	} else
		pop3_close(f, "malformed backend greeting");
	return -1;
}

/*
 * A status line: the reply to the command at the head of the FIFO.  With
 * nothing pending, only a -ERR makes sense (a backend announcing that it
 * disconnects, e.g. on its idle timeout); it is passed on and we close.
 */
static int
pop3_reply(struct pop3 *f, struct evbuffer *in, struct evbuffer *to_client)
{
	struct pop3_slot	*s;
	size_t			 len;
	int			 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	s = pop3_fifo_head(f);
	if (pop3_is_status(f->line, len, "-ERR")) {
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
		if (s == NULL) {
			pop3_close(f, "backend ended the session");
			return -1;
		}
		pop3_fifo_pop(f);
		return 1;
	}
	if (s != NULL && pop3_is_status(f->line, len, "+OK")) {
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
		pop3_reply_ok(f, s);
		return 1;
	}
	/* RFC 5034: "+" SP [base64], only while AUTH runs, one per response. */
	if (s != NULL && (s->flags & PS_SASL) && !f->sasl_wait &&
	    f->line[0] == '+' && (len == 1 || f->line[1] == ' ')) {
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
		f->sasl_wait = true;
		return 1;
	}
	pop3_close(f, s == NULL ? "unsolicited backend reply" :
	    "malformed backend reply");
	return -1;
}

static void
pop3_reply_ok(struct pop3 *f, struct pop3_slot *s)
{
	if (s->flags & PS_LOGIN)
		pop3_enter_state(f, POP3_ST_TRANSACTION);
	switch (s->framing) {
	case POP3_FR_SINGLE:
		pop3_fifo_pop(f);
		break;
	case POP3_FR_MULTI:
		f->reader = POP3_RD_BODY;
		/* The status line ended with CRLF: the body starts a line. */
		f->body = POP3_BD_BOL;
		f->body_last = '\n';
		break;
	case POP3_FR_CAPA:
		f->reader = POP3_RD_CAPA;
		break;
	}
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
pop3_body_scan(struct pop3 *f, const char *p, size_t len, size_t *used)
{
	const char	*lf;
	size_t		 i = 0;

	while (i < len) {
		switch (f->body) {
		case POP3_BD_MID:
			if ((lf = memchr(p + i, '\n', len - i)) == NULL) {
				f->body_last = p[len - 1];
				i = len;
				break;
			}
			f->body = (lf > p + i ? lf[-1] : f->body_last) ==
			    '\r' ? POP3_BD_BOL : POP3_BD_BOL_BARE;
			f->body_last = '\n';
			i = (size_t)(lf - p) + 1;
			break;
		case POP3_BD_BOL:
		case POP3_BD_BOL_BARE:
			if (p[i] != '.') {
				f->body = POP3_BD_MID;
				break;
			}
			if (f->body == POP3_BD_BOL_BARE)
				goto ambiguous;
			f->body = POP3_BD_DOT;
			f->body_last = p[i++];
			break;
		case POP3_BD_DOT:
			if (p[i] == '\n')
				goto ambiguous;
			if (p[i] != '\r') {
				/* "..": a stuffed line; relayed as it is. */
				f->body = POP3_BD_MID;
				break;
			}
			f->body = POP3_BD_DOTCR;
			f->body_last = p[i++];
			break;
		case POP3_BD_DOTCR:
			if (p[i] != '\n')
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
pop3_body_relay(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	struct evbuffer_iovec	 v[POP3_BODY_IOV];
	size_t			 done, used;
	int			 i, n, r = 0;

	while (r == 0 && evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, POP3_BODY_IOV);
		if (n > POP3_BODY_IOV)
			n = POP3_BODY_IOV;
		done = 0;
		for (i = 0; i < n && r == 0; i++) {
			r = pop3_body_scan(f, v[i].iov_base, v[i].iov_len,
			    &used);
			done += used;
		}
		evbuffer_remove_buffer(in, to_client, done);
	}
	if (r == -1)
		pop3_close(f, "malformed multi-line reply");
	else if (r == 1) {
		f->reader = POP3_RD_STATUS;
		pop3_fifo_pop(f);
	}
	return r;
}

/* Whether a CAPA line goes, by its first word (RFC 2449 section 6). */
static bool
pop3_capa_drop(const struct pop3 *f, const char *line, size_t len)
{
	const char	*sp = memchr(line, ' ', len);
	size_t		 n = sp ? (size_t)(sp - line) : len, i;

	for (i = 0; i < sizeof(pop3_capa_rules) / sizeof(pop3_capa_rules[0]);
	    i++) {
		if (!util_word_eq(line, n, pop3_capa_rules[i].name))
			continue;
		if (pop3_capa_rules[i].when == PK_ALWAYS || !f->tls_active)
			return true;
	}
	return false;
}

/*
 * One line of a CAPA body.  Whatever the backend says about STLS is
 * dropped, and ours goes just before the end, so it is there exactly once,
 * and only where we can honour it: in cleartext on a STLS service.
 */
static int
pop3_capa_line(struct pop3 *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	size_t	 len;
	int	 r;

	if ((r = pop3_backend_line(f, in, &len)) <= 0)
		return r;
	if (len == 1 && f->line[0] == '.') {
		if (f->starttls_service && !f->tls_active)
			evbuffer_add(to_client, "STLS\r\n", 6);
		evbuffer_add(to_client, ".\r\n", 3);
		f->reader = POP3_RD_STATUS;
		pop3_fifo_pop(f);
		return 1;
	}
	if (!pop3_capa_drop(f, f->line, len)) {
		evbuffer_add(to_client, f->line, len);
		evbuffer_add(to_client, "\r\n", 2);
	}
	return 1;
}

/* ---------------------------------------------------------------------- */
/* The filter core's view of this protocol (filter.h). */

static void *
pop3_op_init(struct filter *core, const struct filter_params *p)
{
	(void)core;
	return pop3_filter_new(p);
}

static void
pop3_op_free(void *state)
{
	pop3_filter_free(state);
}

static enum filter_verdict
pop3_op_verdict(struct filter *core, enum filter_verdict v)
{
	if (v == FILTER_CLOSE && core->reason == NULL)
		core->reason = pop3_reason(core->proto);
	return v;
}

static enum filter_verdict
pop3_op_client_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	return pop3_op_verdict(core, pop3_client_input(core->proto, in,
	    to_backend, to_client));
}

static enum filter_verdict
pop3_op_backend_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	return pop3_op_verdict(core, pop3_backend_input(core->proto, in,
	    to_client, to_backend));
}

static void
pop3_op_tls_reset(struct filter *core, struct evbuffer *to_backend)
{
	(void)core;
	(void)to_backend;
}

static void
pop3_op_last_word(const struct filter *f, char *buf, size_t len)
{
	(void)f;
	snprintf(buf, len, "%s", POP3_R_ERRORS);
}

const struct proto_ops proto_pop3_ops = {
	.name = "pop3",
	.alpn = "pop3",
	.init = pop3_op_init,
	.free = pop3_op_free,
	.client_input = pop3_op_client_input,
	.backend_input = pop3_op_backend_input,
	.tls_reset = pop3_op_tls_reset,
	.last_word = pop3_op_last_word,
	.unavailable = pop3_unavailable,
};
