/*
 * backend.c - connect a session's backend leg, with failover.
 *
 * The backends of a service are tried in order; each attempt is bounded
 * by backend_connect_timeout.  A failed attempt is logged and the next one
 * started; when none is left the client gets its protocol's temporary
 * failure (SPEC section 3) and the session ends.
 */
#include "config.h"

#include <stdlib.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "backend.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "worker.h"

static void	backend_event_cb(struct bufferevent *, short, void *);
static void	backend_fail(struct session *, const char *why);

void
backend_connect(struct session *s)
{
	const struct conf_service	*svc = s->svc;
	const struct conf_endpoint	*ep;
	struct timeval			 tv;

	while (s->backend_next < svc->nbackends) {
		ep = &svc->backends[s->backend_next++];
		s->backend_name = ep->text;
		s->backend = bufferevent_socket_new(s->worker->base, -1,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (s->backend == NULL) {
			log_warnx("%s backend %s: cannot allocate", s->id,
			    ep->text);
			continue;
		}
		bufferevent_setcb(s->backend, NULL, NULL, backend_event_cb, s);
		if (bufferevent_socket_connect(s->backend,
		    (const struct sockaddr *)&ep->ss, (int)ep->sslen) == -1) {
			backend_fail(s, evutil_socket_error_to_string(
			    EVUTIL_SOCKET_ERROR()));
			continue;
		}
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
	log_warnx("%s backend %s: connect failed: %s", s->id,
	    s->backend_name, why);
	metrics_backend_failure(s);
	bufferevent_free(s->backend);
	s->backend = NULL;
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
		event_del(s->timer);
		session_backend_ready(s);
		return;
	}
	backend_fail(s, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	backend_connect(s);
}
