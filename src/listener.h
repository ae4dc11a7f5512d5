/*
 * listener.h - listening sockets and the accept path.
 */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>

#include <event2/listener.h>

struct conf_endpoint;
struct conf_service;
struct listener_ctx;
struct sockaddr;
struct service_rt;
struct worker;

/*
 * Bind and listen on one address of a service.  Returns the socket, or -1
 * with a message naming the service and the address.
 */
int	listener_bind(const struct conf_service *, const struct conf_endpoint *,
	    char *err, size_t errlen);

/* Listen on fd in worker w's event loop; NULL on failure. */
struct listener_ctx *listener_attach(struct worker *, struct service_rt *,
	    int fd);

/*
 * accept_proxy services: take the per-address slot for the address the
 * PROXY header named; 0, or -1 at max_connections_per_ip.
 */
int	listener_take_ip(struct service_rt *, const struct sockaddr *);

/*
 * Give back the connection slots taken when a connection was accepted,
 * and the per-address one for sa (NULL: none was taken).
 */
void	listener_release(struct service_rt *, const struct sockaddr *);

/* Stop listening and free the listener (worker thread only). */
void	listener_detach(struct listener_ctx *);

#endif /* LISTENER_H */
