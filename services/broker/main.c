/*
 * broker - the all-in-one process: every service on one port, the bus on
 * inproc://, the store an embedded database at --db.  What `make run` starts.
 *
 * The stream engine owns the port: it keeps GET /sse and hands every other
 * connection to the request/response server (services/stream/stream.h).
 */
#include "auth.h"
#include "ingest.h"
#include "log.h"
#include "proto_bus.h"
#include "stream.h"

#include <unistd.h>

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    stream_engine *engine = NULL;
    int rc = runtime_open(&rt, argc, argv, "broker");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int listen_fd = -1, status = 1;
    if (runtime_open_bus(&rt, BUS_INPROC_ENDPOINT) != 0 || http_server_init(&http, &rt.cfg) != 0)
        goto out;
    if (health_add_routes(&http, &rt) != 0 || auth_add_routes(&http, &rt) != 0 || ingest_add_routes(&http, &rt) != 0 ||
        stream_add_routes(&http, &rt) != 0 || http_server_start(&http, 0) != 0)
        goto out_http;
    listen_fd = stream_listen(rt.cfg.bind, rt.cfg.port, 0);
    if (listen_fd < 0 || (engine = stream_engine_new(&rt, &http, listen_fd, BUS_INPROC_ENDPOINT)) == NULL ||
        stream_engine_start(engine) != 0)
        goto out_engine;
    log_info("broker listening on %s:%ld (store: %s, bus: %s)", rt.cfg.bind, rt.cfg.port, rt.store->ops->name,
             BUS_INPROC_ENDPOINT);
    runtime_wait_for_signal();
    status = 0;
out_engine:
    if (engine != NULL)
        stream_engine_free(engine);
    else if (listen_fd >= 0)
        close(listen_fd);
out_http:
    http_server_stop(&http);
out:
    runtime_close(&rt);
    return status;
}
