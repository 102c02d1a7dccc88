"""Training targets derived from a panoptic id map and its segments_info (pure functions).

Shape legend: H, W = size of the id map (after any resize); S = number of segments in
``segments_info``; N = number of instance targets (non-crowd things present in the map).

Id spaces: ``pan_ids`` holds panoptic SEGMENT ids (0 = void, :mod:`jsis_d2.data.panoptic_png`);
``segments_info[i]["category_id"]`` is a CONTIGUOUS class index ``k`` in ``[0, K)`` (things
first, :mod:`jsis_d2.data.label_space`), so ``gt_classes`` are thing indices in ``[0, T)``.

Crowd regions (``iscrowd=1``, things) NEVER become instance targets; their semantic target is
their class (``INPUT.JSIS.CROWD_SEM_SEG: "class"``, default: a crowd of people is people
pixels) or ``ignore_label`` (``"ignore"``: the semantic loss skips them).
"""

from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch

from detectron2.structures import BitMasks, Boxes, Instances

from .ids import IdIndex

__all__ = [
    "check_crowd_sem_seg",
    "PanopticTargets",
    "segment_index_map",
    "checked_index_map",
    "targets_from_index_map",
    "targets_to_instances",
]

CROWD_SEM_SEG_MODES = ("class", "ignore")


def check_crowd_sem_seg(mode: str) -> str:
    """``mode`` if it is a ``CROWD_SEM_SEG_MODES``, else ValueError naming the config key."""
    if mode not in CROWD_SEM_SEG_MODES:
        raise ValueError(
            f"INPUT.JSIS.CROWD_SEM_SEG must be one of {CROWD_SEM_SEG_MODES}, got {mode!r}"
        )
    return mode


class PanopticTargets(NamedTuple):
    """Targets of one image, numpy, at the size of the id map.

    Attributes:
        sem_seg: int64 [H, W], contiguous class index per pixel, ``ignore_label`` for void
            (and for crowd pixels when ``crowd_sem_seg="ignore"``).
        masks: bool [N, H, W], one per non-crowd thing segment with at least one pixel, in
            ``segments_info`` order.
        classes: int64 [N], contiguous (= thing) index of each mask.
        segment_ids: int64 [N], panoptic segment id of each mask.
        boxes: float32 [N, 4], XYXY tight around each mask, max exclusive (pixels of the map).
    """

    sem_seg: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    segment_ids: np.ndarray
    boxes: np.ndarray


def segment_index_map(
    pan_ids: np.ndarray, segment_ids: Sequence[int]
) -> Tuple[np.ndarray, List[int]]:
    """int [H, W] segment ids (0 = void) -> (index map int32 [H, W]: 0 = void, i + 1 =
    ``segment_ids[i]`` (the S ids of ``segments_info``); sorted list of the ids > 0 of
    ``pan_ids`` that are not in ``segment_ids`` (their pixels get 0))."""
    rows, unknown = IdIndex(segment_ids).find(pan_ids)  # void: row 0, always found
    index = np.where(unknown, 0, rows).astype(np.int32)
    return index, np.unique(pan_ids[unknown]).tolist() if unknown.any() else []


def checked_index_map(
    pan_ids: np.ndarray, segment_ids: Sequence[int], png: str, error=ValueError
) -> np.ndarray:
    """The index map of :func:`segment_index_map`, of ids decoded from the PNG ``png`` that
    must agree with its ``segments_info``: ``error`` (one line naming ``png``) for an id > 0
    in the map that no segment describes, or a segment id absent from the map."""
    index, not_in_json = segment_index_map(pan_ids, segment_ids)
    if not_in_json:
        raise error(
            f"panoptic PNG {png} contains segment id(s) {not_in_json[:10]} that are not in its "
            "segments_info (JSON)"
        )
    counts = np.bincount(index.ravel(), minlength=len(segment_ids) + 1)[1:]
    not_in_png = [i for i, c in zip(segment_ids, counts) if c == 0]
    if not_in_png:
        raise error(
            f"segments_info (JSON) of {png} lists segment id(s) {not_in_png[:10]} that do not "
            "appear in the PNG"
        )
    return index


def targets_from_index_map(
    index: np.ndarray,
    segments_info: Sequence[Dict],
    *,
    crowd_sem_seg: str = "class",
    ignore_label: int = 255,
) -> PanopticTargets:
    """Semantic target over all K classes and instance targets from an index map.

    Args:
        index: int [H, W]: 0 = void, i + 1 = ``segments_info[i]`` (see
            :func:`segment_index_map`); values above S are not allowed.
        segments_info: the S dicts with ``id``, ``category_id`` (contiguous), ``isthing`` and
            optionally ``iscrowd`` (default 0).
        crowd_sem_seg: "class" or "ignore" (see module docstring); ValueError otherwise.
        ignore_label: value of void pixels in ``sem_seg``.
    """
    check_crowd_sem_seg(crowd_sem_seg)
    h, w = index.shape
    seg_ids = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    seg_cls = np.array([int(s["category_id"]) for s in segments_info], dtype=np.int64)
    crowd = np.array([bool(s.get("iscrowd", 0)) for s in segments_info], dtype=bool)
    thing = np.array([bool(s["isthing"]) for s in segments_info], dtype=bool)

    sem_of_segment = np.where(crowd & (crowd_sem_seg == "ignore"), ignore_label, seg_cls)
    lut = np.concatenate([[ignore_label], sem_of_segment]).astype(np.int64)
    sem_seg = lut[index]

    inst_idx = np.nonzero(thing & ~crowd)[0]
    masks = index[None] == (inst_idx + 1)[:, None, None].astype(index.dtype)
    rows = masks.any(axis=2)  # [N, H]
    cols = masks.any(axis=1)  # [N, W]
    keep = rows.any(axis=1)
    masks, rows, cols, inst_idx = masks[keep], rows[keep], cols[keep], inst_idx[keep]
    # XYXY: the first row/column with a pixel, and one past the last one
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1, y1 = w - cols[:, ::-1].argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    return PanopticTargets(sem_seg, masks, seg_cls[inst_idx], seg_ids[inst_idx], boxes)


def targets_to_instances(targets: PanopticTargets) -> Instances:
    """Detectron2 ``Instances`` of image_size (H, W): ``gt_masks`` BitMasks [N, H, W],
    ``gt_boxes`` Boxes [N, 4] XYXY tight around each mask (max exclusive, pixels of the map),
    ``gt_classes`` int64 [N] in [0, T)."""
    h, w = targets.sem_seg.shape
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.from_numpy(targets.boxes))
    inst.gt_classes = torch.as_tensor(targets.classes, dtype=torch.int64)
    inst.gt_masks = BitMasks(torch.from_numpy(np.ascontiguousarray(targets.masks)))
    return inst
