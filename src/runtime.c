/*
 * runtime.c - what a configuration becomes at run time.
 *
 * A runtime owns the immutable conf, the TLS contexts built from it and
 * the per-service counters.  Sessions hold a reference, so a runtime lives
 * as long as the last session that started on it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "session.h"
#include "tls.h"

struct runtime *
runtime_new(struct conf *conf, char *err, size_t errlen)
{
	struct runtime	*rt;
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
	for (i = 0; i < conf->ntls; i++) {
		char	msg[1024];

		rt->tls[i] = tls_server_new(&conf->tls[i], msg, sizeof(msg));
		if (rt->tls[i] == NULL) {
			/* Point at the section, as for any other error. */
			snprintf(err, errlen, "%s:%d: %s", conf->file,
			    conf->tls[i].line, msg);
			goto fail;
		}
	}
	for (i = 0; i < conf->nservices; i++) {
		struct service_rt *srt = &rt->services[i];

		srt->svc = &conf->services[i];
		srt->ops = proto_ops_get(srt->svc->protocol);
		for (j = 0; j < conf->ntls; j++)
			if (&conf->tls[j] == srt->svc->tls)
				srt->tls = rt->tls[j];
		if ((srt->per_ip = iptable_new()) == NULL)
			goto nomem;
		if (srt->tls == NULL) {
			snprintf(err, errlen, "service '%s': no tls section",
			    srt->svc->name);
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

int
runtime_bind(struct runtime *rt, char *err, size_t errlen)
{
	size_t	i;

	for (i = 0; i < rt->nservices; i++)
		if (listener_bind(rt->services[i].svc, &rt->services[i].fds,
		    &rt->services[i].nfds, err, errlen) == -1)
			return -1;
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

void
runtime_free(struct runtime *rt)
{
	size_t	i, j;

	if (rt->services)
		for (i = 0; i < rt->nservices; i++) {
			for (j = 0; j < rt->services[i].nfds; j++)
				close(rt->services[i].fds[j]);
			free(rt->services[i].fds);
			iptable_free(rt->services[i].per_ip);
		}
	if (rt->tls)
		for (i = 0; i < rt->ntls; i++)
			if (rt->tls[i])
				tls_server_free(rt->tls[i]);
	free(rt->tls);
	free(rt->services);
	if (rt->conf)
		conf_free(rt->conf);
	free(rt);
}

/* Stop listening for good (shutdown): new connections are refused. */
void
runtime_close_listeners(struct runtime *rt)
{
	size_t	i, j;

	for (i = 0; i < rt->nservices; i++) {
		for (j = 0; j < rt->services[i].nfds; j++)
			close(rt->services[i].fds[j]);
		rt->services[i].nfds = 0;
	}
}
