/*
 * auth.c - the user endpoints.
 *
 * Rules (docs/API.md): username 1-128 characters, unique; password at least 8
 * characters; tenant_name 1-128 of [A-Za-z0-9_.-]; email optional, must look
 * like an address and not be at a throwaway domain.  Choices where docs/API.md is
 * silent (also in README.md):
 *   - a username may not contain ':' (Basic credentials split on the first
 *     colon) nor control characters;
 *   - an empty email ("") means no email and is stored as null;
 *   - a password is at most 1024 bytes (Argon2 input stays bounded);
 *   - an unknown username on an admin endpoint answers 400;
 *   - admin checks come before field checks: a missing or wrong admin_token
 *     answers 401 whatever else the body holds (but the body must be JSON).
 */
#include "auth.h"
#include "console.h"
#include "email.h"
#include "log.h"
#include "password.h"
#include "token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <uuid/uuid.h>

#define NAME_MAX_CHARS 128
#define PASSWORD_MIN_CHARS 8
#define PASSWORD_MAX_BYTES 1024

/* Characters, not bytes: jansson has already checked the UTF-8. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static json_t *user_json(const store_user *u)
{
    json_t *data = u->data ? json_loads(u->data, JSON_DECODE_ANY, NULL) : NULL;
    return json_pack("{s:s,s:s,s:s,s:b,s:s,s:o,s:o}", "id", u->id, "username", u->username, "password", "***",
                     "revoked", u->revoked, "tenant_name", u->tenant_name, "email",
                     u->email ? json_string(u->email) : json_null(), "data", data ? data : json_null());
}

static int reply_user(struct _u_response *resp, const store_user *u)
{
    return http_reply_json(resp, 200, user_json(u));
}

static int admin_token_matches(const broker_runtime *rt, json_t *body, struct _u_response *resp);

/* The admin token, behind the per-address bucket of wrong ones (a wrong one
 * takes a token). */
static int admin_token_ok(const broker_runtime *rt, const struct _u_request *req, json_t *body,
                          struct _u_response *resp)
{
    char addr[64];
    http_client_address(req, &rt->cfg, addr, sizeof addr);
    long wait = ratelimit_check(rt->failed_admin_by_ip, addr, strlen(addr));
    if (wait > 0) {
        http_reply_retry_after(resp, 429, wait, "too many wrong admin tokens from this address: try again later (Retry-After)");
        return 0;
    }
    int ok = admin_token_matches(rt, body, resp);
    if (!ok)
        ratelimit_fail(rt->failed_admin_by_ip, addr, strlen(addr));
    return ok;
}

/* Constant-time comparison of the admin token, whatever the lengths. */
static int admin_token_matches(const broker_runtime *rt, json_t *body, struct _u_response *resp)
{
    json_t *v = json_object_get(body, "admin_token");
    if (v == NULL || json_is_null(v)) {
        authn_count_admin_failure();
        http_reply_error(resp, 401, "missing admin_token");
        return 0;
    }
    if (!json_is_string(v)) {
        authn_count_admin_failure();
        http_reply_error(resp, 401, "admin_token must be a string");
        return 0;
    }
    unsigned char a[32], b[32];
    unsigned int la = sizeof a, lb = sizeof b;
    const char *given = json_string_value(v);
    EVP_Digest(given, json_string_length(v), a, &la, EVP_sha256(), NULL);
    EVP_Digest(rt->cfg.admin_token, strlen(rt->cfg.admin_token), b, &lb, EVP_sha256(), NULL);
    if (CRYPTO_memcmp(a, b, sizeof a) != 0) {
        authn_count_admin_failure();
        http_reply_error(resp, 401, "wrong admin_token");
        return 0;
    }
    return 1;
}

static const char *check_username(const char *s)
{
    size_t n = utf8_chars(s);
    if (n < 1 || n > NAME_MAX_CHARS)
        return "username must be 1 to 128 characters";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == ':')
            return "username must not contain ':'";
        if (*p < 0x20 || *p == 0x7f)
            return "username must not contain control characters";
    }
    return NULL;
}

static const char *check_password(const char *s)
{
    if (utf8_chars(s) < PASSWORD_MIN_CHARS)
        return "password must be at least 8 characters";
    if (strlen(s) > PASSWORD_MAX_BYTES)
        return "password must be at most 1024 bytes";
    return NULL;
}

static const char *check_tenant(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > NAME_MAX_CHARS)
        return "tenant_name must be 1 to 128 characters";
    if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
        return "tenant_name may only contain letters, digits, '_', '.' and '-'";
    return NULL;
}

static const char *check_email(const char *s)
{
    switch (email_check(s)) {
    case EMAIL_OK:
        return NULL;
    case EMAIL_DISPOSABLE:
        return "email is at a throwaway-mail domain; use a permanent address";
    default:
        return "email does not look like an address (name@example.com)";
    }
}

/* Reads the optional "email" field: NULL/absent/"" -> *out NULL. */
static int read_email(json_t *body, const char **out, struct _u_response *resp)
{
    if (http_field_string(body, "email", 0, out, resp) != 0)
        return -1;
    if (*out != NULL && (*out)[0] == '\0')
        *out = NULL;
    const char *why = *out ? check_email(*out) : NULL;
    if (why != NULL) {
        http_reply_error(resp, 400, "%s", why);
        return -1;
    }
    return 0;
}

/* "data": any JSON, stored as compact text; absent or null -> NULL. */
static char *data_text(json_t *body)
{
    json_t *d = json_object_get(body, "data");
    if (d == NULL || json_is_null(d))
        return NULL;
    return json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
}

static void notify_changed(broker_runtime *rt, const char *username, int revoked)
{
    credcache_forget_user(rt->basic_cache, username);
    if (rt->user_changed != NULL)
        rt->user_changed(rt, username, revoked, rt->user_changed_arg);
}

static int create_user(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    const char *username, *password, *tenant, *email, *why;
    int ret;
    json_t *body = http_json_object(req, resp);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    if (!admin_token_ok(rt, req, body, resp) || http_field_string(body, "username", 1, &username, resp) != 0 ||
        http_field_string(body, "password", 1, &password, resp) != 0 ||
        http_field_string(body, "tenant_name", 1, &tenant, resp) != 0 || read_email(body, &email, resp) != 0) {
        json_decref(body);
        return U_CALLBACK_COMPLETE;
    }
    if ((why = check_username(username)) || (why = check_password(password)) || (why = check_tenant(tenant))) {
        json_decref(body);
        return http_reply_error(resp, 400, "%s", why);
    }
    store_user u = {0};
    uuid_t id;
    uuid_generate_random(id);
    uuid_unparse_lower(id, u.id);
    u.username = (char *)username;
    u.tenant_name = (char *)tenant;
    u.email = (char *)email;
    u.data = data_text(body);
    u.password_hash = password_hash(password);
    if (u.password_hash == NULL) {
        ret = http_reply_error(resp, 500, "could not hash the password");
    } else {
        store_status st = store_user_create(rt->store, &u);
        if (st == STORE_OK)
            ret = reply_user(resp, &u);
        else if (st == STORE_CONFLICT)
            ret = http_reply_error(resp, 400, "username '%s' is already taken", username);
        else
            ret = http_reply_error(resp, 500, "the user store is unavailable");
    }
    free(u.password_hash);
    free(u.data);
    json_decref(body);
    return ret;
}

static int login(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    const char *username, *password, *why = NULL;
    int ret;
    json_t *body = http_json_object(req, resp);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    if (http_field_string(body, "username", 1, &username, resp) != 0 ||
        http_field_string(body, "password", 1, &password, resp) != 0) {
        json_decref(body);
        return U_CALLBACK_COMPLETE;
    }
    char addr[64];
    http_client_address(req, &rt->cfg, addr, sizeof addr);
    store_user u;
    authn_result r = authn_password(&rt->authn, username, password, addr, &u, &why);
    if (r == AUTHN_OK) {
        char *jwt = token_issue(rt->cfg.jwt_secret, u.username, u.tenant_name, u.token_gen, rt->cfg.jwt_expiry);
        ret = jwt ? http_reply_json(resp, 200, json_pack("{s:s}", "jwt", jwt))
                  : http_reply_error(resp, 500, "could not sign a token");
        free(jwt);
        store_user_clear(&u);
    } else {
        ret = authn_reply_refusal(resp, r, why);
    }
    json_decref(body);
    return ret;
}

static int verify(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    authn_identity who;
    const char *why = NULL;
    char addr[64];
    http_client_address(req, &rt->cfg, addr, sizeof addr);
    authn_result r = authn_check(&rt->authn, u_map_get_case(req->map_header, "Authorization"), NULL, addr, &who, &why);
    if (r != AUTHN_OK)
        return authn_reply_refusal(resp, r, why);
    return http_reply_json(resp, 200, json_pack("{s:s,s:s}", "username", who.username, "tenant_name", who.tenant));
}

/* Common prologue of the admin endpoints that name a user: JSON body, admin
 * token, "username", and the stored user.  Returns the body (caller decrefs)
 * or NULL having replied. */
static json_t *admin_user_request(broker_runtime *rt, const struct _u_request *req, struct _u_response *resp,
                                  store_user *u)
{
    const char *username;
    json_t *body = http_json_object(req, resp);
    if (body == NULL)
        return NULL;
    if (!admin_token_ok(rt, req, body, resp) || http_field_string(body, "username", 1, &username, resp) != 0) {
        json_decref(body);
        return NULL;
    }
    store_status st = store_user_get(rt->store, username, u);
    if (st != STORE_OK) {
        if (st == STORE_NOT_FOUND)
            http_reply_error(resp, 400, "no user named '%s'", username);
        else
            http_reply_error(resp, 500, "the user store is unavailable");
        json_decref(body);
        return NULL;
    }
    return body;
}

static int set_revoked(const struct _u_request *req, struct _u_response *resp, broker_runtime *rt, int revoked)
{
    store_user u;
    json_t *body = admin_user_request(rt, req, resp, &u);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    int ret;
    if (store_user_set_revoked(rt->store, u.username, revoked) != STORE_OK) {
        ret = http_reply_error(resp, 500, "the user store is unavailable");
    } else {
        u.revoked = revoked;
        notify_changed(rt, u.username, revoked);
        ret = reply_user(resp, &u);
    }
    store_user_clear(&u);
    json_decref(body);
    return ret;
}

static int revoke_user(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    return set_revoked(req, resp, ctx, 1);
}

static int unrevoke_user(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    return set_revoked(req, resp, ctx, 0);
}

static int append_user(const store_user *u, void *arg)
{
    return json_array_append_new(arg, user_json(u)) == 0 ? 0 : 1;
}

static int list_users(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    json_t *body = http_json_object(req, resp);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    if (!admin_token_ok(rt, req, body, resp)) {
        json_decref(body);
        return U_CALLBACK_COMPLETE;
    }
    json_decref(body);
    json_t *list = json_array();
    if (store_user_list(rt->store, append_user, list) != STORE_OK) {
        json_decref(list);
        return http_reply_error(resp, 500, "the user store is unavailable");
    }
    return http_reply_json(resp, 200, list);
}

static int get_user(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    store_user u;
    json_t *body = admin_user_request(ctx, req, resp, &u);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    int ret = reply_user(resp, &u);
    store_user_clear(&u);
    json_decref(body);
    return ret;
}

static int update_user(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    store_user u;
    const char *tenant, *password, *email, *why;
    json_t *body = admin_user_request(rt, req, resp, &u);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    int ret = U_CALLBACK_COMPLETE;
    if (http_field_string(body, "tenant_name", 0, &tenant, resp) != 0 ||
        http_field_string(body, "password", 0, &password, resp) != 0 || read_email(body, &email, resp) != 0)
        goto done;
    if ((tenant && (why = check_tenant(tenant))) || (password && (why = check_password(password)))) {
        ret = http_reply_error(resp, 400, "%s", why);
        goto done;
    }
    if (tenant) {
        free(u.tenant_name);
        u.tenant_name = strdup(tenant);
    }
    if (password) {
        char *hash = password_hash(password);
        if (hash == NULL) {
            ret = http_reply_error(resp, 500, "could not hash the password");
            goto done;
        }
        free(u.password_hash);
        u.password_hash = hash;
        u.token_gen++; /* a new password voids the tokens the old one got */
    }
    if (json_object_get(body, "email") != NULL) {
        free(u.email);
        u.email = email ? strdup(email) : NULL;
    }
    if (json_object_get(body, "data") != NULL) {
        free(u.data);
        u.data = data_text(body);
    }
    if (u.tenant_name == NULL || store_user_update(rt->store, &u) != STORE_OK) {
        ret = http_reply_error(resp, 500, "the user store is unavailable");
        goto done;
    }
    notify_changed(rt, u.username, u.revoked);
    ret = reply_user(resp, &u);
done:
    store_user_clear(&u);
    json_decref(body);
    return ret;
}

int auth_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"POST", "/create_user", create_user},
        {"POST", "/login", login},
        {"GET", "/verify", verify},
        {"POST", "/revoke_user", revoke_user},
        {"POST", "/unrevoke_user", unrevoke_user},
        {"POST", "/list_users", list_users},
        {"POST", "/get_user", get_user},
        {"POST", "/update_user", update_user},
        {NULL, NULL, NULL},
    };
    if (http_server_add_routes(s, routes, rt) != 0)
        return -1;
    return console_add_routes(s, rt);
}
