/*
 * stream_engine.c - the stream service's epoll loop.
 *
 * One thread owns every SSE connection of the process.  Each turn of the loop:
 *   1. epoll_wait, then for each ready descriptor: accept new connections,
 *      read request heads (peeking, so that a connection handed to the
 *      request/response server keeps every byte), drain the bus, tick timers,
 *      note writable sockets;
 *   2. write every subscriber that has frames queued (one writev each, all of
 *      its pending frames), so a burst of events costs one syscall per
 *      subscriber rather than one per event;
 *   3. close the subscribers marked for closing.
 * Closing is deferred to step 3 so that no list is changed while it is walked.
 */
#include "stream_internal.h"
#include "authn.h"
#include "clock.h"
#include "log.h"

#include <arpa/inet.h>
#include <linux/sock_diag.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define EPOLL_BATCH 512
#define BUS_BATCH 4096          /* messages per turn before others get a go */
/* Sockets written per turn before the engine looks at its other work again:
 * 1-2 ms of writes here (512 made W2b take 2.4 s instead of 0.8 s).  A
 * fan-out to 10,000 subscribers takes about 100 ms of writes; done in one go,
 * an insert answered by this thread waited behind all of it, so a sender of
 * back-to-back inserts managed ten a second (bench W2b: 10 s for 100 events,
 * against 0.7 s when ulfius answered the inserts on its own threads).  In
 * slices, the next events arrive while the fan-out goes on, and a subscriber
 * not yet written gets them all in the same write. */
#define FLUSH_BUDGET 128
/* Keep-alive writes a turn even when live ones used the budget: ~0.1 ms. */
#define IDLE_FLUSH_MIN 8
#define ACCEPT_PAUSE_MS 200     /* after EMFILE */

int64_t stream_mono_ms(void)
{
    return clock_mono_us() / 1000;
}

int stream_listen(const char *bind_addr, long port, int reuse_port)
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

static const char *engine_ready(broker_runtime *rt, void *arg)
{
    (void)rt;
    stream_engine *e = arg;
    return atomic_load(&e->ready) ? NULL : "the stream service is not connected to the event bus yet";
}

static int watch(stream_engine *e, int fd, uint32_t events, void *tag)
{
    struct epoll_event ev = {.events = events, .data.ptr = tag};
    return epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
}

stream_engine *stream_engine_new(broker_runtime *rt, http_server *http, int listen_fd, const char *bus_endpoints)
{
    stream_engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        close(listen_fd);
        return NULL;
    }
    e->rt = rt;
    e->http = http;
    e->listen_fd = listen_fd;
    e->timer_fd = e->wake_fd = e->epfd = -1;
    e->dirty_tail = &e->dirty;
    e->idle_tail = &e->idle;
    e->listener_tag = WATCH_LISTENER;
    e->bus_tag = WATCH_BUS;
    e->timer_tag = WATCH_TIMER;
    e->wake_tag = WATCH_WAKE;
    e->inserts_tag = WATCH_INSERTS;
    e->auth_tag = WATCH_AUTH;
    e->queue_max = (size_t)rt->cfg.sse_queue_max;
    e->bus_endpoints = bus_endpoints != NULL ? strdup(bus_endpoints) : NULL;
    e->tenant_mask = 1023;
    e->tenants = calloc(e->tenant_mask + 1, sizeof *e->tenants);
    /* The body has no length and no chunked encoding: it ends when the
     * connection does, which HTTP/1.1 says with "Connection: close". */
    char *preamble = msprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                              "Connection: close\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: %s\r\n%s\r\n"
                              "retry: 3000\n\n",
                              rt->cfg.origin, strcmp(rt->cfg.origin, "*") ? "Vary: Origin\r\n" : "");
    e->preamble = preamble != NULL ? sse_frame_text(preamble, strlen(preamble)) : NULL;
    o_free(preamble);
    e->keepalive = sse_frame_text(": keep-alive\n\n", 14);
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct itimerspec tick = {.it_interval = {1, 0}, .it_value = {0, 100 * 1000 * 1000}};
    if ((bus_endpoints != NULL && e->bus_endpoints == NULL) || e->tenants == NULL || e->preamble == NULL ||
        e->keepalive == NULL || e->epfd < 0 || e->timer_fd < 0 || e->wake_fd < 0 ||
        timerfd_settime(e->timer_fd, 0, &tick, NULL) != 0 || watch(e, listen_fd, EPOLLIN, &e->listener_tag) != 0 ||
        watch(e, e->timer_fd, EPOLLIN, &e->timer_tag) != 0 || watch(e, e->wake_fd, EPOLLIN, &e->wake_tag) != 0 ||
        (e->bus_endpoints != NULL && stream_auth_start(e) != 0)) {
        log_error("stream: cannot set up the event loop: %s", strerror(errno));
        stream_engine_free(e);
        return NULL;
    }
    e->m_clients = metrics_gauge("broker_sse_subscribers", "open SSE streams");
    e->m_delivered = metrics_counter("broker_sse_frames_written_total", "SSE frames (events and keep-alives) written");
    e->m_dropped_slow = metrics_counter("broker_sse_slow_dropped_total", "SSE clients disconnected for reading too slowly");
    e->m_gaps = metrics_counter("broker_bus_gaps_filled_total", "sequence gaps on the bus filled from the store");
    e->m_latency = metrics_histogram("broker_delivery_latency_seconds",
                                     "from an insert's stamp (taken before its store write) to its event queued "
                                     "for this process's subscribers");
    e->m_rejected = metrics_counter("broker_sse_rejected_total", "SSE requests answered with an error");
    e->m_handed_off = metrics_counter("broker_engine_handed_off_total",
                                      "connections the stream engine handed to the request/response server");
    e->m_replay_pages = metrics_counter("broker_sse_replay_pages_total",
                                        "pages of Last-Event-ID replays the stream engine read from the store "
                                        "(a replay's first page is read with the credentials, off the engine)");
    if (stream_limits_init(e) != 0) {
        log_error("stream: out of memory for the connection limits");
        stream_engine_free(e);
        return NULL;
    }
    e->next_keepalive_ms = stream_mono_ms() + 1000;
    if (e->bus_endpoints != NULL) { /* an engine without streams needs no bus to be ready */
        rt->ready_check = engine_ready;
        rt->ready_check_arg = e;
    }
    return e;
}

/* ---- connections ----------------------------------------------------- */

static void accept_all(stream_engine *e)
{
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(e->listen_fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("stream: cannot accept (%s): pausing accepts for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
                epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->listen_fd, NULL);
                e->accept_paused_until_ms = stream_mono_ms() + ACCEPT_PAUSE_MS;
            }
            return; /* EAGAIN, or a transient error such as ECONNABORTED */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        stream_client *c = client_new(e, fd);
        if (c == NULL || watch(e, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, c) != 0) {
            if (c) {
                c->fd = -1;
                client_destroy(e, c);
            }
            close(fd);
            continue;
        }
        c->deadline_ms = stream_mono_ms() + HEAD_TIMEOUT_MS;
        c->next = e->heads;
        if (e->heads)
            e->heads->prev = c;
        e->heads = c;
        stream_limits_admit(e, c, &addr); /* a refused one is answered and closing */
    }
}

static void unlink_head(stream_engine *e, stream_client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (e->heads == c)
        e->heads = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

void stream_hand_off(stream_engine *e, stream_client *c)
{
    struct sockaddr_storage addr;
    socklen_t alen = sizeof addr;
    unlink_head(e, c);
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    stream_limits_release(e, c->fd);
    /* Counted before the other server has it: it may answer, and the client
     * read the counter, before this thread runs again. */
    atomic_fetch_add(e->m_handed_off, 1);
    if (getpeername(c->fd, (struct sockaddr *)&addr, &alen) != 0 || e->http == NULL ||
        http_server_adopt(e->http, c->fd, (struct sockaddr *)&addr, alen) != 0) {
        /* MHD closes the socket itself when it refuses it. */
        if (e->http == NULL)
            close(c->fd);
    }
    c->fd = -1;
    client_schedule_close(e, c);
}

/* Whether the bytes waiting on c's socket fill its receive buffer.  The
 * kernel charges a segment's whole memory until every byte of it is read, so
 * the start of a request at the end of a large segment (a client that
 * pipelines much at once) can hold the buffer full by itself: the window
 * stays shut, the rest of the request never comes, and the engine, which
 * reads a request only when it is whole, would wait for it until its head
 * timeout (measured: 2,000 pipelined inserts stalled there for 20 s). */
static int receive_buffer_full(int fd)
{
    uint32_t mem[SK_MEMINFO_VARS] = {0};
    socklen_t len = sizeof mem;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 || len <= SK_MEMINFO_RCVBUF * sizeof mem[0])
        return 0;
    return mem[SK_MEMINFO_RMEM_ALLOC] >= mem[SK_MEMINFO_RCVBUF] / 2;
}

void stream_wait_for_more(stream_engine *e, stream_client *c)
{
    if (receive_buffer_full(c->fd))
        stream_hand_off(e, c); /* it reads all there is, whatever the request */
}

static void start_stream(stream_engine *e, stream_client *c, const char *head, size_t len)
{
    sse_request req;
    const char *why = NULL;
    if (sse_request_parse(head, len, &req, &why) != 0) {
        client_reject(e, c, 400, "Bad Request", why);
        return;
    }
    if (!atomic_load(&e->ready)) {
        client_reject(e, c, 503, "Service Unavailable", "the stream service is not connected to the event bus yet; retry");
        return;
    }
    stream_auth_submit(e, c, &req);
}

/* A connection on the head list with bytes or a hang-up: decide whose its
 * next request is.  It leaves the list unless it waits for more bytes or its
 * request is an insert the engine answers (stream_insert.c). */
void stream_read_head(stream_engine *e, stream_client *c)
{
    char buf[REQUEST_PEEK_MAX];
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        client_schedule_close(e, c);
        return;
    }
    if (n < 0)
        return;
    sse_route route = sse_request_route(buf, (size_t)n);
    if (route == SSE_ROUTE_NEED_MORE) {
        stream_wait_for_more(e, c);
        return;
    }
    if (route == SSE_ROUTE_INSERT) {
        if (e->inserts != NULL) {
            stream_insert_read(e, c, buf, (size_t)n, sizeof buf);
            return;
        }
        route = SSE_ROUTE_OTHER;
    }
    if (route == SSE_ROUTE_SSE && e->bus_endpoints == NULL)
        route = SSE_ROUTE_OTHER; /* no streams here: the other server answers it (404) */
    if (route == SSE_ROUTE_OTHER) {
        stream_hand_off(e, c);
        return;
    }
    if (route == SSE_ROUTE_BAD) {
        unlink_head(e, c);
        client_reject(e, c, 400, "Bad Request", "malformed HTTP request line");
        return;
    }
    size_t hl = sse_request_head_length(buf, (size_t)n);
    if (hl == 0 && (size_t)n < SSE_HEAD_MAX) {
        stream_wait_for_more(e, c); /* for the rest of the head */
        return;
    }
    unlink_head(e, c);
    if (hl == 0 || hl > SSE_HEAD_MAX) {
        client_reject(e, c, 431, "Request Header Fields Too Large", "request head is larger than 8 KiB");
        return;
    }
    if (recv(c->fd, buf, hl, 0) != (ssize_t)hl) { /* consume exactly the head */
        client_schedule_close(e, c);
        return;
    }
    start_stream(e, c, buf, hl);
}

void stream_read_streaming(stream_engine *e, stream_client *c)
{
    char sink[1024];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n > 0)
            continue; /* nothing a client sends on a stream means anything */
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            client_schedule_close(e, c);
        return;
    }
}

static void on_client(stream_engine *e, stream_client *c, uint32_t events)
{
    if (c->closing)
        return;
    if (c->state == CLIENT_HEAD) {
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            stream_read_head(e, c);
        return;
    }
    /* A request with a worker (an insert, a subscriber's credentials): nothing
     * is read, and the connection is not closed under its job; the socket is
     * looked at again once the job is back. */
    if (c->state == CLIENT_INSERTING || c->state == CLIENT_ANSWERING || c->state == CLIENT_CONNECTING)
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            c->unread = 1;
    if (c->state == CLIENT_INSERTING || c->state == CLIENT_CONNECTING)
        return;
    if (events & (EPOLLHUP | EPOLLERR)) {
        client_schedule_close(e, c);
        return;
    }
    /* An answering connection's next request is read once its answer is out. */
    if ((events & (EPOLLIN | EPOLLRDHUP)) && c->state == CLIENT_STREAMING)
        stream_read_streaming(e, c);
    if ((events & EPOLLOUT) && c->qlen > 0)
        client_mark_dirty(e, c);
}

/* ---- bus and timers -------------------------------------------------- */

/* Returns 1 when messages may still be pending (the batch limit was hit). */
static int drain_bus(stream_engine *e)
{
    bus_msg m;
    for (int i = 0; i < BUS_BATCH; i++) {
        int r = bus_sub_recv(e->bus, &m);
        if (r <= 0)
            return 0;
        switch (m.kind) {
        case BUS_EVENT:
            tenant_dispatch(e, &m);
            break;
        case BUS_USER:
            e->user_changes++;
            tenants_close_user(e, m.username, m.username_len);
            break;
        case BUS_CLOCK:
            clock_set_offset_ms(m.clock_offset_ms);
            break;
        case BUS_CERT:
            break;
        }
    }
    return 1;
}

static void on_tick(stream_engine *e)
{
    uint64_t expirations;
    ssize_t r = read(e->timer_fd, &expirations, sizeof expirations);
    (void)r;
    int64_t now = stream_mono_ms();
    for (stream_client *c = e->heads, *next; c; c = next) {
        next = c->next;
        if (c->state != CLIENT_HEAD || c->deadline_ms >= now || c->closing)
            continue;
        char first[16];
        ssize_t n = recv(c->fd, first, sizeof first, MSG_PEEK);
        if (n > 0 && sse_request_route(first, (size_t)n) == SSE_ROUTE_INSERT) {
            stream_hand_off(e, c); /* a slow insert: the other server has its own, longer patience */
        } else if (c->served && n <= 0) {
            client_schedule_close(e, c); /* an idle keep-alive connection, closed quietly */
        } else {
            unlink_head(e, c);
            client_reject(e, c, 408, "Request Timeout", "the request head did not arrive in time");
        }
    }
    if (e->bus != NULL && !atomic_load(&e->ready) && bus_sub_ready(e->bus))
        atomic_store(&e->ready, 1);
    /* Keep-alives go out a slice of the tenants a second (their hash bucket
     * modulo --keepalive), so each stream still gets one every --keepalive
     * seconds, and they are written after the live frames (flush_dirty): the
     * 10,000 of bench W4's 1,000 tenants, written at once every 15 s, held up
     * the live events queued behind them for ~100 ms.  Reach-all p99 of 3-run
     * sets: 6.3-80 ms with that burst, 7.4-11.3 ms sliced and after the live
     * frames, 5.7-9.7 ms with no keep-alives.  Slicing by tenant bucket walks
     * each subscriber once a round (slicing by descriptor walked all of them
     * every second: idle CPU of 19,000 subscribers 1.45% -> 2.3%). */
    unsigned nslices = (unsigned)e->rt->cfg.keepalive;
    for (unsigned late = 0; now + 500 >= e->next_keepalive_ms; late++) { /* due within half a tick */
        if (late == nslices) { /* a stall of a whole round: start the next one now */
            e->next_keepalive_ms = now + 1000;
            break;
        }
        tenants_keepalive(e, e->keepalive_slice, nslices);
        e->keepalive_slice = (e->keepalive_slice + 1) % nslices;
        e->next_keepalive_ms += 1000;
    }
    if (e->accept_paused_until_ms && now >= e->accept_paused_until_ms) {
        e->accept_paused_until_ms = 0;
        watch(e, e->listen_fd, EPOLLIN, &e->listener_tag);
    }
}

/* Writes up to FLUSH_BUDGET dirty sockets; the rest wait for the next turn,
 * which then does not sleep. */
static void flush_dirty(stream_engine *e)
{
    int budget = FLUSH_BUDGET;
    stream_client *c;
    while (budget > 0 && (c = client_dirty_pop(e)) != NULL) {
        if (c->closing)
            continue;
        budget--;
        if (client_flush(e, c) != 0)
            continue;
        if (c->replaying)
            tenant_replay_more(e, c); /* reads more once the queue has room; may mark it dirty again */
        else if (c->state == CLIENT_ANSWERING && c->qlen == 0)
            stream_insert_answered(e, c);
    }
    /* Keep-alives with the budget the dirty ones left, and a few a turn
     * whatever they left, so that a fan-out that never ends cannot starve
     * them (a client that got a live frame since was written as a dirty one). */
    int idle_budget = budget > IDLE_FLUSH_MIN ? budget : IDLE_FLUSH_MIN;
    while (idle_budget > 0 && (c = client_idle_pop(e)) != NULL) {
        if (c->closing || c->dirty || c->qlen == 0)
            continue;
        idle_budget--;
        client_flush(e, c);
    }
    if (e->delivered) {
        atomic_fetch_add(e->m_delivered, (long long)e->delivered);
        e->delivered = 0;
    }
}

/* Frees the clients scheduled for closing, except those still on the flush
 * list (it outlives a turn when the budget runs out): they go at the turn
 * that takes them off it. */
static void close_pending(stream_engine *e)
{
    stream_client *later = NULL;
    while (e->to_close != NULL) {
        stream_client *c = e->to_close;
        e->to_close = c->close_next;
        if (c->dirty || c->idle_listed) {
            c->close_next = later;
            later = c;
            continue;
        }
        client_destroy(e, c);
    }
    e->to_close = later;
}

static void *engine_main(void *arg)
{
    stream_engine *e = arg;
    struct epoll_event events[EPOLL_BATCH];
    /* ZMQ_FD signals only once a read has found the socket empty, so the
     * first turn drains the bus before waiting on it. */
    int bus_pending = e->bus_endpoints != NULL;
    if (bus_pending) {
        e->bus = bus_sub_open(e->bus_endpoints);
        if (e->bus == NULL) {
            log_error("stream: cannot subscribe to the bus at %s", e->bus_endpoints);
            return NULL;
        }
        e->bus_fd = bus_sub_fd(e->bus);
        if (watch(e, e->bus_fd, EPOLLIN, &e->bus_tag) != 0) {
            log_error("stream: cannot watch the bus: %s", strerror(errno));
            return NULL;
        }
        if (bus_sub_ready(e->bus))
            atomic_store(&e->ready, 1);
    }
    while (!atomic_load(&e->stop)) {
        int n = epoll_wait(e->epfd, events, EPOLL_BATCH,
                           bus_pending || e->dirty != NULL || e->idle != NULL ? 0 : 1000);
        if (n < 0 && errno != EINTR) {
            log_error("stream: epoll_wait: %s", strerror(errno));
            break;
        }
        int bus_ready = bus_pending;
        for (int i = 0; i < n; i++) {
            watch_kind kind = *(watch_kind *)events[i].data.ptr;
            switch (kind) {
            case WATCH_LISTENER:
                accept_all(e);
                break;
            case WATCH_BUS:
                bus_ready = 1;
                break;
            case WATCH_TIMER:
                on_tick(e);
                break;
            case WATCH_WAKE:
                break;
            case WATCH_INSERTS:
                stream_inserts_finish(e);
                break;
            case WATCH_AUTH:
                stream_auth_finish(e);
                break;
            case WATCH_CLIENT:
                on_client(e, events[i].data.ptr, events[i].events);
                break;
            }
        }
        /* ZMQ_FD only signals edges: drain whenever it fired, and also after
         * each turn while a batch limit left messages behind. */
        bus_pending = bus_ready ? drain_bus(e) : 0;
        flush_dirty(e);
        /* After the flush: an answered connection's next request (pipelined)
         * is framed there, and must not wait for the next turn. */
        if (e->inserts != NULL)
            stream_inserts_submit(e);
        close_pending(e);
    }
    return NULL;
}

int stream_engine_start(stream_engine *e)
{
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        return -1;
    e->thread_started = 1;
    return 0;
}

void stream_engine_free(stream_engine *e)
{
    if (e == NULL)
        return;
    if (e->thread_started) {
        uint64_t one = 1;
        atomic_store(&e->stop, 1);
        ssize_t w = write(e->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(e->thread, NULL);
    }
    if (e->rt->ready_check_arg == e) {
        e->rt->ready_check = NULL;
        e->rt->ready_check_arg = NULL;
    }
    stream_inserts_stop(e);
    stream_auth_stop(e); /* frees the connections whose check is out */
    while (client_dirty_pop(e) != NULL || client_idle_pop(e) != NULL) /* nothing more is written */
        ;
    close_pending(e);
    while (e->heads)
        client_destroy(e, e->heads);
    tenants_free(e);
    stream_limits_free(e);
    bus_sub_close(e->bus);
    sse_frame_unref(e->preamble);
    sse_frame_unref(e->keepalive);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->timer_fd >= 0)
        close(e->timer_fd);
    if (e->wake_fd >= 0)
        close(e->wake_fd);
    if (e->listen_fd >= 0)
        close(e->listen_fd);
    free(e->bus_endpoints);
    free(e);
}

int stream_serve(broker_runtime *rt, http_server *http, int reuse_port, const char *bus_endpoints, int answer_inserts,
                 const char *name)
{
    int listen_fd = stream_listen(rt->cfg.bind, rt->cfg.port, reuse_port);
    if (listen_fd < 0)
        return -1;
    stream_engine *e = stream_engine_new(rt, http, listen_fd, bus_endpoints); /* owns listen_fd now */
    if (e == NULL)
        return -1;
    if ((answer_inserts && stream_inserts_start(e) != 0) || stream_engine_start(e) != 0) {
        stream_engine_free(e);
        return -1;
    }
    http_server_log_urls(http, name);
    log_info("%s listening on %s:%ld (store: %s, %s%s)", name, rt->cfg.bind, rt->cfg.port, rt->store->ops->name,
             bus_endpoints != NULL ? "bus: " : "no streams", bus_endpoints != NULL ? bus_endpoints : "");
    runtime_wait_for_signal();
    stream_engine_free(e);
    return 0;
}

/* ---- the request/response side of /sse -------------------------------- */

static int sse_redirect(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    (void)ctx;
    /* The other server matches "/sse/" here too (it ignores a trailing
     * slash), but the engine streams only "/sse": a redirect to the same URL
     * would loop. */
    if (strcmp(req->url_path, "/sse") != 0)
        return http_reply_error(resp, 404, "no such endpoint: %s (the event stream is /sse)", req->url_path);
    /* Only reached by a keep-alive connection the request/response server
     * already owns: send the client to a fresh connection. */
    u_map_put(resp->map_header, "Location", req->http_url);
    u_map_put(resp->map_header, "Connection", "close");
    return http_reply_error(resp, 307, "reconnect for the event stream");
}

int stream_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"GET", "/sse", sse_redirect},
        {NULL, NULL, NULL},
    };
    return http_server_add_routes(s, routes, rt);
}
