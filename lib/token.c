/*
 * token.c - issue and verify HS256 JWTs with libjwt.
 */
#include "token.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <orcania.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_ISSUER "broker"

char *token_issue(const char *secret, const char *username, const char *tenant, long long gen, long expiry_s)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    int64_t now = clock_now_s();
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", username) == 0 && jwt_add_grant(jwt, "tenant", tenant) == 0 &&
        jwt_add_grant(jwt, "iss", TOKEN_ISSUER) == 0 && jwt_add_grant_int(jwt, "iat", (long)now) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)(now + expiry_s)) == 0 && jwt_add_grant_int(jwt, "gen", (long)gen) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        out = jwt_encode_str(jwt);
    if (out == NULL)
        log_error("token: could not sign a JWT");
    jwt_free(jwt);
    return out;
}

static int copy_claim(jwt_t *jwt, const char *name, char *dst, size_t size)
{
    const char *v = jwt_get_grant(jwt, name);
    if (v == NULL || v[0] == '\0' || strlen(v) >= size)
        return -1;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* 1 when the token's header says exactly "alg":"HS256". */
static int header_alg_is_hs256(const char *token)
{
    const char *dot = strchr(token, '.');
    unsigned char header[512];
    size_t len = 0;
    if (dot == NULL || dot == token || (size_t)(dot - token) > 600 ||
        !o_base64url_decode((const unsigned char *)token, (size_t)(dot - token), NULL, &len) || len >= sizeof header ||
        !o_base64url_decode((const unsigned char *)token, (size_t)(dot - token), header, &len))
        return 0;
    json_t *h = json_loadb((const char *)header, len, 0, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    int ok = alg != NULL && strcmp(alg, "HS256") == 0;
    json_decref(h);
    return ok;
}

int token_verify(const char *secret, const char *token, token_claims *out, const char **why)
{
    jwt_t *jwt = NULL;
    int rc = -1;
    *why = "invalid token";
    if (token == NULL || token[0] == '\0' || strlen(token) > 8192) {
        *why = "missing or oversized token";
        return -1;
    }
    /* libjwt reads the header's alg case-insensitively: require it exactly. */
    if (!header_alg_is_hs256(token)) {
        *why = "invalid token: algorithm must be HS256";
        return -1;
    }
    /* Decoding with the key verifies the signature with whatever alg the
     * header names; pin HS256 afterwards so "none" or another alg never passes. */
    if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || jwt == NULL) {
        *why = "invalid token: bad format or signature";
        goto done;
    }
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "invalid token: algorithm must be HS256";
        goto done;
    }
    const char *iss = jwt_get_grant(jwt, "iss");
    if (iss == NULL || strcmp(iss, TOKEN_ISSUER) != 0) {
        *why = "invalid token: wrong issuer";
        goto done;
    }
    if (copy_claim(jwt, "sub", out->sub, sizeof out->sub) != 0 ||
        copy_claim(jwt, "tenant", out->tenant, sizeof out->tenant) != 0) {
        *why = "invalid token: missing sub or tenant claim";
        goto done;
    }
    errno = 0;
    out->exp = jwt_get_grant_int(jwt, "exp");
    if (errno != 0 || out->exp <= 0) {
        *why = "invalid token: missing exp claim";
        goto done;
    }
    int64_t now = clock_now_s();
    if (now >= out->exp) {
        *why = "token expired: log in again";
        goto done;
    }
    /* A token from the future was not issued by this deployment's clock: a
     * forged or mis-stamped one that would otherwise outlive every
     * revocation stamped before it.  The skew allows for the services'
     * clocks being a little apart. */
    errno = 0;
    out->iat = jwt_get_grant_int(jwt, "iat");
    if (errno == 0 && out->iat > now + TOKEN_CLOCK_SKEW_S) {
        *why = "invalid token: issued in the future (iat)";
        goto done;
    }
    if (errno != 0)
        out->iat = 0;
    errno = 0;
    out->gen = jwt_get_grant_int(jwt, "gen");
    if (errno != 0)
        out->gen = 0;
    errno = 0;
    int64_t nbf = jwt_get_grant_int(jwt, "nbf");
    if (errno == 0 && nbf > now + TOKEN_CLOCK_SKEW_S) {
        *why = "invalid token: not valid yet (nbf)";
        goto done;
    }
    rc = 0;
done:
    jwt_free(jwt);
    return rc;
}
