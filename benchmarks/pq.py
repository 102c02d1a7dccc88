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
import multiprocessing
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from jsis_d2.data.panoptic_png import write_panoptic_png

from .report import INTERLEAVED_NOTE, describe_load, markdown_table, verdict, with_spread
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "generate_panoptic_case", "GOALS"]


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
        {
            "id": int(i),
            "name": f"{'thing' if t else 'stuff'}_{i}",
            "isthing": int(t),
            "color": [int(c) for c in rng.integers(0, 256, 3)],
        }
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
            s["bbox"] = [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            ]
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
GOALS = {"speedup_vs_panopticapi": 3.0, "ours_over_decode_floor": 1.3}


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


def _max_abs_diff(a, b, per_class=False):
    """Largest |a - b| over pq/sq/rq of All/Things/Stuff (and of every class)."""
    diffs = [abs(a[g][k] - b[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq")]
    if per_class:
        diffs += [
            abs(a["per_class"][c][k] - b["per_class"][c][k])
            for c in b["per_class"]
            for k in ("pq", "sq", "rq")
        ]
    return max(diffs)


def _sides(gt_json, pred_json, files, threads):
    """Side name -> call: decode floor, ours, panopticapi (timed interleaved, in this order)."""
    from panopticapi.evaluation import pq_compute as panopticapi_pq

    from jsis_d2.evaluation.pq import compute_pq_stats

    def ours():
        stats, cats = compute_pq_stats(gt_json, pred_json, num_threads=threads)
        return stats.results([c["id"] for c in cats], [c["isthing"] == 1 for c in cats])

    def reference():
        with contextlib.redirect_stdout(io.StringIO()):  # panopticapi prints progress
            return panopticapi_pq(gt_json, pred_json)

    return {
        "floor_decode": lambda: _decode_all(files, threads),
        "ours": ours,
        "panopticapi": reference,
    }


def _measure(args, num, repeats, result):
    """Generate the case in a temporary folder and time every side; returns the timings."""
    with tempfile.TemporaryDirectory(prefix="jsis_pq_bench_") as root:
        gen = time_calls(
            {
                "generate": lambda: generate_panoptic_case(
                    root, num, tuple(args.size), args.segments, args.seed
                )
            },
            1,
            warmup=0,
        )["generate"]
        result["generate_s"] = gen.wall[0]
        gt_json, pred_json = gen.last
        files = [
            os.path.join(root, sub, f)
            for sub in ("gt", "pred")
            for f in sorted(os.listdir(os.path.join(root, sub)))
        ]
        _decode_all(files, args.threads)  # warm the page cache
        sides = _sides(gt_json, pred_json, files, args.threads)
        try:  # optional: not installed, or a different API
            _hotcoco_pq(gt_json, pred_json)
            sides["hotcoco"] = lambda: _hotcoco_pq(gt_json, pred_json)
            result["hotcoco"] = "measured (its own Rust thread pool)"
        except Exception as e:
            result["hotcoco"] = f"skipped ({type(e).__name__}: {e})"
        # every side interleaved, so drift hits all alike; CPU time of this process too
        times = time_calls(sides, repeats, warmup=0, cpu_time=True)
        if "hotcoco" in times:
            result["hotcoco_max_abs_diff"] = _max_abs_diff(
                times["hotcoco"].last, times["panopticapi"].last
            )
    return times


def run(args):
    num = args.images or (40 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    result = {
        "images": num,
        "size": list(args.size),
        "segments": args.segments,
        "repeats": repeats,
        "threads": args.threads,
        "panopticapi_processes": multiprocessing.cpu_count(),
        "cpu_count": os.cpu_count(),
        "interleaved": True,
    }
    load0 = load_average()
    times = _measure(args, num, repeats, result)
    mine, ref = times["ours"].last, times["panopticapi"].last
    result["equal_to_panopticapi"] = mine == ref
    result["max_abs_diff"] = _max_abs_diff(mine, ref, per_class=True)
    result["PQ"] = 100 * mine["All"]["pq"]
    best = {k: v.min for k, v in times.items()}
    cpu = {k: min(times[k].cpu) for k in ("floor_decode", "ours")}
    result.update(
        {
            "best_s": best,
            "median_s": {k: v.median for k, v in times.items()},
            "times_s": {k: v.summary()["times_s"] for k, v in times.items()},
            "cpu_best_s": cpu,
            "ours_over_decode_floor_cpu": cpu["ours"] / cpu["floor_decode"],
            "load_average_1min": load_average(),
            "load_average": [load0, load_average()],
            "speedup_vs_panopticapi": best["panopticapi"] / best["ours"],
            "ours_over_decode_floor": best["ours"] / best["floor_decode"],
        }
    )
    if "hotcoco" in best:
        result["ours_over_hotcoco"] = best["ours"] / best["hotcoco"]
    result["markdown"] = markdown(result)
    return result


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    best = r["best_s"]
    names = {
        "panopticapi": f"panopticapi pq_compute ({r['panopticapi_processes']} processes)",
        "ours": f"jsis_d2 pq_compute ({r['threads']} threads)",
        "floor_decode": f"decode-only floor (Pillow, {r['threads']} threads)",
        "hotcoco": "hotcoco",
    }
    interleaved = bool(r.get("interleaved"))
    rows = [
        [name, f"{best[k]:.3f}", f"{best[k] / best['floor_decode']:.2f}"]
        + ([with_spread(r["median_s"][k], r["times_s"][k], 3)] if interleaved else [])
        for k, name in names.items()
        if k in best
    ]
    headers = ["implementation", "wall time (s)", "x decode floor"]
    if interleaved:
        headers.append("median (range) (s)")
    ok_speed = r["speedup_vs_panopticapi"] >= GOALS["speedup_vs_panopticapi"]
    ok_floor = r["ours_over_decode_floor"] <= GOALS["ours_over_decode_floor"]
    return "\n".join(
        [
            f"PQ evaluation, {r['images']} images {r['size'][0]}x{r['size'][1]}, ~{r['segments']} "
            f"segments each (best of {r['repeats']}"
            + (f"; {INTERLEAVED_NOTE}. {describe_load(r['load_average'])}" if interleaved else "")
            + "):",
            "",
            markdown_table(headers, rows),
            "",
            f"CPU time of this process (all threads): ours {r['cpu_best_s']['ours']:.3f} s, "
            f"decode floor {r['cpu_best_s']['floor_decode']:.3f} s, ratio "
            f"{r['ours_over_decode_floor_cpu']:.2f}. 1-min load average at the end: "
            f"{r['load_average_1min']:.1f} on {r['cpu_count']} cores.",
            "",
            f"speed-up vs panopticapi: {r['speedup_vs_panopticapi']:.2f}x; "
            f"ours / decode floor: {r['ours_over_decode_floor']:.2f}; "
            f"results equal to panopticapi: {r['equal_to_panopticapi']} "
            f"(max abs diff {r['max_abs_diff']:.3g}); PQ {r['PQ']:.2f}; hotcoco: {r['hotcoco']}",
            "",
            f"Goals: at least {GOALS['speedup_vs_panopticapi']:.0f}x faster than panopticapi: "
            f"{verdict(ok_speed)}; within {GOALS['ours_over_decode_floor']:.1f}x of the decode "
            f"floor: {verdict(ok_floor)}.",
        ]
    )
