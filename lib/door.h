/*
 * door.h - the front door: the one owner of a server's port.
 *
 * Every server binary answers HTTP through a door.  The door is an epoll loop
 * on one thread that owns every client connection for its whole life: it
 * accepts, does the TLS handshake (--secure), reads each request (head and
 * body, with deadlines, framed by RFC 9112: http_head.h), and gives it to
 * whoever answers it:
 *   - a route a service registered (method and path; door_route_add), which
 *     answers in the door: the stream service's GET /sse, the ingest
 *     service's fast POST /insert;
 *   - everything else goes to the request/response server (ulfius on
 *     libmicrohttpd), one request at a time over a socket pair, while the
 *     door keeps the client's connection (door_bridge.c).  So a keep-alive
 *     connection may carry any sequence of requests, /sse included.
 * The door knows nothing of SSE or inserts.  It is modelled on the split of
 * Redis's ae.c (a loop that knows no clients) and of nginx modules (handlers
 * that plug in through a table of functions).
 *
 * A connection is either the door's (reading a request, relaying one to
 * libmicrohttpd, writing an answer) or, once a route handler has taken it,
 * its handler's, which then writes through door_conn_writev() and is called
 * back through its door_conn_ops.  Each turn of the loop:
 *   1. epoll_wait; accept, read, handshake, relay; watched descriptors and
 *      timers call their functions;
 *   2. write the connections that asked for it (door_want_write), at most
 *      DOOR_WRITE_BUDGET a turn, oldest first, then a few low-priority ones
 *      (door_want_write_idle);
 *   3. end-of-turn hooks; then close what was scheduled to close.
 * Everything here runs on the door's thread unless a function says otherwise.
 */
#ifndef BROKER_DOOR_H
#define BROKER_DOOR_H

#include "config.h"
#include "http_head.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef struct door door;
typedef struct door_conn door_conn;
struct http_server;

/* What a route handler gets: the whole request (head and body) as it came. */
typedef struct door_request {
    const http_head *head;
    const char *bytes;        /* the head, then the body */
    const char *body;
    size_t body_len;          /* 0 for a chunked body: handlers that take one decline it */
    char request_id[129];     /* the request's X-Request-Id, or one made for it */
} door_request;

/* Called back for a connection its handler owns. */
typedef struct door_conn_ops {
    /* The connection may be written (it asked with door_want_write*). */
    void (*flush)(door_conn *c, void *arg);
    /* Bytes or a hang-up came on a connection its handler owns. */
    void (*readable)(door_conn *c, void *arg);
    /* The connection is being freed (closed by anyone): let go of it. */
    void (*closed)(door_conn *c, void *arg);
    void *arg;
} door_conn_ops;

/* A route's handler.  Returns 1 when it took the request (the connection is
 * its handler's until door_conn_release()), 0 to decline it (the
 * request/response server answers it). */
typedef int (*door_route_fn)(door_conn *c, const door_request *req, void *arg);

/* Creates a door for the process: it listens on --bind:--port (with TLS when
 * --secure) and on --http_port, and hands what no route takes to `http`
 * (started; NULL: such requests get 404).  `conn_extra`:
 * bytes each connection carries for the handlers (door_conn_data); the
 * largest any service needs.  reuse_port: several processes share the port. */
door *door_new(const broker_config *cfg, struct http_server *http, size_t conn_extra, int reuse_port);
/* Runs the loop on a thread of its own. */
int door_start(door *d);
/* Stops the loop and closes every connection (each owner's `closed` is
 * called), then frees the door. */
void door_free(door *d);
/* Asks the doors of the process to load their certificate and key again
 * (SIGHUP); any thread.  The doors also notice changed files by themselves. */
void door_reload_certificates(void);
/* The start-up line: what the door serves, and where. */
void door_log_listening(const door *d, const char *service);

/* ---- what services plug in (before door_start) ------------------------ */

/* Requests for `method` and `path` (exact, a "?query" allowed; or every path
 * under it with `prefix`) go to `fn`. */
int door_route_add(door *d, const char *method, const char *path, int prefix, door_route_fn fn, void *arg);
/* `fn` is called on the door's thread whenever `fd` is readable. */
int door_watch(door *d, int fd, void (*fn)(void *arg), void *arg);
/* `fn` is called about every `period_ms` milliseconds. */
int door_timer_add(door *d, int64_t period_ms, void (*fn)(void *arg), void *arg);
/* `fn` is called at the end of every turn (after the writes); it returns 1
 * when it has more to do, so the next turn does not sleep. */
int door_turn_hook_add(door *d, int (*fn)(void *arg), void *arg);
/* At door_free(), after the loop has stopped: `stop` (stop workers; close,
 * with door_conn_close, every connection the service holds), then the door
 * frees every connection, then `release` (free what the service has left). */
int door_on_shutdown(door *d, void (*stop)(void *arg), void (*release)(void *arg), void *arg);
/* Asks the loop to run a turn soon (any thread). */
void door_wake(door *d);

/* ---- draining (SIGTERM) ------------------------------------------------ */

/* `fn` is called on the door's thread when the drain starts (door_drain), with
 * the door_now_ms() by which it ends: the service winds down what it holds
 * (the stream service closes its streams, spread over the window). */
int door_on_drain(door *d, void (*fn)(void *arg, int64_t deadline_ms), void *arg);
/* Starts the drain (any thread; the first call counts): from now on
 * door_draining() is true, and the drain functions run on the door's thread.
 * 1 when one is set, 0 when the process has nothing to drain (no
 * door_on_drain): it may stop at once. */
int door_drain(door *d, int64_t window_ms);
/* Whether a drain was asked for (any thread): /readyz then answers 503. */
int door_draining(const door *d);
/* Whether the drain is over (any thread): no connection is held by a handler
 * (a stream) and none has a request in flight.  Idle keep-alive connections
 * do not count: closing one between requests loses nothing. */
int door_drained(const door *d);
/* The door's milliseconds clock (monotonic). */
int64_t door_now_ms(void);
const broker_config *door_config(const door *d);

/* ---- connections ------------------------------------------------------ */

/* The handler's bytes of a connection (`conn_extra` of door_new), and back:
 * they exist once the handler owns the connection (door_conn_own zeroes
 * them); before that the door's own fields are in their place. */
void *door_conn_data(door_conn *c);
door_conn *door_conn_of(void *data);
/* Takes the connection for good (a stream): from now on `ops` are called for
 * it (`ops` must outlive it).  The request is consumed; bytes the client
 * sends later reach ops->readable.  -1 when the door has no room for
 * another handler's table (a few per process). */
int door_conn_own(door_conn *c, const door_conn_ops *ops);
/* The handler is done with its request: the door writes what it queued
 * (door_conn_queue), then reads the connection's next request (or closes it,
 * when the request said so). */
void door_conn_release(door_conn *c);
/* Hands the request the handler took (and still has in door_request) to the
 * request/response server after all, as if the handler had declined it. */
void door_conn_pass(door_conn *c);
/* Writes what the connection takes now: >= 0 bytes written, -1 when the
 * connection is gone (it is then scheduled to close).  Plain or TLS alike.
 * Also from another thread, while the handler owns the connection and the
 * door thread does not call the handler for it (an insert with its worker). */
ssize_t door_conn_writev(door_conn *c, const struct iovec *iov, int n);
/* Copies bytes to write after the handler releases the connection (what
 * door_conn_writev could not write).  0, or -1 when out of memory. */
int door_conn_queue(door_conn *c, const char *bytes, size_t len);
/* Writes a whole answer (its head alone when `head_only`: a HEAD request)
 * and lets the door go on with the connection (door_conn_release); a 503
 * when out of memory.  For a handler that took the request, on the door's
 * thread, in the same turn or a later one. */
struct http_answer;
void door_conn_answer(door_conn *c, const struct http_answer *a, int head_only);
/* Writes an error answer (http_answer_error) with Connection: close, and
 * schedules the close.  `extra`: more header lines, or NULL.  An owned
 * connection (refused before it wrote anything) gets its `closed` call first. */
void door_conn_refuse(door_conn *c, unsigned status, const char *request_id, const char *extra,
                      const char *message);
void door_conn_close(door_conn *c);
int door_conn_closing(const door_conn *c);
/* Asks for a `flush` call this turn (bounded by the write budget, oldest
 * first), or, idle, after every connection that asked the first way. */
void door_want_write(door_conn *c);
void door_want_write_idle(door_conn *c);
/* Reads whatever the client sent on a connection its handler owns (and
 * throws it away): -1 when the client hung up or failed. */
int door_conn_drain(door_conn *c);
/* The client's address. */
int door_conn_peer(const door_conn *c, struct sockaddr_storage *addr);
/* The client's address as text, for the per-address limits: the peer's, or
 * the one a trusted proxy's X-Forwarded-For names (http_client_address). */
void door_conn_client_address(const door_conn *c, const door_request *req, char *out, size_t size);
/* Bytes or a hang-up came while the handler had the connection. */
int door_conn_unread(const door_conn *c);

#endif
