/*
 * log.c - yder set up once for the process.
 */
#include "log.h"

#include <string.h>

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
    return y_init_logs(service, Y_LOG_MODE_CONSOLE, lvl, NULL, NULL) ? 0 : -1;
}

void log_close(void)
{
    y_close_logs();
}
