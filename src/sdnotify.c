/*
 * sdnotify.c - readiness and status for systemd.
 *
 * With libsystemd, sd_notify() does the work; without it the datagram is
 * sent to $NOTIFY_SOCKET directly (the protocol is one datagram of
 * newline-separated assignments, see sd_notify(3)).  Without a
 * NOTIFY_SOCKET both do nothing, so running outside systemd costs nothing.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>
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
