/*
 * broker-bus - a bus forwarder (split deployment), so that no service needs
 * to know another.
 *
 * It binds the publishers' side (XSUB) on --bind:--bus_forwarder_port and the
 * subscribers' side (XPUB) on the next port, and forwards every message from
 * the one to the other (lib/bus/bus_forwarder.c).  The other services name
 * the forwarders with --bus_forwarders: every publisher (ingest, auth, certd)
 * connects to every forwarder, and so does every subscriber (stream, and every
 * service for certd's control messages).  Ingest and stream may then each
 * have as many replicas as wanted, and two forwarders leave no single point
 * of failure: while both are up a subscriber gets each message twice and
 * drops the second copy of an event by its per-tenant sequence (user, clock
 * and certificate messages say a state, so a copy changes nothing); while
 * one is down the other carries everything.
 *
 * Its own port serves /healthz, /readyz and /metrics in plain HTTP whatever
 * --secure says: it is reached only inside the deployment.
 */
#include "bus.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"

#include <stdio.h>

typedef struct forwarder_metrics {
    bus_forwarder *forwarder;
    metric_value *received;
} forwarder_metrics;

/* Once a second: what the proxy has forwarded, for /metrics. */
static void count_forwarded(void *arg)
{
    forwarder_metrics *m = arg;
    uint64_t messages;
    if (bus_forwarder_received(m->forwarder, &messages) == 0)
        atomic_store(m->received, (long long)messages);
}

static int attach(door *d, broker_runtime *rt, void *arg)
{
    (void)rt;
    return door_timer_add(d, 1000, count_forwarded, arg);
}

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    char frontend[300], backend[300];
    int rc = runtime_open_bare(&rt, argc, argv, "broker-bus");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    config_serve_plain(&rt.cfg);
    long port = rt.cfg.bus_forwarder_port;
    int status = 1;
    int n1 = snprintf(frontend, sizeof frontend, "tcp://%s:%ld", rt.cfg.bind, port);
    int n2 = snprintf(backend, sizeof backend, "tcp://%s:%ld", rt.cfg.bind, port + 1);
    if (n1 < 0 || (size_t)n1 >= sizeof frontend || n2 < 0 || (size_t)n2 >= sizeof backend) {
        log_error("broker-bus: --bind is too long: %s", rt.cfg.bind);
        runtime_close(&rt);
        return 2;
    }
    bus_forwarder *forwarder = bus_forwarder_start(frontend, backend);
    forwarder_metrics m = {forwarder, metrics_counter("broker_bus_forwarded_total",
                                                      "messages this forwarder received from publishers")};
    if (forwarder != NULL && http_server_init(&http, &rt.cfg) == 0) {
        log_info("broker-bus: publishers connect to %s, subscribers to %s", frontend, backend);
        if (runtime_serve(&rt, &http, 0, 0, attach, &m, "broker-bus") == 0)
            status = 0;
        http_server_stop(&http);
    }
    bus_forwarder_stop(forwarder);
    runtime_close(&rt);
    return status;
}
