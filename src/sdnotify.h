/*
 * sdnotify.h - readiness and status for systemd (Type=notify).
 */
#ifndef SDNOTIFY_H
#define SDNOTIFY_H

#include <stddef.h>

/* Send one notification ("READY=1", "STOPPING=1", "STATUS=..."). */
void	sdnotify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A listening socket passed by systemd (socket activation). */
struct sd_socket {
	char	*name;		/* FileDescriptorName=, or "unknown" */
	int	 fd;
	int	 claimed;	/* taken by a service of that name */
};

/*
 * Take the sockets systemd passed (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES),
 * once, at startup; the variables are unset so children never see them.
 * Returns how many, with the array in *out (NULL when none).
 */
size_t	sdnotify_listen_fds(struct sd_socket **out);

#endif /* SDNOTIFY_H */
