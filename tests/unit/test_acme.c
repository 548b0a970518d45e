/*
 * test_acme.c - the bytes the ACME client signs and sends (acme_jws.c),
 * checked against OpenSSL and against the RFCs' own examples, not against
 * the client's idea of them.
 *
 * The JWK and its thumbprint are rebuilt here from the key's encoded public
 * point; signatures are turned back from R||S into DER and verified with
 * EVP_DigestVerify; the CSR is parsed and verified; the ARI certID is the
 * example of RFC 9773 section 4.1 on a certificate made here.  One case talks
 * to a closed loopback port to see the why-text of an unreachable CA; the
 * full flow against a real CA lives in tests/certd (Pebble).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"

#include "acme.h"
#include "acme_internal.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* ---- independent helpers ------------------------------------------------------------- */

/* base64url decoding written for the test: padding restored, alphabet mapped back. */
static unsigned char *b64url_decode(const char *in, size_t *out_len)
{
    size_t len = strlen(in), padded = (len + 3) / 4 * 4;
    char *std = calloc(1, padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (std == NULL || out == NULL)
        abort();
    for (size_t i = 0; i < padded; i++)
        std[i] = i >= len ? '=' : in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    int n = EVP_DecodeBlock(out, (unsigned char *)std, (int)padded);
    free(std);
    if (n < 0) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)n - (len % 4 == 2 ? 2 : len % 4 == 3 ? 1 : 0);
    out[*out_len] = '\0';
    return out;
}

static char *b64url_encode(const unsigned char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        abort();
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

/* The key's JWK built from its encoded public point (04 || X || Y), not from the BIGNUMs the
 * client reads. */
static char *expected_jwk(EVP_PKEY *key)
{
    unsigned char point[65];
    size_t len = 0;
    if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &len) || len != 65 ||
        point[0] != 0x04)
        abort();
    char *x = b64url_encode(point + 1, 32), *y = b64url_encode(point + 33, 32), *out = NULL;
    if (asprintf(&out, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y) < 0)
        abort();
    free(x);
    free(y);
    return out;
}

/* R||S back into DER, verified over `data` with the key. */
static int verify_raw(EVP_PKEY *key, const unsigned char *data, size_t len, const unsigned char *raw, size_t raw_len)
{
    if (raw_len != ACME_ES256_SIG_LEN)
        return 0;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    if (sig == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(sig, r, s))
        abort();
    unsigned char *der = NULL;
    int der_len = i2d_ECDSA_SIG(sig, &der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = der_len > 0 && ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(ctx, der, (size_t)der_len, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    return ok;
}

/* A certificate for `key`, issued (self-signed) with `serial`, and an AKI of aki[0..aki_len)
 * when aki is not NULL; PEM, malloc'd. */
static char *make_cert_pem(EVP_PKEY *key, long serial, const unsigned char *aki, size_t aki_len)
{
    X509 *x = X509_new();
    if (x == NULL || !X509_set_version(x, X509_VERSION_3) || !ASN1_INTEGER_set(X509_get_serialNumber(x), serial) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), 0) || !X509_gmtime_adj(X509_getm_notAfter(x), 3600) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1,
                                    0) ||
        !X509_set_issuer_name(x, X509_get_subject_name(x)) || !X509_set_pubkey(x, key))
        abort();
    if (aki != NULL) {
        AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
        akid->keyid = ASN1_OCTET_STRING_new();
        if (akid->keyid == NULL || !ASN1_OCTET_STRING_set(akid->keyid, aki, (int)aki_len) ||
            X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) != 1)
            abort();
        AUTHORITY_KEYID_free(akid);
    }
    if (X509_sign(x, key, EVP_sha256()) <= 0)
        abort();
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    if (bio == NULL || !PEM_write_bio_X509(bio, x))
        abort();
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    X509_free(x);
    return out;
}

/* ---- cases --------------------------------------------------------------------------- */

static void case_b64url(void)
{
    const struct {
        const char *in;
        size_t len;
        const char *want;
    } v[] = {{"", 0, ""},         {"f", 1, "Zg"},         {"fo", 2, "Zm8"},         {"foo", 3, "Zm9v"},
             {"foob", 4, "Zm9vYg"}, {"\xfb\xff", 2, "-_8"}, {"\xff\xfe\xfd", 3, "__79"}, {"\x3e\x3f", 2, "Pj8"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *got = acme_b64url((const unsigned char *)v[i].in, v[i].len);
        CHECK_STR(got, v[i].want);
        free(got);
    }
}

static void case_jwk_thumbprint(void)
{
    EVP_PKEY *key = acme_key_new();
    CHECK(key != NULL);
    CHECK_INT(acme_key_is_p256(key), 1);
    char *want = expected_jwk(key), *got = acme_jwk_json(key);
    CHECK_STR(got, want);
    unsigned char digest[32];
    unsigned int dlen = 0;
    CHECK(EVP_Digest(want, strlen(want), digest, &dlen, EVP_sha256(), NULL) == 1 && dlen == 32);
    char *want_tp = b64url_encode(digest, 32);
    char tp[ACME_THUMBPRINT_LEN + 1];
    CHECK_INT(acme_jwk_thumbprint(key, tp), 0);
    CHECK_STR(tp, want_tp);
    CHECK_INT(strlen(tp), 43);
    free(want_tp);
    free(want);
    free(got);
    EVP_PKEY_free(key);

    /* Another curve is no account key of ours. */
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    CHECK_INT(acme_key_is_p256(p384), 0);
    CHECK(acme_jwk_json(p384) == NULL);
    CHECK_INT(acme_jwk_thumbprint(p384, tp), -1);
    EVP_PKEY_free(p384);
}

/* Many signatures: a short R or S (1 in 128 per signature) must still be 32 bytes, left-padded. */
static void case_es256_raw(void)
{
    EVP_PKEY *key = acme_key_new();
    unsigned char sig[ACME_ES256_SIG_LEN];
    int bad = 0, short_seen = 0;
    for (int i = 0; i < 300; i++) {
        unsigned char msg[8] = {(unsigned char)i, (unsigned char)(i >> 8), 1, 2, 3, 4, 5, 6};
        if (acme_es256_sign(key, msg, sizeof msg, sig) != 0 || !verify_raw(key, msg, sizeof msg, sig, sizeof sig))
            bad++;
        short_seen += sig[0] == 0 || sig[32] == 0;
    }
    CHECK_INT(bad, 0);
    printf("# %d of 300 signatures had a leading zero byte in R or S\n", short_seen);
    unsigned char msg[] = "x";
    CHECK_INT(acme_es256_sign(key, msg, 1, sig), 0);
    sig[10] ^= 1;
    CHECK(!verify_raw(key, msg, 1, sig, sizeof sig));
    EVP_PKEY_free(key);
}

/* Parses a JWS; checks the signature; returns its protected header as JSON and its payload. */
static json_t *open_jws(EVP_PKEY *key, const char *jws_text, char **payload)
{
    json_t *jws = json_loads(jws_text, 0, NULL);
    CHECK(json_is_object(jws));
    CHECK_INT(json_object_size(jws), 3);
    const char *prot = json_string_value(json_object_get(jws, "protected"));
    const char *body = json_string_value(json_object_get(jws, "payload"));
    const char *sig_b64 = json_string_value(json_object_get(jws, "signature"));
    if (prot == NULL || body == NULL || sig_b64 == NULL) {
        CHECK(0);
        json_decref(jws);
        return NULL;
    }
    CHECK(strchr(prot, '=') == NULL && strchr(sig_b64, '=') == NULL);
    size_t sig_len = 0, hdr_len = 0, body_len = 0;
    unsigned char *sig = b64url_decode(sig_b64, &sig_len);
    CHECK_INT(sig_len, 64);
    char *signing_input = NULL;
    CHECK(asprintf(&signing_input, "%s.%s", prot, body) > 0);
    CHECK(verify_raw(key, (unsigned char *)signing_input, strlen(signing_input), sig, sig_len));
    unsigned char *hdr = b64url_decode(prot, &hdr_len);
    *payload = (char *)b64url_decode(body, &body_len);
    json_t *header = json_loads((char *)hdr, 0, NULL);
    free(sig);
    free(signing_input);
    free(hdr);
    json_decref(jws);
    return header;
}

static void case_jws_kid(void)
{
    EVP_PKEY *key = acme_key_new();
    char *text = acme_jws(key, "https://ca.test/acct/7", "nonce-123", "https://ca.test/order/9", "{\"a\":1}");
    CHECK(text != NULL);
    char *payload = NULL;
    json_t *hdr = text ? open_jws(key, text, &payload) : NULL;
    CHECK_STR(json_string_value(json_object_get(hdr, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(hdr, "nonce")), "nonce-123");
    CHECK_STR(json_string_value(json_object_get(hdr, "url")), "https://ca.test/order/9");
    CHECK_STR(json_string_value(json_object_get(hdr, "kid")), "https://ca.test/acct/7");
    CHECK(json_object_get(hdr, "jwk") == NULL);
    CHECK_INT(json_object_size(hdr), 4);
    CHECK_STR(payload, "{\"a\":1}");
    free(payload);
    json_decref(hdr);
    free(text);

    /* POST-as-GET: the payload is the empty string, not "{}" nor absent. */
    text = acme_jws(key, "https://ca.test/acct/7", "n2", "https://ca.test/authz/1", "");
    json_t *jws = json_loads(text, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(jws, "payload")), "");
    hdr = open_jws(key, text, &payload);
    CHECK_STR(payload, "");
    free(payload);
    json_decref(hdr);
    json_decref(jws);
    free(text);
    EVP_PKEY_free(key);
}

static void case_jws_jwk(void)
{
    EVP_PKEY *key = acme_key_new();
    char *text = acme_jws(key, NULL, "n1", "https://ca.test/new-acct", "{\"termsOfServiceAgreed\":true}");
    char *payload = NULL;
    json_t *hdr = text ? open_jws(key, text, &payload) : NULL;
    CHECK(json_object_get(hdr, "kid") == NULL);
    char *jwk_text = json_dumps(json_object_get(hdr, "jwk"), JSON_COMPACT | JSON_SORT_KEYS);
    char *want = expected_jwk(key);
    CHECK_STR(jwk_text, want);
    CHECK_STR(json_string_value(json_object_get(hdr, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(hdr, "url")), "https://ca.test/new-acct");
    CHECK_STR(payload, "{\"termsOfServiceAgreed\":true}");
    free(jwk_text);
    free(want);
    free(payload);
    json_decref(hdr);
    free(text);
    CHECK(acme_jws(key, NULL, NULL, "https://x", "") == NULL);
    EVP_PKEY_free(key);
}

static X509_REQ *decode_csr(const char *b64)
{
    size_t len = 0;
    unsigned char *der = b64url_decode(b64, &len);
    const unsigned char *p = der;
    X509_REQ *req = der ? d2i_X509_REQ(NULL, &p, (long)len) : NULL;
    free(der);
    return req;
}

/* The DNS names of the CSR's subjectAltName, joined by spaces. */
static void csr_sans(X509_REQ *req, char *out, size_t size)
{
    out[0] = '\0';
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_subject_alt_name)
            continue;
        GENERAL_NAMES *gens = X509V3_EXT_d2i(ext);
        for (int j = 0; j < sk_GENERAL_NAME_num(gens); j++) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, j);
            if (g->type == GEN_DNS)
                snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? " " : "",
                         (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        }
        GENERAL_NAMES_free(gens);
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void case_csr(void)
{
    EVP_PKEY *key = acme_key_new(), *other = acme_key_new();
    const char *domains[] = {"broker.test", "www.broker.test", "a.b.c.test"};
    char *b64 = acme_csr_b64url(key, domains, 3);
    CHECK(b64 != NULL && strchr(b64, '=') == NULL && strchr(b64, '+') == NULL && strchr(b64, '/') == NULL);
    X509_REQ *req = b64 ? decode_csr(b64) : NULL;
    CHECK(req != NULL);
    CHECK_INT(X509_REQ_verify(req, key), 1);
    CHECK(X509_REQ_verify(req, other) != 1);
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
    CHECK_STR(cn, "broker.test");
    char sans[512];
    csr_sans(req, sans, sizeof sans);
    CHECK_STR(sans, "broker.test www.broker.test a.b.c.test");
    CHECK_INT(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), key), 1);
    X509_REQ_free(req);
    free(b64);

    /* A name too long for a CN lives in the SAN only. */
    const char *longname[] = {"a-very-long-label-that-goes-on-and-on-and-on.another-long-label.test"};
    b64 = acme_csr_b64url(key, longname, 1);
    req = b64 ? decode_csr(b64) : NULL;
    CHECK(req != NULL);
    CHECK_INT(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
    csr_sans(req, sans, sizeof sans);
    CHECK_STR(sans, longname[0]);
    X509_REQ_free(req);
    free(b64);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

/* RFC 9773 section 4.1's example: AKI 69:88:5B:..:D4 and serial 0x87654321 (DER content 00 87 65
 * 43 21, the sign byte included). */
static void case_ari_cert_id(void)
{
    static const unsigned char aki[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                        0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    EVP_PKEY *key = acme_key_new();
    char why[256] = "";
    char *pem = make_cert_pem(key, 0x87654321L, aki, sizeof aki);
    char *id = acme_ari_cert_id(pem, why, sizeof why);
    CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    free(pem);

    pem = make_cert_pem(key, 0x1234, aki, sizeof aki); /* no sign byte needed */
    id = acme_ari_cert_id(pem, why, sizeof why);
    CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.EjQ");
    CHECK_INT(acme_chain_matches_key(pem, key), 1);
    EVP_PKEY *other = acme_key_new();
    CHECK_INT(acme_chain_matches_key(pem, other), 0);
    CHECK_INT(acme_chain_matches_key("not a certificate", key), -1);
    EVP_PKEY_free(other);
    free(id);
    free(pem);

    pem = make_cert_pem(key, 5, NULL, 0);
    CHECK(acme_ari_cert_id(pem, why, sizeof why) == NULL);
    CHECK_CONTAINS(why, "Authority Key Identifier");
    free(pem);
    CHECK(acme_ari_cert_id("garbage", why, sizeof why) == NULL);
    CHECK_CONTAINS(why, "PEM");
    EVP_PKEY_free(key);
}

static void case_rfc3339(void)
{
    int64_t t = 0;
    CHECK_INT(acme_rfc3339_parse("2025-01-02T03:04:05Z", &t), 0);
    CHECK_INT(t, 1735787045);
    CHECK_INT(acme_rfc3339_parse("2025-01-02t03:04:05.123456789z", &t), 0);
    CHECK_INT(t, 1735787045);
    CHECK_INT(acme_rfc3339_parse("2025-01-02T04:34:05+01:30", &t), 0);
    CHECK_INT(t, 1735787045);
    CHECK_INT(acme_rfc3339_parse("2025-01-02T01:04:05-02:00", &t), 0);
    CHECK_INT(t, 1735787045);
    const char *bad[] = {"", "2025-01-02", "2025-01-02T03:04:05", "2025-13-02T03:04:05Z", "2025-01-02T03:04:05Zjunk",
                         "2025-01-02T03:04:05.Z", "2025-01-02T03:04:05+1:00", "yesterday"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(acme_rfc3339_parse(bad[i], &t), -1);
    CHECK_INT(acme_rfc3339_parse(NULL, &t), -1);
}

static void case_problem_text(void)
{
    json_t *p = json_loads("{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\",\"detail\":\"no\","
                           "\"subproblems\":[{\"type\":\"urn:ietf:params:acme:error:caa\",\"detail\":\"CAA forbids\","
                           "\"identifier\":{\"type\":\"dns\",\"value\":\"x.test\"}}]}",
                           0, NULL);
    char text[512];
    acme_problem_text(p, text, sizeof text);
    CHECK_STR(text, "urn:ietf:params:acme:error:rejectedIdentifier: no; x.test: urn:ietf:params:acme:error:caa: "
                    "CAA forbids");
    json_decref(p);
}

static int put_ok(void *arg, const char *token, const char *key_authorization)
{
    (void)arg, (void)token, (void)key_authorization;
    return 0;
}

static void drop_ok(void *arg, const char *token)
{
    (void)arg, (void)token;
}

/* A CA that is not there: a clear why, quickly, and no certificate. */
static void case_unreachable_directory(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    close(fd); /* nobody listens there now */
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/dir", ntohs(sa.sin_port));
    _Atomic int stop = 0;
    acme_config cfg = {.directory_url = url, .timeout_s = 10, .stop = &stop};
    acme_http01 http01 = {put_ok, drop_ok, NULL};
    EVP_PKEY *account = acme_key_new(), *cert = acme_key_new();
    const char *domains[] = {"broker.test"};
    char *chain = (char *)1, why[512] = "";
    CHECK_INT(acme_obtain(&cfg, account, cert, domains, 1, &http01, &chain, why, sizeof why), -1);
    CHECK(chain == NULL);
    CHECK_CONTAINS(why, "the directory https://127.0.0.1:");
    CHECK_CONTAINS(why, "could not connect");

    /* A P-384 account key is refused before any request. */
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    CHECK_INT(acme_obtain(&cfg, p384, cert, domains, 1, &http01, &chain, why, sizeof why), -1);
    CHECK_CONTAINS(why, "P-256");
    /* Shutting down: gives up at once. */
    stop = 1;
    CHECK_INT(acme_obtain(&cfg, account, cert, domains, 1, &http01, &chain, why, sizeof why), -1);
    CHECK_CONTAINS(why, "shutting down");
    int64_t start, end;
    CHECK_INT(acme_renewal_window(&cfg, "x", &start, &end, why, sizeof why), -1);
    CHECK_CONTAINS(why, "shutting down");
    EVP_PKEY_free(p384);
    EVP_PKEY_free(account);
    EVP_PKEY_free(cert);
}

int main(void)
{
    RUN_CASE(case_b64url);
    RUN_CASE(case_jwk_thumbprint);
    RUN_CASE(case_es256_raw);
    RUN_CASE(case_jws_kid);
    RUN_CASE(case_jws_jwk);
    RUN_CASE(case_csr);
    RUN_CASE(case_ari_cert_id);
    RUN_CASE(case_rfc3339);
    RUN_CASE(case_problem_text);
    RUN_CASE(case_unreachable_directory);
    return check_summary();
}
