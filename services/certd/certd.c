/*
 * certd.c - certd's life in a process: its threads start when it is plugged
 * into the door and stop at the door's shutdown (certd.h).
 */
#include "certd_internal.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int certd_sleep(certd *c, int64_t ms, int renewals)
{
    struct timespec until = clock_mono_after_ms(ms);
    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->stop) && !(renewals && c->renew_now))
        if (pthread_cond_timedwait(&c->wake, &c->lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&c->lock);
    return atomic_load(&c->stop);
}

/* SIGUSR1 (runtime_wait_for_signal): renew now. */
static void renew_now(void *arg)
{
    certd *c = arg;
    if (!c->manage_certificates) {
        log_info("SIGUSR1: this process does not manage certificates (--secure --auto_cert)");
        return;
    }
    log_info("SIGUSR1: renewing the certificate now");
    pthread_mutex_lock(&c->lock);
    c->renew_now = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
}

static void certd_stop(void *arg)
{
    certd *c = arg;
    runtime_on_sigusr1(NULL, NULL);
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stop, 1);
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    if (c->time_started)
        pthread_join(c->time_thread, NULL);
    if (c->cert_started)
        pthread_join(c->cert_thread, NULL);
}

static void certd_release(void *arg)
{
    certd *c = arg;
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->challenges_lock);
    free(c);
}

int certd_attach(door *d, broker_runtime *rt, const certd_options *options)
{
    certd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->rt = rt;
    c->cfg = &rt->cfg;
    c->publish = options->publish;
    c->manage_certificates = options->manage_certificates;
    if (clock_cond_init(&c->wake) != 0) {
        free(c);
        return -1;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->challenges_lock, NULL);
    c->m_offset_ms = metrics_gauge("broker_clock_offset_milliseconds",
                                   "what this process adds to the host clock (network time)");
    c->m_ntp_failures = metrics_counter("broker_ntp_failures_total",
                                        "network time measurements with no usable answer (none, or absurd)");
    c->m_orders_ok = metrics_counter("broker_acme_orders_total{result=\"ok\"}", "ACME orders, by outcome");
    c->m_orders_failed = metrics_counter("broker_acme_orders_total{result=\"failed\"}", "ACME orders, by outcome");
    c->m_not_after = metrics_gauge("broker_certificate_expiry_timestamp_seconds",
                                   "when the certificate under --certs expires (Unix time; 0: none yet)");
    if (certd_challenge_route(d, c) != 0 || door_on_shutdown(d, certd_stop, certd_release, c) != 0) {
        certd_release(c);
        return -1;
    }
    /* From here the door owns c: its shutdown stops and frees it. */
    if (pthread_create(&c->time_thread, NULL, certd_time_main, c) != 0) {
        log_error("certd: cannot start the network time thread");
        return -1;
    }
    c->time_started = 1;
    if (c->manage_certificates) {
        if (pthread_create(&c->cert_thread, NULL, certd_cert_main, c) != 0) {
            log_error("certd: cannot start the certificate thread");
            return -1;
        }
        c->cert_started = 1;
    }
    runtime_on_sigusr1(renew_now, c);
    return 0;
}
