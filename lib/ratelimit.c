/*
 * ratelimit.c - see ratelimit.h.
 */
#include "ratelimit.h"
#include "hash.h"
#include "clock.h"
#include "metrics.h"

#include <stdio.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define PROBE 8 /* slots a key may use, from its hash on */

typedef struct bucket {
    uint64_t key;     /* hash of the key; 0 = free */
    double tokens;
    int64_t at_us;    /* when `tokens` was last brought up to date */
} bucket;

struct ratelimit {
    pthread_mutex_t lock;
    double per_us, cap;
    metric_value *refused;
    uint64_t seed;
    size_t nslots;
    bucket *slots;
};

ratelimit *ratelimit_new(const char *name, long per_minute, size_t slots)
{
    char series[128];
    snprintf(series, sizeof series, "broker_rate_limited_total{limit=\"%s\"}", name);
    metric_value *refused = metrics_counter(series, "attempts refused with 429 by a limit on failed credentials");
    if (per_minute <= 0 || slots == 0)
        return NULL;
    ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    rl->refused = refused;
    rl->slots = calloc(slots + PROBE, sizeof *rl->slots);
    if (rl->slots == NULL) {
        free(rl);
        return NULL;
    }
    if (getrandom(&rl->seed, sizeof rl->seed, 0) != (ssize_t)sizeof rl->seed)
        rl->seed = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
    pthread_mutex_init(&rl->lock, NULL);
    rl->cap = (double)per_minute;
    rl->per_us = (double)per_minute / 60e6;
    rl->nslots = slots;
    return rl;
}

void ratelimit_free(ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl->slots);
    free(rl);
}

/* FNV-1a over the seed and the key: the seed keeps a client from choosing
 * keys that share slots on purpose. */
static uint64_t key_hash(const ratelimit *rl, const char *key, size_t len)
{
    uint64_t h = hash_fnv1a_more(HASH_FNV_OFFSET ^ rl->seed, key, len);
    h ^= h >> 29;
    return h ? h : 1;
}

/* The bucket of `h`, brought up to date; a new full one when it has none. */
static bucket *bucket_of(ratelimit *rl, uint64_t h, int64_t now)
{
    size_t first = (size_t)(h % rl->nslots);
    bucket *oldest = &rl->slots[first];
    for (size_t i = first; i < first + PROBE; i++) {
        bucket *b = &rl->slots[i];
        if (b->key == h) {
            b->tokens += (double)(now - b->at_us) * rl->per_us;
            if (b->tokens > rl->cap)
                b->tokens = rl->cap;
            b->at_us = now;
            return b;
        }
        if (b->key == 0 || b->at_us < oldest->at_us)
            oldest = b;
        if (b->key == 0)
            break;
    }
    *oldest = (bucket){.key = h, .tokens = rl->cap, .at_us = now};
    return oldest;
}

long ratelimit_check(ratelimit *rl, const char *key, size_t len)
{
    if (rl == NULL)
        return 0;
    uint64_t h = key_hash(rl, key, len);
    int64_t now = clock_mono_us();
    pthread_mutex_lock(&rl->lock);
    bucket *b = bucket_of(rl, h, now);
    long wait = b->tokens >= 1.0 ? 0 : (long)((1.0 - b->tokens) / rl->per_us / 1e6) + 1;
    pthread_mutex_unlock(&rl->lock);
    if (wait > 0)
        atomic_fetch_add(rl->refused, 1);
    return wait;
}

void ratelimit_fail(ratelimit *rl, const char *key, size_t len)
{
    if (rl == NULL)
        return;
    uint64_t h = key_hash(rl, key, len);
    int64_t now = clock_mono_us();
    pthread_mutex_lock(&rl->lock);
    bucket *b = bucket_of(rl, h, now);
    b->tokens = b->tokens - 1.0 < -rl->cap ? -rl->cap : b->tokens - 1.0;
    pthread_mutex_unlock(&rl->lock);
}
