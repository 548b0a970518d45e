/*
 * metrics.c - a fixed table of named atomic series.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX 128

typedef struct metric {
    char name[128];
    const char *help;
    const char *type;
    metric_value value;
} metric;

/* Upper bounds of the histogram buckets, in microseconds: from a fan-out on
 * one machine (a millisecond) to a stalled one (ten seconds). */
static const long long BOUNDS_US[METRICS_HISTOGRAM_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000,
};

#define HISTOGRAMS_MAX 8

typedef struct histogram_entry {
    char name[96];
    const char *help;
    metric_histogram h;
} histogram_entry;

static histogram_entry histograms[HISTOGRAMS_MAX];
static size_t nhistograms;
static metric_histogram histogram_overflow;

static metric table[METRICS_MAX];
static size_t count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static metric_value overflow;

static metric_value *metrics_register(const char *name, const char *help, const char *type)
{
    metric_value *v = &overflow;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0) {
            v = &table[i].value;
            goto out;
        }
    if (count < METRICS_MAX && strlen(name) < sizeof table[0].name) {
        metric *m = &table[count++];
        strcpy(m->name, name);
        m->help = help;
        m->type = type;
        v = &m->value;
    }
out:
    pthread_mutex_unlock(&lock);
    return v;
}

metric_value *metrics_counter(const char *name, const char *help)
{
    return metrics_register(name, help, "counter");
}

metric_value *metrics_gauge(const char *name, const char *help)
{
    return metrics_register(name, help, "gauge");
}

metric_histogram *metrics_histogram(const char *name, const char *help)
{
    metric_histogram *h = &histogram_overflow;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nhistograms; i++)
        if (strcmp(histograms[i].name, name) == 0) {
            h = &histograms[i].h;
            goto out;
        }
    if (nhistograms < HISTOGRAMS_MAX && strlen(name) < sizeof histograms[0].name) {
        histogram_entry *e = &histograms[nhistograms++];
        strcpy(e->name, name);
        e->help = help;
        h = &e->h;
    }
out:
    pthread_mutex_unlock(&lock);
    return h;
}

void metrics_observe_us(metric_histogram *h, long long us)
{
    size_t b = 0;
    if (us < 0)
        us = 0; /* clocks of two processes a little apart */
    while (b < METRICS_HISTOGRAM_BUCKETS && us > BOUNDS_US[b])
        b++;
    atomic_fetch_add(&h->bucket[b], 1);
    atomic_fetch_add(&h->sum_us, us);
    atomic_fetch_add(&h->count, 1);
}

static void histogram_render(FILE *f, const histogram_entry *e)
{
    long long cumulative = 0;
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", e->name, e->help, e->name);
    for (size_t b = 0; b <= METRICS_HISTOGRAM_BUCKETS; b++) {
        cumulative += atomic_load(&e->h.bucket[b]);
        if (b < METRICS_HISTOGRAM_BUCKETS)
            fprintf(f, "%s_bucket{le=\"%g\"} %lld\n", e->name, (double)BOUNDS_US[b] / 1e6, cumulative);
        else
            fprintf(f, "%s_bucket{le=\"+Inf\"} %lld\n", e->name, cumulative);
    }
    fprintf(f, "%s_sum %.6f\n%s_count %lld\n", e->name, (double)atomic_load(&e->h.sum_us) / 1e6, e->name,
            atomic_load(&e->h.count));
}

char *metrics_render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count; i++) {
        const metric *m = &table[i];
        size_t base = strcspn(m->name, "{");
        int seen = 0; /* this family printed already? then its series were printed with it */
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcspn(table[j].name, "{") == base && strncmp(table[j].name, m->name, base) == 0;
        if (seen)
            continue;
        /* HELP/TYPE once per family, then every series of the family. */
        fprintf(f, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)base, m->name, m->help, (int)base, m->name, m->type);
        for (size_t j = i; j < count; j++)
            if (strcspn(table[j].name, "{") == base && strncmp(table[j].name, m->name, base) == 0)
                fprintf(f, "%s %lld\n", table[j].name, atomic_load(&table[j].value));
    }
    for (size_t i = 0; i < nhistograms; i++)
        histogram_render(f, &histograms[i]);
    pthread_mutex_unlock(&lock);
    fclose(f);
    return buf;
}
