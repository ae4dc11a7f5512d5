/*
 * mailtlsd.h - limits and defaults shared by every module.
 *
 * Every limit of SPEC section 6 is a named constant here; the configuration
 * can override most of them per service (conf.c), and each is enforced where
 * the data is read, never after the fact.
 */
#ifndef MAILTLSD_H
#define MAILTLSD_H

#include <stddef.h>

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define MAILTLSD_CONF_DEFAULT	SYSCONFDIR "/mailtlsd/mailtlsd.conf"

/* SPEC section 6. */
#define DEFAULT_HANDSHAKE_TIMEOUT	30	/* seconds */
#define DEFAULT_SMTP_IDLE_TIMEOUT	300
#define DEFAULT_IMAP_IDLE_TIMEOUT	1800
#define DEFAULT_POP3_IDLE_TIMEOUT	600
#define DEFAULT_BACKEND_CONNECT_TIMEOUT	10
#define DEFAULT_SMTP_LINE_MAX		4096	/* bytes, without CRLF */
#define DEFAULT_IMAP_LINE_MAX		8192
#define DEFAULT_POP3_LINE_MAX		8192
#define DEFAULT_MAX_CONNECTIONS_PER_IP	50
#define DEFAULT_MAX_CONNECTIONS		20000
#define DEFAULT_SHUTDOWN_TIMEOUT	30
#define DEFAULT_MAX_ERRORS		10	/* refusals per session */
/* SPEC section 10. */
#define DEFAULT_CLEARTEXT_TIMEOUT	60	/* greeting to STARTTLS */
#define DEFAULT_SMTP_GREETING_DELAY	0	/* off */

/* SPEC section 10; 0 turns a limit off. */
#define DEFAULT_MAX_CONNECTION_RATE_PER_IP 120	/* connections per minute */
#define DEFAULT_MAX_AUTH_FAILURES_PER_IP 10
#define DEFAULT_AUTH_FAILURE_WINDOW	600	/* seconds */

/*
 * Addresses a service remembers for those limits (addrtable.c): beyond
 * this the least recently used is forgotten, so a flood of spoofed or
 * proxied sources costs at most ADDRTABLE_MAX entries of 72 bytes plus
 * 4 of hash (2.5 MB) per service.  An entry lives a minute after its
 * address's last connection (longer with authentication failures), so
 * forgetting starts only beyond ADDRTABLE_MAX new addresses a minute;
 * an address that keeps hammering stays recent and is never the one
 * forgotten.
 */
#define ADDRTABLE_MAX			32768

/* Hard bounds accepted from the configuration (sanity, not policy). */
#define LIMIT_LINE_MIN			512
#define LIMIT_LINE_MAX			65536
#define LIMIT_TIMEOUT_MAX		86400
#define LIMIT_WORKERS_MAX		256
#define LIMIT_CONNECTIONS_MAX		1000000
#define LIMIT_ERRORS_MAX		1000
/* RFC 5321 4.5.3.2.1: a client waits 5 minutes for the greeting. */
#define LIMIT_GREETING_DELAY_MAX	300

/*
 * Relay buffering.  A leg's input is not read while the other leg's output
 * holds more than RELAY_HIGH_WATERMARK bytes; reading resumes once it drains
 * below RELAY_LOW_WATERMARK.  Together with the read watermark this bounds a
 * session's memory whatever the peers do (le-proxy MAX_OUTPUT idea).
 */
#define RELAY_HIGH_WATERMARK		(256 * 1024)
#define RELAY_LOW_WATERMARK		(64 * 1024)
#define RELAY_READ_WATERMARK		(128 * 1024)

/* Bytes of a line-oriented dialogue that may wait for a protocol filter. */
#define FILTER_PENDING_MAX		64	/* commands awaiting a reply */

/* Seconds a closing session may spend flushing its last reply. */
#define CLOSE_LINGER_TIMEOUT		5

/* Descriptors kept free for logging, reload and backend sockets. */
#define FD_RESERVE			32

/* Pause after accept() fails with EMFILE/ENFILE before trying again. */
#define ACCEPT_PAUSE_MS			1000

/* Seconds between STATUS= updates to systemd. */
#define STATUS_INTERVAL			5

/*
 * Session ticket keys (SPEC section 9).  A ticket_key_file holds at most
 * TICKET_KEYS_MAX keys (newest first); without a file the keys are made
 * at startup and replaced every TICKET_ROTATE_INTERVAL seconds, the
 * previous key still opening tickets for one more interval.
 */
#define TICKET_KEYS_MAX			16
#define TICKET_ROTATE_INTERVAL		(12 * 60 * 60)
#define TICKET_FILE_MAX			(64 * 1024)	/* bytes */

/*
 * The stats listener (SPEC section 11): a request head is at most
 * STATS_REQUEST_MAX bytes (400 beyond), a worker serves at most
 * STATS_CONNS_MAX connections at once, a connection lasts at most
 * STATS_TIMEOUT seconds from accept to close (request, reply and
 * linger), and after the reply at most STATS_LINGER_MAX bytes more are
 * read and dropped before the close.
 */
#define STATS_REQUEST_MAX		4096
#define STATS_CONNS_MAX			16
#define STATS_TIMEOUT			10
#define STATS_LINGER_MAX		65536

/* Client text is cut to this many bytes in logs (Postfix's %.100s). */
#define LOG_CLIENT_TEXT_MAX		100

#endif /* MAILTLSD_H */
