/*
 * fuzz_http_head.c - libFuzzer target for the front door's HTTP framing
 * (lib/http_head.c): request heads, chunked bodies, response heads.
 *
 * The input is used three ways: as a request head (and what follows it), as
 * a chunked body, and as a response head.  Every parse runs on an exact-size
 * heap copy, so that a read past `len` is an AddressSanitizer report (run.sh
 * builds the whole tree with ASan).  Properties checked, each an abort():
 *
 * http_head_parse
 *   - a BAD result has a reason; an OK head lies inside the input and inside
 *     `max`, ends with its first blank line, its method is a 1..16-byte
 *     token at the start, its target has no space or control byte, the
 *     version is 1.0 or 1.1, Content-Length and chunked never both, no
 *     chunked in HTTP/1.0, flags 0/1;
 *   - MORE only when no head has ended and fewer than `max` bytes arrived;
 *     TOO_LARGE only when `max` bytes arrived without an end;
 *   - a prefix of the input is never OK before the head's end and is never
 *     BAD unless the whole is BAD (more bytes never cure a refusal); every
 *     prefix shorter than an OK head is MORE;
 *   - once OK, the head alone and the head with other bytes after it parse
 *     the same (stable when more bytes arrive), and so under a larger max;
 *   - http_head_header agrees with the parse (Content-Length, chunked) and
 *     points inside the head at a trimmed value without line breaks;
 *     http_head_is matches the head's own method and path.
 * http_chunked_scan
 *   - 1 with end <= len; -1 with a reason; the same result (and end) whether
 *     the bytes arrive at once, one at a time or in pieces; the body cut at
 *     its end gives the same end, cut one byte short needs more; the decoded
 *     size passes under max_decoded = size and fails under size - 1; bytes
 *     after the end change nothing.
 * http_response_head_parse
 *   - 1 with 0 < len <= input, ending with its first blank line, a 3-digit
 *     status; 0 only when no blank line has arrived; the head alone parses
 *     the same; shorter prefixes need more.
 */
#include "http_head.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "REQUIRE failed %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#define DOOR_MAX 8192 /* the front door's head limit (lib/door_internal.h) */

static char *copy_of(const char *buf, size_t len)
{
    char *c = malloc(len ? len : 1);
    if (c == NULL)
        abort();
    memcpy(c, buf, len);
    return c;
}

/* The end of the first blank line (CRLF or bare-LF lines) within buf[0..len),
 * or 0: the reference the parsers are checked against. */
static size_t first_blank_end(const char *buf, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i == start || (i == start + 1 && buf[start] == '\r'))
            return i + 1;
        start = i + 1;
    }
    return 0;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* ---- request heads ----------------------------------------------------------- */

typedef struct parsed {
    http_head_result r;
    http_head h;          /* method/target as offsets: the copy is freed */
    size_t method_off, target_off;
    const char *why;
} parsed;

/* http_head_parse on an exact copy of buf[0..len), with the checks that hold
 * for any input. */
static parsed parse_exact(const char *buf, size_t len, size_t max)
{
    parsed p;
    char *c = copy_of(buf, len);
    memset(&p.h, 0x5a, sizeof p.h);
    p.why = NULL;
    p.r = http_head_parse(c, len, max, &p.h, &p.why);
    p.method_off = p.target_off = 0;
    REQUIRE(p.r == HTTP_HEAD_MORE || p.r == HTTP_HEAD_OK || p.r == HTTP_HEAD_BAD || p.r == HTTP_HEAD_TOO_LARGE);
    size_t limit = len < max ? len : max;
    size_t end = first_blank_end(c, limit);
    switch (p.r) {
    case HTTP_HEAD_BAD:
        REQUIRE(p.why != NULL && p.why[0] != '\0');
        break;
    case HTTP_HEAD_MORE:
        REQUIRE(len < max);
        REQUIRE(end == 0);
        break;
    case HTTP_HEAD_TOO_LARGE:
        REQUIRE(len >= max);
        REQUIRE(end == 0);
        break;
    case HTTP_HEAD_OK: {
        const http_head *h = &p.h;
        REQUIRE(h->len > 0 && h->len <= len && h->len <= max);
        REQUIRE(h->len == end); /* the first blank line ends it */
        REQUIRE(h->method == c && h->method_len >= 1 && h->method_len <= 16);
        for (size_t i = 0; i < h->method_len; i++)
            REQUIRE(is_tchar((unsigned char)h->method[i]));
        REQUIRE(h->method[h->method_len] == ' ');
        REQUIRE(h->target == h->method + h->method_len + 1 && h->target_len >= 1);
        REQUIRE(h->target + h->target_len + 9 < c + h->len);
        for (size_t i = 0; i < h->target_len; i++)
            REQUIRE((unsigned char)h->target[i] > 0x20 && h->target[i] != 0x7f);
        REQUIRE(memcmp(h->target + h->target_len, " HTTP/1.", 8) == 0);
        REQUIRE(h->minor == 0 || h->minor == 1);
        REQUIRE(h->target[h->target_len + 8] == '0' + h->minor);
        REQUIRE(h->content_length >= -1);
        REQUIRE(h->chunked == 0 || h->chunked == 1);
        REQUIRE(!(h->chunked && h->content_length >= 0));
        REQUIRE(!(h->chunked && h->minor == 0));
        REQUIRE(h->keep_alive == 0 || h->keep_alive == 1);
        REQUIRE(h->expect_continue == 0 || h->expect_continue == 1);
        REQUIRE(p.why == NULL);

        /* The headers, as http_head_header sees them, agree with the parse. */
        static const char *const names[] = {"Content-Length", "Transfer-Encoding", "Connection", "Host",
                                            "X-Request-Id",   "Expect"};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            size_t vl = (size_t)-1;
            const char *v = http_head_header(c, h->len, names[k], &vl);
            if (v == NULL)
                continue;
            REQUIRE(v >= c && vl <= h->len && v + vl <= c + h->len);
            REQUIRE(memchr(v, '\n', vl) == NULL && memchr(v, '\r', vl) == NULL);
            REQUIRE(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t'));
        }
        size_t vl = 0;
        const char *cl = http_head_header(c, h->len, "Content-Length", &vl);
        REQUIRE((cl != NULL) == (h->content_length >= 0));
        if (cl != NULL) {
            long long x = 0;
            REQUIRE(vl >= 1 && vl <= 18);
            for (size_t i = 0; i < vl; i++) {
                REQUIRE(cl[i] >= '0' && cl[i] <= '9');
                x = x * 10 + (cl[i] - '0');
            }
            REQUIRE(x == h->content_length);
        }
        const char *te = http_head_header(c, h->len, "Transfer-Encoding", &vl);
        REQUIRE((te != NULL) == h->chunked);
        if (te != NULL)
            REQUIRE(vl == 7 && strncasecmp(te, "chunked", 7) == 0);
        const char *ex = http_head_header(c, h->len, "Expect", &vl);
        REQUIRE((ex != NULL && h->minor == 1) == h->expect_continue); /* HTTP/1.0 has no 100 Continue */

        /* http_head_is knows the head's own method and path. */
        char method[17], path[DOOR_MAX + 1];
        memcpy(method, h->method, h->method_len);
        method[h->method_len] = '\0';
        const char *q = memchr(h->target, '?', h->target_len);
        size_t pl = q ? (size_t)(q - h->target) : h->target_len;
        if (pl < sizeof path && memchr(h->target, '\0', pl) == NULL) {
            memcpy(path, h->target, pl);
            path[pl] = '\0';
            REQUIRE(http_head_is(h, method, path, 0) == 1);
            REQUIRE(http_head_is(h, method, path, 1) == 1);
            REQUIRE(http_head_is(h, method, "", 1) == 1);
            if (pl > 0) {
                path[pl - 1] = '\0';
                REQUIRE(http_head_is(h, method, path, 1) == 1);
                REQUIRE(http_head_is(h, method, path, 0) == 0);
            }
        }
        method[h->method_len - 1] ^= 0x20; /* another method */
        REQUIRE(http_head_is(h, method, "", 1) == 0);
        p.method_off = 0;
        p.target_off = h->method_len + 1;
        break;
    }
    }
    free(c);
    return p;
}

static int same_head(const parsed *a, const parsed *b)
{
    return a->r == b->r && a->h.len == b->h.len && a->h.method_len == b->h.method_len &&
           a->h.target_len == b->h.target_len && a->h.minor == b->h.minor &&
           a->h.content_length == b->h.content_length && a->h.chunked == b->h.chunked &&
           a->h.keep_alive == b->h.keep_alive && a->h.expect_continue == b->h.expect_continue;
}

static void check_request(const char *buf, size_t size, size_t max)
{
    parsed whole = parse_exact(buf, size, max);

    /* Prefixes: every one up to 64 bytes, then about 64 more spread over the
     * input, and the ones around the head's end. */
    size_t stride = size > 64 ? (size - 64) / 64 + 1 : 1;
    for (size_t n = 0; n < size; n = n < 64 ? n + 1 : n + stride) {
        parsed p = parse_exact(buf, n, max);
        if (p.r == HTTP_HEAD_BAD)
            REQUIRE(whole.r == HTTP_HEAD_BAD); /* more bytes never cure a refusal */
        if (whole.r == HTTP_HEAD_OK && n < whole.h.len)
            REQUIRE(p.r == HTTP_HEAD_MORE);
        if (p.r == HTTP_HEAD_OK)
            REQUIRE(same_head(&p, &whole));
    }
    if (whole.r != HTTP_HEAD_OK)
        return;
    size_t hl = whole.h.len;
    parsed p = parse_exact(buf, hl - 1, max);
    REQUIRE(p.r == HTTP_HEAD_MORE);
    /* The head alone, the head with any bytes after it, a larger max: the same. */
    p = parse_exact(buf, hl, max);
    REQUIRE(same_head(&p, &whole));
    p = parse_exact(buf, hl, hl);
    REQUIRE(same_head(&p, &whole));
    p = parse_exact(buf, size, max * 2);
    REQUIRE(same_head(&p, &whole));
    static const char junk[] = "\0\xff\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\n\r\n\x16\x03\x01";
    char *more = malloc(size + sizeof junk);
    if (more == NULL)
        abort();
    memcpy(more, buf, size);
    memcpy(more + size, junk, sizeof junk);
    p = parse_exact(more, size + sizeof junk, max);
    REQUIRE(same_head(&p, &whole));
    p = parse_exact(more, hl + 3, max); /* the head, then a NUL, 0xff, CR */
    REQUIRE(same_head(&p, &whole));
    free(more);

    /* A chunked body after the head: scanned as the front door does. */
    if (whole.h.chunked && hl < size) {
        http_chunked st;
        memset(&st, 0, sizeof st);
        size_t end = 0;
        const char *why = NULL;
        char *body = copy_of(buf + hl, size - hl);
        int r = http_chunked_scan(&st, body, size - hl, 1 << 20, &end, &why);
        REQUIRE(r >= -1 && r <= 1);
        if (r == 1)
            REQUIRE(end <= size - hl);
        free(body);
    }
}

/* ---- chunked bodies ---------------------------------------------------------- */

typedef struct scanned {
    int r;
    size_t end;
    size_t decoded;
    const char *why;
} scanned;

/* Scans body[0..len) with the bytes arriving at the given cut points (the
 * buffer grows; each call sees an exact copy of what has arrived). */
static scanned scan_cuts(const char *body, size_t len, const size_t *cuts, size_t ncuts, size_t max)
{
    http_chunked st;
    memset(&st, 0, sizeof st);
    scanned s = {0, (size_t)-1, 0, NULL};
    for (size_t i = 0; i <= ncuts; i++) {
        size_t n = i < ncuts ? cuts[i] : len;
        if (n > len)
            n = len;
        char *c = copy_of(body, n);
        s.why = NULL;
        s.r = http_chunked_scan(&st, c, n, max, &s.end, &s.why);
        free(c);
        REQUIRE(s.r >= -1 && s.r <= 1);
        REQUIRE(st.decoded <= max);
        if (s.r == 1)
            REQUIRE(s.end > 0 && s.end <= n && body[s.end - 1] == '\n');
        if (s.r == -1)
            REQUIRE(s.why != NULL && s.why[0] != '\0');
        if (s.r == 0)
            REQUIRE(st.next <= n);
        if (s.r != 0)
            break;
    }
    s.decoded = st.decoded;
    return s;
}

static void check_chunked(const char *body, size_t len, unsigned seed)
{
    size_t max = 1 << 20;
    scanned whole = scan_cuts(body, len, NULL, 0, max);

    /* Byte by byte (bounded: inputs are at most a few KiB). */
    size_t ncuts = len < 4096 ? len : 4096;
    size_t *cuts = malloc((ncuts + 1) * sizeof *cuts);
    if (cuts == NULL)
        abort();
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = i;
    scanned bytes = scan_cuts(body, len, cuts, ncuts, max);
    REQUIRE(bytes.r == whole.r);
    if (whole.r == 1)
        REQUIRE(bytes.end == whole.end && bytes.decoded == whole.decoded);
    /* In pieces of a size the input picks. */
    size_t step = (seed % 97) + 2, k = 0;
    for (size_t n = step; n < len && k < ncuts; n += step + (seed >> 8) % 13)
        cuts[k++] = n;
    scanned pieces = scan_cuts(body, len, cuts, k, max);
    REQUIRE(pieces.r == whole.r);
    if (whole.r == 1)
        REQUIRE(pieces.end == whole.end && pieces.decoded == whole.decoded);
    free(cuts);

    if (whole.r != 1)
        return;
    /* Cut at its end: the same; one byte short: more needed. */
    scanned cut = scan_cuts(body, whole.end, NULL, 0, max);
    REQUIRE(cut.r == 1 && cut.end == whole.end);
    cut = scan_cuts(body, whole.end - 1, NULL, 0, max);
    REQUIRE(cut.r == 0);
    /* The decoded size is the limit: at it fine, below it refused. */
    cut = scan_cuts(body, len, NULL, 0, whole.decoded);
    REQUIRE(cut.r == 1 && cut.end == whole.end);
    if (whole.decoded > 0) {
        cut = scan_cuts(body, len, NULL, 0, whole.decoded - 1);
        REQUIRE(cut.r == -1 && strcmp(cut.why, "request body too large") == 0);
    }
    /* Bytes after the end change nothing. */
    char *more = malloc(whole.end + 7);
    if (more == NULL)
        abort();
    memcpy(more, body, whole.end);
    memcpy(more + whole.end, "zz\r\n\r\n\n", 7);
    cut = scan_cuts(more, whole.end + 7, NULL, 0, max);
    REQUIRE(cut.r == 1 && cut.end == whole.end);
    free(more);
}

/* ---- response heads ---------------------------------------------------------- */

static int response_exact(const char *buf, size_t len, http_response_head *r)
{
    char *c = copy_of(buf, len);
    memset(r, 0x5a, sizeof *r);
    int rc = http_response_head_parse(c, len, r);
    REQUIRE(rc >= -1 && rc <= 1);
    size_t end = first_blank_end(c, len);
    if (rc == 0)
        REQUIRE(end == 0);
    if (rc == 1) {
        REQUIRE(r->len == end && r->len > 0 && r->len <= len);
        REQUIRE(memcmp(c, "HTTP/1.", 7) == 0);
        REQUIRE(r->status <= 999);
        REQUIRE(r->content_length >= -1);
        REQUIRE(r->chunked == 0 || r->chunked == 1);
        REQUIRE(r->close == 0 || r->close == 1);
    }
    free(c);
    return rc;
}

static void check_response(const char *buf, size_t size)
{
    http_response_head whole, p;
    int rc = response_exact(buf, size, &whole);
    if (rc != 1)
        return;
    REQUIRE(response_exact(buf, whole.len, &p) == 1);
    REQUIRE(p.len == whole.len && p.status == whole.status && p.content_length == whole.content_length &&
            p.chunked == whole.chunked && p.close == whole.close);
    REQUIRE(response_exact(buf, whole.len - 1, &p) == 0);
    REQUIRE(response_exact(buf, whole.len / 2, &p) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    check_request(buf, size, DOOR_MAX);
    /* A small max too, so that 431 and its edges are reached. */
    check_request(buf, size, size / 2 + 1);
    check_chunked(buf, size, size ? (unsigned)data[0] * 131u + (unsigned)data[size - 1] : 0);
    check_response(buf, size);
    return 0;
}
