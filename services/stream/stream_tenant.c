/*
 * stream_tenant.c - tenants of one stream process: who listens, and what they
 * have been sent.
 *
 * A tenant exists here while it has subscribers.  Its last_seq is the highest
 * event id dispatched to them; an event from the bus with a smaller or equal
 * id is a duplicate, one with a larger id than last_seq + 1 reveals a gap,
 * which is read from the store (the store holds every event before it is
 * published) and dispatched first.  Each subscriber also keeps its own
 * last_seq, so it never gets an event twice whatever path brought it.
 *
 * A new subscriber gets the snapshot (the latest event of each name, oldest
 * first) or, with Last-Event-ID, a replay: events after that id read from the
 * store in pages while its queue has room; live events wait for it until the
 * replay reaches the tenant's last_seq.  The snapshot and a replay's first
 * page are read by the credential worker with the subscriber's view
 * (tenant_view_read), the later pages of a long replay by the engine.
 *
 * A subscriber with a filter (?events=) gets only the events it takes, in
 * the snapshot, the replay and live; live ones reach it through its tenant's
 * index (stream_filter.h), so an event costs the subscribers without a
 * filter and those whose filter takes it, not every filtered subscriber.
 */
#include "stream_internal.h"
#include "clock.h"
#include "hash.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define REPLAY_PAGE 32
#define REPLAY_QUEUE_BYTES (64 * 1024)

/* Replay and a large snapshot fill a client's queue up to this many bytes at
 * a time, and a client goes live only when its queue holds no more than this:
 * live events then have at least half of --sse_queue_max of room. */
static size_t replay_budget(const stream_engine *e)
{
    size_t half = e->queue_max / 2;
    return half < REPLAY_QUEUE_BYTES ? half : REPLAY_QUEUE_BYTES;
}

size_t tenant_page_bytes(const stream_engine *e)
{
    return replay_budget(e);
}

static size_t name_hash(const char *s, size_t len)
{
    return (size_t)hash_fnv1a(s, len);
}

stream_tenant *tenant_find(stream_engine *e, const char *name, size_t len)
{
    for (stream_tenant *t = e->tenants[name_hash(name, len) & e->tenant_mask]; t; t = t->hnext)
        if (strlen(t->name) == len && memcmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static void tenants_grow(stream_engine *e)
{
    size_t ncap = (e->tenant_mask + 1) * 2;
    stream_tenant **nt = calloc(ncap, sizeof *nt);
    if (nt == NULL)
        return; /* keep the old table: longer chains, still correct */
    for (size_t i = 0; i <= e->tenant_mask; i++) {
        for (stream_tenant *t = e->tenants[i], *next; t; t = next) {
            next = t->hnext;
            size_t b = name_hash(t->name, strlen(t->name)) & (ncap - 1);
            t->hnext = nt[b];
            nt[b] = t;
        }
    }
    free(e->tenants);
    e->tenants = nt;
    e->tenant_mask = ncap - 1;
}

static stream_tenant *tenant_create(stream_engine *e, const char *name)
{
    stream_tenant *t = calloc(1, sizeof *t);
    if (t == NULL || (t->name = strdup(name)) == NULL) {
        free(t);
        return NULL;
    }
    if (e->ntenants + 1 > (e->tenant_mask + 1) * 2)
        tenants_grow(e);
    size_t b = name_hash(name, strlen(name)) & e->tenant_mask;
    t->hnext = e->tenants[b];
    e->tenants[b] = t;
    e->ntenants++;
    return t;
}

static void tenant_remove(stream_engine *e, stream_tenant *t)
{
    stream_tenant **pp = &e->tenants[name_hash(t->name, strlen(t->name)) & e->tenant_mask];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    e->ntenants--;
    filter_index_free(t->index);
    free(t->name);
    free(t);
}


/* Keeps a snapshot's id past the list's byte bound. */
static int collect_id(frame_list *fl, uint64_t seq)
{
    if (fl->nrest == fl->caprest) {
        size_t ncap = fl->caprest ? fl->caprest * 2 : 64;
        uint64_t *ni = realloc(fl->rest, ncap * sizeof *ni);
        if (ni == NULL) {
            fl->failed = 1;
            return 1;
        }
        fl->rest = ni;
        fl->caprest = ncap;
    }
    fl->rest[fl->nrest++] = seq;
    return 0;
}

static int collect_event(const store_event *ev, void *arg)
{
    frame_list *fl = arg;
    if (fl->after != 0 && ev->seq <= fl->after)
        return 0; /* a store that answers a range loosely: never send an id twice */
    int full = fl->max_bytes != 0 && fl->bytes >= fl->max_bytes;
    if (full && !fl->keep_ids)
        return 1; /* a replay page ends here */
    /* Read, whether taken or not: a filtered replay goes on past it. */
    fl->rows++;
    if (ev->seq > fl->last_seq)
        fl->last_seq = ev->seq;
    if (fl->filter != NULL && !stream_filter_match(fl->filter, ev->event, strlen(ev->event)))
        return 0;
    if (full)
        return collect_id(fl, ev->seq); /* a snapshot past its page: the rest as ids */
    if (fl->n == fl->cap) {
        size_t ncap = fl->cap ? fl->cap * 2 : 16;
        sse_frame **ni = realloc(fl->items, ncap * sizeof *ni);
        if (ni == NULL) {
            fl->failed = 1;
            return 1;
        }
        fl->items = ni;
        fl->cap = ncap;
    }
    sse_frame *f = sse_frame_event(ev->seq, ev->event, strlen(ev->event), ev->data, strlen(ev->data));
    if (f == NULL) {
        fl->failed = 1;
        return 1;
    }
    fl->items[fl->n++] = f;
    fl->bytes += f->len;
    return 0;
}

/* Queues every collected frame on `c` (while it stays open) and frees the list. */
static void frames_deliver(stream_engine *e, stream_client *c, frame_list *fl)
{
    for (size_t i = 0; i < fl->n; i++) {
        if (!client_closing(c))
            client_enqueue(e, c, fl->items[i], 0);
        sse_frame_unref(fl->items[i]);
    }
    free(fl->items);
    memset(fl, 0, sizeof *fl);
}

static int count_only(const store_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    return 0;
}

int tenant_view_read(store *s, const char *name, int resume, uint64_t last_event_id, size_t max_bytes,
                     const stream_filter *filter, tenant_view *v)
{
    memset(v, 0, sizeof *v);
    v->resume = resume;
    v->last_event_id = last_event_id;
    v->frames.max_bytes = max_bytes;
    v->frames.filter = filter;
    v->frames.keep_ids = !resume;
    store_status st;
    if (resume)
        st = store_event_latest(s, name, count_only, NULL, &v->max_seq);
    else
        st = store_event_latest(s, name, collect_event, &v->frames, &v->max_seq);
    /* An id this tenant never reached (say, from before the database was
     * reset) cannot be resumed: such a client gets the snapshot instead. */
    if (st == STORE_OK && resume && last_event_id > v->max_seq) {
        v->resume = 0;
        v->frames.keep_ids = 1;
        st = store_event_latest(s, name, collect_event, &v->frames, &v->max_seq);
    }
    /* A resume's first page, here rather than on the engine thread: when a
     * stream process restarts, all its clients come back at once with a
     * Last-Event-ID, and most of them missed something meanwhile (a page is
     * tens of us on SQLite, milliseconds on MongoDB). */
    if (st == STORE_OK && v->resume && last_event_id < v->max_seq) {
        v->frames.keep_ids = 0;
        v->frames.after = v->frames.last_seq = last_event_id;
        st = store_event_range(s, name, last_event_id, v->max_seq, REPLAY_PAGE, collect_event, &v->frames);
    }
    v->failed = st != STORE_OK || v->frames.failed;
    return v->failed ? -1 : 0;
}

void tenant_view_clear(tenant_view *v)
{
    for (size_t i = 0; i < v->frames.n; i++)
        sse_frame_unref(v->frames.items[i]);
    free(v->frames.items);
    free(v->frames.rest);
    memset(&v->frames, 0, sizeof v->frames);
}

static void snapshot_free(client_extra *x)
{
    if (x->snapshot == NULL)
        return;
    free(x->snapshot->ids);
    free(x->snapshot);
    x->snapshot = NULL;
}

void client_extra_free(stream_client *c)
{
    if (c->x == NULL)
        return;
    snapshot_free(c->x);
    free(c->x->filter);
    free(c->x->slots);
    free(c->x);
    c->x = NULL;
}

/* Sends what of a large snapshot the queue has room for, one event read by
 * its id at a time.  0 when the snapshot is all queued (or the client closes). */
static int snapshot_more(stream_engine *e, stream_client *c, size_t budget)
{
    snapshot_rest *r = c->x->snapshot;
    while (r->next < r->n && !client_closing(c) && c->qbytes <= budget) {
        uint64_t id = r->ids[r->next++];
        frame_list fl = {0};
        atomic_fetch_add(e->m_replay_pages, 1);
        if (store_event_range(e->rt->store, c->tenant->name, id - 1, id, 1, collect_event, &fl) != STORE_OK ||
            fl.failed) {
            frames_deliver(e, c, &fl);
            log_error("stream: snapshot for tenant %s failed: closing the stream (the client resumes)",
                      c->tenant->name);
            client_schedule_close(e, c);
            return 1;
        }
        frames_deliver(e, c, &fl);
    }
    if (r->next < r->n && !client_closing(c))
        return 1;
    snapshot_free(c->x);
    return 0;
}

int tenant_subscribe(stream_engine *e, stream_client *c, const char *name, tenant_view *v)
{
    stream_tenant *t = tenant_find(e, name, strlen(name));
    /* The store's view first: nothing is sent before we know it answered. */
    if (v->failed) {
        tenant_view_clear(v);
        client_reject(e, c, 503, "the event store is unavailable; retry");
        return -1;
    }
    if (t == NULL) {
        t = tenant_create(e, name);
        if (t == NULL) {
            tenant_view_clear(v);
            client_reject(e, c, 503, "out of memory");
            return -1;
        }
        t->last_seq = v->max_seq;
    }
    c->tenant = t;
    c->state = CLIENT_STREAMING;
    stream_limits_stream_opened(e, c);
    if (!client_filtered(c)) { /* the front of the list, where events walk */
        c->next = t->clients;
        c->prev = NULL;
        if (t->clients)
            t->clients->prev = c;
        else
            t->tail = c;
        t->clients = c;
    } else {
        c->prev = t->tail;
        c->next = NULL;
        if (t->tail)
            t->tail->next = c;
        else
            t->clients = c;
        t->tail = c;
    }
    t->nclients++;
    atomic_fetch_add(e->m_clients, 1);
    presence_stream_opened(e, c);
    if (client_filtered(c) && ((t->index == NULL && (t->index = filter_index_new()) == NULL) ||
                               filter_index_add(t->index, c) != 0)) {
        tenant_view_clear(v);
        log_error("stream: out of memory for a filtered stream of tenant %s: closing it", t->name);
        client_schedule_close(e, c);
        return 0;
    }

    sse_frame *preamble = stream_preamble(e);
    if (preamble == NULL || client_enqueue(e, c, preamble, 0) != 0 || presence_stream_started(e, c) != 0) {
        tenant_view_clear(v);
        client_schedule_close(e, c);
        return 0;
    }
    uint64_t upto = v->frames.last_seq; /* a resume's first page: the last id it read */
    if (v->frames.nrest > 0) { /* a snapshot larger than a page: the rest as the socket drains */
        if (c->x == NULL)
            c->x = calloc(1, sizeof *c->x);
        if (c->x == NULL || (c->x->snapshot = malloc(sizeof *c->x->snapshot)) == NULL) {
            tenant_view_clear(v);
            client_schedule_close(e, c);
            return 0;
        }
        *c->x->snapshot = (snapshot_rest){.ids = v->frames.rest, .n = v->frames.nrest};
        v->frames.rest = NULL;
        v->frames.nrest = v->frames.caprest = 0;
    }
    frames_deliver(e, c, &v->frames);
    if (v->resume)
        c->last_seq = upto > v->last_event_id ? upto : v->last_event_id;
    else
        c->last_seq = v->max_seq;
    /* Every new client starts by catching up from the store: after a
     * Last-Event-ID that is the replay; after a snapshot it is whatever this
     * process dispatched beyond the store's read (usually nothing), and a
     * wait until a large snapshot has drained.  tenant_replay_more() puts it
     * live when done. */
    c->replaying = 1;
    tenant_replay_more(e, c);
    return 0;
}

void tenant_unsubscribe(stream_engine *e, stream_client *c)
{
    stream_tenant *t = c->tenant;
    if (t == NULL)
        return;
    if (client_filtered(c) && t->index != NULL)
        filter_index_remove(t->index, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        t->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        t->tail = c->prev;
    c->tenant = NULL;
    if (--t->nclients == 0)
        tenant_remove(e, t);
}

void tenant_replay_more(stream_engine *e, stream_client *c)
{
    stream_tenant *t = c->tenant;
    size_t budget = replay_budget(e);
    if (c->x != NULL && c->x->snapshot != NULL && snapshot_more(e, c, budget) != 0)
        return; /* more when the socket drains */
    while (c->replaying && !client_closing(c) && c->qbytes <= budget) {
        if (c->last_seq >= t->last_seq) {
            /* Nothing this process dispatched is missing (a snapshot's usual
             * case): live without asking the store for an empty range, one
             * round trip less per new subscriber on the engine thread. */
            c->replaying = 0;
            break;
        }
        frame_list fl = {0};
        fl.after = c->last_seq;
        fl.last_seq = c->last_seq;
        fl.max_bytes = budget;
        fl.filter = client_filtered(c) ? c->x->filter : NULL;
        atomic_fetch_add(e->m_replay_pages, 1);
        store_status st = store_event_range(e->rt->store, t->name, c->last_seq, t->last_seq, REPLAY_PAGE,
                                            collect_event, &fl);
        if (st != STORE_OK || fl.failed) {
            frames_deliver(e, c, &fl);
            log_error("stream: replay for tenant %s failed: closing the stream (the client resumes)", t->name);
            client_schedule_close(e, c);
            return;
        }
        size_t got = fl.rows; /* rows that moved the client forward, taken or not */
        uint64_t upto = fl.last_seq;
        frames_deliver(e, c, &fl);
        c->last_seq = upto;
        /* Done when the tenant's last dispatched id is reached, or when the
         * store has nothing more (a hole at the end).  A short page is not
         * proof of the end: a store may return fewer rows than asked. */
        if ((got == 0 || c->last_seq >= t->last_seq) && c->qbytes <= budget) {
            /* Caught up with what this process has dispatched, with room in
             * the queue: live from here. */
            c->replaying = 0;
            if (c->last_seq < t->last_seq)
                c->last_seq = t->last_seq;
        } else if (got == 0) {
            break; /* nothing left to read: go live once the queue drains */
        }
    }
}

typedef struct delivery {
    stream_engine *e;
    sse_frame *f;
    uint64_t seq;
} delivery;

/* A filtered subscriber whose filter takes the event (maybe through two of
 * its items: its last_seq keeps it from getting the event twice). */
static void deliver_matched(stream_client *c, void *arg)
{
    delivery *d = arg;
    if (c->replaying || client_closing(c) || d->seq <= c->last_seq)
        return;
    if (client_enqueue(d->e, c, d->f, 1) == 0)
        c->last_seq = d->seq;
}

/* Queues one frame for every live subscriber of `t` that takes it and has
 * not had it: those without a filter, walked, then the index's matches. */
static void dispatch_frame(stream_engine *e, stream_tenant *t, uint64_t seq, const char *event, size_t event_len,
                           sse_frame *f)
{
    for (stream_client *c = t->clients; c && !client_filtered(c); c = c->next) {
        if (c->replaying || client_closing(c) || seq <= c->last_seq)
            continue;
        if (client_enqueue(e, c, f, 1) == 0)
            c->last_seq = seq;
    }
    if (t->index != NULL) {
        delivery d = {e, f, seq};
        filter_index_each(t->index, event, event_len, deliver_matched, &d);
    }
}

typedef struct gap_fill {
    stream_engine *e;
    stream_tenant *t;
    int failed;
} gap_fill;

static int dispatch_stored(const store_event *ev, void *arg)
{
    gap_fill *g = arg;
    sse_frame *f = sse_frame_event(ev->seq, ev->event, strlen(ev->event), ev->data, strlen(ev->data));
    if (f == NULL) {
        g->failed = 1;
        return 1;
    }
    dispatch_frame(g->e, g->t, ev->seq, ev->event, strlen(ev->event), f);
    sse_frame_unref(f);
    return 0;
}

void tenant_dispatch(stream_engine *e, const bus_msg *m)
{
    stream_tenant *t = tenant_find(e, m->tenant, m->tenant_len);
    if (t == NULL || m->seq <= t->last_seq)
        return; /* nobody listens here, or a duplicate */
    if (m->seq > t->last_seq + 1) {
        gap_fill g = {e, t, 0};
        atomic_fetch_add(e->m_gaps, 1);
        if (store_event_range(e->rt->store, t->name, t->last_seq, m->seq - 1, 0, dispatch_stored, &g) != STORE_OK ||
            g.failed)
            log_error("stream: could not fill a gap of tenant %s from the store", t->name);
    }
    sse_frame *f = sse_frame_event(m->seq, m->event, m->event_len, m->data, m->data_len);
    if (f == NULL) {
        log_error("stream: out of memory for an event of tenant %s", t->name);
        return;
    }
    dispatch_frame(e, t, m->seq, m->event, m->event_len, f);
    sse_frame_unref(f);
    t->last_seq = m->seq;
    /* Stamped by the corrected clock of the inserting process (the same
     * network offset in every service), so this spans processes. */
    metrics_observe_us(e->m_latency, (clock_now_ms() - m->ts_ms) * 1000);
}

void tenants_close_user(stream_engine *e, const char *username, size_t len)
{
    for (size_t i = 0; i <= e->tenant_mask; i++)
        for (stream_tenant *t = e->tenants[i]; t; t = t->hnext)
            for (stream_client *c = t->clients; c; c = c->next)
                if (c->username && strlen(c->username) == len && memcmp(c->username, username, len) == 0)
                    client_schedule_close(e, c);
}

void tenants_keepalive(stream_engine *e, unsigned slice, unsigned nslices)
{
    for (size_t i = slice; i <= e->tenant_mask; i += nslices)
        for (stream_tenant *t = e->tenants[i]; t; t = t->hnext)
            for (stream_client *c = t->clients; c; c = c->next)
                client_enqueue_idle(e, c, e->keepalive);
}

void tenants_free(stream_engine *e)
{
    for (size_t i = 0; e->tenants && i <= e->tenant_mask; i++)
        while (e->tenants[i] != NULL) { /* the door closed every stream first: none is left but on a fault */
            for (stream_client *c = e->tenants[i]->clients; c; c = c->next)
                c->tenant = NULL;
            tenant_remove(e, e->tenants[i]);
        }
    free(e->tenants);
    e->tenants = NULL;
}
