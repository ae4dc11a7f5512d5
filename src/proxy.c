/*
 * proxy.c - build the PROXY protocol header sent first on a backend
 * connection (send_proxy = v1 | v2, SPEC section 9), and parse the one a
 * load balancer sends first on a client connection (accept_proxy; the
 * second half of this file).
 *
 * The header describes the client's connection to mailtlsd (its address
 * and the address it connected to), whatever carries the backend leg: a
 * unix: backend gets the same TCP4/TCP6 header as a TCP one, as HAProxy
 * does.  Only a client address that is neither IPv4 nor IPv6, or a pair
 * of different families, gives v1 UNKNOWN or v2 family UNSPEC (command
 * PROXY, no addresses, TLVs kept).  A v4-mapped IPv6 address is the
 * IPv4 client it stands for.
 *
 * Invariant: every length is checked against the caller's buffer before
 * a byte is written; on any failure nothing is returned, so a session
 * never sends half a header.
 */
#include "config.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxy.h"

const unsigned char proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* One end of the client's connection, in network byte order. */
struct proxy_end {
	int		 family;	/* AF_INET, AF_INET6, or AF_UNSPEC */
	unsigned char	 addr[16];
	unsigned char	 port[2];
};

/* A bounded output buffer. */
struct proxy_out {
	unsigned char	*buf;
	size_t		 len;
	size_t		 used;
	bool		 failed;
};

static void	proxy_end(const struct sockaddr *, struct proxy_end *);
static int	proxy_pair(const struct proxy_facts *, struct proxy_end *,
		    struct proxy_end *);
static void	proxy_put(struct proxy_out *, const void *, size_t);
static void	proxy_tlv(struct proxy_out *, unsigned, const void *, size_t);
static void	proxy_tlv_str(struct proxy_out *, unsigned, const char *,
		    size_t max);
static void	proxy_tlv_ssl(struct proxy_out *, const struct proxy_tls *);

static void
proxy_end(const struct sockaddr *sa, struct proxy_end *e)
{
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	memset(e, 0, sizeof(*e));
	e->family = AF_UNSPEC;
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		sin = (const struct sockaddr_in *)(const void *)sa;
		e->family = AF_INET;
		memcpy(e->addr, &sin->sin_addr, 4);
		memcpy(e->port, &sin->sin_port, 2);
	} else if (sa->sa_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		memcpy(e->port, &sin6->sin6_port, 2);
		if (memcmp(&sin6->sin6_addr, mapped, sizeof(mapped)) == 0) {
			e->family = AF_INET;
			memcpy(e->addr, (const unsigned char *)
			    &sin6->sin6_addr + 12, 4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &sin6->sin6_addr, 16);
		}
	}
}

/* The address family both ends share, or AF_UNSPEC. */
static int
proxy_pair(const struct proxy_facts *f, struct proxy_end *src,
    struct proxy_end *dst)
{
	proxy_end(f->src, src);
	proxy_end(f->dst, dst);
	if (src->family != dst->family)
		return AF_UNSPEC;
	return src->family;
}

ssize_t
proxy_v1(const struct proxy_facts *f, char *buf, size_t len)
{
	struct proxy_end	 src, dst;
	char			 sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	int			 af, n;

	af = proxy_pair(f, &src, &dst);
	if (af == AF_UNSPEC)
		n = snprintf(buf, len, "PROXY UNKNOWN\r\n");
	else {
		if (inet_ntop(af, src.addr, sa, sizeof(sa)) == NULL ||
		    inet_ntop(af, dst.addr, da, sizeof(da)) == NULL)
			return -1;
		n = snprintf(buf, len, "PROXY %s %s %s %u %u\r\n",
		    af == AF_INET ? "TCP4" : "TCP6", sa, da,
		    (unsigned)(src.port[0] << 8 | src.port[1]),
		    (unsigned)(dst.port[0] << 8 | dst.port[1]));
	}
	if (n < 0 || (size_t)n >= len || n > PROXY_V1_MAX)
		return -1;
	return n;
}

static void
proxy_put(struct proxy_out *o, const void *p, size_t n)
{
	if (o->failed || n > o->len - o->used) {
		o->failed = true;
		return;
	}
	memcpy(o->buf + o->used, p, n);
	o->used += n;
}

static void
proxy_tlv(struct proxy_out *o, unsigned type, const void *v, size_t n)
{
	unsigned char	hdr[3];

	if (n > 0xffff) {
		o->failed = true;
		return;
	}
	hdr[0] = (unsigned char)type;
	hdr[1] = (unsigned char)(n >> 8);
	hdr[2] = (unsigned char)n;
	proxy_put(o, hdr, sizeof(hdr));
	proxy_put(o, v, n);
}

/* A string TLV; absent when empty, an error when longer than max. */
static void
proxy_tlv_str(struct proxy_out *o, unsigned type, const char *s, size_t max)
{
	size_t	n;

	if (s == NULL || (n = strnlen(s, max + 1)) == 0)
		return;
	if (n > max) {
		o->failed = true;
		return;
	}
	proxy_tlv(o, type, s, n);
}

/*
 * PP2_TYPE_SSL: client flags, verify, then the sub-TLVs.  Its length is
 * known only once the sub-TLVs are written, so it is patched in.
 */
static void
proxy_tlv_ssl(struct proxy_out *o, const struct proxy_tls *t)
{
	unsigned char	head[8];
	size_t		start = o->used, n;

	head[0] = PP2_TYPE_SSL;
	head[1] = head[2] = 0;
	head[3] = PP2_CLIENT_SSL | (t->cert ? PP2_CLIENT_CERT_CONN : 0);
	head[4] = (unsigned char)(t->verify >> 24);
	head[5] = (unsigned char)(t->verify >> 16);
	head[6] = (unsigned char)(t->verify >> 8);
	head[7] = (unsigned char)t->verify;
	proxy_put(o, head, sizeof(head));
	proxy_tlv_str(o, PP2_SUBTYPE_SSL_VERSION, t->version,
	    PROXY_TLS_STR_MAX);
	proxy_tlv_str(o, PP2_SUBTYPE_SSL_CIPHER, t->cipher, PROXY_TLS_STR_MAX);
	proxy_tlv_str(o, PP2_SUBTYPE_SSL_SIG_ALG, t->sig_alg,
	    PROXY_TLS_STR_MAX);
	proxy_tlv_str(o, PP2_SUBTYPE_SSL_KEY_ALG, t->key_alg,
	    PROXY_TLS_STR_MAX);
	if (t->cert)
		proxy_tlv_str(o, PP2_SUBTYPE_SSL_CN, t->cn, PROXY_CN_MAX);
	if (o->failed)
		return;
	n = o->used - start - 3;
	if (n > 0xffff) {
		o->failed = true;
		return;
	}
	o->buf[start + 1] = (unsigned char)(n >> 8);
	o->buf[start + 2] = (unsigned char)n;
}

ssize_t
proxy_v2(const struct proxy_facts *f, unsigned char *buf, size_t len)
{
	struct proxy_out	 o = { buf, len, 0, false };
	struct proxy_end	 src, dst;
	unsigned char		 fam;
	size_t			 alen, n;
	int			 af;

	af = proxy_pair(f, &src, &dst);
	alen = af == AF_INET ? 4 : af == AF_INET6 ? 16 : 0;
	fam = af == AF_INET ? PP2_FAM_TCP4 : af == AF_INET6 ? PP2_FAM_TCP6 :
	    PP2_FAM_UNSPEC;
	proxy_put(&o, proxy_v2_sig, sizeof(proxy_v2_sig));
	proxy_put(&o, (unsigned char[]){ PP2_VERSION_PROXY, fam, 0, 0 }, 4);
	if (alen != 0) {
		proxy_put(&o, src.addr, alen);
		proxy_put(&o, dst.addr, alen);
		proxy_put(&o, src.port, 2);
		proxy_put(&o, dst.port, 2);
	}
	proxy_tlv_str(&o, PP2_TYPE_AUTHORITY, f->authority,
	    PROXY_AUTHORITY_MAX);
	proxy_tlv_str(&o, PP2_TYPE_UNIQUE_ID, f->unique_id,
	    PROXY_UNIQUE_ID_MAX);
	if (f->tls != NULL)
		proxy_tlv_ssl(&o, f->tls);
	if (o.failed || o.used > PROXY_HDR_MAX)
		return -1;
	/* The length field counts everything after the 16-byte header. */
	n = o.used - 16;
	buf[14] = (unsigned char)(n >> 8);
	buf[15] = (unsigned char)n;
	return (ssize_t)o.used;
}

/* ------------------------------------------------------------------ */
/*
 * Receiving (accept_proxy): parse the header a load balancer sends first.
 *
 * Strict, as proxy-protocol.txt asks of a receiver: v1 is one line of at
 * most 107 bytes, single spaces, dotted-quad IPv4 without leading zeros
 * (so "010.1.1.1" cannot mean octal to anyone), ports of 1-5 digits
 * without leading zeros; v2 has the 12-byte signature, version 2,
 * command LOCAL or PROXY, TCP over IPv4 or IPv6 (or UNSPEC), and TLVs
 * that must tile the rest of the header exactly (their contents are not
 * used).  Every access is checked against len first.
 */

static const char proxy_v1_tag[] = "PROXY ";
#define PROXY_V1_TAG_LEN	(sizeof(proxy_v1_tag) - 1)
#define PROXY_V1_FIELDS		6	/* PROXY TCP4 src dst sport dport */
#define PROXY_V2_FIXED		16	/* signature, ver/cmd, family, length */

static enum proxy_parse_status proxy_invalid(struct proxy_hdr *,
		    const char *);
static int	proxy_v1_ipv4(const char *, size_t, struct in_addr *);
static int	proxy_v1_ipv6(const char *, size_t, struct in6_addr *);
static int	proxy_v1_port(const char *, size_t, uint16_t *);
static enum proxy_parse_status proxy_v1_addrs(const char **, const size_t *,
		    struct proxy_hdr *);
static enum proxy_parse_status proxy_parse_v1(const unsigned char *, size_t,
		    struct proxy_hdr *);
static enum proxy_parse_status proxy_parse_v2(const unsigned char *, size_t,
		    struct proxy_hdr *);

static enum proxy_parse_status
proxy_invalid(struct proxy_hdr *h, const char *why)
{
	h->error = why;
	return PROXY_INVALID;
}

/* "a.b.c.d", each 0-255 in 1-3 digits, no leading zero. */
static int
proxy_v1_ipv4(const char *s, size_t n, struct in_addr *a)
{
	unsigned char	 b[4];
	size_t		 i = 0, part, digits;
	unsigned	 v;

	for (part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= n || s[i] != '.')
				return -1;
			i++;
		}
		v = 0;
		for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9' &&
		    digits < 3; digits++, i++)
			v = v * 10 + (unsigned)(s[i] - '0');
		if (digits == 0 || v > 255 ||
		    (digits > 1 && s[i - digits] == '0'))
			return -1;
		b[part] = (unsigned char)v;
	}
	if (i != n)
		return -1;
	memcpy(a, b, 4);
	return 0;
}

static int
proxy_v1_ipv6(const char *s, size_t n, struct in6_addr *a)
{
	char	text[INET6_ADDRSTRLEN];

	if (n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, a) == 1 ? 0 : -1;
}

/* 0-65535 in 1-5 digits, no leading zero. */
static int
proxy_v1_port(const char *s, size_t n, uint16_t *port)
{
	unsigned long	v = 0;
	size_t		i;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = htons((uint16_t)v);
	return 0;
}

/* Fields 1-5 of a TCP4/TCP6 line into h->src and h->dst. */
static enum proxy_parse_status
proxy_v1_addrs(const char **f, const size_t *fl, struct proxy_hdr *h)
{
	struct sockaddr_in	*s4 = (struct sockaddr_in *)(void *)&h->src;
	struct sockaddr_in	*d4 = (struct sockaddr_in *)(void *)&h->dst;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)(void *)&h->src;
	struct sockaddr_in6	*d6 = (struct sockaddr_in6 *)(void *)&h->dst;
	uint16_t		 sport, dport;

	if (proxy_v1_port(f[4], fl[4], &sport) == -1 ||
	    proxy_v1_port(f[5], fl[5], &dport) == -1)
		return proxy_invalid(h, "v1: bad port");
	if (fl[1] == 4 && memcmp(f[1], "TCP4", 4) == 0) {
		if (proxy_v1_ipv4(f[2], fl[2], &s4->sin_addr) == -1 ||
		    proxy_v1_ipv4(f[3], fl[3], &d4->sin_addr) == -1)
			return proxy_invalid(h, "v1: bad IPv4 address");
		s4->sin_family = d4->sin_family = AF_INET;
		s4->sin_port = sport;
		d4->sin_port = dport;
		h->srclen = h->dstlen = sizeof(struct sockaddr_in);
		return PROXY_OK;
	}
	if (fl[1] == 4 && memcmp(f[1], "TCP6", 4) == 0) {
		if (proxy_v1_ipv6(f[2], fl[2], &s6->sin6_addr) == -1 ||
		    proxy_v1_ipv6(f[3], fl[3], &d6->sin6_addr) == -1)
			return proxy_invalid(h, "v1: bad IPv6 address");
		s6->sin6_family = d6->sin6_family = AF_INET6;
		s6->sin6_port = sport;
		d6->sin6_port = dport;
		h->srclen = h->dstlen = sizeof(struct sockaddr_in6);
		return PROXY_OK;
	}
	return proxy_invalid(h, "v1: unknown protocol");
}

static enum proxy_parse_status
proxy_parse_v1(const unsigned char *buf, size_t len, struct proxy_hdr *h)
{
	const char	*line = (const char *)buf;
	const char	*f[PROXY_V1_FIELDS];
	size_t		 fl[PROXY_V1_FIELDS];
	size_t		 i, n, end, start, nf;

	/* The CR of the final CRLF is at index 105 at the latest. */
	n = len < PROXY_V1_RECV_MAX - 1 ? len : PROXY_V1_RECV_MAX - 1;
	for (i = 0; i < n && buf[i] != '\r'; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return proxy_invalid(h, "v1: control or 8-bit byte");
	if (i == n)
		return len >= PROXY_V1_RECV_MAX - 1 ?
		    proxy_invalid(h, "v1: no CRLF within 107 bytes") :
		    PROXY_NEED_MORE;
	if (i + 1 == len)
		return PROXY_NEED_MORE;
	if (buf[i + 1] != '\n')
		return proxy_invalid(h, "v1: CR without LF");
	end = i;
	h->version = 1;
	h->len = end + 2;
	/* "the receiver must ignore anything presented before the CRLF" */
	if (end >= 13 && memcmp(line, "PROXY UNKNOWN", 13) == 0 &&
	    (end == 13 || line[13] == ' ')) {
		h->local = true;
		return PROXY_OK;
	}
	for (i = start = nf = 0; i <= end; i++) {
		if (i < end && line[i] != ' ')
			continue;
		if (i == start)
			return proxy_invalid(h, "v1: empty field");
		if (nf == PROXY_V1_FIELDS)
			return proxy_invalid(h, "v1: too many fields");
		f[nf] = line + start;
		fl[nf++] = i - start;
		start = i + 1;
	}
	if (nf != PROXY_V1_FIELDS)
		return proxy_invalid(h, "v1: too few fields");
	return proxy_v1_addrs(f, fl, h);
}

static enum proxy_parse_status
proxy_parse_v2(const unsigned char *buf, size_t len, struct proxy_hdr *h)
{
	struct sockaddr_in	*s4 = (struct sockaddr_in *)(void *)&h->src;
	struct sockaddr_in	*d4 = (struct sockaddr_in *)(void *)&h->dst;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)(void *)&h->src;
	struct sockaddr_in6	*d6 = (struct sockaddr_in6 *)(void *)&h->dst;
	const unsigned char	*a = buf + PROXY_V2_FIXED;
	size_t			 total, alen, off, n;
	unsigned		 cmd;

	if (len < PROXY_V2_FIXED)
		return PROXY_NEED_MORE;
	if ((buf[12] >> 4) != 2)
		return proxy_invalid(h, "v2: version is not 2");
	cmd = buf[12] & 0x0f;
	if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
		return proxy_invalid(h, "v2: unknown command");
	total = PROXY_V2_FIXED + ((size_t)buf[14] << 8 | buf[15]);
	if (total > PROXY_RECV_MAX)
		return proxy_invalid(h, "v2: header too long");
	alen = 0;
	if (cmd == PP2_CMD_PROXY) {
		switch (buf[13]) {
		case PP2_FAM_UNSPEC:
			break;
		case PP2_FAM_TCP4:
			alen = 12;
			break;
		case PP2_FAM_TCP6:
			alen = 36;
			break;
		default:
			return proxy_invalid(h, "v2: family or transport is "
			    "not TCP over IPv4 or IPv6");
		}
		if (total - PROXY_V2_FIXED < alen)
			return proxy_invalid(h, "v2: address block too short");
	}
	if (len < total)
		return PROXY_NEED_MORE;
	h->version = 2;
	h->len = total;
	/* LOCAL: "discard the protocol block including the family". */
	if (cmd == PP2_CMD_LOCAL) {
		h->local = true;
		return PROXY_OK;
	}
	for (off = PROXY_V2_FIXED + alen; off < total; off += 3 + n) {
		if (total - off < 3)
			return proxy_invalid(h, "v2: truncated TLV");
		n = (size_t)buf[off + 1] << 8 | buf[off + 2];
		if (n > total - off - 3)
			return proxy_invalid(h, "v2: TLV overruns the header");
	}
	if (buf[13] == PP2_FAM_TCP4) {
		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&d4->sin_addr, a + 4, 4);
		memcpy(&s4->sin_port, a + 8, 2);
		memcpy(&d4->sin_port, a + 10, 2);
		h->srclen = h->dstlen = sizeof(struct sockaddr_in);
	} else if (buf[13] == PP2_FAM_TCP6) {
		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&d6->sin6_addr, a + 16, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		memcpy(&d6->sin6_port, a + 34, 2);
		h->srclen = h->dstlen = sizeof(struct sockaddr_in6);
	} else
		h->local = true;	/* UNSPEC: use the real endpoints */
	return PROXY_OK;
}

enum proxy_parse_status
proxy_parse(const unsigned char *buf, size_t len, struct proxy_hdr *h)
{
	size_t	n;

	memset(h, 0, sizeof(*h));
	if (len == 0)
		return PROXY_NEED_MORE;
	if (buf[0] == proxy_v2_sig[0]) {
		n = len < sizeof(proxy_v2_sig) ? len : sizeof(proxy_v2_sig);
		if (memcmp(buf, proxy_v2_sig, n) != 0)
			return proxy_invalid(h, "not a PROXY header");
		return proxy_parse_v2(buf, len, h);
	}
	n = len < PROXY_V1_TAG_LEN ? len : PROXY_V1_TAG_LEN;
	if (memcmp(buf, proxy_v1_tag, n) != 0)
		return proxy_invalid(h, "not a PROXY header");
	return proxy_parse_v1(buf, len, h);
}
