/*
 * test_util.c - address parsing/formatting and log escaping, as tables.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

struct addr_case {
	const char	*input;
	int		 allow_unix;
	int		 ok;
	const char	*formatted;	/* addrport_str, when ok */
	const char	*errpart;	/* substring of the error, when !ok */
};

/* How a parsed address reads back ("[::1]:25", "unix:/path"). */
static const char *
addrport_str(const struct sockaddr *sa, socklen_t salen, char *buf,
    size_t len)
{
	char	 a[UTIL_ADDRSTRLEN];

	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const void *)sa;

		if (salen <= offsetof(struct sockaddr_un, sun_path))
			snprintf(buf, len, "unix:");
		else
			snprintf(buf, len, "unix:%.*s",
			    (int)(salen - offsetof(struct sockaddr_un, sun_path)),
			    sun->sun_path);
		return buf;
	}
	util_addr_str(sa, a, sizeof(a));
	if (strchr(a, ':'))
		snprintf(buf, len, "[%s]:%d", a, util_addr_port(sa));
	else
		snprintf(buf, len, "%s:%d", a, util_addr_port(sa));
	return buf;
}

static const struct addr_case addr_cases[] = {
	{ "127.0.0.1:25", 0, 1, "127.0.0.1:25", NULL },
	{ "0.0.0.0:465", 0, 1, "0.0.0.0:465", NULL },
	{ "[::1]:993", 0, 1, "[::1]:993", NULL },
	{ "[::]:25", 0, 1, "[::]:25", NULL },
	{ "[2001:db8::1]:110", 0, 1, "[2001:db8::1]:110", NULL },
	{ "unix:/run/dovecot/imap", 1, 1, "unix:/run/dovecot/imap", NULL },
	{ "unix:/run/x", 0, 0, NULL, "not allowed" },
	{ "unix:relative", 1, 0, NULL, "absolute" },
	{ "1.2.3.4", 0, 0, NULL, "missing :PORT" },
	{ "[::1", 0, 0, NULL, "[IPv6]:PORT" },
	{ "[::1]25", 0, 0, NULL, "[IPv6]:PORT" },
	{ "::1:25", 0, 0, NULL, "brackets" },
	{ ":25", 0, 0, NULL, "missing address" },
	{ "1.2.3.4:", 0, 0, NULL, "bad port" },
	{ "1.2.3.4:0", 0, 0, NULL, "bad port" },
	{ "1.2.3.4:65536", 0, 0, NULL, "bad port" },
	{ "1.2.3.4:99999", 0, 0, NULL, "bad port" },
	{ "1.2.3.4:25x", 0, 0, NULL, "bad port" },
	{ "1.2.3.4:-1", 0, 0, NULL, "bad port" },
	{ "mail.example:25", 0, 0, NULL, "not a numeric" },
	{ "1.2.3.256:25", 0, 0, NULL, "not a numeric" },
};

static void
test_util_addrport(void **state)
{
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
		const struct addr_case *c = &addr_cases[i];
		struct sockaddr_storage	 ss;
		socklen_t		 len;
		char			 err[256] = "", out[UTIL_ADDRPORTSTRLEN];
		int			 rc;

		rc = util_parse_addrport(c->input, c->allow_unix, 0, &ss, &len,
		    err, sizeof(err));
		if ((rc == 0) != c->ok)
			fail_msg("%s: rc %d (%s)", c->input, rc, err);
		if (c->ok) {
			addrport_str((struct sockaddr *)&ss, len, out,
			    sizeof(out));
			if (strcmp(out, c->formatted) != 0)
				fail_msg("%s: formatted as %s", c->input, out);
		} else if (strstr(err, c->errpart) == NULL)
			fail_msg("%s: error '%s' lacks '%s'", c->input, err,
			    c->errpart);
	}
}

static void
test_util_net_bad(void **state)
{
	static const char *bad[] = { "10.0.0.0/33", "::/129", "10.0.0.0/",
	    "10.0.0.0/x", "host/8", "", "1.2.3.4/-1" };
	struct util_net	 net;
	char		 err[256];
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (util_parse_net(bad[i], &net, err, sizeof(err)) != -1)
			fail_msg("'%s' accepted", bad[i]);
}

struct escape_case {
	const char	*in;
	size_t		 inlen;
	size_t		 max;
	const char	*out;
};

static const struct escape_case escape_cases[] = {
	{ "EHLO x", 6, 100, "EHLO x" },
	{ "a\r\nb", 4, 100, "a\\x0d\\x0ab" },
	{ "a\0b", 3, 100, "a\\x00b" },
	{ "back\\slash", 10, 100, "back\\x5cslash" },
	{ "caf\xc3\xa9", 5, 100, "caf\\xc3\\xa9" },
	{ "0123456789", 10, 4, "0123..." },
	{ "%s%n", 4, 100, "%s%n" },		/* data, never a format */
};

static void
test_log_escape(void **state)
{
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(escape_cases) / sizeof(escape_cases[0]); i++) {
		const struct escape_case *c = &escape_cases[i];
		char	out[LOG_ESCAPE_SIZE(100)];

		log_escape(out, sizeof(out), c->in, c->inlen, c->max);
		if (strcmp(out, c->out) != 0)
			fail_msg("escape %zu: got '%s' want '%s'", i, out,
			    c->out);
	}
}

/* A tiny destination is never overrun and always terminated. */
static void
test_log_escape_small(void **state)
{
	char	out[6];

	(void)state;
	memset(out, 'Z', sizeof(out));
	log_escape(out, sizeof(out), "\x01\x02\x03", 3, 100);
	assert_true(memchr(out, '\0', sizeof(out)) != NULL);
	assert_string_equal(out, "\\x01");
}

static void
test_log_names(void **state)
{
	(void)state;
	assert_int_equal(log_level_parse("debug"), LOG_LEVEL_DEBUG);
	assert_int_equal(log_level_parse("warning"), LOG_LEVEL_WARNING);
	assert_int_equal((int)log_level_parse("verbose"), -1);
	assert_string_equal(log_level_name(LOG_LEVEL_NOTICE), "notice");
	assert_true(log_facility_parse("mail") >= 0);
	assert_true(log_facility_parse("local7") >= 0);
	assert_int_equal(log_facility_parse("kern"), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_util_addrport),
		cmocka_unit_test(test_util_net_bad),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_log_escape_small),
		cmocka_unit_test(test_log_names),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
