/*
 * lineio.h - bounded line reads from an evbuffer.
 *
 * A line is never searched or copied beyond the limit: an unterminated
 * line longer than the limit is reported as such, never grown.
 */
#ifndef LINEIO_H
#define LINEIO_H

#include <stddef.h>

#include <event2/buffer.h>

/* flags of a line read */
#define LINEIO_BARE_LF	0x01	/* ended by LF without CR */
#define LINEIO_HAS_CR	0x02	/* a CR inside the line (not before LF) */
#define LINEIO_HAS_NUL	0x04	/* a NUL byte inside the line */

enum lineio_result {
	LINEIO_MORE = 0,	/* no complete line yet, within the limit */
	LINEIO_LINE,		/* a line was removed from the buffer */
	LINEIO_TOO_LONG,	/* more than max bytes before the LF */
};

/*
 * Take one line of at most max bytes (without its EOL) from in, into buf
 * (bufsz must be >= max + 2; the copy is NUL-terminated, but may contain
 * NULs: use *len).  On LINEIO_TOO_LONG nothing is removed: the caller refuses
 * the line and calls lineio_skip() until it returns 1.
 */
enum lineio_result lineio_get(struct evbuffer *in, size_t max, char *buf,
		    size_t bufsz, size_t *len, unsigned *flags);

/*
 * Discard up to and including the next LF.  Returns 1 if the LF was found
 * (the line is over), 0 if everything was discarded and the line goes on.
 */
int		lineio_skip(struct evbuffer *in);

/* Position of the first LF within the first max bytes, or -1. */
ssize_t		lineio_find_lf(struct evbuffer *in, size_t max);

/*
 * Scratch line buffers, one set per thread.  A protocol needs its line
 * buffers only while one of its hooks runs (a line is read, checked and
 * forwarded or refused within the call; what must outlive the call is
 * kept in the protocol's own state), so an idle session holds none: the
 * worker thread's buffers serve all its sessions in turn.
 *
 * lineio_scratch() returns buffer which (< LINEIO_SCRATCH_N) of at least
 * size bytes, or NULL when out of memory.  The contents do not survive a
 * call that asks for more than the buffer holds (it is replaced, never
 * shrunk), so a hook asks once, with its session's fixed size, and the
 * pointer is not kept past the hook.  lineio_scratch_free() releases the
 * calling thread's buffers (at the end of a worker thread).
 */
#define LINEIO_SCRATCH_LINE	0	/* a line as read */
#define LINEIO_SCRATCH_OUT	1	/* its rewritten form (IMAP) */
#define LINEIO_SCRATCH_N	2

char		*lineio_scratch(unsigned which, size_t size);
void		 lineio_scratch_free(void);

#endif /* LINEIO_H */
