/*
 * stream_filter.h - which events a stream asked for (GET /sse?events=...),
 * and each tenant's index from event names to the streams that asked.
 *
 * The `events` value is a comma-separated list, split on the raw value first
 * and each item percent-decoded after, so "%2C" is a comma inside a name.  An
 * item ending in an unescaped '*' is a prefix ("room.42.*"), any other an
 * exact name; a lone '*' asks for everything, which is no filter at all.
 *
 * The index keeps, for every exact name and every prefix that a stream of the
 * tenant asked for, the streams that asked.  An event then costs one lookup
 * for its exact name and one for each length at which some prefix is held,
 * never a walk over the tenant's streams.
 */
#ifndef BROKER_STREAM_FILTER_H
#define BROKER_STREAM_FILTER_H

#include <stddef.h>
#include <stdint.h>

#define FILTER_ITEMS_MAX 64

typedef struct filter_item {
    const char *name; /* decoded, NUL-terminated; a prefix without its '*' */
    uint16_t len;
    uint8_t prefix;
} filter_item;

typedef struct stream_filter {
    uint32_t n;
    filter_item items[]; /* then the names' bytes: one allocation */
} stream_filter;

/* Parses a raw `events` value (NUL-terminated, as sse_request keeps it).  0:
 * *out is the filter (free() it), or NULL when an item is '*' (every event).
 * -1: *out is NULL and `why` says what is wrong and with which item, for a
 * 400.  -2: out of memory. */
int stream_filter_parse(const char *raw, stream_filter **out, char *why, size_t why_size);

/* Whether `f` takes the event named name[0..len). */
int stream_filter_match(const stream_filter *f, const char *name, size_t len);

/* ---- the per-tenant index ------------------------------------------------ */

struct stream_client;
typedef struct filter_index filter_index;
typedef struct index_entry index_entry;

/* Where one item of a stream's filter sits in the index: its entry and its
 * place in the entry's array (kept up to date as others leave). */
typedef struct index_slot {
    index_entry *entry;
    uint32_t pos;
} index_slot;

filter_index *filter_index_new(void);
/* The index must be empty (every stream removed). */
void filter_index_free(filter_index *ix);
/* Adds `c` under every item of its filter (c->x->filter; c->x->slots, one
 * per item, are filled).  -1 when out of memory, with nothing added. */
int filter_index_add(filter_index *ix, struct stream_client *c);
void filter_index_remove(filter_index *ix, struct stream_client *c);
/* Calls fn(c, arg) for every stream whose filter takes name[0..len); a
 * stream with items that overlap comes once per item that matches. */
void filter_index_each(const filter_index *ix, const char *name, size_t len,
                       void (*fn)(struct stream_client *c, void *arg), void *arg);

#endif
