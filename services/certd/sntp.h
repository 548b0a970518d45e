/*
 * sntp.h - how far the host clock is from network time: an SNTP client
 * (RFC 4330, the client side of RFC 5905) over plain UDP sockets.
 *
 * certd asks a few NTP servers at once, keeps the answers that agree and
 * hands the median offset to lib/clock.h, which every service applies to
 * its wall clock.  This file only measures: deciding whether an offset is
 * plausible (a server ten years off) is the caller's job.
 *
 * The packet pieces (pack, parse, timestamp conversions) are pure functions
 * so that the unit test can check them byte by byte.
 */
#ifndef BROKER_CERTD_SNTP_H
#define BROKER_CERTD_SNTP_H

#include <stddef.h>
#include <stdint.h>

#define SNTP_PACKET_SIZE 48
#define SNTP_DEFAULT_PORT 123
/* Servers asked by one sntp_measure(); the rest of the list is refused. */
#define SNTP_MAX_SERVERS 16

/* One server's answer. */
typedef struct sntp_sample {
    int64_t offset_ms; /* ((T2-T1)+(T3-T4))/2: add to the host clock to get the server's */
    int64_t delay_ms;  /* round trip (T4-T1)-(T3-T2), never negative */
} sntp_sample;

typedef struct sntp_outcome {
    int asked;         /* servers asked (names that resolved) */
    int answered;      /* valid answers */
    int used;          /* answers kept after dropping outliers */
    int64_t offset_ms; /* the median offset of the kept answers (when answered > 0) */
    int64_t delay_ms;  /* the shortest round trip among the kept answers (when answered > 0) */
    char why[512];     /* what went wrong, per server, "; "-separated; "" when all answered */
} sntp_outcome;

/* Asks every server of `servers` (comma-separated host[:port], port 123 by
 * default; an IPv6 literal as [::1]:123) at once, waits at most timeout_ms
 * for all of them, validates the answers, drops outliers and takes the
 * median.  Returns 0 when at least one server answered validly, -1 otherwise
 * (out->why says why).  Blocking (name resolution, then up to timeout_ms):
 * call it from a worker thread. */
int sntp_measure(const char *servers, int timeout_ms, sntp_outcome *out);

/* Fills a 48-byte client request (LI 0, VN 4, mode 3) whose transmit
 * timestamp is `xmit` (NTP 64-bit format, host order). */
void sntp_request_pack(unsigned char pkt[SNTP_PACKET_SIZE], uint64_t xmit);

/* Checks a reply against the transmit timestamp of our request and computes
 * the sample from the local send and receive times (t1, t4, NTP format).
 * Returns 0 with *sample filled, or -1 with `why` saying what was wrong. */
int sntp_reply_parse(const unsigned char *pkt, size_t len, uint64_t sent_xmit, uint64_t t1, uint64_t t4,
                     sntp_sample *sample, char *why, size_t why_size);

/* Unix milliseconds -> NTP timestamp (seconds since 1900 in the high 32
 * bits, so it wraps every 136 years: 2036-02-07 is era 1's second 0). */
uint64_t sntp_from_unix_ms(int64_t ms);
/* NTP timestamp -> Unix milliseconds, taking the era that puts it within
 * 68 years of the current time. */
int64_t sntp_to_unix_ms(uint64_t ntp);
/* The same, within 68 years of `pivot_ms` instead of now (for tests). */
int64_t sntp_to_unix_ms_near(uint64_t ntp, int64_t pivot_ms);
/* a - b in milliseconds, rounded, read as the shorter way round the 136-year
 * circle: correct for any two timestamps less than 68 years apart, whatever
 * eras they fall in. */
int64_t sntp_diff_ms(uint64_t a, uint64_t b);

#endif
