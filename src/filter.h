/*
 * filter.h - the one filter core every protocol runs on.
 *
 * A protocol filter (proto_smtp.c, proto_imap.c, proto_pop3.c) keeps only
 * its framing grammar, its verb table, its capability rules and its reply
 * texts.  Everything the three have in common lives here, once:
 *
 *  - the reply FIFO: one slot per command forwarded (answered by the
 *    backend) or answered here (a local reply, written only when every
 *    earlier slot has been answered, so replies keep command order under
 *    pipelining, RFC 2920 / RFC 9051 5.5);
 *  - the error budget: every refusal counts, one limit (max_errors of the
 *    service); reaching it queues the protocol's last word and closes;
 *  - the STARTTLS boundary: the go-ahead only at the head of the FIFO and
 *    with nothing buffered behind the command (SPEC 8.1), the go-ahead is
 *    the last cleartext byte (8.2), the protocol state is reset (8.3), and
 *    backend bytes arriving before the client's handshake completes end
 *    the session (8.2);
 *  - the backend prelude: while mailtlsd talks to a new backend connection
 *    itself (SMTP's XCLIENT, the STARTTLS dialogue of backend_tls =
 *    starttls), the client is held, nothing is relayed to it before the
 *    backend leg is TLS and verified, a byte the server sends unasked
 *    fails the backend, and the bytes behind the server's go-ahead are
 *    cut (SPEC 9, 12);
 *  - the SASL response relay: one bounded, canonical response line;
 *  - the capability-keyword matcher: keywords split at any run of SP or
 *    HTAB, compared case-insensitively;
 *  - the session log prefix;
 *  - filter_pump(), the single loop that session.c, the unit-test harness
 *    and the fuzz drivers all run.
 *
 * The filter is a pure state machine over evbuffers: no socket, timer or
 * TLS object.
 */
#ifndef FILTER_H
#define FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "lineio.h"
#include "mailtlsd.h"
#include "proto.h"

/* Tags of local replies (IMAP); longer client tags are refused earlier. */
#define FILTER_TAG_MAX		64
/* Client slots, plus a greeting or an own command, plus a last reply. */
#define FILTER_SLOTS		(FILTER_PENDING_MAX + 2)
/*
 * The first slots of the ring are inside struct filter; the rest
 * (f->more) are allocated only when pipelining reaches them.  The ring
 * starts over at slot 0 whenever it is empty, so a client that waits
 * for its replies never needs more than the first.
 */
#define FILTER_SLOTS_INLINE	4
/* The "too many errors" reply (ops->last_word), allocated on demand. */
#define FILTER_LASTWORD_MAX	320
/* A SASL response line may be longer than a command (RFC 4954 4). */
#define FILTER_SASL_LINE_MAX	12288

/* Slot kinds below FSLOT_PROTO belong to the core. */
enum {
	FSLOT_LOCAL = 0,	/* our reply, written at the head */
	FSLOT_LOCAL_CLOSE,	/* the same, then the session ends */
	FSLOT_STARTTLS,		/* go-ahead decided at the head */
	FSLOT_PROTO		/* first kind a protocol may use */
};

struct filter_slot {
	unsigned	 kind;
	unsigned	 id;		/* never 0 */
	bool		 done;		/* protocol use (IMAP: completed) */
	/*
	 * A credential command (SMTP AUTH and its SASL responses, IMAP
	 * LOGIN and AUTHENTICATE, POP3 PASS, APOP and AUTH): its final
	 * reply goes to filter_auth_verdict() (SPEC 10).
	 */
	bool		 credential;
	uint8_t		 taglen;	/* tag, in f->tags (filter_slot_tag()) */
	uint8_t		 pos;		/* in the ring (< FILTER_SLOTS) */
	const char	*reply;		/* local: the whole reply (after tag) */
};

/*
 * What a refusal was about, for mailtlsd_refusals_total{kind}.  A
 * protocol names the kind (filter_refusal_kind()) just before it refuses;
 * a refusal it does not name is "protocol".
 */
enum filter_refusal {
	FILTER_REF_PROTOCOL = 0,	/* syntax, order, not allowed yet... */
	FILTER_REF_CREDENTIALS,		/* credentials in cleartext (SPEC 8.5) */
	FILTER_REF_AUTHORITY,		/* XCLIENT, XFORWARD... from a client */
	FILTER_REF_INJECTION,		/* bytes behind STARTTLS (SPEC 8.1) */
	FILTER_REF_SMUGGLING,		/* bare newline in a message (reject) */
	FILTER_REF_GREETING_DELAY,	/* early talker (smtp_greeting_delay) */
	FILTER_REF_AUTH_FAILURES,	/* max_auth_failures_per_ip (SPEC 10) */
	FILTER_REF_N
};

/* Where the client leg stands with TLS. */
enum filter_tls {
	FILTER_TLS_CLEAR = 0,	/* cleartext */
	FILTER_TLS_HANDSHAKE,	/* go-ahead sent, handshake not done */
	FILTER_TLS_ACTIVE,	/* implicit TLS, or STARTTLS completed */
};

/*
 * Whether the client waits for a backend connection to become ready: its
 * greeting read, and the backend prelude done: the commands mailtlsd sends
 * on its own before the client's session is relayed (SMTP with xclient:
 * EHLO and XCLIENT, SPEC 9; backend_tls = starttls: the STARTTLS dialogue
 * and the handshake, SPEC 12).  Client input is held meanwhile, and kept
 * for later.
 */
enum filter_await {
	FILTER_AWAIT_NONE = 0,
	FILTER_AWAIT_RELAY,	/* what the protocol relays reaches the client */
	FILTER_AWAIT_SWALLOW,	/* a fresh backend's greeting: consumed here */
};

/*
 * backend_tls = starttls (SPEC 12): where the backend leg of the current
 * connection stands.  Before ACTIVE nothing reaches the client whatever the
 * protocol writes (filter_await_input swallows it), so the first line a
 * client can get is the temporary failure or what follows the verified
 * handshake.
 */
enum filter_btls {
	FILTER_BTLS_NONE = 0,	/* no STARTTLS towards the backend */
	FILTER_BTLS_DIALOGUE,	/* cleartext: greeting, capabilities... */
	FILTER_BTLS_HANDSHAKE,	/* go-ahead read: backend not read */
	FILTER_BTLS_ACTIVE,	/* handshake verified */
};

struct filter {
	const struct proto_ops	*ops;
	void			*proto;		/* the protocol's state */
	const struct conf_service *svc;
	const char		*hostname;
	const char		*sid;
	const char		*addr;
	char			 log[96];	/* "SID proto client=ADDR" */

	enum filter_tls		 tls;
	bool			 starttls_svc;	/* tls_mode = starttls */
	bool			 require_tls;	/* require_starttls applies */
	bool			 closing;	/* FILTER_CLOSE from now on */
	bool			 sasl_skip;	/* rest of an over-long response */
	/*
	 * SPEC 9: the TLS phase of a STARTTLS session runs over a fresh
	 * backend connection (send_proxy or xclient is set).
	 */
	bool			 renew_backend;
	enum filter_await	 await;
	struct evbuffer		*swallowed;	/* FILTER_AWAIT_SWALLOW output */
	enum filter_btls	 btls;
	/*
	 * SPEC 12: the backend leg is TLS and the server has been sent
	 * nothing of the client's yet, so it must be silent: SMTP, IMAP
	 * and POP3 servers all wait for a command after the STARTTLS
	 * handshake (RFC 3207 4.2, RFC 9051 6.2.1, RFC 2595 4).  Cleared
	 * by the first slot a client command takes (filter_slot_push()):
	 * the length of the backend's output says nothing, a TLS leg
	 * encrypts it away at once.
	 */
	bool			 btls_quiet;
	bool			 failover;	/* backend_failover (proto.h) */
	bool			 backend_failed; /* ... and it failed */
	const char		*backend;	/* its name, or NULL */
	struct evbuffer		*prelude_in;	/* bin while awaiting */
	const char		*reason;	/* why it closes */
	unsigned		 errors;
	unsigned		 max_errors;
	enum filter_refusal	 ref_kind;	/* of the next refusal */
	uint64_t		*refusals;	/* counters, or NULL */
	/* SPEC 10 hooks (filter_params), or NULL. */
	bool			(*auth_blocked)(void *, unsigned);
	void			(*auth_failed)(void *);
	void			*auth_arg;
	char			*lastword;	/* "too many errors" reply */

	/*
	 * Test drivers only: called by filter_pump() after every call of
	 * an input function, with 'B' or 'C' and its verdict.
	 */
	void			(*observe)(void *, char, enum filter_verdict);
	void			*observe_arg;

	/*
	 * The protocol's line buffers (filter_lend_buffer()): where each
	 * pointer lives and its size.  NULL between hook calls.
	 */
	struct {
		char		**ptr;
		size_t		  size;
	}			 lend[LINEIO_SCRATCH_N];
	unsigned		 nlend;

	/*
	 * The FIFO ring: positions below FILTER_SLOTS_INLINE in slots[],
	 * the others in more[pos - FILTER_SLOTS_INLINE], allocated on
	 * demand and released when the ring is empty at the next push
	 * (filter_slot_push()).  Slots never move: a pointer stays valid
	 * while its slot is in the FIFO.
	 */
	struct filter_slot	 slots[FILTER_SLOTS_INLINE];
	struct filter_slot	*more;
	/*
	 * Tags of the slots, same positions, only for protocols with tags
	 * (ops->tagged, IMAP): the others do not pay for them in every
	 * idle session.  tagsmore goes with more.
	 */
	char			(*tags)[FILTER_TAG_MAX + 1];
	char			(*tagsmore)[FILTER_TAG_MAX + 1];
	unsigned		 head;
	unsigned		 nslots;
	unsigned		 next_id;
};

/* Log with the session prefix: flog(f, warnx, "fmt", ...). */
#define flog(f, lvl, fmt, ...) \
	log_##lvl("%s: " fmt, (f)->log, ##__VA_ARGS__)

struct filter	*filter_new(const struct proto_ops *,
		    const struct filter_params *);
void		 filter_free(struct filter *);
const char	*filter_reason(const struct filter *);

/*
 * Run the filter until neither direction makes progress: backend input,
 * then client input, again and again.  Client input is not looked at while
 * the client's own output holds RELAY_HIGH_WATERMARK bytes or more (a
 * client that does not read its replies cannot make us queue more).
 * Verdicts other than FILTER_CONTINUE end the pump.
 */
enum filter_verdict filter_pump(struct filter *, struct evbuffer *cin,
		    struct evbuffer *bin, struct evbuffer *cout,
		    struct evbuffer *bout);

/*
 * The client's handshake after a go-ahead has completed.  Backend bytes
 * already in bin were sent inside the handshake window: they are never
 * delivered, the event is logged, and FILTER_CLOSE is returned.
 * Otherwise the protocol forgets the cleartext phase now (ops->tls_reset,
 * which may talk to the backend through bout).
 */
enum filter_verdict filter_tls_established(struct filter *,
		    struct evbuffer *bin, struct evbuffer *bout);

static inline bool
filter_cleartext(const struct filter *f)
{
	return f->tls == FILTER_TLS_CLEAR;
}

/* ---- backend readiness (SPEC 9: fresh connections, XCLIENT) ---- */

/*
 * Whether the TLS phase of this STARTTLS session goes over a fresh
 * backend connection.  If so, filter_tls_established() has put the filter
 * in FILTER_AWAIT_SWALLOW: the session closes the cleartext-phase
 * connection, connects anew and pumps the fresh one, whose greeting the
 * protocol parses as usual but never reaches the client.
 */
static inline bool
filter_renews_backend(const struct filter *f)
{
	return f->renew_backend && f->tls == FILTER_TLS_ACTIVE;
}

static inline bool
filter_awaiting(const struct filter *f)
{
	return f->await != FILTER_AWAIT_NONE;
}

/*
 * Hold client input until the protocol calls filter_backend_ready().
 * swallow: what the protocol writes for the client meanwhile (the fresh
 * backend's greeting) is discarded.  Returns -1 when out of memory.
 */
int		 filter_await_backend(struct filter *, bool swallow);

/*
 * The protocol has read what makes the backend ready (the greeting; SMTP
 * with xclient: the XCLIENT reply), or found that it cannot be (ok false,
 * why names it, logged as an error).  No-op unless awaiting.  A failure,
 * or a session that closes while awaiting, gets the protocol's
 * temporary-failure reply (SPEC section 3) from filter_pump().
 */
void		 filter_backend_ready(struct filter *, bool ok,
		    const char *why);

/*
 * The backend connection ended (or failed) while awaiting it: the client
 * gets the temporary-failure reply; the reason is set for the end line.
 */
void		 filter_backend_lost(struct filter *, struct evbuffer *to_client);

/*
 * With filter_params.backend_failover: the filter closed because the
 * backend it awaited is not usable, and wrote nothing for the client; the
 * session tries the next backend or sends the temporary failure itself.
 */
static inline bool
filter_backend_failed(const struct filter *f)
{
	return f->backend_failed;
}

/* The backend's name in the filter's log lines (the session sets it). */
static inline void
filter_set_backend(struct filter *f, const char *name)
{
	f->backend = name;
}

/*
 * A command of our own in the backend prelude: written to the backend as
 * [tag SP] line CRLF, with a slot of the protocol's kind (its reply is the
 * protocol's to read, never the client's).  Returns the slot, or NULL when
 * the backend had already sent more than the reply just read
 * (filter_prelude_unsolicited()).
 */
struct filter_slot *filter_own_command(struct filter *,
		    struct evbuffer *to_backend, unsigned kind,
		    const char *tag, const char *line);

/*
 * In the prelude we send a command only once the reply to the previous one
 * (or the greeting) is complete, so backend bytes still unread then were
 * sent before the server could have seen our command: unsolicited.  The
 * backend is not usable (logged, filter_backend_ready()) and true is
 * returned; the command is not sent.
 */
bool		 filter_prelude_unsolicited(struct filter *);

/* ---- backend_tls = starttls (SPEC 12) ---- */

/* Whether the protocol runs the cleartext STARTTLS dialogue now. */
static inline bool
filter_backend_dialogue(const struct filter *f)
{
	return f->btls == FILTER_BTLS_DIALOGUE;
}

/*
 * The protocol has read the server's go-ahead (220, tagged OK, +OK):
 * from now on it must not read backend input (filter_backend_paused()).
 * The core discards and logs whatever the server sent behind it (SPEC 12,
 * the server side's injection: it could only be a man in the middle's)
 * and returns FILTER_BACKEND_STARTTLS.
 */
void		 filter_backend_go_ahead(struct filter *);

/*
 * Whether the protocol must leave backend input alone: after the
 * go-ahead (the core cuts what follows), and while the server must be
 * silent inside TLS (f->btls_quiet: the core fails the backend for any
 * byte), which a protocol reading on after its last prelude reply (SMTP's
 * XCLIENT) would otherwise take for an unsolicited reply of its own.
 */
static inline bool
filter_backend_paused(const struct filter *f)
{
	return f->btls == FILTER_BTLS_HANDSHAKE ||
	    (f->btls_quiet && f->await == FILTER_AWAIT_NONE);
}

/*
 * The backend leg's handshake has verified: the protocol goes on
 * (ops->backend_tls_ready).  From now until the client's first command
 * has been forwarded the server must be silent (f->btls_quiet): bytes it
 * sends inside TLS before that, already in bin now (a TLS 1.2 Finished
 * and a line in one segment, TLS 1.3 0.5-RTT data) or arriving later,
 * fail the backend like any other that is not usable: while the client
 * has heard nothing the session tries the next one, else the client
 * gets the temporary failure as the last word.  to_client is the
 * client's output: while the core swallows (a fresh connection of the
 * TLS phase) what the protocol writes is discarded.
 */
enum filter_verdict filter_backend_tls_established(struct filter *,
		    struct evbuffer *bin, struct evbuffer *to_client,
		    struct evbuffer *to_backend);

/* ---- the reply FIFO ---- */

/* A client command may start only while this is false (else: hold). */
static inline bool
filter_fifo_full(const struct filter *f)
{
	return f->nslots >= FILTER_PENDING_MAX;
}

static inline unsigned
filter_fifo_count(const struct filter *f)
{
	return f->nslots;
}

/* The i-th pending slot from the head (0 = head), or NULL. */
struct filter_slot *filter_slot_at(struct filter *, unsigned i);
static inline struct filter_slot *
filter_slot_head(struct filter *f)
{
	return filter_slot_at(f, 0);
}
/* The tag of a slot (taglen bytes), or NULL if it has none. */
static inline const char *
filter_slot_tag(const struct filter *f, const struct filter_slot *s)
{
	if (s->taglen == 0)
		return NULL;
	return s->pos < FILTER_SLOTS_INLINE ? f->tags[s->pos] :
	    f->tagsmore[s->pos - FILTER_SLOTS_INLINE];
}
/*
 * Append a slot; tag may be NULL (and must be, unless ops->tagged).
 * Returns it (its id is unique).
 */
struct filter_slot *filter_slot_push(struct filter *, unsigned kind,
		    const char *reply, const char *tag, size_t taglen);
void		 filter_slot_pop(struct filter *);
/* True while the head slot waits for the backend. */
bool		 filter_backend_owes(struct filter *);
/*
 * Write local replies that have reached the head ("TAG " + reply when a
 * tag was given).  A FSLOT_LOCAL_CLOSE makes the filter close.
 */
void		 filter_flush(struct filter *, struct evbuffer *to_client);

/* ---- refusals and the error budget ---- */

/*
 * Answer a client command ourselves (reply after "TAG " if tag given) and
 * count it against max_errors; the last one allowed queues the protocol's
 * last word (ops->last_word) and the session ends once it is written.
 * Returns true when the session now closes.
 */
bool		 filter_refuse(struct filter *, const char *tag, size_t taglen,
		    const char *reply);
/* The next filter_refuse() is of this kind (then back to "protocol"). */
void		 filter_refusal_kind(struct filter *, enum filter_refusal);
/* Count a refusal that does not go through filter_refuse(). */
void		 filter_count_refusal(struct filter *, enum filter_refusal);
const char	*filter_refusal_name(enum filter_refusal);
/*
 * SPEC 10, max_auth_failures_per_ip.  A protocol asks before it forwards
 * a credential command inside TLS: true means the client's address is
 * over its limit, counting the credential commands of this session that
 * still await their verdict as possible failures (so that pipelined
 * LOGINs cannot overshoot it), the event is logged and the next refusal
 * counted as
 * "max_auth_failures_per_ip"; the protocol then refuses the command with
 * its own text and never forwards it.  Always false in cleartext (where
 * credentials are refused anyway) and without the session's hook.
 */
bool		 filter_auth_blocked(struct filter *);
/*
 * The final reply to slot has been read (before the slot is popped):
 * failed is the protocol's reading of it (SMTP 535, IMAP tagged NO, POP3
 * -ERR).  A failure on a credential slot reaches the session's hook,
 * which counts it for the address.  Intermediate replies (334, "+") are
 * not verdicts and must not be passed.
 */
void		 filter_auth_verdict(struct filter *,
		    const struct filter_slot *slot, bool failed);
/* Answer ourselves without counting (a reply that is not a refusal). */
void		 filter_local(struct filter *, const char *tag, size_t taglen,
		    const char *reply);
/*
 * A session timeout (SPEC 10: idle_timeout, cleartext_timeout): the
 * protocol's timeout reply is written at once, outside the FIFO, if the
 * client-bound stream is at a reply boundary and the client is not in
 * the middle of a transfer (ops->at_boundary); otherwise nothing is
 * written (a reply there would corrupt the relayed reply, or be read as
 * content).  Either way the filter closes with reason.  Returns whether
 * the reply was written.
 */
bool		 filter_timeout(struct filter *, struct evbuffer *to_client,
		    const char *reason);
/* Queue a last reply (may be NULL: none) and close once it is written. */
void		 filter_close_after(struct filter *, const char *reply,
		    const char *reason);

/* ---- the STARTTLS boundary ---- */

/*
 * At the head of the FIFO, a FSLOT_STARTTLS slot: the go-ahead may be
 * given only now.  If the client sent anything behind the command (in is
 * not empty) that is the injection of SPEC 8.1: logged, closed.
 * Otherwise go_ahead is written as the last cleartext bytes, the slot
 * popped, the protocol reset (ops->tls_reset) and FILTER_STARTTLS
 * returned.  Returns FILTER_CONTINUE while earlier replies are due.
 */
enum filter_verdict filter_starttls(struct filter *, struct evbuffer *in,
		    struct evbuffer *to_client, const char *go_ahead);

/* ---- SASL responses ---- */

enum filter_sasl {
	FILTER_SASL_MORE = 0,	/* no complete line yet */
	FILTER_SASL_SENT,	/* a response line went to the backend */
	FILTER_SASL_CANCEL,	/* "*": forwarded; the exchange ends */
	FILTER_SASL_BAD,	/* not base64, or too long: consumed, not sent */
};

/*
 * Read one client SASL response line (RFC 4954 4, RFC 9051 6.2.2, RFC
 * 5034 4): base64 text, "=" or "*", at most FILTER_SASL_LINE_MAX bytes.
 * A valid line is written to to_backend as the text plus CRLF.  A bad
 * line is consumed (an over-long one entirely) and not forwarded: the
 * caller cancels the exchange towards the backend ("*") or refuses.
 */
enum filter_sasl filter_sasl_line(struct filter *, struct evbuffer *in,
		    struct evbuffer *to_backend);

/* ---- capability keywords ---- */

#define FCAPA_HIDE_CLEAR	0x01	/* hidden while in cleartext */
#define FCAPA_HIDE_TLS		0x02	/* hidden once TLS is active */
#define FCAPA_HIDE_ALWAYS	(FCAPA_HIDE_CLEAR | FCAPA_HIDE_TLS)
#define FCAPA_PREFIX		0x04	/* name is a prefix ("AUTH=") */
#define FCAPA_WORD_PREFIX	0x08	/* name, alone or followed by "=" or
					   a blank ("AUTH PLAIN", "AUTH=X") */

struct filter_capa_rule {
	const char	*name;
	unsigned	 flags;
};

/*
 * Next keyword of a capability text: skips any run of SP and HTAB, then
 * sets *tok and *toklen to the keyword up to the next SP or HTAB.
 * Returns false at the end.
 */
bool		 filter_capa_next(const char *s, size_t len, size_t *pos,
		    const char **tok, size_t *toklen);
/* The rule matching a keyword (case-insensitive), or NULL. */
const struct filter_capa_rule *filter_capa_match(
		    const struct filter_capa_rule *, size_t nrules,
		    const char *tok, size_t toklen);
/* Whether a keyword is hidden in the filter's current TLS state. */
bool		 filter_capa_hidden(const struct filter *,
		    const struct filter_capa_rule *, size_t nrules,
		    const char *tok, size_t toklen);

/* ---- canonical command lines ---- */

/*
 * Write a command line as we parsed it: [tag SP] verb [SP args] CRLF.
 * Nothing the client sent goes out any other way.
 */
void		 filter_send_command(struct evbuffer *to_backend,
		    const char *tag, size_t taglen, const char *verb,
		    size_t verblen, const char *args, size_t argslen);

/* Case-insensitive compare of a counted token with a C string. */
bool		 filter_word_eq(const char *tok, size_t len, const char *word);

/* ---- added for POP3 (issue 8) ---- */

/*
 * End the session now, without a last reply of ours (a backend we cannot
 * frame, for example): FILTER_CLOSE from here on.  The first reason given
 * is the one logged.
 */
void		 filter_abort(struct filter *, const char *reason);
/*
 * From a protocol's init: *ptr is a line buffer of size bytes that the
 * protocol uses only inside its hooks (client_input, backend_input,
 * tls_reset, backend_tls_ready).  The core points it into the worker
 * thread's scratch set (lineio_scratch()) for each call and back to NULL
 * afterwards, so an idle session holds none; nothing in it may outlive
 * the call.  At most LINEIO_SCRATCH_N per protocol.
 */
void		 filter_lend_buffer(struct filter *, char **ptr, size_t size);

/*
 * Whether a command line holds a control character (0x00-0x1F or 0x7F):
 * HTAB, CR, LF, NUL and the rest are where lenient servers split, trim or
 * stop differently from strict ones, so such a line is ambiguous (SPEC
 * 8.4) and is refused, never forwarded.
 */
bool		 filter_has_ctl(const char *s, size_t len);

#endif /* FILTER_H */
