/*
 * metrics.c - the counters behind /metrics and their exposition in the
 * Prometheus text format 0.0.4 (SPEC section 11).
 *
 * Ownership: a metrics_service per service name ever configured, created
 * by the main thread when a runtime is built and never freed, so a reload
 * neither resets nor loses a counter (a service removed by a reload keeps
 * its last values).  Each holds one struct metrics_block per worker; a
 * worker writes only its own block, with relaxed atomic stores, and a
 * scrape (on any worker) adds up all blocks with relaxed atomic loads.
 * New registry entries, backend names and handshake label sets are
 * published with release stores after they are complete; readers load
 * the counts with acquire, so they never see half an entry.
 *
 * Certificate expiry is read from the certificate files when a runtime is
 * built, so it follows reloads, and travels with the runtime.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "addrtable.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "worker.h"

struct metrics_service {
	struct metrics_service	*next;		/* published with release */
	char			*name;
	char			*backends[METRICS_BACKENDS_MAX];
	unsigned		 nbackends;	/* published with release */
	unsigned		 refusal_mask;	/* kinds that can happen */
	unsigned		 limit_mask;	/* metrics_limit kinds, likewise */
	int			 starttls;	/* ever a STARTTLS service */
	int			 cleartext_to;	/* ever a cleartext_timeout */
	/* Both only grow, so a series once shown never disappears. */
	struct metrics_block	*blocks;	/* one per worker */
};

/* Not per service: the histogram of SPEC 11 has no labels. */
struct metrics_wide {
	uint64_t	buckets[METRICS_DURATION_BUCKETS];
	uint64_t	sum_ms;
} __attribute__((aligned(64)));

struct metrics_cert {
	char		*tls;
	char		*name;
	const char	*type;
	long long	 not_after;
};

struct metrics_certs {
	struct metrics_cert	*v;
	size_t			 n;
};

struct metrics_hsagg {
	const char	*version, *cipher;
	int		 resumed;
	uint64_t	 count;
};

static void	metrics_str(struct evbuffer *, const char *);
static void	metrics_label(struct evbuffer *, const char *);
static void	metrics_head(struct evbuffer *, const char *, const char *,
		    const char *);
static uint64_t	metrics_sum(const struct metrics_service *, size_t off);
static void	metrics_render_services(struct evbuffer *);
static void	metrics_render_handshakes(struct evbuffer *,
		    const struct metrics_service *);
static void	metrics_render_duration(struct evbuffer *);
static void	metrics_render_addrtables(struct evbuffer *,
		    const struct runtime *);
static void	metrics_render_certs(struct evbuffer *,
		    const struct metrics_certs *);
static int	metrics_cert_add(struct metrics_certs *, const char *,
		    const char *, const char *);

/* Seconds; the last bucket is +Inf. */
static const double metrics_duration_le[METRICS_DURATION_BUCKETS - 1] = {
	0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600
};

static const char *const metrics_phase_names[METRICS_PH_N] = {
	[METRICS_PH_CONNECTING] = "connecting",
	[METRICS_PH_HANDSHAKE] = "handshake",
	[METRICS_PH_CLEARTEXT] = "cleartext",
	[METRICS_PH_TLS] = "tls",
	[METRICS_PH_CLOSING] = "closing",
};

static const char *const metrics_hsf_names[METRICS_HSF_N] = {
	[METRICS_HSF_TIMEOUT] = "timeout",
	[METRICS_HSF_PROTOCOL] = "protocol",
	[METRICS_HSF_CLOSED] = "closed",
	[METRICS_HSF_ERROR] = "error",
};

static const char *const metrics_conn_names[METRICS_CONN_N] = {
	[METRICS_CONN_ACCEPTED] = "accepted",
	[METRICS_CONN_REJECTED] = "rejected",
};

static const char *const metrics_limit_names[METRICS_LIM_N] = {
	[METRICS_LIM_CONNECTIONS] = "max_connections",
	[METRICS_LIM_PER_IP] = "max_connections_per_ip",
	[METRICS_LIM_RATE] = "max_connection_rate_per_ip",
};

static const char *const metrics_timeout_names[METRICS_TO_N] = {
	[METRICS_TO_IDLE] = "idle_timeout",
	[METRICS_TO_CLEARTEXT] = "cleartext_timeout",
};

static struct metrics_service	*metrics_first;	/* published with release */
static struct metrics_service	*metrics_last;	/* main thread only */
static struct metrics_wide	*metrics_wide;
static unsigned			 metrics_nworkers;
static uint64_t			 metrics_reloads[2];	/* failure, success */

void
metrics_init(unsigned nworkers)
{
	metrics_nworkers = nworkers ? nworkers : 1;
	if (posix_memalign((void **)&metrics_wide, 64,
	    metrics_nworkers * sizeof(*metrics_wide)) != 0)
		fatalx("metrics: out of memory");
	memset(metrics_wide, 0, metrics_nworkers * sizeof(*metrics_wide));
}

/* Kinds of refusal a service can produce, so that no dead series shows. */
static unsigned
metrics_refusal_mask(const struct conf_service *svc)
{
	unsigned	m = 1u << FILTER_REF_PROTOCOL;

	if (svc->tls_mode == TLS_MODE_STARTTLS)
		m |= 1u << FILTER_REF_CREDENTIALS | 1u << FILTER_REF_INJECTION;
	/* SPEC 12: a server's bytes behind its STARTTLS go-ahead. */
	if (svc->backend_tls == BACKEND_TLS_STARTTLS)
		m |= 1u << FILTER_REF_INJECTION;
	if (svc->protocol == PROTO_SMTP || svc->protocol == PROTO_POP3)
		m |= 1u << FILTER_REF_AUTHORITY;
	if (svc->protocol == PROTO_SMTP &&
	    svc->smtp_bare_newline == BARE_NEWLINE_REJECT)
		m |= 1u << FILTER_REF_SMUGGLING;
	if (svc->protocol == PROTO_SMTP && svc->smtp_greeting_delay > 0)
		m |= 1u << FILTER_REF_GREETING_DELAY;
	if (svc->max_auth_failures_per_ip != 0)
		m |= 1u << FILTER_REF_AUTH_FAILURES;
	return m;
}

/* The same for the limits decided before a filter exists. */
static unsigned
metrics_limit_mask(const struct conf_service *svc)
{
	unsigned	m = 1u << METRICS_LIM_CONNECTIONS | 1u << METRICS_LIM_PER_IP;

	if (svc->max_connection_rate_per_ip != 0)
		m |= 1u << METRICS_LIM_RATE;
	return m;
}

struct metrics_service *
metrics_service(const struct conf_service *svc)
{
	struct metrics_service	*ms;
	unsigned		 n;
	size_t			 i, j;

	if (metrics_wide == NULL)
		metrics_init(1);	/* -t: nothing will count */
	for (ms = metrics_first; ms != NULL; ms = ms->next)
		if (strcmp(ms->name, svc->name) == 0)
			break;
	if (ms == NULL) {
		if ((ms = calloc(1, sizeof(*ms))) == NULL ||
		    (ms->name = strdup(svc->name)) == NULL ||
		    posix_memalign((void **)&ms->blocks, 64,
		    metrics_nworkers * sizeof(*ms->blocks)) != 0)
			return NULL;
		memset(ms->blocks, 0, metrics_nworkers * sizeof(*ms->blocks));
		if (metrics_last == NULL)
			__atomic_store_n(&metrics_first, ms, __ATOMIC_RELEASE);
		else
			__atomic_store_n(&metrics_last->next, ms,
			    __ATOMIC_RELEASE);
		metrics_last = ms;
	}
	/* Read by scrapes on the workers meanwhile. */
	__atomic_fetch_or(&ms->refusal_mask, metrics_refusal_mask(svc),
	    __ATOMIC_RELAXED);
	__atomic_fetch_or(&ms->limit_mask, metrics_limit_mask(svc),
	    __ATOMIC_RELAXED);
	if (svc->tls_mode == TLS_MODE_STARTTLS)
		__atomic_store_n(&ms->starttls, 1, __ATOMIC_RELAXED);
	if (svc->tls_mode == TLS_MODE_STARTTLS && svc->require_starttls &&
	    svc->cleartext_timeout > 0)
		__atomic_store_n(&ms->cleartext_to, 1, __ATOMIC_RELAXED);
	for (i = 0; i < svc->nbackends; i++) {
		n = ms->nbackends;
		for (j = 0; j < n; j++)
			if (strcmp(ms->backends[j], svc->backends[i].text) == 0)
				break;
		if (j < n)
			continue;
		if (n == METRICS_BACKENDS_MAX) {
			log_warnx("service %s: backend %s is not counted in the "
			    "metrics (more than %d backends over time)",
			    svc->name, svc->backends[i].text,
			    METRICS_BACKENDS_MAX);
			continue;
		}
		if ((ms->backends[n] = strdup(svc->backends[i].text)) == NULL)
			return NULL;
		__atomic_store_n(&ms->nbackends, n + 1, __ATOMIC_RELEASE);
	}
	return ms;
}

/* ---- increments (owning worker) ---------------------------------------- */

static struct metrics_block *
metrics_block(const struct session *s)
{
	return &s->srt->metrics->blocks[s->worker->index];
}

void
metrics_conn(struct metrics_service *ms, unsigned worker,
    enum metrics_conn_result r)
{
	metrics_inc(&ms->blocks[worker].conns[r]);
}

void
metrics_rejected(struct metrics_service *ms, unsigned worker,
    enum metrics_limit lim)
{
	metrics_inc(&ms->blocks[worker].conns[METRICS_CONN_REJECTED]);
	metrics_inc(&ms->blocks[worker].limits[lim]);
}

void
metrics_limit(struct metrics_service *ms, unsigned worker,
    enum metrics_limit lim)
{
	metrics_inc(&ms->blocks[worker].limits[lim]);
}

static void
metrics_gauge(int64_t *g, int64_t d)
{
	__atomic_store_n(g, __atomic_load_n(g, __ATOMIC_RELAXED) + d,
	    __ATOMIC_RELAXED);
}

void
metrics_session_start(struct session *s)
{
	s->mphase = METRICS_PH_NONE;
	metrics_session_phase(s);
}

void
metrics_session_phase(struct session *s)
{
	struct metrics_block	*b = metrics_block(s);
	int			 ph;

	switch (s->state) {
	case SESSION_ST_HANDSHAKE:
		ph = METRICS_PH_HANDSHAKE;
		break;
	case SESSION_ST_PROXY:		/* waiting for the balancer's header */
	case SESSION_ST_CONNECTING:
		ph = METRICS_PH_CONNECTING;
		break;
	case SESSION_ST_RELAY:
		ph = (s->flags & SF_TLS_UP) ? METRICS_PH_TLS :
		    METRICS_PH_CLEARTEXT;
		break;
	case SESSION_ST_CLOSING:
	default:
		ph = METRICS_PH_CLOSING;
		break;
	}
	if (ph == s->mphase)
		return;
	if (s->mphase != METRICS_PH_NONE)
		metrics_gauge(&b->active[s->mphase], -1);
	metrics_gauge(&b->active[ph], 1);
	s->mphase = ph;
}

void
metrics_session_close(struct session *s, const struct timeval *dur)
{
	struct metrics_block	*b = metrics_block(s);
	struct metrics_wide	*m = &metrics_wide[s->worker->index];
	double			 secs = dur->tv_sec + dur->tv_usec / 1e6;
	size_t			 i;

	metrics_add(&b->bytes_in, s->bytes_in);
	metrics_add(&b->bytes_out, s->bytes_out);
	for (i = 0; i < METRICS_DURATION_BUCKETS - 1; i++)
		if (secs <= metrics_duration_le[i])
			break;
	metrics_inc(&m->buckets[i]);
	metrics_add(&m->sum_ms, (uint64_t)dur->tv_sec * 1000 +
	    (uint64_t)dur->tv_usec / 1000);
}

void
metrics_session_end(struct session *s)
{
	if (s->mphase == METRICS_PH_NONE)
		return;
	metrics_gauge(&metrics_block(s)->active[s->mphase], -1);
	s->mphase = METRICS_PH_NONE;
}

void
metrics_handshake(struct session *s)
{
	struct metrics_block	*b = metrics_block(s);
	const SSL_CIPHER	*c = SSL_get_current_cipher(s->ssl);
	const char		*version = SSL_get_version(s->ssl);
	const char		*cipher = c ? SSL_CIPHER_get_name(c) : "none";
	int			 resumed = SSL_session_reused(s->ssl) == 1;
	uint64_t		 i, n = b->nhs;

	/* OpenSSL's names are static strings: the pointers stay valid. */
	for (i = 0; i < n; i++)
		if ((int)b->hs[i].resumed == resumed &&
		    strcmp(b->hs[i].version, version) == 0 &&
		    strcmp(b->hs[i].cipher, cipher) == 0) {
			metrics_inc(&b->hs[i].count);
			return;
		}
	if (n == METRICS_HS_MAX) {
		metrics_inc(&b->hs_other);
		return;
	}
	b->hs[n].version = version;
	b->hs[n].cipher = cipher;
	b->hs[n].resumed = (uint64_t)resumed;
	b->hs[n].count = 1;
	__atomic_store_n(&b->nhs, n + 1, __ATOMIC_RELEASE);
}

void
metrics_handshake_failure(struct session *s, enum metrics_hs_failure why)
{
	metrics_inc(&metrics_block(s)->hs_fail[why]);
}

void
metrics_starttls(struct session *s)
{
	metrics_inc(&metrics_block(s)->starttls);
}

void
metrics_timeout(struct session *s, enum metrics_timeout t)
{
	metrics_inc(&metrics_block(s)->timeouts[t]);
}

void
metrics_backend_failure(struct session *s)
{
	struct metrics_service	*ms = s->srt->metrics;
	unsigned		 i, n;

	n = __atomic_load_n(&ms->nbackends, __ATOMIC_ACQUIRE);
	for (i = 0; i < n; i++)
		if (strcmp(ms->backends[i], s->backend_name) == 0) {
			metrics_inc(&metrics_block(s)->backend_fail[i]);
			return;
		}
}

uint64_t *
metrics_refusals(struct metrics_service *ms, unsigned worker)
{
	return ms->blocks[worker].refusals;
}

void
metrics_reload(int ok)
{
	metrics_inc(&metrics_reloads[ok ? 1 : 0]);
}

/* ---- certificates -------------------------------------------------------- */

static const char *
metrics_key_type(X509 *x)
{
	EVP_PKEY	*pk = X509_get0_pubkey(x);

	switch (pk ? EVP_PKEY_get_base_id(pk) : 0) {
	case EVP_PKEY_RSA:
		return "rsa";
	case EVP_PKEY_EC:
		return "ecdsa";
	case EVP_PKEY_ED25519:
		return "ed25519";
	case EVP_PKEY_ED448:
		return "ed448";
	default:
		return "other";
	}
}

/* The subject's CN, else its first DNS name. */
static void
metrics_cert_name(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES	*san;
	int		 i;

	buf[0] = '\0';
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
	    buf, (int)len) > 0)
		return;
	buf[0] = '\0';
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (i = 0; san != NULL && i < sk_GENERAL_NAME_num(san); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);

		if (g->type == GEN_DNS) {
			snprintf(buf, len, "%.*s",
			    ASN1_STRING_length(g->d.dNSName),
			    (const char *)ASN1_STRING_get0_data(g->d.dNSName));
			break;
		}
	}
	GENERAL_NAMES_free(san);
}

/*
 * The leaf of one certificate file.  name is the sni section's name, or
 * NULL for the tls section's own certificates (then the certificate's).
 * A label set seen already (the same name and key type twice) is skipped:
 * Prometheus refuses duplicate series.
 */
static int
metrics_cert_add(struct metrics_certs *c, const char *tls, const char *file,
    const char *name)
{
	struct metrics_cert	*e, *v;
	struct tm		 tm;
	char			 cn[256];
	BIO			*bio;
	X509			*x = NULL;
	size_t			 i;

	if ((bio = BIO_new_file(file, "r")) != NULL) {
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	if (x == NULL) {
		ERR_clear_error();
		return 0;	/* tls.c has loaded it; nothing to report */
	}
	if (name == NULL)
		metrics_cert_name(x, cn, sizeof(cn));
	else
		util_strlcpy(cn, name, sizeof(cn));
	for (i = 0; i < c->n; i++)
		if (strcmp(c->v[i].tls, tls) == 0 &&
		    strcmp(c->v[i].name, cn) == 0 &&
		    strcmp(c->v[i].type, metrics_key_type(x)) == 0) {
			X509_free(x);
			return 0;
		}
	if ((v = reallocarray(c->v, c->n + 1, sizeof(*v))) == NULL)
		goto fail;
	c->v = v;
	e = &c->v[c->n];
	memset(e, 0, sizeof(*e));
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
		goto fail;
	e->not_after = (long long)timegm(&tm);
	e->type = metrics_key_type(x);
	if ((e->tls = strdup(tls)) == NULL || (e->name = strdup(cn)) == NULL) {
		free(e->tls);
		goto fail;
	}
	c->n++;
	X509_free(x);
	return 0;
fail:
	X509_free(x);
	return -1;
}

struct metrics_certs *
metrics_certs_load(const struct conf *conf)
{
	struct metrics_certs	*c;
	size_t			 i, j, k;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	for (i = 0; i < conf->ntls; i++) {
		const struct conf_tls *t = &conf->tls[i];

		for (j = 0; j < t->npairs; j++)
			if (metrics_cert_add(c, t->name,
			    t->pairs[j].certificate, NULL) == -1)
				goto fail;
		for (j = 0; j < t->nsni; j++)
			for (k = 0; k < t->sni[j].npairs; k++)
				if (metrics_cert_add(c, t->name,
				    t->sni[j].pairs[k].certificate,
				    t->sni[j].name) == -1)
					goto fail;
	}
	return c;
fail:
	metrics_certs_free(c);
	return NULL;
}

void
metrics_certs_free(struct metrics_certs *c)
{
	size_t	i;

	if (c == NULL)
		return;
	for (i = 0; i < c->n; i++) {
		free(c->v[i].tls);
		free(c->v[i].name);
	}
	free(c->v);
	free(c);
}

/* ---- exposition ------------------------------------------------------------ */

static void
metrics_str(struct evbuffer *b, const char *s)
{
	evbuffer_add(b, s, strlen(s));
}

/* A label value: backslash, double quote and newline escaped (0.0.4). */
static void
metrics_label(struct evbuffer *b, const char *v)
{
	const char	*p;

	metrics_str(b, "\"");
	for (p = v; *p != '\0'; p++) {
		if (*p == '\\')
			metrics_str(b, "\\\\");
		else if (*p == '"')
			metrics_str(b, "\\\"");
		else if (*p == '\n')
			metrics_str(b, "\\n");
		else
			evbuffer_add(b, p, 1);
	}
	metrics_str(b, "\"");
}

static void
metrics_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

/* The sum over workers of the uint64_t at offset off of the blocks. */
static uint64_t
metrics_sum(const struct metrics_service *ms, size_t off)
{
	uint64_t	sum = 0;
	unsigned	w;

	for (w = 0; w < metrics_nworkers; w++)
		sum += __atomic_load_n((const uint64_t *)(const void *)
		    ((const char *)&ms->blocks[w] + off), __ATOMIC_RELAXED);
	return sum;
}

#define MSUM(ms, field)	metrics_sum(ms, offsetof(struct metrics_block, field))
#define MSUMI(ms, field, i) metrics_sum(ms,				\
	offsetof(struct metrics_block, field) + (size_t)(i) * sizeof(uint64_t))

/* Sample "NAME{service="S"" with the rest of the labels to follow. */
static void
metrics_sample(struct evbuffer *b, const char *name,
    const struct metrics_service *ms)
{
	evbuffer_add_printf(b, "%s{service=", name);
	metrics_label(b, ms->name);
}

static void
metrics_render_services(struct evbuffer *b)
{
	const struct metrics_service	*ms, *first;
	unsigned			 i, n;

	first = __atomic_load_n(&metrics_first, __ATOMIC_ACQUIRE);
#define FOREACH_SERVICE(ms) \
	for (ms = first; ms != NULL; \
	    ms = __atomic_load_n(&ms->next, __ATOMIC_ACQUIRE))

	metrics_head(b, "mailtlsd_connections_total", "counter",
	    "Connections accepted, or rejected by a connection limit.");
	FOREACH_SERVICE(ms)
		for (i = 0; i < METRICS_CONN_N; i++) {
			metrics_sample(b, "mailtlsd_connections_total", ms);
			evbuffer_add_printf(b, ",result=\"%s\"} %llu\n",
			    metrics_conn_names[i],
			    (unsigned long long)MSUMI(ms, conns, i));
		}

	metrics_head(b, "mailtlsd_connections_active", "gauge",
	    "Sessions open now, by phase.");
	FOREACH_SERVICE(ms)
		for (i = 0; i < METRICS_PH_N; i++) {
			/* No cleartext phase without STARTTLS. */
			if (i == METRICS_PH_CLEARTEXT && !__atomic_load_n(
			    &ms->starttls, __ATOMIC_RELAXED))
				continue;
			/* Signed per worker (a gauge); the sum is >= 0. */
			metrics_sample(b, "mailtlsd_connections_active", ms);
			evbuffer_add_printf(b, ",phase=\"%s\"} %lld\n",
			    metrics_phase_names[i],
			    (long long)MSUMI(ms, active, i));
		}

	metrics_head(b, "mailtlsd_tls_handshakes_total", "counter",
	    "Completed client TLS handshakes.");
	FOREACH_SERVICE(ms)
		metrics_render_handshakes(b, ms);

	metrics_head(b, "mailtlsd_tls_handshake_failures_total", "counter",
	    "Client TLS handshakes that did not complete.");
	FOREACH_SERVICE(ms)
		for (i = 0; i < METRICS_HSF_N; i++) {
			metrics_sample(b,
			    "mailtlsd_tls_handshake_failures_total", ms);
			evbuffer_add_printf(b, ",reason=\"%s\"} %llu\n",
			    metrics_hsf_names[i],
			    (unsigned long long)MSUMI(ms, hs_fail, i));
		}

	metrics_head(b, "mailtlsd_starttls_total", "counter",
	    "STARTTLS/STLS go-aheads given (the handshake follows).");
	FOREACH_SERVICE(ms)
		if (__atomic_load_n(&ms->starttls, __ATOMIC_RELAXED)) {
			metrics_sample(b, "mailtlsd_starttls_total", ms);
			evbuffer_add_printf(b, "} %llu\n",
			    (unsigned long long)MSUM(ms, starttls));
		}

	metrics_head(b, "mailtlsd_refusals_total", "counter",
	    "Client commands or connections refused, by kind.");
	FOREACH_SERVICE(ms) {
		unsigned mask = __atomic_load_n(&ms->refusal_mask,
		    __ATOMIC_RELAXED);

		for (i = 0; i < FILTER_REF_N; i++) {
			if (!(mask & (1u << i)))
				continue;
			metrics_sample(b, "mailtlsd_refusals_total", ms);
			evbuffer_add_printf(b, ",kind=\"%s\"} %llu\n",
			    filter_refusal_name(i),
			    (unsigned long long)MSUMI(ms, refusals, i));
		}
		mask = __atomic_load_n(&ms->limit_mask, __ATOMIC_RELAXED);
		for (i = 0; i < METRICS_LIM_N; i++) {
			if (!(mask & (1u << i)))
				continue;
			metrics_sample(b, "mailtlsd_refusals_total", ms);
			evbuffer_add_printf(b, ",kind=\"%s\"} %llu\n",
			    metrics_limit_names[i],
			    (unsigned long long)MSUMI(ms, limits, i));
		}
	}

	metrics_head(b, "mailtlsd_timeouts_total", "counter",
	    "Sessions closed by a timeout of SPEC 10, by reason.");
	FOREACH_SERVICE(ms)
		for (i = 0; i < METRICS_TO_N; i++) {
			if (i == METRICS_TO_CLEARTEXT && !__atomic_load_n(
			    &ms->cleartext_to, __ATOMIC_RELAXED))
				continue;
			metrics_sample(b, "mailtlsd_timeouts_total", ms);
			evbuffer_add_printf(b, ",reason=\"%s\"} %llu\n",
			    metrics_timeout_names[i],
			    (unsigned long long)MSUMI(ms, timeouts, i));
		}

	metrics_head(b, "mailtlsd_backend_connect_failures_total", "counter",
	    "Failed connection attempts to a backend (each one of a failover).");
	FOREACH_SERVICE(ms) {
		n = __atomic_load_n(&ms->nbackends, __ATOMIC_ACQUIRE);
		for (i = 0; i < n; i++) {
			metrics_sample(b,
			    "mailtlsd_backend_connect_failures_total", ms);
			metrics_str(b, ",backend=");
			metrics_label(b, ms->backends[i]);
			evbuffer_add_printf(b, "} %llu\n",
			    (unsigned long long)MSUMI(ms, backend_fail, i));
		}
	}

	metrics_head(b, "mailtlsd_bytes_total", "counter",
	    "Client bytes of ended sessions: in = from the client, out = to it.");
	FOREACH_SERVICE(ms) {
		metrics_sample(b, "mailtlsd_bytes_total", ms);
		evbuffer_add_printf(b, ",direction=\"in\"} %llu\n",
		    (unsigned long long)MSUM(ms, bytes_in));
		metrics_sample(b, "mailtlsd_bytes_total", ms);
		evbuffer_add_printf(b, ",direction=\"out\"} %llu\n",
		    (unsigned long long)MSUM(ms, bytes_out));
	}
#undef FOREACH_SERVICE
}

/* Label sets of all workers merged; at most nworkers * METRICS_HS_MAX. */
static void
metrics_render_handshakes(struct evbuffer *b, const struct metrics_service *ms)
{
	struct metrics_hsagg	*agg;
	const struct metrics_block *bl;
	size_t			 nagg = 0, i, k;
	uint64_t		 n, other = 0;
	unsigned		 w;

	agg = calloc((size_t)metrics_nworkers * METRICS_HS_MAX, sizeof(*agg));
	if (agg == NULL)
		return;
	for (w = 0; w < metrics_nworkers; w++) {
		bl = &ms->blocks[w];
		n = __atomic_load_n(&bl->nhs, __ATOMIC_ACQUIRE);
		other += __atomic_load_n(&bl->hs_other, __ATOMIC_RELAXED);
		for (i = 0; i < n; i++) {
			for (k = 0; k < nagg; k++)
				if (agg[k].resumed == (int)bl->hs[i].resumed &&
				    strcmp(agg[k].version, bl->hs[i].version)
				    == 0 && strcmp(agg[k].cipher,
				    bl->hs[i].cipher) == 0)
					break;
			if (k == nagg) {
				agg[k].version = bl->hs[i].version;
				agg[k].cipher = bl->hs[i].cipher;
				agg[k].resumed = (int)bl->hs[i].resumed;
				nagg++;
			}
			agg[k].count += __atomic_load_n(&bl->hs[i].count,
			    __ATOMIC_RELAXED);
		}
	}
	for (k = 0; k < nagg; k++) {
		metrics_sample(b, "mailtlsd_tls_handshakes_total", ms);
		metrics_str(b, ",version=");
		metrics_label(b, agg[k].version);
		metrics_str(b, ",cipher=");
		metrics_label(b, agg[k].cipher);
		evbuffer_add_printf(b, ",resumed=\"%s\"} %llu\n",
		    agg[k].resumed ? "true" : "false",
		    (unsigned long long)agg[k].count);
	}
	if (other > 0) {
		metrics_sample(b, "mailtlsd_tls_handshakes_total", ms);
		evbuffer_add_printf(b, ",version=\"other\",cipher=\"other\","
		    "resumed=\"other\"} %llu\n", (unsigned long long)other);
	}
	free(agg);
}

static void
metrics_render_duration(struct evbuffer *b)
{
	uint64_t	buckets[METRICS_DURATION_BUCKETS] = { 0 };
	uint64_t	count = 0, sum_ms = 0, cum = 0;
	unsigned	w, i;

	/* count is the buckets' sum, so the two always agree. */
	for (w = 0; w < metrics_nworkers; w++) {
		for (i = 0; i < METRICS_DURATION_BUCKETS; i++)
			buckets[i] += __atomic_load_n(
			    &metrics_wide[w].buckets[i], __ATOMIC_RELAXED);
		sum_ms += __atomic_load_n(&metrics_wide[w].sum_ms,
		    __ATOMIC_RELAXED);
	}
	for (i = 0; i < METRICS_DURATION_BUCKETS; i++)
		count += buckets[i];
	metrics_head(b, "mailtlsd_session_duration_seconds", "histogram",
	    "Duration of ended sessions.");
	for (i = 0; i < METRICS_DURATION_BUCKETS - 1; i++) {
		cum += buckets[i];
		evbuffer_add_printf(b, "mailtlsd_session_duration_seconds_bucket"
		    "{le=\"%g\"} %llu\n", metrics_duration_le[i],
		    (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "mailtlsd_session_duration_seconds_bucket"
	    "{le=\"+Inf\"} %llu\n", (unsigned long long)count);
	evbuffer_add_printf(b, "mailtlsd_session_duration_seconds_sum %llu.%03u\n"
	    "mailtlsd_session_duration_seconds_count %llu\n",
	    (unsigned long long)(sum_ms / 1000), (unsigned)(sum_ms % 1000),
	    (unsigned long long)count);
}

static void
metrics_render_certs(struct evbuffer *b, const struct metrics_certs *c)
{
	size_t	i;

	metrics_head(b, "mailtlsd_certificate_expiry_timestamp_seconds",
	    "gauge", "The notAfter time of each served certificate "
	    "(seconds since the epoch).");
	for (i = 0; c != NULL && i < c->n; i++) {
		metrics_str(b, "mailtlsd_certificate_expiry_timestamp_seconds"
		    "{tls=");
		metrics_label(b, c->v[i].tls);
		metrics_str(b, ",name=");
		metrics_label(b, c->v[i].name);
		evbuffer_add_printf(b, ",type=\"%s\"} %lld\n", c->v[i].type,
		    c->v[i].not_after);
	}
}

/* SPEC 10: addresses remembered per service (bounded: ADDRTABLE_MAX). */
static void
metrics_render_addrtables(struct evbuffer *b, const struct runtime *rt)
{
	size_t	i;

	metrics_head(b, "mailtlsd_address_table_entries", "gauge",
	    "Client addresses remembered for the rate and "
	    "authentication-failure limits (bounded per service).");
	for (i = 0; i < rt->nservices; i++) {
		metrics_str(b, "mailtlsd_address_table_entries{service=");
		metrics_label(b, rt->services[i].svc->name);
		evbuffer_add_printf(b, "} %zu\n",
		    addrtable_count(rt->services[i].ctr->limits));
	}
}

int
metrics_render(struct evbuffer *b, const struct runtime *rt)
{
	metrics_head(b, "mailtlsd_build_info", "gauge",
	    "Always 1; the version is in the label.");
	metrics_str(b, "mailtlsd_build_info{version=");
	metrics_label(b, PACKAGE_VERSION);
	metrics_str(b, "} 1\n");
	metrics_render_services(b);
	metrics_render_addrtables(b, rt);
	metrics_render_duration(b);
	metrics_render_certs(b, rt->certs);
	metrics_head(b, "mailtlsd_config_reloads_total", "counter",
	    "SIGHUP reloads, by outcome (a failed one keeps the old "
	    "configuration).");
	evbuffer_add_printf(b, "mailtlsd_config_reloads_total{result=\"success\"}"
	    " %llu\nmailtlsd_config_reloads_total{result=\"failure\"} %llu\n",
	    (unsigned long long)__atomic_load_n(&metrics_reloads[1],
	    __ATOMIC_RELAXED), (unsigned long long)__atomic_load_n(
	    &metrics_reloads[0], __ATOMIC_RELAXED));
	return 0;
}
