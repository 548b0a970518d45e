/*
 * broker-auth - the user service on its own (split deployment).  User
 * changes (revoke, update) are published on --bus_publish (default: tcp port
 * 5557, all interfaces) so that stream processes close the user's streams.
 */
#include "auth.h"

int main(int argc, char **argv)
{
    return runtime_serve_http(argc, argv, "broker-auth", "tcp://*:5557", auth_add_routes);
}
