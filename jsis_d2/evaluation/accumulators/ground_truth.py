"""One image's ground truth, read once and shared by every accumulator.

Id spaces: ``ids`` holds the panoptic segment ids of the ground-truth PNG (0 = void);
``segments`` and ``info`` carry CONTIGUOUS class indices in [0, K) (things first, ``k < T``),
as the dataset dicts do.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from jsis_d2.evaluation.pq import (
    PanopticEvalError,
    SegmentTable,
    read_segment_ids,
    segment_table,
)

__all__ = ["ImageGroundTruth", "read_ground_truth"]


@dataclass(frozen=True, eq=False)
class ImageGroundTruth:
    """The ground truth of one image.

    Attributes:
        image_id: the dataset dict's ``image_id``.
        file_name: path of the ground-truth panoptic PNG.
        where: "image <id> (<file_name>)", the prefix of error messages.
        ids: uint32 [H, W] panoptic segment ids (0 = void).
        segments: :func:`segment_table` of ``segments_info`` (rows sorted by segment id,
            ``cats`` = contiguous class indices, ``index`` = :class:`IdIndex` with void row 0).
        info: the dataset dict's ``segments_info`` items by segment id (contiguous
            ``category_id``, ``iscrowd``, optional ``bbox`` XYWH and ``area``).
    """

    image_id: object
    file_name: str
    where: str
    ids: np.ndarray
    segments: SegmentTable
    info: Dict[int, Dict]

    @property
    def shape(self) -> Tuple[int, int]:
        """(H, W) of the ground truth."""
        return tuple(self.ids.shape)

    def check_shape(self, shape, what: str) -> None:
        """Raise PanopticEvalError unless ``shape`` (trailing dims H, W) is :attr:`shape`."""
        if tuple(shape) != self.shape:
            h, w = self.shape
            raise PanopticEvalError(
                f"{self.where}: {what} is {shape[-1]}x{shape[-2]} (WxH) but the ground truth is "
                f"{w}x{h}"
            )

    def things(self, num_things: int, crowd: bool = True) -> List[Tuple[int, int, bool]]:
        """(segment id, contiguous class in [0, num_things), iscrowd) of the thing segments,
        by ascending id; ``crowd=False`` leaves the crowd segments out."""
        s = self.segments
        return [
            (sid, k, c)
            for sid, k, c in zip(s.ids.tolist(), s.cats.tolist(), s.iscrowd.tolist())
            if k < num_things and (crowd or not c)
        ]

    def box_xywh(self, segment_id: int) -> List[float]:
        """Box [x, y, w, h] of a segment: its ``bbox`` in segments_info, else the tight box
        of its pixels in the PNG (``w = x_max - x_min + 1``)."""
        box = self.info[segment_id].get("bbox")
        if box is None:
            ys, xs = np.nonzero(self.ids == segment_id)
            if len(xs) == 0:
                raise PanopticEvalError(
                    f"{self.where} (ground truth): segment {segment_id} is in segments_info but "
                    "has no pixel in the PNG (and no 'bbox')"
                )
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        return [float(v) for v in box]


def read_ground_truth(inp: Dict, num_classes: int) -> ImageGroundTruth:
    """Read the ground truth of one dataset dict.

    Args:
        inp: dataset dict with "image_id", "pan_seg_file_name", "segments_info" (contiguous
            "category_id" in [0, num_classes)) and optional "height", "width".
    Raises:
        PanopticEvalError (naming the image and file) when the PNG cannot be read, its size
        differs from the dict's height/width, or segments_info is malformed.
    """
    gt_file = inp["pan_seg_file_name"]
    image_id = inp["image_id"]
    where = f"image {image_id!r} ({gt_file})"
    ids = read_segment_ids(gt_file, f"image {image_id!r}")
    h, w = int(inp.get("height", ids.shape[0])), int(inp.get("width", ids.shape[1]))
    if ids.shape != (h, w):
        raise PanopticEvalError(
            f"{where}: ground-truth PNG is {ids.shape[1]}x{ids.shape[0]} (WxH) but the "
            f"dataset dict says {w}x{h}"
        )
    cat_index = {k: k for k in range(num_classes)}
    segments_info = inp["segments_info"]
    table = segment_table(segments_info, cat_index, where, use_area=True)
    info = {int(s["id"]): s for s in segments_info}
    return ImageGroundTruth(image_id, gt_file, where, ids, table, info)
