"""Atomic file writes (the implementation lives in the torch-free :mod:`jsis_runtime.atomic`,
which the deploy runtime shares)."""

from jsis_runtime.atomic import atomic_open, atomic_write_text

__all__ = ["atomic_open", "atomic_write_text"]
