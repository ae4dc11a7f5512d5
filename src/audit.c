/*
 * audit.c - the -t check: usability and the hardening audit (SPEC 7).
 *
 * Findings are reported one per line with a severity; an error makes the
 * configuration unusable (exit 1), a warning does not.
 */
#include "config.h"

#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "conf.h"
#include "tls.h"

struct audit_tls_ctx {
	const struct conf	*conf;
	const struct conf_tls	*tls;
	audit_cb		 cb;
	void			*arg;
	int			 errors;
};

static void
audit_tls_finding(void *arg, int is_error, const char *msg)
{
	struct audit_tls_ctx	*ctx = arg;

	ctx->cb(ctx->arg, is_error ? AUDIT_ERROR : AUDIT_WARNING,
	    ctx->conf->file, ctx->tls->line, msg);
	if (is_error)
		ctx->errors++;
}

static int
audit_tls(const struct conf *conf, audit_cb cb, void *arg)
{
	struct audit_tls_ctx	 ctx = { conf, NULL, cb, arg, 0 };
	size_t			 i;

	for (i = 0; i < conf->ntls; i++) {
		int before = ctx.errors;

		ctx.tls = &conf->tls[i];
		if (tls_check(ctx.tls, audit_tls_finding, &ctx) == -1 &&
		    ctx.errors == before)
			audit_tls_finding(&ctx, 1, "TLS section not usable");
	}
	return ctx.errors;
}

static int
audit_privileges(const struct conf *conf, audit_cb cb, void *arg)
{
	if (conf->user == NULL) {
		/* main.c refuses to start as root without one. */
		cb(arg, geteuid() == 0 ? AUDIT_ERROR : AUDIT_WARNING,
		    conf->file, 0, "no 'user' set: mailtlsd refuses to run as "
		    "root without one (user = \"root\" to do so deliberately)");
		return geteuid() == 0 ? 1 : 0;
	}
	if (strcmp(conf->user, "root") == 0)
		cb(arg, AUDIT_WARNING, conf->file, 0, "user = \"root\": the "
		    "daemon would keep running as root");
	return 0;
}

int
audit_conf(const struct conf *conf, audit_cb cb, void *arg)
{
	int	errors = 0;

	errors += audit_tls(conf, cb, arg);
	errors += audit_privileges(conf, cb, arg);
	return errors;
}
