/*
 * fuzz_token.c - libFuzzer target for JWT verification.
 *
 * The first byte picks a mode:
 *   even: the rest is a token string given to token_verify as is;
 *   odd:  the rest is a JWT payload, signed correctly with HS256 by this
 *         target, so that the fuzzer gets past the signature check and
 *         reaches claim handling (iss, sub, tenant, iat, exp).
 * Properties: no crash; an accepted token has non-empty, bounded, terminated
 * sub and tenant and an exp in the future; a refusal carries a reason.  A
 * token with any alg but HS256 is never accepted (the header of mode "odd"
 * is picked by the second byte).
 */
#include "clock.h"
#include "log.h"
#include "token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "REQUIRE failed %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static const char SECRET[] = "fuzz-secret";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init("fuzz_token", "error", NULL);
    return 0;
}

static size_t b64url(char *out, const unsigned char *in, size_t len)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[n] = '\0';
    return (size_t)n;
}

static void check_verify(const char *tok, int hs256)
{
    token_claims c;
    const char *why = NULL;
    int rc = token_verify(SECRET, tok, &c, &why);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        REQUIRE(why != NULL && why[0] != '\0');
        return;
    }
    REQUIRE(hs256);
    REQUIRE(memchr(c.sub, '\0', sizeof c.sub) != NULL && c.sub[0] != '\0');
    REQUIRE(memchr(c.tenant, '\0', sizeof c.tenant) != NULL && c.tenant[0] != '\0');
    REQUIRE(c.exp > clock_now_s() - 5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 16384)
        return 0;
    if ((data[0] & 1) == 0) {
        char *tok = malloc(size);
        if (tok == NULL)
            return 0;
        memcpy(tok, data + 1, size - 1);
        tok[size - 1] = '\0';
        /* A random string is not signed with our secret, unless the fuzzer
         * found an HMAC collision; treat it as possibly HS256. */
        check_verify(tok, 1);
        free(tok);
        return 0;
    }
    static const char *const headers[] = {
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"alg\":\"HS256\"}",  "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"typ\":\"JWT\"}",    "{\"alg\":\"hs256\",\"typ\":\"JWT\"}",
    };
    size_t h = data[1] % (sizeof headers / sizeof headers[0]);
    int hs256 = h < 2;
    const unsigned char *payload = data + 2;
    size_t plen = size - 2;
    size_t cap = 4 * (strlen(headers[h]) + plen + 64) / 3 + 256;
    char *tok = malloc(cap);
    if (tok == NULL)
        return 0;
    size_t n = b64url(tok, (const unsigned char *)headers[h], strlen(headers[h]));
    tok[n++] = '.';
    n += b64url(tok + n, payload, plen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    const EVP_MD *md = h == 3 ? EVP_sha512() : EVP_sha256();
    HMAC(md, SECRET, (int)strlen(SECRET), (const unsigned char *)tok, n, mac, &mac_len);
    tok[n++] = '.';
    if (h != 2) /* alg none: empty signature */
        n += b64url(tok + n, mac, mac_len);
    tok[n] = '\0';
    check_verify(tok, hs256);
    free(tok);
    return 0;
}
