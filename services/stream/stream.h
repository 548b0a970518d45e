/*
 * stream.h - GET /sse: the event stream.
 *
 * The stream service plugs into the front door (door.h): the door routes
 * GET /sse to it, and it keeps the connection for the stream's life.  It
 * checks the credentials (off the door's thread), sends the snapshot (the
 * latest event of every name) or the replay after Last-Event-ID, then live
 * events from the bus.
 *
 * Each event is serialised once into a reference-counted frame shared by every
 * subscriber; a subscriber's queue is a ring of frame pointers written with
 * one writev (or, over TLS, one record) for all its pending frames.  A
 * subscriber whose queue passes --sse_queue_max bytes is disconnected (it
 * reconnects with Last-Event-ID and loses nothing).
 */
#ifndef BROKER_STREAM_H
#define BROKER_STREAM_H

#include "door.h"
#include "runtime.h"

typedef struct stream_engine stream_engine;

/* The bytes each front-door connection carries for the stream service
 * (door_new's conn_extra). */
size_t stream_conn_size(void);

/* Plugs GET /sse into `d`, subscribed to the bus at `bus_endpoints`; sets
 * rt->ready_check to the bus's readiness.  The door frees the engine at
 * door_free().  NULL when it could not start (logged). */
stream_engine *stream_attach(door *d, broker_runtime *rt, const char *bus_endpoints);

/* GET /sse on the request/response server, for what the door does not take
 * there: "/sse/" (which ulfius takes for "/sse") answers 404, other methods
 * 405, and OPTIONS the CORS preflight. */
int stream_add_routes(http_server *s, broker_runtime *rt);

#endif
