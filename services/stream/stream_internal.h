/*
 * stream_internal.h - the parts of the stream engine, shared by its files:
 *   sse_frame.c       reference-counted, serialised SSE frames
 *   stream_client.c   one subscriber: its queue, writes, close
 *   stream_tenant.c   tenants: subscribers, live dispatch, gap fill, replay
 *   stream_engine.c   the epoll loop: accept, route, heads, bus, timers
 *   stream_insert.c   POST /insert answered by the engine (all-in-one broker)
 * Everything here runs on the engine's one thread; nothing is locked.
 */
#ifndef BROKER_STREAM_INTERNAL_H
#define BROKER_STREAM_INTERNAL_H

#include "bus.h"
#include "metrics.h"
#include "sse_request.h"
#include "stream.h"

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

/* ---- epoll tags ------------------------------------------------------ */

typedef enum watch_kind {
    WATCH_LISTENER,
    WATCH_BUS,
    WATCH_TIMER,
    WATCH_WAKE,
    WATCH_INSERTS,
    WATCH_AUTH,
    WATCH_CLIENT
} watch_kind;

/* ---- subscribers ----------------------------------------------------- */

typedef struct stream_tenant stream_tenant;

/* CLIENT_INSERTING and CLIENT_ANSWERING: see stream_insert.c; CLIENT_CONNECTING:
 * see stream_auth.c. */
typedef enum client_state {
    CLIENT_HEAD,
    CLIENT_STREAMING,
    CLIENT_INSERTING,
    CLIENT_ANSWERING,
    CLIENT_CONNECTING
} client_state;

#define CLIENT_INLINE_QUEUE 4 /* a power of two */

typedef struct stream_client {
    watch_kind kind; /* WATCH_CLIENT: first, so an epoll pointer tells what it is */
    int fd;
    uint8_t state;
    uint8_t replaying; /* catching up from the store; live events wait */
    uint8_t dirty;     /* on the engine's flush list */
    uint8_t closing;   /* on the engine's close list */
    uint8_t served;    /* has had a request answered: idle keep-alive, not a slow head */
    uint8_t unread;    /* CLIENT_INSERTING/ANSWERING/CONNECTING: bytes or a hang-up came meanwhile */
    uint8_t idle_listed; /* on the engine's list of keep-alives to write when nothing else waits */
    uint32_t qhead, qlen, qcap; /* ring of frames: `queue`, which is `inline_queue` until it outgrows it */
    uint32_t head_off;          /* bytes of the first frame already written */
    size_t qbytes;              /* bytes queued, not yet written */
    sse_frame **queue;
    /* A subscriber that keeps up holds one or two frames at a time: they live
     * here, so fan-out allocates nothing per subscriber (measured: a
     * malloc/free pair per subscriber per event otherwise). */
    sse_frame *inline_queue[CLIENT_INLINE_QUEUE];
    uint64_t last_seq; /* highest event id queued for this client */
    /* One word, two lives: a connection is a head (deadline) or a stream
     * (snapshot) and never goes back, and a field of its own would cost every
     * idle subscriber 8 bytes. */
    union {
        int64_t deadline_ms;            /* CLIENT_HEAD: when an unfinished head is dropped */
        struct snapshot_rest *snapshot; /* CLIENT_STREAMING: what of a large snapshot is still to send; NULL */
    };
    stream_tenant *tenant;
    struct stream_client *prev, *next; /* the tenant's list, or the engine's head list (every state but streaming) */
    struct stream_client *dirty_next, *close_next, *idle_next;
    char *username;
} stream_client;

/* ---- tenants --------------------------------------------------------- */

struct stream_tenant {
    char *name;
    uint64_t last_seq;       /* highest event id dispatched from the bus (or read at creation) */
    stream_client *clients;  /* doubly linked */
    size_t nclients;
    stream_tenant *hnext;    /* hash chain */
};

/* ---- the engine ------------------------------------------------------ */

struct stream_engine {
    broker_runtime *rt;
    http_server *http;
    int epfd, listen_fd, timer_fd, wake_fd;
    watch_kind listener_tag, bus_tag, timer_tag, wake_tag, inserts_tag, auth_tag;
    char *bus_endpoints;
    bus_sub *bus;
    int bus_fd;
    _Atomic int ready;  /* bus connected: read by /readyz from other threads */
    _Atomic int stop;
    pthread_t thread;
    int thread_started;
    size_t queue_max;
    int64_t next_keepalive_ms;  /* when the next slice of keep-alives is due */
    unsigned keepalive_slice;   /* which one: 0 .. --keepalive - 1 */
    int64_t accept_paused_until_ms;

    stream_tenant **tenants; /* hash table */
    size_t tenant_mask, ntenants;
    stream_client *heads;    /* clients still sending their request head */
    stream_client *dirty, **dirty_tail; /* clients with frames to write, oldest first */
    stream_client *idle, **idle_tail;   /* clients with only a keep-alive to write: after the dirty ones */
    stream_client *to_close; /* clients to close at the end of this turn */
    size_t nclients;

    sse_frame *preamble;  /* HTTP response head + "retry: 3000" */
    sse_frame *keepalive; /* ": keep-alive" */

    struct workq *auth;           /* checks the credentials of new subscribers (stream_auth.c) */
    uint64_t user_changes;        /* user messages (revoked, deleted...) taken from the bus */
    struct ingest_queue *inserts; /* NULL: every insert goes to the request/response server */
    struct workq_item *inserts_todo, **inserts_todo_tail; /* framed this turn, for the ingest queue */

    metric_value *m_clients, *m_delivered, *m_dropped_slow, *m_gaps, *m_rejected, *m_fast, *m_handed_off;
    metric_histogram *m_latency; /* an event's stamp to its frame queued for this process's subscribers */
    metric_value *m_replay_pages; /* replay pages the engine thread read from the store */

    /* Limits (stream_limits.c); a limit of 0 is off, and its tables NULL. */
    long max_connections, max_connections_per_ip, max_streams_per_user;
    struct countmap *conns_by_address, *streams_by_user;
    uint32_t *fd_addr; /* by descriptor: the address key its connection counts under, 0 = none */
    size_t fd_addr_cap;
    metric_value *m_refused_connections, *m_refused_per_address, *m_refused_streams;
    uint64_t delivered; /* frames written this turn; added to m_delivered once per turn */
};

#define HEAD_TIMEOUT_MS 10000     /* a request must arrive within this */
#define KEEPALIVE_IDLE_MS 20000   /* an answered connection may idle this long, as on the other server */
#define REQUEST_PEEK_MAX 16384    /* a request the engine answers fits in one peek of this */

/* stream_engine.c */
int64_t stream_mono_ms(void);
/* Reads (peeks at) a connection's next request and decides whose it is. */
void stream_read_head(stream_engine *e, stream_client *c);
/* Gives a connection, with its bytes unread, to the request/response server. */
void stream_hand_off(stream_engine *e, stream_client *c);
/* Called when c's next request is not whole yet: it waits for more bytes,
 * unless the kernel will take no more (then the other server reads it). */
void stream_wait_for_more(stream_engine *e, stream_client *c);

/* A streaming client sent bytes or hung up. */
void stream_read_streaming(stream_engine *e, stream_client *c);

/* stream_auth.c */
int stream_auth_start(stream_engine *e);
void stream_auth_stop(stream_engine *e);
/* Has c's credentials checked off the engine thread; c is CLIENT_CONNECTING
 * until stream_auth_finish() starts its stream or refuses it. */
void stream_auth_submit(stream_engine *e, stream_client *c, const sse_request *req);
void stream_auth_finish(stream_engine *e);

/* stream_insert.c */
int stream_inserts_start(stream_engine *e);
void stream_inserts_stop(stream_engine *e);
/* A POST /insert at the head of c's bytes (peeked, `len` of at most `cap`). */
void stream_insert_read(stream_engine *e, stream_client *c, const char *buf, size_t len, size_t cap);
/* Hands the inserts framed this turn to the ingest queue, all at once. */
void stream_inserts_submit(stream_engine *e);
/* Answers (or hands off) every insert the ingest queue has finished. */
void stream_inserts_finish(stream_engine *e);
/* c's answer is written: wait for its next request. */
void stream_insert_answered(stream_engine *e, stream_client *c);

/* stream_client.c */
stream_client *client_new(stream_engine *e, int fd);
/* Queues a frame (takes a reference); marks the client dirty.  A live frame
 * (bounded) that would take the queue past --sse_queue_max schedules the
 * close instead and returns -1: the client reads too slowly.  Snapshot and
 * replay frames are not bounded this way: the replay is paged by bytes
 * (tenant_replay_more) and a client goes live only with room in its queue. */
int client_enqueue(stream_engine *e, stream_client *c, sse_frame *f, int bounded);
/* Puts the client at the end of the engine's list of sockets to write (the
 * list is written in order, FLUSH_BUDGET sockets a turn). */
void client_mark_dirty(stream_engine *e, stream_client *c);
/* Takes the first client off that list; NULL when it is empty. */
stream_client *client_dirty_pop(stream_engine *e);
/* Queues a keep-alive frame (bounded, as a live one) on a client that is then
 * written only when no dirty client waits: a live event is never queued for
 * writing behind a round of keep-alives.  A client that gets a live frame
 * meanwhile goes on the dirty list and takes its keep-alive with it. */
int client_enqueue_idle(stream_engine *e, stream_client *c, sse_frame *f);
/* Takes the first client off the keep-alive list; NULL when it is empty. */
stream_client *client_idle_pop(stream_engine *e);
/* Writes what the socket takes.  Returns -1 when the client is gone. */
int client_flush(stream_engine *e, stream_client *c);
void client_schedule_close(stream_engine *e, stream_client *c);
void client_destroy(stream_engine *e, stream_client *c);
/* Writes a small complete HTTP answer and schedules the close. */
void client_reject(stream_engine *e, stream_client *c, int status, const char *reason, const char *message);
/* The same with Retry-After: `retry_after` seconds (a 429), when above 0. */
void client_reject_after(stream_engine *e, stream_client *c, int status, const char *reason, const char *message,
                         long retry_after);

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
    uint64_t last_seq;
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
                     tenant_view *v);
/* The most of a snapshot or replay a subscriber's queue holds at a time. */
size_t tenant_page_bytes(const stream_engine *e);
void tenant_view_clear(tenant_view *v);
/* ---- limits (stream_limits.c) ---------------------------------------- */

int stream_limits_init(stream_engine *e);
void stream_limits_free(stream_engine *e);
/* A new connection (counted in nclients): 0 admitted, -1 refused (answered,
 * closing).  Counts it under its address until stream_limits_release(). */
int stream_limits_admit(stream_engine *e, stream_client *c, const struct sockaddr_storage *addr);
/* Before a connection's descriptor is closed or handed to the other server. */
void stream_limits_release(stream_engine *e, int fd);
/* Whether `username` may open one more stream here (counts a refusal). */
int stream_limits_allow_stream(stream_engine *e, const char *username);
/* A stream of c->username starts, ends. */
void stream_limits_stream_opened(stream_engine *e, stream_client *c);
void stream_limits_stream_closed(stream_engine *e, stream_client *c);

/* Frees what a subscriber still had of a large snapshot. */
void tenant_snapshot_free(stream_client *c);
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
