/*
 * broker-certd - network time and certificates for a split deployment: it
 * publishes the clock's offset and every renewed certificate on its bus
 * (--bus_publish, default tcp://127.0.0.1:5558), which the other services follow
 * with --bus_control, and keeps the key and chain under --certs, a directory
 * the services with TLS listeners share (a volume).
 *
 * Its own port is plain HTTP whatever --secure says: it answers the ACME
 * challenges the gateway sends it (/.well-known/acme-challenge/), /healthz,
 * /readyz and /metrics.
 */
#include "certd.h"
#include "log.h"


#define DEFAULT_BUS "tcp://127.0.0.1:5558"

static int attach(door *d, broker_runtime *rt, void *arg)
{
    return certd_attach(d, rt, arg);
}

int main(int argc, char **argv)
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open_bare(&rt, argc, argv, "broker-certd");
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    certd_options options = {.manage_certificates = rt.cfg.secure && rt.cfg.auto_cert};
    config_serve_plain(&rt.cfg);
    rt.control_source = 1; /* it does not follow its own messages */
    const char *bus = rt.cfg.bus_publish[0] ? rt.cfg.bus_publish : DEFAULT_BUS;
    int status = 1;
    if (runtime_open_bus(&rt, bus) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        log_info("broker-certd: %s", options.manage_certificates ? "network time, and the certificate by ACME"
                                                                 : "network time only");
        options.publish = rt.bus;
        if (runtime_serve(&rt, &http, 0, 0, attach, &options, "broker-certd") == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
