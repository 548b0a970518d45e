/*
 * ingest.h - POST /insert: validate, store durably, then publish.
 *
 * Two front ends share these steps: the request/response server's route
 * (ingest_add_routes), and the front door's route (ingest_attach), which
 * takes plain inserts and hands their checks, commits and answers to an
 * ingest_queue (ingest_door.c).
 */
#ifndef BROKER_INGEST_H
#define BROKER_INGEST_H

#include "door.h"
#include "runtime.h"
#include "workq.h"

/* Adds POST /insert to `s`.  rt->bus must be open: every stored event is
 * published on it. */
int ingest_add_routes(http_server *s, broker_runtime *rt);
/* Plugs the fast POST /insert into the front door (with ingest_add_routes on
 * the door's request/response server for the rest).  0, or -1 (logged). */
int ingest_attach(door *d, broker_runtime *rt);

/* One checked insert, ready for the store. */
typedef struct ingest_item {
    authn_identity who;
    char *event;       /* owned */
    char *data;        /* compact JSON, owned */
    int64_t ts_ms;
    uint64_t seq;      /* after ingest_store, on STORE_OK */
    store_status status;
} ingest_item;

/* Checks the credentials (from the client's `address`) and the body of an
 * insert.  Returns 0 with *item filled, or -1: then `resp`, unless NULL,
 * holds the error answer. */
int ingest_prepare(broker_runtime *rt, const char *authorization, const char *address, const char *body, size_t len,
                   ingest_item *item, struct _u_response *resp);
/* The same for a sender whose credentials are already checked: the body only. */
int ingest_prepare_as(const authn_identity *who, const char *body, size_t len, size_t max_event_bytes, ingest_item *item,
                      struct _u_response *resp);
void ingest_item_clear(ingest_item *item);
/* Registers the insert metrics (once; both insert paths call it). */
void ingest_metrics_init(void);

/* Stores the items (in one durable write where the store can); each item's
 * status and seq say what became of it.  Then ingest_publish puts the stored
 * ones on the bus; the answers need not wait for that. */
void ingest_store(broker_runtime *rt, ingest_item *items, size_t n);
void ingest_publish(broker_runtime *rt, const ingest_item *items, size_t n);

/* ---- the queue the front door's route hands inserts to ------------------ */

typedef enum ingest_outcome {
    INGEST_PASS,      /* not answered: the request/response server answers it (the store failed) */
    INGEST_TO_ANSWER, /* on the queue's thread: stored or refused, its answer not written yet */
    INGEST_ANSWERED,  /* answered (stored, or refused) */
    INGEST_GONE,      /* the client went away before its answer (a stored insert stays stored) */
} ingest_outcome;

/* One request, as the front door read it. */
typedef struct ingest_job {
    workq_item link;          /* first: jobs travel on a workq (workq.h) */
    door_conn *owner;         /* the client's connection */
    char *authorization;      /* NUL-terminated, owned; NULL when absent */
    char *body;               /* owned */
    size_t body_len;
    char request_id[HTTP_REQUEST_ID_MAX + 1]; /* the answer's X-Request-Id (http.h) */
    ingest_outcome outcome;   /* set by the queue */
    unsigned status;          /* for the answer hook: 200 (stored), or the refusal's 4xx */
    uint64_t seq;             /* stored: the event's id */
    char *refusal;            /* a refusal's JSON body, as the request/response server words it; owned */
    size_t refusal_len;
} ingest_job;

/* The job after `j` on a list of jobs. */
static inline ingest_job *ingest_job_next(const ingest_job *j)
{
    return (ingest_job *)j->link.next;
}

typedef struct ingest_queue ingest_queue;

/* Writes a job's answer on the queue's thread, the moment the batch is on
 * disk: a 200 with `seq`, or a refusal (`status` 400 or 401 with the body in
 * `refusal`: a bad body or credentials); sets its outcome (INGEST_ANSWERED
 * or INGEST_GONE).  The door does not touch the connection until the job is
 * back.  A job the store could not take, or whose credentials the store
 * could not check, is not answered here: INGEST_PASS. */
typedef void (*ingest_answer_fn)(ingest_job *job, void *arg);

/* Starts the thread that checks, stores, answers and publishes submitted
 * jobs, as many at a time as are waiting (one durable write per batch). */
ingest_queue *ingest_queue_new(broker_runtime *rt, ingest_answer_fn answer, void *answer_arg);
/* Readable (an eventfd) when finished jobs are waiting for ingest_queue_done(). */
int ingest_queue_fd(const ingest_queue *q);
/* Queues a list of jobs linked by `link` (one lock, one wake-up for all). */
void ingest_queue_submit(ingest_queue *q, ingest_job *jobs);
/* Takes every finished job, oldest first (NULL when none). */
ingest_job *ingest_queue_done(ingest_queue *q);
void ingest_job_free(ingest_job *job);
/* Stops the thread after the jobs in hand; frees jobs never finished. */
void ingest_queue_free(ingest_queue *q);

#endif
