/*
 * audit.c - the -t check: usability and the hardening audit (SPEC 7).
 *
 * Findings are reported one per line with a severity; an error makes the
 * configuration unusable (exit 1), a warning does not.  What would stop
 * the daemon from starting is an error; everything SPEC section 7 lists
 * is a warning: the configuration works, but below policy.
 *
 * Certificates and keys are first checked by tls_check() (readable, key
 * matching, dates, self-signed: the same code that loads them), then here
 * for what only an audit asks: names against `hostname`, the chain against
 * the system store, key and DH sizes, profiles on client-facing services,
 * privileges.  A file tls_check() could not read is skipped silently here,
 * since it has been reported already.
 *
 * proxy_trusted (accept_proxy): every address in it may claim to be any
 * client, so a network that is not private (RFC 1918, RFC 6598, loopback,
 * link-local; IPv6 ULA, loopback, link-local), or wider than the private
 * range it lies in (0.0.0.0/0, ::/0, 10.0.0.0/7), gets a warning.  A
 * single public address (a balancer on another host) does not.
 *
 * Client identity (SPEC 9): a backend that takes PROXY headers or XCLIENT
 * from mailtlsd believes whatever arrives from mailtlsd's address, so
 * such a backend should be reachable on loopback or a unix socket only.
 *
 * "Client-facing" (MSA and MDA, RFC 6409 and 8314): a service listening
 * on 587, 465, 143, 993, 110 or 995, and every IMAP or POP3 service, which
 * only mail clients ever speak to.  Port 25 and other SMTP ports are
 * MTA-to-MTA, where RFC 7435 makes any encryption better than none.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "audit.h"
#include "dane.h"
#include "backend.h"
#include "conf.h"
#include "tls.h"
#include "util.h"

#define AUDIT_RSA_MIN_BITS	2048
#define AUDIT_EC_MIN_BITS	256
#define AUDIT_DH_MIN_BITS	2048
#define AUDIT_MSG_MAX		1024
#define AUDIT_CIPHERS_SHOWN	4	/* weak suites named in a finding */
#define AUDIT_WHERE_MAX		256

struct audit {
	const struct conf	*conf;
	audit_cb		 cb;
	void			*arg;
	int			 errors;
	int			 line;	/* of the current section */
};

/* The section a finding is about, for tls_check()'s callback. */
struct audit_tls_ctx {
	struct audit		*a;
	const struct conf_tls	*tls;
};

/* dane_check_resolver()'s findings, for one service. */
struct audit_dane_ctx {
	struct audit			*a;
	const struct conf_service	*svc;
};

/* Who reads the files on reload, after the privilege drop. */
struct audit_reader {
	const char	*user;
	const char	*group;
	uid_t		 uid;
	gid_t		 gid;
	int		 is_self;	/* running as uid already */
	const char	**seen;		/* paths reported once */
	size_t		 nseen, maxseen;
};

/* A certificate file as tls.c reads it: the leaf, then its chain. */
struct audit_cert {
	X509		*leaf;
	STACK_OF(X509)	*chain;
};

/* Submission (RFC 6409, 8314), IMAP and POP3, cleartext and implicit TLS. */
static const int audit_client_ports[] = { 587, 465, 143, 993, 110, 995 };

static void	audit_report(struct audit *, enum audit_severity, int,
		    const char *, ...) __attribute__((format(printf, 4, 5)));
static void	audit_tls_finding(void *, int, const char *);
static int	audit_cert_load(const char *, struct audit_cert *);
static void	audit_cert_clear(struct audit_cert *);
static void	audit_key_strength(struct audit *, const char *,
		    const char *, X509 *);
static void	audit_chain(struct audit *, const char *, const char *,
		    X509_STORE *, const struct audit_cert *);
static X509_STORE *audit_store(const struct conf_tls *);
static void	audit_names(struct audit *, const struct conf_tls *,
		    const struct conf_keypair *, X509 *);
static void	audit_pairs(struct audit *, const struct conf_tls *,
		    const char *, const struct conf_sni *, X509_STORE *);
static void	audit_dh(struct audit *, const struct conf_tls *);
static void	audit_tls_section(struct audit *, const struct conf_tls *);
static int	audit_client_facing(const struct conf_service *, char *,
		    size_t);
static int	audit_min_version(const struct conf_tls *);
static const char *audit_version_name(int);
static void	audit_ciphers(struct audit *, const struct conf_service *,
		    const char *);
static void	audit_service(struct audit *, const struct conf_service *);
static void	audit_limits(struct audit *, const struct conf_service *);
static void	audit_proxy_trusted(struct audit *,
		    const struct conf_service *);
static int	audit_local_endpoint(const struct conf_endpoint *);
static void	audit_identity(struct audit *, const struct conf_service *);
static void	audit_timeouts(struct audit *, const struct conf_service *);
static void	audit_client_mode(struct audit *, const struct conf_service *);
static void	audit_dane_finding(void *, const char *);
static int	audit_loopback(const struct sockaddr_storage *);
static void	audit_stats(struct audit *);
static int	audit_mode_ok(const struct stat *,
		    const struct audit_reader *, mode_t, mode_t, mode_t);
static int	audit_can_read(const struct audit_reader *, const char *,
		    int);
static void	audit_readable(struct audit *, struct audit_reader *,
		    const char *, int, const char *, const char *, int);
static void	audit_readable_tls(struct audit *, struct audit_reader *,
		    const struct conf_tls *);
static void	audit_reload_files(struct audit *, const struct passwd *,
		    gid_t);
static void	audit_privileges(struct audit *);
static void	audit_jail_file(struct audit *, const char *);
static void	audit_chroot(struct audit *);
static void	audit_transparent(struct audit *);

static void
audit_report(struct audit *a, enum audit_severity sev, int line,
    const char *fmt, ...)
{
	char	msg[AUDIT_MSG_MAX];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	a->cb(a->arg, sev, a->conf->file, line, msg);
	if (sev == AUDIT_ERROR)
		a->errors++;
}

static void
audit_tls_finding(void *arg, int is_error, const char *msg)
{
	struct audit_tls_ctx	*ctx = arg;

	audit_report(ctx->a, is_error ? AUDIT_ERROR : AUDIT_WARNING,
	    ctx->tls->line, "%s", msg);
}

/* ------------------------------------------------------------------ */
/* Certificates and keys. */

/* Problems reading the file were reported by tls_check(): -1, quietly. */
static int
audit_cert_load(const char *path, struct audit_cert *c)
{
	BIO	*bio;
	X509	*x;

	memset(c, 0, sizeof(*c));
	if ((bio = BIO_new_file(path, "r")) == NULL) {
		ERR_clear_error();
		return -1;
	}
	c->leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	c->chain = sk_X509_new_null();
	while (c->leaf != NULL && c->chain != NULL &&
	    (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(c->chain, x)) {
			X509_free(x);
			break;
		}
	BIO_free(bio);
	ERR_clear_error();	/* the loop ends on "no start line" */
	if (c->leaf == NULL || c->chain == NULL) {
		audit_cert_clear(c);
		return -1;
	}
	return 0;
}

static void
audit_cert_clear(struct audit_cert *c)
{
	X509_free(c->leaf);
	sk_X509_pop_free(c->chain, X509_free);
	memset(c, 0, sizeof(*c));
}

/*
 * The key's size, from the certificate's public key (tls_check() made
 * sure the key matches it), so private keys are not read twice.  RSA
 * below 2048 bits does not even load under modern and intermediate
 * (OpenSSL security level 2), where tls_check() reports OpenSSL's terse
 * reason; this line says what to do about it.
 */
static void
audit_key_strength(struct audit *a, const char *where, const char *keypath,
    X509 *leaf)
{
	EVP_PKEY	*pk = X509_get0_pubkey(leaf);
	int		 bits, min = 0;
	const char	*kind = NULL;

	if (pk == NULL) {
		ERR_clear_error();
		return;
	}
	bits = EVP_PKEY_get_bits(pk);
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
	case EVP_PKEY_RSA_PSS:
		kind = "RSA";
		min = AUDIT_RSA_MIN_BITS;
		break;
	case EVP_PKEY_EC:
		kind = "ECDSA";
		min = AUDIT_EC_MIN_BITS;
		break;
	case EVP_PKEY_DSA:
		/* TLS 1.3 has no DSA at all; 1.2 clients rarely offer it. */
		audit_report(a, AUDIT_WARNING, a->line, "%s: key %s is DSA: "
		    "use RSA (>= %d bits) or ECDSA (>= %d bits)", where,
		    keypath, AUDIT_RSA_MIN_BITS, AUDIT_EC_MIN_BITS);
		return;
	default:
		return;	/* Ed25519, Ed448: strong by construction */
	}
	if (bits < min)
		audit_report(a, AUDIT_WARNING, a->line, "%s: key %s is %s %d "
		    "bits, weaker than %s %d", where, keypath, kind, bits, kind,
		    min);
}

/*
 * The system's trust store (what most clients use) plus the section's
 * ca_file/ca_path (a private CA's deployment trusts that instead).
 */
static X509_STORE *
audit_store(const struct conf_tls *t)
{
	X509_STORE	*store;

	if ((store = X509_STORE_new()) == NULL)
		return NULL;
	(void)X509_STORE_set_default_paths(store);
	if (t->ca_file != NULL)
		(void)X509_STORE_load_file(store, t->ca_file);
	if (t->ca_path != NULL)
		(void)X509_STORE_load_path(store, t->ca_path);
	ERR_clear_error();	/* a missing system directory is no finding */
	return store;
}

/*
 * Verify leaf + chain as a client would (purpose: TLS server), now.  A
 * self-signed or expired leaf is tls_check()'s finding already; an
 * expired certificate further up the chain is this one's.
 */
static void
audit_chain(struct audit *a, const char *where, const char *path,
    X509_STORE *store, const struct audit_cert *c)
{
	X509_STORE_CTX	*vc;
	X509		*bad;
	char		 subject[256] = "?";
	int		 err, depth;

	if (store == NULL || X509_self_signed(c->leaf, 1) == 1 ||
	    X509_cmp_current_time(X509_get0_notBefore(c->leaf)) >= 0 ||
	    X509_cmp_current_time(X509_get0_notAfter(c->leaf)) <= 0) {
		ERR_clear_error();
		return;
	}
	if ((vc = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(vc, store, c->leaf, c->chain) != 1) {
		X509_STORE_CTX_free(vc);
		ERR_clear_error();
		return;
	}
	X509_STORE_CTX_set_purpose(vc, X509_PURPOSE_SSL_SERVER);
	if (X509_verify_cert(vc) != 1) {
		err = X509_STORE_CTX_get_error(vc);
		depth = X509_STORE_CTX_get_error_depth(vc);
		if ((bad = X509_STORE_CTX_get_current_cert(vc)) != NULL)
			X509_NAME_oneline(X509_get_subject_name(bad), subject,
			    sizeof(subject));
		audit_report(a, AUDIT_WARNING, a->line, "%s: certificate %s: "
		    "chain does not verify: %s (depth %d: %s)", where, path,
		    X509_verify_cert_error_string(err), depth, subject);
	}
	X509_STORE_CTX_free(vc);
	ERR_clear_error();
}

/*
 * Each hostname of the services using this section, once, against the
 * default pairs (what a client without SNI, or with an unknown name,
 * gets).  Partial wildcards ("m*.example.org") are not accepted, as
 * RFC 6125 section 6.4.3 advises clients.
 */
static void
audit_names(struct audit *a, const struct conf_tls *t,
    const struct conf_keypair *kp, X509 *leaf)
{
	const struct conf	*conf = a->conf;
	size_t			 i, j;
	int			 dup;

	for (i = 0; i < conf->nservices; i++) {
		const struct conf_service *s = &conf->services[i];

		if (s->tls != t || s->hostname == NULL)
			continue;
		for (dup = 0, j = 0; j < i && !dup; j++)
			dup = conf->services[j].tls == t &&
			    conf->services[j].hostname != NULL &&
			    strcasecmp(conf->services[j].hostname,
			    s->hostname) == 0;
		if (dup || X509_check_host(leaf, s->hostname, 0,
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1)
			continue;
		audit_report(a, AUDIT_WARNING, t->line, "tls \"%s\": "
		    "certificate %s does not match hostname \"%s\" of service "
		    "\"%s\"", t->name, kp->certificate, s->hostname, s->name);
	}
	ERR_clear_error();
}

/* The pairs of the section (sni NULL) or of one of its sni subsections. */
static void
audit_pairs(struct audit *a, const struct conf_tls *t, const char *where,
    const struct conf_sni *sni, X509_STORE *store)
{
	const struct conf_keypair	*pairs = sni ? sni->pairs : t->pairs;
	size_t				 n;
	struct audit_cert		 c;
	size_t				 i;

	n = sni ? sni->npairs : t->npairs;
	for (i = 0; i < n; i++) {
		if (audit_cert_load(pairs[i].certificate, &c) == -1)
			continue;
		audit_key_strength(a, where, pairs[i].key, c.leaf);
		audit_chain(a, where, pairs[i].certificate, store, &c);
		if (sni == NULL)
			audit_names(a, t, &pairs[i], c.leaf);
		else if (strchr(sni->name, '*') == NULL &&
		    X509_check_host(c.leaf, sni->name, 0,
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) != 1)
			audit_report(a, AUDIT_WARNING, t->line, "%s: "
			    "certificate %s does not match \"%s\"", where,
			    pairs[i].certificate, sni->name);
		ERR_clear_error();
		audit_cert_clear(&c);
	}
}

/* Logjam (2015): DH groups below 2048 bits are within reach. */
static void
audit_dh(struct audit *a, const struct conf_tls *t)
{
	EVP_PKEY	*dh;
	BIO		*bio;
	int		 bits;

	if (t->dh_params == NULL)
		return;
	if ((bio = BIO_new_file(t->dh_params, "r")) == NULL) {
		ERR_clear_error();
		return;
	}
	dh = PEM_read_bio_Parameters(bio, NULL);
	BIO_free(bio);
	if (dh != NULL && (bits = EVP_PKEY_get_bits(dh)) > 0 &&
	    bits < AUDIT_DH_MIN_BITS)
		audit_report(a, AUDIT_WARNING, t->line, "tls \"%s\": dh_params "
		    "%s has %d bits, smaller than %d", t->name, t->dh_params,
		    bits, AUDIT_DH_MIN_BITS);
	EVP_PKEY_free(dh);
	ERR_clear_error();
}

static void
audit_tls_section(struct audit *a, const struct conf_tls *t)
{
	struct audit_tls_ctx	 ctx = { a, t };
	X509_STORE		*store;
	char			 where[AUDIT_WHERE_MAX];
	size_t			 i;
	int			 before = a->errors;

	a->line = t->line;
	if (tls_check(t, audit_tls_finding, &ctx) == -1 && a->errors == before)
		audit_report(a, AUDIT_ERROR, t->line, "tls \"%s\": not usable",
		    t->name);
	store = audit_store(t);
	snprintf(where, sizeof(where), "tls \"%s\"", t->name);
	audit_pairs(a, t, where, NULL, store);
	for (i = 0; i < t->nsni; i++) {
		snprintf(where, sizeof(where), "tls \"%s\" sni \"%s\"", t->name,
		    t->sni[i].name);
		audit_pairs(a, t, where, &t->sni[i], store);
	}
	X509_STORE_free(store);
	audit_dh(a, t);
}

/* ------------------------------------------------------------------ */
/* Services. */

/*
 * 1 if mail clients (not servers) connect to s; what says why, for the
 * findings: "port 587" or "imap".
 */
static int
audit_client_facing(const struct conf_service *s, char *what, size_t len)
{
	size_t	i, j;
	int	port;

	for (i = 0; i < s->nlisten; i++) {
		port = util_addr_port(
		    (const struct sockaddr *)&s->listen[i].ss);
		for (j = 0; j < sizeof(audit_client_ports) /
		    sizeof(audit_client_ports[0]); j++)
			if (port == audit_client_ports[j]) {
				snprintf(what, len, "port %d", port);
				return 1;
			}
	}
	if (s->protocol == PROTO_IMAP || s->protocol == PROTO_POP3) {
		snprintf(what, len, "%s", conf_proto_name(s->protocol));
		return 1;
	}
	return 0;
}

/* The lowest version a section allows (the profiles as in tls.c). */
static int
audit_min_version(const struct conf_tls *t)
{
	if (t->min_protocol != 0)
		return t->min_protocol;
	switch (t->profile) {
	case TLS_PROFILE_MODERN:
		return TLS1_3_VERSION;
	case TLS_PROFILE_OPPORTUNISTIC:
		return TLS1_VERSION;
	case TLS_PROFILE_INTERMEDIATE:
	default:
		return TLS1_2_VERSION;
	}
}

static const char *
audit_version_name(int v)
{
	switch (v) {
	case TLS1_VERSION:
		return "TLSv1";
	case TLS1_1_VERSION:
		return "TLSv1.1";
	case TLS1_2_VERSION:
		return "TLSv1.2";
	default:
		return "TLSv1.3";
	}
}

/*
 * A `ciphers` override on a client-facing service: every TLS <= 1.2 suite
 * it enables must have forward secrecy (ECDHE/DHE) and an AEAD cipher,
 * as Mozilla's intermediate list does.  The list is evaluated at security
 * level 0 so that it shows what the string asks for.
 */
static void
audit_ciphers(struct audit *a, const struct conf_service *s, const char *what)
{
	const struct conf_tls	*t = s->tls;
	STACK_OF(SSL_CIPHER)	*sk;
	SSL_CTX			*ctx;
	char			 names[AUDIT_MSG_MAX / 2] = "";
	int			 i, n, weak = 0, kx;

	if (t->ciphers == NULL || audit_min_version(t) >= TLS1_3_VERSION ||
	    (ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto out;
	SSL_CTX_set_security_level(ctx, 0);
	if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1 ||
	    (sk = SSL_CTX_get_ciphers(ctx)) == NULL) {
		SSL_CTX_free(ctx);	/* tls_check() said why */
		goto out;
	}
	n = sk_SSL_CIPHER_num(sk);
	for (i = 0; i < n; i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);

		if ((kx = SSL_CIPHER_get_kx_nid(c)) == NID_kx_any)
			continue;	/* TLS 1.3: AEAD and (EC)DHE always */
		if ((kx == NID_kx_ecdhe || kx == NID_kx_dhe) &&
		    SSL_CIPHER_is_aead(c) &&
		    SSL_CIPHER_get_auth_nid(c) != NID_auth_null)
			continue;
		if (weak++ < AUDIT_CIPHERS_SHOWN) {
			if (names[0] != '\0')
				strncat(names, ", ", sizeof(names) -
				    strlen(names) - 1);
			strncat(names, SSL_CIPHER_get_name(c), sizeof(names) -
			    strlen(names) - 1);
		}
	}
	SSL_CTX_free(ctx);
	if (weak > 0)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\" (%s): "
		    "tls \"%s\": ciphers enables %d suite%s without forward "
		    "secrecy or AEAD: %s%s", s->name, what, t->name, weak,
		    weak == 1 ? "" : "s", names,
		    weak > AUDIT_CIPHERS_SHOWN ? ", ..." : "");
out:
	ERR_clear_error();
}

static void
audit_service(struct audit *a, const struct conf_service *s)
{
	const struct conf_tls	*t = s->tls;
	char			 what[64];
	int			 min;

	if (!audit_client_facing(s, what, sizeof(what)))
		return;
	if (s->tls_mode == TLS_MODE_STARTTLS && !s->require_starttls)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\" (%s): "
		    "require_starttls = false lets mail clients stay in "
		    "cleartext", s->name, what);
	if (t == NULL)
		return;
	if (t->profile == TLS_PROFILE_OPPORTUNISTIC)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\" (%s): "
		    "tls \"%s\" uses the opportunistic profile (TLS 1.0 and "
		    "suites without forward secrecy), meant for port 25 only; "
		    "use \"intermediate\" or \"modern\"", s->name, what,
		    t->name);
	else if ((min = audit_min_version(t)) < TLS1_2_VERSION)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\" (%s): "
		    "tls \"%s\": min_protocol %s allows versions below TLS 1.2 "
		    "(RFC 8996)", s->name, what, t->name,
		    audit_version_name(min));
	if (t->profile != TLS_PROFILE_OPPORTUNISTIC)
		audit_ciphers(a, s, what);
}

/*
 * SPEC 10 limits that 0 turns off.  cleartext_timeout = 0 lets a client
 * that never sends STARTTLS keep a connection (and a slot of
 * max_connections_per_ip) for as long as it keeps talking: idle_timeout
 * alone never fires for a NOOP every few minutes.  smtp_greeting_delay
 * is off by default (SPEC 10, and it delays every legitimate client),
 * so 0 there is the shipped choice and nothing is said.  idle_timeout
 * and handshake_timeout cannot be 0.
 */
static void
audit_timeouts(struct audit *a, const struct conf_service *s)
{
	if (s->tls_mode == TLS_MODE_STARTTLS && s->require_starttls &&
	    s->cleartext_timeout == 0)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "cleartext_timeout = 0: a client that never sends "
		    "STARTTLS keeps its connection for as long as it keeps "
		    "talking", s->name);
}

/*
 * SPEC 12, client mode.  A plaintext listener is always worth a line
 * (what it accepts crosses its network in clear: credentials included),
 * louder when allow_plaintext_listen took it off loopback.  An
 * unverified backend leg is encrypted but not authenticated: anyone on
 * the path can stand in for the server (STRIPTLS's cousin).
 */
static void
audit_client_mode(struct audit *a, const struct conf_service *s)
{
	size_t	 i;

	if (s->tls_mode == TLS_MODE_NONE)
		for (i = 0; i < s->nlisten; i++)
			audit_report(a, AUDIT_WARNING, s->line, "service "
			    "\"%s\": tls_mode = \"none\": %s accepts "
			    "plaintext%s", s->name, s->listen[i].text,
			    audit_loopback(&s->listen[i].ss) ?
			    " (loopback only)" : ", and is not a loopback "
			    "address (allow_plaintext_listen): passwords cross "
			    "the network in clear");
	if (s->backend_tls != BACKEND_TLS_NONE && !s->backend_tls_verify)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "backend_tls_verify = false: the backend's certificate "
		    "is not checked, anyone on the path can impersonate it",
		    s->name);
	if (s->backend_tls != BACKEND_TLS_NONE &&
	    s->backend_tls_profile == TLS_PROFILE_OPPORTUNISTIC)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "backend_tls_profile = \"opportunistic\" allows TLS 1.0 "
		    "and suites without forward secrecy towards the backend",
		    s->name);
	/* DANE is as good as the resolver's validation and the path to it. */
	if (s->backend_dane) {
		struct audit_dane_ctx ctx = { a, s };

		dane_check_resolver(audit_dane_finding, &ctx);
	}
}

static void
audit_dane_finding(void *arg, const char *msg)
{
	struct audit_dane_ctx	*ctx = arg;

	audit_report(ctx->a, AUDIT_WARNING, ctx->svc->line, "service \"%s\": "
	    "%s", ctx->svc->name, msg);
}

/*
 * SPEC 10 limits set to 0 are off (issue 10 item 6): legal, for a
 * service behind something that limits already, but worth a word.
 */
static void
audit_limits(struct audit *a, const struct conf_service *s)
{
	if (s->max_connection_rate_per_ip == 0)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "max_connection_rate_per_ip = 0 turns the connection rate "
		    "limit off: one address may open connections as fast as "
		    "it likes", s->name);
	if (s->max_auth_failures_per_ip == 0)
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "max_auth_failures_per_ip = 0 turns the authentication "
		    "failure limit off: one address may guess passwords "
		    "without end", s->name);
}

/* Networks a balancer may sit in without anyone else sharing them. */
static const char *const audit_private_nets[] = {
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",	/* RFC 1918 */
	"100.64.0.0/10",					/* RFC 6598 */
	"127.0.0.0/8", "169.254.0.0/16",
	"fc00::/7", "::1/128", "fe80::/10",
};

static void
audit_proxy_trusted(struct audit *a, const struct conf_service *s)
{
	struct util_net	 priv;
	char		 text[UTIL_ADDRSTRLEN], err[128];
	size_t		 i, j;
	int		 host, inside;

	for (i = 0; i < s->nproxy_trusted; i++) {
		const struct util_net *n = &s->proxy_trusted[i];

		host = n->prefix == (n->addr.ss_family == AF_INET ? 32 : 128);
		for (inside = 0, j = 0; !inside &&
		    j < sizeof(audit_private_nets) /
		    sizeof(audit_private_nets[0]); j++)
			inside = util_parse_net(audit_private_nets[j], &priv,
			    err, sizeof(err)) == 0 && util_net_within(n, &priv);
		if (inside || host)
			continue;
		/* As written: a v4-mapped network stays IPv6. */
		if (inet_ntop(n->addr.ss_family, n->addr.ss_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)
		    (const void *)&n->addr)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)
		    (const void *)&n->addr)->sin6_addr, text,
		    sizeof(text)) == NULL)
			util_strlcpy(text, "?", sizeof(text));
		audit_report(a, AUDIT_WARNING, s->line, "service \"%s\": "
		    "proxy_trusted %s/%d is wider than a private network: "
		    "every host in it may claim any client address (limits, "
		    "logs, what the backend is told); list the balancers' "
		    "own addresses", s->name, text, n->prefix);
	}
}

/* 1 for a unix socket or a loopback address (127/8, ::1, v4-mapped). */
static int
audit_local_endpoint(const struct conf_endpoint *e)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	switch (e->ss.ss_family) {
	case AF_UNIX:
		return 1;
	case AF_INET:
		sin = (const struct sockaddr_in *)(const void *)&e->ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)(const void *)&e->ss;
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
		    sin6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

/*
 * send_proxy and xclient (SPEC 9) make the backend take the client's
 * identity from whoever connects from mailtlsd's address: the backend
 * must trust that address (haproxy_trusted_networks,
 * smtpd_authorized_xclient_hosts).  Across a network, every other
 * process or host that can use that address, or sit on the path, can
 * forge any client (bypass relay rules, fake TLS to Dovecot), and the
 * header or XCLIENT travels in cleartext.
 */
static void
audit_identity(struct audit *a, const struct conf_service *s)
{
	const char	*what;
	size_t		 i;

	if (s->xclient)
		what = s->send_proxy != SEND_PROXY_NONE ?
		    "send_proxy and xclient" : "xclient";
	else if (s->send_proxy != SEND_PROXY_NONE)
		what = "send_proxy";
	else
		return;
	for (i = 0; i < s->nbackends; i++)
		if (!audit_local_endpoint(&s->backends[i]))
			audit_report(a, AUDIT_WARNING, s->line, "service "
			    "\"%s\": %s towards backend %s, which is not on "
			    "loopback or a unix socket: the backend must trust "
			    "every connection from this host's address with "
			    "the client's identity, and the identity crosses "
			    "the network in cleartext", s->name, what,
			    s->backends[i].text);
}

/* ------------------------------------------------------------------ */
/* Privileges, and the files a reload reads after dropping them. */

static int
audit_mode_ok(const struct stat *st, const struct audit_reader *r,
    mode_t u, mode_t g, mode_t o)
{
	if (st->st_uid == r->uid)
		return (st->st_mode & u) != 0;
	if (st->st_gid == r->gid)
		return (st->st_mode & g) != 0;
	return (st->st_mode & o) != 0;
}

/*
 * By permission bits (ACLs are not looked at) for the one group the
 * privilege drop keeps, and the search bit of every directory above;
 * by access() when -t already runs as that user (systemd's User=), which
 * also sees supplementary groups.  A missing file is reported elsewhere.
 */
static int
audit_can_read(const struct audit_reader *r, const char *path, int is_dir)
{
	char		 buf[PATH_MAX];
	struct stat	 st;
	char		*p;

	if (r->is_self)
		return access(path, is_dir ? R_OK | X_OK : R_OK) == 0 ||
		    errno == ENOENT;
	if (util_strlcpy(buf, path, sizeof(buf)) >= sizeof(buf))
		return 1;
	for (p = buf + 1; buf[0] == '/' && (p = strchr(p, '/')) != NULL;
	    p++) {
		*p = '\0';
		if (stat(buf, &st) == 0 &&
		    !audit_mode_ok(&st, r, S_IXUSR, S_IXGRP, S_IXOTH))
			return 0;
		*p = '/';
	}
	if (stat(path, &st) == -1)
		return 1;
	if (is_dir && !audit_mode_ok(&st, r, S_IXUSR, S_IXGRP, S_IXOTH))
		return 0;
	return audit_mode_ok(&st, r, S_IRUSR, S_IRGRP, S_IROTH);
}

static void
audit_readable(struct audit *a, struct audit_reader *r, const char *path,
    int is_dir, const char *where, const char *what, int line)
{
	const char	**seen;
	size_t		  i;

	if (path == NULL)
		return;
	for (i = 0; i < r->nseen; i++)
		if (strcmp(r->seen[i], path) == 0)
			return;
	if (r->nseen == r->maxseen) {
		r->maxseen = r->maxseen ? r->maxseen * 2 : 16;
		if ((seen = reallocarray(r->seen, r->maxseen,
		    sizeof(*seen))) == NULL)
			return;
		r->seen = seen;
	}
	r->seen[r->nseen++] = path;
	if (audit_can_read(r, path, is_dir))
		return;
	audit_report(a, AUDIT_WARNING, line, "%s%s%s %s is not readable by "
	    "user \"%s\" (group \"%s\"): reloading (SIGHUP) would fail",
	    where, where[0] ? ": " : "", what, path, r->user, r->group);
}

static void
audit_readable_tls(struct audit *a, struct audit_reader *r,
    const struct conf_tls *t)
{
	char	where[AUDIT_WHERE_MAX];
	size_t	i, j;

	snprintf(where, sizeof(where), "tls \"%s\"", t->name);
	for (i = 0; i < t->npairs; i++) {
		audit_readable(a, r, t->pairs[i].certificate, 0, where,
		    "certificate", t->line);
		audit_readable(a, r, t->pairs[i].key, 0, where, "key",
		    t->line);
	}
	for (i = 0; i < t->nsni; i++)
		for (j = 0; j < t->sni[i].npairs; j++) {
			audit_readable(a, r, t->sni[i].pairs[j].certificate, 0,
			    where, "certificate", t->line);
			audit_readable(a, r, t->sni[i].pairs[j].key, 0, where,
			    "key", t->line);
		}
	audit_readable(a, r, t->ca_file, 0, where, "ca_file", t->line);
	audit_readable(a, r, t->ca_path, 1, where, "ca_path", t->line);
	audit_readable(a, r, t->dh_params, 0, where, "dh_params", t->line);
	if (t->session_tickets)
		audit_readable(a, r, t->ticket_key_file, 0, where,
		    "ticket_key_file", t->line);
}

/*
 * SIGHUP re-reads the configuration and every certificate and key with
 * the privileges the daemon has then: the user's, and only the one group
 * (main.c drops supplementary groups).  Keys readable by root alone load
 * at startup and make every later reload fail.
 */
static void
audit_reload_files(struct audit *a, const struct passwd *pw, gid_t gid)
{
	struct audit_reader	 r;
	struct group		*gr;
	size_t			 i;

	memset(&r, 0, sizeof(r));
	r.user = a->conf->user;
	r.uid = pw->pw_uid;
	r.gid = gid;
	r.is_self = getuid() == pw->pw_uid && geteuid() == pw->pw_uid;
	r.group = a->conf->group;
	if (r.group == NULL)
		r.group = (gr = getgrgid(gid)) != NULL ? gr->gr_name : "?";
	audit_readable(a, &r, a->conf->file, 0, "", "configuration file", 0);
	for (i = 0; i < a->conf->ntls; i++)
		audit_readable_tls(a, &r, &a->conf->tls[i]);
	free(r.seen);
}

static void
audit_privileges(struct audit *a)
{
	const struct conf	*conf = a->conf;
	struct passwd		*pw;
	struct group		*gr = NULL;

	if (conf->user == NULL) {
		/* main.c refuses to start as root without one. */
		audit_report(a, geteuid() == 0 ? AUDIT_ERROR : AUDIT_WARNING,
		    0, "no 'user' set: mailtlsd refuses to run as root without "
		    "one (user = \"root\" to do so deliberately)");
		return;
	}
	if (conf->group != NULL && (gr = getgrnam(conf->group)) == NULL)
		audit_report(a, AUDIT_ERROR, 0, "group \"%s\" does not exist",
		    conf->group);
	if ((pw = getpwnam(conf->user)) == NULL) {
		audit_report(a, AUDIT_ERROR, 0, "user \"%s\" does not exist",
		    conf->user);
		return;
	}
	if (pw->pw_uid == 0) {
		audit_report(a, AUDIT_WARNING, 0, "user = \"%s\": the daemon "
		    "would keep running as root", conf->user);
		return;
	}
	if (conf->group == NULL || gr != NULL)
		audit_reload_files(a, pw, gr != NULL ? gr->gr_gid : pw->pw_gid);
}

/* A file a reload reads, as it will be seen from inside the jail. */
static void
audit_jail_file(struct audit *a, const char *path)
{
	char	jailed[PATH_MAX];

	if (path == NULL)
		return;
	if (snprintf(jailed, sizeof(jailed), "%s%s%s", a->conf->chroot,
	    path[0] == '/' ? "" : "/", path) >= (int)sizeof(jailed) ||
	    access(jailed, R_OK) == -1)
		audit_report(a, AUDIT_WARNING, 0, "chroot: %s is not in the "
		    "jail (%s): a reload will fail", path, jailed);
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
static int
audit_loopback(const struct sockaddr_storage *ss)
{
	const struct in6_addr	*a6;

	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr)
		    >> 24) == 127;
	if (ss->ss_family != AF_INET6)
		return 0;
	a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a6) ||
	    (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

/*
 * SPEC 11: the stats listener answers stats_allow, loopback by default.
 * On another address without stats_allow that default answers nobody
 * but the host itself, which is surely not what was meant; stats_allow
 * with a /0 network publishes the counters (client counts, backend
 * names, certificate dates) to everyone who can reach the port.
 */
static void
audit_stats(struct audit *a)
{
	const struct conf	*conf = a->conf;
	const char		*open = NULL;
	size_t			 i;

	for (i = 0; i < conf->nstats_listen && open == NULL; i++)
		if (!audit_loopback(&conf->stats_listen[i].ss))
			open = conf->stats_listen[i].text;
	if (open == NULL)
		return;
	if (conf->nstats_allow == 0)
		audit_report(a, AUDIT_WARNING, conf->stats_line,
		    "stats_listen %s is not a loopback address and stats_allow "
		    "is not set: only loopback clients are answered (set "
		    "stats_allow to the networks of your Prometheus servers)",
		    open);
	for (i = 0; i < conf->nstats_allow; i++)
		if (conf->stats_allow[i].prefix == 0)
			audit_report(a, AUDIT_WARNING, conf->stats_line,
			    "stats_allow admits every address (a /0 network): "
			    "the metrics are open to anyone who reaches %s",
			    open);
}

/*
 * The daemon chroots after loading everything, so the jail only matters
 * for reloads: they re-read the configuration and the certificates at
 * the same paths inside it.
 */
static void
audit_chroot(struct audit *a)
{
	const struct conf	*conf = a->conf;
	struct stat		 st;
	size_t			 i, j;

	if (conf->chroot == NULL)
		return;
	if (stat(conf->chroot, &st) == -1 || !S_ISDIR(st.st_mode)) {
		audit_report(a, AUDIT_ERROR, 0, "chroot %s is not a directory",
		    conf->chroot);
		return;
	}
	audit_jail_file(a, conf->file);
	for (i = 0; i < conf->ntls; i++) {
		const struct conf_tls *t = &conf->tls[i];

		for (j = 0; j < t->npairs; j++) {
			audit_jail_file(a, t->pairs[j].certificate);
			audit_jail_file(a, t->pairs[j].key);
		}
		for (j = 0; j < t->nsni; j++) {
			size_t k;

			for (k = 0; k < t->sni[j].npairs; k++) {
				audit_jail_file(a, t->sni[j].pairs[k].certificate);
				audit_jail_file(a, t->sni[j].pairs[k].key);
			}
		}
		audit_jail_file(a, t->ca_file);
		audit_jail_file(a, t->dh_params);
		audit_jail_file(a, t->ticket_key_file);
	}
}

/*
 * backend_source = "client" needs IP_TRANSPARENT for every session.  The
 * kernel is asked with this process' capabilities: run as root, the
 * daemon keeps CAP_NET_ADMIN across its drop to 'user'; run by systemd as
 * ExecStartPre, -t has what the service will have.  Without it no session
 * of those services could reach a backend, and the daemon refuses to
 * start: an error.
 */
static void
audit_transparent(struct audit *a)
{
	const struct conf_service	*s;
	char				 err[256];
	size_t				 i;

	if (!backend_uses_transparent(a->conf) ||
	    backend_transparent_check(err, sizeof(err)) == 0)
		return;
	for (i = 0; i < a->conf->nservices; i++) {
		s = &a->conf->services[i];
		if (s->backend_source == BACKEND_SOURCE_CLIENT)
			audit_report(a, AUDIT_ERROR, s->line, "service \"%s\": "
			    "%s, which this process lacks (see "
			    "\"backend_source\" in doc/deployment.md)",
			    s->name, err);
	}
}

int
audit_conf(const struct conf *conf, audit_cb cb, void *arg)
{
	struct audit	a = { conf, cb, arg, 0, 0 };
	size_t		i;

	for (i = 0; i < conf->ntls; i++)
		audit_tls_section(&a, &conf->tls[i]);
	for (i = 0; i < conf->nservices; i++) {
		audit_service(&a, &conf->services[i]);
		audit_limits(&a, &conf->services[i]);
		audit_proxy_trusted(&a, &conf->services[i]);
		audit_identity(&a, &conf->services[i]);
		audit_timeouts(&a, &conf->services[i]);
		audit_client_mode(&a, &conf->services[i]);
	}
	audit_stats(&a);
	audit_privileges(&a);
	audit_chroot(&a);
	audit_transparent(&a);
	return a.errors;
}
