"""Benchmark: ``jsis_d2.evaluation.pq_compute`` vs panopticapi's ``pq_compute``.

Generates a COCO-panoptic-format ground truth and perturbed predictions in a temporary folder
(default 300 images of 400x400 with ~40 segments each; ``--quick``: 40 images), then times,
in the same run and on the same files:

- panopticapi ``pq_compute`` (its own process pool: ``multiprocessing.cpu_count()`` workers),
- ours (thread pool of ``--threads`` decoding threads, no process pool),
- the floor: only decoding the same PNGs with the same decoder (Pillow ``Image.open().load()``)
  on the same number of threads,
- hotcoco's panoptic quality when the package is installed (skipped otherwise).

Each is run ``--repeats`` times after one warm-up decode pass; the best time is reported. The
numbers of ours and panopticapi's are checked to be equal.
"""
import contextlib
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation.pq import pq_compute

from .common import verdict

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "generate_panoptic_case"]


def add_arguments(parser):
    parser.add_argument("--images", type=int, default=None, help="images (default 300, quick 40)")
    parser.add_argument("--size", type=int, nargs=2, default=[400, 400], metavar=("H", "W"))
    parser.add_argument("--segments", type=int, default=40, help="segments per image (about)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, quick 1)")
    parser.add_argument("--seed", type=int, default=0)


def _make_categories(rng, num_things=80, num_stuff=53):
    ids = np.sort(rng.choice(np.arange(1, 256), size=num_things + num_stuff, replace=False))
    isthing = np.zeros(len(ids), dtype=bool)
    isthing[rng.choice(len(ids), size=num_things, replace=False)] = True
    return [
        {"id": int(i), "name": f"{'thing' if t else 'stuff'}_{i}", "isthing": int(t),
         "color": [int(c) for c in rng.integers(0, 256, 3)]}
        for i, t in zip(ids, isthing)
    ]


def _voronoi(seeds, h, w):
    """Cell index int64 [H, W] of the nearest seed ([S, 2] as (y, x))."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    s = seeds.astype(np.float32)
    score = pts @ (-2.0 * s.T) + (s**2).sum(1)[None, :]
    return score.argmin(1).reshape(h, w)


def _segments_from_cells(rng, cells, cell_cat, cell_void, categories, crowd_prob, used):
    """Ids map + segments_info: thing cells are instances, stuff cells merge per class."""
    h, w = cells.shape
    cell_id = np.zeros(len(cell_cat), dtype=np.int64)
    segs = []
    stuff_ids = {}
    for c, (k, void) in enumerate(zip(cell_cat, cell_void)):
        if void:
            continue
        cat = categories[k]
        if not cat["isthing"] and k in stuff_ids:
            cell_id[c] = stuff_ids[k]
            continue
        while True:
            sid = int(rng.integers(1, 1 << 24))
            if sid not in used:
                used.add(sid)
                break
        cell_id[c] = sid
        if not cat["isthing"]:
            stuff_ids[k] = sid
        crowd = int(bool(cat["isthing"]) and rng.random() < crowd_prob)
        segs.append({"id": sid, "category_id": cat["id"], "iscrowd": crowd})
    ids = cell_id[cells]
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist()))
    out = []
    for s in segs:
        if s["id"] in area:
            ys, xs = np.nonzero(ids == s["id"])
            s["area"] = int(area[s["id"]])
            s["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                         int(ys.max() - ys.min() + 1)]
            out.append(s)
    return ids, out


def generate_panoptic_case(root, num_images=300, size=(400, 400), segments=40, seed=0):
    """Write GT and perturbed predictions in COCO panoptic format under ``root``.

    Layout: ``root/gt.json`` + ``root/gt/*.png`` and ``root/pred.json`` + ``root/pred/*.png``
    (so panopticapi's default folders apply). The prediction of each image is the ground
    truth's Voronoi partition with jittered seeds (IoUs spread around 0.5..1), ~10% of cells
    relabelled, ~5% of cells void, and fresh segment ids. Returns (gt_json, pred_json).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    categories = _make_categories(rng)
    ncat = len(categories)
    for sub in ("gt", "pred"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    gt_anns, pred_anns, images = [], [], []
    for i in range(num_images):
        n = max(2, int(rng.integers(segments * 3 // 4, segments * 5 // 4 + 1)))
        seeds = rng.uniform(0, [h, w], size=(n, 2))
        cell_cat = rng.integers(0, ncat, size=n)
        gt_void = rng.random(n) < 0.05
        used = set()
        gt_ids, gt_segs = _segments_from_cells(
            rng, _voronoi(seeds, h, w), cell_cat, gt_void, categories, 0.05, used
        )
        jitter = rng.normal(0, 0.15 * math.sqrt(h * w / n), size=seeds.shape)
        pcat = np.where(rng.random(n) < 0.1, rng.integers(0, ncat, size=n), cell_cat)
        pvoid = rng.random(n) < 0.05
        pred_ids, pred_segs = _segments_from_cells(
            rng, _voronoi(seeds + jitter, h, w), pcat, pvoid, categories, 0.0, set()
        )
        for s in pred_segs:
            s.pop("iscrowd")
        name = f"{i:012d}.png"
        write_panoptic_png(os.path.join(root, "gt", name), gt_ids)
        write_panoptic_png(os.path.join(root, "pred", name), pred_ids)
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w})
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": gt_segs})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segs})
    gt_json = os.path.join(root, "gt.json")
    pred_json = os.path.join(root, "pred.json")
    with open(gt_json, "w") as f:
        json.dump({"images": images, "annotations": gt_anns, "categories": categories}, f)
    with open(pred_json, "w") as f:
        json.dump({"annotations": pred_anns}, f)
    return gt_json, pred_json


#: The issue's goals: speed-up over panopticapi (at least) and wall time / decode floor (at most).
GOAL_SPEEDUP = 3.0
GOAL_FLOOR_RATIO = 1.3


def _timed(fn, repeats, cpu=None):
    """Run ``fn`` ``repeats`` times: (last output, wall times); CPU times of this process (all
    threads; robust to other load on a shared machine) are appended to ``cpu`` if given."""
    times = []
    out = None
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return out, times


def _decode_all(files, threads):
    def dec(p):
        with Image.open(p) as im:
            im.load()

    with ThreadPoolExecutor(max_workers=threads) as ex:
        list(ex.map(dec, files))


def _hotcoco_pq(gt_json, pred_json):
    from hotcoco.panoptic import pq_compute as hotcoco_pq  # optional: pip install hotcoco

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its table
        return hotcoco_pq(gt_json, pred_json)


def run(args):
    num = args.images or (40 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    threads = args.threads
    import jsis_d2.evaluation.pq as ours_mod
    import multiprocessing

    from panopticapi.evaluation import pq_compute as panopticapi_pq

    result = {"images": num, "size": list(args.size), "segments": args.segments,
              "repeats": repeats, "threads": threads,
              "panopticapi_processes": multiprocessing.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="jsis_pq_bench_") as root:
        t = time.perf_counter()
        gt_json, pred_json = generate_panoptic_case(
            root, num, tuple(args.size), args.segments, args.seed
        )
        result["generate_s"] = time.perf_counter() - t
        files = [os.path.join(root, "gt", f) for f in sorted(os.listdir(os.path.join(root, "gt")))]
        files += [os.path.join(root, "pred", f) for f in
                  sorted(os.listdir(os.path.join(root, "pred")))]
        _decode_all(files, threads)  # warm the page cache

        def ours():
            stats, cats = ours_mod.compute_pq_stats(gt_json, pred_json, num_threads=threads)
            return stats.results([c["id"] for c in cats], [c["isthing"] == 1 for c in cats])

        def reference():
            with contextlib.redirect_stdout(io.StringIO()):  # panopticapi prints progress
                return panopticapi_pq(gt_json, pred_json)

        times = {"floor_decode": [], "ours": [], "panopticapi": []}
        cpu = {"floor_decode": [], "ours": []}
        ref = mine = None
        for _ in range(repeats):  # interleaved so drift hits all sides alike
            times["floor_decode"] += _timed(lambda: _decode_all(files, threads), 1,
                                            cpu["floor_decode"])[1]
            mine, t_ours = _timed(ours, 1, cpu["ours"])
            times["ours"] += t_ours
            ref, t_ref = _timed(reference, 1)
            times["panopticapi"] += t_ref
        try:
            hc, t_hc = _timed(lambda: _hotcoco_pq(gt_json, pred_json), repeats)
            times["hotcoco"] = t_hc
            result["hotcoco"] = "measured (its own Rust thread pool)"
            result["hotcoco_max_abs_diff"] = max(
                abs(hc[g][k] - ref[g][k])
                for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq")
            )
        except Exception as e:  # optional: not installed or different API
            result["hotcoco"] = f"skipped ({type(e).__name__}: {e})"

    result["equal_to_panopticapi"] = mine == ref
    result["max_abs_diff"] = max(
        [abs(mine[g][k] - ref[g][k])
         for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq")]
        + [abs(mine["per_class"][c][k] - ref["per_class"][c][k])
           for c in ref["per_class"] for k in ("pq", "sq", "rq")]
    )
    result["PQ"] = 100 * mine["All"]["pq"]
    best = {k: min(v) for k, v in times.items()}
    result["best_s"] = best
    result["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    result["cpu_best_s"] = {k: min(v) for k, v in cpu.items()}
    result["ours_over_decode_floor_cpu"] = min(cpu["ours"]) / min(cpu["floor_decode"])
    result["load_average_1min"] = os.getloadavg()[0]
    result["speedup_vs_panopticapi"] = best["panopticapi"] / best["ours"]
    result["ours_over_decode_floor"] = best["ours"] / best["floor_decode"]
    if "hotcoco" in best:
        result["ours_over_hotcoco"] = best["ours"] / best["hotcoco"]
    rows = [
        ("panopticapi pq_compute ({} processes)".format(result["panopticapi_processes"]),
         best["panopticapi"], best["panopticapi"] / best["floor_decode"]),
        (f"jsis_d2 pq_compute ({threads} threads)", best["ours"],
         best["ours"] / best["floor_decode"]),
        (f"decode-only floor (Pillow, {threads} threads)", best["floor_decode"], 1.0),
    ]
    if "hotcoco" in best:
        rows.append(("hotcoco", best["hotcoco"], best["hotcoco"] / best["floor_decode"]))
    md = [
        f"PQ evaluation, {num} images {args.size[0]}x{args.size[1]}, ~{args.segments} segments "
        f"each (best of {repeats}):",
        "",
        "| implementation | wall time (s) | x decode floor |",
        "|---|---:|---:|",
    ] + [f"| {n} | {t:.3f} | {r:.2f} |" for n, t, r in rows] + [
        "",
        f"CPU time of this process (all threads): ours {result['cpu_best_s']['ours']:.3f} s, "
        f"decode floor {result['cpu_best_s']['floor_decode']:.3f} s, ratio "
        f"{result['ours_over_decode_floor_cpu']:.2f}. 1-min load average at the end: "
        f"{result['load_average_1min']:.1f} on {os.cpu_count()} cores.",
        "",
        f"speed-up vs panopticapi: {result['speedup_vs_panopticapi']:.2f}x; "
        f"ours / decode floor: {result['ours_over_decode_floor']:.2f}; "
        f"results equal to panopticapi: {result['equal_to_panopticapi']} "
        f"(max abs diff {result['max_abs_diff']:.3g}); PQ {result['PQ']:.2f}; "
        f"hotcoco: {result['hotcoco']}",
        "",
        "Goals: at least {:.0f}x faster than panopticapi: {}; within {:.1f}x of the decode "
        "floor: {}.".format(
            GOAL_SPEEDUP, verdict(result["speedup_vs_panopticapi"] >= GOAL_SPEEDUP),
            GOAL_FLOOR_RATIO, verdict(result["ours_over_decode_floor"] <= GOAL_FLOOR_RATIO)),
    ]
    result["markdown"] = "\n".join(md)
    return result
