/*
 * filter_harness.h - table-driven tests for the protocol filters.
 *
 * A case is a script of steps.  Each step feeds bytes from the client ('C')
 * or the backend ('B'), pumps the filter the way session.c does (client and
 * backend input alternately until neither makes progress), and compares
 * exactly what the filter wrote to each side and the verdict it returned.
 * Outputs are cleared after every step, so a step's expectations are only
 * the bytes that step produced.
 */
#ifndef FILTER_HARNESS_H
#define FILTER_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "conf.h"
#include "proto.h"

#define FH_MAX_STEPS	24

struct fh_step {
	char		 from;		/* 'C' client, 'B' backend, 0 = end */
	const char	*data;
	const char	*to_backend;	/* exact bytes expected, NULL = none */
	const char	*to_client;	/* exact bytes expected, NULL = none */
	enum filter_verdict verdict;	/* last verdict of the pump */
	size_t		 datalen;	/* 0 = strlen(data) */
};

struct fh_case {
	const char	*name;
	bool		 tls_active;	/* implicit TLS / after STARTTLS */
	bool		 starttls_service;	/* tls_mode = starttls */
	bool		 require_starttls;
	size_t		 max_line;	/* 0 = protocol default */
	enum bare_newline_mode bare_newline;
	struct fh_step	 steps[FH_MAX_STEPS];
};

static inline void
fh_service_init(struct conf_service *svc, enum proto_id proto,
    const struct fh_case *c, const struct proto_ops *ops)
{
	static char	name[] = "test", host[] = "mx.example.test";

	memset(svc, 0, sizeof(*svc));
	svc->name = name;
	svc->protocol = proto;
	svc->tls_mode = c->starttls_service ? TLS_MODE_STARTTLS :
	    TLS_MODE_IMPLICIT;
	svc->require_starttls = c->require_starttls;
	svc->hostname = host;
	svc->max_line_length = c->max_line ? c->max_line :
	    ops->default_line_max;
	svc->idle_timeout = ops->default_idle_timeout;
	svc->smtp_bare_newline = c->bare_newline;
	svc->max_connections_per_ip = 50;
}

static inline char *
fh_take(struct evbuffer *b, size_t *len)
{
	size_t	 n = evbuffer_get_length(b);
	char	*s = malloc(n + 1);

	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	*len = n;
	return s;
}

static inline void
fh_expect(const char *name, int step, const char *what, struct evbuffer *b,
    const char *want)
{
	size_t	 len;
	char	*got = fh_take(b, &len);

	if (want == NULL)
		want = "";
	if (len != strlen(want) || memcmp(got, want, len) != 0) {
		print_error("%s: step %d: %s:\n  want [%s]\n  got  [%.*s]\n",
		    name, step, what, want, (int)len, got);
		free(got);
		fail();
	}
	free(got);
}

static inline void
fh_run(enum proto_id proto, const struct proto_ops *ops,
    const struct fh_case *c)
{
	struct conf_service	 svc;
	struct filter_params	 fp;
	struct filter		*f;
	struct evbuffer		*cin, *bin, *to_b, *to_c;
	enum filter_verdict	 v = FILTER_CONTINUE;
	int			 i, rounds;

	fh_service_init(&svc, proto, c, ops);
	memset(&fp, 0, sizeof(fp));
	fp.svc = &svc;
	fp.tls_active = c->tls_active;
	fp.session_id = "0000000000000000";
	fp.client_addr = "192.0.2.1";
	f = ops->filter_new(&fp);
	assert_non_null(f);
	cin = evbuffer_new();
	bin = evbuffer_new();
	to_b = evbuffer_new();
	to_c = evbuffer_new();

	for (i = 0; i < FH_MAX_STEPS && c->steps[i].from; i++) {
		const struct fh_step *st = &c->steps[i];
		size_t n = st->datalen ? st->datalen : strlen(st->data);

		evbuffer_add(st->from == 'C' ? cin : bin, st->data, n);
		v = FILTER_CONTINUE;
		for (rounds = 0; rounds < 1000; rounds++) {
			size_t before = evbuffer_get_length(cin) +
			    evbuffer_get_length(bin) +
			    evbuffer_get_length(to_b) +
			    evbuffer_get_length(to_c);

			v = ops->backend_input(f, bin, to_c, to_b);
			if (v != FILTER_CONTINUE)
				break;
			v = ops->client_input(f, cin, to_b, to_c);
			if (v != FILTER_CONTINUE)
				break;
			if (before == evbuffer_get_length(cin) +
			    evbuffer_get_length(bin) +
			    evbuffer_get_length(to_b) +
			    evbuffer_get_length(to_c))
				break;
		}
		assert_true(rounds < 1000);
		fh_expect(c->name, i, "to_backend", to_b, st->to_backend);
		fh_expect(c->name, i, "to_client", to_c, st->to_client);
		if (v != st->verdict) {
			print_error("%s: step %d: verdict %d, want %d (%s)\n",
			    c->name, i, v, st->verdict,
			    ops->reason(f) ? ops->reason(f) : "-");
			fail();
		}
		if (v == FILTER_CLOSE)
			break;
	}
	ops->filter_free(f);
	evbuffer_free(cin);
	evbuffer_free(bin);
	evbuffer_free(to_b);
	evbuffer_free(to_c);
}

#endif /* FILTER_HARNESS_H */
