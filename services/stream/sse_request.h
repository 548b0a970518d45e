/*
 * sse_request.h - parses the head of a GET /sse request.
 *
 * The front door frames the request (lib/http_head.h) and gives GET /sse to
 * the stream service; this parser reads what the stream needs of the head
 * (credentials, Last-Event-ID, which events, presence).  Strict, bounded,
 * never allocates; covered by unit tests and a libFuzzer target (tests/fuzz).
 * The `events` value is kept raw: stream_filter.h splits and decodes it.
 */
#ifndef BROKER_SSE_REQUEST_H
#define BROKER_SSE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define SSE_TOKEN_MAX 4096
#define SSE_EVENTS_MAX 4096 /* the raw `events` value, as sent (percent-encoded) */

typedef struct sse_request {
    char authorization[SSE_TOKEN_MAX + 1]; /* "" when absent */
    char access_token[SSE_TOKEN_MAX + 1];  /* query parameter, "" when absent */
    int has_last_event_id;
    uint64_t last_event_id;                /* header wins over the query parameter */
    int has_events;                        /* an `events` parameter came (its value may be empty) */
    char events[SSE_EVENTS_MAX + 1];       /* its raw value, "" when absent */
    int presence;                          /* ?presence=true */
} sse_request;

/* Percent-decodes src[0..len) of a query value into dst (`cap` bytes,
 * NUL-terminated; '+' is a space).  -1 on a bad escape, a NUL, or no room. */
int sse_url_decode(const char *src, size_t len, char *dst, size_t cap);

/* Parses a whole head.  Returns 0, or -1 with *why set to a reason for a 400. */
int sse_request_parse(const char *head, size_t len, sse_request *out, const char **why);

#endif
