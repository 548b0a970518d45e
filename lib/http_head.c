/*
 * http_head.c - HTTP/1.1 framing: request heads, chunked bodies, response
 * heads (see http_head.h).
 */
#include "http_head.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The end of the line that starts at `p` (its '\n'), or NULL. */
static const char *line_end(const char *p, const char *end)
{
    return memchr(p, '\n', (size_t)(end - p));
}

/* Length of the head through its blank line, or 0 when it has not all
 * arrived.  Lines end in CRLF or a bare LF (RFC 9112 §2.2 lets a server take
 * LF alone). */
static size_t head_length(const char *buf, size_t len)
{
    for (const char *p = buf, *end = buf + len; p < end;) {
        const char *nl = line_end(p, end);
        if (nl == NULL)
            return 0;
        if (nl == p || (nl == p + 1 && p[0] == '\r'))
            return (size_t)(nl + 1 - buf);
        p = nl + 1;
    }
    return 0;
}

static void trim(const char **v, size_t *n)
{
    while (*n > 0 && (**v == ' ' || **v == '\t'))
        (*v)++, (*n)--;
    while (*n > 0 && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t' || (*v)[*n - 1] == '\r'))
        (*n)--;
}

static int token_is(const char *v, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(v, word, n) == 0;
}

/* Whether the comma-separated list v[0..n) has the token `word`. */
static int list_has(const char *v, size_t n, const char *word)
{
    const char *end = v + n;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *item = v;
        size_t len = (size_t)((comma ? comma : end) - v);
        trim(&item, &len);
        if (token_is(item, len, word))
            return 1;
        v = comma ? comma + 1 : end;
    }
    return 0;
}

/* Content-Length: 1*DIGIT, nothing else (no sign, no list, no spaces inside). */
static long long parse_length(const char *v, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    long long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static http_head_result bad(const char **why, const char *text)
{
    *why = text;
    return HTTP_HEAD_BAD;
}

/* A whole request line (without its line end) that can be HTTP/1.x: it
 * ends in " HTTP/1.<digit>" after a method and a target.  An HTTP/0.9 line
 * ("GET /") has no version, and its client waits for an answer without a
 * head: it gets a 400 at once rather than the head deadline. */
static int request_line_versioned(const char *line, size_t len)
{
    static const char v[] = " HTTP/1.";
    size_t vl = sizeof v - 1;
    if (len < vl + 1 || memcmp(line + len - vl - 1, v, vl) != 0)
        return 0;
    char digit = line[len - 1];
    const char *sp = memchr(line, ' ', len);
    return digit >= '0' && digit <= '9' && sp != NULL && sp < line + len - vl - 1;
}

/* Checks the request line as far as it has arrived, so that garbage (binary,
 * TLS sent to a plain port, a line with no HTTP/1.x version) is refused at
 * its first bytes rather than at the head deadline: 1 plausible so far, 0
 * bad. */
static int request_line_plausible(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && buf[i] >= 'A' && buf[i] <= 'Z') /* every method this server knows is capitals */
        i++;
    if (i == len)
        return i <= 16; /* a method still arriving */
    if (i == 0 || i > 16 || buf[i] != ' ')
        return 0; /* no method is longer than 16 characters */
    for (i++; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '\n')
            return request_line_versioned(buf, i);
        if (ch == '\r')
            return (i + 1 == len || buf[i + 1] == '\n') && request_line_versioned(buf, i);
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

http_head_result http_head_parse(const char *buf, size_t len, size_t max, http_head *h, const char **why)
{
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    *why = NULL;
    if (!request_line_plausible(buf, len))
        return bad(why, "malformed HTTP request line");
    size_t hl = head_length(buf, len < max ? len : max);
    if (hl == 0)
        return len >= max ? HTTP_HEAD_TOO_LARGE : HTTP_HEAD_MORE;
    const char *end = buf + hl, *p = buf;

    /* request-line = method SP request-target SP HTTP-version */
    const char *nl = line_end(p, end);
    const char *line_stop = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    const char *sp1 = memchr(p, ' ', (size_t)(line_stop - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_stop - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1)
        return bad(why, "malformed HTTP request line");
    for (const char *q = p; q < sp1; q++)
        if (!is_tchar((unsigned char)*q))
            return bad(why, "malformed HTTP request line");
    for (const char *q = sp1 + 1; q < sp2; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return bad(why, "malformed HTTP request line");
    size_t vlen = (size_t)(line_stop - sp2 - 1);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
        return bad(why, "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 are served)");
    h->method = p;
    h->method_len = (size_t)(sp1 - p);
    h->target = sp1 + 1;
    h->target_len = (size_t)(sp2 - sp1 - 1);
    h->minor = sp2[8] - '0';

    int conn_close = 0, conn_keep = 0, te_seen = 0, cl_seen = 0;
    for (p = nl + 1; p < end;) {
        nl = line_end(p, end);
        line_stop = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        if (line_stop == p)
            break; /* the blank line */
        if (*p == ' ' || *p == '\t')
            return bad(why, "obsolete line folding in a header");
        const char *colon = memchr(p, ':', (size_t)(line_stop - p));
        if (colon == NULL || colon == p)
            return bad(why, "malformed header line");
        for (const char *q = p; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return bad(why, "malformed header name (no space is allowed before the colon)");
        for (const char *q = colon + 1; q < line_stop; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                return bad(why, "control character in a header value");
        const char *v = colon + 1;
        size_t n = (size_t)(line_stop - v);
        size_t name_len = (size_t)(colon - p);
        int trailing_ws = n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t');
        trim(&v, &n);
        /* Trailing whitespace is not part of a value (RFC 9110 §5.5), but the
         * request/response server behind the door reads a framing header's
         * value with it: refused, so that the two never disagree on where a
         * request ends. */
        if (trailing_ws && (token_is(p, name_len, "Content-Length") || token_is(p, name_len, "Transfer-Encoding")))
            return bad(why, "whitespace after the Content-Length or Transfer-Encoding value");
        if (token_is(p, name_len, "Content-Length")) {
            if (cl_seen++)
                return bad(why, "more than one Content-Length header");
            if ((h->content_length = parse_length(v, n)) < 0)
                return bad(why, "malformed Content-Length");
        } else if (token_is(p, name_len, "Transfer-Encoding")) {
            if (te_seen++)
                return bad(why, "more than one Transfer-Encoding header");
            if (!token_is(v, n, "chunked"))
                return bad(why, "unsupported Transfer-Encoding: only 'chunked' alone is accepted");
            h->chunked = 1;
        } else if (token_is(p, name_len, "Connection")) {
            conn_close |= list_has(v, n, "close");
            conn_keep |= list_has(v, n, "keep-alive");
        } else if (token_is(p, name_len, "Expect")) {
            if (!token_is(v, n, "100-continue"))
                return bad(why, "unsupported Expect header (only 100-continue)");
            h->expect_continue = 1;
        }
        for (const char *q = p; q < line_stop; q++)
            if (*q == '\r')
                return bad(why, "a CR alone inside a header line");
        p = nl + 1;
    }
    if (h->chunked && cl_seen)
        return bad(why, "both Content-Length and Transfer-Encoding: the request's length is ambiguous");
    if (h->chunked && h->minor == 0)
        return bad(why, "Transfer-Encoding in an HTTP/1.0 request");
    if (h->minor == 0)
        h->expect_continue = 0; /* HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1) */
    h->len = hl;
    h->keep_alive = h->minor == 1 ? !conn_close : conn_keep && !conn_close;
    return HTTP_HEAD_OK;
}

const char *http_head_header(const char *head, size_t head_len, const char *name, size_t *value_len)
{
    const char *end = head + head_len, *p = line_end(head, end);
    size_t name_len = strlen(name);
    for (p = p ? p + 1 : end; p < end;) {
        const char *nl = line_end(p, end);
        if (nl == NULL)
            break;
        if ((size_t)(nl - p) > name_len && p[name_len] == ':' && strncasecmp(p, name, name_len) == 0) {
            const char *v = p + name_len + 1;
            size_t n = (size_t)(nl - v);
            trim(&v, &n);
            *value_len = n;
            return v;
        }
        p = nl + 1;
    }
    return NULL;
}

int http_head_is(const http_head *h, const char *method, const char *path, int prefix)
{
    size_t ml = strlen(method), pl = strlen(path);
    if (h->method_len != ml || memcmp(h->method, method, ml) != 0 || h->target_len < pl ||
        memcmp(h->target, path, pl) != 0)
        return 0;
    return prefix || h->target_len == pl || h->target[pl] == '?';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http_chunked_scan(http_chunked *st, const char *body, size_t len, size_t max_decoded, size_t *end,
                      const char **why)
{
    while (st->next < len) {
        const char *p = body + st->next, *stop = body + len;
        const char *nl = line_end(p, stop);
        if ((nl == NULL ? (size_t)(stop - p) : (size_t)(nl - p)) > 4096) {
            *why = "chunk line too long"; /* whether or not its end has arrived */
            return -1;
        }
        if (nl == NULL)
            return 0;
        if (st->trailers) {
            if (nl == p || (nl == p + 1 && *p == '\r')) {
                *end = (size_t)(nl + 1 - body);
                return 1;
            }
            st->next = (size_t)(nl + 1 - body);
            continue;
        }
        unsigned long long size = 0;
        int digits = 0, d;
        const char *q = p;
        for (; q < nl && (d = hexval(*q)) >= 0; q++, digits++) {
            if (digits >= 15) {
                *why = "chunk size too large";
                return -1;
            }
            size = size * 16 + (unsigned)d;
        }
        while (q < nl && (*q == ' ' || *q == '\t'))
            q++;
        if (digits == 0 || (q < nl && *q != ';' && !(*q == '\r' && q + 1 == nl))) {
            *why = "malformed chunk size";
            return -1;
        }
        if (size == 0) {
            st->trailers = 1;
            st->next = (size_t)(nl + 1 - body);
            continue;
        }
        if (st->decoded + size > max_decoded) {
            *why = "request body too large";
            return -1;
        }
        size_t data = (size_t)(nl + 1 - body);
        if (len < data + size + 1)
            return 0;
        const char *after = body + data + size;
        size_t crlf = after[0] == '\n' ? 1 : (after[0] == '\r' ? 2 : 0);
        if (crlf == 0 || (crlf == 2 && len < data + size + 2))
            return crlf == 0 ? (*why = "chunk data not followed by CRLF", -1) : 0;
        if (crlf == 2 && after[1] != '\n') {
            *why = "chunk data not followed by CRLF";
            return -1;
        }
        st->decoded += size;
        st->next = data + size + crlf;
    }
    return 0;
}

int http_response_head_parse(const char *buf, size_t len, http_response_head *r)
{
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    size_t hl = head_length(buf, len);
    if (hl == 0)
        return 0;
    if (hl < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    unsigned status = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        status = status * 10 + (unsigned)(buf[i] - '0');
    }
    r->status = status;
    r->len = hl;
    const char *end = buf + hl;
    for (const char *p = line_end(buf, end) + 1; p < end;) {
        const char *nl = line_end(p, end);
        const char *colon = memchr(p, ':', (size_t)(nl - p));
        if (colon != NULL) {
            const char *v = colon + 1;
            size_t n = (size_t)(nl - v), name_len = (size_t)(colon - p);
            trim(&v, &n);
            if (token_is(p, name_len, "Content-Length"))
                r->content_length = parse_length(v, n);
            else if (token_is(p, name_len, "Transfer-Encoding"))
                r->chunked = list_has(v, n, "chunked");
            else if (token_is(p, name_len, "Connection"))
                r->close = list_has(v, n, "close");
        }
        p = nl + 1;
    }
    return 1;
}
