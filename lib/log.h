/*
 * log.h - logging for every service, on yder.
 *
 * One call, log_init(), at start; then log_error/log_warn/log_info/log_debug
 * anywhere, from any thread.  Lines go to stderr with the service name, as
 * text or, with --log_format=json, one JSON object per line.  A thread that
 * serves a request names it with log_set_request_id(), and every line it
 * writes meanwhile carries that id (the X-Request-Id of the answer), so an
 * operator can follow one request through the log.
 * Never log a password, a hash or a token.
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <yder.h>

/* level: "error", "warning", "info" or "debug"; format: "text" or "json"
 * (NULL = text).  Returns 0, -1 on a bad level or format. */
int log_init(const char *service, const char *level, const char *format);
void log_close(void);

/* The calling thread's current request id, copied; NULL or "" clears it. */
void log_set_request_id(const char *id);
/* The calling thread's current request id, "" when none. */
const char *log_request_id(void);

#define log_error(...) y_log_message(Y_LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) y_log_message(Y_LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) y_log_message(Y_LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) y_log_message(Y_LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
