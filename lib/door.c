/*
 * door.c - the front door's loop: listeners, connections, requests, routes,
 * timers, hooks and the write budget (see door.h).
 */
#include "door_internal.h"
#include "countmap.h"
#include "clock.h"
#include "http.h"
#include "http_answer.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define EPOLL_BATCH 512
#define ACCEPT_PAUSE_MS 200 /* after EMFILE */
#define TICK_MS 100

int64_t door_now_ms(void)
{
    return clock_mono_us() / 1000;
}

const broker_config *door_config(const door *d)
{
    return d->cfg;
}

int door_watch_fd(door *d, int fd, uint32_t events, void *tag)
{
    struct epoll_event ev = {.events = events, .data.ptr = tag};
    return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int listen_on(const char *bind_addr, long port, int reuse_port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        log_error("--bind: '%s' is not an IPv4 address", bind_addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        log_error("cannot listen on %s:%ld: %s", bind_addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The port of --http_port: -1 means 80 with --secure, none without. */
static long redirect_port(const broker_config *cfg)
{
    if (cfg->http_port < 0)
        return cfg->secure ? 80 : 0;
    return cfg->http_port;
}

door *door_process;

door *door_new(const broker_config *cfg, struct http_server *http, size_t conn_extra, int reuse_port)
{
    if (door_process != NULL) {
        log_error("door: a process has one front door");
        return NULL;
    }
    door *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    door_process = d;
    d->cfg = cfg;
    d->http = http;
    size_t held = sizeof(door_conn) - offsetof(door_conn, io);
    d->conn_size = offsetof(door_conn, io) + (conn_extra > held ? conn_extra : held);
    d->epfd = d->timer_fd = d->wake_fd = -1;
    d->main = (door_listener){.tag = TAG_LISTENER, .fd = -1, .tls = cfg->secure, .d = d};
    d->redirect = (door_listener){.tag = TAG_LISTENER, .fd = -1, .redirect = 1, .d = d};
    d->timer_tag = TAG_TIMERFD;
    d->wake_tag = TAG_WAKE;
    d->wants_tail = &d->wants;
    d->idle_wants_tail = &d->idle_wants;
    d->queued_tail = &d->queued;
    /* Requests with libmicrohttpd at once: each holds one of its threads.
     * Far below its connection limit (http.c), whose overflow path in the
     * libmicrohttpd this was built on deadlocks the server for good. */
    d->bridges_max = 256;
    d->queued_max = 4096;
    d->m_relayed = metrics_counter("broker_door_relayed_total",
                                   "requests the front door relayed to the request/response server");
    d->m_relay_refused = metrics_counter("broker_door_relay_refused_total",
                                         "requests refused (503) while every request/response slot was busy");
    d->m_tls_failed = metrics_counter("broker_tls_handshake_failures_total", "TLS handshakes that failed");
    d->m_refused_connections = metrics_counter("broker_limit_refused_total{limit=\"connections\"}",
                                               "connections and streams refused by a limit flag, by limit");
    d->m_refused_per_address = metrics_counter("broker_limit_refused_total{limit=\"connections_per_address\"}",
                                               "connections and streams refused by a limit flag, by limit");
    if (cfg->secure && (d->tls = door_tls_new(cfg)) == NULL)
        goto fail;
    if (cfg->max_connections_per_ip > 0) {
        struct rlimit rl;
        d->fd_addr_cap = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur
                                                                                            : 65536;
        d->fd_addr = calloc(d->fd_addr_cap, sizeof *d->fd_addr);
        d->conns_by_address = countmap_new();
        if (d->fd_addr == NULL || d->conns_by_address == NULL)
            goto fail;
    }
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    d->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct itimerspec tick = {.it_interval = {0, TICK_MS * 1000000L}, .it_value = {0, TICK_MS * 1000000L}};
    if (d->epfd < 0 || d->timer_fd < 0 || d->wake_fd < 0 || timerfd_settime(d->timer_fd, 0, &tick, NULL) != 0 ||
        door_watch_fd(d, d->timer_fd, EPOLLIN, &d->timer_tag) != 0 ||
        door_watch_fd(d, d->wake_fd, EPOLLIN, &d->wake_tag) != 0) {
        log_error("door: cannot set up the event loop: %s", strerror(errno));
        goto fail;
    }
    if ((d->main.fd = listen_on(cfg->bind, cfg->port, reuse_port)) < 0 ||
        door_watch_fd(d, d->main.fd, EPOLLIN, &d->main) != 0)
        goto fail;
    long rport = redirect_port(cfg);
    if (rport > 0 && ((d->redirect.fd = listen_on(cfg->bind, rport, reuse_port)) < 0 ||
                      door_watch_fd(d, d->redirect.fd, EPOLLIN, &d->redirect) != 0))
        goto fail;
    return d;
fail:
    door_free(d);
    return NULL;
}

/* ---- plugging in ------------------------------------------------------- */

int door_route_add(door *d, const char *method, const char *path, int prefix, door_route_fn fn, void *arg)
{
    if (d->nroutes == DOOR_MAX_ROUTES)
        return -1;
    d->routes[d->nroutes++] = (door_route){.method = method, .path = path, .prefix = prefix, .fn = fn, .arg = arg};
    return 0;
}

int door_watch(door *d, int fd, void (*fn)(void *arg), void *arg)
{
    if (d->nwatches == DOOR_MAX_WATCHES)
        return -1;
    door_watch_entry *w = &d->watches[d->nwatches];
    *w = (door_watch_entry){.tag = TAG_WATCH, .fd = fd, .fn = fn, .arg = arg};
    if (door_watch_fd(d, fd, EPOLLIN, w) != 0)
        return -1;
    d->nwatches++;
    return 0;
}

int door_timer_add(door *d, int64_t period_ms, void (*fn)(void *arg), void *arg)
{
    if (d->ntimers == DOOR_MAX_TIMERS)
        return -1;
    d->timers[d->ntimers++] = (door_timer){.period_ms = period_ms, .due_ms = door_now_ms() + period_ms,
                                           .fn = fn, .arg = arg};
    return 0;
}

int door_turn_hook_add(door *d, int (*fn)(void *arg), void *arg)
{
    if (d->nhooks == DOOR_MAX_HOOKS)
        return -1;
    d->hooks[d->nhooks++] = (door_hook){.fn = fn, .arg = arg};
    return 0;
}

int door_on_shutdown(door *d, void (*stop)(void *arg), void (*release)(void *arg), void *arg)
{
    if (d->nshutdown == DOOR_MAX_SHUTDOWN)
        return -1;
    d->shutdown[d->nshutdown].stop = stop;
    d->shutdown[d->nshutdown].release = release;
    d->shutdown[d->nshutdown].arg = arg;
    d->nshutdown++;
    return 0;
}

void door_wake(door *d)
{
    uint64_t one = 1;
    ssize_t w = write(d->wake_fd, &one, sizeof one);
    (void)w;
}

/* ---- draining ---------------------------------------------------------- */

int door_on_drain(door *d, void (*fn)(void *arg, int64_t deadline_ms), void *arg)
{
    if (d->ndrains == DOOR_MAX_DRAINS)
        return -1;
    d->drains[d->ndrains].fn = fn;
    d->drains[d->ndrains].arg = arg;
    d->ndrains++;
    return 0;
}

int door_drain(door *d, int64_t window_ms)
{
    int64_t deadline = door_now_ms() + (window_ms > 0 ? window_ms : 0);
    int64_t none = 0;
    if (deadline == 0) /* 0 means "not asked" */
        deadline = 1;
    atomic_compare_exchange_strong(&d->drain_deadline_ms, &none, deadline);
    if (d->ndrains == 0)
        return 0;
    door_wake(d);
    return 1;
}

int door_draining(const door *d)
{
    return atomic_load(&d->drain_deadline_ms) != 0;
}

int door_drained(const door *d)
{
    return atomic_load(&d->drained);
}

/* On the loop's thread, the turn after door_drain(): the drain functions. */
static void drain_start(door *d)
{
    int64_t deadline = atomic_load(&d->drain_deadline_ms);
    if (d->drain_started || deadline == 0)
        return;
    d->drain_started = 1;
    for (size_t i = 0; i < d->ndrains; i++)
        d->drains[i].fn(d->drains[i].arg, deadline);
}

/* Whether anything holds the drain: a connection a handler owns (a stream,
 * until its service closes it), or a request between its first byte and its
 * answer's last.  Walks the door's connections: once a tick, while draining. */
static int drain_pending(const door *d)
{
    size_t listed = 0;
    for (const door_conn *c = d->conns; c; c = c->next) {
        listed++;
        if (c->closing)
            continue;
        switch (c->state) {
        case CONN_HANDSHAKE:
        case CONN_LINGER:
            break; /* no request yet, or answered */
        case CONN_READING:
            if (c->io != NULL && (c->io->in_len > 0 || c->io->out != NULL))
                return 1; /* part of a request came, or an answer is still going out */
            break;
        default:
            return 1;
        }
    }
    return d->nconns > listed; /* the others are their handlers' */
}

/* ---- connections ------------------------------------------------------- */

void *door_conn_data(door_conn *c)
{
    return &c->io;
}

door_conn *door_conn_of(void *data)
{
    return (door_conn *)((char *)data - offsetof(door_conn, io));
}

static const door_conn_ops *conn_ops(const door_conn *c)
{
    return conn_door(c)->owners[c->owner - 1];
}

static void list_add(door *d, door_conn *c)
{
    c->prev = NULL;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
}

void door_conn_unlist(door_conn *c)
{
    door *d = conn_door(c);
    if (c->prev)
        c->prev->next = c->next;
    else if (d->conns == c)
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static uint32_t address_key(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr | 1u; /* never 0: 0 means "not counted" */
    if (ss->ss_family == AF_INET6) { /* folded to 32 bits: two addresses may share a count */
        const uint32_t *w = (const uint32_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        return (w[0] ^ w[1] ^ w[2] ^ w[3]) | 1u;
    }
    return 0;
}

static void limits_release(door *d, int fd)
{
    if (d->fd_addr == NULL || fd < 0 || (size_t)fd >= d->fd_addr_cap || d->fd_addr[fd] == 0)
        return;
    countmap_add(d->conns_by_address, &d->fd_addr[fd], sizeof d->fd_addr[fd], -1);
    d->fd_addr[fd] = 0;
}

/* --max_connections (503) and --max_connections_per_ip (429), answered
 * before the request is read (HTTP lets a server answer early); over TLS,
 * once the handshake is done. */
static const char *limit_message(unsigned status)
{
    return status == 503 ? "the server holds as many connections as it may (--max_connections); retry later"
                         : "too many connections from this address (--max_connections_per_ip)";
}

/* A TLS connection can read no answer before its handshake: it gets it after. */
static void limit_refuse(door_conn *c, int answer, unsigned status)
{
    if (answer)
        door_conn_refuse(c, status, NULL, NULL, limit_message(status));
    else
        c->refusal = status == 503 ? 1 : 2;
}

void door_conn_refuse_pending(door_conn *c)
{
    unsigned status = c->refusal == 1 ? 503 : 429;
    c->refusal = 0;
    door_conn_refuse(c, status, NULL, NULL, limit_message(status));
}

static int limits_admit(door *d, door_conn *c, const struct sockaddr_storage *ss, int answer)
{
    const broker_config *cfg = d->cfg;
    if (cfg->max_connections > 0 && d->nlive > (size_t)cfg->max_connections) {
        atomic_fetch_add(d->m_refused_connections, 1);
        limit_refuse(c, answer, 503);
        return -1;
    }
    if (d->fd_addr == NULL || (size_t)c->fd >= d->fd_addr_cap)
        return 0;
    uint32_t key = address_key(ss);
    if (key == 0)
        return 0;
    if (countmap_get(d->conns_by_address, &key, sizeof key) >= cfg->max_connections_per_ip) {
        atomic_fetch_add(d->m_refused_per_address, 1);
        limit_refuse(c, answer, 429);
        return -1;
    }
    if (countmap_add(d->conns_by_address, &key, sizeof key, 1) > 0)
        d->fd_addr[c->fd] = key;
    return 0;
}

static void io_free(door_conn *c)
{
    if (c->io == NULL)
        return;
    if (c->io->bridge != NULL)
        bridge_close(c);
    free(c->io->in);
    free(c->io->out);
    free(c->io);
    c->io = NULL;
}

void door_conn_idle(door_conn *c)
{
    conn_io *io = c->io;
    if (io == NULL || io->in_len > 0 || io->out != NULL || c->state != CONN_READING)
        return;
    if (io->bridge != NULL) { /* its parked pair keeps the rest */
        free(io->in);
        io->in = NULL;
        io->in_cap = 0;
        return;
    }
    io_free(c);
}

static conn_io *io_get(door_conn *c)
{
    if (c->io == NULL)
        c->io = calloc(1, sizeof *c->io);
    return c->io;
}

static void conn_destroy(door_conn *c)
{
    door *d = conn_door(c);
    if (c->state == CONN_OWNED) {
        if (conn_ops(c)->closed != NULL)
            conn_ops(c)->closed(c, conn_ops(c)->arg);
        c->io = NULL; /* the handler's bytes were there */
    } else {
        door_conn_unlist(c);
    }
    if (c->state != CONN_OWNED)
        bridge_close(c);
    if (c->ssl != NULL) {
        SSL_set_quiet_shutdown(c->ssl, 1);
        SSL_free(c->ssl);
    }
    limits_release(d, c->fd);
    close(c->fd);
    io_free(c);
    d->nconns--;
    free(c);
}

static void accept_all(door_listener *l)
{
    door *d = l->d;
    for (int i = 0; i < 1024; i++) {
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(l->fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("door: cannot accept (%s): pausing accepts for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
                epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->main.fd, NULL);
                if (d->redirect.fd >= 0)
                    epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->redirect.fd, NULL);
                d->accept_paused_until_ms = door_now_ms() + ACCEPT_PAUSE_MS;
            }
            return; /* EAGAIN, or a transient error such as ECONNABORTED */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        door_conn *c = calloc(1, d->conn_size);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->tag = TAG_CONN;
        c->fd = fd;
        c->redirect_port = (uint8_t)l->redirect;
        c->state = CONN_READING;
        c->deadline_ms = door_now_ms() + DOOR_HEAD_TIMEOUT_MS;
        d->nconns++;
        d->nlive++;
        list_add(d, c);
        if (l->tls && (c->ssl = door_tls_accept(d, fd)) == NULL) {
            c->state = CONN_WRITING;
            door_conn_close(c);
            continue;
        }
        if (c->ssl != NULL)
            c->state = CONN_HANDSHAKE;
        if (door_watch_fd(d, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, c) != 0) {
            door_conn_close(c);
            continue;
        }
        if (c->ssl != NULL) {
            limits_admit(d, c, &addr, 0);
            continue;
        }
        limits_admit(d, c, &addr, 1); /* a refused one is answered and closing */
    }
}

/* ---- writing ----------------------------------------------------------- */

void door_want_write(door_conn *c)
{
    door *d = conn_door(c);
    if (c->wants)
        return;
    c->wants = 1;
    c->want_next = NULL;
    *d->wants_tail = c;
    d->wants_tail = &c->want_next;
}

void door_want_write_idle(door_conn *c)
{
    door *d = conn_door(c);
    if (c->wants || c->idle_wants)
        return;
    c->idle_wants = 1;
    c->idle_next = NULL;
    *d->idle_wants_tail = c;
    d->idle_wants_tail = &c->idle_next;
}

static door_conn *wants_pop(door *d)
{
    door_conn *c = d->wants;
    if (c == NULL)
        return NULL;
    d->wants = c->want_next;
    if (d->wants == NULL)
        d->wants_tail = &d->wants;
    c->wants = 0;
    return c;
}

static door_conn *idle_pop(door *d)
{
    door_conn *c = d->idle_wants;
    if (c == NULL)
        return NULL;
    d->idle_wants = c->idle_next;
    if (d->idle_wants == NULL)
        d->idle_wants_tail = &d->idle_wants;
    c->idle_wants = 0;
    return c;
}

ssize_t door_conn_writev(door_conn *c, const struct iovec *iov, int n)
{
    if (c->ssl != NULL)
        return door_tls_writev(c, iov, n);
    for (;;) {
        ssize_t w = writev(c->fd, iov, n);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

ssize_t door_conn_recv(door_conn *c, char *buf, size_t len)
{
    if (c->ssl != NULL)
        return door_tls_recv(c, buf, len);
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -2 : -1;
    }
}

int door_conn_queue(door_conn *c, const char *bytes, size_t len)
{
    conn_io *io = io_get(c);
    if (io == NULL)
        return -1;
    if (io->out_off > 0 && io->out_off == io->out_len)
        io->out_off = io->out_len = 0;
    char *n = realloc(io->out, io->out_len + len);
    if (n == NULL)
        return -1;
    memcpy(n + io->out_len, bytes, len);
    io->out = n;
    io->out_len += len;
    return 0;
}

int door_conn_send(door_conn *c, const char *bytes, size_t len)
{
    if (!door_conn_out_pending(c)) {
        struct iovec iov = {(void *)bytes, len};
        ssize_t w = door_conn_writev(c, &iov, 1);
        if (w < 0)
            return -1;
        bytes += w;
        len -= (size_t)w;
    }
    return len > 0 ? door_conn_queue(c, bytes, len) : 0;
}

int door_conn_out_pending(const door_conn *c)
{
    return c->io != NULL && c->io->out_off < c->io->out_len;
}

int door_conn_flush_out(door_conn *c)
{
    conn_io *io = c->io;
    while (io != NULL && io->out_off < io->out_len) {
        struct iovec iov = {io->out + io->out_off, io->out_len - io->out_off};
        ssize_t w = door_conn_writev(c, &iov, 1);
        if (w < 0) {
            door_conn_close(c);
            return -1;
        }
        if (w == 0)
            return 0; /* EPOLLOUT calls again */
        io->out_off += (size_t)w;
    }
    if (io != NULL && io->out != NULL) {
        free(io->out);
        io->out = NULL;
        io->out_len = io->out_off = 0;
    }
    return 0;
}

/* Reads and drops what a half-closed client still sends; closes at its end. */
static void linger_read(door_conn *c)
{
    char sink[4096];
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n > 0)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            door_conn_close(c);
        return;
    }
}

/* A connection closed after its answer: the client may still be sending
 * (a body the door refused unread).  Closing with those bytes unread would
 * reset the connection, and the client could lose the answer before it
 * reads it; so the door stops writing and drains the rest for a while. */
static void linger(door_conn *c)
{
    io_free(c);
    c->state = CONN_LINGER;
    c->deadline_ms = door_now_ms() + DOOR_LINGER_MS;
    shutdown(c->fd, SHUT_WR);
    linger_read(c);
}

/* The door's own writes: an answer, or relayed bytes. */
static void flush_door_conn(door_conn *c)
{
    if (door_conn_flush_out(c) != 0 || door_conn_out_pending(c))
        return;
    if (c->state == CONN_BRIDGED) {
        bridge_client_drained(c);
    } else if (c->state == CONN_WRITING) {
        if (c->close_after) {
            linger(c);
            return;
        }
        c->state = CONN_READING;
        door_conn_read(c);
    }
}

static void flush_one(door_conn *c)
{
    if (c->closing)
        return;
    if (c->state == CONN_OWNED)
        conn_ops(c)->flush(c, conn_ops(c)->arg);
    else if (c->state != CONN_HANDLER)
        flush_door_conn(c);
}

/* Writes up to DOOR_WRITE_BUDGET connections; the rest wait for the next
 * turn, which then does not sleep.  A wide fan-out written in one go held
 * up every request the door answers behind it.  In slices, the next events arrive while the fan-out goes on,
 * and a subscriber not yet written gets them all in the same write
 * (bench/RESULTS.md, "Write budget"). */
static void flush_wants(door *d)
{
    int budget = DOOR_WRITE_BUDGET;
    door_conn *c;
    while (budget > 0 && (c = wants_pop(d)) != NULL) {
        if (c->closing)
            continue;
        budget--;
        flush_one(c);
    }
    /* Low-priority writes (keep-alives) with what the others left, and a few
     * a turn whatever they left, so a fan-out that never ends cannot starve
     * them. */
    int idle_budget = budget > DOOR_IDLE_WRITE_MIN ? budget : DOOR_IDLE_WRITE_MIN;
    while (idle_budget > 0 && (c = idle_pop(d)) != NULL) {
        if (c->closing || c->wants)
            continue;
        idle_budget--;
        flush_one(c);
    }
}

/* ---- answers ----------------------------------------------------------- */

void door_conn_close(door_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    /* Gone for the limits now, not at the end of the turn: a client that
     * closed and reconnected in one turn must find its slot free. */
    conn_door(c)->nlive--;
    limits_release(conn_door(c), c->fd);
    c->close_next = conn_door(c)->to_close;
    conn_door(c)->to_close = c;
}

int door_conn_closing(const door_conn *c)
{
    return c->closing;
}

void door_conn_answer(door_conn *c, const http_answer *a, int head_only)
{
    size_t len = 0;
    char *bytes = http_answer_write(conn_door(c)->cfg, a, &len);
    if (bytes == NULL) {
        door_conn_refuse(c, 503, a->request_id, NULL, "the server is out of memory; retry");
        return;
    }
    if (head_only)
        len -= a->body_len;
    http_count_status(a->status);
    if (door_conn_queue(c, bytes, len) != 0)
        door_conn_close(c);
    else
        door_conn_release(c);
    free(bytes);
}

void door_conn_refuse(door_conn *c, unsigned status, const char *request_id, const char *extra, const char *message)
{
    char id[HTTP_REQUEST_ID_MAX + 1];
    if (request_id == NULL || !request_id[0]) {
        http_request_id(NULL, 0, id);
        request_id = id;
    }
    log_set_request_id(request_id);
    log_debug("door: %u %s", status, message);
    log_set_request_id(NULL);
    http_count_status(status);
    size_t len = 0;
    char *answer = http_answer_error(conn_door(c)->cfg, status, request_id, extra, 1, message, &len);
    if (c->state == CONN_OWNED) { /* refused before its first byte went out: the door has it back */
        if (conn_ops(c)->closed != NULL)
            conn_ops(c)->closed(c, conn_ops(c)->arg);
        c->io = NULL;
        c->owner = 0;
        list_add(conn_door(c), c);
    }
    c->state = CONN_WRITING;
    c->close_after = 1;
    if (answer == NULL || door_conn_queue(c, answer, len) != 0) {
        free(answer);
        door_conn_close(c);
        return;
    }
    free(answer);
    flush_door_conn(c);
}

/* A request on the --http_port listener: 308 to the same URL on https, so
 * that a browser that typed the bare name gets the secure site. */
static void answer_redirect(door_conn *c, const door_request *req)
{
    const http_head *h = req->head;
    size_t hlen = 0;
    const char *host = http_head_header(req->bytes, h->len, "Host", &hlen);
    size_t name_len = 0;
    while (host != NULL && name_len < hlen && host[name_len] != ':')
        name_len++;
    int ok = host != NULL && name_len > 0 && name_len < 256;
    for (size_t i = 0; ok && i < name_len; i++)
        ok = (host[i] >= 'a' && host[i] <= 'z') || (host[i] >= 'A' && host[i] <= 'Z') ||
             (host[i] >= '0' && host[i] <= '9') || host[i] == '.' || host[i] == '-';
    if (!ok || h->target[0] != '/') {
        door_conn_refuse(c, 400, req->request_id, NULL,
                         "this port redirects to HTTPS and needs a Host header with a host name");
        return;
    }
    char port[16] = "";
    if (conn_door(c)->cfg->port != 443)
        snprintf(port, sizeof port, ":%ld", conn_door(c)->cfg->port);
    char *location = msprintf("Location: https://%.*s%s%.*s\r\n", (int)name_len, host, port, (int)h->target_len,
                              h->target);
    size_t len = 0;
    char *answer = location ? http_answer_error(conn_door(c)->cfg, 308, req->request_id, location, !h->keep_alive,
                                                "this server is served over HTTPS", &len)
                            : NULL;
    o_free(location);
    http_count_status(308);
    c->state = CONN_WRITING;
    if (answer == NULL || door_conn_queue(c, answer, len) != 0) {
        free(answer);
        door_conn_close(c);
        return;
    }
    free(answer);
    door_conn_request_done(c);
}

/* ---- reading requests --------------------------------------------------- */

static const door_route *route_find(const door *d, const http_head *h)
{
    for (size_t i = 0; i < d->nroutes; i++)
        if (http_head_is(h, d->routes[i].method, d->routes[i].path, d->routes[i].prefix))
            return &d->routes[i];
    return NULL;
}

static void dispatch(door_conn *c)
{
    conn_io *io = c->io;
    door_request *req = &io->req;
    req->head = &io->head;
    req->bytes = io->in;
    req->body = io->in + io->head.len;
    req->body_len = io->head.chunked ? 0 : io->req_len - io->head.len;
    size_t id_len = 0;
    const char *id = http_head_header(io->in, io->head.len, "X-Request-Id", &id_len);
    http_request_id(id, id_len, req->request_id);
    if (c->redirect_port) {
        const door_route *r = route_find(conn_door(c), &io->head);
        if (r == NULL || !http_head_is(&io->head, "GET", "/.well-known/acme-challenge/", 1)) {
            if (http_head_is(&io->head, "GET", "/.well-known/acme-challenge/", 1))
                door_conn_refuse(c, 404, req->request_id, NULL, "no such ACME challenge");
            else
                answer_redirect(c, req);
            return;
        }
    }
    const door_route *r = route_find(conn_door(c), &io->head);
    c->state = CONN_HANDLER;
    c->unread = 0;
    if (r != NULL && r->fn(c, req, r->arg))
        return;
    if (c->state == CONN_HANDLER) /* declined */
        bridge_start(c);
}

/* What follows the head: 1 when the request is whole (io->req_len set), 0
 * when more bytes are needed, -1 when it was refused. */
static int frame_body(door_conn *c)
{
    conn_io *io = c->io;
    const http_head *h = &io->head;
    size_t max_body = (size_t)conn_door(c)->cfg->max_body;
    if (h->chunked) {
        size_t end = 0;
        const char *why = NULL;
        int r = http_chunked_scan(&io->chunked, io->in + h->len, io->in_len - h->len, max_body, &end, &why);
        if (r < 0) {
            char msg[96];
            int big = strcmp(why, "request body too large") == 0;
            if (big)
                snprintf(msg, sizeof msg, "request body is larger than %zu bytes (--max_body)", max_body);
            else
                snprintf(msg, sizeof msg, "malformed chunked body: %s", why);
            door_conn_refuse(c, big ? 413 : 400, NULL, NULL, msg);
            return -1;
        }
        if (r == 1)
            io->req_len = h->len + end;
        return r;
    }
    size_t body = h->content_length > 0 ? (size_t)h->content_length : 0;
    if (body > max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body is larger than %zu bytes (--max_body)", max_body);
        door_conn_refuse(c, 413, NULL, NULL, msg);
        return -1;
    }
    if (io->in_len < h->len + body)
        return 0;
    io->req_len = h->len + body;
    return 1;
}

/* Room for `want` more bytes in the request buffer.  It grows to what the
 * request has brought, not to what it may bring: most requests are a few
 * hundred bytes, and every connection goes through here. */
static int in_reserve(conn_io *io, size_t want)
{
    if (io->in_cap - io->in_len >= want)
        return 0;
    size_t ncap = io->in_cap ? io->in_cap : 512;
    while (ncap - io->in_len < want)
        ncap *= 2;
    char *n = realloc(io->in, ncap);
    if (n == NULL)
        return -1;
    if (io->head_done) { /* the parsed head points into the buffer */
        io->head.method = n + (io->head.method - io->in);
        io->head.target = n + (io->head.target - io->in);
    }
    io->in = n;
    io->in_cap = ncap;
    return 0;
}

/* How much more the buffer should take before the current request is framed:
 * a head at most DOOR_HEAD_MAX; a body what its length says (bounded by
 * --max_body); a chunked body in steps. */
static size_t read_want(const door_conn *c)
{
    const conn_io *io = c->io;
    if (!io->head_done)
        return io->in_len < DOOR_HEAD_MAX + 1 ? DOOR_HEAD_MAX + 1 - io->in_len : 0;
    if (io->req_len)
        return 0;
    if (!io->head.chunked)
        return io->head.len + (size_t)io->head.content_length - io->in_len;
    return DOOR_READ_CHUNK;
}

void door_conn_read(door_conn *c)
{
    if (c->closing || c->state != CONN_READING)
        return;
    conn_io *io = io_get(c);
    if (io == NULL) {
        door_conn_close(c);
        return;
    }
    for (;;) {
        /* A blank line before a request is ignored (RFC 9112 §2.2): some
         * clients end a body with an extra CRLF. */
        while (!io->head_done && io->in_len > 0 && (io->in[0] == '\n' || (io->in[0] == '\r' && io->in_len > 1 &&
                                                                       io->in[1] == '\n'))) {
            size_t skip = io->in[0] == '\n' ? 1 : 2;
            memmove(io->in, io->in + skip, io->in_len - skip);
            io->in_len -= skip;
        }
        /* Frame what the buffer holds first: a pipelined request may be whole. */
        if (!io->head_done && io->in_len > 0) {
            const char *why = NULL;
            http_head_result r = http_head_parse(io->in, io->in_len, DOOR_HEAD_MAX, &io->head, &why);
            if (r == HTTP_HEAD_BAD) {
                door_conn_refuse(c, 400, NULL, NULL, why);
                return;
            }
            if (r == HTTP_HEAD_TOO_LARGE) {
                door_conn_refuse(c, 431, NULL, NULL, "request head is larger than 8 KiB");
                return;
            }
            if (r == HTTP_HEAD_OK) {
                io->head_done = 1;
                if (c->served) /* an idle keep-alive's next request: the request deadline starts now */
                    c->deadline_ms = door_now_ms() + DOOR_HEAD_TIMEOUT_MS;
            }
        }
        if (io->head_done && io->req_len == 0) {
            int r = frame_body(c);
            if (r < 0)
                return;
            if (r == 0 && io->head.expect_continue && !io->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                struct iovec iov = {(void *)cont, sizeof cont - 1};
                io->continue_sent = 1;
                if (door_conn_writev(c, &iov, 1) != (ssize_t)(sizeof cont - 1)) {
                    door_conn_close(c);
                    return;
                }
            }
        }
        if (io->req_len > 0) {
            dispatch(c);
            return;
        }
        size_t want = read_want(c);
        if (want == 0 || want > DOOR_READ_CHUNK)
            want = DOOR_READ_CHUNK;
        /* Read into the thread's scratch buffer, then keep what came. */
        static __thread char scratch[DOOR_READ_CHUNK];
        ssize_t n = door_conn_recv(c, scratch, want);
        if (n > 0 && in_reserve(io, (size_t)n) != 0) {
            door_conn_close(c);
            return;
        }
        if (n > 0)
            memcpy(io->in + io->in_len, scratch, (size_t)n);
        if (n == -2) {
            if (io->in_len == 0 && io->out == NULL && c->served)
                door_conn_idle(c); /* an idle keep-alive holds no buffer */
            return;
        }
        if (n <= 0) {
            door_conn_close(c);
            return;
        }
        io->in_len += (size_t)n;
    }
}

void door_conn_request_done(door_conn *c)
{
    conn_io *io = c->io;
    int keep = io->head.keep_alive && !c->close_after;
    size_t rest = io->in_len > io->req_len ? io->in_len - io->req_len : 0;
    if (rest > 0)
        memmove(io->in, io->in + io->req_len, rest);
    io->in_len = rest;
    io->req_len = 0;
    io->head_done = 0;
    io->continue_sent = 0;
    memset(&io->chunked, 0, sizeof io->chunked);
    memset(&io->req, 0, sizeof io->req);
    c->served = 1;
    c->close_after = !keep;
    c->deadline_ms = door_now_ms() + DOOR_IDLE_MS;
    c->state = CONN_WRITING;
    flush_door_conn(c);
}

void door_conn_release(door_conn *c)
{
    if (c->closing)
        return;
    door_conn_request_done(c);
}

void door_conn_pass(door_conn *c)
{
    if (c->closing)
        return;
    c->state = CONN_HANDLER;
    bridge_start(c);
}

int door_conn_own(door_conn *c, const door_conn_ops *ops)
{
    door *d = conn_door(c);
    size_t i = 0;
    while (i < d->nowners && d->owners[i] != ops)
        i++;
    if (i == d->nowners) {
        if (d->nowners == sizeof d->owners / sizeof d->owners[0])
            return -1;
        d->owners[d->nowners++] = ops;
    }
    door_conn_unlist(c);
    io_free(c);
    c->owner = (uint8_t)(i + 1);
    c->state = CONN_OWNED;
    memset(door_conn_data(c), 0, d->conn_size - offsetof(door_conn, io));
    return 0;
}

int door_conn_drain(door_conn *c)
{
    char sink[1024];
    for (int i = 0; i < 16; i++) {
        ssize_t n = door_conn_recv(c, sink, sizeof sink);
        if (n > 0)
            continue;
        return n == -2 ? 0 : -1;
    }
    return 0;
}

int door_conn_peer(const door_conn *c, struct sockaddr_storage *addr)
{
    socklen_t alen = sizeof *addr;
    return getpeername(c->fd, (struct sockaddr *)addr, &alen);
}

void door_conn_client_address(const door_conn *c, const door_request *req, char *out, size_t size)
{
    struct sockaddr_storage peer;
    size_t xff_len = 0;
    const char *xff = http_head_header(req->bytes, req->head->len, "X-Forwarded-For", &xff_len);
    if (door_conn_peer(c, &peer) != 0)
        peer.ss_family = AF_UNSPEC;
    http_client_address_of((const struct sockaddr *)&peer, xff, xff_len, conn_door(c)->cfg, out, size);
}

int door_conn_unread(const door_conn *c)
{
    return c->unread;
}

static void on_conn(door_conn *c, uint32_t events)
{
    if (c->closing)
        return;
    int in = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    switch (c->state) {
    case CONN_HANDSHAKE:
        door_tls_handshake(c);
        break;
    case CONN_READING:
        if (in)
            door_conn_read(c);
        if ((events & EPOLLOUT) && door_conn_out_pending(c))
            door_want_write(c);
        break;
    case CONN_HANDLER:
    case CONN_QUEUED:
        /* Nothing is read meanwhile; its handler looks again once it is done. */
        if (in)
            c->unread = 1;
        break;
    case CONN_BRIDGED:
    case CONN_WRITING:
        if (in)
            c->unread = 1;
        if (events & (EPOLLHUP | EPOLLERR)) {
            door_conn_close(c);
            break;
        }
        if ((events & EPOLLOUT) && door_conn_out_pending(c))
            door_want_write(c);
        break;
    case CONN_LINGER:
        if (in)
            linger_read(c);
        break;
    case CONN_OWNED:
        if (in && conn_ops(c)->readable != NULL)
            conn_ops(c)->readable(c, conn_ops(c)->arg);
        if ((events & (EPOLLHUP | EPOLLERR)) && !c->closing) {
            door_conn_close(c);
            break;
        }
        if (events & EPOLLOUT)
            door_want_write(c);
        break;
    }
}

/* ---- timers ------------------------------------------------------------ */

/* Connections past their deadline: a request that did not arrive in time
 * (408), an idle keep-alive (closed quietly), a handshake that stalled. */
static void expire(door *d, int64_t now)
{
    for (door_conn *c = d->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->deadline_ms >= now)
            continue;
        if (c->state == CONN_HANDSHAKE || c->state == CONN_LINGER) {
            door_conn_close(c);
        } else if (c->state == CONN_READING) {
            if (c->served && (c->io == NULL || c->io->in_len == 0))
                door_conn_close(c);
            else
                door_conn_refuse(c, 408, NULL, NULL, "the request did not arrive in time");
        }
    }
    bridge_expire_queued(d, now);
}

static void on_tick(door *d)
{
    uint64_t expirations;
    ssize_t r = read(d->timer_fd, &expirations, sizeof expirations);
    (void)r;
    int64_t now = door_now_ms();
    for (size_t i = 0; i < d->ntimers; i++) {
        door_timer *t = &d->timers[i];
        if (now + TICK_MS / 2 < t->due_ms)
            continue;
        t->due_ms = now + t->period_ms;
        t->fn(t->arg);
    }
    /* The door's own second: deadlines, certificates, paused accepts. */
    if (now >= d->next_second_ms) {
        d->next_second_ms = now + 1000;
        expire(d, now);
        if (d->tls != NULL)
            door_tls_check_reload(d);
    }
    if (d->drain_started)
        atomic_store(&d->drained, !drain_pending(d));
    if (d->accept_paused_until_ms && now >= d->accept_paused_until_ms) {
        d->accept_paused_until_ms = 0;
        door_watch_fd(d, d->main.fd, EPOLLIN, &d->main);
        if (d->redirect.fd >= 0)
            door_watch_fd(d, d->redirect.fd, EPOLLIN, &d->redirect);
    }
}

/* Frees the connections scheduled for closing, except those still on a
 * write list (it outlives a turn when the budget runs out): they go at the
 * turn that takes them off it.  Nothing the loop dispatches on is freed
 * before this point of a turn (connections here, relay pairs in
 * bridge_reap): an event for it may wait later in the same batch. */
static void close_pending(door *d)
{
    door_conn *later = NULL;
    while (d->to_close != NULL) {
        door_conn *c = d->to_close;
        d->to_close = c->close_next;
        if (c->wants || c->idle_wants) {
            c->close_next = later;
            later = c;
            continue;
        }
        conn_destroy(c);
    }
    d->to_close = later;
    bridge_reap(d);
}

static void *door_main(void *arg)
{
    door *d = arg;
    struct epoll_event events[EPOLL_BATCH];
    while (!atomic_load(&d->stop)) {
        int busy = d->more || d->wants != NULL || d->idle_wants != NULL;
        int n = epoll_wait(d->epfd, events, EPOLL_BATCH, busy ? 0 : 1000);
        if (n < 0 && errno != EINTR) {
            log_error("door: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            switch (*(const door_tag *)p) {
            case TAG_LISTENER:
                accept_all(p);
                break;
            case TAG_TIMERFD:
                on_tick(d);
                break;
            case TAG_WAKE: {
                uint64_t v;
                ssize_t r = read(d->wake_fd, &v, sizeof v);
                (void)r;
                break;
            }
            case TAG_WATCH: {
                door_watch_entry *w = p;
                w->fn(w->arg);
                break;
            }
            case TAG_BRIDGE:
                bridge_event(p, events[i].events);
                break;
            case TAG_CONN:
                on_conn(p, events[i].events);
                break;
            }
        }
        if (!d->drain_started)
            drain_start(d);
        flush_wants(d);
        d->more = 0;
        for (size_t i = 0; i < d->nhooks; i++)
            d->more |= d->hooks[i].fn(d->hooks[i].arg);
        close_pending(d);
    }
    return NULL;
}

int door_start(door *d)
{
    if (pthread_create(&d->thread, NULL, door_main, d) != 0)
        return -1;
    d->thread_started = 1;
    return 0;
}

void door_free(door *d)
{
    if (d == NULL)
        return;
    if (d->thread_started) {
        atomic_store(&d->stop, 1);
        door_wake(d);
        pthread_join(d->thread, NULL);
        d->thread_started = 0;
    }
    for (size_t i = 0; i < d->nshutdown; i++)
        if (d->shutdown[i].stop)
            d->shutdown[i].stop(d->shutdown[i].arg);
    while (wants_pop(d) != NULL || idle_pop(d) != NULL) /* nothing more is written */
        ;
    close_pending(d);
    while (d->conns != NULL) {
        door_conn *c = d->conns;
        if (c->state == CONN_HANDLER) /* its handler is stopped and did not let go: the door frees it */
            c->state = CONN_WRITING;
        conn_destroy(c);
    }
    for (size_t i = 0; i < d->nshutdown; i++)
        if (d->shutdown[i].release)
            d->shutdown[i].release(d->shutdown[i].arg);
    close_pending(d);
    door_tls_free(d->tls);
    countmap_free(d->conns_by_address);
    free(d->fd_addr);
    if (d->main.fd >= 0)
        close(d->main.fd);
    if (d->redirect.fd >= 0)
        close(d->redirect.fd);
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->timer_fd >= 0)
        close(d->timer_fd);
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    if (door_process == d)
        door_process = NULL;
    free(d);
}

void door_log_listening(const door *d, const char *service)
{
    const broker_config *cfg = d->cfg;
    if (d->redirect.fd >= 0)
        log_info("%s: plain HTTP on %s:%ld redirects to https (and serves ACME challenges)", service, cfg->bind,
                 redirect_port(cfg));
    if (cfg->secure)
        log_info("%s: TLS with %s (key %s); SIGHUP or a change of the files reloads them", service, cfg->cert_path,
                 cfg->key_path);
}
