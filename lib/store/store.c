/*
 * store.c - picks a backend from a URI, and the helpers every backend shares.
 *
 * The services only ever see `store *` and the store_* wrappers of store.h;
 * this is the one place that knows which backends exist.
 */
#include "store.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

store *store_open(const char *uri)
{
    if (uri == NULL || *uri == '\0') {
        log_error("store: no store URI or database path given");
        return NULL;
    }
    if (has_prefix(uri, "mongodb://") || has_prefix(uri, "mongodb+srv://"))
        return store_mongo_open(uri); /* the URI may carry a password: never logged */
    const char *path = uri;
    if (has_prefix(uri, "sqlite://"))
        path = uri + strlen("sqlite://");
    else if (has_prefix(uri, "sqlite:"))
        path = uri + strlen("sqlite:");
    return store_sqlite_open(path);
}

void store_close(store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

store_status store_event_insert(store *s, const char *tenant, const char *event, const char *data, int64_t ts_ms,
                                uint64_t *seq_out)
{
    store_insert item = {.tenant = tenant, .event = event, .data = data, .ts_ms = ts_ms};
    s->ops->event_insert_many(s, &item, 1);
    if (item.status == STORE_OK && seq_out != NULL)
        *seq_out = item.seq;
    return item.status;
}

void store_user_clear(store_user *u)
{
    if (u == NULL)
        return;
    free(u->username);
    free(u->password_hash);
    free(u->tenant_name);
    free(u->email);
    free(u->data);
    memset(u, 0, sizeof(*u));
}

static char *dup_or_null(const char *text, int *oom)
{
    if (text == NULL)
        return NULL;
    char *d = strdup(text);
    if (d == NULL)
        *oom = 1;
    return d;
}

int store_user_copy(store_user *out, const store_user *from)
{
    int oom = 0;
    memcpy(out->id, from->id, sizeof(out->id));
    out->username = dup_or_null(from->username, &oom);
    out->password_hash = dup_or_null(from->password_hash, &oom);
    out->revoked = from->revoked;
    out->token_gen = from->token_gen;
    out->tenant_name = dup_or_null(from->tenant_name, &oom);
    out->email = dup_or_null(from->email, &oom);
    out->data = dup_or_null(from->data, &oom);
    if (oom)
        store_user_clear(out);
    return oom ? -1 : 0;
}

const char *store_status_text(store_status st)
{
    switch (st) {
    case STORE_OK:
        return "ok";
    case STORE_NOT_FOUND:
        return "not found";
    case STORE_CONFLICT:
        return "conflict";
    case STORE_UNAVAILABLE:
        return "store unavailable";
    case STORE_LIMIT:
        return "limit reached";
    case STORE_FULL:
        return "disk full";
    }
    return "unknown store status";
}
