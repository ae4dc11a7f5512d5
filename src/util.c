/*
 * util.c - address parsing and formatting, small string helpers.
 *
 * Address syntax is that of SPEC section 2: "ADDR:PORT" with IPv6 in
 * brackets, "unix:/path" for backends.  Ports are 1..65535; anything
 * else is an error with a message that names what is wrong.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

size_t
util_strlcpy(char *dst, const char *src, size_t dstsize)
{
	size_t	len = strlen(src);

	if (dstsize > 0) {
		size_t n = len < dstsize - 1 ? len : dstsize - 1;

		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

void *
util_xcalloc(size_t n, size_t size)
{
	void	*p = calloc(n, size);

	if (p == NULL)
		fatal("calloc");
	return p;
}

char *
util_xstrdup(const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		fatal("strdup");
	return p;
}

static int
util_parse_port(const char *s, int *port)
{
	char	*end;
	long	 v;

	if (*s == '\0' || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

static int
util_parse_unix(const char *path, struct sockaddr_storage *ss,
    socklen_t *sslen, char *err, size_t errlen)
{
	struct sockaddr_un	*sun = (struct sockaddr_un *)ss;

	if (path[0] != '/') {
		snprintf(err, errlen, "unix socket path must be absolute");
		return -1;
	}
	if (strlen(path) >= sizeof(sun->sun_path)) {
		snprintf(err, errlen, "unix socket path too long");
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	sun->sun_family = AF_UNIX;
	util_strlcpy(sun->sun_path, path, sizeof(sun->sun_path));
	*sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(path) + 1);
	return 0;
}

/* Split "host:port" / "[v6]:port" into host and port text. */
static int
util_split_hostport(const char *s, char *host, size_t hostlen,
    const char **port, char *err, size_t errlen)
{
	const char	*colon, *h = s;
	size_t		 n;

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':') {
			snprintf(err, errlen, "expected [IPv6]:PORT");
			return -1;
		}
		h = s + 1;
		n = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			snprintf(err, errlen, "missing :PORT");
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			snprintf(err, errlen, "IPv6 addresses need brackets");
			return -1;
		}
		n = (size_t)(colon - s);
	}
	if (n == 0) {
		snprintf(err, errlen, "missing address");
		return -1;
	}
	if (n >= hostlen) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	memcpy(host, h, n);
	host[n] = '\0';
	*port = colon + 1;
	return 0;
}

int
util_parse_addrport(const char *s, int allow_unix, int resolve,
    struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res = NULL;
	char		 host[256];
	const char	*port;
	int		 portnum, rc;

	if (strncmp(s, "unix:", 5) == 0) {
		if (!allow_unix) {
			snprintf(err, errlen, "unix sockets not allowed here");
			return -1;
		}
		return util_parse_unix(s + 5, ss, sslen, err, errlen);
	}
	if (util_split_hostport(s, host, sizeof(host), &port, err, errlen))
		return -1;
	if (util_parse_port(port, &portnum) == -1) {
		snprintf(err, errlen, "bad port '%.16s' (1-65535)", port);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (resolve ? 0 : AI_NUMERICHOST);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, errlen, "%s address '%.64s'%s%s",
		    resolve ? "cannot resolve" : "not a numeric", host,
		    resolve ? ": " : "", resolve ? gai_strerror(rc) : "");
		if (res)
			freeaddrinfo(res);
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
util_parse_net(const char *s, struct util_net *net, char *err, size_t errlen)
{
	char		 buf[128], *slash;
	struct addrinfo	 hints, *res = NULL;
	int		 max;

	if (util_strlcpy(buf, s, sizeof(buf)) >= sizeof(buf)) {
		snprintf(err, errlen, "network too long");
		return -1;
	}
	slash = strchr(buf, '/');
	if (slash)
		*slash++ = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(buf, NULL, &hints, &res) != 0 || res == NULL) {
		snprintf(err, errlen, "not a numeric address '%.64s'", buf);
		return -1;
	}
	memset(net, 0, sizeof(*net));
	memcpy(&net->addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	max = net->addr.ss_family == AF_INET ? 32 : 128;
	net->prefix = max;
	if (slash) {
		char	*end;
		long	 v;

		errno = 0;
		v = strtol(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || errno || v < 0 || v > max) {
			snprintf(err, errlen, "bad prefix length '%.8s'", slash);
			return -1;
		}
		net->prefix = (int)v;
	}
	return 0;
}

/* Pointer to the raw address bytes and their length; v4-mapped as v4. */
static const unsigned char *
util_addr_bytes(const struct sockaddr *sa, int *family, size_t *len)
{
	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		*len = 4;
		return (const unsigned char *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			*family = AF_INET;
			*len = 4;
			return a->s6_addr + 12;
		}
		*family = AF_INET6;
		*len = 16;
		return a->s6_addr;
	}
	*family = sa->sa_family;
	*len = 0;
	return NULL;
}

int
util_addr_equal(const struct sockaddr *x, const struct sockaddr *y)
{
	const unsigned char	*a, *b;
	int			 fa, fb;
	size_t			 la, lb;

	a = util_addr_bytes(x, &fa, &la);
	b = util_addr_bytes(y, &fb, &lb);
	return a != NULL && b != NULL && fa == fb && la == lb &&
	    memcmp(a, b, la) == 0;
}

/* The first bits of a and b agree. */
static int
util_prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
	int	full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	return rest == 0 ||
	    ((a[full] ^ b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* A network's bytes, family and prefix, a v4-mapped one as IPv4. */
static const unsigned char *
util_net_bytes(const struct util_net *n, int *family, size_t *len,
    int *prefix)
{
	const unsigned char	*a;

	a = util_addr_bytes((const struct sockaddr *)&n->addr, family, len);
	*prefix = n->prefix;
	if (a != NULL && *family == AF_INET &&
	    n->addr.ss_family == AF_INET6) {
		/* "::ffff:10.0.0.0/104": a prefix shorter than 96 is not
		 * an IPv4 network, and matches no IPv4 address. */
		if (*prefix < 96)
			return NULL;
		*prefix -= 96;
	}
	return a;
}

int
util_net_match(const struct util_net *n, const struct sockaddr *sa)
{
	const unsigned char	*na, *a;
	int			 nf, f, prefix;
	size_t			 nl, l;

	na = util_net_bytes(n, &nf, &nl, &prefix);
	a = util_addr_bytes(sa, &f, &l);
	return na != NULL && a != NULL && nf == f && nl == l &&
	    util_prefix_equal(na, a, prefix);
}

int
util_net_within(const struct util_net *inner, const struct util_net *outer)
{
	const unsigned char	*ia, *oa;
	int			 ifam, ofam, ip, op;
	size_t			 il, ol;

	ia = util_net_bytes(inner, &ifam, &il, &ip);
	oa = util_net_bytes(outer, &ofam, &ol, &op);
	return ia != NULL && oa != NULL && ifam == ofam && il == ol &&
	    ip >= op && util_prefix_equal(ia, oa, op);
}

const char *
util_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	const unsigned char	*a;
	int			 family;
	size_t			 alen;

	if (sa->sa_family == AF_UNIX) {
		util_strlcpy(buf, "unix", len);
		return buf;
	}
	a = util_addr_bytes(sa, &family, &alen);
	if (a == NULL || inet_ntop(family, a, buf, (socklen_t)len) == NULL)
		util_strlcpy(buf, "?", len);
	return buf;
}

int
util_addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	return 0;
}

/* IPv4 as v4-mapped IPv6, so both spellings are one address. */
void
util_addr_key(const struct sockaddr *sa, unsigned char key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(key,
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
}

void
util_tcp_nodelay(int fd, int family)
{
	int	on = 1;

	if (fd == -1 || (family != AF_INET && family != AF_INET6))
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}
