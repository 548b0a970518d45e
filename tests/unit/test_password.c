/*
 * test_password.c - Argon2id hashing: the encoded form, a fresh salt per
 * hash, and verification that fails closed.
 */
#include "check.h"
#include "log.h"
#include "password.h"

#include <pthread.h>

static void case_hash_format(void)
{
    char *h = password_hash("correct horse battery staple");
    CHECK(h != NULL);
    if (h == NULL)
        return;
    CHECK(strncmp(h, "$argon2id$v=19$", 15) == 0);
    CHECK_CONTAINS(h, "m=19456,t=2,p=1$");
    /* $argon2id$v=19$m=..,t=..,p=..$salt$hash: five '$'. */
    int dollars = 0;
    for (const char *p = h; *p; p++)
        dollars += *p == '$';
    CHECK_INT(dollars, 5);
    /* The password itself never appears in the encoding. */
    CHECK(strstr(h, "correct horse") == NULL);
    free(h);
}

static void case_salted(void)
{
    char *a = password_hash("same password");
    char *b = password_hash("same password");
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        CHECK(strcmp(a, b) != 0);
        /* The salts (4th field) differ, not just the hash. */
        const char *sa = strrchr(a, '$'), *sb = strrchr(b, '$');
        size_t pa = 0, pb = 0;
        for (const char *p = a; p < sa; p++)
            pa += *p == '$';
        for (const char *p = b; p < sb; p++)
            pb += *p == '$';
        CHECK_INT(pa, pb);
        const char *salt_a = a, *salt_b = b;
        for (int i = 0; i < 4; i++) {
            salt_a = strchr(salt_a, '$') + 1;
            salt_b = strchr(salt_b, '$') + 1;
        }
        CHECK(sa - salt_a == sb - salt_b && sa - salt_a > 0);
        CHECK(strncmp(salt_a, salt_b, (size_t)(sa - salt_a)) != 0);
        /* Both verify. */
        CHECK_INT(password_verify(a, "same password"), 1);
        CHECK_INT(password_verify(b, "same password"), 1);
    }
    free(a);
    free(b);
}

static void case_verify(void)
{
    char *h = password_hash("s3cret-pass");
    CHECK(h != NULL);
    if (h == NULL)
        return;
    CHECK_INT(password_verify(h, "s3cret-pass"), 1);
    CHECK_INT(password_verify(h, "s3cret-pasS"), 0);
    CHECK_INT(password_verify(h, "s3cret-pass "), 0);
    CHECK_INT(password_verify(h, "s3cret-pas"), 0);
    CHECK_INT(password_verify(h, ""), 0);
    /* NULLs fail closed. */
    CHECK_INT(password_verify(NULL, "s3cret-pass"), 0);
    CHECK_INT(password_verify(h, NULL), 0);
    CHECK_INT(password_verify(NULL, NULL), 0);

    /* A hash with one character changed does not verify. */
    char *bad = strdup(h);
    size_t n = strlen(bad);
    bad[n - 5] = bad[n - 5] == 'A' ? 'B' : 'A'; /* not the last: its low bits are padding */
    CHECK_INT(password_verify(bad, "s3cret-pass"), 0);
    free(bad);

    /* Malformed encodings. */
    static const char *const malformed[] = {
        "",
        "plaintext",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
        "$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$abcdefghijklmnopqrstuuK1bQAoYQ1Z6TgUOMcWyvYb2BjMrbWvS",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        CHECK_INT(password_verify(malformed[i], "s3cret-pass"), 0);

    /* An argon2i (not id) hash of the same password is not ours. */
    char *i_hash = strdup(h);
    memmove(i_hash + 8, i_hash + 9, strlen(i_hash + 9) + 1); /* "$argon2id" -> "$argon2i" */
    CHECK(strncmp(i_hash, "$argon2i$", 9) == 0);
    CHECK_INT(password_verify(i_hash, "s3cret-pass"), 0);
    free(i_hash);
    free(h);
}

static void case_unusual_passwords(void)
{
    /* Unicode and a long password round-trip. */
    const char *uni = "pässwörd-密码-🔑";
    char *h = password_hash(uni);
    CHECK(h != NULL);
    CHECK_INT(password_verify(h, uni), 1);
    CHECK_INT(password_verify(h, "passwort-密码-🔑"), 0);
    free(h);

    char longpw[4097];
    memset(longpw, 'z', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\0';
    h = password_hash(longpw);
    CHECK(h != NULL);
    CHECK_INT(password_verify(h, longpw), 1);
    longpw[4095] = 'y';
    CHECK_INT(password_verify(h, longpw), 0);
    free(h);
}

/* Many callers at once share the Argon2 threads: each must get its own
 * result back, whatever order the jobs finish in. */
enum { CALLERS = 12 };

typedef struct caller {
    char password[32];
    char *hash;
    int right, wrong; /* password_verify of the own and of the next caller's password */
} caller;

static caller callers[CALLERS];

static void *hash_then_verify(void *arg)
{
    caller *c = arg;
    c->hash = password_hash(c->password);
    c->right = password_verify(c->hash, c->password);
    c->wrong = password_verify(c->hash, callers[(c - callers + 1) % CALLERS].password);
    return NULL;
}

static void case_concurrent_callers(void)
{
    pthread_t t[CALLERS];
    int started = 0;
    for (int i = 0; i < CALLERS; i++)
        snprintf(callers[i].password, sizeof callers[i].password, "caller-%02d-password", i);
    for (int i = 0; i < CALLERS; i++)
        started += pthread_create(&t[i], NULL, hash_then_verify, &callers[i]) == 0;
    CHECK_INT(started, CALLERS);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < started; i++) {
        CHECK(callers[i].hash != NULL);
        CHECK_INT(callers[i].right, 1);
        CHECK_INT(callers[i].wrong, 0);
        for (int k = 0; k < i; k++)
            CHECK(callers[i].hash == NULL || callers[k].hash == NULL || strcmp(callers[i].hash, callers[k].hash) != 0);
    }
    for (int i = 0; i < started; i++)
        free(callers[i].hash);
}

/* A flood of bounded verifications: past the backlog they are refused at
 * once (PASSWORD_BUSY), the others get their true answer; an unbounded one
 * always waits its turn. */
enum { FLOOD = 4 * PASSWORD_BACKLOG * 2 };
static char *flood_hash;
static int flood_result[FLOOD];

static void *flood_one(void *arg)
{
    int *out = arg;
    *out = password_verify_bounded(flood_hash, out == &flood_result[0] ? "flood-password" : "a wrong one");
    return NULL;
}

static void case_backlog_bounded(void)
{
    flood_hash = password_hash("flood-password");
    CHECK(flood_hash != NULL);
    pthread_t t[FLOOD];
    int started = 0;
    for (int i = 0; i < FLOOD; i++)
        started += pthread_create(&t[i], NULL, flood_one, &flood_result[i]) == 0;
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    int busy = 0, wrong = 0, other = 0;
    for (int i = 1; i < started; i++) {
        busy += flood_result[i] == PASSWORD_BUSY;
        wrong += flood_result[i] == 0;
        other += flood_result[i] != PASSWORD_BUSY && flood_result[i] != 0;
    }
    CHECK(busy > 0);   /* far more at once than the backlog holds */
    CHECK(wrong > 0);  /* and those taken were computed */
    CHECK_INT(other, 0);
    CHECK(flood_result[0] == 1 || flood_result[0] == PASSWORD_BUSY);
    CHECK_INT(password_verify(flood_hash, "flood-password"), 1);
    free(flood_hash);
}

int main(void)
{
    log_init("test_password", "error", NULL);
    RUN_CASE(case_hash_format);
    RUN_CASE(case_salted);
    RUN_CASE(case_verify);
    RUN_CASE(case_unusual_passwords);
    RUN_CASE(case_concurrent_callers);
    RUN_CASE(case_backlog_bounded);
    log_close();
    return check_summary();
}
