/*
 * fuzz_sse_request.c - libFuzzer target for the GET /sse request-head parser.
 *
 * Feeds arbitrary bytes to sse_request_route, sse_request_head_length and
 * sse_request_parse (on the whole input and on the head the stream service
 * would cut from it), and aborts when a documented property breaks: a route
 * that contradicts the bytes (or a control byte in the request line that is
 * not refused as BAD), a head longer than the input or not ending in
 * a newline, an accepted request with an unterminated or over-long field, a
 * refusal without a reason.  AddressSanitizer catches any read past the input.
 */
#include "insert_request.h"
#include "sse_request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "REQUIRE failed %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static void check_parse(const char *buf, size_t len)
{
    sse_request req;
    const char *why = NULL;
    int rc = sse_request_parse(buf, len, &req, &why);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        REQUIRE(why != NULL && why[0] != '\0');
        return;
    }
    /* Accepted: a bounded head with no NUL, whose request line targets /sse. */
    REQUIRE(len <= SSE_HEAD_MAX);
    REQUIRE(memchr(buf, '\0', len) == NULL);
    const char *sp = memchr(buf, ' ', len);
    REQUIRE(sp != NULL && (size_t)(sp - buf) + 5 < len);
    REQUIRE(memcmp(sp + 1, "/sse", 4) == 0 && (sp[5] == ' ' || sp[5] == '?'));
    REQUIRE(memchr(req.authorization, '\0', sizeof req.authorization) != NULL);
    REQUIRE(memchr(req.access_token, '\0', sizeof req.access_token) != NULL);
    REQUIRE(strlen(req.authorization) <= SSE_TOKEN_MAX);
    REQUIRE(strlen(req.access_token) <= SSE_TOKEN_MAX);
    REQUIRE(req.has_last_event_id == 0 || req.has_last_event_id == 1);
    REQUIRE(req.has_last_event_id || req.last_event_id == 0);
    /* The Authorization value is trimmed. */
    size_t al = strlen(req.authorization);
    REQUIRE(al == 0 || (req.authorization[0] != ' ' && req.authorization[0] != '\t' &&
                        req.authorization[al - 1] != ' ' && req.authorization[al - 1] != '\t'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that a read past `size` is an ASan report. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);

    sse_route route = sse_request_route(buf, size);
    REQUIRE(route == SSE_ROUTE_NEED_MORE || route == SSE_ROUTE_SSE || route == SSE_ROUTE_OTHER ||
            route == SSE_ROUTE_BAD || route == SSE_ROUTE_INSERT);
    static const char prefix[] = "GET /sse", iprefix[] = "POST /insert ";
    size_t plen = sizeof prefix - 1, iplen = sizeof iprefix - 1;
    if (route == SSE_ROUTE_SSE)
        REQUIRE(size > plen && memcmp(buf, prefix, plen) == 0 && (buf[plen] == ' ' || buf[plen] == '?'));
    if (route == SSE_ROUTE_INSERT)
        REQUIRE(size >= iplen && memcmp(buf, iprefix, iplen) == 0);
    if (route == SSE_ROUTE_NEED_MORE)
        REQUIRE((size <= plen && memcmp(buf, prefix, size) == 0) || (size < iplen && memcmp(buf, iprefix, size) == 0));

    /* The insert framing: bounded by what it was given, parts inside it. */
    insert_request ir;
    insert_verdict v = insert_request_parse(buf, size, size + 16, 1 << 20, &ir);
    REQUIRE(v == INSERT_NEED_MORE || v == INSERT_FAST || v == INSERT_OTHER);
    if (v == INSERT_FAST) {
        REQUIRE(ir.total_len <= size && ir.body_off + ir.body_len == ir.total_len && ir.body_len > 0);
        REQUIRE(ir.auth_off + ir.auth_len <= ir.body_off && ir.auth_len >= 7);
        /* The same request alone frames the same way. */
        insert_request again;
        REQUIRE(insert_request_parse(buf, ir.total_len, ir.total_len, 1 << 20, &again) == INSERT_FAST &&
                again.total_len == ir.total_len && again.auth_off == ir.auth_off);
    }
    /* A request line with a NUL or another control byte before its end is BAD. */
    const char *nl = memchr(buf, '\n', size);
    size_t line_len = nl ? (size_t)(nl - buf) : size;
    if (line_len > 0 && buf[line_len - 1] == '\r' && (nl != NULL || line_len == size))
        line_len--;
    for (size_t i = 0; i < line_len; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            REQUIRE(route == SSE_ROUTE_BAD);
    /* The route of a prefix never contradicts the route of the whole: more
     * bytes may only settle NEED_MORE, or reveal garbage (BAD); once BAD,
     * always BAD. */
    for (size_t n = 0; n <= size && n <= 64; n++) {
        sse_route r = sse_request_route(buf, n);
        REQUIRE(r == SSE_ROUTE_NEED_MORE || r == route || route == SSE_ROUTE_BAD);
        if (r == SSE_ROUTE_BAD)
            REQUIRE(route == SSE_ROUTE_BAD);
    }

    size_t hl = sse_request_head_length(buf, size);
    REQUIRE(hl <= size);
    if (hl > 0) {
        REQUIRE(hl >= 2 && buf[hl - 1] == '\n');
        /* Asking again with only the head gives the same length. */
        REQUIRE(sse_request_head_length(buf, hl) == hl);
        /* Nothing shorter is a whole head. */
        REQUIRE(sse_request_head_length(buf, hl - 1) == 0);
        char *head = malloc(hl);
        if (head != NULL) {
            memcpy(head, buf, hl);
            check_parse(head, hl);
            free(head);
        }
    }
    check_parse(buf, size);
    free(buf);
    return 0;
}
