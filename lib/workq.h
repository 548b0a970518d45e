/*
 * workq.h - jobs handed from an epoll loop to a worker thread and back.
 *
 * The loop submits lists of jobs (one lock and one wake-up per list).  The
 * worker takes every job waiting at once, up to a batch limit, and runs them
 * together; the finished jobs go back on a list that the loop takes when the
 * queue's eventfd is readable.  Whatever may block (a store, Argon2) thus
 * runs off the loop's thread, and a burst costs one round, not one per job.
 *
 * A job embeds a workq_item as its first member.
 */
#ifndef BROKER_WORKQ_H
#define BROKER_WORKQ_H

#include <stddef.h>

typedef struct workq_item {
    struct workq_item *next;
} workq_item;

typedef struct workq_ops {
    /* On the worker: runs a batch of `n` jobs, linked oldest first. */
    void (*run)(void *arg, workq_item *jobs, size_t n);
    /* On the worker, once the batch is back with the loop (NULL: none):
     * work that must not hold up the answers. */
    void (*after)(void *arg);
    /* Frees a job that never came back (workq_free). */
    void (*free_job)(void *arg, workq_item *job);
} workq_ops;

typedef struct workq workq;

/* Starts the worker thread; `ops` must outlive the queue.  NULL on failure. */
workq *workq_new(const workq_ops *ops, void *arg, size_t batch_max);
/* Readable (an eventfd) when finished jobs wait for workq_done(). */
int workq_fd(const workq *q);
/* Queues a list of jobs linked by `next`. */
void workq_submit(workq *q, workq_item *jobs);
/* Takes every finished job, oldest first (NULL when none). */
workq_item *workq_done(workq *q);
/* Stops the worker after the batch in hand; frees, with ops->free_job, the
 * jobs not started and those finished but not taken. */
void workq_free(workq *q);

#endif
