/*
 * broker-ingest - POST /insert on its own (split deployment): stores each
 * event and publishes it on --bus_publish (default: tcp port 5556, all interfaces).
 *
 * The port is the stream engine's, as in the all-in-one broker, but without
 * streams: the engine answers plain keep-alive inserts itself (checked,
 * stored in batches and answered by the ingest queue's thread), and hands
 * every other request to the request/response server, which answers the
 * rest of POST /insert, /healthz, /readyz and /metrics.  Through that server
 * alone an insert cost ~150 us of CPU, and this process managed ~8,500
 * inserts/s on the W3 load (bench/RESULTS.md, "Sixth session").
 */
#include "ingest.h"
#include "log.h"
#include "stream.h"

#define DEFAULT_BUS "tcp://*:5556"

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
        log_info("broker-ingest: publishing on %s", bus);
        if (health_add_routes(&http, &rt) == 0 && ingest_add_routes(&http, &rt) == 0 &&
            http_server_start(&http, 0) == 0 && stream_serve(&rt, &http, 0, NULL, 1, "broker-ingest") == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
