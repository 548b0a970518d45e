/*
 * certd_cert.c - the certificate under --certs, kept current by ACME.
 *
 * The files (lib/config.h names them):
 *   account_key.pem   the ACME account's key, made once (0600); losing it
 *                     only means a new account;
 *   private_key.pem   the certificate's key, new at every order (0600);
 *   chain.pem         the chain the CA sent, leaf first (0644).
 * Each is written whole beside its place and renamed over it, so a reader
 * (the TLS listeners, which watch the files) never sees half a file; the key
 * goes first, and the listeners load a changed pair only once both have
 * stopped changing (lib/door_tls.c).
 *
 * The thread looks at chain.pem and orders a new certificate when it is
 * missing, unreadable, not for every --domain, not for the key beside it, or
 * due: at two thirds of its lifetime, or earlier inside the window the CA's
 * renewal information (RFC 9773) suggests.  A failed order is tried again
 * after a backoff (1 minute, doubling, at most 6 hours), and meanwhile the
 * listeners keep what they have: the old certificate, or the temporary
 * self-signed one of a first start.
 */
#include "acme.h"
#include "certd_internal.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ACME_TIMEOUT_S 300         /* one whole order */
#define BACKOFF_FIRST_S 60
#define BACKOFF_MAX_S (6 * 3600)
#define ARI_EVERY_S (6 * 3600)     /* renewal information asked again this often */
#define MAX_DOMAINS 16
#define CHECK_MAX_S 3600           /* the files are looked at again at least this often */

typedef struct cert_paths {
    char account[512], key[512], chain[512];
} cert_paths;

/* What is on disk, and when it is due. */
typedef struct chain_state {
    int usable;
    char why[512];          /* when not usable */
    int64_t not_before, not_after, renew_at;
    char *leaf_pem;         /* for renewal information; malloc'd */
} chain_state;

static int write_file_atomic(const char *path, const char *data, size_t len, mode_t mode, char *why, size_t size)
{
    char tmp[560];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(why, size, "cannot write %.300s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    /* open() honours the umask; the mode is the promise. */
    int ok = off == len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    if (close(fd) != 0 || !ok || rename(tmp, path) != 0) {
        snprintf(why, size, "cannot write %.300s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    /* The rename itself survives a crash once the directory is synced. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return 0;
}

static char *key_pem(EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        out = n > 0 ? strndup(data, (size_t)n) : NULL;
    }
    BIO_free(b);
    return out;
}

static int write_key(const char *path, EVP_PKEY *key, char *why, size_t size)
{
    char *pem = key_pem(key);
    if (pem == NULL) {
        snprintf(why, size, "cannot encode a key for %.300s", path);
        return -1;
    }
    int rc = write_file_atomic(path, pem, strlen(pem), 0600, why, size);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    return rc;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

/* The account key: read, or made and kept the first time.  A key file that
 * exists but does not read is an operator's to look at, not to overwrite. */
static EVP_PKEY *account_key(const cert_paths *p, char *why, size_t size)
{
    EVP_PKEY *k = read_key(p->account);
    if (k != NULL)
        return k;
    if (access(p->account, F_OK) == 0) {
        snprintf(why, size, "the ACME account key %.300s does not read as a PEM private key (move it away to make a new account)",
                 p->account);
        return NULL;
    }
    k = acme_key_new();
    if (k == NULL) {
        snprintf(why, size, "cannot make an account key");
        return NULL;
    }
    if (write_key(p->account, k, why, size) != 0) {
        EVP_PKEY_free(k);
        return NULL;
    }
    log_info("ACME: made a new account key in %s", p->account);
    return k;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static char *leaf_to_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_X509(b, x) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        out = n > 0 ? strndup(data, (size_t)n) : NULL;
    }
    BIO_free(b);
    return out;
}

/* Reads chain.pem and private_key.pem: are they a pair for every domain? */
static void inspect(const certd *c, const cert_paths *p, chain_state *s)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(p->chain, "r");
    if (f == NULL) {
        snprintf(s->why, sizeof s->why, "no certificate yet (%.300s: %s)", p->chain, strerror(errno));
        return;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL) {
        snprintf(s->why, sizeof s->why, "%.300s is not a PEM certificate", p->chain);
        return;
    }
    EVP_PKEY *key = read_key(p->key);
    const char *d = c->cfg->domain;
    while (*d != '\0' && s->why[0] == '\0') {
        size_t len = strcspn(d, ",");
        if (X509_check_host(x, d, len, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) != 1)
            snprintf(s->why, sizeof s->why, "the certificate in %.200s is not for %.*s", p->chain, (int)(len < 253 ? len : 253), d);
        d += len + (d[len] == ',');
    }
    if (s->why[0] == '\0' && (key == NULL || X509_check_private_key(x, key) != 1))
        snprintf(s->why, sizeof s->why, "%.200s is not the key of the certificate in %.200s", p->key, p->chain);
    s->not_before = asn1_time_unix(X509_get0_notBefore(x));
    s->not_after = asn1_time_unix(X509_get0_notAfter(x));
    if (s->why[0] == '\0' && s->not_after <= clock_now_s())
        snprintf(s->why, sizeof s->why, "the certificate in %.300s has expired", p->chain);
    if (s->why[0] == '\0') {
        s->usable = 1;
        s->renew_at = s->not_before + (s->not_after - s->not_before) * 2 / 3;
        s->leaf_pem = leaf_to_pem(x);
    }
    EVP_PKEY_free(key);
    X509_free(x);
}

static void iso_time(int64_t t, char *out, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static acme_config acme_settings(const certd *c)
{
    return (acme_config){.directory_url = c->cfg->acme_directory,
                         .ca_file = c->cfg->acme_ca_file[0] ? c->cfg->acme_ca_file : NULL,
                         .contact_email = c->cfg->acme_email[0] ? c->cfg->acme_email : NULL,
                         .stop = &c->stop,
                         .timeout_s = ACME_TIMEOUT_S};
}

/* When the CA's renewal information says to renew, if earlier than
 * renew_at: a random moment of its window (RFC 9773 §4.2), so that many
 * servers of one CA do not all come at once. */
static int64_t renewal_info(const certd *c, const chain_state *s)
{
    acme_config ac = acme_settings(c);
    int64_t start = 0, end = 0;
    char why[512];
    int r = acme_renewal_window(&ac, s->leaf_pem, &start, &end, why, sizeof why);
    if (r < 0)
        log_warn("ACME: no renewal information: %s", why);
    if (r != 1 || end < start)
        return s->renew_at;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = 0;
    int64_t at = start + (end > start ? (int64_t)(rnd % (uint64_t)(end - start)) : 0);
    return at < s->renew_at ? at : s->renew_at;
}

/* One order: a new key, the chain, both written, every listener told. */
static int obtain(certd *c, const cert_paths *p, EVP_PKEY *account, char *why, size_t size)
{
    const char *names[MAX_DOMAINS];
    char list[1024];
    snprintf(list, sizeof list, "%s", c->cfg->domain);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t != NULL && n < MAX_DOMAINS; t = strtok_r(NULL, ",", &save))
        names[n++] = t;
    EVP_PKEY *key = acme_key_new();
    if (key == NULL) {
        snprintf(why, size, "cannot make a certificate key");
        return -1;
    }
    acme_config ac = acme_settings(c);
    acme_http01 http01 = {.put = certd_challenge_put, .drop = certd_challenge_drop, .arg = c};
    char *chain = NULL;
    int rc = acme_obtain(&ac, account, key, names, n, &http01, &chain, why, size);
    if (rc == 0)
        rc = write_key(p->key, key, why, size) == 0 &&
                     write_file_atomic(p->chain, chain, strlen(chain), 0644, why, size) == 0
                 ? 0
                 : -1;
    free(chain);
    EVP_PKEY_free(key);
    if (rc != 0)
        return -1;
    if (c->publish != NULL)
        bus_publish_cert(c->publish, p->chain);
    door_reload_certificates();
    return 0;
}

static int take_renew_request(certd *c)
{
    pthread_mutex_lock(&c->lock);
    int asked = c->renew_now;
    c->renew_now = 0;
    pthread_mutex_unlock(&c->lock);
    return asked;
}

static int make_dir(const char *path, char *why, size_t size)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(why, size, "cannot make the directory %.300s (--certs): %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void *certd_cert_main(void *arg)
{
    certd *c = arg;
    cert_paths p;
    snprintf(p.account, sizeof p.account, "%s/" CONFIG_ACME_ACCOUNT_KEY, c->cfg->certs);
    snprintf(p.key, sizeof p.key, "%s", c->cfg->key_path);
    snprintf(p.chain, sizeof p.chain, "%s", c->cfg->cert_path);
    EVP_PKEY *account = NULL;
    int failures = 0;
    int64_t ari_next = 0, ari_due = 0;
    char why[1024];
    while (!atomic_load(&c->stop)) {
        chain_state s;
        inspect(c, &p, &s);
        int64_t now = clock_now_s();
        int64_t due = s.usable ? s.renew_at : now;
        if (s.usable && s.leaf_pem != NULL && now >= ari_next) {
            ari_due = renewal_info(c, &s);
            ari_next = now + ARI_EVERY_S;
        }
        if (s.usable && ari_due > 0 && ari_due < due)
            due = ari_due;
        free(s.leaf_pem);
        atomic_store(c->m_not_after, s.usable ? s.not_after : 0);
        int forced = take_renew_request(c);
        if (forced || due <= now) {
            const char *reason = forced ? "asked to renew (SIGUSR1)" : s.usable ? "the certificate is due for renewal" : s.why;
            log_info("ACME: %s: ordering a certificate for %s from %s", reason, c->cfg->domain, c->cfg->acme_directory);
            why[0] = '\0';
            if ((account != NULL || (make_dir(c->cfg->certs, why, sizeof why) == 0 &&
                                     (account = account_key(&p, why, sizeof why)) != NULL)) &&
                obtain(c, &p, account, why, sizeof why) == 0) {
                chain_state got;
                inspect(c, &p, &got);
                char until[32], renew[32];
                iso_time(got.not_after, until, sizeof until);
                iso_time(got.renew_at, renew, sizeof renew);
                free(got.leaf_pem);
                log_info("ACME: new certificate for %s in %s, valid until %s, to be renewed from %s", c->cfg->domain,
                         p.chain, until, renew);
                atomic_fetch_add(c->m_orders_ok, 1);
                failures = 0;
                ari_next = ari_due = 0;
                continue;
            }
            if (atomic_load(&c->stop))
                break;
            atomic_fetch_add(c->m_orders_failed, 1);
            int64_t backoff = BACKOFF_FIRST_S << (failures < 9 ? failures : 9);
            if (backoff > BACKOFF_MAX_S)
                backoff = BACKOFF_MAX_S;
            failures++;
            log_error("ACME: could not get a certificate for %s: %s; trying again in %lld s (%s)", c->cfg->domain, why,
                      (long long)backoff,
                      s.usable ? "the current certificate stays in use" : "a temporary self-signed certificate is served meanwhile");
            certd_sleep(c, backoff * 1000, 1);
            continue;
        }
        int64_t wait = due - now < CHECK_MAX_S ? due - now : CHECK_MAX_S;
        certd_sleep(c, wait * 1000, 1);
    }
    EVP_PKEY_free(account);
    return NULL;
}
