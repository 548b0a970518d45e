/*
 * authn.c - Bearer, Basic and access_token credentials against the store.
 */
#include "authn.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "password.h"

#include <pthread.h>
#include <stdio.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <orcania.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BASIC_MAX 1024 /* longest base64 credential accepted */

/* broker_auth_failures_total by kind: a rising "password" is a guessing
 * attack on logins, a rising "jwt" stale or forged tokens. */
enum { FAIL_PASSWORD, FAIL_JWT, FAIL_BASIC, FAIL_MISSING, FAIL_ADMIN_TOKEN, FAIL_KINDS };
static metric_value *failures[FAIL_KINDS];
static pthread_once_t failures_once = PTHREAD_ONCE_INIT;

static void failures_register(void)
{
    static const char *const kinds[FAIL_KINDS] = {"password", "jwt", "basic", "missing", "admin_token"};
    for (int k = 0; k < FAIL_KINDS; k++) {
        char name[96];
        snprintf(name, sizeof name, "broker_auth_failures_total{kind=\"%s\"}", kinds[k]);
        failures[k] = metrics_counter(name, "credentials refused, by kind (a store fault is not counted)");
    }
}

static authn_result counted(authn_result r, int kind)
{
    if (r == AUTHN_DENIED) {
        pthread_once(&failures_once, failures_register);
        atomic_fetch_add(failures[kind], 1);
    }
    return r;
}

void authn_count_admin_failure(void)
{
    counted(AUTHN_DENIED, FAIL_ADMIN_TOKEN);
}

void authn_metrics_init(void)
{
    pthread_once(&failures_once, failures_register);
}

static __thread long retry_after_s;

unsigned authn_status(authn_result r)
{
    switch (r) {
    case AUTHN_OK:
        return 200;
    case AUTHN_DENIED:
        return 401;
    case AUTHN_LIMITED:
        return 429;
    case AUTHN_BUSY:
        return 503;
    case AUTHN_FAULT:
        break;
    }
    return 500;
}

long authn_retry_after(void)
{
    return retry_after_s;
}

int authn_reply_refusal(struct _u_response *resp, authn_result r, const char *why)
{
    if (r == AUTHN_LIMITED || r == AUTHN_BUSY)
        return http_reply_retry_after(resp, authn_status(r), retry_after_s, why);
    return http_reply_error(resp, authn_status(r), "%s", why);
}

static authn_result user_usable(const authn *a, const char *username, store_user *user, const char **why)
{
    store_status st = store_user_get(a->store, username, user);
    if (st == STORE_NOT_FOUND) {
        *why = "unknown user";
        return AUTHN_DENIED;
    }
    if (st != STORE_OK) {
        *why = "the user store is unavailable";
        return AUTHN_FAULT;
    }
    if (user->revoked) {
        store_user_clear(user);
        *why = "user is revoked";
        return AUTHN_DENIED;
    }
    return AUTHN_OK;
}

static void identity_set(authn_identity *out, const store_user *u)
{
    snprintf(out->username, sizeof out->username, "%s", u->username);
    snprintf(out->tenant, sizeof out->tenant, "%s", u->tenant_name);
}

static authn_result check_bearer(const authn *a, const char *jwt, authn_identity *out, const char **why)
{
    token_claims claims;
    store_user user;
    if (token_verify(a->jwt_secret, jwt, &claims, why) != 0)
        return AUTHN_DENIED;
    authn_result r = user_usable(a, claims.sub, &user, why);
    if (r != AUTHN_OK)
        return r;
    if (strcmp(user.tenant_name, claims.tenant) != 0) {
        *why = "token is stale: the user's tenant changed, log in again";
        store_user_clear(&user);
        return AUTHN_DENIED;
    }
    if (claims.gen != user.token_gen) {
        *why = "token was voided (the user was revoked or its password changed): log in again";
        store_user_clear(&user);
        return AUTHN_DENIED;
    }
    identity_set(out, &user);
    store_user_clear(&user);
    return AUTHN_OK;
}

/* A hash of a random password, made once: an unknown user's password is
 * verified against it, so that a login for a name that does not exist costs
 * one Argon2id verification like any other and its answer's timing does not
 * tell which usernames exist. */
static char *dummy;
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void dummy_make(void)
{
    unsigned char raw[16];
    char text[33];
    if (RAND_bytes(raw, sizeof raw) != 1)
        memset(raw, 0x5a, sizeof raw); /* still a hash that costs the same; nobody logs in as no one */
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(text + 2 * i, 3, "%02x", raw[i]);
    dummy = password_hash(text);
}

/* Checks `password` for `username` at the cost of one Argon2id verification
 * whatever the outcome.  Unknown user, wrong password and revoked user with
 * a wrong password all answer "wrong username or password"; only a caller
 * who knows the password learns that the user is revoked. */
static authn_result password_matches(const authn *a, const char *username, const char *password, store_user *user,
                                     const char **why)
{
    store_status st = store_user_get(a->store, username, user);
    if (st != STORE_OK && st != STORE_NOT_FOUND) {
        *why = "the user store is unavailable";
        return AUTHN_FAULT;
    }
    pthread_once(&dummy_once, dummy_make);
    int ok = password_verify_bounded(st == STORE_NOT_FOUND ? dummy : user->password_hash, password);
    if (ok == PASSWORD_BUSY) {
        if (st == STORE_OK)
            store_user_clear(user);
        retry_after_s = 1;
        *why = "the server is busy checking passwords; retry (Retry-After)";
        return AUTHN_BUSY;
    }
    if (st == STORE_NOT_FOUND) {
        *why = "wrong username or password";
        return AUTHN_DENIED;
    }
    if (!ok) {
        store_user_clear(user);
        *why = "wrong username or password";
        return AUTHN_DENIED;
    }
    if (user->revoked) {
        store_user_clear(user);
        *why = "user is revoked";
        return AUTHN_DENIED;
    }
    return AUTHN_OK;
}


/* password_matches() behind the buckets of failed attempts of the client's
 * address and of the user: it runs while both have a token, and a wrong
 * password takes one of each (ratelimit.h: a right one takes nothing). */
static authn_result password_matches_limited(const authn *a, const char *username, const char *password,
                                             const char *address, store_user *user, const char **why)
{
    size_t len = strlen(username), alen = address != NULL ? strlen(address) : 0;
    long wait = address != NULL ? ratelimit_check(a->failed_by_address, address, alen) : 0;
    if (wait > 0) {
        retry_after_s = wait;
        *why = "too many failed attempts from this address: try again later (Retry-After)";
        return AUTHN_LIMITED;
    }
    if ((wait = ratelimit_check(a->failed_by_user, username, len)) > 0) {
        retry_after_s = wait;
        *why = "too many failed attempts for this user: try again later (Retry-After)";
        return AUTHN_LIMITED;
    }
    authn_result r = password_matches(a, username, password, user, why);
    if (r == AUTHN_DENIED) {
        ratelimit_fail(a->failed_by_user, username, len);
        if (address != NULL)
            ratelimit_fail(a->failed_by_address, address, alen);
    }
    return r;
}

authn_result authn_password(const authn *a, const char *username, const char *password, const char *address,
                            store_user *user_out, const char **why)
{
    return counted(password_matches_limited(a, username, password, address, user_out, why), FAIL_PASSWORD);
}

static authn_result check_basic(const authn *a, const char *b64, const char *address, authn_identity *out,
                                const char **why)
{
    unsigned char decoded[BASIC_MAX];
    size_t len = 0, b64len = strlen(b64);
    if (b64len == 0 || b64len >= BASIC_MAX || !o_base64_decode((const unsigned char *)b64, b64len, NULL, &len) ||
        len >= sizeof decoded || !o_base64_decode((const unsigned char *)b64, b64len, decoded, &len)) {
        *why = "malformed Basic credentials: expected base64(username:password)";
        return AUTHN_DENIED;
    }
    decoded[len] = '\0';
    char *colon = memchr(decoded, ':', len);
    if (colon == NULL || strlen((char *)decoded) != len) {
        *why = "malformed Basic credentials: expected base64(username:password)";
        return AUTHN_DENIED;
    }
    *colon = '\0';
    const char *username = (const char *)decoded, *password = colon + 1;
    store_user user;
    authn_result r = user_usable(a, username, &user, why);
    if (r == AUTHN_OK && credcache_check(a->basic_cache, username, password, user.password_hash)) {
        identity_set(out, &user); /* verified before and unchanged since: no Argon2 */
        store_user_clear(&user);
    } else if (r != AUTHN_FAULT) { /* a store that does not answer is not asked twice */
        if (r == AUTHN_OK)
            store_user_clear(&user);
        /* Not remembered (or unknown, or revoked): the full check, at the same
         * cost and with the same answers as a login. */
        r = password_matches_limited(a, username, password, address, &user, why);
        if (r == AUTHN_OK) {
            credcache_remember(a->basic_cache, username, password, user.password_hash);
            identity_set(out, &user);
            store_user_clear(&user);
        }
    }
    OPENSSL_cleanse(decoded, sizeof decoded);
    return r;
}

static authn_result check_header(const authn *a, const char *authorization, const char *access_token,
                                 const char *address, authn_identity *out, const char **why)
{
    if (authorization != NULL && authorization[0] != '\0') {
        if (strncasecmp(authorization, "Bearer ", 7) == 0)
            return counted(check_bearer(a, authorization + 7 + strspn(authorization + 7, " "), out, why), FAIL_JWT);
        if (strncasecmp(authorization, "Basic ", 6) == 0)
            return counted(check_basic(a, authorization + 6 + strspn(authorization + 6, " "), address, out, why), FAIL_BASIC);
        *why = "unsupported Authorization scheme: use Bearer <jwt> or Basic";
        return counted(AUTHN_DENIED, FAIL_MISSING);
    }
    if (access_token != NULL && access_token[0] != '\0')
        return counted(check_bearer(a, access_token, out, why), FAIL_JWT);
    *why = "missing credentials: send Authorization: Bearer <jwt> or Basic";
    return counted(AUTHN_DENIED, FAIL_MISSING);
}

/* Every path reads credentials here, whatever its HTTP parser left around
 * them: a header value's trailing spaces and tabs are not part of it
 * (RFC 9110, 5.5), and some parsers keep them. */
authn_result authn_check(const authn *a, const char *authorization, const char *access_token, const char *address,
                         authn_identity *out, const char **why)
{
    size_t len = authorization != NULL ? strlen(authorization) : 0;
    if (len == 0 || (authorization[len - 1] != ' ' && authorization[len - 1] != '\t'))
        return check_header(a, authorization, access_token, address, out, why);
    while (len > 0 && (authorization[len - 1] == ' ' || authorization[len - 1] == '\t'))
        len--;
    char *trimmed = strndup(authorization, len);
    if (trimmed == NULL) {
        *why = "the server is out of memory";
        return AUTHN_FAULT;
    }
    authn_result r = check_header(a, trimmed, access_token, address, out, why);
    free(trimmed);
    return r;
}
