/* pubload: a paced HTTP/1.1 keep-alive publisher for the benchmarks (bench/run.py).
 *
 *   gcc -O2 -Wall -Wextra -Werror -o build/pubload bench/pubload.c
 *   gcc -O2 -Wall -Wextra -Werror -DWITH_TLS -o build/pubload-tls bench/pubload.c -lssl -lcrypto
 *     (the TLS build adds --tls [--tls-ca FILE] [--sni NAME]: HTTPS, one handshake per connection)
 *
 * Sends --count requests (or for --duration seconds) over --conns keep-alive connections to
 * a loopback server, at --rate requests per second (0: as fast as the connections allow, each
 * connection sends its next request as soon as the previous answer is in). Request i is due at
 * start + i/rate; when no connection is free it is sent late, and the lag is reported, so the
 * rate achieved is measured, not assumed.
 *
 * Templates (--path, --header, --body) may contain:
 *   {T}  CLOCK_REALTIME in microseconds at the moment the request is written
 *   {N}  the request's sequence number (0-based)
 *   {V}  line (N mod L) of --vars FILE (L lines), e.g. a channel, topic or token per tenant
 *
 * Prints one line `RESULT {json}` on stdout: sent, completed, ok (2xx), non2xx, errors,
 * statuses, elapsed_s, offered_rate, achieved_rate, late, max_lag_ms, response latency
 * percentiles (ms), and this process's own CPU seconds (user+sys).
 * Only loopback addresses are accepted; every run is bounded by --timeout (default 120 s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#define MAX_HEADERS 16
#define MAX_CONNS 1024
#define RBUF 65536

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pubload: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- options ---- */
static struct {
    struct in_addr addr;
    int port;
    const char *method, *path, *body;
    const char *headers[MAX_HEADERS];
    int nheaders;
    char **vars;
    long nvars;
    double rate, duration, timeout;
    long count;
    int conns;
    int tls;
    const char *tls_ca, *sni, *host;
} opt;
#ifdef WITH_TLS
static SSL_CTX *g_tls;
#endif

/* ---- growable buffer ---- */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void b_put(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory");
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void b_str(buf_t *b, const char *s) { b_put(b, s, strlen(s)); }

static void expand(buf_t *b, const char *tpl, long seq, int64_t t)
{
    char num[32];
    for (const char *s = tpl; *s;) {
        if (s[0] == '{' && s[1] && s[2] == '}' && strchr("TNV", s[1])) {
            if (s[1] == 'T') {
                snprintf(num, sizeof num, "%lld", (long long)t);
                b_str(b, num);
            } else if (s[1] == 'N') {
                snprintf(num, sizeof num, "%ld", seq);
                b_str(b, num);
            } else {
                if (!opt.nvars)
                    die("{V} used without --vars");
                b_str(b, opt.vars[seq % opt.nvars]);
            }
            s += 3;
        } else {
            b_put(b, s, 1);
            s++;
        }
    }
}

/* ---- connections ---- */
typedef struct {
    int fd;
    int busy;           /* a request is in flight */
    int connecting;
    long seq;
    int64_t sent_at;
    buf_t out;
    size_t out_off;
    char in[RBUF];
    size_t in_len;
#ifdef WITH_TLS
    SSL *ssl;
    int handshaking;
#endif
} conn_t;

static conn_t C[MAX_CONNS];
static int ep;
static long n_sent, n_done, n_ok, n_non2xx, n_err, n_late, n_reconnects;
static long statuses[6];
static int64_t max_lag, last_send_at;
static uint32_t *lat;
static size_t nlat, caplat;
static volatile sig_atomic_t g_stop;

static void on_sig(int s) { (void)s; g_stop = 1; }

static void conn_open(conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port), .sin_addr = opt.addr};
    int r = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    c->connecting = 1;
    c->in_len = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_close(conn_t *c)
{
#ifdef WITH_TLS
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    c->handshaking = 0;
#endif
    if (c->fd >= 0) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
    }
    c->fd = -1;
}

static void conn_fail(conn_t *c)
{
    if (c->busy) {
        n_err++;
        n_done++;
        c->busy = 0;
    }
    conn_close(c);
    n_reconnects++;
    if (!g_stop)
        conn_open(c);
}

static void want_out(conn_t *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* plain or TLS I/O, like read()/write(): -1 with EAGAIN when TLS wants the socket */
static ssize_t io_read(conn_t *c, void *buf, size_t n)
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

static ssize_t io_write(conn_t *c, const void *buf, size_t n)
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
        errno = EPIPE;
        return -1;
    }
#endif
    return write(c->fd, buf, n);
}

#ifdef WITH_TLS
/* after the TCP connect: start (or go on with) the handshake; returns 1 when it is done,
 * 0 while it waits for the socket, -1 on failure (*why says what) */
static int tls_step(conn_t *c, const char **why)
{
    if (!c->ssl) {
        c->ssl = SSL_new(g_tls);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            *why = "SSL_new";
            return -1;
        }
        if (opt.sni)
            SSL_set_tlsext_host_name(c->ssl, opt.sni);
        if (opt.tls_ca) {
            if (opt.sni)
                SSL_set1_host(c->ssl, opt.sni);
            else
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), opt.host);
        }
        c->handshaking = 1;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->handshaking = 0;
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        struct epoll_event ev = {.events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 0;
    }
    static char msg[300];
    if (e == SSL_ERROR_SYSCALL) {
        snprintf(msg, sizeof msg, "TLS handshake: connection closed (%s)", errno ? strerror(errno) : "EOF");
    } else {
        char em[200];
        ERR_error_string_n(ERR_peek_last_error(), em, sizeof em);
        long vr = SSL_get_verify_result(c->ssl);
        snprintf(msg, sizeof msg, "TLS handshake: %s%s%s", em, vr != X509_V_OK ? "; verify: " : "",
                 vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    }
    *why = msg;
    return -1;
}
#endif

static void flush_out(conn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = io_write(c, c->out.p + c->out_off, c->out.len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN)
                break;
            conn_fail(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    want_out(c, c->out_off < c->out.len);
}

static void send_req(conn_t *c, long seq)
{
    int64_t t = real_us();
    buf_t body = {0}, path = {0};
    expand(&body, opt.body ? opt.body : "", seq, t);
    expand(&path, opt.path, seq, t);
    c->out.len = 0;
    c->out_off = 0;
    b_str(&c->out, opt.method);
    b_str(&c->out, " ");
    b_str(&c->out, path.p);
    b_str(&c->out, " HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < opt.nheaders; i++) {
        expand(&c->out, opt.headers[i], seq, t);
        b_str(&c->out, "\r\n");
    }
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", body.len);
    b_str(&c->out, cl);
    if (body.len)
        b_put(&c->out, body.p, body.len);
    free(body.p);
    free(path.p);
    c->busy = 1;
    c->seq = seq;
    c->sent_at = mono_us();
    last_send_at = c->sent_at;
    n_sent++;
    flush_out(c);
}

/* Returns the length of a complete response at the start of c->in, 0 if incomplete,
 * -1 if it is delimited by the close of the connection. */
static long resp_len(conn_t *c, int *status, int *close_after)
{
    c->in[c->in_len < RBUF ? c->in_len : RBUF - 1] = 0;
    char *he = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!he)
        return 0;
    size_t hlen = (size_t)(he - c->in) + 4;
    *status = 0;
    sscanf(c->in, "HTTP/1.%*d %d", status);
    long clen = -1;
    int chunked = 0;
    *close_after = 0;
    for (char *l = strstr(c->in, "\r\n"); l && l < he; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2;
        if (strncasecmp(h, "content-length:", 15) == 0)
            clen = atol(h + 15);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strcasestr(h, "chunked") &&
                 strcasestr(h, "chunked") < strstr(h, "\r\n"))
            chunked = 1;
        else if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h, "close") &&
                 strcasestr(h, "close") < strstr(h, "\r\n"))
            *close_after = 1;
    }
    if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200))
        return (long)hlen;
    if (clen >= 0)
        return c->in_len >= hlen + (size_t)clen ? (long)(hlen + (size_t)clen) : 0;
    if (chunked) {
        char *end = memmem(c->in + hlen - 2, c->in_len - hlen + 2, "\r\n0\r\n\r\n", 7);
        return end ? (long)(end - c->in) + 7 : 0;
    }
    return -1;
}

static void record(conn_t *c, int status)
{
    int64_t d = mono_us() - c->sent_at;
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 4096;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("out of memory");
    }
    lat[nlat++] = (uint32_t)(d > 0xffffffffLL ? 0xffffffffLL : d);
    n_done++;
    if (status >= 200 && status < 300)
        n_ok++;
    else
        n_non2xx++;
    if (status >= 100 && status < 600)
        statuses[status / 100]++;
    else
        statuses[0]++;
    c->busy = 0;
}

static void on_read(conn_t *c)
{
    for (;;) {
        if (c->in_len >= RBUF - 1) {
            conn_fail(c);
            return;
        }
        ssize_t r = io_read(c, c->in + c->in_len, RBUF - 1 - c->in_len);
        if (r < 0) {
            if (errno == EAGAIN)
                break;
            conn_fail(c);
            return;
        }
        if (r == 0) { /* closed: a close-delimited answer ends here */
            int st, ca;
            if (c->busy && resp_len(c, &st, &ca) == -1)
                record(c, st);
            conn_fail(c);
            return;
        }
        c->in_len += (size_t)r;
    }
    while (c->busy) {
        int st, ca;
        long n = resp_len(c, &st, &ca);
        if (n <= 0)
            return;
        record(c, st);
        memmove(c->in, c->in + n, c->in_len - (size_t)n);
        c->in_len -= (size_t)n;
        if (ca) {
            conn_close(c);
            n_reconnects++;
            if (!g_stop)
                conn_open(c);
            return;
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[i] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pubload --port P --path TPL [options]\n"
            "  --host A        loopback IPv4 address (default 127.0.0.1)\n"
            "  --method M      default POST\n"
            "  --header TPL    'Name: value' (repeatable)\n"
            "  --body TPL      request body\n"
            "  --vars FILE     lines substituted for {V}, round robin\n"
            "  --rate R        requests per second, 0 = back to back (default 0)\n"
            "  --count N       requests to send (default 100)\n"
            "  --duration S    stop sending after S seconds (default: none)\n"
            "  --conns C       keep-alive connections (default 1)\n"
            "  --timeout S     hard bound on the run (default 120)\n"
            "  --tls           HTTPS, TLS 1.2/1.3 (only in the -DWITH_TLS build)\n"
            "  --tls-ca FILE   verify the server's chain against FILE (default: no check)\n"
            "  --sni NAME      server name to send and verify (default: none, the IP is verified)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *vars_file = NULL;
    opt.method = "POST";
    opt.path = "/";
    opt.count = 100;
    opt.conns = 1;
    opt.timeout = 120;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (!strcmp(a, "--tls")) {
            opt.tls = 1;
            continue;
        }
        if (!v)
            die("%s needs a value", a);
        i++;
        if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--method"))
            opt.method = v;
        else if (!strcmp(a, "--path"))
            opt.path = v;
        else if (!strcmp(a, "--body"))
            opt.body = v;
        else if (!strcmp(a, "--header")) {
            if (opt.nheaders >= MAX_HEADERS || !strchr(v, ':') || strpbrk(v, "\r\n"))
                die("bad or too many --header");
            opt.headers[opt.nheaders++] = v;
        } else if (!strcmp(a, "--vars"))
            vars_file = v;
        else if (!strcmp(a, "--rate"))
            opt.rate = atof(v);
        else if (!strcmp(a, "--count"))
            opt.count = atol(v);
        else if (!strcmp(a, "--duration"))
            opt.duration = atof(v);
        else if (!strcmp(a, "--conns"))
            opt.conns = atoi(v);
        else if (!strcmp(a, "--timeout"))
            opt.timeout = atof(v);
        else if (!strcmp(a, "--tls-ca"))
            opt.tls_ca = v;
        else if (!strcmp(a, "--sni"))
            opt.sni = v;
        else
            die("unknown argument '%s'", a);
    }
    if (inet_pton(AF_INET, host, &opt.addr) != 1 || (ntohl(opt.addr.s_addr) >> 24) != 127)
        die("--host must be a loopback IPv4 address (127.0.0.0/8)");
    if (opt.port <= 0 || opt.port > 65535)
        die("bad --port");
    if (opt.conns < 1 || opt.conns > MAX_CONNS)
        die("--conns must be 1..%d", MAX_CONNS);
    if (opt.count < 0 || opt.rate < 0 || opt.timeout <= 0 || opt.timeout > 3600)
        die("bad --count, --rate or --timeout");
    if (opt.duration <= 0 && opt.count == 0)
        die("need --count or --duration");
    opt.host = host;
    if ((opt.tls_ca || opt.sni) && !opt.tls)
        die("--tls-ca and --sni need --tls");
#ifdef WITH_TLS
    if (opt.tls) {
        g_tls = SSL_CTX_new(TLS_client_method());
        if (!g_tls)
            die("SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(g_tls, TLS1_2_VERSION);
        SSL_CTX_set_mode(g_tls, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(g_tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (opt.tls_ca) {
            if (SSL_CTX_load_verify_locations(g_tls, opt.tls_ca, NULL) != 1)
                die("cannot load --tls-ca %s", opt.tls_ca);
            SSL_CTX_set_verify(g_tls, SSL_VERIFY_PEER, NULL);
        }
    }
#else
    if (opt.tls)
        die("--tls: this pubload was built without TLS (build with -DWITH_TLS ... -lssl -lcrypto)");
#endif
    if (vars_file) {
        FILE *f = fopen(vars_file, "r");
        if (!f)
            die("%s: %s", vars_file, strerror(errno));
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) > 0) {
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (!n)
                continue;
            opt.vars = realloc(opt.vars, (size_t)(opt.nvars + 1) * sizeof *opt.vars);
            opt.vars[opt.nvars++] = strdup(line);
        }
        free(line);
        fclose(f);
        if (!opt.nvars)
            die("%s is empty", vars_file);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);

    ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < opt.conns; i++) {
        C[i].fd = -1;
        conn_open(&C[i]);
    }
    /* wait (bounded) for the connections to be established before the clock starts */
    int64_t t_conn = mono_us();
    for (int ready = 0; ready < opt.conns && mono_us() - t_conn < 10000000;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
#ifdef WITH_TLS
            if (c->handshaking) {
                const char *why = NULL;
                int r = tls_step(c, &why);
                if (r < 0)
                    die("cannot connect to %s:%d: %s", host, opt.port, why);
                if (r > 0) {
                    want_out(c, 0);
                    ready++;
                }
                continue;
            }
#endif
            if (!c->connecting)
                continue;
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err || (evs[k].events & (EPOLLERR | EPOLLHUP)))
                die("cannot connect to 127.0.0.1:%d: %s", opt.port, strerror(err ? err : ECONNRESET));
            c->connecting = 0;
#ifdef WITH_TLS
            if (opt.tls) {
                const char *why = NULL;
                int r = tls_step(c, &why);
                if (r < 0)
                    die("cannot connect to %s:%d: %s", host, opt.port, why);
                if (r == 0)
                    continue;
            }
#endif
            want_out(c, 0);
            ready++;
        }
    }

    int64_t start = mono_us();
    int64_t hard_end = start + (int64_t)(opt.timeout * 1e6);
    int64_t send_end = opt.duration > 0 ? start + (int64_t)(opt.duration * 1e6) : INT64_MAX;
    long next = 0;
    int64_t last_done_at = start;
    int timed_out = 0;
    for (;;) {
        int64_t now = mono_us();
        int sending = !g_stop && (opt.count == 0 || next < opt.count) && now < send_end;
        int inflight = 0;
        for (int i = 0; i < opt.conns; i++)
            inflight += C[i].busy;
        if (!sending && !inflight)
            break;
        if (now >= hard_end) {
            timed_out = 1;
            break;
        }
        int wait_ms = 100;
        if (sending) {
            int64_t due = opt.rate > 0 ? start + (int64_t)((double)next * 1e6 / opt.rate) : now;
            if (due <= now) {
                conn_t *free_c = NULL;
                for (int i = 0; i < opt.conns && !free_c; i++)
                    if (C[i].fd >= 0 && !C[i].busy && !C[i].connecting
#ifdef WITH_TLS
                        && !C[i].handshaking
#endif
                    )
                        free_c = &C[i];
                if (free_c) {
                    int64_t lag = now - due;
                    if (opt.rate > 0 && lag > 1000)
                        n_late++;
                    if (opt.rate > 0 && lag > max_lag)
                        max_lag = lag;
                    send_req(free_c, next++);
                    continue;
                }
            } else {
                int64_t w = (due - now + 999) / 1000;
                wait_ms = w < wait_ms ? (int)w : wait_ms;
            }
        }
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, wait_ms);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c->fd < 0)
                continue;
#ifdef WITH_TLS
            if (c->handshaking) { /* a reconnection's handshake */
                const char *why = NULL;
                int r = tls_step(c, &why);
                if (r < 0)
                    conn_fail(c);
                else if (r > 0)
                    want_out(c, 0);
                continue;
            }
#endif
            if (c->connecting) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || (evs[k].events & (EPOLLERR | EPOLLHUP))) {
                    conn_fail(c);
                    continue;
                }
                c->connecting = 0;
#ifdef WITH_TLS
                if (opt.tls) {
                    const char *why = NULL;
                    int r = tls_step(c, &why);
                    if (r < 0)
                        conn_fail(c);
                    else if (r > 0)
                        want_out(c, 0);
                    continue;
                }
#endif
                want_out(c, 0);
                continue;
            }
            if (evs[k].events & EPOLLOUT)
                flush_out(c);
            if (c->fd >= 0 && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                long before = n_done;
                on_read(c);
                if (n_done != before)
                    last_done_at = mono_us();
            }
        }
    }
    double elapsed = (double)(last_done_at - start) / 1e6;
    /* sending rate: requests sent over the sending interval (request 0 at start, the last at
     * last_send_at); with one request, or back to back, completions over elapsed time */
    double send_span = (double)(last_send_at - start) / 1e6;
    double send_rate = n_sent > 1 && send_span > 0 ? (double)(n_sent - 1) / send_span
                                                   : (elapsed > 0 ? (double)n_done / elapsed : 0.0);
    for (int i = 0; i < opt.conns; i++)
        conn_close(&C[i]);
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    printf("RESULT {\"sent\": %ld, \"completed\": %ld, \"ok\": %ld, \"non2xx\": %ld, \"errors\": %ld, "
           "\"statuses\": {\"1xx\": %ld, \"2xx\": %ld, \"3xx\": %ld, \"4xx\": %ld, \"5xx\": %ld, \"other\": %ld}, "
           "\"reconnects\": %ld, \"elapsed_s\": %.4f, \"offered_rate\": %.2f, \"achieved_rate\": %.2f, "
           "\"completion_rate\": %.2f, "
           "\"late\": %ld, \"max_lag_ms\": %.3f, \"resp_p50_ms\": %.3f, \"resp_p99_ms\": %.3f, "
           "\"resp_max_ms\": %.3f, \"cpu_s\": %.4f, \"timed_out\": %s}\n",
           n_sent, n_done, n_ok, n_non2xx, n_err, statuses[1], statuses[2], statuses[3], statuses[4],
           statuses[5], statuses[0], n_reconnects, elapsed, opt.rate, send_rate,
           elapsed > 0 ? (double)n_done / elapsed : 0.0, n_late, max_lag / 1000.0, pct(0.5), pct(0.99),
           pct(1.0), cpu, timed_out ? "true" : "false");
    return timed_out ? 1 : 0;
}
