/*
 * fuzz_proxy.c - libFuzzer harness for the PROXY header parser
 * (proxy_parse() in src/proxy.c, accept_proxy).
 *
 * The input is the first bytes of a connection.  Besides crashes and
 * sanitizer reports (the input is an exact-size buffer, so a read past
 * it is an AddressSanitizer finding), it checks what session.c relies
 * on when it consumes the header from the socket:
 *  - OK: 0 < len <= size; a v1 header ends in CRLF within 107 bytes, a
 *    v2 one is 16 bytes plus its length field, at most PROXY_RECV_MAX;
 *    addresses are IPv4 or IPv6 with matching lengths and one family,
 *    or none at all (local); the header alone parses the same, and one
 *    byte less of it needs more;
 *  - NEED_MORE: fewer than PROXY_RECV_MAX bytes (a reader never holds
 *    more), and every shorter prefix needs more too (so consuming them
 *    all while waiting never swallows client bytes);
 *  - INVALID: a reason is given;
 *  - a parsed address survives proxy_v1()/proxy_v2() and back.
 */
#include "config.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "INVARIANT VIOLATED: %s (line %d)\n",	\
		    #cond, __LINE__);					\
		abort();						\
	}								\
} while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_addrs(const struct proxy_hdr *h)
{
	int	af = h->src.ss_family;

	if (h->local)
		return;
	CHECK(af == AF_INET || af == AF_INET6);
	CHECK(h->dst.ss_family == af);
	CHECK(h->srclen == h->dstlen);
	CHECK(h->srclen == (af == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6)));
}

/* (family, address, port) with a v4-mapped IPv6 address as IPv4. */
static void
norm(const struct sockaddr_storage *ss, unsigned char out[19])
{
	const struct sockaddr_in	*sin = (const void *)ss;
	const struct sockaddr_in6	*sin6 = (const void *)ss;

	memset(out, 0, 19);
	if (ss->ss_family == AF_INET) {
		out[0] = 4;
		memcpy(out + 1, &sin->sin_addr, 4);
		memcpy(out + 17, &sin->sin_port, 2);
	} else if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		out[0] = 4;
		memcpy(out + 1, sin6->sin6_addr.s6_addr + 12, 4);
		memcpy(out + 17, &sin6->sin6_port, 2);
	} else {
		out[0] = 6;
		memcpy(out + 1, &sin6->sin6_addr, 16);
		memcpy(out + 17, &sin6->sin6_port, 2);
	}
}

/* Build a header from what was parsed, parse it again: same facts. */
static void
check_roundtrip(const struct proxy_hdr *h)
{
	struct proxy_facts	 f;
	struct proxy_hdr	 r;
	unsigned char		 buf[PROXY_HDR_MAX], a[19], b[19];
	ssize_t			 n;
	int			 v;

	if (h->local)
		return;
	memset(&f, 0, sizeof(f));
	f.src = (const struct sockaddr *)&h->src;
	f.dst = (const struct sockaddr *)&h->dst;
	for (v = 1; v <= 2; v++) {
		n = v == 1 ? proxy_v1(&f, (char *)buf, sizeof(buf)) :
		    proxy_v2(&f, buf, sizeof(buf));
		CHECK(n > 0);
		CHECK(proxy_parse(buf, (size_t)n, &r) == PROXY_OK);
		CHECK(r.len == (size_t)n);
		norm(&h->src, a);
		norm(&r.src, b);
		/* A v4-mapped source with an IPv6 destination: UNKNOWN. */
		if (r.local) {
			norm(&h->dst, b);
			CHECK(a[0] != b[0]);
			continue;
		}
		CHECK(memcmp(a, b, sizeof(a)) == 0);
		norm(&h->dst, a);
		norm(&r.dst, b);
		CHECK(memcmp(a, b, sizeof(a)) == 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr	 h, p;
	enum proxy_parse_status	 st;

	st = proxy_parse(data, size, &h);
	switch (st) {
	case PROXY_OK:
		CHECK(h.len > 0 && h.len <= size);
		CHECK(h.version == 1 || h.version == 2);
		if (h.version == 1) {
			CHECK(h.len <= PROXY_V1_RECV_MAX);
			CHECK(data[h.len - 2] == '\r' && data[h.len - 1] == '\n');
		} else {
			CHECK(h.len >= 16 && h.len <= PROXY_RECV_MAX);
			CHECK(h.len == 16 + ((size_t)data[14] << 8 | data[15]));
		}
		check_addrs(&h);
		CHECK(proxy_parse(data, h.len, &p) == PROXY_OK);
		CHECK(p.len == h.len && p.local == h.local);
		CHECK(memcmp(&p.src, &h.src, sizeof(p.src)) == 0);
		CHECK(memcmp(&p.dst, &h.dst, sizeof(p.dst)) == 0);
		CHECK(proxy_parse(data, h.len - 1, &p) == PROXY_NEED_MORE);
		check_roundtrip(&h);
		break;
	case PROXY_NEED_MORE:
		CHECK(size < PROXY_RECV_MAX);
		if (size > 0)
			CHECK(proxy_parse(data, size - 1, &p) ==
			    PROXY_NEED_MORE);
		break;
	case PROXY_INVALID:
		CHECK(h.error != NULL);
		/* A prefix that was complete would have made this OK. */
		if (size > 0)
			CHECK(proxy_parse(data, size - 1, &p) != PROXY_OK);
		break;
	default:
		CHECK(!"unknown status");
	}
	return 0;
}
