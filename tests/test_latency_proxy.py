"""bench/latency_proxy.py: every S3 request through it waits the delay, and bytes pass unchanged (loopback)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from helpers import S3_SECRET  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402

DELAY = 0.15


def _client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                        aws_secret_access_key=S3_SECRET, config=Config(retries={"max_attempts": 1}))


def test_each_request_waits_the_delay_and_bytes_pass_unchanged(s3_endpoint):
    port = int(s3_endpoint.rsplit(":", 1)[1])
    payload = bytes(range(256)) * 4096  # 1 MiB: several reads on each side of the proxy
    with LatencyProxy("127.0.0.1", port, delay=DELAY) as proxy:
        client = _client(proxy.url)
        client.create_bucket(Bucket="latency")
        client.put_object(Bucket="latency", Key="a/b.bin", Body=payload)
        before = proxy.requests
        started = time.perf_counter()
        for _ in range(3):  # one kept-alive connection: each request is delayed, not just the first
            assert client.get_object(Bucket="latency", Key="a/b.bin")["Body"].read() == payload
        waited = time.perf_counter() - started
        assert proxy.requests - before == 3
    assert waited >= 3 * DELAY


def test_refuses_an_upstream_other_than_loopback():
    with pytest.raises(ValueError, match="127.0.0.1"):
        LatencyProxy("10.0.0.1", 9000)
