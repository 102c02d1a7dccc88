"""The accumulators behind JSISEvaluator: ground truth read once, boxes, merging states."""
import pickle

import numpy as np
import pytest

from jsis_d2.evaluation import JSISEvaluator
from jsis_d2.evaluation.accumulators import (
    CocoInstancesAccumulator,
    PanopticAccumulator,
    ProposalRecallAccumulator,
    SemSegAccumulator,
    ground_truth,
    read_ground_truth,
)
from jsis_d2.evaluation.pq import PanopticEvalError

from test_evaluator import LS, _outputs_from_gt, dataset  # noqa: F401  (fixture)


def test_ground_truth_png_read_once_per_image(dataset, monkeypatch):
    name, dicts, _, gt_ids = dataset
    reads = []
    real = ground_truth.read_segment_ids
    monkeypatch.setattr(ground_truth, "read_segment_ids",
                        lambda path, where="": reads.append(path) or real(path, where))
    ev = JSISEvaluator(name, distributed=False)
    for d in dicts:
        ev.process([d], [_outputs_from_gt(d, gt_ids[d["image_id"]])])
    r = ev.evaluate()
    assert set(r) == {"panoptic_seg", "sem_seg", "segm", "bbox", "rpn"}
    assert reads == [d["pan_seg_file_name"] for d in dicts]


def test_boxes_from_the_png_when_segments_info_has_none(dataset):
    name, dicts, _, gt_ids = dataset
    ev = JSISEvaluator(name, distributed=False)
    for d in dicts:
        gt = read_ground_truth(d, LS.num_classes)
        for s in d["segments_info"]:
            assert gt.box_xywh(s["id"]) == s["bbox"]  # given
        no_box = dict(d, segments_info=[{k: v for k, v in s.items() if k != "bbox"}
                                        for s in d["segments_info"]])
        gt = read_ground_truth(no_box, LS.num_classes)
        for s in d["segments_info"]:
            assert gt.box_xywh(s["id"]) == s["bbox"]  # the tight box of the PNG's pixels
        ev.process([no_box], [_outputs_from_gt(d, gt_ids[d["image_id"]],
                                               branches=("instances", "proposals"))])
    r = ev.evaluate()
    assert r["bbox"]["AP50"] == pytest.approx(100.0) and r["rpn"]["mean_recall"] == 100.0
    d = dicts[0]
    absent = dict(d, segments_info=d["segments_info"] + [{"id": 999, "category_id": 0}])
    with pytest.raises(PanopticEvalError, match=r"image 0 .*segment 999 .*no pixel"):
        read_ground_truth(absent, LS.num_classes).box_xywh(999)


def test_pickled_states_of_two_shards_give_the_results_of_one(dataset):
    """What comm.gather does: states pickled per shard, results(states) on the main process."""
    name, dicts, _, gt_ids = dataset

    def accumulators(images):
        accs = [PanopticAccumulator(LS), SemSegAccumulator(LS.names),
                CocoInstancesAccumulator(LS.names[: LS.num_things]),
                ProposalRecallAccumulator(LS.num_things, 0.5)]
        for d in images:
            gt = read_ground_truth(d, LS.num_classes)
            out = _outputs_from_gt(d, gt_ids[d["image_id"]])
            if d["image_id"] == 1:  # not perfect, so the sums matter
                pan, pinfo = out["panoptic_seg"]
                out["panoptic_seg"] = (pan.masked_fill(pan == 302, 0),
                                       [p for p in pinfo if p["id"] != 302])
                out["sem_seg"] = out["sem_seg"].flip(2)
                out["instances"] = out["instances"][:1]
                out["proposals"] = out["proposals"][1:]
            for acc in accs:
                acc.process(gt, out[acc.key])
        return accs

    whole = accumulators(dicts)
    shards = [accumulators(dicts[:1]), accumulators(dicts[1:])]
    for i, acc in enumerate(whole):
        states = [pickle.loads(pickle.dumps(s[i].state())) for s in shards]
        merged, single = acc.results(states), acc.results([acc.state()])
        assert merged.keys() == single.keys() and merged, acc.key
        for section in single:
            for key, value in single[section].items():
                if isinstance(value, float) and np.isnan(value):
                    assert np.isnan(merged[section][key]), (section, key)
                else:
                    assert merged[section][key] == pytest.approx(value, abs=1e-9), (section, key)
    assert JSISEvaluator(name, distributed=False).evaluate() == {}  # nothing processed
