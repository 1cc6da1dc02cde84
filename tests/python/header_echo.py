"""An upstream for the end-to-end tests that shows exactly what reached it.

A WSGI app served by the standard library's `wsgiref`: it answers every
request with JSON holding the raw header lines as received (`headers`, name
and value in order) and the WSGI environ's `HTTP_*` entries (`environ`).
WSGI folds `-` and `_` in header names both into `_` and joins repeated
names with a comma, like CGI and several frameworks, so `environ` is what an
application behind such a server would believe the client sent.

Usage: header_echo.py <port>; prints `listening on 127.0.0.1:<port>` once
it accepts connections.
"""

import json
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class RawHeadersHandler(WSGIRequestHandler):
    """Hands the raw header lines to the app next to the folded environ."""

    def get_environ(self):
        env = super().get_environ()
        env["keygate.raw_headers"] = [[k, v] for k, v in self.headers.items()]
        env["keygate.raw_target"] = self.path
        return env


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def app(environ, start_response):
    if environ.get("CONTENT_LENGTH"):
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    body = json.dumps(
        {
            "target": environ["keygate.raw_target"],
            "headers": environ["keygate.raw_headers"],
            "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def main():
    port = int(sys.argv[1])
    server = make_server(
        "127.0.0.1",
        port,
        app,
        server_class=ThreadingWSGIServer,
        handler_class=RawHeadersHandler,
    )
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
