/*
 * store_mongo_events.c - events in the MongoDB store: the seq allocated by the
 * insert itself, the `latest` hints, and reading back (design: the top of
 * store_mongo.c; collections: proto/store.md).
 */
#include "mongo_internal.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INSERT_CONFLICT_TIMEOUT_US 5000000 /* lost races (other processes) before giving up */
#define CONFLICTS_BEFORE_REREAD 8           /* probes of the next seq before reading the max again */
#define PROBE_LOOKAHEAD CONFLICTS_BEFORE_REREAD

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
        seq = mg_doc_int64(doc, "seq");
    store_status ret = mongoc_cursor_error(cur, &err) ? mg_fail("event max seq", &err) : STORE_OK;
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    *max = seq > 0 ? (uint64_t)seq : 0;
    return ret;
}

/* Raises the latest hint of (tenant, event) to at least `seq` ($max never
 * lowers it), creating it when missing. */
static store_status latest_raise(mongoc_collection_t *latest, const char *tenant, const char *event, uint64_t seq,
                                 int *created)
{
    bson_t *filter = BCON_NEW("_id", "{", "tenant", BCON_UTF8(tenant), "event", BCON_UTF8(event), "}");
    bson_t *update = BCON_NEW("$max", "{", "seq", BCON_INT64(mg_seq_i64(seq)), "}", "$setOnInsert", "{", "tenant",
                              BCON_UTF8(tenant), "event", BCON_UTF8(event), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_error_t err;
    store_status ret = STORE_OK;
    /* Two processes upserting a new name race: the loser gets a duplicate
     * key, and its second try finds the document and applies $max. */
    for (int attempt = 0;; attempt++) {
        bson_t reply;
        if (mongoc_collection_update_one(latest, filter, update, opts, &reply, &err)) {
            *created = mg_doc_int64(&reply, "upsertedCount") > 0;
            bson_destroy(&reply);
            break;
        }
        bson_destroy(&reply);
        if (attempt == 0 && mg_is_duplicate_key(&err))
            continue;
        ret = mg_fail("event insert: latest", &err);
        break;
    }
    bson_destroy(opts);
    bson_destroy(update);
    bson_destroy(filter);
    return ret;
}

/* After latest_raise() created the hint of a name new to the tenant: when
 * the tenant now holds more than `max_names` names, the hint is taken back
 * and the insert refused (STORE_LIMIT).  Costs nothing for a known name (the
 * upsert says whether it created the document); processes inserting new
 * names at the same moment may pass the bound by a few (store.h). */
static store_status names_check_new(mongoc_collection_t *latest, const char *tenant, const char *event,
                                    size_t max_names)
{
    bson_error_t err;
    bson_t *all = BCON_NEW("tenant", BCON_UTF8(tenant));
    bson_t *opts = BCON_NEW("limit", BCON_INT64((int64_t)max_names + 1));
    int64_t n = mongoc_collection_count_documents(latest, all, opts, NULL, NULL, &err);
    bson_destroy(opts);
    bson_destroy(all);
    if (n < 0)
        return mg_fail("event insert: name count", &err);
    if ((size_t)n <= max_names)
        return STORE_OK;
    bson_t *one = BCON_NEW("_id", "{", "tenant", BCON_UTF8(tenant), "event", BCON_UTF8(event), "}");
    if (!mongoc_collection_delete_one(latest, one, NULL, NULL, &err))
        log_error("store mongodb: could not take back the hint of a refused name: %s", err.message);
    bson_destroy(one);
    return STORE_LIMIT;
}

/* Inserts the event at `seq`; *taken is set when another writer holds it. */
static store_status event_put(mongoc_collection_t *events, const char *tenant, const char *event, const char *data,
                              int64_t ts_ms, uint64_t seq, int *taken)
{
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "tenant", tenant);
    BSON_APPEND_INT64(&doc, "seq", mg_seq_i64(seq));
    BSON_APPEND_UTF8(&doc, "event", event);
    BSON_APPEND_UTF8(&doc, "data", data);
    BSON_APPEND_INT64(&doc, "ts", ts_ms);
    bson_error_t err;
    store_status ret = STORE_OK;
    *taken = 0;
    if (!mongoc_collection_insert_one(events, &doc, NULL, NULL, &err)) {
        if (mg_is_duplicate_key(&err))
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

static store_status event_insert_one(store *base, const char *tenant, const char *event, const char *data,
                                     int64_t ts_ms, size_t max_names, uint64_t *seq_out)
{
    mongo_store *s = (mongo_store *)base;
    if (tenant == NULL || event == NULL || data == NULL)
        return mg_missing("event insert");
    seq_stripe *st = stripe_for(s, tenant);
    mongoc_client_t *client = mg_client_pop(s);
    if (client == NULL)
        return STORE_UNAVAILABLE;
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
         * After a second conflict (writers racing now), raise it a few seqs
         * ahead so that the probes that follow are one round trip each, not
         * two: otherwise the process that won keeps winning, one write ahead
         * of us in the server's queue.  A hint left above its event costs
         * every snapshot a lookup for that name until the name is written
         * again, so the first retry raises it exactly. */
        if (seq > hint_floor) {
            hint_floor = conflicts > 1 ? seq + PROBE_LOOKAHEAD - 1 : seq;
            int created = 0;
            ret = latest_raise(latest, tenant, event, hint_floor, &created);
            if (ret == STORE_OK && created && max_names > 0)
                ret = names_check_new(latest, tenant, event, max_names);
            if (ret != STORE_OK)
                break;
        }
        ret = event_put(events, tenant, event, data, ts_ms, seq, &taken);
        if (ret != STORE_OK || !taken)
            break;
        /* Another process stored `seq`.  The first time, the cached seq is
         * behind by however many events other processes stored since this
         * one last wrote (replicas behind a balancer take turns): read the
         * max.  After that it is a race, and seq + 1 has no hole below it:
         * probe it at once, reading the max again every few conflicts after
         * a short random backoff. */
        ret = STORE_UNAVAILABLE;
        if (bson_get_monotonic_time() > deadline)
            break;
        if (++conflicts == 1) {
            seq = 0;
        } else if (conflicts % CONFLICTS_BEFORE_REREAD == 0) {
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

/* One insert after the other: each is its own durable write (the server
 * journals it), so a batch gains nothing from being handed over together. */
void mongo_event_insert_many(store *base, store_insert *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        items[i].status = event_insert_one(base, items[i].tenant, items[i].event, items[i].data, items[i].ts_ms,
                                           items[i].max_names, &items[i].seq);
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
    int64_t seq = mg_doc_int64(doc, "seq");
    const char *event = mg_doc_utf8(doc, "event");
    const char *data = mg_doc_utf8(doc, "data");
    store_event ev = {
        .seq = seq > 0 ? (uint64_t)seq : 0,
        .tenant = w->tenant,
        .event = event ? event : "",
        .data = data ? data : "null",
        .ts_ms = mg_doc_int64(doc, "ts"),
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
    store_status ret = mg_cursor_walk(cur, event_walk_doc, w, what);
    bson_destroy(&opts);
    return ret;
}

store_status mongo_event_range(store *base, const char *tenant, uint64_t after, uint64_t upto, size_t limit,
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
    if (mg_coll_acquire(s, COLL_EVENTS, &c) != 0)
        return STORE_UNAVAILABLE;
    bson_t *filter = BCON_NEW("tenant", BCON_UTF8(tenant), "seq", "{", "$gt", BCON_INT64((int64_t)after), "$lte",
                              BCON_INT64((int64_t)upto), "}");
    event_walk w = {tenant, fn, arg};
    store_status ret = events_walk(c.coll, filter, lim, &w, "event range");
    bson_destroy(filter);
    mg_coll_release(s, &c);
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
    const char *event = mg_doc_utf8(doc, "event");
    int64_t hint = mg_doc_int64(doc, "seq");
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
    int64_t seq = mg_doc_int64(doc, "seq");
    const char *event = mg_doc_utf8(doc, "event");
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
                              BCON_INT64(mg_seq_i64(max)), "}");
    bson_t *opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}", "limit", BCON_INT64(1), "projection", "{",
                            "seq", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t err;
    if (mongoc_cursor_next(cur, &doc)) {
        int64_t seq = mg_doc_int64(doc, "seq");
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
        BSON_APPEND_INT64(&arr, key, mg_seq_i64(seq));
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(filter, &in);
    return filter;
}

store_status mongo_event_latest(store *base, const char *tenant, store_event_fn fn, void *arg,
                                uint64_t *max_seq_out)
{
    mongo_store *s = (mongo_store *)base;
    if (tenant == NULL)
        return mg_missing("event latest");
    mongoc_client_t *client = mg_client_pop(s);
    if (client == NULL)
        return STORE_UNAVAILABLE;
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
    ret = mg_cursor_walk(mongoc_collection_find_with_opts(latest, filter, opts, NULL), latest_names_add, &ln,
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
    ret = mg_cursor_walk(mongoc_collection_find_with_opts(events, filter, opts, NULL), latest_names_verify, &ln,
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