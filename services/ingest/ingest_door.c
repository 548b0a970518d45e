/*
 * ingest_door.c - POST /insert answered in the front door.
 *
 * Why: through the request/response server an insert costs two thread
 * hand-offs (its connection thread, the store's group commit) and ulfius's
 * per-request work, and 2 cores could not pass about 12,000 inserts/s however
 * fast the disk (bench/RESULTS.md, W3).  Here the door gives a plain insert
 * (insert_request.c) to this route, which hands it to the ingest queue's
 * thread; that thread checks and stores every waiting insert in one batch
 * (ingest_queue.c) and, the moment the batch is on disk, writes the answers
 * through answer_on_queue() below.
 *
 * The 200, and the refusal of bad credentials or a bad body (400, 401), are
 * written by the one writer of answers (http_answer.h), byte for byte what
 * ulfius writes, their messages worded by the same code
 * (tests/blackbox/test_insert_wire.py).  What the queue cannot answer (the
 * store failed) goes to the request/response server after all
 * (door_conn_pass), and that server's answer is the only one.
 */
#include "ingest.h"
#include "door.h"
#include "http_answer.h"
#include "insert_request.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ingest_door {
    broker_runtime *rt;
    door *door;
    ingest_queue *queue;
    workq_item *todo, **todo_tail; /* taken this turn, for the queue at the turn's end */
    metric_value *m_fast;
} ingest_door;

/* The queue's answer hook, on its thread (see ingest.h): the connection is
 * the route's until the job is back, so the door neither reads nor writes
 * it meanwhile.  Writing here, the moment the batch is on disk, spares each
 * answer a wake-up of the door's thread and a wait there (bench/RESULTS.md,
 * "Insert answers": faster on a real disk, slower on tmpfs; the durable case
 * is the one this path exists for). */
static void answer_on_queue(ingest_job *job, void *arg)
{
    ingest_door *g = arg;
    door_conn *c = job->owner;
    char stored[48];
    http_answer a = {.status = job->status, .request_id = job->request_id, .content_type = "application/json"};
    if (job->status == 200) {
        a.body_len = (size_t)snprintf(stored, sizeof stored, "{\"id\":\"%llu\"}", (unsigned long long)job->seq);
        a.body = stored;
    } else {
        a.body = job->refusal;
        a.body_len = job->refusal_len;
    }
    size_t len = 0;
    char *answer = http_answer_write(&g->rt->cfg, &a, &len);
    if (answer == NULL) {
        job->outcome = INGEST_GONE;
        return;
    }
    /* Counted before it is sent: a client that has its answer finds it in
     * GET /metrics.  A refusal's status was counted when the queue worded it. */
    if (job->status == 200) {
        http_count_status(200);
        atomic_fetch_add(g->m_fast, 1);
    }
    struct iovec iov = {answer, len};
    ssize_t n = door_conn_writev(c, &iov, 1);
    if (n < 0) {
        job->outcome = INGEST_GONE;
    } else if ((size_t)n == len) {
        job->outcome = INGEST_ANSWERED;
    } else if (door_conn_queue(c, answer + n, len - (size_t)n) == 0) {
        job->outcome = INGEST_ANSWERED; /* a sender that does not read: the door writes the rest */
    } else {
        job->outcome = INGEST_GONE;
    }
    free(answer);
}

/* The route: a plain insert is the queue's; anything else (Basic
 * credentials, a chunked body, odd headers) the request/response server's. */
static int insert_route(door_conn *c, const door_request *req, void *arg)
{
    ingest_door *g = arg;
    insert_request ir;
    size_t len = req->head->len + req->body_len;
    if (req->head->chunked ||
        insert_request_parse(req->bytes, len, len, (size_t)g->rt->cfg.max_body, &ir) != INSERT_FAST)
        return 0;
    ingest_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return 0;
    job->owner = c;
    job->authorization = strndup(req->bytes + ir.auth_off, ir.auth_len);
    job->body = malloc(ir.body_len ? ir.body_len : 1);
    job->body_len = ir.body_len;
    memcpy(job->request_id, req->request_id, sizeof job->request_id);
    if (job->authorization == NULL || job->body == NULL) {
        ingest_job_free(job);
        return 0;
    }
    memcpy(job->body, req->bytes + ir.body_off, ir.body_len);
    *g->todo_tail = &job->link;
    g->todo_tail = &job->link.next;
    return 1;
}

/* End of the door's turn: this turn's inserts go to the queue together. */
static int submit(void *arg)
{
    ingest_door *g = arg;
    if (g->todo != NULL) {
        ingest_queue_submit(g->queue, (ingest_job *)g->todo);
        g->todo = NULL;
        g->todo_tail = &g->todo;
    }
    return 0;
}

static void finish(void *arg)
{
    ingest_door *g = arg;
    for (ingest_job *job = ingest_queue_done(g->queue), *next; job != NULL; job = next) {
        next = ingest_job_next(job);
        door_conn *c = job->owner;
        switch (job->outcome) {
        case INGEST_PASS:
            door_conn_pass(c);
            break;
        case INGEST_GONE:
            door_conn_close(c); /* stored; the client is gone before its answer */
            break;
        case INGEST_TO_ANSWER:
        case INGEST_ANSWERED:
            door_conn_release(c);
            break;
        }
        ingest_job_free(job);
    }
}

static void stop(void *arg)
{
    ingest_door *g = arg;
    ingest_queue_free(g->queue); /* before the connections its jobs point to */
    g->queue = NULL;
    for (workq_item *it = g->todo, *next; it != NULL; it = next) { /* their connections go with the door */
        next = it->next;
        ingest_job_free((ingest_job *)it);
    }
    g->todo = NULL;
}

static void release(void *arg)
{
    free(arg);
}

int ingest_attach(door *d, broker_runtime *rt)
{
    ingest_door *g = calloc(1, sizeof *g);
    if (g == NULL)
        return -1;
    g->rt = rt;
    g->door = d;
    g->todo_tail = &g->todo;
    ingest_metrics_init();
    g->queue = ingest_queue_new(rt, answer_on_queue, g);
    g->m_fast = metrics_counter("broker_inserts_fast_total", "inserts answered by the front door's insert path");
    if (g->queue == NULL || door_watch(d, ingest_queue_fd(g->queue), finish, g) != 0 ||
        door_route_add(d, "POST", "/insert", 0, insert_route, g) != 0 || door_turn_hook_add(d, submit, g) != 0 ||
        door_on_shutdown(d, stop, release, g) != 0) {
        log_error("ingest: cannot plug into the front door");
        ingest_queue_free(g->queue);
        free(g);
        return -1;
    }
    return 0;
}
