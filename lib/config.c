/*
 * config.c - the flag table and its one parser.
 *
 * Each row names a flag, its type, its default and its help text, and where
 * it lands in struct broker_config.  Booleans accept --flag, --flag=true and
 * --flag=false (also 1/0, yes/no); other flags take --flag=value or
 * --flag value.  Numbers are range-checked per row.
 */
#include "config.h"
#include "log.h"
#include "proto_bus.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { FLAG_STRING, FLAG_INT, FLAG_BOOL } flag_type;

typedef struct flag_def {
    const char *name;
    flag_type type;
    const char *def;
    size_t offset;
    long min, max; /* FLAG_INT only */
    const char *help;
} flag_def;

#define OFF(f) offsetof(broker_config, f)
/* A number from a header as a default's text. */
#define TEXT(x) TEXT_OF(x)
#define TEXT_OF(x) #x

static const flag_def FLAGS[] = {
    {"origin", FLAG_STRING, "*", OFF(origin), 0, 0, "CORS allowed origin (Access-Control-Allow-Origin)"},
    {"port", FLAG_INT, "8080", OFF(port), 1, 65535, "HTTP(S) port; with --secure and no --port: 443"},
    {"jwt_expiry", FLAG_INT, "86400", OFF(jwt_expiry), 1, 315360000, "seconds a JWT lives"},
    {"jwt_secret", FLAG_STRING, "secret", OFF(jwt_secret), 0, 0, "HS256 key for JWTs"},
    {"secure", FLAG_BOOL, "false", OFF(secure), 0, 0, "serve HTTPS, on 443 unless --port is given, and plain HTTP on --http_port (80) for ACME and a redirect to https"},
    {"auto_cert", FLAG_BOOL, "true", OFF(auto_cert), 0, 0, "with --secure: obtain and renew a certificate by ACME for --domain"},
    {"key_path", FLAG_STRING, "certs/private_key.pem", OFF(key_path), 0, 0, "own TLS key, when --auto_cert=false"},
    {"cert_path", FLAG_STRING, "certs/chain.pem", OFF(cert_path), 0, 0, "own TLS certificate chain, when --auto_cert=false"},
    {"http_port", FLAG_INT, "-1", OFF(http_port), -1, 65535, "plain-HTTP port that redirects to https and serves ACME challenges; -1: 80 with --secure, none without; 0: none"},
    {"certs", FLAG_STRING, "certs", OFF(certs), 0, 0, "where ACME keys and certificates are kept"},
    {"db", FLAG_STRING, "db", OFF(db), 0, 0, "the embedded database's path (the default store)"},
    {"domain", FLAG_STRING, "", OFF(domain), 0, 0, "the domain to certify; must resolve to this host"},
    {"admin_token", FLAG_STRING, "letmein", OFF(admin_token), 0, 0, "password for the admin endpoints"},
    {"admin_token_file", FLAG_STRING, "", OFF(admin_token_file), 0, 0, "a file holding --admin_token (a Docker or Kubernetes secret); replaces --admin_token"},
    {"jwt_secret_file", FLAG_STRING, "", OFF(jwt_secret_file), 0, 0, "a file holding --jwt_secret; replaces --jwt_secret"},
    {"store_file", FLAG_STRING, "", OFF(store_file), 0, 0, "a file holding --store (a URI with credentials); replaces --store"},
    {"store_password_file", FLAG_STRING, "", OFF(store_password_file), 0, 0, "a file holding the password of the user named in the store URI (mongodb://user@host/db): put into the URI at start"},
    {"store", FLAG_STRING, "", OFF(store), 0, 0, "store URI: empty for the embedded store at --db, or mongodb://host:port/db"},
    {"max_body", FLAG_INT, "1048576", OFF(max_body), 64, 1073741824, "largest request body in bytes; larger answers 413"},
    {"keepalive", FLAG_INT, "15", OFF(keepalive), 1, 3600, "seconds between SSE keep-alive comments"},
    {"drain_seconds", FLAG_INT, "20", OFF(drain_seconds), 0, 3600, "on SIGTERM, the window over which open streams are closed (each with a retry: of its own, spread over the window, so clients come back spread out, elsewhere) while /readyz and new streams answer 503; the process exits once its connections are gone or at the window's end; a second SIGTERM or SIGINT exits at once; 0: close them at once"},
    {"ntp_servers", FLAG_STRING, "pool.ntp.org,time.google.com,time.cloudflare.com", OFF(ntp_servers), 0, 0, "NTP servers (host[:port], comma-separated) for network time"},
    {"ntp_interval", FLAG_INT, "600", OFF(ntp_interval), 1, 86400, "seconds between network time measurements"},
    {"ntp_max_offset", FLAG_INT, "86400", OFF(ntp_max_offset), 1, 3153600000L, "largest offset (seconds) from the host clock network time may correct; a larger answer is refused as absurd"},
    {"acme_directory", FLAG_STRING, "https://acme-v02.api.letsencrypt.org/directory", OFF(acme_directory), 0, 0, "ACME directory URL (Let's Encrypt staging: https://acme-staging-v02.api.letsencrypt.org/directory)"},
    {"acme_ca_file", FLAG_STRING, "", OFF(acme_ca_file), 0, 0, "CA file to trust for the ACME directory's own HTTPS (Pebble, a private CA); empty: the system's"},
    {"acme_email", FLAG_STRING, "", OFF(acme_email), 0, 0, "contact address of the ACME account (expiry notices); empty: none"},
    {"log_level", FLAG_STRING, "info", OFF(log_level), 0, 0, "error, warning, info or debug"},
    {"bind", FLAG_STRING, "0.0.0.0", OFF(bind), 0, 0, "address to listen on"},
    {"bus_publish", FLAG_STRING, "", OFF(bus_publish), 0, 0, "ZeroMQ endpoint this service binds and publishes on (split mode; empty: ingest tcp://127.0.0.1:5556, auth tcp://127.0.0.1:5557, certd tcp://127.0.0.1:5558, stream none: it binds one only for --bus_peers; give the address the subscribers reach; the all-in-one uses inproc)"},
    {"bus_control", FLAG_STRING, "", OFF(bus_control), 0, 0, "ZeroMQ endpoint of certd's control messages (network time, certificate renewals) in split mode, e.g. tcp://127.0.0.1:5558; empty: none"},
    {"bus_subscribe", FLAG_STRING, "", OFF(bus_subscribe), 0, 0, "ZeroMQ endpoints (comma-separated) the stream service subscribes to (split mode; empty: tcp://127.0.0.1:5556,tcp://127.0.0.1:5557)"},
    {"bus_peers", FLAG_STRING, "", OFF(bus_peers), 0, 0, "stream service without --bus_forwarders: the --bus_publish endpoints of the other stream replicas (comma-separated), which tell each other who is online; this one then binds its own --bus_publish for them; empty: presence counts this process's streams only"},
    {"bus_peer_keys", FLAG_STRING, "", OFF(bus_peer_keys), 0, 0, "with --bus_peers and --bus_key_file: the other stream replicas' public key files, one for all or one per --bus_peers endpoint in order"},
    {"bus_forwarders", FLAG_STRING, "", OFF(bus_forwarders), 0, 0, "bus forwarders (broker-bus), host[:port] comma-separated, port " TEXT(BUS_FORWARDER_PORT) " when left out: publishers connect to each instead of binding --bus_publish, the stream service and the control messages subscribe to each (port + 1) instead of --bus_subscribe and --bus_control; empty: none"},
    {"bus_key_file", FLAG_STRING, "", OFF(bus_key_file), 0, 0, "split mode: this process's CURVE key pair (a file from broker-keygen, mode 0600); every tcp:// bus link is then authenticated and encrypted; empty: the bus in the clear"},
    {"bus_trusted_keys", FLAG_STRING, "", OFF(bus_trusted_keys), 0, 0, "split mode, with --bus_key_file: a file (one public key a line) or a directory of public key files: the only clients a binding bus socket accepts; re-read at every handshake"},
    {"bus_server_key", FLAG_STRING, "", OFF(bus_server_key), 0, 0, "split mode, with --bus_key_file: the public key file of the bus servers this process connects to (the forwarders, or --bus_subscribe's publishers): one for all, or comma-separated, one per endpoint in order"},
    {"bus_certd_key", FLAG_STRING, "", OFF(bus_certd_key), 0, 0, "split mode, with --bus_key_file: certd's public key file: the server of --bus_control, and at a forwarder the only sender of clock and certificate messages"},
    {"bus_insecure", FLAG_BOOL, "false", OFF(bus_insecure), 0, 0, "allow the bus in the clear (no --bus_key_file) on endpoints other than loopback; anyone who reaches the ports can then read and inject messages"},
    {"bus_forwarder_port", FLAG_INT, TEXT(BUS_FORWARDER_PORT), OFF(bus_forwarder_port), 1, 65534, "broker-bus only: the port its publishers' side (XSUB) listens on, at --bind; its subscribers' side (XPUB) is the next port"},
    {"sse_queue_max", FLAG_INT, "1048576", OFF(sse_queue_max), 4096, 1073741824, "bytes queued for one SSE client before it is disconnected"},
    {"stream_workers", FLAG_INT, "1", OFF(stream_workers), 1, 64, "SSE worker processes sharing the port (SO_REUSEPORT)"},
    {"presence", FLAG_BOOL, "true", OFF(presence), 0, 0, "who is online: allow GET /sse?presence=true and GET /presence (stream service and all-in-one)"},
    {"console", FLAG_BOOL, "true", OFF(console), 0, 0, "serve the web console at /console/ (user service and all-in-one)"},
    {"log_format", FLAG_STRING, "text", OFF(log_format), 0, 0, "text (one line per message) or json (one JSON object per line)"},
    {"login_limit_user", FLAG_INT, "10", OFF(login_limit_user), 0, 1000000, "failed password checks a minute per username (logins, first Basic checks) before 429; 0 = no limit"},
    {"login_limit_ip", FLAG_INT, "30", OFF(login_limit_ip), 0, 1000000, "failed password checks a minute per client address (logins, first Basic checks) before 429; 0 = no limit"},
    {"admin_limit_ip", FLAG_INT, "10", OFF(admin_limit_ip), 0, 1000000, "wrong admin_tokens a minute per client address before 429; 0 = no limit"},
    {"max_event_bytes", FLAG_INT, "65536", OFF(max_event_bytes), 16, 1073741824, "largest event data in bytes (compact JSON); larger answers 413. Every subscriber gets the latest event of each name on connect, so this bounds what one name costs them"},
    {"max_event_names", FLAG_INT, "1000", OFF(max_event_names), 0, 100000000, "event names one tenant may have; an insert of a new name past it answers 400 (every new subscriber gets the latest event of each name); 0 = no bound"},
    {"max_connections", FLAG_INT, "0", OFF(max_connections), 0, 10000000, "connections one process holds before it answers 503; 0 = as many as it may open files"},
    {"max_connections_per_ip", FLAG_INT, "0", OFF(max_connections_per_ip), 0, 10000000, "connections per client address (per process) before 429; 0 = no limit (many users share an address behind NAT)"},
    {"max_streams_per_user", FLAG_INT, "0", OFF(max_streams_per_user), 0, 10000000, "SSE streams one user may hold open (per process) before 429; 0 = no limit"},
    {"trusted_proxies", FLAG_STRING, "", OFF(trusted_proxies), 0, 0, "addresses or CIDR ranges (comma-separated) of gateways whose X-Forwarded-For names the client, for the per-address limits"},
};

#define HTTPS_DEFAULT_PORT 443

#define NFLAGS (sizeof(FLAGS) / sizeof(FLAGS[0]))

static const flag_def *flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(FLAGS[i].name) == len && strncmp(FLAGS[i].name, name, len) == 0)
            return &FLAGS[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Sets one flag from text.  `source` says where the value came from, for the message. */
static int flag_set(broker_config *cfg, const flag_def *f, const char *value, const char *source)
{
    char *field = (char *)cfg + f->offset;
    switch (f->type) {
    case FLAG_STRING: {
        char **s = (char **)field;
        char *copy = strdup(value);
        if (copy == NULL)
            return -1;
        free(*s);
        *s = copy;
        return 0;
    }
    case FLAG_BOOL:
        if (parse_bool(value, (int *)field) != 0) {
            fprintf(stderr, "broker: invalid value '%s' for --%s (%s): expected true or false\n", value, f->name, source);
            return -1;
        }
        return 0;
    case FLAG_INT: {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || isspace((unsigned char)value[0])) {
            fprintf(stderr, "broker: invalid value '%s' for --%s (%s): expected an integer\n", value, f->name, source);
            return -1;
        }
        if (v < f->min || v > f->max) {
            fprintf(stderr, "broker: value %ld for --%s (%s) is out of range %ld..%ld\n", v, f->name, source, f->min, f->max);
            return -1;
        }
        *(long *)field = v;
        return 0;
    }
    }
    return -1;
}

static void env_name(const char *flag, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "BROKER_%s", flag);
    for (size_t i = 7; i < n && i < size; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

void config_print_help(FILE *out, const char *program)
{
    fprintf(out, "Usage: %s [--flag=value ...]\n\n", program);
    fprintf(out, "Every flag also reads the environment variable BROKER_<FLAG>; a flag wins.\n\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        char env[64];
        env_name(FLAGS[i].name, env, sizeof env);
        fprintf(out, "  --%-16s %s\n  %-18s default: %s%s%s  env: %s\n", FLAGS[i].name, FLAGS[i].help, "",
                FLAGS[i].def[0] ? "" : "(empty)", FLAGS[i].def, FLAGS[i].type == FLAG_BOOL ? " (true/false)" : "",
                env);
    }
    fprintf(out, "  --%-16s %s\n", "help", "print this help and exit");
    fprintf(out, "  --%-16s %s\n", "version", "print the version and exit");
}

/* --domain: DNS names, comma-separated; no wildcard (HTTP-01 cannot prove
 * one), no IP address, no URL. */
static int check_domains(const char *list, const char *program)
{
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        int ok = len > 0 && len <= 253 && p[0] != '.' && p[0] != '-' && p[len - 1] != '.';
        int letters = 0;
        for (size_t i = 0; ok && i < len; i++) {
            char c = p[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
                letters = 1;
            else if (!(c >= '0' && c <= '9') && c != '-' && c != '.')
                ok = 0;
            else if (c == '.' && p[i + 1] == '.')
                ok = 0;
        }
        if (!ok || !letters) {
            fprintf(stderr, "%s: invalid value '%.*s' in --domain: expected DNS names separated by commas "
                            "(no wildcard, no address, no scheme), such as broker.example.com\n",
                    program, (int)len, p);
            return -1;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* The contents of a secret file, without one trailing newline (editors and
 * `echo` add it; a secret with a newline of its own is not one anyone
 * types).  NULL with the reason on stderr. */
static char *read_secret(const char *path, const char *flag, const char *program)
{
    enum { SECRET_MAX = 65536 };
    FILE *f = fopen(path, "r");
    char *text = f ? malloc(SECRET_MAX + 1) : NULL;
    size_t len = text ? fread(text, 1, SECRET_MAX + 1, f) : 0;
    int err = f ? ferror(f) : errno;
    if (f != NULL)
        fclose(f);
    if (text == NULL || err) {
        fprintf(stderr, "%s: cannot read --%s %s: %s\n", program, flag, path, strerror(err ? err : ENOMEM));
        free(text);
        return NULL;
    }
    if (len > SECRET_MAX) {
        fprintf(stderr, "%s: --%s %s is larger than %d bytes: not a secret\n", program, flag, path, SECRET_MAX);
        free(text);
        return NULL;
    }
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len > 0 && text[len - 1] == '\r')
        len--;
    text[len] = '\0';
    if (len == 0 || memchr(text, '\0', len) != NULL) {
        fprintf(stderr, "%s: --%s %s is empty or holds a NUL byte\n", program, flag, path);
        free(text);
        return NULL;
    }
    return text;
}

/* The store URI with the password of --store_password_file after its
 * user, percent-encoded as URIs want (RFC 3986 unreserved characters stay). */
static int add_store_password(broker_config *cfg, const char *password, const char *program)
{
    const char *scheme = strstr(cfg->store, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    if (at == NULL || (slash != NULL && slash < at) || memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) != NULL) {
        fprintf(stderr, "%s: --store_password_file needs a store URI that names a user and no password, such as "
                        "mongodb://broker@mongo:27017/broker?authSource=admin\n", program);
        return -1;
    }
    size_t cap = strlen(cfg->store) + 3 * strlen(password) + 2, n = (size_t)(at - cfg->store);
    char *uri = malloc(cap);
    if (uri == NULL)
        return -1;
    memcpy(uri, cfg->store, n);
    uri[n++] = ':';
    for (const unsigned char *p = (const unsigned char *)password; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
            uri[n++] = (char)*p;
        else
            n += (size_t)snprintf(uri + n, cap - n, "%%%02X", *p);
    }
    snprintf(uri + n, cap - n, "%s", at);
    free(cfg->store);
    cfg->store = uri;
    return 0;
}

/* Every *_file flag replaces its secret with the file's contents. */
static int load_secret_files(broker_config *cfg, const char *program)
{
    struct {
        const char *flag;
        char *path;
        char **target;
    } files[] = {
        {"jwt_secret_file", cfg->jwt_secret_file, &cfg->jwt_secret},
        {"admin_token_file", cfg->admin_token_file, &cfg->admin_token},
        {"store_file", cfg->store_file, &cfg->store},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (files[i].path[0] == '\0')
            continue;
        char *secret = read_secret(files[i].path, files[i].flag, program);
        if (secret == NULL)
            return -1;
        free(*files[i].target);
        *files[i].target = secret;
    }
    if (cfg->store_password_file[0] != '\0') {
        char *password = read_secret(cfg->store_password_file, "store_password_file", program);
        int rc = password ? add_store_password(cfg, password, program) : -1;
        if (password != NULL)
            explicit_bzero(password, strlen(password));
        free(password);
        return rc;
    }
    return 0;
}

/* With --auto_cert the key and chain are the ones certd keeps under --certs;
 * --key_path and --cert_path are for one's own pair. */
static int use_acme_paths(broker_config *cfg)
{
    char *chain = NULL, *key = NULL;
    if (asprintf(&chain, "%s/" CONFIG_ACME_CHAIN, cfg->certs) < 0 || asprintf(&key, "%s/" CONFIG_ACME_KEY, cfg->certs) < 0) {
        free(chain);
        return -1;
    }
    free(cfg->cert_path);
    free(cfg->key_path);
    cfg->cert_path = chain;
    cfg->key_path = key;
    return 0;
}

int config_load(broker_config *cfg, int argc, char **argv, const char *program)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NFLAGS; i++)
        if (flag_set(cfg, &FLAGS[i], FLAGS[i].def, "default") != 0)
            goto fail;
    for (size_t i = 0; i < NFLAGS; i++) {
        char env[64];
        env_name(FLAGS[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v != NULL && flag_set(cfg, &FLAGS[i], v, env) != 0)
            goto fail;
        if (v != NULL && FLAGS[i].offset == OFF(port))
            cfg->port_given = 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            config_print_help(stdout, program);
            config_free(cfg);
            return 1;
        }
        if (!strcmp(arg, "--version")) {
            printf("%s %s\n", program, BROKER_VERSION);
            config_free(cfg);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s' (flags look like --name=value; see --help)\n", program, arg);
            goto fail;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const flag_def *f = flag_find(name, len);
        if (f == NULL) {
            fprintf(stderr, "%s: unknown flag --%.*s (see --help)\n", program, (int)len, name);
            goto fail;
        }
        const char *value;
        if (eq != NULL)
            value = eq + 1;
        else if (f->type == FLAG_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "true"; /* a bare boolean flag: --secure */
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "%s: flag --%s needs a value\n", program, f->name);
            goto fail;
        }
        if (flag_set(cfg, f, value, "command line") != 0)
            goto fail;
        if (f->offset == OFF(port))
            cfg->port_given = 1;
    }
    /* The original broker's --port was for plain HTTP only: with --secure it
     * served HTTPS on 443, and its users' command lines count on that. */
    if (cfg->secure && !cfg->port_given)
        cfg->port = HTTPS_DEFAULT_PORT;
    if (cfg->secure && cfg->auto_cert && cfg->domain[0] == '\0') {
        fprintf(stderr, "%s: --domain is required with --secure=true and --auto_cert=true\n", program);
        goto fail;
    }
    if (check_domains(cfg->domain, program) != 0)
        goto fail;
    if (cfg->secure && cfg->auto_cert && use_acme_paths(cfg) != 0)
        goto fail;
    if (strcmp(cfg->log_level, "error") && strcmp(cfg->log_level, "warning") && strcmp(cfg->log_level, "info") &&
        strcmp(cfg->log_level, "debug")) {
        fprintf(stderr, "%s: invalid value '%s' for --log_level: expected error, warning, info or debug\n", program,
                cfg->log_level);
        goto fail;
    }
    if (strcmp(cfg->log_format, "text") && strcmp(cfg->log_format, "json")) {
        fprintf(stderr, "%s: invalid value '%s' for --log_format: expected text or json\n", program, cfg->log_format);
        goto fail;
    }
    if (load_secret_files(cfg, program) != 0)
        goto fail;
    if (cfg->jwt_secret[0] == '\0') {
        fprintf(stderr, "%s: --jwt_secret must not be empty\n", program);
        goto fail;
    }
    if (cfg->admin_token[0] == '\0') {
        fprintf(stderr, "%s: --admin_token must not be empty\n", program);
        goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_free(broker_config *cfg)
{
    for (size_t i = 0; i < NFLAGS; i++) {
        if (FLAGS[i].type == FLAG_STRING) {
            char **s = (char **)((char *)cfg + FLAGS[i].offset);
            free(*s);
            *s = NULL;
        }
    }
}

void config_serve_plain(broker_config *cfg)
{
    if (cfg->secure && !cfg->port_given)
        cfg->port = strtol(flag_find("port", 4)->def, NULL, 10);
    cfg->secure = 0;
    cfg->http_port = 0;
}

void config_warn_insecure(const broker_config *cfg)
{
    if (!strcmp(cfg->jwt_secret, "secret"))
        log_warn("WARNING: --jwt_secret is the default 'secret': anyone can forge tokens. Set --jwt_secret or BROKER_JWT_SECRET.");
    if (!strcmp(cfg->admin_token, "letmein"))
        log_warn("WARNING: --admin_token is the default 'letmein': anyone can manage users. Set --admin_token or BROKER_ADMIN_TOKEN.");
}
