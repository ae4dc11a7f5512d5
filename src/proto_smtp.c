/*
 * proto_smtp.c - the SMTP filter (SPEC sections 3 and 8).
 *
 * Runs for the whole relayed dialogue of an SMTP service: the cleartext
 * phase of a STARTTLS service, the same session after the upgrade, and
 * implicit TLS services (tls_active from the start).  It owns the framing
 * of the client stream (command lines, SASL responses, DATA content up to
 * CRLF.CRLF, BDAT chunks by count), the order of replies (a FIFO of slots,
 * one per command forwarded or answered here), the assembly and rewriting
 * of backend replies (EHLO keywords), and the STARTTLS boundary.
 *
 * Invariants:
 *  - A client byte reaches the backend only once framed.  Command lines go
 *    out as their text plus CRLF; a line with a bare LF ending, a CR inside
 *    or a NUL is refused with 500 and never forwarded (SPEC 8.4).
 *  - DATA content ends only at CRLF "." CRLF exactly as received.  Bare LF
 *    and bare CR become CRLF (or the message is refused), and a "." line
 *    touching a bare newline is sent dot-stuffed, so the backend can find
 *    no other end of DATA (SMTP smuggling, CVE-2023-51764 class).
 *  - The STARTTLS go-ahead is written only once every earlier command has
 *    been answered and nothing follows the command in the client buffer
 *    (CVE-2011-0411 class); then the backend gets RSET (reply swallowed)
 *    and the client must EHLO again (SPEC 8.1-8.3).
 *  - In cleartext AUTH is neither forwarded nor advertised, so the backend
 *    never prompts for credentials (SPEC 8.5).  XCLIENT/XFORWARD are never
 *    forwarded from a client, in any state.
 *  - BDAT is forwarded only when the backend's last EHLO reply advertised
 *    CHUNKING: a backend without it reads the chunk as command lines that
 *    we never framed as such (SPEC 8.4).  Otherwise BDAT is answered here
 *    and its chunk skipped by count, as a CHUNKING server would.
 *  - A backend reply is delivered only when it answers a pending slot;
 *    anything else is unsolicited and ends the session (SPEC 8.2).
 *
 * RFCs: 5321 (SMTP), 3207 (STARTTLS), 4954 (AUTH), 2920 (PIPELINING),
 * 3030 (CHUNKING), 3463 (enhanced status codes).
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "filter.h"
#include "proto.h"
#include "util.h"

/*
 * Limits of this filter.  Refused commands before the session is dropped
 * (Postfix smtpd_hard_error_limit, smaller: a client that keeps tripping
 * on our rules is probing them).  Lines and bytes of one backend reply,
 * which is assembled before it is delivered.  SASL responses may be longer
 * than command lines (RFC 4954 section 4: 12288 octets).
 */
#define SMTP_ERRORS_MAX		10
#define SMTP_REPLY_LINES_MAX	256
#define SMTP_REPLY_BYTES_MAX	(64 * 1024)
#define SMTP_SASL_LINE_MAX	12288
#define SMTP_BDAT_DIGITS_MAX	18	/* always fits in uint64_t */
#define SMTP_DATA_IOV		16	/* DATA is scanned this many chunks a go */
/* Client slots, plus the greeting or our RSET, plus a 421 after a refusal. */
#define SMTP_SLOTS		(FILTER_PENDING_MAX + 2)

/*
 * Replies mailtlsd writes itself.  500/5.5.2 for lines we cannot frame:
 * RFC 5321 4.2.4 "syntax error, command unrecognized", RFC 3463 X.5.2
 * "syntax error"; a backend would give the same class of answer.
 */
#define R_SYNTAX	"500 5.5.2 Syntax error\r\n"
#define R_TOO_LONG	"500 5.5.2 Line too long\r\n"
#define R_ARGS		"501 5.5.4 Syntax error\r\n"
#define R_TLS_ACTIVE	"503 5.5.1 TLS already active\r\n"
#define R_IN_TXN	"503 5.5.1 MAIL transaction in progress\r\n"
#define R_EHLO_FIRST	"503 5.5.1 Send EHLO first\r\n"
#define R_NO_TLS	"454 4.7.0 TLS not available\r\n"
#define R_GO_AHEAD	"220 2.0.0 Ready to start TLS\r\n"
#define R_ENCRYPT	"538 5.7.11 Encryption required for requested " \
			"authentication mechanism\r\n"
#define R_TLS_FIRST	"530 5.7.0 Must issue a STARTTLS command first\r\n"
#define R_NOT_PERMITTED	"550 5.7.0 Command not permitted\r\n"
#define R_BARE_NEWLINE	"550 5.6.0 Bare LF/CR in message refused\r\n"
#define R_NO_CHUNKING	"502 5.5.1 Command not implemented\r\n"

enum smtp_state {
	SMTP_ST_CMD = 0,	/* client bytes are command lines */
	SMTP_ST_SKIP,		/* discarding the rest of an over-long line */
	SMTP_ST_DATA_WAIT,	/* DATA sent: hold until 354 or not */
	SMTP_ST_DATA,		/* message content up to CRLF.CRLF */
	SMTP_ST_BDAT,		/* bdat_left bytes of a chunk */
	SMTP_ST_AUTH_WAIT,	/* AUTH or SASL response sent: hold */
	SMTP_ST_SASL,		/* the next line is a SASL response */
	SMTP_ST_STARTTLS_WAIT,	/* STARTTLS waits for earlier replies */
	SMTP_ST_QUIT,		/* QUIT sent: nothing more is read */
	SMTP_ST_CLOSING,	/* a final reply is queued: nothing is read */
};

/* What the slot at the head of the FIFO waits for. */
enum smtp_slot_kind {
	SLOT_GREETING = 0,
	SLOT_EHLO,
	SLOT_HELO,
	SLOT_MAIL,
	SLOT_RSET,
	SLOT_DATA,
	SLOT_DATA_END,
	SLOT_BDAT,
	SLOT_BDAT_LAST,
	SLOT_AUTH,		/* AUTH or a SASL response */
	SLOT_QUIT,
	SLOT_OTHER,
	SLOT_SWALLOW,		/* our RSET after STARTTLS: reply not delivered */
	SLOT_LOCAL,		/* our reply, written when it reaches the head */
	SLOT_LOCAL_CLOSE,	/* the same, then the session ends */
	SLOT_STARTTLS,		/* decided by client_input at the head */
};

struct smtp_slot {
	enum smtp_slot_kind	 kind;
	const char		*reply;		/* SLOT_LOCAL* only */
};

/* Where DATA content stands between two bytes (see smtp_data_scan()). */
enum smtp_data_state {
	D_BOL = 0,	/* line start after a real CRLF (or the DATA line) */
	D_BOLX,		/* line start after a bare LF or bare CR */
	D_MID,		/* inside a line */
	D_CR,		/* inside a line, a CR held back */
	D_DOT,		/* "." held back after D_BOL */
	D_DOTCR,	/* ".\r" held back after D_BOL */
	D_DOTX,		/* "." held back after D_BOLX */
	D_DOTXCR,	/* ".\r" held back after D_BOLX */
};

/* What ends a skipped over-long line. */
enum smtp_skip_then {
	SKIP_THEN_CMD = 0,	/* back to commands (500 already queued) */
	SKIP_THEN_SASL_CANCEL,	/* cancel the SASL exchange with "*" */
};

struct smtp {
	const char		*sid;
	const char		*addr;
	const char		*hostname;
	size_t			 line_max;	/* command and reply lines */
	size_t			 sasl_max;	/* SASL response lines */
	char			*buf;		/* one line, NUL-terminated */
	size_t			 bufsz;
	enum smtp_state		 state;
	bool			 tls;		/* TLS active on the client leg */
	bool			 starttls_svc;	/* tls_mode = starttls */
	bool			 require_tls;	/* require_starttls applies */
	bool			 reject_bare;	/* smtp_bare_newline = reject */
	bool			 upgraded;	/* STARTTLS happened */
	bool			 need_ehlo;	/* new session, no EHLO yet */
	bool			 ehlo_done;	/* an EHLO/HELO got 2xx since */
	bool			 in_txn;	/* MAIL accepted, not ended */
	bool			 chunking;	/* last EHLO reply had CHUNKING */
	bool			 closing;	/* FILTER_CLOSE from now on */
	unsigned		 errors;	/* refused commands */
	const char		*reason;

	struct smtp_slot	 slots[SMTP_SLOTS];	/* FIFO ring */
	unsigned		 head;
	unsigned		 nslots;

	struct evbuffer		*reply;		/* backend reply so far */
	int			 reply_code;
	unsigned		 reply_lines;
	unsigned		 reply_kept;	/* EHLO lines kept */
	bool			 reply_rewrite;	/* EHLO keyword filtering */
	bool			 reply_chunking; /* this EHLO reply: CHUNKING */

	enum smtp_skip_then	 skip_then;
	enum smtp_data_state	 dstate;
	bool			 data_refused;	/* reject mode tripped */
	uint64_t		 bdat_left;
	bool			 bdat_forward;	/* false: chunk is discarded */
	char			 closemsg[320];
};

/* A client command line, split at the first run of blanks. */
struct smtp_line {
	const char	*text;
	size_t		 len;
	const char	*verb;
	size_t		 verblen;
	const char	*args;
	size_t		 argslen;
};

struct smtp_cmd;
typedef void	smtp_cmd_fn(struct smtp *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);

/* Command flags (Postfix smtpd_cmd_table idea). */
#define CF_PRE_TLS	0x01	/* allowed before TLS under require_starttls */
#define CF_NEW_SESSION	0x02	/* allowed after STARTTLS before EHLO */
#define CF_CREDENTIALS	0x04	/* carries credentials: never in cleartext */
#define CF_INTERCEPT	0x08	/* answered by mailtlsd itself */
#define CF_AUTHORITY	0x10	/* proxy authority: never from a client */
#define CF_COUNTED	0x20	/* followed by counted bytes (BDAT) */

struct smtp_cmd {
	const char		*verb;
	smtp_cmd_fn		*handler;
	enum smtp_slot_kind	 slot;
	unsigned		 flags;
};

/* EHLO keyword rules (Postfix ehlo_mask idea). */
#define EHLO_DROP_ALWAYS	0x01
#define EHLO_DROP_CLEAR		0x02	/* only while TLS is not active */

struct smtp_ehlo_rule {
	const char	*keyword;
	unsigned	 drop;
};

static struct smtp	*smtp_filter_new(const struct filter_params *);
static void	 smtp_filter_free(struct smtp *);
static enum filter_verdict smtp_client_input(struct smtp *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static enum filter_verdict smtp_backend_input(struct smtp *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static const char *smtp_reason(const struct smtp *);
static void	 smtp_unavailable(struct evbuffer *, const char *);

static const char *smtp_state_name(enum smtp_state);
static void	 smtp_enter_state(struct smtp *, enum smtp_state);
static void	 smtp_slot_push(struct smtp *, enum smtp_slot_kind,
		    const char *);
static struct smtp_slot *smtp_slot_head(struct smtp *);
static void	 smtp_slot_pop(struct smtp *);
static bool	 smtp_slot_answered_by_backend(enum smtp_slot_kind);
static void	 smtp_flush(struct smtp *, struct evbuffer *);
static void	 smtp_close_after(struct smtp *, const char *, const char *);
static void	 smtp_refuse(struct smtp *, const char *);
static void	 smtp_forward_line(const struct smtp_line *,
		    struct evbuffer *);

static bool	 smtp_client_step(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_read_command(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_skip_line(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_read_sasl(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_is_blank(char);
static void	 smtp_split(struct smtp_line *, const char *, size_t);
static const struct smtp_cmd *smtp_cmd_lookup(const struct smtp_line *);
static void	 smtp_command(struct smtp *, const struct smtp_line *,
		    struct evbuffer *);
static const char *smtp_check_policy(struct smtp *,
		    const struct smtp_cmd *, const struct smtp_line *);
static int	 smtp_check_bdat(const struct smtp_line *, uint64_t *,
		    bool *);
static void	 smtp_bdat_begin(struct smtp *, uint64_t, bool);
static void	 smtp_bdat_input(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static void	 smtp_data_input(struct smtp *, struct evbuffer *,
		    struct evbuffer *);
static size_t	 smtp_data_scan(struct smtp *, const char *, size_t,
		    struct evbuffer *, bool *);
static void	 smtp_data_bare(struct smtp *);
static void	 smtp_data_end(struct smtp *, struct evbuffer *);
static enum filter_verdict smtp_starttls_decide(struct smtp *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);

static void	 smtp_do_forward(struct smtp *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);
static void	 smtp_do_starttls(struct smtp *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);
static void	 smtp_do_bdat(struct smtp *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);

static void	 smtp_backend_error(struct smtp *, const char *);
static void	 smtp_backend_line(struct smtp *, size_t, unsigned,
		    struct evbuffer *);
static int	 smtp_check_reply_line(const char *, size_t, unsigned,
		    int *, bool *);
static int	 smtp_reply_begin(struct smtp *, enum smtp_slot_kind, int);
static void	 smtp_reply_add(struct smtp *, size_t);
static void	 smtp_reply_done(struct smtp *, enum smtp_slot_kind,
		    struct evbuffer *);
static void	 smtp_reply_effect(struct smtp *, enum smtp_slot_kind, int);
static size_t	 smtp_ehlo_keyword(const char *, size_t);
static bool	 smtp_ehlo_keep(const struct smtp *, const char *, size_t);
static void	 smtp_ehlo_emit(struct smtp *, struct evbuffer *);

/* proto_smtp_ops: at the end of the file. */

/*
 * Client commands.  Verbs not listed are forwarded as SLOT_OTHER with no
 * flags: the backend answers them, but require_starttls and the
 * post-STARTTLS "Send EHLO first" rule still apply.
 */
static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO",	smtp_do_forward,  SLOT_EHLO,	CF_PRE_TLS | CF_NEW_SESSION },
	{ "HELO",	smtp_do_forward,  SLOT_HELO,	CF_PRE_TLS | CF_NEW_SESSION },
	{ "NOOP",	smtp_do_forward,  SLOT_OTHER,	CF_PRE_TLS | CF_NEW_SESSION },
	{ "RSET",	smtp_do_forward,  SLOT_RSET,	CF_PRE_TLS | CF_NEW_SESSION },
	{ "QUIT",	smtp_do_forward,  SLOT_QUIT,	CF_PRE_TLS | CF_NEW_SESSION },
	/* CF_NEW_SESSION so that inside TLS it says "TLS already active". */
	{ "STARTTLS",	smtp_do_starttls, SLOT_STARTTLS,
	    CF_PRE_TLS | CF_NEW_SESSION | CF_INTERCEPT },
	{ "MAIL",	smtp_do_forward,  SLOT_MAIL,	0 },
	{ "RCPT",	smtp_do_forward,  SLOT_OTHER,	0 },
	{ "DATA",	smtp_do_forward,  SLOT_DATA,	0 },
	{ "BDAT",	smtp_do_bdat,	  SLOT_BDAT,	CF_COUNTED },
	{ "AUTH",	smtp_do_forward,  SLOT_AUTH,	CF_CREDENTIALS },
	/* Exchange's server-to-server AUTH, with the same 334 dialogue. */
	{ "X-EXPS",	smtp_do_forward,  SLOT_AUTH,	CF_CREDENTIALS },
	{ "XCLIENT",	NULL,		  SLOT_OTHER,	CF_AUTHORITY },
	{ "XFORWARD",	NULL,		  SLOT_OTHER,	CF_AUTHORITY },
};

static const struct smtp_cmd smtp_cmd_unknown = {
	NULL, smtp_do_forward, SLOT_OTHER, 0
};

/*
 * EHLO keywords rewritten by name.  STARTTLS is always dropped and, in the
 * cleartext phase of a STARTTLS service, advertised once by us instead.
 * XEXCH50 is followed by a binary blob we do not frame.
 */
static const struct smtp_ehlo_rule smtp_ehlo_rules[] = {
	{ "STARTTLS",	EHLO_DROP_ALWAYS },
	{ "AUTH",	EHLO_DROP_CLEAR },
	{ "X-EXPS",	EHLO_DROP_CLEAR },
	{ "XCLIENT",	EHLO_DROP_ALWAYS },
	{ "XFORWARD",	EHLO_DROP_ALWAYS },
	{ "XEXCH50",	EHLO_DROP_ALWAYS },
};

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------- */
/* Filter object, states, the slot FIFO. */

static struct smtp *
smtp_filter_new(const struct filter_params *p)
{
	const struct conf_service *svc = p->svc;
	struct smtp	*f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->sid = p->session_id ? p->session_id : "-";
	f->addr = p->client_addr ? p->client_addr : "-";
	f->hostname = svc->hostname ? svc->hostname : "localhost";
	f->line_max = svc->max_line_length ? svc->max_line_length :
	    DEFAULT_SMTP_LINE_MAX;
	f->sasl_max = f->line_max > SMTP_SASL_LINE_MAX ? f->line_max :
	    SMTP_SASL_LINE_MAX;
	f->bufsz = f->sasl_max + 2;
	f->buf = malloc(f->bufsz);
	f->reply = evbuffer_new();
	if (f->buf == NULL || f->reply == NULL) {
		smtp_filter_free(f);
		return NULL;
	}
	f->tls = p->tls_active;
	f->starttls_svc = svc->tls_mode == TLS_MODE_STARTTLS;
	f->require_tls = f->starttls_svc && svc->require_starttls;
	f->reject_bare = svc->smtp_bare_newline == BARE_NEWLINE_REJECT;
	f->state = SMTP_ST_CMD;
	/* The greeting is the answer to the connection itself. */
	smtp_slot_push(f, SLOT_GREETING, NULL);
	return f;
}

static void
smtp_filter_free(struct smtp *f)
{
	if (f == NULL)
		return;
	if (f->reply != NULL)
		evbuffer_free(f->reply);
	free(f->buf);
	free(f);
}

static const char *
smtp_reason(const struct smtp *f)
{
	return f->reason ? f->reason : "protocol filter";
}

static void
smtp_unavailable(struct evbuffer *to_client, const char *hostname)
{
	evbuffer_add_printf(to_client,
	    "421 4.3.2 %s Service temporarily unavailable\r\n",
	    hostname ? hostname : "localhost");
}

static const char *
smtp_state_name(enum smtp_state st)
{
	static const char *const names[] = {
		[SMTP_ST_CMD] = "command",
		[SMTP_ST_SKIP] = "skip-line",
		[SMTP_ST_DATA_WAIT] = "data-wait",
		[SMTP_ST_DATA] = "data",
		[SMTP_ST_BDAT] = "bdat",
		[SMTP_ST_AUTH_WAIT] = "auth-wait",
		[SMTP_ST_SASL] = "sasl",
		[SMTP_ST_STARTTLS_WAIT] = "starttls-wait",
		[SMTP_ST_QUIT] = "quit",
		[SMTP_ST_CLOSING] = "closing",
	};

	if ((size_t)st < nitems(names) && names[st] != NULL)
		return names[st];
	return "unknown";
}

static void
smtp_enter_state(struct smtp *f, enum smtp_state st)
{
	if (f->state == st)
		return;
	log_debug("%s smtp: %s -> %s", f->sid, smtp_state_name(f->state),
	    smtp_state_name(st));
	f->state = st;
}

static void
smtp_slot_push(struct smtp *f, enum smtp_slot_kind kind, const char *reply)
{
	struct smtp_slot *s;

	/* The client is held at FILTER_PENDING_MAX; see SMTP_SLOTS. */
	if (f->nslots >= SMTP_SLOTS)
		fatalx("%s smtp: reply FIFO overflow", f->sid);
	s = &f->slots[(f->head + f->nslots) % SMTP_SLOTS];
	s->kind = kind;
	s->reply = reply;
	f->nslots++;
}

static struct smtp_slot *
smtp_slot_head(struct smtp *f)
{
	return f->nslots ? &f->slots[f->head] : NULL;
}

static void
smtp_slot_pop(struct smtp *f)
{
	if (f->nslots == 0)
		return;
	f->head = (f->head + 1) % SMTP_SLOTS;
	f->nslots--;
}

static bool
smtp_slot_answered_by_backend(enum smtp_slot_kind kind)
{
	return kind != SLOT_LOCAL && kind != SLOT_LOCAL_CLOSE &&
	    kind != SLOT_STARTTLS;
}

/*
 * Write our own replies that have reached the head of the FIFO: every
 * earlier command has been answered, so they keep their place (RFC 2920).
 */
static void
smtp_flush(struct smtp *f, struct evbuffer *to_client)
{
	struct smtp_slot *s;

	while ((s = smtp_slot_head(f)) != NULL &&
	    (s->kind == SLOT_LOCAL || s->kind == SLOT_LOCAL_CLOSE)) {
		evbuffer_add(to_client, s->reply, strlen(s->reply));
		if (s->kind == SLOT_LOCAL_CLOSE)
			f->closing = true;
		smtp_slot_pop(f);
	}
}

/* Queue a last reply; the session ends once it has been written. */
static void
smtp_close_after(struct smtp *f, const char *reply, const char *reason)
{
	smtp_slot_push(f, SLOT_LOCAL_CLOSE, reply);
	f->reason = reason;
	smtp_enter_state(f, SMTP_ST_CLOSING);
}

/* Answer a client command ourselves; too many of those end the session. */
static void
smtp_refuse(struct smtp *f, const char *reply)
{
	smtp_slot_push(f, SLOT_LOCAL, reply);
	if (++f->errors < SMTP_ERRORS_MAX)
		return;
	log_warnx("%s client=%s: %u refused commands, closing", f->sid,
	    f->addr, f->errors);
	snprintf(f->closemsg, sizeof(f->closemsg),
	    "421 4.7.0 %.255s Too many errors\r\n", f->hostname);
	smtp_close_after(f, f->closemsg, "too many errors");
}

/* SPEC 8.4: the canonical form of a command line is its text and CRLF. */
static void
smtp_forward_line(const struct smtp_line *l, struct evbuffer *to_backend)
{
	evbuffer_add(to_backend, l->text, l->len);
	evbuffer_add(to_backend, "\r\n", 2);
}

/* ---------------------------------------------------------------------- */
/* Client side. */

static enum filter_verdict
smtp_client_input(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	enum filter_verdict	 v;
	struct smtp_slot	*s;

	for (;;) {
		smtp_flush(f, to_client);
		if (f->closing)
			return FILTER_CLOSE;
		s = smtp_slot_head(f);
		if (s != NULL && s->kind == SLOT_STARTTLS) {
			v = smtp_starttls_decide(f, in, to_backend, to_client);
			if (v != FILTER_CONTINUE)
				return v;
			continue;
		}
		if (!smtp_client_step(f, in, to_backend))
			return FILTER_CONTINUE;
	}
}

/* One framing step; false when nothing can be done before more input. */
static bool
smtp_client_step(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	if (evbuffer_get_length(in) == 0)
		return false;
	switch (f->state) {
	case SMTP_ST_CMD:
		return smtp_read_command(f, in, to_backend);
	case SMTP_ST_SKIP:
		return smtp_skip_line(f, in, to_backend);
	case SMTP_ST_SASL:
		return smtp_read_sasl(f, in, to_backend);
	case SMTP_ST_DATA:
		smtp_data_input(f, in, to_backend);
		return true;
	case SMTP_ST_BDAT:
		smtp_bdat_input(f, in, to_backend);
		return true;
	default:
		/* Hold: the next reply decides how these bytes are framed. */
		return false;
	}
}

static bool
smtp_read_command(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct smtp_line	 l;
	size_t			 len;
	unsigned		 flags;

	if (f->nslots >= FILTER_PENDING_MAX)
		return false;
	switch (lineio_get(in, f->line_max, f->buf, f->bufsz, &len, &flags)) {
	case LINEIO_MORE:
		return false;
	case LINEIO_TOO_LONG:
		smtp_refuse(f, R_TOO_LONG);
		if (f->state != SMTP_ST_CLOSING) {
			f->skip_then = SKIP_THEN_CMD;
			smtp_enter_state(f, SMTP_ST_SKIP);
		}
		return true;
	case LINEIO_LINE:
		break;
	}
	/*
	 * SPEC 8.4: a backend may read a bare LF as a line end, a bare CR as
	 * one, or stop at a NUL; what it would make of such a line is not
	 * ours to guess, so it is refused and never forwarded.
	 */
	smtp_split(&l, f->buf, len);
	if (l.verblen == 0 || (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR |
	    LINEIO_HAS_NUL))) {
		smtp_refuse(f, R_SYNTAX);
		return true;
	}
	smtp_command(f, &l, to_backend);
	return true;
}

static bool
smtp_skip_line(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	if (lineio_skip(in) == 0)
		return true;	/* all of it gone, the line goes on */
	if (f->skip_then == SKIP_THEN_SASL_CANCEL) {
		/* RFC 4954 section 4: "*" cancels the exchange. */
		evbuffer_add(to_backend, "*\r\n", 3);
		smtp_slot_push(f, SLOT_AUTH, NULL);
		smtp_enter_state(f, SMTP_ST_AUTH_WAIT);
	} else
		smtp_enter_state(f, SMTP_ST_CMD);
	return true;
}

/*
 * After a 334 the next line is a SASL response: opaque, never parsed and
 * never logged.  One we could not frame unambiguously is replaced by "*",
 * so the backend cancels the exchange and its 501 goes to the client.
 */
static bool
smtp_read_sasl(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	size_t		 len;
	unsigned	 flags;

	switch (lineio_get(in, f->sasl_max, f->buf, f->bufsz, &len, &flags)) {
	case LINEIO_MORE:
		return false;
	case LINEIO_TOO_LONG:
		f->skip_then = SKIP_THEN_SASL_CANCEL;
		smtp_enter_state(f, SMTP_ST_SKIP);
		return true;
	case LINEIO_LINE:
		break;
	}
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		evbuffer_add(to_backend, "*\r\n", 3);
	else {
		evbuffer_add(to_backend, f->buf, len);
		evbuffer_add(to_backend, "\r\n", 2);
	}
	smtp_slot_push(f, SLOT_AUTH, NULL);
	smtp_enter_state(f, SMTP_ST_AUTH_WAIT);
	return true;
}

static bool
smtp_is_blank(char c)
{
	/* What tolerant servers split on (isspace() minus CR and LF). */
	return c == ' ' || c == '\t' || c == '\v' || c == '\f';
}

/*
 * Split like the most tolerant backend would: leading blanks skipped, the
 * verb ends at any blank.  Otherwise "AUTH\tPLAIN ..." or " XCLIENT ..."
 * would pass as unknown verbs that a backend still executes.
 */
static void
smtp_split(struct smtp_line *l, const char *text, size_t len)
{
	size_t	 i = 0;

	l->text = text;
	l->len = len;
	while (i < len && smtp_is_blank(text[i]))
		i++;
	l->verb = text + i;
	while (i < len && !smtp_is_blank(text[i]))
		i++;
	l->verblen = (size_t)(text + i - l->verb);
	while (i < len && smtp_is_blank(text[i]))
		i++;
	/* Trailing blanks alone are no arguments. */
	l->args = text + i;
	l->argslen = len - i;
}

static const struct smtp_cmd *
smtp_cmd_lookup(const struct smtp_line *l)
{
	size_t	 i;

	for (i = 0; i < nitems(smtp_cmds); i++)
		if (util_word_eq(l->verb, l->verblen, smtp_cmds[i].verb))
			return &smtp_cmds[i];
	return &smtp_cmd_unknown;
}

static void
smtp_command(struct smtp *f, const struct smtp_line *l,
    struct evbuffer *to_backend)
{
	const struct smtp_cmd	*cmd = smtp_cmd_lookup(l);
	const char		*refusal;
	uint64_t		 size = 0;
	bool			 last = false;

	/*
	 * RFC 3030: the chunk follows BDAT whether or not BDAT is accepted,
	 * so its size is needed even to refuse it; without a size nothing
	 * after this line can be framed, and the session ends.
	 */
	if ((cmd->flags & CF_COUNTED) &&
	    smtp_check_bdat(l, &size, &last) == -1) {
		log_info("%s client=%s: malformed BDAT, closing", f->sid,
		    f->addr);
		smtp_close_after(f, R_ARGS, "malformed BDAT");
		return;
	}
	if ((refusal = smtp_check_policy(f, cmd, l)) != NULL) {
		smtp_refuse(f, refusal);
		if ((cmd->flags & CF_COUNTED) && f->state != SMTP_ST_CLOSING)
			smtp_bdat_begin(f, size, false);
		return;
	}
	cmd->handler(f, cmd, l, to_backend);
}

/* The reply refusing this command here, or NULL to hand it on. */
static const char *
smtp_check_policy(struct smtp *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l)
{
	char	 verb[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];

	/* SPEC 3: only mailtlsd speaks with the proxy's authority. */
	if (cmd->flags & CF_AUTHORITY) {
		log_info("%s client=%s: %s refused", f->sid, f->addr,
		    log_escape(verb, sizeof(verb), l->verb, l->verblen,
		    LOG_CLIENT_TEXT_MAX));
		return R_NOT_PERMITTED;
	}
	/* SPEC 3 and 8.3: the session after STARTTLS starts with EHLO. */
	if (f->need_ehlo && !(cmd->flags & CF_NEW_SESSION))
		return R_EHLO_FIRST;
	/* SPEC 8.5; the arguments may be credentials and are not logged. */
	if (!f->tls && (cmd->flags & CF_CREDENTIALS)) {
		log_warnx("%s client=%s: AUTH refused in cleartext", f->sid,
		    f->addr);
		return f->require_tls ? R_TLS_FIRST : R_ENCRYPT;
	}
	if (!f->tls && f->require_tls && !(cmd->flags & CF_PRE_TLS))
		return R_TLS_FIRST;
	/* SPEC 8.4: only a backend that counts the chunk gets it. */
	if ((cmd->flags & CF_COUNTED) && !f->chunking)
		return R_NO_CHUNKING;
	return NULL;
}

/*
 * Forward a command and remember what its reply decides: DATA and AUTH
 * hold the client until the reply says how the next bytes are framed
 * (354, 334); QUIT ends what we read.
 */
static void
smtp_do_forward(struct smtp *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	smtp_forward_line(l, to_backend);
	smtp_slot_push(f, cmd->slot, NULL);
	switch (cmd->slot) {
	case SLOT_EHLO:
	case SLOT_HELO:
		/* A failed EHLO sets it again (smtp_reply_effect()). */
		f->need_ehlo = false;
		break;
	case SLOT_DATA:
		smtp_enter_state(f, SMTP_ST_DATA_WAIT);
		break;
	case SLOT_AUTH:
		smtp_enter_state(f, SMTP_ST_AUTH_WAIT);
		break;
	case SLOT_QUIT:
		smtp_enter_state(f, SMTP_ST_QUIT);
		break;
	default:
		break;
	}
}

/*
 * STARTTLS (RFC 3207).  Refusals are answered in order like any reply;
 * an acceptable one waits at the head of the FIFO, with the client held,
 * until every earlier command has been answered (smtp_starttls_decide()).
 */
static void
smtp_do_starttls(struct smtp *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	if (l->argslen > 0)
		smtp_refuse(f, R_ARGS);
	else if (f->tls)
		smtp_refuse(f, R_TLS_ACTIVE);
	else if (!f->starttls_svc)
		smtp_refuse(f, R_NO_TLS);
	else {
		smtp_slot_push(f, SLOT_STARTTLS, NULL);
		smtp_enter_state(f, SMTP_ST_STARTTLS_WAIT);
	}
}

/*
 * The TLS boundary.  Every earlier reply is out, so the transaction state
 * is exact and the go-ahead will be the last cleartext byte (SPEC 8.2).
 */
static enum filter_verdict
smtp_starttls_decide(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	size_t	 n = evbuffer_get_length(in);

	smtp_slot_pop(f);
	if (f->in_txn) {
		smtp_enter_state(f, SMTP_ST_CMD);
		smtp_refuse(f, R_IN_TXN);
		return FILTER_CONTINUE;
	}
	/*
	 * SPEC 8.1 (CVE-2011-0411): bytes after the STARTTLS line were sent
	 * in cleartext and must never be executed, answered or carried into
	 * TLS.  Their content may be credentials: only the count is logged.
	 */
	if (n > 0) {
		log_warnx("%s client=%s: %zu pipelined bytes after STARTTLS, "
		    "closing", f->sid, f->addr, n);
		f->reason = "pipelined data after STARTTLS";
		f->closing = true;
		smtp_enter_state(f, SMTP_ST_CLOSING);
		return FILTER_CLOSE;
	}
	evbuffer_add(to_client, R_GO_AHEAD, strlen(R_GO_AHEAD));
	(void)to_backend;
	f->tls = f->upgraded = f->need_ehlo = true;
	f->ehlo_done = f->in_txn = f->chunking = false;
	smtp_enter_state(f, SMTP_ST_CMD);
	log_debug("%s smtp: STARTTLS go-ahead", f->sid);
	return FILTER_STARTTLS;
}

/* ---------------------------------------------------------------------- */
/* BDAT (RFC 3030). */

/* "BDAT" SP chunk-size [ SP "LAST" ]; 0 and the size, or -1. */
static int
smtp_check_bdat(const struct smtp_line *l, uint64_t *size, bool *last)
{
	const char	*p = l->args, *end = l->args + l->argslen;
	size_t		 digits = 0;
	uint64_t	 n = 0;

	while (p < end && *p >= '0' && *p <= '9') {
		if (++digits > SMTP_BDAT_DIGITS_MAX)
			return -1;
		n = n * 10 + (uint64_t)(*p++ - '0');
	}
	if (digits == 0 || (p < end && !smtp_is_blank(*p)))
		return -1;
	while (p < end && smtp_is_blank(*p))
		p++;
	*last = false;
	if (p < end) {
		if ((size_t)(end - p) < 4 || !util_word_eq(p, 4, "LAST"))
			return -1;
		for (p += 4; p < end && smtp_is_blank(*p); p++)
			;
		if (p != end)
			return -1;
		*last = true;
	}
	*size = n;
	return 0;
}

static void
smtp_do_bdat(struct smtp *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	uint64_t	 size = 0;
	bool		 last = false;

	/* Cannot fail: smtp_command() checked this line already. */
	(void)smtp_check_bdat(l, &size, &last);
	smtp_forward_line(l, to_backend);
	smtp_slot_push(f, last ? SLOT_BDAT_LAST : SLOT_BDAT, NULL);
	/* No hold: RFC 3030 lets the chunk follow without waiting. */
	smtp_bdat_begin(f, size, true);
}

static void
smtp_bdat_begin(struct smtp *f, uint64_t size, bool forward)
{
	if (size == 0)
		return;
	f->bdat_left = size;
	f->bdat_forward = forward;
	smtp_enter_state(f, SMTP_ST_BDAT);
}

/* Chunk bytes are counted, never parsed: not even CRLF.CRLF counts. */
static void
smtp_bdat_input(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	size_t	 n = evbuffer_get_length(in);

	if ((uint64_t)n > f->bdat_left)
		n = (size_t)f->bdat_left;
	if (f->bdat_forward)
		evbuffer_remove_buffer(in, to_backend, n);
	else
		evbuffer_drain(in, n);
	f->bdat_left -= n;
	if (f->bdat_left == 0)
		smtp_enter_state(f, SMTP_ST_CMD);
}

/* ---------------------------------------------------------------------- */
/* DATA content (RFC 5321 4.1.1.4, 4.5.2). */

/*
 * Scan the buffered content a few chunks at a time, without copying it
 * into a line buffer: the whole state is in f->dstate.
 */
static void
smtp_data_input(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct evbuffer_iovec	 v[SMTP_DATA_IOV];
	size_t			 used = 0;
	bool			 end = false;
	int			 i, n;

	n = evbuffer_peek(in, -1, NULL, v, SMTP_DATA_IOV);
	if (n > SMTP_DATA_IOV)
		n = SMTP_DATA_IOV;
	for (i = 0; i < n && !end; i++)
		used += smtp_data_scan(f, v[i].iov_base, v[i].iov_len,
		    to_backend, &end);
	evbuffer_drain(in, used);
	if (end)
		smtp_data_end(f, to_backend);
}

/* A bare LF or bare CR in content: in reject mode, refuse the message. */
static void
smtp_data_bare(struct smtp *f)
{
	if (f->reject_bare && !f->data_refused) {
		/*
		 * smtp_bare_newline = reject: forward nothing more.  The
		 * backend never receives an end of DATA and drops the partial
		 * message when the session closes after our 550.
		 */
		log_warnx("%s client=%s: bare LF/CR in message, refusing",
		    f->sid, f->addr);
		f->data_refused = true;
	}
}

#define DATA_OUT(s, n)	do {						\
	if (!f->data_refused)						\
		evbuffer_add(out, (s), (n));				\
} while (0)

/*
 * Relay content byte-exact up to CRLF "." CRLF as received, with one
 * change: a bare LF or bare CR is written as CRLF.  The line after such a
 * newline starts in D_BOLX, and a "." line touching a bare newline on
 * either side is written "..", so that "\n.\n", "\r\n.\n", "\r.\r" and
 * the like, once normalised, cannot be an end of DATA for the backend
 * either.  Returns the bytes used; *end when the terminator was consumed.
 * In reject mode, after the refusal, any "." line ended by LF ends the
 * discarded message (nothing is forwarded any more, so this is safe and
 * lets LF-only clients see our 550).
 */
static size_t
smtp_data_scan(struct smtp *f, const char *p, size_t n,
    struct evbuffer *out, bool *end)
{
	size_t	 i = 0, run;
	char	 c;

	while (i < n) {
		c = p[i];
		switch (f->dstate) {
		case D_BOL:
		case D_BOLX:
			if (c == '.') {
				f->dstate = f->dstate == D_BOL ? D_DOT : D_DOTX;
				i++;
				continue;
			}
			f->dstate = D_MID;
			continue;
		case D_MID:
			/* The common case: a run of ordinary bytes. */
			for (run = i; run < n && p[run] != '\r' &&
			    p[run] != '\n'; run++)
				;
			if (run > i) {
				DATA_OUT(p + i, run - i);
				i = run;
				continue;
			}
			if (c == '\r')
				f->dstate = D_CR;
			else {
				smtp_data_bare(f);
				DATA_OUT("\r\n", 2);
				f->dstate = D_BOLX;
			}
			i++;
			continue;
		case D_CR:
			if (c == '\n') {
				DATA_OUT("\r\n", 2);
				f->dstate = D_BOL;
				i++;
				continue;
			}
			smtp_data_bare(f);
			DATA_OUT("\r\n", 2);
			f->dstate = D_BOLX;	/* c not used yet */
			continue;
		case D_DOT:
		case D_DOTX:
			if (c == '\r') {
				f->dstate = f->dstate == D_DOT ? D_DOTCR :
				    D_DOTXCR;
				i++;
				continue;
			}
			if (c == '\n') {
				smtp_data_bare(f);
				i++;
				if (f->data_refused) {
					*end = true;
					return i;
				}
				DATA_OUT("..\r\n", 4);
				f->dstate = D_BOLX;
				continue;
			}
			/* ".x": byte-exact, dot-stuffing untouched. */
			DATA_OUT(".", 1);
			f->dstate = D_MID;
			continue;
		case D_DOTCR:
			if (c == '\n') {
				*end = true;
				return i + 1;
			}
			smtp_data_bare(f);
			DATA_OUT("..\r\n", 4);
			f->dstate = D_BOLX;	/* c not used yet */
			continue;
		case D_DOTXCR:
			if (c == '\n' && f->data_refused) {
				*end = true;
				return i + 1;
			}
			if (c == '\n') {
				/* ".\r\n" after a bare newline: content. */
				DATA_OUT("..\r\n", 4);
				f->dstate = D_BOL;
				i++;
				continue;
			}
			smtp_data_bare(f);
			DATA_OUT("..\r\n", 4);
			f->dstate = D_BOLX;	/* c not used yet */
			continue;
		}
	}
	return i;
}

#undef DATA_OUT

/*
 * The client's end of DATA.  A refused message cannot be failed at the
 * backend while keeping the session: the backend holds part of it, and
 * any end of DATA we sent would submit that part.  So the client gets our
 * 550 in its place and the session closes; the backend, losing its
 * client in the middle of DATA, discards the partial message.
 */
static void
smtp_data_end(struct smtp *f, struct evbuffer *to_backend)
{
	if (f->data_refused) {
		f->data_refused = false;
		smtp_close_after(f, R_BARE_NEWLINE, "bare newline in message");
		return;
	}
	/* The CRLF before the dot went out with the last content line. */
	evbuffer_add(to_backend, ".\r\n", 3);
	smtp_slot_push(f, SLOT_DATA_END, NULL);
	smtp_enter_state(f, SMTP_ST_CMD);
}

/* ---------------------------------------------------------------------- */
/* Backend side. */

static enum filter_verdict
smtp_backend_input(struct smtp *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	size_t		 len;
	unsigned	 flags;

	while (!f->closing) {
		switch (lineio_get(in, f->line_max, f->buf, f->bufsz, &len,
		    &flags)) {
		case LINEIO_MORE:
			return FILTER_CONTINUE;
		case LINEIO_TOO_LONG:
			smtp_backend_error(f, "reply line too long");
			break;
		case LINEIO_LINE:
			smtp_backend_line(f, len, flags, to_client);
			break;
		}
	}
	return FILTER_CLOSE;
}

static void
smtp_backend_error(struct smtp *f, const char *what)
{
	log_warnx("%s smtp: backend protocol error: %s", f->sid, what);
	f->reason = "backend protocol error";
	f->closing = true;
	smtp_enter_state(f, SMTP_ST_CLOSING);
}

static void
smtp_backend_line(struct smtp *f, size_t len, unsigned flags,
    struct evbuffer *to_client)
{
	char			 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	struct smtp_slot	*s = smtp_slot_head(f);
	int			 code;
	bool			 final;

	/* SPEC 8.2: only a reply to a pending command is ever delivered. */
	if (s == NULL || !smtp_slot_answered_by_backend(s->kind)) {
		log_warnx("%s smtp: unsolicited backend output: %s", f->sid,
		    log_escape(esc, sizeof(esc), f->buf, len,
		    LOG_CLIENT_TEXT_MAX));
		f->reason = "unsolicited backend output";
		f->closing = true;
		smtp_enter_state(f, SMTP_ST_CLOSING);
		return;
	}
	if (smtp_check_reply_line(f->buf, len, flags, &code, &final) == -1) {
		smtp_backend_error(f, "malformed reply line");
		return;
	}
	if (f->reply_lines == 0 && smtp_reply_begin(f, s->kind, code) == -1)
		return;
	if (code != f->reply_code) {
		smtp_backend_error(f, "reply code changes inside a reply");
		return;
	}
	if (++f->reply_lines > SMTP_REPLY_LINES_MAX ||
	    evbuffer_get_length(f->reply) + len > SMTP_REPLY_BYTES_MAX) {
		smtp_backend_error(f, "reply too long");
		return;
	}
	smtp_reply_add(f, len);
	if (final)
		smtp_reply_done(f, s->kind, to_client);
}

/*
 * RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ].  The codes a
 * server may send are 2yz-5yz with y in 0-5.  A bare LF ending is
 * accepted (we write CRLF); CR and NUL inside are not.
 */
static int
smtp_check_reply_line(const char *s, size_t len, unsigned flags, int *code,
    bool *final)
{
	if (flags & (LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return -1;
	if (len < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' ||
	    s[1] > '5' || s[2] < '0' || s[2] > '9')
		return -1;
	if (len > 3 && s[3] != ' ' && s[3] != '-')
		return -1;
	*code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	*final = len == 3 || s[3] == ' ';
	return 0;
}

/*
 * First line of a reply.  334 and 354 change how the client's next bytes
 * are framed, so they are accepted only where we expect that change: a
 * 334 anywhere else, or in cleartext, would prompt for credentials (SPEC
 * 8.5); a 354 would make us parse content as commands (SPEC 8.4).  Our
 * RSET at the TLS boundary must succeed, or cleartext state might survive
 * it (SPEC 8.3): fail closed.
 */
static int
smtp_reply_begin(struct smtp *f, enum smtp_slot_kind kind, int code)
{
	if ((code == 334 && (kind != SLOT_AUTH || !f->tls)) ||
	    (code == 354 && kind != SLOT_DATA)) {
		smtp_backend_error(f, "unexpected intermediate reply");
		return -1;
	}
	if (kind == SLOT_SWALLOW && code / 100 != 2) {
		smtp_backend_error(f, "RSET after STARTTLS refused");
		return -1;
	}
	f->reply_code = code;
	f->reply_kept = 0;
	f->reply_rewrite = kind == SLOT_EHLO && code == 250;
	f->reply_chunking = false;
	return 0;
}

/* Keep one line of the reply being assembled (the line is in f->buf). */
static void
smtp_reply_add(struct smtp *f, size_t len)
{
	const char	*text = f->buf + (len > 3 ? 4 : 3);
	size_t		 tlen = len > 3 ? len - 4 : 0;

	if (!f->reply_rewrite) {
		evbuffer_add(f->reply, f->buf, len);
		evbuffer_add(f->reply, "\r\n", 2);
		return;
	}
	/* The first EHLO line is the server's name, not a keyword. */
	if (f->reply_lines > 1 && !smtp_ehlo_keep(f, text, tlen))
		return;
	if (f->reply_lines > 1 &&
	    util_word_eq(text, smtp_ehlo_keyword(text, tlen), "CHUNKING"))
		f->reply_chunking = true;
	evbuffer_add(f->reply, text, tlen);
	evbuffer_add(f->reply, "\r\n", 2);
	f->reply_kept++;
}

/* The reply answers the head slot, of this kind. */
static void
smtp_reply_done(struct smtp *f, enum smtp_slot_kind kind,
    struct evbuffer *to_client)
{
	smtp_slot_pop(f);
	if (kind == SLOT_SWALLOW)
		evbuffer_drain(f->reply, evbuffer_get_length(f->reply));
	else if (f->reply_rewrite)
		smtp_ehlo_emit(f, to_client);
	else
		evbuffer_add_buffer(to_client, f->reply);
	smtp_reply_effect(f, kind, f->reply_code);
	f->reply_lines = 0;
	smtp_flush(f, to_client);
}

/* What a complete reply means for the session state. */
static void
smtp_reply_effect(struct smtp *f, enum smtp_slot_kind kind, int code)
{
	bool	 ok = code >= 200 && code < 300;

	switch (kind) {
	case SLOT_EHLO:
	case SLOT_HELO:
		/* RFC 5321 4.1.4: EHLO/HELO also end a transaction. */
		if (ok) {
			f->in_txn = false;
			f->ehlo_done = true;
			/* HELO: no extensions; EHLO: what it advertised. */
			f->chunking = kind == SLOT_EHLO && f->reply_chunking;
		} else if (f->upgraded && !f->ehlo_done)
			f->need_ehlo = true;
		break;
	case SLOT_MAIL:
		if (ok)
			f->in_txn = true;
		break;
	case SLOT_RSET:
		if (ok)
			f->in_txn = false;
		break;
	case SLOT_DATA:
		/* Anything but 354: the held bytes are commands after all. */
		if (code == 354)
			f->dstate = D_BOL;
		smtp_enter_state(f, code == 354 ? SMTP_ST_DATA : SMTP_ST_CMD);
		break;
	case SLOT_DATA_END:
	case SLOT_BDAT_LAST:
		f->in_txn = false;
		break;
	case SLOT_AUTH:
		smtp_enter_state(f, code == 334 ? SMTP_ST_SASL : SMTP_ST_CMD);
		break;
	default:
		break;
	}
}

/* Length of an EHLO line's keyword: up to a blank or "=" ("AUTH=LOGIN"). */
static size_t
smtp_ehlo_keyword(const char *text, size_t len)
{
	size_t	 kw;

	for (kw = 0; kw < len && text[kw] != ' ' && text[kw] != '='; kw++)
		;
	return kw;
}

static bool
smtp_ehlo_keep(const struct smtp *f, const char *text, size_t len)
{
	size_t	 kw = smtp_ehlo_keyword(text, len), i;

	for (i = 0; i < nitems(smtp_ehlo_rules); i++) {
		if (!util_word_eq(text, kw, smtp_ehlo_rules[i].keyword))
			continue;
		if (smtp_ehlo_rules[i].drop & EHLO_DROP_ALWAYS)
			return false;
		if ((smtp_ehlo_rules[i].drop & EHLO_DROP_CLEAR) && !f->tls)
			return false;
	}
	return true;
}

/*
 * Write the kept EHLO lines, plus our STARTTLS in the cleartext phase of
 * a STARTTLS service, with "250-" on all but the last and "250 " on the
 * last (which may not be the backend's last, if we dropped that one).
 */
static void
smtp_ehlo_emit(struct smtp *f, struct evbuffer *to_client)
{
	bool		 add = !f->tls && f->starttls_svc;
	unsigned	 total = f->reply_kept + (add ? 1 : 0), i;
	size_t		 len;
	unsigned	 flags;

	for (i = 0; i < f->reply_kept; i++) {
		if (lineio_get(f->reply, f->line_max, f->buf, f->bufsz, &len,
		    &flags) != LINEIO_LINE)
			break;	/* cannot happen: we wrote these lines */
		evbuffer_add(to_client, i + 1 == total ? "250 " : "250-", 4);
		evbuffer_add(to_client, f->buf, len);
		evbuffer_add(to_client, "\r\n", 2);
	}
	evbuffer_drain(f->reply, evbuffer_get_length(f->reply));
	if (add)
		evbuffer_add(to_client, "250 STARTTLS\r\n", 14);
}

/* ---------------------------------------------------------------------- */
/* The filter core's view of this protocol (filter.h). */

static void *
smtp_op_init(struct filter *core, const struct filter_params *p)
{
	(void)core;
	return smtp_filter_new(p);
}

static void
smtp_op_free(void *state)
{
	smtp_filter_free(state);
}

static enum filter_verdict
smtp_op_verdict(struct filter *core, enum filter_verdict v)
{
	if (v == FILTER_CLOSE && core->reason == NULL)
		core->reason = smtp_reason(core->proto);
	return v;
}

static enum filter_verdict
smtp_op_client_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	return smtp_op_verdict(core, smtp_client_input(core->proto, in,
	    to_backend, to_client));
}

static enum filter_verdict
smtp_op_backend_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	return smtp_op_verdict(core, smtp_backend_input(core->proto, in,
	    to_client, to_backend));
}

/*
 * SPEC 8.3: nothing of the cleartext session survives.  No transaction is
 * open (checked at STARTTLS) and AUTH never passed in cleartext; RSET makes
 * sure of the first, and the client's new EHLO resets the rest.  The RSET
 * reply is swallowed, never delivered.
 */
static void
smtp_op_tls_reset(struct filter *core, struct evbuffer *to_backend)
{
	evbuffer_add(to_backend, "RSET\r\n", 6);
	smtp_slot_push(core->proto, SLOT_SWALLOW, NULL);
}

static void
smtp_op_last_word(const struct filter *f, char *buf, size_t len)
{
	snprintf(buf, len, "421 4.7.0 %.255s Too many errors\r\n",
	    f->hostname);
}

const struct proto_ops proto_smtp_ops = {
	.name = "smtp",
	.alpn = "smtp",
	.init = smtp_op_init,
	.free = smtp_op_free,
	.client_input = smtp_op_client_input,
	.backend_input = smtp_op_backend_input,
	.tls_reset = smtp_op_tls_reset,
	.last_word = smtp_op_last_word,
	.unavailable = smtp_unavailable,
};
