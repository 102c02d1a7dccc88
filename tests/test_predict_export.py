"""End to end: a quick-config model exported by tools/export_model.py, predicted with the ONNX
backend where torch cannot be imported, against the PyTorch backend on the same images."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_predict import CONFIG, REPO, _run_deployed

from jsis_d2.config import setup_cfg
from jsis_d2.data.datasets import make_synthetic_datasets
from jsis_d2.evaluation import pq_compute
from jsis_runtime import cli
from jsis_runtime.compare import category_agreement

# The built-in names (the export runs in a subprocess: it knows only those); the label space
# is all it reads from them, the images come from --image-info.
DATASETS = [
    "DATASETS.TRAIN",
    "('jsis_synthetic_train',)",
    "DATASETS.TEST",
    "('jsis_synthetic_val',)",
]


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn"))
    paths = make_synthetic_datasets(root, num_train=2, num_val=4, image_size=64, register=False)
    return paths["val"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The quick model with random weights, its semantic head biased towards "grass" and its
    box classifier towards "disc" so that both stuff and instances reach the merge."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"]))
    state = model.state_dict()
    sem_bias = [k for k in state if k.startswith("sem_seg_head") and k.endswith("bias")][-1]
    state[sem_bias][5] += 3.0
    cls_bias = [k for k in state if "cls_score" in k and k.endswith("bias")][0]
    state[cls_bias][0] += 6.0
    path = tmp_path_factory.mktemp("w") / "model_final.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return str(path)


def test_onnx_backend_without_torch_agrees_with_pytorch(
    synthetic_val, weights, tmp_path, isolated_logs
):
    opts = ["MODEL.WEIGHTS", weights, *DATASETS]
    export = str(tmp_path / "export")
    sample = os.path.join(synthetic_val["image_root"], "000000.png")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export_model.py"), "--config-file", CONFIG,
         "--output", export, "--sample-image", sample, "--opts", *opts],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = json.load(open(os.path.join(export, "model.json")))
    assert sidecar["input"]["height"] == 64 and sidecar["input"]["format"] == "BGR"

    images = ["--image-info", synthetic_val["panoptic_json"], "--image-root"]
    images.append(synthetic_val["image_root"])
    out_pt, out_onnx = str(tmp_path / "pytorch"), str(tmp_path / "onnx")
    argv = ["--config-file", CONFIG, *images, "--output", out_pt, "--no-progress"]
    assert cli.main([*argv, "--opts", *opts]) == 0
    code, err = _run_deployed(
        ["--backend", "onnx", "--model", export, *images, "--output", out_onnx, "--no-progress"]
    )
    assert code == 0, err[-3000:]

    agree, total, _ = category_agreement(out_pt, out_onnx)
    assert agree / total >= 0.995
    pq = pq_compute(
        os.path.join(out_pt, "predictions.json"),
        os.path.join(out_onnx, "predictions.json"),
        os.path.join(out_pt, "panoptic"),
        os.path.join(out_onnx, "panoptic"),
    )
    assert pq["All"]["pq"] >= 0.98
    pt = json.load(open(os.path.join(out_pt, "predictions.json")))["annotations"]
    assert any(s["isthing"] for a in pt for s in a["segments_info"]), (
        "no instance reached the merge"
    )
    assert any(not s["isthing"] for a in pt for s in a["segments_info"])
