/*
 * fuzz_json_body.c - libFuzzer target for request bodies.
 *
 * Every JSON endpoint starts with http_json_object() (jansson's json_loadb
 * with flags 0) and then reads string fields with http_field_string(); the
 * sign-up e-mail goes through email_check().  This target runs the real
 * functions on arbitrary bytes and checks what a client would see: a body
 * that is not a JSON object answers 400 with {"error": "<string>"}, never
 * 500 and never a crash; a parsed body survives a dump/reload round trip.
 *
 * http.c's reply helpers count statuses in metrics set up by
 * http_server_init(), so the server is initialised (never started) once.
 */
#include "config.h"
#include "email.h"
#include "http.h"
#include "log.h"

#include <jansson.h>
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

static broker_config cfg;
static http_server server;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char *args[] = {"fuzz_json_body", "--port=1", "--bind=127.0.0.1", NULL};
    log_init("fuzz_json_body", "error", NULL);
    if (config_load(&cfg, 3, args, "fuzz_json_body") != 0 || http_server_init(&server, &cfg) != 0 ||
        email_init() != 0)
        abort();
    return 0;
}

/* The reply body is {"error": "<non-empty string>"}. */
static void require_error_reply(struct _u_response *resp, unsigned status)
{
    REQUIRE(resp->status == status);
    REQUIRE(resp->binary_body != NULL && resp->binary_body_length > 0);
    json_error_t err;
    json_t *reply = json_loadb(resp->binary_body, resp->binary_body_length, 0, &err);
    REQUIRE(reply != NULL && json_is_object(reply));
    json_t *msg = json_object_get(reply, "error");
    REQUIRE(json_is_string(msg) && json_string_length(msg) > 0);
    json_decref(reply);
}

/* Walks every value; strings go through the e-mail checker. Returns the node count. */
static size_t walk(json_t *v, int depth)
{
    REQUIRE(depth <= 4096);
    size_t n = 1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            REQUIRE(key != NULL);
            email_check(key);
            n += walk(child, depth + 1);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) n += walk(child, depth + 1);
        break;
    }
    case JSON_STRING: {
        const char *s = json_string_value(v);
        /* Without JSON_ALLOW_NUL no string holds a NUL. */
        REQUIRE(strlen(s) == json_string_length(v));
        email_verdict ev = email_check(s);
        REQUIRE(ev == EMAIL_OK || ev == EMAIL_MALFORMED || ev == EMAIL_DISPOSABLE);
        if (ev == EMAIL_OK)
            REQUIRE(strlen(s) <= 254 && strchr(s, '@') != NULL);
        break;
    }
    default:
        break;
    }
    return n;
}

static void field_reads(json_t *obj)
{
    static const char *const keys[] = {"username", "password",    "admin_token", "tenant_name",
                                       "email",    "event",       "data",        "nope"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        struct _u_response resp;
        if (ulfius_init_response(&resp) != U_OK)
            return;
        const char *out = (const char *)1;
        json_t *v = json_object_get(obj, keys[i]);
        int rc = http_field_string(obj, keys[i], 1, &out, &resp);
        if (json_is_string(v)) {
            REQUIRE(rc == 0 && out == json_string_value(v));
            if (!strcmp(keys[i], "email"))
                email_check(out);
        } else {
            REQUIRE(rc == -1 && out == NULL);
            require_error_reply(&resp, 400);
        }
        ulfius_clean_response(&resp);
        /* Optional: a missing or null field is fine. */
        if (ulfius_init_response(&resp) != U_OK)
            return;
        rc = http_field_string(obj, keys[i], 0, &out, &resp);
        REQUIRE(rc == ((v == NULL || json_is_null(v) || json_is_string(v)) ? 0 : -1));
        ulfius_clean_response(&resp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. The server's path: http_json_object on a request carrying the bytes. */
    struct _u_request req;
    struct _u_response resp;
    if (ulfius_init_request(&req) != U_OK)
        return 0;
    if (ulfius_init_response(&resp) != U_OK) {
        ulfius_clean_request(&req);
        return 0;
    }
    void *body = malloc(size ? size : 1);
    if (body == NULL)
        abort();
    memcpy(body, data, size);
    req.binary_body = body; /* owned by req: ulfius_clean_request frees it */
    req.binary_body_length = size;
    json_t *obj = http_json_object(&req, &resp);
    if (obj == NULL) {
        require_error_reply(&resp, 400);
    } else {
        REQUIRE(json_is_object(obj));
        field_reads(obj);
        json_decref(obj);
    }
    ulfius_clean_response(&resp);
    ulfius_clean_request(&req);

    /* 2. jansson directly, with the same flags: walk, dump, reload, compare. */
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, 0, &err);
    if (root == NULL)
        return 0;
    walk(root, 0);
    char *text = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    REQUIRE(text != NULL);
    json_t *again = json_loads(text, JSON_DECODE_ANY, &err);
    REQUIRE(again != NULL && json_equal(root, again));
    json_decref(again);
    free(text);
    json_decref(root);
    return 0;
}
