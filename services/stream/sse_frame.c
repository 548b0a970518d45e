/*
 * sse_frame.c - SSE frames, serialised once and shared.
 *
 * Event data is compact JSON from the store or the bus: it never holds a raw
 * newline (JSON escapes them), so one "data:" line carries it whole.
 */
#include "stream_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sse_frame *sse_frame_text(const char *text, size_t len)
{
    sse_frame *f = malloc(sizeof *f + len);
    if (f == NULL)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    memcpy(f->bytes, text, len);
    return f;
}

sse_frame *sse_frame_event(uint64_t seq, const char *event, size_t event_len, const char *data, size_t data_len)
{
    char id[32];
    int idlen = snprintf(id, sizeof id, "id: %llu\nevent: ", (unsigned long long)seq);
    size_t len = (size_t)idlen + event_len + 7 + data_len + 2;
    if (len > UINT32_MAX)
        return NULL;
    sse_frame *f = malloc(sizeof *f + len);
    if (f == NULL)
        return NULL;
    char *p = f->bytes;
    memcpy(p, id, (size_t)idlen);
    p += idlen;
    memcpy(p, event, event_len);
    p += event_len;
    memcpy(p, "\ndata: ", 7);
    p += 7;
    memcpy(p, data, data_len);
    p += data_len;
    memcpy(p, "\n\n", 2);
    f->refs = 1;
    f->len = (uint32_t)len;
    return f;
}

void sse_frame_unref(sse_frame *f)
{
    if (f != NULL && --f->refs == 0)
        free(f);
}
