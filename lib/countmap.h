/*
 * countmap.h - how many of something each key holds: connections per client
 * address, streams per user.
 *
 * A chained hash table of byte-string keys to counts; a key whose count
 * falls to zero is freed, so the table holds only keys in use and its size
 * follows what is open.  Not thread-safe: one owner (an event loop).
 */
#ifndef BROKER_COUNTMAP_H
#define BROKER_COUNTMAP_H

#include <stddef.h>

typedef struct countmap countmap;

countmap *countmap_new(void);
void countmap_free(countmap *m);
/* The count of `key` (0 when absent). */
long countmap_get(const countmap *m, const void *key, size_t len);
/* Adds `delta` (+1 or -1) to `key`'s count and returns the new count; -1
 * when out of memory (nothing changed). */
long countmap_add(countmap *m, const void *key, size_t len, long delta);

#endif
