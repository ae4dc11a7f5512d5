/*
 * test_proxy.c - the PROXY header sent to backends (send_proxy), byte
 * for byte: v1 lines, v2 headers and each TLV, as tables.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cmocka.h>

#include "proxy.h"

/* An address as text: "1.2.3.4:5", "[::1]:5", "unix", or NULL. */
static const struct sockaddr *
addr(const char *text, struct sockaddr_storage *ss)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_un	*sun = (struct sockaddr_un *)ss;
	char			 host[64];
	const char		*colon;

	memset(ss, 0, sizeof(*ss));
	if (text == NULL)
		return NULL;
	if (strcmp(text, "unix") == 0) {
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, "/run/x");
		return (struct sockaddr *)ss;
	}
	colon = strrchr(text, ':');
	assert_non_null(colon);
	if (text[0] == '[') {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - text - 2),
		    text + 1);
		sin6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, host, &sin6->sin6_addr), 1);
		sin6->sin6_port = htons((uint16_t)atoi(colon + 1));
	} else {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - text), text);
		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, host, &sin->sin_addr), 1);
		sin->sin_port = htons((uint16_t)atoi(colon + 1));
	}
	return (struct sockaddr *)ss;
}

static const struct proxy_tls tls_nocert = {
	false, 1, "TLSv1.3", "TLS_AES_256_GCM_SHA384", "ecdsa-with-SHA256",
	"EC256", ""
};
static const struct proxy_tls tls_verified = {
	true, 0, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "RSA-SHA256",
	"RSA2048", "client.example"
};
static const struct proxy_tls tls_unverified = {
	true, 20, "TLSv1.2", "", "", "", "client.example"
};

struct proxy_case {
	const char		*name;
	const char		*src, *dst;
	const char		*authority, *unique_id;
	const struct proxy_tls	*tls;
	const char		*v1;	/* expected line, NULL: error */
	const char		*v2;	/* expected bytes in hex, NULL: error */
};

#define SIG	"0d0a0d0a000d0a515549540a"
static char	long_name[PROXY_AUTHORITY_MAX + 2];

static const struct proxy_case cases[] = {
	{ "v4", "127.0.0.2:40000", "127.0.0.1:993", NULL, NULL, NULL,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 40000 993\r\n",
	  SIG "2111000c" "7f000002" "7f000001" "9c40" "03e1" },
	{ "v6", "[2001:db8::2]:40000", "[::1]:995", NULL, "0123456789abcdef",
	  NULL,
	  "PROXY TCP6 2001:db8::2 ::1 40000 995\r\n",
	  SIG "21210037"
	  "20010db8000000000000000000000002"
	  "00000000000000000000000000000001" "9c40" "03e3"
	  "050010" "30313233343536373839616263646566" },
	{ "v4-mapped v6 is TCP4", "[::ffff:192.0.2.1]:1234",
	  "[::ffff:10.0.0.1]:465", NULL, NULL, NULL,
	  "PROXY TCP4 192.0.2.1 10.0.0.1 1234 465\r\n",
	  SIG "2111000c" "c0000201" "0a000001" "04d2" "01d1" },
	{ "authority (SNI)", "127.0.0.2:1", "127.0.0.1:2", "mail.example.org",
	  NULL, NULL,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 1 2\r\n",
	  SIG "2111001f" "7f000002" "7f000001" "0001" "0002"
	  "020010" "6d61696c2e6578616d706c652e6f7267" },
	{ "SSL without a client certificate", "127.0.0.2:40000",
	  "127.0.0.1:993", NULL, "0123456789abcdef", &tls_nocert,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 40000 993\r\n",
	  SIG "21110066" "7f000002" "7f000001" "9c40" "03e1"
	  "050010" "30313233343536373839616263646566"
	  "200044" "01" "00000001"
	  "210007" "544c5376312e33"
	  "230016" "544c535f4145535f3235365f47434d5f534841333834"
	  "240011" "65636473612d776974682d534841323536"
	  "250005" "4543323536" },
	{ "SSL with a verified client certificate", "127.0.0.2:40000",
	  "127.0.0.1:993", NULL, NULL, &tls_verified,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 40000 993\r\n",
	  SIG "21110064" "7f000002" "7f000001" "9c40" "03e1"
	  "200055" "03" "00000000"
	  "210007" "544c5376312e32"
	  "23001b" "45434448452d5253412d4145533132382d47434d2d534841323536"
	  "24000a" "5253412d534841323536"
	  "250007" "52534132303438"
	  "22000e" "636c69656e742e6578616d706c65" },
	{ "SSL with an unverified client certificate", "127.0.0.2:40000",
	  "127.0.0.1:993", NULL, NULL, &tls_unverified,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 40000 993\r\n",
	  SIG "2111002f" "7f000002" "7f000001" "9c40" "03e1"
	  "200020" "03" "00000014"
	  "210007" "544c5376312e32"
	  "22000e" "636c69656e742e6578616d706c65" },
	{ "unix client: UNKNOWN / UNSPEC", "unix", "127.0.0.1:993", NULL,
	  "0123456789abcdef", NULL,
	  "PROXY UNKNOWN\r\n",
	  SIG "21000013"
	  "050010" "30313233343536373839616263646566" },
	{ "families differ: UNKNOWN / UNSPEC", "127.0.0.2:1", "[::1]:2",
	  NULL, NULL, NULL,
	  "PROXY UNKNOWN\r\n", SIG "21000000" },
	{ "no destination: UNKNOWN / UNSPEC", "127.0.0.2:1", NULL,
	  NULL, NULL, NULL,
	  "PROXY UNKNOWN\r\n", SIG "21000000" },
	{ "authority too long", "127.0.0.2:1", "127.0.0.1:2", long_name,
	  NULL, NULL,
	  "PROXY TCP4 127.0.0.2 127.0.0.1 1 2\r\n", NULL },
	{ "longest v1 line", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
	  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", NULL, NULL, NULL,
	  "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	  SIG "21210024"
	  "fffffffffffffffffffffffffffffffe"
	  "ffffffffffffffffffffffffffffffff" "ffff" "ffff" },
};

static size_t
unhex(const char *hex, unsigned char *out, size_t max)
{
	size_t	n = strlen(hex) / 2, i;
	unsigned v;

	assert_true(n <= max);
	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (unsigned char)v;
	}
	return n;
}

static void
facts(const struct proxy_case *c, struct proxy_facts *f,
    struct sockaddr_storage *s, struct sockaddr_storage *d)
{
	memset(f, 0, sizeof(*f));
	f->src = addr(c->src, s);
	f->dst = addr(c->dst, d);
	f->authority = c->authority;
	f->unique_id = c->unique_id;
	f->tls = c->tls;
}

static void
test_v1(void **state)
{
	struct sockaddr_storage	 s, d;
	struct proxy_facts	 f;
	char			 buf[PROXY_V1_MAX + 1];
	size_t			 i;
	ssize_t			 n;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		facts(&cases[i], &f, &s, &d);
		n = proxy_v1(&f, buf, sizeof(buf));
		if (cases[i].v1 == NULL) {
			assert_int_equal(n, -1);
			continue;
		}
		printf("# v1 %s\n", cases[i].name);
		assert_int_equal(n, strlen(cases[i].v1));
		assert_true(n <= PROXY_V1_MAX);
		assert_memory_equal(buf, cases[i].v1, (size_t)n);
		/* One byte short: refused, never cut. */
		assert_int_equal(proxy_v1(&f, buf, (size_t)n), -1);
	}
}

/* The TLVs after the addresses tile the payload exactly, and so do the
 * sub-TLVs of PP2_TYPE_SSL. */
static void
check_tlvs(const unsigned char *p, size_t n)
{
	size_t	len;

	while (n > 0) {
		assert_true(n >= 3);
		len = (size_t)p[1] << 8 | p[2];
		assert_true(len <= n - 3);
		if (p[0] == PP2_TYPE_SSL) {
			assert_true(len >= 5);
			assert_true(p[3] & PP2_CLIENT_SSL);
			check_tlvs(p + 8, len - 5);
		}
		p += 3 + len;
		n -= 3 + len;
	}
}

static void
test_v2(void **state)
{
	struct sockaddr_storage	 s, d;
	struct proxy_facts	 f;
	unsigned char		 buf[PROXY_HDR_MAX], want[PROXY_HDR_MAX];
	size_t			 i, wn, alen;
	ssize_t			 n;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		printf("# v2 %s\n", cases[i].name);
		facts(&cases[i], &f, &s, &d);
		n = proxy_v2(&f, buf, sizeof(buf));
		if (cases[i].v2 == NULL) {
			assert_int_equal(n, -1);
			continue;
		}
		wn = unhex(cases[i].v2, want, sizeof(want));
		assert_int_equal(n, wn);
		assert_memory_equal(buf, want, wn);
		/* The length field counts what follows the 16 bytes. */
		assert_int_equal((size_t)buf[14] << 8 | buf[15], wn - 16);
		alen = buf[13] == PP2_FAM_TCP4 ? 12 :
		    buf[13] == PP2_FAM_TCP6 ? 36 : 0;
		check_tlvs(buf + 16 + alen, wn - 16 - alen);
		/* A buffer one byte short: refused, never cut. */
		assert_int_equal(proxy_v2(&f, buf, wn - 1), -1);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1),
		cmocka_unit_test(test_v2),
	};

	memset(long_name, 'a', sizeof(long_name) - 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
