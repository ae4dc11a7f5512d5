/*
 * fuzz_imap.c - libFuzzer harness for the IMAP filter (src/proto_imap.c).
 *
 * Input format and driver: fuzz_common.h.  Besides crashes, sanitizer
 * reports and leaks, it checks SPEC sections 3 and 8 with models of a
 * conforming server and client (RFC 9051 framing: lines, and {n}, {n+},
 * ~{n} literals announced at a line's end):
 *
 *  backend side: the bytes the filter sent to the backend, read as a
 *  server reads them, against the responses the filter took from the
 *  backend (a "+" continuation or the tagged completion decides whether a
 *  synchronizing literal follows; "+" starts IDLE).  Lines outside
 *  literals end in CRLF with no other CR, LF or NUL (8.4); nothing is
 *  forwarded after a synchronizing literal marker or IDLE before the
 *  backend's answer; in IDLE only "DONE" is sent; before TLS no LOGIN or
 *  AUTHENTICATE command (8.5), and only CAPABILITY, NOOP, LOGOUT and ID
 *  (the cleartext allow-list of SPEC section 3); never STARTTLS or
 *  COMPRESS; ID never carries an "x-" key (any case); command lines are
 *  canonical: outside quoted strings no control or 8-bit byte and no
 *  run of spaces (issue 8: HTAB or double SP could split them
 *  differently in a lenient backend), no ")" closing nothing, no list
 *  left open unless a literal follows, and "\" only where a flag
 *  starts (RFC 9051 flag-extension); at the go-ahead every forwarded
 *  command has its tagged completion and no response is half relayed
 *  (8.2).
 *
 *  client side: responses written to the client, framed the same way.  A
 *  capability list (greeting or tagged/untagged [CAPABILITY ...], or
 *  "* CAPABILITY") has no AUTH=, and STARTTLS and LOGINDISABLED exactly
 *  once, in cleartext; no STARTTLS inside TLS; no PREAUTH greeting in
 *  cleartext; the go-ahead ends the cleartext output at a response
 *  boundary (8.1, 8.2).
 *
 * The command verb is taken as the most tolerant server would: after the
 * tag and any run of SP or HTAB.  Inside TLS an AUTHENTICATE exchange, whose
 * lines are opaque, makes the backend model stop checking ("lost"), as
 * does any backend output the filter answers by closing.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

#define IM_TAG_MAX	64	/* the filter refuses longer tags */
#define IM_TAIL_MAX	32	/* how much of a long line's end counts */
#define GO_AHEAD	" OK Begin TLS negotiation now\r\n"

/* One framed line of a server's output. */
struct im_line {
	size_t		 off;
	size_t		 len;		/* without CR LF */
	bool		 first;		/* starts a response */
	bool		 last;		/* ends it (no literal follows) */
	bool		 longline;	/* over the line limit */
	int		 lit;		/* 1 literal follows, 0 no, -1 bad */
	uint64_t	 size;
};

/* Where a reader of a server's output stands. */
struct im_frame {
	size_t		 pos;
	bool		 mid;		/* inside a response, after a literal */
	uint64_t	 left;		/* literal bytes still to skip */
};

enum ib_mode {
	IB_CMD = 0,	/* the first line of a command */
	IB_CONT,	/* the line after a literal */
	IB_LIT,		/* literal bytes */
	IB_WAIT,	/* "+" or the completion decides */
	IB_IDLE,	/* only DONE may come */
	IB_LOST,
};

struct ib_cmd {
	unsigned char	 tag[IM_TAG_MAX];
	size_t		 taglen;
	bool		 done;
};

struct im_model {
	/* backend side: what the filter sent, and what the backend said */
	enum ib_mode	 mode;
	size_t		 rp;
	uint64_t	 left;
	bool		 wait_idle;	/* IB_WAIT for IDLE, else a literal */
	uint64_t	 wait_size;
	struct ib_cmd	*cmds;
	size_t		 ncmds, capcmds, open0;
	size_t		 cur;		/* the command being read */
	long		 depth;		/* its lists still open */
	struct im_frame	 bf;
	bool		 greeted;
	bool		 b_cont;	/* kind of the response being read */
	bool		 b_tagged;
	size_t		 b_tag, b_taglen;	/* in the backend tape */

	/* client side: what the filter wrote to the client */
	struct im_frame	 cf;
	bool		 c_lost;
	bool		 c_greeted;
};

static void	*im_init(struct fz_run *);
static void	 im_advance(struct fz_run *, void *);
static void	 im_starttls(struct fz_run *, void *);
static void	 im_done(void *);

static const struct fz_model_ops im_ops = {
	im_init, im_advance, im_starttls, im_done
};

/* ------------------------------------------------------------------ */
/* Framing */

/* A literal marker ending s: 1 (size set), 0 none, -1 not a number64. */
static int
im_lit_end(const unsigned char *s, size_t len, uint64_t *size)
{
	size_t		 i, d, ndig = 0;
	uint64_t	 v = 0;

	*size = 0;
	if (len < 3 || s[len - 1] != '}')
		return 0;
	i = len - 1;
	if (s[i - 1] == '+')
		i--;
	for (; i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9'; i--)
		ndig++;
	if (ndig == 0 || i == 0 || s[i - 1] != '{')
		return 0;
	for (d = i; d < i + ndig; d++) {
		if (v > (UINT64_MAX - (uint64_t)(s[d] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[d] - '0');
	}
	*size = v;
	return 1;
}

/* Is the marker ending [s, s+len) non-synchronizing ({n+})? */
static bool
im_lit_nonsync(const unsigned char *s, size_t len)
{
	return len >= 2 && s[len - 2] == '+';
}

static size_t
im_word(const unsigned char *s, size_t len)
{
	const unsigned char	*sp = memchr(s, ' ', len);

	return sp != NULL ? (size_t)(sp - s) : len;
}

/* A word as a lenient server splits it: at SP or HTAB. */
static size_t
im_word_lenient(const unsigned char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len && s[i] != ' ' && s[i] != '\t'; i++)
		;
	return i;
}

/*
 * The next unit of a server's output in t[fr->pos, avail): 1 and a line
 * in *l, 2 after skipping literal bytes, 0 when more is needed.  A line
 * over the limit is judged by its start (kind) and its last bytes (a
 * literal marker), as a streaming reader must.
 */
static int
im_frame_next(const struct fz_run *r, struct im_frame *fr,
    const struct fz_tape *t, size_t avail, struct im_line *l)
{
	size_t		 n, raw, from;
	ssize_t		 lf;

	if (fr->left > 0) {
		if (fr->pos >= avail)
			return 0;
		n = avail - fr->pos;
		if ((uint64_t)n > fr->left)
			n = (size_t)fr->left;
		fr->pos += n;
		fr->left -= n;
		return 2;
	}
	if ((lf = fz_find_lf(t, fr->pos, avail)) == -1)
		return 0;
	memset(l, 0, sizeof(*l));
	l->off = fr->pos;
	raw = (size_t)lf - fr->pos;
	l->len = raw > 0 && t->b[lf - 1] == '\r' ? raw - 1 : raw;
	l->first = !fr->mid;
	l->longline = l->len > r->svc.max_line_length;
	if (!l->longline)
		l->lit = im_lit_end(t->b + l->off, l->len, &l->size);
	else {
		from = raw > IM_TAIL_MAX ? (size_t)lf - IM_TAIL_MAX : l->off;
		n = (size_t)lf - from;
		if (n > 0 && t->b[lf - 1] == '\r')
			n--;
		l->lit = im_lit_end(t->b + from, n, &l->size);
	}
	fr->pos = (size_t)lf + 1;
	fr->mid = l->lit == 1;
	fr->left = l->lit == 1 ? l->size : 0;
	l->last = l->lit != 1;
	return 1;
}

/* OK, NO, BAD; untagged also PREAUTH and BYE. */
static bool
im_status_word(const unsigned char *s, size_t len, bool untagged)
{
	if (fz_word_eq(s, len, "OK") || fz_word_eq(s, len, "NO") ||
	    fz_word_eq(s, len, "BAD"))
		return true;
	return untagged && (fz_word_eq(s, len, "PREAUTH") ||
	    fz_word_eq(s, len, "BYE"));
}

/* ------------------------------------------------------------------ */
/* Backend side */

static void
im_backend_lost(struct im_model *m)
{
	m->mode = IB_LOST;
}

static bool
im_greeting_ok(const struct fz_run *r, const unsigned char *s,
    const struct im_line *l)
{
	size_t	 w;

	if (l->longline || l->lit != 0 || l->len < 2 ||
	    memcmp(s, "* ", 2) != 0)
		return false;
	w = im_word(s + 2, l->len - 2);
	if (fz_word_eq(s + 2, w, "PREAUTH"))
		return !r->cleartext_start;
	return fz_word_eq(s + 2, w, "OK") || fz_word_eq(s + 2, w, "BYE");
}

/* What kind of response starts with this line (RFC 9051 section 7). */
static void
im_classify(const struct fz_run *r, struct im_model *m,
    const struct im_line *l)
{
	const unsigned char	*s = r->backend.b + l->off;
	size_t			 n = l->len, t, w;

	m->b_cont = m->b_tagged = false;
	if (n > r->svc.max_line_length)
		n = r->svc.max_line_length;	/* all a streaming reader has */
	if (n > 0 && s[0] == '+') {
		m->b_cont = true;
		return;
	}
	t = im_word(s, n);
	if (t == n || t > IM_TAG_MAX || (t == 1 && s[0] == '*'))
		return;
	w = im_word(s + t + 1, n - t - 1);
	if (!im_status_word(s + t + 1, w, false))
		return;
	m->b_tagged = true;
	m->b_tag = l->off;
	m->b_taglen = t;
}

/* A whole response has been taken by the filter. */
static void
im_response_end(const struct fz_run *r, struct im_model *m)
{
	const unsigned char	*tag = r->backend.b + m->b_tag;
	size_t			 i;

	if (m->b_cont) {
		if (m->mode != IB_WAIT)
			return;
		if (m->wait_idle)
			m->mode = IB_IDLE;
		else {
			m->mode = IB_LIT;
			m->left = m->wait_size;
		}
		return;
	}
	if (!m->b_tagged)
		return;
	/* A server may complete commands in any order (RFC 9051 5.5). */
	for (i = m->open0; i < m->ncmds; i++) {
		if (m->cmds[i].done || m->cmds[i].taglen != m->b_taglen ||
		    memcmp(m->cmds[i].tag, tag, m->b_taglen) != 0)
			continue;
		m->cmds[i].done = true;
		if (i == m->cur && (m->mode == IB_WAIT || m->mode == IB_IDLE))
			m->mode = IB_CMD;	/* literal refused, IDLE over */
		break;
	}
	while (m->open0 < m->ncmds && m->cmds[m->open0].done)
		m->open0++;
}

static void
im_backend_responses(struct fz_run *r, struct im_model *m)
{
	struct im_line	 l;
	int		 k;

	while (m->mode != IB_LOST && (k = im_frame_next(r, &m->bf,
	    &r->backend, r->backend_used, &l)) != 0) {
		if (k == 2)
			continue;
		if (l.lit == -1) {
			im_backend_lost(m);
			fz_expect_close(r, "an unreadable literal marker");
			return;
		}
		if (!m->greeted) {
			if (!im_greeting_ok(r, r->backend.b + l.off, &l)) {
				im_backend_lost(m);
				fz_expect_close(r, "an unacceptable greeting");
				return;
			}
			m->greeted = true;
			continue;
		}
		if (l.first)
			im_classify(r, m, &l);
		if (l.last)
			im_response_end(r, m);
	}
}

/* ID parameters (RFC 2971) that only a proxy may set (SPEC section 3). */
static void
im_check_id(size_t off, const unsigned char *p, const unsigned char *end)
{
	static const char *const keys[] = { "x-", NULL };
	const char *const	*k;
	unsigned char		 tok[512];
	size_t			 tl;
	unsigned		 idx = 0;
	bool			 str;

	while (p < end && *p == ' ')
		p++;
	if (p == end || *p != '(')
		return;			/* NIL, or nothing we can read */
	for (p++;; idx++) {
		while (p < end && *p == ' ')
			p++;
		if (p == end || *p == ')' || *p == '{')
			return;
		tl = 0;
		str = *p == '"';
		if (str) {
			for (p++; p < end && *p != '"'; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				if (tl < sizeof(tok))
					tok[tl++] = *p;
			}
			if (p == end)
				return;
			p++;
		} else {
			/* An atom: a tolerant server takes it as a string. */
			for (; p < end && *p != ' ' && *p != ')' && *p != '(';
			    p++)
				if (tl < sizeof(tok))
					tok[tl++] = *p;
			if (tl == 0)
				return;
			if (fz_word_eq(tok, tl, "NIL"))
				continue;
		}
		if (idx % 2 != 0)
			continue;
		for (k = keys; *k != NULL; k++)
			FZ_CHECK(!fz_prefix_eq(tok, tl, *k),
			    "ID parameter %.*s forwarded to the backend (@%zu)",
			    (int)tl, tok, off);
	}
}

/* A canonical line of tob: CRLF, and no other CR, LF or NUL. */
static void
im_check_line(const struct fz_run *r, size_t off, size_t lf)
{
	const unsigned char	*b = r->tob.b;
	size_t			 i;

	FZ_CHECK(lf > off && b[lf - 1] == '\r',
	    "line to the backend without CRLF (@%zu)", off);
	for (i = off; i + 1 < lf; i++)
		FZ_CHECK(b[i] != '\r' && b[i] != '\0',
		    "CR or NUL inside a line to the backend (@%zu)", off);
}

/*
 * The part of a command line to the backend outside quoted strings holds
 * no control or 8-bit byte and no two spaces in a row (SPEC section 3).
 * Parentheses balance over the whole command (RFC 9051: a strict parser
 * stops at a ")" that closes nothing; m->depth runs across literals),
 * and a "\" outside a quoted string only starts a flag (\Seen): a
 * lenient parser may take it for an escape.
 */
static void
im_check_canonical(const struct fz_run *r, struct im_model *m, size_t off,
    size_t end)
{
	const unsigned char	*b = r->tob.b;
	size_t			 i;
	uint64_t		 size;
	bool			 q = false;

	for (i = off; i < end; i++) {
		if (q) {
			if (b[i] == '\\')
				i++;
			else if (b[i] == '"')
				q = false;
			continue;
		}
		if (b[i] == '"') {
			q = true;
			continue;
		}
		FZ_CHECK(b[i] >= 0x20 && b[i] < 0x7f,
		    "control or 8-bit byte 0x%02x in a command line (@%zu)",
		    b[i], i);
		FZ_CHECK(!(b[i] == ' ' && i > off && b[i - 1] == ' '),
		    "two spaces in a command line (@%zu)", i);
		if (b[i] == '(')
			m->depth++;
		else if (b[i] == ')') {
			m->depth--;
			FZ_CHECK(m->depth >= 0,
			    "\")\" closing no list in a command line (@%zu)",
			    i);
		} else if (b[i] == '\\')
			FZ_CHECK(i > off && (b[i - 1] == ' ' ||
			    b[i - 1] == '(') && i + 1 < end && b[i + 1] != ' ' &&
			    b[i + 1] != ')' && b[i + 1] != '\\',
			    "\"\\\" not starting a flag in a command line "
			    "(@%zu)", i);
	}
	FZ_CHECK(m->depth == 0 || im_lit_end(b + off, end - off, &size) == 1,
	    "list left open at the end of a command (@%zu)", off);
}

/* After a line of a command: a literal, a wait, or the command's end. */
static void
im_line_end(struct fz_run *r, struct im_model *m, size_t off, size_t end,
    bool idle)
{
	const unsigned char	*b = r->tob.b;
	uint64_t		 size;
	int			 lit = im_lit_end(b + off, end - off, &size);

	FZ_CHECK(lit != -1, "unreadable literal marker forwarded (@%zu)",
	    off);
	if (lit == 1 && im_lit_nonsync(b + off, end - off)) {
		m->mode = IB_LIT;
		m->left = size;
	} else if (lit == 1) {
		m->mode = IB_WAIT;
		m->wait_idle = false;
		m->wait_size = size;
	} else if (idle) {
		m->mode = IB_WAIT;
		m->wait_idle = true;
	} else
		m->mode = IB_CMD;
}

/* The first line of a command: tag SP verb [SP args]. */
static void
im_command(struct fz_run *r, struct im_model *m, size_t off, size_t end)
{
	const unsigned char	*b = r->tob.b, *v, *a;
	size_t			 t, i, vlen;
	bool			 clear = fz_clear_b(r, off), idle;

	t = im_word(b + off, end - off);
	if (t > IM_TAG_MAX) {
		im_backend_lost(m);
		return;
	}
	for (i = off + t; i < end && (b[i] == ' ' || b[i] == '\t'); i++)
		;
	v = b + i;
	vlen = im_word_lenient(v, end - i);
	for (i += vlen; i < end && (b[i] == ' ' || b[i] == '\t'); i++)
		;
	a = b + i;
	fz_grow((void **)&m->cmds, &m->capcmds, m->ncmds + 1,
	    sizeof(*m->cmds));
	memcpy(m->cmds[m->ncmds].tag, b + off, t);
	m->cmds[m->ncmds].taglen = t;
	m->cmds[m->ncmds].done = false;
	m->cur = m->ncmds++;

	FZ_CHECK(!(clear && (fz_word_eq(v, vlen, "LOGIN") ||
	    fz_word_eq(v, vlen, "AUTHENTICATE"))),
	    "%.*s forwarded in cleartext (@%zu)", (int)vlen, v, off);
	FZ_CHECK(!fz_word_eq(v, vlen, "STARTTLS") &&
	    !fz_word_eq(v, vlen, "COMPRESS"),
	    "%.*s forwarded to the backend (@%zu)", (int)vlen, v, off);
	FZ_CHECK(!clear || fz_word_eq(v, vlen, "CAPABILITY") ||
	    fz_word_eq(v, vlen, "NOOP") || fz_word_eq(v, vlen, "LOGOUT") ||
	    fz_word_eq(v, vlen, "ID"),
	    "%.*s forwarded in cleartext (@%zu)", (int)vlen, v, off);
	m->depth = 0;
	im_check_canonical(r, m, off, end);
	if (fz_word_eq(v, vlen, "ID"))
		im_check_id(off, a, b + end);
	if (fz_word_eq(v, vlen, "AUTHENTICATE")) {
		im_backend_lost(m);	/* opaque SASL lines follow */
		return;
	}
	idle = fz_word_eq(v, vlen, "IDLE") && a == b + end;
	im_line_end(r, m, off, end, idle);
}

static void
im_backend_requests(struct fz_run *r, struct im_model *m)
{
	const unsigned char	*b = r->tob.b;
	size_t			 n, off;
	ssize_t			 lf;

	for (;;) {
		switch (m->mode) {
		case IB_LIT:
			if (m->left > 0 && m->rp == r->tob.len)
				return;
			n = r->tob.len - m->rp;
			if ((uint64_t)n > m->left)
				n = (size_t)m->left;
			m->rp += n;
			if ((m->left -= n) == 0)
				m->mode = IB_CONT;
			continue;
		case IB_CMD:
		case IB_CONT:
		case IB_IDLE:
			if ((lf = fz_find_lf(&r->tob, m->rp, r->tob.len)) == -1)
				return;
			off = m->rp;
			m->rp = (size_t)lf + 1;
			im_check_line(r, off, (size_t)lf);
			if (m->mode == IB_IDLE) {
				FZ_CHECK((size_t)lf - off == 5 &&
				    memcmp(b + off, "DONE", 4) == 0,
				    "not DONE sent in IDLE (@%zu)", off);
				m->mode = IB_CMD;
			} else if (m->mode == IB_CONT) {
				im_check_canonical(r, m, off, (size_t)lf - 1);
				im_line_end(r, m, off, (size_t)lf - 1, false);
			}
			else
				im_command(r, m, off, (size_t)lf - 1);
			continue;
		case IB_WAIT:
			FZ_CHECK(m->rp == r->tob.len, "%zu bytes forwarded "
			    "before the backend's go-ahead (@%zu)",
			    r->tob.len - m->rp, m->rp);
			return;
		case IB_LOST:
			return;
		}
	}
}

/* ------------------------------------------------------------------ */
/* Client side */

/*
 * The capability list in a response's first line, as a client finds it:
 * "* CAPABILITY ..." or a status response whose text starts with
 * "[CAPABILITY ...]".  [*beg, *end) holds the list.
 */
static bool
im_capa_locate(const unsigned char *s, size_t len, size_t *beg, size_t *end)
{
	const unsigned char	*rb;
	size_t			 t, i, w;
	bool			 untagged;

	t = im_word(s, len);
	if (t == 0 || t == len)
		return false;
	untagged = t == 1 && s[0] == '*';
	i = t + 1;
	w = im_word(s + i, len - i);
	if (untagged && fz_word_eq(s + i, w, "CAPABILITY")) {
		*beg = i + w;
		*end = len;
		return true;
	}
	if (!im_status_word(s + i, w, untagged))
		return false;
	i += w;
	if (len - i < 12 || !fz_word_eq(s + i, 12, " [CAPABILITY"))
		return false;
	i += 12;
	if (i < len && s[i] != ' ' && s[i] != ']')
		return false;
	*beg = i;
	rb = memchr(s + i, ']', len - i);
	*end = rb != NULL ? (size_t)(rb - s) : len;
	return true;
}

static void
im_check_capa(const struct fz_run *r, const struct im_line *l)
{
	const unsigned char	*s = r->toc.b + l->off;
	size_t			 beg, end, i, w;
	unsigned		 n_tls = 0, n_dis = 0;
	bool			 clear = fz_clear_c(r, l->off);

	if (!im_capa_locate(s, l->len, &beg, &end))
		return;
	for (i = beg; i < end; i += w) {
		if (s[i] == ' ') {
			w = 1;
			continue;
		}
		for (w = 0; i + w < end && s[i + w] != ' '; w++)
			;
		FZ_CHECK(!(clear && fz_prefix_eq(s + i, w, "AUTH=")),
		    "%.*s advertised in cleartext (@%zu)", (int)w, s + i,
		    l->off);
		if (fz_word_eq(s + i, w, "STARTTLS"))
			n_tls++;
		else if (fz_word_eq(s + i, w, "LOGINDISABLED"))
			n_dis++;
	}
	if (clear) {
		FZ_CHECK(n_tls == 1 && n_dis == 1, "capabilities in cleartext "
		    "with STARTTLS x%u, LOGINDISABLED x%u (@%zu)", n_tls, n_dis,
		    l->off);
	} else
		FZ_CHECK(n_tls == 0, "STARTTLS advertised inside TLS (@%zu)",
		    l->off);
}

static void
im_client_responses(struct fz_run *r, struct im_model *m)
{
	struct im_line	 l;
	const unsigned char *s;
	int		 k;

	while (!m->c_lost && (k = im_frame_next(r, &m->cf, &r->toc,
	    r->toc.len, &l)) != 0) {
		if (k == 2)
			continue;
		if (l.lit == -1) {
			m->c_lost = true;
			fz_expect_close(r, "relaying an unreadable literal "
			    "marker");
			return;
		}
		s = r->toc.b + l.off;
		if (!m->c_greeted) {
			m->c_greeted = true;
			FZ_CHECK(!(fz_clear_c(r, l.off) && l.len >= 9 &&
			    fz_word_eq(s, 9, "* PREAUTH") &&
			    (l.len == 9 || s[9] == ' ')),
			    "PREAUTH greeting relayed in cleartext");
		}
		/*
		 * Continuation requests and lines ending in a literal marker
		 * are relayed untouched; long lines never hold a list.
		 */
		if (l.first && !l.longline && l.lit == 0 &&
		    !(l.len > 0 && s[0] == '+'))
			im_check_capa(r, &l);
	}
}

/* ------------------------------------------------------------------ */

static void *
im_init(struct fz_run *r)
{
	struct im_model	*m = fz_zalloc(sizeof(*m));

	(void)r;
	return m;
}

static void
im_advance(struct fz_run *r, void *p)
{
	struct im_model	*m = p;

	im_backend_responses(r, m);
	im_backend_requests(r, m);
	im_client_responses(r, m);
}

/* SPEC 8.1, 8.2 at the go-ahead. */
static void
im_starttls(struct fz_run *r, void *p)
{
	struct im_model	*m = p;

	FZ_CHECK(fz_tape_ends_with(&r->toc, GO_AHEAD),
	    "FILTER_STARTTLS without the go-ahead as the last response");
	if (!m->c_lost)
		FZ_CHECK(m->cf.pos == r->toc.len && !m->cf.mid &&
		    m->cf.left == 0, "go-ahead inside a response");
	if (m->mode != IB_LOST) {
		FZ_CHECK(m->mode == IB_CMD && m->rp == r->tob.len,
		    "go-ahead inside a forwarded command");
		FZ_CHECK(m->open0 == m->ncmds, "go-ahead while forwarded "
		    "commands are not completed");
		FZ_CHECK(m->bf.pos == r->backend_used && !m->bf.mid &&
		    m->bf.left == 0, "go-ahead inside a backend response");
	}
}

static void
im_done(void *p)
{
	static const char *const names[] = {
		"command", "continuation", "literal", "wait", "idle", "lost"
	};
	struct im_model	*m = p;

	if (fz_verbose)
		fprintf(stderr, "--- models: backend side %s (%zu of %zu "
		    "commands open), client side %s\n", names[m->mode],
		    m->ncmds - m->open0, m->ncmds,
		    m->c_lost ? "lost" : "ok");
	free(m->cmds);
	free(m);
}

FZ_HARNESS(PROTO_IMAP, &proto_imap_ops, &im_ops)
