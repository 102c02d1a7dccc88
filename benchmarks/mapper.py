"""Benchmark: dataset mapper throughput (images/s) at the paper's input sizes.

For each size (400x400 as COCO, 512x1024 as Mapillary Vistas) a synthetic COCO-panoptic
dataset of that original size is generated in a temporary folder (JPEG images, as the real
datasets), and in the same run, single process, on the same files:

- ``JSISDatasetMapper`` in training mode: read image + panoptic PNG, check the PNG against
  segments_info, fixed-size resize + horizontal flip, semantic and instance targets;
- ``JSISDatasetMapper`` in test mode (image read + resize only);
- the floor: Detectron2's own ``DatasetMapper`` (test mode, same resize, no annotations).

The resize is always executed (``T.Resize``, as for real images whose size differs from the
input size), flip with probability 0.5. Every mapper runs ``--repeats`` passes over the images after one warm-up pass; the best pass
is reported. Ratios are against the Detectron2 image-only floor.
"""
import logging
import os
import tempfile
import time

import cv2
import torch
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from jsis_d2.data.dataset_mapper import JSISDatasetMapper
from jsis_d2.data.datasets.panoptic import load_panoptic_json
from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run"]

SIZES = ((400, 400), (512, 1024))


def add_arguments(parser):
    parser.add_argument("--images", type=int, default=None, help="per size (default 24, quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="passes (default 3, quick 1)")
    parser.add_argument("--seed", type=int, default=0)


def _best_rate(fn, dicts, repeats):
    for d in dicts:  # warm-up (file cache, lazy imports)
        fn(d)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for d in dicts:
            fn(d)
        best = min(best, time.perf_counter() - t0)
    return len(dicts) / best


def run(args):
    num = args.images or (4 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 3)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in SIZES:
            split = f"b{h}x{w}"
            paths = generate_synthetic_dataset(tmp, split, num, (h, w), args.seed, "jpg")
            dicts = load_panoptic_json(
                paths["panoptic_json"], paths["image_root"], paths["panoptic_root"],
                LabelSpace(SYNTHETIC_CATEGORIES),
            )
            resize = [T.Resize((h, w))]
            train = JSISDatasetMapper(
                True, augmentations=resize + [T.RandomFlip(horizontal=True)], image_format="BGR"
            )
            test = JSISDatasetMapper(False, augmentations=resize, image_format="BGR")
            floor = DatasetMapper(False, augmentations=resize, image_format="BGR")
            r = {
                "size": [h, w],
                "images": num,
                "segments_per_image": sum(len(d["segments_info"]) for d in dicts) / num,
                "jsis_train_img_s": _best_rate(train, dicts, repeats),
                "jsis_test_img_s": _best_rate(test, dicts, repeats),
                "d2_image_only_img_s": _best_rate(floor, dicts, repeats),
            }
            r["train_vs_floor"] = r["jsis_train_img_s"] / r["d2_image_only_img_s"]
            r["test_vs_floor"] = r["jsis_test_img_s"] / r["d2_image_only_img_s"]
            logger.info(f"mapper {h}x{w}: {r}")
            rows.append(r)
    load = (load_before, os.getloadavg()[0])
    md = [
        f"Mapper throughput, single process, {args.threads} thread(s), best of {repeats} "
        f"pass(es) over {num} synthetic JPEG images per size (images/s; ratio vs the d2 floor); "
        f"machine load average {load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} CPUs",
        "",
        "| input size | segments/img | JSIS train (targets + flip) | JSIS test | "
        "d2 DatasetMapper, image only (floor) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['segments_per_image']:.1f} | "
            f"{r['jsis_train_img_s']:.1f} ({r['train_vs_floor']:.2f}x) | "
            f"{r['jsis_test_img_s']:.1f} ({r['test_vs_floor']:.2f}x) | "
            f"{r['d2_image_only_img_s']:.1f} (1.00x) |"
        )
    return {"rows": rows, "repeats": repeats, "load_average": load, "markdown": "\n".join(md)}
