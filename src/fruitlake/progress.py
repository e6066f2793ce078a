"""Live progress of a run per stage, fed from the executors: the image accumulator and Spark's task counts.

Python accumulators reach the driver when a task ends (a task holds ~500 images), so the image count moves in
steps; the status tracker's completed/running task counts of the stage's own jobs (a job group per stage) show
the work between those steps. On a terminal one line is redrawn in place; elsewhere (a log, a pipe, CI) each
stage prints one final line; `Progress.off()` prints nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.status import StatusTracker

MODES = ("auto", "live", "lines", "off")
# The stages of a run, in order: the keys of the manifest's `timings` and the names on the progress lines.
# `session` is timed when the run starts its own session, never shown; `report` comes after the manifest.
STAGES = ("session", "discover", "load_model", "featurize", "reduce", "write", "report")
SHOWN = STAGES[1:]
DRY_RUN_STEPS = ("calibrate", "groups")  # the dry run's own, timed in its summary and not shown
JOB_GROUP, JOB_DESCRIPTION = "spark.jobGroup.id", "spark.job.description"

log = logging.getLogger(__name__)


@dataclass
class StageState:
    """What one stage has done so far; `render` turns it into a line."""

    name: str
    started: float
    unit: str = "images"
    total: int | None = None  # units the stage has to do, when known in advance
    done: int | None = None  # units done so far (None: the stage does not count units)
    tasks_done: int = 0
    tasks_total: int = 0
    tasks_running: int = 0
    finished: float | None = None
    failed: bool = False
    note: str = ""


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def render(state: StageState, now: float) -> str:
    """One line: `featurize  1,000/2,370 images  42%  tasks 2/5 (2 running)  35.1 images/s  ETA 0:39  0:28`"""
    elapsed = (state.finished if state.finished is not None else now) - state.started
    parts = [f"{state.name:<10}"]
    if state.done is not None:
        counted = f"{state.done:,}" if state.total is None else f"{state.done:,}/{state.total:,}"
        parts.append(f"{counted} {state.unit}")
        if state.total and state.finished is None:
            parts.append(f"{100 * state.done / state.total:.0f}%")
    if state.tasks_total:
        if state.finished is None:
            running = f" ({state.tasks_running} running)" if state.tasks_running else ""
            parts.append(f"tasks {state.tasks_done}/{state.tasks_total}{running}")
        else:
            parts.append(f"{state.tasks_done} tasks")
    if state.done is not None and state.total is not None and elapsed > 0:  # a stage with work to count down
        rate = state.done / elapsed
        parts.append(f"{rate:,.1f} {state.unit}/s")
        if state.finished is None:
            parts.append(f"ETA {_duration((state.total - state.done) / rate)}" if rate > 0 else "ETA --")
    if state.note:
        parts.append(state.note)
    ending = "" if state.finished is None else "failed after " if state.failed else "done in "
    parts.append(f"{ending}{_duration(elapsed)}")
    return "  ".join(parts)


class Stage:
    """The handle a `with progress.stage(...)` block gets: report counts the driver learns itself."""

    def __init__(self, state: StageState, counter: Callable[[], int] | None = None) -> None:
        self.state = state
        self.counter = counter  # polled for the units done (e.g. an accumulator's value)

    def follow(self, counter: Callable[[], int], total: int | None = None) -> None:
        """From now on, poll `counter()` for the units done (of `total`, when known)."""
        self.counter = counter
        self.count(self.state.done or 0, total)

    def count(self, done: int, total: int | None = None) -> None:
        self.state.done = done
        if total is not None:
            self.state.total = total

    def note(self, text: str) -> None:
        self.state.note = text


@dataclass
class _SparkTasks:
    """Completed/total/running tasks of the jobs of one job group, from `SparkContext.statusTracker()`."""

    tracker: StatusTracker
    group: str
    seen: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def poll(self) -> tuple[int, int, int]:
        for job_id in self.tracker.getJobIdsForGroup(self.group):
            job = self.tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job is not None else ():
                info = self.tracker.getStageInfo(stage_id)
                if info is not None:  # a stage Spark no longer keeps stays as last seen
                    self.seen[stage_id] = (info.numCompletedTasks, info.numTasks, info.numActiveTasks)
        done = sum(v[0] for v in self.seen.values())
        # A stage skipped by adaptive execution never completes its tasks: count what ran, not the plan
        total = sum(v[1] for v in self.seen.values() if v[0] or v[2]) or sum(v[1] for v in self.seen.values())
        return done, total, sum(v[2] for v in self.seen.values())


class Progress:
    """Progress of a run on `stream` (stderr by default; stdout stays for the command's result)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        mode: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.5,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "live" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.clock = clock
        self.interval = interval
        self.stages: list[StageState] = []
        self._lock = threading.Lock()
        self._drawn = 0  # characters of the live line on screen
        self._skip_redraw = False  # set when a log record wiped the live line (`clear_live_line`)

    @classmethod
    def off(cls) -> Progress:
        return cls(mode="off")

    @contextmanager
    def stage(
        self,
        name: str,
        spark: SparkSession | None = None,
        total: int | None = None,
        counter: Callable[[], int] | None = None,
        unit: str = "images",
    ) -> Iterator[Stage]:
        """Show one stage while its block runs; `counter()` (e.g. an accumulator's value) is polled for done.

        With `spark`, the block's jobs run in a job group of their own so its task counts can be polled.
        """
        state = StageState(
            name, self.clock(), unit, total, 0 if counter is not None or total is not None else None
        )
        self.stages.append(state)
        handle = Stage(state, counter)
        if self.mode == "off":
            yield handle
            return
        context = spark.sparkContext if spark is not None else None
        tasks: _SparkTasks | None = None
        previous: tuple[str | None, str | None] = (None, None)  # the thread's job group and description, to restore
        if context is not None:
            group = f"fruitlake-{name}-{uuid.uuid4().hex[:8]}"
            previous = (context.getLocalProperty(JOB_GROUP), context.getLocalProperty(JOB_DESCRIPTION))
            context.setLocalProperty(JOB_GROUP, group)
            context.setLocalProperty(JOB_DESCRIPTION, f"fruitlake {name}")
            tasks = _SparkTasks(context.statusTracker(), group)
        stop = threading.Event()
        watcher = threading.Thread(
            target=self._watch,
            args=(handle, tasks, stop),
            name=f"fruitlake-progress-{name}",
            daemon=True,
        )
        clearer = _LiveLineClearer(self)
        if self.mode == "live":  # lines show a stage when it ends: polling before then (py4j calls) buys nothing
            watcher.start()
            for handler in logging.getLogger().handlers:
                handler.addFilter(clearer)
        try:
            yield handle
        except BaseException:
            state.failed = True
            raise
        finally:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(clearer)
            stop.set()
            if watcher.is_alive():
                watcher.join()
            if context is not None:
                try:
                    # None removes the property (the JVM takes null); PySpark's annotation says str only.
                    context.setLocalProperty(JOB_GROUP, previous[0])  # type: ignore[arg-type]
                    context.setLocalProperty(JOB_DESCRIPTION, previous[1])  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - the JVM is gone (Ctrl-C ends it too): still say how it ended
                    log.debug("job group of stage %s not restored", state.name, exc_info=True)
            self._refresh(handle, tasks)
            state.finished = self.clock()
            self._emit(render(state, state.finished), final=True)

    def _refresh(self, stage: Stage, tasks: _SparkTasks | None) -> None:
        state = stage.state
        try:
            if stage.counter is not None:
                state.done = int(stage.counter())
            if tasks is not None:
                state.tasks_done, state.tasks_total, state.tasks_running = tasks.poll()
        except Exception:  # noqa: BLE001 - a display must never fail the run (e.g. the context stopping)
            log.debug("progress of stage %s not updated", state.name, exc_info=True)

    def _watch(self, stage: Stage, tasks: _SparkTasks | None, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self._refresh(stage, tasks)
            if self.mode == "live":
                self._emit(render(stage.state, self.clock()), final=False)

    def clear_live_line(self) -> None:
        """Wipe the live line, so that what is printed next (a log record) starts a line of its own. The next
        redraw is skipped, so it cannot come between the wiping and that line; the one after shows the stage
        again below it."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r" + " " * self._drawn + "\r")
                self.stream.flush()
                self._drawn, self._skip_redraw = 0, True

    def _emit(self, line: str, final: bool) -> None:
        with self._lock:
            if self._skip_redraw and not final:
                self._skip_redraw = False
                return
            if self.mode == "live":
                padding = " " * max(0, self._drawn - len(line))
                self.stream.write("\r" + line + padding + ("\n" if final else ""))
                self._drawn = 0 if final else len(line)
            elif final:
                self.stream.write(line + "\n")
            self.stream.flush()


class _LiveLineClearer(logging.Filter):
    """On the log handlers while a live line is drawn; the last of their filters, so it runs only for a record
    that will be printed: it wipes the live line first, or the record would follow the stage on one line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear_live_line()
        return True


class Stages:
    """The runner's one wrapper of a stage: timed for the manifest's `timings`, logged as it starts and ends, and
    shown by `progress` (STAGES names them all)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or Progress.off()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, spark: SparkSession | None = None, show: bool = True) -> Iterator[Stage]:
        if name not in STAGES + DRY_RUN_STEPS:
            raise ValueError(f"stage {name!r} is not one of {', '.join(STAGES + DRY_RUN_STEPS)}")
        started = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            if show:
                with self.progress.stage(name, spark) as shown:
                    yield shown
            else:
                yield Stage(StageState(name, started))
        finally:
            self.took(name, time.perf_counter() - started)
            log.info("stage %s done in %.1f s", name, self.seconds[name])

    def took(self, name: str, seconds: float) -> None:
        """Add `seconds` to stage `name` (a stage timed outside a `with`: the session's start)."""
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)
