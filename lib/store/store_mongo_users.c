/*
 * store_mongo_users.c - users in the MongoDB store: the `users` collection,
 * unique username (proto/store.md).
 */
#include "mongo_internal.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

/* A user document viewed in place (strings point into `doc`). */
static void user_view(const bson_t *doc, store_user *u)
{
    memset(u, 0, sizeof(*u));
    const char *id = mg_doc_utf8(doc, "id");
    snprintf(u->id, sizeof(u->id), "%s", id ? id : "");
    u->username = (char *)mg_doc_utf8(doc, "username");
    u->password_hash = (char *)mg_doc_utf8(doc, "password_hash");
    bson_iter_t it;
    u->revoked = bson_iter_init_find(&it, doc, "revoked") && bson_iter_as_bool(&it);
    u->tenant_name = (char *)mg_doc_utf8(doc, "tenant_name");
    u->email = (char *)mg_doc_utf8(doc, "email");
    u->data = (char *)mg_doc_utf8(doc, "data");
    /* Users stored before token generations have none: generation 0. */
    u->token_gen = bson_iter_init_find(&it, doc, "token_gen") && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it) : 0;
}

/* The mutable fields of a user, as stored (user_update $sets these). */
static void append_user_fields(bson_t *doc, const store_user *u)
{
    mg_append_utf8_or_null(doc, "password_hash", u->password_hash);
    BSON_APPEND_BOOL(doc, "revoked", u->revoked != 0);
    mg_append_utf8_or_null(doc, "tenant_name", u->tenant_name);
    mg_append_utf8_or_null(doc, "email", u->email);
    mg_append_utf8_or_null(doc, "data", u->data);
    BSON_APPEND_INT64(doc, "token_gen", u->token_gen);
}

store_status mongo_user_create(store *base, const store_user *u)
{
    mongo_store *s = (mongo_store *)base;
    if (u->username == NULL || u->password_hash == NULL || u->tenant_name == NULL)
        return mg_missing("user create");
    mg_coll c;
    if (mg_coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "id", u->id);
    mg_append_utf8_or_null(&doc, "username", u->username);
    append_user_fields(&doc, u);
    bson_error_t err;
    store_status ret = STORE_OK;
    if (!mongoc_collection_insert_one(c.coll, &doc, NULL, NULL, &err))
        ret = mg_is_duplicate_key(&err) ? STORE_CONFLICT : mg_fail("user create", &err); /* only username is unique */
    bson_destroy(&doc);
    mg_coll_release(s, &c);
    return ret;
}

typedef struct user_copy {
    store_user *out;
    int found, oom;
} user_copy;

static int user_copy_doc(const bson_t *doc, void *arg)
{
    user_copy *uc = arg;
    store_user view;
    user_view(doc, &view);
    uc->oom = store_user_copy(uc->out, &view) != 0;
    uc->found = 1;
    return 1;
}

store_status mongo_user_get(store *base, const char *username, store_user *out)
{
    mongo_store *s = (mongo_store *)base;
    memset(out, 0, sizeof(*out));
    if (username == NULL)
        return STORE_NOT_FOUND;
    mg_coll c;
    if (mg_coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("username", BCON_UTF8(username));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    user_copy uc = {.out = out};
    store_status ret = mg_cursor_walk(mongoc_collection_find_with_opts(c.coll, filter, opts, NULL), user_copy_doc, &uc,
                                      "user get");
    if (ret == STORE_OK && uc.oom) {
        log_error("store mongodb: out of memory reading a user");
        ret = STORE_UNAVAILABLE;
    }
    if (ret == STORE_OK && !uc.found)
        ret = STORE_NOT_FOUND;
    if (ret != STORE_OK)
        store_user_clear(out);
    bson_destroy(opts);
    bson_destroy(filter);
    mg_coll_release(s, &c);
    return ret;
}

typedef struct user_walk {
    store_user_fn fn;
    void *arg;
} user_walk;

static int user_walk_doc(const bson_t *doc, void *arg)
{
    user_walk *w = arg;
    store_user view;
    user_view(doc, &view);
    return w->fn(&view, w->arg);
}

store_status mongo_user_list(store *base, store_user_fn fn, void *arg)
{
    mongo_store *s = (mongo_store *)base;
    mg_coll c;
    if (mg_coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    /* ObjectIds grow with time: _id order is creation order. */
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    user_walk w = {fn, arg};
    store_status ret =
        mg_cursor_walk(mongoc_collection_find_with_opts(c.coll, &filter, opts, NULL), user_walk_doc, &w, "user list");
    bson_destroy(opts);
    bson_destroy(&filter);
    mg_coll_release(s, &c);
    return ret;
}

/* $set (and $inc, when `inc` is not NULL) on the user named `username`; no
 * match = no such user. */
static store_status user_set(mongo_store *s, const char *username, const bson_t *set, const bson_t *inc,
                             const char *what)
{
    if (username == NULL)
        return STORE_NOT_FOUND;
    mg_coll c;
    if (mg_coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("username", BCON_UTF8(username));
    bson_t update = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT(&update, "$set", set);
    if (inc != NULL)
        BSON_APPEND_DOCUMENT(&update, "$inc", inc);
    bson_t reply;
    bson_error_t err;
    store_status ret;
    if (!mongoc_collection_update_one(c.coll, filter, &update, NULL, &reply, &err))
        ret = mg_fail(what, &err);
    else
        ret = mg_doc_int64(&reply, "matchedCount") > 0 ? STORE_OK : STORE_NOT_FOUND;
    bson_destroy(&reply);
    bson_destroy(&update);
    bson_destroy(filter);
    mg_coll_release(s, &c);
    return ret;
}

store_status mongo_user_update(store *base, const store_user *u)
{
    bson_t set = BSON_INITIALIZER;
    append_user_fields(&set, u);
    store_status ret = user_set((mongo_store *)base, u->username, &set, NULL, "user update");
    bson_destroy(&set);
    return ret;
}

store_status mongo_user_set_revoked(store *base, const char *username, int revoked)
{
    bson_t set = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&set, "revoked", revoked != 0);
    /* Revoking moves the token generation in the same update (see store.h). */
    bson_t inc = BSON_INITIALIZER;
    BSON_APPEND_INT64(&inc, "token_gen", revoked != 0);
    store_status ret = user_set((mongo_store *)base, username, &set, revoked ? &inc : NULL, "user set revoked");
    bson_destroy(&inc);
    bson_destroy(&set);
    return ret;
}
