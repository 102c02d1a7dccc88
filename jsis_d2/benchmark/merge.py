"""Benchmark: ``jsis_panoptic_merge`` vs Detectron2's ``combine_semantic_and_instance_outputs``.

Same synthetic prediction for both sides: a ``--size`` image (default 400x400, COCO input),
K = ``--classes`` (default 133: 80 things + 53 stuff), N = ``--instances`` (default 100)
instance masks with smooth elliptical probability maps in random boxes, all scores >= 0.5 (so
every instance goes through both merges: the worst case), in decreasing score order as
Detectron2's detector returns them (``--unsorted``: random order, the slower path). The JSIS
side gets what JSISNet gives it (float scores [K, H, W], float mask probabilities [N, H, W]);
the Detectron2 side gets what PanopticFPN gives it (bool masks, already thresholded when
pasted) and, as PanopticFPN does, the per-pixel argmax of the scores inside the timed call.
The sides run interleaved (one run of each per repeat, so that load from other processes hits
all alike) after a warm-up; median and min are reported; threads pinned by tools/benchmark.py.
"""

import logging
import statistics
import time

import torch

from ..postprocessing import jsis_panoptic_merge, kirillov_panoptic_merge

logger = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument(
        "--instances", type=int, nargs="+", default=[100], help="instance counts N (default 100)"
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

    h, w = args.size
    k, t = args.classes, args.things
    repeats = 3 if args.quick else args.repeats
    is_thing = torch.arange(k) < t
    area, score_thr, mask_thr, overlap = 4096, 0.5, 0.5, 0.5
    rows = []
    for n in args.instances:
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

        times = _time_interleaved(
            {"jsis": jsis, "d2": d2, "kirillov": kirillov}, repeats, args.device
        )
        t_jsis, t_d2, t_kir = (statistics.median(times[k]) for k in ("jsis", "d2", "kirillov"))
        m_jsis, m_d2 = min(times["jsis"]), min(times["d2"])
        n_jsis = len(jsis()[1])
        n_d2 = len(d2()[1])
        rows.append(
            {
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
        "| speedup | jsis kirillov wrapper (ms) | segments jsis / d2 |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['instances']} | {r['jsis_ms']:.1f} [{r['jsis_min_ms']:.1f}] | "
            f"{r['detectron2_combine_ms']:.1f} [{r['detectron2_combine_min_ms']:.1f}] | "
            f"{r['speedup_vs_detectron2']:.1f}x [{r['speedup_vs_detectron2_min']:.1f}x] | "
            f"{r['jsis_kirillov_ms']:.1f} | {r['segments_jsis']} / {r['segments_detectron2']} |"
        )
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
