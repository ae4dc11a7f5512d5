/*
 * session.h - one client connection and its backend leg.
 */
#ifndef SESSION_H
#define SESSION_H

#include <sys/queue.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "proto.h"
#include "util.h"

struct backend_dane;
struct worker;
struct runtime;
struct service_rt;

enum session_state {
	SESSION_ST_HANDSHAKE = 0,	/* implicit TLS, or after STARTTLS */
	SESSION_ST_CONNECTING,		/* waiting for a backend */
	SESSION_ST_RELAY,		/* both legs up, filter running */
	SESSION_ST_CLOSING,		/* flushing the client, then free */
	SESSION_ST_PROXY,		/* accept_proxy: reading the header */
};

/* session flags */
#define SF_TLS			0x0001	/* client leg is TLS (handshake begun) */
#define SF_TLS_UP		0x0002	/* handshake completed */
#define SF_CLIENT_EOF		0x0004
#define SF_BACKEND_EOF		0x0008
#define SF_BACKEND_UP		0x0010
#define SF_CLIENT_READ_OFF	0x0020	/* paused: backend output full */
#define SF_BACKEND_READ_OFF	0x0040	/* paused: client output full */
#define SF_SHUTWR_BACKEND	0x0080	/* write side of the backend shut */
#define SF_COUNTED		0x0100	/* holds connection slots */
#define SF_SSL_SHUTDOWN		0x0200	/* close_notify queued */
#define SF_IP_COUNTED		0x0400	/* holds a per-address slot for peer */
#define SF_BACKEND_TLS		0x0800	/* backend leg under TLS (SPEC 12) */
#define SF_BACKEND_TLS_UP	0x1000	/* ... handshake done, verified */
#define SF_BACKEND_SHUTDOWN	0x2000	/* close_notify sent to the backend */
#define SF_GREET_HOLD		0x8000	/* smtp_greeting_delay: no greeting yet */
#define SF_GREET_DUE		0x10000	/* ... but its delay is over */
#define SF_BACKEND_TLS_ERR	0x20000	/* backend TLS leg ended in error */
#define SF_RATE_LIMITED		0x4000	/* SPEC 10: reply after the handshake */
#define SF_BACKEND_STARTTLS	0x40000	/* backend leg upgraded by STARTTLS */

struct session {
	TAILQ_ENTRY(session)	 entry;
	char			 id[17];
	struct worker		*worker;
	struct runtime		*rt;
	struct service_rt	*srt;
	const struct conf_service *svc;
	const struct proto_ops	*ops;
	struct filter		*filter;

	struct sockaddr_storage	 peer;
	socklen_t		 peerlen;
	char			 peer_ip[UTIL_ADDRSTRLEN];
	int			 peer_port;
	/*
	 * The address the client connected to: the socket's own, or the
	 * destination a PROXY header named (accept_proxy).  locallen 0:
	 * unknown.
	 */
	struct sockaddr_storage	 local;
	socklen_t		 locallen;
	struct event		*proxy_ev;	/* accept_proxy: header read */
	unsigned char		*proxy_buf;	/* its bytes so far */
	size_t			 proxy_have;

	struct bufferevent	*client;	/* socket, or TLS filter over it */
	struct bufferevent	*backend;	/* socket, or TLS filter over it */
	SSL			*ssl;
	SSL			*bssl;		/* backend_tls: owned by backend */
	size_t			 backend_next;	/* next svc->backends[] to try */
	const char		*backend_name;	/* the one connected */
	struct backend_dane	*dane;		/* backend_dane: TLSA wait */
	/*
	 * One deadline per backend (backend_connect_timeout, set by
	 * backend.c when its connection, or the wait for its TLSA answer,
	 * starts): the connect, the backend prelude (filter.h: XCLIENT,
	 * STARTTLS and its handshake) and an implicit handshake must all
	 * be over by then; unset: not started.
	 */
	struct timeval		 prelude_until;
	const char		*backend_why;	/* last prelude failure */

	enum session_state	 state;
	unsigned		 flags;
	struct event		*timer;		/* phase timeout, or deferred free */
	struct timeval		 started;
	struct timeval		 linger_until;	/* CLOSING: free by then */
	time_t			 line_since;	/* client bytes waiting since */
	time_t			 clear_since;	/* cleartext_timeout counts from */
	struct timeval		 greet_until;	/* SF_GREET_HOLD: the greeting */
	uint64_t		 bytes_in;	/* from the client */
	uint64_t		 bytes_out;	/* to the client */
	const char		*reason;
	int			 mphase;	/* counted in (metrics.h) */
};

const char	*session_state_name(enum session_state);

/* Take over an accepted socket.  On failure the fd is closed. */
void		 session_accept(struct worker *, struct runtime *,
		    struct service_rt *, int fd, const struct sockaddr *,
		    socklen_t);

/*
 * End the session: log the end line, stop reading, flush what is queued
 * for the client (bounded by CLOSE_LINGER_TIMEOUT), then free.  Never
 * frees synchronously, so callers may touch s until they return.
 */
void		 session_close(struct session *, const char *reason);

/* At exit, after the worker loop has ended: free without ceremony. */
void		 session_abandon(struct session *);

/* backend.c calls back into the session. */
void		 session_backend_ready(struct session *);
void		 session_backend_unavailable(struct session *);
/* backend_tls = "starttls": the leg's handshake has verified. */
void		 session_backend_tls_ready(struct session *);
/*
 * A backend connection failed before it was ready for the client (the
 * prelude, or its handshake after STARTTLS): the next backend while the
 * client has heard nothing, else the temporary failure.  why: the end
 * line's reason when none is left (NULL: "backend unavailable").
 */
void		 session_backend_failed(struct session *, const char *why);

#endif /* SESSION_H */
