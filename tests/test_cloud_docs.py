"""The AWS runbook shows only commands the real command line accepts."""

import re
import shlex
from pathlib import Path

import pytest

from fruitlake.cli import parser

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "aws.md"


def runbook_commands() -> list[str]:
    if not RUNBOOK.is_file():
        return []
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("fruitlake ")]


def test_the_runbook_shows_every_cloud_action():
    if not RUNBOOK.is_file():
        pytest.skip("tests are not running from the source tree")
    actions = {shlex.split(command)[2] for command in runbook_commands()}
    assert actions == {"plan", "up", "status", "submit", "down"}


@pytest.mark.parametrize("command", runbook_commands() or ["fruitlake cloud status"])
def test_runbook_command_parses(command):
    args = parser().parse_args(shlex.split(command)[1:])  # argparse exits on an unknown flag
    assert args.command == "cloud"
