"""``model.json``: what a runtime needs to know about an exported JSIS-Net (the "sidecar").

Written by ``tools/export_model.py`` next to the model file; format ``jsis_d2.export/1``::

    {"format": "jsis_d2.export/1", "model_file": "model.onnx", "backend": "onnx",
     "input": {"height": H_in, "width": W_in, "format": "BGR", "dtype": "uint8",
               "layout": "HWC", "resize": "bilinear"},
     "pixel_mean": [...], "pixel_std": [...],            (informational: inside the graph)
     "categories": [{"id", "name", "isthing", "color"}, ...],  list index = contiguous k
     "merge": {"name": "jsis", "stuff_area_thresh", "instance_score_thresh", "mask_threshold"},
     "inputs": ["image", "orig_size"], "outputs": ["panoptic_seg", "segments", "segment_scores"],
     "source": {"config_file", "weights", "weights_sha256", "torch", "detectron2", "jsis_d2",
                "onnx_opset"}}

Graph contract: ``image`` uint8 [H_in, W_in, 3] (already resized, channels in
``input.format`` order), ``orig_size`` int64 [2] = (H, W) of the original image ->
``panoptic_seg`` int32 [H, W] (0 = void, else a segment id), ``segments`` int64 [S, 4] rows
(id, contiguous category index k in [0, K), isthing 0/1, area in pixels), ``segment_scores``
float32 [S] (instance score for things, 1.0 for stuff).

:func:`load_sidecar` checks all of it and raises :class:`SidecarError` with one line naming
the file and the key.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .errors import SidecarError

__all__ = [
    "SIDECAR_NAME",
    "SIDECAR_FORMAT",
    "GRAPH_INPUTS",
    "GRAPH_OUTPUTS",
    "Sidecar",
    "load_sidecar",
    "check_sidecar",
    "category_table",
]

SIDECAR_NAME = "model.json"
SIDECAR_FORMAT = "jsis_d2.export/1"
BACKENDS = ("onnx", "torchscript")
GRAPH_INPUTS = ("image", "orig_size")
GRAPH_OUTPUTS = ("panoptic_seg", "segments", "segment_scores")


@dataclass(frozen=True)
class Sidecar:
    """A checked ``model.json``.

    Attributes:
        path: the sidecar file. model_path: the model file (absolute, next to the sidecar).
        backend: "onnx" or "torchscript".
        input_size: (H_in, W_in), the network input size. input_format: "BGR" or "RGB".
        categories: K dicts {"id" (dataset id), "name", "isthing" (bool), "color" [r, g, b]},
            list index = contiguous index k.
        merge: the merge's name and thresholds (informational: inside the graph).
        raw: the whole parsed JSON.
    """

    path: str
    model_path: str
    backend: str
    input_size: Tuple[int, int]
    input_format: str
    categories: List[Dict]
    merge: Dict
    raw: Dict = field(repr=False)

    @property
    def num_classes(self) -> int:
        """K, the number of categories."""
        return len(self.categories)

    @property
    def dataset_ids(self) -> List[int]:
        """Dataset category id of each contiguous index k."""
        return [c["id"] for c in self.categories]

    @property
    def is_thing(self) -> List[bool]:
        """isthing of each contiguous index k."""
        return [c["isthing"] for c in self.categories]


def load_sidecar(model_dir_or_file: str) -> Sidecar:
    """Read and check ``DIR/model.json`` (or the given ``.json`` file).

    Raises:
        SidecarError: missing or unparsable file, or a missing / mistyped key (one line
            naming the file and the key).
    """
    path = model_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, SIDECAR_NAME)
    if not os.path.isfile(path):
        raise SidecarError(
            f"{path}: no such file (an export folder holds {SIDECAR_NAME} and the model file; "
            "make one with tools/export_model.py)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise SidecarError(f"{path}: cannot read it as JSON: {e}") from None
    return check_sidecar(raw, path)


def _get(d: Dict, key: str, types, path: str, where: str = ""):
    """``d[key]`` if present and an instance of ``types``, else SidecarError naming it."""
    name = f"{where}{key}"
    if not isinstance(d, dict) or key not in d:
        raise SidecarError(f"{path}: missing key {name!r}")
    value = d[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
        raise SidecarError(f"{path}: key {name!r} has the wrong type: {value!r:.80}")
    return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def check_sidecar(raw: Dict, path: str = SIDECAR_NAME) -> Sidecar:
    """A :class:`Sidecar` from parsed JSON ``raw``; SidecarError naming ``path`` and the key."""
    if not isinstance(raw, dict):
        raise SidecarError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    fmt = _get(raw, "format", str, path)
    if fmt != SIDECAR_FORMAT:
        raise SidecarError(
            f"{path}: key 'format' is {fmt!r}; this runtime reads {SIDECAR_FORMAT!r} "
            "(export the model again with this version)"
        )
    backend = _get(raw, "backend", str, path)
    if backend not in BACKENDS:
        raise SidecarError(f"{path}: key 'backend' must be one of {BACKENDS}, got {backend!r}")
    model_file = _get(raw, "model_file", str, path)
    if os.path.isabs(model_file) or os.path.basename(model_file) != model_file:
        raise SidecarError(
            f"{path}: key 'model_file' must be a file name next to the sidecar, got {model_file!r}"
        )
    model_path = os.path.join(os.path.dirname(os.path.abspath(path)), model_file)

    inp = _get(raw, "input", dict, path)
    h = _get(inp, "height", int, path, "input.")
    w = _get(inp, "width", int, path, "input.")
    if h <= 0 or w <= 0:
        raise SidecarError(f"{path}: keys 'input.height', 'input.width' must be > 0: {h}, {w}")
    fixed = {"format": ("BGR", "RGB"), "dtype": ("uint8",), "layout": ("HWC",)}
    fixed["resize"] = ("bilinear",)
    for key, allowed in fixed.items():
        value = _get(inp, key, str, path, "input.")
        if value not in allowed:
            raise SidecarError(
                f"{path}: key 'input.{key}' must be one of {list(allowed)}, got {value!r}"
            )

    cats = _get(raw, "categories", list, path)
    if not cats:
        raise SidecarError(f"{path}: key 'categories' is empty")
    categories = []
    for i, c in enumerate(cats):
        where = f"categories[{i}]."
        cid = _get(c, "id", int, path, where)
        name = _get(c, "name", str, path, where)
        isthing = _get(c, "isthing", (bool, int), path, where)
        color = c.get("color", [0, 0, 0]) if isinstance(c, dict) else None
        if (
            not isinstance(color, list)
            or len(color) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in color)
        ):
            raise SidecarError(f"{path}: key '{where}color' must be [r, g, b] in 0..255")
        categories.append({"id": cid, "name": name, "isthing": bool(isthing), "color": color})
    ids = [c["id"] for c in categories]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SidecarError(f"{path}: key 'categories' has duplicate id(s) {dup}")

    merge = _get(raw, "merge", dict, path)
    for key in ("inputs", "outputs"):
        names = _get(raw, key, list, path)
        want = list(GRAPH_INPUTS if key == "inputs" else GRAPH_OUTPUTS)
        if names != want:
            raise SidecarError(f"{path}: key {key!r} must be {want}, got {names!r:.80}")
    return Sidecar(
        path=path,
        model_path=model_path,
        backend=backend,
        input_size=(h, w),
        input_format=inp["format"],
        categories=categories,
        merge=dict(merge),
        raw=raw,
    )


def category_table(sidecar: Sidecar) -> List[Dict]:
    """The COCO panoptic ``categories`` list of a sidecar: {"id", "name", "isthing" 0/1,
    "color"} in contiguous order."""
    return [
        {"id": c["id"], "name": c["name"], "isthing": int(c["isthing"]), "color": c["color"]}
        for c in sidecar.categories
    ]
