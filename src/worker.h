/*
 * worker.h - event-loop workers.
 */
#ifndef WORKER_H
#define WORKER_H

#include <sys/queue.h>
#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>
#include <event2/listener.h>

struct listener_ctx;
struct runtime;
struct session;
struct stats_worker;

TAILQ_HEAD(session_list, session);

struct worker {
	unsigned		 index;
	pthread_t		 thread;
	struct event_base	*base;
	struct event		*ctl;		/* reads wake_fd */
	int			 wake_fd;	/* eventfd: the main thread's wake-up */
	struct event		*drain_timer;	/* shutdown_timeout */
	struct listener_ctx	**listeners;
	size_t			 nlisteners;
	struct runtime		*rt;		/* for new connections (a reference) */
	struct runtime *_Atomic	 next_rt;	/* reload: switch to this one */
	struct session_list	 sessions;
	unsigned		 nsessions;
	atomic_int		 stopping;
	int			 drain_started;	/* worker thread only */
	struct stats_worker	*stats;		/* stats.c, kept while draining */
};

/* Daemon-wide connection count (max_connections). */
extern atomic_uint	worker_total_conns;

int	workers_start(struct runtime *, unsigned n);
void	workers_stop(unsigned shutdown_timeout);	/* from the main thread */
/* Reload: every worker moves its listeners to rt.  -1 if one is running. */
int	workers_reload(struct runtime *);
void	workers_join(void);
unsigned workers_sessions(void);

/* Called by session.c. */
void	worker_session_add(struct worker *, struct session *);
void	worker_session_remove(struct worker *, struct session *);

#endif /* WORKER_H */
