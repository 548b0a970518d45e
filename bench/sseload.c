/*
 * sseload: a load generator for Server-Sent Events servers (Broker, Nchan, Mercure, ...).
 *
 * Build:  gcc -O2 -Wall -Wextra -Werror -o build/sseload bench/sseload.c
 * TLS:    gcc -O2 -Wall -Wextra -Werror -DWITH_TLS -o build/sseload-tls bench/sseload.c -lssl -lcrypto
 *
 * Linux only (epoll), plain libc, no other dependency (OpenSSL for the -DWITH_TLS build, which
 * adds --tls).  See bench/sseload.md for usage.
 *
 * What it does, in short:
 *  - opens N HTTP/1.1 GET streams to host:port (loopback only: 127.0.0.0/8), spread over
 *    P worker processes (each stays under ~18,000 fds) and K source addresses
 *    127.0.0.1..127.0.0.K (bind() with IP_BIND_ADDRESS_NO_PORT before connect()), at a
 *    bounded connect rate per process, with retry and exponential backoff;
 *  - reads the response head (status), de-chunks "Transfer-Encoding: chunked" bodies, and
 *    parses the SSE stream incrementally (id:, event:, data:, ':' comments = keep-alives);
 *  - for each event whose data contains a JSON field "t": <microseconds since the epoch,
 *    CLOCK_REALTIME>, records now - t in a log-linear histogram (mergeable), and keeps per
 *    event id the earliest and the latest receipt over all connections (spread);
 *  - workers report to the parent through a pipe (periodic progress + one final record);
 *    the parent prints "CONNECTED n" once every connection is resolved, one human summary,
 *    and one machine-readable line starting with "RESULT " followed by JSON.
 *
 * Every loop is bounded in time: --timeout (default 120 s; 60 s with --until-events).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------------------------------ */
/* options                                                                                    */

#define MAX_HEADERS 16
#define MAX_PROCS 64
#define ID_LEN 48 /* event ids longer than this are truncated (still unique enough in practice) */

static struct {
    char host[64];
    struct in_addr host_addr;
    int port;
    char path[2048];
    const char *headers[MAX_HEADERS];
    int nheaders;
    long conns;
    int procs;
    int sources;
    long rooms;               /* --rooms M: connection g asks for path with {R} = g mod M; 0: one path */
    double connect_rate;
    double hold;              /* <0: not given */
    long until_events;        /* <0: not given */
    long expect;              /* <0: not given */
    double timeout;           /* hard bound, seconds */
    double connect_timeout;   /* per attempt: TCP connect + response head */
    int retries;
    double progress;          /* seconds between progress lines on stderr, 0 = none */
    int max_ids;
    int detail;
    const char *ids_csv;
    int count_stale;
    int max_line;
    int quiet;
    int hist;                 /* --hist: the latency histogram's buckets in the RESULT json */
    int tls;                  /* --tls: HTTPS (only in the -DWITH_TLS build) */
    const char *tls_ca;       /* --tls-ca FILE: verify the server's chain and name */
    char sni[256];            /* --sni NAME: server name sent and verified (default: none) */
} opt;

#ifdef WITH_TLS
static SSL_CTX *g_tls; /* made by the parent before the workers fork */
#endif
#define ERR_TLS 100000 /* pseudo errno: a TLS handshake that failed (alert, verification) */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sseload: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static int64_t now_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------------------------------------ */
/* log-linear latency histogram, microseconds                                                  */
/* values < 128 us: one bucket per us; then each power of two [2^k, 2^(k+1)) for k = 7..23 is   */
/* split into 64 equal buckets (<= 1.6 % relative error), up to 2^24 us = 16.7 s; above that,   */
/* one overflow bucket (the exact maximum is kept apart).                                       */

#define H_LIN 128
#define H_SUB 64
#define H_KMIN 7
#define H_KMAX 23
#define H_NB (H_LIN + (H_KMAX - H_KMIN + 1) * H_SUB + 1)

typedef struct {
    uint64_t b[H_NB];
    uint64_t n;
    uint64_t negative; /* receive time before send time (clock trouble): counted as 0 */
    int64_t min, max;
    double sum;
} hist_t;

static int h_index(int64_t v)
{
    if (v < H_LIN)
        return (int)v;
    int k = 63 - __builtin_clzll((unsigned long long)v);
    if (k > H_KMAX)
        return H_NB - 1;
    int sub = (int)((v - (1LL << k)) >> (k - 6)); /* 0..63 */
    return H_LIN + (k - H_KMIN) * H_SUB + sub;
}

/* upper edge (inclusive) of bucket i */
static int64_t h_upper(int i)
{
    if (i < H_LIN)
        return i;
    if (i == H_NB - 1)
        return INT64_MAX;
    int k = (i - H_LIN) / H_SUB + H_KMIN;
    int sub = (i - H_LIN) % H_SUB;
    return (1LL << k) + ((int64_t)(sub + 1) << (k - 6)) - 1;
}

static void h_add(hist_t *h, int64_t v)
{
    if (v < 0) {
        h->negative++;
        v = 0;
    }
    h->b[h_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (h->n == 0 || v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

static void h_merge(hist_t *a, const hist_t *b)
{
    if (b->n == 0)
        return;
    for (int i = 0; i < H_NB; i++)
        a->b[i] += b->b[i];
    if (a->n == 0 || b->min < a->min)
        a->min = b->min;
    if (a->n == 0 || b->max > a->max)
        a->max = b->max;
    a->n += b->n;
    a->negative += b->negative;
    a->sum += b->sum;
}

static double h_pct_ms(const hist_t *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)(p * (double)h->n);
    if (want < 1)
        want = 1;
    if (want > h->n)
        want = h->n;
    uint64_t c = 0;
    for (int i = 0; i < H_NB; i++) {
        c += h->b[i];
        if (c >= want) {
            int64_t u = h_upper(i);
            if (u > h->max)
                u = h->max;
            if (u < h->min)
                u = h->min;
            return (double)u / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ------------------------------------------------------------------------------------------ */
/* per event id table: earliest / latest receipt over connections                              */

typedef struct {
    char id[ID_LEN];
    uint32_t n;         /* receipts (connections that got it, plus duplicates) */
    int64_t first_us;   /* CLOCK_REALTIME of earliest receipt */
    int64_t last_us;    /* latest receipt */
    int64_t t_us;       /* send time from data "t" (0 if none) */
} idrec_t;

typedef struct {
    idrec_t *e;
    int n, cap;
    int32_t *slot; /* -1 empty, else index into e */
    uint32_t nslots;
    uint64_t untracked; /* receipts of ids that did not fit */
} idtab_t;

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static void idtab_init(idtab_t *t, int cap)
{
    t->cap = cap;
    t->n = 0;
    t->e = calloc((size_t)(cap > 0 ? cap : 1), sizeof(idrec_t));
    t->nslots = 16;
    while (t->nslots < (uint32_t)cap * 2)
        t->nslots <<= 1;
    t->slot = malloc(sizeof(int32_t) * t->nslots);
    if (!t->e || !t->slot)
        die("out of memory");
    memset(t->slot, 0xff, sizeof(int32_t) * t->nslots);
    t->untracked = 0;
}

static void idtab_add(idtab_t *t, const char *id, uint32_t n, int64_t first, int64_t last, int64_t tus)
{
    uint32_t m = t->nslots - 1, i = fnv1a(id) & m;
    while (t->slot[i] >= 0) {
        idrec_t *r = &t->e[t->slot[i]];
        if (strcmp(r->id, id) == 0) {
            r->n += n;
            if (first < r->first_us)
                r->first_us = first;
            if (last > r->last_us)
                r->last_us = last;
            if (tus && (!r->t_us || tus < r->t_us))
                r->t_us = tus;
            return;
        }
        i = (i + 1) & m;
    }
    if (t->n >= t->cap) {
        t->untracked += n;
        return;
    }
    idrec_t *r = &t->e[t->n];
    snprintf(r->id, sizeof r->id, "%s", id);
    r->n = n;
    r->first_us = first;
    r->last_us = last;
    r->t_us = tus;
    t->slot[i] = t->n++;
}

/* ------------------------------------------------------------------------------------------ */
/* worker -> parent messages                                                                   */

enum { MSG_PROGRESS = 1, MSG_FINAL = 2, MSG_IDS = 3 };

typedef struct {
    uint32_t type, len; /* len: payload bytes following this header */
} msghdr_t;

typedef struct {
    uint64_t open_now;     /* status 200 and still open */
    uint64_t opened;       /* ever got status 200 */
    uint64_t failed;       /* gave up after retries */
    uint64_t non200;
    uint64_t events;       /* counted events */
    uint64_t keepalives;
    uint64_t attempts;
    uint32_t connect_done; /* every connection resolved (open, non-200 or failed) */
    uint32_t satisfied;    /* --until-events reached on every open connection */
} progress_t;

#define NSTATUS 8
typedef struct {
    progress_t p;
    uint64_t retries;          /* failed attempts that were retried */
    uint64_t e_addrnotavail, e_refused, e_timeout, e_reset, e_other, e_tls;
    uint64_t disconnected;     /* open streams closed by the server / error */
    uint64_t stale;            /* events whose t is before the connection opened (replay) */
    uint64_t out_of_order;     /* numeric id not greater than the previous one on the stream */
    uint64_t bad_ctype;        /* 200 without text/event-stream */
    uint64_t chunked;          /* streams with chunked transfer-encoding */
    uint64_t bytes;
    uint64_t no_t;             /* events without a "t" field */
    uint64_t below_expect;     /* opened connections with fewer than --expect events */
    uint64_t min_ev, max_ev;   /* per opened connection */
    uint64_t have_minmax;
    int64_t first_event_us, last_event_us; /* receive times of first/last counted event */
    int64_t min_t_us, max_t_us;
    int64_t connected_us;      /* CLOCK_REALTIME when the worker resolved all connections */
    int32_t status_code[NSTATUS];
    uint64_t status_count[NSTATUS];
    uint64_t status_other;
    hist_t lat;
} final_t;

/* ------------------------------------------------------------------------------------------ */
/* worker                                                                                      */

enum { C_IDLE = 0, C_WAIT, C_CONNECTING, C_SENDING, C_HEAD, C_STREAM, C_DONE, C_HANDSHAKE };
enum { CH_SIZE = 0, CH_EXT, CH_DATA, CH_DATA_END, CH_END };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t chunked, chunk_state;
    uint8_t last_cr;     /* previous SSE line ended with CR: swallow a following LF */
    uint8_t ev_has_data, ev_has_id, ev_has_t, line_trunc;
    uint8_t tries, ever_open, reached, src;
    uint16_t status;
    uint32_t sent;        /* request bytes written */
    uint32_t room;        /* --rooms: this connection's room (g mod M) */
    uint64_t chunk_left;
    uint64_t counted;
    char *buf;            /* head or partial-line carry buffer */
    uint32_t blen, bcap;
    int64_t t_start;      /* monotonic start of current attempt */
    int64_t t_due;        /* monotonic time for retry */
    int64_t open_real;    /* CLOCK_REALTIME at status 200 */
    int64_t ev_t;
    uint64_t last_num_id;
    char ev_id[ID_LEN];
#ifdef WITH_TLS
    SSL *ssl;
#endif
} conn_t;

static struct {
    int idx, nprocs;
    long n;               /* connections of this worker */
    conn_t *c;
    int ep;
    int ctl;              /* control pipe from parent (read end) */
    int rep;              /* report pipe to parent (write end) */
    long next_new;        /* next never-started connection */
    long *retryq;
    long nretry;
    long pending;         /* connections not yet resolved */
    long open_reached;
    double tokens;        /* connect rate limiting (token bucket) */
    int64_t t_tok;
    int64_t t0;
    char req[8192];
    int reqlen;
    final_t f;
    idtab_t ids;
    char rbuf[65536];
    int64_t now_real;     /* set after each read */
} W;

static void w_write_all(const void *p, size_t len)
{
    const char *s = p;
    while (len > 0) {
        ssize_t k = write(W.rep, s, len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            _exit(3); /* parent gone */
        }
        s += k;
        len -= (size_t)k;
    }
}

static void w_send_msg(uint32_t type, const void *p, uint32_t len)
{
    msghdr_t h = {type, len};
    w_write_all(&h, sizeof h);
    if (len)
        w_write_all(p, len);
}

static void buf_reserve(conn_t *c, uint32_t need)
{
    if (need <= c->bcap)
        return;
    uint32_t cap = c->bcap ? c->bcap : 256;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(c->buf, cap);
    if (!nb)
        die("out of memory");
    c->buf = nb;
    c->bcap = cap;
}

static void buf_free(conn_t *c)
{
    free(c->buf);
    c->buf = NULL;
    c->blen = c->bcap = 0;
}

static void w_count_errno(int e)
{
    switch (e) {
    case EADDRNOTAVAIL:
    case EADDRINUSE:
        W.f.e_addrnotavail++;
        break;
    case ECONNREFUSED:
        W.f.e_refused++;
        break;
    case ETIMEDOUT:
        W.f.e_timeout++;
        break;
    case ECONNRESET:
    case EPIPE:
    case 0: /* EOF before the response head */
        W.f.e_reset++;
        break;
    case ERR_TLS:
        W.f.e_tls++;
        break;
    default:
        W.f.e_other++;
        break;
    }
}

static void w_close_fd(conn_t *c)
{
#ifdef WITH_TLS
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: the socket goes away just after */
        c->ssl = NULL;
    }
#endif
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
}

/* a connection attempt failed before the stream was established: retry with backoff */
static void w_attempt_failed(long i, int err)
{
    conn_t *c = &W.c[i];
    w_count_errno(err);
    w_close_fd(c);
    buf_free(c);
    if (c->tries <= opt.retries) {
        W.f.retries++;
        int shift = c->tries < 7 ? c->tries : 7;
        int64_t backoff = 20000LL << shift; /* 40 ms .. 2.56 s */
        backoff += (int64_t)(rand() % 20000);
        c->state = C_WAIT;
        c->t_due = now_mono_us() + backoff;
        W.retryq[W.nretry++] = i;
    } else {
        c->state = C_DONE;
        W.f.p.failed++;
        W.pending--;
    }
}

/* an established stream ended */
static void w_stream_closed(long i)
{
    conn_t *c = &W.c[i];
    w_close_fd(c);
    buf_free(c);
    c->state = C_DONE;
    W.f.p.open_now--;
    W.f.disconnected++;
    if (c->reached)
        W.open_reached--;
}

static void w_start(long i)
{
    conn_t *c = &W.c[i];
    W.f.p.attempts++;
    c->tries++;
    c->t_start = now_mono_us();
    c->sent = 0;
    c->blen = 0;
    c->status = 0;
    c->chunked = c->chunk_state = 0;
    c->chunk_left = 0;
    c->last_cr = c->line_trunc = 0;
    c->ev_has_data = c->ev_has_id = c->ev_has_t = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        w_attempt_failed(i, errno);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    /* bind the source address but let connect() pick the port by 4-tuple, so that each
     * source address has its own ephemeral port range */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sa.sin_addr.s_addr = htonl((127u << 24) | c->src);
    sa.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        w_attempt_failed(i, errno);
        return;
    }
    sa.sin_addr = opt.host_addr;
    sa.sin_port = htons((uint16_t)opt.port);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
    if (epoll_ctl(W.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        w_attempt_failed(i, errno);
        return;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        w_attempt_failed(i, errno);
        return;
    }
    c->state = C_CONNECTING;
}

/* --- plain or TLS reads and writes: like read()/write(), EAGAIN when TLS wants I/O ---- */

static ssize_t w_io_read(conn_t *c, void *buf, size_t n)
{
#ifdef WITH_TLS
    if (c->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
            return 0;
        if (e != SSL_ERROR_SYSCALL)
            errno = EPROTO;
        return -1;
    }
#endif
    return read(c->fd, buf, n);
}

static ssize_t w_io_write(conn_t *c, const void *buf, size_t n)
{
#ifdef WITH_TLS
    if (c->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        if (e != SSL_ERROR_SYSCALL || errno == 0)
            errno = EPIPE;
        return -1;
    }
#endif
    return write(c->fd, buf, n);
}

static void w_writable(long i);

#ifdef WITH_TLS
static int g_tls_err_logged;

/* drive the handshake: on success go on to sending the request */
static void w_handshake(long i)
{
    conn_t *c = &W.c[i];
    ERR_clear_error();
    errno = 0;
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->state = C_SENDING;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
        epoll_ctl(W.ep, EPOLL_CTL_MOD, c->fd, &ev);
        w_writable(i);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        struct epoll_event ev = {.events = e == SSL_ERROR_WANT_READ ? EPOLLIN | EPOLLRDHUP : EPOLLOUT,
                                 .data.u64 = (uint64_t)i};
        epoll_ctl(W.ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (e == SSL_ERROR_SYSCALL) { /* the server closed or reset the connection */
        w_attempt_failed(i, errno);
        return;
    }
    if (!g_tls_err_logged) {
        g_tls_err_logged = 1;
        char msg[256];
        ERR_error_string_n(ERR_peek_last_error(), msg, sizeof msg);
        long vr = SSL_get_verify_result(c->ssl);
        fprintf(stderr, "sseload: TLS handshake failed: %s%s%s\n", msg, vr != X509_V_OK ? "; verify: " : "",
                vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    }
    w_attempt_failed(i, ERR_TLS);
}

static void w_tls_start(long i)
{
    conn_t *c = &W.c[i];
    c->ssl = SSL_new(g_tls);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        w_attempt_failed(i, ENOMEM);
        return;
    }
    if (opt.sni[0])
        SSL_set_tlsext_host_name(c->ssl, opt.sni);
    if (opt.tls_ca) {
        if (opt.sni[0])
            SSL_set1_host(c->ssl, opt.sni);
        else
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), opt.host);
    }
    c->state = C_HANDSHAKE;
    w_handshake(i);
}
#endif

/* --- SSE parsing --------------------------------------------------------------------------- */

static int parse_t(const char *s, size_t n, int64_t *out)
{
    const char *end = s + n;
    const char *p = s;
    while (p + 3 <= end) {
        const char *q = memmem(p, (size_t)(end - p), "\"t\"", 3);
        if (!q)
            return 0;
        p = q + 3;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end || *p != ':')
            continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        char tmp[40];
        size_t k = 0;
        while (p + k < end && k < sizeof tmp - 1 &&
               (isdigit((unsigned char)p[k]) || p[k] == '.' || p[k] == 'e' || p[k] == 'E' ||
                p[k] == '+' || p[k] == '-'))
            k++;
        if (k == 0)
            continue;
        memcpy(tmp, p, k);
        tmp[k] = 0;
        char *ep;
        if (strpbrk(tmp, ".eE")) {
            double d = strtod(tmp, &ep);
            if (ep == tmp)
                continue;
            *out = (int64_t)d;
        } else {
            long long v = strtoll(tmp, &ep, 10);
            if (ep == tmp)
                continue;
            *out = v;
        }
        return 1;
    }
    return 0;
}

static void w_dispatch(long i)
{
    conn_t *c = &W.c[i];
    int64_t now = W.now_real;
    int stale = 0;
    if (c->ev_has_t) {
        if (c->ev_t < c->open_real)
            stale = 1;
    }
    if (stale) {
        W.f.stale++;
        if (!opt.count_stale)
            goto reset;
    }
    c->counted++;
    W.f.p.events++;
    if (W.f.first_event_us == 0 || now < W.f.first_event_us)
        W.f.first_event_us = now;
    if (now > W.f.last_event_us)
        W.f.last_event_us = now;
    if (c->ev_has_t && !stale) {
        h_add(&W.f.lat, now - c->ev_t);
        if (W.f.min_t_us == 0 || c->ev_t < W.f.min_t_us)
            W.f.min_t_us = c->ev_t;
        if (c->ev_t > W.f.max_t_us)
            W.f.max_t_us = c->ev_t;
    } else if (!c->ev_has_t) {
        W.f.no_t++;
    }
    if (c->ev_has_id) {
        if (!stale && opt.rooms) { /* rooms may number their events alike (Nchan): one record per room */
            char key[ID_LEN + 16];
            snprintf(key, sizeof key, "%u:%s", c->room, c->ev_id);
            key[ID_LEN - 1] = 0; /* kept like any id: the first 47 bytes */
            idtab_add(&W.ids, key, 1, now, now, c->ev_has_t ? c->ev_t : 0);
        } else if (!stale) {
            idtab_add(&W.ids, c->ev_id, 1, now, now, c->ev_has_t ? c->ev_t : 0);
        }
        /* ordering check for decimal ids (Broker): ids must increase on a stream */
        const char *s = c->ev_id;
        uint64_t v = 0;
        int ok = *s != 0;
        for (; *s; s++) {
            if (*s < '0' || *s > '9' || v > UINT64_MAX / 10 - 10) {
                ok = 0;
                break;
            }
            v = v * 10 + (uint64_t)(*s - '0');
        }
        if (ok) {
            if (c->last_num_id && v <= c->last_num_id)
                W.f.out_of_order++;
            c->last_num_id = v;
        }
    }
    if (opt.until_events >= 0 && !c->reached && c->counted >= (uint64_t)opt.until_events) {
        c->reached = 1;
        W.open_reached++;
    }
reset:
    c->ev_has_data = c->ev_has_id = c->ev_has_t = 0;
    c->ev_id[0] = 0;
}

static void w_line(long i, const char *s, size_t n)
{
    conn_t *c = &W.c[i];
    if (n == 0) {
        if (c->ev_has_data)
            w_dispatch(i);
        else
            c->ev_has_id = c->ev_has_t = 0;
        return;
    }
    if (s[0] == ':') {
        W.f.p.keepalives++;
        return;
    }
    const char *colon = memchr(s, ':', n);
    size_t fl = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vl = (size_t)(s + n - v);
    if (vl && *v == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && memcmp(s, "data", 4) == 0) {
        c->ev_has_data = 1;
        if (!c->ev_has_t && parse_t(v, vl, &c->ev_t))
            c->ev_has_t = 1;
    } else if (fl == 2 && memcmp(s, "id", 2) == 0) {
        size_t k = vl < ID_LEN - 1 ? vl : ID_LEN - 1;
        memcpy(c->ev_id, v, k);
        c->ev_id[k] = 0;
        c->ev_has_id = 1;
    }
    /* event:, retry: and unknown fields are ignored */
}

/* feed de-chunked body bytes to the SSE line parser */
static void w_sse(long i, const char *p, size_t n)
{
    conn_t *c = &W.c[i];
    const char *end = p + n;
    while (p < end) {
        if (c->last_cr) {
            c->last_cr = 0;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        const char *q = p;
        while (q < end && *q != '\n' && *q != '\r')
            q++;
        if (q == end) { /* partial line: carry */
            size_t k = (size_t)(end - p);
            if (c->blen + k > (size_t)opt.max_line) {
                k = c->blen < (uint32_t)opt.max_line ? opt.max_line - c->blen : 0;
                c->line_trunc = 1;
            }
            if (k) {
                buf_reserve(c, c->blen + (uint32_t)k);
                memcpy(c->buf + c->blen, p, k);
                c->blen += (uint32_t)k;
            }
            return;
        }
        if (*q == '\r')
            c->last_cr = 1;
        if (c->blen == 0) {
            w_line(i, p, (size_t)(q - p));
        } else {
            size_t k = (size_t)(q - p);
            if (c->blen + k > (size_t)opt.max_line)
                k = c->blen < (uint32_t)opt.max_line ? opt.max_line - c->blen : 0;
            buf_reserve(c, c->blen + (uint32_t)k + 1);
            memcpy(c->buf + c->blen, p, k);
            c->blen += (uint32_t)k;
            w_line(i, c->buf, c->blen);
            c->blen = 0;
            c->line_trunc = 0;
            if (c->bcap > 65536)
                buf_free(c);
        }
        p = q + 1;
        if (c->state != C_STREAM)
            return;
    }
}

/* returns 0 normally, -1 when the chunked stream ended or is malformed */
static int w_body(long i, const char *p, size_t n)
{
    conn_t *c = &W.c[i];
    if (!c->chunked) {
        w_sse(i, p, n);
        return 0;
    }
    const char *end = p + n;
    while (p < end) {
        switch (c->chunk_state) {
        case CH_SIZE: {
            char ch = *p;
            int d;
            if (ch >= '0' && ch <= '9')
                d = ch - '0';
            else if (ch >= 'a' && ch <= 'f')
                d = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F')
                d = ch - 'A' + 10;
            else {
                if (ch == '\r' || ch == ';' || ch == ' ' || ch == '\t') {
                    c->chunk_state = CH_EXT;
                } else if (ch == '\n') {
                    c->chunk_state = c->chunk_left ? CH_DATA : CH_END;
                    if (c->chunk_state == CH_END)
                        return -1;
                } else {
                    return -1;
                }
                p++;
                break;
            }
            if (c->chunk_left > (UINT64_MAX >> 5))
                return -1;
            c->chunk_left = c->chunk_left * 16 + (uint64_t)d;
            p++;
            break;
        }
        case CH_EXT:
            if (*p == '\n') {
                if (c->chunk_left == 0) {
                    c->chunk_state = CH_END;
                    return -1;
                }
                c->chunk_state = CH_DATA;
            }
            p++;
            break;
        case CH_DATA: {
            size_t k = (size_t)(end - p);
            if (k > c->chunk_left)
                k = (size_t)c->chunk_left;
            w_sse(i, p, k);
            if (c->state != C_STREAM)
                return -1;
            p += k;
            c->chunk_left -= k;
            if (c->chunk_left == 0)
                c->chunk_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END: /* CRLF after chunk data */
            if (*p == '\n')
                c->chunk_state = CH_SIZE;
            else if (*p != '\r')
                return -1;
            p++;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static int ci_prefix(const char *s, const char *end, const char *pre)
{
    size_t n = strlen(pre);
    return (size_t)(end - s) >= n && strncasecmp(s, pre, n) == 0;
}

static int ci_contains(const char *s, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; s + n <= end; s++)
        if (strncasecmp(s, needle, n) == 0)
            return 1;
    return 0;
}

static void w_status(int code)
{
    for (int k = 0; k < NSTATUS; k++) {
        if (W.f.status_code[k] == code || W.f.status_code[k] == 0) {
            W.f.status_code[k] = code;
            W.f.status_count[k]++;
            return;
        }
    }
    W.f.status_other++;
}

/* parse the response head once complete; returns bytes consumed, 0 if incomplete, -1 bad */
static long w_head(long i)
{
    conn_t *c = &W.c[i];
    char *b = c->buf;
    uint32_t n = c->blen;
    char *e = NULL;
    size_t hl = 0;
    for (uint32_t k = 0; k + 1 < n; k++) {
        if (b[k] == '\n' && b[k + 1] == '\n') {
            e = b + k;
            hl = k + 2;
            break;
        }
        if (k + 3 < n && b[k] == '\r' && b[k + 1] == '\n' && b[k + 2] == '\r' && b[k + 3] == '\n') {
            e = b + k;
            hl = k + 4;
            break;
        }
    }
    if (!e)
        return n > 65536 ? -1 : 0;
    if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0)
        return -1;
    int code = atoi(b + 9);
    c->status = (uint16_t)code;
    w_status(code);
    int ctype_ok = 0;
    /* headers */
    char *line = memchr(b, '\n', (size_t)(e - b));
    while (line && line < e) {
        line++;
        char *le = memchr(line, '\n', (size_t)(e - line) + 1);
        if (!le)
            le = e;
        if (ci_prefix(line, le, "transfer-encoding:") && ci_contains(line, le, "chunked"))
            c->chunked = 1;
        if (ci_prefix(line, le, "content-type:") && ci_contains(line, le, "text/event-stream"))
            ctype_ok = 1;
        line = le;
    }
    if (code == 200) {
        if (!ctype_ok)
            W.f.bad_ctype++;
        if (c->chunked)
            W.f.chunked++;
    }
    return (long)hl;
}

/* one read; returns 1 when it got bytes (the caller may read again), else 0 */
static int w_read_once(long i)
{
    conn_t *c = &W.c[i];
    ssize_t k = w_io_read(c, W.rbuf, sizeof W.rbuf);
    if (k < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        if (c->state == C_STREAM)
            w_stream_closed(i);
        else
            w_attempt_failed(i, errno);
        return 0;
    }
    if (k == 0) {
        if (c->state == C_STREAM)
            w_stream_closed(i);
        else
            w_attempt_failed(i, 0);
        return 0;
    }
    W.f.bytes += (uint64_t)k;
    W.now_real = now_real_us();
    const char *p = W.rbuf;
    size_t n = (size_t)k;
    if (c->state == C_HEAD || c->state == C_SENDING) {
        buf_reserve(c, c->blen + (uint32_t)n + 1);
        memcpy(c->buf + c->blen, p, n);
        c->blen += (uint32_t)n;
        long hl = w_head(i);
        if (hl == 0)
            return 1;
        if (hl < 0) {
            w_attempt_failed(i, EPROTO);
            return 0;
        }
        if (c->status != 200) {
            W.f.p.non200++;
            W.pending--;
            w_close_fd(c);
            buf_free(c);
            c->state = C_DONE;
            return 0;
        }
        /* the stream is open */
        c->state = C_STREAM;
        c->ever_open = 1;
        c->open_real = W.now_real;
        W.f.p.opened++;
        W.f.p.open_now++;
        W.pending--;
        if (opt.until_events == 0) {
            c->reached = 1;
            W.open_reached++;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
        epoll_ctl(W.ep, EPOLL_CTL_MOD, c->fd, &ev);
        /* detach the head buffer: the SSE parser uses c->buf as its line carry */
        char *hb = c->buf;
        size_t rest = c->blen - (size_t)hl;
        c->buf = NULL;
        c->blen = c->bcap = 0;
        if (rest && w_body(i, hb + hl, rest) < 0 && c->state == C_STREAM)
            w_stream_closed(i);
        free(hb);
        return c->state == C_STREAM;
    }
    if (w_body(i, p, n) < 0 && c->state == C_STREAM) {
        w_stream_closed(i);
        return 0;
    }
    return c->state == C_STREAM;
}

static void w_readable(long i)
{
#ifdef WITH_TLS
    /* TLS: read until the TLS layer wants more from the socket, so that nothing decrypted
     * waits in OpenSSL's buffer for an epoll event that will not come (bounded) */
    if (W.c[i].ssl) {
        for (int k = 0; k < 64 && W.c[i].ssl && w_read_once(i); k++)
            ;
        return;
    }
#endif
    w_read_once(i);
}

/* W.req with every "{R}" replaced by the room's number */
static int w_room_request(uint32_t room, char *out, size_t size)
{
    size_t o = 0;
    for (int k = 0; k < W.reqlen && o + 12 < size; k++) {
        if (W.req[k] == '{' && k + 2 < W.reqlen && W.req[k + 1] == 'R' && W.req[k + 2] == '}') {
            o += (size_t)snprintf(out + o, size - o, "%u", room);
            k += 2;
        } else {
            out[o++] = W.req[k];
        }
    }
    return (int)o;
}

static void w_writable(long i)
{
    conn_t *c = &W.c[i];
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            w_attempt_failed(i, err);
            return;
        }
#ifdef WITH_TLS
        if (opt.tls) {
            w_tls_start(i); /* the handshake, then back here in C_SENDING */
            return;
        }
#endif
        c->state = C_SENDING;
    }
    if (c->state == C_SENDING) {
        /* with --rooms the request is made again for each write: the same bytes every time */
        char rq[sizeof W.req + 256];
        const char *req = W.req;
        int reqlen = W.reqlen;
        if (opt.rooms) {
            reqlen = w_room_request(c->room, rq, sizeof rq);
            req = rq;
        }
        while (c->sent < (uint32_t)reqlen) {
            ssize_t k = w_io_write(c, req + c->sent, (size_t)reqlen - c->sent);
            if (k < 0) {
                if (errno == EAGAIN)
                    return;
                if (errno == EINTR)
                    continue;
                w_attempt_failed(i, errno);
                return;
            }
            c->sent += (uint32_t)k;
        }
        c->state = C_HEAD;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
        epoll_ctl(W.ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void w_sweep(int64_t now)
{
    int64_t lim = (int64_t)(opt.connect_timeout * 1e6);
    for (long i = 0; i < W.n; i++) {
        conn_t *c = &W.c[i];
        if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE || c->state == C_SENDING || c->state == C_HEAD) &&
            now - c->t_start > lim)
            w_attempt_failed(i, ETIMEDOUT);
    }
}

static void w_finish(void)
{
    /* per-connection figures */
    for (long i = 0; i < W.n; i++) {
        conn_t *c = &W.c[i];
        if (c->ever_open) {
            if (!W.f.have_minmax || c->counted < W.f.min_ev)
                W.f.min_ev = c->counted;
            if (!W.f.have_minmax || c->counted > W.f.max_ev)
                W.f.max_ev = c->counted;
            W.f.have_minmax = 1;
            if (opt.expect >= 0 && c->counted < (uint64_t)opt.expect)
                W.f.below_expect++;
        }
    }
    W.f.p.connect_done = (W.pending == 0);
    W.f.p.satisfied = opt.until_events >= 0 && W.pending == 0 &&
                      (uint64_t)W.open_reached == W.f.p.open_now;
    w_send_msg(MSG_FINAL, &W.f, sizeof W.f);
    int per = 1000;
    for (int k = 0; k < W.ids.n; k += per) {
        int m = W.ids.n - k < per ? W.ids.n - k : per;
        w_send_msg(MSG_IDS, &W.ids.e[k], (uint32_t)(m * sizeof(idrec_t)));
    }
    uint64_t un = W.ids.untracked;
    w_send_msg(MSG_IDS + 1, &un, sizeof un); /* end marker */
    /* close the streams with a reset, so that no TIME_WAIT piles up on our side */
    struct linger lg = {1, 0};
    for (long i = 0; i < W.n; i++)
        if (W.c[i].fd >= 0) {
            setsockopt(W.c[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(W.c[i].fd);
        }
}

static void worker(int idx, long n, long first_global, int ctl, int rep)
{
    memset(&W, 0, sizeof W);
    W.idx = idx;
    W.n = n;
    W.ctl = ctl;
    W.rep = rep;
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(getpid() ^ (unsigned)now_mono_us()));
    W.c = calloc((size_t)(n > 0 ? n : 1), sizeof(conn_t));
    W.retryq = calloc((size_t)(n > 0 ? n : 1), sizeof(long));
    if (!W.c || !W.retryq)
        die("out of memory");
    idtab_init(&W.ids, opt.max_ids);
    for (long i = 0; i < n; i++) {
        W.c[i].fd = -1;
        long g = first_global + i * opt.procs; /* global connection number */
        W.c[i].src = (uint8_t)(1 + g % opt.sources);
        W.c[i].room = opt.rooms ? (uint32_t)(g % opt.rooms) : 0;
    }
    W.pending = n;
    /* request */
    int has_accept = 0, has_host = 0;
    for (int k = 0; k < opt.nheaders; k++) {
        if (strncasecmp(opt.headers[k], "accept:", 7) == 0)
            has_accept = 1;
        if (strncasecmp(opt.headers[k], "host:", 5) == 0)
            has_host = 1;
    }
    int len = snprintf(W.req, sizeof W.req, "GET %s HTTP/1.1\r\n", opt.path);
    if (!has_host)
        len += snprintf(W.req + len, sizeof W.req - (size_t)len, "Host: %s:%d\r\n", opt.host, opt.port);
    if (!has_accept)
        len += snprintf(W.req + len, sizeof W.req - (size_t)len, "Accept: text/event-stream\r\n");
    len += snprintf(W.req + len, sizeof W.req - (size_t)len, "Cache-Control: no-cache\r\n");
    for (int k = 0; k < opt.nheaders; k++)
        len += snprintf(W.req + len, sizeof W.req - (size_t)len, "%s\r\n", opt.headers[k]);
    len += snprintf(W.req + len, sizeof W.req - (size_t)len, "\r\n");
    if (len >= (int)sizeof W.req)
        die("request too long");
    W.reqlen = len;

    W.ep = epoll_create1(EPOLL_CLOEXEC);
    if (W.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    struct epoll_event cev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, ctl, &cev);

    W.t0 = now_mono_us();
    W.t_tok = W.t0;
    W.tokens = 1;
    int64_t deadline = W.t0 + (int64_t)((opt.timeout + 5) * 1e6); /* parent stops us before */
    int64_t next_prog = 0, next_sweep = W.t0 + 500000;
    progress_t last = {0};
    int stop = 0, was_done = 0;
    struct epoll_event evs[1024];
    while (!stop) {
        int64_t now = now_mono_us();
        if (now >= deadline)
            break;
        /* start connections within the rate budget */
        double cap = opt.connect_rate * 0.02 > 1 ? opt.connect_rate * 0.02 : 1; /* 20 ms burst */
        W.tokens += opt.connect_rate * (double)(now - W.t_tok) / 1e6;
        W.t_tok = now;
        if (W.tokens > cap)
            W.tokens = cap;
        long nb = (long)W.tokens;
        W.tokens -= (double)nb;
        if (nb > 1000)
            nb = 1000; /* keep the loop responsive */
        for (long r = 0; r < W.nretry && nb > 0;) {
            long i = W.retryq[r];
            if (W.c[i].t_due <= now) {
                W.retryq[r] = W.retryq[--W.nretry];
                w_start(i);
                nb--;
            } else {
                r++;
            }
        }
        while (nb > 0 && W.next_new < W.n) {
            w_start(W.next_new++);
            nb--;
        }
        int more = W.next_new < W.n || W.nretry > 0;
        int ne = epoll_wait(W.ep, evs, 1024, more ? 2 : 50);
        for (int k = 0; k < ne; k++) {
            uint64_t d = evs[k].data.u64;
            if (d == UINT64_MAX) {
                char ch;
                ssize_t r = read(ctl, &ch, 1);
                if (r <= 0 || ch == 'q')
                    stop = 1;
                continue;
            }
            long i = (long)d;
            conn_t *c = &W.c[i];
            if (c->fd < 0)
                continue;
            uint32_t e = evs[k].events;
#ifdef WITH_TLS
            if (c->state == C_HANDSHAKE) {
                w_handshake(i);
                continue;
            }
#endif
            if (c->state == C_CONNECTING || c->state == C_SENDING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    w_writable(i);
            } else if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
                w_readable(i);
            }
        }
        now = now_mono_us();
        if (now >= next_sweep) {
            w_sweep(now);
            next_sweep = now + 500000;
        }
        if (W.pending == 0 && !was_done) {
            W.f.connected_us = now_real_us();
            was_done = 1;
        }
        W.f.p.connect_done = (W.pending == 0);
        W.f.p.satisfied = opt.until_events >= 0 && W.pending == 0 &&
                          (uint64_t)W.open_reached == W.f.p.open_now;
        int flags_changed = W.f.p.connect_done != last.connect_done || W.f.p.satisfied != last.satisfied;
        if (flags_changed || (now >= next_prog && memcmp(&last, &W.f.p, sizeof last) != 0) ||
            now >= next_prog + 800000) {
            w_send_msg(MSG_PROGRESS, &W.f.p, sizeof W.f.p);
            last = W.f.p;
            next_prog = now + 200000;
        }
    }
    w_finish();
    close(rep);
    _exit(0);
}

/* ------------------------------------------------------------------------------------------ */
/* parent                                                                                      */

typedef struct {
    pid_t pid;
    int rep, ctl;
    char *buf;
    size_t blen, bcap;
    progress_t p;
    int have_final, ended, eof;
    final_t f;
    idrec_t *ids;
    size_t nids;
    uint64_t untracked;
} child_t;

static child_t CH[MAX_PROCS];
static volatile sig_atomic_t g_sig;

static void on_sig(int s)
{
    g_sig = s;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sseload [options]\n"
            "  --host A              server address, must be in 127.0.0.0/8 (default 127.0.0.1)\n"
            "  --port P              server port (default 8080)\n"
            "  --path S              path and query of the GET (default /sse)\n"
            "  --rooms M             connection g asks for --path with every {R} replaced by g mod M;\n"
            "                        event ids are tracked per room (\"room:id\")\n"
            "  --header 'K: V'       extra request header (repeatable, up to %d)\n"
            "  -n, --conns N         SSE connections to open (default 100)\n"
            "  --procs P             worker processes (default: ceil(N/18000))\n"
            "  --sources K           source addresses 127.0.0.1..127.0.0.K (default: ceil(N/25000))\n"
            "  --connect-rate R      new connections per second per process (default 5000)\n"
            "  --connect-timeout S   per attempt, TCP connect (+ TLS handshake) + response head (default 10)\n"
            "  --tls                 HTTPS: TLS 1.2/1.3, a full handshake per connection (-DWITH_TLS build)\n"
            "  --tls-ca FILE         verify the server's certificate chain against FILE (default: no check)\n"
            "  --sni NAME            server name to send and verify (default: none, the IP is verified)\n"
            "  --retries R           retries per connection, exponential backoff (default 8)\n"
            "  --hold S              after all are connected, hold S seconds, then exit\n"
            "  --until-events E      exit when every open connection got E events\n"
            "  --expect E            report connections that got fewer than E events\n"
            "  --timeout S           hard bound on the run (default 120; 60 with --until-events)\n"
            "  --count-stale         count events whose t predates the connection (replays)\n"
            "  --max-ids N           event ids tracked for spread (default 10000)\n"
            "  --detail N            per-event rows in the RESULT json (default 100)\n"
            "  --ids-csv FILE        write every tracked event id (id,n,t,first,last) to FILE\n"
            "  --max-line N          longest SSE line kept, bytes (default 1048576)\n"
            "  --progress S          progress line on stderr every S seconds (default 1, 0 = off)\n"
            "  --hist                add the latency histogram (non-empty buckets) to the RESULT json\n"
            "  -q, --quiet           no human summary (CONNECTED and RESULT lines only)\n",
            MAX_HEADERS);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    snprintf(opt.host, sizeof opt.host, "127.0.0.1");
    opt.port = 8080;
    snprintf(opt.path, sizeof opt.path, "/sse");
    opt.conns = 100;
    opt.procs = 0;
    opt.sources = 0;
    opt.connect_rate = 5000;
    opt.hold = -1;
    opt.until_events = -1;
    opt.expect = -1;
    opt.timeout = -1;
    opt.connect_timeout = 10;
    opt.retries = 8;
    opt.progress = 1;
    opt.max_ids = 10000;
    opt.detail = 100;
    opt.max_line = 1 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v || (die("%s needs a value", name), 0)) && ++i)
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage();
        else if (strcmp(a, "--count-stale") == 0)
            opt.count_stale = 1;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
            opt.quiet = 1;
        else if (strcmp(a, "--hist") == 0)
            opt.hist = 1;
        else if (strcmp(a, "--tls") == 0)
            opt.tls = 1;
        else if (ARG("--tls-ca"))
            opt.tls_ca = v;
        else if (ARG("--sni"))
            snprintf(opt.sni, sizeof opt.sni, "%s", v);
        else if (ARG("--host"))
            snprintf(opt.host, sizeof opt.host, "%s", v);
        else if (ARG("--port"))
            opt.port = atoi(v);
        else if (ARG("--path"))
            snprintf(opt.path, sizeof opt.path, "%s", v);
        else if (ARG("--header")) {
            if (opt.nheaders >= MAX_HEADERS)
                die("too many --header");
            if (strpbrk(v, "\r\n") || !strchr(v, ':'))
                die("--header must be one 'Name: value' line");
            opt.headers[opt.nheaders++] = v;
        } else if (ARG("-n") || ARG("--conns"))
            opt.conns = atol(v);
        else if (ARG("--rooms"))
            opt.rooms = atol(v);
        else if (ARG("--procs"))
            opt.procs = atoi(v);
        else if (ARG("--sources"))
            opt.sources = atoi(v);
        else if (ARG("--connect-rate"))
            opt.connect_rate = atof(v);
        else if (ARG("--connect-timeout"))
            opt.connect_timeout = atof(v);
        else if (ARG("--retries"))
            opt.retries = atoi(v);
        else if (ARG("--hold"))
            opt.hold = atof(v);
        else if (ARG("--until-events"))
            opt.until_events = atol(v);
        else if (ARG("--expect"))
            opt.expect = atol(v);
        else if (ARG("--timeout"))
            opt.timeout = atof(v);
        else if (ARG("--max-ids"))
            opt.max_ids = atoi(v);
        else if (ARG("--detail"))
            opt.detail = atoi(v);
        else if (ARG("--ids-csv"))
            opt.ids_csv = v;
        else if (ARG("--max-line"))
            opt.max_line = atoi(v);
        else if (ARG("--progress"))
            opt.progress = atof(v);
        else
            die("unknown argument '%s' (try --help)", a);
#undef ARG
    }
    /* loopback only */
    if (strcmp(opt.host, "localhost") == 0)
        snprintf(opt.host, sizeof opt.host, "127.0.0.1");
    if (inet_pton(AF_INET, opt.host, &opt.host_addr) != 1)
        die("--host must be an IPv4 address in 127.0.0.0/8, got '%s'", opt.host);
    if ((ntohl(opt.host_addr.s_addr) >> 24) != 127)
        die("refusing to target %s: only loopback addresses (127.0.0.0/8) are allowed", opt.host);
    if (opt.port <= 0 || opt.port > 65535)
        die("bad --port");
    if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n"))
        die("--path must start with '/' and contain no spaces or line breaks");
    if (opt.conns < 0 || opt.conns > 10000000)
        die("bad --conns");
    if (opt.rooms < 0 || opt.rooms > 1000000)
        die("bad --rooms");
    if (opt.rooms && !strstr(opt.path, "{R}"))
        die("--rooms needs {R} in --path");
    if (opt.sources == 0)
        opt.sources = (int)((opt.conns + 24999) / 25000);
    if (opt.sources < 1)
        opt.sources = 1;
    if (opt.sources > 254)
        die("--sources must be 1..254");
    if (opt.procs == 0)
        opt.procs = (int)((opt.conns + 17999) / 18000);
    if (opt.procs < 1)
        opt.procs = 1;
    if (opt.procs > MAX_PROCS)
        die("--procs must be 1..%d", MAX_PROCS);
    if (opt.connect_rate <= 0)
        die("--connect-rate must be > 0");
    if (opt.timeout < 0)
        opt.timeout = opt.until_events >= 0 ? 60 : 120;
    if (opt.timeout <= 0 || opt.timeout > 86400)
        die("bad --timeout");
    if (opt.connect_timeout <= 0)
        die("bad --connect-timeout");
    if (opt.retries < 0 || opt.retries > 200)
        die("--retries must be 0..200");
    if (opt.max_ids < 0 || opt.max_ids > 10000000)
        die("bad --max-ids");
    if (opt.max_line < 64)
        opt.max_line = 64;
    if ((opt.tls_ca || opt.sni[0]) && !opt.tls)
        die("--tls-ca and --sni need --tls");
#ifdef WITH_TLS
    if (opt.tls) {
        g_tls = SSL_CTX_new(TLS_client_method());
        if (!g_tls)
            die("SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(g_tls, TLS1_2_VERSION);
        /* idle streams keep no read/write buffers; every connection is a full handshake
         * (no client session cache), as a crowd of distinct clients would be */
        SSL_CTX_set_mode(g_tls, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(g_tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_session_cache_mode(g_tls, SSL_SESS_CACHE_OFF);
        if (opt.tls_ca) {
            if (SSL_CTX_load_verify_locations(g_tls, opt.tls_ca, NULL) != 1)
                die("cannot load --tls-ca %s", opt.tls_ca);
            SSL_CTX_set_verify(g_tls, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(g_tls, SSL_VERIFY_NONE, NULL);
        }
    }
#else
    if (opt.tls)
        die("--tls: this sseload was built without TLS (build with -DWITH_TLS ... -lssl -lcrypto)");
#endif
}

static void p_handle_msg(child_t *c, uint32_t type, const char *p, uint32_t len)
{
    if (type == MSG_PROGRESS && len == sizeof(progress_t)) {
        memcpy(&c->p, p, len);
    } else if (type == MSG_FINAL && len == sizeof(final_t)) {
        memcpy(&c->f, p, len);
        c->p = c->f.p;
        c->have_final = 1;
    } else if (type == MSG_IDS && len % sizeof(idrec_t) == 0) {
        size_t m = len / sizeof(idrec_t);
        idrec_t *nr = realloc(c->ids, (c->nids + m) * sizeof(idrec_t));
        if (!nr)
            die("out of memory");
        c->ids = nr;
        memcpy(c->ids + c->nids, p, len);
        c->nids += m;
    } else if (type == MSG_IDS + 1 && len == sizeof(uint64_t)) {
        memcpy(&c->untracked, p, len);
        c->ended = 1;
    }
}

static void p_read(child_t *c)
{
    if (c->bcap - c->blen < 65536) {
        size_t cap = c->bcap ? c->bcap * 2 : 262144;
        char *nb = realloc(c->buf, cap);
        if (!nb)
            die("out of memory");
        c->buf = nb;
        c->bcap = cap;
    }
    ssize_t k = read(c->rep, c->buf + c->blen, c->bcap - c->blen);
    if (k <= 0) {
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        c->eof = 1;
        return;
    }
    c->blen += (size_t)k;
    size_t off = 0;
    while (c->blen - off >= sizeof(msghdr_t)) {
        msghdr_t h;
        memcpy(&h, c->buf + off, sizeof h);
        if (c->blen - off - sizeof h < h.len)
            break;
        p_handle_msg(c, h.type, c->buf + off + sizeof h, h.len);
        off += sizeof h + h.len;
    }
    memmove(c->buf, c->buf + off, c->blen - off);
    c->blen -= off;
}

static void p_stop_all(void)
{
    for (int k = 0; k < opt.procs; k++)
        if (CH[k].ctl >= 0) {
            ssize_t r = write(CH[k].ctl, "q", 1);
            (void)r;
            close(CH[k].ctl);
            CH[k].ctl = -1;
        }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_first(const void *a, const void *b)
{
    const idrec_t *x = a, *y = b;
    return x->first_us < y->first_us ? -1 : x->first_us > y->first_us;
}

static double pct_sorted(const int64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(p * (double)n);
    if (k >= n)
        k = n - 1;
    return (double)v[k] / 1000.0;
}

static void json_str(FILE *o, const char *s)
{
    fputc('"', o);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(o, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(o, "\\u%04x", ch);
        else
            fputc(ch, o);
    }
    fputc('"', o);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    long per = (opt.conns + opt.procs - 1) / opt.procs;
    if ((rlim_t)per + 64 > rl.rlim_cur)
        die("%ld connections per process exceed the fd limit %llu: raise --procs", per,
            (unsigned long long)rl.rlim_cur);
    if (opt.conns > (long)opt.sources * 28000)
        fprintf(stderr, "sseload: warning: %ld connections over %d source address(es) may exhaust "
                        "ephemeral ports (~28k per address): raise --sources\n",
                opt.conns, opt.sources);

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int64_t t_start = now_mono_us();
    int64_t real_start = now_real_us();
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < opt.procs; k++) {
        int rp[2], cp[2];
        if (pipe2(rp, O_CLOEXEC) < 0 || pipe2(cp, O_CLOEXEC) < 0)
            die("pipe: %s", strerror(errno));
        long n = opt.conns / opt.procs + (k < opt.conns % opt.procs ? 1 : 0);
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            for (int j = 0; j < k; j++) {
                close(CH[j].rep);
                if (CH[j].ctl >= 0)
                    close(CH[j].ctl);
            }
            close(rp[0]);
            close(cp[1]);
            worker(k, n, k, cp[0], rp[1]);
        }
        close(rp[1]);
        close(cp[0]);
        CH[k].pid = pid;
        CH[k].rep = rp[0];
        CH[k].ctl = cp[1];
    }

    int64_t deadline = t_start + (int64_t)(opt.timeout * 1e6);
    int64_t next_prog = t_start + (int64_t)(opt.progress * 1e6);
    int64_t connected_at = 0, stop_at = 0;
    int stopped = 0, timed_out = 0, interrupted = 0;
    const char *stop_reason = "workers_ended";
    /* without --hold or --until-events the run simply lasts --timeout seconds */
    int plain_duration = opt.hold < 0 && opt.until_events < 0;
    uint64_t connected_n = 0;
    struct pollfd pf[MAX_PROCS];
    for (;;) {
        int64_t now = now_mono_us();
        int alive = 0;
        for (int k = 0; k < opt.procs; k++) {
            pf[k].fd = (CH[k].eof || CH[k].ended) ? -1 : CH[k].rep;
            pf[k].events = POLLIN;
            pf[k].revents = 0;
            if (pf[k].fd >= 0)
                alive++;
        }
        if (!alive)
            break;
        if (stopped && now - stop_at > 15000000) {
            fprintf(stderr, "sseload: workers did not report within 15 s of stop; killing\n");
            for (int k = 0; k < opt.procs; k++)
                if (!CH[k].ended && !CH[k].eof)
                    kill(CH[k].pid, SIGKILL);
            break;
        }
        int r = poll(pf, (nfds_t)opt.procs, 100);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        for (int k = 0; k < opt.procs; k++)
            if (pf[k].fd >= 0 && (pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                p_read(&CH[k]);
        now = now_mono_us();
        /* aggregate progress */
        progress_t s = {0};
        int all_done = 1, all_sat = 1;
        for (int k = 0; k < opt.procs; k++) {
            s.open_now += CH[k].p.open_now;
            s.opened += CH[k].p.opened;
            s.failed += CH[k].p.failed;
            s.non200 += CH[k].p.non200;
            s.events += CH[k].p.events;
            s.keepalives += CH[k].p.keepalives;
            s.attempts += CH[k].p.attempts;
            if (!CH[k].p.connect_done)
                all_done = 0;
            if (!CH[k].p.satisfied)
                all_sat = 0;
        }
        if (all_done && !connected_at && !stopped) {
            connected_at = now;
            connected_n = s.open_now;
            printf("CONNECTED %" PRIu64 "\n", s.open_now);
            fflush(stdout);
        }
        if (opt.progress > 0 && now >= next_prog) {
            fprintf(stderr,
                    "[%6.1fs] open %" PRIu64 " (ever %" PRIu64 ") failed %" PRIu64 " non200 %" PRIu64
                    " attempts %" PRIu64 " events %" PRIu64 " keepalives %" PRIu64 "\n",
                    (double)(now - t_start) / 1e6, s.open_now, s.opened, s.failed, s.non200,
                    s.attempts, s.events, s.keepalives);
            next_prog = now + (int64_t)(opt.progress * 1e6);
        }
        if (!stopped) {
            int stop = 0;
            if (g_sig) {
                stop = 1;
                interrupted = 1;
                stop_reason = "interrupted";
            } else if (now >= deadline) {
                stop = 1;
                timed_out = !plain_duration;
                stop_reason = plain_duration ? "duration" : "timeout";
            } else if (opt.until_events >= 0 && all_done && all_sat) {
                stop = 1;
                stop_reason = "until_events";
            } else if (opt.hold >= 0 && opt.until_events < 0 && connected_at &&
                       now - connected_at >= (int64_t)(opt.hold * 1e6)) {
                stop = 1;
                stop_reason = "hold";
            }
            for (int k = 0; k < opt.procs; k++)
                if (CH[k].eof && !CH[k].ended) {
                    stop = 1; /* a worker died: stop the run */
                    stop_reason = "worker_died";
                }
            if (stop) {
                p_stop_all();
                stopped = 1;
                stop_at = now;
            }
        }
    }
    p_stop_all();
    int child_failures = 0;
    for (int k = 0; k < opt.procs; k++) {
        int st = 0;
        waitpid(CH[k].pid, &st, 0);
        if (!CH[k].ended || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            child_failures++;
    }
    int64_t t_end = now_mono_us();

    /* ---- merge ---- */
    final_t F;
    memset(&F, 0, sizeof F);
    idtab_t T;
    idtab_init(&T, opt.max_ids);
    for (int k = 0; k < opt.procs; k++) {
        final_t *f = &CH[k].f;
        if (!CH[k].have_final)
            continue;
        F.p.open_now += f->p.open_now;
        F.p.opened += f->p.opened;
        F.p.failed += f->p.failed;
        F.p.non200 += f->p.non200;
        F.p.events += f->p.events;
        F.p.keepalives += f->p.keepalives;
        F.p.attempts += f->p.attempts;
        F.retries += f->retries;
        F.e_addrnotavail += f->e_addrnotavail;
        F.e_refused += f->e_refused;
        F.e_timeout += f->e_timeout;
        F.e_reset += f->e_reset;
        F.e_other += f->e_other;
        F.e_tls += f->e_tls;
        F.disconnected += f->disconnected;
        F.stale += f->stale;
        F.out_of_order += f->out_of_order;
        F.bad_ctype += f->bad_ctype;
        F.chunked += f->chunked;
        F.bytes += f->bytes;
        F.no_t += f->no_t;
        F.below_expect += f->below_expect;
        if (f->have_minmax) {
            if (!F.have_minmax || f->min_ev < F.min_ev)
                F.min_ev = f->min_ev;
            if (!F.have_minmax || f->max_ev > F.max_ev)
                F.max_ev = f->max_ev;
            F.have_minmax = 1;
        }
        if (f->first_event_us && (!F.first_event_us || f->first_event_us < F.first_event_us))
            F.first_event_us = f->first_event_us;
        if (f->last_event_us > F.last_event_us)
            F.last_event_us = f->last_event_us;
        if (f->min_t_us && (!F.min_t_us || f->min_t_us < F.min_t_us))
            F.min_t_us = f->min_t_us;
        if (f->max_t_us > F.max_t_us)
            F.max_t_us = f->max_t_us;
        if (f->connected_us > F.connected_us)
            F.connected_us = f->connected_us;
        for (int j = 0; j < NSTATUS; j++) {
            if (!f->status_code[j])
                continue;
            int placed = 0;
            for (int m = 0; m < NSTATUS && !placed; m++)
                if (F.status_code[m] == f->status_code[j] || F.status_code[m] == 0) {
                    F.status_code[m] = f->status_code[j];
                    F.status_count[m] += f->status_count[j];
                    placed = 1;
                }
            if (!placed)
                F.status_other += f->status_count[j];
        }
        F.status_other += f->status_other;
        h_merge(&F.lat, &f->lat);
        for (size_t j = 0; j < CH[k].nids; j++) {
            idrec_t *r = &CH[k].ids[j];
            r->id[ID_LEN - 1] = 0;
            idtab_add(&T, r->id, r->n, r->first_us, r->last_us, r->t_us);
        }
        T.untracked += CH[k].untracked;
    }
    qsort(T.e, (size_t)T.n, sizeof(idrec_t), cmp_first);
    int64_t *spread = malloc(sizeof(int64_t) * (size_t)(T.n + 1));
    int64_t *reach = malloc(sizeof(int64_t) * (size_t)(T.n + 1));
    size_t nspread = 0, nreach = 0;
    uint64_t incomplete = 0;
    for (int j = 0; j < T.n; j++) {
        spread[nspread++] = T.e[j].last_us - T.e[j].first_us;
        if (T.e[j].t_us)
            reach[nreach++] = T.e[j].last_us - T.e[j].t_us;
        uint64_t want = F.p.opened;
        if (opt.rooms) { /* the room's requested connections: g mod M == room */
            uint64_t room = strtoull(T.e[j].id, NULL, 10);
            want = (uint64_t)(opt.conns / opt.rooms) + (room < (uint64_t)(opt.conns % opt.rooms));
        }
        if (T.e[j].n < want)
            incomplete++;
    }
    qsort(spread, nspread, sizeof(int64_t), cmp_i64);
    qsort(reach, nreach, sizeof(int64_t), cmp_i64);
    double burst_ms = (F.min_t_us && F.last_event_us) ? (double)(F.last_event_us - F.min_t_us) / 1000.0 : 0;
    double connect_s = connected_at ? (double)(connected_at - t_start) / 1e6 : -1;
    double dur_s = (double)(t_end - t_start) / 1e6;
    uint64_t connect_errors = F.p.failed;
    uint64_t resolved = F.p.opened + F.p.failed + F.p.non200;
    uint64_t pending = resolved < (uint64_t)opt.conns ? (uint64_t)opt.conns - resolved : 0;

    if (opt.ids_csv) {
        FILE *o = fopen(opt.ids_csv, "w");
        if (!o) {
            fprintf(stderr, "sseload: cannot write %s: %s\n", opt.ids_csv, strerror(errno));
        } else {
            fprintf(o, "id,n,t_us,first_us,last_us,spread_ms,reach_all_ms\n");
            for (int j = 0; j < T.n; j++) {
                idrec_t *r = &T.e[j];
                fprintf(o, "\"%s\",%u,%" PRId64 ",%" PRId64 ",%" PRId64 ",%.3f,", r->id, r->n, r->t_us,
                        r->first_us, r->last_us, (double)(r->last_us - r->first_us) / 1000.0);
                if (r->t_us)
                    fprintf(o, "%.3f\n", (double)(r->last_us - r->t_us) / 1000.0);
                else
                    fprintf(o, "\n");
            }
            fclose(o);
        }
    }

    if (!opt.quiet) {
        printf("---- sseload summary ----\n");
        printf("target            %s:%d %s  (procs %d, sources %d, rate %.0f/s/proc)\n", opt.host,
               opt.port, opt.path, opt.procs, opt.sources, opt.connect_rate);
        printf("connections       requested %ld, open(200) %" PRIu64 ", open at end %" PRIu64
               ", non-200 %" PRIu64 ", connect errors %" PRIu64 ", unresolved %" PRIu64 "\n",
               opt.conns, F.p.opened, F.p.open_now, F.p.non200, connect_errors, pending);
        printf("attempts          %" PRIu64 " (retried %" PRIu64 ": addrnotavail %" PRIu64
               ", refused %" PRIu64 ", timeout %" PRIu64 ", reset/eof %" PRIu64 ", other %" PRIu64 ")\n",
               F.p.attempts, F.retries, F.e_addrnotavail, F.e_refused, F.e_timeout, F.e_reset, F.e_other);
        printf("statuses         ");
        for (int m = 0; m < NSTATUS; m++)
            if (F.status_code[m])
                printf(" %d x%" PRIu64, F.status_code[m], F.status_count[m]);
        printf("%s\n", F.status_code[0] ? "" : " none");
        printf("time to connect   %.3f s%s\n", connect_s, connect_s < 0 ? " (not all resolved)" : "");
        printf("streams           disconnected by server %" PRIu64 ", chunked %" PRIu64
               ", without text/event-stream %" PRIu64 "\n",
               F.disconnected, F.chunked, F.bad_ctype);
        printf("events            total %" PRIu64 ", keep-alives %" PRIu64 ", stale(replayed) %" PRIu64
               ", without t %" PRIu64 ", out of order %" PRIu64 ", bytes %" PRIu64 "\n",
               F.p.events, F.p.keepalives, F.stale, F.no_t, F.out_of_order, F.bytes);
        printf("per connection    min %" PRIu64 ", max %" PRIu64, F.min_ev, F.max_ev);
        if (opt.expect >= 0)
            printf(", expected %ld, connections below: %" PRIu64, opt.expect, F.below_expect);
        printf("\n");
        if (F.lat.n)
            printf("latency (ms)      n %" PRIu64 "  min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f"
                   "  mean %.3f%s\n",
                   F.lat.n, (double)F.lat.min / 1000.0, h_pct_ms(&F.lat, 0.5), h_pct_ms(&F.lat, 0.9),
                   h_pct_ms(&F.lat, 0.99), h_pct_ms(&F.lat, 0.999), (double)F.lat.max / 1000.0,
                   F.lat.sum / (double)F.lat.n / 1000.0, F.lat.negative ? "  (some negative!)" : "");
        else
            printf("latency (ms)      no events with a \"t\" field\n");
        printf("event ids         tracked %d, untracked receipts %" PRIu64 ", received by fewer than "
               "all opened connections %" PRIu64 "\n",
               T.n, T.untracked, incomplete);
        if (nspread)
            printf("spread (ms)       first->last receipt per id: p50 %.3f  p99 %.3f  max %.3f\n",
                   pct_sorted(spread, nspread, 0.5), pct_sorted(spread, nspread, 0.99),
                   (double)spread[nspread - 1] / 1000.0);
        if (nreach)
            printf("reach all (ms)    send t -> last receipt per id: p50 %.3f  p99 %.3f  max %.3f\n",
                   pct_sorted(reach, nreach, 0.5), pct_sorted(reach, nreach, 0.99),
                   (double)reach[nreach - 1] / 1000.0);
        if (burst_ms > 0)
            printf("burst (ms)        earliest send t -> last receipt of anything: %.3f\n", burst_ms);
        printf("duration          %.3f s, stopped by %s%s%s\n", dur_s, stop_reason,
               timed_out ? "  (TIMED OUT)" : "", child_failures ? "  (a worker failed)" : "");
    }

    printf("RESULT {\"connections_requested\":%ld,\"connections_open\":%" PRIu64
           ",\"connections_open_at_end\":%" PRIu64 ",\"connected_when_all_resolved\":%" PRIu64
           ",\"connect_errors\":%" PRIu64 ",\"unresolved\":%" PRIu64 ",\"connect_attempts\":%" PRIu64
           ",\"connect_retries\":%" PRIu64 ",\"err_addrnotavail\":%" PRIu64 ",\"err_refused\":%" PRIu64
           ",\"err_timeout\":%" PRIu64 ",\"err_reset\":%" PRIu64 ",\"err_other\":%" PRIu64
           ",\"err_tls\":%" PRIu64 ",\"tls\":%s,\"non200\":%" PRIu64 ",\"statuses\":{",
           opt.conns, F.p.opened, F.p.open_now, connected_n, connect_errors, pending, F.p.attempts,
           F.retries, F.e_addrnotavail, F.e_refused, F.e_timeout, F.e_reset, F.e_other, F.e_tls,
           opt.tls ? "true" : "false", F.p.non200);
    for (int m = 0, first = 1; m < NSTATUS; m++)
        if (F.status_code[m]) {
            printf("%s\"%d\":%" PRIu64, first ? "" : ",", F.status_code[m], F.status_count[m]);
            first = 0;
        }
    printf("},\"disconnected\":%" PRIu64 ",\"chunked_streams\":%" PRIu64 ",\"bad_content_type\":%" PRIu64
           ",\"events_total\":%" PRIu64 ",\"keepalives_total\":%" PRIu64 ",\"stale_total\":%" PRIu64
           ",\"events_without_t\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ",\"bytes\":%" PRIu64
           ",\"events_per_conn_min\":%" PRIu64 ",\"events_per_conn_max\":%" PRIu64,
           F.disconnected, F.chunked, F.bad_ctype, F.p.events, F.p.keepalives, F.stale, F.no_t,
           F.out_of_order, F.bytes, F.min_ev, F.max_ev);
    if (opt.expect >= 0)
        printf(",\"expect\":%ld,\"conns_below_expect\":%" PRIu64, opt.expect, F.below_expect);
    else
        printf(",\"expect\":null,\"conns_below_expect\":null");
    printf(",\"latency_samples\":%" PRIu64 ",\"latency_negative\":%" PRIu64, F.lat.n, F.lat.negative);
    if (F.lat.n)
        printf(",\"latency_min_ms\":%.3f,\"latency_p50_ms\":%.3f,\"latency_p90_ms\":%.3f,\"latency_p99_ms\":%.3f"
               ",\"latency_p999_ms\":%.3f,\"latency_max_ms\":%.3f,\"latency_mean_ms\":%.3f",
               (double)F.lat.min / 1000.0, h_pct_ms(&F.lat, 0.5), h_pct_ms(&F.lat, 0.9),
               h_pct_ms(&F.lat, 0.99), h_pct_ms(&F.lat, 0.999), (double)F.lat.max / 1000.0,
               F.lat.sum / (double)F.lat.n / 1000.0);
    else
        printf(",\"latency_min_ms\":null,\"latency_p50_ms\":null,\"latency_p90_ms\":null,\"latency_p99_ms\":null"
               ",\"latency_p999_ms\":null,\"latency_max_ms\":null,\"latency_mean_ms\":null");
    if (opt.hist) {
        /* [upper edge µs (inclusive; the overflow bucket's is the maximum), count] of every
         * non-empty bucket: runs of several sseload processes merge into the percentiles one
         * run would give (the edge of the bucket, capped by latency_max_ms) */
        printf(",\"latency_hist\":[");
        for (int i = 0, first = 1; i < H_NB; i++)
            if (F.lat.b[i]) {
                int64_t u = i == H_NB - 1 ? F.lat.max : h_upper(i);
                printf("%s[%" PRId64 ",%" PRIu64 "]", first ? "" : ",", u, F.lat.b[i]);
                first = 0;
            }
        printf("]");
    }
    printf(",\"first_event_time_us\":%" PRId64 ",\"last_event_time_us\":%" PRId64 ",\"min_t_us\":%" PRId64
           ",\"max_t_us\":%" PRId64 ",\"burst_ms\":%.3f",
           F.first_event_us, F.last_event_us, F.min_t_us, F.max_t_us, burst_ms);
    printf(",\"ids_tracked\":%d,\"ids_untracked_receipts\":%" PRIu64 ",\"ids_incomplete\":%" PRIu64, T.n,
           T.untracked, incomplete);
    if (nspread)
        printf(",\"spread_p50_ms\":%.3f,\"spread_p99_ms\":%.3f,\"spread_max_ms\":%.3f",
               pct_sorted(spread, nspread, 0.5), pct_sorted(spread, nspread, 0.99),
               (double)spread[nspread - 1] / 1000.0);
    else
        printf(",\"spread_p50_ms\":null,\"spread_p99_ms\":null,\"spread_max_ms\":null");
    if (nreach)
        printf(",\"reach_all_p50_ms\":%.3f,\"reach_all_p99_ms\":%.3f,\"reach_all_max_ms\":%.3f",
               pct_sorted(reach, nreach, 0.5), pct_sorted(reach, nreach, 0.99),
               (double)reach[nreach - 1] / 1000.0);
    else
        printf(",\"reach_all_p50_ms\":null,\"reach_all_p99_ms\":null,\"reach_all_max_ms\":null");
    printf(",\"per_event\":[");
    int nd = opt.detail < 0 || opt.detail > T.n ? T.n : opt.detail;
    for (int j = 0; j < nd; j++) {
        idrec_t *r = &T.e[j];
        printf("%s{\"id\":", j ? "," : "");
        json_str(stdout, r->id);
        printf(",\"n\":%u,\"spread_ms\":%.3f", r->n, (double)(r->last_us - r->first_us) / 1000.0);
        if (r->t_us)
            printf(",\"first_ms\":%.3f,\"reach_all_ms\":%.3f", (double)(r->first_us - r->t_us) / 1000.0,
                   (double)(r->last_us - r->t_us) / 1000.0);
        printf("}");
    }
    printf("],\"connect_time_s\":%.3f,\"duration_s\":%.3f,\"start_time_us\":%" PRId64
           ",\"stop_reason\":\"%s\",\"timed_out\":%s,\"interrupted\":%s,\"worker_failures\":%d"
           ",\"procs\":%d,\"sources\":%d,\"rooms\":%ld}\n",
           connect_s, dur_s, real_start, stop_reason, timed_out ? "true" : "false",
           interrupted ? "true" : "false", child_failures, opt.procs, opt.sources, opt.rooms);
    fflush(stdout);
    free(spread);
    free(reach);
    return (child_failures || timed_out) ? 1 : 0;
}
