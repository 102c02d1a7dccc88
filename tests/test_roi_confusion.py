"""The ROI-head confusion diagnostic (jsis_d2.evaluation.roi_confusion, tools/roi_confusion.py):
counts land in (ground truth, prediction) cells, background is the last column, bad models,
inputs and checkpoints fail clearly. Tiny quick config (R18, 64x64), CPU."""

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jsis_d2.config import setup_cfg
from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets
from jsis_d2.evaluation.roi_confusion import format_roi_confusion, roi_confusion_matrix

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import roi_confusion as tool

QUICK = "configs/quick/jsis_R18_C4_quick.yaml"
T = 4


def quick_model(*opts):
    torch.manual_seed(0)
    return build_model(setup_cfg(QUICK, list(opts)))


def sample(boxes, classes, name="img.png"):
    g = torch.Generator().manual_seed(len(boxes))
    inst = Instances(
        (64, 64),
        gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        gt_classes=torch.tensor(classes, dtype=torch.int64),
    )
    return {
        "image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
        "instances": inst,
        "file_name": name,
    }


class FixedPredictor(torch.nn.Module):
    """Box predictor whose argmax is the next entry of ``answers`` for each ROI."""

    def __init__(self, answers, num_classes):
        super().__init__()
        self.answers = list(answers)
        self.num_classes = num_classes

    def forward(self, x):
        n = x.shape[0]
        picks, self.answers = self.answers[:n], self.answers[n:]
        logits = torch.zeros(n, self.num_classes + 1)
        logits[torch.arange(n), torch.tensor(picks)] = 5.0
        return logits, torch.zeros(n, 4 * self.num_classes)


def test_counts_land_in_ground_truth_by_prediction_cells():
    model = quick_model()
    inputs = [
        sample([[2, 2, 30, 30], [30, 30, 60, 60]], [0, 3]),
        sample([], []),  # no boxes: skipped, the predictor is not called
        sample([[5, 5, 40, 20], [10, 10, 50, 50], [0, 0, 63, 63]], [1, 1, 2]),
    ]
    # predictions per ROI in input order: gt 0 -> 2, gt 3 -> background (T), gt 1 -> 1,
    # gt 1 -> 0, gt 2 -> 2
    model.roi_heads.box_predictor = FixedPredictor([2, T, 1, 0, 2], T)
    conf = roi_confusion_matrix(model, inputs)
    expected = np.zeros((T, T + 1), np.int64)
    for g, p in [(0, 2), (3, T), (1, 1), (1, 0), (2, 2)]:
        expected[g, p] += 1
    np.testing.assert_array_equal(conf, expected)
    assert not model.training


def test_real_head_counts_every_box_once():
    conf = roi_confusion_matrix(quick_model(), [sample([[2, 2, 30, 30], [8, 8, 60, 40]], [2, 0])])
    assert conf.shape == (T, T + 1) and conf.dtype == np.int64
    assert conf.sum() == 2 and conf[2].sum() == 1 and conf[0].sum() == 1


def test_bad_model_and_bad_input_are_named():
    with pytest.raises(ValueError, match="Res5ROIHeads"):
        roi_confusion_matrix(SimpleNamespace(roi_heads=None), [])
    with pytest.raises(ValueError, match="no_inst.png.*'instances'"):
        roi_confusion_matrix(
            quick_model(),
            [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "file_name": "no_inst.png"}],
        )


def test_format_table_and_shape_check():
    conf = np.array([[3, 1, 0], [0, 0, 4]])
    text = format_roi_confusion(conf, ["disc", "cross"])
    assert "| disc | 3 | 1 | 0 | 0.75 |" in text
    assert "| cross | 0 | 0 | 4 | 0.00 |" in text
    assert "8 ground-truth boxes" in text and ": 0.38" in text
    with pytest.raises(ValueError, match="does not fit 3 thing names"):
        format_roi_confusion(conf, ["a", "b", "c"])


def test_cli_end_to_end_and_errors(tmp_path, capsys, isolated_logs):
    root = str(tmp_path / "syn")
    names = {"train": "jsis_test_rc_train", "val": "jsis_test_rc_val"}
    make_synthetic_datasets(root, num_train=1, num_val=2, image_size=64, register=False)
    register_synthetic_datasets(root, names=names)
    model = quick_model()
    ckpt = tmp_path / "model.pth"
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    out = tmp_path / "conf.json"
    rc = tool.main(
        [
            "--config-file",
            QUICK,
            "--weights",
            str(ckpt),
            "--dataset",
            names["val"],
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    data = json.load(open(out))
    n_boxes = sum(
        1
        for d in tool.DatasetCatalog.get(names["val"])
        for s in d["segments_info"]
        if s["isthing"] and not s["iscrowd"]
    )
    assert np.array(data["matrix"]).shape == (T, T + 1)
    assert np.array(data["matrix"]).sum() == n_boxes > 0
    assert data["thing_classes"] == ["disc", "triangle", "square", "cross"]
    assert "ground truth \\ predicted" in capsys.readouterr().out

    assert tool.main(["--config-file", QUICK, "--weights", str(ckpt), "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    # a checkpoint for another number of thing classes
    other = quick_model("MODEL.ROI_HEADS.NUM_CLASSES", "3")
    DetectionCheckpointer(other, save_dir=str(tmp_path)).save("other")
    assert (
        tool.main(
            [
                "--config-file",
                QUICK,
                "--weights",
                str(tmp_path / "other.pth"),
                "--dataset",
                names["val"],
            ]
        )
        == 2
    )
    assert "does not fit this model" in capsys.readouterr().err
