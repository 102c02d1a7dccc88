"""jsis_d2's benchmarks: one module per subcommand of tools/benchmark.py (``add_arguments``,
``run``, ``markdown``), plus the shared pieces (``common``: models, memory, FLOPs, inputs;
``timing``: the one timer and the load average; ``report``: the markdown table writer).

Not part of the installed library (setup.py packages only ``jsis_d2``): run from the repository
root, ``python tools/benchmark.py ...`` or ``python -m benchmarks ...``.
"""
