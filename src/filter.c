/*
 * filter.c - the filter core shared by every protocol (see filter.h).
 *
 * Nothing here knows a protocol's grammar: the FIFO orders replies, the
 * error budget counts refusals, the STARTTLS boundary decides when the
 * go-ahead may leave, and the pump drives the protocol's two inputs.
 * Because the three filters all run on this code, a rule kept here holds
 * for all of them by construction (issue 8: "framing parity").
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "filter.h"
#include "lineio.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "util.h"

/* Rounds of one pump before it is a bug (each round must consume). */
#define FILTER_PUMP_ROUNDS	(1 << 16)

static enum filter_verdict filter_await_input(struct filter *,
		    struct evbuffer *, struct evbuffer *, struct evbuffer *);
static enum filter_verdict filter_backend_cut(struct filter *,
		    struct evbuffer *);
static enum filter_verdict filter_backend_spoke(struct filter *,
		    struct evbuffer *, struct evbuffer *);


void
filter_lend_buffer(struct filter *f, char **ptr, size_t size)
{
	if (f->nlend >= LINEIO_SCRATCH_N)
		fatalx("%s: more than %d line buffers", f->log,
		    LINEIO_SCRATCH_N);
	f->lend[f->nlend].ptr = ptr;
	f->lend[f->nlend].size = size;
	*ptr = NULL;
	f->nlend++;
}

/*
 * A line is read, checked and forwarded or refused within one hook, so
 * the protocols' line buffers are the worker thread's, lent for the call.
 * A hook called inside another gets the same buffers, as it did when
 * they were the session's.
 */
static bool
filter_lend(struct filter *f, char **saved)
{
	unsigned	i;

	for (i = 0; i < f->nlend; i++) {
		saved[i] = *f->lend[i].ptr;
		if ((*f->lend[i].ptr = lineio_scratch(i,
		    f->lend[i].size)) == NULL) {
			*f->lend[i].ptr = saved[i];
			while (i-- > 0)
				*f->lend[i].ptr = saved[i];
			filter_abort(f, "out of memory");
			return false;
		}
	}
	return true;
}

static void
filter_unlend(struct filter *f, char **saved)
{
	unsigned	i;

	for (i = 0; i < f->nlend; i++)
		*f->lend[i].ptr = saved[i];
}

/* The protocol hooks, each with its line buffers lent. */
static enum filter_verdict
filter_call_client(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend, struct evbuffer *to_client)
{
	char			*saved[LINEIO_SCRATCH_N];
	enum filter_verdict	 v;

	if (!filter_lend(f, saved))
		return FILTER_CLOSE;
	v = f->ops->client_input(f, in, to_backend, to_client);
	filter_unlend(f, saved);
	return v;
}

static enum filter_verdict
filter_call_backend(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	char			*saved[LINEIO_SCRATCH_N];
	enum filter_verdict	 v;

	if (!filter_lend(f, saved))
		return FILTER_CLOSE;
	v = f->ops->backend_input(f, in, to_client, to_backend);
	filter_unlend(f, saved);
	return v;
}

static void
filter_call_tls_reset(struct filter *f, struct evbuffer *to_backend)
{
	char	*saved[LINEIO_SCRATCH_N];

	if (!filter_lend(f, saved))
		return;
	f->ops->tls_reset(f, to_backend);
	filter_unlend(f, saved);
}

static void
filter_call_backend_tls_ready(struct filter *f, struct evbuffer *to_client,
    struct evbuffer *to_backend)
{
	char	*saved[LINEIO_SCRATCH_N];

	if (!filter_lend(f, saved))
		return;
	f->ops->backend_tls_ready(f, to_client, to_backend);
	filter_unlend(f, saved);
}

/* struct filter_slot's pos. */
_Static_assert(FILTER_SLOTS <= 256, "FILTER_SLOTS must fit a uint8_t");

static void	 filter_slots_release(struct filter *);

struct filter *
filter_new(const struct proto_ops *ops, const struct filter_params *p)
{
	const struct conf_service *svc = p->svc;
	struct filter	*f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->ops = ops;
	f->svc = svc;
	f->hostname = svc->hostname ? svc->hostname : "localhost";
	f->sid = p->session_id ? p->session_id : "-";
	f->addr = p->client_addr ? p->client_addr : "-";
	snprintf(f->log, sizeof(f->log), "%s %s client=%s", f->sid, ops->name,
	    f->addr);
	f->tls = p->tls_active ? FILTER_TLS_ACTIVE : FILTER_TLS_CLEAR;
	f->starttls_svc = svc->tls_mode == TLS_MODE_STARTTLS;
	f->require_tls = f->starttls_svc && svc->require_starttls;
	f->max_errors = svc->max_errors ? svc->max_errors : DEFAULT_MAX_ERRORS;
	f->renew_backend = f->starttls_svc &&
	    (svc->send_proxy != SEND_PROXY_NONE || svc->xclient);
	f->refusals = p->refusals;
	f->auth_blocked = p->auth_blocked;
	f->auth_failed = p->auth_failed;
	f->auth_arg = p->auth_arg;
	f->failover = p->backend_failover;
	f->next_id = 1;
	if (ops->tagged && (f->tags = calloc(FILTER_SLOTS_INLINE,
	    sizeof(*f->tags))) == NULL) {
		free(f);
		return NULL;
	}
	/*
	 * SPEC 12: the client waits (its bytes kept) until the backend leg
	 * is TLS, verified, and ready; it hears nothing before.
	 */
	if (svc->backend_tls == BACKEND_TLS_STARTTLS) {
		f->btls = FILTER_BTLS_DIALOGUE;
		if (filter_await_backend(f, false) == -1) {
			free(f->tags);
			free(f);
			return NULL;
		}
	}
	if ((f->proto = ops->init(f, p)) == NULL) {
		if (f->swallowed != NULL)
			evbuffer_free(f->swallowed);
		free(f->tags);
		free(f);
		return NULL;
	}
	return f;
}

void
filter_free(struct filter *f)
{
	if (f == NULL)
		return;
	f->ops->free(f->proto);
	if (f->swallowed != NULL)
		evbuffer_free(f->swallowed);
	filter_slots_release(f);
	free(f->tags);
	free(f->lastword);
	free(f);
}

const char *
filter_reason(const struct filter *f)
{
	return f->reason ? f->reason : "protocol filter";
}

enum filter_verdict
filter_pump(struct filter *f, struct evbuffer *cin, struct evbuffer *bin,
    struct evbuffer *cout, struct evbuffer *bout)
{
	enum filter_verdict	 v = FILTER_CONTINUE;
	size_t			 sum;
	unsigned		 round;

	for (round = 0; round < FILTER_PUMP_ROUNDS; round++) {
		sum = evbuffer_get_length(cin) + evbuffer_get_length(cout) +
		    evbuffer_get_length(bin) + evbuffer_get_length(bout);
		if (f->await != FILTER_AWAIT_NONE) {
			v = filter_await_input(f, bin, cout, bout);
			if (v != FILTER_CONTINUE)
				return v;
			if (f->await != FILTER_AWAIT_NONE)
				return FILTER_CONTINUE;
			continue;
		}
		/* Backend first: bytes that came before a command of ours. */
		if (f->btls_quiet && evbuffer_get_length(bin) != 0)
			return filter_backend_spoke(f, bin, cout);
		v = filter_call_backend(f, bin, cout, bout);
		if (f->observe != NULL)
			f->observe(f->observe_arg, 'B', v);
		if (v != FILTER_CONTINUE)
			return v;
		/* A client that does not read its replies is not read. */
		if (evbuffer_get_length(cout) < RELAY_HIGH_WATERMARK) {
			v = filter_call_client(f, cin, bout, cout);
			if (f->observe != NULL)
				f->observe(f->observe_arg, 'C', v);
			if (v != FILTER_CONTINUE)
				return v;
		}
		if (f->closing)
			return FILTER_CLOSE;
		if (sum == evbuffer_get_length(cin) + evbuffer_get_length(cout) +
		    evbuffer_get_length(bin) + evbuffer_get_length(bout))
			return FILTER_CONTINUE;
	}
	flog(f, error, "filter does not settle, closing");
	f->reason = "internal error";
	return FILTER_CLOSE;
}

/*
 * Backend input while the client waits for the backend (filter_await_*):
 * the client is not read, so nothing it sent meanwhile is lost or runs
 * early.  A swallowed greeting goes to f->swallowed and is dropped.  If
 * the session ends before the backend is ready, the client hears only
 * the temporary failure of SPEC section 3, whatever the protocol had
 * meant to say (its words were for the fresh backend's greeting).
 */
static enum filter_verdict
filter_await_input(struct filter *f, struct evbuffer *bin,
    struct evbuffer *cout, struct evbuffer *bout)
{
	struct evbuffer		*to_client = cout;
	enum filter_verdict	 v;

	/*
	 * SPEC 12: before the backend leg's handshake has verified, nothing
	 * reaches the client, whatever the protocol meant to say: the
	 * server's cleartext words are a man in the middle's to choose.
	 */
	if (f->await == FILTER_AWAIT_SWALLOW ||
	    f->btls == FILTER_BTLS_DIALOGUE || f->btls == FILTER_BTLS_HANDSHAKE)
		to_client = f->swallowed;
	f->prelude_in = bin;
	v = filter_call_backend(f, bin, to_client, bout);
	f->prelude_in = NULL;
	if (f->observe != NULL)
		f->observe(f->observe_arg, 'B', v);
	if (to_client != cout)
		evbuffer_drain(f->swallowed, evbuffer_get_length(f->swallowed));
	if (f->await != FILTER_AWAIT_NONE && (v != FILTER_CONTINUE ||
	    f->closing)) {
		filter_backend_lost(f, cout);
		return FILTER_CLOSE;
	}
	if (f->btls == FILTER_BTLS_HANDSHAKE)
		return filter_backend_cut(f, bin);
	return v;
}

/*
 * After the server's go-ahead (filter_backend_go_ahead): what it sent
 * behind it, in the same packet or pipelined, came before the handshake
 * and so without TLS's protection.  A server that follows RFC 3207 /
 * 2595 sends nothing there; such bytes can only be injected (the server
 * side's CVE-2011-0411).  They are never read as replies: discarded and
 * logged, and the handshake goes on.  Bytes arriving later go to the TLS
 * layer, where they fail the handshake.
 */
static enum filter_verdict
filter_backend_cut(struct filter *f, struct evbuffer *bin)
{
	char	 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	size_t	 n = evbuffer_get_length(bin), show;

	if (n > 0) {
		show = n < LOG_CLIENT_TEXT_MAX ? n : LOG_CLIENT_TEXT_MAX;
		flog(f, warnx, "backend %s: %zu bytes after the STARTTLS "
		    "go-ahead discarded: %s", f->backend ? f->backend : "-",
		    n, log_escape(esc, sizeof(esc),
		    (const char *)evbuffer_pullup(bin, (ssize_t)show), show,
		    LOG_CLIENT_TEXT_MAX));
		filter_count_refusal(f, FILTER_REF_INJECTION);
		evbuffer_drain(bin, n);
	}
	return FILTER_BACKEND_STARTTLS;
}

/*
 * SPEC 12: the server sent bytes inside TLS before it was sent anything
 * of the client's (f->btls_quiet).  A server that follows RFC 3207 4.2,
 * RFC 9051 6.2.1 or RFC 2595 4 says nothing until it gets a command
 * after the handshake, so these bytes are no reply of anything: read as
 * one they would answer the client's first command (SMTP, POP3) or reach
 * the client as the server's own words (IMAP).  They are dropped and the
 * backend is not usable: awaiting it still (the handshake has just
 * ended), the session tries the next backend or the client gets the
 * temporary failure as its first line; once our greeting has gone, the
 * temporary failure is its last word (session_backend_failed()).
 */
static enum filter_verdict
filter_backend_spoke(struct filter *f, struct evbuffer *bin,
    struct evbuffer *to_client)
{
	char	 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	size_t	 n = evbuffer_get_length(bin), show;

	show = n < LOG_CLIENT_TEXT_MAX ? n : LOG_CLIENT_TEXT_MAX;
	flog(f, error, "backend %s not usable: server spoke first inside "
	    "TLS, %zu bytes before any command: %s",
	    f->backend ? f->backend : "-", n, log_escape(esc, sizeof(esc),
	    (const char *)evbuffer_pullup(bin, (ssize_t)show), show,
	    LOG_CLIENT_TEXT_MAX));
	evbuffer_drain(bin, n);
	f->btls_quiet = false;
	f->await = FILTER_AWAIT_NONE;
	if (f->reason == NULL)
		f->reason = "server spoke first inside TLS";
	f->closing = true;
	/* The session may try the next backend: it answers the client. */
	if (f->failover)
		f->backend_failed = true;
	else
		f->ops->unavailable(to_client, f->hostname);
	return FILTER_CLOSE;
}

int
filter_await_backend(struct filter *f, bool swallow)
{
	if (f->swallowed == NULL && (f->swallowed = evbuffer_new()) == NULL)
		return -1;
	f->await = swallow ? FILTER_AWAIT_SWALLOW : FILTER_AWAIT_RELAY;
	return 0;
}

void
filter_backend_ready(struct filter *f, bool ok, const char *why)
{
	if (f->await == FILTER_AWAIT_NONE)
		return;
	if (ok) {
		f->await = FILTER_AWAIT_NONE;
		return;
	}
	if (f->backend != NULL)
		flog(f, error, "backend %s not usable: %s", f->backend, why);
	else
		flog(f, error, "backend not usable: %s", why);
	if (f->reason == NULL)
		f->reason = why;
	f->closing = true;
}

void
filter_backend_lost(struct filter *f, struct evbuffer *to_client)
{
	if (f->await == FILTER_AWAIT_NONE)
		return;
	f->await = FILTER_AWAIT_NONE;
	if (f->reason == NULL)
		f->reason = "backend not ready";
	f->closing = true;
	/* The session may try the next backend: it answers the client. */
	if (f->failover) {
		f->backend_failed = true;
		return;
	}
	f->ops->unavailable(to_client, f->hostname);
}

bool
filter_prelude_unsolicited(struct filter *f)
{
	char	 esc[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	size_t	 n, show;

	if (f->prelude_in == NULL ||
	    (n = evbuffer_get_length(f->prelude_in)) == 0)
		return false;
	show = n < LOG_CLIENT_TEXT_MAX ? n : LOG_CLIENT_TEXT_MAX;
	flog(f, warnx, "backend %s: %zu unsolicited bytes: %s",
	    f->backend ? f->backend : "-", n, log_escape(esc, sizeof(esc),
	    (const char *)evbuffer_pullup(f->prelude_in, (ssize_t)show), show,
	    LOG_CLIENT_TEXT_MAX));
	evbuffer_drain(f->prelude_in, n);
	filter_backend_ready(f, false, "unsolicited backend output");
	return true;
}

struct filter_slot *
filter_own_command(struct filter *f, struct evbuffer *to_backend,
    unsigned kind, const char *tag, const char *line)
{
	size_t	 taglen = tag != NULL ? strlen(tag) : 0;

	if (filter_prelude_unsolicited(f))
		return NULL;

	filter_send_command(to_backend, tag, taglen, line, strlen(line),
	    NULL, 0);
	flog(f, debug, "to backend: %s%s%s", tag ? tag : "", tag ? " " : "",
	    line);
	return filter_slot_push(f, kind, NULL, tag, taglen);
}

void
filter_backend_go_ahead(struct filter *f)
{
	if (f->btls != FILTER_BTLS_DIALOGUE || f->await == FILTER_AWAIT_NONE)
		fatalx("%s: backend STARTTLS go-ahead out of place", f->log);
	flog(f, debug, "backend STARTTLS go-ahead");
	f->btls = FILTER_BTLS_HANDSHAKE;
}

enum filter_verdict
filter_backend_tls_established(struct filter *f, struct evbuffer *bin,
    struct evbuffer *to_client, struct evbuffer *to_backend)
{
	struct evbuffer	*out = to_client;

	if (f->btls != FILTER_BTLS_HANDSHAKE)
		fatalx("%s: backend TLS established out of place", f->log);
	f->btls = FILTER_BTLS_ACTIVE;
	f->btls_quiet = true;
	/* Inside TLS already, in the handshake's last segment. */
	if (evbuffer_get_length(bin) != 0)
		return filter_backend_spoke(f, bin, to_client);
	if (f->await == FILTER_AWAIT_SWALLOW)
		out = f->swallowed;
	filter_call_backend_tls_ready(f, out, to_backend);
	if (out != to_client)
		evbuffer_drain(out, evbuffer_get_length(out));
	if (f->closing && f->await != FILTER_AWAIT_NONE) {
		filter_backend_lost(f, to_client);
		return FILTER_CLOSE;
	}
	return f->closing ? FILTER_CLOSE : FILTER_CONTINUE;
}

enum filter_verdict
filter_tls_established(struct filter *f, struct evbuffer *bin,
    struct evbuffer *bout)
{
	size_t	n = evbuffer_get_length(bin);

	f->tls = FILTER_TLS_ACTIVE;
	if (n == 0) {
		/*
		 * SPEC 8.3: no state of the cleartext phase survives.  Done
		 * now rather than at the go-ahead, so that what the protocol
		 * says to the backend for it (SMTP: RSET) is answered after
		 * the window, never inside it.  With a fresh backend
		 * connection (SPEC 9) the reset holds by construction: the
		 * protocol only expects the new greeting, which is consumed
		 * here, never shown to the client.
		 */
		filter_call_tls_reset(f, bout);
		/* The fresh connection has its own STARTTLS dialogue. */
		if (f->renew_backend &&
		    f->svc->backend_tls == BACKEND_TLS_STARTTLS)
			f->btls = FILTER_BTLS_DIALOGUE;
		if (f->renew_backend && filter_await_backend(f, true) == -1) {
			f->reason = "out of memory";
			f->closing = true;
			return FILTER_CLOSE;
		}
		return FILTER_CONTINUE;
	}
	/* SPEC 8.2: nothing said before TLS is delivered inside it. */
	flog(f, warnx, "backend sent %zu bytes during the TLS handshake, "
	    "discarded, closing", n);
	evbuffer_drain(bin, n);
	f->reason = "backend data during TLS handshake";
	f->closing = true;
	return FILTER_CLOSE;
}

/* ---------------------------------------------------------------------- */
/* The reply FIFO. */

/* The slot at a ring position (its part of the ring allocated). */
static struct filter_slot *
filter_slot_pos(struct filter *f, unsigned pos)
{
	if (pos < FILTER_SLOTS_INLINE)
		return &f->slots[pos];
	return &f->more[pos - FILTER_SLOTS_INLINE];
}

/* The heap part of the ring, while no slot is in it. */
static void
filter_slots_release(struct filter *f)
{
	free(f->more);
	free(f->tagsmore);
	f->more = NULL;
	f->tagsmore = NULL;
}

struct filter_slot *
filter_slot_at(struct filter *f, unsigned i)
{
	if (i >= f->nslots)
		return NULL;
	return filter_slot_pos(f, (f->head + i) % FILTER_SLOTS);
}

struct filter_slot *
filter_slot_push(struct filter *f, unsigned kind, const char *reply,
    const char *tag, size_t taglen)
{
	struct filter_slot *s;
	unsigned	 pos;

	/* Client commands are held at FILTER_PENDING_MAX; see FILTER_SLOTS. */
	if (f->nslots >= FILTER_SLOTS)
		fatalx("%s: reply FIFO overflow", f->log);
	if (tag == NULL || taglen > FILTER_TAG_MAX)
		taglen = 0;
	if (taglen > 0 && f->tags == NULL)
		fatalx("%s: a tag for a protocol without tags", f->log);
	/*
	 * An empty ring starts over at the inline slots and gives the heap
	 * part back: an idle session holds only the inline slots.  (Not at
	 * the pop, so that a slot just popped stays readable until the
	 * next push, as it always was.)
	 */
	if (f->nslots == 0) {
		f->head = 0;
		if (f->more != NULL)
			filter_slots_release(f);
	}
	pos = (f->head + f->nslots) % FILTER_SLOTS;
	if (pos >= FILTER_SLOTS_INLINE && f->more == NULL) {
		/*
		 * Callers rely on a slot (like the fixed ring did): out of
		 * memory here is fatal, as for util_xcalloc().
		 */
		f->more = util_xcalloc(FILTER_SLOTS - FILTER_SLOTS_INLINE,
		    sizeof(*f->more));
		if (f->tags != NULL)
			f->tagsmore = util_xcalloc(FILTER_SLOTS -
			    FILTER_SLOTS_INLINE, sizeof(*f->tagsmore));
	}
	s = filter_slot_pos(f, pos);
	memset(s, 0, sizeof(*s));
	s->pos = (uint8_t)pos;
	s->kind = kind;
	s->reply = reply;
	/*
	 * A command of the client's is on its way to the backend (the
	 * prelude's own ones are pushed while awaiting): the server may
	 * speak from now on (SPEC 12, f->btls_quiet).
	 */
	if (kind >= FSLOT_PROTO && f->await == FILTER_AWAIT_NONE)
		f->btls_quiet = false;
	s->id = f->next_id++;
	if (f->next_id == 0)
		f->next_id = 1;
	if (taglen > 0)
		memcpy(pos < FILTER_SLOTS_INLINE ? f->tags[pos] :
		    f->tagsmore[pos - FILTER_SLOTS_INLINE], tag, taglen);
	s->taglen = (uint8_t)taglen;
	f->nslots++;
	return s;
}

void
filter_slot_pop(struct filter *f)
{
	if (f->nslots == 0)
		return;
	f->head = (f->head + 1) % FILTER_SLOTS;
	f->nslots--;
}

bool
filter_backend_owes(struct filter *f)
{
	struct filter_slot *s = filter_slot_head(f);

	return s != NULL && s->kind >= FSLOT_PROTO;
}

void
filter_flush(struct filter *f, struct evbuffer *to_client)
{
	struct filter_slot *s;

	while ((s = filter_slot_head(f)) != NULL &&
	    (s->kind == FSLOT_LOCAL || s->kind == FSLOT_LOCAL_CLOSE)) {
		if (s->taglen > 0) {
			evbuffer_add(to_client, filter_slot_tag(f, s),
			    s->taglen);
			evbuffer_add(to_client, " ", 1);
		}
		if (s->reply != NULL)
			evbuffer_add(to_client, s->reply, strlen(s->reply));
		if (s->kind == FSLOT_LOCAL_CLOSE)
			f->closing = true;
		filter_slot_pop(f);
	}
}

/* ---------------------------------------------------------------------- */
/* Refusals and the error budget. */

void
filter_local(struct filter *f, const char *tag, size_t taglen,
    const char *reply)
{
	filter_slot_push(f, FSLOT_LOCAL, reply, tag, taglen);
}

static const char *const filter_refusal_names[FILTER_REF_N] = {
	[FILTER_REF_PROTOCOL] = "protocol",
	[FILTER_REF_CREDENTIALS] = "credentials",
	[FILTER_REF_AUTHORITY] = "authority",
	[FILTER_REF_INJECTION] = "injection",
	[FILTER_REF_SMUGGLING] = "smuggling",
	[FILTER_REF_GREETING_DELAY] = "smtp_greeting_delay",
	[FILTER_REF_AUTH_FAILURES] = "max_auth_failures_per_ip",
};

const char *
filter_refusal_name(enum filter_refusal k)
{
	return (unsigned)k < FILTER_REF_N ? filter_refusal_names[k] : "?";
}

void
filter_refusal_kind(struct filter *f, enum filter_refusal k)
{
	f->ref_kind = k;
}

void
filter_count_refusal(struct filter *f, enum filter_refusal k)
{
	if (f->refusals != NULL && (unsigned)k < FILTER_REF_N)
		metrics_inc(&f->refusals[k]);
}

bool
filter_refuse(struct filter *f, const char *tag, size_t taglen,
    const char *reply)
{
	filter_slot_push(f, FSLOT_LOCAL, reply, tag, taglen);
	filter_count_refusal(f, f->ref_kind);
	f->ref_kind = FILTER_REF_PROTOCOL;
	if (++f->errors < f->max_errors)
		return false;
	flog(f, warnx, "%u refused commands, closing", f->errors);
	/* Only a session that reaches its budget needs one. */
	if (f->lastword == NULL)
		f->lastword = util_xcalloc(1, FILTER_LASTWORD_MAX);
	f->ops->last_word(f, f->lastword, FILTER_LASTWORD_MAX);
	filter_close_after(f, f->lastword, "too many errors");
	return true;
}

bool
filter_auth_blocked(struct filter *f)
{
	struct filter_slot	*s;
	unsigned		 i, pending = 0;

	if (f->auth_blocked == NULL || filter_cleartext(f))
		return false;
	for (i = 0; (s = filter_slot_at(f, i)) != NULL; i++)
		if (s->credential && !s->done)
			pending++;
	if (!f->auth_blocked(f->auth_arg, pending))
		return false;
	/* Never the arguments: they may be credentials (SPEC 8.5). */
	flog(f, notice, "credential command refused: too many "
	    "authentication failures from this address");
	filter_refusal_kind(f, FILTER_REF_AUTH_FAILURES);
	return true;
}

void
filter_auth_verdict(struct filter *f, const struct filter_slot *slot,
    bool failed)
{
	if (slot == NULL || !slot->credential || !failed)
		return;
	flog(f, info, "authentication failed (backend's reply)");
	if (f->auth_failed != NULL)
		f->auth_failed(f->auth_arg);
}

void
filter_close_after(struct filter *f, const char *reply, const char *reason)
{
	/* Only the first last word counts; later ones would never be read. */
	if (f->reason == NULL)
		f->reason = reason;
	filter_slot_push(f, FSLOT_LOCAL_CLOSE, reply, NULL, 0);
}

bool
filter_timeout(struct filter *f, struct evbuffer *to_client,
    const char *reason)
{
	bool	at = f->ops->at_boundary == NULL || f->ops->at_boundary(f);

	if (f->reason == NULL)
		f->reason = reason;
	f->closing = true;
	if (!at || f->ops->timeout_reply == NULL) {
		flog(f, info, "%s in the middle of a reply or a transfer: "
		    "closing without the timeout reply", reason);
		return false;
	}
	f->ops->timeout_reply(to_client, f->hostname);
	return true;
}

/* ---------------------------------------------------------------------- */
/* The STARTTLS boundary. */

enum filter_verdict
filter_starttls(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_client, const char *go_ahead)
{
	struct filter_slot *s = filter_slot_head(f);

	if (s == NULL || s->kind != FSLOT_STARTTLS)
		return FILTER_CONTINUE;
	/* SPEC 8.1: pipelined bytes behind the command are never read. */
	if (evbuffer_get_length(in) != 0) {
		/* Their content may be credentials: only the count. */
		flog(f, warnx, "%zu pipelined bytes after STARTTLS, closing",
		    evbuffer_get_length(in));
		filter_count_refusal(f, FILTER_REF_INJECTION);
		f->reason = "pipelined data after STARTTLS";
		f->closing = true;
		return FILTER_CLOSE;
	}
	filter_slot_pop(f);
	/* SPEC 8.2: the go-ahead is the last cleartext byte. */
	evbuffer_add(to_client, go_ahead, strlen(go_ahead));
	f->tls = FILTER_TLS_HANDSHAKE;
	return FILTER_STARTTLS;
}

/* ---------------------------------------------------------------------- */
/* SASL responses. */

static bool
filter_base64(const char *s, size_t len)
{
	size_t	i, pad = 0;

	if (len == 1 && (s[0] == '=' || s[0] == '*'))
		return true;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '=') {
			pad++;
			continue;
		}
		if (pad > 0)
			return false;	/* data after padding */
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return false;
	}
	return pad <= 2 && len % 4 == 0;
}

enum filter_sasl
filter_sasl_line(struct filter *f, struct evbuffer *in,
    struct evbuffer *to_backend)
{
	char		 buf[FILTER_SASL_LINE_MAX + 2];
	size_t		 len;
	unsigned	 flags;

	if (f->sasl_skip) {
		if (lineio_skip(in) == 0)
			return FILTER_SASL_MORE;
		f->sasl_skip = false;
		return FILTER_SASL_BAD;
	}
	switch (lineio_get(in, FILTER_SASL_LINE_MAX, buf, sizeof(buf), &len,
	    &flags)) {
	case LINEIO_MORE:
		return FILTER_SASL_MORE;
	case LINEIO_TOO_LONG:
		/* Consume the line whole before the caller refuses it. */
		flog(f, info, "over-long SASL response refused");
		if (lineio_skip(in) == 1)
			return FILTER_SASL_BAD;
		f->sasl_skip = true;
		return FILTER_SASL_MORE;
	case LINEIO_LINE:
		break;
	}
	if (flags != 0 || !filter_base64(buf, len)) {
		flog(f, info, "malformed SASL response refused");
		return FILTER_SASL_BAD;
	}
	evbuffer_add(to_backend, buf, len);
	evbuffer_add(to_backend, "\r\n", 2);
	return len == 1 && buf[0] == '*' ? FILTER_SASL_CANCEL :
	    FILTER_SASL_SENT;
}

/* ---------------------------------------------------------------------- */
/* Capability keywords. */

static bool
filter_blank(char c)
{
	return c == ' ' || c == '\t';
}

bool
filter_capa_next(const char *s, size_t len, size_t *pos, const char **tok,
    size_t *toklen)
{
	size_t	i = *pos, b;

	while (i < len && filter_blank(s[i]))
		i++;
	if (i >= len) {
		*pos = len;
		return false;
	}
	b = i;
	while (i < len && !filter_blank(s[i]))
		i++;
	*tok = s + b;
	*toklen = i - b;
	*pos = i;
	return true;
}

const struct filter_capa_rule *
filter_capa_match(const struct filter_capa_rule *rules, size_t n,
    const char *tok, size_t toklen)
{
	size_t	i, nl;

	for (i = 0; i < n; i++) {
		nl = strlen(rules[i].name);
		if (rules[i].flags & FCAPA_PREFIX) {
			if (toklen >= nl &&
			    strncasecmp(tok, rules[i].name, nl) == 0)
				return &rules[i];
		} else if (rules[i].flags & FCAPA_WORD_PREFIX) {
			if (toklen >= nl &&
			    strncasecmp(tok, rules[i].name, nl) == 0 &&
			    (toklen == nl || tok[nl] == '=' ||
			    filter_blank(tok[nl])))
				return &rules[i];
		} else if (toklen == nl &&
		    strncasecmp(tok, rules[i].name, nl) == 0)
			return &rules[i];
	}
	return NULL;
}

bool
filter_capa_hidden(const struct filter *f, const struct filter_capa_rule *r,
    size_t n, const char *tok, size_t toklen)
{
	const struct filter_capa_rule *m = filter_capa_match(r, n, tok, toklen);

	if (m == NULL)
		return false;
	if (f->tls == FILTER_TLS_CLEAR)
		return (m->flags & FCAPA_HIDE_CLEAR) != 0;
	return (m->flags & FCAPA_HIDE_TLS) != 0;
}

/* ---------------------------------------------------------------------- */
/* Canonical command lines. */

void
filter_send_command(struct evbuffer *out, const char *tag, size_t taglen,
    const char *verb, size_t verblen, const char *args, size_t argslen)
{
	if (tag != NULL && taglen > 0) {
		evbuffer_add(out, tag, taglen);
		evbuffer_add(out, " ", 1);
	}
	evbuffer_add(out, verb, verblen);
	if (args != NULL && argslen > 0) {
		evbuffer_add(out, " ", 1);
		evbuffer_add(out, args, argslen);
	}
	evbuffer_add(out, "\r\n", 2);
}

bool
filter_word_eq(const char *tok, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(tok, word, len) == 0;
}

/* ---------------------------------------------------------------------- */
/* Added for POP3 (issue 8). */

void
filter_abort(struct filter *f, const char *reason)
{
	if (f->reason == NULL)
		f->reason = reason;
	f->closing = true;
}

bool
filter_has_ctl(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}
