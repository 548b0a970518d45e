/*
 * test_store.c - the store conformance suite.
 *
 * Every case in run_conformance() is written against store.h alone, so the
 * same cases run against any backend: main() runs them on SQLite, then on
 * MongoDB when BROKER_TEST_MONGODB_URI names a server (mongodb://HOST:PORT/DB;
 * each case gets its own database DB_<run>_<case>, dropped after a clean run),
 * and prints that it skipped them otherwise.
 * The open function gets a fresh directory per case (a backend that does not
 * live in files can use its name as a database name) and must give an empty
 * store for a new name and the same data for a name opened again.
 *
 * Prints one line per case and "N passed, N failed" last; exits non-zero on
 * any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log.h"
#include "store.h"

#include <ftw.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef store *(*store_open_fn)(const char *dir);

static int case_failed; /* checks failed in the running case */
static int cases_passed, cases_failed;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                          \
            case_failed++;                                                                                             \
        }                                                                                                              \
    } while (0)

#define CHECK_ST(expr, want)                                                                                           \
    do {                                                                                                               \
        store_status st_ = (expr);                                                                                     \
        if (st_ != (want)) {                                                                                           \
            fprintf(stderr, "  FAIL %s:%d: %s = %s, want %s\n", __FILE__, __LINE__, #expr, store_status_text(st_),     \
                    store_status_text(want));                                                                          \
            case_failed++;                                                                                             \
        }                                                                                                              \
    } while (0)

static int str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* ---- collecting events ------------------------------------------------------- */

typedef struct collected_event {
    uint64_t seq;
    char *tenant, *event, *data;
    int64_t ts_ms;
} collected_event;

typedef struct collector {
    collected_event *ev;
    size_t n, cap;
    size_t stop_after; /* 0: take everything */
} collector;

static int collect_event(const store_event *ev, void *arg)
{
    collector *c = arg;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->ev = realloc(c->ev, c->cap * sizeof(*c->ev));
        if (c->ev == NULL)
            abort();
    }
    c->ev[c->n++] = (collected_event){ev->seq, strdup(ev->tenant), strdup(ev->event), strdup(ev->data), ev->ts_ms};
    return c->stop_after != 0 && c->n >= c->stop_after;
}

static void collector_clear(collector *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->ev[i].tenant);
        free(c->ev[i].event);
        free(c->ev[i].data);
    }
    free(c->ev);
    memset(c, 0, sizeof(*c));
}

/* ---- cases -------------------------------------------------------------------- */

static store_user make_user(const char *id, const char *username, const char *hash, const char *tenant,
                            const char *email, const char *data)
{
    store_user u = {.username = (char *)username,
                    .password_hash = (char *)hash,
                    .tenant_name = (char *)tenant,
                    .email = (char *)email,
                    .data = (char *)data};
    snprintf(u.id, sizeof(u.id), "%s", id);
    return u;
}

static int user_matches(const store_user *got, const store_user *want)
{
    return strcmp(got->id, want->id) == 0 && str_eq(got->username, want->username) &&
           str_eq(got->password_hash, want->password_hash) && got->revoked == want->revoked &&
           str_eq(got->tenant_name, want->tenant_name) && str_eq(got->email, want->email) &&
           str_eq(got->data, want->data);
}

#define ALICE_ID "3f2b8c1e-7d4a-4e6b-9a1c-2d3e4f5a6b7c"
#define BOB_ID "a1b2c3d4-e5f6-4789-8abc-def012345678"

static const store_user *list_want[2];
typedef struct list_seen {
    int count, matched[2], stop_after;
} list_seen;

static int list_cb(const store_user *u, void *arg)
{
    list_seen *seen = arg;
    seen->count++;
    for (int i = 0; i < 2; i++)
        if (user_matches(u, list_want[i]))
            seen->matched[i]++;
    return seen->stop_after != 0 && seen->count >= seen->stop_after;
}

static void case_users(store *s)
{
    store_user alice = make_user(ALICE_ID, "alice", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "t_1",
                                 "alice@example.com", "{\"age\":30,\"tags\":[\"a\",\"b\"]}");
    store_user bob = make_user(BOB_ID, "bob", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdDI$aGFzaDI", "t_10", NULL, NULL);
    store_user got = {0};

    CHECK_ST(store_user_create(s, &alice), STORE_OK);
    CHECK_ST(store_user_create(s, &bob), STORE_OK);

    CHECK_ST(store_user_get(s, "alice", &got), STORE_OK);
    CHECK(user_matches(&got, &alice));
    store_user_clear(&got);
    CHECK(got.username == NULL && got.data == NULL);

    /* NULL email and data round-trip as NULL, not "" or "null". */
    CHECK_ST(store_user_get(s, "bob", &got), STORE_OK);
    CHECK(user_matches(&got, &bob));
    CHECK(got.email == NULL && got.data == NULL);
    CHECK(got.revoked == 0);
    store_user_clear(&got);

    /* Missing users. */
    CHECK_ST(store_user_get(s, "carol", &got), STORE_NOT_FOUND);
    store_user_clear(&got); /* safe after NOT_FOUND */
    CHECK_ST(store_user_get(s, "Alice", &got), STORE_NOT_FOUND); /* usernames are case-sensitive */
    store_user_clear(&got);
    CHECK_ST(store_user_set_revoked(s, "carol", 1), STORE_NOT_FOUND);
    store_user carol = make_user(ALICE_ID, "carol", "h", "t", NULL, NULL);
    CHECK_ST(store_user_update(s, &carol), STORE_NOT_FOUND);
    CHECK_ST(store_user_get(s, "carol", &got), STORE_NOT_FOUND); /* update did not create it */
    store_user_clear(&got);

    /* Duplicate username: conflict, and the first user is untouched. */
    store_user dup = make_user("00000000-0000-4000-8000-000000000000", "alice", "other", "t_x", NULL, NULL);
    CHECK_ST(store_user_create(s, &dup), STORE_CONFLICT);
    CHECK_ST(store_user_get(s, "alice", &got), STORE_OK);
    CHECK(user_matches(&got, &alice));
    store_user_clear(&got);

    /* List sees both, once each. */
    list_want[0] = &alice;
    list_want[1] = &bob;
    list_seen seen = {0};
    CHECK_ST(store_user_list(s, list_cb, &seen), STORE_OK);
    CHECK(seen.count == 2 && seen.matched[0] == 1 && seen.matched[1] == 1);
    seen = (list_seen){.stop_after = 1};
    CHECK_ST(store_user_list(s, list_cb, &seen), STORE_OK);
    CHECK(seen.count == 1);

    /* Update replaces every mutable field (email and data may become NULL). */
    store_user alice2 = make_user(ALICE_ID, "alice", "$argon2id$v=19$m=65536,t=3,p=4$bmV3$bmV3aGFzaA", "t_2", NULL,
                                  "[1,2,3]");
    alice2.revoked = 1;
    alice2.token_gen = 7;
    CHECK_ST(store_user_update(s, &alice2), STORE_OK);
    CHECK_ST(store_user_get(s, "alice", &got), STORE_OK);
    CHECK(user_matches(&got, &alice2));
    CHECK(got.token_gen == 7);
    CHECK(strcmp(got.id, ALICE_ID) == 0);
    store_user_clear(&got);

    /* Unrevoking changes nothing else; revoking also moves the token
     * generation, once per revocation, so that an unrevoke cannot bring old
     * tokens back. */
    CHECK_ST(store_user_set_revoked(s, "alice", 0), STORE_OK);
    CHECK_ST(store_user_get(s, "alice", &got), STORE_OK);
    alice2.revoked = 0;
    CHECK(user_matches(&got, &alice2));
    CHECK(got.token_gen == 7);
    store_user_clear(&got);
    CHECK_ST(store_user_get(s, "bob", &got), STORE_OK);
    CHECK(got.token_gen == 0);
    store_user_clear(&got);
    CHECK_ST(store_user_set_revoked(s, "bob", 1), STORE_OK);
    CHECK_ST(store_user_set_revoked(s, "bob", 1), STORE_OK); /* still revoked */
    CHECK_ST(store_user_get(s, "bob", &got), STORE_OK);
    CHECK(got.revoked == 1 && str_eq(got.tenant_name, "t_10") && got.token_gen == 2);
    store_user_clear(&got);
    CHECK_ST(store_user_set_revoked(s, "bob", 0), STORE_OK);
    CHECK_ST(store_user_get(s, "bob", &got), STORE_OK);
    CHECK(got.revoked == 0 && got.token_gen == 2);
    store_user_clear(&got);

    CHECK_ST(store_ping(s), STORE_OK);
}

static uint64_t insert(store *s, const char *tenant, const char *event, const char *data, int64_t ts)
{
    uint64_t seq = 0;
    CHECK_ST(store_event_insert(s, tenant, event, data, ts, &seq), STORE_OK);
    return seq;
}

static void case_sequences(store *s)
{
    /* Per tenant from 1; "t_1" and "t_10" do not share a counter. */
    CHECK(insert(s, "t_1", "a", "1", 1000) == 1);
    CHECK(insert(s, "t_1", "a", "2", 1001) == 2);
    CHECK(insert(s, "t_10", "a", "3", 1002) == 1);
    CHECK(insert(s, "t_1", "b", "4", 1003) == 3);
    CHECK(insert(s, "t_10", "b", "5", 1004) == 2);
    CHECK(insert(s, "t_", "a", "6", 1005) == 1);

    collector c = {0};
    CHECK_ST(store_event_range(s, "t_1", 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 3);
    for (size_t i = 0; i < c.n; i++) {
        CHECK(c.ev[i].seq == i + 1);
        CHECK(str_eq(c.ev[i].tenant, "t_1"));
    }
    if (c.n == 3) {
        CHECK(str_eq(c.ev[0].data, "1") && str_eq(c.ev[1].data, "2") && str_eq(c.ev[2].data, "4"));
        CHECK(c.ev[0].ts_ms == 1000 && c.ev[2].ts_ms == 1003);
    }
    collector_clear(&c);

    CHECK_ST(store_event_range(s, "t_10", 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 2 && c.ev[0].seq == 1 && str_eq(c.ev[0].data, "3") && c.ev[1].seq == 2);
    collector_clear(&c);

    /* A tenant with no events. */
    uint64_t max = 99;
    CHECK_ST(store_event_range(s, "t_2", 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 0);
    CHECK_ST(store_event_latest(s, "t_2", collect_event, &c, &max), STORE_OK);
    CHECK(c.n == 0 && max == 0);
    collector_clear(&c);

    /* seq_out may be NULL. */
    CHECK_ST(store_event_insert(s, "t_1", "c", "{}", 1006, NULL), STORE_OK);
    CHECK(insert(s, "t_1", "c", "{}", 1007) == 5);
}

/* A batch: each item its own sequence, in order, tenants mixed. */
static void case_insert_many(store *s)
{
    store_insert items[] = {
        {.tenant = "m1", .event = "a", .data = "1", .ts_ms = 1},
        {.tenant = "m2", .event = "a", .data = "2", .ts_ms = 2},
        {.tenant = "m1", .event = "b", .data = "3", .ts_ms = 3},
        {.tenant = "m1", .event = "a", .data = "4", .ts_ms = 4},
    };
    store_event_insert_many(s, items, 4);
    for (size_t i = 0; i < 4; i++)
        CHECK_ST(items[i].status, STORE_OK);
    CHECK(items[0].seq == 1 && items[1].seq == 1 && items[2].seq == 2 && items[3].seq == 3);
    CHECK(insert(s, "m1", "c", "5", 5) == 4); /* a single insert after the batch goes on from it */
    collector c = {0};
    uint64_t max = 0;
    CHECK_ST(store_event_latest(s, "m1", collect_event, &c, &max), STORE_OK);
    CHECK(max == 4 && c.n == 3); /* b (2), a (3), c (4) */
    if (c.n == 3)
        CHECK(str_eq(c.ev[0].event, "b") && str_eq(c.ev[1].event, "a") && str_eq(c.ev[1].data, "4"));
    collector_clear(&c);
    store_event_insert_many(s, items, 0); /* an empty batch is nothing */
}

/* max_names bounds a tenant's names: a new name past it is refused
 * (STORE_LIMIT) without taking a sequence number, a known name still goes,
 * other tenants are untouched, and a batch counts its own new names. */
static void case_max_names(store *s)
{
    store_insert one[] = {
        {.tenant = "n1", .event = "a", .data = "1", .ts_ms = 1, .max_names = 2},
        {.tenant = "n1", .event = "b", .data = "2", .ts_ms = 2, .max_names = 2},
    };
    store_event_insert_many(s, one, 2);
    CHECK_ST(one[0].status, STORE_OK);
    CHECK_ST(one[1].status, STORE_OK);
    store_insert more[] = {
        {.tenant = "n1", .event = "c", .data = "3", .ts_ms = 3, .max_names = 2}, /* a third name */
        {.tenant = "n1", .event = "a", .data = "4", .ts_ms = 4, .max_names = 2}, /* a known one */
        {.tenant = "n2", .event = "c", .data = "5", .ts_ms = 5, .max_names = 2}, /* another tenant */
        {.tenant = "n2", .event = "d", .data = "6", .ts_ms = 6, .max_names = 2},
        {.tenant = "n2", .event = "e", .data = "7", .ts_ms = 7, .max_names = 2}, /* its third, same batch */
        {.tenant = "n2", .event = "c", .data = "8", .ts_ms = 8, .max_names = 2}, /* known within the batch */
    };
    store_event_insert_many(s, more, 6);
    CHECK_ST(more[0].status, STORE_LIMIT);
    CHECK_ST(more[1].status, STORE_OK);
    CHECK_ST(more[2].status, STORE_OK);
    CHECK_ST(more[3].status, STORE_OK);
    CHECK_ST(more[4].status, STORE_LIMIT);
    CHECK_ST(more[5].status, STORE_OK);
    CHECK(more[1].seq == 3);                      /* the refused one took no number */
    CHECK(more[2].seq == 1 && more[3].seq == 2 && more[5].seq == 3);
    collector c = {0};
    uint64_t max = 0;
    CHECK_ST(store_event_latest(s, "n1", collect_event, &c, &max), STORE_OK);
    CHECK(max == 3 && c.n == 2);
    collector_clear(&c);
    /* No bound: as many names as it likes. */
    CHECK(insert(s, "n1", "z", "9", 9) == 4);
}

static void case_latest(store *s)
{
    const char *T = "lat";
    insert(s, T, "a", "{\"v\":1}", 1);
    insert(s, T, "b", "{\"v\":2}", 2);
    insert(s, T, "a", "{\"v\":3}", 3);
    insert(s, T, "c", "{\"v\":4}", 4);
    insert(s, T, "b", "{\"v\":5}", 5);
    insert(s, "other", "z", "0", 6);

    collector c = {0};
    uint64_t max = 0;
    CHECK_ST(store_event_latest(s, T, collect_event, &c, &max), STORE_OK);
    CHECK(max == 5);
    CHECK(c.n == 3);
    if (c.n == 3) {
        /* One per name, oldest first, each with its newest data. */
        CHECK(c.ev[0].seq == 3 && str_eq(c.ev[0].event, "a") && str_eq(c.ev[0].data, "{\"v\":3}"));
        CHECK(c.ev[1].seq == 4 && str_eq(c.ev[1].event, "c") && str_eq(c.ev[1].data, "{\"v\":4}"));
        CHECK(c.ev[2].seq == 5 && str_eq(c.ev[2].event, "b") && str_eq(c.ev[2].data, "{\"v\":5}"));
        CHECK(c.ev[0].ts_ms == 3 && c.ev[2].ts_ms == 5);
        CHECK(str_eq(c.ev[0].tenant, T));
    }
    collector_clear(&c);

    /* max_seq_out may be NULL; early stop. */
    c.stop_after = 2;
    CHECK_ST(store_event_latest(s, T, collect_event, &c, NULL), STORE_OK);
    CHECK(c.n == 2);
    collector_clear(&c);

    /* A newer event of the oldest name moves it to the end. */
    insert(s, T, "a", "{\"v\":6}", 7);
    CHECK_ST(store_event_latest(s, T, collect_event, &c, &max), STORE_OK);
    CHECK(max == 6 && c.n == 3);
    if (c.n == 3)
        CHECK(c.ev[0].seq == 4 && c.ev[1].seq == 5 && c.ev[2].seq == 6 && str_eq(c.ev[2].event, "a") &&
              str_eq(c.ev[2].data, "{\"v\":6}"));
    collector_clear(&c);
}

/* Checks that the range walk saw exactly seqs first..last in order. */
static int range_is(const collector *c, uint64_t first, uint64_t last)
{
    if (last < first)
        return c->n == 0;
    if (c->n != last - first + 1)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->ev[i].seq != first + i)
            return 0;
    return 1;
}

static void case_range(store *s)
{
    const char *T = "rng";
    char data[32];
    for (int i = 1; i <= 10; i++) {
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        insert(s, T, i % 2 ? "odd" : "even", data, 5000 + i);
    }
    collector c = {0};
#define RANGE(after, upto, limit, first, last)                                                                         \
    do {                                                                                                               \
        CHECK_ST(store_event_range(s, T, after, upto, limit, collect_event, &c), STORE_OK);                            \
        CHECK(range_is(&c, first, last));                                                                              \
        collector_clear(&c);                                                                                           \
    } while (0)
    RANGE(0, 0, 0, 1, 10);
    RANGE(3, 0, 0, 4, 10);
    RANGE(0, 4, 0, 1, 4);
    RANGE(3, 7, 0, 4, 7);
    RANGE(3, 7, 2, 4, 5);
    RANGE(0, 0, 1, 1, 1);
    RANGE(8, 0, 100, 9, 10);
    RANGE(10, 0, 0, 1, 0);   /* nothing after the last */
    RANGE(50, 0, 0, 1, 0);   /* after beyond the end */
    RANGE(5, 5, 0, 1, 0);    /* empty interval */
    RANGE(7, 3, 0, 1, 0);    /* inverted interval */
    RANGE(0, 1000, 0, 1, 10);
    RANGE(UINT64_MAX - 1, 0, 0, 1, 0);
    RANGE(0, UINT64_MAX, 0, 1, 10);
#undef RANGE

    /* Contents and timestamps. */
    CHECK_ST(store_event_range(s, T, 5, 7, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 2);
    if (c.n == 2) {
        CHECK(str_eq(c.ev[0].event, "even") && str_eq(c.ev[0].data, "{\"i\":6}") && c.ev[0].ts_ms == 5006);
        CHECK(str_eq(c.ev[1].event, "odd") && str_eq(c.ev[1].data, "{\"i\":7}") && c.ev[1].ts_ms == 5007);
    }
    collector_clear(&c);

    /* Early stop from the callback still answers OK. */
    c.stop_after = 3;
    CHECK_ST(store_event_range(s, T, 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(range_is(&c, 1, 3));
    collector_clear(&c);
}

static void case_unicode(store *s)
{
    /* Escapes stay escapes, raw UTF-8 stays raw: the store never reinterprets. */
    const char *data = "{\"s\":\"h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89\","
                       "\"esc\":\"\\\"q\\\" \\\\ \\/ \\n\\t\\u0000\\u00e9\\ud83c\\udf89\",\"n\":-1.5e+300,"
                       "\"nested\":{\"a\":[null,true,false,\"'single' %s %d\"]}}";
    const char *name = "\xc3\xa9v\xc3\xa9nement \xf0\x9f\x93\xa8";
    const char *tenant = "uni.t-1";
    uint64_t seq = insert(s, tenant, name, data, -42);
    CHECK(seq == 1);

    collector c = {0};
    CHECK_ST(store_event_range(s, tenant, 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 1);
    if (c.n == 1) {
        CHECK(strcmp(c.ev[0].data, data) == 0 && strlen(c.ev[0].data) == strlen(data));
        CHECK(strcmp(c.ev[0].event, name) == 0);
        CHECK(c.ev[0].ts_ms == -42);
    }
    collector_clear(&c);
    CHECK_ST(store_event_latest(s, tenant, collect_event, &c, NULL), STORE_OK);
    CHECK(c.n == 1 && strcmp(c.ev[0].data, data) == 0 && strcmp(c.ev[0].event, name) == 0);
    collector_clear(&c);

    store_user u = make_user(BOB_ID, "\xe7\x94\xa8\xe6\x88\xb7 \"x\"", "h$'\\", tenant, "j\xc3\xb6rg@example.com", data);
    store_user got = {0};
    CHECK_ST(store_user_create(s, &u), STORE_OK);
    CHECK_ST(store_user_get(s, u.username, &got), STORE_OK);
    CHECK(user_matches(&got, &u));
    store_user_clear(&got);

    /* Large data (1 MiB) round-trips too. */
    size_t big_len = 1 << 20;
    char *big = malloc(big_len + 1);
    if (big == NULL)
        abort();
    big[0] = '"';
    for (size_t i = 1; i < big_len - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[big_len - 1] = '"';
    big[big_len] = '\0';
    seq = insert(s, tenant, "big", big, 1);
    CHECK_ST(store_event_range(s, tenant, seq - 1, seq, 0, collect_event, &c), STORE_OK);
    CHECK(c.n == 1 && strcmp(c.ev[0].data, big) == 0);
    collector_clear(&c);
    free(big);
}

typedef struct persist_ctx {
    store *(*open_fn)(const char *dir);
    const char *dir;
} persist_ctx;

static void case_persistence(store *s, const persist_ctx *p)
{
    store_user u = make_user(ALICE_ID, "persist", "hash", "p", NULL, "{\"k\":1}");
    CHECK_ST(store_user_create(s, &u), STORE_OK);
    insert(s, "p", "x", "1", 10);
    insert(s, "p", "y", "2", 11);
    insert(s, "p", "x", "3", 12);
    store_close(s);

    s = p->open_fn(p->dir);
    CHECK(s != NULL);
    if (s == NULL)
        return;
    store_user got = {0};
    CHECK_ST(store_user_get(s, "persist", &got), STORE_OK);
    CHECK(user_matches(&got, &u));
    store_user_clear(&got);

    collector c = {0};
    uint64_t max = 0;
    CHECK_ST(store_event_latest(s, "p", collect_event, &c, &max), STORE_OK);
    CHECK(max == 3 && c.n == 2);
    if (c.n == 2)
        CHECK(c.ev[0].seq == 2 && c.ev[1].seq == 3 && str_eq(c.ev[1].data, "3"));
    collector_clear(&c);
    /* The sequence goes on where it was, never restarts. */
    CHECK(insert(s, "p", "x", "4", 13) == 4);
    CHECK_ST(store_event_range(s, "p", 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(range_is(&c, 1, 4));
    collector_clear(&c);
    store_close(s);
}

/* ---- concurrency -------------------------------------------------------------- */

#define WRITERS 8
#define PER_WRITER 200

typedef struct writer_arg {
    store *s;
    int id;
    uint64_t seqs[PER_WRITER];
    int errors;
} writer_arg;

static void *writer_main(void *arg)
{
    writer_arg *w = arg;
    char data[64];
    for (int i = 0; i < PER_WRITER; i++) {
        snprintf(data, sizeof(data), "{\"w\":%d,\"i\":%d}", w->id, i);
        if (store_event_insert(w->s, "conc", w->id % 2 ? "odd" : "even", data, i, &w->seqs[i]) != STORE_OK)
            w->errors++;
    }
    return NULL;
}

typedef struct reader_arg {
    store *s;
    volatile int *stop;
    int errors, rounds;
} reader_arg;

/* Reads while the writers write: every snapshot must be a gap-free prefix
 * 1..max, and latest's max must never go back. */
static void *reader_main(void *arg)
{
    reader_arg *r = arg;
    uint64_t last_max = 0;
    while (!__atomic_load_n(r->stop, __ATOMIC_ACQUIRE)) {
        collector c = {0};
        uint64_t max = 0;
        if (store_event_latest(r->s, "conc", collect_event, &c, &max) != STORE_OK || max < last_max)
            r->errors++;
        for (size_t i = 0; i < c.n; i++)
            if (c.ev[i].seq > max)
                r->errors++;
        last_max = max;
        collector_clear(&c);
        if (store_event_range(r->s, "conc", 0, 0, 0, collect_event, &c) != STORE_OK)
            r->errors++;
        for (size_t i = 0; i < c.n; i++)
            if (c.ev[i].seq != i + 1)
                r->errors++;
        collector_clear(&c);
        r->rounds++;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void case_concurrent(store *s)
{
    pthread_t wt[WRITERS], rt[2];
    writer_arg *w = calloc(WRITERS, sizeof(*w));
    volatile int stop = 0;
    reader_arg r[2] = {{.s = s, .stop = &stop}, {.s = s, .stop = &stop}};
    if (w == NULL)
        abort();
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&rt[i], NULL, reader_main, &r[i]) == 0);
    for (int i = 0; i < WRITERS; i++) {
        w[i].s = s;
        w[i].id = i;
        CHECK(pthread_create(&wt[i], NULL, writer_main, &w[i]) == 0);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(rt[i], NULL);

    uint64_t *all = malloc(WRITERS * PER_WRITER * sizeof(*all));
    if (all == NULL)
        abort();
    size_t n = 0;
    for (int i = 0; i < WRITERS; i++) {
        CHECK(w[i].errors == 0);
        for (int j = 0; j < PER_WRITER; j++) {
            if (j > 0)
                CHECK(w[i].seqs[j] > w[i].seqs[j - 1]); /* each thread sees its own order */
            all[n++] = w[i].seqs[j];
        }
    }
    qsort(all, n, sizeof(*all), cmp_u64);
    int exact = 1;
    for (size_t i = 0; i < n; i++)
        if (all[i] != i + 1)
            exact = 0;
    CHECK(exact); /* exactly 1..1600: no gap, no duplicate */
    for (int i = 0; i < 2; i++)
        CHECK(r[i].errors == 0);

    collector c = {0};
    uint64_t max = 0;
    CHECK_ST(store_event_range(s, "conc", 0, 0, 0, collect_event, &c), STORE_OK);
    CHECK(range_is(&c, 1, WRITERS * PER_WRITER));
    collector_clear(&c);
    CHECK_ST(store_event_latest(s, "conc", collect_event, &c, &max), STORE_OK);
    CHECK(max == WRITERS * PER_WRITER && c.n == 2);
    if (c.n == 2)
        CHECK(c.ev[1].seq == max);
    collector_clear(&c);
    free(all);
    free(w);
}

/* ---- runner ------------------------------------------------------------------- */

static void finish_case(const char *name)
{
    printf("%s - %s\n", case_failed ? "FAIL" : "ok", name);
    if (case_failed)
        cases_failed++;
    else
        cases_passed++;
}

static void run_case(const char *name, void (*fn)(store *), store_open_fn open_fn, const char *root)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s", root, name);
    case_failed = 0;
    store *s = open_fn(dir);
    if (s == NULL) {
        fprintf(stderr, "  FAIL cannot open store at %s\n", dir);
        case_failed++;
    } else {
        fn(s);
        store_close(s);
    }
    finish_case(name);
}

/* Runs every conformance case; each gets a fresh store under `root`. */
static void run_conformance(store_open_fn open_fn, const char *root)
{
    run_case("users", case_users, open_fn, root);
    run_case("sequences", case_sequences, open_fn, root);
    run_case("insert_many", case_insert_many, open_fn, root);
    run_case("max_names", case_max_names, open_fn, root);
    run_case("latest", case_latest, open_fn, root);
    run_case("range", case_range, open_fn, root);
    run_case("unicode", case_unicode, open_fn, root);
    run_case("concurrent", case_concurrent, open_fn, root);

    /* Persistence closes and reopens the store itself. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/persistence", root);
    persist_ctx p = {open_fn, dir};
    case_failed = 0;
    store *s = open_fn(dir);
    CHECK(s != NULL);
    if (s != NULL)
        case_persistence(s, &p);
    finish_case("persistence");
}

/* ---- SQLite-only: store_open() and path handling --------------------------------- */

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void check_open(const char *uri, const char *expect_file)
{
    store *s = store_open(uri);
    CHECK(s != NULL);
    if (s != NULL) {
        CHECK_ST(store_ping(s), STORE_OK);
        CHECK(strcmp(s->ops->name, "sqlite") == 0);
        store_close(s);
    }
    CHECK(is_file(expect_file));
}

static void run_open_cases(const char *root)
{
    char uri[4096], file[4096];
    case_failed = 0;
    fprintf(stderr, "# store_open: the errors logged next are expected\n");

    /* A missing path without an extension becomes a directory (parents too). */
    snprintf(uri, sizeof(uri), "sqlite:%s/open/a/db", root);
    snprintf(file, sizeof(file), "%s/open/a/db/broker.sqlite3", root);
    check_open(uri, file);
    /* An existing directory, bare path, trailing slash. */
    snprintf(uri, sizeof(uri), "%s/open/a/db/", root);
    check_open(uri, file);
    /* A path with an extension is the file itself. */
    snprintf(uri, sizeof(uri), "sqlite:%s/open/events.db", root);
    snprintf(file, sizeof(file), "%s/open/events.db", root);
    check_open(uri, file);
    snprintf(uri, sizeof(uri), "sqlite://%s/open/other.sqlite", root);
    snprintf(file, sizeof(file), "%s/open/other.sqlite", root);
    check_open(uri, file);

    /* Invalid (an unparsable MongoDB URI fails at once, without a server). */
    CHECK(store_open("mongodb://user:pw@") == NULL);
    CHECK(store_open("mongodb+srv://") == NULL);
    CHECK(store_open("") == NULL);
    CHECK(store_open("sqlite:") == NULL);
    CHECK(store_open(NULL) == NULL);
    snprintf(uri, sizeof(uri), "%s/open/events.db/sub", root); /* parent is a file */
    CHECK(store_open(uri) == NULL);

    CHECK(strcmp(store_status_text(STORE_CONFLICT), "conflict") == 0);
    store_user_clear(NULL);

    finish_case("store_open");
}

/* A database written by a broker before token generations (schema 1) opens,
 * gains users.token_gen at 0, and revocation moves it. */
static void run_schema_upgrade_case(const char *root)
{
    char file[4096];
    sqlite3 *db = NULL;
    case_failed = 0;
    snprintf(file, sizeof(file), "%s/v1.sqlite3", root);
    CHECK(sqlite3_open(file, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE users (id TEXT NOT NULL, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
                       " revoked INTEGER NOT NULL DEFAULT 0, tenant_name TEXT NOT NULL, email TEXT, data TEXT);"
                       "INSERT INTO users VALUES ('" ALICE_ID "', 'old', 'h', 0, 't', NULL, NULL);"
                       "PRAGMA user_version=1;",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    store *s = store_open(file);
    CHECK(s != NULL);
    if (s != NULL) {
        store_user got = {0};
        CHECK_ST(store_user_get(s, "old", &got), STORE_OK);
        CHECK(got.token_gen == 0 && str_eq(got.tenant_name, "t"));
        store_user_clear(&got);
        CHECK_ST(store_user_set_revoked(s, "old", 1), STORE_OK);
        CHECK_ST(store_user_get(s, "old", &got), STORE_OK);
        CHECK(got.token_gen == 1 && got.revoked == 1);
        store_user_clear(&got);
        store_close(s);
    }
    finish_case("schema upgrade 1 -> 2");
}

/* ---- MongoDB: the same cases, when BROKER_TEST_MONGODB_URI names a server ---------- */

#define MONGO_CASES_MAX 16

static const char *mongo_uri_env;       /* BROKER_TEST_MONGODB_URI */
static char mongo_run_id[16];           /* random per run: databases never collide */
static char *mongo_dbs[MONGO_CASES_MAX]; /* every database a case used, to drop at the end */
static int mongo_n_dbs;

/* The URI for case directory `dir`: the same server and options, database
 * "<db of the URI or brokertest>_<run id>_<case name>".  0 on success. */
static int mongo_case_uri(const char *dir, char *uri, size_t cap, char *db, size_t dbcap)
{
    const char *base = mongo_uri_env;
    const char *scheme = strstr(base, "://");
    if (scheme == NULL)
        return -1;
    const char *auth = scheme + 3;
    const char *path = auth + strcspn(auth, "/?");
    const char *query = strchr(path, '?');
    const char *db_start = *path == '/' ? path + 1 : path;
    size_t db_len = (size_t)((query ? query : path + strlen(path)) - db_start);
    const char *name = strrchr(dir, '/');
    name = name ? name + 1 : dir;
    if (db_len == 0)
        snprintf(db, dbcap, "brokertest_%s_%s", mongo_run_id, name);
    else
        snprintf(db, dbcap, "%.*s_%s_%s", (int)(db_len > 24 ? 24 : db_len), db_start, mongo_run_id, name);
    int n = snprintf(uri, cap, "%.*s/%s%s", (int)(path - base), base, db, query ? query : "");
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static store *mongo_open_case(const char *dir)
{
    char uri[4096], db[128];
    if (mongo_case_uri(dir, uri, sizeof(uri), db, sizeof(db)) != 0)
        return NULL;
    int known = 0;
    for (int i = 0; i < mongo_n_dbs; i++)
        known |= strcmp(mongo_dbs[i], db) == 0;
    if (!known && mongo_n_dbs < MONGO_CASES_MAX)
        mongo_dbs[mongo_n_dbs++] = strdup(db);
    /* Through store_open(), so that the routing of mongodb:// is tested too. */
    store *s = store_open(uri);
    if (s != NULL && strcmp(s->ops->name, "mongodb") != 0) {
        fprintf(stderr, "  FAIL store_open(mongodb://...) gave the %s backend\n", s->ops->name);
        store_close(s);
        return NULL;
    }
    return s;
}

/* Two processes taking turns on one tenant, as replicas behind a balancer do:
 * each one's cached seq is behind whenever the other wrote since.  Every
 * insert must still land at the next seq, and leave its name's `latest` hint
 * (proto/store.md) exactly at its event: a hint above it would cost every
 * later snapshot one more query for that name. */
static void case_two_writers(void)
{
    char uri[4096], db[128];
    const char *dir = "mongodb/two_writers";
    case_failed = 0;
    store *a = mongo_open_case(dir), *b = mongo_open_case(dir);
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        /* a, a, b, a, a, b...: b is two behind each time, a one. */
        for (int i = 0; i < 24; i++) {
            char name[16];
            snprintf(name, sizeof(name), "n%d", i);
            CHECK(insert(i % 3 == 2 ? b : a, "t", name, "{}", 1000 + i) == (uint64_t)i + 1);
        }
        collector c = {0};
        uint64_t max = 0;
        CHECK_ST(store_event_latest(a, "t", collect_event, &c, &max), STORE_OK);
        CHECK(max == 24 && c.n == 24);
        for (size_t i = 0; i < c.n; i++)
            CHECK(c.ev[i].seq == i + 1);
        collector_clear(&c);

        mongoc_client_t *client = NULL;
        if (mongo_case_uri(dir, uri, sizeof(uri), db, sizeof(db)) == 0)
            client = mongoc_client_new(uri);
        CHECK(client != NULL);
        if (client != NULL) {
            mongoc_collection_t *latest = mongoc_client_get_collection(client, db, "latest");
            bson_t *all = bson_new();
            mongoc_cursor_t *cur = mongoc_collection_find_with_opts(latest, all, NULL, NULL);
            const bson_t *doc;
            int docs = 0, off = 0;
            while (mongoc_cursor_next(cur, &doc)) {
                bson_iter_t it;
                const char *event = bson_iter_init_find(&it, doc, "event") ? bson_iter_utf8(&it, NULL) : "";
                int64_t hint = bson_iter_init_find(&it, doc, "seq") ? bson_iter_as_int64(&it) : 0;
                docs++;
                if (hint != atoll(event + 1) + 1) {
                    fprintf(stderr, "  hint of %s is %" PRId64 ", its event is %lld\n", event, hint,
                            atoll(event + 1) + 1);
                    off++;
                }
            }
            bson_error_t err;
            CHECK(!mongoc_cursor_error(cur, &err));
            CHECK(docs == 24 && off == 0);
            mongoc_cursor_destroy(cur);
            bson_destroy(all);
            mongoc_collection_destroy(latest);
            mongoc_client_destroy(client);
        }
    }
    if (a != NULL)
        store_close(a);
    if (b != NULL)
        store_close(b);
    finish_case("two_writers");
}

/* Drops the databases of a run that passed; names them when one failed. */
static void mongo_cleanup(int keep)
{
    mongoc_client_t *client = keep ? NULL : mongoc_client_new(mongo_uri_env);
    for (int i = 0; i < mongo_n_dbs; i++) {
        if (client != NULL) {
            bson_error_t err;
            mongoc_database_t *db = mongoc_client_get_database(client, mongo_dbs[i]);
            if (!mongoc_database_drop(db, &err))
                fprintf(stderr, "# cannot drop database %s: %s\n", mongo_dbs[i], err.message);
            mongoc_database_destroy(db);
        } else if (keep) {
            fprintf(stderr, "mongodb database kept: %s\n", mongo_dbs[i]);
        }
        free(mongo_dbs[i]);
    }
    mongo_n_dbs = 0;
    if (client != NULL)
        mongoc_client_destroy(client);
}

/* Runs the conformance suite on MongoDB; 1 when it was skipped. */
static int run_mongo_conformance(void)
{
    mongo_uri_env = getenv("BROKER_TEST_MONGODB_URI");
    if (mongo_uri_env == NULL || *mongo_uri_env == '\0') {
        printf("mongodb conformance: skipped (BROKER_TEST_MONGODB_URI not set)\n");
        return 1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(mongo_run_id, sizeof(mongo_run_id), "%08lx",
             (unsigned long)((now.tv_nsec ^ (now.tv_sec << 20) ^ ((long)getpid() << 8)) & 0xffffffffL));
    printf("# mongodb conformance (run %s)\n", mongo_run_id);
    int failed_before = cases_failed;
    run_conformance(mongo_open_case, "mongodb");
    case_two_writers();
    mongo_cleanup(cases_failed != failed_before);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    /* Errors only: the "cannot open" cases log on purpose. */
    log_init("test_store", "error", NULL);
    char root[] = "/tmp/test_store.XXXXXX";
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    run_conformance(store_sqlite_open, root);
    run_open_cases(root);
    run_schema_upgrade_case(root);
    int skipped = run_mongo_conformance();

    if (cases_failed == 0)
        nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "store files kept in %s\n", root);
    log_close();
    if (skipped)
        printf("%d passed, %d failed, %d skipped\n", cases_passed, cases_failed, skipped);
    else
        printf("%d passed, %d failed\n", cases_passed, cases_failed);
    return cases_failed ? 1 : 0;
}
