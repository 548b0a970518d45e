/*
 * password.h - Argon2id password hashing (libargon2).
 *
 * Parameters follow OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane):
 * about 40 ms on this 2-core machine, so a login costs one of those and the
 * Basic-credential cache (credcache.h) keeps it off the hot path.  Both
 * calls block: the computation runs on a pool of one thread per CPU, in
 * arrival order (password.c says why).
 */
#ifndef BROKER_PASSWORD_H
#define BROKER_PASSWORD_H

/* Hashes `password` with a fresh random salt.  Returns a malloc'd encoded
 * hash ("$argon2id$v=19$m=...") or NULL on failure (logged). */
char *password_hash(const char *password);
/* Registers broker_password_verifications_total (so that it shows 0 before
 * the first verification). */
void password_metrics_init(void);

/* 1 when `password` matches `encoded`, 0 otherwise (including a malformed hash). */
int password_verify(const char *encoded, const char *password);

/* The same, or PASSWORD_BUSY without computing anything when the pool has
 * PASSWORD_BACKLOG verifications per thread waiting already: a flood of
 * guesses from many addresses then gets quick refusals to retry, and the
 * verifications that are taken wait well under a second, instead of every
 * caller waiting behind a queue that only grows. */
#define PASSWORD_BUSY (-1)
#define PASSWORD_BACKLOG 32
int password_verify_bounded(const char *encoded, const char *password);

/* The process is stopping: the checks waiting for the pool, and any asked
 * from now on, end at once (busy; a hash fails), so that the request
 * threads waiting on them let the server stop without working through a
 * flood's backlog.  The one running on each pool thread finishes. */
void password_stop_waiting(void);

#endif
