/*
 * check.h - the tiny harness shared by the unit tests.
 *
 * A test file is a list of cases, each a `static void case_x(void)` made of
 * CHECK()s, run with RUN_CASE(case_x).  Every case prints "ok - name" or
 * "FAIL - name" (with the failed checks above it on stderr), and
 * check_summary() prints "N passed, N failed" last and gives the exit status,
 * like test_store.c.
 *
 * capture_begin()/capture_end() redirect a standard stream (fd 1 or 2) into
 * a temporary file for the duration of a call, so that a case can assert what
 * the code under test printed (e.g. that a bad flag's message names the flag).
 */
#ifndef BROKER_TEST_CHECK_H
#define BROKER_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_case_failures; /* failed checks in the running case */
static int check_cases_passed, check_cases_failed;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                          \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)

#define CHECK_INT(expr, want)                                                                                          \
    do {                                                                                                               \
        long long got_ = (long long)(expr), want_ = (long long)(want);                                                 \
        if (got_ != want_) {                                                                                           \
            fprintf(stderr, "  FAIL %s:%d: %s = %lld, want %lld\n", __FILE__, __LINE__, #expr, got_, want_);          \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)

#define CHECK_STR(expr, want)                                                                                          \
    do {                                                                                                               \
        const char *got_ = (expr), *want_ = (want);                                                                    \
        if (got_ == NULL || want_ == NULL || strcmp(got_, want_) != 0) {                                               \
            fprintf(stderr, "  FAIL %s:%d: %s = \"%s\", want \"%s\"\n", __FILE__, __LINE__, #expr,                     \
                    got_ ? got_ : "(null)", want_ ? want_ : "(null)");                                                 \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)

/* `haystack` (may be NULL) contains `needle`. */
#define CHECK_CONTAINS(haystack, needle)                                                                               \
    do {                                                                                                               \
        const char *h_ = (haystack), *n_ = (needle);                                                                   \
        if (h_ == NULL || strstr(h_, n_) == NULL) {                                                                    \
            fprintf(stderr, "  FAIL %s:%d: %s does not contain \"%s\" (it is \"%s\")\n", __FILE__, __LINE__,          \
                    #haystack, n_, h_ ? h_ : "(null)");                                                                \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)

static inline void check_run(const char *name, void (*fn)(void))
{
    check_case_failures = 0;
    fn();
    printf("%s - %s\n", check_case_failures ? "FAIL" : "ok", name);
    fflush(stdout);
    if (check_case_failures)
        check_cases_failed++;
    else
        check_cases_passed++;
}

#define RUN_CASE(fn) check_run(#fn, fn)

/* Prints the summary line; returns main()'s exit status. */
static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_cases_passed, check_cases_failed);
    return check_cases_failed ? 1 : 0;
}

/* ---- capturing stdout / stderr ------------------------------------------------- */

typedef struct capture {
    int fd;    /* the redirected descriptor: 1 or 2 */
    int saved; /* a dup of the original */
    FILE *tmp;
} capture;

static inline int capture_begin(capture *c, int fd)
{
    c->fd = fd;
    c->tmp = tmpfile();
    if (c->tmp == NULL)
        return -1;
    fflush(fd == 1 ? stdout : stderr);
    c->saved = dup(fd);
    if (c->saved < 0 || dup2(fileno(c->tmp), fd) < 0) {
        fclose(c->tmp);
        c->tmp = NULL;
        return -1;
    }
    return 0;
}

/* Restores the stream; returns what was written meanwhile (malloc'd, never NULL
 * unless out of memory). */
static inline char *capture_end(capture *c)
{
    if (c->tmp == NULL)
        return strdup("");
    fflush(c->fd == 1 ? stdout : stderr);
    dup2(c->saved, c->fd);
    close(c->saved);
    long size = fseek(c->tmp, 0, SEEK_END) == 0 ? ftell(c->tmp) : 0;
    char *text = malloc(size > 0 ? (size_t)size + 1 : 1);
    if (text != NULL) {
        rewind(c->tmp);
        size_t n = size > 0 ? fread(text, 1, (size_t)size, c->tmp) : 0;
        text[n] = '\0';
    }
    fclose(c->tmp);
    c->tmp = NULL;
    return text;
}

#endif
