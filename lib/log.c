/*
 * log.c - yder set up once for the process, every line to stderr:
 *   text: 2026-11-23T07:12:00Z broker INFO: message [request_id=...]
 *   json: {"time":"2026-11-23T07:12:00Z","service":"broker","level":"info",
 *          "message":"...","request_id":"..."}
 * JSON lines are encoded by jansson, so a message quoting client input stays
 * one valid object on one line.
 */
#include "http.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int log_json;
static __thread char request_id[HTTP_REQUEST_ID_MAX + 1];

void log_set_request_id(const char *id)
{
    if (id == NULL)
        id = "";
    snprintf(request_id, sizeof request_id, "%s", id);
}

const char *log_request_id(void)
{
    return request_id;
}

static const char *level_name(unsigned long level)
{
    return level == Y_LOG_LEVEL_ERROR     ? "error"
           : level == Y_LOG_LEVEL_WARNING ? "warning"
           : level == Y_LOG_LEVEL_INFO    ? "info"
                                          : "debug";
}

static void log_write_json(const char *stamp, const char *app, unsigned long level, const char *message)
{
    json_t *line = json_pack("{s:s,s:s,s:s,s:s}", "time", stamp, "service", app, "level", level_name(level),
                             "message", message);
    if (line != NULL && request_id[0])
        json_object_set_new(line, "request_id", json_string(request_id));
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(line);
    if (text == NULL) { /* a message that is not UTF-8: say so rather than lose the line */
        fprintf(stderr, "{\"time\":\"%s\",\"service\":\"broker\",\"level\":\"error\","
                        "\"message\":\"a log message could not be encoded as JSON\"}\n", stamp);
        return;
    }
    fprintf(stderr, "%s\n", text);
    free(text);
}

static void log_to_stderr(void *cls, const char *app, const time_t date, const unsigned long level,
                          const char *message)
{
    (void)cls;
    struct tm tm;
    char stamp[32];
    gmtime_r(&date, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (log_json) {
        log_write_json(stamp, app, level, message);
        return;
    }
    char upper[8];
    const char *name = level_name(level);
    size_t i = 0;
    for (; name[i] && i < sizeof upper - 1; i++)
        upper[i] = (char)(name[i] - 'a' + 'A');
    upper[i] = 0;
    if (request_id[0])
        fprintf(stderr, "%s %s %s: %s [request_id=%s]\n", stamp, app, upper, message, request_id);
    else
        fprintf(stderr, "%s %s %s: %s\n", stamp, app, upper, message);
}

int log_init(const char *service, const char *level, const char *format)
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
    if (format == NULL || strcmp(format, "text") == 0)
        log_json = 0;
    else if (strcmp(format, "json") == 0)
        log_json = 1;
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
