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
 *
 * backend_dane (SPEC 12): before a backend is even connected, the session
 * makes sure its service's TLSA cache (dane.c) has a fresh answer for it,
 * waiting for the resolver threads if need be (backend_dane_ready());
 * the handshake then finds that answer in tls_client_ssl(), whoever
 * starts it.  A failed lookup is a failed backend, like a certificate
 * that does not verify.
 *
 * backend_tls = "starttls" (SPEC 12): TCP up, the session relays in
 * cleartext to the filter, which holds the client and runs the protocol's
 * STARTTLS dialogue itself (filter.h, the backend prelude).  At the
 * server's go-ahead the session calls backend_starttls(): the same TLS
 * filter goes over the socket (SF_BACKEND_STARTTLS), the session waits in
 * CONNECTING, and the handshake must end within what is left of the
 * prelude's backend_connect_timeout.  Its failure is the session's to
 * handle (session_backend_failed(): the next backend while the client has
 * heard nothing, else the temporary failure), because the filter has
 * already read this backend's greeting.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "backend.h"
#include "conf.h"
#include "dane.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "tls.h"
#include "worker.h"

/* A host name is at most 253 characters (RFC 1035). */
#define BACKEND_TLS_NAME_MAX	256

/* backend_dane: what a session needs to wait for a TLSA answer. */
struct backend_dane {
	struct dane_wait	*wait;
	struct event		*ev;		/* on its fd, in our base */
};

static void	backend_event_cb(struct bufferevent *, short, void *);
static void	backend_deadline(struct session *);
static void	backend_try(struct session *, bool);
static int	backend_dane_ready(struct session *,
		    const struct conf_endpoint *, bool);
static int	backend_dane_new(struct session *);
static void	backend_dane_cb(evutil_socket_t, short, void *);
static void	backend_fail(struct session *, const char *why);
static int	backend_start_tls(struct session *);
static void	backend_tls_name(const struct session *, char *, size_t);
static void	backend_tls_failed(struct session *, short);
static void	backend_dane_log(const struct session *);
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
	backend_try(s, false);
}

/*
 * backend_connect_timeout is one deadline per backend, set as its
 * connection (or the wait for its TLSA answer) starts: the connect, an
 * implicit handshake, and the prelude (the greeting, XCLIENT, the
 * STARTTLS dialogue and the handshake after it) all count in it, so that
 * no backend holds a client for more than backend_connect_timeout (the
 * prelude used to get a second one of its own).  The connect timer
 * (backend_connect_timeout seconds from now) ends at the same time; the
 * session arms the rest (session_arm_idle(), backend_starttls()).  What
 * is left of smtp_greeting_delay is added: the prelude cannot start
 * before the client's greeting is due (the backend is not read).
 */
static void
backend_deadline(struct session *s)
{
	struct timeval	 now, tv, mono;
	struct timespec	 ts;

	event_base_gettimeofday_cached(s->worker->base, &now);
	tv.tv_sec = (time_t)s->svc->backend_connect_timeout;
	tv.tv_usec = 0;
	timeradd(&now, &tv, &s->prelude_until);
	if (!(s->flags & SF_GREET_HOLD) ||
	    clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return;
	mono.tv_sec = ts.tv_sec;
	mono.tv_usec = ts.tv_nsec / 1000;
	if (timercmp(&s->greet_until, &mono, >)) {
		timersub(&s->greet_until, &mono, &tv);
		timeradd(&s->prelude_until, &tv, &s->prelude_until);
	}
}

/*
 * The next backend, or (resumed) the same one again once its TLSA answer
 * is in: then the timer its wait armed keeps running, so that the wait,
 * the connect and the handshake share one backend_connect_timeout.
 */
static void
backend_try(struct session *s, bool resumed)
{
	const struct conf_service	*svc = s->svc;
	const struct conf_endpoint	*ep;
	struct timeval			 tv;
	evutil_socket_t			 fd;

	for (; s->backend_next < svc->nbackends; resumed = false) {
		ep = &svc->backends[s->backend_next++];
		s->backend_name = ep->text;
		/* backend_dane: the TLSA answer first (0: waiting for it). */
		if (svc->backend_dane) {
			int r = backend_dane_ready(s, ep, resumed);

			if (r == 0)
				return;
			if (r == -1)
				continue;
		}
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
		if (!resumed || !event_pending(s->timer, EV_TIMEOUT, NULL)) {
			backend_deadline(s);
			tv.tv_sec = svc->backend_connect_timeout;
			tv.tv_usec = 0;
			event_add(s->timer, &tv);
		}
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
	s->flags &= ~(SF_BACKEND_TLS | SF_BACKEND_TLS_UP | SF_BACKEND_STARTTLS);
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
	backend_dane_log(s);
	return 0;
}

/* backend_dane: say when DANE does not apply to a handshake, and why. */
static void
backend_dane_log(const struct session *s)
{
	const char	*st;

	if (!s->svc->backend_dane ||
	    (st = tls_client_dane_status(s->bssl)) == NULL)
		return;
	if (strcmp(st, "tlsa") == 0)
		log_debug("%s backend %s: verifying by its TLSA records only "
		    "(DANE)", s->id, s->backend_name);
	else
		log_info("%s backend %s: DANE does not apply (%s): %s", s->id,
		    s->backend_name, strcmp(st, "insecure") == 0 ?
		    "TLSA answer not authenticated, no AD bit" :
		    strcmp(st, "none") == 0 ? "no TLSA records" :
		    "no usable TLSA records", s->svc->backend_tls_verify ?
		    "verifying with the CA store and name" :
		    "backend_tls_verify = false");
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
	bool	 upgrade = (s->flags & SF_BACKEND_STARTTLS) != 0;

	/*
	 * No backend leg while connecting: waiting for a TLSA answer (which
	 * may have come in just now, its wake-up still unread).
	 */
	if (s->backend == NULL) {
		backend_release(s);
		log_error("%s backend %s: TLSA lookup timeout: DANE fails "
		    "closed", s->id, s->backend_name);
		metrics_backend_failure(s);
		backend_connect(s);
		return;
	}
	if (upgrade)
		log_error("%s backend %s: TLS handshake after STARTTLS: "
		    "timeout", s->id, s->backend_name);
	backend_fail(s, upgrade ? NULL : "timeout");
	if (upgrade)
		session_backend_failed(s, NULL);
	else
		backend_connect(s);
}

int
backend_starttls(struct session *s)
{
	struct timeval	 now, tv;

	/* The filter took every byte up to the go-ahead, and cut the rest. */
	if (evbuffer_get_length(bufferevent_get_input(s->backend)) != 0 ||
	    evbuffer_get_length(bufferevent_get_output(s->backend)) != 0)
		return -1;
	s->flags |= SF_BACKEND_STARTTLS;
	s->flags &= ~SF_BACKEND_READ_OFF;
	if (backend_start_tls(s) == -1) {
		s->flags &= ~SF_BACKEND_STARTTLS;
		return -1;
	}
	/* What is left of the deadline the connect started. */
	if (!timerisset(&s->prelude_until))
		backend_deadline(s);
	event_base_gettimeofday_cached(s->worker->base, &now);
	if (timercmp(&s->prelude_until, &now, >))
		timersub(&s->prelude_until, &now, &tv);
	else
		timerclear(&tv);
	event_add(s->timer, &tv);
	return 0;
}

/*
 * backend_dane (SPEC 12): the TLSA answer of the backend about to be
 * tried, before its connection is even started, so that its handshake
 * (after TCP, or after a STARTTLS dialogue) finds it in the service's
 * cache: tls_client_ssl() applies it.  The lookup itself is the resolver
 * thread's (dane.c); a session without a fresh answer waits for it on
 * its own eventfd, watched here in its worker's base, bounded by
 * backend_connect_timeout, which then also bounds the connect and the
 * handshake (resumed: the timer is already running).  1: the answer is
 * in, go on; 0: waiting, backend_dane_cb() resumes; -1: the lookup
 * failed (SERVFAIL, which is also what a validating resolver makes of
 * bogus data, or a timeout), logged: the backend fails closed, as for a
 * certificate that does not verify (RFC 7672 2.1.1).
 */
static int
backend_dane_ready(struct session *s, const struct conf_endpoint *ep,
    bool resumed)
{
	struct dane_cache	*c;
	struct dane_answer	*a;
	struct timeval		 tv;
	char			 name[BACKEND_TLS_NAME_MAX];
	char			 qname[DANE_QNAME_MAX];
	unsigned		 port;

	backend_tls_name(s, name, sizeof(name));
	port = ep->ss.ss_family == AF_INET6 ?
	    ntohs(((const struct sockaddr_in6 *)&ep->ss)->sin6_port) :
	    ntohs(((const struct sockaddr_in *)&ep->ss)->sin_port);
	if (dane_qname(name, port, qname, sizeof(qname)) == -1) {
		log_error("%s backend %s: no TLSA name for %s port %u", s->id,
		    s->backend_name, name, port);
		metrics_backend_failure(s);
		return -1;
	}
	/*
	 * The cache first: a fresh answer needs no wait, and so no eventfd
	 * (a session holds at most two descriptors, see raise_nofile()).
	 * Without one, the lookup is queued; the wait registered next may
	 * find the answer already in.
	 */
	c = tls_client_dane_cache(s->srt->btls);
	if ((a = dane_get(c, s->backend_next - 1, qname, NULL)) == NULL) {
		if (backend_dane_new(s) == -1) {
			log_error("%s backend %s: cannot wait for TLSA %s",
			    s->id, s->backend_name, qname);
			metrics_backend_failure(s);
			return -1;
		}
		if ((a = dane_get(c, s->backend_next - 1, qname,
		    s->dane->wait)) != NULL)
			backend_release(s);
	}
	if (a == NULL) {
		event_add(s->dane->ev, NULL);
		if (!resumed || !event_pending(s->timer, EV_TIMEOUT, NULL)) {
			backend_deadline(s);
			tv.tv_sec = s->svc->backend_connect_timeout;
			tv.tv_usec = 0;
			event_add(s->timer, &tv);
		}
		log_debug("%s backend %s: waiting for TLSA %s", s->id,
		    s->backend_name, qname);
		return 0;
	}
	if (a->status == DANE_FAILED) {
		log_error("%s backend %s: TLSA lookup %s failed: %s: DANE "
		    "fails closed", s->id, s->backend_name, qname, a->why);
		metrics_backend_failure(s);
		dane_answer_unref(a);
		return -1;
	}
	log_debug("%s backend %s: TLSA %s: %s%s%s, %zu records", s->id,
	    s->backend_name, qname, dane_status_name(a->status),
	    a->why[0] != '\0' ? ": " : "", a->why, a->nrr);
	dane_answer_unref(a);
	return 1;
}

/* The wait of a session, for one lookup: released when it ends. */
static int
backend_dane_new(struct session *s)
{
	if (s->dane != NULL)
		return 0;
	if ((s->dane = calloc(1, sizeof(*s->dane))) == NULL)
		return -1;
	if ((s->dane->wait = dane_wait_new()) == NULL ||
	    (s->dane->ev = event_new(s->worker->base,
	    dane_wait_fd(s->dane->wait), EV_READ, backend_dane_cb,
	    s)) == NULL) {
		backend_release(s);
		return -1;
	}
	return 0;
}

/* The TLSA answer the session waited for is in (or its wait ended). */
static void
backend_dane_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session	*s = arg;

	(void)fd;
	(void)what;
	/* The wait is over: its eventfd goes now, not with the session. */
	backend_release(s);
	if (s->state != SESSION_ST_CONNECTING || s->backend != NULL ||
	    s->backend_next == 0)
		return;
	/* The same backend again: its answer is in now. */
	s->backend_next--;
	backend_try(s, true);
}

/* Stop waiting for a TLSA answer, if the session was: unlinked from
 * the slot under dane.c's lock, then its eventfd closed. */
void
backend_release(struct session *s)
{
	if (s->dane == NULL)
		return;
	if (s->dane->ev != NULL)
		event_free(s->dane->ev);
	dane_wait_free(s->dane->wait);
	free(s->dane);
	s->dane = NULL;
}

static void
backend_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;
	bool		 upgrade;

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
		if (s->flags & SF_BACKEND_STARTTLS)
			session_backend_tls_ready(s);
		else
			session_backend_ready(s);
		return;
	}
	upgrade = (s->flags & SF_BACKEND_STARTTLS) != 0;
	if (s->flags & SF_BACKEND_TLS)
		backend_tls_failed(s, what);
	else
		backend_fail(s, evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
	if (upgrade)
		session_backend_failed(s, NULL);
	else
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
