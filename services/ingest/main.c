/*
 * broker-ingest - POST /insert on its own (split deployment): stores each
 * event and publishes it on --bus_publish (default:
 * tcp://127.0.0.1:5556).
 *
 * The front door takes plain inserts to the ingest queue (checked, stored in
 * batches and answered by its thread: ingest_door.c) and gives every other
 * request to the request/response server, which answers the rest of
 * POST /insert, /healthz, /readyz and /metrics.
 */
#include "ingest.h"

#define DEFAULT_BUS "tcp://127.0.0.1:5556"

static int attach(door *d, broker_runtime *rt, void *arg)
{
    (void)arg;
    return ingest_attach(d, rt);
}

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker-ingest");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const char *bus = rt.cfg.bus_publish[0] ? rt.cfg.bus_publish : DEFAULT_BUS;
    int status = 1;
    if (runtime_open_bus(&rt, bus) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (ingest_add_routes(&http, &rt) == 0 &&
            runtime_serve(&rt, &http, 0, 0, attach, NULL, "broker-ingest") == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
