"""The one line a failed command ends with (`outcome.outcome`), from synthetic errors: the exit code, the words,
the redaction. The real processes behind some of them (Ctrl-C, a read-only OUTPUT, a path through a file, an
unreachable host) stay in test_quiet_and_redacted.py, which shows that nothing else reaches the terminal."""

from __future__ import annotations

import argparse
import errno

import pytest

from fruitlake import FruitlakeError
from fruitlake.console import INTERRUPTED
from fruitlake.outcome import outcome

SECRET = "wJalrXUtnFEMI-console-SECRET"


def failing(exc: BaseException):
    def command() -> int:
        raise exc

    return command


def args(command: str = "run", output: str | None = "/data/out", verbose: bool = False) -> argparse.Namespace:
    return argparse.Namespace(command=command, output=output, verbose=verbose)


class Py4JJavaError(Exception):
    """Named as PySpark's: a Java exception's text, as the JVM words it."""


def test_success_is_its_own_exit_code_and_no_line():
    assert outcome(lambda: 0, args()) == (0, "")
    assert outcome(lambda: 3, args()) == (3, "")


def test_a_refusal_exits_2_with_its_reason_redacted_and_what_was_done_about_it():
    refusal = FruitlakeError(f"INPUT 's3a://AKIAEXAMPLE:{SECRET}@bucket/in' does not exist")
    refusal.add_note("OUTPUT holds the previous results again")
    code, line = outcome(failing(refusal), args())
    assert code == 2 and line.startswith("fruitlake: error: INPUT ") and SECRET not in line
    assert line.endswith("does not exist; OUTPUT holds the previous results again")


@pytest.mark.parametrize(("command", "expected"), [
    ("run", "fruitlake: interrupted; rerun with --mode incremental to finish"),
    ("project-images", "fruitlake: interrupted; rerun with --mode incremental to finish"),
    ("pack", "fruitlake: interrupted"),
])
def test_ctrl_c_exits_130_and_says_how_to_finish_where_a_rerun_can(command, expected):
    assert outcome(failing(KeyboardInterrupt()), args(command)) == (130, expected)


def test_a_ctrl_c_that_surfaces_as_another_error_is_still_an_interruption():
    """PySpark cancels the jobs and the call in flight fails with a Py4J error: the SIGINT handler's flag decides."""
    INTERRUPTED.set()
    try:
        code, line = outcome(failing(Py4JJavaError("An error occurred while calling o42.count")), args())
    finally:
        INTERRUPTED.clear()
    assert (code, line) == (130, "fruitlake: interrupted; rerun with --mode incremental to finish")


@pytest.mark.parametrize(("number", "where", "said"), [
    (errno.EROFS, "/data/out/_lock.json", "OUTPUT '/data/out' is on a read-only file system"),
    (errno.ENOSPC, "/data/out/_store", "OUTPUT '/data/out' is on a full file system (no space left on device)"),
    (errno.EDQUOT, "/data/out", "OUTPUT '/data/out' is over its disk quota"),
    (errno.EACCES, "/data", "OUTPUT '/data/out' cannot be written (permission denied)"),
    (errno.ENOTDIR, "/data", "OUTPUT '/data/out' cannot be created: a part of its path is a file, not a folder"),
    (errno.ENOSPC, "/tmp/spark-1/blockmgr", "'/tmp/spark-1/blockmgr' is on a full file system (no space left on "
                                            "device)"),
], ids=["read-only", "full", "quota", "denied-on-a-parent", "through-a-file", "full-elsewhere"])
def test_a_failure_to_write_names_the_place_and_what_the_file_system_said(number, where, said):
    code, line = outcome(failing(OSError(number, "os words", where)), args())
    assert (code, line) == (1, f"fruitlake: failed: {said}")


def test_a_write_failure_worded_by_java_blames_output_or_sparks_temporary_folder():
    java = Py4JJavaError("An error occurred while calling o77.save.\n: java.io.IOException: No space left on device\n"
                         "\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)")
    code, line = outcome(failing(java), args(output="/data/out"))
    assert code == 1 and line.startswith("fruitlake: failed: OUTPUT '/data/out' (or Spark's temporary folder) is "
                                         "on a full file system (no space left on device): Py4JJavaError: ")
    assert "FileOutputStream" not in line  # no Java stack frame


def test_anything_else_is_one_redacted_line_with_the_type_and_the_cause():
    java = Py4JJavaError(f"An error occurred while calling o9.load.\n: java.net.ConnectException: http://u:{SECRET}@"
                         "127.0.0.1:9 refused\n\tat sun.nio.ch.Net.connect0(Native Method)\nCaused by: "
                         "java.net.ConnectException: Connection refused\n\t... 40 more")
    code, line = outcome(failing(java), args())
    assert code == 1 and "\n" not in line and SECRET not in line and "Native Method" not in line
    assert line.startswith("fruitlake: failed: Py4JJavaError: java.net.ConnectException: http://u:***@127.0.0.1:9")
    assert line.endswith("(caused by java.net.ConnectException: Connection refused)")


def test_a_python_traceback_from_a_worker_is_cut_to_its_first_and_last_line():
    worker = RuntimeError("Python worker failed\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                          "ValueError: bad batch")
    assert outcome(failing(worker), args()) == (
        1, "fruitlake: failed: RuntimeError: Python worker failed ValueError: bad batch")


def test_system_exit_passes_through():
    with pytest.raises(SystemExit):
        outcome(failing(SystemExit(2)), args())


@pytest.mark.parametrize("before", ["", "\rmodel       mobilenet_v2 (onnx, fp32)  0:05"])
def test_native_noise_is_dropped_also_when_it_follows_a_partial_line_in_the_pipe(before):
    """TensorFlow's first C++ line reaches the relay on its own, or glued to a progress line still being redrawn
    (a leading `\\r`, no line end yet) when both arrive within one idle period: it never reaches the screen, the
    progress line does, and so does what follows."""
    import os

    from fruitlake.console import _Relay

    screen, into_screen = os.pipe()
    relay = _Relay(into_screen, drop_native_noise=True)  # `into_screen` now feeds the relay's pipe
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1796506857.899073   31916 port.cc:153] oneDNN custom operations are on.\n")
    os.write(into_screen, (before + noise + f"featurize   12 images  token={SECRET}\n").encode())
    relay.restore()  # relays what is in the pipe, then points the descriptor back at the screen
    os.close(into_screen)
    os.close(relay.target)
    shown = b""
    while chunk := os.read(screen, 65536):
        shown += chunk
    os.close(screen)
    text = shown.decode()
    assert "absl" not in text and "oneDNN" not in text, text
    assert text == before + "featurize   12 images  token=***\n", text
