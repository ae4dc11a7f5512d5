/*
 * dane.h - TLSA records for backend_dane (SPEC 12, RFC 7672).
 *
 * The records of _PORT._tcp.NAME come from the system resolver
 * (res_nquery) and are trusted only when its answer carries the AD bit.
 * res_nquery blocks, so no worker ever calls it: a few resolver threads
 * answer the lookups of every service, each answer kept in a small cache
 * (one slot per backend of a service) until its TTL runs out.  A session
 * that finds no fresh answer registers a struct dane_wait, whose eventfd
 * a resolver thread writes once the answer is in; the worker watches
 * that fd in its own event base.
 */
#ifndef DANE_H
#define DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum dane_status {
	DANE_SECURE = 0,	/* TLSA records, authenticated (AD bit) */
	DANE_INSECURE,		/* TLSA records without the AD bit */
	DANE_NONE,		/* no TLSA records (NXDOMAIN, NODATA) */
	DANE_FAILED,		/* SERVFAIL, timeout...: fail closed */
};

struct dane_rr {
	uint8_t			 usage;
	uint8_t			 selector;
	uint8_t			 mtype;
	uint16_t		 len;
	const unsigned char	*data;		/* into the answer */
};

/* One answer, immutable once made; shared by reference. */
struct dane_answer {
	int			 refs;		/* under the cache lock */
	enum dane_status	 status;
	char			 why[64];	/* NONE, FAILED: what happened */
	uint32_t		 ttl;		/* seconds, from the records */
	size_t			 nrr;
	struct dane_rr		*rr;
	unsigned char		*buf;		/* the records' data */
};

/* The usages RFC 7672 allows for SMTP (3.1.3). */
#define DANE_USAGE_TA		2	/* DANE-TA: a trust anchor */
#define DANE_USAGE_EE		3	/* DANE-EE: the server's key */

/* Bounds of the time an answer is kept (seconds). */
#define DANE_TTL_MIN		10
#define DANE_TTL_MAX		3600
#define DANE_TTL_NEGATIVE	60	/* no records: SOA-less default */
#define DANE_TTL_FAILED		5	/* doubled per failure in a row */
#define DANE_TTL_FAILED_MAX	60
/* The seconds one query may take, shared among the name servers. */
#define DANE_QUERY_BUDGET	4
#define DANE_RR_MAX		64	/* usable records of one answer */
/* "_65535._tcp." and a name of at most 253 characters (conf.c checks). */
#define DANE_QNAME_MAX		272

/*
 * Resolver threads: a lookup that hangs (a server that never answers,
 * for up to DANE_QUERY_BUDGET seconds) holds up only one.
 */
#define DANE_THREADS		4
/*
 * Descriptors the resolver threads may hold at once: glibc's res_nquery()
 * opens a socket per name server (MAXNS, 3) and closes them all at the
 * end of the query.  The sessions' own: a session waiting for an answer
 * holds an eventfd in place of its backend socket, never both.
 */
#define DANE_FDS		(DANE_THREADS * 3)

/*
 * A DNS response to a TLSA query (res_nquery's answer, len bytes): the
 * usable TLSA records (usage 2 or 3, known selector and matching type)
 * of class IN in its answer section (others ignored, CNAMEs were the
 * resolver's to follow), SECURE if the header's AD bit is set, else
 * INSECURE, with no records kept when none is usable; NONE when it holds
 * no TLSA record.  FAILED when the answer is truncated (TC) or has more
 * than DANE_RR_MAX usable records.  NULL with a reason in why when the
 * message does not parse or memory runs out.
 */
struct dane_answer *dane_parse(const unsigned char *msg, size_t len,
		    char *why, size_t whylen);
/* An answer without records: NONE or FAILED. */
struct dane_answer *dane_answer_new(enum dane_status, const char *why,
		    uint32_t ttl);
void		dane_answer_unref(struct dane_answer *);

/*
 * How long a failed answer is kept after that many failures in a
 * row: DANE_TTL_FAILED doubled each time, at most DANE_TTL_FAILED_MAX.
 */
uint32_t	dane_backoff(unsigned failures);

/* "ee", "ta", ... for the logs: the status word of an answer. */
const char	*dane_status_name(enum dane_status);

/*
 * The qname of backend port on host name: "_PORT._tcp.NAME" (a trailing
 * dot of name dropped).  -1 if it does not fit.
 */
int		dane_qname(const char *name, unsigned port, char *buf,
		    size_t len);

/*
 * Read /etc/resolv.conf for the resolver threads: once, in main() before
 * the chroot, the privilege drop and any thread.  -1 if it cannot be
 * read; then every service with backend_dane fails to build, with
 * dane_ready() false.
 */
int		dane_init(void);
bool		dane_ready(void);
/* At exit: end the resolver threads (after the workers). */
void		dane_stop(void);

/* One cache per service with backend_dane, one slot per backend. */
struct dane_cache;
struct dane_cache *dane_cache_new(size_t nslots);
/* Drops the owner's reference (a resolver thread may hold one). */
void		dane_cache_free(struct dane_cache *);

/* A session waiting for an answer: a resolver thread writes fd. */
struct dane_wait;
struct dane_wait *dane_wait_new(void);
int		dane_wait_fd(const struct dane_wait *);
/* Read the wake-up from the fd (non-blocking). */
void		dane_wait_drain(struct dane_wait *);
/* Stop waiting (if it was), then free. */
void		dane_wait_free(struct dane_wait *);
/* Stop waiting; true if it was waiting. */
bool		dane_wait_cancel(struct dane_wait *);

/*
 * The fresh answer of slot for qname, as a reference for the caller to
 * unref; or NULL: a lookup is queued (or running) and w, unless NULL,
 * waits for it.  From any thread; never blocks.
 */
struct dane_answer *dane_get(struct dane_cache *, size_t slot,
		    const char *qname, struct dane_wait *w);
/* The latest answer of slot, fresh or not (a reference), or NULL. */
struct dane_answer *dane_peek(struct dane_cache *, size_t slot);

/*
 * -t: what the system resolver configuration means for DANE, one
 * finding (a warning) per call of cb.
 */
typedef void	(*dane_finding_cb)(void *arg, const char *msg);
void		dane_check_resolver(dane_finding_cb, void *arg);
/* The same problems of the state dane_init() read (startup, reload). */
void		dane_warn_resolver(dane_finding_cb, void *arg);

#endif /* DANE_H */
