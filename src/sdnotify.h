/*
 * sdnotify.h - readiness and status for systemd (Type=notify).
 */
#ifndef SDNOTIFY_H
#define SDNOTIFY_H

/* Send one notification ("READY=1", "STOPPING=1", "STATUS=..."). */
void	sdnotify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* SDNOTIFY_H */
