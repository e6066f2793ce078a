"""Peak RSS and time of `fruitlake pack` for two source trees, N/10 and N tiny files, in one run.

`python bench/pack_compare.py N [WORK] [OTHER_SRC]`: this checkout's `src` against OTHER_SRC (another checkout's
`src`, e.g. a `git worktree` of an older commit), each put first on PYTHONPATH.
"""
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench

work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.gettempdir()) / "fruitlake-pack-compare"
n = int(sys.argv[1])
here = str(Path(__file__).resolve().parents[1] / "src")
srcs = {"other": sys.argv[3], "this": here} if len(sys.argv) > 3 else {"this": here}
for count in (n // 10, n):
    tree = bench.tiny_tree(work / f"tiny-{count}", count)
    for name, src in srcs.items():
        table = work / f"table-{count}"
        shutil.rmtree(table, ignore_errors=True)
        r = bench.watched(["pack", str(tree), str(table)], {"PYTHONPATH": src})
        files = len(list(table.glob("*.parquet")))
        print(f"{count:>8,} files  {name:20s} {r['wall_s']:6.1f} s  peak RSS {bench._rss(r)}  table files {files}",
              flush=True)
