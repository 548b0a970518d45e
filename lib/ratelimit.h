/*
 * ratelimit.h - token buckets by key (a username, an address), for failed
 * credentials.
 *
 * A bucket holds up to `per_minute` tokens and refills at `per_minute` a
 * minute.  An attempt takes a token before it runs (so that a thousand
 * concurrent guesses cannot all slip through one check) and gives it back
 * when it succeeded: only failures drain a bucket, and an honest user who
 * types the right password is never slowed down by it.
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

/* Takes a token of `key`'s bucket: 0 when the attempt may go on, else the
 * seconds (>= 1) until a token is back. */
long ratelimit_take(ratelimit *rl, const char *key, size_t len);
/* Gives back the token of an attempt that succeeded. */
void ratelimit_refund(ratelimit *rl, const char *key, size_t len);

#endif
