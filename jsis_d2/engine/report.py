"""Run reports: the metrics summary table (JSON + text) and the loss-curve plot, read from what
Detectron2's trainer writes (``OUTPUT_DIR/metrics.json``, one JSON object per line)."""
import json
import logging
import math
import os

__all__ = ["read_metrics_json", "summarize_results", "format_summary", "plot_loss_curves"]

logger = logging.getLogger(__name__)

# (row label, section, key) of the summary table; missing entries are shown as "-".
SUMMARY_ROWS = [
    ("PQ", "panoptic_seg", "PQ"),
    ("SQ", "panoptic_seg", "SQ"),
    ("RQ", "panoptic_seg", "RQ"),
    ("PQ_th", "panoptic_seg", "PQ_th"),
    ("SQ_th", "panoptic_seg", "SQ_th"),
    ("RQ_th", "panoptic_seg", "RQ_th"),
    ("PQ_st", "panoptic_seg", "PQ_st"),
    ("SQ_st", "panoptic_seg", "SQ_st"),
    ("RQ_st", "panoptic_seg", "RQ_st"),
    ("mIoU", "sem_seg", "mIoU"),
    ("AP@0.5 (mask)", "segm", "AP50"),
    ("RPN mean recall", "rpn", "mean_recall"),
]


def read_metrics_json(path):
    """Detectron2's metrics.json -> list of dicts (one per logged iteration / evaluation)."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line: {e}") from e
    return rows


def summarize_results(results):
    """Evaluator result dict ({section: {metric: value}}) -> ordered {row label: value|None}."""
    out = {}
    for label, section, key in SUMMARY_ROWS:
        value = (results or {}).get(section, {}).get(key)
        out[label] = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return out


def format_summary(summary, title="JSIS-Net results"):
    """{label: value} -> a fixed-width text table."""
    width = max(len(k) for k in summary)
    lines = [title, "-" * (width + 12)]
    for k, v in summary.items():
        lines.append(f"{k:<{width}}  {'-' if v is None else f'{v:8.2f}' if k != 'RPN mean recall' else f'{v:8.3f}'}")
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
