/*
 * test_config.c - the flag table: defaults, the two value forms, booleans,
 * BROKER_<FLAG> environment variables, precedence, bad values and --help.
 *
 * Every BROKER_<FLAG> variable is cleared before each case, so the cases do
 * not depend on the environment ctest runs in.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "config.h"
#include "log.h"

static const char *const FLAG_ENV[] = {
    "BROKER_ORIGIN",      "BROKER_PORT",        "BROKER_JWT_EXPIRY",   "BROKER_JWT_SECRET",    "BROKER_SECURE",
    "BROKER_AUTO_CERT",   "BROKER_KEY_PATH",    "BROKER_CERT_PATH",    "BROKER_CERTS",         "BROKER_DB",
    "BROKER_DOMAIN",      "BROKER_ADMIN_TOKEN", "BROKER_STORE",        "BROKER_MAX_BODY",      "BROKER_KEEPALIVE",
    "BROKER_NTP_SERVERS", "BROKER_ACME_DIRECTORY", "BROKER_LOG_LEVEL", "BROKER_BIND",          "BROKER_BUS_PUBLISH",
    "BROKER_BUS_SUBSCRIBE", "BROKER_SSE_QUEUE_MAX", "BROKER_STREAM_WORKERS", "BROKER_JWT_SECRET_FILE",
    "BROKER_ADMIN_TOKEN_FILE", "BROKER_STORE_FILE", "BROKER_STORE_PASSWORD_FILE",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof FLAG_ENV / sizeof FLAG_ENV[0]; i++)
        unsetenv(FLAG_ENV[i]);
}

/* config_load with argv = {"broker", args..., NULL}; `args` is NULL-terminated. */
static int load_args(broker_config *cfg, const char *const *args)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "broker";
    for (; *args != NULL && argc < 63; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return config_load(cfg, argc, argv, "broker");
}

#define LOAD(cfg, ...) load_args((cfg), (const char *const[]){__VA_ARGS__, NULL})

/* Loads args expecting -1; returns what was printed on stderr (malloc'd). */
static char *load_fail_args(const char *const *args)
{
    broker_config cfg;
    capture cap;
    capture_begin(&cap, 2);
    int rc = load_args(&cfg, args);
    char *err = capture_end(&cap);
    if (rc != -1) {
        fprintf(stderr, "  config_load returned %d, want -1\n", rc);
        check_case_failures++;
        if (rc == 0)
            config_free(&cfg);
    }
    return err;
}

/* config_load(args) fails and its message contains `needle`. */
#define CHECK_LOAD_FAILS(needle, ...)                                                                                  \
    do {                                                                                                               \
        char *err_ = load_fail_args((const char *const[]){__VA_ARGS__, NULL});                                         \
        CHECK_CONTAINS(err_, needle);                                                                                  \
        free(err_);                                                                                                    \
    } while (0)

static void case_defaults(void)
{
    broker_config cfg;
    clear_env();
    CHECK_INT(load_args(&cfg, (const char *const[]){NULL}), 0);
    CHECK_STR(cfg.origin, "*");
    CHECK_INT(cfg.port, 8080);
    CHECK_INT(cfg.jwt_expiry, 86400);
    CHECK_STR(cfg.jwt_secret, "secret");
    CHECK_INT(cfg.secure, 0);
    CHECK_INT(cfg.auto_cert, 1);
    CHECK_STR(cfg.key_path, "certs/private_key.pem");
    CHECK_STR(cfg.cert_path, "certs/chain.pem");
    CHECK_STR(cfg.certs, "certs");
    CHECK_STR(cfg.db, "db");
    CHECK_STR(cfg.domain, "");
    CHECK_STR(cfg.admin_token, "letmein");
    CHECK_INT(cfg.max_body, 1048576);
    CHECK_INT(cfg.keepalive, 15);
    CHECK_STR(cfg.store, "");
    CHECK_STR(cfg.log_level, "info");
    CHECK(cfg.ntp_servers != NULL && cfg.ntp_servers[0] != '\0');
    CHECK(cfg.acme_directory != NULL && strncmp(cfg.acme_directory, "https://", 8) == 0);
    config_free(&cfg);
    CHECK(cfg.origin == NULL && cfg.jwt_secret == NULL && cfg.domain == NULL);
}

static void case_value_forms(void)
{
    broker_config cfg;
    clear_env();
    CHECK_INT(LOAD(&cfg, "--port=9000", "--jwt_expiry", "60", "--origin=https://app.example.com", "--jwt_secret",
                   "xTJEX234$##$", "--admin_token=23ce4234@123$", "--db", "/tmp/broker-db", "--certs=/var/certs",
                   "--key_path", "k.pem", "--cert_path=c.pem", "--domain=broker.example.com", "--max_body=4096",
                   "--keepalive", "30"),
              0);
    CHECK_INT(cfg.port, 9000);
    CHECK_INT(cfg.jwt_expiry, 60);
    CHECK_STR(cfg.origin, "https://app.example.com");
    CHECK_STR(cfg.jwt_secret, "xTJEX234$##$");
    CHECK_STR(cfg.admin_token, "23ce4234@123$");
    CHECK_STR(cfg.db, "/tmp/broker-db");
    CHECK_STR(cfg.certs, "/var/certs");
    CHECK_STR(cfg.key_path, "k.pem");
    CHECK_STR(cfg.cert_path, "c.pem");
    CHECK_STR(cfg.domain, "broker.example.com");
    CHECK_INT(cfg.max_body, 4096);
    CHECK_INT(cfg.keepalive, 30);
    config_free(&cfg);

    /* Only the first '=' separates: the value keeps the rest. */
    CHECK_INT(LOAD(&cfg, "--jwt_secret=a=b=c"), 0);
    CHECK_STR(cfg.jwt_secret, "a=b=c");
    config_free(&cfg);

    /* A value may start with '-' in the separate form (it is not "--"). */
    CHECK_INT(LOAD(&cfg, "--origin", "-x"), 0);
    CHECK_STR(cfg.origin, "-x");
    config_free(&cfg);

    /* The last occurrence wins. */
    CHECK_INT(LOAD(&cfg, "--port=1", "--port", "2"), 0);
    CHECK_INT(cfg.port, 2);
    config_free(&cfg);

    /* Range ends are accepted. */
    CHECK_INT(LOAD(&cfg, "--port=1"), 0);
    CHECK_INT(cfg.port, 1);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--port=65535"), 0);
    CHECK_INT(cfg.port, 65535);
    config_free(&cfg);
}

static void case_bool_forms(void)
{
    broker_config cfg;
    clear_env();
    /* Bare flag at the end. */
    CHECK_INT(LOAD(&cfg, "--domain=b.example.com", "--secure"), 0);
    CHECK_INT(cfg.secure, 1);
    config_free(&cfg);
    /* Bare flag followed by another flag. */
    CHECK_INT(LOAD(&cfg, "--secure", "--domain", "b.example.com"), 0);
    CHECK_INT(cfg.secure, 1);
    CHECK_STR(cfg.domain, "b.example.com");
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure=true", "--domain=b.example.com"), 0);
    CHECK_INT(cfg.secure, 1);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure=false"), 0);
    CHECK_INT(cfg.secure, 0);
    config_free(&cfg);
    /* Separate value form. */
    CHECK_INT(LOAD(&cfg, "--secure", "false"), 0);
    CHECK_INT(cfg.secure, 0);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure", "true", "--auto_cert", "false"), 0);
    CHECK_INT(cfg.secure, 1);
    CHECK_INT(cfg.auto_cert, 0);
    config_free(&cfg);
    /* The other spellings the parser documents. */
    CHECK_INT(LOAD(&cfg, "--auto_cert=0"), 0);
    CHECK_INT(cfg.auto_cert, 0);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--auto_cert=no", "--auto_cert=1"), 0);
    CHECK_INT(cfg.auto_cert, 1);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--auto_cert=FALSE"), 0);
    CHECK_INT(cfg.auto_cert, 0);
    config_free(&cfg);
}

static void case_env(void)
{
    broker_config cfg;
    clear_env();
    setenv("BROKER_PORT", "9100", 1);
    setenv("BROKER_JWT_SECRET", "from-env", 1);
    setenv("BROKER_JWT_EXPIRY", "120", 1);
    setenv("BROKER_ADMIN_TOKEN", "env-admin", 1);
    setenv("BROKER_ORIGIN", "https://env.example.com", 1);
    setenv("BROKER_SECURE", "true", 1);
    setenv("BROKER_AUTO_CERT", "false", 1);
    setenv("BROKER_DB", "/env/db", 1);
    setenv("BROKER_MAX_BODY", "2048", 1);
    setenv("BROKER_KEEPALIVE", "5", 1);
    CHECK_INT(load_args(&cfg, (const char *const[]){NULL}), 0);
    CHECK_INT(cfg.port, 9100);
    CHECK_STR(cfg.jwt_secret, "from-env");
    CHECK_INT(cfg.jwt_expiry, 120);
    CHECK_STR(cfg.admin_token, "env-admin");
    CHECK_STR(cfg.origin, "https://env.example.com");
    CHECK_INT(cfg.secure, 1);
    CHECK_INT(cfg.auto_cert, 0);
    CHECK_STR(cfg.db, "/env/db");
    CHECK_INT(cfg.max_body, 2048);
    CHECK_INT(cfg.keepalive, 5);
    config_free(&cfg);

    /* A flag wins over the environment, in both forms. */
    CHECK_INT(LOAD(&cfg, "--port", "9200", "--jwt_secret=from-flag", "--secure=false"), 0);
    CHECK_INT(cfg.port, 9200);
    CHECK_STR(cfg.jwt_secret, "from-flag");
    CHECK_INT(cfg.secure, 0);
    CHECK_STR(cfg.admin_token, "env-admin"); /* untouched by flags: still the env's */
    config_free(&cfg);

    /* A bad environment value is refused and named. */
    clear_env();
    setenv("BROKER_PORT", "abc", 1);
    CHECK_LOAD_FAILS("--port", "--db=x");
    CHECK_LOAD_FAILS("BROKER_PORT", "--db=x");
    clear_env();
    setenv("BROKER_SECURE", "maybe", 1);
    CHECK_LOAD_FAILS("--secure", "--db=x");
    clear_env();
}

static void case_bad_values(void)
{
    clear_env();
    CHECK_LOAD_FAILS("--port", "--port=abc");
    CHECK_LOAD_FAILS("--port", "--port", "abc");
    CHECK_LOAD_FAILS("--port", "--port=0");
    CHECK_LOAD_FAILS("--port", "--port=70000");
    CHECK_LOAD_FAILS("--port", "--port=65536");
    CHECK_LOAD_FAILS("--port", "--port=80x");
    CHECK_LOAD_FAILS("--port", "--port=");
    CHECK_LOAD_FAILS("--port", "--port= 80");
    CHECK_LOAD_FAILS("--port", "--port=99999999999999999999999");
    CHECK_LOAD_FAILS("--jwt_expiry", "--jwt_expiry=-1");
    CHECK_LOAD_FAILS("--jwt_expiry", "--jwt_expiry=0");
    CHECK_LOAD_FAILS("--max_body", "--max_body=0");
    CHECK_LOAD_FAILS("--keepalive", "--keepalive=0");
    CHECK_LOAD_FAILS("--secure", "--secure=maybe");
    CHECK_LOAD_FAILS("--secure", "--secure", "maybe");
    CHECK_LOAD_FAILS("--secure", "--secure=");
    CHECK_LOAD_FAILS("--log_level", "--log_level=loud");
    CHECK_LOAD_FAILS("--jwt_secret", "--jwt_secret=");
    CHECK_LOAD_FAILS("--admin_token", "--admin_token=");
    /* Unknown flags, stray arguments, a missing value at the end. */
    CHECK_LOAD_FAILS("--nope", "--nope=1");
    CHECK_LOAD_FAILS("--nope", "--nope");
    CHECK_LOAD_FAILS("--porty", "--porty=1");
    CHECK_LOAD_FAILS("--por", "--por=1");
    CHECK_LOAD_FAILS("stray", "stray");
    CHECK_LOAD_FAILS("-port", "-port=1");
    CHECK_LOAD_FAILS("--port", "--db=x", "--port");
    CHECK_LOAD_FAILS("--jwt_secret", "--jwt_secret");
    /* --secure with ACME needs a domain to certify. */
    CHECK_LOAD_FAILS("--domain", "--secure");
    CHECK_LOAD_FAILS("--domain", "--secure=true", "--auto_cert=true");
}

static void case_help(void)
{
    broker_config cfg;
    capture cap;
    clear_env();
    capture_begin(&cap, 1);
    int rc = LOAD(&cfg, "--help");
    char *out = capture_end(&cap);
    CHECK_INT(rc, 1);
    static const char *const names[] = {"--origin",  "--port",   "--jwt_expiry", "--jwt_secret", "--secure",
                                        "--auto_cert", "--key_path", "--cert_path", "--certs",      "--db",
                                        "--domain",  "--admin_token", "--max_body", "--keepalive", "--help"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK_CONTAINS(out, names[i]);
    CHECK_CONTAINS(out, "8080");
    CHECK_CONTAINS(out, "86400");
    CHECK_CONTAINS(out, "letmein");
    CHECK_CONTAINS(out, "certs/private_key.pem");
    CHECK_CONTAINS(out, "BROKER_JWT_SECRET");
    CHECK_CONTAINS(out, "BROKER_PORT");
    free(out);

    /* --help wins even after other flags, and -h is the same. */
    capture_begin(&cap, 1);
    rc = LOAD(&cfg, "--port=1", "-h");
    out = capture_end(&cap);
    CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "--port");
    free(out);

    /* config_print_help alone prints the same table. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (f != NULL) {
        config_print_help(f, "broker-test");
        fclose(f);
        CHECK_CONTAINS(buf, "broker-test");
        CHECK_CONTAINS(buf, "--jwt_expiry");
        free(buf);
    }
}

static void case_warn_insecure(void)
{
    broker_config cfg;
    capture cap;
    clear_env();
    int rc = load_args(&cfg, (const char *const[]){NULL});
    CHECK_INT(rc, 0);
    if (rc != 0)
        return;
    capture_begin(&cap, 2);
    config_warn_insecure(&cfg);
    char *err = capture_end(&cap);
    CHECK_CONTAINS(err, "jwt_secret");
    CHECK_CONTAINS(err, "admin_token");
    free(err);
    config_free(&cfg);

    rc = LOAD(&cfg, "--jwt_secret=s3cr3t-long", "--admin_token=t0ken-long");
    CHECK_INT(rc, 0);
    if (rc != 0)
        return;
    capture_begin(&cap, 2);
    config_warn_insecure(&cfg);
    err = capture_end(&cap);
    CHECK(strstr(err, "jwt_secret") == NULL);
    CHECK(strstr(err, "admin_token") == NULL);
    free(err);
    config_free(&cfg);
}

/* The original broker's production line (--secure, no --port) serves HTTPS on
 * 443 and plain HTTP on 80; a given port, from a flag or the environment, wins. */
static void case_secure_port(void)
{
    broker_config cfg;
    clear_env();
    CHECK_INT(LOAD(&cfg, "--secure=true", "--domain=broker.example.com"), 0);
    CHECK_INT(cfg.port, 443);
    CHECK_INT(cfg.http_port, -1); /* the door reads -1 as 80 with --secure */
    CHECK_INT(cfg.port_given, 0);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure", "--domain=broker.example.com", "--port", "8443"), 0);
    CHECK_INT(cfg.port, 8443);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--port=8080", "--secure", "--auto_cert=false"), 0);
    CHECK_INT(cfg.port, 8080);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure=false"), 0);
    CHECK_INT(cfg.port, 8080);
    config_free(&cfg);
    setenv("BROKER_SECURE", "true", 1);
    setenv("BROKER_AUTO_CERT", "false", 1);
    CHECK_INT(LOAD(&cfg, "--log_level=info"), 0);
    CHECK_INT(cfg.port, 443);
    config_free(&cfg);
    setenv("BROKER_PORT", "9443", 1);
    CHECK_INT(LOAD(&cfg, "--log_level=info"), 0);
    CHECK_INT(cfg.port, 9443);
    config_free(&cfg);
    clear_env();

    /* broker-certd and broker-bus serve plain HTTP whatever --secure says. */
    CHECK_INT(LOAD(&cfg, "--secure", "--domain=broker.example.com"), 0);
    config_serve_plain(&cfg);
    CHECK_INT(cfg.secure, 0);
    CHECK_INT(cfg.port, 8080);
    CHECK_INT(cfg.http_port, 0);
    config_free(&cfg);
    CHECK_INT(LOAD(&cfg, "--secure", "--domain=broker.example.com", "--port=8085"), 0);
    config_serve_plain(&cfg);
    CHECK_INT(cfg.port, 8085);
    config_free(&cfg);
}

/* Writes `text` to a new temporary file; its path (malloc'd). */
static char *secret_file(const char *text)
{
    char *path = strdup("/tmp/broker-test-secret-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        fprintf(stderr, "  cannot write a secret file\n");
        check_case_failures++;
    }
    if (fd >= 0)
        close(fd);
    return path;
}

static void case_secret_files(void)
{
    broker_config cfg;
    char *jwt = secret_file("from-a-file\n"), *admin = secret_file("admin from file\r\n"),
         *store = secret_file("mongodb://u:p@mongo:27017/broker"), *password = secret_file("p@ss:w/rd%\n"),
         *empty = secret_file("");
    char arg_jwt[128], arg_admin[128], arg_store[128], arg_password[128], arg_empty[128];
    snprintf(arg_jwt, sizeof arg_jwt, "--jwt_secret_file=%s", jwt);
    snprintf(arg_admin, sizeof arg_admin, "--admin_token_file=%s", admin);
    snprintf(arg_store, sizeof arg_store, "--store_file=%s", store);
    snprintf(arg_password, sizeof arg_password, "--store_password_file=%s", password);
    snprintf(arg_empty, sizeof arg_empty, "--jwt_secret_file=%s", empty);
    clear_env();
    /* The file replaces the flag's value, whatever the order. */
    int rc = LOAD(&cfg, arg_jwt, "--jwt_secret=on-the-command-line", arg_admin, arg_store);
    CHECK_INT(rc, 0);
    if (rc == 0) {
        CHECK_STR(cfg.jwt_secret, "from-a-file");
        CHECK_STR(cfg.admin_token, "admin from file");
        CHECK_STR(cfg.store, "mongodb://u:p@mongo:27017/broker");
        config_free(&cfg);
    }
    /* The password goes after the URI's user, percent-encoded. */
    rc = LOAD(&cfg, "--store=mongodb://broker@mongo:27017/broker?authSource=admin&tls=true", arg_password);
    CHECK_INT(rc, 0);
    if (rc == 0) {
        CHECK_STR(cfg.store, "mongodb://broker:p%40ss%3Aw%2Frd%25@mongo:27017/broker?authSource=admin&tls=true");
        config_free(&cfg);
    }
    CHECK_LOAD_FAILS("store_password_file", "--store=mongodb://mongo:27017/broker", arg_password);
    CHECK_LOAD_FAILS("store_password_file", "--store=mongodb://u:p@mongo:27017/broker", arg_password);
    CHECK_LOAD_FAILS("jwt_secret_file", arg_empty);
    CHECK_LOAD_FAILS("admin_token_file", "--admin_token_file=/nonexistent/secret");
    for (char **p = (char *[]){jwt, admin, store, password, empty, NULL}; *p != NULL; p++) {
        unlink(*p);
        free(*p);
    }
}

int main(void)
{
    log_init("test_config", "warning", NULL);
    RUN_CASE(case_defaults);
    RUN_CASE(case_value_forms);
    RUN_CASE(case_bool_forms);
    RUN_CASE(case_env);
    RUN_CASE(case_secure_port);
    RUN_CASE(case_bad_values);
    RUN_CASE(case_help);
    RUN_CASE(case_warn_insecure);
    RUN_CASE(case_secret_files);
    log_close();
    return check_summary();
}
