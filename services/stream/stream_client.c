/*
 * stream_client.c - one SSE subscriber: its queue of frames and its socket.
 *
 * The queue is a ring of frame pointers that grows by doubling; an idle
 * subscriber holds no ring at all (it is freed when it drains), which keeps
 * an idle connection at the size of struct stream_client in user space.
 */
#include "stream_internal.h"
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define WRITEV_MAX 64

stream_client *client_new(stream_engine *e, int fd)
{
    stream_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->kind = WATCH_CLIENT;
    c->fd = fd;
    c->queue = c->inline_queue;
    c->qcap = CLIENT_INLINE_QUEUE;
    c->state = CLIENT_HEAD;
    e->nclients++;
    return c;
}

/* Back to the inline ring (the queue must be empty). */
static void queue_shrink(stream_client *c)
{
    if (c->queue != c->inline_queue)
        free(c->queue);
    c->queue = c->inline_queue;
    c->qcap = CLIENT_INLINE_QUEUE;
    c->qhead = 0;
}

static void queue_clear(stream_client *c)
{
    for (uint32_t i = 0; i < c->qlen; i++)
        sse_frame_unref(c->queue[(c->qhead + i) & (c->qcap - 1)]);
    c->qlen = c->head_off = 0;
    c->qbytes = 0;
    queue_shrink(c);
}

/* Puts `f` on c's queue; -1 when c is closing or (bounded) reads too slowly. */
static int queue_frame(stream_engine *e, stream_client *c, sse_frame *f, int bounded)
{
    if (c->closing)
        return -1;
    /* An empty queue takes any frame, so one event larger than the bound
     * still goes out to a client that keeps up. */
    if (bounded && c->qbytes > 0 && c->qbytes + f->len > e->queue_max) {
        atomic_fetch_add(e->m_dropped_slow, 1);
        log_info("stream: %s reads too slowly (%zu bytes queued): disconnected", c->username ? c->username : "client",
                 c->qbytes);
        client_schedule_close(e, c);
        return -1;
    }
    if (c->qlen == c->qcap) {
        uint32_t ncap = c->qcap * 2;
        sse_frame **nq = malloc(ncap * sizeof *nq);
        if (nq == NULL) {
            client_schedule_close(e, c);
            return -1;
        }
        for (uint32_t i = 0; i < c->qlen; i++)
            nq[i] = c->queue[(c->qhead + i) & (c->qcap - 1)];
        if (c->queue != c->inline_queue)
            free(c->queue);
        c->queue = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    c->queue[(c->qhead + c->qlen) & (c->qcap - 1)] = sse_frame_ref(f);
    c->qlen++;
    c->qbytes += f->len;
    return 0;
}

int client_enqueue(stream_engine *e, stream_client *c, sse_frame *f, int bounded)
{
    if (queue_frame(e, c, f, bounded) != 0)
        return -1;
    client_mark_dirty(e, c);
    return 0;
}

int client_enqueue_idle(stream_engine *e, stream_client *c, sse_frame *f)
{
    if (queue_frame(e, c, f, 1) != 0)
        return -1;
    if (!c->dirty && !c->idle_listed) {
        c->idle_listed = 1;
        c->idle_next = NULL;
        *e->idle_tail = c;
        e->idle_tail = &c->idle_next;
    }
    return 0;
}

stream_client *client_idle_pop(stream_engine *e)
{
    stream_client *c = e->idle;
    if (c == NULL)
        return NULL;
    e->idle = c->idle_next;
    if (e->idle == NULL)
        e->idle_tail = &e->idle;
    c->idle_listed = 0;
    c->idle_next = NULL;
    return c;
}

void client_mark_dirty(stream_engine *e, stream_client *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->dirty_next = NULL;
    *e->dirty_tail = c;
    e->dirty_tail = &c->dirty_next;
}

stream_client *client_dirty_pop(stream_engine *e)
{
    stream_client *c = e->dirty;
    if (c == NULL)
        return NULL;
    e->dirty = c->dirty_next;
    if (e->dirty == NULL)
        e->dirty_tail = &e->dirty;
    c->dirty = 0;
    c->dirty_next = NULL;
    return c;
}

int client_flush(stream_engine *e, stream_client *c)
{
    while (c->qlen > 0 && !c->closing) {
        struct iovec iov[WRITEV_MAX];
        int n = 0;
        for (uint32_t i = 0; i < c->qlen && n < WRITEV_MAX; i++, n++) {
            sse_frame *f = c->queue[(c->qhead + i) & (c->qcap - 1)];
            size_t off = i == 0 ? c->head_off : 0;
            iov[n].iov_base = f->bytes + off;
            iov[n].iov_len = f->len - off;
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0; /* EPOLLOUT will call again */
            if (errno == EINTR)
                continue;
            client_schedule_close(e, c);
            return -1;
        }
        size_t left = (size_t)w;
        c->qbytes -= left;
        while (left > 0) {
            sse_frame *f = c->queue[c->qhead];
            size_t rest = f->len - c->head_off;
            if (left < rest) {
                c->head_off += (uint32_t)left;
                break;
            }
            left -= rest;
            c->head_off = 0;
            sse_frame_unref(f);
            c->qhead = (c->qhead + 1) & (c->qcap - 1);
            c->qlen--;
            if (c->state == CLIENT_STREAMING)
                e->delivered++;
        }
    }
    if (c->qlen == 0 && c->queue != c->inline_queue)
        queue_shrink(c);
    return c->closing ? -1 : 0;
}

void client_schedule_close(stream_engine *e, stream_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_next = e->to_close;
    e->to_close = c;
}

/* Unlinks from whatever list holds the client and frees it.  Only the close
 * list calls this (and shutdown), never a walk over a tenant. */
void client_destroy(stream_engine *e, stream_client *c)
{
    if (c->state == CLIENT_STREAMING) {
        tenant_snapshot_free(c);
        stream_limits_stream_closed(e, c);
        tenant_unsubscribe(e, c);
        atomic_fetch_sub(e->m_clients, 1);
    } else {
        if (c->prev)
            c->prev->next = c->next;
        else if (e->heads == c)
            e->heads = c->next;
        if (c->next)
            c->next->prev = c->prev;
    }
    if (c->fd >= 0) {
        stream_limits_release(e, c->fd);
        close(c->fd);
    }
    queue_clear(c);
    free(c->username);
    e->nclients--;
    free(c);
}

void client_reject(stream_engine *e, stream_client *c, int status, const char *reason, const char *message)
{
    client_reject_after(e, c, status, reason, message, 0);
}

void client_reject_after(stream_engine *e, stream_client *c, int status, const char *reason, const char *message,
                         long retry_after)
{
    char retry[48] = "";
    if (retry_after > 0)
        snprintf(retry, sizeof retry, "Retry-After: %ld\r\n", retry_after);
    const char *origin = e->rt->cfg.origin;
    /* The refusal of a stream gets an id of its own: the head that carried the
     * client's X-Request-Id is gone by the time a credential check answers. */
    char id[HTTP_REQUEST_ID_MAX + 1];
    http_request_id(NULL, 0, id);
    log_set_request_id(id);
    log_debug("stream refused: %d %s", status, message);
    log_set_request_id(NULL);
    json_t *obj = json_pack("{s:s,s:s}", "error", message, "request_id", id);
    char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    char *answer = msprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                            "Access-Control-Allow-Origin: %s\r\nAccess-Control-Expose-Headers: X-Request-Id\r\n"
                            "%s%sX-Request-Id: %s\r\nConnection: close\r\n\r\n%s",
                            status, reason, body ? strlen(body) : 0, origin,
                            strcmp(origin, "*") ? "Vary: Origin\r\n" : "", retry, id, body ? body : "");
    free(body);
    atomic_fetch_add(e->m_rejected, 1);
    if (answer != NULL) {
        /* A fresh socket's send buffer takes this whole; if not, the client
         * just sees the connection close. */
        ssize_t w = write(c->fd, answer, strlen(answer));
        (void)w;
    }
    o_free(answer);
    client_schedule_close(e, c);
}
