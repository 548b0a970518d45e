/*
 * ratelimit.h - token buckets by key (a username, an address), for failed
 * credentials.
 *
 * A bucket holds up to `per_minute` tokens and refills at `per_minute` a
 * minute.  An attempt goes on while its bucket has a token, and only a
 * failure takes one: an honest user who types the right password is never
 * refused because other attempts of the same key are under way.  Attempts
 * that were already running when the bucket ran dry each still take their
 * token, so the bucket goes into debt (down to minus its size) and a burst
 * of concurrent failures waits that much longer: the attempts a burst gets
 * are the bucket's size plus those it had in flight at once.
 *
 * The table is fixed in size (no input can grow it): keys are hashed with a
 * per-process random seed into slots; when the few slots a key may use are
 * taken by other keys, the one idle longest is reused (a bucket idle that
 * long has refilled, so nothing is lost).  Thread-safe.
 */
#ifndef BROKER_RATELIMIT_H
#define BROKER_RATELIMIT_H

#include <stddef.h>

typedef struct ratelimit ratelimit;

/* A limiter named `name`: its refusals count in
 * broker_rate_limited_total{limit="<name>"}.  `per_minute` 0 gives NULL, a
 * limiter that never limits. */
ratelimit *ratelimit_new(const char *name, long per_minute, size_t slots);
void ratelimit_free(ratelimit *rl);

/* 0 when `key`'s bucket has a token (the attempt may go on; nothing is
 * taken), else the seconds (>= 1) until it has one. */
long ratelimit_check(ratelimit *rl, const char *key, size_t len);
/* An attempt of `key` failed: takes a token. */
void ratelimit_fail(ratelimit *rl, const char *key, size_t len);

#endif
