/*
 * backend.h - connecting a session's backend leg with failover.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include <stddef.h>

struct conf;
struct session;

/*
 * Try svc->backends[] in order from s->backend_next, each with
 * backend_connect_timeout.  Calls session_backend_ready() once one is
 * connected, or session_backend_unavailable() when all have failed.
 */
void	backend_connect(struct session *);

/* Timer expiry while connecting: give up on this backend, try the next. */
void	backend_connect_timeout(struct session *);

/* At the session's end: what backend.c allocated for it (DANE wait). */
void	backend_release(struct session *);

/*
 * backend_tls = "starttls" (SPEC 12): the filter has read the server's
 * go-ahead.  Put the leg under TLS; the session waits in CONNECTING for
 * session_backend_tls_ready(), or session_backend_failed() on failure.
 * -1 when TLS cannot be set up at all.
 */
int	backend_starttls(struct session *);

/* Whether a service of conf has backend_source = "client". */
int	backend_uses_transparent(const struct conf *);

/*
 * Whether this process can make IP_TRANSPARENT sockets (the kernel asks
 * for CAP_NET_ADMIN or CAP_NET_RAW): 0, or -1 with the reason in err.
 */
int	backend_transparent_check(char *err, size_t errlen);

#endif /* BACKEND_H */
