/*
 * log.c - yder set up once for the process, every line to stderr:
 *   2026-11-23T07:12:00Z broker INFO: message
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void log_to_stderr(void *cls, const char *app, const time_t date, const unsigned long level,
                          const char *message)
{
    (void)cls;
    struct tm tm;
    char stamp[32];
    const char *name = level == Y_LOG_LEVEL_ERROR     ? "ERROR"
                       : level == Y_LOG_LEVEL_WARNING ? "WARNING"
                       : level == Y_LOG_LEVEL_INFO    ? "INFO"
                                                      : "DEBUG";
    gmtime_r(&date, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s %s %s: %s\n", stamp, app, name, message);
}

int log_init(const char *service, const char *level)
{
    unsigned long lvl;
    if (level == NULL || strcmp(level, "info") == 0)
        lvl = Y_LOG_LEVEL_INFO;
    else if (strcmp(level, "error") == 0)
        lvl = Y_LOG_LEVEL_ERROR;
    else if (strcmp(level, "warning") == 0 || strcmp(level, "warn") == 0)
        lvl = Y_LOG_LEVEL_WARNING;
    else if (strcmp(level, "debug") == 0)
        lvl = Y_LOG_LEVEL_DEBUG;
    else
        return -1;
    if (!y_init_logs(service, Y_LOG_MODE_CALLBACK, lvl, NULL, NULL))
        return -1;
    return y_set_logs_callback(log_to_stderr, NULL, NULL) ? 0 : -1;
}

void log_close(void)
{
    y_close_logs();
}
