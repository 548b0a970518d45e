/*
 * http.h - the request/response side of every service, on ulfius.
 *
 * A service describes its endpoints as a table of http_route and adds it to
 * an http_server; the server takes care of what every endpoint shares:
 *   - JSON replies and the one error shape {"error": "..."} (http_reply_*),
 *   - CORS: Access-Control-Allow-Origin on every answer, and a preflight
 *     OPTIONS answer on every known path,
 *   - the body limit (--max_body -> 413) before a handler runs,
 *   - 404 for an unknown path, 405 for a known path with the wrong method,
 *   - request counters for /metrics.
 *
 * Threading (measured choice, see bench/RESULTS.md): libmicrohttpd runs one
 * thread per connection, polled with poll() (not select(), so descriptors
 * above FD_SETSIZE work).  Request handlers block on Argon2 (~40 ms) and on
 * the store's fsync; a thread per connection keeps one slow login from
 * stalling unrelated requests.  Clients never reach this server directly:
 * the front door (door.h) owns every connection and relays it one whole
 * request at a time.
 */
#ifndef BROKER_HTTP_H
#define BROKER_HTTP_H

#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <ulfius.h>

#include "config.h"

/* Request ids: every answer carries X-Request-Id, every error body its
 * "request_id", and every log line written while the request is served
 * (log_set_request_id).  A client's own id is kept when it is 1..128
 * characters of [A-Za-z0-9._:-] (anything else could forge log lines or
 * headers); otherwise the server makes one. */
#define HTTP_REQUEST_ID_MAX 128

/* Writes into `out` the id of a request that came with `given` (`len` bytes of
 * its X-Request-Id value; NULL when it had none). */
void http_request_id(const char *given, size_t len, char out[HTTP_REQUEST_ID_MAX + 1]);

typedef int (*http_handler)(const struct _u_request *req, struct _u_response *resp, void *ctx);

typedef struct http_route {
    const char *method;
    const char *path;
    http_handler handler;
} http_route;

#define HTTP_MAX_ROUTES 48

typedef struct http_binding {
    struct http_server *server;
    http_handler handler;
    void *ctx;
    const char *path;
} http_binding;

typedef struct http_server {
    struct _u_instance instance;
    const broker_config *cfg;
    http_binding bindings[HTTP_MAX_ROUTES];
    size_t nbindings;
    struct sockaddr_in bind_addr;
    int started;
} http_server;

int http_server_init(http_server *s, const broker_config *cfg);
/* Paths the front door answers itself (the NULL-ended `paths`): the
 * request/response server knows them only to answer another method with 405
 * and a CORS preflight with its headers.  Before http_server_start. */
int http_server_add_door_paths(http_server *s, const char *const *paths);
/* Adds every route of `routes` (ended by a row with a NULL method); `ctx` is
 * passed to each handler. */
int http_server_add_routes(http_server *s, const http_route *routes, void *ctx);
/* Starts the server without a socket of its own: connections come through
 * http_server_adopt(). */
int http_server_start(http_server *s);
/* Hands a connection to the server (the front door relays requests this
 * way, door_bridge.c). */
int http_server_adopt(http_server *s, int fd, const struct sockaddr *addr, socklen_t addrlen);
void http_server_stop(http_server *s);
/* Logs the start-up line an operator looks for: the version, the base URL
 * and every path the server's routes serve. */
void http_server_log_urls(const http_server *s, const char *service);

/* Replies: each returns U_CALLBACK_COMPLETE, so a handler can `return http_reply_...`.
 * A NULL `resp` here and in the readers below makes a check-only call: the
 * same checks, no answer (the ingest queue checks inserts this way; one it
 * refuses goes, unanswered, to the route that writes the error). */
int http_reply_json(struct _u_response *resp, unsigned status, json_t *body /* reference stolen */);
/* {"error": "<message>", "request_id": "<the calling thread's request id>"};
 * the id is left out when the thread serves no request. */
int http_reply_error(struct _u_response *resp, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses the request body as a JSON object.  On failure replies 400 with what
 * was wrong and returns NULL. */
json_t *http_json_object(const struct _u_request *req, struct _u_response *resp);
json_t *http_json_parse(const void *body, size_t len, struct _u_response *resp);
/* The client's address as text (for the per-address limits): the peer's, or,
 * when the peer is one of --trusted_proxies, the last address of the
 * request's X-Forwarded-For (the one that gateway added). */
void http_client_address(const struct _u_request *req, const broker_config *cfg, char *out, size_t size);
/* The same from the peer's address and the X-Forwarded-For value (NULL when
 * absent; `xff_len` bytes, not terminated), for the door's own handlers. */
void http_client_address_of(const struct sockaddr *peer, const char *xff, size_t xff_len, const broker_config *cfg,
                            char *out, size_t size);
/* Answers `status` (429 for a limit, 503 for a backlog) with Retry-After:
 * `seconds` (at least 1) and the error `message`. */
int http_reply_retry_after(struct _u_response *resp, unsigned status, long seconds, const char *message);

/* Counts an answer in broker_http_requests_total (every http_reply_* does). */
void http_count_status(unsigned status);

/* Field readers for request objects: each replies 400 naming the field and
 * returns -1 when the field is missing (if required) or of the wrong type.
 * A missing optional field leaves *out NULL and returns 0. */
int http_field_string(json_t *obj, const char *key, int required, const char **out, struct _u_response *resp);

#endif
