/*
 * sdnotify.c - readiness and status for systemd.
 *
 * With libsystemd, sd_notify() does the work; without it the datagram is
 * sent to $NOTIFY_SOCKET directly (the protocol is one datagram of
 * newline-separated assignments, see sd_notify(3)).  Without a
 * NOTIFY_SOCKET both do nothing, so running outside systemd costs nothing.
 *
 * Socket activation follows sd_listen_fds(3): descriptors from 3 on,
 * LISTEN_FDS of them, meant for us only if LISTEN_PID is our pid, named
 * by the colon-separated LISTEN_FDNAMES (FileDescriptorName= in the
 * socket unit, which mailtlsd matches with service names).
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "sdnotify.h"
#include "util.h"

#ifndef HAVE_SYSTEMD
static void
sdnotify_send(const char *msg)
{
	struct sockaddr_un	 sun;
	const char		*path = getenv("NOTIFY_SOCKET");
	socklen_t		 len;
	int			 fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sun.sun_path))
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	util_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	if (path[0] == '@')
		sun.sun_path[0] = '\0';		/* abstract namespace */
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	(void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&sun, len);
	close(fd);
}
#endif

void
sdnotify(const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
#ifdef HAVE_SYSTEMD
	(void)sd_notify(0, msg);
#else
	sdnotify_send(msg);
#endif
}

#define SD_LISTEN_FDS_START	3
#define SD_LISTEN_FDS_MAX	1024

/* The n-th colon-separated name, or "unknown" (systemd's default). */
static char *
sdnotify_fd_name(const char *names, size_t n)
{
	const char	*p = names, *end;
	char		*s;

	while (p != NULL && n-- > 0)
		if ((p = strchr(p, ':')) != NULL)
			p++;
	if (p == NULL || *p == '\0' || *p == ':')
		return util_xstrdup("unknown");
	end = strchr(p, ':');
	if (end == NULL)
		end = p + strlen(p);
	if ((s = strndup(p, (size_t)(end - p))) == NULL)
		return util_xstrdup("unknown");
	return s;
}

size_t
sdnotify_listen_fds(struct sd_socket **out)
{
	const char	*pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char	*names = getenv("LISTEN_FDNAMES");
	struct sd_socket *s;
	char		*end;
	long		 n, p;
	size_t		 i;

	*out = NULL;
	if (pid == NULL || fds == NULL)
		return 0;
	errno = 0;
	p = strtol(pid, &end, 10);
	if (errno || *end != '\0' || p != (long)getpid())
		return 0;
	n = strtol(fds, &end, 10);
	if (errno || *end != '\0' || n <= 0 || n > SD_LISTEN_FDS_MAX)
		return 0;
	s = util_xcalloc((size_t)n, sizeof(*s));
	for (i = 0; i < (size_t)n; i++) {
		int fd = SD_LISTEN_FDS_START + (int)i;

		s[i].fd = fd;
		s[i].name = sdnotify_fd_name(names ? names : "", i);
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	*out = s;
	return (size_t)n;
}
