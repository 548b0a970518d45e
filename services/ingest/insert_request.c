/*
 * insert_request.c - see insert_request.h.
 */
#include "insert_request.h"

#include <string.h>
#include <strings.h>

static const char REQUEST_LINE[] = "POST /insert HTTP/1.1\r\n";
#define CONTENT_LENGTH_DIGITS_MAX 9

/* RFC 9110 token characters, for header names. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

static int value_starts(const char *v, size_t len, const char *prefix)
{
    size_t p = strlen(prefix);
    return len >= p && strncasecmp(v, prefix, p) == 0;
}

insert_verdict insert_request_parse(const char *buf, size_t len, size_t cap, size_t max_body, insert_request *out)
{
    size_t rl = sizeof REQUEST_LINE - 1;
    if (memcmp(buf, REQUEST_LINE, len < rl ? len : rl) != 0)
        return INSERT_OTHER;
    if (len < rl)
        return INSERT_NEED_MORE;
    int seen_host = 0, seen_auth = 0, seen_length = 0;
    size_t content_length = 0;
    memset(out, 0, sizeof *out);
    size_t i = rl;
    for (;;) {
        /* One header line "Name: value\r\n", or the empty line ending the head. */
        size_t eol = i;
        while (eol < len && buf[eol] != '\n')
            eol++;
        if (eol == len)
            return len >= cap ? INSERT_OTHER : INSERT_NEED_MORE;
        if (eol == i || buf[eol - 1] != '\r')
            return INSERT_OTHER; /* a bare LF */
        if (eol == i + 1)
            break; /* "\r\n": end of the head */
        size_t name_end = i;
        while (name_end < eol && is_tchar((unsigned char)buf[name_end]))
            name_end++;
        if (name_end == i || buf[name_end] != ':')
            return INSERT_OTHER; /* no name, a space before the colon, or a folded line */
        size_t v = name_end + 1, vend = eol - 1;
        while (v < vend && (buf[v] == ' ' || buf[v] == '\t'))
            v++;
        while (vend > v && (buf[vend - 1] == ' ' || buf[vend - 1] == '\t'))
            vend--;
        for (size_t k = v; k < vend; k++) {
            unsigned char c = (unsigned char)buf[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return INSERT_OTHER;
        }
        const char *name = buf + i, *val = buf + v;
        size_t nlen = name_end - i, vlen = vend - v;
        if (name_is(name, nlen, "Host")) {
            if (seen_host++)
                return INSERT_OTHER;
        } else if (name_is(name, nlen, "Authorization")) {
            if (seen_auth++ || !value_starts(val, vlen, "Bearer "))
                return INSERT_OTHER;
            out->auth_off = v;
            out->auth_len = vlen;
        } else if (name_is(name, nlen, "Content-Length")) {
            if (seen_length++ || vlen == 0 || vlen > CONTENT_LENGTH_DIGITS_MAX)
                return INSERT_OTHER;
            for (size_t k = 0; k < vlen; k++) {
                if (val[k] < '0' || val[k] > '9')
                    return INSERT_OTHER;
                content_length = content_length * 10 + (size_t)(val[k] - '0');
            }
        } else if (name_is(name, nlen, "X-Request-Id")) {
            out->id_off = v;
            out->id_len = vlen;
        } else if (name_is(name, nlen, "Content-Type")) {
            if (!value_starts(val, vlen, "application/json"))
                return INSERT_OTHER;
        } else if (name_is(name, nlen, "Connection")) {
            if (!(vlen == 10 && strncasecmp(val, "keep-alive", 10) == 0))
                return INSERT_OTHER;
        } else if (name_is(name, nlen, "Transfer-Encoding") || name_is(name, nlen, "Expect") ||
                   name_is(name, nlen, "Upgrade") || name_is(name, nlen, "Content-Encoding")) {
            return INSERT_OTHER;
        }
        i = eol + 1;
    }
    size_t head_len = i + 2;
    /* HTTP/1.1 requires Host (the other server answers 400 without it); an
     * empty body and an oversized one have answers of their own there too. */
    if (!seen_host || !seen_auth || !seen_length || content_length == 0 || content_length > max_body ||
        head_len + content_length > cap)
        return INSERT_OTHER;
    if (len < head_len + content_length)
        return INSERT_NEED_MORE;
    out->body_off = head_len;
    out->body_len = content_length;
    out->total_len = head_len + content_length;
    return INSERT_FAST;
}
