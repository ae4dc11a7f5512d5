/*
 * tls.h - server TLS contexts, profiles, SNI, ALPN, close classification.
 *
 * One struct tls_server per `tls` section, built when the configuration is
 * loaded; building fails closed (a bad key, an unreadable file, a mismatch
 * or an expired certificate is an error, never a downgrade).
 */
#ifndef TLS_H
#define TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "conf.h"

struct tls_server;

/*
 * Build the contexts of a tls section.  prev, if not NULL, is the section
 * of the same name before a reload: without a ticket_key_file the new
 * section keeps its automatic ticket keys, so a reload costs no client its
 * resumption.  Returns NULL with a message naming the section and the
 * file in err.
 */
struct tls_server *tls_server_new(const struct conf_tls *,
		    const struct tls_server *prev, char *err, size_t errlen);
void		tls_server_free(struct tls_server *);

/*
 * A new server-side SSL for one connection.  alpn is the service's
 * protocol id ("smtp", "imap", "pop3"): a client that offers ALPN without
 * it fails the handshake with no_application_protocol (ALPACA), a client
 * that offers none is served.  Returns NULL on failure (errors logged).
 */
SSL		*tls_server_ssl(struct tls_server *, const char *alpn);

/*
 * Postfix-form summary of an established connection:
 * "Anonymous TLS connection established from NAME[IP]: TLSv1.3 with
 *  cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
 * Trust: Anonymous (no client certificate), Untrusted (not verified),
 * Trusted (chain verified).
 */
void		tls_summary(SSL *, const char *peer_name, const char *peer_ip,
		    char *buf, size_t len);

/*
 * The TLS facts a PROXY v2 header carries (send_proxy, SPEC section 9):
 * protocol, cipher, our certificate's signature and key algorithms, the
 * client certificate (presented, verified, CN).  sni gets the name the
 * client asked for, or "" (only hostname characters are passed on).
 */
struct proxy_tls;
void		tls_proxy_facts(SSL *, struct proxy_tls *, char *sni,
		    size_t snilen);

/* Short description of the client certificate ("subject=..., verified"). */
void		tls_peer_cert_info(SSL *, char *buf, size_t len);

/* -t: "certificate ... expires ..." findings, one per line, via callback. */
typedef void	(*tls_finding_cb)(void *arg, int is_error, const char *msg);
int		tls_check(const struct conf_tls *, tls_finding_cb, void *arg);

/*
 * Session ticket keys (SPEC section 9), newest first: the first encrypts
 * new tickets, every key opens them.  A key is 80 bytes in nginx's
 * layout: 16 bytes key name, 32 bytes HMAC-SHA256 key, 32 bytes
 * AES-256-CBC key.  Exposed so that the unit tests can drive the parser
 * and the automatic rotation (with their own clock) directly.
 */
#define TLS_TICKET_KEY_LEN	80
#define TLS_TICKET_NAME_LEN	16
struct tls_ticket_ring;

/* A ticket_key_file's contents; NULL with "line N: why" in err. */
struct tls_ticket_ring *tls_ticket_ring_parse(const unsigned char *,
		    size_t, char *err, size_t errlen);
/* Read and parse a file; NULL with "PATH: why" in err. */
struct tls_ticket_ring *tls_ticket_ring_load(const char *path, char *err,
		    size_t errlen);
/*
 * The automatic ring: one random key born at now (seconds of a monotonic
 * clock), replaced every TICKET_ROTATE_INTERVAL, the previous key kept
 * for one more interval.  NULL if no random bytes could be had.
 */
struct tls_ticket_ring *tls_ticket_ring_auto(time_t now);
/* Drops a reference; the last one wipes the keys.  Any thread. */
void		tls_ticket_ring_free(struct tls_ticket_ring *);
size_t		tls_ticket_ring_count(struct tls_ticket_ring *);
/*
 * The key for a ticket operation at time now, copied to key (80 bytes):
 * name NULL asks for the key that encrypts, otherwise the key whose name
 * (first 16 bytes) matches.  Returns its position (0: newest; more: an
 * older key, so the ticket should be renewed), -1 if no key has that
 * name, -2 if an automatic rotation found no random bytes.  Thread-safe.
 */
int		tls_ticket_ring_get(struct tls_ticket_ring *,
		    const unsigned char *name, time_t now, unsigned char *key);

/*
 * Client side, the backend leg (SPEC 12): one context per service with
 * backend_tls, built when the configuration is loaded (a CA file that
 * cannot be read, a client key that does not match, is an error).
 */
struct tls_client;
struct tls_client *tls_client_new(const struct conf_service *, char *err,
		    size_t errlen);
void		tls_client_free(struct tls_client *);
/*
 * A client SSL towards backend number slot (its resumption cache slot),
 * sending name as SNI (unless an address) and verifying it.
 */
SSL		*tls_client_ssl(struct tls_client *, size_t slot,
		    char *name);
/*
 * backend_dane: the service's TLSA cache (dane.h), or NULL.  Before
 * tls_client_ssl() the caller waits for a fresh answer of the slot;
 * tls_client_ssl() applies it (a failed lookup: NULL, fail closed).
 */
struct dane_cache;
struct dane_cache *tls_client_dane_cache(struct tls_client *);
/*
 * What DANE made of a connection: NULL without backend_dane; "ee" or
 * "ta" (the usage of the record that matched), "tlsa" (records applied,
 * handshake not done), or why not: "insecure", "none", "unusable".
 */
const char	*tls_client_dane_status(SSL *);
/* Why the handshake with a backend failed, for the error log line. */
void		tls_client_failure(SSL *, const char *detail, char *buf,
		    size_t len);
/* "TLSv1.3/CIPHER verified=NAME" for the session end line. */
void		tls_client_facts(SSL *, char *buf, size_t len);

/* OpenSSL's version string, for -V. */
const char	*tls_library_version(void);

/*
 * How a TLS leg ended, from a bufferevent event and the OpenSSL errors
 * libevent queued for it.  The one place that tells a peer's FIN without
 * close_notify (dirty but common, not an error) from a real TLS failure.
 */
enum tls_close {
	TLS_CLOSE_NOTIFY = 0,	/* peer sent close_notify */
	TLS_CLOSE_EOF,		/* TCP FIN without close_notify */
	TLS_CLOSE_PROTOCOL,	/* alert, decrypt error, bad record... */
	TLS_CLOSE_SYSCALL,	/* socket error (errno) */
};
/*
 * The server side of TLS directly on a socket (implicit TLS, and STARTTLS
 * once the go-ahead has left): a FIN without close_notify is an EOF.
 * options: BEV_OPT_*; on failure the caller still owns the fd, and the SSL
 * too unless options has BEV_OPT_CLOSE_ON_FREE (libevent frees it then).
 */
struct bufferevent *tls_server_socket_bev(struct event_base *,
		    evutil_socket_t, SSL *, int);
/* After the peer's EOF: keep writing what is queued (either variant). */
void		tls_keep_writing(struct bufferevent *);
/* what: BEV_EVENT_* flags; bev: the TLS bufferevent. */
enum tls_close	tls_classify_close(struct bufferevent *bev, short what,
		    char *detail, size_t detaillen);

#endif /* TLS_H */
