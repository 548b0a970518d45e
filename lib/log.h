/*
 * log.h - logging for every service, on yder.
 *
 * One call, log_init(), at start; then log_error/log_warn/log_info/log_debug
 * anywhere, from any thread.  Lines go to stderr with the service name.
 * Never log a password, a hash or a token.
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <yder.h>

/* level: "error", "warning", "info" or "debug".  Returns 0, -1 on a bad level. */
int log_init(const char *service, const char *level);
void log_close(void);

#define log_error(...) y_log_message(Y_LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) y_log_message(Y_LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) y_log_message(Y_LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) y_log_message(Y_LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
