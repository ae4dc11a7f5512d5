/*
 * fuzz_tlsa.c - libFuzzer harness for the TLSA answer parser of
 * backend_dane (dane_parse() in src/dane.c, over glibc's ns_initparse and
 * ns_parserr).  The input is a DNS response as res_nquery() would hand
 * it over.
 *
 * Besides crashes and sanitizer reports (the input sits in a buffer of
 * exactly its size), it checks:
 *  - NULL only with the reason "malformed answer";
 *  - SECURE and INSECURE hold at most DANE_RR_MAX records, all usable
 *    (usage 2 or 3, selector 0 or 1, matching type 0 to 2), NONE and
 *    FAILED none, and the status follows the header: the rcode (NOERROR,
 *    NXDOMAIN, SERVFAIL, other) and, with records, the AD bit;
 *  - every record's data lies inside the answer's own buffer, the data
 *    of all records end to end, and each is a copy of bytes of the input
 *    (the data was taken from the message, not from elsewhere);
 *  - a truncated answer (TC) is FAILED;
 *  - the TTL is at most DANE_TTL_MAX.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dane.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
violated(const char *what, size_t n)
{
	fprintf(stderr, "INVARIANT VIOLATED: %s\ninput: %zu bytes\n", what, n);
	abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
	struct dane_answer	*a;
	unsigned char		*msg;
	char			 why[64] = "";
	size_t			 i, off = 0;
	int			 rcode, ad, tc;

	/* A copy of exactly n bytes: a read past the end is an ASan error. */
	if ((msg = malloc(n ? n : 1)) == NULL)
		return 0;
	memcpy(msg, data, n);
	a = dane_parse(msg, n, why, sizeof(why));
	if (a == NULL) {
		if (strcmp(why, "malformed answer") != 0)
			violated("NULL without \"malformed answer\"", n);
		free(msg);
		return 0;
	}
	if (n < 12)
		violated("a message shorter than its header parsed", n);
	rcode = msg[3] & 0x0f;
	ad = (msg[3] & 0x20) != 0;
	tc = (msg[2] & 0x02) != 0;
	if (tc && a->status != DANE_FAILED)
		violated("a truncated answer (TC) that did not fail", n);
	switch (a->status) {
	case DANE_SECURE:
	case DANE_INSECURE:
		if (rcode != 0)
			violated("records from an error answer", n);
		if (a->nrr > DANE_RR_MAX)
			violated("records status with too many records", n);
		if ((a->status == DANE_SECURE) != ad)
			violated("SECURE is not the AD bit", n);
		break;
	case DANE_NONE:
		if (rcode != 0 && rcode != 3)
			violated("NONE from another rcode", n);
		if (a->nrr != 0)
			violated("NONE with records", n);
		break;
	case DANE_FAILED:
		if (rcode == 3 && !tc)
			violated("FAILED from NXDOMAIN", n);
		if (rcode == 0 && !tc && strcmp(a->why,
		    "too many usable TLSA records") != 0)
			violated("FAILED from NOERROR or NXDOMAIN", n);
		if (a->nrr != 0)
			violated("FAILED with records", n);
		break;
	default:
		violated("unknown status", n);
	}
	if (a->ttl > DANE_TTL_MAX)
		violated("TTL above DANE_TTL_MAX", n);
	for (i = 0; i < a->nrr; i++) {
		const struct dane_rr *r = &a->rr[i];

		if ((r->usage != DANE_USAGE_TA && r->usage != DANE_USAGE_EE) ||
		    r->selector > 1 || r->mtype > 2)
			violated("an unusable record kept", n);

		if (r->data != a->buf + off)
			violated("record data not end to end in the buffer", n);
		off += r->len;
		if (r->len == 0 || r->len > n ||
		    memmem(msg, n, r->data, r->len) == NULL)
			violated("record data not from the message", n);
	}
	dane_answer_unref(a);
	free(msg);
	return 0;
}
