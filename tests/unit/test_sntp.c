/*
 * test_sntp.c - certd's SNTP client (services/certd/sntp.c): the request's
 * bytes; the offset and delay of a reply from known t1..t4; every refused
 * reply (not ours, not a server, a kiss, unsynchronised, short); timestamps
 * across the 2036 era wrap and offsets of ten years either way; and whole
 * rounds of sntp_measure against responder threads on the loopback: a
 * server 5 s ahead, one that answers with a foreign origin (spoofed), a
 * port with nobody, and an outlier an hour off among servers that agree.
 *
 * The responders build their replies with their own byte code, not with
 * sntp.c's, so that the client is not checked against itself.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "sntp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define HOUR_MS 3600000LL
#define TEN_YEARS_MS (3650LL * 24 * HOUR_MS)
#define NTP_ERA1_UNIX_MS 2085978496000LL /* 2036-02-07T06:28:16Z: NTP second 0 again */

/* ---- helpers ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* A valid server reply (LI 0, VN 4, mode 4, stratum 2) to a request
 * whose transmit timestamp was `origin`. */
static void reply_make(unsigned char pkt[48], uint64_t origin, uint64_t t2, uint64_t t3)
{
    memset(pkt, 0, 48);
    pkt[0] = 0x24;
    pkt[1] = 2;
    memcpy(pkt + 12, "\x7f\0\0\x01", 4);
    be64_put(pkt + 24, origin);
    be64_put(pkt + 32, t2);
    be64_put(pkt + 40, t3);
}

static char why[128];

static int parse(const unsigned char *pkt, size_t len, uint64_t sent, uint64_t t1, uint64_t t4, sntp_sample *s)
{
    why[0] = '\0';
    return sntp_reply_parse(pkt, len, sent, t1, t4, s, why, sizeof why);
}

/* ---- packets ------------------------------------------------------------------ */

static void case_request_pack(void)
{
    unsigned char pkt[48];
    memset(pkt, 0xee, sizeof pkt);
    sntp_request_pack(pkt, 0x0123456789abcdefULL);
    CHECK_INT(pkt[0], 0x23); /* LI 0, VN 4, mode 3 */
    CHECK_INT(pkt[0] >> 6, 0);
    CHECK_INT((pkt[0] >> 3) & 7, 4);
    CHECK_INT(pkt[0] & 7, 3);
    static const unsigned char stamp[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    CHECK(memcmp(pkt + 40, stamp, 8) == 0);
    int zero = 1;
    for (int i = 1; i < 40; i++)
        zero &= pkt[i] == 0;
    CHECK(zero);
}

/* Server an hour ahead; 10 ms out, 2 ms inside the server, 30 ms back: the
 * asymmetry shows as a 10 ms error, the delay as 40 ms. */
static void case_reply_offset_and_delay(void)
{
    int64_t base = 1780000000123LL;
    uint64_t t1 = sntp_from_unix_ms(base), sent = t1 ^ 0x5a5a5a;
    uint64_t t2 = sntp_from_unix_ms(base + HOUR_MS + 10), t3 = sntp_from_unix_ms(base + HOUR_MS + 12);
    uint64_t t4 = sntp_from_unix_ms(base + 42);
    unsigned char pkt[48];
    sntp_sample s = {0, 0};
    reply_make(pkt, sent, t2, t3);
    CHECK_INT(parse(pkt, 48, sent, t1, t4, &s), 0);
    CHECK_INT(s.offset_ms, HOUR_MS - 10);
    CHECK_INT(s.delay_ms, 40);

    /* An hour behind, symmetric 5 ms legs: exact. */
    t2 = sntp_from_unix_ms(base - HOUR_MS + 5);
    t3 = sntp_from_unix_ms(base - HOUR_MS + 6);
    t4 = sntp_from_unix_ms(base + 11);
    reply_make(pkt, sent, t2, t3);
    CHECK_INT(parse(pkt, 60, sent, t1, t4, &s), 0); /* trailing extension bytes are fine */
    CHECK_INT(s.offset_ms, -HOUR_MS);
    CHECK_INT(s.delay_ms, 10);

    /* NTPv3 servers are still answered. */
    pkt[0] = 0x1c;
    CHECK_INT(parse(pkt, 48, sent, t1, t4, &s), 0);
}

/* Each refusal fails with a reason that names it. */
static void refused(unsigned char *pkt, size_t len, uint64_t sent, const char *reason)
{
    uint64_t t1 = sntp_from_unix_ms(1780000000000LL);
    sntp_sample s = {123, 456};
    CHECK_INT(parse(pkt, len, sent, t1, t1 + 1000, &s), -1);
    CHECK_CONTAINS(why, reason);
    CHECK(s.offset_ms == 123 && s.delay_ms == 456); /* untouched */
}

static void case_reply_refusals(void)
{
    uint64_t sent = sntp_from_unix_ms(1780000000000LL) | 0x123456;
    uint64_t t = sntp_from_unix_ms(1780000000000LL + 500);
    unsigned char pkt[48];

    reply_make(pkt, sent + 1, t, t);
    refused(pkt, 48, sent, "origin");
    reply_make(pkt, 0, t, t);
    refused(pkt, 48, sent, "origin");

    reply_make(pkt, sent, t, t);
    pkt[0] = 0x23; /* a client request echoed back */
    refused(pkt, 48, sent, "mode");
    pkt[0] = 0x25;
    refused(pkt, 48, sent, "broadcast");
    pkt[0] = 0x14; /* version 2 */
    refused(pkt, 48, sent, "version");

    reply_make(pkt, sent, t, t);
    pkt[0] = 0xe4; /* LI 3: a kiss usually says unsynchronised too */
    pkt[1] = 0;
    memcpy(pkt + 12, "RATE", 4);
    refused(pkt, 48, sent, "\"RATE\"");
    CHECK_CONTAINS(why, "Kiss");
    memcpy(pkt + 12, "DENY", 4);
    refused(pkt, 48, sent, "\"DENY\"");
    memset(pkt + 32, 0, 16); /* a kiss need not carry timestamps: still named */
    refused(pkt, 48, sent, "\"DENY\"");

    reply_make(pkt, sent, t, t);
    pkt[1] = 16;
    refused(pkt, 48, sent, "stratum");

    reply_make(pkt, sent, t, t);
    pkt[0] = 0xe4;
    refused(pkt, 48, sent, "leap indicator 3");

    reply_make(pkt, sent, t, t);
    refused(pkt, 47, sent, "short");
    refused(pkt, 0, sent, "short");

    reply_make(pkt, sent, t, 0);
    refused(pkt, 48, sent, "zero");

    reply_make(pkt, sent, t + (1ULL << 32), t); /* sent before it received */
    refused(pkt, 48, sent, "before");
}

/* ---- timestamps --------------------------------------------------------------- */

static void case_conversions(void)
{
    CHECK(sntp_from_unix_ms(0) == 2208988800ULL << 32);
    CHECK(sntp_from_unix_ms(1500) == ((2208988801ULL << 32) | 0x80000000ULL));
    CHECK(sntp_from_unix_ms(NTP_ERA1_UNIX_MS) == 0); /* the 2036 wrap */
    CHECK(sntp_from_unix_ms(NTP_ERA1_UNIX_MS + 1000) == 1ULL << 32);
    CHECK(sntp_from_unix_ms(NTP_ERA1_UNIX_MS - 1000) == 0xffffffffULL << 32);

    /* Round trips, each at a pivot on either side of the value. */
    static const int64_t when[] = {
        0, 999, 1000000000001LL, 1780000000123LL, NTP_ERA1_UNIX_MS - 1, NTP_ERA1_UNIX_MS,
        NTP_ERA1_UNIX_MS + 1, 2208988800000LL + 777, /* 2040 */ 2524608000999LL /* 2050 */};
    for (size_t i = 0; i < sizeof when / sizeof when[0]; i++) {
        uint64_t ntp = sntp_from_unix_ms(when[i]);
        CHECK_INT(sntp_to_unix_ms_near(ntp, when[i]), when[i]);
        CHECK_INT(sntp_to_unix_ms_near(ntp, when[i] + 50 * 365 * 24 * HOUR_MS), when[i]);
        CHECK_INT(sntp_to_unix_ms_near(ntp, when[i] - 50 * 365 * 24 * HOUR_MS), when[i]);
    }
    /* Every ms of a second survives the trip. */
    for (int64_t ms = 1780000000000LL; ms < 1780000001000LL; ms++) {
        if (sntp_to_unix_ms_near(sntp_from_unix_ms(ms), 1780000000000LL) != ms) {
            CHECK_INT(sntp_to_unix_ms_near(sntp_from_unix_ms(ms), 1780000000000LL), ms);
            break;
        }
    }
    /* Against the real clock: a date after 2036, and now. */
    CHECK_INT(sntp_to_unix_ms(sntp_from_unix_ms(2208988800000LL)), 2208988800000LL);
    int64_t now = now_ms();
    CHECK_INT(sntp_to_unix_ms(sntp_from_unix_ms(now)), now);
}

/* A server ten years ahead or behind, across the 2036 wrap either way. */
static void case_offset_ten_years(void)
{
    unsigned char pkt[48];
    sntp_sample s;
    int64_t here = 1780000000000LL, there = here + TEN_YEARS_MS; /* 2026 and 2036, past the wrap */
    uint64_t t1 = sntp_from_unix_ms(here), t4 = sntp_from_unix_ms(here + 20);
    reply_make(pkt, t1, sntp_from_unix_ms(there + 10), sntp_from_unix_ms(there + 10));
    CHECK_INT(parse(pkt, 48, t1, t1, t4, &s), 0);
    CHECK_INT(s.offset_ms, TEN_YEARS_MS);
    CHECK_INT(s.delay_ms, 20);

    here = 2208988800000LL; /* 2040, its server in 2030 */
    there = here - TEN_YEARS_MS;
    t1 = sntp_from_unix_ms(here);
    t4 = sntp_from_unix_ms(here + 20);
    reply_make(pkt, t1, sntp_from_unix_ms(there + 10), sntp_from_unix_ms(there + 10));
    CHECK_INT(parse(pkt, 48, t1, t1, t4, &s), 0);
    CHECK_INT(s.offset_ms, -TEN_YEARS_MS);

    CHECK_INT(sntp_diff_ms(sntp_from_unix_ms(there), sntp_from_unix_ms(here)), -TEN_YEARS_MS);
    CHECK_INT(sntp_diff_ms(sntp_from_unix_ms(here), sntp_from_unix_ms(there)), TEN_YEARS_MS);
}

/* ---- loopback responders ------------------------------------------------------ */

typedef enum { ANSWER_GOOD, ANSWER_FOREIGN_ORIGIN } answer_kind;

typedef struct responder {
    int fd;
    int port;
    int64_t offset_ms;
    answer_kind kind;
    atomic_int stop;
    atomic_int requests;
    pthread_t thread;
} responder;

/* Now + offset in NTP format, computed here rather than by sntp.c. */
static uint64_t responder_clock(int64_t offset_ms)
{
    int64_t ms = now_ms() + offset_ms;
    uint64_t secs = (uint64_t)(ms / 1000) + 2208988800ULL;
    return secs << 32 | (uint64_t)(ms % 1000) * 4294967ULL;
}

static void responder_answer(responder *r, const unsigned char *req, struct sockaddr_in *from, socklen_t fromlen)
{
    uint64_t origin = 0;
    for (int i = 40; i < 48; i++)
        origin = origin << 8 | req[i];
    if (r->kind == ANSWER_FOREIGN_ORIGIN)
        origin ^= 0x10000; /* a stale or forged reply: close, but not ours */
    unsigned char pkt[48];
    uint64_t t = responder_clock(r->offset_ms);
    reply_make(pkt, origin, t, t + (1ULL << 22)); /* ~1 ms inside the server */
    (void)sendto(r->fd, pkt, sizeof pkt, 0, (struct sockaddr *)from, fromlen);
}

static void *responder_main(void *arg)
{
    responder *r = arg;
    while (!atomic_load(&r->stop)) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        unsigned char req[128];
        struct sockaddr_in from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(r->fd, req, sizeof req, 0, (struct sockaddr *)&from, &fromlen);
        if (n >= 48) {
            atomic_fetch_add(&r->requests, 1);
            responder_answer(r, req, &from, fromlen);
        }
    }
    return NULL;
}

/* A UDP socket bound to 127.0.0.1 on a free port; its port, or -1. */
static int udp_bind_loopback(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    *fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(*fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return ntohs(a.sin_port);
}

static int responder_start(responder *r, answer_kind kind, int64_t offset_ms)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->offset_ms = offset_ms;
    r->port = udp_bind_loopback(&r->fd);
    if (r->port < 0 || pthread_create(&r->thread, NULL, responder_main, r) != 0)
        return -1;
    return 0;
}

static void responder_stop(responder *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    close(r->fd);
}

/* A port where nobody listens (bound, then closed again). */
static int dead_port(void)
{
    int fd, port = udp_bind_loopback(&fd);
    close(fd);
    return port;
}

/* ---- whole rounds ------------------------------------------------------------- */

static void case_measure_good_spoofed_dead(void)
{
    responder good, spoof;
    if (responder_start(&good, ANSWER_GOOD, 5000) != 0 || responder_start(&spoof, ANSWER_FOREIGN_ORIGIN, 0) != 0) {
        CHECK(!"responders start");
        return;
    }
    char servers[200], spoof_name[40], dead_name[40];
    snprintf(spoof_name, sizeof spoof_name, "127.0.0.1:%d", spoof.port);
    snprintf(dead_name, sizeof dead_name, "127.0.0.1:%d", dead_port());
    snprintf(servers, sizeof servers, "127.0.0.1:%d, %s ,%s", good.port, spoof_name, dead_name);

    sntp_outcome out;
    int64_t start = now_ms();
    int rc = sntp_measure(servers, 400, &out);
    int64_t took = now_ms() - start;
    CHECK_INT(rc, 0);
    CHECK_INT(out.asked, 3);
    CHECK_INT(out.answered, 1);
    CHECK_INT(out.used, 1);
    CHECK(out.offset_ms > 4950 && out.offset_ms < 5050);
    CHECK(out.delay_ms >= 0 && out.delay_ms < 100);
    CHECK_CONTAINS(out.why, spoof_name);
    CHECK_CONTAINS(out.why, "origin");
    CHECK_CONTAINS(out.why, dead_name);
    CHECK_CONTAINS(out.why, "nothing listening");
    CHECK(took >= 390 && took < 1000); /* waited for the spoofed one until the deadline, no longer */
    CHECK_INT(atomic_load(&spoof.requests), 1);
    responder_stop(&good);
    responder_stop(&spoof);
}

static void case_measure_outlier_dropped(void)
{
    responder r[3];
    int64_t offsets[3] = {5000, HOUR_MS, 5000};
    char servers[200] = "";
    for (int i = 0; i < 3; i++) {
        if (responder_start(&r[i], ANSWER_GOOD, offsets[i]) != 0) {
            CHECK(!"responder starts");
            return;
        }
        size_t used = strlen(servers);
        snprintf(servers + used, sizeof servers - used, "%s127.0.0.1:%d", i ? "," : "", r[i].port);
    }
    sntp_outcome out;
    int64_t start = now_ms();
    CHECK_INT(sntp_measure(servers, 1000, &out), 0);
    CHECK(now_ms() - start < 500); /* everyone answered: no waiting for the deadline */
    CHECK_INT(out.asked, 3);
    CHECK_INT(out.answered, 3);
    CHECK_INT(out.used, 2);
    CHECK(out.offset_ms > 4950 && out.offset_ms < 5050);
    CHECK_STR(out.why, "");
    for (int i = 0; i < 3; i++)
        responder_stop(&r[i]);
}

static void case_measure_nothing_answers(void)
{
    sntp_outcome out;
    char servers[80];
    snprintf(servers, sizeof servers, "127.0.0.1:%d,127.0.0.1:0,host:x,,", dead_port());
    CHECK_INT(sntp_measure(servers, 300, &out), -1);
    CHECK_INT(out.asked, 1);
    CHECK_INT(out.answered, 0);
    CHECK_CONTAINS(out.why, "nothing listening");
    CHECK_CONTAINS(out.why, "127.0.0.1:0: bad server");
    CHECK_CONTAINS(out.why, "host:x: bad server");

    CHECK_INT(sntp_measure("", 300, &out), -1);
    CHECK_CONTAINS(out.why, "no servers");
    CHECK_INT(sntp_measure("127.0.0.1", 0, &out), -1);
}

int main(void)
{
    RUN_CASE(case_request_pack);
    RUN_CASE(case_reply_offset_and_delay);
    RUN_CASE(case_reply_refusals);
    RUN_CASE(case_conversions);
    RUN_CASE(case_offset_ten_years);
    RUN_CASE(case_measure_good_spoofed_dead);
    RUN_CASE(case_measure_outlier_dropped);
    RUN_CASE(case_measure_nothing_answers);
    return check_summary();
}
