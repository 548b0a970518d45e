/*
 * broker - the all-in-one process: every service on one port, the bus on
 * inproc://, the store an embedded database at --db.  What `make run` starts.
 *
 * The front door (lib/door.h) owns the port; the stream service takes
 * GET /sse in it, the ingest service plain POST /insert, certd the ACME
 * challenges (and keeps network time and the certificate), and every other
 * request goes to the request/response server with the user service's,
 * the ingest service's and the health routes.
 */
#include "auth.h"
#include "certd.h"
#include "ingest.h"
#include "proto_bus.h"
#include "stream.h"

static int attach(door *d, broker_runtime *rt, void *arg)
{
    (void)arg;
    /* Clock and certificates take effect in-process: certd publishes nothing. */
    certd_options certd = {.publish = NULL, .manage_certificates = rt->cfg.secure && rt->cfg.auto_cert};
    return stream_attach(d, rt, BUS_INPROC_ENDPOINT) != NULL && ingest_attach(d, rt) == 0 &&
                   certd_attach(d, rt, &certd) == 0
               ? 0
               : -1;
}

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, "broker");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int status = 1;
    if (runtime_open_bus(&rt, BUS_INPROC_ENDPOINT) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (auth_add_routes(&http, &rt) == 0 &&
            ingest_add_routes(&http, &rt) == 0 && stream_add_routes(&http, &rt) == 0 &&
            runtime_serve(&rt, &http, stream_conn_size(), 0, attach, NULL, "broker") == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
