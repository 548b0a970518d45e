/*
 * store_mongo.c - the MongoDB store, for split deployments (libmongoc).
 *
 * This file opens it and holds the helpers; users are in store_mongo_users.c,
 * events in store_mongo_events.c (mongo_internal.h is what they share).
 *
 * Same interface and semantics as store_sqlite.c; proto/store.md documents the
 * collections and indexes of both backends.  The idea:
 *
 *   - No transactions (a standalone server and FerretDB have none), so every
 *     guarantee rests on single-document atomicity and unique indexes.
 *   - A tenant's sequence is allocated BY the event insert itself: an event is
 *     inserted at (the tenant's highest stored seq) + 1, and the unique index
 *     events(tenant, seq) makes exactly one of two racing writers win.  The
 *     loser (only ever another process, see below) reads the max once (its
 *     cached seq was behind), then, racing, knows that seq is stored and
 *     probes seq + 1, re-reading the max every few conflicts and giving up
 *     (STORE_UNAVAILABLE) after INSERT_CONFLICT_TIMEOUT_US.  Events
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
#include "mongo_internal.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
store_status mg_fail(const char *what, const bson_error_t *err)
{
    log_error("store mongodb: %s: %s (domain %u, code %u)", what, err->message, err->domain, err->code);
    return STORE_UNAVAILABLE;
}

int mg_is_duplicate_key(const bson_error_t *err)
{
    return err->code == DUPLICATE_KEY;
}

/* A required string argument is NULL: a caller's bug, answered like the
 * SQLite backend's NOT NULL constraint, never a crash. */
store_status mg_missing(const char *what)
{
    log_error("store mongodb: %s: a required field is missing", what);
    return STORE_UNAVAILABLE;
}

/* ---- small BSON helpers -------------------------------------------------- */

/* A string field of `doc`, or NULL when absent or not a string. */
const char *mg_doc_utf8(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

int64_t mg_doc_int64(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

void mg_append_utf8_or_null(bson_t *doc, const char *key, const char *value)
{
    if (value == NULL)
        bson_append_null(doc, key, -1);
    else
        bson_append_utf8(doc, key, -1, value, -1);
}

/* Seqs travel as int64; larger bounds are clamped by the callers. */
int64_t mg_seq_i64(uint64_t seq)
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

mongoc_client_t *mg_client_pop(mongo_store *s)
{
    mongoc_client_t *client = mongoc_client_pool_pop(s->pool);
    if (client == NULL)
        log_error("store mongodb: no client from the pool");
    return client;
}

int mg_coll_acquire(mongo_store *s, const char *name, mg_coll *c)
{
    c->client = mg_client_pop(s);
    if (c->client == NULL) {
        c->coll = NULL;
        return -1;
    }
    c->coll = mongoc_client_get_collection(c->client, s->db_name, name);
    return 0;
}

void mg_coll_release(mongo_store *s, mg_coll *c)
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
store_status mg_cursor_walk(mongoc_cursor_t *cur, int (*fn)(const bson_t *doc, void *arg), void *arg,
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


static store_status mongo_ping(store *base)
{
    mongo_store *s = (mongo_store *)base;
    mongoc_client_t *client = mg_client_pop(s);
    if (client == NULL)
        return STORE_UNAVAILABLE;
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
    .event_insert_many = mongo_event_insert_many,
    .event_latest = mongo_event_latest,
    .event_range = mongo_event_range,
    .ping = mongo_ping,
    .close = mongo_close,
};
