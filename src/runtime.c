/*
 * runtime.c - what a configuration becomes at run time.
 *
 * A runtime owns the immutable conf, the TLS contexts built from it and
 * its listening sockets; workers and sessions hold references, so a
 * runtime lives as long as the last session that started on it.
 *
 * Reload (SIGHUP) builds a complete new runtime next to the running one
 * and only then swaps it in: certificates are re-read, a listening socket
 * whose address stays is handed over (no connection is refused during the
 * swap), new addresses are bound, and any failure leaves the running
 * runtime untouched.  Connection counters follow the service name.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addrtable.h"
#include "iptable.h"
#include "listener.h"
#include "sdnotify.h"
#include "log.h"
#include "mailtlsd.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "tls.h"

/* Sockets from systemd, taken once at startup; never closed by a runtime. */
static struct sd_socket	*activated;
static size_t		 nactivated;

void
runtime_set_activated(struct sd_socket *s, size_t n)
{
	activated = s;
	nactivated = n;
}

static size_t
runtime_count_activated(const char *name)
{
	size_t	i, n = 0;

	for (i = 0; i < nactivated; i++)
		if (strcmp(activated[i].name, name) == 0)
			n++;
	return n;
}

static struct service_counters *
runtime_counters(struct runtime *old, const char *name)
{
	struct service_counters	*ctr;
	size_t			 i;

	if (old != NULL)
		for (i = 0; i < old->nservices; i++)
			if (strcmp(old->services[i].svc->name, name) == 0) {
				ctr = old->services[i].ctr;
				atomic_fetch_add(&ctr->refs, 1);
				return ctr;
			}
	if ((ctr = calloc(1, sizeof(*ctr))) == NULL)
		return NULL;
	/*
	 * The address table is calloc'd whole: its pages become resident
	 * only as addresses arrive, and a reload may turn the limits on.
	 */
	if ((ctr->per_ip = iptable_new()) == NULL ||
	    (ctr->limits = addrtable_new(ADDRTABLE_MAX)) == NULL) {
		iptable_free(ctr->per_ip);
		free(ctr);
		return NULL;
	}
	atomic_init(&ctr->refs, 1);
	return ctr;
}

static void
runtime_counters_unref(struct service_counters *ctr)
{
	if (ctr != NULL && atomic_fetch_sub(&ctr->refs, 1) == 1) {
		iptable_free(ctr->per_ip);
		addrtable_free(ctr->limits);
		free(ctr);
	}
}

/* The tls section of this name before the reload, or NULL. */
static const struct tls_server *
runtime_old_tls(const struct runtime *old, const char *name)
{
	size_t	i;

	if (old == NULL)
		return NULL;
	for (i = 0; i < old->ntls; i++)
		if (strcmp(old->conf->tls[i].name, name) == 0)
			return old->tls[i];
	return NULL;
}

static int
runtime_build_tls(struct runtime *rt, const struct runtime *old, char *err,
    size_t errlen)
{
	const struct conf	*conf = rt->conf;
	char			 msg[1024];
	size_t			 i;

	for (i = 0; i < conf->ntls; i++) {
		rt->tls[i] = tls_server_new(&conf->tls[i],
		    runtime_old_tls(old, conf->tls[i].name), msg, sizeof(msg));
		if (rt->tls[i] == NULL) {
			/* Point at the section, as for any other error. */
			snprintf(err, errlen, "%s:%d: %s", conf->file,
			    conf->tls[i].line, msg);
			return -1;
		}
	}
	return 0;
}

struct runtime *
runtime_new(struct conf *conf, struct runtime *old, char *err, size_t errlen)
{
	struct runtime	*rt;
	char		 msg[1024];
	size_t		 i, j;

	if ((rt = calloc(1, sizeof(*rt))) == NULL)
		goto nomem;
	atomic_init(&rt->refs, 1);
	rt->conf = conf;
	rt->tls = calloc(conf->ntls ? conf->ntls : 1, sizeof(*rt->tls));
	rt->services = calloc(conf->nservices, sizeof(*rt->services));
	if (rt->tls == NULL || rt->services == NULL)
		goto nomem;
	rt->nservices = conf->nservices;
	rt->ntls = conf->ntls;
	if (runtime_build_tls(rt, old, err, errlen) == -1)
		goto fail;
	if ((rt->certs = metrics_certs_load(conf)) == NULL)
		goto nomem;
	for (i = 0; i < conf->nservices; i++) {
		struct service_rt *srt = &rt->services[i];

		srt->svc = &conf->services[i];
		srt->ops = proto_ops_get(srt->svc->protocol);
		for (j = 0; j < conf->ntls; j++)
			if (&conf->tls[j] == srt->svc->tls)
				srt->tls = rt->tls[j];
		if ((srt->ctr = runtime_counters(old, srt->svc->name)) == NULL ||
		    (srt->metrics = metrics_service(srt->svc)) == NULL)
			goto nomem;
		if (srt->tls == NULL && srt->svc->tls_mode != TLS_MODE_NONE) {
			snprintf(err, errlen, "service '%s': no tls section",
			    srt->svc->name);
			goto fail;
		}
		if (srt->svc->backend_tls != BACKEND_TLS_NONE &&
		    (srt->btls = tls_client_new(srt->svc, msg,
		    sizeof(msg))) == NULL) {
			snprintf(err, errlen, "%s:%d: %s", conf->file,
			    srt->svc->line, msg);
			goto fail;
		}
	}
	return rt;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	if (rt) {
		rt->conf = NULL;	/* the caller still owns conf */
		runtime_free(rt);
	}
	return NULL;
}

static int
runtime_endpoint_equal(const struct conf_endpoint *a,
    const struct conf_endpoint *b)
{
	return a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
}

/* A listening socket of the old runtime for this address, or NULL. */
static int *
runtime_find_fd(struct runtime *old, const struct conf_endpoint *ep)
{
	size_t	i, j;

	if (old == NULL)
		return NULL;
	for (i = 0; i < old->nservices; i++) {
		struct service_rt *o = &old->services[i];

		for (j = 0; j < o->svc->nlisten; j++)
			if (o->fds[j] != -1 &&
			    runtime_endpoint_equal(&o->svc->listen[j], ep))
				return &o->fds[j];
	}
	return NULL;
}

/*
 * Two passes, so that a failure changes nothing: bind what is new, and
 * only when all of it worked take over the sockets that stay.
 */
int
runtime_bind(struct runtime *rt, struct runtime *old, char *err,
    size_t errlen)
{
	size_t	i, j;

	for (i = 0; i < rt->nservices; i++) {
		struct service_rt *srt = &rt->services[i];
		size_t nact = runtime_count_activated(srt->svc->name);

		if (srt->svc->nlisten + nact == 0) {
			snprintf(err, errlen, "%s:%d: service '%s': no listen "
			    "address, and systemd passed no socket named '%s'",
			    rt->conf->file, srt->svc->line, srt->svc->name,
			    srt->svc->name);
			return -1;
		}
		srt->fds = calloc(srt->svc->nlisten + nact, sizeof(*srt->fds));
		if (srt->fds == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		srt->nfds = srt->svc->nlisten;
		for (j = 0; j < srt->nfds; j++) {
			srt->fds[j] = -1;
			if (runtime_find_fd(old, &srt->svc->listen[j]))
				continue;
			srt->fds[j] = listener_bind(srt->svc,
			    &srt->svc->listen[j], err, errlen);
			if (srt->fds[j] == -1)
				return -1;	/* runtime_free() closes the rest */
		}
	}
	for (i = 0; i < rt->nservices; i++) {
		struct service_rt *srt = &rt->services[i];

		for (j = 0; j < srt->nfds; j++) {
			int *ofd;

			if (srt->fds[j] != -1)
				continue;
			ofd = runtime_find_fd(old, &srt->svc->listen[j]);
			srt->fds[j] = *ofd;
			*ofd = -1;
		}
		/* Sockets systemd holds for us: after the service's own. */
		for (j = 0; j < nactivated; j++)
			if (strcmp(activated[j].name, srt->svc->name) == 0) {
				srt->fds[srt->nfds++] = activated[j].fd;
				activated[j].claimed = 1;
			}
	}
	return 0;
}

void
runtime_ref(struct runtime *rt)
{
	atomic_fetch_add(&rt->refs, 1);
}

void
runtime_unref(struct runtime *rt)
{
	if (atomic_fetch_sub(&rt->refs, 1) == 1)
		runtime_free(rt);
}

/*
 * Stop listening for good (shutdown, or the runtime was replaced): the
 * sockets not handed to a newer runtime are closed, so the kernel refuses
 * new connections instead of queueing them.
 */
void
runtime_close_listeners(struct runtime *rt)
{
	size_t	i, j;

	/*
	 * Only the sockets we bound: those from systemd stay open, so the
	 * socket unit keeps queueing connections for the next start.
	 */
	for (i = 0; i < rt->nservices; i++)
		for (j = 0; j < rt->services[i].nfds &&
		    j < rt->services[i].svc->nlisten; j++)
			if (rt->services[i].fds[j] != -1) {
				close(rt->services[i].fds[j]);
				rt->services[i].fds[j] = -1;
			}
}

void
runtime_free(struct runtime *rt)
{
	size_t	i;

	if (rt->services) {
		runtime_close_listeners(rt);
		for (i = 0; i < rt->nservices; i++) {
			free(rt->services[i].fds);
			runtime_counters_unref(rt->services[i].ctr);
			tls_client_free(rt->services[i].btls);
		}
	}
	if (rt->tls)
		for (i = 0; i < rt->ntls; i++)
			if (rt->tls[i])
				tls_server_free(rt->tls[i]);
	free(rt->tls);
	free(rt->services);
	metrics_certs_free(rt->certs);
	if (rt->conf)
		conf_free(rt->conf);
	free(rt);
}
