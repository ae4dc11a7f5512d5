/*
 * runtime.h - what a configuration turns into at run time.
 */
#ifndef RUNTIME_H
#define RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>

#include "conf.h"
#include "proto.h"

struct addrtable;
struct iptable;
struct metrics_certs;
struct metrics_service;
struct sd_socket;
struct tls_client;
struct tls_server;

/*
 * Connection counts of a service.  A reload hands them to the service of
 * the same name in the new runtime, so sessions that started before the
 * reload still count against max_connections and max_connections_per_ip,
 * and an address keeps its rate and authentication-failure history.
 */
struct service_counters {
	atomic_int		 refs;
	atomic_uint		 nconns;
	struct iptable		*per_ip;
	struct addrtable	*limits;	/* SPEC 10: rate, auth failures */
};

struct service_rt {
	const struct conf_service *svc;
	const struct proto_ops	*ops;
	struct tls_server	*tls;		/* NULL: tls_mode none */
	struct tls_client	*btls;		/* backend_tls (SPEC 12) */
	int			*fds;		/* listening sockets, -1 = handed on */
	size_t			 nfds;
	struct service_counters	*ctr;
	struct metrics_service	*metrics;	/* outlives every runtime */
};

/*
 * What a configuration turns into at run time: the immutable conf, the
 * TLS contexts built from it, and per-service counters.  Sessions hold a
 * reference, so a reload can swap in a new runtime while old sessions
 * finish on the one they started with.
 */
struct runtime {
	atomic_int		 refs;
	struct conf		*conf;
	struct tls_server	**tls;		/* one per conf->tls[] */
	size_t			 ntls;
	struct service_rt	*services;	/* one per conf->services[] */
	size_t			 nservices;
	struct metrics_certs	*certs;		/* expiry, for /metrics */
};

/*
 * Runtimes (runtime.c).  runtime_new() owns conf once it succeeds; on
 * failure the caller still does.  With a previous runtime (reload), the
 * counters of same-named services are shared and runtime_bind() takes
 * over listening sockets whose address did not change.
 */
struct runtime	*runtime_new(struct conf *, struct runtime *old, char *err,
		    size_t errlen);
int		 runtime_bind(struct runtime *, struct runtime *old, char *err,
		    size_t errlen);
void		 runtime_close_listeners(struct runtime *);
/* Sockets passed by systemd, for every runtime to come (startup only). */
void		 runtime_set_activated(struct sd_socket *, size_t);
void		 runtime_ref(struct runtime *);
void		 runtime_unref(struct runtime *);
void		 runtime_free(struct runtime *);

#endif /* RUNTIME_H */
