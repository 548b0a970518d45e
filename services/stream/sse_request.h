/*
 * sse_request.h - parses the head of a GET /sse request.
 *
 * The stream service reads request heads itself (it owns SSE connections, see
 * stream.h); this parser is the only code that looks at those bytes, so it is
 * strict, bounded and never allocates.  It is covered by unit tests and a
 * libFuzzer target (tests/fuzz).
 */
#ifndef BROKER_SSE_REQUEST_H
#define BROKER_SSE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define SSE_HEAD_MAX 8192 /* a larger head answers 431 */
#define SSE_TOKEN_MAX 4096

typedef enum sse_route {
    SSE_ROUTE_NEED_MORE = 0, /* not enough bytes to decide yet */
    SSE_ROUTE_SSE = 1,       /* "GET /sse" or "GET /sse?...": the stream service's */
    SSE_ROUTE_OTHER = 2,     /* anything else: the request/response server's */
    SSE_ROUTE_BAD = 3,       /* not an HTTP request line: answered 400 at once */
    SSE_ROUTE_INSERT = 4,    /* "POST /insert ": the engine's where it answers inserts (stream_insert.c) */
} sse_route;

/* Decides from the first bytes of a connection whose request it is.  The
 * request line must be METHOD SP TARGET SP VERSION with a method of capital
 * letters and no control byte before its end, so that garbage (binary, NUL
 * bytes) is refused here and never reaches a parser that reads it another way. */
sse_route sse_request_route(const char *buf, size_t len);

/* Length of the head (through the blank line) when `buf` holds a whole one;
 * 0 when more bytes are needed. */
size_t sse_request_head_length(const char *buf, size_t len);

typedef struct sse_request {
    char authorization[SSE_TOKEN_MAX + 1]; /* "" when absent */
    char access_token[SSE_TOKEN_MAX + 1];  /* query parameter, "" when absent */
    int has_last_event_id;
    uint64_t last_event_id;                /* header wins over the query parameter */
} sse_request;

/* Parses a whole head.  Returns 0, or -1 with *why set to a reason for a 400. */
int sse_request_parse(const char *head, size_t len, sse_request *out, const char **why);

#endif
