/*
 * lineio.c - bounded line reads from an evbuffer.
 *
 * The search for LF never looks past max + 2 bytes (a line of max bytes
 * plus CRLF), so a peer that never ends its line costs a bounded scan and
 * is refused as soon as the limit is crossed (nginx "too long command").
 */
#include "config.h"

#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "lineio.h"

ssize_t
lineio_find_lf(struct evbuffer *in, size_t max)
{
	struct evbuffer_ptr	 p;
	size_t			 len = evbuffer_get_length(in);

	if (len == 0)
		return -1;
	if (len > max)
		len = max;
	/* evbuffer_search_range: only the first `len` bytes are looked at. */
	if (evbuffer_ptr_set(in, &p, len, EVBUFFER_PTR_SET) == -1)
		return -1;
	p = evbuffer_search_range(in, "\n", 1, NULL, &p);
	return p.pos;
}

enum lineio_result
lineio_get(struct evbuffer *in, size_t max, char *buf, size_t bufsz,
    size_t *len, unsigned *flags)
{
	ssize_t		 lf;
	size_t		 n, i;
	unsigned	 f = 0;

	*len = 0;
	*flags = 0;
	/* Room for max bytes, an optional CR, and the LF itself. */
	lf = lineio_find_lf(in, max + 2);
	if (lf == -1)
		return evbuffer_get_length(in) > max + 1 ?
		    LINEIO_TOO_LONG : LINEIO_MORE;

	n = (size_t)lf;
	if (n + 1 > bufsz)
		return LINEIO_TOO_LONG;
	evbuffer_copyout(in, buf, n + 1);	/* the line and its LF */
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	else
		f |= LINEIO_BARE_LF;
	if (n > max)
		return LINEIO_TOO_LONG;	/* nothing removed: see lineio_skip() */
	evbuffer_drain(in, (size_t)lf + 1);
	buf[n] = '\0';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c == '\r')
			f |= LINEIO_HAS_CR;
		else if (c == '\0')
			f |= LINEIO_HAS_NUL;
	}
	*len = n;
	*flags = f;
	return LINEIO_LINE;
}

int
lineio_skip(struct evbuffer *in)
{
	struct evbuffer_ptr	 p;

	p = evbuffer_search(in, "\n", 1, NULL);
	if (p.pos == -1) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return 0;
	}
	evbuffer_drain(in, (size_t)p.pos + 1);
	return 1;
}

/*
 * Per thread: a session lives on one worker thread, and no two hooks of
 * one thread run at once.
 */
static __thread char	*scratch[LINEIO_SCRATCH_N];
static __thread size_t	 scratchsz[LINEIO_SCRATCH_N];

char *
lineio_scratch(unsigned which, size_t size)
{
	char	*p;

	if (which >= LINEIO_SCRATCH_N || size == 0)
		return NULL;
	if (scratchsz[which] >= size)
		return scratch[which];
	/* Nothing to keep: a new buffer, the old one only freed then. */
	if ((p = malloc(size)) == NULL)
		return NULL;
	free(scratch[which]);
	scratch[which] = p;
	scratchsz[which] = size;
	return p;
}

void
lineio_scratch_free(void)
{
	unsigned	 i;

	for (i = 0; i < LINEIO_SCRATCH_N; i++) {
		free(scratch[i]);
		scratch[i] = NULL;
		scratchsz[i] = 0;
	}
}
