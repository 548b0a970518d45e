/*
 * console.h - the web console (static pages compiled into the binary), served
 * at /console/ by the user service unless --console=false.
 */
#ifndef BROKER_CONSOLE_H
#define BROKER_CONSOLE_H

#include "runtime.h"

/* Adds GET /console and GET /console/<file> to `s` when --console is on. */
int console_add_routes(http_server *s, broker_runtime *rt);

#endif
