/*
 * door_bridge.c - requests relayed to the request/response server.
 *
 * A request no route takes goes, whole (the door has read its head and
 * body), to libmicrohttpd over one end of a socket pair given to
 * MHD_add_connection; the answer comes back on the same pair and is written
 * to the client, plain or TLS, byte for byte.  The client's connection stays
 * the door's: its next request may be anything, GET /sse included.
 *
 * A pair is libmicrohttpd's connection, with a thread of its own there: made
 * for each request, it cost a thread's start and end per request, a tenth
 * of the requests a second (bench/RESULTS.md, "Relay pairs").  So after
 * an answer the pair is parked with its client's
 * connection and taken again by that client's next relayed request; it is
 * closed when the client goes elsewhere (a stream), after BRIDGE_IDLE_MS
 * without a request, or when a slot is needed for another client.
 *
 * Why a cap: libmicrohttpd runs a thread per connection, and in the release
 * this was built on (0.9.75) the path MHD_add_connection takes at its
 * connection limit returns without unlocking a mutex, which hangs the server
 * for good.  The door gives it at most bridges_max pairs at once, each
 * request complete before it is given (a slow sender holds no thread); more
 * requests wait in a queue, in order, until a slot is free or their deadline
 * passes (503).
 */
#include "door_internal.h"
#include "http.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RESPONSE_CHUNK 16384
#define BRIDGE_IDLE_MS 5000 /* a parked pair with no request for this long is closed */
#define RELAY_PAUSE_BYTES (256 * 1024) /* relayed bytes the client has not taken: stop reading more */

struct door_bridge {
    door_tag tag; /* TAG_BRIDGE */
    int fd;
    door_conn *c;
    size_t req_sent;
    char *head; /* the answer's head as it arrives */
    size_t head_len, head_cap;
    http_response_head rh;
    int head_done;
    long long body_left;
    int to_eof;  /* an answer without a length: it ends when libmicrohttpd closes */
    int no_body; /* an answer to HEAD */
    int parked;  /* between requests, on the door's list of parked pairs */
    int dead;    /* closed: freed at the end of the turn (bridge_reap) */
    int64_t parked_at;
    door_bridge *park_prev, *park_next; /* that list, oldest first; the dead ones' list after */
};

static void park_unlink(door *d, door_bridge *b)
{
    if (!b->parked)
        return;
    if (b->park_prev)
        b->park_prev->park_next = b->park_next;
    else
        d->parked = b->park_next;
    if (b->park_next)
        b->park_next->park_prev = b->park_prev;
    else
        d->parked_tail = b->park_prev;
    b->park_prev = b->park_next = NULL;
    b->parked = 0;
}

static void park(door *d, door_bridge *b)
{
    b->parked = 1;
    b->parked_at = door_now_ms();
    b->park_next = NULL;
    b->park_prev = d->parked_tail;
    if (d->parked_tail)
        d->parked_tail->park_next = b;
    else
        d->parked = b;
    d->parked_tail = b;
}

static void queue_append(door *d, door_conn *c)
{
    c->io->queue_next = NULL;
    *d->queued_tail = c;
    d->queued_tail = &c->io->queue_next;
    d->nqueued++;
}

static door_conn *queue_pop(door *d)
{
    door_conn *c = d->queued;
    if (c == NULL)
        return NULL;
    d->queued = c->io->queue_next;
    if (d->queued == NULL)
        d->queued_tail = &d->queued;
    d->nqueued--;
    return c;
}

static void queue_remove(door *d, door_conn *c)
{
    door_conn **pp = &d->queued;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->io->queue_next;
    if (*pp == NULL)
        return;
    *pp = c->io->queue_next;
    if (d->queued_tail == &c->io->queue_next)
        d->queued_tail = pp;
    d->nqueued--;
}

/* Closes a pair.  Its memory waits for the end of the turn: an event for it
 * may still be waiting in the batch epoll_wait returned (a parked pair is
 * closed to make room for another client's request, and libmicrohttpd may
 * have spoken on it meanwhile), and that event must find it marked dead,
 * not freed. */
static void bridge_free(door_bridge *b)
{
    door *d = conn_door(b->c);
    park_unlink(d, b);
    close(b->fd); /* libmicrohttpd sees the end of the connection and lets its thread go */
    b->fd = -1;
    b->c->io->bridge = NULL;
    b->c = NULL;
    free(b->head);
    b->head = NULL;
    b->dead = 1;
    b->park_next = d->dead_bridges;
    d->dead_bridges = b;
    d->bridges--;
}

void bridge_reap(door *d)
{
    while (d->dead_bridges != NULL) {
        door_bridge *b = d->dead_bridges;
        d->dead_bridges = b->park_next;
        free(b);
    }
}

static void bridge_pump(door_bridge *b);

static void open_bridge(door_conn *c)
{
    door *d = conn_door(c);
    struct sockaddr_storage addr;
    socklen_t alen = sizeof addr;
    int sv[2];
    door_bridge *b = calloc(1, sizeof *b);
    if (b == NULL || getpeername(c->fd, (struct sockaddr *)&addr, &alen) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        free(b);
        door_conn_refuse(c, 503, c->io->req.request_id, NULL, "the server is out of resources; retry");
        return;
    }
    if (http_server_adopt(d->http, sv[1], (struct sockaddr *)&addr, alen) != 0) {
        close(sv[0]); /* libmicrohttpd closed sv[1] */
        free(b);
        door_conn_refuse(c, 503, c->io->req.request_id, NULL,
                         "the request/response server refused the request; retry");
        return;
    }
    b->tag = TAG_BRIDGE;
    b->fd = sv[0];
    b->c = c;
    b->no_body = http_head_is(&c->io->head, "HEAD", "", 1);
    c->io->bridge = b;
    c->state = CONN_BRIDGED;
    d->bridges++;
    /* Counted before the other server has it: it may answer, and the client
     * read the counter, before this thread runs again. */
    atomic_fetch_add(d->m_relayed, 1);
    if (door_watch_fd(d, b->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, b) != 0) {
        bridge_free(b);
        door_conn_refuse(c, 503, c->io->req.request_id, NULL, "the server is out of resources; retry");
        return;
    }
    bridge_pump(b);
}

/* The client's parked pair takes its next request. */
static void reuse_bridge(door_conn *c)
{
    door_bridge *b = c->io->bridge;
    park_unlink(conn_door(c), b);
    b->req_sent = 0;
    b->head_len = 0;
    b->head_done = 0;
    b->body_left = 0;
    b->to_eof = 0;
    memset(&b->rh, 0, sizeof b->rh);
    b->no_body = http_head_is(&c->io->head, "HEAD", "", 1);
    c->state = CONN_BRIDGED;
    atomic_fetch_add(conn_door(c)->m_relayed, 1);
    bridge_pump(b);
}

/* A slot for a new pair: a free one, or the one parked longest, closed. */
static void close_parked(door_bridge *b)
{
    door_conn *c = b->c;
    bridge_free(b);
    door_conn_idle(c);
}

static int slot_free(door *d)
{
    if (d->bridges < d->bridges_max)
        return 1;
    if (d->parked == NULL)
        return 0;
    close_parked(d->parked);
    return 1;
}

void bridge_start(door_conn *c)
{
    door *d = conn_door(c);
    if (d->http == NULL) {
        door_conn_refuse(c, 404, c->io->req.request_id, NULL, "no such endpoint");
        return;
    }
    if (c->io->bridge != NULL) {
        reuse_bridge(c);
        return;
    }
    if (d->queued == NULL && slot_free(d)) {
        open_bridge(c);
        return;
    }
    if (d->nqueued >= d->queued_max) {
        atomic_fetch_add(d->m_relay_refused, 1);
        door_conn_refuse(c, 503, c->io->req.request_id, "Retry-After: 1\r\n",
                         "the server is busy with as many requests as it takes at once; retry");
        return;
    }
    c->state = CONN_QUEUED;
    c->deadline_ms = door_now_ms() + DOOR_HEAD_TIMEOUT_MS;
    queue_append(d, c);
}

/* A slot is free: the oldest waiting request takes it. */
static void start_queued(door *d)
{
    while (d->queued != NULL && !atomic_load(&d->stop) && slot_free(d)) {
        door_conn *c = queue_pop(d);
        if (c == NULL)
            return;
        if (!c->closing)
            open_bridge(c);
    }
}

void bridge_expire_queued(door *d, int64_t now)
{
    while (d->parked != NULL && d->parked->parked_at + BRIDGE_IDLE_MS < now)
        close_parked(d->parked);
    door_conn *c;
    while ((c = d->queued) != NULL && c->deadline_ms < now) {
        queue_pop(d);
        atomic_fetch_add(d->m_relay_refused, 1);
        c->state = CONN_HANDLER;
        door_conn_refuse(c, 503, c->io->req.request_id, "Retry-After: 1\r\n",
                         "the server is busy with as many requests as it takes at once; retry");
    }
}

/* The answer is all relayed: the client's connection goes on, and the pair
 * is parked for its next request (unless either side is closing). */
static void bridge_done(door_bridge *b)
{
    door_conn *c = b->c;
    door *d = conn_door(c);
    if (b->rh.close || b->to_eof)
        c->close_after = 1;
    if (c->close_after || !c->io->head.keep_alive || d->queued != NULL) {
        bridge_free(b);
        start_queued(d);
    } else {
        park(d, b);
    }
    door_conn_request_done(c);
}

/* libmicrohttpd closed the pair or broke it. */
static void bridge_broken(door_bridge *b)
{
    door_conn *c = b->c;
    door *d = conn_door(c);
    int answered = b->head_done;
    int whole = b->to_eof;
    bridge_free(b);
    if (whole) {
        c->close_after = 1;
        door_conn_request_done(c);
    } else if (!answered) {
        door_conn_refuse(c, 502, c->io->req.request_id, NULL,
                         "the request/response server closed without answering");
    } else {
        door_conn_close(c); /* an answer cut short: the client sees the close */
    }
    start_queued(d);
}

/* Takes answer bytes from libmicrohttpd for the client.  0, 1 when the
 * answer is complete, -1 when it is not HTTP. */
static int take(door_bridge *b, const char *bytes, size_t n)
{
    door_conn *c = b->c;
    while (!b->head_done) {
        if (b->head_len + n > b->head_cap) {
            size_t ncap = (b->head_len + n) * 2;
            char *h = realloc(b->head, ncap);
            if (h == NULL)
                return -1;
            b->head = h;
            b->head_cap = ncap;
        }
        memcpy(b->head + b->head_len, bytes, n);
        b->head_len += n;
        n = 0;
        int r = http_response_head_parse(b->head, b->head_len, &b->rh);
        if (r <= 0)
            return r;
        if (b->rh.status < 200) {
            /* 100 Continue: the door sent its own when it waited for the body. */
            memmove(b->head, b->head + b->rh.len, b->head_len - b->rh.len);
            b->head_len -= b->rh.len;
            continue;
        }
        b->head_done = 1;
        if (b->no_body || b->rh.status == 204 || b->rh.status == 304)
            b->body_left = 0;
        else if (b->rh.content_length >= 0 && !b->rh.chunked)
            b->body_left = b->rh.content_length;
        else
            b->to_eof = 1;
        size_t body = b->head_len - b->rh.len;
        if (!b->to_eof && (long long)body > b->body_left)
            body = (size_t)b->body_left;
        if (door_conn_send(c, b->head, b->rh.len + body) != 0)
            return -1;
        b->body_left -= (long long)body;
        return !b->to_eof && b->body_left == 0;
    }
    if (!b->to_eof && (long long)n > b->body_left)
        n = (size_t)b->body_left;
    if (n > 0 && door_conn_send(c, bytes, n) != 0)
        return -1;
    b->body_left -= (long long)n;
    return !b->to_eof && b->body_left == 0;
}

static void bridge_pump(door_bridge *b)
{
    door_conn *c = b->c;
    conn_io *io = c->io;
    while (b->req_sent < io->req_len) {
        ssize_t w = send(b->fd, io->in + b->req_sent, io->req_len - b->req_sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break; /* EPOLLOUT calls again */
        if (w <= 0) {
            bridge_broken(b);
            return;
        }
        b->req_sent += (size_t)w;
    }
    char buf[RESPONSE_CHUNK];
    for (;;) {
        if (io->out_len - io->out_off > RELAY_PAUSE_BYTES)
            break; /* the client reads slowly: go on once it has taken them (bridge_client_drained) */
        ssize_t n = recv(b->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            bridge_broken(b);
            return;
        }
        int r = take(b, buf, (size_t)n);
        if (r < 0) {
            log_warn("door: the request/response server's answer is not HTTP; closing the connection");
            bridge_free(b);
            door_conn_close(c);
            start_queued(conn_door(c));
            return;
        }
        if (r == 1) {
            bridge_done(b);
            return;
        }
    }
    if (door_conn_out_pending(c))
        door_want_write(c);
}

void bridge_event(door_bridge *b, uint32_t events)
{
    (void)events;
    if (b->dead || b->c->closing)
        return;
    if (b->parked) { /* libmicrohttpd closed an idle pair (its timeout), or spoke out of turn */
        door *d = conn_door(b->c);
        close_parked(b);
        start_queued(d);
        return;
    }
    bridge_pump(b);
}

void bridge_client_drained(door_conn *c)
{
    if (c->io != NULL && c->io->bridge != NULL)
        bridge_pump(c->io->bridge);
}

void bridge_close(door_conn *c)
{
    door *d = conn_door(c);
    if (c->io == NULL)
        return;
    if (c->state == CONN_QUEUED)
        queue_remove(d, c);
    if (c->io->bridge != NULL) {
        bridge_free(c->io->bridge);
        start_queued(d);
    }
}
