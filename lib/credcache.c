/*
 * credcache.c - a direct-mapped table of HMAC-keyed credential digests.
 */
#include "credcache.h"
#include "clock.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST 32
#define NAME_MAX_LEN 128

typedef struct cred_entry {
    unsigned char key[DIGEST];       /* HMAC of the credential; all-zero = empty */
    unsigned char hash_digest[DIGEST]; /* SHA-256 of the stored Argon2 hash */
    char username[NAME_MAX_LEN + 1];
    int64_t expires_ms;
} cred_entry;

struct credcache {
    pthread_mutex_t lock;
    unsigned char secret[DIGEST];
    size_t nslots;
    int ttl_s;
    cred_entry *slots;
};

credcache *credcache_new(size_t slots, int ttl_s)
{
    if (slots == 0)
        return NULL;
    credcache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->slots = calloc(slots, sizeof *c->slots);
    if (c->slots == NULL || RAND_bytes(c->secret, sizeof c->secret) != 1) {
        free(c->slots);
        free(c);
        return NULL;
    }
    c->nslots = slots;
    c->ttl_s = ttl_s;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void credcache_free(credcache *c)
{
    if (c == NULL)
        return;
    OPENSSL_cleanse(c->slots, c->nslots * sizeof *c->slots);
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c);
}

static void credential_key(const credcache *c, const char *user, const char *pass, unsigned char out[DIGEST])
{
    size_t ul = strlen(user) + 1, pl = strlen(pass);
    unsigned char *buf = malloc(ul + pl);
    unsigned int len = DIGEST;
    memset(out, 0, DIGEST);
    if (buf == NULL)
        return;
    memcpy(buf, user, ul);
    memcpy(buf + ul, pass, pl);
    if (HMAC(EVP_sha256(), c->secret, sizeof c->secret, buf, ul + pl, out, &len) == NULL)
        memset(out, 0, DIGEST);
    OPENSSL_cleanse(buf, ul + pl);
    free(buf);
}

static size_t slot_of(const credcache *c, const unsigned char key[DIGEST])
{
    uint64_t v;
    memcpy(&v, key, sizeof v);
    return (size_t)(v % c->nslots);
}

static void hash_digest(const char *stored_hash, unsigned char out[DIGEST])
{
    unsigned int len = DIGEST;
    if (!EVP_Digest(stored_hash, strlen(stored_hash), out, &len, EVP_sha256(), NULL))
        memset(out, 0xff, DIGEST);
}

static int is_empty(const unsigned char key[DIGEST])
{
    static const unsigned char zero[DIGEST];
    return memcmp(key, zero, DIGEST) == 0;
}

int credcache_check(credcache *c, const char *username, const char *password, const char *stored_hash)
{
    unsigned char key[DIGEST], hd[DIGEST];
    if (c == NULL || strlen(username) > NAME_MAX_LEN)
        return 0;
    credential_key(c, username, password, key);
    if (is_empty(key))
        return 0;
    hash_digest(stored_hash, hd);
    size_t slot = slot_of(c, key);
    int hit = 0;
    pthread_mutex_lock(&c->lock);
    cred_entry *e = &c->slots[slot];
    if (CRYPTO_memcmp(e->key, key, DIGEST) == 0 && CRYPTO_memcmp(e->hash_digest, hd, DIGEST) == 0 &&
        strcmp(e->username, username) == 0) {
        if (e->expires_ms > clock_now_ms())
            hit = 1;
        else
            memset(e, 0, sizeof *e);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void credcache_remember(credcache *c, const char *username, const char *password, const char *stored_hash)
{
    cred_entry e;
    if (c == NULL || strlen(username) > NAME_MAX_LEN)
        return;
    memset(&e, 0, sizeof e);
    credential_key(c, username, password, e.key);
    if (is_empty(e.key))
        return;
    hash_digest(stored_hash, e.hash_digest);
    memcpy(e.username, username, strlen(username) + 1);
    e.expires_ms = clock_now_ms() + (int64_t)c->ttl_s * 1000;
    size_t slot = slot_of(c, e.key);
    pthread_mutex_lock(&c->lock);
    c->slots[slot] = e;
    pthread_mutex_unlock(&c->lock);
}

void credcache_forget_user(credcache *c, const char *username)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->nslots; i++)
        if (!is_empty(c->slots[i].key) && strcmp(c->slots[i].username, username) == 0)
            memset(&c->slots[i], 0, sizeof c->slots[i]);
    pthread_mutex_unlock(&c->lock);
}
