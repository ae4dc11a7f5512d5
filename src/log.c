/*
 * log.c - levels, syslog or stderr, escaping of peer text.
 *
 * Every line is formatted into one buffer and written with one call, so
 * lines from different worker threads never interleave.  Formats are
 * always literals (the printf attribute on every entry point checks it);
 * peer text goes through log_escape() before it reaches a format argument.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

#define LOG_LINE_MAX	2048

static enum log_target	log_target = LOG_TARGET_STDERR;
static enum log_level	log_level = LOG_LEVEL_INFO;

static const struct {
	const char	*name;
	int		 syslog_prio;
} log_levels[] = {
	[LOG_LEVEL_ERROR] = { "error", LOG_ERR },
	[LOG_LEVEL_WARNING] = { "warning", LOG_WARNING },
	[LOG_LEVEL_NOTICE] = { "notice", LOG_NOTICE },
	[LOG_LEVEL_INFO] = { "info", LOG_INFO },
	[LOG_LEVEL_DEBUG] = { "debug", LOG_DEBUG },
};

static const struct {
	const char	*name;
	int		 facility;
} log_facilities[] = {
	{ "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
	{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
	{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
	{ "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

static void	log_vwrite(enum log_level, int, const char *, va_list)
		    __attribute__((format(printf, 3, 0)));

void
log_init(enum log_target target, enum log_level level, int facility)
{
	static int	open_facility = -1;

	log_target = target;
	log_level = level;
	/*
	 * Keep the connection to the log socket across reloads: after a
	 * chroot /dev/log may not be there to open again.
	 */
	if (target == LOG_TARGET_SYSLOG && facility != open_facility) {
		if (open_facility != -1)
			closelog();
		openlog("mailtlsd", LOG_PID | LOG_NDELAY, facility);
		open_facility = facility;
	}
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

static void
log_vwrite(enum log_level level, int errnum, const char *fmt, va_list ap)
{
	char	 line[LOG_LINE_MAX];
	int	 n;

	if (level > log_level)
		return;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	if (errnum != 0)
		n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s",
		    strerror(errnum));
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;

	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(log_levels[level].syslog_prio, "%s", line);
		return;
	}
	{
		char		 out[LOG_LINE_MAX + 64];
		struct timespec	 ts;
		struct tm	 tm;
		int		 m;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		m = snprintf(out, sizeof(out),
		    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ mailtlsd[%ld]: %s: %s\n",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (long)getpid(),
		    log_levels[level].name, line);
		if (m > 0)
			(void)write(STDERR_FILENO, out,
			    (size_t)m < sizeof(out) ? (size_t)m : sizeof(out) - 1);
	}
}

#define LOG_FN(fn, level, errnum)				\
void								\
fn(const char *fmt, ...)					\
{								\
	va_list	ap;						\
	int	saved = errno;					\
								\
	va_start(ap, fmt);					\
	log_vwrite(level, errnum, fmt, ap);			\
	va_end(ap);						\
	errno = saved;						\
}

LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_notice, LOG_LEVEL_NOTICE, 0)
LOG_FN(log_warnx, LOG_LEVEL_WARNING, 0)
LOG_FN(log_error, LOG_LEVEL_ERROR, 0)
LOG_FN(log_warn, LOG_LEVEL_WARNING, saved)

void
fatal(const char *fmt, ...)
{
	va_list	ap;
	int	saved = errno;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

static void	log_at(enum log_level, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static void
log_at(enum log_level level, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(level, 0, fmt, ap);
	va_end(ap);
}

void
log_ssl_errors(enum log_level level, const char *fmt, ...)
{
	char		 prefix[512], buf[256];
	unsigned long	 e;
	va_list		 ap;
	int		 any = 0;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	/* Always drain the queue, even when the level is filtered out. */
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_at(level, "%s: %s", prefix, buf);
		any = 1;
	}
	if (!any)
		log_at(level, "%s", prefix);
}

char *
log_escape(char *dst, size_t dstlen, const char *src, size_t srclen,
    size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t		 i, o = 0;
	int		 cut = srclen > max;

	if (dstlen == 0)
		return dst;
	if (cut)
		srclen = max;
	for (i = 0; i < srclen; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 0xf];
		}
	}
	if ((cut || i < srclen) && o + 3 < dstlen) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return dst;
}

enum log_level
log_level_parse(const char *s)
{
	size_t	i;

	for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
		if (strcmp(s, log_levels[i].name) == 0)
			return (enum log_level)i;
	return (enum log_level)-1;
}

const char *
log_level_name(enum log_level level)
{
	if ((unsigned)level >= sizeof(log_levels) / sizeof(log_levels[0]))
		return "?";
	return log_levels[level].name;
}

int
log_facility_parse(const char *s)
{
	size_t	i;

	for (i = 0; i < sizeof(log_facilities) / sizeof(log_facilities[0]); i++)
		if (strcmp(s, log_facilities[i].name) == 0)
			return log_facilities[i].facility;
	return -1;
}
