"""The accumulator interface of :class:`~jsis_d2.evaluation.JSISEvaluator`, its registry, and
the function that builds the accumulators a config lists.

An accumulator turns one key of the model's per-image output dict (``"panoptic_seg"``,
``"sem_seg"``, ``"instances"``, ``"proposals"``, ...) and that image's ground truth into result
sections. For each evaluation the evaluator builds a fresh set (its ``reset``), hands every
image to each accumulator whose ``key`` the output holds (``process``), gathers the ``state()``
of every process on the main one, and asks each accumulator for ``results(states)`` there.

Adding one: subclass :class:`Accumulator`, register a builder ``(ctx: EvalContext) ->
Accumulator`` in :data:`ACCUMULATOR_REGISTRY` (the builder's function name is the name), and
list that name in ``TEST.JSIS.ACCUMULATORS``. The built-in builders are in
:mod:`jsis_d2.evaluation.builtin_accumulators`.

Id spaces: the ground truth (:class:`~jsis_d2.evaluation.accumulators.ImageGroundTruth`) and the
model outputs carry CONTIGUOUS class indices in [0, K) (things first, ``k < T``).
"""

import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from jsis_d2.config import ConfigError
from jsis_d2.data.label_space import LabelSpace

from detectron2.utils.registry import Registry

__all__ = ["Accumulator", "EvalContext", "ACCUMULATOR_REGISTRY", "build_accumulators"]

ACCUMULATOR_REGISTRY = Registry("JSIS_ACCUMULATOR")
ACCUMULATOR_REGISTRY.__doc__ = """
Builders of :class:`Accumulator` s, called with an :class:`EvalContext`; the names listed in
``TEST.JSIS.ACCUMULATORS`` are looked up here.
"""


class Accumulator(abc.ABC):
    """Accumulates one output key over a dataset; small, picklable state per process.

    Subclasses set :attr:`key` and implement the three methods. A new evaluation builds new
    accumulators, so the state starts empty in ``__init__``.
    """

    #: The key of the model's per-image output dict this accumulator consumes.
    key: str = ""

    @abc.abstractmethod
    def process(self, gt, output) -> None:
        """Accumulate one image: ``gt`` its :class:`ImageGroundTruth`, ``output`` the model's
        ``output[self.key]`` for it."""

    @abc.abstractmethod
    def state(self) -> Any:
        """What was accumulated in this process, picklable and of a size independent of the
        number of images where possible (it is gathered with ``comm.gather``)."""

    @abc.abstractmethod
    def results(self, states: List[Any]) -> Dict[str, Dict]:
        """Result sections (e.g. ``{"sem_seg": {"mIoU": ...}}``) from the states of every
        process (a non-empty list)."""


@dataclass(frozen=True)
class EvalContext:
    """What a builder may use to make its accumulator for one dataset.

    Attributes:
        labels: the dataset's label space (K classes, T things).
        dataset_name: the registered name of the dataset.
        label_divisor: ``class * label_divisor + instance`` in Detectron2-style panoptic maps.
        output_dir: where predictions may be saved; None: nothing is written.
        rpn_recall_iou: a ground-truth box counts as recalled at IoU >= this.
        crowd_ignore: crowd pixels are ignored in semantic metrics (else: their class).
        gt_root: the dataset's panoptic PNG folder (metadata ``panoptic_root``); saved
            predictions are named by the ground-truth PNG's path below it. None: by image id.
    """

    labels: LabelSpace
    dataset_name: str = ""
    label_divisor: int = 1000
    output_dir: Optional[str] = None
    rpn_recall_iou: float = 0.5
    crowd_ignore: bool = False
    gt_root: Optional[str] = None


def build_accumulators(names: Sequence[str], ctx: EvalContext) -> List[Accumulator]:
    """The accumulators named (``TEST.JSIS.ACCUMULATORS``), in that order.

    Raises:
        ConfigError: a name is not registered, is listed twice, or its builder does not return
            an :class:`Accumulator`.
    """
    known = sorted(name for name, _ in ACCUMULATOR_REGISTRY)
    if len(set(names)) != len(names):
        raise ConfigError(f"TEST.JSIS.ACCUMULATORS lists a name twice: {list(names)}")
    out = []
    for name in names:
        if name not in known:
            raise ConfigError(
                f"TEST.JSIS.ACCUMULATORS: unknown accumulator {name!r}; registered: {known}"
            )
        acc = ACCUMULATOR_REGISTRY.get(name)(ctx)
        if not isinstance(acc, Accumulator):
            raise ConfigError(
                f"TEST.JSIS.ACCUMULATORS: builder {name!r} returned {type(acc).__name__}, not "
                "an Accumulator"
            )
        out.append(acc)
    return out
