/*
 * certd_internal.h - what certd's files share: the certd object, its sleep
 * that stop and "renew now" cut short, and the challenge table.
 */
#ifndef BROKER_CERTD_INTERNAL_H
#define BROKER_CERTD_INTERNAL_H

#include "certd.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define CERTD_CHALLENGES 16 /* tokens answered at once: one per name of an order */

typedef struct certd_challenge {
    char token[128];
    char key_authorization[256];
} certd_challenge;

typedef struct certd {
    broker_runtime *rt;
    const broker_config *cfg;
    bus_pub *publish;
    int manage_certificates;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    _Atomic int stop;
    int renew_now;       /* SIGUSR1; under lock */

    pthread_t time_thread, cert_thread;
    int time_started, cert_started;

    metric_value *m_offset_ms, *m_ntp_failures;
    metric_value *m_orders_ok, *m_orders_failed, *m_not_after;

    pthread_mutex_t challenges_lock; /* the cert thread writes, the door reads */
    certd_challenge challenges[CERTD_CHALLENGES];
} certd;

/* Sleeps up to `ms` milliseconds, less when certd stops or (with
 * `renewals`) a renewal is asked for.  Returns 1 when it should stop. */
int certd_sleep(certd *c, int64_t ms, int renewals);

/* certd_time.c: the time thread. */
void *certd_time_main(void *arg);
/* certd_cert.c: the certificate thread. */
void *certd_cert_main(void *arg);

/* certd_challenge.c */
int certd_challenge_route(door *d, certd *c);
int certd_challenge_put(void *arg, const char *token, const char *key_authorization);
void certd_challenge_drop(void *arg, const char *token);

#endif
