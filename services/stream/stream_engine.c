/*
 * stream_engine.c - GET /sse in the front door: the route, the bus, the
 * keep-alives, and the calls the door makes for a subscriber.
 *
 * Each turn of the door's loop drains the bus (a batch at most, so that
 * writes and requests get their turn), and the door writes every subscriber
 * that has frames queued in the same turn: a burst of events costs one write
 * per subscriber rather than one per event.
 *
 * On SIGTERM the door starts a drain (door_drain, --drain_seconds): new
 * streams are refused with 503 and Retry-After, and every DRAIN_TICK_MS a
 * share of the open streams is closed, each after a "retry:" of its own, so
 * that the last one goes a little before the window ends.  Its clients then
 * come back spread over the window, through the load balancer to other
 * replicas, with Last-Event-ID.
 */
#include "stream_internal.h"
#include "authn.h"
#include "clock.h"
#include "http_answer.h"
#include "http_head.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUS_BATCH 4096 /* messages per turn before others get a go */

/* The drain closes a share of the streams this often. */
#define DRAIN_TICK_MS 100
/* The last streams are closed this long before the window ends (a tenth of
 * the window when that is shorter), so their last bytes are out and the
 * process is gone by the deadline. */
#define DRAIN_RESERVE_MS 1000
/* A drained client's retry: is random in [MIN, MIN + SPREAD) ms.  The closes
 * are already spread evenly over the window; this spreads each tick's batch
 * too, so a batch's clients do not come back in the same instant.  (Random
 * over the rest of the window instead would pile the early clients' returns
 * up near its end.) */
#define DRAIN_RETRY_MIN_MS 1000
#define DRAIN_RETRY_SPREAD_MS 2000

size_t stream_conn_size(void)
{
    return sizeof(stream_client);
}

static const char *engine_ready(broker_runtime *rt, void *arg)
{
    (void)rt;
    stream_engine *e = arg;
    return atomic_load(&e->ready) ? NULL : "the stream service is not connected to the event bus yet";
}

sse_frame *stream_preamble(stream_engine *e)
{
    time_t now = time(NULL);
    if (e->preamble != NULL && e->preamble_second == now)
        return e->preamble;
    /* The body has no length and no chunked encoding: it ends when the
     * connection does, which HTTP/1.1 says with "Connection: close". */
    http_answer a = {.status = 200, .content_type = "text/event-stream", .cache_control = "no-cache",
                     .extra = "X-Accel-Buffering: no\r\n", .streaming = 1, .close = 1};
    size_t len = 0;
    char *head = http_answer_write(&e->rt->cfg, &a, &len);
    static const char retry[] = "retry: 3000\n\n";
    char *bytes = head != NULL ? realloc(head, len + sizeof retry - 1) : NULL;
    if (bytes == NULL) {
        free(head);
        return e->preamble; /* the last one (its Date a little old), or NULL */
    }
    memcpy(bytes + len, retry, sizeof retry - 1);
    sse_frame *f = sse_frame_text(bytes, len + sizeof retry - 1);
    free(bytes);
    if (f == NULL)
        return e->preamble;
    sse_frame_unref(e->preamble);
    e->preamble = f;
    e->preamble_second = now;
    return f;
}

/* splitmix64: the drain's random numbers (no secret in them). */
static uint64_t engine_random(stream_engine *e)
{
    uint64_t z = (e->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double engine_random_unit(stream_engine *e)
{
    return (double)(engine_random(e) >> 11) / 9007199254740992.0;
}

/* The retry: of one drained stream (and, in seconds, the Retry-After of a
 * stream refused while draining). */
static unsigned drain_retry_ms(stream_engine *e)
{
    return DRAIN_RETRY_MIN_MS + (unsigned)(engine_random(e) % DRAIN_RETRY_SPREAD_MS);
}

/* ---- the route --------------------------------------------------------- */

static int route_sse(door_conn *conn, const door_request *req, void *arg)
{
    stream_engine *e = arg;
    if (e->draining) { /* a gateway tries another replica (proxy_next_upstream http_503) */
        stream_refuse(e, conn, 503, "this server is shutting down: connect again (to another server)",
                      (long)(drain_retry_ms(e) + 999) / 1000);
        return 1;
    }
    sse_request sr;
    const char *why = NULL;
    if (sse_request_parse(req->bytes, req->head->len, &sr, &why) != 0) {
        stream_refuse(e, conn, 400, why, 0);
        return 1;
    }
    if (sr.presence && e->presence == NULL) {
        stream_refuse(e, conn, 400, "presence is turned off on this server (--presence=false)", 0);
        return 1;
    }
    stream_filter *filter = NULL;
    char bad[256];
    int parsed = sr.has_events ? stream_filter_parse(sr.events, &filter, bad, sizeof bad) : 0;
    if (parsed != 0) {
        stream_refuse(e, conn, parsed == -1 ? 400 : 503, parsed == -1 ? bad : "out of memory", 0);
        return 1;
    }
    if (!atomic_load(&e->ready)) {
        free(filter);
        stream_refuse(e, conn, 503, "the stream service is not connected to the event bus yet; retry", 0);
        return 1;
    }
    char address[64];
    door_conn_client_address(conn, req, address, sizeof address);
    stream_auth_submit(e, conn, &sr, address, filter);
    return 1;
}

/* GET /presence: the caller's tenant's users online, once its credentials
 * pass (checked off the door's thread, as a stream's are). */
static int route_presence(door_conn *conn, const door_request *req, void *arg)
{
    stream_engine *e = arg;
    if (e->presence == NULL) {
        stream_refuse(e, conn, 404, "presence is turned off on this server (--presence=false)", 0);
        return 1;
    }
    size_t alen = 0;
    const char *auth = http_head_header(req->bytes, req->head->len, "Authorization", &alen);
    char authorization[SSE_TOKEN_MAX + 1] = "";
    if (auth != NULL) {
        if (alen > SSE_TOKEN_MAX) {
            stream_refuse(e, conn, 400, "Authorization header is too long", 0);
            return 1;
        }
        memcpy(authorization, auth, alen);
        authorization[alen] = '\0';
    }
    char address[64];
    door_conn_client_address(conn, req, address, sizeof address);
    stream_auth_submit_presence(e, conn, authorization, address, req->request_id, req->head->keep_alive,
                                http_head_is(req->head, "HEAD", "", 1));
    return 1;
}

void stream_read_streaming(stream_engine *e, stream_client *c)
{
    /* Nothing a client sends on a stream means anything; a hang-up closes it. */
    if (door_conn_drain(client_conn(c)) != 0)
        client_schedule_close(e, c);
}

static void on_readable(door_conn *conn, void *arg)
{
    stream_read_streaming(arg, door_conn_data(conn));
}

static void on_flush(door_conn *conn, void *arg)
{
    stream_engine *e = arg;
    stream_client *c = door_conn_data(conn);
    if (client_flush(e, c) == 0 && c->replaying)
        tenant_replay_more(e, c); /* reads more once the queue has room; may ask to write again */
}

static void on_closed(door_conn *conn, void *arg)
{
    client_release(arg, door_conn_data(conn));
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
        case BUS_PRESENCE:
            presence_bus_message(e, &m);
            break;
        case BUS_CLOCK:
        case BUS_CERT:
            break; /* certd's control messages come through --bus_control (runtime.c) */
        }
    }
    return 1;
}

static void on_bus(void *arg)
{
    stream_engine *e = arg;
    e->bus_pending = 1;
}

/* End of the door's turn: ZMQ_FD only signals edges, so the bus is drained
 * whenever it fired, and again each turn while a batch limit left messages
 * behind.  The frames queued here are written in the next turn's writes. */
static int end_of_turn(void *arg)
{
    stream_engine *e = arg;
    if (e->bus_pending)
        e->bus_pending = drain_bus(e);
    if (e->delivered) {
        atomic_fetch_add(e->m_delivered, (long long)e->delivered);
        e->delivered = 0;
    }
    return e->bus_pending;
}

/* Once a second.  Keep-alives go out a slice of the tenants a second (their
 * hash bucket modulo --keepalive), so each stream still gets one every
 * --keepalive seconds, written after the live frames (door_want_write_idle):
 * all of them at once held up the live events queued behind them
 * (bench/RESULTS.md, "Keep-alive round").  Slicing by tenant bucket walks each
 * subscriber once a round. */
static void on_second(void *arg)
{
    stream_engine *e = arg;
    if (e->bus != NULL && !atomic_load(&e->ready) && bus_sub_ready(e->bus))
        atomic_store(&e->ready, 1);
    unsigned nslices = (unsigned)e->rt->cfg.keepalive;
    tenants_keepalive(e, e->keepalive_slice, nslices);
    e->keepalive_slice = (e->keepalive_slice + 1) % nslices;
}

/* ---- the drain --------------------------------------------------------- */

/* The drain starts (door_drain, on the door's thread): from now on new
 * streams are refused, and on_drain_tick closes the open ones by
 * drain_end_ms. */
static void on_drain(void *arg, int64_t deadline_ms)
{
    stream_engine *e = arg;
    int64_t now = door_now_ms(), window = deadline_ms - now;
    int64_t reserve = window / 10 < DRAIN_RESERVE_MS ? window / 10 : DRAIN_RESERVE_MS;
    e->draining = 1;
    e->drain_last_ms = now;
    e->drain_end_ms = deadline_ms - reserve;
    log_info("stream: draining %lld streams over %lld ms", (long long)atomic_load(e->m_clients),
             (long long)(e->drain_end_ms - now));
}

/* Closes this tick's share of the open streams.  Each tenant loses the same
 * share of its streams (the time since the last tick over what was left of
 * the window then), rounded up or down at random in proportion, so every
 * tenant's clients, a big tenant's as a one-stream tenant's, leave spread
 * over the whole window, and the total rate stays even.  A stream opened
 * meanwhile (its credentials were being checked at the start) is in the
 * next shares; past drain_end_ms every tick closes whatever is left. */
static void on_drain_tick(void *arg)
{
    stream_engine *e = arg;
    if (!e->draining)
        return;
    int64_t now = door_now_ms();
    double share = 1.0;
    if (now < e->drain_end_ms && e->drain_end_ms > e->drain_last_ms)
        share = (double)(now - e->drain_last_ms) / (double)(e->drain_end_ms - e->drain_last_ms);
    e->drain_last_ms = now;
    for (size_t i = 0; i <= e->tenant_mask; i++) {
        for (stream_tenant *t = e->tenants[i]; t; t = t->hnext) {
            size_t open = 0;
            for (stream_client *c = t->clients; c; c = c->next)
                open += !c->draining && !client_closing(c);
            double want = (double)open * share;
            size_t n = (size_t)want;
            if (n < open && engine_random_unit(e) < want - (double)n)
                n++;
            for (stream_client *c = t->clients; c && n > 0; c = c->next) {
                if (c->draining || client_closing(c))
                    continue;
                client_drain(e, c, drain_retry_ms(e));
                n--;
            }
        }
    }
}

/* ---- life ---------------------------------------------------------------- */

static void engine_stop(void *arg)
{
    stream_engine *e = arg;
    atomic_store(&e->stop, 1);
    stream_auth_stop(e); /* closes the connections whose check is out */
    for (size_t i = 0; e->tenants && i <= e->tenant_mask; i++)
        for (stream_tenant *t = e->tenants[i]; t; t = t->hnext)
            for (stream_client *c = t->clients; c; c = c->next)
                client_schedule_close(e, c);
}

static void engine_free(void *arg)
{
    stream_engine *e = arg;
    if (e->rt->ready_check_arg == e) {
        e->rt->ready_check = NULL;
        e->rt->ready_check_arg = NULL;
    }
    tenants_free(e);
    presence_free(e);
    stream_limits_free(e);
    bus_sub_close(e->bus);
    sse_frame_unref(e->preamble);
    sse_frame_unref(e->keepalive);
    free(e->bus_endpoints);
    free(e);
}

stream_engine *stream_attach(door *d, broker_runtime *rt, const char *bus_endpoints)
{
    stream_engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->rt = rt;
    e->door = d;
    e->ops = (door_conn_ops){.flush = on_flush, .readable = on_readable, .closed = on_closed, .arg = e};
    e->queue_max = (size_t)rt->cfg.sse_queue_max;
    e->bus_endpoints = strdup(bus_endpoints);
    e->tenant_mask = 1023;
    e->tenants = calloc(e->tenant_mask + 1, sizeof *e->tenants);
    e->keepalive = sse_frame_text(": keep-alive\n\n", 14);
    e->m_clients = metrics_gauge("broker_sse_subscribers", "open SSE streams");
    e->m_delivered = metrics_counter("broker_sse_frames_written_total", "SSE frames (events and keep-alives) written");
    e->m_dropped_slow = metrics_counter("broker_sse_slow_dropped_total", "SSE clients disconnected for reading too slowly");
    e->m_gaps = metrics_counter("broker_bus_gaps_filled_total", "sequence gaps on the bus filled from the store");
    e->m_latency = metrics_histogram("broker_delivery_latency_seconds",
                                     "from an insert's stamp (taken before its store write) to its event queued "
                                     "for this process's subscribers");
    e->m_rejected = metrics_counter("broker_sse_rejected_total", "SSE requests answered with an error");
    e->m_replay_pages = metrics_counter("broker_sse_replay_pages_total",
                                        "pages of Last-Event-ID replays the stream engine read from the store "
                                        "(a replay's first page is read with the credentials, off the engine)");
    if (e->bus_endpoints == NULL || e->tenants == NULL || e->keepalive == NULL || stream_limits_init(e) != 0) {
        log_error("stream: out of memory");
        engine_free(e);
        return NULL;
    }
    /* Bus forwarders each carry every message: one of them is enough to be
     * ready, and the copies the others bring are dropped by seq. */
    e->bus = bus_sub_open(e->bus_endpoints, rt->cfg.bus_server_key, rt->cfg.bus_forwarders[0] != '\0' ? BUS_SUB_REDUNDANT : 0);
    if (e->bus == NULL) {
        log_error("stream: cannot subscribe to the bus at %s", e->bus_endpoints);
        engine_free(e);
        return NULL;
    }
    e->rng = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
    /* ZMQ_FD signals only once a read has found the socket empty: the first
     * turn drains the bus before waiting on it. */
    e->bus_pending = 1;
    if (bus_sub_ready(e->bus))
        atomic_store(&e->ready, 1);
    if (stream_auth_start(e) != 0 || door_watch(d, bus_sub_fd(e->bus), on_bus, e) != 0 ||
        door_route_add(d, "GET", "/sse", 0, route_sse, e) != 0 || door_route_add(d, "GET", "/presence", 0, route_presence, e) != 0 ||
        door_route_add(d, "HEAD", "/presence", 0, route_presence, e) != 0 || presence_init(e) != 0 ||
        door_timer_add(d, 1000, on_second, e) != 0 ||
        door_turn_hook_add(d, end_of_turn, e) != 0 || door_on_shutdown(d, engine_stop, engine_free, e) != 0) {
        log_error("stream: cannot plug into the front door");
        stream_auth_stop(e);
        engine_free(e);
        return NULL;
    }
    /* The drain on SIGTERM.  Past door_on_shutdown, the door frees the engine
     * when the process gives up. */
    if (door_timer_add(d, DRAIN_TICK_MS, on_drain_tick, e) != 0 || door_on_drain(d, on_drain, e) != 0) {
        log_error("stream: cannot plug the drain into the front door");
        return NULL;
    }
    rt->ready_check = engine_ready;
    rt->ready_check_arg = e;
    return e;
}

/* ---- the request/response side of /sse -------------------------------- */

static int sse_elsewhere(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    (void)ctx;
    /* The front door takes every GET /sse; ulfius matches "/sse/" here too
     * (it ignores a trailing slash), and the stream is only "/sse". */
    return http_reply_error(resp, 404, "no such endpoint: %s (the event stream is /sse)", req->url_path);
}

int stream_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"GET", "/sse", sse_elsewhere},
        {NULL, NULL, NULL},
    };
    static const char *const door_paths[] = {"/presence", NULL}; /* answered in the door */
    return http_server_add_routes(s, routes, rt) == 0 && http_server_add_door_paths(s, door_paths) == 0 ? 0 : -1;
}
