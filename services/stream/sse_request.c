/*
 * sse_request.c - a small, strict HTTP/1.x request-head parser for GET /sse.
 */
#include "sse_request.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int sse_url_decode(const char *src, size_t len, char *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval((unsigned char)src[i + 1]), l = hexval((unsigned char)src[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = h * 16 + l;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return 0;
}

static int parse_id(const char *s, size_t len, uint64_t *out)
{
    char buf[24];
    if (len == 0 || len >= sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    unsigned long long v = strtoull(buf, NULL, 10);
    if (errno != 0)
        return -1;
    *out = v;
    return 0;
}

static size_t trim_len(const char *s, size_t len)
{
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    return len;
}

static int parse_query(const char *q, size_t len, sse_request *out, uint64_t *query_id, int *has_query_id,
                       const char **why)
{
    const char *end = q + len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        if (eq != NULL) {
            size_t klen = (size_t)(eq - q), vlen = (size_t)(pe - eq - 1);
            if (klen == 12 && memcmp(q, "access_token", 12) == 0) {
                if (sse_url_decode(eq + 1, vlen, out->access_token, sizeof out->access_token) != 0) {
                    *why = "malformed access_token query parameter";
                    return -1;
                }
            } else if (klen == 13 && memcmp(q, "last_event_id", 13) == 0) {
                char idbuf[32];
                if (sse_url_decode(eq + 1, vlen, idbuf, sizeof idbuf) != 0 ||
                    parse_id(idbuf, strlen(idbuf), query_id) != 0) {
                    *why = "last_event_id must be a decimal event id";
                    return -1;
                }
                *has_query_id = 1;
            } else if (klen == 6 && memcmp(q, "events", 6) == 0) {
                /* Split and decoded item by item later (a '%2C' is a comma
                 * inside a name): here only bounded and kept.  A second
                 * `events` replaces the first, as for the other parameters. */
                if (vlen > SSE_EVENTS_MAX) {
                    *why = "events is longer than 4096 bytes";
                    return -1;
                }
                memcpy(out->events, eq + 1, vlen);
                out->events[vlen] = '\0';
                out->has_events = 1;
            } else if (klen == 8 && memcmp(q, "presence", 8) == 0) {
                if (vlen == 4 && memcmp(eq + 1, "true", 4) == 0)
                    out->presence = 1;
                else if (vlen == 5 && memcmp(eq + 1, "false", 5) == 0)
                    out->presence = 0;
                else {
                    *why = "presence must be true or false";
                    return -1;
                }
            }
        }
        q = pe + (amp ? 1 : 0);
    }
    return 0;
}

int sse_request_parse(const char *head, size_t len, sse_request *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = "malformed request";
    if (memchr(head, '\0', len) != NULL)
        return -1;
    const char *end = head + len;
    const char *eol = memchr(head, '\n', len);
    if (eol == NULL)
        return -1;
    /* Request line: GET SP target SP HTTP/1.x */
    const char *line_end = (eol > head && eol[-1] == '\r') ? eol - 1 : eol;
    const char *sp1 = memchr(head, ' ', (size_t)(line_end - head));
    if (sp1 == NULL)
        return -1;
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(line_end - target));
    if (sp2 == NULL || (size_t)(line_end - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return -1;
    const char *qmark = memchr(target, '?', (size_t)(sp2 - target));
    size_t path_len = (size_t)((qmark ? qmark : sp2) - target);
    if (path_len != 4 || memcmp(target, "/sse", 4) != 0)
        return -1;
    uint64_t query_id = 0;
    int has_query_id = 0;
    if (qmark && parse_query(qmark + 1, (size_t)(sp2 - qmark - 1), out, &query_id, &has_query_id, why) != 0)
        return -1;

    /* Headers. */
    for (const char *p = eol + 1; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return -1;
        const char *le = (nl > p && nl[-1] == '\r') ? nl - 1 : nl;
        if (le == p)
            break; /* blank line: end of head */
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon == NULL || colon == p) {
            *why = "malformed header line";
            return -1;
        }
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        size_t vlen = trim_len(v, (size_t)(le - v));
        if (nlen == 13 && strncasecmp(p, "Authorization", 13) == 0) {
            if (vlen > SSE_TOKEN_MAX) {
                *why = "Authorization header is too long";
                return -1;
            }
            memcpy(out->authorization, v, vlen);
            out->authorization[vlen] = '\0';
        } else if (nlen == 13 && strncasecmp(p, "Last-Event-ID", 13) == 0) {
            if (vlen > 0) {
                if (parse_id(v, vlen, &out->last_event_id) != 0) {
                    *why = "Last-Event-ID must be a decimal event id";
                    return -1;
                }
                out->has_last_event_id = 1;
            }
        }
        p = nl + 1;
    }
    if (!out->has_last_event_id && has_query_id) {
        out->has_last_event_id = 1;
        out->last_event_id = query_id;
    }
    return 0;
}
