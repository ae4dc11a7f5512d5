/*
 * session.c - one client connection, its backend leg, and the relay.
 *
 * Lifecycle (SPEC sections 3 and 8):
 *
 *   implicit TLS:  accept -> HANDSHAKE -> CONNECTING -> RELAY -> CLOSING
 *   STARTTLS:      accept -> CONNECTING -> RELAY (cleartext)
 *                         -> HANDSHAKE (go-ahead sent) -> RELAY (TLS) -> CLOSING
 *   accept_proxy:  accept -> PROXY (the balancer's header) -> either of the
 *                  above, with the header's client as the peer
 *   STARTTLS with send_proxy or xclient (SPEC 9): after HANDSHAKE,
 *                  CONNECTING (a fresh backend) -> RELAY (TLS) -> CLOSING
 *   backend_tls = starttls (SPEC 12): each backend connection goes
 *                  CONNECTING -> RELAY (the filter's cleartext dialogue,
 *                  client held) -> CONNECTING (the backend's handshake)
 *                  -> RELAY, before anything reaches the client
 *
 * A backend that fails before it is ready for the client (its greeting,
 * the filter's prelude of XCLIENT or STARTTLS, the handshake after it) is
 * given up like one that refused the connection: while the client has
 * heard nothing the next one is tried with a fresh filter, else the
 * client gets the temporary failure (session_backend_failed()).
 *
 * Invariants kept here rather than in the protocol filters:
 *  - The client leg is read only through the filter, and only in RELAY.
 *    During a STARTTLS handshake neither leg is pumped, so nothing the
 *    backend says before TLS is up can be delivered inside it, and nothing
 *    the client sent before the go-ahead can be read after it (the filter
 *    refuses the upgrade if anything is buffered; we check again).
 *  - Each leg's output is bounded: past RELAY_HIGH_WATERMARK the other leg
 *    stops being read until the output drains below RELAY_LOW_WATERMARK.
 *  - A session is freed in exactly one place, session_free(), reached only
 *    from the session's own timer callback, so no caller ever touches
 *    freed memory (session_close() never frees synchronously).
 *  - How a TLS leg ended is decided by tls_classify_close() alone.
 */
#include "config.h"

#include <sys/socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "addrtable.h"
#include "backend.h"
#include "listener.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "filter.h"
#include "proto.h"
#include "proxy.h"
#include "runtime.h"
#include "session.h"
#include "tls.h"
#include "worker.h"

static void	session_timer_cb(evutil_socket_t, short, void *);
static void	session_client_read_cb(struct bufferevent *, void *);
static void	session_client_write_cb(struct bufferevent *, void *);
static void	session_client_event_cb(struct bufferevent *, short, void *);
static void	session_backend_read_cb(struct bufferevent *, void *);
static void	session_backend_write_cb(struct bufferevent *, void *);
static void	session_backend_event_cb(struct bufferevent *, short, void *);
static void	session_closing_out_cb(struct evbuffer *,
		    const struct evbuffer_cb_info *, void *);
static void	session_count_out_cb(struct evbuffer *,
		    const struct evbuffer_cb_info *, void *);
static void	session_enter_state(struct session *, enum session_state);
static void	session_start_tls(struct session *);
static void	session_write_sock(struct bufferevent *);
static void	session_tls_established(struct session *);
static void	session_renew_backend(struct session *);
static int	session_send_proxy(struct session *);
static void	session_begin(struct session *);
static void	session_proxy_wait(struct session *);
static void	session_proxy_read_cb(evutil_socket_t, short, void *);
static void	session_write_now(struct session *);
static void	session_proxy_accept(struct session *,
		    const struct proxy_hdr *);
static void	session_proxy_free(struct session *);
static bool	session_rate_ok(struct session *);
static void	session_rate_refuse(struct session *);
static bool	session_auth_blocked(void *, unsigned);
static void	session_auth_failed(void *);
static void	session_backend_relay(struct session *);
static void	session_pump(struct session *);
static void	session_flow(struct session *);
static void	session_arm(struct session *, unsigned seconds);
static void	session_arm_idle(struct session *);
static bool	session_cleartext_left(struct session *,
		    const struct timeval *, time_t *);
static void	session_timeout(struct session *);
static void	session_greet_hold(struct session *);
static bool	session_greet_due(struct session *);
static void	session_monotonic(struct timeval *);
static void	session_early_talker(struct session *);
static void	session_schedule_free(struct session *);
static int	session_flushed(struct session *);
static void	session_closing_check(struct session *);
static void	session_free(struct session *);
static void	session_backend_free(struct session *);
static void	session_backend_drop(struct session *);
static struct filter *session_filter_new(struct session *);

static const char *session_state_names[] = {
	[SESSION_ST_HANDSHAKE] = "handshake",
	[SESSION_ST_CONNECTING] = "connecting",
	[SESSION_ST_RELAY] = "relay",
	[SESSION_ST_CLOSING] = "closing",
	[SESSION_ST_PROXY] = "proxy",
};

const char *
session_state_name(enum session_state st)
{
	if ((unsigned)st >= sizeof(session_state_names) /
	    sizeof(session_state_names[0]))
		return "?";
	return session_state_names[st];
}

static void
session_enter_state(struct session *s, enum session_state st)
{
	log_debug("%s state %s -> %s", s->id, session_state_name(s->state),
	    session_state_name(st));
	s->state = st;
	metrics_session_phase(s);
}

/* A session id that is unique per process and not guessable. */
static void
session_make_id(struct session *s)
{
	static atomic_uint_fast64_t	 counter;
	static uint64_t			 salt;
	uint64_t			 v;

	if (salt == 0 && RAND_bytes((unsigned char *)&salt, sizeof(salt)) != 1)
		salt = (uint64_t)time(NULL) << 20;
	v = salt ^ (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ULL);
	snprintf(s->id, sizeof(s->id), "%016llx", (unsigned long long)v);
}

static void
session_arm(struct session *s, unsigned seconds)
{
	struct timeval	tv = { (time_t)seconds, 0 };

	event_add(s->timer, &tv);
}

/*
 * The idle deadline in RELAY.  While client bytes wait in the input (an
 * incomplete command line, or a command held for a reply), the deadline
 * counts from when they started waiting: trickling a line byte by byte
 * does not extend it (SPEC section 3).  Traffic in either direction
 * re-arms it (this runs after every pump): an IMAP client in IDLE stays
 * as long as the backend sends its keepalives ("* OK Still here"), as it
 * would on a direct connection; idle_timeout ends a session only when
 * both sides are silent.  Before STARTTLS the cleartext deadline may
 * come first.
 */
static void
session_arm_idle(struct session *s)
{
	struct timeval	 now, tv;
	time_t		 idle = (time_t)s->svc->idle_timeout, left;

	event_base_gettimeofday_cached(s->worker->base, &now);
	tv.tv_usec = 0;
	/*
	 * A backend still in its prelude (greeting, XCLIENT, STARTTLS):
	 * the deadline its connect started (backend.c), which the
	 * handshake after STARTTLS shares too.
	 */
	if (filter_awaiting(s->filter)) {
		if (!timerisset(&s->prelude_until)) {
			tv.tv_sec = (time_t)s->svc->backend_connect_timeout;
			timeradd(&now, &tv, &s->prelude_until);
		}
		if (timercmp(&s->prelude_until, &now, >))
			timersub(&s->prelude_until, &now, &tv);
		else
			timerclear(&tv);
		event_add(s->timer, &tv);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(s->client)) == 0) {
		s->line_since = 0;
		tv.tv_sec = idle;
	} else {
		/* Rounded up: a deadline may fire late, never early. */
		if (s->line_since == 0)
			s->line_since = now.tv_sec + (now.tv_usec > 0);
		tv.tv_sec = s->line_since + idle - now.tv_sec;
	}
	if (session_cleartext_left(s, &now, &left) && left < tv.tv_sec)
		tv.tv_sec = left;
	if (tv.tv_sec <= 0)
		tv.tv_sec = 0;
	event_add(s->timer, &tv);
}

/*
 * cleartext_timeout (SPEC 10): on a STARTTLS service with
 * require_starttls, the time from the greeting (the first bytes the
 * client got) to the STARTTLS go-ahead.  Sets *left (seconds, may be
 * negative) and returns true while it applies.
 */
static bool
session_cleartext_left(struct session *s, const struct timeval *now,
    time_t *left)
{
	if (s->svc->tls_mode != TLS_MODE_STARTTLS ||
	    !s->svc->require_starttls || s->svc->cleartext_timeout == 0 ||
	    s->filter == NULL || !filter_cleartext(s->filter))
		return false;
	if (s->clear_since == 0) {
		if (s->bytes_out == 0)
			return false;	/* no greeting yet */
		/* Rounded up, as line_since: late, never early. */
		s->clear_since = now->tv_sec + (now->tv_usec > 0);
	}
	*left = s->clear_since + (time_t)s->svc->cleartext_timeout -
	    now->tv_sec;
	return true;
}

/*
 * The idle or cleartext timeout in RELAY: logged and counted once, the
 * protocol's timeout reply when the streams are at a boundary (the
 * filter decides, filter_timeout()), then the close, which flushes the
 * reply (inside TLS when TLS is up: s->client is the TLS bufferevent)
 * within the linger timeout.
 */
static void
session_timeout(struct session *s)
{
	struct timeval	 now;
	time_t		 left;
	bool		 clear, replied;
	const char	*why;

	event_base_gettimeofday_cached(s->worker->base, &now);
	clear = session_cleartext_left(s, &now, &left) && left <= 0;
	why = clear ? "cleartext timeout" : "idle timeout";
	metrics_timeout(s, clear ? METRICS_TO_CLEARTEXT : METRICS_TO_IDLE);
	replied = filter_timeout(s->filter, bufferevent_get_output(s->client),
	    why);
	if (clear)
		log_notice("%s client=%s: no STARTTLS within cleartext_timeout "
		    "%u s, closing%s", s->id, s->peer_ip,
		    s->svc->cleartext_timeout, replied ? "" : " (no reply)");
	else
		log_info("%s client=%s: idle timeout %u s, closing%s", s->id,
		    s->peer_ip, s->svc->idle_timeout,
		    replied ? "" : " (no reply: mid-transfer)");
	session_close(s, why);
}

/* A clock that wall-clock steps do not move (NTP, an operator's date). */
static void
session_monotonic(struct timeval *tv)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
		gettimeofday(tv, NULL);
		return;
	}
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
}

/*
 * smtp_greeting_delay (SPEC 10): the backend's greeting is held back in
 * its input buffer (the session is not pumped) until the delay has
 * passed, counted from the start of the session (STARTTLS services) or
 * from the end of the TLS handshake (implicit TLS: the delay is for the
 * SMTP dialogue, and a slow handshake must not eat into it).  The
 * backend connection is made at once meanwhile.  SF_GREET_HOLD stays set
 * until the client has been sent its greeting, not just until the delay
 * is over: a backend slow to greet, or the XCLIENT dialogue, must not
 * open a window in which an early talker's bytes would be relayed.
 */
static void
session_greet_hold(struct session *s)
{
	if (s->svc->protocol != PROTO_SMTP || s->svc->smtp_greeting_delay == 0)
		return;
	session_monotonic(&s->greet_until);
	s->greet_until.tv_sec += (time_t)s->svc->smtp_greeting_delay;
	s->flags |= SF_GREET_HOLD;
}

/*
 * Whether the greeting may go now.  Client bytes already there make an
 * early talker (they came before the greeting); before the deadline the
 * timer is armed for what is left of it.
 */
static bool
session_greet_due(struct session *s)
{
	struct timeval	now, left;

	if (!(s->flags & SF_GREET_HOLD))
		return true;
	if (evbuffer_get_length(bufferevent_get_input(s->client)) != 0) {
		session_early_talker(s);
		return false;
	}
	session_monotonic(&now);
	if (timercmp(&now, &s->greet_until, <)) {
		timersub(&s->greet_until, &now, &left);
		event_add(s->timer, &left);
		return false;
	}
	/* SF_GREET_HOLD itself ends with the greeting's first byte. */
	s->flags |= SF_GREET_DUE;
	return true;
}

/*
 * A client that talks before the greeting (RFC 5321 4.3.1: it must
 * wait): 554 and the close.  Its bytes are dropped unread; the backend
 * never sees them.
 */
static void
session_early_talker(struct session *s)
{
	struct evbuffer	*in = bufferevent_get_input(s->client);
	static const char reply[] = "554 5.5.1 Protocol error\r\n";

	log_notice("%s client=%s: early talker: %zu bytes before the "
	    "greeting (smtp_greeting_delay %u s), closing", s->id, s->peer_ip,
	    evbuffer_get_length(in), s->svc->smtp_greeting_delay);
	s->flags &= ~SF_GREET_HOLD;
	filter_count_refusal(s->filter, FILTER_REF_GREETING_DELAY);
	evbuffer_drain(in, evbuffer_get_length(in));
	evbuffer_add(bufferevent_get_output(s->client), reply,
	    sizeof(reply) - 1);
	session_close(s, "early talker");
}

static void
session_schedule_free(struct session *s)
{
	event_active(s->timer, EV_TIMEOUT, 0);
}

void
session_accept(struct worker *w, struct runtime *rt, struct service_rt *srt,
    int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct session	*s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warn("session: calloc");
		goto fail;
	}
	session_make_id(s);
	s->worker = w;
	s->rt = rt;
	runtime_ref(rt);
	s->srt = srt;
	s->svc = srt->svc;
	s->ops = srt->ops;
	s->flags = SF_COUNTED;
	/* accept_proxy: the per-address slot comes with the header. */
	if (!s->svc->accept_proxy)
		s->flags |= SF_IP_COUNTED;
	memcpy(&s->peer, sa, salen);
	s->peerlen = salen;
	util_addr_str(sa, s->peer_ip, sizeof(s->peer_ip));
	s->peer_port = util_addr_port(sa);
	s->locallen = sizeof(s->local);
	if (getsockname(fd, (struct sockaddr *)&s->local, &s->locallen) == -1) {
		log_warn("%s getsockname", s->id);
		s->locallen = 0;
	}
	util_tcp_nodelay(fd, sa->sa_family);
	gettimeofday(&s->started, NULL);
	/* Implicit TLS enters HANDSHAKE in session_start_tls(). */
	s->state = SESSION_ST_CONNECTING;
	worker_session_add(w, s);
	metrics_session_start(s);

	s->timer = event_new(w->base, -1, 0, session_timer_cb, s);
	s->client = bufferevent_socket_new(w->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (s->timer == NULL || s->client == NULL) {
		log_warnx("%s: cannot allocate session events", s->id);
		if (s->client == NULL)
			close(fd);
		session_free(s);	/* nothing refers to it yet */
		return;
	}
	if (s->svc->accept_proxy) {
		session_proxy_wait(s);
		return;
	}
	session_begin(s);
	return;
fail:
	close(fd);
	/* The listener counted this connection; give the slots back. */
	listener_release(srt, srt->svc->accept_proxy ? NULL : sa);
}

/*
 * The session proper, once the client is known: its filter, the start
 * line, then TLS (implicit) or the backend (STARTTLS).
 */
static struct filter *
session_filter_new(struct session *s)
{
	struct filter_params fp;
	char		 local_ip[UTIL_ADDRSTRLEN];

	memset(&fp, 0, sizeof(fp));
	fp.svc = s->svc;
	/*
	 * tls_mode none (SPEC 12) relays as if TLS were up: the client is
	 * local and the backend leg is encrypted, so the cleartext
	 * credential rules of SPEC 3 do not apply, the backend's
	 * capabilities pass as they are, and a STARTTLS gets the "TLS
	 * already active" refusal (there is no TLS to offer on this leg).
	 */
	fp.tls_active = s->svc->tls_mode == TLS_MODE_IMPLICIT ||
	    s->svc->tls_mode == TLS_MODE_NONE;
	fp.session_id = s->id;
	fp.client_addr = s->peer_ip;
	fp.client_port = s->peer_port;
	/* XCLIENT's DESTADDR/DESTPORT: the address the client dialled. */
	if (s->svc->xclient && s->locallen > 0) {
		fp.local_addr = util_addr_str((struct sockaddr *)&s->local,
		    local_ip, sizeof(local_ip));
		fp.local_port = util_addr_port((struct sockaddr *)&s->local);
	}
	fp.refusals = metrics_refusals(s->srt->metrics, s->worker->index);
	if (s->svc->max_auth_failures_per_ip != 0) {
		fp.auth_blocked = session_auth_blocked;
		fp.auth_failed = session_auth_failed;
		fp.auth_arg = s;
	}
	fp.backend_failover = true;
	return filter_new(s->ops, &fp);
}

static void
session_begin(struct session *s)
{
	s->filter = session_filter_new(s);

	log_info("%s session start service=%s client=%s port=%d tls=%s",
	    s->id, s->svc->name, s->peer_ip, s->peer_port,
	    conf_tls_mode_name(s->svc->tls_mode));
	if (s->filter == NULL) {
		session_close(s, "out of memory");
		return;
	}
	bufferevent_setcb(s->client, session_client_read_cb,
	    session_client_write_cb, session_client_event_cb, s);
	evbuffer_add_cb(bufferevent_get_output(s->client), session_count_out_cb, s);
	bufferevent_setwatermark(s->client, EV_READ, 0, RELAY_READ_WATERMARK);
	bufferevent_setwatermark(s->client, EV_WRITE, RELAY_LOW_WATERMARK, 0);

	if (!session_rate_ok(s)) {
		/*
		 * An implicit-TLS client expects TLS: its temporary failure
		 * is written inside, once the handshake is done.
		 */
		if (s->svc->tls_mode == TLS_MODE_IMPLICIT) {
			s->flags |= SF_RATE_LIMITED;
			session_start_tls(s);
		} else
			session_rate_refuse(s);
		return;
	}
	if (s->svc->tls_mode == TLS_MODE_IMPLICIT) {
		session_start_tls(s);
		return;
	}
	/*
	 * STARTTLS services talk cleartext first, and tls_mode none ones
	 * throughout: the backend's greeting is what the client sees, so
	 * connect now.  Client bytes wait in the
	 * (bounded) input buffer until the backend is up.
	 */
	bufferevent_enable(s->client, EV_READ | EV_WRITE);
	session_greet_hold(s);
	backend_connect(s);
}

/*
 * accept_proxy (SPEC section 9): the connection comes from a trusted
 * balancer (listener.c checked proxy_trusted) and must begin with a
 * PROXY header, read before anything else: before the TLS handshake on
 * implicit services, before the backend connection (and so its greeting)
 * on STARTTLS ones.  The header is read straight from the socket, so
 * that not one byte behind it is taken from the TLS or cleartext layer:
 * each read peeks at what is there, and consumes only bytes that are
 * header for sure (proxy_parse(): all of them while it needs more, the
 * exact length once complete).  Bounded by PROXY_RECV_MAX and by
 * handshake_timeout; a missing or malformed header closes the
 * connection without a reply.
 */
static void
session_proxy_wait(struct session *s)
{
	s->proxy_buf = malloc(PROXY_RECV_MAX);
	s->proxy_ev = event_new(s->worker->base, bufferevent_getfd(s->client),
	    EV_READ | EV_PERSIST, session_proxy_read_cb, s);
	if (s->proxy_buf == NULL || s->proxy_ev == NULL) {
		log_warnx("%s: cannot allocate the PROXY header reader", s->id);
		session_close(s, "out of memory");
		return;
	}
	log_debug("%s proxy=%s: waiting for the PROXY header", s->id,
	    s->peer_ip);
	session_enter_state(s, SESSION_ST_PROXY);
	event_add(s->proxy_ev, NULL);
	session_arm(s, s->svc->handshake_timeout);
}

static void
session_proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session		*s = arg;
	struct proxy_hdr	 h;
	enum proxy_parse_status	 st;
	size_t			 room = PROXY_RECV_MAX - s->proxy_have, take;
	ssize_t			 n;

	if (s->state != SESSION_ST_PROXY)
		return;
	if (room == 0) {
		/* proxy_parse() never needs more than PROXY_RECV_MAX. */
		session_close(s, "bad PROXY header");
		return;
	}
	n = recv(fd, s->proxy_buf + s->proxy_have, room, MSG_PEEK);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		log_notice("%s proxy=%s: connection %s before a complete "
		    "PROXY header", s->id, s->peer_ip,
		    n == 0 ? "closed" : strerror(errno));
		session_close(s, "no PROXY header");
		return;
	}
	st = proxy_parse(s->proxy_buf, s->proxy_have + (size_t)n, &h);
	if (st == PROXY_INVALID) {
		log_notice("%s proxy=%s: malformed PROXY header (%s), closing",
		    s->id, s->peer_ip, h.error);
		session_close(s, "bad PROXY header");
		return;
	}
	take = st == PROXY_OK ? h.len - s->proxy_have : (size_t)n;
	if (recv(fd, s->proxy_buf + s->proxy_have, take, 0) != (ssize_t)take) {
		log_warn("%s proxy=%s: reading the PROXY header", s->id,
		    s->peer_ip);
		session_close(s, "client connection error");
		return;
	}
	s->proxy_have += take;
	if (st == PROXY_OK)
		session_proxy_accept(s, &h);
}

/*
 * The header is complete: its source becomes the client everywhere from
 * here on (per-address limit, log lines, what send_proxy passes on), and
 * its destination the address the client connected to.  LOCAL (a health
 * check) and UNKNOWN keep the balancer's own connection.
 */
static void
session_proxy_accept(struct session *s, const struct proxy_hdr *h)
{
	char	balancer[UTIL_ADDRSTRLEN];

	session_proxy_free(s);
	event_del(s->timer);
	util_strlcpy(balancer, s->peer_ip, sizeof(balancer));
	if (!h->local) {
		memcpy(&s->peer, &h->src, h->srclen);
		s->peerlen = h->srclen;
		util_addr_str((struct sockaddr *)&s->peer, s->peer_ip,
		    sizeof(s->peer_ip));
		s->peer_port = util_addr_port((struct sockaddr *)&s->peer);
		memcpy(&s->local, &h->dst, h->dstlen);
		s->locallen = h->dstlen;
	}
	log_info("%s proxy=%s: PROXY v%d header, client=%s port=%d%s", s->id,
	    balancer, h->version, s->peer_ip, s->peer_port,
	    h->local ? " (LOCAL: the balancer itself)" : "");
	if (listener_take_ip(s->srt, (struct sockaddr *)&s->peer) == -1) {
		log_notice("service %s: refusing %s: per-address connection "
		    "limit", s->svc->name, s->peer_ip);
		metrics_limit(s->srt->metrics, s->worker->index,
		    METRICS_LIM_PER_IP);
		/* As the listener does: a reply where we can still speak. */
		if (s->svc->tls_mode == TLS_MODE_STARTTLS) {
			s->ops->unavailable(bufferevent_get_output(s->client),
			    s->svc->hostname);
			bufferevent_setcb(s->client, NULL,
			    session_client_write_cb, session_client_event_cb, s);
			bufferevent_enable(s->client, EV_WRITE);
		}
		session_close(s, "per-address connection limit");
		return;
	}
	s->flags |= SF_IP_COUNTED;
	session_enter_state(s, SESSION_ST_CONNECTING);
	session_begin(s);
}

/*
 * SPEC 10, max_connection_rate_per_ip: counted per service and address
 * (the PROXY header's on accept_proxy services), once the client is
 * known and before the backend is contacted, so a flood never reaches
 * the backend.  addrtable.c keeps the token bucket.
 */
static bool
session_rate_ok(struct session *s)
{
	unsigned	rate = s->svc->max_connection_rate_per_ip;

	if (rate == 0 || addrtable_connect(s->srt->ctr->limits,
	    (struct sockaddr *)&s->peer, rate, addrtable_now()))
		return true;
	log_notice("%s service %s: refusing %s: connection rate limit "
	    "(max_connection_rate_per_ip %u per minute)", s->id, s->svc->name,
	    s->peer_ip, rate);
	metrics_limit(s->srt->metrics, s->worker->index, METRICS_LIM_RATE);
	return false;
}

/* The protocol's temporary failure, then the close (SPEC 10). */
static void
session_rate_refuse(struct session *s)
{
	s->ops->rate_limited(bufferevent_get_output(s->client),
	    s->svc->hostname);
	bufferevent_enable(s->client, EV_WRITE);
	session_close(s, "connection rate limit");
}

/* filter_params hooks: SPEC 10, max_auth_failures_per_ip. */
static bool
session_auth_blocked(void *arg, unsigned pending)
{
	struct session	*s = arg;
	unsigned	 max = s->svc->max_auth_failures_per_ip;

	/* Pending attempts may all fail: they count against the limit. */
	return pending >= max || addrtable_auth_blocked(s->srt->ctr->limits,
	    (struct sockaddr *)&s->peer, max - pending,
	    s->svc->auth_failure_window, addrtable_now());
}

static void
session_auth_failed(void *arg)
{
	struct session	*s = arg;
	unsigned	 n;

	n = addrtable_auth_failed(s->srt->ctr->limits,
	    (struct sockaddr *)&s->peer, s->svc->auth_failure_window,
	    addrtable_now());
	/* Logged once, when the address reaches the limit. */
	if (n == s->svc->max_auth_failures_per_ip)
		log_notice("%s service %s: client %s: %u authentication "
		    "failures within %u s (max_auth_failures_per_ip): "
		    "credential commands refused until the window ends",
		    s->id, s->svc->name, s->peer_ip, n,
		    s->svc->auth_failure_window);
}

static void
session_proxy_free(struct session *s)
{
	if (s->proxy_ev != NULL) {
		event_free(s->proxy_ev);
		s->proxy_ev = NULL;
	}
	free(s->proxy_buf);
	s->proxy_buf = NULL;
}

/*
 * Put the client leg under TLS: implicit services at once, STARTTLS ones
 * right after the go-ahead was queued.  bufferevent_openssl goes straight
 * on the socket whenever nothing cleartext is left in between: always for
 * implicit TLS, and after STARTTLS once the go-ahead has been written
 * (it is, at once, unless the client's receive window is full).  OpenSSL
 * then reads whole records from the socket and writes to it, with no
 * second bufferevent and pair of buffers in between.  Otherwise the filter
 * variant wraps the socket bufferevent that still holds the go-ahead, so
 * that the reply leaves in cleartext before any TLS byte.  How either
 * ends is classified by tls_classify_close().
 */
static void
session_start_tls(struct session *s)
{
	struct bufferevent	*tlsbev, *sock = s->client;
	struct event_base	*base = s->worker->base;
	evutil_socket_t		 fd = bufferevent_getfd(sock);
	int			 opts = BEV_OPT_CLOSE_ON_FREE |
				    BEV_OPT_DEFER_CALLBACKS;

	s->ssl = tls_server_ssl(s->srt->tls, s->ops->alpn);
	if (s->ssl == NULL) {
		session_close(s, "TLS setup failed");
		return;
	}
	session_write_sock(sock);
	if (fd != -1 &&
	    evbuffer_get_length(bufferevent_get_output(sock)) == 0 &&
	    evbuffer_get_length(bufferevent_get_input(sock)) == 0) {
		tlsbev = tls_server_socket_bev(base, fd, s->ssl, opts);
		if (tlsbev != NULL) {
			/* The socket is the TLS bufferevent's now. */
			bufferevent_setfd(sock, -1);
			bufferevent_free(sock);
		}
	} else {
		tlsbev = bufferevent_openssl_filter_new(base, sock, s->ssl,
		    BUFFEREVENT_SSL_ACCEPTING, opts);
		if (tlsbev != NULL) {
			bufferevent_openssl_set_allow_dirty_shutdown(tlsbev, 1);
			/*
			 * The TLS layer moves plaintext from its output into
			 * the socket's output as ciphertext only while that is
			 * below its high watermark; without one a client that
			 * stops reading would make us buffer the backend's
			 * whole answer (bounded memory, SPEC section 6).
			 */
			bufferevent_setwatermark(sock, EV_WRITE,
			    RELAY_LOW_WATERMARK, RELAY_HIGH_WATERMARK);
			/* The go-ahead was counted before. */
			evbuffer_remove_cb(bufferevent_get_output(sock),
			    session_count_out_cb, s);
		}
	}
	if (tlsbev == NULL) {
		/* libevent freed the SSL (BEV_OPT_CLOSE_ON_FREE). */
		s->ssl = NULL;
		session_close(s, "TLS setup failed");
		return;
	}
	s->client = tlsbev;
	s->flags |= SF_TLS;
	bufferevent_setcb(tlsbev, session_client_read_cb,
	    session_client_write_cb, session_client_event_cb, s);
	/* Count plaintext handed to TLS. */
	evbuffer_add_cb(bufferevent_get_output(tlsbev), session_count_out_cb, s);
	bufferevent_setwatermark(tlsbev, EV_READ, 0, RELAY_READ_WATERMARK);
	bufferevent_setwatermark(tlsbev, EV_WRITE, RELAY_LOW_WATERMARK, 0);
	bufferevent_enable(tlsbev, EV_READ | EV_WRITE);
	session_enter_state(s, SESSION_ST_HANDSHAKE);
	session_arm(s, s->svc->handshake_timeout);
}

static void
session_tls_established(struct session *s)
{
	char	line[512], cert[512];

	s->flags |= SF_TLS_UP;
	metrics_handshake(s);
	/* The summary costs certificate and cipher lookups: only if logged. */
	if (log_get_level() >= LOG_LEVEL_INFO) {
		tls_summary(s->ssl, "unknown", s->peer_ip, line, sizeof(line));
		log_info("%s", line);
	}
	if (s->svc->tls->client_certificates != CLIENT_CERT_NONE &&
	    log_get_level() >= LOG_LEVEL_INFO) {
		tls_peer_cert_info(s->ssl, cert, sizeof(cert));
		log_info("%s client certificate: %s", s->id, cert);
	}
	if (s->flags & SF_RATE_LIMITED) {
		session_rate_refuse(s);
		return;
	}
	if (s->flags & SF_BACKEND_UP) {
		/*
		 * After STARTTLS: the backend has been waiting for us, and
		 * had nothing to say meanwhile (SPEC 8.2).
		 */
		if (filter_tls_established(s->filter,
		    bufferevent_get_input(s->backend),
		    bufferevent_get_output(s->backend)) != FILTER_CONTINUE) {
			session_close(s, filter_reason(s->filter));
			return;
		}
		if (filter_renews_backend(s->filter)) {
			session_renew_backend(s);
			return;
		}
		session_enter_state(s, SESSION_ST_RELAY);
		s->line_since = 0;
		session_pump(s);
		return;
	}
	session_enter_state(s, SESSION_ST_CONNECTING);
	session_greet_hold(s);
	backend_connect(s);
}

/*
 * SPEC 9: the TLS phase of a STARTTLS session goes over a fresh backend
 * connection, so that the backend learns the TLS facts (the PROXY header
 * now carries them) before any command sent inside TLS, and so that no
 * backend state of the cleartext phase survives (SPEC 8.3) by
 * construction.  The cleartext-phase connection had nothing to say
 * during the handshake (checked by filter_tls_established()) and is
 * simply closed.  The same backend is tried first, then the rest in
 * order.  Client bytes arriving meanwhile stay in the client's input
 * (CONNECTING is not pumped), and the filter holds them until the fresh
 * backend's greeting, which it consumes, has been read.
 */
static void
session_renew_backend(struct session *s)
{
	log_debug("%s backend %s: fresh connection for the TLS phase",
	    s->id, s->backend_name);
	session_backend_drop(s);
	if (s->backend_next > 0)
		s->backend_next--;
	s->line_since = 0;
	session_enter_state(s, SESSION_ST_CONNECTING);
	backend_connect(s);
}

/*
 * send_proxy: queue the PROXY header on a backend connection that has
 * just come up.  Called before the leg is enabled or pumped, so the
 * header is the very first byte the backend reads (SPEC section 9); an
 * output that already holds anything is a bug, and the session ends
 * rather than send the header behind it.  The TLS facts go with it once
 * the client's handshake is over: implicit TLS, and the fresh connection
 * of a STARTTLS session's TLS phase (session_renew_backend()).
 */
static int
session_send_proxy(struct session *s)
{
	struct proxy_facts	 f;
	struct proxy_tls	 t;
	char			 sni[PROXY_AUTHORITY_MAX + 1] = "";
	unsigned char		 hdr[PROXY_HDR_MAX];
	ssize_t			 n;

	memset(&f, 0, sizeof(f));
	f.src = (const struct sockaddr *)&s->peer;
	/* The address the client dialled (a balancer's header names it). */
	if (s->locallen != 0)
		f.dst = (const struct sockaddr *)&s->local;
	f.unique_id = s->id;
	if (s->ssl != NULL && (s->flags & SF_TLS_UP)) {
		tls_proxy_facts(s->ssl, &t, sni, sizeof(sni));
		f.tls = &t;
		f.authority = sni[0] != '\0' ? sni : NULL;
	}
	if (s->svc->send_proxy == SEND_PROXY_V1)
		n = proxy_v1(&f, (char *)hdr, sizeof(hdr));
	else
		n = proxy_v2(&f, hdr, sizeof(hdr));
	if (n <= 0 ||
	    evbuffer_get_length(bufferevent_get_output(s->backend)) != 0 ||
	    bufferevent_write(s->backend, hdr, (size_t)n) == -1) {
		log_warnx("%s backend %s: cannot queue the PROXY header",
		    s->id, s->backend_name);
		return -1;
	}
	log_debug("%s backend %s: PROXY %s header, %zd bytes", s->id,
	    s->backend_name, s->svc->send_proxy == SEND_PROXY_V1 ? "v1" : "v2", n);
	return 0;
}

/*
 * The backend leg is relayed: the session's callbacks and the relay's
 * watermarks on it (the socket bufferevent, or the TLS one over it).
 */
static void
session_backend_relay(struct session *s)
{
	bufferevent_setcb(s->backend, session_backend_read_cb,
	    session_backend_write_cb, session_backend_event_cb, s);
	bufferevent_setwatermark(s->backend, EV_READ, 0, RELAY_READ_WATERMARK);
	bufferevent_setwatermark(s->backend, EV_WRITE, RELAY_LOW_WATERMARK, 0);
	bufferevent_enable(s->backend, EV_READ | EV_WRITE);
}

void
session_backend_ready(struct session *s)
{
	s->flags |= SF_BACKEND_UP;
	filter_set_backend(s->filter, s->backend_name);
	if (s->svc->send_proxy != SEND_PROXY_NONE &&
	    session_send_proxy(s) == -1) {
		session_close(s, "PROXY header failed");
		return;
	}
	session_backend_relay(s);
	log_debug("%s backend %s connected", s->id, s->backend_name);
	session_enter_state(s, SESSION_ST_RELAY);
	session_pump(s);
}

void
session_backend_unavailable(struct session *s)
{
	s->ops->unavailable(bufferevent_get_output(s->client),
	    s->svc->hostname);
	session_close(s, s->backend_why != NULL ? s->backend_why :
	    "backend unavailable");
}

/*
 * backend_tls = "starttls" (SPEC 12): the backend leg's handshake after
 * the server's go-ahead has verified.  The leg is relayed again (the TLS
 * bufferevent now), and the filter goes on: its greeting for the client,
 * or (SMTP with xclient) XCLIENT inside TLS first.
 */
void
session_backend_tls_ready(struct session *s)
{
	enum filter_verdict	 v;

	session_backend_relay(s);
	log_debug("%s backend %s: TLS after STARTTLS", s->id, s->backend_name);
	session_enter_state(s, SESSION_ST_RELAY);
	v = filter_backend_tls_established(s->filter,
	    bufferevent_get_input(s->backend),
	    bufferevent_get_output(s->client),
	    bufferevent_get_output(s->backend));
	if (v == FILTER_CONTINUE)
		session_pump(s);
	else if (filter_backend_failed(s->filter))
		session_backend_failed(s, filter_reason(s->filter));
	else
		session_close(s, filter_reason(s->filter));
}

void
session_backend_failed(struct session *s, const char *why)
{
	if (s->state == SESSION_ST_CLOSING)
		return;
	if (why != NULL)
		s->backend_why = why;
	/* Still there when the filter found it unusable (else backend.c). */
	if (s->backend != NULL)
		metrics_backend_failure(s);
	session_backend_drop(s);
	if (s->bytes_out == 0) {
		/*
		 * The client has heard nothing and sent nothing that was
		 * read (its bytes are held, also after its EOF): a fresh
		 * filter, as if this backend had refused the connection.
		 */
		filter_free(s->filter);
		if ((s->filter = session_filter_new(s)) == NULL) {
			session_close(s, "out of memory");
			return;
		}
		s->line_since = 0;
		session_enter_state(s, SESSION_ST_CONNECTING);
		backend_connect(s);
		return;
	}
	session_backend_unavailable(s);
}

/*
 * Run the filter until neither direction makes progress, then apply flow
 * control.  Verdicts other than CONTINUE end the pump.
 */
static void
session_pump(struct session *s)
{
	struct evbuffer		*cin, *cout, *bin, *bout;
	enum filter_verdict	 v = FILTER_CONTINUE;
	size_t			 cin0;

	if (s->state != SESSION_ST_RELAY || !session_greet_due(s))
		return;
	cin = bufferevent_get_input(s->client);
	cout = bufferevent_get_output(s->client);
	bin = bufferevent_get_input(s->backend);
	bout = bufferevent_get_output(s->backend);

	cin0 = evbuffer_get_length(cin);
	v = filter_pump(s->filter, cin, bin, cout, bout);
	if (v == FILTER_CONTINUE)
		session_write_now(s);
	/* The greeting (or a failure reply) is out: no early talker now. */
	if ((s->flags & SF_GREET_HOLD) &&
	    (evbuffer_get_length(cout) != 0 || s->bytes_out != 0)) {
		s->flags &= ~(SF_GREET_HOLD | SF_GREET_DUE);
		log_debug("%s greeting sent after smtp_greeting_delay", s->id);
	}
	/* Bytes the client sent before its EOF still count. */
	s->bytes_in += cin0 - evbuffer_get_length(cin);
	switch (v) {
	case FILTER_CONTINUE:
		session_arm_idle(s);
		session_flow(s);
		break;
	case FILTER_CLOSE:
		if (filter_backend_failed(s->filter))
			session_backend_failed(s, filter_reason(s->filter));
		else
			session_close(s, filter_reason(s->filter));
		break;
	case FILTER_BACKEND_STARTTLS:
		/* SPEC 12: the server's go-ahead; the client still waits. */
		if (backend_starttls(s) == -1) {
			log_error("%s backend %s: cannot start TLS after "
			    "STARTTLS", s->id, s->backend_name);
			session_backend_failed(s, NULL);
			break;
		}
		session_enter_state(s, SESSION_ST_CONNECTING);
		break;
	case FILTER_STARTTLS:
		/* SPEC 8.1: nothing read in cleartext survives the boundary. */
		if (evbuffer_get_length(cin) != 0) {
			log_warnx("%s client=%s: pipelined data after "
			    "STARTTLS, closing", s->id, s->peer_ip);
			filter_count_refusal(s->filter, FILTER_REF_INJECTION);
			session_close(s, "pipelined data after STARTTLS");
			break;
		}
		metrics_starttls(s);
		session_start_tls(s);
		break;
	}
}

/*
 * Write what the filter queued for either leg now, in the turn of the
 * loop that produced it.  A bufferevent writes only when its write event
 * fires: an epoll change to add the event, a turn of the loop, the write,
 * then a change to remove it, for every reply relayed.  When the socket
 * takes all of the output at once (a command or a reply fits its buffer),
 * removing the write event again in the same turn cancels the pending
 * change (worker bases batch epoll changes), and the bufferevent is left
 * as after a complete write of its own.  Whatever is left (socket full,
 * an error) stays for the bufferevent, which writes, calls back and
 * reports errors as usual; session_flow() runs after this, on the new
 * lengths.  Only cleartext sockets and the socket under the client's TLS
 * once its plaintext is all in TLS records (bufferevent_openssl then has
 * nothing waiting for a write callback); not a backend under TLS.
 */
static void
session_write_sock(struct bufferevent *sock)
{
	struct evbuffer	*out = bufferevent_get_output(sock);
	evutil_socket_t	 fd = bufferevent_getfd(sock);

	if (fd == -1 || evbuffer_get_length(out) == 0 ||
	    evbuffer_write(out, fd) <= 0 || evbuffer_get_length(out) != 0)
		return;
	event_del(&sock->ev_write);
}

static void
session_write_now(struct session *s)
{
	struct bufferevent	*under;

	if (!(s->flags & SF_TLS))
		session_write_sock(s->client);
	else if (!(s->flags & SF_TLS_UP))
		;
	else if ((under = bufferevent_get_underlying(s->client)) == NULL) {
		/*
		 * TLS on the socket: bufferevent_openssl only writes from
		 * its write event.  Activated now, it runs in this turn
		 * (and cancels its own epoll change once the output is
		 * empty) instead of waiting for the next epoll_wait().
		 */
		if (evbuffer_get_length(bufferevent_get_output(s->client)) != 0)
			event_active(&s->client->ev_write, EV_WRITE, 1);
	} else if (evbuffer_get_length(bufferevent_get_output(s->client)) == 0)
		session_write_sock(under);
	if (!(s->flags & SF_BACKEND_TLS))
		session_write_sock(s->backend);
}

/*
 * Bounded buffering: stop reading a leg while the other leg's output is
 * above the high watermark; the write callbacks resume it.
 */
static void
session_flow(struct session *s)
{
	size_t	bout = evbuffer_get_length(bufferevent_get_output(s->backend));
	size_t	cout = evbuffer_get_length(bufferevent_get_output(s->client));

	/*
	 * The client is not read while either output is full: its commands
	 * go to the backend, and its refusals and the backend's replies to
	 * itself (a client that does not read cannot make us queue more).
	 */
	if ((bout >= RELAY_HIGH_WATERMARK || cout >= RELAY_HIGH_WATERMARK) &&
	    !(s->flags & SF_CLIENT_READ_OFF)) {
		s->flags |= SF_CLIENT_READ_OFF;
		bufferevent_disable(s->client, EV_READ);
	} else if (bout <= RELAY_LOW_WATERMARK && cout <= RELAY_LOW_WATERMARK &&
	    (s->flags & SF_CLIENT_READ_OFF)) {
		s->flags &= ~SF_CLIENT_READ_OFF;
		bufferevent_enable(s->client, EV_READ);
	}
	if (cout >= RELAY_HIGH_WATERMARK && !(s->flags & SF_BACKEND_READ_OFF)) {
		s->flags |= SF_BACKEND_READ_OFF;
		bufferevent_disable(s->backend, EV_READ);
	} else if (cout <= RELAY_LOW_WATERMARK &&
	    (s->flags & SF_BACKEND_READ_OFF)) {
		s->flags &= ~SF_BACKEND_READ_OFF;
		bufferevent_enable(s->backend, EV_READ);
	}
	/*
	 * Client gone and everything it sent handed over: half-close the
	 * backend so it sees the end too, and keep relaying its answers.
	 */
	if ((s->flags & SF_CLIENT_EOF) && bout == 0 &&
	    evbuffer_get_length(bufferevent_get_input(s->client)) == 0 &&
	    !(s->flags & SF_SHUTWR_BACKEND)) {
		s->flags |= SF_SHUTWR_BACKEND;
		/*
		 * A TLS backend leg ends with close_notify (queued into the
		 * socket's output by the filter), not a bare FIN that would
		 * cut it off: the server must be able to tell a truncation.
		 */
		if (s->flags & SF_BACKEND_TLS_UP) {
			s->flags |= SF_BACKEND_SHUTDOWN;
			if (SSL_shutdown(s->bssl) < 0)
				ERR_clear_error();
		} else
			shutdown(bufferevent_getfd(s->backend), SHUT_WR);
	}
}

static void
session_client_read_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->state == SESSION_ST_CLOSING) {
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		return;
	}
	if ((s->flags & SF_GREET_HOLD) &&
	    evbuffer_get_length(bufferevent_get_input(bev)) != 0) {
		/* CONNECTING or RELAY: the greeting has not gone yet. */
		session_early_talker(s);
		return;
	}
	if (s->state == SESSION_ST_RELAY)
		session_pump(s);
}

static void
session_client_write_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->state == SESSION_ST_CLOSING) {
		event_active(s->timer, EV_TIMEOUT, 0);
		return;
	}
	if (s->state == SESSION_ST_RELAY &&
	    (s->flags & (SF_BACKEND_READ_OFF | SF_CLIENT_READ_OFF)))
		session_pump(s);
}

static void
session_backend_read_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->state == SESSION_ST_RELAY)
		session_pump(s);
}

static void
session_backend_write_cb(struct bufferevent *bev, void *arg)
{
	struct session	*s = arg;

	if (s->state == SESSION_ST_RELAY)
		session_pump(s);
}

static void
session_client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;
	char		 detail[256] = "";
	enum tls_close	 how = TLS_CLOSE_EOF;

	if (what & BEV_EVENT_CONNECTED) {
		/* The TLS handshake completed. */
		if (s->state == SESSION_ST_HANDSHAKE)
			session_tls_established(s);
		return;
	}
	if (s->flags & SF_TLS)
		how = tls_classify_close(bev, what, detail, sizeof(detail));
	else if (what & BEV_EVENT_ERROR) {
		how = TLS_CLOSE_SYSCALL;
		snprintf(detail, sizeof(detail), "%s",
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}

	if (s->state == SESSION_ST_CLOSING) {
		/* Client gone while we flushed: nothing more to send. */
		s->client = NULL;
		bufferevent_free(bev);
		session_schedule_free(s);
		return;
	}
	if (how == TLS_CLOSE_SYSCALL) {
		/* The socket is broken: nothing more can be sent. */
		s->client = NULL;
		bufferevent_free(bev);
	}
	if (s->state == SESSION_ST_HANDSHAKE) {
		/*
		 * After a STARTTLS go-ahead (the backend is already up) a
		 * record OpenSSL cannot parse is most likely cleartext sent
		 * behind the command: the injection of SPEC section 3, so
		 * it is worth a warning, like pipelined bytes seen earlier.
		 */
		if ((s->flags & SF_BACKEND_UP) && how == TLS_CLOSE_PROTOCOL)
			log_warnx("%s client=%s: no TLS after the STARTTLS "
			    "go-ahead (cleartext sent behind the command?), "
			    "closing: %s", s->id, s->peer_ip, detail);
		else
			log_info("%s client=%s: TLS handshake failed: %s",
			    s->id, s->peer_ip,
			    detail[0] ? detail : "connection closed");
		metrics_handshake_failure(s, how == TLS_CLOSE_PROTOCOL ?
		    METRICS_HSF_PROTOCOL : how == TLS_CLOSE_SYSCALL ?
		    METRICS_HSF_ERROR : METRICS_HSF_CLOSED);
		/* Flushing lets the alert OpenSSL queued reach the client. */
		session_close(s, "handshake failed");
		return;
	}
	if (how == TLS_CLOSE_PROTOCOL || how == TLS_CLOSE_SYSCALL) {
		log_info("%s client=%s: %s", s->id, s->peer_ip,
		    detail[0] ? detail : "connection error");
		session_close(s, how == TLS_CLOSE_PROTOCOL ?
		    "TLS error" : "client connection error");
		return;
	}
	/* EOF (with or without close_notify): SPEC 8.6, no way back. */
	s->flags |= SF_CLIENT_EOF;
	bufferevent_disable(bev, EV_READ);
	if (s->flags & SF_TLS)
		tls_keep_writing(bev);
	/*
	 * Gone before the backend was ready (connecting, or its prelude:
	 * XCLIENT, STARTTLS towards it): with nothing sent there is nothing
	 * to relay.  What the client did send is held in its input, as any
	 * bytes are until then: a legacy script that pipelines its whole
	 * session and half-closes (printf ... | nc -N) has said all it had
	 * to say.  The backend becomes ready (or the next one, or the
	 * temporary failure), the held bytes are relayed, and once they
	 * are all out the half-close follows (session_flow()), as in RELAY.
	 */
	if (s->state != SESSION_ST_RELAY || filter_awaiting(s->filter)) {
		if (evbuffer_get_length(bufferevent_get_input(bev)) == 0)
			session_close(s, "client closed");
		return;
	}
	session_pump(s);
	if (s->state == SESSION_ST_RELAY)
		session_flow(s);
}

static void
session_backend_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session	*s = arg;
	char		 detail[256] = "";

	if (s->state == SESSION_ST_CLOSING)
		return;
	if ((s->flags & SF_BACKEND_TLS) && (what & BEV_EVENT_ERROR)) {
		/* One classification for both TLS legs (tls.c). */
		if (tls_classify_close(bev, what, detail, sizeof(detail)) <=
		    TLS_CLOSE_EOF)
			what = BEV_EVENT_EOF;
		else
			s->flags |= SF_BACKEND_TLS_ERR;
	}
	if (what & BEV_EVENT_ERROR) {
		if (detail[0] == '\0')
			snprintf(detail, sizeof(detail), "%s",
			    evutil_socket_error_to_string(
			    EVUTIL_SOCKET_ERROR()));
		/* Not ready yet (prelude): the next one, or a tempfail. */
		if (filter_awaiting(s->filter)) {
			log_error("%s backend %s: %s before it was ready",
			    s->id, s->backend_name, detail);
			session_backend_failed(s, "backend connection error");
			return;
		}
		log_info("%s backend %s: %s", s->id, s->backend_name, detail);
		session_close(s, "backend connection error");
		return;
	}
	/* EOF: relay what the backend said last, then end the session. */
	s->flags |= SF_BACKEND_EOF;
	session_pump(s);
	/* Closed, or gone on with another backend (or its handshake). */
	if (s->state != SESSION_ST_RELAY)
		return;
	if (filter_awaiting(s->filter)) {
		log_error("%s backend %s: closed before it was ready", s->id,
		    s->backend_name);
		session_backend_failed(s, "backend closed before it was ready");
		return;
	}
	session_close(s, (s->flags & SF_CLIENT_EOF) ?
	    "client closed" : "backend closed");
}

static void
session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session	*s = arg;

	switch (s->state) {
	case SESSION_ST_HANDSHAKE:
		log_info("%s client=%s: TLS handshake timeout", s->id,
		    s->peer_ip);
		metrics_handshake_failure(s, METRICS_HSF_TIMEOUT);
		session_close(s, "handshake timeout");
		break;
	case SESSION_ST_CONNECTING:
		backend_connect_timeout(s);
		break;
	case SESSION_ST_RELAY:
		if ((s->flags & (SF_GREET_HOLD | SF_GREET_DUE)) ==
		    SF_GREET_HOLD) {
			session_pump(s);	/* the greeting's turn, maybe */
			break;
		}
		/* A backend that never became ready: the next one. */
		if (filter_awaiting(s->filter)) {
			log_error("%s backend %s: not ready within "
			    "backend_connect_timeout %u s", s->id,
			    s->backend_name, s->svc->backend_connect_timeout);
			session_backend_failed(s, "backend not ready in time");
			break;
		}
		session_timeout(s);
		break;
	case SESSION_ST_CLOSING:
		session_closing_check(s);
		break;
	case SESSION_ST_PROXY:
		log_notice("%s proxy=%s: no PROXY header within %u s, closing",
		    s->id, s->peer_ip, s->svc->handshake_timeout);
		session_close(s, "PROXY header timeout");
		break;
	}
}

void
session_close(struct session *s, const char *reason)
{
	struct bufferevent	*under;
	struct timeval		 now, dur;
	char			 btls[512] = "";

	if (s->state == SESSION_ST_CLOSING)
		return;
	s->reason = reason ? reason : "unknown";
	gettimeofday(&now, NULL);
	timersub(&now, &s->started, &dur);
	/* SPEC 12: the server side's TLS facts, when there was TLS. */
	if ((s->flags & SF_BACKEND_TLS_UP) && s->bssl != NULL) {
		memcpy(btls, " backend_tls=", 14);
		tls_client_facts(s->bssl, btls + 13, sizeof(btls) - 13);
	}
	log_info("%s session end service=%s client=%s backend=%s in=%llu "
	    "out=%llu dur=%ld.%03lds reason=%s%s", s->id, s->svc->name,
	    s->peer_ip, s->backend_name ? s->backend_name : "-",
	    (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
	    (long)dur.tv_sec, (long)(dur.tv_usec / 1000), s->reason, btls);
	metrics_session_close(s, &dur);
	session_enter_state(s, SESSION_ST_CLOSING);
	session_proxy_free(s);

	if (s->backend)
		session_backend_free(s);
	if (s->client == NULL) {
		session_schedule_free(s);
		return;
	}
	/*
	 * Flush the client's last reply (a 421, a BYE, the backend's final
	 * words), then close_notify, bounded by the linger timeout.  The
	 * write callback and an output-buffer callback re-run the check.
	 */
	bufferevent_disable(s->client, EV_READ);
	bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
	if ((s->flags & SF_TLS) &&
	    (under = bufferevent_get_underlying(s->client)) != NULL)
		evbuffer_add_cb(bufferevent_get_output(under),
		    session_closing_out_cb, s);
	gettimeofday(&s->linger_until, NULL);
	s->linger_until.tv_sec += CLOSE_LINGER_TIMEOUT;
	session_arm(s, CLOSE_LINGER_TIMEOUT);
	if (session_flushed(s))
		session_schedule_free(s);
}

/*
 * Timer callback while closing, from the linger timeout or activated by a
 * drained buffer.  libevent deletes a non-persistent timer when its
 * callback runs, even if it was merely activated, so the deadline is kept
 * here and the timer re-armed for what is left of it.
 */
static void
session_closing_check(struct session *s)
{
	struct timeval	now, left;

	gettimeofday(&now, NULL);
	if (session_flushed(s) || s->client == NULL ||
	    !timercmp(&now, &s->linger_until, <)) {
		session_free(s);
		return;
	}
	timersub(&s->linger_until, &now, &left);
	event_add(s->timer, &left);
}

/*
 * bytes_out counts what was queued for the client; a TLS bufferevent may
 * encrypt it away before the pump could measure the buffer.
 */
static void
session_count_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct session	*s = arg;

	s->bytes_out += info->n_added;
}

static void
session_closing_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct session	*s = arg;

	if (info->n_deleted > 0 && evbuffer_get_length(buf) == 0)
		event_active(s->timer, EV_TIMEOUT, 0);
}

/* True when everything queued for the client has left for the socket. */
static int
session_flushed(struct session *s)
{
	struct bufferevent	*under;

	if (s->client == NULL)
		return 1;
	if (evbuffer_get_length(bufferevent_get_output(s->client)) != 0)
		return 0;
	if (!(s->flags & SF_TLS))
		return 1;
	if ((s->flags & SF_TLS_UP) && !(s->flags & SF_SSL_SHUTDOWN)) {
		s->flags |= SF_SSL_SHUTDOWN;
		/* Queue close_notify behind the data; the peer may be gone. */
		if (SSL_shutdown(s->ssl) < 0)
			ERR_clear_error();
	}
	under = bufferevent_get_underlying(s->client);
	return under == NULL ||
	    evbuffer_get_length(bufferevent_get_output(under)) == 0;
}

static void
session_free(struct session *s)
{
	struct bufferevent	*under;

	session_proxy_free(s);	/* its event watches the client's fd */
	if (s->client) {
		if ((s->flags & SF_TLS) &&
		    (under = bufferevent_get_underlying(s->client)) != NULL)
			evbuffer_remove_cb(bufferevent_get_output(under),
			    session_closing_out_cb, s);
		bufferevent_free(s->client);
	}
	if (s->backend)
		session_backend_free(s);
	backend_release(s);
	if (s->filter)
		filter_free(s->filter);
	if (s->timer)
		event_free(s->timer);
	if (s->flags & SF_COUNTED) {
		listener_release(s->srt, (s->flags & SF_IP_COUNTED) ?
		    (struct sockaddr *)&s->peer : NULL);
	}
	metrics_session_end(s);
	worker_session_remove(s->worker, s);
	runtime_unref(s->rt);
	free(s);
}

/*
 * Free the backend leg.  A TLS leg that ended without a TLS error is
 * shut down first: OpenSSL marks the session of a connection freed
 * without SSL_shutdown() as not resumable (it could have been cut by an
 * attacker), and the client-side cache (tls.c) holds that very session.
 * The close_notify goes into the socket's output as the connection is
 * closed; best effort, the peer may not read it.
 */
static void
session_backend_free(struct session *s)
{
	if ((s->flags & (SF_BACKEND_TLS_UP | SF_BACKEND_TLS_ERR)) ==
	    SF_BACKEND_TLS_UP && s->bssl != NULL &&
	    !(s->flags & SF_BACKEND_SHUTDOWN)) {
		s->flags |= SF_BACKEND_SHUTDOWN;
		if (SSL_shutdown(s->bssl) < 0)
			ERR_clear_error();
	}
	bufferevent_free(s->backend);
	s->backend = NULL;
	s->bssl = NULL;
}

/* Free the backend leg and forget everything about it. */
static void
session_backend_drop(struct session *s)
{
	if (s->backend != NULL)
		session_backend_free(s);
	s->flags &= ~(SF_BACKEND_UP | SF_BACKEND_EOF | SF_BACKEND_READ_OFF |
	    SF_SHUTWR_BACKEND | SF_BACKEND_TLS | SF_BACKEND_TLS_UP |
	    SF_BACKEND_SHUTDOWN | SF_BACKEND_TLS_ERR | SF_BACKEND_STARTTLS);
	timerclear(&s->prelude_until);
}

void
session_abandon(struct session *s)
{
	session_free(s);
}
