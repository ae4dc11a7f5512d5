/*
 * fuzz_btls.c - libFuzzer harness for backend_tls = "starttls" (SPEC 12):
 * the backend prelude of the three filters, driven by a scripted server
 * and a client that talks whenever it likes.
 *
 * Input: byte 0 chooses the protocol (bits 0-1, % 3: SMTP, IMAP, POP3),
 * the client side (bits 2-3, % 3: tls_mode none, starttls, implicit) and,
 * for SMTP, xclient (bit 4); then
 * chunks, each a byte (bit 0: 0 backend, 1 client; the rest: a length up
 * to 127) and that many bytes.  After every chunk the filter is pumped
 * as session.c pumps it; at FILTER_BACKEND_STARTTLS the backend leg's
 * handshake "verifies" at once, at FILTER_STARTTLS the client's.
 *
 * Checked on every input, until the backend leg is TLS:
 *  - the client gets nothing but, when the session ends, exactly the
 *    protocol's temporary failure (SPEC 12: its first line);
 *  - the backend gets only our own commands, each once, in order
 *    (capability command, then STARTTLS): never a byte of the client's;
 *  - at the go-ahead nothing the server sent is left unread (the core
 *    cut it), and STARTTLS was the last thing we sent;
 *  - then, without xclient, the client's first bytes are our greeting.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conf.h"
#include "filter.h"
#include "log.h"
#include "mailtlsd.h"
#include "proto.h"

#define BT_CHECK(c, ...) do {						\
	if (!(c)) {							\
		fprintf(stderr, "INVARIANT VIOLATED: " __VA_ARGS__);	\
		fprintf(stderr, "\n");					\
		abort();						\
	}								\
} while (0)

static const struct {
	enum proto_id		 id;
	const struct proto_ops	*ops;
	const char		*prelude;	/* our commands, in order */
	size_t			 capalen;	/* the first one's length */
	const char		*unavail;
	const char		*greeting;
} bt_protos[] = {
	{ PROTO_SMTP, &proto_smtp_ops, "EHLO mx.example.test\r\nSTARTTLS\r\n",
	    22, "421 4.3.2 mx.example.test Service temporarily "
	    "unavailable\r\n", "220 mx.example.test ESMTP\r\n" },
	{ PROTO_IMAP, &proto_imap_ops, "mt1 CAPABILITY\r\nmt2 STARTTLS\r\n",
	    16, "* BYE [UNAVAILABLE] Service temporarily unavailable\r\n",
	    "* OK mx.example.test ready\r\n" },
	{ PROTO_POP3, &proto_pop3_ops, "CAPA\r\nSTLS\r\n", 6,
	    "-ERR [SYS/TEMP] Service temporarily unavailable\r\n",
	    "+OK mx.example.test ready\r\n" },
};

struct bt_run {
	struct conf_service	 svc;
	struct filter		*f;
	struct evbuffer		*cin, *bin, *to_c, *to_b;
	unsigned		 p;		/* bt_protos[] */
	bool			 xclient;
	bool			 up;		/* backend leg TLS */
	bool			 greeted;	/* first client bytes checked */
	char			 sent[64];	/* to the backend before TLS */
	size_t			 nsent;
};

/* Take what the filter wrote, checking it against the rules above. */
static void
bt_outputs(struct bt_run *r, bool closed)
{
	size_t		 nb = evbuffer_get_length(r->to_b);
	size_t		 nc = evbuffer_get_length(r->to_c);
	const char	*want = bt_protos[r->p].prelude;
	char		 buf[128];

	if (!r->up) {
		BT_CHECK(r->nsent + nb <= strlen(want),
		    "%zu bytes to the backend before TLS", r->nsent + nb);
		evbuffer_remove(r->to_b, r->sent + r->nsent, nb);
		r->nsent += nb;
		BT_CHECK(memcmp(r->sent, want, r->nsent) == 0,
		    "to the backend before TLS: [%.*s]", (int)r->nsent,
		    r->sent);
		if (closed && nc > 0) {
			BT_CHECK(nc == strlen(bt_protos[r->p].unavail),
			    "%zu bytes to the client before TLS", nc);
			evbuffer_remove(r->to_c, buf, nc);
			BT_CHECK(memcmp(buf, bt_protos[r->p].unavail, nc) == 0,
			    "not the temporary failure: [%.*s]", (int)nc, buf);
		}
		BT_CHECK(evbuffer_get_length(r->to_c) == 0,
		    "%zu bytes to the client before the backend's TLS", nc);
		return;
	}
	if (!r->greeted && !r->xclient && nc > 0) {
		const char *g = bt_protos[r->p].greeting;

		BT_CHECK(nc >= strlen(g), "short first reply");
		evbuffer_copyout(r->to_c, buf, strlen(g));
		BT_CHECK(memcmp(buf, g, strlen(g)) == 0,
		    "first client bytes: [%.*s]", (int)strlen(g), buf);
		r->greeted = true;
	}
	evbuffer_drain(r->to_b, nb);
	evbuffer_drain(r->to_c, evbuffer_get_length(r->to_c));
}

/* As session.c: false once the session is over. */
static bool
bt_pump(struct bt_run *r)
{
	enum filter_verdict	 v;
	int			 round;

	for (round = 0; round < 8; round++) {
		v = filter_pump(r->f, r->cin, r->bin, r->to_c, r->to_b);
		if (v == FILTER_BACKEND_STARTTLS) {
			BT_CHECK(evbuffer_get_length(r->bin) == 0,
			    "backend bytes left behind the go-ahead");
			bt_outputs(r, false);
			if (!r->up)
				BT_CHECK(r->nsent ==
				    strlen(bt_protos[r->p].prelude),
				    "go-ahead before our STARTTLS");
			r->up = true;
			v = filter_backend_tls_established(r->f, r->bin,
			    r->to_c, r->to_b);
			if (v == FILTER_CONTINUE)
				continue;
		}
		if (v == FILTER_STARTTLS) {
			BT_CHECK(r->up, "client STARTTLS before the backend's");
			bt_outputs(r, false);
			if (filter_tls_established(r->f, r->bin, r->to_b) ==
			    FILTER_CONTINUE)
				continue;
			v = FILTER_CLOSE;
		}
		bt_outputs(r, v == FILTER_CLOSE);
		return v != FILTER_CLOSE;
	}
	return true;
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char		 name[] = "fuzz", host[] = "mx.example.test";
	struct filter_params	 fp;
	struct bt_run		 r;
	unsigned		 mode;
	size_t			 pos = 1, n;

	if (size < 1)
		return 0;
	log_init(LOG_TARGET_STDERR, getenv("FUZZ_VERBOSE") ?
	    LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR + 0, 0);
	memset(&r, 0, sizeof(r));
	r.p = (data[0] & 3) % 3;
	mode = ((data[0] >> 2) & 3) % 3;
	r.xclient = r.p == 0 && (data[0] & 0x10) != 0;
	r.svc.name = name;
	r.svc.protocol = bt_protos[r.p].id;
	r.svc.tls_mode = mode == 0 ? TLS_MODE_NONE : mode == 1 ?
	    TLS_MODE_STARTTLS : TLS_MODE_IMPLICIT;
	r.svc.require_starttls = true;
	r.svc.hostname = host;
	r.svc.max_line_length = proto_default_line_max(r.svc.protocol);
	r.svc.idle_timeout = proto_default_idle_timeout(r.svc.protocol);
	r.svc.max_connections_per_ip = DEFAULT_MAX_CONNECTIONS_PER_IP;
	r.svc.backend_tls = BACKEND_TLS_STARTTLS;
	r.svc.xclient = r.xclient;
	memset(&fp, 0, sizeof(fp));
	fp.svc = &r.svc;
	fp.tls_active = mode != 1;
	fp.session_id = "fuzz000000000000";
	fp.client_addr = "192.0.2.1";
	fp.client_port = 40000;
	r.f = filter_new(bt_protos[r.p].ops, &fp);
	r.cin = evbuffer_new();
	r.bin = evbuffer_new();
	r.to_c = evbuffer_new();
	r.to_b = evbuffer_new();
	if (r.f == NULL || r.cin == NULL || r.bin == NULL || r.to_c == NULL ||
	    r.to_b == NULL)
		abort();
	filter_set_backend(r.f, "192.0.2.25:587");
	while (pos < size) {
		n = data[pos] >> 1;
		if (n > size - pos - 1)
			n = size - pos - 1;
		evbuffer_add((data[pos] & 1) ? r.cin : r.bin, data + pos + 1,
		    n);
		pos += 1 + n;
		if (!bt_pump(&r))
			break;
	}
	filter_free(r.f);
	evbuffer_free(r.cin);
	evbuffer_free(r.bin);
	evbuffer_free(r.to_c);
	evbuffer_free(r.to_b);
	return 0;
}
