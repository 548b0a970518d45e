/*
 * test_metrics.c - counters and gauges and their Prometheus text exposition:
 * one HELP and one TYPE line per family, before its samples, and one
 * "name value" line per series.
 *
 * The metrics table is process-global, so the cases share it and use
 * distinct names; the table-full case runs last.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "metrics.h"

#include <pthread.h>

/* Number of lines of `text` equal to `line`. */
static int count_lines(const char *text, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0'))
            n++;
    return n;
}

/* Offset of the line equal to `line`, or -1. */
static long line_at(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0'))
            return (long)(p - text);
    return -1;
}

/* Every line is a "# HELP name text", "# TYPE name counter|gauge" or "series integer". */
static int well_formed(const char *text)
{
    if (text == NULL || (text[0] != '\0' && text[strlen(text) - 1] != '\n'))
        return 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = (size_t)(nl - p);
        char *line = strndup(p, len);
        int ok;
        if (strncmp(line, "# HELP ", 7) == 0) {
            ok = strchr(line + 7, ' ') != NULL;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            const char *t = strrchr(line, ' ');
            ok = t > line + 7 && (strcmp(t, " counter") == 0 || strcmp(t, " gauge") == 0);
        } else {
            const char *sp = strrchr(line, ' ');
            char *end = NULL;
            ok = sp != NULL && sp > line && sp[1] != '\0';
            if (ok) {
                strtoll(sp + 1, &end, 10);
                ok = *end == '\0';
            }
            /* A series name: [a-zA-Z_:][a-zA-Z0-9_:]* optionally followed by {labels}. */
            ok = ok && (line[0] == '_' || line[0] == ':' || (line[0] >= 'a' && line[0] <= 'z') ||
                        (line[0] >= 'A' && line[0] <= 'Z'));
        }
        if (!ok)
            fprintf(stderr, "  malformed exposition line: \"%s\"\n", line);
        free(line);
        if (!ok)
            return 0;
        p = nl + 1;
    }
    return 1;
}

static void case_register(void)
{
    metric_value *a = metrics_counter("test_register_total", "a test counter");
    metric_value *b = metrics_counter("test_register_total", "a test counter");
    metric_value *g = metrics_gauge("test_register_gauge", "a test gauge");
    CHECK(a != NULL && g != NULL);
    CHECK(a == b); /* the same name is the same series */
    CHECK(a != g);
    CHECK_INT(atomic_load(a), 0);
    atomic_fetch_add(a, 3);
    CHECK_INT(atomic_load(b), 3);
}

static void case_render_counter_gauge(void)
{
    metric_value *c = metrics_counter("test_events_total", "events seen by the test");
    metric_value *g = metrics_gauge("test_open_streams", "streams open in the test");
    atomic_fetch_add(c, 41);
    atomic_fetch_add(c, 1);
    atomic_store(g, 7);
    atomic_fetch_sub(g, 9); /* gauges go down, below zero too */
    char *text = metrics_render();
    CHECK(text != NULL);
    CHECK(well_formed(text));
    CHECK_INT(count_lines(text, "# HELP test_events_total events seen by the test"), 1);
    CHECK_INT(count_lines(text, "# TYPE test_events_total counter"), 1);
    CHECK_INT(count_lines(text, "test_events_total 42"), 1);
    CHECK_INT(count_lines(text, "# HELP test_open_streams streams open in the test"), 1);
    CHECK_INT(count_lines(text, "# TYPE test_open_streams gauge"), 1);
    CHECK_INT(count_lines(text, "test_open_streams -2"), 1);
    /* HELP, then TYPE, then the sample. */
    long help = line_at(text, "# HELP test_events_total events seen by the test");
    long type = line_at(text, "# TYPE test_events_total counter");
    long sample = line_at(text, "test_events_total 42");
    CHECK(help >= 0 && help < type && type < sample);
    free(text);

    /* A later render shows the new value: nothing is cached. */
    atomic_fetch_add(c, 8);
    text = metrics_render();
    CHECK_INT(count_lines(text, "test_events_total 50"), 1);
    CHECK_INT(count_lines(text, "test_events_total 42"), 0);
    free(text);
}

static void case_labelled_family(void)
{
    /* Registered together, as http.c does. */
    metric_value *ok = metrics_counter("test_http_total{code=\"2xx\"}", "requests by class");
    metric_value *bad = metrics_counter("test_http_total{code=\"4xx\"}", "requests by class");
    metric_value *err = metrics_counter("test_http_total{code=\"5xx\"}", "requests by class");
    CHECK(ok != bad && bad != err && ok != err);
    atomic_fetch_add(ok, 5);
    atomic_fetch_add(bad, 2);
    /* A family whose name is a prefix of the previous one is its own family. */
    metric_value *prefix = metrics_counter("test_http", "a different family");
    atomic_fetch_add(prefix, 1);
    /* And one that extends it. */
    metric_value *longer = metrics_gauge("test_http_total_bytes", "yet another family");
    atomic_store(longer, 9);

    char *text = metrics_render();
    CHECK(well_formed(text));
    CHECK_INT(count_lines(text, "# HELP test_http_total requests by class"), 1);
    CHECK_INT(count_lines(text, "# TYPE test_http_total counter"), 1);
    CHECK_INT(count_lines(text, "test_http_total{code=\"2xx\"} 5"), 1);
    CHECK_INT(count_lines(text, "test_http_total{code=\"4xx\"} 2"), 1);
    CHECK_INT(count_lines(text, "test_http_total{code=\"5xx\"} 0"), 1);
    CHECK_INT(count_lines(text, "# HELP test_http a different family"), 1);
    CHECK_INT(count_lines(text, "# TYPE test_http counter"), 1);
    CHECK_INT(count_lines(text, "test_http 1"), 1);
    CHECK_INT(count_lines(text, "# TYPE test_http_total_bytes gauge"), 1);
    CHECK_INT(count_lines(text, "test_http_total_bytes 9"), 1);
    /* The family's samples follow its TYPE line, together. */
    long type = line_at(text, "# TYPE test_http_total counter");
    long s2 = line_at(text, "test_http_total{code=\"2xx\"} 5");
    long s4 = line_at(text, "test_http_total{code=\"4xx\"} 2");
    long s5 = line_at(text, "test_http_total{code=\"5xx\"} 0");
    long next = line_at(text, "# HELP test_http a different family");
    CHECK(type >= 0 && type < s2 && s2 < s4 && s4 < s5 && s5 < next);

    /* No family has two TYPE lines anywhere in the exposition. */
    int dup = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, "# TYPE ", 7) != 0)
            continue;
        size_t len = strcspn(p, "\n");
        char *line = strndup(p, len);
        dup += count_lines(text, line) != 1;
        free(line);
    }
    CHECK_INT(dup, 0);
    free(text);
}

static void *bump(void *arg)
{
    metric_value *v = arg;
    for (int i = 0; i < 100000; i++)
        atomic_fetch_add(v, 1);
    return NULL;
}

static void case_concurrent_adds(void)
{
    metric_value *v = metrics_counter("test_concurrent_total", "bumped from four threads");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, bump, v);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = metrics_render();
    CHECK_INT(count_lines(text, "test_concurrent_total 400000"), 1);
    free(text);
}

/* Last: fills the table. */
static void case_limits(void)
{
    /* A name too long for the table gets a usable dummy and is not rendered. */
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    metric_value *d = metrics_counter(longname, "too long");
    CHECK(d != NULL);
    atomic_fetch_add(d, 1);
    char *text = metrics_render();
    CHECK(text != NULL && strstr(text, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") == NULL);
    CHECK(well_formed(text));
    free(text);

    /* Registering far more series than the table holds never fails or crashes. */
    char name[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "test_fill_%d", i);
        metric_value *v = metrics_gauge(name, "filler");
        CHECK(v != NULL);
        if (v != NULL)
            atomic_store(v, i);
    }
    text = metrics_render();
    CHECK(text != NULL);
    CHECK(well_formed(text));
    /* Earlier series are still there and intact. */
    CHECK_INT(count_lines(text, "test_events_total 50"), 1);
    CHECK_INT(count_lines(text, "test_fill_0 0"), 1);
    free(text);
}

int main(void)
{
    RUN_CASE(case_register);
    RUN_CASE(case_render_counter_gauge);
    RUN_CASE(case_labelled_family);
    RUN_CASE(case_concurrent_adds);
    RUN_CASE(case_limits);
    return check_summary();
}
