/*
 * stream_engine.c - GET /sse in the front door: the route, the bus, the
 * keep-alives, and the calls the door makes for a subscriber.
 *
 * Each turn of the door's loop drains the bus (a batch at most, so that
 * writes and requests get their turn), and the door writes every subscriber
 * that has frames queued in the same turn: a burst of events costs one write
 * per subscriber rather than one per event.
 */
#include "stream_internal.h"
#include "authn.h"
#include "http_answer.h"
#include "http_head.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUS_BATCH 4096 /* messages per turn before others get a go */

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

/* ---- the route --------------------------------------------------------- */

static int route_sse(door_conn *conn, const door_request *req, void *arg)
{
    stream_engine *e = arg;
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
