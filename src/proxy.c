/*
 * proxy.c - build the PROXY protocol header sent first on a backend
 * connection (send_proxy = v1 | v2, SPEC section 9).
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
