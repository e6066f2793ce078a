"""Entry point for spark-submit and EMR steps: `spark-submit [options] <this file> run INPUT OUTPUT ...`.

spark-submit takes a Python file, not a module. This file runs the command line inside the session that
spark-submit started (session.py finds it through PYSPARK_GATEWAY_PORT), with the master and resources
spark-submit chose. Its path: `python -c "import fruitlake.job as j; print(j.__file__)"`.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from fruitlake.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    # Run as a file, this folder is sys.path[0]: drop it, so our module names cannot shadow top-level ones.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    raise SystemExit(main(sys.argv[1:]))
