/*
 * fuzz_pop3.c - libFuzzer harness for the POP3 filter (src/proto_pop3.c).
 *
 * Input format and driver: fuzz_common.h.  Besides crashes, sanitizer
 * reports and leaks, it checks SPEC sections 3 and 8:
 *
 *  to the backend: every line ends in CRLF, with no other control
 *  character (8.4: command lines and SASL responses alike, HTAB
 *  included) and is canonical: no blank before the keyword, no empty
 *  argument (a double or trailing SP), PASS included (its argument is
 *  the rest of the line, forwarded only when no reading of its blanks
 *  differs); before TLS every line is a command (no SASL can
 *  run) with an upper-case keyword, and only CAPA or QUIT (SPEC section
 *  3: the cleartext allow-list; so never USER, PASS, APOP, AUTH (8.5),
 *  XCLIENT or STLS).
 *
 *  to the client, read by a model of a conforming client that matches
 *  replies to its commands in order (RFC 1939; multi-line after +OK to
 *  CAPA, RETR, TOP and LIST/UIDL/LANG/AUTH without argument): a CAPA
 *  reply lists STLS exactly once and neither USER nor SASL in cleartext
 *  (its first word, after any SP/HTAB, up to SP or HTAB, any case),
 *  no STLS inside TLS, never XCLIENT; at the go-ahead every earlier
 *  command has had its reply and "+OK Begin TLS negotiation" answers STLS,
 *  the last command (8.1, 8.2).  A SASL exchange (AUTH with a mechanism,
 *  inside TLS) or an extra reply at the end of a session makes the model
 *  stop checking ("lost") rather than guess.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

#define GO_AHEAD	"+OK Begin TLS negotiation\r\n"

enum pm_kind {
	P_GREETING = 0,
	P_SINGLE,
	P_MULTI,
	P_CAPA,
	P_SASL,		/* AUTH with a mechanism */
	P_STLS,
};

enum pm_mode {
	PM_RUN = 0,
	PM_STOP,	/* after QUIT: the filter reads nothing more */
	PM_LOST,
};

struct pm_model {
	/* client side */
	enum pm_mode	 mode;
	size_t		 rp;		/* client bytes read */
	size_t		 pp;		/* to_client bytes read */
	enum pm_kind	*q;
	size_t		 qhead, qlen, qcap;
	bool		 skipping;	/* the rest of an over-long line */
	bool		 in_body;	/* multi-line reply being read */
	bool		 body_capa;
	bool		 prev_crlf;	/* the last line ended in CRLF */
	size_t		 reply_off;
	unsigned	 n_stls, n_cred, n_xclient;
	enum pm_kind	 last_kind;
	size_t		 last_off;

	/* backend side */
	size_t		 bp;		/* tob bytes checked */
	size_t		 bline;		/* start of the current tob line */
};

static void	*pm_init(struct fz_run *);
static void	 pm_advance(struct fz_run *, void *);
static void	 pm_starttls(struct fz_run *, void *);
static void	 pm_done(void *);

static const struct fz_model_ops pm_ops = {
	pm_init, pm_advance, pm_starttls, pm_done
};

/* ------------------------------------------------------------------ */
/* To the backend */

/*
 * A complete line [off, lf) of tob (CRLF checked): canonical, whether a
 * command or a SASL response (base64 has no SP at all).  PASS too: a
 * password with a blank at either end or a run of blanks is read
 * differently by different servers (RFC 1939 section 7), so it must never
 * reach the backend (SPEC 8.4).
 */
static void
pm_backend_any_line(struct fz_run *r, size_t off, size_t lf)
{
	const unsigned char	*b = r->tob.b;
	size_t			 end = lf - 1, k;

	for (k = off; k < end; k++)
		FZ_CHECK(b[k] >= 0x20 && b[k] != 0x7f,
		    "control character to the backend (@%zu)", k);
	/* Empty: a SASL response (RFC 4954 4). */
	if (end == off)
		return;
	FZ_CHECK(b[off] != ' ' && b[end - 1] != ' ',
	    "blank at either end of a line to the backend (@%zu)", off);
	for (k = off + 1; k < end; k++)
		FZ_CHECK(b[k] != ' ' || b[k - 1] != ' ',
		    "double SP to the backend (@%zu)", k);
}

/* A complete line [off, lf) of tob, before TLS. */
static void
pm_backend_clear_line(struct fz_run *r, size_t off, size_t lf)
{
	const unsigned char	*b = r->tob.b;
	size_t			 end = lf - 1, v;	/* CRLF checked */

	for (v = off; v < end && b[v] != ' '; v++)
		FZ_CHECK((b[v] >= 'A' && b[v] <= 'Z') ||
		    (b[v] >= '0' && b[v] <= '9'),
		    "non-canonical keyword to the backend (@%zu)", off);
	FZ_CHECK(v > off, "empty keyword to the backend (@%zu)", off);
	FZ_CHECK(fz_word_eq(b + off, v - off, "CAPA") ||
	    fz_word_eq(b + off, v - off, "QUIT"),
	    "%.*s forwarded in cleartext (@%zu)", (int)(v - off),
	    (const char *)b + off, off);
}

static void
pm_backend(struct fz_run *r, struct pm_model *m)
{
	const unsigned char	*b = r->tob.b;

	for (; m->bp < r->tob.len; m->bp++) {
		FZ_CHECK(b[m->bp] != '\0', "NUL to the backend (@%zu)", m->bp);
		if (b[m->bp] == '\r')
			FZ_CHECK(m->bp + 1 >= r->tob.len ||
			    b[m->bp + 1] == '\n',
			    "bare CR to the backend (@%zu)", m->bp);
		if (b[m->bp] != '\n')
			continue;
		FZ_CHECK(m->bp > m->bline && b[m->bp - 1] == '\r',
		    "bare LF to the backend (@%zu)", m->bp);
		pm_backend_any_line(r, m->bline, m->bp);
		if (fz_clear_b(r, m->bline))
			pm_backend_clear_line(r, m->bline, m->bp);
		m->bline = m->bp + 1;
	}
	/* A CR at the very end is judged when its next byte comes. */
	if (m->bp > 0 && b[m->bp - 1] == '\r')
		m->bp--;
}

/* ------------------------------------------------------------------ */
/* To the client */

static void
pm_push(struct pm_model *m, enum pm_kind k)
{
	fz_grow((void **)&m->q, &m->qcap, m->qlen + 1, sizeof(*m->q));
	m->q[m->qlen++] = k;
}

/*
 * What reply framing a client command line [off, lf] calls for.  Only a
 * +OK is ever multi-line, and every line the filter refuses gets -ERR, so
 * the keyword alone decides; QUIT stops the filter reading only when it
 * is forwarded, i.e. when the line is well-formed.
 */
static void
pm_request(struct fz_run *r, struct pm_model *m, size_t off, size_t lf)
{
	const unsigned char	*b = r->client.b;
	size_t			 end = lf, v, a;
	bool			 args, bad = false;

	if (end > off && b[end - 1] == '\r')
		end--;
	else
		bad = true;
	/* Any control character makes the filter refuse the line. */
	for (v = off; v < end; v++)
		if (b[v] < 0x20 || b[v] == 0x7f)
			bad = true;
	if (end - off > r->svc.max_line_length)
		bad = true;
	for (v = off; v < end && b[v] != ' '; v++)
		;
	for (a = v; a < end && b[a] == ' '; a++)
		;
	args = a < end;
	if (fz_word_eq(b + off, v - off, "CAPA"))
		pm_push(m, args ? P_SINGLE : P_CAPA);
	else if (fz_word_eq(b + off, v - off, "RETR") ||
	    fz_word_eq(b + off, v - off, "TOP"))
		pm_push(m, P_MULTI);
	else if (fz_word_eq(b + off, v - off, "LIST") ||
	    fz_word_eq(b + off, v - off, "UIDL") ||
	    fz_word_eq(b + off, v - off, "LANG"))
		pm_push(m, args ? P_SINGLE : P_MULTI);
	else if (fz_word_eq(b + off, v - off, "AUTH"))
		pm_push(m, args ? P_SASL : P_MULTI);
	else if (fz_word_eq(b + off, v - off, "STLS"))
		pm_push(m, P_STLS);
	else {
		pm_push(m, P_SINGLE);
		if (!bad && fz_word_eq(b + off, v - off, "QUIT"))
			m->mode = PM_STOP;
	}
}

static void
pm_requests(struct fz_run *r, struct pm_model *m)
{
	ssize_t	 lf;

	while (m->mode == PM_RUN) {
		lf = fz_find_lf(&r->client, m->rp, r->client.len);
		if (m->skipping) {
			m->rp = lf == -1 ? r->client.len : (size_t)lf + 1;
			if (lf == -1)
				return;
			m->skipping = false;
			continue;
		}
		if (lf == -1) {
			/* lineio refuses a line once it is over the limit. */
			if (r->client.len - m->rp <= r->svc.max_line_length + 1)
				return;
			pm_push(m, P_SINGLE);
			m->skipping = true;
			continue;
		}
		pm_request(r, m, m->rp, (size_t)lf);
		m->rp = (size_t)lf + 1;
	}
}

static void
pm_capa_check(struct fz_run *r, struct pm_model *m)
{
	FZ_CHECK(m->n_xclient == 0, "CAPA lists XCLIENT (@%zu)", m->reply_off);
	if (fz_clear_c(r, m->reply_off)) {
		FZ_CHECK(m->n_cred == 0, "CAPA lists USER/SASL in cleartext "
		    "(@%zu)", m->reply_off);
		FZ_CHECK(m->n_stls == 1, "CAPA in cleartext lists STLS %u "
		    "times (@%zu)", m->n_stls, m->reply_off);
	} else
		FZ_CHECK(m->n_stls == 0, "CAPA inside TLS lists STLS (@%zu)",
		    m->reply_off);
}

/* One line of a multi-line body [off, end) (end: before CR LF). */
static void
pm_body_line(struct fz_run *r, struct pm_model *m, size_t off, size_t end,
    bool crlf)
{
	const unsigned char	*b = r->toc.b;
	size_t			 k;

	if (end - off == 1 && b[off] == '.' && crlf && m->prev_crlf) {
		if (m->body_capa)
			pm_capa_check(r, m);
		m->in_body = false;
		m->last_off = m->reply_off;
		m->qhead++;
		return;
	}
	m->prev_crlf = crlf;
	if (!m->body_capa)
		return;
	/* A lenient client: the first word, blanks being SP or HTAB. */
	while (off < end && (b[off] == ' ' || b[off] == '\t'))
		off++;
	for (k = off; k < end && b[k] != ' ' && b[k] != '\t'; k++)
		;
	if (fz_word_eq(b + off, k - off, "STLS"))
		m->n_stls++;
	else if (fz_word_eq(b + off, k - off, "USER") ||
	    fz_word_eq(b + off, k - off, "SASL"))
		m->n_cred++;
	else if (fz_word_eq(b + off, k - off, "XCLIENT"))
		m->n_xclient++;
}

/* A status line [off, end) of to_client. */
static void
pm_status_line(struct fz_run *r, struct pm_model *m, size_t off, size_t end,
    bool crlf)
{
	const unsigned char	*b = r->toc.b;
	enum pm_kind		 k;
	bool			 ok;

	if (m->qhead == m->qlen) {
		/* A backend's -ERR out of turn, passed on as a farewell. */
		m->mode = PM_LOST;
		fz_expect_close(r, "a reply to no command");
		return;
	}
	k = m->q[m->qhead];
	ok = end - off >= 3 && memcmp(b + off, "+OK", 3) == 0 &&
	    (end - off == 3 || b[off + 3] == ' ');
	if (!ok && !(end - off >= 4 && memcmp(b + off, "-ERR", 4) == 0 &&
	    (end - off == 4 || b[off + 4] == ' '))) {
		m->mode = PM_LOST;	/* a SASL "+" or worse */
		return;
	}
	m->last_kind = k;
	m->reply_off = off;
	if (ok && (k == P_MULTI || k == P_CAPA)) {
		m->in_body = true;
		m->body_capa = k == P_CAPA;
		m->prev_crlf = crlf;
		m->n_stls = m->n_cred = m->n_xclient = 0;
		return;
	}
	m->last_off = off;
	m->qhead++;
}

static void
pm_replies(struct fz_run *r, struct pm_model *m)
{
	const unsigned char	*b = r->toc.b;
	size_t			 off, end;
	ssize_t			 lf;
	bool			 crlf;

	while (m->mode != PM_LOST &&
	    (lf = fz_find_lf(&r->toc, m->pp, r->toc.len)) != -1) {
		off = m->pp;
		end = (size_t)lf;
		m->pp = end + 1;
		crlf = end > off && b[end - 1] == '\r';
		if (crlf)
			end--;
		if (m->in_body)
			pm_body_line(r, m, off, end, crlf);
		else
			pm_status_line(r, m, off, end, crlf);
	}
}

/* ------------------------------------------------------------------ */

static void *
pm_init(struct fz_run *r)
{
	struct pm_model	*m = fz_zalloc(sizeof(*m));

	(void)r;
	pm_push(m, P_GREETING);
	m->last_kind = P_SINGLE;
	return m;
}

static void
pm_advance(struct fz_run *r, void *p)
{
	struct pm_model	*m = p;

	pm_backend(r, m);
	if (m->mode == PM_LOST)
		return;
	pm_requests(r, m);
	pm_replies(r, m);
}

static void
pm_starttls(struct fz_run *r, void *p)
{
	struct pm_model	*m = p;

	FZ_CHECK(fz_tape_ends_with(&r->toc, GO_AHEAD),
	    "FILTER_STARTTLS without the go-ahead as the last reply");
	if (m->mode == PM_LOST)
		return;
	FZ_CHECK(m->mode == PM_RUN && !m->skipping &&
	    m->rp == r->client.len &&
	    m->qhead == m->qlen && !m->in_body && m->pp == r->toc.len,
	    "go-ahead while client commands are unanswered or unread");
	FZ_CHECK(m->last_kind == P_STLS &&
	    m->last_off == r->toc.len - strlen(GO_AHEAD),
	    "the go-ahead does not answer the STLS command");
}

static void
pm_done(void *p)
{
	static const char *const names[] = { "running", "stop", "lost" };
	struct pm_model	*m = p;

	if (fz_verbose)
		fprintf(stderr, "--- model: client side %s, %zu replies "
		    "pending\n", names[m->mode], m->qlen - m->qhead);

	free(m->q);
	free(m);
}

FZ_HARNESS(PROTO_POP3, &proto_pop3_ops, &pm_ops)
