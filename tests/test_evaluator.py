"""JSISEvaluator end to end on a tiny dataset written in tmp_path (fake model outputs)."""

import json
import os
import pickle
import uuid

import numpy as np
import pytest
import torch

from jsis_d2.data.label_space import LabelSpace
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation import JSISEvaluator, accumulators, pq_compute, rpn_recall
from jsis_d2.evaluation.accumulators import (
    CocoInstancesAccumulator,
    PanopticAccumulator,
    ProposalRecallAccumulator,
    SemSegAccumulator,
    read_ground_truth,
)
from jsis_d2.evaluation.pq import PanopticEvalError, UnknownSegmentError

from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

CATS = [  # contiguous: person 0, car 1 (things), sky 2, road 3 (stuff)
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 9, "name": "road", "isthing": 0},
]
LS = LabelSpace(CATS)


def _image(h, w, seed):
    """GT ids [H, W] and segments_info (contiguous): sky/road halves, 2 people, 1 car, void."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((h, w), dtype=np.int64)
    ids[: h // 2] = 100  # sky
    ids[h // 2 :] = 200  # road
    y, x = rng.integers(1, h // 2), rng.integers(1, w // 3)
    ids[y : y + h // 3, x : x + w // 4] = 301  # person
    ids[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + w // 5] = 302  # person
    ids[h - h // 5 :, w - w // 3 :] = 401  # car
    ids[0, :] = 0  # void
    ids[1, : w // 4] = 501  # crowd person strip
    cats = {100: 2, 200: 3, 301: 0, 302: 0, 401: 1, 501: 0}
    segs = []
    for sid, k in cats.items():
        ys, xs = np.nonzero(ids == sid)
        segs.append(
            {
                "id": sid,
                "category_id": k,
                "iscrowd": int(sid == 501),
                "isthing": k < 2,
                "area": int(len(ys)),
                "bbox": [
                    int(xs.min()),
                    int(ys.min()),
                    int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1),
                ],
            }
        )
    return ids, segs


@pytest.fixture
def dataset(tmp_path):
    """Three images of different sizes; GT PNGs + a GT JSON in dataset ids; metadata."""
    name = f"jsis_test_eval_{uuid.uuid4().hex[:8]}"
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    MetadataCatalog.get(name).set(
        **LS.metadata(),
        label_divisor=1000,
        ignore_label=255,
        evaluator_type="jsis_panoptic",
        panoptic_root=str(gt_dir),
    )
    dicts, anns = [], []
    for i, (h, w) in enumerate([(24, 32), (30, 20), (16, 16)]):
        ids, segs = _image(h, w, i)
        fname = f"{i:03d}.png"
        write_panoptic_png(str(gt_dir / fname), ids)
        dicts.append(
            {
                "file_name": f"{i:03d}.jpg",
                "image_id": i,
                "height": h,
                "width": w,
                "pan_seg_file_name": str(gt_dir / fname),
                "segments_info": segs,
            }
        )
        anns.append(
            {
                "image_id": i,
                "file_name": fname,
                "segments_info": [
                    dict(
                        s, category_id=LS.to_dataset_id(s["category_id"]), isthing=int(s["isthing"])
                    )
                    for s in segs
                ],
            }
        )
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({"annotations": anns, "categories": CATS}))
    yield (
        name,
        dicts,
        str(gt_json),
        {i: _image(*hw, i)[0] for i, hw in enumerate([(24, 32), (30, 20), (16, 16)])},
    )
    MetadataCatalog.remove(name)


def _outputs_from_gt(d, ids, branches=("panoptic_seg", "sem_seg", "instances", "proposals")):
    """Perfect model outputs built from the ground truth."""
    h, w = ids.shape
    segs = d["segments_info"]
    out = {}
    if "panoptic_seg" in branches:
        pinfo = [
            {
                "id": s["id"],
                "category_id": s["category_id"],
                "isthing": s["isthing"],
                "area": s["area"],
            }
            for s in segs
        ]
        out["panoptic_seg"] = (torch.from_numpy(ids.astype(np.int32)), pinfo)
    if "sem_seg" in branches:
        sem = np.zeros((LS.num_classes, h, w), dtype=np.float32)
        for s in segs:
            sem[s["category_id"]][ids == s["id"]] = 1.0
        out["sem_seg"] = torch.from_numpy(sem)
    things = [s for s in segs if s["isthing"] and not s["iscrowd"]]
    xyxy = torch.tensor(
        [[x, y, x + bw, y + bh] for x, y, bw, bh in (s["bbox"] for s in things)],
        dtype=torch.float32,
    )
    if "instances" in branches:
        inst = Instances((h, w))
        inst.pred_masks = torch.from_numpy(np.stack([ids == s["id"] for s in things]))
        inst.pred_boxes = Boxes(xyxy)
        inst.scores = torch.full((len(things),), 0.9)
        inst.pred_classes = torch.tensor([s["category_id"] for s in things])
        out["instances"] = inst
    if "proposals" in branches:
        props = Instances((h, w))
        props.proposal_boxes = Boxes(torch.cat([xyxy + 0.1, torch.tensor([[0.0, 0, 3, 3]])]))
        props.objectness_logits = torch.zeros(len(props.proposal_boxes))
        out["proposals"] = props
    return out


def test_perfect_outputs_give_100_everywhere_and_saved_files(dataset, tmp_path):
    name, dicts, gt_json, gt_ids = dataset
    out_dir = str(tmp_path / "eval")
    ev = JSISEvaluator(name, output_dir=out_dir)
    ev.reset()
    for d in dicts:
        ev.process([d], [_outputs_from_gt(d, gt_ids[d["image_id"]])])
    r = ev.evaluate()
    pan = r["panoptic_seg"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert pan[key] == 100.0, key
    assert pan["N"] == 4 and pan["PQ-car"] == 100.0
    assert r["sem_seg"]["mIoU"] == 100.0 and r["sem_seg"]["IoU-road"] == 100.0
    assert r["segm"]["AP50"] == pytest.approx(100.0) and r["bbox"]["AP50"] == pytest.approx(100.0)
    assert r["rpn"]["mean_recall"] == 100.0 and r["rpn"]["num_images"] == 3
    # saved predictions: dataset ids, re-evaluable with pq_compute (default folder naming)
    pred_json = os.path.join(out_dir, "panoptic_predictions.json")
    saved = json.load(open(pred_json))
    assert sorted(a["image_id"] for a in saved["annotations"]) == [0, 1, 2]
    cats = {s["category_id"] for a in saved["annotations"] for s in a["segments_info"]}
    assert cats == {1, 3, 7, 9}
    assert os.path.isfile(os.path.join(out_dir, "panoptic_predictions", "001.png"))
    again = pq_compute(gt_json, pred_json)
    assert again["All"]["pq"] == 1.0 and again["All"]["n"] == 4


def test_perturbed_panoptic_matches_pq_compute_on_saved_files(dataset, tmp_path):
    name, dicts, gt_json, gt_ids = dataset
    out_dir = str(tmp_path / "eval")
    ev = JSISEvaluator(name, output_dir=out_dir, distributed=True)  # world size 1
    ev.reset()
    for d in dicts:
        ids = gt_ids[d["image_id"]].copy()
        ids[:, : ids.shape[1] // 3] = np.where(
            ids[:, : ids.shape[1] // 3] == 100, 200, ids[:, : ids.shape[1] // 3]
        )  # sky -> road
        ids[ids == 302] = 0  # a missed person
        present = set(np.unique(ids).tolist())
        pinfo = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in d["segments_info"]
            if s["id"] in present
        ]
        ev.process([d], [{"panoptic_seg": (torch.from_numpy(ids), pinfo)}])
    r = ev.evaluate()
    assert set(r) == {"panoptic_seg"}  # other branches absent: not reported
    ref = pq_compute(gt_json, os.path.join(out_dir, "panoptic_predictions.json"))
    assert 0 < r["panoptic_seg"]["PQ"] < 100
    for key, group in (("PQ", "All"), ("PQ_th", "Things"), ("PQ_st", "Stuff")):
        assert r["panoptic_seg"][key] == pytest.approx(100 * ref[group]["pq"], abs=1e-9)
    assert r["panoptic_seg"]["PQ-person"] == pytest.approx(100 * ref["per_class"][1]["pq"])


def test_miou_against_hand_computed_confusion(dataset):
    name, dicts, _, gt_ids = dataset
    d = dicts[2]
    ids = gt_ids[2]
    gt_cls = np.full(ids.shape, -1)
    for s in d["segments_info"]:
        gt_cls[ids == s["id"]] = s["category_id"]  # crowd counts with its class ("class")
    pred_cls = gt_cls.copy()
    pred_cls[gt_cls == -1] = 1  # void pixels: ignored whatever is predicted
    pred_cls[:, :5] = 3  # left columns predicted road
    sem = torch.nn.functional.one_hot(torch.from_numpy(pred_cls), 4).permute(2, 0, 1).float()
    ev = JSISEvaluator(name, distributed=False)
    ev.process([d], [{"sem_seg": sem}])
    r = ev.evaluate()["sem_seg"]
    valid = gt_cls >= 0
    ious = []
    for k in range(4):
        inter = ((gt_cls == k) & (pred_cls == k) & valid).sum()
        union = (((gt_cls == k) | (pred_cls == k)) & valid).sum()
        if union:
            ious.append(inter / union)
            assert r[f"IoU-{LS.names[k]}"] == pytest.approx(100 * inter / union)
    assert r["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert r["pACC"] == pytest.approx(100 * ((gt_cls == pred_cls) & valid).sum() / valid.sum())
    assert r["mIoU"] < 100


def test_rpn_recall_hand_computed(dataset):
    name, dicts, _, gt_ids = dataset
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    # IoU(box0, [0,0,10,12]) = 100/120 >= .5; IoU(box1, [20,20,30,40]) = 100/200 = .5 (>=)
    assert rpn_recall(gt, torch.tensor([[0.0, 0, 10, 12], [20, 20, 30, 40]]), 0.5) == 1.0
    assert rpn_recall(gt, torch.tensor([[0.0, 0, 10, 12], [20, 20, 30, 41]]), 0.5) == 0.5
    assert rpn_recall(gt, torch.zeros((0, 4)), 0.5) == 0.0

    ev = JSISEvaluator(name, distributed=False, rpn_recall_iou=0.5)
    # image 0: GT boxes of its 3 non-crowd things; proposals recall exactly 2 of them
    d0 = dicts[0]
    things = [s for s in d0["segments_info"] if s["isthing"] and not s["iscrowd"]]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (s["bbox"] for s in things)]
    props = Instances((24, 32))
    props.proposal_boxes = Boxes(torch.tensor(boxes[:2] + [[0.0, 0, 1, 1]]))
    ev.process([d0], [{"proposals": props}])
    # image without thing boxes: left out of the mean
    d_empty = dict(
        dicts[2],
        segments_info=[s for s in dicts[2]["segments_info"] if not s["isthing"] or s["iscrowd"]],
    )
    ids = gt_ids[2].copy()
    ids[np.isin(ids, [301, 302, 401])] = 0
    write_panoptic_png(d_empty["pan_seg_file_name"], ids)
    props2 = Instances((16, 16))
    props2.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 4, 4]]))
    ev.process([d_empty], [{"proposals": props2}])
    r = ev.evaluate()
    assert set(r) == {"rpn"}
    assert r["rpn"]["mean_recall"] == pytest.approx(100 * 2 / 3)
    assert r["rpn"]["num_images"] == 1 and r["rpn"]["images_without_gt"] == 1


def test_instances_ap50_half_detected(dataset):
    name, dicts, _, gt_ids = dataset
    ev = JSISEvaluator(name, distributed=False)
    for d in dicts:
        out = _outputs_from_gt(d, gt_ids[d["image_id"]], branches=("instances",))
        inst = out["instances"]
        keep = inst.pred_classes == 1  # only cars detected; people missed
        out["instances"] = inst[keep]
        ev.process([d], [out])
    r = ev.evaluate()
    assert set(r) == {"segm", "bbox"}
    # car AP 100, person AP 0 (no detections): mean over the 2 thing classes
    assert r["segm"]["AP50"] == pytest.approx(50.0)


def test_d2_style_panoptic_without_segments_info(dataset):
    name, dicts, _, gt_ids = dataset
    ev = JSISEvaluator(name, distributed=False)
    d = dicts[1]
    ids = gt_ids[1]
    pan = np.full(ids.shape, -1, dtype=np.int64)
    for n, s in enumerate(d["segments_info"]):
        pan[ids == s["id"]] = s["category_id"] * 1000 + n
    ev.process([d], [{"panoptic_seg": (torch.from_numpy(pan), None)}])
    assert ev.evaluate()["panoptic_seg"]["PQ"] == 100.0


def test_bad_inputs_name_the_image(dataset):
    name, dicts, _, gt_ids = dataset
    ev = JSISEvaluator(name, distributed=False)
    d = dicts[0]
    out = _outputs_from_gt(d, gt_ids[0], branches=("panoptic_seg",))
    pan, pinfo = out["panoptic_seg"]
    with pytest.raises(PanopticEvalError, match=r"image 0 .*000\.png.*panoptic_seg is 31x24"):
        ev.process([d], [{"panoptic_seg": (pan[:, :31], pinfo)}])
    with pytest.raises(UnknownSegmentError, match=r"image 0.*\[301\].*not in segments_info"):
        ev.process([d], [{"panoptic_seg": (pan, [p for p in pinfo if p["id"] != 301])}])
    bad = dict(d, segments_info=d["segments_info"][1:])  # GT PNG holds id 100, JSON doesn't
    with pytest.raises(UnknownSegmentError, match=r"ground truth.*\[100\]"):
        ev.process([bad], [{"panoptic_seg": (pan, pinfo)}])
    with pytest.raises(PanopticEvalError, match="dataset dict says 40x24"):
        ev.process([dict(d, width=40)], [out])


def test_ground_truth_area_disagreeing_with_the_png_is_not_inf(dataset, caplog):
    """area 0 in the dataset dict: PQ from the PNG's pixel counts (was inf), and a warning."""
    name, dicts, _, gt_ids = dataset
    ev = JSISEvaluator(name, distributed=False)
    d = dicts[2]
    out = _outputs_from_gt(d, gt_ids[2], branches=("panoptic_seg",))
    bad = dict(
        d, segments_info=[dict(s, area=0) if s["id"] == 401 else s for s in d["segments_info"]]
    )
    ev.process([bad], [out])
    with caplog.at_level("WARNING", logger="jsis_d2.evaluation.pq"):
        res = ev.evaluate()["panoptic_seg"]
    assert res["PQ"] == 100.0 and res["PQ-car"] == 100.0
    png_area = int((gt_ids[2] == 401).sum())
    assert f"002.png), segment 401: area 0 in the JSON, {png_area} pixels in the PNG" in caplog.text


# The accumulators behind JSISEvaluator: ground truth read once, boxes, merging states.


def test_ground_truth_png_read_once_per_image(dataset, monkeypatch):
    name, dicts, _, gt_ids = dataset
    reads = []
    real = accumulators.read_segment_ids
    monkeypatch.setattr(
        accumulators,
        "read_segment_ids",
        lambda path, where="": reads.append(path) or real(path, where),
    )
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
        no_box = dict(
            d,
            segments_info=[{k: v for k, v in s.items() if k != "bbox"} for s in d["segments_info"]],
        )
        gt = read_ground_truth(no_box, LS.num_classes)
        for s in d["segments_info"]:
            assert gt.box_xywh(s["id"]) == s["bbox"]  # the tight box of the PNG's pixels
        ev.process(
            [no_box],
            [_outputs_from_gt(d, gt_ids[d["image_id"]], branches=("instances", "proposals"))],
        )
    r = ev.evaluate()
    assert r["bbox"]["AP50"] == pytest.approx(100.0) and r["rpn"]["mean_recall"] == 100.0
    d = dicts[0]
    absent = dict(d, segments_info=d["segments_info"] + [{"id": 999, "category_id": 0}])
    with pytest.raises(PanopticEvalError, match=r"image 0 .*segment 999 .*no pixel"):
        read_ground_truth(absent, LS.num_classes).box_xywh(999)


def test_pickled_states_of_two_shards_give_the_results_of_one(dataset):
    """What comm.gather does: states pickled per shard, results(states) on the main process."""
    name, dicts, _, gt_ids = dataset

    def accumulate(images):
        accs = [
            PanopticAccumulator(LS),
            SemSegAccumulator(LS.names),
            CocoInstancesAccumulator(LS.names[: LS.num_things]),
            ProposalRecallAccumulator(LS.num_things, 0.5),
        ]
        for d in images:
            gt = read_ground_truth(d, LS.num_classes)
            out = _outputs_from_gt(d, gt_ids[d["image_id"]])
            if d["image_id"] == 1:  # not perfect, so the sums matter
                pan, pinfo = out["panoptic_seg"]
                out["panoptic_seg"] = (
                    pan.masked_fill(pan == 302, 0),
                    [p for p in pinfo if p["id"] != 302],
                )
                out["sem_seg"] = out["sem_seg"].flip(2)
                out["instances"] = out["instances"][:1]
                out["proposals"] = out["proposals"][1:]
            for acc in accs:
                acc.process(gt, out[acc.key])
        return accs

    whole = accumulate(dicts)
    shards = [accumulate(dicts[:1]), accumulate(dicts[1:])]
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
