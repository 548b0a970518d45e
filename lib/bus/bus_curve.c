/*
 * bus_curve.c - CURVE keys for the bus's sockets, and the ZAP handler that
 * decides which client keys a binding socket accepts (bus_curve.h).
 *
 * libzmq does the cryptography (CurveZMQ, with libsodium); this file only
 * loads keys, sets the sockets' options and answers ZAP requests (RFC 27).
 * The handler re-reads the allowlist at every handshake: handshakes are
 * rare (a process connecting), and a key added or removed takes effect at
 * the next one without a restart, which is what a key rotation needs.
 *
 * A client without any key never reaches ZAP (libzmq refuses the mechanism
 * mismatch first), so the handler's thread also watches each CURVE server
 * socket's monitor for failed handshakes and logs and counts those too.
 */
#include "bus_curve.h"
#include "log.h"
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "broker"
/* Contexts with a handler: the process's bus and a forwarder's own. */
#define ZAP_MAX 4
/* Server sockets whose failed handshakes one handler watches. */
#define MONITOR_MAX 8
/* Refusal lines a second at most: a refused peer reconnects again and
 * again, and must not fill the log; the counter counts them all. */
#define REFUSALS_LOGGED 10
/* How often the handler looks for new server sockets to watch (ms). */
#define ZAP_POLL_MS 100

static struct {
    int enabled;
    int insecure;
    char public_key[BUS_KEY_SIZE];
    char secret_key[BUS_KEY_SIZE];
    char *trusted;
    char certd_key[BUS_KEY_SIZE];
    metric_value *refused;
} security;

typedef struct zap_handler {
    void *context;
    void *sock;
    pthread_t thread;
    pthread_mutex_t lock;
    char *pending[MONITOR_MAX]; /* monitor endpoints not watched yet */
    int npending;
    void *monitors[MONITOR_MAX];
    int nmonitors;
    time_t second;  /* refusals are logged at most REFUSALS_LOGGED a second... */
    long refusals;  /* ...of those of this second */
} zap_handler;

static zap_handler *handlers[ZAP_MAX];
static pthread_mutex_t handlers_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- key files ----------------------------------------------------------- */

/* A Z85 key at `p` (exactly BUS_KEY_TEXT characters that decode). */
static int key_valid(const char *p, size_t len)
{
    char text[BUS_KEY_SIZE];
    unsigned char raw[32];
    if (len != BUS_KEY_TEXT)
        return 0;
    memcpy(text, p, BUS_KEY_TEXT);
    text[BUS_KEY_TEXT] = '\0';
    return zmq_z85_decode(raw, text) != NULL;
}

/* Calls fn(kind, key) for every key of the file: kind 'P' for a public key
 * (a "public-key = ..." line or a bare key), 'S' for a secret one.  0, or
 * -1 when the file cannot be read (errno set). */
static int scan_keys(const char *path, void (*fn)(char kind, const char *key, void *arg), void *arg)
{
    FILE *f = fopen(path, "r");
    char line[512];
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        char *p = line + strspn(line, " \t");
        char kind = 'P';
        if (*p == '#')
            continue;
        if (strncmp(p, "secret-key", 10) == 0)
            kind = 'S';
        if (strncmp(p, "public-key", 10) == 0 || kind == 'S') {
            char *q = strchr(p, '"');
            if (q == NULL)
                continue;
            p = q + 1;
        }
        size_t len = strcspn(p, "\"\r\n \t");
        if (key_valid(p, len)) {
            char key[BUS_KEY_SIZE];
            memcpy(key, p, BUS_KEY_TEXT);
            key[BUS_KEY_TEXT] = '\0';
            fn(kind, key, arg);
        }
    }
    fclose(f);
    return 0;
}

typedef struct key_pair_scan {
    char public_key[BUS_KEY_SIZE];
    char secret_key[BUS_KEY_SIZE];
} key_pair_scan;

static void take_pair(char kind, const char *key, void *arg)
{
    key_pair_scan *s = arg;
    memcpy(kind == 'S' ? s->secret_key : s->public_key, key, BUS_KEY_SIZE);
}

/* The one public key of a public key file (a server's). */
static int read_public_key(const char *path, char out[BUS_KEY_SIZE])
{
    key_pair_scan s = {{0}, {0}};
    if (scan_keys(path, take_pair, &s) != 0) {
        log_error("bus: cannot read the public key file %s: %s", path, strerror(errno));
        return -1;
    }
    if (s.public_key[0] == '\0') {
        log_error("bus: %s holds no public key (a line public-key = \"<40 Z85 characters>\")", path);
        return -1;
    }
    memcpy(out, s.public_key, BUS_KEY_SIZE);
    return 0;
}

typedef struct allowlist_scan {
    const char *wanted;
    int found;
    int keys;
} allowlist_scan;

static void match_key(char kind, const char *key, void *arg)
{
    allowlist_scan *s = arg;
    if (kind != 'P')
        return;
    s->keys++;
    if (strcmp(key, s->wanted) == 0)
        s->found = 1;
}

/* Looks for `key` in the allowlist (a file, or every file of a directory
 * whose name does not start with a dot).  0, or -1 when it cannot be read. */
static int allowlist_scan_all(const char *path, allowlist_scan *s)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return scan_keys(path, match_key, s);
    DIR *dir = opendir(path);
    if (dir == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        char file[4096];
        if (e->d_name[0] == '.' || snprintf(file, sizeof file, "%s/%s", path, e->d_name) >= (int)sizeof file)
            continue;
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
            scan_keys(file, match_key, s);
    }
    closedir(dir);
    return 0;
}

/* ---- start-up -------------------------------------------------------------- */

int bus_security_init(const bus_security_options *o)
{
    security.insecure = o->insecure;
    security.refused = metrics_counter("broker_bus_refused_total",
                                       "bus peers refused at the handshake: no CURVE key, or a key not in --bus_trusted_keys");
    if (o->certd_key != NULL && o->certd_key[0] != '\0' && read_public_key(o->certd_key, security.certd_key) != 0)
        return -1;
    if (o->key_file == NULL || o->key_file[0] == '\0') {
        if (o->trusted_keys != NULL && o->trusted_keys[0] != '\0') {
            log_error("bus: --bus_trusted_keys needs --bus_key_file (this process's own key pair)");
            return -1;
        }
        return 0;
    }
    key_pair_scan s = {{0}, {0}};
    struct stat st;
    if (scan_keys(o->key_file, take_pair, &s) != 0) {
        log_error("bus: cannot read --bus_key_file %s: %s", o->key_file, strerror(errno));
        return -1;
    }
    if (s.public_key[0] == '\0' || s.secret_key[0] == '\0') {
        log_error("bus: --bus_key_file %s must hold a public-key and a secret-key line (broker-keygen writes one)",
                  o->key_file);
        return -1;
    }
    char derived[BUS_KEY_SIZE];
    if (zmq_curve_public(derived, s.secret_key) != 0 || strcmp(derived, s.public_key) != 0) {
        log_error("bus: in --bus_key_file %s the public key is not the secret key's", o->key_file);
        return -1;
    }
    if (stat(o->key_file, &st) == 0 && (st.st_mode & 077) != 0)
        log_warn("bus: --bus_key_file %s can be read by other users (mode %03o): anyone who reads it can "
                 "join the bus as this process", o->key_file, (unsigned)(st.st_mode & 0777));
    if (o->trusted_keys != NULL && o->trusted_keys[0] != '\0') {
        allowlist_scan a = {"", 0, 0};
        if (allowlist_scan_all(o->trusted_keys, &a) != 0) {
            log_error("bus: cannot read --bus_trusted_keys %s: %s", o->trusted_keys, strerror(errno));
            return -1;
        }
        if ((security.trusted = strdup(o->trusted_keys)) == NULL)
            return -1;
    }
    memcpy(security.public_key, s.public_key, BUS_KEY_SIZE);
    memcpy(security.secret_key, s.secret_key, BUS_KEY_SIZE);
    security.enabled = 1;
    log_info("bus: CURVE on, this process's public key %s", security.public_key);
    return 0;
}

int bus_curve_enabled(void)
{
    return security.enabled;
}

int bus_certd_key(char out[BUS_KEY_SIZE])
{
    if (security.certd_key[0] == '\0')
        return -1;
    memcpy(out, security.certd_key, BUS_KEY_SIZE);
    return 0;
}

/* tcp://127.x.x.x, tcp://localhost, tcp://[::1], ipc:// and inproc:// stay
 * on this host. */
static int endpoint_local(const char *endpoint)
{
    if (strncmp(endpoint, "inproc://", 9) == 0 || strncmp(endpoint, "ipc://", 6) == 0)
        return 1;
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return 0;
    const char *host = endpoint + 6;
    const char *semi = strchr(host, ';'); /* "source;destination": the destination counts */
    if (semi != NULL)
        host = semi + 1;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 || strncmp(host, "[::1]:", 6) == 0;
}

static int check_clear(const char *endpoint)
{
    if (security.insecure || endpoint_local(endpoint))
        return 0;
    log_error("bus: %s is not a loopback endpoint and no CURVE keys are set: give --bus_key_file (and "
              "--bus_trusted_keys, --bus_server_key), or --bus_insecure=true to run the bus in the clear",
              endpoint);
    return -1;
}

/* ---- the ZAP handler ------------------------------------------------------- */

/* Counts a refusal, and says whether to log it (REFUSALS_LOGGED). */
static int count_refusal(zap_handler *h)
{
    time_t now = time(NULL);
    if (security.refused != NULL)
        atomic_fetch_add(security.refused, 1);
    if (now != h->second) {
        if (h->refusals > REFUSALS_LOGGED)
            log_warn("bus: %ld more refusals in a second went unlogged (broker_bus_refused_total counts them)",
                     h->refusals - REFUSALS_LOGGED);
        h->second = now;
        h->refusals = 0;
    }
    return ++h->refusals <= REFUSALS_LOGGED;
}

/* One ZAP request (RFC 27: version, request id, domain, address, identity,
 * mechanism, credentials) and its answer. */
static void zap_answer(zap_handler *h, void *sock)
{
    zmq_msg_t f[7];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 7)
            f[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n < 2) {
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        return;
    }
    char address[128] = "?", key[BUS_KEY_SIZE] = "";
    const char *status = "400", *text = "not an allowed key";
    if (n == 7) {
        size_t alen = zmq_msg_size(&f[3]) < sizeof address - 1 ? zmq_msg_size(&f[3]) : sizeof address - 1;
        memcpy(address, zmq_msg_data(&f[3]), alen);
        address[alen] = '\0';
        if (zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 && zmq_msg_size(&f[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
    }
    if (key[0] != '\0' && security.trusted != NULL) {
        allowlist_scan a = {key, 0, 0};
        if (allowlist_scan_all(security.trusted, &a) != 0)
            log_error("bus: cannot read --bus_trusted_keys %s: %s; refusing every peer", security.trusted,
                      strerror(errno));
        if (a.found)
            status = "200", text = "OK";
    }
    if (status[0] != '2' && count_refusal(h))
        log_warn("bus: refused the peer at %s with the key %s: not in --bus_trusted_keys", address,
                 key[0] ? key : "(none)");
    const void *reply[] = {"1.0", zmq_msg_data(&f[1]), status, text, status[0] == '2' ? key : "", ""};
    size_t lens[] = {3, zmq_msg_size(&f[1]), 3, strlen(text), status[0] == '2' ? strlen(key) : 0, 0};
    for (int i = 0; i < 6; i++)
        zmq_send(sock, reply[i], lens[i], i < 5 ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

/* A failed handshake on a watched server socket.  ZAP refusals are logged by
 * zap_answer(); what is left is peers that offered no CURVE at all. */
static void monitor_event(zap_handler *h, void *monitor)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, monitor, ZMQ_DONTWAIT) >= 0 && zmq_msg_recv(&addr, monitor, 0) >= 0 &&
        zmq_msg_size(&ev) >= 6) {
        uint16_t id;
        uint32_t value;
        memcpy(&id, zmq_msg_data(&ev), 2);
        memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        if ((id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) &&
            count_refusal(h))
            log_warn("bus: refused a peer on %.*s: handshake failed (0x%x: it offered no CURVE key, or expected "
                     "another server key)",
                     (int)zmq_msg_size(&addr), (const char *)zmq_msg_data(&addr), (unsigned)value);
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

/* Connects the monitors of server sockets made since the last turn. */
static void watch_pending(zap_handler *h)
{
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->npending; i++) {
        void *m = zmq_socket(h->context, ZMQ_PAIR);
        if (m != NULL && zmq_connect(m, h->pending[i]) == 0 && h->nmonitors < MONITOR_MAX)
            h->monitors[h->nmonitors++] = m;
        else if (m != NULL)
            zmq_close(m);
        free(h->pending[i]);
    }
    h->npending = 0;
    pthread_mutex_unlock(&h->lock);
}

static void *zap_run(void *arg)
{
    zap_handler *h = arg;
    for (;;) {
        watch_pending(h);
        zmq_pollitem_t items[1 + MONITOR_MAX] = {{h->sock, 0, ZMQ_POLLIN, 0}};
        for (int i = 0; i < h->nmonitors; i++)
            items[1 + i] = (zmq_pollitem_t){h->monitors[i], 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, 1 + h->nmonitors, ZAP_POLL_MS) < 0) {
            if (zmq_errno() == ETERM)
                break;
            continue;
        }
        if (items[0].revents & ZMQ_POLLIN)
            zap_answer(h, h->sock);
        for (int i = 0; i < h->nmonitors; i++)
            if (items[1 + i].revents & ZMQ_POLLIN)
                monitor_event(h, h->monitors[i]);
    }
    for (int i = 0; i < h->nmonitors; i++)
        zmq_close(h->monitors[i]);
    zmq_close(h->sock);
    return NULL;
}

/* The handler of `context`, started on first use. */
static zap_handler *zap_for(void *context)
{
    zap_handler *h = NULL;
    int linger = 0;
    pthread_mutex_lock(&handlers_lock);
    for (int i = 0; i < ZAP_MAX && h == NULL; i++)
        if (handlers[i] != NULL && handlers[i]->context == context)
            h = handlers[i];
    for (int i = 0; i < ZAP_MAX && h == NULL; i++) {
        if (handlers[i] != NULL)
            continue;
        zap_handler *n = calloc(1, sizeof *n);
        if (n == NULL)
            break;
        n->context = context;
        pthread_mutex_init(&n->lock, NULL);
        n->sock = zmq_socket(context, ZMQ_REP);
        /* Bound here, before the thread starts (pthread_create is the memory
         * barrier a socket that changes threads needs), so no handshake can
         * come before the handler is there. */
        if (n->sock == NULL || zmq_setsockopt(n->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
            zmq_bind(n->sock, ZAP_ENDPOINT) != 0 || pthread_create(&n->thread, NULL, zap_run, n) != 0) {
            log_error("bus: cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
            if (n->sock != NULL)
                zmq_close(n->sock);
            pthread_mutex_destroy(&n->lock);
            free(n);
            break;
        }
        handlers[i] = h = n;
    }
    pthread_mutex_unlock(&handlers_lock);
    return h;
}

void bus_zap_stop(void *context)
{
    zap_handler *h = NULL;
    pthread_mutex_lock(&handlers_lock);
    for (int i = 0; i < ZAP_MAX; i++)
        if (handlers[i] != NULL && handlers[i]->context == context) {
            h = handlers[i];
            handlers[i] = NULL;
        }
    pthread_mutex_unlock(&handlers_lock);
    if (h == NULL)
        return;
    pthread_join(h->thread, NULL);
    for (int i = 0; i < h->npending; i++)
        free(h->pending[i]);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Asks the handler to watch `sock`'s failed handshakes. */
static int zap_watch(zap_handler *h, void *sock)
{
    static atomic_int seq;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://bus-zap-monitor-%d", atomic_fetch_add(&seq, 1));
    if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
        return -1;
    pthread_mutex_lock(&h->lock);
    int ok = h->npending + h->nmonitors < MONITOR_MAX && (h->pending[h->npending] = strdup(ep)) != NULL;
    if (ok)
        h->npending++;
    pthread_mutex_unlock(&h->lock);
    return ok ? 0 : -1;
}

/* ---- sockets ---------------------------------------------------------------- */

int bus_curve_server(void *context, void *sock, const char *endpoint)
{
    int one = 1;
    if (strncmp(endpoint, "inproc://", 9) == 0)
        return 0;
    if (!security.enabled)
        return check_clear(endpoint);
    if (security.trusted == NULL) {
        log_error("bus: binding %s needs --bus_trusted_keys (the client keys it accepts)", endpoint);
        return -1;
    }
    zap_handler *h = zap_for(context);
    if (h == NULL || zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN)) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, security.secret_key, BUS_KEY_TEXT) != 0) {
        log_error("bus: cannot make %s a CURVE server: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    if (zap_watch(h, sock) != 0)
        log_warn("bus: peers without a key on %s are refused but not logged", endpoint);
    return 0;
}

int bus_curve_client(void *sock, const char *endpoint, const char *server_key_file)
{
    char server[BUS_KEY_SIZE];
    if (strncmp(endpoint, "inproc://", 9) == 0)
        return 0;
    if (!security.enabled)
        return check_clear(endpoint);
    if (server_key_file == NULL || server_key_file[0] == '\0') {
        log_error("bus: connecting to %s needs the server's public key (--bus_server_key, or "
                  "--bus_control_key for certd)", endpoint);
        return -1;
    }
    if (read_public_key(server_key_file, server) != 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, BUS_KEY_TEXT) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, security.public_key, BUS_KEY_TEXT) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, security.secret_key, BUS_KEY_TEXT) != 0) {
        log_error("bus: cannot make the link to %s a CURVE client: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

int bus_server_key_for(const char *files, int index, char *out, size_t size)
{
    int count = 1;
    out[0] = '\0';
    if (files == NULL || files[0] == '\0')
        return 0;
    for (const char *p = files; *p; p++)
        count += *p == ',';
    if (count == 1)
        index = 0;
    const char *p = files;
    for (int i = 0; i < index && p != NULL; i++) {
        p = strchr(p, ',');
        p = p ? p + 1 : NULL;
    }
    if (p == NULL) {
        log_error("bus: --bus_server_key names %d files for more endpoints: give one for all, or one per endpoint",
                  count);
        return -1;
    }
    size_t len = strcspn(p, ",");
    while (len > 0 && *p == ' ')
        p++, len--;
    if (len >= size)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

/* ---- broker-keygen ---------------------------------------------------------- */

static int write_file(const char *path, mode_t mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) {
        fprintf(stderr, "broker-keygen: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    if (close(fd) != 0 || !ok) {
        fprintf(stderr, "broker-keygen: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int bus_keygen(const char *path)
{
    char pub[BUS_KEY_SIZE], sec[BUS_KEY_SIZE], text[256], pub_path[4096];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "broker-keygen: libzmq makes no CURVE keys (built without libsodium?): %s\n",
                zmq_strerror(zmq_errno()));
        return -1;
    }
    if (snprintf(pub_path, sizeof pub_path, "%s.pub", path) >= (int)sizeof pub_path)
        return -1;
    snprintf(text, sizeof text,
             "# a broker bus key pair: keep this file secret (--bus_key_file)\npublic-key = \"%s\"\nsecret-key = \"%s\"\n",
             pub, sec);
    if (write_file(path, 0600, text) != 0)
        return -1;
    explicit_bzero(sec, sizeof sec);
    explicit_bzero(text, sizeof text);
    snprintf(text, sizeof text,
             "# a broker bus public key: for --bus_trusted_keys and --bus_server_key\npublic-key = \"%s\"\n", pub);
    if (write_file(pub_path, 0644, text) != 0) {
        unlink(path);
        return -1;
    }
    printf("%s\n", pub);
    return 0;
}
