/*
 * test_sse_request.c - the GET /sse request-head parser: what the stream
 * needs of a head the front door has framed (credentials, Last-Event-ID),
 * parsed strictly.  Routing and framing (where a head ends, 431, the request
 * line refused at its first bad byte) are the front door's now: see
 * test_http_head.c.
 *
 * Every input is copied into a heap buffer of exactly its length (no NUL
 * after it), so that under AddressSanitizer a read past `len` fails the run.
 */
#include "check.h"
#include "sse_request.h"

/* An exact-size heap copy of s[0..len). */
static char *exact(const char *s, size_t len)
{
    char *b = malloc(len ? len : 1);
    if (b == NULL)
        abort();
    memcpy(b, s, len);
    return b;
}

/* sse_request_parse on an exact copy of s[0..len); *why is checked on failure. */
static int parse_n(const char *s, size_t len, sse_request *out)
{
    char *b = exact(s, len);
    const char *why = NULL;
    int rc = sse_request_parse(b, len, out, &why);
    free(b);
    if (rc != 0 && (why == NULL || why[0] == '\0')) {
        fprintf(stderr, "  parse failed without a reason\n");
        check_case_failures++;
    }
    return rc;
}

static int parse(const char *s, sse_request *out)
{
    return parse_n(s, strlen(s), out);
}

/* Builds "GET <target> HTTP/1.1\r\n<headers>\r\n" into a malloc'd string. */
static char *head(const char *target, const char *headers)
{
    size_t n = strlen(target) + strlen(headers) + 64;
    char *h = malloc(n);
    if (h == NULL)
        abort();
    snprintf(h, n, "GET %s HTTP/1.1\r\n%s\r\n", target, headers);
    return h;
}

static void case_parse_minimal(void)
{
    sse_request r;
    memset(&r, 0x5a, sizeof r); /* the parser must clear what it does not set */
    CHECK_INT(parse("GET /sse HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.authorization, "");
    CHECK_STR(r.access_token, "");
    CHECK_INT(r.has_last_event_id, 0);
    CHECK_INT(r.last_event_id, 0);
    /* HTTP/1.0, bare LF, a head without the final blank line (all lines whole). */
    CHECK_INT(parse("GET /sse HTTP/1.0\r\n\r\n", &r), 0);
    CHECK_INT(parse("GET /sse HTTP/1.1\nHost: x\n\n", &r), 0);
    CHECK_INT(parse("GET /sse HTTP/1.1\r\nHost: x\r\n", &r), 0);
    CHECK_INT(parse("GET /sse? HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "");
    CHECK_INT(r.has_last_event_id, 0);
}

static void case_parse_authorization(void)
{
    sse_request r;
    char *h = head("/sse", "Host: broker\r\nAuthorization: Bearer abc.def.ghi\r\nAccept: text/event-stream\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "Bearer abc.def.ghi");
    CHECK_STR(r.access_token, "");
    free(h);
    /* Name case-insensitive; value trimmed of spaces and tabs on both sides. */
    h = head("/sse", "authorization:Basic dTpw\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "Basic dTpw");
    free(h);
    h = head("/sse", "AUTHORIZATION: \t Bearer t \t \r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "Bearer t");
    free(h);
    h = head("/sse", "AuThOrIzAtIoN: x\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "x");
    free(h);
    /* A longer or shorter name is another header. */
    h = head("/sse", "X-Authorization: nope\r\nAuthorizatio: nope\r\nAuthorization : nope\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "");
    free(h);
    /* Headers after the blank line are not headers. */
    CHECK_INT(parse("GET /sse HTTP/1.1\r\n\r\nAuthorization: late\r\n", &r), 0);
    CHECK_STR(r.authorization, "");

    /* Exactly SSE_TOKEN_MAX bytes of value: accepted whole. One more: refused. */
    char value[SSE_TOKEN_MAX + 2];
    memset(value, 'a', SSE_TOKEN_MAX);
    value[SSE_TOKEN_MAX] = '\0';
    char *hdr = malloc(SSE_TOKEN_MAX + 64);
    snprintf(hdr, SSE_TOKEN_MAX + 64, "Authorization: %s\r\n", value);
    h = head("/sse", hdr);
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(strlen(r.authorization), SSE_TOKEN_MAX);
    free(h);
    value[SSE_TOKEN_MAX] = 'a';
    value[SSE_TOKEN_MAX + 1] = '\0';
    snprintf(hdr, SSE_TOKEN_MAX + 64, "Authorization: %s\r\n", value);
    h = head("/sse", hdr);
    CHECK_INT(parse(h, &r), -1);
    free(h);
    free(hdr);
}

static void case_parse_last_event_id(void)
{
    sse_request r;
    char *h = head("/sse", "Last-Event-ID: 42\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 42);
    free(h);
    h = head("/sse", "last-event-id:7 \r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 7);
    free(h);
    h = head("/sse", "Last-Event-ID: 0\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 0);
    free(h);
    /* An empty header is no header. */
    h = head("/sse", "Last-Event-ID:\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(r.has_last_event_id, 0);
    free(h);
    /* Query parameter. */
    CHECK_INT(parse("GET /sse?last_event_id=17 HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 17);
    CHECK_INT(parse("GET /sse?access_token=t&last_event_id=18&x=y HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.last_event_id, 18);
    CHECK_STR(r.access_token, "t");
    /* The header wins over the query parameter, whatever the order. */
    h = head("/sse?last_event_id=17", "Last-Event-ID: 42\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 42);
    free(h);
    /* The largest id; one more overflows. */
    h = head("/sse", "Last-Event-ID: 18446744073709551615\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK(r.last_event_id == UINT64_MAX);
    free(h);

    static const char *const bad_headers[] = {
        "Last-Event-ID: abc\r\n",  "Last-Event-ID: -1\r\n",  "Last-Event-ID: +1\r\n",
        "Last-Event-ID: 1.5\r\n",  "Last-Event-ID: 1 2\r\n", "Last-Event-ID: 0x10\r\n",
        "Last-Event-ID: 18446744073709551616\r\n",              "Last-Event-ID: 123456789012345678901234\r\n",
    };
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        h = head("/sse", bad_headers[i]);
        if (parse(h, &r) != -1) {
            fprintf(stderr, "  FAIL: accepted header %s", bad_headers[i]);
            check_case_failures++;
        }
        free(h);
    }
    static const char *const bad_queries[] = {
        "/sse?last_event_id=abc", "/sse?last_event_id=", "/sse?last_event_id=-1", "/sse?last_event_id=1%00",
        "/sse?last_event_id=99999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad_queries / sizeof bad_queries[0]; i++) {
        h = head(bad_queries[i], "");
        if (parse(h, &r) != -1) {
            fprintf(stderr, "  FAIL: accepted %s\n", bad_queries[i]);
            check_case_failures++;
        }
        free(h);
    }
    /* A percent-encoded id is decoded. */
    CHECK_INT(parse("GET /sse?last_event_id=%35 HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.last_event_id, 5);
}

static void case_parse_access_token(void)
{
    sse_request r;
    CHECK_INT(parse("GET /sse?access_token=abc.def.ghi HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "abc.def.ghi");
    CHECK_STR(r.authorization, "");
    CHECK_INT(parse("GET /sse?access_token=a%2Eb%2ec%41%7a HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "a.b.cAz");
    CHECK_INT(parse("GET /sse?access_token=a+b HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "a b");
    CHECK_INT(parse("GET /sse?foo=bar&novalue&access_token=tok&bar= HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "tok");
    /* Only the exact name counts. */
    CHECK_INT(parse("GET /sse?xaccess_token=a&access_tokenx=b HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "");
    /* With an Authorization header both are reported; authn decides. */
    CHECK_INT(parse("GET /sse?access_token=q HTTP/1.1\r\nAuthorization: Bearer h\r\n\r\n", &r), 0);
    CHECK_STR(r.access_token, "q");
    CHECK_STR(r.authorization, "Bearer h");

    static const char *const bad[] = {
        "/sse?access_token=%",   "/sse?access_token=%4",  "/sse?access_token=abc%4",
        "/sse?access_token=%zz", "/sse?access_token=%g0", "/sse?access_token=%00",
        "/sse?access_token=a%00b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *h = head(bad[i], "");
        if (parse(h, &r) != -1) {
            fprintf(stderr, "  FAIL: accepted %s\n", bad[i]);
            check_case_failures++;
        }
        free(h);
    }
    /* Length: SSE_TOKEN_MAX decoded bytes fit, one more does not. */
    char *target = malloc(SSE_TOKEN_MAX + 64);
    strcpy(target, "/sse?access_token=");
    size_t base = strlen(target);
    memset(target + base, 't', SSE_TOKEN_MAX);
    target[base + SSE_TOKEN_MAX] = '\0';
    char *h = head(target, "");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(strlen(r.access_token), SSE_TOKEN_MAX);
    free(h);
    target[base + SSE_TOKEN_MAX] = 't';
    target[base + SSE_TOKEN_MAX + 1] = '\0';
    h = head(target, "");
    CHECK_INT(parse(h, &r), -1);
    free(h);
    free(target);
}

static void case_parse_refusals(void)
{
    sse_request r;
    /* Header line without a colon, or with an empty name. */
    CHECK_INT(parse("GET /sse HTTP/1.1\r\nHost x\r\n\r\n", &r), -1);
    CHECK_INT(parse("GET /sse HTTP/1.1\r\n: value\r\n\r\n", &r), -1);
    CHECK_INT(parse("GET /sse HTTP/1.1\r\nHost: x\r\ngarbage\r\n\r\n", &r), -1);
    /* A NUL byte anywhere. */
    const char nul1[] = "GET /sse HTTP/1.1\r\nAuthorization: Bearer a\0b\r\n\r\n";
    CHECK_INT(parse_n(nul1, sizeof nul1 - 1, &r), -1);
    const char nul2[] = "GET /sse\0 HTTP/1.1\r\n\r\n";
    CHECK_INT(parse_n(nul2, sizeof nul2 - 1, &r), -1);
    const char nul3[] = "GET /sse HTTP/1.1\r\n\r\n\0";
    CHECK_INT(parse_n(nul3, sizeof nul3 - 1, &r), -1);
    /* Wrong paths. */
    static const char *const paths[] = {"/sse2", "/ss", "/SSE", "/sse/", "/sse%3F", "//sse", "/", "sse", "/sse#x", "*"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char *h = head(paths[i], "");
        if (parse(h, &r) != -1) {
            fprintf(stderr, "  FAIL: accepted path %s\n", paths[i]);
            check_case_failures++;
        }
        free(h);
    }
    /* Versions and request-line shapes. */
    static const char *const lines[] = {
        "GET /sse HTTP/2.0\r\n\r\n", "GET /sse HTTP/1.10\r\n\r\n", "GET /sse HTTP/1.\r\n\r\n",
        "GET /sse http/1.1\r\n\r\n", "GET /sse\r\n\r\n",           "GET /sse  HTTP/1.1\r\n\r\n",
        "GET\r\n\r\n",               "\r\n\r\n",                   "",
        "GET /sse HTTP/1.1",         "GET /sse HTTP/1.1\r\nHost: x", "GET /sse HTTP/0.9\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (parse(lines[i], &r) != -1) {
            fprintf(stderr, "  FAIL: accepted request \"%s\"\n", lines[i]);
            check_case_failures++;
        }
    }
}

/* The front door bounds a head (431 past 8 KiB, test_http_head.c); this
 * parser no longer has a limit of its own (SSE_HEAD_MAX is gone), so a large
 * well-formed head parses, and what it carries after the padding is read. */
static void case_parse_large_head(void)
{
    sse_request r;
    size_t big = 64 * 1024;
    char *h = malloc(big + 1);
    strcpy(h, "GET /sse?last_event_id=3 HTTP/1.1\r\nX-Pad: ");
    size_t used = strlen(h);
    static const char tail[] = "\r\nAuthorization: Bearer late\r\nLast-Event-ID: 99\r\n\r\n";
    size_t tl = sizeof tail - 1;
    memset(h + used, 'p', big - used - tl);
    memcpy(h + big - tl, tail, tl + 1);
    CHECK_INT(strlen(h), big);
    CHECK_INT(parse(h, &r), 0);
    CHECK_STR(r.authorization, "Bearer late");
    CHECK_INT(r.has_last_event_id, 1);
    CHECK_INT(r.last_event_id, 99);
    /* A bad header at the end of a large head is still found. */
    static const char bad_tail[] = "\r\nLast-Event-ID: x9\r\n\r\n";
    memcpy(h + big - tl, bad_tail, sizeof bad_tail - 1);
    CHECK_INT(parse_n(h, big - tl + sizeof bad_tail - 1, &r), -1);
    free(h);
}

static void case_parse_events_and_presence(void)
{
    sse_request r;
    CHECK_INT(parse("GET /sse?events=a%2Cb,room.*&presence=true HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.has_events, 1);
    CHECK_STR(r.events, "a%2Cb,room.*"); /* raw: split before it is decoded */
    CHECK_INT(r.presence, 1);
    CHECK_INT(parse("GET /sse?events=&presence=false HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.has_events, 1);
    CHECK_STR(r.events, "");
    CHECK_INT(r.presence, 0);
    CHECK_INT(parse("GET /sse HTTP/1.1\r\n\r\n", &r), 0);
    CHECK_INT(r.has_events, 0);
    CHECK_INT(r.presence, 0);
    CHECK_INT(parse("GET /sse?presence=yes HTTP/1.1\r\n\r\n", &r), -1);
    CHECK_INT(parse("GET /sse?presence HTTP/1.1\r\n\r\n", &r), 0); /* no value: not asked */
    CHECK_INT(r.presence, 0);
    /* 4096 bytes of value pass, one more is refused. */
    char *h = malloc(4200);
    strcpy(h, "GET /sse?events=");
    memset(h + strlen(h), 'e', 4096);
    strcpy(h + 16 + 4096, " HTTP/1.1\r\n\r\n");
    CHECK_INT(parse(h, &r), 0);
    CHECK_INT(strlen(r.events), 4096);
    memset(h + 16, 'e', 4097);
    strcpy(h + 16 + 4097, " HTTP/1.1\r\n\r\n");
    CHECK_INT(parse(h, &r), -1);
    free(h);
}

int main(void)
{
    RUN_CASE(case_parse_minimal);
    RUN_CASE(case_parse_authorization);
    RUN_CASE(case_parse_last_event_id);
    RUN_CASE(case_parse_access_token);
    RUN_CASE(case_parse_refusals);
    RUN_CASE(case_parse_large_head);
    RUN_CASE(case_parse_events_and_presence);
    return check_summary();
}
