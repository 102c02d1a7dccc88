"""Deterministic synthetic panoptic dataset in COCO panoptic format (the demo's default data).

- 5 STUFF classes, told apart by texture and colour statistics, in large irregular regions
  covering the image: sky, grass, bricks, tiles, sand (see ``_stuff_texture``).
- 4 THING classes, told apart by SHAPE only (disc, triangle, square, cross): random colours,
  8 px to 1/3 of the image, occluding each other (each keeps >= 30% of its area visible).
- Crowd regions (iscrowd=1: a cluster of tiny shapes of one class, one segment) and void
  pixels (thin unlabeled rings around some objects, as in COCO).

Layout: ``root/<split>/images/000000.png``, ``root/<split>/panoptic/000000.png`` (id = R +
256 G + 256^2 B) and ``root/<split>/panoptic_<split>.json`` (COCO panoptic JSON).

Segment ids: stuff ``category_id * 1000``, things ``category_id * 1000 + n`` (n >= 1).
Dataset category ids: things 1..4, stuff 11..15 (deliberately not contiguous: the label
space maps them to k = 0..8, things first).

Same arguments -> byte-identical files (each image has its own RNG seeded by
(seed, split, index), so the images do not depend on ``num_images``).
"""

import contextlib
import json
import logging
import os
import re
import zlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ..utils.atomic import atomic_write_text, is_atomic_temporary, remove_stale_temporaries
from ..utils.folder_lock import hold_folder
from .panoptic_png import write_panoptic_png

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "synthetic_split_paths",
    "render_synthetic_image",
    "generate_synthetic_dataset",
    "SyntheticSplitMismatch",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
THING_NAMES = ("disc", "triangle", "square", "cross")
STUFF_NAMES = ("sky", "grass", "bricks", "tiles", "sand")
_THING_COLORS = ([220, 20, 60], [0, 0, 142], [255, 140, 0], [106, 0, 228])
_STUFF_COLORS = ([70, 130, 180], [107, 142, 35], [150, 60, 40], [128, 128, 128], [230, 200, 120])
SYNTHETIC_CATEGORIES: List[Dict] = [
    {"id": i + 1, "name": n, "isthing": 1, "color": list(c), "supercategory": "shape"}
    for i, (n, c) in enumerate(zip(THING_NAMES, _THING_COLORS))
] + [
    {"id": 11 + i, "name": n, "isthing": 0, "color": list(c), "supercategory": "texture"}
    for i, (n, c) in enumerate(zip(STUFF_NAMES, _STUFF_COLORS))
]

# Generation constants (fractions are of the image area / shorter side).
_MIN_STUFF_FRACTION = 0.05  # a stuff region below this is merged into its neighbours
_MIN_THING_PX = 8  # smallest object size (bounding extent, pixels)
_MAX_THING_FRACTION = 1.0 / 3  # largest object size, fraction of the shorter side
_MIN_VISIBLE_FRACTION = 0.3  # occlusion limit: each instance keeps this much of its area
_MIN_VISIBLE_PX = 12
_CROWD_PROB = 0.2  # images with one crowd region
_VOID_RING_PROB = 0.3  # objects with a 1-px unlabeled ring around them
_MIN_COLOR_CONTRAST = 60.0  # RGB distance between a thing and the stuff under it


def synthetic_split_paths(root: str, split: str) -> Dict[str, str]:
    """Paths of one split: {"image_root", "panoptic_root", "panoptic_json"}."""
    d = os.path.join(root, split)
    return {
        "image_root": os.path.join(d, "images"),
        "panoptic_root": os.path.join(d, "panoptic"),
        "panoptic_json": os.path.join(d, f"panoptic_{split}.json"),
    }


# ------------------------------------------------------------------------------ rendering
def _hsv(rng, h: Tuple[float, float], s: Tuple[float, float], v: Tuple[float, float]) -> np.ndarray:
    """Random colour with hue/sat/val in the given ranges (fractions) -> float32 RGB [3]."""
    hsv = np.array(
        [[[rng.uniform(*h) % 1.0 * 180.0, rng.uniform(*s) * 255.0, rng.uniform(*v) * 255.0]]]
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _stuff_texture(k: int, rng, h: int, w: int) -> np.ndarray:
    """float32 [h, w, 3] RGB texture of stuff class k (index into STUFF_NAMES)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    name = STUFF_NAMES[k]
    if name == "sky":
        base = _hsv(rng, (0.55, 0.65), (0.35, 0.7), (0.75, 0.95))
        shade = 1.0 - 0.3 * (yy / max(h - 1, 1)) * rng.uniform(0.5, 1.0)
        lum = (shade - 1.0) * 255.0 + rng.normal(0, 2.0, (h, w))
    elif name == "grass":
        base = _hsv(rng, (0.22, 0.38), (0.5, 0.85), (0.35, 0.6))
        lum = rng.normal(0, 28.0, (h, w))
    elif name == "bricks":
        base = _hsv(rng, (-0.03, 0.06), (0.5, 0.8), (0.5, 0.8))
        period = rng.uniform(5.0, 9.0)
        lum = 45.0 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
        lum = lum + rng.normal(0, 6.0, (h, w))
    elif name == "tiles":
        base = _hsv(rng, (0.0, 1.0), (0.0, 0.12), (0.45, 0.8))
        period = rng.uniform(8.0, 14.0)
        checker = np.sign(np.sin(np.pi * u / period) * np.sin(np.pi * v / period))
        lum = 35.0 * checker + rng.normal(0, 5.0, (h, w))
    else:  # sand
        base = _hsv(rng, (0.11, 0.16), (0.35, 0.6), (0.7, 0.9))
        dots = (rng.random((h, w)) < 0.04).astype(np.float32)
        dots = cv2.dilate(dots, np.ones((2, 2), np.uint8))
        lum = -80.0 * dots + rng.normal(0, 6.0, (h, w))
    return base[None, None, :] + lum[:, :, None].astype(np.float32)


def _smooth_noise(rng, grid: int, h: int, w: int) -> np.ndarray:
    """float32 [h, w]: a grid x grid normal field upsampled (bicubic)."""
    field = rng.normal(size=(grid, grid)).astype(np.float32)
    return cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)


def _stuff_layout(rng, h: int, w: int, n: int) -> np.ndarray:
    """int [h, w] region index in [0, n): argmax of smooth random fields, regions >= 5%."""
    # coarse + 0.2 fine, one field per region
    fields = np.stack(
        [_smooth_noise(rng, 3, h, w) + 0.2 * _smooth_noise(rng, 12, h, w) for _ in range(n)]
    )
    alive = np.ones(n, dtype=bool)
    while True:
        scores = np.where(alive[:, None, None], fields, -np.inf)
        region = scores.argmax(0)
        areas = np.bincount(region.ravel(), minlength=n)
        small = np.nonzero(alive & (areas < _MIN_STUFF_FRACTION * h * w))[0]
        if len(small) == 0 or alive.sum() == 1:
            return region
        alive[small[np.argmin(areas[small])]] = False


def _shape_polygon(cls: int, rng, cx: float, cy: float, size: float) -> List[Tuple[float, float]]:
    """Polygon (x, y) of thing class ``cls`` with bounding extent ~``size``, random rotation."""
    r = size / 2.0
    if THING_NAMES[cls] == "disc":
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(a) * r, np.sin(a) * r * rng.uniform(0.85, 1.0)], 1)
    elif THING_NAMES[cls] == "triangle":
        a = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + np.pi / 2
        pts = np.stack([np.cos(a), np.sin(a)], 1) * r * 1.1
    elif THING_NAMES[cls] == "square":
        s = r * 0.75
        pts = np.array([[-s, -s], [s, -s], [s, s], [-s, s]]) * [1.0, rng.uniform(0.85, 1.0)]
    else:  # cross
        t = r * 0.33
        arm = [(-t, -r), (t, -r), (t, -t)]  # one arm; the others: turned by 90 degrees
        for _ in range(3):
            arm += [(-y, x) for x, y in arm[-3:]]
        pts = np.array(arm)
    ang = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = pts @ rot.T + [cx, cy]
    return [(float(x), float(y)) for x, y in pts]


def _polygon_mask(poly, h: int, w: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1)
    return np.asarray(canvas, dtype=bool)


def _sample_size(rng, h: int, w: int) -> float:
    hi = max(_MIN_THING_PX + 1.0, _MAX_THING_FRACTION * min(h, w))
    lo = float(_MIN_THING_PX)
    mid = min(2.0 * lo, hi)
    a, b = (lo, mid) if rng.random() < 0.25 else (mid, hi)  # 1 in 4: small objects
    return float(np.exp(rng.uniform(np.log(a), np.log(b))))


def render_synthetic_image(rng, h: int, w: int) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
    """One synthetic image.

    Returns:
        image uint8 [h, w, 3] RGB; pan_ids int64 [h, w] (0 = void); segments: list of
        {"id", "category_id" (dataset id), "iscrowd"} for every id > 0 in ``pan_ids``.
    """
    # ---- stuff: 1-4 classes in large irregular regions
    n_stuff = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.4, 0.35, 0.15]))
    stuff_cls = rng.choice(len(STUFF_NAMES), n_stuff, replace=False)
    region = _stuff_layout(rng, h, w, n_stuff)
    image = np.zeros((h, w, 3), np.float32)
    pan = np.zeros((h, w), np.int64)
    segments = []
    for j, k in enumerate(stuff_cls):
        m = region == j
        if not m.any():
            continue
        cat = SYNTHETIC_CATEGORIES[len(THING_NAMES) + int(k)]["id"]
        image[m] = _stuff_texture(int(k), rng, h, w)[m]
        pan[m] = cat * 1000
        segments.append({"id": cat * 1000, "category_id": cat, "iscrowd": 0})

    objects, owner = _paint_things(rng, image)
    ring_kernel = np.ones((3, 3), np.uint8)
    void = np.zeros((h, w), bool)
    for i, o in enumerate(objects):
        cat = SYNTHETIC_CATEGORIES[o["cls"]]["id"]
        seg_id = cat * 1000 + i + 1
        vis = owner == i + 1
        pan[vis] = seg_id
        segments.append({"id": seg_id, "category_id": cat, "iscrowd": int(o["crowd"])})
        if not o["crowd"] and rng.random() < _VOID_RING_PROB:
            void |= cv2.dilate(o["mask"].astype(np.uint8), ring_kernel).astype(bool) & ~o["mask"]
    pan[void & (owner == 0)] = 0

    image = image + rng.normal(0, 3.0, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    present = set(np.unique(pan).tolist())
    segments = [s for s in segments if s["id"] in present]
    return image, pan, segments


def _paint_things(rng, image: np.ndarray) -> Tuple[List[Dict], np.ndarray]:
    """Paint things (and at most one crowd) into float32 ``image`` [h, w, 3], in order: later
    ones occlude earlier ones. Returns the painted objects ({"cls", "mask" (full, bool
    [h, w]), "crowd"}) and int32 [h, w] owner (index + 1 of the object owning each pixel)."""
    h, w = image.shape[:2]
    owner = np.zeros((h, w), np.int32)
    objects = []
    plans = [True] * (rng.random() < _CROWD_PROB) + [False] * int(rng.integers(2, 8))
    attempts = 0
    while plans and attempts < 40:
        attempts += 1
        crowd = plans[0]
        cls = int(rng.integers(len(THING_NAMES)))
        if crowd:
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            spread = rng.uniform(0.08, 0.15) * min(h, w)
            mask = np.zeros((h, w), bool)
            for _ in range(int(rng.integers(5, 10))):
                px, py = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
                mask |= _polygon_mask(_shape_polygon(cls, rng, px, py, rng.uniform(5, 8)), h, w)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            mask = _polygon_mask(_shape_polygon(cls, rng, cx, cy, _sample_size(rng, h, w)), h, w)
        if mask.sum() < _MIN_VISIBLE_PX:
            continue
        # occlusion limit for the objects already painted
        new_owner = np.where(mask, len(objects) + 1, owner)
        visible = np.bincount(new_owner.ravel(), minlength=len(objects) + 2)[1:-1]
        if any(
            vis < max(_MIN_VISIBLE_FRACTION * o["mask"].sum(), _MIN_VISIBLE_PX)
            for vis, o in zip(visible, objects)
        ):
            continue
        # colour: random, but distinguishable from what lies beneath
        under = image[mask].mean(0)
        for _ in range(10):
            color = rng.uniform(20, 235, 3).astype(np.float32)
            if np.linalg.norm(color - under) >= _MIN_COLOR_CONTRAST:
                break
        ys, xs = np.nonzero(mask)
        g = rng.normal(size=2)
        g = g / (np.linalg.norm(g) + 1e-6) * rng.uniform(10, 30) / max(np.ptp(xs) + np.ptp(ys), 1)
        shade = (xs - xs.mean()) * g[0] + (ys - ys.mean()) * g[1]
        image[ys, xs] = color + shade[:, None] + rng.normal(0, 5.0, (len(xs), 1))
        owner = new_owner
        objects.append({"cls": cls, "mask": mask, "crowd": crowd})
        plans.pop(0)
    return objects, owner


def _segment_stats(pan: np.ndarray, seg_id: int) -> Tuple[int, List[int]]:
    ys, xs = np.nonzero(pan == seg_id)
    x0, y0 = int(xs.min()), int(ys.min())
    return int(len(xs)), [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


# ------------------------------------------------------------------------------ dataset files
class SyntheticSplitMismatch(ValueError):
    """A split folder holds this generator's output made with other arguments; nothing was
    changed. ``reason`` names the folder and the differing arguments (the tools add which
    flag regenerates it)."""

    def __init__(self, split_dir: str, old: Dict, new: Dict):
        changes = ", ".join(
            f"{k} {old.get(k)!r} on disk vs {new[k]!r} asked" for k in new if old.get(k) != new[k]
        )
        self.reason = f"{split_dir} holds a synthetic split made with other arguments ({changes})"
        super().__init__(
            f"{self.reason}; it was left as is. Regenerate it with overwrite=True, or use "
            "another root."
        )


#: Written into a split folder before its first image, removed after its JSON: a split that
#: has it was interrupted (Ctrl-C, kill, full disk). Holds the generation's arguments.
INCOMPLETE_MARKER = ".jsis_synthetic_incomplete.json"
_IMAGE_NAME = re.compile(r"^\d{6}\.(png|jpg)$")
_PNG_NAME = re.compile(r"^\d{6}\.png$")


def _generated_names(params: Dict) -> List[str]:
    """Relative paths (below the split folder) of every file a generation with ``params``
    writes before its JSON."""
    n, fmt = params["num_images"], params["image_format"]
    return [f"images/{i:06d}.{fmt}" for i in range(n)] + [f"panoptic/{i:06d}.png" for i in range(n)]


def _remove_interrupted_split(split_dir: str, names: List[str], why: str) -> None:
    logger.warning(
        "Removing an incomplete synthetic split in %s (%s); regenerating it", split_dir, why
    )
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(split_dir, name))
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(split_dir, INCOMPLETE_MARKER))
    remove_stale_temporaries(split_dir)


def _looks_generated(split_dir: str) -> Optional[List[str]]:
    """The files of ``split_dir`` when they are all named as this generator names them
    (``images/NNNNNN.png|jpg``, ``panoptic/NNNNNN.png``, hidden temporaries of atomic
    writes) and there is nothing else; else None. For splits interrupted before the
    generator wrote :data:`INCOMPLETE_MARKER`."""
    names = []
    for top in os.listdir(split_dir):
        full = os.path.join(split_dir, top)
        if top in ("images", "panoptic") and os.path.isdir(full):
            pattern = _IMAGE_NAME if top == "images" else _PNG_NAME
            for f in os.listdir(full):
                if not (pattern.match(f) and os.path.isfile(os.path.join(full, f))):
                    return None
                names.append(f"{top}/{f}")
        elif not is_atomic_temporary(top):
            return None
    return names


def _read_marker(split_dir: str) -> Optional[Dict]:
    try:
        with open(os.path.join(split_dir, INCOMPLETE_MARKER)) as f:
            marker = json.load(f)
        _generated_names(marker)  # has the keys it needs
        return marker
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reuse_existing_split(paths: Dict[str, str], params: Dict, overwrite: bool) -> bool:
    """Whether the split folder already holds this generator's output made with ``params``
    (then it is reused). Errors and ``overwrite``: see :func:`generate_synthetic_dataset`;
    overwriting deletes the files the JSON lists, and the JSON, not the others. An
    interrupted generation (its marker) is removed and redone without ``overwrite``."""
    split_dir = os.path.dirname(paths["panoptic_json"])
    if not (os.path.isdir(split_dir) and os.listdir(split_dir)):
        return False
    try:
        with open(paths["panoptic_json"]) as f:
            data = json.load(f)
    except (OSError, ValueError):  # none, or not JSON: not this generator's
        data = None
    old = data.get("info", {}).get("jsis_synthetic") if isinstance(data, dict) else None
    if old is None:
        marker = _read_marker(split_dir)
        if marker is not None:  # our own, interrupted: nothing of the user's to protect
            _remove_interrupted_split(split_dir, _generated_names(marker), "it was interrupted")
            return False
        generated = _looks_generated(split_dir) if overwrite else None
        if generated is not None:
            _remove_interrupted_split(
                split_dir, generated, "--overwrite; no JSON, only files named as it names them"
            )
            return False
        raise ValueError(
            f"{split_dir} exists and was not written by the synthetic generator (no "
            f"{os.path.basename(paths['panoptic_json'])} from it); choose another root or "
            "empty that folder"
        )
    if old == params and not overwrite:
        logger.info("Synthetic split %r already at %s (same arguments)", params["split"], split_dir)
        return True
    if not overwrite:
        raise SyntheticSplitMismatch(split_dir, old, params)
    generated = [
        os.path.join(paths["image_root"], im["file_name"]) for im in data.get("images", [])
    ]
    generated += [
        os.path.join(paths["panoptic_root"], a["file_name"]) for a in data.get("annotations", [])
    ]
    os.remove(paths["panoptic_json"])  # first: a half-removed split is never taken as complete
    for f in generated:
        if os.path.isfile(f):
            os.remove(f)
    kept = sum(len(files) for _, _, files in os.walk(split_dir))
    if kept:
        logger.info("Kept %d file(s) in %s that the generator did not write", kept, split_dir)
    return False


def generate_synthetic_dataset(
    root: str,
    split: str = "train",
    num_images: int = 400,
    image_size: Union[int, Sequence[int]] = 128,
    seed: int = 0,
    image_format: str = "png",
    overwrite: bool = False,
) -> Dict[str, str]:
    """Write ``num_images`` images of ``image_size`` (H or [H, W] px, >= 32; "png" or "jpg")
    as split ``split`` under ``root/<split>`` (layout: module doc); returns its paths
    (:func:`synthetic_split_paths`). The split name is part of every image's RNG seed.

    A split already written with the same arguments is reused (unless ``overwrite``). One
    written with other arguments raises :class:`SyntheticSplitMismatch`, or with
    ``overwrite`` has the files this generator wrote deleted (others stay). A non-empty
    folder it did not write is never touched (ValueError). The JSON is written last,
    atomically: an interrupted split has none, but has :data:`INCOMPLETE_MARKER`, so the
    next call removes and redoes it (no ``overwrite`` needed: those files are the
    generator's own). A split interrupted before the marker existed is recognised with
    ``overwrite`` when every file in it is named as the generator names them.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h < 32 or w < 32:
        raise ValueError(f"synthetic image_size must be >= 32 px, got {image_size}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"synthetic image_format must be 'png' or 'jpg', got {image_format!r}")
    if int(num_images) < 1:
        raise ValueError(f"synthetic split {split!r} needs num_images >= 1, got {num_images}")
    paths = synthetic_split_paths(root, split)
    params = {
        "version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "image_size": [h, w],
        "seed": int(seed),
        "image_format": image_format,
    }
    with hold_folder(root, "dataset root"):  # one generator per root
        return _write_split(paths, params, overwrite)


def _write_split(paths: Dict[str, str], params: Dict, overwrite: bool) -> Dict[str, str]:
    """:func:`generate_synthetic_dataset` once its arguments are checked and the root held."""
    h, w = params["image_size"]
    seed, split, image_format = params["seed"], params["split"], params["image_format"]
    num_images = params["num_images"]
    if _reuse_existing_split(paths, params, overwrite):
        return paths
    os.makedirs(paths["image_root"], exist_ok=True)
    os.makedirs(paths["panoptic_root"], exist_ok=True)
    split_dir = os.path.dirname(paths["panoptic_json"])
    atomic_write_text(os.path.join(split_dir, INCOMPLETE_MARKER), json.dumps(params))

    split_code = zlib.crc32(split.encode("utf-8"))
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([int(seed), split_code, i])
        image, pan, segments = render_synthetic_image(rng, h, w)
        stem = f"{i:06d}"
        image_name = f"{stem}.{image_format}"
        # quality: JPEG only (the PNG writer ignores it)
        Image.fromarray(image).save(os.path.join(paths["image_root"], image_name), quality=95)
        write_panoptic_png(os.path.join(paths["panoptic_root"], f"{stem}.png"), pan)
        for s in segments:
            s["area"], s["bbox"] = _segment_stats(pan, s["id"])
        images.append({"id": i, "file_name": image_name, "height": h, "width": w})
        annotations.append({"image_id": i, "file_name": f"{stem}.png", "segments_info": segments})
    data = {
        "info": {"description": "jsis_d2 synthetic panoptic dataset", "jsis_synthetic": params},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": SYNTHETIC_CATEGORIES,
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    atomic_write_text(paths["panoptic_json"], text)  # last: marks the split complete
    os.remove(os.path.join(split_dir, INCOMPLETE_MARKER))
    logger.info("Wrote %d synthetic %dx%d images (%s) to %s", num_images, h, w, split, split_dir)
    return paths
