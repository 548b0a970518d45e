/*
 * store.h - the one interface every service uses to reach persistent state.
 *
 * A store holds two things: users (unique username) and events (per-tenant
 * sequence, allocated atomically with the write).  Backends live side by side
 * in this folder (store_sqlite.c, store_mongo*.c) and are picked once at
 * start by store_open() from a URI; no service ever asks which one it has.
 *
 * Every call returns a store_status.  STORE_UNAVAILABLE means the backend
 * could not be reached or failed: callers answer 500/503 and log; it is never
 * a reason to crash.  Every string handed out in a struct is owned by that
 * struct and released by the matching *_clear() function.
 *
 * Thread safety: a store may be used from many threads at once.
 */
#ifndef BROKER_STORE_H
#define BROKER_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef enum store_status {
    STORE_OK = 0,
    STORE_NOT_FOUND = 1,   /* no such user */
    STORE_CONFLICT = 2,    /* unique constraint: username taken */
    STORE_UNAVAILABLE = 3, /* backend fault; details are logged by the backend */
    STORE_LIMIT = 4,       /* an insert whose event name would pass its tenant's max_names */
    STORE_FULL = 5,        /* the disk under the store is full: the write was not made */
} store_status;

/* A user as stored.  `email` and `data` may be NULL; `data` is compact JSON text. */
typedef struct store_user {
    char id[37];         /* UUID v4, text form */
    char *username;
    char *password_hash; /* Argon2id encoded hash; never leaves the server */
    int revoked;
    char *tenant_name;
    char *email;         /* NULL when absent */
    char *data;          /* compact JSON text, NULL when absent */
    long long token_gen; /* JWTs carry it ("gen"); revoking moves it, voiding every token issued before */
} store_user;

/* An event as stored.  `data` is compact JSON text. */
typedef struct store_event {
    uint64_t seq;        /* per-tenant, strictly increasing from 1; the event id */
    const char *tenant;
    const char *event;
    const char *data;
    int64_t ts_ms;       /* network-corrected wall clock at insert, ms since epoch */
} store_event;

/* One event to store, and what became of it (see event_insert_many). */
typedef struct store_insert {
    const char *tenant, *event, *data; /* data: compact JSON text */
    int64_t ts_ms;
    /* in: refuse (STORE_LIMIT) a name new to the tenant once the tenant has
     * this many names (0: no bound).  Exact within one process; several
     * processes writing one MongoDB may pass it by a few. */
    size_t max_names;
    uint64_t seq;        /* out: its sequence, on STORE_OK */
    store_status status; /* out */
} store_insert;

/* Called once per event; the event is only valid during the call.
 * Return 0 to go on, non-zero to stop early (the walk then returns STORE_OK). */
typedef int (*store_event_fn)(const store_event *ev, void *arg);
/* Called once per user; same lifetime and return rules. */
typedef int (*store_user_fn)(const store_user *user, void *arg);

typedef struct store store;

/* The backend's table of operations (Nchan-style).  Use the store_* wrappers below. */
typedef struct store_ops {
    const char *name;
    store_status (*user_create)(store *s, const store_user *u);
    store_status (*user_get)(store *s, const char *username, store_user *out);
    store_status (*user_list)(store *s, store_user_fn fn, void *arg);
    /* Replaces tenant_name, password_hash, email, data, revoked and token_gen
     * of the user named u->username. */
    store_status (*user_update)(store *s, const store_user *u);
    /* Sets revoked; revoking (revoked = 1) also adds one to token_gen in the
     * same write. */
    store_status (*user_set_revoked)(store *s, const char *username, int revoked);
    /* Stores events, each with its tenant's next sequence number allocated in
     * the same atomic, durable write; keeps the latest-per-name index up to
     * date.  Each item gets its own status: on STORE_OK that event is on disk
     * and item->seq holds its sequence.  A backend may store the whole batch
     * in one write (one fsync), so a caller with many inserts waiting should
     * hand them over together. */
    void (*event_insert_many)(store *s, store_insert *items, size_t n);
    /* The latest event of every event name of the tenant, oldest first.
     * *max_seq_out (may be NULL) receives the tenant's highest sequence at the
     * moment of the read (0 when it has no event), read in the same snapshot. */
    store_status (*event_latest)(store *s, const char *tenant, store_event_fn fn, void *arg,
                                 uint64_t *max_seq_out);
    /* Events of the tenant with after < seq <= upto (upto 0 = no upper bound),
     * in sequence order, at most `limit` of them (0 = no limit). */
    store_status (*event_range)(store *s, const char *tenant, uint64_t after, uint64_t upto,
                                size_t limit, store_event_fn fn, void *arg);
    /* STORE_OK when the backend answers. */
    store_status (*ping)(store *s);
    void (*close)(store *s);
} store_ops;

struct store {
    const store_ops *ops;
};

/* Opens the store named by `uri`:
 *   "mongodb://..."           the MongoDB backend (when built in)
 *   "sqlite:PATH" or a path   the embedded SQLite backend, database file at PATH
 *                             (a directory PATH gets PATH/broker.sqlite3)
 * Returns NULL and logs the reason on failure. */
store *store_open(const char *uri);
void store_close(store *s);

/* Backend constructors, for store_open() and the conformance tests. */
store *store_sqlite_open(const char *path);
store *store_mongo_open(const char *uri);

void store_user_clear(store_user *u);
/* Copies `from` into `out` with strings of its own; on out of memory returns
 * -1 with `out` cleared.  Backends use it to hand out a user they viewed in place. */
int store_user_copy(store_user *out, const store_user *from);
const char *store_status_text(store_status st);

static inline store_status store_user_create(store *s, const store_user *u) { return s->ops->user_create(s, u); }
static inline store_status store_user_get(store *s, const char *username, store_user *out) { return s->ops->user_get(s, username, out); }
static inline store_status store_user_list(store *s, store_user_fn fn, void *arg) { return s->ops->user_list(s, fn, arg); }
static inline store_status store_user_update(store *s, const store_user *u) { return s->ops->user_update(s, u); }
static inline store_status store_user_set_revoked(store *s, const char *username, int revoked) { return s->ops->user_set_revoked(s, username, revoked); }
static inline void store_event_insert_many(store *s, store_insert *items, size_t n) { s->ops->event_insert_many(s, items, n); }
/* One event: store_event_insert_many() of one item. */
store_status store_event_insert(store *s, const char *tenant, const char *event, const char *data, int64_t ts_ms, uint64_t *seq_out);
static inline store_status store_event_latest(store *s, const char *tenant, store_event_fn fn, void *arg, uint64_t *max_seq_out) { return s->ops->event_latest(s, tenant, fn, arg, max_seq_out); }
static inline store_status store_event_range(store *s, const char *tenant, uint64_t after, uint64_t upto, size_t limit, store_event_fn fn, void *arg) { return s->ops->event_range(s, tenant, after, upto, limit, fn, arg); }
static inline store_status store_ping(store *s) { return s->ops->ping(s); }

#endif
