/*
 * event_name.h - what an event's name may be, for the insert that names it
 * and for the stream filter that asks for it.
 *
 * A name is 1 to 256 bytes without control characters.  Names starting with
 * '$' are the server's own (the stream's `$presence` frames): an insert may
 * not use one, and a filter that asks for one asks for what can never come.
 */
#ifndef BROKER_EVENT_NAME_H
#define BROKER_EVENT_NAME_H

#include <stddef.h>

#define EVENT_NAME_MAX 256
#define EVENT_NAME_RESERVED '$'

/* NULL when `name` (len bytes, no NUL inside) may be inserted; else why not,
 * a static sentence that names the field "event". */
const char *event_name_check(const char *name, size_t len);

/* The same for the part of a name before a filter's '*': it may be empty
 * (every name) and at most EVENT_NAME_MAX - 1 bytes long, since a name that
 * matches has at least one more. */
const char *event_prefix_check(const char *prefix, size_t len);

#endif
