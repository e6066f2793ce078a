"""OutputLock on its own: live, stale, foreign and unreadable owners; the create-if-absent path object stores take.

The whole runs that meet a lock (test_late_refusals: a second run refused, two processes at once; test_s3: an
S3 OUTPUT locked by another run) stay; these tests show each owner case without running the pipeline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from fruitlake import FruitlakeError, fs
from fruitlake import lock as lock_module
from fruitlake.lock import OutputLock, Owner
from fruitlake.output import LOCK


def plant(output: Path, host: str, pid: int, token: str = "other") -> Path:
    output.mkdir(parents=True, exist_ok=True)
    lock = output / LOCK
    lock.write_text(json.dumps({"host": host, "pid": pid, "started_utc": "2026-12-01T10:00:00+00:00",
                                "token": token}))
    return lock


def refusal(spark, output: Path, role: str = "OUTPUT") -> str:
    """The message of the lock refused on `output`."""
    with pytest.raises(FruitlakeError) as refused:
        OutputLock(spark, str(output), role).__enter__()
    return str(refused.value)


def gone_pid() -> int:
    """A pid that existed on this host and is gone."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_free_output_is_taken_and_released_and_an_output_made_for_the_lock_goes_with_it(spark, tmp_path):
    output = tmp_path / "out"
    with OutputLock(spark, str(output)) as held:
        owner = Owner(**json.loads((output / LOCK).read_text()))
        assert (owner.host, owner.pid, owner.token) == (socket.gethostname(), os.getpid(), held.owner.token)
    assert not output.exists()  # nothing was written under it: no empty folder is left behind

    with OutputLock(spark, str(output)):
        (output / "manifest.json").write_text("{}")
    assert sorted(os.listdir(output)) == ["manifest.json"]  # the lock went, what the run wrote stays


def test_a_live_owner_on_this_host_is_refused_and_its_lock_kept(spark, tmp_path):
    lock = plant(tmp_path / "out", socket.gethostname(), os.getppid())
    before = lock.read_text()
    assert f"in use by another fruitlake run (pid {os.getppid()} on " in refusal(spark, tmp_path / "out")
    assert lock.read_text() == before


def test_an_owner_on_another_host_is_never_taken_over_and_the_message_says_how_to_clear_it(spark, tmp_path):
    lock = plant(tmp_path / "table", "emr-primary.example", 4242)
    message = refusal(spark, tmp_path / "table", role="TABLE")
    assert message.startswith("TABLE ") and "pid 4242 on emr-primary.example" in message
    assert f"delete {lock}" in message and lock.exists()


def test_the_lock_of_a_run_gone_from_this_host_is_taken_over(spark, tmp_path, caplog):
    lock = plant(tmp_path / "out", socket.gethostname(), gone_pid())
    with OutputLock(spark, str(tmp_path / "out")) as held:
        assert json.loads(lock.read_text())["token"] == held.owner.token
    assert "taking over the lock of a run that is gone" in caplog.text
    assert not lock.exists()


def test_an_unreadable_lock_is_held_by_someone_unknown(spark, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK).write_text("{half a lo")
    assert "its lock file is unreadable" in refusal(spark, tmp_path / "out")


@pytest.fixture
def object_store(monkeypatch):
    """The path OUTPUTs off the local disk take (S3A: no O_EXCL): create only when absent, pause, read back.
    Here on the local file system through Hadoop's FileSystem, with the pause's sleep recorded."""
    pauses: list[float] = []
    monkeypatch.setattr(lock_module, "_local_path", lambda uri: None)
    monkeypatch.setattr(lock_module, "time", SimpleNamespace(sleep=pauses.append))  # the lock module's only
    return pauses


def test_off_the_local_disk_the_lock_is_created_only_when_absent_then_read_back(spark, tmp_path, object_store):
    output = tmp_path / "out"
    with OutputLock(spark, str(output)) as first:
        assert object_store == [lock_module.SETTLE_SECONDS]  # it read its own lock back after the pause
        assert "in use by another fruitlake run" in refusal(spark, output)
        assert json.loads((output / LOCK).read_text())["token"] == first.owner.token
    assert not (output / LOCK).exists()


def test_off_the_local_disk_the_run_whose_token_was_overwritten_backs_off(spark, tmp_path, monkeypatch,
                                                                         object_store):
    """Two runs both saw no lock; the other one's write landed last: this run reads back a token not its own."""
    output = tmp_path / "out"
    uri = str(output / LOCK)

    def the_other_run_writes(_seconds: float) -> None:  # through Hadoop, as the other run would (with its .crc)
        other = Owner(socket.gethostname(), os.getppid(), "2026-12-01T10:00:00+00:00", "the-other-run")
        fs.delete(spark, uri)
        assert fs.create_new(spark, uri, json.dumps(asdict(other)).encode())

    monkeypatch.setattr(lock_module, "time", SimpleNamespace(sleep=the_other_run_writes))
    assert f"pid {os.getppid()}" in refusal(spark, output)
    assert json.loads((output / LOCK).read_text())["token"] == "the-other-run"  # the winner's lock is kept
