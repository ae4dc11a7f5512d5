/*
 * proxy.h - the PROXY protocol header mailtlsd sends to a backend
 * (send_proxy) and the one it reads from a load balancer (accept_proxy),
 * SPEC section 9; HAProxy's proxy-protocol.txt.
 *
 * Pure functions over a small struct of facts: no sockets, no SSL, so
 * they are tested byte for byte (tests/unit/test_proxy.c).
 */
#ifndef PROXY_H
#define PROXY_H

#include <sys/types.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* v1: "a 108-byte buffer is always enough" (proxy-protocol.txt 2.1). */
#define PROXY_V1_MAX		108
/* Bounds on what we put in v2 TLVs; the whole header fits PROXY_HDR_MAX. */
#define PROXY_AUTHORITY_MAX	255	/* a DNS name */
#define PROXY_UNIQUE_ID_MAX	128	/* proxy-protocol.txt 2.2.5 */
#define PROXY_TLS_STR_MAX	64	/* version, cipher, algorithm names */
#define PROXY_CN_MAX		255
#define PROXY_HDR_MAX		1024

/* v2 constants (proxy-protocol.txt 2.2). */
#define PP2_VERSION_PROXY	0x21	/* version 2, command PROXY */
#define PP2_FAM_UNSPEC		0x00
#define PP2_FAM_TCP4		0x11
#define PP2_FAM_TCP6		0x21
#define PP2_TYPE_AUTHORITY	0x02
#define PP2_TYPE_UNIQUE_ID	0x05
#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION	0x21
#define PP2_SUBTYPE_SSL_CN	0x22
#define PP2_SUBTYPE_SSL_CIPHER	0x23
#define PP2_SUBTYPE_SSL_SIG_ALG	0x24
#define PP2_SUBTYPE_SSL_KEY_ALG	0x25
#define PP2_CLIENT_SSL		0x01
#define PP2_CLIENT_CERT_CONN	0x02

extern const unsigned char proxy_v2_sig[12];

/* What the client's TLS looked like; empty strings are left out. */
struct proxy_tls {
	bool		 cert;		/* the client presented a certificate */
	uint32_t	 verify;	/* 0: presented and verified */
	char		 version[PROXY_TLS_STR_MAX + 1];
	char		 cipher[PROXY_TLS_STR_MAX + 1];
	char		 sig_alg[PROXY_TLS_STR_MAX + 1];  /* our certificate's */
	char		 key_alg[PROXY_TLS_STR_MAX + 1];  /* our certificate's */
	char		 cn[PROXY_CN_MAX + 1];	/* client certificate CN */
};

struct proxy_facts {
	const struct sockaddr	*src;		/* the client */
	const struct sockaddr	*dst;		/* where it connected to */
	const char		*authority;	/* SNI name, or NULL */
	const char		*unique_id;	/* session id, or NULL */
	const struct proxy_tls	*tls;		/* NULL: no TLS facts */
};

/*
 * Build the header into buf.  Return its length, or -1 when it does not
 * fit len or a fact is out of bounds (nothing must then be sent).
 *  v1: "PROXY TCP4|TCP6 src dst sport dport\r\n"; a v4-mapped IPv6 pair
 *      is sent as TCP4; other families or a mismatch: "PROXY UNKNOWN\r\n".
 *  v2: command PROXY; TCP4/TCP6 as v1, else family UNSPEC with no
 *      addresses (the TLVs still follow); TLVs AUTHORITY, UNIQUE_ID, SSL.
 */
ssize_t		proxy_v1(const struct proxy_facts *, char *buf, size_t len);
ssize_t		proxy_v2(const struct proxy_facts *, unsigned char *buf,
		    size_t len);

/*
 * Receiving (accept_proxy): the header a load balancer sends first.
 * A v2 header is at most PROXY_RECV_MAX bytes in all; longer ones are
 * refused rather than buffered (proxy-protocol.txt lets a receiver
 * bound what it accepts, and no balancer sends that many TLVs).
 */
#define PROXY_V1_RECV_MAX	107	/* "a 107-byte line", CRLF included */
#define PROXY_RECV_MAX		2048
#define PP2_CMD_LOCAL		0x00
#define PP2_CMD_PROXY		0x01

enum proxy_parse_status {
	PROXY_NEED_MORE = 0,	/* a valid beginning; every byte is header */
	PROXY_OK,
	PROXY_INVALID,
};

struct proxy_hdr {
	size_t			 len;	/* bytes of the header */
	int			 version;	/* 1 or 2 */
	/*
	 * No addresses to use: v2 LOCAL (a balancer's health check), v1
	 * UNKNOWN or v2 PROXY with family UNSPEC.  The connection is then
	 * the balancer's own, with its real endpoints.
	 */
	bool			 local;
	struct sockaddr_storage	 src;	/* the client, unless local */
	socklen_t		 srclen;
	struct sockaddr_storage	 dst;	/* where it connected to */
	socklen_t		 dstlen;
	const char		*error;	/* PROXY_INVALID: why, for the log */
};

/*
 * Parse the beginning of a connection, len bytes of it.  Never reads
 * past buf[len - 1].  PROXY_OK fills h (h->len <= len; the bytes after
 * it are the client's); PROXY_NEED_MORE means that all len bytes belong
 * to a header not yet complete, so a reader may consume them all and
 * wait; PROXY_INVALID sets h->error.
 */
enum proxy_parse_status proxy_parse(const unsigned char *buf, size_t len,
		    struct proxy_hdr *h);

#endif /* PROXY_H */
