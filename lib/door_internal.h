/*
 * door_internal.h - the parts of the front door, shared by its files:
 *   door.c         the loop, listeners, connections, reading requests, routes
 *   door_bridge.c  requests relayed to libmicrohttpd over socket pairs
 *   door_tls.c     TLS: certificates, their reload, the handshake, I/O
 */
#ifndef BROKER_DOOR_INTERNAL_H
#define BROKER_DOOR_INTERNAL_H

#include "door.h"
#include "metrics.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#define DOOR_HEAD_MAX 8192          /* a larger request head answers 431 */
#define DOOR_HEAD_TIMEOUT_MS 10000  /* a request (head and body) must arrive within this */
#define DOOR_IDLE_MS 20000          /* an answered connection may idle this long */
#define DOOR_WRITE_BUDGET 128       /* connections written per turn (door.c says why) */
#define DOOR_IDLE_WRITE_MIN 8       /* low-priority writes a turn whatever the others left */
#define DOOR_READ_CHUNK 16384
#define DOOR_LINGER_MS 2000         /* a refused request's unread bytes are drained this long at most */

/* What an epoll event's pointer points to: its first byte says which. */
enum door_tag {
    TAG_LISTENER,
    TAG_TIMERFD,
    TAG_WAKE,
    TAG_WATCH,
    TAG_BRIDGE,
    TAG_CONN
};
typedef uint8_t door_tag;

typedef enum conn_state {
    CONN_HANDSHAKE, /* TLS handshake under way */
    CONN_READING,   /* reading its next request (or idle between requests) */
    CONN_HANDLER,   /* a route handler has its request; not read meanwhile */
    CONN_QUEUED,    /* waiting for a free libmicrohttpd slot */
    CONN_BRIDGED,   /* its request is with libmicrohttpd; the answer is relayed */
    CONN_WRITING,   /* writing the door's answer, then reading again or closing */
    CONN_LINGER,    /* answered and half-closed: what the client still sends is read and dropped */
    CONN_OWNED      /* its handler's for good (door_conn_own) */
} conn_state;

typedef struct door_bridge door_bridge;

/* A request in flight: what a connection holds only while it has one, so an
 * idle connection or a stream costs none of it. */
typedef struct conn_io {
    char *in;             /* bytes read from the client, the request first */
    size_t in_len, in_cap;
    http_head head;
    int head_done;
    size_t req_len;       /* head and body, once known (0: not yet) */
    http_chunked chunked;
    int continue_sent;
    char *out;            /* the door's bytes to write to the client */
    size_t out_len, out_off;
    door_bridge *bridge;
    door_conn *queue_next; /* CONN_QUEUED: the next in the door's queue */
    door_request req;
} conn_io;

/* Every connection of a process costs this much while it streams (plus its
 * handler's bytes), so it is kept small: the door's fields for a request in
 * flight share their place with the handler's bytes, which exist only once
 * the handler owns the connection (door_conn_own). */
struct door_conn {
    uint8_t tag; /* TAG_CONN */
    uint8_t state : 4, owner : 4; /* owner: CONN_OWNED: its door_conn_ops, 1 + an index in the door's table */
    uint8_t refusal; /* TLS over a connection limit: the status to answer once the handshake is done */
    uint8_t closing : 1, wants : 1, idle_wants : 1, served : 1, unread : 1, close_after : 1, redirect_port : 1,
        hello_seen : 1;
    int fd;
    SSL *ssl;
    door_conn *want_next, *idle_next, *close_next;
    /* Until CONN_OWNED; then the handler's bytes (door_conn_data) start here. */
    conn_io *io;
    int64_t deadline_ms;
    door_conn *prev, *next; /* the door's list of the connections it holds */
};

typedef struct door_listener {
    door_tag tag; /* TAG_LISTENER */
    int fd;
    int redirect; /* --http_port: answers 308 to https (and ACME challenges) */
    int tls;
    door *d;
} door_listener;

typedef struct door_watch_entry {
    door_tag tag; /* TAG_WATCH */
    int fd;
    void (*fn)(void *arg);
    void *arg;
} door_watch_entry;

typedef struct door_route {
    const char *method, *path;
    int prefix;
    door_route_fn fn;
    void *arg;
} door_route;

typedef struct door_timer {
    int64_t period_ms, due_ms;
    void (*fn)(void *arg);
    void *arg;
} door_timer;

typedef struct door_hook {
    int (*fn)(void *arg);
    void *arg;
} door_hook;

typedef struct door_tls door_tls;

#define DOOR_MAX_ROUTES 32
#define DOOR_MAX_WATCHES 8
#define DOOR_MAX_TIMERS 8
#define DOOR_MAX_HOOKS 8
#define DOOR_MAX_SHUTDOWN 4
#define DOOR_MAX_DRAINS 4

struct door {
    const broker_config *cfg;
    struct http_server *http;
    size_t conn_size; /* struct door_conn and the handlers' bytes */
    int epfd, timer_fd, wake_fd;
    door_tag timer_tag, wake_tag;
    door_listener main, redirect;
    int64_t accept_paused_until_ms;
    int64_t next_second_ms; /* the door's own once-a-second work */
    _Atomic int stop;
    pthread_t thread;
    int thread_started;

    door_route routes[DOOR_MAX_ROUTES];
    size_t nroutes;
    door_watch_entry watches[DOOR_MAX_WATCHES];
    size_t nwatches;
    door_timer timers[DOOR_MAX_TIMERS];
    size_t ntimers;
    door_hook hooks[DOOR_MAX_HOOKS];
    size_t nhooks;
    struct {
        void (*stop)(void *arg);
        void (*release)(void *arg);
        void *arg;
    } shutdown[DOOR_MAX_SHUTDOWN];
    size_t nshutdown;
    struct {
        void (*fn)(void *arg, int64_t deadline_ms);
        void *arg;
    } drains[DOOR_MAX_DRAINS];
    size_t ndrains;
    /* The drain: its deadline (door_now_ms; 0 = none asked), set by
     * door_drain() on any thread; whether the loop has called the drain
     * functions; whether nothing is left to wait for (door_drained). */
    _Atomic int64_t drain_deadline_ms;
    int drain_started;
    _Atomic int drained;

    door_conn *conns;     /* the door's connections (not owned by a handler) */
    size_t nconns;        /* every connection, owned ones included */
    size_t nlive;         /* those not closing: what --max_connections counts */
    door_conn *wants, **wants_tail;
    door_conn *idle_wants, **idle_wants_tail;
    door_conn *to_close;
    int more; /* a hook or the write budget left work: do not sleep */

    /* libmicrohttpd slots (door_bridge.c) */
    size_t bridges, bridges_max;
    door_conn *queued, **queued_tail; /* waiting for a slot, oldest first */
    door_bridge *parked, *parked_tail;  /* pairs between their client's requests, oldest first */
    door_bridge *dead_bridges;          /* closed this turn: freed at its end */
    size_t nqueued, queued_max;

    door_tls *tls; /* NULL without --secure */
    const door_conn_ops *owners[4]; /* the handlers that own connections (door_conn_own) */
    size_t nowners;

    /* connection limits */
    struct countmap *conns_by_address;
    uint32_t *fd_addr;
    size_t fd_addr_cap;

    metric_value *m_relayed, *m_refused_connections, *m_refused_per_address, *m_relay_refused, *m_tls_failed;
};

/* The process's door: a process has one (door_new refuses a second), so a
 * connection need not carry a pointer to it. */
extern door *door_process;
static inline door *conn_door(const door_conn *c)
{
    (void)c;
    return door_process;
}

/* door.c */
void door_conn_read(door_conn *c);         /* reads and frames its next request */
void door_conn_request_done(door_conn *c); /* the request is answered: consume it, go on */
void door_conn_idle(door_conn *c);         /* between requests: let go of the buffers */
void door_conn_refuse_pending(door_conn *c); /* answers the refusal a TLS connection waited for */
int door_conn_out_pending(const door_conn *c);
/* Writes what the client takes now (after what is queued), queues the rest. */
int door_conn_send(door_conn *c, const char *bytes, size_t len);
int door_conn_flush_out(door_conn *c);     /* writes the door's bytes; -1 gone */
ssize_t door_conn_recv(door_conn *c, char *buf, size_t len); /* plain or TLS; -2: would block */
int door_watch_fd(door *d, int fd, uint32_t events, void *tag);
void door_conn_unlist(door_conn *c);

/* door_bridge.c */
void bridge_start(door_conn *c);
void bridge_event(door_bridge *b, uint32_t events);
void bridge_client_drained(door_conn *c); /* the client took the relayed bytes: read more */
void bridge_close(door_conn *c);          /* the client is gone, or goes elsewhere: its pair closes */
void bridge_expire_queued(door *d, int64_t now);
void bridge_reap(door *d);                /* frees the pairs closed this turn */

/* door_tls.c */
door_tls *door_tls_new(const broker_config *cfg);
void door_tls_free(door_tls *t);
void door_tls_check_reload(door *d); /* SIGHUP or changed files */
void door_tls_request_reload(void);  /* from a signal handler's thread */
SSL *door_tls_accept(door *d, int fd);
void door_tls_handshake(door_conn *c);
ssize_t door_tls_recv(door_conn *c, char *buf, size_t len);
ssize_t door_tls_writev(door_conn *c, const struct iovec *iov, int n);

#endif
