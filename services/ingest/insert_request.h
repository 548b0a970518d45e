/*
 * insert_request.h - decides whether a POST /insert is one the front door's
 * insert route answers itself (ingest_door.c).
 *
 * The route answers only the plainest form of the request, the one a front
 * end's fetch() or a load generator sends over keep-alive; whatever else it
 * meets (chunked bodies, Expect, Connection: close, Basic credentials, a body
 * too large for one read, an odd header line) it hands, unread, to the
 * request/response server, whose answer is then the only one.  So this parser
 * never has to produce an error: it says "mine", "not mine" or "not yet".
 * Like sse_request.c it is strict, bounded, never allocates, and is fuzzed.
 */
#ifndef BROKER_INSERT_REQUEST_H
#define BROKER_INSERT_REQUEST_H

#include <stddef.h>

typedef enum insert_verdict {
    INSERT_NEED_MORE = 0, /* the request has not all arrived */
    INSERT_FAST = 1,      /* the route's: *out says where the parts are */
    INSERT_OTHER = 2,     /* hand the connection to the request/response server */
} insert_verdict;

typedef struct insert_request {
    size_t auth_off, auth_len; /* the Authorization value, "Bearer ..." */
    size_t id_off, id_len;     /* the X-Request-Id value; id_len 0 when absent */
    size_t body_off, body_len;
    size_t total_len;          /* head and body */
} insert_request;

/* `buf` holds the first `len` bytes of a connection's next request; a request
 * must fit in `cap` bytes, and its body in `max_body` (--max_body). */
insert_verdict insert_request_parse(const char *buf, size_t len, size_t cap, size_t max_body, insert_request *out);

#endif
