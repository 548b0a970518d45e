/*
 * broker-ingest - POST /insert on its own (split deployment): stores each
 * event and publishes it on --bus_publish (default: tcp port 5556, all interfaces).
 */
#include "ingest.h"

int main(int argc, char **argv)
{
    return runtime_serve_http(argc, argv, "broker-ingest", "tcp://*:5556", ingest_add_routes);
}
