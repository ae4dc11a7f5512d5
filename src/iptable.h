/*
 * iptable.h - connections per client address (max_connections_per_ip).
 */
#ifndef IPTABLE_H
#define IPTABLE_H

#include <sys/socket.h>

struct iptable;

struct iptable	*iptable_new(void);
void		 iptable_free(struct iptable *);
/* Returns 0 and counts the address if below max (0: no max), else -1. */
int		 iptable_take(struct iptable *, const struct sockaddr *,
		    unsigned max);
void		 iptable_release(struct iptable *, const struct sockaddr *);

#endif /* IPTABLE_H */
