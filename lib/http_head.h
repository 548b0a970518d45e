/*
 * http_head.h - HTTP/1.1 message framing (RFC 9112) for the front door.
 *
 * The front door (door.h) reads every request itself before it decides who
 * answers it, so this is the one place where the server decides where a
 * request ends.  It is strict on purpose: a request whose framing two
 * readers could understand differently (request smuggling behind a proxy)
 * is refused, not guessed at.  Pure functions over bytes: no allocation, no
 * I/O; unit-tested and fuzzed.
 */
#ifndef BROKER_HTTP_HEAD_H
#define BROKER_HTTP_HEAD_H

#include <stddef.h>

typedef enum http_head_result {
    HTTP_HEAD_MORE,      /* the head has not all arrived */
    HTTP_HEAD_OK,        /* *h describes the head */
    HTTP_HEAD_BAD,       /* 400: *why says what is wrong */
    HTTP_HEAD_TOO_LARGE, /* 431: no end within `max` bytes */
} http_head_result;

typedef struct http_head {
    size_t len;               /* bytes of the head, its blank line included */
    const char *method;       /* into the parsed buffer, not NUL-terminated */
    size_t method_len;
    const char *target;
    size_t target_len;
    int minor;                /* HTTP/1.<minor> */
    long long content_length; /* -1: no Content-Length */
    int chunked;              /* Transfer-Encoding: chunked */
    int keep_alive;           /* the connection may carry another request after this one */
    int expect_continue;      /* Expect: 100-continue */
} http_head;

/* Parses the request head at the start of buf[0..len).  A head longer than
 * `max` bytes is HTTP_HEAD_TOO_LARGE. */
http_head_result http_head_parse(const char *buf, size_t len, size_t max, http_head *h, const char **why);

/* The value of the first header `name` (case-insensitive) in a parsed head,
 * trimmed; NULL when absent. */
const char *http_head_header(const char *head, size_t head_len, const char *name, size_t *value_len);

/* Whether the head's method is `method` and its path (the target up to '?')
 * is exactly `path`, or, when `prefix` is set, starts with it. */
int http_head_is(const http_head *h, const char *method, const char *path, int prefix);

/* Where a chunked body ends, found over calls as its bytes arrive: zero it
 * before the first call. */
typedef struct http_chunked {
    size_t next;        /* offset (from the body's start) of the next chunk-size line, or trailer line */
    size_t decoded;     /* data bytes so far */
    int trailers;       /* past the last chunk: reading trailer lines */
} http_chunked;

/* Scans body[0..len) from where the last call stopped.  Returns 1 with *end
 * the body's length (last chunk and trailers included), 0 when more bytes
 * are needed, -1 when the body is malformed or decodes to more than
 * max_decoded bytes (*why says which). */
int http_chunked_scan(http_chunked *st, const char *body, size_t len, size_t max_decoded, size_t *end,
                      const char **why);

/* A response head (from libmicrohttpd, relayed by the front door). */
typedef struct http_response_head {
    size_t len;
    unsigned status;
    long long content_length; /* -1: none */
    int chunked;
    int close;                /* Connection: close */
} http_response_head;

/* 1 with *r filled, 0 when more bytes are needed, -1 when it is not an
 * HTTP/1.x response head. */
int http_response_head_parse(const char *buf, size_t len, http_response_head *r);

#endif
