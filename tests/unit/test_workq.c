/*
 * test_workq.c - the hand-off between an epoll loop and a worker thread:
 * every job comes back once, in order, in batches no larger than asked;
 * the eventfd says when; `after` runs once the batch is back; and the jobs
 * left at workq_free are freed, not lost.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "workq.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct job {
    workq_item link;
    int n;     /* its place in the order of submission */
    int batch; /* the round that ran it */
} job;

typedef struct state {
    atomic_int rounds, afters, freed, largest;
    atomic_int gate; /* while 1, the worker waits in run (to make jobs queue up) */
    workq *q;
} state;

static void run(void *arg, workq_item *jobs, size_t n)
{
    state *s = arg;
    while (atomic_load(&s->gate))
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    int round = atomic_fetch_add(&s->rounds, 1) + 1;
    size_t seen = 0;
    for (workq_item *it = jobs; it != NULL; it = it->next, seen++)
        ((job *)it)->batch = round;
    CHECK_INT(seen, n);
    if ((int)n > atomic_load(&s->largest))
        atomic_store(&s->largest, (int)n);
}

static void after(void *arg)
{
    state *s = arg;
    atomic_fetch_add(&s->afters, 1);
}

static void free_job(void *arg, workq_item *it)
{
    state *s = arg;
    atomic_fetch_add(&s->freed, 1);
    free(it);
}

static const workq_ops ops = {.run = run, .after = after, .free_job = free_job};

static job *new_job(int n)
{
    job *j = calloc(1, sizeof *j);
    j->n = n;
    return j;
}

/* Jobs from..to-1, linked in that order. */
static workq_item *new_jobs(int from, int to)
{
    workq_item *list = NULL, **tail = &list;
    for (int i = from; i < to; i++) {
        *tail = &new_job(i)->link;
        tail = &(*tail)->next;
    }
    return list;
}

/* Waits (5 s at most) for the eventfd, then takes what is done. */
static workq_item *wait_done(workq *q)
{
    struct pollfd p = {.fd = workq_fd(q), .events = POLLIN};
    if (poll(&p, 1, 5000) != 1)
        return NULL;
    return workq_done(q);
}

static void case_every_job_back_once_in_order(void)
{
    state s = {0};
    workq *q = workq_new(&ops, &s, 4);
    CHECK(q != NULL);
    if (q == NULL)
        return;
    /* Held in the first round, 9 more queue up: they must come in rounds of at most 4. */
    atomic_store(&s.gate, 1);
    workq_submit(q, &new_job(0)->link);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    workq_submit(q, new_jobs(1, 10));
    atomic_store(&s.gate, 0);
    int next = 0;
    for (int tries = 0; next < 10 && tries < 20; tries++) {
        for (workq_item *it = wait_done(q), *following; it != NULL; it = following) {
            following = it->next;
            job *j = (job *)it;
            CHECK_INT(j->n, next);
            CHECK(j->batch >= 1);
            next++;
            free(j);
        }
    }
    CHECK_INT(next, 10);
    CHECK(atomic_load(&s.largest) <= 4);
    CHECK(atomic_load(&s.rounds) >= 3); /* 1 + 9 in rounds of at most 4 */
    workq_free(q);
    CHECK_INT(atomic_load(&s.afters), atomic_load(&s.rounds));
    CHECK_INT(atomic_load(&s.freed), 0);
}

static void case_unfinished_jobs_are_freed(void)
{
    state s = {0};
    workq *q = workq_new(&ops, &s, 2);
    CHECK(q != NULL);
    if (q == NULL)
        return;
    atomic_store(&s.gate, 1);
    workq_submit(q, new_jobs(0, 5));
    nanosleep(&(struct timespec){0, 20000000}, NULL); /* the worker holds 2 of them */
    atomic_store(&s.gate, 0);
    /* workq_free lets the round in hand finish; those 2 are done but not
     * taken, the other 3 never started: all 5 are freed. */
    workq_free(q);
    CHECK_INT(atomic_load(&s.freed), 5);
}

static void case_empty_submit_and_free_null(void)
{
    state s = {0};
    workq *q = workq_new(&ops, &s, 1);
    CHECK(q != NULL);
    workq_submit(q, NULL);
    CHECK(workq_done(q) == NULL);
    workq_free(q);
    workq_free(NULL);
    CHECK_INT(atomic_load(&s.rounds), 0);
}

int main(void)
{
    RUN_CASE(case_every_job_back_once_in_order);
    RUN_CASE(case_unfinished_jobs_are_freed);
    RUN_CASE(case_empty_submit_and_free_null);
    return check_summary();
}
