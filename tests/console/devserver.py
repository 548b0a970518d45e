"""A development stand-in for the broker's own /console/ serving.

Serves the console's files straight from the work tree (services/auth/console/ and
clients/js/broker-client.js) at /console/, with the Content-Security-Policy the broker sends,
and passes every other request through to a running broker (streaming, so GET /sse works).
The page thus sees one origin, as it does when the broker serves it: edit a file, reload the
browser, no rebuild. test_console.py uses it instead of the broker's /console/ when
CONSOLE_DEV_PROXY=1.

    python3 tests/console/devserver.py --broker http://127.0.0.1:8080 --port 8090
"""
import argparse
import http.client
import http.server
import os
import sys
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FILES = {
    "/console/": ("services/auth/console/index.html", "text/html; charset=utf-8"),
    "/console/index.html": ("services/auth/console/index.html", "text/html; charset=utf-8"),
    "/console/console.js": ("services/auth/console/console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("services/auth/console/console.css", "text/css; charset=utf-8"),
    "/console/broker-client.js": ("clients/js/broker-client.js", "text/javascript; charset=utf-8"),
}
CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# Hop-by-hop headers are the proxy's own business, not the client's.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate", "host", "content-length"}


def make_handler(broker):
    target = urllib.parse.urlsplit(broker)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a stream ends by closing

        def log_message(self, fmt, *args):
            pass

        def _static(self, head_only):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/console":
                self.send_response(308)
                self.send_header("Location", "/console/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            if path not in FILES:
                return False
            rel, ctype = FILES[path]
            with open(os.path.join(ROOT, rel), "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)
            return True

        def _proxy(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=3600)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.end_headers()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away (a closed stream): nothing to tell it
            finally:
                conn.close()

        def do_GET(self):
            if not self._static(False):
                self._proxy()

        def do_HEAD(self):
            if not self._static(True):
                self._proxy()

        do_POST = do_PUT = do_DELETE = do_OPTIONS = _proxy

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", required=True, help="the broker's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--bind", default="127.0.0.1")
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer((args.bind, args.port), make_handler(args.broker))
    server.daemon_threads = True
    print(f"console at http://{args.bind}:{args.port}/console/ -> {args.broker}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
