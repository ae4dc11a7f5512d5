/*
 * metrics.h - counters for /metrics (SPEC section 11).
 *
 * Every counter lives in a per-worker, cache-line aligned block and is
 * written only by the worker that owns it (no lock, no atomic
 * read-modify-write on the hot path); a scrape sums the blocks of all
 * workers with relaxed atomic loads, which cannot tear a 64-bit value.
 * The blocks hang off a registry keyed by service name that lives for
 * the whole process, outside the reloaded runtime, so counters never
 * reset on SIGHUP.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stdint.h>
#include <sys/time.h>
#include <stddef.h>
#include <time.h>

#include "filter.h"

struct conf;
struct conf_service;
struct evbuffer;
struct runtime;
struct session;
struct worker;

/* Where a session stands (mailtlsd_connections_active{phase}). */
enum metrics_phase {
	METRICS_PH_CONNECTING = 0,	/* waiting for a backend */
	METRICS_PH_HANDSHAKE,		/* client TLS handshake */
	METRICS_PH_CLEARTEXT,		/* relaying before STARTTLS */
	METRICS_PH_TLS,			/* relaying inside TLS */
	METRICS_PH_CLOSING,		/* flushing the last reply */
	METRICS_PH_N,
	METRICS_PH_NONE = METRICS_PH_N
};

/* mailtlsd_tls_handshake_failures_total{reason} */
enum metrics_hs_failure {
	METRICS_HSF_TIMEOUT = 0,	/* handshake_timeout */
	METRICS_HSF_PROTOCOL,		/* alert, not TLS, no shared cipher */
	METRICS_HSF_CLOSED,		/* the client went away */
	METRICS_HSF_ERROR,		/* socket error, or TLS setup failed */
	METRICS_HSF_N
};

/* mailtlsd_connections_total{result} */
enum metrics_conn_result {
	METRICS_CONN_ACCEPTED = 0,	/* became a session */
	METRICS_CONN_REJECTED,		/* over a connection limit */
	METRICS_CONN_N
};

/*
 * Connection limits of SPEC 6, refused at accept, and SPEC 10's rate,
 * refused by the session (refusals_total{kind}).
 */
enum metrics_limit {
	METRICS_LIM_CONNECTIONS = 0,	/* max_connections (daemon, service) */
	METRICS_LIM_PER_IP,		/* max_connections_per_ip */
	METRICS_LIM_RATE,		/* max_connection_rate_per_ip (SPEC 10) */
	METRICS_LIM_N
};

/* mailtlsd_timeouts_total{reason}: sessions closed by a timeout. */
enum metrics_timeout {
	METRICS_TO_IDLE = 0,		/* idle_timeout */
	METRICS_TO_CLEARTEXT,		/* cleartext_timeout */
	METRICS_TO_N
};

#define METRICS_HS_MAX		32	/* version x cipher x resumed, per block */
#define METRICS_BACKENDS_MAX	64	/* distinct backend names per service */
#define METRICS_DURATION_BUCKETS 11

/* One service on one worker: written by that worker only. */
struct metrics_hs {
	const char	*version;	/* OpenSSL's static strings */
	const char	*cipher;
	uint64_t	 resumed;
	uint64_t	 count;
};

struct metrics_block {
	uint64_t		 conns[METRICS_CONN_N];
	int64_t			 active[METRICS_PH_N];
	uint64_t		 hs_fail[METRICS_HSF_N];
	uint64_t		 starttls;
	uint64_t		 refusals[FILTER_REF_N];
	uint64_t		 limits[METRICS_LIM_N];
	uint64_t		 timeouts[METRICS_TO_N];
	uint64_t		 bytes_in, bytes_out;
	uint64_t		 backend_fail[METRICS_BACKENDS_MAX];
	uint64_t		 hs_other;	/* beyond METRICS_HS_MAX */
	uint64_t		 nhs;		/* entries of hs[] published */
	struct metrics_hs	 hs[METRICS_HS_MAX];
} __attribute__((aligned(64)));

struct metrics_service;

/* Startup, before the first runtime: one block per worker and service. */
void	metrics_init(unsigned nworkers);

/*
 * The counters of a service name (created on first use, never freed),
 * with its backends registered for backend_connect_failures.  Main thread.
 */
struct metrics_service *metrics_service(const struct conf_service *);

/* Increments, from the owning worker only. */
void	metrics_conn(struct metrics_service *, unsigned worker,
	    enum metrics_conn_result);
void	metrics_rejected(struct metrics_service *, unsigned worker,
	    enum metrics_limit);
/* A limit refused a session that was accepted (it gets a reply). */
void	metrics_limit(struct metrics_service *, unsigned worker,
	    enum metrics_limit);
void	metrics_session_start(struct session *);
void	metrics_session_phase(struct session *);	/* after a change */
void	metrics_session_close(struct session *, const struct timeval *dur);
void	metrics_session_end(struct session *);		/* at free */
void	metrics_handshake(struct session *);
void	metrics_handshake_failure(struct session *, enum metrics_hs_failure);
void	metrics_starttls(struct session *);
void	metrics_timeout(struct session *, enum metrics_timeout);
void	metrics_backend_failure(struct session *);
/* The refusal counters of a session, for its filter. */
uint64_t *metrics_refusals(struct metrics_service *, unsigned worker);
/* Main thread: a SIGHUP's outcome. */
void	metrics_reload(int ok);

/* Certificate expiry, read when a runtime is built. */
struct metrics_certs;
struct metrics_certs *metrics_certs_load(const struct conf *);
void	metrics_certs_free(struct metrics_certs *);

/* The whole exposition (text format 0.0.4); rt gives the certificates. */
int	metrics_render(struct evbuffer *, const struct runtime *);

/* Relaxed accessors: one writer per value, readers on other threads. */
static inline void
metrics_add(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n,
	    __ATOMIC_RELAXED);
}

static inline void
metrics_inc(uint64_t *p)
{
	metrics_add(p, 1);
}

#endif /* METRICS_H */
