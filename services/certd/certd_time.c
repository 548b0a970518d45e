/*
 * certd_time.c - network time: measure, judge, apply, tell the others.
 *
 * Every --ntp_interval seconds every server of --ntp_servers is asked at once
 * (sntp.h: replies checked against our request, outliers dropped, the
 * median kept).  What is applied:
 *   - an answer within --ntp_max_offset of the host clock: the new offset,
 *     fresh network time;
 *   - no answer, or one further off than that (a broken or lying server: a
 *     host clock a day wrong is rarer than a bad server): the last good offset
 *     is kept, or the host clock until there has been one, with a warning in
 *     the log and the reason in every service's /readyz, which stays ready:
 *     serving on the host's time beats not serving.
 * A failed measurement is tried again sooner than the interval.  As its own
 * service certd publishes the state after each measurement and every few
 * seconds, so that a service that starts later learns it soon.
 */
#include "certd_internal.h"
#include "clock.h"
#include "log.h"
#include "sntp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTP_TIMEOUT_MS 3000       /* for every server of one measurement */
#define NTP_RETRY_MAX_S 30        /* a failed measurement is tried again this soon at the latest */
#define REPUBLISH_MS 5000         /* the state again on the bus this often */

typedef struct time_state {
    int have_offset;     /* a good measurement happened */
    int64_t offset_ms;   /* the last good one */
    char measured_at[32];/* when, UTC (ISO 8601) */
} time_state;

/* "3650 days", "2 h 5 min", "1.250 s": an offset for a person, rounded to
 * its unit (an hour measured a millisecond short is "1 h 0 min"). */
static void describe_offset(int64_t ms, char *out, size_t size)
{
    int64_t a = ms < 0 ? -ms : ms;
    int64_t minutes = (a + 30000) / 60000;
    const char *sign = ms < 0 ? "-" : "+";
    if (a >= 2 * 86400000LL)
        snprintf(out, size, "%s%lld days", sign, (long long)((a + 43200000) / 86400000));
    else if (minutes >= 60)
        snprintf(out, size, "%s%lld h %lld min", sign, (long long)(minutes / 60), (long long)(minutes % 60));
    else
        snprintf(out, size, "%s%lld.%03lld s", sign, (long long)(a / 1000), (long long)(a % 1000));
}

static void now_iso(char *out, size_t size)
{
    time_t t = (time_t)clock_now_s();
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void publish_state(certd *c)
{
    atomic_store(c->m_offset_ms, clock_offset_ms());
    if (c->publish == NULL)
        return;
    char reason[BUS_CLOCK_REASON_MAX + 1];
    clock_source src = clock_state(reason, sizeof reason);
    bus_publish_clock(c->publish, clock_offset_ms(), (char)src, reason);
}

/* No usable answer this time: keep what there is, and say why. */
static void keep_last(certd *c, const time_state *st, const char *why)
{
    char reason[BUS_CLOCK_REASON_MAX + 1];
    if (st->have_offset) {
        snprintf(reason, sizeof reason, "%s; keeping the offset measured at %s", why, st->measured_at);
        clock_set_state(st->offset_ms, CLOCK_SOURCE_KEPT, reason);
    } else {
        snprintf(reason, sizeof reason, "%s; using the host clock", why);
        clock_set_state(0, CLOCK_SOURCE_HOST, reason);
    }
    log_warn("network time: %s", reason);
    atomic_fetch_add(c->m_ntp_failures, 1);
    publish_state(c);
}

/* One measurement; 1 when it gave fresh network time. */
static int measure(certd *c, time_state *st)
{
    sntp_outcome out;
    char why[BUS_CLOCK_REASON_MAX + 1];
    if (sntp_measure(c->cfg->ntp_servers, NTP_TIMEOUT_MS, &out) != 0) {
        snprintf(why, sizeof why, "no NTP server answered (%.400s)", out.why);
        keep_last(c, st, why);
        return 0;
    }
    char off[48];
    describe_offset(out.offset_ms, off, sizeof off);
    if (out.offset_ms > c->cfg->ntp_max_offset * 1000 || out.offset_ms < -c->cfg->ntp_max_offset * 1000) {
        snprintf(why, sizeof why, "refused an absurd offset of %s from the NTP servers (more than --ntp_max_offset=%ld s)",
                 off, c->cfg->ntp_max_offset);
        keep_last(c, st, why);
        return 0;
    }
    if (!st->have_offset || llabs(out.offset_ms - st->offset_ms) >= 1000)
        log_info("network time: the host clock is off by %s (%d of %d servers answered, %d kept)", off, out.answered,
                 out.asked, out.used);
    st->have_offset = 1;
    st->offset_ms = out.offset_ms;
    now_iso(st->measured_at, sizeof st->measured_at);
    clock_set_state(out.offset_ms, CLOCK_SOURCE_NETWORK, "");
    publish_state(c);
    return 1;
}

void *certd_time_main(void *arg)
{
    certd *c = arg;
    time_state st = {0};
    if (c->cfg->ntp_servers[0] == '\0') {
        clock_set_state(0, CLOCK_SOURCE_HOST, "network time is off (--ntp_servers is empty): using the host clock");
        log_warn("network time is off (--ntp_servers is empty): JWTs and events use the host clock");
    }
    int64_t next_ms = 0; /* monotonic ms of the next measurement */
    for (;;) {
        int64_t now = clock_mono_us() / 1000;
        if (c->cfg->ntp_servers[0] != '\0' && now >= next_ms) {
            int ok = measure(c, &st);
            long wait_s = ok || c->cfg->ntp_interval < NTP_RETRY_MAX_S ? c->cfg->ntp_interval : NTP_RETRY_MAX_S;
            next_ms = clock_mono_us() / 1000 + wait_s * 1000;
        } else {
            publish_state(c);
        }
        now = clock_mono_us() / 1000;
        /* Until the next measurement, if there is one; while publishing, no
         * longer than the next republication. */
        int ntp_on = c->cfg->ntp_servers[0] != '\0';
        int64_t sleep_ms = ntp_on ? next_ms - now : 3600 * 1000;
        if (c->publish != NULL && sleep_ms > REPUBLISH_MS)
            sleep_ms = REPUBLISH_MS;
        if (certd_sleep(c, sleep_ms > 0 ? sleep_ms : 0, 0))
            return NULL;
    }
}
