/*
 * sse_request.h - parses the head of a GET /sse request.
 *
 * The front door frames the request (lib/http_head.h) and gives GET /sse to
 * the stream service; this parser reads what the stream needs of the head
 * (credentials, Last-Event-ID).  Strict, bounded, never allocates; covered
 * by unit tests and a libFuzzer target (tests/fuzz).
 */
#ifndef BROKER_SSE_REQUEST_H
#define BROKER_SSE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define SSE_TOKEN_MAX 4096

typedef struct sse_request {
    char authorization[SSE_TOKEN_MAX + 1]; /* "" when absent */
    char access_token[SSE_TOKEN_MAX + 1];  /* query parameter, "" when absent */
    int has_last_event_id;
    uint64_t last_event_id;                /* header wins over the query parameter */
} sse_request;

/* Parses a whole head.  Returns 0, or -1 with *why set to a reason for a 400. */
int sse_request_parse(const char *head, size_t len, sse_request *out, const char **why);

#endif
