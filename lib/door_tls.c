/*
 * door_tls.c - HTTPS in the front door (--secure): OpenSSL, non-blocking,
 * the handshake inside the loop.
 *
 * TLS 1.2 and 1.3 only, forward-secret AEAD ciphers for 1.2, resumption by
 * session tickets (stateless: the server keeps nothing per session, so ten
 * thousand subscribers that connect cost no session cache).  An idle
 * connection gives its buffers back (SSL_MODE_RELEASE_BUFFERS): a subscriber
 * that waits for events holds the SSL object and nothing more.  This kernel
 * line has no kernel TLS everywhere it runs, so records are made here;
 * bench/RESULTS.md has what it costs.
 *
 * The certificate and key (--cert_path, --key_path) are loaded at start-up,
 * where anything wrong with them stops the process with the file named, and
 * again on SIGHUP, on certd's word, or when both files have changed and
 * settled: new connections get the new pair, open ones keep theirs (each SSL
 * holds a reference to the context it was made from).  A pair that does not
 * load on reload is refused with a log line, and the old one stays.  With
 * --auto_cert the pair is certd's, under --certs; until there is one (a
 * first start, a broken file) a self-signed certificate made in memory for
 * --domain is served.
 */
#include "door_internal.h"
#include "log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/x509err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define TLS_STAGE 16384 /* one record's worth of plaintext per SSL_write */

typedef struct file_stamp {
    struct timespec mtime;
    ino_t ino;
    off_t size;
    int missing;
} file_stamp;

struct door_tls {
    SSL_CTX *ctx;
    const char *cert_path, *key_path; /* the config's */
    file_stamp cert_stamp, key_stamp;   /* of the pair in use */
    file_stamp seen_cert, seen_key;     /* changed files, seen once (see door_tls_check_reload) */
    unsigned reloads_seen;
};

static _Atomic unsigned reload_requests;

void door_reload_certificates(void)
{
    atomic_fetch_add(&reload_requests, 1);
}

static void stamp_of(const char *path, file_stamp *s)
{
    struct stat st;
    memset(s, 0, sizeof *s);
    if (stat(path, &st) != 0) {
        s->missing = 1;
        return;
    }
    s->mtime = st.st_mtim;
    s->ino = st.st_ino;
    s->size = st.st_size;
}

static int stamp_same(const file_stamp *a, const file_stamp *b)
{
    return a->missing == b->missing && a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ino == b->ino && a->size == b->size;
}

/* OpenSSL's last error, as text for a message. */
static const char *ssl_error_text(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, size, "unknown error");
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

/* Checks the certificate file: readable, a PEM certificate, valid now. */
static int check_certificate(const char *path, char *why, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, size, "cannot read the certificate %s: %s", path, strerror(errno));
        return -1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL) {
        char e[160];
        snprintf(why, size, "the certificate %s is not a PEM certificate (%s)", path, ssl_error_text(e, sizeof e));
        return -1;
    }
    int rc = 0;
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        snprintf(why, size, "the certificate %s has expired", path);
        rc = -1;
    } else if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        snprintf(why, size, "the certificate %s is not valid yet", path);
        rc = -1;
    }
    X509_free(x);
    return rc;
}

/* A server context with the house settings, without a certificate. */
static SSL_CTX *new_context(char *why, size_t size)
{
    char e[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(why, size, "cannot make a TLS context: %s", ssl_error_text(e, sizeof e));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS");
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Tickets only: resumption without a per-session cache on the server. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"broker", 6);
    SSL_CTX_set_num_tickets(ctx, 1);
    return ctx;
}

static SSL_CTX *load_context(const char *cert_path, const char *key_path, char *why, size_t size)
{
    char e[160];
    if (check_certificate(cert_path, why, size) != 0)
        return NULL;
    FILE *kf = fopen(key_path, "r");
    if (kf == NULL) {
        snprintf(why, size, "cannot read the key %s: %s", key_path, strerror(errno));
        return NULL;
    }
    fclose(kf);
    SSL_CTX *ctx = new_context(why, size);
    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        snprintf(why, size, "cannot use the certificate %s: %s", cert_path, ssl_error_text(e, sizeof e));
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(why, size, "the key %s is not the key of the certificate %s", key_path, cert_path);
        } else {
            snprintf(why, size, "cannot use the key %s: %s", key_path, ssl_error_text(e, sizeof e));
        }
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(why, size, "the key %s is not the key of the certificate %s", key_path, cert_path);
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* Adds the names of `domains` (comma-separated) as the certificate's
 * subjectAltName. */
static int add_alt_names(X509 *x, const char *domains)
{
    char *value = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&value, &size);
    if (f == NULL)
        return -1;
    const char *p = domains;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        fprintf(f, "%sDNS:%.*s", p == domains ? "" : ",", (int)len, p);
        p += len + (p[len] == ',');
    }
    fclose(f);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, value);
    free(value);
    int rc = ext != NULL && X509_add_ext(x, ext, -1) == 1 ? 0 : -1;
    X509_EXTENSION_free(ext);
    return rc;
}

/* With --auto_cert and no usable certificate yet (the first start, or a
 * broken file): a self-signed one for --domain, made in memory, so that the
 * port is HTTPS from the start; certd writes the real pair and the files'
 * change replaces it.  A browser warns on it, which is the truth. */
static SSL_CTX *self_signed_context(const broker_config *cfg, char *why, size_t size)
{
    char e[160];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    SSL_CTX *ctx = NULL;
    const char *name_end = strchr(cfg->domain, ',');
    int cn_len = name_end != NULL ? (int)(name_end - cfg->domain) : (int)strlen(cfg->domain);
    if (key == NULL || x == NULL || X509_set_version(x, 2) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(time(NULL) & 0x7fffffff)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 7L * 86400) == NULL || X509_set_pubkey(x, key) != 1 ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)cfg->domain, cn_len, -1, 0) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 || add_alt_names(x, cfg->domain) != 0 ||
        X509_sign(x, key, EVP_sha256()) == 0) {
        snprintf(why, size, "cannot make a temporary certificate: %s", ssl_error_text(e, sizeof e));
    } else if ((ctx = new_context(why, size)) != NULL &&
               (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
        snprintf(why, size, "cannot use the temporary certificate: %s", ssl_error_text(e, sizeof e));
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

door_tls *door_tls_new(const broker_config *cfg)
{
    door_tls *t = calloc(1, sizeof *t);
    char why[512];
    if (t == NULL)
        return NULL;
    t->cert_path = cfg->cert_path;
    t->key_path = cfg->key_path;
    stamp_of(t->cert_path, &t->cert_stamp);
    stamp_of(t->key_path, &t->key_stamp);
    t->seen_cert = t->cert_stamp;
    t->seen_key = t->key_stamp;
    t->reloads_seen = atomic_load(&reload_requests);
    t->ctx = load_context(t->cert_path, t->key_path, why, sizeof why);
    if (t->ctx == NULL && cfg->auto_cert) {
        log_warn("--auto_cert: %s; serving a temporary self-signed certificate for %s until certd has one",
                 t->cert_stamp.missing ? "no certificate yet" : why, cfg->domain);
        t->ctx = self_signed_context(cfg, why, sizeof why);
    }
    if (t->ctx == NULL) {
        log_error("--secure: %s", why);
        free(t);
        return NULL;
    }
    return t;
}

void door_tls_free(door_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* Called about once a second.  Changed files are loaded once they have stayed
 * the same for one look, so that a key and chain replaced one after the other
 * are never taken half-way; SIGHUP and certd's message load at once. */
void door_tls_check_reload(door *d)
{
    door_tls *t = d->tls;
    file_stamp cs, ks;
    stamp_of(t->cert_path, &cs);
    stamp_of(t->key_path, &ks);
    unsigned asked = atomic_load(&reload_requests);
    int changed = !stamp_same(&cs, &t->cert_stamp) || !stamp_same(&ks, &t->key_stamp);
    int settled = stamp_same(&cs, &t->seen_cert) && stamp_same(&ks, &t->seen_key);
    t->seen_cert = cs;
    t->seen_key = ks;
    int requested = asked != t->reloads_seen;
    if (!requested && (!changed || !settled))
        return;
    t->cert_stamp = cs;
    t->key_stamp = ks;
    t->reloads_seen = asked;
    char why[512];
    SSL_CTX *ctx = load_context(t->cert_path, t->key_path, why, sizeof why);
    if (ctx == NULL) {
        log_error("TLS: not reloaded, the previous certificate stays in use: %s", why);
        return;
    }
    SSL_CTX_free(t->ctx); /* open connections hold their own reference */
    t->ctx = ctx;
    log_info("TLS: certificate %s reloaded (%s)", t->cert_path, requested ? "asked to" : "the files changed");
}

SSL *door_tls_accept(door *d, int fd)
{
    SSL *ssl = SSL_new(d->tls->ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

/* Plain HTTP on the TLS port: a request line starts with a capital letter, a
 * TLS record with byte 0x16.  Answered in plain HTTP, so that whoever typed
 * http:// reads why. */
void door_tls_handshake(door_conn *c)
{
    if (!c->hello_seen) {
        unsigned char first;
        ssize_t n = recv(c->fd, &first, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return; /* nothing yet */
        if (n <= 0) {
            door_conn_close(c);
            return;
        }
        if (first >= 'A' && first <= 'Z') {
            SSL_free(c->ssl);
            c->ssl = NULL;
            c->state = CONN_READING;
            door_conn_refuse(c, 400, NULL, NULL, "this port speaks HTTPS: use an https:// URL");
            return;
        }
        c->hello_seen = 1;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = CONN_READING;
        if (c->refusal)
            door_conn_refuse_pending(c);
        else
            door_conn_read(c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return;
    char e[160];
    atomic_fetch_add(conn_door(c)->m_tls_failed, 1);
    log_debug("TLS: handshake failed: %s", ssl_error_text(e, sizeof e));
    door_conn_close(c);
}

ssize_t door_tls_recv(door_conn *c, char *buf, size_t len)
{
    size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(c->ssl, buf, len, &n) == 1)
        return (ssize_t)n;
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -2;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return -2;
        return -1;
    default:
        ERR_clear_error();
        return -1;
    }
}

ssize_t door_tls_writev(door_conn *c, const struct iovec *iov, int n)
{
    static __thread char stage[TLS_STAGE];
    size_t total = 0, skip = 0;
    int i = 0;
    for (;;) {
        /* The next record's plaintext: after a "would block" OpenSSL wants the
         * same bytes again, and they are, since the caller's queue only grows
         * at its end. */
        size_t fill = 0, off = skip;
        int j = i;
        while (j < n && fill < TLS_STAGE) {
            size_t avail = iov[j].iov_len - off;
            size_t take = avail < TLS_STAGE - fill ? avail : TLS_STAGE - fill;
            memcpy(stage + fill, (const char *)iov[j].iov_base + off, take);
            fill += take;
            off += take;
            if (off == iov[j].iov_len) {
                j++;
                off = 0;
            }
        }
        if (fill == 0)
            return (ssize_t)total;
        size_t written = 0;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, stage, fill, &written) != 1) {
            int err = SSL_get_error(c->ssl, 0);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
                return (ssize_t)total;
            ERR_clear_error();
            return total > 0 ? (ssize_t)total : -1;
        }
        total += written;
        /* Advance over `written` bytes of the iovecs. */
        while (written > 0 && i < n) {
            size_t avail = iov[i].iov_len - skip;
            if (written < avail) {
                skip += written;
                written = 0;
            } else {
                written -= avail;
                skip = 0;
                i++;
            }
        }
    }
}
