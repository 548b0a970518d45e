/*
 * sntp.c - the SNTP client of certd (see sntp.h).
 *
 * One round: every server of the list gets its own UDP socket, connect()ed
 * to the server's first usable address so that the kernel drops datagrams
 * from anyone else and ICMP errors ("port unreachable") come back to us.
 * All requests leave at once; one poll() loop then waits for every server
 * until a single deadline, so a round never takes longer than the timeout
 * (plus name resolution, which getaddrinfo() does not let us bound).
 *
 * Trust: a reply counts only if its origin timestamp is the transmit
 * timestamp we sent that server.  That timestamp is the current time with
 * the low 24 bits of its fraction (below 4 ms) drawn from getrandom(), so an
 * off-path attacker has to guess them as well as our source port; a reply
 * that does not match is ignored and we keep waiting for a valid one.
 * Kiss-o'-Death (stratum 0), unsynchronised servers (leap indicator 3),
 * stratum > 15, broadcast and client packets are refused with a reason.
 *
 * Eras: NTP seconds wrap every 136 years (next on 2036-02-07).  Every
 * difference between two timestamps is taken modulo 2^64 and read as a
 * signed number, which is right whatever eras the two fall in as long as
 * they are less than 68 years apart (RFC 5905, section 6).  Offsets are
 * converted to milliseconds before they are added, so a server ten years
 * off yields an offset of ten years, without overflow, for the caller to
 * refuse.  t1 and t4 come from the host's CLOCK_REALTIME: what we measure
 * is the host's own offset, not that of lib/clock.c's corrected clock.
 *
 * Combining the answers: with one or two, the median (the mean of two).
 * With three or more, the median offset m and the median absolute deviation
 * d of the offsets from m; answers farther than max(250 ms, 2 d) from m are
 * outliers and dropped, and the result is the median of the rest.  One
 * server that is an hour off among servers that agree is thus ignored,
 * while the 250 ms floor keeps ordinary network jitter from dropping
 * anyone when the servers agree closely (d near 0).
 */
#include "sntp.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Seconds from 1900-01-01 (NTP's epoch) to 1970-01-01 (Unix's). */
#define NTP_UNIX_DELTA_S 2208988800LL
#define NTP_FRAC_ONE 4294967296ULL /* 2^32: one second in the fraction */
/* The low bits of a request's transmit fraction that are random (2^24 / 2^32 s is 3.9 ms). */
#define SNTP_NONCE_MASK 0x00ffffffULL
/* Below this spread of the offsets, nobody is an outlier. */
#define SNTP_OUTLIER_FLOOR_MS 250
/* Datagrams read from one socket per wake-up, so a flood cannot hold the loop. */
#define SNTP_READS_PER_WAKE 16

/* One server of a round. */
typedef struct sntp_peer {
    char name[128]; /* host[:port] as written in the list, for `why` */
    char host[128];
    char port[8];
    int fd;            /* -1 once done (answered, failed) or never opened */
    int resolved;      /* counts in `asked` */
    uint64_t sent;     /* the transmit timestamp we sent: the reply's origin must be this */
    uint64_t t1;       /* when it left, host clock */
    int answered;
    sntp_sample sample;
    char fault[128]; /* why it failed, or the last reply refused */
} sntp_peer;

/* ---- timestamps --------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_be64(const unsigned char *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* ms rounded up to a fraction of 2^32, so that converting back (rounding to
 * the nearest ms) gives the same ms. */
uint64_t sntp_from_unix_ms(int64_t ms)
{
    int64_t s = ms / 1000, rem = ms % 1000;
    if (rem < 0) { /* floor division: the fraction is never negative */
        s--;
        rem += 1000;
    }
    /* Unsigned arithmetic wraps the seconds into their 32-bit era. */
    uint64_t secs = (uint64_t)s + (uint64_t)NTP_UNIX_DELTA_S;
    uint64_t frac = ((uint64_t)rem * NTP_FRAC_ONE + 999) / 1000;
    return (secs << 32) + frac;
}

/* |d| in ms, rounded to the nearest; d is a signed 32.32 fixed-point count of seconds. */
static int64_t fixed_to_ms(uint64_t magnitude)
{
    uint64_t secs = magnitude >> 32, frac = magnitude & (NTP_FRAC_ONE - 1);
    return (int64_t)(secs * 1000 + ((frac * 1000 + NTP_FRAC_ONE / 2) >> 32));
}

int64_t sntp_diff_ms(uint64_t a, uint64_t b)
{
    uint64_t d = a - b; /* modulo 2^64: the era of each does not matter */
    if (d <= (uint64_t)INT64_MAX)
        return fixed_to_ms(d);
    return -fixed_to_ms(-d); /* -d is the magnitude of a negative difference (2^63 at most) */
}

int64_t sntp_to_unix_ms_near(uint64_t ntp, int64_t pivot_ms)
{
    return pivot_ms + sntp_diff_ms(ntp, sntp_from_unix_ms(pivot_ms));
}

static struct timespec host_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

int64_t sntp_to_unix_ms(uint64_t ntp)
{
    struct timespec now = host_now();
    return sntp_to_unix_ms_near(ntp, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
}

/* The host clock in NTP format, to the nanosecond rather than the ms. */
static uint64_t ntp_now(void)
{
    struct timespec ts = host_now();
    uint64_t secs = (uint64_t)(int64_t)ts.tv_sec + (uint64_t)NTP_UNIX_DELTA_S;
    return (secs << 32) + (((uint64_t)ts.tv_nsec << 32) / 1000000000ULL);
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- packets ------------------------------------------------------------------ */

void sntp_request_pack(unsigned char pkt[SNTP_PACKET_SIZE], uint64_t xmit)
{
    memset(pkt, 0, SNTP_PACKET_SIZE);
    pkt[0] = 0 << 6 | 4 << 3 | 3; /* LI 0 (no warning), VN 4, mode 3 (client) */
    put_be32(pkt + 40, (uint32_t)(xmit >> 32));
    put_be32(pkt + 44, (uint32_t)xmit);
}

/* The kiss code (reference id of a stratum 0 packet), as printable text. */
static void kiss_code(const unsigned char *refid, char out[5])
{
    for (int i = 0; i < 4; i++)
        out[i] = refid[i] >= 0x20 && refid[i] < 0x7f ? (char)refid[i] : '?';
    out[4] = '\0';
}

/* The header checks, in the order that gives the most useful reason: a reply
 * that is not ours is "not ours" even when it also claims to be a kiss.
 * Returns a static reason, or NULL when the header is acceptable; a kiss
 * code goes to `why` directly (returns ""). */
static const char *reply_refusal(const unsigned char *pkt, uint64_t sent_xmit, char *why, size_t why_size)
{
    int leap = pkt[0] >> 6, version = (pkt[0] >> 3) & 7, mode = pkt[0] & 7;
    if (mode == 5)
        return "broadcast packet refused";
    if (mode != 4)
        return "not a server reply (wrong mode)";
    if (version != 3 && version != 4)
        return "unsupported NTP version";
    if (get_be64(pkt + 24) != sent_xmit)
        return "origin timestamp is not our request's (spoofed or stale reply)";
    if (pkt[1] == 0) {
        char code[5];
        kiss_code(pkt + 12, code);
        snprintf(why, why_size, "Kiss-o'-Death \"%s\" (server refuses to serve us)", code);
        return "";
    }
    if (leap == 3)
        return "server is unsynchronised (leap indicator 3)";
    /* Checked after the kiss: a kiss need not carry timestamps. */
    if (get_be64(pkt + 40) == 0 || get_be64(pkt + 32) == 0)
        return "zero receive or transmit timestamp";
    if (pkt[1] > 15)
        return "stratum above 15 (server is unsynchronised)";
    return NULL;
}

int sntp_reply_parse(const unsigned char *pkt, size_t len, uint64_t sent_xmit, uint64_t t1, uint64_t t4,
                     sntp_sample *sample, char *why, size_t why_size)
{
    if (len < SNTP_PACKET_SIZE) {
        snprintf(why, why_size, "short reply (%zu bytes)", len);
        return -1;
    }
    const char *refusal = reply_refusal(pkt, sent_xmit, why, why_size);
    if (refusal != NULL) {
        if (refusal[0] != '\0')
            snprintf(why, why_size, "%s", refusal);
        return -1;
    }
    uint64_t t2 = get_be64(pkt + 32), t3 = get_be64(pkt + 40);
    int64_t served_ms = sntp_diff_ms(t3, t2);
    if (served_ms < 0) {
        snprintf(why, why_size, "server transmitted before it received");
        return -1;
    }
    /* Each leg in ms first: two legs of a server years off cannot overflow. */
    sample->offset_ms = (sntp_diff_ms(t2, t1) + sntp_diff_ms(t3, t4)) / 2;
    sample->delay_ms = sntp_diff_ms(t4, t1) - served_ms;
    if (sample->delay_ms < 0) /* clock granularity on a fast loopback */
        sample->delay_ms = 0;
    return 0;
}

/* ---- the server list ---------------------------------------------------------- */

/* Appends "; "-separated text to out->why, truncating quietly when full. */
static void why_add(sntp_outcome *out, const char *fmt, ...)
{
    size_t used = strlen(out->why);
    if (used + 3 >= sizeof out->why)
        return;
    if (used > 0) {
        memcpy(out->why + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why + used, sizeof out->why - used, fmt, ap);
    va_end(ap);
}

/* The port after a host: 123 when there is none, -1 when it is not 1..65535. */
static long port_number(const char *port)
{
    if (port == NULL)
        return SNTP_DEFAULT_PORT;
    if (port[0] < '0' || port[0] > '9') /* strtol would take " 5" and "+5" */
        return -1;
    char *end;
    errno = 0;
    long n = strtol(port, &end, 10);
    if (end == port || *end != '\0' || errno != 0 || n < 1 || n > 65535)
        return -1;
    return n;
}

/* Splits one "host[:port]" / "[v6]:port" / bare v6 entry into peer->host
 * and peer->port.  Returns 0, or -1 with peer->fault set. */
static int peer_split(sntp_peer *p)
{
    const char *name = p->name, *port = NULL;
    size_t host_len;
    if (name[0] == '[') {
        const char *close = strchr(name, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            snprintf(p->fault, sizeof p->fault, "bad IPv6 literal (write [addr]:port)");
            return -1;
        }
        name++;
        host_len = (size_t)(close - name);
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = strchr(name, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            colon = NULL; /* a bare IPv6 address: all host, default port */
        host_len = colon ? (size_t)(colon - name) : strlen(name);
        port = colon ? colon + 1 : NULL;
    }
    long n = port_number(port);
    if (host_len == 0 || host_len >= sizeof p->host || n < 0) {
        snprintf(p->fault, sizeof p->fault, "bad server (write host or host:port)");
        return -1;
    }
    memcpy(p->host, name, host_len);
    p->host[host_len] = '\0';
    snprintf(p->port, sizeof p->port, "%hu", (unsigned short)n); /* port_number(): 1..65535 */
    return 0;
}

/* Copies entry [start, start+len) of the list, spaces trimmed, into a peer. */
static int peer_init(sntp_peer *p, const char *start, size_t len)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    while (len > 0 && (*start == ' ' || *start == '\t'))
        start++, len--;
    while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 1; /* an empty entry ("a,,b" or a trailing comma): skipped */
    int too_long = len >= sizeof p->name;
    memcpy(p->name, start, too_long ? sizeof p->name - 1 : len); /* reported truncated */
    if (too_long) {
        snprintf(p->fault, sizeof p->fault, "server name too long");
        return -1;
    }
    return peer_split(p) == 0 ? 0 : -1;
}

/* Fills peers[] from the comma-separated list; returns how many (entries
 * beyond SNTP_MAX_SERVERS are reported in out->why and not asked). */
static int peers_parse(const char *servers, sntp_peer *peers, sntp_outcome *out)
{
    int n = 0;
    const char *s = servers;
    while (*s != '\0') {
        size_t len = strcspn(s, ",");
        sntp_peer entry;
        int r = peer_init(&entry, s, len);
        if (r <= 0 && n == SNTP_MAX_SERVERS) {
            why_add(out, "more than %d servers: the rest not asked", SNTP_MAX_SERVERS);
            break;
        }
        if (r <= 0)
            peers[n++] = entry; /* a bad entry stays, with its fault, to be reported */
        s += len;
        if (*s == ',')
            s++;
    }
    return n;
}

/* ---- one round ---------------------------------------------------------------- */

/* A non-blocking UDP socket connect()ed to the first address of the peer
 * that takes it.  Returns 0, or -1 with peer->fault set. */
static int peer_open(sntp_peer *p)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(p->host, p->port, &hints, &res);
    if (rc != 0) {
        snprintf(p->fault, sizeof p->fault, "name does not resolve (%s)", gai_strerror(rc));
        return -1;
    }
    p->resolved = 1;
    int err = 0;
    for (struct addrinfo *ai = res; ai != NULL && p->fd < 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            p->fd = fd;
        else {
            err = errno;
            if (fd >= 0)
                close(fd);
        }
    }
    freeaddrinfo(res);
    if (p->fd < 0) {
        snprintf(p->fault, sizeof p->fault, "no usable address (%s)", strerror(err));
        return -1;
    }
    return 0;
}

static void peer_close(sntp_peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

/* A fresh, hard to guess transmit timestamp: now, with random low bits. */
static int request_stamp(uint64_t now, uint64_t *xmit)
{
    uint32_t nonce;
    if (getrandom(&nonce, sizeof nonce, GRND_NONBLOCK) != (ssize_t)sizeof nonce)
        return -1;
    *xmit = (now & ~SNTP_NONCE_MASK) | (nonce & SNTP_NONCE_MASK);
    if (*xmit == 0) /* zero means "no timestamp" to a server */
        *xmit = 1;
    return 0;
}

static int peer_send(sntp_peer *p)
{
    unsigned char pkt[SNTP_PACKET_SIZE];
    p->t1 = ntp_now();
    if (request_stamp(p->t1, &p->sent) != 0) {
        snprintf(p->fault, sizeof p->fault, "no randomness for the request (%s)", strerror(errno));
        return -1;
    }
    sntp_request_pack(pkt, p->sent);
    if (send(p->fd, pkt, sizeof pkt, 0) != (ssize_t)sizeof pkt) {
        snprintf(p->fault, sizeof p->fault, "send failed (%s)", strerror(errno));
        return -1;
    }
    return 0;
}

/* Reads what is waiting on a peer's socket; a valid reply ends its wait, an
 * invalid one is remembered in p->fault and skipped.  Returns 1 while the
 * peer is still waiting, 0 when it is done (answered or failed). */
static int peer_read(sntp_peer *p)
{
    unsigned char buf[512];
    for (int i = 0; i < SNTP_READS_PER_WAKE; i++) {
        ssize_t n = recv(p->fd, buf, sizeof buf, MSG_TRUNC);
        uint64_t t4 = ntp_now();
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 1;
        if (n < 0) { /* an ICMP error: port unreachable, host unreachable... */
            snprintf(p->fault, sizeof p->fault, "%s", errno == ECONNREFUSED ? "nothing listening (port unreachable)"
                                                                             : strerror(errno));
            return 0;
        }
        char why[128];
        size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf;
        if (sntp_reply_parse(buf, len, p->sent, p->t1, t4, &p->sample, why, sizeof why) == 0) {
            p->answered = 1;
            return 0;
        }
        snprintf(p->fault, sizeof p->fault, "%s", why);
    }
    return 1;
}

/* Polls the waiting peers until each is done or the deadline passes. */
static void peers_wait(sntp_peer *peers, int n, int64_t deadline)
{
    struct pollfd fds[SNTP_MAX_SERVERS];
    int who[SNTP_MAX_SERVERS];
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < n; i++) {
            if (peers[i].fd >= 0 && !peers[i].answered) {
                fds[waiting] = (struct pollfd){.fd = peers[i].fd, .events = POLLIN};
                who[waiting++] = i;
            }
        }
        int64_t left = deadline - monotonic_ms();
        if (waiting == 0 || left <= 0)
            return;
        int ready = poll(fds, (nfds_t)waiting, (int)left);
        if (ready < 0 && errno != EINTR)
            return;
        for (int k = 0; k < waiting && ready > 0; k++) {
            if (fds[k].revents != 0 && peer_read(&peers[who[k]]) == 0)
                peer_close(&peers[who[k]]);
        }
    }
}

/* ---- combining the answers ---------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n), n > 0; sorts v. */
static int64_t median(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Keeps in v[] the offsets within max(floor, 2 * MAD) of their median;
 * returns how many are kept.  Fewer than three: all kept. */
static int drop_outliers(int64_t *v, int n)
{
    if (n < 3)
        return n;
    int64_t dev[SNTP_MAX_SERVERS];
    int64_t m = median(v, n);
    for (int i = 0; i < n; i++)
        dev[i] = v[i] > m ? v[i] - m : m - v[i];
    int64_t limit = 2 * median(dev, n);
    if (limit < SNTP_OUTLIER_FLOOR_MS)
        limit = SNTP_OUTLIER_FLOOR_MS;
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] - m <= limit && m - v[i] <= limit)
            v[kept++] = v[i];
    }
    return kept;
}

/* The outcome of a round: counts, the combined offset, and why each
 * server that did not answer failed. */
static void peers_summarise(const sntp_peer *peers, int n, int timeout_ms, sntp_outcome *out)
{
    int64_t offsets[SNTP_MAX_SERVERS];
    for (int i = 0; i < n; i++) {
        const sntp_peer *p = &peers[i];
        out->asked += p->resolved;
        if (p->answered) {
            offsets[out->answered++] = p->sample.offset_ms;
        } else if (p->fault[0] != '\0' && p->sent != 0 && p->fd >= 0) {
            why_add(out, "%s: no valid answer in %d ms (last refused: %s)", p->name, timeout_ms, p->fault);
        } else if (p->fault[0] != '\0') {
            why_add(out, "%s: %s", p->name, p->fault);
        } else {
            why_add(out, "%s: no answer in %d ms", p->name, timeout_ms);
        }
    }
    if (out->answered == 0)
        return;
    out->used = drop_outliers(offsets, out->answered);
    /* drop_outliers() leaves the kept offsets sorted: they are [lo, hi]. */
    int64_t lo = offsets[0], hi = offsets[out->used - 1];
    out->offset_ms = median(offsets, out->used);
    out->delay_ms = INT64_MAX;
    for (int i = 0; i < n; i++) {
        const sntp_sample *s = &peers[i].sample;
        if (peers[i].answered && s->offset_ms >= lo && s->offset_ms <= hi && s->delay_ms < out->delay_ms)
            out->delay_ms = s->delay_ms;
    }
}

int sntp_measure(const char *servers, int timeout_ms, sntp_outcome *out)
{
    sntp_peer peers[SNTP_MAX_SERVERS];
    memset(out, 0, sizeof *out);
    if (servers == NULL || timeout_ms <= 0) {
        why_add(out, "no servers, or a timeout that is not positive");
        return -1;
    }
    int n = peers_parse(servers, peers, out);
    if (n == 0) {
        why_add(out, "no servers");
        return -1;
    }
    /* Resolve and open everything first, so that the requests leave together. */
    for (int i = 0; i < n; i++) {
        if (peers[i].fault[0] == '\0')
            (void)peer_open(&peers[i]); /* a failure is in its fault */
    }
    int64_t deadline = monotonic_ms() + timeout_ms;
    for (int i = 0; i < n; i++) {
        if (peers[i].fd >= 0 && peer_send(&peers[i]) != 0)
            peer_close(&peers[i]);
    }
    peers_wait(peers, n, deadline);
    peers_summarise(peers, n, timeout_ms, out);
    for (int i = 0; i < n; i++)
        peer_close(&peers[i]);
    return out->answered > 0 ? 0 : -1;
}
