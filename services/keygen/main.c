/*
 * broker-keygen - writes a CURVE key pair for the split deployment's bus.
 *
 *   broker-keygen PATH      PATH: the key pair (mode 0600, for --bus_key_file)
 *                           PATH.pub: its public key (for the peers'
 *                           --bus_trusted_keys and --bus_server_key)
 *
 * It never overwrites a file, and prints the public key.  The keys come from
 * libzmq (zmq_curve_keypair, on libsodium's random source).
 */
#include "bus_curve.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: broker-keygen PATH\n"
                        "  writes a bus key pair to PATH (mode 0600) and its public key to PATH.pub\n");
        return argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? 0 : 2;
    }
    return bus_keygen(argv[1]) == 0 ? 0 : 1;
}
