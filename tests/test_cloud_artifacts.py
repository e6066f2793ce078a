"""What `up` uploads and what `submit` forwards: bootstrap script, job entry point, wheel, run arguments."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fruitlake import FruitlakeError
from fruitlake.cli import parser
from fruitlake.cloud import artifacts
from fruitlake.cloud.cli import forwarded_run_args

REPOSITORY = Path(__file__).resolve().parents[1]


def test_bootstrap_script_is_valid_bash_that_installs_from_the_wheelhouse_only(tmp_path):
    script = tmp_path / "bootstrap.sh"
    script.write_text(artifacts.BOOTSTRAP_SCRIPT)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    lines = artifacts.BOOTSTRAP_SCRIPT.splitlines()
    assert lines[0] == "#!/bin/bash" and "set -euo pipefail" in lines
    assert "sudo dnf install -y -q python3.11 python3.11-pip" in lines
    assert 'python3.11 -m venv "$venv"' in lines
    assert any(line.startswith('root="${FRUITLAKE_NODE_ROOT:-/opt/fruitlake}"') for line in lines)
    pip = [line for line in lines if "pip install" in line]
    assert len(pip) == 1 and "--no-index" in pip[0] and "--find-links" in pip[0]  # never PyPI, never upgraded
    assert '[node]"' in artifacts.BOOTSTRAP_SCRIPT and "[cloud]" not in artifacts.BOOTSTRAP_SCRIPT
    assert artifacts.VENV_PYTHON == "/opt/fruitlake/venv/bin/python"


def test_the_node_extra_has_no_tensorflow_pyspark_or_openvino(tmp_path):
    if not (REPOSITORY / "pyproject.toml").is_file():
        pytest.skip("tests are not running from the source tree")
    wheel = artifacts.build_wheel(REPOSITORY, tmp_path)
    requirements = artifacts.node_requirements(wheel)
    always = [line for line in requirements if "extra ==" not in line]
    assert {line.split(">")[0].split("<")[0] for line in always} == {"pandas", "pyarrow", "numpy", "pillow"}
    node = [line for line in requirements if 'extra == "node"' in line]
    assert node == ['fruitlake[executor,report]; extra == "node"']
    executor_and_report = " ".join(line for line in requirements if 'extra == "executor"' in line
                                   or 'extra == "report"' in line)
    assert "onnxruntime" in executor_and_report
    for unwanted in artifacts.NOT_FOR_NODES:
        assert unwanted not in executor_and_report
    names = zipfile.ZipFile(wheel).namelist()
    assert "fruitlake/constraints.txt" in names  # `up` builds the wheelhouse from the installed package's pins


def test_job_script_runs_fruitlake_cli(tmp_path):
    script = tmp_path / "fruitlake_job.py"
    script.write_text(artifacts.JOB_SCRIPT)
    command = [sys.executable, str(script), "run", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: fruitlake run" in done.stdout and "INPUT" in done.stdout


def test_build_wheel_from_the_source_tree(tmp_path):
    if not (REPOSITORY / "pyproject.toml").is_file():
        pytest.skip("tests are not running from the source tree")
    wheel = artifacts.build_wheel(REPOSITORY, tmp_path)
    assert artifacts.check_wheel(wheel) == wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "fruitlake/job.py" in names and "fruitlake/pipeline.py" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert 'Requires-Dist: boto3>=1.34; extra == "cloud"' in zipfile.ZipFile(wheel).read(metadata).decode()
    assert artifacts.wheel_key(wheel) == f"code/{wheel.name}"


def test_build_wheel_refuses_a_folder_that_is_not_fruitlake(tmp_path):
    with pytest.raises(FruitlakeError, match="not the fruitlake source tree"):
        artifacts.build_wheel(tmp_path)


@pytest.mark.parametrize("name", ["fruitlake.whl", "other-0.1.0-py3-none-any.whl", "fruitlake-0.1.0.tar.gz"])
def test_check_wheel_refuses_what_is_not_a_fruitlake_wheel(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(FruitlakeError, match="not a fruitlake wheel"):
        artifacts.check_wheel(path)
    with pytest.raises(FruitlakeError, match="does not exist"):
        artifacts.check_wheel(tmp_path / "missing" / name)


def _submit(*options: str):
    return parser().parse_args(["cloud", "submit", "s3://b/in", "s3://b/out", *options])


def test_submit_forwards_exactly_the_run_options_given():
    assert forwarded_run_args(_submit()) == []
    args = _submit("--variance", "0.9", "--batch-size", "32", "--mode", "overwrite", "--no-wait", "--region",
                   "eu-north-1")
    assert forwarded_run_args(args) == ["--variance", "0.9", "--batch-size", "32", "--mode", "overwrite"]
    assert forwarded_run_args(_submit("--k", "7", "--max-pixels", "99")) == ["--k", "7", "--max-pixels", "99"]


def test_submit_forwarded_options_parse_back_as_the_same_run():
    args = _submit("--k", "12", "--image-size", "160", "--batch-size", "8", "--weights", "s3://b/w.h5")
    run = parser().parse_args(["run", "s3://b/in", "s3://b/out", *forwarded_run_args(args)])
    assert (run.k, run.image_size, run.batch_size) == (12, 160, 8)
    assert run.weights is None  # the network is not forwarded: submit uploads it and passes --weights/--onnx
