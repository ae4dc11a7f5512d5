/*
 * filter_harness.h - table-driven tests for the protocol filters.
 *
 * A case is a script of steps.  Each step feeds bytes from the client ('C')
 * or the backend ('B'), pumps the filter the way session.c does (client and
 * backend input alternately until neither makes progress), and compares
 * exactly what the filter wrote to each side and the verdict it returned.
 * Outputs are cleared after every step, so a step's expectations are only
 * the bytes that step produced.
 *
 * The same driver (fh_drv_*) serves the tests a table cannot express, with
 * outputs accumulated until taken; fh_log_* capture what the filters log,
 * and fh_main() runs a table and the other tests as one program.
 */
#ifndef FILTER_HARNESS_H
#define FILTER_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "conf.h"
#include "log.h"
#include "filter.h"
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
	unsigned	 max_errors;	/* 0 = default; after steps, so that
					   rows written by position keep
					   their meaning */
	/* SPEC 9, also after steps. */
	enum send_proxy_mode send_proxy;
	bool		 xclient;
	/*
	 * SPEC 10, also after steps: with max_auth_failures the filter gets
	 * the session's hooks, backed by a counter of failures for the one
	 * address (blocked from max on); after the steps the failures
	 * observed and the refusals of kind max_auth_failures_per_ip must
	 * be these.
	 */
	unsigned	 max_auth_failures;
	unsigned	 auth_failures_want;
	unsigned	 auth_refusals_want;
	/*
	 * SPEC 12, also after steps: backend_tls = starttls.  The backend
	 * leg's handshake "completes" as soon as the filter asks for it
	 * (fh_drv_pump); backend bytes after the go-ahead in the same step
	 * are the ones the core cuts.
	 */
	enum backend_tls_mode backend_tls;
};

/* What the harness tells the filter for XCLIENT's PORT and DEST*. */
#define FH_CLIENT_PORT	40000
#define FH_LOCAL_ADDR	"198.51.100.25"
#define FH_LOCAL_PORT	25

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
	(void)ops;
	svc->max_line_length = c->max_line ? c->max_line :
	    proto_default_line_max(proto);
	svc->idle_timeout = proto_default_idle_timeout(proto);
	svc->max_errors = c->max_errors;
	svc->smtp_bare_newline = c->bare_newline;
	svc->max_connections_per_ip = 50;
	svc->send_proxy = c->send_proxy;
	svc->xclient = c->xclient;
	svc->backend_tls = c->backend_tls;
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

/*
 * A filter driven directly: started with the service a case describes,
 * fed from either side, pumped until it settles.  Outputs accumulate in
 * to_b and to_c until a test takes them.
 */
struct fh_drv {
	struct conf_service	 svc;
	const struct proto_ops	*ops;
	struct filter		*f;
	struct evbuffer		*cin, *bin, *to_b, *to_c;
	unsigned		 auth_max, auth_fails;
	uint64_t		 refusals[FILTER_REF_N];
};

/* The session's SPEC 10 hooks, for one address. */
static inline bool
fh_auth_blocked(void *arg, unsigned pending)
{
	struct fh_drv	*d = arg;

	return d->auth_fails + pending >= d->auth_max;
}

static inline void
fh_auth_failed(void *arg)
{
	struct fh_drv	*d = arg;

	d->auth_fails++;
}

static inline void
fh_drv_open(struct fh_drv *d, enum proto_id proto,
    const struct proto_ops *ops, const struct fh_case *c,
    const char *session_id, const char *client_addr)
{
	struct filter_params	 fp;

	fh_service_init(&d->svc, proto, c, ops);
	d->ops = ops;
	memset(&fp, 0, sizeof(fp));
	fp.svc = &d->svc;
	fp.tls_active = c->tls_active;
	fp.session_id = session_id;
	fp.client_addr = client_addr;
	fp.client_port = FH_CLIENT_PORT;
	fp.local_addr = FH_LOCAL_ADDR;
	fp.local_port = FH_LOCAL_PORT;
	memset(d->refusals, 0, sizeof(d->refusals));
	fp.refusals = d->refusals;
	d->auth_max = c->max_auth_failures;
	d->auth_fails = 0;
	if (c->max_auth_failures != 0) {
		fp.auth_blocked = fh_auth_blocked;
		fp.auth_failed = fh_auth_failed;
		fp.auth_arg = d;
	}
	d->f = filter_new(ops, &fp);
	assert_non_null(d->f);
	d->cin = evbuffer_new();
	d->bin = evbuffer_new();
	d->to_b = evbuffer_new();
	d->to_c = evbuffer_new();
}

static inline void
fh_drv_close(struct fh_drv *d)
{
	filter_free(d->f);
	evbuffer_free(d->cin);
	evbuffer_free(d->bin);
	evbuffer_free(d->to_b);
	evbuffer_free(d->to_c);
}

static inline size_t
fh_drv_pending(const struct fh_drv *d)
{
	return evbuffer_get_length(d->cin) + evbuffer_get_length(d->bin) +
	    evbuffer_get_length(d->to_b) + evbuffer_get_length(d->to_c);
}

/*
 * Pump with the pump session.c runs (filter_pump): backend then client
 * input until neither makes progress or a verdict other than
 * FILTER_CONTINUE comes back.  A go-ahead is followed by a handshake that
 * completes at once (tests of the handshake window call filter_pump and
 * filter_tls_established themselves).
 */
static inline enum filter_verdict
fh_drv_pump(struct fh_drv *d)
{
	enum filter_verdict	 v, v2;

	v = filter_pump(d->f, d->cin, d->bin, d->to_c, d->to_b);
	if (v == FILTER_BACKEND_STARTTLS) {
		/*
		 * As session.c once the backend leg's handshake has
		 * verified; reported as FILTER_BACKEND_STARTTLS unless the
		 * session ends.
		 */
		v2 = filter_backend_tls_established(d->f, d->bin, d->to_c,
		    d->to_b);
		if (v2 == FILTER_CONTINUE)
			v2 = filter_pump(d->f, d->cin, d->bin, d->to_c,
			    d->to_b);
		return v2 == FILTER_CONTINUE ? FILTER_BACKEND_STARTTLS : v2;
	}
	if (v != FILTER_STARTTLS)
		return v;
	/*
	 * As session.c after the client's handshake: the window check and
	 * the protocol's reset, then the pump again.  The verdict reported
	 * stays FILTER_STARTTLS unless the session ends.
	 */
	v2 = filter_tls_established(d->f, d->bin, d->to_b);
	if (v2 == FILTER_CONTINUE)
		v2 = filter_pump(d->f, d->cin, d->bin, d->to_c, d->to_b);
	return v2 == FILTER_CONTINUE ? FILTER_STARTTLS : v2;
}

/* Bytes from the client ('C') or the backend ('B'), and the verdict. */
static inline void
fh_drv_feed(struct fh_drv *d, char from, const void *data, size_t len,
    enum filter_verdict want)
{
	evbuffer_add(from == 'C' ? d->cin : d->bin, data, len);
	assert_int_equal(fh_drv_pump(d), want);
}

/* Take everything written to one side and compare it. */
static inline void
fh_drv_expect(struct evbuffer *b, const void *want, size_t len)
{
	size_t	 n;
	char	*got = fh_take(b, &n);

	if (n != len || memcmp(got, want, len) != 0)
		fail_msg("want %zu bytes [%.*s], got %zu [%.*s]", len,
		    (int)(len > 200 ? 200 : len), (const char *)want, n,
		    (int)(n > 200 ? 200 : n), got);
	free(got);
}

static inline void
fh_run(enum proto_id proto, const struct proto_ops *ops,
    const struct fh_case *c)
{
	struct fh_drv		 d;
	enum filter_verdict	 v;
	int			 i;

	fh_drv_open(&d, proto, ops, c, "0000000000000000", "192.0.2.1");
	for (i = 0; i < FH_MAX_STEPS && c->steps[i].from; i++) {
		const struct fh_step *st = &c->steps[i];
		size_t n = st->datalen ? st->datalen : strlen(st->data);

		evbuffer_add(st->from == 'C' ? d.cin : d.bin, st->data, n);
		v = fh_drv_pump(&d);
		fh_expect(c->name, i, "to_backend", d.to_b, st->to_backend);
		fh_expect(c->name, i, "to_client", d.to_c, st->to_client);
		if (v != st->verdict) {
			print_error("%s: step %d: verdict %d, want %d (%s)\n",
			    c->name, i, v, st->verdict,
			    filter_reason(d.f));
			fail();
		}
		if (v == FILTER_CLOSE)
			break;
	}
	if (c->max_auth_failures != 0 &&
	    (d.auth_fails != c->auth_failures_want ||
	    d.refusals[FILTER_REF_AUTH_FAILURES] != c->auth_refusals_want)) {
		print_error("%s: %u failures observed, want %u; %llu refused, "
		    "want %u\n", c->name, d.auth_fails, c->auth_failures_want,
		    (unsigned long long)d.refusals[FILTER_REF_AUTH_FAILURES],
		    c->auth_refusals_want);
		fail();
	}
	fh_drv_close(&d);
}

/*
 * What the filters log: from fh_log_begin() on, stderr goes to an unlinked
 * temporary file, at debug level; fh_log_end() puts stderr and the level
 * back and reads what was logged into buf, NUL-terminated.
 */
struct fh_log {
	int		 fd;
	int		 saved;
	enum log_level	 level;
};

static inline void
fh_log_begin(struct fh_log *l)
{
	char	 path[] = "/tmp/filter_harness_log.XXXXXX";

	l->fd = mkstemp(path);
	assert_true(l->fd >= 0);
	unlink(path);
	fflush(stderr);
	l->saved = dup(STDERR_FILENO);
	assert_true(l->saved >= 0);
	assert_true(dup2(l->fd, STDERR_FILENO) == STDERR_FILENO);
	l->level = log_get_level();
	log_set_level(LOG_LEVEL_DEBUG);
}

static inline size_t
fh_log_end(struct fh_log *l, char *buf, size_t size)
{
	ssize_t	 n;

	fflush(stderr);
	log_set_level(l->level);
	assert_true(dup2(l->saved, STDERR_FILENO) == STDERR_FILENO);
	close(l->saved);
	n = pread(l->fd, buf, size - 1, 0);
	close(l->fd);
	assert_true(n > 0);
	buf[n] = '\0';
	return (size_t)n;
}

/*
 * A protocol's test program: each row of its table of cases as a test of
 * its own (run_case gets the row as its state), then its other tests.
 */
static inline int
fh_main(const char *group, const struct fh_case *cases, size_t ncases,
    CMUnitTestFunction run_case, const struct CMUnitTest *extra,
    size_t nextra)
{
	struct CMUnitTest	*t;
	size_t			 i;
	int			 rc;

	if ((t = calloc(ncases + nextra, sizeof(*t))) == NULL)
		return 1;
	for (i = 0; i < ncases; i++) {
		t[i].name = cases[i].name;
		t[i].test_func = run_case;
		t[i].initial_state = (void *)(uintptr_t)&cases[i];
	}
	memcpy(t + ncases, extra, nextra * sizeof(*extra));
	rc = _cmocka_run_group_tests(group, t, ncases + nextra, NULL, NULL);
	free(t);
	return rc;
}

#endif /* FILTER_HARNESS_H */
