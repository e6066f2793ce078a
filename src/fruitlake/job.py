"""The one spark-submit entry point, for EMR steps and by hand: `spark-submit [options] <this file> ARGS`.

ARGS are `fruitlake`'s own (`run INPUT OUTPUT ...`), or `--config JSON [-v]`: the run `cloud submit` checked on
the user's machine and serialized (`config.to_json`), so the cluster runs exactly that config, not options
parsed again. spark-submit takes a Python file, not a module: this file runs the command inside the session
spark-submit started (session.py finds it through PYSPARK_GATEWAY_PORT), with the master and resources
spark-submit chose. Its path: `python -c "import fruitlake.job as j; print(j.__file__)"`.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from fruitlake import cli
    from fruitlake.config import STEP_CONFIG

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [STEP_CONFIG] and len(argv) >= 2:
        return cli.run_serialized(argv[1], verbose="-v" in argv[2:] or "--verbose" in argv[2:])
    return cli.main(argv)


if __name__ == "__main__":
    # Run as a file, this folder is sys.path[0]: drop it, so our module names cannot shadow top-level ones.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    raise SystemExit(main(sys.argv[1:]))
