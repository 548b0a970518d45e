/*
 * stream_filter.c - `events` filters and each tenant's index of them
 * (stream_filter.h).
 */
#include "stream_filter.h"
#include "event_name.h"
#include "hash.h"
#include "sse_request.h"
#include "stream_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ------------------------------------------------------------ */

/* Names the item in an error: its 1-based place and its first bytes, as sent. */
static void item_error(char *why, size_t size, size_t index, const char *raw, size_t len, const char *what)
{
    int shown = len > 40 ? 40 : (int)len;
    snprintf(why, size, "events: item %zu ('%.*s%s') %s", index, shown, raw, len > 40 ? "..." : "", what);
}

int stream_filter_parse(const char *raw, stream_filter **out, char *why, size_t why_size)
{
    *out = NULL;
    size_t raw_len = strlen(raw), n = 1;
    for (size_t i = 0; i < raw_len; i++)
        n += raw[i] == ',';
    if (n > FILTER_ITEMS_MAX) {
        snprintf(why, why_size, "events: %zu items, at most %d", n, FILTER_ITEMS_MAX);
        return -1;
    }
    /* One allocation: the items, then every decoded name (never longer than
     * its raw form) with its NUL. */
    stream_filter *f = malloc(sizeof *f + n * sizeof f->items[0] + raw_len + n);
    if (f == NULL) {
        snprintf(why, why_size, "out of memory");
        return -2;
    }
    char *names = (char *)&f->items[n], *at = names;
    f->n = 0;
    const char *p = raw, *end = raw + raw_len;
    int everything = 0;
    for (size_t index = 1; index <= n; index++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *ie = comma != NULL ? comma : end;
        size_t len = (size_t)(ie - p);
        /* An unescaped trailing '*' makes a prefix; "%2A" stays a star in the name. */
        int prefix = len > 0 && p[len - 1] == '*';
        size_t body = prefix ? len - 1 : len;
        size_t cap = (size_t)(names + raw_len + n - at);
        const char *problem = NULL;
        if (len == 0)
            problem = "is empty";
        else if (sse_url_decode(p, body, at, cap) != 0)
            problem = "is not percent-encoded properly";
        if (problem == NULL && prefix && body == 0) {
            everything = 1; /* a lone '*': every event, whatever else was asked */
            p = ie + 1;
            continue;
        }
        if (problem != NULL) {
            item_error(why, why_size, index, p, len, problem);
            free(f);
            return -1;
        }
        size_t dlen = strlen(at);
        const char *rule = prefix ? event_prefix_check(at, dlen) : event_name_check(at, dlen);
        if (rule != NULL) {
            char what[160];
            snprintf(what, sizeof what, "can never match: %s", rule);
            item_error(why, why_size, index, p, len, what);
            free(f);
            return -1;
        }
        int dup = 0;
        for (uint32_t k = 0; k < f->n && !dup; k++)
            dup = f->items[k].prefix == prefix && f->items[k].len == dlen && memcmp(f->items[k].name, at, dlen) == 0;
        if (!dup) {
            f->items[f->n++] = (filter_item){.name = at, .len = (uint16_t)dlen, .prefix = (uint8_t)prefix};
            at += dlen + 1;
        }
        p = ie + 1;
    }
    if (everything)
        free(f);
    else
        *out = f;
    return 0;
}

int stream_filter_match(const stream_filter *f, const char *name, size_t len)
{
    for (uint32_t i = 0; i < f->n; i++) {
        const filter_item *it = &f->items[i];
        if (it->prefix ? it->len <= len && memcmp(it->name, name, it->len) == 0
                       : it->len == len && memcmp(it->name, name, len) == 0)
            return 1;
    }
    return 0;
}

/* ---- the index ---------------------------------------------------------- */

struct index_entry {
    index_entry *next; /* hash chain */
    uint64_t hash;
    struct stream_client **subs;
    uint32_t n, cap;
    uint16_t len;
    uint8_t prefix;
    char key[];
};

struct filter_index {
    index_entry **buckets;
    size_t mask, count;
    /* How many prefix entries have each length: an event is looked up only
     * at the lengths where one exists. */
    uint32_t prefixes_of_len[EVENT_NAME_MAX];
};


filter_index *filter_index_new(void)
{
    filter_index *ix = calloc(1, sizeof *ix);
    if (ix == NULL)
        return NULL;
    ix->mask = 15;
    ix->buckets = calloc(ix->mask + 1, sizeof *ix->buckets);
    if (ix->buckets == NULL) {
        free(ix);
        return NULL;
    }
    return ix;
}

void filter_index_free(filter_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t b = 0; b <= ix->mask; b++)
        for (index_entry *en = ix->buckets[b], *next; en != NULL; en = next) {
            next = en->next;
            free(en->subs);
            free(en);
        }
    free(ix->buckets);
    free(ix);
}

static index_entry *entry_find(const filter_index *ix, uint64_t h, const char *key, size_t len, int prefix)
{
    for (index_entry *en = ix->buckets[h & ix->mask]; en != NULL; en = en->next)
        if (en->hash == h && en->prefix == prefix && en->len == len && memcmp(en->key, key, len) == 0)
            return en;
    return NULL;
}

static void index_grow(filter_index *ix)
{
    size_t ncap = (ix->mask + 1) * 2;
    index_entry **nb = calloc(ncap, sizeof *nb);
    if (nb == NULL)
        return; /* longer chains, still correct */
    for (size_t b = 0; b <= ix->mask; b++)
        for (index_entry *en = ix->buckets[b], *next; en != NULL; en = next) {
            next = en->next;
            en->next = nb[en->hash & (ncap - 1)];
            nb[en->hash & (ncap - 1)] = en;
        }
    free(ix->buckets);
    ix->buckets = nb;
    ix->mask = ncap - 1;
}

static index_entry *entry_get(filter_index *ix, const filter_item *it)
{
    uint64_t h = hash_fnv1a(it->name, it->len);
    index_entry *en = entry_find(ix, h, it->name, it->len, it->prefix);
    if (en != NULL)
        return en;
    en = calloc(1, sizeof *en + it->len + 1);
    if (en == NULL)
        return NULL;
    en->hash = h;
    en->len = it->len;
    en->prefix = it->prefix;
    memcpy(en->key, it->name, it->len);
    if (ix->count + 1 > (ix->mask + 1) * 2)
        index_grow(ix);
    en->next = ix->buckets[h & ix->mask];
    ix->buckets[h & ix->mask] = en;
    ix->count++;
    if (en->prefix)
        ix->prefixes_of_len[en->len]++;
    return en;
}

static void entry_drop(filter_index *ix, index_entry *en)
{
    index_entry **pp = &ix->buckets[en->hash & ix->mask];
    while (*pp != en)
        pp = &(*pp)->next;
    *pp = en->next;
    ix->count--;
    if (en->prefix)
        ix->prefixes_of_len[en->len]--;
    free(en->subs);
    free(en);
}

/* Takes slot `k` of `c` out of its entry: the last stream of the entry moves
 * into its place, and that stream's slot for the entry learns where. */
static void slot_remove(filter_index *ix, stream_client *c, uint32_t k)
{
    index_slot *s = &c->x->slots[k];
    index_entry *en = s->entry;
    if (en == NULL)
        return;
    uint32_t last = --en->n;
    if (s->pos != last) {
        stream_client *moved = en->subs[last];
        en->subs[s->pos] = moved;
        for (uint32_t j = 0; j < moved->x->filter->n; j++)
            if (moved->x->slots[j].entry == en && moved->x->slots[j].pos == last) {
                moved->x->slots[j].pos = s->pos;
                break;
            }
    }
    s->entry = NULL;
    if (en->n == 0)
        entry_drop(ix, en);
}

int filter_index_add(filter_index *ix, stream_client *c)
{
    const stream_filter *f = c->x->filter;
    for (uint32_t k = 0; k < f->n; k++) {
        index_entry *en = entry_get(ix, &f->items[k]);
        if (en != NULL && en->n == en->cap) {
            uint32_t ncap = en->cap ? en->cap * 2 : 4;
            struct stream_client **ns = realloc(en->subs, ncap * sizeof *ns);
            if (ns != NULL) {
                en->subs = ns;
                en->cap = ncap;
            }
        }
        if (en == NULL || en->n == en->cap) {
            if (en != NULL && en->n == 0)
                entry_drop(ix, en);
            for (uint32_t j = 0; j < k; j++)
                slot_remove(ix, c, j);
            return -1;
        }
        c->x->slots[k] = (index_slot){.entry = en, .pos = en->n};
        en->subs[en->n++] = c;
    }
    return 0;
}

void filter_index_remove(filter_index *ix, stream_client *c)
{
    for (uint32_t k = 0; k < c->x->filter->n; k++)
        slot_remove(ix, c, k);
}

static void entry_each(const index_entry *en, void (*fn)(stream_client *c, void *arg), void *arg)
{
    for (uint32_t i = 0; i < en->n; i++)
        fn(en->subs[i], arg);
}

void filter_index_each(const filter_index *ix, const char *name, size_t len, void (*fn)(stream_client *c, void *arg),
                       void *arg)
{
    uint64_t h = HASH_FNV_OFFSET;
    for (size_t i = 0; i < len; i++) {
        h = hash_fnv1a_more(h, &name[i], 1);
        /* A prefix of i + 1 bytes matches this name (the whole name too:
         * "room.*" takes an event named "room."). */
        if (i + 1 < EVENT_NAME_MAX && ix->prefixes_of_len[i + 1] != 0) {
            const index_entry *en = entry_find(ix, h, name, i + 1, 1);
            if (en != NULL)
                entry_each(en, fn, arg);
        }
    }
    const index_entry *en = entry_find(ix, h, name, len, 0);
    if (en != NULL)
        entry_each(en, fn, arg);
}
