"""What `up` uploads: the fruitlake wheel, a bootstrap script installing it on each node, the lifetime script,
the job script."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fruitlake import FruitlakeError

CODE_PREFIX = "code/"
LOGS_PREFIX = "logs/"
WEIGHTS_PREFIX = "weights/"
BOOTSTRAP_KEY = CODE_PREFIX + "bootstrap.sh"
LIFETIME_KEY = CODE_PREFIX + "lifetime.sh"
JOB_KEY = CODE_PREFIX + "fruitlake_job.py"
NODE_ROOT = "/opt/fruitlake"
VENV = f"{NODE_ROOT}/venv"
VENV_PYTHON = f"{VENV}/bin/python"
NODE_PYTHON = "python3.11"  # Amazon Linux 2023 (EMR 7) ships 3.9; fruitlake needs 3.11 or 3.12
NODE_PYTHON_VERSION = "3.11"
NODE_EXTRA = "node"  # pyproject.toml: ONNX Runtime executor + report; no TensorFlow, no PySpark (EMR has its own)
# Amazon Linux 2023 has glibc 2.34, so it runs manylinux wheels up to 2_34; pip needs every tag named.
NODE_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
CONSTRAINTS = "constraints.txt"  # in the package (the versions the tests use) and in each wheelhouse
NOT_FOR_NODES = ("tensorflow", "keras", "tf2onnx", "openvino", "pyspark")

NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
              ".hypothesis", "data", "out", "spark-warehouse", "metastore_db", ".cache")
_WHEEL = re.compile(r"^fruitlake-[0-9][^-]*-py3-none-any\.whl$")

# Runs as the hadoop user on every node, before YARN and Spark start; any failing command fails the cluster,
# so a broken install shows up as a bootstrap failure in `status`, not as a mysterious step error.
# pip installs only from the wheelhouse copied from the bucket (--no-index): the same pinned versions on every
# node, and no internet needed (a private subnet only needs the S3 gateway endpoint).
BOOTSTRAP_SCRIPT = f"""#!/bin/bash
# fruitlake bootstrap action: a Python venv with fruitlake's node runtime (ONNX Runtime, no TensorFlow, no
# PySpark: EMR's Spark brings its own), installed from the pinned wheelhouse in the bucket, without PyPI.
# Usage: bootstrap.sh s3://BUCKET/code/fruitlake-VERSION-py3-none-any.whl s3://BUCKET/code/wheelhouse-KEY/
set -euo pipefail
wheel_uri="$1"
wheelhouse_uri="${{2%/}}/"
root="${{FRUITLAKE_NODE_ROOT:-{NODE_ROOT}}}"  # overridden only by the test that runs this script
venv="$root/venv"
started=$SECONDS
sudo dnf install -y -q {NODE_PYTHON} {NODE_PYTHON}-pip
sudo mkdir -p "$root"
sudo chown "$(id -u):$(id -g)" "$root"
wheels="$root/wheelhouse"
aws s3 cp --only-show-errors --recursive "$wheelhouse_uri" "$wheels"
aws s3 cp --only-show-errors "$wheel_uri" "$wheels/"
{NODE_PYTHON} -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --no-index --find-links "$wheels" \\
  --constraint "$wheels/{CONSTRAINTS}" "$wheels/$(basename "$wheel_uri")[{NODE_EXTRA}]"
"$venv/bin/python" - <<'CHECK'
import importlib.util

import fruitlake, numpy, onnxruntime, pandas, PIL, pyarrow, matplotlib, sklearn  # noqa: F401 - the import check
unwanted = [name for name in {NOT_FOR_NODES!r} if importlib.util.find_spec(name)]
if unwanted:
    raise SystemExit(f"fruitlake bootstrap: {{unwanted}} must not be installed on EMR nodes")
print("fruitlake", fruitlake.__version__, "onnxruntime", onnxruntime.__version__)
CHECK
rm -rf "$wheels"
echo "fruitlake venv ready in $((SECONDS - started)) s"
"""

# The cluster's lifetime (fruitlake.cloud.limits): the first bootstrap action, so the shutdown is scheduled before
# anything else can hang. Every node runs it; only the primary schedules. instance.json's isMaster is the key EMR's
# own run-if bootstrap action tests (EMR Management Guide, "Create bootstrap actions to install additional
# software"). `shutdown -h +MINUTES` returns at once; systemd powers the node off then.
LIFETIME_SCRIPT = """#!/bin/bash
# fruitlake lifetime: on the primary node, schedule its shutdown in MINUTES, which ends the cluster.
# Usage: lifetime.sh MINUTES
set -euo pipefail
minutes="$1"
info="${FRUITLAKE_INSTANCE_INFO:-/mnt/var/lib/info/instance.json}"  # overridden only by the test that runs this
if grep -Eq '"isMaster" *: *true' "$info"; then
  sudo shutdown -h "+$minutes" "fruitlake: the cluster's lifetime (its budget) is used up"
  echo "fruitlake: this primary node shuts down in $minutes min, ending the cluster"
else
  echo "fruitlake: not the primary node; the primary's shutdown ends the cluster"
fi
"""

# spark-submit runs this file with the venv's Python; the work is done by the installed package.
JOB_SCRIPT = '''"""EMR step entry point: `spark-submit fruitlake_job.py --config JSON` on YARN (see fruitlake.job)."""

import sys

from fruitlake.job import main

raise SystemExit(main(sys.argv[1:]))
'''


def check_wheel(path: str | Path) -> Path:
    wheel = Path(path).expanduser()
    if not wheel.is_file():
        raise FruitlakeError(f"wheel {str(path)!r} does not exist")
    if not _WHEEL.match(wheel.name):
        raise FruitlakeError(f"{wheel.name!r} is not a fruitlake wheel (fruitlake-VERSION-py3-none-any.whl)")
    return wheel


def build_wheel(source: str | Path, into: str | Path | None = None) -> Path:
    """`pip wheel --no-deps SOURCE`: the dependencies go to the nodes as a wheelhouse (`build_wheelhouse`)."""
    root = Path(source).expanduser().resolve()
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or not re.search(r'(?m)^name\s*=\s*"fruitlake"', pyproject.read_text()):
        raise FruitlakeError(
            f"{str(root)!r} is not the fruitlake source tree (no pyproject.toml naming fruitlake); "
            "run from the repository or pass --wheel PATH"
        )
    target = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="fruitlake-wheel-"))
    with tempfile.TemporaryDirectory(prefix="fruitlake-source-") as scratch:
        # A clean copy: setuptools would package stale files left in the tree's build/ folder.
        copy = Path(scratch) / "fruitlake"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(target)]
        done = subprocess.run([*command, str(copy)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FruitlakeError(f"building the wheel from {root} failed:\n{done.stderr.strip()[-2000:]}")
    wheels = sorted(target.glob("fruitlake-*-py3-none-any.whl"))
    if len(wheels) != 1:
        raise FruitlakeError(f"expected one fruitlake wheel in {target}, found {[w.name for w in wheels]}")
    return wheels[0]


def wheel_key(wheel: Path) -> str:
    return CODE_PREFIX + wheel.name


@dataclass(frozen=True)
class Wheelhouse:
    """The pinned wheels a node installs, with the constraints file; its key names its folder in the bucket."""

    folder: Path
    key: str

    @property
    def prefix(self) -> str:
        return f"{CODE_PREFIX}wheelhouse-{self.key}/"

    def files(self) -> list[Path]:
        return sorted(path for path in self.folder.iterdir() if path.is_file() and not path.name.startswith("."))

    @property
    def megabytes(self) -> float:
        return sum(path.stat().st_size for path in self.files()) / 1e6


def constraints_text() -> str:
    return resources.files("fruitlake").joinpath(CONSTRAINTS).read_text()


def node_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of the wheel: what its node extra pulls in, with the base dependencies."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise FruitlakeError(f"{wheel.name} has no .dist-info/METADATA: build it with `pip wheel`, or drop --wheel")
        metadata = archive.read(names[0]).decode()
    return sorted(line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:"))


def wheelhouse_key(wheel: Path) -> str:
    """What decides a wheelhouse's content: the pins, the wheel's requirements, the nodes' platform."""
    identity = "\n".join([constraints_text(), *node_requirements(wheel), NODE_EXTRA, NODE_PYTHON_VERSION,
                          *NODE_PLATFORMS])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def build_wheelhouse(wheel: Path, cache: Path | None = None, echo: Callable[[str], None] = print) -> Wheelhouse:
    """`pip download` of the wheel's node extra for the nodes' platform, pinned by the constraints file.

    Cached by what decides its content (constraints, requirements, platform), so a second `up` downloads nothing.
    """
    from fruitlake.cache import cache_dir

    constraints = constraints_text()
    key = wheelhouse_key(wheel)
    folder = (cache or cache_dir() / "wheelhouse") / key
    if (folder / ".complete").is_file():
        return Wheelhouse(folder, key)
    echo(f"downloading the nodes' wheelhouse (pinned, {', '.join(NODE_PLATFORMS)}, Python {NODE_PYTHON_VERSION})")
    partial = folder.with_name(f".{key}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / CONSTRAINTS).write_text(constraints)
    platforms = [flag for platform in NODE_PLATFORMS for flag in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *platforms,
               "--python-version", NODE_PYTHON_VERSION, "--implementation", "cp",
               "--constraint", str(partial / CONSTRAINTS), "--dest", str(partial), f"{wheel}[{NODE_EXTRA}]"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise FruitlakeError(f"downloading the nodes' wheelhouse failed (pip needs PyPI here, once):\n"
                             f"{done.stderr.strip()[-2000:]}")
    for copied in partial.glob("fruitlake-*.whl"):  # pip copies the wheel itself; it is uploaded on its own
        copied.unlink()
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return Wheelhouse(folder, key)


def uploads(wheel: Path, wheelhouse: Wheelhouse) -> dict[str, Path | bytes]:
    """What `up` puts in the bucket, by key: the wheel, its wheelhouse, the bootstrap script, the job script."""
    files: dict[str, Path | bytes] = {wheel_key(wheel): wheel}
    files.update({wheelhouse.prefix + path.name: path for path in wheelhouse.files()})
    files[BOOTSTRAP_KEY] = BOOTSTRAP_SCRIPT.encode()
    files[LIFETIME_KEY] = LIFETIME_SCRIPT.encode()
    files[JOB_KEY] = JOB_SCRIPT.encode()
    return files


def bootstrap_args(bucket: str, wheel: Path, wheelhouse: Wheelhouse) -> list[str]:
    return [f"s3://{bucket}/{wheel_key(wheel)}", f"s3://{bucket}/{wheelhouse.prefix}"]


@dataclass(frozen=True)
class Uploaded:
    """Where the uploaded code is, as RunJobFlow and the steps name it."""

    bootstrap: str  # s3:// URI of bootstrap.sh
    bootstrap_args: list[str]  # the wheel's and the wheelhouse's URIs
    lifetime: str  # s3:// URI of lifetime.sh
    job: str  # s3:// URI of fruitlake_job.py
