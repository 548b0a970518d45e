/*
 * test_http_head.c - HTTP/1.1 framing for the front door (lib/http_head.c):
 * the request line refused at its first bad byte, where a head ends (CRLF or
 * bare LF), 431 past `max`, the RFC 9112 length rules (Content-Length,
 * Transfer-Encoding, and every ambiguous combination of them refused),
 * header syntax, keep-alive and Expect, header lookup and routing, chunked
 * bodies found over many calls, and the response heads relayed from
 * libmicrohttpd.
 *
 * Every input is copied into a heap buffer of exactly its length (no NUL
 * after it), so that under AddressSanitizer a read past `len` fails the run.
 */
#include "check.h"
#include "http_head.h"

#include <stdint.h>

/* An exact-size heap copy of s[0..len). */
static char *exact(const char *s, size_t len)
{
    char *b = malloc(len ? len : 1);
    if (b == NULL)
        abort();
    memcpy(b, s, len);
    return b;
}

/* The last parsed input: http_head's pointers point into it, so it lives
 * until the next parse (or release()). */
static char *last_buf;
static const char *last_why;

static void release(void)
{
    free(last_buf);
    last_buf = NULL;
}

static const char *result_name(http_head_result r)
{
    switch (r) {
    case HTTP_HEAD_MORE:
        return "MORE";
    case HTTP_HEAD_OK:
        return "OK";
    case HTTP_HEAD_BAD:
        return "BAD";
    case HTTP_HEAD_TOO_LARGE:
        return "TOO_LARGE";
    }
    return "?";
}

/* http_head_parse on an exact copy of s[0..len), with the checks every
 * result must pass: a reason for BAD, and none otherwise; an OK head inside
 * the input, ending in '\n', with its method and target inside it. */
static http_head_result parse_nm(const char *s, size_t len, size_t max, http_head *h)
{
    release();
    last_buf = exact(s, len);
    last_why = NULL;
    memset(h, 0x5a, sizeof *h); /* the parser must set every field */
    http_head_result r = http_head_parse(last_buf, len, max, h, &last_why);
    if (r == HTTP_HEAD_BAD && (last_why == NULL || last_why[0] == '\0')) {
        fprintf(stderr, "  BAD without a reason\n");
        check_case_failures++;
    }
    if (r == HTTP_HEAD_OK) {
        if (h->len == 0 || h->len > len || h->len > max || last_buf[h->len - 1] != '\n' ||
            h->method != last_buf || h->method_len == 0 || h->target != last_buf + h->method_len + 1 ||
            h->target + h->target_len > last_buf + h->len || (h->minor != 0 && h->minor != 1)) {
            fprintf(stderr, "  OK with an inconsistent head (len %zu of %zu)\n", h->len, len);
            check_case_failures++;
        }
    }
    return r;
}

static http_head_result parse_n(const char *s, size_t len, http_head *h)
{
    return parse_nm(s, len, 8192, h);
}

static http_head_result parse(const char *s, http_head *h)
{
    return parse_n(s, strlen(s), h);
}

/* Checks that s[0..len) parses as `want`, printing the input when not. */
#define EXPECT_N(s, len, want)                                                                                         \
    do {                                                                                                               \
        http_head h_;                                                                                                  \
        http_head_result r_ = parse_n((s), (len), &h_);                                                                \
        if (r_ != (want)) {                                                                                            \
            fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                                                     \
            for (size_t i_ = 0; i_ < (size_t)(len); i_++) {                                                            \
                unsigned char c_ = (unsigned char)(s)[i_];                                                             \
                if (c_ >= 0x20 && c_ < 0x7f && c_ != '\\')                                                             \
                    fputc(c_, stderr);                                                                                 \
                else                                                                                                   \
                    fprintf(stderr, "\\x%02x", c_);                                                                    \
            }                                                                                                          \
            fprintf(stderr, " -> %s, want %s (why: %s)\n", result_name(r_), result_name(want),                         \
                    last_why ? last_why : "-");                                                                        \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)
#define EXPECT(s, want) EXPECT_N((s), strlen(s), (want))

/* "GET / HTTP/1.1\r\n<headers>\r\n" */
static char *req(const char *headers)
{
    size_t n = strlen(headers) + 64;
    char *b = malloc(n);
    if (b == NULL)
        abort();
    snprintf(b, n, "GET / HTTP/1.1\r\n%s\r\n", headers);
    return b;
}

/* The request with these headers is BAD. */
#define EXPECT_HEADERS(headers, want)                                                                                  \
    do {                                                                                                               \
        char *r__ = req(headers);                                                                                      \
        EXPECT(r__, want);                                                                                             \
        free(r__);                                                                                                     \
    } while (0)

/* ---- the request line -------------------------------------------------------- */

static void case_request_line_refused_at_once(void)
{
    /* Not an HTTP request line: refused at its first bytes, before the head
     * deadline, and whatever follows. */
    static const char *const bad[] = {
        "\x16\x03\x01",                                 /* a TLS ClientHello */
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* ... more of it */
        "\x16",
        "get /sse HTTP/1.1\r\n\r\n", /* methods are capitals */
        "get ",
        "Get /sse ",
        "G/ss",
        " GET /sse ",
        "GET\t/sse ",
        "ABCDEFGHIJKLMNOPQ",                  /* 17 letters: no method is that long */
        "GPPPPPPPPPPPPPPPP s HTTP/1.1\r\n\r\n", /* ... whether or not its space has arrived */
        "GET /sse\x01 HTTP/1.1\r\n",
        "GET /sse\x01",
        "GET /sse?\x7f HTTP/1.1",
        "GET /sse\rX", /* a bare CR inside the line */
        "POST /x\x1b[2J",
        "\r\n\r\n",
        "\n",
        "\xff\xfe\xfd",
        "{\"json\": 1}\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(bad[i], HTTP_HEAD_BAD);
    /* A NUL inside the request line. */
    static const char nul_in_line[] = "GET /s\0e ";
    EXPECT_N(nul_in_line, sizeof nul_in_line - 1, HTTP_HEAD_BAD);
    static const char nul_first[] = "\0GET / HTTP/1.1\r\n\r\n";
    EXPECT_N(nul_first, sizeof nul_first - 1, HTTP_HEAD_BAD);
    /* Once the line is whole, a NUL in a header is judged with the head. */
    static const char nul_after_line[] = "GET /sse HTTP/1.1\r\n\0";
    EXPECT_N(nul_after_line, sizeof nul_after_line - 1, HTTP_HEAD_MORE);
    static const char nul_header[] = "GET /sse HTTP/1.1\r\nX: a\0b\r\n\r\n";
    EXPECT_N(nul_header, sizeof nul_header - 1, HTTP_HEAD_BAD);
    static const char nul_line[] = "GET /sse HTTP/1.1\r\n\0\r\n\r\n";
    EXPECT_N(nul_line, sizeof nul_line - 1, HTTP_HEAD_BAD);
    /* A NUL in the body is not the head's business. */
    static const char nul_body[] = "GET /sse HTTP/1.1\r\n\r\n\0";
    EXPECT_N(nul_body, sizeof nul_body - 1, HTTP_HEAD_OK);
    release();
}

static void case_request_line_partial(void)
{
    static const char *const more[] = {
        "",
        "G",
        "GET",
        "GET ",
        "GET /s",
        "GET /sse",
        "GET /sse HTTP/1.1",
        "GET /sse HTTP/1.1\r",
        "GET /sse HTTP/1.1\r\n",
        "GET /sse HTTP/1.1\r\nHost: x",
        "GET /sse HTTP/1.1\r\nHost: x\r\n",
        "GET /sse HTTP/1.1\r\nHost: x\r\n\r",
        "ABCDEFGHIJKLMNOP", /* a 16-letter method may still be arriving */
        "POST /insert HTTP/1.1\r\nContent-Length: 5\r\n",
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        EXPECT(more[i], HTTP_HEAD_MORE);
    /* Every prefix of a whole head needs more; the whole is OK. */
    static const char whole[] = "POST /insert?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    for (size_t n = 0; n < sizeof whole - 1; n++)
        EXPECT_N(whole, n, HTTP_HEAD_MORE);
    EXPECT(whole, HTTP_HEAD_OK);
    release();
}

static void case_request_line_shapes(void)
{
    static const char *const bad[] = {
        "GET /sse HTTP/2.0\r\n\r\n", "GET /sse HTTP/1.10\r\n\r\n", "GET /sse HTTP/1.\r\n\r\n",
        "GET /sse http/1.1\r\n\r\n", "GET /sse\r\n\r\n",           "GET /sse  HTTP/1.1\r\n\r\n",
        "GET  /sse HTTP/1.1\r\n\r\n", "GET\r\n\r\n",               "GET /sse HTTP/0.9\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n", "GET /sse HTTP/1.2\r\n\r\n",  "GET /sse HTTP/1.1 \r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(bad[i], HTTP_HEAD_BAD);
    http_head h;
    CHECK_INT(parse("OPTIONS * HTTP/1.1\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.method_len, 7);
    CHECK(h.target_len == 1 && h.target[0] == '*');
    /* Sixteen letters is the longest method. */
    CHECK_INT(parse("ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.method_len, 16);
    release();
}

/* ---- where the head ends ---------------------------------------------------- */

static void case_line_endings(void)
{
    http_head h;
    const char crlf[] = "GET /sse?a=b HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_INT(parse(crlf, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, strlen(crlf));
    CHECK(h.method_len == 3 && memcmp(h.method, "GET", 3) == 0);
    CHECK(h.target_len == 8 && memcmp(h.target, "/sse?a=b", 8) == 0);
    CHECK_INT(h.minor, 1);
    CHECK_INT(h.content_length, -1);
    CHECK_INT(h.chunked, 0);
    CHECK_INT(h.keep_alive, 1);
    CHECK_INT(h.expect_continue, 0);

    const char lf[] = "GET /sse HTTP/1.0\nHost: x\n\n";
    CHECK_INT(parse(lf, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, strlen(lf));
    CHECK_INT(h.minor, 0);
    CHECK(h.target_len == 4 && memcmp(h.target, "/sse", 4) == 0);

    /* No headers at all; a CRLF line and a bare-LF blank line. */
    CHECK_INT(parse("GET / HTTP/1.1\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, 18);
    CHECK_INT(parse("GET / HTTP/1.1\r\n\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, 17);
    CHECK_INT(parse("GET / HTTP/1.1\nA: b\r\n\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, 22);

    /* Bytes after the head (a body, the next pipelined request) are not
     * part of it, and do not change what the head says. */
    const char more[] = "POST /insert HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /next HTTP/1.1\r\n\r\n";
    CHECK_INT(parse(more, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, strlen("POST /insert HTTP/1.1\r\nContent-Length: 4\r\n\r\n"));
    CHECK_INT(h.content_length, 4);
    const char garbage_after[] = "GET / HTTP/1.1\r\n\r\n\x16\x03\x01\xff\r\n";
    CHECK_INT(parse(garbage_after, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, 18);
    /* The first blank line ends the head: a "header" after it is body. */
    CHECK_INT(parse("GET / HTTP/1.1\r\n\r\nContent-Length: 5\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, -1);
    CHECK_INT(h.len, 18);
    release();
}

static void case_too_large(void)
{
    http_head h;
    /* A head of exactly `max` bytes is whole; one byte more is 431. */
    char buf[256];
    const char *start = "GET / HTTP/1.1\r\nX-Pad: ";
    size_t sl = strlen(start);
    size_t max = 64;
    memcpy(buf, start, sl);
    memset(buf + sl, 'p', sizeof buf - sl);
    memcpy(buf + max - 4, "\r\n\r\n", 4);
    CHECK_INT(parse_nm(buf, max, max, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, max);
    CHECK_INT(parse_nm(buf, sizeof buf, max, &h), HTTP_HEAD_OK); /* more bytes after it: the same */
    CHECK_INT(h.len, max);

    memset(buf + sl, 'p', sizeof buf - sl);
    memcpy(buf + max - 3, "\r\n\r\n", 4); /* a head of max + 1 */
    CHECK_INT(parse_nm(buf, max + 1, max, &h), HTTP_HEAD_TOO_LARGE);
    CHECK_INT(parse_nm(buf, max, max, &h), HTTP_HEAD_TOO_LARGE); /* known once `max` bytes have no end */
    CHECK_INT(parse_nm(buf, max - 1, max, &h), HTTP_HEAD_MORE);
    CHECK_INT(parse_nm(buf, sizeof buf, max, &h), HTTP_HEAD_TOO_LARGE);

    /* A long header with no end, at the front door's 8 KiB. */
    size_t big = 20000;
    char *b = malloc(big);
    memcpy(b, start, sl);
    memset(b + sl, 'q', big - sl);
    CHECK_INT(parse_nm(b, big, 8192, &h), HTTP_HEAD_TOO_LARGE);
    CHECK_INT(parse_nm(b, 8192, 8192, &h), HTTP_HEAD_TOO_LARGE);
    CHECK_INT(parse_nm(b, 8191, 8192, &h), HTTP_HEAD_MORE);
    /* A request line longer than max with no end: 431, not MORE forever. */
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', big - 5);
    CHECK_INT(parse_nm(b, big, 8192, &h), HTTP_HEAD_TOO_LARGE);
    /* The same 16 KiB head is fine under a larger max. */
    memcpy(b, start, sl);
    memset(b + sl, 'q', big - sl);
    memcpy(b + 16384 - 4, "\r\n\r\n", 4);
    CHECK_INT(parse_nm(b, big, 16384, &h), HTTP_HEAD_OK);
    CHECK_INT(h.len, 16384);
    CHECK_INT(parse_nm(b, big, 16383, &h), HTTP_HEAD_TOO_LARGE);
    free(b);
    release();
}

/* ---- the body's length (RFC 9112 §6) -------------------------------------- */

static void case_content_length(void)
{
    http_head h;
    char *r = req("Content-Length: 5\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, 5);
    CHECK_INT(h.chunked, 0);
    free(r);
    r = req("content-LENGTH:0\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, 0);
    free(r);
    /* Whitespace around the value is trimmed. */
    r = req("Content-Length:  5\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, 5);
    free(r);
    r = req("Content-Length: \t12\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, 12);
    free(r);
    /* Whitespace after it is refused: libmicrohttpd, behind the front door,
     * would read the value with it (and so frame the request otherwise). */
    r = req("Content-Length: 12 \t\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_BAD);
    free(r);
    /* 18 digits are the most. */
    r = req("Content-Length: 999999999999999999\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK(h.content_length == 999999999999999999LL);
    free(r);
    r = req("Content-Length: 000000000000000007\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.content_length, 7);
    free(r);

    static const char *const bad[] = {
        "Content-Length: 5\r\nContent-Length: 6\r\n", /* two values */
        "Content-Length: 5\r\nContent-Length: 5\r\n", /* even the same one twice */
        "Content-Length: 5\r\ncontent-length: 5\r\n",
        "Content-Length: 1, 2\r\n",
        "Content-Length: 1,1\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 5.0\r\n",
        "Content-Length: 5a\r\n",
        "Content-Length:\r\n",
        "Content-Length: \r\n",
        "Content-Length: 1234567890123456789\r\n", /* 19 digits */
        "Content-Length: 99999999999999999999999\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_HEADERS(bad[i], HTTP_HEAD_BAD);
    /* The reason names the header. */
    r = req("Content-Length: 5\r\nContent-Length: 5\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_BAD);
    CHECK_CONTAINS(last_why, "Content-Length");
    free(r);
    release();
}

static void case_transfer_encoding(void)
{
    http_head h;
    char *r = req("Transfer-Encoding: chunked\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.chunked, 1);
    CHECK_INT(h.content_length, -1);
    free(r);
    r = req("transfer-encoding:  Chunked\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_OK);
    CHECK_INT(h.chunked, 1);
    free(r);
    r = req("Transfer-Encoding: chunked\t\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_BAD);
    free(r);

    static const char *const bad[] = {
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", /* two headers */
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        /* Content-Length with Transfer-Encoding, either order */
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_HEADERS(bad[i], HTTP_HEAD_BAD);
    /* HTTP/1.0 has no Transfer-Encoding. */
    EXPECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_HEAD_BAD);
    r = req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_BAD);
    CHECK_CONTAINS(last_why, "Transfer-Encoding");
    free(r);
    release();
}

/* ---- header syntax ------------------------------------------------------------ */

static void case_header_syntax(void)
{
    static const char *const bad[] = {
        "Host: x\r\n  folded\r\n", /* obs-fold */
        "Host: x\r\n\tfolded\r\n",
        " Host: x\r\n", /* a folded first line */
        "Host : x\r\n", /* space before the colon */
        "Host\t: x\r\n",
        "Content-Length : 5\r\n",
        "Host x\r\n", /* no colon */
        ": x\r\n",    /* no name */
        "Ho st: x\r\n",
        "Ho\"st: x\r\n",
        "X: a\x01z\r\n", /* control bytes in a value */
        "X: a\x7fz\r\n",
        "X: a\rz\r\n", /* a bare CR */
        "X: a\x1b[2J\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_HEADERS(bad[i], HTTP_HEAD_BAD);
    http_head h;
    char *r = req("Host: x\r\n  folded\r\n");
    CHECK_INT(parse(r, &h), HTTP_HEAD_BAD);
    CHECK_CONTAINS(last_why, "fold");
    free(r);
    /* Tabs, obs-text, empty values and any token name are fine. */
    static const char *const ok[] = {
        "X: a\tb\r\n",
        "X: caf\xc3\xa9\r\n",
        "X:\r\n",
        "X-Foo_bar!#$%&'*+-.^`|~: y\r\n",
        "Host:x\r\n",
        "Host: x \r\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        EXPECT_HEADERS(ok[i], HTTP_HEAD_OK);
    release();
}

static int keep_alive_of(const char *s)
{
    http_head h;
    http_head_result r = parse(s, &h);
    CHECK_INT(r, HTTP_HEAD_OK);
    return r == HTTP_HEAD_OK ? h.keep_alive : -1;
}

static void case_keep_alive(void)
{
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\n\r\n"), 1);
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"), 1);
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n"), 1); /* another token */
    CHECK_INT(keep_alive_of("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 1);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 1);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n"), 1);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 0);
    CHECK_INT(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n"), 0);
    release();
}

static void case_expect(void)
{
    http_head h;
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.expect_continue, 1);
    CHECK_INT(h.content_length, 3);
    CHECK_INT(parse("POST / HTTP/1.1\r\nexpect:  100-Continue \r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.expect_continue, 1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", &h), HTTP_HEAD_OK);
    CHECK_INT(h.expect_continue, 0);
    EXPECT("POST / HTTP/1.1\r\nExpect: something\r\n\r\n", HTTP_HEAD_BAD);
    EXPECT("POST / HTTP/1.1\r\nExpect: 100-continue, foo\r\n\r\n", HTTP_HEAD_BAD);
    EXPECT("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", HTTP_HEAD_BAD);
    EXPECT("POST / HTTP/1.1\r\nExpect:\r\n\r\n", HTTP_HEAD_BAD);
    release();
}

/* ---- looking at a parsed head -------------------------------------------------- */

static void case_header_lookup(void)
{
    static const char s[] = "GET /x HTTP/1.1\r\nHost: broker.example:8443\r\nx-request-id:  abc-123 \r\n"
                            "Authorization: Bearer t\r\nHost: second\r\nEmpty:\r\nTab:\tv\t\r\n\r\n"
                            "X-After: body\r\n";
    http_head h;
    CHECK_INT(parse(s, &h), HTTP_HEAD_OK);
    size_t n = 0;
    const char *v = http_head_header(last_buf, h.len, "Host", &n);
    CHECK(v != NULL && n == 19 && memcmp(v, "broker.example:8443", 19) == 0); /* the first one */
    v = http_head_header(last_buf, h.len, "HOST", &n);
    CHECK(v != NULL && n == 19);
    v = http_head_header(last_buf, h.len, "X-Request-Id", &n);
    CHECK(v != NULL && n == 7 && memcmp(v, "abc-123", 7) == 0); /* case-insensitive, trimmed */
    v = http_head_header(last_buf, h.len, "authorization", &n);
    CHECK(v != NULL && n == 8 && memcmp(v, "Bearer t", 8) == 0);
    v = http_head_header(last_buf, h.len, "Empty", &n);
    CHECK(v != NULL && n == 0);
    v = http_head_header(last_buf, h.len, "Tab", &n);
    CHECK(v != NULL && n == 1 && v[0] == 'v');
    /* Absent, a prefix or an extension of a name, the request line, the body. */
    CHECK(http_head_header(last_buf, h.len, "Cookie", &n) == NULL);
    CHECK(http_head_header(last_buf, h.len, "Hos", &n) == NULL);
    CHECK(http_head_header(last_buf, h.len, "Hostx", &n) == NULL);
    CHECK(http_head_header(last_buf, h.len, "GET /x HTTP/1.1", &n) == NULL);
    CHECK(http_head_header(last_buf, h.len, "X-After", &n) == NULL);
    /* LF-only heads too. */
    CHECK_INT(parse("GET / HTTP/1.1\nHost: lf\n\n", &h), HTTP_HEAD_OK);
    v = http_head_header(last_buf, h.len, "host", &n);
    CHECK(v != NULL && n == 2 && memcmp(v, "lf", 2) == 0);
    release();
}

static int is(const char *line, const char *method, const char *path, int prefix)
{
    char *s = malloc(strlen(line) + 8);
    sprintf(s, "%s\r\n\r\n", line);
    http_head h;
    http_head_result r = parse(s, &h);
    free(s);
    CHECK_INT(r, HTTP_HEAD_OK);
    int got = r == HTTP_HEAD_OK ? http_head_is(&h, method, path, prefix) : -1;
    release();
    return got;
}

static void case_head_is(void)
{
    CHECK_INT(is("GET /sse HTTP/1.1", "GET", "/sse", 0), 1);
    CHECK_INT(is("GET /sse?access_token=x HTTP/1.1", "GET", "/sse", 0), 1);
    CHECK_INT(is("GET /sse? HTTP/1.1", "GET", "/sse", 0), 1);
    CHECK_INT(is("GET /sse/ HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GET /sseX HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GET /ss HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GET /SSE HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GET /sse#x HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("POST /sse HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("HEAD /sse HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GETX /sse HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("GE /sse HTTP/1.1", "GET", "/sse", 0), 0);
    CHECK_INT(is("POST /insert HTTP/1.1", "POST", "/insert", 0), 1);
    CHECK_INT(is("POST /insert?x HTTP/1.1", "POST", "/insert", 0), 1);
    /* Prefixes. */
    CHECK_INT(is("GET /.well-known/acme-challenge/tok HTTP/1.1", "GET", "/.well-known/acme-challenge/", 1), 1);
    CHECK_INT(is("GET /.well-known/acme-challenge/ HTTP/1.1", "GET", "/.well-known/acme-challenge/", 1), 1);
    CHECK_INT(is("GET /.well-known/acme-challenge HTTP/1.1", "GET", "/.well-known/acme-challenge/", 1), 0);
    CHECK_INT(is("GET /.well-known/acme-challenge/tok HTTP/1.1", "GET", "/.well-known/acme-challenge/", 0), 0);
    CHECK_INT(is("GET /ssefoo HTTP/1.1", "GET", "/sse", 1), 1);
    CHECK_INT(is("HEAD /anything HTTP/1.1", "HEAD", "", 1), 1);
    CHECK_INT(is("GET /anything HTTP/1.1", "HEAD", "", 1), 0);
}

/* ---- chunked bodies ------------------------------------------------------------ */

/* Scans body[0..len) in one call from a fresh state. */
static int scan_whole(const char *body, size_t len, size_t max, size_t *end, const char **why)
{
    http_chunked st;
    memset(&st, 0, sizeof st);
    char *b = exact(body, len);
    *end = (size_t)-1;
    *why = NULL;
    int r = http_chunked_scan(&st, b, len, max, end, why);
    free(b);
    if (r == 1 && *end > len) {
        fprintf(stderr, "  chunked end %zu past len %zu\n", *end, len);
        check_case_failures++;
    }
    if (r == -1 && (*why == NULL || !(*why)[0])) {
        fprintf(stderr, "  chunked -1 without a reason\n");
        check_case_failures++;
    }
    return r;
}

/* Scans body[0..len) as its bytes arrive `step` at a time (the buffer grows,
 * as the front door's does; each call sees an exact-size copy of what has
 * arrived).  Returns the first non-zero result, *end and *why from it. */
static int scan_steps(const char *body, size_t len, size_t step, size_t max, size_t *end, const char **why)
{
    http_chunked st;
    memset(&st, 0, sizeof st);
    *why = NULL;
    for (size_t n = step < len ? step : len;; n = n + step < len ? n + step : len) {
        char *b = exact(body, n);
        int r = http_chunked_scan(&st, b, n, max, end, why);
        free(b);
        if (r != 0 || n == len)
            return r;
    }
}

static void case_chunked(void)
{
    static const struct {
        const char *body;
        size_t end; /* 0: the whole body */
    } ok[] = {
        {"5\r\nhello\r\n0\r\n\r\n", 0},
        {"5\nhello\n0\n\n", 0}, /* bare LF */
        {"5;name=value\r\nhello\r\n0\r\n\r\n", 0},
        {"5;a;b=\"q\"\r\nhello\r\n0;last\r\n\r\n", 0},
        {"5 ;ext\r\nhello\r\n0\r\n\r\n", 0},
        {"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", 0},
        {"1\r\nx\r\n2\r\nyz\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", 0},
        {"0\r\n\r\n", 0},
        {"000\r\n\r\n", 0},
        {"0\r\n\r\nPOST /next HTTP/1.1\r\n\r\n", 5}, /* the next request is not the body's */
        {"3\r\nabc\r\n0\r\n\r\n3\r\nabc\r\n", 13},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len = strlen(ok[i].body), want = ok[i].end ? ok[i].end : len, end;
        const char *why;
        int r = scan_whole(ok[i].body, len, 1 << 20, &end, &why);
        if (r != 1 || end != want) {
            fprintf(stderr, "  FAIL: chunked #%zu whole: %d end %zu, want 1 end %zu (%s)\n", i, r, end, want,
                    why ? why : "-");
            check_case_failures++;
        }
        /* The same end however the bytes arrive. */
        static const size_t steps[] = {1, 2, 3, 7, 64};
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            end = (size_t)-1;
            r = scan_steps(ok[i].body, len, steps[s], 1 << 20, &end, &why);
            if (r != 1 || end != want) {
                fprintf(stderr, "  FAIL: chunked #%zu in steps of %zu: %d end %zu, want 1 end %zu (%s)\n", i,
                        steps[s], r, end, want, why ? why : "-");
                check_case_failures++;
            }
        }
        /* Every prefix shorter than the end needs more. */
        for (size_t n = 0; n < want; n++) {
            r = scan_whole(ok[i].body, n, 1 << 20, &end, &why);
            if (r != 0) {
                fprintf(stderr, "  FAIL: chunked #%zu prefix %zu: %d, want 0\n", i, n, r);
                check_case_failures++;
            }
        }
    }

    static const char *const bad[] = {
        "\r\nhello\r\n0\r\n\r\n",       /* no size */
        "g\r\n",                        /* not hex */
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5x\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",     /* data longer than its size */
        "5\r\nhello\rX0\r\n\r\n",       /* CR not followed by LF */
        "1000000000000000\r\n",         /* 16 hex digits */
        "ffffffffffffffff\r\n",
        ";ext\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t end;
        const char *why;
        int r = scan_whole(bad[i], strlen(bad[i]), 1 << 20, &end, &why);
        if (r != -1) {
            fprintf(stderr, "  FAIL: chunked bad #%zu: %d, want -1\n", i, r);
            check_case_failures++;
        }
        r = scan_steps(bad[i], strlen(bad[i]), 1, 1 << 20, &end, &why);
        if (r != -1) {
            fprintf(stderr, "  FAIL: chunked bad #%zu byte by byte: %d, want -1\n", i, r);
            check_case_failures++;
        }
    }
}

static void case_chunked_limit(void)
{
    size_t end;
    const char *why;
    static const char body[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    size_t len = sizeof body - 1;
    /* Exactly the limit: accepted. */
    CHECK_INT(scan_whole(body, len, 11, &end, &why), 1);
    CHECK_INT(end, len);
    CHECK_INT(scan_steps(body, len, 1, 11, &end, &why), 1);
    /* One byte over: refused, as soon as the size line says so. */
    CHECK_INT(scan_whole(body, len, 10, &end, &why), -1);
    CHECK_STR(why, "request body too large");
    CHECK_INT(scan_steps(body, len, 1, 10, &end, &why), -1);
    CHECK_STR(why, "request body too large");
    CHECK_INT(scan_whole(body, strlen("5\r\nhello\r\n6\r\n"), 10, &end, &why), -1);
    CHECK_STR(why, "request body too large");
    /* A first chunk over the limit, before its data. */
    CHECK_INT(scan_whole("fffff\r\n", 7, 1000, &end, &why), -1);
    CHECK_STR(why, "request body too large");
    /* Zero allowed: only the empty body. */
    CHECK_INT(scan_whole("0\r\n\r\n", 5, 0, &end, &why), 1);
    CHECK_INT(scan_whole("1\r\nx\r\n0\r\n\r\n", 11, 0, &end, &why), -1);
}

/* A chunk-size line (or trailer line) is judged the same whether it arrives
 * in one read or in several: a long line is either fine both ways or refused
 * both ways. */
static void case_chunked_long_line(void)
{
    size_t ext = 8000, len = ext + 32;
    char *body = malloc(len + 1);
    strcpy(body, "5;x=");
    memset(body + 4, 'v', ext);
    strcpy(body + 4 + ext, "\r\nhello\r\n0\r\n\r\n");
    len = strlen(body);
    size_t end1 = 0, end2 = 0;
    const char *why1, *why2;
    int whole = scan_whole(body, len, 1 << 20, &end1, &why1);
    int steps = scan_steps(body, len, 1024, 1 << 20, &end2, &why2);
    if (whole != steps || (whole == 1 && end1 != end2)) {
        fprintf(stderr, "  FAIL: a %zu-byte chunk extension: whole %d (%s), in 1 KiB reads %d (%s)\n", ext, whole,
                whole < 0 ? why1 : "-", steps, steps < 0 ? why2 : "-");
        check_case_failures++;
    }
    /* The same with a long trailer line. */
    strcpy(body, "0\r\nX-T: ");
    memset(body + 8, 't', ext);
    strcpy(body + 8 + ext, "\r\n\r\n");
    len = strlen(body);
    whole = scan_whole(body, len, 1 << 20, &end1, &why1);
    steps = scan_steps(body, len, 1024, 1 << 20, &end2, &why2);
    if (whole != steps || (whole == 1 && end1 != end2)) {
        fprintf(stderr, "  FAIL: a %zu-byte trailer: whole %d (%s), in 1 KiB reads %d (%s)\n", ext, whole,
                whole < 0 ? why1 : "-", steps, steps < 0 ? why2 : "-");
        check_case_failures++;
    }
    free(body);
}

/* ---- response heads ------------------------------------------------------------ */

static int response(const char *s, size_t len, http_response_head *r)
{
    char *b = exact(s, len);
    memset(r, 0x5a, sizeof *r);
    int rc = http_response_head_parse(b, len, r);
    free(b);
    if (rc == 1 && (r->len == 0 || r->len > len)) {
        fprintf(stderr, "  response head len %zu of %zu\n", r->len, len);
        check_case_failures++;
    }
    return rc;
}

static void case_response_head(void)
{
    http_response_head r;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
                    "{\"ok\": true, ...}";
    CHECK_INT(response(s, strlen(s), &r), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.content_length, 17);
    CHECK_INT(r.chunked, 0);
    CHECK_INT(r.close, 0);
    CHECK_INT(r.len, strlen(s) - 17);
    /* Every prefix of the head needs more. */
    for (size_t n = 0; n < r.len; n++) {
        http_response_head p;
        CHECK_INT(response(s, n, &p), 0);
    }

    s = "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n";
    CHECK_INT(response(s, strlen(s), &r), 1);
    CHECK_INT(r.status, 404);
    CHECK_INT(r.content_length, -1);
    CHECK_INT(r.chunked, 1);
    CHECK_INT(r.close, 1);
    CHECK_INT(r.len, strlen(s));

    s = "HTTP/1.0 503 Service Unavailable\nConnection: Keep-Alive, Close\nContent-Length: 0\n\n";
    CHECK_INT(response(s, strlen(s), &r), 1);
    CHECK_INT(r.status, 503);
    CHECK_INT(r.content_length, 0);
    CHECK_INT(r.close, 1);
    CHECK_INT(r.len, strlen(s));

    /* 100 Continue, then the real answer after it. */
    s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
    CHECK_INT(response(s, strlen(s), &r), 1);
    CHECK_INT(r.status, 100);
    CHECK_INT(r.len, strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    CHECK_INT(r.content_length, -1);
    CHECK_INT(response(s + 25, strlen(s + 25), &r), 1);
    CHECK_INT(r.status, 201);
    CHECK_INT(r.content_length, 2);

    /* No Content-Length, no chunked: the body ends with the connection. */
    s = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    CHECK_INT(response(s, strlen(s), &r), 1);
    CHECK_INT(r.content_length, -1);
    CHECK_INT(r.chunked, 0);

    /* Not an HTTP/1.x response head. */
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1\r\n\r\n",
        "\r\n\r\n",              "garbage\n\n",             "HTTP/1.1  200 OK\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (response(bad[i], strlen(bad[i]), &r) != -1) {
            fprintf(stderr, "  FAIL: response head #%zu accepted\n", i);
            check_case_failures++;
        }
    }
    CHECK_INT(response("HTTP/1.1 200 OK\r\n", 17, &r), 0);
    CHECK_INT(response("", 0, &r), 0);
}

int main(void)
{
    RUN_CASE(case_request_line_refused_at_once);
    RUN_CASE(case_request_line_partial);
    RUN_CASE(case_request_line_shapes);
    RUN_CASE(case_line_endings);
    RUN_CASE(case_too_large);
    RUN_CASE(case_content_length);
    RUN_CASE(case_transfer_encoding);
    RUN_CASE(case_header_syntax);
    RUN_CASE(case_keep_alive);
    RUN_CASE(case_expect);
    RUN_CASE(case_header_lookup);
    RUN_CASE(case_head_is);
    RUN_CASE(case_chunked);
    RUN_CASE(case_chunked_limit);
    RUN_CASE(case_chunked_long_line);
    RUN_CASE(case_response_head);
    release();
    return check_summary();
}
