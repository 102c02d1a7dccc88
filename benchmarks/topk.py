"""Benchmark: test-time proposal budget. PQ on the synthetic validation split and per-image
latency for several RPN post-NMS top-k values, with a trained checkpoint.

One model is loaded once (``--config-file``, ``--weights``; default the demo's
``output/demo/model_final.pth``, made by ``make demo``); for each top-k the RPN's test-time
post-NMS top-k is set on the built model (``RPN.PRE_NMS_TOPK_TEST`` is raised to the largest
top-k if below it), and the validation split is run through the model and
:class:`JSISEvaluator` (PQ, mIoU, AP50, RPN recall). Latency = median over images of the
``model(inputs)`` call (network + postprocessing + panoptic merge; data loading and the
evaluator excluded), after one warm-up image. The top-k values are interleaved: every image is
run with each value in turn (the order reversed from one image to the next), so that load from
other processes hits all values alike; over ``--passes`` passes, the median of the passes'
medians is reported with their range (PQ is deterministic).

Pareto table: a top-k is Pareto-optimal when no other value is at least as fast with at least
the same PQ (one strictly better). Knee: among the Pareto points, the one farthest above the
straight line joining the fastest point and the best-PQ point, with latency and PQ each
scaled to [0, 1] (the Kneedle criterion); also the smallest top-k within ``--pq-tolerance``
PQ points of the best.

``--quick`` trains nothing: a randomly initialised quick model (``configs/quick/``) on a tiny
generated synthetic split, only to exercise the code path (its PQ numbers are meaningless).
"""

import functools
import logging
import os
import statistics
import tempfile

import torch

from .common import DEMO_CONFIG, DEMO_WEIGHTS, QUICK_CONFIG, tiny_synthetic
from .report import INTERLEAVED_NOTE, describe_load, markdown_table, with_spread
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "pareto_front", "knee_point"]


def add_arguments(parser):
    parser.add_argument("--weights", default=DEMO_WEIGHTS, help="trained checkpoint (make demo)")
    parser.add_argument(
        "--config-file", default=None, help=f"config of the checkpoint (default {DEMO_CONFIG})"
    )
    parser.add_argument(
        "--topk",
        type=int,
        nargs="+",
        default=None,
        help="post-NMS top-k values (default 10 25 50 100 200; quick 4 16)",
    )
    parser.add_argument("--dataset", default=None, help="default: the config's DATASETS.TEST[0]")
    parser.add_argument("--images", type=int, default=None, help="first N images (default all)")
    parser.add_argument(
        "--passes", type=int, default=None, help="timing passes (default 2, quick 1)"
    )
    parser.add_argument(
        "--pq-tolerance",
        type=float,
        default=0.5,
        help="PQ points: smallest top-k within this of the best",
    )


def pareto_front(points):
    """Indices of the Pareto-optimal points among ``points`` = [(latency, pq)]: no other
    point has latency <= and pq >= with one of them strict. Sorted by latency."""
    keep = []
    for i, (t, q) in enumerate(points):
        dominated = any(
            (t2 <= t and q2 >= q) and (t2 < t or q2 > q)
            for j, (t2, q2) in enumerate(points)
            if j != i
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def knee_point(points):
    """Index of the knee of the Pareto front of ``points`` = [(latency, pq)] (Kneedle: the
    Pareto point farthest above the chord from the fastest to the best-PQ Pareto point, on
    axes scaled to [0, 1]). With fewer than 3 Pareto points: the best-PQ point."""
    front = pareto_front(points)
    if len(front) < 3:
        return max(front, key=lambda i: (points[i][1], -points[i][0]))
    t = [points[i][0] for i in front]
    q = [points[i][1] for i in front]
    t0, t1, q0, q1 = t[0], t[-1], min(q), max(q)
    if t1 == t0 or q1 == q0:
        return front[-1]

    def gain(k):  # scaled PQ above the chord at the scaled latency
        x = (t[k] - t0) / (t1 - t0)
        y = (q[k] - q0) / (q1 - q0)
        y_line = (q[0] - q0) / (q1 - q0) + x * ((q[-1] - q[0]) / (q1 - q0))
        return y - y_line

    best = max(range(len(front)), key=gain)
    return front[best]


def _setup(args, tmp):
    import jsis_d2  # noqa: F401
    from jsis_d2.config import setup_cfg
    from jsis_d2.data.datasets import make_synthetic_datasets

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    if args.quick:
        config_file = args.config_file or QUICK_CONFIG
        names = tiny_synthetic(os.path.join(tmp, "synthetic"), "jsis_bench_topk", 1, 6)
        cfg = setup_cfg(config_file, ["MODEL.WEIGHTS", ""], freeze=False)
        dataset = names["val"]
        weights = None
    else:
        config_file = args.config_file or DEMO_CONFIG
        weights = args.weights
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"topk benchmark: trained checkpoint not found: {weights}. Produce it with "
                f"`make demo` (tools/run_demo.py, writes output/demo/model_final.pth) or pass "
                f"--weights PATH (and --config-file of that run); --quick runs without one."
            )
        cfg = setup_cfg(config_file, ["MODEL.WEIGHTS", weights], freeze=False)
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        if dataset.startswith("jsis_synthetic"):
            make_synthetic_datasets()  # reused when present (deterministic)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    model.eval()
    if weights:
        DetectionCheckpointer(model).load(weights)
    return cfg, model, dataset, config_file, weights


def interleaved_order(topks, image_index):
    """The top-k values in the order image ``image_index`` runs them: as given for even
    images, reversed for odd ones (so that no value always runs first)."""
    return list(topks) if image_index % 2 == 0 else list(topks)[::-1]


def _sweep(model, batches, dataset, topks, passes):
    """Per top-k: the median per-image latency of each pass, every image run with each top-k
    in turn (:func:`interleaved_order`), and the evaluator's metrics (first pass; PQ is
    deterministic)."""
    from jsis_d2.evaluation import JSISEvaluator

    rpn = model.proposal_generator
    with torch.no_grad():
        model(batches[0])  # warm-up
    times = {k: [] for k in topks}
    evaluators = {
        k: JSISEvaluator(dataset, output_dir=None, distributed=False, save_panoptic=False)
        for k in topks
    }
    for p in range(passes):
        per_image = {k: [] for k in topks}
        for i, inputs in enumerate(batches):
            for k in interleaved_order(topks, i):
                rpn.post_nms_topk[False] = k
                with torch.no_grad():
                    call = functools.partial(model, inputs)
                    t = time_calls({"model": call}, 1, warmup=0)["model"]
                per_image[k].append(t.wall[0] / len(inputs))
                if p == 0:
                    evaluators[k].process(inputs, t.last)
        for k in topks:
            times[k].append(statistics.median(per_image[k]))
            logger.info("topk %d pass %d: %.1f ms/image", k, p, 1000 * times[k][-1])
    metrics = {k: evaluators[k].evaluate() for k in topks}
    return times, metrics


def _row(k, times, m):
    return {
        "topk": k,
        "latency_ms": 1000 * statistics.median(times),
        "latency_passes_ms": [1000 * t for t in times],
        "PQ": m.get("panoptic_seg", {}).get("PQ"),
        "PQ_th": m.get("panoptic_seg", {}).get("PQ_th"),
        "PQ_st": m.get("panoptic_seg", {}).get("PQ_st"),
        "mIoU": m.get("sem_seg", {}).get("mIoU"),
        "AP50": m.get("segm", {}).get("AP50"),
        "rpn_recall": m.get("rpn", {}).get("mean_recall"),
    }


def run(args):
    from jsis_d2.data.dataset_mapper import JSISDatasetMapper

    from detectron2.data import DatasetCatalog, build_detection_test_loader

    torch.set_num_threads(args.threads)
    topks = args.topk or ([4, 16] if args.quick else [10, 25, 50, 100, 200])
    passes = args.passes or (1 if args.quick else 2)
    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model, dataset, config_file, weights = _setup(args, tmp)
        rpn = model.proposal_generator
        if rpn is None:
            raise ValueError(f"{config_file}: the model has no instance branch (no RPN top-k)")
        rpn.pre_nms_topk[False] = max(rpn.pre_nms_topk[False], max(topks))
        dicts = DatasetCatalog.get(dataset)[: args.images or None]
        loader = build_detection_test_loader(
            dicts, mapper=JSISDatasetMapper(cfg, is_train=False), num_workers=0
        )
        batches = list(loader)  # decode once; the timing is of the model only
        times, metrics = _sweep(model, batches, dataset, topks, passes)
    rows = [_row(k, times[k], metrics[k]) for k in topks]
    points = [(r["latency_ms"], r["PQ"] if r["PQ"] is not None else float("-inf")) for r in rows]
    front = pareto_front(points)
    best_pq = max(p[1] for p in points)
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    result = {
        "config_file": config_file,
        "weights": weights,
        "dataset": dataset,
        "images": len(dicts),
        "threads": args.threads,
        "passes": passes,
        "quick": bool(args.quick),
        "config_default_topk": int(cfg.MODEL.RPN.POST_NMS_TOPK_TEST),
        "knee_topk": rows[knee_point(points)]["topk"],
        "smallest_topk_within_tolerance": min(
            r["topk"]
            for r in rows
            if r["PQ"] is not None and r["PQ"] >= best_pq - args.pq_tolerance
        ),
        "pq_tolerance": args.pq_tolerance,
        "interleaved": True,
        "rows": rows,
        "load_average": [load0, load_average()],
    }
    result["markdown"] = markdown(result)
    return result


def _fmt(x, f="{:.1f}"):
    return "-" if x is None else f.format(x)


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    interleaved = bool(r.get("interleaved"))
    rows = []
    for x in r["rows"]:
        mark = "yes" + (" (knee)" if x["topk"] == r["knee_topk"] else "") if x["pareto"] else ""
        latency = (
            with_spread(x["latency_ms"], x["latency_passes_ms"], 0)
            if interleaved
            else f"{x['latency_ms']:.0f}"
        )
        rows.append(
            [x["topk"], latency]
            + [_fmt(x[k]) for k in ("PQ", "PQ_th", "PQ_st", "mIoU", "AP50", "rpn_recall")]
            + [mark]
        )
    lines = [
        f"Test-time RPN post-NMS top-k on {r['dataset']} ({r['images']} images), "
        f"{r['config_file']}, weights {r['weights'] or 'random init'}, CPU, {r['threads']} "
        f"threads. Latency: median per-image model call (network + postprocessing + merge), "
        f"median of {r['passes']} pass(es)"
        + (
            f" (their range in brackets); every image runs each top-k in turn. {INTERLEAVED_NOTE}. "
            if interleaved
            else ". "  # measured before the top-k values were interleaved
        )
        + describe_load(r["load_average"]),
        "",
        markdown_table(
            [
                "top-k",
                "latency (ms/image)",
                "PQ",
                "PQ things",
                "PQ stuff",
                "mIoU",
                "AP50 (segm)",
                "RPN recall",
                "Pareto",
            ],
            rows,
            "r" * 8 + "c",
        ),
        "",
        f"Knee of the Pareto front (Kneedle on scaled axes): top-k = {r['knee_topk']}; "
        f"smallest top-k within {r['pq_tolerance']} PQ of the best: "
        f"{r['smallest_topk_within_tolerance']}; the config's default "
        f"MODEL.RPN.POST_NMS_TOPK_TEST = {r['config_default_topk']}.",
    ]
    if r["quick"]:
        lines.append(
            "\n(--quick: random-init quick model on a tiny generated split: the PQ "
            "numbers are meaningless, only the code path is exercised.)"
        )
    return "\n".join(lines)
