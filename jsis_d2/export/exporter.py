"""Write an export directory (model file + ``model.json`` sidecar) and check that the exported
model agrees with PyTorch. Layout and sidecar fields: docs/EXPORT.md; the graph:
:mod:`jsis_d2.export.graph`.

Id spaces: the graph's ``segments`` carry CONTIGUOUS category indices k in [0, K); the
sidecar's ``categories`` list (index = k) maps them to dataset category ids.
"""

import json
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from jsis_runtime.run_dir import file_sha256

from ..data.image_io import read_image
from ..data.label_space import LabelSpace
from ..engine.checks import UsageError, label_space_of
from ..utils.atomic import atomic_open, atomic_write_text
from .graph import PanopticGraph, tracing_adapter_class

__all__ = [
    "FORMAT",
    "ExportMismatchError",
    "check_export",
    "compare_panoptic",
    "export_model",
    "prepare_image",
    "run_exported",
]

logger = logging.getLogger(__name__)

FORMAT = "jsis_d2.export/1"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
INPUTS = ["image", "orig_size"]
OUTPUTS = ["panoptic_seg", "segments", "segment_scores"]
ONNX_OPSET = 17  # the legacy (TorchScript-based) exporter; see docs/EXPORT.md
#: Agreement the check demands: category maps equal on at least this fraction of pixels;
#: segment tables with equal (id, category, isthing), areas within AREA_TOL of the image's
#: pixels and scores within SCORE_TOL.
MIN_PIXEL_AGREEMENT = 0.995
AREA_TOL = 0.005
SCORE_TOL = 1e-4


class ExportMismatchError(UsageError):
    """The exported model disagrees with PyTorch beyond the tolerances (one line, numbers)."""


def prepare_image(image_bgr: np.ndarray, aug, input_format: str) -> np.ndarray:
    """The graph's ``image`` input: uint8 [H_in, W_in, 3] in INPUT.FORMAT order, resized with
    the test-time transform ``aug`` (PIL bilinear), from a uint8 [H, W, 3] BGR image."""
    resized = aug.get_transform(image_bgr).apply_image(image_bgr)
    if input_format == "RGB":
        resized = resized[:, :, ::-1]
    return np.ascontiguousarray(resized, dtype=np.uint8)


def _category_map(pan: np.ndarray, rows: Sequence[Tuple[int, int]]) -> np.ndarray:
    """int64 [H, W] contiguous category per pixel (-1 = void) from segment (id, k) rows."""
    lut = np.full(int(pan.max(initial=0)) + 1, -1, dtype=np.int64)
    for sid, k in rows:
        if 0 < sid < len(lut):
            lut[sid] = k
    return lut[pan]


def compare_panoptic(eager, exported) -> Dict:
    """Agreement of the exported model's outputs with PyTorch's on one image.

    Args:
        eager: (panoptic_seg int32 [H, W], segments_info) from :meth:`JSISNet.inference`.
        exported: (panoptic_seg [H, W], segments [S, 4], segment_scores [S]) of the graph
            (tensors or arrays).
    Returns:
        {"pixel_agreement": fraction of pixels with the same category (void included),
        "segments": (S eager, S exported), "max_area_diff": pixels, "max_score_diff",
        "tables_match": bool, "ok": bool}
    """
    pan_e, info = eager
    pan_e = np.asarray(pan_e.cpu() if isinstance(pan_e, torch.Tensor) else pan_e)
    pan_x, seg_x, score_x = (
        np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t) for t in exported
    )
    if pan_e.shape != pan_x.shape:
        return {
            "pixel_agreement": 0.0,
            "segments": (len(info), len(seg_x)),
            "ok": False,
            "tables_match": False,
            "max_area_diff": None,
            "max_score_diff": None,
            "shape": (pan_e.shape, pan_x.shape),
        }
    cat_e = _category_map(pan_e, [(s["id"], s["category_id"]) for s in info])
    cat_x = _category_map(pan_x, [(int(r[0]), int(r[1])) for r in seg_x])
    agreement = float((cat_e == cat_x).mean()) if cat_e.size else 1.0
    rows_e = [(s["id"], s["category_id"], int(s["isthing"])) for s in info]
    rows_x = [tuple(int(v) for v in r[:3]) for r in seg_x]
    match = rows_e == rows_x
    area_diff = score_diff = None
    if match and info:
        area_diff = max(abs(s["area"] - int(r[3])) for s, r in zip(info, seg_x))
        score_diff = max(abs(s.get("score", 1.0) - float(v)) for s, v in zip(info, score_x))
        match = area_diff <= AREA_TOL * pan_e.size and score_diff <= SCORE_TOL
    return {
        "pixel_agreement": agreement,
        "segments": (len(info), len(seg_x)),
        "max_area_diff": area_diff,
        "max_score_diff": score_diff,
        "tables_match": bool(match),
        "ok": bool(match and agreement >= MIN_PIXEL_AGREEMENT),
    }


def run_exported(path: str, backend: str, image: np.ndarray, orig_size: Tuple[int, int]):
    """Run an exported model file: (panoptic_seg, segments, segment_scores) as numpy arrays.
    ``backend`` "onnx" (onnxruntime, CPU provider) or "torchscript" (torch.jit.load)."""
    size = np.asarray(orig_size, dtype=np.int64)
    if backend == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return tuple(sess.run(OUTPUTS, {"image": image, "orig_size": size}))
    module = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        out = module(torch.from_numpy(image), torch.from_numpy(size))
    return tuple(t.numpy() for t in out)


def _eager_panoptic(model, image: np.ndarray, orig_size: Tuple[int, int]):
    """JSISNet.inference's panoptic_seg for the graph's input (uint8 HWC, INPUT.FORMAT)."""
    x = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        (out,) = model.inference([{"image": x, "height": orig_size[0], "width": orig_size[1]}])
    return out["panoptic_seg"]


def check_export(model_path, fmt, model, image, orig_size, sample_name="the sample") -> Dict:
    """Run the exported file (as a runtime loads it) and the eager ``model`` on ``image``
    (graph input, uint8 HWC) at ``orig_size``; return :func:`compare_panoptic`'s dict, or raise
    :class:`ExportMismatchError` with one line of numbers when they disagree."""
    exported = run_exported(model_path, fmt, image, orig_size)
    check = compare_panoptic(_eager_panoptic(model, image, orig_size), exported)
    logger.info("check on %s: %s", sample_name, check)
    if not check["ok"]:
        raise ExportMismatchError(
            f"exported model disagrees with PyTorch on {sample_name}: category maps agree on "
            f"{100 * check['pixel_agreement']:.3f}% of pixels (need >= "
            f"{100 * MIN_PIXEL_AGREEMENT:.1f}%), segments {check['segments'][0]} vs "
            f"{check['segments'][1]}, tables match: {check['tables_match']} (max area diff "
            f"{check['max_area_diff']} px, max score diff {check['max_score_diff']}); "
            f"files left in {os.path.dirname(model_path) or '.'}"
        )
    return check


def _label_space(cfg, num_classes: int) -> Tuple[str, LabelSpace]:
    """(dataset name, its label space) of the config (:func:`label_space_of`), checked against
    the model's K."""
    space = label_space_of(cfg)
    name = (list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN))[0]
    if space.num_classes != num_classes:
        raise UsageError(
            f"dataset {name!r} has K={space.num_classes} classes but the model "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
        )
    return name, space


def _sample_image(cfg, dataset: str, sample: Optional[str]) -> Tuple[np.ndarray, str]:
    """The image the check runs on (BGR uint8): ``sample``, else the dataset's first image,
    else a deterministic synthetic image (640 x 480)."""
    if sample:
        return read_image(sample, format="BGR"), sample
    from detectron2.data import DatasetCatalog

    try:
        first = DatasetCatalog.get(dataset)[0]["file_name"]
        return read_image(first, format="BGR"), first
    except Exception as e:  # the dataset's files may be absent where one exports
        logger.info("no image of %r for the check (%s): using a synthetic image", dataset, e)
    from ..data.synthetic import render_synthetic_image

    rgb = render_synthetic_image(np.random.default_rng(0), 480, 640)[0]
    return np.ascontiguousarray(rgb[:, :, ::-1]), "synthetic 640x480"


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an existing non-empty folder that is not a previous export, unless ``overwrite``."""
    if not os.path.isdir(output_dir):
        if os.path.exists(output_dir):
            raise UsageError(f"--output {output_dir!r} exists and is not a folder")
        return
    entries = [e for e in os.listdir(output_dir) if not e.startswith(".")]
    if not entries or overwrite:
        return
    try:
        with open(os.path.join(output_dir, "model.json"), encoding="utf-8") as f:
            previous = json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        previous = False
    if not previous:
        raise UsageError(
            f"--output {output_dir!r} is not empty and holds no previous export "
            f"(model.json): choose another folder or pass --overwrite; nothing was written"
        )


def _save(adapter, inputs, fmt: str, path: str) -> None:
    """Trace ``adapter`` on ``inputs`` and write the model file atomically."""
    with atomic_open(path, "wb") as f:
        if fmt == "onnx":
            torch.onnx.export(
                adapter,
                inputs,
                f,
                input_names=INPUTS,
                output_names=OUTPUTS,
                opset_version=ONNX_OPSET,
                dynamo=False,  # torch.export stops in detectron2 0.6's proposal code
                dynamic_axes={
                    "panoptic_seg": {0: "height", 1: "width"},
                    "segments": {0: "segments"},
                    "segment_scores": {0: "segments"},
                },
            )
        else:
            traced = torch.jit.trace(adapter, inputs, check_trace=False)
            torch.jit.save(traced, f)


def export_model(
    cfg,
    output_dir: str,
    *,
    fmt: str = "onnx",
    overwrite: bool = False,
    sample_image: Optional[str] = None,
    config_file: str = "",
) -> Dict:
    """Export the whole panoptic model of ``cfg`` (with trained MODEL.WEIGHTS) to
    ``output_dir`` and check it against PyTorch on one sample image.

    Returns the sidecar dict plus "check" (see :func:`compare_panoptic`). Raises
    :class:`UsageError` (random or unfitting weights, unknown dataset, bad folder) and
    :class:`ExportMismatchError` (exported model disagrees; the files stay for inspection).
    """
    import detectron2

    from .. import __version__
    from ..predictor import JSISPredictor

    if fmt not in MODEL_FILES:
        raise UsageError(f"--format must be one of {sorted(MODEL_FILES)}, got {fmt!r}")
    check_output_dir(output_dir, overwrite)
    if cfg.MODEL.DEVICE != "cpu":
        raise UsageError(f"export runs on the CPU: set MODEL.DEVICE cpu (got {cfg.MODEL.DEVICE})")
    if cfg.TEST.PRECISION != "float32":
        logger.info(
            "the exported graph runs in float32 (TEST.PRECISION %s not used)", cfg.TEST.PRECISION
        )
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.PRECISION = "float32"
        cfg.freeze()
    predictor = JSISPredictor(cfg)  # refuses random or unfitting weights
    model = predictor.model.eval()
    dataset, space = _label_space(cfg, model.num_classes)
    h_in, w_in = (int(s) for s in cfg.INPUT.JSIS.FIXED_SIZE)
    try:
        graph = PanopticGraph(model, (h_in, w_in))
    except ValueError as e:
        raise UsageError(str(e)) from None

    bgr, sample_name = _sample_image(cfg, dataset, sample_image)
    image = prepare_image(bgr, predictor.aug, cfg.INPUT.FORMAT)
    orig_size = (int(bgr.shape[0]), int(bgr.shape[1]))
    inputs = (torch.from_numpy(image), torch.tensor(orig_size, dtype=torch.int64))
    adapter = tracing_adapter_class()(graph, inputs)

    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, MODEL_FILES[fmt])
    logger.info("exporting %s to %s ...", fmt, model_path)
    _save(adapter, adapter.flattened_inputs, fmt, model_path)

    weights = cfg.MODEL.WEIGHTS
    sidecar = {
        "format": FORMAT,
        "model_file": MODEL_FILES[fmt],
        "backend": fmt,
        "input": {
            "height": h_in,
            "width": w_in,
            "format": cfg.INPUT.FORMAT,
            "dtype": "uint8",
            "layout": "HWC",
            "resize": "bilinear",
        },
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "categories": [
            {"id": d, "name": n, "isthing": t, "color": [int(c) for c in col]}
            for d, n, t, col in zip(space.dataset_ids, space.names, space.is_thing, space.colors)
        ],
        "merge": {
            "name": "jsis",
            "stuff_area_thresh": int(model.stuff_area_thresh),
            "instance_score_thresh": float(model.instance_score_thresh),
            "mask_threshold": float(model.mask_threshold),
        },
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "source": {
            "config_file": config_file,
            "weights": weights,
            "weights_sha256": file_sha256(weights),
            "torch": torch.__version__,
            "detectron2": detectron2.__version__,
            "jsis_d2": __version__,
            "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        },
    }
    atomic_write_text(os.path.join(output_dir, "model.json"), json.dumps(sidecar, indent=2) + "\n")

    check = check_export(model_path, fmt, model, image, orig_size, sample_name)
    return dict(sidecar, check=check)
