/*
 * httpreq.h - a bounded parser for the HTTP/1.x requests of the stats
 * listener (SPEC section 11).
 */
#ifndef HTTPREQ_H
#define HTTPREQ_H

#include <stddef.h>

#include "mailtlsd.h"

/* A request head (request line and header fields) is at most this long. */
#define HTTPREQ_MAX		STATS_REQUEST_MAX
#define HTTPREQ_TARGET_MAX	256
#define HTTPREQ_FIELDS_MAX	64

enum httpreq_result {
	HTTPREQ_INCOMPLETE = 0,	/* no blank line yet: read more */
	HTTPREQ_OK,		/* a complete, well-formed head */
	HTTPREQ_BAD,		/* malformed or oversized: 400 and close */
};

enum httpreq_method {
	HTTPREQ_GET = 0,
	HTTPREQ_HEAD,
	HTTPREQ_OTHER,		/* a valid token, not served (405) */
};

struct httpreq {
	enum httpreq_method	 method;
	char			 target[HTTPREQ_TARGET_MAX + 1];
	int			 minor;		/* HTTP/1.<minor> */
	size_t			 headlen;	/* bytes up to the blank line */
	const char		*why;		/* HTTPREQ_BAD: for the log */
};

/*
 * Look at the first len bytes of a connection.  Never reads beyond len,
 * never allocates.  A head that has not ended within HTTPREQ_MAX bytes is
 * HTTPREQ_BAD, so a caller never needs to buffer more than that.
 */
enum httpreq_result	httpreq_parse(const char *, size_t len,
			    struct httpreq *);

#endif /* HTTPREQ_H */
