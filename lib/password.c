/*
 * password.c - Argon2id hashing with a per-user random salt.
 */
#include "password.h"
#include "log.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

enum { T_COST = 2, M_COST_KIB = 19456, LANES = 1, SALT_LEN = 16, HASH_LEN = 32 };

char *password_hash(const char *password)
{
    unsigned char salt[SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1) {
        log_error("password: no randomness for a salt");
        return NULL;
    }
    size_t len = argon2_encodedlen(T_COST, M_COST_KIB, LANES, SALT_LEN, HASH_LEN, Argon2_id);
    char *encoded = malloc(len);
    if (encoded == NULL)
        return NULL;
    int rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, password, strlen(password), salt, sizeof salt,
                                   HASH_LEN, encoded, len);
    if (rc != ARGON2_OK) {
        log_error("password: argon2id failed: %s", argon2_error_message(rc));
        free(encoded);
        return NULL;
    }
    return encoded;
}

int password_verify(const char *encoded, const char *password)
{
    if (encoded == NULL || password == NULL)
        return 0;
    return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}
