/*
 * audit.h - the -t check: usability and the hardening audit (SPEC 7).
 */
#ifndef AUDIT_H
#define AUDIT_H

struct conf;

enum audit_severity {
	AUDIT_WARNING = 0,	/* usable, but below policy */
	AUDIT_ERROR,		/* not usable */
};

/*
 * One finding.  file/line point into the configuration when the finding
 * is about one section (line 0: about the whole daemon).
 */
typedef void	(*audit_cb)(void *arg, enum audit_severity, const char *file,
		    int line, const char *msg);

/*
 * Run every check that needs no socket: certificates and keys (readable,
 * matching, dates, names, chain, strength), profiles and overrides on
 * client-facing services, DH parameters, privileges.  Returns the number
 * of errors reported.
 */
int	audit_conf(const struct conf *, audit_cb, void *arg);

#endif /* AUDIT_H */
