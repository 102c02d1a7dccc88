"""The evaluator's accumulators come from a registry, by the names a config lists."""

import numpy as np
import pytest
from test_evaluator import _outputs_from_gt, dataset  # noqa: F401  (dataset is a fixture)

from jsis_d2.config import ConfigError, get_jsis_cfg
from jsis_d2.evaluation import JSISEvaluator
from jsis_d2.evaluation.accumulator_base import (
    ACCUMULATOR_REGISTRY,
    Accumulator,
    EvalContext,
    build_accumulators,
)
from jsis_d2.evaluation.accumulators import (
    CocoInstancesAccumulator,
    PanopticAccumulator,
    ProposalRecallAccumulator,
    SemSegAccumulator,
)
from jsis_d2.evaluation.builtin_accumulators import DEFAULT_ACCUMULATORS


class ThingPixelShare(Accumulator):
    """A second metric on ``panoptic_seg``: the share of labelled pixels that are things."""

    key = "panoptic_seg"

    def __init__(self):
        self._things = self._all = 0

    def process(self, gt, output):
        ids, info = output
        ids = ids.numpy()
        thing_ids = [s["id"] for s in info if s["isthing"]]
        self._things += int(np.isin(ids, thing_ids).sum())
        self._all += int((ids > 0).sum())

    def state(self):
        return (self._things, self._all)

    def results(self, states):
        things, total = map(sum, zip(*states))
        return {"thing_share": {"percent": 100.0 * things / total}}


@ACCUMULATOR_REGISTRY.register()
def thing_share_for_tests(ctx):
    return ThingPixelShare()


@ACCUMULATOR_REGISTRY.register()
def not_an_accumulator_for_tests(ctx):
    return object()


def test_the_config_lists_the_built_in_accumulators_in_order(dataset):  # noqa: F811
    cfg = get_jsis_cfg()
    assert tuple(cfg.TEST.JSIS.ACCUMULATORS) == DEFAULT_ACCUMULATORS
    ev = JSISEvaluator.from_config(cfg, dataset[0])
    types = [type(a) for a in ev._accumulators]
    assert types == [
        PanopticAccumulator,
        SemSegAccumulator,
        CocoInstancesAccumulator,
        ProposalRecallAccumulator,
    ]
    assert [a.key for a in ev._accumulators] == list(DEFAULT_ACCUMULATORS)


def test_a_registered_accumulator_listed_in_the_config_reports(dataset):  # noqa: F811
    name, dicts, _, gt_ids = dataset
    cfg = get_jsis_cfg()
    cfg.TEST.JSIS.ACCUMULATORS = ["sem_seg", "thing_share_for_tests", "panoptic_seg"]
    ev = JSISEvaluator.from_config(cfg, name)
    for d in dicts:
        ev.process([d], [_outputs_from_gt(d, gt_ids[d["image_id"]])])
    r = ev.evaluate()
    # the two accumulators of one key both report; accumulators not listed do not
    assert set(r) == {"sem_seg", "thing_share", "panoptic_seg"}
    things = sum(
        int(
            np.isin(
                gt_ids[d["image_id"]], [s["id"] for s in d["segments_info"] if s["isthing"]]
            ).sum()
        )
        for d in dicts
    )
    labelled = sum(int((gt_ids[d["image_id"]] > 0).sum()) for d in dicts)
    assert r["thing_share"]["percent"] == pytest.approx(100.0 * things / labelled)
    assert r["panoptic_seg"]["PQ"] == 100.0 and r["sem_seg"]["mIoU"] == 100.0


@pytest.mark.parametrize(
    "names, message",
    [
        (["panoptic_seg", "nope"], r"TEST.JSIS.ACCUMULATORS: unknown accumulator 'nope'.*sem_seg"),
        (["sem_seg", "sem_seg"], r"lists a name twice"),
        (["not_an_accumulator_for_tests"], r"returned object, not an Accumulator"),
    ],
)
def test_bad_accumulator_lists_are_one_line_config_errors(dataset, names, message):  # noqa: F811
    from test_evaluator import CATS

    from jsis_d2.data.label_space import LabelSpace

    with pytest.raises(ConfigError, match=message):
        build_accumulators(names, EvalContext(LabelSpace(CATS)))
    with pytest.raises(ConfigError, match=message):
        JSISEvaluator(dataset[0], accumulators=names)


def test_an_accumulator_without_its_methods_cannot_be_built():
    class Incomplete(Accumulator):
        key = "sem_seg"

        def process(self, gt, output):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
