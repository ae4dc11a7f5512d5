/*
 * fuzz_common.h - the libFuzzer driver shared by the filter harnesses.
 *
 * A fuzz input is a service configuration and a script:
 *
 *   byte 0    mode: bits 0-1 TLS (0, 3: STARTTLS service in cleartext;
 *             1: STARTTLS service, TLS already up; 2: implicit TLS),
 *             bit 2 require_starttls, bit 3 smtp_bare_newline = reject,
 *             bits 4-5 line limit (0, 3: protocol default; 1: 512, the
 *             smallest the configuration accepts; 2: 16 + byte 1)
 *   byte 1    parameter of the small line limit
 *   then      chunks: a header byte (bit 0: 0 client, 1 backend; bit 1:
 *             deliver without running the filter, as when both peers'
 *             bytes wait in the buffers; bit 7: two length bytes,
 *             little-endian, else one), the length, the bytes (a short
 *             last chunk takes what is left).
 *
 * Each chunk is appended to the client's or the backend's input and the
 * filter is pumped the way session.c does it (backend_input, then
 * client_input, until neither makes progress).  FILTER_CLOSE ends the
 * script; after FILTER_STARTTLS the session goes on as after a handshake.
 *
 * Every byte either peer sent, every byte the filter consumed and every
 * byte it wrote is recorded on a "tape", with the TLS boundary marked on
 * each, so the protocol models in fuzz_<proto>.c can check invariants over
 * the whole dialogue as a conforming peer would parse it.  A violation
 * prints the chronological transcript and aborts: libFuzzer saves the
 * input.  FUZZ_VERBOSE=1 prints the transcript of every input (for
 * reproducers).
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <sys/types.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conf.h"
#include "log.h"
#include "mailtlsd.h"
#include "filter.h"
#include "proto.h"

/* A pump that keeps moving bytes this long without new input is a bug. */
#define FZ_ROUNDS_MAX	20000

/* Growable record of one byte stream. */
struct fz_tape {
	unsigned char	*b;
	size_t		 len;
	size_t		 cap;
};

/* One entry of the chronological transcript (printed on failure). */
struct fz_event {
	char		 kind;	/* c/b: peer sent; C/B: written to; S, X */
	size_t		 off;
	size_t		 len;
};

struct fz_run;

/* The protocol model of one harness. */
struct fz_model_ops {
	void	*(*init)(struct fz_run *);
	/* After every filter call: look at what is new on the tapes. */
	void	 (*advance)(struct fz_run *, void *);
	/* At FILTER_STARTTLS, after advance(). */
	void	 (*starttls)(struct fz_run *, void *);
	void	 (*done)(void *);
};

struct fz_run {
	const struct proto_ops	*ops;
	struct filter		*f;
	struct conf_service	 svc;
	struct filter_params	 fp;
	struct evbuffer		*cin, *bin, *to_b, *to_c;

	struct fz_tape		 client;	/* every byte the client sent */
	struct fz_tape		 backend;	/* every byte the backend sent */
	struct fz_tape		 tob;		/* every byte sent to the backend */
	struct fz_tape		 toc;		/* every byte sent to the client */
	size_t			 client_used;	/* of client: taken by the filter */
	size_t			 backend_used;	/* of backend: taken */
	size_t			 cin_last;	/* input lengths after the last call */
	size_t			 bin_last;
	size_t			 tob_before;	/* tob.len before the last call */
	size_t			 toc_before;

	bool			 starttls_svc;
	bool			 cleartext_start;	/* STARTTLS svc, no TLS */
	bool			 upgraded;	/* FILTER_STARTTLS happened */
	size_t			 tls_b;		/* tob.len at FILTER_STARTTLS */
	size_t			 tls_c;		/* toc.len at FILTER_STARTTLS */
	size_t			 tls_client;	/* client.len at FILTER_STARTTLS */
	const char		*close_why;	/* the call must end the session */

	struct fz_event		*ev;
	size_t			 nev, capev;
	const struct fz_model_ops *mops;
	void			*model;
};

static struct fz_run	*fz_cur;
static bool		 fz_verbose;

static inline void fz_dump(const struct fz_run *);

/* ------------------------------------------------------------------ */
/* Failing */

static void __attribute__((format(printf, 3, 4), noreturn))
fz_fail(const char *file, int line, const char *fmt, ...)
{
	va_list	 ap;

	fprintf(stderr, "\n*** INVARIANT VIOLATED (%s:%d): ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (fz_cur != NULL)
		fz_dump(fz_cur);
	abort();
}

#define FZ_FAIL(...)	fz_fail(__FILE__, __LINE__, __VA_ARGS__)
#define FZ_CHECK(cond, ...) do {					\
	if (!(cond))							\
		fz_fail(__FILE__, __LINE__, __VA_ARGS__);		\
} while (0)

/* ------------------------------------------------------------------ */
/* Tapes and the transcript */

static inline void
fz_grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t	 n = *cap ? *cap : 64;
	void	*q;

	if (need <= *cap)
		return;
	while (n < need)
		n *= 2;
	if ((q = realloc(*p, n * elem)) == NULL)
		abort();
	*p = q;
	*cap = n;
}

/* A zeroed allocation; running out of memory ends the run. */
static inline void *
fz_zalloc(size_t n)
{
	void	*p = calloc(1, n);

	if (p == NULL)
		abort();
	return p;
}

static inline void
fz_event_add(struct fz_run *r, char kind, size_t off, size_t len)
{
	fz_grow((void **)&r->ev, &r->capev, r->nev + 1, sizeof(*r->ev));
	r->ev[r->nev].kind = kind;
	r->ev[r->nev].off = off;
	r->ev[r->nev].len = len;
	r->nev++;
}

static inline void
fz_tape_add(struct fz_tape *t, const void *p, size_t n)
{
	fz_grow((void **)&t->b, &t->cap, t->len + n + 1, 1);
	memcpy(t->b + t->len, p, n);
	t->len += n;
}

/* Move everything the filter wrote into b onto the tape. */
static inline void
fz_tape_take(struct fz_run *r, struct fz_tape *t, struct evbuffer *b,
    char kind)
{
	size_t	 n = evbuffer_get_length(b);

	if (n == 0)
		return;
	fz_grow((void **)&t->b, &t->cap, t->len + n + 1, 1);
	if (evbuffer_remove(b, t->b + t->len, n) != (int)n)
		FZ_FAIL("evbuffer_remove failed");
	fz_event_add(r, kind, t->len, n);
	t->len += n;
}

static inline void
fz_print_bytes(const unsigned char *p, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r')
			fputs("\\r", stderr);
		else if (p[i] == '\n')
			fputs(i + 1 < n ? "\\n\n    " : "\\n", stderr);
		else if (p[i] == '\\')
			fputs("\\\\", stderr);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			fprintf(stderr, "\\x%02x", p[i]);
		else
			fputc(p[i], stderr);
	}
	fputc('\n', stderr);
}

static inline void
fz_dump(const struct fz_run *r)
{
	const struct fz_tape	*t;
	const char		*what;
	size_t			 i;

	fprintf(stderr, "--- service: %s, %s%s%s, line limit %zu, "
	    "bare newline %s\n", r->ops->name,
	    r->starttls_svc ? "starttls" : "implicit",
	    r->fp.tls_active ? " (TLS active)" : "",
	    r->svc.require_starttls ? " require_starttls" : "",
	    r->svc.max_line_length,
	    r->svc.smtp_bare_newline == BARE_NEWLINE_REJECT ? "reject" :
	    "normalize");
	for (i = 0; i < r->nev; i++) {
		const struct fz_event *e = &r->ev[i];

		switch (e->kind) {
		case 'c':
			t = &r->client, what = "client sends    ";
			break;
		case 'b':
			t = &r->backend, what = "backend sends   ";
			break;
		case 'B':
			t = &r->tob, what = "filter->backend ";
			break;
		case 'C':
			t = &r->toc, what = "filter->client  ";
			break;
		case 'S':
			fprintf(stderr, "=== FILTER_STARTTLS\n");
			continue;
		case 'X':
			fprintf(stderr, "=== FILTER_CLOSE (%s)\n",
			    filter_reason(r->f));
			continue;
		default:
			continue;
		}
		fprintf(stderr, "%s@%zu: ", what, e->off);
		fz_print_bytes(t->b + e->off, e->len);
	}
	fprintf(stderr, "--- unread: client %zu bytes, backend %zu bytes\n",
	    r->client.len - r->client_used,
	    r->backend.len - r->backend_used);
}

/* ------------------------------------------------------------------ */
/* Helpers for the models */

/*
 * What the filter just did is only acceptable as its last act (an extra
 * reply, an unsolicited or malformed response taken): the call that did
 * it must return FILTER_CLOSE.
 */
static inline void
fz_expect_close(struct fz_run *r, const char *why)
{
	if (r->close_why == NULL)
		r->close_why = why;
}

/* Was the byte at off of tob (toc) written before TLS started? */
static inline bool
fz_clear_b(const struct fz_run *r, size_t off)
{
	return r->cleartext_start && (!r->upgraded || off < r->tls_b);
}

static inline bool
fz_clear_c(const struct fz_run *r, size_t off)
{
	return r->cleartext_start && (!r->upgraded || off < r->tls_c);
}

/* Index of the first LF in t->b[from, to), or -1. */
static inline ssize_t
fz_find_lf(const struct fz_tape *t, size_t from, size_t to)
{
	const unsigned char *p;

	if (from >= to)
		return -1;
	p = memchr(t->b + from, '\n', to - from);
	return p == NULL ? -1 : (ssize_t)(p - t->b);
}

/* ASCII case-insensitive: is [s, s+n) exactly word? */
static inline bool
fz_word_eq(const unsigned char *s, size_t n, const char *word)
{
	size_t	 i;

	if (strlen(word) != n)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char a = s[i], b = (unsigned char)word[i];

		if (a >= 'a' && a <= 'z')
			a = (unsigned char)(a - 'a' + 'A');
		if (b >= 'a' && b <= 'z')
			b = (unsigned char)(b - 'a' + 'A');
		if (a != b)
			return false;
	}
	return true;
}

/* ASCII case-insensitive: does [s, s+n) start with prefix? */
static inline bool
fz_prefix_eq(const unsigned char *s, size_t n, const char *prefix)
{
	size_t	 k = strlen(prefix);

	return n >= k && fz_word_eq(s, k, prefix);
}

static inline bool
fz_tape_ends_with(const struct fz_tape *t, const char *s)
{
	size_t	 n = strlen(s);

	return t->len >= n && memcmp(t->b + t->len - n, s, n) == 0;
}

/* ------------------------------------------------------------------ */
/* The driver */

/* After every call filter_pump() makes: the checks of a single call. */
static void
fz_observe(void *arg, char who, enum filter_verdict v)
{
	struct fz_run	*r = arg;
	size_t		 cin0 = r->cin_last, bin0 = r->bin_last;

	FZ_CHECK(v == FILTER_CONTINUE || v == FILTER_STARTTLS ||
	    v == FILTER_CLOSE, "verdict %d", (int)v);
	/* Inputs only shrink, and only the side the call was given. */
	FZ_CHECK(evbuffer_get_length(r->cin) <= cin0 &&
	    evbuffer_get_length(r->bin) <= bin0, "filter grew its input");
	FZ_CHECK(who == 'C' || evbuffer_get_length(r->cin) == cin0,
	    "backend_input touched the client input");
	r->tob_before = r->tob.len;
	r->toc_before = r->toc.len;
	fz_tape_take(r, &r->tob, r->to_b, 'B');
	fz_tape_take(r, &r->toc, r->to_c, 'C');
	r->client_used = r->client.len - evbuffer_get_length(r->cin);
	r->backend_used = r->backend.len - evbuffer_get_length(r->bin);
	r->cin_last = evbuffer_get_length(r->cin);
	r->bin_last = evbuffer_get_length(r->bin);
	r->mops->advance(r, r->model);
	FZ_CHECK(r->close_why == NULL || v == FILTER_CLOSE ||
	    r->f->closing, "the session goes on after %s", r->close_why);
}

static inline void
fz_starttls(struct fz_run *r)
{
	fz_event_add(r, 'S', 0, 0);
	FZ_CHECK(r->cleartext_start && !r->upgraded,
	    "FILTER_STARTTLS on a session that is already in TLS");
	/* SPEC 8.1 and proto.h: nothing may follow the STARTTLS line. */
	FZ_CHECK(evbuffer_get_length(r->cin) == 0,
	    "FILTER_STARTTLS with %zu client bytes still buffered",
	    evbuffer_get_length(r->cin));
	r->upgraded = true;
	r->tls_b = r->tob.len;
	r->tls_c = r->toc.len;
	r->tls_client = r->client.len;
	r->mops->starttls(r, r->model);
}

/*
 * Run the filter the way session.c does (filter_pump, and after a
 * go-ahead the end of the handshake); false once the session is over.
 */
static inline bool
fz_pump(struct fz_run *r)
{
	enum filter_verdict	 v;
	int			 round;
	bool			 bh;

	for (round = 0; round < FZ_ROUNDS_MAX; round++) {
		r->cin_last = evbuffer_get_length(r->cin);
		r->bin_last = evbuffer_get_length(r->bin);
		v = filter_pump(r->f, r->cin, r->bin, r->to_c, r->to_b);
		FZ_CHECK(strcmp(filter_reason(r->f), "internal error") != 0,
		    "the filter keeps making progress without new input");
		if (v == FILTER_STARTTLS) {
			fz_starttls(r);
			/*
			 * The handshake completes: backend bytes still
			 * waiting now arrived inside the window (SPEC 8.2).
			 */
			bh = evbuffer_get_length(r->bin) != 0;
			v = filter_tls_established(r->f, r->bin, r->to_b);
			FZ_CHECK((v == FILTER_CLOSE) == bh,
			    "handshake window: %zu backend bytes, verdict %d",
			    r->bin_last, (int)v);
			if (v == FILTER_CLOSE) {
				fz_event_add(r, 'X', 0, 0);
				return false;
			}
			continue;
		}
		if (v == FILTER_CLOSE) {
			fz_event_add(r, 'X', 0, 0);
			return false;
		}
		return true;
	}
	FZ_FAIL("the filter keeps asking for STARTTLS");
}

/*
 * The session times out wherever the input left it (SPEC 10): the
 * filter closes, and when it writes its timeout reply that reply starts
 * a line of the client-bound stream (nothing relayed in part before it).
 */
static inline void
fz_timeout(struct fz_run *r)
{
	struct evbuffer	*t = evbuffer_new();
	bool		 wrote;

	if (t == NULL)
		abort();
	fz_tape_take(r, &r->toc, r->to_c, 'C');
	wrote = filter_timeout(r->f, t, "idle timeout");
	FZ_CHECK(r->f->closing, "no close after the timeout");
	FZ_CHECK(wrote == (evbuffer_get_length(t) > 0),
	    "timeout reply: said %d, wrote %zu bytes", (int)wrote,
	    evbuffer_get_length(t));
	FZ_CHECK(!wrote || r->toc.len == 0 || r->toc.b[r->toc.len - 1] == '\n',
	    "timeout reply in the middle of a line to the client");
	evbuffer_free(t);
}

static inline void
fz_params(struct fz_run *r, enum proto_id proto, const uint8_t *hdr)
{
	static char	 name[] = "fuzz", host[] = "mx.example.test";
	unsigned	 mode = hdr[0] & 3, lim = (hdr[0] >> 4) & 3;

	memset(&r->svc, 0, sizeof(r->svc));
	r->svc.name = name;
	r->svc.protocol = proto;
	r->svc.tls_mode = mode == 2 ? TLS_MODE_IMPLICIT : TLS_MODE_STARTTLS;
	r->svc.require_starttls = (hdr[0] & 4) != 0;
	r->svc.hostname = host;
	r->svc.max_line_length = lim == 1 ? 512 : lim == 2 ?
	    16 + (size_t)hdr[1] : proto_default_line_max(proto);
	r->svc.idle_timeout = proto_default_idle_timeout(proto);
	r->svc.smtp_bare_newline = (hdr[0] & 8) ? BARE_NEWLINE_REJECT :
	    BARE_NEWLINE_NORMALIZE;
	r->svc.max_connections_per_ip = DEFAULT_MAX_CONNECTIONS_PER_IP;

	memset(&r->fp, 0, sizeof(r->fp));
	r->fp.svc = &r->svc;
	r->fp.tls_active = mode == 1 || mode == 2;
	r->fp.session_id = "fuzz000000000000";
	r->fp.client_addr = "192.0.2.1";
	r->starttls_svc = r->svc.tls_mode == TLS_MODE_STARTTLS;
	r->cleartext_start = r->starttls_svc && !r->fp.tls_active;
}

static inline void
fz_free(struct fz_run *r)
{
	if (r->model != NULL)
		r->mops->done(r->model);
	if (r->f != NULL)
		filter_free(r->f);
	evbuffer_free(r->cin);
	evbuffer_free(r->bin);
	evbuffer_free(r->to_b);
	evbuffer_free(r->to_c);
	free(r->client.b);
	free(r->backend.b);
	free(r->tob.b);
	free(r->toc.b);
	free(r->ev);
	fz_cur = NULL;
}

static inline int
fz_run_input(const uint8_t *data, size_t size, enum proto_id proto,
    const struct proto_ops *ops, const struct fz_model_ops *mops)
{
	struct fz_run	 r;
	size_t		 pos = 2, n;
	bool		 alive = true, deferred = false;
	uint8_t		 h;

	if (size < 2)
		return 0;
	memset(&r, 0, sizeof(r));
	r.ops = ops;
	r.mops = mops;
	fz_params(&r, proto, data);
	r.cin = evbuffer_new();
	r.bin = evbuffer_new();
	r.to_b = evbuffer_new();
	r.to_c = evbuffer_new();
	if (!r.cin || !r.bin || !r.to_b || !r.to_c)
		abort();
	fz_cur = &r;
	r.f = filter_new(ops, &r.fp);
	FZ_CHECK(r.f != NULL, "filter_new failed");
	r.f->observe = fz_observe;
	r.f->observe_arg = &r;
	r.model = mops->init(&r);

	while (alive && pos < size) {
		h = data[pos++];
		if (h & 0x80) {
			if (size - pos < 2)
				break;
			n = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
			pos += 2;
		} else {
			if (size - pos < 1)
				break;
			n = data[pos++];
		}
		if (n > size - pos)
			n = size - pos;
		if (h & 1) {
			evbuffer_add(r.bin, data + pos, n);
			fz_event_add(&r, 'b', r.backend.len, n);
			fz_tape_add(&r.backend, data + pos, n);
		} else {
			evbuffer_add(r.cin, data + pos, n);
			fz_event_add(&r, 'c', r.client.len, n);
			fz_tape_add(&r.client, data + pos, n);
		}
		pos += n;
		if ((h & 2) && pos < size) {
			deferred = true;
			continue;
		}
		deferred = false;
		alive = fz_pump(&r);
	}
	if (alive && deferred)
		alive = fz_pump(&r);
	if (alive)
		fz_timeout(&r);
	if (fz_verbose)
		fz_dump(&r);
	fz_free(&r);
	return 0;
}

static inline void
fz_init(void)
{
	const char	*v = getenv("FUZZ_VERBOSE");

	fz_verbose = v != NULL && *v != '\0' && strcmp(v, "0") != 0;
	/* Filters log refusals at warning level: keep stderr quiet. */
	log_init(LOG_TARGET_STDERR, fz_verbose ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_ERROR, 0);
}

/*
 * The libFuzzer entry points of a harness: its filter and the model that
 * checks it.  Used once, at the end of each fuzz_<proto>.c.
 */
#define FZ_HARNESS(proto, ops, mops)					\
int	LLVMFuzzerInitialize(int *, char ***);				\
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);		\
									\
int									\
LLVMFuzzerInitialize(int *argc, char ***argv)				\
{									\
	(void)argc;							\
	(void)argv;							\
	fz_init();							\
	return 0;							\
}									\
									\
int									\
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)		\
{									\
	return fz_run_input(data, size, (proto), (ops), (mops));	\
}

#endif /* FUZZ_COMMON_H */
