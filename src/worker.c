/*
 * worker.c - event-loop workers.
 *
 * `workers` threads, each with its own event_base, all listening on the
 * same sockets.  A session lives and dies on the worker that accepted it,
 * so session state is never shared between threads; what is shared (the
 * connection counters and the per-IP tables) is atomic or locked.
 *
 * Stopping (SIGTERM): the main thread wakes every worker through its ctl
 * event; the worker stops accepting, waits up to shutdown_timeout for its
 * sessions to end, then closes the rest and leaves its loop.
 *
 * A worker's event_base is touched by its own thread only, so it is
 * created without locks (EVENT_BASE_FLAG_NOLOCK: no mutex around every
 * event_add, event_del and deferred callback of the relay).  The one
 * thing another thread does to a worker is to wake it: the main thread
 * writes to the worker's eventfd (worker_wake), which its ctl event
 * reads; never event_active() or any other libevent call on a worker's
 * base from outside.  Anything that needs another wake-up (a resolver
 * thread, say) must do the same: a descriptor, not a call into the base.
 */
#include "config.h"

#include <sys/eventfd.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "lineio.h"
#include "listener.h"
#include "log.h"
#include "mailtlsd.h"
#include "runtime.h"
#include "session.h"
#include "stats.h"
#include "worker.h"

atomic_uint	worker_total_conns;

static struct worker	*workers;
static unsigned		 nworkers;
static unsigned		 shutdown_secs;
static atomic_uint	 listening_workers;
static atomic_uint	 switching_workers;	/* a reload in progress */

static void	*worker_main(void *);
static void	 worker_ctl_cb(evutil_socket_t, short, void *);
static void	 worker_drain_cb(evutil_socket_t, short, void *);
static void	 worker_check_done(struct worker *);
static void	 worker_detach_all(struct worker *);

/*
 * A loop for one thread: no locks, no cross-thread notification; epoll
 * updates batched.
 */
static struct event_base *
worker_base_new(void)
{
	struct event_config	*cfg;
	struct event_base	*base;

	if ((cfg = event_config_new()) == NULL)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	/*
	 * epoll changes go to the kernel once per turn of the loop, merged
	 * (a write event added and removed in one turn costs nothing).  The
	 * changelist's known trap is a dup()ed descriptor, which mailtlsd
	 * never registers.
	 */
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

/* From another thread: make the worker run worker_ctl_cb(). */
static void
worker_wake(struct worker *w)
{
	uint64_t	one = 1;

	/* EAGAIN: the counter is full, so a wake-up is pending anyway. */
	while (write(w->wake_fd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

static int
worker_listen(struct worker *w, struct runtime *rt)
{
	size_t	i, j, n = 0;

	for (i = 0; i < rt->nservices; i++)
		n += rt->services[i].nfds;
	w->listeners = calloc(n ? n : 1, sizeof(*w->listeners));
	if (w->listeners == NULL)
		return -1;
	for (i = 0; i < rt->nservices; i++)
		for (j = 0; j < rt->services[i].nfds; j++) {
			w->listeners[w->nlisteners] = listener_attach(w,
			    &rt->services[i], rt->services[i].fds[j]);
			if (w->listeners[w->nlisteners] == NULL)
				return -1;
			w->nlisteners++;
		}
	return 0;
}

int
workers_start(struct runtime *rt, unsigned n)
{
	sigset_t	 all, old;
	unsigned	 i;

	if ((workers = calloc(n, sizeof(*workers))) == NULL)
		return -1;
	nworkers = n;
	atomic_store(&listening_workers, n);
	for (i = 0; i < n; i++) {
		struct worker *w = &workers[i];

		w->index = i;
		w->rt = rt;
		runtime_ref(rt);
		TAILQ_INIT(&w->sessions);
		w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->wake_fd == -1 || (w->base = worker_base_new()) == NULL)
			return -1;
		w->ctl = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST,
		    worker_ctl_cb, w);
		w->drain_timer = evtimer_new(w->base, worker_drain_cb, w);
		if (w->ctl == NULL || w->drain_timer == NULL ||
		    event_add(w->ctl, NULL) == -1 || worker_listen(w, rt) == -1 ||
		    stats_attach(w) == -1)
			return -1;
	}
	/* Signals belong to the main thread only. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (i = 0; i < n; i++)
		if (pthread_create(&workers[i].thread, NULL, worker_main,
		    &workers[i]) != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			log_error("cannot start worker %u", i);
			return -1;
		}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	log_debug("%u workers started", n);
	return 0;
}

static void *
worker_main(void *arg)
{
	struct worker	*w = arg;
	struct session	*s;
	int		 i;

	event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);

	/* Sessions still here were past their linger time. */
	while ((s = TAILQ_FIRST(&w->sessions)) != NULL)
		session_abandon(s);
	worker_detach_all(w);
	stats_detach(w);
	/*
	 * A bufferevent with deferred callbacks is only released by the
	 * loop; give it the turns it needs, without waiting for anything.
	 */
	for (i = 0; i < 8; i++)
		event_base_loop(w->base, EVLOOP_NONBLOCK);
	/* The line buffers the protocols borrowed (lineio_scratch()). */
	lineio_scratch_free();
	return NULL;
}

void
workers_stop(unsigned timeout)
{
	unsigned	i;

	shutdown_secs = timeout;
	for (i = 0; i < nworkers; i++) {
		atomic_store(&workers[i].stopping, 1);
		worker_wake(&workers[i]);
	}
}

int
workers_reload(struct runtime *rt)
{
	unsigned	i;

	if (atomic_load(&switching_workers) != 0)
		return -1;
	atomic_store(&switching_workers, nworkers);
	for (i = 0; i < nworkers; i++) {
		runtime_ref(rt);
		atomic_store(&workers[i].next_rt, rt);
		worker_wake(&workers[i]);
	}
	return 0;
}

static void
worker_detach_all(struct worker *w)
{
	size_t	i;

	for (i = 0; i < w->nlisteners; i++)
		listener_detach(w->listeners[i]);
	w->nlisteners = 0;
	free(w->listeners);
	w->listeners = NULL;
}

/*
 * In the worker thread: move the listeners to the new runtime.  Sessions
 * keep the runtime they started with.  The last worker to let go of the
 * old runtime closes its sockets that the new one did not take over.
 */
static void
worker_switch(struct worker *w, struct runtime *rt)
{
	struct runtime	*old = w->rt;

	worker_detach_all(w);
	w->rt = rt;
	if (!atomic_load(&w->stopping) && worker_listen(w, rt) == -1)
		log_error("worker %u: cannot listen after reload", w->index);
	if (atomic_fetch_sub(&switching_workers, 1) == 1)
		runtime_close_listeners(old);
	runtime_unref(old);
}

/* In the worker thread: a reload, or stop accepting and drain. */
static void
worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct runtime	*rt;
	struct timeval	 tv = { (time_t)shutdown_secs, 0 };
	uint64_t	 n;

	/* Reset the counter; what to do is in next_rt and stopping. */
	while (read(w->wake_fd, &n, sizeof(n)) == -1 && errno == EINTR)
		;
	if ((rt = atomic_exchange(&w->next_rt, NULL)) != NULL)
		worker_switch(w, rt);
	if (!atomic_load(&w->stopping) || w->drain_started)
		return;
	w->drain_started = 1;
	worker_detach_all(w);
	/*
	 * The last worker to let go of the sockets closes them, so the
	 * kernel refuses new connections instead of queueing them.
	 */
	if (atomic_fetch_sub(&listening_workers, 1) == 1)
		runtime_close_listeners(w->rt);
	event_del(w->ctl);
	evtimer_add(w->drain_timer, &tv);
	worker_check_done(w);
}

/* shutdown_timeout reached: close what is left, give it the linger time. */
static void
worker_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct session	*s, *next;
	struct timeval	 tv = { CLOSE_LINGER_TIMEOUT + 1, 0 };

	if (w->nsessions > 0)
		log_notice("worker %u: closing %u sessions at shutdown",
		    w->index, w->nsessions);
	/* session_close() never frees synchronously: the walk is safe. */
	for (s = TAILQ_FIRST(&w->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		session_close(s, "shutdown");
	}
	event_base_loopexit(w->base, &tv);
}

static void
worker_check_done(struct worker *w)
{
	if (atomic_load(&w->stopping) && w->nsessions == 0)
		event_base_loopbreak(w->base);
}

void
worker_session_add(struct worker *w, struct session *s)
{
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
}

void
worker_session_remove(struct worker *w, struct session *s)
{
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	worker_check_done(w);
}

unsigned
workers_sessions(void)
{
	return atomic_load(&worker_total_conns);
}

void
workers_join(void)
{
	unsigned	i;

	for (i = 0; i < nworkers; i++)
		pthread_join(workers[i].thread, NULL);
	for (i = 0; i < nworkers; i++) {
		struct worker	*w = &workers[i];
		struct runtime	*rt;

		if ((rt = atomic_exchange(&w->next_rt, NULL)) != NULL)
			runtime_unref(rt);
		runtime_unref(w->rt);
		event_free(w->ctl);
		event_free(w->drain_timer);
		event_base_free(w->base);
		close(w->wake_fd);
	}
	free(workers);
	workers = NULL;
	nworkers = 0;
}
