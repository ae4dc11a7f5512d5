/*
 * fuzz_http.c - libFuzzer harness for the stats listener's request parser
 * (src/httpreq.c).  The input is the bytes a client sends.
 *
 * Besides crashes and sanitizer reports (the input sits in a buffer of
 * exactly its size, so a read past len is an ASan error), it checks:
 *  - INCOMPLETE only below HTTPREQ_MAX bytes: a client can never make
 *    the listener wait for, or buffer, more than that;
 *  - OK: the head ends in CRLF CRLF at headlen <= HTTPREQ_MAX, holds no
 *    NUL and no CR or LF outside CRLF pairs, the request line is exactly
 *    "METHOD SP target SP HTTP/1.x", the method matches the enum, and
 *    the target is 1..HTTPREQ_TARGET_MAX visible ASCII bytes;
 *  - OK is a property of the head alone: parsing just headlen bytes gives
 *    the same answer, and every shorter prefix is INCOMPLETE or BAD,
 *    never OK (one request, not two readings of it);
 *  - BAD always names a reason.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpreq.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
violated(const char *what, const uint8_t *d, size_t n)
{
	fprintf(stderr, "INVARIANT VIOLATED: %s\ninput (%zu bytes): %.*s\n",
	    what, n, (int)(n > 600 ? 600 : n), (const char *)d);
	abort();
}

static void
check_ok(const char *b, size_t n, const struct httpreq *r)
{
	const char	*sp1, *sp2;
	size_t		 i, h = r->headlen, tl;

	if (h < 4 || h > n || h > HTTPREQ_MAX ||
	    memcmp(b + h - 4, "\r\n\r\n", 4) != 0)
		violated("head does not end in CRLF CRLF", (const void *)b, n);
	for (i = 0; i < h; i++) {
		if (b[i] == '\0')
			violated("NUL in an accepted head", (const void *)b, n);
		if (b[i] == '\r' && b[i + 1] != '\n')
			violated("bare CR accepted", (const void *)b, n);
		if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r'))
			violated("bare LF accepted", (const void *)b, n);
	}
	sp1 = memchr(b, ' ', h);
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(b + h - sp1 - 1)) : NULL;
	if (sp1 == NULL || sp2 == NULL || sp1 == b ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    (sp2[8] != '0' && sp2[8] != '1') || sp2[9] != '\r' ||
	    r->minor != sp2[8] - '0')
		violated("request line not METHOD SP target SP HTTP/1.x",
		    (const void *)b, n);
	tl = (size_t)(sp2 - sp1 - 1);
	if (tl == 0 || tl > HTTPREQ_TARGET_MAX || strlen(r->target) != tl ||
	    memcmp(r->target, sp1 + 1, tl) != 0)
		violated("target differs from the request line",
		    (const void *)b, n);
	for (i = 0; i < tl; i++)
		if (r->target[i] <= ' ' || r->target[i] >= 0x7f)
			violated("invisible byte in the target",
			    (const void *)b, n);
	if ((r->method == HTTPREQ_GET) != (sp1 - b == 3 &&
	    memcmp(b, "GET", 3) == 0) || (r->method == HTTPREQ_HEAD) !=
	    (sp1 - b == 4 && memcmp(b, "HEAD", 4) == 0))
		violated("method enum does not match", (const void *)b, n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct httpreq		 r, r2;
	enum httpreq_result	 res;
	char			*b;
	size_t			 k;

	/* Exactly size bytes: any read beyond is an ASan report. */
	if ((b = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(b, data, size);
	res = httpreq_parse(b, size, &r);
	switch (res) {
	case HTTPREQ_INCOMPLETE:
		if (size >= HTTPREQ_MAX)
			violated("INCOMPLETE at the size bound", data, size);
		break;
	case HTTPREQ_BAD:
		if (r.why == NULL)
			violated("BAD without a reason", data, size);
		break;
	case HTTPREQ_OK:
		check_ok(b, size, &r);
		if (httpreq_parse(b, r.headlen, &r2) != HTTPREQ_OK ||
		    r2.headlen != r.headlen || r2.method != r.method ||
		    strcmp(r2.target, r.target) != 0)
			violated("the head alone parses differently", data,
			    size);
		for (k = 0; k < r.headlen; k++)
			if (httpreq_parse(b, k, &r2) == HTTPREQ_OK)
				violated("a shorter prefix is a request", data,
				    size);
		break;
	}
	free(b);
	return 0;
}
