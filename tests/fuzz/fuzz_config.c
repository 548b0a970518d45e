/*
 * fuzz_config.c - libFuzzer target for the flag parser.
 *
 * The input is split at NUL bytes into argv (at most 32 arguments) and given
 * to config_load.  Properties: no crash, no leak (ASan), a result of -1, 0 or
 * 1, and on success every numeric flag within its documented range and the
 * mandatory strings non-empty.  config_load prints to stdout (--help) and
 * stderr (bad flags); both go to /dev/null during the call, so a crash report
 * from inside config_load is printed by re-running the saved input.
 */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "REQUIRE failed %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#define MAX_ARGS 32

static int devnull = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    devnull = open("/dev/null", O_WRONLY);
    /* The environment must not decide the outcome. */
    static const char *const env[] = {"BROKER_PORT", "BROKER_SECURE", "BROKER_AUTO_CERT", "BROKER_DOMAIN",
                                      "BROKER_JWT_SECRET", "BROKER_ADMIN_TOKEN", "BROKER_LOG_LEVEL"};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
        unsetenv(env[i]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "broker";
    for (size_t start = 0; start <= size && argc <= MAX_ARGS;) {
        argv[argc++] = copy + start;
        start += strlen(copy + start) + 1;
    }
    argv[argc] = NULL;

    broker_config cfg;
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2);
    if (devnull >= 0) {
        dup2(devnull, 1);
        dup2(devnull, 2);
    }
    int rc = config_load(&cfg, argc, argv, "broker");
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);

    REQUIRE(rc == -1 || rc == 0 || rc == 1);
    if (rc == 0) {
        REQUIRE(cfg.port >= 1 && cfg.port <= 65535);
        REQUIRE(cfg.jwt_expiry >= 1);
        REQUIRE(cfg.max_body >= 64);
        REQUIRE(cfg.keepalive >= 1);
        REQUIRE(cfg.secure == 0 || cfg.secure == 1);
        REQUIRE(cfg.auto_cert == 0 || cfg.auto_cert == 1);
        REQUIRE(cfg.jwt_secret != NULL && cfg.jwt_secret[0] != '\0');
        REQUIRE(cfg.admin_token != NULL && cfg.admin_token[0] != '\0');
        REQUIRE(!(cfg.secure && cfg.auto_cert) || cfg.domain[0] != '\0');
        config_free(&cfg);
    }
    free(copy);
    return 0;
}
