/*
 * test_addrtable.c - the per-address table of the abuse limits: the
 * connection-rate bucket, the authentication-failure window, expiry,
 * eviction at the bound and hash collisions, as tables of steps.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "addrtable.h"

enum op { CONNECT, FAIL, BLOCKED, COUNT, END };

struct step {
	enum op		 op;
	const char	*addr;
	uint64_t	 now;		/* ms */
	unsigned	 arg;		/* rate, or max failures */
	unsigned	 want;		/* verdict, failure count, entries */
};

struct tcase {
	const char	*name;
	size_t		 max;
	unsigned	 window;	/* auth_failure_window, seconds */
	struct step	 steps[40];
};

static const struct tcase cases[] = {
	{ "burst of rate passes, the next is refused", 16, 600, {
		{ CONNECT, "192.0.2.1", 1000, 3, 1 },
		{ CONNECT, "192.0.2.1", 1001, 3, 1 },
		{ CONNECT, "192.0.2.1", 1002, 3, 1 },
		{ CONNECT, "192.0.2.1", 1003, 3, 0 },
		{ CONNECT, "192.0.2.1", 1004, 3, 0 },
		/* another address has its own bucket */
		{ CONNECT, "192.0.2.2", 1005, 3, 1 },
		/* one token back after 60/3 = 20 s */
		{ CONNECT, "192.0.2.1", 21002, 3, 1 },
		{ CONNECT, "192.0.2.1", 21003, 3, 0 },
		{ COUNT, NULL, 21003, 0, 2 },
		{ END } } },
	{ "v4 and v4-mapped v6 are one address", 16, 600, {
		{ CONNECT, "192.0.2.9", 5, 1, 1 },
		{ CONNECT, "::ffff:192.0.2.9", 6, 1, 0 },
		{ COUNT, NULL, 6, 0, 1 },
		{ END } } },
	{ "entries expire a minute after the last connection", 16, 600, {
		{ CONNECT, "192.0.2.1", 0, 1, 1 },
		{ CONNECT, "192.0.2.2", 10, 1, 1 },
		{ COUNT, NULL, 10, 0, 2 },
		{ CONNECT, "192.0.2.3", 60001, 1, 1 },
		/* the first expired at 60000 and went at the next touch */
		{ COUNT, NULL, 60001, 0, 2 },
		{ CONNECT, "192.0.2.4", 60011, 1, 1 },
		{ COUNT, NULL, 60011, 0, 2 },
		{ END } } },
	{ "auth failures: blocked at max until the window ends", 16, 2, {
		{ BLOCKED, "2001:db8::1", 100, 2, 0 },
		{ FAIL, "2001:db8::1", 100, 0, 1 },
		{ BLOCKED, "2001:db8::1", 200, 2, 0 },
		{ FAIL, "2001:db8::1", 300, 0, 2 },
		{ BLOCKED, "2001:db8::1", 400, 2, 1 },
		{ BLOCKED, "2001:db8::2", 400, 2, 0 },
		{ BLOCKED, "2001:db8::1", 2099, 2, 1 },
		/* the window opened with the first failure, at 100 */
		{ BLOCKED, "2001:db8::1", 2100, 2, 0 },
		{ FAIL, "2001:db8::1", 2200, 0, 1 },
		{ BLOCKED, "2001:db8::1", 2300, 2, 0 },
		{ END } } },
	{ "an auth entry outlives the rate bucket's minute", 16, 600, {
		{ FAIL, "192.0.2.7", 0, 0, 1 },
		{ CONNECT, "192.0.2.8", 120000, 5, 1 },
		{ COUNT, NULL, 120000, 0, 2 },
		{ BLOCKED, "192.0.2.7", 120000, 1, 1 },
		{ CONNECT, "192.0.2.8", 600001, 5, 1 },
		{ COUNT, NULL, 600001, 0, 1 },
		{ BLOCKED, "192.0.2.7", 600001, 1, 0 },
		{ END } } },
	{ "full table evicts the least recently used", 3, 600, {
		{ CONNECT, "192.0.2.1", 1, 1, 1 },
		{ CONNECT, "192.0.2.2", 2, 1, 1 },
		{ CONNECT, "192.0.2.3", 3, 1, 1 },
		/* .1 used again: .2 is now the oldest */
		{ CONNECT, "192.0.2.1", 4, 1, 0 },
		{ CONNECT, "192.0.2.4", 5, 1, 1 },
		{ COUNT, NULL, 5, 0, 3 },
		/* .2 was forgotten: a fresh bucket */
		{ CONNECT, "192.0.2.2", 6, 1, 1 },
		/* which evicted .3; .1 and .4 remain remembered */
		{ CONNECT, "192.0.2.1", 7, 1, 0 },
		{ CONNECT, "192.0.2.4", 8, 1, 0 },
		{ COUNT, NULL, 8, 0, 3 },
		{ END } } },
	{ "one bucket: every key collides", 1, 600, {
		{ CONNECT, "192.0.2.1", 1, 1, 1 },
		{ CONNECT, "192.0.2.1", 2, 1, 0 },
		{ CONNECT, "192.0.2.2", 3, 1, 1 },
		{ COUNT, NULL, 3, 0, 1 },
		{ CONNECT, "192.0.2.1", 4, 1, 1 },
		{ END } } },
	{ "small table, chains of several keys", 4, 600, {
		{ FAIL, "10.0.0.1", 1, 0, 1 },
		{ FAIL, "10.0.0.2", 2, 0, 1 },
		{ FAIL, "10.0.0.3", 3, 0, 1 },
		{ FAIL, "10.0.0.4", 4, 0, 1 },
		{ FAIL, "10.0.0.1", 5, 0, 2 },
		{ FAIL, "10.0.0.3", 6, 0, 2 },
		{ FAIL, "10.0.0.4", 7, 0, 2 },
		{ FAIL, "10.0.0.2", 8, 0, 2 },
		{ FAIL, "10.0.0.5", 9, 0, 1 },	/* evicts .1 */
		{ BLOCKED, "10.0.0.1", 10, 1, 0 },
		{ BLOCKED, "10.0.0.3", 10, 2, 1 },
		{ BLOCKED, "10.0.0.2", 10, 2, 1 },
		{ COUNT, NULL, 10, 0, 4 },
		{ END } } },
};

static void
mkaddr(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6	*s6 = (void *)ss;

		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in	*s4 = (void *)ss;

		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
}

static void
test_cases(void **state)
{
	struct sockaddr_storage	 ss;
	const struct sockaddr	*sa = (const struct sockaddr *)&ss;
	const struct step	*st;
	struct addrtable	*t;
	size_t			 i, j;
	unsigned		 got;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_non_null(t = addrtable_new(cases[i].max));
		for (j = 0; (st = &cases[i].steps[j])->op != END; j++) {
			if (st->addr != NULL)
				mkaddr(st->addr, &ss);
			switch (st->op) {
			case CONNECT:
				got = addrtable_connect(t, sa, st->arg,
				    st->now);
				break;
			case FAIL:
				got = addrtable_auth_failed(t, sa,
				    cases[i].window, st->now);
				break;
			case BLOCKED:
				got = addrtable_auth_blocked(t, sa, st->arg,
				    cases[i].window, st->now);
				break;
			default:
				got = (unsigned)addrtable_count(t);
				break;
			}
			if (got != st->want)
				fail_msg("%s: step %zu: got %u, want %u",
				    cases[i].name, j, got, st->want);
		}
		addrtable_free(t);
	}
}

/*
 * The bound: a flood of distinct addresses never holds more than max
 * entries, and the most recent ones are those remembered.
 */
static void
test_flood(void **state)
{
	struct sockaddr_in6	 s6;
	struct addrtable	*t;
	uint32_t		 i;
	const size_t		 max = 1000;

	(void)state;
	assert_non_null(t = addrtable_new(max));
	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	for (i = 0; i < 200000; i++) {
		memcpy(&s6.sin6_addr.s6_addr[12], &i, 4);
		assert_true(addrtable_connect(t,
		    (struct sockaddr *)&s6, 1, 1000 + i / 100));
		assert_true(addrtable_count(t) <= max);
	}
	assert_int_equal(addrtable_count(t), max);
	/* the last one is remembered: its bucket is empty */
	i--;
	memcpy(&s6.sin6_addr.s6_addr[12], &i, 4);
	assert_false(addrtable_connect(t, (struct sockaddr *)&s6, 1,
	    1000 + i / 100));
	addrtable_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_flood),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
