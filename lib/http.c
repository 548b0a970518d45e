/*
 * http.c - ulfius set up the way every Broker service needs it.
 */
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static metric_value *requests_2xx, *requests_3xx, *requests_4xx, *requests_5xx;
static pthread_once_t status_once = PTHREAD_ONCE_INIT;

static void status_metrics_init(void)
{
    requests_2xx = metrics_counter("broker_http_requests_total{code=\"2xx\"}", "HTTP requests answered, by status class");
    requests_3xx = metrics_counter("broker_http_requests_total{code=\"3xx\"}", "HTTP requests answered, by status class");
    requests_4xx = metrics_counter("broker_http_requests_total{code=\"4xx\"}", "HTTP requests answered, by status class");
    requests_5xx = metrics_counter("broker_http_requests_total{code=\"5xx\"}", "HTTP requests answered, by status class");
}

/* Every writer of answers counts here (ulfius's routes, the front door's),
 * whichever comes first. */
void http_count_status(unsigned status)
{
    pthread_once(&status_once, status_metrics_init);
    if (status >= 500)
        atomic_fetch_add(requests_5xx, 1);
    else if (status >= 400)
        atomic_fetch_add(requests_4xx, 1);
    else if (status >= 300)
        atomic_fetch_add(requests_3xx, 1);
    else
        atomic_fetch_add(requests_2xx, 1);
}

static int request_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '-';
}

/* Made ids are a random prefix per process and a counter: unique without a
 * system call per request (the insert path makes one per insert). */
static char id_prefix[24];
static _Atomic unsigned long long id_counter;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_prefix_init(void)
{
    unsigned int r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (unsigned int)getpid() * 2654435761u ^ (unsigned int)time(NULL);
    snprintf(id_prefix, sizeof id_prefix, "%08x", r);
}

void http_request_id(const char *given, size_t len, char out[HTTP_REQUEST_ID_MAX + 1])
{
    int ok = given != NULL && len > 0 && len <= HTTP_REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = request_id_char((unsigned char)given[i]);
    if (ok) {
        memcpy(out, given, len);
        out[len] = 0;
        return;
    }
    pthread_once(&id_once, id_prefix_init);
    snprintf(out, HTTP_REQUEST_ID_MAX + 1, "%s-%llx", id_prefix, atomic_fetch_add(&id_counter, 1) + 1);
}

/* Names the request this thread now serves: the answer's header and the log. */
static void request_begin(const struct _u_request *req, struct _u_response *resp)
{
    char id[HTTP_REQUEST_ID_MAX + 1];
    const char *given = u_map_get_case(req->map_header, "X-Request-Id");
    http_request_id(given, given ? strlen(given) : 0, id);
    log_set_request_id(id);
    u_map_put(resp->map_header, "X-Request-Id", id);
}

int http_reply_json(struct _u_response *resp, unsigned status, json_t *body)
{
    if (resp == NULL) { /* a check-only call (see http.h): nothing to answer */
        json_decref(body);
        return U_CALLBACK_COMPLETE;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (text == NULL) {
        status = 500;
        text = strdup("{\"error\":\"the server could not encode its answer\"}");
    }
    ulfius_set_string_body_response(resp, status, text);
    u_map_put(resp->map_header, "Content-Type", "application/json");
    free(text);
    http_count_status(status);
    return U_CALLBACK_COMPLETE;
}

/* Makes `s` valid UTF-8 in place: an invalid byte becomes '?', and a
 * sequence cut short at the end (by truncation) is dropped.  Error messages
 * quote client input and parser text, and JSON must be valid UTF-8. */
static void utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        int ok = n >= 0 && !(n == 1 && *p < 0xC2);
        for (int i = 1; ok && i <= n; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok) {
            p += n + 1;
            continue;
        }
        int truncated = n > 0;
        for (int i = 1; truncated && i <= n; i++) {
            if (p[i] == 0)
                break;
            truncated = (p[i] & 0xC0) == 0x80;
        }
        if (truncated) { /* the string ends inside this sequence */
            *p = 0;
            return;
        }
        *p++ = '?';
    }
}

int http_reply_error(struct _u_response *resp, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (resp == NULL)
        return U_CALLBACK_COMPLETE;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_sanitize(msg);
    json_t *body = json_pack("{s:s}", "error", msg);
    const char *id = log_request_id();
    if (body != NULL && id[0])
        json_object_set_new(body, "request_id", json_string(id));
    return http_reply_json(resp, status, body);
}

json_t *http_json_object(const struct _u_request *req, struct _u_response *resp)
{
    return http_json_parse(req->binary_body, req->binary_body_length, resp);
}

json_t *http_json_parse(const void *body, size_t len, struct _u_response *resp)
{
    json_error_t err;
    if (body == NULL || len == 0) {
        http_reply_error(resp, 400, "request body is empty: expected a JSON object");
        return NULL;
    }
    /* jansson rejects invalid UTF-8, NUL bytes inside strings (no
     * JSON_ALLOW_NUL) and nesting deeper than its parser limit. */
    json_t *obj = json_loadb(body, len, 0, &err);
    if (obj == NULL) {
        http_reply_error(resp, 400, "malformed JSON at line %d, column %d: %s", err.line, err.column, err.text);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        http_reply_error(resp, 400, "request body must be a JSON object");
        return NULL;
    }
    return obj;
}

int http_field_string(json_t *obj, const char *key, int required, const char **out, struct _u_response *resp)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (required) {
            http_reply_error(resp, 400, "missing field '%s'", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v)) {
        http_reply_error(resp, 400, "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* The one ulfius callback: body limit, then the route's handler. */
static int dispatch(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    const http_binding *b = user_data;
    size_t max_body = (size_t)b->server->cfg->max_body;
    const char *cl = u_map_get_case(req->map_header, "Content-Length");
    int ret;
    request_begin(req, resp);
    if (req->binary_body_length > max_body || (cl != NULL && strtoull(cl, NULL, 10) > max_body))
        ret = http_reply_error(resp, 413, "request body is larger than %zu bytes (--max_body)", max_body);
    else
        ret = b->handler(req, resp, b->ctx);
    log_debug("%s %s %ld", req->http_verb, req->url_path, resp->status);
    log_set_request_id(NULL);
    return ret;
}

static int preflight(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    (void)user_data;
    request_begin(req, resp);
    log_set_request_id(NULL);
    u_map_put(resp->map_header, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    u_map_put(resp->map_header, "Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, X-Request-Id");
    u_map_put(resp->map_header, "Access-Control-Max-Age", "86400");
    ulfius_set_empty_body_response(resp, 204);
    http_count_status(204);
    return U_CALLBACK_COMPLETE;
}

/* Whether a route's path is `path`: the same, or, for a wildcard route
 * ("/x/" and a star), any path under "/x/" (the console's files). */
static int route_path_is(const char *route, const char *path)
{
    size_t n = strlen(route);
    if (n >= 2 && strcmp(route + n - 2, "/*") == 0)
        return strncmp(route, path, n - 1) == 0;
    return strcmp(route, path) == 0;
}

/* No route matched: 405 if some route has this path, else 404. */
static int fallback(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    const http_server *s = user_data;
    int ret = -1;
    request_begin(req, resp);
    for (size_t i = 0; ret < 0 && i < s->nbindings; i++)
        if (route_path_is(s->bindings[i].path, req->url_path))
            ret = http_reply_error(resp, 405, "method %s is not allowed on %s", req->http_verb, req->url_path);
    if (ret < 0)
        ret = http_reply_error(resp, 404, "no such endpoint: %s", req->url_path);
    log_set_request_id(NULL);
    return ret;
}

int http_server_init(http_server *s, const broker_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    pthread_once(&status_once, status_metrics_init); /* shown at 0 from the start */
    s->bind_addr.sin_family = AF_INET;
    s->bind_addr.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind, &s->bind_addr.sin_addr) != 1) {
        log_error("--bind: '%s' is not an IPv4 address", cfg->bind);
        return -1;
    }
    if (ulfius_init_instance(&s->instance, (unsigned)cfg->port, &s->bind_addr, NULL) != U_OK) {
        log_error("http: ulfius_init_instance failed");
        return -1;
    }
    /* Read one byte past the limit, so that an oversized body is seen as such
     * without buffering all of it. */
    s->instance.max_post_body_size = (size_t)cfg->max_body + 1;
    u_map_put(s->instance.default_headers, "Access-Control-Allow-Origin", cfg->origin);
    u_map_put(s->instance.default_headers, "Access-Control-Expose-Headers", "X-Request-Id");
    if (strcmp(cfg->origin, "*") != 0)
        u_map_put(s->instance.default_headers, "Vary", "Origin");
    u_map_put(s->instance.default_headers, "Cache-Control", "no-store");
    ulfius_set_default_endpoint(&s->instance, fallback, s);
    return 0;
}

int http_server_add_routes(http_server *s, const http_route *routes, void *ctx)
{
    for (const http_route *r = routes; r->method != NULL; r++) {
        if (s->nbindings >= HTTP_MAX_ROUTES) {
            log_error("http: too many routes (HTTP_MAX_ROUTES)");
            return -1;
        }
        int known = 0;
        for (size_t i = 0; i < s->nbindings; i++)
            known |= strcmp(s->bindings[i].path, r->path) == 0;
        http_binding *b = &s->bindings[s->nbindings++];
        *b = (http_binding){.server = s, .handler = r->handler, .ctx = ctx, .path = r->path};
        if (ulfius_add_endpoint_by_val(&s->instance, r->method, r->path, NULL, 0, dispatch, b) != U_OK)
            return -1;
        if (!known && ulfius_add_endpoint_by_val(&s->instance, "OPTIONS", r->path, NULL, 0, preflight, NULL) != U_OK)
            return -1;
    }
    return 0;
}

int http_server_add_door_paths(http_server *s, const char *const *paths)
{
    for (const char *const *p = paths; *p != NULL; p++) {
        if (s->nbindings >= HTTP_MAX_ROUTES) {
            log_error("http: too many routes (HTTP_MAX_ROUTES)");
            return -1;
        }
        s->bindings[s->nbindings++] = (http_binding){.server = s, .path = *p};
        if (ulfius_add_endpoint_by_val(&s->instance, "OPTIONS", *p, NULL, 0, preflight, NULL) != U_OK)
            return -1;
    }
    return 0;
}

/* libmicrohttpd's messages, in the service's log.  Its connections are the
 * front door's socket pairs, on which TCP options (cork, no-delay) do not
 * exist: it says so at every answer, and nothing is wrong. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (strstr(msg, "TCP_CORK") != NULL || strstr(msg, "TCP_NODELAY") != NULL ||
        strstr(msg, "push the data from buffers") != NULL)
        return;
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    log_warn("libmicrohttpd: %s", msg);
}

int http_server_start(http_server *s)
{
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)mhd_request_completed, NULL},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)ulfius_uri_logger, NULL},
        /* A relayed request arrives whole (the front door reads it first); a
         * connection idle this long is one the door forgot. */
        {MHD_OPTION_CONNECTION_TIMEOUT, 20, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, 8192, NULL},
        {MHD_OPTION_THREAD_STACK_SIZE, 256 * 1024, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* No socket of its own: the front door (door.h) gives it requests. */
    flags |= MHD_USE_NO_LISTEN_SOCKET;
    if (ulfius_start_framework_with_mhd_options(&s->instance, flags, ops) != U_OK) {
        log_error("http: could not start the HTTP server on %s:%ld", s->cfg->bind, s->cfg->port);
        return -1;
    }
    s->started = 1;
    return 0;
}

int http_server_adopt(http_server *s, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return MHD_add_connection(s->instance.mhd_daemon, fd, addr, addrlen) == MHD_YES ? 0 : -1;
}

void http_server_stop(http_server *s)
{
    if (s->started)
        ulfius_stop_framework(&s->instance);
    s->started = 0;
    ulfius_clean_instance(&s->instance);
}

void http_server_log_urls(const http_server *s, const char *service)
{
    char paths[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < s->nbindings; i++) {
        const char *path = s->bindings[i].path;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(s->bindings[j].path, path) == 0;
        if (seen || strchr(path, '*') != NULL) /* a wildcard route: its prefix is listed */
            continue;
        int n = snprintf(paths + used, sizeof paths - used, " %s%s", path, strcmp(path, "/console") ? "" : "/");
        if (n < 0 || (size_t)n >= sizeof paths - used)
            break;
        used += (size_t)n;
    }
    int any = strcmp(s->cfg->bind, "0.0.0.0") == 0;
    log_info("%s %s serving %s://%s:%ld%s:%s", service, BROKER_VERSION, s->cfg->secure ? "https" : "http",
             any ? "localhost" : s->cfg->bind,
             s->cfg->port, any ? " (all interfaces)" : "", paths);
}

static void sockaddr_text(const struct sockaddr *sa, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

/* 1 when the address `addr` (text) is `entry`: an address, or a range in
 * CIDR notation ("172.16.0.0/12", "fd00::/8"), for gateways whose address
 * is given out at run time (a container's). */
static int address_matches(const char *entry, size_t len, const char *addr)
{
    char text[INET6_ADDRSTRLEN + 8];
    if (len == 0 || len >= sizeof text)
        return 0;
    memcpy(text, entry, len);
    text[len] = '\0';
    char *slash = strchr(text, '/');
    if (slash == NULL)
        return strcmp(text, addr) == 0;
    *slash = '\0';
    char *end;
    long bits = strtol(slash + 1, &end, 10);
    unsigned char net[16], a[16];
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;
    int size = family == AF_INET6 ? 16 : 4;
    if (*end != '\0' || end == slash + 1 || bits < 0 || bits > size * 8 || inet_pton(family, text, net) != 1 ||
        inet_pton(family, addr, a) != 1)
        return 0;
    int whole = (int)bits / 8, rest = (int)bits % 8;
    if (memcmp(net, a, (size_t)whole) != 0)
        return 0;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return rest == 0 || (net[whole] & mask) == (a[whole] & mask);
}

/* 1 when `addr` is one of the comma-separated `list` (addresses or ranges). */
static int listed(const char *list, const char *addr)
{
    for (const char *p = list; p != NULL && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[0] == ' ')
            p++, len--;
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (address_matches(p, len, addr))
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

void http_client_address_of(const struct sockaddr *peer, const char *xff, size_t xff_len, const broker_config *cfg,
                            char *out, size_t size)
{
    sockaddr_text(peer, out, size);
    if (xff == NULL || cfg->trusted_proxies[0] == '\0' || !listed(cfg->trusted_proxies, out))
        return;
    const char *last = xff;
    for (size_t i = 0; i < xff_len; i++)
        if (xff[i] == ',')
            last = xff + i + 1;
    const char *end = xff + xff_len;
    while (last < end && *last == ' ')
        last++;
    size_t len = 0;
    while (last + len < end && last[len] != ' ')
        len++;
    if (len > 0 && len < size) {
        memcpy(out, last, len);
        out[len] = 0;
    }
}

void http_client_address(const struct _u_request *req, const broker_config *cfg, char *out, size_t size)
{
    const char *xff = u_map_get_case(req->map_header, "X-Forwarded-For");
    http_client_address_of(req->client_address, xff, xff != NULL ? strlen(xff) : 0, cfg, out, size);
}

int http_reply_retry_after(struct _u_response *resp, unsigned status, long seconds, const char *message)
{
    char value[24];
    if (resp == NULL)
        return U_CALLBACK_COMPLETE;
    snprintf(value, sizeof value, "%ld", seconds > 0 ? seconds : 1);
    u_map_put(resp->map_header, "Retry-After", value);
    return http_reply_error(resp, status, "%s", message);
}
