/*
 * addrtable.h - per-address history for the abuse limits of SPEC 10:
 * the connection rate (max_connection_rate_per_ip) and authentication
 * failures (max_auth_failures_per_ip within auth_failure_window).
 */
#ifndef ADDRTABLE_H
#define ADDRTABLE_H

#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct addrtable;

/* A table of at most max entries (ADDRTABLE_MAX in mailtlsd.h). */
struct addrtable *addrtable_new(size_t max);
void		 addrtable_free(struct addrtable *);

/*
 * A new connection from sa at now_ms (a monotonic clock, milliseconds):
 * true if it fits under rate connections per minute (token bucket of
 * rate tokens, refilled at rate per 60 s), false if it is over.
 */
bool		 addrtable_connect(struct addrtable *, const struct sockaddr *,
		    unsigned rate, uint64_t now_ms);

/*
 * Whether credential commands from sa are refused: max failures or more
 * were recorded in the window (seconds) that began with the first of
 * them.
 */
bool		 addrtable_auth_blocked(struct addrtable *,
		    const struct sockaddr *, unsigned max, unsigned window,
		    uint64_t now_ms);

/* Record a failure; returns the count in the current window. */
unsigned	 addrtable_auth_failed(struct addrtable *,
		    const struct sockaddr *, unsigned window, uint64_t now_ms);

/* Entries held now (for mailtlsd_address_table_entries). */
size_t		 addrtable_count(struct addrtable *);

/* A monotonic clock in milliseconds, for the callers. */
uint64_t	 addrtable_now(void);

#endif /* ADDRTABLE_H */
