/*
 * stream.h - GET /sse: the event stream, and the front door of its port.
 *
 * The stream engine is an epoll event loop of its own (one thread), because
 * SSE connections are many, long-lived and mostly idle: ulfius's thread per
 * connection cannot hold tens of thousands of them (bench/RESULTS.md).  The
 * engine accepts every connection on its port and peeks at the first bytes:
 *   - "GET /sse" is its own: it reads the head, authenticates, sends the
 *     snapshot (latest event per name) or the replay after Last-Event-ID, and
 *     then live events from the bus;
 *   - where the process serves inserts (the all-in-one broker, broker-ingest),
 *     a plain keep-alive "POST /insert" is its own too (stream_insert.c);
 *   - anything else is handed, unread, to the request/response server
 *     (ulfius on libmicrohttpd) with MHD_add_connection.  So one port serves
 *     the whole API.  A keep-alive connection that the request/response
 *     server already owns and that then asks for /sse gets a 307 to the same
 *     URL with "Connection: close": the client (EventSource follows
 *     redirects) comes back on a new connection, which the engine takes.
 *
 * Each event is serialised once into a reference-counted frame shared by every
 * subscriber; a subscriber's queue is a ring of frame pointers written with
 * writev, every pending frame in one call.  A subscriber whose queue passes
 * --sse_queue_max bytes is disconnected (it reconnects with Last-Event-ID and
 * loses nothing).
 */
#ifndef BROKER_STREAM_H
#define BROKER_STREAM_H

#include "runtime.h"

typedef struct stream_engine stream_engine;

/* Creates the engine on `listen_fd` (bound, listening, non-blocking; owned by
 * the engine from now on).  `http` receives every connection that is not
 * GET /sse (started with listen_self=0).  `bus_endpoints`: where to subscribe;
 * NULL for an engine without streams, whose GET /sse goes to `http` like any
 * other request (broker-ingest, which runs the engine for its inserts).
 * Also sets rt->ready_check to the engine's bus readiness. */
stream_engine *stream_engine_new(broker_runtime *rt, http_server *http, int listen_fd, const char *bus_endpoints);
/* Runs the loop on a thread of its own. */
int stream_engine_start(stream_engine *e);
/* Stops the loop, closes every stream and frees the engine. */
void stream_engine_free(stream_engine *e);

/* A listening TCP socket on bind:port; reuse_port lets several processes
 * share the port (the kernel spreads connections among them).  -1 on error. */
int stream_listen(const char *bind, long port, int reuse_port);

/* Serves until SIGTERM/SIGINT: listens on --bind:--port (reuse_port: shared
 * with other processes), runs an engine subscribed to `bus_endpoints` that
 * hands non-SSE connections to `http` (started with listen_self=0), logs
 * `name` as listening, and stops the engine at the signal.  With
 * answer_inserts (a process that also serves POST /insert, with rt->bus open)
 * the engine answers plain keep-alive inserts itself, their checks and writes
 * done by the ingest queue's thread (stream_insert.c).  0, or -1 when it could
 * not start (logged). */
int stream_serve(broker_runtime *rt, http_server *http, int reuse_port, const char *bus_endpoints, int answer_inserts,
                 const char *name);

/* GET /sse on the request/response server: the 307 described above. */
int stream_add_routes(http_server *s, broker_runtime *rt);

#endif
