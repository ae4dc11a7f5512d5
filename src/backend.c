/*
 * backend.c - connect a session's backend leg, with failover.
 *
 * The backends of a service are tried in order; each attempt is bounded
 * by backend_connect_timeout.  A failed attempt is logged and the next one
 * started; when none is left the client gets its protocol's temporary
 * failure (SPEC section 3) and the session ends.
 *
 * backend_source (SPEC section 9) binds the socket before connect(): to a
 * fixed address, or to the client's own with IP_TRANSPARENT so that a
 * backend reading neither PROXY nor XCLIENT sees the client.  The port is
 * always left to the kernel, and IP_BIND_ADDRESS_NO_PORT defers its choice
 * to connect(), where the whole 4-tuple is known: a plain bind() would
 * reserve a port per source address and run out near 28000 connections.
 * Transparent sockets need CAP_NET_ADMIN (or CAP_NET_RAW), kept across
 * the privilege drop by main.c and checked by backend_transparent_check().
 *
 * backend_tls = "implicit" (SPEC 12): once TCP is up, the leg is put
 * under a TLS filter bufferevent (the same kind as the client leg, so
 * that a close is classified in one place, tls_classify_close()) and the
 * handshake, verification included, must end within the same
 * backend_connect_timeout.  A backend whose certificate does not verify
 * is a failed backend like one that refused the connection: logged as an
 * error with the reason, and the next one tried; when none is left the
 * client gets the temporary failure.  Nothing of the client's is ever
 * sent before the backend leg is verified (session_backend_ready()).
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "backend.h"
#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "tls.h"
#include "worker.h"

/* A host name is at most 253 characters (RFC 1035). */
#define BACKEND_TLS_NAME_MAX	256

static void	backend_event_cb(struct bufferevent *, short, void *);
static void	backend_fail(struct session *, const char *why);
static int	backend_start_tls(struct session *);
static void	backend_tls_name(const struct session *, char *, size_t);
static void	backend_tls_failed(struct session *, short);
static int	backend_source_addr(const struct session *, int,
		    struct sockaddr_storage *, socklen_t *);
static int	backend_transparent(int, int);
static evutil_socket_t backend_socket(struct session *,
		    const struct conf_endpoint *);

/*
 * The address to bind for a backend of family af: the configured one, or
 * the client's (a v4-mapped IPv6 client is an IPv4 one).  -1 when the
 * families differ, which conf.c could not rule out for the client's.
 */
static int
backend_source_addr(const struct session *s, int af,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	const struct sockaddr_in6	*sin6;
	struct sockaddr_in		*sin;

	if (s->svc->backend_source == BACKEND_SOURCE_ADDR) {
		memcpy(ss, &s->svc->source, sizeof(*ss));
		*sslen = s->svc->sourcelen;
	} else {
		memcpy(ss, &s->peer, sizeof(*ss));
		*sslen = s->peerlen;
		sin6 = (const struct sockaddr_in6 *)&s->peer;
		if (af == AF_INET && s->peer.ss_family == AF_INET6 &&
		    IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memset(ss, 0, sizeof(*ss));
			sin = (struct sockaddr_in *)ss;
			sin->sin_family = AF_INET;
			memcpy(&sin->sin_addr, &sin6->sin6_addr.s6_addr[12],
			    sizeof(sin->sin_addr));
			*sslen = sizeof(*sin);
		}
	}
	if (ss->ss_family != af)
		return -1;
	/* The kernel picks the port (with the client's, a second session
	 * from the same client port could collide). */
	if (af == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = 0;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = 0;
	return 0;
}

static int
backend_transparent(int fd, int af)
{
	int	 on = 1;

	if (af == AF_INET)
		return setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &on,
		    sizeof(on));
	return setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &on,
	    sizeof(on));
}

/*
 * A non-blocking socket for ep, bound to the backend_source address; -1
 * (logged) on failure, which counts as a failed connect to this backend.
 */
static evutil_socket_t
backend_socket(struct session *s, const struct conf_endpoint *ep)
{
	struct sockaddr_storage	 src;
	socklen_t		 srclen;
	char			 text[UTIL_ADDRSTRLEN];
	const char		*step;
	int			 af = ep->ss.ss_family, fd, on = 1, saved;

	if (backend_source_addr(s, af, &src, &srclen) == -1) {
		log_warnx("%s backend %s: connect failed: source %s is not of "
		    "the backend's address family", s->id, ep->text,
		    util_addr_str((const struct sockaddr *)&src, text,
		    sizeof(text)));
		return -1;
	}
	if ((fd = socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		step = "socket";
		goto fail;
	}
	step = "IP_BIND_ADDRESS_NO_PORT";
	if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on,
	    sizeof(on)) == -1)
		goto fail;
	step = "IP_TRANSPARENT (needs CAP_NET_ADMIN)";
	if (s->svc->backend_source == BACKEND_SOURCE_CLIENT &&
	    backend_transparent(fd, af) == -1)
		goto fail;
	step = "bind";
	if (bind(fd, (struct sockaddr *)&src, srclen) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	log_warnx("%s backend %s: connect failed: source %s: %s: %s", s->id,
	    ep->text, util_addr_str((const struct sockaddr *)&src, text,
	    sizeof(text)), step, strerror(saved));
	return -1;
}

void
backend_connect(struct session *s)
{
	const struct conf_service	*svc = s->svc;
	const struct conf_endpoint	*ep;
	struct timeval			 tv;
	evutil_socket_t			 fd;

	while (s->backend_next < svc->nbackends) {
		ep = &svc->backends[s->backend_next++];
		s->backend_name = ep->text;
		fd = -1;
		if (svc->backend_source != BACKEND_SOURCE_ANY &&
		    (fd = backend_socket(s, ep)) == -1)
			continue;
		s->backend = bufferevent_socket_new(s->worker->base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (s->backend == NULL) {
			log_warnx("%s backend %s: cannot allocate", s->id,
			    ep->text);
			if (fd != -1)
				close(fd);
			continue;
		}
		bufferevent_setcb(s->backend, NULL, NULL, backend_event_cb, s);
		if (bufferevent_socket_connect(s->backend,
		    (const struct sockaddr *)&ep->ss, (int)ep->sslen) == -1) {
			backend_fail(s, evutil_socket_error_to_string(
			    EVUTIL_SOCKET_ERROR()));
			continue;
		}
		util_tcp_nodelay(bufferevent_getfd(s->backend),
		    ep->ss.ss_family);
		tv.tv_sec = svc->backend_connect_timeout;
		tv.tv_usec = 0;
		event_add(s->timer, &tv);
		return;
	}
	s->backend_name = NULL;
	log_warnx("%s client=%s: no backend of service %s available", s->id,
	    s->peer_ip, svc->name);
	session_backend_unavailable(s);
}

/* Drop the current attempt (logged), leaving s->backend NULL. */
static void
backend_fail(struct session *s, const char *why)
{
	if (why != NULL)
		log_warnx("%s backend %s: connect failed: %s", s->id,
		    s->backend_name, why);
	metrics_backend_failure(s);
	bufferevent_free(s->backend);	/* the TLS filter frees its SSL */
	s->backend = NULL;
	s->bssl = NULL;
	s->flags &= ~(SF_BACKEND_TLS | SF_BACKEND_TLS_UP);
}

/*
 * The name the backend's certificate must carry, also sent as SNI:
 * backend_tls_name, or the host part of the backend address as written
 * ("mx.example.org:465", "[2001:db8::1]:993"; conf.c requires the
 * option for unix sockets, which have none).
 */
static void
backend_tls_name(const struct session *s, char *buf, size_t len)
{
	const char	*text = s->backend_name, *end;
	size_t		 n;

	if (s->svc->backend_tls_name != NULL) {
		util_strlcpy(buf, s->svc->backend_tls_name, len);
		return;
	}
	if (text[0] == '[' && (end = strchr(text, ']')) != NULL)
		text++;
	else if ((end = strrchr(text, ':')) == NULL)
		end = text + strlen(text);
	n = (size_t)(end - text);
	if (n >= len)
		n = len - 1;
	memcpy(buf, text, n);
	buf[n] = '\0';
}

/*
 * TCP is up: wrap the socket bufferevent in a TLS filter and start the
 * handshake; its end comes to backend_event_cb() as CONNECTED (or an
 * error) on the filter.  The timer keeps running: connect and handshake
 * share backend_connect_timeout.
 */
static int
backend_start_tls(struct session *s)
{
	struct bufferevent	*tlsbev;
	char			 name[BACKEND_TLS_NAME_MAX];

	backend_tls_name(s, name, sizeof(name));
	if ((s->bssl = tls_client_ssl(s->srt->btls, s->backend_next - 1,
	    name)) == NULL)
		return -1;
	tlsbev = bufferevent_openssl_filter_new(s->worker->base, s->backend,
	    s->bssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tlsbev == NULL) {
		SSL_free(s->bssl);
		s->bssl = NULL;
		return -1;
	}
	s->backend = tlsbev;
	s->flags |= SF_BACKEND_TLS;
	/* A peer's close without close_notify is an EOF, not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(tlsbev, 1);
	bufferevent_setcb(tlsbev, NULL, NULL, backend_event_cb, s);
	bufferevent_enable(tlsbev, EV_READ | EV_WRITE);
	log_debug("%s backend %s: TLS handshake, name %s", s->id,
	    s->backend_name, name);
	return 0;
}

/*
 * The handshake failed: an error line naming the reason (the
 * certificate's verification error, which covers a wrong name, or the
 * TLS alert or socket error), and the next backend.
 */
static void
backend_tls_failed(struct session *s, short what)
{
	char	detail[256] = "", why[512];

	(void)tls_classify_close(s->backend, what, detail, sizeof(detail));
	tls_client_failure(s->bssl, detail, why, sizeof(why));
	log_error("%s backend %s: %s", s->id, s->backend_name, why);
	ERR_clear_error();
	backend_fail(s, NULL);
}

void
backend_connect_timeout(struct session *s)
{
	backend_fail(s, "timeout");
	backend_connect(s);
}

static void
backend_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;

	if (s->state != SESSION_ST_CONNECTING)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		if (s->svc->backend_tls == BACKEND_TLS_IMPLICIT &&
		    !(s->flags & SF_BACKEND_TLS)) {
			if (backend_start_tls(s) == -1) {
				backend_fail(s, "TLS setup failed");
				backend_connect(s);
			}
			return;
		}
		event_del(s->timer);
		if (s->flags & SF_BACKEND_TLS)
			s->flags |= SF_BACKEND_TLS_UP;
		session_backend_ready(s);
		return;
	}
	if (s->flags & SF_BACKEND_TLS)
		backend_tls_failed(s, what);
	else
		backend_fail(s, evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
	backend_connect(s);
}

int
backend_uses_transparent(const struct conf *conf)
{
	size_t	 i;

	for (i = 0; i < conf->nservices; i++)
		if (conf->services[i].backend_source == BACKEND_SOURCE_CLIENT)
			return 1;
	return 0;
}

/*
 * Whether this process may make transparent sockets now.  The kernel is
 * asked directly, on a socket never bound: ip(7) names CAP_NET_ADMIN,
 * newer kernels also accept CAP_NET_RAW, and a user namespace changes
 * both.  IPv6 only if there is no IPv4.
 */
int
backend_transparent_check(char *err, size_t errlen)
{
	int	 af = AF_INET, fd, saved;

	if ((fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		af = AF_INET6;
		fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
	}
	if (fd == -1) {
		snprintf(err, errlen, "cannot create a socket: %s",
		    strerror(errno));
		return -1;
	}
	if (backend_transparent(fd, af) == -1) {
		saved = errno;
		close(fd);
		snprintf(err, errlen, "backend_source = \"client\" needs "
		    "CAP_NET_ADMIN (IP_TRANSPARENT: %s)", strerror(saved));
		return -1;
	}
	close(fd);
	return 0;
}
