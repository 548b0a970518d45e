/*
 * authn.h - who is calling: the one credential parser of every service.
 *
 * Accepts `Authorization: Bearer <jwt>`, `Authorization: Basic base64(u:p)`
 * and, where the caller allows it (/sse only), a JWT passed as the
 * `access_token` query parameter.  A credential passes only when the user
 * exists, is not revoked, and (for a JWT) still belongs to the tenant the
 * token names: a user moved to another tenant must log in again, so an old
 * token can never read the old tenant's events.
 */
#ifndef BROKER_AUTHN_H
#define BROKER_AUTHN_H

#include "credcache.h"
#include "ratelimit.h"
#include "store.h"
#include "token.h"

typedef struct authn {
    store *store;
    const char *jwt_secret;
    credcache *basic_cache;
    /* Failed password checks per username and per client address (logins,
     * and Basic credentials the cache does not know); NULL = no limit.  An
     * attempt whose user's or address's bucket is empty gets AUTHN_LIMITED
     * without an Argon2id verification. */
    ratelimit *failed_by_user, *failed_by_address;
} authn;

typedef struct authn_identity {
    char username[TOKEN_NAME_MAX + 1];
    char tenant[TOKEN_NAME_MAX + 1];
} authn_identity;

typedef enum authn_result {
    AUTHN_OK = 0,
    AUTHN_DENIED = 1, /* answer 401 with *why */
    AUTHN_FAULT = 2,  /* the store failed: answer 500 */
    AUTHN_LIMITED = 3, /* too many failed attempts: answer 429 with Retry-After: authn_retry_after() */
    AUTHN_BUSY = 4,    /* the password checks are backlogged: answer 503 with Retry-After: 1 */
} authn_result;

/* The HTTP status of a result: 200, 401, 429, 503 or 500. */
unsigned authn_status(authn_result r);
/* After AUTHN_LIMITED or AUTHN_BUSY: the seconds until the calling thread's caller may try
 * again (the Retry-After value). */
long authn_retry_after(void);

struct _u_response;
/* Answers a refused credential on the request/response server: 401, 429
 * with Retry-After, or 500, with `why`.  Returns U_CALLBACK_COMPLETE. */
int authn_reply_refusal(struct _u_response *resp, authn_result r, const char *why);

/* `authorization` is the Authorization header (may be NULL); `access_token`
 * the query parameter (NULL where not accepted); `address` the client's
 * (http_client_address; NULL: not limited by address). */
authn_result authn_check(const authn *a, const char *authorization, const char *access_token, const char *address,
                         authn_identity *out, const char **why);

/* Checks username/password against the store (Argon2, no cache): for /login. */
authn_result authn_password(const authn *a, const char *username, const char *password, const char *address,
                            store_user *user_out, const char **why);

/* broker_auth_failures_total: registers every kind at start, so that a
 * dashboard sees zeros rather than no series; the admin endpoints count a
 * wrong or missing admin_token with authn_count_admin_failure(). */
void authn_metrics_init(void);
void authn_count_admin_failure(void);

#endif
