/*
 * store_mongo.c - the MongoDB store, for split deployments (libmongoc).
 *
 * Same interface and semantics as store_sqlite.c; proto/store.md documents the
 * collections and indexes of both backends.  The idea:
 *
 *   - No transactions (a standalone server and FerretDB have none), so every
 *     guarantee rests on single-document atomicity and unique indexes.
 *   - A tenant's sequence is allocated BY the event insert itself: an event is
 *     inserted at (the tenant's highest stored seq) + 1, and the unique index
 *     events(tenant, seq) makes exactly one of two racing writers win.  The
 *     loser (only ever another process, see below) knows that seq is stored
 *     now, so it probes seq + 1, re-reading the max every few conflicts and
 *     giving up (STORE_UNAVAILABLE) after INSERT_CONFLICT_TIMEOUT_US.  Events
 *     are never deleted, so the stored seqs of a tenant are always exactly
 *     1..max: no hole even if a process dies at any point, no counter that
 *     can drift from the events, and "the tenant's max seq" is simply the
 *     highest stored event, all of whose predecessors are readable.
 *     (A findAndModify/$inc counter was the first plan; it leaves holes when a
 *     writer dies between the bump and the insert, concurrent writers make
 *     transient gaps visible to readers, and FerretDB v1 runs findAndModify
 *     and update as read-modify-write without atomicity, so $inc there hands
 *     out duplicates.)
 *   - Inside one process, writers of a tenant queue on one of SEQ_STRIPES
 *     mutexes (picked by a hash of the tenant), which also caches the
 *     tenant's last seq: the usual insert is two round trips (raise the
 *     latest hint, insert the event) with no conflict and no max query.
 *   - latest {_id: {tenant, event}, tenant, event, seq} keeps, per event name,
 *     an UPPER BOUND of the seq of its newest event: raised with $max (never
 *     moves back) BEFORE each insert attempt.  event_latest() reads the
 *     tenant's max seq M first, then the hints, and trusts a hint h only when
 *     h <= M and event h exists with that name (then it is the newest of its
 *     name at or below M, because every such event raised the hint before it
 *     was written).  Any other hint (an insert in flight, one that failed or
 *     died after raising it, a probe's look-ahead) costs one indexed query on
 *     events(tenant, event, seq) for that name.  So the snapshot is exact at
 *     M without a transaction; a stale hint heals on the name's next insert.
 *     On FerretDB v1, whose $max is not atomic, this holds for writers in one
 *     process (the stripe lock orders them), not across processes.
 *   - Every write uses the URI's write concern with j:true added and w
 *     defaulting to "majority": an answered insert is journaled.  An insert
 *     whose answer was lost (network error after the server applied it) is
 *     reported STORE_UNAVAILABLE although it may be stored; a retry by the
 *     client then stores the event a second time under a new seq.
 *   - A mongoc_client_pool_t (thread-safe) hands one client to each call; the
 *     driver reconnects on its own, and no state here survives a failed call
 *     (a failed insert forgets its stripe's cached seq), so the store recovers
 *     as soon as the server answers again.  Timeouts default to
 *     SERVER_SELECTION_TIMEOUT_MS / CONNECT_TIMEOUT_MS / SOCKET_TIMEOUT_MS when
 *     the URI does not set them, so a call never hangs on a dead server.
 *   - Every failure is logged and answered STORE_UNAVAILABLE; a duplicate
 *     username (error 11000) is STORE_CONFLICT.  The URI is never logged, only
 *     its hosts and database name (no credentials).
 *
 * Callbacks run while a pooled client and an open cursor are held: they
 * should be quick, and may re-enter the store (another client is popped).
 */
#include "store.h"

#include "log.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DB_NAME "broker"
#define SERVER_SELECTION_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_MS 3000
#define SOCKET_TIMEOUT_MS 10000
#define SEQ_STRIPES 64
#define INSERT_CONFLICT_TIMEOUT_US 5000000 /* lost races (other processes) before giving up */
#define CONFLICTS_BEFORE_REREAD 8           /* probes of the next seq before reading the max again */
#define PROBE_LOOKAHEAD CONFLICTS_BEFORE_REREAD
#define DUPLICATE_KEY 11000

#define COLL_USERS "users"
#define COLL_EVENTS "events"
#define COLL_LATEST "latest"

/* Writers of the tenants that hash here queue on `lock`; `tenant` (owned,
 * NULL when unknown) and `last_seq` remember the last seq this process stored
 * for one of them. */
typedef struct seq_stripe {
    pthread_mutex_t lock;
    char *tenant;
    uint64_t last_seq;
} seq_stripe;

typedef struct mongo_store {
    store base; /* first: a store * is a mongo_store * */
    mongoc_client_pool_t *pool;
    char *db_name;
    char *where; /* "host:port,.../db" for log lines, without credentials */
    seq_stripe stripes[SEQ_STRIPES];
} mongo_store;

static const store_ops mongo_ops;

/* ---- driver setup -------------------------------------------------------- */

static void driver_log(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
    (void)arg;
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        log_error("mongoc %s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        /* FerretDB has no sessions: every pool teardown warns about it. */
        if (strstr(message, "endSessions") != NULL)
            log_debug("mongoc %s: %s", domain, message);
        else
            log_warn("mongoc %s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        log_debug("mongoc %s: %s", domain, message);
        break;
    default: /* debug and trace: far too chatty */
        break;
    }
}

static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

static void driver_init(void)
{
    mongoc_log_set_handler(driver_log, NULL);
    mongoc_init();
}

/* ---- errors -------------------------------------------------------------- */

/* Logs what failed with the driver's message and maps it to STORE_UNAVAILABLE.
 * Driver and server messages carry no credentials; a duplicate-key message may
 * name the key (tenant and seq), never a password hash (it has no index). */
static store_status mg_fail(const char *what, const bson_error_t *err)
{
    log_error("store mongodb: %s: %s (domain %u, code %u)", what, err->message, err->domain, err->code);
    return STORE_UNAVAILABLE;
}

static int is_duplicate_key(const bson_error_t *err)
{
    return err->code == DUPLICATE_KEY;
}

/* A required string argument is NULL: a caller's bug, answered like the
 * SQLite backend's NOT NULL constraint, never a crash. */
static store_status mg_missing(const char *what)
{
    log_error("store mongodb: %s: a required field is missing", what);
    return STORE_UNAVAILABLE;
}

/* ---- small BSON helpers -------------------------------------------------- */

/* A string field of `doc`, or NULL when absent or not a string. */
static const char *doc_utf8(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static int64_t doc_int64(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static void append_utf8_or_null(bson_t *doc, const char *key, const char *value)
{
    if (value == NULL)
        bson_append_null(doc, key, -1);
    else
        bson_append_utf8(doc, key, -1, value, -1);
}

/* Seqs travel as int64; larger bounds are clamped by the callers. */
static int64_t seq_i64(uint64_t seq)
{
    return seq > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)seq;
}

/* ---- opening ------------------------------------------------------------- */

/* Hosts and database, for log lines: never the credentials or options. */
static char *describe_uri(const mongoc_uri_t *uri, const char *db)
{
    size_t cap = strlen(db) + 64, len = 0;
    const char *srv = mongoc_uri_get_srv_hostname(uri);
    for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h != NULL; h = h->next)
        cap += strlen(h->host_and_port) + 1;
    if (srv != NULL)
        cap += strlen(srv);
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    if (srv != NULL) {
        len += (size_t)snprintf(out + len, cap - len, "srv:%s", srv);
    } else {
        for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h != NULL; h = h->next)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", h->host_and_port);
    }
    snprintf(out + len, cap - len, "/%s", db);
    return out;
}

/* The password part of "scheme://user:password@host...", to keep it out of
 * a parse error message; NULL when there is none. */
static char *uri_password(const char *uri)
{
    const char *auth = strstr(uri, "://");
    if (auth == NULL)
        return NULL;
    auth += 3;
    const char *end = auth + strcspn(auth, "/?");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL || colon + 1 == at)
        return NULL;
    return strndup(colon + 1, (size_t)(at - colon - 1));
}

static mongoc_uri_t *parse_uri(const char *text)
{
    bson_error_t err;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(text, &err);
    if (uri != NULL)
        return uri;
    char *password = uri_password(text);
    if (password != NULL && strstr(err.message, password) != NULL)
        log_error("store mongodb: invalid MongoDB URI (details hidden: they quote the password)");
    else
        log_error("store mongodb: invalid MongoDB URI: %s", err.message);
    free(password);
    return NULL;
}

static void uri_default_int(mongoc_uri_t *uri, const char *option, int32_t value)
{
    if (!mongoc_uri_has_option(uri, option))
        mongoc_uri_set_option_as_int32(uri, option, value);
}

/* Durable writes: j:true, and w:"majority" unless the URI names an
 * acknowledged w of its own (w:0 would hide duplicate-key errors). */
static int uri_set_durable_writes(mongoc_uri_t *uri)
{
    mongoc_write_concern_t *wc = mongoc_write_concern_copy(mongoc_uri_get_write_concern(uri));
    if (wc == NULL)
        return -1;
    int32_t w = mongoc_write_concern_get_w(wc);
    if (w == MONGOC_WRITE_CONCERN_W_DEFAULT || w == MONGOC_WRITE_CONCERN_W_UNACKNOWLEDGED ||
        w == MONGOC_WRITE_CONCERN_W_ERRORS_IGNORED) {
        if (w != MONGOC_WRITE_CONCERN_W_DEFAULT)
            log_warn("store mongodb: unacknowledged writes (w=%d) replaced by w=majority", (int)w);
        mongoc_write_concern_set_wmajority(wc, 0);
    }
    if (!mongoc_write_concern_journal_is_set(wc) || !mongoc_write_concern_get_journal(wc))
        mongoc_write_concern_set_journal(wc, true);
    int ok = mongoc_write_concern_is_valid(wc);
    if (ok)
        mongoc_uri_set_write_concern(uri, wc);
    else
        log_error("store mongodb: the URI's write concern is invalid");
    mongoc_write_concern_destroy(wc);
    return ok ? 0 : -1;
}

/* createIndexes for one index; one that exists already (same name and key)
 * is fine.  One index per command: FerretDB v1.24 panics on a createIndexes
 * that lists two or more indexes that all exist already. */
static int create_index(mongoc_database_t *db, const char *coll, const char *name, const bson_t *key, int unique)
{
    bson_t cmd = BSON_INITIALIZER;
    bson_t indexes, index;
    bson_t reply;
    bson_error_t err;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
    BSON_APPEND_DOCUMENT(&index, "key", key);
    BSON_APPEND_UTF8(&index, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&index, "unique", true);
    bson_append_document_end(&indexes, &index);
    bson_append_array_end(&cmd, &indexes);
    bool ok = mongoc_database_write_command_with_opts(db, &cmd, NULL, &reply, &err);
    if (!ok)
        log_error("store mongodb: createIndexes %s.%s: %s (code %u)", coll, name, err.message, err.code);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok ? 0 : -1;
}

/* Checks the server answers and creates the indexes (proto/store.md). */
static int ensure_indexes(mongo_store *s)
{
    mongoc_client_t *client = mongoc_client_pool_pop(s->pool);
    if (client == NULL)
        return -1;
    mongoc_database_t *db = mongoc_client_get_database(client, s->db_name);
    bson_t *username = BCON_NEW("username", BCON_INT32(1));
    bson_t *tenant_seq = BCON_NEW("tenant", BCON_INT32(1), "seq", BCON_INT32(1));
    bson_t *tenant_event_seq = BCON_NEW("tenant", BCON_INT32(1), "event", BCON_INT32(1), "seq", BCON_INT32(1));
    bson_t *tenant = BCON_NEW("tenant", BCON_INT32(1));
    int rc = create_index(db, COLL_USERS, "username_1", username, 1);
    if (rc == 0)
        rc = create_index(db, COLL_EVENTS, "tenant_1_seq_1", tenant_seq, 1);
    if (rc == 0)
        rc = create_index(db, COLL_EVENTS, "tenant_1_event_1_seq_1", tenant_event_seq, 0);
    if (rc == 0)
        rc = create_index(db, COLL_LATEST, "tenant_1", tenant, 0);
    bson_destroy(username);
    bson_destroy(tenant_seq);
    bson_destroy(tenant_event_seq);
    bson_destroy(tenant);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(s->pool, client);
    return rc;
}

store *store_mongo_open(const char *uri_text)
{
    if (uri_text == NULL || *uri_text == '\0') {
        log_error("store mongodb: empty URI");
        return NULL;
    }
    pthread_once(&driver_once, driver_init);
    mongoc_uri_t *uri = parse_uri(uri_text);
    if (uri == NULL)
        return NULL;

    mongo_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        log_error("store mongodb: out of memory");
        mongoc_uri_destroy(uri);
        return NULL;
    }
    s->base.ops = &mongo_ops;
    for (int i = 0; i < SEQ_STRIPES; i++)
        pthread_mutex_init(&s->stripes[i].lock, NULL);

    const char *db = mongoc_uri_get_database(uri);
    s->db_name = strdup(db != NULL && *db != '\0' ? db : DEFAULT_DB_NAME);
    s->where = s->db_name ? describe_uri(uri, s->db_name) : NULL;
    if (s->db_name == NULL || s->where == NULL) {
        log_error("store mongodb: out of memory");
        goto fail;
    }
    uri_default_int(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, SERVER_SELECTION_TIMEOUT_MS);
    uri_default_int(uri, MONGOC_URI_CONNECTTIMEOUTMS, CONNECT_TIMEOUT_MS);
    uri_default_int(uri, MONGOC_URI_SOCKETTIMEOUTMS, SOCKET_TIMEOUT_MS);
    if (mongoc_uri_get_appname(uri) == NULL)
        mongoc_uri_set_appname(uri, "broker");
    if (uri_set_durable_writes(uri) != 0)
        goto fail;

    bson_error_t err;
    s->pool = mongoc_client_pool_new_with_error(uri, &err);
    if (s->pool == NULL) {
        mg_fail("client pool", &err);
        goto fail;
    }
    mongoc_client_pool_set_error_api(s->pool, MONGOC_ERROR_API_VERSION_2);
    if (ensure_indexes(s) != 0)
        goto fail;
    const mongoc_write_concern_t *wc = mongoc_uri_get_write_concern(uri);
    if (mongoc_write_concern_get_wmajority(wc))
        log_info("store mongodb: %s (writes w=majority, j=true)", s->where);
    else
        log_info("store mongodb: %s (writes w=%d, j=true)", s->where, (int)mongoc_write_concern_get_w(wc));
    mongoc_uri_destroy(uri);
    return &s->base;
fail:
    log_error("store mongodb: cannot open %s", s->where ? s->where : "the store");
    mongoc_uri_destroy(uri);
    mongo_ops.close(&s->base);
    return NULL;
}

static void mongo_close(store *base)
{
    mongo_store *s = (mongo_store *)base;
    if (s == NULL)
        return;
    if (s->pool != NULL)
        mongoc_client_pool_destroy(s->pool);
    for (int i = 0; i < SEQ_STRIPES; i++) {
        free(s->stripes[i].tenant);
        pthread_mutex_destroy(&s->stripes[i].lock);
    }
    free(s->where);
    free(s->db_name);
    free(s);
}

/* ---- clients and collections --------------------------------------------- */

/* One pooled client and one collection handle for one call. */
typedef struct mg_coll {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
} mg_coll;

static int coll_acquire(mongo_store *s, const char *name, mg_coll *c)
{
    c->client = mongoc_client_pool_pop(s->pool);
    if (c->client == NULL) {
        log_error("store mongodb: no client from the pool");
        c->coll = NULL;
        return -1;
    }
    c->coll = mongoc_client_get_collection(c->client, s->db_name, name);
    return 0;
}

static void coll_release(mongo_store *s, mg_coll *c)
{
    if (c->coll != NULL)
        mongoc_collection_destroy(c->coll);
    if (c->client != NULL)
        mongoc_client_pool_push(s->pool, c->client);
    c->coll = NULL;
    c->client = NULL;
}

/* Walks a cursor, calling fn(doc, arg) for each document until it returns
 * non-zero; destroys the cursor.  STORE_OK unless the cursor failed. */
static store_status cursor_walk(mongoc_cursor_t *cur, int (*fn)(const bson_t *doc, void *arg), void *arg,
                                const char *what)
{
    const bson_t *doc;
    bson_error_t err;
    store_status ret = STORE_OK;
    while (mongoc_cursor_next(cur, &doc))
        if (fn(doc, arg) != 0)
            break;
    if (mongoc_cursor_error(cur, &err))
        ret = mg_fail(what, &err);
    mongoc_cursor_destroy(cur);
    return ret;
}

/* ---- users --------------------------------------------------------------- */

/* A user document viewed in place (strings point into `doc`). */
static void user_view(const bson_t *doc, store_user *u)
{
    memset(u, 0, sizeof(*u));
    const char *id = doc_utf8(doc, "id");
    snprintf(u->id, sizeof(u->id), "%s", id ? id : "");
    u->username = (char *)doc_utf8(doc, "username");
    u->password_hash = (char *)doc_utf8(doc, "password_hash");
    bson_iter_t it;
    u->revoked = bson_iter_init_find(&it, doc, "revoked") && bson_iter_as_bool(&it);
    u->tenant_name = (char *)doc_utf8(doc, "tenant_name");
    u->email = (char *)doc_utf8(doc, "email");
    u->data = (char *)doc_utf8(doc, "data");
}

/* The mutable fields of a user, as stored (user_update $sets these). */
static void append_user_fields(bson_t *doc, const store_user *u)
{
    append_utf8_or_null(doc, "password_hash", u->password_hash);
    BSON_APPEND_BOOL(doc, "revoked", u->revoked != 0);
    append_utf8_or_null(doc, "tenant_name", u->tenant_name);
    append_utf8_or_null(doc, "email", u->email);
    append_utf8_or_null(doc, "data", u->data);
}

static store_status mongo_user_create(store *base, const store_user *u)
{
    mongo_store *s = (mongo_store *)base;
    if (u->username == NULL || u->password_hash == NULL || u->tenant_name == NULL)
        return mg_missing("user create");
    mg_coll c;
    if (coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "id", u->id);
    append_utf8_or_null(&doc, "username", u->username);
    append_user_fields(&doc, u);
    bson_error_t err;
    store_status ret = STORE_OK;
    if (!mongoc_collection_insert_one(c.coll, &doc, NULL, NULL, &err))
        ret = is_duplicate_key(&err) ? STORE_CONFLICT : mg_fail("user create", &err); /* only username is unique */
    bson_destroy(&doc);
    coll_release(s, &c);
    return ret;
}

typedef struct user_copy {
    store_user *out;
    int found, oom;
} user_copy;

static char *dup_or_null(const char *text, int *oom)
{
    if (text == NULL)
        return NULL;
    char *d = strdup(text);
    if (d == NULL)
        *oom = 1;
    return d;
}

static int user_copy_doc(const bson_t *doc, void *arg)
{
    user_copy *uc = arg;
    store_user view;
    user_view(doc, &view);
    memcpy(uc->out->id, view.id, sizeof(uc->out->id));
    uc->out->username = dup_or_null(view.username, &uc->oom);
    uc->out->password_hash = dup_or_null(view.password_hash, &uc->oom);
    uc->out->revoked = view.revoked;
    uc->out->tenant_name = dup_or_null(view.tenant_name, &uc->oom);
    uc->out->email = dup_or_null(view.email, &uc->oom);
    uc->out->data = dup_or_null(view.data, &uc->oom);
    uc->found = 1;
    return 1;
}

static store_status mongo_user_get(store *base, const char *username, store_user *out)
{
    mongo_store *s = (mongo_store *)base;
    memset(out, 0, sizeof(*out));
    if (username == NULL)
        return STORE_NOT_FOUND;
    mg_coll c;
    if (coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("username", BCON_UTF8(username));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    user_copy uc = {.out = out};
    store_status ret = cursor_walk(mongoc_collection_find_with_opts(c.coll, filter, opts, NULL), user_copy_doc, &uc,
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
    coll_release(s, &c);
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

static store_status mongo_user_list(store *base, store_user_fn fn, void *arg)
{
    mongo_store *s = (mongo_store *)base;
    mg_coll c;
    if (coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    /* ObjectIds grow with time: _id order is creation order. */
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    user_walk w = {fn, arg};
    store_status ret =
        cursor_walk(mongoc_collection_find_with_opts(c.coll, &filter, opts, NULL), user_walk_doc, &w, "user list");
    bson_destroy(opts);
    bson_destroy(&filter);
    coll_release(s, &c);
    return ret;
}

/* $set on the user named `username`; no match = no such user. */
static store_status user_set(mongo_store *s, const char *username, const bson_t *set, const char *what)
{
    if (username == NULL)
        return STORE_NOT_FOUND;
    mg_coll c;
    if (coll_acquire(s, COLL_USERS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("username", BCON_UTF8(username));
    bson_t update = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT(&update, "$set", set);
    bson_t reply;
    bson_error_t err;
    store_status ret;
    if (!mongoc_collection_update_one(c.coll, filter, &update, NULL, &reply, &err))
        ret = mg_fail(what, &err);
    else
        ret = doc_int64(&reply, "matchedCount") > 0 ? STORE_OK : STORE_NOT_FOUND;
    bson_destroy(&reply);
    bson_destroy(&update);
    bson_destroy(filter);
    coll_release(s, &c);
    return ret;
}

static store_status mongo_user_update(store *base, const store_user *u)
{
    bson_t set = BSON_INITIALIZER;
    append_user_fields(&set, u);
    store_status ret = user_set((mongo_store *)base, u->username, &set, "user update");
    bson_destroy(&set);
    return ret;
}

static store_status mongo_user_set_revoked(store *base, const char *username, int revoked)
{
    bson_t set = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&set, "revoked", revoked != 0);
    store_status ret = user_set((mongo_store *)base, username, &set, "user set revoked");
    bson_destroy(&set);
    return ret;
}

/* ---- events: writing ----------------------------------------------------- */

static seq_stripe *stripe_for(mongo_store *s, const char *tenant)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->stripes[h % SEQ_STRIPES];
}

/* The stripe's cached last seq of `tenant`, 0 when it has none. */
static uint64_t stripe_last_seq(const seq_stripe *st, const char *tenant)
{
    return st->tenant != NULL && strcmp(st->tenant, tenant) == 0 ? st->last_seq : 0;
}

static void stripe_remember(seq_stripe *st, const char *tenant, uint64_t seq)
{
    if (st->tenant == NULL || strcmp(st->tenant, tenant) != 0) {
        free(st->tenant);
        st->tenant = strdup(tenant); /* NULL on OOM: just no cache */
    }
    st->last_seq = st->tenant ? seq : 0;
}

static void stripe_forget(seq_stripe *st)
{
    free(st->tenant);
    st->tenant = NULL;
    st->last_seq = 0;
}

/* The tenant's highest stored seq (0 when it has no event) into *max. */
static store_status events_max_seq(mongoc_collection_t *events, const char *tenant, uint64_t *max)
{
    bson_t *filter = BCON_NEW("tenant", BCON_UTF8(tenant));
    bson_t *opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}", "limit", BCON_INT64(1), "projection", "{",
                            "seq", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t err;
    int64_t seq = 0;
    if (mongoc_cursor_next(cur, &doc))
        seq = doc_int64(doc, "seq");
    store_status ret = mongoc_cursor_error(cur, &err) ? mg_fail("event max seq", &err) : STORE_OK;
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    *max = seq > 0 ? (uint64_t)seq : 0;
    return ret;
}

/* Raises the latest hint of (tenant, event) to at least `seq` ($max never
 * lowers it), creating it when missing. */
static store_status latest_raise(mongoc_collection_t *latest, const char *tenant, const char *event, uint64_t seq)
{
    bson_t *filter = BCON_NEW("_id", "{", "tenant", BCON_UTF8(tenant), "event", BCON_UTF8(event), "}");
    bson_t *update = BCON_NEW("$max", "{", "seq", BCON_INT64(seq_i64(seq)), "}", "$setOnInsert", "{", "tenant",
                              BCON_UTF8(tenant), "event", BCON_UTF8(event), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t err;
    store_status ret = STORE_OK;
    /* Two processes upserting a new name race: the loser gets a duplicate
     * key, and its second try finds the document and applies $max. */
    for (int attempt = 0;; attempt++) {
        if (mongoc_collection_update_one(latest, filter, update, opts, NULL, &err))
            break;
        if (attempt == 0 && is_duplicate_key(&err))
            continue;
        ret = mg_fail("event insert: latest", &err);
        break;
    }
    bson_destroy(opts);
    bson_destroy(update);
    bson_destroy(filter);
    return ret;
}

/* Inserts the event at `seq`; *taken is set when another writer holds it. */
static store_status event_put(mongoc_collection_t *events, const char *tenant, const char *event, const char *data,
                              int64_t ts_ms, uint64_t seq, int *taken)
{
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "tenant", tenant);
    BSON_APPEND_INT64(&doc, "seq", seq_i64(seq));
    BSON_APPEND_UTF8(&doc, "event", event);
    BSON_APPEND_UTF8(&doc, "data", data);
    BSON_APPEND_INT64(&doc, "ts", ts_ms);
    bson_error_t err;
    store_status ret = STORE_OK;
    *taken = 0;
    if (!mongoc_collection_insert_one(events, &doc, NULL, NULL, &err)) {
        if (is_duplicate_key(&err))
            *taken = 1; /* the only unique key besides _id is (tenant, seq) */
        else
            ret = mg_fail("event insert", &err);
    }
    bson_destroy(&doc);
    return ret;
}

/* After repeated lost races (other processes took the seqs), wait a little,
 * longer each time, with jitter, so that racing writers spread out. */
static void conflict_backoff(int round)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned cap_us = round < 6 ? 500u << round : 32000u;
    usleep((useconds_t)((unsigned long)now.tv_nsec % cap_us));
}

static store_status mongo_event_insert(store *base, const char *tenant, const char *event, const char *data,
                                       int64_t ts_ms, uint64_t *seq_out)
{
    mongo_store *s = (mongo_store *)base;
    if (tenant == NULL || event == NULL || data == NULL)
        return mg_missing("event insert");
    seq_stripe *st = stripe_for(s, tenant);
    mongoc_client_t *client = mongoc_client_pool_pop(s->pool);
    if (client == NULL) {
        log_error("store mongodb: no client from the pool");
        return STORE_UNAVAILABLE;
    }
    mongoc_collection_t *events = mongoc_client_get_collection(client, s->db_name, COLL_EVENTS);
    mongoc_collection_t *latest = mongoc_client_get_collection(client, s->db_name, COLL_LATEST);

    pthread_mutex_lock(&st->lock);
    uint64_t last = stripe_last_seq(st, tenant);
    uint64_t seq = last ? last + 1 : 0; /* 0: read the max first */
    uint64_t hint_floor = 0;            /* this call raised the hint to at least this */
    int64_t deadline = bson_get_monotonic_time() + INSERT_CONFLICT_TIMEOUT_US;
    store_status ret = STORE_UNAVAILABLE;
    int taken = 0, conflicts = 0;
    for (;;) {
        if (seq == 0) {
            uint64_t max = 0;
            ret = events_max_seq(events, tenant, &max);
            if (ret != STORE_OK)
                break;
            seq = max + 1;
        }
        /* The hint first: a reader must never find this event above it.
         * After a conflict, raise it a few seqs ahead so that the probes
         * that follow are one round trip each, not two: otherwise the
         * process that won keeps winning, one write ahead of us in the
         * server's queue. */
        if (seq > hint_floor) {
            hint_floor = conflicts ? seq + PROBE_LOOKAHEAD - 1 : seq;
            ret = latest_raise(latest, tenant, event, hint_floor);
            if (ret != STORE_OK)
                break;
        }
        ret = event_put(events, tenant, event, data, ts_ms, seq, &taken);
        if (ret != STORE_OK || !taken)
            break;
        /* Another process stored `seq`, so seq + 1 has no hole below it:
         * probe it at once.  Every few conflicts read the max again (a
         * cached seq may be far behind), after a short random backoff. */
        ret = STORE_UNAVAILABLE;
        if (bson_get_monotonic_time() > deadline)
            break;
        if (++conflicts % CONFLICTS_BEFORE_REREAD == 0) {
            seq = 0;
            conflict_backoff(conflicts / CONFLICTS_BEFORE_REREAD);
        } else {
            seq++;
        }
    }
    if (ret == STORE_OK)
        stripe_remember(st, tenant, seq);
    else
        stripe_forget(st);
    pthread_mutex_unlock(&st->lock);

    if (taken)
        log_error("store mongodb: event insert: gave up after %d sequence conflicts with other writers", conflicts);
    else if (conflicts > CONFLICTS_BEFORE_REREAD)
        log_debug("store mongodb: event insert: %d sequence conflicts before seq %llu", conflicts,
                  (unsigned long long)seq);
    mongoc_collection_destroy(latest);
    mongoc_collection_destroy(events);
    mongoc_client_pool_push(s->pool, client);
    if (ret == STORE_OK && seq_out != NULL)
        *seq_out = seq;
    return ret;
}

/* ---- events: reading ----------------------------------------------------- */

typedef struct event_walk {
    const char *tenant;
    store_event_fn fn;
    void *arg;
} event_walk;

static int event_walk_doc(const bson_t *doc, void *arg)
{
    event_walk *w = arg;
    int64_t seq = doc_int64(doc, "seq");
    const char *event = doc_utf8(doc, "event");
    const char *data = doc_utf8(doc, "data");
    store_event ev = {
        .seq = seq > 0 ? (uint64_t)seq : 0,
        .tenant = w->tenant,
        .event = event ? event : "",
        .data = data ? data : "null",
        .ts_ms = doc_int64(doc, "ts"),
    };
    return w->fn(&ev, w->arg);
}

/* Finds events of the tenant matching `filter` (which names the tenant),
 * sorted by seq, and walks them. */
static store_status events_walk(mongoc_collection_t *events, const bson_t *filter, int64_t limit, event_walk *w,
                                const char *what)
{
    bson_t opts = BSON_INITIALIZER;
    bson_t sort;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "seq", 1);
    bson_append_document_end(&opts, &sort);
    if (limit > 0)
        BSON_APPEND_INT64(&opts, "limit", limit);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, filter, &opts, NULL);
    store_status ret = cursor_walk(cur, event_walk_doc, w, what);
    bson_destroy(&opts);
    return ret;
}

static store_status mongo_event_range(store *base, const char *tenant, uint64_t after, uint64_t upto, size_t limit,
                                      store_event_fn fn, void *arg)
{
    mongo_store *s = (mongo_store *)base;
    if (tenant == NULL)
        return mg_missing("event range");
    const uint64_t imax = (uint64_t)INT64_MAX;
    if (after >= imax)
        return STORE_OK;
    if (upto == 0 || upto > imax)
        upto = imax;
    if (upto <= after)
        return STORE_OK;
    int64_t lim = (limit == 0 || limit > imax) ? 0 : (int64_t)limit;

    mg_coll c;
    if (coll_acquire(s, COLL_EVENTS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("tenant", BCON_UTF8(tenant), "seq", "{", "$gt", BCON_INT64((int64_t)after), "$lte",
                              BCON_INT64((int64_t)upto), "}");
    event_walk w = {tenant, fn, arg};
    store_status ret = events_walk(c.coll, filter, lim, &w, "event range");
    bson_destroy(filter);
    coll_release(s, &c);
    return ret;
}

/* One event name of the tenant while event_latest() resolves it. */
typedef struct latest_name {
    char *event;  /* owned */
    uint64_t hint; /* latest.seq: >= the seq of every stored event of this name */
    uint64_t seq;  /* resolved: the newest event of this name at or below max; 0 = none */
} latest_name;

typedef struct latest_names {
    latest_name *v;
    size_t n, cap;
    int oom;
} latest_names;

static void latest_names_clear(latest_names *ln)
{
    for (size_t i = 0; i < ln->n; i++)
        free(ln->v[i].event);
    free(ln->v);
    memset(ln, 0, sizeof(*ln));
}

static int latest_names_add(const bson_t *doc, void *arg)
{
    latest_names *ln = arg;
    const char *event = doc_utf8(doc, "event");
    int64_t hint = doc_int64(doc, "seq");
    if (event == NULL || hint <= 0)
        return 0;
    if (ln->n == ln->cap) {
        size_t cap = ln->cap ? ln->cap * 2 : 16;
        latest_name *v = realloc(ln->v, cap * sizeof(*v));
        if (v == NULL) {
            ln->oom = 1;
            return 1;
        }
        ln->v = v;
        ln->cap = cap;
    }
    char *copy = strdup(event);
    if (copy == NULL) {
        ln->oom = 1;
        return 1;
    }
    ln->v[ln->n++] = (latest_name){copy, (uint64_t)hint, 0};
    return 0;
}

static int cmp_latest_hint(const void *a, const void *b)
{
    uint64_t x = ((const latest_name *)a)->hint, y = ((const latest_name *)b)->hint;
    return (x > y) - (x < y);
}

/* Marks the names whose hint is an event of that very name: verified. */
static int latest_names_verify(const bson_t *doc, void *arg)
{
    latest_names *ln = arg;
    int64_t seq = doc_int64(doc, "seq");
    const char *event = doc_utf8(doc, "event");
    if (seq <= 0 || event == NULL)
        return 0;
    /* Sorted by hint; several names may share one (failed attempts). */
    latest_name key = {.hint = (uint64_t)seq};
    latest_name *hit = bsearch(&key, ln->v, ln->n, sizeof(*ln->v), cmp_latest_hint);
    if (hit == NULL)
        return 0;
    while (hit > ln->v && hit[-1].hint == key.hint)
        hit--;
    for (; hit < ln->v + ln->n && hit->hint == key.hint; hit++)
        if (strcmp(hit->event, event) == 0)
            hit->seq = key.hint;
    return 0;
}

/* The newest event of one name at or below `max`, by the (tenant, event, seq)
 * index; for names whose hint could not be trusted. */
static store_status latest_name_lookup(mongoc_collection_t *events, const char *tenant, latest_name *name,
                                       uint64_t max)
{
    bson_t *filter = BCON_NEW("tenant", BCON_UTF8(tenant), "event", BCON_UTF8(name->event), "seq", "{", "$lte",
                              BCON_INT64(seq_i64(max)), "}");
    bson_t *opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}", "limit", BCON_INT64(1), "projection", "{",
                            "seq", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t err;
    if (mongoc_cursor_next(cur, &doc)) {
        int64_t seq = doc_int64(doc, "seq");
        name->seq = seq > 0 ? (uint64_t)seq : 0;
    }
    store_status ret = mongoc_cursor_error(cur, &err) ? mg_fail("event latest: lookup", &err) : STORE_OK;
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    return ret;
}

/* {tenant: T, seq: {$in: [seqs of the names, hint or resolved]}}. */
static bson_t *filter_seq_in(const char *tenant, const latest_names *ln, int use_hint, uint64_t max)
{
    bson_t *filter = bson_new();
    bson_t in, arr;
    uint32_t k = 0;
    BSON_APPEND_UTF8(filter, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(filter, "seq", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < ln->n; i++) {
        uint64_t seq = use_hint ? ln->v[i].hint : ln->v[i].seq;
        if (seq == 0 || seq > max)
            continue;
        char buf[16];
        const char *key;
        bson_uint32_to_string(k++, &key, buf, sizeof(buf));
        BSON_APPEND_INT64(&arr, key, seq_i64(seq));
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(filter, &in);
    return filter;
}

static store_status mongo_event_latest(store *base, const char *tenant, store_event_fn fn, void *arg,
                                       uint64_t *max_seq_out)
{
    mongo_store *s = (mongo_store *)base;
    if (tenant == NULL)
        return mg_missing("event latest");
    mongoc_client_t *client = mongoc_client_pool_pop(s->pool);
    if (client == NULL) {
        log_error("store mongodb: no client from the pool");
        return STORE_UNAVAILABLE;
    }
    mongoc_collection_t *events = mongoc_client_get_collection(client, s->db_name, COLL_EVENTS);
    mongoc_collection_t *latest = mongoc_client_get_collection(client, s->db_name, COLL_LATEST);
    latest_names ln = {0};
    bson_t *filter = NULL;
    bson_t *opts = NULL;

    /* 1. The max first: every stored seq up to it is readable (no holes), and
     *    every event up to it raised its name's hint before it was written. */
    uint64_t max = 0;
    store_status ret = events_max_seq(events, tenant, &max);
    if (ret != STORE_OK || max == 0)
        goto done;

    /* 2. The hints of every name of the tenant. */
    filter = BCON_NEW("tenant", BCON_UTF8(tenant));
    opts = BCON_NEW("projection", "{", "event", BCON_INT32(1), "seq", BCON_INT32(1), "}");
    ret = cursor_walk(mongoc_collection_find_with_opts(latest, filter, opts, NULL), latest_names_add, &ln,
                      "event latest: names");
    bson_destroy(filter);
    bson_destroy(opts);
    filter = opts = NULL;
    if (ret == STORE_OK && ln.oom) {
        log_error("store mongodb: out of memory reading latest events");
        ret = STORE_UNAVAILABLE;
    }
    if (ret != STORE_OK || ln.n == 0)
        goto done;

    /* 3. Trust a hint <= max that is an event of its own name. */
    qsort(ln.v, ln.n, sizeof(*ln.v), cmp_latest_hint);
    filter = filter_seq_in(tenant, &ln, 1, max);
    opts = BCON_NEW("projection", "{", "seq", BCON_INT32(1), "event", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    ret = cursor_walk(mongoc_collection_find_with_opts(events, filter, opts, NULL), latest_names_verify, &ln,
                      "event latest: verify");
    bson_destroy(filter);
    bson_destroy(opts);
    filter = opts = NULL;

    /* 4. Look the others up (inserts in flight, failed or cut short). */
    for (size_t i = 0; ret == STORE_OK && i < ln.n; i++)
        if (ln.v[i].seq == 0)
            ret = latest_name_lookup(events, tenant, &ln.v[i], max);

    /* 5. The events themselves, oldest first. */
    if (ret == STORE_OK) {
        filter = filter_seq_in(tenant, &ln, 0, max);
        event_walk w = {tenant, fn, arg};
        ret = events_walk(events, filter, 0, &w, "event latest");
    }

done:
    if (filter != NULL)
        bson_destroy(filter);
    latest_names_clear(&ln);
    mongoc_collection_destroy(latest);
    mongoc_collection_destroy(events);
    mongoc_client_pool_push(s->pool, client);
    if (ret == STORE_OK && max_seq_out != NULL)
        *max_seq_out = max;
    return ret;
}

static store_status mongo_ping(store *base)
{
    mongo_store *s = (mongo_store *)base;
    mongoc_client_t *client = mongoc_client_pool_pop(s->pool);
    if (client == NULL) {
        log_error("store mongodb: no client from the pool");
        return STORE_UNAVAILABLE;
    }
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_t reply;
    bson_error_t err;
    store_status ret = STORE_OK;
    if (!mongoc_client_command_simple(client, s->db_name, cmd, NULL, &reply, &err))
        ret = mg_fail("ping", &err);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_pool_push(s->pool, client);
    return ret;
}

static const store_ops mongo_ops = {
    .name = "mongodb",
    .user_create = mongo_user_create,
    .user_get = mongo_user_get,
    .user_list = mongo_user_list,
    .user_update = mongo_user_update,
    .user_set_revoked = mongo_user_set_revoked,
    .event_insert = mongo_event_insert,
    .event_latest = mongo_event_latest,
    .event_range = mongo_event_range,
    .ping = mongo_ping,
    .close = mongo_close,
};
