/*
 * util.h - address parsing and formatting, small string helpers.
 */
#ifndef UTIL_H
#define UTIL_H

#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>

/* "1.2.3.4" / "::1", no port: INET6_ADDRSTRLEN is enough. */
#define UTIL_ADDRSTRLEN		64
/* "[::1]:25", "1.2.3.4:25" or "unix:/path". */
#define UTIL_ADDRPORTSTRLEN	(sizeof(((struct sockaddr_un *)0)->sun_path) + 8)

/*
 * Parse "ADDR:PORT" with IPv6 in brackets ("[::1]:25") or, when allow_unix,
 * "unix:/path".  Numeric addresses only when resolve is 0; otherwise a host
 * name is resolved (first address).  Returns 0, or -1 with a message in err.
 */
int	util_parse_addrport(const char *, int allow_unix, int resolve,
	    struct sockaddr_storage *, socklen_t *, char *err, size_t errlen);

/* Parse "ADDR/LEN" or "ADDR" into a network (for proxy_trusted). */
struct util_net {
	struct sockaddr_storage	addr;
	int			prefix;
};
int	util_parse_net(const char *, struct util_net *, char *err, size_t errlen);
/*
 * Whether an address is inside a network, and a network inside another;
 * a v4-mapped IPv6 address or network is the IPv4 one it stands for.
 */
int	util_net_match(const struct util_net *, const struct sockaddr *);
int	util_net_within(const struct util_net *inner,
	    const struct util_net *outer);

/* Address only ("unix" for a unix socket) / port (0 for unix). */
const char *util_addr_str(const struct sockaddr *, char *, size_t);
int	util_addr_port(const struct sockaddr *);

/* Compare addresses only (not ports); v4-mapped v6 equals v4. */
int	util_addr_equal(const struct sockaddr *, const struct sockaddr *);

/* strlcpy-alike: always terminates, returns strlen(src). */
size_t	util_strlcpy(char *, const char *, size_t);

/* malloc/calloc/strdup that abort on failure (startup only). */
void	*util_xcalloc(size_t, size_t);
char	*util_xstrdup(const char *);

void		util_addr_key(const struct sockaddr *, unsigned char [16]);

/*
 * TCP_NODELAY on a relay socket: a proxy writes what it has, and Nagle's
 * algorithm would hold a reply behind the peer's delayed ACK (~40 ms).
 * A no-op for other families (unix).
 */
void		util_tcp_nodelay(int fd, int family);

#endif /* UTIL_H */
