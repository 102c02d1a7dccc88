"""Agreement of two prediction folders of ``tools/predict.py`` (e.g. the ONNX backend's against
the PyTorch backend's on the same images): the fraction of pixels whose CATEGORY agrees.

    python -m jsis_runtime.compare OUT_A OUT_B

The panoptic quality of one folder scored against the other (the stricter, segment-level
measure) is ``jsis_d2.evaluation.pq_compute(A/predictions.json, B/predictions.json,
A/panoptic, B/panoptic)``: a ``predictions.json`` is a valid ground truth (categories,
segments with ``iscrowd`` 0). Both are printed when jsis_d2 is importable.
"""

import argparse
import json
import os
import sys
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from .coco_panoptic import PANOPTIC_DIRNAME, PREDICTIONS_JSON, rgb2id

__all__ = ["category_map", "category_agreement", "main"]


def category_map(out_dir: str, ann: Dict) -> np.ndarray:
    """int64 [H, W] DATASET category id of every pixel of one annotation's PNG (-1 = void)."""
    path = os.path.join(out_dir, PANOPTIC_DIRNAME, ann["file_name"])
    with Image.open(path) as im:
        ids = rgb2id(np.asarray(im.convert("RGB")))
    seg_ids = np.array([s["id"] for s in ann["segments_info"]] + [0], dtype=np.int64)
    cats = np.array([s["category_id"] for s in ann["segments_info"]] + [-1], dtype=np.int64)
    order = np.argsort(seg_ids)
    pos = np.searchsorted(seg_ids[order], ids)
    return cats[order][np.clip(pos, 0, len(seg_ids) - 1)]


def category_agreement(dir_a: str, dir_b: str) -> Tuple[int, int, Dict]:
    """(pixels whose category agrees, pixels, {image_id: agreeing fraction}) over the images of
    ``dir_a/predictions.json``; ValueError naming an image missing from ``dir_b`` or of
    another size."""
    anns = {}
    for d in (dir_a, dir_b):
        with open(os.path.join(d, PREDICTIONS_JSON), encoding="utf-8") as f:
            anns[d] = {a["image_id"]: a for a in json.load(f)["annotations"]}
    agree = total = 0
    per_image = {}
    for image_id, ann in anns[dir_a].items():
        other = anns[dir_b].get(image_id)
        if other is None:
            raise ValueError(f"image {image_id!r} of {dir_a} has no prediction in {dir_b}")
        a, b = category_map(dir_a, ann), category_map(dir_b, other)
        if a.shape != b.shape:
            raise ValueError(f"image {image_id!r}: maps of sizes {a.shape} and {b.shape}")
        same = int((a == b).sum())
        agree, total = agree + same, total + a.size
        per_image[image_id] = same / a.size
    return agree, total, per_image


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir_a")
    p.add_argument("dir_b")
    args = p.parse_args(argv)
    agree, total, per_image = category_agreement(args.dir_a, args.dir_b)
    worst = min(per_image.items(), key=lambda kv: kv[1])
    print(
        f"category agreement: {100 * agree / total:.3f} % of {total} pixels, "
        f"{len(per_image)} images (lowest {100 * worst[1]:.2f} %: image {worst[0]!r})"
    )
    try:
        from jsis_d2.evaluation import pq_compute
    except ImportError:
        return 0
    pq = pq_compute(
        os.path.join(args.dir_a, PREDICTIONS_JSON),
        os.path.join(args.dir_b, PREDICTIONS_JSON),
        os.path.join(args.dir_a, PANOPTIC_DIRNAME),
        os.path.join(args.dir_b, PANOPTIC_DIRNAME),
    )
    print(
        "PQ of B scored against A: "
        + ", ".join(f"{g} {100 * pq[g]['pq']:.2f}" for g in ("All", "Things", "Stuff"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
