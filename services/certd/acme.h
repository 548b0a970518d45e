/*
 * acme.h - the ACME (RFC 8555) client certd uses to get its certificates,
 * HTTP-01 challenges only.
 *
 * One call, acme_obtain(), runs a whole issuance: directory, account (created
 * or found), order, one HTTP-01 challenge per name, finalization with a CSR,
 * download.  It blocks (certd calls it from a worker thread) and is bounded in
 * time by the config; it keeps no state between calls, so that a failed
 * attempt leaves nothing behind and the caller owns the retry policy (backoff,
 * rate limits): the why-text says what the CA said, including any Retry-After.
 *
 * The HTTP-01 answers are served by whoever owns port 80 (the broker's front
 * door): acme_obtain only tells it, through acme_http01, which token to answer
 * with which key authorization, and when to stop.
 *
 * acme_renewal_window() asks the CA when to renew (RFC 9773, ARI) for CAs that
 * offer it; the caller falls back to its own rule (e.g. two thirds of the
 * lifetime) when it answers 0.
 */
#ifndef BROKER_CERTD_ACME_H
#define BROKER_CERTD_ACME_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

typedef struct acme_http01 {
    /* Publish the key authorization for `token` so that GET /.well-known/acme-challenge/<token> answers it; 0 or -1. */
    int (*put)(void *arg, const char *token, const char *key_authorization);
    /* The challenge is over: stop answering `token`. */
    void (*drop)(void *arg, const char *token);
    void *arg;
} acme_http01;

typedef struct acme_config {
    const char *directory_url; /* e.g. https://acme-v02.api.letsencrypt.org/directory */
    const char *ca_file;       /* CA bundle to trust for the directory's own HTTPS, NULL = system default */
    const char *contact_email; /* NULL = none */
    const _Atomic int *stop;   /* non-zero: give up as soon as possible (shutdown); may be NULL */
    int timeout_s;             /* bound on the whole acme_obtain (e.g. 300); each HTTP request is bounded too (30 s) */
} acme_config;

/* Gets a certificate for `domains` (n >= 1 DNS names) signed for `cert_key`, with the account of
 * `account_key` (EC P-256; the account is created if the CA does not know it, found if it does).
 * Blocking. 0 and *chain_pem (malloc'd PEM, leaf first, as downloaded; the caller frees it), or -1
 * with `why` saying what failed and where, e.g.
 *   "the directory https://...: could not connect: ..."
 *   "the order was refused: urn:ietf:params:acme:error:rejectedIdentifier: ..."
 *   "the challenge for example.test failed: urn:ietf:params:acme:error:connection: ..."
 *   "timed out waiting for the order to become valid"
 * Every token given to http01->put is dropped before it returns, whatever happened. */
int acme_obtain(const acme_config *cfg, EVP_PKEY *account_key, EVP_PKEY *cert_key, const char *const *domains,
                size_t n, const acme_http01 *http01, char **chain_pem, char *why, size_t why_size);

/* RFC 9773 ACME Renewal Information: when the directory offers renewalInfo, asks for the suggested
 * window of the certificate `leaf_pem` (its issuer must have put an Authority Key Identifier in it):
 * 1 and *start, *end (Unix seconds) filled; 0 when the directory offers none; -1 on error (why). */
int acme_renewal_window(const acme_config *cfg, const char *leaf_pem, int64_t *start, int64_t *end, char *why,
                        size_t why_size);

/* A fresh EC P-256 key (for an account or a certificate), NULL if OpenSSL fails; EVP_PKEY_free it. */
EVP_PKEY *acme_key_new(void);

#endif
