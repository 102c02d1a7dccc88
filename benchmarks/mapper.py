"""Benchmark: dataset mapper throughput (images/s) at the paper's input sizes.

For each size (400x400 as COCO, 512x1024 as Mapillary Vistas) a synthetic COCO-panoptic
dataset of that original size is generated in a temporary folder (JPEG images, as the real
datasets), and in the same run, single process, on the same files:

- ``JSISDatasetMapper`` in training mode: read image + panoptic PNG, check the PNG against
  segments_info, fixed-size resize + horizontal flip, semantic and instance targets;
- ``JSISDatasetMapper`` in test mode (image read + resize only);
- the floor: Detectron2's own ``DatasetMapper`` (test mode, same resize, no annotations).

The resize is always executed (``T.Resize``, as for real images whose size differs from the
input size), flip with probability 0.5. Every mapper runs one warm-up pass over the images,
then ``--repeats`` passes, the three mappers interleaved (one pass of each per repeat); the
best pass is reported. Ratios are against the Detectron2 image-only floor.
"""

import logging
import os
import tempfile

import cv2
import torch

from jsis_d2.data.dataset_mapper import JSISDatasetMapper
from jsis_d2.data.datasets.panoptic import load_panoptic_json
from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from .report import markdown_table
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown"]

SIZES = ((400, 400), (512, 1024))


def add_arguments(parser):
    parser.add_argument("--images", type=int, default=None, help="per size (default 24, quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="passes (default 3, quick 1)")
    parser.add_argument("--seed", type=int, default=0)


def _measure_size(tmp, h, w, num, repeats, seed):
    """One result row: images/s of the three mappers on ``num`` generated images of HxW."""
    split = f"b{h}x{w}"
    paths = generate_synthetic_dataset(tmp, split, num, (h, w), seed, "jpg")
    dicts = load_panoptic_json(
        paths["panoptic_json"],
        paths["image_root"],
        paths["panoptic_root"],
        LabelSpace(SYNTHETIC_CATEGORIES),
    )
    resize = [T.Resize((h, w))]
    mappers = {
        "jsis_train_img_s": JSISDatasetMapper(
            True, augmentations=resize + [T.RandomFlip(horizontal=True)], image_format="BGR"
        ),
        "jsis_test_img_s": JSISDatasetMapper(False, augmentations=resize, image_format="BGR"),
        "d2_image_only_img_s": DatasetMapper(False, augmentations=resize, image_format="BGR"),
    }
    passes = {k: (lambda m=m: [m(d) for d in dicts]) for k, m in mappers.items()}
    times = time_calls(passes, repeats, warmup=1)  # warm-up: file cache, lazy imports
    r = {
        "size": [h, w],
        "images": num,
        "segments_per_image": sum(len(d["segments_info"]) for d in dicts) / num,
        **{k: num / t.min for k, t in times.items()},
        "passes_img_s": {k: [num / x for x in t.wall] for k, t in times.items()},
    }
    r["train_vs_floor"] = r["jsis_train_img_s"] / r["d2_image_only_img_s"]
    r["test_vs_floor"] = r["jsis_test_img_s"] / r["d2_image_only_img_s"]
    logger.info("mapper %dx%d: %s", h, w, r)
    return r


def run(args):
    num = args.images or (4 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 3)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_measure_size(tmp, h, w, num, repeats, args.seed) for h, w in SIZES]
    result = {
        "rows": rows,
        "repeats": repeats,
        "load_average": [load_before, load_average()],
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
    }
    result["markdown"] = markdown(result)
    return result


def _passes(row, side):
    """The range of a side's passes (images/s), for results that recorded them."""
    p = row.get("passes_img_s", {}).get(f"{side}_img_s")
    return f"; passes {min(p):.1f}-{max(p):.1f}" if p else ""


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    load, rows = r["load_average"], r["rows"]
    table = [
        [
            f"{x['size'][0]}x{x['size'][1]}",
            f"{x['segments_per_image']:.1f}",
            f"{x['jsis_train_img_s']:.1f} ({x['train_vs_floor']:.2f}x{_passes(x, 'jsis_train')})",
            f"{x['jsis_test_img_s']:.1f} ({x['test_vs_floor']:.2f}x{_passes(x, 'jsis_test')})",
            f"{x['d2_image_only_img_s']:.1f} (1.00x{_passes(x, 'd2_image_only')})",
        ]
        for x in rows
    ]
    return "\n".join(
        [
            f"Mapper throughput, single process, {r['threads']} thread(s), best of {r['repeats']} "
            f"pass(es) over {rows[0]['images']} synthetic JPEG images per size (images/s; ratio vs "
            f"the d2 floor); machine load average {load[0]:.1f} -> {load[1]:.1f} on "
            f"{r['cpu_count']} CPUs",
            "",
            markdown_table(
                [
                    "input size",
                    "segments/img",
                    "JSIS train (targets + flip)",
                    "JSIS test",
                    "d2 DatasetMapper, image only (floor)",
                ],
                table,
                "lllll",
            ),
        ]
    )
