/*
 * test_countmap.c - counts per key: independent keys, binary keys, a key
 * freed at zero, growth past many keys and back down.
 */
#include "check.h"
#include "countmap.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static void case_counts(void)
{
    countmap *m = countmap_new();
    CHECK(m != NULL);
    CHECK_INT(countmap_add(m, "alice", 5, 1), 1);
    CHECK_INT(countmap_add(m, "alice", 5, 1), 2);
    CHECK_INT(countmap_add(m, "bob", 3, 1), 1);
    CHECK_INT(countmap_get(m, "alice", 5), 2);
    CHECK_INT(countmap_get(m, "alic", 4), 0);
    CHECK_INT(countmap_add(m, "alice", 5, -1), 1);
    CHECK_INT(countmap_add(m, "alice", 5, -1), 0);
    CHECK_INT(countmap_get(m, "alice", 5), 0);
    CHECK_INT(countmap_add(m, "alice", 5, -1), 0); /* below zero: stays absent */
    unsigned char a[4] = {127, 0, 0, 1}, b[4] = {127, 0, 0, 2};
    CHECK_INT(countmap_add(m, a, 4, 1), 1);
    CHECK_INT(countmap_add(m, b, 4, 1), 1);
    CHECK_INT(countmap_get(m, a, 4), 1);
    countmap_free(m);
}

static void case_many(void)
{
    countmap *m = countmap_new();
    char key[32];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof key, "user-%d", i);
            CHECK_INT(countmap_add(m, key, strlen(key), 1), 1);
            CHECK_INT(countmap_add(m, key, strlen(key), 1), 2);
        }
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof key, "user-%d", i);
            CHECK_INT(countmap_get(m, key, strlen(key)), 2);
            countmap_add(m, key, strlen(key), -1);
            CHECK_INT(countmap_add(m, key, strlen(key), -1), 0);
        }
    }
    countmap_free(m);
}

int main(void)
{
    log_init("test_countmap", "error", NULL);
    RUN_CASE(case_counts);
    RUN_CASE(case_many);
    log_close();
    return check_summary();
}
