/*
 * stream_insert.c - POST /insert answered by the stream engine itself.
 *
 * Why: through the request/response server an insert costs two thread
 * hand-offs (its connection thread, the store's group commit) and ulfius's
 * per-request work; bench/RESULTS.md (W3) measured that path at 115-125 us of
 * CPU per insert, so 2 cores could not pass about 12,000 inserts/s however
 * fast the disk.  Here the engine, which already owns the port and peeks at
 * every request, frames a plain keep-alive insert (insert_request.c) and
 * hands it to the ingest queue's thread, which checks and stores every
 * waiting insert in one batch (services/ingest/ingest_queue.c) and, the
 * moment the batch is on disk, writes the answers through answer_on_queue()
 * below.
 *
 * The request stays unread on its socket (MSG_PEEK) until the answer is
 * known.  The 200, and the refusal of bad credentials or a bad body (400,
 * 401), are written here, byte for byte the answers ulfius writes, their
 * messages worded by the same code (tests/blackbox/test_insert_wire.py): a
 * refusal handed to ulfius would leave the connection with ulfius for good,
 * and a gateway's pooled connection carries many clients' inserts.  What the
 * queue cannot answer (the store failed) is handed to the request/response
 * server with its bytes intact, and that server's answer is the only one.
 *
 * A connection is on the engine's head list the whole time:
 *   CLIENT_HEAD       waiting for (the rest of) its next request
 *   CLIENT_INSERTING  its request is with the ingest queue, which alone touches
 *                     its socket (to consume the request and write the answer)
 *   CLIENT_ANSWERING  what of the answer the socket did not take is queued here;
 *                     once written, back to CLIENT_HEAD
 * and from CLIENT_HEAD the next request may be anything, GET /sse included.
 */
#include "stream_internal.h"
#include "clock.h"
#include "ingest.h"
#include "insert_request.h"
#include "log.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

/* The Date header, as libmicrohttpd writes it (RFC 9110 IMF-fixdate), made
 * once a second by the thread that writes the answers. */
static const char *http_date(void)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static __thread time_t second;
    static __thread char date[40];
    time_t now = time(NULL);
    if (now != second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
                 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        second = now;
    }
    return date;
}

/* A job's answer (o_free it), or NULL: the 200 of a stored insert, or the
 * refusal the queue worded, with ulfius's headers in ulfius's order. */
static char *answer_of(const broker_config *cfg, const ingest_job *job)
{
    char stored[48];
    const char *body = stored;
    int blen;
    if (job->status == 200) {
        blen = snprintf(stored, sizeof stored, "{\"id\":\"%llu\"}", (unsigned long long)job->seq);
    } else {
        body = job->refusal;
        blen = (int)job->refusal_len;
    }
    return msprintf("HTTP/1.1 %u %s\r\nDate: %s\r\nAccess-Control-Allow-Origin: %s\r\n"
                    "Access-Control-Expose-Headers: X-Request-Id\r\n%sCache-Control: no-store\r\nX-Request-Id: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%.*s",
                    job->status, MHD_get_reason_phrase_for(job->status), http_date(), cfg->origin,
                    strcmp(cfg->origin, "*") ? "Vary: Origin\r\n" : "", job->request_id, blen, blen, body);
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

/* The ingest queue's answer hook, on its thread (see ingest.h): the
 * connection is CLIENT_INSERTING, so the engine neither reads nor writes its
 * socket nor frees it until the job is back.  Writing here, the moment the
 * batch is on disk, spares each answer a wake-up of the engine thread and a
 * wait there (330-380 us from stored to answered when the engine wrote them).
 * Bench W3 on this disk, in pairs of runs against the engine writing them:
 * 11 of 14 pairs faster, the last six by 11% on average (29.1k -> 32.4k/s);
 * on tmpfs, where the fsync costs nothing and the 2 cores are the limit,
 * 11% slower (44.6k -> 39.5k/s): the answers then lengthen the thread's
 * round.  The durable case is the one this path exists for. */
static void answer_on_queue(ingest_job *job, void *arg)
{
    stream_engine *e = arg;
    stream_client *c = job->owner;
    char *answer = answer_of(&e->rt->cfg, job);
    if (answer == NULL || consume(c->fd, job->request_len) != 0) {
        o_free(answer);
        job->outcome = INGEST_GONE;
        return;
    }
    /* Counted before it is sent: a client that has its answer finds it in
     * GET /metrics (tests/blackbox/test_insert_wire.py).  A refusal's status
     * was counted when the queue worded it. */
    if (job->status == 200) {
        http_count_status(200);
        atomic_fetch_add(e->m_fast, 1);
    }
    size_t len = strlen(answer);
    ssize_t n;
    do
        n = send(c->fd, answer, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if ((size_t)n == len) {
        job->outcome = INGEST_ANSWERED;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        job->outcome = INGEST_GONE;
    } else { /* a full socket (a sender that does not read): the engine writes the rest */
        size_t sent = n > 0 ? (size_t)n : 0;
        job->reply_len = len - sent;
        job->reply = malloc(job->reply_len);
        if (job->reply != NULL)
            memcpy(job->reply, answer + sent, job->reply_len);
        else
            job->outcome = INGEST_GONE;
    }
    o_free(answer);
}

int stream_inserts_start(stream_engine *e)
{
    e->inserts = ingest_queue_new(e->rt, answer_on_queue, e);
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
    for (workq_item *it = e->inserts_todo, *next; it != NULL; it = next) {
        next = it->next;
        ingest_job_free((ingest_job *)it);
    }
    e->inserts_todo = NULL;
    e->inserts_todo_tail = &e->inserts_todo;
}

void stream_insert_read(stream_engine *e, stream_client *c, const char *buf, size_t len, size_t cap)
{
    insert_request req;
    insert_verdict v = insert_request_parse(buf, len, cap, (size_t)e->rt->cfg.max_body, &req);
    if (v == INSERT_NEED_MORE) {
        stream_wait_for_more(e, c); /* on the head list, its deadline running */
        return;
    }
    ingest_job *job = v == INSERT_FAST ? calloc(1, sizeof *job) : NULL;
    if (job != NULL) {
        job->owner = c;
        job->authorization = strndup(buf + req.auth_off, req.auth_len);
        job->body = malloc(req.body_len);
        job->body_len = req.body_len;
        job->request_len = req.total_len;
        http_request_id(req.id_len ? buf + req.id_off : NULL, req.id_len, job->request_id);
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
    *e->inserts_todo_tail = &job->link;
    e->inserts_todo_tail = &job->link.next;
}

void stream_inserts_submit(stream_engine *e)
{
    if (e->inserts_todo == NULL)
        return;
    ingest_queue_submit(e->inserts, (ingest_job *)e->inserts_todo);
    e->inserts_todo = NULL;
    e->inserts_todo_tail = &e->inserts_todo;
}

void stream_inserts_finish(stream_engine *e)
{
    for (ingest_job *job = ingest_queue_done(e->inserts), *next; job != NULL; job = next) {
        next = ingest_job_next(job);
        stream_client *c = job->owner;
        switch (job->outcome) {
        case INGEST_HAND_OFF:
            stream_hand_off(e, c);
            break;
        case INGEST_GONE:
            client_schedule_close(e, c); /* stored; the client is gone before its answer */
            break;
        case INGEST_ANSWERED:
            stream_insert_answered(e, c);
            break;
        case INGEST_STORED: {
            /* What the socket did not take goes out with this turn's writes. */
            c->state = CLIENT_ANSWERING;
            sse_frame *rest = sse_frame_text(job->reply, job->reply_len);
            if (rest == NULL || client_enqueue(e, c, rest, 0) != 0)
                client_schedule_close(e, c);
            sse_frame_unref(rest);
            break;
        }
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
