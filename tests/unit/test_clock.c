/*
 * test_clock.c - the monotonic timed waits of lib/clock.h: a wait on a
 * variable from clock_cond_init() with a deadline from
 * clock_mono_after_ms() lasts until that deadline (a variable with default
 * attributes would read the deadline as long past and return at once), and
 * a signal ends it early.  Only lower bounds are checked: a loaded machine
 * may wake a thread late, never early.
 */
#include "check.h"
#include "clock.h"

#include <errno.h>
#include <pthread.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int wait_ms(pthread_cond_t *cond, int64_t ms, int64_t *took_ms, const int *flag)
{
    int64_t start = clock_mono_us();
    struct timespec until = clock_mono_after_ms(ms);
    int rc = 0;
    pthread_mutex_lock(&lock);
    while ((flag == NULL || !*flag) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(cond, &lock, &until);
    pthread_mutex_unlock(&lock);
    *took_ms = (clock_mono_us() - start) / 1000;
    return rc;
}

static void case_a_wait_lasts_until_its_deadline(void)
{
    pthread_cond_t cond;
    CHECK_INT(clock_cond_init(&cond), 0);
    int64_t took = 0;
    CHECK_INT(wait_ms(&cond, 250, &took, NULL), ETIMEDOUT);
    CHECK(took >= 240);
    /* Sub-second parts carry into seconds. */
    CHECK_INT(wait_ms(&cond, 1999, &took, NULL), ETIMEDOUT);
    CHECK(took >= 1990);
    pthread_cond_destroy(&cond);
}

static pthread_cond_t signalled;
static int flag;

static void *signal_soon(void *arg)
{
    (void)arg;
    nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    pthread_mutex_lock(&lock);
    flag = 1;
    pthread_cond_signal(&signalled);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void case_a_signal_ends_the_wait(void)
{
    CHECK_INT(clock_cond_init(&signalled), 0);
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, signal_soon, NULL), 0);
    int64_t took = 0;
    CHECK_INT(wait_ms(&signalled, 60 * 1000, &took, &flag), 0);
    CHECK(flag == 1);
    pthread_join(t, NULL);
    pthread_cond_destroy(&signalled);
}

int main(void)
{
    RUN_CASE(case_a_wait_lasts_until_its_deadline);
    RUN_CASE(case_a_signal_ends_the_wait);
    return check_summary();
}
