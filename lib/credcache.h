/*
 * credcache.h - remembers Basic credentials that passed Argon2, so that a
 * client sending `Authorization: Basic` on every request pays the ~40 ms hash
 * once, not per request.
 *
 * Entries are keyed by HMAC-SHA256(process-random key, username NUL password):
 * the cache never holds a password or anything that helps guess one offline.
 * Each entry also keeps a digest of the user's stored hash at the time it was
 * verified; a lookup passes only when the caller's current stored hash still
 * matches, so a password change (in this process or another) voids it even
 * before credcache_forget_user() runs.  Bounded: a fixed number of slots, a
 * new entry replaces whatever held its slot; entries also age out.
 */
#ifndef BROKER_CREDCACHE_H
#define BROKER_CREDCACHE_H

#include <stddef.h>

typedef struct credcache credcache;

credcache *credcache_new(size_t slots, int ttl_s);
void credcache_free(credcache *c);

/* 1 when (username, password) was remembered and `stored_hash` is still the user's hash. */
int credcache_check(credcache *c, const char *username, const char *password, const char *stored_hash);
void credcache_remember(credcache *c, const char *username, const char *password, const char *stored_hash);
/* Drops every entry of `username` (on revoke and update). */
void credcache_forget_user(credcache *c, const char *username);

#endif
