"""Benchmark: ``jsis_panoptic_merge`` vs Detectron2's ``combine_semantic_and_instance_outputs``.

Same synthetic prediction for both sides: a ``--size`` image (default 400x400, COCO input),
K = ``--classes`` (default 133: 80 things + 53 stuff), N = ``--instances`` (default 100)
instance masks with smooth elliptical probability maps in random boxes, all scores >= 0.5 (so
every instance goes through both merges: the worst case), in decreasing score order as
Detectron2's detector returns them (``--unsorted``: random order, the slower path). The JSIS
side gets what JSISNet gives it (float scores [K, H, W], float mask probabilities [N, H, W]);
the Detectron2 side gets what PanopticFPN gives it (bool masks, already thresholded when
pasted) and, as PanopticFPN does, the per-pixel argmax of the scores inside the timed call.
The third side is panopticapi's combine heuristic (``panopticapi.combine_semantic_and_
instance_predictions.combine_to_panoptic_single_core``, the official script's per-image
function, one image): its inputs are what the script reads from its JSON files, prepared
outside the timing: the score-sorted instances with score >= 0.5 as COCO RLE of the
thresholded masks, and the semantic segmentation (argmax over all K classes) as one COCO RLE
per class present (the script skips the thing classes). Its timed call includes the RLE
decoding and, as the script always does, writing the panoptic PNG (``id2rgb`` + PIL save to a
temporary folder); the PNG write alone is timed too and reported. Default instance counts
10, 50, 100, 200.
The sides run interleaved (one run of each per repeat, so that load from other processes hits
all alike) after a warm-up; median and min are reported; threads pinned by tools/benchmark.py.
"""

import contextlib
import io
import logging
import os
import tempfile

import numpy as np
import torch

from jsis_d2.postprocessing import jsis_panoptic_merge, kirillov_panoptic_merge

from .report import describe_load, markdown_table
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "make_prediction", "panopticapi_inputs"]

#: The merge settings of both sides: Detectron2's / the paper's defaults.
SETTINGS = {
    "stuff_area_thresh": 4096,
    "instance_score_thresh": 0.5,
    "mask_threshold": 0.5,
    "overlap_thresh": 0.5,
}


def add_arguments(parser):
    parser.add_argument(
        "--instances",
        type=int,
        nargs="+",
        default=None,
        help="instance counts N (default 10 50 100 200; quick 10 50)",
    )
    parser.add_argument("--size", type=int, nargs=2, default=[400, 400], metavar=("H", "W"))
    parser.add_argument("--classes", type=int, default=133, help="K (default 133, COCO)")
    parser.add_argument("--things", type=int, default=80, help="T (default 80, COCO)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per side")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unsorted",
        action="store_true",
        help="instances in random score order (the detector gives them sorted by score)",
    )


def make_prediction(n, h, w, k, t, seed=0, device="cpu", unsorted=False):
    """Synthetic JSISNet-like output: sem_seg float [K, H, W], Instances with float
    pred_masks [N, H, W] (probabilities), scores in [0.5, 1) sorted by decreasing score as
    Detectron2's detector returns them (``unsorted``: random order), pred_classes in [0, T)."""
    from detectron2.structures import Instances

    g = torch.Generator().manual_seed(seed)
    sem_seg = torch.randn(k, h // 8 + 1, w // 8 + 1, generator=g)[None]
    sem_seg = torch.nn.functional.interpolate(sem_seg, size=(h, w), mode="bilinear")[0]
    cy = torch.rand(n, generator=g) * h
    cx = torch.rand(n, generator=g) * w
    ry = 10 + torch.rand(n, generator=g) * h / 5
    rx = 10 + torch.rand(n, generator=g) * w / 5
    yy = torch.arange(h, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, dtype=torch.float32)[None, None, :]
    r2 = ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + (
        (xx - cx[:, None, None]) / rx[:, None, None]
    ) ** 2
    scores = 0.5 + 0.5 * torch.rand(n, generator=g)
    peak = 0.6 + 0.4 * torch.rand(n, 1, 1, generator=g)
    masks = (peak * (1.0 - r2 / 1.5)).clamp(0.0, 1.0)
    inst = Instances(
        (h, w),
        pred_masks=masks,
        scores=scores if unsorted else scores.sort(descending=True)[0],
        pred_classes=torch.randint(0, t, (n,), generator=g),
    )
    return sem_seg.to(device), inst.to(device)


def panopticapi_inputs(sem_seg, inst, is_thing, score_thr, mask_thr):
    """What panopticapi's combine script reads from its JSON files, for one image (id 0).

    Category ids are contiguous index + 1. Returns (img, instances, semantic, categories):
    ``instances`` score-sorted (>= score_thr) [{"segmentation": RLE of mask >= mask_thr,
    "category_id", "score"}]; ``semantic`` one RLE per class present in the argmax over all K
    classes; ``categories`` {id: {"id", "isthing", "color"}}."""
    from pycocotools import mask as mask_util

    h, w = sem_seg.shape[-2:]
    keep = torch.nonzero(inst.scores >= score_thr, as_tuple=True)[0]
    keep = keep[inst.scores[keep].argsort(descending=True)]
    masks = (inst.pred_masks[keep] >= mask_thr).cpu().numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(keep) else []
    instances = [
        {"segmentation": r, "category_id": int(c) + 1, "score": float(sc)}
        for r, c, sc in zip(rles, inst.pred_classes[keep].tolist(), inst.scores[keep].tolist())
    ]
    labels = sem_seg.argmax(dim=0).cpu().numpy()
    semantic = []
    for k in np.unique(labels).tolist():
        rle = mask_util.encode(np.asfortranarray((labels == k).astype(np.uint8)))
        semantic.append({"segmentation": rle, "category_id": k + 1})
    rng = np.random.RandomState(0)
    categories = {
        k + 1: {"id": k + 1, "isthing": int(bool(t)), "color": rng.randint(0, 256, 3).tolist()}
        for k, t in enumerate(is_thing.tolist())
    }
    return {"id": 0, "height": h, "width": w, "file_name": "0.jpg"}, instances, semantic, categories


def _panopticapi_combine():
    """panopticapi's per-image combine function, or None (panopticapi-lite lacks it)."""
    try:
        from panopticapi.combine_semantic_and_instance_predictions import (
            combine_to_panoptic_single_core,
        )
    except ImportError as e:
        logger.warning("panopticapi combine heuristic not available (%s): side skipped", e)
        return None
    return combine_to_panoptic_single_core


def _sides(sem_seg, inst, is_thing, combine, tmp_dir):
    """Side name -> zero-argument call on the same prediction: ours, Detectron2's combine, our
    Kirillov wrapper, and (with ``combine``) panopticapi's combine and its PNG write alone."""
    from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from detectron2.structures import Instances

    st = SETTINGS
    d2_inst = Instances(
        inst.image_size,
        pred_masks=inst.pred_masks >= st["mask_threshold"],
        scores=inst.scores,
        pred_classes=inst.pred_classes,
    )
    ours = {k: st[k] for k in ("stuff_area_thresh", "instance_score_thresh", "mask_threshold")}
    sides = {
        "jsis": lambda: jsis_panoptic_merge(sem_seg, inst, is_thing, **ours),
        "d2": lambda: combine_semantic_and_instance_outputs(
            d2_inst,
            sem_seg.argmax(dim=0),
            st["overlap_thresh"],
            st["stuff_area_thresh"],
            st["instance_score_thresh"],
        ),
        "kirillov": lambda: kirillov_panoptic_merge(
            sem_seg, inst, is_thing, overlap_thresh=st["overlap_thresh"], **ours
        ),
    }
    if combine is None:
        return sides
    from panopticapi.utils import id2rgb
    from PIL import Image

    img, pa_inst, pa_sem, cats = panopticapi_inputs(
        sem_seg, inst, is_thing, st["instance_score_thresh"], st["mask_threshold"]
    )

    def panopticapi():
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            return combine(
                0,
                [0],
                {0: img},
                {0: pa_inst},
                {0: pa_sem},
                tmp_dir,
                st["overlap_thresh"],
                st["stuff_area_thresh"],
                cats,
            )

    ids = np.zeros(inst.image_size, dtype=np.uint32)
    sides["panopticapi"] = panopticapi
    sides["png_only"] = lambda: Image.fromarray(id2rgb(ids)).save(
        os.path.join(tmp_dir, "png_only.png")
    )
    return sides


def _row(n, times):
    """One result row from the sides' timings (ms; speed-ups = their time / ours)."""
    t = {k: v.median for k, v in times.items()}
    row = {}
    if "panopticapi" in times:
        row = {
            "panopticapi_combine_ms": 1000 * t["panopticapi"],
            "panopticapi_png_write_ms": 1000 * t["png_only"],
            "speedup_vs_panopticapi": t["panopticapi"] / t["jsis"],
            "segments_panopticapi": len(times["panopticapi"].last[0]["segments_info"]),
        }
    m_jsis, m_d2 = times["jsis"].min, times["d2"].min
    row.update(
        {
            "instances": n,
            "jsis_ms": 1000 * t["jsis"],
            "detectron2_combine_ms": 1000 * t["d2"],
            "jsis_kirillov_ms": 1000 * t["kirillov"],
            "speedup_vs_detectron2": t["d2"] / t["jsis"],
            "jsis_min_ms": 1000 * m_jsis,
            "detectron2_combine_min_ms": 1000 * m_d2,
            "speedup_vs_detectron2_min": m_d2 / m_jsis,
            "segments_jsis": len(times["jsis"].last[1]),
            "segments_detectron2": len(times["d2"].last[1]),
        }
    )
    return row


def run(args):
    h, w = args.size
    k, t = args.classes, args.things
    repeats = 3 if args.quick else args.repeats
    counts = args.instances or ([10, 50] if args.quick else [10, 50, 100, 200])
    is_thing = torch.arange(k) < t
    combine = _panopticapi_combine()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    rows = []
    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            sem_seg, inst = make_prediction(n, h, w, k, t, args.seed, args.device, args.unsorted)
            sides = _sides(sem_seg, inst, is_thing, combine, tmp)
            rows.append(_row(n, time_calls(sides, repeats, warmup=1, synchronize=sync)))
            r = rows[-1]
            logger.info(
                "merge N=%d: jsis %.2f ms, detectron2 %.2f ms (x%.1f)",
                n,
                r["jsis_ms"],
                r["detectron2_combine_ms"],
                r["speedup_vs_detectron2"],
            )
    result = {
        "size": [h, w],
        "classes": k,
        "things": t,
        "device": args.device,
        "repeats": repeats,
        "unsorted": bool(args.unsorted),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "load_average": [load0, load_average()],
    }
    result["markdown"] = markdown(result)
    return result


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    rows = []
    for x in r["rows"]:
        if "panopticapi_combine_ms" in x:
            pa = [
                f"{x['panopticapi_combine_ms']:.1f} [{x['panopticapi_png_write_ms']:.1f}]",
                f"{x['speedup_vs_panopticapi']:.1f}x",
            ]
            pa_n = x["segments_panopticapi"]
        else:
            pa, pa_n = ["not available", "-"], "-"
        rows.append(
            [
                x["instances"],
                f"{x['jsis_ms']:.1f} [{x['jsis_min_ms']:.1f}]",
                f"{x['detectron2_combine_ms']:.1f} [{x['detectron2_combine_min_ms']:.1f}]",
                f"{x['speedup_vs_detectron2']:.1f}x [{x['speedup_vs_detectron2_min']:.1f}x]",
                f"{x['jsis_kirillov_ms']:.1f}",
                *pa,
                f"{x['segments_jsis']} / {x['segments_detectron2']} / {pa_n}",
            ]
        )
    h, w = r["size"]
    return "\n".join(
        [
            f"Panoptic merge, {h}x{w} image, K={r['classes']} classes (T={r['things']} things), "
            f"device {r['device']}, "
            f"instances {'unsorted' if r['unsorted'] else 'sorted by score'}, "
            f"{r['threads']} threads, {r['repeats']} interleaved runs (median; min in brackets)"
            + (f". {describe_load(r['load_average'])}" if "load_average" in r else ""),
            "",
            markdown_table(
                [
                    "instances",
                    "jsis_panoptic_merge (ms)",
                    "d2 combine_semantic_and_instance_outputs (ms)",
                    "speedup",
                    "jsis kirillov wrapper (ms)",
                    "panopticapi combine (ms) [PNG write alone]",
                    "speedup vs panopticapi",
                    "segments jsis / d2 / panopticapi",
                ],
                rows,
                "rrrrrrrl",
            ),
        ]
    )
