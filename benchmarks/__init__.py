"""Benchmarks behind tools/benchmark.py: one module per subcommand (add_arguments, run)."""
