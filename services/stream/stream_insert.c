/*
 * stream_insert.c - POST /insert answered by the stream engine itself.
 *
 * Why: through the request/response server an insert costs two thread
 * hand-offs (its connection thread, the store's group commit) and ulfius's
 * per-request work; bench/RESULTS.md (W3) measured that path at 115-125 us of
 * CPU per insert, so 2 cores could not pass about 12,000 inserts/s however
 * fast the disk.  Here the engine, which already owns the port and peeks at
 * every request, frames a plain keep-alive insert (insert_request.c), hands
 * its checks and its durable write to the ingest queue's thread, which
 * store every waiting insert in one batch (services/ingest/ingest_queue.c), and
 * writes the answer when the batch is on disk.
 *
 * The request stays unread on its socket (MSG_PEEK) until the answer is
 * known: a request the ingest queue refuses, for whatever reason, is handed to the
 * request/response server with its bytes intact, and that server's answer,
 * errors included, is the only one there is.  Only the 200 is written here,
 * byte for byte the one ulfius writes (tests/blackbox/test_insert_wire.py).
 *
 * A connection is on the engine's head list the whole time:
 *   CLIENT_HEAD       waiting for (the rest of) its next request
 *   CLIENT_INSERTING  its request is with the ingest queue; its socket is not read
 *   CLIENT_ANSWERING  the answer is queued; once written, back to CLIENT_HEAD
 *                     (the next request may be anything, GET /sse included)
 */
#include "stream_internal.h"
#include "clock.h"
#include "ingest.h"
#include "insert_request.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

/* The Date header, as libmicrohttpd writes it (RFC 9110 IMF-fixdate), made
 * once a second. */
static const char *http_date(stream_engine *e)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != e->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(e->date, sizeof e->date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
                 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        e->date_second = now;
    }
    return e->date;
}

static sse_frame *answer_stored(stream_engine *e, uint64_t seq)
{
    char body[48], buf[512];
    int blen = snprintf(body, sizeof body, "{\"id\":\"%llu\"}", (unsigned long long)seq);
    const broker_config *cfg = &e->rt->cfg;
    int len = snprintf(buf, sizeof buf,
                       "HTTP/1.1 200 OK\r\nDate: %s\r\nAccess-Control-Allow-Origin: %s\r\n%s"
                       "Cache-Control: no-store\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                       http_date(e), cfg->origin, strcmp(cfg->origin, "*") ? "Vary: Origin\r\n" : "", blen, body);
    return (len > 0 && (size_t)len < sizeof buf) ? sse_frame_text(buf, (size_t)len) : NULL;
}

int stream_inserts_start(stream_engine *e)
{
    e->inserts = ingest_queue_new(e->rt);
    if (e->inserts == NULL)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->inserts_tag};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, ingest_queue_fd(e->inserts), &ev) != 0)
        return -1;
    e->inserts_todo_tail = &e->inserts_todo;
    e->m_fast = metrics_counter("broker_inserts_fast_total", "inserts answered by the stream engine's own insert path");
    return 0;
}

void stream_inserts_stop(stream_engine *e)
{
    ingest_queue_free(e->inserts); /* before the connections its jobs point to */
    e->inserts = NULL;
    for (ingest_job *job = e->inserts_todo, *next; job != NULL; job = next) {
        next = job->next;
        ingest_job_free(job);
    }
    e->inserts_todo = NULL;
    e->inserts_todo_tail = &e->inserts_todo;
}

void stream_insert_read(stream_engine *e, stream_client *c, const char *buf, size_t len, size_t cap)
{
    insert_request req;
    insert_verdict v = insert_request_parse(buf, len, cap, (size_t)e->rt->cfg.max_body, &req);
    if (v == INSERT_NEED_MORE)
        return; /* stays on the head list; its deadline still runs */
    ingest_job *job = v == INSERT_FAST ? calloc(1, sizeof *job) : NULL;
    if (job != NULL) {
        job->owner = c;
        job->authorization = strndup(buf + req.auth_off, req.auth_len);
        job->body = malloc(req.body_len);
        job->body_len = req.body_len;
        job->request_len = req.total_len;
    }
    if (job == NULL || job->authorization == NULL || job->body == NULL) {
        ingest_job_free(job);
        stream_hand_off(e, c); /* not ours, or out of memory: the other server answers */
        return;
    }
    memcpy(job->body, buf + req.body_off, req.body_len);
    c->state = CLIENT_INSERTING;
    /* Bytes past this request (a pipelined one) raise no new edge: look again
     * once this one is answered. */
    c->unread = len > req.total_len;
    *e->inserts_todo_tail = job;
    e->inserts_todo_tail = &job->next;
}

void stream_inserts_submit(stream_engine *e)
{
    if (e->inserts_todo == NULL)
        return;
    ingest_queue_submit(e->inserts, e->inserts_todo);
    e->inserts_todo = NULL;
    e->inserts_todo_tail = &e->inserts_todo;
}

/* Consumes exactly the `len` bytes of an answered request. */
static int consume(int fd, size_t len)
{
    char sink[4096];
    while (len > 0) {
        ssize_t n = recv(fd, sink, len < sizeof sink ? len : sizeof sink, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1; /* the bytes were peeked, so they are there unless the connection broke */
        len -= (size_t)n;
    }
    return 0;
}

void stream_inserts_finish(stream_engine *e)
{
    for (ingest_job *job = ingest_queue_done(e->inserts), *next; job != NULL; job = next) {
        next = job->next;
        stream_client *c = job->owner;
        if (job->outcome != INGEST_STORED) {
            stream_hand_off(e, c);
        } else if (consume(c->fd, job->request_len) != 0) {
            client_schedule_close(e, c); /* stored; the client is gone before its answer */
        } else {
            sse_frame *answer = answer_stored(e, job->seq);
            c->state = CLIENT_ANSWERING;
            if (answer == NULL || client_enqueue(e, c, answer, 0) != 0)
                client_schedule_close(e, c);
            sse_frame_unref(answer);
            http_count_status(200);
            atomic_fetch_add(e->m_fast, 1);
            /* Written now, not with this turn's other writes: those may be a
             * fan-out to thousands of subscribers (of these very events), and
             * the sender's next insert would wait behind all of it (bench
             * W2b: 100 ms per insert with 10,000 subscribers).  What the
             * socket does not take goes out with the others. */
            if (!c->closing && client_flush(e, c) == 0 && c->qlen == 0)
                stream_insert_answered(e, c);
        }
        ingest_job_free(job);
    }
}

void stream_insert_answered(stream_engine *e, stream_client *c)
{
    c->state = CLIENT_HEAD;
    c->served = 1;
    c->deadline_ms = stream_mono_ms() + KEEPALIVE_IDLE_MS;
    /* Bytes that came while the insert was out raised an edge, noted in
     * `unread`; without one the socket holds nothing yet, and the next bytes
     * will raise their own (measured: the look found nothing for a third of
     * the inserts of bench W3). */
    if (c->unread) {
        c->unread = 0;
        stream_read_head(e, c);
    }
}
