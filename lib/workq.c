/*
 * workq.c - jobs handed from an epoll loop to a worker thread and back (see
 * workq.h).
 */
#include "workq.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct workq {
    const workq_ops *ops;
    void *arg;
    size_t batch_max;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t work;
    workq_item *todo, **todo_tail; /* submitted, not yet taken */
    workq_item *done, **done_tail; /* for the loop */
    int stop;
    int done_fd;
    pthread_t thread;
    int started;
};

/* Appends the list `jobs` (ending at `last`) to a list.  Lock held. */
static void append(workq_item ***tail, workq_item *jobs, workq_item *last)
{
    **tail = jobs;
    *tail = &last->next;
}

static void *worker_main(void *arg)
{
    workq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (q->todo == NULL && !q->stop)
            pthread_cond_wait(&q->work, &q->lock);
        if (q->stop) /* jobs not started stay with the queue, for workq_free */
            break;
        workq_item *batch = q->todo, *last = batch;
        size_t n = 1;
        while (last->next != NULL && n < q->batch_max) {
            last = last->next;
            n++;
        }
        q->todo = last->next;
        if (q->todo == NULL)
            q->todo_tail = &q->todo;
        last->next = NULL;
        pthread_mutex_unlock(&q->lock);

        q->ops->run(q->arg, batch, n);

        pthread_mutex_lock(&q->lock);
        append(&q->done_tail, batch, last); /* the jobs are the loop's again */
        uint64_t one = 1;
        if (write(q->done_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("workq: cannot signal finished jobs: %s", strerror(errno));
        pthread_mutex_unlock(&q->lock);
        if (q->ops->after != NULL)
            q->ops->after(q->arg);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

workq *workq_new(const workq_ops *ops, void *arg, size_t batch_max)
{
    workq *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->ops = ops;
    q->arg = arg;
    q->batch_max = batch_max > 0 ? batch_max : 1;
    q->todo_tail = &q->todo;
    q->done_tail = &q->done;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->work, NULL);
    q->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->done_fd >= 0 && pthread_create(&q->thread, NULL, worker_main, q) == 0) {
        q->started = 1;
        return q;
    }
    workq_free(q);
    return NULL;
}

int workq_fd(const workq *q)
{
    return q->done_fd;
}

void workq_submit(workq *q, workq_item *jobs)
{
    if (jobs == NULL)
        return;
    workq_item *last = jobs;
    while (last->next != NULL)
        last = last->next;
    pthread_mutex_lock(&q->lock);
    append(&q->todo_tail, jobs, last);
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->lock);
}

workq_item *workq_done(workq *q)
{
    uint64_t count;
    if (read(q->done_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        log_error("workq: cannot read the finished-jobs signal: %s", strerror(errno));
    pthread_mutex_lock(&q->lock);
    workq_item *jobs = q->done;
    q->done = NULL;
    q->done_tail = &q->done;
    pthread_mutex_unlock(&q->lock);
    return jobs;
}

static void free_list(workq *q, workq_item *j)
{
    while (j != NULL) {
        workq_item *next = j->next;
        q->ops->free_job(q->arg, j);
        j = next;
    }
}

void workq_free(workq *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->lock);
    if (q->started)
        pthread_join(q->thread, NULL);
    free_list(q, q->todo);
    free_list(q, q->done);
    if (q->done_fd >= 0)
        close(q->done_fd);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
