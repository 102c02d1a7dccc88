"""Atomic file writes (the implementation lives in the torch-free :mod:`jsis_runtime.atomic`,
which the deploy runtime shares)."""

from jsis_runtime.atomic import (
    TEMP_INFIX,
    atomic_open,
    atomic_write_text,
    is_atomic_temporary,
    remove_stale_temporaries,
)

__all__ = [
    "atomic_open",
    "atomic_write_text",
    "is_atomic_temporary",
    "remove_stale_temporaries",
    "TEMP_INFIX",
]
