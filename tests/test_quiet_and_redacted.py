"""What a user sees from `fruitlake run` in a subprocess, as from a terminal: only fruitlake's own lines (progress,
one error line, the JSON summary), every byte redacted, and one clear line for Ctrl-C, missing S3A jars and an
OUTPUT that cannot be written. Real runs of the installed command on a few generated images."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import fruitlake_env, kill_group, read_csv_dir, run_process

from fruitlake.progress import SHOWN

# fruitlake's own stderr lines: a stage's progress line (`featurize   6/6 images ... done in 0:07`, or
# `... failed after 0:03`) and its one-line messages (`fruitlake: error: ...`, `fruitlake: failed: ...`,
# `fruitlake: interrupted; ...`), and a warning of fruitlake's own loggers (`<time> WARNING fruitlake.session: ...`).
STAGES = SHOWN
PROGRESS_LINE = re.compile(rf"^(?:{'|'.join(STAGES)})\s+.*(?:done in|failed after) \d+:\d\d(?::\d\d)?$")
MESSAGE_LINE = re.compile(r"^fruitlake: (?:error|failed|interrupted)\b"
                          r"|^\S+ \S+ (?:WARNING|ERROR) fruitlake(?:\.\w+)*: ")
JVM_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?:TRACE|DEBUG|INFO|WARN|ERROR|FATAL) \S+: ")

# Secrets the tests plant in paths, URIs and the environment; none may be printed or written outside the data.
SECRETS = {
    "input": "in-SECRET-4ab1",
    "output": "out-SECRET-9c2e",
    "password": "ss-SECRET-77d0",
    "signature": "sig-SECRET-5e5e",
    "environment": "env-SECRET-wJalrXUtnFEMI",
}


def fruitlake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_process([sys.executable, "-m", "fruitlake", *args], env=env, timeout=900)


def not_fruitlake(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if line.strip() and not PROGRESS_LINE.match(line) and not MESSAGE_LINE.match(line)]


def assert_one_line_failure(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert done.returncode == code, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert not_fruitlake(done.stderr) == [], done.stderr[-3000:]
    messages = [line for line in lines if MESSAGE_LINE.match(line)]
    assert len(messages) == 1 and messages == lines[-1:], done.stderr[-3000:]
    for word in words:
        assert word in messages[0], messages[0]
    return messages[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """2 labels x 3 images and one corrupt file, in a folder whose path holds a secret-shaped name."""
    from fruitlake.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("quiet") / f"api_key={SECRETS['input']}" / "images"
    write_sample_data(root, classes=2, per_class=3, seed=3)
    (root / "Test" / "Banana" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def test_the_readme_path_on_a_terminal_prints_only_fruitlakes_lines_and_redraws_them(weights_path, tmp_path):
    """The README's path, `fruitlake sample-data` then `fruitlake run`, with stderr on a pseudo-terminal, in a HOME
    that cannot be written (so no conversion cache: TensorFlow runs): the stages redraw in place (`\\r`) though
    stderr is relayed through a redacting pipe; what stays on screen is fruitlake's own lines only, no Spark, JVM,
    TensorFlow, absl or ONNX Runtime lines (its telemetry warned from every worker that it could not store a device
    id under HOME), and one line saying the conversion could not be cached; stdout is the JSON summary; the CSV
    holds what --variance asked for."""
    import pty

    (tmp_path / "a-file").write_text("")
    env = fruitlake_env(weights_path, HOME=str(tmp_path / "a-file" / "home"))  # not even root can make it
    env.pop("FRUITLAKE_CACHE", None)
    images, output = tmp_path / "in", tmp_path / "out"
    made = fruitlake("sample-data", str(images), "--classes", "2", "--per-class", "6", env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "fruitlake", "run", str(images), str(output), "--variance", "0.9"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=follower, start_new_session=True)
    os.close(follower)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the run has closed the terminal
        while chunk := os.read(leader, 65536):
            shown += chunk
    os.close(leader)
    stdout = process.stdout.read().decode() if process.stdout else ""
    assert process.wait(600) == 0, shown[-3000:]
    text = shown.decode("utf-8", "replace").replace("\r\n", "\n")
    assert "\r" in text, text[-3000:]  # live redraws, not one line per stage
    on_screen = "\n".join(line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n"))  # what stays
    assert not_fruitlake(on_screen) == [], text[-3000:]
    [cache] = [line for line in on_screen.splitlines() if MESSAGE_LINE.match(line)]
    assert "WARNING fruitlake.onnx_cache: could not cache the ONNX model in " in cache, cache
    assert "(Not a directory): the run goes on" in cache and "set FRUITLAKE_CACHE" in cache, cache
    stages = [line.split()[0] for line in on_screen.splitlines() if line.strip() and line != cache]
    assert stages == list(STAGES), text[-3000:]
    [line] = stdout.splitlines()
    summary = json.loads(line)
    assert (summary["images_ok"], summary["images_rejected"]) == (12, 0)
    table = read_csv_dir(output / "pca_csv")
    assert len(table) == 12 and table.shape[1] == 3 + summary["k"]
    assert json.loads((output / "manifest.json").read_text())["explained_variance"] >= 0.9


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# The datasets' `path` column is the image's URI as Spark lists it, data the user asked for (and the key of the
# feature store): a folder named `api_key=...` is kept there as it is. Everything else is redacted.
DATASETS = ("pca_csv/", "features/", "rejects/", "_store/")


def test_verbose_prints_spark_and_fruitlake_logs_with_every_secret_redacted(images, weights_path, tmp_path):
    """-v prints everything (Python's logs, the JVM's INFO lines naming OUTPUT): all redacted, like every file.
    Secrets are planted in INPUT's and OUTPUT's paths and in the environment."""
    output = tmp_path / f"my_token={SECRETS['output']}" / "out"
    env = fruitlake_env(weights_path, AWS_SECRET_ACCESS_KEY=SECRETS["environment"])
    done = fruitlake("-v", "run", str(images), str(output), "--k", "2", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if JVM_LINE.match(line) and " INFO " in line]
    assert " INFO fruitlake." in done.stderr
    printed = done.stdout + done.stderr
    assert not [secret for secret in SECRETS.values() if secret in printed]
    # The JVM named OUTPUT in its own log lines: they went through the redaction too.
    assert [line for line in done.stderr.splitlines() if JVM_LINE.match(line) and "my_token=***" in line]
    written = _files(output)
    assert {"manifest.json", "report.json", "report.html"} <= set(written)
    leaks = {name for name, data in written.items() if not name.startswith(DATASETS)
             and any(secret.encode() in data for secret in SECRETS.values())}
    assert leaks == set()
    report = json.loads(written["report.json"])
    # An unquoted secret ends at whitespace (an AWS secret may hold `/`): the rest of such a path goes too.
    assert report["output"].endswith("my_token=***") and report["images_rejected"] == 1
    page = written["report.html"].decode()
    rejects_table = page[page.index("broken.jpg") - 2000:] if "broken.jpg" in page else page
    assert "api_key=***" in rejects_table


def test_an_unexpected_error_is_one_redacted_line(weights_path, tmp_path):
    """Hadoop cannot reach the host in INPUT: one line, no Java stack trace, no part of the password."""
    uri = f"http://alice:p@{SECRETS['password']}@127.0.0.1:9/images?X-Amz-Signature={SECRETS['signature']}"
    env = fruitlake_env(weights_path, AWS_SECRET_ACCESS_KEY=SECRETS["environment"])
    done = fruitlake("run", uri, str(tmp_path / "out"), env=env)
    line = assert_one_line_failure(done, done.returncode or 1)
    assert done.returncode != 0 and "alice:***@127.0.0.1:9" in line
    verbose = fruitlake("-v", "run", uri, str(tmp_path / "out"), env=env)
    assert verbose.returncode == done.returncode
    printed = done.stdout + done.stderr + verbose.stdout + verbose.stderr
    assert not [secret for secret in SECRETS.values() if secret in printed]
    assert not (tmp_path / "out").exists()


# ---- Messages (issue 12, class 8) ----------------------------------------------------------------------------

def test_ctrl_c_while_featurizing_says_how_to_finish(spark, weights_path, tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) once the featurize stage has begun; then
    the rerun the message asks for, from the command line in this process (the session's Spark, no report)."""
    from fruitlake.cli import main
    from fruitlake.sample_data import write_sample_data

    write_sample_data(tmp_path / "in", classes=3, per_class=50, seed=4)
    env = fruitlake_env(weights_path)
    command = [sys.executable, "-m", "fruitlake", "run", str(tmp_path / "in"), str(tmp_path / "out"), "--k", "2",
               "--commit-every", "30"]
    # SIGINT at its default in the run (a shell starting a background job ignores it, and the run would inherit
    # that: neither Python nor the JVM would then ever see the Ctrl-C)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    featurizing = threading.Event()

    def read_stderr():
        for line in process.stderr:
            lines.append(line)
            if line.startswith("load_model "):  # the stage before featurize has ended
                featurizing.set()
        featurizing.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert featurizing.wait(600) and process.poll() is None, "".join(lines)[-3000:]
        committed = tmp_path / "out" / "_store" / "batch=000001" / "_SUCCESS"
        for _ in range(6000):  # the first 30 images are in the store: the CNN is busy with the next 120
            if committed.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert committed.exists() and process.poll() is None, "".join(lines)[-3000:]
        os.killpg(process.pid, signal.SIGINT)
        process.wait(300)
        reader.join(60)
    finally:
        stdout = process.stdout.read() if process.poll() is not None else ""
        kill_group(process)
    stderr = "".join(lines)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == "fruitlake: interrupted; rerun with --mode incremental to finish", stderr
    assert "Py4J" not in stderr and "Traceback" not in stderr and stdout == ""
    assert "featurize" in stderr and "failed after" in stderr  # it was stopped while featurizing
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--mode", "incremental", "--no-report",
                     "--weights", weights_path])
    assert code == 0
    assert json.loads(printed.getvalue().splitlines()[-1])["images_total"] == 150
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["images_ok"] == 150 and manifest["cnn_images"] <= 120  # the committed batch was kept


def test_s3a_without_the_connector_jars_offline_says_how_to_get_them(weights_path, tmp_path):
    """No $FRUITLAKE_S3A_JARS and no way to Maven Central (an empty Ivy home, a proxy that refuses)."""
    env = fruitlake_env(weights_path)
    env.pop("FRUITLAKE_S3A_JARS", None)
    env["JAVA_TOOL_OPTIONS"] = (f"-Duser.home={tmp_path} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9 "
                                "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9")
    done = fruitlake("run", "s3a://fruits/images", "s3a://fruits/results", env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith("fruitlake: error: Spark could not start: the S3A connector jars are missing"), last
    assert "make jars" in last and "FRUITLAKE_S3A_JARS" in last and "Java gateway" not in last


@contextlib.contextmanager
def tmpfs(where: Path, *options: str):
    """A small tmpfs (tests run as root in CI; skipped where mounting is not allowed)."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_output_says_so_in_one_line(images, weights_path, tmp_path):
    """A real read-only file system; every other errno's words are in test_console.py."""
    with tmpfs(tmp_path / "ro", "ro", "size=1m") as folder:
        done = fruitlake("run", str(images), str(folder / "out"), env=fruitlake_env(weights_path))
    assert_one_line_failure(done, 1, "is on a read-only file system", str(folder / "out"))


def test_an_output_below_a_file_says_so_in_one_line(images, weights_path, tmp_path):
    """Works without root or mounts: a path whose parent is a file cannot be created."""
    (tmp_path / "a-file").write_text("not a folder")
    done = fruitlake("run", str(images), str(tmp_path / "a-file" / "out"), env=fruitlake_env(weights_path))
    assert_one_line_failure(done, 1, "a part of its path is a file, not a folder")


def test_a_wrong_java_home_is_one_line_before_any_jvm(images, weights_path, tmp_path):
    """Spark's launcher printed its own shell errors (`spark-class: line 71: .../bin/java: No such file`) first."""
    done = fruitlake("run", str(images), str(tmp_path / "out"),
                     env=fruitlake_env(weights_path, JAVA_HOME=str(tmp_path / "no-java")))
    assert_one_line_failure(done, 2, f"JAVA_HOME='{tmp_path / 'no-java'}' holds no bin/java", "Java 17")
    assert "spark-class" not in done.stderr and not (tmp_path / "out").exists()
