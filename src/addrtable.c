/*
 * addrtable.c - per-address history for the abuse limits (SPEC 10).
 *
 * Unlike iptable.c, whose entries are connection slots that must be given
 * back and so can never be dropped (they are bounded by max_connections
 * instead), this table holds history that may be forgotten: how fast an
 * address has been connecting and how often its logins failed.  Spoofed
 * or proxied sources are unlimited, so the table is bounded by itself
 * (issue 10: ten million addresses must not grow it):
 *
 *  - at most `max` entries, allocated as one array up front (calloc'd, so
 *    pages are only touched as entries are first used);
 *  - lookup through a hash whose key is drawn at random per table
 *    (SipHash-2-4): an attacker who cannot read the key cannot aim many
 *    addresses at one chain;
 *  - entries on an LRU list; a full table evicts the least recently used
 *    one, and an entry whose history has expired (bucket full again,
 *    failure window over) is freed when it reaches the LRU tail.
 *
 * Eviction can make the table forget a real sprayer while someone floods
 * it with fresh addresses; that is the price of a bound.  ADDRTABLE_MAX
 * is sized so that this takes a flood far above any legitimate rate.
 *
 * One mutex per table: every worker accepts on the same service, and the
 * table is touched once per connection and once per authentication
 * failure, not per byte.
 *
 * The connection rate is a token bucket: an address starts with `rate`
 * tokens, each connection takes one, and tokens come back at rate per 60
 * seconds.  Bursts of up to `rate` connections pass, the sustained rate
 * is `rate` per minute, and the arithmetic is exact in integers (a token
 * is 60000 units, refilled at `rate` units per millisecond).
 *
 * Authentication failures count in a fixed window that opens with the
 * first failure: past `max` failures the address is refused until the
 * window that began with its first failure is over.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "addrtable.h"
#include "util.h"

#define ADDR_NONE	UINT32_MAX
#define TOKEN_UNITS	60000ULL	/* one token; also ms per minute */

struct addrent {
	unsigned char	 key[16];
	uint32_t	 hnext;		/* hash chain */
	uint32_t	 lprev, lnext;	/* LRU list, or free list (lnext) */
	uint32_t	 auth_fail;
	uint32_t	 bucket_used;	/* tokens and stamp are set */
	uint64_t	 tokens;	/* units */
	uint64_t	 stamp;		/* ms: tokens as of then */
	uint64_t	 auth_start;	/* ms: first failure of the window */
	uint64_t	 expires;	/* ms: nothing left to remember */
};

struct addrtable {
	pthread_mutex_t	 lock;
	uint64_t	 k0, k1;	/* SipHash key */
	struct addrent	*ent;
	uint32_t	*bucket;
	uint32_t	 mask;		/* buckets - 1 */
	uint32_t	 max;
	uint32_t	 used;
	uint32_t	 fresh;		/* entries never used: fresh.. max-1 */
	uint32_t	 freelist;
	uint32_t	 lru_head, lru_tail;	/* head: most recent */
};

static uint32_t	addr_hash(const struct addrtable *, const unsigned char[16]);
static uint32_t	addr_find(struct addrtable *, const unsigned char[16]);
static uint32_t	addr_get(struct addrtable *, const unsigned char[16],
		    uint64_t);
static void	addr_unlink_lru(struct addrtable *, uint32_t);
static void	addr_touch(struct addrtable *, uint32_t);
static void	addr_drop(struct addrtable *, uint32_t);
static void	addr_expire(struct addrtable *, uint64_t);

struct addrtable *
addrtable_new(size_t max)
{
	struct addrtable	*t;
	size_t			 nb = 1, i;

	if (max == 0 || max >= ADDR_NONE || (t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	while (nb < max)
		nb <<= 1;
	t->ent = calloc(max, sizeof(*t->ent));
	t->bucket = malloc(nb * sizeof(*t->bucket));
	if (t->ent == NULL || t->bucket == NULL ||
	    RAND_bytes((unsigned char *)&t->k0, sizeof(t->k0)) != 1 ||
	    RAND_bytes((unsigned char *)&t->k1, sizeof(t->k1)) != 1) {
		free(t->ent);
		free(t->bucket);
		free(t);
		return NULL;
	}
	for (i = 0; i < nb; i++)
		t->bucket[i] = ADDR_NONE;
	t->mask = (uint32_t)(nb - 1);
	t->max = (uint32_t)max;
	t->freelist = t->lru_head = t->lru_tail = ADDR_NONE;
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

void
addrtable_free(struct addrtable *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->ent);
	free(t->bucket);
	free(t);
}

uint64_t
addrtable_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}


/* SipHash-2-4 (Aumasson and Bernstein) of a 16-byte key. */
#define ROTL(x, b)	(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {							\
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);	\
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;				\
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;				\
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);	\
} while (0)

static uint64_t
addr_le64(const unsigned char *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t
addr_hash(const struct addrtable *t, const unsigned char key[16])
{
	uint64_t	v0 = t->k0 ^ 0x736f6d6570736575ULL;
	uint64_t	v1 = t->k1 ^ 0x646f72616e646f6dULL;
	uint64_t	v2 = t->k0 ^ 0x6c7967656e657261ULL;
	uint64_t	v3 = t->k1 ^ 0x7465646279746573ULL;
	uint64_t	m, b = (uint64_t)16 << 56;
	int		i;

	for (i = 0; i < 2; i++) {
		m = addr_le64(key + 8 * i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return (uint32_t)((v0 ^ v1 ^ v2 ^ v3) & t->mask);
}

static uint32_t
addr_find(struct addrtable *t, const unsigned char key[16])
{
	uint32_t	i;

	for (i = t->bucket[addr_hash(t, key)]; i != ADDR_NONE;
	    i = t->ent[i].hnext)
		if (memcmp(t->ent[i].key, key, 16) == 0)
			return i;
	return ADDR_NONE;
}

static void
addr_unlink_lru(struct addrtable *t, uint32_t i)
{
	struct addrent	*e = &t->ent[i];

	if (e->lprev != ADDR_NONE)
		t->ent[e->lprev].lnext = e->lnext;
	else
		t->lru_head = e->lnext;
	if (e->lnext != ADDR_NONE)
		t->ent[e->lnext].lprev = e->lprev;
	else
		t->lru_tail = e->lprev;
}

/* Most recently used: to the head of the LRU list. */
static void
addr_touch(struct addrtable *t, uint32_t i)
{
	struct addrent	*e = &t->ent[i];

	if (t->lru_head == i)
		return;
	addr_unlink_lru(t, i);
	e->lprev = ADDR_NONE;
	e->lnext = t->lru_head;
	if (t->lru_head != ADDR_NONE)
		t->ent[t->lru_head].lprev = i;
	t->lru_head = i;
	if (t->lru_tail == ADDR_NONE)
		t->lru_tail = i;
}

static void
addr_drop(struct addrtable *t, uint32_t i)
{
	struct addrent	*e = &t->ent[i];
	uint32_t	*pp;

	for (pp = &t->bucket[addr_hash(t, e->key)]; *pp != i;
	    pp = &t->ent[*pp].hnext)
		;	/* i is on its chain */
	*pp = e->hnext;
	addr_unlink_lru(t, i);
	memset(e, 0, sizeof(*e));
	e->lnext = t->freelist;
	t->freelist = i;
	t->used--;
}

/* Free a few expired entries from the LRU tail (amortised cleanup). */
static void
addr_expire(struct addrtable *t, uint64_t now)
{
	int	n;

	for (n = 0; n < 2 && t->lru_tail != ADDR_NONE &&
	    t->ent[t->lru_tail].expires <= now; n++)
		addr_drop(t, t->lru_tail);
}

/* The entry of key, created (evicting the LRU one if full) if missing. */
static uint32_t
addr_get(struct addrtable *t, const unsigned char key[16], uint64_t now)
{
	struct addrent	*e;
	uint32_t	 i, h;

	addr_expire(t, now);
	if ((i = addr_find(t, key)) != ADDR_NONE) {
		addr_touch(t, i);
		return i;
	}
	if (t->used == t->max)
		addr_drop(t, t->lru_tail);
	if (t->freelist != ADDR_NONE) {
		i = t->freelist;
		t->freelist = t->ent[i].lnext;
	} else
		i = t->fresh++;
	e = &t->ent[i];
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, 16);
	h = addr_hash(t, key);
	e->hnext = t->bucket[h];
	t->bucket[h] = i;
	e->lprev = ADDR_NONE;
	e->lnext = t->lru_head;
	if (t->lru_head != ADDR_NONE)
		t->ent[t->lru_head].lprev = i;
	else
		t->lru_tail = i;
	t->lru_head = i;
	t->used++;
	return i;
}

bool
addrtable_connect(struct addrtable *t, const struct sockaddr *sa,
    unsigned rate, uint64_t now)
{
	unsigned char	 key[16];
	struct addrent	*e;
	uint64_t	 cap = (uint64_t)rate * TOKEN_UNITS;
	bool		 ok;

	util_addr_key(sa, key);
	pthread_mutex_lock(&t->lock);
	e = &t->ent[addr_get(t, key, now)];
	if (!e->bucket_used) {
		e->bucket_used = 1;
		e->tokens = cap;	/* a new bucket starts full */
	} else if (now > e->stamp) {
		e->tokens += (now - e->stamp) * rate;
		if (e->tokens > cap)
			e->tokens = cap;
	}
	e->stamp = now;
	if ((ok = e->tokens >= TOKEN_UNITS))
		e->tokens -= TOKEN_UNITS;
	/* Full again after at most a minute: nothing to remember then. */
	if (e->expires < now + TOKEN_UNITS)
		e->expires = now + TOKEN_UNITS;
	pthread_mutex_unlock(&t->lock);
	return ok;
}

bool
addrtable_auth_blocked(struct addrtable *t, const struct sockaddr *sa,
    unsigned max, unsigned window, uint64_t now)
{
	unsigned char	 key[16];
	struct addrent	*e;
	uint32_t	 i;
	bool		 blocked = false;

	util_addr_key(sa, key);
	pthread_mutex_lock(&t->lock);
	if ((i = addr_find(t, key)) != ADDR_NONE) {
		e = &t->ent[i];
		blocked = e->auth_fail >= max &&
		    now < e->auth_start + (uint64_t)window * 1000;
	}
	pthread_mutex_unlock(&t->lock);
	return blocked;
}

unsigned
addrtable_auth_failed(struct addrtable *t, const struct sockaddr *sa,
    unsigned window, uint64_t now)
{
	unsigned char	 key[16];
	struct addrent	*e;
	uint64_t	 end;
	unsigned	 n;

	util_addr_key(sa, key);
	pthread_mutex_lock(&t->lock);
	e = &t->ent[addr_get(t, key, now)];
	if (e->auth_fail == 0 ||
	    now >= e->auth_start + (uint64_t)window * 1000) {
		e->auth_fail = 0;
		e->auth_start = now;
	}
	if (e->auth_fail < UINT32_MAX)
		e->auth_fail++;
	n = e->auth_fail;
	end = e->auth_start + (uint64_t)window * 1000;
	if (e->expires < end)
		e->expires = end;
	pthread_mutex_unlock(&t->lock);
	return n;
}

size_t
addrtable_count(struct addrtable *t)
{
	size_t	n;

	pthread_mutex_lock(&t->lock);
	n = t->used;
	pthread_mutex_unlock(&t->lock);
	return n;
}
