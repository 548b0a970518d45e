/*
 * broker-ingest - POST /insert on its own (split deployment): stores each
 * event and publishes it on --bus_publish (default: tcp port 5556, all interfaces).
 */
#include "ingest.h"
#include "log.h"

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker-ingest");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const char *bus = rt.cfg.bus_publish[0] ? rt.cfg.bus_publish : "tcp://*:5556";
    int status = 1;
    if (runtime_open_bus(&rt, bus) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (health_add_routes(&http, &rt) == 0 && ingest_add_routes(&http, &rt) == 0 && http_server_start(&http, 1) == 0) {
            log_info("broker-ingest listening on %s:%ld, publishing on %s", rt.cfg.bind, rt.cfg.port, bus);
            runtime_wait_for_signal();
            status = 0;
        }
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
