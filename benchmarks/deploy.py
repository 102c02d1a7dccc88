"""Benchmark: end-to-end prediction of the exported model (onnxruntime) vs PyTorch eager, in one
run: decoded image (uint8, its original size) -> panoptic map + segments at that size.

Sides, same images, same thread count, interleaved (one call of each per round, after one
warm-up call each); median, min and max of ``--repeats`` rounds:

* ``eager_fp32``: :class:`jsis_d2.predictor.JSISPredictor` (fixed-size resize + network + sem
  seg resize + mask paste + merge, float32);
* ``eager_bf16``: the same with ``TEST.PRECISION bfloat16``, only where the CPU runs bf16
  natively (:func:`jsis_d2.precision.cpu_bf16_support`);
* ``onnxruntime``: the model exported by :func:`jsis_d2.export.export_model`, run by
  ``jsis_runtime``'s :class:`~jsis_runtime.onnx_model.OnnxPanopticModel` (Pillow resize +
  onnxruntime CPU provider, ``session.intra_op.allow_spinning`` 0, ``--threads`` intra-op
  threads + segment table to dataset ids).

Models: "R50-C4 400x400" (``configs/Base-JSIS-R50-C4.yaml``, GN, K=133 / T=80, random weights:
fine for speed) on ``--size`` originals (default 640x480), with 100 test proposals and 100
detections, all of them through the merge (score thresholds 0: the worst case for the mask
paste and the merge); and the demo model (``--demo-config`` / ``--demo-weights``, default
``configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml`` and ``output/demo/model_final.pth``;
random weights when the checkpoint is absent, said in the result). Images: synthetic scenes
(:func:`jsis_d2.data.synthetic.render_synthetic_image`) at the original size. Each result
also gives the category-map agreement of onnxruntime vs eager fp32 on the timed images.
"""

import logging
import os
import tempfile

import numpy as np
import torch

from jsis_d2.precision import cpu_bf16_support, cpuinfo_field

from .common import DEMO_CONFIG, DEMO_WEIGHTS, QUICK_CONFIG, jsis_cfg
from .report import QUICK_NOTE, describe_load, markdown_table, verdict
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "GOAL"]

#: onnxruntime end to end vs eager fp32 on R50-C4 (issue 28)
GOAL = 1.3
_ALL_TO_MERGE = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.JSIS.INSTANCE_SCORE_THRESH", 0.0]


def add_arguments(parser):
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--images", type=int, default=3, help="distinct images, cycled")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--demo-config", default=DEMO_CONFIG)
    parser.add_argument("--demo-weights", default=DEMO_WEIGHTS)


def _models(args, tmp):
    """[(name, cfg with MODEL.WEIGHTS set, weights note)]; random weights saved to ``tmp``."""
    from jsis_d2.config import setup_cfg

    if args.quick:
        cfg = setup_cfg(QUICK_CONFIG, list(_ALL_TO_MERGE))
        return [("quick R18-C4 64x64", _with_weights(cfg, None, tmp, "quick"), "random")]
    r50 = jsis_cfg(depth=50, size=(400, 400), detections=100, extra=_ALL_TO_MERGE)
    r50.defrost()
    r50.DATASETS.TEST = ("jsis_coco_2017_val_panoptic",)  # the K = 133 categories (export)
    demo_weights = args.demo_weights if os.path.isfile(args.demo_weights) else None
    demo = setup_cfg(args.demo_config, [])
    return [
        ("R50-C4 400x400", _with_weights(r50, None, tmp, "r50"), "random"),
        (
            "demo R18-C4 " + "x".join(str(s) for s in demo.INPUT.JSIS.FIXED_SIZE),
            _with_weights(demo, demo_weights, tmp, "demo"),
            demo_weights or "random (no checkpoint at --demo-weights)",
        ),
    ]


def _with_weights(cfg, weights, tmp, name):
    """``cfg`` (cloned) with MODEL.WEIGHTS = ``weights``, or random weights saved to ``tmp``
    (the exporter refuses an empty MODEL.WEIGHTS)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.PRECISION = "float32"  # the eager_fp32 side (eager_bf16 sets its own)
    if weights is None:
        cfg.MODEL.WEIGHTS = ""
        torch.manual_seed(0)
        DetectionCheckpointer(build_model(cfg), save_dir=tmp).save(name)
        weights = os.path.join(tmp, name + ".pth")
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    return cfg


def _images(n, h, w):
    """n synthetic scenes as (RGB, BGR) uint8 [h, w, 3]."""
    from jsis_d2.data.synthetic import render_synthetic_image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        rgb = render_synthetic_image(rng, h, w)[0]
        out.append((rgb, np.ascontiguousarray(rgb[:, :, ::-1])))
    return out


def _cycle(images, fn):
    """A zero-argument callable calling ``fn`` on the next image each time."""
    state = {"i": 0}

    def call():
        img = images[state["i"] % len(images)]
        state["i"] += 1
        return fn(img)

    return call


def _agreement(eager, onnx, images):
    """Fraction of pixels with the same category (dataset id; void included), all images."""
    same = total = 0
    for rgb, bgr in images:
        pan, info = eager(bgr)["panoptic_seg"]
        pan = pan.numpy()
        cat_e = np.full(pan.shape, -1)
        for s in info:
            cat_e[pan == s["id"]] = s["category_id"]
        pan_x, info_x = onnx.model.predict(rgb)
        cat_x = np.full(pan_x.shape, -1)
        for s in info_x:
            cat_x[pan_x == s["id"]] = onnx.to_contiguous[s["category_id"]]
        same += int((cat_e == cat_x).sum())
        total += cat_e.size
    return same / max(total, 1)


class _Onnx:
    def __init__(self, folder, threads):
        from jsis_runtime.onnx_model import OnnxPanopticModel

        self.model = OnnxPanopticModel(folder, num_threads=threads)
        cats = self.model.sidecar.categories
        self.to_contiguous = {int(c["id"]): k for k, c in enumerate(cats)}


def _measure(name, cfg, note, args, images, support, tmp):
    from jsis_d2.export import export_model
    from jsis_d2.predictor import JSISPredictor

    folder = os.path.join(tmp, name.split()[0] + "_onnx")
    sample = os.path.join(tmp, "sample.png")
    from PIL import Image

    Image.fromarray(images[0][0]).save(sample)
    logger.info("deploy: exporting %s ...", name)
    check = export_model(cfg, folder, sample_image=sample)["check"]
    eager = JSISPredictor(cfg)
    sides = {"eager_fp32": _cycle(images, lambda im: eager(im[1])["panoptic_seg"])}
    if support["supported"]:
        low = cfg.clone()
        low.defrost()
        low.TEST.PRECISION = "bfloat16"
        bf16 = JSISPredictor(low)
        sides["eager_bf16"] = _cycle(images, lambda im: bf16(im[1])["panoptic_seg"])
    onnx = _Onnx(folder, args.threads)
    sides["onnxruntime"] = _cycle(images, lambda im: onnx.model.predict(im[0]))
    repeats = args.repeats or (2 if args.quick else 5)
    with torch.no_grad():
        timings = time_calls(sides, repeats=repeats, warmup=1, cpu_time=True)
        agreement = _agreement(eager, onnx, images)
    row = {"model": name, "weights": note, "export_check": check, "agreement": agreement}
    for side, t in timings.items():
        row[side] = dict(t.summary(), max_s=max(t.wall), cpu_median_s=float(np.median(t.cpu)))
    base = row["eager_fp32"]["median_s"]
    row["speedup"] = {s: base / row[s]["median_s"] for s in sides if s != "eager_fp32"}
    logger.info("deploy %s: %s", name, {s: round(row[s]["median_s"] * 1e3, 1) for s in sides})
    return row


def run(args):
    torch.set_num_threads(args.threads)
    support = cpu_bf16_support()
    h, w = (64, 48) if args.quick else args.size
    images = _images(2 if args.quick else args.images, h, w)
    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            _measure(n, c, note, args, images, support, tmp) for n, c, note in _models(args, tmp)
        ]
    import onnxruntime

    result = {
        "threads": args.threads,
        "quick": bool(args.quick),
        "cpu_model": cpuinfo_field("model name"),
        "cpu_bf16": support,
        "original_size": [h, w],
        "images": len(images),
        "repeats": args.repeats or (2 if args.quick else 5),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "rows": rows,
        "load_average": [load0, load_average()],
    }
    head = rows[0]["speedup"]["onnxruntime"]
    result["headline"] = {"model": rows[0]["model"], "onnx_speedup": head, "goal": GOAL}
    result["markdown"] = markdown(result)
    return result


def _ms(side):
    if side is None:
        return "-"
    return f"{1e3 * side['median_s']:.1f} [{1e3 * side['min_s']:.1f}-{1e3 * side['max_s']:.1f}]"


def markdown(r):
    """The result's markdown."""
    rows = []
    for row in r["rows"]:
        sp = row["speedup"]
        rows.append(
            [
                row["model"],
                "random" if row["weights"].startswith("random") else "trained",
                _ms(row["eager_fp32"]),
                _ms(row.get("eager_bf16")),
                _ms(row["onnxruntime"]),
                f"{sp['eager_bf16']:.2f}x" if "eager_bf16" in sp else "-",
                f"{sp['onnxruntime']:.2f}x",
                f"{100 * row['agreement']:.3f}%",
            ]
        )
    table = markdown_table(
        [
            "model",
            "weights",
            "eager fp32 (ms)",
            "eager bf16 (ms)",
            "onnxruntime (ms)",
            "bf16 speedup",
            "onnxruntime speedup",
            "category agreement onnx/eager",
        ],
        rows,
        align="llrrrrrr",
    )
    hd = r["headline"]
    lines = [
        f"End to end (decoded {r['original_size'][1]}x{r['original_size'][0]} image -> "
        f"panoptic map + segments at that size), CPU ({r['cpu_model']}), {r['threads']} "
        f"threads for every side, {r['images']} images cycled, median [min-max] of "
        f"{r['repeats']} interleaved rounds after 1 warm-up; onnxruntime "
        f"{r['versions']['onnxruntime']} CPU provider without spinning threads, torch "
        f"{r['versions']['torch']}. " + describe_load(r["load_average"]),
        "",
        table,
        "",
        f"Goal: onnxruntime >= {hd['goal']}x eager fp32 on {hd['model']}: "
        f"{hd['onnx_speedup']:.2f}x, {verdict(hd['onnx_speedup'] >= hd['goal'])}.",
    ]
    if r["quick"]:
        lines.append(QUICK_NOTE)
    return "\n".join(lines)
