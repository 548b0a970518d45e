/*
 * stream_auth.c - the credential checks of new SSE subscribers, off the
 * engine thread.
 *
 * A check reads the user's row from the store, and a Basic credential that
 * the credential cache has not seen costs an Argon2 verification (tens of
 * milliseconds).  On the engine thread either held up every stream and
 * every insert of the process meanwhile: anyone sending wrong Basic
 * passwords for a known username could stall all deliveries, a few dozen
 * requests a second being enough.  Here a worker thread (workq.h) checks them
 * in the order they came, a few at a time, and the engine takes each verdict
 * when it is back.  Once a check passes, the worker also reads what the
 * subscriber starts from (tenant_view_read: the snapshot, or the tenant's
 * last id and the first page of a resume), store round trips per subscriber
 * that the engine does not wait on either (tens of ms each on FerretDB late
 * in the test suite).
 *
 * While its check is out, the connection is the route handler's in the front
 * door's terms: its socket is not read and nothing closes it; a hang-up or
 * bytes meanwhile are noted (door_conn_unread) and looked at once it streams.
 * The stream owns it (door_conn_own) only once the check has passed.
 *
 * A user revoked or changed while the check was out is closed by the bus
 * message on the streams it has, not on this one, which has none yet: a check
 * that passed while such a message came is made again.
 */
#include "stream_internal.h"
#include "authn.h"
#include "http.h"
#include "http_answer.h"
#include "workq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Checks per round: a verdict waits for the others of its round, and an
 * Argon2 one takes tens of milliseconds. */
#define AUTH_BATCH 8

typedef struct auth_job {
    workq_item link; /* first: see workq.h */
    door_conn *owner;
    /* GET /presence rather than a stream: answered with the tenant's list. */
    int presence_request;
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    int keep_alive, head_only;
    /* A stream's ?events= (owned, handed to the stream) and ?presence=true. */
    stream_filter *filter;
    int wants_presence;
    /* What the check and tenant_subscribe() need of the request: a copy of
     * the whole sse_request would be 8 KB per waiting subscriber. */
    char *authorization, *access_token; /* NULL when absent */
    char address[64]; /* the client's, for the per-address limit on failed passwords */
    int has_last_event_id;
    uint64_t last_event_id;
    authn_result result;
    long retry_after; /* AUTHN_LIMITED, AUTHN_BUSY: seconds */
    const char *why; /* a static string */
    authn_identity who;
    tenant_view view; /* read once the check passed */
    uint64_t user_changes; /* the engine's count when the check was asked */
} auth_job;

/* On the worker. */
static void check_batch(void *arg, workq_item *jobs, size_t n)
{
    stream_engine *e = arg;
    (void)n;
    for (workq_item *it = jobs; it != NULL; it = it->next) {
        auth_job *job = (auth_job *)it;
        job->why = NULL;
        if (atomic_load(&e->stop)) { /* shutting down: the rest of the batch is not read (a large
                                      * snapshot on a remote store takes long) */
            job->result = AUTHN_FAULT;
            continue;
        }
        job->result = authn_check(&e->rt->authn, job->authorization, job->access_token, job->address, &job->who,
                                  &job->why);
        job->retry_after = job->result == AUTHN_LIMITED || job->result == AUTHN_BUSY ? authn_retry_after() : 0;
        tenant_view_clear(&job->view); /* a check made again reads again */
        if (job->result == AUTHN_OK && !job->presence_request) /* a store fault is answered by tenant_subscribe */
            tenant_view_read(e->rt->store, job->who.tenant, job->has_last_event_id, job->last_event_id,
                             tenant_page_bytes(e), job->filter, &job->view);
    }
}

/* At shutdown, for a check that never came back: its connection is on no
 * list, so it goes with the job. */
static void job_free(auth_job *job)
{
    tenant_view_clear(&job->view);
    free(job->filter);
    free(job->authorization);
    free(job->access_token);
    free(job);
}

static void free_job(void *arg, workq_item *it)
{
    auth_job *job = (auth_job *)it;
    (void)arg;
    door_conn_close(job->owner);
    job_free(job);
}

/* A copy of a credential, NULL for an absent one; -1 when out of memory. */
static int copy_credential(char **out, const char *value)
{
    *out = value[0] != '\0' ? strdup(value) : NULL;
    return value[0] != '\0' && *out == NULL ? -1 : 0;
}

static const workq_ops auth_ops = {.run = check_batch, .after = NULL, .free_job = free_job};

int stream_auth_start(stream_engine *e)
{
    e->auth = workq_new(&auth_ops, e, AUTH_BATCH);
    if (e->auth == NULL)
        return -1;
    return door_watch(e->door, workq_fd(e->auth), stream_auth_finish, e);
}

void stream_auth_stop(stream_engine *e)
{
    workq_free(e->auth);
    e->auth = NULL;
}

static auth_job *job_new(stream_engine *e, door_conn *conn, const char *authorization, const char *access_token,
                         const char *address)
{
    auth_job *job = calloc(1, sizeof *job);
    if (job == NULL || copy_credential(&job->authorization, authorization) != 0 ||
        copy_credential(&job->access_token, access_token) != 0) {
        if (job != NULL)
            job_free(job);
        stream_refuse(e, conn, 503, "out of memory", 0);
        return NULL;
    }
    job->owner = conn;
    snprintf(job->address, sizeof job->address, "%s", address);
    job->user_changes = e->user_changes;
    return job;
}

void stream_auth_submit(stream_engine *e, door_conn *conn, const sse_request *req, const char *address,
                        stream_filter *filter)
{
    auth_job *job = job_new(e, conn, req->authorization, req->access_token, address);
    if (job == NULL) {
        free(filter);
        return;
    }
    job->has_last_event_id = req->has_last_event_id;
    job->last_event_id = req->last_event_id;
    job->filter = filter;
    job->wants_presence = req->presence;
    workq_submit(e->auth, &job->link);
}

void stream_auth_submit_presence(stream_engine *e, door_conn *conn, const char *authorization, const char *address,
                                 const char *request_id, int keep_alive, int head_only)
{
    auth_job *job = job_new(e, conn, authorization, "", address);
    if (job == NULL)
        return;
    job->presence_request = 1;
    snprintf(job->request_id, sizeof job->request_id, "%s", request_id);
    job->keep_alive = keep_alive;
    job->head_only = head_only;
    workq_submit(e->auth, &job->link);
}

/* The check of a GET /presence passed: the caller's tenant's list. */
static void answer_presence(stream_engine *e, door_conn *conn, auth_job *job)
{
    char *body = presence_list_json(e, job->who.tenant);
    if (body == NULL) {
        stream_refuse(e, conn, 503, "out of memory", 0);
        return;
    }
    http_answer a = {.status = 200, .request_id = job->request_id, .content_type = "application/json",
                     .body = body, .body_len = strlen(body), .close = !job->keep_alive};
    door_conn_answer(conn, &a, job->head_only);
    free(body);
}

/* The check passed: the stream takes the connection and subscribes it. */
static void start_stream(stream_engine *e, door_conn *conn, auth_job *job)
{
    if (door_conn_own(conn, &e->ops) != 0) {
        stream_refuse(e, conn, 503, "the server cannot take this stream; retry", 0);
        return;
    }
    stream_client *c = door_conn_data(conn);
    client_init(c);
    if ((c->username = strdup(job->who.username)) == NULL ||
        ((job->filter != NULL || job->wants_presence) && (c->x = calloc(1, sizeof *c->x)) == NULL) ||
        (job->filter != NULL && (c->x->slots = calloc(job->filter->n, sizeof *c->x->slots)) == NULL)) {
        client_reject(e, c, 503, "out of memory");
        return;
    }
    if (c->x != NULL) {
        c->x->filter = job->filter; /* the stream's now */
        job->filter = NULL;
        c->x->wants_presence = (uint8_t)job->wants_presence;
    }
    if (tenant_subscribe(e, c, job->who.tenant, &job->view) == 0 && door_conn_unread(conn))
        stream_read_streaming(e, c); /* what came while it waited: a hang-up closes it */
}

void stream_auth_finish(void *engine)
{
    stream_engine *e = engine;
    for (workq_item *it = workq_done(e->auth), *next; it != NULL; it = next) {
        next = it->next;
        auth_job *job = (auth_job *)it;
        door_conn *conn = job->owner;
        if (job->result == AUTHN_OK && job->user_changes != e->user_changes) {
            job->user_changes = e->user_changes; /* see the top of this file */
            job->link.next = NULL;
            workq_submit(e->auth, &job->link);
            continue;
        }
        if (job->result != AUTHN_OK)
            stream_refuse(e, conn, authn_status(job->result), job->why != NULL ? job->why : "not authorized",
                          job->retry_after);
        else if (job->presence_request)
            answer_presence(e, conn, job);
        else if (!stream_limits_allow_stream(e, job->who.username))
            stream_refuse(e, conn, 429, "this user has as many streams open as it may (--max_streams_per_user)", 0);
        else
            start_stream(e, conn, job);
        job_free(job);
    }
}
