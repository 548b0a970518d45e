/*
 * ingest_queue.c - the thread that checks, stores and publishes inserts for
 * the front door's insert route (see ingest.h).
 *
 * The door's thread only frames requests; everything that may wait runs
 * here: the thread takes every job waiting, checks each one's credentials
 * (the JWT and the user's row in the store) and body, stores the good ones in
 * one store call (one transaction, one fsync), has their answers written (the
 * door route's hook, see ingest.h) and publishes them.  While it waits on the
 * disk the next batch gathers, and the next round takes all of it.
 *
 * One thread, measured on bench W3 (2 cores, 50 connections, one fsync about
 * 430 us; inserts/s and server CPU per insert, three runs each):
 *   one thread that checks and commits            29,300-29,800/s  30 us
 *   two such threads                              20,000-25,300/s  35-43 us
 *   a checker thread feeding a committer thread   22,400-23,800/s  36-37 us
 * Two threads split the batches: one took the jobs early and waited behind
 * the other's commit while later jobs queued for a third round.  A separate
 * checker woke for every few jobs, so its credential checks, one per batch
 * and sender, ran many times per commit.
 */
#include "ingest.h"
#include "log.h"
#include "workq.h"

#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 256 /* jobs per commit */

struct ingest_queue {
    broker_runtime *rt;
    ingest_answer_fn answer;
    void *answer_arg;
    workq *wq;
    /* The worker's: the batch being stored, then published. */
    ingest_item items[BATCH_MAX];
    size_t stored;
};

void ingest_job_free(ingest_job *job)
{
    if (job == NULL)
        return;
    free(job->authorization);
    free(job->body);
    free(job->refusal);
    free(job);
}

/* Distinct credentials checked in one batch.  A batch is every insert that
 * was waiting at one moment, so one check of a credential answers all of the
 * batch's inserts that carry it, as it would had they arrived together; the
 * next batch checks again (a revoked user's inserts stop at once).  Under
 * load most inserts come from few senders, and a check is a JWT verification
 * and a read of the user from the store. */
#define CREDS_MAX 16

typedef struct checked_cred {
    const char *authorization; /* a job's: lives as long as the batch */
    authn_identity who;
} checked_cred;

/* The identity for `authorization`, checking it unless the batch has; NULL
 * when it does not pass, with *result and *why saying why. */
static const authn_identity *batch_identity(ingest_queue *q, checked_cred *creds, size_t *ncreds,
                                            const char *authorization, authn_result *result, const char **why)
{
    for (size_t i = 0; authorization != NULL && i < *ncreds; i++)
        if (strcmp(creds[i].authorization, authorization) == 0)
            return &creds[i].who;
    authn_identity who;
    /* No address: the fast path takes Bearer tokens only (insert_request.h),
     * which no per-address budget counts. */
    *result = authn_check(&q->rt->authn, authorization, NULL, NULL, &who, why);
    if (*result != AUTHN_OK)
        return NULL;
    size_t slot = *ncreds < CREDS_MAX ? (*ncreds)++ : CREDS_MAX - 1; /* full: the newest replaces the last */
    creds[slot] = (checked_cred){.authorization = authorization, .who = who};
    return &creds[slot].who;
}

/* A refusal's answer, worded by the same code as the request/response
 * server's (http_reply_error), for the answer hook.  0, or -1 when out of
 * memory (the job is then handed off, and answered there). */
static int refuse(ingest_job *job, const struct _u_response *resp)
{
    job->refusal = malloc(resp->binary_body_length);
    if (job->refusal == NULL)
        return -1;
    memcpy(job->refusal, resp->binary_body, resp->binary_body_length);
    job->refusal_len = resp->binary_body_length;
    job->status = (unsigned)resp->status;
    return 0;
}

/* Checks one job: 0 with `item` ready for the store; 1 refused, its answer
 * in the job; -1 to be handed off (the store could not check the
 * credentials, or no memory). */
static int check_job(ingest_queue *q, checked_cred *creds, size_t *ncreds, ingest_job *job, ingest_item *item)
{
    authn_result result = AUTHN_OK;
    const char *why = NULL;
    const authn_identity *who = batch_identity(q, creds, ncreds, job->authorization, &result, &why);
    size_t max_event = (size_t)q->rt->cfg.max_event_bytes;
    if (who != NULL && ingest_prepare_as(who, job->body, job->body_len, max_event, item, NULL) == 0)
        return 0;
    if (result == AUTHN_FAULT)
        return -1;
    /* Refused: the same checks once more, worded into an answer (a refusal
     * is rare; the good path words nothing). */
    struct _u_response resp;
    if (ulfius_init_response(&resp) != U_OK)
        return -1;
    log_set_request_id(job->request_id); /* for the refusal's body and any log line */
    if (who == NULL)
        authn_reply_refusal(&resp, result, why);
    else
        ingest_prepare_as(who, job->body, job->body_len, max_event, item, &resp);
    int refused = resp.status >= 400 && resp.status < 500 && resp.binary_body != NULL && refuse(job, &resp) == 0;
    log_set_request_id(NULL);
    ulfius_clean_response(&resp);
    return refused ? 1 : -1;
}

/* workq run: checks and stores one batch and has its answers written (the
 * stored ones' and the refused ones'), setting each job's outcome; the stored
 * items wait in q->items for publish_batch().  A job whose credentials the
 * store could not check, or that the store could not take, is handed back
 * unanswered: the request/response server then answers it, trying again. */
static void run_batch(void *arg, workq_item *list, size_t n)
{
    ingest_queue *q = arg;
    ingest_job *jobs[BATCH_MAX];
    size_t of[BATCH_MAX]; /* items[k] is jobs[of[k]]'s */
    checked_cred creds[CREDS_MAX];
    size_t good = 0, ncreds = 0;
    ingest_item *items = q->items;
    n = 0;
    for (workq_item *it = list; it != NULL && n < BATCH_MAX; it = it->next)
        jobs[n++] = (ingest_job *)it;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->outcome = INGEST_PASS;
        int checked = check_job(q, creds, &ncreds, jobs[i], &items[good]);
        if (checked == 0)
            of[good++] = i;
        else if (checked == 1)
            jobs[i]->outcome = INGEST_TO_ANSWER; /* its refusal is answered below, with the batch */
    }
    if (good > 0)
        ingest_store(q->rt, items, good);
    for (size_t k = 0; k < good; k++) {
        if (items[k].status == STORE_OK) {
            jobs[of[k]]->outcome = INGEST_TO_ANSWER;
            jobs[of[k]]->status = 200;
            jobs[of[k]]->seq = items[k].seq;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->outcome == INGEST_TO_ANSWER)
            q->answer(jobs[i], q->answer_arg);
    q->stored = good;
}

/* workq after: the batch is answered and back with the door; now the bus. */
static void publish_batch(void *arg)
{
    ingest_queue *q = arg;
    ingest_publish(q->rt, q->items, q->stored);
    for (size_t k = 0; k < q->stored; k++)
        ingest_item_clear(&q->items[k]);
    q->stored = 0;
}

static void free_job(void *arg, workq_item *job)
{
    (void)arg;
    ingest_job_free((ingest_job *)job);
}

static const workq_ops ingest_ops = {.run = run_batch, .after = publish_batch, .free_job = free_job};

/* ---- the door's side ------------------------------------------------------- */

ingest_queue *ingest_queue_new(broker_runtime *rt, ingest_answer_fn answer, void *answer_arg)
{
    ingest_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->rt = rt;
    q->answer = answer;
    q->answer_arg = answer_arg;
    q->wq = workq_new(&ingest_ops, q, BATCH_MAX);
    if (q->wq == NULL) {
        free(q);
        return NULL;
    }
    return q;
}

int ingest_queue_fd(const ingest_queue *q)
{
    return workq_fd(q->wq);
}

void ingest_queue_submit(ingest_queue *q, ingest_job *jobs)
{
    workq_submit(q->wq, jobs != NULL ? &jobs->link : NULL);
}

ingest_job *ingest_queue_done(ingest_queue *q)
{
    return (ingest_job *)workq_done(q->wq);
}

void ingest_queue_free(ingest_queue *q)
{
    if (q == NULL)
        return;
    workq_free(q->wq); /* jobs not started stay unstored and unanswered */
    free(q);
}
