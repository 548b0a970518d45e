/*
 * console.c - the web console at /console/.
 *
 * A developer logs in, sees the tenant's latest event per name, watches
 * events arrive and inserts some; with the admin token, manages users.  The
 * page is static HTML, CSS and an ES module built on the JS client
 * (clients/js), all linked into the binary (console_data.S), so a broker
 * serves its console with nothing on disk and the page always matches the
 * server it came from.  The page calls the API on its own origin, which is
 * why it lives with the user service: behind a gateway, /console/ is routed
 * where /login is.
 *
 * `GET /console` answers 308 to `/console/`, so that the page's relative
 * URLs ("./console.js") resolve under /console/.  --console=false leaves the
 * routes out (404).  The strict Content-Security-Policy is possible because
 * the page has no inline script or style.
 */
#include "console.h"

#include <string.h>

extern const unsigned char console_index_html[], console_index_html_end[];
extern const unsigned char console_js[], console_js_end[];
extern const unsigned char console_css[], console_css_end[];
extern const unsigned char console_client_js[], console_client_js_end[];

typedef struct console_file {
    const char *name;
    const char *content_type;
    const unsigned char *start, *end;
} console_file;

static const console_file FILES[] = {
    {"", "text/html; charset=utf-8", console_index_html, console_index_html_end},
    {"index.html", "text/html; charset=utf-8", console_index_html, console_index_html_end},
    {"console.js", "text/javascript; charset=utf-8", console_js, console_js_end},
    {"console.css", "text/css; charset=utf-8", console_css, console_css_end},
    {"broker-client.js", "text/javascript; charset=utf-8", console_client_js, console_client_js_end},
};

#define CONSOLE_PREFIX "/console/"

static int console_get(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    (void)ctx;
    const char *path = req->url_path;
    if (strcmp(path, "/console") == 0) {
        ulfius_set_empty_body_response(resp, 308);
        u_map_put(resp->map_header, "Location", CONSOLE_PREFIX);
        http_count_status(308);
        return U_CALLBACK_COMPLETE;
    }
    const char *name = strncmp(path, CONSOLE_PREFIX, strlen(CONSOLE_PREFIX)) == 0 ? path + strlen(CONSOLE_PREFIX) : NULL;
    for (size_t i = 0; name != NULL && i < sizeof FILES / sizeof FILES[0]; i++) {
        const console_file *f = &FILES[i];
        if (strcmp(name, f->name) != 0)
            continue;
        ulfius_set_binary_body_response(resp, 200, (const char *)f->start, (size_t)(f->end - f->start));
        u_map_put(resp->map_header, "Content-Type", f->content_type);
        u_map_put(resp->map_header, "Content-Security-Policy",
                  "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
                  "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
        u_map_put(resp->map_header, "X-Content-Type-Options", "nosniff");
        u_map_put(resp->map_header, "Referrer-Policy", "no-referrer");
        http_count_status(200);
        return U_CALLBACK_COMPLETE;
    }
    return http_reply_error(resp, 404, "no such console file: %s", path);
}

int console_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"GET", "/console", console_get},
        {"GET", "/console/*", console_get},
        {NULL, NULL, NULL},
    };
    if (!rt->cfg.console)
        return 0;
    return http_server_add_routes(s, routes, rt);
}
