/*
 * metrics.h - process counters and gauges, rendered in Prometheus text format.
 *
 * metrics_counter()/metrics_gauge() register a named series once (at start)
 * and return a pointer to its atomic value; hot paths just add to it.
 */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

typedef _Atomic long long metric_value;

/* `name` may carry Prometheus labels: "broker_http_requests_total{code=\"2xx\"}".
 * Returns a stable pointer, or a dummy when the table is full. */
metric_value *metrics_counter(const char *name, const char *help);
metric_value *metrics_gauge(const char *name, const char *help);

/* A histogram of durations, in seconds for Prometheus: cumulative buckets
 * with the upper bounds HISTOGRAM_BOUNDS_MS, _sum and _count.  Observations
 * are atomic adds, safe from any thread. */
#define METRICS_HISTOGRAM_BUCKETS 14
typedef struct metric_histogram {
    metric_value bucket[METRICS_HISTOGRAM_BUCKETS + 1]; /* per bound, not cumulative; the last is +Inf */
    metric_value sum_us;
    metric_value count;
} metric_histogram;

/* Registers `name` (no labels) once; returns a stable pointer, or a dummy when
 * the table is full. */
metric_histogram *metrics_histogram(const char *name, const char *help);
void metrics_observe_us(metric_histogram *h, long long microseconds);

/* The whole exposition as a malloc'd string. */
char *metrics_render(void);

#endif
