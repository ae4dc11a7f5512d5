/*
 * test_filter.c - the filter core (filter.c), table-driven.
 *
 * The FIFO, the error budget and the STARTTLS boundary are driven through
 * a toy protocol defined here, one command per line:
 *   "FWD x"  forwarded; the backend's next line answers it
 *   "BAD"    refused by us (counts against max_errors)
 *   "HI"     answered by us, not counted
 *   "TLS"    the go-ahead once earlier replies are out
 * so that a row shows exactly what the core does, whatever the real
 * protocols' grammars.  The keyword matcher, the SASL line reader and the
 * canonical command writer have tables of their own.
 */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "conf.h"
#include "filter.h"
#include "filter_harness.h"
#include "lineio.h"
#include "log.h"
#include "proto.h"

#define TOY_FWD		FSLOT_PROTO

struct toy {
	int	 resets;
	bool	 tls_wait;	/* a TLS command is queued: read no further */
};

static void *
toy_init(struct filter *f, const struct filter_params *p)
{
	(void)f;
	(void)p;
	return calloc(1, sizeof(struct toy));
}

static void
toy_free(void *p)
{
	free(p);
}

static enum filter_verdict
toy_client(struct filter *f, struct evbuffer *in, struct evbuffer *to_b,
    struct evbuffer *to_c)
{
	struct toy	*t = f->proto;
	char		 buf[256];
	size_t		 len;
	unsigned	 flags;
	enum filter_verdict v;

	for (;;) {
		filter_flush(f, to_c);
		if (f->closing)
			return FILTER_CLOSE;
		v = filter_starttls(f, in, to_c, "GO\r\n");
		if (v != FILTER_CONTINUE)
			return v;
		if (t->tls_wait)
			return FILTER_CONTINUE;
		if (filter_fifo_full(f))
			return FILTER_CONTINUE;
		if (lineio_get(in, 200, buf, sizeof(buf), &len, &flags) !=
		    LINEIO_LINE)
			return FILTER_CONTINUE;
		if (len > 4 && memcmp(buf, "FWD ", 4) == 0) {
			filter_send_command(to_b, NULL, 0, "FWD", 3, buf + 4,
			    len - 4);
			filter_slot_push(f, TOY_FWD, NULL, NULL, 0);
		} else if (strcmp(buf, "HI") == 0)
			filter_local(f, NULL, 0, "hello\r\n");
		else if (strcmp(buf, "TLS") == 0) {
			filter_slot_push(f, FSLOT_STARTTLS, NULL, NULL, 0);
			t->tls_wait = true;
		}
		else
			filter_refuse(f, NULL, 0, "no\r\n");
	}
}

static enum filter_verdict
toy_backend(struct filter *f, struct evbuffer *in, struct evbuffer *to_c,
    struct evbuffer *to_b)
{
	char		 buf[256];
	size_t		 len;
	unsigned	 flags;

	(void)to_b;
	while (lineio_get(in, 200, buf, sizeof(buf), &len, &flags) ==
	    LINEIO_LINE) {
		if (!filter_backend_owes(f)) {
			f->reason = "unsolicited";
			return FILTER_CLOSE;
		}
		evbuffer_add(to_c, buf, len);
		evbuffer_add(to_c, "\r\n", 2);
		filter_slot_pop(f);
		filter_flush(f, to_c);
	}
	return f->closing ? FILTER_CLOSE : FILTER_CONTINUE;
}

static void
toy_tls_reset(struct filter *f, struct evbuffer *to_b)
{
	struct toy *t = f->proto;

	t->resets++;
	t->tls_wait = false;
	evbuffer_add(to_b, "RESET\r\n", 7);
	filter_slot_push(f, TOY_FWD, NULL, NULL, 0);
}

static void
toy_last_word(const struct filter *f, char *buf, size_t len)
{
	snprintf(buf, len, "bye %s\r\n", f->hostname);
}

static void
toy_unavailable(struct evbuffer *b, const char *h)
{
	(void)b;
	(void)h;
}

static const struct proto_ops toy_ops = {
	.name = "toy",
	.alpn = "toy",
	.init = toy_init,
	.free = toy_free,
	.client_input = toy_client,
	.backend_input = toy_backend,
	.tls_reset = toy_tls_reset,
	.last_word = toy_last_word,
	.unavailable = toy_unavailable,
};

struct core_case {
	const char	*name;
	unsigned	 max_errors;	/* 0 = default */
	bool		 starttls;	/* STARTTLS service in cleartext */
	const char	*client;	/* all at once */
	const char	*backend;	/* after the client's bytes */
	const char	*window;	/* backend bytes inside the handshake */
	const char	*to_backend;
	const char	*to_client;
	enum filter_verdict verdict;
	const char	*reason;	/* NULL: not checked */
};

static const struct core_case core_cases[] = {
	{ "local reply waits for the forwarded one", 0, false,
	  "FWD a\r\nHI\r\n", "ok a\r\n", NULL,
	  "FWD a\r\n", "ok a\r\nhello\r\n", FILTER_CONTINUE, NULL },
	{ "refusal keeps its place", 0, false,
	  "FWD a\r\nX\r\nFWD b\r\n", "ok a\r\nok b\r\n", NULL,
	  "FWD a\r\nFWD b\r\n", "ok a\r\nno\r\nok b\r\n", FILTER_CONTINUE,
	  NULL },
	{ "error budget: default 10", 0, false,
	  "1\r\n2\r\n3\r\n4\r\n5\r\n6\r\n7\r\n8\r\n9\r\n", "", NULL,
	  "", "no\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\n",
	  FILTER_CONTINUE, NULL },
	{ "error budget: the tenth closes", 0, false,
	  "1\r\n2\r\n3\r\n4\r\n5\r\n6\r\n7\r\n8\r\n9\r\n10\r\nHI\r\n", "",
	  NULL, "", "no\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\nno\r\n"
	  "no\r\nbye mx.example.test\r\n", FILTER_CLOSE, "too many errors" },
	{ "error budget: max_errors 2", 2, false,
	  "a\r\nb\r\nFWD c\r\n", "", NULL,
	  "", "no\r\nno\r\nbye mx.example.test\r\n", FILTER_CLOSE,
	  "too many errors" },
	{ "local replies are not refusals", 1, false,
	  "HI\r\nHI\r\nHI\r\n", "", NULL,
	  "", "hello\r\nhello\r\nhello\r\n", FILTER_CONTINUE, NULL },
	{ "go-ahead after earlier replies, reset after handshake", 0, true,
	  "FWD a\r\nTLS\r\n", "ok a\r\n", NULL,
	  "FWD a\r\nRESET\r\n", "ok a\r\nGO\r\n", FILTER_STARTTLS, NULL },
	{ "pipelined bytes after the go-ahead command", 0, true,
	  "TLS\r\nFWD a\r\n", "", NULL,
	  "", "", FILTER_CLOSE, "pipelined data after STARTTLS" },
	{ "pipelined behind a pending reply", 0, true,
	  "FWD a\r\nTLS\r\nHI\r\n", "ok a\r\n", NULL,
	  "FWD a\r\n", "ok a\r\n", FILTER_CLOSE,
	  "pipelined data after STARTTLS" },
	{ "backend bytes in the handshake window", 0, true,
	  "TLS\r\n", "", "late\r\n",
	  "", "GO\r\n", FILTER_CLOSE, "backend data during TLS handshake" },
	{ "unsolicited backend line", 0, false,
	  "", "hello\r\n", NULL,
	  "", "", FILTER_CLOSE, "unsolicited" },
};

static void
core_service(struct conf_service *svc, const struct core_case *c)
{
	static char	 name[] = "test", host[] = "mx.example.test";

	memset(svc, 0, sizeof(*svc));
	svc->name = name;
	svc->hostname = host;
	svc->tls_mode = c->starttls ? TLS_MODE_STARTTLS : TLS_MODE_IMPLICIT;
	svc->max_errors = c->max_errors;
}

/* A toy filter with its four buffers. */
struct toy_drv {
	struct conf_service	 svc;
	struct filter		*f;
	struct evbuffer		*cin, *bin, *to_b, *to_c;
};

static void
toy_open(struct toy_drv *d, const struct core_case *c)
{
	struct filter_params	 fp;

	core_service(&d->svc, c);
	memset(&fp, 0, sizeof(fp));
	fp.svc = &d->svc;
	fp.tls_active = !c->starttls;
	fp.session_id = "0123456789abcdef";
	fp.client_addr = "192.0.2.1";
	assert_non_null(d->f = filter_new(&toy_ops, &fp));
	d->cin = evbuffer_new();
	d->bin = evbuffer_new();
	d->to_b = evbuffer_new();
	d->to_c = evbuffer_new();
}

static enum filter_verdict
toy_pump(struct toy_drv *d)
{
	return filter_pump(d->f, d->cin, d->bin, d->to_c, d->to_b);
}

static void
toy_close(struct toy_drv *d)
{
	evbuffer_free(d->cin);
	evbuffer_free(d->bin);
	evbuffer_free(d->to_b);
	evbuffer_free(d->to_c);
	filter_free(d->f);
}

static char *
take(struct evbuffer *b)
{
	size_t	len;

	return fh_take(b, &len);
}

static void
test_core_table(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(core_cases) / sizeof(core_cases[0]); i++) {
		const struct core_case *c = &core_cases[i];
		struct toy_drv		 d;
		enum filter_verdict	 v;
		char			*gb, *gc;

		toy_open(&d, c);
		evbuffer_add(d.cin, c->client, strlen(c->client));
		v = toy_pump(&d);
		if (v == FILTER_CONTINUE) {
			evbuffer_add(d.bin, c->backend, strlen(c->backend));
			v = toy_pump(&d);
		}
		if (v == FILTER_STARTTLS) {
			if (c->window != NULL)
				evbuffer_add(d.bin, c->window,
				    strlen(c->window));
			if (filter_tls_established(d.f, d.bin, d.to_b) !=
			    FILTER_CONTINUE)
				v = FILTER_CLOSE;
			else
				assert_int_equal(
				    ((struct toy *)d.f->proto)->resets, 1);
		}
		gb = take(d.to_b);
		gc = take(d.to_c);
		if (strcmp(gb, c->to_backend) != 0 ||
		    strcmp(gc, c->to_client) != 0 || v != c->verdict ||
		    (c->reason && strcmp(filter_reason(d.f), c->reason) != 0))
			fail_msg("%s: to_backend [%s] to_client [%s] verdict "
			    "%d reason %s", c->name, gb, gc, v,
			    filter_reason(d.f));
		free(gb);
		free(gc);
		toy_close(&d);
	}
}

/* The FIFO holds a client at FILTER_PENDING_MAX and keeps every reply. */
static void
test_core_fifo_bound(void **state)
{
	struct core_case	 c = { .name = "fifo" };
	struct toy_drv		 d;
	int			 i;

	(void)state;
	toy_open(&d, &c);
	for (i = 0; i < FILTER_PENDING_MAX + 10; i++)
		evbuffer_add_printf(d.cin, "FWD %d\r\n", i);
	assert_int_equal(toy_pump(&d), FILTER_CONTINUE);
	assert_int_equal(filter_fifo_count(d.f), FILTER_PENDING_MAX);
	assert_true(evbuffer_get_length(d.cin) > 0);	/* held, not read */
	for (i = 0; i < FILTER_PENDING_MAX; i++)
		evbuffer_add_printf(d.bin, "ok\r\n");
	assert_int_equal(toy_pump(&d), FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.cin), 0);	/* read once room */
	assert_int_equal(filter_fifo_count(d.f), 10);
	for (i = 0; i < 10; i++)
		evbuffer_add_printf(d.bin, "ok\r\n");
	assert_int_equal(toy_pump(&d), FILTER_CONTINUE);
	assert_int_equal(filter_fifo_count(d.f), 0);
	assert_int_equal(evbuffer_get_length(d.to_c),
	    (size_t)(FILTER_PENDING_MAX + 10) * 4);
	toy_close(&d);
}

/* A client that does not read its replies is not read either. */
static void
test_core_backed_up_client(void **state)
{
	struct core_case	 c = { .name = "backed up" };
	struct toy_drv		 d;
	static char		 big[RELAY_HIGH_WATERMARK];

	(void)state;
	toy_open(&d, &c);
	evbuffer_add(d.to_c, big, sizeof(big));
	evbuffer_add(d.cin, "HI\r\n", 4);
	assert_int_equal(toy_pump(&d), FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.cin), 4);
	evbuffer_drain(d.to_c, sizeof(big));
	assert_int_equal(toy_pump(&d), FILTER_CONTINUE);
	assert_int_equal(evbuffer_get_length(d.cin), 0);
	assert_int_equal(evbuffer_get_length(d.to_c), 7);
	toy_close(&d);
}

/* Capability keywords: split at any run of SP/HTAB, case-insensitive. */
static void
test_capa(void **state)
{
	static const struct filter_capa_rule rules[] = {
		{ "STARTTLS",	FCAPA_HIDE_ALWAYS },
		{ "AUTH=",	FCAPA_PREFIX | FCAPA_HIDE_CLEAR },
		{ "USER",	FCAPA_HIDE_CLEAR },
		{ "LOGINDISABLED", FCAPA_HIDE_TLS },
	};
	static const struct {
		const char	*text;
		bool		 tls;
		const char	*kept;	/* the keywords kept, one SP apart */
	} t[] = {
		{ "IMAP4rev1 AUTH=PLAIN STARTTLS", false, "IMAP4rev1" },
		{ "IMAP4rev1\tAUTH=PLAIN\t\tauth=login", false, "IMAP4rev1" },
		{ "  a \t b  ", false, "a b" },
		{ "starttls StartTLS X", true, "X" },
		{ "AUTH=PLAIN LOGINDISABLED", true, "AUTH=PLAIN" },
		{ "AUTH=PLAIN LOGINDISABLED", false, "LOGINDISABLED" },
		{ "AUTH USER user USERX", false, "AUTH USERX" },
		{ "", false, "" },
		{ "\t \t", false, "" },
	};
	struct core_case	 c = { .name = "capa", .starttls = true };
	struct toy_drv		 d;
	struct filter		*f;
	size_t			 i, pos, tl, kl;
	const char		*tok;
	char			 kept[128];

	(void)state;
	toy_open(&d, &c);
	f = d.f;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		f->tls = t[i].tls ? FILTER_TLS_ACTIVE : FILTER_TLS_CLEAR;
		kl = 0;
		kept[0] = '\0';
		pos = 0;
		while (filter_capa_next(t[i].text, strlen(t[i].text), &pos,
		    &tok, &tl)) {
			if (filter_capa_hidden(f, rules, 4, tok, tl))
				continue;
			kl += (size_t)snprintf(kept + kl, sizeof(kept) - kl,
			    "%s%.*s", kl ? " " : "", (int)tl, tok);
		}
		if (strcmp(kept, t[i].kept) != 0)
			fail_msg("[%s] tls=%d: kept [%s], want [%s]",
			    t[i].text, t[i].tls, kept, t[i].kept);
	}
	toy_close(&d);
}

/* SASL responses: base64, "=", "*", bounded; nothing else forwarded. */
static void
test_sasl(void **state)
{
	static const struct {
		const char	*in;
		enum filter_sasl want;
		const char	*to_backend;
		size_t		 left;
	} t[] = {
		{ "dXNlcg==\r\n", FILTER_SASL_SENT, "dXNlcg==\r\n", 0 },
		{ "dXNlcg==\n", FILTER_SASL_BAD, "", 0 },	/* bare LF */
		{ "=\r\n", FILTER_SASL_SENT, "=\r\n", 0 },
		{ "*\r\n", FILTER_SASL_CANCEL, "*\r\n", 0 },
		{ "dXNl\r\nNOOP\r\n", FILTER_SASL_SENT, "dXNl\r\n", 6 },
		{ "dXN\r\n", FILTER_SASL_BAD, "", 0 },		/* length */
		{ "dX=l\r\n", FILTER_SASL_BAD, "", 0 },		/* after pad */
		{ "MAIL FROM:<a>\r\n", FILTER_SASL_BAD, "", 0 },
		{ "dXNl\tcg==\r\n", FILTER_SASL_BAD, "", 0 },
		{ "dXNl", FILTER_SASL_MORE, "", 4 },
		{ "", FILTER_SASL_MORE, "", 0 },
	};
	struct core_case	 c = { .name = "sasl" };
	struct toy_drv		 d;
	struct filter		*f;
	struct evbuffer		*in, *out;
	size_t			 i;
	char			*got;

	(void)state;
	toy_open(&d, &c);
	f = d.f;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		in = evbuffer_new();
		out = evbuffer_new();
		evbuffer_add(in, t[i].in, strlen(t[i].in));
		if (filter_sasl_line(f, in, out) != t[i].want)
			fail_msg("[%s]: wrong verdict", t[i].in);
		got = take(out);
		assert_string_equal(got, t[i].to_backend);
		assert_int_equal(evbuffer_get_length(in), t[i].left);
		free(got);
		evbuffer_free(in);
		evbuffer_free(out);
	}
	toy_close(&d);
}

/* An over-long SASL response is consumed whole, across reads. */
static void
test_sasl_long(void **state)
{
	struct core_case	 c = { .name = "sasl long" };
	struct toy_drv		 d;
	struct filter		*f;
	struct evbuffer		*in, *out;
	size_t			 i;

	(void)state;
	toy_open(&d, &c);
	f = d.f;
	in = evbuffer_new();
	out = evbuffer_new();
	for (i = 0; i < FILTER_SASL_LINE_MAX + 100; i++)
		evbuffer_add(in, "A", 1);
	assert_int_equal(filter_sasl_line(f, in, out), FILTER_SASL_MORE);
	assert_int_equal(evbuffer_get_length(in), 0);
	evbuffer_add(in, "AAAA\r\nNOOP\r\n", 12);
	assert_int_equal(filter_sasl_line(f, in, out), FILTER_SASL_BAD);
	assert_int_equal(evbuffer_get_length(in), 6);	/* NOOP stays */
	assert_int_equal(evbuffer_get_length(out), 0);
	evbuffer_free(in);
	evbuffer_free(out);
	toy_close(&d);
}

/*
 * Tags (IMAP): stored only for a protocol that has them, written before a
 * local reply; the others carry no tag storage in their idle sessions.
 */
static void
test_tags(void **state)
{
	struct core_case	 c = { .name = "tags" };
	struct proto_ops	 tagged = toy_ops;
	struct conf_service	 svc;
	struct filter_params	 fp;
	struct filter		*f;
	struct evbuffer		*out = evbuffer_new();
	struct toy_drv		 d;
	char			*got;

	(void)state;
	toy_open(&d, &c);
	assert_null(d.f->tags);
	toy_close(&d);

	tagged.tagged = true;
	core_service(&svc, &c);
	memset(&fp, 0, sizeof(fp));
	fp.svc = &svc;
	fp.tls_active = true;
	assert_non_null(f = filter_new(&tagged, &fp));
	assert_non_null(f->tags);
	filter_local(f, "a1", 2, "OK done\r\n");
	filter_local(f, NULL, 0, "* untagged\r\n");
	assert_string_equal(filter_slot_tag(f, filter_slot_head(f)), "a1");
	assert_null(filter_slot_tag(f, filter_slot_at(f, 1)));
	filter_flush(f, out);
	got = take(out);
	assert_string_equal(got, "a1 OK done\r\n* untagged\r\n");
	free(got);
	evbuffer_free(out);
	filter_free(f);
}

/* The canonical command line. */
static void
test_send_command(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	char		*got;

	(void)state;
	filter_send_command(b, NULL, 0, "NOOP", 4, NULL, 0);
	filter_send_command(b, "a1", 2, "LOGIN", 5, "u p", 3);
	filter_send_command(b, NULL, 0, "MAIL", 4, "", 0);
	got = take(b);
	assert_string_equal(got, "NOOP\r\na1 LOGIN u p\r\nMAIL\r\n");
	free(got);
	evbuffer_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_core_table),
		cmocka_unit_test(test_core_fifo_bound),
		cmocka_unit_test(test_core_backed_up_client),
		cmocka_unit_test(test_capa),
		cmocka_unit_test(test_sasl),
		cmocka_unit_test(test_sasl_long),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_send_command),
	};

	log_init(LOG_TARGET_STDERR, LOG_LEVEL_ERROR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
