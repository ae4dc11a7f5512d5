/*
 * test_conf.c - conf_load() against the files in tests/conf.
 *
 * Table-driven by the file system: every .conf file in good/ must load,
 * and every .conf file in bad/ must fail with a message that contains the
 * text of its .expected sibling, which starts with the file name and the
 * line.  Each file is one cmocka test, so the TAP output names the file
 * that broke.  Dedicated tests check the values parsed from some good
 * files, and the cases no file can hold (missing file, NUL byte, huge
 * file, tiny error buffer).
 *
 * The directory holding good/ and bad/ is $MAILTLSD_CONF_TESTDIR (set by
 * `make check`); else CONF_TESTDIR when compiled with
 * -DCONF_TESTDIR='"/path/to/tests/conf"'; else ../conf next to this
 * source file, as __FILE__ names it.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "mailtlsd.h"

#define TC_MAX_FILES	512
#define TC_GOOD_MIN	10	/* the corpus must not shrink unnoticed */
#define TC_BAD_MIN	35
#define TC_ERR_MAX	1024
#define NITEMS(a)	(sizeof(a) / sizeof((a)[0]))

struct tc_file {
	char	 path[PATH_MAX];
	char	 name[NAME_MAX + 8];	/* "bad/x.conf": the test's name */
	int	 bad;
};

static struct tc_file	tc_files[TC_MAX_FILES];
static size_t		tc_nfiles, tc_ngood, tc_nbad;

/* ------------------------------------------------------------------ */
/* Helpers. */

static const char *
tc_dir(void)
{
	const char	*env = getenv("MAILTLSD_CONF_TESTDIR");
#ifndef CONF_TESTDIR
	static char	 buf[PATH_MAX];
	const char	*slash = strrchr(__FILE__, '/');
#endif

	if (env != NULL && *env != '\0')
		return env;
#ifdef CONF_TESTDIR
	return CONF_TESTDIR;
#else
	/* __FILE__ is ".../tests/unit/test_conf.c". */
	if (slash == NULL)
		return "../conf";
	snprintf(buf, sizeof(buf), "%.*s/../conf", (int)(slash - __FILE__),
	    __FILE__);
	return buf;
#endif
}

static void
tc_path(char *buf, size_t len, const char *sub, const char *name)
{
	int	 n = snprintf(buf, len, "%s/%s/%s", tc_dir(), sub, name);

	assert_true(n > 0 && (size_t)n < len);
}

static int
tc_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tc_file *)a)->name,
	    ((const struct tc_file *)b)->name);
}

/* Register every .conf file of sub ("good" or "bad"), sorted. */
static size_t
tc_scan(const char *sub, int bad)
{
	char		 dir[PATH_MAX];
	DIR		*d;
	struct dirent	*de;
	size_t		 first = tc_nfiles, len;

	if (snprintf(dir, sizeof(dir), "%s/%s", tc_dir(), sub) >=
	    (int)sizeof(dir) || (d = opendir(dir)) == NULL) {
		fprintf(stderr, "# cannot open %s (set MAILTLSD_CONF_TESTDIR)\n",
		    dir);
		return 0;
	}
	while ((de = readdir(d)) != NULL && tc_nfiles < TC_MAX_FILES) {
		struct tc_file *f = &tc_files[tc_nfiles];

		len = strlen(de->d_name);
		if (len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
			continue;
		if (snprintf(f->path, sizeof(f->path), "%s/%s", dir,
		    de->d_name) >= (int)sizeof(f->path) ||
		    snprintf(f->name, sizeof(f->name), "%s/%s", sub,
		    de->d_name) >= (int)sizeof(f->name))
			continue;	/* cannot happen with NAME_MAX */
		f->bad = bad;
		tc_nfiles++;
	}
	closedir(d);
	qsort(tc_files + first, tc_nfiles - first, sizeof(tc_files[0]),
	    tc_cmp);
	return tc_nfiles - first;
}

/* The .expected text of a bad file, without trailing white space. */
static void
tc_expected(const char *confpath, char *buf, size_t len)
{
	char	 path[PATH_MAX];
	FILE	*fp = NULL;
	size_t	 n;

	if (snprintf(path, sizeof(path), "%.*s.expected",
	    (int)(strlen(confpath) - 5), confpath) < (int)sizeof(path))
		fp = fopen(path, "r");
	if (fp == NULL) {
		fail_msg("missing %s", path);
		return;		/* not reached: fail_msg() jumps out */
	}
	n = fread(buf, 1, len - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	while (n > 0 && strchr(" \t\r\n", buf[n - 1]) != NULL)
		buf[--n] = '\0';
	if (n == 0)
		fail_msg("empty %s", path);
}

static struct conf *
tc_load(const char *name)
{
	char		 path[PATH_MAX], err[TC_ERR_MAX];
	struct conf	*c;

	tc_path(path, sizeof(path), "good", name);
	if ((c = conf_load(path, err, sizeof(err))) == NULL)
		fail_msg("%s: %s", name, err);
	return c;
}

/* Load a temporary file holding len bytes of text; returns the error. */
static void
tc_load_text(const char *text, size_t len, char *err, size_t errlen,
    char *path, size_t pathlen)
{
	const char	*tmp = getenv("TMPDIR");
	struct conf	*c;
	FILE		*fp;
	int		 fd;

	snprintf(path, pathlen, "%s/test_conf.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	assert_true((fd = mkstemp(path)) != -1);
	assert_non_null(fp = fdopen(fd, "w"));
	assert_int_equal(fwrite(text, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
	c = conf_load(path, err, errlen);
	unlink(path);
	assert_null(c);
}

static const struct sockaddr_in *
tc_sin(const struct conf_endpoint *e)
{
	assert_int_equal(e->ss.ss_family, AF_INET);
	assert_int_equal(e->sslen, sizeof(struct sockaddr_in));
	return (const struct sockaddr_in *)(const void *)&e->ss;
}

static const struct sockaddr_in6 *
tc_sin6(const struct conf_endpoint *e)
{
	assert_int_equal(e->ss.ss_family, AF_INET6);
	assert_int_equal(e->sslen, sizeof(struct sockaddr_in6));
	return (const struct sockaddr_in6 *)(const void *)&e->ss;
}

static void
tc_assert_v4(const struct conf_endpoint *e, const char *addr, int port)
{
	const struct sockaddr_in	*sin = tc_sin(e);
	struct in_addr			 want;

	assert_int_equal(inet_pton(AF_INET, addr, &want), 1);
	assert_memory_equal(&sin->sin_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void
tc_assert_v6(const struct conf_endpoint *e, const char *addr, int port)
{
	const struct sockaddr_in6	*sin6 = tc_sin6(e);
	struct in6_addr			 want;

	assert_int_equal(inet_pton(AF_INET6, addr, &want), 1);
	assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin6->sin6_port), port);
}

static unsigned
tc_cpus(void)
{
	long	 n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > LIMIT_WORKERS_MAX ? LIMIT_WORKERS_MAX : (unsigned)n;
}

/* What every loaded service must satisfy, whatever the file. */
static void
tc_check_service(const struct conf *c, const struct conf_service *s)
{
	assert_non_null(s->name);
	if (s->tls_mode == TLS_MODE_NONE) {
		/* Client mode: no server side TLS, a TLS backend leg. */
		assert_null(s->tls);
		assert_int_not_equal(s->backend_tls, BACKEND_TLS_NONE);
	} else {
		assert_non_null(s->tls);
		assert_true(s->tls >= c->tls && s->tls < c->tls + c->ntls);
	}
	/* nlisten may be 0: the sockets then come from systemd. */
	assert_true(s->nbackends >= 1);
	assert_non_null(s->hostname);
	assert_true(s->hostname[0] != '\0');
	assert_true(s->handshake_timeout >= 1 &&
	    s->handshake_timeout <= LIMIT_TIMEOUT_MAX);
	assert_true(s->idle_timeout >= 1 &&
	    s->idle_timeout <= LIMIT_TIMEOUT_MAX);
	assert_true(s->backend_connect_timeout >= 1 &&
	    s->backend_connect_timeout <= LIMIT_TIMEOUT_MAX);
	assert_true(s->max_line_length >= LIMIT_LINE_MIN &&
	    s->max_line_length <= LIMIT_LINE_MAX);
	assert_true(s->max_connections_per_ip >= 1);
	assert_true(s->line > 0);
}

/* ------------------------------------------------------------------ */
/* One test per file. */

static void
test_good(void **state)
{
	const struct tc_file	*f = *state;
	char			 err[TC_ERR_MAX];
	struct conf		*c;
	size_t			 i;

	if ((c = conf_load(f->path, err, sizeof(err))) == NULL) {
		fail_msg("%s: %s", f->name, err);
		return;		/* not reached: fail_msg() jumps out */
	}
	assert_string_equal(c->file, f->path);
	assert_true(c->workers >= 1 && c->workers <= LIMIT_WORKERS_MAX);
	assert_true(c->nservices >= 1);
	/* Only client mode (tls_mode none, SPEC 12) needs no tls section. */
	for (i = 0; i < c->nservices; i++)
		if (c->services[i].tls_mode != TLS_MODE_NONE)
			assert_true(c->ntls >= 1);
	for (i = 0; i < c->ntls; i++) {
		assert_true(c->tls[i].npairs >= 1);
		assert_true(c->tls[i].line > 0);
	}
	for (i = 0; i < c->nservices; i++)
		tc_check_service(c, &c->services[i]);
	conf_free(c);
}

static void
test_bad(void **state)
{
	const struct tc_file	*f = *state;
	char			 err[TC_ERR_MAX], want[TC_ERR_MAX];
	const char		*base = strrchr(f->path, '/') + 1;
	size_t			 plen = strlen(f->path);
	struct conf		*c;

	tc_expected(f->path, want, sizeof(want));
	/* Every expectation pins the file name and, where one applies,
	 * the line. */
	if (strncmp(want, base, strlen(base)) != 0 ||
	    want[strlen(base)] != ':')
		fail_msg("%s: .expected must start with \"%s:\"", f->name,
		    base);
	if ((c = conf_load(f->path, err, sizeof(err))) != NULL) {
		conf_free(c);
		fail_msg("%s: loaded, but must fail with \"%s\"", f->name,
		    want);
	}
	if (strstr(err, want) == NULL)
		fail_msg("%s: got \"%s\", want \"%s\"", f->name, err, want);
	/* The file as given, then a line number or the message. */
	assert_memory_equal(err, f->path, plen);
	assert_int_equal(err[plen], ':');
	assert_null(strchr(err, '\n'));
}

/* ------------------------------------------------------------------ */
/* Dedicated tests. */

static void
test_corpus(void **state)
{
	assert_true(tc_nfiles < TC_MAX_FILES);
	if (tc_ngood < TC_GOOD_MIN || tc_nbad < TC_BAD_MIN)
		fail_msg("found %zu good and %zu bad files in %s, want at "
		    "least %d and %d", tc_ngood, tc_nbad, tc_dir(),
		    TC_GOOD_MIN, TC_BAD_MIN);
}

static void
test_defaults(void **state)
{
	struct conf		*c = tc_load("minimal.conf");
	const struct conf_tls	*t = &c->tls[0];
	const struct conf_service *s = &c->services[0];
	char			 host[256];

	assert_null(c->user);
	assert_null(c->group);
	assert_null(c->chroot);
	assert_null(c->pid_file);
	assert_int_equal(c->log_target, LOG_TARGET_SYSLOG);
	assert_int_equal(c->log_level, LOG_LEVEL_INFO);
	assert_int_equal(c->syslog_facility, LOG_MAIL);
	assert_int_equal(c->workers, tc_cpus());
	assert_int_equal(c->max_connections, DEFAULT_MAX_CONNECTIONS);
	assert_int_equal(c->shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
	assert_int_equal(c->nstats_listen, 0);
	assert_int_equal(c->nstats_allow, 0);

	assert_int_equal(c->ntls, 1);
	assert_string_equal(t->name, "mail");
	assert_int_equal(t->line, 2);
	assert_int_equal(t->npairs, 1);
	assert_string_equal(t->pairs[0].certificate, "/etc/ssl/mail/rsa.pem");
	assert_string_equal(t->pairs[0].key, "/etc/ssl/mail/rsa.key");
	assert_int_equal(t->profile, TLS_PROFILE_INTERMEDIATE);
	assert_int_equal(t->min_protocol, 0);
	assert_null(t->ciphers);
	assert_null(t->ciphersuites);
	assert_null(t->groups);
	assert_null(t->dh_params);
	assert_int_equal(t->client_certificates, CLIENT_CERT_NONE);
	assert_null(t->ca_file);
	assert_null(t->ca_path);
	assert_true(t->session_tickets);
	assert_null(t->ticket_key_file);
	assert_int_equal(t->nsni, 0);

	assert_int_equal(c->nservices, 1);
	assert_string_equal(s->name, "submission");
	assert_int_equal(s->line, 7);
	assert_int_equal(s->protocol, PROTO_SMTP);
	assert_int_equal(s->tls_mode, TLS_MODE_STARTTLS);
	assert_true(s->require_starttls);
	assert_ptr_equal(s->tls, t);
	assert_int_equal(s->nlisten, 1);
	tc_assert_v4(&s->listen[0], "127.0.0.1", 587);
	assert_string_equal(s->listen[0].text, "127.0.0.1:587");
	assert_int_equal(s->nbackends, 1);
	tc_assert_v4(&s->backends[0], "127.0.0.1", 10587);
	assert_int_equal(s->send_proxy, SEND_PROXY_NONE);
	assert_false(s->xclient);
	assert_false(s->accept_proxy);
	assert_int_equal(s->nproxy_trusted, 0);
	assert_null(s->proxy_trusted);
	memset(host, 0, sizeof(host));
	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	assert_string_equal(s->hostname, host);
	assert_int_equal(s->max_connections, 0);
	assert_int_equal(s->max_connections_per_ip,
	    DEFAULT_MAX_CONNECTIONS_PER_IP);
	assert_int_equal(s->handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
	assert_int_equal(s->idle_timeout, DEFAULT_SMTP_IDLE_TIMEOUT);
	assert_int_equal(s->backend_connect_timeout,
	    DEFAULT_BACKEND_CONNECT_TIMEOUT);
	assert_int_equal(s->max_line_length, DEFAULT_SMTP_LINE_MAX);
	assert_int_equal(s->smtp_bare_newline, BARE_NEWLINE_NORMALIZE);
	assert_int_equal(s->backend_tls, BACKEND_TLS_NONE);
	conf_free(c);
}

static void
test_protocol_defaults(void **state)
{
	static const struct {
		const char	*name;
		enum proto_id	 proto;
		enum tls_mode	 mode;
		unsigned	 idle;
		size_t		 line;
	} want[] = {
		{ "smtp", PROTO_SMTP, TLS_MODE_STARTTLS,
		    DEFAULT_SMTP_IDLE_TIMEOUT, DEFAULT_SMTP_LINE_MAX },
		{ "imap", PROTO_IMAP, TLS_MODE_STARTTLS,
		    DEFAULT_IMAP_IDLE_TIMEOUT, DEFAULT_IMAP_LINE_MAX },
		{ "pop3", PROTO_POP3, TLS_MODE_IMPLICIT,
		    DEFAULT_POP3_IDLE_TIMEOUT, DEFAULT_POP3_LINE_MAX },
	};
	struct conf	*c = tc_load("defaults_per_protocol.conf");
	size_t		 i;

	assert_int_equal(c->nservices, NITEMS(want));
	for (i = 0; i < NITEMS(want); i++) {
		const struct conf_service *s = &c->services[i];

		assert_string_equal(s->name, want[i].name);
		assert_int_equal(s->protocol, want[i].proto);
		assert_int_equal(s->tls_mode, want[i].mode);
		assert_int_equal(s->idle_timeout, want[i].idle);
		assert_int_equal(s->max_line_length, want[i].line);
		assert_int_equal(s->handshake_timeout,
		    DEFAULT_HANDSHAKE_TIMEOUT);
		assert_int_equal(s->cleartext_timeout,
		    DEFAULT_CLEARTEXT_TIMEOUT);
		assert_int_equal(s->smtp_greeting_delay, 0);
	}
	conf_free(c);
}

static void
test_tls_resolution(void **state)
{
	struct conf	*c = tc_load("two_tls_named.conf");

	assert_int_equal(c->ntls, 2);
	assert_string_equal(c->tls[0].name, "public");
	assert_int_equal(c->tls[0].profile, TLS_PROFILE_MODERN);
	assert_string_equal(c->tls[1].name, "mx");
	assert_int_equal(c->tls[1].profile, TLS_PROFILE_OPPORTUNISTIC);
	assert_string_equal(c->services[0].name, "mx");
	assert_ptr_equal(c->services[0].tls, &c->tls[1]);
	assert_false(c->services[0].require_starttls);
	assert_string_equal(c->services[1].name, "imaps");
	assert_ptr_equal(c->services[1].tls, &c->tls[0]);
	conf_free(c);
}

static void
test_ipv6_listen(void **state)
{
	struct conf			*c = tc_load("ipv6_unix.conf");
	const struct conf_service	*s = &c->services[0];

	assert_int_equal(s->nlisten, 3);
	tc_assert_v6(&s->listen[0], "::1", 993);
	assert_string_equal(s->listen[0].text, "[::1]:993");
	tc_assert_v6(&s->listen[1], "2001:db8::25", 993);
	tc_assert_v4(&s->listen[2], "127.0.0.1", 993);
	tc_assert_v6(&c->services[1].listen[0], "::", 995);
	conf_free(c);
}

static void
test_unix_backend(void **state)
{
	struct conf			*c = tc_load("ipv6_unix.conf");
	const struct conf_endpoint	*b = &c->services[0].backends[0];
	const struct sockaddr_un	*sun;
	const char			*path = "/run/dovecot/imap.sock";

	assert_int_equal(c->services[0].nbackends, 2);
	assert_string_equal(b->text, "unix:/run/dovecot/imap.sock");
	assert_int_equal(b->ss.ss_family, AF_UNIX);
	sun = (const struct sockaddr_un *)(const void *)&b->ss;
	assert_string_equal(sun->sun_path, path);
	assert_int_equal(b->sslen,
	    offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	tc_assert_v4(&c->services[0].backends[1], "127.0.0.1", 10143);

	/* A backend may be a name, resolved when the file is loaded. */
	b = &c->services[1].backends[0];
	assert_string_equal(b->text, "localhost:10110");
	if (b->ss.ss_family == AF_INET)
		assert_int_equal(ntohs(tc_sin(b)->sin_port), 10110);
	else
		assert_int_equal(ntohs(tc_sin6(b)->sin6_port), 10110);
	conf_free(c);
}

/* accept_proxy with its networks, as util_net_match() will read them. */
static void
test_accept_proxy(void **state)
{
	struct conf			*c = tc_load("accept_proxy.conf");
	const struct conf_service	*s = &c->services[0];

	(void)state;
	assert_true(s->accept_proxy);
	assert_int_equal(s->nproxy_trusted, 3);
	assert_int_equal(s->proxy_trusted[0].addr.ss_family, AF_INET);
	assert_int_equal(s->proxy_trusted[0].prefix, 8);
	assert_int_equal(s->proxy_trusted[1].addr.ss_family, AF_INET6);
	assert_int_equal(s->proxy_trusted[1].prefix, 8);
	assert_int_equal(s->proxy_trusted[2].prefix, 32);	/* one host */
	assert_true(c->services[1].accept_proxy);
	assert_int_equal(c->services[1].nproxy_trusted, 1);
	conf_free(c);
}

static void
test_all_options(void **state)
{
	struct conf			*c = tc_load("all_options.conf");
	const struct conf_tls		*t = &c->tls[0];
	const struct conf_service	*s = &c->services[0];

	assert_string_equal(c->user, "mailtlsd");
	assert_string_equal(c->group, "mailtlsd");
	assert_string_equal(c->pid_file, "/run/mailtlsd.pid");
	assert_int_equal(c->log_target, LOG_TARGET_STDERR);
	assert_int_equal(c->log_level, LOG_LEVEL_DEBUG);
	assert_int_equal(c->syslog_facility, LOG_LOCAL3);
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->max_connections, 5000);
	assert_int_equal(c->shutdown_timeout, 45);
	assert_int_equal(c->nstats_listen, 2);
	assert_string_equal(c->stats_listen[0].text, "127.0.0.1:9425");
	assert_int_equal(c->stats_listen[1].ss.ss_family, AF_INET6);
	assert_int_equal(c->nstats_allow, 2);
	assert_int_equal(c->stats_allow[0].prefix, 8);
	assert_int_equal(c->stats_allow[1].prefix, 32);
	assert_int_equal(c->stats_line, 11);

	assert_int_equal(t->npairs, 2);
	assert_string_equal(t->pairs[0].certificate, "/etc/ssl/mail/ecdsa.pem");
	assert_string_equal(t->pairs[0].key, "/etc/ssl/mail/ecdsa.key");
	assert_string_equal(t->pairs[1].certificate, "/etc/ssl/mail/rsa.pem");
	assert_string_equal(t->pairs[1].key, "/etc/ssl/mail/rsa.key");
	assert_int_equal(t->profile, TLS_PROFILE_OPPORTUNISTIC);
	assert_int_equal(t->min_protocol, TLS1_2_VERSION);
	assert_string_equal(t->ciphers, "ECDHE+AESGCM");
	assert_string_equal(t->ciphersuites, "TLS_AES_256_GCM_SHA384");
	assert_string_equal(t->groups, "X25519:P-256");
	assert_string_equal(t->dh_params, "/etc/ssl/dh2048.pem");
	assert_int_equal(t->client_certificates, CLIENT_CERT_REQUIRE);
	assert_string_equal(t->ca_file, "/etc/ssl/clients.pem");
	assert_string_equal(t->ca_path, "/etc/ssl/certs");
	assert_false(t->session_tickets);
	assert_string_equal(t->ticket_key_file, "/etc/mailtlsd/tickets.key");
	assert_int_equal(t->nsni, 2);
	assert_string_equal(t->sni[0].name, "mail.example.org");
	assert_int_equal(t->sni[0].npairs, 1);
	assert_string_equal(t->sni[0].pairs[0].key, "/etc/ssl/example.key");
	assert_string_equal(t->sni[1].name, "*.example.net");
	assert_int_equal(t->sni[1].npairs, 2);
	assert_string_equal(t->sni[1].pairs[1].certificate,
	    "/etc/ssl/net-rsa.pem");

	assert_int_equal(s->tls_mode, TLS_MODE_STARTTLS);
	assert_false(s->require_starttls);
	tc_assert_v4(&s->listen[0], "192.0.2.1", 25);
	tc_assert_v6(&s->listen[1], "2001:db8::1", 25);
	assert_int_equal(s->backends[1].ss.ss_family, AF_UNIX);
	assert_string_equal(s->hostname, "mx1.example.org");
	assert_int_equal(s->max_connections, 1000);
	assert_int_equal(s->max_connections_per_ip, 7);
	assert_int_equal(s->handshake_timeout, 11);
	assert_int_equal(s->idle_timeout, 120);
	assert_int_equal(s->cleartext_timeout, 30);
	assert_int_equal(s->smtp_greeting_delay, 6);
	assert_int_equal(s->backend_connect_timeout, 3);
	assert_int_equal(s->max_line_length, 2048);
	assert_int_equal(s->smtp_bare_newline, BARE_NEWLINE_REJECT);
	conf_free(c);
}

/* The address kept for each mode; unset means the kernel's choice. */
static void
test_backend_source(void **state)
{
	struct conf			*c = tc_load("backend_source.conf");
	const struct conf_service	*s = c->services;
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;
	struct in6_addr			 want6;
	struct conf			*m = tc_load("minimal.conf");

	assert_int_equal(m->services[0].backend_source, BACKEND_SOURCE_ANY);
	conf_free(m);
	assert_int_equal(c->nservices, 3);
	assert_int_equal(s[0].backend_source, BACKEND_SOURCE_ADDR);
	assert_int_equal(s[0].source.ss_family, AF_INET);
	assert_int_equal(s[0].sourcelen, sizeof(*sin));
	sin = (const struct sockaddr_in *)&s[0].source;
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000005);
	assert_int_equal(sin->sin_port, 0);
	assert_int_equal(s[1].backend_source, BACKEND_SOURCE_ADDR);
	assert_int_equal(s[1].source.ss_family, AF_INET6);
	sin6 = (const struct sockaddr_in6 *)&s[1].source;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::5", &want6), 1);
	assert_memory_equal(&sin6->sin6_addr, &want6, sizeof(want6));
	assert_int_equal(sin6->sin6_port, 0);
	assert_int_equal(s[2].backend_source, BACKEND_SOURCE_CLIENT);
	conf_free(c);
}

static void
test_limits_edges(void **state)
{
	struct conf			*c = tc_load("limits_edges.conf");
	const struct conf_service	*lo = &c->services[0];
	const struct conf_service	*hi = &c->services[1];

	assert_int_equal(c->workers, LIMIT_WORKERS_MAX);
	assert_int_equal(c->max_connections, LIMIT_CONNECTIONS_MAX);
	assert_int_equal(c->shutdown_timeout, 1);
	assert_int_equal(lo->max_connections, 0);
	assert_int_equal(lo->max_connections_per_ip, 1);
	assert_int_equal(lo->idle_timeout, 1);
	assert_int_equal(lo->cleartext_timeout, 0);
	assert_int_equal(hi->cleartext_timeout, LIMIT_TIMEOUT_MAX);
	assert_int_equal(c->services[2].smtp_greeting_delay, 0);
	assert_int_equal(c->services[3].smtp_greeting_delay,
	    LIMIT_GREETING_DELAY_MAX);
	assert_int_equal(lo->max_line_length, LIMIT_LINE_MIN);
	assert_int_equal(hi->max_connections_per_ip, LIMIT_CONNECTIONS_MAX);
	assert_int_equal(hi->handshake_timeout, LIMIT_TIMEOUT_MAX);
	assert_int_equal(hi->backend_connect_timeout, LIMIT_TIMEOUT_MAX);
	assert_int_equal(hi->max_line_length, LIMIT_LINE_MAX);
	conf_free(c);
}

/* Comments are removed without touching quoted text or paths. */
static void
test_comments(void **state)
{
	struct conf		*c = tc_load("comments.conf");
	const struct conf_tls	*t = &c->tls[0];

	assert_string_equal(c->user, "mail#tls");
	assert_int_equal(t->line, 6);
	assert_int_equal(t->npairs, 2);
	assert_string_equal(t->pairs[0].certificate, "/etc/ssl/a.pem");
	assert_string_equal(t->pairs[1].certificate, "/etc/ssl/b.pem");
	assert_string_equal(t->pairs[1].key, "/etc/ssl/b.key");
	assert_string_equal(t->dh_params, "/etc//ssl/dh.pem");
	assert_int_equal(c->services[0].protocol, PROTO_IMAP);
	assert_int_equal(c->services[0].line, 14);
	tc_assert_v4(&c->services[0].backends[0], "127.0.0.1", 10143);
	conf_free(c);
}

/* "+=" appends to a list; unquoted values; workers = 0 is per CPU. */
static void
test_layout(void **state)
{
	struct conf	*c = tc_load("layout.conf");

	assert_int_equal(c->log_level, LOG_LEVEL_NOTICE);
	assert_int_equal(c->workers, tc_cpus());
	assert_int_equal(c->tls[0].npairs, 2);
	assert_string_equal(c->tls[0].pairs[1].key, "/etc/ssl/b.key");
	assert_int_equal(c->services[0].nlisten, 2);
	tc_assert_v4(&c->services[0].listen[1], "127.0.0.2", 143);
	conf_free(c);
}

static void
test_names(void **state)
{
	assert_string_equal(conf_proto_name(PROTO_SMTP), "smtp");
	assert_string_equal(conf_proto_name(PROTO_IMAP), "imap");
	assert_string_equal(conf_proto_name(PROTO_POP3), "pop3");
	assert_string_equal(conf_proto_name((enum proto_id)42), "?");
	assert_string_equal(conf_tls_mode_name(TLS_MODE_IMPLICIT), "implicit");
	assert_string_equal(conf_tls_mode_name(TLS_MODE_STARTTLS), "starttls");
	assert_string_equal(conf_tls_mode_name((enum tls_mode)42), "?");
	assert_string_equal(conf_profile_name(TLS_PROFILE_MODERN), "modern");
	assert_string_equal(conf_profile_name(TLS_PROFILE_INTERMEDIATE),
	    "intermediate");
	assert_string_equal(conf_profile_name(TLS_PROFILE_OPPORTUNISTIC),
	    "opportunistic");
	assert_string_equal(conf_profile_name((enum tls_profile)42), "?");
}

static void
test_missing_file(void **state)
{
	char		 path[PATH_MAX], err[TC_ERR_MAX], want[PATH_MAX + 32];

	tc_path(path, sizeof(path), "good", "no-such-file.conf");
	assert_null(conf_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot open: ", path);
	assert_memory_equal(err, want, strlen(want));

	/* A directory opens but cannot be read. */
	assert_true(snprintf(path, sizeof(path), "%s/good", tc_dir()) <
	    (int)sizeof(path));
	assert_null(conf_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, ": cannot read: "));
}

/* libconfuse reads a buffer up to its first NUL: never let it cut. */
static void
test_nul_byte(void **state)
{
	static const char	 text[] = "workers = 1\n\n# x\0y\n";
	char			 path[PATH_MAX], err[TC_ERR_MAX], want[PATH_MAX + 32];

	tc_load_text(text, sizeof(text) - 1, err, sizeof(err), path,
	    sizeof(path));
	snprintf(want, sizeof(want), "%s:3: NUL byte in file", path);
	assert_string_equal(err, want);
}

static void
test_huge_file(void **state)
{
	size_t		 len = 2 * 1024 * 1024;
	char		*text = malloc(len);
	char		 path[PATH_MAX], err[TC_ERR_MAX];

	assert_non_null(text);
	memset(text, '\n', len);
	tc_load_text(text, len, err, sizeof(err), path, sizeof(path));
	free(text);
	assert_non_null(strstr(err, ": file is larger than "));
}

/* The message is cut to the buffer, always terminated; no buffer at all
 * is allowed. */
static void
test_small_errbuf(void **state)
{
	char	 path[PATH_MAX], err[8];

	tc_path(path, sizeof(path), "bad", "unknown_option.conf");
	memset(err, 'x', sizeof(err));
	assert_null(conf_load(path, err, sizeof(err)));
	assert_int_equal(strlen(err), sizeof(err) - 1);
	assert_memory_equal(err, path, sizeof(err) - 1);
	assert_null(conf_load(path, NULL, 0));
}

/*
 * A load leaves nothing behind: a file that stops libconfuse's lexer in
 * the middle, then a good one, then the same good one again.
 */
static void
test_load_sequence(void **state)
{
	char		 path[PATH_MAX], err[TC_ERR_MAX];
	struct conf	*a, *b;

	tc_path(path, sizeof(path), "bad", "syntax_missing_brace.conf");
	assert_null(conf_load(path, err, sizeof(err)));
	a = tc_load("spec_example.conf");
	b = tc_load("spec_example.conf");
	assert_int_equal(a->nservices, b->nservices);
	assert_int_equal(a->services[6].line, b->services[6].line);
	assert_string_equal(a->services[6].name, "pop3s");
	assert_int_equal(a->services[6].line, 32);
	conf_free(a);
	conf_free(b);
}

int
main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_corpus),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_protocol_defaults),
		cmocka_unit_test(test_tls_resolution),
		cmocka_unit_test(test_ipv6_listen),
		cmocka_unit_test(test_unix_backend),
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_backend_source),
		cmocka_unit_test(test_accept_proxy),
		cmocka_unit_test(test_limits_edges),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_huge_file),
		cmocka_unit_test(test_small_errbuf),
		cmocka_unit_test(test_load_sequence),
	};
	struct CMUnitTest	*tests;
	size_t			 i, n = 0;
	int			 rc;

	tc_ngood = tc_scan("good", 0);
	tc_nbad = tc_scan("bad", 1);
	tests = calloc(NITEMS(fixed) + tc_nfiles, sizeof(*tests));
	if (tests == NULL)
		return 1;
	for (i = 0; i < NITEMS(fixed); i++)
		tests[n++] = fixed[i];
	for (i = 0; i < tc_nfiles; i++, n++) {
		tests[n].name = tc_files[i].name;
		tests[n].test_func = tc_files[i].bad ? test_bad : test_good;
		tests[n].initial_state = &tc_files[i];
	}
	rc = _cmocka_run_group_tests("conf", tests, n, NULL, NULL);
	free(tests);
	return rc;
}
