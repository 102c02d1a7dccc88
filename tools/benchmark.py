#!/usr/bin/env python
"""JSIS-Net benchmarks (the ``benchmarks/`` package at the repository root, not installed).

    python tools/benchmark.py SUBCOMMAND [--quick] [--output DIR] [options]
    python tools/benchmark.py all --quick        # every subcommand, small (CI smoke)
    python tools/benchmark.py readme --results DIR   # docs/BENCHMARKS.md <- DIR/<name>.json

Same as ``python -m benchmarks ...`` from the repository root; see benchmarks/cli.py.
"""

import os
import sys

# A script's sys.path starts at tools/; the benchmarks package sits beside it, at the root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
