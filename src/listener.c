/*
 * listener.c - listening sockets, the accept path and connection caps.
 *
 * Every worker listens on the same sockets; the kernel hands each new
 * connection to one of them.  Before a session exists the connection must
 * fit under three caps (SPEC section 6): the daemon's max_connections, the
 * service's max_connections and its max_connections_per_ip.  A refused
 * connection is closed at once (after the protocol's temporary failure on
 * cleartext services, where we can still speak).  When accept() runs out
 * of descriptors the listener pauses instead of spinning (OpenSMTPD).
 *
 * accept_proxy services (SPEC section 9): the peer is a load balancer,
 * and must be in proxy_trusted or is closed at once, without a byte.
 * Its own address is not the client's, so the per-address slot is taken
 * only once the session has read the PROXY header
 * (listener_take_ip()), on the address the header names.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "worker.h"

struct listener_ctx {
	struct worker		*worker;
	struct service_rt	*srt;
	struct event		*resume;
	struct evconnlistener	*lev;
};

static void	listener_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	listener_error_cb(struct evconnlistener *, void *);
static void	listener_resume_cb(evutil_socket_t, short, void *);
static int	listener_trusted(const struct conf_service *,
		    const struct sockaddr *);

/* ---- binding -------------------------------------------------------------- */

int
listener_bind(const struct conf_service *svc, const struct conf_endpoint *ep,
    char *err, size_t errlen)
{
	int	fd, on = 1;

	fd = socket(ep->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/* "[::]:25" means IPv6 only; "0.0.0.0:25" covers IPv4. */
	if (ep->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&ep->ss, ep->sslen) == -1 ||
	    listen(fd, 511) == -1) {
		int saved = errno;

		close(fd);
		errno = saved;
		goto fail;
	}
	return fd;
fail:
	snprintf(err, errlen, "service '%s': cannot listen on %s: %s",
	    svc->name, ep->text, strerror(errno));
	return -1;
}

/* ---- accepting -------------------------------------------------------------- */

struct listener_ctx *
listener_attach(struct worker *w, struct service_rt *srt, int fd)
{
	struct listener_ctx	*ctx;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
		return NULL;
	ctx->worker = w;
	ctx->srt = srt;
	ctx->resume = evtimer_new(w->base, listener_resume_cb, ctx);
	ctx->lev = evconnlistener_new(w->base, listener_accept_cb, ctx,
	    LEV_OPT_REUSEABLE, -1, fd);
	if (ctx->lev == NULL || ctx->resume == NULL) {
		if (ctx->lev)
			evconnlistener_free(ctx->lev);
		if (ctx->resume)
			event_free(ctx->resume);
		free(ctx);
		return NULL;
	}
	evconnlistener_set_error_cb(ctx->lev, listener_error_cb);
	return ctx;
}

void
listener_detach(struct listener_ctx *ctx)
{
	evconnlistener_free(ctx->lev);
	event_free(ctx->resume);
	free(ctx);
}

/* Best effort temporary failure on cleartext services; never blocks. */
static void
listener_refuse(struct service_rt *srt, int fd)
{
	struct evbuffer	*b;
	size_t		 len;
	char		 msg[512];

	if (srt->svc->tls_mode == TLS_MODE_IMPLICIT ||
	    (b = evbuffer_new()) == NULL)
		return;
	srt->ops->unavailable(b, srt->svc->hostname);
	len = evbuffer_get_length(b);
	if (len <= sizeof(msg)) {
		evbuffer_remove(b, msg, len);
		(void)send(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	evbuffer_free(b);
}

static const char *
listener_check_caps(struct worker *w, struct service_rt *srt,
    const struct sockaddr *sa, enum metrics_limit *lim)
{
	const struct conf	*conf = w->rt->conf;
	const struct conf_service *svc = srt->svc;

	*lim = METRICS_LIM_CONNECTIONS;
	if (atomic_fetch_add(&worker_total_conns, 1) >= conf->max_connections) {
		atomic_fetch_sub(&worker_total_conns, 1);
		return "daemon connection limit";
	}
	if (svc->max_connections &&
	    atomic_fetch_add(&srt->ctr->nconns, 1) >= svc->max_connections) {
		atomic_fetch_sub(&srt->ctr->nconns, 1);
		atomic_fetch_sub(&worker_total_conns, 1);
		return "service connection limit";
	}
	if (!svc->max_connections)
		atomic_fetch_add(&srt->ctr->nconns, 1);
	if (svc->accept_proxy)
		return NULL;	/* per address: after the PROXY header */
	if (iptable_take(srt->ctr->per_ip, sa, svc->max_connections_per_ip) == -1) {
		*lim = METRICS_LIM_PER_IP;
		atomic_fetch_sub(&srt->ctr->nconns, 1);
		atomic_fetch_sub(&worker_total_conns, 1);
		return "per-address connection limit";
	}
	return NULL;
}

/*
 * accept_proxy: the per-address slot of a session whose PROXY header
 * named its client (or of the balancer itself, for LOCAL).
 */
int
listener_take_ip(struct service_rt *srt, const struct sockaddr *sa)
{
	return iptable_take(srt->ctr->per_ip, sa,
	    srt->svc->max_connections_per_ip);
}

/*
 * Give back the slots listener_check_caps() took for a connection: the
 * only other place that touches the counters, so taking and giving back
 * stay one pair.  sa is NULL when no per-address slot was taken (an
 * accept_proxy session that ended before its header).
 */
void
listener_release(struct service_rt *srt, const struct sockaddr *sa)
{
	atomic_fetch_sub(&srt->ctr->nconns, 1);
	atomic_fetch_sub(&worker_total_conns, 1);
	if (sa != NULL)
		iptable_release(srt->ctr->per_ip, sa);
}

/* accept_proxy: only a balancer of proxy_trusted may send a header. */
static int
listener_trusted(const struct conf_service *svc, const struct sockaddr *sa)
{
	size_t	i;

	for (i = 0; i < svc->nproxy_trusted; i++)
		if (util_net_match(&svc->proxy_trusted[i], sa))
			return 1;
	return 0;
}

static void
listener_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener_ctx	*ctx = arg;
	struct worker		*w = ctx->worker;
	const char		*why;
	char			 ip[UTIL_ADDRSTRLEN];
	enum metrics_limit	 lim;

	if (atomic_load(&w->stopping)) {
		close(fd);
		return;
	}
	/* Untrusted: no reply, not even a 421 (SPEC section 9). */
	if (ctx->srt->svc->accept_proxy && !listener_trusted(ctx->srt->svc,
	    sa)) {
		log_notice("service %s: refusing %s: not in proxy_trusted",
		    ctx->srt->svc->name, util_addr_str(sa, ip, sizeof(ip)));
		close(fd);
		return;
	}
	if ((why = listener_check_caps(w, ctx->srt, sa, &lim)) != NULL) {
		log_notice("service %s: refusing %s: %s", ctx->srt->svc->name,
		    util_addr_str(sa, ip, sizeof(ip)), why);
		metrics_rejected(ctx->srt->metrics, w->index, lim);
		listener_refuse(ctx->srt, fd);
		close(fd);
		return;
	}
	metrics_conn(ctx->srt->metrics, w->index, METRICS_CONN_ACCEPTED);
	session_accept(w, w->rt, ctx->srt, fd, sa, (socklen_t)salen);
}

static void
listener_error_cb(struct evconnlistener *lev, void *arg)
{
	struct listener_ctx	*ctx = arg;
	struct timeval		 tv = { ACCEPT_PAUSE_MS / 1000,
				    (ACCEPT_PAUSE_MS % 1000) * 1000 };
	int			 e = EVUTIL_SOCKET_ERROR();

	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		log_warnx("service %s: accept: %s; pausing %d ms",
		    ctx->srt->svc->name, strerror(e), ACCEPT_PAUSE_MS);
		evconnlistener_disable(lev);
		evtimer_add(ctx->resume, &tv);
		return;
	}
	log_warnx("service %s: accept: %s", ctx->srt->svc->name, strerror(e));
}

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener_ctx	*ctx = arg;

	if (!atomic_load(&ctx->worker->stopping))
		evconnlistener_enable(ctx->lev);
}
