"""A TCP proxy on 127.0.0.1 that delays every request by a fixed time: S3's first-byte latency, on loopback.

    with LatencyProxy("127.0.0.1", moto_port, delay=0.020) as proxy:
        ... AWS_ENDPOINT_URL=http://127.0.0.1:{proxy.port} ...

HTTP/1.1 keeps a connection open for many requests, so the proxy counts a request as the first bytes a client
sends after it last received something (or after it connected): those bytes wait `delay` seconds, the rest
of the exchange flows untouched. A `100-continue` upload pays twice, as it would over a real round trip.
Only loopback: the proxy listens on 127.0.0.1 and refuses any other upstream.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

LOOPBACK = "127.0.0.1"


class LatencyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay: float = 0.020) -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ValueError(f"the latency proxy only forwards to {LOOPBACK}, not {upstream_host!r}")
        self.upstream = (LOOPBACK, upstream_port)
        self.delay = delay
        self.requests = 0  # delayed requests so far
        self.methods: Counter[str] = Counter()  # of them, by HTTP method (GET, HEAD, PUT...)
        self.object_gets = 0  # of them, GETs of one object (no query: not a listing)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, LOOPBACK, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        answered = asyncio.Event()  # set when the upstream has sent something since the client last spoke
        answered.set()
        await asyncio.gather(self._requests(client_reader, upstream_writer, answered),
                             self._answers(upstream_reader, client_writer, answered),
                             return_exceptions=True)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        answered: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                if answered.is_set():  # a new request: its first bytes pay the latency
                    answered.clear()
                    self.requests += 1
                    method, _, rest = data.partition(b" ")
                    self.methods[method.decode("ascii", "replace")] += 1
                    self.object_gets += method == b"GET" and b"?" not in rest.partition(b" ")[0]
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       answered: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                answered.set()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
