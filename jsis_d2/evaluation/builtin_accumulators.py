"""The built-in accumulators in :data:`ACCUMULATOR_REGISTRY`, one builder per output key.

Each builder's name is the model output key its accumulator consumes; ``TEST.JSIS.ACCUMULATORS``
lists all four by default (:data:`DEFAULT_ACCUMULATORS`).
"""

from jsis_d2.evaluation.accumulator_base import ACCUMULATOR_REGISTRY, EvalContext
from jsis_d2.evaluation.accumulators import (
    CocoInstancesAccumulator,
    PanopticAccumulator,
    ProposalRecallAccumulator,
    SemSegAccumulator,
)

__all__ = ["DEFAULT_ACCUMULATORS"]

DEFAULT_ACCUMULATORS = ("panoptic_seg", "sem_seg", "instances", "proposals")


@ACCUMULATOR_REGISTRY.register()
def panoptic_seg(ctx: EvalContext) -> PanopticAccumulator:
    """PQ / SQ / RQ; saves the predictions under ``ctx.output_dir`` when it is set."""
    return PanopticAccumulator(ctx.labels, ctx.label_divisor, ctx.output_dir, ctx.gt_root)


@ACCUMULATOR_REGISTRY.register()
def sem_seg(ctx: EvalContext) -> SemSegAccumulator:
    """mIoU and the other semantic metrics over all K classes."""
    return SemSegAccumulator(ctx.labels.names, ctx.crowd_ignore)


@ACCUMULATOR_REGISTRY.register()
def instances(ctx: EvalContext) -> CocoInstancesAccumulator:
    """COCO AP of masks and boxes (pycocotools) over the T thing classes."""
    return CocoInstancesAccumulator(ctx.labels.names[: ctx.labels.num_things], ctx.dataset_name)


@ACCUMULATOR_REGISTRY.register()
def proposals(ctx: EvalContext) -> ProposalRecallAccumulator:
    """RPN mean recall of the ground-truth thing boxes (paper Table 4)."""
    return ProposalRecallAccumulator(ctx.labels.num_things, ctx.rpn_recall_iou)
