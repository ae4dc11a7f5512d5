/*
 * proto_imap.c - the IMAP filter (SPEC sections 3 and 8).
 *
 * Runs on the filter core (filter.h), which owns the reply FIFO, the error
 * budget, the STARTTLS boundary, the SASL response line, the capability
 * keyword matcher and the log prefix.  This file keeps only IMAP's framing
 * grammar, its verb table, its capability rules and its reply texts.  It
 * holds for the whole session: the cleartext phase of STARTTLS services,
 * and implicit-TLS sessions too, because framing and the proxy-authority
 * rules (ID parameters, COMPRESS) hold everywhere.
 *
 * Client side: a command is a first line ("tag SP verb [SP args]") plus,
 * for every literal marker {n} / {n+} / ~{n} ending a line, n counted bytes
 * and a continuation line.  Each line is lexed strictly (RFC 9051): tokens
 * are separated by one SP, a control or 8-bit byte outside a quoted string
 * or a literal is refused, quotes open only at a token start and close on
 * the line, "{" only as the final literal marker, atoms hold ATOM-CHARs
 * and only the specials the grammar allows ("]", a flag's "\", "*" in a
 * sequence-set, "%" and "*" in a LIST pattern), parentheses balance over
 * the whole command, and the verb is letters or an x-command.  So we find
 * exactly the literals a conforming backend finds, and no lenient backend
 * can split a line we forwarded differently (`a LOGIN<HTAB>u p`,
 * `a  LOGIN`, `a LOGIN u p)`, `a LOGIN u\ p`): what
 * leaves is only our canonical re-serialisation of the tokens we lexed
 * (uppercase verb, single SP, canonical literal sizes), never client bytes
 * (SPEC 8.4).  A refused command is never forwarded: its {n+} bytes are
 * dropped with the rest of it, and a refused synchronizing literal is
 * simply never asked for (RFC 9051 section 7.5: the client drops the
 * command on the tagged reply instead of "+").  While the backend decides
 * how the next client bytes are framed (synchronizing literal,
 * AUTHENTICATE, IDLE) client input is held until its "+" or its tagged
 * completion.
 *
 * Literal types follow the backend's capability list (RFC 7888, RFC 3516):
 * {n+} only after LITERAL+ (or LITERAL- with n <= 4096), ~{n} only after
 * BINARY; otherwise `tag BAD` and the literal is skipped.  The Courier
 * attack `a NOOP {27+}` CRLF `b LOGIN u p` thus never reaches a backend
 * without LITERAL+.  What the backend advertised is kept across STARTTLS:
 * it describes the backend connection, which the client's TLS does not
 * change (the backend never sees TLS), and a client re-issues CAPABILITY
 * after STARTTLS anyway (RFC 9051 section 6.2.1), which refreshes it.  A
 * {n+} or ~{n} the backend cannot take on a continuation line (the first
 * line has left already) cannot be refused with a tagged BAD any more:
 * the session closes.
 *
 * Before TLS only CAPABILITY, NOOP, LOGOUT, STARTTLS and ID are accepted;
 * LOGIN and AUTHENTICATE get `NO [PRIVACYREQUIRED]`, anything else `BAD`.
 * COMPRESS (RFC 4978) is hidden and refused with `NO [CANNOT]` on every
 * service, the result RFC 4978 section 3 gives a server that refuses to
 * compress: a compressed stream could no longer be filtered.  Every
 * refusal counts towards max_errors (filter_refuse).
 *
 * ID (RFC 2971) is gathered whole, every key beginning with "x-" removed
 * (Dovecot trusts x-originating-*, x-client-transport, x-multiplex... from
 * its proxy), and re-serialised: quoted strings, or, for a value a quoted
 * string cannot carry (CR, LF, 8-bit), a literal: {n+} when the backend
 * takes one, else a synchronizing {n}.  Then the command leaves in pieces
 * (imap_id_send): up to and including each "{n}" CRLF, the backend's "+"
 * (ours: never relayed, the client did not ask for it), the next piece.
 * Client input is held meanwhile (IMAP_C_ID_WAIT), so commands pipelined
 * behind ID keep their order.  A tagged reply instead of "+" is relayed
 * and the rest of the ID dropped: sent after it, the literal bytes would
 * be read as commands.  The pieces are bounded by the gathered command
 * (bufsz) and by IMAP_ID_SYNC_MAX literals.
 *
 * backend_tls = starttls (SPEC 12): before the client is read, every backend
 * connection gets our own dialogue in cleartext (imap_prelude_line): the
 * greeting must be "* OK" (PREAUTH would skip the STARTTLS, BYE refuses;
 * its capability code, untrusted, is ignored), our "mt1 CAPABILITY" must
 * list STARTTLS, our "mt2 STARTTLS" must get a tagged OK.  Lines are read
 * strictly: no literal, no continuation, no other tag, no untagged
 * response but CAPABILITY, OK, NO and BAD.  After the verified handshake
 * the client gets our own "* OK" greeting (no capabilities: those it can
 * trust come from its own CAPABILITY, answered inside TLS), and what the
 * cleartext server said about literals is forgotten.
 *
 * Backend side: responses are framed line by line and literal by literal
 * (streamed, never buffered whole), so message text in a FETCH is never
 * taken for a status line.  Capability lists are rewritten by keyword
 * (filter_capa_next: keywords split at any run of SP or HTAB) wherever
 * they appear; the greeting must be OK, PREAUTH (refused in cleartext) or
 * BYE.
 *
 * RFCs: 9051/3501 (IMAP), 2595 (STARTTLS), 5530 (response codes), 7888
 * (LITERAL+/-), 2971 (ID), 2177 (IDLE), 4959 (SASL-IR), 3516 (BINARY),
 * 4978 (COMPRESS).
 */
#include "config.h"

#include <sys/types.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter.h"
#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

/* Bytes kept from the end of a streamed line: "~{<20 digits>+}" fits. */
#define IMAP_TAIL_MAX		32
/* Longest command name we accept (UNAUTHENTICATE has 14). */
#define IMAP_VERB_MAX		32
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
/* RFC 7888 section 4: LITERAL- allows {n+} up to this size. */
#define IMAP_LITERAL_MINUS_MAX	4096

/*
 * Synchronizing literals in one re-serialised ID: RFC 2971 section 3.3
 * allows 30 field-value pairs, so 60 strings; a pair beyond is dropped.
 */
#define IMAP_ID_SYNC_MAX	60

/* Our FIFO slot: a forwarded command, done once its completion is relayed. */
#define IMAP_SLOT_CMD		FSLOT_PROTO
/* A command of our own (SPEC 12 prelude): its responses are ours. */
#define IMAP_SLOT_OWN		(FSLOT_PROTO + 1)
#define IMAP_OWN_CAPA_TAG	"mt1"
#define IMAP_OWN_TLS_TAG	"mt2"
/*
 * Untagged lines a server may send while one of our own commands is
 * pending (as POP3's CAPA and SMTP's EHLO replies are bounded): past
 * this the server is not one we can use.
 */
#define IMAP_OWN_LINES_MAX	256

/* What the backend's last capability list said (framing depends on it). */
#define IMAP_BC_LITPLUS		0x01	/* LITERAL+ */
#define IMAP_BC_LITMINUS	0x02	/* LITERAL- */
#define IMAP_BC_BINARY		0x04	/* BINARY: ~{n} */

/* Tagged (after "tag ") and untagged replies; RFC 5530 codes. */
#define IMAP_R_CLEARAUTH	"NO [PRIVACYREQUIRED] Plaintext " \
				"authentication disallowed on non-secure " \
				"connection, use STARTTLS first\r\n"
#define IMAP_R_CLEARCMD		"BAD Command not permitted before " \
				"STARTTLS\r\n"
#define IMAP_R_TLSUP		"BAD TLS already active\r\n"
#define IMAP_R_NOTLS		"BAD STARTTLS not available\r\n"
#define IMAP_R_NOARGS		"BAD Command takes no arguments\r\n"
#define IMAP_R_BADCHAR		"BAD Invalid characters in command line\r\n"
#define IMAP_R_BADSPACE		"BAD Tokens must be separated by one " \
				"space\r\n"
#define IMAP_R_SYNTAX		"BAD Invalid command syntax\r\n"
#define IMAP_R_TOOLONG		"* BAD Line too long\r\n"
#define IMAP_R_EMPTY		"* BAD Empty command line\r\n"
#define IMAP_R_BADTAG		"* BAD Invalid tag\r\n"
#define IMAP_R_NOVERB		"BAD Missing command\r\n"
#define IMAP_R_BADQUOTE		"BAD Invalid quoted string\r\n"
#define IMAP_R_BADATOM		"BAD Invalid characters in atom\r\n"
#define IMAP_R_PAREN		"BAD Unbalanced parentheses\r\n"
#define IMAP_R_BADLIT		"BAD Invalid literal\r\n"
#define IMAP_R_LITPLUS		"BAD Non-synchronizing literal not " \
				"supported\r\n"
#define IMAP_R_LIT8		"BAD Binary literal not supported\r\n"
#define IMAP_R_TOOBIG		"BAD [TOOBIG] Literal too large\r\n"
#define IMAP_R_BADID		"BAD Invalid ID parameters\r\n"
#define IMAP_R_AUTHLIT		"BAD Literal not allowed in AUTHENTICATE\r\n"
#define IMAP_R_NODONE		"* BAD Expected DONE\r\n"
#define IMAP_R_COMPRESS		"NO [CANNOT] COMPRESS is not available\r\n"
#define IMAP_R_TLSGO		"OK Begin TLS negotiation now\r\n"
#define IMAP_R_AUTHLIMIT	"NO [UNAVAILABLE] Too many authentication " \
				"failures\r\n"
#define IMAP_L_CONT		"+ Ready for literal data\r\n"
#define IMAP_L_BYE_ERRORS	"* BYE Too many errors\r\n"
#define IMAP_L_BYE_TOOBIG	"* BYE [TOOBIG] Literal too large\r\n"
#define IMAP_L_BYE_TOOLONG	"* BYE Line too long\r\n"
#define IMAP_L_BYE_SYNTAX	"* BYE Invalid command continuation\r\n"
#define IMAP_L_BYE_LITERAL	"* BYE Literal type not supported\r\n"
#define IMAP_L_BYE_PREAUTH	"* BYE [UNAVAILABLE] Pre-authenticated " \
				"session refused in cleartext\r\n"
#define IMAP_L_BYE_BACKEND	"* BYE [UNAVAILABLE] Invalid response " \
				"from server\r\n"
#define IMAP_L_UNAVAIL		"* BYE [UNAVAILABLE] Service temporarily " \
				"unavailable\r\n"
#define IMAP_L_TIMEOUT		"* BYE Autologout; idle for too long\r\n"
#define IMAP_L_RATE		"* BYE [UNAVAILABLE] Too many connections\r\n"

/* Where the client stream is. */
enum imap_cstate {
	IMAP_C_COMMAND = 0,	/* start of a command line */
	IMAP_C_CONT,		/* the line following a literal */
	IMAP_C_LITERAL,		/* counted literal bytes */
	IMAP_C_LIT_WAIT,	/* {n} forwarded: "+" or completion? */
	IMAP_C_AUTH_WAIT,	/* AUTHENTICATE: "+" or completion? */
	IMAP_C_SASL,		/* next line: a SASL response */
	IMAP_C_IDLE_WAIT,	/* IDLE forwarded: "+" or completion? */
	IMAP_C_ID_WAIT,		/* ID up to our {n} sent: "+" or completion? */
	IMAP_C_IDLE,		/* next line must be DONE */
	IMAP_C_SKIP,		/* rest of an over-long line */
	IMAP_C_STARTTLS,	/* STARTTLS read, earlier commands due */
	IMAP_C_CLOSED,		/* nothing more is read from the client */
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
	IMAP_STEP_CLOSE,	/* nothing more is read from the client */
	IMAP_STEP_STARTTLS,
};

/* What the lexer saw last: whether a token, SP or ")" may follow. */
enum imap_lx {
	IMAP_LX_SEP = 0,	/* after SP (or the verb's SP): a token */
	IMAP_LX_OPEN,		/* after "(": a token or ")" */
	IMAP_LX_ATOM,		/* after an atom */
	IMAP_LX_CLOSE,		/* after ")" */
	IMAP_LX_STRING,		/* after a quoted string or a literal */
};

/* What the lexer carries from one line of a command to the next. */
struct imap_lexer {
	enum imap_lx	 prev;
	unsigned	 depth;		/* "(" not yet closed */
	bool		 listpat;	/* LIST/LSUB: list-wildcards allowed */
};

/* The end of a line: a literal marker, RFC 9051 section 4.3. */
struct imap_lit {
	bool		 present;
	bool		 nonsync;	/* {n+}: the bytes follow at once */
	bool		 binary;	/* ~{n} (RFC 3516 literal8) */
	uint64_t	 size;
	size_t		 start;		/* of "{" or "~{" in the line */
};

/* The last bytes of a line streamed in pieces. */
struct imap_tail {
	char		 b[IMAP_TAIL_MAX];
	size_t		 n;
};

/* A lexed first line: the pieces its canonical form is built from. */
struct imap_cmd {
	const char	*tag;
	size_t		 taglen;
	char		 verb[IMAP_VERB_MAX + 1];	/* uppercase */
	size_t		 verblen;
	const char	*args;		/* canonical; NULL: none */
	size_t		 argslen;
	struct imap_lit	 lit;
};

/*
 * An ID re-serialised with synchronizing literals, on its way in pieces:
 * cut[i] is the offset in the whole command just after the i-th "{n}"
 * CRLF, where we wait for the backend's "+".
 */
struct imap_idsend {
	struct evbuffer	*rest;		/* what has not left yet */
	size_t		 sent;		/* bytes of the command sent */
	size_t		 cut[IMAP_ID_SYNC_MAX];
	unsigned	 ncut;
	unsigned	 next;		/* next cut to send up to */
	bool		 go;		/* the "+" came: send the next piece */
};

/* The buffers of one client_input() call. */
struct imap_io {
	struct evbuffer	*in;
	struct evbuffer	*to_backend;
	struct evbuffer	*to_client;
};

struct imap {
	size_t		 line_max;
	size_t		 bufsz;		/* line_max + 2 */
	char		*buf;		/* a line as read (lent) */
	char		*out;		/* its canonical form (lent) */

	/* client side */
	enum imap_cstate cstate;
	enum imap_cstate cnext;		/* after IMAP_C_SKIP */
	enum imap_cmode	 cmode;
	uint64_t	 clit_left;	/* IMAP_C_LITERAL */
	uint64_t	 clit_wait;	/* size of the {n} awaiting "+" */
	unsigned	 cnlit;		/* literals in this command */
	unsigned	 cwait_id;	/* slot whose "+"/completion we await */
	bool		 local_cont;	/* our "+" for a collected literal */
	char		 ctag[FILTER_TAG_MAX + 1];
	size_t		 ctaglen;
	struct imap_lexer clex;		/* lexer state across literals */
	struct imap_tail ctail;
	struct evbuffer	*collect;	/* ID being gathered (canonical) */
	struct imap_idsend *idsend;	/* ID being sent in pieces */
	char		 go_ahead[FILTER_TAG_MAX + sizeof(IMAP_R_TLSGO) + 1];

	/* backend side */
	unsigned	 bcapa;		/* IMAP_BC_* */
	enum imap_bstate bstate;
	bool		 greeted;
	bool		 bmid;		/* inside a response with literals */
	enum imap_msg	 bmsg;		/* kind of that response */
	uint64_t	 blit_left;
	struct imap_tail btail;
	char		 btag[FILTER_TAG_MAX + 1];
	size_t		 btaglen;
	bool		 bno;		/* that tagged response is a NO */
	bool		 bstarttls;	/* prelude: STARTTLS listed */
	unsigned	 own_lines;	/* prelude: untagged lines read */
};

struct imap_verb {
	const char	*verb;
	enum imap_step	(*handler)(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
	unsigned	 flags;
};

/* Verb flags (STYLE section 4). */
#define IMAP_V_PRETLS		0x01	/* accepted before TLS */
#define IMAP_V_CREDENTIALS	0x02	/* refused in cleartext (SPEC 8.5) */
#define IMAP_V_INTERCEPT	0x04	/* answered here, in every state */
#define IMAP_V_NOARGS		0x08	/* no arguments: our state needs it */

static void		*imap_init(struct filter *, const struct filter_params *);
static void		 imap_free(void *);
static enum filter_verdict imap_client_input(struct filter *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static enum filter_verdict imap_backend_input(struct filter *,
			    struct evbuffer *, struct evbuffer *,
			    struct evbuffer *);
static void		 imap_tls_reset(struct filter *, struct evbuffer *);
static void		 imap_last_word(const struct filter *, char *, size_t);
static void		 imap_unavailable(struct evbuffer *, const char *);
static bool		 imap_at_boundary(const struct filter *);
static void		 imap_timeout_reply(struct evbuffer *, const char *);
static void		 imap_rate_limited(struct evbuffer *, const char *);

static const char	*imap_cstate_name(enum imap_cstate);
static void		 imap_enter(struct filter *, enum imap_cstate);
static enum imap_step	 imap_close(struct filter *, struct evbuffer *,
			    const char *, const char *);
static uint64_t		 imap_literal_max(const struct filter *);

static void		 imap_tail_feed(struct imap_tail *, struct evbuffer *,
			    size_t);
static int		 imap_stream_line(struct evbuffer *,
			    struct evbuffer *, struct imap_tail *);
static int		 imap_lit_at_end(const char *, size_t,
			    struct imap_lit *);
static size_t		 imap_lit_format(char *, const struct imap_lit *);
static size_t		 imap_utf8_len(const unsigned char *, size_t);
static size_t		 imap_lex_quoted(const char *, size_t, size_t);
static bool		 imap_atom_char(unsigned char);
static bool		 imap_seqset(const char *, size_t);
static const char	*imap_lex_atom(const char *, size_t,
			    const struct imap_lexer *);
static const char	*imap_lex(const char *, size_t, struct imap_lexer *,
			    char *, size_t *, struct imap_lit *);
static const char	*imap_lit_allowed(const struct imap *,
			    const struct imap_lit *);
static bool		 imap_tag_char(unsigned char);
static bool		 imap_verb_char(unsigned char);
static bool		 imap_verb_alpha(unsigned char);
static bool		 imap_verb_valid(const char *, size_t);
static size_t		 imap_word_len(const char *, size_t);

static unsigned		 imap_slot_complete(struct filter *, const char *,
			    size_t);
static bool		 imap_backend_idle(const struct imap *);
static void		 imap_flush(struct filter *, struct evbuffer *);

static enum imap_step	 imap_refuse(struct filter *, const char *, size_t,
			    const char *);
static enum imap_step	 imap_segment_end(struct filter *, struct imap_io *,
			    const struct imap_lit *);
static enum imap_step	 imap_command_end(struct filter *, struct imap_io *);
static enum imap_step	 imap_client_step(struct filter *, struct imap_io *);
static enum imap_step	 imap_client_command(struct filter *,
			    struct imap_io *);
static size_t		 imap_parse_tag(const char *, size_t);
static const char	*imap_parse_line(struct imap *, size_t, unsigned,
			    struct imap_cmd *);
static const struct imap_verb *imap_verb_find(const struct imap_cmd *);
static enum imap_step	 imap_command_line(struct filter *, struct imap_io *,
			    size_t, unsigned);
static enum imap_step	 imap_client_cont(struct filter *, struct imap_io *);
static enum imap_step	 imap_cont_line(struct filter *, struct imap_io *,
			    size_t, unsigned);
static enum imap_step	 imap_client_literal(struct filter *,
			    struct imap_io *);
static enum imap_step	 imap_client_sasl(struct filter *, struct imap_io *);
static enum imap_step	 imap_client_idle(struct filter *, struct imap_io *);
static enum imap_step	 imap_client_skip(struct filter *, struct imap_io *);
static enum imap_step	 imap_do_starttls(struct filter *, struct imap_io *);

static enum imap_step	 imap_cmd_forward(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_starttls(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_authenticate(struct filter *,
			    struct imap_io *, const struct imap_cmd *);
static enum imap_step	 imap_cmd_idle(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_compress(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
static enum imap_step	 imap_cmd_id(struct filter *, struct imap_io *,
			    const struct imap_cmd *);
static void		 imap_forward_wait(struct filter *, struct imap_io *,
			    const struct imap_cmd *, enum imap_cstate);

static void		 imap_id_finish(struct filter *, struct imap_io *);
static void		 imap_id_send(struct filter *, struct evbuffer *);
static void		 imap_id_drop(struct imap *);
static int		 imap_id_rewrite(struct filter *, char *, size_t,
			    struct evbuffer *, struct imap_idsend *);
static int		 imap_id_string(char *, size_t, size_t *, char **,
			    size_t *);
static int		 imap_id_pair(struct filter *, struct evbuffer *,
			    struct imap_idsend *, int, const char *, size_t,
			    const char *, size_t);
static bool		 imap_id_literal(const char *, size_t);
static bool		 imap_id_sync(const struct imap *, const char *,
			    size_t);
static void		 imap_id_value(const struct imap *, struct evbuffer *,
			    struct imap_idsend *, const char *, size_t);

static int		 imap_bclose(struct filter *, struct evbuffer *,
			    const char *, const char *);
static int		 imap_prelude_line(struct filter *, const char *,
			    size_t, unsigned, struct evbuffer *);
static int		 imap_prelude_fail(struct filter *, const char *);
static void		 imap_prelude_capa(struct filter *, const char *,
			    size_t);
static void		 imap_backend_tls_ready(struct filter *,
			    struct evbuffer *, struct evbuffer *);
static int		 imap_backend_step(struct filter *, struct evbuffer *,
			    struct evbuffer *, struct evbuffer *);
static int		 imap_backend_line(struct filter *, struct evbuffer *,
			    struct evbuffer *, struct evbuffer *);
static int		 imap_backend_long(struct filter *, struct evbuffer *,
			    struct evbuffer *);
static int		 imap_backend_start(struct filter *, const char *,
			    size_t, const char *, struct evbuffer *);
static int		 imap_backend_lineend(struct filter *,
			    const struct imap_lit *);
static int		 imap_greeting(struct filter *, const char *, size_t,
			    const char *, struct evbuffer *);
static enum imap_msg	 imap_msg_classify(struct imap *, const char *,
			    size_t);
static bool		 imap_id_cont(const struct imap *);
static void		 imap_msg_end(struct filter *);
static void		 imap_relay_line(struct filter *, const char *,
			    size_t, const char *, struct evbuffer *);
static bool		 imap_status_word(const char *, size_t, bool);
static bool		 imap_word_next(const char *, size_t, bool, size_t *,
			    const char **, size_t *);
static bool		 imap_capa_start(const char *, size_t, bool, size_t *,
			    bool *);
static bool		 imap_capa_locate(const char *, size_t, size_t *,
			    size_t *);
static void		 imap_capa_rewrite(struct filter *, const char *,
			    size_t, size_t, size_t, struct evbuffer *);

const struct proto_ops proto_imap_ops = {
	.name = "imap",
	.alpn = "imap",
	.tagged = true,
	.init = imap_init,
	.free = imap_free,
	.client_input = imap_client_input,
	.backend_input = imap_backend_input,
	.tls_reset = imap_tls_reset,
	.last_word = imap_last_word,
	.unavailable = imap_unavailable,
	.at_boundary = imap_at_boundary,
	.timeout_reply = imap_timeout_reply,
	.rate_limited = imap_rate_limited,
	.backend_tls_ready = imap_backend_tls_ready,
};

/*
 * Verbs with a rule.  Every other command is forwarded as lexed inside TLS
 * and refused before it (SPEC section 3: only these pass in cleartext).
 */
static const struct imap_verb imap_verbs[] = {
	/* Arguments are the backend's to judge; literals are framed. */
	{ "CAPABILITY",	  imap_cmd_forward,	 IMAP_V_PRETLS },
	{ "NOOP",	  imap_cmd_forward,	 IMAP_V_PRETLS },
	{ "LOGOUT",	  imap_cmd_forward,	 IMAP_V_PRETLS },
	{ "STARTTLS",	  imap_cmd_starttls,
	    IMAP_V_PRETLS | IMAP_V_INTERCEPT },
	{ "ID",		  imap_cmd_id,		 IMAP_V_PRETLS },
	{ "LOGIN",	  imap_cmd_forward,	 IMAP_V_CREDENTIALS },
	{ "AUTHENTICATE", imap_cmd_authenticate, IMAP_V_CREDENTIALS },
	{ "IDLE",	  imap_cmd_idle,	 IMAP_V_NOARGS },
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
static const struct filter_capa_rule imap_capa_rules[] = {
	{ "STARTTLS",		FCAPA_HIDE_ALWAYS },
	{ "LOGINDISABLED",	FCAPA_HIDE_ALWAYS },
	/* Credentials are refused in cleartext: offer no mechanism. */
	{ "AUTH=",		FCAPA_HIDE_CLEAR | FCAPA_PREFIX },
	{ "SASL-IR",		FCAPA_HIDE_CLEAR },
	/* Compressed streams cannot be filtered (see the header). */
	{ "COMPRESS=",		FCAPA_HIDE_ALWAYS | FCAPA_PREFIX },
};
#define IMAP_NCAPA_RULES	(sizeof(imap_capa_rules) / \
				sizeof(imap_capa_rules[0]))

/* ------------------------------------------------------------------ */
/* Protocol state and the core's hooks */

static void *
imap_init(struct filter *f, const struct filter_params *p)
{
	struct imap	*st;

	(void)p;
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	st->line_max = f->svc->max_line_length ? f->svc->max_line_length :
	    DEFAULT_IMAP_LINE_MAX;
	st->bufsz = st->line_max + 2;
	/*
	 * Lent per hook (filter_lend_buffer()): an ID being gathered is kept
	 * in st->collect, the command's tag in st->ctag, the lexer's state
	 * across literals in st->clex, never in these.
	 */
	filter_lend_buffer(f, &st->buf, st->bufsz);
	filter_lend_buffer(f, &st->out, st->bufsz);
	return st;
}

static void
imap_free(void *p)
{
	struct imap	*st = p;

	if (st == NULL)
		return;
	if (st->collect != NULL)
		evbuffer_free(st->collect);
	imap_id_drop(st);
	free(st);
}

/*
 * The go-ahead has been written (SPEC 8.3): a fresh command reader inside
 * TLS.  The backend was idle at the go-ahead (imap_do_starttls), so the
 * backend reader has nothing to forget; bcapa stays (see the header).
 */
static void
imap_tls_reset(struct filter *f, struct evbuffer *to_backend)
{
	struct imap	*st = f->proto;

	(void)to_backend;
	if (st->collect != NULL) {
		evbuffer_free(st->collect);
		st->collect = NULL;
	}
	imap_id_drop(st);
	st->cmode = IMAP_CM_FORWARD;
	st->cnlit = 0;
	st->local_cont = false;
	imap_enter(f, IMAP_C_COMMAND);
	/*
	 * SPEC 9: a fresh backend connection for the TLS phase; its
	 * greeting is read as any greeting (capabilities included) but the
	 * core keeps it from the client, who was greeted already.
	 */
	if (f->renew_backend)
		st->greeted = false;
}

static void
imap_last_word(const struct filter *f, char *buf, size_t len)
{
	(void)f;
	snprintf(buf, len, "%s", IMAP_L_BYE_ERRORS);
}

static void
imap_unavailable(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, IMAP_L_UNAVAIL, strlen(IMAP_L_UNAVAIL));
}

/*
 * An untagged BYE may come between any two responses (RFC 9051 7.1.5),
 * IDLE included, but not inside one (a line, or a response with
 * literals, relayed in part), nor while the client sends literal bytes
 * (it would take the BYE for a continuation it can ignore, and the
 * backend would see a command cut short).
 */
static bool
imap_at_boundary(const struct filter *f)
{
	const struct imap	*st = f->proto;

	return st->bstate == IMAP_B_LINE && !st->bmid &&
	    st->cstate != IMAP_C_LITERAL;
}

static void
imap_timeout_reply(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, IMAP_L_TIMEOUT, strlen(IMAP_L_TIMEOUT));
}

/* SPEC 10, max_connection_rate_per_ip. */
static void
imap_rate_limited(struct evbuffer *to_client, const char *hostname)
{
	(void)hostname;
	evbuffer_add(to_client, IMAP_L_RATE, strlen(IMAP_L_RATE));
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
	case IMAP_C_ID_WAIT:	return "ID_WAIT";
	case IMAP_C_IDLE:	return "IDLE";
	case IMAP_C_SKIP:	return "SKIP";
	case IMAP_C_STARTTLS:	return "STARTTLS";
	case IMAP_C_CLOSED:	return "CLOSED";
	}
	return "?";
}

static void
imap_enter(struct filter *f, enum imap_cstate cs)
{
	struct imap	*st = f->proto;

	if (st->cstate != cs)
		flog(f, debug, "client %s -> %s", imap_cstate_name(st->cstate),
		    imap_cstate_name(cs));
	st->cstate = cs;
	if (cs == IMAP_C_CONT)
		st->ctail.n = 0;
}

/*
 * Stop at once (the stream can no longer be framed): the replies whose
 * turn has come, an optional last line for the client, then close.
 */
static enum imap_step
imap_close(struct filter *f, struct evbuffer *to_client, const char *bye,
    const char *reason)
{
	imap_flush(f, to_client);
	if (bye != NULL)
		evbuffer_add(to_client, bye, strlen(bye));
	if (f->reason == NULL)
		f->reason = reason;
	f->closing = true;
	imap_enter(f, IMAP_C_CLOSED);
	return IMAP_STEP_CLOSE;
}

static uint64_t
imap_literal_max(const struct filter *f)
{
	return filter_cleartext(f) ? IMAP_LITERAL_MAX_CLEAR :
	    IMAP_LITERAL_MAX_TLS;
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
	if (i > 0 && s[i - 1] == '~') {
		lit->binary = true;
		i--;
	}
	lit->present = true;
	lit->size = v;
	lit->start = i;
	return 1;
}

/* The canonical marker ("{7}", not "{007}"); out has room for 25 bytes. */
static size_t
imap_lit_format(char *out, const struct imap_lit *lit)
{
	char	 tmp[32];
	int	 n;

	n = snprintf(tmp, sizeof(tmp), "%s{%llu%s}", lit->binary ? "~" : "",
	    (unsigned long long)lit->size, lit->nonsync ? "+" : "");
	memcpy(out, tmp, (size_t)n);
	return (size_t)n;
}

/*
 * Length of the UTF-8 sequence at s (RFC 9051 UTF8-2, UTF8-3, UTF8-4, the
 * RFC 3629 forms: no overlong encoding, no surrogate, nothing above
 * U+10FFFF), or 0 when it is not one.
 */
static size_t
imap_utf8_len(const unsigned char *s, size_t len)
{
	size_t	 n, i;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * Index of the quote closing the string opened at s[i], or 0.  Inside,
 * RFC 9051 QUOTED-CHAR: any TEXT-CHAR (CR, LF and NUL never reach here),
 * "\" only before DQUOTE or "\", 8-bit only as well-formed UTF-8.
 */
static size_t
imap_lex_quoted(const char *s, size_t len, size_t i)
{
	size_t	 n;

	for (i++; i < len; i++) {
		if (s[i] == '"')
			return i;
		if (s[i] == '\\') {
			/* RFC 9051 quoted-specials are the only escapes. */
			if (i + 1 >= len || (s[i + 1] != '"' &&
			    s[i + 1] != '\\'))
				return 0;
			i++;
		} else if ((unsigned char)s[i] >= 0x80) {
			if ((n = imap_utf8_len((const unsigned char *)s + i,
			    len - i)) == 0)
				return 0;
			i += n - 1;
		}
	}
	return 0;
}

/*
 * RFC 9051 ATOM-CHAR: any CHAR except atom-specials, i.e. not "(", ")",
 * "{", SP, CTL, list-wildcards ("%", "*"), quoted-specials (DQUOTE, "\")
 * or resp-specials ("]").
 */
static bool
imap_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\]", c) == NULL;
}

/*
 * RFC 9051 sequence-set: (seq-number / seq-range) *("," ...), with
 * seq-number = nz-number / "*" and seq-range = seq-number ":" seq-number.
 * Only tokens holding a "*" are checked against it (anything else made
 * of ATOM-CHARs is an atom already).
 */
static bool
imap_seqset(const char *s, size_t len)
{
	size_t		 i = 0, d;
	uint64_t	 v;
	bool		 range = false;

	for (;;) {
		if (i < len && s[i] == '*')
			i++;
		else {
			for (d = i, v = 0; i < len && s[i] >= '0' &&
			    s[i] <= '9' && v <= UINT32_MAX; i++)
				v = v * 10 + (uint64_t)(s[i] - '0');
			/* nz-number: a non-zero 32-bit number, no "0" first */
			if (i == d || s[d] == '0' || v > UINT32_MAX)
				return false;
		}
		if (i == len)
			return true;
		if (s[i] == ':' && !range)
			range = true;
		else if (s[i] == ',')
			range = false;
		else
			return false;
		i++;
	}
}

/*
 * An atom-like token (everything but quoted strings, literals and
 * parentheses) is made of ATOM-CHARs, plus what the RFC 9051 grammar
 * allows where it allows it:
 *  - "]" (resp-specials): ASTRING-CHAR, so in every astring, and the end
 *    of a fetch section (BODY[HEADER.FIELDS (FROM)]<0.100>);
 *  - "\" only first, before an atom: a flag (flag-extension, \Seen);
 *  - "*" in a sequence-set (1:*,3), and "%" and "*" in the list-mailbox
 *    patterns of LIST, LSUB and XLIST (list-char).
 * Anything else is where lenient parsers differ (a "\" read as an escape,
 * `u\ p` taken for one token): refused, never forwarded.
 */
static const char *
imap_lex_atom(const char *s, size_t len, const struct imap_lexer *lx)
{
	size_t	 i;
	bool	 star = false;

	if (s[0] == '\\') {
		for (i = 1; i < len && imap_atom_char((unsigned char)s[i]);
		    i++)
			;
		return len >= 2 && i == len ? NULL : IMAP_R_BADATOM;
	}
	for (i = 0; i < len; i++) {
		if (imap_atom_char((unsigned char)s[i]) || s[i] == ']' ||
		    (lx->listpat && (s[i] == '%' || s[i] == '*')))
			continue;
		if (s[i] != '*')
			return IMAP_R_BADATOM;
		star = true;
	}
	return star && !imap_seqset(s, len) ? IMAP_R_BADATOM : NULL;
}

/*
 * Lex arguments the way a strict RFC 9051 parser does and write their
 * canonical form to out (at most len bytes): the tokens as lexed, one SP
 * between them, the literal marker with its size in canonical digits.
 *
 * Tokens are separated by exactly one SP; a control or 8-bit byte
 * outside a quoted string is refused, so HTAB, VT, NUL... can never be
 * taken for a separator by a lenient backend (`a LOGIN<HTAB>u p`).  A
 * quoted string opens only where a token may start, must close on the
 * line and be followed by SP, ")" or the end.  "{" is only allowed as the
 * marker ending the line: otherwise a backend and we could disagree on
 * whether the line ends with a literal (`NOOP "x {20+}`), and the
 * literal's bytes would run as commands on one side only.  Atoms follow
 * imap_lex_atom().  Parentheses balance over the whole command: a ")"
 * closes an open "(" (`a LOGIN u p)` is refused), and a command may not
 * end with a list open; after ")" only SP, ")" or the "]" ending a fetch
 * section may follow.
 *
 * lx carries what came before: prev is IMAP_LX_SEP for the arguments of
 * a first line (after the verb's SP) and IMAP_LX_STRING for the line
 * after a literal, depth the lists still open.  Returns NULL (lit filled)
 * or the reply refusing the line.
 */
static const char *
imap_lex(const char *s, size_t len, struct imap_lexer *lx, char *out,
    size_t *outlen, struct imap_lit *lit)
{
	unsigned char	 c;
	const char	*err;
	size_t		 i, e, o = 0;
	bool		 start;

	memset(lit, 0, sizeof(*lit));
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		start = lx->prev == IMAP_LX_SEP || lx->prev == IMAP_LX_OPEN;
		if (c < 0x20 || c >= 0x7f)
			return IMAP_R_BADCHAR;
		if (lx->prev == IMAP_LX_STRING && c != ' ' && c != ')')
			return IMAP_R_SYNTAX;
		if (c == ' ') {
			if (start)
				return IMAP_R_BADSPACE;
			lx->prev = IMAP_LX_SEP;
		} else if (c == '(') {
			if (!start)
				return IMAP_R_SYNTAX;
			lx->depth++;
			lx->prev = IMAP_LX_OPEN;
		} else if (c == ')') {
			if (lx->prev == IMAP_LX_SEP)
				return IMAP_R_SYNTAX;
			if (lx->depth == 0)
				return IMAP_R_PAREN;
			lx->depth--;
			lx->prev = IMAP_LX_CLOSE;
		} else if (c == '"') {
			if (!start || (e = imap_lex_quoted(s, len, i)) == 0)
				return IMAP_R_BADQUOTE;
			memcpy(out + o, s + i, e - i + 1);
			o += e - i + 1;
			i = e;
			lx->prev = IMAP_LX_STRING;
			continue;
		} else if (c == '{' || (c == '~' && i + 1 < len &&
		    s[i + 1] == '{')) {
			if (!start || imap_lit_at_end(s, len, lit) != 1 ||
			    lit->start != i)
				return IMAP_R_BADLIT;
			*outlen = o + imap_lit_format(out + o, lit);
			lx->prev = IMAP_LX_STRING;
			return NULL;
		} else {
			/* The whole atom, up to the next special. */
			for (e = i; e < len && (unsigned char)s[e] > 0x20 &&
			    (unsigned char)s[e] < 0x7f &&
			    strchr("(){\"", s[e]) == NULL; e++)
				;
			if (lx->prev == IMAP_LX_CLOSE && c != ']')
				return IMAP_R_SYNTAX;
			if ((err = imap_lex_atom(s + i, e - i, lx)) != NULL)
				return err;
			memcpy(out + o, s + i, e - i);
			o += e - i;
			i = e - 1;
			lx->prev = IMAP_LX_ATOM;
			continue;
		}
		out[o++] = (char)c;
	}
	if (lx->prev == IMAP_LX_SEP)
		return IMAP_R_BADSPACE;		/* trailing or lone SP */
	if (lx->depth != 0)
		return IMAP_R_PAREN;		/* a list left open */
	*outlen = o;
	return NULL;
}

/*
 * SPEC section 3 (RFC 7888, RFC 3516): a literal type the backend did not
 * advertise would be read differently by it (Courier without LITERAL+
 * runs the "literal" bytes as commands).  Returns NULL or the refusal.
 */
static const char *
imap_lit_allowed(const struct imap *st, const struct imap_lit *lit)
{
	if (!lit->present)
		return NULL;
	if (lit->binary && !(st->bcapa & IMAP_BC_BINARY))
		return IMAP_R_LIT8;
	if (lit->nonsync && !(st->bcapa & IMAP_BC_LITPLUS) &&
	    !((st->bcapa & IMAP_BC_LITMINUS) &&
	    lit->size <= IMAP_LITERAL_MINUS_MAX))
		return IMAP_R_LITPLUS;
	return NULL;
}

/* RFC 9051 tag: ASTRING-CHAR (ATOM-CHAR or "]") except "+". */
static bool
imap_tag_char(unsigned char c)
{
	return (imap_atom_char(c) || c == ']') && c != '+';
}

/* Command names: letters, digits, "-" and "_" (X-commands). */
static bool
imap_verb_char(unsigned char c)
{
	return imap_verb_alpha(c) || (c >= '0' && c <= '9') || c == '-' ||
	    c == '_';
}

static bool
imap_verb_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/*
 * RFC 9051 command names are letters; only an x-command ("X" atom) may
 * hold more (digits, "-", "_" here).  A name like "N1" is no command a
 * strict parser knows where it ends.
 */
static bool
imap_verb_valid(const char *s, size_t len)
{
	size_t	 i;

	if (s[0] == 'X' || s[0] == 'x')
		return true;
	for (i = 0; i < len; i++)
		if (!imap_verb_alpha((unsigned char)s[i]))
			return false;
	return true;
}

/* Length of the word at s (up to SP or the end). */
static size_t
imap_word_len(const char *s, size_t len)
{
	const char	*sp = memchr(s, ' ', len);

	return sp != NULL ? (size_t)(sp - s) : len;
}

/* ------------------------------------------------------------------ */
/* The reply FIFO (filter.h): our slots are forwarded commands */

/*
 * A tagged completion was relayed: mark the oldest open command with that
 * tag (a server may finish commands out of order, RFC 9051 section 5.5).
 * Returns its id, or 0 when no command matches.
 */
static unsigned
imap_slot_complete(struct filter *f, const char *tag, size_t taglen)
{
	struct filter_slot	*s;
	unsigned		 i;

	for (i = 0; (s = filter_slot_at(f, i)) != NULL; i++) {
		if (s->kind == IMAP_SLOT_CMD && !s->done &&
		    s->taglen == taglen &&
		    memcmp(filter_slot_tag(f, s), tag, taglen) == 0) {
			s->done = true;
			/* SPEC 10: a tagged NO to LOGIN or AUTHENTICATE. */
			filter_auth_verdict(f, s,
			    ((struct imap *)f->proto)->bno);
			return s->id;
		}
	}
	return 0;
}

/* Can we write to the client without cutting into a backend response? */
static bool
imap_backend_idle(const struct imap *st)
{
	return st->greeted && st->bstate == IMAP_B_LINE && !st->bmid;
}

/*
 * Write our replies whose turn has come: completed commands leave the
 * FIFO, local replies at its head are written.  Only at a backend
 * response boundary.
 */
static void
imap_flush(struct filter *f, struct evbuffer *to_client)
{
	struct imap		*st = f->proto;
	struct filter_slot	*s;

	if (!imap_backend_idle(st))
		return;
	if (st->local_cont) {
		evbuffer_add(to_client, IMAP_L_CONT, strlen(IMAP_L_CONT));
		st->local_cont = false;
	}
	while ((s = filter_slot_head(f)) != NULL && !f->closing) {
		if (s->kind == IMAP_SLOT_CMD) {
			if (!s->done)
				break;
			filter_slot_pop(f);
		} else if (s->kind == FSLOT_LOCAL ||
		    s->kind == FSLOT_LOCAL_CLOSE)
			filter_flush(f, to_client);
		else
			break;		/* FSLOT_STARTTLS: imap_do_starttls */
	}
}

/* ------------------------------------------------------------------ */
/* Client side */

static enum filter_verdict
imap_client_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	struct imap	*st = f->proto;
	struct imap_io	 io = { in, to_backend, to_client };
	enum imap_step	 r = IMAP_STEP_HOLD;

	if (st->cstate != IMAP_C_CLOSED) {
		do {
			imap_flush(f, to_client);
			r = imap_client_step(f, &io);
		} while (r == IMAP_STEP_AGAIN);
	}
	if (r == IMAP_STEP_STARTTLS)
		return FILTER_STARTTLS;
	imap_flush(f, to_client);
	return f->closing ? FILTER_CLOSE : FILTER_CONTINUE;
}

static enum imap_step
imap_client_step(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;

	switch (st->cstate) {
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
	case IMAP_C_ID_WAIT:
		/* The backend decides how the next bytes are framed. */
		return IMAP_STEP_HOLD;
	case IMAP_C_CLOSED:
		return IMAP_STEP_CLOSE;
	}
	return IMAP_STEP_HOLD;
}

/*
 * Answer the current command ourselves, in its turn, and drop the rest
 * of it (the caller passes its literal to imap_segment_end()).  Every
 * refusal counts (SPEC section 3); over the budget nothing more is read.
 */
static enum imap_step
imap_refuse(struct filter *f, const char *tag, size_t taglen,
    const char *reply)
{
	struct imap	*st = f->proto;

	st->cmode = IMAP_CM_DISCARD;
	if (st->collect != NULL) {
		evbuffer_free(st->collect);
		st->collect = NULL;
	}
	if (filter_refuse(f, tag, taglen, reply)) {
		imap_enter(f, IMAP_C_CLOSED);
		return IMAP_STEP_CLOSE;
	}
	return IMAP_STEP_AGAIN;
}

/*
 * A line of the current command has been handled; lit is its ending.
 * Decide how the literal that follows (if any) is read.
 */
static enum imap_step
imap_segment_end(struct filter *f, struct imap_io *io,
    const struct imap_lit *lit)
{
	struct imap	*st = f->proto;

	if (st->cstate == IMAP_C_CLOSED)
		return IMAP_STEP_CLOSE;
	if (!lit->present)
		return imap_command_end(f, io);
	/* The client waits for a "+" it will never get, then drops it. */
	if (st->cmode == IMAP_CM_DISCARD && !lit->nonsync)
		return imap_command_end(f, io);
	if (st->cmode == IMAP_CM_COLLECT && lit->size >
	    st->bufsz - evbuffer_get_length(st->collect)) {
		if (imap_refuse(f, st->ctag, st->ctaglen, IMAP_R_BADID) ==
		    IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, lit);
	}
	if (lit->size > imap_literal_max(f))
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	if (filter_cleartext(f) && ++st->cnlit > IMAP_CLEAR_LITERALS_MAX)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "too many literals");
	if (st->cmode == IMAP_CM_FORWARD && !lit->nonsync) {
		st->clit_wait = lit->size;
		imap_enter(f, IMAP_C_LIT_WAIT);
		return IMAP_STEP_AGAIN;
	}
	/* Collected literals are ours to ask for; ID holds no secret. */
	if (st->cmode == IMAP_CM_COLLECT && !lit->nonsync)
		st->local_cont = true;
	st->clit_left = lit->size;
	imap_enter(f, IMAP_C_LITERAL);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_command_end(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;

	if (st->cmode == IMAP_CM_COLLECT)
		imap_id_finish(f, io);
	st->cmode = IMAP_CM_FORWARD;
	if (st->cstate == IMAP_C_CLOSED)
		return IMAP_STEP_CLOSE;
	/* Handlers may have entered a waiting state (AUTHENTICATE, IDLE). */
	if (st->cstate == IMAP_C_CONT)
		imap_enter(f, IMAP_C_COMMAND);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_client_command(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;
	size_t		 len;
	unsigned	 flags;

	/* Nothing is answered before the greeting, nor beyond the FIFO. */
	if (!st->greeted || filter_fifo_full(f))
		return IMAP_STEP_HOLD;
	switch (lineio_get(io->in, st->line_max, st->buf, st->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return IMAP_STEP_HOLD;
	case LINEIO_TOO_LONG:
		/*
		 * Drop the line as a refused command: its end is read with
		 * the tail kept, so a {n+} ending it is dropped too and its
		 * bytes never run as commands.
		 */
		st->cnlit = 0;
		if (imap_refuse(f, NULL, 0, IMAP_R_TOOLONG) ==
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
	if (i == 0 || i > FILTER_TAG_MAX || (i < len && s[i] != ' '))
		return 0;
	return i;
}

/*
 * Lex the first line of a command (st->buf) into c: "tag SP verb [SP
 * args]", split at single SP only (RFC 9051).  Returns NULL or the reply
 * refusing it; c->tag is set whenever the tag is valid.
 */
static const char *
imap_parse_line(struct imap *st, size_t len, unsigned flags,
    struct imap_cmd *c)
{
	const char	*s = st->buf;
	size_t		 i, v;

	memset(c, 0, sizeof(*c));
	if (len == 0)
		return IMAP_R_EMPTY;
	if ((c->taglen = imap_parse_tag(s, len)) == 0)
		return IMAP_R_BADTAG;
	c->tag = s;
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return IMAP_R_BADCHAR;
	v = c->taglen + 1;
	for (i = v; i < len && imap_verb_char((unsigned char)s[i]); i++)
		;
	if (i == v && i >= len)
		return IMAP_R_NOVERB;
	if (i < len && s[i] != ' ')
		return (unsigned char)s[i] < 0x20 ||
		    (unsigned char)s[i] >= 0x7f ? IMAP_R_BADCHAR :
		    IMAP_R_SYNTAX;
	if (i == v)
		return IMAP_R_BADSPACE;		/* "a  LOGIN" */
	if (i - v > IMAP_VERB_MAX || !imap_verb_valid(s + v, i - v))
		return IMAP_R_SYNTAX;
	for (c->verblen = 0; v < i; v++)
		c->verb[c->verblen++] = (char)((s[v] >= 'a' && s[v] <= 'z') ?
		    s[v] - 'a' + 'A' : s[v]);
	if (i == len)
		return NULL;
	c->args = st->out;
	/* list-mailbox patterns (RFC 9051 6.3.9, RFC 3501 LSUB, Gmail XLIST) */
	memset(&st->clex, 0, sizeof(st->clex));
	st->clex.prev = IMAP_LX_SEP;
	st->clex.listpat = filter_word_eq(c->verb, c->verblen, "LIST") ||
	    filter_word_eq(c->verb, c->verblen, "LSUB") ||
	    filter_word_eq(c->verb, c->verblen, "XLIST");
	return imap_lex(s + i + 1, len - i - 1, &st->clex, st->out,
	    &c->argslen, &c->lit);
}

static const struct imap_verb *
imap_verb_find(const struct imap_cmd *c)
{
	size_t	 i;

	for (i = 0; i < sizeof(imap_verbs) / sizeof(imap_verbs[0]); i++)
		if (filter_word_eq(c->verb, c->verblen, imap_verbs[i].verb))
			return &imap_verbs[i];
	return &imap_verb_other;
}

/*
 * The first line of a command, in st->buf: lexed, then checked in this
 * order: the literal type, our own verbs, credentials and the allow-list
 * before TLS, arguments.  The first rule that refuses answers.
 */
static enum imap_step
imap_command_line(struct filter *f, struct imap_io *io, size_t len,
    unsigned flags)
{
	struct imap		*st = f->proto;
	const struct imap_verb	*v;
	struct imap_cmd		 c;
	struct imap_lit		 raw;
	const char		*err;

	st->cnlit = 0;
	st->cmode = IMAP_CM_FORWARD;
	/* What a lenient reader takes for a literal: dropped if refused. */
	if (imap_lit_at_end(st->buf, len, &raw) == -1)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	err = imap_parse_line(st, len, flags, &c);
	memcpy(st->ctag, st->buf, c.taglen);
	st->ctaglen = c.taglen;
	if (err != NULL) {
		/* Untagged replies carry their "* ". */
		if (imap_refuse(f, err[0] == '*' ? NULL : c.tag,
		    err[0] == '*' ? 0 : c.taglen, err) == IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &raw);
	}
	v = imap_verb_find(&c);
	if ((err = imap_lit_allowed(st, &c.lit)) != NULL)
		;
	else if (v->flags & IMAP_V_INTERCEPT)
		return v->handler(f, io, &c) == IMAP_STEP_CLOSE ?
		    IMAP_STEP_CLOSE : imap_segment_end(f, io, &c.lit);
	else if ((v->flags & IMAP_V_CREDENTIALS) && filter_cleartext(f)) {
		/* SPEC 8.5: never forwarded, never logged, no "+" sent. */
		flog(f, warnx, "%s refused in cleartext", v->verb);
		filter_refusal_kind(f, FILTER_REF_CREDENTIALS);
		err = IMAP_R_CLEARAUTH;
	} else if (!(v->flags & IMAP_V_PRETLS) && filter_cleartext(f))
		err = IMAP_R_CLEARCMD;
	else if ((v->flags & IMAP_V_NOARGS) && c.args != NULL)
		err = IMAP_R_NOARGS;
	/* SPEC 10: never forwarded, and a literal of it never asked for. */
	else if ((v->flags & IMAP_V_CREDENTIALS) && filter_auth_blocked(f))
		err = IMAP_R_AUTHLIMIT;
	if (err != NULL) {
		if (imap_refuse(f, c.tag, c.taglen, err) == IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &c.lit);
	}
	if (v->handler(f, io, &c) == IMAP_STEP_CLOSE)
		return IMAP_STEP_CLOSE;
	return imap_segment_end(f, io, &c.lit);
}

/* The line after a literal: part of the same command. */
static enum imap_step
imap_client_cont(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit;
	size_t		 len;
	unsigned	 flags;

	if (st->cmode == IMAP_CM_DISCARD) {
		if (!imap_stream_line(io->in, NULL, &st->ctail))
			return IMAP_STEP_HOLD;
		if (imap_lit_at_end(st->ctail.b, st->ctail.n, &lit) == -1)
			return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
			    "literal too large");
		return imap_segment_end(f, io, &lit);
	}
	switch (lineio_get(io->in, st->line_max, st->buf, st->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return IMAP_STEP_HOLD;
	case LINEIO_TOO_LONG:
		/* The backend holds part of the command: no way to refuse. */
		if (st->cmode == IMAP_CM_FORWARD)
			return imap_close(f, io->to_client, IMAP_L_BYE_TOOLONG,
			    "line too long");
		/* ID: not sent yet; drop it, reading the line as above. */
		return imap_refuse(f, st->ctag, st->ctaglen, IMAP_R_BADID);
	case LINEIO_LINE:
		break;
	}
	return imap_cont_line(f, io, len, flags);
}

static enum imap_step
imap_cont_line(struct filter *f, struct imap_io *io, size_t len,
    unsigned flags)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit, raw;
	const char	*err;
	size_t		 outlen = 0;
	bool		 littype = false;

	if (imap_lit_at_end(st->buf, len, &raw) == -1)
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	/* After a literal; its lists stay open (st->clex.depth). */
	st->clex.prev = IMAP_LX_STRING;
	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		err = IMAP_R_BADCHAR;
	else if ((err = imap_lex(st->buf, len, &st->clex, st->out, &outlen,
	    &lit)) == NULL &&
	    (err = imap_lit_allowed(st, &lit)) != NULL)
		littype = true;
	/* The backend holds the first line: only closing is left. */
	if (err != NULL && st->cmode == IMAP_CM_FORWARD)
		return imap_close(f, io->to_client, littype ?
		    IMAP_L_BYE_LITERAL : IMAP_L_BYE_SYNTAX,
		    "invalid command continuation");
	if (err == NULL && st->cmode == IMAP_CM_COLLECT &&
	    outlen + 2 > st->bufsz - evbuffer_get_length(st->collect))
		err = IMAP_R_BADID;
	if (err != NULL) {
		if (imap_refuse(f, st->ctag, st->ctaglen, IMAP_R_BADID) ==
		    IMAP_STEP_CLOSE)
			return IMAP_STEP_CLOSE;
		return imap_segment_end(f, io, &raw);
	}
	/* Literal size is checked before any byte of this line leaves. */
	if (st->cmode == IMAP_CM_FORWARD && lit.present &&
	    lit.size > imap_literal_max(f))
		return imap_close(f, io->to_client, IMAP_L_BYE_TOOBIG,
		    "literal too large");
	filter_send_command(st->cmode == IMAP_CM_COLLECT ? st->collect :
	    io->to_backend, NULL, 0, st->out, outlen, NULL, 0);
	return imap_segment_end(f, io, &lit);
}

/* Literal bytes: counted, streamed, never looked at. */
static enum imap_step
imap_client_literal(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;
	size_t		 n = evbuffer_get_length(io->in);

	if (st->clit_left > 0) {
		if (n == 0)
			return IMAP_STEP_HOLD;
		if (n > st->clit_left)
			n = (size_t)st->clit_left;
		if (st->cmode == IMAP_CM_FORWARD)
			evbuffer_remove_buffer(io->in, io->to_backend, n);
		else if (st->cmode == IMAP_CM_COLLECT)
			evbuffer_remove_buffer(io->in, st->collect, n);
		else
			evbuffer_drain(io->in, n);
		st->clit_left -= n;
		if (st->clit_left > 0)
			return IMAP_STEP_HOLD;
	}
	imap_enter(f, IMAP_C_CONT);
	return IMAP_STEP_AGAIN;
}

/*
 * A SASL response (RFC 9051 section 6.2.2) through the core's relay:
 * base64, "=" or "*", canonical, never logged.  A line it refuses cancels
 * the exchange with "*", so the backend ends it with its own tagged reply
 * and the client is never left waiting.
 */
static enum imap_step
imap_client_sasl(struct filter *f, struct imap_io *io)
{
	switch (filter_sasl_line(f, io->in, io->to_backend)) {
	case FILTER_SASL_MORE:
		return IMAP_STEP_HOLD;
	case FILTER_SASL_BAD:
		filter_send_command(io->to_backend, NULL, 0, "*", 1, NULL, 0);
		break;
	case FILTER_SASL_SENT:
	case FILTER_SASL_CANCEL:
		break;
	}
	imap_enter(f, IMAP_C_AUTH_WAIT);
	return IMAP_STEP_AGAIN;
}

/*
 * While idling only DONE may come (RFC 2177).  Anything else ends the
 * IDLE on the backend with a DONE of ours and is answered here; it is
 * never forwarded.
 */
static enum imap_step
imap_client_idle(struct filter *f, struct imap_io *io)
{
	struct imap		*st = f->proto;
	size_t			 len;
	unsigned		 flags;
	enum lineio_result	 r;

	r = lineio_get(io->in, st->line_max, st->buf, st->bufsz, &len,
	    &flags);
	if (r == LINEIO_MORE)
		return IMAP_STEP_HOLD;
	filter_send_command(io->to_backend, NULL, 0, "DONE", 4, NULL, 0);
	if (r == LINEIO_LINE && !(flags & (LINEIO_BARE_LF | LINEIO_HAS_CR |
	    LINEIO_HAS_NUL)) && filter_word_eq(st->buf, len, "DONE")) {
		imap_enter(f, IMAP_C_COMMAND);
		return IMAP_STEP_AGAIN;
	}
	if (r == LINEIO_TOO_LONG) {
		st->cnext = IMAP_C_COMMAND;
		imap_enter(f, IMAP_C_SKIP);
	} else
		imap_enter(f, IMAP_C_COMMAND);
	/* DONE itself must pass even with a full FIFO: then no reply. */
	if (filter_fifo_full(f))
		return IMAP_STEP_AGAIN;
	return imap_refuse(f, NULL, 0, IMAP_R_NODONE);
}

static enum imap_step
imap_client_skip(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;

	if (!lineio_skip(io->in))
		return IMAP_STEP_HOLD;
	imap_enter(f, st->cnext);
	return IMAP_STEP_AGAIN;
}

/*
 * The STARTTLS switch (SPEC 8.1, 8.2, STYLE section 5), decided by the
 * core once the STARTTLS slot is at the head of the FIFO, i.e. every
 * earlier command has its reply relayed, and only at a backend response
 * boundary, so nothing the backend says for the cleartext phase follows
 * the go-ahead.  Bytes behind the STARTTLS line then were sent before
 * the client could know TLS would start (CVE-2011-0411 class): the core
 * closes instead.
 */
static enum imap_step
imap_do_starttls(struct filter *f, struct imap_io *io)
{
	struct imap	*st = f->proto;

	if (!imap_backend_idle(st))
		return IMAP_STEP_HOLD;
	switch (filter_starttls(f, io->in, io->to_client, st->go_ahead)) {
	case FILTER_STARTTLS:
		return IMAP_STEP_STARTTLS;
	case FILTER_CLOSE:
		imap_enter(f, IMAP_C_CLOSED);
		return IMAP_STEP_CLOSE;
	case FILTER_CONTINUE:
	case FILTER_BACKEND_STARTTLS:	/* never from filter_starttls() */
		break;
	}
	return IMAP_STEP_HOLD;
}

/* ------------------------------------------------------------------ */
/* Command handlers: IMAP_STEP_AGAIN, or IMAP_STEP_CLOSE */

/* Forward the first line as lexed; its literal follows the rules. */
static enum imap_step
imap_cmd_forward(struct filter *f, struct imap_io *io,
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
		return imap_refuse(f, c->tag, c->taglen, IMAP_R_TOOBIG);
	}
	imap_forward_wait(f, io, c, IMAP_C_COMMAND);
	return IMAP_STEP_AGAIN;
}

/*
 * Forward the canonical line, give it a slot, and remember that slot for
 * the states that wait on it.  A waiting state is entered here only for
 * commands without a literal (the literal wait is imap_segment_end's).
 */
static void
imap_forward_wait(struct filter *f, struct imap_io *io,
    const struct imap_cmd *c, enum imap_cstate wait)
{
	struct imap	*st = f->proto;

	struct filter_slot	*sl;

	sl = filter_slot_push(f, IMAP_SLOT_CMD, NULL, c->tag, c->taglen);
	st->cwait_id = sl->id;
	/* SPEC 10: the tagged reply to these is a login's verdict. */
	sl->credential = filter_word_eq(c->verb, c->verblen, "LOGIN") ||
	    filter_word_eq(c->verb, c->verblen, "AUTHENTICATE");
	filter_send_command(io->to_backend, c->tag, c->taglen, c->verb,
	    c->verblen, c->args, c->argslen);
	if (wait != IMAP_C_COMMAND)
		imap_enter(f, wait);
}

static enum imap_step
imap_cmd_starttls(struct filter *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	struct imap	*st = f->proto;
	const char	*err = NULL;

	(void)io;
	if (!filter_cleartext(f))
		err = IMAP_R_TLSUP;
	else if (!f->starttls_svc)
		err = IMAP_R_NOTLS;
	else if (c->args != NULL)
		err = IMAP_R_NOARGS;
	if (err != NULL)
		return imap_refuse(f, c->tag, c->taglen, err);
	/* The go-ahead carries the tag: filter_starttls writes it whole. */
	snprintf(st->go_ahead, sizeof(st->go_ahead), "%.*s %s",
	    (int)c->taglen, c->tag, IMAP_R_TLSGO);
	filter_slot_push(f, FSLOT_STARTTLS, NULL, c->tag, c->taglen);
	imap_enter(f, IMAP_C_STARTTLS);
	return IMAP_STEP_AGAIN;
}

/*
 * Inside TLS: forwarded (with a SASL-IR initial response if any), and
 * client input is held until the backend's "+" (then one SASL line) or
 * its tagged completion, so the response lines are framed exactly where
 * the backend frames them.
 */
static enum imap_step
imap_cmd_authenticate(struct filter *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	if (c->lit.present)
		return imap_refuse(f, c->tag, c->taglen, IMAP_R_AUTHLIT);
	imap_forward_wait(f, io, c, IMAP_C_AUTH_WAIT);
	return IMAP_STEP_AGAIN;
}

static enum imap_step
imap_cmd_idle(struct filter *f, struct imap_io *io, const struct imap_cmd *c)
{
	imap_forward_wait(f, io, c, IMAP_C_IDLE_WAIT);
	return IMAP_STEP_AGAIN;
}

/* Refused on every service (see the header); counts like any refusal. */
static enum imap_step
imap_cmd_compress(struct filter *f, struct imap_io *io,
    const struct imap_cmd *c)
{
	(void)io;
	return imap_refuse(f, c->tag, c->taglen, IMAP_R_COMPRESS);
}

/* ID: gathered whole (bounded by the line limit), rewritten at its end. */
static enum imap_step
imap_cmd_id(struct filter *f, struct imap_io *io, const struct imap_cmd *c)
{
	struct imap	*st = f->proto;

	(void)io;
	if (c->args == NULL || (st->collect = evbuffer_new()) == NULL)
		return imap_refuse(f, c->tag, c->taglen, IMAP_R_BADID);
	st->cmode = IMAP_CM_COLLECT;
	filter_send_command(st->collect, NULL, 0, c->args, c->argslen, NULL,
	    0);
	return IMAP_STEP_AGAIN;
}

/* ------------------------------------------------------------------ */
/* ID (RFC 2971): strip what only a proxy may say, re-serialise the rest */

static void
imap_id_finish(struct filter *f, struct imap_io *io)
{
	struct imap		*st = f->proto;
	struct imap_idsend	*w;
	struct evbuffer		*out;
	size_t			 len = evbuffer_get_length(st->collect), pre;
	unsigned		 i;

	/* Bounded by bufsz at every append (imap_cont_line, segment_end). */
	evbuffer_remove(st->collect, st->buf, len);
	evbuffer_free(st->collect);
	st->collect = NULL;
	out = evbuffer_new();
	if ((w = calloc(1, sizeof(*w))) != NULL)
		w->rest = evbuffer_new();
	if (out == NULL || w == NULL || w->rest == NULL ||
	    imap_id_rewrite(f, st->buf, len, out, w) == -1) {
		(void)imap_refuse(f, st->ctag, st->ctaglen, IMAP_R_BADID);
		if (w != NULL && w->rest != NULL)
			evbuffer_free(w->rest);
		free(w);
		if (out != NULL)
			evbuffer_free(out);
		return;
	}
	st->cwait_id = filter_slot_push(f, IMAP_SLOT_CMD, NULL, st->ctag,
	    st->ctaglen)->id;
	filter_send_command(w->rest, st->ctag, st->ctaglen, "ID", 2,
	    (const char *)evbuffer_pullup(out, -1), evbuffer_get_length(out));
	evbuffer_free(out);
	/* The cuts were counted in the arguments: "tag ID " comes first. */
	pre = st->ctaglen + 4;
	for (i = 0; i < w->ncut; i++)
		w->cut[i] += pre;
	st->idsend = w;
	imap_id_send(f, io->to_backend);
}

/*
 * Send the next piece of the ID: up to the next synchronizing literal's
 * "{n}" CRLF, then wait for the backend's "+" (IMAP_C_ID_WAIT,
 * imap_msg_end); or all that is left, which ends the command.
 */
static void
imap_id_send(struct filter *f, struct evbuffer *to_backend)
{
	struct imap		*st = f->proto;
	struct imap_idsend	*w = st->idsend;
	size_t			 n;

	w->go = false;
	if (w->next < w->ncut) {
		n = w->cut[w->next++] - w->sent;
		evbuffer_remove_buffer(w->rest, to_backend, n);
		w->sent += n;
		imap_enter(f, IMAP_C_ID_WAIT);
		return;
	}
	evbuffer_add_buffer(to_backend, w->rest);
	imap_id_drop(st);
	if (st->cstate == IMAP_C_ID_WAIT)
		imap_enter(f, IMAP_C_COMMAND);
}

/* Forget an ID being sent (its rest is never sent). */
static void
imap_id_drop(struct imap *st)
{
	if (st->idsend == NULL)
		return;
	evbuffer_free(st->idsend->rest);
	free(st->idsend);
	st->idsend = NULL;
}

/*
 * Parse "NIL" / "(" *(string SP nstring) ")" CRLF from the gathered
 * canonical lines s and write the list back (without CRLF), pair by pair
 * through imap_id_pair(); w records where synchronizing literals cut it.
 */
static int
imap_id_rewrite(struct filter *f, char *s, size_t len, struct evbuffer *out,
    struct imap_idsend *w)
{
	char	*k, *v;
	size_t	 pos = 0, kl, vl;
	int	 kept = 0, r;

	if (len == 5 && strncasecmp(s, "NIL\r\n", 5) == 0)
		return evbuffer_add(out, "NIL", 3);
	if (len < 4 || s[pos++] != '(')
		return -1;
	while (s[pos] != ')') {
		if (imap_id_string(s, len, &pos, &k, &kl) != 1 ||
		    pos >= len || s[pos++] != ' ' ||
		    (r = imap_id_string(s, len, &pos, &v, &vl)) == -1 ||
		    pos >= len)
			return -1;
		if ((r = imap_id_pair(f, out, w, kept, k, kl,
		    r == 0 ? NULL : v, vl)) == -1)
			return -1;
		kept += r;
		if (s[pos] == ' ' && pos + 1 < len && s[pos + 1] != ')')
			pos++;
		else if (s[pos] != ')')
			return -1;
	}
	if (len - pos != 3 || memcmp(s + pos, ")\r\n", 3) != 0)
		return -1;
	return evbuffer_add(out, kept ? ")" : "NIL", kept ? 1 : 3);
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

/*
 * One key and value (v NULL: NIL), written after "(" or " ".  Returns 1
 * when written, 0 when removed, -1 when the command is invalid.
 */
static int
imap_id_pair(struct filter *f, struct evbuffer *out, struct imap_idsend *w,
    int kept, const char *k, size_t kl, const char *v, size_t vl)
{
	struct imap	*st = f->proto;
	char		 kesc[LOG_ESCAPE_SIZE(FILTER_TAG_MAX)];
	unsigned	 nsync;

	/* No nstring may carry NUL, not even a literal (RFC 9051 CHAR8). */
	if (memchr(k, '\0', kl) != NULL ||
	    (v != NULL && memchr(v, '\0', vl) != NULL))
		return -1;
	log_escape(kesc, sizeof(kesc), k, kl, FILTER_TAG_MAX);
	/*
	 * SPEC section 3: every "x-" key is the proxy's to set; a backend
	 * may trust x-originating-ip, x-client-transport, x-multiplex...
	 */
	if (kl >= 2 && strncasecmp(k, "x-", 2) == 0) {
		flog(f, info, "ID parameter \"%s\" removed", kesc);
		return 0;
	}
	nsync = imap_id_sync(st, k, kl) + (v != NULL && imap_id_sync(st, v,
	    vl));
	if (w->ncut + nsync > IMAP_ID_SYNC_MAX) {
		flog(f, info, "ID parameter \"%s\" dropped: more than %d "
		    "literals", kesc, IMAP_ID_SYNC_MAX);
		return 0;
	}
	evbuffer_add(out, kept ? " " : "(", 1);
	imap_id_value(st, out, w, k, kl);
	evbuffer_add(out, " ", 1);
	if (v == NULL)
		evbuffer_add(out, "NIL", 3);
	else
		imap_id_value(st, out, w, v, vl);
	return 1;
}

/* Whether s must leave as a literal (RFC 9051 QUOTED-CHAR: no CR, LF). */
static bool
imap_id_literal(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80 || s[i] == '\r' ||
		    s[i] == '\n')
			return true;
	return false;
}

/* Whether s needs a synchronizing literal: no {n+} for its size. */
static bool
imap_id_sync(const struct imap *st, const char *s, size_t len)
{
	struct imap_lit	 lit;

	if (!imap_id_literal(s, len))
		return false;
	memset(&lit, 0, sizeof(lit));
	lit.present = lit.nonsync = true;
	lit.size = len;
	return imap_lit_allowed(st, &lit) != NULL;
}

/*
 * Write s as a quoted string, or, when a quoted string cannot carry it
 * (CR, LF, 8-bit), as a literal: {n+} if the backend takes one for its
 * size (RFC 7888), else {n}, whose end w records as a cut.
 */
static void
imap_id_value(const struct imap *st, struct evbuffer *out,
    struct imap_idsend *w, const char *s, size_t len)
{
	struct imap_lit	 lit;
	char		 m[32];
	size_t		 i;

	if (!imap_id_literal(s, len)) {
		evbuffer_add(out, "\"", 1);
		for (i = 0; i < len; i++) {
			if (s[i] == '"' || s[i] == '\\')
				evbuffer_add(out, "\\", 1);
			evbuffer_add(out, s + i, 1);
		}
		evbuffer_add(out, "\"", 1);
		return;
	}
	memset(&lit, 0, sizeof(lit));
	lit.present = true;
	lit.nonsync = !imap_id_sync(st, s, len);
	lit.size = len;
	evbuffer_add(out, m, imap_lit_format(m, &lit));
	evbuffer_add(out, "\r\n", 2);
	if (!lit.nonsync)
		w->cut[w->ncut++] = evbuffer_get_length(out);
	evbuffer_add(out, s, len);
}

/* ------------------------------------------------------------------ */
/* Backend side */

static enum filter_verdict
imap_backend_input(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct imap	*st = f->proto;
	int		 r = 0;

	/*
	 * Our replies go out at every response boundary, not only when the
	 * read is used up: a local reply queued between two commands must
	 * leave before the second one's completion when both completions
	 * arrive in one read (imap_flush() writes only at a boundary).  The
	 * next piece of an ID leaves as soon as its "+" is taken, before any
	 * later response is read.
	 */
	while (!f->closing && !filter_backend_paused(f) &&
	    (r = imap_backend_step(f, in, to_client, to_backend)) == 1) {
		if (st->idsend != NULL && st->idsend->go)
			imap_id_send(f, to_backend);
		imap_flush(f, to_client);
	}
	if (r == -1 || f->closing)
		return FILTER_CLOSE;
	imap_flush(f, to_client);
	return f->closing ? FILTER_CLOSE : FILTER_CONTINUE;
}

/* imap_close() for the backend reader's convention. */
static int
imap_bclose(struct filter *f, struct evbuffer *to_client, const char *bye,
    const char *reason)
{
	imap_close(f, to_client, bye, reason);
	return -1;
}

/* 1: progress, 0: need more input, -1: closed. */
static int
imap_backend_step(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct imap	*st = f->proto;
	size_t		 n;

	switch (st->bstate) {
	case IMAP_B_LITERAL:
		if ((n = evbuffer_get_length(in)) == 0 && st->blit_left > 0)
			return 0;
		if (n > st->blit_left)
			n = (size_t)st->blit_left;
		evbuffer_remove_buffer(in, to_client, n);
		if ((st->blit_left -= n) == 0)
			st->bstate = IMAP_B_LINE;
		return 1;
	case IMAP_B_LONG:
		return imap_backend_long(f, in, to_client);
	case IMAP_B_LINE:
		return imap_backend_line(f, in, to_client, to_backend);
	}
	return 0;
}

static int
imap_backend_line(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit;
	size_t		 len;
	unsigned	 flags;
	const char	*eol;

	switch (lineio_get(in, st->line_max, st->buf, st->bufsz, &len,
	    &flags)) {
	case LINEIO_MORE:
		return 0;
	case LINEIO_TOO_LONG:
		if (filter_backend_dialogue(f))
			return imap_prelude_fail(f, "response too long");
		return imap_backend_long(f, in, to_client);
	case LINEIO_LINE:
		break;
	}
	if (filter_backend_dialogue(f))
		return imap_prelude_line(f, st->buf, len, flags, to_backend);
	/* Relayed byte-exact: the line's own ending goes back on. */
	eol = (flags & LINEIO_BARE_LF) ? "\n" : "\r\n";
	if (!st->bmid)
		return imap_backend_start(f, st->buf, len, eol, to_client);
	evbuffer_add(to_client, st->buf, len);
	evbuffer_add(to_client, eol, strlen(eol));
	if (imap_lit_at_end(st->buf, len, &lit) == -1)
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
imap_backend_long(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit;
	size_t		 b, e;
	bool		 ours;

	if (st->bstate == IMAP_B_LINE) {
		evbuffer_copyout(in, st->buf, st->line_max);
		if (!st->bmid && (!st->greeted ||
		    imap_capa_locate(st->buf, st->line_max, &b, &e)))
			return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
			    "backend response too long");
		if (!st->bmid)
			st->bmsg = imap_msg_classify(st, st->buf,
			    st->line_max);
		st->btail.n = 0;
		st->bstate = IMAP_B_LONG;
	}
	ours = imap_id_cont(st);
	if (!imap_stream_line(in, ours ? NULL : to_client, &st->btail))
		return 0;
	st->bstate = IMAP_B_LINE;
	if (imap_lit_at_end(st->btail.b, st->btail.n, &lit) == -1 ||
	    (ours && lit.present))
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid literal from backend");
	return imap_backend_lineend(f, &lit);
}

/* The first line of a response. */
static int
imap_backend_start(struct filter *f, const char *s, size_t len,
    const char *eol, struct evbuffer *to_client)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit;
	size_t		 b, e;

	if (!st->greeted)
		return imap_greeting(f, s, len, eol, to_client);
	if (imap_lit_at_end(s, len, &lit) == -1)
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid literal from backend");
	st->bmsg = imap_msg_classify(st, s, len);
	/* The "+" for our own ID literal: the client never asked for it. */
	if (imap_id_cont(st)) {
		if (lit.present)
			return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
			    "invalid literal from backend");
		return imap_backend_lineend(f, &lit);
	}
	/*
	 * A capability list is atoms on one line; one that ends in a literal,
	 * or rides on a continuation, could not be rewritten, so it is not
	 * passed on at all (found by fuzzing).
	 */
	if ((lit.present && imap_capa_locate(s, len, &b, &e)) ||
	    (st->bmsg == IMAP_MSG_CONT && len >= 13 &&
	    strncasecmp(s + 1, " [CAPABILITY", 12) == 0))
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "capability list we cannot rewrite");
	/* Continuations carry SASL challenges: never rewritten. */
	if (lit.present || st->bmsg == IMAP_MSG_CONT) {
		evbuffer_add(to_client, s, len);
		evbuffer_add(to_client, eol, strlen(eol));
	} else
		imap_relay_line(f, s, len, eol, to_client);
	return imap_backend_lineend(f, &lit);
}

/* A backend line is over: a literal follows, or the response ends. */
static int
imap_backend_lineend(struct filter *f, const struct imap_lit *lit)
{
	struct imap	*st = f->proto;

	if (lit->present) {
		st->bmid = true;
		st->blit_left = lit->size;
		st->bstate = IMAP_B_LITERAL;
		return 1;
	}
	st->bmid = false;
	imap_msg_end(f);
	return 1;
}

/*
 * The greeting (RFC 9051 section 7.1): OK, PREAUTH or BYE.  PREAUTH in
 * cleartext would skip authentication before TLS (SPEC section 3, the
 * RFC 2595 section 3.1 hazard): refused.  Anything else is not IMAP.
 */
static int
imap_greeting(struct filter *f, const char *s, size_t len, const char *eol,
    struct evbuffer *to_client)
{
	struct imap	*st = f->proto;
	struct imap_lit	 lit;
	size_t		 w;

	w = len > 2 ? imap_word_len(s + 2, len - 2) : 0;
	if (len < 2 || memcmp(s, "* ", 2) != 0 ||
	    imap_lit_at_end(s, len, &lit) != 0 ||
	    !imap_status_word(s + 2, w, true) ||
	    filter_word_eq(s + 2, w, "NO") || filter_word_eq(s + 2, w, "BAD")) {
		flog(f, warnx, "invalid greeting from backend");
		return imap_bclose(f, to_client, IMAP_L_BYE_BACKEND,
		    "invalid backend greeting");
	}
	if (filter_word_eq(s + 2, w, "PREAUTH") && filter_cleartext(f)) {
		flog(f, warnx, "backend greeting PREAUTH in cleartext, "
		    "closing");
		return imap_bclose(f, to_client, IMAP_L_BYE_PREAUTH,
		    "backend PREAUTH in cleartext");
	}
	st->greeted = true;
	imap_relay_line(f, s, len, eol, to_client);
	/*
	 * A fresh backend inside TLS (SPEC 9) must greet like the first one
	 * did: PREAUTH would skip the login the client is about to give,
	 * and BYE is a refusal.
	 */
	filter_backend_ready(f, filter_word_eq(s + 2, w, "OK"),
	    "backend greeting is not OK");
	return 1;
}

/* ------------------------------------------------------------------ */
/* backend_tls = starttls: our dialogue before the handshake (SPEC 12) */

static int
imap_prelude_fail(struct filter *f, const char *why)
{
	filter_backend_ready(f, false, why);
	return -1;
}

/* STARTTLS among the capabilities of a line, if it carries a list. */
static void
imap_prelude_capa(struct filter *f, const char *s, size_t len)
{
	struct imap	*st = f->proto;
	const char	*tok;
	size_t		 b, e, tl;

	if (!imap_capa_locate(s, len, &b, &e))
		return;
	while (filter_capa_next(s, e, &b, &tok, &tl))
		if (filter_word_eq(tok, tl, "STARTTLS"))
			st->bstarttls = true;
}

/*
 * One line of the server's in the cleartext dialogue: 1 when read, -1
 * when the backend is not usable (the core gives the client the
 * temporary failure, or the session tries the next backend).  Nothing of
 * it is relayed; a line that does not fit the dialogue exactly fails it.
 */
static int
imap_prelude_line(struct filter *f, const char *s, size_t len,
    unsigned flags, struct evbuffer *to_backend)
{
	struct imap		*st = f->proto;
	struct filter_slot	*head = filter_slot_head(f);
	struct imap_lit		 lit;
	char			 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	const char		*tag;
	size_t			 t, w;
	bool			 capa;

	if (flags & (LINEIO_BARE_LF | LINEIO_HAS_CR | LINEIO_HAS_NUL))
		return imap_prelude_fail(f, "malformed response");
	if (imap_lit_at_end(s, len, &lit) != 0 || (len > 0 && s[0] == '+'))
		return imap_prelude_fail(f, "unexpected response");
	t = imap_word_len(s, len);
	w = t + 1 < len ? imap_word_len(s + t + 1, len - t - 1) : 0;
	if (!st->greeted) {
		if (t != 1 || s[0] != '*' || !filter_word_eq(s + 2, w, "OK")) {
			/* The server's words: escaped, like all peer text. */
			flog(f, info, "backend greeting: %s", log_escape(esc,
			    sizeof(esc), s, t + 1 + w < len ? t + 1 + w : len,
			    LOG_CLIENT_TEXT_MAX));
			return imap_prelude_fail(f, t == 1 && s[0] == '*' &&
			    filter_word_eq(s + 2, w, "PREAUTH") ?
			    "backend greeting is PREAUTH" : t == 1 &&
			    s[0] == '*' && filter_word_eq(s + 2, w, "BYE") ?
			    "backend greeting is BYE" :
			    "backend greeting is not OK");
		}
		/* Its capabilities, sent in cleartext, are not looked at. */
		st->greeted = true;
		st->bstarttls = false;
		st->own_lines = 0;
		filter_own_command(f, to_backend, IMAP_SLOT_OWN,
		    IMAP_OWN_CAPA_TAG, "CAPABILITY");
		return 1;
	}
	if (head == NULL || head->kind != IMAP_SLOT_OWN)
		return imap_prelude_fail(f, "unsolicited response");
	if (t == 1 && s[0] == '*') {
		if (filter_word_eq(s + 2, w, "CAPABILITY") ||
		    filter_word_eq(s + 2, w, "OK") ||
		    filter_word_eq(s + 2, w, "NO") ||
		    filter_word_eq(s + 2, w, "BAD")) {
			if (++st->own_lines > IMAP_OWN_LINES_MAX)
				return imap_prelude_fail(f,
				    "too many untagged responses");
			imap_prelude_capa(f, s, len);
			return 1;
		}
		return imap_prelude_fail(f, filter_word_eq(s + 2, w, "BYE") ?
		    "server sent BYE" : "unexpected response");
	}
	tag = filter_slot_tag(f, head);
	if (t != head->taglen || memcmp(s, tag, t) != 0 ||
	    !imap_status_word(s + t + 1, w, false))
		return imap_prelude_fail(f, "unexpected response");
	/* Which command this completes, while its slot (and tag) is ours. */
	capa = t == sizeof(IMAP_OWN_CAPA_TAG) - 1 &&
	    memcmp(tag, IMAP_OWN_CAPA_TAG, t) == 0;
	filter_slot_pop(f);
	st->own_lines = 0;
	if (capa) {
		if (!filter_word_eq(s + t + 1, w, "OK"))
			return imap_prelude_fail(f,
			    "server refused CAPABILITY");
		imap_prelude_capa(f, s, len);
		if (!st->bstarttls)
			return imap_prelude_fail(f,
			    "server does not offer STARTTLS");
		filter_own_command(f, to_backend, IMAP_SLOT_OWN,
		    IMAP_OWN_TLS_TAG, "STARTTLS");
		return 1;
	}
	if (!filter_word_eq(s + t + 1, w, "OK"))
		return imap_prelude_fail(f, "server refused STARTTLS");
	/* RFC 9051 6.2.1: the tagged OK is the server's last cleartext. */
	filter_backend_go_ahead(f);
	return 1;
}

/*
 * The backend leg is TLS and verified: the client's greeting is ours,
 * and literal types wait for a capability list read inside TLS (the
 * client's own CAPABILITY, RFC 9051 6.2.1: a client forgets what it was
 * told before STARTTLS, and so do we).
 */
static void
imap_backend_tls_ready(struct filter *f, struct evbuffer *to_client,
    struct evbuffer *to_backend)
{
	struct imap	*st = f->proto;

	(void)to_backend;
	st->bcapa = 0;
	evbuffer_add_printf(to_client, "* OK %s ready\r\n", f->hostname);
	filter_backend_ready(f, true, NULL);
}

/* What kind of response starts with this line; keeps a tagged one's tag. */
static enum imap_msg
imap_msg_classify(struct imap *st, const char *s, size_t len)
{
	size_t	 t, w;

	/* A tag never starts with "+" (RFC 9051 tag grammar). */
	if (len > 0 && s[0] == '+')
		return IMAP_MSG_CONT;
	t = imap_word_len(s, len);
	if (t == len || t > FILTER_TAG_MAX || (t == 1 && s[0] == '*'))
		return IMAP_MSG_OTHER;
	w = imap_word_len(s + t + 1, len - t - 1);
	if (!imap_status_word(s + t + 1, w, false))
		return IMAP_MSG_OTHER;
	memcpy(st->btag, s, t);
	st->btaglen = t;
	st->bno = filter_word_eq(s + t + 1, w, "NO");
	return IMAP_MSG_TAGGED;
}

/* Is the response being read the "+" for a literal of our ID? */
static bool
imap_id_cont(const struct imap *st)
{
	return st->cstate == IMAP_C_ID_WAIT && !st->bmid &&
	    st->bmsg == IMAP_MSG_CONT;
}

/*
 * A whole response has been relayed; it may release client input that
 * waited on it.
 */
static void
imap_msg_end(struct filter *f)
{
	struct imap	*st = f->proto;
	unsigned	 id;

	if (st->bmsg == IMAP_MSG_CONT) {
		if (st->cstate == IMAP_C_ID_WAIT)
			st->idsend->go = true;	/* imap_backend_input */
		else if (st->cstate == IMAP_C_LIT_WAIT) {
			st->clit_left = st->clit_wait;
			imap_enter(f, IMAP_C_LITERAL);
		} else if (st->cstate == IMAP_C_AUTH_WAIT)
			imap_enter(f, IMAP_C_SASL);
		else if (st->cstate == IMAP_C_IDLE_WAIT)
			imap_enter(f, IMAP_C_IDLE);
		return;
	}
	if (st->bmsg != IMAP_MSG_TAGGED ||
	    (id = imap_slot_complete(f, st->btag, st->btaglen)) == 0 ||
	    id != st->cwait_id)
		return;
	if (st->cstate == IMAP_C_SASL && f->sasl_skip) {
		/* The rest of an over-long response is not a command. */
		f->sasl_skip = false;
		st->cnext = IMAP_C_COMMAND;
		imap_enter(f, IMAP_C_SKIP);
		return;
	}
	switch (st->cstate) {
	case IMAP_C_ID_WAIT:
		/*
		 * Refused instead of "+": what is left of the ID would now be
		 * read as commands, so it is never sent.
		 */
		flog(f, info, "backend answered ID before its literal, "
		    "rest of the command dropped");
		imap_id_drop(st);
		__attribute__((fallthrough));
	case IMAP_C_SASL:
	case IMAP_C_LIT_WAIT:	/* refused: the client drops the literal */
	case IMAP_C_AUTH_WAIT:
	case IMAP_C_IDLE_WAIT:
	case IMAP_C_IDLE:	/* the server ended IDLE itself */
		st->cmode = IMAP_CM_FORWARD;
		imap_enter(f, IMAP_C_COMMAND);
		break;
	default:
		break;
	}
}

static void
imap_relay_line(struct filter *f, const char *s, size_t len, const char *eol,
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
	if (filter_word_eq(s, len, "OK") || filter_word_eq(s, len, "NO") ||
	    filter_word_eq(s, len, "BAD"))
		return true;
	return untagged && (filter_word_eq(s, len, "PREAUTH") ||
	    filter_word_eq(s, len, "BYE"));
}

/* The next word at *pos: after a run of SP, or of SP and HTAB. */
static bool
imap_word_next(const char *s, size_t len, bool lenient, size_t *pos,
    const char **w, size_t *wl)
{
	size_t	 i = *pos;

	if (lenient)
		return filter_capa_next(s, len, pos, w, wl);
	while (i < len && s[i] == ' ')
		i++;
	if (i >= len)
		return false;
	*w = s + i;
	*wl = imap_word_len(s + i, len - i);
	*pos = i + *wl;
	return true;
}

/*
 * Where a capability list starts when words are split one way: after
 * "* CAPABILITY" (*code false) or after "[CAPABILITY" at the start of a
 * status response's text (*code true).
 */
static bool
imap_capa_start(const char *s, size_t len, bool lenient, size_t *beg,
    bool *code)
{
	const char	*t, *w, *c;
	size_t		 tl, wl, cl, pos = 0;
	bool		 untagged;

	if (!imap_word_next(s, len, lenient, &pos, &t, &tl) ||
	    !imap_word_next(s, len, lenient, &pos, &w, &wl))
		return false;
	untagged = tl == 1 && t[0] == '*';
	if (untagged && filter_word_eq(w, wl, "CAPABILITY")) {
		*beg = pos;
		*code = false;
		return true;
	}
	if (!imap_status_word(w, wl, untagged) ||
	    !imap_word_next(s, len, lenient, &pos, &c, &cl) || cl < 11 ||
	    strncasecmp(c, "[CAPABILITY", 11) != 0 ||
	    (cl > 11 && c[11] != ']' && c[11] != '\t'))
		return false;
	*beg = (size_t)(c - s) + 11;
	*code = true;
	return true;
}

/*
 * Find a capability list: "* CAPABILITY ..." or a status response whose
 * text starts with "[CAPABILITY ...]" (RFC 9051 sections 7.2.2, 7.1).
 * Clients split words differently: a strict one at SP only, a lenient
 * one at any run of SP or HTAB (as the core splits keywords).  A line
 * either kind could take for a list is one, so no client finds a list
 * we did not rewrite.  [*beg, *end) is the list.
 */
static bool
imap_capa_locate(const char *s, size_t len, size_t *beg, size_t *end)
{
	const char	*rb = NULL;
	bool		 code;

	if (!imap_capa_start(s, len, false, beg, &code) &&
	    !imap_capa_start(s, len, true, beg, &code))
		return false;
	if (code)
		rb = memchr(s + *beg, ']', len - *beg);
	*end = rb != NULL ? (size_t)(rb - s) : len;
	return true;
}

/*
 * Write the line with the list [beg, end) filtered by imap_capa_rules,
 * keywords re-joined by one SP, and, in cleartext, STARTTLS (on STARTTLS
 * services) and LOGINDISABLED added exactly once (RFC 2595 section 3.1,
 * RFC 9051 section 6.2.3).  The list also says which literals the
 * backend reads (imap_lit_allowed); a new list replaces what an earlier
 * one said.
 */
static void
imap_capa_rewrite(struct filter *f, const char *s, size_t len, size_t beg,
    size_t end, struct evbuffer *out)
{
	struct imap	*st = f->proto;
	const char	*tok;
	size_t		 tl, pos = beg;

	st->bcapa = 0;
	evbuffer_add(out, s, beg);
	while (filter_capa_next(s, end, &pos, &tok, &tl)) {
		if (filter_word_eq(tok, tl, "LITERAL+"))
			st->bcapa |= IMAP_BC_LITPLUS;
		else if (filter_word_eq(tok, tl, "LITERAL-"))
			st->bcapa |= IMAP_BC_LITMINUS;
		else if (filter_word_eq(tok, tl, "BINARY"))
			st->bcapa |= IMAP_BC_BINARY;
		if (filter_capa_hidden(f, imap_capa_rules, IMAP_NCAPA_RULES,
		    tok, tl))
			continue;
		evbuffer_add(out, " ", 1);
		evbuffer_add(out, tok, tl);
	}
	if (filter_cleartext(f)) {
		if (f->starttls_svc)
			evbuffer_add(out, " STARTTLS", 9);
		evbuffer_add(out, " LOGINDISABLED", 14);
	}
	evbuffer_add(out, s + end, len - end);
	evbuffer_add(out, "\r\n", 2);
}
