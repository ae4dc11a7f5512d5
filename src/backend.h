/*
 * backend.h - connecting a session's backend leg with failover.
 */
#ifndef BACKEND_H
#define BACKEND_H

struct session;

/*
 * Try svc->backends[] in order from s->backend_next, each with
 * backend_connect_timeout.  Calls session_backend_ready() once one is
 * connected, or session_backend_unavailable() when all have failed.
 */
void	backend_connect(struct session *);

/* Timer expiry while connecting: give up on this backend, try the next. */
void	backend_connect_timeout(struct session *);

#endif /* BACKEND_H */
