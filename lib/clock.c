/*
 * clock.c - host clock plus an atomically published offset.
 */
#include "clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic int64_t offset_ms;
static atomic_int synced;

/* The state is read by /readyz only: a mutex is enough. */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static clock_source state_source = CLOCK_SOURCE_HOST;
static char state_reason[512] = "no network time measured yet: using the host clock";

int64_t clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + atomic_load_explicit(&offset_ms, memory_order_relaxed);
}

int64_t clock_now_s(void)
{
    int64_t ms = clock_now_ms();
    return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

void clock_set_offset_ms(int64_t off)
{
    atomic_store(&offset_ms, off);
    atomic_store(&synced, 1);
}

int64_t clock_offset_ms(void)
{
    return atomic_load(&offset_ms);
}

int clock_is_synced(void)
{
    return atomic_load(&synced);
}

void clock_set_state(int64_t off, clock_source source, const char *reason)
{
    if (source != CLOCK_SOURCE_HOST)
        clock_set_offset_ms(off);
    pthread_mutex_lock(&state_lock);
    state_source = source;
    snprintf(state_reason, sizeof state_reason, "%s", reason != NULL ? reason : "");
    pthread_mutex_unlock(&state_lock);
}

clock_source clock_state(char *reason, size_t size)
{
    pthread_mutex_lock(&state_lock);
    clock_source s = state_source;
    if (size > 0)
        snprintf(reason, size, "%s", state_reason);
    pthread_mutex_unlock(&state_lock);
    return s;
}

int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int clock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 && pthread_cond_init(cond, &attr) == 0 ? 0 : -1;
    pthread_condattr_destroy(&attr);
    return rc;
}

struct timespec clock_mono_after_ms(int64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}
