/*
 * tls.c - server TLS: contexts, profiles, SNI, ALPN, resumption, the
 * Postfix-form log line and the classification of a closed TLS leg.
 *
 * One SSL_CTX per `tls` section and one per `sni` subsection, all built
 * with the same policy when the configuration is loaded.  Building fails
 * closed: an unreadable or malformed file, a key that does not match its
 * certificate, an expired or not yet valid certificate or a cipher string
 * OpenSSL rejects is an error, never a silent downgrade (the opposite of
 * Postfix's opportunistic tls_server_init, even for our opportunistic
 * profile; STYLE.md section 8).
 *
 * Invariants:
 *  - SSLv2/SSLv3 are impossible: the protocol floor is TLS 1.0 whatever the
 *    profile or override says; compression and renegotiation are off.
 *  - The default SSL_CTX owns, through ex_data, its SNI table and each
 *    SSL_CTX a reference to the section's ticket key ring (immutable when
 *    loaded from a file; the automatic one rotates under its own lock).
 *    OpenSSL reference-counts contexts and every SSL holds a reference,
 *    so tls_server_free() during a reload never pulls data from under a
 *    handshake in progress.
 *  - A session is bound (session id context) to the tls section and the
 *    service protocol, so it is never resumed across protocols (ALPACA).
 *
 * RFCs: 8446 (TLS 1.3), 5246 (TLS 1.2), 6066 section 3 (SNI), 7301 (ALPN),
 * 5077/8446 section 4.6.1 (tickets), 7919 (FFDHE), 7435 (opportunistic
 * security: why port 25 still accepts TLS 1.0), 8996 (why nothing else
 * does).
 */
#include "config.h"

#include <sys/stat.h>

#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mailtlsd.h"
#include "log.h"
#include "proxy.h"
#include "dane.h"
#include "tls.h"
#include "util.h"

/*
 * A ticket key: 80 bytes, laid out like nginx's ssl_session_ticket_key
 * so that operators can share one generator: 16 bytes key name, 32 bytes
 * HMAC-SHA256 key, 32 bytes AES-256-CBC key (TLS_TICKET_KEY_LEN and
 * TLS_TICKET_NAME_LEN are in tls.h).
 */
#define TLS_TICKET_HMAC_OFF	16
#define TLS_TICKET_AES_OFF	48

#define TLS_EXPIRY_WARN_DAYS	30	/* SPEC section 7 */
#define TLS_CN_MAX		64	/* X.520 ub-common-name */
#define TLS_WHERE_MAX		256

/* Mozilla Server Side TLS 6.0 ("intermediate"), in Mozilla's order. */
#define TLS_MOZILLA_CIPHERS						\
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"	\
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"	\
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"	\
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"		\
	"DHE-RSA-CHACHA20-POLY1305"
#define TLS_MOZILLA_SUITES						\
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"		\
	"TLS_CHACHA20_POLY1305_SHA256"
/* Not const: SSL_CTX_set1_groups_list() is a macro that casts to char *. */
static char tls_mozilla_groups[] = "X25519:prime256v1:secp384r1";

/*
 * Opportunistic (MTA to MTA, RFC 7435): any encryption beats the
 * cleartext the sender would fall back to, so everything but anonymous
 * (no authentication at all: aNULL), unencrypted (eNULL) and EXPORT
 * suites.  OpenSSL 3 no longer ships EXPORT suites; the exclusion stays
 * so the intent survives a library that does.
 */
#define TLS_OPPORTUNISTIC_CIPHERS	"ALL:!aNULL:!eNULL:!EXPORT"

static const struct tls_profile_def {
	enum tls_profile	 profile;
	int			 min_version;
	/*
	 * OpenSSL security level.  0 for opportunistic: OpenSSL 3 refuses
	 * the MD5+SHA1 and SHA1 handshake signatures of TLS 1.0/1.1 at level
	 * 1 and above, so without level 0 the TLS 1.0 floor would exist only
	 * on paper and old MTAs would fall back to cleartext.  The price
	 * (small peer keys accepted) is what RFC 7435 accepts; our own keys
	 * are checked by the -t audit.  It is set through the API, not as
	 * "@SECLEVEL=0" in the cipher string, so a `ciphers` override does
	 * not silently undo it.  Level 2 elsewhere: RSA/DH >= 2048 bits, no
	 * SHA1 signatures, whatever the system openssl.cnf says.
	 */
	int			 seclevel;
	const char		*ciphers;	/* TLS <= 1.2 */
	const char		*suites;	/* TLS 1.3, NULL = OpenSSL's */
	char			*groups;	/* NULL = OpenSSL's */
} tls_profiles[] = {
	/* modern keeps the intermediate list for a min_protocol override. */
	{ TLS_PROFILE_MODERN, TLS1_3_VERSION, 2, TLS_MOZILLA_CIPHERS,
	    TLS_MOZILLA_SUITES, tls_mozilla_groups },
	{ TLS_PROFILE_INTERMEDIATE, TLS1_2_VERSION, 2, TLS_MOZILLA_CIPHERS,
	    TLS_MOZILLA_SUITES, tls_mozilla_groups },
	{ TLS_PROFILE_OPPORTUNISTIC, TLS1_VERSION, 0,
	    TLS_OPPORTUNISTIC_CIPHERS, NULL, NULL },
};

/* The protocols' ALPN ids: their session id contexts are made once. */
static const char *const tls_sid_alpn[] = { "smtp", "imap", "pop3" };
#define TLS_SID_N	(sizeof(tls_sid_alpn) / sizeof(tls_sid_alpn[0]))

struct tls_server {
	char		*name;
	SSL_CTX		*ctx;		/* default; owns the SNI contexts */
	struct tls_ticket_ring *ring;	/* a reference; NULL: tickets off */
	/* tls_sid_ctx() of name and each tls_sid_alpn[], same index. */
	unsigned char	 sid[TLS_SID_N][SSL_MAX_SID_CTX_LENGTH];
};

struct tls_sni_entry {
	char		*name;		/* "mail.example.org", "*.example.org" */
	SSL_CTX		*ctx;
};

/*
 * Ticket keys, newest first: keys[0] encrypts, every key decrypts.  A
 * ring from a ticket_key_file never changes once loaded, so reading it
 * needs no lock; a reload builds new contexts around a new ring.  The
 * automatic ring (no file) is replaced in place by tls_ticket_ring_get()
 * when its interval is over, by whichever worker thread asks first, so
 * it is only read under its mutex.  Every context of a tls section holds
 * a reference (SNI contexts too: after an SNI switch OpenSSL asks the new
 * context's callback), and a reload hands the automatic ring to the
 * section of the same name, so neither a reload nor a rotation costs a
 * client its resumption.
 */
struct tls_ticket_ring {
	atomic_int		 refs;
	bool			 automatic;
	pthread_mutex_t		 lock;		/* automatic ring only */
	time_t			 made;		/* automatic: keys[0]'s birth */
	size_t			 nkeys;
	unsigned char		 keys[TICKET_KEYS_MAX][TLS_TICKET_KEY_LEN];
};

/* Hung on every SSL_CTX we build (ex_data), freed with the context. */
struct tls_ctx_data {
	struct tls_ticket_ring	*ring;		/* NULL: tickets off */
	struct tls_sni_entry	*sni;		/* default context only */
	size_t			 nsni;
};

/* What tls_server_new() loads once and applies to every context. */
struct tls_build {
	const struct conf_tls	*conf;
	EVP_PKEY		*dh;		/* NULL = automatic */
	struct tls_ticket_ring	*ring;		/* NULL: tickets off */
	const struct tls_server	*prev;		/* same section, before reload */
	unsigned char		 sid_ctx[SSL_MAX_SID_CTX_LENGTH];
	char			*err;
	size_t			 errlen;
};

/* A certificate file (leaf, then chain) and its key, parsed. */
struct tls_pair {
	X509			*leaf;
	STACK_OF(X509)		*chain;
	EVP_PKEY		*key;
};

/*
 * Client side (SPEC 12): one context per service with backend_tls, and a
 * session cache of one slot per backend (the last resumable session it
 * gave us), shared by the worker threads under a mutex.
 */
struct tls_client {
	SSL_CTX			*ctx;
	char			*where;		/* "service NAME" */
	bool			 verify;
	pthread_mutex_t		 lock;
	SSL_SESSION		**cache;	/* one per backend */
	size_t			 ncache;
	struct dane_cache	*dane;		/* backend_dane, or NULL */
};

static CRYPTO_ONCE	tls_once = CRYPTO_ONCE_STATIC_INIT;
static EVP_CIPHER	*tls_ticket_cipher;	/* AES-256-CBC, or NULL */
static int		tls_ctx_idx = -1;	/* SSL_CTX: tls_ctx_data */
static int		tls_alpn_idx = -1;	/* SSL: char *, protocol id */
static int		tls_client_idx = -1;	/* SSL_CTX: tls_client */
static int		tls_slot_idx = -1;	/* SSL: backend index + 1 */
static int		tls_dane_idx = -1;	/* SSL: const char *, DANE */

static int	tls_init(void);
static int	tls_client_new_session(SSL *, SSL_SESSION *);
static int	tls_client_dane(struct tls_client *, SSL *, size_t,
		    const char *);
static int	tls_client_cas(SSL_CTX *, const struct conf_service *,
		    const char *, char *, size_t);
static bool	tls_is_ip(const char *);
static void	tls_init_once(void);
static void	tls_ctx_data_free(void *, void *, CRYPTO_EX_DATA *, int, long,
		    void *);
static void	tls_alpn_free(void *, void *, CRYPTO_EX_DATA *, int, long,
		    void *);
static void	tls_err(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static const char *tls_ossl_reason(void);
static int	tls_open(const char *, const char *, const char *, BIO **,
		    char *, size_t);
static int	tls_no_password(char *, int, int, void *);
static int	tls_read_certs(const char *, const char *, struct tls_pair *,
		    char *, size_t);
static int	tls_read_key(const char *, const char *, struct tls_pair *,
		    char *, size_t);
static int	tls_check_validity(const char *, const char *, X509 *, char *,
		    size_t);
static void	tls_time_text(const ASN1_TIME *, char *, size_t);
static int	tls_pair_load(const char *, const struct conf_keypair *,
		    struct tls_pair *, char *, size_t);
static void	tls_pair_clear(struct tls_pair *);
static int	tls_build_prepare(struct tls_build *, const char *);
static int	tls_load_dh(struct tls_build *, const char *);
static int	tls_load_tickets(struct tls_build *, const char *);
static struct tls_ticket_ring *tls_ticket_ring_alloc(bool);
static struct tls_ticket_ring *tls_ticket_ring_ref(struct tls_ticket_ring *);
static int	tls_ticket_line(const char *, size_t, unsigned char *);
static int	tls_b64_value(int);
static int	tls_ticket_rotate(struct tls_ticket_ring *, time_t);
static time_t	tls_ticket_clock(void);
static void	tls_build_clear(struct tls_build *);
static SSL_CTX	*tls_ctx_new(struct tls_build *, const char *,
		    const struct conf_keypair *, size_t);
static int	tls_ctx_policy(struct tls_build *, SSL_CTX *, const char *);
static int	tls_ctx_protocols(struct tls_build *, SSL_CTX *, const char *,
		    const struct tls_profile_def *);
static int	tls_ctx_ciphers(struct tls_build *, SSL_CTX *, const char *,
		    const struct tls_profile_def *);
static int	tls_ctx_dh(struct tls_build *, SSL_CTX *, const char *);
static int	tls_ctx_pairs(struct tls_build *, SSL_CTX *, const char *,
		    const struct conf_keypair *, size_t);
static int	tls_ctx_add_pair(struct tls_build *, SSL_CTX *, const char *,
		    const struct conf_keypair *, struct tls_pair *);
static int	tls_ctx_clients(struct tls_build *, SSL_CTX *, const char *);
static int	tls_ctx_sessions(struct tls_build *, SSL_CTX *,
		    struct tls_ctx_data *);
static int	tls_sni_build(struct tls_build *, SSL_CTX *, const char *);
static bool	tls_sni_match(const char *, const char *, bool);
static SSL_CTX	*tls_sni_lookup(const struct tls_ctx_data *, const char *);
static int	tls_servername_cb(SSL *, int *, void *);
static int	tls_alpn_cb(SSL *, const unsigned char **, unsigned char *,
		    const unsigned char *, unsigned int, void *);
static int	tls_ticket_cb(SSL *, unsigned char *, unsigned char *,
		    EVP_CIPHER_CTX *, EVP_MAC_CTX *, int);
static int	tls_verify_any(int, X509_STORE_CTX *);
static int	tls_sid_ctx(const char *, const char *, unsigned char *);
static const char *tls_trust_name(SSL *);
static void	tls_name_cn(const X509_NAME *, char *, size_t);
static int	tls_check_pairs(const char *, const struct conf_keypair *,
		    size_t, tls_finding_cb, void *);
static void	tls_check_warnings(const char *, const char *, X509 *,
		    tls_finding_cb, void *);
static bool	tls_handshake_done(SSL *);
static int	tls_classify_errors(struct bufferevent *, SSL *, int,
		    char *, size_t);

/* ------------------------------------------------------------------ */
/* Process-wide ex_data indices. */

static void
tls_init_once(void)
{
	tls_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
	    tls_ctx_data_free);
	tls_alpn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
	    tls_alpn_free);
	tls_client_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_slot_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_dane_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	/*
	 * Fetched once: EVP_aes_256_cbc() would be looked up by name (a
	 * lock and string compares) in every ticket callback.
	 */
	tls_ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

static int
tls_init(void)
{
	if (!CRYPTO_THREAD_run_once(&tls_once, tls_init_once))
		return -1;
	return tls_ctx_idx < 0 || tls_alpn_idx < 0 || tls_client_idx < 0 ||
	    tls_slot_idx < 0 || tls_dane_idx < 0 ? -1 : 0;
}

/* Called by OpenSSL for every SSL_CTX freed, ours or not (ptr NULL). */
static void
tls_ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	struct tls_ctx_data	*d = ptr;
	size_t			 i;

	if (d == NULL)
		return;
	for (i = 0; i < d->nsni; i++) {
		SSL_CTX_free(d->sni[i].ctx);
		free(d->sni[i].name);
	}
	free(d->sni);
	tls_ticket_ring_free(d->ring);
	free(d);
}

static void
tls_alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	free(ptr);
}

/* ------------------------------------------------------------------ */
/* Error messages. */

static void
tls_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * The root cause OpenSSL queued (the first error; later ones are the
 * callers' context), and an empty queue afterwards.  The reason strings
 * are static, so this is thread-safe.
 */
static const char *
tls_ossl_reason(void)
{
	unsigned long	 e = ERR_peek_error();
	const char	*r = e != 0 ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r != NULL ? r : "unknown OpenSSL error";
}

/* ------------------------------------------------------------------ */
/* Certificates and keys. */

static int
tls_open(const char *where, const char *what, const char *path, BIO **bio,
    char *err, size_t errlen)
{
	FILE	*fp;

	if ((fp = fopen(path, "r")) == NULL) {
		tls_err(err, errlen, "%s: %s %s: cannot open: %s", where, what,
		    path, strerror(errno));
		return -1;
	}
	if ((*bio = BIO_new_fp(fp, BIO_CLOSE)) == NULL) {
		fclose(fp);
		tls_err(err, errlen, "%s: %s %s: %s", where, what, path,
		    tls_ossl_reason());
		return -1;
	}
	return 0;
}

/*
 * A daemon must never stop at a passphrase prompt (OpenSSL's default is
 * to ask on the terminal): encrypted keys are refused.
 */
static int
tls_no_password(char *buf, int size, int rwflag, void *arg)
{
	*(int *)arg = 1;
	return -1;
}

/*
 * SSL_CTX_use_certificate_chain_file() semantics (leaf first, then its
 * chain), parsed here so that the error names the file and the reason.
 */
static int
tls_read_certs(const char *where, const char *path, struct tls_pair *p,
    char *err, size_t errlen)
{
	BIO		*bio;
	X509		*x;
	unsigned long	 e;

	if (tls_open(where, "certificate", path, &bio, err, errlen) == -1)
		return -1;
	if ((p->leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		tls_err(err, errlen, "%s: certificate %s: no PEM certificate "
		    "(%s)", where, path, tls_ossl_reason());
		BIO_free(bio);
		return -1;
	}
	if ((p->chain = sk_X509_new_null()) == NULL)
		goto fail;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(p->chain, x)) {
			X509_free(x);
			goto fail;
		}
	/* The loop ends at the end of the file, or at a damaged block. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM ||
	    ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
		goto fail;
	ERR_clear_error();
	BIO_free(bio);
	return 0;
fail:
	tls_err(err, errlen, "%s: certificate %s: bad chain certificate (%s)",
	    where, path, tls_ossl_reason());
	BIO_free(bio);
	return -1;
}

static int
tls_read_key(const char *where, const char *path, struct tls_pair *p,
    char *err, size_t errlen)
{
	BIO	*bio;
	int	 asked = 0;

	if (tls_open(where, "key", path, &bio, err, errlen) == -1)
		return -1;
	p->key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_password, &asked);
	BIO_free(bio);
	if (p->key != NULL)
		return 0;
	if (asked) {
		ERR_clear_error();
		tls_err(err, errlen, "%s: key %s: encrypted keys are not "
		    "supported (a daemon cannot ask for a passphrase)", where,
		    path);
	} else
		tls_err(err, errlen, "%s: key %s: no PEM private key (%s)",
		    where, path, tls_ossl_reason());
	return -1;
}

static void
tls_time_text(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm	tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S GMT", &tm) == 0)
		util_strlcpy(buf, "(unreadable date)", len);
}

/*
 * Only the leaf is checked: clients build their own paths and a chain may
 * legitimately carry an expired cross-signature (the Let's Encrypt DST
 * Root X3 case), which the audit reports instead.
 */
static int
tls_check_validity(const char *where, const char *path, X509 *x,
    char *err, size_t errlen)
{
	const ASN1_TIME	*nb = X509_get0_notBefore(x);
	const ASN1_TIME	*na = X509_get0_notAfter(x);
	char		 when[64];
	int		 days, secs;

	if (!ASN1_TIME_diff(&days, &secs, NULL, nb) ||
	    (days > 0 || secs > 0)) {
		tls_time_text(nb, when, sizeof(when));
		tls_err(err, errlen, "%s: certificate %s: not valid before %s",
		    where, path, when);
		return -1;
	}
	if (!ASN1_TIME_diff(&days, &secs, NULL, na) ||
	    (days < 0 || secs < 0)) {
		tls_time_text(na, when, sizeof(when));
		tls_err(err, errlen, "%s: certificate %s: expired on %s",
		    where, path, when);
		return -1;
	}
	return 0;
}

static int
tls_pair_load(const char *where, const struct conf_keypair *kp,
    struct tls_pair *p, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	if (tls_read_certs(where, kp->certificate, p, err, errlen) == -1 ||
	    tls_read_key(where, kp->key, p, err, errlen) == -1)
		goto fail;
	if (X509_check_private_key(p->leaf, p->key) != 1) {
		ERR_clear_error();
		tls_err(err, errlen, "%s: key %s does not match certificate %s",
		    where, kp->key, kp->certificate);
		goto fail;
	}
	if (tls_check_validity(where, kp->certificate, p->leaf, err,
	    errlen) == -1)
		goto fail;
	return 0;
fail:
	tls_pair_clear(p);
	return -1;
}

static void
tls_pair_clear(struct tls_pair *p)
{
	X509_free(p->leaf);
	sk_X509_pop_free(p->chain, X509_free);
	EVP_PKEY_free(p->key);
	memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------------ */
/* Things loaded once per section. */

static int
tls_build_prepare(struct tls_build *b, const char *where)
{
	const struct conf_tls	*c = b->conf;
	unsigned		 i;

	if (c->npairs == 0) {
		tls_err(b->err, b->errlen, "%s: no certificate", where);
		return -1;
	}
	if (tls_sid_ctx(c->name, NULL, b->sid_ctx) == -1) {
		tls_err(b->err, b->errlen, "%s: %s", where, tls_ossl_reason());
		return -1;
	}
	if (c->dh_params != NULL && tls_load_dh(b, where) == -1)
		return -1;
	if (c->session_tickets && tls_load_tickets(b, where) == -1)
		return -1;
	for (i = 0; i < sizeof(tls_profiles) / sizeof(tls_profiles[0]); i++)
		if (tls_profiles[i].profile == c->profile)
			return 0;
	tls_err(b->err, b->errlen, "%s: unknown profile %d", where,
	    (int)c->profile);
	return -1;
}

/* PEM "DH PARAMETERS" (PKCS#3), as written by `openssl dhparam`. */
static int
tls_load_dh(struct tls_build *b, const char *where)
{
	const char	*path = b->conf->dh_params;
	BIO		*bio;

	if (tls_open(where, "dh_params", path, &bio, b->err, b->errlen) == -1)
		return -1;
	b->dh = PEM_read_bio_Parameters(bio, NULL);
	BIO_free(bio);
	if (b->dh == NULL) {
		tls_err(b->err, b->errlen, "%s: dh_params %s: no PEM DH "
		    "parameters (%s)", where, path, tls_ossl_reason());
		return -1;
	}
	if (!EVP_PKEY_is_a(b->dh, "DH")) {
		tls_err(b->err, b->errlen, "%s: dh_params %s: not DH "
		    "parameters", where, path);
		return -1;
	}
	return 0;
}

/*
 * The ticket keys of the section: the file's, or (no file) the automatic
 * ring, handed over from the section of the same name before a reload.
 * A key file others may read gets a warning, not a refusal: private keys
 * are not refused for their mode either, and a file that must stay
 * readable by the unprivileged user for SIGHUP is group-readable anyway.
 */
static int
tls_load_tickets(struct tls_build *b, const char *where)
{
	const char	*path = b->conf->ticket_key_file;
	struct stat	 st;
	char		 msg[256];

	if (path == NULL) {
		if (b->prev != NULL && b->prev->ring != NULL &&
		    b->prev->ring->automatic)
			b->ring = tls_ticket_ring_ref(b->prev->ring);
		else
			b->ring = tls_ticket_ring_auto(tls_ticket_clock());
		if (b->ring == NULL) {
			tls_err(b->err, b->errlen, "%s: cannot make session "
			    "ticket keys: %s", where, tls_ossl_reason());
			return -1;
		}
		return 0;
	}
	if ((b->ring = tls_ticket_ring_load(path, msg, sizeof(msg))) == NULL) {
		tls_err(b->err, b->errlen, "%s: ticket_key_file %s", where,
		    msg);
		return -1;
	}
	if (stat(path, &st) == 0 && (st.st_mode & S_IROTH) != 0)
		log_warnx("%s: ticket_key_file %s is readable by every user: "
		    "anyone who reads it can decrypt recorded sessions "
		    "(chmod o-r)", where, path);
	return 0;
}

static void
tls_build_clear(struct tls_build *b)
{
	EVP_PKEY_free(b->dh);
	b->dh = NULL;
	tls_ticket_ring_free(b->ring);
	b->ring = NULL;
}

/* ------------------------------------------------------------------ */
/* Session ticket keys. */

static struct tls_ticket_ring *
tls_ticket_ring_alloc(bool automatic)
{
	struct tls_ticket_ring	*r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	atomic_init(&r->refs, 1);
	r->automatic = automatic;
	if (automatic && pthread_mutex_init(&r->lock, NULL) != 0) {
		free(r);
		return NULL;
	}
	return r;
}

static struct tls_ticket_ring *
tls_ticket_ring_ref(struct tls_ticket_ring *r)
{
	atomic_fetch_add(&r->refs, 1);
	return r;
}

/* Called from any thread: the last SSL of an old context may be a worker's. */
void
tls_ticket_ring_free(struct tls_ticket_ring *r)
{
	if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->automatic)
		pthread_mutex_destroy(&r->lock);
	OPENSSL_cleanse(r->keys, sizeof(r->keys));
	free(r);
}

size_t
tls_ticket_ring_count(struct tls_ticket_ring *r)
{
	size_t	n;

	if (!r->automatic)
		return r->nkeys;
	pthread_mutex_lock(&r->lock);
	n = r->nkeys;
	pthread_mutex_unlock(&r->lock);
	return n;
}

struct tls_ticket_ring *
tls_ticket_ring_auto(time_t now)
{
	struct tls_ticket_ring	*r;

	if ((r = tls_ticket_ring_alloc(true)) == NULL)
		return NULL;
	if (RAND_bytes(r->keys[0], TLS_TICKET_KEY_LEN) != 1) {
		tls_ticket_ring_free(r);
		return NULL;
	}
	r->nkeys = 1;
	r->made = now;
	return r;
}

/* The rotation clock: seconds that never jump back with the wall clock. */
static time_t
tls_ticket_clock(void)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return time(NULL);
	return ts.tv_sec;
}

/*
 * Lazily, on the first ticket operation after the interval: no timer
 * needs to run in any event loop, and a ring nobody asks for costs
 * nothing.  After one interval the current key becomes the previous one
 * (tickets under it still open, and are renewed); after two, both are
 * stale (a daemon idle for a day) and only a fresh key remains, so no
 * ticket ever opens more than two intervals after it was issued.
 * Called with the lock held.
 */
static int
tls_ticket_rotate(struct tls_ticket_ring *r, time_t now)
{
	unsigned char	fresh[TLS_TICKET_KEY_LEN];
	time_t		age = now - r->made;

	if (age < TICKET_ROTATE_INTERVAL && age >= 0)
		return 0;
	if (RAND_bytes(fresh, sizeof(fresh)) != 1)
		return -1;
	/* A clock going back (age < 0) is treated as stale too. */
	if (age >= 2 * (time_t)TICKET_ROTATE_INTERVAL || age < 0)
		r->nkeys = 0;
	else {
		memcpy(r->keys[1], r->keys[0], TLS_TICKET_KEY_LEN);
		r->nkeys = 2;
	}
	memcpy(r->keys[0], fresh, TLS_TICKET_KEY_LEN);
	OPENSSL_cleanse(fresh, sizeof(fresh));
	if (r->nkeys == 0) {
		OPENSSL_cleanse(r->keys[1], TLS_TICKET_KEY_LEN);
		r->nkeys = 1;
	}
	r->made = now;
	return 0;
}

int
tls_ticket_ring_get(struct tls_ticket_ring *r, const unsigned char *name,
    time_t now, unsigned char *key)
{
	size_t	i;
	int	rc = -1;

	if (r->automatic) {
		pthread_mutex_lock(&r->lock);
		if (tls_ticket_rotate(r, now) == -1) {
			pthread_mutex_unlock(&r->lock);
			return -2;
		}
	}
	if (name == NULL)
		i = 0;
	else
		for (i = 0; i < r->nkeys; i++)
			if (CRYPTO_memcmp(name, r->keys[i],
			    TLS_TICKET_NAME_LEN) == 0)
				break;
	if (i < r->nkeys) {
		memcpy(key, r->keys[i], TLS_TICKET_KEY_LEN);
		rc = (int)i;
	}
	if (r->automatic)
		pthread_mutex_unlock(&r->lock);
	return rc;
}

static int
tls_b64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * One base64 line (RFC 4648 section 4, padded, no line breaks inside)
 * that must decode to exactly one key: 108 characters, the last one
 * '='.  Strict on purpose: instances that share a file must all read the
 * same keys, so nothing is skipped or guessed.
 */
static int
tls_ticket_line(const char *p, size_t len, unsigned char *key)
{
	unsigned char	out[TLS_TICKET_KEY_LEN + 2];
	unsigned	acc = 0;
	size_t		i, n = 0, pad = 0;
	int		v, rc = -1;

	if (len != 4 * ((TLS_TICKET_KEY_LEN + 2) / 3))
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] == '=' && i >= len - 2) {
			pad++;
			v = 0;
		} else if (pad > 0 || (v = tls_b64_value(
		    (unsigned char)p[i])) == -1)
			goto done;
		acc = acc << 6 | (unsigned)v;
		if (i % 4 == 3) {
			out[n++] = acc >> 16 & 0xff;
			out[n++] = acc >> 8 & 0xff;
			out[n++] = acc & 0xff;
			acc = 0;
		}
	}
	/* 80 = 26 * 3 + 2: exactly one '=', and its bits must be zero. */
	if (pad != 1 || n - pad != TLS_TICKET_KEY_LEN || out[n - 1] != 0)
		goto done;
	memcpy(key, out, TLS_TICKET_KEY_LEN);
	rc = 0;
done:
	/* Half a key is still key material. */
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(&acc, sizeof(acc));
	return rc;
}

/*
 * A file of exactly 80 bytes is one raw key (nginx's format, and ours
 * before several keys).  Anything else is text: one base64 key per line,
 * newest first; blank lines and lines starting with '#' are skipped,
 * spaces and tabs around a key and a CR before the LF are ignored.  At
 * most TICKET_KEYS_MAX keys, no two with the same name (the name picks
 * the key that opens a ticket), at least one.
 */
struct tls_ticket_ring *
tls_ticket_ring_parse(const unsigned char *buf, size_t len, char *err,
    size_t errlen)
{
	struct tls_ticket_ring	*r;
	const char		*p = (const char *)buf, *end = p + len;
	const char		*eol, *a, *z;
	size_t			 line = 0, i;

	if ((r = tls_ticket_ring_alloc(false)) == NULL) {
		tls_err(err, errlen, "out of memory");
		return NULL;
	}
	if (len == TLS_TICKET_KEY_LEN) {
		memcpy(r->keys[0], buf, TLS_TICKET_KEY_LEN);
		r->nkeys = 1;
		return r;
	}
	while (p < end) {
		line++;
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		a = p;
		z = eol;
		p = eol < end ? eol + 1 : end;
		while (a < z && (*a == ' ' || *a == '\t'))
			a++;
		while (z > a && (z[-1] == ' ' || z[-1] == '\t' ||
		    z[-1] == '\r'))
			z--;
		if (a == z || *a == '#')
			continue;
		if (r->nkeys == TICKET_KEYS_MAX) {
			tls_err(err, errlen, "line %zu: more than %d keys", line,
			    TICKET_KEYS_MAX);
			goto fail;
		}
		if (tls_ticket_line(a, (size_t)(z - a),
		    r->keys[r->nkeys]) == -1) {
			/* `openssl rand -base64 80` wraps at 64. */
			tls_err(err, errlen, "line %zu: not a base64 key of "
			    "exactly %d bytes (%s)", line, TLS_TICKET_KEY_LEN,
			    z - a == 64 ? "one key per line: the key is "
			    "wrapped, make it with openssl base64 -A" :
			    "a raw key file must be exactly 80 bytes");
			goto fail;
		}
		for (i = 0; i < r->nkeys; i++)
			if (memcmp(r->keys[i], r->keys[r->nkeys],
			    TLS_TICKET_NAME_LEN) == 0) {
				tls_err(err, errlen, "line %zu: key name (first "
				    "%d bytes) repeats key %zu", line,
				    TLS_TICKET_NAME_LEN, i + 1);
				goto fail;
			}
		r->nkeys++;
	}
	if (r->nkeys == 0) {
		tls_err(err, errlen, "no key (%s)", len == 0 ? "empty file" :
		    "only blank lines and comments");
		goto fail;
	}
	return r;
fail:
	tls_ticket_ring_free(r);
	return NULL;
}

/* err gets "PATH: why" (with "line N" where a line is at fault). */
struct tls_ticket_ring *
tls_ticket_ring_load(const char *path, char *err, size_t errlen)
{
	struct tls_ticket_ring	*r;
	unsigned char		*buf;
	char			 msg[192];
	FILE			*fp;
	size_t			 n;

	if ((buf = malloc(TICKET_FILE_MAX + 1)) == NULL) {
		tls_err(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	if ((fp = fopen(path, "r")) == NULL) {
		tls_err(err, errlen, "%s: cannot open: %s", path,
		    strerror(errno));
		free(buf);
		return NULL;
	}
	n = fread(buf, 1, TICKET_FILE_MAX + 1, fp);
	if (ferror(fp)) {
		tls_err(err, errlen, "%s: %s", path, strerror(errno));
		r = NULL;
	} else if (n > TICKET_FILE_MAX) {
		tls_err(err, errlen, "%s: longer than %d bytes", path,
		    TICKET_FILE_MAX);
		r = NULL;
	} else if ((r = tls_ticket_ring_parse(buf, n, msg,
	    sizeof(msg))) == NULL)
		tls_err(err, errlen, "%s: %s", path, msg);
	fclose(fp);
	OPENSSL_cleanse(buf, TICKET_FILE_MAX + 1);
	free(buf);
	return r;
}

/* ------------------------------------------------------------------ */
/* One SSL_CTX. */

static SSL_CTX *
tls_ctx_new(struct tls_build *b, const char *where,
    const struct conf_keypair *pairs, size_t npairs)
{
	SSL_CTX			*ctx;
	struct tls_ctx_data	*d;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_err(b->err, b->errlen, "%s: %s", where, tls_ossl_reason());
		return NULL;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL ||
	    !SSL_CTX_set_ex_data(ctx, tls_ctx_idx, d)) {
		free(d);
		SSL_CTX_free(ctx);
		tls_err(b->err, b->errlen, "%s: out of memory", where);
		return NULL;
	}
	/* Policy first: the security level decides which keys are usable. */
	if (tls_ctx_policy(b, ctx, where) == -1 ||
	    tls_ctx_pairs(b, ctx, where, pairs, npairs) == -1 ||
	    tls_ctx_clients(b, ctx, where) == -1 ||
	    tls_ctx_sessions(b, ctx, d) == -1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* On every context: after an SNI switch OpenSSL asks the new one. */
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
	return ctx;
}

static int
tls_ctx_policy(struct tls_build *b, SSL_CTX *ctx, const char *where)
{
	const struct tls_profile_def	*pd = NULL;
	size_t				 i;

	for (i = 0; i < sizeof(tls_profiles) / sizeof(tls_profiles[0]); i++)
		if (tls_profiles[i].profile == b->conf->profile)
			pd = &tls_profiles[i];
	if (pd == NULL)
		return -1;	/* tls_build_prepare() said why */
	/*
	 * No compression (CRIME), no renegotiation at all (client-initiated
	 * renegotiation is a DoS lever and nothing here needs the server
	 * kind), our cipher order (the lists are ordered by strength), and
	 * ChaCha20 first for clients that put it first (no AES hardware).
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_PRIORITIZE_CHACHA);
	/* Idle sessions (IMAP IDLE) need not keep 34 kB of buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_security_level(ctx, pd->seclevel);
	if (tls_ctx_protocols(b, ctx, where, pd) == -1 ||
	    tls_ctx_ciphers(b, ctx, where, pd) == -1 ||
	    tls_ctx_dh(b, ctx, where) == -1)
		return -1;
	return 0;
}

static int
tls_ctx_protocols(struct tls_build *b, SSL_CTX *ctx, const char *where,
    const struct tls_profile_def *pd)
{
	int	min = b->conf->min_protocol != 0 ?
		    b->conf->min_protocol : pd->min_version;

	/* The floor: SSLv2 and SSLv3 are never possible (SPEC section 4). */
	if (min < TLS1_VERSION || min > TLS1_3_VERSION) {
		tls_err(b->err, b->errlen, "%s: min_protocol: 0x%x is not "
		    "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3 (SSLv2/SSLv3 are never "
		    "allowed)", where, (unsigned)min);
		return -1;
	}
	/* Both explicit, so a system openssl.cnf cannot move them. */
	if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, 0) != 1) {
		tls_err(b->err, b->errlen, "%s: min_protocol: %s", where,
		    tls_ossl_reason());
		return -1;
	}
	return 0;
}

static int
tls_ctx_ciphers(struct tls_build *b, SSL_CTX *ctx, const char *where,
    const struct tls_profile_def *pd)
{
	const struct conf_tls	*c = b->conf;
	const char		*ciphers = c->ciphers ? c->ciphers : pd->ciphers;
	const char		*suites = c->ciphersuites ? c->ciphersuites :
				    pd->suites;
	char			*groups = c->groups ? c->groups : pd->groups;

	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		tls_err(b->err, b->errlen, "%s: ciphers \"%s\": %s", where,
		    ciphers, tls_ossl_reason());
		return -1;
	}
	if (suites != NULL && SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
		tls_err(b->err, b->errlen, "%s: ciphersuites \"%s\": %s",
		    where, suites, tls_ossl_reason());
		return -1;
	}
	if (groups != NULL && SSL_CTX_set1_groups_list(ctx, groups) != 1) {
		tls_err(b->err, b->errlen, "%s: groups \"%s\": %s", where,
		    groups, tls_ossl_reason());
		return -1;
	}
	return 0;
}

static int
tls_ctx_dh(struct tls_build *b, SSL_CTX *ctx, const char *where)
{
	if (b->dh == NULL) {
		/* RFC 7919 groups sized to the certificate's strength. */
		if (SSL_CTX_set_dh_auto(ctx, 1) != 1) {
			tls_err(b->err, b->errlen, "%s: %s", where,
			    tls_ossl_reason());
			return -1;
		}
		return 0;
	}
	/* set0 takes a reference; every context gets its own. */
	if (!EVP_PKEY_up_ref(b->dh)) {
		tls_err(b->err, b->errlen, "%s: dh_params %s: %s", where,
		    b->conf->dh_params, tls_ossl_reason());
		return -1;
	}
	if (SSL_CTX_set0_tmp_dh_pkey(ctx, b->dh) != 1) {
		EVP_PKEY_free(b->dh);
		tls_err(b->err, b->errlen, "%s: dh_params %s: %s", where,
		    b->conf->dh_params, tls_ossl_reason());
		return -1;
	}
	return 0;
}

/*
 * Several pairs, one per key type: OpenSSL keeps one certificate slot per
 * key type in a context and picks the slot from the client's signature
 * algorithms, so ECDSA clients get the ECDSA leaf and the rest RSA.  Two
 * pairs of one type would silently replace each other: refused.
 */
static int
tls_ctx_pairs(struct tls_build *b, SSL_CTX *ctx, const char *where,
    const struct conf_keypair *pairs, size_t npairs)
{
	struct tls_pair	 p;
	int		 types[8];
	size_t		 i, j;

	if (npairs == 0 || npairs > sizeof(types) / sizeof(types[0])) {
		tls_err(b->err, b->errlen, "%s: %zu certificates (1 to %zu)",
		    where, npairs, sizeof(types) / sizeof(types[0]));
		return -1;
	}
	for (i = 0; i < npairs; i++) {
		if (tls_pair_load(where, &pairs[i], &p, b->err,
		    b->errlen) == -1)
			return -1;
		types[i] = EVP_PKEY_get_base_id(p.key);
		for (j = 0; j < i; j++)
			if (types[j] == types[i]) {
				tls_err(b->err, b->errlen, "%s: certificates "
				    "%s and %s have the same key type; give one "
				    "per type", where, pairs[j].certificate,
				    pairs[i].certificate);
				tls_pair_clear(&p);
				return -1;
			}
		if (tls_ctx_add_pair(b, ctx, where, &pairs[i], &p) == -1)
			return -1;
	}
	return 0;
}

/* Consumes p. */
static int
tls_ctx_add_pair(struct tls_build *b, SSL_CTX *ctx, const char *where,
    const struct conf_keypair *kp, struct tls_pair *p)
{
	int	rc = -1;

	/* use_certificate selects the slot; set1_chain fills that slot. */
	if (SSL_CTX_use_certificate(ctx, p->leaf) != 1 ||
	    SSL_CTX_set1_chain(ctx, p->chain) != 1)
		tls_err(b->err, b->errlen, "%s: certificate %s: %s", where,
		    kp->certificate, tls_ossl_reason());
	else if (SSL_CTX_use_PrivateKey(ctx, p->key) != 1)
		tls_err(b->err, b->errlen, "%s: key %s: %s", where, kp->key,
		    tls_ossl_reason());
	else if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		tls_err(b->err, b->errlen, "%s: key %s does not match "
		    "certificate %s", where, kp->key, kp->certificate);
	} else
		rc = 0;
	tls_pair_clear(p);
	return rc;
}

static int
tls_verify_any(int ok, X509_STORE_CTX *xs)
{
	/*
	 * "request": let the handshake go on whatever the chain; the
	 * verification result stays in SSL_get_verify_result() and is
	 * logged (Untrusted) and passed on, never acted upon here.
	 */
	return 1;
}

static int
tls_ctx_clients(struct tls_build *b, SSL_CTX *ctx, const char *where)
{
	const struct conf_tls	*c = b->conf;
	STACK_OF(X509_NAME)	*names;

	if (c->client_certificates == CLIENT_CERT_NONE) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return 0;
	}
	if (c->client_certificates == CLIENT_CERT_REQUIRE &&
	    c->ca_file == NULL && c->ca_path == NULL) {
		tls_err(b->err, b->errlen, "%s: client_certificates = require "
		    "needs ca_file or ca_path", where);
		return -1;
	}
	if (c->ca_file != NULL) {
		if (SSL_CTX_load_verify_file(ctx, c->ca_file) != 1 ||
		    (names = SSL_load_client_CA_file(c->ca_file)) == NULL) {
			tls_err(b->err, b->errlen, "%s: ca_file %s: %s", where,
			    c->ca_file, access(c->ca_file, R_OK) == -1 ?
			    strerror(errno) : tls_ossl_reason());
			ERR_clear_error();
			return -1;
		}
		/* The names the client may choose a certificate by. */
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	if (c->ca_path != NULL && access(c->ca_path, R_OK | X_OK) == -1) {
		tls_err(b->err, b->errlen, "%s: ca_path %s: %s", where,
		    c->ca_path, strerror(errno));
		return -1;
	}
	if (c->ca_path != NULL && SSL_CTX_load_verify_dir(ctx,
	    c->ca_path) != 1) {
		tls_err(b->err, b->errlen, "%s: ca_path %s: %s", where,
		    c->ca_path, tls_ossl_reason());
		return -1;
	}
	if (c->client_certificates == CLIENT_CERT_REQUIRE)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
		    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_any);
	return 0;
}

static int
tls_ctx_sessions(struct tls_build *b, SSL_CTX *ctx, struct tls_ctx_data *d)
{
	/* Each SSL gets a finer context (tls_server_ssl); this is a floor. */
	if (SSL_CTX_set_session_id_context(ctx, b->sid_ctx,
	    sizeof(b->sid_ctx)) != 1) {
		tls_err(b->err, b->errlen, "tls \"%s\": session id context: %s",
		    b->conf->name, tls_ossl_reason());
		return -1;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (!b->conf->session_tickets) {
		/* TLS 1.3 then issues stateful tickets from the cache. */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		return 0;
	}
	/* Never OpenSSL's own keys: those neither rotate nor survive a reload. */
	d->ring = tls_ticket_ring_ref(b->ring);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
	return 0;
}

/*
 * Session tickets under the section's keys (RFC 5077 section 4 layout, as
 * nginx): enc = 1 issues a ticket under the newest key, enc = 0 opens one
 * under the key its name picks.  A ticket under an older key is good but
 * renewed (2: the client gets a ticket under the newest key, so it
 * survives the old key's removal); a ticket under no key we hold is not
 * an error: the client gets a full handshake.  The key is copied out of
 * the ring, so an automatic rotation by another thread cannot change it
 * under us.
 */
static int
tls_ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	static char			 digest[] = "SHA256";
	const EVP_CIPHER		*cipher = tls_ticket_cipher;
	const struct tls_ctx_data	*d;
	unsigned char			 k[TLS_TICKET_KEY_LEN];
	OSSL_PARAM			 params[2];
	int				 pos, rc = -1;

	d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ctx_idx);
	if (d == NULL || d->ring == NULL)
		return -1;
	pos = tls_ticket_ring_get(d->ring, enc ? NULL : name,
	    tls_ticket_clock(), k);
	if (pos == -1 && !enc)
		return 0;
	if (pos < 0)
		return -1;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (cipher == NULL)
		cipher = EVP_aes_256_cbc();
	if (enc) {
		memcpy(name, k, TLS_TICKET_NAME_LEN);
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1 ||
		    EVP_EncryptInit_ex2(cctx, cipher, k + TLS_TICKET_AES_OFF,
		    iv, NULL) != 1)
			goto done;
	} else if (EVP_DecryptInit_ex2(cctx, cipher, k + TLS_TICKET_AES_OFF,
	    iv, NULL) != 1)
		goto done;
	if (EVP_MAC_init(hctx, k + TLS_TICKET_HMAC_OFF, 32, params) != 1)
		goto done;
	/*
	 * 2 asks OpenSSL for a fresh ticket under the first key.  TLS 1.2
	 * needs one only for a ticket under an older key; TLS 1.3 always
	 * gets one, as with OpenSSL's own keys: returning 1 there would
	 * make OpenSSL send no ticket after a resumption, so a client would
	 * reuse one ticket until it is lost (the peer benchmark's
	 * resumption rate fell from 84% to 54%).
	 */
	rc = pos == 0 && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
done:
	OPENSSL_cleanse(k, sizeof(k));
	return rc;
}

/* ------------------------------------------------------------------ */
/* SNI. */

static int
tls_sni_build(struct tls_build *b, SSL_CTX *def, const char *where)
{
	const struct conf_tls	*c = b->conf;
	struct tls_ctx_data	*d = SSL_CTX_get_ex_data(def, tls_ctx_idx);
	char			 swhere[TLS_WHERE_MAX];
	size_t			 i;

	if (c->nsni == 0)
		return 0;
	if ((d->sni = calloc(c->nsni, sizeof(*d->sni))) == NULL) {
		tls_err(b->err, b->errlen, "%s: out of memory", where);
		return -1;
	}
	for (i = 0; i < c->nsni; i++) {
		snprintf(swhere, sizeof(swhere), "tls \"%s\" sni \"%s\"",
		    c->name, c->sni[i].name);
		if ((d->sni[d->nsni].name = strdup(c->sni[i].name)) == NULL) {
			tls_err(b->err, b->errlen, "%s: out of memory", swhere);
			return -1;
		}
		/* nsni counts entries the free function must release. */
		d->nsni++;
		d->sni[i].ctx = tls_ctx_new(b, swhere, c->sni[i].pairs,
		    c->sni[i].npairs);
		if (d->sni[i].ctx == NULL)
			return -1;
	}
	SSL_CTX_set_tlsext_servername_callback(def, tls_servername_cb);
	SSL_CTX_set_tlsext_servername_arg(def, d);
	return 0;
}

/*
 * Host names compare without case (RFC 6066 section 3, DNS).  "*.example.org"
 * stands for exactly one non-empty leftmost label, as in certificate
 * matching (RFC 6125 section 6.4.3): not "example.org", not "a.b.example.org".
 */
static bool
tls_sni_match(const char *pattern, const char *name, bool wildcard)
{
	const char	*dot;

	if (!wildcard)
		return strcasecmp(pattern, name) == 0;
	if (strncmp(pattern, "*.", 2) != 0)
		return false;
	if ((dot = strchr(name, '.')) == NULL || dot == name)
		return false;
	return strcasecmp(pattern + 1, dot) == 0;
}

/* Exact names win over wildcards, whatever the order in the file. */
static SSL_CTX *
tls_sni_lookup(const struct tls_ctx_data *d, const char *name)
{
	size_t	i;
	int	pass;

	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < d->nsni; i++)
			if (tls_sni_match(d->sni[i].name, name, pass == 1))
				return d->sni[i].ctx;
	return NULL;
}

static int
tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_ctx_data	*d = arg;
	const char			*name;
	SSL_CTX				*ctx;

	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL || d == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	/* Unknown names get the default certificate, not an alert. */
	if ((ctx = tls_sni_lookup(d, name)) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_set_SSL_CTX(ssl, ctx) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------------ */
/* ALPN and per-connection objects. */

/*
 * ALPACA defence (RFC 7301 section 3.2; alpaca-attack.com): a client that
 * names application protocols but not ours may be a browser tricked into
 * talking to our port (cross-protocol attack), so the handshake fails
 * with no_application_protocol.  A client that names none is an ordinary
 * mail client and is served: OpenSSL does not call us then.
 */
static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const char	*want = SSL_get_ex_data(ssl, tls_alpn_idx);
	size_t		 wlen, off, n;

	if (want == NULL || inlen == 0)
		return SSL_TLSEXT_ERR_NOACK;
	wlen = strlen(want);
	/* A list of <len><bytes>; every length checked against the rest. */
	for (off = 0; off < inlen; off += 1 + n) {
		n = in[off];
		if (n == 0 || n > inlen - off - 1)
			break;
		if (n == wlen && memcmp(in + off + 1, want, n) == 0) {
			*out = in + off + 1;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/*
 * SHA-256 over the section name and the protocol id: sessions resume only
 * where they were made, never from the SMTP port on the IMAP port of the
 * same certificate (cross-protocol resumption, ALPACA paper section 5).
 */
static int
tls_sid_ctx(const char *name, const char *alpn, unsigned char *out)
{
	static const char	 tag[] = "mailtlsd session";
	EVP_MD_CTX		*md;
	unsigned int		 len = 0;
	int			 ok;

	if ((md = EVP_MD_CTX_new()) == NULL)
		return -1;
	ok = EVP_DigestInit_ex2(md, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(md, tag, sizeof(tag)) &&
	    EVP_DigestUpdate(md, name, strlen(name) + 1) &&
	    (alpn == NULL || EVP_DigestUpdate(md, alpn, strlen(alpn) + 1)) &&
	    EVP_DigestFinal_ex(md, out, &len);
	EVP_MD_CTX_free(md);
	return ok && len == SSL_MAX_SID_CTX_LENGTH ? 0 : -1;
}

struct tls_server *
tls_server_new(const struct conf_tls *conf, const struct tls_server *prev,
    char *err, size_t errlen)
{
	struct tls_build	 b;
	struct tls_server	*ts = NULL;
	char			 where[TLS_WHERE_MAX];
	size_t			 i;

	snprintf(where, sizeof(where), "tls \"%s\"", conf->name);
	memset(&b, 0, sizeof(b));
	b.conf = conf;
	b.prev = prev;
	b.err = err;
	b.errlen = errlen;
	if (tls_init() == -1) {
		tls_err(err, errlen, "%s: OpenSSL ex_data unavailable", where);
		return NULL;
	}
	if (tls_build_prepare(&b, where) == -1)
		goto fail;
	if ((ts = calloc(1, sizeof(*ts))) == NULL ||
	    (ts->name = strdup(conf->name)) == NULL) {
		tls_err(err, errlen, "%s: out of memory", where);
		goto fail;
	}
	if ((ts->ctx = tls_ctx_new(&b, where, conf->pairs,
	    conf->npairs)) == NULL || tls_sni_build(&b, ts->ctx, where) == -1)
		goto fail;
	for (i = 0; i < TLS_SID_N; i++)
		if (tls_sid_ctx(ts->name, tls_sid_alpn[i], ts->sid[i]) == -1) {
			tls_err(err, errlen, "%s: session id context: %s",
			    where, tls_ossl_reason());
			goto fail;
		}
	ts->ring = b.ring;
	b.ring = NULL;
	tls_build_clear(&b);
	return ts;
fail:
	ERR_clear_error();
	tls_build_clear(&b);
	tls_server_free(ts);
	return NULL;
}

/* Connections already made keep their contexts (reference counted). */
void
tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	SSL_CTX_free(ts->ctx);
	tls_ticket_ring_free(ts->ring);
	free(ts->name);
	free(ts);
}

SSL *
tls_server_ssl(struct tls_server *ts, const char *alpn)
{
	SSL		*ssl;
	char		*copy = NULL;
	unsigned char	 sid[SSL_MAX_SID_CTX_LENGTH];
	size_t		 i;

	if ((ssl = SSL_new(ts->ctx)) == NULL)
		goto fail;
	if (alpn != NULL) {
		if ((copy = strdup(alpn)) == NULL)
			goto fail;
		if (!SSL_set_ex_data(ssl, tls_alpn_idx, copy)) {
			free(copy);
			goto fail;
		}
	}
	/* Made with the server for the protocols' ids (SHA-256 each). */
	for (i = 0; alpn != NULL && i < TLS_SID_N; i++)
		if (strcmp(alpn, tls_sid_alpn[i]) == 0)
			break;
	if (alpn != NULL && i < TLS_SID_N)
		memcpy(sid, ts->sid[i], sizeof(sid));
	else if (tls_sid_ctx(ts->name, alpn, sid) == -1)
		goto fail;
	if (SSL_set_session_id_context(ssl, sid, sizeof(sid)) != 1)
		goto fail;
	SSL_set_accept_state(ssl);
	return ssl;
fail:
	log_ssl_errors(LOG_LEVEL_ERROR, "tls \"%s\": cannot create a "
	    "connection", ts->name);
	SSL_free(ssl);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Logging. */

/*
 * Postfix's server-side words (tls_misc.c tls_log_summary): "Verified"
 * needs a name match, which only a client does, so a server says
 * Trusted at most.
 */
static const char *
tls_trust_name(SSL *ssl)
{
	if (SSL_get0_peer_certificate(ssl) == NULL)
		return "Anonymous";
	if (SSL_get_verify_result(ssl) == X509_V_OK)
		return "Trusted";
	return "Untrusted";
}

void
tls_summary(SSL *ssl, const char *peer_name, const char *peer_ip,
    char *buf, size_t len)
{
	const SSL_CIPHER	*c = SSL_get_current_cipher(ssl);
	char			 name[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	char			 ip[LOG_ESCAPE_SIZE(UTIL_ADDRSTRLEN)];
	int			 usebits = 0, algbits = 0;

	if (peer_name == NULL)
		peer_name = "unknown";
	if (peer_ip == NULL)
		peer_ip = "unknown";
	/* A reverse-DNS name is peer-chosen text. */
	log_escape(name, sizeof(name), peer_name, strlen(peer_name),
	    LOG_CLIENT_TEXT_MAX);
	log_escape(ip, sizeof(ip), peer_ip, strlen(peer_ip), UTIL_ADDRSTRLEN);
	if (c != NULL)
		usebits = SSL_CIPHER_get_bits(c, &algbits);
	snprintf(buf, len, "%s TLS connection established from %s[%s]: %s "
	    "with cipher %s (%d/%d bits)", tls_trust_name(ssl), name, ip,
	    SSL_get_version(ssl), c != NULL ? SSL_CIPHER_get_name(c) : "none",
	    usebits, algbits);
}

static void
tls_name_cn(const X509_NAME *xn, char *buf, size_t len)
{
	const X509_NAME_ENTRY	*ne;
	unsigned char		*utf8 = NULL;
	int			 i, n;

	i = X509_NAME_get_index_by_NID(xn, NID_commonName, -1);
	if (i < 0 || (ne = X509_NAME_get_entry(xn, i)) == NULL ||
	    (n = ASN1_STRING_to_UTF8(&utf8,
	    X509_NAME_ENTRY_get_data(ne))) < 0) {
		ERR_clear_error();
		util_strlcpy(buf, "(no CN)", len);
		return;
	}
	/* Peer-chosen bytes: escaped, cut like any client text. */
	log_escape(buf, len, (const char *)utf8, (size_t)n, TLS_CN_MAX);
	OPENSSL_free(utf8);
}

/* "RSA2048", "EC256": HAProxy's form for PP2_SUBTYPE_SSL_KEY_ALG. */
static void
tls_key_alg(X509 *x, char *buf, size_t len)
{
	EVP_PKEY	*pk = x != NULL ? X509_get0_pubkey(x) : NULL;
	int		 id;

	buf[0] = '\0';
	if (pk == NULL)
		return;
	id = EVP_PKEY_get_base_id(pk);
	if (id == EVP_PKEY_RSA)
		snprintf(buf, len, "RSA%d", EVP_PKEY_get_bits(pk));
	else if (id == EVP_PKEY_EC)
		snprintf(buf, len, "EC%d", EVP_PKEY_get_bits(pk));
	else if (OBJ_nid2sn(id) != NULL)
		util_strlcpy(buf, OBJ_nid2sn(id), len);
}

/* True for a name made of hostname characters only. */
static bool
tls_hostname_ok(const char *s, size_t max)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || !(isalnum((unsigned char)s[i]) ||
		    s[i] == '.' || s[i] == '-' || s[i] == '_'))
			return false;
	return i > 0;
}

void
tls_proxy_facts(SSL *ssl, struct proxy_tls *t, char *sni, size_t snilen)
{
	const SSL_CIPHER	*c = SSL_get_current_cipher(ssl);
	X509			*ours = SSL_get_certificate(ssl);
	X509			*peer = SSL_get0_peer_certificate(ssl);
	const X509_NAME_ENTRY	*ne;
	const char		*name;
	unsigned char		*utf8 = NULL;
	long			 vr;
	int			 i, n;

	memset(t, 0, sizeof(*t));
	util_strlcpy(t->version, SSL_get_version(ssl), sizeof(t->version));
	if (c != NULL)
		util_strlcpy(t->cipher, SSL_CIPHER_get_name(c),
		    sizeof(t->cipher));
	if (ours != NULL &&
	    (name = OBJ_nid2sn(X509_get_signature_nid(ours))) != NULL)
		util_strlcpy(t->sig_alg, name, sizeof(t->sig_alg));
	tls_key_alg(ours, t->key_alg, sizeof(t->key_alg));
	/* proxy-protocol.txt 2.2.6: verify is 0 only for a verified cert. */
	t->verify = 1;
	if (peer != NULL) {
		t->cert = true;
		vr = SSL_get_verify_result(ssl);
		t->verify = vr == X509_V_OK ? 0 : vr > 0 ? (uint32_t)vr : 1;
		i = X509_NAME_get_index_by_NID(X509_get_subject_name(peer),
		    NID_commonName, -1);
		if (i >= 0 && (ne = X509_NAME_get_entry(
		    X509_get_subject_name(peer), i)) != NULL &&
		    (n = ASN1_STRING_to_UTF8(&utf8,
		    X509_NAME_ENTRY_get_data(ne))) >= 0) {
			/* Peer-chosen bytes: escaped like any client text. */
			log_escape(t->cn, sizeof(t->cn), (const char *)utf8,
			    (size_t)n, PROXY_CN_MAX);
			OPENSSL_free(utf8);
		}
		ERR_clear_error();
	}
	sni[0] = '\0';
	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name != NULL && tls_hostname_ok(name, PROXY_AUTHORITY_MAX))
		util_strlcpy(sni, name, snilen);
}

void
tls_peer_cert_info(SSL *ssl, char *buf, size_t len)
{
	X509		*x = SSL_get0_peer_certificate(ssl);
	char		 subj[LOG_ESCAPE_SIZE(TLS_CN_MAX)];
	char		 iss[LOG_ESCAPE_SIZE(TLS_CN_MAX)];
	char		 fp[EVP_MAX_MD_SIZE * 2 + 1];
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0, i;
	long		 vr;

	if (x == NULL) {
		util_strlcpy(buf, "none", len);
		return;
	}
	tls_name_cn(X509_get_subject_name(x), subj, sizeof(subj));
	tls_name_cn(X509_get_issuer_name(x), iss, sizeof(iss));
	fp[0] = '\0';
	if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
		for (i = 0; i < mdlen; i++)
			snprintf(fp + 2 * i, 3, "%02X", md[i]);
	vr = SSL_get_verify_result(ssl);
	snprintf(buf, len, "subject=%s, issuer=%s, %s%s%s, sha256=%s", subj,
	    iss, vr == X509_V_OK ? "verified" : "not verified (",
	    vr == X509_V_OK ? "" : X509_verify_cert_error_string(vr),
	    vr == X509_V_OK ? "" : ")", fp);
}

const char *
tls_library_version(void)
{
	return OpenSSL_version(OPENSSL_VERSION);
}

/* ------------------------------------------------------------------ */
/* -t */

static void
tls_check_warnings(const char *where, const char *path, X509 *x,
    tls_finding_cb cb, void *arg)
{
	char	msg[512], when[64];
	int	days, secs;

	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) &&
	    days < TLS_EXPIRY_WARN_DAYS) {
		tls_time_text(X509_get0_notAfter(x), when, sizeof(when));
		snprintf(msg, sizeof(msg), "%s: certificate %s: expires in %d "
		    "day%s (%s)", where, path, days, days == 1 ? "" : "s",
		    when);
		cb(arg, 0, msg);
	}
	/* 1: also check the signature, so that only a real self-signature counts. */
	if (X509_self_signed(x, 1) == 1) {
		snprintf(msg, sizeof(msg), "%s: certificate %s: self-signed "
		    "(clients that verify will refuse it)", where, path);
		cb(arg, 0, msg);
	}
	ERR_clear_error();
}

static int
tls_check_pairs(const char *where, const struct conf_keypair *pairs,
    size_t npairs, tls_finding_cb cb, void *arg)
{
	struct tls_pair	 p;
	char		 err[512];
	size_t		 i;
	int		 rc = 0;

	for (i = 0; i < npairs; i++) {
		if (tls_pair_load(where, &pairs[i], &p, err,
		    sizeof(err)) == -1) {
			cb(arg, 1, err);
			rc = -1;
			continue;
		}
		tls_check_warnings(where, pairs[i].certificate, p.leaf, cb,
		    arg);
		tls_pair_clear(&p);
	}
	return rc;
}

/*
 * Every pair first, so that -t reports all broken files at once; then,
 * if they are fine, a full build catches the rest (cipher strings,
 * dh_params, CA files, ticket key) exactly as the daemon would.
 */
int
tls_check(const struct conf_tls *conf, tls_finding_cb cb, void *arg)
{
	struct tls_server	*ts;
	char			 where[TLS_WHERE_MAX], err[512];
	size_t			 i;
	int			 rc;

	snprintf(where, sizeof(where), "tls \"%s\"", conf->name);
	rc = tls_check_pairs(where, conf->pairs, conf->npairs, cb, arg);
	for (i = 0; i < conf->nsni; i++) {
		snprintf(where, sizeof(where), "tls \"%s\" sni \"%s\"",
		    conf->name, conf->sni[i].name);
		if (tls_check_pairs(where, conf->sni[i].pairs,
		    conf->sni[i].npairs, cb, arg) == -1)
			rc = -1;
	}
	if (rc == -1)
		return -1;
	if ((ts = tls_server_new(conf, NULL, err, sizeof(err))) == NULL) {
		cb(arg, 1, err);
		return -1;
	}
	tls_server_free(ts);
	return 0;
}

/* ------------------------------------------------------------------ */
/* How a TLS leg ended. */

/*
 * Whether the handshake got as far as the client's Finished (the last
 * message, full or resumed).  SSL_is_init_finished() cannot say: a fatal
 * error puts the state machine back "in init".
 */
static bool
tls_handshake_done(SSL *ssl)
{
	unsigned char	buf[1];

	return ssl != NULL && SSL_get_peer_finished(ssl, buf, sizeof(buf)) > 0;
}

/*
 * The errors libevent queued for this bufferevent.  Three kinds share the
 * queue (libevent 2.1.12 with OpenSSL 3):
 *  - OpenSSL packed codes (library, reason): protocol errors, except
 *    SSL_R_UNEXPECTED_EOF_WHILE_READING, OpenSSL 3's name for a FIN
 *    without close_notify (the socket variant reports it this way even
 *    with allow_dirty_shutdown);
 *  - ERR_SYSTEM_ERROR codes carrying an errno;
 *  - libevent's own copy of the SSL_get_error() value (a small number,
 *    library 0): SSL_ERROR_SYSCALL means "look at errno".
 * All are drained, so none is left to confuse the next connection.
 */
static int
tls_classify_errors(struct bufferevent *bev, SSL *ssl, int err, char *detail,
    size_t len)
{
	unsigned long	 e;
	const char	*proto = NULL;
	int		 sys = 0, eof = 0, raw_syscall = 0, raw_ssl = 0;

	while ((e = bufferevent_get_openssl_error(bev)) != 0) {
		if (ERR_SYSTEM_ERROR(e))
			sys = ERR_GET_REASON(e);
		else if (ERR_GET_LIB(e) == 0) {
			raw_syscall |= e == SSL_ERROR_SYSCALL;
			raw_ssl |= e == SSL_ERROR_SSL;
		} else if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			eof = 1;
		else if (proto == NULL &&
		    (proto = ERR_reason_error_string(e)) == NULL)
			proto = "TLS protocol error";
	}
	if (proto != NULL) {
		snprintf(detail, len, "TLS error: %s", proto);
		return TLS_CLOSE_PROTOCOL;
	}
	if (sys == 0 && raw_syscall)
		sys = err;
	if (sys != 0) {
		snprintf(detail, len, "%s", evutil_socket_error_to_string(sys));
		return TLS_CLOSE_SYSCALL;
	}
	/*
	 * With SSL_OP_IGNORE_UNEXPECTED_EOF (tls_server_socket_bev()) a FIN
	 * is a received shutdown, never SSL_ERROR_SYSCALL: this one is a
	 * socket error whose errno was overwritten before the (deferred)
	 * callback ran.
	 */
	if (raw_syscall && ssl != NULL &&
	    (SSL_get_options(ssl) & SSL_OP_IGNORE_UNEXPECTED_EOF) &&
	    !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)) {
		snprintf(detail, len, "connection error");
		return TLS_CLOSE_SYSCALL;
	}
	if (eof || raw_syscall) {
		/* SSL_ERROR_SYSCALL with errno 0 is OpenSSL 1.1's dirty EOF. */
		snprintf(detail, len, "EOF without close_notify%s",
		    tls_handshake_done(ssl) ? "" : " during handshake");
		return TLS_CLOSE_EOF;
	}
	if (raw_ssl) {
		snprintf(detail, len, "TLS error");
		return TLS_CLOSE_PROTOCOL;
	}
	return -1;
}

enum tls_close
tls_classify_close(struct bufferevent *bev, short what, char *detail,
    size_t detaillen)
{
	SSL		*ssl = bufferevent_openssl_get_ssl(bev);
	int		 rc, err;
	char		 dummy[8];

	if (detail == NULL || detaillen == 0) {
		detail = dummy;
		detaillen = sizeof(dummy);
	}
	/*
	 * Before anything can change it.  Callbacks may be deferred, so a
	 * "try again" left over from an earlier read is not the cause.
	 */
	err = EVUTIL_SOCKET_ERROR();
	if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
		err = 0;
	rc = tls_classify_errors(bev, ssl, err, detail, detaillen);
	ERR_clear_error();
	if (rc != -1)
		return (enum tls_close)rc;
	/*
	 * Invariant 6: close_notify and EOF both end the connection.  With
	 * SSL_OP_IGNORE_UNEXPECTED_EOF (the socket variant, see
	 * tls_server_socket_bev()) OpenSSL marks a bare FIN as a received
	 * shutdown too; only then has the socket BIO seen the end of the
	 * stream (a close_notify stops reading before it).
	 */
	if (ssl != NULL && (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)) {
		if (BIO_method_type(SSL_get_rbio(ssl)) == BIO_TYPE_SOCKET &&
		    BIO_eof(SSL_get_rbio(ssl)) == 1) {
			snprintf(detail, detaillen,
			    "EOF without close_notify%s",
			    tls_handshake_done(ssl) ? "" : " during handshake");
			return TLS_CLOSE_EOF;
		}
		snprintf(detail, detaillen, "close_notify");
		return TLS_CLOSE_NOTIFY;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(detail, detaillen, "timeout");
		return TLS_CLOSE_SYSCALL;
	}
	if ((what & BEV_EVENT_ERROR) && err != 0) {
		/* The filter variant passes the socket's error on as is. */
		snprintf(detail, detaillen, "%s",
		    evutil_socket_error_to_string(err));
		return TLS_CLOSE_SYSCALL;
	}
	if (what & BEV_EVENT_ERROR) {
		snprintf(detail, detaillen, "connection error");
		return TLS_CLOSE_SYSCALL;
	}
	snprintf(detail, detaillen, "EOF without close_notify%s",
	    tls_handshake_done(ssl) ? "" : " during handshake");
	return TLS_CLOSE_EOF;
}

/*
 * The client leg's TLS straight on its socket: OpenSSL reads whole records
 * from the socket and writes to it, with no socket bufferevent and no
 * second pair of buffers in between (issue 12: bulk relay CPU, memory per
 * idle connection).  libevent 2.1.12 reports a FIN without close_notify on
 * this variant as an error that leaves the SSL unusable for writing, even
 * with allow_dirty_shutdown, so a half-closed client would lose its last
 * reply; SSL_OP_IGNORE_UNEXPECTED_EOF makes OpenSSL treat that FIN as a
 * received shutdown instead (reading ends, writing goes on), and
 * tls_classify_close() still tells the two apart.
 */
struct bufferevent *
tls_server_socket_bev(struct event_base *base, evutil_socket_t fd, SSL *ssl,
    int options)
{
	struct bufferevent	*bev;

	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	bev = bufferevent_openssl_socket_new(base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, options);
	if (bev != NULL)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/*
 * After the peer's EOF or close_notify reading is over but writing goes on
 * (a client that half-closes after QUIT still gets the rest of the answer).
 * libevent's socket variant stops its write event on any close
 * (conn_closed() calls stop_writing()), and nothing adds it back while
 * output is still queued; enabling EV_WRITE does.  Harmless on the filter
 * variant.
 */
void
tls_keep_writing(struct bufferevent *bev)
{
	bufferevent_enable(bev, EV_WRITE);
}

/* ------------------------------------------------------------------ */
/* Client side: the backend leg (SPEC 12). */

/*
 * backend_ca_file and backend_ca_path.  OpenSSL says little about a file
 * that is not there ("unknown error"), so the system is asked first.
 */
static int
tls_client_cas(SSL_CTX *ctx, const struct conf_service *svc,
    const char *where, char *err, size_t errlen)
{
	const char	*f = svc->backend_ca_file, *d = svc->backend_ca_path;

	if (f != NULL && access(f, R_OK) == -1) {
		tls_err(err, errlen, "%s: backend_ca_file %s: %s", where, f,
		    strerror(errno));
		return -1;
	}
	if (f != NULL && SSL_CTX_load_verify_file(ctx, f) != 1) {
		tls_err(err, errlen, "%s: backend_ca_file %s: %s", where, f,
		    tls_ossl_reason());
		return -1;
	}
	if (d != NULL && access(d, R_OK | X_OK) == -1) {
		tls_err(err, errlen, "%s: backend_ca_path %s: %s", where, d,
		    strerror(errno));
		return -1;
	}
	if (d != NULL && SSL_CTX_load_verify_dir(ctx, d) != 1) {
		tls_err(err, errlen, "%s: backend_ca_path %s: %s", where, d,
		    tls_ossl_reason());
		return -1;
	}
	return 0;
}

/*
 * The context of a service with backend_tls.  The policy is the server
 * side's for the profile backend_tls_profile names (same floor, same
 * lists); verification is on unless backend_tls_verify = false, against
 * backend_ca_file / backend_ca_path or else the system store.
 */
struct tls_client *
tls_client_new(const struct conf_service *svc, char *err, size_t errlen)
{
	struct tls_build	 b;
	struct conf_tls		 pol;
	struct tls_client	*tc;
	struct tls_pair		 pair;
	char			 where[TLS_WHERE_MAX];

	snprintf(where, sizeof(where), "service \"%s\": backend_tls",
	    svc->name);
	if (tls_init() == -1) {
		tls_err(err, errlen, "%s: OpenSSL ex_data unavailable", where);
		return NULL;
	}
	if ((tc = calloc(1, sizeof(*tc))) == NULL ||
	    (tc->where = strdup(where)) == NULL ||
	    (tc->cache = calloc(svc->nbackends, sizeof(*tc->cache))) == NULL) {
		if (tc != NULL) {
			free(tc->where);
			free(tc);
		}
		tls_err(err, errlen, "%s: out of memory", where);
		return NULL;
	}
	pthread_mutex_init(&tc->lock, NULL);
	tc->ncache = svc->nbackends;
	tc->verify = svc->backend_tls_verify;
	memset(&pol, 0, sizeof(pol));
	pol.name = (char *)svc->name;
	pol.profile = svc->backend_tls_profile;
	memset(&b, 0, sizeof(b));
	b.conf = &pol;
	b.err = err;
	b.errlen = errlen;

	if ((tc->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		tls_err(err, errlen, "%s: %s", where, tls_ossl_reason());
		goto fail;
	}
	if (!SSL_CTX_set_ex_data(tc->ctx, tls_client_idx, tc) ||
	    tls_ctx_policy(&b, tc->ctx, where) == -1)
		goto fail;
	if (tls_client_cas(tc->ctx, svc, where, err, errlen) == -1)
		goto fail;
	if (svc->backend_ca_file == NULL && svc->backend_ca_path == NULL &&
	    SSL_CTX_set_default_verify_paths(tc->ctx) != 1) {
		tls_err(err, errlen, "%s: the system CA store: %s", where,
		    tls_ossl_reason());
		goto fail;
	}
	/*
	 * The store is loaded even with verification off, so that the log
	 * still says whether the chain would have verified.
	 */
	SSL_CTX_set_verify(tc->ctx, tc->verify ? SSL_VERIFY_PEER :
	    SSL_VERIFY_NONE, NULL);
	/* backend_dane: OpenSSL's DANE verification, per connection. */
	if (svc->backend_dane && !dane_ready()) {
		tls_err(err, errlen, "%s: backend_dane: the resolver "
		    "configuration (/etc/resolv.conf) could not be read at "
		    "startup", where);
		goto fail;
	}
	if (svc->backend_dane && (SSL_CTX_dane_enable(tc->ctx) <= 0 ||
	    (tc->dane = dane_cache_new(svc->nbackends)) == NULL)) {
		tls_err(err, errlen, "%s: cannot set up DANE: %s", where,
		    tls_ossl_reason());
		goto fail;
	}
	if (svc->backend_pair.certificate != NULL) {
		if (tls_pair_load(where, &svc->backend_pair, &pair, err,
		    errlen) == -1 || tls_ctx_add_pair(&b, tc->ctx, where,
		    &svc->backend_pair, &pair) == -1)
			goto fail;
	}
	/*
	 * Resumption towards the backend: OpenSSL's client side keeps no
	 * cache of its own, so new sessions (TLS 1.3 tickets arrive after
	 * the handshake) are handed to tls_client_new_session().
	 */
	SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(tc->ctx, tls_client_new_session);
	return tc;
fail:
	ERR_clear_error();
	tls_client_free(tc);
	return NULL;
}

void
tls_client_free(struct tls_client *tc)
{
	size_t	 i;

	if (tc == NULL)
		return;
	for (i = 0; i < tc->ncache; i++)
		SSL_SESSION_free(tc->cache[i]);
	free(tc->cache);
	SSL_CTX_free(tc->ctx);
	dane_cache_free(tc->dane);
	pthread_mutex_destroy(&tc->lock);
	free(tc->where);
	free(tc);
}

/* Keep the newest resumable session of each backend; 1: we took it. */
static int
tls_client_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_client	*tc;
	uintptr_t		 slot;
	SSL_SESSION		*old;

	tc = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_client_idx);
	slot = (uintptr_t)SSL_get_ex_data(ssl, tls_slot_idx);
	/*
	 * backend_dane: tls_client_ssl() never resumes (a session verified
	 * under other records), so keeping one would only hold memory.
	 */
	if (tc == NULL || tc->dane != NULL || slot == 0 || slot > tc->ncache ||
	    !SSL_SESSION_is_resumable(sess))
		return 0;
	/* A session of an unverified peer is not worth resuming. */
	if (tc->verify && SSL_get_verify_result(ssl) != X509_V_OK)
		return 0;
	pthread_mutex_lock(&tc->lock);
	old = tc->cache[slot - 1];
	tc->cache[slot - 1] = sess;
	pthread_mutex_unlock(&tc->lock);
	SSL_SESSION_free(old);
	return 1;
}

static bool
tls_is_ip(const char *name)
{
	unsigned char	 buf[16];

	return inet_pton(AF_INET, name, buf) == 1 ||
	    inet_pton(AF_INET6, name, buf) == 1;
}

struct dane_cache *
tls_client_dane_cache(struct tls_client *tc)
{
	return tc->dane;
}

/*
 * backend_dane (SPEC 12, RFC 7672): the TLSA answer the session waited
 * for (backend.c) decides.  Authenticated records of usage DANE-TA(2) or
 * DANE-EE(3) replace the CA store: verification is then on whatever
 * backend_tls_verify says, by those records only (a mismatch fails the
 * handshake), with no name check for DANE-EE and the name checked for
 * DANE-TA.  PKIX-TA(0) and PKIX-EE(1) are not for SMTP (RFC 7672 3.1.3)
 * and are skipped; records of unknown selector or matching type, or of
 * a digest of the wrong size, are unusable (OpenSSL says which).  No
 * usable records, or no authenticated answer: backend_tls_verify's rule.
 * A failed lookup fails closed.  The outcome is kept on the SSL for the
 * logs (tls_client_dane_status()).
 */
static int
tls_client_dane(struct tls_client *tc, SSL *ssl, size_t slot,
    const char *name)
{
	struct dane_answer	*a;
	const char		*st;
	size_t			 i;
	int			 r, usable = 0, rc = 0;

	if ((a = dane_peek(tc->dane, slot)) == NULL ||
	    a->status == DANE_FAILED) {
		log_error("%s: no TLSA answer for the handshake: %s", tc->where,
		    a != NULL ? a->why : "none looked up");
		dane_answer_unref(a);
		return -1;
	}
	if (a->status == DANE_INSECURE)
		st = "insecure";
	else if (a->status == DANE_NONE)
		st = "none";
	else if (SSL_dane_enable(ssl, name) <= 0) {
		rc = -1;
		goto out;
	} else {
		SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
		for (i = 0; i < a->nrr; i++) {
			if (a->rr[i].usage != DANE_USAGE_TA &&
			    a->rr[i].usage != DANE_USAGE_EE)
				continue;
			r = SSL_dane_tlsa_add(ssl, a->rr[i].usage,
			    a->rr[i].selector, a->rr[i].mtype,
			    a->rr[i].data, a->rr[i].len);
			if (r < 0) {
				rc = -1;
				goto out;
			}
			if (r > 0)
				usable++;
		}
		ERR_clear_error();	/* unusable records leave reasons */
		st = usable > 0 ? "dane" : "unusable";
		if (usable > 0)
			SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	}
	SSL_set_ex_data(ssl, tls_dane_idx, (void *)(uintptr_t)st);
out:
	dane_answer_unref(a);
	return rc;
}

const char *
tls_client_dane_status(SSL *ssl)
{
	const char	*st = SSL_get_ex_data(ssl, tls_dane_idx);
	uint8_t		 usage;

	if (st == NULL)
		return NULL;
	if (strcmp(st, "dane") != 0)
		return st;
	/* Before the handshake, or if it failed: the records applied. */
	if (SSL_get0_dane_tlsa(ssl, &usage, NULL, NULL, NULL, NULL) < 0)
		return "tlsa";
	return usage == DANE_USAGE_EE ? "ee" : "ta";
}

SSL *
tls_client_ssl(struct tls_client *tc, size_t slot, char *name)
{
	SSL		*ssl;
	SSL_SESSION	*sess = NULL;

	if ((ssl = SSL_new(tc->ctx)) == NULL ||
	    !SSL_set_ex_data(ssl, tls_slot_idx, (void *)(uintptr_t)(slot + 1)))
		goto fail;
	/*
	 * SNI only for a host name (RFC 6066 section 3: never a literal
	 * address); the name or address is what the certificate must
	 * match, partial wildcards ("mx*.example.org") refused.
	 */
	if (tls_is_ip(name)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    name) != 1)
			goto fail;
	} else if (SSL_set_tlsext_host_name(ssl, name) != 1 ||
	    SSL_set1_host(ssl, name) != 1)
		goto fail;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (tc->dane != NULL && tls_client_dane(tc, ssl, slot, name) == -1)
		goto fail;
	/* Not with DANE: a session verified under other records. */
	if (slot < tc->ncache && tc->dane == NULL) {
		pthread_mutex_lock(&tc->lock);
		if ((sess = tc->cache[slot]) != NULL)
			SSL_SESSION_up_ref(sess);
		pthread_mutex_unlock(&tc->lock);
		if (sess != NULL) {
			if (SSL_set_session(ssl, sess) != 1)
				ERR_clear_error();
			SSL_SESSION_free(sess);
		}
	}
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	log_ssl_errors(LOG_LEVEL_ERROR, "%s: cannot create a connection",
	    tc->where);
	SSL_free(ssl);
	return NULL;
}

/*
 * Why the backend's certificate was refused: the verification error
 * (which covers a name mismatch), or the handshake's own reason.
 */
void
tls_client_failure(SSL *ssl, const char *detail, char *buf, size_t len)
{
	long	 v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (v == X509_V_ERR_DANE_NO_MATCH)
		snprintf(buf, len, "certificate verification failed: TLSA "
		    "mismatch (%s)", X509_verify_cert_error_string(v));
	else if (v != X509_V_OK)
		snprintf(buf, len, "certificate verification failed: %s",
		    X509_verify_cert_error_string(v));
	else
		snprintf(buf, len, "TLS handshake failed: %s",
		    detail != NULL && detail[0] != '\0' ? detail :
		    "connection closed");
}

/*
 * The backend leg's TLS facts for the session end line:
 * "TLSv1.3/TLS_AES_256_GCM_SHA384 verified=mx.example.org" (the name the
 * certificate matched), "unverified=<reason>" with backend_tls_verify =
 * false, and ",resumed" when the session was resumed; with backend_dane,
 * " dane=ee" or "dane=ta" (the TLSA record that matched), or why DANE did
 * not apply: "insecure" (no AD bit), "none" (no records), "unusable".
 */
void
tls_client_facts(SSL *ssl, char *buf, size_t len)
{
	const SSL_CIPHER	*c = SSL_get_current_cipher(ssl);
	const char		*peer = SSL_get0_peername(ssl);
	char			 name[LOG_ESCAPE_SIZE(LOG_CLIENT_TEXT_MAX)];
	char			*ip = NULL;
	const char		*dane;
	size_t			 n;
	long			 v = SSL_get_verify_result(ssl);

	/* An address literal was checked as such: no peer name then. */
	if (peer == NULL && (ip = X509_VERIFY_PARAM_get1_ip_asc(
	    SSL_get0_param(ssl))) != NULL)
		peer = ip;
	if (peer == NULL)
		peer = "";
	log_escape(name, sizeof(name), peer, strlen(peer),
	    LOG_CLIENT_TEXT_MAX);
	OPENSSL_free(ip);
	if (v == X509_V_OK)
		snprintf(buf, len, "%s/%s verified=%s%s", SSL_get_version(ssl),
		    c != NULL ? SSL_CIPHER_get_name(c) : "none",
		    name[0] != '\0' ? name : "yes",
		    SSL_session_reused(ssl) ? " resumed" : "");
	else
		snprintf(buf, len, "%s/%s unverified=\"%s\"%s",
		    SSL_get_version(ssl), c != NULL ? SSL_CIPHER_get_name(c) :
		    "none", X509_verify_cert_error_string(v),
		    SSL_session_reused(ssl) ? " resumed" : "");
	/* backend_dane: how it went ("ee", "ta", "insecure", ...). */
	if ((dane = tls_client_dane_status(ssl)) != NULL &&
	    (n = strlen(buf)) < len)
		snprintf(buf + n, len - n, " dane=%s", dane);
}
