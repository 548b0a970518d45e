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

#include <stdint.h>

int64_t clock_now_ms(void);
int64_t clock_now_s(void);
/* offset_ms is added to the host's CLOCK_REALTIME. */
void clock_set_offset_ms(int64_t offset_ms);
int64_t clock_offset_ms(void);
int clock_is_synced(void);
/* The host's monotonic clock in microseconds, for measuring durations
 * (never corrected, never set back). */
int64_t clock_mono_us(void);

#endif
