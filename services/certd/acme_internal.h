/*
 * acme_internal.h - what the three files of the ACME client share, and the
 * unit test with them; the rest of certd sees only acme.h.
 *
 * Two layers: the encodings and signatures (acme_jws.c), pure functions with
 * no network and no clock, so that each can be checked against OpenSSL on its
 * own; and the session with the CA (acme_session.c), the transport that
 * acme.c's protocol steps are written with.  Strings returned are malloc'd and
 * owned by the caller; NULL means out of memory or input OpenSSL refused.
 */
#ifndef BROKER_CERTD_ACME_INTERNAL_H
#define BROKER_CERTD_ACME_INTERNAL_H

#include "acme.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 7638 thumbprint of a P-256 key: base64url(SHA-256) is 43 characters. */
#define ACME_THUMBPRINT_LEN 43
/* An ES256 signature on the wire (RFC 7518 3.4): R and S, 32 bytes each. */
#define ACME_ES256_SIG_LEN 64
/* The most a CA's answer may weigh: a chain is a few KiB, a hostile CA must not fill memory. */
#define ACME_MAX_BODY (1024 * 1024)

/* base64url without padding (RFC 4648 5) of data[0..len). */
char *acme_b64url(const unsigned char *data, size_t len);

/* 1 when `key` is an EC key on P-256 (the only account key this client signs with), else 0. */
int acme_key_is_p256(EVP_PKEY *key);

/* The public JWK of a P-256 key, members in RFC 7638 order with no whitespace:
 * {"crv":"P-256","kty":"EC","x":"...","y":"..."} -- also the thumbprint's input. */
char *acme_jwk_json(EVP_PKEY *key);

/* The RFC 7638 thumbprint of the key's JWK into out[ACME_THUMBPRINT_LEN + 1]; 0 or -1. */
int acme_jwk_thumbprint(EVP_PKEY *key, char *out);

/* ES256 over data[0..len): sig gets R||S, each left-padded to 32 bytes; 0 or -1. */
int acme_es256_sign(EVP_PKEY *key, const unsigned char *data, size_t len, unsigned char sig[ACME_ES256_SIG_LEN]);

/* A flattened JWS (RFC 7515 7.2.2) {"protected","payload","signature"} signed by `key`, whose
 * protected header has alg ES256, `nonce`, `url`, and `kid` (the account URL) or, when kid is
 * NULL, the key's jwk (newAccount).  `payload` is JSON text, or "" for POST-as-GET. */
char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const char *payload);

/* A CSR for `domains` (subject CN = the first when it fits in 64 characters, subjectAltName with
 * every one as DNS) signed SHA-256 by `key`, DER then base64url (newOrder's finalize "csr"). */
char *acme_csr_b64url(EVP_PKEY *key, const char *const *domains, size_t n);

/* The RFC 9773 certID of a PEM certificate (the first in `pem`):
 * base64url(Authority Key Identifier keyIdentifier) "." base64url(serial's DER content bytes).
 * NULL with `why` when it has no AKI or does not parse. */
char *acme_ari_cert_id(const char *pem, char *why, size_t why_size);

/* An RFC 3339 date-time ("2025-01-02T03:04:05Z", fractions and +hh:mm offsets allowed) as Unix
 * seconds; 0 or -1 if it does not parse. */
int acme_rfc3339_parse(const char *text, int64_t *out);

/* 1 when the public key of the first certificate in `pem` is `key`, 0 when it is another, -1 when
 * `pem` holds no certificate. */
int acme_chain_matches_key(const char *pem, EVP_PKEY *key);

/* ---- the session with the CA (acme_session.c) ---------------------------------------- */

/* One answer from the CA. */
typedef struct acme_response {
    long status;
    char *body; /* NUL-terminated, at most ACME_MAX_BODY */
    size_t len;
    int too_large;
    char *location;   /* the Location header, or NULL */
    long retry_after; /* seconds, 0 when none */
} acme_response;

typedef struct acme_session {
    const acme_config *cfg;
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    long long deadline_ms; /* CLOCK_MONOTONIC */
    int allow_http;        /* the directory itself is http:// (a test CA) */
    json_t *dir;
    char *nonce; /* latest unused Replay-Nonce */
    char *kid;   /* the account URL */
    EVP_PKEY *account_key;
    char thumbprint[ACME_THUMBPRINT_LEN + 1];
    char *why;
    size_t why_size;
} acme_session;

/* Opens a session for one call bounded by cfg->timeout_s (default 300 s); why[] is where every
 * failure of the session is written.  0, or -1 with why (then acme_session_close it anyway). */
int acme_session_open(acme_session *s, const acme_config *cfg, char *why, size_t why_size);
void acme_session_close(acme_session *s);

/* Writes the why-text; returns -1, so that `return acme_fail(s, ...)` reads as what it does. */
int acme_fail(acme_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* GET (payload NULL), HEAD (head 1) or POST of `payload` as JOSE JSON, no signing; `what` names the
 * step in the why ("the directory").  0 with *r filled whatever the status, -1 with why when no
 * answer came (connection, TLS, timeout, size, shutdown, a non-https URL). */
int acme_http(acme_session *s, const char *what, const char *url, const char *payload, int head, const char *accept,
              acme_response *r);
void acme_response_free(acme_response *r);
/* The body as JSON, NULL if it is not; decref it. */
json_t *acme_response_json(const acme_response *r);
/* A string member of a JSON object, NULL if absent or not a string. */
const char *acme_json_str(const json_t *obj, const char *key);

/* A problem document (RFC 7807) as "type: detail; <identifier>: type: detail ..." into out. */
void acme_problem_text(const json_t *problem, char *out, size_t size);
/* An error answer as the why: "<what> was refused: <problem>", with the status and Retry-After
 * when the CA asks to come back later (429, 503). Returns -1. */
int acme_refused(acme_session *s, const char *what, const acme_response *r);

/* A JWS-signed POST of `payload` ("" = POST-as-GET) with the account's kid (or its jwk before
 * the account is known), retrying badNonce with the nonce that answer carried.  0 with a
 * successful *r, -1 with why for a failure or an error answer. */
int acme_post(acme_session *s, const char *what, const char *url, const char *payload, const char *accept,
              acme_response *r);
/* acme_post whose answer must be a JSON object: *out (decref it), *location (free it) and
 * *retry_after (seconds, 0 = none) when not NULL. */
int acme_post_json(acme_session *s, const char *what, const char *url, const char *payload, json_t **out,
                   char **location, long *retry_after);
/* POST-as-GET `url` until its status is neither pending nor processing (nor `also` when not NULL),
 * waiting between polls as long as Retry-After says (capped at 10 s) or a second; bounded by the
 * session's deadline ("timed out waiting for <waiting_for>").  *out is the final object. */
int acme_poll(acme_session *s, const char *what, const char *url, const char *also, const char *waiting_for,
              json_t **out);

#endif
