"""What `up` uploads and what `submit` forwards: bootstrap script, job entry point, wheel, run arguments."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fruitlake import FruitlakeError
from fruitlake.cli import parser
from fruitlake.cloud import artifacts

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
    assert node == ['fruitlake[executor,report,s3]; extra == "node"']
    executor_and_report = " ".join(line for line in requirements if 'extra == "executor"' in line
                                   or 'extra == "report"' in line or 'extra == "s3"' in line)
    assert "onnxruntime" in executor_and_report
    assert "boto3" in executor_and_report  # fetch.py's S3 client
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


def _submitted(*options: str):
    """The RunConfig `cloud submit` checks here and serializes for the step."""
    from fruitlake.cloud.cli import _run_config

    return _run_config(_submit(*options))


def test_submit_takes_exactly_the_run_options_given():
    from fruitlake.options import run_config

    def ran(*options: str):
        return run_config(parser().parse_args(["run", "s3://b/in", "s3://b/out", *options]))

    assert _submitted() == ran()
    given = ("--variance", "0.9", "--batch-size", "32", "--mode", "overwrite")
    submitted = _submitted(*given, "--no-wait", "--region", "eu-north-1")
    assert submitted == ran(*given)
    assert (submitted.variance, submitted.batch_size, submitted.mode) == (0.9, 32, "overwrite")
    assert (_submitted("--k", "7", "--max-pixels", "99").k, _submitted("--max-pixels", "99").max_pixels) == (7, 99)


def test_the_serialized_run_is_the_same_run_on_the_cluster():
    from fruitlake.config import from_json, to_json

    submitted = _submitted("--k", "12", "--image-size", "160", "--batch-size", "8", "--weights", "s3://b/w.h5")
    again = from_json(to_json(submitted))
    assert again == submitted and (again.k, again.image_size, again.batch_size) == (12, 160, 8)
    with pytest.raises(FruitlakeError, match="unknown fields"):
        from_json(to_json(submitted).replace('"k"', '"k_renamed"'))
