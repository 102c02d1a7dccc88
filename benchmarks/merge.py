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
import statistics
import tempfile
import time

import numpy as np

import torch

from ..postprocessing import jsis_panoptic_merge, kirillov_panoptic_merge

logger = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument(
        "--instances", type=int, nargs="+", default=None,
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


def _time_interleaved(fns, repeats, device):
    """{name: [seconds per run]}: each repeat runs every side once, in turn, so that load from
    other processes hits all sides alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def run(args):
    from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from detectron2.structures import Instances

    try:
        from panopticapi.combine_semantic_and_instance_predictions import (
            combine_to_panoptic_single_core,
        )
        from panopticapi.utils import id2rgb
        from PIL import Image
    except ImportError as e:  # panopticapi(-lite) without the combine module
        logger.warning("panopticapi combine heuristic not available (%s): side skipped", e)
        combine_to_panoptic_single_core = None

    h, w = args.size
    k, t = args.classes, args.things
    repeats = 3 if args.quick else args.repeats
    counts = args.instances or ([10, 50] if args.quick else [10, 50, 100, 200])
    tmp = tempfile.TemporaryDirectory()
    is_thing = torch.arange(k) < t
    area, score_thr, mask_thr, overlap = 4096, 0.5, 0.5, 0.5
    rows = []
    for n in counts:
        sem_seg, inst = make_prediction(n, h, w, k, t, args.seed, args.device, args.unsorted)
        d2_inst = Instances(
            (h, w),
            pred_masks=inst.pred_masks >= mask_thr,
            scores=inst.scores,
            pred_classes=inst.pred_classes,
        )

        def jsis():
            return jsis_panoptic_merge(
                sem_seg,
                inst,
                is_thing,
                stuff_area_thresh=area,
                instance_score_thresh=score_thr,
                mask_threshold=mask_thr,
            )

        def d2():
            return combine_semantic_and_instance_outputs(
                d2_inst, sem_seg.argmax(dim=0), overlap, area, score_thr
            )

        def kirillov():
            return kirillov_panoptic_merge(
                sem_seg,
                inst,
                is_thing,
                overlap_thresh=overlap,
                stuff_area_thresh=area,
                instance_score_thresh=score_thr,
                mask_threshold=mask_thr,
            )

        sides = {"jsis": jsis, "d2": d2, "kirillov": kirillov}
        if combine_to_panoptic_single_core is not None:
            img, pa_inst, pa_sem, cats = panopticapi_inputs(
                sem_seg, inst, is_thing, score_thr, mask_thr
            )
            pa_out = {}

            def panopticapi():
                with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
                    pa_out["json"] = combine_to_panoptic_single_core(
                        0, [0], {0: img}, {0: pa_inst}, {0: pa_sem}, tmp.name, overlap, area, cats
                    )

            ids = np.zeros((h, w), dtype=np.uint32)

            def png_only():
                Image.fromarray(id2rgb(ids)).save(os.path.join(tmp.name, "png_only.png"))

            sides["panopticapi"] = panopticapi
            sides["png_only"] = png_only
        times = _time_interleaved(sides, repeats, args.device)
        t_jsis, t_d2, t_kir = (statistics.median(times[k]) for k in ("jsis", "d2", "kirillov"))
        m_jsis, m_d2 = min(times["jsis"]), min(times["d2"])
        n_jsis = len(jsis()[1])
        n_d2 = len(d2()[1])
        if "panopticapi" in times:
            t_pa = statistics.median(times["panopticapi"])
            pa = {
                "panopticapi_combine_ms": 1000 * t_pa,
                "panopticapi_png_write_ms": 1000 * statistics.median(times["png_only"]),
                "speedup_vs_panopticapi": t_pa / t_jsis,
                "segments_panopticapi": len(pa_out["json"][0]["segments_info"]),
            }
        else:
            pa = {}
        rows.append(
            {
                **pa,
                "instances": n,
                "jsis_ms": 1000 * t_jsis,
                "detectron2_combine_ms": 1000 * t_d2,
                "jsis_kirillov_ms": 1000 * t_kir,
                "speedup_vs_detectron2": t_d2 / t_jsis,
                "jsis_min_ms": 1000 * m_jsis,
                "detectron2_combine_min_ms": 1000 * m_d2,
                "speedup_vs_detectron2_min": m_d2 / m_jsis,
                "segments_jsis": n_jsis,
                "segments_detectron2": n_d2,
            }
        )
        logger.info(
            "merge N=%d: jsis %.2f ms, detectron2 %.2f ms (x%.1f)",
            n,
            1000 * t_jsis,
            1000 * t_d2,
            t_d2 / t_jsis,
        )

    md = [
        f"Panoptic merge, {h}x{w} image, K={k} classes (T={t} things), device {args.device}, "
        f"instances {'unsorted' if args.unsorted else 'sorted by score'}, "
        f"{torch.get_num_threads()} threads, {repeats} interleaved runs (median; min in brackets)",
        "",
        "| instances | jsis_panoptic_merge (ms) | d2 combine_semantic_and_instance_outputs (ms) "
        "| speedup | jsis kirillov wrapper (ms) | panopticapi combine (ms) [PNG write alone] "
        "| speedup vs panopticapi | segments jsis / d2 / panopticapi |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "panopticapi_combine_ms" in r:
            pa = (
                f"{r['panopticapi_combine_ms']:.1f} [{r['panopticapi_png_write_ms']:.1f}] | "
                f"{r['speedup_vs_panopticapi']:.1f}x"
            )
            pa_n = r["segments_panopticapi"]
        else:
            pa, pa_n = "not available | -", "-"
        md.append(
            f"| {r['instances']} | {r['jsis_ms']:.1f} [{r['jsis_min_ms']:.1f}] | "
            f"{r['detectron2_combine_ms']:.1f} [{r['detectron2_combine_min_ms']:.1f}] | "
            f"{r['speedup_vs_detectron2']:.1f}x [{r['speedup_vs_detectron2_min']:.1f}x] | "
            f"{r['jsis_kirillov_ms']:.1f} | {pa} | "
            f"{r['segments_jsis']} / {r['segments_detectron2']} / {pa_n} |"
        )
    tmp.cleanup()
    return {
        "size": [h, w],
        "classes": k,
        "things": t,
        "device": args.device,
        "repeats": repeats,
        "unsorted": bool(args.unsorted),
        "rows": rows,
        "markdown": "\n".join(md),
    }
