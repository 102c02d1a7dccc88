"""The pieces every benchmark's markdown is made of: one table writer, the goal verdict, the
load sentence and the ``--quick`` note. The blocks of docs/BENCHMARKS.md are these strings (see
readme.py).
"""

from typing import Iterable, Sequence

__all__ = ["markdown_table", "verdict", "yes_no", "describe_load", "with_spread", "QUICK_NOTE"]

#: How a result that was measured interleaved describes it (its JSON has "interleaved": true).
INTERLEAVED_NOTE = (
    "The compared sides are called in turn (A, B, A, B, ...), so that load from other "
    "processes hits every side alike"
)

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}

#: Appended to a quick run's markdown (tiny sizes: the numbers mean nothing).
QUICK_NOTE = "\n(--quick: tiny sizes; the numbers only exercise the code path.)"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A GitHub markdown table: ``| h1 | h2 |``, the alignment row, one line per row.

    Args:
        headers: column titles.
        rows: cells, already formatted (anything ``str()`` turns into the cell's text).
        align: one letter per column, ``l`` (left), ``r`` (right) or ``c`` (centre);
            empty (default): the first column left, the others right.
    Raises:
        ValueError when ``align`` or a row does not have one entry per column.
    """
    n = len(headers)
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or set(align) - set(_ALIGN):
        raise ValueError(f"markdown_table: align {align!r} must be {n} letters of l/r/c")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(_ALIGN[a] for a in align) + "|"]
    for row in rows:
        if len(row) != n:
            raise ValueError(f"markdown_table: row {list(row)} has {len(row)} cells, not {n}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """How the markdown marks a goal: met, or **missed**."""
    return "met" if ok else "**missed**"


def yes_no(flag) -> str:
    """A capability flag (e.g. the CPU's bf16 support) in the markdown."""
    return "yes" if flag else "no"


def with_spread(median: float, times: Sequence[float], digits: int = 2) -> str:
    """A time cell: the median, then the range of the calls in brackets: ``3.36 (3.30-3.45)``."""
    return f"{median:.{digits}f} ({min(times):.{digits}f}-{max(times):.{digits}f})"


def describe_load(before_after) -> str:
    """The markdown sentence for a result's ``load_average`` [before, after]."""
    return f"Load average {before_after[0]} -> {before_after[1]} (1-min, before -> after)."
