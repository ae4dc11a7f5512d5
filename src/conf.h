/*
 * conf.h - the immutable configuration.
 *
 * conf_load() parses a libconfuse file, validates every option, resolves
 * cross references and returns a struct conf that the rest of the daemon
 * reads without ever touching cfg_t.  A reload builds a new struct conf and
 * swaps it in; the old one stays alive while sessions use it (refcount).
 */
#ifndef CONF_H
#define CONF_H

#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>

#include "log.h"
#include "util.h"

enum proto_id {
	PROTO_SMTP = 0,
	PROTO_IMAP,
	PROTO_POP3,
};

enum tls_mode {
	TLS_MODE_IMPLICIT = 0,
	TLS_MODE_STARTTLS,
	TLS_MODE_NONE,		/* plaintext in (SPEC 12: client mode) */
};

enum tls_profile {
	TLS_PROFILE_MODERN = 0,
	TLS_PROFILE_INTERMEDIATE,
	TLS_PROFILE_OPPORTUNISTIC,
};

enum client_cert_mode {
	CLIENT_CERT_NONE = 0,
	CLIENT_CERT_REQUEST,
	CLIENT_CERT_REQUIRE,
};

enum send_proxy_mode {
	SEND_PROXY_NONE = 0,
	SEND_PROXY_V1,
	SEND_PROXY_V2,
};

enum bare_newline_mode {
	BARE_NEWLINE_NORMALIZE = 0,
	BARE_NEWLINE_REJECT,
};

/* Where backend connections come from (SPEC section 9). */
enum backend_source_mode {
	BACKEND_SOURCE_ANY = 0,		/* the kernel chooses */
	BACKEND_SOURCE_ADDR,		/* a fixed local address */
	BACKEND_SOURCE_CLIENT,		/* the client's own (IP_TRANSPARENT) */
};

enum backend_tls_mode {
	BACKEND_TLS_NONE = 0,
	BACKEND_TLS_IMPLICIT,
	BACKEND_TLS_STARTTLS,
};

struct conf_keypair {
	char		*certificate;	/* PEM: leaf, then chain */
	char		*key;		/* PEM private key */
};

struct conf_sni {
	char			*name;	/* host name or "*.example.org" */
	struct conf_keypair	*pairs;
	size_t			 npairs;
};

struct conf_tls {
	char			*name;
	struct conf_keypair	*pairs;
	size_t			 npairs;
	enum tls_profile	 profile;
	int			 min_protocol;	/* 0 = profile default, else TLS1_VERSION... */
	char			*ciphers;	/* NULL = profile default */
	char			*ciphersuites;
	char			*groups;
	char			*dh_params;	/* path or NULL (auto) */
	enum client_cert_mode	 client_certificates;
	char			*ca_file;
	char			*ca_path;
	bool			 session_tickets;
	char			*ticket_key_file;
	struct conf_sni		*sni;
	size_t			 nsni;
	int			 line;		/* where the section starts */
};

struct conf_endpoint {
	char			*text;		/* as written */
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;		/* AF_UNIX for "unix:/path" */
};

struct conf_service {
	char			*name;
	enum proto_id		 protocol;
	struct conf_endpoint	*listen;
	size_t			 nlisten;
	enum tls_mode		 tls_mode;
	bool			 require_starttls;
	struct conf_tls		*tls;		/* NULL only for tls_mode none */
	struct conf_endpoint	*backends;
	size_t			 nbackends;
	enum send_proxy_mode	 send_proxy;
	bool			 xclient;
	bool			 accept_proxy;
	struct util_net		*proxy_trusted;
	size_t			 nproxy_trusted;
	char			*hostname;	/* defaults to the host's name */
	unsigned		 max_connections;	/* 0 = daemon-wide limit only */
	unsigned		 max_connections_per_ip;
	/* SPEC 10; 0 = off. */
	unsigned		 max_connection_rate_per_ip;	/* per minute */
	unsigned		 max_auth_failures_per_ip;
	unsigned		 auth_failure_window;		/* seconds */
	unsigned		 handshake_timeout;	/* seconds */
	unsigned		 idle_timeout;		/* seconds, protocol default */
	/* SPEC 10: greeting to STARTTLS with require_starttls; 0 = off. */
	unsigned		 cleartext_timeout;
	unsigned		 smtp_greeting_delay;	/* seconds, 0 = off */
	unsigned		 backend_connect_timeout;
	size_t			 max_line_length;	/* protocol default */
	enum bare_newline_mode	 smtp_bare_newline;
	unsigned		 max_errors;		/* refusals per session */
	enum backend_tls_mode	 backend_tls;
	/* SPEC 12: the backend leg's TLS, when backend_tls is not none. */
	char			*backend_ca_file;	/* NULL: system store */
	char			*backend_ca_path;
	char			*backend_tls_name;	/* NULL: backend's host */
	struct conf_keypair	 backend_pair;		/* client certificate */
	enum tls_profile	 backend_tls_profile;
	bool			 backend_tls_verify;
	bool			 backend_dane;		/* TLSA (RFC 7672) */
	bool			 allow_plaintext_listen;	/* tls_mode none */
	enum backend_source_mode backend_source;
	struct sockaddr_storage	 source;	/* BACKEND_SOURCE_ADDR, port 0 */
	socklen_t		 sourcelen;
	int			 line;
};

struct conf {
	char			*file;
	char			*user;		/* NULL = stay as started */
	char			*group;
	char			*chroot;
	char			*pid_file;
	enum log_target		 log_target;
	enum log_level		 log_level;
	int			 syslog_facility;	/* LOG_MAIL... */
	unsigned		 workers;		/* resolved: >= 1 */
	unsigned		 max_connections;
	unsigned		 shutdown_timeout;
	struct conf_tls		*tls;
	size_t			 ntls;
	struct conf_service	*services;
	size_t			 nservices;
	struct conf_endpoint	*stats_listen;	/* SPEC 11 */
	size_t			 nstats_listen;
	struct util_net		*stats_allow;	/* none: loopback only */
	size_t			 nstats_allow;
	int			 stats_line;	/* of stats_listen */
};

/*
 * Parse and validate path.  On error returns NULL and writes one message
 * of the form "FILE:LINE: option 'NAME': what is wrong" (or "FILE: ..."
 * when no line applies) into err.
 */
struct conf	*conf_load(const char *path, char *err, size_t errlen);
void		 conf_free(struct conf *);

const char	*conf_proto_name(enum proto_id);
const char	*conf_tls_mode_name(enum tls_mode);
const char	*conf_profile_name(enum tls_profile);

#endif /* CONF_H */
