"""Small readers for the tests: the CSV and JSON a run leaves under OUTPUT, read without Spark."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_csv_dir(folder: Path) -> pd.DataFrame:
    parts = sorted(Path(folder).glob("part-*.csv"))
    assert parts, f"no CSV part files in {folder}"
    frames = [pd.read_csv(part, keep_default_na=False, na_values={"split": [""]}) for part in parts]
    return pd.concat(frames, ignore_index=True)


def read_manifest(output: Path) -> dict:
    return json.loads((Path(output) / "manifest.json").read_text())
