/*
 * acme_jws.c - the bytes ACME signs and sends: base64url, the account key's
 * JWK and thumbprint, ES256 JWS, the CSR, and the ARI certID.
 *
 * Pure functions over OpenSSL 3's EVP API (no deprecated EC_KEY calls), kept
 * apart from the protocol flow in acme.c so that the unit test can check each
 * one against OpenSSL on its own.  The two places where ACME differs from what
 * OpenSSL hands out are spelled out where they happen: signatures go on the
 * wire as raw R||S (RFC 7518 3.4), not DER; and base64url never has padding.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, timegm */
#endif
#include "acme.h"
#include "acme_internal.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define P256_COORD_LEN 32

char *acme_b64url(const unsigned char *data, size_t len)
{
    if (len > (size_t)INT32_MAX / 2)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

int acme_key_is_p256(EVP_PKEY *key)
{
    char group[64];
    if (key == NULL || !EVP_PKEY_is_a(key, "EC"))
        return 0;
    if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL))
        return 0;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* One affine coordinate of the public point, base64url of its 32 big-endian bytes. */
static char *coordinate_b64url(EVP_PKEY *key, const char *param)
{
    BIGNUM *bn = NULL;
    unsigned char buf[P256_COORD_LEN];
    char *out = NULL;
    if (EVP_PKEY_get_bn_param(key, param, &bn) && BN_bn2binpad(bn, buf, sizeof buf) == (int)sizeof buf)
        out = acme_b64url(buf, sizeof buf);
    BN_free(bn);
    return out;
}

char *acme_jwk_json(EVP_PKEY *key)
{
    if (!acme_key_is_p256(key))
        return NULL;
    char *x = coordinate_b64url(key, OSSL_PKEY_PARAM_EC_PUB_X);
    char *y = coordinate_b64url(key, OSSL_PKEY_PARAM_EC_PUB_Y);
    char *out = NULL;
    /* Written by hand, not by jansson: RFC 7638 fixes the member order and forbids whitespace,
     * and the same text is what the thumbprint hashes. */
    if (x != NULL && y != NULL && asprintf(&out, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y) < 0)
        out = NULL;
    free(x);
    free(y);
    return out;
}

int acme_jwk_thumbprint(EVP_PKEY *key, char *out)
{
    char *jwk = acme_jwk_json(key);
    if (jwk == NULL)
        return -1;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    unsigned int digest_len = 0;
    int ok = EVP_Digest(jwk, strlen(jwk), digest, &digest_len, EVP_sha256(), NULL);
    free(jwk);
    if (!ok)
        return -1;
    char *b64 = acme_b64url(digest, digest_len);
    if (b64 == NULL || strlen(b64) != ACME_THUMBPRINT_LEN) {
        free(b64);
        return -1;
    }
    memcpy(out, b64, ACME_THUMBPRINT_LEN + 1);
    free(b64);
    return 0;
}

/* OpenSSL's ECDSA signature is DER (SEQUENCE of two INTEGERs); JWS wants the two numbers as
 * fixed-width big-endian bytes side by side. */
static int der_sig_to_raw(const unsigned char *der, size_t der_len, unsigned char raw[ACME_ES256_SIG_LEN])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (sig == NULL)
        return -1;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(sig, &r, &s);
    int ok = BN_bn2binpad(r, raw, P256_COORD_LEN) == P256_COORD_LEN &&
             BN_bn2binpad(s, raw + P256_COORD_LEN, P256_COORD_LEN) == P256_COORD_LEN;
    ECDSA_SIG_free(sig);
    return ok ? 0 : -1;
}

int acme_es256_sign(EVP_PKEY *key, const unsigned char *data, size_t len, unsigned char sig[ACME_ES256_SIG_LEN])
{
    if (!acme_key_is_p256(key))
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *der = NULL;
    size_t der_len = 0;
    int rc = -1;
    if (ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(ctx, NULL, &der_len, data, len) == 1 && (der = malloc(der_len)) != NULL &&
        EVP_DigestSign(ctx, der, &der_len, data, len) == 1)
        rc = der_sig_to_raw(der, der_len, sig);
    free(der);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* The protected header: alg, nonce, url, then kid or the whole jwk. */
static char *protected_header(EVP_PKEY *key, const char *kid, const char *nonce, const char *url)
{
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", nonce, "url", url);
    if (hdr == NULL)
        return NULL;
    int ok;
    if (kid != NULL) {
        ok = json_object_set_new(hdr, "kid", json_string(kid)) == 0;
    } else {
        char *jwk_text = acme_jwk_json(key);
        json_t *jwk = jwk_text ? json_loads(jwk_text, 0, NULL) : NULL;
        free(jwk_text);
        ok = jwk != NULL && json_object_set_new(hdr, "jwk", jwk) == 0;
    }
    char *out = ok ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    return out;
}

char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const char *payload)
{
    if (nonce == NULL || url == NULL || payload == NULL)
        return NULL;
    char *hdr = protected_header(key, kid, nonce, url);
    char *prot = hdr ? acme_b64url((const unsigned char *)hdr, strlen(hdr)) : NULL;
    char *body = acme_b64url((const unsigned char *)payload, strlen(payload));
    char *signing_input = NULL, *sig_b64 = NULL, *out = NULL;
    unsigned char sig[ACME_ES256_SIG_LEN];
    if (prot != NULL && body != NULL && asprintf(&signing_input, "%s.%s", prot, body) >= 0 &&
        acme_es256_sign(key, (const unsigned char *)signing_input, strlen(signing_input), sig) == 0 &&
        (sig_b64 = acme_b64url(sig, sizeof sig)) != NULL) {
        json_t *jws = json_pack("{s:s, s:s, s:s}", "protected", prot, "payload", body, "signature", sig_b64);
        out = jws ? json_dumps(jws, JSON_COMPACT) : NULL;
        json_decref(jws);
    }
    free(hdr);
    free(prot);
    free(body);
    free(signing_input);
    free(sig_b64);
    return out;
}

/* subjectAltName with every domain as a dNSName. */
static int csr_add_sans(X509_REQ *req, const char *const *domains, size_t n)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *ext = NULL;
    int rc = -1;
    if (gens == NULL || exts == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        GENERAL_NAME *gen = GENERAL_NAME_new();
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        if (gen == NULL || ia5 == NULL || !ASN1_STRING_set(ia5, domains[i], (int)strlen(domains[i]))) {
            GENERAL_NAME_free(gen);
            ASN1_IA5STRING_free(ia5);
            goto out;
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, ia5); /* gen owns ia5 now */
        if (!sk_GENERAL_NAME_push(gens, gen)) {
            GENERAL_NAME_free(gen);
            goto out;
        }
    }
    ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
    if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext))
        goto out;
    ext = NULL; /* exts owns it */
    rc = X509_REQ_add_extensions(req, exts) ? 0 : -1;
out:
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);
    return rc;
}

/* A CN longer than 64 characters is invalid (RFC 5280 ub-common-name); such a name lives in the
 * SAN alone, which is all CAs look at anyway. */
static int csr_set_subject(X509_REQ *req, const char *first)
{
    if (strlen(first) > 64)
        return 0;
    X509_NAME *name = X509_REQ_get_subject_name(req);
    return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)first, -1, -1, 0) ? 0 : -1;
}

char *acme_csr_b64url(EVP_PKEY *key, const char *const *domains, size_t n)
{
    if (key == NULL || domains == NULL || n == 0)
        return NULL;
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    char *out = NULL;
    if (req != NULL && X509_REQ_set_version(req, X509_REQ_VERSION_1) && csr_set_subject(req, domains[0]) == 0 &&
        X509_REQ_set_pubkey(req, key) && csr_add_sans(req, domains, n) == 0 && X509_REQ_sign(req, key, EVP_sha256()) > 0) {
        int der_len = i2d_X509_REQ(req, &der);
        if (der_len > 0)
            out = acme_b64url(der, (size_t)der_len);
    }
    OPENSSL_free(der);
    X509_REQ_free(req);
    return out;
}

static X509 *first_certificate(const char *pem)
{
    BIO *bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

/* The serial number's DER INTEGER content (sign byte included, as RFC 9773 4.1 asks): i2d gives
 * tag, length, content; the header is skipped. */
static char *serial_b64url(const ASN1_INTEGER *serial)
{
    unsigned char *der = NULL;
    int len = i2d_ASN1_INTEGER(serial, &der);
    char *out = NULL;
    if (len >= 2) {
        size_t header = der[1] < 0x80 ? 2 : 2 + (size_t)(der[1] & 0x7f);
        if ((size_t)len > header)
            out = acme_b64url(der + header, (size_t)len - header);
    }
    OPENSSL_free(der);
    return out;
}

char *acme_ari_cert_id(const char *pem, char *why, size_t why_size)
{
    X509 *x = first_certificate(pem);
    if (x == NULL) {
        snprintf(why, why_size, "the certificate does not parse as PEM");
        return NULL;
    }
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    char *out = NULL;
    if (aki == NULL || ASN1_STRING_length(aki) <= 0) {
        snprintf(why, why_size, "the certificate has no Authority Key Identifier (ARI needs it)");
    } else {
        char *aki_b64 = acme_b64url(ASN1_STRING_get0_data(aki), (size_t)ASN1_STRING_length(aki));
        char *serial_b64 = serial_b64url(X509_get0_serialNumber(x));
        if (aki_b64 == NULL || serial_b64 == NULL || asprintf(&out, "%s.%s", aki_b64, serial_b64) < 0) {
            out = NULL;
            snprintf(why, why_size, "out of memory computing the ARI certID");
        }
        free(aki_b64);
        free(serial_b64);
    }
    X509_free(x);
    return out;
}

static int parse_digits(const char **p, int count, int *out)
{
    int v = 0;
    for (int i = 0; i < count; i++, (*p)++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

static int expect_char(const char **p, const char *accepted)
{
    if (**p == '\0' || strchr(accepted, **p) == NULL)
        return -1;
    (*p)++;
    return 0;
}

/* The zone: Z, or +hh:mm / -hh:mm as seconds east of UTC. */
static int parse_zone(const char *p, long *offset_s)
{
    if (*p == 'Z' || *p == 'z') {
        *offset_s = 0;
        return p[1] == '\0' ? 0 : -1;
    }
    int sign = *p == '+' ? 1 : *p == '-' ? -1 : 0, hh, mm;
    if (sign == 0)
        return -1;
    p++;
    if (parse_digits(&p, 2, &hh) || expect_char(&p, ":") || parse_digits(&p, 2, &mm) || *p != '\0' || hh > 23 ||
        mm > 59)
        return -1;
    *offset_s = sign * (hh * 3600L + mm * 60L);
    return 0;
}

int acme_rfc3339_parse(const char *text, int64_t *out)
{
    if (text == NULL)
        return -1;
    const char *p = text;
    int year, mon, day, hh, mm, ss;
    if (parse_digits(&p, 4, &year) || expect_char(&p, "-") || parse_digits(&p, 2, &mon) || expect_char(&p, "-") ||
        parse_digits(&p, 2, &day) || expect_char(&p, "Tt ") || parse_digits(&p, 2, &hh) || expect_char(&p, ":") ||
        parse_digits(&p, 2, &mm) || expect_char(&p, ":") || parse_digits(&p, 2, &ss))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    if (*p == '.') { /* fractions of a second: a window is not that precise */
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    long offset_s;
    if (parse_zone(p, &offset_s) != 0)
        return -1;
    struct tm tm = {.tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day, .tm_hour = hh, .tm_min = mm,
                    .tm_sec = ss > 59 ? 59 : ss};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t - offset_s;
    return 0;
}

int acme_chain_matches_key(const char *pem, EVP_PKEY *key)
{
    X509 *x = first_certificate(pem);
    if (x == NULL)
        return -1;
    EVP_PKEY *pub = X509_get0_pubkey(x);
    int same = pub != NULL && key != NULL && EVP_PKEY_eq(pub, key) == 1;
    X509_free(x);
    return same;
}

EVP_PKEY *acme_key_new(void)
{
    return EVP_EC_gen("P-256");
}
