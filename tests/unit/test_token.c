/*
 * test_token.c - JWT issue/verify: the claims Broker puts in, and every kind
 * of token it must refuse.
 *
 * Hostile tokens are built by hand (base64url header and payload, HMAC from
 * OpenSSL), not with libjwt, so that the test does not share the library's
 * idea of what a token is.  The corrected clock is process-global: a case
 * that moves it puts it back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "clock.h"
#include "log.h"
#include "token.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdint.h>

#define SECRET "test-secret-0123456789"

/* base64url without padding of data[0..len) appended to out. */
static void b64url_append(char *out, size_t cap, const unsigned char *data, size_t len)
{
    size_t enc_cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *enc = malloc(enc_cap);
    if (enc == NULL)
        abort();
    int n = EVP_EncodeBlock(enc, data, (int)len);
    while (n > 0 && enc[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        enc[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i];
    size_t used = strlen(out);
    if (used + (size_t)n + 1 > cap)
        abort();
    memcpy(out + used, enc, (size_t)n);
    out[used + (size_t)n] = '\0';
    free(enc);
}

/* A token header.payload.signature; `md` NULL means an empty signature. */
static char *make_token(const char *header, const char *payload, const EVP_MD *md, const char *key)
{
    size_t cap = 2 * (strlen(header) + strlen(payload)) + 256;
    char *tok = calloc(1, cap);
    if (tok == NULL)
        abort();
    b64url_append(tok, cap, (const unsigned char *)header, strlen(header));
    strcat(tok, ".");
    b64url_append(tok, cap, (const unsigned char *)payload, strlen(payload));
    size_t signed_len = strlen(tok);
    strcat(tok, ".");
    if (md != NULL) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        HMAC(md, key, (int)strlen(key), (const unsigned char *)tok, signed_len, mac, &mac_len);
        b64url_append(tok, cap, mac, mac_len);
    }
    return tok;
}

/* printf into a fresh malloc'd string. */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char *out = NULL;
    va_list ap;
    va_start(ap, f);
    int n = vasprintf(&out, f, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return out;
}

static const char HS256_HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* A payload with the claims Broker issues, `exp` seconds from now. */
static char *payload_with(const char *iss, const char *sub, const char *tenant, long long exp_from_now, int with_exp)
{
    long long now = (long long)clock_now_s();
    if (with_exp)
        return fmt("{\"sub\":\"%s\",\"tenant\":\"%s\",\"iss\":\"%s\",\"iat\":%lld,\"exp\":%lld}", sub, tenant, iss,
                   now, now + exp_from_now);
    return fmt("{\"sub\":\"%s\",\"tenant\":\"%s\",\"iss\":\"%s\",\"iat\":%lld}", sub, tenant, iss, now);
}

/* Verifies and expects a refusal with some reason. */
static int refused(const char *secret, const char *tok)
{
    token_claims c;
    const char *why = NULL;
    int rc = token_verify(secret, tok, &c, &why);
    if (rc == 0)
        return 0;
    return why != NULL && why[0] != '\0';
}

static int accepted(const char *secret, const char *tok)
{
    token_claims c;
    const char *why = NULL;
    int rc = token_verify(secret, tok, &c, &why);
    if (rc != 0)
        fprintf(stderr, "  token refused: %s\n", why ? why : "(no reason)");
    return rc == 0;
}

/* Decodes the payload segment of `tok` as JSON (to look at what was issued). */
static json_t *decode_payload(const char *tok)
{
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (dot2 == NULL)
        return NULL;
    size_t n = (size_t)(dot2 - dot1 - 1);
    char *b64 = calloc(1, n + 4);
    unsigned char *raw = calloc(1, n + 4);
    if (b64 == NULL || raw == NULL)
        abort();
    for (size_t i = 0; i < n; i++)
        b64[i] = dot1[1 + i] == '-' ? '+' : dot1[1 + i] == '_' ? '/' : dot1[1 + i];
    while (n % 4)
        b64[n++] = '=';
    int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    json_t *j = NULL;
    if (len > 0) {
        while (len > 0 && raw[len - 1] == '\0') /* EVP_DecodeBlock counts padding bytes */
            len--;
        j = json_loadb((const char *)raw, (size_t)len, 0, NULL);
    }
    free(b64);
    free(raw);
    return j;
}

static void case_roundtrip(void)
{
    clock_set_offset_ms(0);
    int64_t before = clock_now_s();
    char *tok = token_issue(SECRET, "alice", "tenant_1", 0, 3600);
    int64_t after = clock_now_s();
    CHECK(tok != NULL);
    if (tok == NULL)
        return;
    token_claims c;
    memset(&c, 0x5a, sizeof c);
    const char *why = NULL;
    CHECK_INT(token_verify(SECRET, tok, &c, &why), 0);
    CHECK_STR(c.sub, "alice");
    CHECK_STR(c.tenant, "tenant_1");
    CHECK(c.iat >= before && c.iat <= after);
    CHECK_INT(c.exp, c.iat + 3600);

    /* What is on the wire: HS256, iss "broker", integer iat/exp. */
    json_t *p = decode_payload(tok);
    CHECK(p != NULL);
    CHECK_STR(json_string_value(json_object_get(p, "iss")), "broker");
    CHECK_STR(json_string_value(json_object_get(p, "sub")), "alice");
    CHECK_STR(json_string_value(json_object_get(p, "tenant")), "tenant_1");
    CHECK(json_is_integer(json_object_get(p, "iat")));
    CHECK_INT(json_integer_value(json_object_get(p, "exp")), json_integer_value(json_object_get(p, "iat")) + 3600);
    json_decref(p);
    json_t *h = NULL;
    {
        /* the header is the first segment: reuse decode_payload on ".header." */
        const char *dot = strchr(tok, '.');
        char *fake = fmt(".%.*s.", (int)(dot - tok), tok);
        h = decode_payload(fake);
        free(fake);
    }
    CHECK_STR(json_string_value(json_object_get(h, "alg")), "HS256");
    json_decref(h);

    /* Another secret does not verify it. */
    CHECK(refused("another-secret", tok));
    free(tok);

    /* A hand-built token with the same claims verifies: the format is plain JWT. */
    char *pl = payload_with("broker", "bob", "t2", 60, 1);
    char *hand = make_token(HS256_HEADER, pl, EVP_sha256(), SECRET);
    CHECK(accepted(SECRET, hand));
    CHECK_INT(token_verify(SECRET, hand, &c, &why), 0);
    CHECK_STR(c.sub, "bob");
    CHECK_STR(c.tenant, "t2");
    free(hand);
    free(pl);

    /* Names up to TOKEN_NAME_MAX round-trip. */
    char longname[TOKEN_NAME_MAX + 1];
    memset(longname, 'n', TOKEN_NAME_MAX);
    longname[TOKEN_NAME_MAX] = '\0';
    tok = token_issue(SECRET, longname, longname, 0, 60);
    CHECK(tok != NULL);
    CHECK_INT(token_verify(SECRET, tok, &c, &why), 0);
    CHECK_STR(c.sub, longname);
    free(tok);
}

static void case_refuse_alg(void)
{
    clock_set_offset_ms(0);
    char *pl = payload_with("broker", "alice", "tenant_1", 3600, 1);

    /* alg none with an empty signature. */
    char *tok = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", pl, NULL, NULL);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* alg none, but an HS256 signature attached anyway. */
    tok = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", pl, EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* NONE / None spellings. */
    tok = make_token("{\"alg\":\"None\",\"typ\":\"JWT\"}", pl, NULL, NULL);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* Lower-case hs256, correctly signed: libjwt reads alg case-insensitively,
     * the contract does not (found by fuzz_token). */
    tok = make_token("{\"alg\":\"hs256\",\"typ\":\"JWT\"}", pl, EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* HS512 and HS384, correctly signed with the right secret. */
    tok = make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", pl, EVP_sha512(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    tok = make_token("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", pl, EVP_sha384(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* A header claiming HS256 but carrying an HS512 MAC. */
    tok = make_token(HS256_HEADER, pl, EVP_sha512(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* No alg at all. */
    tok = make_token("{\"typ\":\"JWT\"}", pl, EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* RS256 header with an HMAC over the "public key" (key-confusion style). */
    tok = make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", pl, EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    /* Sanity: the same payload with HS256 passes, so the refusals are about alg. */
    tok = make_token(HS256_HEADER, pl, EVP_sha256(), SECRET);
    CHECK(accepted(SECRET, tok));
    free(tok);
    free(pl);
}

static void case_refuse_signature(void)
{
    clock_set_offset_ms(0);
    /* Foreign secret. */
    char *pl = payload_with("broker", "alice", "tenant_1", 3600, 1);
    char *tok = make_token(HS256_HEADER, pl, EVP_sha256(), "someone-elses-secret");
    CHECK(refused(SECRET, tok));
    free(tok);
    free(pl);

    /* Tampered payload: a real token with its tenant changed, signature kept. */
    char *real = token_issue(SECRET, "alice", "tenant_1", 0, 3600);
    CHECK(real != NULL && accepted(SECRET, real));
    if (real != NULL) {
        json_t *p = decode_payload(real);
        CHECK(p != NULL);
        json_object_set_new(p, "tenant", json_string("tenant_2"));
        char *pj = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        const char *dot1 = strchr(real, '.'), *dot2 = strrchr(real, '.');
        char *forged = calloc(1, strlen(real) + strlen(pj) * 2 + 16);
        memcpy(forged, real, (size_t)(dot1 - real + 1));
        b64url_append(forged, strlen(real) + strlen(pj) * 2 + 16, (const unsigned char *)pj, strlen(pj));
        strcat(forged, dot2);
        CHECK(strcmp(forged, real) != 0);
        CHECK(refused(SECRET, forged));
        free(forged);
        free(pj);

        /* A flipped bit in the signature. */
        char *flip = strdup(real);
        char *sig = strrchr(flip, '.') + 1;
        sig[0] = sig[0] == 'A' ? 'B' : 'A';
        CHECK(refused(SECRET, flip));
        free(flip);

        /* The signature removed. */
        char *nosig = strdup(real);
        strrchr(nosig, '.')[1] = '\0';
        CHECK(refused(SECRET, nosig));
        free(nosig);
        free(real);
    }
}

static void case_refuse_expired(void)
{
    clock_set_offset_ms(0);
    char *tok = token_issue(SECRET, "alice", "tenant_1", 0, 60);
    CHECK(tok != NULL);
    CHECK(accepted(SECRET, tok));
    /* 30 s later: still valid. */
    clock_set_offset_ms(30 * 1000);
    CHECK(accepted(SECRET, tok));
    /* 61 s later: expired. */
    clock_set_offset_ms(61 * 1000);
    token_claims c;
    const char *why = NULL;
    CHECK_INT(token_verify(SECRET, tok, &c, &why), -1);
    CHECK_CONTAINS(why, "expired");
    /* A clock moved back makes it valid again: exp is read from the corrected clock. */
    clock_set_offset_ms(0);
    CHECK(accepted(SECRET, tok));
    free(tok);

    /* A token issued by a clock an hour ahead carries iat/exp an hour ahead,
     * and a clock an hour behind refuses it: it was issued in its future. */
    clock_set_offset_ms(3600 * 1000);
    tok = token_issue(SECRET, "alice", "tenant_1", 0, 60);
    CHECK_INT(token_verify(SECRET, tok, &c, &why), 0);
    CHECK(c.iat >= clock_now_s() - 5);
    clock_set_offset_ms(0);
    CHECK_INT(token_verify(SECRET, tok, &c, &why), -1);
    CHECK_CONTAINS(why, "future");
    free(tok);

    /* iat and nbf: a little ahead (within TOKEN_CLOCK_SKEW_S) is taken, more is not. */
    {
        long long now = (long long)clock_now_s();
        struct {
            const char *claims;
            long long at;
            int ok;
        } times[] = {
            {"iat", now + TOKEN_CLOCK_SKEW_S / 2, 1},
            {"iat", now + TOKEN_CLOCK_SKEW_S + 60, 0},
            {"nbf", now - 10, 1},
            {"nbf", now + TOKEN_CLOCK_SKEW_S + 60, 0},
        };
        for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
            char *p = strcmp(times[i].claims, "iat") == 0
                          ? fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld}",
                                times[i].at, now + 7200)
                          : fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"nbf\":%lld,"
                                "\"exp\":%lld}", now, times[i].at, now + 7200);
            char *t = make_token(HS256_HEADER, p, EVP_sha256(), SECRET);
            if (accepted(SECRET, t) != times[i].ok) {
                fprintf(stderr, "  %s %+lld s: expected %s\n", times[i].claims, times[i].at - now,
                        times[i].ok ? "accepted" : "refused");
                check_case_failures++;
            }
            free(t);
            free(p);
        }
    }

    /* A hand-built token whose exp is in the past. */
    char *pl = payload_with("broker", "alice", "tenant_1", -10, 1);
    tok = make_token(HS256_HEADER, pl, EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    free(pl);
    clock_set_offset_ms(0);
}

static void case_refuse_claims(void)
{
    clock_set_offset_ms(0);
    long long now = (long long)clock_now_s();
    struct {
        const char *what;
        char *payload;
    } bad[8];
    size_t n = 0;
    bad[n].what = "missing exp";
    bad[n++].payload = payload_with("broker", "alice", "tenant_1", 0, 0);
    bad[n].what = "wrong iss";
    bad[n++].payload = payload_with("not-broker", "alice", "tenant_1", 3600, 1);
    bad[n].what = "missing iss";
    bad[n++].payload = fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iat\":%lld,\"exp\":%lld}", now, now + 3600);
    bad[n].what = "missing sub";
    bad[n++].payload = fmt("{\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld}", now, now + 3600);
    bad[n].what = "missing tenant";
    bad[n++].payload = fmt("{\"sub\":\"alice\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld}", now, now + 3600);
    bad[n].what = "exp as a string";
    bad[n++].payload = fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":\"%lld\"}",
             now, now + 3600);
    bad[n].what = "sub not a string";
    bad[n++].payload = fmt("{\"sub\":7,\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld}", now,
             now + 3600);
    bad[n].what = "sub longer than TOKEN_NAME_MAX";
    {
        char name[TOKEN_NAME_MAX + 2];
        memset(name, 'x', TOKEN_NAME_MAX + 1);
        name[TOKEN_NAME_MAX + 1] = '\0';
        bad[n++].payload = payload_with("broker", name, "t", 3600, 1);
    }
    for (size_t i = 0; i < n; i++) {
        char *tok = make_token(HS256_HEADER, bad[i].payload, EVP_sha256(), SECRET);
        if (!refused(SECRET, tok)) {
            fprintf(stderr, "  accepted a token with %s\n", bad[i].what);
            check_case_failures++;
        }
        free(tok);
        free(bad[i].payload);
    }
}

static void case_refuse_garbage(void)
{
    clock_set_offset_ms(0);
    static const char *const junk[] = {
        "",
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9..",
        "!!!.@@@.###",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bm90IGpzb24.c2ln", /* payload "not json" */
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        if (!refused(SECRET, junk[i])) {
            fprintf(stderr, "  accepted junk token \"%s\"\n", junk[i]);
            check_case_failures++;
        }
    }
    /* NULL token. */
    token_claims c;
    const char *why = NULL;
    CHECK_INT(token_verify(SECRET, NULL, &c, &why), -1);
    CHECK(why != NULL);

    /* Payload that is JSON but not an object. */
    char *tok = make_token(HS256_HEADER, "[1,2,3]", EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
    tok = make_token(HS256_HEADER, "{", EVP_sha256(), SECRET);
    CHECK(refused(SECRET, tok));
    free(tok);
}

static void case_refuse_oversized(void)
{
    clock_set_offset_ms(0);
    /* A correctly signed token whose padding claim makes it larger than 8 KiB. */
    long long now = (long long)clock_now_s();
    size_t pad_len = 9000;
    char *pad = malloc(pad_len + 1);
    memset(pad, 'p', pad_len);
    pad[pad_len] = '\0';
    char *pl = fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld,\"pad\":\"%s\"}",
             now, now + 3600, pad);
    char *tok = make_token(HS256_HEADER, pl, EVP_sha256(), SECRET);
    CHECK(strlen(tok) > 8192);
    token_claims c;
    const char *why = NULL;
    CHECK_INT(token_verify(SECRET, tok, &c, &why), -1);
    CHECK_CONTAINS(why, "oversized");
    free(tok);
    free(pl);

    /* A megabyte of junk. */
    size_t big = 1 << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[big] = '\0';
    CHECK(refused(SECRET, huge));
    free(huge);

    /* The same padding but small enough is fine: the limit is about size. */
    pad[200] = '\0';
    pl = fmt("{\"sub\":\"alice\",\"tenant\":\"t\",\"iss\":\"broker\",\"iat\":%lld,\"exp\":%lld,\"pad\":\"%s\"}",
             now, now + 3600, pad);
    tok = make_token(HS256_HEADER, pl, EVP_sha256(), SECRET);
    CHECK(accepted(SECRET, tok));
    free(tok);
    free(pl);
    free(pad);
}

int main(void)
{
    log_init("test_token", "error", NULL);
    RUN_CASE(case_roundtrip);
    RUN_CASE(case_refuse_alg);
    RUN_CASE(case_refuse_signature);
    RUN_CASE(case_refuse_expired);
    RUN_CASE(case_refuse_claims);
    RUN_CASE(case_refuse_garbage);
    RUN_CASE(case_refuse_oversized);
    clock_set_offset_ms(0);
    log_close();
    return check_summary();
}
