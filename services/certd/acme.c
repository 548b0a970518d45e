/*
 * acme.c - the RFC 8555 issuance flow (directory, account, order, HTTP-01
 * challenges, finalization, download) and RFC 9773 renewal information.
 *
 * Each step is a function that reads like the RFC's section; the transport
 * under them (signing, nonces, badNonce retries, problem documents, polling,
 * every bound on time and size) is acme_session.c, and the bytes signed are
 * acme_jws.c.  The HTTP-01 answers are published through the caller's
 * acme_http01 and always withdrawn before acme_obtain returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, timegm */
#endif
#include "acme.h"
#include "acme_internal.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACME_MAX_TOKEN 256

static int load_directory(acme_session *s)
{
    const char *url = s->cfg->directory_url;
    acme_response r;
    if (acme_http(s, "the directory", url, NULL, 0, NULL, &r) != 0)
        return -1;
    if (r.status != 200) {
        acme_fail(s, "the directory %s: HTTP %ld", url, r.status);
        acme_response_free(&r);
        return -1;
    }
    s->dir = acme_response_json(&r);
    acme_response_free(&r);
    if (!json_is_object(s->dir) || !acme_json_str(s->dir, "newNonce") || !acme_json_str(s->dir, "newAccount") ||
        !acme_json_str(s->dir, "newOrder"))
        return acme_fail(s, "the directory %s: not an ACME directory (newNonce, newAccount, newOrder missing)", url);
    return 0;
}

/* newAccount finds the account when the CA knows the key (200) and creates it otherwise (201):
 * either way its Location is the kid of every later request. */
static int find_or_create_account(acme_session *s)
{
    json_t *req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    const char *email = s->cfg->contact_email;
    int ok = req != NULL;
    if (ok && email != NULL && email[0] != '\0') {
        char mailto[320];
        snprintf(mailto, sizeof mailto, "mailto:%s", email);
        ok = json_object_set_new(req, "contact", json_pack("[s]", mailto)) == 0;
    }
    char *payload = ok ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (payload == NULL)
        return acme_fail(s, "the account: out of memory");
    json_t *account = NULL;
    char *location = NULL;
    int rc = acme_post_json(s, "the account", acme_json_str(s->dir, "newAccount"), payload, &account, &location, NULL);
    free(payload);
    if (rc != 0)
        return -1;
    const char *status = acme_json_str(account, "status");
    if (location == NULL)
        rc = acme_fail(s, "the account: the CA gave no account URL (Location)");
    else if (status != NULL && strcmp(status, "valid") != 0)
        rc = acme_fail(s, "the account %s is %s", location, status);
    json_decref(account);
    s->kid = location;
    return rc;
}

static char *new_order_payload(const char *const *domains, size_t n)
{
    json_t *ids = json_array();
    int ok = ids != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", domains[i])) == 0;
    if (!ok) {
        json_decref(ids);
        return NULL;
    }
    json_t *req = json_pack("{s:o}", "identifiers", ids); /* steals ids, even on failure */
    char *out = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    return out;
}

/* A token ends up in a URL path on our own server: only the base64url alphabet is accepted. */
static int token_ok(const char *token)
{
    size_t len = token ? strlen(token) : 0;
    if (len == 0 || len > ACME_MAX_TOKEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)token[i]) && token[i] != '-' && token[i] != '_')
            return 0;
    return 1;
}

static const json_t *find_http01(const json_t *authz)
{
    size_t i;
    const json_t *ch;
    json_array_foreach(json_object_get(authz, "challenges"), i, ch)
    {
        const char *type = acme_json_str(ch, "type");
        if (type != NULL && strcmp(type, "http-01") == 0)
            return ch;
    }
    return NULL;
}

/* Why an authorization ended invalid: its http-01 challenge's error, when the CA gave one. */
static int authz_failed(acme_session *s, const char *name, const json_t *authz)
{
    const json_t *ch = find_http01(authz);
    const json_t *problem = ch ? json_object_get(ch, "error") : NULL;
    if (!json_is_object(problem))
        return acme_fail(s, "the authorization for %s is %s", name, acme_json_str(authz, "status"));
    char text[1024];
    acme_problem_text(problem, text, sizeof text);
    return acme_fail(s, "the challenge for %s failed: %s", name, text);
}

/* The tokens published through acme_http01, dropped whatever happens. */
typedef struct published {
    char **tokens;
    size_t count;
} published;

static int answer_challenge(acme_session *s, const char *name, const json_t *ch, const acme_http01 *http01,
                            published *pub)
{
    const char *token = acme_json_str(ch, "token"), *url = acme_json_str(ch, "url");
    if (!token_ok(token) || url == NULL)
        return acme_fail(s, "the challenge for %s: no usable token or url", name);
    char key_auth[ACME_MAX_TOKEN + ACME_THUMBPRINT_LEN + 2];
    snprintf(key_auth, sizeof key_auth, "%s.%s", token, s->thumbprint);
    char *copy = strdup(token);
    if (copy == NULL)
        return acme_fail(s, "the challenge for %s: out of memory", name);
    if (http01->put(http01->arg, token, key_auth) != 0) {
        free(copy);
        return acme_fail(s, "the challenge for %s: could not publish the HTTP-01 answer", name);
    }
    pub->tokens[pub->count++] = copy;
    const char *status = acme_json_str(ch, "status");
    if (status != NULL && strcmp(status, "pending") != 0)
        return 0; /* already answered (an earlier attempt): just wait for the verdict */
    json_t *answer = NULL;
    char what[300];
    snprintf(what, sizeof what, "the challenge for %s", name);
    if (acme_post_json(s, what, url, "{}", &answer, NULL, NULL) != 0)
        return -1;
    json_decref(answer);
    return 0;
}

static int authorize(acme_session *s, const char *url, const acme_http01 *http01, published *pub)
{
    json_t *authz = NULL;
    if (url == NULL)
        return acme_fail(s, "the order lists an authorization that is not a URL");
    if (acme_post_json(s, "the authorization", url, "", &authz, NULL, NULL) != 0)
        return -1;
    char name[256];
    const char *ident = acme_json_str(json_object_get(authz, "identifier"), "value");
    snprintf(name, sizeof name, "%s", ident != NULL ? ident : "?");
    const char *status = acme_json_str(authz, "status");
    int rc = 0;
    if (status != NULL && strcmp(status, "valid") == 0)
        goto out; /* the CA still trusts an earlier validation */
    if (status == NULL || strcmp(status, "pending") != 0) {
        rc = authz_failed(s, name, authz);
        goto out;
    }
    const json_t *ch = find_http01(authz);
    if (ch == NULL) {
        rc = acme_fail(s, "the CA offers no http-01 challenge for %s (this client does only http-01)", name);
        goto out;
    }
    if ((rc = answer_challenge(s, name, ch, http01, pub)) != 0)
        goto out;
    json_decref(authz);
    authz = NULL;
    char waiting_for[300];
    snprintf(waiting_for, sizeof waiting_for, "the challenge for %s to be validated", name);
    if ((rc = acme_poll(s, "the authorization", url, NULL, waiting_for, &authz)) != 0)
        goto out;
    if (strcmp(acme_json_str(authz, "status"), "valid") != 0)
        rc = authz_failed(s, name, authz);
out:
    json_decref(authz);
    return rc;
}

static int order_failed(acme_session *s, const json_t *order, const char *what)
{
    const json_t *problem = json_object_get(order, "error");
    char text[1024] = "no reason given";
    if (json_is_object(problem))
        acme_problem_text(problem, text, sizeof text);
    const char *status = acme_json_str(order, "status");
    return acme_fail(s, "%s: the order is %s: %s", what, status != NULL ? status : "?", text);
}

static int finalize(acme_session *s, EVP_PKEY *cert_key, const char *const *domains, size_t n, const char *order_url,
                    json_t **order)
{
    if (acme_poll(s, "the order", order_url, NULL, "the order to become ready", order) != 0)
        return -1;
    const char *status = acme_json_str(*order, "status"); /* never NULL after acme_poll */
    if (strcmp(status, "ready") != 0 && strcmp(status, "valid") != 0)
        return order_failed(s, *order, "after the challenges");
    if (strcmp(status, "ready") == 0) { /* "valid": an earlier attempt finalized it already */
        char *csr = acme_csr_b64url(cert_key, domains, n);
        json_t *req = csr ? json_pack("{s:s}", "csr", csr) : NULL;
        char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        free(csr);
        if (payload == NULL)
            return acme_fail(s, "the finalization: could not make the CSR (OpenSSL)");
        json_t *answer = NULL;
        int rc = acme_post_json(s, "the finalization", acme_json_str(*order, "finalize"), payload, &answer, NULL, NULL);
        free(payload);
        json_decref(answer);
        json_decref(*order);
        *order = NULL;
        if (rc != 0 || acme_poll(s, "the order", order_url, "ready", "the order to become valid", order) != 0)
            return -1;
    }
    if (strcmp(acme_json_str(*order, "status"), "valid") != 0)
        return order_failed(s, *order, "after the finalization");
    return 0;
}

static int download(acme_session *s, const char *url, EVP_PKEY *cert_key, char **chain_pem)
{
    acme_response r;
    if (url == NULL)
        return acme_fail(s, "the order is valid but gives no certificate URL");
    if (acme_post(s, "the certificate download", url, "", "application/pem-certificate-chain", &r) != 0)
        return -1;
    int match = acme_chain_matches_key(r.body, cert_key);
    if (match != 1) {
        acme_response_free(&r);
        return acme_fail(s, "the certificate download %s: %s", url,
                         match < 0 ? "not a PEM certificate chain" : "the certificate is not for our key");
    }
    *chain_pem = r.body;
    r.body = NULL;
    acme_response_free(&r);
    return 0;
}

static int issue(acme_session *s, EVP_PKEY *cert_key, const char *const *domains, size_t n,
                 const acme_http01 *http01, char **chain_pem, published *pub)
{
    if (load_directory(s) != 0 || find_or_create_account(s) != 0)
        return -1;
    char *payload = new_order_payload(domains, n);
    json_t *order = NULL;
    char *order_url = NULL;
    int rc = payload ? acme_post_json(s, "the order", acme_json_str(s->dir, "newOrder"), payload, &order, &order_url, NULL)
                     : acme_fail(s, "the order: out of memory");
    free(payload);
    if (rc == 0 && order_url == NULL)
        rc = acme_fail(s, "the order: the CA gave no order URL (Location)");
    const json_t *authzs = json_object_get(order, "authorizations");
    size_t count = json_array_size(authzs);
    if (rc == 0 && (pub->tokens = calloc(count + 1, sizeof *pub->tokens)) == NULL)
        rc = acme_fail(s, "the order: out of memory");
    for (size_t i = 0; rc == 0 && i < count; i++)
        rc = authorize(s, json_string_value(json_array_get(authzs, i)), http01, pub);
    json_decref(order);
    order = NULL;
    if (rc == 0)
        rc = finalize(s, cert_key, domains, n, order_url, &order);
    if (rc == 0)
        rc = download(s, acme_json_str(order, "certificate"), cert_key, chain_pem);
    json_decref(order);
    free(order_url);
    return rc;
}


static int check_request(acme_session *s, EVP_PKEY *account_key, EVP_PKEY *cert_key, const char *const *domains,
                         size_t n, const acme_http01 *http01)
{
    if (!acme_key_is_p256(account_key))
        return acme_fail(s, "the account key is not an EC P-256 key");
    if (cert_key == NULL || domains == NULL || n == 0)
        return acme_fail(s, "no certificate key or no domain to ask for");
    for (size_t i = 0; i < n; i++)
        if (domains[i] == NULL || domains[i][0] == '\0' || strlen(domains[i]) > 253)
            return acme_fail(s, "domain #%zu is empty or longer than 253 characters", i + 1);
    if (http01 == NULL || http01->put == NULL || http01->drop == NULL)
        return acme_fail(s, "no HTTP-01 responder to publish the challenges with");
    return 0;
}

int acme_obtain(const acme_config *cfg, EVP_PKEY *account_key, EVP_PKEY *cert_key, const char *const *domains,
                size_t n, const acme_http01 *http01, char **chain_pem, char *why, size_t why_size)
{
    acme_session s;
    published pub = {NULL, 0};
    *chain_pem = NULL;
    int rc = acme_session_open(&s, cfg, why, why_size);
    if (rc == 0)
        rc = check_request(&s, account_key, cert_key, domains, n, http01);
    if (rc == 0) {
        s.account_key = account_key;
        rc = acme_jwk_thumbprint(account_key, s.thumbprint) == 0 ? 0 : acme_fail(&s, "the account key: no JWK thumbprint");
    }
    if (rc == 0)
        rc = issue(&s, cert_key, domains, n, http01, chain_pem, &pub);
    for (size_t i = 0; i < pub.count; i++) {
        http01->drop(http01->arg, pub.tokens[i]);
        free(pub.tokens[i]);
    }
    free(pub.tokens);
    acme_session_close(&s);
    return rc;
}

static int read_window(acme_session *s, const char *url, json_t *info, int64_t *start, int64_t *end)
{
    const json_t *window = json_object_get(info, "suggestedWindow");
    if (acme_rfc3339_parse(acme_json_str(window, "start"), start) != 0 || acme_rfc3339_parse(acme_json_str(window, "end"), end) != 0)
        return acme_fail(s, "the renewal information %s: no suggestedWindow with RFC 3339 start and end", url);
    if (*end < *start)
        return acme_fail(s, "the renewal information %s: the window ends before it starts", url);
    return 1;
}

int acme_renewal_window(const acme_config *cfg, const char *leaf_pem, int64_t *start, int64_t *end, char *why,
                        size_t why_size)
{
    acme_session s;
    int rc = acme_session_open(&s, cfg, why, why_size);
    if (rc == 0)
        rc = load_directory(&s);
    const char *base = rc == 0 ? acme_json_str(s.dir, "renewalInfo") : NULL;
    char *cert_id = NULL, *url = NULL;
    if (rc == 0 && base == NULL) {
        acme_session_close(&s);
        return 0; /* the CA does not do ARI */
    }
    if (rc == 0 && (cert_id = acme_ari_cert_id(leaf_pem, why, why_size)) == NULL)
        rc = -1;
    if (rc == 0) {
        size_t len = strlen(base);
        if (asprintf(&url, "%s%s%s", base, len > 0 && base[len - 1] == '/' ? "" : "/", cert_id) < 0) {
            url = NULL;
            rc = acme_fail(&s, "out of memory");
        }
    }
    acme_response r = {0};
    if (rc == 0 && (rc = acme_http(&s, "the renewal information", url, NULL, 0, NULL, &r)) == 0) {
        json_t *info = r.status == 200 ? acme_response_json(&r) : NULL;
        if (r.status != 200)
            rc = acme_refused(&s, "the renewal information request", &r);
        else if (!json_is_object(info))
            rc = acme_fail(&s, "the renewal information %s: not a JSON object", url);
        else
            rc = read_window(&s, url, info, start, end);
        json_decref(info);
    }
    acme_response_free(&r);
    free(cert_id);
    free(url);
    acme_session_close(&s);
    return rc;
}
