"""Run reports: the metrics summary table (JSON + text) and the loss-curve plot, read from what
Detectron2's trainer writes (``OUTPUT_DIR/metrics.json``, one JSON object per line).

A run killed while Detectron2's JSONWriter wrote a line leaves a torn last line. Reading
skips it with a warning; :func:`set_aside_torn_metrics_line`, called before a resumed run
appends to the file, moves it to ``metrics.json.torn`` so it does not end up glued to the
next line in the middle of the file. A bad line anywhere else is an error naming the line.
At resume, :func:`drop_metrics_after` sets aside the lines the killed run logged after its
last checkpoint, so each iteration keeps one value.
"""

import json
import logging
import math
import os

from .checks import UsageError

__all__ = [
    "read_metrics_json",
    "set_aside_torn_metrics_line",
    "drop_metrics_after",
    "summarize_results",
    "format_summary",
    "plot_loss_curves",
]

logger = logging.getLogger(__name__)

# (row label, section, key) of the summary table; missing entries are shown as "-".
SUMMARY_ROWS = [
    (f"{m}Q{part}", "panoptic_seg", f"{m}Q{part}") for part in ("", "_th", "_st") for m in "PSR"
]
SUMMARY_ROWS += [
    ("mIoU", "sem_seg", "mIoU"),
    ("AP@0.5 (mask)", "segm", "AP50"),
    ("RPN mean recall", "rpn", "mean_recall"),
]


def read_metrics_json(path):
    """Detectron2's metrics.json -> list of dicts (one per logged iteration / evaluation).

    A last line that is not JSON (torn by a kill) is skipped with a warning; a bad line
    before it raises :class:`UsageError` naming the file and line.
    """
    with open(path) as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines) - 1:
                raise UsageError(
                    f"{path}:{n}: not a JSON line ({e}); the file is corrupt before its last line"
                ) from e
            logger.warning(
                "%s:%d: skipping a torn last line (%d characters): %s", path, n, len(line), e
            )
    return rows


def set_aside_torn_metrics_line(path):
    """When ``path`` (a metrics.json) does not end with a newline, move its unfinished last
    line to ``<path>.torn`` (appended, so earlier ones are kept) and cut it from ``path``.
    Returns the text moved ("" when the file is fine or absent)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ""
    if not data or data.endswith(b"\n"):
        return ""
    keep = data.rfind(b"\n") + 1
    torn = data[keep:].decode("utf-8", errors="replace")
    try:
        json.loads(torn)
    except ValueError:
        pass
    else:  # a complete record, cut just before its newline
        with open(path, "ab") as f:
            f.write(b"\n")
        return ""
    with open(path + ".torn", "a") as f:
        f.write(torn + "\n")
    os.truncate(path, keep)
    logger.warning(
        "%s ended with an unfinished line (a killed run?); moved it to %s.torn", path, path
    )
    return torn


def drop_metrics_after(path, iteration):
    """Cut from ``path`` (a metrics.json) every line from the first one logged for an
    iteration after ``iteration`` (a resumed run's checkpoint) to the end: those steps were
    lost with the killed run and the resumed run logs them again, so keeping them would give
    two values for one iteration. The cut lines are appended to ``<path>.superseded`` (kept,
    not deleted) before the file is truncated in place (the file may already be open for
    appending by Detectron2's JSONWriter: a rename would leave it writing to the old file).
    Returns the number of lines moved."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    offset = 0
    for line in data.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            if row["iteration"] > iteration:
                break
        offset += len(line)
    tail = data[offset:]
    if not tail:
        return 0
    with open(path + ".superseded", "ab") as f:
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, offset)
    moved = len([line for line in tail.splitlines() if line.strip()])
    logger.warning(
        "%s: moved the %d line(s) logged after iteration %d (by the run that was stopped; this "
        "run logs those iterations again) to %s.superseded",
        path,
        moved,
        iteration,
        path,
    )
    return moved


def summarize_results(results):
    """Evaluator result dict ({section: {metric: value}}) -> ordered {row label: value|None}."""
    out = {}
    for label, section, key in SUMMARY_ROWS:
        value = (results or {}).get(section, {}).get(key)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        out[label] = None if missing else float(value)
    return out


def format_summary(summary, title="JSIS-Net results"):
    """{label: value} -> a fixed-width text table."""
    width = max(len(k) for k in summary)
    lines = [title, "-" * (width + 12)]
    for k, v in summary.items():
        fmt = "{:8.3f}" if k == "RPN mean recall" else "{:8.2f}"
        lines.append(f"{k:<{width}}  {'-' if v is None else fmt.format(v)}")
    return "\n".join(lines)


def plot_loss_curves(metrics, out_png, title="training losses"):
    """Plot total_loss and every loss_* (the weighted losses) against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in metrics if "total_loss" in r and "iteration" in r]
    if not rows:
        raise ValueError("no training loss in the metrics (did training log any iteration?)")
    keys = ["total_loss"] + sorted({k for r in rows for k in r if k.startswith("loss_")})
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for k in keys:
        pts = [(r["iteration"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=2 if k == "total_loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    logger.info("wrote loss curves to %s", out_png)
    return out_png
