"""`python -m fruitlake` is the command line."""

from fruitlake.cli import main

raise SystemExit(main())
