/*
 * stats.c - the stats listener (SPEC section 11): HTTP/1.1, GET and HEAD
 * of /metrics and /health, nothing else.
 *
 * Where it runs: every worker listens on the stats sockets, as on the
 * service sockets, and answers on the loop that accepted (no thread of
 * its own, no lock).  A scrape reads the counters of all workers without
 * locks (metrics.c).  The stats sockets are bound at startup and kept
 * for the life of the process; a reload takes a new stats_allow at once,
 * a new stats_listen only on restart (logged).  They are not detached
 * while draining at shutdown, so /health can answer 503 until the worker
 * ends.
 *
 * Bounds (SPEC 8.7 applies here too): STATS_CONNS_MAX connections per
 * worker, a request head of HTTPREQ_MAX bytes (httpreq.c; beyond it, or
 * malformed: 400), STATS_TIMEOUT seconds for the whole connection (a
 * client trickling bytes cannot hold a slot longer), one request
 * per connection ("Connection: close", no keep-alive).  After the reply
 * the write side is shut and what the client still sends is read and
 * dropped (up to STATS_LINGER_MAX bytes or the timeout), so that closing
 * with unread input does not reset the connection under the reply.
 * Sources outside stats_allow (default: loopback) are closed unanswered.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "httpreq.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "runtime.h"
#include "stats.h"
#include "util.h"
#include "worker.h"

struct stats_conn;
TAILQ_HEAD(stats_conns, stats_conn);

struct stats_worker {
	struct worker		*w;
	struct evconnlistener	**lev;
	size_t			 nlev;
	struct stats_conns	 conns;
	unsigned		 nconns;
};

struct stats_conn {
	TAILQ_ENTRY(stats_conn)	 entry;
	struct stats_worker	*sw;
	struct bufferevent	*bev;
	struct event		*deadline;	/* the whole connection's */
	int			 replied;
	size_t			 dropped;
	char			 peer[UTIL_ADDRSTRLEN];
};

static void	stats_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	stats_read_cb(struct bufferevent *, void *);
static void	stats_write_cb(struct bufferevent *, void *);
static void	stats_event_cb(struct bufferevent *, short, void *);
static void	stats_free(struct stats_conn *);
static void	stats_deadline_cb(evutil_socket_t, short, void *);
static int	stats_allowed(const struct conf *, const struct sockaddr *);
static void	stats_reply(struct stats_conn *, int, const char *,
		    const struct httpreq *, struct evbuffer *);
static void	stats_serve(struct stats_conn *, const struct httpreq *);

static int	*stats_fds;
static size_t	 stats_nfds;

int
stats_bind(const struct conf *conf, char *err, size_t errlen)
{
	const struct conf_endpoint	*ep;
	size_t				 i;
	int				 fd, on = 1;

	if (conf->nstats_listen == 0)
		return 0;
	stats_fds = util_xcalloc(conf->nstats_listen, sizeof(*stats_fds));
	for (i = 0; i < conf->nstats_listen; i++) {
		ep = &conf->stats_listen[i];
		fd = socket(ep->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1)
			goto fail;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (ep->ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on,
			    sizeof(on));
		if (bind(fd, (const struct sockaddr *)&ep->ss, ep->sslen) == -1 ||
		    listen(fd, 64) == -1) {
			int saved = errno;

			close(fd);
			errno = saved;
			goto fail;
		}
		stats_fds[stats_nfds++] = fd;
		log_info("stats: listening on %s", ep->text);
	}
	return 0;
fail:
	snprintf(err, errlen, "stats_listen: cannot listen on %s: %s",
	    conf->stats_listen[i].text, strerror(errno));
	return -1;
}

void
stats_reload_notice(const struct conf *cur, const struct conf *next)
{
	size_t	i;
	int	same = cur->nstats_listen == next->nstats_listen;

	for (i = 0; same && i < cur->nstats_listen; i++)
		same = strcmp(cur->stats_listen[i].text,
		    next->stats_listen[i].text) == 0;
	if (!same)
		log_notice("reload: 'stats_listen' changes only on restart");
}

int
stats_attach(struct worker *w)
{
	struct stats_worker	*sw;
	size_t			 i;

	if (stats_nfds == 0)
		return 0;
	if ((sw = calloc(1, sizeof(*sw))) == NULL ||
	    (sw->lev = calloc(stats_nfds, sizeof(*sw->lev))) == NULL) {
		free(sw);
		return -1;
	}
	sw->w = w;
	TAILQ_INIT(&sw->conns);
	w->stats = sw;
	for (i = 0; i < stats_nfds; i++) {
		sw->lev[i] = evconnlistener_new(w->base, stats_accept_cb, sw,
		    LEV_OPT_REUSEABLE, -1, stats_fds[i]);
		if (sw->lev[i] == NULL)
			return -1;
		sw->nlev++;
	}
	return 0;
}

/* Worker thread, after its loop has ended: close what is left. */
void
stats_detach(struct worker *w)
{
	struct stats_worker	*sw = w->stats;
	struct stats_conn	*c;
	size_t			 i;

	if (sw == NULL)
		return;
	for (i = 0; i < sw->nlev; i++)
		evconnlistener_free(sw->lev[i]);
	while ((c = TAILQ_FIRST(&sw->conns)) != NULL)
		stats_free(c);
	free(sw->lev);
	free(sw);
	w->stats = NULL;
}

/* stats_allow, or loopback when it is not set (SPEC 11's default). */
static int
stats_allowed(const struct conf *conf, const struct sockaddr *sa)
{
	struct sockaddr_in	 v4;
	const struct sockaddr_in6 *s6;
	const unsigned char	*a, *n;
	size_t			 i;
	int			 bits, fam, len;

	if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memset(&v4, 0, sizeof(v4));
			v4.sin_family = AF_INET;
			memcpy(&v4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
			sa = (const struct sockaddr *)&v4;
		}
	}
	fam = sa->sa_family;
	if (fam == AF_INET) {
		a = (const unsigned char *)
		    &((const struct sockaddr_in *)sa)->sin_addr;
		len = 4;
	} else if (fam == AF_INET6) {
		a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		len = 16;
	} else
		return 0;
	if (conf->nstats_allow == 0)
		return fam == AF_INET ? a[0] == 127 : IN6_IS_ADDR_LOOPBACK(
		    &((const struct sockaddr_in6 *)sa)->sin6_addr);
	for (i = 0; i < conf->nstats_allow; i++) {
		const struct sockaddr *ns = (const struct sockaddr *)
		    &conf->stats_allow[i].addr;

		if (ns->sa_family != fam)
			continue;
		n = fam == AF_INET ? (const unsigned char *)
		    &((const struct sockaddr_in *)ns)->sin_addr :
		    ((const struct sockaddr_in6 *)ns)->sin6_addr.s6_addr;
		bits = conf->stats_allow[i].prefix;
		if (bits < 0 || bits > len * 8)
			bits = len * 8;
		if (memcmp(a, n, (size_t)bits / 8) != 0)
			continue;
		if (bits % 8 == 0 || ((a[bits / 8] ^ n[bits / 8]) &
		    (0xff00 >> (bits % 8)) & 0xff) == 0)
			return 1;
	}
	return 0;
}

static void
stats_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct stats_worker	*sw = arg;
	struct stats_conn	*c;
	struct timeval		 tv = { STATS_TIMEOUT, 0 };
	char			 ip[UTIL_ADDRSTRLEN];

	util_addr_str(sa, ip, sizeof(ip));
	if (!stats_allowed(sw->w->rt->conf, sa)) {
		log_info("stats: %s is not in stats_allow, closing", ip);
		close(fd);
		return;
	}
	if (sw->nconns >= STATS_CONNS_MAX || (c = calloc(1, sizeof(*c))) ==
	    NULL) {
		log_warnx("stats: too many connections, closing %s", ip);
		close(fd);
		return;
	}
	c->sw = sw;
	util_strlcpy(c->peer, ip, sizeof(c->peer));
	c->bev = bufferevent_socket_new(sw->w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->deadline = evtimer_new(sw->w->base, stats_deadline_cb, c);
	if (c->bev == NULL || c->deadline == NULL) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->deadline != NULL)
			event_free(c->deadline);
		free(c);
		return;
	}
	sw->nconns++;
	TAILQ_INSERT_TAIL(&sw->conns, c, entry);
	bufferevent_setcb(c->bev, stats_read_cb, stats_write_cb,
	    stats_event_cb, c);
	/* Never more than one request head in memory. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, HTTPREQ_MAX);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	/*
	 * The per-read timeout restarts with every byte: a client trickling
	 * one byte every few seconds would hold one of the STATS_CONNS_MAX
	 * slots for hours and starve /health.  The whole connection, request,
	 * reply and linger, gets STATS_TIMEOUT.
	 */
	evtimer_add(c->deadline, &tv);
	bufferevent_enable(c->bev, EV_READ);
}

static void
stats_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stats_conn	*c = arg;

	(void)fd;
	(void)what;
	if (!c->replied)
		log_info("stats: %s: no complete request within %d s, closing",
		    c->peer, STATS_TIMEOUT);
	stats_free(c);
}

static void
stats_free(struct stats_conn *c)
{
	c->sw->nconns--;
	TAILQ_REMOVE(&c->sw->conns, c, entry);
	bufferevent_free(c->bev);
	event_free(c->deadline);
	free(c);
}

static const char *
stats_status_text(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	default:
		return "Service Unavailable";
	}
}

/*
 * One reply, then the end: no keep-alive, so a client can never have a
 * second request read from bytes it meant as something else.  body may
 * be NULL (a short text is sent instead); HEAD gets the headers only.
 */
static void
stats_reply(struct stats_conn *c, int code, const char *text,
    const struct httpreq *req, struct evbuffer *body)
{
	struct evbuffer	*out = bufferevent_get_output(c->bev);
	size_t		 len = body ? evbuffer_get_length(body) : strlen(text);

	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\n%s"
	    "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
	    code, stats_status_text(code), body ?
	    "text/plain; version=0.0.4; charset=utf-8" :
	    "text/plain; charset=utf-8", len,
	    code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (req == NULL || req->method != HTTPREQ_HEAD) {
		if (body != NULL)
			evbuffer_add_buffer(out, body);
		else
			evbuffer_add(out, text, len);
	}
	c->replied = 1;
	evbuffer_drain(bufferevent_get_input(c->bev),
	    evbuffer_get_length(bufferevent_get_input(c->bev)));
	bufferevent_enable(c->bev, EV_WRITE);
}

static void
stats_serve(struct stats_conn *c, const struct httpreq *req)
{
	struct worker	*w = c->sw->w;
	struct evbuffer	*body;
	int		 known;

	known = strcmp(req->target, "/metrics") == 0 ||
	    strcmp(req->target, "/health") == 0;
	if (!known) {
		stats_reply(c, 404, "not found\n", req, NULL);
		return;
	}
	if (req->method == HTTPREQ_OTHER) {
		stats_reply(c, 405, "GET or HEAD only\n", req, NULL);
		return;
	}
	if (strcmp(req->target, "/health") == 0) {
		/* A balancer's check: 503 from the moment we stop accepting. */
		if (atomic_load(&w->stopping))
			stats_reply(c, 503, "stopping\n", req, NULL);
		else
			stats_reply(c, 200, "ok\n", req, NULL);
		return;
	}
	if ((body = evbuffer_new()) == NULL ||
	    metrics_render(body, w->rt) == -1) {
		if (body != NULL)
			evbuffer_free(body);
		stats_reply(c, 503, "out of memory\n", req, NULL);
		return;
	}
	stats_reply(c, 200, NULL, req, body);
	evbuffer_free(body);
}

static void
stats_read_cb(struct bufferevent *bev, void *arg)
{
	struct stats_conn	*c = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct httpreq		 req;
	size_t			 len = evbuffer_get_length(in);
	const char		*p;

	if (c->replied) {
		/* Lingering after the reply: drop, within a bound. */
		c->dropped += len;
		evbuffer_drain(in, len);
		if (c->dropped > STATS_LINGER_MAX)
			stats_free(c);
		return;
	}
	if (len > HTTPREQ_MAX)
		len = HTTPREQ_MAX;
	if ((p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len)) == NULL) {
		stats_free(c);
		return;
	}
	switch (httpreq_parse(p, len, &req)) {
	case HTTPREQ_INCOMPLETE:
		return;
	case HTTPREQ_BAD:
		log_info("stats: %s: bad request: %s", c->peer, req.why);
		stats_reply(c, 400, "bad request\n", NULL, NULL);
		return;
	case HTTPREQ_OK:
		stats_serve(c, &req);
		return;
	}
}

/* The reply is out: shut our side, linger for the client's FIN. */
static void
stats_write_cb(struct bufferevent *bev, void *arg)
{
	struct stats_conn	*c = arg;

	if (!c->replied ||
	    evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) == -1)
		stats_free(c);
}

static void
stats_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct stats_conn	*c = arg;

	/* EOF, error or timeout: nothing more to do on this connection. */
	stats_free(c);
}
