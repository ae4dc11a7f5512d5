/*
 * proto.h - the per-protocol filter between client and backend.
 *
 * A filter is a pure state machine over two byte streams; it owns no
 * socket, timer or TLS object, so unit tests drive it with evbuffers
 * alone.  The session (session.c) feeds it and acts on its verdicts:
 *
 *   client bytes  --client_input()-->  to_backend (+ local replies)
 *   backend bytes --backend_input()--> to_client
 *
 * Rules every filter keeps:
 *  - It consumes from `in` only what it has completely framed (a whole
 *    command line, a counted part of a literal/BDAT chunk, DATA bytes up
 *    to what it has scanned).  Whatever it leaves in `in` it will look at
 *    again on the next call; the session calls client_input() again after
 *    every backend_input() and vice versa, so a filter may simply stop
 *    consuming ("hold") while it waits for a reply that decides how the
 *    following client bytes are framed (e.g. DATA -> 354).
 *  - Every client command it forwards or answers itself takes a slot in a
 *    FIFO; a reply it writes itself is appended to to_client only when all
 *    earlier slots have been answered, so replies keep command order under
 *    pipelining.  At most FILTER_PENDING_MAX slots: beyond that it holds.
 *  - It never writes client bytes it has not framed, and never writes a
 *    line it could not frame unambiguously (SPEC section 8.4).
 */
#ifndef PROTO_H
#define PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "conf.h"

struct filter;

enum filter_verdict {
	/* Progress made or none possible yet; call again on more input. */
	FILTER_CONTINUE = 0,
	/*
	 * The go-ahead for STARTTLS/STLS has been appended to to_client as
	 * the last cleartext bytes of the session, and the client input held
	 * nothing after the command line.  The session must upgrade the
	 * client leg now; the filter already considers TLS active.
	 */
	FILTER_STARTTLS,
	/*
	 * End the session once to_client is flushed; filter_reason() says
	 * why (for the session end log line).
	 */
	FILTER_CLOSE,
	/*
	 * backend_tls = starttls (SPEC 12): the server's go-ahead for the
	 * backend leg's STARTTLS/STLS has been read, and whatever it sent
	 * behind it discarded (filter_await_input).  The session must put
	 * the backend leg under TLS now and, once the handshake has
	 * verified, call filter_backend_tls_established().
	 */
	FILTER_BACKEND_STARTTLS,
};

struct filter_params {
	const struct conf_service *svc;	/* protocol, limits, hostname */
	bool		 tls_active;	/* true from the start for implicit TLS */
	const char	*session_id;	/* for log lines */
	const char	*client_addr;	/* printable client address */
	/* For XCLIENT (SPEC 9); 0 / NULL when unknown. */
	int		 client_port;
	const char	*local_addr;	/* the address the client dialled */
	int		 local_port;
	uint64_t	*refusals;	/* FILTER_REF_N counters, or NULL */
	/*
	 * SPEC 10, max_auth_failures_per_ip: whether the client's address
	 * may not send credentials now, pending being this session's
	 * credential commands still awaiting their verdict (each may yet be
	 * a failure); and a failed login to count.  NULL (unit tests,
	 * fuzzers): no limit.  Called with auth_arg.
	 */
	bool		 (*auth_blocked)(void *, unsigned pending);
	void		 (*auth_failed)(void *);
	void		*auth_arg;
	/*
	 * A backend that fails before it is ready (filter_backend_ready)
	 * is left to the session, which may try the next one: the filter
	 * writes no temporary failure then, and filter_backend_failed()
	 * says so.  false (unit tests, fuzzers): the filter writes it.
	 */
	bool		 backend_failover;
};

/*
 * What a protocol supplies to the filter core (filter.h).  The core owns
 * struct filter (FIFO, error budget, STARTTLS boundary, log prefix); the
 * protocol keeps its own state behind f->proto.
 */
struct proto_ops {
	const char	*name;		/* "smtp" */
	const char	*alpn;		/* ALPN protocol id */
	bool		 tagged;	/* commands carry tags (IMAP) */

	/* Protocol state for a new session (stored in f->proto), or NULL. */
	void		*(*init)(struct filter *, const struct filter_params *);
	void		 (*free)(void *);

	/* Client -> backend.  Local replies go through the FIFO. */
	enum filter_verdict (*client_input)(struct filter *,
			    struct evbuffer *in, struct evbuffer *to_backend,
			    struct evbuffer *to_client);
	/* Backend -> client.  May talk to the backend itself (to_backend). */
	enum filter_verdict (*backend_input)(struct filter *,
			    struct evbuffer *in, struct evbuffer *to_client,
			    struct evbuffer *to_backend);

	/*
	 * The client's TLS handshake after the go-ahead has completed:
	 * forget every state of the cleartext phase (SPEC 8.3).  May queue
	 * commands of its own to the backend (SMTP: RSET) through
	 * to_backend, with their slots.
	 */
	void		 (*tls_reset)(struct filter *, struct evbuffer *to_backend);

	/* The reply that ends a session over its error budget. */
	void		 (*last_word)(const struct filter *, char *buf,
			    size_t len);

	/* SPEC section 3: temporary failure when no backend answers. */
	void		 (*unavailable)(struct evbuffer *to_client,
			    const char *hostname);

	/*
	 * SPEC 10, the idle timeout.  at_boundary: whether a reply of ours
	 * may be written now, i.e. no backend reply has been relayed in
	 * part (the rest of a multi-line reply, a message body or a
	 * literal still to come) and the client is not in the middle of
	 * a transfer (DATA content, a BDAT chunk, a literal).
	 * timeout_reply: the protocol's own words before the close.
	 */
	bool		 (*at_boundary)(const struct filter *);
	void		 (*timeout_reply)(struct evbuffer *to_client,
			    const char *hostname);
	/*
	 * SPEC 10, max_connection_rate_per_ip: the temporary failure before
	 * the close (inside TLS on implicit services).
	 */
	void		 (*rate_limited)(struct evbuffer *to_client,
			    const char *hostname);

	/*
	 * backend_tls = starttls (SPEC 12): the backend leg's handshake has
	 * verified (filter_backend_tls_established).  The protocol goes on
	 * with what makes the backend ready (SMTP with xclient: EHLO and
	 * XCLIENT inside TLS) or greets the client itself and calls
	 * filter_backend_ready(): nothing the server said in cleartext is
	 * ever shown to the client.  to_client discards while the core
	 * swallows (a fresh connection after the client's STARTTLS).
	 */
	void		 (*backend_tls_ready)(struct filter *,
			    struct evbuffer *to_client,
			    struct evbuffer *to_backend);
};

const struct proto_ops	*proto_ops_get(enum proto_id);
/* SPEC section 6: a protocol's idle timeout and line limit. */
unsigned		 proto_default_idle_timeout(enum proto_id);
size_t			 proto_default_line_max(enum proto_id);

extern const struct proto_ops proto_smtp_ops;
extern const struct proto_ops proto_imap_ops;
extern const struct proto_ops proto_pop3_ops;

#endif /* PROTO_H */
