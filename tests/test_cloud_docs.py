"""The AWS runbook shows only commands the real command line accepts."""

import re
import shlex
from pathlib import Path

from fruitlake.cli import parser

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "aws.md"


def runbook_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("fruitlake ")]


def test_the_runbook_shows_every_cloud_action():
    actions = {shlex.split(command)[2] for command in runbook_commands()}
    assert actions == {"plan", "up", "status", "submit", "down"}


def test_every_runbook_command_parses():
    """One test over all of them: a runbook that lost its commands fails above, one with a bad flag here."""
    commands = runbook_commands()
    assert commands, f"no `fruitlake ...` command in the bash blocks of {RUNBOOK}"
    for command in commands:
        try:
            args = parser().parse_args(shlex.split(command)[1:])
        except SystemExit:  # argparse exits on an unknown flag or a missing argument
            raise AssertionError(f"the runbook's command does not parse: {command}") from None
        assert args.command == "cloud", command
