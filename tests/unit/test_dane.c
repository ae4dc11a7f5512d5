/*
 * test_dane.c - the TLSA answer parser (dane_parse) on DNS messages built
 * here: a table of answers and what must come of them (status, records,
 * TTL), every truncation of a good message, and the TLSA query name.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dane.h"

#define T_A	1
#define T_CNAME	5
#define T_TLSA	52
#define C_IN	1
#define C_CH	3
/* The TC bit, passed with the rcode (build() ors both in). */
#define F_TC	0x0200

/* One record of a message to build; owner is the question's name. */
struct rr_spec {
	uint16_t	 type;
	uint16_t	 class;
	uint32_t	 ttl;
	int		 rdlen;		/* -1: usage, selector, mtype + data */
	uint8_t		 usage, selector, mtype;
	uint8_t		 fill;		/* data bytes */
	uint16_t	 datalen;
};

struct parse_case {
	const char		*name;
	bool			 ad;
	int			 rcode;
	struct rr_spec		 rr[4];
	size_t			 nrr;
	int			 repeat;	/* rr[0] this many times more */
	bool			 parses;
	enum dane_status	 status;
	size_t			 want_rr;
	uint32_t		 ttl;
};

struct msg {
	unsigned char	 b[16384];
	size_t		 n;
};

static void
put8(struct msg *m, unsigned v)
{
	m->b[m->n++] = (unsigned char)v;
}

static void
put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xff);
}

static void
put32(struct msg *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

static void
put_rr(struct msg *m, const struct rr_spec *r)
{
	size_t	 i;

	put16(m, 0xc00c);		/* the question's name */
	put16(m, r->type);
	put16(m, r->class);
	put32(m, r->ttl);
	if (r->rdlen >= 0) {
		put16(m, (unsigned)r->rdlen);
		for (i = 0; i < (size_t)r->rdlen; i++)
			put8(m, r->fill);
		return;
	}
	put16(m, 3u + r->datalen);
	put8(m, r->usage);
	put8(m, r->selector);
	put8(m, r->mtype);
	for (i = 0; i < r->datalen; i++)
		put8(m, r->fill);
}

static void
build(struct msg *m, const struct parse_case *c)
{
	static const char *const labels[] = { "_25", "_tcp", "mx", "example",
	    "org" };
	size_t	 i, total = c->nrr + (size_t)c->repeat;

	m->n = 0;
	put16(m, 0x1234);
	/* QR RD RA, AD as asked, the rcode. */
	put16(m, 0x8180 | (c->ad ? 0x0020 : 0) | (unsigned)c->rcode);
	put16(m, 1);
	put16(m, (unsigned)total);
	put16(m, 0);
	put16(m, 0);
	for (i = 0; i < 5; i++) {
		put8(m, (unsigned)strlen(labels[i]));
		memcpy(m->b + m->n, labels[i], strlen(labels[i]));
		m->n += strlen(labels[i]);
	}
	put8(m, 0);
	put16(m, T_TLSA);
	put16(m, C_IN);
	for (i = 0; i < (size_t)c->repeat; i++)
		put_rr(m, &c->rr[0]);
	for (i = 0; i < c->nrr; i++)
		put_rr(m, &c->rr[i]);
}

#define TLSA(u, s, mt, fill, len, ttl) \
	{ T_TLSA, C_IN, ttl, -1, u, s, mt, fill, len }

static const struct parse_case cases[] = {
	{ "secure 3 1 1", true, 0, { TLSA(3, 1, 1, 0xab, 32, 300) }, 1, 0,
	    true, DANE_SECURE, 1, 300 },
	{ "no AD bit: insecure", false, 0, { TLSA(3, 1, 1, 0xab, 32, 300) },
	    1, 0, true, DANE_INSECURE, 1, 300 },
	{ "two records, the smaller TTL", true, 0, {
	    TLSA(3, 1, 1, 0x01, 32, 3600), TLSA(2, 0, 1, 0x02, 32, 120) }, 2,
	    0, true, DANE_SECURE, 2, 120 },
	{ "CNAME before the records: skipped", true, 0, {
	    { T_CNAME, C_IN, 60, 2, 0, 0, 0, 0xc0, 0 },
	    TLSA(3, 1, 2, 0x03, 64, 600) }, 2, 0, true, DANE_SECURE, 1, 600 },
	{ "other types ignored: none", true, 0, {
	    { T_A, C_IN, 60, 4, 0, 0, 0, 127, 0 } }, 1, 0, true, DANE_NONE,
	    0, DANE_TTL_NEGATIVE },
	{ "class CH ignored", true, 0, {
	    { T_TLSA, C_CH, 60, -1, 3, 1, 1, 0xab, 32 } }, 1, 0, true,
	    DANE_NONE, 0, DANE_TTL_NEGATIVE },
	{ "no data: ignored", true, 0, {
	    { T_TLSA, C_IN, 60, 3, 0, 0, 0, 3, 0 },
	    TLSA(3, 0, 0, 0x30, 300, 60) }, 2, 0, true, DANE_SECURE, 1, 60 },
	{ "unusable usages: records, none kept", true, 0, {
	    TLSA(0, 0, 1, 0x05, 32, 60), TLSA(1, 1, 1, 0x06, 32, 60) }, 2, 0,
	    true, DANE_SECURE, 0, 60 },
	{ "unknown selector or matching type: not kept", true, 0, {
	    TLSA(3, 2, 1, 0x05, 32, 60), TLSA(2, 0, 3, 0x06, 32, 60),
	    TLSA(3, 1, 1, 0x08, 32, 90) }, 3, 0, true, DANE_SECURE, 1, 60 },
	{ "empty answer", true, 0, { { 0 } }, 0, 0, true, DANE_NONE, 0,
	    DANE_TTL_NEGATIVE },
	{ "NXDOMAIN", true, 3, { { 0 } }, 0, 0, true, DANE_NONE, 0,
	    DANE_TTL_NEGATIVE },
	{ "SERVFAIL", false, 2, { { 0 } }, 0, 0, true, DANE_FAILED, 0,
	    DANE_TTL_FAILED },
	{ "truncated (TC): failed", true, F_TC, {
	    TLSA(3, 1, 1, 0xab, 32, 300) }, 1, 0, true, DANE_FAILED, 0,
	    DANE_TTL_FAILED },
	{ "truncated NXDOMAIN: failed", true, F_TC | 3, { { 0 } }, 0, 0,
	    true, DANE_FAILED, 0, DANE_TTL_FAILED },
	{ "REFUSED", false, 5, { { 0 } }, 0, 0, true, DANE_FAILED, 0,
	    DANE_TTL_FAILED },
	{ "more than DANE_RR_MAX usable records: failed", true, 0, {
	    TLSA(3, 1, 1, 0x07, 32, 60) }, 1, DANE_RR_MAX, true,
	    DANE_FAILED, 0, DANE_TTL_FAILED },
	{ "DANE_RR_MAX usable records", true, 0, {
	    TLSA(3, 1, 1, 0x07, 32, 60) }, 1, DANE_RR_MAX - 1, true,
	    DANE_SECURE, DANE_RR_MAX, 60 },
	{ "many unusable records before a usable one", true, 0, {
	    TLSA(1, 1, 1, 0x07, 32, 60), TLSA(3, 1, 1, 0x09, 32, 60) }, 2,
	    DANE_RR_MAX + 5, true, DANE_SECURE, 1, 60 },
	{ "rdlength past the end", true, 0, {
	    { T_TLSA, C_IN, 60, -1, 3, 1, 1, 0xab, 32 } }, 1, 0, false },
};

static void
test_parse_table(void **state)
{
	const struct parse_case	*c;
	struct dane_answer	*a;
	struct msg		 m;
	char			 why[64];
	size_t			 i, j;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = &cases[i];
		build(&m, c);
		/* The last case claims more data than the message has. */
		if (!c->parses)
			m.n -= 5;
		why[0] = '\0';
		a = dane_parse(m.b, m.n, why, sizeof(why));
		if (!c->parses) {
			if (a != NULL)
				fail_msg("%s: parsed", c->name);
			assert_string_equal(why, "malformed answer");
			continue;
		}
		if (a == NULL)
			fail_msg("%s: %s", c->name, why);
		if (a->status != c->status || a->nrr != c->want_rr ||
		    a->ttl != c->ttl)
			fail_msg("%s: status %d nrr %zu ttl %u", c->name,
			    a->status, a->nrr, (unsigned)a->ttl);
		for (j = 0; j < a->nrr && c->repeat == 0; j++) {
			const struct rr_spec *r = &c->rr[c->nrr - a->nrr + j];

			assert_int_equal(a->rr[j].usage, r->usage);
			assert_int_equal(a->rr[j].selector, r->selector);
			assert_int_equal(a->rr[j].mtype, r->mtype);
			assert_int_equal(a->rr[j].len, r->datalen);
			assert_int_equal(a->rr[j].data[0], r->fill);
			assert_int_equal(a->rr[j].data[r->datalen - 1],
			    r->fill);
		}
		dane_answer_unref(a);
	}
}

/* No prefix of a good message parses into records it does not hold. */
static void
test_parse_truncated(void **state)
{
	const struct parse_case	*c = &cases[2];
	struct dane_answer	*a;
	struct msg		 m;
	char			 why[64];
	size_t			 n;

	(void)state;
	build(&m, c);
	for (n = 0; n < m.n; n++) {
		a = dane_parse(m.b, n, why, sizeof(why));
		if (a != NULL)
			fail_msg("prefix of %zu bytes (of %zu) parsed", n, m.n);
	}
	a = dane_parse(m.b, m.n, why, sizeof(why));
	assert_non_null(a);
	assert_int_equal(a->nrr, 2);
	dane_answer_unref(a);
}

static void
test_qname(void **state)
{
	char	 buf[300], small[16];

	(void)state;
	assert_int_equal(dane_qname("mx.example.org", 25, buf, sizeof(buf)),
	    0);
	assert_string_equal(buf, "_25._tcp.mx.example.org");
	assert_int_equal(dane_qname("mx.example.org.", 465, buf, sizeof(buf)),
	    0);
	assert_string_equal(buf, "_465._tcp.mx.example.org");
	assert_int_equal(dane_qname("mx.example.org", 0, buf, sizeof(buf)),
	    -1);
	assert_int_equal(dane_qname(".", 25, buf, sizeof(buf)), -1);
	assert_int_equal(dane_qname("", 25, buf, sizeof(buf)), -1);
	assert_int_equal(dane_qname("mx.example.org", 25, small,
	    sizeof(small)), -1);
}

/* A failed lookup is kept 5 s, then 10, 20, 40, then 60 at most. */
static void
test_backoff(void **state)
{
	(void)state;
	assert_int_equal(dane_backoff(0), DANE_TTL_FAILED);
	assert_int_equal(dane_backoff(1), 2 * DANE_TTL_FAILED);
	assert_int_equal(dane_backoff(3), 8 * DANE_TTL_FAILED);
	assert_int_equal(dane_backoff(4), DANE_TTL_FAILED_MAX);
	assert_int_equal(dane_backoff(16), DANE_TTL_FAILED_MAX);
	assert_int_equal(dane_backoff(~0u), DANE_TTL_FAILED_MAX);
}

static void
test_status_names(void **state)
{
	(void)state;
	assert_string_equal(dane_status_name(DANE_SECURE), "secure");
	assert_string_equal(dane_status_name(DANE_INSECURE), "insecure");
	assert_string_equal(dane_status_name(DANE_NONE), "none");
	assert_string_equal(dane_status_name(DANE_FAILED), "failed");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_qname),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_status_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
