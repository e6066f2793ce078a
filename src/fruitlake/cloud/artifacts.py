"""What `up` uploads: the fruitlake wheel, a bootstrap script installing it on each node, the job script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fruitlake import FruitlakeError

CODE_PREFIX = "code/"
LOGS_PREFIX = "logs/"
BOOTSTRAP_KEY = CODE_PREFIX + "bootstrap.sh"
JOB_KEY = CODE_PREFIX + "fruitlake_job.py"
VENV = "/opt/fruitlake/venv"
VENV_PYTHON = f"{VENV}/bin/python"
NODE_PYTHON = "python3.11"  # Amazon Linux 2023 (EMR 7) ships 3.9; fruitlake needs 3.11 or 3.12

NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
              ".hypothesis", "data", "out", "spark-warehouse", "metastore_db")
_WHEEL = re.compile(r"^fruitlake-[0-9][^-]*-py3-none-any\.whl$")

# Runs as the hadoop user on every node, before YARN and Spark start; any failing command fails the cluster,
# so a broken install shows up as a bootstrap failure in `status`, not as a mysterious step error.
BOOTSTRAP_SCRIPT = f"""#!/bin/bash
# fruitlake bootstrap action: a Python venv with fruitlake and its dependencies, used by Spark on this node.
# Usage: bootstrap.sh s3://BUCKET/code/fruitlake-VERSION-py3-none-any.whl
set -euo pipefail
wheel_uri="$1"
venv={VENV}
sudo dnf install -y -q {NODE_PYTHON} {NODE_PYTHON}-pip
sudo mkdir -p "$(dirname "$venv")"
sudo chown "$(id -u):$(id -g)" "$(dirname "$venv")"
{NODE_PYTHON} -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
wheel="$(dirname "$venv")/$(basename "$wheel_uri")"
aws s3 cp --only-show-errors "$wheel_uri" "$wheel"
"$venv/bin/python" -m pip install --quiet --no-cache-dir "$wheel[cloud]"
"$venv/bin/python" -c "import fruitlake, onnxruntime, pyarrow; print('fruitlake', fruitlake.__version__)"
"""

# spark-submit runs this file with the venv's Python; the work is done by the installed package.
JOB_SCRIPT = '''"""EMR step entry point: `spark-submit fruitlake_job.py run INPUT OUTPUT ...` on YARN."""

import sys

from fruitlake.cloud.job import main

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
    """`pip wheel --no-deps SOURCE`: the nodes install the dependencies themselves, from PyPI."""
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
