/*
 * main.c - command line, configuration, privileges, signals.
 *
 * Order of startup (OpenSMTPD's habit: everything that can fail is done
 * before anything is bound, and everything that needs root is done before
 * privileges are dropped):
 *   parse -> build TLS contexts (keys read as root) -> bind -> pid file ->
 *   drop group, then user (keeping CAP_NET_ADMIN only for backend_source
 *   = "client") -> start workers -> READY.
 * mailtlsd always stays in the foreground (SPEC section 1).
 */
#include "config.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <confuse.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "audit.h"
#include "backend.h"
#include "conf.h"
#include "dane.h"
#include "log.h"
#include "mailtlsd.h"
#include "sdnotify.h"
#include "runtime.h"
#include "session.h"
#include "stats.h"
#include "metrics.h"
#include "tls.h"
#include "worker.h"

static void	usage(FILE *, int) __attribute__((noreturn));
static void	print_versions(void);
static int	check_config(struct conf *);
static void	raise_nofile(const struct conf *);
static void	enter_chroot(const char *);
static int	keep_net_admin_begin(const struct conf *);
static void	keep_net_admin_end(void);
static void	drop_privileges(const struct conf *);
static void	check_transparent(const struct conf *);
static void	write_pid_file(const char *);
static void	signal_cb(evutil_socket_t, short, void *);
static void	reload(void);
static void	warn_dane(const struct conf *);
static void	warn_dane_finding(void *, const char *);
static void	warn_unclaimed_sockets(void);
static void	status_cb(evutil_socket_t, short, void *);

static const char	*pid_file_written;
static const char	*conf_path;
static struct runtime	*current_rt;	/* the newest runtime (a reference) */
static int		 debug_logging;
static struct sd_socket	*activated;	/* from systemd, for the process' life */
static size_t		 nactivated;

static void
usage(FILE *fp, int status)
{
	fprintf(fp,
	    "usage: mailtlsd [-c FILE] [-t] [-d] [-V] [-h]\n"
	    "  -c FILE  configuration file (default: %s)\n"
	    "  -t       check the configuration and exit (0 if usable)\n"
	    "  -d       debug logging to stderr\n"
	    "  -V       print versions and exit\n"
	    "  -h       this help\n", MAILTLSD_CONF_DEFAULT);
	exit(status);
}

static void
print_versions(void)
{
	printf("mailtlsd %s\n", PACKAGE_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("%s\n", tls_library_version());
	printf("libconfuse %s\n", confuse_version);
}

static void
check_finding(void *arg, enum audit_severity sev, const char *file, int line,
    const char *msg)
{
	const char	*what = sev == AUDIT_ERROR ? "error" : "warning";

	if (line > 0)
		printf("%s:%d: %s: %s\n", file, line, what, msg);
	else
		printf("%s: %s\n", what, msg);
}

/*
 * -t: everything short of binding.  After the audit the TLS contexts are
 * built exactly as for a real start, so whatever would stop the daemon
 * from starting stops the check too.
 */
static int
check_config(struct conf *conf)
{
	struct runtime	*rt;
	char		 err[1024];
	int		 errors;

	errors = audit_conf(conf, check_finding, NULL);
	if (errors == 0) {
		if ((rt = runtime_new(conf, NULL, err, sizeof(err))) == NULL) {
			check_finding(NULL, AUDIT_ERROR, conf->file, 0, err);
			errors++;
			conf_free(conf);
		} else
			runtime_free(rt);
	} else
		conf_free(conf);
	printf("configuration %s\n", errors ? "NOT usable" : "OK");
	return errors ? 1 : 0;
}

/*
 * Two descriptors per session (client and backend; a session waiting for
 * a TLSA answer holds the eventfd of its wait in place of the backend
 * socket, see dane.h), the resolver threads' sockets when a service has
 * backend_dane, plus a reserve.  The soft limit is raised to what the
 * configuration needs, up to the hard limit (as nginx and HAProxy do),
 * never lowered; only a hard limit too low for max_connections is worth
 * a warning (issue 10 item 7: a soft limit of 1024 under a generous hard
 * limit is every stock system's).
 */
static void
raise_nofile(const struct conf *conf)
{
	struct rlimit	 rl;
	rlim_t		 want = (rlim_t)conf->max_connections * 2 + FD_RESERVE;
	rlim_t		 was;
	size_t		 i;

	for (i = 0; i < conf->nservices; i++)
		if (conf->services[i].backend_dane) {
			want += DANE_FDS;
			break;
		}

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit RLIMIT_NOFILE");
		return;
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max != RLIM_INFINITY &&
		    rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			log_warn("setrlimit RLIMIT_NOFILE %llu",
			    (unsigned long long)rl.rlim_cur);
			rl.rlim_cur = was;
		} else
			log_debug("open files limit raised from %llu to %llu",
			    (unsigned long long)was,
			    (unsigned long long)rl.rlim_cur);
	}
	if (rl.rlim_cur < want)
		log_warnx("open files limit %llu (hard limit %llu) is below "
		    "what max_connections %u needs (%llu); connections beyond "
		    "it wait", (unsigned long long)rl.rlim_cur,
		    (unsigned long long)rl.rlim_max, conf->max_connections,
		    (unsigned long long)want);
}

/*
 * After the keys are loaded, the sockets bound and the user looked up:
 * from here on the daemon sees only the jail.  A reload re-reads the
 * configuration and certificates at the same paths inside it (as
 * Postfix's chroot jail needs its own copies).
 */
static void
enter_chroot(const char *dir)
{
	if (chroot(dir) == -1 || chdir("/") == -1)
		fatal("cannot chroot to %s", dir);
	log_info("chrooted to %s", dir);
}

/*
 * backend_source = "client" makes IP_TRANSPARENT sockets per session,
 * long after the drop, so CAP_NET_ADMIN has to survive setresuid(), which
 * otherwise clears every capability.  Only that one is kept, and only
 * when the configuration needs it and we have it.  No libcap: the two raw
 * system calls are all it takes.  Capabilities (and KEEPCAPS) belong to
 * the calling thread: this runs in the main thread before workers_start(),
 * so the workers, which make the sockets, inherit the result.  Returns
 * whether the capability is being kept.
 */
static int
keep_net_admin_begin(const struct conf *conf)
{
	struct __user_cap_header_struct	 hdr = {
		_LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct	 data[2];

	if (!backend_uses_transparent(conf))
		return 0;
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) == -1 ||
	    (data[0].permitted & (1U << CAP_NET_ADMIN)) == 0)
		return 0;	/* check_transparent() will say so */
	if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) == -1)
		fatal("prctl(PR_SET_KEEPCAPS)");
	return 1;
}

/* After setresuid(): CAP_NET_ADMIN permitted and effective, nothing else. */
static void
keep_net_admin_end(void)
{
	struct __user_cap_header_struct	 hdr = {
		_LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct	 data[2];

	memset(data, 0, sizeof(data));
	data[0].permitted = data[0].effective = 1U << CAP_NET_ADMIN;
	if (syscall(SYS_capset, &hdr, data) == -1)
		fatal("cannot keep CAP_NET_ADMIN for backend_source");
	if (prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L) == -1)
		fatal("prctl(PR_SET_KEEPCAPS)");
}

/*
 * Fail at startup rather than on every session: without the capability
 * each backend connection of a "client" service would fail.
 */
static void
check_transparent(const struct conf *conf)
{
	char	 err[256];

	if (backend_uses_transparent(conf) &&
	    backend_transparent_check(err, sizeof(err)) == -1)
		fatalx("%s: see \"backend_source\" in doc/deployment.md", err);
}

static void
drop_privileges(const struct conf *conf)
{
	int		 keep;
	struct passwd	*pw;
	struct group	*gr;
	gid_t		 gid;

	if (conf->user == NULL) {
		/* Serving the Internet as root is never a default. */
		if (geteuid() == 0)
			fatalx("refusing to run as root without 'user' (set "
			    "user = \"root\" to do so deliberately)");
		return;
	}
	if (strcmp(conf->user, "root") == 0 && conf->group == NULL) {
		log_warnx("user = \"root\": running as root, as configured");
		if (conf->chroot != NULL)
			enter_chroot(conf->chroot);
		return;
	}
	if ((pw = getpwnam(conf->user)) == NULL)
		fatalx("user '%s' does not exist", conf->user);
	gid = pw->pw_gid;
	if (conf->group != NULL) {
		if ((gr = getgrnam(conf->group)) == NULL)
			fatalx("group '%s' does not exist", conf->group);
		gid = gr->gr_gid;
	}
	/* Started as that user already (systemd's User=): nothing to drop. */
	if (pw->pw_uid != 0 && getuid() == pw->pw_uid &&
	    geteuid() == pw->pw_uid)
		return;
	if (conf->chroot != NULL)
		enter_chroot(conf->chroot);
	/* Group first, while we may still change it; then the user. */
	if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1)
		fatal("cannot drop group privileges to %u", (unsigned)gid);
	/* A root 'user' (with a 'group') keeps every capability anyway. */
	keep = pw->pw_uid != 0 && keep_net_admin_begin(conf);
	if (setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		fatal("cannot drop user privileges to %s", conf->user);
	if (keep)
		keep_net_admin_end();
	if (pw->pw_uid != 0 && setuid(0) != -1)
		fatalx("privileges could be regained after dropping them");
	log_info("running as user %s (uid %u, gid %u)%s", conf->user,
	    (unsigned)pw->pw_uid, (unsigned)gid,
	    keep ? ", keeping CAP_NET_ADMIN for backend_source" : "");
}

static void
write_pid_file(const char *path)
{
	FILE	*fp;

	if (path == NULL)
		return;
	if ((fp = fopen(path, "w")) == NULL)
		fatal("cannot write pid file %s", path);
	fprintf(fp, "%ld\n", (long)getpid());
	if (fclose(fp) != 0)
		fatal("cannot write pid file %s", path);
	pid_file_written = path;
}

/* A socket from systemd that no service is named after serves nothing. */
static void
warn_unclaimed_sockets(void)
{
	size_t	i;

	for (i = 0; i < nactivated; i++)
		if (!activated[i].claimed)
			log_warnx("systemd socket '%s' (fd %d) matches no service "
			    "name; it is not used", activated[i].name,
			    activated[i].fd);
}

/* STATUS= for `systemctl status`: live counts, every few seconds. */
static void
status_cb(evutil_socket_t fd, short what, void *arg)
{
	sdnotify("STATUS=%u sessions", workers_sessions());
}

static unsigned long long
monotonic_usec(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000;
}

/* Settings that only a restart can change; say so instead of ignoring. */
static void
reload_notice_restart(const struct conf *cur, const struct conf *next)
{
	if (next->workers != cur->workers)
		log_notice("reload: 'workers' changes only on restart");
	if ((next->chroot == NULL) != (cur->chroot == NULL) || (next->chroot &&
	    strcmp(next->chroot, cur->chroot) != 0))
		log_notice("reload: 'chroot' changes only on restart");
	if ((next->user == NULL) != (cur->user == NULL) || (next->user &&
	    strcmp(next->user, cur->user) != 0) ||
	    (next->group == NULL) != (cur->group == NULL) || (next->group &&
	    strcmp(next->group, cur->group) != 0))
		log_notice("reload: 'user'/'group' change only on restart");
	if ((next->pid_file == NULL) != (cur->pid_file == NULL) ||
	    (next->pid_file && strcmp(next->pid_file, cur->pid_file) != 0))
		log_notice("reload: 'pid_file' changes only on restart");
	stats_reload_notice(cur, next);
}

/*
 * SIGHUP: a new configuration and new certificates for new connections;
 * established sessions stay on what they started with.  The new runtime
 * is complete (parsed, TLS contexts built, sockets bound) before anything
 * changes; any error is logged and the running configuration kept.
 * Certificates and keys are re-read with the privileges the daemon has
 * now: after dropping to 'user' they must be readable by that user.
 */
static void
reload(void)
{
	struct conf	*conf;
	struct runtime	*rt;
	char		 err[1024];

	sdnotify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	    monotonic_usec());
	log_notice("SIGHUP: reloading %s", conf_path);
	if ((conf = conf_load(conf_path, err, sizeof(err))) == NULL) {
		log_error("reload failed, keeping the running configuration: %s",
		    err);
		metrics_reload(0);
		goto done;
	}
	/* CAP_NET_ADMIN is only kept when the first configuration used it. */
	if (backend_uses_transparent(conf) &&
	    backend_transparent_check(err, sizeof(err)) == -1) {
		conf_free(conf);
		log_error("reload failed, keeping the running configuration: %s "
		    "(see \"backend_source\" in doc/deployment.md)", err);
		goto done;
	}
	if ((rt = runtime_new(conf, current_rt, err, sizeof(err))) == NULL) {
		conf_free(conf);
		log_error("reload failed, keeping the running configuration: %s",
		    err);
		metrics_reload(0);
		goto done;
	}
	err[0] = '\0';
	if (runtime_bind(rt, current_rt, err, sizeof(err)) == -1 ||
	    workers_reload(rt) == -1) {
		if (err[0] == '\0')
			snprintf(err, sizeof(err), "a reload is still running");
		runtime_free(rt);
		log_error("reload failed, keeping the running configuration: %s",
		    err);
		metrics_reload(0);
		goto done;
	}
	reload_notice_restart(current_rt->conf, conf);
	warn_unclaimed_sockets();
	warn_dane(conf);
	if (!debug_logging) {
		log_init(conf->log_target, conf->log_level,
		    conf->syslog_facility);
	}
	runtime_unref(current_rt);
	current_rt = rt;
	log_notice("configuration reloaded: %zu services", conf->nservices);
	metrics_reload(1);
done:
	sdnotify("READY=1\nSTATUS=accepting connections");
}

/*
 * backend_dane: what the resolver state read at startup means for DANE
 * (no "options trust-ad", a name server off this host), once per start
 * or reload, as -t says it.
 */
static void
warn_dane(const struct conf *conf)
{
	size_t	 i;

	for (i = 0; i < conf->nservices; i++)
		if (conf->services[i].backend_dane) {
			dane_warn_resolver(warn_dane_finding, NULL);
			return;
		}
}

static void
warn_dane_finding(void *arg, const char *msg)
{
	(void)arg;
	log_warnx("%s", msg);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct event_base	*base = arg;

	switch (sig) {
	case SIGHUP:
		reload();
		break;
	case SIGTERM:
	case SIGINT:
		log_notice("signal %d: stopping", (int)sig);
		event_base_loopbreak(base);
		break;
	}
}

int
main(int argc, char *argv[])
{
	struct conf		*conf;
	struct runtime		*rt;
	struct event_base	*base;
	struct event		*sigs[3], *status = NULL;
	char			 err[1024];
	int			 ch, check = 0, debug = 0, i;
	unsigned		 shutdown_timeout;

	conf_path = MAILTLSD_CONF_DEFAULT;
	while ((ch = getopt(argc, argv, "c:dhtV")) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 'd':
			debug = 1;
			break;
		case 't':
			check = 1;
			break;
		case 'V':
			print_versions();
			return 0;
		case 'h':
			usage(stdout, 0);
		default:
			usage(stderr, 2);
		}
	}
	if (optind != argc)
		usage(stderr, 2);

	log_init(LOG_TARGET_STDERR, debug ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, 0);
	debug_logging = debug;
	if ((conf = conf_load(conf_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "mailtlsd: %s\n", err);
		return 1;
	}
	/*
	 * backend_dane: resolv.conf is read here, before the chroot, even
	 * if no service uses it yet (a reload may); a failure is reported
	 * by any service that needs it (tls_client_new()).
	 */
	if (dane_init() == -1)
		log_debug("cannot read the resolver configuration: "
		    "backend_dane will not work");
	if (check)
		return check_config(conf);

	if (!debug)
		log_init(conf->log_target, conf->log_level,
		    conf->syslog_facility);
	if (evthread_use_pthreads() == -1)
		fatalx("libevent has no pthreads support");
	raise_nofile(conf);
	{
		size_t	nsocks = sdnotify_listen_fds(&activated);

		nactivated = nsocks;
		runtime_set_activated(activated, nsocks);
		if (nsocks > 0)
			log_info("systemd passed %zu listening sockets", nsocks);
	}
	metrics_init(conf->workers);
	if ((rt = runtime_new(conf, NULL, err, sizeof(err))) == NULL) {
		log_error("%s", err);
		conf_free(conf);
		return 1;
	}
	current_rt = rt;
	warn_dane(conf);
	if (runtime_bind(rt, NULL, err, sizeof(err)) == -1 ||
	    stats_bind(conf, err, sizeof(err)) == -1) {
		log_error("%s", err);
		runtime_free(rt);
		return 1;
	}
	warn_unclaimed_sockets();
	write_pid_file(conf->pid_file);
	drop_privileges(conf);
	check_transparent(conf);
	signal(SIGPIPE, SIG_IGN);

	if ((base = event_base_new()) == NULL)
		fatalx("cannot create the main event loop");
	sigs[0] = evsignal_new(base, SIGTERM, signal_cb, base);
	sigs[1] = evsignal_new(base, SIGINT, signal_cb, base);
	sigs[2] = evsignal_new(base, SIGHUP, signal_cb, base);
	for (i = 0; i < 3; i++)
		if (sigs[i] == NULL || event_add(sigs[i], NULL) == -1)
			fatalx("cannot install signal handlers");
	if (workers_start(rt, conf->workers) == -1)
		fatalx("cannot start workers");

	log_notice("mailtlsd %s started: %zu services, %u workers",
	    PACKAGE_VERSION, conf->nservices, conf->workers);
	sdnotify("READY=1\nSTATUS=accepting connections");
	if (getenv("NOTIFY_SOCKET") != NULL) {
		struct timeval tv = { STATUS_INTERVAL, 0 };

		status = event_new(base, -1, EV_PERSIST, status_cb, NULL);
		if (status != NULL)
			event_add(status, &tv);
	}
	event_base_dispatch(base);
	if (status != NULL)
		event_free(status);

	/* conf may have been replaced by a reload since. */
	shutdown_timeout = current_rt->conf->shutdown_timeout;
	sdnotify("STOPPING=1\nSTATUS=stopping: %u sessions", workers_sessions());
	workers_stop(shutdown_timeout);
	workers_join();
	dane_stop();
	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_base_free(base);
	runtime_unref(current_rt);
	if (pid_file_written)
		(void)unlink(pid_file_written);
	log_notice("mailtlsd stopped");
	return 0;
}
