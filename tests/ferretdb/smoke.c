//go:build ignore

/*
 * smoke.c - check that ferretdb-fixture really speaks the MongoDB wire
 * protocol to the real C driver (libmongoc), for the operations the broker's
 * MongoDB store backend relies on, and probe a few things it might want.
 *
 * Test fixture only.  Build (Debian: apt-get install -y libmongoc-dev):
 *
 *   cc -O2 -Wall -o /tmp/ferretdb-smoke tests/ferretdb/smoke.c \
 *      $(pkg-config --cflags --libs libmongoc-1.0) -lpthread
 *
 * Run against a started fixture (tests/ferretdb/start.sh PORT DIR):
 *
 *   /tmp/ferretdb-smoke mongodb://127.0.0.1:PORT/
 *
 * Output: "PASS name" / "FAIL name: why" for what the broker needs (counted),
 * "NOTE name: ..." for probes that only report behaviour, then the closing
 * line "smoke: N passed, N failed".  Exit status 0 iff nothing failed.
 * It uses (and first drops) the database "broker_ferretdb_smoke".
 * (The "//go:build ignore" first line keeps the Go toolchain from treating
 * this C file as part of the fixture's Go package.)
 */
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DBNAME "broker_ferretdb_smoke"

static int npass, nfail;

static void check(int ok, const char *name, const char *fmt, ...)
{
    if (ok) {
        npass++;
        printf("PASS %s\n", name);
    } else {
        va_list ap;
        nfail++;
        printf("FAIL %s: ", name);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
    }
    fflush(stdout);
}

static void note(const char *name, const char *fmt, ...)
{
    va_list ap;
    printf("NOTE %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* JSON (canonical extended: shows $numberLong / $numberInt types), static buf. */
static const char *js(const bson_t *b)
{
    static char buf[8][1024];
    static int k;
    char *s;
    char *out = buf[k++ % 8];
    if (!b) return "(null)";
    s = bson_as_canonical_extended_json(b, NULL);
    snprintf(out, 1024, "%s", s ? s : "(?)");
    bson_free(s);
    return out;
}

static bson_t *J(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    if (!b) {
        fprintf(stderr, "smoke: bad JSON in test: %s: %s\n", json, e.message);
        exit(2);
    }
    return b;
}

/* Runs a command (JSON) on the test database; reply must be destroyed. */
static bool cmd(mongoc_database_t *db, const char *json, bson_t *reply, bson_error_t *err)
{
    bson_t *c = J(json);
    bool ok = mongoc_database_command_with_opts(db, c, NULL, NULL, reply, err);
    bson_destroy(c);
    return ok;
}

static int64_t get_int(const bson_t *doc, const char *dotted, int *type_out)
{
    bson_iter_t it, d;
    if (type_out) *type_out = 0;
    if (!doc || !bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, dotted, &d))
        return INT64_MIN;
    if (type_out) *type_out = (int)bson_iter_type(&d);
    if (BSON_ITER_HOLDS_NUMBER(&d)) return bson_iter_as_int64(&d);
    return INT64_MIN;
}

static bool has_field(const bson_t *doc, const char *dotted, bson_type_t *t)
{
    bson_iter_t it, d;
    if (!doc || !bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, dotted, &d)) return false;
    if (t) *t = bson_iter_type(&d);
    return true;
}

/* ---------- findAndModify $inc upsert (sequence allocation) ---------- */

static bool next_seq(mongoc_collection_t *counters, const char *tenant, int64_t *seq,
                     bson_t *reply_out, bson_error_t *err)
{
    mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
    bson_t q = BSON_INITIALIZER, upd = BSON_INITIALIZER, inc, reply;
    bool ok;

    BSON_APPEND_UTF8(&q, "_id", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$inc", &inc);
    BSON_APPEND_INT64(&inc, "seq", 1);
    bson_append_document_end(&upd, &inc);
    mongoc_find_and_modify_opts_set_update(o, &upd);
    mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_UPSERT |
                                                 MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    ok = mongoc_collection_find_and_modify_with_opts(counters, &q, o, &reply, err);
    *seq = ok ? get_int(&reply, "value.seq", NULL) : INT64_MIN;
    if (reply_out) bson_copy_to(&reply, reply_out);
    bson_destroy(&reply);
    bson_destroy(&q);
    bson_destroy(&upd);
    mongoc_find_and_modify_opts_destroy(o);
    return ok;
}

#define RACE_THREADS 8
#define RACE_PER_THREAD 40

enum race_kind { RACE_FAM_INC, RACE_CAS, RACE_INSERT_UNIQUE };

struct race {
    mongoc_client_pool_t *pool;
    pthread_barrier_t *bar;
    enum race_kind kind;
    int64_t vals[RACE_PER_THREAD];
    int errors, retries;
    char first_err[600];
};

/* CAS on a counter document: read seq, then update {_id, seq: old} -> old+1. */
static bool cas_next(mongoc_collection_t *c, int64_t *out, int *retries, bson_error_t *e)
{
    for (int tries = 0; tries < 10000; tries++) {
        bson_t q = BSON_INITIALIZER, u = BSON_INITIALIZER, set, reply;
        const bson_t *d;
        bson_t *f = J("{\"_id\": \"cas\"}");
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, f, NULL, NULL);
        int64_t old = -1;
        if (mongoc_cursor_next(cur, &d)) old = get_int(d, "seq", NULL);
        bool cerr = mongoc_cursor_error(cur, e);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        if (cerr || old < 0) return false;
        BSON_APPEND_UTF8(&q, "_id", "cas");
        BSON_APPEND_INT64(&q, "seq", old);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT64(&set, "seq", old + 1);
        bson_append_document_end(&u, &set);
        bool ok = mongoc_collection_update_one(c, &q, &u, NULL, &reply, e);
        int64_t mod = get_int(&reply, "modifiedCount", NULL);
        bson_destroy(&q);
        bson_destroy(&u);
        bson_destroy(&reply);
        if (!ok) return false;
        if (mod == 1) { *out = old + 1; return true; }
        (*retries)++;
    }
    return false;
}

/* Optimistic insert: max(seq)+1 under the unique (tenant, seq) index; retry on 11000. */
static bool insert_next(mongoc_collection_t *c, int64_t *out, int *retries, bson_error_t *e)
{
    for (int tries = 0; tries < 10000; tries++) {
        bson_t *f = J("{\"tenant\": \"R\"}");
        bson_t *o = J("{\"sort\": {\"seq\": -1}, \"limit\": 1}");
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, f, o, NULL);
        const bson_t *d;
        int64_t max = 0;
        if (mongoc_cursor_next(cur, &d)) max = get_int(d, "seq", NULL);
        bool cerr = mongoc_cursor_error(cur, e);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);
        if (cerr) return false;
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "tenant", "R");
        BSON_APPEND_INT64(&doc, "seq", max + 1);
        BSON_APPEND_UTF8(&doc, "event", "x");
        bool ok = mongoc_collection_insert_one(c, &doc, NULL, NULL, e);
        bson_destroy(&doc);
        if (ok) { *out = max + 1; return true; }
        if (e->code != 11000) return false;
        (*retries)++;
    }
    return false;
}

static void *race_main(void *arg)
{
    struct race *r = arg;
    mongoc_client_t *c = mongoc_client_pool_pop(r->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(
        c, DBNAME, r->kind == RACE_INSERT_UNIQUE ? "events" : "counters");
    bson_error_t e;
    pthread_barrier_wait(r->bar);
    for (int i = 0; i < RACE_PER_THREAD; i++) {
        int64_t v = -1;
        bool ok;
        memset(&e, 0, sizeof e);
        switch (r->kind) {
        case RACE_FAM_INC: ok = next_seq(coll, "race", &v, NULL, &e); break;
        case RACE_CAS: ok = cas_next(coll, &v, &r->retries, &e); break;
        default: ok = insert_next(coll, &v, &r->retries, &e); break;
        }
        if (!ok) {
            if (!r->errors++) snprintf(r->first_err, sizeof r->first_err, "code %u: %.500s", e.code, e.message);
            v = -1;
        }
        r->vals[i] = v;
    }
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(r->pool, c);
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs RACE_THREADS clients (own connections) against one sequence at once.
 * Returns true if every value 1..N was handed out exactly once. */
static bool race_test(const char *uri_s, enum race_kind kind, const char *name, bool must_pass)
{
    bson_error_t e;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_s, &e);
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    pthread_barrier_t bar;
    pthread_t th[RACE_THREADS];
    static struct race rs[RACE_THREADS];
    static int64_t all[RACE_THREADS * RACE_PER_THREAD];
    int n = 0, errors = 0, dups = 0, retries = 0;
    const char *first_err = "";
    bool good;

    mongoc_client_pool_max_size(pool, RACE_THREADS);
    pthread_barrier_init(&bar, NULL, RACE_THREADS);
    for (int t = 0; t < RACE_THREADS; t++) {
        memset(&rs[t], 0, sizeof rs[t]);
        rs[t].pool = pool;
        rs[t].bar = &bar;
        rs[t].kind = kind;
        pthread_create(&th[t], NULL, race_main, &rs[t]);
    }
    for (int t = 0; t < RACE_THREADS; t++) {
        pthread_join(th[t], NULL);
        errors += rs[t].errors;
        retries += rs[t].retries;
        if (rs[t].errors && !*first_err) first_err = rs[t].first_err;
        for (int i = 0; i < RACE_PER_THREAD; i++)
            if (rs[t].vals[i] > 0) all[n++] = rs[t].vals[i];
    }
    qsort(all, n, sizeof all[0], cmp64);
    for (int i = 1; i < n; i++)
        if (all[i] == all[i - 1]) dups++;
    good = n == RACE_THREADS * RACE_PER_THREAD && dups == 0 && all[0] == 1 && all[n - 1] == n;
    if (must_pass)
        check(good, name, "%d duplicates among %d values (min %lld max %lld), %d errors (%s)", dups, n,
              n ? (long long)all[0] : 0, n ? (long long)all[n - 1] : 0, errors, first_err);
    else
        note(name, "%s: %d threads x %d: %d duplicate values among %d returned (max %lld), %d errors%s%s",
             good ? "ATOMIC" : "NOT ATOMIC (lost updates)", RACE_THREADS, RACE_PER_THREAD, dups, n,
             n ? (long long)all[n - 1] : 0, errors, *first_err ? ", first: " : "", first_err);
    if (retries) note(name, "%d retries", retries);
    pthread_barrier_destroy(&bar);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    return good;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *uri_s = argc > 1 ? argv[1] : "mongodb://127.0.0.1:27017/";
    bson_error_t err;
    bson_t reply;
    mongoc_uri_t *uri;
    mongoc_client_t *client;
    mongoc_database_t *db;
    mongoc_collection_t *users, *events, *counters, *latest;
    bool ok;

    mongoc_init();
    uri = mongoc_uri_new_with_error(uri_s, &err);
    if (!uri) {
        fprintf(stderr, "smoke: bad URI %s: %s\n", uri_s, err.message);
        return 2;
    }
    /* fail fast instead of the driver's 30 s default */
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    client = mongoc_client_new_from_uri(uri);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(client, "broker-ferretdb-smoke");
    db = mongoc_client_get_database(client, DBNAME);

    /* ---- ping / hello ---- */
    {
        bson_t *c = J("{\"ping\": 1}");
        ok = mongoc_client_command_simple(client, "admin", c, NULL, &reply, &err);
        check(ok, "ping", "%s", err.message);
        bson_destroy(&reply);
        bson_destroy(c);
        if (!ok) goto done;

        c = J("{\"buildInfo\": 1}");
        if (mongoc_client_command_simple(client, "admin", c, NULL, &reply, &err)) {
            bson_iter_t it;
            const char *ver = "?", *fver = "?";
            if (bson_iter_init_find(&it, &reply, "version")) ver = bson_iter_utf8(&it, NULL);
            if (bson_iter_init_find(&it, &reply, "ferretdbVersion") && BSON_ITER_HOLDS_UTF8(&it))
                fver = bson_iter_utf8(&it, NULL);
            note("buildInfo", "reports MongoDB version %s, FerretDB %s", ver, fver);
        }
        bson_destroy(&reply);
        bson_destroy(c);

        c = J("{\"hello\": 1}");
        if (mongoc_client_command_simple(client, "admin", c, NULL, &reply, &err)) {
            bson_type_t t;
            note("hello", "maxWireVersion=%lld logicalSessionTimeoutMinutes=%s setName=%s msg=%s",
                 (long long)get_int(&reply, "maxWireVersion", NULL),
                 has_field(&reply, "logicalSessionTimeoutMinutes", &t) ? "present" : "absent",
                 has_field(&reply, "setName", &t) ? "present (replica set)" : "absent (standalone)",
                 has_field(&reply, "msg", &t) ? "present" : "absent");
        } else {
            note("hello", "failed: %s", err.message);
        }
        bson_destroy(&reply);
        bson_destroy(c);
    }

    /* fresh database */
    ok = mongoc_database_drop_with_opts(db, NULL, &err);
    check(ok || err.code == 26, "dropDatabase", "%s", err.message);

    users = mongoc_database_get_collection(db, "users");
    events = mongoc_database_get_collection(db, "events");
    counters = mongoc_database_get_collection(db, "counters");
    latest = mongoc_database_get_collection(db, "latest");

    /* ---- createIndexes: unique single field + compound unique ---- */
    ok = cmd(db,
             "{\"createIndexes\": \"users\", \"indexes\": ["
             " {\"key\": {\"username\": 1}, \"name\": \"username_1\", \"unique\": true}]}",
             &reply, &err);
    check(ok, "createIndexes.unique", "%s", ok ? "" : err.message);
    bson_destroy(&reply);
    ok = cmd(db,
             "{\"createIndexes\": \"events\", \"indexes\": ["
             " {\"key\": {\"tenant\": 1, \"seq\": 1}, \"name\": \"tenant_seq\", \"unique\": true},"
             " {\"key\": {\"tenant\": 1, \"event\": 1, \"seq\": -1}, \"name\": \"tenant_event_seq\"}]}",
             &reply, &err);
    check(ok, "createIndexes.compound_unique", "%s", ok ? "" : err.message);
    bson_destroy(&reply);
    /* idempotent re-create (drivers/apps usually do this at every start) */
    ok = cmd(db,
             "{\"createIndexes\": \"users\", \"indexes\": ["
             " {\"key\": {\"username\": 1}, \"name\": \"username_1\", \"unique\": true}]}",
             &reply, &err);
    check(ok, "createIndexes.idempotent", "%s", ok ? "" : err.message);
    bson_destroy(&reply);
    /* same name, different options: real MongoDB errors (85/86) */
    ok = cmd(db,
             "{\"createIndexes\": \"users\", \"indexes\": ["
             " {\"key\": {\"username\": 1}, \"name\": \"username_1\"}]}",
             &reply, &err);
    note("createIndexes.conflicting_options", "%s", ok ? "accepted silently" : err.message);
    if (!ok) note("createIndexes.conflicting_options_code", "%u", err.code);
    bson_destroy(&reply);
    {
        mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(events, NULL);
        const bson_t *d;
        int nidx = 0, nuniq = 0;
        while (mongoc_cursor_next(cur, &d)) {
            bson_iter_t it;
            nidx++;
            if (bson_iter_init_find(&it, d, "unique") && bson_iter_as_bool(&it)) nuniq++;
        }
        check(!mongoc_cursor_error(cur, &err) && nidx == 3 && nuniq == 1, "listIndexes",
              "got %d indexes, %d unique (want 3, 1) %s", nidx, nuniq, err.message);
        mongoc_cursor_destroy(cur);
    }

    /* ---- inserts and duplicate keys ---- */
    {
        bson_t *a = J("{\"username\": \"alice\", \"hash\": \"x\"}");
        bson_t *b = J("{\"username\": \"bob\", \"hash\": \"y\"}");
        bson_t *a2 = J("{\"username\": \"alice\", \"hash\": \"z\"}");
        ok = mongoc_collection_insert_one(users, a, NULL, NULL, &err) &&
             mongoc_collection_insert_one(users, b, NULL, NULL, &err);
        check(ok, "insert", "%s", err.message);
        memset(&err, 0, sizeof err);
        ok = mongoc_collection_insert_one(users, a2, NULL, &reply, &err);
        check(!ok && err.code == 11000, "insert.duplicate_key_11000",
              "ok=%d domain=%u code=%u msg=%s", ok, err.domain, err.code, err.message);
        if (!ok)
            note("insert.duplicate_key_error", "domain=%u code=%u message=\"%s\" reply=%s", err.domain,
                 err.code, err.message, js(&reply));
        bson_destroy(&reply);
        bson_destroy(a);
        bson_destroy(b);
        bson_destroy(a2);
    }
    {
        /* _id duplicate (primary key) */
        bson_t *d = J("{\"_id\": \"u1\", \"username\": \"carol\"}");
        bson_t *d2 = J("{\"_id\": \"u1\", \"username\": \"dave\"}");
        mongoc_collection_insert_one(users, d, NULL, NULL, &err);
        ok = mongoc_collection_insert_one(users, d2, NULL, NULL, &err);
        check(!ok && err.code == 11000, "insert.duplicate_id_11000", "ok=%d code=%u msg=%s", ok,
              err.code, err.message);
        bson_destroy(d);
        bson_destroy(d2);
    }
    {
        /* compound unique: (tenant, seq) */
        bson_t *e1 = J("{\"tenant\": \"t0\", \"seq\": {\"$numberLong\": \"1\"}, \"event\": \"a\"}");
        bson_t *e2 = J("{\"tenant\": \"t0\", \"seq\": {\"$numberLong\": \"1\"}, \"event\": \"b\"}");
        bson_t *e3 = J("{\"tenant\": \"t9\", \"seq\": {\"$numberLong\": \"1\"}, \"event\": \"a\"}");
        ok = mongoc_collection_insert_one(events, e1, NULL, NULL, &err);
        check(ok, "insert.compound.first", "%s", err.message);
        ok = mongoc_collection_insert_one(events, e2, NULL, NULL, &err);
        check(!ok && err.code == 11000, "insert.compound.duplicate_11000", "ok=%d code=%u msg=%s", ok,
              err.code, err.message);
        ok = mongoc_collection_insert_one(events, e3, NULL, NULL, &err);
        check(ok, "insert.compound.other_tenant_ok", "%s", err.message);
        bson_destroy(e1);
        bson_destroy(e2);
        bson_destroy(e3);
    }
    {
        /* int32 vs int64 of the same value: MongoDB treats 1 == NumberLong(1) for uniqueness */
        bson_t *e = J("{\"tenant\": \"t0\", \"seq\": 1, \"event\": \"c\"}");
        ok = mongoc_collection_insert_one(events, e, NULL, NULL, &err);
        note("unique.int32_vs_int64", "insert {seq: int32 1} next to {seq: int64 1}: %s",
             ok ? "ACCEPTED (index does not treat numeric types as equal!)" : err.message);
        bson_destroy(e);
        bson_t *dq = J("{\"tenant\": {\"$in\": [\"t0\", \"t9\"]}}");
        mongoc_collection_delete_many(events, dq, NULL, NULL, &err);
        bson_destroy(dq);
    }
    {
        /* ordered insertMany stops at the first duplicate */
        bson_t *d1 = J("{\"username\": \"m1\"}"), *d2 = J("{\"username\": \"alice\"}"),
               *d3 = J("{\"username\": \"m3\"}");
        const bson_t *docs[] = {d1, d2, d3};
        ok = mongoc_collection_insert_many(users, docs, 3, NULL, &reply, &err);
        note("insertMany.ordered_with_dup", "ok=%d code=%u insertedCount=%lld", ok, err.code,
             (long long)get_int(&reply, "insertedCount", NULL));
        bson_destroy(&reply);
        bson_destroy(d1);
        bson_destroy(d2);
        bson_destroy(d3);
    }
    {
        /* a unique index over existing duplicates must be refused */
        bson_t *x1 = J("{\"k\": 1}"), *x2 = J("{\"k\": 1}");
        mongoc_collection_t *dup = mongoc_database_get_collection(db, "dups");
        mongoc_collection_insert_one(dup, x1, NULL, NULL, &err);
        mongoc_collection_insert_one(dup, x2, NULL, NULL, &err);
        ok = cmd(db,
                 "{\"createIndexes\": \"dups\", \"indexes\": ["
                 " {\"key\": {\"k\": 1}, \"name\": \"k_1\", \"unique\": true}]}",
                 &reply, &err);
        check(!ok, "createIndexes.unique_over_duplicates_refused", "index was created over duplicates");
        if (!ok) note("createIndexes.unique_over_duplicates_code", "%u (MongoDB: 11000)", err.code);
        bson_destroy(&reply);
        mongoc_collection_destroy(dup);
        bson_destroy(x1);
        bson_destroy(x2);
    }
    {
        /* update making a duplicate must be refused too */
        bson_t *q = J("{\"username\": \"bob\"}"), *u = J("{\"$set\": {\"username\": \"alice\"}}");
        ok = mongoc_collection_update_one(users, q, u, NULL, NULL, &err);
        check(!ok, "update.duplicate_key_refused", "update created a duplicate username");
        if (!ok) note("update.duplicate_key_code", "%u (MongoDB: 11000): %s", err.code, err.message);
        bson_destroy(q);
        bson_destroy(u);
    }

    /* ---- findAndModify $inc upsert new:true (sequence allocation) ---- */
    {
        int64_t s1, s2, s3;
        bson_t r1;
        ok = next_seq(counters, "t1", &s1, &r1, &err);
        check(ok && s1 == 1, "findAndModify.$inc.upsert_new_doc", "ok=%d seq=%lld %s", ok,
              (long long)s1, ok ? js(&r1) : err.message);
        if (ok) {
            int t;
            get_int(&r1, "value.seq", &t);
            note("findAndModify.upsert_reply", "%s", js(&r1));
            note("findAndModify.$inc_type", "$inc by int64 1 on a missing field gives %s",
                 t == BSON_TYPE_INT64 ? "int64" : t == BSON_TYPE_INT32 ? "int32" : t == BSON_TYPE_DOUBLE ? "double" : "?");
            bson_destroy(&r1);
        }
        ok = next_seq(counters, "t1", &s2, &r1, &err);
        check(ok && s2 == 2, "findAndModify.$inc.existing_doc", "ok=%d seq=%lld", ok, (long long)s2);
        if (ok) note("findAndModify.update_reply", "%s", js(&r1));
        bson_destroy(&r1);
        ok = next_seq(counters, "t2", &s3, NULL, &err);
        check(ok && s3 == 1, "findAndModify.$inc.other_tenant_independent", "ok=%d seq=%lld", ok,
              (long long)s3);
    }
    {
        /* without new:true an upsert returns value: null (as in MongoDB) */
        mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
        bson_t *q = J("{\"_id\": \"t3\"}"), *u = J("{\"$inc\": {\"seq\": {\"$numberLong\": \"1\"}}}");
        mongoc_find_and_modify_opts_set_update(o, u);
        mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_UPSERT);
        ok = mongoc_collection_find_and_modify_with_opts(counters, q, o, &reply, &err);
        bson_type_t t = BSON_TYPE_EOD;
        has_field(&reply, "value", &t);
        check(ok && t == BSON_TYPE_NULL, "findAndModify.upsert_old_value_null", "ok=%d reply=%s", ok,
              js(&reply));
        bson_destroy(&reply);
        mongoc_find_and_modify_opts_destroy(o);
        bson_destroy(q);
        bson_destroy(u);
    }
    /* Concurrency: several connections allocating from one sequence at once. */
    race_test(uri_s, RACE_FAM_INC, "concurrent.findAndModify_$inc", false);
    {
        bson_t *d = J("{\"_id\": \"cas\", \"seq\": {\"$numberLong\": \"0\"}}");
        mongoc_collection_insert_one(counters, d, NULL, NULL, &err);
        bson_destroy(d);
    }
    race_test(uri_s, RACE_CAS, "concurrent.updateOne_compare_and_set", false);
    race_test(uri_s, RACE_INSERT_UNIQUE, "concurrent.insert_max_plus_1_unique_retry", true);
    {
        bson_t *dq = J("{\"tenant\": \"R\"}");
        mongoc_collection_delete_many(events, dq, NULL, NULL, &err);
        bson_destroy(dq);
    }

    /* ---- events with allocated seqs; find with sort + limit ---- */
    {
        const char *names[] = {"a", "b", "c", "a", "b", "a", "c", "a", "b", "d"};
        bool all = true;
        for (int i = 0; i < 10; i++) {
            int64_t s;
            bson_t doc = BSON_INITIALIZER;
            if (!next_seq(counters, "T", &s, NULL, &err)) { all = false; break; }
            BSON_APPEND_UTF8(&doc, "tenant", "T");
            BSON_APPEND_INT64(&doc, "seq", s);
            BSON_APPEND_UTF8(&doc, "event", names[i]);
            BSON_APPEND_UTF8(&doc, "data", "{\"n\":1}");
            BSON_APPEND_INT64(&doc, "ts", 1700000000000LL + i);
            all = all && mongoc_collection_insert_one(events, &doc, NULL, NULL, &err);
            bson_destroy(&doc);
        }
        check(all, "insert.events_with_seq", "%s", err.message);
    }
    {
        /* after=3 upto=0 limit=4 -> 4,5,6,7 */
        bson_t *f = J("{\"tenant\": \"T\", \"seq\": {\"$gt\": {\"$numberLong\": \"3\"}}}");
        bson_t *o = J("{\"sort\": {\"seq\": 1}, \"limit\": 4, \"projection\": {\"_id\": 0}}");
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, f, o, NULL);
        const bson_t *d;
        int64_t want = 4, got = 0;
        bool good = true;
        while (mongoc_cursor_next(cur, &d)) {
            bson_type_t t;
            good = good && get_int(d, "seq", NULL) == want++ && !has_field(d, "_id", &t);
            got++;
        }
        check(!mongoc_cursor_error(cur, &err) && good && got == 4, "find.sort_limit",
              "got %lld docs, in order=%d %s", (long long)got, good, err.message);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);
        /* range after < seq <= upto */
        f = J("{\"tenant\": \"T\", \"seq\": {\"$gt\": 2, \"$lte\": 5}}");
        o = J("{\"sort\": {\"seq\": 1}}");
        cur = mongoc_collection_find_with_opts(events, f, o, NULL);
        got = 0;
        want = 3;
        good = true;
        while (mongoc_cursor_next(cur, &d)) {
            good = good && get_int(d, "seq", NULL) == want++;
            got++;
        }
        check(!mongoc_cursor_error(cur, &err) && good && got == 3, "find.range_gt_lte",
              "got %lld docs, in order=%d %s", (long long)got, good, err.message);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);
        /* descending sort + limit 1 -> max seq */
        f = J("{\"tenant\": \"T\"}");
        o = J("{\"sort\": {\"seq\": -1}, \"limit\": 1}");
        cur = mongoc_collection_find_with_opts(events, f, o, NULL);
        int64_t max = 0;
        if (mongoc_cursor_next(cur, &d)) max = get_int(d, "seq", NULL);
        check(!mongoc_cursor_error(cur, &err) && max == 10, "find.max_seq_sort_desc_limit1",
              "max=%lld %s", (long long)max, err.message);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);
    }

    /* ---- latest per event name ---- */
    {
        /* want (oldest first): c@7, a@8, b@9, d@10 */
        const char *want_ev[] = {"c", "a", "b", "d"};
        const int64_t want_seq[] = {7, 8, 9, 10};
        const bson_t *d;
        int i;
        bool good;

        /* (1) aggregate: $match, $sort, $group $first $$ROOT, $sort */
        bson_t *p = J("[{\"$match\": {\"tenant\": \"T\"}},"
                      " {\"$sort\": {\"event\": 1, \"seq\": -1}},"
                      " {\"$group\": {\"_id\": \"$event\", \"doc\": {\"$first\": \"$$ROOT\"}}},"
                      " {\"$sort\": {\"doc.seq\": 1}}]");
        mongoc_cursor_t *cur = mongoc_collection_aggregate(events, MONGOC_QUERY_NONE, p, NULL, NULL);
        i = 0;
        good = true;
        while (mongoc_cursor_next(cur, &d)) {
            bson_iter_t it;
            const char *ev = bson_iter_init_find(&it, d, "_id") && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
            good = good && i < 4 && !strcmp(ev, want_ev[i]) && get_int(d, "doc.seq", NULL) == want_seq[i];
            i++;
        }
        if (mongoc_cursor_error(cur, &err))
            note("latest.aggregate_group_first_ROOT", "UNSUPPORTED: code %u %s", err.code, err.message);
        else
            note("latest.aggregate_group_first_ROOT", "%s (%d groups)", good && i == 4 ? "works" : "WRONG RESULT", i);
        mongoc_cursor_destroy(cur);
        bson_destroy(p);

        /* (2) aggregate with $max of seq per event (no $$ROOT) */
        p = J("[{\"$match\": {\"tenant\": \"T\"}},"
              " {\"$group\": {\"_id\": \"$event\", \"seq\": {\"$max\": \"$seq\"}}},"
              " {\"$sort\": {\"seq\": 1}}]");
        cur = mongoc_collection_aggregate(events, MONGOC_QUERY_NONE, p, NULL, NULL);
        i = 0;
        good = true;
        while (mongoc_cursor_next(cur, &d)) {
            good = good && i < 4 && get_int(d, "seq", NULL) == want_seq[i];
            i++;
        }
        if (mongoc_cursor_error(cur, &err))
            note("latest.aggregate_group_max", "UNSUPPORTED: code %u %s", err.code, err.message);
        else
            note("latest.aggregate_group_max", "%s (%d groups)", good && i == 4 ? "works" : "WRONG RESULT", i);
        mongoc_cursor_destroy(cur);
        bson_destroy(p);

        /* (3) portable: one find sorted on the compound index, client keeps the first per name */
        bson_t *f = J("{\"tenant\": \"T\"}");
        bson_t *o = J("{\"sort\": {\"event\": 1, \"seq\": -1}}");
        cur = mongoc_collection_find_with_opts(events, f, o, NULL);
        char prev[64] = "";
        int64_t got_seq[16];
        int ng = 0;
        while (mongoc_cursor_next(cur, &d)) {
            bson_iter_t it;
            const char *ev = bson_iter_init_find(&it, d, "event") ? bson_iter_utf8(&it, NULL) : "";
            if (strcmp(ev, prev) && ng < 16) {
                snprintf(prev, sizeof prev, "%s", ev);
                got_seq[ng++] = get_int(d, "seq", NULL);
            }
        }
        qsort(got_seq, ng, sizeof got_seq[0], cmp64);
        good = ng == 4;
        for (i = 0; good && i < 4; i++) good = got_seq[i] == want_seq[i];
        check(!mongoc_cursor_error(cur, &err) && good, "latest.find_sorted_compound",
              "got %d names %s", ng, err.message);
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);

        /* (4) "latest" collection maintained by upsert; $max guards against reordering */
        bool allok = true;
        for (int k = 1; k <= 11; k++) {
            /* the 11th is a stale, out-of-order write for "a" that $max must ignore */
            static const char *names[] = {"a", "b", "c", "a", "b", "a", "c", "a", "b", "d", "a"};
            int64_t s = k == 11 ? 2 : k;
            bson_t q = BSON_INITIALIZER, u = BSON_INITIALIZER, m, so;
            bson_t *opts = J("{\"upsert\": true}");
            BSON_APPEND_UTF8(&q, "tenant", "T");
            BSON_APPEND_UTF8(&q, "event", names[k - 1]);
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$max", &m);
            BSON_APPEND_INT64(&m, "seq", s);
            bson_append_document_end(&u, &m);
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$setOnInsert", &so);
            BSON_APPEND_UTF8(&so, "created", "yes");
            bson_append_document_end(&u, &so);
            allok = allok && mongoc_collection_update_one(latest, &q, &u, opts, NULL, &err);
            bson_destroy(&q);
            bson_destroy(&u);
            bson_destroy(opts);
        }
        note("latest.upsert_$max_$setOnInsert", "%s", allok ? "accepted" : err.message);
        f = J("{\"tenant\": \"T\"}");
        o = J("{\"sort\": {\"seq\": 1}}");
        cur = mongoc_collection_find_with_opts(latest, f, o, NULL);
        i = 0;
        good = allok;
        while (mongoc_cursor_next(cur, &d)) {
            bson_iter_t it;
            good = good && i < 4 && get_int(d, "seq", NULL) == want_seq[i] &&
                   bson_iter_init_find(&it, d, "created");
            i++;
        }
        note("latest.collection_upsert", "%s", !mongoc_cursor_error(cur, &err) && good && i == 4 ? "works" : "WRONG RESULT");
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
        bson_destroy(o);
    }

    /* ---- count ---- */
    {
        bson_t *f = J("{\"tenant\": \"T\"}");
        int64_t n = mongoc_collection_count_documents(events, f, NULL, NULL, NULL, &err);
        check(n == 10, "count_documents", "n=%lld %s", (long long)n, err.message);
        bson_destroy(f);
        f = J("{\"tenant\": \"T\", \"event\": \"a\"}");
        n = mongoc_collection_count_documents(events, f, NULL, NULL, NULL, &err);
        check(n == 4, "count_documents.filter", "n=%lld %s", (long long)n, err.message);
        bson_destroy(f);
        ok = cmd(db, "{\"count\": \"users\", \"query\": {}}", &reply, &err);
        n = ok ? get_int(&reply, "n", NULL) : -1;
        check(ok && n == 4, "count_command", "n=%lld %s", (long long)n, ok ? "" : err.message);
        bson_destroy(&reply);
        n = mongoc_collection_estimated_document_count(users, NULL, NULL, NULL, &err);
        note("estimated_document_count", "%lld%s%s", (long long)n, n < 0 ? " " : "", n < 0 ? err.message : "");
    }

    /* ---- probes: things a backend might reach for ---- */
    {
        /* write concern w:majority, j:true */
        bson_t *d = J("{\"username\": \"wc\"}");
        bson_t *o = J("{\"writeConcern\": {\"w\": \"majority\", \"j\": true}}");
        ok = mongoc_collection_insert_one(users, d, o, NULL, &err);
        note("writeConcern.majority_j", "%s", ok ? "accepted" : err.message);
        bson_destroy(d);
        bson_destroy(o);
    }
    {
        /* transactions */
        mongoc_client_session_t *s = mongoc_client_start_session(client, NULL, &err);
        if (!s) {
            note("transactions", "no sessions: %s", err.message);
        } else {
            note("sessions", "mongoc started a client session");
            if (!mongoc_client_session_start_transaction(s, NULL, &err)) {
                note("transactions", "startTransaction refused: %s", err.message);
            } else {
                bson_t o = BSON_INITIALIZER;
                bson_t *d = J("{\"username\": \"txn\"}");
                mongoc_client_session_append(s, &o, &err);
                ok = mongoc_collection_insert_one(users, d, &o, NULL, &err);
                if (ok) ok = mongoc_client_session_commit_transaction(s, NULL, &err);
                note("transactions", "%s", ok ? "insert+commit accepted (check semantics!)" : err.message);
                bson_destroy(&o);
                bson_destroy(d);
            }
            mongoc_client_session_destroy(s);
        }
        /* raw: what the server says to a transaction-shaped command */
        ok = cmd(db, "{\"abortTransaction\": 1}", &reply, &err);
        note("transactions.server_abortTransaction", "%s (code %u)", ok ? "ok" : err.message, ok ? 0 : err.code);
        bson_destroy(&reply);
    }
    {
        /* unknown / unsupported command error code */
        ok = cmd(db, "{\"noSuchCommandXyz\": 1}", &reply, &err);
        note("unknown_command", "code %u: %s", err.code, err.message);
        bson_destroy(&reply);
        ok = cmd(db, "{\"collMod\": \"users\", \"validator\": {}}", &reply, &err);
        note("collMod", "%s (code %u)", ok ? "ok" : err.message, ok ? 0 : err.code);
        bson_destroy(&reply);
    }
    {
        /* other index kinds */
        ok = cmd(db, "{\"createIndexes\": \"events\", \"indexes\": [{\"key\": {\"ts\": 1}, \"name\": \"ttl\", \"expireAfterSeconds\": 3600}]}", &reply, &err);
        note("createIndexes.ttl", "%s", ok ? "accepted (expiry NOT expected to run)" : err.message);
        bson_destroy(&reply);
        ok = cmd(db, "{\"createIndexes\": \"events\", \"indexes\": [{\"key\": {\"event\": 1}, \"name\": \"partial\", \"unique\": true, \"partialFilterExpression\": {\"event\": {\"$exists\": true}}}]}", &reply, &err);
        note("createIndexes.partial", "%s", ok ? "accepted" : err.message);
        bson_destroy(&reply);
        ok = cmd(db, "{\"createIndexes\": \"events\", \"indexes\": [{\"key\": {\"data\": \"text\"}, \"name\": \"txt\"}]}", &reply, &err);
        note("createIndexes.text", "%s", ok ? "accepted" : err.message);
        bson_destroy(&reply);
        ok = cmd(db, "{\"dropIndexes\": \"events\", \"index\": \"tenant_event_seq\"}", &reply, &err);
        note("dropIndexes", "%s", ok ? "ok" : err.message);
        bson_destroy(&reply);
    }
    {
        /* hint, distinct, large document, bulk */
        bson_t *f = J("{\"tenant\": \"T\"}");
        bson_t *o = J("{\"hint\": \"tenant_seq\", \"sort\": {\"seq\": 1}}");
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, f, o, NULL);
        const bson_t *d;
        int n = 0;
        while (mongoc_cursor_next(cur, &d)) n++;
        note("find.hint", "%s (%d docs)", mongoc_cursor_error(cur, &err) ? err.message : "ok", n);
        mongoc_cursor_destroy(cur);
        bson_destroy(o);
        ok = cmd(db, "{\"distinct\": \"events\", \"key\": \"event\", \"query\": {\"tenant\": \"T\"}}", &reply, &err);
        note("distinct", "%s", ok ? js(&reply) : err.message);
        bson_destroy(&reply);
        bson_destroy(f);

        size_t big = 4 * 1024 * 1024;
        char *s = malloc(big + 1);
        memset(s, 'x', big);
        s[big] = 0;
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "tenant", "big");
        BSON_APPEND_UTF8(&doc, "data", s);
        ok = mongoc_collection_insert_one(events, &doc, NULL, NULL, &err);
        note("insert.4MiB_document", "%s", ok ? "ok" : err.message);
        bson_destroy(&doc);
        free(s);

        /* getMore: a result larger than one batch */
        mongoc_collection_t *many = mongoc_database_get_collection(db, "many");
        mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(many, NULL);
        for (int k = 0; k < 1000; k++) {
            bson_t x = BSON_INITIALIZER;
            BSON_APPEND_INT32(&x, "k", k);
            mongoc_bulk_operation_insert(bulk, &x);
            bson_destroy(&x);
        }
        ok = mongoc_bulk_operation_execute(bulk, NULL, &err) != 0;
        mongoc_bulk_operation_destroy(bulk);
        bson_t *o2 = J("{\"sort\": {\"k\": 1}, \"batchSize\": 50}");
        bson_t empty = BSON_INITIALIZER;
        cur = mongoc_collection_find_with_opts(many, &empty, o2, NULL);
        n = 0;
        bool inorder = true;
        while (mongoc_cursor_next(cur, &d)) inorder = inorder && get_int(d, "k", NULL) == n++;
        check(ok && !mongoc_cursor_error(cur, &err) && n == 1000 && inorder, "bulk_insert_and_getMore",
              "n=%d inorder=%d %s", n, inorder, err.message);
        mongoc_cursor_destroy(cur);
        bson_destroy(o2);
        mongoc_collection_destroy(many);
    }

    mongoc_collection_destroy(users);
    mongoc_collection_destroy(events);
    mongoc_collection_destroy(counters);
    mongoc_collection_destroy(latest);
done:
    mongoc_database_destroy(db);
    mongoc_client_destroy(client);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    printf("smoke: %d passed, %d failed\n", npass, nfail);
    return nfail ? 1 : 0;
}
