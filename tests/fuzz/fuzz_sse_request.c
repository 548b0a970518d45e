/*
 * fuzz_sse_request.c - libFuzzer target for the GET /sse request-head parser.
 *
 * The front door frames requests now (lib/http_head.c, fuzz_http_head.c);
 * this target feeds arbitrary bytes to sse_request_parse alone and aborts
 * when a documented property breaks: an accepted request whose request line
 * is not GET-like for /sse, an unterminated or over-long field, a value that
 * is not trimmed, a refusal without a reason, a result that changes when
 * bytes are added after the blank line, or two runs that disagree.  An
 * accepted `events` value goes on to the filter's parser: its items are
 * bounded names, each taken by the filter, or a refusal with a reason.
 * AddressSanitizer catches any read past the input.
 */
#include "sse_request.h"
#include "stream_filter.h"

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

static sse_request req, again;

static void check_filter(const char *raw)
{
    stream_filter *f = NULL;
    char why[256] = "";
    int rc = stream_filter_parse(raw, &f, why, sizeof why);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        REQUIRE(f == NULL && why[0] != '\0');
        return;
    }
    if (f == NULL)
        return; /* '*': every event */
    REQUIRE(f->n >= 1 && f->n <= FILTER_ITEMS_MAX);
    for (uint32_t i = 0; i < f->n; i++) {
        const filter_item *it = &f->items[i];
        REQUIRE(strlen(it->name) == it->len && it->len <= 256 && it->name[0] != '$');
        REQUIRE(it->prefix || it->len > 0);
        REQUIRE(stream_filter_match(f, it->name, it->len)); /* a name (or prefix) is taken by its item */
    }
    free(f);
}

/* sse_request_parse on an exact-size copy of buf[0..len), so that a read past
 * `len` is an ASan report; checks what holds for every result. */
static int parse_exact(const char *buf, size_t len, sse_request *out)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, buf, len);
    const char *why = NULL;
    int rc = sse_request_parse(copy, len, out, &why);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        REQUIRE(why != NULL && why[0] != '\0');
        free(copy);
        return rc;
    }
    /* Accepted: no NUL, a request line "<method> /sse[?...] HTTP/1.x". */
    REQUIRE(memchr(copy, '\0', len) == NULL);
    const char *nl = memchr(copy, '\n', len);
    REQUIRE(nl != NULL);
    const char *sp = memchr(copy, ' ', (size_t)(nl - copy));
    REQUIRE(sp != NULL && (size_t)(sp - copy) + 5 < len);
    REQUIRE(memcmp(sp + 1, "/sse", 4) == 0 && (sp[5] == ' ' || sp[5] == '?'));
    REQUIRE(memchr(out->authorization, '\0', sizeof out->authorization) != NULL);
    REQUIRE(memchr(out->access_token, '\0', sizeof out->access_token) != NULL);
    REQUIRE(strlen(out->authorization) <= SSE_TOKEN_MAX);
    REQUIRE(strlen(out->access_token) <= SSE_TOKEN_MAX);
    REQUIRE(out->has_last_event_id == 0 || out->has_last_event_id == 1);
    REQUIRE(out->has_last_event_id || out->last_event_id == 0);
    /* The Authorization value is trimmed and has no line break. */
    size_t al = strlen(out->authorization);
    REQUIRE(al == 0 || (out->authorization[0] != ' ' && out->authorization[0] != '\t' &&
                        out->authorization[al - 1] != ' ' && out->authorization[al - 1] != '\t'));
    REQUIRE(strchr(out->authorization, '\n') == NULL);
    /* An access token came from a query string. */
    REQUIRE(out->access_token[0] == '\0' || sp[5] == '?');
    REQUIRE(strlen(out->events) <= SSE_EVENTS_MAX);
    if (out->has_events)
        check_filter(out->events);
    free(copy);
    return rc;
}

/* Where the head's blank line ends (CRLF or bare LF lines), or 0. */
static size_t blank_line_end(const char *buf, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i == start || (i == start + 1 && buf[start] == '\r'))
            return start == 0 ? 0 : i + 1; /* a blank first line is no head */
        start = i + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    int rc = parse_exact(buf, size, &req);

    /* The same bytes, the same answer. */
    REQUIRE(parse_exact(buf, size, &again) == rc);
    if (rc == 0)
        REQUIRE(memcmp(&req, &again, sizeof req) == 0);

    /* What follows the blank line is not the head's: cut there (as the front
     * door does), the answer is the same, unless a NUL after the head made the
     * whole refused. */
    size_t hl = blank_line_end(buf, size);
    if (hl > 0 && hl < size && memchr(buf, '\0', size) == NULL) {
        int head_rc = parse_exact(buf, hl, &again);
        REQUIRE(head_rc == rc);
        if (rc == 0)
            REQUIRE(memcmp(&req, &again, sizeof req) == 0);
    }
    return 0;
}
