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
    pthread_mutex_unlock(&lock);
    fclose(f);
    return buf;
}
