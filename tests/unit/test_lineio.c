/*
 * test_lineio.c - bounded line reads: table of inputs and expected lines.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "lineio.h"

struct lineio_case {
	const char		*name;
	const char		*input;
	size_t			 inlen;		/* 0 = strlen */
	size_t			 max;
	enum lineio_result	 result;
	const char		*line;		/* expected line (LINE) */
	size_t			 linelen;	/* 0 = strlen(line) */
	unsigned		 flags;
	size_t			 left;		/* bytes left in the buffer */
};

static const struct lineio_case cases[] = {
	{ "crlf", "EHLO x\r\n", 0, 16, LINEIO_LINE, "EHLO x", 0, 0, 0 },
	{ "crlf then more", "NOOP\r\nRSET\r\n", 0, 16, LINEIO_LINE, "NOOP", 0, 0, 6 },
	{ "bare lf", "NOOP\n", 0, 16, LINEIO_LINE, "NOOP", 0, LINEIO_BARE_LF, 0 },
	{ "empty line", "\r\n", 0, 16, LINEIO_LINE, "", 0, 0, 0 },
	{ "lone lf", "\n", 0, 16, LINEIO_LINE, "", 0, LINEIO_BARE_LF, 0 },
	{ "incomplete", "NOOP", 0, 16, LINEIO_MORE, NULL, 0, 0, 4 },
	{ "incomplete cr", "NOOP\r", 0, 16, LINEIO_MORE, NULL, 0, 0, 5 },
	{ "empty buffer", "", 0, 16, LINEIO_MORE, NULL, 0, 0, 0 },
	{ "cr inside", "NO\rOP\r\n", 0, 16, LINEIO_LINE, "NO\rOP", 0, LINEIO_HAS_CR, 0 },
	{ "nul inside", "NO\0OP\r\n", 7, 16, LINEIO_LINE, "NO\0OP", 5, LINEIO_HAS_NUL, 0 },
	{ "8bit", "caf\xc3\xa9\r\n", 0, 16, LINEIO_LINE, "caf\xc3\xa9", 0, 0, 0 },
	{ "exactly max", "0123456789\r\n", 0, 10, LINEIO_LINE, "0123456789", 0, 0, 0 },
	{ "exactly max bare lf", "0123456789\n", 0, 10, LINEIO_LINE, "0123456789", 0, LINEIO_BARE_LF, 0 },
	{ "max+1 terminated", "0123456789A\r\n", 0, 10, LINEIO_TOO_LONG, NULL, 0, 0, 13 },
	{ "max+1 bare lf", "0123456789A\n", 0, 10, LINEIO_TOO_LONG, NULL, 0, 0, 12 },
	{ "max, cr pending", "0123456789\r", 0, 10, LINEIO_MORE, NULL, 0, 0, 11 },
	{ "unterminated over max", "0123456789AB", 0, 10, LINEIO_TOO_LONG, NULL, 0, 0, 12 },
	{ "unterminated max+1", "0123456789A", 0, 10, LINEIO_MORE, NULL, 0, 0, 11 },
};

static void
test_lineio_table(void **state)
{
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct lineio_case *c = &cases[i];
		struct evbuffer	*b = evbuffer_new();
		char		 buf[64];
		size_t		 len, inlen = c->inlen ? c->inlen : strlen(c->input);
		unsigned	 flags;
		enum lineio_result r;

		evbuffer_add(b, c->input, inlen);
		r = lineio_get(b, c->max, buf, c->max + 2, &len, &flags);
		if (r != c->result)
			fail_msg("%s: result %d, want %d", c->name, r, c->result);
		if (r == LINEIO_LINE) {
			size_t want = c->linelen ? c->linelen : strlen(c->line);

			if (len != want || memcmp(buf, c->line, len) != 0)
				fail_msg("%s: wrong line", c->name);
			if (flags != c->flags)
				fail_msg("%s: flags %#x, want %#x", c->name,
				    flags, c->flags);
			assert_int_equal(buf[len], '\0');
		}
		if (evbuffer_get_length(b) != c->left)
			fail_msg("%s: %zu bytes left, want %zu", c->name,
			    evbuffer_get_length(b), c->left);
		evbuffer_free(b);
	}
}

/* A refused long line is skipped up to its LF; the next line is intact. */
static void
test_lineio_skip(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	char		 buf[16];
	size_t		 len;
	unsigned	 flags;

	(void)state;
	evbuffer_add_printf(b, "%s", "AAAAAAAAAAAAAAAAAAAA");
	assert_int_equal(lineio_get(b, 8, buf, sizeof(buf), &len, &flags),
	    LINEIO_TOO_LONG);
	assert_int_equal(lineio_skip(b), 0);		/* line goes on */
	assert_int_equal(evbuffer_get_length(b), 0);
	evbuffer_add_printf(b, "%s", "AAAA\r\nNOOP\r\n");
	assert_int_equal(lineio_skip(b), 1);		/* line over */
	assert_int_equal(lineio_get(b, 8, buf, sizeof(buf), &len, &flags),
	    LINEIO_LINE);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "NOOP", 4);
	evbuffer_free(b);
}

/* The LF search never looks past its bound, even across chains. */
static void
test_lineio_find_lf_bounded(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	char		 big[10000];

	(void)state;
	memset(big, 'x', sizeof(big));
	evbuffer_add(b, big, sizeof(big));
	evbuffer_add(b, "\n", 1);
	assert_int_equal(lineio_find_lf(b, 100), -1);
	assert_int_equal(lineio_find_lf(b, sizeof(big)), -1);
	assert_int_equal(lineio_find_lf(b, sizeof(big) + 1), (ssize_t)sizeof(big));
	evbuffer_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lineio_table),
		cmocka_unit_test(test_lineio_skip),
		cmocka_unit_test(test_lineio_find_lf_bounded),
	};

	return cmocka_run_group_tests_name("lineio", tests, NULL, NULL);
}
