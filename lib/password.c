/*
 * password.c - Argon2id hashing with a per-user random salt.
 */
#include "password.h"
#include "log.h"

#include <argon2.h>
#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { T_COST = 2, M_COST_KIB = 19456, LANES = 1, SALT_LEN = 16, HASH_LEN = 32 };

/*
 * Every Argon2id computation holds M_COST_KIB (19 MiB) while it runs, and the
 * request servers run one thread per connection: a burst of logins, such as
 * a flood of wrong passwords, would hold that once per connection.  150 at
 * once peaked at 2.8 GB of resident memory here; a few hundred more end in
 * the OOM killer.  The work is CPU-bound, so more computations at once than
 * there are CPUs buy no throughput: at most one per CPU runs, the others wait
 * for a slot (tests/blackbox/test_auth.py, the login flood).
 */
static sem_t slots;
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;

static void slots_init(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (sem_init(&slots, 0, cpus > 0 ? (unsigned)cpus : 1) != 0)
        log_error("password: cannot set up the Argon2 slots: %s", strerror(errno));
}

static void slot_take(void)
{
    pthread_once(&slots_once, slots_init);
    while (sem_wait(&slots) != 0 && errno == EINTR)
        ;
}

static void slot_give(void)
{
    sem_post(&slots);
}

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
    slot_take();
    int rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, password, strlen(password), salt, sizeof salt,
                                   HASH_LEN, encoded, len);
    slot_give();
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
    slot_take();
    int ok = argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
    slot_give();
    return ok;
}
