/*
 * conf.c - the configuration file (SPEC section 2): libconfuse schema,
 * validation, and the immutable struct conf built from it.
 *
 * The cfg_opt_t arrays below are the only schema; unknown options and
 * sections are errors (never CFGF_IGNORE_UNKNOWN).  Checking has three
 * layers, and the first error wins:
 *   1. while libconfuse parses, conf_validate() runs for every option it
 *      sets: it records the line (cfg_opt_t has none) and applies that
 *      option's rule from conf_rules[] (enum, range, address, name...);
 *   2. after parsing, checks that need a whole section: certificate/key
 *      pairing, tls references, protocol-only options, duplicate listeners;
 *   3. everything is copied into plain struct conf; cfg_t never escapes.
 * Before libconfuse sees the text, conf_strip() blanks comments (keeping
 * newlines) and checks braces, working around libconfuse 3.3: it counts
 * two extra lines per '#' or '//' comment and one per block comment,
 * refuses a comment inside a list, and takes end of file as the end of an
 * open section (a truncated file would load).
 *
 * Messages read "FILE:LINE: option 'NAME': what is wrong" or, for section
 * checks, "FILE:LINE: service 'NAME': ..." / "tls 'NAME': ...".
 * libconfuse's own messages (unknown option, syntax) keep their wording
 * and get the same FILE:LINE prefix through conf_cfg_error().
 *
 * Invariant: libconfuse callbacks carry no user pointer and its lexer is
 * global, so one load runs at a time (startup or SIGHUP, main thread);
 * conf_cur points at the state of the load in progress.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <confuse.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "mailtlsd.h"
#include "util.h"

#define CONF_MSG_MAX		512
#define CONF_QUOTE_MAX		80	/* bytes of a value shown in a message */
#define CONF_NAME_MAX		64	/* tls and service names */
#define CONF_HOSTNAME_MAX	253
#define CONF_FILE_MAX		(1024 * 1024)	/* bytes of configuration */
#define CONF_DEPTH_MAX		16	/* nesting remembered for messages */

/* Which kind of section an option lives in (cfg_t's name tells). */
enum conf_kind {
	CONF_ROOT = 0,
	CONF_TLS,
	CONF_SNI,
	CONF_SERVICE,
};

/* Where an option was set; name NULL marks where its section starts. */
struct conf_mark {
	const cfg_t	*sec;
	const char	*name;
	int		 line;
};

struct conf_parse {
	const char		*file;
	char			*err;
	size_t			 errlen;
	int			 failed;
	cfg_t			*root;
	struct conf_mark	*marks;
	size_t			 nmarks;
	size_t			 marks_cap;
	int			 unclosed;	/* line of a '{' never closed */
};

struct conf_enum {
	const char	*name;
	int		 value;
};

struct conf_rule;
typedef int	(*conf_check_fn)(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);

/* Per-option checks applied while parsing; options not listed get only
 * the generic string check. */
struct conf_rule {
	enum conf_kind		 kind;
	const char		*name;
	conf_check_fn		 check;
	long			 min, max;
	const struct conf_enum	*values;
};

static int	conf_parse_int(cfg_t *, cfg_opt_t *, const char *, void *);
static int	conf_validate(cfg_t *, cfg_opt_t *);
static void	conf_cfg_error(cfg_t *, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static void	conf_fail(int, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static const char *conf_q(const char *);
static enum conf_kind conf_kind(const cfg_t *);
static const struct conf_mark *conf_mark_find(const cfg_t *, const char *);
static void	conf_mark_add(const cfg_t *, const char *, int);
static void	conf_mark_start(cfg_t *);
static int	conf_mark_option(cfg_t *, cfg_opt_t *);
static int	conf_line(const cfg_t *, const char *);
static int	conf_sec_line(const cfg_t *);
static int	conf_check_value(cfg_t *, cfg_opt_t *, unsigned int, char *,
		    size_t);
static int	conf_check_enum(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_range(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_level(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_facility(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_abspath(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_listen(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_backend(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_net(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_hostname(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_parse_source(const char *, struct sockaddr_storage *,
		    socklen_t *, char *, size_t);
static int	conf_check_source(const struct conf_rule *, cfg_opt_t *,
		    unsigned int, char *, size_t);
static int	conf_check_backend_tls(cfg_t *, struct conf_service *);
static int	conf_check_backend_dane(cfg_t *, struct conf_service *);
static int	conf_check_plaintext(cfg_t *, const struct conf_service *);
static int	conf_is_loopback(const struct sockaddr_storage *);
static int	conf_check_accept_proxy(cfg_t *, const struct conf_service *);

/* ------------------------------------------------------------------ */
/* Schema (SPEC section 2). */

static cfg_opt_t conf_sni_opts[] = {
	CFG_STR_LIST("certificate", 0, CFGF_NONE),
	CFG_STR_LIST("key", 0, CFGF_NONE),
	CFG_END()
};

static cfg_opt_t conf_tls_opts[] = {
	CFG_STR_LIST("certificate", 0, CFGF_NONE),
	CFG_STR_LIST("key", 0, CFGF_NONE),
	CFG_STR("profile", "intermediate", CFGF_NONE),
	CFG_STR("min_protocol", 0, CFGF_NONE),
	CFG_STR("ciphers", 0, CFGF_NONE),
	CFG_STR("ciphersuites", 0, CFGF_NONE),
	CFG_STR("groups", 0, CFGF_NONE),
	CFG_STR("dh_params", 0, CFGF_NONE),
	CFG_STR("client_certificates", "none", CFGF_NONE),
	CFG_STR("ca_file", 0, CFGF_NONE),
	CFG_STR("ca_path", 0, CFGF_NONE),
	CFG_BOOL("session_tickets", cfg_true, CFGF_NONE),
	CFG_STR("ticket_key_file", 0, CFGF_NONE),
	CFG_SEC("sni", conf_sni_opts,
	    CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_END()
};

/* idle_timeout and max_line_length: 0 = the protocol's default. */
static cfg_opt_t conf_service_opts[] = {
	CFG_STR("protocol", 0, CFGF_NODEFAULT),
	CFG_STR_LIST("listen", 0, CFGF_NONE),
	CFG_STR("tls_mode", 0, CFGF_NODEFAULT),
	CFG_BOOL("require_starttls", cfg_true, CFGF_NONE),
	CFG_STR("tls", 0, CFGF_NONE),
	CFG_STR_LIST("backend", 0, CFGF_NONE),
	CFG_STR("send_proxy", "none", CFGF_NONE),
	CFG_BOOL("xclient", cfg_false, CFGF_NONE),
	CFG_BOOL("accept_proxy", cfg_false, CFGF_NONE),
	CFG_STR_LIST("proxy_trusted", 0, CFGF_NONE),
	CFG_STR("hostname", 0, CFGF_NONE),
	CFG_INT_CB("max_connections", 0, CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_connections_per_ip", DEFAULT_MAX_CONNECTIONS_PER_IP,
	    CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_connection_rate_per_ip",
	    DEFAULT_MAX_CONNECTION_RATE_PER_IP, CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_auth_failures_per_ip", DEFAULT_MAX_AUTH_FAILURES_PER_IP,
	    CFGF_NONE, conf_parse_int),
	CFG_INT_CB("auth_failure_window", DEFAULT_AUTH_FAILURE_WINDOW,
	    CFGF_NONE, conf_parse_int),
	CFG_INT_CB("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT, CFGF_NONE,
	    conf_parse_int),
	CFG_INT_CB("idle_timeout", 0, CFGF_NONE, conf_parse_int),
	CFG_INT_CB("cleartext_timeout", DEFAULT_CLEARTEXT_TIMEOUT, CFGF_NONE,
	    conf_parse_int),
	CFG_INT_CB("smtp_greeting_delay", DEFAULT_SMTP_GREETING_DELAY,
	    CFGF_NONE, conf_parse_int),
	CFG_INT_CB("backend_connect_timeout", DEFAULT_BACKEND_CONNECT_TIMEOUT,
	    CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_line_length", 0, CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_errors", DEFAULT_MAX_ERRORS, CFGF_NONE,
	    conf_parse_int),
	CFG_STR("smtp_bare_newline", "normalize", CFGF_NONE),
	CFG_STR("backend_tls", "none", CFGF_NONE),
	CFG_STR("backend_ca_file", 0, CFGF_NONE),
	CFG_STR("backend_ca_path", 0, CFGF_NONE),
	CFG_STR("backend_tls_name", 0, CFGF_NONE),
	CFG_STR("backend_tls_certificate", 0, CFGF_NONE),
	CFG_STR("backend_tls_key", 0, CFGF_NONE),
	CFG_STR("backend_tls_profile", "intermediate", CFGF_NONE),
	CFG_BOOL("backend_tls_verify", cfg_true, CFGF_NONE),
	CFG_BOOL("backend_dane", cfg_false, CFGF_NONE),
	CFG_BOOL("allow_plaintext_listen", cfg_false, CFGF_NONE),
	CFG_STR("backend_source", 0, CFGF_NONE),
	CFG_END()
};

static cfg_opt_t conf_root_opts[] = {
	CFG_STR("user", 0, CFGF_NONE),
	CFG_STR("group", 0, CFGF_NONE),
	CFG_STR("chroot", 0, CFGF_NONE),
	CFG_STR("pid_file", 0, CFGF_NONE),
	CFG_STR("log_target", "syslog", CFGF_NONE),
	CFG_STR("log_level", "info", CFGF_NONE),
	CFG_STR("syslog_facility", "mail", CFGF_NONE),
	CFG_INT_CB("workers", 0, CFGF_NONE, conf_parse_int),
	CFG_INT_CB("max_connections", DEFAULT_MAX_CONNECTIONS, CFGF_NONE,
	    conf_parse_int),
	CFG_STR_LIST("stats_listen", 0, CFGF_NONE),
	CFG_STR_LIST("stats_allow", 0, CFGF_NONE),
	CFG_INT_CB("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT, CFGF_NONE,
	    conf_parse_int),
	CFG_SEC("tls", conf_tls_opts,
	    CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_SEC("service", conf_service_opts,
	    CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
	CFG_END()
};

/* ------------------------------------------------------------------ */
/* Value tables: the validators and the copy both read these. */

static const struct conf_enum conf_log_targets[] = {
	{ "syslog", LOG_TARGET_SYSLOG },
	{ "stderr", LOG_TARGET_STDERR },
	{ NULL, 0 }
};

static const struct conf_enum conf_profiles[] = {
	{ "modern", TLS_PROFILE_MODERN },
	{ "intermediate", TLS_PROFILE_INTERMEDIATE },
	{ "opportunistic", TLS_PROFILE_OPPORTUNISTIC },
	{ NULL, 0 }
};

/* SSLv2/SSLv3 are not in the list: they are never possible (SPEC 4). */
static const struct conf_enum conf_tls_versions[] = {
	{ "TLSv1", TLS1_VERSION },
	{ "TLSv1.1", TLS1_1_VERSION },
	{ "TLSv1.2", TLS1_2_VERSION },
	{ "TLSv1.3", TLS1_3_VERSION },
	{ NULL, 0 }
};

static const struct conf_enum conf_client_certs[] = {
	{ "none", CLIENT_CERT_NONE },
	{ "request", CLIENT_CERT_REQUEST },
	{ "require", CLIENT_CERT_REQUIRE },
	{ NULL, 0 }
};

static const struct conf_enum conf_protocols[] = {
	{ "smtp", PROTO_SMTP },
	{ "imap", PROTO_IMAP },
	{ "pop3", PROTO_POP3 },
	{ NULL, 0 }
};

static const struct conf_enum conf_tls_modes[] = {
	{ "implicit", TLS_MODE_IMPLICIT },
	{ "starttls", TLS_MODE_STARTTLS },
	{ "none", TLS_MODE_NONE },
	{ NULL, 0 }
};

static const struct conf_enum conf_send_proxy[] = {
	{ "none", SEND_PROXY_NONE },
	{ "v1", SEND_PROXY_V1 },
	{ "v2", SEND_PROXY_V2 },
	{ NULL, 0 }
};

static const struct conf_enum conf_bare_newline[] = {
	{ "normalize", BARE_NEWLINE_NORMALIZE },
	{ "reject", BARE_NEWLINE_REJECT },
	{ NULL, 0 }
};

static const struct conf_enum conf_backend_tls[] = {
	{ "none", BACKEND_TLS_NONE },
	{ "implicit", BACKEND_TLS_IMPLICIT },
	{ "starttls", BACKEND_TLS_STARTTLS },
	{ NULL, 0 }
};

/* Per-protocol defaults of SPEC section 6, indexed by enum proto_id. */
static const struct {
	const char	*name;
	unsigned	 idle_timeout;
	size_t		 line_max;
} conf_protos[] = {
	[PROTO_SMTP] = { "smtp", DEFAULT_SMTP_IDLE_TIMEOUT,
	    DEFAULT_SMTP_LINE_MAX },
	[PROTO_IMAP] = { "imap", DEFAULT_IMAP_IDLE_TIMEOUT,
	    DEFAULT_IMAP_LINE_MAX },
	[PROTO_POP3] = { "pop3", DEFAULT_POP3_IDLE_TIMEOUT,
	    DEFAULT_POP3_LINE_MAX },
};

#define CONF_ENUM(k, n, v)	{ k, n, conf_check_enum, 0, 0, v }
#define CONF_RANGE(k, n, lo, hi) { k, n, conf_check_range, lo, hi, NULL }
#define CONF_CHECK(k, n, fn)	{ k, n, fn, 0, 0, NULL }

static const struct conf_rule conf_rules[] = {
	CONF_CHECK(CONF_ROOT, "chroot", conf_check_abspath),
	CONF_CHECK(CONF_ROOT, "pid_file", conf_check_abspath),
	CONF_ENUM(CONF_ROOT, "log_target", conf_log_targets),
	CONF_CHECK(CONF_ROOT, "log_level", conf_check_level),
	CONF_CHECK(CONF_ROOT, "syslog_facility", conf_check_facility),
	CONF_RANGE(CONF_ROOT, "workers", 0, LIMIT_WORKERS_MAX),
	CONF_RANGE(CONF_ROOT, "max_connections", 1, LIMIT_CONNECTIONS_MAX),
	CONF_RANGE(CONF_ROOT, "shutdown_timeout", 1, LIMIT_TIMEOUT_MAX),
	CONF_CHECK(CONF_ROOT, "stats_listen", conf_check_listen),
	CONF_CHECK(CONF_ROOT, "stats_allow", conf_check_net),

	CONF_ENUM(CONF_TLS, "profile", conf_profiles),
	CONF_ENUM(CONF_TLS, "min_protocol", conf_tls_versions),
	CONF_ENUM(CONF_TLS, "client_certificates", conf_client_certs),

	CONF_ENUM(CONF_SERVICE, "protocol", conf_protocols),
	CONF_CHECK(CONF_SERVICE, "listen", conf_check_listen),
	CONF_ENUM(CONF_SERVICE, "tls_mode", conf_tls_modes),
	CONF_CHECK(CONF_SERVICE, "backend", conf_check_backend),
	CONF_ENUM(CONF_SERVICE, "send_proxy", conf_send_proxy),
	CONF_CHECK(CONF_SERVICE, "proxy_trusted", conf_check_net),
	CONF_CHECK(CONF_SERVICE, "hostname", conf_check_hostname),
	CONF_RANGE(CONF_SERVICE, "max_connections", 0, LIMIT_CONNECTIONS_MAX),
	CONF_RANGE(CONF_SERVICE, "max_connections_per_ip", 1,
	    LIMIT_CONNECTIONS_MAX),
	/* SPEC 10: 0 turns the limit off (and -t warns). */
	CONF_RANGE(CONF_SERVICE, "max_connection_rate_per_ip", 0,
	    LIMIT_CONNECTIONS_MAX),
	CONF_RANGE(CONF_SERVICE, "max_auth_failures_per_ip", 0,
	    LIMIT_CONNECTIONS_MAX),
	CONF_RANGE(CONF_SERVICE, "auth_failure_window", 1, LIMIT_TIMEOUT_MAX),
	CONF_RANGE(CONF_SERVICE, "handshake_timeout", 1, LIMIT_TIMEOUT_MAX),
	CONF_RANGE(CONF_SERVICE, "idle_timeout", 1, LIMIT_TIMEOUT_MAX),
	/* 0: off (-t warns, see audit.c). */
	CONF_RANGE(CONF_SERVICE, "cleartext_timeout", 0, LIMIT_TIMEOUT_MAX),
	CONF_RANGE(CONF_SERVICE, "smtp_greeting_delay", 0,
	    LIMIT_GREETING_DELAY_MAX),
	CONF_RANGE(CONF_SERVICE, "backend_connect_timeout", 1,
	    LIMIT_TIMEOUT_MAX),
	CONF_RANGE(CONF_SERVICE, "max_line_length", LIMIT_LINE_MIN,
	    LIMIT_LINE_MAX),
	CONF_ENUM(CONF_SERVICE, "smtp_bare_newline", conf_bare_newline),
	CONF_RANGE(CONF_SERVICE, "max_errors", 1, LIMIT_ERRORS_MAX),
	CONF_ENUM(CONF_SERVICE, "backend_tls", conf_backend_tls),
	CONF_CHECK(CONF_SERVICE, "backend_source", conf_check_source),
	CONF_CHECK(CONF_SERVICE, "backend_ca_file", conf_check_abspath),
	CONF_CHECK(CONF_SERVICE, "backend_ca_path", conf_check_abspath),
	CONF_CHECK(CONF_SERVICE, "backend_tls_name", conf_check_hostname),
	CONF_CHECK(CONF_SERVICE, "backend_tls_certificate", conf_check_abspath),
	CONF_CHECK(CONF_SERVICE, "backend_tls_key", conf_check_abspath),
	CONF_ENUM(CONF_SERVICE, "backend_tls_profile", conf_profiles),
};

/* Options that only mean something for one protocol. */
static const struct {
	const char	*name;
	enum proto_id	 proto;
} conf_proto_only[] = {
	{ "xclient", PROTO_SMTP },
	{ "smtp_bare_newline", PROTO_SMTP },
	{ "smtp_greeting_delay", PROTO_SMTP },
};

#define NITEMS(a)	(sizeof(a) / sizeof((a)[0]))

static struct conf_parse *conf_cur;

/* ------------------------------------------------------------------ */
/* Errors. */

static void
conf_vfail(int line, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
conf_vfail(int line, const char *fmt, va_list ap)
{
	struct conf_parse	*p = conf_cur;
	int			 n;

	if (p == NULL || p->failed)
		return;		/* the first error wins */
	p->failed = 1;
	if (p->errlen == 0)
		return;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->file);
	if (n < 0 || (size_t)n >= p->errlen)
		return;
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
}

static void
conf_fail(int line, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	conf_vfail(line, fmt, ap);
	va_end(ap);
}

/*
 * libconfuse's own errors (unknown option, duplicate title, syntax):
 * its wording, our prefix, and the section it happened in.
 */
static void
conf_cfg_error(cfg_t *cfg, const char *fmt, va_list ap)
{
	char	 msg[CONF_MSG_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (cfg != NULL && cfg->title != NULL)
		conf_fail(cfg->line, "%s '%s': %s", cfg->name,
		    conf_q(cfg->title), msg);
	else
		conf_fail(cfg != NULL ? cfg->line : 0, "%s", msg);
}

/*
 * Text from the file, escaped and cut for a one-line message.  A few
 * rotating buffers so that one message can quote several values.
 */
static const char *
conf_q(const char *s)
{
	static char	 bufs[4][LOG_ESCAPE_SIZE(CONF_QUOTE_MAX)];
	static unsigned	 next;
	char		*b = bufs[next++ % NITEMS(bufs)];

	return log_escape(b, sizeof(bufs[0]), s, strlen(s), CONF_QUOTE_MAX);
}

/* ------------------------------------------------------------------ */
/* Where things were set: cfg_opt_t has no line, so we keep our own. */

static enum conf_kind
conf_kind(const cfg_t *cfg)
{
	if (strcmp(cfg->name, "tls") == 0)
		return CONF_TLS;
	if (strcmp(cfg->name, "sni") == 0)
		return CONF_SNI;
	if (strcmp(cfg->name, "service") == 0)
		return CONF_SERVICE;
	return CONF_ROOT;
}

static const struct conf_mark *
conf_mark_find(const cfg_t *sec, const char *name)
{
	const struct conf_parse	*p = conf_cur;
	size_t			 i;

	for (i = 0; i < p->nmarks; i++) {
		const struct conf_mark *m = &p->marks[i];

		if (m->sec != sec)
			continue;
		if (name == NULL ? m->name == NULL :
		    m->name != NULL && strcmp(m->name, name) == 0)
			return m;
	}
	return NULL;
}

static void
conf_mark_add(const cfg_t *sec, const char *name, int line)
{
	struct conf_parse	*p = conf_cur;

	if (p->nmarks == p->marks_cap) {
		size_t		 cap = p->marks_cap ? p->marks_cap * 2 : 64;
		void		*m;

		m = reallocarray(p->marks, cap, sizeof(*p->marks));
		if (m == NULL)
			fatal("reallocarray");
		p->marks = m;
		p->marks_cap = cap;
	}
	p->marks[p->nmarks].sec = sec;
	p->marks[p->nmarks].name = name;
	p->marks[p->nmarks].line = line;
	p->nmarks++;
}

/*
 * Record where sec starts.  While libconfuse parses a section it leaves
 * the parent's line counter at the opening brace, so the parent knows.
 * The parent of an sni section is the tls section being parsed, which is
 * the last one in the root.
 */
static void
conf_mark_start(cfg_t *sec)
{
	cfg_t	*root = conf_cur->root, *parent = root;
	unsigned n;

	if (sec == root || conf_mark_find(sec, NULL) != NULL)
		return;
	if (conf_kind(sec) == CONF_SNI) {
		n = cfg_size(root, "tls");
		if (n == 0)
			return;
		parent = cfg_getnsec(root, "tls", n - 1);
		conf_mark_start(parent);
	}
	conf_mark_add(sec, NULL, parent->line);
}

/*
 * Record where an option was set.  Setting a single-valued option twice
 * in one section is refused: libconfuse would silently keep the last.
 * A list reports each value, so only its first line is kept.
 */
static int
conf_mark_option(cfg_t *cfg, cfg_opt_t *opt)
{
	const struct conf_mark	*m = conf_mark_find(cfg, opt->name);

	if (m == NULL) {
		conf_mark_add(cfg, opt->name, cfg->line);
		return 0;
	}
	if (opt->flags & CFGF_LIST)
		return 0;
	conf_fail(cfg->line, "option '%s': already set at line %d",
	    opt->name, m->line);
	return -1;
}

static int
conf_sec_line(const cfg_t *sec)
{
	const struct conf_mark	*m = conf_mark_find(sec, NULL);

	return m != NULL ? m->line : sec->line;
}

/* Line of an option, or of its section when it was left at default. */
static int
conf_line(const cfg_t *sec, const char *name)
{
	const struct conf_mark	*m = conf_mark_find(sec, name);

	return m != NULL ? m->line : conf_sec_line(sec);
}

static int
conf_is_set(const cfg_t *sec, const char *name)
{
	return conf_mark_find(sec, name) != NULL;
}

/* ------------------------------------------------------------------ */
/* Reading the file: size and NUL checks, comments, braces. */

/* Bounded read; a NUL byte would end libconfuse's buffer early. */
static char *
conf_read(const char *path, size_t *lenp)
{
	FILE	*fp;
	char	*buf, *nul;
	size_t	 len;
	int	 line;

	if ((fp = fopen(path, "r")) == NULL) {
		conf_fail(0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	buf = util_xcalloc(1, CONF_FILE_MAX + 2);
	len = fread(buf, 1, CONF_FILE_MAX + 1, fp);
	if (ferror(fp))
		conf_fail(0, "cannot read: %s", strerror(errno));
	else if (len > CONF_FILE_MAX)
		conf_fail(0, "file is larger than %d bytes", CONF_FILE_MAX);
	else if ((nul = memchr(buf, '\0', len)) != NULL) {
		for (line = 1; nul-- > buf; )
			line += *nul == '\n';
		conf_fail(line, "NUL byte in file");
	}
	fclose(fp);
	if (conf_cur->failed) {
		free(buf);
		return NULL;
	}
	*lenp = len;
	return buf;
}

/* Bytes that continue an unquoted word in libconfuse's lexer. */
static int
conf_word_char(char c)
{
	return c != '\0' && strchr(" \t\r\n#\"'={}()+,*", c) == NULL;
}

/* Skip a quoted string starting at b[i]; returns the index after it. */
static size_t
conf_skip_string(const char *b, size_t len, size_t i, int *line)
{
	char	 q = b[i++];

	for (; i < len; i++) {
		if (b[i] == '\\' && i + 1 < len) {
			*line += b[++i] == '\n';
			continue;
		}
		*line += b[i] == '\n';
		if (b[i] == q)
			return i + 1;
	}
	return len;	/* unterminated: libconfuse reports it */
}

/*
 * Blank the comment at b[i] ('#' or '//' to the end of the line, or a
 * block comment) with spaces, keeping newlines.  Returns the index after
 * it, or 0 for a block comment that never ends.
 */
static size_t
conf_blank_comment(char *b, size_t len, size_t i, int *line)
{
	int	 block = b[i] == '/' && b[i + 1] == '*';

	for (; i < len; i++) {
		if (!block && b[i] == '\n')
			return i;
		if (block && b[i] == '*' && i + 1 < len && b[i + 1] == '/') {
			b[i] = b[i + 1] = ' ';
			return i + 2;
		}
		if (b[i] == '\n')
			(*line)++;
		else
			b[i] = ' ';
	}
	return block ? 0 : len;
}

/*
 * Comments start with '#' anywhere outside quotes, or with "//" or a
 * block comment's opening where a token starts ("/etc//x" stays a path).
 * Braces are counted: a section still open at the end of the file is an
 * error, reported after libconfuse had its say (its message is more
 * precise when the text is wrong in other ways too).
 */
static int
conf_strip(char *b, size_t len)
{
	int	 line = 1, depth = 0, start, opened[CONF_DEPTH_MAX];
	int	 inword = 0;
	size_t	 i = 0;

	while (i < len) {
		char c = b[i];

		if (c == '"' || c == '\'') {
			i = conf_skip_string(b, len, i, &line);
			inword = 0;
			continue;
		}
		if (c == '#' || (!inword && c == '/' && i + 1 < len &&
		    (b[i + 1] == '/' || b[i + 1] == '*'))) {
			start = line;
			if ((i = conf_blank_comment(b, len, i, &line)) == 0) {
				conf_fail(start, "comment is never closed "
				    "(missing '*/')");
				return -1;
			}
			inword = 0;
			continue;
		}
		if (c == '\n')
			line++;
		else if (c == '{') {	/* "${VAR}" holds one of each */
			if (depth < CONF_DEPTH_MAX)
				opened[depth] = line;
			depth++;
		} else if (c == '}' && depth > 0)
			depth--;
		inword = conf_word_char(c);
		i++;
	}
	if (depth > 0)
		conf_cur->unclosed = opened[(depth < CONF_DEPTH_MAX ? depth :
		    CONF_DEPTH_MAX) - 1];
	return 0;
}

/* ------------------------------------------------------------------ */
/* Layer 1: checks while parsing. */

/*
 * Decimal only: libconfuse's own strtol(..., 0) would read "010" as 8 and
 * accept "0x10" and "-1".  Nine digits are more than any limit needs.
 */
static int
conf_parse_int(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	long		 v = 0;
	const char	*s;

	for (s = value; s != NULL && *s != '\0'; s++) {
		if (!isdigit((unsigned char)*s) || s - value >= 9)
			break;
		v = v * 10 + (*s - '0');
	}
	if (value == NULL || *value == '\0' || *s != '\0') {
		conf_fail(cfg->line, "option '%s': '%s' is not a decimal "
		    "number from 0 to 999999999", opt->name,
		    conf_q(value != NULL ? value : ""));
		return -1;
	}
	*(long *)result = v;
	return 0;
}

/*
 * The one libconfuse validator, installed on every option: it runs after
 * each value (for lists, also at the closing brace) and after each
 * section.  Only the newest value of a list needs checking.
 */
static int
conf_validate(cfg_t *cfg, cfg_opt_t *opt)
{
	char	 why[CONF_MSG_MAX];

	conf_mark_start(cfg);
	if (opt->type == CFGT_SEC) {
		/* An empty section has no option to tell where it began:
		 * its closing line is the best we have. */
		cfg_t *sec = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);

		if (sec != NULL && conf_mark_find(sec, NULL) == NULL)
			conf_mark_add(sec, NULL, cfg->line);
		return 0;
	}
	if (conf_mark_option(cfg, opt) == -1)
		return -1;
	if (cfg_opt_size(opt) == 0)
		return 0;
	why[0] = '\0';
	if (conf_check_value(cfg, opt, cfg_opt_size(opt) - 1, why,
	    sizeof(why)) == -1) {
		conf_fail(cfg->line, "option '%s': %s", opt->name, why);
		return -1;
	}
	return 0;
}

static const struct conf_rule *
conf_rule_find(enum conf_kind kind, const char *name)
{
	size_t	 i;

	for (i = 0; i < NITEMS(conf_rules); i++)
		if (conf_rules[i].kind == kind &&
		    strcmp(conf_rules[i].name, name) == 0)
			return &conf_rules[i];
	return NULL;
}

/* Every string: not empty, no control characters (log and reply safety). */
static int
conf_check_value(cfg_t *cfg, cfg_opt_t *opt, unsigned int idx, char *why,
    size_t len)
{
	const struct conf_rule	*r;
	const char		*s, *v;

	if (opt->type == CFGT_STR) {
		v = cfg_opt_getnstr(opt, idx);
		if (v == NULL || *v == '\0') {
			snprintf(why, len, "empty value");
			return -1;
		}
		for (s = v; *s != '\0'; s++)
			if (iscntrl((unsigned char)*s)) {
				snprintf(why, len, "'%s': control character "
				    "in value", conf_q(v));
				return -1;
			}
	}
	r = conf_rule_find(conf_kind(cfg), opt->name);
	if (r == NULL || r->check == NULL)
		return 0;
	return r->check(r, opt, idx, why, len);
}

static const struct conf_enum *
conf_enum_find(const struct conf_enum *e, const char *s)
{
	for (; e->name != NULL; e++)
		if (strcmp(e->name, s) == 0)
			return e;
	return NULL;
}

static int
conf_check_enum(const struct conf_rule *r, cfg_opt_t *opt, unsigned int idx,
    char *why, size_t len)
{
	const char		*v = cfg_opt_getnstr(opt, idx);
	const struct conf_enum	*e;
	int			 n;

	if (conf_enum_find(r->values, v) != NULL)
		return 0;
	n = snprintf(why, len, "'%s' is not one of", conf_q(v));
	for (e = r->values; e->name != NULL && n > 0 && (size_t)n < len; e++)
		n += snprintf(why + n, len - (size_t)n, "%s %s",
		    e == r->values ? "" : ",", e->name);
	return -1;
}

static int
conf_check_range(const struct conf_rule *r, cfg_opt_t *opt, unsigned int idx,
    char *why, size_t len)
{
	long	 v = cfg_opt_getnint(opt, idx);

	if (v >= r->min && v <= r->max)
		return 0;
	snprintf(why, len, "%ld is out of range %ld..%ld", v, r->min, r->max);
	return -1;
}

static int
conf_check_level(const struct conf_rule *r, cfg_opt_t *opt, unsigned int idx,
    char *why, size_t len)
{
	const char	*v = cfg_opt_getnstr(opt, idx);

	if ((int)log_level_parse(v) >= 0)
		return 0;
	snprintf(why, len, "'%s' is not one of error, warning, notice, info, "
	    "debug", conf_q(v));
	return -1;
}

static int
conf_check_facility(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	const char	*v = cfg_opt_getnstr(opt, idx);

	if (log_facility_parse(v) >= 0)
		return 0;
	snprintf(why, len, "'%s' is not a syslog facility", conf_q(v));
	return -1;
}

static int
conf_check_abspath(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	const char	*v = cfg_opt_getnstr(opt, idx);

	if (v[0] == '/')
		return 0;
	snprintf(why, len, "'%s' is not an absolute path", conf_q(v));
	return -1;
}

static int
conf_check_addr(const char *v, int allow_unix, int resolve, char *why,
    size_t len)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 msg[CONF_MSG_MAX];

	if (util_parse_addrport(v, allow_unix, resolve, &ss, &sslen, msg,
	    sizeof(msg)) == 0)
		return 0;
	snprintf(why, len, "'%s': %s", conf_q(v), msg);
	return -1;
}

/* Numeric only: a listener must not depend on DNS at startup. */
static int
conf_check_listen(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	return conf_check_addr(cfg_opt_getnstr(opt, idx), 0, 0, why, len);
}

static int
conf_check_backend(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	return conf_check_addr(cfg_opt_getnstr(opt, idx), 1, 1, why, len);
}

static int
conf_check_net(const struct conf_rule *r, cfg_opt_t *opt, unsigned int idx,
    char *why, size_t len)
{
	const char	*v = cfg_opt_getnstr(opt, idx);
	struct util_net	 net;
	char		 msg[CONF_MSG_MAX];

	if (util_parse_net(v, &net, msg, sizeof(msg)) == 0)
		return 0;
	snprintf(why, len, "'%s': %s", conf_q(v), msg);
	return -1;
}

/*
 * A DNS name: labels of letters, digits, '-' and '_', 1-63 bytes each.
 * The hostname goes into replies mailtlsd writes itself, so this also
 * keeps spaces and line breaks out of the protocol.  wildcard allows a
 * leading "*." (sni names).
 */
static int
conf_hostname_ok(const char *s, int wildcard)
{
	size_t	 label = 0, total = strlen(s);

	if (wildcard && strncmp(s, "*.", 2) == 0)
		s += 2;
	if (*s == '\0' || total > CONF_HOSTNAME_MAX)
		return 0;
	for (; *s != '\0'; s++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (isalnum((unsigned char)*s) || *s == '-' ||
		    *s == '_') {
			if (++label > 63)
				return 0;
		} else
			return 0;
	}
	return label > 0;
}

static int
conf_check_hostname(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	const char	*v = cfg_opt_getnstr(opt, idx);

	if (conf_hostname_ok(v, 0))
		return 0;
	snprintf(why, len, "'%s' is not a host name", conf_q(v));
	return -1;
}

/*
 * backend_source: "client", or an address literal without port (the
 * kernel picks the port).  A literal keeps startup free of DNS, like
 * listen; the unspecified address would mean no choice at all.
 */
static int
conf_parse_source(const char *v, struct sockaddr_storage *ss,
    socklen_t *sslen, char *why, size_t len)
{
	struct addrinfo			 hints, *res = NULL;
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(v, NULL, &hints, &res) != 0 || res == NULL ||
	    res->ai_addrlen > sizeof(*ss)) {
		snprintf(why, len, "'%s' is neither \"client\" nor an IPv4 "
		    "or IPv6 address (without port or brackets)", conf_q(v));
		if (res != NULL)
			freeaddrinfo(res);
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	sin = (const struct sockaddr_in *)ss;
	sin6 = (const struct sockaddr_in6 *)ss;
	if ((ss->ss_family == AF_INET &&
	    sin->sin_addr.s_addr == htonl(INADDR_ANY)) ||
	    (ss->ss_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))) {
		snprintf(why, len, "'%s' is the unspecified address (leave "
		    "backend_source unset instead)", conf_q(v));
		return -1;
	}
	return 0;
}

static int
conf_check_source(const struct conf_rule *r, cfg_opt_t *opt,
    unsigned int idx, char *why, size_t len)
{
	const char		*v = cfg_opt_getnstr(opt, idx);
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;

	if (strcmp(v, "client") == 0)
		return 0;
	return conf_parse_source(v, &ss, &sslen, why, len);
}

/* Install conf_validate on every option of the schema, recursively. */
static void
conf_set_validators(cfg_t *root, const cfg_opt_t *opts, const char *prefix)
{
	char	 path[128];
	size_t	 i;

	for (i = 0; opts[i].name != NULL; i++) {
		snprintf(path, sizeof(path), "%s%s", prefix, opts[i].name);
		cfg_set_validate_func(root, path, conf_validate);
		if (opts[i].type == CFGT_SEC) {
			snprintf(path, sizeof(path), "%s%s|", prefix,
			    opts[i].name);
			conf_set_validators(root, opts[i].subopts, path);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Layer 2 and 3: cross-checks and the copy. */

/*
 * The value of an enum option.  Values from the file were checked while
 * parsing and the schema's defaults are valid names, so this finds one.
 */
static int
conf_enum_value(cfg_t *sec, const char *name)
{
	const struct conf_rule	*r = conf_rule_find(conf_kind(sec), name);
	const struct conf_enum	*e;
	const char		*v = cfg_getstr(sec, name);

	if (r == NULL || r->values == NULL || v == NULL ||
	    (e = conf_enum_find(r->values, v)) == NULL)
		fatalx("conf: no value for enum option '%s'", name);
	return e->value;
}

static char *
conf_strdup(cfg_t *sec, const char *name)
{
	const char	*v = cfg_getstr(sec, name);

	return v != NULL ? util_xstrdup(v) : NULL;
}

static unsigned
conf_uint(cfg_t *sec, const char *name)
{
	long	 v = cfg_getint(sec, name);

	return v > 0 ? (unsigned)v : 0;
}

/* tls and service names appear in logs and systemd socket names. */
static int
conf_check_title(cfg_t *sec)
{
	const char	*t = cfg_title(sec), *s;

	for (s = t; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("._-", *s) == NULL)
			break;
	if (*t != '\0' && *s == '\0' && s - t <= CONF_NAME_MAX)
		return 0;
	conf_fail(conf_sec_line(sec), "%s '%s': bad name (use 1-%d letters, "
	    "digits, '.', '_' or '-')", cfg_name(sec), conf_q(t),
	    CONF_NAME_MAX);
	return -1;
}

static unsigned
conf_workers(long v)
{
	long	 n = v;

	/* 0 = one per CPU, the usual choice for an event-loop daemon. */
	if (n == 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > LIMIT_WORKERS_MAX)
		n = LIMIT_WORKERS_MAX;
	return (unsigned)n;
}

static int
conf_build_global(struct conf *c, cfg_t *root)
{
	c->user = conf_strdup(root, "user");
	c->group = conf_strdup(root, "group");
	c->chroot = conf_strdup(root, "chroot");
	c->pid_file = conf_strdup(root, "pid_file");
	c->log_target = (enum log_target)conf_enum_value(root, "log_target");
	c->log_level = log_level_parse(cfg_getstr(root, "log_level"));
	c->syslog_facility = log_facility_parse(cfg_getstr(root,
	    "syslog_facility"));
	if ((int)c->log_level < 0 || c->syslog_facility < 0)
		fatalx("conf: bad default log level or facility");
	c->workers = conf_workers(cfg_getint(root, "workers"));
	c->max_connections = conf_uint(root, "max_connections");
	c->shutdown_timeout = conf_uint(root, "shutdown_timeout");
	return 0;
}

/*
 * certificate[i] goes with key[i]: several pairs are several key types
 * (ECDSA + RSA) for one name.  label names the section in messages.
 */
static int
conf_build_pairs(cfg_t *sec, const char *label, struct conf_keypair **pairs,
    size_t *npairs)
{
	unsigned	 nc = cfg_size(sec, "certificate");
	unsigned	 nk = cfg_size(sec, "key");
	unsigned	 i;

	if (nc == 0) {
		conf_fail(conf_sec_line(sec), "%s: option 'certificate' is "
		    "required", label);
		return -1;
	}
	if (nc != nk) {
		conf_fail(conf_line(sec, nk ? "key" : "certificate"),
		    "%s: %u certificate(s) but %u key(s); option 'key' must "
		    "list one key per certificate, in the same order", label,
		    nc, nk);
		return -1;
	}
	*pairs = util_xcalloc(nc, sizeof(**pairs));
	*npairs = nc;
	for (i = 0; i < nc; i++) {
		(*pairs)[i].certificate =
		    util_xstrdup(cfg_getnstr(sec, "certificate", i));
		(*pairs)[i].key = util_xstrdup(cfg_getnstr(sec, "key", i));
	}
	return 0;
}

static int
conf_build_sni(struct conf_tls *t, cfg_t *tsec)
{
	char	 label[CONF_MSG_MAX];
	cfg_t	*sec;
	size_t	 i;

	t->nsni = cfg_size(tsec, "sni");
	if (t->nsni == 0)
		return 0;
	t->sni = util_xcalloc(t->nsni, sizeof(*t->sni));
	for (i = 0; i < t->nsni; i++) {
		sec = cfg_getnsec(tsec, "sni", (unsigned)i);
		snprintf(label, sizeof(label), "tls '%s': sni '%s'",
		    conf_q(t->name), conf_q(cfg_title(sec)));
		if (!conf_hostname_ok(cfg_title(sec), 1)) {
			conf_fail(conf_sec_line(sec), "%s: not a host name "
			    "or *.domain", label);
			return -1;
		}
		t->sni[i].name = util_xstrdup(cfg_title(sec));
		if (conf_build_pairs(sec, label, &t->sni[i].pairs,
		    &t->sni[i].npairs) == -1)
			return -1;
	}
	return 0;
}

static int
conf_build_tls(struct conf_tls *t, cfg_t *sec)
{
	char	 label[CONF_MSG_MAX];

	if (conf_check_title(sec) == -1)
		return -1;
	t->name = util_xstrdup(cfg_title(sec));
	t->line = conf_sec_line(sec);
	snprintf(label, sizeof(label), "tls '%s'", t->name);
	if (conf_build_pairs(sec, label, &t->pairs, &t->npairs) == -1)
		return -1;
	t->profile = (enum tls_profile)conf_enum_value(sec, "profile");
	t->min_protocol = cfg_getstr(sec, "min_protocol") != NULL ?
	    conf_enum_value(sec, "min_protocol") : 0;
	t->ciphers = conf_strdup(sec, "ciphers");
	t->ciphersuites = conf_strdup(sec, "ciphersuites");
	t->groups = conf_strdup(sec, "groups");
	t->dh_params = conf_strdup(sec, "dh_params");
	t->client_certificates = (enum client_cert_mode)conf_enum_value(sec,
	    "client_certificates");
	t->ca_file = conf_strdup(sec, "ca_file");
	t->ca_path = conf_strdup(sec, "ca_path");
	/*
	 * "request" without a CA is the SPEC's port-25 example: whatever the
	 * client presents is logged (as Untrusted) and passed on.  "require"
	 * is a promise that only verified clients get in: it needs a CA.
	 */
	if (t->client_certificates == CLIENT_CERT_REQUIRE &&
	    t->ca_file == NULL && t->ca_path == NULL) {
		conf_fail(conf_line(sec, "client_certificates"), "%s: "
		    "client_certificates = \"%s\" needs ca_file or ca_path",
		    label, cfg_getstr(sec, "client_certificates"));
		return -1;
	}
	t->session_tickets = cfg_getbool(sec, "session_tickets") == cfg_true;
	t->ticket_key_file = conf_strdup(sec, "ticket_key_file");
	return conf_build_sni(t, sec);
}

static int
conf_build_tls_all(struct conf *c, cfg_t *root)
{
	size_t	 i;

	c->ntls = cfg_size(root, "tls");
	if (c->ntls == 0)
		return 0;
	c->tls = util_xcalloc(c->ntls, sizeof(*c->tls));
	for (i = 0; i < c->ntls; i++)
		if (conf_build_tls(&c->tls[i], cfg_getnsec(root, "tls",
		    (unsigned)i)) == -1)
			return -1;
	return 0;
}

static int
conf_check_required(cfg_t *sec, const char *label)
{
	static const char *const required[] = { "protocol", "tls_mode" };
	size_t	 i;

	for (i = 0; i < NITEMS(required); i++)
		if (cfg_getstr(sec, required[i]) == NULL) {
			conf_fail(conf_sec_line(sec), "%s: option '%s' is "
			    "required", label, required[i]);
			return -1;
		}
	if (cfg_size(sec, "backend") == 0) {
		conf_fail(conf_line(sec, "backend"), "%s: option 'backend' "
		    "needs at least one address", label);
		return -1;
	}
	return 0;
}

static int
conf_check_proto_only(cfg_t *sec, enum proto_id proto)
{
	size_t	 i;

	for (i = 0; i < NITEMS(conf_proto_only); i++) {
		if (conf_proto_only[i].proto == proto ||
		    !conf_is_set(sec, conf_proto_only[i].name))
			continue;
		conf_fail(conf_line(sec, conf_proto_only[i].name),
		    "option '%s': only valid in %s services (service '%s' "
		    "is %s)", conf_proto_only[i].name,
		    conf_protos[conf_proto_only[i].proto].name,
		    conf_q(cfg_title(sec)), conf_protos[proto].name);
		return -1;
	}
	return 0;
}

/* tls may be omitted when there is exactly one tls section. */
static int
conf_resolve_tls(struct conf *c, struct conf_service *s, cfg_t *sec,
    const char *label)
{
	const char	*name = cfg_getstr(sec, "tls");
	size_t		 i;

	if (name == NULL) {
		if (c->ntls == 1) {
			s->tls = &c->tls[0];
			return 0;
		}
		conf_fail(conf_sec_line(sec), c->ntls == 0 ?
		    "%s: no tls section is defined" :
		    "%s: option 'tls' is required when there are several "
		    "tls sections", label);
		return -1;
	}
	for (i = 0; i < c->ntls; i++)
		if (strcmp(c->tls[i].name, name) == 0) {
			s->tls = &c->tls[i];
			return 0;
		}
	conf_fail(conf_line(sec, "tls"), "option 'tls': no tls section named "
	    "'%s'", conf_q(name));
	return -1;
}

static int
conf_build_endpoints(cfg_t *sec, const char *name, int allow_unix,
    int resolve, struct conf_endpoint **eps, size_t *neps)
{
	struct conf_endpoint	*e;
	char			 msg[CONF_MSG_MAX];
	size_t			 i;

	*neps = cfg_size(sec, name);
	if (*neps == 0)
		return 0;
	*eps = util_xcalloc(*neps, sizeof(**eps));
	for (i = 0; i < *neps; i++) {
		e = &(*eps)[i];
		e->text = util_xstrdup(cfg_getnstr(sec, name, (unsigned)i));
		/* Checked while parsing; a name may still fail to resolve
		 * the second time. */
		if (util_parse_addrport(e->text, allow_unix, resolve, &e->ss,
		    &e->sslen, msg, sizeof(msg)) == -1) {
			conf_fail(conf_line(sec, name), "option '%s': '%s': %s",
			    name, conf_q(e->text), msg);
			return -1;
		}
	}
	return 0;
}

/* A list of networks (proxy_trusted, stats_allow). */
static int
conf_build_netlist(cfg_t *sec, const char *name, struct util_net **nets,
    size_t *nnets)
{
	char	 msg[CONF_MSG_MAX];
	size_t	 i;

	*nnets = cfg_size(sec, name);
	if (*nnets == 0)
		return 0;
	*nets = util_xcalloc(*nnets, sizeof(**nets));
	for (i = 0; i < *nnets; i++) {
		const char *v = cfg_getnstr(sec, name, (unsigned)i);

		if (util_parse_net(v, &(*nets)[i], msg, sizeof(msg)) == -1) {
			conf_fail(conf_line(sec, name), "option '%s': '%s': %s",
			    name, conf_q(v), msg);
			return -1;
		}
	}
	return 0;
}

static int
conf_build_nets(cfg_t *sec, struct conf_service *s)
{
	char	 msg[CONF_MSG_MAX];
	size_t	 i;

	s->nproxy_trusted = cfg_size(sec, "proxy_trusted");
	if (s->nproxy_trusted == 0)
		return 0;
	s->proxy_trusted = util_xcalloc(s->nproxy_trusted,
	    sizeof(*s->proxy_trusted));
	for (i = 0; i < s->nproxy_trusted; i++) {
		const char *v = cfg_getnstr(sec, "proxy_trusted", (unsigned)i);

		if (util_parse_net(v, &s->proxy_trusted[i], msg,
		    sizeof(msg)) == -1) {
			conf_fail(conf_line(sec, "proxy_trusted"), "option "
			    "'proxy_trusted': '%s': %s", conf_q(v), msg);
			return -1;
		}
	}
	return 0;
}

/*
 * accept_proxy lets a peer choose the client address of every limit and
 * log line, so it needs the list of peers allowed to; a list without
 * accept_proxy would be parsed and ignored, which hides a mistake (the
 * operator believes the header is read).  Both are errors.
 */
static int
conf_check_accept_proxy(cfg_t *sec, const struct conf_service *s)
{
	if (s->accept_proxy && s->nproxy_trusted == 0) {
		conf_fail(conf_line(sec, "accept_proxy"), "option "
		    "'accept_proxy': needs 'proxy_trusted', the networks "
		    "allowed to send a PROXY header");
		return -1;
	}
	if (!s->accept_proxy && s->nproxy_trusted != 0) {
		conf_fail(conf_line(sec, "proxy_trusted"), "option "
		    "'proxy_trusted': has no effect without accept_proxy = "
		    "true");
		return -1;
	}
	return 0;
}

static int
conf_build_hostname(struct conf_service *s, cfg_t *sec, const char *label)
{
	char	 host[CONF_HOSTNAME_MAX + 2];

	if ((s->hostname = conf_strdup(sec, "hostname")) != NULL)
		return 0;
	memset(host, 0, sizeof(host));
	/* gethostname() need not terminate a truncated name. */
	if (gethostname(host, sizeof(host) - 1) == -1 ||
	    !conf_hostname_ok(host, 0)) {
		conf_fail(conf_sec_line(sec), "%s: the system host name is "
		    "unusable, set option 'hostname'", label);
		return -1;
	}
	s->hostname = util_xstrdup(host);
	return 0;
}

/*
 * backend_source against the backends, all known by now (names were
 * resolved): a source address cannot be bound to a unix socket, and a
 * fixed one must be of each backend's family.  The client's family is
 * only known per session: backend.c logs that mismatch as a failed
 * connect and tries the next backend.
 */
static int
conf_build_source(struct conf_service *s, cfg_t *sec)
{
	const char			*v = cfg_getstr(sec, "backend_source");
	const struct conf_endpoint	*e;
	char				 msg[CONF_MSG_MAX];
	size_t				 i;

	if (v == NULL)
		return 0;
	if (strcmp(v, "client") == 0)
		s->backend_source = BACKEND_SOURCE_CLIENT;
	else {
		s->backend_source = BACKEND_SOURCE_ADDR;
		if (conf_parse_source(v, &s->source, &s->sourcelen, msg,
		    sizeof(msg)) == -1) {
			conf_fail(conf_line(sec, "backend_source"),
			    "option 'backend_source': %s", msg);
			return -1;
		}
	}
	for (i = 0; i < s->nbackends; i++) {
		e = &s->backends[i];
		if (e->ss.ss_family == AF_UNIX) {
			conf_fail(conf_line(sec, "backend_source"), "option "
			    "'backend_source': backend '%s' is a unix socket, "
			    "which has no source address", conf_q(e->text));
			return -1;
		}
		if (s->backend_source == BACKEND_SOURCE_ADDR &&
		    e->ss.ss_family != s->source.ss_family) {
			conf_fail(conf_line(sec, "backend_source"), "option "
			    "'backend_source': '%s' is %s but backend '%s' is "
			    "%s", conf_q(v), s->source.ss_family == AF_INET ?
			    "IPv4" : "IPv6", conf_q(e->text),
			    e->ss.ss_family == AF_INET ? "IPv4" : "IPv6");
			return -1;
		}
	}
	return 0;
}

/* Limits: SPEC section 6 defaults, per protocol where they differ. */
static void
conf_build_limits(struct conf_service *s, cfg_t *sec)
{
	s->max_connections = conf_uint(sec, "max_connections");
	s->max_connections_per_ip = conf_uint(sec, "max_connections_per_ip");
	s->max_connection_rate_per_ip = conf_uint(sec,
	    "max_connection_rate_per_ip");
	s->max_auth_failures_per_ip = conf_uint(sec, "max_auth_failures_per_ip");
	s->auth_failure_window = conf_uint(sec, "auth_failure_window");
	s->handshake_timeout = conf_uint(sec, "handshake_timeout");
	s->idle_timeout = conf_uint(sec, "idle_timeout");
	if (s->idle_timeout == 0)
		s->idle_timeout = conf_protos[s->protocol].idle_timeout;
	s->cleartext_timeout = conf_uint(sec, "cleartext_timeout");
	s->smtp_greeting_delay = conf_uint(sec, "smtp_greeting_delay");
	s->backend_connect_timeout = conf_uint(sec, "backend_connect_timeout");
	s->max_line_length = conf_uint(sec, "max_line_length");
	if (s->max_line_length == 0)
		s->max_line_length = conf_protos[s->protocol].line_max;
	s->max_errors = conf_uint(sec, "max_errors");
}

static int
conf_build_service(struct conf *c, struct conf_service *s, cfg_t *sec)
{
	char	 label[CONF_MSG_MAX];

	if (conf_check_title(sec) == -1)
		return -1;
	s->name = util_xstrdup(cfg_title(sec));
	s->line = conf_sec_line(sec);
	snprintf(label, sizeof(label), "service '%s'", s->name);
	if (conf_check_required(sec, label) == -1)
		return -1;
	s->protocol = (enum proto_id)conf_enum_value(sec, "protocol");
	s->tls_mode = (enum tls_mode)conf_enum_value(sec, "tls_mode");
	if (conf_check_proto_only(sec, s->protocol) == -1)
		return -1;
	/* A plaintext listener has no server side TLS to configure. */
	if (s->tls_mode == TLS_MODE_NONE) {
		if (conf_is_set(sec, "tls")) {
			conf_fail(conf_line(sec, "tls"), "option 'tls': has "
			    "no effect with tls_mode = \"none\"");
			return -1;
		}
	} else if (conf_resolve_tls(c, s, sec, label) == -1)
		return -1;
	/* Kept for implicit services too, where it has no effect. */
	s->require_starttls = cfg_getbool(sec, "require_starttls") == cfg_true;
	if (conf_build_endpoints(sec, "listen", 0, 0, &s->listen,
	    &s->nlisten) == -1 ||
	    conf_build_endpoints(sec, "backend", 1, 1, &s->backends,
	    &s->nbackends) == -1 ||
	    conf_build_source(s, sec) == -1 ||
	    conf_build_nets(sec, s) == -1 ||
	    conf_build_hostname(s, sec, label) == -1)
		return -1;
	s->send_proxy = (enum send_proxy_mode)conf_enum_value(sec,
	    "send_proxy");
	s->xclient = cfg_getbool(sec, "xclient") == cfg_true;
	s->accept_proxy = cfg_getbool(sec, "accept_proxy") == cfg_true;
	if (conf_check_accept_proxy(sec, s) == -1)
		return -1;
	s->smtp_bare_newline = (enum bare_newline_mode)conf_enum_value(sec,
	    "smtp_bare_newline");
	s->backend_tls = (enum backend_tls_mode)conf_enum_value(sec,
	    "backend_tls");
	if (conf_check_backend_tls(sec, s) == -1 ||
	    conf_check_plaintext(sec, s) == -1)
		return -1;
	conf_build_limits(s, sec);
	return 0;
}

/* Whether a listen address is loopback (127/8, ::1, v4-mapped 127/8). */
static int
conf_is_loopback(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	if (ss->ss_family == AF_INET) {
		sin = (const struct sockaddr_in *)ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
		    sin6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

/*
 * tls_mode = "none" (SPEC 12): a plaintext listener is for local
 * programs.  Anywhere but loopback the client's credentials would cross
 * the network in clear, so it takes an explicit allow_plaintext_listen
 * (and -t still warns).
 */
static int
conf_check_plaintext(cfg_t *sec, const struct conf_service *s)
{
	size_t	 i;

	if (s->tls_mode != TLS_MODE_NONE) {
		if (conf_is_set(sec, "allow_plaintext_listen")) {
			conf_fail(conf_line(sec, "allow_plaintext_listen"),
			    "option 'allow_plaintext_listen': only valid with "
			    "tls_mode = \"none\"");
			return -1;
		}
		return 0;
	}
	/*
	 * The cleartext rules of SPEC 3 are off on these services because
	 * the backend leg is encrypted; plaintext on both legs would relay
	 * passwords in clear with none of them.
	 */
	if (s->backend_tls == BACKEND_TLS_NONE) {
		conf_fail(conf_line(sec, "tls_mode"), "option 'tls_mode': "
		    "\"none\" needs backend_tls (\"implicit\" or "
		    "\"starttls\"): plaintext on both legs is not a TLS proxy");
		return -1;
	}
	if (s->accept_proxy) {
		conf_fail(conf_line(sec, "accept_proxy"), "option "
		    "'accept_proxy': not valid with tls_mode = \"none\"");
		return -1;
	}
	if (cfg_getbool(sec, "allow_plaintext_listen") == cfg_true)
		return 0;
	for (i = 0; i < s->nlisten; i++)
		if (!conf_is_loopback(&s->listen[i].ss)) {
			conf_fail(conf_line(sec, "listen"), "option 'listen': "
			    "'%s' is not a loopback address; tls_mode = "
			    "\"none\" listens in plaintext there only with "
			    "allow_plaintext_listen = true",
			    conf_q(s->listen[i].text));
			return -1;
		}
	return 0;
}

/*
 * The backend leg's TLS options (SPEC 12).  Each needs backend_tls: an
 * option that would be read and then ignored is refused instead.  The
 * name to verify defaults to the host part of each backend address
 * (backend.c); a unix socket has none, so it must be given.
 */
static int
conf_check_backend_tls(cfg_t *sec, struct conf_service *s)
{
	static const char *const opts[] = { "backend_ca_file",
	    "backend_ca_path", "backend_tls_name", "backend_tls_certificate",
	    "backend_tls_key", "backend_tls_profile", "backend_tls_verify",
	    "backend_dane" };
	size_t	 i;

	if (s->backend_tls == BACKEND_TLS_NONE) {
		for (i = 0; i < NITEMS(opts); i++)
			if (conf_is_set(sec, opts[i])) {
				conf_fail(conf_line(sec, opts[i]), "option "
				    "'%s': has no effect without backend_tls",
				    opts[i]);
				return -1;
			}
		return 0;
	}
	s->backend_ca_file = conf_strdup(sec, "backend_ca_file");
	s->backend_ca_path = conf_strdup(sec, "backend_ca_path");
	s->backend_tls_name = conf_strdup(sec, "backend_tls_name");
	s->backend_pair.certificate = conf_strdup(sec,
	    "backend_tls_certificate");
	s->backend_pair.key = conf_strdup(sec, "backend_tls_key");
	s->backend_tls_profile = (enum tls_profile)conf_enum_value(sec,
	    "backend_tls_profile");
	s->backend_tls_verify = cfg_getbool(sec, "backend_tls_verify") ==
	    cfg_true;
	s->backend_dane = cfg_getbool(sec, "backend_dane") == cfg_true;
	if ((s->backend_pair.certificate == NULL) !=
	    (s->backend_pair.key == NULL)) {
		conf_fail(conf_line(sec, s->backend_pair.key == NULL ?
		    "backend_tls_certificate" : "backend_tls_key"), "option "
		    "'%s': needs '%s' too", s->backend_pair.key == NULL ?
		    "backend_tls_certificate" : "backend_tls_key",
		    s->backend_pair.key == NULL ? "backend_tls_key" :
		    "backend_tls_certificate");
		return -1;
	}
	/* The header would have to precede the handshake: not done yet. */
	if (s->send_proxy != SEND_PROXY_NONE) {
		conf_fail(conf_line(sec, "send_proxy"), "option 'send_proxy': "
		    "not supported yet with backend_tls");
		return -1;
	}
	for (i = 0; i < s->nbackends; i++)
		if (s->backends[i].ss.ss_family == AF_UNIX &&
		    s->backend_tls_name == NULL) {
			conf_fail(conf_line(sec, "backend"), "option "
			    "'backend': '%s' has no host name to verify; set "
			    "backend_tls_name", conf_q(s->backends[i].text));
			return -1;
		}
	return s->backend_dane ? conf_check_backend_dane(sec, s) : 0;
}

/*
 * A name _PORT._tcp.NAME can be built on (RFC 1035 2.3.4): at most 253
 * characters (a trailing dot aside), labels of 1 to 63.  NULL if so,
 * else what is wrong.  backend_tls_name has been checked as a host name
 * already (conf_check_hostname()); a backend's host part only had to
 * resolve, and /etc/hosts may hold names no DNS query can carry.
 */
static const char *
conf_dane_name_bad(const char *name)
{
	size_t	 n = strlen(name), label = 0, i;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0)
		return "is empty";
	if (n > 253)
		return "is longer than 253 characters";
	for (i = 0; i <= n; i++) {
		if (i < n && name[i] != '.') {
			if (++label > 63)
				return "has a label longer than 63 characters";
			continue;
		}
		if (label == 0)
			return "has an empty label";
		label = 0;
	}
	return NULL;
}

/*
 * backend_dane looks up _PORT._tcp.NAME: every backend needs a port (no
 * unix socket) and a host name (backend_tls_name, or the backend's own
 * host part), never an address literal, and a name a query can carry
 * (backend_dane_long_label.conf: backend_tls_name's own check says so).
 */
static int
conf_check_backend_dane(cfg_t *sec, struct conf_service *s)
{
	const char	*text, *end, *bad;
	char		 host[300];
	unsigned char	 buf[16];
	size_t		 i, n;

	if (s->backend_tls_name != NULL &&
	    (inet_pton(AF_INET, s->backend_tls_name, buf) == 1 ||
	    inet_pton(AF_INET6, s->backend_tls_name, buf) == 1)) {
		conf_fail(conf_line(sec, "backend_dane"), "option "
		    "'backend_dane': backend_tls_name '%s' is an address; "
		    "TLSA records belong to a host name",
		    conf_q(s->backend_tls_name));
		return -1;
	}
	for (i = 0; i < s->nbackends; i++) {
		text = s->backends[i].text;
		if (s->backends[i].ss.ss_family == AF_UNIX) {
			conf_fail(conf_line(sec, "backend_dane"), "option "
			    "'backend_dane': backend '%s' is a unix socket, "
			    "which has no port for a TLSA record",
			    conf_q(text));
			return -1;
		}
		if (s->backend_tls_name != NULL)
			continue;
		if (text[0] == '[' || (end = strrchr(text, ':')) == NULL)
			end = text;
		n = (size_t)(end - text);
		if (n >= sizeof(host))
			n = sizeof(host) - 1;
		memcpy(host, text, n);
		host[n] = '\0';
		if (text[0] == '[' || inet_pton(AF_INET, host, buf) == 1) {
			conf_fail(conf_line(sec, "backend_dane"), "option "
			    "'backend_dane': backend '%s' is an address; set "
			    "backend_tls_name to the host name its TLSA "
			    "records belong to", conf_q(text));
			return -1;
		}
		if ((bad = conf_dane_name_bad(host)) != NULL) {
			conf_fail(conf_line(sec, "backend_dane"), "option "
			    "'backend_dane': the host name of backend '%s' %s: "
			    "no TLSA query can be made for it", conf_q(text),
			    bad);
			return -1;
		}
	}
	return 0;
}

static int
conf_endpoint_same(const struct conf_endpoint *a,
    const struct conf_endpoint *b)
{
	const struct sockaddr	*x = (const struct sockaddr *)&a->ss;
	const struct sockaddr	*y = (const struct sockaddr *)&b->ss;

	return util_addr_equal(x, y) &&
	    util_addr_port(x) == util_addr_port(y);
}

/* The service already listening on service i's j-th address, or NULL. */
static const struct conf_service *
conf_listener_owner(const struct conf *c, size_t i, size_t j)
{
	const struct conf_endpoint	*e = &c->services[i].listen[j];
	const struct conf_service	*t;
	size_t				 k, l, n;

	for (k = 0; k <= i; k++) {
		t = &c->services[k];
		n = k == i ? j : t->nlisten;	/* only earlier entries */
		for (l = 0; l < n; l++)
			if (conf_endpoint_same(e, &t->listen[l]))
				return t;
	}
	return NULL;
}

/*
 * Two listeners on one address:port would fail at bind() (or worse, be
 * shared through SO_REUSEPORT): refuse it here and name the other owner,
 * which may be the same service listing an address twice.
 */
static int
conf_check_listeners(struct conf *c, cfg_t *root)
{
	const struct conf_service	*t;
	cfg_t				*sec;
	size_t				 i, j;

	for (i = 0; i < c->nservices; i++)
		for (j = 0; j < c->services[i].nlisten; j++) {
			if ((t = conf_listener_owner(c, i, j)) == NULL)
				continue;
			sec = cfg_getnsec(root, "service", (unsigned)i);
			if (t == &c->services[i])
				conf_fail(conf_line(sec, "listen"), "option "
				    "'listen': '%s' is listed twice",
				    conf_q(t->listen[j].text));
			else
				conf_fail(conf_line(sec, "listen"), "option "
				    "'listen': '%s' is already used by service "
				    "'%s'", conf_q(c->services[i].listen[j].text),
				    t->name);
			return -1;
		}
	return 0;
}

/*
 * stats_listen and stats_allow (SPEC 11).  A stats address that a service
 * or an earlier stats entry also uses would fail at bind(): refuse it here.
 */
static int
conf_build_stats(struct conf *c, cfg_t *root)
{
	const struct conf_endpoint	*e;
	size_t				 i, j, k;

	if (conf_build_endpoints(root, "stats_listen", 0, 0, &c->stats_listen,
	    &c->nstats_listen) == -1 || conf_build_netlist(root, "stats_allow",
	    &c->stats_allow, &c->nstats_allow) == -1)
		return -1;
	c->stats_line = conf_line(root, "stats_listen");
	for (i = 0; i < c->nstats_listen; i++) {
		e = &c->stats_listen[i];
		for (j = 0; j < i; j++)
			if (conf_endpoint_same(e, &c->stats_listen[j])) {
				conf_fail(c->stats_line, "option 'stats_listen': "
				    "'%s' is listed twice", conf_q(e->text));
				return -1;
			}
		for (j = 0; j < c->nservices; j++)
			for (k = 0; k < c->services[j].nlisten; k++)
				if (conf_endpoint_same(e,
				    &c->services[j].listen[k])) {
					conf_fail(c->stats_line, "option "
					    "'stats_listen': '%s' is already used "
					    "by service '%s'", conf_q(e->text),
					    c->services[j].name);
					return -1;
				}
	}
	return 0;
}

static int
conf_build_services(struct conf *c, cfg_t *root)
{
	size_t	 i;

	c->nservices = cfg_size(root, "service");
	if (c->nservices == 0) {
		conf_fail(0, "no service defined (a 'service NAME { }' "
		    "section is required)");
		return -1;
	}
	c->services = util_xcalloc(c->nservices, sizeof(*c->services));
	for (i = 0; i < c->nservices; i++)
		if (conf_build_service(c, &c->services[i],
		    cfg_getnsec(root, "service", (unsigned)i)) == -1)
			return -1;
	return conf_check_listeners(c, root);
}

static struct conf *
conf_build(cfg_t *root, const char *path)
{
	struct conf	*c = util_xcalloc(1, sizeof(*c));

	c->file = util_xstrdup(path);
	if (conf_build_global(c, root) == -1 ||
	    conf_build_tls_all(c, root) == -1 ||
	    conf_build_services(c, root) == -1 ||
	    conf_build_stats(c, root) == -1) {
		conf_free(c);
		return NULL;
	}
	return c;
}

/* Parse text already read and stripped; the first error is in conf_cur. */
static struct conf *
conf_parse(const char *path, const char *text)
{
	struct conf	*c = NULL;
	cfg_t		*root;
	int		 rc;

	if ((root = cfg_init(conf_root_opts, CFGF_NONE)) == NULL)
		fatal("cfg_init");
	conf_cur->root = root;
	cfg_set_error_function(root, conf_cfg_error);
	conf_set_validators(root, conf_root_opts, "");
	rc = cfg_parse_buf(root, text);
	if (rc != CFG_SUCCESS)
		conf_fail(0, "parse error");	/* normally said already */
	if (conf_cur->unclosed > 0)
		conf_fail(conf_cur->unclosed, "'{' is never closed (missing "
		    "'}')");
	if (!conf_cur->failed)
		c = conf_build(root, path);
	if (conf_cur->failed && c != NULL) {
		conf_free(c);
		c = NULL;
	}
	cfg_free(root);
	conf_cur->root = NULL;
	return c;
}

struct conf *
conf_load(const char *path, char *err, size_t errlen)
{
	struct conf_parse	 p;
	struct conf		*c = NULL;
	char			*text;
	size_t			 len;

	memset(&p, 0, sizeof(p));
	p.file = path;
	p.err = err;
	p.errlen = errlen;
	if (errlen > 0)
		err[0] = '\0';
	conf_cur = &p;
	if ((text = conf_read(path, &len)) != NULL) {
		if (conf_strip(text, len) == 0)
			c = conf_parse(path, text);
		free(text);
	}
	free(p.marks);
	conf_cur = NULL;
	return c;
}

static void
conf_free_pairs(struct conf_keypair *pairs, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		free(pairs[i].certificate);
		free(pairs[i].key);
	}
	free(pairs);
}

static void
conf_free_endpoints(struct conf_endpoint *eps, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(eps[i].text);
	free(eps);
}

static void
conf_free_tls(struct conf_tls *t)
{
	size_t	 i;

	free(t->name);
	conf_free_pairs(t->pairs, t->npairs);
	free(t->ciphers);
	free(t->ciphersuites);
	free(t->groups);
	free(t->dh_params);
	free(t->ca_file);
	free(t->ca_path);
	free(t->ticket_key_file);
	for (i = 0; i < t->nsni; i++) {
		free(t->sni[i].name);
		conf_free_pairs(t->sni[i].pairs, t->sni[i].npairs);
	}
	free(t->sni);
}

static void
conf_free_service(struct conf_service *s)
{
	free(s->name);
	conf_free_endpoints(s->listen, s->nlisten);
	conf_free_endpoints(s->backends, s->nbackends);
	free(s->proxy_trusted);
	free(s->hostname);
	free(s->backend_ca_file);
	free(s->backend_ca_path);
	free(s->backend_tls_name);
	free(s->backend_pair.certificate);
	free(s->backend_pair.key);
}

void
conf_free(struct conf *c)
{
	size_t	 i;

	if (c == NULL)
		return;
	for (i = 0; i < c->ntls && c->tls != NULL; i++)
		conf_free_tls(&c->tls[i]);
	free(c->tls);
	for (i = 0; i < c->nservices && c->services != NULL; i++)
		conf_free_service(&c->services[i]);
	free(c->services);
	conf_free_endpoints(c->stats_listen, c->nstats_listen);
	free(c->stats_allow);
	free(c->file);
	free(c->user);
	free(c->group);
	free(c->chroot);
	free(c->pid_file);
	free(c);
}

const char *
conf_proto_name(enum proto_id p)
{
	if ((unsigned)p >= NITEMS(conf_protos))
		return "?";
	return conf_protos[p].name;
}

const char *
conf_tls_mode_name(enum tls_mode m)
{
	const struct conf_enum	*e;

	for (e = conf_tls_modes; e->name != NULL; e++)
		if (e->value == (int)m)
			return e->name;
	return "?";
}

const char *
conf_profile_name(enum tls_profile p)
{
	const struct conf_enum	*e;

	for (e = conf_profiles; e->name != NULL; e++)
		if (e->value == (int)p)
			return e->name;
	return "?";
}
