"""``python -m benchmarks SUBCOMMAND ...`` from the repository root (= tools/benchmark.py)."""

import sys

from .cli import main

sys.exit(main())
