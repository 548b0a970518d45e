/*
 * http_answer.h - the one writer of HTTP answers outside ulfius.
 *
 * The front door and the services that answer in it (the SSE stream, the
 * fast insert path, the door's own refusals) write their answers here, with
 * the headers ulfius gives the request/response server's answers, in the
 * same order (tests/blackbox/test_insert_wire.py compares the two byte for
 * byte): a client cannot tell which side of the port answered.
 */
#ifndef BROKER_HTTP_ANSWER_H
#define BROKER_HTTP_ANSWER_H

#include "config.h"

#include <stddef.h>

typedef struct http_answer {
    unsigned status;
    const char *request_id;    /* X-Request-Id; NULL or "" for none */
    const char *content_type;  /* NULL: no Content-Type */
    const char *cache_control; /* NULL: "no-store" */
    const char *extra;         /* more header lines, each ending in "\r\n"; NULL for none */
    const char *body;
    size_t body_len;
    int streaming;             /* a body that ends with the connection: no Content-Length */
    int close;                 /* "Connection: close" (and the connection is closed after it) */
} http_answer;

/* The answer's bytes (malloc'd; *len set), or NULL when out of memory. */
char *http_answer_write(const broker_config *cfg, const http_answer *a, size_t *len);

/* An error answer: the JSON body {"error": <message>, "request_id": <id>}
 * that http_reply_error() gives, in an answer as above. */
char *http_answer_error(const broker_config *cfg, unsigned status, const char *request_id, const char *extra,
                        int close, const char *message, size_t *len);

/* The Date header's value for now (RFC 9110 IMF-fixdate), kept per thread
 * and remade once a second. */
const char *http_date(void);

#endif
