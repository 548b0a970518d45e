/*
 * event_name.c - the rule for event names (event_name.h).
 */
#include "event_name.h"

static const char *check_bytes(const char *s, size_t len)
{
    if (len > 0 && s[0] == EVENT_NAME_RESERVED)
        return "event names starting with '$' are reserved for the server";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return "event must not contain control characters";
    }
    return NULL;
}

const char *event_name_check(const char *name, size_t len)
{
    if (len == 0 || len > EVENT_NAME_MAX)
        return "event must be 1 to 256 bytes";
    return check_bytes(name, len);
}

const char *event_prefix_check(const char *prefix, size_t len)
{
    if (len >= EVENT_NAME_MAX)
        return "an event prefix must be at most 255 bytes";
    return check_bytes(prefix, len);
}
