/*
 * broker - the all-in-one process: every service on one port, the bus on
 * inproc://, the store an embedded database at --db.  What `make run` starts.
 *
 * The stream engine owns the port: it keeps GET /sse and hands every other
 * connection to the request/response server (services/stream/stream.h).
 */
#include "auth.h"
#include "ingest.h"
#include "proto_bus.h"
#include "stream.h"

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int status = 1;
    if (runtime_open_bus(&rt, BUS_INPROC_ENDPOINT) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (health_add_routes(&http, &rt) == 0 && auth_add_routes(&http, &rt) == 0 &&
            ingest_add_routes(&http, &rt) == 0 && stream_add_routes(&http, &rt) == 0 &&
            http_server_start(&http, 0) == 0 && stream_serve(&rt, &http, 0, BUS_INPROC_ENDPOINT, 1, "broker") == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
