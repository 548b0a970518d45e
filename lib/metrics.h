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

/* The whole exposition as a malloc'd string. */
char *metrics_render(void);

#endif
