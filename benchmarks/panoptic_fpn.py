"""Benchmark: JSIS-Net R50-C4 vs Detectron2's built-in PanopticFPN R50-FPN, random weights,
same input size, same threads, each network in its own process, the networks called in turn.

The pip detectron2 (pb1-detectron2 sdist) ships no model-zoo configs, so the PanopticFPN
config is built here from Detectron2's defaults as its ``Base-Panoptic-FPN.yaml`` +
``Base-RCNN-FPN.yaml`` set them: ``build_resnet_fpn_backbone`` (res2..res5 -> P2..P6),
``StandardRPNHead`` on P2..P6 (one anchor size per level, 3 aspect ratios), ``StandardROIHeads``
with ``FastRCNNConvFCHead`` (2 FC) and ``MaskRCNNConvUpsampleHead`` (4 convs) on P2..P5,
``SemSegFPNHead`` with 54 classes (53 COCO stuff + "things"), the combine heuristic on. Both
networks use GroupNorm in the ResNet (random init), K=133 / T=80, score threshold 0 with 100
detections per image (random weights would otherwise detect nothing and skip the mask path).

Rows: JSIS-Net with ``--proposals`` test proposals (default 100, as in the joint benchmark),
PanopticFPN with its default 1000 test proposals, and PanopticFPN with the same proposal
count as JSIS-Net. The rows of one input size are measured together
(``common.measure_interleaved``: one process per network, called in turn, so that load from
other processes hits all alike). Latency: median of ``--repeats`` after ``--warmup``, with the
calls' range; memory: peak RSS of the measured phase (VmHWM, see ``common``); FLOPs: fvcore
(MACs), network only.
"""

import logging

from .common import build_jsis, measure_interleaved, size_pairs
from .report import INTERLEAVED_NOTE, QUICK_NOTE, describe_load, markdown_table, with_spread
from .timing import load_average

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "panoptic_fpn_cfg", "build_panoptic_fpn"]


def add_arguments(parser):
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="input sizes as H W pairs (default 400 400; quick 128 128)",
    )
    parser.add_argument(
        "--depth", type=int, default=None, help="ResNet depth (default 50, quick 18)"
    )
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="JSIS-Net test proposals (default 100, quick 20)",
    )
    parser.add_argument(
        "--fpn-proposals",
        type=int,
        default=None,
        help="PanopticFPN default-row test proposals (default 1000, quick 50)",
    )
    parser.add_argument(
        "--detections",
        type=int,
        default=None,
        help="TEST.DETECTIONS_PER_IMAGE for both (default 100, quick 10)",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls (default 3, quick 1)"
    )


def panoptic_fpn_cfg(
    depth=50, post_nms_test=1000, detections=100, norm="GN", num_things=80, num_stuff=53
):
    """Detectron2 PanopticFPN R-FPN config (see module doc), random weights, CPU."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    levels = ["p2", "p3", "p4", "p5"]
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE",
            "PanopticFPN",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.MASK_ON",
            True,
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.BACKBONE.FREEZE_AT",
            0,
            "MODEL.RESNETS.DEPTH",
            depth,
            "MODEL.RESNETS.NORM",
            norm,
            "MODEL.RESNETS.OUT_FEATURES",
            ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES",
            ["res2", "res3", "res4", "res5"],
            "MODEL.ANCHOR_GENERATOR.SIZES",
            [[32], [64], [128], [256], [512]],
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
            [[0.5, 1.0, 2.0]],
            "MODEL.RPN.IN_FEATURES",
            levels + ["p6"],
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
            2000,
            "MODEL.RPN.PRE_NMS_TOPK_TEST",
            1000,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN",
            1000,
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            post_nms_test,
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES",
            levels,
            "MODEL.ROI_HEADS.NUM_CLASSES",
            num_things,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            0.0,
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            2,
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
            7,
            "MODEL.ROI_MASK_HEAD.NAME",
            "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            4,
            "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION",
            14,
            "MODEL.SEM_SEG_HEAD.NAME",
            "SemSegFPNHead",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES",
            levels,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            num_stuff + 1,
            "MODEL.PANOPTIC_FPN.COMBINE.ENABLED",
            True,
            "TEST.DETECTIONS_PER_IMAGE",
            detections,
        ]
    )
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def build_panoptic_fpn(**kw):
    """(model, cfg) for :func:`measure`. The cfg's SEM_SEG_HEAD.NUM_CLASSES is 54 (stuff +
    things), so :func:`measure`'s random training targets would use it; only inference is
    benchmarked here."""
    import jsis_d2  # noqa: F401  (compat shims)

    from detectron2.modeling import build_model

    cfg = panoptic_fpn_cfg(**kw)
    return build_model(cfg), cfg


def _sides(size, depth, props, fpn_props, dets, extra):
    """Row name -> (build function, its kwargs): JSIS-Net first (the ratios' base)."""
    sides = {
        f"JSIS-Net R{depth}-C4, {props} proposals": (
            build_jsis,
            dict(depth=depth, size=size, post_nms_test=props, detections=dets, extra=extra),
        ),
        f"PanopticFPN R{depth}-FPN, {fpn_props} proposals": (
            build_panoptic_fpn,
            dict(depth=depth, post_nms_test=fpn_props, detections=dets),
        ),
    }
    if fpn_props != props:
        sides[f"PanopticFPN R{depth}-FPN, {props} proposals"] = (
            build_panoptic_fpn,
            dict(depth=depth, post_nms_test=props, detections=dets),
        )
    return sides


def run(args):
    q = args.quick
    sizes = size_pairs(args.sizes or ([128, 128] if q else [400, 400]))
    depth = args.depth or (18 if q else 50)
    props = args.proposals or (20 if q else 100)
    fpn_props = args.fpn_proposals or (50 if q else 1000)
    dets = args.detections or (10 if q else 100)
    repeats = args.repeats or (1 if q else 3)
    extra = ["MODEL.RESNETS.WIDTH_PER_GROUP", 8] if q else []
    load0 = load_average()
    rows = []
    for size in sizes:
        sides = _sides(size, depth, props, fpn_props, dets, extra)
        logger.info("panoptic_fpn: %s at %dx%d, interleaved ...", ", ".join(sides), *size)
        measured = measure_interleaved(
            sides,
            mode="infer",
            size=size,
            warmup=args.warmup,
            repeats=repeats,
            threads=args.threads,
            flops=tuple(sides),
        )
        group = [dict(r, network=name) for name, r in measured.items()]
        for r in group:
            r["time_vs_jsis"] = r["median_s"] / group[0]["median_s"]
            r["peak_vs_jsis"] = r["peak_rss_mb"] / group[0]["peak_rss_mb"]
            r["gflops_vs_jsis"] = r["gflops"] / group[0]["gflops"]
        rows += group
    result = {
        "threads": args.threads,
        "quick": bool(q),
        "depth": depth,
        "repeats": repeats,
        "warmup": args.warmup,
        "detections": dets,
        "interleaved": True,
        "rows": rows,
        "load_average": [load0, load_average()],
    }
    result["markdown"] = markdown(result)
    return result


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    interleaved = bool(r.get("interleaved"))
    rows = []
    for x in r["rows"]:
        b = x["gflops_by_module"]
        rows.append(
            [
                "x".join(map(str, x["size"])),
                x["network"],
                f"{x['params_m']:.1f}",
                with_spread(x["median_s"], x["times_s"]) if interleaved else f"{x['median_s']:.2f}",
                f"{x['peak_rss_mb']:.0f} [{x['peak_above_imports_mb']:.0f}]",
                f"{x['gflops']:.1f}",
                *(
                    f"{b.get(k, 0):.1f}"
                    for k in ("backbone", "proposal_generator", "roi_heads", "sem_seg_head")
                ),
                f"{x['time_vs_jsis']:.2f}",
                f"{x['peak_vs_jsis']:.2f}",
                f"{x['gflops_vs_jsis']:.2f}",
            ]
        )
    how = (
        f"median of {r['repeats']} after {r['warmup']} warm-up (range in brackets), each "
        f"network in its own process. {INTERLEAVED_NOTE}. "
        if interleaved  # results measured before the sides were interleaved:
        else f"median of {r['repeats']} after {r['warmup']} warm-up, each row in its own process. "
    )
    lines = [
        f"JSIS-Net vs Detectron2 PanopticFPN, random weights (GN ResNet), CPU, {r['threads']} "
        f"threads, one image per call, {r['detections']} detections per image (score threshold "
        f"0), {how}"
        f"Peak = RSS high-water mark of the measured phase [above the process's RSS after "
        f"imports]. GFLOPs: fvcore (= GMACs), network only. " + describe_load(r["load_average"]),
        "",
        markdown_table(
            [
                "input",
                "network",
                "params (M)",
                "latency (s)",
                "peak MiB",
                "GFLOPs",
                "backbone",
                "RPN",
                "ROI heads",
                "semantic head",
                "time / JSIS",
                "peak / JSIS",
                "GFLOPs / JSIS",
            ],
            rows,
            "ll" + "r" * 11,
        ),
    ]
    if r["quick"]:
        lines.append(QUICK_NOTE)
    return "\n".join(lines)
