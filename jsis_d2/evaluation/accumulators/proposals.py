"""RPN mean recall of ``proposals`` outputs (paper Table 4).

Per image: the fraction of ground-truth non-crowd thing boxes that some proposal overlaps with
IoU >= ``iou_threshold``; averaged over images. Images without such boxes have no defined recall
and are left out of the mean (counted as ``images_without_gt``).
"""

from typing import Dict, List

import numpy as np
import torch

from jsis_d2.evaluation.accumulators.ground_truth import ImageGroundTruth

from detectron2.structures import Boxes, pairwise_iou

__all__ = ["ProposalRecallAccumulator", "rpn_recall"]


class ProposalRecallAccumulator:
    """Sum of per-image recalls, number of images with and without ground-truth boxes.

    Args:
        num_things: T; thing classes are the contiguous indices [0, T).
        iou_threshold: a ground-truth box counts as recalled when a proposal has IoU >= this.
    """

    key = "proposals"

    def __init__(self, num_things: int, iou_threshold: float = 0.5):
        self._num_things = int(num_things)
        self._iou = float(iou_threshold)
        self._sums = np.zeros(3, dtype=np.float64)  # sum of recalls, images, images without GT

    def process(self, gt: ImageGroundTruth, proposals) -> None:
        """Accumulate one image; ``proposals``: ``Instances`` with ``proposal_boxes`` (XYXY,
        original image coordinates)."""
        boxes = []
        for sid, _, _ in gt.things(self._num_things, crowd=False):
            x, y, w, h = gt.box_xywh(sid)
            boxes.append([x, y, x + w, y + h])
        if not boxes:
            self._sums[2] += 1
            return
        recall = rpn_recall(torch.tensor(boxes), proposals.proposal_boxes.tensor.cpu(), self._iou)
        self._sums += [recall, 1, 0]

    def state(self) -> np.ndarray:
        """Picklable: float64 [3]: sum of recalls, images with GT boxes, images without."""
        return self._sums

    def results(self, states: List[np.ndarray]) -> Dict[str, Dict]:
        """{"rpn": {"mean_recall" (percent, NaN without images), "num_images",
        "images_without_gt", "iou_threshold"}} over all states."""
        total, n, empty = sum(states).tolist()
        return {
            "rpn": {
                "mean_recall": 100.0 * total / n if n else float("nan"),
                "num_images": int(n),
                "images_without_gt": int(empty),
                "iou_threshold": self._iou,
            }
        }


def rpn_recall(gt_boxes: torch.Tensor, proposal_boxes: torch.Tensor, iou_threshold: float) -> float:
    """Fraction of ground-truth boxes [G, 4] (XYXY) that some proposal [P, 4] (XYXY) overlaps
    with IoU >= ``iou_threshold``. G must be > 0; no proposals gives 0."""
    if len(proposal_boxes) == 0:
        return 0.0
    iou = pairwise_iou(Boxes(gt_boxes.float()), Boxes(proposal_boxes.float()))  # [G, P]
    return float((iou.max(dim=1).values >= iou_threshold).float().mean())
