"""Which S3 client fetches small objects fastest and cheapest: images/s, CPU per image, requests per image.

    flock /work/bench.lock python bench/s3_clients.py [--n 2000] [--delays-ms 20,100] [--in-flight 32]

N synthetic 100x100 JPEGs (as bench.py makes them) on a moto server on 127.0.0.1, behind the latency proxy
(bench/latency_proxy.py: every request waits the delay, and is counted). Each client runs in a process of its
own, so that its CPU time (every thread of it, Rust's too) is measured apart from moto's and the proxy's; it
fetches every object in listing order through a window of `--in-flight` requests, as fetch.py does, after one
warm-up GET (connections and credentials are per worker, made once). Clients:
  boto3 + threads   fruitlake.fetch with boto3 (one GET per object, botocore's standard retries)
  obstore           object_store (Rust) through obstore's asyncio API, one Python thread
  pyarrow + threads PyArrow's S3FileSystem (AWS SDK for C++), open_input_stream in a thread pool
(fsspec/s3fs is left out: its aiobotocore pins botocore to a range without the boto3 fruitlake pins.)
The README (S3) has the figures and why fetch.py keeps boto3.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from latency_proxy import LatencyProxy  # noqa: E402

from bench import ensure_images  # noqa: E402

BUCKET, KEY_ID, SECRET, REGION = "bench", "bench", "bench-secret-not-a-real-key", "us-east-1"
Listed = tuple[str, int, Any]  # key, length, modification time (as ListObjectsV2 says them)


def _environment(endpoint: str) -> None:
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION,
                       "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})


def boto3_threads(listed: list[Listed], endpoint: str, in_flight: int) -> Callable[[], list[bytes | None]]:
    from fruitlake.fetch import Wanted, fetch, s3_uri

    wanted = [Wanted(uri=s3_uri(BUCKET, key), length=length, modification_time=when) for key, length, when in listed]
    list(fetch(wanted[:1], in_flight=in_flight))  # warm up: the client, its credentials, a connection
    return lambda: [item.content for item in fetch(wanted, in_flight=in_flight)]


def obstore_async(listed: list[Listed], endpoint: str, in_flight: int) -> Callable[[], list[bytes | None]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=endpoint, region=REGION, client_options={"allow_http": True,
                    "pool_max_idle_per_host": str(in_flight)})

    async def one(key: str, length: int) -> bytes | None:
        result = await obstore.get_async(store, key)
        if result.meta["size"] != length:
            return None
        return bytes(await result.bytes_async())

    async def every() -> list[bytes | None]:
        window: deque[asyncio.Task[bytes | None]] = deque()
        out: list[bytes | None] = []
        for key, length, _ in listed:
            if len(window) >= in_flight:
                out.append(await window.popleft())
            window.append(asyncio.ensure_future(one(key, length)))
        out.extend([await task for task in window])
        return out

    obstore.get(store, listed[0][0]).bytes()  # warm up
    return lambda: asyncio.run(every())


def pyarrow_threads(listed: list[Listed], endpoint: str, in_flight: int) -> Callable[[], list[bytes | None]]:
    from pyarrow import fs

    s3 = fs.S3FileSystem(region=REGION, endpoint_override=endpoint, scheme="http")

    def one(key: str) -> bytes:
        with s3.open_input_stream(f"{BUCKET}/{key}") as stream:
            return bytes(stream.read())

    def every() -> list[bytes | None]:
        out: list[bytes | None] = []
        window: deque[Future[bytes]] = deque()
        with ThreadPoolExecutor(in_flight) as pool:
            for key, _, _ in listed:
                if len(window) >= in_flight:
                    out.append(window.popleft().result())
                window.append(pool.submit(one, key))
            out.extend(done.result() for done in window)
        return out

    one(listed[0][0])  # warm up
    return every


CLIENTS = {"boto3 + threads": boto3_threads, "obstore": obstore_async, "pyarrow + threads": pyarrow_threads}


def _measure(client: str, listed: list[Listed], endpoint: str, in_flight: int, results: Any) -> None:
    _environment(endpoint)
    run = CLIENTS[client](listed, endpoint, in_flight)
    cpu, started = time.process_time(), time.perf_counter()
    contents = run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    good = sum(content is not None and len(content) == length
               for content, (_, length, _) in zip(contents, listed, strict=True))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put((seconds, cpu, good, peak_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000, help="objects to fetch")
    parser.add_argument("--delays-ms", default="20,100", help="the proxy's delay per request, comma-separated")
    parser.add_argument("--in-flight", type=int, default=32, help="requests in flight per client (fetch's default)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="which, comma-separated")
    parser.add_argument("--workdir", default="/tmp/fruitlake-bench")
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    source = ensure_images(Path(args.workdir), args.n)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    direct = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name=REGION, aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET)
    direct.create_bucket(Bucket=BUCKET)
    for path in sorted(source.rglob("*.jpg"))[: args.n]:
        direct.upload_file(str(path), BUCKET, f"images/{path.relative_to(source).as_posix()}")
    pages = direct.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="images/")
    listed = [(item["Key"], item["Size"], item["LastModified"]) for page in pages for item in page["Contents"]]
    size = sum(length for _, length, _ in listed) / len(listed)
    print(f"S3 clients: {len(listed)} JPEGs of {size / 1024:.1f} KiB on average, moto on 127.0.0.1 behind the "
          f"latency proxy, {args.in_flight} requests in flight, each client in a process of its own; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    context = mp.get_context("spawn")
    for delay_ms in (float(value) for value in args.delays_ms.split(",")):
        with LatencyProxy(host, port, delay_ms / 1000) as proxy:
            for client in args.clients.split(","):
                results = context.Queue()
                before = proxy.requests
                worker = context.Process(target=_measure, args=(client, listed, proxy.url, args.in_flight, results))
                worker.start()
                seconds, cpu, good, peak_mb = results.get()
                worker.join()
                requests = proxy.requests - before - 1  # less the warm-up GET
                print(f"  {delay_ms:5.0f} ms  {client:18s} {len(listed) / seconds:7.1f} img/s  "
                      f"{1000 * cpu / len(listed):6.2f} ms CPU per image  {requests / len(listed):.2f} requests "
                      f"per image  {good}/{len(listed)} read  peak RSS {peak_mb:.0f} MB", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
