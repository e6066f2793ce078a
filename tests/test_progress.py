"""Progress: the rendered line (fake clock), the output modes, Spark task counts, and the CLI's stages."""

import io
import re
import time

import pytest

from fruitlake.cli import main
from fruitlake.progress import SHOWN, Progress, StageState, render

STAGES = SHOWN  # the run's stages as the progress lines name them, in order


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rate_and_eta_from_the_counts_and_the_clock():
    state = StageState(
        "featurize", started=100.0, total=1000, done=250, tasks_done=1, tasks_total=4, tasks_running=2
    )
    line = render(state, now=125.0)  # 250 images in 25 s: 10/s, 750 left: 75 s
    assert "250/1,000 images" in line and "25%" in line
    assert "tasks 1/4 (2 running)" in line
    assert "10.0 images/s" in line and "ETA 1:15" in line and line.endswith("0:25")


def test_eta_is_unknown_before_the_first_images_arrive_and_hours_show():
    assert "ETA --" in render(StageState("featurize", started=0.0, total=50, done=0), now=30.0)
    slow = render(StageState("featurize", started=0.0, total=100_000, done=1000), now=100.0)
    assert "10.0 images/s" in slow and "ETA 2:45:00" in slow


def test_finished_stage_says_done_with_its_total_rate():
    state = StageState(
        "featurize", started=0.0, total=600, done=600, tasks_done=3, tasks_total=3, finished=60.0
    )
    line = render(state, now=999.0)
    assert "600/600 images" in line and "3 tasks" in line and "10.0 images/s" in line
    assert "ETA" not in line and "%" not in line and line.endswith("done in 1:00")


def test_a_non_terminal_gets_one_line_per_stage_and_no_carriage_returns():
    clock, stream, counted = FakeClock(), io.StringIO(), [0]
    progress = Progress(stream, clock=clock, interval=0.01)
    assert progress.mode == "lines"
    with progress.stage("featurize", total=40, counter=lambda: counted[0]):
        clock.now, counted[0] = 4.0, 40
    with progress.stage("reduce") as shown:
        clock.now = 6.0
        shown.note("k=5")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert lines[0].startswith("featurize") and "40/40 images" in lines[0] and "10.0 images/s" in lines[0]
    assert lines[1].startswith("reduce") and "k=5" in lines[1] and lines[1].endswith("done in 0:02")


def test_a_failing_stage_says_so_and_the_error_goes_on():
    clock, stream = FakeClock(), io.StringIO()
    with pytest.raises(RuntimeError, match="boom"), Progress(stream, clock=clock).stage("write"):
        clock.now = 3.0
        raise RuntimeError("boom")
    assert stream.getvalue().rstrip().endswith("failed after 0:03")


def test_a_terminal_gets_one_line_redrawn_in_place():
    clock, stream, counted = FakeClock(), Terminal(), [0]
    progress = Progress(stream, clock=clock, interval=0.01)
    assert progress.mode == "live"
    with progress.stage("featurize", total=100, counter=lambda: counted[0]):
        clock.now, counted[0] = 5.0, 50
        deadline = time.monotonic() + 60  # a deadline, not a count of sleeps: a busy machine is slow, not wrong
        while "50/100" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    text = stream.getvalue()
    assert "\r" in text and "50/100 images" in text and "ETA 0:05" in text
    assert text.count("\n") == 1 and text.rstrip().endswith("done in 0:05")


def test_a_log_record_under_a_live_line_gets_a_line_of_its_own():
    import logging

    clock, stream = FakeClock(), Terminal()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    progress = Progress(stream, clock=clock, interval=0.05)
    try:
        with progress.stage("load_model"):
            deadline = time.monotonic() + 60
            while "load_model" not in stream.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
            logging.getLogger("fruitlake.onnx_cache").warning("could not cache")
        logging.getLogger("fruitlake.onnx_cache").warning("after the stage")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert re.search(r"load_model +0:00\r +\rcould not cache\n", text), repr(text)
    on_screen = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n") if line]
    assert on_screen[0] == "could not cache", repr(text)
    assert on_screen[1].startswith("load_model") and on_screen[1].endswith("done in 0:00")
    assert on_screen[2:] == ["after the stage"] and handler.filters == []


def test_off_prints_nothing():
    stream = io.StringIO()
    progress = Progress(stream, mode="off")
    with progress.stage("featurize", total=3, counter=lambda: 3) as shown:
        shown.count(3)
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="progress mode='loud' is unknown"):
        Progress(stream, mode="loud")


def test_task_counts_come_from_the_stage_jobs_and_the_job_group_is_restored(spark):
    context = spark.sparkContext
    context.setLocalProperty("spark.jobGroup.id", "caller-group")
    stream = io.StringIO()
    try:
        with Progress(stream, interval=0.05).stage("count", spark) as shown:
            assert context.getLocalProperty("spark.jobGroup.id").startswith("fruitlake-count-")
            shown.count(context.parallelize(range(100), 7).map(lambda x: x * 2).count())
        assert context.getLocalProperty("spark.jobGroup.id") == "caller-group"
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    assert re.search(r"^count\s+100 images\s+7 tasks\s+done in", stream.getvalue())


def test_the_run_prints_one_line_per_stage_with_counts(sample_run):
    """stderr is not a terminal here: one line per stage, in order, and stdout ends with the JSON summary."""
    stdout, stderr = sample_run.stdout, sample_run.stderr
    lines = [line for line in stderr.splitlines() if line.split(" ")[0] in STAGES]
    assert [line.split(" ")[0] for line in lines] == list(STAGES)
    assert "\r" not in stderr
    by_stage = {line.split(" ")[0]: line for line in lines}
    assert "25 images" in by_stage["discover"]
    assert re.search(r"25/25 images\s+\d+ tasks\s+[\d.]+ images/s\s+done in", by_stage["featurize"])
    assert "k=5" in by_stage["reduce"] and "24 images" in by_stage["write"]
    assert "probe accuracy" in by_stage["report"]
    assert stdout.strip().splitlines()[-1].startswith('{"images_total": 25')


def test_quiet_prints_no_progress(spark, weights_path, tmp_path, capsys):
    from fruitlake.sample_data import write_sample_data

    write_sample_data(tmp_path / "in", classes=2, per_class=3, seed=2)
    code = main(
        ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--k", "2", "--weights", weights_path, "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert not [line for line in captured.err.splitlines() if line.split(" ")[0] in STAGES]
    assert captured.out.strip().splitlines()[-1].startswith('{"images_total": 6')
    assert (tmp_path / "out" / "report.html").exists()
