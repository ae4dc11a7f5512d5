/*
 * fuzz_smtp.c - libFuzzer harness for the SMTP filter (src/proto_smtp.c).
 *
 * Input format and driver: fuzz_common.h.  Besides crashes, sanitizer
 * reports and leaks, it checks SPEC sections 3 and 8 with two models of a
 * conforming SMTP peer, each reading one conversation (requests and the
 * replies to them, matched in order, RFC 2920):
 *
 *  backend side (what the filter wrote to the backend, against the replies
 *  the filter consumed from it): command lines end in CRLF with no other
 *  CR, LF or NUL (8.4); DATA content has no bare CR or LF (the smuggling
 *  rule); nothing is forwarded after DATA, AUTH or a SASL response before
 *  the reply that decides how those bytes are framed; BDAT lines parse;
 *  no AUTH/X-EXPS before TLS (8.5); no XCLIENT, XFORWARD or STARTTLS ever;
 *  only EHLO/HELO/NOOP/RSET/QUIT before TLS under require_starttls and
 *  after STARTTLS until EHLO/HELO; at the go-ahead every earlier command
 *  has been answered (8.2).
 *
 *  client side (what the client sent, against what the filter wrote to
 *  it): an EHLO's 250 reply advertises STARTTLS exactly once and no AUTH
 *  in cleartext, no STARTTLS inside TLS, never XCLIENT/XFORWARD; at the
 *  go-ahead, every earlier command has had its reply and "220 2.0.0 Ready
 *  to start TLS" is the last one, answering STARTTLS, the last command
 *  (8.1, 8.2).
 *
 * Where the filter legitimately ends a session with an extra reply (421,
 * 550 after a refused message) the client model can lose its place; it
 * then stops checking rather than guess ("lost").
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

#define GO_AHEAD	"220 2.0.0 Ready to start TLS\r\n"
#define BDAT_SIZE_LIMIT	(UINT64_C(1) << 31)

enum sm_kind {
	K_GREETING = 0,
	K_EHLO,
	K_HELO,
	K_DATA,
	K_DATA_END,
	K_AUTH,		/* AUTH, X-EXPS or a SASL response */
	K_BDAT,
	K_STARTTLS,
	K_QUIT,
	K_OTHER,
};

enum sm_mode {
	M_CMD = 0,	/* command lines */
	M_WAIT,		/* the last request's reply decides what follows */
	M_SASL,		/* the next line is a SASL response */
	M_DATA,		/* message content up to CRLF.CRLF */
	M_BDAT,		/* bdat_left counted bytes */
	M_SKIP,		/* the rest of an over-long line, already answered */
	M_STOP,		/* after QUIT: nothing more is read */
	M_LOST,		/* out of step with the filter: no more checks */
};

struct sm_req {
	enum sm_kind	 kind;
	size_t		 off;
};

/* One conversation as a conforming peer reads it. */
struct sm_side {
	bool		 backend;	/* strict side: the filter's output */
	const char	*name;
	enum sm_mode	 mode;
	size_t		 rp;		/* requests read */
	size_t		 pp;		/* replies read */
	uint64_t	 bdat_left;
	unsigned	 dmatch;	/* bytes of CRLF.CRLF matched */
	unsigned char	 dprev;		/* previous content byte */

	struct sm_req	*q;		/* requests awaiting replies */
	size_t		 qhead, qlen, qcap;

	/* the reply being read */
	bool		 in_reply;
	int		 code;
	unsigned	 lines;
	size_t		 reply_off;
	unsigned	 n_starttls, n_auth, n_authority;

	/* the last complete reply */
	enum sm_kind	 last_kind;
	int		 last_code;
	size_t		 last_off;

	bool		 ehlo_since_tls;	/* backend: EHLO/HELO after TLS */
};

struct sm_model {
	struct sm_side	 b;
	struct sm_side	 c;
};

static void	*sm_init(struct fz_run *);
static void	 sm_advance(struct fz_run *, void *);
static void	 sm_starttls(struct fz_run *, void *);
static void	 sm_done(void *);

static const struct fz_model_ops sm_ops = {
	sm_init, sm_advance, sm_starttls, sm_done
};

/* ------------------------------------------------------------------ */

/* What a tolerant server splits words on. */
static bool
sm_blank(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

static void
sm_push(struct sm_side *s, enum sm_kind kind, size_t off)
{
	size_t	 i;

	if (s->qhead > 0 && s->qhead == s->qlen) {
		s->qhead = s->qlen = 0;
	} else if (s->qhead > 1024) {
		for (i = s->qhead; i < s->qlen; i++)
			s->q[i - s->qhead] = s->q[i];
		s->qlen -= s->qhead;
		s->qhead = 0;
	}
	fz_grow((void **)&s->q, &s->qcap, s->qlen + 1, sizeof(*s->q));
	s->q[s->qlen].kind = kind;
	s->q[s->qlen].off = off;
	s->qlen++;
}

static size_t
sm_pending(const struct sm_side *s)
{
	return s->qlen - s->qhead;
}

static const struct fz_tape *
sm_req_tape(const struct fz_run *r, const struct sm_side *s)
{
	return s->backend ? &r->tob : &r->client;
}

static const struct fz_tape *
sm_rep_tape(const struct fz_run *r, const struct sm_side *s)
{
	return s->backend ? &r->backend : &r->toc;
}

/* Replies the side may read: what the filter took, or what it wrote. */
static size_t
sm_rep_avail(const struct fz_run *r, const struct sm_side *s)
{
	return s->backend ? r->backend_used : r->toc.len;
}

static void
sm_lost(struct sm_side *s)
{
	s->mode = M_LOST;
}

/*
 * A reply out of step: the backend's makes the filter close, and the
 * only extra replies the filter writes itself are its last (421 after too
 * many errors, 550 for a refused message).
 */
static void
sm_lost_reply(struct fz_run *r, struct sm_side *s, const char *why)
{
	sm_lost(s);
	fz_expect_close(r, why);
}

/*
 * The only BDAT line that may be forwarded (SPEC 3): "BDAT" SP 1*DIGIT
 * [SP "LAST"], single SPs, size below 2^31.  p..end is the whole line.
 * 0 and *size, or -1.
 */
static int
sm_bdat_canonical(const unsigned char *p, const unsigned char *end,
    uint64_t *size)
{
	uint64_t	 n = 0;
	unsigned	 digits = 0;

	if (end - p < 6 || !fz_word_eq(p, 4, "BDAT") || p[4] != ' ')
		return -1;
	for (p += 5; p < end && *p >= '0' && *p <= '9'; p++, digits++)
		if ((n = n * 10 + (uint64_t)(*p - '0')) >= BDAT_SIZE_LIMIT)
			return -1;
	if (digits == 0 || (p < end && (end - p != 5 || *p != ' ' ||
	    !fz_word_eq(p + 1, 4, "LAST"))))
		return -1;
	*size = n;
	return 0;
}

/*
 * The size a tolerant server reads from any BDAT line (words split at any
 * blank): the chunk the filter skips after refusing the line.  -1: none,
 * the filter closes.
 */
static int
sm_bdat_lenient(const unsigned char *p, const unsigned char *end,
    uint64_t *size)
{
	uint64_t	 n = 0;
	unsigned	 digits = 0;

	while (p < end && sm_blank(*p))
		p++;
	while (p < end && !sm_blank(*p))
		p++;
	while (p < end && sm_blank(*p))
		p++;
	for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) {
		if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (digits == 0 || (p < end && !sm_blank(*p)))
		return -1;
	*size = n;
	return 0;
}

static bool
sm_verb_is(const unsigned char *v, size_t n, const char *const *list)
{
	for (; *list != NULL; list++)
		if (fz_word_eq(v, n, *list))
			return true;
	return false;
}

static const char *const sm_session_verbs[] = {
	"EHLO", "HELO", "NOOP", "RSET", "QUIT", NULL
};

/* Policy checks on a command line the filter sent to the backend. */
static void
sm_check_backend_cmd(struct fz_run *r, struct sm_side *s, size_t off,
    const unsigned char *v, size_t vlen)
{
	static const char *const never[] = {
		"STARTTLS", "XCLIENT", "XFORWARD", NULL
	};
	static const char *const creds[] = { "AUTH", "X-EXPS", NULL };
	/* SPEC 3: the cleartext allow-list (STARTTLS is never forwarded). */
	static const char *const allowed[] = {
		"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP",
		"QUIT", "VRFY", "EXPN", "HELP", "BDAT", "ETRN", NULL
	};
	bool	 clear = fz_clear_b(r, off);

	FZ_CHECK(!sm_verb_is(v, vlen, never),
	    "%.*s forwarded to the backend (@%zu)", (int)vlen, v, off);
	FZ_CHECK(!(clear && sm_verb_is(v, vlen, creds)),
	    "%.*s forwarded in cleartext (@%zu)", (int)vlen, v, off);
	FZ_CHECK(!clear || sm_verb_is(v, vlen, allowed),
	    "%.*s forwarded in cleartext, not an RFC 5321 verb (@%zu)",
	    (int)vlen, v, off);
	FZ_CHECK(!(clear && r->svc.require_starttls &&
	    !sm_verb_is(v, vlen, sm_session_verbs)),
	    "%.*s forwarded before STARTTLS under require_starttls (@%zu)",
	    (int)vlen, v, off);
	if (r->upgraded && off >= r->tls_b) {
		FZ_CHECK(s->ehlo_since_tls ||
		    sm_verb_is(v, vlen, sm_session_verbs),
		    "%.*s forwarded after STARTTLS before EHLO (@%zu)",
		    (int)vlen, v, off);
		if (fz_word_eq(v, vlen, "EHLO") || fz_word_eq(v, vlen, "HELO"))
			s->ehlo_since_tls = true;
	}
}

/*
 * SPEC 8.4: what the filter forwards is its canonical re-serialisation:
 * the verb in upper case, then nothing or one SP and arguments that
 * neither start nor end with SP and are joined by single SPs; no control
 * character anywhere.  A run of SPs is data only inside a Quoted-string
 * (RFC 5321 4.1.2, qtextSMTP includes SP), which opens a Local-part
 * (after "<" or ":") or a String (after SP) and must be closed.
 */
static void
sm_check_canonical(struct fz_run *r, size_t off, const unsigned char *b,
    size_t end)
{
	size_t	 i, v;
	bool	 quoted = false;

	for (i = off; i < end; i++)
		FZ_CHECK(b[i] >= 0x20 && b[i] != 0x7f, "control character in "
		    "a command line to the backend (@%zu)", off);
	for (v = off; v < end && b[v] != ' '; v++)
		FZ_CHECK(!(b[v] >= 'a' && b[v] <= 'z'), "verb not upper-cased "
		    "towards the backend (@%zu)", off);
	FZ_CHECK(v > off, "empty verb to the backend (@%zu)", off);
	if (v < end)
		FZ_CHECK(v + 1 < end && b[v + 1] != ' ' && b[end - 1] != ' ',
		    "blanks not canonical in a command line to the backend "
		    "(@%zu)", off);
	for (i = v; i < end; i++) {
		if (quoted && b[i] == '\\')
			i++;
		else if (b[i] == '"' && (quoted || b[i - 1] == ' ' ||
		    b[i - 1] == '<' || b[i - 1] == ':'))
			quoted = !quoted;
		else if (!quoted && b[i] == ' ')
			FZ_CHECK(b[i + 1] != ' ', "SP run outside a "
			    "Quoted-string to the backend (@%zu)", off);
	}
	FZ_CHECK(!quoted, "unclosed Quoted-string to the backend (@%zu)",
	    off);
}

/* One request line [off, lf] (lf: its LF) in command mode. */
static void
sm_command_line(struct fz_run *r, struct sm_side *s, size_t off, size_t lf)
{
	const unsigned char	*b = sm_req_tape(r, s)->b;
	size_t			 end = lf, i;
	bool			 bad = false;
	const unsigned char	*v;
	size_t			 vlen;
	uint64_t		 size = 0;

	if (end > off && b[end - 1] == '\r')
		end--;
	else
		bad = true;
	/* SPEC 8.4: a leading blank or any control character is refused. */
	for (i = off; i < end; i++)
		if (b[i] < 0x20 || b[i] == 0x7f)
			bad = true;
	if (end == off || b[off] == ' ')
		bad = true;
	if (s->backend) {
		FZ_CHECK(!bad, "non-canonical command line to the backend "
		    "(@%zu)", off);
		sm_check_canonical(r, off, b, end);
	} else if (end - off > r->svc.max_line_length) {
		sm_push(s, K_OTHER, off);	/* "Line too long" */
		return;
	}
	for (i = off; i < end && sm_blank(b[i]); i++)
		;
	v = b + i;
	while (i < end && !sm_blank(b[i]))
		i++;
	vlen = (size_t)(b + i - v);
	if (fz_word_eq(v, vlen, "BDAT")) {
		if (s->backend)
			/* Our own digits: no leading zero but in "0". */
			FZ_CHECK(sm_bdat_canonical(b + off, b + end, &size) ==
			    0 && (b[off + 5] != '0' || (size == 0 &&
			    (off + 6 == end || b[off + 6] == ' '))),
			    "non-canonical BDAT forwarded (@%zu)", off);
		else if ((bad || sm_bdat_canonical(b + off, b + end,
		    &size) == -1) &&
		    sm_bdat_lenient(b + off, b + end, &size) == -1) {
			sm_lost(s);	/* no size: the filter closes */
			return;
		}
		/* Forwarded or refused, the chunk follows by count. */
		sm_push(s, K_BDAT, off);
		if (size > 0) {
			s->bdat_left = size;
			s->mode = M_BDAT;
		}
		return;
	}
	if (bad || vlen == 0) {
		/* The filter answers it itself: no framing effect. */
		sm_push(s, K_OTHER, off);
		return;
	}
	if (s->backend)
		sm_check_backend_cmd(r, s, off, v, vlen);
	if (fz_word_eq(v, vlen, "DATA")) {
		sm_push(s, K_DATA, off);
		s->mode = M_WAIT;
	} else if (fz_word_eq(v, vlen, "AUTH") ||
	    fz_word_eq(v, vlen, "X-EXPS")) {
		sm_push(s, K_AUTH, off);
		s->mode = M_WAIT;
	} else if (fz_word_eq(v, vlen, "EHLO"))
		sm_push(s, K_EHLO, off);
	else if (fz_word_eq(v, vlen, "HELO"))
		sm_push(s, K_HELO, off);
	else if (fz_word_eq(v, vlen, "STARTTLS"))
		sm_push(s, K_STARTTLS, off);
	else if (fz_word_eq(v, vlen, "QUIT")) {
		sm_push(s, K_QUIT, off);
		s->mode = M_STOP;
	} else
		sm_push(s, K_OTHER, off);
}

static void
sm_sasl_line(struct fz_run *r, struct sm_side *s, size_t off, size_t lf)
{
	const unsigned char	*b = sm_req_tape(r, s)->b;
	size_t			 i;

	if (s->backend) {
		FZ_CHECK(lf > off && b[lf - 1] == '\r',
		    "SASL response to the backend without CRLF (@%zu)", off);
		for (i = off; i + 1 < lf; i++)
			FZ_CHECK(b[i] != '\r' && b[i] != '\0',
			    "CR/NUL in a SASL response to the backend (@%zu)",
			    off);
	}
	sm_push(s, K_AUTH, off);
	s->mode = M_WAIT;
}

/*
 * Message content up to CRLF "." CRLF (the DATA line's CRLF counts).  On
 * the backend side it must hold no bare CR and no bare LF: that is what
 * makes our end of DATA the only one the backend can find.
 */
static void
sm_data(struct fz_run *r, struct sm_side *s, size_t avail)
{
	static const char	 end[] = "\r\n.\r\n";
	const unsigned char	*b = sm_req_tape(r, s)->b;
	unsigned char		 c;

	while (s->rp < avail && s->mode == M_DATA) {
		c = b[s->rp];
		if (s->backend) {
			FZ_CHECK(!(c == '\n' && s->dprev != '\r'),
			    "bare LF in DATA content to the backend (@%zu)",
			    s->rp);
			FZ_CHECK(!(s->dprev == '\r' && c != '\n'),
			    "bare CR in DATA content to the backend (@%zu)",
			    s->rp - 1);
		}
		s->dprev = c;
		if (c == (unsigned char)end[s->dmatch])
			s->dmatch++;
		else
			s->dmatch = c == '\r' ? 1 : 0;
		s->rp++;
		if (s->dmatch == 5) {
			sm_push(s, K_DATA_END, s->rp - 3);
			s->mode = M_CMD;
		}
	}
}

/* Read requests as far as the replies so far allow. */
static bool
sm_requests(struct fz_run *r, struct sm_side *s)
{
	const struct fz_tape	*t = sm_req_tape(r, s);
	size_t			 start = s->rp, n;
	ssize_t			 lf;

	for (;;) {
		switch (s->mode) {
		case M_CMD:
		case M_SASL:
			if ((lf = fz_find_lf(t, s->rp, t->len)) == -1) {
				/*
				 * lineio refuses a command line as soon as
				 * it is longer than the limit, LF or not.
				 */
				if (!s->backend && s->mode == M_CMD &&
				    t->len - s->rp > r->svc.max_line_length + 1) {
					sm_push(s, K_OTHER, s->rp);
					s->mode = M_SKIP;
					continue;
				}
				return s->rp != start;
			}
			n = s->rp;
			s->rp = (size_t)lf + 1;
			if (s->mode == M_CMD)
				sm_command_line(r, s, n, (size_t)lf);
			else
				sm_sasl_line(r, s, n, (size_t)lf);
			break;
		case M_DATA:
			if (s->rp == t->len)
				return s->rp != start;
			sm_data(r, s, t->len);
			break;
		case M_SKIP:
			if ((lf = fz_find_lf(t, s->rp, t->len)) == -1) {
				s->rp = t->len;
				return s->rp != start;
			}
			s->rp = (size_t)lf + 1;
			s->mode = M_CMD;
			break;
		case M_BDAT:
			if (s->rp == t->len)
				return s->rp != start;
			n = t->len - s->rp;
			if ((uint64_t)n > s->bdat_left)
				n = (size_t)s->bdat_left;
			s->rp += n;
			if ((s->bdat_left -= n) == 0)
				s->mode = M_CMD;
			break;
		default:
			return s->rp != start;
		}
	}
}

/* What a complete reply means for the framing of what follows. */
static void
sm_reply_effect(struct fz_run *r, struct sm_side *s, enum sm_kind kind,
    bool last)
{
	if ((s->code == 354 && kind != K_DATA) ||
	    (s->code == 334 && kind != K_AUTH)) {
		sm_lost_reply(r, s, "an intermediate reply out of place");
		return;
	}
	/*
	 * A QUIT that was refused (the filter's 501 to "QUIT args", or a
	 * backend's error) did not end the session: read on.
	 */
	if (kind == K_QUIT && s->mode == M_STOP && s->code != 221 && last) {
		s->mode = M_CMD;
		return;
	}
	if (s->mode != M_WAIT || !last)
		return;
	if (kind == K_DATA && s->code == 354) {
		s->mode = M_DATA;
		s->dmatch = 2;		/* the DATA line's CRLF */
		s->dprev = '\n';
	} else if (kind == K_AUTH && s->code == 334)
		s->mode = M_SASL;
	else
		s->mode = M_CMD;
}

/*
 * Keyword of an EHLO line as the most tolerant client reads it: after any
 * blanks, up to SP, HTAB (SPEC 3) or "=" (old AUTH=).
 */
static void
sm_ehlo_keyword(struct sm_side *s, const unsigned char *p, size_t n)
{
	size_t	 k;

	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	for (k = 0; k < n && p[k] != ' ' && p[k] != '\t' && p[k] != '='; k++)
		;
	if (fz_word_eq(p, k, "STARTTLS"))
		s->n_starttls++;
	else if (fz_word_eq(p, k, "AUTH") || fz_word_eq(p, k, "X-EXPS"))
		s->n_auth++;
	else if (fz_word_eq(p, k, "XCLIENT") || fz_word_eq(p, k, "XFORWARD"))
		s->n_authority++;
}

static void
sm_check_ehlo(struct fz_run *r, struct sm_side *s)
{
	bool	 clear = fz_clear_c(r, s->reply_off);

	FZ_CHECK(s->n_authority == 0,
	    "EHLO reply advertises XCLIENT/XFORWARD (@%zu)", s->reply_off);
	if (clear) {
		FZ_CHECK(s->n_auth == 0,
		    "EHLO reply advertises AUTH in cleartext (@%zu)",
		    s->reply_off);
		FZ_CHECK(s->n_starttls == 1, "EHLO reply in cleartext "
		    "advertises STARTTLS %u times (@%zu)", s->n_starttls,
		    s->reply_off);
	} else
		FZ_CHECK(s->n_starttls == 0, "EHLO reply inside TLS "
		    "advertises STARTTLS (@%zu)", s->reply_off);
}

static void
sm_reply_line(struct fz_run *r, struct sm_side *s, size_t off, size_t lf)
{
	const unsigned char	*b = sm_rep_tape(r, s)->b;
	size_t			 end = lf;
	struct sm_req		*head;
	int			 code;
	bool			 final, last;

	if (end > off && b[end - 1] == '\r')
		end--;
	if (end - off < 3 || b[off] < '0' || b[off] > '9' ||
	    b[off + 1] < '0' || b[off + 1] > '9' || b[off + 2] < '0' ||
	    b[off + 2] > '9' || (end - off > 3 && b[off + 3] != ' ' &&
	    b[off + 3] != '-')) {
		sm_lost_reply(r, s, "a malformed reply");
		return;
	}
	code = (b[off] - '0') * 100 + (b[off + 1] - '0') * 10 +
	    (b[off + 2] - '0');
	final = end - off == 3 || b[off + 3] == ' ';
	head = &s->q[s->qhead];
	if (!s->in_reply) {
		s->in_reply = true;
		s->code = code;
		s->lines = 0;
		s->reply_off = off;
		s->n_starttls = s->n_auth = s->n_authority = 0;
	} else if (code != s->code) {
		sm_lost_reply(r, s, "a reply code change inside a reply");
		return;
	}
	/* The first line of an EHLO reply names the server. */
	if (!s->backend && head->kind == K_EHLO && code == 250 &&
	    s->lines++ > 0 && end - off > 4)
		sm_ehlo_keyword(s, b + off + 4, end - off - 4);
	if (!final)
		return;
	s->in_reply = false;
	if (!s->backend && head->kind == K_EHLO && code == 250)
		sm_check_ehlo(r, s);
	s->last_kind = head->kind;
	s->last_code = code;
	s->last_off = s->reply_off;
	s->qhead++;
	last = sm_pending(s) == 0;
	sm_reply_effect(r, s, s->last_kind, last);
}

static bool
sm_replies(struct fz_run *r, struct sm_side *s)
{
	const struct fz_tape	*t = sm_rep_tape(r, s);
	size_t			 avail = sm_rep_avail(r, s), start = s->pp, n;
	ssize_t			 lf;

	/* With nothing pending, the next request may be what it answers. */
	while (s->mode != M_LOST && sm_pending(s) > 0 &&
	    (lf = fz_find_lf(t, s->pp, avail)) != -1) {
		n = s->pp;
		s->pp = (size_t)lf + 1;
		sm_reply_line(r, s, n, (size_t)lf);
	}
	return s->pp != start;
}

static void
sm_side_advance(struct fz_run *r, struct sm_side *s)
{
	bool	 more;

	do {
		if (s->mode == M_LOST)
			return;
		more = sm_requests(r, s);
		if (s->mode == M_LOST)
			return;
		more = sm_replies(r, s) || more;
	} while (more);
	if (sm_pending(s) == 0 && fz_find_lf(sm_rep_tape(r, s), s->pp,
	    sm_rep_avail(r, s)) != -1) {
		sm_lost_reply(r, s, "a reply to no command");
		return;
	}
	/* The filter holds the client while a reply decides the framing. */
	if (s->backend && s->mode == M_WAIT)
		FZ_CHECK(s->rp == r->tob.len, "%zu bytes forwarded before "
		    "the reply that decides how they are framed (@%zu)",
		    r->tob.len - s->rp, s->rp);
}

/* ------------------------------------------------------------------ */

static void *
sm_init(struct fz_run *r)
{
	struct sm_model	*m = fz_zalloc(sizeof(*m));

	(void)r;
	m->b.backend = true;
	m->b.name = "backend";
	m->c.name = "client";
	/* The greeting answers the connection itself. */
	sm_push(&m->b, K_GREETING, 0);
	sm_push(&m->c, K_GREETING, 0);
	m->b.last_kind = m->c.last_kind = K_OTHER;
	return m;
}

static void
sm_advance(struct fz_run *r, void *p)
{
	struct sm_model	*m = p;

	sm_side_advance(r, &m->b);
	sm_side_advance(r, &m->c);
}

/* SPEC 8.1 and 8.2 at the go-ahead. */
static void
sm_starttls(struct fz_run *r, void *p)
{
	struct sm_model	*m = p;
	struct sm_side	*c = &m->c, *b = &m->b;
	size_t		 i;

	FZ_CHECK(fz_tape_ends_with(&r->toc, GO_AHEAD),
	    "FILTER_STARTTLS without the go-ahead as the last reply");
	if (c->mode != M_LOST) {
		FZ_CHECK(c->mode == M_CMD && c->rp == r->client.len &&
		    sm_pending(c) == 0 && !c->in_reply &&
		    c->pp == r->toc.len, "go-ahead while client commands "
		    "are unanswered or unread");
		FZ_CHECK(c->last_kind == K_STARTTLS && c->last_code == 220 &&
		    c->last_off == r->toc.len - strlen(GO_AHEAD),
		    "the go-ahead does not answer the STARTTLS command");
	}
	if (b->mode != M_LOST) {
		FZ_CHECK(!b->in_reply, "go-ahead in the middle of a backend "
		    "reply");
		for (i = b->qhead; i < b->qlen; i++)
			FZ_CHECK(b->q[i].off >= r->tob_before,
			    "go-ahead while the backend still owes the reply "
			    "to the request @%zu", b->q[i].off);
	}
}

static void
sm_done(void *p)
{
	static const char *const names[] = {
		"command", "wait", "sasl", "data", "bdat", "skip", "stop",
		"lost"
	};
	struct sm_model	*m = p;

	if (fz_verbose)
		fprintf(stderr, "--- models: backend side %s, client side "
		    "%s\n", names[m->b.mode], names[m->c.mode]);

	free(m->b.q);
	free(m->c.q);
	free(m);
}

FZ_HARNESS(PROTO_SMTP, &proto_smtp_ops, &sm_ops)
