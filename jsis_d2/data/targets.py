"""Training targets derived from a panoptic id map and its segments_info (pure functions).

Shape legend: H, W = size of the id map (after any resize); S = number of segments in
``segments_info``; N = number of instance targets (non-crowd things present in the map).

Id spaces: ``pan_ids`` holds panoptic SEGMENT ids (``R + 256 G + 256^2 B`` of the PNG, 0 =
void/unlabeled); ``segments_info[i]["category_id"]`` is a CONTIGUOUS class index ``k`` in
``[0, K)`` (things first, see :mod:`jsis_d2.data.label_space`), so ``gt_classes`` are thing
indices in ``[0, T)`` directly.

Crowd regions (``iscrowd=1``, always things in COCO) are handled explicitly:

- they NEVER become instance targets (no box, no mask, no class);
- their semantic target is their category (``crowd_sem_seg="class"``, default: a crowd of
  people is people pixels) or ``ignore_label`` (``crowd_sem_seg="ignore"``: the semantic loss
  skips them). Config key ``INPUT.JSIS.CROWD_SEM_SEG``.
"""
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = [
    "CROWD_SEM_SEG_MODES",
    "PanopticTargets",
    "rgb_to_ids",
    "check_segments",
    "panoptic_targets",
    "targets_to_instances",
]

CROWD_SEM_SEG_MODES = ("class", "ignore")


class PanopticTargets(NamedTuple):
    """Targets of one image, numpy, at the size of the id map.

    Attributes:
        sem_seg: int64 [H, W], contiguous class index per pixel, ``ignore_label`` for void
            (and for crowd pixels when ``crowd_sem_seg="ignore"``).
        masks: bool [N, H, W], one per non-crowd thing segment with at least one pixel, in
            ``segments_info`` order.
        classes: int64 [N], contiguous (= thing) index of each mask.
        segment_ids: int64 [N], panoptic segment id of each mask.
    """

    sem_seg: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    segment_ids: np.ndarray


def rgb_to_ids(pan_rgb: np.ndarray) -> np.ndarray:
    """Decode a COCO panoptic PNG: uint8 [H, W, 3] RGB -> int64 [H, W] ids R + 256 G + 256^2 B."""
    if pan_rgb.ndim != 3 or pan_rgb.shape[2] < 3:
        raise ValueError(f"panoptic PNG must be RGB [H, W, 3], got shape {pan_rgb.shape}")
    c = pan_rgb[:, :, :3].astype(np.int64)
    return c[:, :, 0] + 256 * c[:, :, 1] + 65536 * c[:, :, 2]


def check_segments(pan_ids: np.ndarray, segments_info: Sequence[Dict]) -> Tuple[List[int], List[int]]:
    """Compare the ids present in a map with the ids of ``segments_info``.

    Returns:
        (ids in the map (> 0) that no segment describes, segment ids absent from the map), both
        sorted lists; two empty lists mean the PNG and the JSON agree.
    """
    present = np.unique(pan_ids)
    present = set(int(i) for i in present[present != 0])
    described = [int(s["id"]) for s in segments_info]
    return sorted(present - set(described)), sorted(set(described) - present)


def panoptic_targets(
    pan_ids: np.ndarray,
    segments_info: Sequence[Dict],
    *,
    crowd_sem_seg: str = "class",
    ignore_label: int = 255,
) -> PanopticTargets:
    """Semantic target over all K classes and instance targets from a panoptic id map.

    Args:
        pan_ids: int [H, W] panoptic segment ids (0 = void).
        segments_info: dicts with ``id``, ``category_id`` (contiguous), ``isthing`` and
            optionally ``iscrowd`` (default 0).
        crowd_sem_seg: "class" or "ignore" (see module docstring).
        ignore_label: value of void pixels in ``sem_seg``.

    Raises:
        ValueError: an id in ``pan_ids`` (other than 0) that no segment describes, or a bad
            ``crowd_sem_seg``.
    """
    if crowd_sem_seg not in CROWD_SEM_SEG_MODES:
        raise ValueError(
            f"INPUT.JSIS.CROWD_SEM_SEG must be one of {CROWD_SEM_SEG_MODES}, got {crowd_sem_seg!r}"
        )
    pan_ids = np.asarray(pan_ids, dtype=np.int64)
    h, w = pan_ids.shape
    seg_ids = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    seg_cls = np.array([int(s["category_id"]) for s in segments_info], dtype=np.int64)
    crowd = np.array([bool(s.get("iscrowd", 0)) for s in segments_info], dtype=bool)
    thing = np.array([bool(s["isthing"]) for s in segments_info], dtype=bool)

    # Compact index per pixel: 0 = void, i + 1 = segments_info[i] (searchsorted, vectorized).
    order = np.argsort(seg_ids, kind="stable")
    sorted_ids = seg_ids[order]
    pos = np.searchsorted(sorted_ids, pan_ids).clip(max=max(len(sorted_ids) - 1, 0))
    if len(sorted_ids):
        found = sorted_ids[pos] == pan_ids
        compact = np.where(found, order[pos] + 1, 0)
    else:
        found = np.zeros_like(pan_ids, dtype=bool)
        compact = np.zeros_like(pan_ids)
    unknown = (~found) & (pan_ids != 0)
    if unknown.any():
        raise ValueError(
            f"segment id(s) {sorted(set(pan_ids[unknown].tolist()))[:10]} in the panoptic map "
            "are not in segments_info"
        )

    sem_of_segment = seg_cls.copy()
    if crowd_sem_seg == "ignore":
        sem_of_segment[crowd] = ignore_label
    lut = np.concatenate([[ignore_label], sem_of_segment]).astype(np.int64)
    sem_seg = lut[compact]

    inst_idx = np.nonzero(thing & ~crowd)[0]
    if len(inst_idx):
        masks = compact[None] == (inst_idx + 1)[:, None, None]
        keep = masks.reshape(len(inst_idx), -1).any(axis=1)
        masks, inst_idx = masks[keep], inst_idx[keep]
    else:
        masks = np.zeros((0, h, w), dtype=bool)
    return PanopticTargets(sem_seg, masks, seg_cls[inst_idx], seg_ids[inst_idx])


def targets_to_instances(targets: PanopticTargets) -> Instances:
    """Detectron2 ``Instances`` of image_size (H, W): ``gt_masks`` BitMasks [N, H, W],
    ``gt_boxes`` Boxes [N, 4] XYXY tight around each mask (max exclusive, pixels of the map),
    ``gt_classes`` int64 [N] in [0, T)."""
    h, w = targets.sem_seg.shape
    inst = Instances((h, w))
    masks = BitMasks(torch.from_numpy(np.ascontiguousarray(targets.masks)))
    inst.gt_boxes = masks.get_bounding_boxes() if len(masks) else Boxes(torch.zeros((0, 4)))
    inst.gt_classes = torch.as_tensor(targets.classes, dtype=torch.int64)
    inst.gt_masks = masks
    return inst
