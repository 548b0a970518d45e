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

#define WRITEV_MAX 64

void client_init(stream_client *c)
{
    memset(c, 0, sizeof *c);
    c->queue = c->inline_queue;
    c->qcap = CLIENT_INLINE_QUEUE;
    c->state = CLIENT_STARTING;
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
    if (client_closing(c) || c->draining)
        return -1;
    /* An empty queue takes any frame, so one event larger than the bound
     * still goes out to a client that keeps up. */
    if (bounded && c->qbytes > 0 && c->qbytes + f->len > e->queue_max) {
        atomic_fetch_add(e->m_dropped_slow, 1);
        log_info("stream: %s reads too slowly (%zu bytes queued): disconnected", c->username ? c->username : "client",
                 (size_t)c->qbytes);
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
    door_want_write(client_conn(c));
    return 0;
}

int client_enqueue_idle(stream_engine *e, stream_client *c, sse_frame *f)
{
    if (queue_frame(e, c, f, 1) != 0)
        return -1;
    door_want_write_idle(client_conn(c));
    return 0;
}

int client_flush(stream_engine *e, stream_client *c)
{
    while (c->qlen > 0 && !client_closing(c)) {
        struct iovec iov[WRITEV_MAX];
        int n = 0;
        for (uint32_t i = 0; i < c->qlen && n < WRITEV_MAX; i++, n++) {
            sse_frame *f = c->queue[(c->qhead + i) & (c->qcap - 1)];
            size_t off = i == 0 ? c->head_off : 0;
            iov[n].iov_base = f->bytes + off;
            iov[n].iov_len = f->len - off;
        }
        ssize_t w = door_conn_writev(client_conn(c), iov, n);
        if (w < 0) {
            client_schedule_close(e, c);
            return -1;
        }
        if (w == 0)
            return 0; /* EPOLLOUT calls again */
        size_t left = (size_t)w;
        c->qbytes -= (uint32_t)left;
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
    if (c->qlen == 0 && c->draining) /* its retry: went out: the stream ends here */
        client_schedule_close(e, c);
    return client_closing(c) ? -1 : 0;
}

int client_drain(stream_engine *e, stream_client *c, unsigned retry_ms)
{
    char text[32];
    int n = snprintf(text, sizeof text, "retry: %u\n\n", retry_ms);
    sse_frame *f = sse_frame_text(text, (size_t)n);
    if (f == NULL) {
        client_schedule_close(e, c); /* the client retries after its last retry: */
        return -1;
    }
    int rc = client_enqueue(e, c, f, 0);
    sse_frame_unref(f);
    if (rc != 0)
        return -1;
    c->draining = 1;
    /* No more catch-up either: what it has not got, it gets where it resumes. */
    c->replaying = 0;
    return 0;
}

void client_schedule_close(stream_engine *e, stream_client *c)
{
    (void)e;
    door_conn_close(client_conn(c));
}

void client_release(stream_engine *e, stream_client *c)
{
    if (c->state == CLIENT_STREAMING) {
        stream_limits_stream_closed(e, c);
        presence_stream_closed(e, c);
        tenant_unsubscribe(e, c);
        atomic_fetch_sub(e->m_clients, 1);
    }
    client_extra_free(c);
    queue_clear(c);
    free(c->username);
    c->username = NULL;
}

void stream_refuse(stream_engine *e, door_conn *conn, unsigned status, const char *message, long retry_after)
{
    char retry[48] = "";
    if (retry_after > 0)
        snprintf(retry, sizeof retry, "Retry-After: %ld\r\n", retry_after);
    atomic_fetch_add(e->m_rejected, 1);
    /* The refusal gets an id of its own (door_conn_refuse): the head that
     * carried the client's X-Request-Id is gone by the time a credential
     * check answers. */
    door_conn_refuse(conn, status, NULL, retry_after > 0 ? retry : NULL, message);
}

void client_reject(stream_engine *e, stream_client *c, unsigned status, const char *message)
{
    stream_refuse(e, client_conn(c), status, message, 0); /* the door calls client_release first */
}
