/*
 * ingest_queue.c - workers that check, store and publish inserts for the
 * stream engine (see ingest.h).
 *
 * The engine thread only frames requests and writes answers; everything that
 * may wait (the store's reads for the credentials, the durable write) runs
 * here.  A worker takes every job waiting, up to BATCH_MAX, and commits the
 * good ones in one store call, so under load one fsync and one thread
 * hand-off serve a whole batch rather than one insert.
 */
#include "ingest.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BATCH_MAX 256
#define WORKERS_MAX 16

struct ingest_queue {
    broker_runtime *rt;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t work;
    ingest_job *todo, **todo_tail;
    ingest_job *done, **done_tail;
    int stop;
    int done_fd; /* eventfd: finished jobs are waiting */
    pthread_t threads[WORKERS_MAX];
    int nthreads;
};

void ingest_job_free(ingest_job *job)
{
    if (job == NULL)
        return;
    free(job->authorization);
    free(job->body);
    free(job);
}

/* Checks, stores and publishes one batch; sets each job's outcome.  A job
 * whose check or store fails is handed back unanswered: the request/response
 * server then answers it with the same checks, and its error message. */
static void run_batch(ingest_queue *q, ingest_job **jobs, size_t n)
{
    ingest_item items[BATCH_MAX];
    size_t of[BATCH_MAX]; /* items[k] is jobs[of[k]] */
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->outcome = INGEST_HAND_OFF;
        if (ingest_prepare(q->rt, jobs[i]->authorization, jobs[i]->body, jobs[i]->body_len, &items[good], NULL) == 0)
            of[good++] = i;
    }
    if (good > 0)
        ingest_commit(q->rt, items, good);
    for (size_t k = 0; k < good; k++) {
        if (items[k].status == STORE_OK) {
            jobs[of[k]]->outcome = INGEST_STORED;
            jobs[of[k]]->seq = items[k].seq;
        }
        ingest_item_clear(&items[k]);
    }
}

static void *worker_main(void *arg)
{
    ingest_queue *q = arg;
    ingest_job *jobs[BATCH_MAX];
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (q->todo == NULL && !q->stop)
            pthread_cond_wait(&q->work, &q->lock);
        if (q->stop) /* jobs not started stay unstored and unanswered */
            break;
        size_t n = 0;
        while (q->todo != NULL && n < BATCH_MAX) {
            jobs[n] = q->todo;
            q->todo = q->todo->next;
            jobs[n++]->next = NULL;
        }
        if (q->todo == NULL)
            q->todo_tail = &q->todo;
        pthread_mutex_unlock(&q->lock);

        run_batch(q, jobs, n);

        pthread_mutex_lock(&q->lock);
        for (size_t i = 0; i < n; i++) {
            *q->done_tail = jobs[i];
            q->done_tail = &jobs[i]->next;
        }
        uint64_t one = 1;
        if (write(q->done_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("ingest: cannot signal finished inserts: %s", strerror(errno));
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

ingest_queue *ingest_queue_new(broker_runtime *rt, int threads)
{
    ingest_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->rt = rt;
    q->todo_tail = &q->todo;
    q->done_tail = &q->done;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->work, NULL);
    q->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->done_fd < 0) {
        ingest_queue_free(q);
        return NULL;
    }
    if (threads > WORKERS_MAX)
        threads = WORKERS_MAX;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
            ingest_queue_free(q);
            return NULL;
        }
        q->nthreads++;
    }
    return q;
}

int ingest_queue_fd(const ingest_queue *q)
{
    return q->done_fd;
}

void ingest_queue_submit(ingest_queue *q, ingest_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&q->lock);
    *q->todo_tail = job;
    q->todo_tail = &job->next;
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->lock);
}

ingest_job *ingest_queue_done(ingest_queue *q)
{
    uint64_t count;
    if (read(q->done_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        log_error("ingest: cannot read the finished-inserts signal: %s", strerror(errno));
    pthread_mutex_lock(&q->lock);
    ingest_job *jobs = q->done;
    q->done = NULL;
    q->done_tail = &q->done;
    pthread_mutex_unlock(&q->lock);
    return jobs;
}

static void free_list(ingest_job *j)
{
    while (j != NULL) {
        ingest_job *next = j->next;
        ingest_job_free(j);
        j = next;
    }
}

void ingest_queue_free(ingest_queue *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    free_list(q->todo);
    free_list(q->done);
    if (q->done_fd >= 0)
        close(q->done_fd);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
