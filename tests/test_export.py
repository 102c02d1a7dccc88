"""Export of the whole panoptic model (jsis_d2.export, tools/export_model.py): ONNX and
TorchScript files equal eager JSISNet.inference on new images of other original sizes, the
sidecar, refusal of random / unfitting weights and of a foreign output folder, the agreement
check failing on a tampered model, and the graph's parts (separable paste, matrix pooling)
against the ops they replace. Tiny quick config (R18, 64x64), CPU."""

import json
import os

import numpy as np
import pytest
import torch

from jsis_d2.config import setup_cfg
from jsis_d2.engine.checks import UsageError
from jsis_d2.export.exporter import (
    ExportMismatchError,
    check_export,
    compare_panoptic,
    export_model,
    run_exported,
)
from jsis_d2.export.graph import paste_masks_separable
from jsis_d2.modeling.ppm_head import MatrixAdaptiveAvgPool2d

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

QUICK = "configs/quick/jsis_R18_C4_quick.yaml"
# random weights give low scores: let every detection reach the merge so that the graph's
# instance path (order, paste, overlaps) is exercised
OPTS = ["MODEL.JSIS.INSTANCE_SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def save_weights(folder, *opts):
    """A random but fitting checkpoint of the quick model (with ``opts``) -> its path."""
    torch.manual_seed(0)
    os.makedirs(folder, exist_ok=True)
    model = build_model(setup_cfg(QUICK, list(opts)))
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    return os.path.join(str(folder), "model.pth")


def write_image(path, h, w, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(img).resize((w, h), Image.BILINEAR).save(path)
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{fmt: (export dir, result)} for one checkpoint, exported in both formats."""
    root = tmp_path_factory.mktemp("export")
    weights = save_weights(root)
    sample = write_image(root / "sample.png", 48, 80, seed=0)
    cfg = setup_cfg(QUICK, OPTS + ["MODEL.WEIGHTS", weights])
    out = {}
    for fmt in ("onnx", "torchscript"):
        d = str(root / fmt)
        out[fmt] = (d, export_model(cfg, d, fmt=fmt, sample_image=sample, config_file=QUICK))
    return cfg, out


def eager_and_input(cfg, h, w, seed):
    """(eager panoptic output, graph image input) for a random image of size h x w."""
    from jsis_d2.export.exporter import _eager_panoptic, prepare_image
    from jsis_d2.predictor import JSISPredictor

    predictor = JSISPredictor(cfg)
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = prepare_image(bgr, predictor.aug, cfg.INPUT.FORMAT)
    return predictor.model, _eager_panoptic(predictor.model, image, (h, w)), image


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_equals_eager_inference_on_new_sizes(exported, fmt):
    cfg, out = exported
    folder, result = out[fmt]
    assert result["check"]["ok"] and result["check"]["pixel_agreement"] == 1.0
    path = os.path.join(folder, result["model_file"])
    for (h, w), seed in [((50, 70), 1), ((91, 33), 2)]:
        _, (pan, info), image = eager_and_input(cfg, h, w, seed)
        assert any(s["isthing"] for s in info) and any(not s["isthing"] for s in info)
        pan_x, segments, scores = run_exported(path, fmt, image, (h, w))
        assert pan_x.dtype == np.int32 and segments.dtype == np.int64
        assert scores.dtype == np.float32
        np.testing.assert_array_equal(pan_x, pan.numpy())
        assert segments.tolist() == [
            [s["id"], s["category_id"], int(s["isthing"]), s["area"]] for s in info
        ]
        np.testing.assert_allclose(scores, [s.get("score", 1.0) for s in info], atol=1e-6)


def test_sidecar_fields(exported):
    cfg, out = exported
    folder, result = out["onnx"]
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        side = json.load(f)
    assert side["format"] == "jsis_d2.export/1" and side["model_file"] == "model.onnx"
    assert side["backend"] == "onnx" and os.path.isfile(os.path.join(folder, "model.onnx"))
    assert side["input"] == {
        "height": 64,
        "width": 64,
        "format": "BGR",
        "dtype": "uint8",
        "layout": "HWC",
        "resize": "bilinear",
    }
    assert side["inputs"] == ["image", "orig_size"]
    assert side["outputs"] == ["panoptic_seg", "segments", "segment_scores"]
    cats = side["categories"]
    assert len(cats) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert [c["isthing"] for c in cats] == [k < cfg.MODEL.ROI_HEADS.NUM_CLASSES for k in range(9)]
    assert side["merge"] == {
        "name": "jsis",
        "stuff_area_thresh": 16,
        "instance_score_thresh": 0.0,
        "mask_threshold": 0.5,
    }
    assert len(side["source"]["weights_sha256"]) == 64 and side["source"]["onnx_opset"] == 17
    with open(os.path.join(out["torchscript"][0], "model.json"), encoding="utf-8") as f:
        assert json.load(f)["source"]["onnx_opset"] is None


def test_check_fails_loudly_on_a_tampered_model(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    cfg, out = exported
    folder, _ = out["onnx"]
    m = onnx.load(os.path.join(folder, "model.onnx"))
    # the semantic classifier's bias: favour one stuff class everywhere
    bias = next(t for t in m.graph.initializer if t.name.endswith("sem_seg_head.predictor.bias"))
    b = numpy_helper.to_array(bias).copy()
    b[-1] += 100.0
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    tampered = str(tmp_path / "model.onnx")
    onnx.save(m, tampered)
    model, _, image = eager_and_input(cfg, 40, 60, 3)
    with pytest.raises(ExportMismatchError, match=r"category maps agree on \d+\.\d+% of pixels"):
        check_export(tampered, "onnx", model, image, (40, 60))
    assert check_export(os.path.join(folder, "model.onnx"), "onnx", model, image, (40, 60))["ok"]


def test_compare_panoptic_tolerances():
    pan = torch.tensor([[1, 1, 2], [2, 2, 0]], dtype=torch.int32)
    info = [
        {"id": 1, "category_id": 0, "isthing": True, "area": 2, "score": 0.9},
        {"id": 2, "category_id": 5, "isthing": False, "area": 3},
    ]
    segs = np.array([[1, 0, 1, 2], [2, 5, 0, 3]])
    assert compare_panoptic((pan, info), (pan, segs, np.array([0.9, 1.0])))["ok"]
    bad_score = compare_panoptic((pan, info), (pan, segs, np.array([0.8, 1.0])))
    assert not bad_score["ok"] and bad_score["pixel_agreement"] == 1.0
    other = pan.clone()
    other[0, 0] = 2
    bad_map = compare_panoptic((pan, info), (other, segs, np.array([0.9, 1.0])))
    assert not bad_map["ok"] and bad_map["pixel_agreement"] == pytest.approx(5 / 6)


def test_tool_refuses_random_and_unfitting_weights(tmp_path, capsys, isolated_logs):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_model_tool", "tools/export_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / "out")
    assert tool.main(["--config-file", QUICK, "--output", out, "--opts", "MODEL.WEIGHTS", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MODEL.WEIGHTS is empty" in err[0]
    other = save_weights(tmp_path / "k12", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "12")
    code = tool.main(["--config-file", QUICK, "--output", out, "--opts", "MODEL.WEIGHTS", other])
    assert code == 2 and not os.path.exists(os.path.join(out, "model.onnx"))
    assert "export_model: error:" in capsys.readouterr().err
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    weights = save_weights(tmp_path / "w")
    cfg = setup_cfg(QUICK, ["MODEL.WEIGHTS", weights])
    with pytest.raises(UsageError, match="not empty and holds no previous export"):
        export_model(cfg, out)
    assert os.listdir(out) == ["notes.txt"]


def test_separable_paste_equals_detectron2_paste():
    from detectron2.layers.mask_ops import _do_paste_mask

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 14, 14, generator=g)
    boxes = torch.tensor(
        [[2.0, 3.0, 30.0, 20.0], [0.0, 0.0, 40.0, 41.0], [10.5, 5.2, 33.1, 38.9], [-5, 30, 20, 60]]
    )
    ref = _do_paste_mask(masks[:, None], boxes, 41, 37, skip_empty=False)[0]
    got = paste_masks_separable(masks, boxes, 41, 37)
    assert got.shape == (4, 41, 37)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (13, 9)])
def test_matrix_pooling_equals_adaptive_pooling(size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    for b in (1, 2, 3, 6):
        ref = torch.nn.functional.adaptive_avg_pool2d(x, b)
        torch.testing.assert_close(MatrixAdaptiveAvgPool2d(b, size)(x), ref, atol=1e-6, rtol=0)


def test_deploy_benchmark_quick_structure(tmp_path):
    """`tools/benchmark.py deploy --quick`: the sides, their ratios and the agreement of the
    exported model with eager on the timed images."""
    import argparse

    from benchmarks import deploy

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    deploy.add_arguments(p)
    r = deploy.run(p.parse_args(["--quick", "--repeats", "1", "--images", "1"]))
    (row,) = r["rows"]
    assert row["weights"] == "random" and row["export_check"]["ok"]
    assert row["agreement"] == 1.0
    assert set(row["speedup"]) == {"onnxruntime"} | (
        {"eager_bf16"} if r["cpu_bf16"]["supported"] else set()
    )
    assert all(len(row[s]["times_s"]) == 1 for s in ("eager_fp32", "onnxruntime"))
    assert "onnxruntime speedup" in r["markdown"] and r["headline"]["goal"] == 1.3
