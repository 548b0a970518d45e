/*
 * countmap.c - see countmap.h.
 */
#include "countmap.h"
#include "hash.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    long count;
    size_t len;
    unsigned char key[];
} entry;

struct countmap {
    entry **buckets;
    size_t mask, n;
};

countmap *countmap_new(void)
{
    countmap *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->mask = 255;
    m->buckets = calloc(m->mask + 1, sizeof *m->buckets);
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

void countmap_free(countmap *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i <= m->mask; i++)
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(m->buckets);
    free(m);
}

static size_t key_hash(const void *key, size_t len)
{
    uint64_t h = hash_fnv1a(key, len);
    return (size_t)(h ^ (h >> 32));
}

static entry **find(const countmap *m, const void *key, size_t len)
{
    entry **pp = &m->buckets[key_hash(key, len) & m->mask];
    while (*pp && !((*pp)->len == len && memcmp((*pp)->key, key, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

long countmap_get(const countmap *m, const void *key, size_t len)
{
    entry *e = *find(m, key, len);
    return e ? e->count : 0;
}

/* Doubles the table when it holds twice as many keys as buckets; a failed
 * grow keeps the old table (longer chains, still correct). */
static void grow(countmap *m)
{
    size_t ncap = (m->mask + 1) * 2;
    entry **nb = calloc(ncap, sizeof *nb);
    if (nb == NULL)
        return;
    for (size_t i = 0; i <= m->mask; i++)
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t b = key_hash(e->key, e->len) & (ncap - 1);
            e->next = nb[b];
            nb[b] = e;
        }
    free(m->buckets);
    m->buckets = nb;
    m->mask = ncap - 1;
}

long countmap_add(countmap *m, const void *key, size_t len, long delta)
{
    entry **pp = find(m, key, len);
    entry *e = *pp;
    if (e == NULL) {
        if (delta <= 0)
            return 0;
        e = malloc(sizeof *e + len);
        if (e == NULL)
            return -1;
        e->next = NULL;
        e->count = 0;
        e->len = len;
        memcpy(e->key, key, len);
        *pp = e;
        if (++m->n > (m->mask + 1) * 2)
            grow(m);
        pp = find(m, key, len); /* the grow may have moved it */
    }
    e->count += delta;
    long count = e->count;
    if (count <= 0) {
        *pp = e->next;
        free(e);
        m->n--;
        return 0;
    }
    return count;
}
