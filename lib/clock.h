/*
 * clock.h - the corrected wall clock every service reads.
 *
 * JWT iat/exp and event timestamps come from network time, not the host
 * clock: certd measures the offset between NTP servers and the host, and
 * every process applies it here.  Until an offset is set the clock is the
 * host's (clock_is_synced() says 0).  Lock-free: readers never wait.
 */
#ifndef BROKER_CLOCK_H
#define BROKER_CLOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

int64_t clock_now_ms(void);
int64_t clock_now_s(void);
/* offset_ms is added to the host's CLOCK_REALTIME. */
void clock_set_offset_ms(int64_t offset_ms);
int64_t clock_offset_ms(void);
int clock_is_synced(void);

/* Where the offset comes from, for /readyz and the bus (proto/proto_bus.h):
 * a fresh network measurement, the last one kept because no server answered
 * since, or the host clock (nothing measured yet, or network time off). */
typedef enum clock_source {
    CLOCK_SOURCE_HOST = 'H',
    CLOCK_SOURCE_NETWORK = 'N',
    CLOCK_SOURCE_KEPT = 'K'
} clock_source;

/* Sets the offset (unless `source` is CLOCK_SOURCE_HOST, which keeps the
 * current one: zero until a measurement) and the state /readyz reports;
 * `reason` says why the clock is not fresh network time ("" when it is). */
void clock_set_state(int64_t offset_ms, clock_source source, const char *reason);
/* The state: its source, and the reason copied into reason[size]. */
clock_source clock_state(char *reason, size_t size);
/* The host's monotonic clock in microseconds, for measuring durations
 * (never corrected, never set back). */
int64_t clock_mono_us(void);

/* Timed waits that neither a change of the host clock nor the network
 * offset can stretch or cut short: clock_cond_init() makes a condition
 * variable whose pthread_cond_timedwait() deadlines are on CLOCK_MONOTONIC,
 * and clock_mono_after_ms() gives such a deadline `ms` from now.  (A
 * variable made with default attributes reads CLOCK_REALTIME, and a
 * monotonic deadline has then always passed: the wait returns at once.) */
int clock_cond_init(pthread_cond_t *cond);
struct timespec clock_mono_after_ms(int64_t ms);

#endif
