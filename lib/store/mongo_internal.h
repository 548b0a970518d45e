/*
 * mongo_internal.h - what the three files of the MongoDB store share:
 *   store_mongo.c         opening, the driver, errors, BSON and client helpers
 *   store_mongo_users.c   users
 *   store_mongo_events.c  events: the seq allocation, writing and reading
 * The design is described at the top of store_mongo.c.
 */
#ifndef BROKER_MONGO_INTERNAL_H
#define BROKER_MONGO_INTERNAL_H

#include "store.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdint.h>

#define DEFAULT_DB_NAME "broker"
#define SERVER_SELECTION_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_MS 3000
#define SOCKET_TIMEOUT_MS 10000
#define SEQ_STRIPES 64
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

/* One pooled client and one collection handle for one call. */
typedef struct mg_coll {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
} mg_coll;

/* Errors: log what failed and answer STORE_UNAVAILABLE. */
store_status mg_fail(const char *what, const bson_error_t *err);
int mg_is_duplicate_key(const bson_error_t *err);
store_status mg_missing(const char *what);

/* BSON helpers. */
const char *mg_doc_utf8(const bson_t *doc, const char *key);
int64_t mg_doc_int64(const bson_t *doc, const char *key);
void mg_append_utf8_or_null(bson_t *doc, const char *key, const char *value);
int64_t mg_seq_i64(uint64_t seq);

/* One pooled client (NULL, logged, when the pool has none), or a client and a
 * collection, per call; a cursor walked to its end. */
mongoc_client_t *mg_client_pop(mongo_store *s);
int mg_coll_acquire(mongo_store *s, const char *name, mg_coll *c);
void mg_coll_release(mongo_store *s, mg_coll *c);
store_status mg_cursor_walk(mongoc_cursor_t *cur, int (*fn)(const bson_t *doc, void *arg), void *arg,
                            const char *what);

/* The store_ops entries of the other two files. */
store_status mongo_user_create(store *base, const store_user *u);
store_status mongo_user_get(store *base, const char *username, store_user *out);
store_status mongo_user_list(store *base, store_user_fn fn, void *arg);
store_status mongo_user_update(store *base, const store_user *u);
store_status mongo_user_set_revoked(store *base, const char *username, int revoked);
void mongo_event_insert_many(store *base, store_insert *items, size_t n);
store_status mongo_event_latest(store *base, const char *tenant, store_event_fn fn, void *arg, uint64_t *max_seq_out);
store_status mongo_event_range(store *base, const char *tenant, uint64_t after, uint64_t upto, size_t limit,
                               store_event_fn fn, void *arg);

#endif
