/*
 * stream_internal.h - the parts of the stream engine, shared by its files:
 *   sse_frame.c       reference-counted, serialised SSE frames
 *   stream_client.c   one subscriber: its queue, writes, close
 *   stream_tenant.c   tenants: subscribers, live dispatch, gap fill, replay
 *   stream_engine.c   GET /sse in the front door, the bus, keep-alives
 *   stream_auth.c     the credential checks, off the door's thread
 *   stream_limits.c   --max_streams_per_user
 *   stream_filter.c   ?events= filters and each tenant's index of them
 *   stream_presence.c who is online: ?presence=true, GET /presence, the replicas' lists
 * Everything here runs on the front door's thread (door.h); nothing is locked.
 */
#ifndef BROKER_STREAM_INTERNAL_H
#define BROKER_STREAM_INTERNAL_H

#include "bus.h"
#include "door.h"
#include "metrics.h"
#include "sse_request.h"
#include "stream.h"
#include "stream_filter.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- frames ---------------------------------------------------------- */

/* Bytes ready for the wire, shared by every subscriber that queues them. */
typedef struct sse_frame {
    uint32_t refs;
    uint32_t len;
    char bytes[];
} sse_frame;

/* "id: <seq>\nevent: <name>\ndata: <json>\n\n" */
sse_frame *sse_frame_event(uint64_t seq, const char *event, size_t event_len, const char *data, size_t data_len);
sse_frame *sse_frame_text(const char *text, size_t len);
static inline sse_frame *sse_frame_ref(sse_frame *f)
{
    f->refs++;
    return f;
}
void sse_frame_unref(sse_frame *f);

/* ---- subscribers ----------------------------------------------------- */

typedef struct stream_tenant stream_tenant;
typedef struct presence_tenant presence_tenant;
typedef struct stream_client stream_client;

/* What only some subscribers have: the rest of a large snapshot, a filter,
 * presence.  Apart, so that a plain subscriber stays as small as it was. */
typedef struct client_extra {
    struct snapshot_rest *snapshot; /* what of a large snapshot is still to send; NULL */
    stream_filter *filter;          /* ?events=; NULL: every event */
    index_slot *slots;              /* one per filter item: where the tenant's index holds it */
    uint8_t wants_presence;         /* ?presence=true */
    presence_tenant *presence;      /* the tenant whose $presence frames it gets, once started */
    stream_client *pprev, *pnext;   /* that tenant's presence subscribers */
} client_extra;

typedef enum client_state {
    CLIENT_STARTING, /* owned, not yet subscribed */
    CLIENT_STREAMING
} client_state;

/* A subscriber that keeps up holds a few frames at a time (events that came
 * between two of its writes, a keep-alive): they live in the client, so
 * fan-out allocates nothing per subscriber (a malloc/free pair per
 * subscriber per event otherwise: bench/RESULTS.md, "The front door and TLS", W2a). */
#define CLIENT_INLINE_QUEUE 4 /* a power of two */

/* A subscriber: the stream's part of a front-door connection
 * (door_conn_data), which exists once the stream owns the connection and
 * which the door frees with it. */
struct stream_client {
    uint8_t state;
    uint8_t replaying; /* catching up from the store; live events wait */
    uint8_t draining;  /* its last frame (a retry:) is queued: closed once written (client_drain) */
    uint32_t qhead, qlen, qcap; /* ring of frames: `queue`, which is `inline_queue` until it outgrows it */
    uint32_t head_off;          /* bytes of the first frame already written */
    /* Bytes queued, not yet written: at most --sse_queue_max and a page of a
     * snapshot or replay plus one event (each flag at most 1 GiB), so 32
     * bits hold it, and a subscriber stays 8 bytes smaller. */
    uint32_t qbytes;
    sse_frame **queue;
    sse_frame *inline_queue[CLIENT_INLINE_QUEUE];
    uint64_t last_seq; /* highest event id queued for this client */
    client_extra *x;   /* NULL for most */
    stream_tenant *tenant;
    struct stream_client *prev, *next; /* the tenant's list */
    char *username;
};

/* A subscriber that asked for some events only: it gets live events through
 * its tenant's index, not the walk over the tenant's list. */
static inline int client_filtered(const stream_client *c)
{
    return c->x != NULL && c->x->filter != NULL;
}

static inline door_conn *client_conn(stream_client *c)
{
    return door_conn_of(c);
}

static inline int client_closing(stream_client *c)
{
    return door_conn_closing(door_conn_of(c));
}

/* ---- tenants --------------------------------------------------------- */

struct stream_tenant {
    char *name;
    uint64_t last_seq;       /* highest event id dispatched from the bus (or read at creation) */
    /* Doubly linked: every subscriber, those without a filter first (an event
     * walks them up to the first filtered one), the filtered ones after it,
     * reached through `index`. */
    stream_client *clients, *tail;
    size_t nclients;
    filter_index *index;     /* NULL until a filtered subscriber comes */
    stream_tenant *hnext;    /* hash chain */
};

/* ---- the engine ------------------------------------------------------ */

struct stream_engine {
    broker_runtime *rt;
    door *door;
    door_conn_ops ops; /* how the door calls back a subscriber */
    char *bus_endpoints;
    bus_sub *bus;
    int bus_pending; /* a batch limit left messages on the bus */
    _Atomic int ready;  /* bus connected: read by /readyz from other threads */
    _Atomic int stop;
    size_t queue_max;
    unsigned keepalive_slice;   /* which slice of the tenants is next: 0 .. --keepalive - 1 */

    stream_tenant **tenants; /* hash table */
    size_t tenant_mask, ntenants;

    sse_frame *preamble;  /* HTTP response head + "retry: 3000", remade each second for its Date */
    time_t preamble_second;
    sse_frame *keepalive; /* ": keep-alive" */

    struct workq *auth;           /* checks the credentials of new subscribers (stream_auth.c) */
    struct presence *presence;    /* who is online (stream_presence.c); NULL with --presence=false */
    uint64_t user_changes;        /* user messages (revoked, deleted...) taken from the bus */

    metric_value *m_clients, *m_delivered, *m_dropped_slow, *m_gaps, *m_rejected;
    metric_histogram *m_latency; /* an event's stamp to its frame queued for this process's subscribers */
    metric_value *m_replay_pages; /* replay pages the engine thread read from the store */

    /* --max_streams_per_user (stream_limits.c); 0 is off, and its table NULL. */
    long max_streams_per_user;
    struct countmap *streams_by_user;
    metric_value *m_refused_streams;
    uint64_t delivered; /* frames written this turn; added to m_delivered once per turn */

    /* The drain (SIGTERM, --drain_seconds; stream_engine.c): new streams are
     * refused, open ones closed a share at a time until drain_end_ms. */
    int draining;
    int64_t drain_last_ms, drain_end_ms;
    uint64_t rng; /* the drain's random retry values and roundings */
};

/* stream_engine.c */
/* A streaming client sent bytes or hung up. */
void stream_read_streaming(stream_engine *e, stream_client *c);
/* The preamble for a stream starting now. */
sse_frame *stream_preamble(stream_engine *e);

/* stream_auth.c */
int stream_auth_start(stream_engine *e);
void stream_auth_stop(stream_engine *e);
/* Has the credentials of a GET /sse checked off the door's thread; the
 * connection is the route's until stream_auth_finish() starts its stream or
 * refuses it. */
void stream_auth_submit(stream_engine *e, door_conn *conn, const sse_request *req, const char *address,
                        stream_filter *filter);
/* The same for GET /presence, answered with the caller's tenant's list. */
void stream_auth_submit_presence(stream_engine *e, door_conn *conn, const char *authorization, const char *address,
                                 const char *request_id, int keep_alive, int head_only);
void stream_auth_finish(void *engine);

/* stream_client.c */
void client_init(stream_client *c);
/* Queues a frame (takes a reference); marks the client dirty.  A live frame
 * (bounded) that would take the queue past --sse_queue_max schedules the
 * close instead and returns -1: the client reads too slowly.  Snapshot and
 * replay frames are not bounded this way: the replay is paged by bytes
 * (tenant_replay_more) and a client goes live only with room in its queue. */
int client_enqueue(stream_engine *e, stream_client *c, sse_frame *f, int bounded);
/* Queues a keep-alive frame (bounded, as a live one) on a client that is then
 * written only when no dirty client waits: a live event is never queued for
 * writing behind a round of keep-alives.  A client that gets a live frame
 * meanwhile goes on the dirty list and takes its keep-alive with it. */
int client_enqueue_idle(stream_engine *e, stream_client *c, sse_frame *f);
/* Writes what the socket takes.  Returns -1 when the client is gone. */
int client_flush(stream_engine *e, stream_client *c);
void client_schedule_close(stream_engine *e, stream_client *c);
/* Queues a last frame, "retry: <retry_ms>", and closes the stream once it is
 * written; nothing else is queued after it (the client resumes elsewhere
 * with the last id it got).  -1 when the client is already closing. */
int client_drain(stream_engine *e, stream_client *c, unsigned retry_ms);
/* The door frees the connection: let go of everything the client holds. */
void client_release(stream_engine *e, stream_client *c);
/* Answers a refusal of a GET /sse (with Connection: close) and closes:
 * `retry_after` seconds in Retry-After when above 0 (a 429). */
void stream_refuse(stream_engine *e, door_conn *conn, unsigned status, const char *message, long retry_after);
/* The same for a client the stream owns, refused before its stream started. */
void client_reject(stream_engine *e, stream_client *c, unsigned status, const char *message);

/* stream_tenant.c */
stream_tenant *tenant_find(stream_engine *e, const char *name, size_t len);
/* What a new subscriber starts from, read from the store by the credential
 * worker (stream_auth.c) so that the engine thread does not wait on it: the
 * snapshot's frames, or for a resume the tenant's last id and the first page
 * of what the client missed. */
/* Events read from the store for one subscriber, as frames.  A list holds at
 * most about `max_bytes` of frames (0: no bound): past it, a replay page
 * stops there (the next page goes on from last_seq), and a snapshot keeps
 * only the ids of the rest, in `rest`, sent page by page as the subscriber's
 * socket drains.  So neither costs more memory than a page, whatever the
 * tenant stored. */
typedef struct frame_list {
    sse_frame **items;
    size_t n, cap;
    uint64_t after; /* replay: only ids above this */
    const stream_filter *filter; /* only the events it takes; NULL: all */
    size_t rows;       /* events read, taken or not */
    uint64_t last_seq; /* the highest id read, taken or not: where a replay goes on */
    size_t bytes, max_bytes;
    int keep_ids;           /* a snapshot: past max_bytes, keep ids in `rest` */
    uint64_t *rest;         /* owned */
    size_t nrest, caprest;
    int failed;
} frame_list;

/* The ids of a large snapshot still to send, oldest first (owned by its client). */
typedef struct snapshot_rest {
    uint64_t *ids;
    size_t n, next;
} snapshot_rest;

typedef struct tenant_view {
    int resume;             /* a resume after last_event_id (0: the snapshot) */
    uint64_t last_event_id;
    uint64_t max_seq;       /* the tenant's last id in the store at the read */
    frame_list frames;      /* the snapshot, or a resume's first page; owned, handed to the engine whole */
    int failed;             /* the store did not answer */
} tenant_view;

/* Reads the view, at most about `max_bytes` of frames (the rest of a snapshot
 * as ids); any thread (the store only).  -1 when the store failed. */
int tenant_view_read(store *s, const char *tenant, int resume, uint64_t last_event_id, size_t max_bytes,
                     const stream_filter *filter, tenant_view *v);
/* The most of a snapshot or replay a subscriber's queue holds at a time. */
size_t tenant_page_bytes(const stream_engine *e);
void tenant_view_clear(tenant_view *v);
/* ---- limits (stream_limits.c) ---------------------------------------- */

int stream_limits_init(stream_engine *e);
void stream_limits_free(stream_engine *e);
/* Whether `username` may open one more stream here (counts a refusal). */
int stream_limits_allow_stream(stream_engine *e, const char *username);
/* A stream of c->username starts, ends. */
void stream_limits_stream_opened(stream_engine *e, stream_client *c);
void stream_limits_stream_closed(stream_engine *e, stream_client *c);

/* ---- presence (stream_presence.c) ----------------------------------- */

typedef struct presence presence;
/* With --presence: the tables, the quarter-second tick, and with bus
 * forwarders a publisher to the other replicas.  0, or -1 (out of memory, no
 * forwarder to connect to). */
int presence_init(stream_engine *e);
void presence_free(stream_engine *e);
/* c (streaming, with its tenant and username) counts for its user. */
void presence_stream_opened(stream_engine *e, stream_client *c);
/* c asked for presence: it gets the tenant's list now (before its snapshot)
 * and the changes from here on.  -1 when out of memory. */
int presence_stream_started(stream_engine *e, stream_client *c);
void presence_stream_closed(stream_engine *e, stream_client *c);
/* Another replica's list or changes ("pr/" on the bus). */
void presence_bus_message(stream_engine *e, const bus_msg *m);
/* GET /presence: {"users":[{"username","connections"}]} for `tenant`,
 * malloc'd; NULL when out of memory. */
char *presence_list_json(stream_engine *e, const char *tenant);

/* Frees what a subscriber had of its own: the rest of a large snapshot, its
 * filter (out of its tenant's index first: tenant_unsubscribe). */
void client_extra_free(stream_client *c);
/* Subscribes an authenticated client from its view (which it consumes): the
 * snapshot or the resume, then whatever this process dispatched since the
 * read, then live.  -1 on a store fault (the client has been answered). */
int tenant_subscribe(stream_engine *e, stream_client *c, const char *tenant, tenant_view *v);
void tenant_unsubscribe(stream_engine *e, stream_client *c);
void tenant_dispatch(stream_engine *e, const bus_msg *m);
/* Continues a replaying client's catch-up while its queue has room. */
void tenant_replay_more(stream_engine *e, stream_client *c);
void tenants_close_user(stream_engine *e, const char *username, size_t len);
/* Queues a keep-alive comment for the subscribers of the tenants whose hash
 * bucket is `slice` modulo `nslices`: each tenant's turn comes once in
 * `nslices` calls (once the table grows, a tenant may move to another
 * bucket, and its next turn then comes up to a round early or late). */
void tenants_keepalive(stream_engine *e, unsigned slice, unsigned nslices);
void tenants_free(stream_engine *e);

#endif
