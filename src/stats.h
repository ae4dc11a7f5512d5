/*
 * stats.h - the stats listener: /metrics and /health (SPEC section 11).
 */
#ifndef STATS_H
#define STATS_H

#include <stddef.h>

struct conf;
struct stats_worker;
struct worker;

/*
 * Startup, before privileges are dropped: bind every stats_listen
 * address.  The sockets live as long as the process (a reload keeps
 * them); -1 with a message in err.
 */
int	stats_bind(const struct conf *, char *err, size_t errlen);
/* Reload: say so if stats_listen changed (it takes a restart). */
void	stats_reload_notice(const struct conf *cur, const struct conf *next);

/* Serve the stats sockets on a worker's loop (w->stats); -1 on failure. */
int	stats_attach(struct worker *);
void	stats_detach(struct worker *);

#endif /* STATS_H */
