/*
 * fuzz_diff.c - libFuzzer target of the differential check (issue 8,
 * item 4): client streams through the real filter to a recording,
 * lenient backend, for SMTP, IMAP and POP3 (diff_check.h).
 *
 * Byte 0 selects the protocol, the service (STARTTLS in cleartext or
 * implicit TLS, require_starttls), how the stream is cut, and whether the
 * rest is the client stream itself or a choice sequence for the attack
 * grammar; bytes 1 and 2 the backend's advertised set and behaviour.  A
 * violation prints the input and what the backend read, then aborts so
 * that libFuzzer keeps the input.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct dc_run;
static void	 fd_fail(struct dc_run *);
#define DC_ON_VIOLATION(r, cls, msg)	fd_fail(r)

#include "diff_check.h"

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const uint8_t	*fd_data;
static size_t		 fd_size;

static void
fd_fail(struct dc_run *r)
{
	/* Let the backend's view end where it stopped. */
	fprintf(stderr, "\n*** DIFFERENTIAL CHECK FAILED\n");
	dc_dump(r, stderr);
	fprintf(stderr, "  input: \"");
	dc_print(stderr, fd_data, fd_size);
	fprintf(stderr, "\"\n");
	abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(LOG_TARGET_STDERR, LOG_LEVEL_ERROR, 0);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dc_run	 r;
	struct dc_tape	 t;
	struct dc_rand	 g;

	if (size < DC_HDR)
		return 0;
	fd_data = data;
	fd_size = size;
	memset(&t, 0, sizeof(t));
	if (data[0] & DC_M_GRAMMAR) {
		memset(&g, 0, sizeof(g));
		g.p = data + DC_HDR;
		g.n = size - DC_HDR;
		dc_gen(&g, dc_proto(data[0]), &t);
		dc_run_stream(&r, data, t.b, t.len);
	} else
		dc_run_stream(&r, data, data + DC_HDR, size - DC_HDR);
	dc_end(&r);
	free(t.b);
	return 0;
}
