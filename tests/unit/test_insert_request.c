/*
 * test_insert_request.c - which POST /insert requests the stream engine
 * answers itself (insert_request.c), and where their parts are.
 */
#include "check.h"
#include "insert_request.h"

#include <string.h>

#define CAP 16384
#define MAX_BODY 1024

static insert_verdict verdict(const char *req, insert_request *out)
{
    return insert_request_parse(req, strlen(req), CAP, MAX_BODY, out);
}

#define HEAD "POST /insert HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n"
#define BODY "{\"event\":\"e\",\"data\":1}"

static void test_plain_request_is_fast(void)
{
    insert_request r;
    const char *req = HEAD "Content-Type: application/json\r\nContent-Length: 22\r\n\r\n" BODY;
    CHECK_INT(verdict(req, &r), INSERT_FAST);
    CHECK(r.auth_len == strlen("Bearer abc") && memcmp(req + r.auth_off, "Bearer abc", r.auth_len) == 0);
    CHECK(r.body_len == 22 && memcmp(req + r.body_off, BODY, 22) == 0);
    CHECK(r.total_len == strlen(req));
    /* pipelined: the next request's bytes are not part of this one */
    char two[512];
    snprintf(two, sizeof two, "%s%s", req, req);
    CHECK_INT(verdict(two, &r), INSERT_FAST);
    CHECK(r.total_len == strlen(req));
    /* header names in any case, keep-alive spelled out, spaces around values */
    CHECK_INT(verdict("POST /insert HTTP/1.1\r\nhost:x\r\nauthorization:   bearer abc  \r\nconnection: Keep-Alive\r\n"
                      "content-length: 22\r\n\r\n" BODY, &r),
              INSERT_FAST);
}

static void test_partial_request_needs_more(void)
{
    insert_request r;
    const char *req = HEAD "Content-Length: 22\r\n\r\n" BODY;
    for (size_t n = 1; n < strlen(req); n++)
        CHECK_INT(insert_request_parse(req, n, CAP, MAX_BODY, &r), INSERT_NEED_MORE);
}

static void test_unusual_requests_go_elsewhere(void)
{
    insert_request r;
    const char *other[] = {
        "POST /insert HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer a\r\nContent-Length: 22\r\n\r\n" BODY,
        "POST /insert?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nContent-Length: 22\r\n\r\n" BODY,
        "POST /insert HTTP/1.1\r\nAuthorization: Bearer a\r\nContent-Length: 22\r\n\r\n" BODY, /* no Host */
        HEAD "\r\n",                                                                           /* no length */
        HEAD "Content-Length: 0\r\n\r\n",
        HEAD "Content-Length: 1025\r\n\r\n",                                                   /* > max_body */
        HEAD "Content-Length: 22\r\nContent-Length: 22\r\n\r\n" BODY,
        HEAD "Content-Length: 2x\r\n\r\n" BODY,
        HEAD "Content-Length: -1\r\n\r\n" BODY,
        HEAD "Content-Length: 22\r\nTransfer-Encoding: chunked\r\n\r\n" BODY,
        HEAD "Content-Length: 22\r\nExpect: 100-continue\r\n\r\n",
        HEAD "Content-Length: 22\r\nConnection: close\r\n\r\n" BODY,
        HEAD "Content-Length: 22\r\nContent-Type: text/plain\r\n\r\n" BODY,
        HEAD "Content-Length: 22\r\nAuthorization: Bearer b\r\n\r\n" BODY,
        "POST /insert HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nContent-Length: 22\r\n\r\n" BODY,
        "POST /insert HTTP/1.1\r\nHost: x\r\nHost: y\r\nAuthorization: Bearer a\r\nContent-Length: 22\r\n\r\n" BODY,
        HEAD "Content-Length: 22\n\n" BODY,                                                    /* bare LF */
        HEAD "Content-Length : 22\r\n\r\n" BODY,
        HEAD "X-Long: a\r\n b\r\nContent-Length: 22\r\n\r\n" BODY,                             /* folded */
        HEAD "X-Ctl: a\x01" "b\r\nContent-Length: 22\r\n\r\n" BODY,
        "GET /insert HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        insert_verdict v = verdict(other[i], &r);
        if (v != INSERT_OTHER)
            fprintf(stderr, "case %zu: %d\n", i, (int)v);
        CHECK_INT(v, INSERT_OTHER);
    }
    /* a request that cannot fit in one peek */
    const char *req = HEAD "Content-Length: 22\r\n\r\n" BODY;
    CHECK_INT(insert_request_parse(req, 40, 40, MAX_BODY, &r), INSERT_OTHER);
}

int main(void)
{
    RUN_CASE(test_plain_request_is_fast);
    RUN_CASE(test_partial_request_needs_more);
    RUN_CASE(test_unusual_requests_go_elsewhere);
    return check_summary();
}
