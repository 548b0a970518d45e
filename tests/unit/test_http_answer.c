/*
 * test_http_answer.c - the answers written outside ulfius (lib/http_answer.c):
 * their exact bytes, header by header in ulfius's order (Date, the CORS
 * headers, Vary with a configured origin, Cache-Control, extra headers,
 * X-Request-Id, Content-Type, Content-Length, Connection: close), a streaming
 * answer without a length, the JSON error body, and the Date header in
 * IMF-fixdate form.
 */
#include "check.h"
#include "config.h"
#include "http_answer.h"

#include <ctype.h>
#include <time.h>

/* Whether d[0..n) is an IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
static int is_imf_fixdate(const char *d, size_t n)
{
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (n != 29)
        return 0;
    int day_ok = 0, month_ok = 0;
    for (int i = 0; i < 7; i++)
        day_ok |= memcmp(d, days[i], 3) == 0;
    for (int i = 0; i < 12; i++)
        month_ok |= memcmp(d + 8, months[i], 3) == 0;
    /* "Www, DD Mmm YYYY HH:MM:SS GMT" */
    static const char shape[] = "xxx, 00 xxx 0000 00:00:00 GMT";
    for (size_t i = 0; i < 29; i++) {
        if (shape[i] == '0') {
            if (!isdigit((unsigned char)d[i]))
                return 0;
        } else if (shape[i] != 'x' && shape[i] != d[i]) {
            return 0;
        }
    }
    int mday = (d[5] - '0') * 10 + (d[6] - '0');
    int hour = (d[17] - '0') * 10 + (d[18] - '0');
    int min = (d[20] - '0') * 10 + (d[21] - '0');
    int sec = (d[23] - '0') * 10 + (d[24] - '0');
    return day_ok && month_ok && mday >= 1 && mday <= 31 && hour <= 23 && min <= 59 && sec <= 60;
}

static void case_date(void)
{
    const char *d = http_date();
    CHECK(d != NULL);
    if (d == NULL)
        return;
    if (!is_imf_fixdate(d, strlen(d))) {
        fprintf(stderr, "  FAIL: Date \"%s\" is not an IMF-fixdate\n", d);
        check_case_failures++;
    }
    /* It is now, in GMT. */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char year[24];
    snprintf(year, sizeof year, " %04d ", tm.tm_year + 1900);
    CHECK_CONTAINS(d, year);
    CHECK(!is_imf_fixdate("Sun, 6 Nov 1994 08:49:37 GMT", 28));
    CHECK(!is_imf_fixdate("Sun, 06 Nov 1994 08:49:37 UTC", 29));
    CHECK(!is_imf_fixdate("Sunday, 06-Nov-94 08:49:37 GM", 29));
    CHECK(is_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT", 29));
}

/* Checks that the answer `got` (got_len bytes) is `want` with "<DATE>"
 * standing for a Date value made while it was written (before..after). */
static void check_answer(const char *got, size_t got_len, const char *want, const char *before, const char *after,
                         int line)
{
    if (got == NULL) {
        fprintf(stderr, "  FAIL line %d: no answer\n", line);
        check_case_failures++;
        return;
    }
    const char *dh = memmem(got, got_len, "\r\nDate: ", 8);
    const char *de = dh ? memmem(dh + 8, got_len - (size_t)(dh + 8 - got), "\r\n", 2) : NULL;
    if (dh == NULL || de == NULL) {
        fprintf(stderr, "  FAIL line %d: no Date header in %.*s\n", line, (int)got_len, got);
        check_case_failures++;
        return;
    }
    const char *date = dh + 8;
    size_t dlen = (size_t)(de - date);
    if (!is_imf_fixdate(date, dlen)) {
        fprintf(stderr, "  FAIL line %d: Date \"%.*s\" is not an IMF-fixdate\n", line, (int)dlen, date);
        check_case_failures++;
    }
    if (!((strlen(before) == dlen && memcmp(date, before, dlen) == 0) ||
          (strlen(after) == dlen && memcmp(date, after, dlen) == 0))) {
        fprintf(stderr, "  FAIL line %d: Date \"%.*s\" is neither \"%s\" nor \"%s\"\n", line, (int)dlen, date,
                before, after);
        check_case_failures++;
    }
    /* The expected bytes with this Date. */
    const char *mark = strstr(want, "<DATE>");
    if (mark == NULL)
        abort();
    size_t wlen = strlen(want) - 6 + dlen;
    char *w = malloc(wlen + 1);
    size_t pre = (size_t)(mark - want);
    memcpy(w, want, pre);
    memcpy(w + pre, date, dlen);
    strcpy(w + pre + dlen, mark + 6);
    if (got_len != wlen || memcmp(got, w, wlen) != 0) {
        fprintf(stderr, "  FAIL line %d: answer\n---- got (%zu bytes)\n%.*s\n---- want (%zu bytes)\n%s\n----\n", line,
                got_len, (int)got_len, got, wlen, w);
        check_case_failures++;
    }
    free(w);
}

/* Writes `a` under `origin` and compares it with `want`. */
static void expect_write(const char *origin, const http_answer *a, const char *want, int line)
{
    broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.origin = (char *)origin;
    char before[40], after[40];
    snprintf(before, sizeof before, "%s", http_date());
    size_t len = 0;
    char *out = http_answer_write(&cfg, a, &len);
    snprintf(after, sizeof after, "%s", http_date());
    check_answer(out, len, want, before, after, line);
    free(out);
}

static void case_json_any_origin(void)
{
    static const char body[] = "{\"ok\":true}";
    http_answer a = {.status = 200, .request_id = "req-1", .content_type = "application/json", .body = body,
                     .body_len = sizeof body - 1};
    expect_write("*", &a,
                 "HTTP/1.1 200 OK\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: *\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Cache-Control: no-store\r\n"
                 "X-Request-Id: req-1\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: 11\r\n"
                 "\r\n"
                 "{\"ok\":true}",
                 __LINE__);
}

static void case_json_one_origin(void)
{
    static const char body[] = "{\"ok\":true}";
    http_answer a = {.status = 200, .request_id = "req-2", .content_type = "application/json", .body = body,
                     .body_len = sizeof body - 1};
    expect_write("https://a.example", &a,
                 "HTTP/1.1 200 OK\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: https://a.example\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Vary: Origin\r\n"
                 "Cache-Control: no-store\r\n"
                 "X-Request-Id: req-2\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: 11\r\n"
                 "\r\n"
                 "{\"ok\":true}",
                 __LINE__);
}

static void case_streaming(void)
{
    http_answer a = {.status = 200, .request_id = "sse-1", .content_type = "text/event-stream",
                     .cache_control = "no-cache", .extra = "X-Accel-Buffering: no\r\n", .streaming = 1};
    expect_write("*", &a,
                 "HTTP/1.1 200 OK\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: *\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Cache-Control: no-cache\r\n"
                 "X-Accel-Buffering: no\r\n"
                 "X-Request-Id: sse-1\r\n"
                 "Content-Type: text/event-stream\r\n"
                 "\r\n",
                 __LINE__);
    /* A first chunk of the stream written with the head. */
    static const char first[] = ": hello\n\n";
    a.body = first;
    a.body_len = sizeof first - 1;
    a.extra = NULL;
    expect_write("*", &a,
                 "HTTP/1.1 200 OK\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: *\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Cache-Control: no-cache\r\n"
                 "X-Request-Id: sse-1\r\n"
                 "Content-Type: text/event-stream\r\n"
                 "\r\n"
                 ": hello\n\n",
                 __LINE__);
}

static void case_close(void)
{
    static const char body[] = "{\"a\":1}";
    http_answer a = {.status = 201, .request_id = "c-1", .content_type = "application/json", .body = body,
                     .body_len = sizeof body - 1, .close = 1};
    expect_write("*", &a,
                 "HTTP/1.1 201 Created\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: *\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Cache-Control: no-store\r\n"
                 "X-Request-Id: c-1\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: 7\r\n"
                 "Connection: close\r\n"
                 "\r\n"
                 "{\"a\":1}",
                 __LINE__);
    /* No request id, no type, no body, a redirect's Location. */
    http_answer r = {.status = 308, .extra = "Location: https://b.example/x?y=1\r\n", .close = 1};
    expect_write("https://b.example", &r,
                 "HTTP/1.1 308 Permanent Redirect\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: https://b.example\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Vary: Origin\r\n"
                 "Cache-Control: no-store\r\n"
                 "Location: https://b.example/x?y=1\r\n"
                 "Content-Length: 0\r\n"
                 "Connection: close\r\n"
                 "\r\n",
                 __LINE__);
    r.request_id = ""; /* "" is no id either */
    r.close = 0;
    r.extra = NULL;
    r.status = 202;
    expect_write("*", &r,
                 "HTTP/1.1 202 Accepted\r\n"
                 "Date: <DATE>\r\n"
                 "Access-Control-Allow-Origin: *\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id\r\n"
                 "Cache-Control: no-store\r\n"
                 "Content-Length: 0\r\n"
                 "\r\n",
                 __LINE__);
}

static void case_binary_body_and_long_id(void)
{
    /* The body is body_len bytes, NULs included. */
    static const char body[] = {'a', '\0', 'b'};
    char id[129];
    memset(id, 'i', 128);
    id[128] = '\0'; /* the longest X-Request-Id (http.h) */
    http_answer a = {.status = 200, .request_id = id, .content_type = "application/octet-stream", .body = body,
                     .body_len = 3};
    broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.origin = "*";
    size_t len = 0;
    char *out = http_answer_write(&cfg, &a, &len);
    CHECK(out != NULL);
    if (out == NULL)
        return;
    CHECK(len > 3 && memcmp(out + len - 3, body, 3) == 0);
    CHECK(memmem(out, len, "Content-Length: 3\r\n\r\n", 21) != NULL);
    char line[256];
    snprintf(line, sizeof line, "\r\nX-Request-Id: %s\r\nContent-Type: application/octet-stream\r\n", id);
    CHECK(memmem(out, len, line, strlen(line)) != NULL);
    free(out);
}

/* Writes an error answer and returns its body (malloc'd), checking the head. */
static char *error_body(const char *origin, unsigned status, const char *id, const char *extra, int close,
                        const char *message, const char *status_line)
{
    broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.origin = (char *)origin;
    size_t len = 0;
    char *out = http_answer_error(&cfg, status, id, extra, close, message, &len);
    CHECK(out != NULL);
    if (out == NULL)
        return NULL;
    CHECK(len > strlen(status_line) && memcmp(out, status_line, strlen(status_line)) == 0);
    const char *sep = memmem(out, len, "\r\n\r\n", 4);
    CHECK(sep != NULL);
    if (sep == NULL) {
        free(out);
        return NULL;
    }
    size_t head_len = (size_t)(sep + 4 - out), body_len = len - head_len;
    char *head = strndup(out, head_len);
    char *body = strndup(sep + 4, body_len);
    char cl[64];
    snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", body_len);
    CHECK_CONTAINS(head, cl);
    CHECK_CONTAINS(head, "\r\nContent-Type: application/json\r\n");
    CHECK_CONTAINS(head, "\r\nCache-Control: no-store\r\n");
    if (id != NULL && id[0]) {
        char xid[200];
        snprintf(xid, sizeof xid, "\r\nX-Request-Id: %s\r\n", id);
        CHECK_CONTAINS(head, xid);
    } else {
        CHECK(strstr(head, "X-Request-Id:") == NULL);
    }
    if (close) {
        /* Connection: close is the last header. */
        const char *tail = "\r\nConnection: close\r\n\r\n";
        CHECK(head_len >= strlen(tail) && strcmp(head + head_len - strlen(tail), tail) == 0);
    } else {
        CHECK(strstr(head, "Connection:") == NULL);
    }
    if (extra != NULL)
        CHECK_CONTAINS(head, extra);
    const char *d = strstr(head, "\r\nDate: ");
    CHECK(d != NULL && is_imf_fixdate(d + 8, 29) && d[37] == '\r');
    free(head);
    free(out);
    return body;
}

static void case_error(void)
{
    char *b = error_body("*", 400, "rid-9", NULL, 1, "malformed Content-Length", "HTTP/1.1 400 Bad Request\r\n");
    CHECK_STR(b, "{\"error\":\"malformed Content-Length\",\"request_id\":\"rid-9\"}");
    free(b);
    /* The message is JSON-escaped. */
    b = error_body("https://a.example", 431, "r2", NULL, 1, "a \"quoted\" \\ word\n",
                   "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    CHECK_STR(b, "{\"error\":\"a \\\"quoted\\\" \\\\ word\\n\",\"request_id\":\"r2\"}");
    free(b);
    b = error_body("*", 408, "r3", NULL, 1, "request head not received within 10 s",
                   "HTTP/1.1 408 Request Timeout\r\n");
    CHECK_STR(b, "{\"error\":\"request head not received within 10 s\",\"request_id\":\"r3\"}");
    free(b);
    /* Kept open, with an extra header. */
    b = error_body("*", 503, "r4", "Retry-After: 1\r\n", 0, "busy", "HTTP/1.1 503 Service Unavailable\r\n");
    CHECK_STR(b, "{\"error\":\"busy\",\"request_id\":\"r4\"}");
    free(b);
    b = error_body("*", 404, "r5", NULL, 0, "no such ACME challenge", "HTTP/1.1 404 Not Found\r\n");
    CHECK_STR(b, "{\"error\":\"no such ACME challenge\",\"request_id\":\"r5\"}");
    free(b);
    /* Without a request id: the error alone. */
    b = error_body("*", 400, NULL, NULL, 1, "bad", "HTTP/1.1 400 Bad Request\r\n");
    CHECK_STR(b, "{\"error\":\"bad\"}");
    free(b);
}

int main(void)
{
    RUN_CASE(case_date);
    RUN_CASE(case_json_any_origin);
    RUN_CASE(case_json_one_origin);
    RUN_CASE(case_streaming);
    RUN_CASE(case_close);
    RUN_CASE(case_binary_body_and_long_id);
    RUN_CASE(case_error);
    return check_summary();
}
