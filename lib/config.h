/*
 * config.h - every command-line flag of every Broker binary, in one table.
 *
 * The table in config.c is the single source of truth: parsing, the
 * BROKER_<FLAG> environment variables and --help are all produced from it
 * (tests/blackbox/test_cli.py and tests/ops check the docs against --help).  Precedence: default < environment < command line.
 * A bad value stops the program with a message that names the flag.
 */
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

/* With --auto_cert, the files certd keeps under --certs (the TLS listeners
 * load the last two). */
#define CONFIG_ACME_ACCOUNT_KEY "account_key.pem"
#define CONFIG_ACME_KEY "private_key.pem"
#define CONFIG_ACME_CHAIN "chain.pem"

typedef struct broker_config {
    char *origin;
    long port;
    long jwt_expiry;
    char *jwt_secret;
    int secure;
    int auto_cert;
    char *key_path;
    char *cert_path;
    long http_port;     /* -1: 80 with --secure, none without; 0: none */
    char *certs;
    char *db;
    char *domain;
    char *admin_token;
    /* Beyond the seed's flags: what a deployment needs. */
    char *store;        /* store URI; empty = embedded store at --db */
    long max_body;      /* bytes */
    long keepalive;     /* seconds between SSE keep-alive comments */
    long drain_seconds; /* on SIGTERM: the window over which open streams are closed */
    char *ntp_servers;  /* comma-separated host[:port] */
    long ntp_interval;  /* seconds between measurements */
    long ntp_max_offset;/* seconds: a larger offset is refused */
    char *acme_directory;
    char *acme_ca_file; /* trust for the directory's HTTPS; "" = the system's */
    char *acme_email;   /* the account's contact; "" = none */
    char *log_level;
    char *bind;         /* listen address */
    char *bus_publish;  /* ZeroMQ endpoint ingest publishes on (split mode) */
    char *bus_control;  /* ZeroMQ endpoint of certd's control messages (split mode); "" = none */
    char *bus_subscribe;/* ZeroMQ endpoint(s) stream subscribes to (split mode) */
    char *bus_peers;    /* the other stream replicas' --bus_publish, for presence (no forwarders) */
    char *bus_peer_keys;/* their public key files */
    char *bus_forwarders;   /* comma-separated host[:port] of bus forwarders; "" = none */
    long bus_forwarder_port;/* broker-bus: its publishers' side; subscribers' side is the next port */
    char *bus_key_file;     /* this process's CURVE key pair; "" = the bus in the clear */
    char *bus_trusted_keys; /* file or directory of the client public keys a binding bus socket accepts */
    char *bus_server_key;   /* public key file(s) of the bus servers this process connects to */
    char *bus_certd_key;    /* certd's public key file: the server of --bus_control, the only sender of clock/cert */
    int bus_insecure;       /* allow the bus in the clear on non-loopback endpoints */
    /* Secrets from files (Docker/Kubernetes secrets): each replaces its flag's value. */
    char *jwt_secret_file;
    char *admin_token_file;
    char *store_file;
    char *store_password_file; /* the password of the store URI's user */
    long sse_queue_max; /* bytes queued for one SSE client before it is dropped */
    long stream_workers;/* stream processes (all-in-one: 1) */
    int presence;       /* ?presence=true streams and GET /presence */
    int console;        /* serve the web console at /console/ */
    char *log_format;   /* "text" or "json" */
    long login_limit_user;  /* failed password checks a minute per username; 0 = none */
    long login_limit_ip;    /* failed logins a minute per client address; 0 = none */
    long admin_limit_ip;    /* wrong admin_tokens a minute per client address; 0 = none */
    char *trusted_proxies;  /* comma-separated addresses whose X-Forwarded-For names the client */
    long max_event_bytes;   /* largest event data (compact JSON) an insert may store */
    long max_event_names;   /* event names one tenant may have (its latest-per-name table); 0 = no bound */
    long max_connections;         /* connections a process holds; 0 = its open-file limit */
    long max_connections_per_ip;  /* connections per client address and process; 0 = no limit */
    long max_streams_per_user;    /* SSE streams per user and process; 0 = no limit */
    int port_given;     /* --port or BROKER_PORT was set: --secure leaves the port alone */
} broker_config;

/* The release, set by the build (CMakeLists.txt, project VERSION). */
#ifndef BROKER_VERSION
#define BROKER_VERSION "unknown"
#endif

/* Fills `cfg` from defaults, the environment and argv.  Returns 0 on success;
 * 1 when --help or --version was printed (the caller exits 0); -1 on a bad
 * flag (the message is already on stderr; the caller exits 2). */
int config_load(broker_config *cfg, int argc, char **argv, const char *program);
void config_free(broker_config *cfg);

/* Prints --help for `program` to `out`. */
void config_print_help(FILE *out, const char *program);

/* For a binary whose own port is plain HTTP whatever --secure says
 * (broker-certd, broker-bus): turns HTTPS and the --http_port listener off,
 * and gives back the plain default port when --secure had moved it to 443. */
void config_serve_plain(broker_config *cfg);

/* Logs loud warnings for insecure defaults (jwt_secret, admin_token). */
void config_warn_insecure(const broker_config *cfg);

#endif
