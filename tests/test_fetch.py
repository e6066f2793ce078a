"""fetch.py: listed files' bytes, in order, through a bounded window; local files and a loopback S3 server (moto),
with a fault proxy in front of it for throttling, denial and cut connections."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from helpers import write_jpeg
from moto_aws import point_at
from s3_faults import RESET, FaultProxy

from fruitlake import FruitlakeError, fetch
from fruitlake.fetch import Fetched, Wanted, local_uri, s3_uri

BUCKET = "fetch-tests"
ODD_KEYS = ["plain.jpg", "a//b.jpg", "with space.jpg", "colon:12:00.jpg", "ünïcödé/фрукт.jpg", "_DSC0001.JPG",
            "percent%41.jpg", "question?hash#.jpg", "/leading-slash.jpg", "plus+and&amp.jpg"]


def listed(path) -> Wanted:
    status = path.stat()
    return Wanted(uri=local_uri(path), length=status.st_size,
                  modification_time=datetime.fromtimestamp(status.st_mtime, UTC))


# ---- local files ------------------------------------------------------------------------------------------


def test_local_files_come_back_in_order_with_their_bytes(tmp_path):
    names = ["b.jpg", "a b.jpg", "_DSC0001.JPG", "c:d.jpg", "ünï.jpg", "%41.jpg", "x#y?.jpg"]
    expected = {name: write_jpeg(tmp_path / "in" / name, seed=number) for number, name in enumerate(names)}
    wanted = [listed(tmp_path / "in" / name) for name in names]
    got = list(fetch.fetch(wanted, in_flight=3))
    assert [item.wanted for item in got] == wanted
    assert [item.content for item in got] == [expected[name] for name in names]
    assert {item.problem for item in got} == {None}


def test_a_local_file_deleted_or_changed_since_listed_is_a_problem_not_a_crash(tmp_path):
    for number in range(4):
        write_jpeg(tmp_path / f"{number}.jpg", seed=number)
    wanted = [listed(tmp_path / f"{number}.jpg") for number in range(4)]
    (tmp_path / "1.jpg").unlink()
    (tmp_path / "2.jpg").write_bytes(b"shorter")
    same_length = tmp_path / "3.jpg"  # same length, rewritten an hour later
    later = wanted[3].modification_time.timestamp() + 3600
    import os

    os.utime(same_length, (later, later))
    got = list(fetch.fetch(wanted))
    assert [item.problem for item in got] == [None, fetch.VANISHED, fetch.CHANGED, fetch.CHANGED]
    assert got[0].content == (tmp_path / "0.jpg").read_bytes()
    assert [item.content for item in got[1:]] == [None, None, None]


def test_the_window_bounds_requests_and_bytes_and_wanted_is_read_lazily(tmp_path):
    length = len(write_jpeg(tmp_path / "0.jpg", seed=0))
    for number in range(1, 30):
        (tmp_path / f"{number}.jpg").write_bytes((tmp_path / "0.jpg").read_bytes())
    wanted = [listed(tmp_path / f"{number}.jpg") for number in range(30)]

    def furthest(in_flight: int, bytes_in_flight: int) -> list[int]:
        taken = 0

        def source():
            nonlocal taken
            for item in wanted:
                taken += 1
                yield item

        seen = []
        for number, item in enumerate(fetch.fetch(source(), in_flight=in_flight, bytes_in_flight=bytes_in_flight)):
            assert item.wanted == wanted[number] and item.problem is None
            seen.append(taken - number - 1)  # items taken beyond the one just yielded
        return seen

    assert max(furthest(4, 1 << 30)) == 4  # the window holds 4, one more is waiting to enter
    assert max(furthest(100, 3 * length)) == 3  # about 3 files' bytes, whatever in_flight allows
    assert max(furthest(100, length // 2)) == 1  # a file larger than the budget is still read, alone


def test_stopping_early_leaves_no_thread_running(tmp_path):
    import threading

    for number in range(20):
        write_jpeg(tmp_path / f"{number}.jpg", seed=number)
    reader = fetch.fetch([listed(tmp_path / f"{number}.jpg") for number in range(20)], in_flight=4)
    assert next(reader).problem is None
    reader.close()
    for thread in threading.enumerate():
        if thread.name.startswith("fruitlake-fetch"):
            thread.join(5)
            assert not thread.is_alive()


def test_only_local_and_s3_schemes_are_read():
    for uri in ("s3://bucket/in", "s3a://bucket/in", "file:///data/in", "/data/in", "data/in"):
        fetch.check_scheme(uri)
    for uri in ("hdfs:///user/me/photos", "gs://bucket/in", "abfs://c@account.dfs.core.windows.net/in"):
        with pytest.raises(FruitlakeError, match=r"reads images from local files .* and S3 .*not \w+://"):
            fetch.check_scheme(uri)
    with pytest.raises(FruitlakeError, match="not gs://"):
        list(fetch.fetch([Wanted(uri="gs://bucket/a.jpg", length=1, modification_time=datetime.now(UTC))]))


def test_what_crosses_to_a_worker_pickles():
    item = Wanted(uri=s3_uri("b", "a//b c.jpg"), length=3, modification_time=datetime(2026, 1, 1, tzinfo=UTC))
    done = Fetched(wanted=item, content=b"abc", problem=None)
    assert pickle.loads(pickle.dumps(done)) == done
    assert item.uri == "s3://b/a//b%20c.jpg"


# ---- S3 on loopback ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def proxy(s3_endpoint, monkeypatch, tmp_path):
    """A fault proxy in front of the loopback server, 20 ms per request; this process's AWS settings at it."""
    with FaultProxy(s3_endpoint, delay=0.02) as faults:
        point_at(faults.url, monkeypatch, tmp_path)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        yield faults


def put(bucket, key: str, body: bytes) -> Wanted:
    """Upload, then list as discovery does (ListObjectsV2: size and time, no HEAD)."""
    bucket.put_object(Bucket=BUCKET, Key=key, Body=body)
    page = bucket.list_objects_v2(Bucket=BUCKET, Prefix=key)
    entry = next(item for item in page["Contents"] if item["Key"] == key)
    return Wanted(uri=s3_uri(BUCKET, key), length=entry["Size"], modification_time=entry["LastModified"])


def test_s3_objects_with_odd_keys_come_back_in_order_with_one_get_each(bucket, proxy, tmp_path):
    bodies = [write_jpeg(tmp_path / f"{number}.jpg", seed=number) for number in range(len(ODD_KEYS))]
    wanted = [put(bucket, f"odd/{key}", body) for key, body in zip(ODD_KEYS, bodies, strict=True)]
    wanted.append(Wanted(uri=s3_uri(BUCKET, "odd/plain.jpg", "s3a"), length=len(bodies[0]),
                         modification_time=wanted[0].modification_time))  # s3a:// is read the same way
    before = sum(proxy.requests.values())
    got = list(fetch.fetch(wanted, in_flight=4))
    assert [item.wanted for item in got] == wanted
    assert [item.problem for item in got] == [None] * len(wanted)
    assert [item.content for item in got] == [*bodies, bodies[0]]
    assert sum(proxy.requests.values()) - before == len(wanted)  # a GET each: no HEAD, no listing


def test_s3_requests_in_flight_stay_within_the_window(bucket, proxy):
    wanted = [put(bucket, f"window/{number}.jpg", bytes([number]) * 100) for number in range(24)]
    got = list(fetch.fetch(wanted, in_flight=5))
    assert [item.content for item in got] == [bytes([number]) * 100 for number in range(24)]
    assert 2 <= proxy.peak <= 5  # concurrent, and never more than the window


def test_an_object_deleted_or_changed_since_listed_is_a_problem(bucket, proxy):
    gone, grown, touched, kept = (put(bucket, f"changes/{name}.jpg", b"x" * 50)
                                  for name in ("gone", "grown", "touched", "kept"))
    bucket.delete_object(Bucket=BUCKET, Key="changes/gone.jpg")
    bucket.put_object(Bucket=BUCKET, Key="changes/grown.jpg", Body=b"x" * 51)
    earlier = Wanted(uri=touched.uri, length=50, modification_time=touched.modification_time - timedelta(hours=1))
    got = list(fetch.fetch([gone, grown, earlier, kept]))
    assert [item.problem for item in got] == [fetch.VANISHED, fetch.CHANGED, fetch.CHANGED, None]
    assert got[3].content == b"x" * 50


def test_a_missing_bucket_is_vanished_and_access_denied_is_a_reject(bucket, proxy):
    when = datetime.now(UTC)
    archived = "denied/archived.jpg"
    bucket.put_object(Bucket=BUCKET, Key=archived, Body=b"cold", StorageClass="GLACIER")  # GET answers 403
    denied = put(bucket, "denied/policy.jpg", b"data")
    proxy.fail(f"/{BUCKET}/denied/policy.jpg", 403)
    got = list(fetch.fetch([
        Wanted(uri=s3_uri("no-such-bucket", "a.jpg"), length=4, modification_time=when),
        Wanted(uri=s3_uri(BUCKET, archived), length=4, modification_time=when),
        denied,
        denied,  # the proxy denies once: the other GET reads it
    ]))
    assert [item.problem for item in got[:2]] == [fetch.VANISHED, fetch.ACCESS_DENIED]
    # The two GETs of the same object are in flight together, so either may be the one denied.
    outcomes = sorted((item.problem or "", item.content or b"") for item in got[2:])
    assert outcomes == [("", b"data"), (fetch.ACCESS_DENIED, b"")]
    assert proxy.requests[f"/{BUCKET}/denied/policy.jpg"] == 2  # a 403 is not retried


def test_throttling_and_transient_errors_are_retried(bucket, proxy):
    slow, broken, reset = (put(bucket, f"retry/{name}.jpg", name.encode() * 10) for name in ("slow", "broken", "reset"))
    proxy.fail(f"/{BUCKET}/retry/slow.jpg", 503, 503)
    proxy.fail(f"/{BUCKET}/retry/broken.jpg", 500)
    proxy.fail(f"/{BUCKET}/retry/reset.jpg", RESET)
    got = list(fetch.fetch([slow, broken, reset]))
    assert [item.problem for item in got] == [None, None, None]
    assert [item.content for item in got] == [b"slow" * 10, b"broken" * 10, b"reset" * 10]
    assert [proxy.requests[f"/{BUCKET}/retry/{name}.jpg"] for name in ("slow", "broken", "reset")] == [3, 2, 2]


def test_retries_are_bounded(bucket, proxy, monkeypatch):
    monkeypatch.setattr(fetch, "S3_ATTEMPTS", 2)
    monkeypatch.setattr(fetch, "_clients", {})
    stuck = put(bucket, "retry/stuck.jpg", b"stuck")
    proxy.fail(f"/{BUCKET}/retry/stuck.jpg", 503, 503, 503)
    (got,) = fetch.fetch([stuck])
    assert got.problem == fetch.READ_FAILED and got.content is None
    assert proxy.requests[f"/{BUCKET}/retry/stuck.jpg"] == 2
