"""COCO panoptic results, as the COCO panoptic challenge and panopticapi's ``pq_compute`` read
them, written image by image so that a run can stop anywhere and resume. Shared by every
prediction backend (PyTorch and ONNX).

Layout of an output folder OUT::

    OUT/panoptic/<name>.png         one RGB PNG per image: segment id = R + 256 G + 256^2 B
    OUT/records/<name>.json         that image's annotation record (written AFTER its PNG)
    OUT/predictions.json            {"annotations": [record, ...], "categories": [...]}
    OUT/figures/<name>.png          optional pictures (``draw``)

``<name>`` is a relative path (it may hold folders) chosen by the caller so that two inputs
never share it (:func:`jsis_runtime.inputs.png_names`). Each PNG and record is written
atomically (:mod:`jsis_runtime.atomic`); an image is finished when its record exists, so a
killed run leaves finished images and at most hidden temporary files.

A record: ``{"image_id", "file_name" (the PNG's path under OUT/panoptic), "segments_info":
[{"id", "category_id" (DATASET id), "iscrowd": 0, "isthing" (0/1), "area", "bbox" [x, y, w, h],
"score" (things only)}]}`` (the keys ``jsis_d2.evaluation``'s saved predictions have, plus
``iscrowd`` and ``bbox`` of the COCO format). Areas and boxes are counted on the written
map; a segment without pixels is left out (panopticapi refuses a segment absent from the PNG).
"""

import io
import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image

from .atomic import atomic_open, atomic_write_text

__all__ = [
    "PANOPTIC_DIRNAME",
    "RECORDS_DIRNAME",
    "FIGURES_DIRNAME",
    "PREDICTIONS_JSON",
    "ID_LIMIT",
    "id2rgb",
    "rgb2id",
    "encode_panoptic_png",
    "image_record",
    "PanopticResultsWriter",
]

logger = logging.getLogger(__name__)

PANOPTIC_DIRNAME = "panoptic"
RECORDS_DIRNAME = "records"
FIGURES_DIRNAME = "figures"
PREDICTIONS_JSON = "predictions.json"
#: Segment ids are in [0, ID_LIMIT): three 8-bit channels.
ID_LIMIT = 1 << 24
#: Maps with ids below this are counted with a lookup table (else by sorting).
_LUT_LIMIT = 1 << 22


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Integer ids [H, W] (any shape) in [0, 2**24) -> uint8 colors [H, W, 3] (R, G, B),
    ``id = R + 256 G + 256**2 B`` (panopticapi's ``id2rgb``)."""
    u = np.asarray(ids).astype(np.uint32)
    return np.stack([u & 255, (u >> 8) & 255, u >> 16], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """uint8 colors [H, W, 3] (R, G, B; a 4th channel is ignored) -> uint32 ids [H, W]."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"panoptic colors must be RGB [H, W, 3], got shape {rgb.shape}")
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return r | (g << 8) | (b << 16)


def encode_panoptic_png(ids: np.ndarray, where: str = "panoptic map") -> bytes:
    """Integer segment ids [H, W] in [0, 2**24) -> the bytes of a COCO panoptic RGB PNG."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{where}: panoptic ids must be [H, W], got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= ID_LIMIT):
        raise ValueError(
            f"{where}: panoptic ids must be in [0, 2**24), got {ids.min()}..{ids.max()}"
        )
    buf = io.BytesIO()
    Image.fromarray(id2rgb(ids)).save(buf, format="PNG")
    return buf.getvalue()


def _segment_stats(pan: np.ndarray) -> Dict[int, tuple]:
    """{segment id: (area, [x, y, w, h])} of every id in ``pan`` int [H, W] (0 included), in
    a few passes over the map, not one per segment."""
    h, w = pan.shape
    flat = pan.reshape(-1).astype(np.int64, copy=False)
    if flat.size and 0 <= flat.min() and flat.max() < _LUT_LIMIT:
        counts = np.bincount(flat)
        present = np.flatnonzero(counts)
        lut = np.zeros(len(counts), dtype=np.int64)
        lut[present] = np.arange(len(present))
        inverse, counts = lut[pan], counts[present]
    else:  # ids beyond a lookup table's size: sort instead
        present, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(h, w)
    rows = np.zeros((len(present), h), dtype=bool)  # [n, H]: segment has a pixel in row y
    cols = np.zeros((len(present), w), dtype=bool)
    rows[inverse, np.arange(h)[:, None]] = True
    cols[inverse, np.arange(w)[None, :]] = True
    y0, y1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
    return {
        int(sid): (int(n), [int(a), int(b), int(c - a + 1), int(d - b + 1)])
        for sid, n, a, b, c, d in zip(present.tolist(), counts.tolist(), x0, y0, x1, y1)
    }


def image_record(image_id, file_name: str, pan: np.ndarray, segments_info: List[Dict]) -> Dict:
    """The COCO panoptic annotation of one image (module docstring).

    Args:
        image_id: the image's id (int or str), as the ground truth / image-info file has it.
        file_name: the PNG's path relative to the PNG folder.
        pan: int [H, W] segment ids (0 = void).
        segments_info: [{"id", "category_id" (DATASET id), "isthing", "score" (things)...}].
    Raises:
        ValueError: a pixel's segment id is not 0 and not in ``segments_info``, or an id is
            listed twice.
    """
    seg_ids = [int(s["id"]) for s in segments_info]
    if len(set(seg_ids)) != len(seg_ids):
        raise ValueError(f"image {image_id!r}: duplicate segment ids in segments_info")
    stats = _segment_stats(np.asarray(pan))
    unknown = set(stats) - set(seg_ids) - {0}
    if unknown:
        raise ValueError(
            f"image {image_id!r}: segment id(s) {sorted(unknown)[:5]} in the panoptic map are "
            "not in segments_info"
        )
    segs = []
    for s in segments_info:
        sid = int(s["id"])
        if sid not in stats:
            continue  # no pixel left: panopticapi would refuse it
        area, bbox = stats[sid]
        seg = {
            "id": sid,
            "category_id": int(s["category_id"]),
            "iscrowd": 0,
            "isthing": int(bool(s["isthing"])),
            "area": area,
            "bbox": bbox,
        }
        if "score" in s:
            seg["score"] = float(s["score"])
        segs.append(seg)
    return {"image_id": image_id, "file_name": file_name, "segments_info": segs}


class PanopticResultsWriter:
    """Writes COCO panoptic results into ``output_dir`` image by image (module docstring).

    Args:
        output_dir: the output folder OUT (created when missing).
        categories: the COCO ``categories`` list of ``predictions.json``: dicts with "id"
            (dataset id), "name", "isthing" (0/1) and optionally "color".
        draw: optional ``draw(image_rgb, pan, segments_info) -> uint8 RGB [H, W, 3]``; its
            picture of each image goes to ``OUT/figures/<name>`` (before the record).
    """

    def __init__(self, output_dir: str, categories: Sequence[Dict], draw=None):
        self.output_dir = output_dir
        self.categories = [dict(c) for c in categories]
        self.draw = draw
        self.figures_dir = os.path.join(output_dir, FIGURES_DIRNAME)
        self.png_dir = os.path.join(output_dir, PANOPTIC_DIRNAME)
        self.records_dir = os.path.join(output_dir, RECORDS_DIRNAME)

    def _record_path(self, name: str) -> str:
        return os.path.join(self.records_dir, os.path.splitext(name)[0] + ".json")

    def is_done(self, name: str) -> bool:
        """Whether the image whose PNG is ``name`` was finished (its record exists)."""
        return os.path.isfile(self._record_path(name))

    def write(
        self, name: str, image_id, pan: np.ndarray, segments_info: List[Dict], image=None
    ) -> Dict:
        """Write one image's PNG ``OUT/panoptic/<name>`` (and its figure when drawing, from
        ``image`` uint8 RGB [H, W, 3]) then its record, each atomically; returns the record
        (see :func:`image_record`)."""
        record = image_record(image_id, name, pan, segments_info)
        files = [
            (os.path.join(self.png_dir, name), encode_panoptic_png(pan, f"image {image_id!r}"))
        ]
        if self.draw is not None and image is not None:
            buf = io.BytesIO()
            Image.fromarray(self.draw(image, pan, segments_info)).save(buf, format="PNG")
            files.append((os.path.join(self.figures_dir, name), buf.getvalue()))
        record_path = self._record_path(name)
        for path, data in files:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_open(path, "wb") as f:
                f.write(data)
        os.makedirs(os.path.dirname(record_path), exist_ok=True)
        atomic_write_text(record_path, json.dumps(record))
        return record

    def read_record(self, name: str) -> Dict:
        """The record a finished image left (ValueError naming the file if it is unreadable)."""
        path = self._record_path(name)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the prediction record {path}: {e}") from None

    def write_json(self, names: Iterable[str], records: Optional[Dict[str, Dict]] = None) -> str:
        """Write ``OUT/predictions.json`` (atomically) with the records of ``names``, in that
        order (from ``records`` when given there, else from the record files); returns its
        path."""
        records = records or {}
        annotations = [records.get(n) or self.read_record(n) for n in names]
        path = os.path.join(self.output_dir, PREDICTIONS_JSON)
        text = json.dumps({"annotations": annotations, "categories": self.categories})
        atomic_write_text(path, text)
        logger.info("Wrote %d panoptic predictions to %s", len(annotations), path)
        return path
