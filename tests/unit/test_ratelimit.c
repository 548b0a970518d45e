/*
 * test_ratelimit.c - token buckets for failed credentials: a bucket allows
 * its size in failures and then says how long to wait, a check takes
 * nothing (only failures drain), concurrent failures put it in debt down to
 * minus its size, keys are independent, the table stays bounded however many
 * keys come, and it refills with time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "log.h"
#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* An attempt that fails whenever it is let through: what a guesser does. */
static long take(ratelimit *rl, const char *key)
{
    long wait = ratelimit_check(rl, key, strlen(key));
    if (wait == 0)
        ratelimit_fail(rl, key, strlen(key));
    return wait;
}

static void case_bucket(void)
{
    ratelimit *rl = ratelimit_new("test_bucket", 5, 1024);
    CHECK(rl != NULL);
    for (int i = 0; i < 5; i++)
        CHECK_INT(take(rl, "alice"), 0);
    long wait = take(rl, "alice");
    CHECK(wait >= 1 && wait <= 13); /* 5 a minute: one token back in 12 s */
    CHECK_INT(take(rl, "bob"), 0);  /* another key is untouched */
    /* A key is its bytes: "alice\0x" and "alice" differ. */
    CHECK_INT(ratelimit_check(rl, "alice\0x", 7), 0);
    ratelimit_free(rl);
}

static void case_checks_take_nothing(void)
{
    /* Successes never drain: a thousand checks that pass leave the bucket full. */
    ratelimit *rl = ratelimit_new("test_checks", 3, 64);
    for (int i = 0; i < 1000; i++)
        CHECK_INT(ratelimit_check(rl, "k", 1), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(take(rl, "k"), 0);
    CHECK(take(rl, "k") >= 1);
    ratelimit_free(rl);
}

static void case_debt(void)
{
    /* 10 attempts let through at once (all checked before any failed) each
     * take a token when they fail: the bucket of 3 would owe 7, but owes no
     * more than its size, 3: four tokens to refill at 3 a minute, 80 s. */
    ratelimit *rl = ratelimit_new("test_debt", 3, 64);
    for (int i = 0; i < 10; i++)
        CHECK_INT(ratelimit_check(rl, "k", 1), 0);
    for (int i = 0; i < 10; i++)
        ratelimit_fail(rl, "k", 1);
    long wait = ratelimit_check(rl, "k", 1);
    CHECK(wait >= 80 && wait <= 81);
    ratelimit_free(rl);
    rl = ratelimit_new("test_debt2", 60, 64);
    for (int i = 0; i < 62; i++)
        ratelimit_fail(rl, "k", 1);
    wait = ratelimit_check(rl, "k", 1); /* 60 - 62 = -2: three tokens, 3 s at one a second */
    CHECK(wait >= 3 && wait <= 4);
    ratelimit_free(rl);
}

static void case_off(void)
{
    ratelimit *rl = ratelimit_new("test_off", 0, 64);
    CHECK(rl == NULL);
    for (int i = 0; i < 100; i++)
        CHECK_INT(take(rl, "anyone"), 0);
    ratelimit_free(rl);
}

static void case_refill(void)
{
    ratelimit *rl = ratelimit_new("test_refill", 6000, 64); /* 100 a second */
    for (int i = 0; i < 6000; i++)
        take(rl, "k");
    CHECK(take(rl, "k") >= 1);
    usleep(50 * 1000); /* about 5 tokens back */
    CHECK_INT(take(rl, "k"), 0);
    ratelimit_free(rl);
}

static void case_bounded(void)
{
    /* Far more keys than slots: no growth, no crash; a few other keys leave
     * a drained one drained (only the slots idle longest are reused, and
     * only when a key's few slots are all taken). */
    ratelimit *rl = ratelimit_new("test_bounded", 2, 256);
    take(rl, "victim");
    take(rl, "victim");
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "other%d", i);
        take(rl, key);
    }
    CHECK(take(rl, "victim") >= 1);
    int limited = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        limited += take(rl, key) != 0;
    }
    CHECK_INT(limited, 0); /* each new key gets a full bucket */
    ratelimit_free(rl);
}

#define THREADS 8
#define PER_THREAD 1000

static void *hammer(void *arg)
{
    ratelimit *rl = arg;
    long ok = 0;
    for (int i = 0; i < PER_THREAD; i++)
        ok += take(rl, "shared") == 0;
    return (void *)ok;
}

static void case_threads(void)
{
    /* 8,000 failing attempts from 8 threads on one key of 100: at most the
     * bucket's size plus the attempts in flight at once (one a thread) pass
     * (the refill in the test's few milliseconds is below one token). */
    ratelimit *rl = ratelimit_new("test_threads", 100, 64);
    pthread_t t[THREADS];
    long passed = 0;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, rl);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        passed += (long)r;
    }
    CHECK(passed >= 100 && passed <= 100 + THREADS + 1);
    ratelimit_free(rl);
}

int main(void)
{
    log_init("test_ratelimit", "error", NULL);
    RUN_CASE(case_bucket);
    RUN_CASE(case_checks_take_nothing);
    RUN_CASE(case_debt);
    RUN_CASE(case_off);
    RUN_CASE(case_refill);
    RUN_CASE(case_bounded);
    RUN_CASE(case_threads);
    log_close();
    return check_summary();
}
