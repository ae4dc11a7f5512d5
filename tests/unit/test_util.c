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

/* proxy_trusted: which peers a network admits, which networks hold one. */
struct net_case {
	const char	*net;
	const char	*addr;		/* "ADDR:PORT", or a network */
	int		 want;
};

static const struct net_case match_cases[] = {
	{ "127.0.0.1/32", "127.0.0.1:1", 1 },
	{ "127.0.0.1/32", "127.0.0.2:1", 0 },
	{ "127.0.0.1", "[::ffff:127.0.0.1]:1", 1 },	/* dual-stack peer */
	{ "10.0.0.0/8", "10.255.1.2:1", 1 },
	{ "10.0.0.0/8", "11.0.0.1:1", 0 },
	{ "172.16.0.0/12", "172.31.255.255:1", 1 },
	{ "172.16.0.0/12", "172.32.0.0:1", 0 },
	{ "10.1.2.3/8", "10.9.9.9:1", 1 },		/* host bits ignored */
	{ "0.0.0.0/0", "203.0.113.7:1", 1 },
	{ "0.0.0.0/0", "[2001:db8::1]:1", 0 },
	{ "::/0", "[2001:db8::1]:1", 1 },
	{ "::/0", "127.0.0.1:1", 0 },	/* IPv4 is not matched by v6 nets */
	{ "fd00::/8", "[fd12::1]:1", 1 },
	{ "fd00::/8", "[fe12::1]:1", 0 },
	{ "2001:db8::/33", "[2001:db8:7fff::1]:1", 1 },
	{ "2001:db8::/33", "[2001:db8:8000::1]:1", 0 },
	{ "::ffff:10.0.0.0/104", "10.1.1.1:1", 1 },
	{ "::ffff:10.0.0.0/104", "11.1.1.1:1", 0 },
	{ "::ffff:0.0.0.0/95", "10.1.1.1:1", 0 },
};

static const struct net_case within_cases[] = {
	{ "10.1.0.0/16", "10.0.0.0/8", 1 },
	{ "10.0.0.0/8", "10.0.0.0/8", 1 },
	{ "10.0.0.0/7", "10.0.0.0/8", 0 },
	{ "0.0.0.0/0", "10.0.0.0/8", 0 },
	{ "192.0.2.10", "192.0.2.0/24", 1 },
	{ "fd00::/8", "fc00::/7", 1 },
	{ "fc00::/6", "fc00::/7", 0 },
	{ "::ffff:10.1.0.0/112", "10.0.0.0/8", 1 },
	{ "10.0.0.0/8", "fc00::/7", 0 },
};

static void
test_util_net_match(void **state)
{
	struct util_net		 net, outer;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 err[256];
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		assert_int_equal(util_parse_net(match_cases[i].net, &net, err,
		    sizeof(err)), 0);
		assert_int_equal(util_parse_addrport(match_cases[i].addr, 0, 0,
		    &ss, &sslen, err, sizeof(err)), 0);
		if (util_net_match(&net, (struct sockaddr *)&ss) !=
		    match_cases[i].want)
			fail_msg("%s in %s: want %d", match_cases[i].addr,
			    match_cases[i].net, match_cases[i].want);
	}
	for (i = 0; i < sizeof(within_cases) / sizeof(within_cases[0]); i++) {
		assert_int_equal(util_parse_net(within_cases[i].net, &net, err,
		    sizeof(err)), 0);
		assert_int_equal(util_parse_net(within_cases[i].addr, &outer,
		    err, sizeof(err)), 0);
		if (util_net_within(&net, &outer) != within_cases[i].want)
			fail_msg("%s within %s: want %d", within_cases[i].net,
			    within_cases[i].addr, within_cases[i].want);
	}
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
		cmocka_unit_test(test_util_net_match),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_log_escape_small),
		cmocka_unit_test(test_log_names),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
