/*
 * broker-auth - the user service on its own (split deployment).  User
 * changes (revoke, update) are published on --bus_publish (default:
 * tcp://127.0.0.1:5557) so that stream processes close the user's streams.
 */
#include "auth.h"

int main(int argc, char **argv)
{
    return runtime_serve_http(argc, argv, "broker-auth", "tcp://127.0.0.1:5557", auth_add_routes);
}
