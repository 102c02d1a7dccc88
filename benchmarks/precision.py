"""Benchmark: float32 vs bfloat16 (autocast, with and without channels_last) in one run.

Two models, CPU, random weights for the timings:

* "R50-C4 400x400": ``configs/Base-JSIS-R50-C4.yaml``, GN, K=133 / T=80, 100 test proposals
  and 100 detections (score threshold 0), 64 training ROIs/image, one image per call (as the
  ``joint`` benchmark);
* "demo R18-C4 192x192": ``configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml`` with its own
  proposal / ROI counts (10 test proposals, 20 detections, 16 ROIs/image), one image per call.

Variants (``--variants``): ``fp32``; ``bf16`` = ``TEST.PRECISION bfloat16`` for inference and
``SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION bfloat16`` for the training step; ``bf16_cl`` =
the same plus ``MODEL.JSIS.CHANNELS_LAST True``; ``fp32_cl`` (not by default): fp32 with
channels_last; ``fp32_d2roi`` (not by default): fp32 with ``MODEL.JSIS.SEPARABLE_ROI_ALIGN
False`` (torchvision's ROIAlign in training too). The variants of one (model, mode) are
measured together (:func:`benchmarks.common.measure_interleaved`): each in its own process,
called in turn, so that load from other processes hits all alike. Inference = median of
``--repeats`` calls (network + mask pasting + merge), train step = one SGD step, median of
``--train-repeats``, with the calls' range; peak memory = VmHWM of the measured phase.

PQ of the same checkpoint both ways, on ``jsis_synthetic_val``: ``--weights`` (a checkpoint of
``--pq-config``, default the demo's ``output/demo/model_final.pth`` when present); otherwise the
demo config is trained here from scratch in float32 for ``--train-iters`` iterations, and that
checkpoint is evaluated with every variant. No trained R50-C4 exists on this machine, so the PQ
delta of the headline line is the demo checkpoint's (the result says so).

The headline: ``bf16/fp32: inference X.XXx, train step Y.YYx, PQ delta Z.ZZ`` for R50-C4
400x400 (speed-ups = fp32 time / bf16 time, variant ``--headline``), checked against the goals
inference >= 2.5x, train step >= 1.7x, |PQ delta| <= 0.5.
"""

import logging
import os
import tempfile

import torch

from jsis_d2.precision import cpu_bf16_support, cpuinfo_field

from .common import (
    DEMO_CONFIG,
    DEMO_WEIGHTS,
    QUICK_CONFIG,
    build_jsis,
    measure_interleaved,
    run_isolated,
    tiny_synthetic,
)
from .report import (
    INTERLEAVED_NOTE,
    QUICK_NOTE,
    describe_load,
    markdown_table,
    verdict,
    with_spread,
    yes_no,
)
from .timing import load_average

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "VARIANTS", "VARIANT_NAMES", "GOALS"]

_BF16 = [
    "TEST.PRECISION",
    "bfloat16",
    "SOLVER.AMP.ENABLED",
    True,
    "SOLVER.AMP.PRECISION",
    "bfloat16",
]
#: Variant name -> config overrides.
VARIANTS = {
    "fp32": [],
    "bf16": _BF16,
    "bf16_cl": _BF16 + ["MODEL.JSIS.CHANNELS_LAST", True],
    "fp32_cl": ["MODEL.JSIS.CHANNELS_LAST", True],
    "fp32_d2roi": ["MODEL.JSIS.SEPARABLE_ROI_ALIGN", False],
}
#: Variant name -> its name in the markdown tables.
VARIANT_NAMES = {
    "fp32": "fp32",
    "bf16": "bf16",
    "bf16_cl": "bf16 + channels_last",
    "fp32_cl": "fp32 + channels_last",
    "fp32_d2roi": "fp32, Detectron2 ROIAlign",
}
#: Goals of the headline (R50-C4 400x400) on a bf16-capable CPU.
GOALS = {"inference": 2.5, "train_step": 1.7, "pq_delta": 0.5}


def add_arguments(parser):
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=sorted(VARIANTS),
        help="default: fp32 bf16 bf16_cl",
    )
    parser.add_argument(
        "--headline",
        default="bf16",
        choices=("bf16", "bf16_cl"),
        help="the bf16 variant of the headline line (default bf16)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="inference calls (default 3)")
    parser.add_argument("--train-repeats", type=int, default=None, help="train steps (default 2)")
    parser.add_argument(
        "--weights",
        default=None,
        help=f"checkpoint for PQ (default {DEMO_WEIGHTS} if present, else trained here)",
    )
    parser.add_argument(
        "--pq-config", default=None, help=f"config of --weights (default {DEMO_CONFIG})"
    )
    parser.add_argument(
        "--train-iters",
        type=int,
        default=None,
        help="iterations of the checkpoint trained here (default 300, quick 2)",
    )
    parser.add_argument(
        "--pq-images", type=int, default=None, help="first N validation images (default all)"
    )


def _models(quick):
    """Model name -> build_jsis kwargs (timing models, random weights)."""
    if quick:
        tiny = dict(
            depth=18,
            size=(64, 64),
            num_classes=9,
            num_things=4,
            post_nms_test=8,
            pre_nms_test=50,
            detections=5,
            roi_batch=8,
            post_nms_train=16,
            extra=["MODEL.RESNETS.WIDTH_PER_GROUP", 8],
        )
        return {"R18-C4 64x64 (quick)": tiny}
    return {
        "R50-C4 400x400": dict(
            depth=50,
            size=(400, 400),
            post_nms_test=100,
            detections=100,
            roi_batch=64,
            post_nms_train=256,
        ),
        "demo R18-C4 192x192": dict(
            depth=18,
            size=(192, 192),
            config_file=DEMO_CONFIG,
            num_classes=9,
            num_things=4,
            post_nms_test=10,
            pre_nms_test=300,
            detections=20,
            roi_batch=16,
            post_nms_train=128,
        ),
    }


# ---------------------------------------------------------------------------- PQ
def _train_checkpoint(config_file, out_dir, iters, threads, datasets):
    """Train ``config_file`` from scratch in float32 for ``iters`` iterations (no evaluation);
    returns the path of model_final.pth. Meant to run in its own process."""
    import jsis_d2  # noqa: F401
    from jsis_d2.config import setup_cfg
    from jsis_d2.engine.trainer import Trainer

    from detectron2.utils.logger import setup_logger

    torch.set_num_threads(threads)
    _register(datasets)
    setup_logger(name="jsis_d2.bench_precision")
    steps = sorted({max(1, int(iters * 0.5)), max(1, int(iters * 0.82))})
    cfg = setup_cfg(
        config_file,
        [
            "OUTPUT_DIR",
            out_dir,
            "SOLVER.MAX_ITER",
            iters,
            "SOLVER.STEPS",
            steps,
            "SOLVER.WARMUP_ITERS",
            min(100, max(1, iters // 5)),
            "SOLVER.CHECKPOINT_PERIOD",
            10**9,
            "TEST.EVAL_PERIOD",
            0,
            "DATASETS.TRAIN",
            (datasets["train"],),
            "DATASETS.TEST",
            (),
            "SEED",
            0,
            "MODEL.WEIGHTS",
            "",
        ],
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return os.path.join(out_dir, "model_final.pth")


def _register(datasets):
    from jsis_d2.data.datasets import register_synthetic_datasets

    from detectron2.data import DatasetCatalog

    if datasets["train"] not in DatasetCatalog.list():
        register_synthetic_datasets(
            datasets["root"], names={"train": datasets["train"], "val": datasets["val"]}
        )


def _evaluate(config_file, weights, variant, datasets, images, threads):
    """PQ / mIoU / AP50 of ``weights`` on the validation split with ``variant``'s settings."""
    import jsis_d2  # noqa: F401
    from jsis_d2.config import setup_cfg
    from jsis_d2.data.dataset_mapper import JSISDatasetMapper
    from jsis_d2.evaluation import JSISEvaluator

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    torch.set_num_threads(threads)
    _register(datasets)
    cfg = setup_cfg(
        config_file, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"] + VARIANTS[variant]
    )
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    dicts = DatasetCatalog.get(datasets["val"])[: images or None]
    loader = build_detection_test_loader(
        dicts, mapper=JSISDatasetMapper(cfg, is_train=False), num_workers=0
    )
    evaluator = JSISEvaluator(
        datasets["val"], output_dir=None, distributed=False, save_panoptic=False
    )
    res = inference_on_dataset(model, loader, evaluator)
    return {
        "PQ": res["panoptic_seg"]["PQ"],
        "PQ_th": res["panoptic_seg"]["PQ_th"],
        "PQ_st": res["panoptic_seg"]["PQ_st"],
        "mIoU": res["sem_seg"]["mIoU"],
        "AP50": res.get("segm", {}).get("AP50"),
        "images": len(dicts),
    }


def _pq(args, variants, tmp):
    from jsis_d2.data.datasets import make_synthetic_datasets

    q = args.quick
    if q:
        root = os.path.join(tmp, "synthetic")
        datasets = {"root": root, **tiny_synthetic(root, "jsis_bench_prec", 2, 2)}
    else:
        paths = make_synthetic_datasets()  # reused when present (deterministic)
        root = os.path.dirname(os.path.dirname(paths["train"]["image_root"]))
        datasets = {"root": root, "train": "jsis_synthetic_train", "val": "jsis_synthetic_val"}
    config_file = args.pq_config or (QUICK_CONFIG if q else DEMO_CONFIG)
    weights = args.weights or (DEMO_WEIGHTS if not q and os.path.isfile(DEMO_WEIGHTS) else None)
    trained_iters = None
    if weights is None:
        trained_iters = args.train_iters or (2 if q else 300)
        logger.info(
            "precision: training %s for %d iterations (fp32) for the PQ checkpoint",
            config_file,
            trained_iters,
        )
        weights = run_isolated(
            _train_checkpoint,
            config_file,
            os.path.join(tmp, "ckpt"),
            trained_iters,
            args.threads,
            datasets,
        )
    elif not os.path.isfile(weights):
        raise FileNotFoundError(f"precision benchmark: --weights {weights} not found")
    pq = {
        v: run_isolated(_evaluate, config_file, weights, v, datasets, args.pq_images, args.threads)
        for v in variants
    }
    return {
        "config_file": config_file,
        "weights": None if trained_iters else weights,
        "trained_iters": trained_iters,
        "dataset": datasets["val"],
        "by_variant": pq,
    }


# ---------------------------------------------------------------------------- run
def _variants(args, support):
    variants = args.variants or ["fp32", "bf16", "bf16_cl"]
    if "fp32" not in variants:
        variants = ["fp32"] + variants
    if not support["supported"]:
        logger.warning("precision: this CPU has no bfloat16 support (%s): fp32 only", support)
        variants = [v for v in variants if not v.startswith("bf16")]
    return variants


def _timings(models, variants, repeats, train_repeats, threads):
    """One row per (model, mode, variant); the variants of a (model, mode) interleaved, each
    in its own process."""
    rows = []
    for name, model_kw in models.items():
        sides = {
            v: (build_jsis, dict(model_kw, extra=list(model_kw.get("extra", [])) + VARIANTS[v]))
            for v in variants
        }
        for mode, n in (("infer", repeats), ("train", train_repeats)):
            measured = measure_interleaved(
                sides, mode=mode, size=model_kw["size"], warmup=1, repeats=n, threads=threads
            )
            for v, r in measured.items():
                logger.info("precision %s %s %s: %.3f s", name, mode, v, r["median_s"])
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "variant": v,
                        **{
                            k: r[k]
                            for k in (
                                "median_s",
                                "min_s",
                                "times_s",
                                "peak_rss_mb",
                                "peak_above_imports_mb",
                                "load_average",
                            )
                        },
                    }
                )
    return rows


def run(args):
    q = args.quick
    torch.set_num_threads(args.threads)
    support = cpu_bf16_support()
    variants = _variants(args, support)
    repeats = args.repeats or (1 if q else 3)
    train_repeats = args.train_repeats or (1 if q else 2)
    load0 = load_average()
    rows = _timings(_models(q), variants, repeats, train_repeats, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pq = _pq(args, variants, tmp)
    result = {
        "threads": args.threads,
        "quick": bool(q),
        "cpu_bf16": support,
        "cpu_model": cpuinfo_field("model name"),
        "variants": variants,
        "repeats": repeats,
        "train_repeats": train_repeats,
        "interleaved": True,
        "rows": rows,
        "pq": pq,
        "load_average": [load0, load_average()],
    }
    result["headline"] = _headline(result, args.headline)
    result["markdown"] = markdown(result)
    return result


def _time(result, model, mode, variant, key="median_s"):
    for r in result["rows"]:
        if (r["model"], r["mode"], r["variant"]) == (model, mode, variant):
            return r[key]
    return None


def _headline(r, variant):
    """Speed-ups and PQ delta of ``variant`` vs fp32 on the first model (R50-C4 400x400)."""
    if variant not in r["variants"]:
        return None
    model = next(iter(dict.fromkeys(x["model"] for x in r["rows"])))
    inf = _time(r, model, "infer", "fp32") / _time(r, model, "infer", variant)
    tr = _time(r, model, "train", "fp32") / _time(r, model, "train", variant)
    pqs = r["pq"]["by_variant"]
    delta = pqs[variant]["PQ"] - pqs["fp32"]["PQ"]
    fastest = {
        m: _time(r, model, m, "fp32", "min_s") / _time(r, model, m, variant, "min_s")
        for m in ("infer", "train")
    }  # the least disturbed calls, on a busy machine
    return {
        "model": model,
        "variant": variant,
        "inference_speedup": inf,
        "train_step_speedup": tr,
        "pq_delta": delta,
        "fastest_call_speedups": fastest,
        "met": {
            "inference": inf >= GOALS["inference"],
            "train_step": tr >= GOALS["train_step"],
            "pq_delta": abs(delta) <= GOALS["pq_delta"],
        },
        "line": f"bf16/fp32: inference {inf:.2f}x, train step {tr:.2f}x, PQ delta {delta:.2f}",
    }


def _time_table(r):
    """Time and peak memory per (model, mode), one column per variant, then the speed-ups."""
    names = [VARIANT_NAMES[v] for v in r["variants"]]
    headers = (
        ["model", "mode"]
        + [f"{n} (s)" for n in names]
        + [f"{n} peak MiB" for n in names]
        + [f"fp32 / {n} time" for n in names[1:]]
    )
    by = {(x["model"], x["mode"], x["variant"]): x for x in r["rows"]}
    rows = []
    for m in dict.fromkeys(x["model"] for x in r["rows"]):
        for mode, label in (("infer", "inference"), ("train", "train step")):
            cells = [by[(m, mode, v)] for v in r["variants"]]
            base = cells[0]["median_s"]
            rows.append(
                [m, label]
                + [
                    with_spread(c["median_s"], c["times_s"], 3)
                    if r.get("interleaved")
                    else f"{c['median_s']:.3f}"
                    for c in cells
                ]
                + [f"{c['peak_rss_mb']:.0f}" for c in cells]
                + [f"**{base / c['median_s']:.2f}x**" for c in cells[1:]]
            )
    return markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))


def _pq_lines(p):
    src = (
        f"trained here from scratch in fp32, {p['trained_iters']} iterations"
        if p["trained_iters"]
        else f"`{p['weights']}`"
    )
    base = p["by_variant"]["fp32"]["PQ"]
    rows = [
        [
            VARIANT_NAMES[v],
            f"{x['PQ']:.2f}",
            f"{x['PQ_th']:.2f}",
            f"{x['PQ_st']:.2f}",
            f"{x['mIoU']:.2f}",
            "-" if x["AP50"] is None else f"{x['AP50']:.1f}",
            f"{x['PQ'] - base:+.2f}",
        ]
        for v, x in p["by_variant"].items()
    ]
    return [
        f"PQ of one checkpoint ({p['config_file']}, {src}) on {p['dataset']} "
        f"({next(iter(p['by_variant'].values()))['images']} images), evaluated with each "
        f"variant:",
        "",
        markdown_table(
            ["variant", "PQ", "PQ things", "PQ stuff", "mIoU", "AP50 (segm)", "PQ - fp32"], rows
        ),
    ]


def _headline_line(h):
    if not h:
        return "bf16 was not measured (no bf16 support on this CPU)."
    met = h["met"]
    return (
        f"**{h['line']}** ({h['model']}, {VARIANT_NAMES[h['variant']]}; the PQ delta is the "
        f"checkpoint above: no trained R50-C4 exists here). Goals on a bf16-capable CPU: "
        f"inference >= {GOALS['inference']}x {verdict(met['inference'])}, train step >= "
        f"{GOALS['train_step']}x {verdict(met['train_step'])}, |PQ delta| <= "
        f"{GOALS['pq_delta']} {verdict(met['pq_delta'])}. The same ratios from each "
        f"cell's fastest call (less disturbed by other load): inference "
        f"{h['fastest_call_speedups']['infer']:.2f}x, train step "
        f"{h['fastest_call_speedups']['train']:.2f}x."
    )


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    s = r["cpu_bf16"]
    lines = [
        f"fp32 vs bf16 autocast, CPU ({r['cpu_model']}; oneDNN bf16: "
        f"{yes_no(s['supported'])}, avx512_bf16: {yes_no(s['avx512_bf16'])}"
        f", amx_bf16: {yes_no(s['amx_bf16'])}), {r['threads']} threads, one image "
        f"per call, random weights (GN). Inference: network + mask pasting + merge, median of "
        f"{r['repeats']} after 1 warm-up; train step: forward + backward + SGD update, median "
        f"of {r['train_repeats']} after 1. "
        + (
            f"Times: median (range of the calls), each variant in its own process. "
            f"{INTERLEAVED_NOTE}; "
            if r.get("interleaved")
            else "Each cell in its own process; "  # measured before the sides were interleaved
        )
        + "peak = RSS high-water mark of the measured phase. "
        + describe_load(r["load_average"]),
        "",
        _time_table(r),
        "",
        *_pq_lines(r["pq"]),
        "",
        _headline_line(r["headline"]),
    ]
    if r["quick"]:
        lines.append(QUICK_NOTE)
    return "\n".join(lines)
