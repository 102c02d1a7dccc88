"""Benchmark: JSIS-Net (one shared backbone, both branches) vs two networks, each with its own
backbone (the same JSISNet class with ``MODEL.JSIS.BRANCHES`` ["instance"] and ["semantic"]).

Architecture: ``configs/Base-JSIS-R50-C4.yaml`` (R50-C4, PPM head) with random weights
(``MODEL.WEIGHTS ""``, GroupNorm, nothing frozen), CPU, K=133 / T=80 (COCO). The C4 head runs
the res5 stage once per ROI, so the proposal / ROI counts set the cost and are stated in the
result: test ``RPN.POST_NMS_TOPK_TEST`` (default 100, Base config: 1000), ``ROI_HEADS.SCORE_
THRESH_TEST`` 0 with ``TEST.DETECTIONS_PER_IMAGE`` 100 (random weights score every box ~1/81,
below Detectron2's 0.05: with 0 the mask path, which runs res5 again on each detection, is
always exercised, as with a trained COCO model that keeps up to 100), training ROI batch 64
per image, 256 training proposals, one image per step, SGD.

The three networks of one (size, mode) each live in their own spawned process and are called in
turn (joint, instance, semantic, joint, ...; ``common.measure_interleaved``), so that load from
other processes hits all three alike: inference = median of ``--repeats`` calls after
``--warmup``; train = one SGD step (forward + backward + update), median of repeats; the range
of the calls is reported beside each median. Peak memory = resident-set high-water mark
(VmHWM) of that process during the measured phase (reset just before it, weights included),
and the same minus the process's RSS after imports (``above imports``: weights + activations
+ allocator, without the Python / torch runtime that every process carries). FLOPs (fvcore,
MACs) of the joint network's inference are counted per module, which is where the explanation
of the time comes from.
"""

import logging
import statistics

from .common import build_jsis, measure_interleaved, size_pairs
from .report import INTERLEAVED_NOTE, describe_load, markdown_table, verdict, with_spread
from .timing import load_average

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "GOALS"]

NETWORKS = {
    "joint": ("semantic", "instance"),
    "instance": ("instance",),
    "semantic": ("semantic",),
}


def add_arguments(parser):
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="input sizes as H W pairs (default 400 400 512 1024; quick 128 128)",
    )
    parser.add_argument(
        "--depth", type=int, default=None, help="ResNet depth (default 50, quick 18)"
    )
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="test RPN post-NMS top-k (default 100, quick 20)",
    )
    parser.add_argument(
        "--detections",
        type=int,
        default=None,
        help="TEST.DETECTIONS_PER_IMAGE (default 100, quick 10)",
    )
    parser.add_argument(
        "--roi-batch", type=int, default=None, help="training ROIs per image (default 64, quick 16)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed inference calls (default 3, quick 1)"
    )
    parser.add_argument(
        "--train-repeats", type=int, default=None, help="timed training steps (default 2, quick 1)"
    )
    parser.add_argument("--no-train", action="store_true", help="skip the training-step rows")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the interleaved measurement this many times (fresh processes each time); "
        "times: median over all rounds' calls, memory: the largest peak",
    )


def _settings(args):
    q = args.quick
    s = {
        "sizes": size_pairs(args.sizes or ([128, 128] if q else [400, 400, 512, 1024])),
        "depth": args.depth or (18 if q else 50),
        "proposals": args.proposals or (20 if q else 100),
        "detections": args.detections or (10 if q else 100),
        "roi_batch": args.roi_batch or (16 if q else 64),
        "warmup": args.warmup,
        "repeats": args.repeats or (1 if q else 3),
        "train_repeats": args.train_repeats or (1 if q else 2),
    }
    # quick: the ROI res5 head of an R18 keeps a 512-wide bottleneck; shrink it (as the quick
    # configs do) so the smoke run stays in seconds.
    s["extra"] = ["MODEL.RESNETS.WIDTH_PER_GROUP", 8] if q else []
    s["post_nms_train"] = 64 if q else 256
    return s


def _combine(results):
    """Merge the per-round results of one (network, mode): median over all calls, max peak."""
    out = dict(results[0])
    times = [t for r in results for t in r["times_s"]]
    out.update(
        times_s=times,
        median_s=statistics.median(times),
        min_s=min(times),
        rounds=len(results),
        load_average=[r["load_average"] for r in results],
    )
    for key in ("peak_rss_mb", "peak_above_imports_mb"):
        out[key] = max(r[key] for r in results)
    return out


def _ratio(a, b):
    return None if not b else a / b


def model_kwargs(s, size, branches, extra=()):
    """``build_jsis`` keyword arguments of one network of a settings dict ``s`` (see
    ``_settings``) at ``size`` (H, W); ``extra`` config overrides are appended."""
    return dict(
        depth=s["depth"],
        size=size,
        branches=branches,
        post_nms_test=s["proposals"],
        detections=s["detections"],
        roi_batch=s["roi_batch"],
        post_nms_train=s["post_nms_train"],
        extra=list(s["extra"]) + list(extra),
    )


def _measure_rounds(size, s, args):
    """(network, mode) -> the per-round results of ``measure_interleaved`` at ``size``: the
    three networks in their own processes, called in turn."""
    sides = {net: (build_jsis, model_kwargs(s, size, b)) for net, b in NETWORKS.items()}
    modes = [("infer", s["warmup"], s["repeats"])]
    if not args.no_train:
        modes.append(("train", 1, s["train_repeats"]))
    raw = {}
    for rnd in range(args.rounds):
        for mode, warmup, repeats in modes:
            logger.info("joint: %dx%d %s, networks interleaved (round %d) ...", *size, mode, rnd)
            results = measure_interleaved(
                sides,
                mode=mode,
                size=size,
                warmup=warmup,
                repeats=repeats,
                threads=args.threads,
                flops=("joint",) if mode == "infer" and rnd == 0 else (),
            )
            for net, result in results.items():
                raw.setdefault((net, mode), []).append(result)
    return raw


def _ratios(row):
    """mode -> joint / (instance + semantic) of time, peak RSS and peak above imports."""
    ratios = {}
    for mode in ("infer", "train"):
        if mode not in row["joint"]:
            continue
        j, i, m = (row[n][mode] for n in NETWORKS)
        ratios[mode] = {
            key: _ratio(j[field], i[field] + m[field])
            for key, field in (
                ("time", "median_s"),
                ("peak_rss", "peak_rss_mb"),
                ("peak_above_imports", "peak_above_imports_mb"),
            )
        }
    return ratios


def run(args):
    s = _settings(args)
    rows = []
    load0 = load_average()
    for size in s["sizes"]:
        row = {"size": list(size)}
        for (net, mode), results in _measure_rounds(size, s, args).items():
            row.setdefault(net, {})[mode] = _combine(results)
        row["ratios"] = _ratios(row)
        rows.append(row)
        logger.info("joint %dx%d ratios: %s", *size, row["ratios"])
    result = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
        "threads": args.threads,
        "quick": bool(args.quick),
        "rounds": args.rounds,
        "interleaved": True,
        "rows": rows,
        "load_average": [load0, load_average()],
        "memory_method": "VmHWM of the measuring process (reset before the measured phase); "
        "'above imports' = that peak minus the RSS after imports, before building the model",
    }
    result["markdown"] = markdown(result)
    return result


#: The issue's goals for joint / (instance + semantic): (mode, measure) -> highest ratio.
GOALS = {
    ("infer", "time"): 0.85,
    ("infer", "peak_rss"): 0.75,
    ("train", "time"): 0.80,
    ("train", "peak_rss"): 0.75,
}
_MODES = {"infer": "inference", "train": "train step"}


def _time_memory_rows(row, spread=False):
    """Table rows of one input size: time and peak memory of each network and mode (with
    ``spread``: the range of the calls beside each median time)."""
    size = "x".join(map(str, row["size"]))
    out = []
    for mode in ("infer", "train"):
        if mode not in row["joint"]:
            continue
        j, i, m = (row[n][mode] for n in NETWORKS)
        rt = row["ratios"][mode]
        out.append(
            [
                f"{size}",
                f"{_MODES[mode]} time (s)",
                *(
                    with_spread(x["median_s"], x["times_s"]) if spread else f"{x['median_s']:.2f}"
                    for x in (j, i, m)
                ),
                f"{i['median_s'] + m['median_s']:.2f}",
                f"**{rt['time']:.2f}**",
            ]
        )
        peak = [f"{x['peak_rss_mb']:.0f} [{x['peak_above_imports_mb']:.0f}]" for x in (j, i, m)]
        out.append(
            [
                f"{size}",
                f"{_MODES[mode]} peak MiB",
                *peak,
                f"{i['peak_rss_mb'] + m['peak_rss_mb']:.0f} "
                f"[{i['peak_above_imports_mb'] + m['peak_above_imports_mb']:.0f}]",
                f"**{rt['peak_rss']:.2f}** [{rt['peak_above_imports']:.2f}]",
            ]
        )
    return out


def _goal_lines(rows):
    g = GOALS
    lines = [
        f"Goals: joint / (instance + semantic) <= {g[('infer', 'time')]:.2f} inference "
        f"time, <= {g[('train', 'time')]:.2f} train step time, <= "
        f"{g[('infer', 'peak_rss')]:.2f} peak memory."
    ]
    for row in rows:
        verdicts = [
            f"{_MODES[mode]} {'time' if measure == 'time' else 'peak memory'} "
            f"{row['ratios'][mode][measure]:.3f} "
            f"{verdict(row['ratios'][mode][measure] <= goal)}"
            for (mode, measure), goal in GOALS.items()
            if mode in row["ratios"]
        ]
        lines.append(f"- {'x'.join(map(str, row['size']))}: " + ", ".join(verdicts))
    return lines


def _flop_table(rows):
    """Where the joint network's inference FLOPs go, per input size."""
    out = []
    for row in rows:
        j = row["joint"]["infer"]
        if "gflops" not in j:
            continue
        b = j["gflops_by_module"]
        out.append(
            [
                "x".join(map(str, row["size"])),
                f"{j['gflops']:.1f}",
                f"{b.get('backbone', 0):.1f}",
                f"{b.get('proposal_generator', 0):.2f}",
                f"{b.get('roi_heads', 0):.1f}",
                f"{b.get('roi_heads.res5', 0):.1f}",
                f"{b.get('roi_heads.mask_head', 0):.1f}",
                f"{b.get('sem_seg_head', 0):.1f}",
                f"{100 * b.get('roi_heads.res5', 0) / j['gflops']:.0f}%",
                f"{j['gflops'] / j['median_s']:.1f}",
            ]
        )
    return markdown_table(
        [
            "input",
            "total",
            "backbone (to res4)",
            "RPN",
            "ROI heads",
            "of which res5 per ROI",
            "mask head",
            "PPM semantic head",
            "res5 share",
            "measured GMAC/s",
        ],
        out,
    )


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    s = r["settings"]
    if r.get("interleaved"):
        method = (
            f"{r['rounds']} round(s) of fresh processes, each network in its own; times: median "
            f"over all rounds' calls, their range in brackets. {INTERLEAVED_NOTE}; "
        )
    else:  # results measured before the sides were interleaved
        method = (
            f"{r['rounds']} round(s) in rotation (medians over all rounds' calls). Each cell "
            "measured in its own process; "
        )
    lines = [
        f"JSIS-Net vs two networks (instance-only + semantic-only, each with its own backbone), "
        f"R{s['depth']}-C4, random weights (GN), CPU, {r['threads']} threads, one image per call. "
        f"Test: {s['proposals']} RPN proposals (post-NMS top-k), {s['detections']} detections "
        f"(score threshold 0); train: {s['roi_batch']} ROIs/image, {s['post_nms_train']} "
        f"proposals, 1 image/step. Inference: median of {s['repeats']} after {s['warmup']} "
        f"warm-up; train step: median of {s['train_repeats']} after 1; {method}"
        f"memory = peak RSS of the measured phase (in brackets: above the "
        f"process's RSS after imports). " + describe_load(r["load_average"]),
        "",
        markdown_table(
            [
                "input",
                "mode",
                "joint",
                "instance-only",
                "semantic-only",
                "instance + semantic",
                "joint / (inst + sem)",
            ],
            [
                c
                for row in r["rows"]
                for c in _time_memory_rows(row, spread=bool(r.get("interleaved")))
            ],
            "llrrrrr",
        ),
        "",
        *_goal_lines(r["rows"]),
        "",
        "Where the inference time goes (fvcore GFLOPs = GMACs of the joint network, "
        "per image; postprocessing not counted):",
        "",
        _flop_table(r["rows"]),
        "",
        f"res5 runs once per ROI: {s['proposals']} proposals (box head) + {s['detections']} "
        f"detections (mask head) = {s['proposals'] + s['detections']} res5 passes per image, "
        f"independent of the image size; the shared backbone is the only part the joint "
        f"network saves, and it is the smaller part unless the image is large or the ROI "
        f"count small.",
    ]
    if r["quick"]:
        lines.append(
            "(--quick: tiny sizes and a narrow head; the numbers only exercise the code path.)"
        )
    return "\n".join(lines)
