/*
 * clock.c - host clock plus an atomically published offset.
 */
#include "clock.h"

#include <stdatomic.h>
#include <time.h>

static _Atomic int64_t offset_ms;
static atomic_int synced;

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

int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
