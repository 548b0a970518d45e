/*
 * broker-auth - the user service on its own (split deployment).  User
 * changes (revoke, update) are published on --bus_publish (default
 * tcp port 5557, all interfaces) so that stream processes close the user's open streams.
 */
#include "auth.h"
#include "log.h"

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker-auth");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const char *bus = rt.cfg.bus_publish[0] ? rt.cfg.bus_publish : "tcp://*:5557";
    int status = 1;
    if (runtime_open_bus(&rt, bus) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (health_add_routes(&http, &rt) == 0 && auth_add_routes(&http, &rt) == 0 && http_server_start(&http, 1) == 0) {
            log_info("broker-auth listening on %s:%ld, publishing on %s", rt.cfg.bind, rt.cfg.port, bus);
            runtime_wait_for_signal();
            status = 0;
        }
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
