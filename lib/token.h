/*
 * token.h - Broker's JWTs: HS256, claims sub, tenant, iat, exp, iss "broker".
 *
 * libjwt 1.10 takes the algorithm from the token's own header and does not
 * check exp, so verification pins HS256 after decoding and checks exp by hand
 * against the corrected clock (clock.h).
 */
#ifndef BROKER_TOKEN_H
#define BROKER_TOKEN_H

#include <stdint.h>

#define TOKEN_NAME_MAX 128
/* How far in the future a token's iat or nbf may lie and still be taken. */
#define TOKEN_CLOCK_SKEW_S 60

typedef struct token_claims {
    char sub[TOKEN_NAME_MAX + 1];
    char tenant[TOKEN_NAME_MAX + 1];
    int64_t iat;
    int64_t exp;
    int64_t gen; /* the user's token generation at issue ("gen"; 0 when absent) */
} token_claims;

/* A malloc'd signed token, or NULL on failure. */
char *token_issue(const char *secret, const char *username, const char *tenant, long long gen, long expiry_s);

/* 0 when `jwt` is a valid, unexpired HS256 token of ours whose iat and nbf
 * (when present) are not more than TOKEN_CLOCK_SKEW_S ahead of the corrected
 * clock; -1 otherwise with *why set to a static reason fit for a client. */
int token_verify(const char *secret, const char *jwt, token_claims *out, const char **why);

#endif
