/*
 * password.c - Argon2id hashing with a per-user random salt.
 *
 * Every Argon2id computation holds M_COST_KIB (19 MiB) while it runs, and the
 * request servers run one thread per connection.  Computed on the caller's
 * thread, a burst of logins (a flood of wrong passwords, say) held that once
 * per connection: 150 at once peaked at 2.8 GB resident here, and a few
 * hundred more end in the OOM killer.  Even one at a time, glibc keeps the
 * freed 19 MiB in the malloc arena of whichever thread computed it, and a
 * thread per connection reaches every arena: 350 MiB stayed resident after
 * such a burst.
 *
 * So the computations run on a few threads of their own, one per CPU (the
 * work is CPU-bound: more at once buy no throughput), taken in arrival order.
 * A caller queues its job and sleeps until it is done.  Memory is then at
 * most one buffer per pool thread, reused from one login to the next without
 * faulting its pages in again (handing it back to the kernel instead made a
 * login take 86 ms instead of 21 ms on this machine).
 */
#include "password.h"
#include "metrics.h"
#include "log.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { T_COST = 2, M_COST_KIB = 19456, LANES = 1, SALT_LEN = 16, HASH_LEN = 32, POOL_MAX = 16 };

typedef struct argon2_job {
    const char *password;
    const unsigned char *salt; /* hashing: the fresh salt; NULL: verifying */
    char *encoded;             /* hashing: the output buffer; verifying: the stored hash */
    size_t encoded_len;
    int rc; /* libargon2's result */
    int done;
    int dropped; /* not computed: the process is stopping (password_stop_waiting) */
    pthread_cond_t wake; /* the caller's */
    struct argon2_job *next;
} argon2_job;

static struct {
    pthread_once_t once;
    pthread_mutex_t lock; /* guards the queue and each job's done */
    pthread_cond_t work;
    argon2_job *head, **tail;
    int waiting; /* jobs on the queue */
    int stopping;
    int threads; /* started; 0: compute on the caller's thread */
} pool = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

static void run_job(argon2_job *j)
{
    if (j->salt != NULL)
        j->rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, j->password, strlen(j->password), j->salt,
                                      SALT_LEN, HASH_LEN, j->encoded, j->encoded_len);
    else
        j->rc = argon2id_verify(j->encoded, j->password, strlen(j->password));
}

static void *pool_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.head == NULL)
            pthread_cond_wait(&pool.work, &pool.lock);
        argon2_job *j = pool.head;
        pool.waiting--;
        pool.head = j->next;
        if (pool.head == NULL)
            pool.tail = &pool.head;
        pthread_mutex_unlock(&pool.lock);
        run_job(j);
        pthread_mutex_lock(&pool.lock);
        j->done = 1; /* j is the caller's: touched no more once it sees done */
        pthread_cond_signal(&j->wake);
    }
    return NULL;
}

/* The threads live as long as the process; they hold no resource to release. */
static void pool_start(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus < 1 ? 1 : cpus > POOL_MAX ? POOL_MAX : (int)cpus;
    pool.tail = &pool.head;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, pool_thread, NULL) != 0)
            break;
        pool.threads++;
    }
    pthread_attr_destroy(&attr);
    if (pool.threads == 0)
        log_error("password: cannot start the Argon2 threads; hashing on the callers' threads");
}

/* Runs `j` on the pool and waits for it.  0, or -1 without running it when
 * `bounded` and the backlog is full. */
static int compute(argon2_job *j, int bounded)
{
    pthread_once(&pool.once, pool_start);
    if (pool.threads == 0) {
        run_job(j);
        return 0;
    }
    pthread_mutex_lock(&pool.lock);
    if (pool.stopping || (bounded && pool.waiting >= PASSWORD_BACKLOG * pool.threads)) {
        pthread_mutex_unlock(&pool.lock);
        return -1;
    }
    pthread_cond_init(&j->wake, NULL);
    pool.waiting++;
    *pool.tail = j;
    pool.tail = &j->next;
    pthread_cond_signal(&pool.work);
    while (!j->done)
        pthread_cond_wait(&j->wake, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_cond_destroy(&j->wake);
    return j->dropped ? -1 : 0;
}

void password_stop_waiting(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    for (argon2_job *j = pool.head, *next; j != NULL; j = next) {
        next = j->next;
        j->dropped = 1;
        j->done = 1;
        pthread_cond_signal(&j->wake);
    }
    pool.head = NULL;
    pool.tail = &pool.head;
    pool.waiting = 0;
    pthread_mutex_unlock(&pool.lock);
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
    argon2_job j = {.password = password, .salt = salt, .encoded = encoded, .encoded_len = len};
    if (compute(&j, 0) != 0) { /* an admin's request waits its turn, unless the process stops */
        free(encoded);
        return NULL;
    }
    if (j.rc != ARGON2_OK) {
        log_error("password: argon2id failed: %s", argon2_error_message(j.rc));
        free(encoded);
        return NULL;
    }
    return encoded;
}

/* broker_password_verifications_total: every login, first Basic check and
 * unknown-user check costs exactly one, which is how the tests see that an
 * unknown name costs what a known one does without measuring time. */
static metric_value *verifications;
static pthread_once_t verifications_once = PTHREAD_ONCE_INIT;

static void verifications_register(void)
{
    verifications = metrics_counter("broker_password_verifications_total", "Argon2id password verifications run");
}

void password_metrics_init(void)
{
    pthread_once(&verifications_once, verifications_register);
}

static int verify(const char *encoded, const char *password, int bounded)
{
    if (encoded == NULL || password == NULL)
        return 0;
    pthread_once(&verifications_once, verifications_register);
    argon2_job j = {.password = password, .encoded = (char *)encoded};
    if (compute(&j, bounded) != 0)
        return PASSWORD_BUSY;
    atomic_fetch_add(verifications, 1);
    return j.rc == ARGON2_OK;
}

int password_verify(const char *encoded, const char *password)
{
    return verify(encoded, password, 0);
}

int password_verify_bounded(const char *encoded, const char *password)
{
    return verify(encoded, password, 1);
}
