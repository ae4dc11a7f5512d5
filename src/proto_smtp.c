/*
 * proto_smtp.c - the SMTP filter (SPEC sections 3 and 8).
 *
 * Runs on the filter core (filter.c) for the whole relayed dialogue of an
 * SMTP service: the cleartext phase of a STARTTLS service, the same
 * session after the upgrade, and implicit TLS services.  The core owns the
 * reply FIFO, the error budget, the STARTTLS boundary, the SASL response
 * line and the capability matcher; this file keeps only SMTP's framing
 * grammar (command lines, DATA content up to CRLF.CRLF, BDAT chunks by
 * count), its verb table, its EHLO keyword rules and its reply texts.
 *
 * Invariants:
 *  - A client byte reaches the backend only once framed, and a command
 *    line only as our re-serialisation of what we parsed: the verb upper-
 *    cased, one SP, the arguments joined by single SPs (runs collapsed
 *    outside Quoted-strings, which pass byte-exact), CRLF (RFC 5321
 *    4.1.1: SP-separated).  A line a lenient backend could read
 *    differently from us (bare LF or CR, NUL, HTAB or another control
 *    character, a leading blank, an unclosed Quoted-string, a run of SPs
 *    inside a path) is refused and never forwarded (SPEC 8.4).
 *  - BDAT goes out only as "BDAT <size>[ LAST]" rebuilt by us, size below
 *    2^31, and only to a backend that advertised CHUNKING; any other BDAT
 *    line is refused and its chunk skipped by count, so the backend can
 *    never take chunk bytes for commands (Exim reads "BDAT\t5" or
 *    "BDAT 4294967296" differently from a strict parser).
 *  - DATA content ends only at CRLF "." CRLF exactly as received.  Bare LF
 *    and bare CR become CRLF (or the message is refused), and a "." line
 *    touching a bare newline is sent dot-stuffed, so the backend can find
 *    no other end of DATA (SMTP smuggling, CVE-2023-51764 class).
 *  - In cleartext only the verbs of RFC 5321 and of extensions the backend
 *    advertised are forwarded; AUTH is neither forwarded nor advertised,
 *    so the backend never prompts for credentials (SPEC 8.5).  XCLIENT and
 *    XFORWARD are never forwarded from a client, in any state.
 *  - At the STARTTLS boundary (filter_starttls) the go-ahead is the last
 *    cleartext byte; afterwards the backend gets RSET (reply swallowed)
 *    before anything else, or, when the TLS phase has a fresh backend
 *    connection (SPEC 9), greets anew (greeting swallowed by the core),
 *    and the client must EHLO again (SPEC 8.1-8.3).
 *  - xclient (SPEC 9): every backend connection gets our EHLO and XCLIENT
 *    before the client is read; the client sees one greeting, the reply
 *    to XCLIENT.
 *  - backend_tls = starttls (SPEC 12): every backend connection gets our
 *    EHLO and STARTTLS in cleartext before anything else; the greeting must
 *    be 220, the EHLO reply must list STARTTLS and STARTTLS must get 220,
 *    or the backend is not usable.  After the verified handshake the client
 *    gets our own "220 <hostname> ESMTP" (nothing the server said in
 *    cleartext is relayed), or with xclient our EHLO and XCLIENT go inside
 *    TLS and the reply to XCLIENT is the greeting.  The client's own EHLO
 *    is then the server's first inside TLS, so the EHLO reply it sees is
 *    the server's post-TLS one, rewritten as ever.  The core (filter.c)
 *    holds the client meanwhile and keeps every byte of ours from it.
 *  - A backend reply is delivered only when it answers a pending slot;
 *    anything else is unsolicited and ends the session (SPEC 8.2).
 *
 * RFCs: 5321 (SMTP), 3207 (STARTTLS), 4954 (AUTH), 2920 (PIPELINING),
 * 3030 (CHUNKING), 1985 (ETRN), 3463 (enhanced status codes).
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "filter.h"
#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

/*
 * Lines and bytes of one backend reply, which is assembled before it is
 * delivered.  RFC 3030 chunk-size is 1*DIGIT; we forward sizes below 2^31
 * only (what every backend reads the same way, whatever its integer
 * type).
 */
#define SMTP_REPLY_LINES_MAX	256
#define SMTP_REPLY_BYTES_MAX	(64 * 1024)
#define SMTP_BDAT_SIZE_LIMIT	(UINT64_C(1) << 31)
#define SMTP_DATA_IOV		16	/* DATA is scanned this many chunks a go */
#define SMTP_DATA_STAGE		8192	/* DATA goes out in blocks this big */

/*
 * Replies mailtlsd writes itself.  500/5.5.2 for lines we cannot frame:
 * RFC 5321 4.2.4 "syntax error, command unrecognized", RFC 3463 X.5.2
 * "syntax error"; a backend would give the same class of answer.
 */
#define R_SYNTAX	"500 5.5.2 Syntax error\r\n"
#define R_UNKNOWN	"500 5.5.2 Error: command not recognized\r\n"
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
/* SPEC 10, max_auth_failures_per_ip. */
#define R_AUTH_LIMIT	"454 4.7.0 Too many authentication failures\r\n"

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

/* What a slot answered by the backend waits for (core FIFO kinds). */
enum smtp_slot_kind {
	SLOT_GREETING = FSLOT_PROTO,
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
	SLOT_XEHLO,		/* prelude: our EHLO, reply read by us */
	SLOT_XCLIENT,		/* xclient: our XCLIENT, answered by a greeting */
	SLOT_BSTARTTLS,		/* backend_tls = starttls: our STARTTLS */
};

/*
 * XCLIENT attributes we can fill in (Postfix XCLIENT_README), sent only
 * when the backend's EHLO lists them.  HELO and PROTO are not among them:
 * they are only known once the client's own EHLO/HELO has been read, and
 * that command reaches the backend after XCLIENT anyway, where it sets
 * both exactly as on a direct connection.
 */
#define XA_ADDR		0x01
#define XA_PORT		0x02
#define XA_NAME		0x04
#define XA_DESTADDR	0x08
#define XA_DESTPORT	0x10

/* An address or port as text, up to an IPv6 address. */
#define SMTP_XVALUE_MAX	64

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

/* Extensions of the backend's last EHLO reply that change what we pass. */
#define EXT_CHUNKING	0x01	/* BDAT (RFC 3030) */
#define EXT_ETRN	0x02	/* ETRN (RFC 1985) */

struct smtp {
	size_t			 line_max;	/* command and reply lines */
	char			*buf;		/* one line (lent) */
	size_t			 bufsz;
	enum smtp_state		 state;
	bool			 reject_bare;	/* smtp_bare_newline = reject */
	bool			 upgraded;	/* STARTTLS happened */
	bool			 rset_due;	/* our RSET not sent yet */
	bool			 need_ehlo;	/* new session, no EHLO yet */
	bool			 ehlo_done;	/* an EHLO/HELO got 2xx since */
	bool			 in_txn;	/* MAIL accepted, not ended */
	unsigned		 ext;		/* EXT_* of the last EHLO */

	/* xclient (SPEC 9): who the client is, told to every backend. */
	bool			 xclient;
	char			 xaddr[SMTP_XVALUE_MAX];
	int			 xport;
	char			 xdest[SMTP_XVALUE_MAX];
	int			 xdestport;

	struct evbuffer		*reply;		/* backend reply so far */
	int			 reply_code;
	unsigned		 reply_lines;
	unsigned		 reply_kept;	/* EHLO lines kept */
	bool			 reply_rewrite;	/* EHLO keyword filtering */
	unsigned		 reply_ext;	/* EXT_* of this EHLO reply */

	enum smtp_data_state	 dstate;
	bool			 data_refused;	/* reject mode tripped */
	uint64_t		 bdat_left;
	bool			 bdat_forward;	/* false: chunk is discarded */
};

/* A client command line as parsed (RFC 5321 grammar: SP-separated). */
struct smtp_line {
	const char	*text;		/* the whole line */
	size_t		 len;
	char		*verb;		/* upper-cased in place */
	size_t		 verblen;
	char		*args;		/* after the SPs, trailing SPs cut */
	size_t		 argslen;
	uint64_t	 size;		/* BDAT: chunk size */
	bool		 last;		/* BDAT: LAST */
};

struct smtp_cmd;
typedef void	smtp_cmd_fn(struct filter *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);

/* Command flags (Postfix smtpd_cmd_table idea). */
#define CF_CLEAR	0x01	/* RFC 5321 verb: may pass in cleartext */
#define CF_PRE_TLS	0x02	/* allowed before TLS under require_starttls */
#define CF_NEW_SESSION	0x04	/* allowed after STARTTLS before EHLO */
#define CF_CREDENTIALS	0x08	/* carries credentials: never in cleartext */
#define CF_AUTHORITY	0x10	/* proxy authority: never from a client */
#define CF_COUNTED	0x20	/* followed by counted bytes (BDAT) */

struct smtp_cmd {
	const char		*verb;
	smtp_cmd_fn		*handler;
	enum smtp_slot_kind	 slot;
	unsigned		 flags;
	unsigned		 ext;	/* EXT_*: may pass in cleartext if seen */
};

static void	*smtp_init(struct filter *, const struct filter_params *);
static void	 smtp_free(void *);
static enum filter_verdict smtp_client_input(struct filter *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static enum filter_verdict smtp_backend_input(struct filter *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static void	 smtp_tls_reset(struct filter *, struct evbuffer *);
static void	 smtp_last_word(const struct filter *, char *, size_t);
static void	 smtp_unavailable(struct evbuffer *, const char *);
static bool	 smtp_at_boundary(const struct filter *);
static void	 smtp_timeout_reply(struct evbuffer *, const char *);
static void	 smtp_rate_limited(struct evbuffer *, const char *);

static const char *smtp_state_name(enum smtp_state);
static void	 smtp_enter_state(struct filter *, enum smtp_state);
static bool	 smtp_refuse(struct filter *, const char *);
static void	 smtp_close_after(struct filter *, const char *,
		    const char *);

static bool	 smtp_client_step(struct filter *, struct evbuffer *,
		    struct evbuffer *);
static enum filter_verdict smtp_starttls_decide(struct filter *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static bool	 smtp_read_command(struct filter *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_skip_line(struct filter *, struct evbuffer *);
static bool	 smtp_read_sasl(struct filter *, struct evbuffer *,
		    struct evbuffer *);
static bool	 smtp_check_line(const char *, size_t, unsigned);
static void	 smtp_parse(struct smtp_line *, char *, size_t);
static int	 smtp_canon_args(struct smtp_line *);
static bool	 smtp_quote_start(const char *, size_t);
static size_t	 smtp_quoted_end(const char *, size_t, size_t);
static const struct smtp_cmd *smtp_cmd_lookup(const char *, size_t);
static void	 smtp_refuse_line(struct filter *, const char *, size_t);
static void	 smtp_command(struct filter *, struct smtp_line *,
		    struct evbuffer *);
static const char *smtp_check_policy(struct filter *,
		    const struct smtp_cmd *, const struct smtp_line *);

static int	 smtp_bdat_canonical(const char *, size_t, uint64_t *,
		    bool *);
static int	 smtp_bdat_lenient(const char *, size_t, uint64_t *);
static void	 smtp_bdat_refuse(struct filter *, const char *, size_t);
static void	 smtp_bdat_begin(struct filter *, uint64_t, bool);
static void	 smtp_bdat_input(struct filter *, struct evbuffer *,
		    struct evbuffer *);

/* DATA content on its way to the backend (smtp_stage_add). */
struct smtp_stage {
	struct evbuffer	*out;
	size_t		 len;
	char		 buf[SMTP_DATA_STAGE];
};

static void	 smtp_data_input(struct filter *, struct evbuffer *,
		    struct evbuffer *);
static void	 smtp_stage_flush(struct smtp_stage *);
static void	 smtp_stage_add(struct smtp_stage *, const char *, size_t);
static size_t	 smtp_data_scan(struct filter *, const char *, size_t,
		    struct smtp_stage *, bool *);
static void	 smtp_data_bare(struct filter *);
static void	 smtp_data_end(struct filter *, struct evbuffer *);

static void	 smtp_do_forward(struct filter *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);
static void	 smtp_do_starttls(struct filter *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);
static void	 smtp_do_bdat(struct filter *, const struct smtp_cmd *,
		    const struct smtp_line *, struct evbuffer *);

static enum filter_verdict smtp_backend_error(struct filter *,
		    const char *);
static bool	 smtp_backend_line(struct filter *, size_t, unsigned,
		    struct evbuffer *, struct evbuffer *);
static int	 smtp_check_reply_line(const char *, size_t, unsigned, bool,
		    int *, bool *);
static int	 smtp_reply_begin(struct filter *, unsigned, int);
static void	 smtp_reply_add(struct filter *, size_t);
static void	 smtp_reply_done(struct filter *, unsigned,
		    struct evbuffer *, struct evbuffer *);
static void	 smtp_reply_effect(struct filter *, unsigned, int);
static void	 smtp_ehlo_emit(struct filter *, struct evbuffer *);
static void	 smtp_prelude_reply(struct filter *, unsigned,
		    struct evbuffer *, struct evbuffer *);
static void	 smtp_own_ehlo(struct filter *, struct evbuffer *);
static bool	 smtp_ehlo_keyword(struct filter *, const char *, size_t *);
static void	 smtp_backend_tls_ready(struct filter *, struct evbuffer *,
		    struct evbuffer *);
static int	 smtp_xclient_attrs(struct filter *);
static void	 smtp_xclient_send(struct filter *, unsigned,
		    struct evbuffer *);
static void	 smtp_xtext(struct evbuffer *, const char *);
static void	 smtp_xaddr(struct evbuffer *, const char *, const char *);

/*
 * Client commands.  Verbs not listed are forwarded inside TLS as
 * SLOT_OTHER with no flags (the backend answers them), and refused in
 * cleartext: only RFC 5321 verbs, STARTTLS and the verbs of extensions the
 * backend advertised pass there, so nothing a backend might execute
 * without announcing it (XCLIENT spelled otherwise, XEXCH50, a vendor's
 * AUTH) or a refused AUTH's base64 lines ever reach it before TLS.
 */
static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO",	smtp_do_forward,  SLOT_EHLO,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	{ "HELO",	smtp_do_forward,  SLOT_HELO,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	{ "NOOP",	smtp_do_forward,  SLOT_OTHER,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	{ "RSET",	smtp_do_forward,  SLOT_RSET,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	{ "QUIT",	smtp_do_forward,  SLOT_QUIT,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	/* CF_NEW_SESSION so that inside TLS it says "TLS already active". */
	{ "STARTTLS",	smtp_do_starttls, SLOT_OTHER,
	    CF_CLEAR | CF_PRE_TLS | CF_NEW_SESSION, 0 },
	{ "MAIL",	smtp_do_forward,  SLOT_MAIL,	CF_CLEAR, 0 },
	{ "RCPT",	smtp_do_forward,  SLOT_OTHER,	CF_CLEAR, 0 },
	{ "DATA",	smtp_do_forward,  SLOT_DATA,	CF_CLEAR, 0 },
	{ "VRFY",	smtp_do_forward,  SLOT_OTHER,	CF_CLEAR, 0 },
	{ "EXPN",	smtp_do_forward,  SLOT_OTHER,	CF_CLEAR, 0 },
	{ "HELP",	smtp_do_forward,  SLOT_OTHER,	CF_CLEAR, 0 },
	{ "BDAT",	smtp_do_bdat,	  SLOT_BDAT,	CF_COUNTED,
	    EXT_CHUNKING },
	{ "ETRN",	smtp_do_forward,  SLOT_OTHER,	0, EXT_ETRN },
	{ "AUTH",	smtp_do_forward,  SLOT_AUTH,	CF_CREDENTIALS, 0 },
	/* Exchange's server-to-server AUTH, with the same 334 dialogue. */
	{ "X-EXPS",	smtp_do_forward,  SLOT_AUTH,	CF_CREDENTIALS, 0 },
	{ "XCLIENT",	NULL,		  SLOT_OTHER,	CF_AUTHORITY, 0 },
	{ "XFORWARD",	NULL,		  SLOT_OTHER,	CF_AUTHORITY, 0 },
};

static const struct smtp_cmd smtp_cmd_unknown = {
	NULL, smtp_do_forward, SLOT_OTHER, 0, 0
};

/*
 * EHLO keywords rewritten by name, matched by the core (split at any run
 * of SP or HTAB, any case, "AUTH=LOGIN" as AUTH).  STARTTLS is always
 * dropped and, in the cleartext phase of a STARTTLS service, advertised
 * once by us instead.  XEXCH50 is followed by a binary blob we do not
 * frame.
 */
static const struct filter_capa_rule smtp_ehlo_rules[] = {
	{ "STARTTLS",	FCAPA_HIDE_ALWAYS | FCAPA_WORD_PREFIX },
	{ "AUTH",	FCAPA_HIDE_CLEAR | FCAPA_WORD_PREFIX },
	{ "X-EXPS",	FCAPA_HIDE_CLEAR | FCAPA_WORD_PREFIX },
	{ "XCLIENT",	FCAPA_HIDE_ALWAYS | FCAPA_WORD_PREFIX },
	{ "XFORWARD",	FCAPA_HIDE_ALWAYS | FCAPA_WORD_PREFIX },
	{ "XEXCH50",	FCAPA_HIDE_ALWAYS | FCAPA_WORD_PREFIX },
};

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

const struct proto_ops proto_smtp_ops = {
	.name = "smtp",
	.alpn = "smtp",
	.init = smtp_init,
	.free = smtp_free,
	.client_input = smtp_client_input,
	.backend_input = smtp_backend_input,
	.tls_reset = smtp_tls_reset,
	.last_word = smtp_last_word,
	.unavailable = smtp_unavailable,
	.at_boundary = smtp_at_boundary,
	.timeout_reply = smtp_timeout_reply,
	.rate_limited = smtp_rate_limited,
	.backend_tls_ready = smtp_backend_tls_ready,
};

/* ---------------------------------------------------------------------- */
/* Protocol state, the core's hooks. */

static void *
smtp_init(struct filter *f, const struct filter_params *p)
{
	const struct conf_service *svc = p->svc;
	struct smtp	*s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->line_max = svc->max_line_length ? svc->max_line_length :
	    DEFAULT_SMTP_LINE_MAX;
	s->bufsz = s->line_max + 2;
	/* Lent per hook (filter_lend_buffer()): a reply being built is in s->reply. */
	filter_lend_buffer(f, &s->buf, s->bufsz);
	s->reply = evbuffer_new();
	if (s->reply == NULL) {
		smtp_free(s);
		return NULL;
	}
	s->reject_bare = svc->smtp_bare_newline == BARE_NEWLINE_REJECT;
	s->state = SMTP_ST_CMD;
	/* The greeting is the answer to the connection itself. */
	filter_slot_push(f, SLOT_GREETING, NULL, NULL, 0);
	if (svc->xclient) {
		/*
		 * SPEC 9: the client waits (its bytes kept) until XCLIENT
		 * is through; it then sees the greeting that answers it.
		 */
		s->xclient = true;
		snprintf(s->xaddr, sizeof(s->xaddr), "%s",
		    p->client_addr ? p->client_addr : "");
		s->xport = p->client_port;
		snprintf(s->xdest, sizeof(s->xdest), "%s",
		    p->local_addr ? p->local_addr : "");
		s->xdestport = p->local_port;
		if (filter_await_backend(f, false) == -1) {
			smtp_free(s);
			return NULL;
		}
	}
	return s;
}

static void
smtp_free(void *p)
{
	struct smtp	*s = p;

	if (s == NULL)
		return;
	if (s->reply != NULL)
		evbuffer_free(s->reply);
	free(s);
}

/*
 * The client's handshake after the go-ahead has completed
 * (filter_tls_established).  SPEC 8.3: nothing of the cleartext session
 * survives.  No transaction is open (checked before the go-ahead) and AUTH
 * never passed in cleartext; RSET makes sure of the first, and the
 * client's new EHLO resets the rest.  The RSET goes out with the client's
 * first bytes inside TLS: a session whose client says nothing more costs
 * the backend nothing, and its reply (swallowed) can never arrive inside
 * the handshake window (SPEC 8.2).
 */
static void
smtp_tls_reset(struct filter *f, struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	(void)to_backend;
	s->upgraded = s->need_ehlo = true;
	s->ehlo_done = s->in_txn = false;
	/*
	 * SPEC 9: with a fresh backend connection for the TLS phase the
	 * reset holds by construction; its greeting (and our XCLIENT) are
	 * read here and never reach the client.
	 */
	if (f->renew_backend)
		filter_slot_push(f, SLOT_GREETING, NULL, NULL, 0);
	else
		s->rset_due = true;
	s->ext = 0;
	smtp_enter_state(f, SMTP_ST_CMD);
	flog(f, debug, "STARTTLS go-ahead");
}

static void
smtp_last_word(const struct filter *f, char *buf, size_t len)
{
	snprintf(buf, len, "421 4.7.0 %.255s Too many errors\r\n",
	    f->hostname);
}

static void
smtp_unavailable(struct evbuffer *to_client, const char *hostname)
{
	evbuffer_add_printf(to_client,
	    "421 4.3.2 %s Service temporarily unavailable\r\n",
	    hostname ? hostname : "localhost");
}

/*
 * Backend replies reach the client whole (smtp_reply_done()), so the
 * client-bound stream is always at a reply boundary; what matters is the
 * client's: inside DATA content or a BDAT chunk, a 421 would stand in
 * the middle of a message the client is still sending.
 */
static bool
smtp_at_boundary(const struct filter *f)
{
	const struct smtp	*s = f->proto;

	return s->state != SMTP_ST_DATA && s->state != SMTP_ST_BDAT;
}

static void
smtp_timeout_reply(struct evbuffer *to_client, const char *hostname)
{
	evbuffer_add_printf(to_client,
	    "421 4.4.2 %s Error: timeout exceeded\r\n",
	    hostname ? hostname : "localhost");
}

/* SPEC 10, max_connection_rate_per_ip. */
static void
smtp_rate_limited(struct evbuffer *to_client, const char *hostname)
{
	evbuffer_add_printf(to_client,
	    "421 4.7.0 %s Too many connections, slow down\r\n",
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
smtp_enter_state(struct filter *f, enum smtp_state st)
{
	struct smtp	*s = f->proto;

	if (s->state == st)
		return;
	flog(f, debug, "%s -> %s", smtp_state_name(s->state),
	    smtp_state_name(st));
	s->state = st;
}

/* A refusal (counted by the core); true when the session now closes. */
static bool
smtp_refuse(struct filter *f, const char *reply)
{
	if (!filter_refuse(f, NULL, 0, reply))
		return false;
	smtp_enter_state(f, SMTP_ST_CLOSING);
	return true;
}

static void
smtp_close_after(struct filter *f, const char *reply, const char *reason)
{
	filter_close_after(f, reply, reason);
	smtp_enter_state(f, SMTP_ST_CLOSING);
}

/* ---------------------------------------------------------------------- */
/* Client side. */

static enum filter_verdict
smtp_client_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	struct filter_slot	*head;
	enum filter_verdict	 v;

	for (;;) {
		filter_flush(f, to_client);
		if (f->closing)
			return FILTER_CLOSE;
		head = filter_slot_head(f);
		if (head != NULL && head->kind == FSLOT_STARTTLS) {
			v = smtp_starttls_decide(f, in, to_backend, to_client);
			if (v != FILTER_CONTINUE)
				return v;
			continue;
		}
		if (!smtp_client_step(f, in, to_backend))
			return FILTER_CONTINUE;
	}
}

/*
 * The TLS boundary, with STARTTLS at the head of the FIFO: every earlier
 * reply is out, so the transaction state is exact.  The core checks for
 * pipelined bytes (SPEC 8.1) and writes the go-ahead as the last
 * cleartext bytes (8.2); smtp_tls_reset() then forgets the cleartext
 * session (8.3).
 */
static enum filter_verdict
smtp_starttls_decide(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	struct smtp		*s = f->proto;
	enum filter_verdict	 v;

	if (s->in_txn) {
		filter_slot_pop(f);
		smtp_enter_state(f, SMTP_ST_CMD);
		smtp_refuse(f, R_IN_TXN);
		return FILTER_CONTINUE;
	}
	v = filter_starttls(f, in, to_client, R_GO_AHEAD);
	if (v == FILTER_CLOSE)
		smtp_enter_state(f, SMTP_ST_CLOSING);
	return v;
}

/* One framing step; false when nothing can be done before more input. */
static bool
smtp_client_step(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	if (evbuffer_get_length(in) == 0)
		return false;
	if (s->rset_due) {
		/* SPEC 8.3: see smtp_tls_reset(); the FIFO is empty here. */
		evbuffer_add(to_backend, "RSET\r\n", 6);
		filter_slot_push(f, SLOT_SWALLOW, NULL, NULL, 0);
		s->rset_due = false;
	}
	switch (s->state) {
	case SMTP_ST_CMD:
		return smtp_read_command(f, in, to_backend);
	case SMTP_ST_SKIP:
		return smtp_skip_line(f, in);
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
smtp_read_command(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;
	struct smtp_line l;
	size_t		 len;
	unsigned	 flags;

	if (filter_fifo_full(f))
		return false;
	switch (lineio_get(in, s->line_max, s->buf, s->bufsz, &len, &flags)) {
	case LINEIO_MORE:
		return false;
	case LINEIO_TOO_LONG:
		if (!smtp_refuse(f, R_TOO_LONG))
			smtp_enter_state(f, SMTP_ST_SKIP);
		return true;
	case LINEIO_LINE:
		break;
	}
	if (!smtp_check_line(s->buf, len, flags)) {
		smtp_refuse_line(f, s->buf, len);
		return true;
	}
	smtp_parse(&l, s->buf, len);
	smtp_command(f, &l, to_backend);
	return true;
}

static bool
smtp_skip_line(struct filter *f, struct evbuffer *in)
{
	if (lineio_skip(in) == 1)
		smtp_enter_state(f, SMTP_ST_CMD);
	return true;
}

/*
 * After a 334 the next line is a SASL response: opaque, never parsed as a
 * command and never logged.  One the core could not take as base64 is
 * replaced by "*", so the backend cancels the exchange and its 501 goes to
 * the client: the dialogue stays in step with the backend.
 */
static bool
smtp_read_sasl(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	switch (filter_sasl_line(f, in, to_backend)) {
	case FILTER_SASL_MORE:
		return false;
	case FILTER_SASL_BAD:
		/* RFC 4954 section 4: "*" cancels the exchange. */
		evbuffer_add(to_backend, "*\r\n", 3);
		break;
	case FILTER_SASL_SENT:
	case FILTER_SASL_CANCEL:
		break;
	}
	/* Its final reply ends the exchange: a verdict like AUTH's. */
	filter_slot_push(f, SLOT_AUTH, NULL, NULL, 0)->credential = true;
	smtp_enter_state(f, SMTP_ST_AUTH_WAIT);
	return true;
}

/*
 * SPEC 8.4 and RFC 5321 4.1.1: a command line is a verb, then SP and the
 * arguments; no control character may appear in it (HTAB included: no
 * command's grammar allows one).  A backend may read a bare LF or bare CR
 * as a line end, stop at a NUL, or split words at HTAB (Exim) or at a
 * leading blank; what it would make of such a line is not ours to guess,
 * so it is refused and never forwarded.  8-bit bytes pass (SMTPUTF8).
 */
static bool
smtp_check_line(const char *text, size_t len, unsigned flags)
{
	size_t	 i;

	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return false;
	if (len == 0 || text[0] == ' ')
		return false;
	for (i = 0; i < len; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			return false;
	return true;
}

/*
 * Split a checked line: the verb up to the first SP (upper-cased, as it
 * will be forwarded), the arguments after the run of SPs, trailing SPs
 * cut.  The canonical line is rebuilt from these pieces alone, once
 * smtp_canon_args() has joined the arguments with single SPs.
 */
static void
smtp_parse(struct smtp_line *l, char *text, size_t len)
{
	size_t	 i;

	memset(l, 0, sizeof(*l));
	l->text = text;
	l->len = len;
	for (i = 0; i < len && text[i] != ' '; i++)
		if (text[i] >= 'a' && text[i] <= 'z')
			text[i] = (char)(text[i] - 'a' + 'A');
	l->verb = text;
	l->verblen = i;
	while (i < len && text[i] == ' ')
		i++;
	l->args = text + i;
	l->argslen = len - i;
	while (l->argslen > 0 && l->args[l->argslen - 1] == ' ')
		l->argslen--;
}

/*
 * Canonical arguments, in place (SPEC 3 "verb, single SP, arguments";
 * SPEC 8.4).  RFC 5321 4.1.1-4.1.2 separates the parameters of every
 * command by exactly one SP ("MAIL FROM:" Reverse-path [SP
 * Mail-parameters], esmtp-param *(SP esmtp-param), "AUTH" SP mech [SP
 * initial-response], ...), and the only place an SP is data is inside a
 * Quoted-string (qtextSMTP = %d32-33 / ...): a quoted local part of a
 * path ("MAIL FROM:<"a  b"@x>") or a quoted String argument of VRFY,
 * EXPN, HELP or NOOP.  So:
 *  - a run of SPs between arguments becomes one SP.  Every lenient
 *    server (Exim, Sendmail, Postfix) splits arguments at a run of
 *    blanks, so the single SP is what each of them read anyway, and the
 *    backend now sees only the one spelling a strict parser accepts;
 *  - a Quoted-string is copied byte-exact, SPs and all;
 *  - a run of SPs inside an angle-bracket path but outside a
 *    Quoted-string is refused: it is not RFC 5321 syntax, and collapsing
 *    it would change an address, which is not ours to do;
 *  - a Quoted-string without its closing DQUOTE is refused: a server
 *    reading it as one string and one splitting at its blanks (Exim
 *    scans MAIL parameters backwards across quotes) see different
 *    arguments, and no canonical spelling exists.
 * -1 for a refusal; else 0 and l->argslen is the new length.
 */
static int
smtp_canon_args(struct smtp_line *l)
{
	char	*a = l->args;
	size_t	 i = 0, o = 0, end, run;
	bool	 path = false;

	while (i < l->argslen) {
		if (a[i] == '"' && smtp_quote_start(a, o)) {
			if ((end = smtp_quoted_end(a, l->argslen, i)) == 0)
				return -1;
			memmove(a + o, a + i, end - i);
			o += end - i;
			i = end;
			continue;
		}
		if (a[i] == ' ') {
			for (run = i; run < l->argslen && a[run] == ' '; run++)
				;
			if (run - i > 1 && path)
				return -1;
			a[o++] = ' ';
			i = run;
			continue;
		}
		if (a[i] == '<')
			path = true;
		else if (a[i] == '>')
			path = false;
		a[o++] = a[i++];
	}
	l->argslen = o;
	return 0;
}

/*
 * Whether a DQUOTE after the o canonical bytes of a opens a Quoted-string
 * (RFC 5321 4.1.2): a String argument starts after SP (or at the first
 * argument), a Local-part after "<" or after the ":" that ends an A-d-l
 * source route ("FROM:" in the sloppy form without brackets).  Anywhere
 * else it is an ordinary byte, as in an xtext esmtp-value (ORCPT=).
 */
static bool
smtp_quote_start(const char *a, size_t o)
{
	return o == 0 || a[o - 1] == ' ' || a[o - 1] == '<' ||
	    a[o - 1] == ':';
}

/*
 * The end (one past the closing DQUOTE) of the Quoted-string opened at
 * a[i], with quoted-pairSMTP = "\" %d32-126; 0 if it is not closed.
 */
static size_t
smtp_quoted_end(const char *a, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (a[i] == '\\')
			i++;
		else if (a[i] == '"')
			return i + 1;
	}
	return 0;
}

static const struct smtp_cmd *
smtp_cmd_lookup(const char *verb, size_t len)
{
	size_t	 i;

	for (i = 0; i < nitems(smtp_cmds); i++)
		if (filter_word_eq(verb, len, smtp_cmds[i].verb))
			return &smtp_cmds[i];
	return &smtp_cmd_unknown;
}

/* What tolerant servers split words on, to spot a BDAT we refuse. */
static bool
smtp_lenient_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/*
 * A line that failed smtp_check_line(), never forwarded.  The verb a
 * tolerant server would read in it decides the reply: for BDAT a chunk
 * may follow, so it is refused as a BDAT and its bytes are skipped, never
 * read as commands; XCLIENT and XFORWARD keep their own refusal in any
 * spelling (SPEC 3); anything else is a syntax error.
 */
static void
smtp_refuse_line(struct filter *f, const char *text, size_t len)
{
	const struct smtp_cmd	*cmd;
	size_t			 i = 0, v;

	while (i < len && smtp_lenient_blank(text[i]))
		i++;
	for (v = i; i < len && !smtp_lenient_blank(text[i]); i++)
		;
	cmd = smtp_cmd_lookup(text + v, i - v);
	if (cmd->flags & CF_COUNTED)
		smtp_bdat_refuse(f, text, len);
	else if (cmd->flags & CF_AUTHORITY) {
		flog(f, info, "%s refused", cmd->verb);
		filter_refusal_kind(f, FILTER_REF_AUTHORITY);
		smtp_refuse(f, R_NOT_PERMITTED);
	} else
		smtp_refuse(f, R_SYNTAX);
}

static void
smtp_command(struct filter *f, struct smtp_line *l,
    struct evbuffer *to_backend)
{
	const struct smtp_cmd	*cmd = smtp_cmd_lookup(l->verb, l->verblen);
	const char		*refusal;

	if ((cmd->flags & CF_COUNTED) &&
	    smtp_bdat_canonical(l->text, l->len, &l->size, &l->last) == -1) {
		smtp_bdat_refuse(f, l->text, l->len);
		return;
	}
	if ((refusal = smtp_check_policy(f, cmd, l)) != NULL) {
		/* RFC 3030: the chunk follows a refused BDAT all the same. */
		if (!smtp_refuse(f, refusal) && (cmd->flags & CF_COUNTED))
			smtp_bdat_begin(f, l->size, false);
		return;
	}
	/* SPEC 8.4: arguments only in their one canonical spelling. */
	if (smtp_canon_args(l) == -1) {
		flog(f, info, "ambiguous arguments refused");
		smtp_refuse(f, R_ARGS);
		return;
	}
	cmd->handler(f, cmd, l, to_backend);
}

/* The reply refusing this command here, or NULL to hand it on. */
static const char *
smtp_check_policy(struct filter *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l)
{
	char		 verb[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	struct smtp	*s = f->proto;

	/* SPEC 3: only mailtlsd speaks with the proxy's authority. */
	if (cmd->flags & CF_AUTHORITY) {
		flog(f, info, "%s refused", log_escape(verb, sizeof(verb),
		    l->verb, l->verblen, LOG_CLIENT_TEXT_MAX));
		filter_refusal_kind(f, FILTER_REF_AUTHORITY);
		return R_NOT_PERMITTED;
	}
	/* SPEC 3 and 8.3: the session after STARTTLS starts with EHLO. */
	if (s->need_ehlo && !(cmd->flags & CF_NEW_SESSION))
		return R_EHLO_FIRST;
	if (filter_cleartext(f)) {
		/* SPEC 8.5; the arguments may be credentials: not logged. */
		if (cmd->flags & CF_CREDENTIALS) {
			flog(f, warnx, "AUTH refused in cleartext");
			filter_refusal_kind(f, FILTER_REF_CREDENTIALS);
			return f->require_tls ? R_TLS_FIRST : R_ENCRYPT;
		}
		if (f->require_tls && !(cmd->flags & CF_PRE_TLS))
			return R_TLS_FIRST;
		/* SPEC 3: the cleartext allow-list. */
		if (!(cmd->flags & CF_CLEAR) && !(cmd->ext & s->ext))
			return R_UNKNOWN;
	}
	/* SPEC 8.4: only a backend that counts the chunk gets it. */
	if ((cmd->flags & CF_COUNTED) && !(s->ext & EXT_CHUNKING))
		return R_NO_CHUNKING;
	/* SPEC 10: an address over its failures sends no more credentials. */
	if (cmd->slot == SLOT_AUTH && filter_auth_blocked(f))
		return R_AUTH_LIMIT;
	return NULL;
}

/*
 * Forward a command in its canonical form and remember what its reply
 * decides: DATA and AUTH hold the client until the reply says how the
 * next bytes are framed (354, 334); QUIT ends what we read.
 */
static void
smtp_do_forward(struct filter *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	filter_send_command(to_backend, NULL, 0, l->verb, l->verblen,
	    l->args, l->argslen);
	filter_slot_push(f, cmd->slot, NULL, NULL, 0)->credential =
	    cmd->slot == SLOT_AUTH;
	switch (cmd->slot) {
	case SLOT_EHLO:
	case SLOT_HELO:
		/* A failed EHLO sets it again (smtp_reply_effect()). */
		s->need_ehlo = false;
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
smtp_do_starttls(struct filter *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	(void)cmd;
	(void)to_backend;
	if (l->argslen > 0)
		smtp_refuse(f, R_ARGS);
	else if (!filter_cleartext(f))
		smtp_refuse(f, R_TLS_ACTIVE);
	else if (!f->starttls_svc)
		smtp_refuse(f, R_NO_TLS);
	else {
		filter_slot_push(f, FSLOT_STARTTLS, NULL, NULL, 0);
		smtp_enter_state(f, SMTP_ST_STARTTLS_WAIT);
	}
}

/* ---------------------------------------------------------------------- */
/* BDAT (RFC 3030). */

/*
 * The one form we forward: "BDAT" SP 1*DIGIT [SP "LAST"], keywords in any
 * case, single SPs, nothing else, size below 2^31.  0 and the size, or -1.
 */
static int
smtp_bdat_canonical(const char *text, size_t len, uint64_t *size,
    bool *last)
{
	size_t		 i = 5, digits = 0;
	uint64_t	 n = 0;

	if (len < 6 || !filter_word_eq(text, 4, "BDAT") || text[4] != ' ')
		return -1;
	for (; i < len && text[i] >= '0' && text[i] <= '9'; i++, digits++)
		if ((n = n * 10 + (uint64_t)(text[i] - '0')) >=
		    SMTP_BDAT_SIZE_LIMIT)
			return -1;
	if (digits == 0)
		return -1;
	if (i == len)
		*last = false;
	else if (len - i == 5 && text[i] == ' ' &&
	    filter_word_eq(text + i + 1, 4, "LAST"))
		*last = true;
	else
		return -1;
	*size = n;
	return 0;
}

/*
 * The chunk size a tolerant server would read from any BDAT line: the
 * first word after the verb, all digits, within 64 bits.  -1 if none.
 */
static int
smtp_bdat_lenient(const char *text, size_t len, uint64_t *size)
{
	size_t		 i = 0, digits = 0;
	uint64_t	 n = 0, d;

	while (i < len && smtp_lenient_blank(text[i]))
		i++;
	while (i < len && !smtp_lenient_blank(text[i]))
		i++;
	while (i < len && smtp_lenient_blank(text[i]))
		i++;
	for (; i < len && text[i] >= '0' && text[i] <= '9'; i++, digits++) {
		d = (uint64_t)(text[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	if (digits == 0 || (i < len && !smtp_lenient_blank(text[i])))
		return -1;
	*size = n;
	return 0;
}

/*
 * SPEC 3: a BDAT line in any other form is refused, and its chunk, if a
 * size can be read, skipped by count: the client will send it whatever we
 * answer.  Without a size nothing after the line can be framed: the
 * session ends.
 */
static void
smtp_bdat_refuse(struct filter *f, const char *text, size_t len)
{
	uint64_t	 size;

	if (smtp_bdat_lenient(text, len, &size) == -1) {
		flog(f, info, "malformed BDAT, closing");
		smtp_close_after(f, R_ARGS, "malformed BDAT");
		return;
	}
	flog(f, info, "non-canonical BDAT refused, %" PRIu64 " bytes "
	    "skipped", size);
	if (!smtp_refuse(f, R_ARGS))
		smtp_bdat_begin(f, size, false);
}

/* Re-serialised from the parsed size: leading zeros and case go. */
static void
smtp_do_bdat(struct filter *f, const struct smtp_cmd *cmd,
    const struct smtp_line *l, struct evbuffer *to_backend)
{
	(void)cmd;
	evbuffer_add_printf(to_backend, "BDAT %" PRIu64 "%s\r\n", l->size,
	    l->last ? " LAST" : "");
	filter_slot_push(f, l->last ? SLOT_BDAT_LAST : SLOT_BDAT, NULL,
	    NULL, 0);
	/* No hold: RFC 3030 lets the chunk follow without waiting. */
	smtp_bdat_begin(f, l->size, true);
}

static void
smtp_bdat_begin(struct filter *f, uint64_t size, bool forward)
{
	struct smtp	*s = f->proto;

	if (size == 0)
		return;
	s->bdat_left = size;
	s->bdat_forward = forward;
	smtp_enter_state(f, SMTP_ST_BDAT);
}

/* Chunk bytes are counted, never parsed: not even CRLF.CRLF counts. */
static void
smtp_bdat_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;
	size_t		 n = evbuffer_get_length(in);

	if ((uint64_t)n > s->bdat_left)
		n = (size_t)s->bdat_left;
	if (s->bdat_forward)
		evbuffer_remove_buffer(in, to_backend, n);
	else
		evbuffer_drain(in, n);
	s->bdat_left -= n;
	if (s->bdat_left == 0)
		smtp_enter_state(f, SMTP_ST_CMD);
}
/* ---------------------------------------------------------------------- */
/* DATA content (RFC 5321 4.1.1.4, 4.5.2). */

/*
 * Scan the buffered content a few chunks at a time, without copying it
 * into a line buffer: the whole state is in dstate.
 */
static void
smtp_data_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	struct evbuffer_iovec	 v[SMTP_DATA_IOV];
	struct smtp_stage	 st;
	size_t			 used = 0;
	bool			 end = false;
	int			 i, n;

	st.out = to_backend;
	st.len = 0;
	n = evbuffer_peek(in, -1, NULL, v, SMTP_DATA_IOV);
	if (n > SMTP_DATA_IOV)
		n = SMTP_DATA_IOV;
	for (i = 0; i < n && !end; i++)
		used += smtp_data_scan(f, v[i].iov_base, v[i].iov_len,
		    &st, &end);
	smtp_stage_flush(&st);
	evbuffer_drain(in, used);
	if (end)
		smtp_data_end(f, to_backend);
}

/*
 * Content for the backend is gathered here and added to its buffer a
 * block at a time: an evbuffer_add per line (two, with its CRLF) runs
 * the buffer's callbacks each time and cost more than the scan itself.
 */
static void
smtp_stage_flush(struct smtp_stage *st)
{
	if (st->len > 0)
		evbuffer_add(st->out, st->buf, st->len);
	st->len = 0;
}

static void
smtp_stage_add(struct smtp_stage *st, const char *p, size_t n)
{
	if (st->len + n > sizeof(st->buf)) {
		smtp_stage_flush(st);
		if (n > sizeof(st->buf) / 2) {
			/* A long run: no copy through the stage. */
			evbuffer_add(st->out, p, n);
			return;
		}
	}
	memcpy(st->buf + st->len, p, n);
	st->len += n;
}

/* A bare LF or bare CR in content: in reject mode, refuse the message. */
static void
smtp_data_bare(struct filter *f)
{
	struct smtp	*s = f->proto;

	if (s->reject_bare && !s->data_refused) {
		/*
		 * smtp_bare_newline = reject: forward nothing more.  The
		 * backend never receives an end of DATA and drops the partial
		 * message when the session closes after our 550.
		 */
		flog(f, warnx, "bare LF/CR in message, refusing");
		filter_count_refusal(f, FILTER_REF_SMUGGLING);
		s->data_refused = true;
	}
}

#define DATA_OUT(b, n)	do {						\
	if (!s->data_refused)						\
		smtp_stage_add(out, (b), (n));				\
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
smtp_data_scan(struct filter *f, const char *p, size_t n,
    struct smtp_stage *out, bool *end)
{
	struct smtp	*s = f->proto;
	const char	*q;
	size_t		 i = 0, run, cr = 0, lf = 0;
	bool		 cr_known = false, lf_known = false;
	char	 c;

	while (i < n) {
		c = p[i];
		switch (s->dstate) {
		case D_BOL:
		case D_BOLX:
			if (c == '.') {
				s->dstate = s->dstate == D_BOL ? D_DOT : D_DOTX;
				i++;
				continue;
			}
			s->dstate = D_MID;
			continue;
		case D_MID:
			/*
			 * The common case: a run of ordinary bytes, up to the
			 * next CR or LF.  Where they are is remembered, so
			 * that each byte is searched once (memchr) however
			 * the CRs and LFs alternate.
			 */
			if (!cr_known || cr < i) {
				q = memchr(p + i, '\r', n - i);
				cr = q != NULL ? (size_t)(q - p) : n;
				cr_known = true;
			}
			if (!lf_known || lf < i) {
				q = memchr(p + i, '\n', (cr < n ? cr + 1 : n) - i);
				lf = q != NULL ? (size_t)(q - p) : n;
				lf_known = q != NULL || cr >= n;
			}
			run = cr < lf ? cr : lf;
			if (run > i) {
				DATA_OUT(p + i, run - i);
				i = run;
				continue;
			}
			if (c == '\r')
				s->dstate = D_CR;
			else {
				smtp_data_bare(f);
				DATA_OUT("\r\n", 2);
				s->dstate = D_BOLX;
			}
			i++;
			continue;
		case D_CR:
			if (c == '\n') {
				DATA_OUT("\r\n", 2);
				s->dstate = D_BOL;
				i++;
				continue;
			}
			smtp_data_bare(f);
			DATA_OUT("\r\n", 2);
			s->dstate = D_BOLX;	/* c not used yet */
			continue;
		case D_DOT:
		case D_DOTX:
			if (c == '\r') {
				s->dstate = s->dstate == D_DOT ? D_DOTCR :
				    D_DOTXCR;
				i++;
				continue;
			}
			if (c == '\n') {
				smtp_data_bare(f);
				i++;
				if (s->data_refused) {
					*end = true;
					return i;
				}
				DATA_OUT("..\r\n", 4);
				s->dstate = D_BOLX;
				continue;
			}
			/* ".x": byte-exact, dot-stuffing untouched. */
			DATA_OUT(".", 1);
			s->dstate = D_MID;
			continue;
		case D_DOTCR:
			if (c == '\n') {
				*end = true;
				return i + 1;
			}
			smtp_data_bare(f);
			DATA_OUT("..\r\n", 4);
			s->dstate = D_BOLX;	/* c not used yet */
			continue;
		case D_DOTXCR:
			if (c == '\n' && s->data_refused) {
				*end = true;
				return i + 1;
			}
			if (c == '\n') {
				/* ".\r\n" after a bare newline: content. */
				DATA_OUT("..\r\n", 4);
				s->dstate = D_BOL;
				i++;
				continue;
			}
			smtp_data_bare(f);
			DATA_OUT("..\r\n", 4);
			s->dstate = D_BOLX;	/* c not used yet */
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
smtp_data_end(struct filter *f, struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	if (s->data_refused) {
		s->data_refused = false;
		smtp_close_after(f, R_BARE_NEWLINE, "bare newline in message");
		return;
	}
	/* The CRLF before the dot went out with the last content line. */
	evbuffer_add(to_backend, ".\r\n", 3);
	filter_slot_push(f, SLOT_DATA_END, NULL, NULL, 0);
	smtp_enter_state(f, SMTP_ST_CMD);
}

/* ---------------------------------------------------------------------- */
/* Backend side. */

static enum filter_verdict
smtp_backend_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;
	size_t		 len;
	unsigned	 flags;

	while (!f->closing) {
		/* After the server's STARTTLS go-ahead: the core's to cut. */
		if (filter_backend_paused(f))
			return FILTER_CONTINUE;
		switch (lineio_get(in, s->line_max, s->buf, s->bufsz, &len,
		    &flags)) {
		case LINEIO_MORE:
			return FILTER_CONTINUE;
		case LINEIO_TOO_LONG:
			return smtp_backend_error(f, "reply line too long");
		case LINEIO_LINE:
			if (!smtp_backend_line(f, len, flags, to_client,
			    to_backend))
				return FILTER_CLOSE;
			break;
		}
	}
	return FILTER_CLOSE;
}

static enum filter_verdict
smtp_backend_error(struct filter *f, const char *what)
{
	flog(f, warnx, "backend protocol error: %s", what);
	f->reason = "backend protocol error";
	f->closing = true;
	smtp_enter_state(f, SMTP_ST_CLOSING);
	return FILTER_CLOSE;
}

/* One reply line (in s->buf); false when the session ends. */
static bool
smtp_backend_line(struct filter *f, size_t len, unsigned flags,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	char			 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	struct smtp		*s = f->proto;
	struct filter_slot	*head = filter_slot_head(f);
	int			 code;
	bool			 final;

	/* SPEC 8.2: only a reply to a pending command is ever delivered. */
	if (!filter_backend_owes(f)) {
		flog(f, warnx, "unsolicited backend output: %s",
		    log_escape(esc, sizeof(esc), s->buf, len,
		    LOG_CLIENT_TEXT_MAX));
		f->reason = "unsolicited backend output";
		f->closing = true;
		smtp_enter_state(f, SMTP_ST_CLOSING);
		return false;
	}
	if (smtp_check_reply_line(s->buf, len, flags,
	    filter_backend_dialogue(f), &code, &final) == -1) {
		smtp_backend_error(f, "malformed reply line");
		return false;
	}
	if (s->reply_lines == 0 && smtp_reply_begin(f, head->kind, code) == -1)
		return false;
	if (code != s->reply_code) {
		smtp_backend_error(f, "reply code changes inside a reply");
		return false;
	}
	if (++s->reply_lines > SMTP_REPLY_LINES_MAX ||
	    evbuffer_get_length(s->reply) + len > SMTP_REPLY_BYTES_MAX) {
		smtp_backend_error(f, "reply too long");
		return false;
	}
	smtp_reply_add(f, len);
	if (final)
		smtp_reply_done(f, head->kind, to_client, to_backend);
	return !f->closing;
}

/*
 * RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ].  The codes a
 * server may send are 2yz-5yz with y in 0-5.  A bare LF ending is
 * accepted from a relayed session (we write CRLF); CR and NUL inside are
 * not.  In the cleartext STARTTLS dialogue of backend_tls = starttls
 * (dialogue) the bare LF is refused too, as IMAP and POP3 refuse it
 * there: those lines are what a man in the middle would forge, and a
 * server that cannot end a line with CRLF is not one we trust to end
 * its go-ahead where we think it ends.
 */
static int
smtp_check_reply_line(const char *s, size_t len, unsigned flags,
    bool dialogue, int *code, bool *final)
{
	if (flags & (LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return -1;
	if (dialogue && (flags & LINEIO_BARE_LF))
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
smtp_reply_begin(struct filter *f, unsigned kind, int code)
{
	struct smtp	*s = f->proto;

	if ((code == 334 && (kind != SLOT_AUTH || filter_cleartext(f))) ||
	    (code == 354 && kind != SLOT_DATA)) {
		smtp_backend_error(f, "unexpected intermediate reply");
		return -1;
	}
	if (kind == SLOT_SWALLOW && code / 100 != 2) {
		smtp_backend_error(f, "RSET after STARTTLS refused");
		return -1;
	}
	s->reply_code = code;
	s->reply_kept = 0;
	s->reply_rewrite = kind == SLOT_EHLO && code == 250;
	s->reply_ext = 0;
	return 0;
}

/*
 * Keep one line of the reply being assembled (the line is in s->buf).
 * EHLO keywords go through the core's matcher: split at any run of SP or
 * HTAB and compared in any case, so "AUTH\tPLAIN" or "auth=login" from a
 * backend is hidden in cleartext like "AUTH PLAIN".
 */
static void
smtp_reply_add(struct filter *f, size_t len)
{
	struct smtp	*s = f->proto;
	const char	*text = s->buf + (len > 3 ? 4 : 3), *kw;
	size_t		 tlen = len > 3 ? len - 4 : 0, pos = 0, kwlen;

	if (!s->reply_rewrite) {
		evbuffer_add(s->reply, s->buf, len);
		evbuffer_add(s->reply, "\r\n", 2);
		return;
	}
	/* The first EHLO line is the server's name, not a keyword. */
	if (s->reply_lines > 1 && filter_capa_next(text, tlen, &pos, &kw,
	    &kwlen)) {
		if (filter_capa_hidden(f, smtp_ehlo_rules,
		    nitems(smtp_ehlo_rules), kw, kwlen))
			return;
		if (filter_word_eq(kw, kwlen, "CHUNKING"))
			s->reply_ext |= EXT_CHUNKING;
		else if (filter_word_eq(kw, kwlen, "ETRN"))
			s->reply_ext |= EXT_ETRN;
	}
	evbuffer_add(s->reply, text, tlen);
	evbuffer_add(s->reply, "\r\n", 2);
	s->reply_kept++;
}

/* The reply answers the head slot, of this kind. */
static void
smtp_reply_done(struct filter *f, unsigned kind, struct evbuffer *to_client,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	/* SPEC 10: 535 is SMTP's "authentication credentials invalid". */
	if (s->reply_code != 334)
		filter_auth_verdict(f, filter_slot_head(f),
		    s->reply_code == 535);
	filter_slot_pop(f);
	if (kind == SLOT_XEHLO || kind == SLOT_XCLIENT ||
	    kind == SLOT_BSTARTTLS || (kind == SLOT_GREETING &&
	    (s->xclient || filter_backend_dialogue(f)))) {
		smtp_prelude_reply(f, kind, to_client, to_backend);
		s->reply_lines = 0;
		return;
	}
	if (kind == SLOT_SWALLOW)
		evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
	else if (s->reply_rewrite)
		smtp_ehlo_emit(f, to_client);
	else
		evbuffer_add_buffer(to_client, s->reply);
	smtp_reply_effect(f, kind, s->reply_code);
	s->reply_lines = 0;
	/* A fresh backend's greeting (SPEC 9): the client never saw it. */
	if (kind == SLOT_GREETING)
		filter_backend_ready(f, s->reply_code == 220,
		    "backend greeting is not 220");
	filter_flush(f, to_client);
}

/* What a complete reply means for the session state. */
static void
smtp_reply_effect(struct filter *f, unsigned kind, int code)
{
	struct smtp	*s = f->proto;
	bool		 ok = code >= 200 && code < 300;

	switch (kind) {
	case SLOT_EHLO:
	case SLOT_HELO:
		/* RFC 5321 4.1.4: EHLO/HELO also end a transaction. */
		if (ok) {
			s->in_txn = false;
			s->ehlo_done = true;
			/* HELO: no extensions; EHLO: what it advertised. */
			s->ext = kind == SLOT_EHLO ? s->reply_ext : 0;
		} else if (s->upgraded && !s->ehlo_done)
			s->need_ehlo = true;
		break;
	case SLOT_MAIL:
		if (ok)
			s->in_txn = true;
		break;
	case SLOT_RSET:
		if (ok)
			s->in_txn = false;
		break;
	case SLOT_DATA:
		/* Anything but 354: the held bytes are commands after all. */
		if (code == 354)
			s->dstate = D_BOL;
		smtp_enter_state(f, code == 354 ? SMTP_ST_DATA : SMTP_ST_CMD);
		break;
	case SLOT_DATA_END:
	case SLOT_BDAT_LAST:
		s->in_txn = false;
		break;
	case SLOT_AUTH:
		smtp_enter_state(f, code == 334 ? SMTP_ST_SASL : SMTP_ST_CMD);
		break;
	default:
		break;
	}
}

/*
 * Write the kept EHLO lines, plus our STARTTLS in the cleartext phase of
 * a STARTTLS service, with "250-" on all but the last and "250 " on the
 * last (which may not be the backend's last, if we dropped that one).
 */
static void
smtp_ehlo_emit(struct filter *f, struct evbuffer *to_client)
{
	struct smtp	*s = f->proto;
	bool		 add = filter_cleartext(f) && f->starttls_svc;
	unsigned	 total = s->reply_kept + (add ? 1 : 0), i;
	size_t		 len;
	unsigned	 flags;

	for (i = 0; i < s->reply_kept; i++) {
		if (lineio_get(s->reply, s->line_max, s->buf, s->bufsz, &len,
		    &flags) != LINEIO_LINE)
			break;	/* cannot happen: we wrote these lines */
		evbuffer_add(to_client, i + 1 == total ? "250 " : "250-", 4);
		evbuffer_add(to_client, s->buf, len);
		evbuffer_add(to_client, "\r\n", 2);
	}
	evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
	if (add)
		evbuffer_add(to_client, "250 STARTTLS\r\n", 14);
}

/* ---------------------------------------------------------------------- */
/* The backend prelude: XCLIENT (SPEC 9) and STARTTLS (SPEC 12). */

/*
 * The dialogue we hold with every new backend connection of an xclient
 * or backend_tls = starttls service before the client may talk to it:
 * greeting, our EHLO, then our STARTTLS (and, after the handshake, our
 * EHLO again) and our XCLIENT.  With xclient the client only ever sees
 * the reply to XCLIENT, which is the greeting of the session the backend
 * now holds for the client (so a backend that turns this client away says
 * so in it); on the fresh connection after STARTTLS the core swallows
 * that one too.  Without it, after STARTTLS, the client gets our own
 * greeting (smtp_backend_tls_ready).  Anything but success fails the
 * backend: the core gives the client the temporary failure, or the
 * session tries the next backend.
 */
static void
smtp_prelude_reply(struct filter *f, unsigned kind,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;
	int		 code = s->reply_code, attrs;
	size_t		 len;

	switch (kind) {
	case SLOT_GREETING:
		evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
		if (code != 220) {
			flog(f, info, "backend greeting %d", code);
			filter_backend_ready(f, false,
			    "backend greeting is not 220");
			return;
		}
		smtp_own_ehlo(f, to_backend);
		break;
	case SLOT_XEHLO:
		if (code != 250) {
			evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
			flog(f, info, "backend answered our EHLO with %d", code);
			filter_backend_ready(f, false,
			    "backend refused our EHLO");
			return;
		}
		if (filter_backend_dialogue(f)) {
			if (!smtp_ehlo_keyword(f, "STARTTLS", &len))
				filter_backend_ready(f, false,
				    "server does not offer STARTTLS");
			else
				filter_own_command(f, to_backend,
				    SLOT_BSTARTTLS, NULL, "STARTTLS");
			return;
		}
		attrs = smtp_xclient_attrs(f);
		if (attrs == -1)
			filter_backend_ready(f, false,
			    "backend does not advertise XCLIENT");
		else if (!(attrs & XA_ADDR))
			filter_backend_ready(f, false,
			    "backend's XCLIENT does not take ADDR");
		else if (!filter_prelude_unsolicited(f)) {
			smtp_xclient_send(f, (unsigned)attrs, to_backend);
			filter_slot_push(f, SLOT_XCLIENT, NULL, NULL, 0);
		}
		break;
	case SLOT_BSTARTTLS:
		evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
		if (code != 220) {
			flog(f, info, "backend answered STARTTLS with %d",
			    code);
			filter_backend_ready(f, false,
			    "server refused STARTTLS");
			return;
		}
		/* RFC 3207 4.2: the server's 220 is its last cleartext. */
		filter_backend_go_ahead(f);
		break;
	case SLOT_XCLIENT:
		if (code / 100 != 2) {
			evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
			flog(f, info, "backend answered XCLIENT with %d", code);
			filter_backend_ready(f, false,
			    "backend refused XCLIENT");
			return;
		}
		flog(f, debug, "XCLIENT accepted");
		evbuffer_add_buffer(to_client, s->reply);
		filter_backend_ready(f, true, NULL);
		break;
	}
}

/* Our EHLO, with the service's hostname (conf.c bounds its length). */
static void
smtp_own_ehlo(struct filter *f, struct evbuffer *to_backend)
{
	char	 line[300];

	snprintf(line, sizeof(line), "EHLO %s", f->hostname);
	filter_own_command(f, to_backend, SLOT_XEHLO, NULL, line);
}

/*
 * SPEC 12: the backend leg is TLS now and verified.  A new SMTP session
 * inside it (RFC 3207 4.2: the server forgets what it knew): with
 * xclient our EHLO and XCLIENT first, and the reply to XCLIENT greets the
 * client; otherwise our own greeting, and the client's EHLO will be the
 * server's first command inside TLS.
 */
static void
smtp_backend_tls_ready(struct filter *f, struct evbuffer *to_client,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	s->ext = 0;
	if (s->xclient) {
		smtp_own_ehlo(f, to_backend);
		return;
	}
	evbuffer_add_printf(to_client, "220 %s ESMTP\r\n", f->hostname);
	filter_backend_ready(f, true, NULL);
}

/*
 * Find an EHLO keyword in the reply in s->reply ("250-XCLIENT NAME ADDR"):
 * keywords are matched like every EHLO keyword (any case, split at any
 * run of SP or HTAB), the first line (the server's name) is not one.  On
 * success the line is left in s->buf (*lenp bytes); s->reply is consumed
 * either way.
 */
static bool
smtp_ehlo_keyword(struct filter *f, const char *kw, size_t *lenp)
{
	struct smtp	*s = f->proto;
	const char	*tok;
	size_t		 len, pos, toklen, n;
	unsigned	 flags;
	bool		 found = false;

	for (n = 0; !found && n < SMTP_REPLY_LINES_MAX && lineio_get(s->reply,
	    s->line_max, s->buf, s->bufsz, &len, &flags) == LINEIO_LINE; n++) {
		pos = 0;
		if (n > 0 && len > 4 && filter_capa_next(s->buf + 4, len - 4,
		    &pos, &tok, &toklen) && filter_word_eq(tok, toklen, kw)) {
			found = true;
			*lenp = len;
		}
	}
	evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
	return found;
}

/*
 * The attributes of the XCLIENT keyword in the EHLO reply in s->reply
 * ("250-XCLIENT NAME ADDR PORT ..."), as XA_* bits, or -1 when XCLIENT
 * is not advertised.  Consumes s->reply.
 *
 * A reply that lists XCLIENT more than once is odd (Postfix never does);
 * the first line is the one used, deliberately, as for every keyword
 * smtp_ehlo_keyword() looks up: the attributes sent are then a subset of
 * what that line promised, and a later line cannot widen them.
 */
static int
smtp_xclient_attrs(struct filter *f)
{
	static const struct {
		const char	*name;
		int		 bit;
	} known[] = {
		{ "ADDR", XA_ADDR }, { "PORT", XA_PORT }, { "NAME", XA_NAME },
		{ "DESTADDR", XA_DESTADDR }, { "DESTPORT", XA_DESTPORT },
	};
	struct smtp	*s = f->proto;
	const char	*tok;
	size_t		 len, pos = 0, toklen, i;
	int		 attrs = 0;

	if (!smtp_ehlo_keyword(f, "XCLIENT", &len))
		return -1;
	/* The keyword itself, then its attributes. */
	(void)filter_capa_next(s->buf + 4, len - 4, &pos, &tok, &toklen);
	while (filter_capa_next(s->buf + 4, len - 4, &pos, &tok, &toklen))
		for (i = 0; i < nitems(known); i++)
			if (filter_word_eq(tok, toklen, known[i].name))
				attrs |= known[i].bit;
	return attrs;
}

/* XCLIENT with what we know among the attributes the backend takes. */
static void
smtp_xclient_send(struct filter *f, unsigned attrs,
    struct evbuffer *to_backend)
{
	struct smtp	*s = f->proto;

	evbuffer_add(to_backend, "XCLIENT", 7);
	smtp_xaddr(to_backend, " ADDR=", s->xaddr);
	if ((attrs & XA_PORT) && s->xport > 0)
		evbuffer_add_printf(to_backend, " PORT=%d", s->xport);
	/* We resolve no names: none is verified (XCLIENT_README). */
	if (attrs & XA_NAME)
		evbuffer_add(to_backend, " NAME=[UNAVAILABLE]", 19);
	if ((attrs & XA_DESTADDR) && s->xdest[0] != '\0')
		smtp_xaddr(to_backend, " DESTADDR=", s->xdest);
	if ((attrs & XA_DESTPORT) && s->xdestport > 0)
		evbuffer_add_printf(to_backend, " DESTPORT=%d", s->xdestport);
	evbuffer_add(to_backend, "\r\n", 2);
	flog(f, debug, "XCLIENT ADDR=%s PORT=%d sent", s->xaddr, s->xport);
}

/*
 * An address attribute: IPv4 as is, IPv6 with the "IPV6:" prefix Postfix
 * expects, anything else (a client on a unix socket) "[UNAVAILABLE]".
 */
static void
smtp_xaddr(struct evbuffer *out, const char *attr, const char *addr)
{
	unsigned char	 buf[sizeof(struct in6_addr)];

	evbuffer_add(out, attr, strlen(attr));
	if (inet_pton(AF_INET, addr, buf) == 1)
		smtp_xtext(out, addr);
	else if (inet_pton(AF_INET6, addr, buf) == 1) {
		evbuffer_add(out, "IPV6:", 5);
		smtp_xtext(out, addr);
	} else
		evbuffer_add(out, "[UNAVAILABLE]", 13);
}

/* RFC 1891 5: "+" and "=" and bytes outside "!".."~" become "+XX". */
static void
smtp_xtext(struct evbuffer *out, const char *v)
{
	const unsigned char	*p;

	for (p = (const unsigned char *)v; *p != '\0'; p++) {
		if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
			evbuffer_add_printf(out, "+%02X", *p);
		else
			evbuffer_add(out, p, 1);
	}
}
