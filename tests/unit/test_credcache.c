/*
 * test_credcache.c - the Basic-credential cache: hits only for the exact
 * (username, password, stored hash) remembered, forgets on demand, stays
 * bounded, and ages entries out on the corrected clock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "clock.h"
#include "credcache.h"
#include "log.h"

#include <pthread.h>

/* Stand-ins for stored Argon2 hashes: the cache only digests them. */
static const char HASH_A[] = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaEFoYXNoQWhhc2hBaGFzaEFoYXNoQWhhc2hB";
static const char HASH_B[] = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaEJoYXNoQmhhc2hCaGFzaEJoYXNoQmhhc2hC";

static void case_remember_check(void)
{
    clock_set_offset_ms(0);
    credcache *c = credcache_new(64, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    /* Nothing is cached before remember. */
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_A), 0);
    credcache_remember(c, "alice", "pw-alice-1", HASH_A);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_A), 1);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_A), 1); /* a hit does not consume */
    /* Wrong password, wrong user, near misses. */
    CHECK_INT(credcache_check(c, "alice", "pw-alice-2", HASH_A), 0);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1 ", HASH_A), 0);
    CHECK_INT(credcache_check(c, "alice", "", HASH_A), 0);
    CHECK_INT(credcache_check(c, "Alice", "pw-alice-1", HASH_A), 0);
    CHECK_INT(credcache_check(c, "bob", "pw-alice-1", HASH_A), 0);
    /* The username/password boundary is part of the key: ("ab","c") is not ("a","bc"). */
    credcache_remember(c, "ab", "c", HASH_A);
    CHECK_INT(credcache_check(c, "ab", "c", HASH_A), 1);
    CHECK_INT(credcache_check(c, "a", "bc", HASH_A), 0);
    CHECK_INT(credcache_check(c, "abc", "", HASH_A), 0);
    credcache_free(c);
}

static void case_stored_hash_changed(void)
{
    clock_set_offset_ms(0);
    credcache *c = credcache_new(64, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    credcache_remember(c, "alice", "pw-alice-1", HASH_A);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_A), 1);
    /* The password was changed elsewhere: the stored hash differs now. */
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_B), 0);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", ""), 0);
    /* Remembering under the new hash makes the new hash pass. */
    credcache_remember(c, "alice", "pw-alice-1", HASH_B);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_B), 1);
    CHECK_INT(credcache_check(c, "alice", "pw-alice-1", HASH_A), 0);
    credcache_free(c);
}

/* The table is direct-mapped under a random key, so any two entries may share
 * a slot: a case asserts a hit only for the entry remembered last. */
static void case_forget_user(void)
{
    clock_set_offset_ms(0);
    credcache *c = credcache_new(256, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    /* Two passwords of alice (e.g. before and after a change), then bob last. */
    credcache_remember(c, "alice", "pw-1", HASH_A);
    credcache_remember(c, "alice", "pw-2", HASH_A);
    CHECK_INT(credcache_check(c, "alice", "pw-2", HASH_A), 1);
    credcache_remember(c, "bob", "pw-b", HASH_B);
    credcache_forget_user(c, "alice");
    CHECK_INT(credcache_check(c, "alice", "pw-1", HASH_A), 0);
    CHECK_INT(credcache_check(c, "alice", "pw-2", HASH_A), 0);
    CHECK_INT(credcache_check(c, "bob", "pw-b", HASH_B), 1);
    /* Forgetting an unknown user is harmless. */
    credcache_forget_user(c, "nobody");
    CHECK_INT(credcache_check(c, "bob", "pw-b", HASH_B), 1);
    /* A name that starts like alice's is another user. */
    credcache_remember(c, "alice", "pw-1", HASH_A);
    credcache_remember(c, "alice2", "pw-1", HASH_A);
    credcache_forget_user(c, "alice");
    CHECK_INT(credcache_check(c, "alice2", "pw-1", HASH_A), 1);
    CHECK_INT(credcache_check(c, "alice", "pw-1", HASH_A), 0);
    credcache_forget_user(c, "alice2");
    CHECK_INT(credcache_check(c, "alice2", "pw-1", HASH_A), 0);
    /* Remembered again after being forgotten. */
    credcache_remember(c, "alice", "pw-1", HASH_A);
    CHECK_INT(credcache_check(c, "alice", "pw-1", HASH_A), 1);
    credcache_free(c);
}

static void case_bounded(void)
{
    clock_set_offset_ms(0);
    enum { SLOTS = 8, USERS = 2000 };
    credcache *c = credcache_new(SLOTS, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    char user[32], pass[32];
    for (int i = 0; i < USERS; i++) {
        snprintf(user, sizeof user, "user%d", i);
        snprintf(pass, sizeof pass, "pass%d", i);
        credcache_remember(c, user, pass, HASH_A);
        /* The entry just remembered is always there. */
        if (credcache_check(c, user, pass, HASH_A) != 1) {
            fprintf(stderr, "  FAIL %s:%d: %s not found right after remember\n", __FILE__, __LINE__, user);
            check_case_failures++;
            break;
        }
    }
    /* At most SLOTS entries survive; wrong passwords never hit. */
    int hits = 0, false_hits = 0;
    for (int i = 0; i < USERS; i++) {
        snprintf(user, sizeof user, "user%d", i);
        snprintf(pass, sizeof pass, "pass%d", i);
        hits += credcache_check(c, user, pass, HASH_A);
        snprintf(pass, sizeof pass, "pass%d", i + 1);
        false_hits += credcache_check(c, user, pass, HASH_A);
        false_hits += credcache_check(c, user, "pass0", HASH_B);
    }
    CHECK(hits >= 1 && hits <= SLOTS);
    CHECK_INT(false_hits, 0);
    /* The last one remembered is still there. */
    snprintf(user, sizeof user, "user%d", USERS - 1);
    snprintf(pass, sizeof pass, "pass%d", USERS - 1);
    CHECK_INT(credcache_check(c, user, pass, HASH_A), 1);
    credcache_forget_user(c, user);
    CHECK_INT(credcache_check(c, user, pass, HASH_A), 0);
    credcache_free(c);

    /* One slot: each remember replaces the previous. */
    c = credcache_new(1, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    credcache_remember(c, "alice", "pw-a", HASH_A);
    credcache_remember(c, "bob", "pw-b", HASH_B);
    CHECK_INT(credcache_check(c, "bob", "pw-b", HASH_B), 1);
    CHECK_INT(credcache_check(c, "alice", "pw-a", HASH_A), 0);
    credcache_free(c);
}

static void case_ttl(void)
{
    clock_set_offset_ms(0);
    credcache *c = credcache_new(64, 60);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    credcache_remember(c, "alice", "pw-a", HASH_A);
    clock_set_offset_ms(30 * 1000);
    CHECK_INT(credcache_check(c, "alice", "pw-a", HASH_A), 1);
    clock_set_offset_ms(61 * 1000);
    CHECK_INT(credcache_check(c, "alice", "pw-a", HASH_A), 0);
    clock_set_offset_ms(0);
    /* Remembered again, it lives again. */
    credcache_remember(c, "alice", "pw-a", HASH_A);
    CHECK_INT(credcache_check(c, "alice", "pw-a", HASH_A), 1);
    credcache_free(c);

    /* ttl 0: nothing is ever a hit. */
    c = credcache_new(64, 0);
    CHECK(c != NULL);
    if (c != NULL) {
        credcache_remember(c, "alice", "pw-a", HASH_A);
        CHECK_INT(credcache_check(c, "alice", "pw-a", HASH_A), 0);
        credcache_free(c);
    }
    clock_set_offset_ms(0);
}

static void case_edges(void)
{
    clock_set_offset_ms(0);
    /* A NULL cache is a cache that never hits. */
    credcache_remember(NULL, "alice", "pw", HASH_A);
    CHECK_INT(credcache_check(NULL, "alice", "pw", HASH_A), 0);
    credcache_forget_user(NULL, "alice");
    credcache_free(NULL);

    credcache *c = credcache_new(64, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    /* Usernames over 128 bytes are never cached. */
    char longname[200];
    memset(longname, 'u', 129);
    longname[129] = '\0';
    credcache_remember(c, longname, "pw", HASH_A);
    CHECK_INT(credcache_check(c, longname, "pw", HASH_A), 0);
    longname[128] = '\0'; /* 128 is fine */
    credcache_remember(c, longname, "pw", HASH_A);
    CHECK_INT(credcache_check(c, longname, "pw", HASH_A), 1);
    /* An empty password and a long one. */
    credcache_remember(c, "empty", "", HASH_A);
    CHECK_INT(credcache_check(c, "empty", "", HASH_A), 1);
    CHECK_INT(credcache_check(c, "empty", "x", HASH_A), 0);
    char longpw[10000];
    memset(longpw, 'p', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\0';
    credcache_remember(c, "longpw", longpw, HASH_A);
    CHECK_INT(credcache_check(c, "longpw", longpw, HASH_A), 1);
    longpw[5000] = 'q';
    CHECK_INT(credcache_check(c, "longpw", longpw, HASH_A), 0);
    credcache_free(c);

    /* Two caches have different keys but the same answers. */
    credcache *c1 = credcache_new(64, 300), *c2 = credcache_new(64, 300);
    CHECK(c1 != NULL && c2 != NULL);
    if (c1 != NULL && c2 != NULL) {
        credcache_remember(c1, "alice", "pw", HASH_A);
        CHECK_INT(credcache_check(c1, "alice", "pw", HASH_A), 1);
        CHECK_INT(credcache_check(c2, "alice", "pw", HASH_A), 0);
    }
    credcache_free(c1);
    credcache_free(c2);
}

typedef struct worker_arg {
    credcache *c;
    int id;
    int wrong; /* hits that should not have been */
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    char user[32], pass[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(user, sizeof user, "w%d-u%d", w->id, i % 50);
        snprintf(pass, sizeof pass, "p%d", i % 50);
        credcache_remember(w->c, user, pass, HASH_A);
        credcache_check(w->c, user, pass, HASH_A);
        w->wrong += credcache_check(w->c, user, "not-the-password", HASH_A);
        if (i % 100 == 0)
            credcache_forget_user(w->c, user);
    }
    return NULL;
}

static void case_threads(void)
{
    clock_set_offset_ms(0);
    credcache *c = credcache_new(128, 300);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    pthread_t t[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){c, i, 0};
        CHECK_INT(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(args[i].wrong, 0);
    }
    credcache_free(c);
}

int main(void)
{
    log_init("test_credcache", "error", NULL);
    RUN_CASE(case_remember_check);
    RUN_CASE(case_stored_hash_changed);
    RUN_CASE(case_forget_user);
    RUN_CASE(case_bounded);
    RUN_CASE(case_ttl);
    RUN_CASE(case_edges);
    RUN_CASE(case_threads);
    clock_set_offset_ms(0);
    log_close();
    return check_summary();
}
