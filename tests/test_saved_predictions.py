"""Saved panoptic predictions (PanopticAccumulator): one file per image even when two ground-
truth PNGs share a basename in different folders; the JSON names each image's own file."""

import json
import os

import numpy as np

from jsis_d2.data import LabelSpace
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation.accumulators import PanopticAccumulator, read_ground_truth
from jsis_d2.evaluation.pq import pq_compute

CATS = [{"id": 1, "name": "car", "isthing": 1}, {"id": 5, "name": "road", "isthing": 0}]


def _gt(tmp_path, folder, image_id, car_rows):
    ids = np.full((6, 8), 2, dtype=np.int64)  # road
    ids[car_rows] = 1  # car
    path = tmp_path / "gt" / folder / "img0.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_panoptic_png(str(path), ids)
    segs = [
        {"id": 1, "category_id": 0, "isthing": True, "iscrowd": 0},
        {"id": 2, "category_id": 1, "isthing": False, "iscrowd": 0},
    ]
    return {"image_id": image_id, "pan_seg_file_name": str(path), "segments_info": segs}, ids


def test_same_basename_in_two_folders_gives_two_predictions(tmp_path):
    labels = LabelSpace(CATS)
    out = tmp_path / "eval"
    acc = PanopticAccumulator(labels, output_dir=str(out), gt_root=str(tmp_path / "gt"))
    dicts = [_gt(tmp_path, "a", 1, slice(0, 2)), _gt(tmp_path, "b", 2, slice(3, 6))]
    for d, ids in dicts:
        acc.process(read_ground_truth(d, 2), (ids, d["segments_info"]))
    acc.results([acc.state()])
    pred = json.loads((out / "panoptic_predictions.json").read_text())
    names = {a["image_id"]: a["file_name"] for a in pred["annotations"]}
    assert names == {1: "a/img0.png", 2: "b/img0.png"}
    for name in names.values():
        assert os.path.isfile(out / "panoptic_predictions" / name)
    # re-evaluable: the GT in the same layout gives PQ 1 (each prediction is its own image's)
    gt = {
        "annotations": [
            {
                "image_id": a["image_id"],
                "file_name": a["file_name"],
                "segments_info": [
                    {"id": 1, "category_id": 1, "iscrowd": 0},
                    {"id": 2, "category_id": 5, "iscrowd": 0},
                ],
            }
            for a in pred["annotations"]
        ],
        "categories": CATS,
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = pq_compute(
        str(tmp_path / "gt.json"),
        str(out / "panoptic_predictions.json"),
        str(tmp_path / "gt"),
        str(out / "panoptic_predictions"),
    )
    assert res["All"]["pq"] == 1.0 and res["All"]["n"] == 2


def test_without_gt_root_predictions_are_named_by_image_id(tmp_path):
    labels = LabelSpace(CATS)
    acc = PanopticAccumulator(labels, output_dir=str(tmp_path / "eval"))
    d, ids = _gt(tmp_path, "a", "frankfurt/000001", slice(0, 2))
    acc.process(read_ground_truth(d, 2), (ids, d["segments_info"]))
    assert acc.state()["annotations"][0]["file_name"] == "frankfurt%2F000001.png"
    assert os.path.isfile(tmp_path / "eval" / "panoptic_predictions" / "frankfurt%2F000001.png")
