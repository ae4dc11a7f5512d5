/*
 * httpreq.c - a bounded parser for the request heads of the stats
 * listener (SPEC section 11): GET and HEAD of two fixed paths, nothing else.
 *
 * RFC 9112 grammar, strictly: "METHOD SP request-target SP HTTP/1.x CRLF",
 * then header fields "name: value CRLF", then an empty line.  Anything a
 * lenient server would guess at is refused instead (400): a bare CR or LF,
 * NUL, obs-fold (a field line starting with white space), white space
 * before the colon, an HTTP/1.1 request without exactly one Host, and any
 * message body (Content-Length other than 0, Transfer-Encoding), because
 * the listener never reads one and must not take its bytes for a second
 * request.  The whole head must fit in HTTPREQ_MAX bytes.
 */
#include "config.h"

#include <string.h>

#include "httpreq.h"

static int	httpreq_tchar(unsigned char);
static int	httpreq_line(const char *, size_t, size_t, size_t *);
static int	httpreq_request_line(const char *, size_t, struct httpreq *);
static int	httpreq_field(const char *, size_t, struct httpreq *, int *);
static int	httpreq_name_is(const char *, size_t, const char *);

/* RFC 9110 5.6.2 token characters. */
static int
httpreq_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * The line starting at off: 1 with *eol at its CR, 0 if its end is not
 * there yet, -1 on a bare CR, a bare LF or NUL.
 */
static int
httpreq_line(const char *b, size_t len, size_t off, size_t *eol)
{
	size_t	i;

	for (i = off; i < len; i++) {
		if (b[i] == '\0' || b[i] == '\n')
			return -1;
		if (b[i] != '\r')
			continue;
		if (i + 1 == len)
			return 0;
		if (b[i + 1] != '\n')
			return -1;
		*eol = i;
		return 1;
	}
	return 0;
}

static int
httpreq_name_is(const char *name, size_t n, const char *want)
{
	size_t	i;

	if (n != strlen(want))
		return 0;
	for (i = 0; i < n; i++) {
		char	c = name[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != want[i])
			return 0;
	}
	return 1;
}

static int
httpreq_request_line(const char *l, size_t n, struct httpreq *r)
{
	size_t	i = 0, m, t;

	while (i < n && httpreq_tchar((unsigned char)l[i]))
		i++;
	if (i == 0 || i == n || l[i] != ' ')
		return -1;
	m = i;
	if (m == 3 && memcmp(l, "GET", 3) == 0)
		r->method = HTTPREQ_GET;
	else if (m == 4 && memcmp(l, "HEAD", 4) == 0)
		r->method = HTTPREQ_HEAD;
	else
		r->method = HTTPREQ_OTHER;
	t = ++i;
	/* origin-form or anything else visible; only exact paths match. */
	while (i < n && l[i] > ' ' && l[i] < 0x7f)
		i++;
	if (i == t || i == n || l[i] != ' ' || i - t > HTTPREQ_TARGET_MAX)
		return -1;
	memcpy(r->target, l + t, i - t);
	r->target[i - t] = '\0';
	i++;
	if (n - i != 8 || memcmp(l + i, "HTTP/1.", 7) != 0 ||
	    (l[i + 7] != '0' && l[i + 7] != '1'))
		return -1;
	r->minor = l[i + 7] - '0';
	return 0;
}

/* One header field line; counts Host in *hosts. */
static int
httpreq_field(const char *l, size_t n, struct httpreq *r, int *hosts)
{
	const char	*v;
	size_t		 i = 0, k, vn;

	while (i < n && httpreq_tchar((unsigned char)l[i]))
		i++;
	/* No name (obs-fold, leading space) or space before the colon. */
	if (i == 0 || i == n || l[i] != ':')
		return -1;
	v = l + i + 1;
	vn = n - i - 1;
	while (vn > 0 && (*v == ' ' || *v == '\t'))
		v++, vn--;
	while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	for (k = 0; k < vn; k++)
		if (((unsigned char)v[k] < ' ' && v[k] != '\t') || v[k] == 0x7f)
			return -1;
	if (httpreq_name_is(l, i, "host"))
		(*hosts)++;
	else if (httpreq_name_is(l, i, "transfer-encoding")) {
		r->why = "message body";
		return -1;
	} else if (httpreq_name_is(l, i, "content-length") &&
	    (vn != 1 || v[0] != '0')) {
		r->why = "message body";
		return -1;
	}
	return 0;
}

enum httpreq_result
httpreq_parse(const char *b, size_t len, struct httpreq *r)
{
	size_t	off = 0, eol = 0, nfields = 0;
	int	rc, hosts = 0;

	memset(r, 0, sizeof(*r));
	if (len > HTTPREQ_MAX)
		len = HTTPREQ_MAX;
	for (;;) {
		if ((rc = httpreq_line(b, len, off, &eol)) == 0) {
			if (len < HTTPREQ_MAX)
				return HTTPREQ_INCOMPLETE;
			r->why = "request too long";
			return HTTPREQ_BAD;
		}
		if (rc == -1) {
			r->why = "bare CR, bare LF or NUL";
			return HTTPREQ_BAD;
		}
		if (off == 0) {
			if (httpreq_request_line(b, eol, r) == -1) {
				r->why = "malformed request line";
				return HTTPREQ_BAD;
			}
		} else if (eol == off)
			break;
		else if (++nfields > HTTPREQ_FIELDS_MAX ||
		    httpreq_field(b + off, eol - off, r, &hosts) == -1) {
			if (r->why == NULL)
				r->why = "malformed header field";
			return HTTPREQ_BAD;
		}
		off = eol + 2;
	}
	/* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host. */
	if ((r->minor == 1 && hosts != 1) || hosts > 1) {
		r->why = "Host missing or repeated";
		return HTTPREQ_BAD;
	}
	r->headlen = eol + 2;
	return HTTPREQ_OK;
}
