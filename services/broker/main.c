/*
 * broker - the all-in-one process: every service on one port, the bus on
 * inproc://, the store an embedded database at --db.  What `make run` starts.
 */
#include "auth.h"
#include "log.h"

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (http_server_init(&http, &rt.cfg) != 0 || health_add_routes(&http, &rt) != 0 ||
        auth_add_routes(&http, &rt) != 0 || http_server_start(&http, 1) != 0) {
        runtime_close(&rt);
        return 1;
    }
    log_info("broker listening on %s:%ld (store: %s)", rt.cfg.bind, rt.cfg.port, rt.store->ops->name);
    runtime_wait_for_signal();
    http_server_stop(&http);
    runtime_close(&rt);
    return 0;
}
