/*
 * http_answer.c - answers written outside ulfius (see http_answer.h).
 */
#include "http_answer.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *http_date(void)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static __thread time_t second;
    static __thread char date[40];
    time_t now = time(NULL);
    if (now != second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
                 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        second = now;
    }
    return date;
}

char *http_answer_write(const broker_config *cfg, const http_answer *a, size_t *len)
{
    const char *reason = MHD_get_reason_phrase_for(a->status);
    char length[48] = "", id[160] = "", type[128] = "";
    if (!a->streaming)
        snprintf(length, sizeof length, "Content-Length: %zu\r\n", a->body_len);
    if (a->request_id != NULL && a->request_id[0])
        snprintf(id, sizeof id, "X-Request-Id: %s\r\n", a->request_id);
    if (a->content_type != NULL)
        snprintf(type, sizeof type, "Content-Type: %s\r\n", a->content_type);
    const char *vary = strcmp(cfg->origin, "*") ? "Vary: Origin\r\n" : "";
    const char *extra = a->extra != NULL ? a->extra : "";
    /* ulfius's order: Date, the instance's default headers (CORS, Vary,
     * Cache-Control), the answer's own (X-Request-Id, Content-Type), then
     * libmicrohttpd's Content-Length and Connection. */
    int head = snprintf(NULL, 0,
                        "HTTP/1.1 %u %s\r\nDate: %s\r\nAccess-Control-Allow-Origin: %s\r\n"
                        "Access-Control-Expose-Headers: X-Request-Id\r\n%sCache-Control: %s\r\n%s%s%s%s%s\r\n",
                        a->status, reason ? reason : "Unknown", http_date(), cfg->origin, vary,
                        a->cache_control ? a->cache_control : "no-store", extra, id, type, length,
                        a->close ? "Connection: close\r\n" : "");
    if (head < 0)
        return NULL;
    char *out = malloc((size_t)head + 1 + a->body_len);
    if (out == NULL)
        return NULL;
    snprintf(out, (size_t)head + 1,
             "HTTP/1.1 %u %s\r\nDate: %s\r\nAccess-Control-Allow-Origin: %s\r\n"
             "Access-Control-Expose-Headers: X-Request-Id\r\n%sCache-Control: %s\r\n%s%s%s%s%s\r\n",
             a->status, reason ? reason : "Unknown", http_date(), cfg->origin, vary,
             a->cache_control ? a->cache_control : "no-store", extra, id, type, length,
             a->close ? "Connection: close\r\n" : "");
    if (a->body_len > 0)
        memcpy(out + head, a->body, a->body_len);
    *len = (size_t)head + a->body_len;
    return out;
}

char *http_answer_error(const broker_config *cfg, unsigned status, const char *request_id, const char *extra,
                        int close, const char *message, size_t *len)
{
    json_t *obj = json_pack("{s:s}", "error", message);
    if (obj != NULL && request_id != NULL && request_id[0])
        json_object_set_new(obj, "request_id", json_string(request_id));
    char *body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (body == NULL)
        return NULL;
    http_answer a = {.status = status, .request_id = request_id, .content_type = "application/json",
                     .extra = extra, .body = body, .body_len = strlen(body), .close = close};
    char *out = http_answer_write(cfg, &a, len);
    free(body);
    return out;
}
