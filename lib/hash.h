/*
 * hash.h - FNV-1a, the hash of the project's in-memory tables (tenants,
 * event names, users, counts).
 *
 * Not for keys an attacker picks to collide, unless seeded (hash_fnv1a_more
 * from a secret start): the tables it serves hold names that passed
 * authentication, or bound their chains.  Walking a string byte by byte
 * gives the hash of each of its prefixes on the way (stream_filter.c).
 */
#ifndef BROKER_HASH_H
#define BROKER_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_OFFSET 1469598103934665603ULL
#define HASH_FNV_PRIME 1099511628211ULL

/* Goes on from `h` over len more bytes. */
static inline uint64_t hash_fnv1a_more(uint64_t h, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * HASH_FNV_PRIME;
    return h;
}

static inline uint64_t hash_fnv1a(const void *bytes, size_t len)
{
    return hash_fnv1a_more(HASH_FNV_OFFSET, bytes, len);
}

#endif
