"""An HTTP proxy on 127.0.0.1 in front of the loopback S3 server: it answers chosen requests with an S3 error
(503 SlowDown, 403 AccessDenied) or cuts the connection, holds every request a moment, and counts how many
requests were in flight at once. Only loopback.

    with FaultProxy(moto_endpoint, delay=0.05) as proxy:
        proxy.fail("/bucket/key.jpg", 503, 503)   # the next two GETs of that path answer SlowDown
        ... AWS_ENDPOINT_URL=proxy.url ...
        proxy.peak, proxy.requests
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    403: ("AccessDenied", "Access Denied"),
}
RESET = 0  # a fault that closes the connection without an answer
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the fault proxy only forwards to 127.0.0.1, not {upstream!r}")
        self.upstream = ("127.0.0.1", parts.port)
        self.delay = delay
        self.requests: Counter[str] = Counter()  # path -> requests seen (faults included)
        self.active = self.peak = 0
        self._faults: defaultdict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path: str, *statuses: int) -> None:
        """The next requests for `path` (URL-encoded, as sent: /bucket/key) get these answers, one each."""
        with self._lock:
            self._faults[path].extend(statuses)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with proxy._lock:
                    proxy.requests[path] += 1
                    proxy.active += 1
                    proxy.peak = max(proxy.peak, proxy.active)
                    fault = proxy._faults[path].pop(0) if proxy._faults.get(path) else None
                try:
                    time.sleep(proxy.delay)
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    if fault == RESET:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if fault is not None:
                        code, message = ERRORS[fault]
                        error = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                                 f"<Message>{message}</Message></Error>").encode()
                        self.send_response(fault)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(error)))
                        self.end_headers()
                        self.wfile.write(error)
                        return
                    upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                    try:
                        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                        upstream.request(self.command, self.path, body=body or None, headers=headers)
                        answer = upstream.getresponse()
                        content = answer.read()
                    finally:
                        upstream.close()
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(content)
                finally:
                    with proxy._lock:
                        proxy.active -= 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
