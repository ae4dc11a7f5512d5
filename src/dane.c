/*
 * dane.c - TLSA lookups for backend_dane (SPEC 12, RFC 7672).
 *
 * The lookup goes through the system resolver, as Postfix's does:
 * libresolv's res_nquery() with EDNS0 and the DO bit, on private
 * resolver states initialised (res_ninit) from /etc/resolv.conf once, at
 * startup before the chroot (dane_init()), and the records count as
 * authenticated only when the answer's header has the AD bit.  glibc
 * passes that bit on only when resolv.conf says "options trust-ad": the
 * resolver it names must be a validating one the host can trust (on
 * loopback), which -t says (dane_check_resolver()).  No new library:
 * libunbound would validate in-process, but would need its own trust
 * anchor management, where the system resolver is what the host's
 * administrator already runs and what Postfix relies on.
 *
 * res_nquery() blocks for as long as the resolver takes (bounded by
 * dane_res_init(), whatever resolv.conf says), so the workers never call
 * it.  A few resolver threads, started on the first lookup, each with
 * its own resolver state, work through one queue of cache slots; a slot
 * (one per backend of a service) keeps its latest
 * answer until its TTL, clamped to [DANE_TTL_MIN, DANE_TTL_MAX], runs
 * out; an answer without records is kept DANE_TTL_NEGATIVE seconds, a
 * failed lookup DANE_TTL_FAILED, doubled on each failure in a row up to
 * DANE_TTL_FAILED_MAX.
 *
 * A slow name cannot hold up the others for long: a slot has at most one
 * lookup queued or running (its queued flag), each lookup ends within
 * about DANE_QUERY_BUDGET seconds (dane_res_init()), and a failed one is
 * not retried before its backoff runs out, while sessions get the
 * failure from the cache meanwhile.  So with K slots of dead names, a
 * lookup of another name waits behind at most K of them, spread over
 * DANE_THREADS threads: about K / DANE_THREADS * DANE_QUERY_BUDGET
 * seconds, and only once per backoff period.  The sessions that wait for a slot are
 * woken through their own eventfd, which their worker watches in its own
 * event base: no other thread ever touches a worker's base.  One mutex
 * covers every cache, the queue and the waiter lists.
 */
#include "config.h"

#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <resolv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dane.h"
#include "log.h"

#ifndef ns_t_tlsa
#define DANE_T_TLSA	52
#else
#define DANE_T_TLSA	ns_t_tlsa
#endif

/* The largest answer res_nquery() can hand over (TCP). */
#define DANE_ANSWER_MAX	65535

struct dane_wait {
	TAILQ_ENTRY(dane_wait)	 entry;
	struct dane_entry	*on;		/* NULL: not waiting */
	int			 fd;		/* eventfd */
};

struct dane_entry {
	struct dane_cache	*cache;
	char			 qname[DANE_QNAME_MAX];
	struct dane_answer	*ans;		/* latest, or NULL */
	struct timespec		 expires;	/* CLOCK_MONOTONIC */
	bool			 queued;	/* or being looked up */
	unsigned		 failures;	/* in a row: the backoff */
	TAILQ_ENTRY(dane_entry)	 qentry;
	TAILQ_HEAD(, dane_wait)	 waiters;
};

struct dane_cache {
	int			 refs;		/* owner + queued slots */
	size_t			 n;
	struct dane_entry	 e[];
};

static pthread_mutex_t	 dane_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 dane_cond = PTHREAD_COND_INITIALIZER;
static TAILQ_HEAD(, dane_entry) dane_queue =
    TAILQ_HEAD_INITIALIZER(dane_queue);
static unsigned		 dane_nthreads;		/* resolver threads */
static pthread_t	 dane_threads[DANE_THREADS];
static bool		 dane_stopping;		/* dane_stop() */
static bool		 dane_res_ready;
static struct __res_state dane_res[DANE_THREADS];

static void	*dane_main(void *);
static struct dane_answer *dane_lookup(struct __res_state *, const char *,
		    unsigned char *);
static void	 dane_store(struct dane_entry *, struct dane_answer *);
static void	 dane_cache_unref_locked(struct dane_cache *);
static int	 dane_res_init(struct __res_state *);
static int	 dane_start_locked(void);
static uint32_t	 dane_clamp(uint32_t, uint32_t, uint32_t);

static uint32_t
dane_clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

const char *
dane_status_name(enum dane_status st)
{
	switch (st) {
	case DANE_SECURE:
		return "secure";
	case DANE_INSECURE:
		return "insecure";
	case DANE_NONE:
		return "none";
	case DANE_FAILED:
		break;
	}
	return "failed";
}

int
dane_qname(const char *name, unsigned port, char *buf, size_t len)
{
	size_t	 n = strlen(name);
	int	 r;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || port == 0 || port > 65535)
		return -1;
	r = snprintf(buf, len, "_%u._tcp.%.*s", port, (int)n, name);
	return r < 0 || (size_t)r >= len ? -1 : 0;
}

struct dane_answer *
dane_answer_new(enum dane_status st, const char *why, uint32_t ttl)
{
	struct dane_answer	*a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	a->refs = 1;
	a->status = st;
	a->ttl = ttl;
	snprintf(a->why, sizeof(a->why), "%s", why != NULL ? why : "");
	return a;
}

/* Unlocked: only for answers no cache has seen yet, or under dane_lock. */
static void
dane_answer_free(struct dane_answer *a)
{
	free(a->rr);
	free(a->buf);
	free(a);
}

void
dane_answer_unref(struct dane_answer *a)
{
	int	 last;

	if (a == NULL)
		return;
	pthread_mutex_lock(&dane_lock);
	last = --a->refs == 0;
	pthread_mutex_unlock(&dane_lock);
	if (last)
		dane_answer_free(a);
}

/*
 * Whether a record can count under RFC 7672: DANE-TA or DANE-EE (PKIX-TA
 * and PKIX-EE are not for SMTP, 3.1.3), selector Cert or SPKI, matching
 * type Full, SHA2-256 or SHA2-512 (RFC 6698 7.2-7.4).  The others are
 * skipped before anything is counted, so that no number of them can push
 * a usable record out of the answer.
 */
static bool
dane_rr_usable(const unsigned char *rdata)
{
	return (rdata[0] == DANE_USAGE_TA || rdata[0] == DANE_USAGE_EE) &&
	    rdata[1] <= 1 && rdata[2] <= 2;
}

/*
 * ns_initparse() checks the header's counts against the message and
 * ns_parserr() every record's bounds: nothing here reads past len.
 */
struct dane_answer *
dane_parse(const unsigned char *msg, size_t len, char *why, size_t whylen)
{
	struct dane_answer	*a;
	ns_msg			 h;
	ns_rr			 rr;
	size_t			 total = 0, off = 0;
	uint32_t		 ttl = DANE_TTL_MAX;
	int			 i, count, pass;
	bool			 found = false;

	/* dane_answer_new() may fail on any path below: say so. */
	snprintf(why, whylen, "out of memory");
	if (len > DANE_ANSWER_MAX || ns_initparse(msg, (int)len, &h) == -1) {
		snprintf(why, whylen, "malformed answer");
		return NULL;
	}
	/*
	 * TC: records are missing (glibc retries over TCP, so this is a
	 * resolver that could not): what is left may lack the one record
	 * that matters, or its absence may be no proof of anything.
	 */
	if (ns_msg_getflag(h, ns_f_tc))
		return dane_answer_new(DANE_FAILED, "truncated answer (TC)",
		    DANE_TTL_FAILED);
	switch (ns_msg_getflag(h, ns_f_rcode)) {
	case ns_r_noerror:
		break;
	case ns_r_nxdomain:
		return dane_answer_new(DANE_NONE, "NXDOMAIN",
		    DANE_TTL_NEGATIVE);
	case ns_r_servfail:
		return dane_answer_new(DANE_FAILED, "SERVFAIL",
		    DANE_TTL_FAILED);
	default:
		return dane_answer_new(DANE_FAILED, "lookup refused or failed",
		    DANE_TTL_FAILED);
	}
	if ((a = dane_answer_new(ns_msg_getflag(h, ns_f_ad) ? DANE_SECURE :
	    DANE_INSECURE, NULL, 0)) == NULL)
		goto nomem;
	count = ns_msg_count(h, ns_s_an);
	/* Pass 0 counts and sizes, pass 1 copies. */
	for (pass = 0; pass < 2; pass++) {
		a->nrr = 0;
		for (i = 0; i < count; i++) {
			struct dane_rr	*r;

			if (ns_parserr(&h, ns_s_an, i, &rr) == -1) {
				dane_answer_free(a);
				snprintf(why, whylen, "malformed answer");
				return NULL;
			}
			/* Usage, selector, matching type and some data. */
			if (ns_rr_type(rr) != DANE_T_TLSA ||
			    ns_rr_class(rr) != ns_c_in || ns_rr_rdlen(rr) < 4)
				continue;
			if (pass == 0) {
				found = true;
				if (ns_rr_ttl(rr) < ttl)
					ttl = ns_rr_ttl(rr);
			}
			if (!dane_rr_usable(ns_rr_rdata(rr)))
				continue;
			if (pass == 0) {
				total += ns_rr_rdlen(rr) - 3u;
				a->nrr++;
				continue;
			}
			r = &a->rr[a->nrr++];
			r->usage = ns_rr_rdata(rr)[0];
			r->selector = ns_rr_rdata(rr)[1];
			r->mtype = ns_rr_rdata(rr)[2];
			r->len = (uint16_t)(ns_rr_rdlen(rr) - 3u);
			memcpy(a->buf + off, ns_rr_rdata(rr) + 3, r->len);
			r->data = a->buf + off;
			off += r->len;
		}
		if (pass == 1 || a->nrr == 0)
			break;
		/*
		 * More usable records than we keep: dropping some could drop
		 * the one that matches, so fail closed rather than guess.
		 */
		if (a->nrr > DANE_RR_MAX) {
			dane_answer_free(a);
			return dane_answer_new(DANE_FAILED, "too many usable "
			    "TLSA records", DANE_TTL_FAILED);
		}
		if ((a->rr = calloc(a->nrr, sizeof(*a->rr))) == NULL ||
		    (a->buf = malloc(total)) == NULL) {
			dane_answer_free(a);
			goto nomem;
		}
	}
	/* TLSA records of which none is usable keep their status. */
	if (!found) {
		a->status = DANE_NONE;
		snprintf(a->why, sizeof(a->why), "no TLSA records");
		ttl = DANE_TTL_NEGATIVE;
	}
	a->ttl = ttl;
	return a;
nomem:
	snprintf(why, whylen, "out of memory");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The resolver. */

/*
 * A query's worst case is bounded here, not by resolv.conf (whose
 * default is 5 s times 2 attempts per name server): glibc's res_send()
 * tries each of the nscount servers in turn, retry times, and waits
 * retrans seconds for the first server, (retrans << i) / nscount (at
 * least 1) for the server of index i.  One round (retry 1) with retrans
 * DANE_QUERY_BUDGET / nscount keeps a lookup within 4 s with one or two
 * servers and 3 s with three, well below the default
 * backend_connect_timeout of 10 s.
 */
static int
dane_res_init(struct __res_state *res)
{
	memset(res, 0, sizeof(*res));
	if (res_ninit(res) == -1)
		return -1;
	/* EDNS0 with DO: ask for DNSSEC, so that AD is meaningful. */
	res->options |= RES_USE_EDNS0 | RES_USE_DNSSEC;
	res->retry = 1;
	res->retrans = res->nscount > 1 ? DANE_QUERY_BUDGET / res->nscount :
	    DANE_QUERY_BUDGET;
	if (res->retrans < 1)
		res->retrans = 1;
	return 0;
}

uint32_t
dane_backoff(unsigned failures)
{
	uint32_t	 ttl = DANE_TTL_FAILED;

	while (failures-- > 0 && ttl < DANE_TTL_FAILED_MAX)
		ttl *= 2;
	return ttl < DANE_TTL_FAILED_MAX ? ttl : DANE_TTL_FAILED_MAX;
}

/* One lookup, in the resolver thread; never NULL but out of memory. */
static struct dane_answer *
dane_lookup(struct __res_state *res, const char *qname, unsigned char *buf)
{
	struct dane_answer	*a;
	char			 why[64] = "out of memory";
	int			 n;

	if (!dane_res_ready)
		return dane_answer_new(DANE_FAILED, "no resolver "
		    "configuration", DANE_TTL_FAILED);
	n = res_nquery(res, qname, ns_c_in, DANE_T_TLSA, buf,
	    DANE_ANSWER_MAX);
	if (n < 0) {
		switch (res->res_h_errno) {
		case HOST_NOT_FOUND:
			return dane_answer_new(DANE_NONE, "NXDOMAIN",
			    DANE_TTL_NEGATIVE);
		case NO_DATA:
			return dane_answer_new(DANE_NONE, "no TLSA records",
			    DANE_TTL_NEGATIVE);
		case TRY_AGAIN:
			return dane_answer_new(DANE_FAILED, "SERVFAIL or "
			    "timeout", DANE_TTL_FAILED);
		default:
			return dane_answer_new(DANE_FAILED, "lookup failed",
			    DANE_TTL_FAILED);
		}
	}
	if ((a = dane_parse(buf, (size_t)n, why, sizeof(why))) == NULL)
		a = dane_answer_new(DANE_FAILED, why, DANE_TTL_FAILED);
	return a;
}

static void *
dane_main(void *arg)
{
	struct __res_state	*res = arg;
	struct dane_entry	*e;
	struct dane_answer	*a;
	unsigned char		*buf;
	char			 qname[DANE_QNAME_MAX];

	if ((buf = malloc(DANE_ANSWER_MAX)) == NULL)
		log_error("DANE resolver: out of memory");
	for (;;) {
		pthread_mutex_lock(&dane_lock);
		while ((e = TAILQ_FIRST(&dane_queue)) == NULL && !dane_stopping)
			pthread_cond_wait(&dane_cond, &dane_lock);
		if (dane_stopping) {
			pthread_mutex_unlock(&dane_lock);
			break;
		}
		/* Stays queued (e->queued) until stored, but off the list. */
		TAILQ_REMOVE(&dane_queue, e, qentry);
		memcpy(qname, e->qname, sizeof(qname));
		pthread_mutex_unlock(&dane_lock);

		a = buf != NULL ? dane_lookup(res, qname, buf) : NULL;
		if (a == NULL)
			a = dane_answer_new(DANE_FAILED, "out of memory",
			    DANE_TTL_FAILED);
		if (a != NULL)
			log_debug("TLSA %s: %s%s%s, %zu records, ttl %u", qname,
			    dane_status_name(a->status), a->why[0] ? ": " : "",
			    a->why, a->nrr, (unsigned)a->ttl);

		pthread_mutex_lock(&dane_lock);
		/* The slot's name may have changed meanwhile: then drop. */
		if (a != NULL && strcmp(qname, e->qname) != 0) {
			if (--a->refs == 0)
				dane_answer_free(a);
			a = NULL;
		}
		dane_store(e, a);
		dane_cache_unref_locked(e->cache);
		pthread_mutex_unlock(&dane_lock);
	}
	free(buf);
	return NULL;
}

/* Under dane_lock: a ends the lookup of e; wake its waiters. */
static void
dane_store(struct dane_entry *e, struct dane_answer *a)
{
	struct dane_wait	*w;
	struct timespec		 now;
	uint64_t		 one = 1;
	uint32_t		 ttl;

	e->queued = false;
	if (a != NULL) {
		if (e->ans != NULL && --e->ans->refs == 0)
			dane_answer_free(e->ans);
		e->ans = a;
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* Failures back off: a dead name is not asked for again
		 * and again, holding a resolver thread each time. */
		if (a->status == DANE_FAILED) {
			ttl = dane_backoff(e->failures);
			if (e->failures < 16)
				e->failures++;
		} else {
			ttl = dane_clamp(a->ttl, DANE_TTL_MIN, DANE_TTL_MAX);
			e->failures = 0;
		}
		e->expires = now;
		e->expires.tv_sec += ttl;
	}
	while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, w, entry);
		w->on = NULL;
		/* A full counter (never) or a closed fd: nothing to do. */
		if (write(w->fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
			log_debug("DANE: cannot wake a session: %s",
			    strerror(errno));
	}
}

/* Under dane_lock: the resolver threads, on the first lookup. */
static int
dane_start_locked(void)
{
	pthread_t	 t;
	sigset_t	 all, old;
	int		 rc = 0;

	if (dane_nthreads > 0)
		return 0;
	/* Signals are for the main thread only. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (dane_stopping)
		return -1;
	while (dane_nthreads < DANE_THREADS && (rc = pthread_create(&t, NULL,
	    dane_main, &dane_res[dane_nthreads])) == 0)
		dane_threads[dane_nthreads++] = t;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (dane_nthreads == 0) {
		log_error("DANE: cannot start a resolver thread: %s",
		    strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * Read resolv.conf into every thread's resolver state, once, from main()
 * before the chroot and the privilege drop (a reload inside the jail
 * would find no /etc/resolv.conf), and before any thread exists: nothing
 * here changes afterwards, so the threads read it without the lock.
 */
int
dane_init(void)
{
	size_t	 i;

	for (i = 0; i < DANE_THREADS; i++)
		if (dane_res_init(&dane_res[i]) == -1)
			return -1;
	dane_res_ready = true;
	return 0;
}

bool
dane_ready(void)
{
	return dane_res_ready;
}

/*
 * At exit, after the workers, while the log is still there: a thread
 * in a lookup finishes it (DANE_QUERY_BUDGET seconds at most), none
 * starts another, and the slots still queued drop their cache
 * references.  No lookup starts afterwards.
 */
void
dane_stop(void)
{
	struct dane_entry	*e;
	unsigned		 i;

	pthread_mutex_lock(&dane_lock);
	dane_stopping = true;
	pthread_cond_broadcast(&dane_cond);
	pthread_mutex_unlock(&dane_lock);
	for (i = 0; i < dane_nthreads; i++)
		pthread_join(dane_threads[i], NULL);
	pthread_mutex_lock(&dane_lock);
	dane_nthreads = 0;
	while ((e = TAILQ_FIRST(&dane_queue)) != NULL) {
		TAILQ_REMOVE(&dane_queue, e, qentry);
		dane_store(e, NULL);
		dane_cache_unref_locked(e->cache);
	}
	pthread_mutex_unlock(&dane_lock);
	for (i = 0; i < DANE_THREADS && dane_res_ready; i++)
		res_nclose(&dane_res[i]);
}

/* ------------------------------------------------------------------ */
/* Caches. */

struct dane_cache *
dane_cache_new(size_t nslots)
{
	struct dane_cache	*c;
	size_t			 i;

	if ((c = calloc(1, sizeof(*c) + nslots * sizeof(c->e[0]))) == NULL)
		return NULL;
	c->refs = 1;
	c->n = nslots;
	for (i = 0; i < nslots; i++) {
		c->e[i].cache = c;
		TAILQ_INIT(&c->e[i].waiters);
	}
	return c;
}

static void
dane_cache_unref_locked(struct dane_cache *c)
{
	size_t	 i;

	if (--c->refs > 0)
		return;
	for (i = 0; i < c->n; i++)
		if (c->e[i].ans != NULL && --c->e[i].ans->refs == 0)
			dane_answer_free(c->e[i].ans);
	free(c);
}

void
dane_cache_free(struct dane_cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&dane_lock);
	dane_cache_unref_locked(c);
	pthread_mutex_unlock(&dane_lock);
}

struct dane_answer *
dane_get(struct dane_cache *c, size_t slot, const char *qname,
    struct dane_wait *w)
{
	struct dane_entry	*e;
	struct dane_answer	*a = NULL;
	struct timespec		 now;

	if (slot >= c->n)
		return dane_answer_new(DANE_FAILED, "no such backend", 0);
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&dane_lock);
	e = &c->e[slot];
	if (strcmp(e->qname, qname) != 0) {
		snprintf(e->qname, sizeof(e->qname), "%s", qname);
		if (e->ans != NULL && --e->ans->refs == 0)
			dane_answer_free(e->ans);
		e->ans = NULL;
		e->failures = 0;
	}
	if (e->ans != NULL && now.tv_sec < e->expires.tv_sec) {
		a = e->ans;
		a->refs++;
		goto out;
	}
	if (!e->queued) {
		if (dane_start_locked() == -1) {
			a = dane_answer_new(DANE_FAILED, "no resolver thread",
			    0);
			goto out;
		}
		e->queued = true;
		c->refs++;
		TAILQ_INSERT_TAIL(&dane_queue, e, qentry);
		pthread_cond_signal(&dane_cond);
	}
	if (w != NULL && w->on != e) {
		if (w->on != NULL)
			TAILQ_REMOVE(&w->on->waiters, w, entry);
		TAILQ_INSERT_TAIL(&e->waiters, w, entry);
		w->on = e;
	}
out:
	pthread_mutex_unlock(&dane_lock);
	return a;
}

struct dane_answer *
dane_peek(struct dane_cache *c, size_t slot)
{
	struct dane_answer	*a;

	if (slot >= c->n)
		return NULL;
	pthread_mutex_lock(&dane_lock);
	if ((a = c->e[slot].ans) != NULL)
		a->refs++;
	pthread_mutex_unlock(&dane_lock);
	return a;
}

/* ------------------------------------------------------------------ */
/* Waiting sessions. */

struct dane_wait *
dane_wait_new(void)
{
	struct dane_wait	*w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	if ((w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		free(w);
		return NULL;
	}
	return w;
}

int
dane_wait_fd(const struct dane_wait *w)
{
	return w->fd;
}

void
dane_wait_drain(struct dane_wait *w)
{
	uint64_t	 v;

	if (read(w->fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		log_debug("DANE: eventfd read: %s", strerror(errno));
}

bool
dane_wait_cancel(struct dane_wait *w)
{
	bool	 was;

	pthread_mutex_lock(&dane_lock);
	if ((was = w->on != NULL)) {
		TAILQ_REMOVE(&w->on->waiters, w, entry);
		w->on = NULL;
	}
	pthread_mutex_unlock(&dane_lock);
	return was;
}

void
dane_wait_free(struct dane_wait *w)
{
	if (w == NULL)
		return;
	(void)dane_wait_cancel(w);
	close(w->fd);
	free(w);
}

/* ------------------------------------------------------------------ */
/* -t. */

static bool
dane_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	if (sa->sa_family == AF_INET) {
		sin = (const struct sockaddr_in *)sa;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)sa;
		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return false;
}

/* What res means for DANE; with all, also what is right with it. */
static void
dane_findings(const struct __res_state *res, dane_finding_cb cb, void *arg,
    bool all)
{
	const struct sockaddr	*sa;
	char			 msg[512], addr[INET6_ADDRSTRLEN];
	int			 i, remote = 0;

	if (!(res->options & RES_TRUSTAD))
		cb(arg, "backend_dane: /etc/resolv.conf has no \"options "
		    "trust-ad\": glibc clears the AD bit of every answer, so "
		    "TLSA records never count as authenticated and DANE never "
		    "applies (backend_tls_verify decides: the CA store, or no "
		    "verification at all when it is false)");
	for (i = 0; i < res->nscount && i < MAXNS; i++) {
		sa = (const struct sockaddr *)&res->nsaddr_list[i];
		if (sa->sa_family == 0 && res->_u._ext.nsaddrs[i] != NULL)
			sa = (const struct sockaddr *)res->_u._ext.nsaddrs[i];
		if (dane_loopback(sa))
			continue;
		remote = 1;
		if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)
			    sa)->sin6_addr, addr, sizeof(addr));
		else
			inet_ntop(AF_INET, &((const struct sockaddr_in *)
			    sa)->sin_addr, addr, sizeof(addr));
		snprintf(msg, sizeof(msg), "backend_dane: nameserver %s is "
		    "not on this host: its AD bit crosses the network "
		    "unauthenticated; use a validating resolver on loopback",
		    addr);
		cb(arg, msg);
	}
	if (all && (res->options & RES_TRUSTAD) && !remote)
		cb(arg, "backend_dane: TLSA records are trusted as far as the "
		    "resolver of /etc/resolv.conf validates DNSSEC: it must be "
		    "a validating resolver (e.g. unbound); resolv.conf is read "
		    "once, at startup");
}

void
dane_check_resolver(dane_finding_cb cb, void *arg)
{
	struct __res_state	 res;

	if (dane_res_init(&res) == -1) {
		cb(arg, "backend_dane: the resolver configuration "
		    "(/etc/resolv.conf) cannot be read: every TLSA lookup "
		    "will fail, and with it every session");
		return;
	}
	dane_findings(&res, cb, arg, true);
	res_nclose(&res);
}

void
dane_warn_resolver(dane_finding_cb cb, void *arg)
{
	if (!dane_res_ready) {
		cb(arg, "backend_dane: the resolver configuration "
		    "(/etc/resolv.conf) could not be read at startup");
		return;
	}
	dane_findings(&dane_res[0], cb, arg, false);
}
