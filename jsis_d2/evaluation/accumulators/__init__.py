"""Per-output accumulators of :class:`jsis_d2.evaluation.JSISEvaluator`.

Each consumes one key of the model's output dict (its class attribute ``key``) and offers:

- ``process(gt, output)``: accumulate one image, given its :class:`ImageGroundTruth` (read once
  per image by the evaluator) and ``output[key]``;
- ``state()``: what it accumulated, picklable (gathered across processes with ``comm.gather``);
- ``results(states)``: its result sections (``{"panoptic_seg": {...}}`` etc.) from the states
  of every process (a non-empty list).

Id spaces: ground truth and outputs carry CONTIGUOUS class indices in [0, K) (things first,
``k < T``); panoptic maps carry segment ids (0 = void).
"""

from jsis_d2.evaluation.accumulators.ground_truth import ImageGroundTruth, read_ground_truth
from jsis_d2.evaluation.accumulators.instances import CocoInstancesAccumulator, coco_ap
from jsis_d2.evaluation.accumulators.panoptic import PANOPTIC_DIRNAME, PanopticAccumulator
from jsis_d2.evaluation.accumulators.proposals import ProposalRecallAccumulator, rpn_recall
from jsis_d2.evaluation.accumulators.semantic import SemSegAccumulator, sem_seg_metrics

__all__ = [
    "ImageGroundTruth",
    "read_ground_truth",
    "PanopticAccumulator",
    "PANOPTIC_DIRNAME",
    "SemSegAccumulator",
    "sem_seg_metrics",
    "CocoInstancesAccumulator",
    "coco_ap",
    "ProposalRecallAccumulator",
    "rpn_recall",
]
