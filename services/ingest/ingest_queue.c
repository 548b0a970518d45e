/*
 * ingest_queue.c - the thread that checks, stores and publishes inserts for
 * the stream engine (see ingest.h).
 *
 * The engine thread only frames requests; everything that may wait runs
 * here: the thread takes every job waiting, checks each one's credentials
 * (the JWT and the user's row in the store) and body, stores the good ones in
 * one store call (one transaction, one fsync), has their answers written (the
 * engine's hook, see ingest.h) and publishes them.  While it waits on the
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
    free(job->reply);
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
 * when it does not pass (the request/response server then answers why). */
static const authn_identity *batch_identity(ingest_queue *q, checked_cred *creds, size_t *ncreds,
                                            const char *authorization)
{
    if (authorization == NULL)
        return NULL;
    for (size_t i = 0; i < *ncreds; i++)
        if (strcmp(creds[i].authorization, authorization) == 0)
            return &creds[i].who;
    authn_identity who;
    const char *why = NULL;
    if (authn_check(&q->rt->authn, authorization, NULL, &who, &why) != AUTHN_OK)
        return NULL;
    size_t slot = *ncreds < CREDS_MAX ? (*ncreds)++ : CREDS_MAX - 1; /* full: the newest replaces the last */
    creds[slot] = (checked_cred){.authorization = authorization, .who = who};
    return &creds[slot].who;
}

/* workq run: checks and stores one batch and has the stored ones answered,
 * setting each job's outcome; the stored items wait in q->items for
 * publish_batch().  A job whose check or store fails is handed back
 * unanswered: the request/response server then answers it with the same
 * checks, and its error message. */
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
        jobs[i]->outcome = INGEST_HAND_OFF;
        const authn_identity *who = batch_identity(q, creds, &ncreds, jobs[i]->authorization);
        if (who != NULL && ingest_prepare_as(who, jobs[i]->body, jobs[i]->body_len, &items[good], NULL) == 0)
            of[good++] = i;
    }
    if (good > 0)
        ingest_store(q->rt, items, good);
    for (size_t k = 0; k < good; k++) {
        if (items[k].status == STORE_OK) {
            jobs[of[k]]->outcome = INGEST_STORED;
            jobs[of[k]]->seq = items[k].seq;
            q->answer(jobs[of[k]], q->answer_arg);
        }
    }
    q->stored = good;
}

/* workq after: the batch is answered and back with the engine; now the bus. */
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

/* ---- the engine's side ----------------------------------------------------- */

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
