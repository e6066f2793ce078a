"""Do two versions of fruitlake publish the same results? Runs both on the same INPUTs and compares them row by row.

    python bench/same_results.py OLD_SRC [--labels 4]

OLD_SRC is the `src` folder of another checkout (e.g. `git worktree add ../old <commit>`); it runs with this
checkout's interpreter and packages (PYTHONPATH, which Spark hands on to its Python workers). The INPUTs: real
photos from ../shared/data/grocery-fruits (the first `--labels` labels, all three splits) plus a corrupt JPEG and
an empty file; read as a local folder, as an S3 folder on moto's server on 127.0.0.1, and as a table each version
packs itself (`fruitlake pack`). For each pair it prints the rows only one side has, rows whose label or split
differ, the largest feature difference and the rejects' reasons that differ.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
GROCERY = REPO.parent / "shared" / "data" / "grocery-fruits"
WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_no_top.h5"


def make_input(root: Path, labels: int) -> Path:
    names = sorted(p.name for p in (GROCERY / "Training").iterdir())[:labels]
    for split in ("Training", "Validation", "Test"):
        for label in (name for name in names if (GROCERY / split / name).is_dir()):
            shutil.copytree(GROCERY / split / label, root / split / label)
    (root / "Training" / names[0] / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    (root / "Test" / names[0] / "empty.jpg").write_bytes(b"")
    return root


def fruitlake(src: Path | None, args: list[str], env: dict[str, str]) -> None:
    env = {**env, "PYTHONPATH": str(src)} if src else env
    done = subprocess.run([sys.executable, "-m", "fruitlake", *args], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"fruitlake {' '.join(args)} failed ({src or 'this checkout'}):\n{done.stderr[-3000:]}")


def rows(output: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """path -> (label, split, features) of the features dataset; path -> reason of the rejects."""
    table = pq.read_table(output / "features").to_pydict()
    published = {path: (label, split, np.asarray(features, dtype=np.float64))
                 for path, label, split, features in zip(table["path"], table["label"], table["split"],
                                                         table["features"], strict=True)}
    rejects = {}
    for part in sorted((output / "rejects").glob("part-*.csv")):
        with part.open(newline="") as lines:
            rejects.update((row["path"], row["reason"]) for row in csv.DictReader(lines))
    return published, rejects


def compare(name: str, old: Path, new: Path) -> bool:
    (old_rows, old_rejects), (new_rows, new_rejects) = rows(old), rows(new)
    only_old, only_new = sorted(set(old_rows) - set(new_rows)), sorted(set(new_rows) - set(old_rows))
    both = sorted(set(old_rows) & set(new_rows))
    relabelled = [p for p in both if old_rows[p][:2] != new_rows[p][:2]]
    worst = max((float(np.abs(old_rows[p][2] - new_rows[p][2]).max()) for p in both), default=0.0)
    reasons = {p: (old_rejects.get(p), new_rejects.get(p)) for p in set(old_rejects) | set(new_rejects)
               if old_rejects.get(p) != new_rejects.get(p)}
    same = not (only_old or only_new or relabelled or reasons) and worst <= 1e-4
    print(f"{name}: {len(old_rows)} vs {len(new_rows)} rows, {len(both)} in both, label/split differ {len(relabelled)}"
          f", largest feature difference {worst:.2e}, rejects {len(old_rejects)} vs {len(new_rejects)}: "
          f"{'THE SAME' if same else 'DIFFERENT'}")
    for title, paths in (("only old", only_old), ("only new", only_new), ("label/split", relabelled)):
        for path in paths[:5]:
            print(f"  {title}: {path}")
    for path, (was, now) in sorted(reasons.items())[:5]:
        print(f"  reject {path}: {was!r} -> {now!r}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old_src", type=Path)
    parser.add_argument("--labels", type=int, default=4)
    args = parser.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    work = Path(tempfile.mkdtemp(prefix="same-results-"))
    source = make_input(work / "in", args.labels)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "AWS_ACCESS_KEY_ID": "compare", "AWS_SECRET_ACCESS_KEY": "compare-secret", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
           "FRUITLAKE_WEIGHTS": os.environ.get("FRUITLAKE_WEIGHTS", str(WEIGHTS)),
           "FRUITLAKE_S3A_JARS": os.environ.get("FRUITLAKE_S3A_JARS", str(REPO / ".cache" / "jars"))}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="compare", aws_secret_access_key="compare-secret")
    client.create_bucket(Bucket="compare")
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        client.upload_file(str(path), "compare", f"photos/{path.relative_to(source).as_posix()}")
    inputs = {"local folder": str(source), "S3 folder": "s3a://compare/photos"}
    same = True
    for name, uri in inputs.items():
        outputs = {}
        for version, src in (("old", args.old_src), ("new", None)):
            outputs[version] = work / f"{version}-{name.replace(' ', '-')}"
            fruitlake(src, ["run", uri, str(outputs[version]), "--k", "8", "--quiet"], env)
        same &= compare(name, outputs["old"], outputs["new"])
    outputs = {}
    for version, src in (("old", args.old_src), ("new", None)):
        table = work / f"{version}-table"
        fruitlake(src, ["pack", str(source), str(table)], env)
        outputs[version] = work / f"{version}-from-table"
        fruitlake(src, ["run", str(table), str(outputs[version]), "--k", "8", "--quiet"], env)
    same &= compare("packed table", outputs["old"], outputs["new"])
    server.stop()
    print(f"work folder: {work}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
