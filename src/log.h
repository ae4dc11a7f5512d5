/*
 * log.h - levels, syslog or stderr, escaping of peer text.
 */
#ifndef LOG_H
#define LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_NOTICE,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

enum log_target {
	LOG_TARGET_SYSLOG = 0,
	LOG_TARGET_STDERR,
};

void	log_init(enum log_target, enum log_level, int facility);
void	log_set_level(enum log_level);
enum log_level log_get_level(void);

void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_error(const char *, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Log and empty OpenSSL's error queue, with a prefix. */
void	log_ssl_errors(enum log_level, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

/*
 * Copy peer-supplied bytes into dst as printable ASCII: control and
 * non-ASCII bytes become \xNN, and the copy stops after max input bytes
 * with "..." appended.  Always NUL-terminates; returns dst.
 */
char	*log_escape(char *dst, size_t dstlen, const char *src, size_t srclen,
	    size_t max);
/* Size a buffer for log_escape of max input bytes. */
#define LOG_ESCAPE_SIZE(max)	((max) * 4 + 4)

enum log_level log_level_parse(const char *);	/* -1 if unknown */
const char *log_level_name(enum log_level);
int	log_facility_parse(const char *);	/* -1 if unknown */

#endif /* LOG_H */
