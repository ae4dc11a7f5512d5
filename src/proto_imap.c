/*
 * proto_imap.c - the IMAP filter (SPEC sections 3 and 8).
 *
 * Owns the IMAP dialogue for the whole session: the cleartext phase of
 * STARTTLS services, and implicit-TLS sessions too, because the framing and
 * proxy-authority rules (ID parameters) hold everywhere.
 *
 * Client side: a command is a first line ("tag SP verb [SP args]") plus,
 * for every literal marker {n} / {n+} / ~{n} ending a line, n counted bytes
 * and a continuation line.  Each line is framed with lineio and checked by
 * a strict lexer (quotes open only at a token start and close on the line,
 * "{" only as the final literal marker), so we find exactly the literals a
 * conforming backend finds; lines we cannot frame that way are answered
 * here and never forwarded (SPEC 8.4).  A command is then either forwarded
 * (lines canonical, literal bytes streamed), collected (ID, rewritten
 * before it leaves) or discarded (refused; its {n+} bytes are dropped, and
 * a refused synchronizing literal is simply never asked for: RFC 9051
 * section 7.5 has the client drop the command when the tagged reply comes
 * instead of "+").  While the backend decides how the next client bytes
 * are framed (synchronizing literal, AUTHENTICATE, IDLE) client input is
 * held until its "+" or its tagged completion arrives.
 *
 * Backend side: responses are framed line by line and literal by literal
 * (streamed, never buffered whole), so message text in a FETCH is never
 * taken for a status line.  Capability lists are rewritten by keyword
 * wherever they appear; the greeting must be OK, PREAUTH (refused in
 * cleartext) or BYE.
 *
 * Invariants: our replies leave in command order (FIFO of at most
 * FILTER_PENDING_MAX slots; a reply is written only at a backend message
 * boundary); "tag OK Begin TLS negotiation now" is written only when every
 * earlier command has completed and nothing follows the STARTTLS line
 * (SPEC 8.1, 8.2); no "+" is ever sent for LOGIN/AUTHENTICATE in cleartext
 * and they never reach the backend (SPEC 8.5).
 *
 * COMPRESS=DEFLATE (RFC 4978) is hidden and refused: once compressed, the
 * streams could no longer be parsed, and the ID rules of SPEC section 3
 * hold inside TLS too; a passthrough would let a client send x-originating
 * parameters to a backend that trusts its proxy.
 *
 * RFCs: 9051/3501 (IMAP), 2595 (STARTTLS), 5530 (response codes), 7888
 * (LITERAL+), 2971 (ID), 2177 (IDLE), 4959 (SASL-IR), 3516 (literal8).
 */
#include "config.h"

#include <sys/types.h>
#include <stdbool.h>
#include <stdint.h>
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

/* Longest tag we track; a longer one is refused (RFC 9051 sets none). */
#define IMAP_TAG_MAX		64
/* Bytes kept from the end of a streamed line: "~{<20 digits>+}" fits. */
#define IMAP_TAIL_MAX		32
/* Refused lines before the session is dropped (nginx, Postfix). */
#define IMAP_MAX_ERRORS		10
/*
 * Literal sizes.  Before TLS nothing needs big literals (no mailbox is
 * reachable without LOGIN), so a small bound limits what an attacker can
 * push through the cleartext phase; after it, APPEND needs real sizes, and
 * literals are streamed anyway.
 */
#define IMAP_LITERAL_MAX_CLEAR	(64 * 1024)
#define IMAP_LITERAL_MAX_TLS	UINT32_MAX
/* Literals in one command before TLS. */
#define IMAP_CLEAR_LITERALS_MAX	16

/* Tagged and untagged reply texts (RFC 5530 codes where one applies). */
#define IMAP_R_CLEARAUTH	"NO [PRIVACYREQUIRED] Plaintext " \
				"authentication disallowed on non-secure " \
				"connection, use STARTTLS first"
#define IMAP_R_TLSUP		"BAD TLS already active"
#define IMAP_R_NOTLS		"BAD STARTTLS not available"
#define IMAP_R_TLSARGS		"BAD STARTTLS takes no arguments"
#define IMAP_R_BADCHAR		"BAD Invalid characters in command line"
#define IMAP_R_TOOLONG		"BAD Line too long"
#define IMAP_R_EMPTY		"BAD Empty command line"
#define IMAP_R_BADTAG		"BAD Invalid tag"
#define IMAP_R_NOVERB		"BAD Missing command"
#define IMAP_R_BADQUOTE		"BAD Invalid quoted string"
#define IMAP_R_BADLIT		"BAD Invalid literal"
#define IMAP_R_TOOBIG		"BAD [TOOBIG] Literal too large"
#define IMAP_R_BADID		"BAD Invalid ID parameters"
#define IMAP_R_IDLEARGS		"BAD IDLE takes no arguments"
#define IMAP_R_AUTHLIT		"BAD Literal not allowed in AUTHENTICATE"
#define IMAP_R_NODONE		"BAD Expected DONE"
#define IMAP_R_COMPRESS		"NO [CANNOT] COMPRESS is not available"
#define IMAP_R_TLSGO		"OK Begin TLS negotiation now"
#define IMAP_L_CONT		"+ Ready for literal data\r\n"
#define IMAP_L_BYE_ERRORS	"* BYE Too many errors\r\n"
#define IMAP_L_BYE_TOOBIG	"* BYE [TOOBIG] Literal too large\r\n"
#define IMAP_L_BYE_TOOLONG	"* BYE Line too long\r\n"
#define IMAP_L_BYE_SYNTAX	"* BYE Invalid command continuation\r\n"
#define IMAP_L_BYE_PREAUTH	"* BYE [UNAVAILABLE] Pre-authenticated " \
				"session refused in cleartext\r\n"
#define IMAP_L_BYE_BACKEND	"* BYE [UNAVAILABLE] Invalid response " \
				"from server\r\n"
#define IMAP_L_UNAVAIL		"* BYE [UNAVAILABLE] Service temporarily " \
				"unavailable\r\n"

/* Where the client stream is. */
enum imap_cstate {
	IMAP_C_COMMAND = 0,	/* start of a command line */
	IMAP_C_CONT,		/* the line following a literal */
	IMAP_C_LITERAL,		/* counted literal bytes */
	IMAP_C_LIT_WAIT,	/* {n} forwarded: "+" or completion? */
	IMAP_C_AUTH_WAIT,	/* AUTHENTICATE: "+" or completion? */
	IMAP_C_SASL,		/* next line: a SASL response */
	IMAP_C_IDLE_WAIT,	/* IDLE forwarded: "+" or completion? */
	IMAP_C_IDLE,		/* next line must be DONE */
	IMAP_C_SKIP,		/* rest of an over-long SASL/IDLE line */
	IMAP_C_STARTTLS,	/* STARTTLS read, earlier commands due */
	IMAP_C_CLOSED,		/* FILTER_CLOSE returned */
};

/* What happens to the command being read. */
enum imap_cmode {
	IMAP_CM_FORWARD = 0,	/* lines and literals go to the backend */
	IMAP_CM_DISCARD,	/* refused: dropped to its end */
	IMAP_CM_COLLECT,	/* ID: gathered, rewritten at its end */
};

/* Where the backend stream is. */
enum imap_bstate {
	IMAP_B_LINE = 0,	/* a line (start or rest of a response) */
	IMAP_B_LONG,		/* rest of a line longer than line_max */
	IMAP_B_LITERAL,		/* counted literal bytes */
};

/* The kind of the backend response being relayed. */
enum imap_msg {
	IMAP_MSG_OTHER = 0,	/* untagged data, unknown tags */
	IMAP_MSG_CONT,		/* "+" continuation request */
	IMAP_MSG_TAGGED,	/* tag OK/NO/BAD */
};

/* Steps of the client reader. */
enum imap_step {
	IMAP_STEP_HOLD = 0,	/* nothing more to do until more input */
	IMAP_STEP_AGAIN,	/* progress; look again */
	IMAP_STEP_CLOSE,
	IMAP_STEP_STARTTLS,
};

/* The end of a line: a literal marker, RFC 9051 section 4.3. */
struct imap_lit {
	bool		 present;
	bool		 nonsync;	/* {n+}: the bytes follow at once */
	uint64_t	 size;
	size_t		 start;		/* of "{" or "~{" in the line */
};

/* The last bytes of a line streamed in pieces. */
struct imap_tail {
	char		 b[IMAP_TAIL_MAX];
	size_t		 n;
};

/* One command awaiting its tagged reply. */
struct imap_slot {
	unsigned	 id;
	bool		 local;		/* ours; else the backend answers */
	bool		 done;		/* the backend's completion relayed */
	const char	*reply;		/* local: the text after the tag */
	size_t		 taglen;	/* local: 0 means untagged "*" */
	char		 tag[IMAP_TAG_MAX + 1];
};

/* A parsed first line. */
struct imap_cmd {
	const char	*tag;
	size_t		 taglen;
	const char	*verb;
	size_t		 verblen;
	const char	*args;		/* after "verb SP"; NULL: none */
	size_t		 argslen;
	size_t		 len;		/* of the whole line */
	struct imap_lit	 lit;
};

/* The buffers of one client_input() call. */
struct imap_io {
	struct evbuffer	*in;
	struct evbuffer	*to_backend;
	struct evbuffer	*to_client;
};

struct imap {
	bool		 starttls_service;
	bool		 tls_active;
	const char	*reason;
	size_t		 line_max;
	char		*buf;		/* line_max + 2 */
	size_t		 bufsz;
	char		 sid[32];
	char		 addr[UTIL_ADDRPORTSTRLEN];

	/* client side */
	enum imap_cstate cstate;
	enum imap_cstate cnext;		/* after IMAP_C_SKIP */
	enum imap_cmode	 cmode;
	uint64_t	 clit_left;	/* IMAP_C_LITERAL */
	uint64_t	 clit_wait;	/* size of the {n} awaiting "+" */
	unsigned	 cnlit;		/* literals in this command */
	unsigned	 cwait_id;	/* slot whose "+"/completion we await */
	unsigned	 errors;
	bool		 local_cont;	/* our "+" for a collected literal */
	char		 ctag[IMAP_TAG_MAX + 1];
	size_t		 ctaglen;
	size_t		 cargs;		/* ID: offset of the arguments */
	struct imap_tail ctail;
	struct evbuffer	*collect;	/* ID being gathered */

	/* FIFO of pending commands */
	struct imap_slot slots[FILTER_PENDING_MAX];
	size_t		 head;
	size_t		 count;
	unsigned	 next_id;

	/* backend side */
	enum imap_bstate bstate;
	bool		 greeted;
	bool		 bmid;		/* inside a response with literals */
	enum imap_msg	 bmsg;		/* kind of that response */
	uint64_t	 blit_left;
	struct imap_tail btail;
	char		 btag[IMAP_TAG_MAX + 1];
	size_t		 btaglen;
};

struct imap_verb {
	const char	*verb;
	enum imap_step	(*handler)(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
	unsigned	 flags;
};

/* Verb flags (STYLE section 4). */
#define IMAP_V_CREDENTIALS	0x01	/* refused in cleartext (SPEC 8.5) */
#define IMAP_V_INTERCEPT	0x02	/* answered here */

/* Capability keyword rules. */
#define IMAP_K_CLEAR	0x01	/* hidden in cleartext */
#define IMAP_K_TLS	0x02	/* hidden once TLS is active */
#define IMAP_K_PREFIX	0x04	/* the name is a prefix ("AUTH=") */

struct imap_capa_rule {
	const char	*name;
	unsigned	 flags;
};

static struct imap	*imap_filter_new(const struct filter_params *);
static void		 imap_filter_free(struct imap *);
static enum filter_verdict imap_client_input(struct imap *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static enum filter_verdict imap_backend_input(struct imap *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static const char	*imap_reason(const struct imap *);
static void		 imap_unavailable(struct evbuffer *, const char *);

static const char	*imap_cstate_name(enum imap_cstate);
static void		 imap_enter(struct imap *, enum imap_cstate);
static enum imap_step	 imap_close(struct imap *, struct evbuffer *,
			    const char *, const char *);
static bool		 imap_cleartext(const struct imap *);
static uint64_t		 imap_literal_max(const struct imap *);

static void		 imap_tail_feed(struct imap_tail *, struct evbuffer *,
			    size_t);
static int		 imap_stream_line(struct evbuffer *,
			    struct evbuffer *, struct imap_tail *);
static int		 imap_lit_at_end(const char *, size_t,
			    struct imap_lit *);
static bool		 imap_token_start(const char *, size_t);
static size_t		 imap_lex_quoted(const char *, size_t, size_t);
static const char	*imap_lex(const char *, size_t, struct imap_lit *);
static bool		 imap_tag_char(unsigned char);
static size_t		 imap_word_len(const char *, size_t);

static unsigned		 imap_slot_push(struct imap *, bool, const char *,
			    size_t, const char *);
static unsigned		 imap_slot_complete(struct imap *, const char *,
			    size_t);
static bool		 imap_backend_idle(const struct imap *);
static void		 imap_flush(struct imap *, struct evbuffer *);

static enum imap_step	 imap_error(struct imap *, struct imap_io *);
static enum imap_step	 imap_refuse(struct imap *, struct imap_io *,
			    const char *, size_t, const char *, bool);
static enum imap_step	 imap_segment_end(struct imap *, struct imap_io *,
			    const struct imap_lit *);
static enum imap_step	 imap_command_end(struct imap *, struct imap_io *);
static enum imap_step	 imap_client_step(struct imap *, struct imap_io *);
static enum imap_step	 imap_client_command(struct imap *,
			    struct imap_io *);
static enum imap_step	 imap_command_line(struct imap *, struct imap_io *,
			    size_t, unsigned);
static size_t		 imap_parse_tag(const char *, size_t);
static void		 imap_parse_cmd(const char *, size_t, size_t,
			    struct imap_cmd *);
static enum imap_step	 imap_client_cont(struct imap *, struct imap_io *);
static enum imap_step	 imap_cont_line(struct imap *, struct imap_io *,
			    size_t, unsigned);
static enum imap_step	 imap_client_literal(struct imap *,
			    struct imap_io *);
static enum imap_step	 imap_client_sasl(struct imap *, struct imap_io *);
static enum imap_step	 imap_client_idle(struct imap *, struct imap_io *);
static enum imap_step	 imap_client_skip(struct imap *, struct imap_io *);
static enum imap_step	 imap_do_starttls(struct imap *, struct imap_io *);

static enum imap_step	 imap_cmd_forward(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_starttls(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_authenticate(struct imap *,
			    struct imap_io *, const struct imap_cmd *);
static enum imap_step	 imap_cmd_idle(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_compress(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_id(struct imap *, struct imap_io *,
			    const struct imap_cmd *);
static void		 imap_forward_wait(struct imap *, struct imap_io *,
			    const struct imap_cmd *, enum imap_cstate);

static void		 imap_id_finish(struct imap *, struct imap_io *);
static int		 imap_id_rewrite(struct imap *, char *, size_t,
			    struct evbuffer *);
static int		 imap_id_string(char *, size_t, size_t *, char **,
			    size_t *);
static int		 imap_id_quote(struct evbuffer *, const char *,
			    size_t);
static bool		 imap_id_trusted(const char *, size_t);

static int		 imap_bclose(struct imap *, struct evbuffer *,
			    const char *, const char *);
static int		 imap_backend_step(struct imap *, struct evbuffer *,
			    struct evbuffer *);
static int		 imap_backend_line(struct imap *, struct evbuffer *,
			    struct evbuffer *);
static int		 imap_backend_long(struct imap *, struct evbuffer *,
			    struct evbuffer *);
static int		 imap_backend_start(struct imap *, const char *,
			    size_t, const char *, struct evbuffer *);
static int		 imap_backend_lineend(struct imap *,
			    const struct imap_lit *);
static int		 imap_greeting(struct imap *, const char *, size_t,
			    const char *, struct evbuffer *);
static enum imap_msg	 imap_msg_classify(struct imap *, const char *,
			    size_t);
static void		 imap_msg_end(struct imap *);
static void		 imap_relay_line(struct imap *, const char *,
			    size_t, const char *, struct evbuffer *);
static bool		 imap_status_word(const char *, size_t, bool);
static bool		 imap_capa_locate(const char *, size_t, size_t *,
			    size_t *);
static bool		 imap_capa_hidden(const struct imap *, const char *,
			    size_t);
static void		 imap_capa_rewrite(const struct imap *,
			    const char *, size_t, size_t, size_t,
			    struct evbuffer *);

/* proto_imap_ops: at the end of the file. */

/* Verbs with a rule; every other command is forwarded as framed. */
static const struct imap_verb imap_verbs[] = {
	{ "STARTTLS",	  imap_cmd_starttls,	 IMAP_V_INTERCEPT },
	{ "LOGIN",	  imap_cmd_forward,	 IMAP_V_CREDENTIALS },
	{ "AUTHENTICATE", imap_cmd_authenticate, IMAP_V_CREDENTIALS },
	{ "IDLE",	  imap_cmd_idle,	 0 },
	{ "ID",		  imap_cmd_id,		 0 },
	{ "COMPRESS",	  imap_cmd_compress,	 IMAP_V_INTERCEPT },
};

static const struct imap_verb imap_verb_other = {
	NULL, imap_cmd_forward, 0
};

/*
 * Capability keywords we change (SPEC section 3).  STARTTLS is ours: the
 * backend never sees TLS, so whatever it says is dropped and we add it
 * ourselves in cleartext.  LOGINDISABLED is ours in cleartext (we refuse
 * LOGIN); inside TLS it would only repeat what the backend says about its
 * own plaintext leg, which is not true for the client's TLS leg.
 */
static const struct imap_capa_rule imap_capa_rules[] = {
	{ "STARTTLS",		IMAP_K_CLEAR | IMAP_K_TLS },
	{ "LOGINDISABLED",	IMAP_K_CLEAR | IMAP_K_TLS },
	/* Credentials are refused in cleartext: offer no mechanism. */
	{ "AUTH=",		IMAP_K_CLEAR | IMAP_K_PREFIX },
	{ "SASL-IR",		IMAP_K_CLEAR },
	/* Compressed streams cannot be filtered (see the header). */
	{ "COMPRESS=",		IMAP_K_CLEAR | IMAP_K_TLS | IMAP_K_PREFIX },
};

/*
 * ID keys a backend may take from a trusted proxy (Dovecot's
 * login_trusted_networks: x-originating-ip, x-connected-port,
 * x-proxy-ttl, x-session-id, x-forward-*): a client must not set them.
 */
static const char *const imap_id_trusted_keys[] = {
	"x-originating-",
	"x-connected-",
	"x-proxy-",
	"x-session-",
	"x-forward-",
};

/* ------------------------------------------------------------------ */
/* Filter object */

static struct imap *
imap_filter_new(const struct filter_params *p)
{
	struct imap	*f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->starttls_service = p->svc->tls_mode == TLS_MODE_STARTTLS;
	f->tls_active = p->tls_active;
	f->line_max = p->svc->max_line_length ? p->svc->max_line_length :
	    DEFAULT_IMAP_LINE_MAX;
	f->bufsz = f->line_max + 2;
	if ((f->buf = malloc(f->bufsz)) == NULL) {
		free(f);
		return NULL;
	}
	util_strlcpy(f->sid, p->session_id ? p->session_id : "-",
	    sizeof(f->sid));
	util_strlcpy(f->addr, p->client_addr ? p->client_addr : "-",
	    sizeof(f->addr));
	f->next_id = 1;
	return f;
}

static void
imap_filter_free(struct imap *f)
{
	if (f == NULL)
		return;
	if (f->collect != NULL)
		evbuffer_free(f->collect);
	free(f->buf);
	free(f);
}

static const char *
imap_reason(const struct imap *f)
{
	return f->reason != NULL ? f->reason : "imap filter";
}

static void
imap_unavailable(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, IMAP_L_UNAVAIL, strlen(IMAP_L_UNAVAIL));
}

static const char *
imap_cstate_name(enum imap_cstate st)
{
	switch (st) {
	case IMAP_C_COMMAND:	return "COMMAND";
	case IMAP_C_CONT:	return "CONT";
	case IMAP_C_LITERAL:	return "LITERAL";
	case IMAP_C_LIT_WAIT:	return "LIT_WAIT";
	case IMAP_C_AUTH_WAIT:	return "AUTH_WAIT";
	case IMAP_C_SASL:	return "SASL";
	case IMAP_C_IDLE_WAIT:	return "IDLE_WAIT";
	case IMAP_C_IDLE:	return "IDLE";
	case IMAP_C_SKIP:	return "SKIP";
	case IMAP_C_STARTTLS:	return "STARTTLS";
	case IMAP_C_CLOSED:	return "CLOSED";
	}
	return "?";
}

static void
imap_enter(struct imap *f, enum imap_cstate st)
{
	if (f->cstate != st)
		log_debug("%s: imap client %s -> %s", f->sid,
		    imap_cstate_name(f->cstate), imap_cstate_name(st));
	f->cstate = st;
	if (st == IMAP_C_CONT)
		f->ctail.n = 0;
}

/*
 * Stop for good: the replies whose turn has come, an optional last line
 * for the client, then close.
 */
static enum imap_step
imap_close(struct imap *f, struct evbuffer *to_client, const char *bye,
    const char *reason)
{
	imap_flush(f, to_client);
	if (bye != NULL)
		evbuffer_add(to_client, bye, strlen(bye));
	f->reason = reason;
	imap_enter(f, IMAP_C_CLOSED);
	return IMAP_STEP_CLOSE;
}

static bool
imap_cleartext(const struct imap *f)
{
	return !f->tls_active;
}

static uint64_t
imap_literal_max(const struct imap *f)
{
	return f->tls_active ? IMAP_LITERAL_MAX_TLS : IMAP_LITERAL_MAX_CLEAR;
}

/* ------------------------------------------------------------------ */
/* Lexical helpers */

/* Remember the last bytes of the first n bytes of in. */
static void
imap_tail_feed(struct imap_tail *t, struct evbuffer *in, size_t n)
{
	struct evbuffer_ptr	 p;
	size_t			 keep;

	if (n >= IMAP_TAIL_MAX) {
		if (evbuffer_ptr_set(in, &p, n - IMAP_TAIL_MAX,
		    EVBUFFER_PTR_SET) == 0)
			evbuffer_copyout_from(in, &p, t->b, IMAP_TAIL_MAX);
		t->n = IMAP_TAIL_MAX;
		return;
	}
	keep = IMAP_TAIL_MAX - n;
	if (t->n > keep) {
		memmove(t->b, t->b + t->n - keep, keep);
		t->n = keep;
	}
	evbuffer_copyout(in, t->b + t->n, n);
	t->n += n;
}

/*
 * Move the rest of the current line through its LF to out (or drop it
 * when out is NULL), never holding more than the tail.  Returns 1 when the
 * LF was reached; t then ends with the line's last bytes, without CR LF.
 */
static int
imap_stream_line(struct evbuffer *in, struct evbuffer *out,
    struct imap_tail *t)
{
	size_t	 len = evbuffer_get_length(in), n;
	ssize_t	 lf = lineio_find_lf(in, len);

	n = lf == -1 ? len : (size_t)lf;
	imap_tail_feed(t, in, n);
	if (lf != -1)
		n++;
	if (out != NULL)
		evbuffer_remove_buffer(in, out, n);
	else
		evbuffer_drain(in, n);
	if (lf == -1)
		return 0;
	if (t->n > 0 && t->b[t->n - 1] == '\r')
		t->n--;
	return 1;
}

/*
 * Does the line end with a literal marker "{n}", "{n+}" or "~{n}"?
 * Returns 1 (lit filled), 0, or -1 when the number is not a number64.
 */
static int
imap_lit_at_end(const char *s, size_t len, struct imap_lit *lit)
{
	size_t		 i, d, ndig = 0;
	uint64_t	 v = 0;

	memset(lit, 0, sizeof(*lit));
	if (len < 3 || s[len - 1] != '}')
		return 0;
	i = len - 1;
	if (s[i - 1] == '+') {
		lit->nonsync = true;
		i--;
	}
	while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9') {
		i--;
		ndig++;
	}
	if (ndig == 0 || i == 0 || s[i - 1] != '{')
		return 0;
	for (d = i; d < i + ndig; d++) {
		if (v > (UINT64_MAX - (uint64_t)(s[d] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[d] - '0');
	}
	i--;
	if (i > 0 && s[i - 1] == '~')
		i--;
	lit->present = true;
	lit->size = v;
	lit->start = i;
	return 1;
}

/* Can a token (quoted string, literal) start at s[i]? */
static bool
imap_token_start(const char *s, size_t i)
{
	return i > 0 && (s[i - 1] == ' ' || s[i - 1] == '(');
}

/* Index of the quote closing the string opened at s[i], or 0. */
static size_t
imap_lex_quoted(const char *s, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (s[i] == '"')
			return i;
		if (s[i] == '\\') {
			/* RFC 9051 quoted-specials are the only escapes. */
			if (i + 1 >= len || (s[i + 1] != '"' &&
			    s[i + 1] != '\\'))
				return 0;
			i++;
		}
	}
	return 0;
}

/*
 * Frame a line the way a strict RFC 9051 parser does.  A quoted string
 * opens only where a token may start and must close on the line, and "{"
 * outside quotes is only allowed as the marker ending the line: otherwise
 * a backend and we could disagree on whether the line ends with a literal
 * (e.g. `NOOP "x {20+}`), and the literal's bytes would run as commands on
 * one side only.  Returns NULL (lit filled) or the reply refusing it.
 */
static const char *
imap_lex(const char *s, size_t len, struct imap_lit *lit)
{
	size_t	 i;

	memset(lit, 0, sizeof(*lit));
	for (i = 0; i < len; i++) {
		if (s[i] == '"') {
			if (!imap_token_start(s, i) ||
			    (i = imap_lex_quoted(s, len, i)) == 0)
				return IMAP_R_BADQUOTE;
		} else if (s[i] == '{' || (s[i] == '~' && i + 1 < len &&
		    s[i + 1] == '{')) {
			if (imap_lit_at_end(s, len, lit) != 1 ||
			    lit->start != i || !imap_token_start(s, i))
				return IMAP_R_BADLIT;
			return NULL;
		}
	}
	return NULL;
}

/* RFC 9051 tag: ASTRING-CHAR except "+". */
static bool
imap_tag_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\+", c) == NULL;
}

/* Length of the word at s (up to SP or the end). */
static size_t
imap_word_len(const char *s, size_t len)
{
	const char	*sp = memchr(s, ' ', len);

	return sp != NULL ? (size_t)(sp - s) : len;
}

/* ------------------------------------------------------------------ */
/* FIFO of pending commands (proto.h: replies keep command order) */

static unsigned
imap_slot_push(struct imap *f, bool local, const char *tag, size_t taglen,
    const char *reply)
{
	struct imap_slot	*s;

	/* Every push follows a check of count at a command's start. */
	if (f->count >= FILTER_PENDING_MAX)
		fatalx("%s: imap FIFO overflow", f->sid);
	s = &f->slots[(f->head + f->count) % FILTER_PENDING_MAX];
	memset(s, 0, sizeof(*s));
	s->id = f->next_id++;
	if (f->next_id == 0)
		f->next_id = 1;
	s->local = local;
	s->reply = reply;
	s->taglen = taglen;
	if (taglen > 0)
		memcpy(s->tag, tag, taglen);
	f->count++;
	return s->id;
}

/*
 * A tagged completion was relayed: mark the oldest open command with that
 * tag (a server may finish commands out of order, RFC 9051 section 5.5).
 * Returns its id, or 0 when no command matches.
 */
static unsigned
imap_slot_complete(struct imap *f, const char *tag, size_t taglen)
{
	struct imap_slot	*s;
	size_t			 i;

	for (i = 0; i < f->count; i++) {
		s = &f->slots[(f->head + i) % FILTER_PENDING_MAX];
		if (!s->local && !s->done && s->taglen == taglen &&
		    memcmp(s->tag, tag, taglen) == 0) {
			s->done = true;
			return s->id;
		}
	}
	return 0;
}

/* Can we write to the client without cutting into a backend response? */
static bool
imap_backend_idle(const struct imap *f)
{
	return f->greeted && f->bstate == IMAP_B_LINE && !f->bmid;
}

/* Write our replies whose turn has come. */
static void
imap_flush(struct imap *f, struct evbuffer *to_client)
{
	struct imap_slot	*s;

	if (!imap_backend_idle(f))
		return;
	if (f->local_cont) {
		evbuffer_add(to_client, IMAP_L_CONT, strlen(IMAP_L_CONT));
		f->local_cont = false;
	}
	while (f->count > 0) {
		s = &f->slots[f->head];
		if (!s->local && !s->done)
			break;
		if (s->local && s->taglen > 0)
			evbuffer_add_printf(to_client, "%.*s %s\r\n",
			    (int)s->taglen, s->tag, s->reply);
		else if (s->local)
			evbuffer_add_printf(to_client, "* %s\r\n", s->reply);
		f->head = (f->head + 1) % FILTER_PENDING_MAX;
		f->count--;
	}
}

/* ------------------------------------------------------------------ */
/* Client side */

static enum filter_verdict
imap_client_input(struct imap *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	struct imap_io	 io = { in, to_backend, to_client };
	enum imap_step	 r;

	if (f->cstate == IMAP_C_CLOSED)
		return FILTER_CLOSE;
	do {
		imap_flush(f, to_client);
		r = imap_client_step(f, &io);
	} while (r == IMAP_STEP_AGAIN);
	switch (r) {
	case IMAP_STEP_CLOSE:
		return FILTER_CLOSE;
	case IMAP_STEP_STARTTLS:
		return FILTER_STARTTLS;
	default:
		imap_flush(f, to_client);
		return FILTER_CONTINUE;
	}
}

static enum imap_step
imap_client_step(struct imap *f, struct imap_io *io)
{
	switch (f->cstate) {
	case IMAP_C_COMMAND:
		return imap_client_command(f, io);
	case IMAP_C_CONT:
		return imap_client_cont(f, io);
	case IMAP_C_LITERAL:
		return imap_client_literal(f, io);
	case IMAP_C_SASL:
		return imap_client_sasl(f, io);
	case IMAP_C_IDLE:
		return imap_client_idle(f, io);
	case IMAP_C_SKIP:
		return imap_client_skip(f, io);
	case IMAP_C_STARTTLS:
		return imap_do_starttls(f, io);
	case IMAP_C_LIT_WAIT:
	case IMAP_C_AUTH_WAIT:
	case IMAP_C_IDLE_WAIT:
		/* The backend decides how the next bytes are framed. */
		return IMAP_STEP_HOLD;
	case IMAP_C_CLOSED:
		return IMAP_STEP_CLOSE;
	}
	return IMAP_STEP_HOLD;
}

/* Count a refused line; too many end the session (fail closed). */
static enum imap_step
imap_error(struct imap *f, struct imap_io *io)
{
	if (++f->errors < IMAP_MAX_ERRORS)
		return IMAP_STEP_AGAIN;
	log_warnx("%s: client %s: too many errors", f->sid, f->addr);
	return imap_close(f, io->to_client, IMAP_L_BYE_ERRORS,
	    "too many errors");
}

/*
 * Answer the current command ourselves, in its turn, and drop the rest
 * of it (the caller passes its literal to imap_segment_end()).
 */
static enum imap_step
imap_refuse(struct imap *f, struct imap_io *io, const char *tag,
    size_t taglen, const char *reply, bool error)
{
	imap_slot_push(f, true, tag, taglen, reply);
	f->cmode = IMAP_CM_DISCARD;
	if (f->collect != NULL) {
		evbuffer_free(f->collect);
		f->collect = NULL;
	}
	return error ? imap_error(f, io) : IMAP_STEP_AGAIN;
}

/*
 * A line of the current command has been handled; lit is its ending.
 * Decide how the literal that follows (if any) is read.
 */
static enum imap_step
imap_segment_end(struct imap *f, struct imap_io *io,
    const struct imap_lit *lit)
{
	if (!lit->present)
		return imap_command_end(f, io);
	/* The client waits for a "+" it will never get, then drops it. */
	if (f->cmode == IMAP_CM_DISCARD && !lit->nonsync)
		return imap_command_end(f, io);
	if (f->cmode == IMAP_CM_COLLECT && lit->size >
	    f->bufsz - evbuffer_get_length(f->collect)) {
		if (imap_refuse(f, io, f->ctag, f->ctaglen, IMAP_R_BADID,
		    true) == IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, lit);
	}
	if (lit->size > imap_literal_max(f))
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	if (imap_cleartext(f) && ++f->cnlit > IMAP_CLEAR_LITERALS_MAX)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "too many literals");
	if (f->cmode == IMAP_CM_FORWARD && !lit->nonsync) {
		f->clit_wait = lit->size;
		imap_enter(f, IMAP_C_LIT_WAIT);
		return IMAP_STEP_AGAIN;
	}
	/* Collected literals are ours to ask for; ID holds no secret. */
	if (f->cmode == IMAP_CM_COLLECT && !lit->nonsync)
		f->local_cont = true;
	f->clit_left = lit->size;
	imap_enter(f, IMAP_C_LITERAL);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_command_end(struct imap *f, struct imap_io *io)
{
	if (f->cmode == IMAP_CM_COLLECT)
		imap_id_finish(f, io);
	f->cmode = IMAP_CM_FORWARD;
	if (f->cstate == IMAP_C_CLOSED)
		return IMAP_STEP_CLOSE;
	/* Handlers may have entered a waiting state (AUTHENTICATE, IDLE). */
	if (f->cstate == IMAP_C_CONT)
		imap_enter(f, IMAP_C_COMMAND);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_client_command(struct imap *f, struct imap_io *io)
{
	size_t	 len;
	unsigned flags;

	/* Nothing is answered before the greeting, nor beyond the FIFO. */
	if (!f->greeted || f->count >= FILTER_PENDING_MAX)
		return IMAP_STEP_HOLD;
	switch (lineio_get(io->in, f->line_max, f->buf, f->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return IMAP_STEP_HOLD;
	case LINEIO_TOO_LONG:
		/*
		 * Drop the line as a refused command: its end is read with
		 * the tail kept, so a {n+} ending it is dropped too and its
		 * bytes never run as commands.
		 */
		f->cnlit = 0;
		if (imap_refuse(f, io, NULL, 0, IMAP_R_TOOLONG, true) ==
		    IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		imap_enter(f, IMAP_C_CONT);
		return IMAP_STEP_AGAIN;
	case LINEIO_LINE:
		break;
	}
	return imap_command_line(f, io, len, flags);
}

/* Length of a valid tag at the start of s followed by SP or the end. */
static size_t
imap_parse_tag(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len && imap_tag_char((unsigned char)s[i]); i++)
		;
	if (i == 0 || i > IMAP_TAG_MAX || (i < len && s[i] != ' '))
		return 0;
	return i;
}

static void
imap_parse_cmd(const char *s, size_t len, size_t taglen, struct imap_cmd *c)
{
	size_t	 v = taglen + 1;

	c->tag = s;
	c->taglen = taglen;
	c->len = len;
	c->verb = s + v;
	c->verblen = v < len ? imap_word_len(s + v, len - v) : 0;
	c->args = NULL;
	c->argslen = 0;
	if (v + c->verblen < len) {
		c->args = s + v + c->verblen + 1;
		c->argslen = len - v - c->verblen - 1;
	}
}

/* The first line of a command, in f->buf. */
static enum imap_step
imap_command_line(struct imap *f, struct imap_io *io, size_t len,
    unsigned flags)
{
	const struct imap_verb	*v = &imap_verb_other;
	struct imap_cmd		 c;
	struct imap_lit		 raw;
	const char		*err = NULL;
	size_t			 i, taglen;

	memset(&c, 0, sizeof(c));
	f->cnlit = 0;
	f->cmode = IMAP_CM_FORWARD;
	/* What a lenient reader takes for a literal: dropped if refused. */
	if (imap_lit_at_end(f->buf, len, &raw) == -1)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	taglen = imap_parse_tag(f->buf, len);
	if (len == 0)
		err = IMAP_R_EMPTY;
	else if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		err = IMAP_R_BADCHAR;
	else if (taglen == 0)
		err = IMAP_R_BADTAG;
	else if (taglen + 1 >= len)
		err = IMAP_R_NOVERB;
	else if ((err = imap_lex(f->buf, len, &c.lit)) == NULL) {
		imap_parse_cmd(f->buf, len, taglen, &c);
		/*
		 * "a  LOGIN": our verb would be empty while a lenient backend
		 * skips the second space and reads LOGIN (found by fuzzing).
		 */
		if (c.verblen == 0)
			err = IMAP_R_NOVERB;
	}
	memcpy(f->ctag, f->buf, taglen);
	f->ctaglen = taglen;
	if (err != NULL) {
		if (imap_refuse(f, io, f->ctag, taglen, err, true) ==
		    IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &raw);
	}
	for (i = 0; i < sizeof(imap_verbs) / sizeof(imap_verbs[0]); i++)
		if (util_word_eq(c.verb, c.verblen, imap_verbs[i].verb))
			v = &imap_verbs[i];
	if ((v->flags & IMAP_V_CREDENTIALS) && imap_cleartext(f)) {
		/* SPEC 8.5: never forwarded, never logged, no "+" sent. */
		log_warnx("%s: client %s: %s refused in cleartext", f->sid,
		    f->addr, v->verb);
		if (imap_refuse(f, io, f->ctag, taglen, IMAP_R_CLEARAUTH,
		    true) == IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &c.lit);
	}
	if (v->handler(f, io, &c) == IMAP_STEP_CLOSE)
		return IMAP_STEP_CLOSE;
	return imap_segment_end(f, io, &c.lit);
}

/* The line after a literal: part of the same command. */
static enum imap_step
imap_client_cont(struct imap *f, struct imap_io *io)
{
	struct imap_lit	 lit;
	size_t		 len;
	unsigned	 flags;

	if (f->cmode == IMAP_CM_DISCARD) {
		if (!imap_stream_line(io->in, NULL, &f->ctail))
			return IMAP_STEP_HOLD;
		if (imap_lit_at_end(f->ctail.b, f->ctail.n, &lit) == -1)
			return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
			    "literal too large");
		return imap_segment_end(f, io, &lit);
	}
	switch (lineio_get(io->in, f->line_max, f->buf, f->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return IMAP_STEP_HOLD;
	case LINEIO_TOO_LONG:
		/* The backend holds part of the command: no way to refuse. */
		if (f->cmode == IMAP_CM_FORWARD)
			return imap_close(f, io->to_client, IMAP_L_BYE_TOOLONG,
			    "line too long");
		/* ID: not sent yet; drop it, reading the line as above. */
		return imap_refuse(f, io, f->ctag, f->ctaglen, IMAP_R_BADID,
		    true);
	case LINEIO_LINE:
		break;
	}
	return imap_cont_line(f, io, len, flags);
}

static enum imap_step
imap_cont_line(struct imap *f, struct imap_io *io, size_t len,
    unsigned flags)
{
	struct imap_lit	 lit, raw;
	const char	*err = NULL;

	if (imap_lit_at_end(f->buf, len, &raw) == -1)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		err = IMAP_R_BADCHAR;
	else
		err = imap_lex(f->buf, len, &lit);
	if (err != NULL && f->cmode == IMAP_CM_FORWARD)
		return imap_close(f, io->to_client, IMAP_L_BYE_SYNTAX,
		    "invalid command continuation");
	if (err == NULL && f->cmode == IMAP_CM_COLLECT &&
	    len + 2 > f->bufsz - evbuffer_get_length(f->collect))
		err = IMAP_R_BADID;
	if (err != NULL) {
		if (imap_refuse(f, io, f->ctag, f->ctaglen, IMAP_R_BADID,
		    true) == IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &raw);
	}
	/* Literal size is checked before any byte of this line leaves. */
	if (f->cmode == IMAP_CM_FORWARD && lit.present &&
	    lit.size > imap_literal_max(f))
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	evbuffer_add(f->cmode == IMAP_CM_COLLECT ? f->collect :
	    io->to_backend, f->buf, len);
	evbuffer_add(f->cmode == IMAP_CM_COLLECT ? f->collect :
	    io->to_backend, "\r\n", 2);
	return imap_segment_end(f, io, &lit);
}

/* Literal bytes: counted, streamed, never looked at. */
static enum imap_step
imap_client_literal(struct imap *f, struct imap_io *io)
{
	size_t	 n = evbuffer_get_length(io->in);

	if (f->clit_left > 0) {
		if (n == 0)
			return IMAP_STEP_HOLD;
		if (n > f->clit_left)
			n = (size_t)f->clit_left;
		if (f->cmode == IMAP_CM_FORWARD)
			evbuffer_remove_buffer(io->in, io->to_backend, n);
		else if (f->cmode == IMAP_CM_COLLECT)
			evbuffer_remove_buffer(io->in, f->collect, n);
		else
			evbuffer_drain(io->in, n);
		f->clit_left -= n;
		if (f->clit_left > 0)
			return IMAP_STEP_HOLD;
	}
	imap_enter(f, IMAP_C_CONT);
	return IMAP_STEP_AGAIN;
}

/*
 * A SASL response (RFC 9051 section 6.2.2): base64 or "*", forwarded as
 * framed and never logged.  A line we cannot frame cancels the exchange
 * with "*", so the backend ends it with its own tagged reply.
 */
static enum imap_step
imap_client_sasl(struct imap *f, struct imap_io *io)
{
	size_t	 len;
	unsigned flags;

	switch (lineio_get(io->in, f->line_max, f->buf, f->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return IMAP_STEP_HOLD;
	case LINEIO_TOO_LONG:
		evbuffer_add(io->to_backend, "*\r\n", 3);
		f->cnext = IMAP_C_AUTH_WAIT;
		imap_enter(f, IMAP_C_SKIP);
		return imap_error(f, io);
	case LINEIO_LINE:
		break;
	}
	imap_enter(f, IMAP_C_AUTH_WAIT);
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL)) {
		evbuffer_add(io->to_backend, "*\r\n", 3);
		return imap_error(f, io);
	}
	evbuffer_add(io->to_backend, f->buf, len);
	evbuffer_add(io->to_backend, "\r\n", 2);
	return IMAP_STEP_AGAIN;
}

/*
 * While idling only DONE may come (RFC 2177).  Anything else ends the
 * IDLE on the backend with a DONE of ours and is answered here; it is
 * never forwarded.
 */
static enum imap_step
imap_client_idle(struct imap *f, struct imap_io *io)
{
	size_t		 len;
	unsigned	 flags;
	enum lineio_result r;

	r = lineio_get(io->in, f->line_max, f->buf, f->bufsz, &len, &flags);
	if (r == LINEIO_MORE)
		return IMAP_STEP_HOLD;
	evbuffer_add(io->to_backend, "DONE\r\n", 6);
	if (r == LINEIO_LINE && flags == 0 && util_word_eq(f->buf, len,
	    "DONE")) {
		imap_enter(f, IMAP_C_COMMAND);
		return IMAP_STEP_AGAIN;
	}
	/* DONE itself must pass even with a full FIFO: then no reply. */
	if (f->count < FILTER_PENDING_MAX)
		imap_slot_push(f, true, NULL, 0, IMAP_R_NODONE);
	if (r == LINEIO_TOO_LONG) {
		f->cnext = IMAP_C_COMMAND;
		imap_enter(f, IMAP_C_SKIP);
	} else
		imap_enter(f, IMAP_C_COMMAND);
	return imap_error(f, io);
}

static enum imap_step
imap_client_skip(struct imap *f, struct imap_io *io)
{
	if (!lineio_skip(io->in))
		return IMAP_STEP_HOLD;
	imap_enter(f, f->cnext);
	return IMAP_STEP_AGAIN;
}

/*
 * The STARTTLS switch (SPEC 8.1, 8.2, STYLE section 5).  The go-ahead
 * waits until every earlier command has its reply relayed, so nothing
 * the backend says for the cleartext phase follows it.  Any byte behind
 * the STARTTLS line at that point was sent before the client could know
 * TLS would start: such pipelined plaintext (CVE-2011-0411 class) is never
 * executed, forwarded or answered inside TLS; the session is closed
 * instead.  The go-ahead is the last cleartext byte we write.
 */
static enum imap_step
imap_do_starttls(struct imap *f, struct imap_io *io)
{
	size_t	 pipelined;

	if (f->count > 0 || !imap_backend_idle(f))
		return IMAP_STEP_HOLD;
	if ((pipelined = evbuffer_get_length(io->in)) > 0) {
		log_warnx("%s: client %s: pipelined data after STARTTLS "
		    "(%zu bytes), closing", f->sid, f->addr, pipelined);
		return imap_close(f, io->to_client, NULL,
		    "pipelined data after STARTTLS");
	}
	evbuffer_add_printf(io->to_client, "%.*s %s\r\n", (int)f->ctaglen,
	    f->ctag, IMAP_R_TLSGO);
	/* State reset (SPEC 8.3): a fresh command reader inside TLS. */
	f->tls_active = true;
	f->cmode = IMAP_CM_FORWARD;
	f->errors = 0;
	imap_enter(f, IMAP_C_COMMAND);
	return IMAP_STEP_STARTTLS;
}

/* ------------------------------------------------------------------ */
/* Command handlers: IMAP_STEP_AGAIN, or IMAP_STEP_CLOSE */

/* Forward the first line as framed; its literal follows the rules. */
static enum imap_step
imap_cmd_forward(struct imap *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	/*
	 * An oversized literal is dealt with before anything leaves: for
	 * {n} the client waits for "+", gets our BAD and drops the command;
	 * {n+} bytes are already on their way, so the session ends.
	 */
	if (c->lit.present && c->lit.size > imap_literal_max(f)) {
		if (c->lit.nonsync)
			return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
			    "literal too large");
		return imap_refuse(f, io, c->tag, c->taglen, IMAP_R_TOOBIG,
		    true);
	}
	imap_forward_wait(f, io, c, IMAP_C_COMMAND);
	return IMAP_STEP_AGAIN;
}

/*
 * Forward the line, give it a slot, and remember that slot for the states
 * that wait on it.  A waiting state is entered here only for commands
 * without a literal (the literal wait comes from imap_segment_end()).
 */
static void
imap_forward_wait(struct imap *f, struct imap_io *io,
    const struct imap_cmd *c, enum imap_cstate wait)
{
	f->cwait_id = imap_slot_push(f, false, c->tag, c->taglen, NULL);
	evbuffer_add(io->to_backend, f->buf, c->len);
	evbuffer_add(io->to_backend, "\r\n", 2);
	if (wait != IMAP_C_COMMAND)
		imap_enter(f, wait);
}

static enum imap_step
imap_cmd_starttls(struct imap *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	const char	*err = NULL;

	if (f->tls_active)
		err = IMAP_R_TLSUP;
	else if (!f->starttls_service)
		err = IMAP_R_NOTLS;
	else if (c->args != NULL || c->lit.present)
		err = IMAP_R_TLSARGS;
	if (err != NULL)
		return imap_refuse(f, io, c->tag, c->taglen, err, true);
	imap_enter(f, IMAP_C_STARTTLS);
	return IMAP_STEP_AGAIN;
}

/*
 * Inside TLS: forwarded, and client input is held until the backend's "+"
 * (then one SASL line) or its tagged completion, so the response lines
 * are framed exactly where the backend frames them.
 */
static enum imap_step
imap_cmd_authenticate(struct imap *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	if (c->lit.present)
		return imap_refuse(f, io, c->tag, c->taglen, IMAP_R_AUTHLIT,
		    true);
	imap_forward_wait(f, io, c, IMAP_C_AUTH_WAIT);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_cmd_idle(struct imap *f, struct imap_io *io, const struct imap_cmd *c)
{
	if (c->args != NULL || c->lit.present)
		return imap_refuse(f, io, c->tag, c->taglen, IMAP_R_IDLEARGS,
		    true);
	imap_forward_wait(f, io, c, IMAP_C_IDLE_WAIT);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_cmd_compress(struct imap *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	return imap_refuse(f, io, c->tag, c->taglen, IMAP_R_COMPRESS,
	    false);
}

/* ID: gathered whole (bounded by the line limit), rewritten at its end. */
static enum imap_step
imap_cmd_id(struct imap *f, struct imap_io *io, const struct imap_cmd *c)
{
	if (c->args == NULL || (f->collect = evbuffer_new()) == NULL)
		return imap_refuse(f, io, c->tag, c->taglen, IMAP_R_BADID,
		    true);
	f->cmode = IMAP_CM_COLLECT;
	f->cargs = (size_t)(c->args - f->buf);
	evbuffer_add(f->collect, f->buf, c->len);
	evbuffer_add(f->collect, "\r\n", 2);
	return IMAP_STEP_AGAIN;
}

/* ------------------------------------------------------------------ */
/* ID (RFC 2971): strip what only a proxy may say */

static void
imap_id_finish(struct imap *f, struct imap_io *io)
{
	struct evbuffer	*out;
	size_t		 len = evbuffer_get_length(f->collect);

	/* Bounded by bufsz at every append (imap_cont_line, segment_end). */
	evbuffer_remove(f->collect, f->buf, len);
	evbuffer_free(f->collect);
	f->collect = NULL;
	if ((out = evbuffer_new()) != NULL &&
	    imap_id_rewrite(f, f->buf + f->cargs, len - f->cargs, out) == 0) {
		imap_slot_push(f, false, f->ctag, f->ctaglen, NULL);
		evbuffer_add_printf(io->to_backend, "%.*s ID ",
		    (int)f->ctaglen, f->ctag);
		evbuffer_add_buffer(io->to_backend, out);
	} else {
		imap_slot_push(f, true, f->ctag, f->ctaglen, IMAP_R_BADID);
		imap_error(f, io);
	}
	if (out != NULL)
		evbuffer_free(out);
}

/*
 * Parse "NIL" / "(" *(string SP nstring) ")" CRLF from the gathered wire
 * bytes s and write the list back canonically (quoted strings), without
 * the keys of imap_id_trusted_keys.
 */
static int
imap_id_rewrite(struct imap *f, char *s, size_t len, struct evbuffer *out)
{
	char	 kesc[LOG_ESCAPE_SIZE(IMAP_TAG_MAX)];
	char	*k, *v;
	size_t	 pos = 0, kl, vl;
	int	 kept = 0, r;

	if (len == 5 && strncasecmp(s, "NIL\r\n", 5) == 0)
		return evbuffer_add(out, "NIL\r\n", 5);
	if (len < 4 || s[pos++] != '(')
		return -1;
	while (s[pos] != ')') {
		if (imap_id_string(s, len, &pos, &k, &kl) != 1 ||
		    pos >= len || s[pos++] != ' ' ||
		    (r = imap_id_string(s, len, &pos, &v, &vl)) == -1 ||
		    pos >= len)
			return -1;
		if (imap_id_trusted(k, kl)) {
			log_info("%s: client %s: ID parameter \"%s\" removed",
			    f->sid, f->addr, log_escape(kesc, sizeof(kesc),
			    k, kl, IMAP_TAG_MAX));
		} else {
			evbuffer_add(out, kept++ ? " " : "(", 1);
			if (imap_id_quote(out, k, kl) == -1)
				return -1;
			evbuffer_add(out, " ", 1);
			if (r == 0)
				evbuffer_add(out, "NIL", 3);
			else if (imap_id_quote(out, v, vl) == -1)
				return -1;
		}
		if (s[pos] == ' ' && pos + 1 < len && s[pos + 1] != ')')
			pos++;
		else if (s[pos] != ')')
			return -1;
	}
	if (len - pos != 3 || memcmp(s + pos, ")\r\n", 3) != 0)
		return -1;
	return evbuffer_add(out, kept ? ")\r\n" : "NIL\r\n", kept ? 3 : 5);
}

/*
 * One string at s[*pos]: quoted (unescaped in place) or a literal as
 * gathered ("{n}" or "{n+}" CRLF and n bytes).  Returns 1, 0 for NIL,
 * -1 when it is neither.
 */
static int
imap_id_string(char *s, size_t len, size_t *pos, char **str, size_t *slen)
{
	struct imap_lit	 lit;
	size_t		 i = *pos, w, e;

	if (i < len && s[i] == '"') {
		if ((e = imap_lex_quoted(s, len, i)) == 0)
			return -1;
		*str = s + i;
		for (i++, w = 0; i < e; i++, w++)
			(*str)[w] = s[i] == '\\' ? s[++i] : s[i];
		*slen = w;
		*pos = e + 1;
		return 1;
	}
	if (i < len && s[i] == '{') {
		for (e = i; e < len && s[e] != '\r'; e++)
			;
		if (imap_lit_at_end(s + i, e - i, &lit) != 1 ||
		    lit.start != 0 || len - e < 2 ||
		    lit.size > len - e - 2)
			return -1;
		*str = s + e + 2;
		*slen = (size_t)lit.size;
		*pos = e + 2 + (size_t)lit.size;
		return 1;
	}
	if (len - i >= 3 && strncasecmp(s + i, "NIL", 3) == 0) {
		*pos = i + 3;
		return 0;
	}
	return -1;
}

/* Write s as a quoted string; CR, LF and NUL cannot be quoted. */
static int
imap_id_quote(struct evbuffer *out, const char *s, size_t len)
{
	size_t	 i;

	if (memchr(s, '\r', len) || memchr(s, '\n', len) ||
	    memchr(s, '\0', len))
		return -1;
	evbuffer_add(out, "\"", 1);
	for (i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			evbuffer_add(out, "\\", 1);
		evbuffer_add(out, s + i, 1);
	}
	evbuffer_add(out, "\"", 1);
	return 0;
}

static bool
imap_id_trusted(const char *k, size_t kl)
{
	size_t	 i, n;

	for (i = 0; i < sizeof(imap_id_trusted_keys) /
	    sizeof(imap_id_trusted_keys[0]); i++) {
		n = strlen(imap_id_trusted_keys[i]);
		if (kl >= n && strncasecmp(k, imap_id_trusted_keys[i], n) == 0)
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* Backend side */

static enum filter_verdict
imap_backend_input(struct imap *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	int	 r;

	(void)to_backend;
	if (f->cstate == IMAP_C_CLOSED)
		return FILTER_CLOSE;
	/*
	 * Our replies go out at every response boundary, not only when the
	 * read is used up: a local reply queued between two commands must
	 * leave before the second one's completion when both completions
	 * arrive in one read (imap_flush() writes only at a boundary).
	 */
	while ((r = imap_backend_step(f, in, to_client)) == 1)
		imap_flush(f, to_client);
	if (r == -1)
		return FILTER_CLOSE;
	imap_flush(f, to_client);
	return FILTER_CONTINUE;
}

/* imap_close() for the backend reader's convention. */
static int
imap_bclose(struct imap *f, struct evbuffer *to_client, const char *bye,
    const char *reason)
{
	imap_close(f, to_client, bye, reason);
	return -1;
}

/* 1: progress, 0: need more input, -1: closed. */
static int
imap_backend_step(struct imap *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	size_t	 n;

	switch (f->bstate) {
	case IMAP_B_LITERAL:
		if ((n = evbuffer_get_length(in)) == 0 && f->blit_left > 0)
			return 0;
		if (n > f->blit_left)
			n = (size_t)f->blit_left;
		evbuffer_remove_buffer(in, to_client, n);
		if ((f->blit_left -= n) == 0)
			f->bstate = IMAP_B_LINE;
		return 1;
	case IMAP_B_LONG:
		return imap_backend_long(f, in, to_client);
	case IMAP_B_LINE:
		return imap_backend_line(f, in, to_client);
	}
	return 0;
}

static int
imap_backend_line(struct imap *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	struct imap_lit	 lit;
	size_t		 len;
	unsigned	 flags;
	const char	*eol;

	switch (lineio_get(in, f->line_max, f->buf, f->bufsz, &len, &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		return imap_backend_long(f, in, to_client);
	case LINEIO_LINE:
		break;
	}
	/* Relayed byte-exact: the line's own ending goes back on. */
	eol = (flags & LINEIO_BARE_LF) ? "\n" : "\r\n";
	if (!f->bmid)
		return imap_backend_start(f, f->buf, len, eol, to_client);
	evbuffer_add(to_client, f->buf, len);
	evbuffer_add(to_client, eol, strlen(eol));
	if (imap_lit_at_end(f->buf, len, &lit) == -1)
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid literal from backend");
	return imap_backend_lineend(f, &lit);
}

/*
 * A line longer than line_max (SEARCH results, big FETCH lists) is
 * streamed; only its start (kind, tag) and its last bytes (a literal
 * marker) matter.  Greetings and capability lists must fit: they are
 * rewritten, and we will not pass one we could not rewrite.
 */
static int
imap_backend_long(struct imap *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	struct imap_lit	 lit;
	size_t		 b, e;

	if (f->bstate == IMAP_B_LINE) {
		evbuffer_copyout(in, f->buf, f->line_max);
		if (!f->bmid && (!f->greeted ||
		    imap_capa_locate(f->buf, f->line_max, &b, &e)))
			return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
			    "backend response too long");
		if (!f->bmid)
			f->bmsg = imap_msg_classify(f, f->buf, f->line_max);
		f->btail.n = 0;
		f->bstate = IMAP_B_LONG;
	}
	if (!imap_stream_line(in, to_client, &f->btail))
		return 0;
	f->bstate = IMAP_B_LINE;
	if (imap_lit_at_end(f->btail.b, f->btail.n, &lit) == -1)
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid literal from backend");
	return imap_backend_lineend(f, &lit);
}

/* The first line of a response. */
static int
imap_backend_start(struct imap *f, const char *s, size_t len,
    const char *eol, struct evbuffer *to_client)
{
	struct imap_lit	 lit;
	size_t		 b, e;

	if (!f->greeted)
		return imap_greeting(f, s, len, eol, to_client);
	if (imap_lit_at_end(s, len, &lit) == -1)
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid literal from backend");
	f->bmsg = imap_msg_classify(f, s, len);
	/*
	 * A capability list is atoms on one line; one that ends in a literal,
	 * or rides on a continuation, could not be rewritten, so it is not
	 * passed on at all (found by fuzzing).
	 */
	if ((lit.present && imap_capa_locate(s, len, &b, &e)) ||
	    (f->bmsg == IMAP_MSG_CONT && len >= 13 &&
	    strncasecmp(s + 1, " [CAPABILITY", 12) == 0))
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "capability list we cannot rewrite");
	/* Continuations carry SASL challenges: never rewritten. */
	if (lit.present || f->bmsg == IMAP_MSG_CONT) {
		evbuffer_add(to_client, s, len);
		evbuffer_add(to_client, eol, strlen(eol));
	} else
		imap_relay_line(f, s, len, eol, to_client);
	return imap_backend_lineend(f, &lit);
}

/* A backend line is over: a literal follows, or the response ends. */
static int
imap_backend_lineend(struct imap *f, const struct imap_lit *lit)
{
	if (lit->present) {
		f->bmid = true;
		f->blit_left = lit->size;
		f->bstate = IMAP_B_LITERAL;
		return 1;
	}
	f->bmid = false;
	imap_msg_end(f);
	return 1;
}

/*
 * The greeting (RFC 9051 section 7.1): OK, PREAUTH or BYE.  PREAUTH in
 * cleartext would skip authentication before TLS (SPEC section 3, the
 * RFC 2595 section 3.1 hazard): refused.  Anything else is not IMAP.
 */
static int
imap_greeting(struct imap *f, const char *s, size_t len, const char *eol,
    struct evbuffer *to_client)
{
	struct imap_lit	 lit;
	size_t		 w;

	w = len > 2 ? imap_word_len(s + 2, len - 2) : 0;
	if (len < 2 || memcmp(s, "* ", 2) != 0 ||
	    imap_lit_at_end(s, len, &lit) != 0 ||
	    !imap_status_word(s + 2, w, true) ||
	    util_word_eq(s + 2, w, "NO") || util_word_eq(s + 2, w, "BAD")) {
		log_warnx("%s: client %s: invalid greeting from backend",
		    f->sid, f->addr);
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid backend greeting");
	}
	if (util_word_eq(s + 2, w, "PREAUTH") && imap_cleartext(f)) {
		log_warnx("%s: client %s: backend greeting PREAUTH in "
		    "cleartext, closing", f->sid, f->addr);
		return imap_bclose(f, to_client, IMAP_L_BYE_PREAUTH,
		    "backend PREAUTH in cleartext");
	}
	f->greeted = true;
	imap_relay_line(f, s, len, eol, to_client);
	return 1;
}

/* What kind of response starts with this line; keeps a tagged one's tag. */
static enum imap_msg
imap_msg_classify(struct imap *f, const char *s, size_t len)
{
	size_t	 t, w;

	/* A tag never starts with "+" (RFC 9051 tag grammar). */
	if (len > 0 && s[0] == '+')
		return IMAP_MSG_CONT;
	t = imap_word_len(s, len);
	if (t == len || t > IMAP_TAG_MAX || (t == 1 && s[0] == '*'))
		return IMAP_MSG_OTHER;
	w = imap_word_len(s + t + 1, len - t - 1);
	if (!imap_status_word(s + t + 1, w, false))
		return IMAP_MSG_OTHER;
	memcpy(f->btag, s, t);
	f->btaglen = t;
	return IMAP_MSG_TAGGED;
}

/*
 * A whole response has been relayed; it may release client input that
 * waited on it.
 */
static void
imap_msg_end(struct imap *f)
{
	unsigned	 id;

	if (f->bmsg == IMAP_MSG_CONT) {
		if (f->cstate == IMAP_C_LIT_WAIT) {
			f->clit_left = f->clit_wait;
			imap_enter(f, IMAP_C_LITERAL);
		} else if (f->cstate == IMAP_C_AUTH_WAIT)
			imap_enter(f, IMAP_C_SASL);
		else if (f->cstate == IMAP_C_IDLE_WAIT)
			imap_enter(f, IMAP_C_IDLE);
		return;
	}
	if (f->bmsg != IMAP_MSG_TAGGED ||
	    (id = imap_slot_complete(f, f->btag, f->btaglen)) == 0 ||
	    id != f->cwait_id)
		return;
	switch (f->cstate) {
	case IMAP_C_LIT_WAIT:	/* refused: the client drops the literal */
	case IMAP_C_AUTH_WAIT:
	case IMAP_C_SASL:
	case IMAP_C_IDLE_WAIT:
	case IMAP_C_IDLE:	/* the server ended IDLE itself */
		f->cmode = IMAP_CM_FORWARD;
		imap_enter(f, IMAP_C_COMMAND);
		break;
	case IMAP_C_SKIP:
		if (f->cnext == IMAP_C_AUTH_WAIT)
			f->cnext = IMAP_C_COMMAND;
		break;
	default:
		break;
	}
}

static void
imap_relay_line(struct imap *f, const char *s, size_t len, const char *eol,
    struct evbuffer *to_client)
{
	size_t	 b, e;

	if (imap_capa_locate(s, len, &b, &e)) {
		imap_capa_rewrite(f, s, len, b, e, to_client);
		return;
	}
	evbuffer_add(to_client, s, len);
	evbuffer_add(to_client, eol, strlen(eol));
}

/* OK, NO, BAD, and with untagged also PREAUTH and BYE. */
static bool
imap_status_word(const char *s, size_t len, bool untagged)
{
	if (util_word_eq(s, len, "OK") || util_word_eq(s, len, "NO") ||
	    util_word_eq(s, len, "BAD"))
		return true;
	return untagged && (util_word_eq(s, len, "PREAUTH") ||
	    util_word_eq(s, len, "BYE"));
}

/*
 * Find a capability list: "* CAPABILITY ..." or a status response whose
 * text starts with "[CAPABILITY ...]" (RFC 9051 section 7.2.2, 7.1).
 * [*beg, *end) is the list with its leading SP.
 */
static bool
imap_capa_locate(const char *s, size_t len, size_t *beg, size_t *end)
{
	const char	*rb;
	size_t		 t, i, w;

	t = imap_word_len(s, len);
	if (t == 0 || t == len)
		return false;
	i = t + 1;
	w = imap_word_len(s + i, len - i);
	if (t == 1 && s[0] == '*' && util_word_eq(s + i, w, "CAPABILITY")) {
		*beg = i + w;
		*end = len;
		return true;
	}
	if (!imap_status_word(s + i, w, t == 1 && s[0] == '*'))
		return false;
	i += w;
	if (len - i < 12 || strncasecmp(s + i, " [CAPABILITY", 12) != 0)
		return false;
	i += 12;
	if (i < len && s[i] != ' ' && s[i] != ']')
		return false;
	*beg = i;
	rb = memchr(s + i, ']', len - i);
	*end = rb != NULL ? (size_t)(rb - s) : len;
	return true;
}

static bool
imap_capa_hidden(const struct imap *f, const char *tok, size_t len)
{
	const struct imap_capa_rule	*r;
	size_t				 i, n;
	bool				 match;

	for (i = 0; i < sizeof(imap_capa_rules) / sizeof(imap_capa_rules[0]);
	    i++) {
		r = &imap_capa_rules[i];
		n = strlen(r->name);
		match = (r->flags & IMAP_K_PREFIX) ?
		    len >= n && strncasecmp(tok, r->name, n) == 0 :
		    util_word_eq(tok, len, r->name);
		if (match)
			return (r->flags & (f->tls_active ? IMAP_K_TLS :
			    IMAP_K_CLEAR)) != 0;
	}
	return false;
}

/*
 * Write the line with the list [beg, end) filtered by imap_capa_rules
 * and, in cleartext, STARTTLS (on STARTTLS services) and LOGINDISABLED
 * added exactly once (RFC 2595 section 3.1, RFC 9051 section 6.2.3).
 */
static void
imap_capa_rewrite(const struct imap *f, const char *s, size_t len,
    size_t beg, size_t end, struct evbuffer *out)
{
	size_t	 i = beg, w;

	evbuffer_add(out, s, beg);
	while (i < end) {
		if (s[i] == ' ') {
			i++;
			continue;
		}
		for (w = 0; i + w < end && s[i + w] != ' '; w++)
			;
		if (!imap_capa_hidden(f, s + i, w)) {
			evbuffer_add(out, " ", 1);
			evbuffer_add(out, s + i, w);
		}
		i += w;
	}
	if (imap_cleartext(f)) {
		if (f->starttls_service)
			evbuffer_add(out, " STARTTLS", 9);
		evbuffer_add(out, " LOGINDISABLED", 14);
	}
	evbuffer_add(out, s + end, len - end);
	evbuffer_add(out, "\r\n", 2);
}

/* ---------------------------------------------------------------------- */
/* The filter core's view of this protocol (filter.h). */

static void *
imap_op_init(struct filter *core, const struct filter_params *p)
{
	(void)core;
	return imap_filter_new(p);
}

static void
imap_op_free(void *state)
{
	imap_filter_free(state);
}

static enum filter_verdict
imap_op_verdict(struct filter *core, enum filter_verdict v)
{
	if (v == FILTER_CLOSE && core->reason == NULL)
		core->reason = imap_reason(core->proto);
	return v;
}

static enum filter_verdict
imap_op_client_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	return imap_op_verdict(core, imap_client_input(core->proto, in,
	    to_backend, to_client));
}

static enum filter_verdict
imap_op_backend_input(struct filter *core, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	return imap_op_verdict(core, imap_backend_input(core->proto, in,
	    to_client, to_backend));
}

static void
imap_op_tls_reset(struct filter *core, struct evbuffer *to_backend)
{
	(void)core;
	(void)to_backend;
}

static void
imap_op_last_word(const struct filter *f, char *buf, size_t len)
{
	(void)f;
	snprintf(buf, len, "%s", IMAP_L_BYE_ERRORS);
}

const struct proto_ops proto_imap_ops = {
	.name = "imap",
	.alpn = "imap",
	.init = imap_op_init,
	.free = imap_op_free,
	.client_input = imap_op_client_input,
	.backend_input = imap_op_backend_input,
	.tls_reset = imap_op_tls_reset,
	.last_word = imap_op_last_word,
	.unavailable = imap_unavailable,
};
