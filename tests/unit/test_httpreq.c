/*
 * test_httpreq.c - the stats listener's request parser: a table of request
 * heads and what must come of them, plus the size bound and every prefix.
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

#include "httpreq.h"

struct httpreq_case {
	const char		*name;
	const char		*input;
	size_t			 inlen;		/* 0 = strlen */
	enum httpreq_result	 result;
	enum httpreq_method	 method;	/* HTTPREQ_OK only */
	const char		*target;
	int			 minor;
	size_t			 headlen;	/* 0 = the whole input */
};

#define H11	" HTTP/1.1\r\nHost: x\r\n\r\n"

static const struct httpreq_case cases[] = {
	{ "get metrics", "GET /metrics" H11, 0, HTTPREQ_OK, HTTPREQ_GET,
	    "/metrics", 1, 0 },
	{ "head health", "HEAD /health" H11, 0, HTTPREQ_OK, HTTPREQ_HEAD,
	    "/health", 1, 0 },
	{ "http/1.0 without host", "GET /health HTTP/1.0\r\n\r\n", 0,
	    HTTPREQ_OK, HTTPREQ_GET, "/health", 0, 0 },
	{ "other method", "DELETE /metrics" H11, 0, HTTPREQ_OK, HTTPREQ_OTHER,
	    "/metrics", 1, 0 },
	{ "lowercase get is another method", "get /metrics" H11, 0,
	    HTTPREQ_OK, HTTPREQ_OTHER, "/metrics", 1, 0 },
	{ "fields", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"
	    "User-Agent: Prometheus/2.42\r\nX-Empty:\r\n\r\n", 0, HTTPREQ_OK,
	    HTTPREQ_GET, "/metrics", 1, 0 },
	{ "host in any case", "GET /metrics HTTP/1.1\r\nhOsT: x\r\n\r\n", 0,
	    HTTPREQ_OK, HTTPREQ_GET, "/metrics", 1, 0 },
	{ "content-length 0", "GET /metrics HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0\r\n\r\n", 0, HTTPREQ_OK, HTTPREQ_GET,
	    "/metrics", 1, 0 },
	{ "pipelined second request stays unread", "GET /health" H11
	    "GET /metrics" H11, 0, HTTPREQ_OK, HTTPREQ_GET, "/health", 1,
	    sizeof("GET /health" H11) - 1 },
	{ "query kept in target", "GET /metrics?a=b" H11, 0, HTTPREQ_OK,
	    HTTPREQ_GET, "/metrics?a=b", 1, 0 },

	{ "empty", "", 0, HTTPREQ_INCOMPLETE, 0, NULL, 0, 0 },
	{ "request line only", "GET /metrics HTTP/1.1\r\n", 0,
	    HTTPREQ_INCOMPLETE, 0, NULL, 0, 0 },
	{ "cr pending", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r", 0,
	    HTTPREQ_INCOMPLETE, 0, NULL, 0, 0 },

	{ "no host in 1.1", "GET /metrics HTTP/1.1\r\n\r\n", 0, HTTPREQ_BAD,
	    0, NULL, 0, 0 },
	{ "two hosts", "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	    0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "two hosts in 1.0", "GET /metrics HTTP/1.0\r\nHost: a\r\nHost: b"
	    "\r\n\r\n", 0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "bare lf", "GET /metrics HTTP/1.1\nHost: x\n\n", 0, HTTPREQ_BAD, 0,
	    NULL, 0, 0 },
	{ "bare cr", "GET /metrics HTTP/1.1\rHost: x\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "nul", "GET /metrics HTTP/1.1\r\nHost: x\0\r\n\r\n", 35,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "nul before the end is seen", "GET /met\0", 9, HTTPREQ_BAD, 0,
	    NULL, 0, 0 },
	{ "leading empty line", "\r\nGET /metrics" H11, 0, HTTPREQ_BAD, 0,
	    NULL, 0, 0 },
	{ "two spaces", "GET  /metrics" H11, 0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "tab separator", "GET\t/metrics" H11, 0, HTTPREQ_BAD, 0, NULL, 0,
	    0 },
	{ "no version", "GET /metrics\r\n\r\n", 0, HTTPREQ_BAD, 0, NULL, 0,
	    0 },
	{ "http/0.9", "GET /metrics HTTP/0.9\r\n\r\n", 0, HTTPREQ_BAD, 0,
	    NULL, 0, 0 },
	{ "http/1.2", "GET /metrics HTTP/1.2\r\nHost: x\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "http/2", "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "lowercase version", "GET /metrics http/1.1\r\nHost: x\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "trailing space", "GET /metrics HTTP/1.1 \r\nHost: x\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "8bit target", "GET /m\xc3\xa9trics" H11, 0, HTTPREQ_BAD, 0, NULL,
	    0, 0 },
	{ "obs-fold", "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
	    0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "space before colon", "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
	    0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "no colon", "GET /metrics HTTP/1.1\r\nHost: x\r\nBroken\r\n\r\n", 0,
	    HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "control in value", "GET /metrics HTTP/1.1\r\nHost: x\x01y\r\n\r\n",
	    0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "body", "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
	    "\r\nhello", 0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "content-length 00", "GET /metrics HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 00\r\n\r\n", 0, HTTPREQ_BAD, 0, NULL, 0, 0 },
	{ "chunked", "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n", 0, HTTPREQ_BAD, 0, NULL, 0, 0 },
};

static void
test_httpreq_table(void **state)
{
	struct httpreq	 r;
	size_t		 i, inlen, want;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct httpreq_case *c = &cases[i];
		enum httpreq_result res;

		inlen = c->inlen ? c->inlen : strlen(c->input);
		res = httpreq_parse(c->input, inlen, &r);
		if (res != c->result)
			fail_msg("%s: result %d, want %d", c->name, res,
			    c->result);
		if (res == HTTPREQ_BAD && r.why == NULL)
			fail_msg("%s: no reason", c->name);
		if (res != HTTPREQ_OK)
			continue;
		want = c->headlen ? c->headlen : inlen;
		if (r.method != c->method || r.minor != c->minor ||
		    strcmp(r.target, c->target) != 0 || r.headlen != want)
			fail_msg("%s: method %d minor %d target '%s' headlen %zu",
			    c->name, r.method, r.minor, r.target, r.headlen);
	}
}

/* Every proper prefix of a good head is INCOMPLETE, never BAD or OK. */
static void
test_httpreq_prefixes(void **state)
{
	const char	*full = "GET /metrics HTTP/1.1\r\nHost: x\r\n"
			    "Accept: text/plain\r\n\r\n";
	struct httpreq	 r;
	size_t		 n;

	(void)state;
	for (n = 0; n < strlen(full); n++)
		if (httpreq_parse(full, n, &r) != HTTPREQ_INCOMPLETE)
			fail_msg("prefix of %zu bytes not incomplete", n);
	assert_int_equal(httpreq_parse(full, strlen(full), &r), HTTPREQ_OK);
}

/*
 * The bound: a head of exactly HTTPREQ_MAX bytes is accepted, one more
 * byte is refused, and so is an unterminated HTTPREQ_MAX bytes; the
 * parser never looks beyond HTTPREQ_MAX whatever len says.
 */
static void
test_httpreq_bound(void **state)
{
	const char	*start = "GET /metrics HTTP/1.1\r\nHost: x\r\nX: ";
	char		*buf = malloc(HTTPREQ_MAX * 2);
	struct httpreq	 r;
	size_t		 pad;

	(void)state;
	assert_non_null(buf);
	memset(buf, 'a', HTTPREQ_MAX * 2);
	memcpy(buf, start, strlen(start));
	pad = HTTPREQ_MAX - 4;			/* "\r\n\r\n" ends it */
	memcpy(buf + pad, "\r\n\r\n", 4);
	assert_int_equal(httpreq_parse(buf, HTTPREQ_MAX, &r), HTTPREQ_OK);
	assert_int_equal(r.headlen, HTTPREQ_MAX);

	memset(buf + pad, 'a', 4);
	memcpy(buf + pad + 1, "\r\n\r\n", 4);
	assert_int_equal(httpreq_parse(buf, HTTPREQ_MAX + 1, &r), HTTPREQ_BAD);
	assert_string_equal(r.why, "request too long");

	memset(buf + pad + 1, 'a', 4);
	assert_int_equal(httpreq_parse(buf, HTTPREQ_MAX, &r), HTTPREQ_BAD);
	assert_int_equal(httpreq_parse(buf, HTTPREQ_MAX - 1, &r),
	    HTTPREQ_INCOMPLETE);
	free(buf);
}

/* A target longer than HTTPREQ_TARGET_MAX is refused, not cut. */
static void
test_httpreq_long_target(void **state)
{
	char		 buf[HTTPREQ_TARGET_MAX + 64];
	struct httpreq	 r;
	int		 n;

	(void)state;
	memset(buf, 0, sizeof(buf));
	n = snprintf(buf, sizeof(buf), "GET /%0*d HTTP/1.0\r\n\r\n",
	    HTTPREQ_TARGET_MAX - 1, 0);
	assert_int_equal(httpreq_parse(buf, (size_t)n, &r), HTTPREQ_OK);
	assert_int_equal(strlen(r.target), HTTPREQ_TARGET_MAX);
	n = snprintf(buf, sizeof(buf), "GET /%0*d HTTP/1.0\r\n\r\n",
	    HTTPREQ_TARGET_MAX, 0);
	assert_int_equal(httpreq_parse(buf, (size_t)n, &r), HTTPREQ_BAD);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_httpreq_table),
		cmocka_unit_test(test_httpreq_prefixes),
		cmocka_unit_test(test_httpreq_bound),
		cmocka_unit_test(test_httpreq_long_target),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
